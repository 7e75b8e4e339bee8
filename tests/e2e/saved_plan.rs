//! End-to-end tests of saved plans against the real Slurm test cluster: `plan -out FILE`
//! then `apply FILE`, and every way a saved plan goes stale between the two. Each test has its
//! own owner and cancels only its own job ids.
#![cfg(feature = "cluster")]

use crate::common;

use common::*;
use std::path::Path;

/// Runs git in `dir` with a fixed identity; panics when it fails.
fn git(dir: &Path, args: &[&str]) {
    let output = std::process::Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {output:?}");
}

fn commit(repo: &TestRepo, message: &str) {
    git(repo.path(), &["add", "-A"]);
    git(
        repo.path(),
        &["commit", "-q", "--allow-empty", "-m", message],
    );
}

#[test]
fn a_saved_plan_is_shown_and_applied_without_a_prompt() {
    let repo = TestRepo::new("saved-apply");
    repo.write_stack("s", &stack(2));
    let plan = repo.expect(&["plan", "-out", "p.json"], 0);
    assert!(
        plan.contains("Plan: 2 to add, 0 to change, 0 to destroy."),
        "{plan}"
    );
    let file = repo.path().join("p.json");
    assert!(file.is_file());
    assert!(
        repo.indexes("s.app").is_empty(),
        "plan -out submits nothing"
    );

    let shown = repo.expect(&["show", "p.json"], 0);
    assert!(
        shown.starts_with(&format!(
            "Saved plan for owner \"{}\" from no git commit, made ",
            repo.owner
        )),
        "{shown}"
    );
    assert!(
        shown.ends_with(&plan),
        "show prints the plan as plan did:\n{shown}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&repo.expect(&["show", "p.json", "--json"], 0)).unwrap();
    assert_eq!(json["summary"]["add"], 2, "{json}");

    // stdin is no terminal here: a saved plan needs no --auto-approve.
    let out = repo.expect(&["apply", "p.json"], 0);
    assert!(
        out.contains("Apply complete! Jobs: 2 added, 0 changed, 0 destroyed."),
        "{out}"
    );
    assert_eq!(repo.indexes("s.app"), vec![0, 1]);
    assert_eq!(locks(&repo), 0, "the lock is released");
    repo.assert_converged();

    // The same file again: the replicas it was made without now exist.
    let stale = repo.fails(&["apply", "p.json"], 7);
    assert!(
        stale.contains("stale plan: the live replicas changed"),
        "{stale}"
    );
    assert_eq!(repo.indexes("s.app"), vec![0, 1]);

    // A file for another owner is refused before Slurm is asked anything.
    let text = std::fs::read_to_string(&file).unwrap();
    let other = text.replace(
        &format!("\"owner\": \"{}\"", repo.owner),
        "\"owner\": \"someone-else\"",
    );
    assert_ne!(other, text);
    std::fs::write(repo.path().join("other.json"), other).unwrap();
    let error = repo.fails(&["apply", "other.json"], 7);
    assert!(
        error.contains("this plan is for owner \"someone-else\""),
        "{error}"
    );
    let old = text.replace(
        &format!("\"stackctl_version\": \"{}\"", env!("CARGO_PKG_VERSION")),
        "\"stackctl_version\": \"0.0.1\"",
    );
    assert_ne!(old, text);
    std::fs::write(repo.path().join("old.json"), old).unwrap();
    let error = repo.fails(&["apply", "old.json"], 7);
    assert!(error.contains("saved by stackctl 0.0.1"), "{error}");
}

#[test]
fn a_replica_cancelled_by_hand_makes_the_saved_plan_stale() {
    let repo = TestRepo::new("saved-cancelled");
    repo.write_stack("s", &stack(2));
    repo.apply();
    repo.write_stack("s", &stack(3));
    repo.expect(&["plan", "--out", "p.json"], 0);
    let victim = repo.alive("s.app").remove(1);
    scancel(std::slice::from_ref(&victim.id));
    wait_for("the cancelled replica to end", 120, || {
        repo.alive("s.app").len() == 1
    });
    let stale = repo.fails(&["apply", "p.json"], 7);
    assert!(
        stale.contains(
            "stale plan: the live replicas changed since the plan was made (2 then, 1 now)"
        ),
        "{stale}"
    );
    assert_eq!(repo.indexes("s.app"), vec![0], "nothing was submitted");
    assert_eq!(locks(&repo), 0, "the lock is released");
}

#[test]
fn a_new_commit_changing_a_stack_makes_the_saved_plan_stale_and_one_with_the_same_tree_does_not() {
    let repo = TestRepo::new("saved-commit");
    git(repo.path(), &["init", "-q"]);
    repo.write_stack("s", &stack(1));
    commit(&repo, "one replica");
    repo.expect(&["plan", "-out=p.json"], 0);
    let file = "p.json";
    assert!(repo.path().join(file).is_file(), "relative to -C");
    repo.write_stack("s", &stack(2));
    commit(&repo, "two replicas");
    let stale = repo.fails(&["apply", file], 7);
    assert!(
        stale.contains("stale plan: the desired state changed since the plan was made"),
        "{stale}"
    );
    assert!(repo.indexes("s.app").is_empty(), "nothing was submitted");
    // Back to the planned content in yet another commit (as a squash merge makes): not stale.
    repo.write_stack("s", &stack(1));
    commit(&repo, "squashed");
    let out = repo.expect(&["apply", file], 0);
    assert!(out.contains("Apply complete! Jobs: 1 added"), "{out}");
    assert_eq!(repo.indexes("s.app"), vec![0]);
}

#[test]
fn another_apply_between_plan_and_apply_makes_the_saved_plan_stale() {
    let repo = TestRepo::new("saved-raced");
    repo.write_stack("s", &stack(2));
    repo.expect(&["plan", "-out", "p.json"], 0);
    repo.apply();
    let stale = repo.fails(&["apply", "p.json"], 7);
    assert!(
        stale.contains(
            "stale plan: the live replicas changed since the plan was made (0 then, 2 now)"
        ),
        "{stale}"
    );
    assert_eq!(
        repo.indexes("s.app"),
        vec![0, 1],
        "no second pair of replicas"
    );
    assert_eq!(locks(&repo), 0);
}

#[test]
fn the_ci_workflow_plans_comments_in_markdown_then_applies_the_saved_plan() {
    let repo = TestRepo::new("saved-ci");
    repo.write_stack("s", &stack(2));
    // On the pull request: save the plan, post its Markdown.
    repo.expect(&["plan", "-out", "p.json"], 0);
    let md = repo.expect(&["plan", "--format", "markdown"], 0);
    assert!(
        md.contains("**Plan: 2 to add, 0 to change, 0 to destroy.**"),
        "{md}"
    );
    assert!(
        md.contains("<details><summary>s: 2 to add, 0 to destroy</summary>"),
        "{md}"
    );
    assert!(repo.indexes("s.app").is_empty());
    // On merge: apply exactly the reviewed plan.
    let out = repo.expect(&["apply", "p.json"], 0);
    assert!(
        out.contains("Apply complete! Jobs: 2 added, 0 changed, 0 destroyed."),
        "{out}"
    );
    assert_eq!(repo.indexes("s.app"), vec![0, 1]);
    let md = repo.expect(&["plan", "--format", "markdown"], 0);
    assert!(md.ends_with("No changes.\n"), "{md}");
}
