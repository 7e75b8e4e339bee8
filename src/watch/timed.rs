//! A backend decorator that times every Slurm call into the loop's [`WatchState`], for the
//! `stackctl_slurm_call_duration_seconds` histogram.

use super::state::WatchState;
use crate::cluster::ClusterFacts;
use crate::job::JobRequest;
use crate::observed::{JobId, JobRecord, StartEstimate};
use crate::slurm::{Backend, SlurmError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Times each call of `inner` and records it under the operation's name.
pub struct Timed {
    inner: Box<dyn Backend>,
    state: Arc<Mutex<WatchState>>,
}

impl Timed {
    /// Wraps `inner`, recording into `state`.
    pub fn new(inner: Box<dyn Backend>, state: Arc<Mutex<WatchState>>) -> Timed {
        Timed { inner, state }
    }

    fn time<T>(
        &self,
        operation: &'static str,
        call: impl FnOnce() -> Result<T, SlurmError>,
    ) -> Result<T, SlurmError> {
        let started = Instant::now();
        let result = call();
        let seconds = started.elapsed().as_secs_f64();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .slurm_calls
            .entry(operation)
            .or_default()
            .record(seconds, result.is_err());
        result
    }
}

impl Backend for Timed {
    fn list_jobs(&self) -> Result<Vec<JobRecord>, SlurmError> {
        self.time("list_jobs", || self.inner.list_jobs())
    }
    fn submit(&self, job: &JobRequest) -> Result<u64, SlurmError> {
        self.time("submit", || self.inner.submit(job))
    }
    fn test_submit(&self, job: &JobRequest) -> Result<Option<StartEstimate>, SlurmError> {
        self.time("test_submit", || self.inner.test_submit(job))
    }
    fn cancel(&self, job_ids: &[JobId]) -> Result<(), SlurmError> {
        self.time("cancel", || self.inner.cancel(job_ids))
    }
    fn update_comment(&self, job_id: &JobId, comment: &str) -> Result<(), SlurmError> {
        self.time("update_comment", || {
            self.inner.update_comment(job_id, comment)
        })
    }
    fn batch_script(&self, job_id: &JobId) -> Result<Option<String>, SlurmError> {
        self.time("batch_script", || self.inner.batch_script(job_id))
    }
    fn cluster_facts(&self) -> Result<ClusterFacts, SlurmError> {
        self.time("cluster_facts", || self.inner.cluster_facts())
    }
    fn home_dir(&self) -> Result<Option<String>, SlurmError> {
        self.time("home_dir", || self.inner.home_dir())
    }
    fn unchecked(&self) -> Option<String> {
        self.inner.unchecked()
    }
    fn create_dir(&self, path: &std::path::Path) -> Result<(), String> {
        self.inner.create_dir(path)
    }
}
