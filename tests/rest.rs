//! End-to-end: the slurmrestd backend (`cluster.backend: rest`) against the test cluster's
//! slurmrestd (v0.0.38, JWT, http://127.0.0.1:16820), acting as root like the other suites, so
//! the shared helpers see its jobs. Covered: create, scale, replace, self-heal and destroy;
//! `plan --json` byte-identical to the local CLI's for the same state; concurrent applies over
//! REST and the CLI that never exceed the desired replicas; and one clear line for a wrong
//! token, an unreachable URL and a request Slurm refuses with `errors[]`, with the token in no
//! output even at debug level.
#![cfg(feature = "cluster")]

mod common;

use common::rest::{REST_URL, token};
use common::{TestRepo, sleepers, wait_for};
use std::process::{Command, Output};

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
        Some(1),
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

/// Runs `args` expecting exit 1 with one line on stderr; returns that line.
fn one_line_failure(repo: &TestRepo, token: &str, args: &[&str]) -> String {
    let mut command = common::rest::command(repo.path(), token, args);
    command.env("STACKCTL_LOG", "debug");
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
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

    let wrong = one_line_failure(&repo, "not-a-token", &["plan"]);
    assert!(wrong.contains("the token is not a JWT"), "{wrong}");

    let short = token("root", 1);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let expired = one_line_failure(&repo, &short, &["plan"]);
    assert!(expired.contains("the token expired"), "{expired}");

    // A token slurmctld cannot verify (its signature altered): Slurm's own answer, one line.
    let jwt = token("root", 900);
    let (unsigned, _) = jwt.rsplit_once('.').unwrap();
    let forged = format!("{unsigned}.AAAA");
    let refused = one_line_failure(&repo, &forged, &["plan"]);
    assert!(refused.contains("signature"), "{refused}");

    configure(&repo, "http://127.0.0.1:1");
    let unreachable = one_line_failure(&repo, &jwt, &["plan"]);
    assert!(
        unreachable.contains("cannot reach slurmrestd at http://127.0.0.1:1"),
        "{unreachable}"
    );

    // A version the server does not serve (22.05 has none past v0.0.38): named, with what it
    // offers.
    configure(&repo, REST_URL);
    let yaml = std::fs::read_to_string(repo.path().join("stackctl.yaml")).unwrap();
    std::fs::write(
        repo.path().join("stackctl.yaml"),
        format!("{yaml}  api: v0.0.40\n"),
    )
    .unwrap();
    let unserved = one_line_failure(&repo, &jwt, &["plan"]);
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
