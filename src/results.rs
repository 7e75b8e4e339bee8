//! One-shot jobs' runs on disk: reading the completion records and `results.json` of every
//! run from `<log_dir>/results/<owner>/` ([`crate::observed::runs`] parses them,
//! [`crate::render::results`] draws them).
//!
//! The records are read from this machine's file system, at the path the jobs write
//! (`log_dir` expanded as for the batch scripts): with the CLI backend that is the cluster's
//! own file system; over slurmrestd it must be a file system shared with the cluster (else
//! Slurm's listing alone tells the runs, until MinJobAge); over SSH the records are on the
//! login node's side and are not read yet, so a repo with jobs is refused there.

use crate::desired::{Repo, ServiceAddr};
use crate::observed::Observed;
use crate::observed::runs::{RESULTS_FILE, RUN_FILE, RunRecord, parse_metrics};
use crate::slurm::Backend;
use std::path::{Path, PathBuf};

/// Reads the runs of every job in `repo` into `observed.runs` (nothing for a repo without
/// jobs). Fails over SSH, and when `log_dir` cannot be expanded.
pub fn attach(observed: &mut Observed, repo: &Repo, backend: &dyn Backend) -> Result<(), String> {
    let jobs: Vec<&ServiceAddr> = repo
        .desired
        .services
        .iter()
        .filter(|(_, s)| s.job.is_some())
        .map(|(a, _)| a)
        .collect();
    if jobs.is_empty() {
        return Ok(());
    }
    if repo.settings.ssh.is_some() {
        return Err(format!(
            "one-shot jobs ({}) need their completion records, which stackctl reads from \
             log_dir on this machine; over SSH (cluster.ssh) they are on the login node and \
             cannot be read yet: run plan and apply for jobs on the cluster itself",
            jobs.iter()
                .map(|a| a.reference())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let root = root(repo, backend)?;
    for addr in jobs {
        observed.runs.insert(addr.clone(), read_runs(&root, addr));
    }
    Ok(())
}

/// `<log_dir>/results/<owner>` for `repo`, `~` expanded as for the batch scripts.
pub fn root(repo: &Repo, backend: &dyn Backend) -> Result<PathBuf, String> {
    let ctx = crate::reconcile::script_context(repo, backend).map_err(|e| e.to_string())?;
    Ok(crate::render::script::results_root(
        &ctx.log_dir,
        &repo.settings.owner,
    ))
}

/// The runs of `addr` under `root` (every spec), oldest first by job id, each with the
/// metrics of its `results.json`. Unreadable records are skipped with a warning.
pub fn read_runs(root: &Path, addr: &ServiceAddr) -> Vec<RunRecord> {
    let dir = root.join(addr.to_string());
    let mut runs = Vec::new();
    let Ok(specs) = std::fs::read_dir(&dir) else {
        return runs;
    };
    for spec in specs.flatten() {
        let Ok(entries) = std::fs::read_dir(spec.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(text) = std::fs::read_to_string(path.join(RUN_FILE)) else {
                continue;
            };
            let Some(mut record) = RunRecord::parse(&text) else {
                tracing::warn!(path = %path.display(), "unreadable run record");
                continue;
            };
            if let Ok(text) = std::fs::read_to_string(path.join(RESULTS_FILE)) {
                match parse_metrics(&text) {
                    Ok(metrics) => record.metrics = metrics,
                    Err(e) => tracing::warn!(path = %path.display(), "{e}"),
                }
            }
            runs.push(record);
        }
    }
    runs.sort_by_key(|r| r.job_id);
    runs
}
