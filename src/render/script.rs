//! The batch script a replica gets. Pure: machine-specific paths come in through
//! [`ScriptContext`], already expanded, and never enter the spec hash.

use crate::desired::{ReplicaSpec, ServiceAddr};
use crate::observed::{JobId, Marker};
use std::fmt::Write;
use std::path::PathBuf;

/// The script line that carries the spec, so a later plan can show what changed.
pub const SPEC_LINE_PREFIX: &str = "# stackctl-spec: ";

/// Machine-specific settings of the submitting side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptContext {
    /// Directory for job stdout/stderr (expanded, absolute).
    pub log_dir: PathBuf,
    /// Directory that relative image paths are resolved against (expanded).
    pub image_dir: PathBuf,
}

/// Renders the batch script for the replicas of `service` listed in `marker.indexes`.
pub fn render(
    service: &ServiceAddr,
    spec: &ReplicaSpec,
    marker: &Marker,
    ctx: &ScriptContext,
) -> String {
    let mut s = String::from("#!/bin/bash\n");
    let mut opt = |line: String| {
        s.push_str("#SBATCH ");
        s.push_str(&line);
        s.push('\n');
    };
    let res = &spec.resources;
    opt(format!("--job-name={service}"));
    opt(format!("--comment={marker}"));
    opt(format!("--array={}", marker.indexes));
    opt(format!("--nodes={}", res.nodes));
    opt("--ntasks-per-node=1".into());
    opt(format!("--cpus-per-task={}", res.cpu));
    if let Some(memory) = &res.memory {
        opt(format!("--mem={memory}"));
    }
    if let Some(memory) = &res.memory_per_cpu {
        opt(format!("--mem-per-cpu={memory}"));
    }
    if res.gpu > 0 {
        match &res.gpu_type {
            Some(kind) => opt(format!("--gres=gpu:{kind}:{}", res.gpu)),
            None => opt(format!("--gres=gpu:{}", res.gpu)),
        }
    }
    if let Some(minutes) = res.time_limit {
        opt(format!("--time={minutes}"));
    }
    for (flag, value) in [
        ("partition", &spec.slurm.partition),
        ("qos", &spec.slurm.qos),
        ("account", &spec.slurm.account),
    ] {
        if let Some(value) = value {
            opt(format!("--{flag}={value}"));
        }
    }
    // `%A_%a` is `<array>_<index>`, the job id plan and status print: see [`log_paths`].
    // A `%` of the log directory itself is written `%%`, so Slurm keeps it literally.
    let log_dir = PathBuf::from(ctx.log_dir.display().to_string().replace('%', "%%"));
    let (stdout, stderr) = log_paths_named(&log_dir, service, "%A_%a");
    opt(format!("--output={}", stdout.display()));
    opt(format!("--error={}", stderr.display()));
    // The job's environment comes from this script alone, so the same commit gives the same
    // job whether it was applied from a laptop or a CI runner.
    opt("--export=NONE".into());

    s.push_str(SPEC_LINE_PREFIX);
    s.push_str(&spec.to_canonical_json());
    s.push('\n');
    s.push_str("export PATH=\"${PATH:-/usr/local/bin:/usr/bin:/bin}\"\n");
    let _ = writeln!(s, "export STACKCTL_STACK={}", quote(&service.stack));
    let _ = writeln!(s, "export STACKCTL_SERVICE={}", quote(&service.service));
    s.push_str("export STACKCTL_REPLICA=\"${SLURM_ARRAY_TASK_ID}\"\n");
    if let Some(bind) = &res.cpu_bind {
        let _ = writeln!(s, "export SLURM_CPU_BIND={}", quote(bind));
    }
    for (key, value) in &spec.environment {
        let _ = writeln!(s, "export {key}={}", quote(value));
    }
    let nv = if res.gpu > 0 { " --nv" } else { "" };
    match (&spec.image, &spec.command) {
        (Some(image), None) => {
            let _ = writeln!(
                s,
                "exec apptainer run{nv} {}",
                quote(&image_path(image, ctx))
            );
        }
        (Some(image), Some(command)) => {
            let _ = writeln!(
                s,
                "exec apptainer exec{nv} {} /bin/sh -c {}",
                quote(&image_path(image, ctx)),
                quote(command)
            );
        }
        (None, Some(command)) => {
            s.push_str(command.trim_end());
            s.push('\n');
        }
        (None, None) => {
            s.push_str("echo 'stackctl: recipe has neither image nor command' >&2\nexit 1\n")
        }
    }
    s
}

/// Returns the stdout and stderr log files of the job `job_id` of `service`:
/// `<log_dir>/<stack>.<service>-<array>_<index>.out` and `.err`, named by the same id plan and
/// status print. [`render`] writes the same rule as Slurm's `%A_%a` pattern.
pub fn log_paths(ctx: &ScriptContext, service: &ServiceAddr, job_id: &JobId) -> (PathBuf, PathBuf) {
    log_paths_named(&ctx.log_dir, service, &job_id.to_string())
}

/// The one naming rule behind [`log_paths`] and the `--output`/`--error` lines of [`render`].
fn log_paths_named(
    log_dir: &std::path::Path,
    service: &ServiceAddr,
    id: &str,
) -> (PathBuf, PathBuf) {
    let stem = format!("{service}-{id}");
    (
        log_dir.join(format!("{stem}.out")),
        log_dir.join(format!("{stem}.err")),
    )
}

/// Returns an image reference as apptainer should see it: URIs and absolute paths as written,
/// other paths under the image directory.
fn image_path(image: &str, ctx: &ScriptContext) -> String {
    if is_in_image_dir(image) {
        ctx.image_dir.join(image).display().to_string()
    } else {
        image.to_owned()
    }
}

/// Returns whether an image is looked up in the image directory (neither a URI nor absolute).
pub fn is_in_image_dir(image: &str) -> bool {
    !(image.contains("://") || image.starts_with('/'))
}

/// Quotes a value for bash so that it arrives literally: single quotes, with each `'` written
/// as `'\''`. Newlines, `$(...)`, backticks and double quotes need nothing more.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Reads the spec back from a script rendered by [`render`].
pub fn spec_of_script(script: &str) -> Option<ReplicaSpec> {
    let line = script
        .lines()
        .find_map(|l| l.strip_prefix(SPEC_LINE_PREFIX))?;
    serde_json::from_str(line).ok()
}
