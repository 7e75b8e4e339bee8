//! Rolling replacement and walltime renewal, one step at a time (pure).
//!
//! A rollout is level-triggered: every plan reads where it stands from what Slurm shows, so an
//! apply, a watch tick or a restarted watch all move it forward the same way. Per index:
//!
//! - A **rollout pair** is two alive jobs on one index where one's marker names the other
//!   (`pred=<jobid>`); two alive jobs without that link are duplicates, as ever.
//! - A successor that has been ready for `min_healthy_time` retires its predecessor
//!   ([`Reason::Superseded`]). Ready since: the supervisor's `ready_at=` (see
//!   [`crate::observed::SelfReport::ready_at`]), or for a service without health check its
//!   start time. Both live on the job, so a restart of apply or watch loses nothing; the
//!   node's clock is compared with the listing's (`Observed::listed_at`), which NTP keeps
//!   within a second or two, small against `min_healthy_time`.
//! - A successor that ended, is still PENDING `queue_timeout` after its submission, or is
//!   not ready `timeout` after it started RUNNING **stops** the rollout of its service: it is
//!   cancelled ([`Reason::RolloutStopped`]), its predecessor keeps running, no further
//!   successor is started, and the plan carries a [`Stopped`] entry that makes the pass fail.
//!   An ended successor stops the rollout for as long as Slurm lists it (MinJobAge) or until
//!   the spec changes again.
//! - New successors start for at most `max_surge` indexes at once (pairs being retired in
//!   the same pass free their slot, as apply cancels before it submits), lowest index first.
//!   With `max_unavailable` above 0 and no surge left, up to that many ready replicas are
//!   replaced destroy-first; a replica that is not running (PENDING) serves nothing and is
//!   always replaced destroy-first. So the ready count never drops below `replicas -
//!   max_unavailable`.
//! - **Walltime renewal**: a running replica with the desired spec whose end time is less
//!   than `renew_before` away gets a successor through the same path ([`Reason::Renewal`]).
//!   The successor is submitted plainly at that moment, not with `--begin` or
//!   `--dependency=after:<pred>+<min>`: both keep it from being scheduled until the given
//!   time (reason `BeginTime`/`Dependency`), whereas the point is to get through the queue
//!   as early as the window allows; the price is at most `renew_before` of overlap.

use super::{Action, Change, Order, Reason, job_ref};
use crate::desired::{Service, ServiceAddr, Strategy};
use crate::observed::{JobId, JobState, LiveJob};
use serde::{Deserialize, Serialize};

/// A rollout in progress on one index: the successor exists, the predecessor still runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// The service.
    pub service: ServiceAddr,
    /// Replica index.
    pub index: u32,
    /// The job being replaced.
    pub predecessor: JobId,
    /// The job replacing it; none while the replica waits for a free slot (`max_surge`).
    pub successor: Option<JobId>,
    /// Why: `spec_changed` or `renewal`.
    pub reason: Reason,
    /// Where the successor stands, e.g. `PENDING (Resources)`, `starting`, `ready 4s of 10s`.
    pub progress: String,
}

/// A successor that stopped its service's rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopped {
    /// The service.
    pub service: ServiceAddr,
    /// Replica index.
    pub index: u32,
    /// The successor.
    pub successor: JobId,
    /// The predecessor, which keeps running.
    pub predecessor: JobId,
    /// Why, with Slurm's pending reason or the health verdict.
    pub why: String,
}

/// A replica that needs a successor: its index, the job to replace and why.
pub(super) struct Due<'a> {
    pub index: u32,
    pub job: &'a LiveJob,
    pub reason: Reason,
}

/// Returns the rollout pair among the alive jobs of one index, `(predecessor, successor)`:
/// a job whose `pred=` names another alive job of the index.
pub(super) fn pair<'a>(candidates: &[&'a LiveJob]) -> Option<(&'a LiveJob, &'a LiveJob)> {
    candidates.iter().find_map(|&succ| {
        let pred_id = succ.marker.pred?;
        let pred = candidates
            .iter()
            .find(|j| j.id == pred_id && j.id != succ.id)?;
        Some((*pred, succ))
    })
}

/// Returns whether `job` (running the desired spec) is due for walltime renewal at `now`. A
/// protected service is renewed only when its stack opts in
/// ([`super::protection::renewal_allowed`]): a renewal runs two instances for a while.
pub(super) fn renewal_due(service: &Service, job: &LiveJob, now: i64) -> bool {
    let (Some(before), Some(end)) = (service.update.renew_before, job.times.end) else {
        return false;
    };
    if !super::protection::renewal_allowed(service) {
        return false;
    }
    job.state == JobState::Running && end - now < before as i64
}

/// Returns since when `job` has been ready, if it is ready now.
fn ready_since(service: &Service, job: &LiveJob) -> Option<i64> {
    if !job.is_ready_running(Some(&service.spec)) {
        return None;
    }
    if service.spec.health.is_some() {
        job.marker.report.ready_at
    } else {
        job.times.start
    }
}

/// The outcome of one step of a service's rollouts.
#[derive(Default)]
pub(super) struct Step {
    /// Changes to make: successors to start, predecessors to retire, successors to cancel.
    pub changes: Vec<Change>,
    /// Pairs still in progress.
    pub rollouts: Vec<Rollout>,
    /// Successors that stopped the rollout.
    pub stopped: Vec<Stopped>,
}

/// One step of the rollouts of `service`: `pairs` are the rollout pairs found (index,
/// predecessor, successor, and whether `--replace` named the predecessor), `due` the
/// replicas that need a successor, `ended` every ended or completing job of the service (to
/// find a successor that failed or is still completing), `ready_now` how many of the first
/// `replicas` indexes have a ready job, `now` the listing time.
pub(super) fn step(
    addr: &ServiceAddr,
    service: &Service,
    pairs: &[(u32, &LiveJob, &LiveJob, bool)],
    due: Vec<Due<'_>>,
    ended: &[&LiveJob],
    ready_now: u32,
    now: i64,
) -> Step {
    let policy = &service.update;
    let mut out = Step::default();
    let mut in_flight = 0u32;
    for &(index, pred, succ, forced) in pairs {
        // A same-spec pair is a renewal, unless `--replace` started it: then the apply that
        // started it sees it through.
        let reason = if succ.marker.spec != pred.marker.spec {
            Reason::SpecChanged
        } else if forced {
            Reason::Forced
        } else {
            Reason::Renewal
        };
        if succ.marker.spec != service.hash {
            // The desired spec moved on mid-rollout: this successor is obsolete.
            out.changes.push(destroy(index, succ, Reason::SpecChanged));
            continue;
        }
        let stop = |why: String| Stopped {
            service: addr.clone(),
            index,
            successor: succ.id,
            predecessor: pred.id,
            why,
        };
        let waited = |since: Option<i64>| since.map(|t| now - t);
        if let Some(since) = ready_since(service, succ) {
            let ready_for = now - since;
            if ready_for >= policy.min_healthy_time as i64 {
                out.changes.push(destroy(index, pred, Reason::Superseded));
                continue;
            }
            in_flight += 1;
            out.rollouts.push(Rollout {
                service: addr.clone(),
                index,
                predecessor: pred.id,
                successor: Some(succ.id),
                reason,
                progress: format!("ready {ready_for}s of {}s", policy.min_healthy_time),
            });
            continue;
        }
        let stopped = match succ.state {
            // A held (stuck) successor will not start by itself: it times out likewise.
            JobState::Pending | JobState::Stuck(_) => waited(succ.times.submit)
                .filter(|&w| w > policy.queue_timeout as i64)
                .map(|w| {
                    format!(
                        "successor {} still {} after {w}s (queue_timeout {}s), Slurm's \
                         reason: {}",
                        succ.id,
                        succ.state,
                        policy.queue_timeout,
                        pending_reason(succ)
                    )
                }),
            JobState::Running => waited(succ.times.start)
                .filter(|&w| w > policy.timeout as i64)
                .map(|w| {
                    format!(
                        "successor {} not ready {w}s after it started (timeout {}s), health: {}",
                        succ.id,
                        policy.timeout,
                        succ.marker
                            .report
                            .health
                            .map_or("not reported", |h| h.as_str())
                    )
                }),
            _ => None,
        };
        if let Some(why) = stopped {
            out.changes
                .push(destroy(index, succ, Reason::RolloutStopped));
            out.stopped.push(stop(why));
            continue;
        }
        in_flight += 1;
        let progress = match succ.state {
            JobState::Pending => format!("PENDING ({})", pending_reason(succ)),
            JobState::Running => "starting".to_owned(),
            ref other => other.to_string(),
        };
        out.rollouts.push(Rollout {
            service: addr.clone(),
            index,
            predecessor: pred.id,
            successor: Some(succ.id),
            reason,
            progress,
        });
    }
    // A successor that ended stops the rollout while its predecessor runs on. One still
    // COMPLETING has not ended yet (a requeued one comes back): it holds its slot, and no
    // other successor is started beside it.
    let mut due_now = Vec::new();
    for d in due {
        let successors = ended
            .iter()
            .filter(|j| j.marker.pred == Some(d.job.id) && j.marker.spec == service.hash);
        if let Some(completing) = successors
            .clone()
            .filter(|j| j.state == JobState::Completing)
            .max_by_key(|j| j.id)
        {
            in_flight += 1;
            out.rollouts.push(Rollout {
                service: addr.clone(),
                index: d.index,
                predecessor: d.job.id,
                successor: Some(completing.id),
                reason: d.reason,
                progress: "COMPLETING".to_owned(),
            });
            continue;
        }
        match successors.max_by_key(|j| j.id) {
            Some(failed) => out.stopped.push(Stopped {
                service: addr.clone(),
                index: d.index,
                successor: failed.id,
                predecessor: d.job.id,
                why: format!(
                    "successor {} ended {}{}",
                    failed.id,
                    failed.state,
                    failed
                        .times
                        .exit
                        .map(|e| format!(" (exit {e})"))
                        .unwrap_or_default()
                ),
            }),
            None => due_now.push(d),
        }
    }
    if !out.stopped.is_empty() {
        return out;
    }
    let surge = match policy.strategy {
        Strategy::Rolling => policy.max_surge,
        // Renewal is create-before-destroy whatever the strategy.
        Strategy::Recreate => policy.max_surge.max(1),
    };
    let mut surge_left = surge.saturating_sub(in_flight);
    let unavailable_now = service.replicas.saturating_sub(ready_now);
    let mut unavailable_left = match policy.strategy {
        Strategy::Rolling => policy.max_unavailable.saturating_sub(unavailable_now),
        Strategy::Recreate => u32::MAX,
    };
    for d in due_now {
        let recreate = policy.strategy == Strategy::Recreate && d.reason != Reason::Renewal;
        if !recreate && surge_left > 0 {
            surge_left -= 1;
            out.changes.push(Change {
                index: d.index,
                action: Action::Replace,
                reason: d.reason,
                job: Some(job_ref(d.job)),
                backoff: None,
                order: Order::CreateFirst,
            });
        } else if d.reason != Reason::Renewal && unavailable_left > 0 {
            unavailable_left -= 1;
            out.changes.push(Change {
                index: d.index,
                action: Action::Replace,
                reason: d.reason,
                job: Some(job_ref(d.job)),
                backoff: None,
                order: Order::DestroyFirst,
            });
        } else {
            out.rollouts.push(Rollout {
                service: addr.clone(),
                index: d.index,
                predecessor: d.job.id,
                successor: None,
                reason: d.reason,
                progress: format!("waiting for a free slot (max_surge {surge})"),
            });
        }
    }
    out
}

/// Returns whether `plan` is part of a spec-change rollout: one in progress, or a change that
/// starts a successor. An apply repeats its pass while this holds. Walltime renewals do not
/// count: with a short time limit a service renews for ever, and a renewal left half-way is
/// finished by the next apply or watch pass (or the old job simply reaches its limit).
pub fn in_rollout(plan: &super::Plan) -> bool {
    plan.rollouts.iter().any(|r| r.reason != Reason::Renewal)
        || plan
            .services
            .iter()
            .flat_map(|s| &s.changes)
            .any(|c| c.order == Order::CreateFirst && c.reason != Reason::Renewal)
}

/// Returns whether `plan` changes anything besides renewals (a renewal's successor or the
/// retirement of a predecessor): what `apply --wait` must see settle before it trusts a
/// listing.
pub fn settles(plan: &super::Plan) -> bool {
    plan.services
        .iter()
        .flat_map(|s| &s.changes)
        .any(|c| !matches!(c.reason, Reason::Renewal | Reason::Superseded))
}

/// Returns every desired replica that is not ready (RUNNING, and reporting `health=ready`
/// when its spec has a health check), as `stack.service[index]: what Slurm shows`, e.g.
/// `web.api[2]: job 41_2 PENDING (Resources)` or `web.api[3]: no job`.
pub fn not_ready(
    desired: &crate::desired::Desired,
    observed: &crate::observed::Observed,
) -> Vec<String> {
    let mut out = Vec::new();
    for (addr, service) in &desired.services {
        // A one-shot job ends: there is no replica of it to wait for.
        if service.job.is_some() {
            continue;
        }
        for index in 0..service.replicas {
            let jobs: Vec<&LiveJob> = observed
                .alive()
                .filter(|j| &j.marker.service == addr && j.index == index)
                .collect();
            if jobs
                .iter()
                .any(|j| j.is_ready_running(observed.spec_of(j, desired)))
            {
                continue;
            }
            let what = match jobs.iter().max_by_key(|j| j.id) {
                None => "no job".to_owned(),
                Some(j) => match &j.state {
                    JobState::Pending => format!("job {} PENDING ({})", j.id, pending_reason(j)),
                    JobState::Running => format!(
                        "job {} RUNNING, health {}",
                        j.id,
                        j.marker
                            .report
                            .health
                            .map_or("not reported", |h| h.as_str())
                    ),
                    other => format!("job {} {other}", j.id),
                },
            };
            out.push(format!("{addr}[{index}]: {what}"));
        }
    }
    out
}

/// Slurm's pending reason, or `none given`.
fn pending_reason(job: &LiveJob) -> &str {
    match job.reason.trim() {
        "" | "None" => "none given",
        reason => reason,
    }
}

/// A destroy of `job` at `index`.
pub(super) fn destroy(index: u32, job: &LiveJob, reason: Reason) -> Change {
    Change {
        index,
        action: Action::Destroy,
        reason,
        job: Some(job_ref(job)),
        backoff: None,
        order: Order::DestroyFirst,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{
        Desired, HealthSpec, OnFailure, Origin, Owner, Probe, ReplicaSpec, ResourceSpec, Service,
        SlurmSpec, SpecHash, UpdatePolicy,
    };
    use crate::observed::{Health, JobTimes, Marker, Observed, SelfReport};
    use crate::plan::{self, Plan};
    use std::sync::Arc;

    const NOW: i64 = 1_700_000_000;

    fn addr() -> ServiceAddr {
        ServiceAddr::new("web", "api")
    }

    fn owner() -> Owner {
        Owner::parse("test/rolling").unwrap()
    }

    /// A 4-replica service with a health check, `env` making the spec differ.
    fn service(env: &str, update: UpdatePolicy) -> Service {
        let spec = ReplicaSpec {
            container: None,
            setup: Vec::new(),
            image: None,
            command: Some("serve".into()),
            resources: ResourceSpec {
                nodes: 1,
                cpu: 1,
                memory: None,
                memory_per_cpu: None,
                gpu: 0,
                gpu_type: None,
                time_limit: Some(60),
                cpu_bind: None,
            },
            environment: [("V".to_owned(), env.to_owned())].into(),
            ports: vec![],
            slurm: SlurmSpec::default(),
            health: Some(HealthSpec {
                probe: Probe::Command("true".into()),
                interval: 1,
                timeout: 1,
                start_period: 0,
                failure_threshold: 1,
                on_failure: OnFailure::Restart,
            }),
            endpoint_env: Default::default(),
            secret_env: Default::default(),
        };
        Service {
            recipe: "demo/api".into(),
            replicas: 4,
            hash: spec.hash(),
            spec,
            restart: Default::default(),
            protect: false,
            update,
            depends_on: Vec::new(),
            replace_on_endpoint_move: true,
            job: None,
            origins: [(
                "recipe".to_owned(),
                Origin {
                    file: "stacks/web.yaml".into(),
                    position: Some((3, 13)),
                    field: "services.api.recipe".into(),
                },
            )]
            .into(),
        }
    }

    fn rolling() -> UpdatePolicy {
        UpdatePolicy {
            strategy: Strategy::Rolling,
            ..UpdatePolicy::default()
        }
    }

    /// A job of `web.api` at `index` with `hash`; `ready_at` makes it ready since then.
    fn job(array: u64, index: u32, hash: &SpecHash, state: &str, ready_at: Option<i64>) -> LiveJob {
        LiveJob {
            id: JobId {
                array,
                task: Some(index),
            },
            index,
            marker: Arc::new(Marker {
                owner: owner(),
                service: addr(),
                spec: hash.clone(),
                nonce: "n".into(),
                indexes: index.to_string(),
                report: SelfReport {
                    health: ready_at.map(|_| Health::Ready),
                    ready_at,
                    ..SelfReport::default()
                },
                restart: Default::default(),
                protect: false,
                pred: None,
                endpoints: Vec::new(),
            }),
            state: JobState::from_slurm(state, "None"),
            reason: if state == "PENDING" {
                "Resources".into()
            } else {
                String::new()
            },
            nodes: "node1".into(),
            times: JobTimes {
                start: (state == "RUNNING").then_some(NOW - 100),
                end: (state == "RUNNING").then_some(NOW + 3000),
                exit: None,
                submit: Some(NOW - 120),
            },
        }
    }

    /// `job` as the successor of `pred`.
    fn successor(mut job: LiveJob, pred: &LiveJob) -> LiveJob {
        Arc::make_mut(&mut job.marker).pred = Some(pred.id);
        job
    }

    fn plan(service: &Service, jobs: Vec<LiveJob>) -> Plan {
        let desired = Desired {
            services: [(addr(), service.clone())].into(),
        };
        let observed = Observed {
            jobs,
            specs: Default::default(),
            listed_at: NOW,
            runs: Default::default(),
            accounted: Vec::new(),
        };
        plan::compute(&owner(), &desired, &observed)
    }

    fn old_replicas(old: &Service) -> Vec<LiveJob> {
        (0..4)
            .map(|i| job(10, i, &old.hash, "RUNNING", Some(NOW - 500)))
            .collect()
    }

    fn changes(plan: &Plan) -> Vec<(u32, Action, Reason, Order)> {
        plan.services
            .iter()
            .flat_map(|s| &s.changes)
            .map(|c| (c.index, c.action, c.reason, c.order))
            .collect()
    }

    #[test]
    fn a_spec_change_starts_max_surge_successors_create_first_and_keeps_every_old_job() {
        let old = service("1", rolling());
        let new = service("2", rolling());
        let plan = plan(&new, old_replicas(&old));
        assert_eq!(
            changes(&plan),
            vec![(0, Action::Replace, Reason::SpecChanged, Order::CreateFirst)]
        );
        assert_eq!(plan.services[0].rolling_batch, Some(1));
        assert_eq!(plan.rollouts.len(), 3, "the other three wait for a slot");
        assert!(plan.rollouts.iter().all(|r| r.successor.is_none()));
        assert!(!plan.is_converged());
        assert!(in_rollout(&plan));
        let summary = plan.summary();
        assert_eq!((summary.add, summary.destroy), (1, 1));
        let two = service(
            "2",
            UpdatePolicy {
                max_surge: 2,
                ..rolling()
            },
        );
        let indexes: Vec<u32> = changes(&super::tests::plan(&two, old_replicas(&old)))
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(indexes, vec![0, 1]);
    }

    #[test]
    fn a_predecessor_goes_only_once_its_successor_was_ready_for_min_healthy_time() {
        let old = service("1", rolling());
        let new = service("2", rolling());
        let mut jobs = old_replicas(&old);
        // Not ready yet, ready 5 s of 10 s: nothing to do, no new successor (surge 1 in use).
        for ready_at in [None, Some(NOW - 5)] {
            let succ = successor(job(20, 0, &new.hash, "RUNNING", ready_at), &jobs[0]);
            let mut all = jobs.clone();
            all.push(succ);
            let plan = plan(&new, all);
            assert!(
                changes(&plan).is_empty(),
                "{ready_at:?}: {:?}",
                changes(&plan)
            );
            assert_eq!(
                plan.rollouts[0].successor,
                Some(JobId {
                    array: 20,
                    task: Some(0)
                })
            );
            assert!(
                !plan.is_converged(),
                "a rollout in progress is no convergence"
            );
        }
        // Ready 10 s: the predecessor goes and the next successor starts in the same pass.
        let succ = successor(job(20, 0, &new.hash, "RUNNING", Some(NOW - 10)), &jobs[0]);
        jobs.push(succ);
        let plan = plan(&new, jobs);
        assert_eq!(
            changes(&plan),
            vec![
                (1, Action::Replace, Reason::SpecChanged, Order::CreateFirst),
                (0, Action::Destroy, Reason::Superseded, Order::DestroyFirst),
            ]
        );
        let destroyed = plan.services[0].changes[1].job.as_ref().unwrap().job_id;
        assert_eq!(
            destroyed,
            JobId {
                array: 10,
                task: Some(0)
            }
        );
    }

    #[test]
    fn two_jobs_on_an_index_without_pred_are_duplicates_as_before() {
        let old = service("1", rolling());
        let new = service("2", rolling());
        let mut jobs = old_replicas(&old);
        jobs.push(job(20, 0, &new.hash, "RUNNING", Some(NOW - 100)));
        let plan = plan(&new, jobs);
        let all = changes(&plan);
        assert!(all.contains(&(0, Action::Destroy, Reason::Duplicate, Order::DestroyFirst)));
        assert!(plan.rollouts.iter().all(|r| r.index != 0));
    }

    #[test]
    fn a_successor_pending_past_queue_timeout_stops_the_rollout_and_is_cancelled() {
        let old = service("1", rolling());
        let new = service(
            "2",
            UpdatePolicy {
                queue_timeout: 60,
                ..rolling()
            },
        );
        let jobs = old_replicas(&old);
        let mut succ = successor(job(20, 0, &new.hash, "PENDING", None), &jobs[0]);
        // Submitted 50 s ago: still within the timeout.
        succ.times.submit = Some(NOW - 50);
        let mut all = jobs.clone();
        all.push(succ.clone());
        let within = plan(&new, all);
        assert!(within.stopped.is_empty());
        assert_eq!(within.rollouts[0].progress, "PENDING (Resources)");
        succ.times.submit = Some(NOW - 61);
        let mut all = jobs.clone();
        all.push(succ);
        let plan = plan(&new, all);
        assert_eq!(
            changes(&plan),
            vec![(
                0,
                Action::Destroy,
                Reason::RolloutStopped,
                Order::DestroyFirst
            )]
        );
        assert_eq!(plan.stopped.len(), 1);
        assert!(
            plan.stopped[0].why.contains("Resources"),
            "{}",
            plan.stopped[0].why
        );
        assert_eq!(plan.stopped[0].predecessor, jobs[0].id);
        assert!(!plan.is_converged());
    }

    #[test]
    fn a_successor_still_completing_holds_its_slot_and_stops_nothing() {
        let old = service("1", rolling());
        let new = service("2", rolling());
        let mut jobs = old_replicas(&old);
        jobs.push(successor(
            job(20, 0, &new.hash, "COMPLETING", None),
            &jobs[0],
        ));
        let plan = plan(&new, jobs);
        assert!(plan.stopped.is_empty(), "{:?}", plan.stopped);
        // max_surge 1 is taken by the completing successor: no other one starts.
        assert!(
            !changes(&plan).iter().any(|c| c.1 == Action::Replace),
            "{:?}",
            changes(&plan)
        );
        let of_index_0 = plan.rollouts.iter().find(|r| r.index == 0).unwrap();
        assert_eq!(of_index_0.progress, "COMPLETING");
        assert_eq!(of_index_0.successor.unwrap().array, 20);
        assert!(in_rollout(&plan), "an apply waits for it to settle");
    }

    #[test]
    fn a_successor_that_ended_stops_the_rollout_and_none_is_started_again() {
        let old = service("1", rolling());
        let new = service("2", rolling());
        let mut jobs = old_replicas(&old);
        let mut failed = successor(job(20, 0, &new.hash, "FAILED", None), &jobs[0]);
        failed.times.exit = Some(1);
        jobs.push(failed);
        let plan = plan(&new, jobs);
        assert!(changes(&plan).is_empty(), "{:?}", changes(&plan));
        assert_eq!(plan.stopped.len(), 1);
        assert!(plan.stopped[0].why.contains("ended FAILED (exit 1)"));
    }

    #[test]
    fn a_successor_not_ready_within_timeout_of_starting_stops_the_rollout() {
        let old = service("1", rolling());
        let new = service(
            "2",
            UpdatePolicy {
                timeout: 90,
                ..rolling()
            },
        );
        let jobs = old_replicas(&old);
        let succ = successor(job(20, 0, &new.hash, "RUNNING", None), &jobs[0]);
        let mut all = jobs.clone();
        all.push(succ);
        // Started 100 s ago (see `job`), timeout 90 s.
        let plan = plan(&new, all);
        assert_eq!(plan.stopped.len(), 1);
        assert!(plan.stopped[0].why.contains("not ready"));
    }

    #[test]
    fn walltime_renewal_gives_a_replica_near_its_end_a_successor() {
        let policy = UpdatePolicy {
            renew_before: Some(600),
            ..UpdatePolicy::default()
        };
        let svc = service("1", policy);
        let mut jobs = old_replicas(&svc);
        assert!(plan(&svc, jobs.clone()).is_converged(), "3000 s left each");
        jobs[2].times.end = Some(NOW + 599);
        let plan = plan(&svc, jobs);
        assert_eq!(
            changes(&plan),
            vec![(2, Action::Replace, Reason::Renewal, Order::CreateFirst)]
        );
        // A renewal is no rollout an apply drives to its end: it would never end.
        assert!(!in_rollout(&plan));
        assert!(!settles(&plan));
    }

    #[test]
    fn a_protected_replica_is_renewed_only_when_the_stack_opts_in() {
        let policy = UpdatePolicy {
            renew_before: Some(600),
            ..UpdatePolicy::default()
        };
        let mut svc = service("1", policy);
        svc.protect = true;
        let mut jobs = old_replicas(&svc);
        jobs[1].times.end = Some(NOW + 30);
        // The markers say `protect=0`: their in-place rewrites are no replacement.
        let changes = |plan: &Plan| -> Vec<_> {
            changes(plan)
                .into_iter()
                .filter(|c| c.1 != Action::Update)
                .collect()
        };
        assert!(
            changes(&plan(&svc, jobs.clone())).is_empty(),
            "no second instance: it runs to its time limit"
        );
        svc.origins.insert(
            "renew_before".into(),
            crate::desired::Origin {
                file: "stacks/s.yaml".into(),
                position: Some((5, 5)),
                field: "services.web.renew_before".into(),
            },
        );
        assert_eq!(
            changes(&plan(&svc, jobs)),
            vec![(1, Action::Replace, Reason::Renewal, Order::CreateFirst)]
        );
    }

    #[test]
    fn recreate_keeps_cancel_then_submit() {
        let old = service("1", UpdatePolicy::default());
        let new = service("2", UpdatePolicy::default());
        let plan = plan(&new, old_replicas(&old));
        assert_eq!(changes(&plan).len(), 4);
        assert!(changes(&plan).iter().all(|c| c.3 == Order::DestroyFirst));
        assert_eq!(plan.services[0].rolling_batch, None);
    }

    #[test]
    fn max_unavailable_replaces_destroy_first_beyond_the_surge() {
        let old = service("1", rolling());
        let new = service(
            "2",
            UpdatePolicy {
                max_surge: 1,
                max_unavailable: 1,
                ..rolling()
            },
        );
        let plan = plan(&new, old_replicas(&old));
        assert_eq!(
            changes(&plan),
            vec![
                (0, Action::Replace, Reason::SpecChanged, Order::CreateFirst),
                (1, Action::Replace, Reason::SpecChanged, Order::DestroyFirst),
            ]
        );
    }
}
