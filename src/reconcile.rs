//! One reconcile pass, shared by `plan`, `apply` and (later) `watch` and CI: load → observe →
//! check → plan, and when there are changes: lock → observe, check and plan again under the
//! lock → approve → apply → release. A plan made before the lock was held is never executed.
//!
//! Everything here returns data (plans, reports, typed errors); the command layer prompts and
//! prints.

use crate::apply::{self, ApplyReport, Progress};
use crate::cluster::ClusterFacts;
use crate::desired::{self, Desired, Owner, ReplicaSpec, Repo, SpecErrors, SpecHash};
use crate::lock::{self, LockInfo, LockRequest};
use crate::observed::{JobRecord, JobState, Marker, Observed};
use crate::plan::{self, Plan};
use crate::render::script::{self, ScriptContext};
use crate::slurm::{Backend, SlurmError};
use std::collections::BTreeMap;
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
    #[error("{context}: {cause}")]
    Slurm {
        /// What was being done.
        context: &'static str,
        /// Slurm's error; part of this error's own message, so no error source (a chain
        /// printed with `{:#}` would say it twice).
        cause: SlurmError,
    },
    /// Another apply holds this owner's lock, or the lock could not be taken.
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    /// A safety rule refused the plan (protect, `--max-destroy`, destroy-all, a service no
    /// node can run); nothing was done.
    #[error("{message}")]
    Refused {
        /// Every refusal, one per line, then a closing line.
        message: String,
    },
    /// A saved plan no longer matches the repo or the live replicas; nothing was done.
    #[error("{message}")]
    Stale {
        /// `stale plan: …`, naming what changed.
        message: String,
    },
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
            Error::Config { .. } | Error::Refused { .. } | Error::Stale { .. } => {
                ErrorKind::Configuration
            }
            Error::Slurm { cause, .. } if cause.is_transient() => ErrorKind::Transient,
            Error::Slurm { .. } => ErrorKind::Definite,
            Error::Lock(lock::LockError::Held { .. }) => ErrorKind::LockHeld,
            Error::Lock(lock::LockError::Slurm(e)) if e.is_transient() => ErrorKind::Transient,
            Error::Lock(_) => ErrorKind::Definite,
        }
    }

    fn config(problems: &SpecErrors, what: &str) -> Error {
        Error::Config {
            message: problems_message(problems, what),
        }
    }
}

/// Every problem, one per line, then `N problem(s) found; {what}`.
fn problems_message(problems: &SpecErrors, what: &str) -> String {
    let count = problems.0.len();
    format!(
        "{problems}\n{count} problem{} found; {what}",
        if count == 1 { "" } else { "s" }
    )
}

/// Loads and validates the repo at `dir`.
pub fn load(dir: &Path) -> Result<Repo, Error> {
    load_files(dir, dir)
}

/// Loads and validates the files under `files` (e.g. a commit exported by `watch`) as the
/// repo checked out at `checkout`, whose git remote names the owner.
pub fn load_files(files: &Path, checkout: &Path) -> Result<Repo, Error> {
    load_reading_remote(files, || crate::git::remote_url(checkout))
}

/// [`load`], with `before_git` run first when the owner is derived from the git remote (when
/// `stackctl.yaml` names none): `plan` starts libgit2 there, otherwise only once its listing
/// runs (see [`crate::git::init_without_ca_bundle`]).
pub fn load_starting_git(dir: &Path, before_git: impl FnOnce()) -> Result<Repo, Error> {
    load_reading_remote(dir, || {
        before_git();
        crate::git::remote_url(dir)
    })
}

/// [`load_files`], asking `remote_url` for the git remote's URL when the owner is derived.
fn load_reading_remote(
    files: &Path,
    remote_url: impl FnOnce() -> Option<String>,
) -> Result<Repo, Error> {
    if !files.is_dir() {
        return Err(Error::Config {
            message: format!("{} is not a directory", files.display()),
        });
    }
    let mut repo = desired::load(files, remote_url)
        .map_err(|errors| Error::config(&errors, "nothing was planned or submitted"))?;
    resolve_secrets(&mut repo, files)?;
    Ok(repo)
}

/// [`load_files`] without reading any secret: the specs carry no fingerprints, so this repo
/// is for commands that plan nothing (`secret set`, `secret list`).
pub fn load_unresolved(files: &Path, checkout: &Path) -> Result<Repo, Error> {
    desired::load(files, || crate::git::remote_url(checkout))
        .map_err(|errors| Error::config(&errors, "nothing was planned or submitted"))
}

/// Reads every secret some service uses, on this machine (its environment, its files, the
/// repo's age files with its identity), and seals their fingerprints into the specs. Every
/// secret that cannot be read is named with its source; nothing is planned then.
fn resolve_secrets(repo: &mut Repo, files: &Path) -> Result<(), Error> {
    let used = repo.desired.secrets_used();
    if used.is_empty() {
        return Ok(());
    }
    let home = crate::slurm::local_home();
    let env = |name: &str| std::env::var(name).ok();
    let mut problems = Vec::new();
    let mut fingerprints = BTreeMap::new();
    for name in used {
        let Some(source) = repo.settings.secrets.get(&name) else {
            continue; // refused by validation already
        };
        match crate::secret::resolve(
            &name,
            source,
            &repo.settings.age,
            files,
            home.as_deref(),
            &env,
        ) {
            Ok(value) => {
                let owner = repo.settings.owner.to_string();
                fingerprints.insert(
                    name.clone(),
                    crate::secret::fingerprint(&owner, &name, &value),
                );
                repo.secrets.insert(name, value);
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        return Err(Error::Config {
            message: format!(
                "{}\nnothing was planned, cancelled or submitted",
                problems.join("\n")
            ),
        });
    }
    repo.desired.seal_secrets(&fingerprints);
    Ok(())
}

/// Returns the submitting side's paths with `~` expanded to the home directory of the user
/// the jobs run as (over SSH, the login node's: asked only when a path starts with `~`).
/// Slurm and apptainer need them absolute; `image_dir` matters only when some image is a
/// relative path.
pub fn script_context(repo: &Repo, backend: &dyn Backend) -> Result<ScriptContext, Error> {
    let settings = &repo.settings;
    let needs_image_dir = repo
        .desired
        .services
        .values()
        .any(|s| s.spec.image.as_deref().is_some_and(script::is_in_image_dir));
    let needs_secrets_dir = !repo.desired.secrets_used().is_empty();
    let home = if settings.log_dir.starts_with('~')
        || (needs_image_dir && settings.image_dir.starts_with('~'))
        || (needs_secrets_dir && settings.secrets_dir.starts_with('~'))
    {
        backend.home_dir().map_err(|cause| Error::Slurm {
            context: "asking for the home directory `~` in stackctl.yaml stands for",
            cause,
        })?
    } else {
        None
    };
    let expand = |value: &str| crate::paths::expand_home(value, home.as_deref());
    let unexpanded = |name: &str, value: &str| Error::Config {
        message: format!("cannot expand {name} {value:?} from stackctl.yaml: HOME is not set"),
    };
    let log_dir = expand(&settings.log_dir);
    if !log_dir.is_absolute() {
        return Err(unexpanded("log_dir", &settings.log_dir));
    }
    let image_dir = expand(&settings.image_dir);
    if needs_image_dir && !image_dir.is_absolute() {
        return Err(unexpanded("image_dir", &settings.image_dir));
    }
    let secrets_dir = if needs_secrets_dir {
        let dir = expand(&settings.secrets_dir);
        if !dir.is_absolute() {
            return Err(unexpanded("secrets_dir", &settings.secrets_dir));
        }
        Some(dir.join(crate::secret::owner_dir_name(&settings.owner.to_string())))
    } else {
        None
    };
    Ok(ScriptContext {
        log_dir,
        image_dir,
        secrets_dir,
    })
}

/// Observes the owner's jobs from a listing, then, only for specs that differ from the desired
/// ones and are not in `known`, reads one batch script per distinct spec so a plan can show
/// what changes. A script that cannot be read only makes the plan show hashes instead of
/// attributes.
pub fn observe(
    backend: &dyn Backend,
    records: Vec<JobRecord>,
    owner: &Owner,
    desired: &Desired,
    known: BTreeMap<SpecHash, ReplicaSpec>,
) -> Observed {
    let mut observed = Observed::from_records(records, owner);
    observed.listed_at = crate::utc::unix_now();
    observed.specs = known;
    for (hash, job_id) in plan::specs_to_read(desired, &observed) {
        match backend.batch_script(&job_id) {
            // The backend cannot read scripts: the plan shows hashes, and says so.
            Ok(None) => break,
            Ok(Some(text)) => match script::spec_of_script(&text) {
                Some(spec) if spec.hash() == hash => {
                    observed.specs.insert(hash, spec);
                }
                _ => tracing::warn!(%job_id, "batch script carries no readable stackctl spec"),
            },
            Err(e) => tracing::warn!(%job_id, error = %e, "cannot read batch script"),
        }
    }
    observed
}

/// Reads the runs of every job in `repo` into `observed.runs` ([`crate::results::read_runs`]),
/// and what accounting knows of them into `observed.accounted` (nothing for a repo without
/// jobs). Fails over SSH on a cluster without accounting, and when `log_dir` cannot be
/// expanded.
pub fn attach_results(
    observed: &mut Observed,
    repo: &Repo,
    backend: &dyn Backend,
) -> Result<(), String> {
    let jobs: Vec<&crate::desired::ServiceAddr> = repo
        .desired
        .services
        .iter()
        .filter(|(_, s)| s.job.is_some())
        .map(|(a, _)| a)
        .collect();
    if jobs.is_empty() {
        return Ok(());
    }
    let accounting = repo.settings.accounting && attach_accounted(observed, &jobs, repo, backend);
    if repo.settings.ssh.is_some() {
        if accounting {
            // The runs are known from accounting; their records (and metrics) stay on the
            // login node.
            return Ok(());
        }
        return Err(format!(
            "one-shot jobs ({}) need their completion records, which stackctl reads from \
             log_dir on this machine, or the cluster's accounting (sacct), which this cluster \
             does not answer; over SSH (cluster.ssh) the records are on the login node and \
             cannot be read yet: run plan and apply for jobs on the cluster itself",
            jobs.iter()
                .map(|a| a.reference())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let root = results_root(repo, backend)?;
    for addr in jobs {
        observed
            .runs
            .insert(addr.clone(), crate::results::read_runs(&root, addr));
    }
    Ok(())
}

/// Asks accounting (one `sacct`) for the runs of `jobs` and keeps, in `observed.accounted`,
/// the owner's ended ones that Slurm's listing no longer shows. Returns whether the cluster
/// answered; without accounting the records alone tell the runs.
fn attach_accounted(
    observed: &mut Observed,
    jobs: &[&crate::desired::ServiceAddr],
    repo: &Repo,
    backend: &dyn Backend,
) -> bool {
    let names: Vec<String> = jobs.iter().map(|a| a.to_string()).collect();
    let records = match backend.accounted_jobs(&names) {
        Ok(Some(records)) => records,
        Ok(None) => {
            tracing::debug!("no accounting on this cluster (or backend): runs from their records");
            return false;
        }
        Err(e) => {
            tracing::debug!(error = %e, "sacct failed: runs from their records");
            return false;
        }
    };
    let listed: std::collections::BTreeSet<crate::job::JobId> =
        observed.jobs.iter().map(|j| j.id).collect();
    let wanted: std::collections::BTreeSet<&crate::desired::ServiceAddr> =
        jobs.iter().copied().collect();
    observed.accounted = Observed::from_records(records, &repo.settings.owner)
        .jobs
        .into_iter()
        .filter(|j| {
            !listed.contains(&j.id)
                && wanted.contains(&j.marker.service)
                && !j.state.is_alive()
                && j.state != crate::observed::JobState::Completing
        })
        .collect();
    true
}

/// `<log_dir>/results/<owner>` for `repo`, `~` expanded as for the batch scripts.
pub fn results_root(repo: &Repo, backend: &dyn Backend) -> Result<std::path::PathBuf, String> {
    let ctx = script_context(repo, backend).map_err(|e| e.to_string())?;
    Ok(crate::render::script::results_root(
        &ctx.log_dir,
        &repo.settings.owner,
    ))
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
    /// With [`Refusals::PerService`], what the plan refused: those services' changes are not
    /// in `plan`. Always empty with [`Refusals::WholePlan`] (a refusal is an error then).
    pub refused: Vec<plan::protection::Refusal>,
}

/// What a refusal (protection, a destroy limit) blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Refusals {
    /// The whole plan: nothing is done, the pass is an [`Error::Config`]. `plan` and `apply`:
    /// an operator is there to fix the repo, and CI must not half-apply.
    #[default]
    WholePlan,
    /// Only the services it concerns: their changes leave the plan, listed in
    /// [`Planned::refused`], and everything else goes ahead. `watch`: nobody is there, and
    /// one refused service must not stop the others healing.
    PerService,
}

/// What a plan is asked for besides the repo.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// The commit the repo was read from, named in the plan.
    pub source: Option<plan::Source>,
    /// Whether services gone from the repo are cancelled; without pruning the plan lists them
    /// as [`Plan::not_pruned`] and leaves them running.
    pub prune: bool,
    /// How much the plan may cancel; a plan over a limit is refused.
    pub limits: plan::protection::DestroyLimits,
    /// The services the plan is kept to, and the replicas it must replace.
    pub scope: plan::scope::Scope,
    /// What a refusal blocks.
    pub refusals: Refusals,
}

impl PlanOptions {
    /// Options for the repo checked out at `dir`: its commit, pruning on, no destroy limit.
    pub fn for_checkout(dir: &Path) -> PlanOptions {
        PlanOptions {
            source: crate::git::head(dir),
            prune: true,
            limits: Default::default(),
            scope: Default::default(),
            refusals: Refusals::WholePlan,
        }
    }
}

/// Observes the cluster and computes the plan for `repo`, checking every service it submits
/// against the cluster's partitions and nodes.
///
/// One job listing; the cluster's facts are read only when the plan submits something.
///
/// Then asks Slurm when each service the plan submits jobs for would start (one `sbatch
/// --test-only` per service, for all its new replicas at once) and keeps the answers in the
/// plan ([`plan::ServicePlan::start_estimate`]). An apply's plans skip this: its pre-check
/// asks the same question of the scripts it submits.
pub fn plan(repo: &Repo, options: &PlanOptions, backend: &dyn Backend) -> Result<Planned, Error> {
    let mut planned = plan_with(repo, options, backend, &mut Reads::default())?;
    estimate_starts(&mut planned.plan, repo, backend);
    Ok(planned)
}

/// [`plan`] from a listing started earlier ([`Backend::start_list_jobs`]), so the caller can
/// work (start libgit2, read the checkout's commit) while Slurm answers.
pub fn plan_listed(
    repo: &Repo,
    options: &PlanOptions,
    backend: &dyn Backend,
    listing: crate::slurm::PendingListing<'_>,
) -> Result<Planned, Error> {
    let listing = listing().map_err(|cause| Error::Slurm {
        context: "reading the live jobs from Slurm",
        cause,
    })?;
    let mut reads = Reads {
        listing: Some(listing),
        ..Reads::default()
    };
    let mut planned = plan_with(repo, options, backend, &mut reads)?;
    estimate_starts(&mut planned.plan, repo, backend);
    Ok(planned)
}

/// Fills in [`plan::ServicePlan::start_estimate`] of every service the plan submits jobs for.
/// Slurm is asked about the jobs apply would submit ([`estimate_jobs`]); the service has
/// started once its last job has, so the latest estimate is kept. A question Slurm cannot
/// answer leaves the estimate out (apply's pre-check reports a rejection); it never fails the
/// plan. An estimate more than a year away is kept and rendered as unknown
/// ([`crate::observed::StartEstimate::PLAUSIBLE_SECONDS`]). Slurm is asked once per job
/// shape ([`crate::job::JobRequest::shape`]): jobs of one shape get the same answer.
fn estimate_starts(plan: &mut Plan, repo: &Repo, backend: &dyn Backend) {
    let Ok(ctx) = script_context(repo, backend) else {
        return;
    };
    let owner = plan.owner.clone();
    type Answer = Result<Option<crate::observed::StartEstimate>, String>;
    let mut answers: std::collections::HashMap<String, Answer> = Default::default();
    for service_plan in &mut plan.services {
        let Some(service) = repo.desired.services.get(&service_plan.service) else {
            continue;
        };
        let mut latest: Option<crate::observed::StartEstimate> = None;
        for job in estimate_jobs(service_plan, service, &owner, &ctx) {
            let answer = answers
                .entry(job.shape())
                .or_insert_with(|| backend.test_submit(&job).map_err(|e| e.to_string()));
            match answer.clone() {
                Ok(Some(estimate)) => {
                    if latest.as_ref().is_none_or(|l| estimate.at > l.at) {
                        latest = Some(estimate);
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(service = %service_plan.service, %error, "no start estimate");
                    latest = None;
                    break;
                }
            }
        }
        service_plan.start_estimate = latest;
    }
}

/// The jobs apply would submit for `service_plan`, as Slurm is asked about them: the new
/// replicas in one array, and each successor of a failed replica alone with its `--begin`
/// and `--exclude` (so an estimate never names the node the successor avoids).
fn estimate_jobs(
    service_plan: &plan::ServicePlan,
    service: &desired::Service,
    owner: &desired::Owner,
    ctx: &ScriptContext,
) -> Vec<crate::job::JobRequest> {
    let marker = |indexes: &[u32]| Marker {
        owner: owner.clone(),
        service: service_plan.service.clone(),
        spec: service.hash.clone(),
        nonce: "estimate".into(),
        indexes: crate::observed::index_ranges(indexes),
        report: Default::default(),
        restart: Default::default(),
        protect: service.protect,
        pred: None,
        endpoints: plan::endpoint_fingerprints(&service_plan.endpoint_env),
    };
    let submits = service_plan.changes.iter().filter(|c| c.submits());
    let plain: Vec<u32> = submits
        .clone()
        .filter(|c| c.backoff.is_none())
        .map(|c| c.index)
        .collect();
    let mut jobs = Vec::new();
    if !plain.is_empty() {
        jobs.push(script::render_with_endpoints(
            &service_plan.service,
            &service.spec,
            &marker(&plain),
            ctx,
            &service_plan.endpoint_env,
        ));
    }
    for change in submits {
        if let Some(backoff) = &change.backoff {
            jobs.push(script::render_successor(
                &service_plan.service,
                &service.spec,
                &marker(&[change.index]),
                ctx,
                backoff.wait,
                backoff.exclude.as_deref(),
                &service_plan.endpoint_env,
            ));
        }
    }
    jobs
}

#[cfg(test)]
mod estimate_tests {
    use super::*;
    use crate::observed::{JobId, JobRecord, JobTimes};

    const NOW: i64 = 1_796_000_000;

    /// A crash-looping replica's successor avoids the node it failed on: Slurm is asked about
    /// that job, `--exclude` and `--begin` included, apart from the plain new replica.
    #[test]
    fn the_estimate_asks_about_the_successor_with_its_exclude_and_begin() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("recipes/test")).unwrap();
        std::fs::create_dir_all(root.join("stacks")).unwrap();
        std::fs::write(
            root.join("stackctl.yaml"),
            "owner: test/estimate\nlog_dir: /logs\n",
        )
        .unwrap();
        std::fs::write(
            root.join("recipes/test/flaky.yaml"),
            "name: flaky\ncommand: exit 3\nrestart: {backoff: 5m}\n",
        )
        .unwrap();
        std::fs::write(
            root.join("stacks/s.yaml"),
            "services:\n  api:\n    recipe: test/flaky\n    replicas: 2\n",
        )
        .unwrap();
        let repo = load(root).unwrap();
        let addr = desired::ServiceAddr::new("s", "api");
        let service = &repo.desired.services[&addr];
        let owner = &repo.settings.owner;
        let comment = Marker {
            owner: owner.clone(),
            service: addr.clone(),
            spec: service.hash.clone(),
            nonce: "n".into(),
            indexes: "0".into(),
            report: Default::default(),
            restart: Default::default(),
            protect: false,
            pred: None,
            endpoints: Vec::new(),
        }
        .to_string();
        let failed = JobRecord {
            id: JobId {
                array: 70,
                task: Some(0),
            },
            comment: comment.into(),
            state: "FAILED".into(),
            reason: "NonZeroExitCode".into(),
            nodes: "node2".into(),
            times: JobTimes {
                start: Some(NOW - 100),
                end: Some(NOW - 10),
                exit: Some(3),
                submit: Some(NOW - 120),
            },
        };
        let mut observed = Observed::from_records([failed], owner);
        observed.listed_at = NOW;
        let plan = plan::compute(owner, &repo.desired, &observed);
        let ctx = ScriptContext {
            log_dir: "/logs".into(),
            image_dir: "/images".into(),
            secrets_dir: None,
        };
        let jobs = estimate_jobs(&plan.services[0], service, owner, &ctx);
        let asked: Vec<(Option<&str>, bool)> = jobs
            .iter()
            .map(|j| (j.options.exclude.as_deref(), j.options.begin.is_some()))
            .collect();
        // Index 1 is new (plain); index 0 restarts away from node2, after its backoff.
        assert_eq!(asked, [(None, false), (Some("node2"), true)]);
    }
}

/// What one pass has read besides the listing, for a second plan in the same pass (an apply
/// plans before and under the lock) to reuse: the cluster's facts, and the specs read back
/// from batch scripts (a spec hash always names the same spec). `listing`, when set, is the
/// listing the next plan uses instead of listing again (the one taking the lock made).
#[derive(Default)]
struct Reads {
    facts: Option<ClusterFacts>,
    specs: BTreeMap<SpecHash, ReplicaSpec>,
    listing: Option<Vec<crate::observed::JobRecord>>,
}

/// [`plan`], reading the cluster's facts and old specs only where `reads` lacks them.
fn plan_with(
    repo: &Repo,
    options: &PlanOptions,
    backend: &dyn Backend,
    reads: &mut Reads,
) -> Result<Planned, Error> {
    let owner = &repo.settings.owner;
    let records = match reads.listing.take() {
        Some(records) => records,
        None => backend.list_jobs().map_err(|cause| Error::Slurm {
            context: "reading the live jobs from Slurm",
            cause,
        })?,
    };
    for legacy in &repo.settings.legacy_owners {
        let (rule, legacy) = (legacy.rule, &legacy.owner);
        let tag = Marker::owner_tag(legacy);
        let legacy_jobs: Vec<crate::observed::JobId> = records
            .iter()
            .filter(|r| r.comment.starts_with(&tag))
            .filter(|r| JobState::from_slurm(&r.state, &r.reason).is_alive())
            .filter(|r| Marker::parse(&r.comment).is_some_and(|m| &m.owner == legacy))
            .map(|r| r.id)
            .collect();
        if !legacy_jobs.is_empty() {
            return Err(Error::Config {
                message: format!(
                    "{} live jobs carry the owner \"{legacy}\", which {rule}; it now derives \
                     \"{owner}\", and would submit every service a second time. To keep \
                     managing those jobs, set `owner: {legacy}` in stackctl.yaml; to start \
                     afresh, cancel them first (scancel {}). Nothing was planned or submitted.",
                    legacy_jobs.len(),
                    crate::observed::compact_job_ids(&legacy_jobs).join(" ")
                ),
            });
        }
    }
    let locks = lock::held(&records, owner);
    let build_jobs: Vec<_> = records
        .iter()
        .filter(|r| r.comment.starts_with(crate::plan::images::BUILD_PREFIX))
        .cloned()
        .collect();
    let known = std::mem::take(&mut reads.specs);
    let mut observed = observe(backend, records, owner, &repo.desired, known);
    attach_results(&mut observed, repo, backend).map_err(|message| Error::Config { message })?;
    reads.specs = observed.specs.clone();
    (options.scope)
        .check(&repo.desired, &observed)
        .map_err(|message| Error::Config { message })?;
    let mut plan = plan::compute_with(owner, &repo.desired, &observed, &options.scope);
    plan.source = options.source.clone();
    plan.warnings.extend(backend.unchecked());
    // Images built from a definition: build, wait for a build, or hold on a failed one.
    if crate::image::any_built(&repo.desired) {
        let ctx = script_context(repo, backend)?;
        crate::image::add_to_plan(&mut plan, owner, &repo.desired, &build_jobs, &ctx);
        options.scope.restrict_images(&mut plan);
    }
    if !options.prune {
        plan.keep_removed_services();
    }
    let mut refused = refusals(&mut plan, &repo.desired, &observed, options)?;
    let submitting: Vec<desired::ServiceAddr> =
        plan.submitting_services().into_iter().cloned().collect();
    if !submitting.is_empty() {
        if reads.facts.is_none() {
            reads.facts = Some(backend.cluster_facts().map_err(|cause| Error::Slurm {
                context: "reading the cluster's partitions and nodes",
                cause,
            })?);
        }
        let facts = reads.facts.as_ref().expect("read above");
        if options.refusals == Refusals::PerService {
            // A service no node can run is refused alone; the others go ahead.
            let unschedulable: Vec<plan::protection::Refusal> = submitting
                .iter()
                .filter_map(|addr| {
                    let problems = crate::cluster::check(&repo.desired, &[addr], facts);
                    (!problems.is_empty()).then(|| plan::protection::Refusal {
                        services: vec![addr.clone()],
                        kind: plan::protection::RefusalKind::Unschedulable,
                        message: format!(
                            "{}: no node of the cluster could ever run it: {}",
                            addr,
                            SpecErrors(problems).to_string().replace('\n', "; ")
                        ),
                    })
                })
                .collect();
            plan::protection::without_refused(&mut plan, &unschedulable);
            refused.extend(unschedulable);
        }
        let submitting: Vec<&desired::ServiceAddr> = submitting.iter().collect();
        let problems = crate::cluster::check(&repo.desired, &submitting, facts);
        crate::cluster::settle_excludes(&mut plan, &repo.desired, facts);
        if !problems.is_empty() && options.refusals == Refusals::WholePlan {
            return Err(Error::Refused {
                message: problems_message(
                    &SpecErrors(problems),
                    "no node of the cluster could ever run this; nothing was planned or submitted",
                ),
            });
        }
    }
    Ok(Planned {
        plan,
        observed,
        locks,
        refused,
    })
}

/// Checks `plan` against protection and the destroy limits. With [`Refusals::WholePlan`] any
/// refusal is an error; with [`Refusals::PerService`] the refused services leave the plan and
/// are returned.
///
/// Protection and `--allow-destroy-all` are judged on the whole plan (an emptied `stacks/`
/// with one protected service left is still "everything"); `--max-destroy` on what remains
/// once the protected services are out, so their refused cancels do not count twice.
fn refusals(
    plan: &mut Plan,
    desired: &desired::Desired,
    observed: &Observed,
    options: &PlanOptions,
) -> Result<Vec<plan::protection::Refusal>, Error> {
    use plan::protection::{self, RefusalKind};
    let mut refused = protection::refusals(plan, desired, observed);
    refused.extend(
        protection::limit_refusals(plan, observed, &options.limits)
            .into_iter()
            .filter(|r| r.kind == RefusalKind::DestroyAll),
    );
    let mut rest = plan.clone();
    protection::without_refused(&mut rest, &refused);
    refused.extend(
        protection::limit_refusals(&rest, observed, &options.limits)
            .into_iter()
            .filter(|r| r.kind == RefusalKind::MaxDestroy),
    );
    if refused.is_empty() {
        return Ok(refused);
    }
    match options.refusals {
        Refusals::WholePlan => {
            // As before per-service refusals existed: the limits as the whole plan has them.
            let mut lines: Vec<String> = protection::violations(plan, desired, observed);
            lines.extend(protection::limit_violations(
                plan,
                observed,
                &options.limits,
            ));
            Err(Error::Refused {
                message: format!(
                    "{}\nthe plan was refused; nothing was done",
                    lines.join("\n")
                ),
            })
        }
        Refusals::PerService => {
            protection::without_refused(plan, &refused);
            Ok(refused)
        }
    }
}

/// How an apply pass plans and takes the lock.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// What to plan.
    pub plan: PlanOptions,
    /// How long to wait for another apply's lock; zero fails at once.
    pub lock_wait: Duration,
    /// A saved plan to execute: the lock is always taken, and right after the plan under it
    /// both fingerprints and the changes are compared with the saved ones; any difference
    /// is an [`Error::Stale`] and nothing is done.
    pub expect: Option<crate::saved::Expected>,
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
    repo: &Repo,
    backend: &dyn Backend,
    options: &ApplyOptions,
    approve: &mut dyn FnMut(&Planned) -> bool,
    progress: &mut dyn Progress,
) -> Result<Outcome, Error> {
    let ctx = script_context(repo, backend)?;
    let mut reads = Reads::default();
    let mut first = plan_with(repo, &options.plan, backend, &mut reads)?;
    let identity = lock::Identity::current();
    if first.plan.is_empty() && options.expect.is_none() {
        // No lock to take, but a stale one (an apply killed after its last step) is removed
        // here too, or nothing would until the next apply with changes.
        let broken = lock::break_stale(backend, &first.locks, &identity, None);
        first.locks.retain(|l| !broken.contains(&l.id));
        return Ok(Outcome::NoChanges(first));
    }
    let request = LockRequest {
        owner: repo.settings.owner.clone(),
        expiry: repo.settings.lock_expiry,
        wait: options.lock_wait,
        partition: repo.settings.lock_partition.clone(),
        identity,
    };
    lock::with_lock(backend, &request, |listing| {
        // The listing that took the lock is the one to plan from: no third listing.
        reads.listing = Some(listing);
        apply_locked(repo, options, backend, &ctx, &mut reads, approve, progress)
    })?
}

fn apply_locked(
    repo: &Repo,
    options: &ApplyOptions,
    backend: &dyn Backend,
    ctx: &ScriptContext,
    reads: &mut Reads,
    approve: &mut dyn FnMut(&Planned) -> bool,
    progress: &mut dyn Progress,
) -> Result<Outcome, Error> {
    let planned = plan_with(repo, &options.plan, backend, reads)?;
    if let Some(expected) = &options.expect {
        let observed = crate::saved::observed_fingerprint(&planned.observed);
        let changes = crate::saved::change_keys(&planned.plan);
        if let Some(message) = crate::saved::staleness(expected, &observed, &changes) {
            return Err(Error::Stale { message });
        }
    }
    if planned.plan.is_empty() {
        return Ok(Outcome::NoChanges(planned));
    }
    if !approve(&planned) {
        return Ok(Outcome::Declined(planned));
    }
    backend
        .create_dir(&ctx.log_dir)
        .map_err(|message| Error::Config {
            message: format!(
                "cannot create the log directory {}: {message}",
                ctx.log_dir.display()
            ),
        })?;
    sync_secrets(repo, &planned.observed, backend, ctx)?;
    let report = apply::apply(
        &planned.plan,
        &repo.desired,
        backend,
        ctx,
        &mut crate::job::new_nonce,
        progress,
    );
    Ok(Outcome::Applied(planned, report))
}

/// Writes the secrets file of every desired spec that uses secrets (before any job that reads
/// it is submitted) and removes those no desired spec or live job needs any more.
fn sync_secrets(
    repo: &Repo,
    observed: &Observed,
    backend: &dyn Backend,
    ctx: &ScriptContext,
) -> Result<(), Error> {
    let Some(dir) = &ctx.secrets_dir else {
        return Ok(());
    };
    let write: BTreeMap<String, String> = repo
        .desired
        .services
        .values()
        .filter(|s| !s.spec.secret_env.is_empty())
        .map(|s| {
            let text = script::secrets_file_text(&s.spec, &repo.secrets);
            (format!("{}.env", s.hash.0), text)
        })
        .collect();
    let keep: std::collections::BTreeSet<String> = observed
        .jobs
        .iter()
        .filter(|job| job.state.is_alive())
        .map(|job| format!("{}.env", job.marker.spec.0))
        .collect();
    backend
        .sync_secrets(dir, &write, &keep)
        .map_err(|message| Error::Config {
            message: format!(
                "cannot write the secrets files in {}: {message}; nothing was cancelled or \
                 submitted",
                dir.display()
            ),
        })
}

/// How [`drive`] repeats apply passes.
#[derive(Debug, Clone)]
pub struct DriveOptions {
    /// The pause between two passes.
    pub poll: Duration,
    /// `apply --wait`: also repeat until every desired replica is ready, and give up after
    /// this long.
    pub wait: Option<Duration>,
}

/// How a driven apply ended.
#[derive(Debug)]
pub enum DriveEnd {
    /// The first plan was not approved; nothing was done.
    Declined,
    /// A pass failed some of its steps (see the report); the passes stopped there.
    Incomplete(ApplyReport),
    /// Converged: no rollout in progress (and with `wait`, every desired replica ready).
    Done,
    /// A rollout stopped: its failed successors were cancelled, the old replicas kept.
    Stopped(Vec<plan::Stopped>),
    /// `wait` ran out; the replicas that are not ready, with what Slurm shows.
    TimedOut(Vec<String>),
    /// An interrupt (Ctrl-C) came between two passes: every pass so far was complete; the
    /// rollout's lines (and with `wait`, the replicas not ready) were not done yet.
    Interrupted(Vec<String>),
}

/// What a driven apply did in all its passes.
#[derive(Debug)]
pub struct Driven {
    /// The last pass's plan.
    pub last: Planned,
    /// How it ended.
    pub end: DriveEnd,
    /// Jobs submitted over all passes.
    pub added: usize,
    /// Jobs cancelled over all passes.
    pub destroyed: usize,
    /// Jobs changed in place (markers rewritten) over all passes.
    pub changed: usize,
    /// Passes run.
    pub passes: usize,
}

/// Applies, then repeats the pass (each one takes the lock and plans again under it, as
/// [`apply`] does) every `drive.poll` while a rollout is in progress, and with `drive.wait`
/// until every desired replica is ready. `approve` is asked for the first pass only: later
/// passes carry out the rollout it approved. A saved plan (`options.expect`) is checked by
/// the first pass only. `on_pass` sees each pass's plan, for progress.
///
/// Ends at the first pass whose plan has no rollout (nor, with `wait`, a replica not ready),
/// at a stopped rollout, at a failed step, or when `wait` runs out. A watch does not use this:
/// it makes one pass per tick, and a rollout advances across ticks.
pub fn drive(
    repo: &Repo,
    backend: &dyn Backend,
    options: &ApplyOptions,
    drive: &DriveOptions,
    approve: &mut dyn FnMut(&Planned) -> bool,
    progress: &mut dyn Progress,
    on_pass: &mut dyn FnMut(&Planned),
) -> Result<Driven, Error> {
    let started = std::time::Instant::now();
    let mut options = options.clone();
    let (mut added, mut destroyed, mut changed, mut passes) = (0, 0, 0, 0);
    loop {
        let first = passes == 0;
        let mut approve_pass = |p: &Planned| !first || approve(p);
        let outcome = apply(repo, backend, &options, &mut approve_pass, progress)?;
        passes += 1;
        options.expect = None;
        let (last, report) = match outcome {
            Outcome::Declined(last) => {
                return Ok(Driven {
                    last,
                    end: DriveEnd::Declined,
                    added,
                    destroyed,
                    changed,
                    passes,
                });
            }
            Outcome::NoChanges(last) => (last, None),
            Outcome::Applied(last, report) => (last, Some(report)),
        };
        on_pass(&last);
        // `--replace` means the jobs this first pass saw, not the successors it starts.
        options.plan.scope.pin(&last.observed);
        if let Some(report) = &report {
            added += report.added;
            destroyed += report.destroyed;
            changed += report.changed;
        }
        let done = move |last, end| Driven {
            last,
            end,
            added,
            destroyed,
            changed,
            passes,
        };
        if let Some(report) = report.filter(|r| !r.is_complete()) {
            return Ok(done(last, DriveEnd::Incomplete(report)));
        }
        if !last.plan.stopped.is_empty() {
            let stopped = last.plan.stopped.clone();
            return Ok(done(last, DriveEnd::Stopped(stopped)));
        }
        let rolling = plan::rolling::in_rollout(&last.plan);
        let waiting = match drive.wait {
            Some(_) => {
                let not_ready = plan::rolling::not_ready(&repo.desired, &last.observed);
                // A pass that changed something planned from the state before the change.
                (!not_ready.is_empty() || plan::rolling::settles(&last.plan)).then_some(not_ready)
            }
            None => None,
        };
        if !rolling && waiting.is_none() {
            return Ok(done(last, DriveEnd::Done));
        }
        if let (Some(limit), Some(not_ready)) = (drive.wait, &waiting)
            && started.elapsed() >= limit
        {
            let not_ready = not_ready.clone();
            return Ok(done(last, DriveEnd::TimedOut(not_ready)));
        }
        if interrupted_during(drive.poll) {
            let mut left: Vec<String> = last
                .plan
                .rollouts
                .iter()
                .map(|r| format!("{}[{}]: {}", r.service, r.index, r.progress))
                .collect();
            left.extend(
                waiting
                    .into_iter()
                    .flatten()
                    .map(|l| format!("waiting: {l}")),
            );
            return Ok(done(last, DriveEnd::Interrupted(left)));
        }
    }
}

/// Sleeps `pause`, or less when this process is interrupted ([`crate::interrupt::interrupted`]); returns
/// whether it was.
fn interrupted_during(pause: Duration) -> bool {
    let until = std::time::Instant::now() + pause;
    loop {
        if crate::interrupt::interrupted().is_some() {
            return true;
        }
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::Silent;
    use crate::cluster::{NodeFacts, PartitionFacts};
    use crate::slurm::fake::{FakeBackend, Op};

    /// A repo on disk with one service of `replicas` sleepers asking for `cpu` CPUs.
    fn repo(replicas: u32, cpu: u32) -> (tempfile::TempDir, Repo) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("recipes/test")).unwrap();
        std::fs::create_dir_all(root.join("stacks")).unwrap();
        std::fs::write(
            root.join("stackctl.yaml"),
            format!(
                "owner: test/reconcile\nlog_dir: {}\n",
                root.join("logs").display()
            ),
        )
        .unwrap();
        std::fs::write(
            root.join("recipes/test/sleeper.yaml"),
            "name: sleeper\ncommand: exec sleep 600\n",
        )
        .unwrap();
        std::fs::write(
            root.join("stacks/s.yaml"),
            format!(
                "services:\n  web:\n    recipe: test/sleeper\n    replicas: {replicas}\n    resources: {{cpu: {cpu}}}\n"
            ),
        )
        .unwrap();
        let repo = load(root).unwrap();
        (dir, repo)
    }

    fn backend() -> FakeBackend {
        let backend = FakeBackend::new();
        backend.state().facts = ClusterFacts {
            partitions: vec![PartitionFacts {
                name: "debug".into(),
                is_default: true,
                nodes: vec!["node1".into()],
                ..Default::default()
            }],
            nodes: vec![NodeFacts {
                name: "node1".into(),
                cpus: 16,
                memory_mb: 16_000,
                cpus_idle: None,
                gpus: vec![],
            }],
            max_array_size: Some(1001),
            default_partition_unknown: false,
        };
        backend
    }

    /// The exit code the binary gives `error` ([`crate::error`]).
    fn exit_code(error: Error) -> u8 {
        crate::error::Error::from(error).kind().exit_code()
    }

    fn run(dir: &Path, repo: &Repo, backend: &FakeBackend) -> Result<Outcome, Error> {
        apply(
            repo,
            backend,
            &ApplyOptions {
                plan: PlanOptions::for_checkout(dir),
                lock_wait: Duration::ZERO,
                expect: None,
            },
            &mut |_| true,
            &mut Silent,
        )
    }

    /// Rewrites the stack file of `dir` with `replicas` sleepers and `protect`, then loads it;
    /// `None` empties the stack.
    fn rewrite(dir: &Path, service: Option<(u32, &str)>) -> Repo {
        let text = match service {
            Some((replicas, protect)) => format!(
                "services:\n  web:\n    recipe: test/sleeper\n    replicas: {replicas}\n    \
                 resources: {{cpu: 1}}\n{protect}"
            ),
            None => "services: {}\n".to_owned(),
        };
        std::fs::write(dir.join("stacks/s.yaml"), text).unwrap();
        load(dir).unwrap()
    }

    #[test]
    fn a_protected_service_refuses_scale_down_and_removal_until_unprotected() {
        let (dir, _) = repo(1, 1);
        let dir = dir.path();
        let backend = backend();
        let protected = rewrite(dir, Some((2, "    protect: true\n")));
        run(dir, &protected, &backend).unwrap();
        let alive = backend.alive();
        assert!(
            alive.iter().all(|j| j.comment.contains(";protect=1")),
            "{alive:?}"
        );
        let cancels = backend.count(Op::Cancel);
        // Scale-down, then removal from the repo (the markers remember): refused.
        for (repo, what) in [
            (
                rewrite(dir, Some((1, "    protect: true\n"))),
                "scale it down from 2 to 1",
            ),
            (
                rewrite(dir, None),
                "destroy it (gone from the repo; 2 running replicas)",
            ),
        ] {
            let error = run(dir, &repo, &backend).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Configuration);
            let text = error.to_string();
            assert!(
                text.contains("s.web is protected") && text.contains(what),
                "{text}"
            );
            assert_eq!(exit_code(error), 3, "refused by a safety rule");
            assert_eq!(backend.count(Op::Cancel), cancels, "nothing cancelled");
        }
        // Un-protect: the markers are rewritten in place, no job replaced.
        let ids: Vec<_> = backend.alive().into_iter().map(|j| j.id).collect();
        let unprotected = rewrite(dir, Some((2, "    protect: false\n")));
        let planned = plan(&unprotected, &PlanOptions::for_checkout(dir), &backend).unwrap();
        let summary = planned.plan.summary();
        assert_eq!((summary.add, summary.change, summary.destroy), (0, 2, 0));
        run(dir, &unprotected, &backend).unwrap();
        let alive = backend.alive();
        assert_eq!(alive.iter().map(|j| j.id).collect::<Vec<_>>(), ids);
        assert!(
            alive.iter().all(|j| !j.comment.contains("protect")),
            "{alive:?}"
        );
        assert!(
            plan(&unprotected, &PlanOptions::for_checkout(dir), &backend)
                .unwrap()
                .plan
                .is_empty()
        );
        // Then the removal goes ahead.
        run(dir, &rewrite(dir, None), &backend).unwrap();
        assert!(backend.alive().is_empty());
    }

    #[test]
    fn a_protected_service_refuses_a_replace_but_not_a_scale_up() {
        let (dir, _) = repo(1, 1);
        let dir = dir.path();
        let backend = backend();
        run(
            dir,
            &rewrite(dir, Some((1, "    protect: true\n"))),
            &backend,
        )
        .unwrap();
        assert!(matches!(
            run(
                dir,
                &rewrite(dir, Some((2, "    protect: true\n"))),
                &backend
            ),
            Ok(Outcome::Applied(..))
        ));
        std::fs::write(
            dir.join("recipes/test/sleeper.yaml"),
            "name: sleeper\ncommand: exec sleep 601\n",
        )
        .unwrap();
        // A recreate-style replace cancels before it submits: refused.
        let recreate = rewrite(
            dir,
            Some((2, "    protect: true\n    update: {strategy: recreate}\n")),
        );
        let error = run(dir, &recreate, &backend).unwrap_err();
        assert!(
            error.to_string().contains("would replace 2 replicas"),
            "{error}"
        );
        // A rolling replace would run a second instance beside each replica: refused too.
        let submits = backend.count(Op::Submit);
        let rolling = rewrite(dir, Some((2, "    protect: true\n")));
        let error = run(dir, &rolling, &backend).unwrap_err();
        assert!(
            error.to_string().contains("s.web is protected")
                && error.to_string().contains("replace 1 replica create-first"),
            "{error}"
        );
        assert_eq!(backend.count(Op::Submit), submits, "nothing submitted");
        // Unprotected, the same rolling replace goes ahead.
        let rolling = rewrite(dir, Some((2, "    protect: false\n")));
        assert!(matches!(
            run(dir, &rolling, &backend),
            Ok(Outcome::Applied(..))
        ));
        assert!(backend.count(Op::Submit) > submits + 1, "a successor");
    }

    #[test]
    fn a_protected_service_is_renewed_only_when_its_stack_writes_renew_before() {
        let (dir, _) = repo(1, 1);
        let dir = dir.path();
        let service = |extra: &str| {
            write_stack(
                dir,
                "s",
                &format!(
                    "services:\n  web:\n    recipe: test/sleeper\n    protect: true\n    \
                     resources: {{time_limit: 60}}\n{extra}"
                ),
            );
            load(dir).map(|repo| repo.desired.services.into_values().next().unwrap())
        };
        let implicit = service("").unwrap();
        assert_eq!(implicit.update.renew_before, Some(360), "the default is on");
        assert!(!plan::protection::renewal_allowed(&implicit));
        let opted = service("    renew_before: 5m\n").unwrap();
        assert!(plan::protection::renewal_allowed(&opted));
        let off = service("    renew_before: 'off'\n").unwrap();
        assert_eq!(off.update.renew_before, None);
        // In the recipe it is no opt-in: the stack must say so.
        std::fs::write(
            dir.join("recipes/test/sleeper.yaml"),
            "name: sleeper\ncommand: exec sleep 600\nrenew_before: 5m\n",
        )
        .unwrap();
        assert!(!plan::protection::renewal_allowed(&service("").unwrap()));
        // Without a time limit there is nothing to renew before.
        write_stack(
            dir,
            "s",
            "services:\n  web:\n    recipe: test/sleeper\n    protect: true\n    \
             renew_before: 5m\n",
        );
        let error = load(dir).unwrap_err().to_string();
        assert!(
            error.contains("stacks/s.yaml:5") && error.contains("no time_limit"),
            "{error}"
        );
    }

    /// Writes `stacks/NAME.yaml`.
    fn write_stack(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(format!("stacks/{name}.yaml")), text).unwrap();
    }

    fn per_service(dir: &Path, limits: plan::protection::DestroyLimits) -> ApplyOptions {
        ApplyOptions {
            plan: PlanOptions {
                limits,
                refusals: Refusals::PerService,
                ..PlanOptions::for_checkout(dir)
            },
            lock_wait: Duration::ZERO,
            expect: None,
        }
    }

    #[test]
    fn per_service_refusals_drop_only_the_refused_services_and_heal_the_rest() {
        let (dir, _) = repo(1, 1);
        let dir = dir.path();
        let backend = backend();
        write_stack(
            dir,
            "s",
            "services:\n  db:\n    recipe: test/sleeper\n    protect: true\n  \
             api:\n    recipe: test/sleeper\n    replicas: 2\n",
        );
        run(dir, &load(dir).unwrap(), &backend).unwrap();
        assert_eq!(backend.alive().len(), 3);
        // db leaves the repo and an api replica is cancelled behind stackctl's back.
        write_stack(
            dir,
            "s",
            "services:\n  api:\n    recipe: test/sleeper\n    replicas: 2\n",
        );
        let repo = load(dir).unwrap();
        let api = |b: &FakeBackend| {
            b.alive()
                .into_iter()
                .filter(|j| j.comment.contains(";svc=api;"))
                .count()
        };
        let victim = backend
            .alive()
            .into_iter()
            .find(|j| j.comment.contains(";svc=api;"))
            .unwrap()
            .id;
        backend.cancel(&[victim]).unwrap();
        assert_eq!(api(&backend), 1);
        // apply refuses it all.
        let error = run(dir, &repo, &backend).unwrap_err();
        assert!(error.to_string().contains("s.db is protected"), "{error}");
        assert_eq!(api(&backend), 1, "apply half-applies nothing");
        // Per service: db refused and left running, api healed in the same pass.
        let outcome = apply(
            &repo,
            &backend,
            &per_service(dir, Default::default()),
            &mut |_| true,
            &mut Silent,
        )
        .unwrap();
        let Outcome::Applied(planned, report) = outcome else {
            panic!("{outcome:?}")
        };
        assert!(report.is_complete(), "{:?}", report.errors);
        assert_eq!(planned.refused.len(), 1, "{:?}", planned.refused);
        let refusal = &planned.refused[0];
        assert_eq!(refusal.kind, plan::protection::RefusalKind::Protected);
        assert_eq!(refusal.services[0].to_string(), "s.db");
        assert_eq!(api(&backend), 2, "api is back");
        assert_eq!(backend.alive().len(), 3, "db still runs");
    }

    #[test]
    fn per_service_reports_a_rejected_service_and_its_dependents_and_starts_the_rest() {
        let (dir, _) = repo(1, 1);
        let dir = dir.path();
        let backend = backend();
        backend.state().reject_scripts_containing = Some("refuse-me".into());
        write_stack(
            dir,
            "s",
            "services:\n  queue:\n    recipe: test/sleeper\n    environment: {MARK: refuse-me}\n  \
             worker:\n    recipe: test/sleeper\n    depends_on:\n      - {service: queue, \
             condition: started}\n  other:\n    recipe: test/sleeper\n",
        );
        let repo = load(dir).unwrap();
        let outcome = apply(
            &repo,
            &backend,
            &per_service(dir, Default::default()),
            &mut |_| true,
            &mut Silent,
        )
        .unwrap();
        let Outcome::Applied(_, report) = outcome else {
            panic!("{outcome:?}")
        };
        let refused: Vec<(String, plan::protection::RefusalKind)> = report
            .refused
            .iter()
            .map(|r| (r.services[0].to_string(), r.kind))
            .collect();
        assert_eq!(
            refused,
            [
                (
                    "s.queue".to_owned(),
                    plan::protection::RefusalKind::Rejected
                ),
                (
                    "s.worker".to_owned(),
                    plan::protection::RefusalKind::Dependency
                ),
            ]
        );
        assert_eq!(report.errors.len(), 2, "each refusal is one of the errors");
        let alive = backend.alive();
        assert_eq!(alive.len(), 1, "{alive:?}");
        assert!(alive[0].comment.contains(";svc=other;"), "{alive:?}");
    }

    #[test]
    fn per_service_destroy_limits_hold_back_every_cancelling_service() {
        let (dir, _) = repo(1, 1);
        let dir = dir.path();
        let backend = backend();
        write_stack(
            dir,
            "s",
            "services:\n  a:\n    recipe: test/sleeper\n    replicas: 2\n  \
             b:\n    recipe: test/sleeper\n    replicas: 2\n",
        );
        run(dir, &load(dir).unwrap(), &backend).unwrap();
        let cancels = backend.count(Op::Cancel);
        let before: Vec<_> = backend.alive().into_iter().map(|j| j.id).collect();
        let limited = |repo: &Repo, limits| match apply(
            repo,
            &backend,
            &per_service(dir, limits),
            &mut |_| true,
            &mut Silent,
        )
        .unwrap()
        {
            Outcome::NoChanges(planned) | Outcome::Applied(planned, _) => planned.refused,
            Outcome::Declined(_) => unreachable!(),
        };
        // Emptied stacks/: nothing cancelled without --allow-destroy-all.
        write_stack(dir, "s", "services: {}\n");
        let empty = load(dir).unwrap();
        let refused = limited(
            &empty,
            plan::protection::DestroyLimits {
                max_destroy: None,
                allow_destroy_all: false,
            },
        );
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].kind, plan::protection::RefusalKind::DestroyAll);
        assert_eq!(refused[0].services.len(), 2);
        assert_eq!(backend.count(Op::Cancel), cancels, "nothing cancelled");
        // a scales down by one and b by two with --max-destroy 2: both held back, and a new
        // service c still starts.
        write_stack(
            dir,
            "s",
            "services:\n  a:\n    recipe: test/sleeper\n  b:\n    recipe: test/sleeper\n    \
             replicas: 0\n  c:\n    recipe: test/sleeper\n",
        );
        let refused = limited(
            &load(dir).unwrap(),
            plan::protection::DestroyLimits {
                max_destroy: Some(2),
                allow_destroy_all: false,
            },
        );
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].kind, plan::protection::RefusalKind::MaxDestroy);
        assert_eq!(refused[0].services.len(), 2, "a and b");
        let alive: Vec<_> = backend.alive().into_iter().map(|j| j.id).collect();
        assert!(
            before.iter().all(|id| alive.contains(id)),
            "nothing cancelled"
        );
        assert_eq!(alive.len(), 5, "c started beside the four");
    }

    #[test]
    fn max_destroy_and_destroy_all_refuse_before_anything_is_cancelled() {
        let (dir, _) = repo(1, 1);
        let dir = dir.path();
        let backend = backend();
        run(dir, &rewrite(dir, Some((3, ""))), &backend).unwrap();
        let cancels = backend.count(Op::Cancel);
        let with = |max_destroy, allow_destroy_all| PlanOptions {
            limits: plan::protection::DestroyLimits {
                max_destroy,
                allow_destroy_all,
            },
            ..PlanOptions::for_checkout(dir)
        };
        let limited = |repo: &Repo, options: PlanOptions| {
            apply(
                repo,
                &backend,
                &ApplyOptions {
                    plan: options,
                    lock_wait: Duration::ZERO,
                    expect: None,
                },
                &mut |_| true,
                &mut Silent,
            )
        };
        let one = rewrite(dir, Some((1, "")));
        let error = limited(&one, with(Some(1), true)).unwrap_err();
        assert!(
            error.to_string().contains(
                "would cancel 2 jobs without a ready successor, more than --max-destroy 1"
            ),
            "{error}"
        );
        let empty = rewrite(dir, None);
        let error = limited(&empty, with(None, false)).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("every job owner test/reconcile runs (3 jobs)")
                && error.to_string().contains("--allow-destroy-all"),
            "{error}"
        );
        assert_eq!(backend.count(Op::Cancel), cancels, "nothing cancelled");
        assert_eq!(backend.alive().len(), 3);
        // Within the limits: a scale-down of two, then emptying with the flag.
        limited(&one, with(Some(2), false)).unwrap();
        assert_eq!(backend.alive().len(), 1);
        limited(&empty, with(Some(1), true)).unwrap();
        assert!(backend.alive().is_empty());
    }

    #[test]
    fn a_converged_cluster_costs_one_listing_and_no_lock() {
        let (dir, repo) = repo(2, 1);
        let backend = backend();
        assert!(matches!(
            run(dir.path(), &repo, &backend),
            Ok(Outcome::Applied(..))
        ));
        let submits = backend.count(Op::Submit);
        let lists = backend.count(Op::List);
        assert!(matches!(
            run(dir.path(), &repo, &backend),
            Ok(Outcome::NoChanges(_))
        ));
        assert_eq!(backend.count(Op::List), lists + 1, "one listing");
        assert_eq!(backend.count(Op::Submit), submits, "no placeholder, no job");
        assert_eq!(backend.count(Op::Facts), 1, "facts only when submitting");
    }

    #[test]
    fn a_plans_start_estimates_ask_slurm_once_per_job_shape() {
        let (dir, _) = repo(2, 1);
        write_stack(
            dir.path(),
            "s",
            "services:\n  web: {recipe: test/sleeper, replicas: 2}\n  api: {recipe: test/sleeper, replicas: 2}\n  \
             db: {recipe: test/sleeper, replicas: 2, resources: {cpu: 2}}\n  one: {recipe: test/sleeper}\n",
        );
        let repo = load(dir.path()).unwrap();
        let backend = backend();
        let planned = plan(&repo, &PlanOptions::for_checkout(dir.path()), &backend).unwrap();
        assert_eq!(planned.plan.services.len(), 4);
        // web and api differ only in name and marker; db asks for more CPUs, one for one index.
        assert_eq!(backend.count(Op::TestSubmit), 3);
    }

    #[test]
    fn a_plan_from_a_listing_started_earlier_is_the_same_plan_with_one_listing() {
        let (dir, repo) = repo(2, 1);
        let backend = backend();
        assert!(matches!(
            run(dir.path(), &repo, &backend),
            Ok(Outcome::Applied(..))
        ));
        // One more replica than is live: the plan submits one.
        let repo = rewrite(dir.path(), Some((3, "")));
        let options = PlanOptions::for_checkout(dir.path());
        let lists = backend.count(Op::List);
        let listing = backend.start_list_jobs();
        let planned = plan_listed(&repo, &options, &backend, listing).unwrap();
        assert_eq!(backend.count(Op::List), lists + 1, "one listing");
        assert!(!planned.plan.is_converged());
        assert_eq!(planned.observed.jobs.len(), 2);
        let again = plan(&repo, &options, &backend).unwrap();
        assert_eq!(planned.plan, again.plan);
        // A listing that fails fails the plan; it is never an empty cluster.
        backend.fail_next(Op::List, crate::slurm::fake::Fault::Timeout);
        let listing = backend.start_list_jobs();
        let error = plan_listed(&repo, &options, &backend, listing).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Transient);
    }

    #[test]
    fn an_apply_that_submits_lists_twice_and_plans_under_the_lock_from_the_second() {
        let (dir, repo) = repo(2, 1);
        let backend = backend();
        let Ok(Outcome::Applied(planned, report)) = run(dir.path(), &repo, &backend) else {
            panic!("the apply submits");
        };
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(backend.count(Op::List), 2, "the plan's and the lock's");
        // The plan under the lock saw the lock: it was made from the listing after it.
        assert_eq!(planned.locks.len(), 1, "{:?}", planned.locks);
        assert_eq!(
            backend.alive().len(),
            2,
            "two replicas, the lock released, no duplicates"
        );
    }

    #[test]
    fn an_apply_with_no_changes_removes_a_lock_left_by_a_dead_apply_but_not_a_live_one() {
        let (dir, repo) = repo(1, 1);
        let backend = backend();
        run(dir.path(), &repo, &backend).unwrap();
        let me = lock::Identity::current();
        let take = |identity| {
            lock::acquire(
                &backend,
                &LockRequest {
                    owner: repo.settings.owner.clone(),
                    expiry: Duration::from_secs(120),
                    wait: Duration::ZERO,
                    partition: None,
                    identity,
                },
            )
            .unwrap()
            .id()
        };
        // Killed after its last submit, before its release: its process is gone.
        let dead = take(lock::Identity {
            pid: 4_194_305,
            ..me.clone()
        });
        let planned = match run(dir.path(), &repo, &backend) {
            Ok(Outcome::NoChanges(planned)) => planned,
            other => panic!("{other:?}"),
        };
        assert!(planned.locks.is_empty(), "{:?}", planned.locks);
        let alive: Vec<_> = backend.alive().into_iter().map(|j| j.id).collect();
        assert!(!alive.contains(&dead), "{alive:?}");
        // A lock whose holder may be alive elsewhere stays, and is reported.
        let live = take(lock::Identity {
            host: "elsewhere".into(),
            ..me
        });
        let planned = match run(dir.path(), &repo, &backend) {
            Ok(Outcome::NoChanges(planned)) => planned,
            other => panic!("{other:?}"),
        };
        assert_eq!(planned.locks.len(), 1);
        assert!(backend.alive().iter().any(|j| j.id == live));
    }

    #[test]
    fn a_held_lock_refuses_the_apply_before_anything_is_submitted() {
        let (dir, repo) = repo(2, 1);
        let backend = backend();
        let holder = lock::acquire(
            &backend,
            &LockRequest {
                owner: repo.settings.owner.clone(),
                expiry: Duration::from_secs(120),
                wait: Duration::ZERO,
                partition: None,
                identity: lock::Identity {
                    host: "elsewhere".into(),
                    boot_id: "b".into(),
                    pid_ns: "p".into(),
                    pid: 1,
                    start_ticks: 1,
                },
            },
        )
        .unwrap();
        let error = run(dir.path(), &repo, &backend).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::LockHeld, "{error}");
        assert!(error.to_string().contains("elsewhere"), "{error}");
        assert_eq!(exit_code(error), 4, "lock held");
        let jobs: Vec<_> = backend.alive().into_iter().map(|j| j.id).collect();
        assert_eq!(
            jobs,
            [holder.id()],
            "only the holder's placeholder is alive"
        );
        assert_eq!(backend.count(Op::TestSubmit), 0);
    }

    #[test]
    fn a_request_no_node_can_satisfy_is_a_configuration_error_naming_the_line() {
        let (dir, repo) = repo(1, 64);
        let backend = backend();
        let error = run(dir.path(), &repo, &backend).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Configuration);
        let text = error.to_string();
        assert!(
            text.contains("stacks/s.yaml:5:") && text.contains("resources.cpu"),
            "{text}"
        );
        assert_eq!(backend.count(Op::Submit), 0, "no lock, no job");
        assert_eq!(exit_code(error), 3, "refused as unschedulable");
    }

    #[test]
    fn a_failed_listing_is_an_error_never_an_empty_cluster() {
        let (dir, repo) = repo(1, 1);
        let backend = backend();
        backend.fail_next(Op::List, crate::slurm::fake::Fault::Timeout);
        let error = run(dir.path(), &repo, &backend).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Transient);
        assert_eq!(backend.count(Op::Submit), 0);
        assert_eq!(exit_code(error), 5, "Slurm unreachable");
    }

    #[test]
    fn a_declined_plan_changes_nothing_and_releases_the_lock() {
        let (dir, repo) = repo(1, 1);
        let backend = backend();
        let outcome = apply(
            &repo,
            &backend,
            &ApplyOptions {
                plan: PlanOptions::for_checkout(dir.path()),
                lock_wait: Duration::ZERO,
                expect: None,
            },
            &mut |planned| {
                assert_eq!(planned.plan.summary().add, 1);
                false
            },
            &mut Silent,
        );
        assert!(matches!(outcome, Ok(Outcome::Declined(_))));
        assert!(backend.alive().is_empty(), "no job and no lock left");
    }

    #[test]
    fn jobs_under_the_old_host_less_owner_stop_the_plan_with_a_migration_message() {
        let (dir, mut repo) = repo(1, 1);
        let backend = backend();
        run(dir.path(), &repo, &backend).unwrap();
        // The same jobs, seen by an upgraded stackctl whose derived owner now has a host.
        let legacy = repo.settings.owner.clone();
        repo.settings.owner = crate::desired::Owner::parse("git.example/test/reconcile").unwrap();
        repo.settings.legacy_owners = vec![crate::desired::LegacyOwner {
            owner: legacy,
            rule: "stackctl before 0.2 derived from this repo's remote without its host",
        }];
        let error = plan(&repo, &PlanOptions::for_checkout(dir.path()), &backend).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Configuration);
        let text = error.to_string();
        assert!(
            text.contains("owner: test/reconcile") && text.contains("scancel"),
            "{text}"
        );
    }

    #[test]
    fn an_unreadable_old_spec_still_plans_the_replacement() {
        let (dir, repo) = repo(1, 1);
        let backend = backend();
        run(dir.path(), &repo, &backend).unwrap();
        let (_, changed) = self::repo(1, 2);
        backend.fail_next(Op::BatchScript, crate::slurm::fake::Fault::Timeout);
        let planned = plan(&changed, &PlanOptions::for_checkout(dir.path()), &backend).unwrap();
        let service = &planned.plan.services[0];
        assert_eq!(
            service.diff, None,
            "the previous spec is unknown, not guessed"
        );
        assert_eq!(planned.plan.summary().add, 1);
        assert_eq!(planned.plan.summary().destroy, 1);
    }

    /// The expectation of a plan saved from `repo` in `dir` now.
    fn saved_now(dir: &Path, repo: &Repo, backend: &FakeBackend) -> crate::saved::Expected {
        let options = PlanOptions::for_checkout(dir);
        let planned = plan(repo, &options, backend).unwrap();
        let desired = crate::saved::desired_fingerprint(dir, repo).unwrap();
        crate::saved::SavedPlan::new(
            &planned.plan,
            &planned.observed,
            options.prune,
            &options.scope,
            desired.clone(),
            0,
        )
        .expected(desired)
    }

    fn run_saved(
        dir: &Path,
        repo: &Repo,
        backend: &FakeBackend,
        expect: crate::saved::Expected,
    ) -> Result<Outcome, Error> {
        apply(
            repo,
            backend,
            &ApplyOptions {
                plan: PlanOptions::for_checkout(dir),
                lock_wait: Duration::ZERO,
                expect: Some(expect),
            },
            &mut |_| true,
            &mut Silent,
        )
    }

    #[test]
    fn a_fresh_saved_plan_is_applied() {
        let (dir, repo) = repo(2, 1);
        let backend = backend();
        let expect = saved_now(dir.path(), &repo, &backend);
        assert!(matches!(
            run_saved(dir.path(), &repo, &backend, expect),
            Ok(Outcome::Applied(..))
        ));
        assert_eq!(backend.alive().len(), 2, "two replicas, no lock left");
    }

    #[test]
    fn a_saved_plan_made_before_another_apply_is_stale_and_does_nothing() {
        let (dir, repo) = repo(2, 1);
        let backend = backend();
        let expect = saved_now(dir.path(), &repo, &backend);
        run(dir.path(), &repo, &backend).unwrap();
        let submits = backend.count(Op::Submit);
        let error = run_saved(dir.path(), &repo, &backend, expect).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Configuration);
        let text = error.to_string();
        assert!(
            text.starts_with("stale plan: the live replicas changed")
                && text.contains("(0 then, 2 now)"),
            "{text}"
        );
        assert_eq!(exit_code(error), 7, "stale saved plan");
        // One submit: the lock's placeholder, released; no job.
        assert_eq!(backend.count(Op::Submit), submits + 1);
        assert_eq!(backend.alive().len(), 2, "the other apply's replicas only");
    }

    #[test]
    fn a_saved_plan_of_other_files_is_stale() {
        let (dir, repo) = repo(2, 1);
        let backend = backend();
        let mut expect = saved_now(dir.path(), &repo, &backend);
        expect.desired_now = "changed".into();
        let error = run_saved(dir.path(), &repo, &backend, expect).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("stale plan: the desired state changed"),
            "{error}"
        );
        assert!(backend.alive().is_empty(), "no job and no lock left");
    }
}
