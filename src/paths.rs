//! Paths in settings: `~` expansion, shared by the repo loader and the secret store. Pure.

use std::path::PathBuf;

/// Returns `path` with a leading `~` replaced by `home`.
pub fn expand_home(path: &str, home: Option<&str>) -> PathBuf {
    match (path.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            PathBuf::from(format!("{home}{rest}"))
        }
        _ => PathBuf::from(path),
    }
}
