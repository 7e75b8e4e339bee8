//! End-to-end tests of `depends_on` against the real Slurm test cluster: a `ready` dependency
//! holds its dependent until one of its replicas is ready; a `started` one is submitted in the
//! same apply, the dependent with `--dependency=after:<its job ids>`; a cycle is refused.
//!
//! Every test has its own owner and cancels only its own job ids (see `common::TestRepo`).
//! Waits are generous: the cluster is shared, and a job's script starts about a minute after
//! the job turns RUNNING on this machine.
#![cfg(feature = "cluster")]

use crate::common;

use common::*;
use serde_json::Value;
use std::process::Command;

/// A web server on an `auto` port with an HTTP health check: ready once it answers.
const WEB: &str = "name: web\ncommand: exec python3 -m http.server \"$PORT\"\nresources: {cpu: 1, memory: 256M, time_limit: 15}\nports: [auto]\nhealth:\n  http: {path: /}\n  interval: 1s\n  timeout: 5s\n  start_period: 240s\n";

fn write_recipe(repo: &TestRepo, path: &str, text: &str) {
    let file = repo.path().join("recipes").join(format!("{path}.yaml"));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, text).unwrap();
}

/// `scontrol show job <id>` as one string.
fn show_job(id: &str) -> String {
    let output = Command::new("scontrol")
        .env("SLURM_CONF", slurm_conf())
        .args(["show", "job", id])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The value of `Field=` in `scontrol show job` output.
fn field(shown: &str, name: &str) -> String {
    shown
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {shown}"))
        .to_owned()
}

/// The batch script Slurm holds for a job.
fn batch_script(id: &str) -> String {
    let output = Command::new("scontrol")
        .env("SLURM_CONF", slurm_conf())
        .args(["write", "batch_script", id, "-"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Local time as Slurm prints it (`2026-11-27T01:50:00`).
fn slurm_now() -> String {
    let output = Command::new("date")
        .arg("+%Y-%m-%dT%H:%M:%S")
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Number of ready endpoints of `service` (`stack/service`).
fn ready_endpoints(repo: &TestRepo, service: &str) -> usize {
    let out = repo.expect(&["endpoints", service, "--json"], 0);
    let doc: Value = serde_json::from_str(&out).unwrap();
    doc["endpoints"].as_array().map_or(0, Vec::len)
}

#[test]
fn a_ready_dependency_holds_the_dependent_until_it_is_ready() {
    let repo = TestRepo::new("depends-ready");
    write_recipe(&repo, "test/web", WEB);
    repo.write_stack(
        "d",
        "services:\n  app:\n    recipe: test/sleeper\n    depends_on: [db]\n  db:\n    recipe: test/web\n",
    );
    let plan = repo.expect(&["plan"], 0);
    assert!(
        plan.contains("Held: d.app: waits for a ready replica of d/db (depends_on)"),
        "{plan}"
    );
    assert!(!plan.contains("service \"d.app\""), "{plan}");

    let out = repo.apply();
    assert_eq!(repo.alive("d.db").len(), 1, "{out}");
    assert!(
        repo.alive("d.app").is_empty(),
        "held: nothing submitted\n{out}"
    );
    // Not converged while held.
    let out = repo.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2));

    // Applying again before the dependency is ready still submits nothing for the dependent.
    if ready_endpoints(&repo, "d/db") == 0 {
        repo.apply();
        assert!(repo.alive("d.app").is_empty());
    }
    wait_for("a ready replica of d/db", 400, || {
        ready_endpoints(&repo, "d/db") == 1
    });
    let ready_at = slurm_now();
    let plan = repo.expect(&["plan"], 0);
    assert!(!plan.contains("Held:"), "{plan}");
    assert!(plan.contains("service \"d.app\""), "{plan}");
    repo.apply();
    let app = repo.alive("d.app");
    assert_eq!(app.len(), 1);
    wait_for("d.app to start", 300, || {
        repo.alive("d.app")
            .first()
            .is_some_and(|j| j.state == "RUNNING")
    });
    let shown = show_job(&app[0].id);
    let start = field(&shown, "StartTime");
    assert!(start >= ready_at, "started {start}, db ready at {ready_at}");
    assert!(
        !batch_script(&app[0].id).contains("--dependency"),
        "a ready dependency needs no Slurm dependency"
    );
    repo.assert_converged();
}

#[test]
fn a_started_dependency_is_submitted_in_the_same_apply_and_the_dependent_after_it() {
    let repo = TestRepo::new("depends-started");
    repo.write_stack(
        "d",
        "services:\n  app:\n    recipe: test/echo\n    depends_on:\n      - {service: db, condition: started}\n  db:\n    recipe: test/sleeper\n",
    );
    let plan = repo.expect(&["plan"], 0);
    let db_at = plan.find("service \"d.db\"").expect("db in the plan");
    let app_at = plan.find("service \"d.app\"").expect("app in the plan");
    assert!(db_at < app_at, "dependency first:\n{plan}");
    assert!(
        plan.contains("# starts after d/db (depends_on: started"),
        "{plan}"
    );
    // Slurm's estimate for the dependent is of its script alone: the plan says it waits.
    assert!(plan.contains(", once those started\n"), "{plan}");

    repo.apply();
    let db = repo.alive("d.db");
    let app = repo.alive("d.app");
    assert_eq!((db.len(), app.len()), (1, 1), "both submitted in one apply");
    let db_array = db[0].id.split('_').next().unwrap().to_owned();
    let script = batch_script(&app[0].id);
    assert!(
        script.contains(&format!("#SBATCH --dependency=after:{db_array}\n")),
        "{script}"
    );
    let shown = show_job(&app[0].id);
    let dependency = field(&shown, "Dependency");
    // Slurm clears the dependency once it is met; until then it names the db's job.
    assert!(
        dependency == "(null)" || dependency.starts_with(&format!("after:{db_array}")),
        "{shown}"
    );
    wait_for("both running", 300, || {
        repo.alive("d.db")
            .first()
            .is_some_and(|j| j.state == "RUNNING")
            && repo
                .alive("d.app")
                .first()
                .is_some_and(|j| j.state == "RUNNING")
    });
    let db_start = field(&show_job(&db[0].id), "StartTime");
    let app_start = field(&show_job(&app[0].id), "StartTime");
    assert!(app_start >= db_start, "app {app_start}, db {db_start}");
    repo.assert_converged();

    // Status says how long each running replica has left of its 15-minute limit.
    let status: Value = serde_json::from_str(&repo.expect(&["status", "--json"], 0)).unwrap();
    let db_status = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "d.db")
        .unwrap();
    let left = db_status["time_left"][0]["seconds"].as_i64().unwrap();
    assert!((1..=15 * 60).contains(&left), "{db_status}");
    assert_eq!(db_status["time_left"][0]["job_id"], db[0].id.as_str());
    let text = repo.expect(&["status"], 0);
    assert!(
        text.contains(&format!("d.db[0] job {}: ", db[0].id))
            && text.contains(" left (time limit ends it at "),
        "{text}"
    );
}

#[test]
fn a_dependency_cycle_is_refused_naming_the_cycle() {
    let repo = TestRepo::new("depends-cycle");
    repo.write_stack(
        "a",
        "services:\n  db:\n    recipe: test/sleeper\n    depends_on: [web]\n  web:\n    recipe: test/echo\n    depends_on: [db]\n",
    );
    let out = repo.run(&["plan"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stacks/a.yaml:4:18: field `services.db.depends_on[0]`: dependency cycle: a/db -> a/web -> a/db"),
        "{stderr}"
    );
    assert!(repo.jobs().is_empty());
}

#[test]
fn plan_says_when_slurm_expects_the_new_replicas_to_start() {
    let repo = TestRepo::new("depends-estimate");
    repo.write_stack(
        "e",
        "services:\n  web:\n    recipe: test/sleeper\n    replicas: 2\n",
    );
    let plan = repo.expect(&["plan"], 0);
    // An idle cluster starts it now; a busy one (other tests share it) later: either is said.
    let said = plan.lines().find(|l| {
        l.contains("# starts now on node")
            || l.contains("# expected to start at ")
            || l.contains("# queued behind running jobs: Slurm expects ")
    });
    assert!(said.is_some(), "{plan}");
    let json: Value = serde_json::from_str(&repo.expect(&["plan", "--json"], 0)).unwrap();
    let estimate = &json["changes"][0]["start_estimate"];
    assert!(
        estimate["nodes"]
            .as_str()
            .is_some_and(|n| n.starts_with("node")),
        "{json}"
    );
    assert!(
        estimate["partition"]
            .as_str()
            .is_some_and(|p| !p.is_empty())
    );
    let (at, asked) = (
        estimate["at"].as_i64().unwrap(),
        estimate["asked_at"].as_i64().unwrap(),
    );
    assert!(at >= asked - 5, "{estimate}");
    // Nothing was submitted to learn it.
    assert!(repo.jobs().is_empty());
}

/// A service held by its dependency is not "RUNNING 0" with no reason: apply's summary and
/// status (text and JSON) say it is held and why.
#[test]
fn apply_and_status_name_a_service_held_by_its_dependency() {
    let repo = TestRepo::new("depends-held-status");
    // Never ready: its check fails, and counts only after a start period longer than the test.
    write_recipe(
        &repo,
        "test/slowdb",
        "name: slowdb\ncommand: exec sleep 600\nresources: {cpu: 1, memory: 64M, time_limit: 15}\nhealth:\n  command: \"false\"\n  start_period: 600s\n",
    );
    repo.write_stack(
        "h",
        "services:\n  worker:\n    recipe: test/echo\n    replicas: 2\n    depends_on: [store]\n  store:\n    recipe: test/slowdb\n",
    );
    let out = repo.apply();
    assert!(out.contains("Apply complete!"), "{out}");
    assert!(
        out.contains("Held: h.worker: waits for a ready replica of h/store (depends_on); its new replicas were not submitted"),
        "{out}"
    );
    assert!(repo.alive("h.worker").is_empty());

    let text = repo.expect(&["status"], 0);
    assert!(
        text.contains("h.worker: held: waits for a ready replica of h/store (depends_on)"),
        "{text}"
    );
    let doc: Value = serde_json::from_str(&repo.expect(&["status", "--json"], 0)).unwrap();
    let services = doc["services"].as_array().unwrap();
    let find = |name: &str| services.iter().find(|s| s["service"] == name).unwrap();
    assert_eq!(
        find("h.worker")["held"],
        "waits for a ready replica of h/store (depends_on)"
    );
    assert_eq!(find("h.worker")["desired"], 2);
    assert!(find("h.store").get("held").is_none(), "{doc}");
}

/// A crash-looping replica's successor is estimated as apply submits it: with its `--exclude`
/// (the estimate never names the node it avoids) and its `--begin` (it starts no earlier than
/// its backoff allows).
#[test]
fn a_successors_start_estimate_honours_its_exclude_and_begin() {
    let repo = TestRepo::new("estimate-successor");
    write_recipe(
        &repo,
        "test/boom",
        "name: boom\ncommand: exit 4\nresources: {cpu: 1, memory: 64M, time_limit: 15}\nrestart: {backoff: 10m, max_backoff: 1h}\n",
    );
    repo.write_stack("c", "services:\n  boom:\n    recipe: test/boom\n");
    repo.apply();
    let job = repo.alive("c.boom").remove(0).id;
    wait_for("the replica to fail", 400, || {
        repo.jobs()
            .iter()
            .any(|j| j.id == job && j.state == "FAILED")
    });
    let plan: Value = serde_json::from_str(&repo.expect(&["plan", "--json"], 0)).unwrap();
    let change = &plan["changes"][0];
    let exclude = change["exclude"]
        .as_str()
        .unwrap_or_else(|| panic!("three nodes fit it, so it avoids the failed one: {change}"));
    let estimate = &change["start_estimate"];
    let nodes = estimate["nodes"]
        .as_str()
        .unwrap_or_else(|| panic!("{change}"));
    assert!(nodes.starts_with("node"), "{change}");
    assert!(
        !nodes.contains(exclude),
        "estimated on {nodes}, the node it avoids ({exclude}): {change}"
    );
    let not_before = change["not_before"].as_i64().unwrap();
    let at = estimate["at"].as_i64().unwrap();
    assert!(
        at >= not_before - 60,
        "estimated at {at}, before its backoff ends at {not_before}: {change}"
    );
    let text = repo.expect(&["plan"], 0);
    assert!(text.contains(&format!("avoiding {exclude})")), "{text}");
    assert!(
        !text.contains(&format!(" on {exclude}\n"))
            && !text.contains(&format!(" on {exclude},"))
            && !text.contains("# starts now"),
        "{text}"
    );
}
