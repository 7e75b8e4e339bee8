//! The only code that asks git anything.

use std::path::Path;
use std::process::Command;

/// Runs git in `dir`; returns its trimmed stdout when it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
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
}

/// Returns the checkout's commit and whether it has uncommitted changes; `None` outside a git
/// repo or before the first commit.
pub fn head(dir: &Path) -> Option<crate::plan::Source> {
    let commit = git(dir, &["rev-parse", "--short=12", "HEAD"])?;
    let dirty = git(dir, &["status", "--porcelain", "--", "."]).is_none_or(|s| !s.is_empty());
    Some(crate::plan::Source { commit, dirty })
}

/// Returns the URL of the repo's `origin` remote, or of its only remote; `None` when there is
/// no git repo, no remote, or several remotes and none is `origin`.
pub fn remote_url(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| git(dir, args);
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
