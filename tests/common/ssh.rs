//! The CLI backend over SSH (`cluster.ssh`) against the test cluster's own sshd
//! (`scripts/slurm-dev-cluster` starts it on 127.0.0.1:16922 with a login user
//! [`SSH_USER`]), and the same repo reached as that user through the local CLI and slurmrestd,
//! so the suites can compare or race all three on one owner's jobs.

use super::{Job, TestRepo, copy_dir, slurm_conf};
use std::path::PathBuf;
use std::process::{Command, Output};

/// The test login node's keys and `known_hosts`, as `scripts/slurm-dev-cluster` sets them up.
pub const SSH_DIR: &str = "/etc/stackctl-dev-slurm/ssh";
/// The test login node's sshd port.
pub const SSH_PORT: u16 = 16922;
/// The login user: every job submitted over SSH belongs to it.
pub const SSH_USER: &str = "stackctl-ssh";
/// The login user's home directory, where `~` in `log_dir` points over SSH.
pub const SSH_HOME: &str = "/var/lib/stackctl-dev-slurm/ssh-home";

/// A test repo whose stackctl reaches Slurm over SSH as [`SSH_USER`]; also runs it as that
/// user through the local CLI and through slurmrestd. Cancels its owner's jobs (by id, lock
/// placeholders included) and removes its log directory when dropped.
pub struct SshRepo {
    /// The repo: its `stackctl.yaml` names the login node.
    pub repo: TestRepo,
    /// A directory holding only a link to `ssh`: stackctl's whole `PATH`.
    bin: PathBuf,
}

impl SshRepo {
    /// A fresh repo (see [`TestRepo::new`]) configured for the login node.
    pub fn new(name: &str) -> SshRepo {
        let repo = TestRepo::new(name);
        Self::configure(&repo, &format!("{SSH_DIR}/known_hosts"), SSH_PORT, "");
        let bin = repo.path().join("ssh-only-bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(super::which("ssh"), bin.join("ssh")).unwrap();
        // The local run as the SSH user (plan comparison, concurrent applies) reads the repo.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(repo.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        SshRepo { repo, bin }
    }

    /// Writes `stackctl.yaml` for the login node; `extra_env` adds YAML to `cluster.ssh.env`.
    pub fn configure(repo: &TestRepo, known_hosts: &str, port: u16, extra_env: &str) {
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
    pub fn over_ssh(&self, args: &[&str]) -> Command {
        let mut command = self.repo.command(args);
        command.env_remove("SLURM_CONF").env("PATH", &self.bin);
        command
    }

    /// Runs stackctl over SSH to the end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.over_ssh(args).output().unwrap()
    }

    /// Runs a command over SSH that must exit with `code`; returns its stdout.
    pub fn expect(&self, args: &[&str], code: i32) -> String {
        super::stdout_of(&self.run(args), args, code)
    }

    /// stackctl with the local CLI backend, run as the SSH user (the same Slurm user), on a
    /// copy of the repo made now (see [`SshRepo::copy_with`]).
    pub fn local_as_user(&self, args: &[&str]) -> Command {
        let owner = &self.repo.owner;
        let copy = self.copy_with(
            "local",
            &format!("owner: {owner}\nlog_dir: ~/logs/{owner}\n"),
        );
        let mut command = Command::new("runuser");
        command
            .args(["-u", SSH_USER, "--", env!("CARGO_BIN_EXE_stackctl")])
            .env("SLURM_CONF", slurm_conf())
            .env("NO_COLOR", "1")
            .env("HOME", SSH_HOME)
            .arg("-C")
            .arg(copy)
            .args(args);
        command
    }

    /// stackctl over slurmrestd at `url` acting as the SSH user with `token` (minted for that
    /// user), on a copy of the repo made now, logging where `~/logs/<owner>` points over SSH.
    /// Creates that directory as the SSH user first: nothing over REST can.
    pub fn rest_as_user(&self, url: &str, token: &str, args: &[&str]) -> Command {
        let log_dir = self.log_dir();
        let made = Command::new("runuser")
            .args(["-u", SSH_USER, "--", "mkdir", "-p"])
            .arg(&log_dir)
            .status()
            .unwrap();
        assert!(
            made.success(),
            "mkdir -p {} as {SSH_USER}",
            log_dir.display()
        );
        let copy = self.copy_with("rest", "");
        super::rest::configure(&copy, &self.repo.owner, &log_dir, url, SSH_USER);
        super::rest::command(&copy, token, args)
    }

    /// A copy of the repo in `name/` with its own `stackctl.yaml` (`config`): the same stacks
    /// and recipes as now, so the same desired state. Made afresh on every call.
    fn copy_with(&self, name: &str, config: &str) -> PathBuf {
        let copy = self.repo.path().join(name);
        let _ = std::fs::remove_dir_all(&copy);
        copy_dir(&self.repo.path().join("stacks"), &copy.join("stacks"));
        copy_dir(&self.repo.path().join("recipes"), &copy.join("recipes"));
        std::fs::write(copy.join("stackctl.yaml"), config).unwrap();
        copy
    }

    /// Where `~/logs/<owner>` points on the login node.
    pub fn log_dir(&self) -> PathBuf {
        PathBuf::from(SSH_HOME).join("logs").join(&self.repo.owner)
    }

    /// This owner's jobs of the SSH user (replicas and lock placeholders), ended ones included.
    pub fn jobs(&self) -> Vec<Job> {
        super::of_owner(super::user_jobs(SSH_USER), &self.repo.owner)
    }

    /// This owner's alive jobs of `stack.service`, sorted by replica index.
    pub fn alive(&self, service: &str) -> Vec<Job> {
        super::alive_of(self.jobs(), service)
    }

    /// The replica indexes (array task ids) of this owner's alive jobs of `stack.service`,
    /// sorted: an index submitted twice shows twice.
    pub fn indexes(&self, service: &str) -> Vec<u32> {
        super::indexes_of(&self.alive(service))
    }

    /// This owner's alive lock placeholders, the holder first.
    pub fn locks(&self) -> Vec<Job> {
        super::lock_placeholders(self.jobs(), &self.repo.owner)
    }
}

impl Drop for SshRepo {
    fn drop(&mut self) {
        let ids: Vec<String> = self
            .jobs()
            .into_iter()
            .filter(Job::alive)
            .map(|j| j.id)
            .collect();
        super::scancel(&ids);
        let _ = std::fs::remove_dir_all(self.log_dir());
    }
}
