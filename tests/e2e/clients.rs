//! The shipped benchmark clients (`recipes/benchmark/redis`, `postgres`, `openai-chat`) each
//! run as a one-shot job against a real server on the test cluster, and their `results.json`
//! must hold metrics the server can account for: redis-benchmark's INCR calls add up in the
//! server's counters, every pgbench transaction left its row in `pgbench_history`, and the
//! OpenAI-compatible client's time to first token, latency and tokens per second agree with the
//! delays the stand-in server (`recipes/inference/openai-stand-in`) was given.
//!
//! The servers run bare on the nodes from Debian's packages (`redis-server`, `postgresql-15`,
//! installed by `scripts/slurm-dev-cluster`); PostgreSQL runs as the `postgres` user (it refuses
//! root, and jobs run as root here), with scram-sha-256 password authentication, the password a
//! secret both the server and the client get. The nodes of the test cluster are this machine,
//! so the test reaches a server at 127.0.0.1 on the port the server wrote down.
//!
//! Every test has its own owner and cancels only its own job ids (see `common::TestRepo`).
//! Waits are generous: the cluster is shared, and a job's script starts about a minute after
//! the job turns RUNNING on this machine.
#![cfg(feature = "cluster")]

use crate::common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn write_recipe(repo: &TestRepo, path: &str, text: &str) {
    let file = repo.path().join("recipes").join(format!("{path}.yaml"));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, text).unwrap();
}

/// Copies the shipped recipe `path` (e.g. `benchmark/redis`) into the repo.
fn ship(repo: &TestRepo, path: &str) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("recipes")
        .join(format!("{path}.yaml"));
    write_recipe(repo, path, &std::fs::read_to_string(shipped).unwrap());
}

/// Every log file of the repo's jobs, for a failure message.
fn job_logs(repo: &TestRepo) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(repo.path().join("logs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.path().is_file() {
            text.push_str(&format!(
                "== {}\n{}\n",
                entry.path().display(),
                std::fs::read_to_string(entry.path()).unwrap_or_default()
            ));
        }
    }
    text
}

/// Runs watch until `stack.job` has ended once; checks the run completed and returns its
/// metrics (also printed) and its run directory.
fn run_once(repo: &TestRepo, stack_job: &str) -> (serde_json::Value, PathBuf) {
    let mut watch = Watch::start(repo.path(), &["--local", "--interval", "3s"]);
    wait_for(&format!("{stack_job} to end once"), 900, || {
        !repo.ended_runs(stack_job).is_empty()
    });
    watch.terminate();
    let json = repo.expect(&["results", &stack_job.replace('.', "/"), "--json"], 0);
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        rows[0]["state"],
        "COMPLETED",
        "{json}\n{}\nwatch log:\n{}",
        job_logs(repo),
        watch.log()
    );
    eprintln!("{stack_job} metrics: {}", rows[0]["metrics"]);
    let dirs = repo.run_dirs(stack_job);
    assert_eq!(dirs.len(), 1, "one run: {dirs:?}");
    (rows[0]["metrics"].clone(), dirs[0].clone())
}

fn metric(metrics: &serde_json::Value, name: &str) -> f64 {
    metrics[name]
        .as_f64()
        .unwrap_or_else(|| panic!("no metric {name} in {metrics}"))
}

/// Waits for the port a test server wrote into `file`.
fn server_port(file: &Path) -> String {
    wait_for(&format!("a port in {}", file.display()), 60, || {
        std::fs::read_to_string(file).is_ok_and(|t| t.ends_with('\n'))
    });
    std::fs::read_to_string(file).unwrap().trim().to_owned()
}

fn output(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Debian's redis-server on an `auto` port, ready once it accepts connections; writes its
/// port into `$PORT_FILE`.
const REDIS_SERVER: &str = r#"name: redis-server
command: |
  printf '%s\n' "$PORT" > "$PORT_FILE.tmp" && mv "$PORT_FILE.tmp" "$PORT_FILE"
  exec redis-server --port "$PORT" --bind 0.0.0.0 --protected-mode no --save '' --appendonly no
resources: {cpu: 1, memory: 256M, time_limit: 20}
ports: [auto]
health:
  tcp: {}
  interval: 1s
  timeout: 2s
  start_period: 240s
"#;

#[test]
fn the_shipped_redis_client_benchmarks_a_redis_server() {
    let repo = TestRepo::new("clients-redis");
    write_recipe(&repo, "test/redis-server", REDIS_SERVER);
    ship(&repo, "benchmark/redis");
    let port_file = repo.path().join("redis-port");
    repo.write_stack(
        "r",
        &format!(
            "services:\n  kv:\n    recipe: test/redis-server\n    environment: {{PORT_FILE: {}}}\n  bench:\n    kind: job\n    recipe: benchmark/redis\n    target: kv\n    environment: {{REDIS_TESTS: \"set,get,incr\", REDIS_REQUESTS: \"5000\", REDIS_CLIENTS: \"4\", REDIS_KEYSPACE: \"1000\"}}\n",
            port_file.display()
        ),
    );
    let (metrics, run) = run_once(&repo, "r.bench");
    for test in ["set", "get", "incr"] {
        let rps = metric(&metrics, &format!("{test}_rps"));
        let (p50, p99, max) = (
            metric(&metrics, &format!("{test}_p50_ms")),
            metric(&metrics, &format!("{test}_p99_ms")),
            metric(&metrics, &format!("{test}_max_ms")),
        );
        assert!(rps > 0.0, "{metrics}");
        assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{metrics}");
    }
    let csv = std::fs::read_to_string(run.join("redis-benchmark.csv")).unwrap();
    assert!(csv.starts_with("\"test\",\"rps\""), "{csv}");
    // The benchmark ran against this server: its 5000 INCRs on random `counter:*` keys add
    // up there.
    let port = server_port(&port_file);
    let redis = |args: &[&str]| {
        let mut all = vec!["-h", "127.0.0.1", "-p", &port];
        all.extend_from_slice(args);
        output("redis-cli", &all, &[])
    };
    let keys = redis(&["--scan", "--pattern", "counter:*"]);
    let total: u64 = keys
        .lines()
        .map(|key| redis(&["get", key]).trim().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 5000, "counters: {keys}");
}

/// Debian's PostgreSQL as the `postgres` user on an `auto` port, data under `$DATA_ROOT`
/// (removed when the server stops), password `$POSTGRES_PASSWORD` (scram-sha-256, from any
/// address), ready once `pg_isready` says so; writes its port into `$DATA_ROOT/port`.
const PG_SERVER: &str = r#"name: pg-server
command: |
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  data="$DATA_ROOT/pg-$SLURM_JOB_ID"
  mkdir -p "$data" && printf '%s\n' "$POSTGRES_PASSWORD" > "$data/pw" && chown -R postgres: "$data" || exit 1
  as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
  as_pg "$bin/initdb" -D "$data/db" -U postgres --pwfile="$data/pw" -A scram-sha-256 > "$data/initdb.log" || exit 1
  rm -f "$data/pw"
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$data/db/pg_hba.conf"
  as_pg "$bin/postgres" -D "$data/db" -c listen_addresses='*' -p "$PORT" -k "$data" &
  pid=$!
  trap 'kill -INT "$pid"; wait "$pid"; rm -rf "$data"; exit 143' TERM
  printf '%s\n' "$PORT" > "$DATA_ROOT/port.tmp" && mv "$DATA_ROOT/port.tmp" "$DATA_ROOT/port"
  wait "$pid"
  rc=$?
  rm -rf "$data"
  exit "$rc"
resources: {cpu: 2, memory: 512M, time_limit: 20}
environment:
  POSTGRES_PASSWORD: {secret: postgres_password}
ports: [auto]
health:
  command: pg_isready -h 127.0.0.1 -p "$PORT" -U postgres
  interval: 1s
  timeout: 5s
  start_period: 240s
"#;

#[test]
fn the_shipped_postgres_client_benchmarks_a_postgres_server() {
    use std::os::unix::fs::PermissionsExt;
    let repo = TestRepo::new("clients-pg");
    // The server's data directory is under the repo, which `postgres` must reach.
    std::fs::set_permissions(repo.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data_root = repo.path().join("pg");
    std::fs::create_dir(&data_root).unwrap();
    let password = "pg-7d41 'q' $Z";
    std::fs::write(repo.path().join("pg-password"), format!("{password}\n")).unwrap();
    repo.append_settings(&format!(
        "secrets_dir: {}\nsecrets:\n  postgres_password: {{file: {}}}\n",
        repo.path().join("secret-files").display(),
        repo.path().join("pg-password").display()
    ));
    write_recipe(&repo, "test/pg-server", PG_SERVER);
    ship(&repo, "benchmark/postgres");
    repo.write_stack(
        "p",
        &format!(
            "services:\n  db:\n    recipe: test/pg-server\n    environment: {{DATA_ROOT: {}}}\n  bench:\n    kind: job\n    recipe: benchmark/postgres\n    target: db\n    environment: {{PGBENCH_DURATION: \"5\", PGBENCH_CLIENTS: \"4\", PGBENCH_THREADS: \"2\"}}\n",
            data_root.display()
        ),
    );
    let (metrics, run) = run_once(&repo, "p.bench");
    let transactions = metric(&metrics, "transactions");
    assert!(transactions > 0.0, "{metrics}");
    assert_eq!(metric(&metrics, "failed"), 0.0, "{metrics}");
    assert_eq!(metric(&metrics, "clients"), 4.0, "{metrics}");
    assert_eq!(metric(&metrics, "scale"), 1.0, "{metrics}");
    assert!(metric(&metrics, "tps") > 0.0, "{metrics}");
    assert!(metric(&metrics, "latency_avg_ms") > 0.0, "{metrics}");
    let (p50, p90, p99, max) = (
        metric(&metrics, "p50_ms"),
        metric(&metrics, "p90_ms"),
        metric(&metrics, "p99_ms"),
        metric(&metrics, "max_ms"),
    );
    assert!(
        p50 > 0.0 && p50 <= p90 && p90 <= p99 && p99 <= max,
        "{metrics}"
    );
    let report = std::fs::read_to_string(run.join("pgbench.txt")).unwrap();
    assert!(report.contains("tps = "), "{report}");
    // Every transaction pgbench counted left its row in the server's pgbench_history (TPC-B
    // inserts one per transaction), under the password the secret gave both sides.
    let port = server_port(&data_root.join("port"));
    let rows = output(
        "psql",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-Atc",
            "select count(*) from pgbench_history",
        ],
        &[("PGPASSWORD", password)],
    );
    assert_eq!(
        rows.trim().parse::<f64>().unwrap(),
        transactions,
        "{metrics}"
    );
    for file in ["pgbench.txt", "pgbench-init.txt", "results.json"] {
        let text = std::fs::read_to_string(run.join(file)).unwrap();
        assert!(!text.contains(password), "{file} shows the password");
    }
}

#[test]
fn the_shipped_openai_chat_client_measures_a_streaming_stand_in() {
    let repo = TestRepo::new("clients-openai");
    ship(&repo, "inference/openai-stand-in");
    ship(&repo, "benchmark/openai-chat");
    // 12 requests, 4 at a time, 20 tokens each: 200 ms to the first token, 50 ms to each next.
    let (requests, concurrency, tokens, first_ms, delay_ms) = (12.0, 4.0, 20.0, 200.0, 50.0);
    repo.write_stack(
        "o",
        &format!(
            "services:\n  llm:\n    recipe: inference/openai-stand-in\n    environment: {{STANDIN_FIRST_TOKEN_DELAY_MS: \"{first_ms}\", STANDIN_TOKEN_DELAY_MS: \"{delay_ms}\"}}\n  chat:\n    kind: job\n    recipe: benchmark/openai-chat\n    target: llm\n    environment: {{OPENAI_REQUESTS: \"{requests}\", OPENAI_CONCURRENCY: \"{concurrency}\", OPENAI_MAX_TOKENS: \"{tokens}\"}}\n"
        ),
    );
    let (m, run) = run_once(&repo, "o.chat");
    assert_eq!(metric(&m, "ok"), requests, "{m}");
    assert_eq!(metric(&m, "errors"), 0.0, "{m}");
    // The tokens are the server's usage counts: exactly max_tokens per request.
    assert_eq!(metric(&m, "output_tokens"), requests * tokens, "{m}");
    // No token before the first delay, no request done before all its delays.
    let per_request = std::fs::read_to_string(run.join("requests.jsonl")).unwrap();
    assert_eq!(per_request.lines().count(), 12, "{per_request}");
    for line in per_request.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(metric(&r, "ttft_ms") >= first_ms, "{line}");
        assert!(
            metric(&r, "latency_ms") >= first_ms + (tokens - 1.0) * delay_ms,
            "{line}"
        );
        assert_eq!(metric(&r, "tokens"), tokens, "{line}");
    }
    let (p50, p90, p99) = (
        metric(&m, "ttft_p50_ms"),
        metric(&m, "ttft_p90_ms"),
        metric(&m, "ttft_p99_ms"),
    );
    assert!(first_ms <= p50 && p50 <= p90 && p90 <= p99, "{m}");
    let (l50, l99) = (metric(&m, "latency_p50_ms"), metric(&m, "latency_p99_ms"));
    assert!(
        first_ms + (tokens - 1.0) * delay_ms <= l50 && l50 <= l99,
        "{m}"
    );
    // Throughput: at most 1000/delay tokens per second per stream, times the concurrency for
    // the run (the wall time includes every delay, so this bound is strict). A stream's own
    // rate is measured between the arrival of its first and last token, so a late read of the
    // first token shortens it: half again of slack, still far below what a server ignoring its
    // delay streams (thousands per second).
    let per_stream_max = 1000.0 / delay_ms;
    let aggregate = metric(&m, "tokens_per_s");
    assert!(
        aggregate > 0.0 && aggregate <= per_stream_max * concurrency,
        "{m}"
    );
    let stream = metric(&m, "tokens_per_s_per_request");
    assert!(stream > 0.0 && stream <= per_stream_max * 1.5, "{m}");
    assert!(metric(&m, "itl_avg_ms") >= delay_ms / 1.5, "{m}");
}
