//! End-to-end tests against the real Slurm test cluster (`scripts/slurm-dev-cluster up`).
//!
//! Every test gets its own owner, so no test can see or cancel another's jobs, and it cleans
//! up by cancelling its own job ids, never by user or name. Jobs are read back with plain
//! `squeue`, independently of stackctl's own listing code.
#![cfg(feature = "cluster")]

use crate::common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn first_apply_creates_the_jobs_and_a_second_plan_has_no_changes() {
    let repo = TestRepo::new("first");
    repo.write_stack(
        "infer",
        "name: infer\nservices:\n  llm:\n    recipe: test/gpu\n    replicas: 2\n    resources: {gpu: 1, gpu_type: h100}\n  cache:\n    recipe: test/sleeper\n",
    );
    let plan = repo.expect(&["plan", "--detailed-exitcode"], 2);
    assert!(
        plan.contains("Plan: 3 to add, 0 to change, 0 to destroy."),
        "{plan}"
    );
    let out = repo.apply();
    assert!(
        out.contains("Apply complete! Jobs: 3 added, 0 changed, 0 destroyed."),
        "{out}"
    );
    let llm = repo.alive("infer.llm");
    assert_eq!(
        llm.iter().map(|j| j.task.unwrap()).collect::<Vec<_>>(),
        vec![0, 1]
    );
    for job in &llm {
        assert_eq!(
            job.gres, "gres:gpu:h100:1",
            "GPU type and count must reach Slurm: {job:?}"
        );
        assert_eq!(job.name, "infer.llm");
    }
    assert_eq!(repo.indexes("infer.cache"), vec![0]);
    repo.assert_converged();
    // status: the running cache replica's endpoint is its node and the recipe's port
    wait_for("the cache replica to run", 60, || {
        repo.alive("infer.cache")[0].state == "RUNNING"
    });
    let status: serde_json::Value =
        serde_json::from_str(&repo.expect(&["status", "--json"], 0)).unwrap();
    let cache = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "infer.cache")
        .unwrap()
        .clone();
    assert_eq!(cache["running"], 1, "{cache}");
    let endpoint = cache["endpoints"][0].as_str().unwrap();
    assert!(
        endpoint.starts_with("node") && endpoint.ends_with(":7000"),
        "{cache}"
    );
    // apply on a converged cluster changes nothing
    let again = repo.apply();
    assert!(again.contains("No changes."), "{again}");
    assert_eq!(repo.alive("infer.llm").len(), 2);
}

#[test]
fn scaling_up_adds_indexes_and_scaling_down_removes_the_highest() {
    let repo = TestRepo::new("scale");
    let stack =
        |n: u32| format!("services:\n  web:\n    recipe: test/sleeper\n    replicas: {n}\n");
    repo.write_stack("s", &stack(2));
    repo.apply();
    let before = repo.alive("s.web");
    repo.write_stack("s", &stack(4));
    let plan = repo.expect(&["plan", "--detailed-exitcode"], 2);
    assert!(
        plan.contains("~ replicas = 2 -> 4")
            && plan.contains("Plan: 2 to add, 0 to change, 0 to destroy."),
        "{plan}"
    );
    repo.apply();
    assert_eq!(repo.indexes("s.web"), vec![0, 1, 2, 3]);
    // the replicas that were there stay untouched
    let ids: Vec<String> = repo.alive("s.web").iter().map(|j| j.id.clone()).collect();
    assert_eq!(
        &ids[..2],
        &before.iter().map(|j| j.id.clone()).collect::<Vec<_>>()[..]
    );
    repo.write_stack("s", &stack(1));
    let plan = repo.expect(&["plan", "--detailed-exitcode"], 2);
    assert!(
        plan.contains("Plan: 0 to add, 0 to change, 3 to destroy."),
        "{plan}"
    );
    repo.apply();
    assert_eq!(repo.indexes("s.web"), vec![0]);
    assert_eq!(repo.alive("s.web")[0].id, ids[0]);
    repo.assert_converged();
    // zero replicas is allowed and means none running; as it cancels every job the owner
    // runs, it takes --allow-destroy-all (refused by a safety rule: exit 3)
    repo.write_stack("s", &stack(0));
    repo.expect(&["apply", "--auto-approve"], 3);
    assert_eq!(repo.indexes("s.web"), vec![0]);
    repo.expect(&["apply", "--auto-approve", "--allow-destroy-all"], 0);
    assert!(repo.alive("s.web").is_empty());
    repo.assert_converged();
}

#[test]
fn an_environment_change_replaces_every_replica_and_shows_the_diff() {
    let repo = TestRepo::new("replace-env");
    let stack = |mode: &str| {
        format!(
            "services:\n  web:\n    recipe: test/sleeper\n    replicas: 2\n    environment: {{MODE: {mode}}}\n"
        )
    };
    repo.write_stack("s", &stack("blue"));
    repo.apply();
    let old: Vec<String> = repo.alive("s.web").iter().map(|j| j.id.clone()).collect();
    repo.write_stack("s", &stack("green"));
    let plan = repo.expect(&["plan", "--detailed-exitcode", "--no-color"], 2);
    assert!(
        plan.contains(r#"~ environment.MODE = "blue" -> "green""#),
        "{plan}"
    );
    assert!(
        plan.contains("Plan: 2 to add, 0 to change, 2 to destroy."),
        "{plan}"
    );
    repo.apply();
    let new = repo.alive("s.web");
    assert_eq!(
        new.iter().map(|j| j.task.unwrap()).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert!(
        new.iter().all(|j| !old.contains(&j.id)),
        "old {old:?} new {new:?}"
    );
    repo.assert_converged();
}

#[test]
fn a_gpu_type_change_replaces_the_replica_with_the_new_gres() {
    let repo = TestRepo::new("replace-gpu");
    let stack = |kind: &str| {
        format!("services:\n  llm:\n    recipe: test/gpu\n    resources: {{gpu_type: {kind}}}\n")
    };
    repo.write_stack("s", &stack("a100"));
    repo.apply();
    assert_eq!(repo.alive("s.llm")[0].gres, "gres:gpu:a100:1");
    repo.write_stack("s", &stack("h100"));
    let plan = repo.expect(&["plan", "--detailed-exitcode"], 2);
    assert!(
        plan.contains(r#"~ resources.gpu_type = "a100" -> "h100""#),
        "{plan}"
    );
    repo.apply();
    let alive = repo.alive("s.llm");
    assert_eq!(alive.len(), 1, "{alive:?}");
    assert_eq!(alive[0].gres, "gres:gpu:h100:1");
    repo.assert_converged();
}

#[test]
fn a_service_removed_from_the_repo_is_pruned_and_the_others_stay() {
    let repo = TestRepo::new("prune");
    repo.write_stack("a", "services:\n  keep:\n    recipe: test/sleeper\n  drop:\n    recipe: test/sleeper\n    replicas: 2\n");
    repo.write_stack("b", "services:\n  gone:\n    recipe: test/sleeper\n");
    repo.apply();
    let kept = repo.alive("a.keep");
    repo.write_stack("a", "services:\n  keep:\n    recipe: test/sleeper\n");
    repo.remove_stack("b");
    let plan = repo.expect(&["plan", "--detailed-exitcode"], 2);
    assert!(
        plan.contains("Plan: 0 to add, 0 to change, 3 to destroy."),
        "{plan}"
    );
    assert!(
        plan.contains("a.drop will be destroyed") && plan.contains("b.gone will be destroyed"),
        "{plan}"
    );
    repo.apply();
    assert!(repo.alive("a.drop").is_empty() && repo.alive("b.gone").is_empty());
    assert_eq!(repo.alive("a.keep")[0].id, kept[0].id);
    repo.assert_converged();
}

#[test]
fn a_killed_replica_is_recreated() {
    let repo = TestRepo::new("heal");
    repo.write_stack(
        "s",
        "services:\n  web:\n    recipe: test/sleeper\n    replicas: 3\n",
    );
    repo.apply();
    let victim = repo.alive("s.web")[1].clone();
    scancel(std::slice::from_ref(&victim.id));
    wait_for("the cancelled job to end", 60, || {
        repo.alive("s.web").len() == 2
    });
    let plan = repo.expect(&["plan", "--detailed-exitcode"], 2);
    assert!(
        plan.contains("+ replica[1]")
            && plan.contains("Plan: 1 to add, 0 to change, 0 to destroy."),
        "{plan}"
    );
    repo.apply();
    let alive = repo.alive("s.web");
    assert_eq!(
        alive.iter().map(|j| j.task.unwrap()).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_ne!(alive[1].id, victim.id);
    repo.assert_converged();
}

#[test]
fn foreign_and_look_alike_jobs_are_never_touched() {
    let repo = TestRepo::new("foreign");
    repo.write_stack("s", "services:\n  web:\n    recipe: test/sleeper\n");
    // Same job name, no marker; another owner's marker for the same service; a comment that
    // only looks like a marker of this owner; a marker of this owner's name plus a suffix.
    let other_owner = format!("{}-other", repo.owner);
    let foreign = vec![
        sbatch_foreign(&["--job-name=s.web"]),
        sbatch_foreign(&[
            "--job-name=s.web",
            "--array=0",
            &format!(
                "--comment=stackctl/v1;owner={other_owner};stack=s;svc=web;spec=0000000000000000;nonce=x;idx=0"
            ),
        ]),
        sbatch_foreign(&[
            "--job-name=s.web",
            "--array=0",
            &format!("--comment=stackctl/v1 owner={} stack=s svc=web", repo.owner),
        ]),
    ];
    repo.extra.borrow_mut().extend(foreign.iter().cloned());
    let plan = repo.expect(&["plan", "--detailed-exitcode"], 2);
    assert!(
        plan.contains("Plan: 1 to add, 0 to change, 0 to destroy."),
        "foreign jobs must not count: {plan}"
    );
    repo.apply();
    // remove every service: prune must still leave the foreign jobs alone
    repo.remove_stack("s");
    let refused = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(refused.status.code(), Some(3), "refused by a safety rule");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--allow-destroy-all"), "{stderr}");
    assert_eq!(
        repo.alive("s.web").len(),
        1,
        "the refused apply cancelled nothing"
    );
    let plan = repo.expect(&["plan", "--detailed-exitcode", "--allow-destroy-all"], 2);
    assert!(
        plan.contains("Plan: 0 to add, 0 to change, 1 to destroy."),
        "{plan}"
    );
    repo.expect(&["apply", "--auto-approve", "--allow-destroy-all"], 0);
    repo.assert_converged();
    let all = squeue();
    for id in &foreign {
        let job = all
            .iter()
            .find(|j| j.id == *id || j.id.starts_with(&format!("{id}_")))
            .expect("foreign job still listed");
        assert!(job.alive(), "foreign job {id} was touched: {job:?}");
    }
}

#[test]
fn environment_values_reach_the_process_literally() {
    let repo = TestRepo::new("literal");
    let value =
        "it's \"quoted\" $(echo PWNED) `echo PWNED` ${HOME} \\n; rm -rf /nonexistent\nsecond line";
    let yaml_value = serde_json::to_string(value).unwrap(); // a JSON string is a valid YAML scalar
    repo.write_stack("s", &format!("services:\n  echo:\n    recipe: test/echo\n    environment:\n      VALUE: {yaml_value}\n"));
    repo.apply();
    let job = repo.alive("s.echo")[0].clone();
    let log = repo
        .path()
        .join("logs")
        .join(format!("s.echo-{}.out", job.id));
    wait_for("the job to print its VALUE", 300, || {
        std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), value);
}

#[test]
fn replicas_that_cannot_start_stay_pending_and_count_as_alive() {
    let repo = TestRepo::new("pending");
    // 4 h100 exist in the whole cluster: two replicas wanting 4 each cannot both run.
    repo.write_stack("s", "services:\n  big:\n    recipe: test/gpu\n    replicas: 2\n    resources: {gpu: 4, gpu_type: h100}\n");
    repo.apply();
    let jobs = repo.alive("s.big");
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().any(|j| j.state == "PENDING"), "{jobs:?}");
    repo.assert_converged();
    let status = repo.expect(&["status", "--json"], 0);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let svc = &status["services"][0];
    assert_eq!(svc["service"], "s.big");
    assert_eq!(svc["desired"], 2);
    assert_eq!(
        svc["running"].as_u64().unwrap() + svc["pending"].as_u64().unwrap(),
        2,
        "{svc}"
    );
    assert!(svc["pending"].as_u64().unwrap() >= 1, "{svc}");
    // Slurm says why once its scheduler has looked at the job ("None" until then).
    wait_for("a pending reason in status", 90, || {
        let status: serde_json::Value =
            serde_json::from_str(&repo.expect(&["status", "--json"], 0)).unwrap();
        !status["services"][0]["pending_reasons"]
            .as_array()
            .unwrap()
            .is_empty()
    });
}

#[test]
fn apply_killed_midway_then_rerun_converges_without_duplicates() {
    let repo = TestRepo::new("crash");
    let tools = tempfile::tempdir().unwrap();
    // A slow sbatch: each submit takes 2 s, so the kill lands between two submits.
    let path = wrapped_path(
        tools.path(),
        "#!/bin/sh\nsleep 2\nexec REAL_SBATCH \"$@\"\n",
    );
    repo.write_stack(
        "s",
        "services:\n  a:\n    recipe: test/sleeper\n    replicas: 2\n  b:\n    recipe: test/sleeper\n    replicas: 3\n  c:\n    recipe: test/sleeper\n",
    );
    let mut child = repo
        .command(&["apply", "--auto-approve"])
        .env("PATH", &path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    child.kill().unwrap();
    child.wait().unwrap();
    // Let an orphaned sbatch finish whatever it was doing, as it would after a real crash.
    std::thread::sleep(Duration::from_secs(3));
    let partial = repo.jobs().len();
    assert!(
        partial > 0 && partial < 6,
        "the kill must land mid-apply: {partial} of 6 jobs exist"
    );
    repo.apply();
    assert_eq!(repo.indexes("s.a"), vec![0, 1]);
    assert_eq!(repo.indexes("s.b"), vec![0, 1, 2]);
    assert_eq!(repo.indexes("s.c"), vec![0]);
    repo.assert_converged();
}

#[test]
fn a_submit_that_fails_after_creating_the_job_is_found_by_its_nonce_not_repeated() {
    let repo = TestRepo::new("nonce");
    let tools = tempfile::tempdir().unwrap();
    // The job is created, then sbatch reports a timeout, as sbatch does when the reply is lost.
    let path = wrapped_path(
        tools.path(),
        "#!/bin/sh\ncase \"$*\" in *--test-only*) exec REAL_SBATCH \"$@\" ;; esac\nREAL_SBATCH \"$@\" >/dev/null || exit 1\necho 'sbatch: error: Batch job submission failed: Socket timed out on send/recv operation' >&2\nexit 1\n",
    );
    repo.write_stack(
        "s",
        "services:\n  web:\n    recipe: test/sleeper\n    replicas: 2\n",
    );
    let output = repo
        .command(&["apply", "--auto-approve"])
        .env("PATH", &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Apply complete! Jobs: 2 added"), "{stdout}");
    assert_eq!(
        repo.indexes("s.web"),
        vec![0, 1],
        "exactly one submission must exist"
    );
    repo.assert_converged();
}

#[test]
fn apply_refuses_without_a_terminal_unless_auto_approved() {
    let repo = TestRepo::new("approve");
    repo.write_stack("s", "services:\n  web:\n    recipe: test/sleeper\n");
    let output = repo
        .command(&["apply"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--auto-approve"));
    assert!(
        repo.jobs().is_empty(),
        "nothing may be submitted without approval"
    );
}

#[test]
fn plan_json_is_versioned_and_lists_one_entry_per_change() {
    let repo = TestRepo::new("json");
    repo.write_stack(
        "s",
        "services:\n  web:\n    recipe: test/sleeper\n    replicas: 2\n",
    );
    let out = repo.expect(&["plan", "--json"], 0);
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["format_version"], "1.7");
    assert_eq!(plan["owner"], repo.owner.as_str());
    let changes = plan["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0]["address"], "s.web[0]");
    assert_eq!(changes[0]["actions"], serde_json::json!(["create"]));
    assert_eq!(
        plan["summary"],
        serde_json::json!({"add": 2, "change": 0, "destroy": 0})
    );
}

/// Slurm unreachable, without stopping anything shared: a copy of the cluster's slurm.conf
/// whose controller port is closed. `plan` (with `--detailed-exitcode` too: never 2) and
/// `apply` exit 5 with Slurm's own reason, and nothing is submitted.
#[test]
fn an_unreachable_controller_exits_5_and_submits_nothing() {
    let repo = TestRepo::new("unreachable");
    repo.write_stack("s", "services:\n  web:\n    recipe: test/sleeper\n");
    // A port nothing listens on once the listener is dropped.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = std::fs::read_to_string(slurm_conf()).unwrap();
    assert!(
        conf.lines().any(|l| l.starts_with("SlurmctldPort=")),
        "{conf}"
    );
    let bogus: Vec<String> = conf
        .lines()
        .map(|l| match l.starts_with("SlurmctldPort=") {
            true => format!("SlurmctldPort={port}"),
            false => l.to_owned(),
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slurm.conf");
    std::fs::write(&path, bogus.join("\n") + "\n").unwrap();
    for args in [
        &["plan"][..],
        &["plan", "--detailed-exitcode"],
        &["apply", "--auto-approve"],
    ] {
        let output = repo
            .command(args)
            .env("SLURM_CONF", &path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(5), "{args:?}: {stderr}");
        assert!(
            stderr.contains("Unable to contact slurm controller"),
            "{args:?}: {stderr}"
        );
    }
    assert!(repo.jobs().is_empty(), "nothing was submitted");
}

#[test]
fn a_request_no_node_can_satisfy_fails_the_plan_and_a_fixed_repo_then_converges() {
    let repo = TestRepo::new("rejected");
    // No node has 5 GPUs: the plan refuses before anything is submitted or cancelled.
    repo.write_stack("s", "services:\n  big:\n    recipe: test/gpu\n    resources: {gpu: 5}\n  ok:\n    recipe: test/sleeper\n");
    let output = repo.run(&["apply", "--auto-approve"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(3),
        "refused as unschedulable: {stderr}"
    );
    assert!(
        stderr.contains("stacks/s.yaml:4:") && stderr.contains("services.big.resources.gpu"),
        "{stderr}"
    );
    assert!(
        repo.jobs().is_empty(),
        "nothing is submitted: {:?}",
        repo.jobs()
    );
    repo.write_stack("s", "services:\n  big:\n    recipe: test/gpu\n    resources: {gpu: 1}\n  ok:\n    recipe: test/sleeper\n");
    repo.apply();
    assert_eq!(repo.indexes("s.big"), vec![0]);
    assert_eq!(repo.indexes("s.ok"), vec![0]);
    repo.assert_converged();
}

#[test]
fn a_requeued_job_keeps_its_id_and_is_not_copied_while_it_completes() {
    let repo = TestRepo::new("requeue");
    // A script that outlives SIGTERM keeps the requeued job COMPLETING for KillWait (5 s):
    // long enough for an apply to see it there.
    let started = repo.path().join("started");
    std::fs::write(
        repo.path().join("recipes/test/stubborn.yaml"),
        format!(
            "name: stubborn\ncommand: |\n  trap '' TERM\n  touch {}\n  while :; do sleep 1; done\nresources: {{cpu: 1, memory: 64M, time_limit: 15}}\n",
            started.display()
        ),
    )
    .unwrap();
    repo.write_stack("s", "services:\n  web:\n    recipe: test/stubborn\n");
    repo.apply();
    let job = repo.alive("s.web")[0].clone();
    wait_for("the job's script to start", 240, || started.exists());
    // What Slurm does after a node failure with requeue enabled: same job id, COMPLETING while
    // the node cleans up, then back to PENDING.
    scontrol(&["requeue", &job.id]);
    let out = repo.expect(&["apply", "--auto-approve"], 0);
    assert!(
        out.contains(&format!("s.web[0] job {} is still COMPLETING", job.id)),
        "the apply saw the job completing and left its index alone: {out}"
    );
    wait_for("the requeued job to be pending again", 60, || {
        repo.jobs()
            .iter()
            .any(|j| j.id == job.id && j.state == "PENDING")
    });
    let alive = repo.alive("s.web");
    assert_eq!(alive.len(), 1, "no copy beside the requeued job: {alive:?}");
    assert_eq!(alive[0].id, job.id);
    repo.assert_converged();
}

/// Runs `scontrol` with `args`, asserting it succeeds.
fn scontrol(args: &[&str]) {
    let output = Command::new("scontrol")
        .env("SLURM_CONF", slurm_conf())
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "scontrol {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_change_no_node_can_satisfy_fails_the_plan_at_its_line_and_the_replica_keeps_running() {
    let repo = TestRepo::new("impossible");
    repo.write_stack("s", "services:\n  web:\n    recipe: test/sleeper\n");
    repo.apply();
    let before = repo.alive("s.web");
    // Each override sits on line 5 of the stack file; the field names what is wrong.
    for (override_yaml, field) in [
        ("slurm: {partition: nosuch}", "slurm.partition"),
        ("resources: {gpu: 1, gpu_type: v100}", "resources.gpu_type"),
        ("resources: {gpu: 5, gpu_type: a100}", "resources.gpu"),
        ("resources: {cpu: 64}", "resources.cpu"),
        ("resources: {nodes: 4}", "resources.nodes"),
        ("resources: {memory: 64G}", "resources.memory"),
        (
            "resources: {time_limit: 120}\n    slurm: {partition: short}",
            "resources.time_limit",
        ),
    ] {
        repo.write_stack(
            "s",
            &format!(
                "services:\n  web:\n    recipe: test/sleeper\n    # changed\n    {override_yaml}\n"
            ),
        );
        for command in [&["plan"][..], &["apply", "--auto-approve"]] {
            let output = repo.run(command);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(3), "{override_yaml}: {stderr}");
            assert!(
                stderr.contains("stacks/s.yaml:5:")
                    && stderr.contains(&format!("field `services.web.{field}`")),
                "{override_yaml}: the error must name file, line and field: {stderr}"
            );
        }
        let now = repo.alive("s.web");
        assert_eq!(now.len(), 1, "{override_yaml}: {now:?}");
        assert_eq!(
            now[0].id, before[0].id,
            "{override_yaml}: the replica must keep running"
        );
    }
}

#[test]
fn a_change_only_slurm_can_reject_leaves_the_old_replica_running_and_exits_1() {
    let repo = TestRepo::new("testonly");
    repo.write_stack(
        "s",
        "services:\n  web:\n    recipe: test/sleeper\n    replicas: 2\n",
    );
    repo.apply();
    // Running, so the plan is the same however fast the machine is (a pending replica is
    // replaced at once, a running one rolls).
    wait_for("both replicas to run", 120, || {
        let jobs = repo.alive("s.web");
        jobs.len() == 2 && jobs.iter().all(|j| j.state == "RUNNING")
    });
    let before: Vec<String> = repo.alive("s.web").into_iter().map(|j| j.id).collect();
    // Partition `closed` exists and fits, but is drained: only Slurm itself can say no.
    repo.write_stack(
        "s",
        "services:\n  web:\n    recipe: test/sleeper\n    replicas: 2\n    slurm: {partition: closed}\n",
    );
    let output = repo.run(&["apply", "--auto-approve"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("Required partition not available"),
        "Slurm's own message: {stderr}"
    );
    assert!(
        // One replica rolls at a time (max_surge 1): its successor and its cancel failed.
        stdout.contains("0 added, 0 changed, 0 destroyed, 2 failed")
            && !stdout.contains("Run apply again"),
        "{stdout}"
    );
    let after: Vec<String> = repo.alive("s.web").into_iter().map(|j| j.id).collect();
    assert_eq!(after, before, "the old replicas keep running");
}

#[test]
fn stopped_held_and_requeue_held_replicas_keep_their_index_and_show_as_stuck() {
    let repo = TestRepo::new("stuck");
    repo.write_stack(
        "s",
        "services:\n  web:\n    recipe: test/sleeper\n    replicas: 3\n",
    );
    repo.apply();
    wait_for("all replicas to run", 60, || {
        let jobs = repo.alive("s.web");
        jobs.len() == 3 && jobs.iter().all(|j| j.state == "RUNNING")
    });
    let ids: Vec<String> = repo.alive("s.web").into_iter().map(|j| j.id).collect();
    scontrol(&["requeuehold", &ids[1]]);
    scontrol(&["requeue", &ids[2]]);
    wait_for("the requeued job to pend", 60, || {
        repo.jobs()
            .iter()
            .any(|j| j.id == ids[2] && j.state == "PENDING")
    });
    scontrol(&["hold", &ids[2]]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let jobs = repo.alive("s.web");
        let states: Vec<(String, String)> = jobs
            .iter()
            .map(|j| (j.id.clone(), j.state.clone()))
            .collect();
        if jobs.len() == 3
            && jobs.iter().any(|j| j.state == "STOPPED")
            && jobs.iter().all(|j| j.state != "RUNNING")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "STOPPED and held states not reached: {states:?}"
        );
        // A signal sent while the batch step is still launching is lost: send it until seen.
        if jobs.iter().any(|j| j.id == ids[0] && j.state == "RUNNING") {
            let _ = Command::new("scancel")
                .env("SLURM_CONF", slurm_conf())
                .args(["--signal=STOP", &ids[0]])
                .output();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    repo.assert_converged();
    repo.apply();
    assert_eq!(
        repo.indexes("s.web"),
        [0, 1, 2],
        "no second job on any index"
    );
    let status: serde_json::Value =
        serde_json::from_str(&repo.expect(&["status", "--json"], 0)).unwrap();
    assert_eq!(status["services"][0]["stuck"], 3, "{status}");
    assert_eq!(status["services"][0]["running"], 0, "{status}");
}

#[test]
fn a_stack_file_moved_into_a_subdirectory_is_an_error_not_a_destroy() {
    let repo = TestRepo::new("subdir");
    repo.write_stack("web", "services:\n  app:\n    recipe: test/sleeper\n");
    repo.apply();
    std::fs::create_dir(repo.path().join("stacks/team")).unwrap();
    std::fs::rename(
        repo.path().join("stacks/web.yaml"),
        repo.path().join("stacks/team/web.yaml"),
    )
    .unwrap();
    for command in [&["validate"][..], &["plan"], &["apply", "--auto-approve"]] {
        let output = repo.run(command);
        assert_eq!(output.status.code(), Some(1), "{command:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("stacks/team"), "{command:?}: {stderr}");
        assert!(
            String::from_utf8_lossy(&output.stdout).is_empty(),
            "{command:?}: nothing may be planned"
        );
    }
    assert_eq!(repo.indexes("web.app"), [0]);
}

#[test]
fn environment_values_that_yaml_would_retype_reach_the_job_as_written() {
    let repo = TestRepo::new("yamltypes");
    let values = [
        "8.0",
        "12.10",
        "0022",
        "yes",
        "NO",
        "0x1F",
        "1_000",
        "off",
        "123456789012345678901234567890",
    ];
    let mut yaml = String::from("services:\n");
    for (i, value) in values.iter().enumerate() {
        yaml.push_str(&format!(
            "  v{i}:\n    recipe: test/echo\n    environment:\n      VALUE: {value}\n"
        ));
    }
    repo.write_stack("s", &yaml);
    let output = repo.run(&["apply", "--auto-approve"]);
    if output.status.code() == Some(1) {
        // Refusing is allowed only with a clear message naming each value to quote.
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("quote"), "{stderr}");
        assert!(repo.jobs().is_empty());
        return;
    }
    assert_eq!(output.status.code(), Some(0));
    for (i, value) in values.iter().enumerate() {
        let job = repo.alive(&format!("s.v{i}"))[0].clone();
        let log = repo
            .path()
            .join("logs")
            .join(format!("s.v{i}-{}.out", job.id));
        wait_for("the job to print its VALUE", 300, || {
            std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty())
        });
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), *value);
    }
}

#[test]
fn repos_whose_remotes_differ_only_by_host_never_see_each_others_jobs() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("infra-{}-{nanos}", std::process::id());
    let a = TestRepo::new("hosta");
    let b = TestRepo::new("hostb");
    for (repo, url) in [
        (&a, format!("git@gitlab.a.example:team/{name}.git")),
        (&b, format!("https://github.com/team/{name}")),
    ] {
        // No `owner:`: it is derived from the remote.
        std::fs::write(
            repo.path().join("stackctl.yaml"),
            format!("log_dir: {}\n", repo.path().join("logs").display()),
        )
        .unwrap();
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .arg("-C")
                .arg(repo.path())
                .args(args)
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q"]);
        git(&["remote", "add", "origin", &url]);
        repo.write_stack("s", "services:\n  web:\n    recipe: test/sleeper\n");
    }
    let owner_a = a.expect(&["validate"], 0);
    let owner_b = b.expect(&["validate"], 0);
    assert!(
        owner_a.contains(&format!("gitlab.a.example/team/{name}")),
        "{owner_a}"
    );
    assert!(
        owner_b.contains(&format!("github.com/team/{name}")),
        "{owner_b}"
    );
    a.apply();
    b.apply();
    a.assert_converged();
    b.assert_converged();
    let count = |host: &str| {
        squeue()
            .into_iter()
            .filter(|j| j.alive() && j.comment.contains(&format!(";owner={host}/team/{name};")))
            .count()
    };
    assert_eq!((count("gitlab.a.example"), count("github.com")), (1, 1));
    // Clean up by job id under each derived owner.
    let ids: Vec<String> = squeue()
        .into_iter()
        .filter(|j| j.alive() && j.comment.contains(&format!("/team/{name};")))
        .map(|j| j.id)
        .collect();
    scancel(&ids);
}

#[test]
fn concurrent_applies_take_turns_and_never_duplicate_a_replica() {
    let repo = TestRepo::new("concurrent");
    let mut yaml = String::from("services:\n");
    for i in 0..10 {
        yaml.push_str(&format!(
            "  svc{i}:\n    recipe: test/sleeper\n    replicas: 4\n    resources: {{memory: 16M}}\n"
        ));
    }
    repo.write_stack("s", &yaml);
    for round in 0..20 {
        let children: Vec<_> = (0..4)
            .map(|_| {
                repo.command(&["apply", "--auto-approve", "--lock-timeout", "60s"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut said = Vec::new();
        for child in children {
            let output = child.wait_with_output().unwrap();
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert_eq!(output.status.code(), Some(0), "round {round}: {text}");
            said.push(text);
        }
        let alive: Vec<Job> = repo
            .jobs()
            .into_iter()
            .filter(|j| j.alive() && j.comment.starts_with("stackctl/v1;"))
            .collect();
        assert_eq!(alive.len(), 40, "round {round}: {alive:?}");
        for i in 0..10 {
            let service = format!("s.svc{i}");
            // On failure: the service's jobs (ids, states, markers with nonces) and what each
            // apply printed, so a duplicate can be traced to the apply that made it.
            assert_eq!(
                repo.indexes(&service),
                [0, 1, 2, 3],
                "round {round}: {:#?}\n{}",
                repo.alive(&service),
                said.join("\n----\n")
            );
        }
        assert!(
            lock_placeholders(squeue(), &repo.owner).is_empty(),
            "round {round}: a lock was left behind"
        );
        // Back to an empty cluster, by job id.
        scancel(&alive.into_iter().map(|j| j.id).collect::<Vec<_>>());
        wait_for("the round's jobs to end", 60, || {
            repo.jobs().iter().all(|j| !j.alive())
        });
    }
}

#[test]
fn a_held_lock_refuses_apply_naming_the_holder_and_force_unlock_removes_it() {
    use stackctl::lock::{self, Identity, LockRequest};
    use stackctl::slurm::CliBackend;
    let repo = TestRepo::new("held");
    repo.write_stack("s", "services:\n  web:\n    recipe: test/sleeper\n");
    require_slurm_conf_in_env();
    let backend = CliBackend::default();
    let holder = Identity {
        host: "ci-runner-elsewhere".into(),
        ..Identity::current()
    };
    let mut held = lock::acquire(
        &backend,
        &LockRequest {
            owner: stackctl::desired::Owner::parse(&repo.owner).unwrap(),
            expiry: Duration::from_secs(600),
            wait: Duration::ZERO,
            partition: None,
            identity: holder,
        },
    )
    .unwrap();
    let lock_id = held.id().to_string();
    let output = repo.run(&["apply", "--auto-approve"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "the lock is held: {stderr}");
    assert!(
        stderr.contains(&lock_id) && stderr.contains("ci-runner-elsewhere"),
        "the refusal names the lock and its holder: {stderr}"
    );
    assert!(repo.alive("s.web").is_empty(), "the loser submits nothing");
    let plan = repo.run(&["plan"]);
    assert!(
        String::from_utf8_lossy(&plan.stderr).contains(&lock_id),
        "plan says a lock is held"
    );
    let status = repo.expect(&["status"], 0);
    assert!(
        status.contains(&format!(
            "Apply lock {lock_id}: held by ci-runner-elsewhere pid {}",
            std::process::id()
        )) && !status.contains("stale"),
        "status names the lock and its holder: {status}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&repo.expect(&["status", "--json"], 0)).unwrap();
    assert_eq!(json["locks"][0]["id"], lock_id.as_str(), "{json}");
    assert_eq!(json["locks"][0]["host"], "ci-runner-elsewhere", "{json}");
    assert_eq!(json["locks"][0]["stale"], false, "{json}");
    repo.expect(&["force-unlock", &lock_id], 0);
    assert!(
        lock_placeholders(squeue(), &repo.owner).is_empty(),
        "force-unlock cancels the placeholder"
    );
    assert!(
        held.renew(&backend).is_err(),
        "the old holder learns it lost the lock"
    );
    repo.apply();
    assert_eq!(repo.indexes("s.web"), [0]);
    assert!(
        lock_placeholders(squeue(), &repo.owner).is_empty(),
        "apply releases its own lock"
    );
}

/// Checks that the library, which reads `SLURM_CONF` from this process's environment as the
/// binary does, reaches the test cluster.
fn require_slurm_conf_in_env() {
    assert_eq!(
        std::env::var("SLURM_CONF")
            .ok()
            .as_deref()
            .unwrap_or(DEFAULT_SLURM_CONF),
        slurm_conf(),
        "run the suite with SLURM_CONF set (scripts/test does)"
    );
}

#[test]
fn a_lock_from_another_host_is_broken_only_after_its_expiry() {
    use stackctl::lock::{self, Identity, LockRequest};
    use stackctl::slurm::CliBackend;
    let repo = TestRepo::new("expiry");
    require_slurm_conf_in_env();
    repo.write_stack("s", "services:\n  web:\n    recipe: test/sleeper\n");
    let backend = CliBackend::default();
    let held = lock::acquire(
        &backend,
        &LockRequest {
            owner: stackctl::desired::Owner::parse(&repo.owner).unwrap(),
            expiry: Duration::from_secs(10),
            wait: Duration::ZERO,
            partition: None,
            identity: Identity {
                host: "gone-for-good".into(),
                ..Identity::current()
            },
        },
    )
    .unwrap();
    // The holder dies without releasing: its placeholder stays, nobody renews it.
    drop(held);
    let started = Instant::now();
    let output = repo.run(&["apply", "--auto-approve", "--lock-timeout", "60s"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5),
        "a live-looking lock from another host must be respected until it expires ({waited:?})"
    );
    assert_eq!(repo.indexes("s.web"), [0]);
    assert!(lock_placeholders(squeue(), &repo.owner).is_empty());
}

#[test]
fn a_holder_killed_with_sigkill_does_not_block_the_next_apply_on_its_host() {
    let repo = TestRepo::new("sigkill");
    let tools = tempfile::tempdir().unwrap();
    // Real submissions hang for 30 s; the lock's placeholder and `--test-only` go through.
    let path = wrapped_path(
        tools.path(),
        "#!/bin/sh\nscript=$(mktemp)\ncat >\"$script\"\ncase \"$*\" in *--test-only*) ;; *) grep -q stackctl-lock \"$script\" || sleep 30 ;; esac\nexec REAL_SBATCH \"$@\" <\"$script\"\n",
    );
    repo.write_stack(
        "s",
        "services:\n  web:\n    recipe: test/sleeper\n    replicas: 2\n",
    );
    let mut child = repo
        .command(&["apply", "--auto-approve"])
        .env("PATH", &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the apply to hold its lock", 60, || {
        !lock_placeholders(squeue(), &repo.owner).is_empty()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let started = Instant::now();
    repo.apply();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the dead holder's lock must be broken at once, not after its expiry"
    );
    assert_eq!(repo.indexes("s.web"), [0, 1]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        repo.indexes("s.web"),
        [0, 1],
        "the killed apply's sbatch must not submit"
    );
    assert!(lock_placeholders(squeue(), &repo.owner).is_empty());
}

#[test]
fn ctrl_c_during_apply_reports_what_was_and_was_not_done_releases_the_lock_and_exits_130() {
    let repo = TestRepo::new("sigint");
    let tools = tempfile::tempdir().unwrap();
    // Real submissions wait 2 s; the lock's placeholder and `--test-only` go through at once.
    let path = slow_submits(tools.path(), 2);
    repo.write_stack(
        "s",
        "services:\n  a:\n    recipe: test/sleeper\n    replicas: 2\n  b:\n    recipe: test/sleeper\n  c:\n    recipe: test/sleeper\n    replicas: 2\n",
    );
    let out = tools.path().join("stdout");
    let err = tools.path().join("stderr");
    // One submission at a time, so exactly one is in flight when the interrupt comes (several
    // at once: apply's unit tests).
    let mut child = repo
        .command(&["apply", "--auto-approve"])
        .env("PATH", &path)
        .env("STACKCTL_MAX_IN_FLIGHT", "1")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    // Ctrl-C once the first service is submitted, while the next submit is in flight.
    wait_for("the first service's replicas", 60, || {
        !repo.alive("s.a").is_empty()
    });
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = wait_child(&mut child, 60, "apply to exit after SIGINT");
    let stdout = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert_eq!(status.code(), Some(130), "{stdout}\n{stderr}");
    let done = stdout.split("Done:").nth(1).unwrap_or_default();
    let (done, not_done) = done
        .split_once("Failed or not attempted")
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        done.contains("s.a[0-1]: submitted job array"),
        "{stdout}\n{stderr}"
    );
    assert!(
        not_done.contains("submitting s.c[0-1]: not attempted (interrupted)")
            && not_done.contains("Apply interrupted!"),
        "{stdout}\n{stderr}"
    );
    assert!(stderr.contains("Interrupted"), "{stderr}");
    assert!(
        lock_placeholders(squeue(), &repo.owner).is_empty(),
        "the interrupted apply releases its lock"
    );
    assert!(repo.alive("s.c").is_empty(), "nothing after the interrupt");
    // A re-run converges, with no index twice.
    repo.apply();
    assert_eq!(repo.indexes("s.a"), [0, 1]);
    assert_eq!(repo.indexes("s.b"), [0]);
    assert_eq!(repo.indexes("s.c"), [0, 1]);
    repo.assert_converged();
    assert!(lock_placeholders(squeue(), &repo.owner).is_empty());
}

#[test]
fn ctrl_c_while_apply_waits_between_passes_stops_at_once_with_130_and_keeps_the_replicas() {
    let repo = TestRepo::new("sigint-wait");
    // Never ready: its check has not passed and will not fail within the start period.
    std::fs::write(
        repo.path().join("recipes/test/deaf.yaml"),
        "name: deaf\ncommand: exec sleep 600\nresources: {cpu: 1, memory: 64M, time_limit: 15}\nports: [auto]\nhealth:\n  tcp: {}\n  interval: 1s\n  start_period: 600s\n",
    )
    .unwrap();
    repo.write_stack(
        "s",
        "services:\n  deaf:\n    recipe: test/deaf\n    replicas: 2\n",
    );
    let tools = tempfile::tempdir().unwrap();
    let out = tools.path().join("stdout");
    let mut child = repo
        .command(&["apply", "--auto-approve", "--wait=300s"])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the replicas to be submitted", 60, || {
        repo.indexes("s.deaf") == [0, 1]
    });
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    // Well before --wait runs out.
    let status = wait_child(&mut child, 60, "apply --wait to exit after SIGINT");
    let stdout = std::fs::read_to_string(&out).unwrap();
    assert_eq!(status.code(), Some(130), "{stdout}");
    let (done, not_done) = stdout
        .split_once("Not done yet")
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(done.contains("2 added"), "{stdout}");
    assert!(
        not_done.contains("waiting: s.deaf[0]") && not_done.contains("Apply interrupted!"),
        "{stdout}"
    );
    assert!(lock_placeholders(squeue(), &repo.owner).is_empty());
    assert_eq!(repo.indexes("s.deaf"), [0, 1], "the replicas keep running");
    repo.assert_converged();
}
