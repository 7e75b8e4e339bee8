//! The only code that asks git anything.

use std::path::Path;
use std::process::Command;

/// Returns the URL of the repo's `origin` remote, or of its only remote; `None` when there is
/// no git repo, no remote, or several remotes and none is `origin`.
pub fn remote_url(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let output = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let remotes = git(&["remote"])?;
    let remotes: Vec<&str> = remotes.lines().collect();
    let name = if remotes.contains(&"origin") {
        "origin"
    } else if let [only] = remotes.as_slice() {
        only
    } else {
        return None;
    };
    git(&["remote", "get-url", name]).filter(|url| !url.is_empty())
}
