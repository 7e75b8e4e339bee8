//! Where the loop's desired state comes from: a branch of a git repo (fetched, the checkout
//! moved to it, each new commit exported and validated on its own) or the files of a
//! directory (`--local`). Both keep the last valid desired state, so an invalid commit or a
//! half-saved edit never stops the loop from healing drift.
//!
//! In git mode the remote branch is the desired state: what the loop applies is the commit
//! the branch points to, a rewritten history included, even when the checkout itself cannot
//! be moved (local changes, another branch checked out); that checkout is reported
//! (`/status`'s `checkout_held`, `stackctl_checkout_up_to_date 0`).

use super::Wake;
use super::git_sync::{self, Checkout, GitSync};
use super::state::{ErrorRecord, WatchState};
use crate::desired::{Repo, layout};
use crate::plan::Source;
use crate::reconcile;
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::Sender;

/// How far back along first parents a restarted loop looks for a valid commit when the
/// checkout's own commit is invalid.
const MAX_WALK_BACK: usize = 20;

/// A desired state the loop converges to.
pub struct Target {
    /// The validated repo.
    pub repo: Repo,
    /// The commit it was read from (full id), in git mode.
    pub commit: Option<String>,
    /// What the plan names as its source.
    pub source: Option<Source>,
    /// Identifies the desired state: owner, services, replicas and spec hashes.
    pub fingerprint: String,
}

impl Target {
    fn new(repo: Repo, commit: Option<String>, source: Option<Source>) -> Target {
        let mut fingerprint = repo.settings.owner.to_string();
        for (addr, service) in &repo.desired.services {
            fingerprint.push_str(&format!("\n{addr} {} {}", service.replicas, service.hash));
        }
        Target {
            repo,
            commit,
            source,
            fingerprint,
        }
    }

    /// The commit as logs show it.
    pub fn commit_short(&self) -> Option<&str> {
        self.commit.as_deref().map(git_sync::short)
    }
}

/// The loop's source of desired state.
pub enum Follow {
    /// A branch of a git repo.
    Git(GitFollow),
    /// The files of a directory, reloaded on every change.
    Local(LocalFollow),
}

impl Follow {
    /// Follows `remote`/`branch` in the checkout at `dir`.
    pub fn git(dir: &Path, remote: &str, branch: &str) -> Result<Follow> {
        let sync = GitSync::open(dir, remote, branch).map_err(|e| match e {
            git_sync::SyncError::Open { .. } => anyhow::anyhow!(
                "{e} (watch follows a git checkout; --local follows the files of a directory)"
            ),
            e => e.into(),
        })?;
        Ok(Follow::Git(GitFollow {
            sync,
            dir: dir.to_owned(),
            current: None,
            rejected: BTreeSet::new(),
            held: None,
            newest_invalid: false,
            sync_failed: false,
        }))
    }

    /// Follows the files under `dir`; a change to `stackctl.yaml`, `stacks/` or `recipes/`
    /// sends [`Wake::Files`].
    pub fn local(dir: &Path, wake: Sender<Wake>) -> Result<Follow> {
        let watcher = watch_files(dir, wake)?;
        Ok(Follow::Local(LocalFollow {
            dir: dir.to_owned(),
            current: None,
            error: None,
            _watcher: watcher,
        }))
    }

    /// Brings the desired state up to date; returns whether it changed.
    pub fn refresh(&mut self, state: &Mutex<WatchState>) -> bool {
        match self {
            Follow::Git(git) => git.refresh(state),
            Follow::Local(local) => local.refresh(state),
        }
    }

    /// Why the newest desired state is not the one being converged to, if it is not: the
    /// remote could not be fetched, the newest commit (or the files) are invalid. `--once`
    /// exits 1 then, even when it healed from the last valid state.
    pub fn problem(&self) -> Option<&'static str> {
        match self {
            Follow::Git(git) if git.sync_failed => Some("the remote could not be fetched"),
            Follow::Git(git) if git.newest_invalid => Some("the newest commit is invalid"),
            Follow::Local(local) if local.error.is_some() => Some("the files are invalid"),
            _ => None,
        }
    }

    /// The desired state to converge to, once one was valid.
    pub fn target(&self) -> Option<&Target> {
        match self {
            Follow::Git(git) => git.current.as_ref(),
            Follow::Local(local) => local.current.as_ref(),
        }
    }
}

/// Following a git branch.
pub struct GitFollow {
    sync: GitSync,
    dir: PathBuf,
    current: Option<Target>,
    /// Commits that failed validation, never tried again.
    rejected: BTreeSet<String>,
    /// Why the checkout was last left alone, to log it once.
    held: Option<String>,
    /// Whether the newest commit the branch (or HEAD) offered failed validation.
    newest_invalid: bool,
    /// Whether the last sync with the remote failed.
    sync_failed: bool,
}

impl GitFollow {
    fn refresh(&mut self, state: &Mutex<WatchState>) -> bool {
        let serving = self
            .current
            .as_ref()
            .and_then(Target::commit_short)
            .unwrap_or("nothing yet")
            .to_owned();
        let synced = self.sync.sync();
        self.sync_failed = synced.is_err();
        lock(state).sync_error = synced.as_ref().err().map(ToString::to_string);
        let candidate = match synced {
            Ok(Checkout::Current { commit, moved_from }) => {
                if let Some(from) = moved_from {
                    tracing::info!(
                        from = git_sync::short(&from),
                        to = git_sync::short(&commit),
                        "fast-forwarded the checkout"
                    );
                }
                if self.held.take().is_some() {
                    lock(state).checkout_held = None;
                }
                Some(commit)
            }
            Ok(Checkout::Reset {
                commit,
                from,
                dropped,
            }) => {
                tracing::warn!(
                    from = git_sync::short(&from),
                    to = git_sync::short(&commit),
                    dropped,
                    "the remote branch was rewritten (force-push): reset the checkout to it, \
                     dropping {dropped} commit{} the branch no longer has",
                    if dropped == 1 { "" } else { "s" }
                );
                if self.held.take().is_some() {
                    lock(state).checkout_held = None;
                }
                Some(commit)
            }
            Ok(Checkout::Held {
                head: _,
                remote,
                reason,
            }) => {
                if self.held.as_ref() != Some(&reason) {
                    tracing::warn!(
                        remote = git_sync::short(&remote),
                        serving = %serving,
                        "the checkout {reason}; it was not updated (the remote branch's commit \
                         is applied all the same)"
                    );
                    self.held = Some(reason.clone());
                }
                lock(state).checkout_held = Some(reason);
                // The branch is the desired state, whatever the checkout holds: its commit is
                // read from git's objects, never from the working tree.
                Some(remote)
            }
            Err(error) => {
                tracing::warn!(%error, serving = %serving, "cannot sync with the remote");
                if self.current.is_some() {
                    None
                } else {
                    self.sync.head().ok().flatten()
                }
            }
        };
        let Some(candidate) = candidate else {
            return false;
        };
        if self.current.as_ref().and_then(|t| t.commit.as_ref()) == Some(&candidate) {
            self.newest_invalid = false;
            return false;
        }
        if self.rejected.contains(&candidate) {
            self.newest_invalid = true;
            return false;
        }
        self.newest_invalid = false;
        match self.load(&candidate) {
            Ok(target) => {
                lock(state).rejected_commit = None;
                self.current = Some(target);
                true
            }
            Err(message) => {
                tracing::error!(
                    commit = git_sync::short(&candidate),
                    serving = %serving,
                    "commit {} is invalid and is not applied:\n{message}",
                    git_sync::short(&candidate)
                );
                lock(state).rejected_commit = Some(ErrorRecord {
                    at_unix: super::now_unix(),
                    commit: Some(git_sync::short(&candidate).to_owned()),
                    kind: "configuration",
                    message,
                });
                self.rejected.insert(candidate.clone());
                self.newest_invalid = true;
                // After a restart, or a force-push that left the commit being served out of the
                // branch: the newest valid commit the branch has.
                let orphaned = self
                    .current
                    .as_ref()
                    .and_then(|t| t.commit.as_deref())
                    .is_some_and(|c| !self.sync.contains(&candidate, c).unwrap_or(true));
                if (self.current.is_none() || orphaned)
                    && let Some(target) = self.walk_back(&candidate)
                {
                    self.current = Some(target);
                    return true;
                }
                false
            }
        }
    }

    /// Exports `commit` and validates it on its own.
    fn load(&self, commit: &str) -> Result<Target, String> {
        let files = tempfile::tempdir().map_err(|e| format!("cannot make a directory: {e}"))?;
        self.sync
            .export(commit, files.path())
            .map_err(|e| e.to_string())?;
        let repo = reconcile::load_files(files.path(), &self.dir).map_err(|e| e.to_string())?;
        let source = Source {
            commit: git_sync::short(commit).to_owned(),
            dirty: false,
        };
        Ok(Target::new(repo, Some(commit.to_owned()), Some(source)))
    }

    /// After a restart on an invalid commit, or a force-push to one: the newest valid
    /// first-parent ancestor.
    fn walk_back(&mut self, from: &str) -> Option<Target> {
        let mut commit = from.to_owned();
        for _ in 0..MAX_WALK_BACK {
            commit = self.sync.first_parent(&commit).ok().flatten()?;
            match self.load(&commit) {
                Ok(target) => {
                    tracing::warn!(
                        commit = git_sync::short(&commit),
                        "converging to the newest valid commit before it"
                    );
                    return Some(target);
                }
                Err(_) => {
                    self.rejected.insert(commit.clone());
                }
            }
        }
        None
    }
}

/// Following the files of a directory.
pub struct LocalFollow {
    dir: PathBuf,
    current: Option<Target>,
    /// The last load error, to log each distinct one once.
    error: Option<String>,
    _watcher: notify::RecommendedWatcher,
}

impl LocalFollow {
    fn refresh(&mut self, state: &Mutex<WatchState>) -> bool {
        match reconcile::load(&self.dir) {
            Ok(repo) => {
                if self.error.take().is_some() {
                    lock(state).rejected_commit = None;
                }
                let target = Target::new(repo, None, crate::git::head(&self.dir));
                let changed = self
                    .current
                    .as_ref()
                    .is_none_or(|c| c.fingerprint != target.fingerprint);
                self.current = Some(target);
                changed
            }
            Err(error) => {
                let message = error.to_string();
                if self.error.as_ref() != Some(&message) {
                    tracing::error!(
                        "the files are invalid and are not applied; still converging to the \
                         last valid state:\n{message}"
                    );
                    lock(state).rejected_commit = Some(ErrorRecord {
                        at_unix: super::now_unix(),
                        commit: None,
                        kind: "configuration",
                        message: message.clone(),
                    });
                    self.error = Some(message);
                }
                false
            }
        }
    }
}

/// Watches `stackctl.yaml`, `stacks/` and `recipes/` under `dir`.
fn watch_files(dir: &Path, wake: Sender<Wake>) -> Result<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let root = dir
        .canonicalize()
        .with_context(|| format!("cannot watch {}", dir.display()))?;
    let relevant_root = root.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        let relevant = event.paths.iter().any(|path| {
            path.strip_prefix(&relevant_root).is_ok_and(|rel| {
                rel == Path::new(layout::CONFIG_FILE)
                    || rel.starts_with(layout::STACKS_DIR)
                    || rel.starts_with(layout::RECIPES_DIR)
            })
        });
        if relevant {
            let _ = wake.send(Wake::Files);
        }
    })
    .context("cannot start watching files")?;
    // The root non-recursively (stackctl.yaml, and stacks/ or recipes/ being created), the two
    // folders recursively; never target/ or .git/.
    watcher
        .watch(&root, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", root.display()))?;
    for folder in [layout::STACKS_DIR, layout::RECIPES_DIR] {
        let path = root.join(folder);
        if path.is_dir() {
            watcher
                .watch(&path, RecursiveMode::Recursive)
                .with_context(|| format!("cannot watch {}", path.display()))?;
        }
    }
    Ok(watcher)
}

fn lock(state: &Mutex<WatchState>) -> std::sync::MutexGuard<'_, WatchState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}
