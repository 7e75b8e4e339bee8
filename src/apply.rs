//! Executes a plan through a backend, in an order that never leaves a service worse off than
//! the plan found it:
//!
//! 1. Every new batch script is checked with the backend's `test_submit` (`sbatch
//!    --test-only`), once per shape: scripts that differ only in per-job fields (name, marker,
//!    output paths, the body below the options) get one check between them. A service whose
//!    script Slurm rejects is left exactly as it is: none of its replicas is cancelled and
//!    nothing is submitted for it.
//! 2. One cancel for every destroy and for the predecessors of the accepted replacements. When
//!    the cancel fails, the jobs are listed again to learn exactly which ones ended.
//! 3. One submission per service and index group (an array each), new indexes and the
//!    replacements whose predecessor is known to be gone; a replacement whose predecessor may
//!    still run is not submitted, so an index never runs twice. A rolling replace
//!    ([`Order::CreateFirst`]) is the exception: its successor is submitted alone, with
//!    `pred=<old job>` in its marker, and the old job is left to a later pass. Services go in
//!    the plan's dependency order; a service with `condition: started` dependencies is
//!    submitted with `--dependency=after:<the job ids just submitted for them>`, and not at
//!    all when one of them failed to submit. Submissions go in dependency waves, up to the
//!    backend's [`Backend::max_in_flight`] at once within a wave (pre-checks of different
//!    shapes too); the report and the progress events keep plan order.
//!
//! 4. The markers of [`Action::Update`] changes are rewritten in place (`protect=`).
//!
//! Nothing is rolled back: the report says what was done, what failed and what was not
//! attempted, and the next apply starts from what Slurm then shows.
//!
//! An interrupt (Ctrl-C or SIGTERM, caught by [`crate::interrupt`]) stops the apply at the
//! next step: the Slurm calls in flight finish (it runs in a process group of its own, so
//! Ctrl-C does not reach it), nothing new is started, and the report lists what was done and
//! what was not, as after a failure. The caller then releases the lock as on any other path.

use crate::desired::{Desired, ServiceAddr};
use crate::job::JobRequest;
use crate::observed::{JobId, JobState, Marker, RestartRecord, index_groups, index_ranges};
use crate::plan::protection::RefusalKind;
use crate::plan::{Action, Order, Plan};
use crate::render::script::{self, ScriptContext};
use crate::slurm::{Backend, submit_once};
use std::collections::{BTreeMap, BTreeSet};

/// What an apply did, in jobs.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Jobs submitted.
    pub added: usize,
    /// Jobs cancelled.
    pub destroyed: usize,
    /// Jobs whose marker was rewritten in place.
    pub changed: usize,
    /// Jobs the plan meant to submit or cancel that failed or were not attempted (after a
    /// failure, or an interrupt).
    pub failed: usize,
    /// Everything that went wrong, one entry per failed step.
    pub errors: Vec<ApplyError>,
    /// Every step that succeeded, one line each (`s.web[0-1]: submitted job array 123`), so a
    /// partial failure can say precisely what was done.
    pub done: Vec<String>,
    /// Whether an interrupt stopped the apply before every step was attempted.
    pub interrupted: bool,
    /// The services left as they were because Slurm rejected their new job or a service they
    /// start after was not submitted; each is also one of `errors`.
    pub refused: Vec<crate::plan::protection::Refusal>,
}

/// One failed step of an apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyError {
    /// What failed, with Slurm's message.
    pub message: String,
    /// Whether running apply again may succeed without changing the repo (Slurm was
    /// unreachable or slow) rather than needing a fix (Slurm rejected the request).
    pub retryable: bool,
    /// Whether the step was not attempted because of an interrupt, rather than failed.
    pub interrupted: bool,
}

impl ApplyReport {
    /// Returns whether every planned step succeeded.
    pub fn is_complete(&self) -> bool {
        self.errors.is_empty()
    }

    /// Returns whether running apply again may help: some failure was transient.
    pub fn retry_may_help(&self) -> bool {
        self.errors.iter().any(|e| e.retryable)
    }

    fn fail(&mut self, jobs: usize, message: String, retryable: bool) {
        self.failed += jobs;
        self.errors.push(ApplyError {
            message,
            retryable,
            interrupted: false,
        });
    }

    /// Records a step not attempted because of an interrupt.
    fn skip(&mut self, jobs: usize, what: String) {
        self.interrupted = true;
        self.failed += jobs;
        self.errors.push(ApplyError {
            message: format!("{what}: not attempted (interrupted)"),
            retryable: true,
            interrupted: true,
        });
    }
}

/// Progress events, for the command layer to print.
pub trait Progress {
    /// Called after jobs were cancelled.
    fn cancelled(&mut self, job_ids: &[JobId]);
    /// Called after a service's replicas were submitted.
    fn submitted(&mut self, service: &ServiceAddr, indexes: &str, array_id: u64);
    /// Asked before each step: whether to stop here. By default, whether this process was
    /// interrupted ([`crate::interrupt::interrupted`]).
    fn interrupted(&self) -> bool {
        crate::interrupt::interrupted().is_some()
    }
    /// Called after an image's build job was submitted; `line` says which and where its log
    /// goes.
    fn build_submitted(&mut self, line: &str) {
        let _ = line;
    }
}

/// Progress that goes nowhere.
pub struct Silent;

impl Progress for Silent {
    fn cancelled(&mut self, _: &[JobId]) {}
    fn submitted(&mut self, _: &ServiceAddr, _: &str, _: u64) {}
}

/// One submission: the indexes of one array, its marker and its job.
struct Submission<'a> {
    service: ServiceAddr,
    indexes: Vec<u32>,
    marker: Marker,
    job: JobRequest,
    /// Services submitted earlier in this apply that these jobs start after.
    start_after: &'a [ServiceAddr],
    /// Queued jobs these jobs start after.
    start_after_jobs: &'a [JobId],
}

/// Executes `plan`. `new_nonce` returns a fresh unique nonce per submission.
pub fn apply(
    plan: &Plan,
    desired: &Desired,
    backend: &dyn Backend,
    ctx: &ScriptContext,
    new_nonce: &mut dyn FnMut() -> String,
    progress: &mut dyn Progress,
) -> ApplyReport {
    let mut report = ApplyReport::default();

    // 0. Images: submit each build once; a service's new jobs start after its image's build.
    let image_jobs = submit_images(
        plan,
        desired,
        backend,
        ctx,
        new_nonce,
        &mut report,
        progress,
    );

    // 1. Render every submission and pre-check one job of each shape (see
    //    [`JobRequest::shape`]); a service with a rejected shape is left alone, and so is
    //    every other of that shape.
    let mut submissions: Vec<Submission> = Vec::new();
    let mut blocked: BTreeSet<&ServiceAddr> = BTreeSet::new();
    // Every rendered submission with its service's place in the plan and its shape.
    let mut rendered: Vec<(usize, usize, Submission)> = Vec::new();
    let mut shapes: Vec<JobRequest> = Vec::new();
    let mut shape_of: std::collections::HashMap<String, usize> = Default::default();
    for (at, service_plan) in plan.services.iter().enumerate() {
        let Some(service) = desired.services.get(&service_plan.service) else {
            continue;
        };
        if let Some(Err(message)) = image_jobs.get(&service_plan.service) {
            let jobs = service_plan.changes.iter().filter(|c| c.submits()).count();
            report.fail(
                jobs,
                format!(
                    "{}: not submitted, and nothing replaced: {message}",
                    service_plan.service
                ),
                true,
            );
            blocked.insert(&service_plan.service);
            continue;
        }
        // New replicas go as arrays; the successor of a failed job goes alone, with its own
        // crash-loop record, begin time and excluded nodes; so does a rolling successor, whose
        // marker names its predecessor (`pred=`).
        let rolling = |c: &crate::plan::Change| c.order == Order::CreateFirst;
        let indexes: Vec<u32> = service_plan
            .changes
            .iter()
            .filter(|c| {
                matches!(c.action, Action::Create | Action::Replace)
                    && c.backoff.is_none()
                    && !rolling(c)
            })
            .map(|c| c.index)
            .collect();
        type Planned<'p> = (Vec<u32>, Option<&'p crate::plan::Backoff>, Option<JobId>);
        let mut planned: Vec<Planned> = index_groups(&indexes)
            .into_iter()
            .map(|group| (group, None, None))
            .collect();
        planned.extend(
            service_plan
                .changes
                .iter()
                .filter_map(|c| Some((vec![c.index], Some(c.backoff.as_ref()?), None))),
        );
        planned.extend(
            service_plan
                .changes
                .iter()
                .filter(|c| c.action == Action::Replace && rolling(c))
                .filter_map(|c| Some((vec![c.index], None, Some(c.job.as_ref()?.job_id)))),
        );
        for (group, backoff, pred) in planned {
            let (marker, job) = submission(
                &Submit {
                    owner: &plan.owner,
                    service: &service_plan.service,
                    desired: service,
                    indexes: &group,
                    backoff,
                    pred,
                    endpoint_env: &service_plan.endpoint_env,
                    commit: plan.source.as_ref().map(|s| s.commit.as_str()),
                },
                new_nonce(),
                ctx,
            );
            let shape = *shape_of.entry(job.shape()).or_insert_with(|| {
                shapes.push(job.clone());
                shapes.len() - 1
            });
            let submission = Submission {
                service: service_plan.service.clone(),
                indexes: group,
                marker,
                job,
                start_after: &service_plan.start_after,
                start_after_jobs: &service_plan.start_after_jobs,
            };
            rendered.push((at, shape, submission));
        }
    }
    // One pre-check per shape, several at once; an interrupt leaves the rest unasked.
    let mut answers: Vec<Option<Result<(), (String, bool)>>> = vec![None; shapes.len()];
    run_bounded(
        &shapes,
        backend.max_in_flight(),
        progress,
        &|job: &JobRequest| pre_check(backend, job),
        &mut |_, shape, answer| answers[shape] = Some(answer),
    );
    let mut unanswered = false;
    let mut rendered = rendered.into_iter().peekable();
    for (at, service_plan) in plan.services.iter().enumerate() {
        let mut mine: Vec<(usize, Submission)> = Vec::new();
        while let Some((_, shape, submission)) = rendered.next_if(|(a, _, _)| *a == at) {
            mine.push((shape, submission));
        }
        if mine.iter().any(|(shape, _)| answers[*shape].is_none()) {
            unanswered = true;
            break;
        }
        let rejection = mine
            .iter()
            .find_map(|(shape, _)| answers[*shape].as_ref().and_then(|a| a.as_ref().err()));
        if let Some((e, retryable)) = rejection {
            let retryable = *retryable;
            let jobs = service_plan
                .changes
                .iter()
                .map(|c| if c.action == Action::Replace { 2 } else { 1 })
                .sum();
            report.fail(
                jobs,
                format!(
                    "{}: Slurm would not accept the new job, so its replicas were left as they are: {e}",
                    service_plan.service
                ),
                retryable,
            );
            if !retryable {
                refuse(&mut report, &service_plan.service, RefusalKind::Rejected);
            }
            blocked.insert(&service_plan.service);
            continue;
        }
        submissions.extend(mine.into_iter().map(|(_, submission)| submission));
    }

    if unanswered || progress.interrupted() {
        // Nothing was changed yet: every change not refused above is left for the next apply.
        for service_plan in plan
            .services
            .iter()
            .filter(|s| !s.changes.is_empty() && !blocked.contains(&s.service))
        {
            let jobs = service_plan
                .changes
                .iter()
                .map(|c| if c.action == Action::Replace { 2 } else { 1 })
                .sum();
            let count = service_plan.changes.len();
            report.skip(
                jobs,
                format!(
                    "{}: {count} planned change{}",
                    service_plan.service,
                    if count == 1 { "" } else { "s" }
                ),
            );
        }
        return report;
    }

    // 2. Cancel destroys and the predecessors of accepted replacements, in one call, in
    //    reverse dependency order (dependents first).
    let mut predecessor: BTreeMap<(&ServiceAddr, u32), JobId> = BTreeMap::new();
    let mut cancels: Vec<JobId> = Vec::new();
    for service_plan in plan
        .services
        .iter()
        .rev()
        .filter(|s| !blocked.contains(&s.service))
    {
        for change in &service_plan.changes {
            let Some(job) = &change.job else { continue };
            match change.action {
                Action::Destroy => cancels.push(job.job_id),
                // A rolling replace keeps the old job: a later pass retires it.
                Action::Replace if change.order == Order::CreateFirst => {}
                Action::Replace => {
                    cancels.push(job.job_id);
                    predecessor.insert((&service_plan.service, change.index), job.job_id);
                }
                Action::Create | Action::Update => {}
            }
        }
    }
    let still_alive = cancel(backend, &cancels, &mut report, progress);

    // 3. Submit, except replacements whose predecessor may still run, in dependency waves:
    //    a wave is the longest run of submissions (in plan order) none of which starts after
    //    a service of the same wave, so every dependency got its job ids in an earlier wave.
    //    Within a wave up to `max_in_flight` submissions run at once; the report and the
    //    progress events follow plan order all the same.
    let limit = backend.max_in_flight();
    let mut submitted: BTreeMap<ServiceAddr, Vec<u64>> = BTreeMap::new();
    let mut stopped = false;
    let mut rest = submissions.into_iter().peekable();
    while rest.peek().is_some() {
        let mut wave: Vec<Submission> = Vec::new();
        let mut in_wave: BTreeSet<ServiceAddr> = BTreeSet::new();
        while let Some(next) =
            rest.next_if(|next| !next.start_after.iter().any(|d| in_wave.contains(d)))
        {
            in_wave.insert(next.service.clone());
            wave.push(next);
        }
        if stopped {
            for submission in &wave {
                report.skip(
                    submission.indexes.len(),
                    format!(
                        "submitting {}[{}]",
                        submission.service, submission.marker.indexes
                    ),
                );
            }
            continue;
        }
        let steps: Vec<Step> = wave
            .into_iter()
            .map(|submission| {
                prepare(
                    submission,
                    &submitted,
                    &predecessor,
                    &still_alive,
                    &image_jobs,
                )
            })
            .collect();
        let started = run_bounded(
            &steps,
            limit,
            progress,
            &|step: &Step| {
                step.submit
                    .as_ref()
                    .map(|(job, nonce, _, _)| submit_once(backend, job, nonce))
            },
            &mut |progress, at, outcome| {
                let step = &steps[at];
                if let Some((jobs, message, dependency)) = &step.before {
                    report.fail(*jobs, message.clone(), true);
                    if *dependency {
                        refuse(&mut report, &step.service, RefusalKind::Dependency);
                    }
                }
                let (Some(outcome), Some((_, _, indexes, jobs))) = (outcome, &step.submit) else {
                    return;
                };
                match outcome {
                    Ok(job_id) => {
                        submitted
                            .entry(step.service.clone())
                            .or_default()
                            .push(job_id);
                        report.added += jobs;
                        report.done.push(format!(
                            "{}[{indexes}]: submitted job array {job_id}",
                            step.service
                        ));
                        progress.submitted(&step.service, indexes, job_id);
                    }
                    Err(e) => {
                        report.fail(
                            *jobs,
                            format!("submitting {}[{indexes}]: {e}", step.service),
                            !e.is_definite_rejection(),
                        );
                        // Slurm rejected a job its shape's pre-check let through (a
                        // job_submit plugin that reads names or scripts): a service that
                        // lost nothing to a cancel is left as it was, as after a rejected
                        // pre-check.
                        let cancelled = predecessor.keys().any(|(s, _)| *s == &step.service);
                        if e.is_definite_rejection() && !cancelled {
                            refuse(&mut report, &step.service, RefusalKind::Rejected);
                        }
                    }
                }
            },
        );
        for step in &steps[started..] {
            report.skip(
                step.planned.0,
                format!("submitting {}[{}]", step.service, step.planned.1),
            );
        }
        stopped = started < steps.len();
    }
    // 4. Rewrite the markers whose `protect=` changed; the jobs keep running.
    for service_plan in &plan.services {
        let Some(service) = desired.services.get(&service_plan.service) else {
            continue;
        };
        for change in &service_plan.changes {
            let (Action::Update, Some(job)) = (change.action, &change.job) else {
                continue;
            };
            if progress.interrupted() {
                report.skip(
                    1,
                    format!(
                        "rewriting the marker of {}[{}] (job {})",
                        service_plan.service, change.index, job.job_id
                    ),
                );
                continue;
            }
            let marker = Marker {
                protect: service.protect,
                ..(*job.marker).clone()
            };
            match backend.update_comment(&job.job_id, &marker.to_string()) {
                Ok(()) => {
                    report.changed += 1;
                    report.done.push(format!(
                        "{}[{}]: marker of job {} rewritten (protect: {})",
                        service_plan.service, change.index, job.job_id, service.protect
                    ));
                }
                Err(e) => report.fail(
                    1,
                    format!(
                        "rewriting the marker of {}[{}] (job {}): {e}",
                        service_plan.service, change.index, job.job_id
                    ),
                    !e.is_definite_rejection(),
                ),
            }
        }
    }
    report
}

/// One submission of a dependency wave, ready to go: what was found before submitting, and
/// the job to submit.
struct Step {
    service: ServiceAddr,
    /// The jobs and indexes (ranges) as planned: what an interrupt reports as not attempted.
    planned: (usize, String),
    /// Jobs not submitted, why, and whether because of a dependency (a refusal).
    before: Option<(usize, String, bool)>,
    /// The job, its nonce, the indexes it submits (ranges) and how many.
    submit: Option<(JobRequest, String, String, usize)>,
}

/// Makes `submission` ready to submit: its dependencies' job ids (`submitted` by earlier
/// waves), the indexes whose predecessor is known to be gone, its image's build.
fn prepare(
    mut submission: Submission<'_>,
    submitted: &BTreeMap<ServiceAddr, Vec<u64>>,
    predecessor: &BTreeMap<(&ServiceAddr, u32), JobId>,
    still_alive: &BTreeSet<JobId>,
    image_jobs: &BTreeMap<ServiceAddr, Result<u64, String>>,
) -> Step {
    let mut step = Step {
        service: submission.service.clone(),
        planned: (submission.indexes.len(), submission.marker.indexes.clone()),
        before: None,
        submit: None,
    };
    let mut after: Vec<String> = submission
        .start_after_jobs
        .iter()
        .map(|id| id.to_string())
        .collect();
    let missing: Vec<String> = submission
        .start_after
        .iter()
        .filter(|dependency| !submitted.contains_key(*dependency))
        .map(|dependency| dependency.reference())
        .collect();
    if !missing.is_empty() {
        step.before = Some((
            submission.indexes.len(),
            format!(
                "{}[{}]: not submitted, because {} it starts after (depends_on) was not submitted",
                submission.service,
                submission.marker.indexes,
                missing.join(", ")
            ),
            true,
        ));
        return step;
    }
    for dependency in submission.start_after {
        after.extend(submitted[dependency].iter().map(u64::to_string));
    }
    let (ready, waiting): (Vec<u32>, Vec<u32>) = submission.indexes.iter().partition(|&&index| {
        predecessor
            .get(&(&submission.service, index))
            .is_none_or(|job| !still_alive.contains(job))
    });
    if !waiting.is_empty() {
        step.before = Some((
            waiting.len(),
            format!(
                "{}[{}]: not submitted, because the job it replaces could not be cancelled",
                submission.service,
                index_ranges(&waiting)
            ),
            false,
        ));
        if ready.is_empty() {
            return step;
        }
        submission.marker.indexes = index_ranges(&ready);
        submission.job.options.array = Some(submission.marker.indexes.clone());
        submission.job.options.comment = submission.marker.to_string();
        submission.indexes = ready;
    }
    if !after.is_empty() {
        submission.job.options.dependency = Some(format!("after:{}", after.join(":")));
    }
    if let Some(Ok(build)) = image_jobs.get(&submission.service) {
        let afterok = format!("afterok:{build}");
        submission.job.options.dependency = Some(match submission.job.options.dependency {
            Some(other) => format!("{other},{afterok}"),
            None => afterok,
        });
    }
    step.submit = Some((
        submission.job,
        submission.marker.nonce,
        submission.marker.indexes,
        submission.indexes.len(),
    ));
    step
}

/// Pre-checks one shape: Slurm's answer, or the error and whether a retry may help. One
/// answer stands for every service of the shape, so a transient failure (slurmctld busy) is
/// asked again, as a submit is ([`crate::slurm::SUBMIT_ATTEMPTS`]); a pre-check submits
/// nothing, so asking again is always safe.
fn pre_check(backend: &dyn Backend, job: &JobRequest) -> Result<(), (String, bool)> {
    let mut attempt = 1;
    loop {
        match backend.test_submit(job) {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() && attempt < crate::slurm::SUBMIT_ATTEMPTS => {
                tracing::warn!(attempt, error = %e, "pre-check failed; asking again");
                std::thread::sleep(std::time::Duration::from_secs(u64::from(attempt)));
                attempt += 1;
            }
            Err(e) => return Err((e.to_string(), !e.is_definite_rejection())),
        }
    }
}

/// Runs `work` on `items`, up to `limit` at once on threads of their own, and hands each
/// result to `done` on the calling thread, in the items' order (a result that comes early
/// waits for those before it). Before starting each item it asks `progress` whether to stop;
/// once it says so, nothing new starts and the calls in flight finish. Returns how many items
/// were started: the first ones, each of them handed to `done`.
///
/// Each Slurm command's child is spawned by the thread that waits for it, so its parent-death
/// signal is tied to a thread that lives exactly as long as the command (see
/// `slurm::cli::Effect::Mutating`).
fn run_bounded<T: Sync, R: Send>(
    items: &[T],
    limit: usize,
    progress: &mut dyn Progress,
    work: &(dyn Fn(&T) -> R + Sync),
    done: &mut dyn FnMut(&mut dyn Progress, usize, R),
) -> usize {
    let limit = limit.max(1);
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::channel();
        let mut results: Vec<Option<R>> = items.iter().map(|_| None).collect();
        let (mut started, mut handed, mut in_flight) = (0, 0, 0);
        let mut stop = false;
        loop {
            while !stop && in_flight < limit && started < items.len() {
                if progress.interrupted() {
                    stop = true;
                    break;
                }
                let (sender, item, at) = (sender.clone(), &items[started], started);
                scope.spawn(move || {
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(item)));
                    let _ = sender.send((at, result));
                });
                started += 1;
                in_flight += 1;
            }
            if in_flight == 0 {
                break;
            }
            let (at, result) = receiver.recv().expect("every worker sends before it ends");
            in_flight -= 1;
            results[at] = Some(result.unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
            while handed < started {
                let Some(result) = results[handed].take() else {
                    break;
                };
                done(progress, handed, result);
                handed += 1;
            }
        }
        started
    })
}

/// Submits the plan's image builds (one job per image, however many services share it) and
/// returns, per service needing an image, the build job its new jobs start after, or why
/// they cannot be submitted (the build failed, or could not be submitted).
fn submit_images(
    plan: &Plan,
    desired: &Desired,
    backend: &dyn Backend,
    ctx: &ScriptContext,
    new_nonce: &mut dyn FnMut() -> String,
    report: &mut ApplyReport,
    progress: &mut dyn Progress,
) -> BTreeMap<ServiceAddr, Result<u64, String>> {
    use crate::plan::images::ImageAction;
    let mut jobs = BTreeMap::new();
    for step in &plan.images {
        let outcome = match &step.action {
            ImageAction::Building(job) => Ok(*job),
            ImageAction::Failed { .. } => Err(crate::plan::images::step_line(step, &ctx.log_dir)),
            ImageAction::Build(_) => {
                let setup = step
                    .services
                    .first()
                    .and_then(|s| desired.services.get(s))
                    .map(|s| s.spec.setup.clone())
                    .unwrap_or_default();
                let nonce = new_nonce();
                let job = crate::plan::images::build_job(
                    step,
                    &plan.owner,
                    &nonce,
                    &ctx.image_dir,
                    &ctx.log_dir,
                    &setup,
                );
                match submit_once(backend, &job, &nonce) {
                    Ok(id) => {
                        let line = format!(
                            "image {}: submitted build job {id} (log: {})",
                            step.key.image,
                            ctx.log_dir.join(step.key.log_name()).display()
                        );
                        progress.build_submitted(&line);
                        report.done.push(line);
                        Ok(id)
                    }
                    Err(e) => Err(format!(
                        "submitting the build of image {}: {e}",
                        step.key.image
                    )),
                }
            }
        };
        for service in &step.services {
            jobs.insert(service.clone(), outcome.clone());
        }
    }
    jobs
}

/// Records that `service` was left as it was for `kind`, with the error just reported.
fn refuse(report: &mut ApplyReport, service: &ServiceAddr, kind: RefusalKind) {
    let message = report
        .errors
        .last()
        .map(|e| e.message.clone())
        .unwrap_or_default();
    report.refused.push(crate::plan::protection::Refusal {
        services: vec![service.clone()],
        kind,
        message,
    });
}

fn cancelled_line(job_ids: &[JobId]) -> String {
    format!(
        "cancelled {} {}: {}",
        job_ids.len(),
        if job_ids.len() == 1 { "job" } else { "jobs" },
        crate::observed::compact_job_ids(job_ids).join(" ")
    )
}

/// What one submission of a service's replicas is made from.
#[derive(Debug, Clone, Copy)]
pub struct Submit<'a> {
    /// The owner written into the marker.
    pub owner: &'a crate::desired::Owner,
    /// The service.
    pub service: &'a ServiceAddr,
    /// Its desired state (spec, hash, `protect`, one-shot job or not).
    pub desired: &'a crate::desired::Service,
    /// The replica indexes of the array.
    pub indexes: &'a [u32],
    /// For the successor of a failed replica: its crash-loop backoff.
    pub backoff: Option<&'a crate::plan::Backoff>,
    /// For a rolling successor: the job it replaces (`pred=`).
    pub pred: Option<JobId>,
    /// The resolved `endpoint_env` values the job gets.
    pub endpoint_env: &'a std::collections::BTreeMap<String, String>,
    /// The commit the repo was read from (a one-shot job records it).
    pub commit: Option<&'a str>,
}

/// The marker and job one submission sends to Slurm: the one place apply builds them, and
/// what `stackctl render` prints (with the nonce `<nonce>`).
pub fn submission(
    submit: &Submit<'_>,
    nonce: String,
    ctx: &crate::render::script::ScriptContext,
) -> (Marker, crate::job::JobRequest) {
    let Submit {
        owner,
        service: addr,
        desired: service,
        indexes,
        backoff,
        pred,
        endpoint_env,
        commit,
    } = *submit;
    let marker = Marker {
        owner: owner.clone(),
        service: addr.clone(),
        spec: service.hash.clone(),
        nonce,
        indexes: index_ranges(indexes),
        report: Default::default(),
        restart: backoff.map(restart_record).unwrap_or_default(),
        protect: service.protect,
        pred,
        endpoints: crate::plan::endpoint_fingerprints(endpoint_env),
    };
    // A one-shot job records its run and results ([`script::render_job`]).
    let job = match (&service.job, backoff) {
        (Some(_), _) => script::render_job(
            addr,
            &service.spec,
            &marker,
            ctx,
            endpoint_env,
            (commit, backoff.map_or(0, |b| b.wait)),
        ),
        (None, None) => {
            script::render_with_endpoints(addr, &service.spec, &marker, ctx, endpoint_env)
        }
        (None, Some(b)) => script::render_successor(
            addr,
            &service.spec,
            &marker,
            ctx,
            b.wait,
            b.exclude.as_deref(),
            endpoint_env,
        ),
    };
    (marker, job)
}

/// The marker record of a failed replica's successor.
fn restart_record(backoff: &crate::plan::Backoff) -> RestartRecord {
    RestartRecord {
        restarts: backoff.restart,
        fail: Some(backoff.last_failure.clone()),
        not_before: Some(backoff.not_before),
    }
}

/// Cancels `job_ids` and returns the ones that may still be alive afterwards (none when the
/// cancel succeeded). A failed cancel is followed by a listing, so the report says exactly
/// which jobs were cancelled.
fn cancel(
    backend: &dyn Backend,
    job_ids: &[JobId],
    report: &mut ApplyReport,
    progress: &mut dyn Progress,
) -> BTreeSet<JobId> {
    if job_ids.is_empty() {
        return BTreeSet::new();
    }
    let error = match backend.cancel(job_ids) {
        Ok(()) => {
            report.destroyed += job_ids.len();
            report.done.push(cancelled_line(job_ids));
            progress.cancelled(job_ids);
            return BTreeSet::new();
        }
        Err(e) => e,
    };
    let retryable = !error.is_definite_rejection();
    let Ok(records) = backend.list_jobs() else {
        report.fail(
            job_ids.len(),
            format!(
                "cancelling {} jobs: {error}; which of them ended could not be listed",
                job_ids.len()
            ),
            true,
        );
        return job_ids.iter().copied().collect();
    };
    let alive: BTreeSet<JobId> = records
        .iter()
        .filter(|r| JobState::from_slurm(&r.state, &r.reason).is_alive())
        .map(|r| r.id)
        .collect();
    let (left, gone): (Vec<JobId>, Vec<JobId>) = job_ids.iter().partition(|id| alive.contains(id));
    if !gone.is_empty() {
        report.destroyed += gone.len();
        report.done.push(cancelled_line(&gone));
        progress.cancelled(&gone);
    }
    report.fail(
        left.len(),
        format!(
            "cancelling {} of {} jobs failed ({}): {error}",
            left.len(),
            job_ids.len(),
            crate::observed::compact_job_ids(&left).join(" ")
        ),
        retryable,
    );
    left.into_iter().collect()
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{
        Desired, Origin, Owner, ReplicaSpec, ResourceSpec, Service, ServiceAddr, SlurmSpec,
    };
    use crate::observed::Observed;
    use crate::plan;
    use crate::slurm::fake::{FakeBackend, Fault, Op};

    fn owner() -> Owner {
        Owner::parse("test/apply").unwrap()
    }

    fn service(replicas: u32, partition: &str) -> Service {
        let spec = ReplicaSpec {
            container: None,
            setup: Vec::new(),
            image: None,
            command: Some("exec sleep 600".into()),
            resources: ResourceSpec {
                nodes: 1,
                cpu: 1,
                memory: None,
                memory_per_cpu: None,
                gpu: 0,
                gpu_type: None,
                time_limit: None,
                cpu_bind: None,
            },
            environment: Default::default(),
            ports: vec![],
            slurm: SlurmSpec {
                partition: Some(partition.into()),
                ..Default::default()
            },
            health: None,
            endpoint_env: Default::default(),
            secret_env: Default::default(),
        };
        Service {
            recipe: "test/sleeper".into(),
            replicas,
            hash: spec.hash(),
            spec,
            restart: Default::default(),
            protect: false,
            update: Default::default(),
            origins: [(
                "recipe".to_owned(),
                Origin {
                    file: "stacks/s.yaml".into(),
                    position: Some((3, 13)),
                    field: "services.web.recipe".into(),
                },
            )]
            .into(),
            depends_on: Vec::new(),
            replace_on_endpoint_move: true,
            job: None,
        }
    }

    fn desired(services: &[(&str, Service)]) -> Desired {
        Desired {
            services: services
                .iter()
                .map(|(name, s)| (ServiceAddr::new("s", *name), s.clone()))
                .collect(),
        }
    }

    fn ctx() -> ScriptContext {
        ScriptContext {
            log_dir: "/tmp/logs".into(),
            image_dir: "/tmp/images".into(),
            secrets_dir: None,
        }
    }

    /// Plans against the fake's jobs and applies; returns the report.
    fn converge(backend: &FakeBackend, desired: &Desired) -> ApplyReport {
        let observed = Observed::from_records(backend.list_jobs().unwrap(), &owner());
        let plan = plan::compute(&owner(), desired, &observed);
        let mut n = 0;
        let mut nonce = || {
            n += 1;
            format!("nonce{n}")
        };
        apply(&plan, desired, backend, &ctx(), &mut nonce, &mut Silent)
    }

    fn alive_indexes(backend: &FakeBackend, partition: &str) -> Vec<u32> {
        let mut indexes: Vec<u32> = backend
            .alive()
            .iter()
            .filter(|j| j.script.contains(&format!("--partition={partition}")))
            .filter_map(|j| j.id.task)
            .collect();
        indexes.sort_unstable();
        indexes
    }

    /// `service` depending on `s/<on>` with `condition`.
    fn depending(mut service: Service, on: &str, condition: crate::desired::Condition) -> Service {
        service.depends_on.push(crate::desired::Dependency {
            service: ServiceAddr::new("s", on),
            condition,
        });
        service
    }

    /// Progress that reports an interrupt once `after` submissions were made.
    struct InterruptAfter {
        after: usize,
        submitted: usize,
    }

    impl Progress for InterruptAfter {
        fn cancelled(&mut self, _: &[JobId]) {}
        fn submitted(&mut self, _: &ServiceAddr, _: &str, _: u64) {
            self.submitted += 1;
        }
        fn interrupted(&self) -> bool {
            self.submitted >= self.after
        }
    }

    fn converge_interrupted(backend: &FakeBackend, desired: &Desired, after: usize) -> ApplyReport {
        let observed = Observed::from_records(backend.list_jobs().unwrap(), &owner());
        let plan = plan::compute(&owner(), desired, &observed);
        let mut n = 0;
        let mut nonce = || {
            n += 1;
            format!("nonce{n}")
        };
        let mut progress = InterruptAfter {
            after,
            submitted: 0,
        };
        apply(&plan, desired, backend, &ctx(), &mut nonce, &mut progress)
    }

    #[test]
    fn an_interrupt_stops_at_the_next_step_and_reports_what_was_and_was_not_done() {
        let backend = FakeBackend::new();
        backend.state().max_in_flight = 1;
        let three = desired(&[
            ("a", service(2, "pa")),
            ("b", service(1, "pb")),
            ("c", service(3, "pc")),
        ]);
        let report = converge_interrupted(&backend, &three, 1);
        assert!(report.interrupted && !report.is_complete());
        assert_eq!((report.added, report.failed), (2, 4), "{report:?}");
        assert_eq!(report.done, ["s.a[0-1]: submitted job array 1"]);
        let skipped: Vec<&str> = report.errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            skipped,
            [
                "submitting s.b[0]: not attempted (interrupted)",
                "submitting s.c[0-2]: not attempted (interrupted)"
            ]
        );
        assert_eq!(alive_indexes(&backend, "pa"), [0, 1]);
        assert_eq!(backend.count(Op::Submit), 1);
        // Interrupted before the first step: nothing is cancelled or submitted.
        let report = converge_interrupted(&backend, &desired(&[("a", service(1, "pa"))]), 0);
        assert!(report.interrupted);
        assert_eq!((report.added, report.destroyed), (0, 0));
        assert_eq!(
            report.errors[0].message,
            "s.a: 1 planned change: not attempted (interrupted)"
        );
        assert_eq!(backend.count(Op::Cancel), 0);
        assert_eq!(alive_indexes(&backend, "pa"), [0, 1]);
    }

    #[test]
    fn an_interrupt_lets_the_calls_in_flight_finish_and_starts_nothing_more() {
        let backend = FakeBackend::new();
        backend.state().max_in_flight = 2;
        let six = desired(&[
            ("a", service(1, "pa")),
            ("b", service(1, "pb")),
            ("c", service(1, "pc")),
            ("d", service(1, "pd")),
            ("e", service(1, "pe")),
            ("f", service(1, "pf")),
        ]);
        // `a` is held until `b` exists, so both are in flight before any job exists; the
        // interrupt comes with the first job: both finish, nothing more starts.
        backend.state().hold_submit_until =
            Some(("--partition=pa".into(), "--partition=pb".into()));
        let observed = Observed::from_records(backend.list_jobs().unwrap(), &owner());
        let plan = plan::compute(&owner(), &six, &observed);
        let mut n = 0;
        let mut nonce = || {
            n += 1;
            format!("nonce{n}")
        };
        let mut progress = InterruptOnceAJobExists(backend.clone());
        let report = apply(&plan, &six, &backend, &ctx(), &mut nonce, &mut progress);
        assert!(report.interrupted, "{report:?}");
        assert_eq!((report.added, report.failed), (2, 4), "{report:?}");
        assert_eq!(
            report.done,
            [
                "s.a[0]: submitted job array 2",
                "s.b[0]: submitted job array 1"
            ]
        );
        let skipped: Vec<&str> = report.errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            skipped,
            ["c", "d", "e", "f"]
                .map(|s| format!("submitting s.{s}[0]: not attempted (interrupted)"))
        );
        assert_eq!(backend.count(Op::Submit), 2);
        assert_eq!(backend.alive().len(), 2);
    }

    /// Progress that reports an interrupt once the fake holds any job.
    struct InterruptOnceAJobExists(FakeBackend);

    impl Progress for InterruptOnceAJobExists {
        fn cancelled(&mut self, _: &[JobId]) {}
        fn submitted(&mut self, _: &ServiceAddr, _: &str, _: u64) {}
        fn interrupted(&self) -> bool {
            !self.0.alive().is_empty()
        }
    }

    /// Progress that records the services submitted, in the order it hears of them.
    #[derive(Default)]
    struct Heard(Vec<String>);

    impl Progress for Heard {
        fn cancelled(&mut self, _: &[JobId]) {}
        fn submitted(&mut self, service: &ServiceAddr, _: &str, _: u64) {
            self.0.push(service.to_string());
        }
        fn interrupted(&self) -> bool {
            false
        }
    }

    #[test]
    fn submissions_in_flight_at_once_are_reported_in_plan_order() {
        let backend = FakeBackend::new();
        // `a` is held until `c` exists: with calls in flight at once, `c` gets the lower id.
        backend.state().hold_submit_until =
            Some(("--partition=pa".into(), "--partition=pc".into()));
        let three = desired(&[
            ("a", service(1, "pa")),
            ("b", service(1, "pb")),
            ("c", service(2, "pc")),
        ]);
        let observed = Observed::from_records(backend.list_jobs().unwrap(), &owner());
        let plan = plan::compute(&owner(), &three, &observed);
        let mut n = 0;
        let mut nonce = || {
            n += 1;
            format!("nonce{n}")
        };
        let mut heard = Heard::default();
        let report = apply(&plan, &three, &backend, &ctx(), &mut nonce, &mut heard);
        assert!(report.is_complete(), "{report:?}");
        let id = |partition: &str| {
            backend
                .alive()
                .iter()
                .find(|j| j.script.contains(&format!("--partition={partition}")))
                .unwrap()
                .id
                .array
        };
        // One at a time, `a` would wait for `c` in vain (10 s) and get the lower id; whether
        // `a` was still in flight when `c` was made depends on the threads' scheduling, so
        // the peak of calls in flight is not asserted.
        assert!(id("pc") < id("pa"), "c was submitted while a was in flight");
        assert_eq!(
            report.done,
            [
                format!("s.a[0]: submitted job array {}", id("pa")),
                format!("s.b[0]: submitted job array {}", id("pb")),
                format!("s.c[0-1]: submitted job array {}", id("pc")),
            ]
        );
        assert_eq!(heard.0, ["s.a", "s.b", "s.c"]);
    }

    fn with_cpus(mut service: Service, cpus: u32) -> Service {
        service.spec.resources.cpu = cpus;
        service.hash = service.spec.hash();
        service
    }

    #[test]
    fn services_of_one_shape_share_a_pre_check_and_other_shapes_get_their_own() {
        let backend = FakeBackend::new();
        let desired = desired(&[
            ("a", service(1, "p")),
            ("b", service(1, "p")),
            ("c", service(1, "p")),
            ("other-partition", service(1, "q")),
            ("more-cpus", with_cpus(service(1, "p"), 2)),
            ("array-of-two", service(2, "p")),
        ]);
        let report = converge(&backend, &desired);
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(report.added, 7);
        assert_eq!(backend.count(Op::TestSubmit), 4, "a, b and c share one");
        assert_eq!(backend.count(Op::Submit), 6);
    }

    #[test]
    fn a_rejected_shape_blocks_every_service_of_that_shape_and_only_them() {
        let backend = FakeBackend::new();
        backend.state().reject_scripts_containing = Some("--partition=bad".into());
        let desired = desired(&[
            ("a", service(1, "bad")),
            ("b", service(1, "good")),
            ("c", service(2, "bad")),
            ("d", service(1, "bad")),
        ]);
        let report = converge(&backend, &desired);
        assert_eq!((report.added, report.failed), (1, 4), "{report:?}");
        let refused: Vec<String> = report
            .refused
            .iter()
            .map(|r| r.services[0].to_string())
            .collect();
        assert_eq!(refused, ["s.a", "s.c", "s.d"]);
        assert!(
            report
                .errors
                .iter()
                .all(|e| e.message.contains("Slurm would not accept the new job")),
            "{:?}",
            report.errors
        );
        assert_eq!(
            backend.count(Op::TestSubmit),
            3,
            "bad[0], good[0], bad[0-1]"
        );
        assert_eq!(backend.count(Op::Submit), 1);
        assert_eq!(alive_indexes(&backend, "good"), [0]);
    }

    #[test]
    fn a_pre_check_that_timed_out_is_asked_again_before_its_shape_is_given_up() {
        let backend = FakeBackend::new();
        backend.fail_next(Op::TestSubmit, Fault::Timeout);
        let desired = desired(&[("a", service(1, "p")), ("b", service(1, "p"))]);
        let report = converge(&backend, &desired);
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(backend.count(Op::TestSubmit), 2);
        assert_eq!(report.added, 2);
    }

    #[test]
    fn the_shape_of_a_job_keeps_what_slurm_decides_on_and_drops_per_job_fields() {
        let job = |edit: &dyn Fn(&mut JobRequest)| {
            let mut job = JobRequest {
                options: crate::job::JobOptions {
                    name: "s.a".into(),
                    comment: "stackctl/v1;nonce=1".into(),
                    array: Some("0".into()),
                    cpus_per_task: Some(1),
                    memory: Some("16M".into()),
                    partition: Some("debug".into()),
                    output: Some("/logs/a.out".into()),
                    error: Some("/logs/a.err".into()),
                    ..Default::default()
                },
                body: "exec sleep 600 # a\n".into(),
            };
            edit(&mut job);
            job.shape()
        };
        let base = job(&|_| {});
        let same = job(&|j| {
            j.options.name = "s.b".into();
            j.options.comment = "stackctl/v1;nonce=2".into();
            j.options.output = Some("/logs/b.out".into());
            j.options.error = None;
            j.body = "exec sleep 600 # b\n".into();
        });
        assert_eq!(base, same);
        for (what, edit) in [
            (
                "array",
                &(|j: &mut JobRequest| j.options.array = Some("1".into()))
                    as &dyn Fn(&mut JobRequest),
            ),
            ("array size", &|j| j.options.array = Some("0-1".into())),
            ("cpus", &|j| j.options.cpus_per_task = Some(2)),
            ("memory", &|j| j.options.memory = Some("32M".into())),
            ("partition", &|j| j.options.partition = Some("gpu".into())),
            ("gres", &|j| j.options.gres = Some("gpu:1".into())),
            ("time", &|j| j.options.time_limit = Some(5)),
            ("exclude", &|j| j.options.exclude = Some("node1".into())),
            ("begin", &|j| j.options.begin = Some("now+30".into())),
            ("dependency", &|j| {
                j.options.dependency = Some("after:1".into())
            }),
            ("qos", &|j| j.options.qos = Some("high".into())),
            ("account", &|j| j.options.account = Some("x".into())),
        ] {
            assert_ne!(base, job(edit), "{what}");
        }
    }

    #[test]
    fn a_started_dependency_is_submitted_first_and_the_dependent_after_its_job_ids() {
        use crate::desired::Condition;
        let backend = FakeBackend::new();
        // `a` sorts before `z` but depends on it: `z` goes first.
        let desired = desired(&[
            ("a", depending(service(2, "pa"), "z", Condition::Started)),
            ("z", service(1, "pz")),
        ]);
        let report = converge(&backend, &desired);
        assert!(report.is_complete(), "{:?}", report.errors);
        let jobs = backend.alive();
        let z = jobs
            .iter()
            .find(|j| j.script.contains("--partition=pz"))
            .unwrap();
        let a = jobs
            .iter()
            .find(|j| j.script.contains("--partition=pa"))
            .unwrap();
        assert!(z.id.array < a.id.array, "z submitted first: {jobs:?}");
        assert!(
            a.script
                .contains(&format!("#SBATCH --dependency=after:{}\n", z.id.array)),
            "{}",
            a.script
        );
        assert!(!z.script.contains("--dependency"), "{}", z.script);
    }

    #[test]
    fn a_dependent_is_not_submitted_when_its_started_dependency_was_rejected() {
        use crate::desired::Condition;
        let backend = FakeBackend::new();
        backend.state().reject_scripts_containing = Some("--partition=pz".into());
        let desired = desired(&[
            ("a", depending(service(1, "pa"), "z", Condition::Started)),
            ("z", service(1, "pz")),
        ]);
        let report = converge(&backend, &desired);
        assert_eq!((report.added, report.failed), (0, 2), "{:?}", report.errors);
        assert!(
            report
                .errors
                .iter()
                .any(|e| e.message.contains("s/z it starts after")),
            "{:?}",
            report.errors
        );
        assert!(backend.alive().is_empty());
    }

    #[test]
    fn a_replacement_slurm_rejects_leaves_the_old_replicas_running() {
        let backend = FakeBackend::new();
        assert!(converge(&backend, &desired(&[("web", service(2, "good"))])).is_complete());
        backend.state().reject_scripts_containing = Some("--partition=nosuch".into());
        let report = converge(&backend, &desired(&[("web", service(2, "nosuch"))]));
        assert!(!report.is_complete() && !report.retry_may_help());
        assert_eq!((report.added, report.destroyed, report.failed), (0, 0, 4));
        assert_eq!(
            crate::error::ErrorKind::of_incomplete_apply(&report).exit_code(),
            1,
            "nothing done, and Slurm refused: no retry helps"
        );
        assert!(
            report.errors[0].message.contains("rejected"),
            "{:?}",
            report.errors
        );
        assert_eq!(
            alive_indexes(&backend, "good"),
            [0, 1],
            "old replicas keep running"
        );
        assert_eq!(backend.count(Op::Cancel), 0, "nothing may be cancelled");
    }

    #[test]
    fn a_partial_cancel_reports_exactly_what_was_cancelled_and_keeps_the_rest_single() {
        let backend = FakeBackend::new();
        converge(&backend, &desired(&[("web", service(3, "old"))]));
        backend.fail_next(Op::Cancel, Fault::PartialCancel(1));
        let report = converge(&backend, &desired(&[("web", service(3, "new"))]));
        assert_eq!(report.destroyed, 1, "{report:?}");
        assert_eq!(report.added, 1, "only the index whose predecessor is gone");
        assert_eq!(
            report.failed,
            2 + 2,
            "two cancels failed, two submits withheld"
        );
        assert_eq!(
            crate::error::ErrorKind::of_incomplete_apply(&report).exit_code(),
            6,
            "partial apply"
        );
        let old = alive_indexes(&backend, "old");
        let new = alive_indexes(&backend, "new");
        assert_eq!(
            old.len() + new.len(),
            3,
            "one job per index: {old:?} {new:?}"
        );
        assert!(old.iter().all(|i| !new.contains(i)), "{old:?} {new:?}");
        // A re-run converges.
        assert!(converge(&backend, &desired(&[("web", service(3, "new"))])).is_complete());
        assert_eq!(alive_indexes(&backend, "new"), [0, 1, 2]);
        assert!(alive_indexes(&backend, "old").is_empty());
    }

    #[test]
    fn an_unknown_submit_outcome_is_looked_up_by_nonce_not_repeated() {
        for fault in [Fault::SubmittedThenTimeout, Fault::SubmittedUnparseable] {
            let backend = FakeBackend::new();
            backend.fail_next(Op::Submit, fault.clone());
            let report = converge(&backend, &desired(&[("web", service(2, "p"))]));
            assert!(report.is_complete(), "{fault:?}: {report:?}");
            assert_eq!(report.added, 2);
            assert_eq!(alive_indexes(&backend, "p"), [0, 1], "{fault:?}");
            assert_eq!(backend.count(Op::Submit), 1, "{fault:?}: no second submit");
        }
    }

    #[test]
    fn a_timeout_with_no_job_created_is_retried_once_the_listing_shows_none() {
        let backend = FakeBackend::new();
        backend.fail_next(Op::Submit, Fault::Timeout);
        let report = converge(&backend, &desired(&[("web", service(1, "p"))]));
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(backend.count(Op::Submit), 2);
        assert_eq!(alive_indexes(&backend, "p"), [0]);
    }

    #[test]
    fn a_definite_rejection_is_not_retried_and_says_a_rerun_will_not_help() {
        let backend = FakeBackend::new();
        backend.fail_next(
            Op::Submit,
            Fault::Reject("Invalid qos specification".into()),
        );
        let report = converge(&backend, &desired(&[("web", service(1, "p"))]));
        assert_eq!(backend.count(Op::Submit), 1);
        assert_eq!(report.failed, 1);
        assert!(!report.retry_may_help());
        // Nothing of it was cancelled: it is refused as after a rejected pre-check.
        assert_eq!(report.refused.len(), 1, "{report:?}");
        assert_eq!(report.refused[0].kind, RefusalKind::Rejected);
    }

    #[test]
    fn stuck_jobs_hold_their_index() {
        let backend = FakeBackend::new();
        converge(&backend, &desired(&[("web", service(2, "p"))]));
        let ids: Vec<JobId> = backend.alive().iter().map(|j| j.id).collect();
        backend.set_state(ids[0], "STOPPED", "None");
        backend.set_state(ids[1], "PENDING", "job requeued in held state");
        let report = converge(&backend, &desired(&[("web", service(2, "p"))]));
        assert_eq!((report.added, report.destroyed), (0, 0));
        assert_eq!(backend.count(Op::Submit), 1);
    }

    #[test]
    fn a_fragmented_index_set_is_split_into_submissions_that_fit_the_comment_limit() {
        let backend = FakeBackend::new();
        converge(&backend, &desired(&[("web", service(3000, "p"))]));
        // Cancel every other replica, so the missing indexes have no ranges to collapse into.
        let odd: Vec<JobId> = backend
            .alive()
            .iter()
            .filter(|j| j.id.task.is_some_and(|t| t % 2 == 1))
            .map(|j| j.id)
            .collect();
        backend.cancel(&odd).unwrap();
        let report = converge(&backend, &desired(&[("web", service(3000, "p"))]));
        assert_eq!(report.added, 1500, "{report:?}");
        assert!(
            backend.count(Op::Submit) > 2,
            "the resubmission must be split"
        );
        for job in backend.alive() {
            assert!(job.comment.len() <= crate::observed::MAX_COMMENT_LEN);
        }
        assert_eq!(alive_indexes(&backend, "p").len(), 3000);
    }
}
