//! Desired state: the repo's `stackctl.yaml`, `recipes/` and `stacks/`, lifted from raw YAML
//! into a validated model. This module is the only one that reads the repo's files; everything
//! downstream trusts the model it returns.

mod error;
mod lift;
mod load;
pub mod marker;
pub mod raw;
mod yaml;

pub use error::{SpecError, SpecErrors};
pub use lift::{CASE_INSENSITIVE_HOSTS, DEFAULT_LOCK_EXPIRY, MIN_LOCK_EXPIRY};
pub use load::load;
pub use yaml::MAX_FILE_BYTES;
// Defined below `desired`, where submissions and paths are (the layering: tests/fast/layers.rs).
pub use crate::job::{UNLIMITED_MINUTES, slurm_time_limit};
pub use crate::paths::expand_home;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

/// A loaded, validated repo: settings plus every desired service.
#[derive(Debug, Clone)]
pub struct Repo {
    /// Repo-wide settings from `stackctl.yaml`.
    pub settings: Settings,
    /// Every service of every stack, by address.
    pub desired: Desired,
    /// The values of the secrets some service uses, read on this machine
    /// ([`Repo::resolve_secrets`]); empty until then.
    pub secrets: BTreeMap<String, crate::secret::Value>,
}

/// Repo-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Ownership namespace: only jobs whose marker names this owner are ever touched.
    pub owner: Owner,
    /// The owners that earlier versions of stackctl derived from the same git remote (the
    /// host-less `org/repo` of 0.1, the letter case as written of 0.2), each different from
    /// `owner`; empty when `owner:` is written in `stackctl.yaml`. Live jobs under them were
    /// submitted for this repo by an older stackctl and need migrating.
    pub legacy_owners: Vec<LegacyOwner>,
    /// Directory for job output, as written (may start with `~`).
    pub log_dir: String,
    /// Directory that relative image paths are resolved against, as written.
    pub image_dir: String,
    /// The runtime of a recipe whose `container:` names none (`container_runtime:`, default
    /// Apptainer).
    pub container_runtime: crate::container::Runtime,
    /// How Slurm is reached.
    pub backend: BackendKind,
    /// The login node the Slurm commands run on (`cluster.ssh`); none runs them here.
    pub ssh: Option<SshTarget>,
    /// slurmrestd, for `backend: rest`.
    pub rest: Option<RestTarget>,
    /// Whether the runs of one-shot jobs are also read from accounting (`sacct`, one call per
    /// pass) where the cluster has it (`cluster.accounting: auto`, the default); `off` never
    /// asks, and the runs' own records are all that outlives Slurm's memory.
    pub accounting: bool,
    /// How long an apply lock lives without being renewed (`lock.expiry`, default 2 minutes,
    /// at least 10 seconds).
    pub lock_expiry: std::time::Duration,
    /// Partition the lock is taken in (`lock.partition`); none means the cluster default.
    pub lock_partition: Option<String>,
    /// Named secrets and where each comes from (`secrets:`).
    pub secrets: BTreeMap<String, crate::secret::Source>,
    /// Who secrets in the repo are encrypted to, and how this machine decrypts them (`age:`).
    pub age: crate::secret::AgeSettings,
    /// Where the files that carry secrets to jobs are written, as written (may start with
    /// `~`; default `~/.stackctl/secrets`): on storage the compute nodes see.
    pub secrets_dir: String,
}

/// An owner an earlier version of stackctl derived from this repo's remote, and which rule
/// derived it (for the migration message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyOwner {
    /// The owner the old rule gives.
    pub owner: Owner,
    /// How the old rule differs, e.g. "stackctl before 0.2 derived from this repo's remote
    /// without its host".
    pub rule: &'static str,
}

/// The ways stackctl can reach Slurm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// `squeue`, `sbatch`, `scancel` and `scontrol` from `PATH` (or on a login node over SSH).
    Cli,
    /// slurmrestd's REST API ([`RestTarget`]).
    Rest,
}

/// slurmrestd as `stackctl.yaml` names it (`cluster.backend: rest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestTarget {
    /// Base URL without a trailing `/`, e.g. `http://127.0.0.1:6820`.
    pub url: String,
    /// The Slurm user the requests act as; its jobs are the ones listed.
    pub user: String,
    /// Where the JWT is read from; the token itself is never stored in the settings.
    pub token: TokenSource,
    /// The API version to speak; `None` picks the newest the server offers.
    pub api: Option<String>,
}

/// Where a REST token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// An environment variable (`token_env`, default `SLURM_JWT`).
    Env(String),
    /// A file (`token_file`), `~` expanded.
    File(PathBuf),
}

/// The slurmrestd API versions stackctl speaks, oldest first.
pub const REST_API_VERSIONS: [&str; 5] = ["v0.0.38", "v0.0.39", "v0.0.40", "v0.0.41", "v0.0.42"];

/// A login node reached over SSH (`cluster.ssh` in `stackctl.yaml`), validated: the host and
/// user cannot be taken for options, and every path is expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// Host name or address.
    pub host: String,
    /// Remote user, when set.
    pub user: Option<String>,
    /// Port, when set.
    pub port: Option<u16>,
    /// Private key file, when set.
    pub identity_file: Option<PathBuf>,
    /// Known-hosts file, when set.
    pub known_hosts_file: Option<PathBuf>,
    /// Variables exported before each remote command.
    pub env: BTreeMap<String, String>,
}

/// An ownership namespace such as `team-llm` or `github.com/org/repo`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Owner(#[serde(deserialize_with = "owner_name")] String);

/// Reads an owner's name, checked as [`Owner::parse`] checks it.
fn owner_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    Owner::parse(&text)
        .map(|o| o.0)
        .map_err(serde::de::Error::custom)
}

impl Owner {
    /// Returns the owner if `text` is a valid owner name (letters, digits, `.`, `_`, `-`, `/`).
    pub fn parse(text: &str) -> Result<Owner, String> {
        let ok = !text.is_empty()
            && text.len() <= 128
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
        if ok {
            Ok(Owner(text.to_owned()))
        } else {
            Err(format!(
                "owner {text:?} must be 1 to 128 characters of letters, digits, '.', '_', '-' or '/'"
            ))
        }
    }

    /// Returns the owner's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The desired services of every stack, keyed by address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Services in address order.
    pub services: BTreeMap<ServiceAddr, Service>,
}

/// A service's address: `<stack>.<service>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceAddr {
    /// Stack name (the file name under `stacks/`).
    pub stack: String,
    /// Service name within the stack.
    pub service: String,
}

impl ServiceAddr {
    /// Returns the address of `service` in `stack`.
    pub fn new(stack: impl Into<String>, service: impl Into<String>) -> Self {
        ServiceAddr {
            stack: stack.into(),
            service: service.into(),
        }
    }
}

impl ServiceAddr {
    /// The address as written in references (`depends_on`, `endpoint_env`): `stack/service`.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.stack, self.service)
    }
}

/// Serialized as its display form, `stack.service`.
impl Serialize for ServiceAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Read from `stack.service` (names hold no `.`).
impl<'de> Deserialize<'de> for ServiceAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.split_once('.') {
            Some((stack, service)) if !stack.is_empty() && !service.is_empty() => {
                Ok(ServiceAddr::new(stack, service))
            }
            _ => Err(serde::de::Error::custom(format!(
                "service address {text:?} is not `stack.service`"
            ))),
        }
    }
}

impl fmt::Display for ServiceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.stack, self.service)
    }
}

/// One desired service: a recipe with overrides applied, times a replica count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The recipe it came from, e.g. `inference/vllm`.
    pub recipe: String,
    /// How many replicas should run.
    pub replicas: u32,
    /// What every replica runs.
    pub spec: ReplicaSpec,
    /// Hash of `spec`, written into each job's marker.
    pub hash: SpecHash,
    /// How a replica whose job failed is recreated. Not part of the spec (nor its hash):
    /// changing the policy never restarts a running replica.
    pub restart: RestartPolicy,
    /// `protect: true`: no plan may reduce or remove its replicas ([`crate::plan::protection`]).
    /// Recorded in the jobs' markers (`protect=1`), not in the spec: changing it never
    /// replaces a replica, it rewrites the markers in place.
    pub protect: bool,
    /// How a replica is replaced on a spec change or before its time limit (`update:` and
    /// `renew_before:`). Not part of the spec (nor its hash): changing it never replaces a job.
    pub update: UpdatePolicy,
    /// Where each effective setting was written, by setting path (`replicas`,
    /// `resources.gpu`, `slurm.partition`, …); `recipe` (the service's `recipe:` line) is
    /// always present.
    pub origins: BTreeMap<String, Origin>,
    /// The services this one waits for (`depends_on:`), in the order written. Not part of the
    /// spec (nor its hash): the order in which replicas are started does not change what a
    /// replica runs, so editing it never restarts a running replica.
    pub depends_on: Vec<Dependency>,
    /// Whether a replica given another service's address (`endpoint_env`) is replaced once
    /// that service no longer serves the address (`on_endpoint_move: replace`, the default),
    /// or keeps running with it (`keep`). Not part of the spec (nor its hash).
    pub replace_on_endpoint_move: bool,
    /// `kind: job`: a one-shot job that runs once per spec ([`JobSpec`]); none for a service.
    pub job: Option<JobSpec>,
}

/// What makes a stack entry a one-shot job (`kind: job`): it runs once per spec, is retried
/// `retries` times on failure and, with a `target`, waits for that service to be ready.
///
/// A job's [`Service::hash`] covers its spec, its target's address and the target's spec
/// hash ([`JobSpec::hash`]): a new version of the target runs the job again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobSpec {
    /// The service it is aimed at (`target:`).
    pub target: Option<ServiceAddr>,
    /// The target's spec hash, filled in once every stack is loaded.
    pub target_hash: Option<SpecHash>,
    /// How many times a failed run is run again (`retries:`, default 0). Not in the hash.
    pub retries: u32,
}

impl JobSpec {
    /// The hash of a job running `spec`: the spec's canonical JSON, then the target and its
    /// spec hash (16 hex digits of SHA-256, as [`ReplicaSpec::hash`]).
    pub fn hash(&self, spec: &ReplicaSpec) -> SpecHash {
        let mut text = format!("job\n{}\n", spec.to_canonical_json());
        if let Some(target) = &self.target {
            text.push_str(&format!(
                "target={};spec={}",
                target.reference(),
                self.target_hash.as_ref().map_or("", |h| h.0.as_str())
            ));
        }
        let digest = Sha256::digest(text.as_bytes());
        SpecHash(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
    }
}

/// One `depends_on:` entry: a service whose replicas must be started or ready before this
/// service's replicas are submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The service depended on.
    pub service: ServiceAddr,
    /// What it must be before a dependent replica is submitted.
    pub condition: Condition,
}

/// When a dependency counts as satisfied (`condition:` of a `depends_on:` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Its jobs were submitted: the dependent is submitted with them, and Slurm starts it only
    /// after they start (`--dependency=after:<job ids>`).
    Started,
    /// One of its replicas is ready (running and, with a health check, healthy). The default.
    Ready,
}

impl Condition {
    /// Parses `started` or `ready`.
    pub fn parse(text: &str) -> Result<Condition, String> {
        match text {
            "started" => Ok(Condition::Started),
            "ready" => Ok(Condition::Ready),
            other => Err(format!("condition {other:?} must be `started` or `ready`")),
        }
    }

    /// The word written in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Ready => "ready",
        }
    }
}

impl Desired {
    /// Returns every service in dependency order: each after the services it depends on,
    /// otherwise in address order. When the dependencies form a cycle, returns one cycle
    /// instead, its first service repeated at the end (`a/web -> a/db -> a/web`).
    /// Dependencies on services not in `self` are ignored.
    pub fn dependency_order(&self) -> Result<Vec<&ServiceAddr>, Vec<&ServiceAddr>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Visiting,
            Done,
        }
        fn visit<'a>(
            desired: &'a Desired,
            addr: &'a ServiceAddr,
            marks: &mut BTreeMap<&'a ServiceAddr, Mark>,
            path: &mut Vec<&'a ServiceAddr>,
            order: &mut Vec<&'a ServiceAddr>,
        ) -> Result<(), Vec<&'a ServiceAddr>> {
            match marks.get(addr) {
                Some(Mark::Done) => return Ok(()),
                Some(Mark::Visiting) => {
                    let start = path.iter().position(|a| *a == addr).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(addr);
                    return Err(cycle);
                }
                None => {}
            }
            marks.insert(addr, Mark::Visiting);
            path.push(addr);
            if let Some(service) = desired.services.get(addr) {
                for dependency in &service.depends_on {
                    if let Some((key, _)) = desired.services.get_key_value(&dependency.service) {
                        visit(desired, key, marks, path, order)?;
                    }
                }
            }
            path.pop();
            marks.insert(addr, Mark::Done);
            order.push(addr);
            Ok(())
        }
        let mut marks = BTreeMap::new();
        let mut order = Vec::new();
        for addr in self.services.keys() {
            visit(self, addr, &mut marks, &mut Vec::new(), &mut order)?;
        }
        Ok(order)
    }
}

impl Desired {
    /// Returns a warning for every environment value that refers to a variable (`$NAME` or
    /// `${NAME}`): values are passed literally, never expanded, so the job would see the text
    /// `$NAME` and not its value (`PATH: /opt/venv/bin:$PATH` would break every command).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (addr, service) in &self.services {
            for key in service.spec.environment.keys() {
                if looks_secret(key) {
                    warnings.push(format!(
                        "{addr}: environment.{key} looks like a secret but is a plain value: \
                         it is in git, in every plan and in the batch script Slurm keeps; make \
                         it a secret (`{key}: {{secret: NAME}}` with NAME under `secrets:` in \
                         stackctl.yaml)"
                    ));
                }
            }
            for (key, value) in &service.spec.environment {
                if looks_secret(key) {
                    continue; // its value is never printed, not even in a warning
                }
                let names = variable_references(value);
                if names.is_empty() {
                    continue;
                }
                let list: Vec<String> = names.iter().map(|n| format!("${n}")).collect();
                warnings.push(format!(
                    "{addr}: environment.{key} = {value:?} refers to {}, but environment values \
                     are passed literally, never expanded: the job gets the text {}, not its \
                     value; write the value out in full, or build it in `command` (e.g. \
                     `export {key}=...; exec ...`)",
                    list.join(", "),
                    list[0]
                ));
            }
        }
        warnings
    }
}

/// Whether a variable's name says it holds a secret: it contains `PASSWORD`, `PASSWD`,
/// `TOKEN` or `SECRET`, or ends in `_KEY` (any case).
pub fn looks_secret(key: &str) -> bool {
    let key = key.to_ascii_uppercase();
    ["PASSWORD", "PASSWD", "TOKEN", "SECRET"]
        .iter()
        .any(|word| key.contains(word))
        || key.ends_with("_KEY")
}

impl Desired {
    /// Fills in the fingerprint of every secret a spec uses, from `fingerprints` (by secret
    /// name), and hashes the specs again: a new value makes a new spec hash, for a job aimed
    /// at a service that uses it too.
    pub fn seal_secrets(&mut self, fingerprints: &BTreeMap<String, String>) {
        for service in self.services.values_mut() {
            for reference in service.spec.secret_env.values_mut() {
                if let Some(fingerprint) = fingerprints.get(&reference.secret) {
                    reference.fingerprint.clone_from(fingerprint);
                }
            }
            if service.job.is_none() {
                service.hash = service.spec.hash();
            }
        }
        let hashes: BTreeMap<ServiceAddr, SpecHash> = self
            .services
            .iter()
            .map(|(addr, s)| (addr.clone(), s.hash.clone()))
            .collect();
        for service in self.services.values_mut() {
            if let Some(job) = service.job.as_mut() {
                if let Some(target) = &job.target {
                    job.target_hash = hashes.get(target).cloned();
                }
                service.hash = job.hash(&service.spec);
            }
        }
    }

    /// The names of the secrets some service uses.
    pub fn secrets_used(&self) -> BTreeSet<String> {
        self.services
            .values()
            .flat_map(|s| s.spec.secret_env.values().map(|r| r.secret.clone()))
            .collect()
    }
}

/// Returns the variable names a value refers to as `$NAME` or `${NAME}` (a shell would expand
/// them), each once, in order.
pub fn variable_references(value: &str) -> Vec<String> {
    let is_start = |c: char| c.is_ascii_alphabetic() || c == '_';
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names: Vec<String> = Vec::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let (name, braced) = match rest.strip_prefix('{') {
            Some(inner) => (inner, true),
            None => (rest, false),
        };
        if !name.starts_with(is_start) {
            continue;
        }
        let end = name.find(|c: char| !is_name(c)).unwrap_or(name.len());
        if braced && !name[end..].starts_with(['}', ':', '-', '=', '+', '?', '#', '%', '/']) {
            continue;
        }
        let found = &name[..end];
        if !names.iter().any(|n| n == found) {
            names.push(found.to_owned());
        }
    }
    names
}

impl Service {
    /// Returns where `setting` was written, or the service's `recipe:` line when the setting
    /// was not written anywhere (a default).
    pub fn origin(&self, setting: &str) -> &Origin {
        self.origins
            .get(setting)
            .or_else(|| self.origins.get("recipe"))
            .expect("every service records the origin of its recipe line")
    }
}

/// Crash-loop backoff: `restart: {backoff: 10s, max_backoff: 10m, max_attempts: none}`.
///
/// The n-th restart in a row of a replica whose job failed waits
/// `min(backoff × 2^(n-1), max_backoff)`, ± up to 10% (see [`crate::plan::backoff`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RestartPolicy {
    /// The first delay, in seconds (default 10).
    pub backoff: u64,
    /// The longest delay, in seconds (default 600); also how long a replica must have run
    /// before its failure counts as a fresh start (restart 1 again).
    pub max_backoff: u64,
    /// How many restarts in a row before giving up; none means never (the default).
    pub max_attempts: Option<u32>,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            backoff: 10,
            max_backoff: 600,
            max_attempts: None,
        }
    }
}

/// How the replicas of a service are replaced: `update: {strategy: rolling, max_surge: 1,
/// max_unavailable: 0, min_healthy_time: 10s, timeout: 15m, queue_timeout: 15m, auto_revert:
/// false}` and `renew_before: 30m`.
///
/// The defaults depend on the service ([`UpdatePolicy::defaults_for`]): rolling when it has
/// more than one replica or a health check, and renewal 10% of `time_limit` before the end when a
/// time limit is set. [`Default`] is the policy of a single replica without health check or
/// time limit: recreate, no renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UpdatePolicy {
    /// Create before destroy (rolling) or destroy before create (recreate).
    pub strategy: Strategy,
    /// How many successors may exist at once, beyond `replicas` (rolling only).
    pub max_surge: u32,
    /// How many of `replicas` may be not ready during a rollout (rolling only).
    pub max_unavailable: u32,
    /// How long, in seconds, a successor must have been ready before its predecessor goes.
    pub min_healthy_time: u64,
    /// How long, in seconds, a successor may take from RUNNING to ready.
    pub timeout: u64,
    /// How long, in seconds, a successor may stay PENDING after its submission.
    pub queue_timeout: u64,
    /// Whether a stopped rollout swaps back the replicas it already replaced.
    pub auto_revert: bool,
    /// Seconds before a running replica's end time at which its successor is submitted (the
    /// walltime renewal); none means off.
    pub renew_before: Option<u64>,
}

/// [`UpdatePolicy::strategy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Submit a successor, wait until it has been ready for `min_healthy_time`, then cancel
    /// its predecessor.
    Rolling,
    /// Cancel the old replica, then submit the new one.
    Recreate,
}

impl Strategy {
    /// The word written in files and plans: `rolling` or `recreate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Rolling => "rolling",
            Strategy::Recreate => "recreate",
        }
    }
}

impl UpdatePolicy {
    /// The policy of a service none of whose `update:` fields are written: rolling for more
    /// than one replica or a health check, renewal 10% of `time_limit` (minutes) when set.
    pub fn defaults_for(replicas: u32, has_health: bool, time_limit: Option<u32>) -> Self {
        UpdatePolicy {
            strategy: if replicas > 1 || has_health {
                Strategy::Rolling
            } else {
                Strategy::Recreate
            },
            renew_before: time_limit
                .filter(|minutes| *minutes != UNLIMITED_MINUTES)
                .map(|minutes| u64::from(minutes) * 6),
            ..UpdatePolicy::default()
        }
    }
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            strategy: Strategy::Recreate,
            max_surge: 1,
            max_unavailable: 0,
            min_healthy_time: 10,
            timeout: 900,
            queue_timeout: 900,
            auto_revert: false,
            renew_before: None,
        }
    }
}

/// Where a setting was written, so that problems found after loading (against the cluster's
/// limits, say) still name the file, line and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file, relative to the repo root.
    pub file: PathBuf,
    /// 1-based line and column.
    pub position: Option<(u64, u64)>,
    /// Dotted field path within the file, e.g. `services.llm.resources.gpu`.
    pub field: String,
}

impl Origin {
    /// Returns an error about this setting.
    pub fn error(&self, message: impl Into<String>) -> SpecError {
        SpecError {
            file: self.file.clone(),
            position: self.position,
            field: Some(self.field.clone()),
            message: message.into(),
        }
    }
}

/// Parses a memory amount in Slurm's notation into MiB: digits with an optional `K`, `M`, `G`
/// or `T` suffix (either case); no suffix means MiB, and `K` rounds up to whole MiB. Returns
/// `None` for anything else or on overflow.
pub fn memory_mib(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text, 'M'),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    match unit {
        'K' => Some(n.div_ceil(1024)),
        'M' => Some(n),
        'G' => n.checked_mul(1024),
        'T' => n.checked_mul(1024 * 1024),
        _ => None,
    }
}

/// The longest finite time limit a file may ask for, in minutes (about 190 years).
pub const MAX_TIME_LIMIT_MINUTES: u32 = 100_000_000;

/// Parses a time limit as Slurm's `--time` takes it, or with a unit, into whole minutes
/// (seconds round up, as Slurm does): `90` (minutes), `30:00` (minutes:seconds),
/// `1:30:00` (hours:minutes:seconds), `2-12` (days-hours), `2-12:30`, `1-00:00:00`, `90m`,
/// `2h`, `1h30m`, `1d`, `45s`; `UNLIMITED` or `infinite` (any case) is [`UNLIMITED_MINUTES`].
/// At least 1 minute (Slurm reads 0 as no limit: write `UNLIMITED` for that) and at most
/// [`MAX_TIME_LIMIT_MINUTES`].
pub fn parse_time_limit(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "{text:?} is not a time limit: minutes (`90`), Slurm's `MM:SS`, `HH:MM:SS`, \
             `D-HH`, `D-HH:MM`, `D-HH:MM:SS`, a duration with a unit (`90m`, `2h`, `1d`) or \
             `UNLIMITED`"
        )
    };
    if text.eq_ignore_ascii_case("unlimited") || text.eq_ignore_ascii_case("infinite") {
        return Ok(UNLIMITED_MINUTES);
    }
    let digits = |part: &str| -> Result<u64, String> {
        if part.is_empty() || part.len() > 12 || !part.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let seconds: u64 = if text.ends_with(['s', 'm', 'h', 'd']) {
        parse_duration(text).map_err(|_| bad())?.as_secs()
    } else {
        let (days, clock) = match text.split_once('-') {
            Some((days, clock)) => (Some(digits(days)?), clock),
            None => (None, text),
        };
        let parts = clock
            .split(':')
            .map(digits)
            .collect::<Result<Vec<u64>, _>>()?;
        let hms = |h: u64, m: u64, s: u64| h * 3600 + m * 60 + s;
        match (days, parts.as_slice()) {
            (None, [m]) => m.checked_mul(60).ok_or_else(bad)?,
            (None, [m, s]) => hms(0, *m, *s),
            (None, [h, m, s]) => hms(*h, *m, *s),
            (Some(d), [h]) => hms(d * 24 + h, 0, 0),
            (Some(d), [h, m]) => hms(d * 24 + h, *m, 0),
            (Some(d), [h, m, s]) => hms(d * 24 + h, *m, *s),
            _ => return Err(bad()),
        }
    };
    let minutes = seconds.div_ceil(60);
    if minutes == 0 {
        return Err(format!(
            "{text:?} is no time at all; write `UNLIMITED` for no time limit (where the \
             partition allows it)"
        ));
    }
    if minutes > u64::from(MAX_TIME_LIMIT_MINUTES) {
        return Err(format!(
            "{text:?} is longer than the longest time limit, {MAX_TIME_LIMIT_MINUTES} minutes"
        ));
    }
    Ok(u32::try_from(minutes).expect("at most MAX_TIME_LIMIT_MINUTES"))
}

/// Parses a duration such as `90s`, `2m`, `1h30m` or `0s` (a bare number means seconds).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a duration such as 30s, 2m or 1h");
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(seconds));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

/// Everything that defines one replica, after merging stack overrides over the recipe.
///
/// Its hash identifies a replica's configuration, so it holds nothing that differs between
/// machines running stackctl (no expanded paths, host names or stackctl version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSpec {
    /// Container image to run in, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub image: Option<String>,
    /// Command to run (in the container, if there is one).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub command: Option<String>,
    /// Resources per replica.
    pub resources: ResourceSpec,
    /// Environment variables.
    pub environment: BTreeMap<String, String>,
    /// Ports the service listens on, in declared order (`PORT_0`, `PORT_1`, … in the job).
    pub ports: Vec<PortSpec>,
    /// Slurm placement.
    pub slurm: SlurmSpec,
    /// How the job checks that the service is ready; none means ready when running. Left out
    /// of the canonical JSON when absent, so specs without it keep their hash.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub health: Option<HealthSpec>,
    /// Environment variables whose values are other services' endpoints, resolved when a
    /// replica is submitted. The reference is part of the spec (and its hash), the resolved
    /// address is not. Left out of the canonical JSON when empty.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub endpoint_env: BTreeMap<String, EndpointRef>,
    /// Environment variables whose values are secrets (`{secret: NAME}`), delivered to the
    /// job in a file only its user can read, never in the script. The spec (and its hash)
    /// holds each secret's name and [`crate::secret::fingerprint`], never its value. Left out
    /// of the canonical JSON when empty.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub secret_env: BTreeMap<String, SecretRef>,
    /// The container's runtime, definition (with its content hash) and binds; none for an
    /// Apptainer image with neither (left out of the canonical JSON, so such specs keep their
    /// hash).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub container: Option<crate::container::ContainerSpec>,
    /// Shell lines the job runs before the runtime (`module load …`). Left out when empty.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub setup: Vec<String>,
}

/// A variable whose value is a secret: which one, and the fingerprint of its current value
/// (so a new value makes a new spec hash, and the plan can say the value changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    /// The secret's name in `stackctl.yaml`'s `secrets:`.
    pub secret: String,
    /// [`crate::secret::fingerprint`] of the value; empty until the secrets are resolved.
    pub fingerprint: String,
}

/// A reference to another service's endpoint (`endpoint_env:` in a stack).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRef {
    /// The service, `stack/service`.
    pub service: String,
    /// The value, with `{host}` and `{port}` replaced.
    pub format: String,
    /// The port's name; none means the one named `http`, else the first.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub port: Option<String>,
}

impl EndpointRef {
    /// The default value format.
    pub const DEFAULT_FORMAT: &'static str = "{host}:{port}";

    /// The referenced service's address.
    pub fn address(&self) -> ServiceAddr {
        let (stack, service) = self.service.split_once('/').unwrap_or(("", &self.service));
        ServiceAddr::new(stack, service)
    }

    /// The value for one endpoint.
    pub fn value(&self, host: &str, port: u16) -> String {
        self.format
            .replace("{host}", host)
            .replace("{port}", &port.to_string())
    }

    /// Checks a format: only `{host}` and `{port}` may appear in braces.
    pub fn check_format(format: &str) -> Result<(), String> {
        let stripped = format.replace("{host}", "").replace("{port}", "");
        if stripped.contains('{') || stripped.contains('}') {
            return Err(format!(
                "format {format:?} may only use the placeholders {{host}} and {{port}}"
            ));
        }
        Ok(())
    }
}

/// One declared port: a fixed number or `auto` (picked free on the node when the job starts),
/// optionally named.
///
/// Serialized as written before names existed: an unnamed fixed port is a plain number, an
/// unnamed `auto` port the string `"auto"`, a named one `{"name": .., "port": ..}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// The name (`[a-z][a-z0-9_]*`), exported as `PORT_<NAME>` in the job.
    pub name: Option<String>,
    /// The port number, or `auto`.
    pub port: PortValue,
}

impl PortSpec {
    /// Returns an unnamed fixed port.
    pub fn fixed(port: u16) -> PortSpec {
        PortSpec {
            name: None,
            port: PortValue::Fixed(port),
        }
    }

    /// Returns the fixed port number, or `None` for an `auto` port.
    pub fn number(&self) -> Option<u16> {
        match self.port {
            PortValue::Fixed(port) => Some(port),
            PortValue::Auto => None,
        }
    }
}

/// A port number, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortValue {
    /// This port, always.
    Fixed(u16),
    /// A free port picked on the node when the job starts.
    Auto,
}

impl Serialize for PortValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PortValue::Fixed(port) => s.serialize_u16(*port),
            PortValue::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for PortValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u16),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(port) => Ok(PortValue::Fixed(port)),
            Raw::Word(word) if word == "auto" => Ok(PortValue::Auto),
            Raw::Word(word) => Err(serde::de::Error::custom(format!(
                "port {word:?} is neither a number nor \"auto\""
            ))),
        }
    }
}

impl Serialize for PortSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        match &self.name {
            None => self.port.serialize(s),
            Some(name) => {
                let mut map = s.serialize_struct("PortSpec", 2)?;
                map.serialize_field("name", name)?;
                map.serialize_field("port", &self.port)?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Named {
            name: String,
            port: PortValue,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Named(Named),
            Plain(PortValue),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Named(named) => PortSpec {
                name: Some(named.name),
                port: named.port,
            },
            Raw::Plain(port) => PortSpec { name: None, port },
        })
    }
}

/// A health check: what the job probes, how often, and what it does when the service stays
/// unhealthy. Durations are whole seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// What is probed.
    pub probe: Probe,
    /// Seconds between probes (at least 1).
    pub interval: u64,
    /// Seconds one probe may take (at least 1).
    pub timeout: u64,
    /// Seconds after start during which failures do not count.
    pub start_period: u64,
    /// Consecutive counted failures that make the service unhealthy (at least 1).
    pub failure_threshold: u32,
    /// What the job does once unhealthy.
    pub on_failure: OnFailure,
}

/// What a health check probes. Ports are positions in [`ReplicaSpec::ports`], resolved from
/// the name, port number or default (the first port) written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// An HTTP GET of `http://127.0.0.1:<port><path>` must answer 2xx or 3xx.
    Http {
        /// Position of the port in the spec's ports.
        port: usize,
        /// The path, starting with `/`.
        path: String,
    },
    /// A TCP connection to `127.0.0.1:<port>` must succeed.
    Tcp {
        /// Position of the port in the spec's ports.
        port: usize,
    },
    /// A command (run with `bash -c` on the node) must exit 0.
    Command(String),
}

/// What a job does once its service is unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stop the service and end the job with [`UNHEALTHY_EXIT_CODE`]; the next apply (or
    /// watch) submits a new replica.
    Restart,
    /// Keep the service running and reporting `unhealthy`.
    Ignore,
}

/// The exit code of a job that ended itself because its service was unhealthy.
pub const UNHEALTHY_EXIT_CODE: i32 = 97;

impl ReplicaSpec {
    /// How to make fixed port `number` of this spec an `auto` port, in the syntax of `ports:`
    /// and with the variable the command then reads: `` `{name: http, port: auto}` in `ports:`,
    /// read as $PORT_HTTP `` for a named port, `` `auto` in place of 8000 in `ports:` (e.g.
    /// `ports: [auto]`), read as $PORT_0 (or $PORT) `` for an unnamed one.
    pub fn auto_port_hint(&self, number: u16) -> String {
        let Some((i, port)) = self
            .ports
            .iter()
            .enumerate()
            .find(|(_, p)| p.number() == Some(number))
        else {
            return "declare it `auto` in `ports:`".to_owned();
        };
        let first = if i == 0 { " (or $PORT)" } else { "" };
        match &port.name {
            Some(name) => format!(
                "write `{{name: {name}, port: auto}}` in `ports:` and read the port from \
                 $PORT_{}{first}",
                name.to_ascii_uppercase()
            ),
            None => format!(
                "write `auto` in place of {number} in `ports:` (e.g. `ports: [auto]`) and read \
                 the port from $PORT_{i}{first}"
            ),
        }
    }

    /// Returns whether any port is picked when the job starts.
    pub fn has_auto_ports(&self) -> bool {
        self.ports.iter().any(|p| p.port == PortValue::Auto)
    }
}

/// Resources of one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceSpec {
    /// Nodes.
    pub nodes: u32,
    /// CPUs per task.
    pub cpu: u32,
    /// Memory per node, in Slurm's notation (`32G`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub memory: Option<String>,
    /// Memory per CPU, in Slurm's notation.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub memory_per_cpu: Option<String>,
    /// GPUs per node.
    pub gpu: u32,
    /// GPU type; only set when `gpu` is at least 1.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub gpu_type: Option<String>,
    /// Time limit in minutes ([`UNLIMITED_MINUTES`]: none at all); none means the partition's
    /// default.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub time_limit: Option<u32>,
    /// CPU binding for tasks.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cpu_bind: Option<String>,
}

/// Slurm placement of one replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmSpec {
    /// Partition; none means the cluster default.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub partition: Option<String>,
    /// Quality of service.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub qos: Option<String>,
    /// Account.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub account: Option<String>,
}

/// A short, stable hash of a [`ReplicaSpec`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SpecHash(pub String);

impl ReplicaSpec {
    /// Returns the spec as canonical one-line JSON (sorted maps, no whitespace).
    pub fn to_canonical_json(&self) -> String {
        serde_json::to_string(self).expect("a ReplicaSpec always serializes")
    }

    /// Returns the hash of the canonical JSON: 16 hex digits of SHA-256.
    pub fn hash(&self) -> SpecHash {
        let digest = Sha256::digest(self.to_canonical_json().as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        SpecHash(hex)
    }
}

impl fmt::Display for SpecHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the repo's files live, relative to its root.
pub mod layout {
    /// Optional settings file.
    pub const CONFIG_FILE: &str = "stackctl.yaml";
    /// Recipe directory.
    pub const RECIPES_DIR: &str = "recipes";
    /// Stack directory.
    pub const STACKS_DIR: &str = "stacks";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_references_are_found_in_both_forms() {
        for (value, names) in [
            ("/opt/venv/bin:$PATH", &["PATH"][..]),
            ("${HOME}/cache:${HOME}/x", &["HOME"]),
            ("$A-$b_2 ${C:-d}", &["A", "b_2", "C"]),
            ("price: 5$", &[]),
            ("$1 $$ $ {X} ${", &[]),
            ("plain", &[]),
        ] {
            assert_eq!(variable_references(value), names, "{value:?}");
        }
    }

    #[test]
    fn time_limits_in_slurm_formats_and_units() {
        for (text, minutes) in [
            ("45", 45),
            ("30:00", 30),
            ("30:01", 31),
            ("2:15:00", 135),
            ("3-6", 3 * 1440 + 360),
            ("1-00:00:00", 1440),
            ("0-00:05", 5),
            ("1-02:03:04", 1440 + 120 + 4),
            ("75m", 75),
            ("3h", 180),
            ("1h15m", 75),
            ("2d", 2880),
            ("10s", 1),
            ("Unlimited", UNLIMITED_MINUTES),
            ("INFINITE", UNLIMITED_MINUTES),
        ] {
            assert_eq!(parse_time_limit(text), Ok(minutes), "{text:?}");
        }
        for text in [
            "",
            "0",
            "00:00",
            "0m",
            "-5",
            "1.5",
            "1:2:3:4",
            "1-",
            "-1",
            "2x",
            "1-2-3",
            "forever",
            "1 h",
            "999999999999999",
        ] {
            assert!(parse_time_limit(text).is_err(), "{text:?}");
        }
        assert!(parse_time_limit("0").unwrap_err().contains("UNLIMITED"));
        assert_eq!(slurm_time_limit(90), "90");
        assert_eq!(slurm_time_limit(UNLIMITED_MINUTES), "UNLIMITED");
        assert_eq!(
            UpdatePolicy::defaults_for(1, false, Some(UNLIMITED_MINUTES)).renew_before,
            None,
            "an unlimited replica is never renewed"
        );
    }

    #[test]
    fn memory_amounts_in_slurm_notation() {
        for (text, mib) in [
            ("100", Some(100)),
            ("512M", Some(512)),
            ("512m", Some(512)),
            ("32G", Some(32 * 1024)),
            ("1T", Some(1024 * 1024)),
            ("1024K", Some(1)),
            ("1025K", Some(2)),
            ("", None),
            ("G", None),
            ("1.5G", None),
            ("12X", None),
            ("-1", None),
            ("99999999999999999999T", None),
            ("18446744073709551615T", None),
        ] {
            assert_eq!(memory_mib(text), mib, "{text:?}");
        }
    }
}

#[cfg(test)]
mod hash_pins {
    use super::*;

    /// A spec written before health checks and named or `auto` ports existed: its canonical
    /// JSON and hash must never change, or every running replica would be replaced.
    #[test]
    fn the_hash_of_a_spec_without_health_or_port_names_is_pinned() {
        let spec = ReplicaSpec {
            container: None,
            setup: Vec::new(),
            image: Some("vllm.sif".into()),
            command: Some("vllm serve --port 8000".into()),
            resources: ResourceSpec {
                nodes: 1,
                cpu: 8,
                memory: Some("64G".into()),
                memory_per_cpu: None,
                gpu: 1,
                gpu_type: Some("a100".into()),
                time_limit: Some(1440),
                cpu_bind: None,
            },
            environment: [("HF_HOME".to_owned(), "/scratch/hf".to_owned())].into(),
            ports: vec![PortSpec::fixed(8000), PortSpec::fixed(8001)],
            slurm: SlurmSpec {
                partition: Some("gpu".into()),
                qos: None,
                account: None,
            },
            health: None,
            endpoint_env: Default::default(),
            secret_env: Default::default(),
        };
        assert_eq!(
            spec.to_canonical_json(),
            r#"{"image":"vllm.sif","command":"vllm serve --port 8000","resources":{"nodes":1,"cpu":8,"memory":"64G","gpu":1,"gpu_type":"a100","time_limit":1440},"environment":{"HF_HOME":"/scratch/hf"},"ports":[8000,8001],"slurm":{"partition":"gpu"}}"#
        );
        // The value before named and `auto` ports and health checks were added.
        assert_eq!(spec.hash().0, "f0e32cb257e0e67c");
    }

    #[test]
    fn ports_serialize_as_numbers_auto_or_name_and_port_and_read_back() {
        let ports = vec![
            PortSpec::fixed(8000),
            PortSpec {
                name: None,
                port: PortValue::Auto,
            },
            PortSpec {
                name: Some("http".into()),
                port: PortValue::Auto,
            },
            PortSpec {
                name: Some("metrics".into()),
                port: PortValue::Fixed(9100),
            },
        ];
        let json = serde_json::to_string(&ports).unwrap();
        assert_eq!(
            json,
            r#"[8000,"auto",{"name":"http","port":"auto"},{"name":"metrics","port":9100}]"#
        );
        let back: Vec<PortSpec> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ports);
        assert!(serde_json::from_str::<Vec<PortSpec>>(r#"["sometimes"]"#).is_err());
    }
}
