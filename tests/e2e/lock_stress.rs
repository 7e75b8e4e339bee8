//! Stress test of the apply lock against the real Slurm test cluster: an apply killed with
//! SIGKILL at a random instant, then a normal apply, many times over. After every round no
//! lock placeholder of the owner may be left and no replica index may run twice.
//!
//! An apply on this cluster takes a fraction of a second, so most instants of 0–2 s would land
//! after it ended. Odd rounds therefore kill an apply whose Slurm is slow: its `sbatch` waits
//! 0.1 s *after* submitting (a kill then loses the answer of a submit Slurm carried out) and its
//! `scancel` waits 0.4 s before cancelling (a kill then stops the lock's release), which spreads
//! its steps over the 2 s. Even rounds run it as it is.
//!
//! `LOCK_STRESS_ROUNDS` (default 30) and `LOCK_STRESS_SEED` (default: the clock) choose the
//! rounds and the kill instants; the seed and every instant are printed, so a failing run can
//! be repeated.
#![cfg(feature = "cluster")]

use crate::common;

use common::*;
use std::process::Stdio;
use std::time::Duration;

/// splitmix64: enough randomness for kill instants, repeatable from a printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

const SERVICES: u32 = 6;
const REPLICAS: u32 = 3;

/// A `PATH` whose `sbatch` answers 0.1 s after Slurm created the job and whose `scancel`
/// starts 0.4 s late; `--test-only` goes through at once. The real `sbatch` dies with the
/// wrapper, as it dies with stackctl (parent-death signal).
fn slow_slurm(dir: &std::path::Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, script) in [
        (
            "sbatch",
            "#!/bin/sh\n/usr/bin/setpriv --pdeathsig KILL REAL \"$@\"\nstatus=$?\ncase \"$*\" in *--test-only*) ;; *) sleep 0.1 ;; esac\nexit $status\n",
        ),
        ("scancel", "#!/bin/sh\nsleep 0.4\nexec REAL \"$@\"\n"),
    ] {
        let file = bin.join(name);
        let real = which(name).display().to_string();
        std::fs::write(&file, script.replace("REAL", &real)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap())
}

/// The pid a lock placeholder's marker names.
fn marker_pid(comment: &str) -> Option<u32> {
    comment
        .split(';')
        .find_map(|f| f.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
}

#[test]
fn an_apply_killed_at_any_instant_leaves_no_lock_and_no_duplicate_after_the_next_apply() {
    let repo = TestRepo::new("lockstress");
    let rounds: usize = std::env::var("LOCK_STRESS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("LOCK_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("lock stress: {rounds} rounds, LOCK_STRESS_SEED={seed}");
    let mut rng = Rng(seed);
    let mut yaml = String::from("services:\n");
    for i in 0..SERVICES {
        yaml.push_str(&format!(
            "  svc{i}:\n    recipe: test/sleeper\n    replicas: {REPLICAS}\n    resources: {{memory: 16M}}\n"
        ));
    }
    repo.write_stack("s", &yaml);
    let expected: Vec<u32> = (0..REPLICAS).collect();
    let tools = tempfile::tempdir().unwrap();
    let slow_path = slow_slurm(tools.path());
    let mut instants = Vec::new();
    let mut problems = Vec::new();
    for round in 0..rounds {
        let kill_at = Duration::from_millis(rng.next() % 2001);
        let slow = round % 2 == 1;
        instants.push(format!(
            "{}{}",
            kill_at.as_millis(),
            if slow { "s" } else { "" }
        ));
        let mut command = repo.command(&["apply", "--auto-approve"]);
        if slow {
            command.env("PATH", &slow_path);
        }
        let mut killed = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let killed_pid = killed.id();
        std::thread::sleep(kill_at);
        killed.kill().unwrap();
        killed.wait().unwrap();
        let normal = repo
            .command(&["apply", "--auto-approve"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let normal_pid = normal.id();
        let output = normal.wait_with_output().unwrap();
        let said = format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            output.status.code(),
            Some(0),
            "round {round} (killed at {kill_at:?}): {said}"
        );
        let jobs = squeue();
        let left = lock_placeholders(jobs.clone(), &repo.owner);
        if !left.is_empty() {
            let whose: Vec<String> = left
                .iter()
                .map(|j| {
                    let pid = marker_pid(&j.comment);
                    let who = if pid == Some(killed_pid) {
                        "the killed apply's"
                    } else if pid == Some(normal_pid) {
                        "the normal apply's"
                    } else {
                        "someone else's"
                    };
                    format!("job {} ({who}): {}", j.id, j.comment)
                })
                .collect();
            problems.push(format!(
                "round {round} (killed at {kill_at:?}{}): lock placeholders left: {}",
                if slow { ", slow Slurm" } else { "" },
                whose.join("; ")
            ));
            // Measure the remaining rounds from a clean slate.
            scancel(&left.iter().map(|j| j.id.clone()).collect::<Vec<_>>());
        }
        let owned = of_owner(jobs, &repo.owner);
        for i in 0..SERVICES {
            let service = format!("s.svc{i}");
            let indexes = indexes_of(&alive_of(owned.clone(), &service));
            if indexes != expected {
                problems.push(format!(
                    "round {round} (killed at {kill_at:?}): {service} runs indexes {indexes:?}"
                ));
            }
        }
        // Back to no replica, by job id, so the next round's applies have work to do.
        let alive: Vec<String> = owned
            .into_iter()
            .filter(|j| j.alive() && j.comment.starts_with("stackctl/v1;"))
            .map(|j| j.id)
            .collect();
        scancel(&alive);
        wait_for("the round's replicas to end", 120, || {
            repo.jobs()
                .iter()
                .all(|j| !j.alive() || j.comment.starts_with("stackctl-lock/"))
        });
    }
    eprintln!("lock stress: kill instants (ms; s = slow Slurm): {instants:?}");
    eprintln!(
        "lock stress: {} problem(s) in {rounds} rounds",
        problems.len()
    );
    assert!(
        problems.is_empty(),
        "LOCK_STRESS_SEED={seed}:\n{}",
        problems.join("\n")
    );
}
