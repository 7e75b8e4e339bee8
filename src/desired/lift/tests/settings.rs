//! `stackctl.yaml`: the owner, the lock, secrets.

use super::*;

/// Writes `files` (path, text) into a fresh repo and loads it.
#[test]
fn secret_values_are_references_a_stack_may_override_and_unknown_names_are_refused() {
    let config = "owner: t\nsecrets:\n  tok: {env: TOK_SRC}\n  db: {file: ~/db}\n";
    let recipe = "name: svc\ncommand: run\nenvironment:\n  A: {secret: tok}\n  B: plain\n  C: {secret: db}\n";
    // The stack makes B a secret and C plain again.
    let stack = "services:\n  app:\n    recipe: demo/svc\n    environment:\n      B: {secret: db}\n      C: 0x1F\n";
    let repo = load_files(
        &[
            ("stackctl.yaml", config),
            ("recipes/demo/svc.yaml", recipe),
            ("stacks/web.yaml", stack),
        ],
        None,
    )
    .unwrap();
    let spec = &repo.desired.services[&ServiceAddr::new("web", "app")].spec;
    let secrets: Vec<(&str, &str)> = spec
        .secret_env
        .iter()
        .map(|(k, r)| (k.as_str(), r.secret.as_str()))
        .collect();
    assert_eq!(secrets, [("A", "tok"), ("B", "db")]);
    let plain: Vec<(&str, &str)> = spec
        .environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(plain, [("C", "0x1F")], "a typed scalar keeps its text");

    let stack =
        "services:\n  app:\n    recipe: demo/svc\n    environment:\n      D: {secret: tokk}\n";
    let err = load_files(
        &[
            ("stackctl.yaml", config),
            ("recipes/demo/svc.yaml", recipe),
            ("stacks/web.yaml", stack),
        ],
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("services.app.environment.D"), "{err}");
    assert!(
        err.contains("no secret \"tokk\"") && err.contains("did you mean \"tok\""),
        "{err}"
    );

    let bad = "owner: t\nsecrets:\n  two: {env: A, file: /x}\n  out: {age: ../x.age}\n";
    let err = load_files(&[("stackctl.yaml", bad)], None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("secrets.two") && err.contains("exactly one source"),
        "{err}"
    );
    assert!(
        err.contains("secrets.out") && err.contains("inside the repo"),
        "{err}"
    );
}

#[test]
fn settings_derive_the_owner_and_the_legacy_owner_from_the_remote() {
    let repo = load_files(&[], Some("git@gitlab.a.example:team/infra.git")).unwrap();
    assert_eq!(repo.settings.owner.as_str(), "gitlab.a.example/team/infra");
    let legacy = |repo: &Repo| -> Vec<String> {
        repo.settings
            .legacy_owners
            .iter()
            .map(|l| l.owner.to_string())
            .collect()
    };
    assert_eq!(legacy(&repo), ["team/infra"]);
    // A mixed-case path on a case-insensitive host: 0.1's and 0.2's owners both differ.
    let mixed = load_files(&[], Some("https://GitLab.com/Data-Team/ETL.git")).unwrap();
    assert_eq!(mixed.settings.owner.as_str(), "gitlab.com/data-team/etl");
    assert_eq!(
        legacy(&mixed),
        ["Data-Team/ETL", "gitlab.com/Data-Team/ETL"]
    );
    assert!(mixed.settings.legacy_owners[1].rule.contains("letter case"));
    assert_eq!(repo.settings.lock_expiry, Duration::from_secs(120));
    assert_eq!(repo.settings.lock_partition, None);
    // An explicit owner has no legacy owner, even with a remote.
    let repo = load_files(
        &[("stackctl.yaml", "owner: team/infra\n")],
        Some("git@gitlab.a.example:team/infra.git"),
    )
    .unwrap();
    assert_eq!(repo.settings.owner.as_str(), "team/infra");
    assert_eq!(repo.settings.legacy_owners, []);
    // A local remote `/org/repo` gives the old owner itself: nothing to migrate.
    let repo = load_files(&[], Some("/org/repo.git")).unwrap();
    assert_eq!(repo.settings.owner.as_str(), "org/repo");
    assert_eq!(repo.settings.legacy_owners, []);
}

#[test]
fn lock_settings_are_read_and_checked() {
    let repo = load_files(
        &[(
            "stackctl.yaml",
            "owner: t\nlock: {expiry: 1m30s, partition: debug}\n",
        )],
        None,
    )
    .unwrap();
    assert_eq!(repo.settings.lock_expiry, Duration::from_secs(90));
    assert_eq!(repo.settings.lock_partition.as_deref(), Some("debug"));
    let repo = load_files(
        &[("stackctl.yaml", "owner: t\nlock:\n  expiry: 10\n")],
        None,
    );
    assert_eq!(repo.unwrap().settings.lock_expiry, Duration::from_secs(10));
    for (lock, field, says) in [
        ("{expiry: 9s}", "lock.expiry", "at least 10s"),
        ("{expiry: soon}", "lock.expiry", "not a duration"),
        ("{partition: 'gpu debug'}", "lock.partition", "partition"),
    ] {
        let errors = load_files(
            &[("stackctl.yaml", &format!("owner: t\nlock: {lock}\n"))],
            None,
        )
        .unwrap_err();
        let error = &errors.0[0];
        assert_eq!(error.field.as_deref(), Some(field), "{error}");
        assert_eq!(error.position.map(|(line, _)| line), Some(2), "{error}");
        assert!(error.message.contains(says), "{error}");
    }
}
