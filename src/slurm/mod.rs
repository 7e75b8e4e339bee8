//! The only code that talks to Slurm. [`Backend`] is what the rest of stackctl sees; the
//! adapters behind it (the CLI, locally or over SSH; slurmrestd; an in-memory fake for unit
//! tests) decide how Slurm is reached. Each adapter classifies its failures once, through
//! [`failure`], into [`SlurmError::Failed`] (refused) or [`SlurmError::Unreachable`]
//! (transient: retried, and a submit looked up by its nonce first).

mod cli;
pub mod failure;
pub mod fake;
pub mod rest;
pub mod ssh;

pub use cli::CliBackend;

use crate::cluster::ClusterFacts;
use crate::job::JobRequest;
use crate::observed::{JobId, JobRecord, StartEstimate};

/// A job listing started by [`Backend::start_list_jobs`]: calling it waits for the records.
pub type PendingListing<'a> = Box<dyn FnOnce() -> Result<Vec<JobRecord>, SlurmError> + 'a>;

/// A way to reach Slurm.
pub trait Backend: Send + Sync {
    /// Lists this user's jobs whose comment carries a stackctl marker or lock (any owner),
    /// ended ones included, with one listing RPC. Callers parse every marker themselves.
    fn list_jobs(&self) -> Result<Vec<JobRecord>, SlurmError>;
    /// Starts [`Backend::list_jobs`] and returns what finishes it, so the caller can work
    /// while Slurm answers: the CLI backend's listing command (here or over SSH) is running
    /// when this returns, and no thread is started. By default the listing runs when the
    /// returned function is called.
    fn start_list_jobs(&self) -> PendingListing<'_> {
        Box::new(move || self.list_jobs())
    }
    /// Submits a job and returns its id.
    fn submit(&self, job: &JobRequest) -> Result<u64, SlurmError>;
    /// Asks Slurm whether it would accept a job, without submitting anything (`sbatch
    /// --test-only`). `Ok` means accepted, with when and where Slurm expects it to start when
    /// the backend can tell (an optional capability: `None` otherwise); a definite rejection
    /// carries Slurm's message.
    fn test_submit(&self, job: &JobRequest) -> Result<Option<StartEstimate>, SlurmError>;
    /// Cancels the given jobs (`123_4` for one array task) with Slurm's normal graceful stop.
    /// On error some of them may have been cancelled: callers list again to know which.
    fn cancel(&self, job_ids: &[JobId]) -> Result<(), SlurmError>;
    /// Replaces the comment of one job (one array task when `job_id` names a task).
    fn update_comment(&self, job_id: &JobId, comment: &str) -> Result<(), SlurmError>;
    /// Returns the batch script of a job.
    /// `None` when this backend cannot read batch scripts at all (slurmrestd v0.0.38).
    fn batch_script(&self, job_id: &JobId) -> Result<Option<String>, SlurmError>;
    /// The jobs named `names` (`<stack>.<service>`) that accounting (`sacct`, slurmdbd) knows,
    /// this user's, ended ones included, with one call; callers keep their own owner's by the
    /// markers in their comments (stored with `AccountingStoreFlags=job_comment`). `Ok(None)`
    /// where the cluster has no accounting, or this backend cannot ask (the default).
    fn accounted_jobs(&self, _names: &[String]) -> Result<Option<Vec<JobRecord>>, SlurmError> {
        Ok(None)
    }
    /// Reads the cluster's partitions, nodes and limits (a few cheap reads).
    fn cluster_facts(&self) -> Result<ClusterFacts, SlurmError>;
    /// Returns the home directory of the user the jobs run as, where `~` in `log_dir` points:
    /// the local `HOME`, or the login node's.
    fn home_dir(&self) -> Result<Option<String>, SlurmError>;
    /// Creates a directory the jobs write to, with its parents, where the Slurm commands run.
    fn create_dir(&self, path: &std::path::Path) -> Result<(), String>;
    /// Makes `dir` hold exactly the secrets files a job may still read, where the jobs run:
    /// writes each of `write` (file name → text; readable by this user only, the directory
    /// too), keeps the `.env` files named in `keep`, and removes every other `.env` file there.
    fn sync_secrets(
        &self,
        dir: &std::path::Path,
        write: &std::collections::BTreeMap<String, String>,
        keep: &std::collections::BTreeSet<String>,
    ) -> Result<(), String> {
        crate::secret::sync_local(dir, write, keep)
    }
    /// Where the job's output went, as Slurm recorded it at submission (`stackctl logs`);
    /// `None` when Slurm no longer lists the job or this backend cannot tell.
    fn job_output(
        &self,
        _job_id: &JobId,
    ) -> Result<Option<crate::observed::output::JobOutput>, SlurmError> {
        Ok(None)
    }
    /// What this backend cannot check or show that the CLI can, said in a plan's warnings;
    /// `None` for a backend that lacks nothing.
    fn unchecked(&self) -> Option<String>;
    /// How many calls an apply may make at once through this backend (pre-checks of different
    /// shapes, submissions of one dependency wave); 1 (one after another) by default.
    fn max_in_flight(&self) -> usize {
        1
    }
}

/// How many Slurm calls an apply keeps in flight at once through the CLI. Measured at 1 to
/// 16 against the test cluster's slurmctld: more than 4 paid nothing there and raised its
/// server threads (docs/benchmarks.md).
pub const MAX_IN_FLIGHT: usize = 4;

/// The local user's home directory (`HOME`), when set.
pub fn local_home() -> Option<String> {
    std::env::var("HOME").ok().filter(|h| !h.is_empty())
}

/// Returns the adapter `stackctl.yaml` asks for; a long-running caller passes the `memo` it
/// keeps, so slurmrestd listings ask only for changes. Fails when a login node's session has
/// no temporary directory for its control socket, or slurmrestd's token cannot be read.
pub fn for_settings(
    settings: &crate::desired::Settings,
    memo: Option<&std::sync::Arc<rest::ListingMemo>>,
) -> Result<Box<dyn Backend>, SlurmError> {
    match (settings.backend, &settings.rest) {
        (crate::desired::BackendKind::Rest, Some(target)) => {
            Ok(Box::new(rest::RestBackend::new(target, memo.cloned())?))
        }
        _ => Ok(Box::new(CliBackend {
            remote: match settings.ssh.clone() {
                Some(target) => Some(std::sync::Arc::new(ssh::SshSession::new(target).map_err(
                    |source| SlurmError::Spawn {
                        program: "ssh".into(),
                        source,
                    },
                )?)),
                None => None,
            },
            ..CliBackend::default()
        })),
    }
}

/// How many times a submit is tried before giving up.
pub const SUBMIT_ATTEMPTS: u32 = 3;

/// Submits a script at most once in effect and returns its job id. sbatch is not idempotent:
/// a submit that timed out, lost its connection or printed nothing readable may still have
/// created the job, so before each retry the job is looked for by the `nonce=` field of its
/// comment. A definite rejection is never retried or looked up: Slurm records even a rejected
/// submit (state FAILED), and that record is no job of ours.
pub fn submit_once(
    backend: &dyn Backend,
    job: &JobRequest,
    nonce: &str,
) -> Result<u64, SlurmError> {
    let field = format!("nonce={nonce}");
    let mut attempt = 1;
    loop {
        let error = match backend.submit(job) {
            Ok(job_id) => return Ok(job_id),
            Err(e) if e.is_definite_rejection() => return Err(e),
            Err(e) => e,
        };
        tracing::warn!(attempt, error = %error, "submit outcome unknown; looking for the job before retrying");
        // If the listing fails too, the job may or may not exist: retrying could duplicate it.
        let Ok(records) = backend.list_jobs() else {
            return Err(error);
        };
        if let Some(found) = records
            .iter()
            .find(|r| r.comment.split(';').any(|f| f == field))
        {
            return Ok(found.id.array);
        }
        if attempt >= SUBMIT_ATTEMPTS {
            return Err(error);
        }
        std::thread::sleep(std::time::Duration::from_secs(u64::from(attempt)));
        attempt += 1;
    }
}

/// A failed Slurm operation.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// The command could not be started at all.
    #[error("cannot run `{program}`: {source} (is Slurm's client installed and on PATH?)")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The command ran past its deadline and was killed; its effect is unknown.
    #[error("`{command}` did not finish within {seconds} s")]
    Timeout {
        /// The command line.
        command: String,
        /// The deadline.
        seconds: u64,
    },
    /// Slurm refused the request ([`failure::Class::Rejected`]): it had no effect.
    #[error("`{command}` failed: {message}")]
    Failed {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        message: String,
    },
    /// Slurm could not be reached, or answered that it cannot take the request now
    /// ([`failure::Class::Transient`]): a later try may succeed, and the request's effect may
    /// be unknown.
    #[error("`{command}` failed: {message}")]
    Unreachable {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        message: String,
    },
    /// The output could not be understood; the command's effect is unknown.
    #[error("unexpected output from `{command}`: {message}")]
    Parse {
        /// The command line.
        command: String,
        /// What was wrong.
        message: String,
    },
}

impl SlurmError {
    /// A failure of `command` with `message`, of the class [`failure`] gave it.
    pub fn classified(command: String, message: String, class: failure::Class) -> SlurmError {
        match class {
            failure::Class::Transient => SlurmError::Unreachable { command, message },
            failure::Class::Rejected => SlurmError::Failed { command, message },
        }
    }

    /// Returns whether Slurm definitely rejected the request, so retrying cannot help and the
    /// request certainly had no effect. Timeouts, lost connections and output that cannot be
    /// understood (the command may have succeeded) are not definite.
    pub fn is_definite_rejection(&self) -> bool {
        match self {
            SlurmError::Failed { .. } | SlurmError::Spawn { .. } => true,
            SlurmError::Unreachable { .. }
            | SlurmError::Timeout { .. }
            | SlurmError::Parse { .. } => false,
        }
    }

    /// Returns whether the failure is likely to pass by itself (Slurm unreachable, busy or
    /// slow), so a later retry may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            SlurmError::Unreachable { .. } | SlurmError::Timeout { .. } => true,
            SlurmError::Failed { .. } | SlurmError::Spawn { .. } | SlurmError::Parse { .. } => {
                false
            }
        }
    }
}
