//! The slurmrestd adapter (`cluster.backend: rest`): the same [`Backend`] over Slurm's REST API,
//! authenticated with a JWT (`X-SLURM-USER-NAME`, `X-SLURM-USER-TOKEN`). What goes over the
//! wire, per version, is [`wire`]'s; this module sends it.
//!
//! - **Versions**: `api: auto` asks `GET /openapi/v3` once which `/slurm/vX` paths the server
//!   serves and picks the newest this adapter speaks ([`wire::Api`]: v0.0.38 to v0.0.42). A
//!   server offering only versions it does not speak is a clear error.
//! - **Listing** decodes the `jobs` array as a stream and keeps only this user's jobs with a
//!   stackctl comment, and only the fields a plan reads; a pending array not yet split into
//!   tasks (`array_task_string`) becomes one record per task, as `squeue --array` prints it.
//!   From v0.0.40 it asks with `flags=ALL`, leaving out the per-node detail a plan never
//!   reads ([`wire::listing_query`]). With a [`ListingMemo`] (watch keeps one) the next
//!   listing sends `update_time`, and an unchanged cluster answers with no jobs (HTTP 304 on
//!   v0.0.38, a warning from v0.0.39); a changed one answers every job, never only the changed
//!   ones, so the answer replaces the memo whole. A plan has no earlier listing to ask from.
//!   No version filters the listing by user on slurmctld's side: every user's jobs come, and
//!   are skipped here.
//! - **Errors**: Slurm answers with `errors[]` even on HTTP 200; each is read. A held submit
//!   (the lock's placeholder) answers `errors: [2042 …]` *and* a `job_id`: that is a job, not
//!   a failure. Connection errors and 5xx answers are retried with backoff (never 4xx, and a
//!   submit never: its outcome goes through the nonce lookup of [`super::submit_once`]).
//! - **What no version can do**: there is no will-run endpoint and v0.0.38's `test_only` flag
//!   submits a real job, so [`Backend::test_submit`] checks nothing here; there is no config
//!   endpoint (no `MaxArraySize`) and no batch scripts (a replaced spec's old values are not
//!   shown), and nothing can create directories or tell a home directory (`log_dir` must be
//!   absolute; the job script creates it, see [`wire::self_logging`]). From v0.0.39
//!   partitions do not say which one is the default. [`Backend::unchecked`] names these in every plan.
//! - **The token** is read once, sent only in its header, and never printed: [`Token`]'s
//!   `Debug` is redacted, and error messages carry Slurm's text, never the request.

pub mod wire;

use super::failure::{self, RestOutcome};
use super::{Backend, SlurmError};
use crate::cluster::ClusterFacts;
use crate::desired::{RestTarget, TokenSource};
use crate::job::JobRequest;
use crate::observed::{JobId, JobRecord, StartEstimate};
use reqwest::Method;
use reqwest::blocking::{Client, Response};
use serde::de::DeserializeSeed;
use serde_json::Value;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use wire::{Api, RestError};

/// How often an idempotent request is tried when the connection fails or slurmrestd answers 5xx.
const ATTEMPTS: u32 = 3;

/// The Slurm error number of a submit that left the job held (the lock's placeholder).
const HELD_ERROR: i64 = failure::ESLURM_JOB_HELD;

/// The Slurm error number of a job id Slurm no longer knows.
const INVALID_JOB_ID: i64 = failure::ESLURM_INVALID_JOB_ID;

/// How long a remembered listing may be answered "unchanged" before a full listing is taken
/// anyway, so no missed change can outlive it.
const MEMO_MAX_AGE: Duration = Duration::from_secs(300);

/// How far back from this machine's clock `update_time` is set when slurmrestd does not say
/// its own time (v0.0.38, v0.0.39): the clocks may differ by up to this much.
const CLOCK_MARGIN_SECS: i64 = 60;

/// A JWT; its `Debug` never shows it.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The last full listing, kept by a long-running caller (watch) across the backends it builds,
/// so the next listing can ask slurmrestd for changes only (`update_time`).
#[derive(Debug, Default)]
pub struct ListingMemo {
    last: Mutex<Option<Remembered>>,
}

/// One remembered listing.
#[derive(Debug)]
struct Remembered {
    /// Which server, user and version it came from.
    source: String,
    /// The `update_time` to ask with: slurmctld's time of the listing, or this machine's less
    /// [`CLOCK_MARGIN_SECS`].
    update_time: i64,
    /// When it was taken.
    taken: std::time::Instant,
    /// This user's stackctl jobs.
    jobs: Vec<JobRecord>,
}

impl ListingMemo {
    /// The remembered listing of `source`, when young enough to ask for changes only.
    fn recall(&self, source: &str) -> Option<(i64, Vec<JobRecord>)> {
        let last = self.last.lock().ok()?;
        let r = last.as_ref()?;
        (r.source == source && r.taken.elapsed() < MEMO_MAX_AGE)
            .then(|| (r.update_time, r.jobs.clone()))
    }

    fn remember(&self, remembered: Remembered) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(remembered);
        }
    }
}

/// An answer's body: still streaming, or already read (a 5xx read to decide on a retry).
enum Body {
    Stream(Response),
    Read(std::io::Cursor<Vec<u8>>),
}

impl std::io::Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Body::Stream(response) => response.read(buf),
            Body::Read(cursor) => cursor.read(buf),
        }
    }
}

/// Whether a 5xx answer is Slurm refusing the request for a reason a retry cannot change
/// (slurmrestd answers 500 for Invalid job id, for one): its `errors[]` carry Slurm error
/// numbers, and [`failure::classify_rest`] finds none of them transient.
fn definite(status: u16, text: &str) -> bool {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    let errnos = errnos(&wire::errors_of(&value));
    failure::classify_rest(RestOutcome::Answer {
        status,
        errnos: &errnos,
    }) == failure::Class::Rejected
}

/// The error numbers of `errors`, as [`failure::classify_rest`] takes them.
fn errnos(errors: &[RestError]) -> Vec<Option<i64>> {
    errors.iter().map(|e| e.number).collect()
}

/// The error for a failed answer: its line ([`describe`]), classified by its error numbers.
fn refusal(command: &str, status: reqwest::StatusCode, errors: &[RestError]) -> SlurmError {
    let errnos = errnos(errors);
    let class = failure::classify_rest(RestOutcome::Answer {
        status: status.as_u16(),
        errnos: &errnos,
    });
    SlurmError::classified(command.to_owned(), describe(status, errors), class)
}

/// Slurm reached through slurmrestd.
#[derive(Debug)]
pub struct RestBackend {
    target: RestTarget,
    token: Token,
    client: Client,
    /// The version in use, picked on first use when `api: auto`.
    api: OnceLock<Api>,
    /// Where listings are remembered between backends (watch), if anywhere.
    memo: Option<Arc<ListingMemo>>,
}

impl RestBackend {
    /// A backend for `target`, reading its token now and refusing one that cannot work
    /// ([`check_token`]). With `memo`, listings ask only for what changed since the last one.
    pub fn new(
        target: &RestTarget,
        memo: Option<Arc<ListingMemo>>,
    ) -> Result<RestBackend, SlurmError> {
        let token = read_token(&target.token)?;
        check_token(&token, &target.user, now())
            .map_err(|message| failed("slurmrestd", message))?;
        let client = Client::builder()
            // Plain HTTP needs no CA store: reading the system's costs ~30 ms per run.
            .tls_built_in_root_certs(target.url.starts_with("https:"))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| failed("slurmrestd", format!("cannot set up the HTTP client: {e}")))?;
        let api = OnceLock::new();
        if let Some(configured) = target.api.as_deref().and_then(Api::parse) {
            let _ = api.set(configured);
        }
        Ok(RestBackend {
            target: target.clone(),
            token: Token(token),
            client,
            api,
            memo,
        })
    }

    /// The API version in use: the configured one, or the newest the server offers that this
    /// adapter speaks.
    fn api(&self) -> Result<Api, SlurmError> {
        if let Some(api) = self.api.get() {
            return Ok(*api);
        }
        let (_, body) = self.send(Method::GET, "/openapi/v3", None, true)?;
        let spec: Value =
            serde_json::from_reader(body).map_err(|e| parse("GET /openapi/v3", e.to_string()))?;
        let offered = wire::offered_versions(&spec);
        let api = wire::newest_spoken(&offered).ok_or_else(|| {
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
                    Api::ALL.map(Api::name).join(", ")
                ),
            )
        })?;
        Ok(*self.api.get_or_init(|| api))
    }

    /// `/slurm/<version>/<rest>`.
    fn path(&self, rest: &str) -> Result<String, SlurmError> {
        Ok(format!("/slurm/{}/{rest}", self.api()?))
    }

    /// Sends one request; retries connection failures and 5xx answers when `idempotent`, except
    /// a 5xx that is Slurm's definite refusal ([`definite`]). A 401 or 403 is a clear
    /// authentication error. Returns the status and the body, which the caller reads (other
    /// 4xx and 5xx included: their `errors[]` say why).
    fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<(reqwest::StatusCode, Body), SlurmError> {
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
                        return Ok((status, Body::Stream(response)));
                    }
                    let text = response.text().unwrap_or_default();
                    if definite(status.as_u16(), &text) {
                        return Ok((status, Body::Read(std::io::Cursor::new(text.into_bytes()))));
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
        let (status, value, errors) = self.answer(method, path, body)?;
        if !errors.is_empty() || !status.is_success() {
            return Err(refusal(&command, status, &errors));
        }
        Ok(value)
    }

    /// Sends an idempotent request and returns its status, its JSON and its `errors[]`.
    fn answer(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(reqwest::StatusCode, Value, Vec<RestError>), SlurmError> {
        let command = format!("{method} {path}");
        let (status, answer) = self.send(method, path, body, true)?;
        let value = self.json_answer(&command, status, answer)?;
        let errors = wire::errors_of(&value);
        Ok((status, value, errors))
    }

    /// The JSON of an answer. A 404 that is not JSON is slurmrestd not knowing the path: the
    /// version in use is not one it serves.
    fn json_answer(
        &self,
        command: &str,
        status: reqwest::StatusCode,
        mut body: Body,
    ) -> Result<Value, SlurmError> {
        let mut text = String::new();
        // A body that breaks off leaves the request's effect unknown: a parse error, never a
        // definite refusal (a submit's nonce lookup depends on it).
        std::io::Read::read_to_string(&mut body, &mut text).map_err(|e| {
            parse(
                command,
                format!(
                    "the answer from slurmrestd at {} broke off: {e}",
                    self.target.url
                ),
            )
        })?;
        match serde_json::from_str(&text) {
            Ok(value) => Ok(value),
            Err(_) if status == reqwest::StatusCode::NOT_FOUND => {
                Err(failed(command, self.not_served()))
            }
            Err(e) => Err(parse(
                command,
                format!("HTTP {}: not JSON: {e}", status.as_u16()),
            )),
        }
    }

    /// Why a path got 404: the version in use, and the ones the server offers.
    fn not_served(&self) -> String {
        let api = self.api.get().map_or("?", |a| a.name());
        let offered = self
            .send(Method::GET, "/openapi/v3", None, true)
            .ok()
            .and_then(|(_, body)| serde_json::from_reader::<_, Value>(body).ok())
            .map(|spec| wire::offered_versions(&spec).join(", "))
            .filter(|o| !o.is_empty())
            .unwrap_or_else(|| "versions it did not say".to_owned());
        format!(
            "slurmrestd at {} does not serve API {api} (HTTP 404; it offers {offered}): set \
             cluster.api to `auto` or to one of those",
            self.target.url
        )
    }
}

impl Backend for RestBackend {
    fn list_jobs(&self) -> Result<Vec<JobRecord>, SlurmError> {
        let api = self.api()?;
        let path = self.path("jobs")?;
        let source = format!("{} {} {path}", self.target.url, self.target.user);
        let recalled = self.memo.as_ref().and_then(|m| m.recall(&source));
        let query = wire::listing_query(api, recalled.as_ref().map(|(t, _)| *t));
        let asked = wire::with_query(&path, &query);
        let command = format!("GET {path}");
        let started = now();
        let taken = std::time::Instant::now();
        let (status, body) = self.send(Method::GET, &asked, None, true)?;
        if status == reqwest::StatusCode::NOT_MODIFIED
            && let Some((_, jobs)) = recalled
        {
            tracing::debug!("slurmrestd: no job changed since the last listing (HTTP 304)");
            return Ok(jobs);
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(failed(&command, self.not_served()));
        }
        let reader = std::io::BufReader::with_capacity(64 * 1024, body);
        let mut deserializer = serde_json::Deserializer::from_reader(reader);
        let listing = wire::JobsSeed {
            user: &self.target.user,
        }
        .deserialize(&mut deserializer)
        .map_err(|e| parse(&command, e.to_string()))?;
        if !listing.errors.is_empty() || !status.is_success() {
            return Err(refusal(&command, status, &listing.errors));
        }
        if listing.unchanged {
            return match recalled {
                Some((_, jobs)) => {
                    tracing::debug!("slurmrestd: no job changed since the last listing");
                    Ok(jobs)
                }
                // Never asked for changes only: an answer without jobs is not a listing.
                None => Err(parse(
                    &command,
                    "slurmrestd said no job changed, but no update_time was sent".to_owned(),
                )),
            };
        }
        if let Some(memo) = &self.memo {
            memo.remember(Remembered {
                source,
                update_time: listing.last_update.unwrap_or(started - CLOCK_MARGIN_SECS),
                taken,
                jobs: listing.jobs.clone(),
            });
        }
        Ok(listing.jobs)
    }

    fn submit(&self, job: &JobRequest) -> Result<u64, SlurmError> {
        let api = self.api()?;
        let path = self.path("job/submit")?;
        let command = format!("POST {path}");
        let body = wire::submit_body(job, api, now());
        let (status, answer) = self.send(Method::POST, &path, Some(&body), false)?;
        let value = self.json_answer(&command, status, answer)?;
        let errors = wire::errors_of(&value);
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
            _ => Err(refusal(&command, status, &errors)),
        }
    }

    fn test_submit(&self, _job: &JobRequest) -> Result<Option<StartEstimate>, SlurmError> {
        // No version has a will-run, and v0.0.38's `test_only` submits a real job: nothing is
        // checked, and no start is estimated.
        Ok(None)
    }

    fn cancel(&self, job_ids: &[JobId]) -> Result<(), SlurmError> {
        for id in job_ids {
            let path = self.path(&format!("job/{id}"))?;
            let (status, _, errors) = self.answer(Method::DELETE, &path, None)?;
            let gone =
                !errors.is_empty() && errors.iter().all(|e| e.number == Some(INVALID_JOB_ID));
            // Gone already (Slurm's only error is an invalid job id): as cancelled as it gets.
            if (errors.is_empty() && status.is_success()) || gone {
                continue;
            }
            return Err(refusal(&format!("DELETE {path}"), status, &errors));
        }
        Ok(())
    }

    fn update_comment(&self, job_id: &JobId, comment: &str) -> Result<(), SlurmError> {
        let path = self.path(&format!("job/{job_id}"))?;
        let body = wire::comment_update(comment, self.api()?);
        match self.call(Method::POST, &path, Some(&body)) {
            Ok(_) => Ok(()),
            // slurmrestd 22.05 updates one task of an array and then answers "job array
            // update … failed" (checked live, tests/e2e/rest.rs): for a task, whatever the answer
            // said, the listing tells (a listing that fails too is that failure).
            Err(e) if job_id.task.is_some() && !e.is_transient() => {
                let listed = self.list_jobs()?;
                if listed
                    .iter()
                    .any(|r| r.id == *job_id && *r.comment == *comment)
                {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    fn job_output(
        &self,
        job_id: &JobId,
    ) -> Result<Option<crate::observed::output::JobOutput>, SlurmError> {
        // `job/{array}_{task}` is not found on 22.05; the tasks of an array share these.
        let path = self.path(&format!("job/{}", job_id.array))?;
        let command = format!("GET {path}");
        let (status, body) = self.send(Method::GET, &path, None, true)?;
        let value = self.json_answer(&command, status, body)?;
        Ok(wire::job_output_of(&value))
    }

    fn batch_script(&self, _job_id: &JobId) -> Result<Option<String>, SlurmError> {
        // slurmrestd returns no batch scripts.
        Ok(None)
    }

    fn cluster_facts(&self) -> Result<ClusterFacts, SlurmError> {
        let api = self.api()?;
        let partitions = self.call(Method::GET, &self.path("partitions")?, None)?;
        let nodes = self.call(Method::GET, &self.path("nodes")?, None)?;
        Ok(ClusterFacts {
            partitions: wire::partitions_of(&partitions),
            nodes: wire::nodes_of(&nodes),
            // No config endpoint.
            max_array_size: None,
            default_partition_unknown: !wire::default_partition_known(api),
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
        let api = self.api.get().copied();
        let mut missing = vec![
            "pre-check submissions or estimate their start (no will-run; v0.0.38's test_only \
             would submit a real job)",
            "check MaxArraySize (no config endpoint)",
            "read a replaced job's spec back (no batch scripts)",
        ];
        if api.is_some_and(|api| !wire::default_partition_known(api)) {
            missing.push(
                "check limits for a service without a partition (partitions do not say which \
                 is the default)",
            );
        }
        let last = missing.pop().unwrap_or_default();
        Some(format!(
            "over slurmrestd {} stackctl cannot {} or {last}; Slurm's own refusal comes at \
             submit, and jobs get PATH and their script's variables, not the login environment",
            api.map_or("(version not asked yet)", Api::name),
            missing.join(", ")
        ))
    }

    fn create_dir(&self, _path: &std::path::Path) -> Result<(), String> {
        // Nothing over REST can make a directory; Slurm writes the logs where log_dir says.
        Ok(())
    }
}

/// One line for a failed answer: each error with its number, or the HTTP status. Slurm 22.05
/// answers both a token slurmctld cannot verify and an unreachable slurmctld with an
/// unspecified error (-1); the line says so.
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
    if errors
        .iter()
        .any(|e| e.number == Some(failure::SLURM_ERROR))
    {
        line.push_str(
            " — slurmrestd answers this when slurmctld cannot be reached, or cannot verify the \
             token's signature (a token from another cluster's key, or altered; mint one with \
             `scontrol token`)",
        );
    }
    line
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

/// A request that got no answer, as one line naming the server (never the token);
/// transient ([`RestOutcome::NoAnswer`]).
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
    SlurmError::classified(
        command.to_owned(),
        message,
        failure::classify_rest(RestOutcome::NoAnswer),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_remembered_listing_answers_only_for_its_own_server_user_and_version() {
        let memo = ListingMemo::default();
        assert!(memo.recall("url alice v0.0.38").is_none());
        let job = JobRecord {
            id: JobId {
                array: 5,
                task: None,
            },
            comment: std::sync::Arc::from("stackctl;owner=o"),
            state: "RUNNING".into(),
            reason: "None".into(),
            nodes: "node1".into(),
            times: Default::default(),
        };
        memo.remember(Remembered {
            source: "url alice v0.0.38".into(),
            update_time: 1000,
            taken: std::time::Instant::now(),
            jobs: vec![job.clone()],
        });
        assert_eq!(memo.recall("url alice v0.0.38"), Some((1000, vec![job])));
        assert!(memo.recall("url bob v0.0.38").is_none());
        assert!(memo.recall("other alice v0.0.38").is_none());
    }

    #[test]
    fn only_slurms_own_refusals_are_not_retried() {
        // 22.05 answers a DELETE of a job it no longer knows with HTTP 500 and this.
        let gone = r#"{"errors":[{"description":"unable to kill JobId=9 with signal 9: Invalid job id specified","error_number":2017,"error":"Invalid job id specified","source":"slurm_kill_job"}]}"#;
        assert!(definite(500, gone));
        let unreachable = r#"{"errors":[{"error":"Unable to contact slurm controller (connect failure)","error_number":1800}]}"#;
        assert!(
            !definite(500, unreachable),
            "the controller being away is worth a retry"
        );
        // The number decides, not the words: the same text with a refusal's number is one.
        let worded = r#"{"errors":[{"error":"Unable to contact slurm controller (connect failure)","error_number":2000}]}"#;
        assert!(definite(500, worded));
        assert!(!definite(500, r#"{"errors":[]}"#));
        assert!(!definite(
            500,
            r#"{"errors":[{"error":"Unspecified error","error_number":-1}]}"#
        ));
        assert!(!definite(500, "Internal Server Error"));
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let token = Token("eyJsecret".into());
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
    }
}
