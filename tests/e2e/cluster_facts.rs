//! End-to-end tests of the CLI backend's cluster facts, `sbatch --test-only` and parent-death
//! protection, against the real Slurm test cluster (`scripts/slurm-dev-cluster up`).
//!
//! Nothing here submits a job: the `--test-only` scripts carry a comment unique to the test,
//! and plain `squeue` (independent of stackctl's listing code) must never show it.
#![cfg(feature = "cluster")]

use stackctl::cluster::GpuFacts;
use stackctl::job::{JobOptions, JobRequest};
use stackctl::slurm::{Backend, CliBackend, SlurmError};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The test cluster's config, unless the environment names another.
const DEFAULT_SLURM_CONF: &str = "/etc/stackctl-dev-slurm/slurm.conf";

/// The full name libtest knows the test `name` of this file by (`cluster_facts::name`), for
/// running it alone in a copy of this test binary with `--exact`.
fn full_test_name(name: &str) -> String {
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    format!("{module}::{name}")
}

/// Runs `body` where the backend (which reads `SLURM_CONF` from this process's environment)
/// reaches the test cluster: here if `SLURM_CONF` is set, else in a copy of this test binary
/// that runs only the test `name`, with `SLURM_CONF` set to the test cluster's config.
fn on_cluster(name: &str, body: impl FnOnce()) {
    if std::env::var_os("SLURM_CONF").is_some() {
        assert_cluster_up();
        body();
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            &full_test_name(name),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SLURM_CONF", DEFAULT_SLURM_CONF)
        .output()
        .unwrap();
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("1 passed"),
        "{name} on the test cluster failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn assert_cluster_up() {
    let ok = Command::new("sinfo")
        .arg("-h")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "no Slurm test cluster at SLURM_CONF={:?}; start it with `scripts/slurm-dev-cluster up`",
        std::env::var("SLURM_CONF")
    );
}

/// A setting of the cluster's `slurm.conf`, read from the file rather than from Slurm.
fn conf_setting(key: &str) -> Option<String> {
    let conf = std::env::var("SLURM_CONF").unwrap();
    std::fs::read_to_string(conf)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

/// A comment no other job has.
fn unique_comment(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("stackctl-facts-test-{test}-{}-{nanos}", std::process::id())
}

/// How many jobs of this user, ended ones included, carry `comment` (plain squeue).
fn jobs_with_comment(comment: &str) -> usize {
    let output = Command::new("squeue")
        .args(["--me", "-h", "-t", "all", "-o", "%k"])
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.trim() == comment)
        .count()
}

/// A batch script with `comment` and extra `#SBATCH` lines.
/// A one-minute `sleep 1` job with `comment` and the given `--name=value` options.
fn script(comment: &str, options: &[&str]) -> JobRequest {
    let mut job = JobOptions {
        name: "stackctl-cluster-facts".into(),
        comment: comment.into(),
        time_limit: Some(1),
        ..Default::default()
    };
    for option in options {
        let (name, value) = option.split_once('=').expect("--name=value");
        let number = || Some(value.parse().expect("a number"));
        match name {
            "--partition" => job.partition = Some(value.into()),
            "--cpus-per-task" => job.cpus_per_task = number(),
            "--mem" => job.memory = Some(value.into()),
            "--gres" => job.gres = Some(value.into()),
            "--nodes" => job.nodes = number(),
            "--ntasks-per-node" => job.ntasks_per_node = number(),
            "--array" => job.array = Some(value.into()),
            other => panic!("no such option in this test: {other}"),
        }
    }
    JobRequest {
        options: job,
        body: "sleep 1\n".into(),
    }
}

#[test]
fn facts_match_the_test_cluster() {
    on_cluster("facts_match_the_test_cluster", || {
        let facts = CliBackend::default().cluster_facts().unwrap();
        let names: Vec<&str> = facts.partitions.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["debug", "short", "closed"], "{facts:#?}");
        let short = &facts.partitions[1];
        assert_eq!(
            (short.max_time_minutes, short.is_default, short.nodes.len()),
            (Some(60), false, 2)
        );
        let debug = &facts.partitions[0];
        assert_eq!(debug.name, "debug");
        assert!(debug.is_default);
        assert_eq!(debug.nodes, ["node1", "node2", "node3"]);
        assert_eq!(
            (
                debug.max_time_minutes,
                debug.max_nodes,
                debug.max_cpus_per_node
            ),
            (None, None, None)
        );
        assert_eq!(debug.max_mem_per_node_mb, None);
        let names: Vec<&str> = facts.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["node1", "node2", "node3"]);
        assert_eq!(facts.nodes.iter().map(|n| n.cpus).sum::<u32>(), 48);
        assert!(facts.nodes.iter().all(|n| n.memory_mb == 16_000));
        let gpus = |kind: &str| -> u32 {
            facts
                .nodes
                .iter()
                .flat_map(|n| &n.gpus)
                .filter(|g| g.kind.as_deref() == Some(kind))
                .map(|g| g.count)
                .sum()
        };
        assert_eq!((gpus("a100"), gpus("h100")), (8, 4));
        assert_eq!(
            facts.nodes[2].gpus,
            [GpuFacts {
                kind: Some("h100".into()),
                count: 4
            }]
        );
        let configured: u32 = conf_setting("MaxArraySize").unwrap().parse().unwrap();
        assert_eq!(facts.max_array_size, Some(configured));
    });
}

#[test]
fn test_submit_accepts_a_good_script_and_submits_nothing() {
    on_cluster(
        "test_submit_accepts_a_good_script_and_submits_nothing",
        || {
            let comment = unique_comment("good");
            let backend = CliBackend::default();
            for options in [
                &["--partition=debug", "--cpus-per-task=16", "--mem=16000M"][..],
                &["--gres=gpu:a100:4", "--nodes=2", "--ntasks-per-node=1"],
                &["--partition=debug", "--array=0-99"],
            ] {
                backend
                    .test_submit(&script(&comment, options))
                    .unwrap_or_else(|e| panic!("{options:?}: {e}"));
            }
            assert_eq!(jobs_with_comment(&comment), 0);
        },
    );
}

#[test]
fn test_submit_rejects_with_slurms_reason_and_submits_nothing() {
    on_cluster(
        "test_submit_rejects_with_slurms_reason_and_submits_nothing",
        || {
            let comment = unique_comment("bad");
            let backend = CliBackend::default();
            let max_array: u32 = conf_setting("MaxArraySize").unwrap().parse().unwrap();
            let oversized = format!("--array=0-{max_array}");
            let no_config = "Requested node configuration is not available";
            for (options, reason) in [
                (
                    vec!["--partition=nosuch"],
                    "invalid partition specified: nosuch; Invalid partition name specified",
                ),
                // A list naming an unknown partition is rejected even if another would do.
                (
                    vec!["--partition=debug,nosuch"],
                    "invalid partition specified: nosuch; Invalid partition name specified",
                ),
                (vec!["--gres=gpu:v100:1"], no_config),
                (vec!["--gres=gpu:a100:9"], no_config),
                (vec!["--gres=gpu:a100:1", "--nodes=3"], no_config),
                (vec!["--cpus-per-task=17"], no_config),
                (vec!["--mem=16001M"], no_config),
                (vec![oversized.as_str()], "Invalid job array specification"),
            ] {
                let error = backend
                    .test_submit(&script(&comment, &options))
                    .unwrap_err();
                match &error {
                    SlurmError::Failed { command, message } => {
                        assert_eq!(command, "sbatch --test-only");
                        assert_eq!(message, reason, "{options:?}");
                    }
                    other => panic!("{options:?}: {other:?}"),
                }
                assert!(error.is_definite_rejection(), "{options:?}");
            }
            assert_eq!(jobs_with_comment(&comment), 0);
        },
    );
}

/// Set in the copy of this test binary that plays a stackctl about to be killed.
const ORPHAN_CHILD_ENV: &str = "STACKCTL_TEST_ORPHAN_DIR";

/// A stackctl killed while `sbatch` runs must leave no `sbatch` behind that could submit
/// later. A fake `sbatch` on `PATH` notes that it started, sleeps 5 s, then notes that it
/// "submitted". A copy of this test binary submits through the backend and is SIGKILLed after
/// 1 s: the parent-death signal must kill the fake before it gets that far.
#[test]
fn an_orphaned_sbatch_never_submits() {
    if let Some(dir) = std::env::var_os(ORPHAN_CHILD_ENV) {
        // The child: blocks in `submit` until it is killed.
        let result = CliBackend::default().submit(&script("orphan", &[]));
        let _ = std::fs::write(
            Path::new(&dir).join("child-returned"),
            format!("{result:?}"),
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (started, submitted) = (dir.path().join("started"), dir.path().join("submitted"));
    let fake = dir.path().join("sbatch");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\ncat >/dev/null\ntouch '{}'\nsleep 5\ntouch '{}'\necho 4242\n",
            started.display(),
            submitted.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::join_paths(
        std::iter::once(dir.path().to_path_buf())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            &full_test_name("an_orphaned_sbatch_never_submits"),
            "--exact",
            "--nocapture",
        ])
        .env(ORPHAN_CHILD_ENV, dir.path())
        .env("PATH", &path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The fake really ran, through the backend: otherwise the test would prove nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the fake sbatch never started");
        assert!(child.try_wait().unwrap().is_none(), "the child ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        !submitted.exists(),
        "the orphaned sbatch outlived its parent and submitted"
    );
    assert!(!dir.path().join("child-returned").exists());
}
