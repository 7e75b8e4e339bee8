//! `stackctl.yaml`: the owner, the backend and its REST or SSH target, the directories on the
//! cluster, the lock, and the secrets with their age settings.

use super::*;

/// The lock expiry when `stackctl.yaml` sets none.
pub const DEFAULT_LOCK_EXPIRY: Duration = Duration::from_secs(120);

/// The shortest lock expiry `stackctl.yaml` may set: a lock must outlive a slow `squeue`.
pub const MIN_LOCK_EXPIRY: Duration = Duration::from_secs(10);

/// Lifts `stackctl.yaml` (its defaults when the file is missing); `remote_url` gives the owner
/// when the file names none, `home` expands a leading `~` in paths read on this machine.
pub(super) fn lift_settings(
    config: Result<raw::Config, SpecError>,
    remote_url: Option<String>,
    home: Option<&str>,
    errors: &mut Vec<SpecError>,
) -> Option<Settings> {
    let shown = Path::new(CONFIG_FILE);
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    let (owner, legacy_owners) = match &config.owner {
        Some(owner) => (
            Owner::parse(&owner.value)
                .map_err(|message| SpecError::at(shown, owner.referenced, "owner", message)),
            Vec::new(),
        ),
        None => match remote_url {
            Some(url) => {
                let owner =
                    owner_from_remote_url(&url).map_err(|message| SpecError::file(shown, message));
                let legacy = legacy_owners_from_remote_url(&url)
                    .into_iter()
                    .filter(|legacy| owner.as_ref().is_ok_and(|owner| *owner != legacy.owner))
                    .collect();
                (owner, legacy)
            }
            None => (
                Err(SpecError::file(
                    shown,
                    "no owner: set `owner:` in stackctl.yaml or add a git remote (the owner must \
                     be the same on every checkout, so it is never guessed from the directory \
                     name)",
                )),
                Vec::new(),
            ),
        },
    };
    let backend = match config
        .cluster
        .backend
        .as_ref()
        .map(|b| (b.value.as_str(), b))
    {
        None | Some(("cli", _)) => Ok(BackendKind::Cli),
        Some(("rest", _)) => Ok(BackendKind::Rest),
        Some((other, spanned)) => Err(SpecError::at(
            shown,
            spanned.referenced,
            "cluster.backend",
            format!("unknown backend {other:?}; the backends are \"cli\" and \"rest\""),
        )),
    };
    let rest = match &backend {
        Ok(kind) => rest_target(shown, *kind, &config.cluster, home),
        Err(_) => Ok(None),
    };
    let ssh = config
        .cluster
        .ssh
        .as_ref()
        .map(|ssh| ssh_target(shown, ssh, home))
        .transpose();
    let accounting = match config.cluster.accounting.as_ref() {
        None => Ok(true),
        Some(v) if v.value == "auto" => Ok(true),
        Some(v) if v.value == "off" => Ok(false),
        Some(v) => Err(SpecError::at(
            shown,
            v.referenced,
            "cluster.accounting",
            format!("unknown value {:?}; it is \"auto\" or \"off\"", v.value),
        )),
    };
    let log_dir = dir_setting(shown, "log_dir", config.log_dir, "~/.stackctl/logs");
    let image_dir = dir_setting(shown, "image_dir", config.image_dir, "~/.stackctl/images");
    let container_runtime = match &config.container_runtime {
        None => Ok(crate::container::Runtime::default()),
        Some(v) => crate::container::Runtime::parse(&v.value)
            .map_err(|message| SpecError::at(shown, v.referenced, "container_runtime", message)),
    };
    let lock_expiry = match &config.lock.expiry {
        None => Ok(DEFAULT_LOCK_EXPIRY),
        Some(v) => match crate::desired::parse_duration(&v.value) {
            Ok(expiry) if expiry >= MIN_LOCK_EXPIRY => Ok(expiry),
            Ok(_) => Err(format!(
                "must be at least {}s, got {:?}",
                MIN_LOCK_EXPIRY.as_secs(),
                v.value
            )),
            Err(message) => Err(message),
        }
        .map_err(|message| SpecError::at(shown, v.referenced, "lock.expiry", message)),
    };
    let lock_partition = config
        .lock
        .partition
        .map(|v| {
            check_partition(&v.value)
                .map(|()| v.value.clone())
                .map_err(|message| SpecError::at(shown, v.referenced, "lock.partition", message))
        })
        .transpose();
    let secrets_dir = dir_setting(
        shown,
        "secrets_dir",
        config.secrets_dir,
        "~/.stackctl/secrets",
    );
    let secrets = lift_secrets(shown, &config.secrets, errors);
    let age = lift_age(shown, config.age, errors);
    let owner = take(owner, errors);
    let backend = take(backend, errors);
    let ssh = take(ssh, errors);
    let rest = take(rest, errors);
    let accounting = take(accounting, errors);
    let log_dir = take(log_dir, errors);
    let image_dir = take(image_dir, errors);
    let container_runtime = take(container_runtime, errors);
    let lock_expiry = take(lock_expiry, errors);
    let lock_partition = take(lock_partition, errors);
    Some(Settings {
        owner: owner?,
        legacy_owners,
        log_dir: log_dir?,
        image_dir: image_dir?,
        container_runtime: container_runtime?,
        backend: backend?,
        ssh: ssh?,
        rest: rest?,
        accounting: accounting?,
        lock_expiry: lock_expiry?,
        lock_partition: lock_partition?,
        secrets,
        age,
        secrets_dir: take(secrets_dir, errors)?,
    })
}

/// Lifts `secrets:`: each a valid name with exactly one source, an age file a relative path
/// inside the repo.
pub(super) fn lift_secrets(
    shown: &Path,
    raw: &BTreeMap<String, Spanned<raw::SecretSource>>,
    errors: &mut Vec<SpecError>,
) -> BTreeMap<String, crate::secret::Source> {
    use crate::secret::Source;
    let mut secrets = BTreeMap::new();
    for (name, entry) in raw {
        let field = format!("secrets.{name}");
        let at = |message: String| SpecError::at(shown, entry.referenced, &field, message);
        if let Err(message) = check_name(name) {
            errors.push(at(message));
            continue;
        }
        let e = &entry.value;
        let source = match (&e.env, &e.file, &e.age) {
            (Some(var), None, None) => {
                let mut chars = var.chars();
                let valid = chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
                if valid {
                    Ok(Source::Env(var.clone()))
                } else {
                    Err(format!("{var:?} is not a valid environment variable name"))
                }
            }
            (None, Some(file), None) if !file.trim().is_empty() => Ok(Source::File(file.clone())),
            (None, None, Some(age)) => {
                let path = Path::new(age);
                let inside = !age.is_empty()
                    && path.is_relative()
                    && path
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)));
                if inside {
                    Ok(Source::Age(path.to_path_buf()))
                } else {
                    Err(format!(
                        "{age:?} is not a path inside the repo: write it relative to the \
                         repo's root, e.g. `secrets/{name}.age`"
                    ))
                }
            }
            _ => Err(
                "give exactly one source: `{env: VARIABLE}`, `{file: PATH}` or \
                 `{age: secrets/NAME.age}`"
                    .to_owned(),
            ),
        };
        match source {
            Ok(source) => {
                secrets.insert(name.clone(), source);
            }
            Err(message) => errors.push(at(message)),
        }
    }
    secrets
}

/// Lifts `age:`: every recipient a valid age public key.
pub(super) fn lift_age(
    shown: &Path,
    raw: Option<raw::AgeConfig>,
    errors: &mut Vec<SpecError>,
) -> crate::secret::AgeSettings {
    let Some(raw) = raw else {
        return Default::default();
    };
    let mut recipients = Vec::new();
    for (i, recipient) in raw.recipients.iter().enumerate() {
        match crate::secret::parse_recipients(std::slice::from_ref(&recipient.value)) {
            Ok(_) => recipients.push(recipient.value.clone()),
            Err(message) => errors.push(SpecError::at(
                shown,
                recipient.referenced,
                format!("age.recipients[{i}]"),
                message,
            )),
        }
    }
    crate::secret::AgeSettings {
        recipients,
        identity_file: raw.identity_file.map(|f| f.value),
    }
}

/// Lifts the REST settings of `cluster`: required with `backend: rest` (`url`, `user`), refused
/// with any other backend, and never together with `ssh`.
pub(super) fn rest_target(
    shown: &Path,
    kind: BackendKind,
    cluster: &raw::ClusterConfig,
    home: Option<&str>,
) -> Result<Option<RestTarget>, SpecError> {
    let at = |location, field: &str, message: String| {
        SpecError::at(shown, location, format!("cluster.{field}"), message)
    };
    let rest_fields = [
        ("url", &cluster.url),
        ("user", &cluster.user),
        ("token_env", &cluster.token_env),
        ("token_file", &cluster.token_file),
        ("api", &cluster.api),
    ];
    if kind != BackendKind::Rest {
        if let Some((name, Some(value))) = rest_fields.iter().find(|(_, v)| v.is_some()) {
            return Err(at(
                value.referenced,
                name,
                "only `backend: rest` reads this".to_owned(),
            ));
        }
        return Ok(None);
    }
    let backend = cluster.backend.as_ref().expect("backend: rest was read");
    if cluster.ssh.is_some() {
        return Err(at(
            backend.referenced,
            "backend",
            "`ssh` runs the Slurm commands on a login node; it cannot be combined with \
             `backend: rest`"
                .to_owned(),
        ));
    }
    let required = |name: &str, value: &Option<Spanned<String>>| match value {
        Some(v) if !v.value.trim().is_empty() => Ok(v.value.trim().to_owned()),
        _ => Err(at(
            backend.referenced,
            name,
            format!("`backend: rest` needs `cluster.{name}`"),
        )),
    };
    let url = required("url", &cluster.url)?;
    let url_value = cluster.url.as_ref().expect("required above");
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(at(
            url_value.referenced,
            "url",
            format!("{url:?} is not an http:// or https:// URL"),
        ));
    }
    let user = required("user", &cluster.user)?;
    let token = match (&cluster.token_env, &cluster.token_file) {
        (Some(env), Some(_)) => {
            return Err(at(
                env.referenced,
                "token_env",
                "set `token_env` or `token_file`, not both".to_owned(),
            ));
        }
        (_, Some(file)) => TokenSource::File(crate::desired::expand_home(&file.value, home)),
        (Some(env), None) => TokenSource::Env(env.value.clone()),
        (None, None) => TokenSource::Env("SLURM_JWT".to_owned()),
    };
    let api = match &cluster.api {
        None => None,
        Some(v) if v.value == "auto" => None,
        Some(v) if crate::desired::REST_API_VERSIONS.contains(&v.value.as_str()) => {
            Some(v.value.clone())
        }
        Some(v) => {
            return Err(at(
                v.referenced,
                "api",
                format!(
                    "{:?} is not an API version this stackctl speaks; use `auto` or one of {}",
                    v.value,
                    crate::desired::REST_API_VERSIONS.join(", ")
                ),
            ));
        }
    };
    Ok(Some(RestTarget {
        url: url.trim_end_matches('/').to_owned(),
        user,
        token,
        api,
    }))
}

/// Lifts `cluster.ssh`: a host and user that cannot be taken for ssh options, a port in range,
/// variable names a shell accepts, and key and known-hosts paths with `~` expanded here (they
/// are read by the local ssh).
pub(super) fn ssh_target(
    shown: &Path,
    raw: &raw::SshConfig,
    home: Option<&str>,
) -> Result<SshTarget, SpecError> {
    let at = |location, field: &str, message: String| {
        SpecError::at(shown, location, format!("cluster.ssh.{field}"), message)
    };
    let name_like = |text: &str| {
        !text.is_empty()
            && !text.starts_with('-')
            && text.len() <= 253
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    };
    let host = &raw.host;
    if !name_like(&host.value) {
        return Err(at(
            host.referenced,
            "host",
            format!("{:?} is not a host name or address", host.value),
        ));
    }
    let user = match &raw.user {
        Some(user) if !name_like(&user.value) || user.value.contains(':') => {
            return Err(at(
                user.referenced,
                "user",
                format!("{:?} is not a user name", user.value),
            ));
        }
        user => user.as_ref().map(|u| u.value.clone()),
    };
    let port = match &raw.port {
        Some(port) => Some(
            u16::try_from(port.value)
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| {
                    at(
                        port.referenced,
                        "port",
                        format!("{} is not a TCP port (1-65535)", port.value),
                    )
                })?,
        ),
        None => None,
    };
    let path = |value: &Option<Spanned<String>>| {
        value
            .as_ref()
            .map(|v| crate::desired::expand_home(&v.value, home))
    };
    let mut env = BTreeMap::new();
    for (key, value) in &raw.env {
        let valid = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(at(
                value.referenced,
                &format!("env.{key}"),
                format!("{key:?} is not an environment variable name"),
            ));
        }
        env.insert(key.clone(), value.value.clone());
    }
    Ok(SshTarget {
        host: host.value.clone(),
        user,
        port,
        identity_file: path(&raw.identity_file),
        known_hosts_file: path(&raw.known_hosts_file),
        env,
    })
}

pub(super) fn dir_setting(
    shown: &Path,
    field: &str,
    value: Option<Spanned<String>>,
    default: &str,
) -> Result<String, SpecError> {
    let Some(value) = value else {
        return Ok(default.to_owned());
    };
    let rooted =
        value.value.starts_with('/') || value.value == "~" || value.value.starts_with("~/");
    if !rooted
        || value
            .value
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '%')
    {
        return Err(SpecError::at(
            shown,
            value.referenced,
            field,
            "must be an absolute path or start with `~/`, without whitespace, quotes or `%`",
        ));
    }
    Ok(value.value)
}
