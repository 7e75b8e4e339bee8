//! The `watch --listen` endpoints over a real socket: `/healthz`, `/status`, `/metrics` and a
//! 404, fetched with a plain HTTP/1.1 client; `/metrics` checked by `promtool check metrics`
//! and scraped by a real Prometheus, whose query API must return the replica counts.
//!
//! promtool and prometheus come from Debian's `prometheus` package, which
//! `scripts/slurm-dev-cluster up` installs; without them these tests fail, never skip.
// Without the cluster tier, the helpers of its tests are unused.
#![cfg_attr(not(feature = "cluster"), allow(dead_code, unused_imports))]

use crate::common;

use stackctl::watch::http::Server;
use stackctl::watch::state::{CallStats, LockState, ServiceReplicas, WatchState};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROMTOOL: &str = "/usr/bin/promtool";
const PROMETHEUS: &str = "/usr/bin/prometheus";
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long Prometheus gets to start, scrape and answer.
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(60);

/// A binary of Debian's `prometheus` package, or a failure saying how to install it.
fn prometheus_binary(path: &str) -> PathBuf {
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "{} is missing: run `scripts/slurm-dev-cluster up` (as root), which installs Debian's \
         `prometheus` package (promtool and prometheus)",
        path.display()
    );
    path
}

fn service(stack: &str, service: &str, desired: u32, running: u32) -> ServiceReplicas {
    ServiceReplicas {
        stack: stack.to_owned(),
        service: service.to_owned(),
        desired,
        running,
    }
}

/// A record as the loop would leave it after a few reconciles.
fn filled_state() -> WatchState {
    let mut list_jobs = CallStats::default();
    list_jobs.record(0.004, false);
    list_jobs.record(0.02, false);
    list_jobs.record(1.5, true);
    let mut submit = CallStats::default();
    submit.record(0.3, false);
    let mut state = WatchState {
        mode: "git",
        started_unix: 1_700_000_000.0,
        reconciles_ok: 4,
        reconciles_error: 1,
        reconciles_skipped: 0,
        last_success_unix: Some(1_700_000_240.5),
        drift_corrections: 2,
        applied_commit: Some("3f2a9c1d0b7e".to_owned()),
        services: vec![
            service("demo", "web", 3, 3),
            service("demo", "worker", 2, 1),
        ],
        lock: LockState::ReleasedByUs,
        ..Default::default()
    };
    state.slurm_calls.insert("list_jobs", list_jobs);
    state.slurm_calls.insert("submit", submit);
    state
}

fn start(state: WatchState) -> (Server, Arc<Mutex<WatchState>>) {
    let shared = Arc::new(Mutex::new(state));
    let server = Server::start("127.0.0.1:0".parse().expect("an address"), shared.clone())
        .expect("the server starts on a free port");
    (server, shared)
}

/// A response as the test client read it.
#[derive(Debug)]
struct Response {
    status: u16,
    /// Header names in lower case.
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`; reads until the server closes.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let raw = String::from_utf8(raw).expect("a UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let mut head_lines = head.split("\r\n");
    let status_line = head_lines.next().expect("a status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status code in {status_line:?}"));
    let headers: Vec<(String, String)> = head_lines
        .map(|line| {
            let (name, value) = line.split_once(':').expect("a header line");
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// The body of a `Transfer-Encoding: chunked` message.
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .expect("a hex chunk size");
        if size == 0 {
            return body;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn healthz_status_metrics_and_404() {
    let (server, _shared) = start(filled_state());
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0, "the bound port, not the asked-for 0");

    let health = get(addr, "/healthz").expect("/healthz answers");
    assert_eq!(health.status, 200);
    assert_eq!(health.body, "ok\n");

    let status = get(addr, "/status").expect("/status answers");
    assert_eq!(status.status, 200);
    assert_eq!(status.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&status.body).expect("JSON");
    assert_eq!(json["format_version"], "1.1");
    assert_eq!(json["mode"], "git");
    assert_eq!(json["reconciles_ok"], 4);
    assert_eq!(json["reconciles_error"], 1);
    assert_eq!(json["applied_commit"], "3f2a9c1d0b7e");
    assert_eq!(json["lock"]["state"], "released_by_us");
    assert_eq!(json["services"][1]["service"], "worker");
    assert_eq!(json["services"][1]["running"], 1);
    assert_eq!(json["slurm_calls"]["list_jobs"]["errors"], 1);

    let metrics = get(addr, "/metrics").expect("/metrics answers");
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.header("content-type"), Some(METRICS_CONTENT_TYPE));
    for line in [
        r#"stackctl_replicas_running{stack="demo",service="web"} 3"#,
        r#"stackctl_replicas_running{stack="demo",service="worker"} 1"#,
        r#"stackctl_reconcile_total{result="skipped"} 0"#,
        r#"stackctl_slurm_call_duration_seconds_bucket{operation="list_jobs",le="+Inf"} 3"#,
    ] {
        assert!(
            metrics.body.lines().any(|l| l == line),
            "{line} in:\n{}",
            metrics.body
        );
    }

    for path in ["/", "/nope", "/metrics/extra", "/healthz/"] {
        let missing = get(addr, path).expect("an unknown path answers");
        assert_eq!(missing.status, 404, "{path}");
    }

    // A client that connected and never sent a request does not hold the shutdown up.
    let _idle = TcpStream::connect(addr).expect("a connection");
    let stopping = Instant::now();
    server.shutdown();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        stopping.elapsed()
    );
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "nothing listens on {addr} after shutdown"
    );
}

#[test]
fn a_poisoned_state_still_serves() {
    let (server, shared) = start(filled_state());
    let poisoner = shared.clone();
    let _ = std::thread::spawn(move || {
        let _held = poisoner.lock().expect("not poisoned yet");
        panic!("a writer panics while holding the state (expected in this test)");
    })
    .join();
    assert!(shared.is_poisoned());
    let addr = server.local_addr();
    assert_eq!(get(addr, "/healthz").expect("/healthz").status, 200);
    let status = get(addr, "/status").expect("/status");
    assert_eq!(status.status, 200);
    assert!(
        status.body.contains(r#""reconciles_ok":4"#),
        "{}",
        status.body
    );
    let metrics = get(addr, "/metrics").expect("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("stackctl_drift_corrections_total 2"));
}

#[test]
fn an_address_in_use_is_an_error_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = taken.local_addr().expect("its address");
    let err = Server::start(addr, Arc::new(Mutex::new(WatchState::default())))
        .expect_err("the address is taken");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[cfg(feature = "cluster")]
#[test]
fn promtool_accepts_the_metrics() {
    let (server, _shared) = start(filled_state());
    let body = get(server.local_addr(), "/metrics")
        .expect("/metrics answers")
        .body;
    promtool_check(&body);
}

/// Asserts `promtool check metrics` accepts `body` without a word.
fn promtool_check(body: &str) {
    let promtool = prometheus_binary(PROMTOOL);
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(body.as_bytes())
        .expect("promtool reads the metrics");
    let output = child.wait_with_output().expect("promtool ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics: {:?}: {said}\n{body}",
        output.status
    );
}

/// A Prometheus process, killed when the test ends, panics included.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    /// Holds the config, the log and the TSDB; removed after the process is gone.
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port, scraping `target`'s `/metrics` every second.
    fn start(target: SocketAddr) -> Prometheus {
        let binary = prometheus_binary(PROMETHEUS);
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: stackctl\n    scrape_interval: 1s\n    \
                 scrape_timeout: 1s\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("the config is written");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("an address");
        let log = dir.path().join("prometheus.log");
        let log_file = std::fs::File::create(&log).expect("the log file");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("the log file"))
            .stderr(log_file)
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    /// The instant vector `query` returns: (labels, value) per series.
    fn query(&self, query: &str) -> Result<Vec<(serde_json::Value, String)>, String> {
        let response = get(self.addr, &format!("/api/v1/query?query={query}"))
            .map_err(|e| format!("no answer: {e}"))?;
        let json: serde_json::Value = serde_json::from_str(&response.body)
            .map_err(|e| format!("{}: {e}: {}", response.status, response.body))?;
        if json["status"] != "success" {
            return Err(response.body);
        }
        let result = json["data"]["result"]
            .as_array()
            .ok_or_else(|| response.body.clone())?;
        Ok(result
            .iter()
            .map(|series| {
                (
                    series["metric"].clone(),
                    series["value"][1].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect())
    }

    /// Polls `query` until its series, as sorted `(service, value)`, equal `want`.
    fn wait_for(&mut self, query: &str, want: &[(&str, &str)]) -> Duration {
        let start = Instant::now();
        let mut last = String::from("nothing yet");
        while start.elapsed() < PROMETHEUS_TIMEOUT {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", self.log_text());
            }
            match self.query(query) {
                Ok(series) => {
                    let mut got: Vec<(String, String)> = series
                        .iter()
                        .map(|(labels, value)| {
                            assert_eq!(labels["stack"], "demo", "{labels}");
                            assert_eq!(labels["job"], "stackctl", "{labels}");
                            (
                                labels["service"].as_str().unwrap_or_default().to_owned(),
                                value.clone(),
                            )
                        })
                        .collect();
                    got.sort();
                    if got
                        .iter()
                        .map(|(s, v)| (s.as_str(), v.as_str()))
                        .eq(want.iter().copied())
                    {
                        return start.elapsed();
                    }
                    last = format!("{got:?}");
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "prometheus did not return {want:?} for {query} within {PROMETHEUS_TIMEOUT:?}; \
             last: {last}\n{}",
            self.log_text()
        );
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(feature = "cluster")]
#[test]
fn prometheus_scrapes_the_replica_counts() {
    let (server, shared) = start(filled_state());
    let mut prometheus = Prometheus::start(server.local_addr());
    let first = prometheus.wait_for(
        "stackctl_replicas_running",
        &[("web", "3"), ("worker", "1")],
    );
    // The server reads the shared record on every scrape: a change shows up.
    shared
        .lock()
        .expect("the state")
        .services
        .iter_mut()
        .filter(|s| s.service == "worker")
        .for_each(|s| s.running = 2);
    let second = prometheus.wait_for(
        "stackctl_replicas_running",
        &[("web", "3"), ("worker", "2")],
    );
    eprintln!("prometheus saw the counts after {first:?}, the change after {second:?} more");
}

/// `examples/watch/`: the scrape config passes `promtool check config`, and every metric the
/// Grafana dashboard queries is one `/metrics` serves.
#[cfg(feature = "cluster")]
#[test]
fn the_shipped_watch_examples_fit_the_metrics() {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/watch");
    let promtool = prometheus_binary(PROMTOOL);
    let output = Command::new(&promtool)
        .arg("check")
        .arg("config")
        .arg(examples.join("prometheus.yml"))
        .output()
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let (server, _shared) = start(filled_state());
    let metrics = get(server.local_addr(), "/metrics")
        .expect("/metrics answers")
        .body;
    let served: Vec<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(examples.join("grafana-dashboard.json")).expect("the dashboard"),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6, "{} panels", panels.len());
    let mut queried = 0;
    for target in panels
        .iter()
        .flat_map(|p| p["targets"].as_array().expect("targets"))
    {
        let expr = target["expr"].as_str().expect("an expr");
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("stackctl_"))
        {
            queried += 1;
            assert!(served.contains(&name), "{name} (in {expr}) is not served");
        }
    }
    assert!(queried >= 6, "{queried} metric names queried");
}

/// The real loop against the real cluster: `watch --listen` serves metrics that promtool
/// accepts, and Prometheus scraping it reports as running what squeue shows running.
#[cfg(feature = "cluster")]
#[test]
fn prometheus_sees_the_live_replica_count_of_a_real_watch() {
    let repo = common::TestRepo::new("watch-metrics");
    repo.write_stack(
        "demo",
        "services:\n  web:\n    recipe: test/sleeper\n    replicas: 2\n",
    );
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = addr.to_string();
    let _watch = common::Watch::start(
        repo.path(),
        &["--local", "--interval", "1s", "--listen", &listen],
    );
    common::wait_for("two running replicas", 60, || {
        repo.alive("demo.web")
            .iter()
            .filter(|j| j.state == "RUNNING")
            .count()
            == 2
    });
    common::wait_for("the endpoint", 30, || get(addr, "/healthz").is_ok());
    let body = get(addr, "/metrics").expect("/metrics answers").body;
    promtool_check(&body);
    let mut prometheus = Prometheus::start(addr);
    prometheus.wait_for("stackctl_replicas_running", &[("web", "2")]);
    // A replica cancelled by hand: the loop recreates it, and the metric follows the cluster.
    let victim = repo.alive("demo.web")[0].id.clone();
    common::scancel(std::slice::from_ref(&victim));
    common::wait_for("the replica recreated and running", 60, || {
        let alive = repo.alive("demo.web");
        alive.len() == 2 && alive.iter().all(|j| j.id != victim && j.state == "RUNNING")
    });
    // A scale-up: the metric follows the cluster.
    repo.write_stack(
        "demo",
        "services:\n  web:\n    recipe: test/sleeper\n    replicas: 3\n",
    );
    common::wait_for("three running replicas", 60, || {
        repo.alive("demo.web")
            .iter()
            .filter(|j| j.state == "RUNNING")
            .count()
            == 3
    });
    prometheus.wait_for("stackctl_replicas_running", &[("web", "3")]);
    let status: serde_json::Value =
        serde_json::from_str(&get(addr, "/status").unwrap().body).unwrap();
    assert!(
        status["drift_corrections"].as_u64().unwrap() >= 1,
        "the recreate counts as drift: {status}"
    );
}
