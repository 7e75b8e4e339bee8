//! End-to-end tests of one-shot jobs (`kind: job`) against the real Slurm test cluster: a
//! job aimed at a 2-replica HTTP service waits for it to be ready, runs once with its
//! addresses, records its run and metrics, and is not run again by apply or watch, also once
//! Slurm has forgotten it (MinJobAge, 120 s on the test cluster: the test waits it out); a
//! change of its spec or of its target's spec and `stackctl run` each run it once more;
//! `results` lists the runs and compares their metrics. A failing job is retried up to
//! `retries`, then reported failed with its stderr; a running job removed from the repo is
//! cancelled.
//!
//! The runs' own records (under `log_dir/results/`) and, since the test cluster has accounting,
//! `sacct` are what survives Slurm's memory (tests/acct.rs tests each alone).
//!
//! Every test has its own owner and cancels only its own job ids (see `common::TestRepo`).
//! Waits are generous: the cluster is shared, and a job's script starts about a minute after
//! the job turns RUNNING on this machine.
#![cfg(feature = "cluster")]

use crate::common;

use common::*;

/// A web server on an `auto` port with an HTTP health check: ready once it answers.
const WEB: &str = "name: web\ncommand: exec python3 -m http.server \"$PORT\"\nresources: {cpu: 1, memory: 256M, time_limit: 20}\nports: [auto]\nhealth:\n  http: {path: /}\n  interval: 1s\n  timeout: 5s\n  start_period: 240s\n";

/// A load client: GETs every endpoint of its target, writes its metrics and the target
/// variables it was given; fails (the run records it) when the target does not answer.
const LOAD: &str = r#"name: load
command: |
  python3 - <<'PY'
  import json, os, time, urllib.request
  eps = os.environ["STACKCTL_TARGET_ENDPOINTS"].split(",")
  start = time.time()
  ok = 0
  for i in range(30):
      with urllib.request.urlopen("http://" + eps[i % len(eps)] + "/", timeout=10) as r:
          ok += r.status == 200
  elapsed = time.time() - start
  out = os.environ["STACKCTL_RESULTS_DIR"]
  json.dump({"ok": ok, "endpoints": len(eps), "requests_per_s": 30 / elapsed}, open(out + "/results.json", "w"))
  with open(out + "/target", "w") as f:
      f.write(" ".join(os.environ[k] for k in ["STACKCTL_TARGET_URL", "STACKCTL_TARGET_HOST", "STACKCTL_TARGET_PORT", "STACKCTL_TARGET_ENDPOINTS", "ROUND"]))
  PY
resources: {cpu: 1, memory: 256M, time_limit: 10}
"#;

/// A job that fails with exit 3 after a line on stderr.
const FAILING: &str = "name: failing\ncommand: |\n  echo \"no server at $STACKCTL_STACK\" >&2\n  exit 3\nresources: {cpu: 1, memory: 64M, time_limit: 5}\nrestart: {backoff: 1s, max_backoff: 5m}\n";

fn write_recipe(repo: &TestRepo, path: &str, text: &str) {
    let file = repo.path().join("recipes").join(format!("{path}.yaml"));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, text).unwrap();
}

fn stack(round: u32, api_mode: &str) -> String {
    format!(
        "services:\n  api:\n    recipe: test/web\n    replicas: 2\n    environment: {{MODE: {api_mode}}}\n  bench:\n    kind: job\n    recipe: test/load\n    target: api\n    environment: {{ROUND: \"{round}\"}}\n"
    )
}

/// The distinct Slurm jobs of `stack.job` that squeue still lists, any state.
fn listed(repo: &TestRepo, job: &str) -> Vec<Job> {
    let (stack, svc) = job.split_once('.').unwrap();
    let tag = format!(";stack={stack};svc={svc};");
    repo.jobs()
        .into_iter()
        .filter(|j| j.comment.contains(&tag))
        .collect()
}

/// The target variables a run of round `round` was given: URL, host, port, endpoints.
fn target_of(repo: &TestRepo, round: &str) -> Vec<String> {
    repo.run_dirs("s.bench")
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("target")).ok())
        .map(|t| t.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .find(|w| w.len() == 5 && w[4] == round)
        .unwrap_or_else(|| panic!("no run of round {round} recorded its target"))
}

fn wait_runs(repo: &TestRepo, job: &str, n: usize, seconds: u64) {
    wait_for(&format!("{job} to have {n} ended runs"), seconds, || {
        repo.ended_runs(job).len() >= n
    });
    assert_eq!(repo.ended_runs(job).len(), n, "one run at a time");
}

#[test]
fn a_benchmark_runs_once_per_spec_against_its_ready_target_and_keeps_its_results() {
    let repo = TestRepo::new("jobs");
    write_recipe(&repo, "test/web", WEB);
    write_recipe(&repo, "test/load", LOAD);
    repo.write_stack("s", &stack(1, "a"));

    // The target is submitted; the job waits for it.
    let out = repo.apply();
    assert!(out.contains("s.bench: held (target not ready)"), "{out}");
    assert!(listed(&repo, "s.bench").is_empty());
    let plan = repo.expect(&["plan"], 0);
    assert!(plan.contains("s.bench: held (target not ready)"), "{plan}");

    // watch submits it once the target is ready, and never again over many intervals.
    let mut watch = Watch::start(repo.path(), &["--local", "--interval", "3s"]);
    wait_runs(&repo, "s.bench", 1, 600);
    let first = repo.ended_runs("s.bench").remove(0);
    assert!(first.contains("\nexit=0\n"), "{first}");
    std::thread::sleep(std::time::Duration::from_secs(20));
    assert!(watch.is_running());
    watch.terminate();
    assert_eq!(repo.run_dirs("s.bench").len(), 1);
    assert_eq!(listed(&repo, "s.bench").len(), 1, "submitted once");
    // It ran against a ready replica (the command fails when the target does not answer),
    // and the variables name it.
    let words = target_of(&repo, "1");
    assert_eq!(words[0], format!("http://{}:{}", words[1], words[2]));
    assert!(
        words[3]
            .split(',')
            .any(|e| e == format!("{}:{}", words[1], words[2]))
    );

    let results = repo.expect(&["results", "s/bench"], 0);
    assert!(results.contains("COMPLETED"), "{results}");
    assert!(results.contains("ok=30 "), "{results}");
    assert!(results.contains("requests_per_s="), "{results}");

    // A second apply does not run it again; the plan says when it was done.
    let out = repo.apply();
    assert!(out.contains("s.bench: done at"), "{out}");
    assert_eq!(listed(&repo, "s.bench").len(), 1);

    // Its own spec changes: one more run, against every ready replica.
    wait_for("both api replicas to be ready", 300, || {
        listed(&repo, "s.api")
            .iter()
            .filter(|j| j.alive() && j.comment.contains(";health=ready;"))
            .count()
            == 2
    });
    repo.write_stack("s", &stack(2, "a"));
    let out = repo.apply();
    assert!(out.contains("s.bench: rerun (spec changed)"), "{out}");
    wait_runs(&repo, "s.bench", 2, 400);
    let words = target_of(&repo, "2");
    let endpoints: Vec<&str> = words[3].split(',').collect();
    assert_eq!(endpoints.len(), 2, "{words:?}");
    assert_ne!(endpoints[0], endpoints[1]);
    assert_eq!(endpoints[0], format!("{}:{}", words[1], words[2]));
    let out = repo.apply();
    assert!(out.contains("s.bench: done at"), "{out}");
    assert_eq!(listed(&repo, "s.bench").len(), 2);

    // On request: one more run.
    let out = repo.expect(&["run", "s/bench"], 0);
    assert!(out.contains("s.bench: rerun (requested)"), "{out}");
    wait_runs(&repo, "s.bench", 3, 400);
    let out = repo.apply();
    assert!(out.contains("s.bench: done at"), "{out}");
    assert_eq!(listed(&repo, "s.bench").len(), 3);

    // Markdown for a PR comment: every metric with its change against the run before.
    let md = repo.expect(&["results", "s/bench", "--format", "markdown"], 0);
    let rps = md
        .lines()
        .find(|l| l.starts_with("| requests_per_s |"))
        .unwrap_or_else(|| panic!("{md}"));
    assert_eq!(
        rps.matches('%').count(),
        2,
        "two runs with a previous one: {md}"
    );
    assert!(
        md.contains("| ok | 30 | 30 (+0, +0%) | 30 (+0, +0%) |"),
        "{md}"
    );
    let last = repo.expect(&["results", "s/bench", "--json", "--last", "1"], 0);
    let rows: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["change"]["ok"]["delta"], 0.0);

    // The target's spec changes: its replicas are replaced, and the job runs once more,
    // against the new ones, under watch.
    repo.write_stack("s", &stack(2, "b"));
    let mut watch = Watch::start(repo.path(), &["--local", "--interval", "3s"]);
    wait_runs(&repo, "s.bench", 4, 900);

    // Slurm forgets that run (MinJobAge) while watch keeps going: still done, by its record
    // alone, and never run again.
    let last_id = {
        let mut ids: Vec<Job> = listed(&repo, "s.bench");
        ids.sort_by_key(|j| j.id.split('_').next().unwrap().parse::<u64>().unwrap());
        ids.pop().unwrap().id
    };
    wait_for("Slurm to forget the last run", 600, || {
        !listed(&repo, "s.bench").iter().any(|j| j.id == last_id)
    });
    std::thread::sleep(std::time::Duration::from_secs(15));
    assert!(watch.is_running());
    watch.terminate();
    assert_eq!(repo.run_dirs("s.bench").len(), 4, "never run again");
    assert!(listed(&repo, "s.bench").iter().all(|j| !j.alive()));
    let plan = repo.expect(&["plan", "--detailed-exitcode"], 0);
    assert!(plan.contains("s.bench: done at"), "{plan}");
    let out = repo.apply();
    assert!(out.contains("s.bench: done at"), "{out}");
    assert_eq!(repo.run_dirs("s.bench").len(), 4, "never run again");
}

#[test]
fn a_failing_job_is_retried_then_reported_failed_and_a_removed_running_job_is_cancelled() {
    let repo = TestRepo::new("jobfail");
    write_recipe(&repo, "test/failing", FAILING);
    repo.write_stack(
        "f",
        "services:\n  check:\n    kind: job\n    recipe: test/failing\n    retries: 1\n",
    );
    repo.write_stack(
        "long",
        "services:\n  soak:\n    kind: job\n    recipe: test/sleeper\n    ports: []\n",
    );
    let out = repo.apply();
    assert!(out.contains("f.check: run"), "{out}");
    assert!(out.contains("long.soak: run"), "{out}");

    // Removed while running: cancelled.
    wait_for("the soak job to run", 300, || {
        listed(&repo, "long.soak")
            .iter()
            .any(|j| j.state == "RUNNING")
    });
    repo.remove_stack("long");
    let out = repo.apply();
    assert!(out.contains("long.soak"), "{out}");
    assert!(listed(&repo, "long.soak").iter().all(|j| !j.alive()));

    // Retried once after its failure, then reported failed; watch does not run it again.
    let mut watch = Watch::start(repo.path(), &["--local", "--interval", "3s"]);
    wait_runs(&repo, "f.check", 2, 600);
    std::thread::sleep(std::time::Duration::from_secs(15));
    watch.terminate();
    assert_eq!(repo.run_dirs("f.check").len(), 2);
    assert_eq!(listed(&repo, "f.check").len(), 2);
    for run in repo.ended_runs("f.check") {
        assert!(run.contains("\nexit=3\n"), "{run}");
    }
    let second = listed(&repo, "f.check")
        .into_iter()
        .find(|j| j.comment.contains(";restarts=1;"));
    assert!(second.is_some(), "the retry carries its count");
    let plan = repo.expect(&["plan"], 0);
    assert!(plan.contains("f.check: failed after 2 runs"), "{plan}");
    let status = repo.expect(&["status"], 0);
    assert!(status.contains("f.check: failed after 2 runs"), "{status}");
    assert!(status.contains("| no server at f"), "{status}");
    let results = repo.expect(&["results", "f.check"], 0);
    assert_eq!(results.matches("FAILED").count(), 2, "{results}");
}

#[test]
fn the_shipped_http_load_client_measures_its_target() {
    let repo = TestRepo::new("httpload");
    write_recipe(&repo, "test/web", WEB);
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/benchmark/http-load.yaml");
    write_recipe(
        &repo,
        "benchmark/http-load",
        &std::fs::read_to_string(shipped).unwrap(),
    );
    repo.write_stack(
        "h",
        "services:\n  srv:\n    recipe: test/web\n  load:\n    kind: job\n    recipe: benchmark/http-load\n    target: srv\n    environment: {LOAD_REQUESTS: \"300\", LOAD_CONCURRENCY: \"4\"}\n",
    );
    let mut watch = Watch::start(repo.path(), &["--local", "--interval", "3s"]);
    wait_runs(&repo, "h.load", 1, 600);
    watch.terminate();
    let json = repo.expect(&["results", "h/load", "--json"], 0);
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    let metrics = &rows[0]["metrics"];
    assert_eq!(rows[0]["state"], "COMPLETED", "{json}");
    assert_eq!(metrics["ok"], 300.0, "{json}");
    assert_eq!(metrics["errors"], 0.0, "{json}");
    assert!(metrics["requests_per_s"].as_f64().unwrap() > 0.0, "{json}");
    let (p50, p99) = (
        metrics["p50_ms"].as_f64().unwrap(),
        metrics["p99_ms"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p99 >= p50, "{json}");
    let run = &repo.run_dirs("h.load")[0];
    assert!(
        std::fs::read_to_string(run.join("hey.txt"))
            .unwrap()
            .contains("Requests/sec:")
    );
}
