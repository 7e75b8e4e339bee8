//! Observing the cluster through a backend: the one place that combines a Slurm listing with
//! the reads a plan needs to explain itself.

use crate::desired::{Desired, Owner, ReplicaSpec, SpecHash};
use crate::observed::{JobRecord, Observed};
use crate::plan::specs_to_read;
use crate::render::script::spec_of_script;
use crate::slurm::Backend;
use std::collections::BTreeMap;

/// Observes the owner's jobs from a listing, then, only for specs that differ from the desired
/// ones and are not in `known`, reads one batch script per distinct spec so a plan can show
/// what changes. A script that cannot be read only makes the plan show hashes instead of
/// attributes.
pub fn observe(
    backend: &dyn Backend,
    records: Vec<JobRecord>,
    owner: &Owner,
    desired: &Desired,
    known: BTreeMap<SpecHash, ReplicaSpec>,
) -> Observed {
    let mut observed = Observed::from_records(records, owner);
    observed.listed_at = unix_now();
    observed.specs = known;
    for (hash, job_id) in specs_to_read(desired, &observed) {
        match backend.batch_script(&job_id) {
            // The backend cannot read scripts: the plan shows hashes, and says so.
            Ok(None) => break,
            Ok(Some(text)) => match spec_of_script(&text) {
                Some(spec) if spec.hash() == hash => {
                    observed.specs.insert(hash, spec);
                }
                _ => tracing::warn!(%job_id, "batch script carries no readable stackctl spec"),
            },
            Err(e) => tracing::warn!(%job_id, error = %e, "cannot read batch script"),
        }
    }
    observed
}

/// Returns the current time in unix seconds (0 before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
