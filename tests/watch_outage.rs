//! `stackctl watch` through a slurmctld outage, against the real test cluster.
//!
//! This binary stops the cluster's controller, which every other test needs: it holds one test
//! only, and `cargo test` runs test binaries one after another, so nothing else runs during
//! the outage. Do not run it under a runner that runs binaries in parallel.
#![cfg(feature = "cluster")]

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn cluster_script(command: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/slurm-dev-cluster");
    let output = Command::new(script).arg(command).output().unwrap();
    assert!(
        output.status.success(),
        "slurm-dev-cluster {command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts the controller again if the test fails while it is stopped.
struct ControllerGuard;

impl Drop for ControllerGuard {
    fn drop(&mut self) {
        cluster_script("up");
    }
}

#[test]
fn watch_survives_a_controller_outage_and_converges_after_it() {
    let repo = TestRepo::new("watch-outage");
    repo.write_stack(
        "web",
        "services:\n  app:\n    recipe: test/sleeper\n    replicas: 1\n",
    );
    let mut watch = Watch::start(repo.path(), &["--local", "--interval", "2s"]);
    wait_for("the first replica", 60, || repo.indexes("web.app") == [0]);
    let first = repo.alive("web.app")[0].id.clone();

    let guard = ControllerGuard;
    cluster_script("stop-controller");
    let stopped = Instant::now();
    // A change while Slurm is away: every reconcile fails until it is back.
    repo.write_stack(
        "web",
        "services:\n  app:\n    recipe: test/sleeper\n    replicas: 2\n",
    );
    while stopped.elapsed() < Duration::from_secs(30) {
        assert!(
            watch.is_running(),
            "watch exited during the outage:\n{}",
            watch.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = watch.log();
    assert!(log.contains("reconcile failed"), "failures logged:\n{log}");
    assert!(log.contains("backing off"), "and backed off:\n{log}");
    cluster_script("up");
    drop(guard);

    wait_for("two replicas once Slurm is back", 120, || {
        repo.indexes("web.app") == [0, 1]
    });
    let alive = repo.alive("web.app");
    assert_eq!(
        alive[0].id, first,
        "a failed listing was never read as no jobs: the first replica was kept"
    );
    assert_eq!(watch.terminate(), Some(0));
}
