//! End-to-end tests of readiness and ports against the real Slurm test cluster: the batch
//! script picks `auto` ports, probes the service, records `health=`, `addr=` and `ports=` in its
//! own comment, and `stackctl status` reports ready replicas at their actual `host:port`.
//!
//! Every test has its own owner and cancels only its own job ids (see `common::TestRepo`).
//! Waits are generous: the cluster is shared and job launch can take a minute.
#![cfg(feature = "cluster")]

use crate::common;

use common::*;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

/// A web server that starts listening 5 s after the job starts, on an `auto` port.
const WEB: &str = "name: web\ncommand: |\n  sleep 5\n  exec python3 -m http.server \"$PORT\"\nresources: {cpu: 1, memory: 256M, time_limit: 15}\nports: [auto]\nhealth:\n  http: {path: /}\n  interval: 1s\n  timeout: 5s\n  start_period: 240s\n";

/// A service that never listens on its port.
const DEAF: &str = "name: deaf\ncommand: exec sleep 600\nresources: {cpu: 1, memory: 64M, time_limit: 15}\nports: [auto]\nhealth:\n  tcp: {}\n  interval: 1s\n  failure_threshold: 2\n";

fn write_recipe(repo: &TestRepo, path: &str, text: &str) {
    let file = repo.path().join("recipes").join(format!("{path}.yaml"));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, text).unwrap();
}

/// The status of `service` from `stackctl status --json`.
fn status(repo: &TestRepo, service: &str) -> Value {
    let out = repo.expect(&["status", "--json"], 0);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["format_version"], "1.6");
    doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == service)
        .unwrap_or_else(|| panic!("no {service} in {out}"))
        .clone()
}

fn count(status: &Value, field: &str) -> u64 {
    status[field].as_u64().unwrap()
}

/// Polls the status until `check` holds; returns that status.
fn wait_status(
    repo: &TestRepo,
    service: &str,
    what: &str,
    seconds: u64,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let s = status(repo, service);
        if check(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {seconds} s waiting for {what}; last status: {s}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn endpoints(status: &Value) -> Vec<String> {
    status["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect()
}

/// Asserts the endpoint is an `auto` port of the range and answers HTTP 200.
fn assert_answers(endpoint: &str) {
    let port: u16 = endpoint.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!((20000..=29999).contains(&port), "{endpoint}");
    let line = http_get(endpoint);
    assert!(line.contains(" 200 "), "GET {endpoint}: {line:?}");
}

#[test]
fn an_http_service_is_running_not_ready_then_ready_at_its_actual_port_and_plans_no_change() {
    let repo = TestRepo::new("ready-http");
    write_recipe(&repo, "test/web", WEB);
    repo.write_stack("s", "services:\n  web:\n    recipe: test/web\n");
    let started = Instant::now();
    repo.apply();
    let first = wait_status(&repo, "s.web", "the replica to run", 300, |s| {
        count(s, "running") == 1
    });
    assert_eq!(
        (count(&first, "ready"), count(&first, "not_ready")),
        (0, 1),
        "a replica that sleeps 5 s before listening is not ready when it starts running: {first}"
    );
    assert_eq!(endpoints(&first), Vec::<String>::new(), "{first}");
    let running_at = started.elapsed();
    let ready = wait_status(&repo, "s.web", "the replica to be ready", 300, |s| {
        count(s, "ready") == 1
    });
    eprintln!(
        "running after {:.1} s, ready after {:.1} s (from apply)",
        running_at.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(count(&ready, "not_ready"), 0, "{ready}");
    let endpoints = endpoints(&ready);
    assert_eq!(endpoints.len(), 1, "{ready}");
    assert_answers(&endpoints[0]);
    // The job recorded its actual port in its own comment, and the rest of the marker is intact.
    let job = &repo.alive("s.web")[0];
    let port = endpoints[0].rsplit_once(':').unwrap().1;
    assert!(
        job.comment.contains(";health=ready;") && job.comment.ends_with(&format!(";ports={port}")),
        "{job:?}"
    );
    // (d) A replica whose comment its probe rewrote is still the same replica.
    repo.assert_converged();
}

#[test]
fn four_replicas_with_auto_ports_become_ready_on_four_distinct_ports() {
    let repo = TestRepo::new("ready-four");
    write_recipe(&repo, "test/web", WEB);
    repo.write_stack(
        "s",
        "services:\n  web:\n    recipe: test/web\n    replicas: 4\n",
    );
    let started = Instant::now();
    repo.apply();
    let ready = wait_status(&repo, "s.web", "four ready replicas", 400, |s| {
        count(s, "ready") == 4
    });
    eprintln!(
        "4 replicas ready after {:.1} s (from apply)",
        started.elapsed().as_secs_f64()
    );
    let mut ports: Vec<String> = endpoints(&ready)
        .iter()
        .map(|e| e.rsplit_once(':').unwrap().1.to_owned())
        .collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 4, "four distinct ports: {ready}");
    for endpoint in endpoints(&ready) {
        assert_answers(&endpoint);
    }
    // `stackctl endpoints --json` lists the same four, each answering.
    let out = repo.expect(&["endpoints", "s/web", "--json"], 0);
    let doc: Value = serde_json::from_str(&out).unwrap();
    let mut listed: Vec<String> = doc["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}:{}", e["host"].as_str().unwrap(), e["ports"][0]["port"]))
        .collect();
    listed.sort();
    let mut from_status = endpoints(&ready);
    from_status.sort();
    assert_eq!(listed, from_status, "{out}");
    for endpoint in &listed {
        assert_answers(endpoint);
    }
    repo.assert_converged();
}

#[test]
fn a_replica_that_never_passes_its_probe_ends_itself_with_exit_code_97() {
    let repo = TestRepo::new("ready-deaf");
    write_recipe(&repo, "test/deaf", DEAF);
    repo.write_stack("s", "services:\n  deaf:\n    recipe: test/deaf\n");
    repo.apply();
    let id = repo.alive("s.deaf")[0].id.clone();
    let failed = wait_status(&repo, "s.deaf", "the replica to fail", 300, |s| {
        count(s, "failed") == 1
    });
    assert_eq!(failed["failures"][0]["unhealthy"], true, "{failed}");
    assert_eq!(failed["failures"][0]["state"], "FAILED", "{failed}");
    let text = repo.expect(&["status"], 0);
    assert!(text.contains("FAILED (unhealthy)"), "{text}");
    let show = Command::new("scontrol")
        .env("SLURM_CONF", slurm_conf())
        .args(["show", "job", &id])
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.contains("ExitCode=97:0"), "{show}");
    assert!(show.contains(";health=unhealthy;"), "{show}");
    // Then backed off like any failure: the next plan recreates it as restart 1, not at once.
    let plan: Value =
        serde_json::from_str(&repo.expect(&["plan", "--json", "--detailed-exitcode"], 2)).unwrap();
    let change = &plan["changes"][0];
    assert_eq!(change["reason"], "ended", "{plan}");
    assert_eq!(change["restart"], 1, "{plan}");
    assert!(change["not_before"].as_i64().is_some(), "{plan}");
    assert_eq!(change["last_failure"]["exit"], 97, "{plan}");
}

/// A rollout that stopped leaves every old replica running and ready: status must not look
/// healthy. It names the stopped rollout and the replicas still on the older spec, in text
/// and in JSON.
#[test]
fn status_shows_a_stopped_rollout_and_the_replicas_on_the_older_spec() {
    let repo = TestRepo::new("status-stopped");
    let stack = |resources: &str| {
        format!(
            "services:\n  nap:\n    recipe: test/echo\n    replicas: 2\n    environment: {{VALUE: x}}\n    update: {{strategy: rolling, queue_timeout: 10s}}\n{resources}"
        )
    };
    repo.write_stack("r", &stack(""));
    repo.expect(&["apply", "--auto-approve", "--wait=5m"], 0);
    let old: Vec<String> = repo.alive("r.nap").into_iter().map(|j| j.id).collect();
    assert_eq!(old.len(), 2);
    // All 48 CPUs: the successor cannot start while the old replicas run, so it times out.
    repo.write_stack("r", &stack("    resources: {nodes: 3, cpu: 16}\n"));
    let out = repo.run(&["apply", "--auto-approve"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "the rollout stops: {stderr}");
    let alive: Vec<String> = repo.alive("r.nap").into_iter().map(|j| j.id).collect();
    assert_eq!(alive, old, "the old replicas run on");

    let s = status(&repo, "r.nap");
    assert_eq!((count(&s, "running"), count(&s, "ready")), (2, 2), "{s}");
    let stopped = s["rollouts_stopped"]
        .as_array()
        .unwrap_or_else(|| panic!("no stopped rollout in {s}\n{stderr}\n{:?}", repo.jobs()));
    assert_eq!(stopped.len(), 1, "{s}");
    assert!(old.contains(&stopped[0]["predecessor"].as_str().unwrap().to_owned()));
    let stale: Vec<&str> = s["out_of_date"]
        .as_array()
        .expect("replicas on the older spec")
        .iter()
        .map(|o| o["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(stale, old.iter().map(String::as_str).collect::<Vec<_>>());
    let text = repo.expect(&["status"], 0);
    assert!(text.contains("] rollout stopped: successor "), "{text}");
    for id in &old {
        assert!(
            text.contains(&format!("job {id} RUNNING runs an out-of-date spec ")),
            "{text}"
        );
    }
}
