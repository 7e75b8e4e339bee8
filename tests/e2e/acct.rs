//! End-to-end tests of one-shot jobs' runs past Slurm's memory (MinJobAge), with and without
//! accounting, against the real Slurm test cluster (`scripts/slurm-dev-cluster up` runs
//! slurmdbd with `AccountingStoreFlags=job_comment`, and MinJobAge=120 s).
//!
//! With accounting, a completed job whose completion record is deleted is still done: `sacct`
//! knows the run after squeue forgot it, so nothing is rerun; the same repo with
//! `cluster.accounting: off` then runs it (only accounting knew it). Without accounting
//! (`cluster.accounting: off`, the honest stand-in for a cluster without slurmdbd, since the
//! shared test cluster has it), the record alone keeps the job done, and once the record is
//! gone the job runs again.
//!
//! The tests wait for Slurm to forget the run (MinJobAge 120 s plus slurmctld's purge pass),
//! a few minutes; no shortcut exists (`scontrol` cannot purge an ended job). Every test has its
//! own owner and cancels only its own job ids (see `common::TestRepo`).
#![cfg(feature = "cluster")]

use crate::common;

use common::ssh::SshRepo;
use common::*;
use std::process::Command;

/// A job that ends at once with one metric.
const QUICK: &str = "name: quick\ncommand: |\n  echo '{\"n\": 7}' > \"$STACKCTL_RESULTS_DIR/results.json\"\nresources: {cpu: 1, memory: 64M, time_limit: 5}\n";

const STACK: &str = "services:\n  once:\n    kind: job\n    recipe: test/quick\n";

fn repo(name: &str) -> TestRepo {
    let repo = TestRepo::new(name);
    let file = repo.path().join("recipes/test/quick.yaml");
    std::fs::write(file, QUICK).unwrap();
    repo.write_stack("a", STACK);
    repo
}

/// The jobs of `a.once` squeue still lists, any state.
fn listed(repo: &TestRepo) -> Vec<Job> {
    repo.jobs()
        .into_iter()
        .filter(|j| j.comment.contains(";stack=a;svc=once;"))
        .collect()
}

/// What plain `sacct` says of one job (state and comment), with the test's own command line.
fn sacct(job_id: &str) -> String {
    let out = Command::new("sacct")
        .args([
            "-n",
            "-P",
            "-X",
            "--format=JobID,State,Comment",
            "-j",
            job_id,
        ])
        .env("SLURM_CONF", slurm_conf())
        .output()
        .expect("sacct runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Applies, waits for the one run to complete and for squeue to forget it; returns its job id.
fn run_once_and_wait_until_forgotten(repo: &TestRepo) -> String {
    let out = repo.apply();
    assert!(out.contains("a.once: run"), "{out}");
    let jobs = listed(repo);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let id = jobs[0].id.clone();
    wait_for("the run to complete", 400, || {
        listed(repo)
            .iter()
            .any(|j| j.id == id && j.state == "COMPLETED")
    });
    // Until squeue forgets the job, its listing alone would tell the run.
    wait_for("Slurm to forget the run (MinJobAge)", 600, || {
        !listed(repo).iter().any(|j| j.id == id)
    });
    id
}

#[test]
fn with_accounting_a_completed_job_is_not_rerun_after_min_job_age_even_without_its_record() {
    let repo = repo("acct");
    let id = run_once_and_wait_until_forgotten(&repo);
    // Accounting has the run, with stackctl's marker in its comment.
    let known = sacct(&id);
    assert!(
        known.contains("COMPLETED") && known.contains(&format!("owner={};", repo.owner)),
        "sacct does not know {id} with its marker (is accounting on? `scripts/slurm-dev-cluster up`): {known}"
    );

    // The record is deleted: only accounting knows the run now.
    std::fs::remove_dir_all(repo.results_dir("a.once")).unwrap();
    let plan = repo.expect(&["plan", "--detailed-exitcode"], 0);
    assert!(plan.contains("a.once: done at"), "{plan}");
    assert!(plan.contains(&format!("(job {id})")), "{plan}");
    let out = repo.apply();
    assert!(out.contains("a.once: done at"), "{out}");
    assert!(listed(&repo).is_empty(), "nothing submitted");
    assert!(!repo.results_dir("a.once").exists(), "nothing ran");

    // status: the last run, from accounting (no record, so no metrics).
    let json = repo.expect(&["status", "--json"], 0);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["format_version"], "1.6");
    let job = doc["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "a.once")
        .unwrap_or_else(|| panic!("{json}"))
        .clone();
    assert_eq!(job["plan"]["state"], "done", "{json}");
    assert_eq!(job["last_run"]["job_id"], id.as_str(), "{json}");
    assert_eq!(job["last_run"]["state"], "COMPLETED", "{json}");
    assert_eq!(job["last_run"]["exit"], 0, "{json}");
    assert_eq!(job["last_run"]["metrics"], serde_json::json!({}), "{json}");
    let text = repo.expect(&["status"], 0);
    assert!(text.contains("a.once: done at"), "{text}");

    // Control: without accounting nothing else knows the run, so the same repo runs it.
    repo.append_settings("cluster:\n  accounting: off\n");
    let plan = repo.expect(&["plan"], 0);
    assert!(plan.contains("a.once: run"), "{plan}");
}

#[test]
fn without_accounting_the_record_alone_keeps_a_completed_job_done_after_min_job_age() {
    let repo = repo("noacct");
    repo.append_settings("cluster:\n  accounting: off\n");
    let id = run_once_and_wait_until_forgotten(&repo);

    let plan = repo.expect(&["plan", "--detailed-exitcode"], 0);
    assert!(plan.contains("a.once: done at"), "{plan}");
    assert!(plan.contains(&format!("(job {id})")), "{plan}");
    let out = repo.apply();
    assert!(out.contains("a.once: done at"), "{out}");
    assert!(listed(&repo).is_empty(), "nothing submitted");

    // status: the last run from its record, with its metrics.
    let json = repo.expect(&["status", "--json"], 0);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let job = doc["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "a.once")
        .unwrap_or_else(|| panic!("{json}"))
        .clone();
    assert_eq!(job["plan"]["state"], "done", "{json}");
    assert_eq!(job["last_run"]["job_id"], id.as_str(), "{json}");
    assert_eq!(job["last_run"]["state"], "COMPLETED", "{json}");
    assert_eq!(job["last_run"]["metrics"]["n"], 7.0, "{json}");
    let text = repo.expect(&["status"], 0);
    assert!(text.contains("metrics: n=7"), "{text}");

    // The record was all that knew the run: without it the job runs again.
    std::fs::remove_dir_all(repo.results_dir("a.once")).unwrap();
    let plan = repo.expect(&["plan"], 0);
    assert!(plan.contains("a.once: run"), "{plan}");
}

#[test]
fn over_ssh_with_accounting_a_job_is_planned_and_its_forgotten_run_known_from_sacct() {
    let r = SshRepo::new("acct-ssh");
    std::fs::write(r.repo.path().join("recipes/test/quick.yaml"), QUICK).unwrap();
    r.repo.write_stack("a", STACK);
    let mine = |r: &SshRepo| -> Vec<Job> {
        r.jobs()
            .into_iter()
            .filter(|j| j.comment.contains(";stack=a;svc=once;"))
            .collect()
    };
    let out = r.expect(&["apply", "--auto-approve"], 0);
    assert!(out.contains("a.once: run"), "{out}");
    let jobs = mine(&r);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let id = jobs[0].id.clone();
    wait_for("the run to complete", 400, || {
        mine(&r)
            .iter()
            .any(|j| j.id == id && j.state == "COMPLETED")
    });
    wait_for("Slurm to forget the run (MinJobAge)", 600, || {
        !mine(&r).iter().any(|j| j.id == id)
    });
    // Over SSH the records stay on the login node: sacct, run there, is what knows the run.
    let plan = r.expect(&["plan", "--detailed-exitcode"], 0);
    assert!(plan.contains("a.once: done at"), "{plan}");
    assert!(plan.contains(&format!("(job {id})")), "{plan}");
    let out = r.expect(&["apply", "--auto-approve"], 0);
    assert!(out.contains("a.once: done at"), "{out}");
    assert!(mine(&r).is_empty(), "nothing submitted");

    // Without accounting nothing here can know the runs: refused, as before accounting.
    let config = r.repo.path().join("stackctl.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("cluster:\n", "cluster:\n  accounting: off\n"),
    )
    .unwrap();
    let output = r.run(&["plan"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot be read yet"), "{stderr}");
}
