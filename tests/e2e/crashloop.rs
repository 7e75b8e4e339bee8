//! End-to-end test of crash-loop backoff against the real Slurm test cluster: a service that
//! exits 1 is recreated by successive applies with growing `--begin` delays, the plan shows the
//! restart count and the next allowed time, status shows the last exit and the stderr tail, and
//! fixing the recipe replaces the replica at once.
//!
//! `max_backoff` is 2m rather than 20s: on the test cluster even `exit 1` runs about 61 s from
//! Slurm's StartTime to its EndTime (launch and teardown), and a job that ran longer than
//! `max_backoff` starts the count over, so with 20s every failure would be restart 1.
//!
//! The test has its own owner and cancels only its own job ids (see `common::TestRepo`).
#![cfg(feature = "cluster")]

use crate::common;

use common::*;
use std::process::Command;

const CRASH: &str = "name: crash\ncommand: |\n  echo \"boom from replica $STACKCTL_REPLICA\" >&2\n  exit 1\nresources: {cpu: 1, memory: 64M, time_limit: 15}\nrestart: {backoff: 2s, max_backoff: 2m}\n";

const FIXED: &str = "name: crash\ncommand: exec sleep 600\nresources: {cpu: 1, memory: 64M, time_limit: 15}\nrestart: {backoff: 2s, max_backoff: 2m}\n";

fn write_recipe(repo: &TestRepo, text: &str) {
    let file = repo.path().join("recipes/test/crash.yaml");
    std::fs::write(file, text).unwrap();
}

/// `StartTime` (while pending behind `--begin`: the begin time; once started, the start) and
/// `EndTime` of one job, unix seconds, from plain squeue. (`EligibleTime` stays `N/A` until
/// the begin time has passed.)
fn times(job_id: &str) -> (Option<i64>, Option<i64>) {
    let output = Command::new("squeue")
        .env("SLURM_CONF", slurm_conf())
        .env("SLURM_TIME_FORMAT", "%s")
        .args([
            "-h",
            "-t",
            "all",
            "-j",
            job_id,
            "-O",
            "StartTime:|,EndTime:|",
        ])
        .output()
        .expect("squeue runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut fields = text.trim().split('|');
    let mut next = || fields.next().and_then(|f| f.trim().parse().ok());
    (next(), next())
}

/// The service's one job with the highest id, ended ones included.
fn latest(repo: &TestRepo) -> Job {
    let mut jobs: Vec<Job> = repo
        .jobs()
        .into_iter()
        .filter(|j| j.comment.contains(";svc=app;"))
        .collect();
    jobs.sort_by_key(|j| {
        let (array, _) = j.id.split_once('_').unwrap_or((&j.id, ""));
        array.parse::<u64>().unwrap()
    });
    jobs.pop().expect("the service has a job")
}

fn wait_failed(repo: &TestRepo, id: &str) -> Job {
    let mut job = None;
    wait_for(&format!("job {id} to fail"), 240, || {
        let now = latest(repo);
        let done = now.id == id && now.state == "FAILED";
        job = Some(now);
        done
    });
    job.unwrap()
}

#[test]
fn a_crashing_service_backs_off_with_growing_delays_until_its_recipe_is_fixed() {
    let repo = TestRepo::new("crashloop");
    write_recipe(&repo, CRASH);
    repo.write_stack("web", "services:\n  app:\n    recipe: test/crash\n");
    repo.apply();
    let mut previous = latest(&repo);
    assert!(
        !previous.comment.contains("restarts="),
        "{}",
        previous.comment
    );
    previous = wait_failed(&repo, &previous.id.clone());
    // Read at once: Slurm forgets an ended job after MinJobAge.
    let mut ended = times(&previous.id).1;

    let mut gaps = Vec::new();
    for restart in 1..=4u32 {
        let plan = repo.expect(&["plan", "--detailed-exitcode"], 2);
        assert!(
            plan.contains("FAILED (recreate: ended FAILED exit 1 at ")
                && plan.contains(&format!("; restart {restart}, ")),
            "{plan}"
        );
        repo.apply();
        let successor = latest(&repo);
        assert_ne!(successor.id, previous.id, "a successor was submitted");
        assert!(
            successor
                .comment
                .contains(&format!(";restarts={restart};fail=FAILED:1:")),
            "{}",
            successor.comment
        );
        // A successor submitted once its backoff had already passed (no `--begin`) shows no
        // StartTime until the scheduler has looked at it.
        wait_for("the successor's StartTime", 60, || {
            times(&successor.id).0.is_some()
        });
        let (eligible, _) = times(&successor.id);
        let gap = eligible.unwrap() - ended.expect("the failed job's EndTime");
        gaps.push(gap);
        // While it waits, plan says so and exits 2, apply submits nothing more.
        if successor.state == "PENDING" && restart >= 3 {
            let plan = repo.expect(&["plan", "--detailed-exitcode"], 2);
            assert!(plan.contains("backing off until"), "{plan}");
            repo.apply();
            assert_eq!(
                latest(&repo).id,
                successor.id,
                "nothing submitted while backing off"
            );
        }
        previous = wait_failed(&repo, &successor.id);
        ended = times(&previous.id).1;
    }
    eprintln!("gaps between a failure and its successor's begin time: {gaps:?} s");
    // 2 s, 4 s, 8 s, 16 s, each ± 10%, less 1 s of rounding; more when the delay had passed
    // before apply submitted (then it starts at once).
    for (i, gap) in gaps.iter().enumerate() {
        let base = 2i64 << i;
        assert!(
            *gap >= base * 9 / 10 - 1 && *gap <= base * 11 / 10 + 6,
            "gap {i} = {gap}, expected about {base}: {gaps:?}"
        );
    }
    assert!(gaps[3] > gaps[2] && gaps[2] > gaps[1], "{gaps:?}");

    // Status shows the crash loop, the last exit and the failed job's stderr.
    let status = repo.expect(&["status"], 0);
    assert!(
        status.contains("web.app[0] crash loop: 4 restarts, last exit 1 (FAILED at "),
        "{status}"
    );
    assert!(status.contains("| boom from replica 0"), "{status}");

    // Fixing the recipe replaces it at once: no begin time, no restart count, and it runs.
    write_recipe(&repo, FIXED);
    repo.apply();
    let fixed = latest(&repo);
    assert!(!fixed.comment.contains("begin="), "{}", fixed.comment);
    assert!(!fixed.comment.contains("restarts="), "{}", fixed.comment);
    wait_for("the fixed replica to run", 240, || {
        latest(&repo).state == "RUNNING"
    });
    repo.assert_converged();
}

/// A service whose process exits 0 ends COMPLETED. A service is not supposed to end: it is
/// restarted with the same backoff and the same attempt count as a failure, and once
/// `max_attempts` restarts have ended too, no pass submits another (before, every pass
/// resubmitted it at once, forever).
#[test]
fn a_service_that_exits_0_backs_off_and_stops_at_max_attempts_like_a_failure() {
    let repo = TestRepo::new("exit-zero");
    write_recipe(
        &repo,
        "name: crash\ncommand: |\n  echo \"done already\"\n  exit 0\nresources: {cpu: 1, memory: 64M, time_limit: 15}\nrestart: {backoff: 3s, max_backoff: 2m, max_attempts: 1}\n",
    );
    repo.write_stack("web", "services:\n  app:\n    recipe: test/crash\n");
    repo.apply();
    let first = latest(&repo);
    wait_for("the first job to complete", 240, || {
        latest(&repo).state == "COMPLETED"
    });
    let plan = repo.expect(&["plan", "--detailed-exitcode"], 2);
    assert!(
        plan.contains("COMPLETED (recreate: ended COMPLETED exit 0 at ")
            && plan.contains("; restart 1"),
        "{plan}"
    );
    repo.apply();
    let successor = latest(&repo);
    assert_ne!(successor.id, first.id, "a successor was submitted");
    assert!(
        successor.comment.contains(";restarts=1;fail=COMPLETED:0:"),
        "{}",
        successor.comment
    );
    // While it has not ended, another pass submits nothing.
    if successor.alive() {
        repo.apply();
        assert_eq!(latest(&repo).id, successor.id);
    }
    wait_for("the successor to complete", 240, || {
        let now = latest(&repo);
        now.id == successor.id && now.state == "COMPLETED"
    });
    // max_attempts: 1 was its one restart: the policy gives up, and no pass submits again.
    let plan = repo.expect(&["plan", "--detailed-exitcode"], 2);
    assert!(plan.contains("gave up after 1 restart"), "{plan}");
    repo.apply();
    repo.apply();
    assert_eq!(latest(&repo).id, successor.id, "nothing more was submitted");
}
