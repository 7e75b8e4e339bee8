//! End-to-end tests of the reading side of services against the real Slurm test cluster:
//! `stackctl endpoints`, `watch --write-endpoints` and `stackctl logs`.
//!
//! Every test has its own owner and cancels only its own job ids (see `common::TestRepo`).
//! Waits are generous: the cluster is shared and readiness can take a minute.
#![cfg(feature = "cluster")]

use crate::common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A web server on an `auto` port that prints a line before it starts.
const WEB: &str = "name: web\ncommand: |\n  echo \"web replica $STACKCTL_REPLICA starting on $PORT\"\n  exec python3 -m http.server \"$PORT\"\nresources: {cpu: 1, memory: 256M, time_limit: 15}\nports: [auto]\nhealth:\n  http: {path: /}\n  interval: 1s\n  timeout: 5s\n  start_period: 240s\n";

fn write_recipe(repo: &TestRepo, path: &str, text: &str) {
    let file = repo.path().join("recipes").join(format!("{path}.yaml"));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, text).unwrap();
}

/// `host:port` of every endpoint `stackctl endpoints --json` lists.
fn listed(repo: &TestRepo) -> Vec<String> {
    let out = repo.expect(&["endpoints", "s/web", "--json"], 0);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["format_version"], "1.0", "{out}");
    doc["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}:{}", e["host"].as_str().unwrap(), e["ports"][0]["port"]))
        .collect()
}

/// The targets of a Prometheus file_sd file, sorted; none while it does not exist.
fn sd_targets(path: &std::path::Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let groups: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let mut targets: Vec<String> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["targets"].as_array().unwrap().clone())
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    targets.sort();
    targets
}

#[test]
fn two_ready_replicas_are_listed_published_by_watch_and_their_logs_read() {
    let repo = TestRepo::new("endpoints");
    write_recipe(&repo, "test/web", WEB);
    repo.write_stack(
        "s",
        "services:\n  web:\n    recipe: test/web\n    replicas: 2\n",
    );
    // Errors name what is known.
    let out = repo.run(&["endpoints", "s/nope"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no service s/nope; known: s.web"),
        "{stderr}"
    );
    let out = repo.run(&["endpoints", "--format", "yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown endpoints format \"yaml\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let sd = repo.path().join("out").join("targets.json");
    std::fs::create_dir_all(sd.parent().unwrap()).unwrap();
    let started = Instant::now();
    let mut watch = Watch::start(
        repo.path(),
        &[
            "--local",
            "--interval",
            "2s",
            "--write-endpoints",
            &format!("{}:prometheus-sd", sd.display()),
        ],
    );
    let mut endpoints = Vec::new();
    wait_for("two ready replicas", 400, || {
        endpoints = listed(&repo);
        endpoints.len() == 2
    });
    eprintln!(
        "2 replicas ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut distinct = endpoints.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 2, "{endpoints:?}");
    for endpoint in &endpoints {
        let line = http_get(endpoint);
        assert!(line.contains(" 200 "), "GET {endpoint}: {line:?}");
    }
    wait_for("the file_sd file to list both", 60, || {
        sd_targets(&sd) == distinct
    });
    let env = repo.expect(&["endpoints", "s", "--format", "env"], 0);
    assert!(
        env.starts_with("S_WEB_ENDPOINTS=") && env.contains("\nS_WEB_1="),
        "{env}"
    );

    // The service's own output, by replica.
    wait_for("replica 1's log line", 60, || {
        repo.expect(&["logs", "s/web", "--replica", "1"], 0)
            .contains("web replica 1 starting on ")
    });
    let log = repo.expect(&["logs", "s.web", "--tail", "1", "--stderr"], 0);
    assert_eq!(log.lines().count(), 1, "{log}");

    // Scaling down: the cancelled replica leaves the file.
    let kept = sd_targets(&sd);
    repo.write_stack(
        "s",
        "services:\n  web:\n    recipe: test/web\n    replicas: 1\n",
    );
    let scaled = Instant::now();
    wait_for("the file_sd file to list one target", 120, || {
        sd_targets(&sd).len() == 1
    });
    eprintln!(
        "file_sd showed 1 target {:.1} s after the stack file changed",
        scaled.elapsed().as_secs_f64()
    );
    assert!(kept.contains(&sd_targets(&sd)[0]), "{kept:?}");
    assert!(watch.log().contains("endpoints written"));
    assert_eq!(watch.terminate(), Some(0));
    // No temporary files left next to it.
    let names: Vec<_> = std::fs::read_dir(sd.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["targets.json"]);
}

/// A bad `--write-endpoints` stops watch before it reads anything, naming the known formats.
#[test]
fn watch_refuses_a_bad_write_endpoints_target_at_start() {
    for (target, expected) in [
        (
            "/tmp/endpoints.yaml:yaml",
            "unknown endpoints format \"yaml\"; expected one of json, env, prometheus-sd, traefik, nginx",
        ),
        ("endpoints.json", "expected FILE:FORMAT"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_stackctl"))
            .args([
                "-C",
                "/nonexistent",
                "watch",
                "--local",
                "--write-endpoints",
                target,
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{target}: {stderr}");
    }
}

/// `endpoint_env`: a client waits (held) until its target has a ready replica, then gets that
/// replica's real `host:port` in its environment.
#[test]
fn a_client_gets_the_address_of_a_ready_replica_of_the_service_it_names() {
    let repo = TestRepo::new("endpoint-env");
    write_recipe(&repo, "test/web", WEB);
    repo.write_stack(
        "s",
        "services:\n  web:\n    recipe: test/web\n  client:\n    recipe: test/echo\n    \
         endpoint_env:\n      VALUE: {service: s/web, format: \"http://{host}:{port}/\"}\n",
    );
    let first = repo.apply();
    assert!(
        first.contains("Held: s.client: VALUE needs a ready replica of s/web"),
        "{first}"
    );
    assert!(
        repo.alive("s.client").is_empty(),
        "nothing submitted for the client"
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    let endpoint = loop {
        if let Some(endpoint) = listed(&repo).first() {
            break endpoint.clone();
        }
        assert!(Instant::now() < deadline, "web never became ready");
        std::thread::sleep(Duration::from_secs(1));
    };
    let second = repo.apply();
    assert!(!second.contains("Held:"), "{second}");
    let log = repo.path().join("logs");
    let deadline = Instant::now() + Duration::from_secs(300);
    let printed = loop {
        let out = std::fs::read_dir(&log)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with("s.client-") && name.ends_with(".out")
            })
            .find_map(|p| std::fs::read_to_string(p).ok().filter(|t| !t.is_empty()));
        if let Some(out) = out {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "the client never printed its VALUE"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(
        printed,
        format!("http://{endpoint}/"),
        "the ready replica's real address"
    );
    assert!(http_get(&endpoint).contains("200"), "and it answers");
    repo.assert_converged();
}

/// What the client job `id` printed (its VALUE), once it has.
fn printed_by(repo: &TestRepo, id: &str) -> String {
    let path = repo.path().join("logs").join(format!("s.client-{id}.out"));
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && !text.is_empty()
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "client {id} never printed to {}",
            path.display()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A client keeps the address it was started with. Once the service it names rolls to a new
/// replica (a new port), plan and status say the client's endpoint moved, and apply replaces
/// the client, which then gets the new address.
#[test]
fn a_client_is_replaced_once_the_service_it_names_has_rolled_to_a_new_address() {
    let repo = TestRepo::new("endpoint-moved");
    write_recipe(&repo, "test/web", WEB);
    let stack = |v: &str| {
        format!(
            "services:\n  web:\n    recipe: test/web\n    environment: {{V: \"{v}\"}}\n    \
             update: {{strategy: rolling, min_healthy_time: 1s}}\n  client:\n    recipe: test/echo\n    \
             endpoint_env:\n      VALUE: {{service: s/web, format: \"http://{{host}}:{{port}}/\"}}\n"
        )
    };
    repo.write_stack("s", &stack("1"));
    repo.expect(&["apply", "--auto-approve", "--wait=8m"], 0);
    let first = listed(&repo);
    assert_eq!(first.len(), 1, "{first:?}");
    let client: Vec<String> = repo.alive("s.client").into_iter().map(|j| j.id).collect();
    assert_eq!(client.len(), 1);
    assert_eq!(
        printed_by(&repo, &client[0]),
        format!("http://{}/", first[0])
    );
    assert!(!repo.expect(&["plan"], 0).contains("endpoint moved"));

    // The web service rolls: its new replica serves elsewhere, the old one is cancelled.
    repo.write_stack("s", &stack("2"));
    repo.expect(&["apply", "--auto-approve", "--wait=8m"], 0);
    let second = listed(&repo);
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first, "the rolled replica serves on another port");
    let plan = repo.expect(&["plan"], 0);
    assert!(
        plan.contains("# endpoint moved: VALUE (s/web): no ready replica serves the address"),
        "{plan}"
    );
    assert!(
        plan.contains(&format!(
            "replica[0] job {} RUNNING (endpoint moved: gets the new address)",
            client[0]
        )),
        "{plan}"
    );
    let doc: Value = serde_json::from_str(&repo.expect(&["status", "--json"], 0)).unwrap();
    let status = doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "s.client")
        .unwrap()
        .clone();
    assert_eq!(
        status["endpoint_moved"][0]["variables"][0], "VALUE",
        "{status}"
    );
    assert_eq!(status["endpoint_moved"][0]["job_id"], client[0].as_str());
    let text = repo.expect(&["status"], 0);
    assert!(
        text.contains(&format!(
            "s.client[0] job {} endpoint moved: VALUE (s/web)",
            client[0]
        )),
        "{text}"
    );

    repo.apply();
    let now: Vec<String> = repo.alive("s.client").into_iter().map(|j| j.id).collect();
    assert_eq!(now.len(), 1);
    assert_ne!(now, client, "the client was replaced");
    assert_eq!(printed_by(&repo, &now[0]), format!("http://{}/", second[0]));
    repo.assert_converged();
}
