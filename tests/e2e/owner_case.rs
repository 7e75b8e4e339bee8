//! End-to-end tests of owners derived from git remotes that differ only by letter case,
//! against the real Slurm test cluster: on a host whose paths are case-insensitive they name
//! one repository, so two checkouts must share one owner and never duplicate a replica, and
//! jobs that stackctl 0.2 submitted under the owner as written stop the plan with a migration
//! message instead of being submitted a second time.
//!
//! Every test gets owners of its own (a fresh random path on the remote) and cleans up by
//! cancelling its own job ids.
#![cfg(feature = "cluster")]

use crate::common;

use common::*;
use std::path::Path;

/// A mixed-case `Org/Repo` path no other run uses.
fn unique_path(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("E2e-{name}-{}-{nanos}/Infra-Repo", std::process::id())
}

/// Makes `dir` a git checkout whose `origin` is `url`, and drops `owner:` from its
/// `stackctl.yaml` so that the owner is derived from the remote.
fn use_remote(dir: &Path, url: &str) {
    for args in [&["init", "-q"][..], &["remote", "add", "origin", url]] {
        let status = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }
    write_config(dir, None);
}

/// Writes `stackctl.yaml` with the test's log directory and, when given, an owner.
fn write_config(dir: &Path, owner: Option<&str>) {
    let owner = owner.map_or(String::new(), |o| format!("owner: {o}\n"));
    std::fs::write(
        dir.join("stackctl.yaml"),
        format!("{owner}log_dir: {}\n", dir.join("logs").display()),
    )
    .unwrap();
}

/// The array job id of `<array>_<task>`.
fn array_of(id: &str) -> &str {
    id.split_once('_').map_or(id, |(array, _)| array)
}

#[test]
fn two_checkouts_whose_remotes_differ_only_by_case_share_one_replica() {
    let path = unique_path("case");
    let owner = format!("github.com/{}", path.to_ascii_lowercase());
    let mut first = TestRepo::new("case-a");
    let mut second = TestRepo::new("case-b");
    // One in https form with the case as GitHub shows it, one in scp form, all lower case.
    use_remote(first.path(), &format!("https://github.com/{path}.git"));
    use_remote(
        second.path(),
        &format!("git@github.com:{}", path.to_ascii_lowercase()),
    );
    first.owner = owner.clone();
    second.owner = owner.clone();
    for repo in [&first, &second] {
        repo.write_stack("svc", &stack(2));
    }

    first.apply();
    let submitted = first.alive("svc.app");
    assert_eq!(indexes_of(&submitted), [0, 1], "{submitted:?}");
    let out = second.expect(&["apply", "--auto-approve"], 0);
    assert!(out.contains("No changes"), "{out}");
    second.assert_converged();
    let after = second.alive("svc.app");
    assert_eq!(
        after.iter().map(|j| &j.id).collect::<Vec<_>>(),
        submitted.iter().map(|j| &j.id).collect::<Vec<_>>(),
        "the second checkout adopts the first's replicas and submits none"
    );
}

#[test]
fn jobs_under_the_owner_as_written_stop_the_plan_until_kept_or_cancelled() {
    let path = unique_path("migrate");
    let url = format!("https://gitlab.com/{path}");
    let written = format!("gitlab.com/{path}");
    let mut repo = TestRepo::new("case-migrate");
    // What stackctl 0.2 derived from this remote: the path's case as written.
    write_config(repo.path(), Some(&written));
    repo.owner = written.clone();
    repo.write_stack("db", &stack(1));
    repo.apply();
    let old = repo.alive("db.app");
    assert_eq!(old.len(), 1, "{old:?}");

    use_remote(repo.path(), &url);
    for args in [&["plan"][..], &["apply", "--auto-approve"]] {
        let error = repo.fails(args, 1);
        assert!(
            error.contains(&format!("owner: {written}"))
                && error.contains(&format!("scancel {}_", array_of(&old[0].id)))
                && error.contains("letter case"),
            "{args:?}: {error}"
        );
    }
    let normalised = format!("gitlab.com/{}", path.to_ascii_lowercase());
    assert!(
        of_owner(squeue(), &normalised).is_empty(),
        "nothing was submitted under the new owner"
    );
    assert_eq!(repo.alive("db.app").len(), 1);

    // Keeping them: `owner:` as the message says, and the plan is clean again.
    write_config(repo.path(), Some(&written));
    repo.assert_converged();
}
