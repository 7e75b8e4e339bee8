//! End-to-end tests of the operator's safety belt against the real Slurm test cluster:
//! `protect: true`, `--max-destroy` and `--allow-destroy-all`.
//!
//! Every test gets its own owner and cleans up by cancelling its own job ids. Jobs are read
//! back with plain `squeue`, independently of stackctl's own listing code.
#![cfg(feature = "cluster")]

use crate::common;

use common::*;

fn ids(jobs: &[Job]) -> Vec<String> {
    jobs.iter().map(|j| j.id.clone()).collect()
}

fn protected(replicas: u32, protect: bool) -> String {
    format!(
        "services:\n  app:\n    recipe: test/sleeper\n    replicas: {replicas}\n    protect: {protect}\n"
    )
}

#[test]
fn a_protected_service_survives_scale_down_and_removal_until_a_commit_unprotects_it() {
    let repo = TestRepo::new("protect");
    repo.write_stack("s", &protected(2, true));
    repo.write_stack("other", &stack(1));
    repo.apply();
    let before = repo.alive("s.app");
    assert_eq!(before.len(), 2);
    assert!(
        before.iter().all(|j| j.comment.contains(";protect=1")),
        "{before:?}"
    );
    assert!(
        !repo.alive("other.app")[0].comment.contains(";protect="),
        "only the protected service's markers say so"
    );

    repo.write_stack("s", &protected(1, true));
    let error = repo.refused(&["apply", "--auto-approve"]);
    assert!(
        error.contains("s.app is protected")
            && error.contains("scale it down from 2 to 1 replica")
            && error.contains("nothing was done"),
        "{error}"
    );
    // Gone from the repo: the markers still protect it, in plan and apply.
    repo.remove_stack("s");
    let error = repo.refused(&["plan"]);
    assert!(
        error.contains("s.app is protected")
            && error.contains("destroy it (gone from the repo; 2 running replicas)"),
        "{error}"
    );
    repo.refused(&["apply", "--auto-approve"]);
    assert_eq!(ids(&repo.alive("s.app")), ids(&before), "nothing cancelled");

    // The un-protect commit rewrites the markers in place: no job is replaced.
    repo.write_stack("s", &protected(2, false));
    let plan = repo.expect(&["plan", "--detailed-exitcode"], 2);
    assert!(
        plan.contains("Plan: 0 to add, 2 to change, 0 to destroy.")
            && plan.contains("protect: false"),
        "{plan}"
    );
    let out = repo.apply();
    assert!(
        out.contains("Apply complete! Jobs: 0 added, 2 changed, 0 destroyed."),
        "{out}"
    );
    let after = repo.alive("s.app");
    assert_eq!(ids(&after), ids(&before), "the same jobs keep running");
    assert!(
        after.iter().all(|j| !j.comment.contains(";protect=")),
        "{after:?}"
    );
    repo.assert_converged();

    // Now the removal goes ahead, and leaves the other stack alone.
    repo.remove_stack("s");
    let out = repo.apply();
    assert!(out.contains("2 destroyed"), "{out}");
    assert!(repo.alive("s.app").is_empty());
    assert_eq!(repo.alive("other.app").len(), 1);
}

#[test]
fn max_destroy_and_an_emptied_stacks_dir_are_refused_before_anything_is_cancelled() {
    let repo = TestRepo::new("maxdestroy");
    repo.write_stack("s", &stack(3));
    repo.apply();
    let before = repo.alive("s.app");
    assert_eq!(before.len(), 3);

    repo.write_stack("s", &stack(1));
    let error = repo.refused(&["apply", "--auto-approve", "--max-destroy", "1"]);
    assert!(
        error.contains("would cancel 2 jobs without a ready successor, more than --max-destroy 1"),
        "{error}"
    );
    assert_eq!(ids(&repo.alive("s.app")), ids(&before), "nothing cancelled");
    let out = repo.expect(&["apply", "--auto-approve", "--max-destroy", "2"], 0);
    assert!(out.contains("2 destroyed"), "{out}");
    assert_eq!(repo.indexes("s.app"), [0]);

    repo.remove_stack("s");
    for args in [&["plan"][..], &["apply", "--auto-approve"]] {
        let error = repo.refused(args);
        assert!(
            error.contains("every job owner") && error.contains("--allow-destroy-all"),
            "{error}"
        );
    }
    assert_eq!(repo.indexes("s.app"), [0], "nothing cancelled");
    repo.expect(&["apply", "--auto-approve", "--allow-destroy-all"], 0);
    assert!(repo.alive("s.app").is_empty());
    repo.assert_converged();
}

#[test]
fn target_exclude_replace_and_destroy_touch_only_what_they_name() {
    let repo = TestRepo::new("target");
    repo.write_stack("a", &stack(1));
    repo.write_stack("b", &stack(1));
    repo.apply();
    repo.write_stack("a", &stack(2));
    repo.write_stack("b", &stack(2));

    let plan = repo.expect(&["plan", "--target", "a"], 0);
    assert!(
        plan.contains("targeted plan (only a)")
            && plan.contains("Plan: 1 to add, 0 to change, 0 to destroy.")
            && !plan.contains("# b.app"),
        "{plan}"
    );
    repo.expect(&["apply", "--auto-approve", "--target", "a/app"], 0);
    assert_eq!(repo.indexes("a.app"), [0, 1]);
    assert_eq!(repo.indexes("b.app"), [0], "b was not targeted");
    let out = repo.expect(&["apply", "--auto-approve", "--exclude", "b"], 0);
    assert!(out.contains("No changes"), "{out}");
    assert_eq!(repo.indexes("b.app"), [0], "b was excluded");
    repo.expect(&["apply", "--auto-approve", "--exclude", "a"], 0);
    assert_eq!(repo.indexes("b.app"), [0, 1]);
    repo.assert_converged();

    // --replace one replica: only it gets a new job.
    let before = repo.alive("a.app");
    let out = repo.expect(&["apply", "--auto-approve", "--replace", "a/app#1"], 0);
    assert!(
        out.contains("forced by --replace") && out.contains("1 added, 0 changed, 1 destroyed"),
        "{out}"
    );
    let after = repo.alive("a.app");
    assert_eq!(after[0].id, before[0].id, "replica 0 kept its job");
    assert_ne!(after[1].id, before[1].id, "replica 1 was replaced");
    assert_eq!(ids(&repo.alive("b.app")).len(), 2);

    // --replace on a rolling service (two replicas) replaces each replica once and ends: the
    // passes that finish the rollout leave the successors alone. Running replicas, so the
    // replace is create-first.
    wait_for("both replicas of b running", 120, || {
        let alive = repo.alive("b.app");
        alive.len() == 2 && alive.iter().all(|j| j.state == "RUNNING")
    });
    let before = ids(&repo.alive("b.app"));
    let mut child = repo
        .command(&["apply", "--auto-approve", "--replace", "b/app"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_child(&mut child, 240, "apply --replace b/app to end");
    assert!(status.success());
    let after = ids(&repo.alive("b.app"));
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after.iter().all(|id| !before.contains(id)),
        "{before:?} -> {after:?}"
    );
    repo.assert_converged();

    // A protected service refuses --replace and destroy. Recreate-style, so the replace would
    // cancel before it submits whatever state the jobs are in.
    repo.write_stack(
        "b",
        &format!("{}    update: {{strategy: recreate}}\n", protected(2, true)),
    );
    let out = repo.apply();
    assert!(out.contains("0 added, 2 changed, 0 destroyed"), "{out}");
    let b = ids(&repo.alive("b.app"));
    let error = repo.refused(&["apply", "--auto-approve", "--replace", "b/app"]);
    assert!(error.contains("replace 2 replicas"), "{error}");
    let error = repo.refused(&["destroy", "--auto-approve", "--target", "b"]);
    assert!(error.contains("b.app is protected"), "{error}");
    assert_eq!(ids(&repo.alive("b.app")), b, "nothing cancelled");

    // destroy --target cancels only what it names.
    let out = repo.expect(&["destroy", "--auto-approve", "--target", "a"], 0);
    assert!(out.contains("2 destroyed"), "{out}");
    assert!(repo.alive("a.app").is_empty());
    assert_eq!(ids(&repo.alive("b.app")), b);
}

#[test]
fn a_partial_failure_lists_what_was_done_and_what_failed_and_a_rerun_converges() {
    let repo = TestRepo::new("partial");
    // Partition `closed` exists and fits, so the cluster check passes; it is drained, so
    // only Slurm (sbatch --test-only) refuses it: a real failure mid-apply.
    repo.write_stack(
        "s",
        "services:\n  good:\n    recipe: test/sleeper\n  bad:\n    recipe: test/sleeper\n    slurm: {partition: closed}\n",
    );
    let output = repo.run(&["apply", "--auto-approve"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(6),
        "partial apply: {stdout}\n{stderr}"
    );
    let done = stdout.split("Done:\n").nth(1).unwrap_or_default();
    let (done, failed) = done
        .split_once("Failed or not attempted (left as they were):\n")
        .unwrap_or_default();
    assert!(
        done.contains("s.good[0]: submitted job array") && !done.contains("s.bad"),
        "{stdout}"
    );
    assert!(
        failed.contains("s.bad: Slurm would not accept the new job")
            && failed.contains("Required partition not available"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Apply incomplete! Jobs: 1 added, 0 changed, 0 destroyed, 1 failed.")
            && stdout.contains("Fix the errors above"),
        "{stdout}"
    );
    assert!(
        stderr.contains("Required partition not available"),
        "{stderr}"
    );
    let good = ids(&repo.alive("s.good"));
    assert_eq!(good.len(), 1);
    assert!(repo.alive("s.bad").is_empty());

    // The fix: a re-run submits only what failed.
    repo.write_stack(
        "s",
        "services:\n  good:\n    recipe: test/sleeper\n  bad:\n    recipe: test/sleeper\n",
    );
    let out = repo.apply();
    assert!(
        out.contains("Apply complete! Jobs: 1 added, 0 changed, 0 destroyed."),
        "{out}"
    );
    assert_eq!(
        ids(&repo.alive("s.good")),
        good,
        "the good replica kept its job"
    );
    assert_eq!(repo.alive("s.bad").len(), 1);
    repo.assert_converged();
}

/// A protected service that would roll (two replicas, a health check, `strategy: rolling`):
/// no change may start a second instance beside a replica, so a spec change (here its
/// command's environment) and `--replace` are refused by name, and Slurm sees no new job and
/// no cancel.
#[test]
fn a_protected_rolling_service_refuses_a_spec_change_and_replace_without_a_second_instance() {
    let repo = TestRepo::new("protect-roll");
    std::fs::write(
        repo.path().join("recipes/test/listener.yaml"),
        "name: listener\ncommand: exec python3 -m http.server \"$PORT\"\n\
         resources: {cpu: 1, memory: 256M, time_limit: 15}\nports: [auto]\n",
    )
    .unwrap();
    let service = |mode: &str| {
        format!(
            "services:\n  store:\n    recipe: test/listener\n    replicas: 2\n    protect: true\n    \
             environment: {{MODE: {mode}}}\n    health:\n      tcp: {{}}\n      interval: 1s\n    \
             update: {{strategy: rolling, max_surge: 2}}\n"
        )
    };
    repo.write_stack("data", &service("a"));
    repo.apply();
    // Ready replicas are replaced create-first (a replica not ready yet would go first).
    wait_for("both replicas ready", 120, || {
        let alive = repo.alive("data.store");
        alive.len() == 2 && alive.iter().all(|j| j.comment.contains(";health=ready;"))
    });
    let mut before = ids(&repo.jobs());
    before.sort();
    let alive = ids(&repo.alive("data.store"));
    assert_eq!(alive.len(), 2);

    repo.write_stack("data", &service("b"));
    for args in [&["plan"][..], &["apply", "--auto-approve"]] {
        let error = repo.refused(args);
        assert!(
            error.contains("data.store is protected")
                && error.contains("replace 2 replicas create-first"),
            "{error}"
        );
    }
    // Under watch too: the service is refused, the pass fails, nothing is submitted.
    let output = repo.run(&["watch", "--local", "--once"]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains("data.store") && log.contains("reason=\"protected\""),
        "{log}"
    );
    repo.write_stack("data", &service("a"));
    for replace in ["data/store", "data/store#0"] {
        let error = repo.refused(&["apply", "--auto-approve", "--replace", replace]);
        assert!(
            error.contains("data.store is protected") && error.contains("create-first"),
            "{error}"
        );
    }
    let mut after = ids(&repo.jobs());
    after.sort();
    assert_eq!(
        after, before,
        "no job submitted, not even a lock placeholder"
    );
    assert_eq!(ids(&repo.alive("data.store")), alive, "nothing cancelled");
}
