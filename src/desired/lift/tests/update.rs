//! `update:` defaults, overrides and errors.

use super::*;

/// Loads one service `web.app` from `recipe` and `service` (the lines under `app:`).
fn update_of(recipe: &str, service: &str) -> Result<Service, SpecErrors> {
    let stack = format!("services:\n  app:\n    recipe: demo/svc\n{service}");
    let repo = load_files(
        &[
            ("stackctl.yaml", "owner: t\n"),
            ("recipes/demo/svc.yaml", recipe),
            ("stacks/web.yaml", &stack),
        ],
        None,
    )?;
    Ok(repo.desired.services[&ServiceAddr::new("web", "app")].clone())
}

#[test]
fn update_defaults_depend_on_replicas_health_and_time_limit() {
    let plain = "name: svc\ncommand: serve\n";
    let one = update_of(plain, "").unwrap().update;
    assert_eq!(one, UpdatePolicy::default());
    assert_eq!(one.strategy, Strategy::Recreate);
    let two = update_of(plain, "    replicas: 2\n").unwrap().update;
    assert_eq!(two.strategy, Strategy::Rolling);
    assert_eq!(two.renew_before, None);
    let healthy = "name: svc\ncommand: serve\nports: [8000]\nhealth: {tcp: {}}\n";
    assert_eq!(
        update_of(healthy, "").unwrap().update.strategy,
        Strategy::Rolling
    );
    let limited = "name: svc\ncommand: serve\nresources: {time_limit: 60}\n";
    assert_eq!(
        update_of(limited, "").unwrap().update.renew_before,
        Some(360)
    );
}

#[test]
fn update_is_overridden_field_by_field_and_stays_out_of_the_spec_hash() {
    let recipe = "name: svc\ncommand: serve\nresources: {time_limit: 10}\nupdate: {max_surge: 2, timeout: 1m}\nrenew_before: 2m\n";
    let plain = update_of(
        "name: svc\ncommand: serve\nresources: {time_limit: 10}\n",
        "",
    )
    .unwrap();
    let service = update_of(
            recipe,
            "    update:\n      strategy: rolling\n      queue_timeout: 20s\n      min_healthy_time: 0s\n      auto_revert: false\n    renew_before: 'off'\n",
        )
        .unwrap();
    assert_eq!(
        service.update,
        UpdatePolicy {
            strategy: Strategy::Rolling,
            max_surge: 2,
            max_unavailable: 0,
            min_healthy_time: 0,
            timeout: 60,
            queue_timeout: 20,
            auto_revert: false,
            renew_before: None,
        }
    );
    assert_eq!(service.hash, plain.hash, "update: is not part of the spec");
    let renewed = update_of(recipe, "").unwrap().update;
    assert_eq!(renewed.renew_before, Some(120));
}

#[test]
fn update_errors_name_file_line_and_field() {
    let plain = "name: svc\ncommand: serve\n";
    let cases = [
        (
            "    update: {max_surge: 0, max_unavailable: 0}\n",
            "services.app.update.max_unavailable",
            "cannot both be 0",
        ),
        (
            "    update: {strategy: blue-green}\n",
            "services.app.update.strategy",
            "neither `rolling` nor `recreate`",
        ),
        (
            "    update: {timeout: soon}\n",
            "services.app.update.timeout",
            "is not a duration",
        ),
        (
            "    update: {auto_revert: maybe}\n",
            "services.app.update.auto_revert",
            "must be `true` or `false`",
        ),
        (
            "    update: {auto_revert: true}\n",
            "services.app.update.auto_revert",
            "not supported yet",
        ),
        (
            "    resources: {time_limit: 3}\n    renew_before: 3m\n",
            "services.app.renew_before",
            "must be shorter than the time limit",
        ),
    ];
    for (service, field, says) in cases {
        let errors = update_of(plain, service).unwrap_err();
        let shown = errors.to_string();
        assert!(
            shown.contains("stacks/web.yaml:") && shown.contains(field) && shown.contains(says),
            "{service:?}: {shown}"
        );
    }
}
