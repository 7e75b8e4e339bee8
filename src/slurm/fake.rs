//! An in-memory Slurm for unit tests of apply, observe, the lock and the reconcile pass. It
//! keeps jobs, allocates ids in order as slurmctld does, and fails on request; it proves
//! nothing about real Slurm (the end-to-end suite does that).

use super::{Backend, SlurmError};
use crate::cluster::ClusterFacts;
use crate::job::JobRequest;
use crate::observed::{JobId, JobRecord, JobState, StartEstimate};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// The operations a [`FakeBackend`] counts and can be told to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `list_jobs`.
    List,
    /// `submit`.
    Submit,
    /// `test_submit`.
    TestSubmit,
    /// `cancel`.
    Cancel,
    /// `update_comment`.
    UpdateComment,
    /// `batch_script`.
    BatchScript,
    /// `cluster_facts`.
    Facts,
}

/// How a scripted failure behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Slurm refuses; nothing happens.
    Reject(String),
    /// The call times out without effect.
    Timeout,
    /// A submit creates the job, then reports a timeout (a lost reply).
    SubmittedThenTimeout,
    /// A submit creates the job, then prints output that cannot be parsed.
    SubmittedUnparseable,
    /// A cancel cancels only the first `n` jobs, then fails.
    PartialCancel(usize),
}

/// One job in the fake cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeJob {
    /// Its id.
    pub id: JobId,
    /// Its comment.
    pub comment: String,
    /// Slurm state name.
    pub state: String,
    /// Slurm reason.
    pub reason: String,
    /// Allocated nodes.
    pub nodes: String,
    /// The script it was submitted with.
    pub script: String,
}

impl FakeJob {
    /// Returns whether the job still counts, by the same rule stackctl applies to Slurm's.
    pub fn is_alive(&self) -> bool {
        JobState::from_slurm(&self.state, &self.reason).is_alive()
    }
}

/// Everything the fake knows; tests may read and change it through [`FakeBackend::state`].
#[derive(Debug, Default)]
pub struct FakeState {
    /// Jobs, in submission order.
    pub jobs: Vec<FakeJob>,
    /// The last job id handed out.
    pub last_id: u64,
    /// What `cluster_facts` returns.
    pub facts: ClusterFacts,
    /// Every call made, in order.
    pub calls: Vec<Op>,
    /// Failures to inject, matched in order against the next call of their operation.
    pub faults: VecDeque<(Op, Fault)>,
    /// Scripts containing this text are rejected by `submit` and `test_submit`.
    pub reject_scripts_containing: Option<String>,
    /// What `max_in_flight` returns; 0 (the default) means 4, so apply's unit tests run
    /// with calls in flight at once.
    pub max_in_flight: usize,
    /// `(a, b)`: a submit whose script contains `a` waits, at most 10 s, until a job whose
    /// script contains `b` exists; so with calls in flight at once, `b` is created first.
    pub hold_submit_until: Option<(String, String)>,
}

/// An in-memory [`Backend`]. Clones share one cluster.
#[derive(Debug, Clone, Default)]
pub struct FakeBackend {
    state: Arc<Mutex<FakeState>>,
    /// Signalled whenever a job is created (for [`FakeState::hold_submit_until`]).
    created: Arc<std::sync::Condvar>,
}

impl FakeBackend {
    /// Returns a fake with no jobs.
    pub fn new() -> FakeBackend {
        FakeBackend::default()
    }

    /// Locks and returns the fake's state.
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().expect("fake state lock")
    }

    /// Makes the next call of `op` fail with `fault`.
    pub fn fail_next(&self, op: Op, fault: Fault) {
        self.state().faults.push_back((op, fault));
    }

    /// Returns how many calls of `op` were made.
    pub fn count(&self, op: Op) -> usize {
        self.state().calls.iter().filter(|&&c| c == op).count()
    }

    /// Sets the state (and reason) of one job.
    pub fn set_state(&self, id: JobId, state: &str, reason: &str) {
        let mut s = self.state();
        let job = s
            .jobs
            .iter_mut()
            .find(|j| j.id == id)
            .expect("a job of the fake");
        job.state = state.to_owned();
        job.reason = reason.to_owned();
    }

    /// Returns the jobs whose state is not an ended one.
    pub fn alive(&self) -> Vec<FakeJob> {
        self.state()
            .jobs
            .iter()
            .filter(|j| j.is_alive())
            .cloned()
            .collect()
    }

    fn begin(&self, op: Op) -> Option<Fault> {
        let mut s = self.state();
        s.calls.push(op);
        let at = s.faults.iter().position(|(o, _)| *o == op)?;
        s.faults.remove(at).map(|(_, fault)| fault)
    }

    /// Waits as [`FakeState::hold_submit_until`] says.
    fn hold(&self, script: &str) {
        let mut s = self.state();
        let Some((held, until)) = s.hold_submit_until.clone() else {
            return;
        };
        if !script.contains(&held) {
            return;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !s.jobs.iter().any(|j| j.script.contains(&until)) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            s = self
                .created
                .wait_timeout(s, left)
                .expect("fake state lock")
                .0;
        }
    }

    fn create(&self, script: &str) -> u64 {
        let mut s = self.state();
        s.last_id += 1;
        let array = s.last_id;
        let option = |name: &str| {
            script
                .lines()
                .filter_map(|l| l.strip_prefix("#SBATCH "))
                .find_map(|l| l.strip_prefix(name))
                .map(str::to_owned)
        };
        let comment = option("--comment=").unwrap_or_default();
        let held = script.lines().any(|l| l == "#SBATCH --hold");
        let (state, reason, nodes) = if held {
            ("PENDING", "JobHeldUser", "")
        } else {
            ("RUNNING", "None", "node1")
        };
        let tasks: Vec<Option<u32>> = match option("--array=") {
            Some(spec) => expand_indexes(&spec).into_iter().map(Some).collect(),
            None => vec![None],
        };
        for task in tasks {
            s.jobs.push(FakeJob {
                id: JobId { array, task },
                comment: comment.clone(),
                state: state.to_owned(),
                reason: reason.to_owned(),
                nodes: nodes.to_owned(),
                script: script.to_owned(),
            });
        }
        drop(s);
        self.created.notify_all();
        array
    }

    /// A submit once any hold is over: faults, rejections, then the job.
    fn submit_now(&self, script: &str) -> Result<u64, SlurmError> {
        match self.begin(Op::Submit) {
            Some(Fault::Reject(message)) => return Err(failed("sbatch", message)),
            Some(Fault::Timeout) => return Err(timeout("sbatch")),
            Some(Fault::SubmittedThenTimeout) => {
                self.create(script);
                return Err(SlurmError::Unreachable {
                    command: "sbatch".into(),
                    message: "Batch job submission failed: Socket timed out on send/recv operation"
                        .into(),
                });
            }
            Some(Fault::SubmittedUnparseable) => {
                self.create(script);
                return Err(SlurmError::Parse {
                    command: "sbatch --parsable".into(),
                    message: "no job id in \"garbage\"".into(),
                });
            }
            Some(Fault::PartialCancel(_)) | None => {}
        }
        if let Some(message) = self.rejects(script) {
            return Err(failed("sbatch", message));
        }
        Ok(self.create(script))
    }

    fn rejects(&self, script: &str) -> Option<String> {
        let s = self.state();
        let text = s.reject_scripts_containing.as_deref()?;
        script
            .contains(text)
            .then(|| format!("Batch job submission failed: rejected ({text})"))
    }
}

fn failed(command: &str, message: String) -> SlurmError {
    SlurmError::Failed {
        command: command.to_owned(),
        message,
    }
}

fn timeout(command: &str) -> SlurmError {
    SlurmError::Timeout {
        command: command.to_owned(),
        seconds: 60,
    }
}

/// Expands Slurm array syntax (`0-2,5`) into indexes.
fn expand_indexes(spec: &str) -> Vec<u32> {
    let spec = spec.split('%').next().unwrap_or_default();
    let mut out = Vec::new();
    for part in spec.split(',') {
        let (low, high) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(low), Ok(high)) = (low.parse::<u32>(), high.parse::<u32>()) {
            out.extend(low..=high);
        }
    }
    out
}

impl Backend for FakeBackend {
    fn list_jobs(&self) -> Result<Vec<JobRecord>, SlurmError> {
        match self.begin(Op::List) {
            Some(Fault::Reject(message)) => return Err(failed("squeue", message)),
            Some(_) => return Err(timeout("squeue")),
            None => {}
        }
        Ok(self
            .state()
            .jobs
            .iter()
            .filter(|j| j.comment.contains("stackctl"))
            .map(|j| JobRecord {
                id: j.id,
                comment: Arc::from(j.comment.as_str()),
                state: j.state.clone(),
                reason: j.reason.clone(),
                nodes: j.nodes.clone(),
                times: Default::default(),
            })
            .collect())
    }

    fn submit(&self, job: &JobRequest) -> Result<u64, SlurmError> {
        let script = &job.batch_script();
        self.hold(script);
        self.submit_now(script)
    }

    fn test_submit(&self, job: &JobRequest) -> Result<Option<StartEstimate>, SlurmError> {
        let script = &job.batch_script();
        match self.begin(Op::TestSubmit) {
            Some(Fault::Reject(message)) => return Err(failed("sbatch --test-only", message)),
            Some(Fault::PartialCancel(_)) | None => {}
            Some(_) => return Err(timeout("sbatch --test-only")),
        }
        match self.rejects(script) {
            Some(message) => Err(failed("sbatch --test-only", message)),
            None => Ok(None),
        }
    }

    fn max_in_flight(&self) -> usize {
        match self.state().max_in_flight {
            0 => 4,
            n => n,
        }
    }

    fn cancel(&self, job_ids: &[JobId]) -> Result<(), SlurmError> {
        let limit = match self.begin(Op::Cancel) {
            Some(Fault::Reject(message)) => return Err(failed("scancel", message)),
            Some(Fault::PartialCancel(n)) => Some(n),
            Some(_) => return Err(timeout("scancel")),
            None => None,
        };
        let mut s = self.state();
        for (i, id) in job_ids.iter().enumerate() {
            if limit.is_some_and(|n| i >= n) {
                return Err(failed(
                    "scancel",
                    format!("Kill job error on job id {id}: Access/permission denied"),
                ));
            }
            for job in s.jobs.iter_mut().filter(|j| j.id == *id) {
                job.state = "CANCELLED".into();
                job.reason = "None".into();
            }
        }
        Ok(())
    }

    fn update_comment(&self, job_id: &JobId, comment: &str) -> Result<(), SlurmError> {
        match self.begin(Op::UpdateComment) {
            Some(Fault::Reject(message)) => return Err(failed("scontrol update", message)),
            Some(Fault::PartialCancel(_)) | None => {}
            Some(_) => return Err(timeout("scontrol update")),
        }
        let mut s = self.state();
        match s.jobs.iter_mut().find(|j| j.id == *job_id) {
            // As Slurm: an ended job's comment can no longer be changed.
            Some(job) if !job.is_alive() => Err(failed(
                "scontrol update",
                format!("Job has already finished for job {job_id}"),
            )),
            Some(job) => {
                job.comment = comment.to_owned();
                Ok(())
            }
            None => Err(failed(
                "scontrol update",
                format!("Invalid job id specified: {job_id}"),
            )),
        }
    }

    fn batch_script(&self, job_id: &JobId) -> Result<Option<String>, SlurmError> {
        if let Some(fault) = self.begin(Op::BatchScript) {
            return Err(failed("scontrol write batch_script", format!("{fault:?}")));
        }
        self.state()
            .jobs
            .iter()
            .find(|j| j.id == *job_id)
            .map(|j| Some(j.script.clone()))
            .ok_or_else(|| failed("scontrol write batch_script", "Invalid job id".into()))
    }

    fn home_dir(&self) -> Result<Option<String>, SlurmError> {
        Ok(super::local_home())
    }

    fn unchecked(&self) -> Option<String> {
        None
    }

    fn create_dir(&self, path: &std::path::Path) -> Result<(), String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())
    }

    fn cluster_facts(&self) -> Result<ClusterFacts, SlurmError> {
        if let Some(fault) = self.begin(Op::Facts) {
            return Err(failed("scontrol show", format!("{fault:?}")));
        }
        Ok(self.state().facts.clone())
    }
}
