//! Container runtimes: what a service's `container:` block means once validated
//! ([`ContainerSpec`]) and the pure command lines that run a service in Apptainer,
//! Charliecloud or Podman ([`run_lines`]). No IO: the batch script ([`crate::render::script`])
//! writes what this module returns.
//!
//! Every runtime gets exactly the service's environment and nothing of the job's: Apptainer
//! with `--cleanenv` and `APPTAINERENV_<NAME>` variables, Charliecloud with
//! `--unset-env='*'` then `--set-env` (values literal: `--env-no-expand`), Podman with `-e`
//! (it never passes the caller's environment). The service shares the node's network, sees
//! the node's GPUs when it has GPUs, and is `exec`ed so signals reach it directly and its exit
//! code is the job's.

use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// The container runtimes stackctl can run a service in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// Apptainer (or Singularity): a `.sif` image or URI; built from a `.def` file.
    #[default]
    Apptainer,
    /// Charliecloud: `ch-image` builds a Dockerfile, `ch-convert` makes a directory image
    /// under `image_dir`, `ch-run` runs it.
    Charliecloud,
    /// Podman: `podman build` into a store under `image_dir`, `podman run` from it.
    Podman,
}

impl Runtime {
    /// Every runtime, in the order error messages list them.
    pub const ALL: [Runtime; 3] = [Runtime::Apptainer, Runtime::Charliecloud, Runtime::Podman];

    /// The name a file writes.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Apptainer => "apptainer",
            Runtime::Charliecloud => "charliecloud",
            Runtime::Podman => "podman",
        }
    }

    /// Parses a runtime's name.
    pub fn parse(text: &str) -> Result<Runtime, String> {
        Runtime::ALL
            .into_iter()
            .find(|r| r.name() == text)
            .ok_or_else(|| {
                format!(
                    "unknown container runtime {text:?}; the runtimes are \"apptainer\", \
                     \"charliecloud\" and \"podman\""
                )
            })
    }

    /// The key naming the image definition in a recipe: `definition` (Apptainer) or `build`
    /// (a Dockerfile, Charliecloud and Podman).
    pub fn definition_key(self) -> &'static str {
        match self {
            Runtime::Apptainer => "definition",
            Runtime::Charliecloud | Runtime::Podman => "build",
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a service's container runs, as the spec (and its hash) holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The runtime.
    pub runtime: Runtime,
    /// The definition the image is built from, when the recipe names one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub build: Option<ImageDefinition>,
    /// Host paths mounted in the container, `SRC` or `SRC:DST`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub binds: Vec<String>,
}

/// An image definition file (a Dockerfile or an Apptainer `.def`) and its content's hash.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ImageDefinition {
    /// The file, relative to the repo root (`recipes/web/Dockerfile`).
    pub file: String,
    /// The first 16 hex digits of the SHA-256 of its content: part of the spec hash, so an
    /// edited definition replaces the replicas, and the name of the image built from it.
    pub sha256: String,
    /// The file's content, as the repo holds it (never in the spec's JSON).
    #[serde(skip)]
    pub text: String,
}

/// Returns the 16-hex-digit hash [`ImageDefinition::sha256`] holds for a file's content.
pub fn definition_hash(content: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(content);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks an image name a runtime builds (`image:` with `build:`): it names files under
/// `image_dir` and a tag in the builder's store, so lower-case letters, digits, `.`, `_`, `-`.
pub fn check_image_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "image {name:?} is built, so it must be a name of lower-case letters, digits, `.`, \
             `_` and `-` (at most 64, starting with a letter or digit), not a path"
        ))
    }
}

/// Checks a bind: an absolute host path, optionally `:` and an absolute container path.
pub fn check_bind(bind: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("bind {bind:?} {why}"));
    if bind.contains(['\n', '\0', ',']) {
        return bad("may not contain a newline or a comma");
    }
    let mut parts = bind.split(':');
    let src = parts.next().unwrap_or_default();
    let dst = parts.next();
    if parts.next().is_some() {
        return bad("must be SRC or SRC:DST");
    }
    if !src.starts_with('/') || dst.is_some_and(|d| !d.starts_with('/')) {
        return bad("must name absolute paths (SRC or SRC:DST)");
    }
    Ok(())
}

/// Where a built image lives under `image_dir`: `<image>-<definition hash>` (a directory for
/// Charliecloud, a `.sif` for Apptainer, a store entry for Podman). Content-addressed, so a
/// rebuild never changes an image running replicas use.
pub fn built_image_name(image: &str, definition: &ImageDefinition, runtime: Runtime) -> String {
    match runtime {
        Runtime::Apptainer => format!(
            "{}-{}.sif",
            image.strip_suffix(".sif").unwrap_or(image),
            definition.sha256
        ),
        Runtime::Charliecloud | Runtime::Podman => format!("{image}-{}", definition.sha256),
    }
}

/// One variable the container gets: a literal value known when the script is rendered, or the
/// value a job variable has when the service starts (`PORT_0`, `SLURM_JOB_ID`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// This text, exactly.
    Literal(String),
    /// The job's variable of the same name, if set.
    FromJob,
    /// A secret the script has read into its environment (see `render::script`): handed to
    /// the runtime by name or through a pipe, never as a command-line word, which `ps`
    /// shows every user of the node.
    Secret,
}

/// What [`run_lines`] needs about one service.
#[derive(Debug, Clone)]
pub struct RunRequest<'a> {
    /// The runtime and binds.
    pub container: &'a ContainerSpec,
    /// The image as the runtime opens it (a path, URI or store name), already resolved.
    pub image: String,
    /// The command, or `None` for the image's own entry point.
    pub command: Option<&'a str>,
    /// The container's environment, in order (later names win).
    pub env: Vec<(String, EnvValue)>,
    /// Whether the replica has GPUs.
    pub gpus: bool,
    /// Podman's store (`--root`), under `image_dir`.
    pub podman_root: String,
}

/// The job variables every container gets when the job has them: the replica's identity and
/// Slurm's description of the job.
pub const JOB_VARIABLES: [&str; 9] = [
    "STACKCTL_STACK",
    "STACKCTL_SERVICE",
    "STACKCTL_REPLICA",
    "SLURM_JOB_ID",
    "SLURM_JOB_NAME",
    "SLURM_JOB_NODELIST",
    "SLURM_NODELIST",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
];

/// The job variables a container with GPUs also gets: which of the node's GPUs Slurm gave it.
pub const GPU_VARIABLES: [&str; 4] = [
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
    "SLURM_JOB_GPUS",
];

/// The `PATH` a container gets unless the service sets its own (Debian's default).
pub const CONTAINER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The bash lines that run the service in its container, ending with the `exec` of the
/// runtime (so the runtime, and through it the service, is the process Slurm and the
/// supervisor signal).
pub fn run_lines(req: &RunRequest) -> String {
    let mut s = String::new();
    let from_job: Vec<&str> = req
        .env
        .iter()
        .filter(|(_, v)| *v == EnvValue::FromJob)
        .map(|(k, _)| k.as_str())
        .collect();
    match req.container.runtime {
        Runtime::Apptainer => {
            // `APPTAINERENV_<NAME>` reaches the container even with `--cleanenv`.
            s.push_str("stackctl_env=()\n");
            for (key, value) in &req.env {
                if let EnvValue::Literal(v) = value {
                    let _ = writeln!(
                        s,
                        "stackctl_env+=({})",
                        quote(&format!("APPTAINERENV_{key}={v}"))
                    );
                }
            }
            job_env_loop(
                &mut s,
                &from_job,
                "",
                "APPTAINERENV_${stackctl_v}=${!stackctl_v}",
            );
            // `export` is a shell builtin: the value reaches apptainer's environment only.
            for key in secrets(req) {
                let _ = writeln!(s, "export APPTAINERENV_{key}=\"${key}\"");
            }
            let mut args = vec!["--cleanenv".to_owned()];
            if req.gpus {
                args.push("--nv".into());
            }
            for bind in &req.container.binds {
                args.push(format!("--bind {}", quote(bind)));
            }
            let (verb, tail) = match req.command {
                None => ("run", String::new()),
                Some(command) => ("exec", format!(" /bin/sh -c {}", quote(command))),
            };
            let _ = writeln!(
                s,
                "exec env \"${{stackctl_env[@]}}\" apptainer {verb} {} {}{tail}",
                args.join(" "),
                quote(&req.image)
            );
        }
        Runtime::Charliecloud => {
            // ch-run reads `$USER` (and fails without it); the job may not have one.
            s.push_str("export USER=\"${USER:-$(id -un)}\"\n");
            s.push_str("stackctl_env=(--env-no-expand '--unset-env=*')\n");
            for (key, value) in &req.env {
                if let EnvValue::Literal(v) = value {
                    let _ = writeln!(
                        s,
                        "stackctl_env+=({})",
                        quote(&format!("--set-env={key}={v}"))
                    );
                }
            }
            job_env_loop(
                &mut s,
                &from_job,
                "",
                "--set-env=${stackctl_v}=${!stackctl_v}",
            );
            // Secrets go through a pipe ch-run reads as a file of NAME=VALUE lines: a process
            // substitution, on the `exec` line itself so the pipe is still open for ch-run.
            let names = secrets(req);
            let mut args = Vec::new();
            if !names.is_empty() {
                let lines: Vec<String> = names
                    .iter()
                    .map(|key| format!("printf '%s=%s\\n' {key} \"${key}\";"))
                    .collect();
                args.push(format!("--set-env=<({})", lines.join(" ")));
            }
            for bind in &req.container.binds {
                args.push(format!("--bind={}", quote(bind)));
            }
            // GPUs: ch-run keeps the host's /dev, so the devices Slurm gave are there; the
            // driver libraries go into the image with `ch-fromhost --nvidia` (Charliecloud's
            // documented way), e.g. a RUN-free step in `setup:` or the site's image.
            let command = match req.command {
                Some(command) => format!("/bin/sh -c {}", quote(command)),
                // ch-run has no entry point: without a command, the image's `/entrypoint`
                // (the shipped Dockerfiles write one, as Apptainer's `%runscript`).
                None => "/entrypoint".to_owned(),
            };
            let _ = writeln!(
                s,
                "exec ch-run \"${{stackctl_env[@]}}\"{}{} {} -- {command}",
                if args.is_empty() { "" } else { " " },
                args.join(" "),
                quote(&req.image)
            );
        }
        Runtime::Podman => {
            s.push_str("stackctl_env=()\n");
            for (key, value) in &req.env {
                if let EnvValue::Literal(v) = value {
                    let _ = writeln!(s, "stackctl_env+=(-e {})", quote(&format!("{key}={v}")));
                }
            }
            job_env_loop(&mut s, &from_job, "-e ", "${stackctl_v}=${!stackctl_v}");
            // `-e NAME` alone: podman takes the value from its own environment.
            for key in secrets(req) {
                let _ = writeln!(s, "stackctl_env+=(-e {key})");
            }
            let mut args = vec![
                format!("--root {}", quote(&req.podman_root)),
                "run --rm --network=host --init --sig-proxy=true".to_owned(),
            ];
            if req.gpus {
                args.push("--device nvidia.com/gpu=all".into());
            }
            for bind in &req.container.binds {
                let volume = if bind.contains(':') {
                    bind.clone()
                } else {
                    format!("{bind}:{bind}")
                };
                args.push(format!("--volume {}", quote(&volume)));
            }
            let tail = match req.command {
                None => String::new(),
                Some(command) => format!(" /bin/sh -c {}", quote(command)),
            };
            let _ = writeln!(
                s,
                "exec podman {} \"${{stackctl_env[@]}}\" {}{tail}",
                args.join(" "),
                quote(&req.image)
            );
        }
    }
    s
}

/// The names of the secrets of `req`, in order.
fn secrets<'a>(req: &'a RunRequest) -> Vec<&'a str> {
    req.env
        .iter()
        .filter(|(_, v)| *v == EnvValue::Secret)
        .map(|(k, _)| k.as_str())
        .collect()
}

/// Writes the loop adding each job variable that is set (`$stackctl_v` its name) as `flag`
/// (if any) followed by `value`.
fn job_env_loop(s: &mut String, names: &[&str], flag: &str, value: &str) {
    if names.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "for stackctl_v in {}; do\n  [ -n \"${{!stackctl_v+x}}\" ] && stackctl_env+=({flag}\"{value}\")\ndone",
        names.join(" ")
    );
}

/// What [`build_script`] needs about one image build.
#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    /// The runtime.
    pub runtime: Runtime,
    /// The image's name (`image:`).
    pub image: &'a str,
    /// Its definition.
    pub definition: &'a ImageDefinition,
    /// The definition's text.
    pub text: &'a str,
    /// Where the built image goes (expanded).
    pub image_dir: String,
    /// The recipe's directory as the build context, when the nodes see it.
    pub context: Option<String>,
    /// `setup:` lines run first.
    pub setup: &'a [String],
}

/// The body of an image's build job: writes the definition to a temporary directory, builds
/// it, puts the result at [`built_image_name`] under `image_dir` (under a temporary name
/// first, renamed when complete), and records the outcome beside it: `<name>.built` on
/// success; `<name>.failed` (holding the job id) on failure, so plan and status can say so.
pub fn build_script(req: &BuildRequest) -> String {
    let built = built_image_name(req.image, req.definition, req.runtime);
    let mut s = String::new();
    s.push_str("export PATH=\"${PATH:-/usr/local/bin:/usr/bin:/bin}\"\n");
    s.push_str("export USER=\"${USER:-$(id -un)}\"\n");
    for line in req.setup {
        s.push_str(line.trim_end());
        s.push('\n');
    }
    let _ = writeln!(s, "STACKCTL_IMAGE_DIR={}", quote(&req.image_dir));
    let _ = writeln!(s, "STACKCTL_BUILT={}", quote(&built));
    s.push_str("mkdir -p \"$STACKCTL_IMAGE_DIR\" || exit 1\n");
    s.push_str("rm -f \"$STACKCTL_IMAGE_DIR/$STACKCTL_BUILT.failed\"\n");
    s.push_str("stackctl_tmp=$(mktemp -d) || exit 1\n");
    s.push_str(
        "stackctl_fail() { echo \"stackctl: image build failed: $*\" >&2; echo \"${SLURM_JOB_ID:-?} $*\" > \"$STACKCTL_IMAGE_DIR/$STACKCTL_BUILT.failed\"; rm -rf \"$stackctl_tmp\"; exit 1; }\n",
    );
    let file = req
        .definition
        .file
        .rsplit('/')
        .next()
        .unwrap_or("Dockerfile");
    let _ = writeln!(
        s,
        "cat > \"$stackctl_tmp/{file}\" <<'STACKCTL_DEFINITION_EOF'"
    );
    s.push_str(req.text);
    if !req.text.ends_with('\n') {
        s.push('\n');
    }
    s.push_str("STACKCTL_DEFINITION_EOF\n");
    match &req.context {
        Some(dir) => {
            let _ = writeln!(
                s,
                "stackctl_ctx={}; [ -d \"$stackctl_ctx\" ] || stackctl_ctx=\"$stackctl_tmp\"",
                quote(dir)
            );
        }
        None => s.push_str("stackctl_ctx=\"$stackctl_tmp\"\n"),
    }
    let tag = format!("{}:{}", req.image, req.definition.sha256);
    let tmp_target = "\"$STACKCTL_IMAGE_DIR/.$STACKCTL_BUILT.$$\"";
    match req.runtime {
        Runtime::Charliecloud => {
            // ch-image refuses to share its store with a concurrent instance ("storage
            // directory is already in use"): builds on one node take turns.
            s.push_str(
                "stackctl_store=\"${CH_IMAGE_STORAGE:-/var/tmp/$USER.ch}\"\n\
                 if command -v flock >/dev/null 2>&1; then\n  \
                 exec 8>>\"$stackctl_store.stackctl-lock\" && flock -w 3600 8 || stackctl_fail \"no lock on the ch-image store\"\n\
                 fi\n",
            );
            let _ = writeln!(
                s,
                "ch-image --no-cache build --force -t {tag} -f \"$stackctl_tmp/{file}\" \"$stackctl_ctx\" || stackctl_fail \"ch-image build\""
            );
            let _ = writeln!(
                s,
                "rm -rf {tmp_target}\nch-convert -i ch-image -o dir {tag} {tmp_target} || stackctl_fail \"ch-convert\""
            );
            // The builder's copy is no longer needed: the store would grow with every build.
            let _ = writeln!(s, "ch-image delete {tag} >/dev/null 2>&1 || true");
            s.push_str("exec 8>&-\n");
        }
        Runtime::Podman => {
            let _ = writeln!(
                s,
                "podman --root \"$STACKCTL_IMAGE_DIR/podman\" build -t {tag} -f \"$stackctl_tmp/{file}\" \"$stackctl_ctx\" || stackctl_fail \"podman build\""
            );
            let _ = writeln!(s, "touch {tmp_target}");
        }
        Runtime::Apptainer => {
            s.push_str("cd \"$stackctl_ctx\" || stackctl_fail \"no build context\"\n");
            let _ = writeln!(
                s,
                "apptainer build --force {tmp_target} \"$stackctl_tmp/{file}\" || stackctl_fail \"apptainer build\""
            );
        }
    }
    s.push_str("rm -rf \"$STACKCTL_IMAGE_DIR/$STACKCTL_BUILT\"\n");
    let _ = writeln!(
        s,
        "mv {tmp_target} \"$STACKCTL_IMAGE_DIR/$STACKCTL_BUILT\" || stackctl_fail \"moving the image into place\""
    );
    s.push_str(
        "echo \"${SLURM_JOB_ID:-?} $(date +%s)\" > \"$STACKCTL_IMAGE_DIR/$STACKCTL_BUILT.built\"\n",
    );
    s.push_str("rm -rf \"$stackctl_tmp\"\necho \"stackctl: built $STACKCTL_IMAGE_DIR/$STACKCTL_BUILT\" >&2\n");
    s
}

/// The prefix of a build job's comment: `stackctl-image/v1;owner=…;image=…;def=…;nonce=…`.
/// Listings keep it (it holds `stackctl`); service markers and locks never parse as it.
pub const BUILD_PREFIX: &str = "stackctl-image/v1";

/// One image the desired services need, by runtime, name and definition hash.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ImageKey {
    /// The runtime that builds and runs it.
    pub runtime: Runtime,
    /// `image:`.
    pub image: String,
    /// The definition it is built from.
    pub definition: ImageDefinition,
}

impl ImageKey {
    /// The built image's name under `image_dir` ([`built_image_name`]).
    pub fn built(&self) -> String {
        built_image_name(&self.image, &self.definition, self.runtime)
    }

    /// The build job's comment.
    pub fn comment(&self, owner: &crate::desired::Owner, nonce: &str) -> String {
        format!(
            "{BUILD_PREFIX};owner={owner};image={};def={};nonce={nonce}",
            self.image, self.definition.sha256
        )
    }

    /// The build log's file name under `log_dir`: `image.<built name>.log`.
    pub fn log_name(&self) -> String {
        format!("image.{}.log", self.built())
    }
}

/// What the image directory and the logs say about built images ([`crate::image::observe`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFiles {
    /// Built images (`<name>.built` exists), by built name.
    pub built: std::collections::BTreeSet<String>,
    /// Failed builds (`<name>.failed`), by built name: its content (`<job id> <step>`) and the
    /// last lines of its log.
    pub failed: std::collections::BTreeMap<String, (String, String)>,
}

/// What a plan does about one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageAction {
    /// Submit a build job; why (`not built yet`, `definition changed`).
    Build(String),
    /// A build job of this definition is queued or running: new replicas start after it.
    Building(u64),
    /// The last build of this definition failed; its services are held.
    Failed {
        /// What the build recorded (`<job id> <step>`).
        record: String,
        /// The last lines of its log.
        tail: String,
    },
}

impl ImageAction {
    /// Whether the step submits a build.
    pub fn builds(&self) -> bool {
        matches!(self, ImageAction::Build(_))
    }
}

/// One image step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageStep {
    /// The image.
    pub key: ImageKey,
    /// The services that run it (replicas above 0), in address order.
    pub services: Vec<crate::desired::ServiceAddr>,
    /// The partition the build runs in: the first service's.
    pub partition: Option<String>,
    /// What the plan does.
    pub action: ImageAction,
}

/// The image steps for `desired`: one per image (runtime, name, definition hash) some
/// service with replicas runs, unless it is built. `records` is the job listing (build jobs
/// alive are found by their comment), `files` what the image directory holds.
pub fn image_steps(
    owner: &crate::desired::Owner,
    desired: &crate::desired::Desired,
    records: &[crate::observed::JobRecord],
    files: &ImageFiles,
) -> Vec<ImageStep> {
    use std::collections::BTreeMap;
    let mut needed: BTreeMap<ImageKey, (Vec<crate::desired::ServiceAddr>, Option<String>)> =
        BTreeMap::new();
    for (addr, service) in &desired.services {
        let (Some(container), Some(image)) = (&service.spec.container, &service.spec.image) else {
            continue;
        };
        let Some(definition) = &container.build else {
            continue;
        };
        if service.replicas == 0 {
            continue;
        }
        let key = ImageKey {
            runtime: container.runtime,
            image: image.clone(),
            definition: definition.clone(),
        };
        let entry = needed
            .entry(key)
            .or_insert_with(|| (Vec::new(), service.spec.slurm.partition.clone()));
        entry.0.push(addr.clone());
    }
    let alive_build = |key: &ImageKey| {
        let prefix = format!(
            "{BUILD_PREFIX};owner={owner};image={};def={};",
            key.image, key.definition.sha256
        );
        records
            .iter()
            .filter(|r| r.comment.starts_with(&prefix))
            .filter(|r| crate::observed::JobState::from_slurm(&r.state, &r.reason).is_alive())
            .map(|r| r.id.array)
            .min()
    };
    let mut steps = Vec::new();
    for (key, (services, partition)) in needed {
        let built = key.built();
        if files.built.contains(&built) {
            continue;
        }
        let action = if let Some(job) = alive_build(&key) {
            ImageAction::Building(job)
        } else if let Some((record, tail)) = files.failed.get(&built) {
            ImageAction::Failed {
                record: record.clone(),
                tail: tail.clone(),
            }
        } else {
            let other = format!("{}-", key.image);
            let changed = files.built.iter().any(|b| {
                b.strip_prefix(&other)
                    .is_some_and(|rest| rest.trim_end_matches(".sif").len() == 16)
            });
            ImageAction::Build(
                if changed {
                    "definition changed"
                } else {
                    "not built yet"
                }
                .into(),
            )
        };
        steps.push(ImageStep {
            key,
            services,
            partition,
            action,
        });
    }
    steps
}

/// The plan line of an image step, e.g. `build image web (definition changed) for s.a, s.b;
/// log: /logs/image.web-….log`.
pub fn step_line(step: &ImageStep, log_dir: &std::path::Path) -> String {
    let services: Vec<String> = step.services.iter().map(|s| s.to_string()).collect();
    let log = log_dir.join(step.key.log_name());
    match &step.action {
        ImageAction::Build(why) => format!(
            "build image {} ({why}) with {} for {}; log: {}",
            step.key.image,
            step.key.runtime,
            services.join(", "),
            log.display()
        ),
        ImageAction::Building(job) => format!(
            "image {} is being built (job {job}); {} start after it; log: {}",
            step.key.image,
            services.join(", "),
            log.display()
        ),
        ImageAction::Failed { record, tail } => format!(
            "image {} failed to build (job {record}): {}; log: {}; fix {} (or delete {}.failed \
             in image_dir to retry)",
            step.key.image,
            tail.trim_end().replace('\n', " | "),
            log.display(),
            step.key.definition.file,
            step.key.built()
        ),
    }
}

/// The build job of an image step: one task, on the first service's partition, its log at
/// [`ImageKey::log_name`] under `log_dir`, its comment naming the owner, image and definition
/// (so a later plan finds it while it runs, and `stackctl logs` finds its log).
pub fn build_job(
    step: &ImageStep,
    owner: &crate::desired::Owner,
    nonce: &str,
    image_dir: &std::path::Path,
    log_dir: &std::path::Path,
    setup: &[String],
) -> crate::job::JobRequest {
    let log = log_dir.join(step.key.log_name()).display().to_string();
    let body = build_script(&BuildRequest {
        runtime: step.key.runtime,
        image: &step.key.image,
        definition: &step.key.definition,
        text: &step.key.definition.text,
        image_dir: image_dir.display().to_string(),
        context: None,
        setup,
    });
    crate::job::JobRequest {
        options: crate::job::JobOptions {
            name: format!("image.{}", step.key.image),
            comment: step.key.comment(owner, nonce),
            nodes: Some(1),
            ntasks_per_node: Some(1),
            cpus_per_task: Some(1),
            memory: Some(BUILD_MEMORY.to_owned()),
            time_limit: Some(BUILD_TIME_LIMIT_MINUTES),
            partition: step.partition.clone(),
            output: Some(log.replace('%', "%%")),
            error: Some(log.replace('%', "%%")),
            export_none: true,
            ..crate::job::JobOptions::default()
        },
        body,
    }
}

/// Memory a build job asks for.
pub const BUILD_MEMORY: &str = "2G";

/// A build job's time limit, in minutes.
pub const BUILD_TIME_LIMIT_MINUTES: u32 = 60;

/// Quotes a value for bash (see [`crate::render::script::quote`]).
fn quote(value: &str) -> String {
    crate::render::script::quote(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(runtime: Runtime, binds: &[&str]) -> ContainerSpec {
        ContainerSpec {
            runtime,
            build: None,
            binds: binds.iter().map(|b| b.to_string()).collect(),
        }
    }

    fn request<'a>(c: &'a ContainerSpec, command: Option<&'a str>, gpus: bool) -> RunRequest<'a> {
        RunRequest {
            container: c,
            image: "/img/web-0123".into(),
            command,
            env: vec![
                ("PATH".into(), EnvValue::Literal(CONTAINER_PATH.into())),
                ("GREETING".into(), EnvValue::Literal("it's $HOME".into())),
                ("PORT_0".into(), EnvValue::FromJob),
            ],
            gpus,
            podman_root: "/img/podman".into(),
        }
    }

    #[test]
    fn a_secret_is_handed_to_each_runtime_by_name_never_as_a_command_line_word() {
        for (runtime, expected) in [
            (Runtime::Apptainer, "export APPTAINERENV_TOKEN=\"$TOKEN\"\n"),
            (Runtime::Podman, "stackctl_env+=(-e TOKEN)\n"),
            (
                Runtime::Charliecloud,
                "--set-env=<(printf '%s=%s\\n' TOKEN \"$TOKEN\";)",
            ),
        ] {
            let c = container(runtime, &[]);
            let mut req = request(&c, Some("serve"), false);
            req.env.push(("TOKEN".into(), EnvValue::Secret));
            let lines = run_lines(&req);
            assert!(lines.contains(expected), "{runtime:?}:\n{lines}");
            // The only mentions of the secret are by name, never an assignment of a value.
            for line in lines.lines().filter(|l| l.contains("TOKEN")) {
                assert!(
                    line.contains("\"$TOKEN\"") || line.ends_with("-e TOKEN)"),
                    "{runtime:?}: {line}"
                );
            }
        }
    }

    #[test]
    fn charliecloud_runs_with_only_the_given_environment_literally() {
        let c = container(Runtime::Charliecloud, &["/scratch", "/data:/in"]);
        let lines = run_lines(&request(&c, Some("serve --port \"$PORT\""), false));
        assert_eq!(
            lines,
            "export USER=\"${USER:-$(id -un)}\"\n\
             stackctl_env=(--env-no-expand '--unset-env=*')\n\
             stackctl_env+=('--set-env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin')\n\
             stackctl_env+=('--set-env=GREETING=it'\\''s $HOME')\n\
             for stackctl_v in PORT_0; do\n  [ -n \"${!stackctl_v+x}\" ] && stackctl_env+=(\"--set-env=${stackctl_v}=${!stackctl_v}\")\ndone\n\
             exec ch-run \"${stackctl_env[@]}\" --bind='/scratch' --bind='/data:/in' '/img/web-0123' -- /bin/sh -c 'serve --port \"$PORT\"'\n"
        );
    }

    #[test]
    fn apptainer_cleans_the_environment_and_passes_gpus_only_with_gpus() {
        let c = container(Runtime::Apptainer, &["/scratch"]);
        let with = run_lines(&request(&c, None, true));
        assert!(
            with.ends_with("exec env \"${stackctl_env[@]}\" apptainer run --cleanenv --nv --bind '/scratch' '/img/web-0123'\n"),
            "{with}"
        );
        assert!(
            with.contains("stackctl_env+=('APPTAINERENV_GREETING=it'\\''s $HOME')\n"),
            "{with}"
        );
        assert!(
            with.contains("stackctl_env+=(\"APPTAINERENV_${stackctl_v}=${!stackctl_v}\")"),
            "{with}"
        );
        let without = run_lines(&request(&c, Some("x"), false));
        assert!(
            without.ends_with(
                "apptainer exec --cleanenv --bind '/scratch' '/img/web-0123' /bin/sh -c 'x'\n"
            ),
            "{without}"
        );
    }

    #[test]
    fn podman_runs_on_the_host_network_with_cdi_gpus() {
        let c = container(Runtime::Podman, &["/scratch"]);
        let lines = run_lines(&request(&c, Some("x"), true));
        assert!(
            lines.contains("stackctl_env+=(-e \"${stackctl_v}=${!stackctl_v}\")"),
            "{lines}"
        );
        assert!(
            lines.ends_with("exec podman --root '/img/podman' run --rm --network=host --init --sig-proxy=true --device nvidia.com/gpu=all --volume '/scratch:/scratch' \"${stackctl_env[@]}\" '/img/web-0123' /bin/sh -c 'x'\n"),
            "{lines}"
        );
    }

    #[test]
    fn names_binds_and_runtimes_are_checked() {
        assert!(check_image_name("web-1.2_x").is_ok());
        for bad in ["Web", "a/b", "", "-x", "web.sif/x"] {
            assert!(check_image_name(bad).is_err(), "{bad}");
        }
        assert!(check_bind("/a").is_ok() && check_bind("/a:/b").is_ok());
        for bad in ["a", "/a:b", "/a:/b:/c", "/a,/b"] {
            assert!(check_bind(bad).is_err(), "{bad}");
        }
        assert_eq!(Runtime::parse("podman"), Ok(Runtime::Podman));
        assert!(
            Runtime::parse("docker")
                .unwrap_err()
                .contains("charliecloud")
        );
    }

    #[test]
    fn a_build_records_its_outcome_beside_a_content_addressed_image() {
        let definition = ImageDefinition {
            file: "recipes/web/Dockerfile".into(),
            sha256: definition_hash(b"FROM debian-base\n"),
            text: "FROM debian-base\n".into(),
        };
        assert_eq!(definition.sha256.len(), 16);
        let script = build_script(&BuildRequest {
            runtime: Runtime::Charliecloud,
            image: "web",
            definition: &definition,
            text: "FROM debian-base\n",
            image_dir: "/shared/img".into(),
            context: None,
            setup: &["module load charliecloud".into()],
        });
        let tag = format!("web:{}", definition.sha256);
        assert!(script.contains("module load charliecloud\n"), "{script}");
        assert!(
            script.contains(&format!(
                "ch-image --no-cache build --force -t {tag} -f \"$stackctl_tmp/Dockerfile\""
            )),
            "{script}"
        );
        assert!(
            script.contains(&format!(
                "ch-convert -i ch-image -o dir {tag} \"$STACKCTL_IMAGE_DIR/.$STACKCTL_BUILT.$$\""
            )),
            "{script}"
        );
        assert!(script.contains(&format!("STACKCTL_BUILT='web-{}'", definition.sha256)));
        assert!(
            script.contains(&format!("ch-image delete {tag} ")),
            "{script}"
        );
        let lock = script
            .find("flock -w 3600 8")
            .expect("builds take turns on the store");
        assert!(lock < script.find("ch-image --no-cache build").unwrap());
        assert!(script.contains("FROM debian-base\nSTACKCTL_DEFINITION_EOF\n"));
        assert_eq!(
            built_image_name("vllm.sif", &definition, Runtime::Apptainer),
            format!("vllm-{}.sif", definition.sha256)
        );
    }

    /// Apptainer is not installable on the test machines: its build line is checked against
    /// its documented CLI (`apptainer build [--force] TARGET DEFINITION`, run from the
    /// definition's directory so relative `%files` resolve); Podman's likewise
    /// (`podman --root DIR build -t TAG -f FILE CONTEXT`).
    #[test]
    fn apptainer_and_podman_build_lines_follow_their_documented_cli() {
        let definition = ImageDefinition {
            file: "recipes/inference/vllm.def".into(),
            sha256: "0123456789abcdef".into(),
            text: "Bootstrap: docker\nFrom: vllm/vllm-openai\n".into(),
        };
        let request = |runtime| BuildRequest {
            runtime,
            image: "vllm.sif",
            definition: &definition,
            text: &definition.text,
            image_dir: "/shared/img".into(),
            context: None,
            setup: &[],
        };
        let apptainer = build_script(&request(Runtime::Apptainer));
        assert!(apptainer.contains(
            "cat > \"$stackctl_tmp/vllm.def\" <<'STACKCTL_DEFINITION_EOF'\nBootstrap: docker\n"
        ));
        assert!(
            apptainer.contains(
                "apptainer build --force \"$STACKCTL_IMAGE_DIR/.$STACKCTL_BUILT.$$\" \"$stackctl_tmp/vllm.def\" || stackctl_fail \"apptainer build\"\n"
            ),
            "{apptainer}"
        );
        assert!(apptainer.contains("STACKCTL_BUILT='vllm-0123456789abcdef.sif'"));
        assert!(!apptainer.contains("ch-image") && !apptainer.contains("flock"));
        let podman = build_script(&request(Runtime::Podman));
        assert!(
            podman.contains(
                "podman --root \"$STACKCTL_IMAGE_DIR/podman\" build -t vllm.sif:0123456789abcdef -f \"$stackctl_tmp/vllm.def\" \"$stackctl_ctx\""
            ),
            "{podman}"
        );
        // Every runtime records its outcome beside the image, the same way.
        for script in [&apptainer, &podman] {
            assert!(
                script.ends_with(
                    "echo \"stackctl: built $STACKCTL_IMAGE_DIR/$STACKCTL_BUILT\" >&2\n"
                )
            );
            assert!(script.contains("> \"$STACKCTL_IMAGE_DIR/$STACKCTL_BUILT.built\"\n"));
        }
    }
}
