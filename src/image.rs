//! The image directory as stackctl sees it from where it runs (IO): which images are built
//! and which builds failed, with the tail of their logs. The image steps themselves are
//! decided purely in [`crate::plan::images::image_steps`].
//!
//! `image_dir` and `log_dir` must be readable here (shared storage, as the compute nodes that
//! build and run the images need anyway); over SSH or REST a directory that is not readable
//! here reads as empty, so images are built again rather than assumed.

use crate::plan::images::{ImageFiles, ImageKey};
use std::path::Path;

/// How many lines of a failed build's log a plan shows.
pub const TAIL_LINES: usize = 5;

/// Reads `image_dir`: `<name>.built` and `<name>.failed` records, and for each failed one
/// the last [`TAIL_LINES`] lines of `<log_dir>/image.<name>.log`.
pub fn observe(image_dir: &Path, log_dir: &Path) -> ImageFiles {
    let mut files = ImageFiles::default();
    let Ok(entries) = std::fs::read_dir(image_dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(built) = name.strip_suffix(".built") {
            files.built.insert(built.to_owned());
        } else if let Some(failed) = name.strip_suffix(".failed") {
            let record = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let log = log_dir.join(format!("image.{failed}.log"));
            files
                .failed
                .insert(failed.to_owned(), (record.trim().to_owned(), tail(&log)));
        }
    }
    files
}

/// Whether any service of `desired` runs an image built from a definition.
pub fn any_built(desired: &crate::desired::Desired) -> bool {
    desired
        .services
        .values()
        .any(|s| s.spec.container.as_ref().is_some_and(|c| c.build.is_some()))
}

/// Adds the image steps to `plan`: reads `image_dir` and takes the build jobs from `records`
/// (the listing), then [`crate::plan::Plan::add_images`].
pub fn add_to_plan(
    plan: &mut crate::plan::Plan,
    owner: &crate::desired::Owner,
    desired: &crate::desired::Desired,
    records: &[crate::observed::JobRecord],
    ctx: &crate::render::script::ScriptContext,
) {
    let files = observe(&ctx.image_dir, &ctx.log_dir);
    let builds: Vec<_> = records
        .iter()
        .filter(|r| r.comment.starts_with(crate::plan::images::BUILD_PREFIX))
        .cloned()
        .collect();
    let steps = crate::plan::images::image_steps(owner, desired, &builds, &files);
    plan.add_images(steps, &ctx.log_dir);
}

/// The last [`TAIL_LINES`] non-empty lines of a file (empty when it cannot be read).
fn tail(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// The build log of an image, as `stackctl logs image/<name>` shows it: the newest
/// `image.<name>-<hash>.log` under `log_dir`.
pub fn newest_log(log_dir: &Path, image: &str) -> Option<std::path::PathBuf> {
    let prefix = format!("image.{image}-");
    std::fs::read_dir(log_dir)
        .ok()?
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix) && name.ends_with(".log")
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

/// The log of one image key, under `log_dir`.
pub fn log_of(log_dir: &Path, key: &ImageKey) -> std::path::PathBuf {
    log_dir.join(key.log_name())
}

/// One built image under `image_dir`, as `stackctl images` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The built name, `<image>-<hash>` (`.sif` for Apptainer).
    pub name: String,
    /// The runtime it was built for, as far as its form tells: a `.sif` is Apptainer's, a
    /// directory Charliecloud's, a store entry (an empty file) Podman's.
    pub runtime: crate::container::Runtime,
    /// Bytes on disk (a directory's files summed).
    pub size: u64,
    /// When it was built (unix seconds, from its `.built` record's time).
    pub built_at: Option<i64>,
    /// The services of this repo that run it.
    pub used_by: Vec<crate::desired::ServiceAddr>,
}

/// Lists the built images under `image_dir`, with the services of `desired` that use each.
pub fn list(image_dir: &Path, desired: &crate::desired::Desired) -> Vec<BuiltImage> {
    use crate::container::{Runtime, built_image_name};
    let files = observe(image_dir, Path::new("/nonexistent"));
    files
        .built
        .iter()
        .map(|name| {
            let path = image_dir.join(name);
            let runtime = if name.ends_with(".sif") {
                Runtime::Apptainer
            } else if path.is_dir() {
                Runtime::Charliecloud
            } else {
                Runtime::Podman
            };
            let record = std::fs::read_to_string(image_dir.join(format!("{name}.built")))
                .unwrap_or_default();
            let built_at = record
                .split_whitespace()
                .nth(1)
                .and_then(|t| t.parse().ok());
            let used_by = desired
                .services
                .iter()
                .filter(|(_, s)| {
                    let (Some(c), Some(image)) = (&s.spec.container, &s.spec.image) else {
                        return false;
                    };
                    c.build
                        .as_ref()
                        .is_some_and(|d| &built_image_name(image, d, c.runtime) == name)
                })
                .map(|(a, _)| a.clone())
                .collect();
            BuiltImage {
                name: name.clone(),
                runtime,
                size: disk_size(&path),
                built_at,
                used_by,
            }
        })
        .collect()
}

/// Bytes under `path` (symlinks not followed).
fn disk_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| disk_size(&e.path())).sum())
        .unwrap_or(0)
}

/// Removes a built image and its records (`--prune`).
pub fn remove(image_dir: &Path, name: &str) -> std::io::Result<()> {
    let path = image_dir.join(name);
    if path.is_dir() {
        std::fs::remove_dir_all(&path)?;
    } else if path.exists() {
        std::fs::remove_file(&path)?;
    }
    for suffix in [".built", ".failed"] {
        let record = image_dir.join(format!("{name}{suffix}"));
        if record.exists() {
            std::fs::remove_file(record)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_and_failed_records_are_read_with_the_log_tail() {
        let images = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        std::fs::write(images.path().join("web-0011223344556677.built"), "7 1\n").unwrap();
        std::fs::write(
            images.path().join("api-8899aabbccddeeff.failed"),
            "9 ch-image build\n",
        )
        .unwrap();
        std::fs::create_dir(images.path().join("api-8899aabbccddeeff")).unwrap();
        let log: String = (1..=8).map(|i| format!("line {i}\n")).collect();
        std::fs::write(logs.path().join("image.api-8899aabbccddeeff.log"), log).unwrap();
        let files = observe(images.path(), logs.path());
        assert_eq!(
            files.built.iter().collect::<Vec<_>>(),
            ["web-0011223344556677"]
        );
        let (record, tail) = &files.failed["api-8899aabbccddeeff"];
        assert_eq!(record, "9 ch-image build");
        assert_eq!(tail, "line 4\nline 5\nline 6\nline 7\nline 8");
        assert_eq!(
            newest_log(logs.path(), "api").unwrap(),
            logs.path().join("image.api-8899aabbccddeeff.log")
        );
        assert!(newest_log(logs.path(), "ap").is_none());
    }

    #[test]
    fn built_images_are_listed_with_their_users_and_pruned_with_their_records() {
        let images = tempfile::tempdir().unwrap();
        let dir = images.path();
        std::fs::create_dir_all(dir.join("web-0011223344556677/etc")).unwrap();
        std::fs::write(dir.join("web-0011223344556677/etc/x"), "12345").unwrap();
        std::fs::write(dir.join("web-0011223344556677.built"), "7 1764000000\n").unwrap();
        std::fs::write(dir.join("vllm-8899aabbccddeeff.sif"), "123").unwrap();
        std::fs::write(
            dir.join("vllm-8899aabbccddeeff.sif.built"),
            "8 1764000100\n",
        )
        .unwrap();
        let desired = crate::desired::Desired::default();
        let listed = list(dir, &desired);
        let names: Vec<(&str, crate::container::Runtime, u64, Option<i64>)> = listed
            .iter()
            .map(|i| (i.name.as_str(), i.runtime, i.size, i.built_at))
            .collect();
        use crate::container::Runtime::*;
        assert_eq!(
            names,
            [
                ("vllm-8899aabbccddeeff.sif", Apptainer, 3, Some(1764000100)),
                ("web-0011223344556677", Charliecloud, 5, Some(1764000000)),
            ]
        );
        assert!(listed.iter().all(|i| i.used_by.is_empty()));
        remove(dir, "web-0011223344556677").unwrap();
        assert!(!dir.join("web-0011223344556677").exists());
        assert!(!dir.join("web-0011223344556677.built").exists());
        assert_eq!(list(dir, &desired).len(), 1);
    }
}
