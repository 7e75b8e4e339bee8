//! What the watch loop has done so far: the one record the loop writes after each reconcile
//! and the HTTP endpoints read (`/status` as JSON, `/metrics` in Prometheus' text format).
//! Plain data; the loop owns the clock and fills in the times.

use serde::Serialize;
use std::collections::BTreeMap;

/// The loop's record, shared behind a mutex with the HTTP server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchState {
    /// `git` (following a branch) or `local` (following files).
    pub mode: &'static str,
    /// When the loop started, seconds since the Unix epoch.
    pub started_unix: f64,
    /// Reconciles that converged or found nothing to do.
    pub reconciles_ok: u64,
    /// Reconciles that failed (invalid commit, Slurm unreachable, partial apply…).
    pub reconciles_error: u64,
    /// Reconciles skipped because another apply held the lock.
    pub reconciles_skipped: u64,
    /// When the last reconcile that succeeded finished, seconds since the Unix epoch.
    pub last_success_unix: Option<f64>,
    /// Jobs submitted to replace replicas that ended or were cancelled outside stackctl's own
    /// actions (never renewals nor rolling replacements).
    pub drift_corrections: u64,
    /// The commit whose desired state was last applied without error (git mode).
    pub applied_commit: Option<String>,
    /// The last reconcile, whatever its result.
    pub last: Option<ReconcileRecord>,
    /// The last error, kept until a reconcile succeeds.
    pub last_error: Option<ErrorRecord>,
    /// The newest commit that failed validation and was not applied; cleared when a newer
    /// commit is valid.
    pub rejected_commit: Option<ErrorRecord>,
    /// Why the checkout was left alone (local changes, another branch), when it was; the
    /// loop still applies the remote branch's commit.
    pub checkout_held: Option<String>,
    /// Why the last sync with the remote failed (fetch, network, credentials), when it did;
    /// the loop keeps converging to the last commit it had.
    pub sync_error: Option<String>,
    /// The services the last reconcile refused (protection, a destroy limit, a job Slurm
    /// rejects, a dependency not submitted): their replicas were left as they are while the
    /// others converged.
    pub refused: Vec<RefusedService>,
    /// Desired and running replicas per service, from the last listing.
    pub services: Vec<ServiceReplicas>,
    /// The apply lock as the last reconcile saw it.
    pub lock: LockState,
    /// Latencies of the Slurm calls the loop made, by operation (`list_jobs`, `submit`…).
    pub slurm_calls: BTreeMap<&'static str, CallStats>,
}

/// One reconcile, as one log line tells it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReconcileRecord {
    /// When it finished, seconds since the Unix epoch.
    pub finished_unix: f64,
    /// The commit it converged to (git mode).
    pub commit: Option<String>,
    /// `ok`, `refused` (the others converged, some services were refused), `error` or
    /// `skipped`.
    pub result: &'static str,
    /// The plan's summary, e.g. `2 to add, 0 to change, 1 to destroy`.
    pub plan: String,
    /// How long it took.
    pub duration_seconds: f64,
}

/// A reconcile that failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorRecord {
    /// When, seconds since the Unix epoch.
    pub at_unix: f64,
    /// The commit being reconciled, when known.
    pub commit: Option<String>,
    /// `configuration`, `transient`, `definite`, `lock_held` or `refused`.
    pub kind: &'static str,
    /// The error, as the log shows it.
    pub message: String,
}

/// One service's replica counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceReplicas {
    /// The stack.
    pub stack: String,
    /// The service.
    pub service: String,
    /// Replicas the repo asks for (0 for a service gone from the repo that still runs).
    pub desired: u32,
    /// Distinct replica indexes with a RUNNING job.
    pub running: u32,
}

/// A service a reconcile refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedService {
    /// The stack.
    pub stack: String,
    /// The service.
    pub service: String,
    /// `protected`, `max_destroy`, `destroy_all`, `rejected`, `unschedulable` or
    /// `dependency`.
    pub reason: &'static str,
    /// What would have happened and how to allow it.
    pub message: String,
}

/// The apply lock, as the loop last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LockState {
    /// Nobody held it.
    #[default]
    Free,
    /// This loop held it during its last apply (and released it).
    ReleasedByUs,
    /// Another apply held it; the description names who and since when.
    HeldByOther {
        /// The lock's own description.
        holder: String,
    },
}

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram of one kind of Slurm call.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CallStats {
    /// Calls made.
    pub count: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Total seconds spent.
    pub sum_seconds: f64,
    /// Calls per bucket of [`LATENCY_BUCKETS`], not cumulative.
    pub buckets: [u64; LATENCY_BUCKETS.len()],
}

impl CallStats {
    /// Records one call.
    pub fn record(&mut self, seconds: f64, failed: bool) {
        self.count += 1;
        self.errors += u64::from(failed);
        self.sum_seconds += seconds;
        if let Some(i) = LATENCY_BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[i] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_lands_in_the_first_bucket_that_holds_it() {
        let mut stats = CallStats::default();
        stats.record(0.004, false);
        stats.record(0.3, true);
        stats.record(99.0, false);
        assert_eq!(stats.count, 3);
        assert_eq!(stats.errors, 1);
        assert_eq!(stats.buckets[0], 1, "0.004 s ≤ 0.005");
        assert_eq!(stats.buckets[6], 1, "0.3 s ≤ 0.5, not ≤ 0.25");
        assert_eq!(stats.buckets.iter().sum::<u64>(), 2, "99 s only in +Inf");
        assert!((stats.sum_seconds - 99.304).abs() < 1e-9);
    }
}
