//! The CLI adapter's way to a login node: the system `ssh` runs the same `squeue`, `sbatch`,
//! `scancel` and `scontrol` there.
//!
//! - **One connection per session**: the first command opens an OpenSSH control master
//!   (`ControlMaster=auto`, socket in a private temporary directory) that every later command
//!   of the session reuses; dropping the session closes it (`ssh -O exit`), and a master left
//!   behind by a killed stackctl exits by itself after [`CONTROL_PERSIST`] idle.
//! - **Nothing is interpolated**: the remote command line is built from single-quoted words
//!   ([`remote_command`]); a batch script goes on stdin, never on the command line; host and
//!   user are validated when `stackctl.yaml` is loaded, so neither can pass for an option.
//! - **Host keys are always checked** (`StrictHostKeyChecking=yes`, `BatchMode=yes`: no
//!   prompt, no key accepted on first use), against `known_hosts_file` when it is set.
//! - **ssh's own failures** (exit 255: unreachable, refused key, host key mismatch) become one
//!   line naming the host ([`ssh_failure`]).

use crate::desired::SshTarget;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::process::Command;

/// How long a control master left without clients stays up, in seconds.
pub const CONTROL_PERSIST: u32 = 60;

/// The exit status ssh uses for its own errors.
pub const SSH_FAILURE_STATUS: i32 = 255;

/// How many commands may run at once over one login node's connection: sshd's default
/// `MaxSessions` is 10, and a few are left for anything else sharing the connection.
pub const MAX_SESSIONS_IN_FLIGHT: usize = 8;

/// A login node and the control master shared by this process's commands to it.
#[derive(Debug)]
pub struct SshSession {
    target: SshTarget,
    /// Private directory holding the control socket; removed on drop.
    control_dir: tempfile::TempDir,
}

impl SshSession {
    /// A session to `target`; nothing connects until the first command.
    pub fn new(target: SshTarget) -> std::io::Result<SshSession> {
        let control_dir = tempfile::Builder::new().prefix("stackctl-ssh-").tempdir()?;
        Ok(SshSession {
            target,
            control_dir,
        })
    }

    /// The host as messages name it: `user@host:port`, with only what is set.
    pub fn destination(&self) -> String {
        let t = &self.target;
        let mut text = String::new();
        if let Some(user) = &t.user {
            text.push_str(user);
            text.push('@');
        }
        text.push_str(&t.host);
        if let Some(port) = t.port {
            text.push_str(&format!(":{port}"));
        }
        text
    }

    /// The `ssh` arguments that run `program args` on the login node, every variable of
    /// `cluster.ssh.env` and `extra_env` exported first.
    pub fn args(&self, program: &str, args: &[&str], extra_env: &[(&str, &str)]) -> Vec<OsString> {
        let mut argv = self.options();
        let mut env: BTreeMap<&str, &str> = self
            .target
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.extend(extra_env.iter().copied());
        argv.push("--".into());
        argv.push(self.target.host.clone().into());
        argv.push(remote_command(&env, program, args).into());
        argv
    }

    /// The options every ssh call of this session gets.
    fn options(&self) -> Vec<OsString> {
        let t = &self.target;
        let mut argv: Vec<OsString> = Vec::new();
        let mut option = |text: String| {
            argv.push("-o".into());
            argv.push(text.into());
        };
        option("BatchMode=yes".into());
        option("StrictHostKeyChecking=yes".into());
        option("ControlMaster=auto".into());
        option(format!(
            "ControlPath={}/%C",
            self.control_dir.path().display()
        ));
        option(format!("ControlPersist={CONTROL_PERSIST}"));
        option("ConnectTimeout=15".into());
        option("ServerAliveInterval=15".into());
        option("ServerAliveCountMax=3".into());
        option("LogLevel=ERROR".into());
        if let Some(file) = &t.known_hosts_file {
            option(format!("UserKnownHostsFile={}", file.display()));
        }
        if let Some(file) = &t.identity_file {
            option("IdentitiesOnly=yes".into());
            option(format!("IdentityFile={}", file.display()));
        }
        if let Some(user) = &t.user {
            option(format!("User={user}"));
        }
        if let Some(port) = t.port {
            option(format!("Port={port}"));
        }
        argv.push("-T".into());
        argv
    }

    /// The one-line message for an ssh failure (exit 255) whose stderr is `stderr`.
    pub fn failure(&self, stderr: &str) -> String {
        ssh_failure(
            &self.destination(),
            self.target.known_hosts_file.as_deref(),
            stderr,
        )
    }
}

impl Drop for SshSession {
    /// Closes the control master, if one was opened.
    fn drop(&mut self) {
        let mut argv = self.options();
        argv.extend(["-O".into(), "exit".into(), self.target.host.clone().into()]);
        let _ = Command::new("ssh")
            .args(argv)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Returns `text` as one POSIX shell word: single-quoted, each `'` written as `'\''`.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The command line the login node's shell runs: `env 'K=V'… 'program' 'arg'…`, every word
/// quoted, so no value is ever read as shell syntax. Pure.
pub fn remote_command(env: &BTreeMap<&str, &str>, program: &str, args: &[&str]) -> String {
    let mut words = vec!["env".to_owned()];
    words.extend(env.iter().map(|(k, v)| quote(&format!("{k}={v}"))));
    words.push(quote(program));
    words.extend(args.iter().map(|a| quote(a)));
    words.join(" ")
}

/// One line saying why ssh itself failed to reach `destination`, from its stderr. Pure.
pub fn ssh_failure(
    destination: &str,
    known_hosts: Option<&std::path::Path>,
    stderr: &str,
) -> String {
    let known_hosts = known_hosts.map_or_else(
        || "your known_hosts".to_owned(),
        |p| p.display().to_string(),
    );
    if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        return format!(
            "ssh to {destination}: its host key does not match the one in {known_hosts}; \
             someone may be intercepting the connection, or the host was reinstalled \
             (nothing was run there)"
        );
    }
    if stderr.contains("Host key verification failed") {
        return format!(
            "ssh to {destination}: its host key is not in {known_hosts}, and host keys are \
             always checked; add it after verifying its fingerprint (nothing was run there)"
        );
    }
    let line = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('@'))
        .collect::<Vec<_>>()
        .join("; ");
    if line.is_empty() {
        format!("ssh to {destination} failed (exit {SSH_FAILURE_STATUS})")
    } else {
        format!("ssh to {destination}: {line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_every_character_literal() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(rm -rf ~); `x`"), "'$(rm -rf ~); `x`'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn remote_command_exports_then_runs_quoted_words() {
        let env = BTreeMap::from([("SLURM_CONF", "/etc/slurm x.conf"), ("A", "it's")]);
        assert_eq!(
            remote_command(&env, "squeue", &["-h", "--format=%i|%k"]),
            r"env 'A=it'\''s' 'SLURM_CONF=/etc/slurm x.conf' 'squeue' '-h' '--format=%i|%k'"
        );
        assert_eq!(
            remote_command(&BTreeMap::new(), "scancel", &[]),
            "env 'scancel'"
        );
    }

    #[test]
    fn the_session_checks_host_keys_multiplexes_and_ends_with_the_command() {
        let session = SshSession::new(SshTarget {
            host: "login1".into(),
            user: Some("alice".into()),
            port: Some(2222),
            identity_file: Some("/k/id".into()),
            known_hosts_file: Some("/k/known".into()),
            env: BTreeMap::from([("SLURM_CONF".into(), "/s.conf".into())]),
        })
        .unwrap();
        let argv: Vec<String> = session
            .args("sbatch", &["--parsable"], &[("SLURM_TIME_FORMAT", "%s")])
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        for expected in [
            "StrictHostKeyChecking=yes",
            "BatchMode=yes",
            "ControlMaster=auto",
            "UserKnownHostsFile=/k/known",
            "IdentityFile=/k/id",
            "User=alice",
            "Port=2222",
        ] {
            assert!(argv.iter().any(|a| a == expected), "{expected} in {argv:?}");
        }
        assert_eq!(
            &argv[argv.len() - 3..],
            [
                "--",
                "login1",
                "env 'SLURM_CONF=/s.conf' 'SLURM_TIME_FORMAT=%s' 'sbatch' '--parsable'"
            ]
        );
        assert_eq!(session.destination(), "alice@login1:2222");
    }

    #[test]
    fn ssh_failures_are_one_line_naming_the_host() {
        let changed = "@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
                       @@@@@@@@@@@\nIT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n\
                       Host key verification failed.\n";
        let message = ssh_failure("h:22", Some("/k/known".as_ref()), changed);
        assert!(
            message.contains("does not match the one in /k/known"),
            "{message}"
        );
        assert!(!message.contains('\n'));
        let unknown = ssh_failure("h", None, "Host key verification failed.\n");
        assert!(unknown.contains("is not in your known_hosts"), "{unknown}");
        let refused = ssh_failure(
            "h:1",
            None,
            "ssh: connect to host h port 1: Connection refused\r\n",
        );
        assert_eq!(
            refused,
            "ssh to h:1: ssh: connect to host h port 1: Connection refused"
        );
        assert_eq!(ssh_failure("h", None, ""), "ssh to h failed (exit 255)");
    }
}
