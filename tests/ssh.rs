//! End-to-end: the CLI backend over SSH (`cluster.ssh`) against the test cluster's own sshd
//! (`scripts/slurm-dev-cluster` starts it on 127.0.0.1:16922 with a login user
//! `stackctl-ssh`). stackctl runs with a `PATH` holding nothing but `ssh`, so every Slurm
//! command it runs must have gone over SSH; the jobs it submits belong to `stackctl-ssh`.
//!
//! Covered: create, scale, replace and self-heal; byte-identical `plan --json` against the
//! local CLI run as the same user; two concurrent applies (one over SSH, one local) that never
//! exceed the desired replicas; and one clear line for each way SSH can fail.

mod common;

use common::{TestRepo, copy_dir, slurm_conf, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The test login node, as `scripts/slurm-dev-cluster` sets it up.
const SSH_DIR: &str = "/etc/stackctl-dev-slurm/ssh";
const SSH_PORT: u16 = 16922;
const SSH_USER: &str = "stackctl-ssh";

/// A job of the SSH user, as plain squeue shows it.
#[derive(Debug)]
struct UserJob {
    id: String,
    state: String,
    comment: String,
}

/// Every job of the SSH user (listed as root with `-u`, read-only), ended ones included.
fn user_jobs() -> Vec<UserJob> {
    let output = Command::new("squeue")
        .env("SLURM_CONF", slurm_conf())
        .args(["-u", SSH_USER, "-h", "-r", "-t", "all", "-o", "%i|%T|%k"])
        .output()
        .expect("squeue runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, '|');
            Some(UserJob {
                id: parts.next()?.to_owned(),
                state: parts.next()?.to_owned(),
                comment: parts.next()?.to_owned(),
            })
        })
        .collect()
}

/// A test repo whose stackctl reaches Slurm over SSH as `stackctl-ssh`; cancels its owner's
/// jobs (by id) when dropped.
struct SshRepo {
    repo: TestRepo,
    /// A directory holding only a link to `ssh`: stackctl's whole `PATH`.
    bin: PathBuf,
}

impl SshRepo {
    fn new(name: &str) -> SshRepo {
        let repo = TestRepo::new(name);
        Self::configure(&repo, &format!("{SSH_DIR}/known_hosts"), SSH_PORT, "");
        let bin = repo.path().join("ssh-only-bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(common::which("ssh"), bin.join("ssh")).unwrap();
        // The local run as the SSH user (plan comparison, concurrent applies) reads the repo.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(repo.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        SshRepo { repo, bin }
    }

    /// Writes `stackctl.yaml` for the login node; `extra_env` adds YAML to `cluster.ssh.env`.
    fn configure(repo: &TestRepo, known_hosts: &str, port: u16, extra_env: &str) {
        let owner = &repo.owner;
        std::fs::write(
            repo.path().join("stackctl.yaml"),
            format!(
                "owner: {owner}\n\
                 log_dir: ~/logs/{owner}\n\
                 cluster:\n  ssh:\n    host: 127.0.0.1\n    port: {port}\n    user: {SSH_USER}\n    \
                 identity_file: {SSH_DIR}/client_ed25519\n    known_hosts_file: {known_hosts}\n    \
                 env: {{SLURM_CONF: {}{extra_env}}}\n",
                slurm_conf()
            ),
        )
        .unwrap();
    }

    /// stackctl over SSH, with no Slurm command on `PATH` and no `SLURM_CONF` here.
    fn run(&self, args: &[&str]) -> Output {
        let mut command = self.repo.command(args);
        command.env_remove("SLURM_CONF").env("PATH", &self.bin);
        command.output().unwrap()
    }

    /// Runs a command that must exit with `code`; returns its stdout.
    fn expect(&self, args: &[&str], code: i32) -> String {
        common::stdout_of(&self.run(args), args, code)
    }

    /// stackctl with the local CLI backend, run as the SSH user (the same Slurm user).
    fn local_as_user(&self, args: &[&str]) -> Command {
        let dir = self.repo.path().join("local-config");
        std::fs::create_dir_all(&dir).unwrap();
        // The same repo, its config without `cluster.ssh`, and the same owner and log dir.
        let mut command = Command::new("runuser");
        command
            .args(["-u", SSH_USER, "--", env!("CARGO_BIN_EXE_stackctl")])
            .env("SLURM_CONF", slurm_conf())
            .env("NO_COLOR", "1")
            .env("HOME", "/var/lib/stackctl-dev-slurm/ssh-home")
            .arg("-C")
            .arg(self.local_copy())
            .args(args);
        command
    }

    /// A copy of the repo with the local backend: the same stacks, recipes, owner and logs.
    fn local_copy(&self) -> PathBuf {
        let copy = self.repo.path().join("local");
        let _ = std::fs::remove_dir_all(&copy);
        copy_dir(&self.repo.path().join("stacks"), &copy.join("stacks"));
        copy_dir(&self.repo.path().join("recipes"), &copy.join("recipes"));
        let owner = &self.repo.owner;
        std::fs::write(
            copy.join("stackctl.yaml"),
            format!("owner: {owner}\nlog_dir: ~/logs/{owner}\n"),
        )
        .unwrap();
        copy
    }

    /// This owner's jobs.
    fn jobs(&self) -> Vec<UserJob> {
        let tag = format!(";owner={};", self.repo.owner);
        user_jobs()
            .into_iter()
            .filter(|j| j.comment.contains(&tag))
            .collect()
    }

    /// This owner's alive jobs of `stack.service`.
    fn alive(&self, service: &str) -> Vec<UserJob> {
        let (stack, svc) = service.split_once('.').unwrap();
        let tag = format!(";stack={stack};svc={svc};");
        self.jobs()
            .into_iter()
            .filter(|j| j.comment.contains(&tag) && is_alive(&j.state))
            .collect()
    }
}

impl Drop for SshRepo {
    fn drop(&mut self) {
        let ids: Vec<String> = self
            .jobs()
            .into_iter()
            .filter(|j| is_alive(&j.state))
            .map(|j| j.id)
            .collect();
        common::scancel(&ids);
    }
}

fn is_alive(state: &str) -> bool {
    matches!(state, "PENDING" | "RUNNING" | "CONFIGURING" | "SUSPENDED")
}

fn sleepers(replicas: u32, mode: &str) -> String {
    format!(
        "services:\n  web:\n    recipe: test/sleeper\n    replicas: {replicas}\n    environment: {{MODE: {mode}}}\n"
    )
}

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
    let logs = Path::new("/var/lib/stackctl-dev-slurm/ssh-home/logs").join(&r.repo.owner);
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

/// Runs `plan` and returns its stderr, asserting exit 1 and one line of text.
fn one_line_failure(r: &SshRepo) -> String {
    let output = r.run(&["plan"]);
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
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
    let mismatch = one_line_failure(&r);
    assert!(mismatch.contains("does not match"), "{mismatch}");

    // A host key not known at all: never accepted on first use.
    let empty = r.repo.path().join("known_hosts_empty");
    std::fs::write(&empty, "").unwrap();
    SshRepo::configure(&r.repo, empty.to_str().unwrap(), SSH_PORT, "");
    let unknown = one_line_failure(&r);
    assert!(unknown.contains("is not in"), "{unknown}");

    // Nothing listening.
    let known = format!("{SSH_DIR}/known_hosts");
    SshRepo::configure(&r.repo, &known, 1, "");
    let refused = one_line_failure(&r);
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
    let no_slurm = one_line_failure(&r);
    assert!(no_slurm.contains("squeue"), "{no_slurm}");
    assert!(r.jobs().is_empty(), "nothing was submitted");
}
