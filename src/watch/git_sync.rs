//! The watch loop's git adapter: fetches the followed branch into a checkout, moves the
//! checkout to the remote branch for the humans who look at it (a fast-forward, or a hard reset
//! when the remote history was rewritten; never over local changes, never a merge), and exports
//! the files stackctl reads from one commit's tree, so what the loop applies is exactly a commit.
//! The one-shot commands keep asking git through [`crate::git`]; this module talks to libgit2.

use git2::build::CheckoutBuilder;
use git2::{
    AutotagOption, CheckoutNotificationType, Config, Cred, CredentialType, ErrorCode, FetchOptions,
    FetchPrune, ObjectType, Oid, ProxyOptions, RemoteCallbacks, Repository, Status, StatusOptions,
    Tree, TreeEntry,
};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The environment variable whose value, when set, is the password for https remotes.
const TOKEN_ENV: &str = "STACKCTL_GIT_TOKEN";

/// How many times libgit2 may ask for each kind of credential in one fetch before we give up.
const MAX_ATTEMPTS: u32 = 2;

/// The paths of a commit stackctl reads: the top-level file, then the top-level directories.
const EXPORTED_FILE: &str = "stackctl.yaml";
const EXPORTED_DIRS: [&str; 2] = ["stacks", "recipes"];

/// How many paths a [`Checkout::Held`] reason names before it says "and N more".
const NAMED_PATHS: usize = 5;

/// A checkout at DIR following `remote`/`branch`.
pub struct GitSync {
    /// Behind a mutex so the loop can share one `GitSync` between threads; `sync` also swaps in a
    /// freshly opened repository each time (see [`GitSync::sync`]).
    inner: Mutex<Inner>,
}

/// The open repository and what it follows.
struct Inner {
    repo: Repository,
    dir: PathBuf,
    remote: String,
    branch: String,
}

/// Why the git adapter could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// DIR is not the worktree of a git repository libgit2 can open.
    #[error("cannot open the git checkout at {}: {message}", dir.display())]
    Open {
        /// The checkout.
        dir: PathBuf,
        /// libgit2's message, or why the repository is not usable.
        message: String,
    },
    /// The checkout has no remote of that name.
    #[error("the git checkout at {} has no remote named {remote:?}: {message}", dir.display())]
    NoRemote {
        /// The checkout.
        dir: PathBuf,
        /// The remote asked for.
        remote: String,
        /// libgit2's message.
        message: String,
    },
    /// The branch name is not one git accepts.
    #[error("{branch:?} is not a valid git branch name")]
    InvalidBranch {
        /// The branch asked for.
        branch: String,
    },
    /// Fetching failed: network, authentication, or a remote that is not a git repository.
    #[error("cannot fetch branch {branch} from remote {remote} ({url}): {message}")]
    Fetch {
        /// The remote's name.
        remote: String,
        /// The remote's URL, without any password in it.
        url: String,
        /// The branch being fetched.
        branch: String,
        /// libgit2's message (credentials never appear in it).
        message: String,
    },
    /// The remote answered but has no such branch.
    #[error("remote {remote} ({url}) has no branch {branch}")]
    NoRemoteBranch {
        /// The remote's name.
        remote: String,
        /// The remote's URL, without any password in it.
        url: String,
        /// The branch asked for.
        branch: String,
    },
    /// Reading the checkout's HEAD, refs or status failed.
    #[error("cannot {doing} in the git checkout at {}: {message}", dir.display())]
    Inspect {
        /// The checkout.
        dir: PathBuf,
        /// What was being done, e.g. `read HEAD`.
        doing: String,
        /// libgit2's message.
        message: String,
    },
    /// The checkout was clean and behind, but moving it failed.
    #[error("cannot fast-forward the git checkout at {} from {from} to {to}: {message}", dir.display())]
    FastForward {
        /// The checkout.
        dir: PathBuf,
        /// The commit it was at (or `an unborn branch`).
        from: String,
        /// The remote branch's commit.
        to: String,
        /// libgit2's message.
        message: String,
    },
    /// No such commit in the repository (or the prefix is ambiguous).
    #[error("no commit {commit} in the git checkout at {}: {message}", dir.display())]
    UnknownCommit {
        /// The commit asked for.
        commit: String,
        /// The checkout.
        dir: PathBuf,
        /// libgit2's message.
        message: String,
    },
    /// Writing a commit's files out failed.
    #[error("cannot export {path} of commit {commit} into {}: {message}", dest.display())]
    Export {
        /// The commit being exported.
        commit: String,
        /// The path inside the commit (`.` for the export as a whole).
        path: String,
        /// The destination directory.
        dest: PathBuf,
        /// The IO or libgit2 message.
        message: String,
    },
    /// A path stackctl reads is a symlink in the commit; it is never followed.
    #[error(
        "commit {commit}: {path} is a symlink; stackctl reads only regular files from a commit \
         (replace the link with the file it points to)"
    )]
    Symlink {
        /// The commit.
        commit: String,
        /// The path of the symlink inside the commit.
        path: String,
    },
    /// A path stackctl reads is a submodule in the commit; it is never followed.
    #[error(
        "commit {commit}: {path} is a git submodule; stackctl reads only regular files from a \
         commit (vendor the files instead)"
    )]
    Submodule {
        /// The commit.
        commit: String,
        /// The path of the submodule inside the commit.
        path: String,
    },
}

/// What `sync` did to the checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkout {
    /// The checkout is at the remote branch's commit; `moved_from` is set when sync fast-forwarded it now.
    Current {
        /// The remote branch's commit (full hex).
        commit: String,
        /// The commit the checkout was at before this sync moved it (None when it did not move,
        /// or when it moved from an unborn branch).
        moved_from: Option<String>,
    },
    /// The remote branch no longer has the checkout's commit (a force-push rewrote or rewound
    /// it): the checkout was reset to the remote branch's commit, dropping the commits only the
    /// checkout had (git's reflog still has them).
    Reset {
        /// The remote branch's commit (full hex).
        commit: String,
        /// The commit the checkout (or its local branch) was at.
        from: String,
        /// How many commits the checkout had that the remote branch does not.
        dropped: usize,
    },
    /// The checkout was left alone; `reason` is one human sentence fragment
    /// (e.g. "has uncommitted changes to stacks/a.yaml, recipes/x/y.yaml",
    ///  "is on branch dev, not main",
    ///  "has untracked files the new commit would overwrite: stacks/b.yaml").
    Held {
        /// The commit HEAD points to (None on an unborn branch).
        head: Option<String>,
        /// The remote branch's commit.
        remote: String,
        /// Why the checkout was not moved.
        reason: String,
    },
}

/// Where HEAD is.
enum Head {
    /// HEAD names a branch that has no commit yet.
    Unborn,
    /// HEAD is on a branch (short name) at a commit.
    Branch(String, Oid),
    /// HEAD points straight at a commit.
    Detached(Oid),
}

impl GitSync {
    /// Opens the repo whose worktree is `dir`; checks the remote exists.
    pub fn open(dir: &Path, remote: &str, branch: &str) -> Result<GitSync, SyncError> {
        let open_error = |message: String| SyncError::Open {
            dir: dir.to_owned(),
            message,
        };
        let repo = Repository::open(dir).map_err(|e| open_error(e.message().to_owned()))?;
        if repo.is_bare() {
            return Err(open_error(
                "it is a bare repository; stackctl watch needs a checkout".to_owned(),
            ));
        }
        if !git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
            return Err(SyncError::InvalidBranch {
                branch: branch.to_owned(),
            });
        }
        if let Err(e) = repo.find_remote(remote) {
            return Err(SyncError::NoRemote {
                dir: dir.to_owned(),
                remote: remote.to_owned(),
                message: e.message().to_owned(),
            });
        }
        Ok(GitSync {
            inner: Mutex::new(Inner {
                repo,
                dir: dir.to_owned(),
                remote: remote.to_owned(),
                branch: branch.to_owned(),
            }),
        })
    }

    /// Fetches `branch` from `remote` into `refs/remotes/<remote>/<branch>`, then moves the
    /// checkout to it when it is clean and on `branch` (or on an unborn or detached HEAD): a
    /// fast-forward when it is behind, a hard reset when the remote history was rewritten (the
    /// checkout, or its local branch, has commits the remote branch does not: the remote
    /// branch is the desired state). Never overwrites local changes (tracked edits, untracked
    /// files in the way), never creates merge commits.
    ///
    /// Reopens the repository first: libgit2 keeps every pack file it has read open, and each
    /// fetch that brings commits adds a pack, so a repository held for the life of the loop would
    /// collect file descriptors (and hold on to packs a `git gc` deleted).
    pub fn sync(&self) -> Result<Checkout, SyncError> {
        let mut inner = self.lock();
        inner.repo = Repository::open(&inner.dir).map_err(|e| SyncError::Open {
            dir: inner.dir.clone(),
            message: e.message().to_owned(),
        })?;
        inner.sync()
    }

    /// The commit HEAD points to (full hex), or None on an unborn branch.
    pub fn head(&self) -> Result<Option<String>, SyncError> {
        Ok(self.lock().head_oid()?.map(|oid| oid.to_string()))
    }

    /// The first parent of `commit`, if any (the loop walks back to find the last valid commit after a restart).
    pub fn first_parent(&self, commit: &str) -> Result<Option<String>, SyncError> {
        let inner = self.lock();
        let found = inner.find_commit(commit)?;
        Ok(found.parent_ids().next().map(|id| id.to_string()))
    }

    /// Whether `commit` is in the history of `tip` (`tip` itself included).
    pub fn contains(&self, tip: &str, commit: &str) -> Result<bool, SyncError> {
        let inner = self.lock();
        let tip = inner.find_commit(tip)?.id();
        let commit = inner.find_commit(commit)?.id();
        Ok(tip == commit || inner.descends(tip, commit)?)
    }

    /// Writes the files of `commit` that stackctl reads — `stackctl.yaml`, everything under `stacks/` and `recipes/` — into `dest` (an empty directory), as regular files. Symlinks and submodules in those paths are an error naming the path (never followed).
    pub fn export(&self, commit: &str, dest: &Path) -> Result<(), SyncError> {
        let inner = self.lock();
        let found = inner.find_commit(commit)?;
        let export = Export {
            repo: &inner.repo,
            commit: found.id().to_string(),
            dest,
        };
        export.check_dest()?;
        let tree = found.tree().map_err(|e| export.error(".", e.message()))?;
        if let Some(entry) = tree.get_name(EXPORTED_FILE) {
            export.entry(&entry, EXPORTED_FILE, dest, false)?;
        }
        for name in EXPORTED_DIRS {
            if let Some(entry) = tree.get_name(name) {
                export.entry(&entry, name, dest, true)?;
            }
        }
        Ok(())
    }

    /// The state; a panic elsewhere while it was held leaves nothing half-done worth refusing.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    /// See [`GitSync::sync`].
    fn sync(&self) -> Result<Checkout, SyncError> {
        let target = self.fetch()?;
        let tracking = format!("{}/{}", self.remote, self.branch);
        let held = |head: Option<Oid>, reason: String| Checkout::Held {
            head: head.map(|h| h.to_string()),
            remote: target.to_string(),
            reason,
        };
        let head = self.read_head()?;
        let attached = matches!(head, Head::Branch(..));
        // The commit the checkout leaves and how many commits only it had, when the remote
        // history was rewritten.
        let mut rewritten: Option<(Oid, usize)> = None;
        let from = match head {
            Head::Branch(name, oid) if name != self.branch => {
                return Ok(held(
                    Some(oid),
                    format!("is on branch {name}, not {}", self.branch),
                ));
            }
            Head::Branch(_, oid) | Head::Detached(oid) if oid == target => {
                return Ok(Checkout::Current {
                    commit: target.to_string(),
                    moved_from: None,
                });
            }
            Head::Branch(_, oid) | Head::Detached(oid) => {
                if !self.descends(target, oid)? {
                    rewritten = Some((oid, self.only_local(oid, target, &tracking)?));
                }
                Some(oid)
            }
            Head::Unborn => None,
        };
        let branch_ref = format!("refs/heads/{}", self.branch);
        // Detached or unborn: the local branch is about to move too; it must not lose commits.
        let branch_at = self.ref_target(&branch_ref)?;
        if !attached
            && let Some(local) = branch_at
            && local != target
            && !self.descends(target, local)?
            && rewritten.is_none()
        {
            rewritten = Some((local, self.only_local(local, target, &tracking)?));
        }
        let dirty = self.dirty_paths()?;
        if !dirty.is_empty() {
            return Ok(held(
                from,
                format!("has uncommitted changes to {}", name_paths(&dirty)),
            ));
        }
        if let Some(blocking) = self.checkout(target)? {
            return Ok(held(from, blocking));
        }
        self.move_branch(
            &branch_ref,
            branch_at,
            target,
            from,
            attached,
            rewritten.is_some(),
        )?;
        Ok(match rewritten {
            Some((left, dropped)) => Checkout::Reset {
                commit: target.to_string(),
                from: left.to_string(),
                dropped,
            },
            None => Checkout::Current {
                commit: target.to_string(),
                moved_from: from.map(|f| f.to_string()),
            },
        })
    }

    /// Fetches the branch; returns the commit the remote has for it.
    fn fetch(&self) -> Result<Oid, SyncError> {
        let inspect = |doing: &str, e: git2::Error| self.inspect_error(doing, e);
        let mut remote = self
            .repo
            .find_remote(&self.remote)
            .map_err(|e| SyncError::NoRemote {
                dir: self.dir.clone(),
                remote: self.remote.clone(),
                message: e.message().to_owned(),
            })?;
        let raw_url = remote.url().unwrap_or("").to_owned();
        let url = redact_url(&raw_url);
        let token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
        let config = self
            .repo
            .config()
            .map_err(|e| inspect("read the git config", e))?;
        let mut asker = CredentialAsker::new(&config, token.as_deref(), &url);
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(|u, user, allowed| asker.ask(u, user, allowed));
        let mut proxy = ProxyOptions::new();
        proxy.auto();
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(callbacks)
            .proxy_options(proxy)
            .prune(FetchPrune::On)
            .download_tags(AutotagOption::None);
        let tracking_ref = format!("refs/remotes/{}/{}", self.remote, self.branch);
        let refspec = format!("+refs/heads/{}:{tracking_ref}", self.branch);
        let fetch_error = |message: &str| {
            let mut message = message.to_owned();
            if !raw_url.is_empty() {
                message = message.replace(&raw_url, &url);
            }
            if let Some(token) = &token {
                message = message.replace(token.as_str(), "***");
            }
            SyncError::Fetch {
                remote: self.remote.clone(),
                url: url.clone(),
                branch: self.branch.clone(),
                message,
            }
        };
        remote
            .fetch(
                &[&refspec],
                Some(&mut options),
                Some("stackctl watch: fetch"),
            )
            .map_err(|e| fetch_error(e.message()))?;
        drop(options);
        // Pruning removes the tracking ref when the remote no longer has the branch (only the
        // destination of our refspec is a candidate), so the ref is exactly what the remote
        // advertised. (`Remote::list` is not used: git2 0.20 builds a slice from a null pointer
        // when the remote advertises no refs at all.)
        let oid = self
            .ref_target(&tracking_ref)?
            .ok_or_else(|| SyncError::NoRemoteBranch {
                remote: self.remote.clone(),
                url: url.clone(),
                branch: self.branch.clone(),
            })?;
        self.repo.find_commit(oid).map_err(|e| {
            fetch_error(&format!("fetched commit {oid} is missing: {}", e.message()))
        })?;
        Ok(oid)
    }

    /// Where HEAD is.
    fn read_head(&self) -> Result<Head, SyncError> {
        match self.repo.head() {
            Ok(head) => {
                let oid = head
                    .target()
                    .ok_or_else(|| self.inspect_message("read HEAD", "HEAD has no target"))?;
                match head.shorthand().filter(|_| head.is_branch()) {
                    Some(name) => Ok(Head::Branch(name.to_owned(), oid)),
                    None => Ok(Head::Detached(oid)),
                }
            }
            Err(e) if e.code() == ErrorCode::UnbornBranch => Ok(Head::Unborn),
            Err(e) => Err(self.inspect_error("read HEAD", e)),
        }
    }

    /// HEAD's commit, None on an unborn branch.
    fn head_oid(&self) -> Result<Option<Oid>, SyncError> {
        Ok(match self.read_head()? {
            Head::Unborn => None,
            Head::Branch(_, oid) | Head::Detached(oid) => Some(oid),
        })
    }

    /// The commit a ref points to, None when it does not exist.
    fn ref_target(&self, name: &str) -> Result<Option<Oid>, SyncError> {
        match self.repo.refname_to_id(name) {
            Ok(oid) => Ok(Some(oid)),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.inspect_error(&format!("read {name}"), e)),
        }
    }

    /// Whether `commit` has `ancestor` in its history (false when they are equal).
    fn descends(&self, commit: Oid, ancestor: Oid) -> Result<bool, SyncError> {
        self.repo
            .graph_descendant_of(commit, ancestor)
            .map_err(|e| self.inspect_error(&format!("compare {ancestor} with {commit}"), e))
    }

    /// How many commits `local` has that `target` does not.
    fn only_local(&self, local: Oid, target: Oid, tracking: &str) -> Result<usize, SyncError> {
        let (ahead, _) = self
            .repo
            .graph_ahead_behind(local, target)
            .map_err(|e| self.inspect_error(&format!("compare {local} with {tracking}"), e))?;
        Ok(ahead)
    }

    /// Tracked files changed in the index or the worktree (untracked files do not count).
    fn dirty_paths(&self) -> Result<Vec<String>, SyncError> {
        let mut options = StatusOptions::new();
        options
            .include_untracked(false)
            .include_ignored(false)
            .include_unmodified(false)
            .renames_head_to_index(false)
            .renames_index_to_workdir(false);
        let statuses = self
            .repo
            .statuses(Some(&mut options))
            .map_err(|e| self.inspect_error("read the status", e))?;
        let changed = Status::INDEX_NEW
            | Status::INDEX_MODIFIED
            | Status::INDEX_DELETED
            | Status::INDEX_RENAMED
            | Status::INDEX_TYPECHANGE
            | Status::WT_MODIFIED
            | Status::WT_DELETED
            | Status::WT_RENAMED
            | Status::WT_TYPECHANGE
            | Status::CONFLICTED;
        Ok(statuses
            .iter()
            .filter(|entry| entry.status().intersects(changed))
            .map(|entry| String::from_utf8_lossy(entry.path_bytes()).into_owned())
            .collect())
    }

    /// Safely checks out `target`'s tree into the index and worktree. Returns the reason when
    /// files in the worktree (untracked or ignored) are in the way; nothing is written then.
    fn checkout(&self, target: Oid) -> Result<Option<String>, SyncError> {
        let commit = self
            .repo
            .find_commit(target)
            .map_err(|e| self.inspect_error(&format!("read commit {target}"), e))?;
        let mut blocking: Vec<String> = Vec::new();
        let result = {
            let mut builder = CheckoutBuilder::new();
            builder
                .safe()
                .overwrite_ignored(false)
                .notify_on(CheckoutNotificationType::CONFLICT)
                .notify(|_, path, _, _, _| {
                    if let Some(path) = path {
                        blocking.push(path.to_string_lossy().into_owned());
                    }
                    true
                });
            self.repo
                .checkout_tree(commit.as_object(), Some(&mut builder))
        };
        match result {
            Ok(()) => Ok(None),
            Err(e) if e.code() == ErrorCode::Conflict => Ok(Some(if blocking.is_empty() {
                format!(
                    "has local files the new commit would overwrite ({})",
                    e.message()
                )
            } else {
                format!(
                    "has untracked files the new commit would overwrite: {}",
                    name_paths(&blocking)
                )
            })),
            Err(e) => Err(SyncError::FastForward {
                dir: self.dir.clone(),
                from: self.describe_head(),
                to: target.to_string(),
                message: e.message().to_owned(),
            }),
        }
    }

    /// Points the branch at `target` (only if it is still where we saw it) and HEAD at the branch.
    fn move_branch(
        &self,
        branch_ref: &str,
        branch_at: Option<Oid>,
        target: Oid,
        from: Option<Oid>,
        attached: bool,
        reset: bool,
    ) -> Result<(), SyncError> {
        let log = format!(
            "stackctl watch: {} to {}/{} {}",
            if reset {
                "reset (rewritten history)"
            } else {
                "fast-forward"
            },
            self.remote,
            self.branch,
            short(&target.to_string())
        );
        let moved = match branch_at {
            Some(at) => self
                .repo
                .reference_matching(branch_ref, target, true, at, &log)
                .map(drop),
            None => self
                .repo
                .reference(branch_ref, target, false, &log)
                .map(drop),
        };
        let attach = || {
            if attached {
                Ok(())
            } else {
                self.repo.set_head(branch_ref)
            }
        };
        moved
            .and_then(|()| attach())
            .map_err(|e| SyncError::FastForward {
                dir: self.dir.clone(),
                from: from.map_or_else(|| "an unborn branch".to_owned(), |f| f.to_string()),
                to: target.to_string(),
                message: e.message().to_owned(),
            })
    }

    /// HEAD for an error message.
    fn describe_head(&self) -> String {
        match self.head_oid() {
            Ok(Some(oid)) => oid.to_string(),
            Ok(None) => "an unborn branch".to_owned(),
            Err(_) => "an unreadable HEAD".to_owned(),
        }
    }

    /// A commit named by full or abbreviated hex.
    fn find_commit(&self, commit: &str) -> Result<git2::Commit<'_>, SyncError> {
        self.repo
            .find_commit_by_prefix(commit)
            .map_err(|e| SyncError::UnknownCommit {
                commit: commit.to_owned(),
                dir: self.dir.clone(),
                message: e.message().to_owned(),
            })
    }

    fn inspect_error(&self, doing: &str, e: git2::Error) -> SyncError {
        self.inspect_message(doing, e.message())
    }

    fn inspect_message(&self, doing: &str, message: &str) -> SyncError {
        SyncError::Inspect {
            dir: self.dir.clone(),
            doing: doing.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// Bounds how long libgit2 waits on a remote (30 s to connect, 60 s for any read or write), so a
/// hung remote fails the fetch instead of blocking the loop. Call once, before any other thread
/// uses libgit2.
#[allow(unsafe_code)]
pub fn set_network_timeouts() -> Result<(), git2::Error> {
    // SAFETY: libgit2's global options are not synchronised with git operations running on
    // other threads; `watch` calls this once at start, before any thread uses libgit2.
    unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(30_000)?;
        git2::opts::set_server_timeout_in_milliseconds(60_000)?;
    }
    Ok(())
}

/// Loads the system's CA certificates into libgit2's TLS context, for HTTPS remotes. The binary
/// starts libgit2 without them (parsing the bundle costs every command about 30 ms), so `watch`,
/// the only command that fetches, loads them here. Call once, before any other thread uses
/// libgit2.
#[allow(unsafe_code)]
pub fn load_ca_certificates() -> Result<(), git2::Error> {
    let found = openssl_probe::probe();
    // SAFETY: as in `set_network_timeouts`: called once at start, before any thread uses libgit2.
    unsafe {
        if let Some(file) = found.cert_file {
            git2::opts::set_ssl_cert_file(file)?;
        }
        if let Some(dir) = found.cert_dir {
            git2::opts::set_ssl_cert_dir(dir)?;
        }
    }
    Ok(())
}

/// The first 12 hex digits of a commit id, as logs and plans show it.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// A few paths joined with commas, then how many more.
fn name_paths(paths: &[String]) -> String {
    let named = paths
        .iter()
        .take(NAMED_PATHS)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    match paths.len().saturating_sub(NAMED_PATHS) {
        0 => named,
        more => format!("{named} and {more} more"),
    }
}

/// The URL with any password removed (`https://user:secret@host/x` → `https://user@host/x`).
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Answers libgit2's credential requests for one fetch, giving up after [`MAX_ATTEMPTS`] of each
/// kind (libgit2 asks again every time the server refuses).
struct CredentialAsker<'a> {
    config: &'a Config,
    token: Option<&'a str>,
    url: &'a str,
    username: u32,
    ssh_agent: u32,
    token_tries: u32,
    helper: u32,
    default: u32,
}

impl<'a> CredentialAsker<'a> {
    fn new(config: &'a Config, token: Option<&'a str>, url: &'a str) -> Self {
        CredentialAsker {
            config,
            token,
            url,
            username: 0,
            ssh_agent: 0,
            token_tries: 0,
            helper: 0,
            default: 0,
        }
    }

    /// The credentials callback.
    fn ask(
        &mut self,
        url: &str,
        username_from_url: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        let give_up = |what: &str| {
            git2::Error::from_str(&format!("authentication to {} failed: {what}", self.url))
        };
        if allowed.contains(CredentialType::USERNAME) {
            self.username += 1;
            if self.username > MAX_ATTEMPTS {
                return Err(give_up("the server refused the user name"));
            }
            return Cred::username(username_from_url.unwrap_or("git"));
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            self.ssh_agent += 1;
            if self.ssh_agent > MAX_ATTEMPTS {
                return Err(give_up(&format!(
                    "the ssh agent offered no key the server accepts for user {} \
                     (is SSH_AUTH_SOCK set and the deploy key added with ssh-add?)",
                    username_from_url.unwrap_or("git")
                )));
            }
            return Cred::ssh_key_from_agent(username_from_url.unwrap_or("git"));
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            if let Some(token) = self.token {
                self.token_tries += 1;
                if self.token_tries > MAX_ATTEMPTS {
                    return Err(give_up(&format!("the server rejected {TOKEN_ENV}")));
                }
                return Cred::userpass_plaintext(
                    username_from_url.unwrap_or("x-access-token"),
                    token,
                );
            }
            self.helper += 1;
            if self.helper <= MAX_ATTEMPTS
                && let Ok(cred) = Cred::credential_helper(self.config, url, username_from_url)
            {
                return Ok(cred);
            }
        }
        if allowed.contains(CredentialType::DEFAULT) {
            self.default += 1;
            if self.default <= MAX_ATTEMPTS {
                return Cred::default();
            }
        }
        Err(give_up(&format!(
            "no accepted credentials (for https set {TOKEN_ENV} or configure a git credential \
             helper; for ssh load a key into the ssh agent)"
        )))
    }
}

/// One export in progress.
struct Export<'a> {
    repo: &'a Repository,
    commit: String,
    dest: &'a Path,
}

impl Export<'_> {
    /// `dest` must be an existing empty directory.
    fn check_dest(&self) -> Result<(), SyncError> {
        let mut entries = fs::read_dir(self.dest).map_err(|e| self.error(".", &e.to_string()))?;
        if entries.next().is_some() {
            return Err(self.error(".", "the destination directory is not empty"));
        }
        Ok(())
    }

    fn error(&self, path: &str, message: &str) -> SyncError {
        SyncError::Export {
            commit: self.commit.clone(),
            path: path.to_owned(),
            dest: self.dest.to_owned(),
            message: message.to_owned(),
        }
    }

    /// Writes one tree entry at `path` (inside the commit) to `parent/<name>`.
    fn entry(
        &self,
        entry: &TreeEntry<'_>,
        path: &str,
        parent: &Path,
        want_dir: bool,
    ) -> Result<(), SyncError> {
        let name = entry
            .name()
            .filter(|n| !n.is_empty() && *n != "." && *n != ".." && !n.contains(['/', '\0']))
            .ok_or_else(|| self.error(path, "the name is not a valid file name"))?;
        let out = parent.join(name);
        match (entry.filemode(), entry.kind()) {
            (0o120000, _) => Err(SyncError::Symlink {
                commit: self.commit.clone(),
                path: path.to_owned(),
            }),
            (0o160000, _) | (_, Some(ObjectType::Commit)) => Err(SyncError::Submodule {
                commit: self.commit.clone(),
                path: path.to_owned(),
            }),
            (_, Some(ObjectType::Tree)) if want_dir => {
                let tree = self
                    .repo
                    .find_tree(entry.id())
                    .map_err(|e| self.error(path, e.message()))?;
                fs::create_dir(&out).map_err(|e| self.error(path, &e.to_string()))?;
                self.tree(&tree, path, &out)
            }
            (mode @ (0o100644 | 0o100755), Some(ObjectType::Blob)) if !want_dir => {
                let blob = self
                    .repo
                    .find_blob(entry.id())
                    .map_err(|e| self.error(path, e.message()))?;
                let perm = if mode == 0o100755 { 0o755 } else { 0o644 };
                // create_new: never write through anything already at `out`.
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&out)
                    .map_err(|e| self.error(path, &e.to_string()))?;
                file.write_all(blob.content())
                    .and_then(|()| file.set_permissions(fs::Permissions::from_mode(perm)))
                    .map_err(|e| self.error(path, &e.to_string()))
            }
            _ if want_dir => Err(self.error(path, "expected a directory, found a file")),
            _ => Err(self.error(path, "expected a regular file")),
        }
    }

    /// Writes every entry of `tree` (at `path` inside the commit) into `dir`.
    fn tree(&self, tree: &Tree<'_>, path: &str, dir: &Path) -> Result<(), SyncError> {
        for entry in tree.iter() {
            let name = String::from_utf8_lossy(entry.name_bytes());
            let child = format!("{path}/{name}");
            let is_dir = entry.kind() == Some(ObjectType::Tree);
            self.entry(&entry, &child, dir, is_dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::build::RepoBuilder;
    use git2::{IndexEntry, IndexTime, RepositoryInitOptions, Signature, Time};
    use std::cell::Cell;
    use tempfile::TempDir;

    const REGULAR: u32 = 0o100644;
    const EXECUTABLE: u32 = 0o100755;
    const LINK: u32 = 0o120000;
    const GITLINK: u32 = 0o160000;

    thread_local!(static CLOCK: Cell<i64> = const { Cell::new(1_700_000_000) });

    /// A fixed identity with a strictly increasing time, independent of any git config.
    fn signature() -> Signature<'static> {
        let seconds = CLOCK.with(|c| {
            c.set(c.get() + 60);
            c.get()
        });
        Signature::new("Test", "test@example.com", &Time::new(seconds, 0)).expect("signature")
    }

    /// A tree of exactly `files` (path, mode, content); gitlinks take their content as a hex id.
    fn tree_of(repo: &Repository, files: &[(&str, u32, &[u8])]) -> Oid {
        let mut index = git2::Index::new().expect("in-memory index");
        for (path, mode, content) in files {
            let id = if *mode == GITLINK {
                Oid::from_str(std::str::from_utf8(content).expect("hex")).expect("oid")
            } else {
                repo.blob(content).expect("blob")
            };
            index
                .add(&IndexEntry {
                    ctime: IndexTime::new(0, 0),
                    mtime: IndexTime::new(0, 0),
                    dev: 0,
                    ino: 0,
                    mode: *mode,
                    uid: 0,
                    gid: 0,
                    file_size: 0,
                    id,
                    flags: 0,
                    flags_extended: 0,
                    path: path.as_bytes().to_vec(),
                })
                .expect("index add");
        }
        index.write_tree_to(repo).expect("write tree")
    }

    /// Commits exactly `files` on top of `refname` (created when missing); returns the commit.
    fn commit_files(repo: &Repository, refname: &str, files: &[(&str, u32, &[u8])]) -> Oid {
        let tree = repo.find_tree(tree_of(repo, files)).expect("tree");
        let parent = repo
            .refname_to_id(refname)
            .ok()
            .map(|id| repo.find_commit(id).expect("parent"));
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let sig = signature();
        repo.commit(Some(refname), &sig, &sig, "change", &tree, &parents)
            .expect("commit")
    }

    /// Regular files only.
    fn files<'a>(list: &[(&'a str, &'a str)]) -> Vec<(&'a str, u32, &'a [u8])> {
        list.iter()
            .map(|(p, c)| (*p, REGULAR, c.as_bytes()))
            .collect()
    }

    /// A bare remote with one commit on `main` and a clone of it; returns (tmp, remote, checkout).
    struct Fixture {
        _tmp: TempDir,
        remote_dir: PathBuf,
        remote: Repository,
        dir: PathBuf,
        first: Oid,
    }

    const FIRST: [(&str, &str); 2] = [
        ("stackctl.yaml", "cluster: a\n"),
        ("stacks/a.yaml", "a: 1\n"),
    ];
    const SECOND: [(&str, &str); 3] = [
        ("stackctl.yaml", "cluster: a\n"),
        ("stacks/a.yaml", "a: 1\n"),
        ("stacks/b.yaml", "b: 2\n"),
    ];

    impl Fixture {
        fn new() -> Fixture {
            let tmp = tempfile::tempdir().expect("tempdir");
            let remote_dir = tmp.path().join("remote.git");
            let remote = Repository::init_opts(
                &remote_dir,
                RepositoryInitOptions::new().bare(true).initial_head("main"),
            )
            .expect("init bare");
            let first = commit_files(&remote, "refs/heads/main", &files(&FIRST));
            let dir = tmp.path().join("checkout");
            RepoBuilder::new()
                .branch("main")
                .clone(remote_dir.to_str().expect("utf-8 path"), &dir)
                .expect("clone");
            Fixture {
                _tmp: tmp,
                remote_dir,
                remote,
                dir,
                first,
            }
        }

        fn push_remote(&self, list: &[(&str, &str)]) -> Oid {
            commit_files(&self.remote, "refs/heads/main", &files(list))
        }

        fn sync(&self) -> GitSync {
            GitSync::open(&self.dir, "origin", "main").expect("open")
        }

        fn repo(&self) -> Repository {
            Repository::open(&self.dir).expect("open checkout")
        }

        fn read(&self, path: &str) -> String {
            fs::read_to_string(self.dir.join(path)).expect("read worktree file")
        }

        /// Commits `path` = `content` in the checkout like `git commit -a` would.
        fn commit_local(&self, path: &str, content: &str) -> Oid {
            fs::write(self.dir.join(path), content).expect("write");
            let repo = self.repo();
            let mut index = repo.index().expect("index");
            index.add_path(Path::new(path)).expect("add");
            index.write().expect("write index");
            let tree = repo
                .find_tree(index.write_tree().expect("tree"))
                .expect("tree");
            let head = repo.head().expect("head").peel_to_commit().expect("commit");
            let sig = signature();
            repo.commit(Some("HEAD"), &sig, &sig, "local", &tree, &[&head])
                .expect("commit")
        }

        fn head_ref(&self) -> String {
            self.repo()
                .find_reference("HEAD")
                .expect("HEAD")
                .symbolic_target()
                .expect("HEAD is symbolic")
                .to_owned()
        }
    }

    fn held_reason(result: Checkout) -> String {
        match result {
            Checkout::Held { reason, .. } => reason,
            other => panic!("expected Held, got {other:?}"),
        }
    }

    fn assert_fast_forwards(fx: &Fixture) {
        let second = fx.push_remote(&SECOND);
        let result = fx.sync().sync().expect("sync");
        assert_eq!(
            result,
            Checkout::Current {
                commit: second.to_string(),
                moved_from: Some(fx.first.to_string()),
            }
        );
        assert_eq!(fx.read("stacks/b.yaml"), "b: 2\n");
        assert_eq!(fx.sync().head().expect("head"), Some(second.to_string()));
        assert_eq!(fx.head_ref(), "refs/heads/main");
        let repo = fx.repo();
        assert_eq!(
            repo.refname_to_id("refs/remotes/origin/main")
                .expect("tracking"),
            second
        );
        assert!(
            repo.statuses(None).expect("status").is_empty(),
            "clean after"
        );
        let reflog = repo.reflog("refs/heads/main").expect("reflog");
        let message = reflog.get(0).and_then(|e| e.message().map(str::to_owned));
        assert!(message.is_some_and(|m| m.starts_with("stackctl watch: fast-forward")));
    }

    #[test]
    fn fast_forwards_from_a_path_remote() {
        assert_fast_forwards(&Fixture::new());
    }

    #[test]
    fn fast_forwards_from_a_file_url_remote() {
        let fx = Fixture::new();
        let url = format!("file://{}", fx.remote_dir.display());
        fx.repo().remote_set_url("origin", &url).expect("set url");
        assert_fast_forwards(&fx);
    }

    #[test]
    fn up_to_date_does_not_move() {
        let fx = Fixture::new();
        let sync = fx.sync();
        let expected = Checkout::Current {
            commit: fx.first.to_string(),
            moved_from: None,
        };
        assert_eq!(sync.sync().expect("sync"), expected);
        // Twice through the same GitSync, as the loop does.
        assert_eq!(sync.sync().expect("sync again"), expected);
    }

    #[test]
    fn dirty_tracked_file_holds_and_keeps_it() {
        let fx = Fixture::new();
        // The new commit does not touch stackctl.yaml, so only the dirty check can hold it.
        fs::write(fx.dir.join("stackctl.yaml"), "cluster: edited\n").expect("edit");
        let second = fx.push_remote(&SECOND);
        let result = fx.sync().sync().expect("sync");
        assert_eq!(
            result,
            Checkout::Held {
                head: Some(fx.first.to_string()),
                remote: second.to_string(),
                reason: "has uncommitted changes to stackctl.yaml".to_owned(),
            }
        );
        assert_eq!(fx.read("stackctl.yaml"), "cluster: edited\n");
        assert!(!fx.dir.join("stacks/b.yaml").exists());
        assert_eq!(fx.sync().head().expect("head"), Some(fx.first.to_string()));
    }

    #[test]
    fn staged_change_holds() {
        let fx = Fixture::new();
        fs::write(fx.dir.join("stacks/new.yaml"), "n: 1\n").expect("write");
        let repo = fx.repo();
        let mut index = repo.index().expect("index");
        index.add_path(Path::new("stacks/new.yaml")).expect("add");
        index.write().expect("write index");
        fx.push_remote(&SECOND);
        let reason = held_reason(fx.sync().sync().expect("sync"));
        assert_eq!(reason, "has uncommitted changes to stacks/new.yaml");
        assert_eq!(fx.sync().head().expect("head"), Some(fx.first.to_string()));
    }

    #[test]
    fn a_remote_branch_rewound_behind_a_local_commit_resets_the_checkout() {
        let fx = Fixture::new();
        let local = fx.commit_local("stacks/a.yaml", "a: local\n");
        let result = fx.sync().sync().expect("sync");
        assert_eq!(
            result,
            Checkout::Reset {
                commit: fx.first.to_string(),
                from: local.to_string(),
                dropped: 1,
            }
        );
        assert_eq!(fx.sync().head().expect("head"), Some(fx.first.to_string()));
        assert_eq!(fx.read("stacks/a.yaml"), "a: 1\n");
        assert_eq!(fx.head_ref(), "refs/heads/main");
    }

    #[test]
    fn a_force_pushed_history_resets_the_checkout_to_the_remote_branch() {
        let fx = Fixture::new();
        let second = fx.push_remote(&SECOND);
        fx.sync().sync().expect("fast-forward");
        // The remote drops `second` and gets a different commit on top of `first`.
        fx.remote
            .reference("refs/heads/main", fx.first, true, "rewind")
            .expect("rewind");
        let third = fx.push_remote(&[
            ("stackctl.yaml", "cluster: a\n"),
            ("stacks/c.yaml", "c: 3\n"),
        ]);
        let result = fx.sync().sync().expect("sync");
        assert_eq!(
            result,
            Checkout::Reset {
                commit: third.to_string(),
                from: second.to_string(),
                dropped: 1,
            }
        );
        assert_eq!(fx.sync().head().expect("head"), Some(third.to_string()));
        assert_eq!(fx.read("stacks/c.yaml"), "c: 3\n");
        assert!(!fx.dir.join("stacks/b.yaml").exists());
        assert!(!fx.dir.join("stacks/a.yaml").exists());
        let repo = fx.repo();
        assert!(
            repo.statuses(None).expect("status").is_empty(),
            "clean after"
        );
        let reflog = repo.reflog("refs/heads/main").expect("reflog");
        let message = reflog.get(0).and_then(|e| e.message().map(str::to_owned));
        assert!(message.is_some_and(|m| m.starts_with("stackctl watch: reset")));
    }

    #[test]
    fn contains_is_ancestry_along_the_tip() {
        let fx = Fixture::new();
        let second = fx.push_remote(&SECOND);
        fx.sync().sync().expect("fetch");
        let sync = fx.sync();
        let (first, second) = (fx.first.to_string(), second.to_string());
        assert!(sync.contains(&second, &first).expect("ancestry"));
        assert!(sync.contains(&second, &second).expect("itself"));
        assert!(!sync.contains(&first, &second).expect("not a descendant"));
    }

    #[test]
    fn a_rewritten_history_never_overwrites_uncommitted_changes() {
        let fx = Fixture::new();
        let local = fx.commit_local("stacks/a.yaml", "a: local\n");
        fs::write(fx.dir.join("stacks/a.yaml"), "a: edited\n").expect("edit");
        let second = fx.push_remote(&SECOND);
        let result = fx.sync().sync().expect("sync");
        assert_eq!(
            result,
            Checkout::Held {
                head: Some(local.to_string()),
                remote: second.to_string(),
                reason: "has uncommitted changes to stacks/a.yaml".to_owned(),
            }
        );
        assert_eq!(fx.read("stacks/a.yaml"), "a: edited\n");
        assert!(!fx.dir.join("stacks/b.yaml").exists());
    }

    #[test]
    fn other_branch_holds() {
        let fx = Fixture::new();
        let repo = fx.repo();
        let head = repo.find_commit(fx.first).expect("commit");
        repo.branch("dev", &head, false).expect("branch");
        repo.set_head("refs/heads/dev").expect("switch");
        fx.push_remote(&SECOND);
        let reason = held_reason(fx.sync().sync().expect("sync"));
        assert_eq!(reason, "is on branch dev, not main");
        assert_eq!(
            repo.refname_to_id("refs/heads/main").expect("main"),
            fx.first
        );
        assert_eq!(fx.head_ref(), "refs/heads/dev");
        assert!(!fx.dir.join("stacks/b.yaml").exists());
    }

    #[test]
    fn untracked_file_in_the_way_holds_and_keeps_it() {
        let fx = Fixture::new();
        fs::write(fx.dir.join("stacks/b.yaml"), "mine\n").expect("write");
        let second = fx.push_remote(&SECOND);
        let result = fx.sync().sync().expect("sync");
        assert_eq!(
            result,
            Checkout::Held {
                head: Some(fx.first.to_string()),
                remote: second.to_string(),
                reason: "has untracked files the new commit would overwrite: stacks/b.yaml"
                    .to_owned(),
            }
        );
        assert_eq!(fx.read("stacks/b.yaml"), "mine\n");
        assert_eq!(fx.sync().head().expect("head"), Some(fx.first.to_string()));
    }

    #[test]
    fn ignored_file_in_the_way_holds_and_keeps_it() {
        let fx = Fixture::new();
        let exclude = fx.repo().path().join("info/exclude");
        fs::create_dir_all(exclude.parent().expect("info")).expect("mkdir");
        fs::write(&exclude, "stacks/b.yaml\n").expect("exclude");
        fs::write(fx.dir.join("stacks/b.yaml"), "mine\n").expect("write");
        fx.push_remote(&SECOND);
        let reason = held_reason(fx.sync().sync().expect("sync"));
        assert_eq!(
            reason,
            "has untracked files the new commit would overwrite: stacks/b.yaml"
        );
        assert_eq!(fx.read("stacks/b.yaml"), "mine\n");
    }

    #[test]
    fn untracked_file_elsewhere_does_not_hold() {
        let fx = Fixture::new();
        fs::write(fx.dir.join("notes.txt"), "mine\n").expect("write");
        let second = fx.push_remote(&SECOND);
        let result = fx.sync().sync().expect("sync");
        assert!(matches!(result, Checkout::Current { commit, .. } if commit == second.to_string()));
        assert_eq!(fx.read("notes.txt"), "mine\n");
    }

    #[test]
    fn detached_ancestor_fast_forwards_onto_the_branch() {
        let fx = Fixture::new();
        fx.repo().set_head_detached(fx.first).expect("detach");
        let second = fx.push_remote(&SECOND);
        let result = fx.sync().sync().expect("sync");
        assert_eq!(
            result,
            Checkout::Current {
                commit: second.to_string(),
                moved_from: Some(fx.first.to_string()),
            }
        );
        assert_eq!(fx.head_ref(), "refs/heads/main");
        assert_eq!(fx.read("stacks/b.yaml"), "b: 2\n");
    }

    #[test]
    fn a_detached_checkout_moves_a_rewritten_local_branch_too() {
        let fx = Fixture::new();
        let local = fx.commit_local("stacks/a.yaml", "a: local\n");
        let repo = fx.repo();
        let mut builder = CheckoutBuilder::new();
        repo.checkout_tree(
            repo.find_commit(fx.first).expect("first").as_object(),
            Some(builder.force()),
        )
        .expect("checkout first");
        repo.set_head_detached(fx.first).expect("detach");
        let second = fx.push_remote(&SECOND);
        let result = fx.sync().sync().expect("sync");
        assert_eq!(
            result,
            Checkout::Reset {
                commit: second.to_string(),
                from: local.to_string(),
                dropped: 1,
            }
        );
        assert_eq!(repo.refname_to_id("refs/heads/main").expect("main"), second);
        assert_eq!(fx.head_ref(), "refs/heads/main");
        assert_eq!(fx.read("stacks/b.yaml"), "b: 2\n");
    }

    #[test]
    fn missing_remote_is_named() {
        let fx = Fixture::new();
        let error = GitSync::open(&fx.dir, "upstream", "main")
            .err()
            .expect("no such remote");
        assert!(matches!(&error, SyncError::NoRemote { remote, .. } if remote == "upstream"));
        assert!(error.to_string().contains("\"upstream\""), "{error}");
    }

    #[test]
    fn missing_branch_is_named() {
        let fx = Fixture::new();
        let error = GitSync::open(&fx.dir, "origin", "release")
            .expect("open")
            .sync()
            .expect_err("no such branch");
        assert!(
            matches!(&error, SyncError::NoRemoteBranch { remote, branch, .. }
                if remote == "origin" && branch == "release"),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("has no branch release"),
            "{error}"
        );
    }

    #[test]
    fn deleted_remote_branch_is_reported_despite_stale_tracking_ref() {
        let fx = Fixture::new();
        fx.sync().sync().expect("first sync");
        fx.remote
            .find_reference("refs/heads/main")
            .expect("main")
            .delete()
            .expect("delete");
        let error = fx.sync().sync().expect_err("branch gone");
        assert!(
            matches!(error, SyncError::NoRemoteBranch { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn unreachable_remote_is_a_fetch_error() {
        let fx = Fixture::new();
        let gone = fx.dir.with_file_name("nowhere.git");
        fx.repo()
            .remote_set_url("origin", gone.to_str().expect("utf-8"))
            .expect("set url");
        let error = fx.sync().sync().expect_err("unreachable");
        assert!(
            matches!(&error, SyncError::Fetch { remote, branch, .. } if remote == "origin" && branch == "main"),
            "{error:?}"
        );
        assert!(error.to_string().contains("nowhere.git"), "{error}");
    }

    #[test]
    fn invalid_branch_and_bare_repo_are_refused() {
        let fx = Fixture::new();
        let error = GitSync::open(&fx.dir, "origin", "bad..name")
            .err()
            .expect("invalid");
        assert!(
            matches!(error, SyncError::InvalidBranch { .. }),
            "{error:?}"
        );
        let error = GitSync::open(&fx.remote_dir, "origin", "main")
            .err()
            .expect("bare");
        assert!(matches!(error, SyncError::Open { .. }), "{error:?}");
    }

    /// Every regular file under `dir`, relative, with its content.
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry"))
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            let kind = entry.file_type().expect("file type");
            assert!(!kind.is_symlink(), "{name} is a symlink");
            if kind.is_dir() {
                walk(&entry.path(), &format!("{name}/"), out);
            } else {
                out.push((name, fs::read(entry.path()).expect("read")));
            }
        }
    }

    #[test]
    fn export_writes_exactly_what_stackctl_reads() {
        let fx = Fixture::new();
        let script: &[u8] = b"#!/bin/sh\r\nexec server\r\n";
        let binary: &[u8] = &[0, 159, 146, 150, 255];
        let commit = commit_files(
            &fx.remote,
            "refs/heads/main",
            &[
                ("README.md", REGULAR, b"readme"),
                ("recipes/x/run.sh", EXECUTABLE, script),
                ("recipes/x/y.yaml", REGULAR, b"y: 1\n"),
                ("recipes/x/blob.bin", REGULAR, binary),
                ("src/main.rs", REGULAR, b"fn main() {}"),
                ("stackctl.yaml", REGULAR, b"cluster: a\n"),
                ("stackctl.yaml.bak", REGULAR, b"old"),
                ("stacks/a.yaml", REGULAR, b"a: 1\n"),
                ("stacks/deep/b.yaml", REGULAR, b"b: 2\n"),
                ("stacksfoo/c.yaml", REGULAR, b"c"),
            ],
        );
        let sync = fx.sync();
        sync.sync().expect("fetch");
        let dest = tempfile::tempdir().expect("dest");
        sync.export(&commit.to_string(), dest.path())
            .expect("export");
        let mut written = Vec::new();
        walk(dest.path(), "", &mut written);
        let expected: Vec<(String, Vec<u8>)> = [
            ("recipes/x/blob.bin", binary),
            ("recipes/x/run.sh", script),
            ("recipes/x/y.yaml", b"y: 1\n".as_slice()),
            ("stackctl.yaml", b"cluster: a\n".as_slice()),
            ("stacks/a.yaml", b"a: 1\n".as_slice()),
            ("stacks/deep/b.yaml", b"b: 2\n".as_slice()),
        ]
        .iter()
        .map(|(p, c)| ((*p).to_owned(), c.to_vec()))
        .collect();
        assert_eq!(written, expected);
        let mode = |p: &str| {
            fs::metadata(dest.path().join(p))
                .expect("metadata")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("recipes/x/run.sh"), 0o755);
        assert_eq!(mode("stacks/a.yaml"), 0o644);
    }

    #[test]
    fn export_refuses_a_symlink_under_stacks() {
        let fx = Fixture::new();
        let commit = commit_files(
            &fx.remote,
            "refs/heads/main",
            &[
                ("stackctl.yaml", REGULAR, b"cluster: a\n"),
                ("stacks/link.yaml", LINK, b"/etc/passwd"),
            ],
        );
        let sync = fx.sync();
        sync.sync().expect("fetch");
        let dest = tempfile::tempdir().expect("dest");
        let error = sync
            .export(&commit.to_string(), dest.path())
            .expect_err("symlink");
        assert!(
            matches!(&error, SyncError::Symlink { path, commit: c } if path == "stacks/link.yaml" && *c == commit.to_string()),
            "{error:?}"
        );
        assert!(error.to_string().contains("stacks/link.yaml"), "{error}");
        assert!(fs::symlink_metadata(dest.path().join("stacks/link.yaml")).is_err());
    }

    #[test]
    fn export_refuses_a_symlinked_directory_and_a_submodule() {
        let fx = Fixture::new();
        let linked = commit_files(
            &fx.remote,
            "refs/heads/linked",
            &[("recipes", LINK, b"/etc")],
        );
        let submodule = commit_files(
            &fx.remote,
            "refs/heads/submodule",
            &[("recipes/vendor", GITLINK, fx.first.to_string().as_bytes())],
        );
        // Export reads only objects: run it against the bare remote, which has both commits.
        let remote = GitSync {
            inner: Mutex::new(Inner {
                repo: Repository::open(&fx.remote_dir).expect("open bare"),
                dir: fx.remote_dir.clone(),
                remote: "origin".to_owned(),
                branch: "main".to_owned(),
            }),
        };
        let dest = tempfile::tempdir().expect("dest");
        let error = remote
            .export(&linked.to_string(), dest.path())
            .expect_err("linked dir");
        assert!(
            matches!(&error, SyncError::Symlink { path, .. } if path == "recipes"),
            "{error:?}"
        );
        let dest = tempfile::tempdir().expect("dest");
        let error = remote
            .export(&submodule.to_string(), dest.path())
            .expect_err("submodule");
        assert!(
            matches!(&error, SyncError::Submodule { path, .. } if path == "recipes/vendor"),
            "{error:?}"
        );
    }

    #[test]
    fn export_refuses_a_non_empty_destination() {
        let fx = Fixture::new();
        let dest = tempfile::tempdir().expect("dest");
        fs::write(dest.path().join("stale"), "x").expect("write");
        let error = fx
            .sync()
            .export(&fx.first.to_string(), dest.path())
            .expect_err("not empty");
        assert!(matches!(error, SyncError::Export { .. }), "{error:?}");
    }

    #[test]
    fn first_parent_walks_back() {
        let fx = Fixture::new();
        let second = fx.push_remote(&SECOND);
        let sync = fx.sync();
        sync.sync().expect("sync");
        assert_eq!(
            sync.first_parent(&second.to_string()).expect("parent"),
            Some(fx.first.to_string())
        );
        assert_eq!(
            sync.first_parent(&fx.first.to_string()).expect("root"),
            None
        );
        assert_eq!(
            sync.first_parent(short(&second.to_string()))
                .expect("abbreviated"),
            Some(fx.first.to_string())
        );
        let error = sync.first_parent(&"1".repeat(40)).expect_err("unknown");
        assert!(
            matches!(error, SyncError::UnknownCommit { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn git_sync_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<GitSync>();
    }

    #[test]
    fn short_is_twelve_digits() {
        let full = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(short(full), "0123456789ab");
        assert_eq!(short("abc"), "abc");
    }

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("https://x-access-token:s3cret@github.com/org/repo"),
            "https://x-access-token@github.com/org/repo"
        );
        assert_eq!(
            redact_url("https://github.com/org/repo"),
            "https://github.com/org/repo"
        );
        assert_eq!(
            redact_url("git@github.com:org/repo"),
            "git@github.com:org/repo"
        );
    }

    #[test]
    fn credentials_give_up_instead_of_looping() {
        let config = Config::new().expect("config");
        let url = "https://example.com/org/repo";
        let mut asker = CredentialAsker::new(&config, Some("s3cret"), url);
        for _ in 0..MAX_ATTEMPTS {
            asker
                .ask(url, None, CredentialType::USER_PASS_PLAINTEXT)
                .expect("token offered");
        }
        let error = asker
            .ask(url, None, CredentialType::USER_PASS_PLAINTEXT)
            .err()
            .expect("gives up");
        assert!(error.message().contains(TOKEN_ENV), "{}", error.message());
        assert!(!error.message().contains("s3cret"));
        for _ in 0..MAX_ATTEMPTS {
            asker
                .ask(
                    "ssh://git@example.com/r",
                    Some("git"),
                    CredentialType::SSH_KEY,
                )
                .expect("agent offered");
        }
        let error = asker
            .ask(
                "ssh://git@example.com/r",
                Some("git"),
                CredentialType::SSH_KEY,
            )
            .err()
            .expect("gives up");
        assert!(error.message().contains("ssh agent"), "{}", error.message());
    }
}
