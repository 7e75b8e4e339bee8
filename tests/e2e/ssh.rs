//! End-to-end: the CLI backend over SSH (`cluster.ssh`) against the test cluster's own sshd
//! (`scripts/slurm-dev-cluster` starts it on 127.0.0.1:16922 with a login user
//! `stackctl-ssh`). stackctl runs with a `PATH` holding nothing but `ssh`, so every Slurm
//! command it runs must have gone over SSH; the jobs it submits belong to `stackctl-ssh`.
//!
//! Covered: create, scale, replace and self-heal; byte-identical `plan --json` against the
//! local CLI run as the same user; two concurrent applies (one over SSH, one local) that never
//! exceed the desired replicas; and one clear line for each way SSH can fail.
#![cfg(feature = "cluster")]

use crate::common;

use common::ssh::{SSH_DIR, SSH_HOME, SSH_PORT, SshRepo};
use common::{sleepers, slurm_conf, wait_for};
use std::path::Path;
use std::process::Command;

#[test]
fn over_ssh_apply_creates_scales_replaces_and_heals() {
    let r = SshRepo::new("ssh-lifecycle");
    r.repo.write_stack("s", &sleepers(2, "a"));
    let plan = r.expect(&["plan"], 0);
    assert!(plan.contains("2 to add"), "{plan}");
    r.expect(&["apply", "--auto-approve"], 0);
    let first = r.alive("s.web");
    assert_eq!(first.len(), 2, "{first:?}");
    r.expect(&["plan", "--detailed-exitcode"], 0);
    // The log directory was made on the login node, in its user's home.
    let logs = Path::new(SSH_HOME).join("logs").join(&r.repo.owner);
    assert!(logs.is_dir(), "{} exists", logs.display());

    r.repo.write_stack("s", &sleepers(3, "a"));
    r.expect(&["apply", "--auto-approve"], 0);
    assert_eq!(r.alive("s.web").len(), 3);

    r.repo.write_stack("s", &sleepers(3, "b"));
    let replace = r.expect(&["plan"], 0);
    assert!(replace.contains("MODE"), "{replace}");
    r.expect(&["apply", "--auto-approve"], 0);
    let replaced = r.alive("s.web");
    assert_eq!(replaced.len(), 3, "{replaced:?}");
    assert!(
        replaced.iter().all(|j| first.iter().all(|f| f.id != j.id)),
        "every replica is a new job: {replaced:?} vs {first:?}"
    );

    // Self-heal: a replica cancelled by hand is submitted again.
    common::scancel(&[replaced[0].id.clone()]);
    wait_for("the cancelled replica to end", 30, || {
        r.alive("s.web").len() == 2
    });
    let heal = r.expect(&["plan"], 0);
    assert!(heal.contains("1 to add"), "{heal}");
    r.expect(&["apply", "--auto-approve"], 0);
    assert_eq!(r.alive("s.web").len(), 3);
    r.expect(&["plan", "--detailed-exitcode"], 0);
}

#[test]
fn ssh_and_local_plans_are_byte_identical_and_concurrent_applies_never_exceed_replicas() {
    let r = SshRepo::new("ssh-same-plan");
    r.repo.write_stack("s", &sleepers(2, "a"));
    r.expect(&["apply", "--auto-approve"], 0);
    // One replica gone and a scale-up: the plan has creates of both kinds.
    let alive = r.alive("s.web");
    common::scancel(&[alive[1].id.clone()]);
    wait_for("the cancelled replica to end", 30, || {
        r.alive("s.web").len() == 1
    });
    r.repo.write_stack("s", &sleepers(4, "a"));
    let over_ssh = r.expect(&["plan", "--json"], 0);
    let local = r.local_as_user(&["plan", "--json"]).output().unwrap();
    let local = common::stdout_of(&local, &["plan", "--json (local)"], 0);
    assert!(over_ssh.contains("\"add\": 3"), "{over_ssh}");
    // Byte for byte, but for the start estimates: both ask Slurm, and its answer (and when it
    // was asked) moves with the second each run asked in.
    let without_estimates = |text: &str| {
        let mut value: serde_json::Value = serde_json::from_str(text).unwrap();
        let mut estimates = 0;
        for change in value["changes"].as_array_mut().unwrap() {
            let change = change.as_object_mut().unwrap();
            estimates += usize::from(change.remove("start_estimate").is_some());
        }
        (serde_json::to_string_pretty(&value).unwrap(), estimates)
    };
    let (ssh_plan, ssh_estimates) = without_estimates(&over_ssh);
    let (local_plan, local_estimates) = without_estimates(&local);
    assert_eq!(ssh_plan, local_plan);
    assert_eq!((ssh_estimates, local_estimates), (3, 3), "{over_ssh}");

    // Both apply at once; the lock lets one converge and the other find nothing to do.
    let mut local = r
        .local_as_user(&["apply", "--auto-approve", "--lock-timeout", "60s"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ssh = r.expect(&["apply", "--auto-approve", "--lock-timeout", "60s"], 0);
    assert!(local.wait().unwrap().success());
    assert_eq!(r.alive("s.web").len(), 4, "{ssh}");
    r.expect(&["plan", "--detailed-exitcode"], 0);
}

/// Runs `plan` and returns its stderr, asserting exit `code` and one line of text.
fn one_line_failure(r: &SshRepo, code: i32) -> String {
    let output = r.run(&["plan"]);
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn ssh_failures_are_one_clear_line() {
    let r = SshRepo::new("ssh-failures");
    r.repo.write_stack("s", &sleepers(1, "a"));

    // A host key that is not the server's.
    let other = r.repo.path().join("other_host_key");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(keygen.success());
    let public = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let key: Vec<&str> = public.split_whitespace().take(2).collect();
    let wrong = r.repo.path().join("known_hosts_wrong");
    std::fs::write(
        &wrong,
        format!("[127.0.0.1]:{SSH_PORT} {}\n", key.join(" ")),
    )
    .unwrap();
    SshRepo::configure(&r.repo, wrong.to_str().unwrap(), SSH_PORT, "");
    // ssh's own failures exit 255, all alike: the login node is unreachable (exit 5).
    let mismatch = one_line_failure(&r, 5);
    assert!(mismatch.contains("does not match"), "{mismatch}");

    // A host key not known at all: never accepted on first use.
    let empty = r.repo.path().join("known_hosts_empty");
    std::fs::write(&empty, "").unwrap();
    SshRepo::configure(&r.repo, empty.to_str().unwrap(), SSH_PORT, "");
    let unknown = one_line_failure(&r, 5);
    assert!(unknown.contains("is not in"), "{unknown}");

    // Nothing listening.
    let known = format!("{SSH_DIR}/known_hosts");
    SshRepo::configure(&r.repo, &known, 1, "");
    let refused = one_line_failure(&r, 5);
    assert!(refused.contains("Connection refused"), "{refused}");

    // A login where Slurm is not usable.
    let broken = r.repo.path().join("no-such-slurm.conf");
    SshRepo::configure(&r.repo, &known, SSH_PORT, "");
    let text = std::fs::read_to_string(r.repo.path().join("stackctl.yaml")).unwrap();
    std::fs::write(
        r.repo.path().join("stackctl.yaml"),
        text.replace(&slurm_conf(), broken.to_str().unwrap()),
    )
    .unwrap();
    let no_slurm = one_line_failure(&r, 1);
    assert!(no_slurm.contains("squeue"), "{no_slurm}");
    assert!(r.jobs().is_empty(), "nothing was submitted");
}
