//! A job to submit, as data: its Slurm options ([`JobOptions`]) and the script body that runs.
//! Pure. Each backend renders it its own way: the CLI as `#SBATCH` lines in front of the body
//! ([`JobRequest::batch_script`], which `stackctl render` prints too), slurmrestd as JSON.

use std::fmt;
use std::fmt::Write;

/// A job submission: options plus the body of the batch script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    /// What Slurm is asked for.
    pub options: JobOptions,
    /// The script after the options: plain shell, no `#!` line and no `#SBATCH` lines.
    pub body: String,
}

/// The Slurm options of a submission, each as `sbatch` names it. `None` (or `false`) leaves an
/// option to Slurm's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOptions {
    /// `--job-name`.
    pub name: String,
    /// `--comment`: the stackctl marker.
    pub comment: String,
    /// `--array`: the task indexes, in Slurm array syntax (`0-2,5`).
    pub array: Option<String>,
    /// `--begin`: the earliest start, in sbatch syntax (`now+30`).
    pub begin: Option<String>,
    /// `--dependency`, in sbatch syntax (`after:123`).
    pub dependency: Option<String>,
    /// `--hold`: submitted held, never started until released.
    pub hold: bool,
    /// `--nodes`.
    pub nodes: Option<u32>,
    /// `--ntasks`.
    pub ntasks: Option<u32>,
    /// `--ntasks-per-node`.
    pub ntasks_per_node: Option<u32>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--mem`, in Slurm's notation (`512M`).
    pub memory: Option<String>,
    /// `--mem-per-cpu`, in Slurm's notation.
    pub memory_per_cpu: Option<String>,
    /// `--gres` (`gpu:a100:2`).
    pub gres: Option<String>,
    /// `--time`, in minutes.
    pub time_limit: Option<u32>,
    /// `--partition`.
    pub partition: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--exclude`: nodes (hostlist) the job must not run on.
    pub exclude: Option<String>,
    /// `--output`: the stdout path pattern.
    pub output: Option<String>,
    /// `--error`: the stderr path pattern.
    pub error: Option<String>,
    /// `--export=NONE`: the job's environment comes from its script alone.
    pub export_none: bool,
}

impl JobOptions {
    /// The options as `sbatch` flags (`--name=value`), in one fixed order.
    pub fn sbatch_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        let mut flag = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                flags.push(format!("--{name}={value}"));
            }
        };
        flag("job-name", Some(self.name.clone()));
        flag("comment", Some(self.comment.clone()));
        flag("array", self.array.clone());
        flag("begin", self.begin.clone());
        flag("dependency", self.dependency.clone());
        flag("nodes", self.nodes.map(|n| n.to_string()));
        flag("ntasks", self.ntasks.map(|n| n.to_string()));
        flag(
            "ntasks-per-node",
            self.ntasks_per_node.map(|n| n.to_string()),
        );
        flag("cpus-per-task", self.cpus_per_task.map(|n| n.to_string()));
        flag("mem", self.memory.clone());
        flag("mem-per-cpu", self.memory_per_cpu.clone());
        flag("gres", self.gres.clone());
        flag("time", self.time_limit.map(slurm_time_limit));
        flag("partition", self.partition.clone());
        flag("qos", self.qos.clone());
        flag("account", self.account.clone());
        flag("exclude", self.exclude.clone());
        flag("output", self.output.clone());
        flag("error", self.error.clone());
        flag("export", self.export_none.then(|| "NONE".to_owned()));
        if self.hold {
            flags.push("--hold".to_owned());
        }
        flags
    }
}

impl JobRequest {
    /// What Slurm's answer to `sbatch --test-only` depends on: the batch script with the
    /// per-job fields blanked (name, comment with the marker and nonce, output and error paths,
    /// the script body below the options). Everything that decides whether, where and when
    /// the job can run stays: array indexes, partition, resources, time, GRES, QOS, account,
    /// excluded nodes, begin time, dependency. Jobs of one shape get one pre-check in apply
    /// and one start estimate in plan.
    pub fn shape(&self) -> String {
        let mut shape = self.clone();
        shape.options.name.clear();
        shape.options.comment.clear();
        shape.options.output = None;
        shape.options.error = None;
        shape.body.clear();
        shape.batch_script()
    }

    /// The batch script `sbatch` reads: `#!/bin/bash`, one `#SBATCH` line per option, the body.
    pub fn batch_script(&self) -> String {
        let mut script = String::from("#!/bin/bash\n");
        for flag in self.options.sbatch_flags() {
            let _ = writeln!(script, "#SBATCH {flag}");
        }
        script.push_str(&self.body);
        script
    }
}

/// Returns a fresh nonce: 12 hex digits of SHA-256 over the time, process id and a counter.
pub fn new_nonce() -> String {
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = format!(
        "{}:{}:{}",
        now.as_nanos(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    Sha256::digest(seed.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A Slurm job id: an array task `<array>_<task>`, or a plain job `<array>`. Ordered
/// numerically, so "older" and "newer" mean what they should.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId {
    /// The array's job id (the job's own id when it is no array task).
    pub array: u64,
    /// The array task id, if the job is an array task.
    pub task: Option<u32>,
}

impl JobId {
    /// Parses `<array>_<task>` or `<array>` as [`JobId`]'s Display writes it; `None` for
    /// anything else.
    pub fn parse(text: &str) -> Option<JobId> {
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        match text.split_once('_') {
            Some((array, task)) if digits(array) && digits(task) => Some(JobId {
                array: array.parse().ok()?,
                task: Some(task.parse().ok()?),
            }),
            None if digits(text) => Some(JobId {
                array: text.parse().ok()?,
                task: None,
            }),
            _ => None,
        }
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.task {
            Some(task) => write!(f, "{}_{task}", self.array),
            None => write!(f, "{}", self.array),
        }
    }
}

impl serde::Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Read from the form [`JobId`]'s Display writes (`123_4` or `123`).
impl<'de> serde::Deserialize<'de> for JobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        JobId::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is no Slurm job id")))
    }
}

/// [`crate::desired::ResourceSpec::time_limit`] of `time_limit: UNLIMITED` (Slurm's `INFINITE`): no time limit,
/// where the partition allows it (its `MaxTime` is `UNLIMITED`).
pub const UNLIMITED_MINUTES: u32 = u32::MAX;

/// Writes a time limit in minutes as Slurm's `--time` takes it: the minutes, or `UNLIMITED`.
pub fn slurm_time_limit(minutes: u32) -> String {
    if minutes == UNLIMITED_MINUTES {
        "UNLIMITED".to_owned()
    } else {
        minutes.to_string()
    }
}

/// Quotes a value for bash so that it arrives literally: single quotes, with each `'` written
/// as `'\''`. Newlines, `$(...)`, backticks and double quotes need nothing more.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_set_option_is_one_sbatch_line_in_a_fixed_order() {
        let job = JobRequest {
            options: JobOptions {
                name: "a.web".into(),
                comment: "stackctl;owner=o".into(),
                array: Some("0-2".into()),
                begin: Some("now+30".into()),
                hold: true,
                cpus_per_task: Some(2),
                memory: Some("512M".into()),
                gres: Some("gpu:a100:1".into()),
                time_limit: Some(60),
                exclude: Some("node1".into()),
                output: Some("/l/%A_%a.out".into()),
                export_none: true,
                ..Default::default()
            },
            body: "exec sleep 1\n".into(),
        };
        assert_eq!(
            job.batch_script(),
            "#!/bin/bash\n\
             #SBATCH --job-name=a.web\n\
             #SBATCH --comment=stackctl;owner=o\n\
             #SBATCH --array=0-2\n\
             #SBATCH --begin=now+30\n\
             #SBATCH --cpus-per-task=2\n\
             #SBATCH --mem=512M\n\
             #SBATCH --gres=gpu:a100:1\n\
             #SBATCH --time=60\n\
             #SBATCH --exclude=node1\n\
             #SBATCH --output=/l/%A_%a.out\n\
             #SBATCH --export=NONE\n\
             #SBATCH --hold\n\
             exec sleep 1\n"
        );
    }

    #[test]
    fn unset_options_are_left_out() {
        let job = JobRequest {
            options: JobOptions {
                name: "n".into(),
                comment: "c".into(),
                ..Default::default()
            },
            body: String::new(),
        };
        assert_eq!(
            job.batch_script(),
            "#!/bin/bash\n#SBATCH --job-name=n\n#SBATCH --comment=c\n"
        );
    }
}
