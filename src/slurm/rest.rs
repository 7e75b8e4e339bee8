//! The slurmrestd adapter (`cluster.backend: rest`): the same [`Backend`] over Slurm's REST API,
//! authenticated with a JWT (`X-SLURM-USER-NAME`, `X-SLURM-USER-TOKEN`).
//!
//! - **Versions**: `api: auto` asks `GET /openapi/v3` once which `/slurm/vX` paths the server
//!   serves and picks the newest this adapter speaks ([`REST_API_VERSIONS`]: v0.0.38, what
//!   Slurm 22.05 serves). A server offering only versions it does not speak is a clear error.
//! - **Listing** decodes the `jobs` array as a stream and keeps only this user's jobs with a
//!   stackctl comment, and only the fields a plan reads; a pending array not yet split into
//!   tasks (`array_task_string`) becomes one record per task, as `squeue --array` prints it.
//! - **Errors**: Slurm answers with `errors[]` even on HTTP 200; each is read. A held submit
//!   (the lock's placeholder) answers `errors: [2042 …]` *and* a `job_id`: that is a job, not
//!   a failure. Connection errors and 5xx answers are retried with backoff (never 4xx, and a
//!   submit never: its outcome goes through the nonce lookup of [`super::submit_once`]).
//! - **What v0.0.38 cannot do**: it has no will-run endpoint and its `test_only` flag submits a
//!   real job, so [`Backend::test_submit`] checks nothing here; it has no config endpoint
//!   (no `MaxArraySize`), no batch scripts (a replaced spec's old values are not shown), no
//!   `--exclude` (a crash-looping replica may restart on the node it failed on), and cannot
//!   create directories or tell a home directory (`log_dir` must be absolute and exist).
//! - **The token** is read once, sent only in its header, and never printed: [`Token`]'s
//!   `Debug` is redacted, and error messages carry Slurm's text, never the request.

use super::{Backend, SlurmError};
use crate::cluster::{ClusterFacts, NodeFacts, PartitionFacts};
use crate::desired::{REST_API_VERSIONS, RestTarget, TokenSource};
use crate::job::JobRequest;
use crate::observed::{COMMENT_TAG, JobId, JobRecord, JobTimes, StartEstimate};
use reqwest::Method;
use reqwest::blocking::{Client, Response};
use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How often an idempotent request is tried when the connection fails or slurmrestd answers 5xx.
const ATTEMPTS: u32 = 3;

/// The Slurm error number of a submit that left the job held (the lock's placeholder).
const HELD_ERROR: i64 = 2042;

/// The Slurm error number of a job id Slurm no longer knows.
const INVALID_JOB_ID: i64 = 2017;

/// A JWT; its `Debug` never shows it.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Slurm reached through slurmrestd.
#[derive(Debug)]
pub struct RestBackend {
    target: RestTarget,
    token: Token,
    client: Client,
    /// The `/slurm/vX` version in use, picked on first use when `api: auto`.
    version: OnceLock<String>,
}

impl RestBackend {
    /// A backend for `target`, reading its token now and refusing one that cannot work
    /// ([`check_token`]).
    pub fn new(target: &RestTarget) -> Result<RestBackend, SlurmError> {
        let token = read_token(&target.token)?;
        check_token(&token, &target.user, now())
            .map_err(|message| failed("slurmrestd", message))?;
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| failed("slurmrestd", format!("cannot set up the HTTP client: {e}")))?;
        let version = OnceLock::new();
        if let Some(api) = &target.api {
            let _ = version.set(api.clone());
        }
        Ok(RestBackend {
            target: target.clone(),
            token: Token(token),
            client,
            version,
        })
    }

    /// The API version in use: the configured one, or the newest the server offers that this
    /// adapter speaks.
    fn version(&self) -> Result<&str, SlurmError> {
        if let Some(version) = self.version.get() {
            return Ok(version);
        }
        let (_, response) = self.send(Method::GET, "/openapi/v3", None, true)?;
        let spec: Value = response
            .json()
            .map_err(|e| parse("GET /openapi/v3", e.to_string()))?;
        let offered = offered_versions(&spec);
        let version = REST_API_VERSIONS
            .iter()
            .rev()
            .find(|v| offered.iter().any(|o| o == *v))
            .ok_or_else(|| {
                failed(
                    "GET /openapi/v3",
                    format!(
                        "slurmrestd at {} offers {}; this stackctl speaks {}",
                        self.target.url,
                        if offered.is_empty() {
                            "no /slurm/ API".to_owned()
                        } else {
                            offered.join(", ")
                        },
                        REST_API_VERSIONS.join(", ")
                    ),
                )
            })?;
        Ok(self.version.get_or_init(|| (*version).to_owned()))
    }

    /// `/slurm/<version>/<rest>`.
    fn path(&self, rest: &str) -> Result<String, SlurmError> {
        Ok(format!("/slurm/{}/{rest}", self.version()?))
    }

    /// Sends one request; retries connection failures and 5xx answers when `idempotent`. A
    /// 401 or 403 is a clear authentication error. Returns the status and the response, whose
    /// body the caller reads (other 4xx and 5xx included: their `errors[]` say why).
    fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<(reqwest::StatusCode, Response), SlurmError> {
        let command = format!("{method} {path}");
        let url = format!("{}{path}", self.target.url);
        let mut attempt = 1;
        loop {
            let mut request = self
                .client
                .request(method.clone(), &url)
                .header("X-SLURM-USER-NAME", &self.target.user)
                .header("X-SLURM-USER-TOKEN", &self.token.0);
            if let Some(body) = body {
                request = request.json(body);
            }
            tracing::debug!(%command, attempt, "slurmrestd request");
            let retry = match request.send() {
                Ok(response) => {
                    let status = response.status();
                    if status == reqwest::StatusCode::UNAUTHORIZED
                        || status == reqwest::StatusCode::FORBIDDEN
                    {
                        let text = response.text().unwrap_or_default();
                        return Err(failed(
                            &command,
                            format!(
                                "slurmrestd refused the token for user {:?} (HTTP {}: {}); is it \
                                 expired or minted for another user?",
                                self.target.user,
                                status.as_u16(),
                                first_line(&text)
                            ),
                        ));
                    }
                    if !status.is_server_error() || !idempotent || attempt >= ATTEMPTS {
                        return Ok((status, response));
                    }
                    format!("HTTP {}", status.as_u16())
                }
                // A connection that was never made sent nothing: safe to retry any request.
                Err(e) if e.is_connect() || (idempotent && e.is_timeout()) => {
                    if attempt >= ATTEMPTS {
                        return Err(transport(&command, &self.target.url, &e));
                    }
                    e.to_string()
                }
                Err(e) => return Err(transport(&command, &self.target.url, &e)),
            };
            tracing::warn!(%command, attempt, error = %retry, "slurmrestd request failed; retrying");
            std::thread::sleep(Duration::from_millis(500 << (attempt - 1)));
            attempt += 1;
        }
    }

    /// Sends a request whose answer is JSON with `errors[]`; any error is a failure.
    fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, SlurmError> {
        let command = format!("{method} {path}");
        let (status, response) = self.send(method, path, body, true)?;
        let value: Value = response
            .json()
            .map_err(|e| parse(&command, format!("HTTP {}: not JSON: {e}", status.as_u16())))?;
        let errors = errors_of(&value);
        if !errors.is_empty() || !status.is_success() {
            return Err(failed(&command, describe(status, &errors)));
        }
        Ok(value)
    }
}

impl Backend for RestBackend {
    fn list_jobs(&self) -> Result<Vec<JobRecord>, SlurmError> {
        let path = self.path("jobs")?;
        let command = format!("GET {path}");
        let (status, response) = self.send(Method::GET, &path, None, true)?;
        let reader = std::io::BufReader::with_capacity(64 * 1024, response);
        let mut deserializer = serde_json::Deserializer::from_reader(reader);
        let listing = JobsSeed {
            user: &self.target.user,
        }
        .deserialize(&mut deserializer)
        .map_err(|e| parse(&command, e.to_string()))?;
        if !listing.errors.is_empty() || !status.is_success() {
            return Err(failed(&command, describe(status, &listing.errors)));
        }
        Ok(listing.jobs)
    }

    fn submit(&self, job: &JobRequest) -> Result<u64, SlurmError> {
        let path = self.path("job/submit")?;
        let command = format!("POST {path}");
        let body = submit_body(job, now());
        let (status, response) = self.send(Method::POST, &path, Some(&body), false)?;
        let value: Value = response
            .json()
            .map_err(|e| parse(&command, format!("HTTP {}: not JSON: {e}", status.as_u16())))?;
        let errors = errors_of(&value);
        let job_id = value
            .get("job_id")
            .and_then(Value::as_u64)
            .filter(|&id| id > 0);
        match job_id {
            // A held job (the lock's placeholder) is reported as error 2042 beside its id.
            Some(id) if errors.iter().all(|e| e.number == Some(HELD_ERROR)) => Ok(id),
            _ if errors.is_empty() && status.is_success() => {
                Err(parse(&command, "no job_id in the answer".to_owned()))
            }
            _ => Err(failed(&command, describe(status, &errors))),
        }
    }

    fn test_submit(&self, _job: &JobRequest) -> Result<Option<StartEstimate>, SlurmError> {
        // v0.0.38 has no will-run, and `test_only` submits a real job: nothing is checked, and
        // no start is estimated.
        Ok(None)
    }

    fn cancel(&self, job_ids: &[JobId]) -> Result<(), SlurmError> {
        for id in job_ids {
            let path = self.path(&format!("job/{id}"))?;
            match self.call(Method::DELETE, &path, None) {
                Ok(_) => {}
                // Gone already: as cancelled as it gets.
                Err(SlurmError::Failed { message, .. })
                    if message.contains(&format!("({INVALID_JOB_ID})")) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn update_comment(&self, job_id: &JobId, comment: &str) -> Result<(), SlurmError> {
        let path = self.path(&format!("job/{job_id}"))?;
        self.call(Method::POST, &path, Some(&json!({ "comment": comment })))
            .map(drop)
    }

    fn batch_script(&self, _job_id: &JobId) -> Result<Option<String>, SlurmError> {
        // v0.0.38 does not return batch scripts.
        Ok(None)
    }

    fn cluster_facts(&self) -> Result<ClusterFacts, SlurmError> {
        let partitions = self.call(Method::GET, &self.path("partitions")?, None)?;
        let nodes = self.call(Method::GET, &self.path("nodes")?, None)?;
        Ok(ClusterFacts {
            partitions: partitions_of(&partitions),
            nodes: nodes_of(&nodes),
            // No config endpoint in v0.0.38.
            max_array_size: None,
        })
    }

    fn home_dir(&self) -> Result<Option<String>, SlurmError> {
        Err(failed(
            "slurmrestd",
            "slurmrestd cannot tell a home directory: set log_dir (and image_dir) in \
             stackctl.yaml to absolute paths"
                .to_owned(),
        ))
    }

    fn unchecked(&self) -> Option<String> {
        Some(format!(
            "over slurmrestd {} stackctl cannot pre-check submissions or estimate their start \
             (its test_only would submit a real job), check MaxArraySize (no config endpoint), \
             read a replaced job's spec back (no batch scripts) or keep a restart off the node \
             it failed on (no --exclude); Slurm's own refusal comes at submit",
            self.version.get().map_or("v0.0.38", String::as_str)
        ))
    }

    fn create_dir(&self, _path: &std::path::Path) -> Result<(), String> {
        // Nothing over REST can make a directory; Slurm writes the logs where log_dir says.
        Ok(())
    }
}

/// Reads the token from its source; its value never appears in an error.
fn read_token(source: &TokenSource) -> Result<String, SlurmError> {
    let token = match source {
        TokenSource::Env(name) => std::env::var(name).map_err(|_| {
            failed(
                "slurmrestd",
                format!("no token: the environment variable {name} is not set (cluster.token_env)"),
            )
        })?,
        TokenSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
            failed(
                "slurmrestd",
                format!(
                    "no token: cannot read {} (cluster.token_file): {e}",
                    path.display()
                ),
            )
        })?,
    };
    // `scontrol token` prints `SLURM_JWT=<token>`; accept that form too.
    let token = token.trim();
    let token = token.strip_prefix("SLURM_JWT=").unwrap_or(token).to_owned();
    if token.is_empty() {
        return Err(failed("slurmrestd", "no token: it is empty".to_owned()));
    }
    Ok(token)
}

/// Checks what a Slurm JWT says about itself (its signature is slurmctld's to check): that it
/// is a JWT, not expired at `now`, and minted for `user`. Slurm 22.05 answers a bad token with
/// an "Unspecified error", so these are the clear errors a user gets. Never shows the token.
/// Pure.
pub fn check_token(token: &str, user: &str, now: i64) -> Result<(), String> {
    use base64::Engine;
    let not_jwt = || "the token is not a JWT (mint one with `scontrol token`)".to_owned();
    let payload = token.split('.').nth(1).ok_or_else(not_jwt)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| not_jwt())?;
    let claims: Value = serde_json::from_slice(&bytes)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(not_jwt)?;
    if let Some(exp) = claims.get("exp").and_then(Value::as_i64)
        && exp <= now
    {
        return Err(format!(
            "the token expired {} s ago (mint a new one with `scontrol token`)",
            now - exp
        ));
    }
    match claims.get("sun").and_then(Value::as_str) {
        Some(sun) if sun != user => Err(format!(
            "the token was minted for user {sun:?}, and cluster.user is {user:?}"
        )),
        _ => Ok(()),
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

/// One entry of Slurm's `errors[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestError {
    /// `error_number` (or `error_code`), when given.
    pub number: Option<i64>,
    /// `error` (or `description`).
    pub text: String,
}

impl<'de> Deserialize<'de> for RestError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RestError, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(error_of(&value))
    }
}

fn error_of(value: &Value) -> RestError {
    let number = ["error_number", "error_code"]
        .iter()
        .find_map(|k| value.get(*k)?.as_i64());
    let text = ["error", "description"]
        .iter()
        .filter_map(|k| value.get(*k)?.as_str())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    RestError { number, text }
}

/// The `errors[]` of an answer. Pure.
pub fn errors_of(value: &Value) -> Vec<RestError> {
    value
        .get("errors")
        .and_then(Value::as_array)
        .map(|errors| errors.iter().map(error_of).collect())
        .unwrap_or_default()
}

/// One line for a failed answer: each error with its number, or the HTTP status. Slurm 22.05
/// answers a token slurmctld cannot verify with an unspecified error (-1); the line says so.
fn describe(status: reqwest::StatusCode, errors: &[RestError]) -> String {
    if errors.is_empty() {
        return format!("HTTP {}", status.as_u16());
    }
    let mut line = errors
        .iter()
        .map(|e| match e.number {
            Some(n) => format!("{} ({n})", e.text),
            None => e.text.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    if errors.iter().any(|e| e.number == Some(-1)) {
        line.push_str(
            " — slurmctld answers this when it cannot verify the token's signature (a token \
             from another cluster's key, or altered); mint one with `scontrol token`",
        );
    }
    line
}

/// The submit request for `job`: `script` (shebang and body, no `#SBATCH` lines) and `job`
/// (v0.0.38 `job_properties`). `--begin=now+N` becomes `begin_time` from `now`. Pure.
pub fn submit_body(job: &JobRequest, now: i64) -> Value {
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
        set("begin_time", json!(now + delay));
    }
    if let Some(dependency) = &o.dependency {
        set("dependency", json!(dependency));
    }
    if o.hold {
        set("hold", json!(true));
    }
    if let Some(nodes) = o.nodes {
        set("nodes", json!([nodes, nodes]));
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
        set("memory_per_node", json!(mib));
    }
    if let Some(mib) = o
        .memory_per_cpu
        .as_deref()
        .and_then(crate::desired::memory_mib)
    {
        set("memory_per_cpu", json!(mib));
    }
    if let Some(gres) = &o.gres {
        set("gres", json!(gres));
    }
    if let Some(minutes) = o.time_limit {
        set("time_limit", json!(minutes));
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
    // The job's directory: where its logs go (v0.0.38 needs one; there is no submit dir).
    let cwd = o
        .output
        .as_deref()
        .and_then(|p| std::path::Path::new(p).parent())
        .map(|p| p.display().to_string())
        .filter(|p| p.starts_with('/'))
        .unwrap_or_else(|| "/tmp".to_owned());
    set("current_working_directory", json!(cwd));
    // Nothing from here: v0.0.38 requires a dict, and its `get_user_environment` (what
    // `--export=NONE` implies on the CLI) is refused, so the job gets PATH and its script.
    set(
        "environment",
        json!({"PATH": "/usr/local/bin:/usr/bin:/bin"}),
    );
    json!({
        "script": format!("#!/bin/bash\n{}", job.body),
        "job": Value::Object(props),
    })
}

/// Partitions from a v0.0.38 `partitions` answer. Pure.
pub fn partitions_of(value: &Value) -> Vec<PartitionFacts> {
    let limit = |p: &Value, key: &str| {
        p.get(key)
            .and_then(Value::as_i64)
            .filter(|&n| n >= 0)
            .and_then(|n| u32::try_from(n).ok())
    };
    value
        .get("partitions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| PartitionFacts {
            name: p["name"].as_str().unwrap_or_default().to_owned(),
            is_default: p["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "default")),
            max_time_minutes: limit(p, "max_time_limit"),
            max_nodes: limit(p, "maximum_nodes_per_job"),
            max_cpus_per_node: limit(p, "maximum_cpus_per_node"),
            max_mem_per_node_mb: p
                .get("maximum_memory_per_node")
                .and_then(Value::as_u64)
                .filter(|&m| m > 0),
            nodes: crate::hostlist::expand(p["nodes"].as_str().unwrap_or_default()),
        })
        .collect()
}

/// Nodes from a v0.0.38 `nodes` answer. Pure.
pub fn nodes_of(value: &Value) -> Vec<NodeFacts> {
    value
        .get("nodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|n| {
            let number = |key: &str| n.get(key).and_then(Value::as_u64).unwrap_or(0);
            NodeFacts {
                name: n["name"].as_str().unwrap_or_default().to_owned(),
                cpus: number("cpus") as u32,
                memory_mb: number("real_memory"),
                cpus_idle: n.get("idle_cpus").and_then(Value::as_u64).map(|c| c as u32),
                gpus: super::cli::parse_gres(n["gres"].as_str().unwrap_or_default())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// A listing: this user's stackctl jobs and the answer's errors.
#[derive(Debug, Default)]
pub struct Listing {
    /// The jobs kept.
    pub jobs: Vec<JobRecord>,
    /// `errors[]`.
    pub errors: Vec<RestError>,
}

/// Decodes a `jobs` answer as a stream, keeping only `user`'s jobs with a stackctl comment.
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
    exit_code: Option<Number>,
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
        number: i64,
    },
}

impl Number {
    fn value(&self) -> Option<i64> {
        match *self {
            Number::Plain(n) => Some(n),
            Number::Object { set, number } => set.then_some(number),
        }
    }
}

/// A job state: a string (to v0.0.39), or a list of flags (v0.0.40+).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum State {
    One(String),
    Flags(Vec<String>),
}

impl RestJob {
    /// The job as squeue `--array` lists it: one record, or one per task of an unsplit
    /// pending array.
    fn records(self, last_comment: &mut Arc<str>, out: &mut Vec<JobRecord>) {
        let comment = self.comment.unwrap_or_default();
        if **last_comment != *comment {
            *last_comment = Arc::from(comment.as_str());
        }
        let state = match self.job_state {
            Some(State::One(s)) => s,
            Some(State::Flags(flags)) => flags.into_iter().next().unwrap_or_default(),
            None => String::new(),
        };
        let positive = |n: &Option<Number>| n.as_ref()?.value().filter(|&t| t > 0);
        let times = JobTimes {
            submit: positive(&self.submit_time),
            start: positive(&self.start_time),
            end: positive(&self.end_time),
            exit: self
                .exit_code
                .as_ref()
                .and_then(Number::value)
                .and_then(|s| u32::try_from(s).ok())
                .and_then(JobTimes::exit_from_wait_status),
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

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim()
}

fn failed(command: &str, message: String) -> SlurmError {
    SlurmError::Failed {
        command: command.to_owned(),
        message,
    }
}

fn parse(command: &str, message: String) -> SlurmError {
    SlurmError::Parse {
        command: command.to_owned(),
        message,
    }
}

/// A request that got no answer, as one line naming the server (never the token).
fn transport(command: &str, url: &str, error: &reqwest::Error) -> SlurmError {
    let mut message = format!("cannot reach slurmrestd at {url}");
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut last = None;
    while let Some(s) = source {
        last = Some(s.to_string());
        source = s.source();
    }
    if error.is_timeout() {
        message.push_str(": timed out");
    } else if let Some(last) = last {
        message.push_str(&format!(": {last}"));
    }
    failed(command, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobOptions;

    #[test]
    fn the_newest_offered_version_this_adapter_speaks() {
        let spec = json!({"paths": {
            "/slurm/v0.0.37/jobs": {}, "/slurm/v0.0.38/ping": {}, "/slurm/v0.0.38/jobs": {},
            "/slurmdb/v0.0.38/jobs": {}, "/openapi": {}
        }});
        assert_eq!(offered_versions(&spec), ["v0.0.37", "v0.0.38"]);
        let newer = json!({"paths": {"/slurm/v0.0.40/jobs": {}, "/slurm/v0.0.9/x": {}}});
        assert_eq!(offered_versions(&newer), ["v0.0.9", "v0.0.40"]);
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
        assert_eq!(listing.jobs[0].state, "PENDING");
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
    fn submit_body_maps_every_option_to_v0038_keys() {
        let job = JobRequest {
            options: JobOptions {
                name: "a.web".into(),
                comment: "stackctl;owner=o".into(),
                array: Some("0-1".into()),
                begin: Some("now+30".into()),
                nodes: Some(1),
                ntasks_per_node: Some(1),
                cpus_per_task: Some(2),
                memory: Some("1G".into()),
                gres: Some("gpu:a100:1".into()),
                time_limit: Some(60),
                partition: Some("debug".into()),
                output: Some("/logs/a.web-%A_%a.out".into()),
                error: Some("/logs/a.web-%A_%a.err".into()),
                export_none: true,
                hold: true,
                ..Default::default()
            },
            body: "exec sleep 1\n".into(),
        };
        let body = submit_body(&job, 1000);
        assert_eq!(body["script"], "#!/bin/bash\nexec sleep 1\n");
        let j = &body["job"];
        assert_eq!(j["begin_time"], 1030);
        assert_eq!(j["nodes"], json!([1, 1]));
        assert_eq!(j["memory_per_node"], 1024);
        assert_eq!(j["tasks_per_node"], 1);
        assert_eq!(j["gres"], "gpu:a100:1");
        assert_eq!(j["current_working_directory"], "/logs");
        assert_eq!(j["hold"], true);
        assert!(j["environment"].is_object(), "v0.0.38 requires a dict");
        // Every key is one v0.0.38 `job_properties` knows (unknown keys are rejected).
        let known = [
            "name",
            "comment",
            "array",
            "begin_time",
            "dependency",
            "hold",
            "nodes",
            "tasks",
            "tasks_per_node",
            "cpus_per_task",
            "memory_per_node",
            "memory_per_cpu",
            "gres",
            "time_limit",
            "partition",
            "qos",
            "account",
            "standard_output",
            "standard_error",
            "current_working_directory",
            "environment",
        ];
        for key in j.as_object().unwrap().keys() {
            assert!(known.contains(&key.as_str()), "{key}");
        }
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

    #[test]
    fn tokens_that_cannot_work_are_refused_before_any_request() {
        use base64::Engine;
        let jwt = |claims: &str| {
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            format!("{}.{}.sig", b64.encode("{}"), b64.encode(claims))
        };
        let good = jwt(r#"{"exp":2000,"iat":1000,"sun":"alice"}"#);
        assert_eq!(check_token(&good, "alice", 1500), Ok(()));
        let expired = check_token(&good, "alice", 2010).unwrap_err();
        assert!(expired.contains("expired 10 s ago"), "{expired}");
        let other = check_token(&good, "bob", 1500).unwrap_err();
        assert!(other.contains("minted for user \"alice\""), "{other}");
        for bad in ["not-a-token", "a.b.c", "", &jwt("[1]")] {
            let message = check_token(bad, "alice", 1500).unwrap_err();
            assert!(message.contains("not a JWT"), "{bad}: {message}");
            assert!(bad.is_empty() || !message.contains(bad), "{message}");
        }
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let token = Token("eyJsecret".into());
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
    }
}
