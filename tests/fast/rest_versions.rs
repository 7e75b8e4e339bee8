//! Every slurmrestd API version stackctl speaks, checked against SchedMD's own OpenAPI
//! documents (`tests/fixtures/openapi`, sources in its SOURCES.md). The test cluster serves
//! v0.0.38 only, which `tests/e2e/rest.rs` uses live; here each version's requests must satisfy
//! its schema, with no key the schema does not know, and response documents built from each
//! schema (every property that version has, stackctl's fields set to one cluster state) must
//! decode to the same records, facts and errors.

use serde::de::DeserializeSeed;
use serde_json::{Value, json};
use stackctl::job::{JobOptions, JobRequest};
use stackctl::observed::{JobId, JobRecord, JobTimes};
use stackctl::slurm::rest::wire::{self, Api};
use std::sync::Arc;

/// One version's OpenAPI document.
struct Spec {
    api: Api,
    doc: Value,
}

impl Spec {
    fn load(api: Api) -> Spec {
        let path = format!(
            "{}/tests/fixtures/openapi/{}.json",
            env!("CARGO_MANIFEST_DIR"),
            api.name()
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Spec {
            api,
            doc: serde_json::from_str(&text).unwrap(),
        }
    }

    /// `schema` with its `$ref`s followed.
    fn resolve<'a>(&'a self, mut schema: &'a Value) -> &'a Value {
        while let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference.rsplit('/').next().unwrap();
            schema = &self.doc["components"]["schemas"][name];
            assert!(!schema.is_null(), "{}: no schema {name}", self.api);
        }
        schema
    }

    /// The operation `method` of the path ending in `/<suffix>`.
    fn operation(&self, method: &str, suffix: &str) -> &Value {
        let paths = self.doc["paths"].as_object().unwrap();
        let (_, ops) = paths
            .iter()
            .find(|(p, ops)| {
                p.trim_end_matches('/').ends_with(&format!("/{suffix}"))
                    && ops.get(method).is_some()
            })
            .unwrap_or_else(|| panic!("{}: no {method} {suffix}", self.api));
        &ops[method]
    }

    fn request(&self, method: &str, suffix: &str) -> &Value {
        self.resolve(
            &self.operation(method, suffix)["requestBody"]["content"]["application/json"]["schema"],
        )
    }

    fn response(&self, method: &str, suffix: &str) -> &Value {
        self.resolve(
            &self.operation(method, suffix)["responses"]["200"]["content"]["application/json"]["schema"],
        )
    }

    /// What is wrong with `value` under `schema`: wrong types, values outside an enum, missing
    /// required keys, and keys the schema does not know.
    fn problems(&self, value: &Value, schema: &Value) -> Vec<String> {
        let mut out = Vec::new();
        self.check(value, schema, "$", &mut out);
        out
    }

    fn check(&self, value: &Value, schema: &Value, at: &str, out: &mut Vec<String>) {
        let schema = self.resolve(schema);
        let kind = schema.get("type").and_then(Value::as_str);
        let ok = match kind {
            Some("object") => value.is_object(),
            Some("array") => value.is_array(),
            Some("string") => value.is_string(),
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("number") => value.is_number(),
            Some("boolean") => value.is_boolean(),
            _ => true,
        };
        if !ok {
            out.push(format!("{at}: {value} is not {}", kind.unwrap_or("?")));
            return;
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            out.push(format!("{at}: {value} is none of {options:?}"));
        }
        if let Some(items) = schema.get("items") {
            for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                self.check(item, items, &format!("{at}[{i}]"), out);
            }
        }
        let Some(object) = value.as_object() else {
            return;
        };
        let properties = schema.get("properties").and_then(Value::as_object);
        for (key, item) in object {
            match properties.and_then(|p| p.get(key)) {
                Some(sub) => self.check(item, sub, &format!("{at}.{key}"), out),
                None if properties.is_some() => out.push(format!("{at}.{key}: unknown key")),
                None => {}
            }
        }
        for required in schema["required"].as_array().into_iter().flatten() {
            // Slurm writes some as paths: `error/code`.
            let mut here = value;
            for part in required.as_str().unwrap().split('/') {
                here = &here[part];
            }
            if here.is_null() {
                out.push(format!("{at}: required {required} is missing"));
            }
        }
    }

    /// A document with every property `schema` has, filled with placeholder values.
    fn example(&self, schema: &Value, depth: u32) -> Value {
        let schema = self.resolve(schema);
        if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
            return first.clone();
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("object") => Value::Object(
                schema["properties"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|_| depth < 12)
                    .map(|(k, s)| (k.clone(), self.example(s, depth + 1)))
                    .collect(),
            ),
            Some("array") if depth < 12 => json!([self.example(&schema["items"], depth + 1)]),
            Some("array") => json!([]),
            Some("string") => json!("x"),
            Some("integer") => json!(1),
            Some("number") => json!(1.5),
            Some("boolean") => json!(false),
            _ => Value::Null,
        }
    }

    /// The schema of the `jobs` items of a listing.
    fn job_schema(&self) -> &Value {
        let list = self.resolve(&self.response("get", "jobs")["properties"]["jobs"]);
        self.resolve(&list["items"])
    }
}

/// A count or time as `schema` writes it: plain, or `{set, infinite, number}`.
fn number(spec: &Spec, schema: &Value, n: Option<i64>) -> Value {
    let schema = spec.resolve(schema);
    if schema["properties"].get("number").is_some() {
        json!({"set": n.is_some(), "infinite": false, "number": n.unwrap_or(0)})
    } else {
        json!(n.unwrap_or(0))
    }
}

/// One job of the cluster state every version's listing describes.
struct Job {
    job_id: u64,
    array_job_id: Option<i64>,
    array_task_id: Option<i64>,
    array_task_string: &'static str,
    state: &'static str,
    flags: &'static [&'static str],
    reason: &'static str,
    nodes: &'static str,
    submit: i64,
    start: i64,
    end: i64,
    /// Exit status, or the signal that ended the job.
    exit: Result<i64, i64>,
    comment: &'static str,
    user: &'static str,
}

const OURS: &str = "stackctl;owner=o;stack=a;svc=web;spec=s;nonce=n;idx=0-2";

fn cluster() -> Vec<Job> {
    let base = Job {
        job_id: 0,
        array_job_id: None,
        array_task_id: None,
        array_task_string: "",
        state: "RUNNING",
        flags: &[],
        reason: "None",
        nodes: "",
        submit: 1_795_741_900,
        start: 0,
        end: 0,
        exit: Ok(0),
        comment: OURS,
        user: "alice",
    };
    vec![
        // One of ours, a running task of an array.
        Job {
            job_id: 101,
            array_job_id: Some(100),
            array_task_id: Some(0),
            nodes: "node1",
            start: 1_795_742_000,
            end: 1_795_745_600,
            ..base
        },
        // The rest of that array: pending, not yet split into tasks.
        Job {
            job_id: 100,
            array_job_id: Some(100),
            array_task_string: "1-2",
            state: "PENDING",
            reason: "Resources",
            ..base
        },
        // Ours, requeued after a node failure: squeue calls it REQUEUED.
        Job {
            job_id: 120,
            state: "PENDING",
            flags: &["REQUEUED"],
            reason: "BeginTime",
            ..base
        },
        // Ours, ended with exit status 3.
        Job {
            job_id: 7,
            state: "FAILED",
            reason: "NonZeroExitCode",
            nodes: "node2",
            start: 1_795_741_950,
            end: 1_795_741_990,
            exit: Ok(3),
            ..base
        },
        // Ours, killed by SIGKILL: no exit status.
        Job {
            job_id: 8,
            state: "CANCELLED",
            nodes: "node3",
            start: 1_795_741_950,
            end: 1_795_741_999,
            exit: Err(9),
            ..base
        },
        // Another user's job with our marker, and our job without one: neither is kept.
        Job {
            job_id: 9,
            user: "bob",
            ..base
        },
        Job {
            job_id: 10,
            comment: "hand-made",
            ..base
        },
    ]
}

/// What every version's listing must decode to.
fn expected() -> Vec<JobRecord> {
    let record =
        |array: u64, task: Option<u32>, state: &str, reason: &str, nodes: &str| JobRecord {
            id: JobId { array, task },
            comment: Arc::from(OURS),
            state: state.into(),
            reason: reason.into(),
            nodes: nodes.into(),
            times: JobTimes {
                submit: Some(1_795_741_900),
                start: None,
                end: None,
                exit: Some(0),
            },
        };
    let mut running = record(100, Some(0), "RUNNING", "None", "node1");
    running.times.start = Some(1_795_742_000);
    running.times.end = Some(1_795_745_600);
    let mut failed = record(7, None, "FAILED", "NonZeroExitCode", "node2");
    failed.times = JobTimes {
        start: Some(1_795_741_950),
        end: Some(1_795_741_990),
        exit: Some(3),
        ..failed.times
    };
    let mut killed = record(8, None, "CANCELLED", "None", "node3");
    killed.times = JobTimes {
        start: Some(1_795_741_950),
        end: Some(1_795_741_999),
        exit: None,
        ..killed.times
    };
    vec![
        running,
        record(100, Some(1), "PENDING", "Resources", ""),
        record(100, Some(2), "PENDING", "Resources", ""),
        record(120, None, "REQUEUED", "BeginTime", ""),
        failed,
        killed,
    ]
}

/// `job` in `spec`'s job schema: every property of that version present, stackctl's set.
fn job_document(spec: &Spec, job: &Job) -> Value {
    let schema = spec.job_schema();
    let props = &schema["properties"];
    let mut doc = spec.example(schema, 0);
    let set = |doc: &mut Value, key: &str, value: Value| {
        assert!(props.get(key).is_some(), "{}: jobs have no {key}", spec.api);
        doc[key] = value;
    };
    set(&mut doc, "job_id", json!(job.job_id));
    set(
        &mut doc,
        "array_job_id",
        number(spec, &props["array_job_id"], job.array_job_id),
    );
    match job.array_task_id {
        Some(task) => set(
            &mut doc,
            "array_task_id",
            number(spec, &props["array_task_id"], Some(task)),
        ),
        // v0.0.38 writes null, which its schema cannot say: leave the key out there.
        None if spec.api == Api::V0038 => {
            doc.as_object_mut().unwrap().remove("array_task_id");
        }
        None => set(
            &mut doc,
            "array_task_id",
            number(spec, &props["array_task_id"], None),
        ),
    }
    set(&mut doc, "array_task_string", json!(job.array_task_string));
    let state = if spec.resolve(&props["job_state"])["type"] == "array" {
        let mut list = vec![job.state];
        list.extend(job.flags);
        json!(list)
    } else if let Some(flag) = job.flags.first() {
        // Before v0.0.40 the state is one string, the flag's name when there is one.
        json!(flag)
    } else {
        json!(job.state)
    };
    set(&mut doc, "job_state", state);
    set(&mut doc, "state_reason", json!(job.reason));
    set(&mut doc, "nodes", json!(job.nodes));
    for (key, time) in [
        ("submit_time", job.submit),
        ("start_time", job.start),
        ("end_time", job.end),
    ] {
        set(&mut doc, key, number(spec, &props[key], Some(time)));
    }
    let exit_schema = spec.resolve(&props["exit_code"]);
    let exit = if exit_schema["properties"].get("return_code").is_some() {
        match job.exit {
            Ok(code) => json!({
                "status": [if code == 0 { "SUCCESS" } else { "ERROR" }],
                "return_code": {"set": true, "infinite": false, "number": code},
                "signal": {"id": {"set": false, "infinite": false, "number": 0}, "name": ""}
            }),
            Err(signal) => json!({
                "status": ["SIGNALED"],
                "return_code": {"set": false, "infinite": false, "number": 0},
                "signal": {"id": {"set": true, "infinite": false, "number": signal}, "name": "KILL"}
            }),
        }
    } else {
        // A wait status: the exit status in the second byte, a signal in the low bits.
        let status = match job.exit {
            Ok(code) => code << 8,
            Err(signal) => signal,
        };
        number(spec, exit_schema, Some(status))
    };
    set(&mut doc, "exit_code", exit);
    set(&mut doc, "comment", json!(job.comment));
    set(&mut doc, "user_name", json!(job.user));
    doc
}

/// A full listing answer of `spec`'s version for the jobs given.
fn listing_document(spec: &Spec, jobs: &[Job]) -> Value {
    let mut doc = spec.example(spec.response("get", "jobs"), 0);
    doc["jobs"] = Value::Array(jobs.iter().map(|j| job_document(spec, j)).collect());
    doc["errors"] = json!([]);
    if doc.get("warnings").is_some() {
        doc["warnings"] = json!([]);
    }
    if let Some(schema) = spec.response("get", "jobs")["properties"].get("last_update") {
        doc["last_update"] = number(spec, schema, Some(1_795_742_100));
    }
    doc
}

fn decode(text: &str, user: &str) -> wire::Listing {
    let mut d = serde_json::Deserializer::from_str(text);
    wire::JobsSeed { user }.deserialize(&mut d).unwrap()
}

#[test]
fn every_version_decodes_its_listing_to_the_same_records() {
    for api in Api::ALL {
        let spec = Spec::load(api);
        let doc = listing_document(&spec, &cluster());
        let problems = spec.problems(&doc, spec.response("get", "jobs"));
        assert!(
            problems.is_empty(),
            "{api}: the document breaks its schema: {problems:?}"
        );
        let listing = decode(&doc.to_string(), "alice");
        assert_eq!(listing.jobs, expected(), "{api}");
        assert!(listing.errors.is_empty() && !listing.unchanged, "{api}");
        // Only v0.0.40+ say slurmctld's time, for the next update_time.
        let last_update = (api >= Api::V0040).then_some(1_795_742_100);
        assert_eq!(listing.last_update, last_update, "{api}");
    }
}

#[test]
fn an_unchanged_cluster_is_told_apart_from_an_empty_one() {
    for api in Api::ALL.into_iter().filter(|&a| a >= Api::V0039) {
        let spec = Spec::load(api);
        let mut doc = listing_document(&spec, &[]);
        let empty = decode(&doc.to_string(), "alice");
        assert!(!empty.unchanged, "{api}: no jobs is not 'unchanged'");
        // What slurmrestd writes when nothing changed since update_time (23.11 and 24.11).
        let text = if api == Api::V0039 {
            "No job changes since update_time=1795742000"
        } else {
            "No job changes since update_time[1795742000]=2026-11-27T05:00:00"
        };
        let warnings = spec.resolve(&spec.response("get", "jobs")["properties"]["warnings"]);
        let mut warning = spec.example(&warnings["items"], 0);
        let key = if warning.get("description").is_some() {
            "description"
        } else {
            "warning"
        };
        warning[key] = json!(text);
        doc["warnings"] = json!([warning]);
        let problems = spec.problems(&doc, spec.response("get", "jobs"));
        assert!(problems.is_empty(), "{api}: {problems:?}");
        assert!(decode(&doc.to_string(), "alice").unchanged, "{api}");
    }
}

/// A job using every option the CLI would pass as `#SBATCH` lines.
fn every_option() -> JobRequest {
    JobRequest {
        options: JobOptions {
            name: "a.web".into(),
            comment: OURS.into(),
            array: Some("0-1".into()),
            begin: Some("now+30".into()),
            dependency: Some("after:5".into()),
            hold: true,
            nodes: Some(1),
            ntasks: Some(1),
            ntasks_per_node: Some(1),
            cpus_per_task: Some(2),
            memory: Some("1G".into()),
            gres: Some("gpu:a100:1".into()),
            time_limit: Some(60),
            partition: Some("debug".into()),
            qos: Some("normal".into()),
            account: Some("research".into()),
            exclude: Some("node[1-2]".into()),
            output: Some("/logs/a.web-%A_%a.out".into()),
            error: Some("/logs/a.web-%A_%a.err".into()),
            export_none: true,
            ..Default::default()
        },
        body: "exec sleep 1\n".into(),
    }
}

#[test]
fn every_version_accepts_the_submit_and_update_stackctl_sends() {
    for api in Api::ALL {
        let spec = Spec::load(api);
        let mut body = wire::submit_body(&every_option(), api, 1000);
        if api == Api::V0038 {
            // v0.0.38's document and its server disagree; the server, checked live in
            // `tests/e2e/rest.rs` (every_option_over_rest_means_what_it_means_over_the_cli), wins:
            // `begin_time` is a time string, `nodes` a string (`[2, 2]` is read as one node)
            // and `exclude_nodes` is `--exclude`.
            let job = body["job"].as_object_mut().unwrap();
            assert_eq!(job.remove("begin_time"), Some(json!("now+30")));
            assert_eq!(job.remove("exclude_nodes"), Some(json!("node[1-2]")));
            assert_eq!(job.remove("nodes"), Some(json!("1")));
        }
        let problems = spec.problems(&body, spec.request("post", "job/submit"));
        assert!(problems.is_empty(), "{api}: {problems:?}\n{body:#}");
        let job = &body["job"];
        let script = if api >= Api::V0041 {
            &job["script"]
        } else {
            &body["script"]
        };
        assert!(
            script.as_str().unwrap().starts_with("#!/bin/bash\n")
                && script.as_str().unwrap().ends_with("\nexec sleep 1\n"),
            "{api}: {script}"
        );
        assert!(job.get("test_only").is_none(), "{api}: never test_only");
        // The options that change shape between versions, read back in each one's terms.
        let count = |v: &Value| v.get("number").unwrap_or(v).as_i64();
        assert_eq!(count(&job["time_limit"]), Some(60), "{api}");
        assert_eq!(count(&job["memory_per_node"]), Some(1024), "{api}");
        if api != Api::V0038 {
            assert_eq!(count(&job["begin_time"]), Some(1030), "{api}");
        }
        assert_eq!(job["current_working_directory"], "/logs", "{api}");
        // The script makes its log directory and logs itself; Slurm's output goes nowhere.
        assert_eq!(
            (&job["standard_output"], &job["standard_error"]),
            (&json!("/dev/null"), &json!("/dev/null")),
            "{api}"
        );
        assert!(
            script.as_str().unwrap().contains("mkdir -p '/logs'"),
            "{api}"
        );
        assert_eq!(
            (&job["hold"], &job["tasks_per_node"]),
            (&json!(true), &json!(1)),
            "{api}"
        );
        if api == Api::V0038 {
            assert_eq!(job["gres"], "gpu:a100:1");

            assert!(job.get("excluded_nodes").is_none(), "refused by v0.0.38");
        } else {
            assert_eq!(job["tres_per_node"], "gres/gpu:a100:1", "{api}");
            assert_eq!(
                (&job["minimum_nodes"], &job["maximum_nodes"]),
                (&json!(1), &json!(1))
            );
            assert_eq!(job["excluded_nodes"], json!(["node[1-2]"]), "{api}");
            assert_eq!(
                job["environment"][0], "PATH=/usr/local/bin:/usr/bin:/bin",
                "{api}"
            );
        }
        let update = wire::comment_update("stackctl;owner=o;health=ready", api);
        let problems = spec.problems(&update, spec.request("post", "job/{job_id}"));
        assert!(problems.is_empty(), "{api}: {problems:?}");
    }
}

#[test]
fn the_schema_check_catches_a_body_of_another_version() {
    // The check must be able to fail: v0.0.38's body breaks every newer schema, and the
    // newest breaks v0.0.38's.
    let old = wire::submit_body(&every_option(), Api::V0038, 1000);
    for api in Api::ALL.into_iter().filter(|&a| a > Api::V0038) {
        let spec = Spec::load(api);
        let problems = spec.problems(&old, spec.request("post", "job/submit"));
        assert!(
            problems.iter().any(|p| p.contains("environment"))
                && problems.iter().any(|p| p.contains("gres")),
            "{api}: {problems:?}"
        );
    }
    let spec = Spec::load(Api::V0038);
    let new = wire::submit_body(&every_option(), Api::V0042, 1000);
    let problems = spec.problems(&new, spec.request("post", "job/submit"));
    assert!(
        problems
            .iter()
            .any(|p| p.contains("tres_per_node: unknown key")),
        "{problems:?}"
    );
}

#[test]
fn every_version_reports_errors_with_their_numbers() {
    for api in Api::ALL {
        let spec = Spec::load(api);
        let schema = spec.response("post", "job/submit");
        let mut doc = spec.example(schema, 0);
        let mut error = spec.example(&schema["properties"]["errors"]["items"], 0);
        error["error_number"] = json!(2070);
        error["error"] = json!("Required partition not available (inactive or drain)");
        if error.get("description").is_some() {
            error["description"] = json!("");
        }
        doc["errors"] = json!([error]);
        let problems = spec.problems(&doc, schema);
        assert!(problems.is_empty(), "{api}: {problems:?}");
        let errors = wire::errors_of(&doc);
        assert_eq!(errors.len(), 1, "{api}");
        assert_eq!(errors[0].number, Some(2070), "{api}");
        assert!(
            errors[0].text.starts_with("Required partition"),
            "{api}: {}",
            errors[0].text
        );
    }
    // v0.0.42 answers a cancel with a status per job; code 0 is success.
    let spec = Spec::load(Api::V0042);
    let schema = spec.response("delete", "job/{job_id}");
    let mut doc = spec.example(schema, 0);
    let mut ok = spec.example(&spec.resolve(&schema["properties"]["status"])["items"], 0);
    ok["error"] = json!({"string": "", "code": 0, "message": ""});
    let mut gone = ok.clone();
    gone["error"] =
        json!({"string": "Invalid job id specified", "code": 2017, "message": "Job not found"});
    doc["status"] = json!([ok, gone]);
    doc["errors"] = json!([]);
    assert!(
        spec.problems(&doc, schema).is_empty(),
        "{:?}",
        spec.problems(&doc, schema)
    );
    let errors = wire::errors_of(&doc);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].number, Some(2017));
}

#[test]
fn every_version_gives_the_same_partitions_and_nodes() {
    for api in Api::ALL {
        let spec = Spec::load(api);
        let schema = spec.response("get", "partitions");
        let item = spec.resolve(&spec.resolve(&schema["properties"]["partitions"])["items"]);
        let mut p = spec.example(item, 0);
        p["name"] = json!("short");
        if api == Api::V0038 {
            p["nodes"] = json!("node[1-2]");
            p["flags"] = json!(["default"]);
            p["max_time_limit"] = json!(60);
            p["maximum_nodes_per_job"] = json!(2);
            p["maximum_cpus_per_node"] = json!(8);
            p["maximum_memory_per_node"] = json!(4000);
        } else {
            p["nodes"]["configured"] = json!("node[1-2]");
            let max = &item["properties"]["maximums"];
            let limit =
                |key: &str, n: i64| number(&spec, &spec.resolve(max)["properties"][key], Some(n));
            p["maximums"]["time"] = limit("time", 60);
            p["maximums"]["nodes"] = limit("nodes", 2);
            p["maximums"]["cpus_per_node"] = limit("cpus_per_node", 8);
            let memory = if api == Api::V0039 {
                "memory_per_cpu"
            } else {
                "partition_memory_per_node"
            };
            if api != Api::V0039 {
                p["maximums"][memory] = limit(memory, 4000);
            }
        }
        let mut doc = spec.example(schema, 0);
        doc["partitions"] = json!([p]);
        doc["errors"] = json!([]);
        let problems = spec.problems(&doc, schema);
        assert!(problems.is_empty(), "{api}: {problems:?}");
        let facts = wire::partitions_of(&doc);
        assert_eq!(facts.len(), 1);
        let f = &facts[0];
        assert_eq!(f.name, "short");
        assert_eq!(f.nodes, ["node1", "node2"], "{api}");
        assert_eq!(
            (f.max_time_minutes, f.max_nodes, f.max_cpus_per_node),
            (Some(60), Some(2), Some(8)),
            "{api}"
        );
        // v0.0.39 has no per-node memory limit for a partition.
        let memory = if api == Api::V0039 { None } else { Some(4000) };
        assert_eq!(f.max_mem_per_node_mb, memory, "{api}");
        assert_eq!(f.is_default, api == Api::V0038, "{api}");
        assert_eq!(wire::default_partition_known(api), api == Api::V0038);

        let schema = spec.response("get", "nodes");
        let item = spec.resolve(&spec.resolve(&schema["properties"]["nodes"])["items"]);
        let mut n = spec.example(item, 0);
        n["name"] = json!("node1");
        n["cpus"] = json!(16);
        n["real_memory"] = json!(16000);
        n["gres"] = json!("gpu:a100:4");
        let idle = if item["properties"].get("idle_cpus").is_some() {
            "idle_cpus"
        } else {
            "alloc_idle_cpus"
        };
        n[idle] = json!(12);
        if n.get("effective_cpus").is_some() {
            n["effective_cpus"] = json!(16);
        }
        let mut doc = spec.example(schema, 0);
        doc["nodes"] = json!([n]);
        let problems = spec.problems(&doc, schema);
        assert!(problems.is_empty(), "{api}: {problems:?}");
        let node = &wire::nodes_of(&doc)[0];
        assert_eq!(
            (node.cpus, node.memory_mb, node.cpus_idle),
            (16, 16000, Some(12)),
            "{api}"
        );
        assert_eq!(node.gpus.len(), 1, "{api}");
        assert_eq!(node.gpus[0].count, 4, "{api}");
    }
}

/// The query parameters `GET jobs` declares in `spec`, by name, with their schemas.
fn listing_parameters(spec: &Spec) -> Vec<(String, Value)> {
    spec.operation("get", "jobs")["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == "query")
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                spec.resolve(&p["schema"]).clone(),
            )
        })
        .collect()
}

#[test]
fn every_version_lists_with_parameters_its_document_declares() {
    for api in Api::ALL {
        let spec = Spec::load(api);
        let declared = listing_parameters(&spec);
        for update_time in [None, Some(1_795_742_000)] {
            let query = wire::listing_query(api, update_time);
            for (name, value) in &query {
                let (_, schema) = declared
                    .iter()
                    .find(|(n, _)| n == name)
                    .unwrap_or_else(|| panic!("{api}: GET jobs declares no {name}: {declared:?}"));
                // A query string is text; each value must read as its schema says.
                let typed = match schema["type"].as_str() {
                    Some("integer") => json!(value.parse::<i64>().unwrap()),
                    _ => json!(value),
                };
                let problems = spec.problems(&typed, schema);
                assert!(problems.is_empty(), "{api}: {name}={value}: {problems:?}");
            }
            let sent = |name: &str| query.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
            assert_eq!(
                sent("update_time").cloned(),
                update_time.map(|t| t.to_string()),
                "{api}"
            );
            // From v0.0.40 the listing leaves out the detail, and only the detail.
            let flags = declared.iter().any(|(n, _)| n == "flags");
            assert_eq!(flags, api >= Api::V0040, "{api}: which versions take flags");
            assert_eq!(
                sent("flags").map(String::as_str),
                flags.then_some("ALL"),
                "{api}"
            );
        }
    }
    assert_eq!(
        wire::with_query(
            "/slurm/v0.0.42/jobs",
            &wire::listing_query(Api::V0042, Some(7))
        ),
        "/slurm/v0.0.42/jobs?flags=ALL&update_time=7"
    );
    assert_eq!(
        wire::with_query(
            "/slurm/v0.0.38/jobs",
            &wire::listing_query(Api::V0038, None)
        ),
        "/slurm/v0.0.38/jobs"
    );
}

#[test]
fn a_listing_without_the_detail_decodes_to_the_same_records() {
    // What `flags=ALL` leaves out: slurmctld packs a job's resources and GRES detail only
    // with DETAIL. Each version that takes flags has both in its job schema.
    for api in Api::ALL.into_iter().filter(|&a| a >= Api::V0040) {
        let spec = Spec::load(api);
        let mut doc = listing_document(&spec, &cluster());
        for job in doc["jobs"].as_array_mut().unwrap() {
            let job = job.as_object_mut().unwrap();
            for key in ["job_resources", "gres_detail"] {
                assert!(job.remove(key).is_some(), "{api}: jobs have no {key}");
            }
        }
        let listing = decode(&doc.to_string(), "alice");
        assert_eq!(listing.jobs, expected(), "{api}");
    }
}
