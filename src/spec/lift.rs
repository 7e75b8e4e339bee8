//! Parse, then lift: reads every file of a repo into raw shapes, validates them and builds the
//! model. All problems are collected, so one run reports every broken file.

use super::error::{SpecError, SpecErrors};
use super::layout::{CONFIG_FILE, RECIPES_DIR, STACKS_DIR};
use super::raw;
use super::yaml;
use super::{
    BackendKind, Desired, Owner, ReplicaSpec, Repo, ResourceSpec, Service, ServiceAddr, Settings,
    SlurmSpec,
};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Most replicas one service may ask for (Slurm's array indexes must stay below MaxArraySize).
pub const MAX_REPLICAS: i64 = 100_000;

/// Loads and validates the repo at `root`.
///
/// `remote_url` is asked for the git remote's URL only when `stackctl.yaml` names no owner.
pub fn load(root: &Path, remote_url: impl FnOnce() -> Option<String>) -> Result<Repo, SpecErrors> {
    let mut errors = Vec::new();
    let settings = load_settings(root, remote_url, &mut errors);
    let recipes = load_recipes(root, &mut errors);
    let desired = load_stacks(root, &recipes, &mut errors);
    match settings {
        Some(settings) if errors.is_empty() => Ok(Repo { settings, desired }),
        _ => Err(SpecErrors(errors)),
    }
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
    let owner = match &config.owner {
        Some(owner) => Owner::parse(&owner.value)
            .map_err(|message| SpecError::at(shown, owner.referenced, "owner", message)),
        None => match remote_url().as_deref().and_then(owner_from_remote_url) {
            Some(derived) => Owner::parse(&derived).map_err(|message| {
                SpecError::file(
                    shown,
                    format!("owner derived from the git remote: {message}"),
                )
            }),
            None => Err(SpecError::file(
                shown,
                "no owner: set `owner:` in stackctl.yaml or add a git remote (the owner must be \
                 the same on every checkout, so it is never guessed from the directory name)",
            )),
        },
    };
    let backend = match config
        .cluster
        .backend
        .as_ref()
        .map(|b| (b.value.as_str(), b))
    {
        None | Some(("cli", _)) => Ok(BackendKind::Cli),
        Some((other, spanned)) => Err(SpecError::at(
            shown,
            spanned.referenced,
            "cluster.backend",
            format!("unknown backend {other:?}; the only backend so far is \"cli\""),
        )),
    };
    let log_dir = dir_setting(shown, "log_dir", config.log_dir, "~/.stackctl/logs");
    let image_dir = dir_setting(shown, "image_dir", config.image_dir, "~/.stackctl/images");
    match (owner, backend, log_dir, image_dir) {
        (Ok(owner), Ok(backend), Ok(log_dir), Ok(image_dir)) => Some(Settings {
            owner,
            log_dir,
            image_dir,
            backend,
        }),
        (owner, backend, log_dir, image_dir) => {
            errors.extend(owner.err());
            errors.extend(backend.err());
            errors.extend(log_dir.err());
            errors.extend(image_dir.err());
            None
        }
    }
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

/// Returns `org/repo` for a git remote URL (`https://host/org/repo.git`, `git@host:org/repo`,
/// `/srv/git/org/repo.git`), or `None` if it has fewer than two path segments.
pub fn owner_from_remote_url(url: &str) -> Option<String> {
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
    ports: Vec<u16>,
    defaults: Layer,
}

fn load_recipes(root: &Path, errors: &mut Vec<SpecError>) -> RecipeTable {
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
        let shown = Path::new(RECIPES_DIR).join(relative);
        let recipe = match yaml::read_file::<raw::Recipe>(&file, &shown) {
            Ok(recipe) => {
                let before = errors.len();
                let mut ctx = Ctx {
                    file: &shown,
                    errors,
                };
                let lifted = lift_recipe(&mut ctx, recipe);
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

fn lift_recipe(ctx: &mut Ctx, recipe: raw::Recipe) -> Option<Recipe> {
    if recipe.container.is_none() && recipe.command.is_none() {
        ctx.error(
            recipe.name.referenced,
            "command",
            "a recipe needs a `container`, a `command`, or both",
        );
        return None;
    }
    let image = recipe.container.as_ref().and_then(|c| {
        let v = &c.image;
        if v.value.trim().is_empty() || v.value.contains(['\n', '\0']) {
            ctx.error(
                v.referenced,
                "container.image",
                "must be a non-empty, single-line path or URI",
            );
            None
        } else {
            Some(v.value.clone())
        }
    });
    let command = recipe.command.as_ref().and_then(|v| {
        if v.value.trim().is_empty() || v.value.contains('\0') {
            ctx.error(
                v.referenced,
                "command",
                "must be a non-empty command without NUL bytes",
            );
            None
        } else {
            Some(v.value.clone())
        }
    });
    let mut ports = Vec::new();
    for (i, port) in recipe.ports.iter().enumerate() {
        if let Some(port) = ctx.int_in(port, &format!("ports[{i}]"), 1, 65535) {
            ports.push(port as u16);
        }
    }
    let defaults = lift_layer(
        ctx,
        "",
        &recipe.resources,
        &recipe.slurm,
        &recipe.environment,
    );
    Some(Recipe {
        image,
        command,
        ports,
        defaults,
    })
}

/// Lists the `*.yaml` files under `dir` in sorted order, descending into subdirectories if
/// asked. A `.yml` file, or one whose symlink leads outside `dir`, is reported, not skipped or
/// followed: either would make the desired state differ from what the reviewer read.
fn yaml_files(
    root: &Path,
    dir: &Path,
    recursive: bool,
    errors: &mut Vec<SpecError>,
) -> std::io::Result<Vec<PathBuf>> {
    let base = dir.canonicalize()?;
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&current)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries.iter().rev() {
            let path = entry.path();
            let shown = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            if !path
                .canonicalize()
                .is_ok_and(|real| real.starts_with(&base))
            {
                errors.push(SpecError::file(
                    shown,
                    format!(
                        "is a link that leads outside {}/",
                        dir.strip_prefix(root).unwrap_or(dir).display()
                    ),
                ));
            } else if path.is_dir() {
                if recursive {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "yml") {
                errors.push(SpecError::file(
                    shown,
                    "stackctl reads only `.yaml` files; rename it to end in `.yaml`",
                ));
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
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
        let stack = match yaml::read_file::<raw::Stack>(&file, &shown) {
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
            if let Some(service) = lift_service(&mut ctx, &field, service, recipes) {
                desired
                    .services
                    .insert(ServiceAddr::new(stem.as_ref(), service_name), service);
            }
        }
    }
    desired
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

    /// Returns the value if it lies in `min..=max`, otherwise records an error.
    fn int_in(&mut self, v: &Spanned<i64>, field: &str, min: i64, max: i64) -> Option<u32> {
        if (min..=max).contains(&v.value) {
            Some(v.value as u32)
        } else {
            self.error(
                v.referenced,
                field,
                format!("must be between {min} and {max}, got {}", v.value),
            );
            None
        }
    }

    /// Returns the text if every character passes `ok`, otherwise records an error.
    fn word(
        &mut self,
        v: &Spanned<String>,
        field: &str,
        what: &str,
        ok: fn(char) -> bool,
    ) -> Option<String> {
        if !v.value.is_empty() && v.value.len() <= 256 && v.value.chars().all(ok) {
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
    let replicas = match &service.replicas {
        Some(r) => ctx.int_in(r, &format!("{field}.replicas"), 0, MAX_REPLICAS),
        None => Some(1),
    };
    let overrides = lift_layer(
        ctx,
        &format!("{field}."),
        &service.resources,
        &service.slurm,
        &service.environment,
    );
    if ctx.errors.len() > before {
        return None;
    }
    let spec = recipe.with_overrides(overrides);
    let mut origins = BTreeMap::new();
    origins.insert(
        "recipe".to_owned(),
        super::Origin {
            file: ctx.file.to_path_buf(),
            position: super::error::position_of(reference.referenced),
            field: recipe_field,
        },
    );
    Some(Service {
        recipe: reference.value.clone(),
        replicas: replicas?,
        hash: spec.hash(),
        spec,
        origins,
    })
}

/// Returns the known name closest to `wanted`, if it is close enough to be a likely typo.
fn nearest<'a>(wanted: &str, known: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    known
        .map(|name| (strsim::levenshtein(wanted, name), name))
        .filter(|(distance, name)| *distance <= (name.len() / 3).max(2))
        .min()
        .map(|(_, name)| name)
}

/// Settings that a recipe gives and a stack service may override, validated, all optional.
#[derive(Default)]
struct Layer {
    nodes: Option<u32>,
    cpu: Option<u32>,
    /// `memory` or `memory_per_cpu`; they exclude each other, so an override replaces both.
    memory: Option<Memory>,
    gpu: Option<u32>,
    gpu_type: Option<String>,
    time_limit: Option<u32>,
    cpu_bind: Option<String>,
    partition: Option<String>,
    qos: Option<String>,
    account: Option<String>,
    environment: BTreeMap<String, String>,
}

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
) -> Layer {
    let res = |name: &str| format!("{prefix}resources.{name}");
    let int = |ctx: &mut Ctx, name: &str, v: &Option<Spanned<i64>>, min: i64, max: i64| {
        v.as_ref().and_then(|v| ctx.int_in(v, &res(name), min, max))
    };
    let nodes = int(ctx, "nodes", &resources.nodes, 1, 100_000);
    let cpu = int(ctx, "cpu", &resources.cpu, 1, 100_000);
    let gpu = int(ctx, "gpu", &resources.gpu, 0, 1024);
    let time_limit = int(ctx, "time_limit", &resources.time_limit, 1, 100_000_000);
    let memory = match (&resources.memory, &resources.memory_per_cpu) {
        (Some(_), Some(v)) => {
            ctx.error(
                v.referenced,
                &res("memory_per_cpu"),
                "set `memory` or `memory_per_cpu`, not both",
            );
            None
        }
        (Some(m), None) => memory_amount(ctx, m, &res("memory")).map(Memory::PerNode),
        (None, Some(m)) => memory_amount(ctx, m, &res("memory_per_cpu")).map(Memory::PerCpu),
        (None, None) => None,
    };
    let word =
        |ctx: &mut Ctx,
         v: &Option<Spanned<String>>,
         field: String,
         what: &str,
         ok: fn(char) -> bool| { v.as_ref().and_then(|v| ctx.word(v, &field, what, ok)) };
    let gpu_type = word(
        ctx,
        &resources.gpu_type,
        res("gpu_type"),
        "a GPU type",
        slurm_word,
    );
    let cpu_bind = word(
        ctx,
        &resources.cpu_bind,
        res("cpu_bind"),
        "a CPU binding",
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | ',' | ':'),
    );
    let slurm_field = |name: &str| format!("{prefix}slurm.{name}");
    let partition = word(
        ctx,
        &slurm.partition,
        slurm_field("partition"),
        "a Slurm partition name",
        slurm_word,
    );
    let qos = word(
        ctx,
        &slurm.qos,
        slurm_field("qos"),
        "a Slurm QOS name",
        slurm_word,
    );
    let account = word(
        ctx,
        &slurm.account,
        slurm_field("account"),
        "a Slurm account name",
        slurm_word,
    );

    let mut env = BTreeMap::new();
    for (key, value) in environment {
        let field = format!("{prefix}environment.{key}");
        let key_ok = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !key_ok {
            ctx.error(
                value.referenced,
                &field,
                format!("{:?} is not a valid environment variable name", key),
            );
        } else if value.value.0.contains('\0') {
            ctx.error(
                value.referenced,
                &field,
                "environment values cannot contain NUL bytes",
            );
        } else {
            env.insert(key.clone(), value.value.0.clone());
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
        environment: env,
    }
}

impl Recipe {
    /// Returns the replica spec with a service's overrides laid over this recipe's defaults.
    fn with_overrides(&self, over: Layer) -> ReplicaSpec {
        let base = &self.defaults;
        let memory = over.memory.as_ref().or(base.memory.as_ref());
        let gpu = over.gpu.or(base.gpu).unwrap_or(0);
        let mut environment = base.environment.clone();
        environment.extend(over.environment);
        ReplicaSpec {
            image: self.image.clone(),
            command: self.command.clone(),
            resources: ResourceSpec {
                nodes: over.nodes.or(base.nodes).unwrap_or(1),
                cpu: over.cpu.or(base.cpu).unwrap_or(1),
                memory: match memory {
                    Some(Memory::PerNode(m)) => Some(m.clone()),
                    _ => None,
                },
                memory_per_cpu: match memory {
                    Some(Memory::PerCpu(m)) => Some(m.clone()),
                    _ => None,
                },
                gpu,
                // A GPU type means nothing without GPUs (a stack may set `gpu: 0` on a GPU recipe).
                gpu_type: over.gpu_type.or(base.gpu_type.clone()).filter(|_| gpu > 0),
                time_limit: over.time_limit.or(base.time_limit),
                cpu_bind: over.cpu_bind.or(base.cpu_bind.clone()),
            },
            environment,
            ports: self.ports.clone(),
            slurm: SlurmSpec {
                partition: over.partition.or(base.partition.clone()),
                qos: over.qos.or(base.qos.clone()),
                account: over.account.or(base.account.clone()),
            },
        }
    }
}

/// Validates a memory amount in Slurm's notation: digits with an optional K, M, G or T suffix.
fn memory_amount(ctx: &mut Ctx, value: &Spanned<raw::Scalar>, field: &str) -> Option<String> {
    let text = value.value.0.trim().to_ascii_uppercase();
    let digits = text.trim_end_matches(['K', 'M', 'G', 'T']);
    let suffix_len = text.len() - digits.len();
    let ok = !digits.is_empty()
        && suffix_len <= 1
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.trim_start_matches('0').is_empty();
    if ok {
        Some(text)
    } else {
        ctx.error(
            value.referenced,
            field,
            format!(
                "{:?} is not a memory amount such as 512M or 32G",
                value.value.0
            ),
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_comes_from_the_last_two_segments_of_any_remote_url_form() {
        for url in [
            "https://github.com/org/repo.git",
            "https://github.com/org/repo",
            "git@github.com:org/repo.git",
            "ssh://git@host:22/org/repo.git",
            "/srv/git/org/repo.git",
            "file:///srv/git/org/repo/",
        ] {
            assert_eq!(
                owner_from_remote_url(url).as_deref(),
                Some("org/repo"),
                "{url}"
            );
        }
        assert_eq!(owner_from_remote_url("repo"), None);
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
}
