//! End-to-end: `stackctl logs` reads the files a job was submitted to write, as Slurm recorded
//! them, not paths recomputed from today's `log_dir` (which a commit may have changed since).
//! The REST counterpart is in `tests/e2e/rest.rs`.
//!
//! The test has its own owner and cancels only its own job ids (see `common::TestRepo`).
#![cfg(feature = "cluster")]

use crate::common;

use common::*;

#[test]
fn logs_after_a_log_dir_change_read_the_files_the_job_writes() {
    let repo = TestRepo::new("logs-moved");
    repo.write_stack(
        "s",
        "services:\n  app:\n    recipe: test/echo\n    environment: {VALUE: \"written before the move\"}\n",
    );
    repo.apply();
    let old = repo.path().join("logs");
    wait_for("the replica's first line in the old log_dir", 240, || {
        std::fs::read_dir(&old).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("before the move"))
            })
        })
    });
    // A commit moves log_dir; the running job still writes to the old one.
    let moved = repo.path().join("moved-logs");
    let settings = std::fs::read_to_string(repo.path().join("stackctl.yaml")).unwrap();
    std::fs::write(
        repo.path().join("stackctl.yaml"),
        settings.replace(&old.display().to_string(), &moved.display().to_string()),
    )
    .unwrap();
    std::fs::create_dir_all(&moved).unwrap();
    let read = repo.expect(&["logs", "s/app"], 0);
    assert_eq!(read, "written before the move");
}
