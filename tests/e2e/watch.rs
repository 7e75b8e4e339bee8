//! End-to-end tests of `stackctl watch` against the real Slurm test cluster: following a bare
//! git remote, following local files, healing drift, skipping invalid commits, the lock, and
//! signals. Each test has its own owner and cancels only its own job ids.
#![cfg(feature = "cluster")]

use crate::common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs git in `dir` with a fixed identity; panics on failure.
fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.org")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.org")
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A bare remote, a clone people push from (the [`TestRepo`]), and a second clone that watch
/// follows.
struct GitSetup {
    repo: TestRepo,
    _remote: tempfile::TempDir,
    checkout: tempfile::TempDir,
}

impl GitSetup {
    fn new(name: &str, stack: &str) -> GitSetup {
        let repo = TestRepo::new(name);
        repo.write_stack("web", stack);
        let remote = tempfile::tempdir().unwrap();
        git(remote.path(), &["init", "--bare", "-q"]);
        let url = format!("file://{}", remote.path().display());
        git(repo.path(), &["init", "-q"]);
        git(repo.path(), &["remote", "add", "origin", &url]);
        std::fs::write(repo.path().join(".gitignore"), "logs/\n").unwrap();
        git(repo.path(), &["add", "-A"]);
        git(repo.path(), &["commit", "-q", "-m", "first"]);
        git(repo.path(), &["push", "-q", "origin", "HEAD:main"]);
        let checkout = tempfile::tempdir().unwrap();
        git(
            Path::new("/"),
            &[
                "clone",
                "-q",
                "-b",
                "main",
                &url,
                &checkout.path().display().to_string(),
            ],
        );
        GitSetup {
            repo,
            _remote: remote,
            checkout,
        }
    }

    /// Writes the stack, commits and pushes; returns the commit's short id.
    fn push(&self, stack: &str, message: &str) -> String {
        self.repo.write_stack("web", stack);
        git(self.repo.path(), &["commit", "-q", "-am", message]);
        git(self.repo.path(), &["push", "-q", "origin", "HEAD:main"]);
        git(self.repo.path(), &["rev-parse", "--short=12", "HEAD"])
    }
}

/// Asserts no replica index of `service` has two alive jobs.
fn assert_no_duplicates(repo: &TestRepo, service: &str) {
    let indexes = repo.indexes(service);
    let mut unique = indexes.clone();
    unique.dedup();
    assert_eq!(indexes, unique, "two alive jobs on one index: {indexes:?}");
}

const INTERVAL: &str = "2s";
/// One interval plus the time an apply takes on a loaded 2-core machine.
const CONVERGE: u64 = 30;

#[test]
fn watch_follows_pushed_commits_skips_a_broken_one_and_heals_drift() {
    let setup = GitSetup::new("watch-git", &stack(1));
    let repo = &setup.repo;
    let mut watch = Watch::start(setup.checkout.path(), &["--interval", INTERVAL]);
    wait_for("the first replica", CONVERGE, || {
        repo.indexes("web.app") == [0]
    });

    let scaled = setup.push(&stack(3), "three replicas");
    wait_for("three replicas", CONVERGE, || {
        repo.indexes("web.app") == [0, 1, 2]
    });
    watch.wait_log("the applied commit in the log", CONVERGE, &scaled);
    assert_eq!(
        git(setup.checkout.path(), &["rev-parse", "--short=12", "HEAD"]),
        scaled,
        "the checkout was fast-forwarded"
    );

    git(repo.path(), &["revert", "--no-edit", "HEAD"]);
    git(repo.path(), &["push", "-q", "origin", "HEAD:main"]);
    wait_for("one replica after the revert", CONVERGE, || {
        repo.indexes("web.app") == [0]
    });

    let broken = setup.push("services:\n  app:\n    recipe: test/nope\n", "broken");
    watch.wait_log(
        "the broken commit reported",
        CONVERGE,
        &format!("commit {broken} is invalid"),
    );
    assert!(
        watch.log().contains("test/nope"),
        "the validation error is shown"
    );

    // Self-healing continues on the last good commit while the broken one is the newest.
    let victim = repo.alive("web.app")[0].id.clone();
    scancel(std::slice::from_ref(&victim));
    wait_for("the cancelled replica to come back", CONVERGE, || {
        let alive = repo.alive("web.app");
        alive.len() == 1 && alive[0].id != victim
    });

    let fixed = setup.push(&stack(2), "two replicas");
    wait_for("two replicas after the fix", CONVERGE, || {
        repo.indexes("web.app") == [0, 1]
    });
    watch.wait_log("the fixed commit applied", CONVERGE, &fixed);
    assert_no_duplicates(repo, "web.app");

    assert_eq!(watch.terminate(), Some(0), "SIGTERM exits 0");
    assert_eq!(locks(repo), 0, "no lock left behind");
    assert!(
        watch.log().contains("reconciled: applied") && watch.log().contains("drift=true"),
        "one line per reconcile, drift counted:\n{}",
        watch.log()
    );
}

#[test]
fn local_mode_reconciles_soon_after_a_file_change_and_no_prune_keeps_removed_services() {
    let repo = TestRepo::new("watch-local");
    repo.write_stack("web", &stack(1));
    repo.write_stack("old", &stack(1));
    let mut watch = Watch::start(
        repo.path(),
        &["--local", "--interval", "600s", "--no-prune"],
    );
    wait_for("both services", CONVERGE, || {
        repo.indexes("web.app") == [0] && repo.indexes("old.app") == [0]
    });
    watch.wait_log("the first reconcile", CONVERGE, "reconciled");

    // The interval is ten minutes: only the file event can make this happen in time.
    let changed = Instant::now();
    repo.write_stack("web", &stack(2));
    wait_for("the second replica", CONVERGE, || {
        repo.indexes("web.app") == [0, 1]
    });
    eprintln!("file change to converged: {:?}", changed.elapsed());

    repo.remove_stack("old");
    watch.wait_log("the removed service reported", CONVERGE, "not pruned");
    assert_eq!(
        repo.indexes("old.app"),
        [0],
        "a removed service keeps running"
    );
    assert!(watch.log().contains("service=old.app"), "{}", watch.log());

    assert_eq!(watch.terminate(), Some(0));
}

#[test]
fn sigterm_during_a_reconcile_exits_0_and_releases_the_lock() {
    let repo = TestRepo::new("watch-sigterm");
    repo.write_stack("web", &stack(8));
    // Every sbatch takes two seconds and leaves a mark when it starts, so the test knows a
    // Slurm call of the pass is in flight when it signals.
    let wrappers = tempfile::tempdir().unwrap();
    let started = wrappers.path().join("sbatch-started");
    let path = wrapped_path(
        wrappers.path(),
        &format!(
            "#!/bin/sh\ntouch {}\nsleep 2\nexec REAL_SBATCH \"$@\"\n",
            started.display()
        ),
    );
    let mut watch = Watch::start_with_path(repo.path(), &["--local", "--interval", "600s"], &path);
    wait_for("the first sbatch of the pass", CONVERGE, || {
        started.exists()
    });
    assert_eq!(watch.terminate(), Some(0), "SIGTERM exits 0");
    let log = watch.log();
    let signalled = log
        .find("finishing the reconcile in flight")
        .expect("signal logged");
    let applied = log.find("reconciled: applied").expect("the pass finished");
    assert!(
        signalled < applied,
        "the signal came during the pass:\n{log}"
    );
    assert_eq!(locks(&repo), 0, "the lock was released");
    assert_eq!(
        repo.indexes("web.app").len(),
        8,
        "the pass in flight completed"
    );
    // The next apply neither waits for a lock nor finds anything half done.
    let started = Instant::now();
    repo.expect(&["apply", "--auto-approve", "--lock-timeout", "0s"], 0);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(repo.indexes("web.app"), (0..8).collect::<Vec<_>>());
}

#[test]
fn a_watch_loop_and_four_applies_never_leave_two_jobs_on_one_index() {
    let repo = TestRepo::new("watch-race");
    repo.write_stack("web", &stack(4));
    let _watch = Watch::start(repo.path(), &["--local", "--interval", "1s"]);
    let path = repo.path().to_owned();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appliers: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                for _ in 0..3 {
                    let status = Command::new(env!("CARGO_BIN_EXE_stackctl"))
                        .env("SLURM_CONF", slurm_conf())
                        .arg("-C")
                        .arg(&path)
                        .args(["apply", "--auto-approve", "--lock-timeout", "120s"])
                        .output()
                        .unwrap();
                    assert!(
                        status.status.success(),
                        "{}",
                        String::from_utf8_lossy(&status.stderr)
                    );
                }
            })
        })
        .collect();
    // Meanwhile, drift for the loop to heal, and a sample of every index now and then.
    let sampler = {
        let stop = stop.clone();
        let owner = repo.owner.clone();
        std::thread::spawn(move || {
            let tag = format!(";owner={owner};");
            let mut worst = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut per_index = std::collections::BTreeMap::new();
                for job in squeue()
                    .into_iter()
                    .filter(|j| j.alive() && j.comment.contains(&tag) && j.task.is_some())
                {
                    *per_index.entry(job.task).or_insert(0) += 1;
                }
                worst = per_index.values().copied().max().unwrap_or(0).max(worst);
                std::thread::sleep(Duration::from_millis(200));
            }
            worst
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    if let Some(job) = repo.alive("web.app").first() {
        scancel(std::slice::from_ref(&job.id));
    }
    for applier in appliers {
        applier.join().unwrap();
    }
    wait_for("four replicas", CONVERGE, || {
        repo.indexes("web.app") == [0, 1, 2, 3]
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        sampler.join().unwrap(),
        1,
        "never two alive jobs on one index"
    );
    assert_no_duplicates(&repo, "web.app");
}

#[test]
fn once_exits_like_apply() {
    let repo = TestRepo::new("watch-once");
    repo.write_stack("web", &stack(1));
    let output = repo.run(&["--log-format", "json", "watch", "--local", "--once"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per log line"))
        .collect();
    let reconciled = lines
        .iter()
        .find(|l| l["fields"]["message"] == "reconciled: applied")
        .expect("the reconcile line");
    assert_eq!(reconciled["fields"]["added"], 1, "{reconciled}");
    assert!(reconciled["fields"]["duration_ms"].is_u64(), "{reconciled}");
    assert_eq!(repo.indexes("web.app"), [0]);
    repo.write_stack("web", "services:\n  app:\n    recipe: test/nope\n");
    let output = repo.run(&["watch", "--local", "--once"]);
    assert_eq!(output.status.code(), Some(1), "an invalid repo exits 1");
    assert!(String::from_utf8_lossy(&output.stderr).contains("test/nope"));
    assert_eq!(repo.indexes("web.app"), [0], "nothing was touched");
}

#[test]
fn started_on_an_invalid_commit_watch_converges_to_the_newest_valid_one_before_it() {
    let setup = GitSetup::new("watch-walk-back", &stack(2));
    let good = git(setup.repo.path(), &["rev-parse", "--short=12", "HEAD"]);
    setup.push("services:\n  app:\n    recipe: test/nope\n", "broken");
    git(setup.checkout.path(), &["pull", "-q", "--ff-only"]);
    let mut watch = Watch::start(setup.checkout.path(), &["--interval", INTERVAL]);
    wait_for("the valid commit's two replicas", CONVERGE, || {
        setup.repo.indexes("web.app") == [0, 1]
    });
    watch.wait_log(
        "the walk back",
        CONVERGE,
        "converging to the newest valid commit",
    );
    watch.wait_log("the valid commit applied", CONVERGE, &good);
    assert_eq!(watch.terminate(), Some(0));
}

#[test]
fn watch_follows_a_force_push_and_a_rewind_of_the_branch() {
    let setup = GitSetup::new("watch-force", &stack(1));
    let repo = &setup.repo;
    let first = git(repo.path(), &["rev-parse", "HEAD"]);
    let mut watch = Watch::start(setup.checkout.path(), &["--interval", INTERVAL]);
    wait_for("the first replica", CONVERGE, || {
        repo.indexes("web.app") == [0]
    });
    setup.push(&stack(2), "two replicas");
    wait_for("two replicas", CONVERGE, || {
        repo.indexes("web.app") == [0, 1]
    });

    // History rewritten: "two replicas" is replaced by a different commit on top of the first.
    git(repo.path(), &["reset", "-q", "--hard", &first]);
    repo.write_stack("web", &stack(3));
    git(
        repo.path(),
        &["commit", "-q", "-am", "three replicas, rewritten"],
    );
    git(repo.path(), &["push", "-q", "-f", "origin", "HEAD:main"]);
    let rewritten = git(repo.path(), &["rev-parse", "--short=12", "HEAD"]);
    let pushed = Instant::now();
    wait_for("three replicas from the rewritten branch", CONVERGE, || {
        repo.indexes("web.app") == [0, 1, 2]
    });
    eprintln!("force-push applied after {:?}", pushed.elapsed());
    watch.wait_log("the reset logged", CONVERGE, "remote branch was rewritten");
    watch.wait_log("the rewritten commit applied", CONVERGE, &rewritten);
    assert_eq!(
        git(setup.checkout.path(), &["rev-parse", "--short=12", "HEAD"]),
        rewritten,
        "the checkout follows the branch"
    );

    // Rewound to the first commit (force-pushed back): the checkout is ahead, and still follows.
    git(
        repo.path(),
        &["push", "-q", "-f", "origin", &format!("{first}:main")],
    );
    wait_for("one replica after the rewind", CONVERGE, || {
        repo.indexes("web.app") == [0]
    });
    assert_eq!(
        git(setup.checkout.path(), &["rev-parse", "HEAD"]),
        first,
        "the checkout is back on the first commit"
    );
    assert!(
        !watch.log().contains("has diverged") && !watch.log().contains("does not have"),
        "never held on a commit the branch no longer has:\n{}",
        watch.log()
    );
    assert_eq!(watch.terminate(), Some(0));
}

#[test]
fn once_exits_1_on_an_invalid_head_and_on_a_remote_it_cannot_fetch() {
    let setup = GitSetup::new("watch-once-git", &stack(1));
    let once = |dir: &Path| {
        let output = stackctl(dir, &["watch", "--once"]).output().unwrap();
        let log = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.code(), log)
    };
    let (code, log) = once(setup.checkout.path());
    assert_eq!(code, Some(0), "a valid commit converges:\n{log}");
    assert_eq!(setup.repo.indexes("web.app"), [0]);

    // The newest commit is invalid: the last valid one is healed, but the pass fails.
    let broken = setup.push("services:\n  app:\n    recipe: test/missing\n", "broken");
    let (code, log) = once(setup.checkout.path());
    assert_eq!(code, Some(1), "an invalid HEAD exits 1:\n{log}");
    assert!(
        log.contains(&format!("commit {broken} is invalid")),
        "{log}"
    );

    // Fixed, then the remote goes away: the checkout's commit is valid, the fetch is not.
    setup.push(&stack(1), "fixed");
    let (code, log) = once(setup.checkout.path());
    assert_eq!(code, Some(0), "fixed:\n{log}");
    git(
        setup.checkout.path(),
        &[
            "remote",
            "set-url",
            "origin",
            "file:///nonexistent/stackctl-remote.git",
        ],
    );
    let (code, log) = once(setup.checkout.path());
    assert_eq!(code, Some(1), "an unreachable remote exits 1:\n{log}");
    assert!(log.contains("cannot sync with the remote"), "{log}");
    assert_eq!(setup.repo.indexes("web.app"), [0], "nothing was touched");
}

/// `GET /status` over HTTP/1.0, as JSON.
fn status_of(addr: std::net::SocketAddr) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET /status HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    serde_json::from_str(raw.split_once("\r\n\r\n")?.1).ok()
}

#[test]
fn walltime_renewals_are_not_drift_but_a_replica_cancelled_by_hand_is() {
    let repo = TestRepo::new("watch-renew-drift");
    // A two-minute replica renewed 110 s before its end: a renewal about 10 s after each
    // start, its predecessor retired 1 s after the successor runs.
    let renewed = "services:\n  app:\n    recipe: test/sleeper\n    resources: {time_limit: 2}\n    \
                   renew_before: 110s\n    update: {min_healthy_time: 1s}\n";
    let steady = |replicas: u32| {
        format!("{renewed}  steady:\n    recipe: test/sleeper\n    replicas: {replicas}\n")
    };
    repo.write_stack("web", &steady(2));
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let listen = addr.to_string();
    let mut watch = Watch::start(
        repo.path(),
        &["--local", "--interval", INTERVAL, "--listen", &listen],
    );
    wait_for("the first replica", CONVERGE, || {
        repo.indexes("web.app") == [0]
    });
    let first = repo.alive("web.app")[0].id.clone();
    wait_for("a renewal retired the first job", 150, || {
        let alive = repo.alive("web.app");
        alive.len() == 1 && alive[0].id != first && alive[0].state == "RUNNING"
    });
    watch.wait_log(
        "the renewal's retirement reconciled",
        CONVERGE,
        "reconciled",
    );
    // A scale-down and back up: stackctl's own cancel is no drift either.
    repo.write_stack("web", &steady(1));
    wait_for("one steady replica", CONVERGE, || {
        repo.indexes("web.steady") == [0]
    });
    repo.write_stack("web", &steady(2));
    wait_for("two steady replicas", CONVERGE, || {
        repo.indexes("web.steady") == [0, 1]
    });
    let status = status_of(addr).expect("/status");
    assert_eq!(status["drift_corrections"], 0, "{status}");
    assert!(!watch.log().contains("drift=true"), "{}", watch.log());

    // Now a replica ended outside stackctl: that is drift.
    let alive = repo.alive("web.app");
    scancel(&alive.iter().map(|j| j.id.clone()).collect::<Vec<_>>());
    wait_for("the drift counted", 60, || {
        status_of(addr).is_some_and(|s| s["drift_corrections"].as_u64() >= Some(1))
    });
    assert_eq!(watch.terminate(), Some(0));
}

#[test]
fn a_checkout_with_local_edits_is_reported_and_the_branch_is_applied_all_the_same() {
    let setup = GitSetup::new("watch-held", &stack(1));
    let repo = &setup.repo;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let listen = addr.to_string();
    let mut watch = Watch::start(
        setup.checkout.path(),
        &["--interval", INTERVAL, "--listen", &listen],
    );
    wait_for("the first replica", CONVERGE, || {
        repo.indexes("web.app") == [0]
    });
    // Someone edits the watched checkout by hand; then the branch moves on.
    let edited = setup.checkout.path().join("stacks/web.yaml");
    std::fs::write(&edited, stack(5)).unwrap();
    let pushed = setup.push(&stack(2), "two replicas");
    wait_for("the branch's two replicas", CONVERGE, || {
        repo.indexes("web.app") == [0, 1]
    });
    watch.wait_log("the pushed commit applied", CONVERGE, &pushed);
    let status = status_of(addr).expect("/status");
    assert!(
        status["checkout_held"]
            .as_str()
            .is_some_and(|r| r.contains("uncommitted changes to stacks/web.yaml")),
        "{status}"
    );
    let metrics = {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        raw
    };
    assert!(
        metrics.contains("\nstackctl_checkout_up_to_date 0\n"),
        "{metrics}"
    );
    assert_eq!(
        std::fs::read_to_string(&edited).unwrap(),
        stack(5),
        "the edit is kept"
    );
    assert_eq!(watch.terminate(), Some(0));
}

#[test]
fn a_force_push_to_an_invalid_commit_serves_the_newest_valid_commit_the_branch_has() {
    let setup = GitSetup::new("watch-force-bad", &stack(1));
    let repo = &setup.repo;
    let first = git(repo.path(), &["rev-parse", "HEAD"]);
    let mut watch = Watch::start(setup.checkout.path(), &["--interval", INTERVAL]);
    wait_for("the first replica", CONVERGE, || {
        repo.indexes("web.app") == [0]
    });
    setup.push(&stack(3), "three replicas");
    wait_for("three replicas", CONVERGE, || {
        repo.indexes("web.app") == [0, 1, 2]
    });
    // "three replicas" leaves the branch; its new head is invalid.
    git(repo.path(), &["reset", "-q", "--hard", &first]);
    repo.write_stack("web", "services:\n  app:\n    recipe: test/absent\n");
    git(
        repo.path(),
        &["commit", "-q", "-am", "broken, force-pushed"],
    );
    git(repo.path(), &["push", "-q", "-f", "origin", "HEAD:main"]);
    wait_for("the first commit's one replica", CONVERGE, || {
        repo.indexes("web.app") == [0]
    });
    let log = watch.log();
    assert!(
        log.contains("converging to the newest valid commit before it")
            && log.contains(&first[..12]),
        "{log}"
    );
    assert_eq!(watch.terminate(), Some(0));
}
