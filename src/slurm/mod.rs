//! The only code that talks to Slurm. [`Backend`] is what the rest of stackctl sees; the
//! adapters behind it (the local CLI today) decide how Slurm is reached.

mod cli;

pub use cli::CliBackend;

use crate::live::{JobId, JobRecord};
use crate::spec::Owner;

/// A way to reach Slurm.
pub trait Backend {
    /// Lists this user's jobs whose comment carries `owner`'s marker tag, ended ones included,
    /// with one listing RPC. The tag is a cheap pre-filter: callers still parse every marker.
    fn list_jobs(&self, owner: &Owner) -> Result<Vec<JobRecord>, SlurmError>;
    /// Submits a batch script (its `#SBATCH` lines carry every option) and returns the job id.
    fn submit(&self, script: &str) -> Result<u64, SlurmError>;
    /// Cancels the given jobs (`123_4` for one array task) with Slurm's normal graceful stop.
    fn cancel(&self, job_ids: &[JobId]) -> Result<(), SlurmError>;
    /// Returns the batch script of a job.
    fn batch_script(&self, job_id: &JobId) -> Result<String, SlurmError>;
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
    /// Slurm refused or failed.
    #[error("`{command}` failed: {message}")]
    Failed {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        message: String,
    },
    /// The output could not be understood.
    #[error("unexpected output from `{command}`: {message}")]
    Parse {
        /// The command line.
        command: String,
        /// What was wrong.
        message: String,
    },
}

impl SlurmError {
    /// Returns whether Slurm definitely rejected the request, so retrying cannot help and the
    /// request certainly had no effect. Timeouts and lost connections are not definite.
    pub fn is_definite_rejection(&self) -> bool {
        match self {
            SlurmError::Failed { message, .. } => {
                let transient = [
                    "timed out",
                    "Unable to contact",
                    "Socket",
                    "Connection",
                    "Zero Bytes",
                ];
                !transient.iter().any(|t| message.contains(t))
            }
            SlurmError::Spawn { .. } | SlurmError::Parse { .. } => true,
            SlurmError::Timeout { .. } => false,
        }
    }
}
