//! What stackctl reads from the checkout it runs in, through git2: the commit (for the plan's
//! header) and the remote URL (for the owner). Fetching and fast-forwarding, which only
//! `watch` does, are in `watch::git_sync`.

use std::path::Path;

/// Initialises libgit2 without parsing the system's CA bundle. libgit2 sets up OpenSSL when
/// it starts and OpenSSL then reads every certificate of `SSL_CERT_FILE` (about 30 ms), which
/// plan, apply and validate never use: they read the local checkout only. So libgit2 starts
/// here with `SSL_CERT_FILE` pointing at an empty file, then the variable is restored (children
/// such as sbatch and the jobs inherit the caller's environment unchanged). The certificate
/// directory (hashed, read only when a certificate is checked) stays configured, and `watch`
/// loads the bundle itself before its first fetch (`watch::git_sync::load_ca_certificates`).
///
/// Only the binary calls this, while the process has one thread (the environment changes for
/// a moment); calls after the first do nothing.
#[allow(unsafe_code)]
pub fn init_without_ca_bundle() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        const VARS: [&str; 2] = ["SSL_CERT_FILE", "SSL_CERT_DIR"];
        let saved = VARS.map(std::env::var_os);
        // SAFETY: the binary calls this before any other thread exists (from main right after
        // the arguments are parsed, or from `plan` before anything starts a thread), so no
        // thread can read the environment while it changes.
        unsafe { std::env::set_var("SSL_CERT_FILE", "/dev/null") };
        // Any libgit2 call starts it once per process; caching is on by default, so this one
        // changes nothing else.
        git2::opts::enable_caching(true);
        for (name, value) in VARS.iter().zip(saved) {
            // SAFETY: as above, still before any other thread exists.
            unsafe {
                match value {
                    Some(value) => std::env::set_var(name, value),
                    None => std::env::remove_var(name),
                }
            }
        }
    });
}

/// Returns the checkout's commit and whether it has uncommitted changes under `dir`
/// (untracked files included); `None` outside a git repo or before the first commit.
pub fn head(dir: &Path) -> Option<crate::plan::Source> {
    let repo = git2::Repository::discover(dir).ok()?;
    let commit = repo.head().ok()?.peel_to_commit().ok()?;
    let id = commit.id().to_string();
    let mut options = git2::StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
    // Only changes under `dir` count, as `git status -- .` run there would show.
    let prefix = repo.workdir().and_then(|root| {
        let dir = dir.canonicalize().ok()?;
        let root = root.canonicalize().ok()?;
        dir.strip_prefix(&root).ok().map(Path::to_owned)
    });
    if let Some(prefix) = prefix.as_ref().filter(|p| !p.as_os_str().is_empty()) {
        options.pathspec(prefix);
    }
    let dirty = repo
        .statuses(Some(&mut options))
        .is_ok_and(|s| !s.is_empty());
    Some(crate::plan::Source {
        commit: id[..12].to_owned(),
        dirty,
    })
}

/// Returns the URL of the repo's `origin` remote, or of its only remote; `None` when there is
/// no git repo, no remote, or several remotes and none is `origin`.
pub fn remote_url(dir: &Path) -> Option<String> {
    let repo = git2::Repository::discover(dir).ok()?;
    let remotes = repo.remotes().ok()?;
    let names: Vec<&str> = remotes.iter().flatten().collect();
    let name = if names.contains(&"origin") {
        "origin"
    } else if let [only] = names.as_slice() {
        only
    } else {
        return None;
    };
    let remote = repo.find_remote(name).ok()?;
    remote
        .url()
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit_all(repo: &git2::Repository, message: &str) {
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let me = git2::Signature::now("test", "test@example.org").unwrap();
        let parents: Vec<git2::Commit> = repo
            .head()
            .ok()
            .and_then(|h| h.peel_to_commit().ok())
            .into_iter()
            .collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(Some("HEAD"), &me, &me, message, &tree, &parents)
            .unwrap();
    }

    #[test]
    fn head_names_the_commit_and_sees_changes_only_under_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        assert_eq!(head(dir.path()), None, "no commit yet");
        std::fs::create_dir_all(dir.path().join("infra/stacks")).unwrap();
        std::fs::write(dir.path().join("infra/stacks/a.yaml"), "services: {}\n").unwrap();
        std::fs::write(dir.path().join("README"), "x\n").unwrap();
        commit_all(&repo, "first");
        let id = repo.head().unwrap().target().unwrap().to_string();
        let clean = head(&dir.path().join("infra")).unwrap();
        assert_eq!(clean.commit, id[..12]);
        assert!(!clean.dirty);
        std::fs::write(dir.path().join("README"), "changed\n").unwrap();
        assert!(
            !head(&dir.path().join("infra")).unwrap().dirty,
            "a change outside the directory"
        );
        assert!(head(dir.path()).unwrap().dirty, "seen from the root");
        std::fs::write(dir.path().join("infra/stacks/b.yaml"), "services: {}\n").unwrap();
        assert!(
            head(&dir.path().join("infra")).unwrap().dirty,
            "an untracked file under the directory"
        );
    }

    #[test]
    fn remote_url_prefers_origin_then_the_only_remote() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        assert_eq!(remote_url(dir.path()), None, "no remote");
        repo.remote("upstream", "https://example.org/a/b.git")
            .unwrap();
        assert_eq!(
            remote_url(dir.path()).as_deref(),
            Some("https://example.org/a/b.git"),
            "the only remote"
        );
        repo.remote("fork", "https://example.org/c/d.git").unwrap();
        assert_eq!(remote_url(dir.path()), None, "two remotes, no origin");
        repo.remote("origin", "git@example.org:e/f").unwrap();
        assert_eq!(
            remote_url(dir.path()).as_deref(),
            Some("git@example.org:e/f")
        );
    }
}
