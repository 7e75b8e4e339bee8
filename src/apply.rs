//! Executes a plan through a backend: cancels first (freeing resources for what follows), then
//! submits each service's new replicas as one job array. Nothing is rolled back on failure;
//! the report says what happened, and the next apply starts from what Slurm then shows.

use crate::live::{JobId, Marker, Observed, index_ranges};
use crate::plan::{Action, Plan};
use crate::render::script::{self, ScriptContext};
use crate::slurm::{Backend, SlurmError};
use crate::spec::{Desired, ServiceAddr};
use std::time::Duration;

/// How many times a submit is tried before giving up.
pub const SUBMIT_ATTEMPTS: u32 = 3;

/// What an apply did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Jobs submitted.
    pub added: usize,
    /// Jobs cancelled.
    pub destroyed: usize,
    /// Everything that failed; the rest of the plan was still carried out where safe.
    pub errors: Vec<String>,
}

/// Progress events, for the command layer to print.
pub trait Progress {
    /// Called after jobs were cancelled.
    fn cancelled(&mut self, job_ids: &[JobId]);
    /// Called after a service's replicas were submitted.
    fn submitted(&mut self, service: &ServiceAddr, indexes: &str, array_id: u64);
}

/// Executes `plan`. `new_nonce` returns a fresh unique nonce per submission.
pub fn apply(
    plan: &Plan,
    desired: &Desired,
    backend: &dyn Backend,
    ctx: &ScriptContext,
    new_nonce: &mut dyn FnMut() -> String,
    progress: &mut dyn Progress,
) -> ApplyReport {
    let mut report = ApplyReport::default();
    let cancels: Vec<JobId> = plan
        .services
        .iter()
        .flat_map(|s| &s.changes)
        .filter(|c| matches!(c.action, Action::Destroy | Action::Replace))
        .filter_map(|c| c.job.as_ref().map(|j| j.job_id))
        .collect();
    let cancelled = cancels.is_empty()
        || match backend.cancel(&cancels) {
            Ok(()) => {
                report.destroyed = cancels.len();
                progress.cancelled(&cancels);
                true
            }
            Err(e) => {
                report
                    .errors
                    .push(format!("cancelling {} jobs: {e}", cancels.len()));
                false
            }
        };
    for service_plan in &plan.services {
        let Some(service) = desired.services.get(&service_plan.service) else {
            continue;
        };
        let indexes: Vec<u32> = service_plan
            .changes
            .iter()
            // A replacement waits for its predecessor's cancel, or the index would run twice.
            .filter(|c| c.action == Action::Create || (c.action == Action::Replace && cancelled))
            .map(|c| c.index)
            .collect();
        if indexes.is_empty() {
            continue;
        }
        let marker = Marker {
            owner: plan.owner.clone(),
            service: service_plan.service.clone(),
            spec: service.hash.clone(),
            nonce: new_nonce(),
            indexes: index_ranges(&indexes),
        };
        let text = script::render(&service_plan.service, &service.spec, &marker, ctx);
        match submit_once(backend, &text, &marker) {
            Ok(job_id) => {
                report.added += indexes.len();
                progress.submitted(&service_plan.service, &marker.indexes, job_id);
            }
            Err(e) => report.errors.push(format!(
                "submitting {} [{}]: {e}",
                service_plan.service, marker.indexes
            )),
        }
    }
    report
}

/// Submits a script at most once in effect. sbatch is not idempotent: a submit that timed out
/// or lost its connection may still have created the job, so before each retry the job is
/// looked for by the nonce in its marker. A definite rejection is never retried or looked up:
/// Slurm records even a rejected submit (state FAILED), and that record is no replica.
fn submit_once(backend: &dyn Backend, text: &str, marker: &Marker) -> Result<u64, SlurmError> {
    let mut attempt = 1;
    loop {
        let error = match backend.submit(text) {
            Ok(job_id) => return Ok(job_id),
            Err(e) if e.is_definite_rejection() => return Err(e),
            Err(e) => e,
        };
        tracing::warn!(attempt, error = %error, "submit outcome unknown; looking for the job before retrying");
        // If the listing fails too, the job may or may not exist: retrying could duplicate it.
        let Ok(records) = backend.list_jobs() else {
            return Err(error);
        };
        let observed = Observed::from_records(records, &marker.owner);
        if let Some(job) = observed
            .jobs
            .iter()
            .find(|j| j.marker.nonce == marker.nonce)
        {
            return Ok(job.id.array);
        }
        if attempt >= SUBMIT_ATTEMPTS {
            return Err(error);
        }
        std::thread::sleep(Duration::from_secs(u64::from(attempt)));
        attempt += 1;
    }
}
