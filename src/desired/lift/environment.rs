//! `environment:`, `endpoint_env:` and `{secret: NAME}` references: variable names and values,
//! endpoints of other services, secrets named in `stackctl.yaml`.

use super::*;

/// Validates `environment:`: text values by variable, and `{secret: NAME}` references by
/// variable; `prefix` is prepended to field paths in errors.
pub(super) fn lift_environment(
    ctx: &mut Ctx,
    prefix: &str,
    environment: &BTreeMap<String, raw::EnvValue>,
) -> (BTreeMap<String, String>, BTreeMap<String, Set<String>>) {
    let mut env = BTreeMap::new();
    let mut secret_env = BTreeMap::new();
    for (key, value) in environment {
        let field = format!("{prefix}environment.{key}");
        if let Some(problem) = env_name_problem(key) {
            ctx.error(value.referenced, &field, problem);
            continue;
        }
        match &value.value {
            raw::EnvEntry::Text(text) if text.contains('\0') => ctx.error(
                value.referenced,
                &field,
                "environment values cannot contain NUL bytes",
            ),
            raw::EnvEntry::Text(text) => {
                env.insert(key.clone(), text.clone());
            }
            raw::EnvEntry::Secret(name) => {
                let origin = ctx.origin(value.referenced, &field);
                secret_env.insert(
                    key.clone(),
                    Set {
                        value: name.clone(),
                        origin,
                    },
                );
            }
            raw::EnvEntry::Not(what) => ctx.error(
                value.referenced,
                &field,
                format!("{what}: a value is text, or {{secret: NAME}} for a secret"),
            ),
        }
    }
    (env, secret_env)
}

/// Refuses every `{secret: NAME}` that names no secret of `stackctl.yaml`.
pub(super) fn check_secret_refs(
    settings: &Settings,
    desired: &Desired,
    errors: &mut Vec<SpecError>,
) {
    for (addr, service) in &desired.services {
        for (key, reference) in &service.spec.secret_env {
            if settings.secrets.contains_key(&reference.secret) {
                continue;
            }
            let hint = match nearest(&reference.secret, settings.secrets.keys()) {
                Some(near) => format!(" (did you mean {near:?}?)"),
                None if settings.secrets.is_empty() => {
                    " (stackctl.yaml has no `secrets:`)".to_owned()
                }
                None => format!(
                    " (it has {})",
                    settings
                        .secrets
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            errors.push(service.origin(&format!("environment.{key}")).error(format!(
                "{addr}: no secret {:?} in stackctl.yaml's `secrets:`{hint}",
                reference.secret
            )));
        }
    }
}

/// Says what is wrong with an environment variable's name, if anything: it must be a shell
/// name, and not one of the `STACKCTL_*` and `SLURM_*` names stackctl and Slurm set.
pub(super) fn env_name_problem(key: &str) -> Option<String> {
    let key_ok = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !key_ok {
        return Some(format!("{key:?} is not a valid environment variable name"));
    }
    let (prefix, who) = [("STACKCTL_", "stackctl"), ("SLURM_", "Slurm")]
        .into_iter()
        .find(|(prefix, _)| key.starts_with(prefix))?;
    Some(format!(
        "{key} cannot be set here: {who} sets the `{prefix}*` variables of the job itself; use \
         another name"
    ))
}

/// Lifts a service's `endpoint_env:` into `spec`, checking each entry on its own; whether the
/// referenced service exists is checked once every stack is loaded ([`check_endpoint_refs`]).
pub(super) fn lift_endpoint_env(
    ctx: &mut Ctx,
    field: &str,
    raw: &BTreeMap<String, Spanned<raw::EndpointEnv>>,
    spec: &mut ReplicaSpec,
    origins: &mut BTreeMap<String, Origin>,
) {
    for (key, entry) in raw {
        let entry_field = format!("{field}.endpoint_env.{key}");
        if let Some(problem) = env_name_problem(key) {
            ctx.error(entry.referenced, &entry_field, problem);
            continue;
        }
        if spec.environment.contains_key(key) || spec.secret_env.contains_key(key) {
            ctx.error(
                entry.referenced,
                &entry_field,
                format!("{key} is set in `environment` too; set it in one place"),
            );
            continue;
        }
        let service = &entry.value.service;
        let service_field = format!("{entry_field}.service");
        let parts: Vec<&str> = service.value.split('/').collect();
        if parts.len() != 2 || parts.iter().any(|p| check_name(p).is_err()) {
            ctx.error(
                service.referenced,
                &service_field,
                format!("{:?} is not STACK/SERVICE, e.g. cache/redis", service.value),
            );
            continue;
        }
        let format = match &entry.value.format {
            Some(format) => {
                if let Err(problem) = EndpointRef::check_format(&format.value) {
                    ctx.error(format.referenced, &format!("{entry_field}.format"), problem);
                    continue;
                }
                format.value.clone()
            }
            None => EndpointRef::DEFAULT_FORMAT.to_owned(),
        };
        origins.insert(
            format!("endpoint_env.{key}"),
            ctx.origin(service.referenced, &service_field),
        );
        if let Some(port) = &entry.value.port {
            origins.insert(
                format!("endpoint_env.{key}.port"),
                ctx.origin(port.referenced, &format!("{entry_field}.port")),
            );
        }
        spec.endpoint_env.insert(
            key.clone(),
            EndpointRef {
                service: service.value.clone(),
                format,
                port: entry.value.port.as_ref().map(|p| p.value.clone()),
            },
        );
    }
}

/// Checks every `endpoint_env:` reference against the loaded services: the service exists,
/// is not the referring one, and has the named port (or any port).
pub(super) fn check_endpoint_refs(desired: &Desired, errors: &mut Vec<SpecError>) {
    for (addr, service) in &desired.services {
        for (key, reference) in &service.spec.endpoint_env {
            let at = |setting: &str| service.origin(&format!("endpoint_env.{key}{setting}"));
            let target = reference.address();
            let problem = match desired.services.get(&target) {
                _ if &target == addr => Some((
                    at(""),
                    "a service cannot refer to its own endpoint".to_owned(),
                )),
                None => Some((
                    at(""),
                    format!("no service {} in the repo", reference.service),
                )),
                Some(found) if found.spec.ports.is_empty() => {
                    Some((at(""), format!("{} declares no ports", reference.service)))
                }
                Some(found) => reference.port.as_ref().and_then(|name| {
                    let named = found
                        .spec
                        .ports
                        .iter()
                        .any(|p| p.name.as_ref() == Some(name));
                    (!named).then(|| {
                        let names: Vec<&str> = found
                            .spec
                            .ports
                            .iter()
                            .filter_map(|p| p.name.as_deref())
                            .collect();
                        let number_hint = if name.chars().all(|c| c.is_ascii_digit()) {
                            format!(
                                "; `endpoint_env` names a port, so give port {name} a name in \
                                 {}'s `ports:` (`{{name: http, port: {name}}}`) and write that name",
                                reference.service
                            )
                        } else {
                            String::new()
                        };
                        (
                            at(".port"),
                            format!(
                                "{} has no port named {name:?} (its named ports: {}){number_hint}",
                                reference.service,
                                if names.is_empty() {
                                    "none".to_owned()
                                } else {
                                    names.join(", ")
                                }
                            ),
                        )
                    })
                }),
            };
            if let Some((origin, problem)) = problem {
                errors.push(origin.error(problem));
            }
        }
    }
}

/// Lifts `on_endpoint_move:` (`replace`, the default, or `keep`), which only a service with
/// `endpoint_env` may set; returns whether a moved endpoint replaces the service's jobs.
pub(super) fn lift_on_endpoint_move(ctx: &mut Ctx, field: &str, service: &raw::Service) -> bool {
    match &service.on_endpoint_move {
        None => true,
        Some(value) => {
            let at = format!("{field}.on_endpoint_move");
            match value.value.as_str() {
                _ if service.endpoint_env.is_empty() => {
                    ctx.error(
                        value.referenced,
                        &at,
                        "applies only to a service with `endpoint_env`",
                    );
                    true
                }
                "replace" => true,
                "keep" => false,
                other => {
                    ctx.error(
                        value.referenced,
                        &at,
                        format!("{other:?} is neither `replace` nor `keep`"),
                    );
                    true
                }
            }
        }
    }
}
