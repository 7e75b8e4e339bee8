//! One reconcile pass, shared by `plan`, `apply` and (later) `watch` and CI: load → observe →
//! check → plan, and when there are changes: lock → observe, check and plan again under the
//! lock → approve → apply → release. A plan made before the lock was held is never executed.
//!
//! Everything here returns data (plans, reports, typed errors); the command layer prompts and
//! prints.

use crate::apply::{self, ApplyReport, Progress};
use crate::live::{JobState, Marker, Observed};
use crate::lock::{self, LockInfo, LockRequest};
use crate::plan::{self, Plan};
use crate::render::script::{self, ScriptContext};
use crate::slurm::{Backend, SlurmError};
use crate::spec::{self, Repo, SpecErrors};
use std::path::Path;
use std::time::Duration;

/// Why a pass could not plan or apply.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The repo, or a request in it, is wrong: a person must fix it.
    #[error("{message}")]
    Config {
        /// Every problem, one per line, then a closing line.
        message: String,
    },
    /// Slurm could not be read or asked.
    #[error("{context}: {source}")]
    Slurm {
        /// What was being done.
        context: &'static str,
        /// Slurm's error.
        source: SlurmError,
    },
    /// Another apply holds this owner's lock, or the lock could not be taken.
    #[error(transparent)]
    Lock(#[from] lock::LockError),
}

/// The kinds of [`Error`], for loops that retry and commands that pick an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A person must change the repo (or the cluster); retrying the same input cannot help.
    Configuration,
    /// Slurm was unreachable or slow; a later retry may succeed.
    Transient,
    /// Slurm refused or answered something unusable.
    Definite,
    /// Another apply holds the lock.
    LockHeld,
}

impl Error {
    /// Returns the kind of the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config { .. } => ErrorKind::Configuration,
            Error::Slurm { source, .. } if source.is_transient() => ErrorKind::Transient,
            Error::Slurm { .. } => ErrorKind::Definite,
            Error::Lock(lock::LockError::Held { .. }) => ErrorKind::LockHeld,
            Error::Lock(lock::LockError::Slurm(e)) if e.is_transient() => ErrorKind::Transient,
            Error::Lock(_) => ErrorKind::Definite,
        }
    }

    fn config(problems: &SpecErrors, what: &str) -> Error {
        let count = problems.0.len();
        Error::Config {
            message: format!(
                "{problems}\n{count} problem{} found; {what}",
                if count == 1 { "" } else { "s" }
            ),
        }
    }
}

/// Loads and validates the repo at `dir`.
pub fn load(dir: &Path) -> Result<Repo, Error> {
    if !dir.is_dir() {
        return Err(Error::Config {
            message: format!("{} is not a directory", dir.display()),
        });
    }
    spec::load(dir, || crate::git::remote_url(dir))
        .map_err(|errors| Error::config(&errors, "nothing was planned or submitted"))
}

/// Returns the submitting side's paths with `~` expanded. Slurm and apptainer need them
/// absolute; `image_dir` matters only when some image is a relative path.
pub fn script_context(repo: &Repo) -> Result<ScriptContext, Error> {
    let home = std::env::var("HOME").ok().filter(|h| !h.is_empty());
    let expand = |value: &str| spec::expand_home(value, home.as_deref());
    let unexpanded = |name: &str, value: &str| Error::Config {
        message: format!("cannot expand {name} {value:?} from stackctl.yaml: HOME is not set"),
    };
    let log_dir = expand(&repo.settings.log_dir);
    if !log_dir.is_absolute() {
        return Err(unexpanded("log_dir", &repo.settings.log_dir));
    }
    let image_dir = expand(&repo.settings.image_dir);
    let needs_image_dir = repo
        .desired
        .services
        .values()
        .any(|s| s.spec.image.as_deref().is_some_and(script::is_in_image_dir));
    if needs_image_dir && !image_dir.is_absolute() {
        return Err(unexpanded("image_dir", &repo.settings.image_dir));
    }
    Ok(ScriptContext { log_dir, image_dir })
}

/// A plan with what was observed to make it.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The plan.
    pub plan: Plan,
    /// The owned jobs it was computed from.
    pub observed: Observed,
    /// This owner's apply locks held at the time of the listing.
    pub locks: Vec<LockInfo>,
}

/// Observes the cluster and computes the plan for `repo`, checking every service it submits
/// against the cluster's partitions and nodes. `dir` is the checkout, named in the plan.
///
/// One job listing; the cluster's facts are read only when the plan submits something.
pub fn plan(dir: &Path, repo: &Repo, backend: &dyn Backend) -> Result<Planned, Error> {
    let owner = &repo.settings.owner;
    let records = backend.list_jobs().map_err(|source| Error::Slurm {
        context: "reading the live jobs from Slurm",
        source,
    })?;
    if let Some(legacy) = &repo.settings.legacy_owner {
        let legacy_jobs: Vec<crate::live::JobId> = records
            .iter()
            .filter(|r| JobState::from_slurm(&r.state, &r.reason).is_alive())
            .filter(|r| Marker::parse(&r.comment).is_some_and(|m| &m.owner == legacy))
            .map(|r| r.id)
            .collect();
        if !legacy_jobs.is_empty() {
            return Err(Error::Config {
                message: format!(
                    "{} live jobs carry the owner \"{legacy}\", which stackctl before 0.2 \
                     derived from this repo's remote without its host; it now derives \
                     \"{owner}\", and would submit every service a second time. To keep \
                     managing those jobs, set `owner: {legacy}` in stackctl.yaml; to start \
                     afresh, cancel them first (scancel {}). Nothing was planned or submitted.",
                    legacy_jobs.len(),
                    crate::live::compact_job_ids(&legacy_jobs).join(" ")
                ),
            });
        }
    }
    let locks = lock::held(&records, owner);
    let observed = crate::observe::observe(backend, records, owner, &repo.desired);
    let mut plan = plan::compute(owner, &repo.desired, &observed);
    plan.source = crate::git::head(dir);
    let submitting = plan.submitting_services();
    if !submitting.is_empty() {
        let facts = backend.cluster_facts().map_err(|source| Error::Slurm {
            context: "reading the cluster's partitions and nodes",
            source,
        })?;
        let problems = crate::cluster::check(&repo.desired, &submitting, &facts);
        if !problems.is_empty() {
            return Err(Error::config(
                &SpecErrors(problems),
                "no node of the cluster could ever run this; nothing was planned or submitted",
            ));
        }
    }
    Ok(Planned {
        plan,
        observed,
        locks,
    })
}

/// How an apply pass takes the lock.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// How long to wait for another apply's lock; zero fails at once.
    pub lock_wait: Duration,
}

/// What an apply pass did.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing to do; no lock was taken (or it was released at once).
    NoChanges(Planned),
    /// The plan was shown and not approved; nothing was done.
    Declined(Planned),
    /// The plan was executed; the report says how it went.
    Applied(Planned, ApplyReport),
}

/// Plans and, when there are changes, takes the lock, plans again under it, asks `approve`
/// and executes the approved plan. The lock is released on every path.
pub fn apply(
    dir: &Path,
    repo: &Repo,
    backend: &dyn Backend,
    options: &ApplyOptions,
    approve: &mut dyn FnMut(&Planned) -> bool,
    progress: &mut dyn Progress,
) -> Result<Outcome, Error> {
    let ctx = script_context(repo)?;
    let first = plan(dir, repo, backend)?;
    if first.plan.is_empty() {
        return Ok(Outcome::NoChanges(first));
    }
    let request = LockRequest {
        owner: repo.settings.owner.clone(),
        expiry: repo.settings.lock_expiry,
        wait: options.lock_wait,
        partition: repo.settings.lock_partition.clone(),
        identity: lock::Identity::current(),
    };
    lock::with_lock(backend, &request, || {
        apply_locked(dir, repo, backend, &ctx, approve, progress)
    })?
}

fn apply_locked(
    dir: &Path,
    repo: &Repo,
    backend: &dyn Backend,
    ctx: &ScriptContext,
    approve: &mut dyn FnMut(&Planned) -> bool,
    progress: &mut dyn Progress,
) -> Result<Outcome, Error> {
    let planned = plan(dir, repo, backend)?;
    if planned.plan.is_empty() {
        return Ok(Outcome::NoChanges(planned));
    }
    if !approve(&planned) {
        return Ok(Outcome::Declined(planned));
    }
    std::fs::create_dir_all(&ctx.log_dir).map_err(|e| Error::Config {
        message: format!(
            "cannot create the log directory {}: {e}",
            ctx.log_dir.display()
        ),
    })?;
    let report = apply::apply(
        &planned.plan,
        &repo.desired,
        backend,
        ctx,
        &mut new_nonce,
        progress,
    );
    Ok(Outcome::Applied(planned, report))
}

/// Returns a fresh nonce: 12 hex digits of SHA-256 over the time, process id and a counter.
pub fn new_nonce() -> String {
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = format!(
        "{}:{}:{}",
        now.as_nanos(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    Sha256::digest(seed.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}
