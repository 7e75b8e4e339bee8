//! What goes over the wire to slurmrestd and back, per API version; pure (no IO), so every
//! version is tested against SchedMD's own OpenAPI documents (`tests/fast/rest_versions.rs`).
//!
//! - **v0.0.38** (Slurm 22.05–23.11): plain numbers, `job_state` a string, `environment` a
//!   dict, `nodes: [min, max]`, `gres`, errors `{error, error_number}`. Its submit reads each
//!   key with sbatch's own option parser, which its OpenAPI document does not tell: checked
//!   live (`tests/e2e/rest.rs`), `begin_time` is a time string (`now+30`; a number is refused),
//!   `nodes` a string (`[2, 2]` gives one node), and `exclude_nodes`, a key the document
//!   lacks, is `--exclude`.
//! - **v0.0.39** (23.02–24.05): the data_parser family. Numbers Slurm may leave unset become
//!   `{set, infinite, number}` (`time_limit`, `memory_per_node`, array ids, exit code),
//!   `environment` is a list of `K=V` and required, `tres_per_node` replaces `gres`,
//!   `excluded_nodes` exists, errors add `description` and `source`.
//! - **v0.0.40** (23.11–25.05): `job_state` becomes a list (base state, then flags), every time
//!   is `{set, infinite, number}`, the exit code is `{status, return_code, signal}`.
//! - **v0.0.41** (24.05–25.11): the top-level `script` is deprecated for `job.script`.
//! - **v0.0.42** (24.11–): the deprecated fields are gone; cancel answers `status[]`.
//!
//! Partitions from v0.0.39 on carry no default flag; [`partitions_of`] says so.

use crate::cluster::{NodeFacts, PartitionFacts};
use crate::job::JobRequest;
use crate::observed::{COMMENT_TAG, JobId, JobRecord, JobTimes};
use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};
use std::sync::Arc;

/// A slurmrestd API version this adapter speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Api {
    /// `v0.0.38`: Slurm 22.05 to 23.11.
    V0038,
    /// `v0.0.39`: Slurm 23.02 to 24.05.
    V0039,
    /// `v0.0.40`: Slurm 23.11 to 25.05.
    V0040,
    /// `v0.0.41`: Slurm 24.05 to 25.11.
    V0041,
    /// `v0.0.42`: Slurm 24.11 on.
    V0042,
}

impl Api {
    /// Every version, oldest first.
    pub const ALL: [Api; 5] = [Api::V0038, Api::V0039, Api::V0040, Api::V0041, Api::V0042];

    /// `v0.0.38` and so on, as paths and `stackctl.yaml` spell it
    /// ([`crate::desired::REST_API_VERSIONS`], in the same order).
    pub fn name(self) -> &'static str {
        crate::desired::REST_API_VERSIONS[self as usize]
    }

    /// The version named `name`, if this adapter speaks it.
    pub fn parse(name: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|api| api.name() == name)
    }

    /// Whether numbers Slurm may leave unset are `{set, infinite, number}` objects.
    fn no_val_objects(self) -> bool {
        self >= Api::V0039
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The `/slurm/vX` versions an OpenAPI document's paths serve, oldest first. Pure.
pub fn offered_versions(spec: &Value) -> Vec<String> {
    let mut versions: Vec<String> = spec
        .get("paths")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|paths| paths.keys())
        .filter_map(|path| path.strip_prefix("/slurm/")?.split('/').next())
        .filter(|v| v.starts_with('v'))
        .map(str::to_owned)
        .collect();
    versions.sort_by_key(|v| {
        v.trim_start_matches('v')
            .split('.')
            .map(|n| n.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>()
    });
    versions.dedup();
    versions
}

/// The newest of the `offered` versions this adapter speaks. Pure.
pub fn newest_spoken(offered: &[String]) -> Option<Api> {
    offered.iter().filter_map(|v| Api::parse(v)).max()
}

/// One entry of Slurm's `errors[]` (or of a v0.0.42 cancel's `status[].error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestError {
    /// `error_number` (or `error_code`, `code`), when given.
    pub number: Option<i64>,
    /// `error` and `description` (or `string` and `message`), joined.
    pub text: String,
}

impl<'de> Deserialize<'de> for RestError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RestError, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(error_of(&value))
    }
}

fn error_of(value: &Value) -> RestError {
    let number = ["error_number", "error_code", "errno", "code"]
        .iter()
        .find_map(|k| value.get(*k)?.as_i64());
    let mut parts: Vec<&str> = Vec::new();
    for key in ["error", "string", "description", "message"] {
        if let Some(text) = value.get(key).and_then(Value::as_str)
            && !text.is_empty()
            && !parts.contains(&text)
        {
            parts.push(text);
        }
    }
    RestError {
        number,
        text: parts.join(": "),
    }
}

/// The errors of an answer: `errors[]`, and the per-job `status[].error` of a v0.0.42 cancel
/// (code 0 there is success). Pure.
pub fn errors_of(value: &Value) -> Vec<RestError> {
    let listed = value
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(error_of);
    let per_job = value
        .get("status")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("error"))
        .map(error_of)
        .filter(|e| e.number.is_some_and(|n| n != 0));
    listed.chain(per_job).collect()
}

/// The `flags` a listing asks with from v0.0.40 on: `ALL` alone. Unasked, slurmrestd lists
/// with `ALL` and `DETAIL`; `ALL` keeps every job a hidden partition holds (as unasked), and
/// leaving out `DETAIL` drops each job's `job_resources` (its CPUs and cores on each node)
/// and `gres_detail`, which a plan never reads (slurmctld packs them only with `DETAIL`).
pub const LISTING_FLAGS: &str = "ALL";

/// The query parameters of a `GET …/jobs` listing in `api`, in order: `flags=ALL` from v0.0.40
/// on ([`LISTING_FLAGS`]; v0.0.38 and v0.0.39 take no flags and always send the detail), and
/// `update_time` when a previous listing is known. Nothing else shrinks a listing in any
/// version: no version filters by user, state or partition, and `update_time` is all or
/// nothing (slurmctld answers every job when any job changed since, and none otherwise), so
/// an answer with jobs is always a whole listing. Pure.
pub fn listing_query(api: Api, update_time: Option<i64>) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if api >= Api::V0040 {
        query.push(("flags", LISTING_FLAGS.to_owned()));
    }
    if let Some(t) = update_time {
        query.push(("update_time", t.to_string()));
    }
    query
}

/// `path` with `query` appended (`?k=v&k=v`); the values of [`listing_query`] need no
/// escaping. Pure.
pub fn with_query(path: &str, query: &[(&str, String)]) -> String {
    let mut url = path.to_owned();
    for (i, (key, value)) in query.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(key);
        url.push('=');
        url.push_str(value);
    }
    url
}

/// The text slurmrestd v0.0.39+ puts in `warnings[]` instead of jobs when nothing changed
/// since the `update_time` asked for (v0.0.38 answers HTTP 304 instead).
pub const NO_CHANGE_WARNING: &str = "No job changes since";

/// `{set: true, infinite: false, number: n}`, or plain `n` before v0.0.39.
fn number(api: Api, n: i64) -> Value {
    if api.no_val_objects() {
        json!({"set": true, "infinite": false, "number": n})
    } else {
        json!(n)
    }
}

/// The `PATH` a REST-submitted job gets. Nothing else comes from the submitter: v0.0.38
/// refuses `get_user_environment` (what `--export=NONE` implies on the CLI), so the job gets
/// PATH and its script, on every version alike.
const JOB_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The submit request for `job` in `api`'s JSON: the script (shebang and body, no `#SBATCH`
/// lines) and the job description. `--begin=now+N` becomes `begin_time` from `now`. Never
/// `test_only`: on v0.0.38 it submits a real job. Pure.
pub fn submit_body(job: &JobRequest, api: Api, now: i64) -> Value {
    let o = &job.options;
    let mut props = serde_json::Map::new();
    let mut set = |key: &str, value: Value| {
        props.insert(key.to_owned(), value);
    };
    set("name", json!(o.name));
    set("comment", json!(o.comment));
    if let Some(array) = &o.array {
        set("array", json!(array));
    }
    if let Some(begin) = &o.begin {
        let delay = begin
            .strip_prefix("now+")
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0);
        let at = now + delay;
        set(
            "begin_time",
            match api {
                // v0.0.38 reads each key as sbatch reads its option (Slurm's `parse_time`): a
                // number is refused ("Unable to parse time"), whatever its schema says. The
                // delay is then counted from slurmctld's clock, as on the CLI.
                Api::V0038 => json!(format!("now+{delay}")),
                // v0.0.39 still has a plain begin_time.
                Api::V0039 => json!(at),
                _ => number(api, at),
            },
        );
    }
    if let Some(dependency) = &o.dependency {
        set("dependency", json!(dependency));
    }
    if o.hold {
        set("hold", json!(true));
    }
    if let Some(nodes) = o.nodes {
        if api == Api::V0038 {
            // As `--nodes=N`. The document's `[min, max]` is read as the minimum alone
            // (`[2, 2]` gives a one-node job on 22.05).
            set("nodes", json!(nodes.to_string()));
        } else {
            set("minimum_nodes", json!(nodes));
            set("maximum_nodes", json!(nodes));
        }
    }
    if let Some(n) = o.ntasks {
        set("tasks", json!(n));
    }
    if let Some(n) = o.ntasks_per_node {
        set("tasks_per_node", json!(n));
    }
    if let Some(n) = o.cpus_per_task {
        set("cpus_per_task", json!(n));
    }
    if let Some(mib) = o.memory.as_deref().and_then(crate::desired::memory_mib) {
        set("memory_per_node", number(api, mib as i64));
    }
    if let Some(mib) = o
        .memory_per_cpu
        .as_deref()
        .and_then(crate::desired::memory_mib)
    {
        set("memory_per_cpu", number(api, mib as i64));
    }
    if let Some(gres) = &o.gres {
        if api == Api::V0038 {
            set("gres", json!(gres));
        } else {
            // `--gres=gpu:a100:1` is `--tres-per-node=gres/gpu:a100:1`.
            let tres: Vec<String> = gres
                .split(',')
                .filter(|g| !g.is_empty())
                .map(|g| format!("gres/{}", g.trim_start_matches("gres/")))
                .collect();
            set("tres_per_node", json!(tres.join(",")));
        }
    }
    if let Some(minutes) = o.time_limit {
        set("time_limit", number(api, i64::from(minutes)));
    }
    for (key, value) in [
        ("partition", &o.partition),
        ("qos", &o.qos),
        ("account", &o.account),
        ("standard_output", &o.output),
        ("standard_error", &o.error),
    ] {
        if let Some(value) = value {
            set(key, json!(value));
        }
    }
    if let Some(exclude) = &o.exclude {
        if api == Api::V0038 {
            // Not in v0.0.38's schema, but what its option parser knows (sbatch's
            // `--exclude`); `exclude` and `excluded_nodes` are refused there.
            set("exclude_nodes", json!(exclude));
        } else {
            set("excluded_nodes", json!([exclude]));
        }
    }
    // The job's directory: its log directory (v0.0.38 needs one; there is no submit dir).
    // slurmstepd starts a job whose directory is missing in /tmp.
    let log_dir = o
        .output
        .as_deref()
        .filter(|p| *p != DEV_NULL)
        .and_then(|p| std::path::Path::new(p).parent())
        // The directory part of a pattern is literal but for `%%` (a `%`).
        .map(|p| p.display().to_string().replace("%%", "%"))
        .filter(|p| p.starts_with('/'));
    set(
        "current_working_directory",
        json!(log_dir.as_deref().unwrap_or("/tmp")),
    );
    set("environment", environment(api));
    let mut script = String::from("#!/bin/bash\n");
    if let (Some(dir), Some(out), Some(err)) = (&log_dir, &o.output, &o.error) {
        // Nothing over REST can create the log directory, and slurmstepd fails a job whose
        // output file cannot be opened: Slurm's own output goes to /dev/null, and the script
        // creates the directory and sends itself to the per-job files.
        set("standard_output", json!(DEV_NULL));
        set("standard_error", json!(DEV_NULL));
        script.push_str(&self_logging(dir, out, err));
    }
    script.push_str(&job.body);
    if api >= Api::V0041 {
        // The top-level `script` is deprecated from v0.0.41 on.
        set("script", json!(script));
        json!({ "job": Value::Object(props) })
    } else {
        json!({ "script": script, "job": Value::Object(props) })
    }
}

/// Where a job's output goes when nothing should be kept.
pub const DEV_NULL: &str = "/dev/null";

/// The first lines of a script that logs itself: create `dir` (and enter it), then append
/// stdout and stderr to the files the Slurm patterns `out` and `err` name. A directory that
/// cannot be created leaves the output where Slurm sends it; the service still runs.
pub fn self_logging(dir: &str, out: &str, err: &str) -> String {
    let quote = crate::job::quote;
    format!(
        "# stackctl: the log directory is made here (slurmrestd cannot)\n\
         if mkdir -p {dir} 2>/dev/null && cd {dir}; then exec >>{} 2>>{}; fi\n",
        shell_pattern(out),
        shell_pattern(err),
        dir = quote(dir),
    )
}

/// A Slurm file name pattern (`%A_%a`, `%j`, `%x`, `%u`, `%%`) as a bash word that expands to
/// the same name inside the job. Pure.
pub fn shell_pattern(pattern: &str) -> String {
    let quote = crate::job::quote;
    let mut word = String::new();
    let mut literal = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            literal.push(c);
            continue;
        }
        let variable = match chars.next() {
            Some('%') => {
                literal.push('%');
                continue;
            }
            Some('A') => "${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}",
            Some('a') => "${SLURM_ARRAY_TASK_ID:-4294967294}",
            Some('j') => "$SLURM_JOB_ID",
            Some('x') => "$SLURM_JOB_NAME",
            Some('u') => "$SLURM_JOB_USER",
            Some(other) => {
                literal.push('%');
                literal.push(other);
                continue;
            }
            None => {
                literal.push('%');
                break;
            }
        };
        if !literal.is_empty() {
            word.push_str(&quote(&literal));
            literal.clear();
        }
        word.push('"');
        word.push_str(variable);
        word.push('"');
    }
    if !literal.is_empty() || word.is_empty() {
        word.push_str(&quote(&literal));
    }
    word
}

/// The environment field: a dict in v0.0.38, a `K=V` list from v0.0.39.
fn environment(api: Api) -> Value {
    if api == Api::V0038 {
        json!({ "PATH": JOB_PATH })
    } else {
        json!([format!("PATH={JOB_PATH}")])
    }
}

/// The body of `POST job/{id}` that rewrites a job's comment. The job descriptions of v0.0.38
/// and v0.0.39 require `environment`, even in an update; slurmctld does not change a job's
/// environment on update (checked on 22.05: the comment changes, nothing else), so it is sent
/// there to satisfy the schema. Pure.
pub fn comment_update(comment: &str, api: Api) -> Value {
    if api <= Api::V0039 {
        json!({ "comment": comment, "environment": environment(api) })
    } else {
        json!({ "comment": comment })
    }
}

/// The output settings of the first job of a `job/{id}` answer, if any. Pure.
pub fn job_output_of(value: &Value) -> Option<crate::observed::output::JobOutput> {
    let job = value.get("jobs")?.as_array()?.first()?;
    let text = |key: &str| {
        job.get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    Some(crate::observed::output::JobOutput {
        stdout: text("standard_output"),
        stderr: text("standard_error"),
        work_dir: text("current_working_directory"),
        name: text("name"),
    })
}

/// A non-negative count from a plain number or a set `{set, infinite, number}`; `None` for
/// unset, infinite or negative (Slurm's "unlimited").
fn limit(value: Option<&Value>) -> Option<u64> {
    let value = value?;
    let n = match value {
        Value::Object(o) => {
            if o.get("set") != Some(&Value::Bool(true))
                || o.get("infinite") == Some(&Value::Bool(true))
            {
                return None;
            }
            o.get("number")?.as_i64()?
        }
        other => other.as_i64()?,
    };
    u64::try_from(n).ok()
}

/// Partitions from a `partitions` answer of any version. From v0.0.39 on a partition carries
/// no default flag: none is marked default there (see [`default_partition_known`]). Pure.
pub fn partitions_of(value: &Value) -> Vec<PartitionFacts> {
    let u32_of = |v: Option<&Value>| limit(v).and_then(|n| u32::try_from(n).ok());
    value
        .get("partitions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let max = |key: &str| p.get("maximums").and_then(|m| m.get(key));
            let hosts = p["nodes"]
                .as_str()
                .or_else(|| p["nodes"]["configured"].as_str())
                .unwrap_or_default();
            PartitionFacts {
                name: p["name"].as_str().unwrap_or_default().to_owned(),
                is_default: p["flags"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f == "default")),
                max_time_minutes: u32_of(p.get("max_time_limit").or(max("time"))),
                max_nodes: u32_of(p.get("maximum_nodes_per_job").or(max("nodes"))),
                max_cpus_per_node: u32_of(p.get("maximum_cpus_per_node").or(max("cpus_per_node"))),
                max_mem_per_node_mb: limit(
                    p.get("maximum_memory_per_node")
                        .or(max("partition_memory_per_node")),
                )
                .filter(|&m| m > 0),
                nodes: crate::hostlist::expand(hosts),
            }
        })
        .collect()
}

/// Whether `api`'s partitions say which one is the default (v0.0.38 only).
pub fn default_partition_known(api: Api) -> bool {
    api == Api::V0038
}

/// Nodes from a `nodes` answer of any version. Pure.
pub fn nodes_of(value: &Value) -> Vec<NodeFacts> {
    value
        .get("nodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|n| {
            let number = |key: &str| n.get(key).and_then(Value::as_u64);
            NodeFacts {
                name: n["name"].as_str().unwrap_or_default().to_owned(),
                cpus: number("effective_cpus")
                    .filter(|&c| c > 0)
                    .or(number("cpus"))
                    .unwrap_or(0) as u32,
                memory_mb: number("real_memory").unwrap_or(0),
                cpus_idle: number("idle_cpus")
                    .or(number("alloc_idle_cpus"))
                    .map(|c| c as u32),
                gpus: super::super::cli::parse_gres(n["gres"].as_str().unwrap_or_default())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// A listing: this user's stackctl jobs, the answer's errors, and what says whether anything
/// changed.
#[derive(Debug, Default)]
pub struct Listing {
    /// The jobs kept.
    pub jobs: Vec<JobRecord>,
    /// `errors[]`.
    pub errors: Vec<RestError>,
    /// Whether `warnings[]` said no job changed since the `update_time` asked for: `jobs` is
    /// then empty, and the previous listing still holds.
    pub unchanged: bool,
    /// `last_update` (v0.0.40+): slurmctld's time of the last job change it reports, the
    /// `update_time` to ask with next.
    pub last_update: Option<i64>,
}

/// Decodes a `jobs` answer of any version as a stream, keeping only `user`'s jobs with a
/// stackctl comment; every other job and field is skipped unread.
pub struct JobsSeed<'a> {
    /// The Slurm user whose jobs are kept.
    pub user: &'a str,
}

impl<'de> DeserializeSeed<'de> for JobsSeed<'_> {
    type Value = Listing;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Listing, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for JobsSeed<'_> {
    type Value = Listing;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a slurmrestd jobs answer")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Listing, A::Error> {
        let mut listing = Listing::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "jobs" => listing.jobs = map.next_value_seed(KeptJobs { user: self.user })?,
                "errors" => listing.errors = map.next_value()?,
                "warnings" => {
                    let warnings: Vec<RestError> = map.next_value()?;
                    listing.unchanged |=
                        warnings.iter().any(|w| w.text.contains(NO_CHANGE_WARNING));
                }
                "last_update" => {
                    let n: Number = map.next_value()?;
                    listing.last_update = n.value().filter(|&t| t > 0);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(listing)
    }
}

/// The `jobs` array, filtered element by element.
struct KeptJobs<'a> {
    user: &'a str,
}

impl<'de> DeserializeSeed<'de> for KeptJobs<'_> {
    type Value = Vec<JobRecord>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<JobRecord>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for KeptJobs<'_> {
    type Value = Vec<JobRecord>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of jobs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<JobRecord>, A::Error> {
        let mut kept = Vec::new();
        let mut last_comment: Arc<str> = Arc::from("");
        while let Some(job) = seq.next_element::<RestJob>()? {
            if job.user_name.as_deref() != Some(self.user)
                || !job.comment.as_deref().unwrap_or("").contains(COMMENT_TAG)
            {
                continue;
            }
            job.records(&mut last_comment, &mut kept);
        }
        Ok(kept)
    }
}

/// The fields of one job a plan reads; every other field is skipped unread.
#[derive(Debug, Deserialize)]
struct RestJob {
    job_id: u64,
    #[serde(default)]
    array_job_id: Option<Number>,
    #[serde(default)]
    array_task_id: Option<Number>,
    #[serde(default)]
    array_task_string: Option<String>,
    #[serde(default)]
    job_state: Option<State>,
    #[serde(default)]
    state_reason: Option<String>,
    #[serde(default)]
    nodes: Option<String>,
    #[serde(default)]
    submit_time: Option<Number>,
    #[serde(default)]
    start_time: Option<Number>,
    #[serde(default)]
    end_time: Option<Number>,
    #[serde(default)]
    exit_code: Option<ExitCode>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    user_name: Option<String>,
}

/// A number as the versions write it: plain (v0.0.38), or `{set, infinite, number}` (v0.0.39+).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Number {
    Plain(i64),
    Object {
        #[serde(default)]
        set: bool,
        #[serde(default)]
        infinite: bool,
        #[serde(default)]
        number: i64,
    },
}

impl Number {
    fn value(&self) -> Option<i64> {
        match *self {
            Number::Plain(n) => Some(n),
            Number::Object {
                set,
                infinite,
                number,
            } => (set && !infinite).then_some(number),
        }
    }
}

/// An exit code: a wait status (plain or `{set, number}`, to v0.0.39), or
/// `{status, return_code, signal}` (v0.0.40+).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ExitCode {
    Verbose {
        status: Vec<String>,
        #[serde(default)]
        return_code: Option<Number>,
    },
    WaitStatus(Number),
}

impl ExitCode {
    /// The exit status of a job that exited (not one killed by a signal).
    fn exit(&self) -> Option<i32> {
        match self {
            ExitCode::WaitStatus(n) => n
                .value()
                .and_then(|s| u32::try_from(s).ok())
                .and_then(JobTimes::exit_from_wait_status),
            ExitCode::Verbose {
                status,
                return_code,
            } => {
                // As squeue's `exit_code`: the return code unless a signal ended the job.
                if status.iter().any(|s| s == "SIGNALED" || s == "CORE_DUMPED") {
                    return None;
                }
                return_code
                    .as_ref()
                    .and_then(Number::value)
                    .and_then(|c| i32::try_from(c).ok())
            }
        }
    }
}

/// A job state: a string (to v0.0.39), or a base state and flags (v0.0.40+).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum State {
    One(String),
    Flags(Vec<String>),
}

/// The flags that name a job's state ahead of its base state, in the order squeue's
/// `job_state_string` tests them, so a v0.0.40+ list reads as the CLI prints it.
const STATE_FLAGS: [&str; 12] = [
    "COMPLETING",
    "STAGE_OUT",
    "CONFIGURING",
    "RESIZING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "SPECIAL_EXIT",
    "STOPPED",
    "REVOKED",
    "RESV_DEL_HOLD",
    "SIGNALING",
];

impl State {
    /// The state as `squeue -o %T` prints it.
    fn name(self) -> String {
        match self {
            State::One(s) => s,
            State::Flags(flags) => STATE_FLAGS
                .iter()
                .find(|f| flags.iter().any(|s| s == *f))
                .map(|f| (*f).to_owned())
                .or_else(|| flags.into_iter().next())
                .unwrap_or_default(),
        }
    }
}

impl RestJob {
    /// The job as squeue `--array` lists it: one record, or one per task of an unsplit
    /// pending array.
    fn records(self, last_comment: &mut Arc<str>, out: &mut Vec<JobRecord>) {
        let comment = self.comment.unwrap_or_default();
        if **last_comment != *comment {
            *last_comment = Arc::from(comment.as_str());
        }
        let state = self.job_state.map(State::name).unwrap_or_default();
        let positive = |n: &Option<Number>| n.as_ref()?.value().filter(|&t| t > 0);
        let times = JobTimes {
            submit: positive(&self.submit_time),
            start: positive(&self.start_time),
            end: positive(&self.end_time),
            exit: self.exit_code.as_ref().and_then(ExitCode::exit),
        };
        let array = positive(&self.array_job_id).map(|a| a as u64);
        let task = self
            .array_task_id
            .as_ref()
            .and_then(Number::value)
            .filter(|&t| t >= 0)
            .map(|t| t as u32);
        let tasks: Vec<Option<u32>> = match (array, task, &self.array_task_string) {
            (Some(_), Some(task), _) => vec![Some(task)],
            (Some(_), None, Some(text)) => array_tasks(text).into_iter().map(Some).collect(),
            _ => vec![None],
        };
        for task in tasks {
            out.push(JobRecord {
                id: JobId {
                    array: array.unwrap_or(self.job_id),
                    task,
                },
                comment: last_comment.clone(),
                state: state.clone(),
                reason: self.state_reason.clone().unwrap_or_default(),
                nodes: self.nodes.clone().unwrap_or_default(),
                times,
            });
        }
    }
}

/// The task indexes of `0-3,7` (a `%4` throttle ignored). Pure.
pub fn array_tasks(text: &str) -> Vec<u32> {
    let text = text.split('%').next().unwrap_or_default();
    let mut tasks = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (range, step) = match part.split_once(':') {
            Some((range, step)) => (range, step.parse().unwrap_or(1).max(1)),
            None => (part, 1),
        };
        match range.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    tasks.extend((a..=b).step_by(step));
                }
            }
            None => tasks.extend(range.parse::<u32>().ok()),
        }
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELD_ERROR: i64 = 2042;

    #[test]
    fn the_newest_offered_version_this_adapter_speaks() {
        let spec = json!({"paths": {
            "/slurm/v0.0.37/jobs": {}, "/slurm/v0.0.38/ping": {}, "/slurm/v0.0.38/jobs": {},
            "/slurmdb/v0.0.38/jobs": {}, "/openapi": {}
        }});
        assert_eq!(offered_versions(&spec), ["v0.0.37", "v0.0.38"]);
        let newer = json!({"paths": {"/slurm/v0.0.40/jobs": {}, "/slurm/v0.0.9/x": {}}});
        assert_eq!(offered_versions(&newer), ["v0.0.9", "v0.0.40"]);
        let offered = |list: &[&str]| list.iter().map(|v| v.to_string()).collect::<Vec<_>>();
        assert_eq!(
            newest_spoken(&offered(&["v0.0.36", "v0.0.37", "v0.0.38"])),
            Some(Api::V0038)
        );
        // Slurm 25.05 serves v0.0.40 to v0.0.43: the newest spoken here is v0.0.42.
        let slurm_25_05 = offered(&["v0.0.40", "v0.0.41", "v0.0.42", "v0.0.43"]);
        assert_eq!(newest_spoken(&slurm_25_05), Some(Api::V0042));
        assert_eq!(newest_spoken(&offered(&["v0.0.43", "v0.0.44"])), None);
    }

    /// A real v0.0.38 answer of the test cluster (Slurm 22.05.8), cut to three jobs: one of
    /// ours split into a task, one pending array not yet split, one of another user.
    const JOBS_V0038: &str = r#"{"meta":{"plugin":{"type":"openapi\/v0.0.38"}},"errors":[],"jobs":[
      {"account":"","job_id":101,"array_job_id":100,"array_task_id":0,"array_task_string":"",
       "job_state":"RUNNING","state_reason":"None","nodes":"node1","start_time":1795742000,
       "end_time":1795742900,"exit_code":0,"comment":"stackctl;owner=o;stack=a;svc=web;spec=s;nonce=n;idx=0-2",
       "user_name":"alice","gres_detail":["gpu:a100:1(IDX:0)"]},
      {"job_id":100,"array_job_id":100,"array_task_id":null,"array_task_string":"1-2%4",
       "job_state":"PENDING","state_reason":"Resources","nodes":"","start_time":0,"end_time":0,
       "exit_code":0,"comment":"stackctl;owner=o;stack=a;svc=web;spec=s;nonce=n;idx=0-2","user_name":"alice"},
      {"job_id":7,"array_job_id":0,"array_task_id":null,"job_state":"FAILED","state_reason":"NonZeroExitCode",
       "nodes":"node2","start_time":5,"end_time":9,"exit_code":256,"comment":"stackctl;owner=o","user_name":"bob"}
    ]}"#;

    fn decode(text: &str, user: &str) -> Listing {
        let mut d = serde_json::Deserializer::from_str(text);
        JobsSeed { user }.deserialize(&mut d).unwrap()
    }

    #[test]
    fn v0038_listing_keeps_the_users_stackctl_jobs_one_record_per_task() {
        let listing = decode(JOBS_V0038, "alice");
        let ids: Vec<String> = listing.jobs.iter().map(|j| j.id.to_string()).collect();
        assert_eq!(ids, ["100_0", "100_1", "100_2"]);
        let running = &listing.jobs[0];
        assert_eq!(
            (
                running.state.as_str(),
                running.nodes.as_str(),
                running.times.start
            ),
            ("RUNNING", "node1", Some(1795742000))
        );
        assert_eq!(listing.jobs[1].reason, "Resources");
        assert_eq!(listing.jobs[1].times.start, None);
        let bob = decode(JOBS_V0038, "bob");
        assert_eq!(bob.jobs.len(), 1);
        assert_eq!(bob.jobs[0].times.exit, Some(1), "wait status 256 is exit 1");
    }

    #[test]
    fn newer_numbers_and_state_lists_decode_too() {
        let text = r#"{"jobs":[{"job_id":5,"array_job_id":{"set":false,"infinite":false,"number":0},
          "array_task_id":{"set":false,"number":0},"job_state":["PENDING","REQUEUED"],
          "start_time":{"set":true,"infinite":false,"number":77},"comment":"stackctl;x","user_name":"u"}],
          "errors":[{"error":"e","error_number":1}]}"#;
        let listing = decode(text, "u");
        assert_eq!(listing.jobs[0].id.to_string(), "5");
        // As squeue prints it: the REQUEUED flag names the state, not the base PENDING.
        assert_eq!(listing.jobs[0].state, "REQUEUED");
        assert_eq!(listing.jobs[0].times.start, Some(77));
        assert_eq!(
            listing.errors,
            [RestError {
                number: Some(1),
                text: "e".into()
            }]
        );
    }

    #[test]
    fn slurm_file_patterns_become_bash_words_that_expand_the_same() {
        assert_eq!(
            shell_pattern("/l/a.web-%A_%a.out"),
            r#"'/l/a.web-'"${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}"'_'"${SLURM_ARRAY_TASK_ID:-4294967294}"'.out'"#
        );
        assert_eq!(shell_pattern("/l/100%%-%j"), r#"'/l/100%-'"$SLURM_JOB_ID""#);
        assert_eq!(shell_pattern("/it's/%q"), r#"'/it'\''s/%q'"#);
        // Run through bash with a job's variables, it names the file Slurm would.
        let word = shell_pattern("/l/%x %u-%A_%a.%%");
        let output = std::process::Command::new("bash")
            .args(["-c", &format!("printf %s {word}")])
            .env("SLURM_ARRAY_JOB_ID", "41")
            .env("SLURM_ARRAY_TASK_ID", "2")
            .env("SLURM_JOB_NAME", "s.$web")
            .env("SLURM_JOB_USER", "alice")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "/l/s.$web alice-41_2.%"
        );
    }

    #[test]
    fn a_logging_job_over_rest_sends_slurms_output_nowhere_and_logs_itself() {
        let job = JobRequest {
            options: crate::job::JobOptions {
                name: "s.web".into(),
                output: Some("/new/50%% logs/s.web-%A_%a.out".into()),
                error: Some("/new/50%% logs/s.web-%A_%a.err".into()),
                ..Default::default()
            },
            body: "exec sleep 1\n".into(),
        };
        let body = submit_body(&job, Api::V0038, 0);
        assert_eq!(body["job"]["standard_output"], "/dev/null");
        assert_eq!(body["job"]["standard_error"], "/dev/null");
        assert_eq!(body["job"]["current_working_directory"], "/new/50% logs");
        let script = body["script"].as_str().unwrap();
        assert!(
            script.contains("mkdir -p '/new/50% logs' 2>/dev/null && cd '/new/50% logs'"),
            "{script}"
        );
        assert!(script.ends_with("exec sleep 1\n"), "{script}");
        // The lock's placeholder writes nowhere and needs no directory.
        let mut placeholder = job.clone();
        placeholder.options.output = Some(DEV_NULL.into());
        placeholder.options.error = Some(DEV_NULL.into());
        let body = submit_body(&placeholder, Api::V0038, 0);
        assert_eq!(body["script"], "#!/bin/bash\nexec sleep 1\n");
        assert_eq!(body["job"]["current_working_directory"], "/tmp");
    }

    #[test]
    fn v0038_begin_time_is_a_time_string_and_exclude_its_option_name() {
        let job = JobRequest {
            options: crate::job::JobOptions {
                begin: Some("now+45".into()),
                exclude: Some("node[1-2]".into()),
                ..Default::default()
            },
            body: String::new(),
        };
        let old = submit_body(&job, Api::V0038, 1000);
        assert_eq!(old["job"]["begin_time"], "now+45");
        assert_eq!(old["job"]["exclude_nodes"], "node[1-2]");
        let two = JobRequest {
            options: crate::job::JobOptions {
                nodes: Some(2),
                ..Default::default()
            },
            body: String::new(),
        };
        assert_eq!(submit_body(&two, Api::V0038, 0)["job"]["nodes"], "2");
        let newer = submit_body(&job, Api::V0039, 1000);
        assert_eq!(newer["job"]["begin_time"], 1045);
        assert_eq!(newer["job"]["excluded_nodes"], json!(["node[1-2]"]));
    }

    #[test]
    fn array_task_strings() {
        assert_eq!(array_tasks("0-3,7"), [0, 1, 2, 3, 7]);
        assert_eq!(array_tasks("1-2%4"), [1, 2]);
        assert_eq!(array_tasks("0-6:3"), [0, 3, 6]);
        assert!(array_tasks("").is_empty());
    }

    #[test]
    fn errors_read_both_spellings() {
        let value = json!({"errors": [
            {"error": "Job is in held state, pending scheduler release", "error_number": 2042},
            {"error_code": 2127, "error": "environment must be set"},
            {"description": "Unable to find JobId=9", "error_number": 2017, "error": "Invalid job id specified"}
        ]});
        let errors = errors_of(&value);
        assert_eq!(errors[0].number, Some(HELD_ERROR));
        assert_eq!(errors[1].number, Some(2127));
        assert_eq!(
            errors[2].text,
            "Invalid job id specified: Unable to find JobId=9"
        );
    }

    #[test]
    fn v0038_partitions_and_nodes() {
        let partitions = json!({"partitions": [
            {"flags": ["default"], "name": "debug", "nodes": "node[1-3]", "max_time_limit": -1,
             "maximum_nodes_per_job": -1, "maximum_cpus_per_node": -1, "maximum_memory_per_node": null},
            {"flags": [], "name": "short", "nodes": "node[1-2]", "max_time_limit": 60,
             "maximum_nodes_per_job": 2, "maximum_cpus_per_node": 8, "maximum_memory_per_node": 4000}
        ]});
        let p = partitions_of(&partitions);
        assert!(p[0].is_default && p[0].max_time_minutes.is_none());
        assert_eq!(p[0].nodes, ["node1", "node2", "node3"]);
        assert_eq!(
            (
                p[1].max_time_minutes,
                p[1].max_nodes,
                p[1].max_cpus_per_node,
                p[1].max_mem_per_node_mb
            ),
            (Some(60), Some(2), Some(8), Some(4000))
        );
        let nodes = json!({"nodes": [{"name": "node1", "cpus": 16, "real_memory": 16000,
            "idle_cpus": 12, "gres": "gpu:a100:4"}]});
        let n = &nodes_of(&nodes)[0];
        assert_eq!((n.cpus, n.memory_mb, n.cpus_idle), (16, 16000, Some(12)));
        assert_eq!(n.gpus.len(), 1);
        assert_eq!(n.gpus[0].count, 4);
    }
}
