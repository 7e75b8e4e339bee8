//! Desired state: the repo's `stackctl.yaml`, `recipes/` and `stacks/`, lifted from raw YAML
//! into a validated model. This module is the only one that reads the repo's files; everything
//! downstream trusts the model it returns.

mod error;
mod lift;
pub mod raw;
mod yaml;

pub use error::{SpecError, SpecErrors};
pub use lift::{DEFAULT_LOCK_EXPIRY, MIN_LOCK_EXPIRY, load};
pub use yaml::MAX_FILE_BYTES;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// A loaded, validated repo: settings plus every desired service.
#[derive(Debug, Clone)]
pub struct Repo {
    /// Repo-wide settings from `stackctl.yaml`.
    pub settings: Settings,
    /// Every service of every stack, by address.
    pub desired: Desired,
}

/// Repo-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Ownership namespace: only jobs whose marker names this owner are ever touched.
    pub owner: Owner,
    /// The host-less `org/repo` owner that earlier versions of stackctl derived from the same
    /// git remote; set only when `owner` was derived from the remote (never when `owner:` is
    /// written in `stackctl.yaml`) and differs from it. Live jobs under it were submitted for
    /// this repo by an older stackctl and need migrating.
    pub legacy_owner: Option<Owner>,
    /// Directory for job output, as written (may start with `~`).
    pub log_dir: String,
    /// Directory that relative image paths are resolved against, as written.
    pub image_dir: String,
    /// How Slurm is reached.
    pub backend: BackendKind,
    /// How long an apply lock lives without being renewed (`lock.expiry`, default 2 minutes,
    /// at least 10 seconds).
    pub lock_expiry: std::time::Duration,
    /// Partition the lock is taken in (`lock.partition`); none means the cluster default.
    pub lock_partition: Option<String>,
}

/// The ways stackctl can reach Slurm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// `squeue`, `sbatch`, `scancel` and `scontrol` from `PATH`.
    Cli,
}

/// An ownership namespace such as `team-llm` or `github.com/org/repo`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Owner(String);

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
    /// Where each effective setting was written, by setting path (`replicas`,
    /// `resources.gpu`, `slurm.partition`, …); `recipe` (the service's `recipe:` line) is
    /// always present.
    pub origins: BTreeMap<String, Origin>,
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
    /// Ports the service listens on.
    pub ports: Vec<u16>,
    /// Slurm placement.
    pub slurm: SlurmSpec,
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
    /// Time limit in minutes; none means the partition's limit.
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
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
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

/// Returns `path` with a leading `~` replaced by `home`.
pub fn expand_home(path: &str, home: Option<&str>) -> PathBuf {
    match (path.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            PathBuf::from(format!("{home}{rest}"))
        }
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
