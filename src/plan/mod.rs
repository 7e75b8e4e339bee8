//! The plan: the difference between desired and observed state, as data. Pure: no IO, no
//! clock, no Slurm. Every renderer (human, JSON) draws the same `Plan`, attribute diffs
//! included ([`diff`]).

pub mod backoff;
pub mod diff;
pub mod images;
pub mod jobs;
pub mod protection;
pub mod rolling;
pub mod scope;

pub use rolling::{Rollout, Stopped};

use crate::desired::{Condition, Desired, Owner, ReplicaSpec, ServiceAddr, SpecHash, Strategy};
use crate::observed::{FailRecord, JobId, JobState, LiveJob, Observed, StartEstimate};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What converging the cluster takes, service by service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The owner whose jobs were compared.
    pub owner: Owner,
    /// Services with at least one change, in dependency order (each after the services it
    /// depends on, otherwise in address order); services gone from the repo last.
    pub services: Vec<ServicePlan>,
    /// The commit the desired state was read from, when it is a git checkout.
    pub source: Option<Source>,
    /// Services gone from the repo that keep running because pruning is off, with the
    /// replicas they have; a pruning plan would destroy them.
    pub not_pruned: Vec<(ServiceAddr, u32)>,
    /// What the reader should know that is no change: fixed ports that replicas placed on
    /// one node would both bind ([`port_conflicts`]).
    pub warnings: Vec<String>,
    /// Replicas this plan does not submit: crash-looping ones waiting in Slurm for their
    /// backoff to pass or given up on (`max_attempts`), and ones whose job is still
    /// COMPLETING. Not changes, but the cluster has not converged while any backs off or
    /// completes.
    pub waiting: Vec<Waiting>,
    /// Services whose submits wait for another service's endpoint or for a dependency
    /// ([`Held`]).
    pub held: Vec<Held>,
    /// Rollouts in progress (successor not yet ready long enough, or waiting for a slot);
    /// the cluster has not converged while any is.
    pub rollouts: Vec<Rollout>,
    /// Successors that stopped their service's rollout: the pass that applies this plan
    /// fails, naming each.
    pub stopped: Vec<Stopped>,
    /// Every one-shot job in the repo (`kind: job`) and where it stands, in address order
    /// ([`jobs`]); a finished one is no change.
    pub jobs: Vec<jobs::JobLine>,
    /// Images the services need that are not built: builds to submit, builds running, and
    /// builds that failed (their services are held). Filled by the caller that can read the
    /// image directory ([`crate::plan::images::image_steps`]).
    pub images: Vec<crate::plan::images::ImageStep>,
}

/// A replica the plan leaves as it is for now: crash-looping, or its job still completing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// The service.
    pub service: ServiceAddr,
    /// Replica index.
    pub index: u32,
    /// The job: the successor waiting in the queue, the failed job given up on, or the job
    /// still completing.
    pub job_id: JobId,
    /// Restarts in a row so far.
    pub restarts: u32,
    /// Why it waits.
    pub kind: WaitingKind,
    /// The last failure, when known.
    pub last_failure: Option<FailRecord>,
}

/// Why a replica is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum WaitingKind {
    /// Its successor is queued with `--begin` and starts at `not_before` (unix seconds).
    BackingOff {
        /// Earliest start.
        not_before: i64,
    },
    /// `max_attempts` restarts failed: it is not recreated until the spec changes or the
    /// record ages out of Slurm.
    GaveUp,
    /// Its job is COMPLETING: it is recreated once Slurm has finished it, unless it was
    /// requeued and returns to the queue by itself.
    Completing,
}

/// How a replica whose job failed is recreated: as which restart, when, and away from which
/// node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// Which restart in a row the successor is (1 for the first).
    pub restart: u32,
    /// Earliest start, unix seconds: the failure's time plus the delay.
    pub not_before: i64,
    /// Seconds after the listing the successor must wait: 0 when the delay has passed
    /// (submitted to start at once), else it is submitted with `--begin=now+<wait>`.
    pub wait: u64,
    /// The failure being recovered from.
    pub last_failure: FailRecord,
    /// Nodes (hostlist) the successor avoids (`--exclude`): the failed job's, when its
    /// partitions have other nodes that can run it (settled against the cluster's facts).
    pub exclude: Option<String>,
}

/// The commit a plan's desired state comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Abbreviated commit id.
    pub commit: String,
    /// Whether the working tree had uncommitted changes (untracked files included).
    pub dirty: bool,
}

/// The changes to one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePlan {
    /// The service.
    pub service: ServiceAddr,
    /// Replicas alive now (distinct indexes).
    pub replicas_before: u32,
    /// Replicas wanted (0 when the service is gone from the repo).
    pub replicas_after: u32,
    /// Whether the service is still in the repo.
    pub in_repo: bool,
    /// The spec of the replicas being replaced, when it could be read back from Slurm.
    pub spec_before: Option<ReplicaSpec>,
    /// The hash [`ServicePlan::spec_before`] was found under: the replaces whose job runs it
    /// show it as their previous spec ([`ServicePlan::spec_before_of`]).
    #[serde(default)]
    pub hash_before: Option<SpecHash>,
    /// The desired spec, when the service is in the repo.
    pub spec_after: Option<ReplicaSpec>,
    /// The desired spec's hash.
    pub hash_after: Option<SpecHash>,
    /// The attributes that change: every attribute of a new service, the differences of a
    /// replaced one; `None` when a replace's previous spec could not be read back.
    pub diff: Option<Vec<diff::AttributeChange>>,
    /// Per-replica changes: replaces and creates by index, then destroys highest index first.
    pub changes: Vec<Change>,
    /// The values of the spec's `endpoint_env`, resolved from the referenced services' ready
    /// replicas when this plan was made; what the submitted jobs get.
    pub endpoint_env: BTreeMap<String, String>,
    /// Services this plan also submits jobs for that this service's new jobs must start after
    /// (`depends_on` with `condition: started`): they are submitted first, and these jobs
    /// with `--dependency=after:<their job ids>`.
    pub start_after: Vec<ServiceAddr>,
    /// Queued jobs of `condition: started` dependencies that this plan does not resubmit:
    /// the new jobs also start after them.
    pub start_after_jobs: Vec<JobId>,
    /// When and where Slurm expects the new jobs to start (`sbatch --test-only`), when the
    /// plan asked (`stackctl plan` does, for every service it submits jobs for; the plans of
    /// an apply do not).
    pub start_estimate: Option<StartEstimate>,
    /// When some replaces are rolling ([`Order::CreateFirst`]): how many successors at once
    /// (`max_surge`).
    pub rolling_batch: Option<u32>,
    /// The `endpoint_env` variables whose address moved for the replicas this plan replaces
    /// with [`Reason::EndpointMoved`] ([`moved_endpoints`]), in name order.
    pub endpoint_moved: Vec<String>,
}

/// A service whose new replicas wait for another service's endpoint: nothing is submitted
/// for it (and nothing it would replace is cancelled) until a replica of that service is
/// ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The service.
    pub service: ServiceAddr,
    /// Why, e.g. `REDIS_URL needs a ready replica of cache/redis`.
    pub reason: String,
}

/// One replica-level change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Replica index.
    pub index: u32,
    /// What happens.
    pub action: Action,
    /// Why.
    pub reason: Reason,
    /// The job affected (destroy, replace) or the ended job being recreated (create).
    pub job: Option<JobRef>,
    /// For the successor of a failed job with the desired spec: its crash-loop backoff.
    pub backoff: Option<Backoff>,
    /// For a replace: whether the old job goes first (recreate) or its successor does
    /// (rolling, renewal). [`Order::DestroyFirst`] for creates and destroys.
    pub order: Order,
}

/// The order of a replace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Cancel the old job, then submit its successor (`-/+`, recreate).
    #[default]
    DestroyFirst,
    /// Submit the successor naming the old job (`pred=`); the old job is cancelled by a later
    /// pass once the successor has been ready for `min_healthy_time` (`+/-`, rolling).
    CreateFirst,
}

/// A reference to an observed job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    /// Slurm job id, e.g. `123_4`.
    pub job_id: JobId,
    /// Slurm state when observed.
    pub state: String,
    /// Spec hash from its marker.
    pub spec_hash: SpecHash,
    /// Its whole marker, for a change that rewrites it in place ([`Action::Update`]);
    /// serialized as the job comment it was read from.
    #[serde(with = "marker_text")]
    pub marker: std::sync::Arc<crate::observed::Marker>,
}

/// A job's marker as its comment text, [`crate::observed::Marker`]'s Display and parse.
mod marker_text {
    use crate::observed::Marker;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(marker: &Arc<Marker>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(marker)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Marker>, D::Error> {
        let text = String::deserialize(d)?;
        Marker::parse(&text)
            .map(Arc::new)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is no stackctl marker")))
    }
}

/// The kinds of replica change, in Terraform's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Submit a job.
    Create,
    /// Cancel a job.
    Destroy,
    /// Cancel a job, then submit its successor.
    Replace,
    /// Rewrite the job's marker in place (`scontrol update Comment=`); the job keeps running.
    Update,
}

/// Why a change is planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No job exists for this index (new service or scale up).
    Missing,
    /// The index's last job ended (crashed, cancelled, timed out…).
    Ended,
    /// The index is at or above the desired replica count.
    ScaleDown,
    /// The service is gone from the repo.
    ServiceRemoved,
    /// Another alive job already holds this index (e.g. after concurrent applies).
    Duplicate,
    /// The job runs a spec other than the desired one.
    SpecChanged,
    /// The service's `protect:` differs from the job's marker (`protect=1`): the marker is
    /// rewritten, the job is not replaced (protection is not part of the spec).
    ProtectChanged,
    /// `--replace` names the replica.
    Forced,
    /// The job nears its time limit (`renew_before`): a successor takes over.
    Renewal,
    /// Its successor has been ready for `min_healthy_time`: the rolled-over job goes.
    Superseded,
    /// A successor that stopped its service's rollout ([`Stopped`]).
    RolloutStopped,
    /// The job was given another service's address (`endpoint_env`) that no ready replica
    /// of that service serves any more: the service moved, so the job is replaced to get
    /// the new address ([`moved_endpoints`]).
    EndpointMoved,
}

/// Job counts, as Terraform counts them: a replace adds one and destroys one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Jobs to submit.
    pub add: usize,
    /// Jobs whose marker is rewritten in place (`protect:` changed).
    pub change: usize,
    /// Jobs to cancel.
    pub destroy: usize,
}

impl Summary {
    /// Counts `changes`: a replace adds one and destroys one.
    pub fn of<'a>(changes: impl IntoIterator<Item = &'a Change>) -> Summary {
        let mut summary = Summary::default();
        for change in changes {
            match change.action {
                Action::Create => summary.add += 1,
                Action::Destroy => summary.destroy += 1,
                Action::Update => summary.change += 1,
                Action::Replace => {
                    summary.add += 1;
                    summary.destroy += 1;
                }
            }
        }
        summary
    }
}

/// `1 to add, 0 to change, 2 to destroy`: the one wording of the counts, which the text and
/// Markdown plans (`Plan: ….`) and watch's log lines use.
impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} to add, {} to change, {} to destroy",
            self.add, self.change, self.destroy
        )
    }
}

impl Change {
    /// Returns whether the change submits a job (create, replace).
    pub fn submits(&self) -> bool {
        matches!(self.action, Action::Create | Action::Replace)
    }

    /// For a marker rewritten in place ([`Action::Update`]): the `protect` value written,
    /// the opposite of what the job's marker says. `None` for other changes.
    pub fn protect_after(&self) -> Option<bool> {
        match (self.action, &self.job) {
            (Action::Update, Some(job)) => Some(!job.marker.protect),
            _ => None,
        }
    }
}

/// How a whole service changes: what its block in the text plan is headed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceAction {
    /// A new service: every replica is created.
    Create,
    /// Gone from the repo: every replica is destroyed.
    Destroy,
    /// Replicas added or removed, ended ones recreated, duplicates cancelled, markers
    /// rewritten.
    Scale,
    /// Replicas replaced, the old job cancelled first.
    Replace,
    /// Replicas replaced rolling: the successor first.
    Roll,
}

impl ServicePlan {
    /// Decides how the service as a whole changes.
    pub fn action(&self) -> ServiceAction {
        if self.rolling_batch.is_some() {
            ServiceAction::Roll
        } else if self.changes.iter().any(|c| c.action == Action::Replace) {
            ServiceAction::Replace
        } else if !self.in_repo {
            ServiceAction::Destroy
        } else if self.changes.iter().all(|c| c.reason == Reason::Missing)
            && self.replicas_before == 0
        {
            ServiceAction::Create
        } else {
            ServiceAction::Scale
        }
    }

    /// The previous spec of `change`'s job: [`ServicePlan::spec_before`] when the job runs
    /// the spec it was read under, for a replace; else `None`.
    pub fn spec_before_of(&self, change: &Change) -> Option<&ReplicaSpec> {
        let job = change.job.as_ref()?;
        (change.action == Action::Replace && self.hash_before.as_ref() == Some(&job.spec_hash))
            .then_some(self.spec_before.as_ref())
            .flatten()
    }
}

impl Plan {
    /// Returns the job counts of the plan.
    pub fn summary(&self) -> Summary {
        Summary::of(self.services.iter().flat_map(|s| &s.changes))
    }

    /// Returns the services the plan destroys because they are gone from the repo.
    pub fn removed_services(&self) -> Vec<&ServiceAddr> {
        self.services
            .iter()
            .filter(|s| !s.in_repo)
            .map(|s| &s.service)
            .collect()
    }

    /// Returns the services the plan submits jobs for.
    pub fn submitting_services(&self) -> Vec<&ServiceAddr> {
        self.services
            .iter()
            .filter(|s| s.changes.iter().any(Change::submits))
            .map(|s| &s.service)
            .collect()
    }

    /// Leaves the services gone from the repo running: their destroys move out of the plan
    /// into [`Plan::not_pruned`].
    pub fn keep_removed_services(&mut self) {
        let (removed, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.services)
            .into_iter()
            .partition(|s| !s.in_repo);
        self.services = kept;
        self.not_pruned = removed
            .into_iter()
            .map(|s| (s.service, s.replicas_before))
            .collect();
    }

    /// Returns whether the plan changes nothing (an image build is a change).
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && !self.images.iter().any(|i| i.action.builds())
    }

    /// Adds the image steps: a service whose image failed to build is held (its submits and
    /// the cancels of the replicas they would replace leave the plan).
    pub fn add_images(
        &mut self,
        steps: Vec<crate::plan::images::ImageStep>,
        log_dir: &std::path::Path,
    ) {
        for step in &steps {
            if !matches!(step.action, crate::plan::images::ImageAction::Failed { .. }) {
                continue;
            }
            for service in &step.services {
                self.held.push(Held {
                    service: service.clone(),
                    reason: crate::plan::images::step_line(step, log_dir),
                });
                if let Some(plan) = self.services.iter_mut().find(|p| &p.service == service) {
                    plan.changes
                        .retain(|c| !matches!(c.action, Action::Create | Action::Replace));
                }
            }
        }
        self.services.retain(|p| !p.changes.is_empty());
        self.images = steps;
    }

    /// Returns whether the cluster matches the repo: no changes and no replica backing off
    /// or given up on (`plan --detailed-exitcode` exits 2 otherwise).
    pub fn is_converged(&self) -> bool {
        self.is_empty()
            && self.waiting.is_empty()
            && self.held.is_empty()
            && self.rollouts.is_empty()
            && self.stopped.is_empty()
    }
}

/// Returns a warning for every fixed port two replicas could both bind on one node: a service
/// with several replicas on a fixed port, and a fixed port two services declare. Slurm may
/// place any two jobs on one node, and then the second to bind fails. stackctl warns rather
/// than constraining placement (`--exclude` of the nodes siblings hold cannot cover replicas
/// submitted together); an `auto` port avoids the collision.
pub fn port_conflicts(desired: &Desired) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut users: BTreeMap<u16, Vec<&ServiceAddr>> = BTreeMap::new();
    for (addr, service) in &desired.services {
        let fixed: Vec<u16> = service
            .spec
            .ports
            .iter()
            .filter_map(|p| p.number())
            .collect();
        if service.replicas > 1 && !fixed.is_empty() {
            let list: Vec<String> = fixed.iter().map(u16::to_string).collect();
            let hint = service.spec.auto_port_hint(fixed[0]);
            warnings.push(format!(
                "{addr} runs {} replicas on fixed port {}: two replicas placed on one node \
                 would both bind it and one would fail; {hint}",
                service.replicas,
                list.join(", ")
            ));
        }
        for port in fixed {
            users.entry(port).or_default().push(addr);
        }
    }
    for (port, services) in users {
        if services.len() > 1 {
            let names: Vec<String> = services.iter().map(|s| s.to_string()).collect();
            warnings.push(format!(
                "{} all use fixed port {port}: placed on one node, only the first to bind it \
                 runs; use different ports, or `auto` ones: {}",
                names.join(", "),
                desired.services[services[0]].spec.auto_port_hint(port)
            ));
        }
    }
    warnings
}

/// Computes the plan that takes `observed` to `desired`.
pub fn compute(owner: &Owner, desired: &Desired, observed: &Observed) -> Plan {
    compute_with(owner, desired, observed, &scope::Scope::default())
}

/// [`compute`], replacing the replicas `scope` forces (`--replace`) and keeping the plan to
/// the services in scope (`--target`, `--exclude`).
pub fn compute_with(
    owner: &Owner,
    desired: &Desired,
    observed: &Observed,
    scope: &scope::Scope,
) -> Plan {
    let mut jobs: BTreeMap<&ServiceAddr, Vec<&LiveJob>> = BTreeMap::new();
    for job in &observed.jobs {
        jobs.entry(&job.marker.service).or_default().push(job);
    }
    let addresses: BTreeSet<&ServiceAddr> = desired
        .services
        .keys()
        .chain(jobs.keys().copied())
        .collect();
    let mut waiting = Vec::new();
    let mut rollouts = Vec::new();
    let mut stopped = Vec::new();
    let mut warnings = [port_conflicts(desired), desired.warnings()].concat();
    let mut job_lines = Vec::new();
    let mut services: Vec<ServicePlan> = addresses
        .into_iter()
        .filter_map(|addr| {
            let service_jobs = jobs.get(addr).map(Vec::as_slice).unwrap_or_default();
            let service = desired.services.get(addr);
            if let Some(s) = service.filter(|s| s.job.is_some()) {
                let rerun = scope.rerun.contains(addr);
                let (plan, line) =
                    jobs::plan_job(addr, s, service_jobs, observed, rerun, &mut waiting);
                job_lines.push(line);
                return plan;
            }
            // A job on the desired spec whose endpoint moved; the stack may opt out
            // (`on_endpoint_move: keep`), and then the plan only says so.
            let moved = |job: &LiveJob| -> Vec<String> {
                match service {
                    Some(s) if s.hash == job.marker.spec => {
                        moved_endpoints(job, &s.spec, desired, observed)
                    }
                    _ => Vec::new(),
                }
            };
            // A protected service is never replaced for it (protection would refuse the
            // plan): like `keep`, the plan only warns.
            let follows = |s: &crate::desired::Service| s.replace_on_endpoint_move && !s.protect;
            if let Some(s) = service.filter(|s| !follows(s)) {
                let why = if s.protect {
                    "protect: true"
                } else {
                    "on_endpoint_move: keep"
                };
                for job in service_jobs.iter().filter(|j| j.state.is_alive()) {
                    let keys = moved(job);
                    if !keys.is_empty() {
                        warnings.push(format!(
                            "{addr}[{}] job {} keeps {} pointing at an address {} no longer \
                             serves ({why})",
                            job.index,
                            job.id,
                            keys.join(", "),
                            targets_of(&s.spec, &keys)
                        ));
                    }
                }
            }
            let follow = |job: &LiveJob| -> Vec<String> {
                if service.is_some_and(follows) {
                    moved(job)
                } else {
                    Vec::new()
                }
            };
            plan_service(
                addr,
                service,
                service_jobs,
                observed,
                &mut waiting,
                (&|index, job| scope.forces(addr, index, job), &follow),
                (&mut rollouts, &mut stopped),
            )
        })
        .collect();
    sort_by_dependencies(&mut services, desired);
    let mut held = resolve_endpoint_env(&mut services, desired, observed);
    held.extend(resolve_dependencies(
        &mut services,
        desired,
        observed,
        &held,
    ));
    let held_so_far = held.clone();
    held.extend(jobs::resolve_targets(
        &mut services,
        desired,
        observed,
        &mut job_lines,
        &held_so_far,
    ));
    let mut plan = Plan {
        owner: owner.clone(),
        services,
        source: None,
        not_pruned: Vec::new(),
        warnings,
        waiting,
        held,
        rollouts,
        stopped,
        jobs: job_lines,
        images: Vec::new(),
    };
    scope.restrict(&mut plan);
    plan
}

/// Sorts `services` (in address order) into dependency order ([`Desired::dependency_order`]);
/// a service gone from the repo, whose dependencies are unknown, keeps its place in address
/// order before the first service in the repo that sorts after it. Without dependencies the
/// order stays the address order.
fn sort_by_dependencies(services: &mut [ServicePlan], desired: &Desired) {
    let order = desired.dependency_order().unwrap_or_default();
    let key = |addr: &ServiceAddr| -> (usize, bool) {
        match order.iter().position(|a| *a == addr) {
            Some(i) => (i, true),
            None => (
                order.iter().position(|a| *a > addr).unwrap_or(order.len()),
                false,
            ),
        }
    };
    services.sort_by_key(|s| key(&s.service));
}

/// Resolves the `endpoint_env` of every service the plan submits jobs for. A service whose
/// reference finds no ready replica is held: its creates and replaces leave the plan (its
/// scale-down stays), so no job starts with an empty address and no running replica is
/// replaced by one that could not start.
fn resolve_endpoint_env(
    services: &mut Vec<ServicePlan>,
    desired: &Desired,
    observed: &Observed,
) -> Vec<Held> {
    let mut held = Vec::new();
    for service_plan in services.iter_mut() {
        let Some(service) = desired.services.get(&service_plan.service) else {
            continue;
        };
        let submits = service_plan.changes.iter().any(Change::submits);
        if service.spec.endpoint_env.is_empty() || !submits {
            continue;
        }
        match endpoint_values(&service.spec, desired, observed) {
            Ok(values) => service_plan.endpoint_env = values,
            Err(reason) => {
                service_plan.changes.retain(|c| !c.submits());
                held.push(Held {
                    service: service_plan.service.clone(),
                    reason,
                });
            }
        }
    }
    services.retain(|s| !s.changes.is_empty());
    held
}

/// Applies `depends_on` to every service the plan submits jobs for, in dependency order
/// (`services` is sorted so). A service is held, like one waiting for an endpoint, when a
/// `ready` dependency has no ready replica, or when a `started` dependency has no alive job
/// and this plan submits none for it (`already_held` are the services held so far). A
/// `started` dependency the plan submits jobs for, or whose jobs are queued, goes into
/// [`ServicePlan::start_after`] or [`ServicePlan::start_after_jobs`].
fn resolve_dependencies(
    services: &mut Vec<ServicePlan>,
    desired: &Desired,
    observed: &Observed,
    already_held: &[Held],
) -> Vec<Held> {
    let mut held: Vec<Held> = Vec::new();
    let mut submitting: BTreeSet<ServiceAddr> = BTreeSet::new();
    for service_plan in services.iter_mut() {
        let Some(service) = desired.services.get(&service_plan.service) else {
            continue;
        };
        let submits = service_plan
            .changes
            .iter()
            .any(|c| c.action != Action::Destroy);
        if !submits
            || already_held
                .iter()
                .any(|h| h.service == service_plan.service)
        {
            continue;
        }
        let mut reason = None;
        for dependency in &service.depends_on {
            let target = &dependency.service;
            let mut alive = observed.alive().filter(|job| &job.marker.service == target);
            match dependency.condition {
                Condition::Ready => {
                    if !alive.any(|job| job.is_ready_running(observed.spec_of(job, desired))) {
                        reason = Some(format!(
                            "waits for a ready replica of {} (depends_on)",
                            target.reference()
                        ));
                        break;
                    }
                }
                Condition::Started => {
                    if submitting.contains(target) {
                        service_plan.start_after.push(target.clone());
                        continue;
                    }
                    let jobs: Vec<&LiveJob> = alive.collect();
                    if jobs.iter().any(|job| job.state == JobState::Running) {
                        continue;
                    }
                    if jobs.is_empty() {
                        reason = Some(format!(
                            "waits for {} to be submitted (depends_on)",
                            target.reference()
                        ));
                        break;
                    }
                    service_plan
                        .start_after_jobs
                        .extend(jobs.iter().map(|job| job.id));
                }
            }
        }
        match reason {
            Some(reason) => {
                service_plan.changes.retain(|c| c.action == Action::Destroy);
                service_plan.start_after.clear();
                service_plan.start_after_jobs.clear();
                held.push(Held {
                    service: service_plan.service.clone(),
                    reason,
                });
            }
            None => {
                submitting.insert(service_plan.service.clone());
            }
        }
    }
    services.retain(|s| !s.changes.is_empty());
    held
}

/// The value of each `endpoint_env` entry of `spec`: the first ready replica (lowest index)
/// of the referenced service, at the named port or its published one.
pub fn endpoint_values(
    spec: &ReplicaSpec,
    desired: &Desired,
    observed: &Observed,
) -> Result<BTreeMap<String, String>, String> {
    let mut values = BTreeMap::new();
    for (key, reference) in &spec.endpoint_env {
        let target = reference.address();
        let found = observed
            .alive()
            .filter(|job| job.marker.service == target)
            .filter(|job| job.is_ready_running(observed.spec_of(job, desired)))
            .find_map(|job| {
                job.serving_at(observed.spec_of(job, desired))
                    .into_iter()
                    .find_map(|at| Some((at.host.clone(), at.port(reference.port.as_deref())?)))
            });
        match found {
            Some((host, port)) => {
                values.insert(key.clone(), reference.value(&host, port));
            }
            None => {
                return Err(format!(
                    "{key} needs a ready replica of {}, and none is ready yet",
                    reference.service
                ));
            }
        }
    }
    Ok(values)
}

/// A short fingerprint of one resolved `endpoint_env` value, as a job's marker carries it
/// (`ep=`): 8 hex digits of its SHA-256. A marker has no room for the values themselves; a
/// collision (one in 4 billion) would only miss one move.
pub fn endpoint_fingerprint(value: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(value.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The fingerprints of resolved `endpoint_env` values, in variable name order: what a job's
/// marker records (`ep=`); empty without values.
pub fn endpoint_fingerprints(values: &BTreeMap<String, String>) -> Vec<String> {
    values.values().map(|v| endpoint_fingerprint(v)).collect()
}

/// Returns the `endpoint_env` variables of `job` (running `spec`) whose address moved: the
/// referenced service has ready replicas, and none of them serves the address the job was
/// given (compared by fingerprint, [`Marker::endpoints`](crate::observed::Marker)). A
/// variable whose service has no ready replica is not counted (nothing to move to; a plan
/// holds the replacement anyway), nor is a job whose marker records no fingerprints (an
/// older stackctl submitted it).
pub fn moved_endpoints(
    job: &LiveJob,
    spec: &ReplicaSpec,
    desired: &Desired,
    observed: &Observed,
) -> Vec<String> {
    if job.marker.endpoints.len() != spec.endpoint_env.len() {
        return Vec::new();
    }
    let mut moved = Vec::new();
    for ((key, reference), given) in spec.endpoint_env.iter().zip(&job.marker.endpoints) {
        let target = reference.address();
        let served: Vec<String> = observed
            .alive()
            .filter(|j| j.marker.service == target)
            .filter(|j| j.is_ready_running(observed.spec_of(j, desired)))
            .flat_map(|j| j.serving_at(observed.spec_of(j, desired)))
            .filter_map(|at| {
                let port = at.port(reference.port.as_deref())?;
                Some(endpoint_fingerprint(&reference.value(&at.host, port)))
            })
            .collect();
        if !served.is_empty() && !served.contains(given) {
            moved.push(key.clone());
        }
    }
    moved
}

/// The services `keys` of `spec`'s `endpoint_env` refer to, e.g. `cache/redis`.
fn targets_of(spec: &ReplicaSpec, keys: &[String]) -> String {
    let mut targets: Vec<&str> = keys
        .iter()
        .filter_map(|k| spec.endpoint_env.get(k))
        .map(|r| r.service.as_str())
        .collect();
    targets.dedup();
    targets.join(", ")
}

/// What makes a plan replace a replica on the desired spec: whether `--replace` names it
/// (index, job), and which of its `endpoint_env` addresses moved ([`moved_endpoints`]).
type Replaces<'a> = (
    &'a dyn Fn(u32, &JobId) -> bool,
    &'a dyn Fn(&LiveJob) -> Vec<String>,
);

fn plan_service(
    addr: &ServiceAddr,
    desired: Option<&crate::desired::Service>,
    jobs: &[&LiveJob],
    observed: &Observed,
    waiting: &mut Vec<Waiting>,
    (forced, moved): Replaces<'_>,
    (rollouts, stopped): (&mut Vec<Rollout>, &mut Vec<Stopped>),
) -> Option<ServicePlan> {
    let now = observed.listed_at;
    let wanted = desired.map_or(0, |s| s.replicas);
    let wanted_hash = desired.map(|s| &s.hash);
    let mut alive: BTreeMap<u32, Vec<&LiveJob>> = BTreeMap::new();
    let mut ended: BTreeMap<u32, &LiveJob> = BTreeMap::new();
    let mut completing: BTreeMap<u32, &LiveJob> = BTreeMap::new();
    for &job in jobs {
        if job.state.is_alive() {
            alive.entry(job.index).or_default().push(job);
        } else if job.state == JobState::Completing {
            completing.insert(job.index, job);
        } else {
            ended.insert(job.index, job);
        }
    }
    let mut changes = Vec::new();
    let mut destroys = Vec::new();
    let rolling = desired.filter(|s| s.update.strategy == Strategy::Rolling);
    let mut pairs = Vec::new();
    let mut due = Vec::new();
    let mut ready_now = 0u32;
    let mut endpoint_moved: BTreeSet<String> = BTreeSet::new();
    for index in 0..wanted {
        let Some(candidates) = alive.get(&index) else {
            // Neither gone nor staying: a requeued job passes through COMPLETING, and a copy
            // made now would run beside it once it is back.
            if let Some(job) = completing.get(&index) {
                waiting.push(Waiting {
                    service: addr.clone(),
                    index,
                    job_id: job.id,
                    restarts: job.marker.restart.restarts,
                    kind: WaitingKind::Completing,
                    last_failure: None,
                });
                continue;
            }
            let (reason, job) = match ended.get(&index) {
                Some(job) => (Reason::Ended, Some(*job)),
                None => (Reason::Missing, None),
            };
            let mut backoff = None;
            if let (Some(job), Some(service)) = (job, desired)
                && job.state.is_crash()
                && job.marker.spec == service.hash
            {
                let policy = &service.restart;
                let times = job.times;
                let ran_for = times.start.zip(times.end).map(|(start, end)| end - start);
                let restart = backoff::next_restart(policy, job.marker.restart.restarts, ran_for);
                let failed_at = times.end.unwrap_or(observed.listed_at);
                let last_failure = FailRecord {
                    state: job.state.to_string(),
                    exit: times.exit,
                    at: failed_at,
                };
                if backoff::gives_up(policy, restart) {
                    waiting.push(Waiting {
                        service: addr.clone(),
                        index,
                        job_id: job.id,
                        restarts: restart - 1,
                        kind: WaitingKind::GaveUp,
                        last_failure: Some(last_failure),
                    });
                    continue;
                }
                let seed = backoff::seed(&format!("{addr}[{index}] {}", job.id));
                let delay = backoff::delay(policy, restart, seed);
                let not_before = failed_at.saturating_add(delay as i64);
                backoff = Some(Backoff {
                    restart,
                    not_before,
                    wait: u64::try_from(not_before - observed.listed_at).unwrap_or(0),
                    last_failure,
                    exclude: Some(job.nodes.clone()).filter(|n| !n.is_empty()),
                });
            }
            changes.push(Change {
                index,
                action: Action::Create,
                reason,
                job: job.map(job_ref),
                backoff,
                order: Order::DestroyFirst,
            });
            continue;
        };
        let spec_for = |job: &LiveJob| match desired {
            Some(s) if s.hash == job.marker.spec => Some(&s.spec),
            _ => observed.specs.get(&job.marker.spec),
        };
        if candidates.iter().any(|j| j.is_ready_running(spec_for(j))) {
            ready_now += 1;
        }
        if desired.is_some()
            && let Some((pred, succ)) = rolling::pair(candidates)
        {
            for &job in candidates
                .iter()
                .filter(|j| j.id != pred.id && j.id != succ.id)
            {
                destroys.push(rolling::destroy(index, job, Reason::Duplicate));
            }
            // A successor started because the endpoint moved is seen through like a forced one.
            let moved_pred = !moved(pred).is_empty();
            pairs.push((index, pred, succ, forced(index, &pred.id) || moved_pred));
            continue;
        }
        let keeper = keeper(candidates, wanted_hash);
        let moved_keys = moved(keeper);
        // A successor queued with `--begin` for its backoff, with the desired spec: wait.
        if Some(&keeper.marker.spec) == wanted_hash
            && keeper.state == JobState::Pending
            && let Some(not_before) = keeper.marker.restart.not_before
            && (not_before > observed.listed_at || keeper.reason.trim() == "BeginTime")
        {
            waiting.push(Waiting {
                service: addr.clone(),
                index,
                job_id: keeper.id,
                restarts: keeper.marker.restart.restarts,
                kind: WaitingKind::BackingOff { not_before },
                last_failure: keeper.marker.restart.fail.clone(),
            });
        }
        for &job in candidates.iter().filter(|j| j.id != keeper.id) {
            destroys.push(rolling::destroy(index, job, Reason::Duplicate));
        }
        if Some(&keeper.marker.spec) != wanted_hash {
            // A rolling service replaces a running replica create-first; one that is not
            // running serves nothing and goes first.
            if rolling.is_some() && keeper.state == JobState::Running {
                due.push(rolling::Due {
                    index,
                    job: keeper,
                    reason: Reason::SpecChanged,
                });
            } else {
                changes.push(Change {
                    index,
                    action: Action::Replace,
                    reason: Reason::SpecChanged,
                    job: Some(job_ref(keeper)),
                    backoff: None,
                    order: Order::DestroyFirst,
                });
            }
        } else if let Some(service) = desired
            && rolling::renewal_due(service, keeper, now)
        {
            due.push(rolling::Due {
                index,
                job: keeper,
                reason: Reason::Renewal,
            });
        } else if forced(index, &keeper.id) {
            // Forced like a spec change: rolling services replace a running replica
            // create-first.
            if rolling.is_some() && keeper.state == JobState::Running {
                due.push(rolling::Due {
                    index,
                    job: keeper,
                    reason: Reason::Forced,
                });
            } else {
                changes.push(Change {
                    index,
                    action: Action::Replace,
                    reason: Reason::Forced,
                    job: Some(job_ref(keeper)),
                    backoff: None,
                    order: Order::DestroyFirst,
                });
            }
        } else if !moved_keys.is_empty() {
            // Like a forced replace: rolling services replace a running replica create-first.
            endpoint_moved.extend(moved_keys);
            if rolling.is_some() && keeper.state == JobState::Running {
                due.push(rolling::Due {
                    index,
                    job: keeper,
                    reason: Reason::EndpointMoved,
                });
            } else {
                changes.push(Change {
                    index,
                    action: Action::Replace,
                    reason: Reason::EndpointMoved,
                    job: Some(job_ref(keeper)),
                    backoff: None,
                    order: Order::DestroyFirst,
                });
            }
        } else if let Some(service) = desired
            && keeper.marker.protect != service.protect
        {
            changes.push(Change {
                index,
                action: Action::Update,
                reason: Reason::ProtectChanged,
                job: Some(job_ref(keeper)),
                backoff: None,
                order: Order::DestroyFirst,
            });
        }
    }
    let mut rolling_batch = None;
    if let Some(service) = desired {
        let ended_jobs: Vec<&LiveJob> = jobs
            .iter()
            .copied()
            .filter(|j| !j.state.is_alive())
            .collect();
        let step = rolling::step(addr, service, &pairs, due, &ended_jobs, ready_now, now);
        if step.changes.iter().any(|c| c.order == Order::CreateFirst) {
            rolling_batch = Some(service.update.max_surge.max(1));
        }
        for change in step.changes {
            if change.action == Action::Destroy {
                destroys.push(change);
            } else {
                changes.push(change);
            }
        }
        changes.sort_by_key(|c| c.index);
        rollouts.extend(step.rollouts);
        stopped.extend(step.stopped);
    }
    let extra_reason = if desired.is_some() {
        Reason::ScaleDown
    } else {
        Reason::ServiceRemoved
    };
    for (&index, candidates) in alive.range(wanted..) {
        for &job in candidates {
            destroys.push(rolling::destroy(index, job, extra_reason));
        }
    }
    if changes.is_empty() && destroys.is_empty() {
        return None;
    }
    destroys.sort_by_key(|c| (std::cmp::Reverse(c.index), c.job.as_ref().map(|j| j.job_id)));
    changes.extend(destroys);
    let (hash_before, spec_before) = changes
        .iter()
        .filter(|c| c.action == Action::Replace)
        .find_map(|c| {
            let hash = &c.job.as_ref()?.spec_hash;
            let spec = match desired {
                // A forced replace: the replica already runs the desired spec.
                Some(service) if *hash == service.hash => Some(&service.spec),
                _ => observed.specs.get(hash),
            }?;
            Some((hash.clone(), spec.clone()))
        })
        .unzip();
    let diff = match (desired, changes.iter().any(|c| c.action == Action::Replace)) {
        (Some(service), true) => spec_before
            .as_ref()
            .map(|old| diff::compute(Some(old), &service.spec)),
        (Some(service), false) if alive.is_empty() => Some(diff::compute(None, &service.spec)),
        _ => Some(Vec::new()),
    };
    Some(ServicePlan {
        endpoint_env: BTreeMap::new(),
        start_after: Vec::new(),
        start_after_jobs: Vec::new(),
        start_estimate: None,
        diff,
        service: addr.clone(),
        replicas_before: alive.len() as u32,
        replicas_after: wanted,
        in_repo: desired.is_some(),
        spec_before,
        hash_before,
        spec_after: desired.map(|s| s.spec.clone()),
        hash_after: wanted_hash.cloned(),
        changes,
        rolling_batch,
        endpoint_moved: endpoint_moved.into_iter().collect(),
    })
}

/// Picks the job that keeps an index when several are alive: the one with the desired spec,
/// then a running one, then the first by job id.
fn keeper<'a>(candidates: &[&'a LiveJob], wanted: Option<&SpecHash>) -> &'a LiveJob {
    candidates
        .iter()
        .copied()
        .min_by_key(|job| {
            (
                Some(&job.marker.spec) != wanted,
                job.state != crate::observed::JobState::Running,
                job.id,
            )
        })
        .expect("an index with alive jobs has at least one")
}

pub(crate) fn job_ref(job: &LiveJob) -> JobRef {
    JobRef {
        job_id: job.id,
        state: job.state.to_string(),
        spec_hash: job.marker.spec.clone(),
        marker: job.marker.clone(),
    }
}

/// Returns, for each spec hash that alive jobs run but no longer match their service's desired
/// spec, one job whose batch script can tell what that spec was.
pub fn specs_to_read(desired: &Desired, observed: &Observed) -> BTreeMap<SpecHash, JobId> {
    let mut wanted = BTreeMap::new();
    for job in observed.alive() {
        let Some(service) = desired.services.get(&job.marker.service) else {
            continue;
        };
        // A job's hash is not its script's spec hash ([`crate::desired::JobSpec::hash`]).
        if service.job.is_some() {
            continue;
        }
        if job.marker.spec != service.hash && !observed.specs.contains_key(&job.marker.spec) {
            wanted.entry(job.marker.spec.clone()).or_insert(job.id);
        }
    }
    wanted
}
