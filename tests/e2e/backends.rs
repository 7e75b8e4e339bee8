//! End-to-end: the three backends on one owner's jobs at once — the local CLI, the CLI over
//! SSH and slurmrestd — all acting as the same Slurm user (`stackctl-ssh`: stackctl lists,
//! and so locks, that user's jobs only). The local CLI runs as that user through `runuser`,
//! SSH logs in as it, and REST carries a token minted for it.
//!
//! Covered: three applies started together, one through each backend, converge to exactly the
//! desired replicas (each index once), one of them applying and the other two finding nothing
//! left to do; and a lock held through SSH that stops an apply through REST and one through the
//! local CLI (`--lock-timeout 2s`: exit 1, one line naming the holder) until it is released,
//! or removed with `force-unlock` through REST.
#![cfg(feature = "cluster")]

use crate::common;

use common::ssh::{SSH_DIR, SSH_PORT, SSH_USER, SshRepo};
use common::{Job, sleepers, stdout_of, wait_for};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What `plan` and an apply with nothing to do print.
const NO_CHANGES: &str = "No changes. Your cluster matches the configuration.";

/// A way to reach Slurm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Local,
    Ssh,
    Rest,
}

const ALL: [Via; 3] = [Via::Local, Via::Ssh, Via::Rest];

/// A repo of the SSH user's jobs and a REST token for that user.
struct Backends {
    r: SshRepo,
    jwt: String,
    /// The local CLI's `PATH`, when it is not this process's.
    local_path: Option<String>,
    /// Where slurmrestd is reached: the test cluster's, or a proxy in front of it.
    rest_url: String,
}

impl Backends {
    fn new(name: &str) -> Backends {
        Backends {
            r: SshRepo::new(name),
            jwt: common::rest::token(SSH_USER, 900),
            local_path: None,
            rest_url: common::rest::REST_URL.to_owned(),
        }
    }

    /// Makes every real submit, through any backend, wait `seconds` first
    /// ([`common::slow_submits`], [`common::rest::slow_submits_proxy`]).
    fn slow_submits(&mut self, seconds: u32) {
        self.rest_url = common::rest::slow_submits_proxy(Duration::from_secs(seconds.into()));
        let path = common::slow_submits(&self.r.repo.path().join("slow"), seconds);
        let known_hosts = format!("{SSH_DIR}/known_hosts");
        SshRepo::configure(
            &self.r.repo,
            &known_hosts,
            SSH_PORT,
            &format!(", PATH: '{path}'"),
        );
        self.local_path = Some(path);
    }

    /// `stackctl args` through `via`, on the repo's stacks as they are now.
    fn command(&self, via: Via, args: &[&str]) -> Command {
        match via {
            Via::Local => {
                let mut command = self.r.local_as_user(args);
                if let Some(path) = &self.local_path {
                    command.env("PATH", path);
                }
                command
            }
            Via::Ssh => self.r.over_ssh(args),
            Via::Rest => self.r.rest_as_user(&self.rest_url, &self.jwt, args),
        }
    }

    fn run(&self, via: Via, args: &[&str]) -> Output {
        self.command(via, args).output().unwrap()
    }

    /// Runs `args` through `via`, which must exit with `code`; returns its stdout.
    fn expect(&self, via: Via, args: &[&str], code: i32) -> String {
        stdout_of(
            &self.run(via, args),
            &[&format!("{via:?}"), &args.join(" ")],
            code,
        )
    }

    /// This owner's alive replicas (lock placeholders left out), any service.
    fn replicas(&self) -> Vec<Job> {
        self.r
            .jobs()
            .into_iter()
            .filter(|j| j.alive() && j.comment.starts_with("stackctl/v1;"))
            .collect()
    }

    /// The ids of this owner's alive lock placeholders, the holder first.
    fn lock_ids(&self) -> Vec<String> {
        self.r.locks().into_iter().map(|j| j.id).collect()
    }
}

fn two_services(web: u32, api: u32) -> String {
    format!(
        "services:\n  web:\n    recipe: test/sleeper\n    replicas: {web}\n  \
         api:\n    recipe: test/sleeper\n    replicas: {api}\n"
    )
}

/// Starts one `apply --auto-approve --lock-timeout 120s` through each backend together and
/// waits for all three; then `s.web` and `s.api` must run exactly indexes `0..web` and
/// `0..api`, with no other replica of this owner alive and no lock left.
///
/// The timeout is far longer than an apply takes, so (see `lock.rs`) a contender that finds
/// another's lock withdraws its placeholder and waits, takes the lock once it is released,
/// plans again under it and finds nothing to do: every apply exits 0, exactly one reports
/// `added` jobs, the other two print no changes, and so does a plan through
/// each backend afterwards. (Without the lock, all three would plan before the first slowed
/// submit lands, and each would submit.)
fn race(b: &Backends, web: u32, api: u32, added: u32) {
    let args = ["apply", "--auto-approve", "--lock-timeout", "120s"];
    // The copies for the local CLI and REST are made before anything starts.
    let mut commands: Vec<(Via, Command)> = ALL.map(|via| (via, b.command(via, &args))).into();
    let children: Vec<(Via, std::process::Child)> = commands
        .iter_mut()
        .map(|(via, command)| {
            let child = command
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (*via, child)
        })
        .collect();
    let outputs: Vec<(Via, String)> = children
        .into_iter()
        .map(|(via, child)| {
            let output = child.wait_with_output().unwrap();
            let stdout = stdout_of(&output, &[&format!("{via:?}"), &args.join(" ")], 0);
            (via, stdout)
        })
        .collect();

    assert_eq!(
        b.r.indexes("s.web"),
        (0..web).collect::<Vec<_>>(),
        "{outputs:#?}"
    );
    assert_eq!(
        b.r.indexes("s.api"),
        (0..api).collect::<Vec<_>>(),
        "{outputs:#?}"
    );
    let replicas = b.replicas();
    assert_eq!(replicas.len(), (web + api) as usize, "{replicas:#?}");
    assert!(b.lock_ids().is_empty(), "every lock was released");

    let summary = format!("Apply complete! Jobs: {added} added, 0 changed, 0 destroyed.");
    let applied = outputs.iter().filter(|(_, out)| out.contains(&summary));
    let idle = outputs
        .iter()
        .filter(|(_, out)| out.contains(NO_CHANGES) && !out.contains("Apply complete!"));
    assert_eq!(
        (applied.count(), idle.count()),
        (1, 2),
        "one apply converges, the others find nothing to do: {outputs:#?}"
    );
    for via in ALL {
        let plan = b.expect(via, &["plan", "--detailed-exitcode"], 0);
        assert!(plan.contains(NO_CHANGES), "{via:?}: {plan}");
    }
}

#[test]
fn three_applies_at_once_through_local_ssh_and_rest_never_exceed_the_replicas() {
    let mut b = Backends::new("backends-race");
    b.slow_submits(3);
    // From nothing: every replica is a create.
    b.r.repo.write_stack("s", &two_services(3, 2));
    race(&b, 3, 2, 5);

    // A replica cancelled by hand and a scale-up, both at once.
    let web = b.r.alive("s.web");
    common::scancel(&[web[1].id.clone()]);
    wait_for("the cancelled replica to end", 30, || {
        b.r.indexes("s.web") == [0, 2]
    });
    b.r.repo.write_stack("s", &two_services(3, 4));
    race(&b, 3, 4, 3);
}

/// Runs an apply through `via` with `--lock-timeout 2s` that must lose to the held lock;
/// returns its one line of stderr.
fn refused(b: &Backends, via: Via) -> String {
    let started = Instant::now();
    let output = b.run(via, &["apply", "--auto-approve", "--lock-timeout", "2s"]);
    let waited = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    assert_eq!(
        output.status.code(),
        Some(4),
        "{via:?}: lock held: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{via:?}: one line: {stderr}");
    assert!(
        waited >= Duration::from_secs(2),
        "{via:?} waited for the lock ({waited:?})"
    );
    assert!(b.replicas().is_empty(), "{via:?} submitted nothing");
    stderr
}

#[test]
fn a_lock_held_over_ssh_stops_rest_and_local_applies_until_released_or_force_unlocked() {
    use stackctl::lock::{self, Identity, LockRequest};
    let b = Backends::new("backends-lock");
    b.r.repo.write_stack("s", &sleepers(2, "a"));
    // The lock taken through the SSH backend, by this process under a host name of its own.
    let settings = stackctl::reconcile::load(b.r.repo.path()).unwrap().settings;
    assert!(settings.ssh.is_some());
    let over_ssh = stackctl::slurm::for_settings(&settings, None).unwrap();
    let hold = || {
        lock::acquire(
            over_ssh.as_ref(),
            &LockRequest {
                owner: settings.owner.clone(),
                expiry: Duration::from_secs(600),
                wait: Duration::ZERO,
                partition: None,
                identity: Identity {
                    host: "held-over-ssh".into(),
                    ..Identity::current()
                },
            },
        )
        .unwrap()
    };
    let held = hold();
    let id = held.id().to_string();
    assert_eq!(b.lock_ids(), [id.as_str()], "the SSH user's placeholder");

    // REST and the local CLI each wait 2 s, give up, withdraw and name the holder.
    let holder = format!(
        "error: the apply lock of owner \"{}\" is taken: lock {id} held by held-over-ssh pid {} since ",
        b.r.repo.owner,
        std::process::id()
    );
    let advice = format!(
        "; wait for it with --lock-timeout, or, if its holder is gone for good, remove it with `stackctl force-unlock {id}`"
    );
    let without_wait = |line: &str| {
        let (before, rest) = line
            .split_once(" (waited ")
            .expect("says how long it waited");
        let (_, after) = rest.split_once(" s)").unwrap();
        format!("{before}{after}")
    };
    let mut lines = Vec::new();
    for via in [Via::Rest, Via::Local] {
        let line = refused(&b, via);
        assert!(
            line.starts_with(&holder) && line.ends_with(&advice),
            "{via:?}: {line}"
        );
        assert_eq!(
            b.lock_ids(),
            [id.as_str()],
            "{via:?} withdrew its placeholder"
        );
        lines.push(without_wait(&line));
    }
    assert_eq!(lines[0], lines[1], "both name the same holder the same way");
    let plan = b.run(Via::Rest, &["plan"]);
    let note = String::from_utf8_lossy(&plan.stderr);
    assert!(
        note.contains(&format!("note: lock {id} held by held-over-ssh")),
        "a plan through REST says the lock is held: {note}"
    );

    // Released through SSH: an apply through REST takes the lock at once and converges.
    held.release(over_ssh.as_ref()).unwrap();
    let applied = b.expect(Via::Rest, &["apply", "--auto-approve"], 0);
    assert!(
        applied.contains("Apply complete! Jobs: 2 added, 0 changed, 0 destroyed."),
        "{applied}"
    );
    assert_eq!(b.r.indexes("s.web"), [0, 1]);
    assert!(b.lock_ids().is_empty(), "REST released its lock");

    // Held through SSH again, removed through REST: the holder learns it lost the lock, and
    // an apply through the local CLI (no waiting) converges.
    b.r.repo.write_stack("s", &sleepers(3, "a"));
    let mut held = hold();
    let id = held.id().to_string();
    let removed = b.expect(Via::Rest, &["force-unlock", &id], 0);
    assert!(
        removed.starts_with(&format!("Removed lock {id} held by held-over-ssh pid ")),
        "{removed}"
    );
    assert!(
        b.lock_ids().is_empty(),
        "force-unlock cancelled the placeholder"
    );
    assert!(
        held.renew(over_ssh.as_ref()).is_err(),
        "the holder learns over SSH that its lock is gone"
    );
    let applied = b.expect(Via::Local, &["apply", "--auto-approve"], 0);
    assert!(applied.contains("1 added"), "{applied}");
    assert_eq!(b.r.indexes("s.web"), [0, 1, 2]);
    b.expect(Via::Ssh, &["plan", "--detailed-exitcode"], 0);
    assert!(b.lock_ids().is_empty());
}
