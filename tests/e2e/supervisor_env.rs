//! End-to-end: the batch supervisor does not depend on the service's environment. A service
//! whose `environment` sets hostile values (a literal `$PATH`, `IFS`, `LD_PRELOAD`, `HOME`,
//! `BASH_ENV`, its own `PORT`) still gets its ports picked, its address found, its health
//! checked and recorded, while the service itself (and its `command` check) sees exactly those
//! values.
//!
//! The test has its own owner and cancels only its own job ids (see `common::TestRepo`).
#![cfg(feature = "cluster")]

use crate::common;

use common::*;

const HOSTILE: &str = r#"name: hostile
command: |
  printf 'PATH=%s\nHOME=%s\nIFS=%s\nPORT=%s\n' "$PATH" "$HOME" "$IFS" "$PORT"
  exec /usr/bin/python3 -m http.server "$PORT"
resources: {cpu: 1, memory: 256M, time_limit: 15}
ports: [auto, {name: admin, port: auto}]
environment:
  PATH: "/opt/venv/bin:$PATH"
  IFS: "0123456789,;="
  LD_PRELOAD: /nonexistent/libhostile.so
  HOME: /nonexistent
  BASH_ENV: /nonexistent/bashrc
  PORT: "1"
health:
  command: '[ "$HOME" = /nonexistent ] && exec 3<>"/dev/tcp/127.0.0.1/$PORT"'
  interval: 1s
  timeout: 5s
  start_period: 240s
"#;

#[test]
fn hostile_service_environment_leaves_the_supervisor_working() {
    let repo = TestRepo::new("hostile-env");
    std::fs::write(repo.path().join("recipes/test/hostile.yaml"), HOSTILE).unwrap();
    repo.write_stack("s", "services:\n  app:\n    recipe: test/hostile\n");
    repo.apply();
    let mut comment = String::new();
    wait_for("the replica to record health=ready", 240, || {
        comment = repo
            .alive("s.app")
            .first()
            .map(|j| j.comment.clone())
            .unwrap_or_default();
        comment.contains(";health=ready")
    });
    let field = |name: &str| {
        comment
            .split(';')
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {comment}"))
            .to_owned()
    };
    let addr = field("addr");
    let ports: Vec<u16> = field("ports")
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(!addr.is_empty() && !addr.contains(' '), "{comment}");
    assert_eq!(ports.len(), 2, "{comment}");
    assert!(
        ports.iter().all(|p| (20000..=29999).contains(p)),
        "{comment}"
    );
    assert_ne!(ports[0], ports[1]);
    assert!(http_get(&format!("{addr}:{}", ports[0])).contains("200"));
    // The service saw its own values, literally, and stackctl's PORT over its own.
    let log = repo.expect(&["logs", "s/app"], 0);
    assert!(
        log.starts_with(&format!(
            "PATH=/opt/venv/bin:$PATH\nHOME=/nonexistent\nIFS=0123456789,;=\nPORT={}\n",
            ports[0]
        )),
        "{log}"
    );
}
