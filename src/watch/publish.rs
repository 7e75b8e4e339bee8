//! `watch --write-endpoints FILE:FORMAT`: after every reconcile that listed the cluster, the
//! ready replicas' endpoints are rendered ([`crate::render::endpoints`]) and each file is
//! rewritten atomically (a temporary file in the same directory, fsync, rename), and only when
//! its content changed, so file watchers such as Prometheus or Traefik see one complete
//! version per change and no churn.

use crate::desired::Desired;
use crate::observed::Observed;
use crate::render::endpoints::{self, Format};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// One `--write-endpoints` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointsFile {
    /// Where the file is written.
    pub path: PathBuf,
    /// What it holds.
    pub format: Format,
}

impl FromStr for EndpointsFile {
    type Err = String;

    /// Parses `FILE:FORMAT`; the format is what follows the last `:`.
    fn from_str(text: &str) -> Result<EndpointsFile, String> {
        let Some((path, format)) = text.rsplit_once(':') else {
            return Err(format!(
                "expected FILE:FORMAT (e.g. /shared/endpoints.yaml:traefik), got {text:?}"
            ));
        };
        if path.is_empty() {
            return Err(format!("no file before the format in {text:?}"));
        }
        let path = PathBuf::from(path);
        if path.file_name().is_none() {
            return Err(format!("{} names no file", path.display()));
        }
        Ok(EndpointsFile {
            path,
            format: format.parse()?,
        })
    }
}

/// Renders and writes every file; a failure is logged and never fails the reconcile.
pub fn write_all(files: &[EndpointsFile], desired: &Desired, observed: &Observed) {
    if files.is_empty() {
        return;
    }
    let services = endpoints::collect(desired, observed);
    for file in files {
        let text = endpoints::render(&services, file.format);
        match write_if_changed(&file.path, text.as_bytes()) {
            Ok(true) => tracing::info!(file = %file.path.display(), "endpoints written"),
            Ok(false) => tracing::debug!(file = %file.path.display(), "endpoints unchanged"),
            Err(error) => tracing::error!(
                file = %file.path.display(),
                "cannot write the endpoints file: {error}"
            ),
        }
    }
}

/// Replaces `path` with `content` atomically unless it already holds exactly that: writes a
/// temporary file in the same directory, fsyncs it, renames it over `path` and fsyncs the
/// directory. A new file is readable by everyone (0644); a replaced one keeps its mode.
/// Returns whether the file was written.
pub fn write_if_changed(path: &Path, content: &[u8]) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let existing = match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if existing.as_deref() == Some(content) {
        return Ok(false);
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mode = match std::fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(_) => 0o644,
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".stackctl-endpoints-")
        .tempfile_in(dir)?;
    temp.write_all(content)?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn a_file_is_written_when_new_or_changed_and_left_alone_when_equal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("endpoints.json");
        assert!(write_if_changed(&path, b"one\n").unwrap(), "new file");
        assert_eq!(std::fs::read(&path).unwrap(), b"one\n");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let inode = std::fs::metadata(&path).unwrap().ino();
        assert!(!write_if_changed(&path, b"one\n").unwrap(), "same content");
        assert_eq!(
            std::fs::metadata(&path).unwrap().ino(),
            inode,
            "an unchanged file is not replaced"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(write_if_changed(&path, b"two\n").unwrap(), "changed");
        assert_eq!(std::fs::read(&path).unwrap(), b"two\n");
        let meta = std::fs::metadata(&path).unwrap();
        assert_ne!(
            meta.ino(),
            inode,
            "replaced by rename, not rewritten in place"
        );
        assert_eq!(meta.permissions().mode() & 0o777, 0o640, "mode kept");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["endpoints.json"], "no temporary file left behind");
    }

    #[test]
    fn a_write_into_a_missing_directory_fails_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/endpoints.yaml");
        assert!(write_if_changed(&path, b"x").is_err());
        assert!(!path.exists());
    }

    #[test]
    fn targets_parse_as_file_colon_format() {
        assert_eq!(
            "/shared/a:b/endpoints.yaml:traefik".parse(),
            Ok(EndpointsFile {
                path: "/shared/a:b/endpoints.yaml".into(),
                format: Format::Traefik,
            })
        );
        let error = "/x/endpoints.yaml:yaml"
            .parse::<EndpointsFile>()
            .unwrap_err();
        assert!(
            error.contains("unknown endpoints format \"yaml\""),
            "{error}"
        );
        let error = "endpoints.json".parse::<EndpointsFile>().unwrap_err();
        assert!(error.contains("FILE:FORMAT"), "{error}");
        assert!(":json".parse::<EndpointsFile>().is_err());
        assert!("/tmp/..:json".parse::<EndpointsFile>().is_err());
    }
}
