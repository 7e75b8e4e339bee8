//! One-shot jobs (`kind: job`) in a plan. Pure.
//!
//! A job runs when no run with its current spec hash exists (its hash covers its target's
//! spec, [`crate::desired::JobSpec::hash`]), and not again once one completed. Its runs are
//! what Slurm still lists and what the runs recorded themselves in their results directories
//! ([`crate::observed::runs`]), and, where the cluster has accounting, what `sacct` knows
//! ([`Observed::accounted`]: the runs Slurm's listing forgot after MinJobAge, the record
//! lost or never wrote included). Without accounting a run Slurm no longer lists is known
//! from its record alone. When a record and Slurm (its listing, else accounting) both know
//! a run, the record's exit code stands (it is the command's own, also when a later step of
//! the batch script failed), and Slurm's state where the record has no end (a run killed
//! before it could write one: TIMEOUT, CANCELLED, NODE_FAIL). A run only Slurm knows is
//! Slurm's: its state, exit code, start and end.
//!
//! A failed run is run again after the restart backoff, `retries` times, then the job is
//! reported failed with its last run. A finished job is no change: never drift, never a
//! destroy, never recreated. A running job removed from the repo is cancelled like a service.

use super::{
    Action, Backoff, Change, Held, Order, Reason, ServicePlan, Waiting, WaitingKind, backoff, diff,
    job_ref,
};
use crate::desired::{Desired, Service, ServiceAddr, SpecHash};
use crate::observed::{FailRecord, JobId, JobState, LiveJob, Observed};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A job's standing in a plan: what the plan does with it, or why it does nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLine {
    /// The job.
    pub service: ServiceAddr,
    /// What happens, or where it stands.
    pub status: JobStatus,
    /// The latest run with the current spec, when there is one.
    pub last_run: Option<Run>,
}

/// Where a job stands in a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum JobStatus {
    /// It never ran: this plan runs it.
    Run,
    /// It ran with another spec (its own or its target's): this plan runs it again.
    RerunSpecChanged,
    /// `stackctl run` asked for another run.
    RerunRequested,
    /// It would run, but its target (or a dependency) has no ready replica yet.
    Held {
        /// Why.
        reason: String,
    },
    /// A run with the current spec is queued or running.
    Running {
        /// Its job.
        job_id: JobId,
    },
    /// A run with the current spec completed.
    Done {
        /// When it ended (unix seconds).
        at: i64,
    },
    /// The last run failed: this plan runs it again after the backoff.
    Retry {
        /// Which retry (1 for the first).
        retry: u32,
        /// Retries allowed.
        of: u32,
        /// Earliest start (unix seconds).
        at: i64,
    },
    /// Every allowed run failed: it runs again only when its spec changes or on `stackctl
    /// run`.
    Failed {
        /// Runs with the current spec that failed in a row.
        runs: u32,
    },
    /// `replicas: 0`: not run.
    Off,
}

/// One run of a job, from Slurm's listing, its record, or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Its Slurm job.
    pub job_id: JobId,
    /// Whether it completed (exit 0).
    pub succeeded: bool,
    /// How it ended: Slurm's state, else `COMPLETED`/`FAILED` from the record's exit code, or
    /// `LOST` for a run that recorded its start but neither its end nor is listed by Slurm.
    pub state: String,
    /// The exit code, when known.
    pub exit: Option<i32>,
    /// When it started, when known.
    pub start: Option<i64>,
    /// When it ended (or was last known of).
    pub end: i64,
}

/// The ended runs of `addr` with spec `hash`, oldest first (by job id): every record, and
/// every ended job Slurm lists that has none.
pub fn runs_of(
    addr: &ServiceAddr,
    hash: &SpecHash,
    jobs: &[&LiveJob],
    observed: &Observed,
) -> Vec<Run> {
    // Slurm's listing first, then what only accounting still knows (past MinJobAge).
    let mut listed: BTreeMap<JobId, &LiveJob> = BTreeMap::new();
    let accounted = observed
        .accounted
        .iter()
        .filter(|j| &j.marker.service == addr);
    for job in jobs.iter().copied().chain(accounted) {
        if &job.marker.spec == hash {
            listed.entry(job.id).or_insert(job);
        }
    }
    let mut runs: BTreeMap<JobId, Run> = BTreeMap::new();
    for record in observed.runs.get(addr).into_iter().flatten() {
        if &record.spec != hash {
            continue;
        }
        let slurm = listed.get(&record.job_id);
        if slurm.is_some_and(|j| j.state.is_alive() || j.state == JobState::Completing) {
            continue;
        }
        let run = match (record.end, slurm) {
            (Some(end), _) => Run {
                job_id: record.job_id,
                succeeded: record.exit == Some(0),
                state: match slurm {
                    Some(job) => job.state.to_string(),
                    None if record.exit == Some(0) => "COMPLETED".to_owned(),
                    None => "FAILED".to_owned(),
                },
                exit: record.exit,
                start: record.start,
                end,
            },
            (None, Some(job)) => Run {
                job_id: record.job_id,
                succeeded: false,
                state: job.state.to_string(),
                exit: job.times.exit,
                start: record.start.or(job.times.start),
                end: job.times.end.unwrap_or(observed.listed_at),
            },
            (None, None) => Run {
                job_id: record.job_id,
                succeeded: false,
                state: "LOST".to_owned(),
                exit: None,
                start: record.start,
                end: record.start.unwrap_or(observed.listed_at),
            },
        };
        runs.insert(record.job_id, run);
    }
    for (id, job) in listed {
        if runs.contains_key(&id) || job.state.is_alive() || job.state == JobState::Completing {
            continue;
        }
        // A job cancelled before its script ran records nothing.
        runs.insert(
            id,
            Run {
                job_id: id,
                succeeded: job.state == JobState::Ended("COMPLETED".to_owned()),
                state: job.state.to_string(),
                exit: job.times.exit,
                start: job.times.start,
                end: job.times.end.unwrap_or(observed.listed_at),
            },
        );
    }
    runs.into_values().collect()
}

/// Plans one job in the repo: what to submit or cancel, and its [`JobLine`]. `rerun` is
/// `stackctl run`'s request for another run.
pub fn plan_job(
    addr: &ServiceAddr,
    service: &Service,
    jobs: &[&LiveJob],
    observed: &Observed,
    rerun: bool,
    waiting: &mut Vec<Waiting>,
) -> (Option<ServicePlan>, JobLine) {
    let job_spec = service.job.clone().unwrap_or_default();
    let hash = &service.hash;
    let mut changes = Vec::new();
    let mut destroys = Vec::new();
    let alive: Vec<&LiveJob> = jobs
        .iter()
        .copied()
        .filter(|j| j.state.is_alive())
        .collect();
    let current: Vec<&LiveJob> = alive
        .iter()
        .copied()
        .filter(|j| &j.marker.spec == hash)
        .collect();
    let others: Vec<&LiveJob> = alive
        .iter()
        .copied()
        .filter(|j| &j.marker.spec != hash)
        .collect();
    let runs = runs_of(addr, hash, jobs, observed);
    let last_run = runs.last().cloned();
    let line = |status| JobLine {
        service: addr.clone(),
        status,
        last_run: last_run.clone(),
    };
    let status;
    if service.replicas == 0 {
        for job in &alive {
            destroys.push(destroy(job, Reason::ScaleDown));
        }
        status = JobStatus::Off;
    } else if let Some(keeper) = current.iter().min_by_key(|j| j.id) {
        for job in current.iter().filter(|j| j.id != keeper.id) {
            destroys.push(destroy(job, Reason::Duplicate));
        }
        for job in &others {
            destroys.push(destroy(job, Reason::SpecChanged));
        }
        status = match keeper.marker.restart.not_before {
            Some(at) if keeper.state == JobState::Pending && keeper.marker.restart.restarts > 0 => {
                waiting.push(Waiting {
                    service: addr.clone(),
                    index: keeper.index,
                    job_id: keeper.id,
                    restarts: keeper.marker.restart.restarts,
                    kind: WaitingKind::BackingOff { not_before: at },
                    last_failure: keeper.marker.restart.fail.clone(),
                });
                JobStatus::Retry {
                    retry: keeper.marker.restart.restarts,
                    of: job_spec.retries,
                    at,
                }
            }
            _ => JobStatus::Running { job_id: keeper.id },
        };
    } else if let Some(job) = jobs
        .iter()
        .find(|j| j.state == JobState::Completing && &j.marker.spec == hash)
    {
        status = JobStatus::Running { job_id: job.id };
    } else {
        let failures = runs.iter().rev().take_while(|r| !r.succeeded).count() as u32;
        let ran_before = observed
            .runs
            .get(addr)
            .is_some_and(|r| r.iter().any(|r| &r.spec != hash))
            || jobs.iter().any(|j| &j.marker.spec != hash)
            || observed
                .accounted
                .iter()
                .any(|j| &j.marker.service == addr && &j.marker.spec != hash);
        let mut submit = |reason, backoff: Option<Backoff>| {
            // An old run still going is replaced: cancelled, then the new one submitted.
            let old = others.iter().min_by_key(|j| j.id);
            for job in others.iter().filter(|j| Some(&j.id) != old.map(|o| &o.id)) {
                destroys.push(destroy(job, Reason::Duplicate));
            }
            changes.push(Change {
                index: 0,
                action: if old.is_some() {
                    Action::Replace
                } else {
                    Action::Create
                },
                reason: if old.is_some() {
                    Reason::SpecChanged
                } else {
                    reason
                },
                job: old.map(|j| job_ref(j)),
                backoff,
                order: Order::DestroyFirst,
            });
        };
        if rerun {
            submit(Reason::Forced, None);
            status = JobStatus::RerunRequested;
        } else if runs.is_empty() {
            if ran_before || !others.is_empty() {
                submit(Reason::SpecChanged, None);
                status = JobStatus::RerunSpecChanged;
            } else {
                submit(Reason::Missing, None);
                status = JobStatus::Run;
            }
        } else if last_run.as_ref().is_some_and(|r| r.succeeded) {
            for job in &others {
                destroys.push(destroy(job, Reason::SpecChanged));
            }
            status = JobStatus::Done {
                at: last_run.as_ref().map_or(0, |r| r.end),
            };
        } else if failures > job_spec.retries {
            for job in &others {
                destroys.push(destroy(job, Reason::SpecChanged));
            }
            status = JobStatus::Failed { runs: failures };
        } else {
            let last = last_run.clone().expect("runs is not empty");
            let restart = failures;
            let seed = backoff::seed(&format!("{addr} {}", last.job_id));
            let delay = backoff::delay(&service.restart, restart, seed);
            let not_before = last.end.saturating_add(delay as i64);
            let wait = u64::try_from(not_before - observed.listed_at).unwrap_or(0);
            submit(
                Reason::Ended,
                Some(Backoff {
                    restart,
                    not_before,
                    wait,
                    last_failure: FailRecord {
                        state: last.state.clone(),
                        exit: last.exit,
                        at: last.end,
                    },
                    exclude: None,
                }),
            );
            status = JobStatus::Retry {
                retry: restart,
                of: job_spec.retries,
                at: not_before,
            };
        }
    }
    let line = line(status);
    if changes.is_empty() && destroys.is_empty() {
        return (None, line);
    }
    destroys.sort_by_key(|c| c.job.as_ref().map(|j| j.job_id));
    let new = changes.iter().any(|c| c.action == Action::Create);
    changes.extend(destroys);
    let plan = ServicePlan {
        service: addr.clone(),
        replicas_before: alive.len().min(1) as u32,
        replicas_after: service.replicas,
        in_repo: true,
        spec_before: None,
        hash_before: None,
        spec_after: Some(service.spec.clone()),
        hash_after: Some(hash.clone()),
        diff: Some(if new {
            diff::compute(None, &service.spec)
        } else {
            Vec::new()
        }),
        changes,
        endpoint_env: BTreeMap::new(),
        start_after: Vec::new(),
        start_after_jobs: Vec::new(),
        start_estimate: None,
        rolling_batch: None,
        endpoint_moved: Vec::new(),
    };
    (Some(plan), line)
}

fn destroy(job: &LiveJob, reason: Reason) -> Change {
    Change {
        index: job.index,
        action: Action::Destroy,
        reason,
        job: Some(job_ref(job)),
        backoff: None,
        order: Order::DestroyFirst,
    }
}

/// The variables a job aimed at `target` gets, from the target's ready replicas that run
/// its desired spec (lowest index first): `STACKCTL_TARGET_URL` (`http://host:port` of the
/// first one's first port), `STACKCTL_TARGET_HOST`, `STACKCTL_TARGET_PORT` and
/// `STACKCTL_TARGET_ENDPOINTS` (every one's `host:port`, comma-separated). `None` while no
/// replica is ready: the job would measure nothing, or an old version of the target.
pub fn target_values(
    target: &ServiceAddr,
    desired: &Desired,
    observed: &Observed,
) -> Option<BTreeMap<String, String>> {
    let service = desired.services.get(target)?;
    let mut ready: Vec<&LiveJob> = observed
        .alive()
        .filter(|j| &j.marker.service == target && j.marker.spec == service.hash)
        .filter(|j| j.is_ready_running(Some(&service.spec)))
        .collect();
    ready.sort_by_key(|j| (j.index, j.id));
    let endpoints: Vec<(String, u16)> = ready
        .iter()
        .flat_map(|j| j.serving_at(Some(&service.spec)))
        .filter_map(|at| Some((at.host.clone(), at.ports.first()?.port)))
        .collect();
    let (host, port) = endpoints.first()?.clone();
    let list: Vec<String> = endpoints.iter().map(|(h, p)| format!("{h}:{p}")).collect();
    Some(BTreeMap::from([
        (
            "STACKCTL_TARGET_URL".to_owned(),
            format!("http://{host}:{port}"),
        ),
        ("STACKCTL_TARGET_HOST".to_owned(), host),
        ("STACKCTL_TARGET_PORT".to_owned(), port.to_string()),
        ("STACKCTL_TARGET_ENDPOINTS".to_owned(), list.join(",")),
    ]))
}

/// Holds every job this plan would submit whose target has no ready replica (its submits
/// leave the plan, as for `depends_on: ready`), and gives the others their target's
/// variables (in [`ServicePlan::endpoint_env`], which the job's script exports). Marks the
/// [`JobLine`]s of jobs held here or earlier (`held`) as held.
pub fn resolve_targets(
    services: &mut Vec<ServicePlan>,
    desired: &Desired,
    observed: &Observed,
    lines: &mut [JobLine],
    held: &[Held],
) -> Vec<Held> {
    let mut newly = Vec::new();
    for service_plan in services.iter_mut() {
        let Some(service) = desired.services.get(&service_plan.service) else {
            continue;
        };
        let Some(target) = service.job.as_ref().and_then(|j| j.target.as_ref()) else {
            continue;
        };
        if !service_plan.changes.iter().any(Change::submits)
            || held.iter().any(|h| h.service == service_plan.service)
        {
            continue;
        }
        match target_values(target, desired, observed) {
            Some(values) => service_plan.endpoint_env.extend(values),
            None => {
                service_plan.changes.retain(|c| !c.submits());
                newly.push(Held {
                    service: service_plan.service.clone(),
                    reason: format!(
                        "target not ready: waits for a ready replica of {} running its current spec",
                        target.reference()
                    ),
                });
            }
        }
    }
    services.retain(|s| !s.changes.is_empty());
    for line in lines.iter_mut() {
        if let Some(h) = held
            .iter()
            .chain(&newly)
            .find(|h| h.service == line.service)
        {
            line.status = JobStatus::Held {
                reason: h.reason.clone(),
            };
        }
    }
    newly
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Repo;
    use crate::observed::runs::RunRecord;
    use crate::observed::{JobRecord, JobTimes};
    use crate::plan::{compute, compute_with, scope::Scope};
    use std::sync::Arc;

    const NOW: i64 = 1_800_000_000;

    /// A repo with a 2-replica `api` (port 8080, a health check) and a job `bench` aimed at
    /// it, `retries: 2`; `extra` is added to the job's entry.
    fn repo(api_command: &str, extra: &str) -> Repo {
        repo_with(api_command, 2, extra)
    }

    fn repo_with(api_command: &str, retries: u32, extra: &str) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("recipes/t")).unwrap();
        std::fs::create_dir_all(root.join("stacks")).unwrap();
        std::fs::write(root.join("stackctl.yaml"), "owner: t/jobs\n").unwrap();
        std::fs::write(
            root.join("recipes/t/web.yaml"),
            "name: web\ncommand: exec web\nports: [8080]\nhealth: {http: {path: /}}\n",
        )
        .unwrap();
        std::fs::write(
            root.join("recipes/t/client.yaml"),
            "name: client\ncommand: load\n",
        )
        .unwrap();
        std::fs::write(
            root.join("stacks/s.yaml"),
            format!(
                "services:\n  api:\n    recipe: t/web\n    replicas: 2\n    command: {api_command}\n  bench:\n    kind: job\n    recipe: t/client\n    target: api\n    retries: {retries}\n{extra}"
            ),
        )
        .unwrap();
        crate::desired::load(root, || None).unwrap()
    }

    fn addr(name: &str) -> ServiceAddr {
        ServiceAddr::new("s", name)
    }

    /// A listed job of `service` with `spec`, in `state`, ready (health=ready) when running.
    fn record(
        array: u64,
        service: &str,
        spec: &SpecHash,
        state: &str,
        exit: Option<i32>,
    ) -> JobRecord {
        JobRecord {
            id: JobId {
                array,
                task: Some(0),
            },
            comment: Arc::from(format!(
                "stackctl/v1;owner=t/jobs;stack=s;svc={service};spec={spec};nonce=n{array};idx=0;health=ready;addr=10.0.0.{array};ports=8080"
            )),
            state: state.to_owned(),
            reason: String::new(),
            nodes: "n1".to_owned(),
            times: JobTimes {
                start: Some(NOW - 100),
                end: Some(NOW - 50),
                exit,
                submit: None,
            },
        }
    }

    fn observed(records: Vec<JobRecord>, runs: Vec<RunRecord>) -> Observed {
        let mut observed =
            Observed::from_records(records, &crate::desired::Owner::parse("t/jobs").unwrap());
        observed.listed_at = NOW;
        if !runs.is_empty() {
            observed.runs.insert(addr("bench"), runs);
        }
        observed
    }

    fn run(array: u64, spec: &SpecHash, exit: Option<i32>) -> RunRecord {
        RunRecord {
            job_id: JobId {
                array,
                task: Some(0),
            },
            spec: spec.clone(),
            commit: None,
            start: Some(NOW - 300),
            end: exit.map(|_| NOW - 200),
            exit,
            metrics: Default::default(),
        }
    }

    fn line(plan: &crate::plan::Plan) -> &JobStatus {
        &plan
            .jobs
            .iter()
            .find(|l| l.service == addr("bench"))
            .unwrap()
            .status
    }

    fn bench_plan(plan: &crate::plan::Plan) -> Option<&ServicePlan> {
        plan.services.iter().find(|s| s.service == addr("bench"))
    }

    #[test]
    fn the_job_hash_follows_the_target_spec_and_not_retries() {
        let a = repo("web -v1", "");
        let b = repo("web -v2", "");
        let c = repo("web -v1", "    environment: {N: '1'}\n");
        let hash = |r: &Repo| r.desired.services[&addr("bench")].hash.clone();
        assert_ne!(hash(&a), hash(&b), "a new target version reruns the job");
        assert_ne!(hash(&a), hash(&c));
        assert_eq!(
            hash(&a),
            hash(&repo_with("web -v1", 5, "")),
            "retries is no spec"
        );
    }

    #[test]
    fn a_job_waits_for_a_ready_target_then_runs_with_its_addresses() {
        let repo = repo("web", "");
        let d = &repo.desired;
        let api = d.services[&addr("api")].hash.clone();
        // Target not running: held, nothing submitted for the job.
        let plan = compute(&repo.settings.owner, d, &observed(vec![], vec![]));
        assert!(bench_plan(&plan).is_none());
        assert!(
            matches!(line(&plan), JobStatus::Held { .. }),
            "{:?}",
            plan.jobs
        );
        // A target replica of an old spec that is ready does not count.
        let old = SpecHash("00000000000000aa".into());
        let plan = compute(
            &repo.settings.owner,
            d,
            &observed(vec![record(5, "api", &old, "RUNNING", None)], vec![]),
        );
        assert!(
            matches!(line(&plan), JobStatus::Held { .. }),
            "{:?}",
            plan.jobs
        );
        // Two ready replicas: run, with both endpoints.
        let mut second = record(7, "api", &api, "RUNNING", None);
        second.id.task = Some(1);
        let plan = compute(
            &repo.settings.owner,
            d,
            &observed(
                vec![record(6, "api", &api, "RUNNING", None), second],
                vec![],
            ),
        );
        assert_eq!(line(&plan), &JobStatus::Run);
        let env = &bench_plan(&plan).unwrap().endpoint_env;
        assert_eq!(env["STACKCTL_TARGET_URL"], "http://10.0.0.6:8080");
        assert_eq!(env["STACKCTL_TARGET_HOST"], "10.0.0.6");
        assert_eq!(env["STACKCTL_TARGET_PORT"], "8080");
        assert_eq!(
            env["STACKCTL_TARGET_ENDPOINTS"],
            "10.0.0.6:8080,10.0.0.7:8080"
        );
        let json: serde_json::Value =
            serde_json::from_str(&crate::render::plan_json::render(&plan)).unwrap();
        assert_eq!(json["jobs"][0]["service"], "s.bench");
        assert_eq!(json["jobs"][0]["status"]["state"], "run");
    }

    #[test]
    fn a_completed_job_is_done_also_once_slurm_forgot_it_and_reruns_only_on_request() {
        let repo = repo("web", "");
        let d = &repo.desired;
        let api = d.services[&addr("api")].hash.clone();
        let hash = d.services[&addr("bench")].hash.clone();
        let ready = || record(6, "api", &api, "RUNNING", None);
        // Listed by Slurm as COMPLETED, with its record.
        let listed = observed(
            vec![ready(), record(9, "bench", &hash, "COMPLETED", Some(0))],
            vec![run(9, &hash, Some(0))],
        );
        let plan = compute(&repo.settings.owner, d, &listed);
        assert!(bench_plan(&plan).is_none(), "{:?}", plan.services);
        assert!(matches!(line(&plan), JobStatus::Done { .. }));
        // Forgotten by Slurm (MinJobAge): the record alone says it is done.
        let forgotten = observed(vec![ready()], vec![run(9, &hash, Some(0))]);
        let plan = compute(&repo.settings.owner, d, &forgotten);
        assert!(bench_plan(&plan).is_none(), "{:?}", plan.services);
        assert!(matches!(line(&plan), JobStatus::Done { .. }));
        // `apply --wait` waits for no replica of a finished job.
        let not_ready = crate::plan::rolling::not_ready(d, &forgotten);
        assert!(
            not_ready.iter().all(|l| !l.contains("bench")),
            "{not_ready:?}"
        );
        assert!(not_ready.iter().any(|l| l.contains("api")), "{not_ready:?}");
        // `stackctl run`: one more run.
        let scope = Scope {
            rerun: [addr("bench")].into(),
            ..Scope::default()
        };
        let plan = compute_with(&repo.settings.owner, d, &forgotten, &scope);
        assert_eq!(line(&plan), &JobStatus::RerunRequested);
        assert_eq!(bench_plan(&plan).unwrap().changes[0].action, Action::Create);
        // A record of an older spec: rerun (spec changed).
        let old = SpecHash("0000000000000bbb".into());
        let plan = compute(
            &repo.settings.owner,
            d,
            &observed(vec![ready()], vec![run(8, &old, Some(0))]),
        );
        assert_eq!(line(&plan), &JobStatus::RerunSpecChanged);
        // A running job is left alone, and never counted twice.
        let plan = compute(
            &repo.settings.owner,
            d,
            &observed(
                vec![ready(), record(10, "bench", &hash, "RUNNING", None)],
                vec![],
            ),
        );
        assert!(bench_plan(&plan).is_none());
        assert!(matches!(line(&plan), JobStatus::Running { .. }));
    }

    #[test]
    fn a_failing_job_is_retried_with_backoff_up_to_retries_then_reported_failed() {
        let repo = repo("web", "");
        let d = &repo.desired;
        let api = d.services[&addr("api")].hash.clone();
        let hash = d.services[&addr("bench")].hash.clone();
        let ready = || record(6, "api", &api, "RUNNING", None);
        let plan = compute(
            &repo.settings.owner,
            d,
            &observed(vec![ready()], vec![run(9, &hash, Some(3))]),
        );
        let JobStatus::Retry {
            retry: 1, of: 2, ..
        } = line(&plan)
        else {
            panic!("{:?}", plan.jobs)
        };
        let change = &bench_plan(&plan).unwrap().changes[0];
        assert_eq!(change.backoff.as_ref().unwrap().restart, 1);
        assert_eq!(change.backoff.as_ref().unwrap().last_failure.exit, Some(3));
        // A success earlier does not count: only the failures in a row since.
        let plan = compute(
            &repo.settings.owner,
            d,
            &observed(
                vec![ready()],
                vec![
                    run(7, &hash, Some(0)),
                    run(8, &hash, Some(1)),
                    run(9, &hash, Some(1)),
                ],
            ),
        );
        assert!(
            matches!(line(&plan), JobStatus::Retry { retry: 2, .. }),
            "{:?}",
            plan.jobs
        );
        // Three failures with retries: 2: failed, nothing submitted. A run killed before it
        // recorded its end (LOST) counts as a failure too.
        let plan = compute(
            &repo.settings.owner,
            d,
            &observed(
                vec![ready()],
                vec![
                    run(7, &hash, Some(1)),
                    run(8, &hash, None),
                    run(9, &hash, Some(1)),
                ],
            ),
        );
        assert_eq!(line(&plan), &JobStatus::Failed { runs: 3 });
        assert!(bench_plan(&plan).is_none());
        // Slurm's state stands for a run whose record has no end (killed at its time limit).
        let plan = compute(
            &repo.settings.owner,
            d,
            &observed(
                vec![ready(), record(9, "bench", &hash, "TIMEOUT", None)],
                vec![run(9, &hash, None)],
            ),
        );
        let last = plan.jobs[0].last_run.as_ref().unwrap();
        assert_eq!(last.state, "TIMEOUT");
    }

    /// `observed` with `accounted` as the runs only accounting (`sacct`) still knows.
    fn with_accounted(mut observed: Observed, accounted: Vec<JobRecord>) -> Observed {
        let owner = crate::desired::Owner::parse("t/jobs").unwrap();
        observed.accounted = Observed::from_records(accounted, &owner).jobs;
        observed
    }

    #[test]
    fn accounting_knows_runs_slurm_forgot_and_the_record_keeps_its_exit_code() {
        let repo = repo("web", "");
        let d = &repo.desired;
        let api = d.services[&addr("api")].hash.clone();
        let hash = d.services[&addr("bench")].hash.clone();
        let ready = || record(6, "api", &api, "RUNNING", None);
        // No record, not listed: only accounting knows the completed run.
        let only_sacct = with_accounted(
            observed(vec![ready()], vec![]),
            vec![record(9, "bench", &hash, "COMPLETED", Some(0))],
        );
        let plan = compute(&repo.settings.owner, d, &only_sacct);
        assert!(bench_plan(&plan).is_none(), "{:?}", plan.services);
        assert_eq!(line(&plan), &JobStatus::Done { at: NOW - 50 });
        let last = plan.jobs[0].last_run.clone().unwrap();
        assert_eq!((last.state.as_str(), last.exit), ("COMPLETED", Some(0)));
        // Without it the same cluster state runs the job.
        let plan = compute(&repo.settings.owner, d, &observed(vec![ready()], vec![]));
        assert_eq!(line(&plan), &JobStatus::Run);
        // A record without an end (killed): accounting's state, not LOST.
        let killed = with_accounted(
            observed(vec![ready()], vec![run(9, &hash, None)]),
            vec![record(9, "bench", &hash, "TIMEOUT", None)],
        );
        let plan = compute(&repo.settings.owner, d, &killed);
        let last = plan.jobs[0].last_run.clone().unwrap();
        assert_eq!(last.state, "TIMEOUT");
        assert!(matches!(line(&plan), JobStatus::Retry { retry: 1, .. }));
        // Both ended: the record's exit code stands.
        let both = with_accounted(
            observed(vec![ready()], vec![run(9, &hash, Some(0))]),
            vec![record(9, "bench", &hash, "FAILED", Some(1))],
        );
        let plan = compute(&repo.settings.owner, d, &both);
        let last = plan.jobs[0].last_run.clone().unwrap();
        assert_eq!((last.succeeded, last.exit), (true, Some(0)));
        assert!(matches!(line(&plan), JobStatus::Done { .. }));
        // An accounted run of an older spec: rerun (spec changed).
        let old = SpecHash("0000000000000bbb".into());
        let plan = compute(
            &repo.settings.owner,
            d,
            &with_accounted(
                observed(vec![ready()], vec![]),
                vec![record(8, "bench", &old, "COMPLETED", Some(0))],
            ),
        );
        assert_eq!(line(&plan), &JobStatus::RerunSpecChanged);
        // Another owner's run with the same name is none of ours.
        let mut foreign = record(9, "bench", &hash, "COMPLETED", Some(0));
        foreign.comment = Arc::from(foreign.comment.replace("owner=t/jobs", "owner=t/other"));
        let plan = compute(
            &repo.settings.owner,
            d,
            &with_accounted(observed(vec![ready()], vec![]), vec![foreign]),
        );
        assert_eq!(line(&plan), &JobStatus::Run);
    }

    #[test]
    fn a_job_removed_from_the_repo_is_cancelled_while_running_and_forgotten_once_ended() {
        let repo = repo("web", "");
        let mut d = repo.desired.clone();
        let hash = d.services[&addr("bench")].hash.clone();
        d.services.remove(&addr("bench"));
        let plan = compute(
            &repo.settings.owner,
            &d,
            &observed(vec![record(10, "bench", &hash, "RUNNING", None)], vec![]),
        );
        let bench = bench_plan(&plan).unwrap();
        assert_eq!(bench.changes[0].action, Action::Destroy);
        let plan = compute(
            &repo.settings.owner,
            &d,
            &observed(
                vec![record(10, "bench", &hash, "COMPLETED", Some(0))],
                vec![],
            ),
        );
        assert!(
            bench_plan(&plan).is_none(),
            "a finished job is never a destroy"
        );
    }
}
