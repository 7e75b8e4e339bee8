//! End-to-end tests of rolling replacement, walltime renewal and `apply --wait` against the
//! real Slurm test cluster.
//!
//! Every test has its own owner and cancels only its own job ids (see `common::TestRepo`).
//! On this machine a job's script starts about 60 s after the job turns RUNNING, so each
//! successor takes over a minute to become ready: timeouts are generous, and the suite's
//! tests run in parallel.
#![cfg(feature = "cluster")]

use crate::common;

use common::*;
use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A web server on an `auto` port with an HTTP health check; `$V` tells its spec apart.
const WEB: &str = "name: web\ncommand: |\n  echo \"version $V\"\n  exec python3 -m http.server \"$PORT\"\nresources: {cpu: 1, memory: 256M, time_limit: 30}\nports: [auto]\nhealth:\n  http: {path: /}\n  interval: 1s\n  timeout: 5s\n  start_period: 240s\n";

/// A plain sleeper without health check.
const SLEEPER: &str =
    "name: nap\ncommand: exec sleep 900\nresources: {cpu: 1, memory: 64M, time_limit: 30}\n";

fn write_recipe(repo: &TestRepo, path: &str, text: &str) {
    let file = repo.path().join("recipes").join(format!("{path}.yaml"));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, text).unwrap();
}

/// `services: web: {recipe: test/web, replicas: 4, environment: {V: <v>}}` plus `extra` lines.
fn web_stack(v: &str, extra: &str) -> String {
    format!(
        "services:\n  web:\n    recipe: test/web\n    replicas: 4\n    environment: {{V: \"{v}\"}}\n    update: {{max_surge: 1, max_unavailable: 0, min_healthy_time: 3s}}\n{extra}"
    )
}

/// The value of `key=` in a marker.
fn field<'a>(comment: &'a str, key: &str) -> Option<&'a str> {
    comment
        .split(';')
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
}

/// `host:port` of every RUNNING job of `service` that reports `health=ready`.
fn ready_endpoints(repo: &TestRepo, service: &str) -> Vec<String> {
    repo.alive(service)
        .into_iter()
        .filter(|j| j.state == "RUNNING" && field(&j.comment, "health") == Some("ready"))
        .filter_map(|j| {
            Some(format!(
                "{}:{}",
                field(&j.comment, "addr")?,
                field(&j.comment, "ports")?
            ))
        })
        .collect()
}

/// Polls squeue and GETs every ready endpoint every 0.5 s until stopped; records the fewest
/// endpoints that answered in one sample, and every endpoint that did not answer although its
/// job still ran and reported ready a second later (a predecessor being cancelled at the
/// moment of the sample is no failure: it has left RUNNING by then).
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<(usize, usize, Vec<String>)>>,
}

/// `(job id, host:port)` of the RUNNING, ready jobs whose comment contains `tag`.
fn ready_with_ids(tag: &str) -> Vec<(String, String)> {
    squeue()
        .into_iter()
        .filter(|j| j.comment.contains(tag) && j.state == "RUNNING")
        .filter(|j| field(&j.comment, "health") == Some("ready"))
        .filter_map(|j| {
            let endpoint = format!(
                "{}:{}",
                field(&j.comment, "addr")?,
                field(&j.comment, "ports")?
            );
            Some((j.id, endpoint))
        })
        .collect()
}

impl Sampler {
    fn start(owner_repo: &TestRepo, service: &'static str) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // The sampler reads squeue itself; it needs only the owner tag.
        let owner = owner_repo.owner.clone();
        let handle = std::thread::spawn(move || {
            let (stack, svc) = service.split_once('.').unwrap();
            let tag = format!(";owner={owner};stack={stack};svc={svc};");
            let mut fewest = usize::MAX;
            let mut samples = 0;
            let mut failures = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let ready = ready_with_ids(&tag);
                let mut answered = 0;
                let mut silent = Vec::new();
                for (id, endpoint) in &ready {
                    let ok = std::panic::catch_unwind(|| http_get(endpoint))
                        .map(|line| line.contains(" 200 "))
                        .unwrap_or(false);
                    if ok {
                        answered += 1;
                    } else {
                        silent.push((id.clone(), endpoint.clone()));
                    }
                }
                if !silent.is_empty() {
                    std::thread::sleep(Duration::from_secs(1));
                    let still = ready_with_ids(&tag);
                    for (id, endpoint) in silent {
                        if still.iter().any(|(s, _)| *s == id) {
                            failures.push(format!("{id} at {endpoint}"));
                        }
                    }
                }
                fewest = fewest.min(answered);
                samples += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
            (fewest, samples, failures)
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

/// The `spec=` of every alive job of `service`.
fn specs(repo: &TestRepo, service: &str) -> Vec<String> {
    repo.alive(service)
        .iter()
        .map(|j| field(&j.comment, "spec").unwrap().to_owned())
        .collect()
}

/// Starts 4 ready web replicas with `apply --wait` (its success path).
fn four_ready(repo: &TestRepo) -> Vec<String> {
    write_recipe(repo, "test/web", WEB);
    repo.write_stack("s", &web_stack("1", ""));
    let started = Instant::now();
    let out = repo.expect(&["apply", "--auto-approve", "--wait=10m"], 0);
    eprintln!(
        "apply --wait returned after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert!(out.contains("Apply complete!"), "{out}");
    // --wait returned only once all four are ready: no later poll needed.
    let ready = ready_endpoints(repo, "s.web");
    assert_eq!(
        ready.len(),
        4,
        "apply --wait returned before 4 were ready: {ready:?}"
    );
    repo.alive("s.web").into_iter().map(|j| j.id).collect()
}

#[test]
fn an_env_change_rolls_out_one_at_a_time_and_never_has_fewer_than_four_ready() {
    let repo = TestRepo::new("roll-env");
    let old_ids = four_ready(&repo);
    let old_spec = specs(&repo, "s.web")[0].clone();
    repo.write_stack("s", &web_stack("2", ""));
    let plan = repo.expect(&["plan"], 0);
    assert!(plan.contains("+/-"), "{plan}");
    assert!(plan.contains("(rolling, 1 at a time)"), "{plan}");
    let sampler = Sampler::start(&repo, "s.web");
    let started = Instant::now();
    let out = repo.expect(&["apply", "--auto-approve"], 0);
    let (fewest, samples, failures) = sampler.finish();
    eprintln!(
        "rollout of 4 took {:.0} s; {samples} samples, fewest ready {fewest}",
        started.elapsed().as_secs_f64()
    );
    assert!(out.contains("Apply complete!"), "{out}");
    assert!(samples > 20, "{samples}");
    assert!(
        fewest >= 4,
        "a sample had only {fewest} ready replicas answering"
    );
    assert!(
        failures.is_empty(),
        "endpoints that did not answer: {failures:?}"
    );
    let alive = repo.alive("s.web");
    assert_eq!(alive.len(), 4, "{alive:?}");
    let new_specs: BTreeSet<String> = specs(&repo, "s.web").into_iter().collect();
    assert_eq!(new_specs.len(), 1, "{new_specs:?}");
    assert!(!new_specs.contains(&old_spec));
    for job in &alive {
        assert!(!old_ids.contains(&job.id), "old job {} still alive", job.id);
        assert!(field(&job.comment, "pred").is_some(), "{job:?}");
    }
    repo.assert_converged();
}

#[test]
fn successors_that_stay_pending_stop_the_rollout_after_queue_timeout_and_keep_the_old_replicas() {
    let repo = TestRepo::new("roll-pending");
    write_recipe(&repo, "test/nap", SLEEPER);
    let stack = |resources: &str| {
        format!(
            "services:\n  nap:\n    recipe: test/nap\n    replicas: 4\n    update: {{queue_timeout: 20s}}\n{resources}"
        )
    };
    repo.write_stack("s", &stack(""));
    repo.expect(&["apply", "--auto-approve", "--wait=5m"], 0);
    let old_ids: Vec<String> = repo.alive("s.nap").into_iter().map(|j| j.id).collect();
    assert_eq!(old_ids.len(), 4);
    // Every CPU of all three nodes: fits the partition, cannot start while the old run.
    repo.write_stack("s", &stack("    resources: {nodes: 3, cpu: 16}\n"));
    let started = Instant::now();
    let output = repo.run(&["apply", "--auto-approve"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "apply stopped after {:.0} s:\n{stderr}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("rollout stopped") && stderr.contains("still PENDING"),
        "{stderr}"
    );
    assert!(
        ["Resources", "Priority", "ReqNodeNotAvail"]
            .iter()
            .any(|r| stderr.contains(&format!("Slurm's reason: {r}"))),
        "no pending reason named: {stderr}"
    );
    assert!(started.elapsed() >= Duration::from_secs(20));
    let alive: Vec<String> = repo.alive("s.nap").into_iter().map(|j| j.id).collect();
    assert_eq!(
        alive, old_ids,
        "the old replicas keep running, the successor is gone"
    );
}

#[test]
fn apply_wait_times_out_listing_the_replicas_that_are_not_ready() {
    let repo = TestRepo::new("roll-wait-timeout");
    write_recipe(
        &repo,
        "test/deaf",
        "name: deaf\ncommand: exec sleep 600\nresources: {cpu: 1, memory: 64M, time_limit: 15}\nports: [auto]\nhealth:\n  tcp: {}\n  interval: 1s\n  start_period: 600s\n",
    );
    repo.write_stack(
        "s",
        "services:\n  deaf:\n    recipe: test/deaf\n    replicas: 2\n",
    );
    let started = Instant::now();
    let output = repo.run(&["apply", "--auto-approve", "--wait=20s"]);
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(elapsed >= Duration::from_secs(20), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(90), "{elapsed:?}");
    for index in 0..2 {
        assert!(
            stderr.contains(&format!("error: not ready: s.deaf[{index}]: job ")),
            "{stderr}"
        );
    }
    // The jobs stay: --wait gives up waiting, not on the replicas.
    assert_eq!(repo.indexes("s.deaf"), vec![0, 1]);
}

#[test]
fn a_rollout_killed_midway_is_finished_by_the_next_apply_without_duplicates() {
    let repo = TestRepo::new("roll-killed");
    let old_ids = four_ready(&repo);
    repo.write_stack("s", &web_stack("2", ""));
    let mut child = repo
        .command(&["apply", "--auto-approve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the first successor", 120, || {
        repo.alive("s.web")
            .iter()
            .any(|j| field(&j.comment, "pred").is_some())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let mid = repo.alive("s.web");
    assert_eq!(mid.len(), 5, "4 old and 1 successor: {mid:?}");
    // The killed apply may still hold the lock (2 min expiry): wait for it.
    let sampler = Sampler::start(&repo, "s.web");
    let out = repo.expect(&["apply", "--auto-approve", "--lock-timeout", "5m"], 0);
    let (fewest, _, failures) = sampler.finish();
    assert!(out.contains("Apply complete!"), "{out}");
    let alive = repo.alive("s.web");
    assert_eq!(alive.len(), 4, "no duplicates, no lost replica: {alive:?}");
    let indexes: BTreeSet<u32> = alive.iter().map(|j| j.task.unwrap()).collect();
    assert_eq!(indexes.len(), 4, "{alive:?}");
    assert!(alive.iter().all(|j| !old_ids.contains(&j.id)), "{alive:?}");
    assert!(fewest >= 4, "a sample saw only {fewest} ready");
    assert!(failures.is_empty(), "{failures:?}");
    repo.assert_converged();
}

#[test]
fn walltime_renewal_under_watch_keeps_a_replica_ready_across_time_limits() {
    let repo = TestRepo::new("roll-renew");
    // time_limit 4 min, renew_before 3m: the successor is submitted a minute into each job's
    // life. Here a job's script starts ~60 s after it turns RUNNING (slurmd first runs the
    // user's login shell for `--export=NONE`), and more on a loaded machine; a 2m window left
    // the old job's limit within ~50 s of its successor's readiness, and CI missed it once.
    write_recipe(
        &repo,
        "test/short",
        "name: short\ncommand: exec python3 -m http.server \"$PORT\"\nresources: {cpu: 1, memory: 256M, time_limit: 4}\nports: [auto]\nhealth:\n  http: {path: /}\n  interval: 1s\n  start_period: 240s\nrenew_before: 3m\nupdate: {min_healthy_time: 2s}\n",
    );
    repo.write_stack("s", "services:\n  short:\n    recipe: test/short\n");
    repo.expect(&["apply", "--auto-approve", "--wait=5m"], 0);
    let mut watch = Watch::start(repo.path(), &["--local", "--interval", "5s"]);
    let seen: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let deadline = Instant::now() + Duration::from_secs(5 * 60);
    let mut samples = 0;
    let mut short = Vec::new();
    while Instant::now() < deadline {
        let ready = repo
            .alive("s.short")
            .into_iter()
            .filter(|j| j.state == "RUNNING" && field(&j.comment, "health") == Some("ready"))
            .map(|j| j.id)
            .collect::<Vec<_>>();
        if ready.is_empty() {
            short.push(format!("{:?}", repo.alive("s.short")));
        }
        seen.lock().unwrap().extend(ready);
        samples += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(watch.is_running(), "{}", watch.log());
    watch.terminate();
    let seen = seen.into_inner().unwrap();
    eprintln!("{samples} samples, ready jobs seen: {seen:?}");
    assert!(
        short.is_empty(),
        "{} samples without a ready replica; the first: {:?}",
        short.len(),
        &short[..short.len().min(3)]
    );
    assert!(
        seen.len() >= 3,
        "job ids changed fewer than twice: {seen:?}"
    );
}
