//! Parse, then lift: reads every file of a repo into raw shapes, validates them and builds the
//! model. All problems are collected, so one run reports every broken file.

use super::error::{SpecError, SpecErrors, position_of};
use super::layout::{CONFIG_FILE, RECIPES_DIR, STACKS_DIR};
use super::raw;
use super::yaml;
use super::{
    BackendKind, Condition, Dependency, Desired, EndpointRef, HealthSpec, JobSpec, LegacyOwner,
    OnFailure, Origin, Owner, PortSpec, PortValue, Probe, ReplicaSpec, Repo, ResourceSpec,
    RestTarget, RestartPolicy, SecretRef, Service, ServiceAddr, Settings, SlurmSpec, SpecHash,
    SshTarget, Strategy, TokenSource, UpdatePolicy,
};
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Most replicas one service may ask for (Slurm's array indexes must stay below MaxArraySize).
pub const MAX_REPLICAS: i64 = 100_000;

/// The lock expiry when `stackctl.yaml` sets none.
pub const DEFAULT_LOCK_EXPIRY: Duration = Duration::from_secs(120);

/// The shortest lock expiry `stackctl.yaml` may set: a lock must outlive a slow `squeue`.
pub const MIN_LOCK_EXPIRY: Duration = Duration::from_secs(10);

/// Loads and validates the repo at `root`.
///
/// `remote_url` is asked for the git remote's URL only when `stackctl.yaml` names no owner.
pub fn load(root: &Path, remote_url: impl FnOnce() -> Option<String>) -> Result<Repo, SpecErrors> {
    let mut errors = Vec::new();
    let settings = load_settings(root, remote_url, &mut errors);
    let runtime = settings
        .as_ref()
        .map(|s| s.container_runtime)
        .unwrap_or_default();
    let recipes = load_recipes(root, runtime, &mut errors);
    let desired = load_stacks(root, &recipes, &mut errors);
    if let Some(settings) = &settings {
        check_marker_lengths(&settings.owner, &desired, &mut errors);
        check_secret_refs(settings, &desired, &mut errors);
    }
    match settings {
        Some(settings) if errors.is_empty() => Ok(Repo {
            settings,
            desired,
            secrets: BTreeMap::new(),
        }),
        _ => Err(SpecErrors(errors)),
    }
}

/// The longest address a job records about itself: what `hostname` returns when the node has
/// no IPv4 address (Linux's `HOST_NAME_MAX`); an IPv4 or IPv6 address is shorter.
const MAX_RECORDED_ADDR_LEN: usize = 64;

/// Returns the longest comment a job of `service` can carry: its marker with the longest
/// replica index list its replica count allows (at most [`crate::observed::MAX_INDEXES_LEN`]),
/// every crash-loop, rollout and endpoint field at its widest, and the readiness record the job writes
/// once running (`health=ready;ready_at=…;addr=…;ports=…`, every port 5 digits).
fn worst_case_comment_len(owner: &Owner, addr: &ServiceAddr, service: &Service) -> usize {
    use crate::observed::{
        FailRecord, Health, JobId, MAX_INDEXES_LEN, Marker, RestartRecord, SelfReport,
    };
    let all_indexes: usize = (0..service.replicas)
        .map(|i| i.to_string().len() + 1)
        .sum::<usize>()
        .saturating_sub(1);
    let widest_id = JobId {
        array: u64::from(u32::MAX),
        task: Some(u32::MAX),
    };
    let marker = Marker {
        owner: owner.clone(),
        service: addr.clone(),
        spec: service.hash.clone(),
        nonce: "f".repeat(12),
        indexes: "9".repeat(all_indexes.min(MAX_INDEXES_LEN)),
        report: SelfReport {
            health: Some(Health::Ready),
            addr: Some("h".repeat(MAX_RECORDED_ADDR_LEN)),
            ports: vec![65535; service.spec.ports.len()],
            ready_at: Some(99_999_999_999),
        },
        restart: RestartRecord {
            restarts: u32::MAX,
            fail: Some(FailRecord {
                state: "OUT_OF_MEMORY".into(),
                exit: Some(i32::MIN),
                at: 99_999_999_999,
            }),
            not_before: Some(99_999_999_999),
        },
        protect: true,
        pred: Some(widest_id),
        // One 8-digit fingerprint per `endpoint_env` variable (`ep=`).
        endpoints: vec!["f".repeat(8); service.spec.endpoint_env.len()],
    };
    marker.to_string().len()
}

/// Refuses every service whose jobs' comment could outgrow Slurm's limit
/// ([`crate::observed::MAX_COMMENT_LEN`]) once they record their readiness: Slurm would refuse
/// the record, and the replicas would run but never count as ready.
fn check_marker_lengths(owner: &Owner, desired: &Desired, errors: &mut Vec<SpecError>) {
    let limit = crate::observed::MAX_COMMENT_LEN;
    for (addr, service) in &desired.services {
        let len = worst_case_comment_len(owner, addr, service);
        if len <= limit {
            continue;
        }
        let setting = if service.spec.ports.is_empty() {
            "recipe"
        } else {
            "ports"
        };
        errors.push(service.origin(setting).error(format!(
            "{addr}'s jobs could need a Slurm comment of {len} characters once they record their \
             readiness (Slurm allows {limit}): the comment holds the owner ({} characters), the \
             stack and service names ({} and {}), {} port(s) of up to 5 digits and the node's \
             address; declare fewer ports, or use a shorter owner, stack or service name (over \
             by {})",
            owner.as_str().len(),
            addr.stack.len(),
            addr.service.len(),
            service.spec.ports.len(),
            len - limit
        )));
    }
}

/// Returns the value, or records the error and returns `None`.
fn take<T>(result: Result<T, SpecError>, errors: &mut Vec<SpecError>) -> Option<T> {
    result.map_err(|e| errors.push(e)).ok()
}

fn load_settings(
    root: &Path,
    remote_url: impl FnOnce() -> Option<String>,
    errors: &mut Vec<SpecError>,
) -> Option<Settings> {
    let shown = Path::new(CONFIG_FILE);
    let path = root.join(CONFIG_FILE);
    let config: raw::Config = if path.exists() {
        match yaml::read_file(&path, shown) {
            Ok(config) => config,
            Err(e) => {
                errors.push(e);
                return None;
            }
        }
    } else {
        raw::Config::default()
    };
    let (owner, legacy_owners) = match &config.owner {
        Some(owner) => (
            Owner::parse(&owner.value)
                .map_err(|message| SpecError::at(shown, owner.referenced, "owner", message)),
            Vec::new(),
        ),
        None => match remote_url() {
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
        Ok(kind) => rest_target(shown, *kind, &config.cluster),
        Err(_) => Ok(None),
    };
    let ssh = config
        .cluster
        .ssh
        .as_ref()
        .map(|ssh| ssh_target(shown, ssh))
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
        Some(v) => match super::parse_duration(&v.value) {
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
fn lift_secrets(
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
fn lift_age(
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

/// Refuses every `{secret: NAME}` that names no secret of `stackctl.yaml`.
fn check_secret_refs(settings: &Settings, desired: &Desired, errors: &mut Vec<SpecError>) {
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

/// Lifts the REST settings of `cluster`: required with `backend: rest` (`url`, `user`), refused
/// with any other backend, and never together with `ssh`.
fn rest_target(
    shown: &Path,
    kind: BackendKind,
    cluster: &raw::ClusterConfig,
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
        (_, Some(file)) => {
            let home = std::env::var("HOME").ok().filter(|h| !h.is_empty());
            TokenSource::File(super::expand_home(&file.value, home.as_deref()))
        }
        (Some(env), None) => TokenSource::Env(env.value.clone()),
        (None, None) => TokenSource::Env("SLURM_JWT".to_owned()),
    };
    let api = match &cluster.api {
        None => None,
        Some(v) if v.value == "auto" => None,
        Some(v) if super::REST_API_VERSIONS.contains(&v.value.as_str()) => Some(v.value.clone()),
        Some(v) => {
            return Err(at(
                v.referenced,
                "api",
                format!(
                    "{:?} is not an API version this stackctl speaks; use `auto` or one of {}",
                    v.value,
                    super::REST_API_VERSIONS.join(", ")
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
fn ssh_target(shown: &Path, raw: &raw::SshConfig) -> Result<SshTarget, SpecError> {
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
    let home = std::env::var("HOME").ok().filter(|h| !h.is_empty());
    let path = |value: &Option<Spanned<String>>| {
        value
            .as_ref()
            .map(|v| super::expand_home(&v.value, home.as_deref()))
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

fn dir_setting(
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

/// The hosts whose repository paths are case-insensitive (`Team/Infra` and `team/infra` name
/// one repository), so the owner derived from them is lower-cased. Other hosts keep the path's
/// case: a self-hosted server (a plain SSH or file path, Gitea, cgit) may hold both as two
/// repositories, and stackctl cannot tell which software a host runs; `owner:` in
/// `stackctl.yaml` settles any other case.
pub const CASE_INSENSITIVE_HOSTS: [&str; 6] = [
    "github.com",
    "ssh.github.com",
    "gitlab.com",
    "altssh.gitlab.com",
    "bitbucket.org",
    "altssh.bitbucket.org",
];

/// Returns the owner a git remote URL gives: the host and path, without scheme, user, port,
/// `.git` or trailing `/` (`git@gitlab.a.example:team/infra` gives `gitlab.a.example/team/infra`,
/// `https://github.com/team/infra.git` gives `github.com/team/infra`). A local path or
/// `file://` remote has no host and gives its path without the leading `/`
/// (`/srv/git/org/repo.git` gives `srv/git/org/repo`). The host is always lower-cased, the
/// path only on the [`CASE_INSENSITIVE_HOSTS`] (`https://github.com/Team/Infra` gives
/// `github.com/team/infra`); an `ssh.` or `altssh.` host stands for its site.
///
/// The error, for a URL that gives no usable owner, asks for `owner:` in `stackctl.yaml`.
pub fn owner_from_remote_url(url: &str) -> Result<Owner, String> {
    owner_with_case(url, false)
}

/// [`owner_from_remote_url`], keeping the path's case on every host when `keep_case` (the
/// rule of stackctl 0.2).
fn owner_with_case(url: &str, keep_case: bool) -> Result<Owner, String> {
    let ask = "set `owner:` in stackctl.yaml (any name that is the same on every checkout)";
    let (host, path) = split_remote_url(url);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.is_empty() {
        return Err(format!(
            "cannot derive an owner from the git remote: its URL names no repository path; {ask}"
        ));
    }
    let url = url.trim();
    let absolute = url.starts_with('/')
        || url
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("file://"));
    if (host.is_empty() && !absolute) || segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(format!(
            "cannot derive an owner from the git remote: it is a relative path, which differs \
             between checkouts; {ask}"
        ));
    }
    let path = segments.join("/");
    let host = host.to_ascii_lowercase();
    let text = if host.is_empty() {
        path
    } else if !keep_case && CASE_INSENSITIVE_HOSTS.contains(&host.as_str()) {
        let site = host
            .strip_prefix("altssh.")
            .or_else(|| host.strip_prefix("ssh."))
            .unwrap_or(&host);
        let path = path.to_ascii_lowercase();
        // `Infra.GIT` names the repository `infra` too, once the case is gone.
        let path = path.strip_suffix(".git").unwrap_or(&path);
        format!("{site}/{path}")
    } else {
        format!("{host}/{path}")
    };
    Owner::parse(&text)
        .map_err(|message| format!("cannot use the git remote as the owner: {message}; {ask}"))
}

/// Splits a git remote URL into its host (empty for a local path) and its path, without user,
/// port, `.git` or trailing `/`.
fn split_remote_url(url: &str) -> (&str, &str) {
    let url = url.trim().trim_end_matches('/');
    let url = url
        .strip_suffix(".git")
        .unwrap_or(url)
        .trim_end_matches('/');
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if scheme.eq_ignore_ascii_case("file") {
            return ("", path);
        }
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        // `host:port`, or `[v6]:port`; an IPv6 host keeps its brackets (and is refused).
        let host = match host.strip_prefix('[') {
            Some(_) => host.split_inclusive(']').next().unwrap_or(host),
            None => host.split_once(':').map_or(host, |(host, _)| host),
        };
        return (host, path);
    }
    // git's scp-like form, `[user@]host:path`: a colon before any slash.
    match url.split_once(':') {
        Some((host, path)) if !host.contains('/') => {
            (host.rsplit_once('@').map_or(host, |(_, host)| host), path)
        }
        _ => ("", url),
    }
}

/// Returns the owners that earlier versions of stackctl derived from a remote URL, each once:
/// 0.1's host-less `org/repo` ([`legacy_owner_from_remote_url`]) and 0.2's host and path with
/// the path's letter case as written. Jobs submitted under them need migrating.
fn legacy_owners_from_remote_url(url: &str) -> Vec<LegacyOwner> {
    let mut owners: Vec<LegacyOwner> = Vec::new();
    let candidates = [
        (
            legacy_owner_from_remote_url(url).and_then(|o| Owner::parse(&o).ok()),
            "stackctl before 0.2 derived from this repo's remote without its host",
        ),
        (
            owner_with_case(url, true).ok(),
            "stackctl 0.2 derived from this repo's remote with its letter case as written (the \
             host treats the path case-insensitively, so it is now lower-cased)",
        ),
    ];
    for (owner, rule) in candidates {
        if let Some(owner) = owner
            && !owners.iter().any(|o| o.owner == owner)
        {
            owners.push(LegacyOwner { owner, rule });
        }
    }
    owners
}

/// Returns the owner that stackctl 0.1 derived from a remote URL: its last two path
/// segments, `org/repo`, without the host. Jobs submitted under it need migrating.
pub fn legacy_owner_from_remote_url(url: &str) -> Option<String> {
    let url = url.trim().trim_end_matches('/');
    let url = url.strip_suffix(".git").unwrap_or(url);
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, path)| path),
        None => match url.split_once(':') {
            Some((host, path)) if !host.contains('/') => path,
            _ => url,
        },
    };
    let mut segments = path.rsplit('/').filter(|s| !s.is_empty());
    let repo = segments.next()?;
    let org = segments.next()?;
    Some(format!("{org}/{repo}"))
}

/// Lifted recipes by reference; `None` marks a recipe that failed (its errors are reported).
type RecipeTable = BTreeMap<String, Option<Recipe>>;

/// A recipe after validation: what it runs, plus its default settings.
struct Recipe {
    image: Option<String>,
    command: Option<String>,
    container: Option<crate::container::ContainerSpec>,
    setup: Vec<String>,
    defaults: Layer,
}

fn load_recipes(
    root: &Path,
    runtime: crate::container::Runtime,
    errors: &mut Vec<SpecError>,
) -> RecipeTable {
    let mut table = RecipeTable::new();
    let dir = root.join(RECIPES_DIR);
    let files = match yaml_files(root, &dir, true, errors) {
        Ok(files) => files,
        Err(e) => {
            if dir.exists() {
                errors.push(SpecError::file(RECIPES_DIR, format!("cannot list: {e}")));
            }
            return table;
        }
    };
    for file in files {
        let relative = file
            .strip_prefix(&dir)
            .expect("listed under the recipes dir");
        let name = relative
            .with_extension("")
            .to_string_lossy()
            .replace('\\', "/");
        let stem = relative
            .file_stem()
            .expect("a listed file has a name")
            .to_string_lossy()
            .into_owned();
        let shown = Path::new(RECIPES_DIR).join(relative);
        let recipe = match yaml::read_file::<raw::Recipe>(&file, &shown) {
            Ok(recipe) => {
                let before = errors.len();
                let mut ctx = Ctx {
                    file: &shown,
                    errors,
                };
                let dir = file.parent().unwrap_or(root).to_path_buf();
                let where_ = RecipeDir {
                    dir: &dir,
                    shown: shown.parent().unwrap_or(Path::new(RECIPES_DIR)),
                    runtime,
                };
                let lifted = lift_recipe(&mut ctx, recipe, &stem, &where_);
                lifted.filter(|_| errors.len() == before)
            }
            Err(e) => {
                errors.push(e);
                None
            }
        };
        table.insert(name, recipe);
    }
    table
}

/// Where a recipe lives, for the definition files next to it, and the default runtime.
struct RecipeDir<'a> {
    /// The directory on disk.
    dir: &'a Path,
    /// The directory as messages and specs name it (`recipes/web`).
    shown: &'a Path,
    /// `container_runtime:` of `stackctl.yaml`.
    runtime: crate::container::Runtime,
}

fn lift_recipe(
    ctx: &mut Ctx,
    recipe: raw::Recipe,
    stem: &str,
    where_: &RecipeDir,
) -> Option<Recipe> {
    if recipe.name.value != stem {
        ctx.error(
            recipe.name.referenced,
            "name",
            format!(
                "recipe name {:?} must match the file name {stem:?}",
                recipe.name.value
            ),
        );
    }
    if recipe.container.is_none() && recipe.command.is_none() {
        ctx.error(
            recipe.name.referenced,
            "command",
            "a recipe needs a `container`, a `command`, or both",
        );
        return None;
    }
    let image = recipe
        .container
        .as_ref()
        .and_then(|c| lift_image(ctx, &c.image, "container.image"));
    let command = recipe
        .command
        .as_ref()
        .and_then(|v| lift_command(ctx, v, "command"));
    let container = recipe
        .container
        .as_ref()
        .and_then(|c| lift_container(ctx, c, where_));
    let setup = lift_setup(ctx, recipe.setup.as_deref());
    let defaults = lift_layer(
        ctx,
        "",
        &recipe.resources,
        &recipe.slurm,
        &recipe.environment,
        recipe.ports.as_ref(),
        recipe.health.as_ref(),
    );
    let defaults = Layer {
        restart: recipe
            .restart
            .as_ref()
            .map(|r| lift_restart(ctx, "restart", r))
            .unwrap_or_default(),
        update: lift_update(
            ctx,
            "",
            recipe.update.as_ref(),
            recipe.renew_before.as_ref(),
        ),
        ..defaults
    };
    // An invalid `gpu` is reported already; only a valid count of 0 (or none) is checked.
    if let Some(gpu_type) = &defaults.gpu_type
        && (recipe.resources.gpu.is_none() || defaults.gpu.is_some())
        && defaults.gpu.as_ref().is_none_or(|gpu| gpu.value == 0)
    {
        ctx.errors.push(
            gpu_type.origin.error(
                "a GPU type needs GPUs: set `resources.gpu` to 1 or more, or drop `gpu_type`",
            ),
        );
    }
    Some(Recipe {
        image,
        command,
        container,
        setup,
        defaults,
    })
}

/// Validates a recipe's `container:` beyond its image: the runtime, the definition file next
/// to the recipe (read and hashed), the binds. Returns `None` for a plain Apptainer image with
/// neither definition nor binds, and on errors (recorded).
fn lift_container(
    ctx: &mut Ctx,
    c: &raw::Container,
    where_: &RecipeDir,
) -> Option<crate::container::ContainerSpec> {
    use crate::container::{ContainerSpec, ImageDefinition, Runtime, check_bind};
    let before = ctx.errors.len();
    let explicit = c
        .runtime
        .as_ref()
        .and_then(|v| match Runtime::parse(&v.value) {
            Ok(r) => Some(r),
            Err(message) => {
                ctx.error(v.referenced, "container.runtime", message);
                None
            }
        });
    if c.runtime.is_some() && explicit.is_none() {
        return None;
    }
    let runtime = explicit.unwrap_or(where_.runtime);
    let key = runtime.definition_key();
    let (wanted, other) = match runtime {
        Runtime::Apptainer => (&c.definition, &c.build),
        Runtime::Charliecloud | Runtime::Podman => (&c.build, &c.definition),
    };
    if let (Some(other), None) = (other, wanted) {
        let other_key = if key == "build" {
            "definition"
        } else {
            "build"
        };
        ctx.error(
            other.referenced,
            &format!("container.{other_key}"),
            format!(
                "{runtime} builds its image from `container.{key}` ({}); this recipe names only `{other_key}` (a recipe may name both, for either runtime)",
                if key == "build" {
                    "a Dockerfile"
                } else {
                    "an Apptainer .def file"
                }
            ),
        );
    }
    let build = wanted.as_ref().and_then(|v| {
        let field = format!("container.{key}");
        let name = v.value.as_str();
        let plain = !name.is_empty()
            && !name.starts_with('/')
            && !name.contains('\0')
            && Path::new(name)
                .components()
                .all(|part| matches!(part, std::path::Component::Normal(_)));
        if !plain {
            ctx.error(
                v.referenced,
                &field,
                format!(
                    "{name:?} must be a file next to the recipe (a relative path without `..`)"
                ),
            );
            return None;
        }
        match std::fs::read(where_.dir.join(name)) {
            Ok(content) => Some(ImageDefinition {
                file: where_.shown.join(name).to_string_lossy().replace('\\', "/"),
                sha256: crate::container::definition_hash(&content),
                text: String::from_utf8_lossy(&content).into_owned(),
            }),
            Err(e) => {
                ctx.error(
                    v.referenced,
                    &field,
                    format!("cannot read {}: {e}", where_.shown.join(name).display()),
                );
                None
            }
        }
    });
    if build.is_some()
        && let Err(message) = crate::container::check_image_name(&c.image.value)
    {
        ctx.error(c.image.referenced, "container.image", message);
    }
    let mut binds = Vec::new();
    for bind in c.binds.iter().flatten() {
        match check_bind(&bind.value) {
            Ok(()) => binds.push(bind.value.clone()),
            Err(message) => ctx.error(bind.referenced, "container.binds", message),
        }
    }
    if ctx.errors.len() > before {
        return None;
    }
    if runtime == Runtime::Apptainer && explicit.is_none() && build.is_none() && binds.is_empty() {
        return None;
    }
    Some(ContainerSpec {
        runtime,
        build,
        binds,
    })
}

/// Validates `setup:`: non-empty lines without NUL bytes.
fn lift_setup(ctx: &mut Ctx, setup: Option<&[Spanned<String>]>) -> Vec<String> {
    let mut lines = Vec::new();
    for line in setup.into_iter().flatten() {
        if line.value.trim().is_empty() || line.value.contains('\0') {
            ctx.error(line.referenced, "setup", "must be a non-empty shell line");
        } else {
            lines.push(line.value.clone());
        }
    }
    lines
}

/// Validates a container image: a non-empty, single-line path or URI.
fn lift_image(ctx: &mut Ctx, v: &Spanned<String>, field: &str) -> Option<String> {
    if v.value.trim().is_empty() || v.value.contains(['\n', '\0']) {
        ctx.error(
            v.referenced,
            field,
            "must be a non-empty, single-line path or URI",
        );
        None
    } else {
        Some(v.value.clone())
    }
}

/// Validates a command: non-empty, without NUL bytes.
fn lift_command(ctx: &mut Ctx, v: &Spanned<String>, field: &str) -> Option<String> {
    if v.value.trim().is_empty() || v.value.contains('\0') {
        ctx.error(
            v.referenced,
            field,
            "must be a non-empty command without NUL bytes",
        );
        None
    } else {
        Some(v.value.clone())
    }
}

/// Lists the `*.yaml` files under `dir` in sorted order, descending into subdirectories if
/// `recursive` (the recipes dir); otherwise (the stacks dir) anything but a `<name>.yaml` file
/// is reported. Names starting with `.` (`.gitkeep`, editor swap files) are ignored. A `.yml`
/// file, a link that leads outside `dir`, a broken link and a symlink loop are reported, not
/// skipped or followed: each would make the desired state differ from what the reviewer read.
fn yaml_files(
    root: &Path,
    dir: &Path,
    recursive: bool,
    errors: &mut Vec<SpecError>,
) -> std::io::Result<Vec<PathBuf>> {
    let base = dir.canonicalize()?;
    let mut walk = Walk {
        root,
        shown_dir: dir.strip_prefix(root).unwrap_or(dir).to_path_buf(),
        recursive,
        errors,
        files: Vec::new(),
        loops: BTreeSet::new(),
    };
    walk.dir(dir, &mut vec![base])?;
    let mut files = walk.files;
    files.sort();
    Ok(files)
}

/// One listing of `recipes/` or `stacks/`.
struct Walk<'a> {
    root: &'a Path,
    /// The listed directory as shown in errors, e.g. `stacks`.
    shown_dir: PathBuf,
    recursive: bool,
    errors: &'a mut Vec<SpecError>,
    files: Vec<PathBuf>,
    /// Symlink loops already reported, by the link's real location.
    loops: BTreeSet<PathBuf>,
}

impl Walk<'_> {
    /// Lists `current`; `chain` holds the real paths of the directories walked through to reach
    /// it, the listed directory first and `current` last.
    fn dir(&mut self, current: &Path, chain: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(current)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let shown = path.strip_prefix(self.root).unwrap_or(&path).to_path_buf();
            let is_link = entry.file_type()?.is_symlink();
            let real = match path.canonicalize() {
                Ok(real) => real,
                Err(_) if is_link && symlink_chain_loops(&path) => {
                    self.report_loop(&path, shown, "following it leads back to itself");
                    continue;
                }
                Err(e) if is_link && e.kind() == std::io::ErrorKind::NotFound => {
                    self.error(shown, "is a broken link: what it points to does not exist");
                    continue;
                }
                Err(e) => {
                    self.error(shown, format!("cannot be read: {e}"));
                    continue;
                }
            };
            if !real.starts_with(&chain[0]) {
                let message = format!("is a link that leads outside {}/", self.shown_dir.display());
                self.error(shown, message);
            } else if real.is_dir() {
                let physical_parent = path.parent().and_then(|p| p.canonicalize().ok());
                let loops = chain.contains(&real)
                    || physical_parent.is_some_and(|parent| parent.starts_with(&real));
                if is_link && loops {
                    self.report_loop(&path, shown, "it leads back to a directory that holds it");
                } else if self.recursive {
                    chain.push(real);
                    self.dir(&path, chain)?;
                    chain.pop();
                } else {
                    let message = format!(
                        "is a directory; {}/ holds only `<name>.yaml` files and stackctl does not \
                         read subdirectories, so move its stacks up into {}/",
                        self.shown_dir.display(),
                        self.shown_dir.display()
                    );
                    self.error(shown, message);
                }
            } else if path.extension().is_some_and(|e| e == "yml") {
                self.error(
                    shown,
                    "stackctl reads only `.yaml` files; rename it to end in `.yaml`",
                );
            } else if path.extension().is_some_and(|e| e == "yaml") {
                self.files.push(path);
            } else if !self.recursive {
                let message = format!(
                    "is not a stack file; {}/ holds only `<name>.yaml` files (names starting \
                     with `.` are ignored)",
                    self.shown_dir.display()
                );
                self.error(shown, message);
            }
        }
        Ok(())
    }

    fn error(&mut self, shown: PathBuf, message: impl Into<String>) {
        self.errors.push(SpecError::file(shown, message));
    }

    /// Reports a symlink loop once, however many paths lead to the link.
    fn report_loop(&mut self, link: &Path, shown: PathBuf, why: &str) {
        let real = match (
            link.parent().and_then(|p| p.canonicalize().ok()),
            link.file_name(),
        ) {
            (Some(parent), Some(name)) => parent.join(name),
            _ => link.to_path_buf(),
        };
        // Named where the link really is, not by the path of links that led to it.
        let shown = match self.root.canonicalize() {
            Ok(root) => real.strip_prefix(root).map_or(shown, Path::to_path_buf),
            Err(_) => shown,
        };
        if self.loops.insert(real) {
            self.error(shown, format!("is a symlink loop ({why}); remove it"));
        }
    }
}

/// Returns whether following the link at `path`, link after link, comes back to a link
/// already followed (`a -> b`, `b -> a`).
fn symlink_chain_loops(path: &Path) -> bool {
    let mut seen = BTreeSet::new();
    let mut current = path.to_path_buf();
    for _ in 0..64 {
        let Ok(target) = std::fs::read_link(&current) else {
            return false;
        };
        let (Some(parent), Some(name)) = (
            current.parent().and_then(|p| p.canonicalize().ok()),
            current.file_name(),
        ) else {
            return false;
        };
        if !seen.insert(parent.join(name)) {
            return true;
        }
        current = parent.join(target);
    }
    true
}

fn load_stacks(root: &Path, recipes: &RecipeTable, errors: &mut Vec<SpecError>) -> Desired {
    let mut desired = Desired::default();
    let dir = root.join(STACKS_DIR);
    let files = match yaml_files(root, &dir, false, errors) {
        Ok(files) => files,
        Err(e) => {
            errors.push(SpecError::file(
                STACKS_DIR,
                format!(
                    "cannot list the stacks directory ({e}); an empty stacks/ directory means \
                     \"run nothing\", a missing one is an error"
                ),
            ));
            return desired;
        }
    };
    for file in files {
        let file_name = file.file_name().expect("a listed file").to_owned();
        let shown = Path::new(STACKS_DIR).join(&file_name);
        let stem = Path::new(&file_name).with_extension("");
        let stem = stem.to_string_lossy();
        let stack = match read_stack(&file, &shown) {
            Ok(stack) => stack,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if let Err(message) = check_name(&stem) {
            errors.push(SpecError::file(
                &shown,
                format!("stack file name: {message}"),
            ));
            continue;
        }
        if let Some(name) = &stack.name
            && name.value != stem
        {
            errors.push(SpecError::at(
                &shown,
                name.referenced,
                "name",
                format!(
                    "stack name {:?} must match the file name {stem:?}",
                    name.value
                ),
            ));
        }
        for (service_name, service) in stack.services {
            let field = format!("services.{service_name}");
            if let Err(message) = check_name(&service_name) {
                // Map keys carry no position; the service's `recipe:` line is right below.
                errors.push(SpecError::at(
                    &shown,
                    service.recipe.referenced,
                    &field,
                    message,
                ));
                continue;
            }
            let mut ctx = Ctx {
                file: &shown,
                errors,
            };
            if let Some(service) = lift_service(&mut ctx, &stem, &field, service, recipes) {
                desired
                    .services
                    .insert(ServiceAddr::new(stem.as_ref(), service_name), service);
            }
        }
    }
    check_endpoint_refs(&desired, errors);
    check_depends_on(&desired, errors);
    link_job_targets(&mut desired, errors);
    desired
}

/// Reads one stack file. An empty one is an error, never "run nothing": a file truncated by a
/// bad merge must not destroy the stack's services.
fn read_stack(path: &Path, shown: &Path) -> Result<raw::Stack, SpecError> {
    const NOTHING: &str = "a stack that should run nothing says so with `services: {}`";
    let text = yaml::read_text(path, shown)?;
    if yaml::is_empty_document(&text) {
        return Err(SpecError::file(
            shown,
            format!("the file is empty (or holds only comments); {NOTHING}"),
        ));
    }
    yaml::parse(&text, shown).map_err(|mut e| {
        if e.message == "missing field `services`" {
            e.message = format!("{}; {NOTHING}", e.message);
        }
        e
    })
}

/// Where errors go while lifting one file.
struct Ctx<'a> {
    file: &'a Path,
    errors: &'a mut Vec<SpecError>,
}

impl Ctx<'_> {
    fn error(&mut self, at: serde_saphyr::Location, field: &str, message: impl Into<String>) {
        self.errors
            .push(SpecError::at(self.file, at, field, message));
    }

    /// Returns where a setting at `at` was written.
    fn origin(&self, at: serde_saphyr::Location, field: &str) -> Origin {
        Origin {
            file: self.file.to_path_buf(),
            position: position_of(at),
            field: field.to_owned(),
        }
    }

    /// Returns the value if it is an integer in `min..=max`, otherwise records an error.
    fn int_in(&mut self, v: &Spanned<raw::Int>, field: &str, min: i64, max: i64) -> Option<u32> {
        match &v.value {
            raw::Int::Value(n) if (min..=max).contains(n) => {
                Some(u32::try_from(*n).expect("limits fit in u32"))
            }
            raw::Int::Value(n) => {
                self.error(
                    v.referenced,
                    field,
                    format!("must be between {min} and {max}, got {n}"),
                );
                None
            }
            raw::Int::Not(what) => {
                self.error(
                    v.referenced,
                    field,
                    format!("must be an integer, got {what}"),
                );
                None
            }
        }
    }

    /// Returns the text if `ok` accepts it, otherwise records an error.
    fn word(
        &mut self,
        v: &Spanned<String>,
        field: &str,
        what: &str,
        ok: fn(&str) -> bool,
    ) -> Option<String> {
        if !v.value.is_empty() && v.value.len() <= 256 && ok(&v.value) {
            Some(v.value.clone())
        } else {
            self.error(v.referenced, field, format!("{:?} is not {what}", v.value));
            None
        }
    }
}

fn slurm_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// Returns whether `text` is a Slurm partition, or a comma-separated list of them (`gpu,debug`:
/// Slurm starts the job in whichever can run it first).
fn is_partition_list(text: &str) -> bool {
    text.split(',')
        .all(|part| !part.is_empty() && part.chars().all(slurm_word))
}

/// Checks a partition setting: a partition name, or a comma-separated list of them.
fn check_partition(text: &str) -> Result<(), String> {
    if !text.is_empty() && text.len() <= 256 && is_partition_list(text) {
        Ok(())
    } else {
        Err(format!(
            "{text:?} is not a Slurm partition name (or a comma-separated list of them)"
        ))
    }
}

/// Checks a stack or service name: it becomes part of job names and markers.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 63;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name {name:?} must be 1 to 63 lowercase letters, digits, '-' or '_', starting with a \
             letter or digit"
        ))
    }
}

/// Checks a recipe reference such as `inference/vllm`: relative, no `..`, no hidden parts.
fn check_recipe_ref(reference: &str) -> Result<(), String> {
    let ok = !reference.is_empty()
        && reference.split('/').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !part.contains("..")
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "recipe {reference:?} must be a path under recipes/ such as \"inference/vllm\" \
             (no leading '/', no '..')"
        ))
    }
}

fn lift_service(
    ctx: &mut Ctx,
    stack: &str,
    field: &str,
    service: raw::Service,
    recipes: &RecipeTable,
) -> Option<Service> {
    let reference = &service.recipe;
    let recipe_field = format!("{field}.recipe");
    if let Err(message) = check_recipe_ref(&reference.value) {
        ctx.error(reference.referenced, &recipe_field, message);
        return None;
    }
    let recipe = match recipes.get(&reference.value) {
        Some(Some(recipe)) => recipe,
        Some(None) => {
            ctx.error(
                reference.referenced,
                &recipe_field,
                format!(
                    "recipe {:?} is invalid (see its own error)",
                    reference.value
                ),
            );
            return None;
        }
        None => {
            let hint = nearest(&reference.value, recipes.keys())
                .map(|name| format!("; did you mean {name:?}?"))
                .unwrap_or_default();
            ctx.error(
                reference.referenced,
                &recipe_field,
                format!(
                    "no recipe {:?} (looked for recipes/{}.yaml){hint}",
                    reference.value, reference.value
                ),
            );
            return None;
        }
    };
    let before = ctx.errors.len();
    let replicas_field = format!("{field}.replicas");
    let replicas = match &service.replicas {
        Some(r) => ctx
            .int_in(r, &replicas_field, 0, MAX_REPLICAS)
            .map(|n| Set {
                value: n,
                origin: ctx.origin(r.referenced, &replicas_field),
            }),
        None => None,
    };
    let mut overrides = lift_layer(
        ctx,
        &format!("{field}."),
        &service.resources,
        &service.slurm,
        &service.environment,
        service.ports.as_ref(),
        service.health.as_ref(),
    );
    if let Some(c) = &service.container {
        let extra = [
            ("runtime", c.runtime.as_ref().map(|v| v.referenced)),
            ("definition", c.definition.as_ref().map(|v| v.referenced)),
            ("build", c.build.as_ref().map(|v| v.referenced)),
        ];
        for (key, at) in extra {
            if let Some(at) = at {
                ctx.error(
                    at,
                    &format!("{field}.container.{key}"),
                    "a stack may only override `container.image`; set the runtime and the \
                     image's definition in the recipe",
                );
            }
        }
        if let Some(bind) = c.binds.iter().flatten().next() {
            ctx.error(
                bind.referenced,
                &format!("{field}.container.binds"),
                "a stack may only override `container.image`; set binds in the recipe",
            );
        }
    }
    let image = service.container.as_ref().and_then(|c| {
        let field = format!("{field}.container.image");
        lift_image(ctx, &c.image, &field).map(|value| Set {
            value,
            origin: ctx.origin(c.image.referenced, &field),
        })
    });
    let command = service.command.as_ref().and_then(|v| {
        let field = format!("{field}.command");
        lift_command(ctx, v, &field).map(|value| Set {
            value,
            origin: ctx.origin(v.referenced, &field),
        })
    });
    overrides.restart = service
        .restart
        .as_ref()
        .map(|r| lift_restart(ctx, &format!("{field}.restart"), r))
        .unwrap_or_default();
    overrides.update = lift_update(
        ctx,
        &format!("{field}."),
        service.update.as_ref(),
        service.renew_before.as_ref(),
    );
    if let Some(gpu_type) = &overrides.gpu_type
        && (service.resources.gpu.is_none() || overrides.gpu.is_some())
    {
        let gpu = overrides.gpu.as_ref().or(recipe.defaults.gpu.as_ref());
        if gpu.is_none_or(|gpu| gpu.value == 0) {
            ctx.errors.push(gpu_type.origin.error(format!(
                "a GPU type needs GPUs, and this service asks for none (recipe {:?}): set \
                 `resources.gpu` to 1 or more, or drop `gpu_type`",
                reference.value
            )));
        }
    }
    if ctx.errors.len() > before {
        return None;
    }
    let restart_over = std::mem::take(&mut overrides.restart);
    let restart = match RestartDraft::merge(restart_over, &recipe.defaults.restart) {
        Ok(policy) => policy,
        Err(error) => {
            ctx.errors.push(error);
            return None;
        }
    };
    let update_over = std::mem::take(&mut overrides.update);
    // `renew_before:` written on the service itself: a protected service's opt-in to renewal.
    let renew_written = update_over
        .renew_before
        .as_ref()
        .map(|set| (set.value.is_some(), set.origin.clone()));
    let (mut spec, mut origins, health) = recipe.with_overrides(overrides);
    if let Some(image) = image {
        spec.image = Some(image.value);
        origins.insert("container.image".to_owned(), image.origin);
    }
    if let Some(command) = command {
        spec.command = Some(command.value);
        origins.insert("command".to_owned(), command.origin);
    }
    if let Some(health) = health {
        let ports_origin = origins.get("ports");
        match health.resolve(&spec.ports, ports_origin) {
            Ok(health) => spec.health = Some(health),
            Err(error) => {
                ctx.errors.push(error);
                return None;
            }
        }
    }
    let before = ctx.errors.len();
    lift_endpoint_env(ctx, field, &service.endpoint_env, &mut spec, &mut origins);
    let depends_on = lift_depends_on(ctx, stack, field, service.depends_on.as_ref(), &mut origins);
    let replace_on_endpoint_move = match &service.on_endpoint_move {
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
    };
    let job = lift_job(
        ctx,
        (stack, field),
        &service,
        &spec,
        replicas.as_ref(),
        &mut origins,
    );
    if ctx.errors.len() > before {
        return None;
    }
    origins.insert(
        "recipe".to_owned(),
        ctx.origin(reference.referenced, &recipe_field),
    );
    // An invalid count was reported above, so `None` here means none was written.
    let replicas = match replicas {
        Some(set) => {
            origins.insert("replicas".to_owned(), set.origin);
            set.value
        }
        None => 1,
    };
    let update = match UpdateDraft::merge(
        update_over,
        &recipe.defaults.update,
        UpdatePolicy::defaults_for(replicas, spec.health.is_some(), spec.resources.time_limit),
        spec.resources.time_limit,
    ) {
        Ok(policy) => policy,
        Err(error) => {
            ctx.errors.push(error);
            return None;
        }
    };
    let protect = service.protect.as_ref().is_some_and(|p| p.value);
    if let Some((renews, origin)) = renew_written {
        if protect && renews && spec.resources.time_limit.is_none() {
            ctx.errors.push(origin.error(
                "renew_before on a protected service allows its walltime renewal, but the \
                 service has no time_limit to renew before: set resources.time_limit or drop \
                 renew_before",
            ));
            return None;
        }
        origins.insert("renew_before".to_owned(), origin);
    }
    Some(Service {
        recipe: reference.value.clone(),
        replicas,
        hash: spec.hash(),
        spec,
        restart,
        protect,
        update,
        origins,
        depends_on,
        replace_on_endpoint_move,
        job,
    })
}

/// Lifts `kind:`, `target:` and `retries:`: a [`JobSpec`] for `kind: job`, none for a
/// service. `target` and `retries` apply only to a job; a job has no health check, no `auto`
/// port and at most one replica. Whether the target exists is checked once every stack is
/// loaded ([`link_job_targets`]).
fn lift_job(
    ctx: &mut Ctx,
    (stack, field): (&str, &str),
    service: &raw::Service,
    spec: &ReplicaSpec,
    replicas: Option<&Set<u32>>,
    origins: &mut BTreeMap<String, Origin>,
) -> Option<JobSpec> {
    let is_job = match &service.kind {
        None => false,
        Some(kind) => match kind.value.as_str() {
            "service" => false,
            "job" => true,
            other => {
                ctx.error(
                    kind.referenced,
                    &format!("{field}.kind"),
                    format!("{other:?} is neither `service` nor `job`"),
                );
                return None;
            }
        },
    };
    if !is_job {
        if let Some(target) = &service.target {
            ctx.error(
                target.referenced,
                &format!("{field}.target"),
                "applies only to a one-shot job: add `kind: job`",
            );
        }
        if let Some(retries) = &service.retries {
            ctx.error(
                retries.referenced,
                &format!("{field}.retries"),
                "applies only to a one-shot job (a service's restarts are `restart:`): add `kind: job`",
            );
        }
        return None;
    }
    let at = service.kind.as_ref().map(|k| k.referenced);
    if let Some(set) = replicas.filter(|r| r.value > 1) {
        ctx.errors.push(set.origin.error(format!(
            "a job runs once per spec, so it has 0 or 1 replicas, not {}",
            set.value
        )));
    }
    if spec.health.is_some()
        && let Some(at) = at
    {
        ctx.error(
            at,
            &format!("{field}.kind"),
            "a job is not health-checked (it ends): use a recipe without `health:`",
        );
    }
    if spec.has_auto_ports()
        && let Some(at) = at
    {
        ctx.error(
            at,
            &format!("{field}.kind"),
            "a job serves nothing, so it takes no `auto` port: set `ports: []` or fixed ports",
        );
    }
    let target = service.target.as_ref().and_then(|t| {
        let parts: Vec<&str> = t.value.split('/').collect();
        let address = match parts.as_slice() {
            [name] => ServiceAddr::new(stack, *name),
            [stack, name] => ServiceAddr::new(*stack, *name),
            _ => ServiceAddr::new("", ""),
        };
        if check_name(&address.stack).is_err() || check_name(&address.service).is_err() {
            ctx.error(
                t.referenced,
                &format!("{field}.target"),
                format!(
                    "{:?} is not SERVICE or STACK/SERVICE, e.g. api or web/api",
                    t.value
                ),
            );
            return None;
        }
        origins.insert(
            "target".to_owned(),
            ctx.origin(t.referenced, &format!("{field}.target")),
        );
        Some(address)
    });
    let retries = match &service.retries {
        None => 0,
        Some(r) => ctx
            .int_in(r, &format!("{field}.retries"), 0, 100)
            .unwrap_or(0),
    };
    Some(JobSpec {
        target,
        target_hash: None,
        retries,
    })
}

/// Checks every job's `target:` against the loaded services (it exists, is not the job, is
/// no job, declares a port) and puts the target's spec hash into the job's hash.
fn link_job_targets(desired: &mut Desired, errors: &mut Vec<SpecError>) {
    let hashes: BTreeMap<ServiceAddr, (SpecHash, bool, bool)> = desired
        .services
        .iter()
        .map(|(a, s)| {
            (
                a.clone(),
                (s.hash.clone(), s.job.is_some(), s.spec.ports.is_empty()),
            )
        })
        .collect();
    for (addr, service) in desired.services.iter_mut() {
        let Some(job) = service.job.as_mut() else {
            continue;
        };
        if let Some(target) = &job.target {
            let at = service.origins.get("target");
            let problem = match hashes.get(target) {
                _ if target == addr => Some("a job cannot target itself".to_owned()),
                None => Some(format!("no service {} in the repo", target.reference())),
                Some((_, true, _)) => Some(format!(
                    "{} is a job; a target is a service that serves",
                    target.reference()
                )),
                Some((_, _, true)) => Some(format!(
                    "{} declares no ports, so there is no address to aim at",
                    target.reference()
                )),
                Some((hash, _, _)) => {
                    job.target_hash = Some(hash.clone());
                    None
                }
            };
            if let (Some(problem), Some(at)) = (problem, at) {
                errors.push(at.error(problem));
            }
        }
        service.hash = job.hash(&service.spec);
    }
}

/// Lifts a service's `depends_on:` list, checking each entry on its own: `SERVICE` (in
/// `stack`) or `STACK/SERVICE`, and a condition of `started` or `ready` (the default). Each
/// entry's origin is recorded as `depends_on[i]`; whether the service exists and whether the
/// dependencies form a cycle is checked once every stack is loaded ([`check_depends_on`]).
fn lift_depends_on(
    ctx: &mut Ctx,
    stack: &str,
    field: &str,
    raw: Option<&Spanned<Vec<Spanned<raw::DependsOn>>>>,
    origins: &mut BTreeMap<String, Origin>,
) -> Vec<Dependency> {
    let mut list: Vec<Dependency> = Vec::new();
    for (i, entry) in raw
        .map(|r| r.value.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let entry_field = format!("{field}.depends_on[{i}]");
        let (service, condition) = match &entry.value {
            raw::DependsOn::Service { service, condition } => (service, condition),
            raw::DependsOn::Not(what) => {
                ctx.error(
                    entry.referenced,
                    &entry_field,
                    format!(
                        "{what} is not a dependency: write SERVICE, STACK/SERVICE or \
                         {{service: .., condition: started|ready}}"
                    ),
                );
                continue;
            }
        };
        let parts: Vec<&str> = service.split('/').collect();
        let address = match parts.as_slice() {
            [name] => ServiceAddr::new(stack, *name),
            [stack, name] => ServiceAddr::new(*stack, *name),
            _ => ServiceAddr::new("", ""),
        };
        if check_name(&address.stack).is_err() || check_name(&address.service).is_err() {
            ctx.error(
                entry.referenced,
                &entry_field,
                format!("{service:?} is not SERVICE or STACK/SERVICE, e.g. db or cache/redis"),
            );
            continue;
        }
        let condition = match condition.as_deref().map(Condition::parse) {
            None => Condition::Ready,
            Some(Ok(condition)) => condition,
            Some(Err(problem)) => {
                ctx.error(
                    entry.referenced,
                    &format!("{entry_field}.condition"),
                    problem,
                );
                continue;
            }
        };
        if list.iter().any(|d| d.service == address) {
            ctx.error(
                entry.referenced,
                &entry_field,
                format!("{} is listed twice", address.reference()),
            );
            continue;
        }
        origins.insert(
            format!("depends_on[{}]", list.len()),
            ctx.origin(entry.referenced, &entry_field),
        );
        list.push(Dependency {
            service: address,
            condition,
        });
    }
    list
}

/// Checks every `depends_on:` entry against the loaded services: the service exists and is
/// not the depending one, and no chain of dependencies leads back to where it started.
fn check_depends_on(desired: &Desired, errors: &mut Vec<SpecError>) {
    let mut broken = false;
    for (addr, service) in &desired.services {
        for (i, dependency) in service.depends_on.iter().enumerate() {
            let at = service.origin(&format!("depends_on[{i}]"));
            let problem = if &dependency.service == addr {
                "a service cannot depend on itself".to_owned()
            } else if !desired.services.contains_key(&dependency.service) {
                format!("no service {} in the repo", dependency.service.reference())
            } else {
                continue;
            };
            broken = true;
            errors.push(at.error(problem));
        }
    }
    if broken {
        return;
    }
    if let Err(cycle) = desired.dependency_order() {
        // Reported at the entry of the cycle's first service that names the next one.
        let first = desired.services.get(cycle[0]).expect("a loaded service");
        let i = first
            .depends_on
            .iter()
            .position(|d| &d.service == cycle[1])
            .unwrap_or(0);
        let names: Vec<String> = cycle.iter().map(|a| a.reference()).collect();
        errors.push(first.origin(&format!("depends_on[{i}]")).error(format!(
            "dependency cycle: {}; no service of a cycle could ever start",
            names.join(" -> ")
        )));
    }
}

/// Returns the known name closest to `wanted`, if it is close enough to be a likely typo.
fn nearest<'a>(wanted: &str, known: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    known
        .map(|name| (strsim::levenshtein(wanted, name), name))
        .filter(|(distance, name)| *distance <= (name.len() / 3).max(2))
        .min()
        .map(|(_, name)| name)
}

/// A validated setting and where it was written.
#[derive(Clone)]
struct Set<T> {
    value: T,
    origin: Origin,
}

/// Settings that a recipe gives and a stack service may override, validated, all optional.
#[derive(Default)]
struct Layer {
    nodes: Option<Set<u32>>,
    cpu: Option<Set<u32>>,
    /// `memory` or `memory_per_cpu`; they exclude each other, so an override replaces both.
    memory: Option<Set<Memory>>,
    gpu: Option<Set<u32>>,
    gpu_type: Option<Set<String>>,
    time_limit: Option<Set<u32>>,
    cpu_bind: Option<Set<String>>,
    partition: Option<Set<String>>,
    qos: Option<Set<String>>,
    account: Option<Set<String>>,
    ports: Option<Set<Vec<PortSpec>>>,
    health: Option<Set<HealthDraft>>,
    restart: RestartDraft,
    update: UpdateDraft,
    environment: BTreeMap<String, String>,
    /// `{secret: NAME}` values, by variable.
    secret_env: BTreeMap<String, Set<String>>,
}

/// A health check as validated before the ports it probes are known (a stack may replace the
/// recipe's ports, or its health check, or both).
#[derive(Clone)]
struct HealthDraft {
    probe: ProbeDraft,
    interval: u64,
    timeout: u64,
    start_period: u64,
    failure_threshold: u32,
    on_failure: OnFailure,
}

#[derive(Clone)]
enum ProbeDraft {
    Http { port: PortRef, path: String },
    Tcp { port: PortRef },
    Command(String),
}

/// A probe's `port:` as written (a name, a port number, or nothing: the first port), and
/// where.
#[derive(Clone)]
struct PortRef {
    which: Option<PortWhich>,
    origin: Origin,
}

#[derive(Clone)]
enum PortWhich {
    Name(String),
    /// A port number, which must be one of the service's fixed ports.
    Number(u64),
}

impl HealthDraft {
    /// Resolves the probe's port against the service's merged ports; `ports_origin` is where
    /// those were written, for the message.
    fn resolve(
        self,
        ports: &[PortSpec],
        ports_origin: Option<&Origin>,
    ) -> Result<HealthSpec, SpecError> {
        let resolve = |port: &PortRef| -> Result<usize, SpecError> {
            let declared = match ports_origin {
                Some(o) => format!(
                    " (the ports are declared at {}{})",
                    o.file.display(),
                    o.position
                        .map_or(String::new(), |(l, c)| format!(":{l}:{c}"))
                ),
                None => String::new(),
            };
            match &port.which {
                None if ports.is_empty() => Err(port.origin.error(format!(
                    "the probe needs a port, and the service declares none{declared}: add \
                     `ports:` (e.g. `ports: [auto]`)"
                ))),
                None => Ok(0),
                Some(PortWhich::Number(n)) => ports
                    .iter()
                    .position(|p| p.number().is_some_and(|p| u64::from(p) == *n))
                    .ok_or_else(|| {
                        let list: Vec<String> = ports.iter().map(describe_port).collect();
                        port.origin.error(format!(
                            "port {n} is not one of the service's ports ({}){declared}; write \
                             one of their numbers, or the name of a named one (an `auto` \
                             port has no number until the job starts)",
                            if list.is_empty() {
                                "it declares none".to_owned()
                            } else {
                                list.join(", ")
                            }
                        ))
                    }),
                Some(PortWhich::Name(name)) => ports
                    .iter()
                    .position(|p| p.name.as_deref() == Some(name))
                    .ok_or_else(|| {
                        let names: Vec<&str> =
                            ports.iter().filter_map(|p| p.name.as_deref()).collect();
                        port.origin.error(format!(
                            "no port named {name:?}; named ports: {}{declared}",
                            if names.is_empty() {
                                "none".to_owned()
                            } else {
                                names.join(", ")
                            }
                        ))
                    }),
            }
        };
        let probe = match &self.probe {
            ProbeDraft::Http { port, path } => Probe::Http {
                port: resolve(port)?,
                path: path.clone(),
            },
            ProbeDraft::Tcp { port } => Probe::Tcp {
                port: resolve(port)?,
            },
            ProbeDraft::Command(command) => Probe::Command(command.clone()),
        };
        Ok(HealthSpec {
            probe,
            interval: self.interval,
            timeout: self.timeout,
            start_period: self.start_period,
            failure_threshold: self.failure_threshold,
            on_failure: self.on_failure,
        })
    }
}

#[derive(Clone)]
enum Memory {
    PerNode(String),
    PerCpu(String),
}

/// Validates one layer of settings; `prefix` is prepended to field paths in errors.
fn lift_layer(
    ctx: &mut Ctx,
    prefix: &str,
    resources: &raw::Resources,
    slurm: &raw::Slurm,
    environment: &BTreeMap<String, raw::EnvValue>,
    ports: Option<&raw::Ports>,
    health: Option<&Spanned<raw::Health>>,
) -> Layer {
    let res = |name: &str| format!("{prefix}resources.{name}");
    let int = |ctx: &mut Ctx, name: &str, v: &Option<Spanned<raw::Int>>, min: i64, max: i64| {
        let v = v.as_ref()?;
        let field = res(name);
        let value = ctx.int_in(v, &field, min, max)?;
        Some(Set {
            value,
            origin: ctx.origin(v.referenced, &field),
        })
    };
    let nodes = int(ctx, "nodes", &resources.nodes, 1, 100_000);
    let cpu = int(ctx, "cpu", &resources.cpu, 1, 100_000);
    let gpu = int(ctx, "gpu", &resources.gpu, 0, 1024);
    let time_limit = resources.time_limit.as_ref().and_then(|v| {
        let field = res("time_limit");
        match super::parse_time_limit(&v.value) {
            Ok(minutes) => Some(Set {
                value: minutes,
                origin: ctx.origin(v.referenced, &field),
            }),
            Err(message) => {
                ctx.error(v.referenced, &field, message);
                None
            }
        }
    });
    let memory = match (&resources.memory, &resources.memory_per_cpu) {
        (Some(_), Some(v)) => {
            ctx.error(
                v.referenced,
                &res("memory_per_cpu"),
                "set `memory` or `memory_per_cpu`, not both",
            );
            None
        }
        (Some(m), None) => memory_amount(ctx, m, &res("memory")).map(|set| Set {
            value: Memory::PerNode(set.value),
            origin: set.origin,
        }),
        (None, Some(m)) => memory_amount(ctx, m, &res("memory_per_cpu")).map(|set| Set {
            value: Memory::PerCpu(set.value),
            origin: set.origin,
        }),
        (None, None) => None,
    };
    let word = |ctx: &mut Ctx,
                v: &Option<Spanned<String>>,
                field: String,
                what: &str,
                ok: fn(&str) -> bool| {
        let v = v.as_ref()?;
        let value = ctx.word(v, &field, what, ok)?;
        Some(Set {
            value,
            origin: ctx.origin(v.referenced, &field),
        })
    };
    let gpu_type = word(
        ctx,
        &resources.gpu_type,
        res("gpu_type"),
        "a GPU type",
        |text| text.chars().all(slurm_word),
    );
    let cpu_bind = word(
        ctx,
        &resources.cpu_bind,
        res("cpu_bind"),
        "a CPU binding",
        |text| {
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ',' | ':'))
        },
    );
    let slurm_field = |name: &str| format!("{prefix}slurm.{name}");
    let partition = word(
        ctx,
        &slurm.partition,
        slurm_field("partition"),
        "a Slurm partition name (or a comma-separated list of them)",
        is_partition_list,
    );
    let qos = word(
        ctx,
        &slurm.qos,
        slurm_field("qos"),
        "a Slurm QOS name",
        |text| text.chars().all(slurm_word),
    );
    let account = word(
        ctx,
        &slurm.account,
        slurm_field("account"),
        "a Slurm account name",
        |text| text.chars().all(slurm_word),
    );
    let ports = ports.and_then(|ports| lift_ports(ctx, &format!("{prefix}ports"), ports));
    let health = health.and_then(|health| lift_health(ctx, &format!("{prefix}health"), health));

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
    Layer {
        nodes,
        cpu,
        memory,
        gpu,
        gpu_type,
        time_limit,
        cpu_bind,
        partition,
        qos,
        account,
        ports,
        health,
        restart: RestartDraft::default(),
        update: UpdateDraft::default(),
        environment: env,
        secret_env,
    }
}

/// Validates a `restart:` block: durations from 1s to 1d, `max_attempts` `none` or 0 to
/// 10000. Whether `max_backoff` is at least `backoff` is checked once the layers are merged.
fn lift_restart(ctx: &mut Ctx, field: &str, restart: &Spanned<raw::Restart>) -> RestartDraft {
    let r = &restart.value;
    let seconds = |ctx: &mut Ctx, v: &Option<Spanned<String>>, name: &str| {
        let v = v.as_ref()?;
        let field = format!("{field}.{name}");
        match super::parse_duration(&v.value) {
            Ok(d) if (1..=86_400).contains(&d.as_secs()) => Some(Set {
                value: d.as_secs(),
                origin: ctx.origin(v.referenced, &field),
            }),
            Ok(d) => {
                ctx.error(
                    v.referenced,
                    &field,
                    format!("must be between 1s and 1d, got {}s", d.as_secs()),
                );
                None
            }
            Err(message) => {
                ctx.error(v.referenced, &field, message);
                None
            }
        }
    };
    let backoff = seconds(ctx, &r.backoff, "backoff");
    let max_backoff = seconds(ctx, &r.max_backoff, "max_backoff");
    let max_attempts = r.max_attempts.as_ref().and_then(|v| {
        let field = format!("{field}.max_attempts");
        let value = match &v.value {
            raw::Attempts::Unlimited => None,
            raw::Attempts::Count(raw::Int::Not(what)) => {
                ctx.error(
                    v.referenced,
                    &field,
                    format!("must be an integer or `none`, got {what}"),
                );
                return None;
            }
            raw::Attempts::Count(raw::Int::Value(n)) if (0..=10_000).contains(n) => {
                Some(u32::try_from(*n).expect("within 0..=10000"))
            }
            raw::Attempts::Count(raw::Int::Value(n)) => {
                ctx.error(
                    v.referenced,
                    &field,
                    format!("must be between 0 and 10000 (or `none`), got {n}"),
                );
                return None;
            }
        };
        Some(Set {
            value,
            origin: ctx.origin(v.referenced, &field),
        })
    });
    RestartDraft {
        backoff,
        max_backoff,
        max_attempts,
    }
}

/// A `restart:` layer as validated: each field optional, so a stack overrides field by field.
#[derive(Default)]
struct RestartDraft {
    backoff: Option<Set<u64>>,
    max_backoff: Option<Set<u64>>,
    max_attempts: Option<Set<Option<u32>>>,
}

impl RestartDraft {
    /// Lays `over` (a stack service's) over `base` (the recipe's) and fills in the defaults;
    /// an error when the effective `max_backoff` is shorter than `backoff`.
    fn merge(over: RestartDraft, base: &RestartDraft) -> Result<RestartPolicy, SpecError> {
        let defaults = RestartPolicy::default();
        let backoff = over.backoff.or_else(|| base.backoff.clone());
        let max_backoff = over.max_backoff.or_else(|| base.max_backoff.clone());
        let max_attempts = over.max_attempts.or_else(|| base.max_attempts.clone());
        let policy = RestartPolicy {
            backoff: backoff.as_ref().map_or(defaults.backoff, |s| s.value),
            max_backoff: max_backoff
                .as_ref()
                .map_or(defaults.max_backoff, |s| s.value),
            max_attempts: max_attempts.map_or(defaults.max_attempts, |s| s.value),
        };
        if policy.max_backoff < policy.backoff {
            let at = max_backoff.or(backoff).expect("a default pair is in order");
            return Err(at.origin.error(format!(
                "max_backoff ({}s) must be at least backoff ({}s)",
                policy.max_backoff, policy.backoff
            )));
        }
        Ok(policy)
    }
}

/// Validates a duration setting in `min..=max` seconds, recording an error otherwise.
fn seconds_in(
    ctx: &mut Ctx,
    v: Option<&Spanned<String>>,
    field: &str,
    min: u64,
    max: u64,
) -> Option<Set<u64>> {
    let v = v?;
    match super::parse_duration(&v.value) {
        Ok(d) if (min..=max).contains(&d.as_secs()) => Some(Set {
            value: d.as_secs(),
            origin: ctx.origin(v.referenced, field),
        }),
        Ok(d) => {
            ctx.error(
                v.referenced,
                field,
                format!("must be between {min}s and {max}s, got {}s", d.as_secs()),
            );
            None
        }
        Err(message) => {
            ctx.error(v.referenced, field, message);
            None
        }
    }
}

/// The longest `timeout`, `queue_timeout` and `renew_before`: a week.
const MAX_UPDATE_SECONDS: u64 = 7 * 86_400;

/// Validates an `update:` block and a `renew_before:` line (`prefix` is `services.NAME.` in a
/// stack, empty in a recipe). Whether `max_surge` and `max_unavailable` are not both 0 and
/// `renew_before` is shorter than the time limit is checked once the layers are merged.
fn lift_update(
    ctx: &mut Ctx,
    prefix: &str,
    update: Option<&Spanned<raw::Update>>,
    renew_before: Option<&Spanned<String>>,
) -> UpdateDraft {
    let renew_before = renew_before.and_then(|v| {
        let field = format!("{prefix}renew_before");
        if v.value.trim() == "off" {
            return Some(Set {
                value: None,
                origin: ctx.origin(v.referenced, &field),
            });
        }
        seconds_in(ctx, Some(v), &field, 1, MAX_UPDATE_SECONDS).map(|set| Set {
            value: Some(set.value),
            origin: set.origin,
        })
    });
    let Some(update) = update else {
        return UpdateDraft {
            renew_before,
            ..UpdateDraft::default()
        };
    };
    let u = &update.value;
    let field = |name: &str| format!("{prefix}update.{name}");
    let strategy = u.strategy.as_ref().and_then(|v| {
        let at = field("strategy");
        let value = match v.value.as_str() {
            "rolling" => Strategy::Rolling,
            "recreate" => Strategy::Recreate,
            other => {
                ctx.error(
                    v.referenced,
                    &at,
                    format!("{other:?} is neither `rolling` nor `recreate`"),
                );
                return None;
            }
        };
        Some(Set {
            value,
            origin: ctx.origin(v.referenced, &at),
        })
    });
    let count = |ctx: &mut Ctx, v: &Option<Spanned<raw::Int>>, name: &str| {
        let v = v.as_ref()?;
        let at = field(name);
        ctx.int_in(v, &at, 0, MAX_REPLICAS).map(|value| Set {
            value,
            origin: ctx.origin(v.referenced, &at),
        })
    };
    let max_surge = count(ctx, &u.max_surge, "max_surge");
    let max_unavailable = count(ctx, &u.max_unavailable, "max_unavailable");
    let min_healthy_time = seconds_in(
        ctx,
        u.min_healthy_time.as_ref(),
        &field("min_healthy_time"),
        0,
        86_400,
    );
    let timeout = seconds_in(
        ctx,
        u.timeout.as_ref(),
        &field("timeout"),
        1,
        MAX_UPDATE_SECONDS,
    );
    let queue_timeout = seconds_in(
        ctx,
        u.queue_timeout.as_ref(),
        &field("queue_timeout"),
        1,
        MAX_UPDATE_SECONDS,
    );
    let auto_revert = u.auto_revert.as_ref().and_then(|v| {
        let at = field("auto_revert");
        let value = match v.value.as_str() {
            "true" => {
                // Refused rather than accepted and ignored.
                ctx.error(
                    v.referenced,
                    &at,
                    "`auto_revert: true` is not supported yet: a stopped rollout keeps the \
                     replicas not yet replaced and cancels its failed successors, but does not \
                     roll back the ones already swapped in"
                        .to_owned(),
                );
                return None;
            }
            "false" => false,
            other => {
                ctx.error(
                    v.referenced,
                    &at,
                    format!("must be `true` or `false`, got {other:?}"),
                );
                return None;
            }
        };
        Some(Set {
            value,
            origin: ctx.origin(v.referenced, &at),
        })
    });
    UpdateDraft {
        strategy,
        max_surge,
        max_unavailable,
        min_healthy_time,
        timeout,
        queue_timeout,
        auto_revert,
        renew_before,
    }
}

/// An `update:` layer (with `renew_before:`) as validated: each field optional, so a stack
/// overrides field by field.
#[derive(Default)]
struct UpdateDraft {
    strategy: Option<Set<Strategy>>,
    max_surge: Option<Set<u32>>,
    max_unavailable: Option<Set<u32>>,
    min_healthy_time: Option<Set<u64>>,
    timeout: Option<Set<u64>>,
    queue_timeout: Option<Set<u64>>,
    auto_revert: Option<Set<bool>>,
    renew_before: Option<Set<Option<u64>>>,
}

impl UpdateDraft {
    /// Lays `over` (a stack service's) over `base` (the recipe's) and fills in `defaults` (see
    /// [`UpdatePolicy::defaults_for`]); an error when `max_surge` and `max_unavailable` are
    /// both 0 (a rollout could never move) or `renew_before` is not shorter than the time limit
    /// (`time_limit`, minutes).
    fn merge(
        over: UpdateDraft,
        base: &UpdateDraft,
        defaults: UpdatePolicy,
        time_limit: Option<u32>,
    ) -> Result<UpdatePolicy, SpecError> {
        fn pick<T: Clone>(over: Option<Set<T>>, base: &Option<Set<T>>) -> Option<Set<T>> {
            over.or_else(|| base.clone())
        }
        // The pair is reported where the stack completed it, if it did, else in the recipe.
        let pair_in_over = over.max_unavailable.clone().or(over.max_surge.clone());
        let strategy = pick(over.strategy, &base.strategy);
        let max_surge = pick(over.max_surge, &base.max_surge);
        let max_unavailable = pick(over.max_unavailable, &base.max_unavailable);
        let renew_before = pick(over.renew_before, &base.renew_before);
        let value =
            |set: &Option<Set<u64>>, default: u64| set.as_ref().map_or(default, |s| s.value);
        let policy = UpdatePolicy {
            strategy: strategy.as_ref().map_or(defaults.strategy, |s| s.value),
            max_surge: max_surge.as_ref().map_or(defaults.max_surge, |s| s.value),
            max_unavailable: max_unavailable
                .as_ref()
                .map_or(defaults.max_unavailable, |s| s.value),
            min_healthy_time: value(
                &pick(over.min_healthy_time, &base.min_healthy_time),
                defaults.min_healthy_time,
            ),
            timeout: value(&pick(over.timeout, &base.timeout), defaults.timeout),
            queue_timeout: value(
                &pick(over.queue_timeout, &base.queue_timeout),
                defaults.queue_timeout,
            ),
            auto_revert: pick(over.auto_revert, &base.auto_revert)
                .map_or(defaults.auto_revert, |s| s.value),
            renew_before: renew_before
                .as_ref()
                .map_or(defaults.renew_before, |s| s.value),
        };
        if policy.max_surge == 0
            && policy.max_unavailable == 0
            && let Some(at) = pair_in_over.or(max_surge).or(max_unavailable)
        {
            return Err(at.origin.error(
                "max_surge and max_unavailable cannot both be 0: a rolling update could \
                 neither add a successor nor remove a replica",
            ));
        }
        if let (Some(renew), Some(minutes), Some(at)) =
            (policy.renew_before, time_limit, renew_before)
            && renew >= u64::from(minutes) * 60
        {
            return Err(at.origin.error(format!(
                "renew_before ({renew}s) must be shorter than the time limit ({minutes}m): \
                 every replica would be renewed as soon as it starts"
            )));
        }
        Ok(policy)
    }
}

/// Says what is wrong with an environment variable's name, if anything: it must be a shell
/// name, and not one of the `STACKCTL_*` and `SLURM_*` names stackctl and Slurm set.
fn env_name_problem(key: &str) -> Option<String> {
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
fn lift_endpoint_env(
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
fn check_endpoint_refs(desired: &Desired, errors: &mut Vec<SpecError>) {
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

/// Validates a list of ports: each a number in 1..=65535 or `auto`, optionally named
/// (`[a-z][a-z0-9_]*`); no number and no name twice.
fn lift_ports(ctx: &mut Ctx, field: &str, ports: &raw::Ports) -> Option<Set<Vec<PortSpec>>> {
    let before = ctx.errors.len();
    let mut list: Vec<PortSpec> = Vec::new();
    for (i, item) in ports.value.iter().enumerate() {
        let item_field = format!("{field}[{i}]");
        let at = item.referenced;
        let (name, value, value_field) = match &item.value {
            raw::PortItem::Named { name, port } => {
                (Some(name), &**port, format!("{item_field}.port"))
            }
            other => (None, other, item_field.clone()),
        };
        if let Some(name) = name {
            if !is_port_name(name) {
                ctx.error(
                    at,
                    &format!("{item_field}.name"),
                    format!(
                        "port name {name:?} must be 1 to 32 characters: a lowercase letter, \
                     then lowercase letters, digits or '_'"
                    ),
                );
            } else if let Some(first) = list
                .iter()
                .position(|p| p.name.as_deref() == Some(name.as_str()))
            {
                ctx.error(
                    at,
                    &format!("{item_field}.name"),
                    format!("port name {name:?} is already used (by {field}[{first}])"),
                );
            }
        }
        let port = match value {
            raw::PortItem::Auto => PortValue::Auto,
            raw::PortItem::Number(raw::Int::Value(n)) if (1..=65535).contains(n) => {
                let number = u16::try_from(*n).expect("at most 65535");
                if let Some(first) = list.iter().position(|p| p.number() == Some(number)) {
                    ctx.error(
                        at,
                        &value_field,
                        format!("port {number} is already listed (as {field}[{first}])"),
                    );
                }
                PortValue::Fixed(number)
            }
            raw::PortItem::Number(raw::Int::Value(n)) => {
                let hint = if *n == 0 {
                    "; write `auto` for a free port picked when the job starts"
                } else {
                    ""
                };
                ctx.error(
                    at,
                    &value_field,
                    format!("must be between 1 and 65535, got {n}{hint}"),
                );
                continue;
            }
            raw::PortItem::Number(raw::Int::Not(what)) | raw::PortItem::Not(what) => {
                ctx.error(
                    at,
                    &value_field,
                    format!(
                        "must be a port number, `auto` or `{{name: .., port: ..}}`, got {what}"
                    ),
                );
                continue;
            }
            raw::PortItem::Named { .. } => {
                ctx.error(at, &value_field, "must be a port number or `auto`");
                continue;
            }
        };
        list.push(PortSpec {
            name: name.cloned(),
            port,
        });
    }
    (ctx.errors.len() == before).then(|| Set {
        value: list,
        origin: ctx.origin(ports.referenced, field),
    })
}

/// A declared port as a file writes it: `8000`, `auto`, `http=8000` or `http=auto`.
fn describe_port(port: &PortSpec) -> String {
    let value = port
        .number()
        .map_or_else(|| "auto".to_owned(), |n| n.to_string());
    match &port.name {
        Some(name) => format!("{name}={value}"),
        None => value,
    }
}

/// Returns whether `name` is a port name: `[a-z][a-z0-9_]*`, at most 32 characters (it
/// becomes `PORT_<NAME>` in the job).
fn is_port_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Validates a `health:` block: exactly one probe, durations, threshold and policy. The
/// probe's port is resolved once the service's ports are known ([`HealthDraft::resolve`]).
fn lift_health(
    ctx: &mut Ctx,
    field: &str,
    health: &Spanned<raw::Health>,
) -> Option<Set<HealthDraft>> {
    let before = ctx.errors.len();
    let h = &health.value;
    let kinds = [
        h.http.as_ref().map(|v| v.referenced),
        h.tcp.as_ref().map(|v| v.referenced),
        h.command.as_ref().map(|v| v.referenced),
    ];
    let given = kinds.iter().flatten().count();
    if given != 1 {
        let at = match given {
            0 => health.referenced,
            _ => kinds
                .iter()
                .flatten()
                .nth(1)
                .copied()
                .unwrap_or(health.referenced),
        };
        ctx.error(
            at,
            field,
            format!(
                "a health check has exactly one of `http`, `tcp` or `command`, got {}",
                if given == 0 {
                    "none".to_owned()
                } else {
                    given.to_string()
                }
            ),
        );
    }
    let port_ref = |ctx: &mut Ctx, port: &Option<Spanned<String>>, at, probe_field: &str| {
        let port_field = format!("{probe_field}.port");
        match port {
            None => PortRef {
                which: None,
                origin: ctx.origin(at, probe_field),
            },
            Some(v) => {
                let text = v.value.trim();
                let which = if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
                    PortWhich::Number(text.parse().unwrap_or(u64::MAX))
                } else {
                    PortWhich::Name(text.to_owned())
                };
                PortRef {
                    which: Some(which),
                    origin: ctx.origin(v.referenced, &port_field),
                }
            }
        }
    };
    let probe = if let Some(http) = &h.http {
        let probe_field = format!("{field}.http");
        let port = port_ref(ctx, &http.value.port, http.referenced, &probe_field);
        let path = match &http.value.path {
            None => "/".to_owned(),
            Some(p)
                if p.value.starts_with('/')
                    && p.value.len() <= 1024
                    && p.value.chars().all(|c| c.is_ascii_graphic()) =>
            {
                p.value.clone()
            }
            Some(p) => {
                ctx.error(
                    p.referenced,
                    &format!("{probe_field}.path"),
                    format!(
                        "{:?} is not a URL path: it starts with `/` and has no spaces or \
                     control characters",
                        p.value
                    ),
                );
                String::new()
            }
        };
        Some(ProbeDraft::Http { port, path })
    } else if let Some(tcp) = &h.tcp {
        let probe_field = format!("{field}.tcp");
        let port = port_ref(ctx, &tcp.value.port, tcp.referenced, &probe_field);
        Some(ProbeDraft::Tcp { port })
    } else if let Some(command) = &h.command {
        if command.value.trim().is_empty() || command.value.contains('\0') {
            ctx.error(
                command.referenced,
                &format!("{field}.command"),
                "must be a non-empty command without NUL bytes",
            );
        }
        Some(ProbeDraft::Command(command.value.clone()))
    } else {
        None
    };
    let seconds =
        |ctx: &mut Ctx, v: &Option<Spanned<String>>, name: &str, default: u64, min: u64| {
            let Some(v) = v else {
                return default;
            };
            let field = format!("{field}.{name}");
            match super::parse_duration(&v.value) {
                Ok(d) if d.as_secs() >= min && d.as_secs() <= 86_400 => d.as_secs(),
                Ok(d) => {
                    ctx.error(
                        v.referenced,
                        &field,
                        format!("must be between {min}s and 1d, got {}s", d.as_secs()),
                    );
                    default
                }
                Err(message) => {
                    ctx.error(v.referenced, &field, message);
                    default
                }
            }
        };
    let interval = seconds(ctx, &h.interval, "interval", 5, 1);
    let timeout = seconds(ctx, &h.timeout, "timeout", 2, 1);
    let start_period = seconds(ctx, &h.start_period, "start_period", 0, 0);
    let failure_threshold = match &h.failure_threshold {
        None => 3,
        Some(v) => ctx
            .int_in(v, &format!("{field}.failure_threshold"), 1, 1000)
            .unwrap_or(3),
    };
    let on_failure = match h.on_failure.as_ref().map(|v| (v.value.as_str(), v)) {
        None | Some(("restart", _)) => OnFailure::Restart,
        Some(("ignore", _)) => OnFailure::Ignore,
        Some((other, v)) => {
            ctx.error(
                v.referenced,
                &format!("{field}.on_failure"),
                format!("{other:?} is neither `restart` nor `ignore`"),
            );
            OnFailure::Restart
        }
    };
    let probe = probe?;
    (ctx.errors.len() == before).then(|| Set {
        value: HealthDraft {
            probe,
            interval,
            timeout,
            start_period,
            failure_threshold,
            on_failure,
        },
        origin: ctx.origin(health.referenced, field),
    })
}

/// Returns the override if there is one, else the recipe's value; records where it came from.
fn pick<T: Clone>(
    over: Option<Set<T>>,
    base: &Option<Set<T>>,
    key: &str,
    origins: &mut BTreeMap<String, Origin>,
) -> Option<T> {
    let set = over.or_else(|| base.clone())?;
    origins.insert(key.to_owned(), set.origin);
    Some(set.value)
}

impl Recipe {
    /// Returns the replica spec with a service's overrides laid over this recipe's defaults,
    /// where each setting it holds was written (keyed as in [`Service::origins`]), and the
    /// health check still to be resolved against the merged ports (the spec has none yet).
    fn with_overrides(
        &self,
        over: Layer,
    ) -> (ReplicaSpec, BTreeMap<String, Origin>, Option<HealthDraft>) {
        let base = &self.defaults;
        let mut origins = BTreeMap::new();
        let o = &mut origins;
        let memory = match over.memory.or_else(|| base.memory.clone()) {
            Some(set) => {
                let key = match set.value {
                    Memory::PerNode(_) => "resources.memory",
                    Memory::PerCpu(_) => "resources.memory_per_cpu",
                };
                o.insert(key.to_owned(), set.origin);
                Some(set.value)
            }
            None => None,
        };
        let gpu = pick(over.gpu, &base.gpu, "resources.gpu", o).unwrap_or(0);
        // A GPU type means nothing without GPUs (a stack may set `gpu: 0` on a GPU recipe).
        let gpu_type = pick(over.gpu_type, &base.gpu_type, "resources.gpu_type", o);
        let gpu_type = if gpu > 0 {
            gpu_type
        } else {
            o.remove("resources.gpu_type");
            None
        };
        // A variable set in the stack replaces the recipe's, whether text or secret.
        let mut environment = base.environment.clone();
        let mut secrets = base.secret_env.clone();
        for key in over.environment.keys() {
            secrets.remove(key);
        }
        for key in over.secret_env.keys() {
            environment.remove(key);
        }
        environment.extend(over.environment);
        secrets.extend(over.secret_env);
        let secret_env = secrets
            .into_iter()
            .map(|(key, set)| {
                o.insert(format!("environment.{key}"), set.origin);
                let reference = SecretRef {
                    secret: set.value,
                    fingerprint: String::new(),
                };
                (key, reference)
            })
            .collect();
        let spec = ReplicaSpec {
            image: self.image.clone(),
            command: self.command.clone(),
            container: self.container.clone(),
            setup: self.setup.clone(),
            resources: ResourceSpec {
                nodes: pick(over.nodes, &base.nodes, "resources.nodes", o).unwrap_or(1),
                cpu: pick(over.cpu, &base.cpu, "resources.cpu", o).unwrap_or(1),
                memory: match &memory {
                    Some(Memory::PerNode(m)) => Some(m.clone()),
                    _ => None,
                },
                memory_per_cpu: match &memory {
                    Some(Memory::PerCpu(m)) => Some(m.clone()),
                    _ => None,
                },
                gpu,
                gpu_type,
                time_limit: pick(over.time_limit, &base.time_limit, "resources.time_limit", o),
                cpu_bind: pick(over.cpu_bind, &base.cpu_bind, "resources.cpu_bind", o),
            },
            environment,
            ports: pick(over.ports, &base.ports, "ports", o).unwrap_or_default(),
            slurm: SlurmSpec {
                partition: pick(over.partition, &base.partition, "slurm.partition", o),
                qos: pick(over.qos, &base.qos, "slurm.qos", o),
                account: pick(over.account, &base.account, "slurm.account", o),
            },
            health: None,
            endpoint_env: Default::default(),
            secret_env,
        };
        let health = pick(over.health, &base.health, "health", o);
        (spec, origins, health)
    }
}

/// Validates a memory amount in Slurm's notation: digits with an optional K, M, G or T suffix.
fn memory_amount(ctx: &mut Ctx, value: &Spanned<String>, field: &str) -> Option<Set<String>> {
    let text = value.value.trim().to_ascii_uppercase();
    if super::memory_mib(&text).is_some_and(|mib| mib > 0) {
        Some(Set {
            value: text,
            origin: ctx.origin(value.referenced, field),
        })
    } else {
        ctx.error(
            value.referenced,
            field,
            format!(
                "{:?} is not a memory amount such as 512M or 32G",
                value.value
            ),
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_the_host_and_path_of_any_remote_url_form() {
        for (url, owner) in [
            ("https://github.com/team/infra.git", "github.com/team/infra"),
            ("https://github.com/team/infra", "github.com/team/infra"),
            ("https://github.com/team/infra/", "github.com/team/infra"),
            (
                "https://github.com/team/infra.git/",
                "github.com/team/infra",
            ),
            (
                "http://user:secret@git.example:8443/team/infra.git",
                "git.example/team/infra",
            ),
            ("https://GitHub.com/Team/infra", "github.com/team/infra"),
            ("https://Git.Example/Team/Infra", "git.example/Team/Infra"),
            (
                "git@gitlab.a.example:team/infra",
                "gitlab.a.example/team/infra",
            ),
            (
                "git@gitlab.a.example:team/infra.git",
                "gitlab.a.example/team/infra",
            ),
            (
                "gitlab.a.example:/team/infra",
                "gitlab.a.example/team/infra",
            ),
            ("ssh://git@host:22/org/repo.git", "host/org/repo"),
            ("ssh://host/group/sub/repo", "host/group/sub/repo"),
            ("/srv/git/org/repo.git", "srv/git/org/repo"),
            ("file:///srv/git/org/repo/", "srv/git/org/repo"),
            ("  https://github.com/team/infra\n", "github.com/team/infra"),
        ] {
            assert_eq!(
                owner_from_remote_url(url).map(|o| o.to_string()),
                Ok(owner.to_owned()),
                "{url}"
            );
        }
    }

    #[test]
    fn the_same_repo_on_two_hosts_gets_two_owners() {
        let a = owner_from_remote_url("git@gitlab.a.example:team/infra").unwrap();
        let b = owner_from_remote_url("https://github.com/team/infra").unwrap();
        assert_ne!(a, b);
        // Both collided under the old rule.
        assert_eq!(
            legacy_owner_from_remote_url("git@gitlab.a.example:team/infra"),
            legacy_owner_from_remote_url("https://github.com/team/infra"),
        );
    }

    #[test]
    fn remotes_differing_only_by_case_give_one_owner_on_case_insensitive_hosts() {
        for urls in [
            [
                "https://github.com/Acme/Web-App",
                "git@github.com:acme/web-app.git",
            ],
            [
                "ssh://git@ssh.github.com:443/ACME/web-app.git",
                "https://github.com/acme/Web-App",
            ],
            [
                "https://GITLAB.com/Group/Sub/Proj",
                "git@gitlab.com:group/sub/proj",
            ],
            [
                "ssh://git@altssh.gitlab.com:443/group/Sub/proj",
                "https://gitlab.com/group/sub/proj",
            ],
            [
                "https://bitbucket.org/Acme/Repo.git",
                "git@bitbucket.org:acme/repo",
            ],
            [
                "https://github.com/Acme/Web-App.GIT",
                "github.com:acme/web-app",
            ],
        ] {
            let [a, b] = urls.map(|url| owner_from_remote_url(url).unwrap());
            assert_eq!(a, b, "{urls:?}");
            assert_eq!(a.as_str(), a.as_str().to_ascii_lowercase(), "{urls:?}");
        }
        // Elsewhere the path keeps its case (the host never does): `owner:` decides.
        for (url, owner) in [
            (
                "git@GIT.Corp.example:Acme/Repo",
                "git.corp.example/Acme/Repo",
            ),
            (
                "https://github.example.com/Acme/Repo",
                "github.example.com/Acme/Repo",
            ),
            ("/srv/Git/Acme/Repo.git", "srv/Git/Acme/Repo"),
        ] {
            assert_eq!(owner_from_remote_url(url).unwrap().as_str(), owner, "{url}");
        }
    }

    #[test]
    fn unusable_remotes_ask_for_an_owner_in_stackctl_yaml() {
        let long = format!("/srv/{}/repo.git", "x".repeat(130));
        for url in [
            "https://github.com",
            "https://github.com/",
            "/",
            "repo",
            "../repos/infra.git",
            "/srv/git/my repo.git",
            "/srv/git/~me/repo",
            "git@[::1]:team/infra",
            long.as_str(),
        ] {
            let error = owner_from_remote_url(url).expect_err(url);
            assert!(
                error.contains("set `owner:` in stackctl.yaml"),
                "{url}: {error}"
            );
            assert!(!error.contains("secret"), "{error}");
        }
        let error = owner_from_remote_url("https://me:secret@github.com").unwrap_err();
        assert!(
            !error.contains("secret"),
            "a URL's password must not be printed: {error}"
        );
    }

    #[test]
    fn the_legacy_owner_is_the_old_org_repo_rule() {
        for url in [
            "https://github.com/org/repo.git",
            "git@github.com:org/repo.git",
            "ssh://git@host:22/org/repo.git",
            "/srv/git/org/repo.git",
            "file:///srv/git/org/repo/",
        ] {
            assert_eq!(
                legacy_owner_from_remote_url(url).as_deref(),
                Some("org/repo"),
                "{url}"
            );
        }
        assert_eq!(legacy_owner_from_remote_url("repo"), None);
    }

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

    fn load_files(files: &[(&str, &str)], remote: Option<&str>) -> Result<Repo, SpecErrors> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("stacks")).unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        load(dir.path(), || remote.map(str::to_owned))
    }

    #[test]
    fn depends_on_resolves_names_and_orders_services_after_their_dependencies() {
        let recipe = (
            "recipes/demo/svc.yaml",
            "name: svc\ncommand: sleep infinity\n",
        );
        let repo = load_files(
            &[
                ("stackctl.yaml", "owner: t\n"),
                recipe,
                (
                    "stacks/a.yaml",
                    "services:\n  web:\n    recipe: demo/svc\n    depends_on:\n      - api\n      - {service: b/db, condition: started}\n  api:\n    recipe: demo/svc\n    depends_on: [b/db]\n",
                ),
                ("stacks/b.yaml", "services:\n  db:\n    recipe: demo/svc\n"),
            ],
            None,
        )
        .unwrap();
        let desired = &repo.desired;
        let web = &desired.services[&ServiceAddr::new("a", "web")];
        assert_eq!(
            web.depends_on,
            vec![
                Dependency {
                    service: ServiceAddr::new("a", "api"),
                    condition: Condition::Ready,
                },
                Dependency {
                    service: ServiceAddr::new("b", "db"),
                    condition: Condition::Started,
                },
            ]
        );
        assert_eq!(
            web.origin("depends_on[1]").field,
            "services.web.depends_on[1]"
        );
        let order: Vec<String> = desired
            .dependency_order()
            .unwrap()
            .iter()
            .map(|a| a.reference())
            .collect();
        assert_eq!(order, ["b/db", "a/api", "a/web"]);
        // Not part of the spec: the hash is the one of the same service without depends_on.
        let plain = &desired.services[&ServiceAddr::new("b", "db")];
        assert_eq!(web.hash, plain.hash);
    }

    #[test]
    fn a_dependency_cycle_is_named_from_its_first_service() {
        let recipe = (
            "recipes/demo/svc.yaml",
            "name: svc\ncommand: sleep infinity\n",
        );
        let errors = load_files(
            &[
                ("stackctl.yaml", "owner: t\n"),
                recipe,
                (
                    "stacks/a.yaml",
                    "services:\n  x:\n    recipe: demo/svc\n  y:\n    recipe: demo/svc\n    depends_on: [z]\n  z:\n    recipe: demo/svc\n    depends_on: [x, b/w]\n",
                ),
                (
                    "stacks/b.yaml",
                    "services:\n  w:\n    recipe: demo/svc\n    depends_on: [a/y]\n",
                ),
            ],
            None,
        )
        .unwrap_err();
        let text = errors.to_string();
        assert!(
            text.contains("dependency cycle: a/y -> a/z -> b/w -> a/y"),
            "{text}"
        );
        assert!(text.contains("services.y.depends_on[0]"), "{text}");
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

    const VALUES: [(&str, &str); 9] = [
        ("A", "8.0"),
        ("B", "12.10"),
        ("C", "0022"),
        ("D", "yes"),
        ("E", "NO"),
        ("F", "0x1F"),
        ("G", "1_000"),
        ("H", "off"),
        ("I", "123456789012345678901234567890"),
    ];

    /// Loads one service whose recipe and stack environments are given as YAML.
    fn environment(recipe_env: &str, stack_env: &str) -> BTreeMap<String, String> {
        let recipe = format!("name: svc\ncommand: run\nenvironment:{recipe_env}");
        let stack = format!("services:\n  app:\n    recipe: demo/svc\n    environment:{stack_env}");
        let repo = load_files(
            &[
                ("stackctl.yaml", "owner: t\n"),
                ("recipes/demo/svc.yaml", &recipe),
                ("stacks/web.yaml", &stack),
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}\n{recipe}\n{stack}"));
        repo.desired.services[&ServiceAddr::new("web", "app")]
            .spec
            .environment
            .clone()
    }

    #[test]
    fn environment_values_reach_the_job_exactly_as_written_in_block_style() {
        let mut block = String::from("\n");
        for (key, value) in VALUES {
            block.push_str(&format!("  {key}: {value}   # a comment: {key}: 1\n"));
        }
        let expected: BTreeMap<String, String> = VALUES
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(environment(&block, " {}\n"), expected, "in a recipe");
        let stack_block = block.replace("\n  ", "\n      ");
        assert_eq!(environment(" {}\n", &stack_block), expected, "in a stack");
    }

    #[test]
    fn environment_values_reach_the_job_exactly_as_written_in_flow_style() {
        let entries: Vec<String> = VALUES.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let expected: BTreeMap<String, String> = VALUES
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for flow in [
            format!(" {{{}}}  # trailing comment\n", entries.join(", ")),
            format!(" {{{}}}\n", entries.join(",")),
            format!(
                " {{\n  {}\n}}   # comment\n",
                entries.join(" ,  # comment\n  ")
            ),
        ] {
            assert_eq!(environment(&flow, " {}\n"), expected, "recipe: {flow}");
            assert_eq!(environment(" {}\n", &flow), expected, "stack: {flow}");
        }
    }

    #[test]
    fn environment_values_keep_quoting_aliases_and_multibyte_neighbours() {
        let env = environment(
            "\n  Q: \"8.0\"   # quoted\n  S: 'yes'\n  U: \"naïve → 0.50\"\n",
            "\n      W: &w 1.50\n      W2: *w\n      X: ~user\n      Y: 0.9\n      Z: -0.0\n      N: .inf\n",
        );
        let expected = [
            ("N", ".inf"),
            ("Q", "8.0"),
            ("S", "yes"),
            ("U", "naïve → 0.50"),
            ("W", "1.50"),
            ("W2", "1.50"),
            ("X", "~user"),
            ("Y", "0.9"),
            ("Z", "-0.0"),
        ];
        let expected: BTreeMap<String, String> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(env, expected);
    }

    #[test]
    fn time_limits_are_read_in_slurm_formats_and_unlimited_is_never_renewed() {
        let service = |recipe_limit: &str, stack_limit: &str| {
            let repo = load_files(
                &[
                    ("stackctl.yaml", "owner: t\n"),
                    (
                        "recipes/demo/svc.yaml",
                        &format!(
                            "name: svc\ncommand: serve\nresources: {{time_limit: {recipe_limit}}}\n"
                        ),
                    ),
                    (
                        "stacks/s.yaml",
                        &format!("services:\n  a:\n    recipe: demo/svc\n{stack_limit}"),
                    ),
                ],
                None,
            )
            .unwrap();
            repo.desired.services.into_values().next().unwrap()
        };
        let a = service("90", "");
        assert_eq!(a.spec.resources.time_limit, Some(90));
        assert_eq!(a.update.renew_before, Some(540));
        let b = service("90", "    resources: {time_limit: 2-12}\n");
        assert_eq!(b.spec.resources.time_limit, Some(3600));
        let c = service("'1:00:00'", "    resources: {time_limit: 45m}\n");
        assert_eq!(c.spec.resources.time_limit, Some(45));
        let d = service("2h", "    resources: {time_limit: UNLIMITED}\n");
        assert_eq!(
            d.spec.resources.time_limit,
            Some(crate::desired::UNLIMITED_MINUTES)
        );
        assert_eq!(d.update.renew_before, None);
        // The hash of a limit in minutes does not depend on how it was written.
        assert_eq!(service("1-00:00:00", "").hash, service("1440", "").hash);
    }

    #[test]
    fn memory_is_read_as_written() {
        let load_memory = |memory: &str| {
            load_files(
                &[
                    ("stackctl.yaml", "owner: t\n"),
                    (
                        "recipes/demo/svc.yaml",
                        &format!("name: svc\ncommand: run\nresources: {{memory: {memory}}}\n"),
                    ),
                    ("stacks/web.yaml", "services: {app: {recipe: demo/svc}}\n"),
                ],
                None,
            )
            .map(|repo| {
                repo.desired.services[&ServiceAddr::new("web", "app")]
                    .spec
                    .resources
                    .memory
                    .clone()
            })
        };
        assert_eq!(load_memory("1024").unwrap().as_deref(), Some("1024"));
        // YAML would read these as 1024: as written they are no memory amounts.
        for odd in ["0x400", "1_024", "1024.0"] {
            let errors = load_memory(odd).unwrap_err();
            assert!(
                errors.0[0].message.contains(&format!("{odd:?}")),
                "{errors}"
            );
        }
    }

    #[test]
    fn a_service_whose_comment_could_pass_slurms_limit_is_refused_at_its_ports() {
        let with = |owner: &str, service: &str, ports: usize, replicas: u32| {
            let list = vec!["auto"; ports].join(", ");
            load_files(
                &[
                    ("stackctl.yaml", &format!("owner: {owner}\n")),
                    ("recipes/demo/svc.yaml", "name: svc\ncommand: serve\n"),
                    (
                        "stacks/s.yaml",
                        &format!(
                            "services:\n  {service}:\n    recipe: demo/svc\n    replicas: {replicas}\n    ports: [{list}]\n"
                        ),
                    ),
                ],
                None,
            )
        };
        // Short names leave room for many ports; long ones and a long index list do not.
        assert!(with("t", "api", 80, 3).is_ok());
        let long_owner = format!("github.com/{}", "o".repeat(100));
        let long_name = "s".repeat(60);
        assert!(with(&long_owner, &long_name, 30, 3).is_ok());
        let errors = with(&long_owner, &long_name, 30, 2000).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        let error = &errors.0[0];
        assert_eq!(error.file, Path::new("stacks/s.yaml"));
        assert_eq!(error.position, Some((5, 12)));
        assert_eq!(
            error.field.as_deref(),
            Some(&*format!("services.{long_name}.ports"))
        );
        assert!(error.message.contains("Slurm allows 1024"), "{error}");
        // The bound holds every comment a job of the service can really carry.
        let repo = with("t", "api", 3, 12).unwrap();
        let (addr, service) = repo.desired.services.iter().next().unwrap();
        let bound = worst_case_comment_len(&repo.settings.owner, addr, service);
        let real = format!(
            "stackctl/v1;owner=t;stack=s;svc=api;spec={};nonce=0123456789ab;idx=0-11;\
             restarts=3;fail=FAILED:1:1764000000;begin=1764000100;protect=1;pred=4242_7;\
             health=ready;ready_at=1764000200;addr=10.0.0.17;ports=40001,40002,40003",
            service.hash
        );
        assert!(
            crate::observed::Marker::parse(&real).is_some(),
            "a real comment"
        );
        assert!(real.len() <= bound, "{} > {bound}", real.len());
    }

    #[test]
    fn a_stack_service_overrides_the_command_and_the_image() {
        let recipe = "name: worker\ncontainer: {image: base.sif}\ncommand: run --queue default\n";
        let stack = "services:\n  plain:\n    recipe: batch/worker\n  urgent:\n    recipe: batch/worker\n    command: run --queue urgent\n  gpu:\n    recipe: batch/worker\n    container: {image: docker://example/worker:cuda}\n";
        let repo = load_files(
            &[
                ("stackctl.yaml", "owner: t\n"),
                ("recipes/batch/worker.yaml", recipe),
                ("stacks/q.yaml", stack),
            ],
            None,
        )
        .unwrap();
        let get = |name: &str| &repo.desired.services[&ServiceAddr::new("q", name)];
        let (plain, urgent, gpu) = (get("plain"), get("urgent"), get("gpu"));
        assert_eq!(plain.spec.command.as_deref(), Some("run --queue default"));
        assert_eq!(urgent.spec.command.as_deref(), Some("run --queue urgent"));
        assert_eq!(urgent.spec.image.as_deref(), Some("base.sif"));
        assert_eq!(gpu.spec.command.as_deref(), Some("run --queue default"));
        assert_eq!(
            gpu.spec.image.as_deref(),
            Some("docker://example/worker:cuda")
        );
        assert_ne!(plain.hash, urgent.hash);
        assert_ne!(plain.hash, gpu.hash);
        let origin = &urgent.origins["command"];
        assert_eq!(
            (origin.position, origin.field.as_str()),
            (Some((6, 14)), "services.urgent.command")
        );
        assert!(!plain.origins.contains_key("command"));
        // An empty override is an error naming the stack's field.
        let errors = load_files(
            &[
                ("stackctl.yaml", "owner: t\n"),
                ("recipes/batch/worker.yaml", recipe),
                (
                    "stacks/q.yaml",
                    "services:\n  a:\n    recipe: batch/worker\n    command: ' '\n",
                ),
            ],
            None,
        )
        .unwrap_err();
        assert_eq!(
            errors.0[0].field.as_deref(),
            Some("services.a.command"),
            "{errors}"
        );
    }

    #[test]
    fn origins_point_at_the_stack_override_or_the_recipe_default() {
        let recipe = "name: vllm\ncommand: serve\nresources:\n  cpu: 8\n  memory: 32G\n  gpu: 1\n  gpu_type: a100\nports: [8000]\nslurm: {partition: gpu, qos: normal}\n";
        let stack = "services:\n  llm:\n    recipe: inference/vllm\n    replicas: 3\n    resources:\n      gpu: 2\n      memory_per_cpu: 4G\n    slurm: {qos: high}\n    ports:\n      - 9000\n";
        let repo = load_files(
            &[
                ("stackctl.yaml", "owner: t\n"),
                ("recipes/inference/vllm.yaml", recipe),
                ("stacks/web.yaml", stack),
            ],
            None,
        )
        .unwrap();
        let service = &repo.desired.services[&ServiceAddr::new("web", "llm")];
        let at = |key: &str| {
            let o = &service.origins[key];
            (
                o.file.to_str().unwrap().to_owned(),
                o.position,
                o.field.clone(),
            )
        };
        let stack_at = |line, column, field: &str| {
            (
                "stacks/web.yaml".to_owned(),
                Some((line, column)),
                field.to_owned(),
            )
        };
        let recipe_at = |line, column, field: &str| {
            (
                "recipes/inference/vllm.yaml".to_owned(),
                Some((line, column)),
                field.to_owned(),
            )
        };
        assert_eq!(at("recipe"), stack_at(3, 13, "services.llm.recipe"));
        assert_eq!(at("replicas"), stack_at(4, 15, "services.llm.replicas"));
        assert_eq!(
            at("resources.gpu"),
            stack_at(6, 12, "services.llm.resources.gpu")
        );
        assert_eq!(
            at("resources.memory_per_cpu"),
            stack_at(7, 23, "services.llm.resources.memory_per_cpu")
        );
        assert_eq!(at("slurm.qos"), stack_at(8, 18, "services.llm.slurm.qos"));
        assert_eq!(at("ports"), stack_at(10, 7, "services.llm.ports"));
        assert_eq!(at("resources.cpu"), recipe_at(4, 8, "resources.cpu"));
        assert_eq!(
            at("resources.gpu_type"),
            recipe_at(7, 13, "resources.gpu_type")
        );
        assert_eq!(at("slurm.partition"), recipe_at(9, 20, "slurm.partition"));
        // The stack's memory_per_cpu replaced the recipe's memory; nothing else was written.
        for absent in [
            "resources.memory",
            "resources.nodes",
            "resources.time_limit",
            "resources.cpu_bind",
            "slurm.account",
        ] {
            assert!(!service.origins.contains_key(absent), "{absent}");
        }
        assert_eq!(
            service.origin("resources.nodes").field,
            "services.llm.recipe"
        );
        assert_eq!(service.spec.ports, vec![PortSpec::fixed(9000)]);
        assert_eq!(service.spec.resources.gpu, 2);
        assert_eq!(service.spec.resources.memory, None);
        assert_eq!(service.spec.resources.memory_per_cpu.as_deref(), Some("4G"));

        // Without overrides, every setting points into the recipe; `gpu: 0` drops the type.
        let stack = "services:\n  llm:\n    recipe: inference/vllm\n    resources: {gpu: 0}\n";
        let repo = load_files(
            &[
                ("stackctl.yaml", "owner: t\n"),
                ("recipes/inference/vllm.yaml", recipe),
                ("stacks/web.yaml", stack),
            ],
            None,
        )
        .unwrap();
        let service = &repo.desired.services[&ServiceAddr::new("web", "llm")];
        let at = |key: &str| {
            let o = &service.origins[key];
            (
                o.file.to_str().unwrap().to_owned(),
                o.position,
                o.field.clone(),
            )
        };
        assert_eq!(at("resources.memory"), recipe_at(5, 11, "resources.memory"));
        assert_eq!(at("ports"), recipe_at(8, 8, "ports"));
        assert_eq!(
            at("resources.gpu"),
            stack_at(4, 22, "services.llm.resources.gpu")
        );
        assert!(!service.origins.contains_key("resources.gpu_type"));
        assert!(!service.origins.contains_key("replicas"));
        assert_eq!(service.spec.resources.gpu_type, None);
    }

    #[test]
    fn health_and_ports_are_read_with_defaults_and_resolved_after_stack_overrides() {
        let recipe = "name: web\ncommand: serve\nports: [8000, auto, {name: http, port: auto}, {name: metrics, port: 9100}]\nhealth:\n  http: {port: http, path: /health}\n  start_period: 1m\n";
        let load_with = |stack: &str| {
            load_files(
                &[
                    ("stackctl.yaml", "owner: t\n"),
                    ("recipes/demo/web.yaml", recipe),
                    ("stacks/s.yaml", stack),
                ],
                None,
            )
            .map(|repo| repo.desired.services[&ServiceAddr::new("s", "app")].clone())
        };
        let service = load_with("services: {app: {recipe: demo/web}}\n").unwrap();
        assert_eq!(
            service.spec.ports,
            vec![
                PortSpec::fixed(8000),
                PortSpec {
                    name: None,
                    port: PortValue::Auto
                },
                PortSpec {
                    name: Some("http".into()),
                    port: PortValue::Auto
                },
                PortSpec {
                    name: Some("metrics".into()),
                    port: PortValue::Fixed(9100)
                },
            ]
        );
        assert_eq!(
            service.spec.health,
            Some(HealthSpec {
                probe: Probe::Http {
                    port: 2,
                    path: "/health".into()
                },
                interval: 5,
                timeout: 2,
                start_period: 60,
                failure_threshold: 3,
                on_failure: OnFailure::Restart,
            })
        );
        // The recipe's check by name follows the stack's own ports.
        let service =
            load_with("services: {app: {recipe: demo/web, ports: [{name: http, port: 81}]}}\n")
                .unwrap();
        assert!(matches!(
            service.spec.health.unwrap().probe,
            Probe::Http { port: 0, .. }
        ));
        // A stack replaces the whole check; a port number and the default (first port)
        // resolve.
        let service = load_with(
            "services: {app: {recipe: demo/web, health: {tcp: {port: 9100}, on_failure: ignore}}}\n",
        )
        .unwrap();
        let health = service.spec.health.unwrap();
        assert_eq!(health.probe, Probe::Tcp { port: 3 });
        assert_eq!(
            (health.start_period, health.on_failure),
            (0, OnFailure::Ignore)
        );
        let service =
            load_with("services: {app: {recipe: demo/web, health: {tcp: {}}}}\n").unwrap();
        assert_eq!(service.spec.health.unwrap().probe, Probe::Tcp { port: 0 });
        // A check that needs a port, on a service without any.
        let errors =
            load_with("services: {app: {recipe: demo/web, ports: [], health: {tcp: {}}}}\n")
                .unwrap_err();
        assert_eq!(
            errors.0[0].field.as_deref(),
            Some("services.app.health.tcp"),
            "{errors}"
        );
        assert!(errors.0[0].message.contains("declares none"), "{errors}");
    }

    #[test]
    fn partition_lists_are_valid() {
        assert!(check_partition("gpu,debug").is_ok());
        assert!(check_partition("gpu").is_ok());
        for bad in ["", "gpu,", ",gpu", "gpu,,debug", "gpu debug", "gpu;debug"] {
            assert!(check_partition(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn recipe_refs_cannot_escape_the_recipes_dir() {
        assert!(check_recipe_ref("inference/vllm").is_ok());
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "a/../b",
            "a//b",
            ".hidden",
            "",
        ] {
            assert!(check_recipe_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nearest_suggests_only_close_names() {
        let known = ["inference/vllm".to_string(), "storage/redis".to_string()];
        assert_eq!(nearest("inference/vlm", known.iter()), Some(&known[0]));
        assert_eq!(nearest("something/else", known.iter()), None);
    }

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

    #[test]
    fn a_container_definition_is_hashed_into_the_spec_and_the_runtime_defaults_from_settings() {
        let recipe = "name: web\ncontainer: {image: web, build: Dockerfile, binds: [/scratch]}\nsetup: [module load charliecloud]\ncommand: busybox httpd -f\n";
        let stack = "services:\n  a: {recipe: svc/web}\n  b: {recipe: svc/web}\n";
        let load = |settings: &str, dockerfile: &str| {
            load_files(
                &[
                    ("stackctl.yaml", settings),
                    ("recipes/svc/web.yaml", recipe),
                    ("recipes/svc/Dockerfile", dockerfile),
                    ("stacks/s.yaml", stack),
                ],
                None,
            )
        };
        let repo = load(
            "owner: t\ncontainer_runtime: charliecloud\n",
            "FROM debian-base\n",
        )
        .unwrap();
        let a = &repo.desired.services[&ServiceAddr::new("s", "a")];
        let c = a.spec.container.as_ref().unwrap();
        assert_eq!(c.runtime, crate::container::Runtime::Charliecloud);
        assert_eq!(c.binds, ["/scratch"]);
        let def = c.build.as_ref().unwrap();
        assert_eq!(def.file, "recipes/svc/Dockerfile");
        assert_eq!(
            def.sha256,
            crate::container::definition_hash(b"FROM debian-base\n")
        );
        assert_eq!(a.spec.setup, ["module load charliecloud"]);
        // An edited Dockerfile is a new spec; the same one is the same spec.
        let same = load(
            "owner: t\ncontainer_runtime: charliecloud\n",
            "FROM debian-base\n",
        )
        .unwrap();
        let edited = load(
            "owner: t\ncontainer_runtime: charliecloud\n",
            "FROM debian-base\nRUN true\n",
        )
        .unwrap();
        let hash = |r: &Repo| r.desired.services[&ServiceAddr::new("s", "a")].hash.clone();
        assert_eq!(hash(&repo), hash(&same));
        assert_ne!(hash(&repo), hash(&edited));
        // Under the Apptainer default the same recipe names the wrong key.
        let errors = load("owner: t\n", "FROM debian-base\n")
            .unwrap_err()
            .to_string();
        assert!(
            errors.contains("recipes/svc/web.yaml:2:")
                && errors.contains("`container.build`")
                && errors.contains("apptainer builds its image from `container.definition`"),
            "{errors}"
        );
        // A recipe naming both builds from the one its runtime uses.
        let both = "name: web\ncontainer: {image: web, build: Dockerfile, definition: web.def}\ncommand: x\n";
        for (settings, file) in [
            ("owner: t\n", "recipes/svc/web.def"),
            (
                "owner: t\ncontainer_runtime: podman\n",
                "recipes/svc/Dockerfile",
            ),
        ] {
            let repo = load_files(
                &[
                    ("stackctl.yaml", settings),
                    ("recipes/svc/web.yaml", both),
                    ("recipes/svc/Dockerfile", "FROM debian-base\n"),
                    ("recipes/svc/web.def", "Bootstrap: docker\n"),
                    ("stacks/s.yaml", "services:\n  a: {recipe: svc/web}\n"),
                ],
                None,
            )
            .unwrap();
            let spec = &repo.desired.services[&ServiceAddr::new("s", "a")].spec;
            let build = spec.container.as_ref().unwrap().build.as_ref().unwrap();
            assert_eq!(build.file, file);
        }
        // A plain Apptainer image keeps the spec it had before containers had runtimes.
        let plain = load_files(
            &[
                ("stackctl.yaml", "owner: t\n"),
                (
                    "recipes/svc/web.yaml",
                    "name: web\ncontainer: {image: web.sif}\n",
                ),
                ("stacks/s.yaml", "services:\n  a: {recipe: svc/web}\n"),
            ],
            None,
        )
        .unwrap();
        let spec = &plain.desired.services[&ServiceAddr::new("s", "a")].spec;
        assert!(spec.container.is_none());
        assert!(!spec.to_canonical_json().contains("container"));
    }

    #[test]
    fn container_mistakes_are_errors_at_their_line_and_field() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "name: web\ncontainer: {runtime: docker, image: web}\ncommand: x\n",
                "recipes/svc/web.yaml:2:22: field `container.runtime`",
                "unknown container runtime \"docker\"",
            ),
            (
                "name: web\ncontainer:\n  runtime: podman\n  image: web\n  build: Missingfile\n",
                "recipes/svc/web.yaml:5:10: field `container.build`",
                "cannot read recipes/svc/Missingfile",
            ),
            (
                "name: web\ncontainer:\n  runtime: podman\n  image: web\n  build: ../Dockerfile\n",
                "recipes/svc/web.yaml:5:10: field `container.build`",
                "a file next to the recipe",
            ),
            (
                "name: web\ncontainer:\n  runtime: podman\n  image: Web/x\n  build: Dockerfile\n",
                "recipes/svc/web.yaml:4:10: field `container.image`",
                "not a path",
            ),
            (
                "name: web\ncontainer:\n  runtime: charliecloud\n  image: web\n  definition: web.def\n",
                "recipes/svc/web.yaml:5:15: field `container.definition`",
                "this recipe names only `definition`",
            ),
            (
                "name: web\ncontainer:\n  runtime: charliecloud\n  image: web\n  binds: [/a, data]\ncommand: x\n",
                "recipes/svc/web.yaml:5:15: field `container.binds`",
                "absolute paths",
            ),
            (
                "name: web\ncontainer: {image: web.sif}\nsetup: [\"module load x\", \" \"]\n",
                "recipes/svc/web.yaml:3:26: field `setup`",
                "non-empty shell line",
            ),
        ];
        for (recipe, at, message) in cases {
            let errors = load_files(
                &[
                    ("stackctl.yaml", "owner: t\n"),
                    ("recipes/svc/web.yaml", recipe),
                    ("recipes/svc/Dockerfile", "FROM debian-base\n"),
                    ("stacks/s.yaml", "services:\n  a: {recipe: svc/web}\n"),
                ],
                None,
            )
            .unwrap_err()
            .to_string();
            assert!(
                errors.contains(at) && errors.contains(message),
                "{recipe}: {errors}"
            );
        }
        let errors = load_files(
            &[
                (
                    "stackctl.yaml",
                    "owner: t\ncontainer_runtime: singularity\n",
                ),
                ("stacks/s.yaml", "services: {}\n"),
            ],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            errors.contains("stackctl.yaml:2:20: field `container_runtime`"),
            "{errors}"
        );
        let errors = load_files(
            &[
                ("stackctl.yaml", "owner: t\n"),
                ("recipes/svc/web.yaml", "name: web\ncontainer: {image: web.sif}\n"),
                (
                    "stacks/s.yaml",
                    "services:\n  a:\n    recipe: svc/web\n    container: {image: x.sif, runtime: podman}\n",
                ),
            ],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            errors.contains("stacks/s.yaml:4:40: field `services.a.container.runtime`"),
            "{errors}"
        );
    }
}
