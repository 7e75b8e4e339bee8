//! `stackctl watch` when some services are refused, against the real Slurm test cluster: a
//! refusal (protection, `--max-destroy`, an emptied `stacks/`) leaves only the services it
//! concerns as they are; every other service keeps converging and healing in the same pass,
//! the refused ones are reported (log, `/status`, `stackctl_refused_services`), and
//! `--once` exits 1. Each test has its own owner and cancels only its own job ids.
#![cfg(feature = "cluster")]

use crate::common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Output;
use std::time::Duration;

/// One interval plus the time an apply takes on a loaded 2-core machine.
const CONVERGE: u64 = 30;

fn ids(jobs: &[Job]) -> Vec<String> {
    jobs.iter().map(|j| j.id.clone()).collect()
}

fn sleeper(name: &str, replicas: u32, protect: bool) -> String {
    format!(
        "  {name}:\n    recipe: test/sleeper\n    replicas: {replicas}\n    protect: {protect}\n"
    )
}

/// `watch --local --once` with `args`; the output.
fn once(repo: &TestRepo, args: &[&str]) -> Output {
    let mut all = vec!["watch", "--local", "--once"];
    all.extend_from_slice(args);
    repo.run(&all)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `GET path` over HTTP/1.0; the status code and the body.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

#[test]
fn once_heals_the_other_services_while_a_protected_scale_down_is_refused() {
    let repo = TestRepo::new("refuse-once");
    repo.write_stack("db", &format!("services:\n{}", sleeper("store", 2, true)));
    repo.write_stack("web", &format!("services:\n{}", sleeper("api", 2, false)));
    repo.apply();
    let store = ids(&repo.alive("db.store"));
    assert_eq!(store.len(), 2);
    // A scale-down the protection refuses, and a replica of another stack cancelled by hand.
    repo.write_stack("db", &format!("services:\n{}", sleeper("store", 1, true)));
    let victim = repo.alive("web.api")[1].id.clone();
    scancel(std::slice::from_ref(&victim));
    wait_for("the cancel to show", 30, || {
        !ids(&repo.alive("web.api")).contains(&victim)
    });

    let output = once(&repo, &[]);
    let log = stderr(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a refused pass fails:\n{log}"
    );
    assert!(
        log.contains("db.store") && log.contains("protected") && log.contains("refused"),
        "the refused service is named:\n{log}"
    );
    assert_eq!(
        repo.indexes("web.api"),
        [0, 1],
        "healed in the same pass:\n{log}"
    );
    assert_eq!(ids(&repo.alive("db.store")), store, "nothing cancelled");
}

#[test]
fn watch_reports_a_removed_protected_service_and_keeps_healing_the_rest() {
    let repo = TestRepo::new("refuse-loop");
    repo.write_stack("vault", &format!("services:\n{}", sleeper("keys", 1, true)));
    repo.write_stack(
        "front",
        &format!(
            "services:\n{}{}",
            sleeper("proxy", 1, false),
            sleeper("cache", 2, false)
        ),
    );
    repo.apply();
    let keys = ids(&repo.alive("vault.keys"));
    let addr = free_addr();
    let listen = addr.to_string();
    let mut watch = Watch::start(
        repo.path(),
        &["--local", "--interval", "2s", "--listen", &listen],
    );
    wait_for("the endpoint", 30, || get(addr, "/healthz").is_some());
    // The protected stack leaves the repo; then a replica of another service is cancelled.
    repo.remove_stack("vault");
    watch.wait_log("the refusal", CONVERGE, "refused");
    let victim = repo.alive("front.cache")[0].id.clone();
    scancel(std::slice::from_ref(&victim));
    let cancelled = std::time::Instant::now();
    wait_for("the cancelled replica back", CONVERGE, || {
        let alive = repo.alive("front.cache");
        indexes_of(&alive) == [0, 1] && !ids(&alive).contains(&victim)
    });
    eprintln!("cancelled replica back after {:?}", cancelled.elapsed());
    let (_, status) = get(addr, "/status").unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["refused"],
        serde_json::json!([{
            "stack": "vault",
            "service": "keys",
            "reason": "protected",
            "message": status["refused"][0]["message"],
        }]),
        "{status}"
    );
    assert!(
        status["refused"][0]["message"]
            .as_str()
            .unwrap()
            .contains("destroy it (gone from the repo"),
        "{status}"
    );
    let (_, metrics) = get(addr, "/metrics").unwrap();
    assert!(
        metrics.contains(
            "stackctl_refused_services{stack=\"vault\",service=\"keys\",reason=\"protected\"} 1"
        ),
        "{metrics}"
    );
    assert_eq!(ids(&repo.alive("vault.keys")), keys, "nothing cancelled");
    // Back in the repo: nothing is refused any more.
    repo.write_stack("vault", &format!("services:\n{}", sleeper("keys", 1, true)));
    wait_for("the refusal cleared", CONVERGE, || {
        let (_, status) = get(addr, "/status").unwrap();
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        status["refused"] == serde_json::json!([])
    });
    let (_, metrics) = get(addr, "/metrics").unwrap();
    assert!(!metrics.contains("stackctl_refused_services"), "{metrics}");
    assert_eq!(watch.terminate(), Some(0));
}

#[test]
fn watch_keeps_max_destroy_and_refuses_to_destroy_everything() {
    let repo = TestRepo::new("refuse-limits");
    repo.write_stack("big", &format!("services:\n{}", sleeper("work", 3, false)));
    repo.write_stack(
        "small",
        &format!("services:\n{}", sleeper("tool", 1, false)),
    );
    repo.apply();
    let work = ids(&repo.alive("big.work"));
    // Two cancels when one is allowed: the scale-down waits, the other stack heals.
    repo.write_stack("big", &format!("services:\n{}", sleeper("work", 1, false)));
    let victim = repo.alive("small.tool")[0].id.clone();
    scancel(std::slice::from_ref(&victim));
    wait_for("the cancel to show", 30, || {
        repo.alive("small.tool").is_empty()
    });
    let output = once(&repo, &["--max-destroy", "1"]);
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains("max_destroy") && log.contains("big.work"),
        "{log}"
    );
    assert_eq!(
        ids(&repo.alive("big.work")),
        work,
        "nothing cancelled:\n{log}"
    );
    assert_eq!(repo.indexes("small.tool"), [0], "healed:\n{log}");

    // An emptied stacks/ cancels nothing without --allow-destroy-all.
    repo.remove_stack("big");
    repo.remove_stack("small");
    let alive: Vec<String> =
        [ids(&repo.alive("big.work")), ids(&repo.alive("small.tool"))].concat();
    let output = once(&repo, &[]);
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(log.contains("--allow-destroy-all"), "{log}");
    let still: Vec<String> =
        [ids(&repo.alive("big.work")), ids(&repo.alive("small.tool"))].concat();
    assert_eq!(still, alive, "nothing cancelled");
    let output = once(&repo, &["--allow-destroy-all"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(repo.alive("big.work").is_empty() && repo.alive("small.tool").is_empty());
}

#[test]
fn once_starts_the_other_services_while_one_no_node_can_run_is_refused() {
    let repo = TestRepo::new("refuse-huge");
    repo.write_stack("ok", &format!("services:\n{}", sleeper("small", 1, false)));
    repo.write_stack(
        "huge",
        "services:\n  giant:\n    recipe: test/sleeper\n    resources: {cpu: 4000}\n",
    );
    let output = once(&repo, &[]);
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains("huge.giant") && log.contains("unschedulable"),
        "{log}"
    );
    assert_eq!(
        repo.indexes("ok.small"),
        [0],
        "the other service started:\n{log}"
    );
    assert!(repo.alive("huge.giant").is_empty());
}
