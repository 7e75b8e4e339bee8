//! One-shot jobs' runs on disk: reading the completion records and `results.json` of every
//! run from `<log_dir>/results/<owner>/` ([`crate::observed::runs`] parses them,
//! [`crate::render::results`] draws them, and the reconcile pass attaches them to what it
//! observed: [`crate::reconcile::attach_results`]).
//!
//! The records are read from this machine's file system, at the path the jobs write
//! (`log_dir` expanded as for the batch scripts): with the CLI backend that is the cluster's
//! own file system; over slurmrestd it must be a file system shared with the cluster (else
//! Slurm's listing alone tells the runs, until MinJobAge); over SSH the records are on the
//! login node's side and are not read yet, so a repo with jobs is refused there unless the
//! cluster has accounting.
//!
//! Where the cluster has accounting (`sacct` answers), the runs it knows are read too, with one
//! `sacct` call per pass and only for a repo with jobs ([`Observed::accounted`]): they outlive
//! both Slurm's memory (MinJobAge) and a lost record. Without accounting, or with
//! `cluster.accounting: off`, the records are all there is; a `sacct` that fails never fails
//! the plan (a debug log says why).

use crate::desired::ServiceAddr;
use crate::observed::runs::{RESULTS_FILE, RUN_FILE, RunRecord, parse_metrics};
use std::path::Path;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{Owner, ReplicaSpec, SpecHash};
    use crate::observed::Marker;
    use crate::render::script::{ScriptContext, render_job, results_root};
    use std::collections::BTreeMap;

    /// Runs the script a job gets with bash, as Slurm would (array job `array`, task 0).
    fn run_script(body: &str, array: u64) -> i32 {
        std::process::Command::new("bash")
            .arg("-c")
            .arg(body)
            .env("SLURM_ARRAY_JOB_ID", array.to_string())
            .env("SLURM_ARRAY_TASK_ID", "0")
            .output()
            .unwrap()
            .status
            .code()
            .unwrap()
    }

    #[test]
    fn what_a_job_script_records_reads_back_as_its_run_with_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let owner = Owner::parse("team/bench").unwrap();
        let addr = ServiceAddr::new("s", "load");
        let spec: ReplicaSpec = serde_json::from_value(serde_json::json!({
            "command": "printf '{\"rps\": 12.5, \"name\": \"x\"}' > \"$STACKCTL_RESULTS_DIR/results.json\"\n\
                        [ \"$STACKCTL_TARGET_PORT\" = 8080 ] || exit 9\nexit \"$CODE\"",
            "resources": {"nodes": 1, "cpu": 1, "gpu": 0},
            "environment": {"CODE": "0"},
            "ports": [],
            "slurm": {}
        }))
        .unwrap();
        let marker = Marker {
            owner: owner.clone(),
            service: addr.clone(),
            spec: SpecHash("00aa00aa00aa00aa".into()),
            nonce: "n".into(),
            indexes: "0".into(),
            report: Default::default(),
            restart: Default::default(),
            protect: false,
            pred: None,
            endpoints: Vec::new(),
        };
        let ctx = ScriptContext {
            log_dir: dir.path().to_path_buf(),
            image_dir: dir.path().to_path_buf(),
            secrets_dir: None,
        };
        let target = BTreeMap::from([("STACKCTL_TARGET_PORT".to_owned(), "8080".to_owned())]);
        let ok = render_job(&addr, &spec, &marker, &ctx, &target, (Some("c0ffee1"), 0));
        assert_eq!(ok.options.begin, None);
        assert_eq!(run_script(&ok.body, 41), 0);
        let mut failing = spec.clone();
        failing.environment.insert("CODE".into(), "4".into());
        let retry = render_job(&addr, &failing, &marker, &ctx, &target, (None, 30));
        assert_eq!(retry.options.begin.as_deref(), Some("now+30"));
        assert_eq!(run_script(&retry.body, 42), 4);

        let root = results_root(dir.path(), &owner);
        assert!(root.ends_with("results/team+bench"));
        let runs = read_runs(&root, &addr);
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(runs[0].job_id.to_string(), "41_0");
        assert_eq!(runs[0].spec, marker.spec);
        assert_eq!(runs[0].commit.as_deref(), Some("c0ffee1"));
        assert!(runs[0].succeeded());
        assert_eq!(runs[0].metrics, BTreeMap::from([("rps".to_owned(), 12.5)]));
        assert_eq!(runs[1].exit, Some(4));
        assert!(!runs[1].succeeded());
        assert!(runs[1].end >= runs[1].start);
    }
}
