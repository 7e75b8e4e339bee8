//! `stackctl watch`: keeps the cluster converged to a branch of a git repo (or to local files),
//! heals drift, and reports what it does. Level-triggered: a new commit, a file event or the
//! timer only requests a reconcile; every reconcile is the full pass of [`crate::reconcile`]
//! from scratch, so a missed event can never leave the cluster wrong. tokio lives here (the
//! HTTP endpoints), not in the core.
//!
//! The loop is one thread: refresh the desired state ([`follow`]), reconcile when it changed,
//! when a file changed, or on the timer unless a failure is backing off, record the result in
//! [`state::WatchState`], then wait for the next tick (the interval plus up to 10% jitter), a
//! file event or a signal.
//!
//! A reconcile keeps every guard apply has (protection, `--max-destroy`,
//! `--allow-destroy-all`), but a refusal blocks only the services it concerns
//! ([`reconcile::Refusals::PerService`]): the others converge in the same pass, the refused
//! ones are reported, and the pass fails without backing off.
//!
//! A reconcile is never interrupted: SIGTERM or SIGINT lets the one in flight finish (it
//! releases the lock itself), then the loop exits 0; a second signal exits at once.

mod follow;
pub mod git_sync;
pub mod http;
pub mod metrics;
pub mod publish;
pub mod state;
mod timed;

use crate::apply::Progress;
use crate::desired::{Desired, ServiceAddr};
use crate::observed::{JobId, JobState, Observed};
use crate::plan::protection::Refusal;
use crate::reconcile::{self, ApplyOptions, ErrorKind, Outcome, PlanOptions, Planned};
use anyhow::{Context, Result};
use follow::{Follow, Target};
use state::{ErrorRecord, LockState, ReconcileRecord, RefusedService, ServiceReplicas, WatchState};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How `stackctl watch` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The checkout (git mode) or the directory of files (`--local`).
    pub dir: PathBuf,
    /// How often to fetch and reconcile.
    pub interval: Duration,
    /// The git remote to follow.
    pub remote: String,
    /// The branch to follow.
    pub branch: String,
    /// Follow the files under `dir` instead of git.
    pub local: bool,
    /// Where to serve `/healthz`, `/status` and `/metrics`.
    pub listen: Option<SocketAddr>,
    /// One reconcile, then exit with apply's exit code.
    pub once: bool,
    /// Cancel services gone from the repo (off with `--no-prune`).
    pub prune: bool,
    /// How much one pass may cancel (`--max-destroy`, `--allow-destroy-all`); a pass over a
    /// limit leaves the services that cancel as they are and converges the rest.
    pub limits: crate::plan::protection::DestroyLimits,
    /// Files the ready replicas' endpoints are written to after every reconcile that listed
    /// the cluster (`--write-endpoints FILE:FORMAT`).
    pub write_endpoints: Vec<publish::EndpointsFile>,
}

/// What wakes the loop besides its timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A file under `stacks/`, `recipes/` or `stackctl.yaml` changed (`--local`).
    Files,
    /// SIGTERM or SIGINT.
    Shutdown,
}

/// How long file events are collected before the reconcile they trigger: an editor's save is
/// several events, and a `git checkout` many.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// The longest a stream of file events can put off the reconcile.
const DEBOUNCE_MAX: Duration = Duration::from_millis(1200);

/// Runs the loop until SIGTERM or SIGINT (exit 0), or for one reconcile with `--once`
/// (exit 0 when converged, 1 otherwise, as apply).
pub fn run(options: &Options) -> Result<u8> {
    let state = Arc::new(Mutex::new(WatchState {
        mode: if options.local { "local" } else { "git" },
        started_unix: now_unix(),
        ..WatchState::default()
    }));
    let (wake, wakes) = mpsc::channel();
    let mut follow = if options.local {
        Follow::local(&options.dir, wake.clone())?
    } else {
        git_sync::set_network_timeouts().context("cannot set git's network timeouts")?;
        git_sync::load_ca_certificates().context("cannot load the CA certificates")?;
        Follow::git(&options.dir, &options.remote, &options.branch)?
    };
    let server = match options.listen {
        Some(addr) => {
            let server = http::Server::start(addr, state.clone())
                .with_context(|| format!("cannot serve on {addr}"))?;
            Some(server)
        }
        None => None,
    };
    forward_signals(wake.clone())?;
    tracing::info!(
        dir = %options.dir.display(),
        source = %if options.local { "local files".to_owned() } else { format!("{}/{}", options.remote, options.branch) },
        interval = ?options.interval,
        prune = options.prune,
        "watching"
    );
    let mut backoff = Backoff::default();
    let mut drift = Drift::default();
    // The last slurmrestd listing, so an unchanged cluster is not listed in full every tick.
    let memo = Arc::new(crate::slurm::rest::ListingMemo::default());
    let mut files_changed = false;
    let mut next_tick = Instant::now();
    let code = loop {
        let changed = follow.refresh(&state);
        let due = changed || files_changed || backoff.ready(Instant::now());
        files_changed = false;
        let mut result = PassResult::Error;
        match follow.target() {
            Some(target) if due => {
                result = reconcile_once(target, options, &state, &memo, &mut drift);
                match result {
                    // A refusal needs a person; retrying sooner or later changes nothing, and
                    // the other services must keep healing every tick.
                    PassResult::Ok | PassResult::Refused => backoff.reset(),
                    PassResult::Error => {
                        let delay = backoff.fail(Instant::now(), options.interval);
                        tracing::info!(retry_in = ?delay, "backing off");
                    }
                    PassResult::Skipped => {}
                }
            }
            Some(_) => tracing::debug!("backing off; no reconcile this tick"),
            None => tracing::warn!("no valid desired state yet; nothing to converge to"),
        }
        if options.once {
            if let Some(problem) = follow.problem() {
                tracing::error!("{problem}; --once fails");
                break 1;
            }
            break u8::from(result != PassResult::Ok);
        }
        if next_tick <= Instant::now() {
            next_tick = Instant::now() + jittered(options.interval);
        }
        match wait(&wakes, next_tick) {
            Some(Wake::Files) => files_changed = true,
            Some(Wake::Shutdown) => {
                tracing::info!("shut down; no reconcile in flight, no lock held");
                break 0;
            }
            None => {}
        }
    };
    if let Some(server) = server {
        server.shutdown();
    }
    Ok(code)
}

/// Waits until `until`, or for a wake: file events are collected for [`DEBOUNCE`]; a shutdown
/// wins over everything.
fn wait(wakes: &Receiver<Wake>, until: Instant) -> Option<Wake> {
    let first = match wakes.recv_timeout(until.saturating_duration_since(Instant::now())) {
        Ok(wake) => wake,
        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
    };
    if first == Wake::Shutdown {
        return Some(Wake::Shutdown);
    }
    let deadline = Instant::now() + DEBOUNCE_MAX;
    loop {
        let quiet = DEBOUNCE.min(deadline.saturating_duration_since(Instant::now()));
        match wakes.recv_timeout(quiet) {
            Ok(Wake::Shutdown) => return Some(Wake::Shutdown),
            Ok(Wake::Files) if Instant::now() < deadline => {}
            _ => return Some(Wake::Files),
        }
    }
}

/// Sends [`Wake::Shutdown`] on the first SIGTERM or SIGINT; exits at once on the second.
fn forward_signals(wake: mpsc::Sender<Wake>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                seen += 1;
                if seen > 1 {
                    tracing::warn!(signal, "second signal: exiting now");
                    std::process::exit(130);
                }
                tracing::info!(
                    signal,
                    "finishing the reconcile in flight, then exiting (signal again to exit now)"
                );
                let _ = wake.send(Wake::Shutdown);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// How one reconcile ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PassResult {
    /// Converged, or nothing to do.
    Ok,
    /// Everything else converged, but some services were refused ([`Refusal`]); no backoff,
    /// `--once` exits 1.
    Refused,
    /// Failed; retried with backoff.
    Error,
    /// Another apply held the lock; tried again next tick.
    Skipped,
}

/// One reconcile of `target`: the full pass, no prompt, no waiting for the lock.
fn reconcile_once(
    target: &Target,
    options: &Options,
    state: &Arc<Mutex<WatchState>>,
    memo: &Arc<crate::slurm::rest::ListingMemo>,
    drift: &mut Drift,
) -> PassResult {
    let started = Instant::now();
    let backend = match crate::slurm::for_settings(&target.repo.settings, Some(memo)) {
        Ok(backend) => timed::Timed::new(backend, state.clone()),
        Err(error) => {
            tracing::error!(%error, "cannot reach Slurm");
            return PassResult::Error;
        }
    };
    let apply_options = ApplyOptions {
        plan: PlanOptions {
            source: target.source.clone(),
            prune: options.prune,
            limits: options.limits,
            scope: Default::default(),
            refusals: reconcile::Refusals::PerService,
        },
        lock_wait: Duration::ZERO,
        expect: None,
    };
    let outcome = reconcile::apply(
        &target.repo,
        &backend,
        &apply_options,
        &mut |_| true,
        &mut LogProgress,
    );
    let seconds = started.elapsed().as_secs_f64();
    let commit = target.commit_short().map(str::to_owned);
    let shown = commit.as_deref().unwrap_or("-");
    let mut st = lock(state);
    let (result, plan_summary) = match outcome {
        Ok(Outcome::NoChanges(planned) | Outcome::Declined(planned)) => {
            st.lock = match planned.locks.first() {
                Some(lock) => LockState::HeldByOther {
                    holder: lock.to_string(),
                },
                None => LockState::Free,
            };
            record_services(&mut st, &target.repo.desired, &planned.observed);
            drift.listed(&planned, None);
            publish::write_all(
                &options.write_endpoints,
                &target.repo.desired,
                &planned.observed,
            );
            note_not_pruned(&planned);
            if record_refused(&mut st, &planned.refused, commit.as_deref()) {
                (PassResult::Refused, "no other changes".to_owned())
            } else {
                tracing::info!(
                    commit = shown,
                    duration_ms = ms(seconds),
                    "reconciled: no changes"
                );
                (PassResult::Ok, "no changes".to_owned())
            }
        }
        Ok(Outcome::Applied(planned, report)) => {
            st.lock = LockState::ReleasedByUs;
            record_services(&mut st, &target.repo.desired, &planned.observed);
            if !options.write_endpoints.is_empty() {
                publish::write_all(
                    &options.write_endpoints,
                    &target.repo.desired,
                    &without_cancelled(&planned),
                );
            }
            note_not_pruned(&planned);
            let summary = summary(&planned);
            let corrections = drift.corrections(&planned, &report);
            drift.listed(&planned, Some(&report));
            let drift = corrections > 0;
            st.drift_corrections += corrections as u64;
            let mut refused = planned.refused.clone();
            refused.extend(report.refused.iter().cloned());
            let refusing = record_refused(&mut st, &refused, commit.as_deref());
            // Each refusal found by apply is also one of its errors; any other error fails.
            let failed = report.errors.len() > report.refused.len();
            if refusing && !failed {
                tracing::warn!(
                    commit = shown,
                    plan = %summary,
                    added = report.added,
                    destroyed = report.destroyed,
                    drift,
                    duration_ms = ms(seconds),
                    "reconciled the other services; some were refused"
                );
                (PassResult::Refused, summary)
            } else if report.is_complete() {
                tracing::info!(
                    commit = shown,
                    plan = %summary,
                    added = report.added,
                    destroyed = report.destroyed,
                    drift,
                    duration_ms = ms(seconds),
                    "reconciled: applied"
                );
                (PassResult::Ok, summary)
            } else {
                let message = report
                    .errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n");
                tracing::error!(
                    commit = shown,
                    plan = %summary,
                    added = report.added,
                    destroyed = report.destroyed,
                    failed = report.failed,
                    duration_ms = ms(seconds),
                    "reconcile incomplete:\n{message}"
                );
                st.last_error = Some(ErrorRecord {
                    at_unix: now_unix(),
                    commit: commit.clone(),
                    kind: if report.retry_may_help() {
                        "transient"
                    } else {
                        "definite"
                    },
                    message,
                });
                (PassResult::Error, summary)
            }
        }
        Err(error) if error.kind() == ErrorKind::LockHeld => {
            tracing::warn!(commit = shown, "{error}; skipping this reconcile");
            st.lock = LockState::HeldByOther {
                holder: error.to_string(),
            };
            (PassResult::Skipped, "skipped: lock held".to_owned())
        }
        Err(error) => {
            let kind = error.kind();
            tracing::error!(
                commit = shown,
                ?kind,
                duration_ms = ms(seconds),
                "reconcile failed: {error}"
            );
            st.last_error = Some(ErrorRecord {
                at_unix: now_unix(),
                commit: commit.clone(),
                kind: kind_name(kind),
                message: error.to_string(),
            });
            (PassResult::Error, "not planned".to_owned())
        }
    };
    if !matches!(result, PassResult::Refused | PassResult::Skipped) {
        st.refused.clear();
    }
    match result {
        PassResult::Ok => {
            st.reconciles_ok += 1;
            st.last_success_unix = Some(now_unix());
            st.last_error = None;
            st.applied_commit = commit.clone();
        }
        PassResult::Refused => st.reconciles_error += 1,
        PassResult::Error => st.reconciles_error += 1,
        PassResult::Skipped => st.reconciles_skipped += 1,
    }
    st.last = Some(ReconcileRecord {
        finished_unix: now_unix(),
        commit,
        result: match result {
            PassResult::Ok => "ok",
            PassResult::Refused => "refused",
            PassResult::Error => "error",
            PassResult::Skipped => "skipped",
        },
        plan: plan_summary,
        duration_seconds: seconds,
    });
    result
}

/// Records the services refused this pass in `/status` and the metric, one log line each;
/// returns whether there were any. A service refused for several reasons is listed once per
/// reason.
fn record_refused(st: &mut WatchState, refused: &[Refusal], commit: Option<&str>) -> bool {
    let mut seen = BTreeSet::new();
    st.refused = refused
        .iter()
        .flat_map(|r| r.services.iter().map(move |s| (s, r)))
        .filter(|(service, r)| seen.insert(((*service).clone(), r.kind)))
        .map(|(service, r)| {
            tracing::error!(
                %service,
                reason = r.kind.as_str(),
                "refused; its replicas are left as they are: {}",
                r.message
            );
            RefusedService {
                stack: service.stack.clone(),
                service: service.service.clone(),
                reason: r.kind.as_str(),
                message: r.message.clone(),
            }
        })
        .collect();
    if st.refused.is_empty() {
        return false;
    }
    st.last_error = Some(ErrorRecord {
        at_unix: now_unix(),
        commit: commit.map(str::to_owned),
        kind: "refused",
        message: refused
            .iter()
            .map(|r| r.message.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    });
    true
}

/// What the loop remembers to tell drift from its own doing: the replicas alive at the last
/// listing, and the jobs it cancelled itself that Slurm still lists.
#[derive(Debug, Default)]
struct Drift {
    seen: BTreeSet<(ServiceAddr, u32)>,
    ours: BTreeSet<JobId>,
}

impl Drift {
    /// How many replicas this pass recreated that ended outside stackctl's own actions:
    /// creates of an index whose job ended (crashed, cancelled by hand, timed out…) unless
    /// stackctl cancelled it, or whose job was alive at the last listing and is gone from
    /// Slurm's listing now. Renewals, rolling and forced replacements, scale-ups, held
    /// services released and retired predecessors never count; neither does a service
    /// refused this pass.
    fn corrections(&self, planned: &Planned, report: &crate::apply::ApplyReport) -> usize {
        let refused: BTreeSet<&ServiceAddr> =
            report.refused.iter().flat_map(|r| &r.services).collect();
        let planned_count = planned
            .plan
            .services
            .iter()
            .filter(|s| !refused.contains(&s.service))
            .flat_map(|s| s.changes.iter().map(move |c| (&s.service, c)))
            .filter(|(_, c)| c.action == crate::plan::Action::Create)
            .filter(|(service, c)| match c.reason {
                crate::plan::Reason::Ended => c
                    .job
                    .as_ref()
                    .is_none_or(|job| !self.ours.contains(&job.job_id)),
                crate::plan::Reason::Missing => self.seen.contains(&((*service).clone(), c.index)),
                _ => false,
            })
            .count();
        planned_count.min(report.added)
    }

    /// Remembers what `planned` listed and, when it was applied, the jobs its plan cancels.
    fn listed(&mut self, planned: &Planned, applied: Option<&crate::apply::ApplyReport>) {
        let listed: BTreeSet<JobId> = planned.observed.jobs.iter().map(|j| j.id).collect();
        self.ours.retain(|id| listed.contains(id));
        let mut alive = planned.observed.clone();
        if let Some(report) = applied {
            let refused: BTreeSet<&ServiceAddr> =
                report.refused.iter().flat_map(|r| &r.services).collect();
            let cancels = planned
                .plan
                .services
                .iter()
                .filter(|s| !refused.contains(&s.service))
                .flat_map(|s| &s.changes)
                .filter(|c| {
                    matches!(
                        c.action,
                        crate::plan::Action::Destroy | crate::plan::Action::Replace
                    )
                })
                .filter_map(|c| c.job.as_ref().map(|j| j.job_id));
            self.ours.extend(cancels);
            alive = without_cancelled(planned);
        }
        self.seen = alive
            .alive()
            .map(|job| (job.marker.service.clone(), job.index))
            .collect();
    }
}

fn summary(planned: &Planned) -> String {
    planned.plan.summary().to_string()
}

/// Logs the services left running because pruning is off.
fn note_not_pruned(planned: &Planned) {
    for (service, replicas) in &planned.plan.not_pruned {
        tracing::info!(%service, replicas, "not pruned: gone from the repo, left running (--no-prune)");
    }
    // A rollout advances one step per pass; say where it stands, and when it stopped.
    for r in &planned.plan.rollouts {
        tracing::info!(service = %r.service, index = r.index, predecessor = %r.predecessor, progress = %r.progress, "rollout in progress");
    }
    for s in &planned.plan.stopped {
        tracing::error!(service = %s.service, index = s.index, successor = %s.successor, why = %s.why, "rollout stopped; the old replica keeps running");
    }
}

/// The jobs `planned` observed, less those its plan cancels (destroys and recreate-style
/// replaces; a rolling replace keeps its job), which must not be published as endpoints until
/// the next listing.
fn without_cancelled(planned: &Planned) -> Observed {
    let cancelled: BTreeSet<JobId> = planned
        .plan
        .services
        .iter()
        .flat_map(|s| &s.changes)
        .filter(|c| c.action != crate::plan::Action::Create)
        .filter(|c| c.order != crate::plan::Order::CreateFirst)
        .filter_map(|c| c.job.as_ref().map(|j| j.job_id))
        .collect();
    let mut observed = planned.observed.clone();
    observed.jobs.retain(|job| !cancelled.contains(&job.id));
    observed
}

/// Records desired and running replicas per service, for `/metrics`.
fn record_services(state: &mut WatchState, desired: &Desired, observed: &Observed) {
    let mut running: BTreeMap<&ServiceAddr, BTreeSet<u32>> = BTreeMap::new();
    for job in observed.alive() {
        let indexes = running.entry(&job.marker.service).or_default();
        if job.state == JobState::Running {
            indexes.insert(job.index);
        }
    }
    let addresses: BTreeSet<&ServiceAddr> = desired
        .services
        .keys()
        .chain(running.keys().copied())
        .collect();
    state.services = addresses
        .into_iter()
        .map(|addr| ServiceReplicas {
            stack: addr.stack.clone(),
            service: addr.service.clone(),
            desired: desired.services.get(addr).map_or(0, |s| s.replicas),
            running: running.get(addr).map_or(0, |r| r.len() as u32),
        })
        .collect();
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Configuration => "configuration",
        ErrorKind::Transient => "transient",
        ErrorKind::Definite => "definite",
        ErrorKind::LockHeld => "lock_held",
    }
}

/// The retry policy for failed reconciles: the n-th failure in a row waits
/// `interval × 2^(n-1)`, at most ten minutes (or one interval, when that is longer). A new
/// desired state is tried at once whatever the backoff says.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    next: Option<Instant>,
}

impl Backoff {
    /// Records a failure at `now`; returns how long until the next try.
    fn fail(&mut self, now: Instant, interval: Duration) -> Duration {
        self.failures += 1;
        let cap = interval.max(Duration::from_secs(600));
        let delay = interval
            .checked_mul(1 << (self.failures - 1).min(20))
            .unwrap_or(cap)
            .min(cap);
        self.next = Some(now + delay);
        delay
    }

    /// Forgets past failures.
    fn reset(&mut self) {
        *self = Backoff::default();
    }

    /// Whether a retry is due at `now`.
    fn ready(&self, now: Instant) -> bool {
        self.next.is_none_or(|next| now >= next)
    }
}

/// `interval` plus up to 10% at random, so many loops started together spread out.
fn jittered(interval: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    interval + interval.mul_f64((random % 1000) as f64 / 10_000.0)
}

/// Logs apply progress.
struct LogProgress;

impl Progress for LogProgress {
    fn cancelled(&mut self, job_ids: &[JobId]) {
        let ids = crate::observed::compact_job_ids(job_ids).join(" ");
        tracing::info!(jobs = %ids, "cancelled");
    }
    fn submitted(&mut self, service: &ServiceAddr, indexes: &str, array_id: u64) {
        tracing::info!(%service, indexes, array_id, "submitted");
    }
}

/// Seconds since the Unix epoch.
fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn ms(seconds: f64) -> u64 {
    (seconds * 1000.0).round() as u64
}

fn lock(state: &Mutex<WatchState>) -> MutexGuard<'_, WatchState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_interval_and_is_capped() {
        let interval = Duration::from_secs(60);
        let now = Instant::now();
        let mut backoff = Backoff::default();
        assert!(backoff.ready(now), "no failure yet");
        let delays: Vec<u64> = (0..7)
            .map(|_| backoff.fail(now, interval).as_secs())
            .collect();
        assert_eq!(delays, [60, 120, 240, 480, 600, 600, 600]);
        assert!(!backoff.ready(now + Duration::from_secs(599)));
        assert!(backoff.ready(now + Duration::from_secs(600)));
        backoff.reset();
        assert!(backoff.ready(now), "a success forgets the failures");
    }

    #[test]
    fn a_long_interval_is_its_own_cap() {
        let mut backoff = Backoff::default();
        let hour = Duration::from_secs(3600);
        assert_eq!(backoff.fail(Instant::now(), hour), hour);
        assert_eq!(
            backoff.fail(Instant::now(), hour),
            hour,
            "never above the cap"
        );
    }

    #[test]
    fn jitter_adds_at_most_a_tenth() {
        let interval = Duration::from_secs(10);
        let samples: Vec<Duration> = (0..200).map(|_| jittered(interval)).collect();
        assert!(
            samples
                .iter()
                .all(|d| *d >= interval && *d < interval * 11 / 10)
        );
        assert!(
            samples.iter().collect::<BTreeSet<_>>().len() > 1,
            "the jitter varies"
        );
    }

    #[test]
    fn file_events_are_debounced_and_a_shutdown_wins() {
        let (tx, rx) = mpsc::channel();
        for _ in 0..5 {
            tx.send(Wake::Files).unwrap();
        }
        let far = Instant::now() + Duration::from_secs(60);
        let started = Instant::now();
        assert_eq!(wait(&rx, far), Some(Wake::Files));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "debounced, not the interval"
        );
        assert!(rx.try_recv().is_err(), "the burst was consumed as one wake");
        tx.send(Wake::Files).unwrap();
        tx.send(Wake::Shutdown).unwrap();
        assert_eq!(wait(&rx, far), Some(Wake::Shutdown));
        assert_eq!(
            wait(&rx, Instant::now() + Duration::from_millis(20)),
            None,
            "timer"
        );
    }
}
