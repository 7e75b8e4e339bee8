//! Observing the cluster through a backend: the one place that combines a Slurm listing with
//! the reads a plan needs to explain itself.

use crate::live::Observed;
use crate::plan::specs_to_read;
use crate::render::script::spec_of_script;
use crate::slurm::{Backend, SlurmError};
use crate::spec::{Desired, Owner};

/// Observes the owner's jobs: one listing, then, only for specs that differ from the desired
/// ones, one batch-script read per distinct spec so a plan can show what changes.
pub fn observe(
    backend: &dyn Backend,
    owner: &Owner,
    desired: &Desired,
) -> Result<Observed, SlurmError> {
    let mut observed = Observed::from_records(backend.list_jobs()?, owner);
    for (hash, job_id) in specs_to_read(desired, &observed) {
        match backend.batch_script(&job_id) {
            Ok(text) => match spec_of_script(&text) {
                Some(spec) if spec.hash() == hash => {
                    observed.specs.insert(hash, spec);
                }
                _ => tracing::warn!(%job_id, "batch script carries no readable stackctl spec"),
            },
            Err(e) => tracing::warn!(%job_id, error = %e, "cannot read batch script"),
        }
    }
    Ok(observed)
}
