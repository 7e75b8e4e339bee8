//! End-to-end: the slurmrestd backend (`cluster.backend: rest`) against the test cluster's
//! slurmrestd (v0.0.38, JWT, http://127.0.0.1:16820), acting as root like the other suites, so
//! the shared helpers see its jobs. Covered: create, scale, replace, self-heal and destroy;
//! `plan --json` byte-identical to the local CLI's for the same state; concurrent applies over
//! REST and the CLI that never exceed the desired replicas; and one clear line for a wrong
//! token, an unreachable URL and a request Slurm refuses with `errors[]`, with the token in no
//! output even at debug level; and a listing asked with `update_time` that still carries every
//! job after a change.
#![cfg(feature = "cluster")]

use crate::common;

use common::rest::{REST_URL, token};
use common::{TestRepo, sleepers, wait_for};
use stackctl::desired::marker::MARKER_PREFIX;
use stackctl::desired::{RestTarget, TokenSource};
use stackctl::slurm::Backend;
use stackctl::slurm::rest::{ListingMemo, RestBackend};
use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::sync::Arc;

/// Writes `stackctl.yaml` for slurmrestd at `url` as root, logs in the repo.
fn configure(repo: &TestRepo, url: &str) {
    let logs = repo.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    common::rest::configure(repo.path(), &repo.owner, &logs, url, "root");
}

/// stackctl over REST on the repo (see [`common::rest::command`]).
fn run(repo: &TestRepo, token: &str, args: &[&str]) -> Output {
    common::rest::command(repo.path(), token, args)
        .output()
        .unwrap()
}

fn expect(repo: &TestRepo, token: &str, args: &[&str], code: i32) -> String {
    common::stdout_of(&run(repo, token, args), args, code)
}

#[test]
fn over_rest_apply_creates_scales_replaces_heals_and_destroys() {
    let repo = TestRepo::new("rest-lifecycle");
    configure(&repo, REST_URL);
    let jwt = token("root", 900);
    repo.write_stack("s", &sleepers(2, "a"));
    let plan = expect(&repo, &jwt, &["plan"], 0);
    assert!(plan.contains("2 to add"), "{plan}");
    expect(&repo, &jwt, &["apply", "--auto-approve"], 0);
    let first = repo.alive("s.web");
    assert_eq!(first.len(), 2, "{first:?}");
    // The pending array's tasks, listed over REST as one record, count as two replicas.
    expect(&repo, &jwt, &["plan", "--detailed-exitcode"], 0);

    repo.write_stack("s", &sleepers(3, "a"));
    expect(&repo, &jwt, &["apply", "--auto-approve"], 0);
    assert_eq!(repo.alive("s.web").len(), 3);

    repo.write_stack("s", &sleepers(3, "b"));
    let replace = expect(&repo, &jwt, &["plan"], 0);
    assert!(
        replace.contains("previous spec could not be read back"),
        "REST cannot read batch scripts, and the plan says so: {replace}"
    );
    expect(&repo, &jwt, &["apply", "--auto-approve"], 0);
    let replaced = repo.alive("s.web");
    assert_eq!(replaced.len(), 3, "{replaced:?}");
    assert!(replaced.iter().all(|j| first.iter().all(|f| f.id != j.id)));

    common::scancel(&[replaced[1].id.clone()]);
    wait_for("the cancelled replica to end", 30, || {
        repo.alive("s.web").len() == 2
    });
    let heal = expect(&repo, &jwt, &["plan"], 0);
    assert!(heal.contains("1 to add"), "{heal}");
    expect(&repo, &jwt, &["apply", "--auto-approve"], 0);
    assert_eq!(repo.alive("s.web").len(), 3);

    repo.remove_stack("s");
    let refused = run(&repo, &jwt, &["apply", "--auto-approve"]);
    assert_eq!(
        refused.status.code(),
        Some(3),
        "cancelling every job takes a flag"
    );
    expect(
        &repo,
        &jwt,
        &["apply", "--auto-approve", "--allow-destroy-all"],
        0,
    );
    wait_for("every replica to end", 30, || {
        repo.alive("s.web").is_empty()
    });
}

#[test]
fn rest_and_cli_plans_are_byte_identical_and_concurrent_applies_never_exceed_replicas() {
    let repo = TestRepo::new("rest-same-plan");
    configure(&repo, REST_URL);
    let jwt = token("root", 900);
    repo.write_stack("s", &sleepers(2, "a"));
    expect(&repo, &jwt, &["apply", "--auto-approve"], 0);
    let alive = repo.alive("s.web");
    common::scancel(&[alive[0].id.clone()]);
    wait_for("the cancelled replica to end", 30, || {
        repo.alive("s.web").len() == 1
    });
    repo.write_stack("s", &sleepers(4, "a"));
    let over_rest = expect(&repo, &jwt, &["plan", "--json"], 0);
    assert!(over_rest.contains("\"add\": 3"), "{over_rest}");

    // The same repo with the local CLI backend.
    let local = TestRepo::new("rest-same-plan-local");
    std::fs::remove_dir_all(local.path().join("stacks")).unwrap();
    std::fs::remove_dir_all(local.path().join("recipes")).unwrap();
    for dir in ["stacks", "recipes"] {
        let status = Command::new("cp")
            .arg("-r")
            .arg(repo.path().join(dir))
            .arg(local.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
    std::fs::write(
        local.path().join("stackctl.yaml"),
        format!(
            "owner: {}\nlog_dir: {}\n",
            repo.owner,
            repo.path().join("logs").display()
        ),
    )
    .unwrap();
    let over_cli = local.expect(&["plan", "--json"], 0);
    // Byte for byte, but for the start estimates only the CLI can ask Slurm for
    // (`sbatch --test-only`; over v0.0.38 `test_only` would submit a real job).
    // and the warning that names what slurmrestd cannot check.
    let strip = |text: &str| {
        let mut value: serde_json::Value = serde_json::from_str(text).unwrap();
        let warnings = value["warnings"].as_array_mut().unwrap();
        let named = warnings.len();
        warnings.retain(|w| !w.as_str().unwrap().starts_with("over slurmrestd v0.0.38"));
        assert!(named - warnings.len() <= 1);
        let mut estimates = named - warnings.len();
        for change in value["changes"].as_array_mut().unwrap() {
            let change = change.as_object_mut().unwrap();
            estimates += usize::from(change.remove("start_estimate").is_some());
        }
        (serde_json::to_string_pretty(&value).unwrap(), estimates)
    };
    let (rest_stripped, rest_estimates) = strip(&over_rest);
    let (cli_stripped, cli_estimates) = strip(&over_cli);
    // The REST plan names its one warning and has no estimate; the CLI's the reverse.
    assert_eq!(rest_estimates, 1, "{over_rest}");
    assert!(cli_estimates > 1, "{over_cli}");
    assert!(
        over_rest.contains("cannot pre-check submissions"),
        "{over_rest}"
    );
    assert_eq!(rest_stripped, cli_stripped);

    // Both apply at once: the lock lets one converge and the other find nothing to do.
    let mut cli = local
        .command(&["apply", "--auto-approve", "--lock-timeout", "60s"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    expect(
        &repo,
        &jwt,
        &["apply", "--auto-approve", "--lock-timeout", "60s"],
        0,
    );
    assert!(cli.wait().unwrap().success());
    assert_eq!(repo.alive("s.web").len(), 4);
    expect(&repo, &jwt, &["plan", "--detailed-exitcode"], 0);
}

/// Runs `args` expecting exit `code` with one line on stderr; returns that line.
fn one_line_failure(repo: &TestRepo, token: &str, args: &[&str], code: i32) -> String {
    let mut command = common::rest::command(repo.path(), token, args);
    command.env("STACKCTL_LOG", "debug");
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stdout}\n{stderr}");
    assert!(
        !stdout.contains(token) && !stderr.contains(token),
        "the token leaked:\n{stdout}\n{stderr}"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0].to_owned()
}

#[test]
fn rest_failures_are_one_clear_line_and_never_show_the_token() {
    let repo = TestRepo::new("rest-failures");
    configure(&repo, REST_URL);
    repo.write_stack("s", &sleepers(1, "a"));

    let wrong = one_line_failure(&repo, "not-a-token", &["plan"], 1);
    assert!(wrong.contains("the token is not a JWT"), "{wrong}");

    let short = token("root", 1);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let expired = one_line_failure(&repo, &short, &["plan"], 1);
    assert!(expired.contains("the token expired"), "{expired}");

    // A token slurmctld cannot verify (its signature altered): Slurm's own answer, one line.
    // Its error number (-1, "Unspecified error") is the one an unreachable slurmctld answers
    // a listing with (tests/fixtures/slurm-errors/rest/), so it exits as unreachable.
    let jwt = token("root", 900);
    let (unsigned, _) = jwt.rsplit_once('.').unwrap();
    let forged = format!("{unsigned}.AAAA");
    let refused = one_line_failure(&repo, &forged, &["plan"], 5);
    assert!(refused.contains("signature"), "{refused}");

    configure(&repo, "http://127.0.0.1:1");
    let unreachable = one_line_failure(&repo, &jwt, &["plan"], 5);
    assert!(
        unreachable.contains("cannot reach slurmrestd at http://127.0.0.1:1"),
        "{unreachable}"
    );

    // A version the server does not serve (22.05 has none past v0.0.38): named, with what it
    // offers.
    configure(&repo, REST_URL);
    repo.append_settings("  api: v0.0.40\n");
    let unserved = one_line_failure(&repo, &jwt, &["plan"], 1);
    assert!(
        unserved.contains("does not serve API v0.0.40") && unserved.contains("v0.0.38"),
        "{unserved}"
    );

    // Slurm refuses the submit (the test cluster's `closed` partition is drained; no
    // pre-check over REST can tell) with errors[]: reported, exit 1, nothing left behind (the
    // lock's placeholder is released).
    configure(&repo, REST_URL);
    repo.write_stack(
        "s",
        "services:\n  web:\n    recipe: test/sleeper\n    slurm: {partition: closed}\n",
    );
    let output = run(&repo, &jwt, &["apply", "--auto-approve"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("POST /slurm/v0.0.38/job/submit"),
        "Slurm's reason is shown: {stdout}\n{stderr}"
    );
    assert!(!stdout.contains(&jwt) && !stderr.contains(&jwt));
    wait_for("nothing of this owner alive", 30, || {
        repo.jobs().iter().all(|j| !j.alive())
    });
}

/// `scontrol -o show job ID` of the first record, as key=value pairs, times as unix seconds.
fn show_job(id: &str) -> std::collections::BTreeMap<String, String> {
    let output = Command::new("scontrol")
        .env("SLURM_CONF", common::slurm_conf())
        .env("SLURM_TIME_FORMAT", "%s")
        .args(["-o", "show", "job", id])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let first = text.lines().next().unwrap_or_default();
    first
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Every option a `JobRequest` can carry, submitted held over slurmrestd and with `sbatch`:
/// Slurm records the same job both ways (the v0.0.38 document alone was not enough: its
/// `begin_time` is a number the server refuses, and it lacks the key `--exclude` is). The
/// one intended difference: over REST the script logs itself (Slurm's output goes to
/// /dev/null, the working directory is the log directory).
#[test]
fn every_option_over_rest_means_what_it_means_over_the_cli() {
    use stackctl::desired::{RestTarget, TokenSource};
    use stackctl::job::{JobOptions, JobRequest};
    use stackctl::observed::JobId;
    use stackctl::slurm::{Backend, CliBackend, rest::RestBackend};

    common::require_cluster();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("jwt");
    std::fs::write(&token_file, token("root", 900)).unwrap();
    let rest = RestBackend::new(
        &RestTarget {
            url: REST_URL.into(),
            user: "root".into(),
            token: TokenSource::File(token_file),
            api: None,
        },
        None,
    )
    .unwrap();
    let cli = CliBackend::default();
    // A job to depend on, held so the dependency stays unfulfilled.
    let anchor = common::sbatch_foreign(&["--hold", "--job-name=rest-options-anchor"]);
    let logs = dir.path().join("not-yet").join("logs");
    let owner = format!("test/rest-options-{}", std::process::id());
    let with = |options: JobOptions| JobRequest {
        options: JobOptions {
            name: "rest.options".into(),
            comment: format!("stackctl;owner={owner};stack=rest;svc=options"),
            hold: true,
            output: Some(format!("{}/rest.options-%A_%a.out", logs.display())),
            error: Some(format!("{}/rest.options-%A_%a.err", logs.display())),
            export_none: true,
            ..options
        },
        body: "exec sleep 60\n".into(),
    };
    let requests = [
        with(JobOptions {
            array: Some("0-2%2".into()),
            dependency: Some(format!("after:{anchor}")),
            nodes: Some(1),
            ntasks_per_node: Some(1),
            cpus_per_task: Some(2),
            memory: Some("96M".into()),
            gres: Some("gpu:a100:1".into()),
            time_limit: Some(7),
            partition: Some("short".into()),
            exclude: Some("node2".into()),
            ..Default::default()
        }),
        with(JobOptions {
            array: Some("3".into()),
            begin: Some("now+900".into()),
            ntasks: Some(2),
            cpus_per_task: Some(1),
            memory_per_cpu: Some("48M".into()),
            gres: Some("gpu:h100:2".into()),
            time_limit: Some(90),
            partition: Some("debug".into()),
            exclude: Some("node[1-2]".into()),
            qos: Some("normal".into()),
            account: Some("research".into()),
            ..Default::default()
        }),
    ];
    /// Cancels what was submitted, even when an assertion fails.
    struct Cancel(Vec<String>);
    impl Drop for Cancel {
        fn drop(&mut self) {
            common::scancel(&self.0);
        }
    }
    let mut submitted = Cancel(vec![anchor.clone()]);
    let same = [
        "JobName",
        "Priority",
        "Reason",
        "Dependency",
        "ArrayTaskId",
        "Partition",
        "TimeLimit",
        "NumNodes",
        "NumCPUs",
        "NumTasks",
        "CPUs/Task",
        "ExcNodeList",
        "MinCPUsNode",
        "MinMemoryNode",
        "MinMemoryCPU",
        "TresPerNode",
        "Comment",
        "Account",
        "QOS",
    ];
    for request in &requests {
        let over_rest = rest.submit(request).unwrap().to_string();
        submitted.0.push(over_rest.clone());
        let over_cli = cli.submit(request).unwrap().to_string();
        submitted.0.push(over_cli.clone());
        let (r, c) = (show_job(&over_rest), show_job(&over_cli));
        for key in same {
            assert_eq!(r.get(key), c.get(key), "{key}: REST {r:?}\nCLI {c:?}");
        }
        assert_eq!(r["Priority"], "0", "held: {r:?}");
        assert_eq!(r["JobName"], "rest.options");
        // Begin time: the same delay after submission both ways.
        let delay = |job: &std::collections::BTreeMap<String, String>| {
            let at = |k: &str| job[k].parse::<i64>().ok();
            at("EligibleTime").zip(at("SubmitTime")).map(|(e, s)| e - s)
        };
        if request.options.begin.is_some() {
            let (rd, cd) = (delay(&r).unwrap(), delay(&c).unwrap());
            assert!(
                (895..=905).contains(&rd) && (rd - cd).abs() <= 2,
                "{r:?}\n{c:?}"
            );
        }
        assert_eq!(
            (r["StdOut"].as_str(), r["StdErr"].as_str()),
            ("/dev/null", "/dev/null")
        );
        assert_eq!(r["WorkDir"], logs.display().to_string());
        assert!(
            c["StdOut"].starts_with(&logs.display().to_string()),
            "{c:?}"
        );
        // The comment update (the readiness record) over REST: one task, nothing else.
        let first = JobId {
            array: over_rest.parse().unwrap(),
            task: Some(
                r["ArrayTaskId"]
                    .split(['-', '%'])
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap(),
            ),
        };
        let comment = format!("{};health=ready", request.options.comment);
        rest.update_comment(&first, &comment).unwrap();
        let updated = show_job(&first.to_string());
        assert_eq!(updated["Comment"], comment);
        assert_eq!(updated["TimeLimit"], r["TimeLimit"]);
    }
}

/// The last job of `svc` in the repo's stack `s`, ended ones included (highest array id).
fn latest_of(repo: &TestRepo, svc: &str) -> common::Job {
    let mut jobs: Vec<common::Job> = repo
        .jobs()
        .into_iter()
        .filter(|j| j.comment.contains(&format!(";svc={svc};")))
        .collect();
    jobs.sort_by_key(|j| j.id.split('_').next().unwrap().parse::<u64>().unwrap());
    jobs.pop().expect("the service has a job")
}

/// A REST apply into a log directory that does not exist yet: the replica runs and logs
/// (`stackctl logs` reads it), and once it fails, the next apply restarts it over REST with a
/// delayed start (slurmrestd 22.05 refused the `begin_time` stackctl sent).
#[test]
fn over_rest_a_missing_log_dir_is_made_by_the_job_and_a_failed_replica_restarts_backed_off() {
    let repo = TestRepo::new("rest-new-logdir");
    let logs = repo.path().join("made").join("by-the-job");
    common::rest::configure(repo.path(), &repo.owner, &logs, REST_URL, "root");
    let jwt = token("root", 1800);
    std::fs::write(
        repo.path().join("recipes/test/flaky.yaml"),
        "name: flaky\ncommand: |\n  echo \"out of replica $STACKCTL_REPLICA\"\n  echo \"err of replica $STACKCTL_REPLICA\" >&2\n  sleep 5\n  exit 4\nresources: {cpu: 1, memory: 64M, time_limit: 10}\nrestart: {backoff: 5m, max_backoff: 10m}\n",
    )
    .unwrap();
    repo.write_stack("s", "services:\n  flaky:\n    recipe: test/flaky\n");
    expect(&repo, &jwt, &["apply", "--auto-approve"], 0);
    let first = latest_of(&repo, "flaky");
    wait_for("the replica to fail", 240, || {
        latest_of(&repo, "flaky").state == "FAILED"
    });
    let out = logs.join(format!("s.flaky-{}.out", first.id));
    let err = logs.join(format!("s.flaky-{}.err", first.id));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "out of replica 0\n",
        "{}",
        out.display()
    );
    assert_eq!(std::fs::read_to_string(&err).unwrap(), "err of replica 0\n");
    let read = expect(&repo, &jwt, &["logs", "s/flaky", "--stderr"], 0);
    assert_eq!(read, "err of replica 0\n");

    // The failure is restarted over REST, backed off: a successor waits for its begin time.
    let plan = expect(&repo, &jwt, &["plan"], 0);
    assert!(plan.contains("recreate: ended FAILED exit 4"), "{plan}");
    expect(&repo, &jwt, &["apply", "--auto-approve"], 0);
    let successor = latest_of(&repo, "flaky");
    assert_ne!(successor.id, first.id);
    assert!(
        successor.comment.contains(";restarts=1;fail=FAILED:4:"),
        "{}",
        successor.comment
    );
    // Until the scheduler has looked at it, its reason is None.
    wait_for("the successor to wait for its begin time", 60, || {
        let listed = Command::new("squeue")
            .env("SLURM_CONF", common::slurm_conf())
            .args(["-h", "-j", &successor.id, "-o", "%T %r"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&listed.stdout).trim() == "PENDING BeginTime"
    });
    common::scancel(std::slice::from_ref(&successor.id));
}

/// `stackctl logs` over REST after `log_dir` moved: the job's own directory (its working
/// directory, where it logs itself) is read, not the new one.
#[test]
fn over_rest_logs_after_a_log_dir_change_read_the_files_the_job_writes() {
    let repo = TestRepo::new("rest-logs-moved");
    let old = repo.path().join("first-logs");
    common::rest::configure(repo.path(), &repo.owner, &old, REST_URL, "root");
    let jwt = token("root", 900);
    repo.write_stack(
        "s",
        "services:\n  app:\n    recipe: test/echo\n    environment: {VALUE: \"logged where it started\"}\n",
    );
    expect(&repo, &jwt, &["apply", "--auto-approve"], 0);
    wait_for("the replica's line in the first log_dir", 240, || {
        std::fs::read_dir(&old).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("where it started"))
            })
        })
    });
    let moved = repo.path().join("second-logs");
    std::fs::create_dir_all(&moved).unwrap();
    common::rest::configure(repo.path(), &repo.owner, &moved, REST_URL, "root");
    let read = expect(&repo, &jwt, &["logs", "s/app"], 0);
    assert_eq!(read, "logged where it started");
}

/// This repo's replicas in a REST listing (not its lock placeholders), by id.
fn listed_ids(backend: &RestBackend, owner: &str) -> BTreeSet<String> {
    let tag = format!("{MARKER_PREFIX};owner={owner};");
    backend
        .list_jobs()
        .unwrap()
        .into_iter()
        .filter(|r| r.comment.starts_with(&tag))
        .map(|r| r.id.to_string())
        .collect()
}

#[test]
fn over_rest_a_listing_asked_with_update_time_still_carries_the_jobs_that_did_not_change() {
    // watch's listings ask with `update_time` (a ListingMemo): slurmctld answers "no change"
    // or every job, never only the changed ones, so the answer replaces the remembered
    // listing whole. Were it only the changed jobs, the unchanged replica would vanish from
    // the plan and be submitted again.
    let repo = TestRepo::new("rest-memo");
    configure(&repo, REST_URL);
    let jwt = token("root", 900);
    repo.write_stack("s", &sleepers(1, "a"));
    expect(&repo, &jwt, &["apply", "--auto-approve"], 0);
    let token_file = repo.path().join("jwt");
    std::fs::write(&token_file, &jwt).unwrap();
    let target = RestTarget {
        url: REST_URL.into(),
        user: "root".into(),
        token: TokenSource::File(token_file),
        api: None,
    };
    let memo = Arc::new(ListingMemo::default());
    let remembering = RestBackend::new(&target, Some(memo)).unwrap();
    let first = listed_ids(&remembering, &repo.owner);
    assert_eq!(first.len(), 1, "{first:?}");

    // One more replica: a change since the remembered listing.
    repo.write_stack("s", &sleepers(2, "a"));
    expect(&repo, &jwt, &["apply", "--auto-approve"], 0);
    let second = listed_ids(&remembering, &repo.owner);
    assert_eq!(second.len(), 2, "{second:?}");
    assert!(second.is_superset(&first), "{first:?} then {second:?}");
    let fresh = RestBackend::new(&target, None).unwrap();
    assert_eq!(listed_ids(&fresh, &repo.owner), second);
    // Asked again at once: "no change" (HTTP 304) or, if any job of the cluster changed
    // meanwhile, every job again; the same jobs either way.
    assert_eq!(listed_ids(&remembering, &repo.owner), second);
}
