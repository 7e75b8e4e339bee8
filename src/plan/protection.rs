//! The safety belt: the plans a protected service refuses (`protect: true`), and the limits
//! on how much one pass may cancel (`--max-destroy`, `--allow-destroy-all`). Pure: a plan,
//! the desired state and what was observed in, the refusals out ([`Refusal`], each naming the
//! services it concerns and a [`RefusalKind`]). `plan` and `apply` refuse the whole pass on
//! any; `watch` drops only the refused services' changes ([`without_refused`]) and converges
//! the rest.
//!
//! A protected service is never replaced while protected: no plan may reduce it (scale-down,
//! removal, a recreate) nor start a second instance beside a replica (a rolling update, a
//! `--replace`, a spec change). Only a walltime renewal may, when the stack opts in by writing
//! `renew_before:` on the service itself ([`renewal_allowed`]); without it the plan never
//! renews a protected replica (it runs to its time limit and is recreated after it ended).
//!
//! A service is protected when the repo says `protect: true`, or, once it is gone from the
//! repo, when a live job's marker carries `protect=1` (written at submit and rewritten in
//! place when `protect:` changes), so deleting the service's block cannot destroy it. While
//! the service is in the repo, the repo decides: a commit setting `protect: false` lifts the
//! protection (and rewrites the markers), and only then can a later commit remove it.

use super::{Action, Change, Order, Plan, Reason, ServicePlan};
use crate::desired::{Desired, Service, ServiceAddr};
use crate::observed::Observed;
use serde::Serialize;
use std::collections::BTreeSet;

/// Why a pass refuses the changes of some services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// The service is protected (`protect: true`) and the plan would reduce or replace it.
    Protected,
    /// The pass would cancel more jobs without a ready successor than `--max-destroy` allows.
    MaxDestroy,
    /// The pass would cancel every job of the owner and submit none, without
    /// `--allow-destroy-all`.
    DestroyAll,
    /// Slurm rejects the service's new job (`sbatch --test-only`, the pre-check).
    Rejected,
    /// No node of the cluster could ever run the service (checked against its partitions
    /// and nodes before anything is submitted).
    Unschedulable,
    /// A service this one starts after (`depends_on`) was refused or not submitted.
    Dependency,
}

impl RefusalKind {
    /// The word logs, `/status` and the metric's `reason` label use, e.g. `max_destroy`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::Protected => "protected",
            RefusalKind::MaxDestroy => "max_destroy",
            RefusalKind::DestroyAll => "destroy_all",
            RefusalKind::Rejected => "rejected",
            RefusalKind::Unschedulable => "unschedulable",
            RefusalKind::Dependency => "dependency",
        }
    }
}

/// One refusal: the services whose changes it blocks, why, and the message a person reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The services it concerns (one for protection, every cancelling service for a limit).
    pub services: Vec<ServiceAddr>,
    /// Why.
    pub kind: RefusalKind,
    /// One line naming what would have happened and how to allow it.
    pub message: String,
}

/// Returns whether a walltime renewal of the protected `service` may start its successor
/// beside it: only when the stack writes `renew_before:` on the service itself (a recipe's
/// default or the implicit 10% of `time_limit` is not an opt-in).
pub fn renewal_allowed(service: &Service) -> bool {
    !service.protect
        || service.update.renew_before.is_some() && service.origins.contains_key("renew_before")
}

/// Returns whether `change` reduces its service: a destroy of a replica the service still
/// counts (scale-down, service removed; a duplicate's, a rolled-over predecessor's or a
/// stopped successor's does not), or a recreate-style replace, which cancels the replica
/// before its successor is submitted. A create-before-destroy replace (a rolling update or a
/// walltime renewal, [`Order::CreateFirst`]) keeps the replica running until its successor is
/// ready, so it does not.
pub fn reduces(change: &Change) -> bool {
    match change.action {
        Action::Destroy => matches!(change.reason, Reason::ScaleDown | Reason::ServiceRemoved),
        Action::Replace => change.order == Order::DestroyFirst,
        Action::Create | Action::Update => false,
    }
}

/// Returns whether the service of `service_plan` is protected (see the module docs).
pub fn is_protected(service_plan: &ServicePlan, desired: &Desired, observed: &Observed) -> bool {
    match desired.services.get(&service_plan.service) {
        Some(service) => service.protect,
        None => observed
            .alive()
            .any(|job| job.marker.service == service_plan.service && job.marker.protect),
    }
}

/// Returns whether `change` would start a second instance beside a replica of the service:
/// a create-first replace (rolling update, `--replace`, renewal).
fn doubles(change: &Change) -> bool {
    change.action == Action::Replace && change.order == Order::CreateFirst
}

/// Returns whether a protected service refuses `change`: it reduces the service, or it starts
/// a second instance beside a replica (any but a renewal the stack opted into).
fn refused_when_protected(change: &Change, service: Option<&Service>) -> bool {
    reduces(change)
        || doubles(change)
            && !(change.reason == Reason::Renewal && service.is_some_and(renewal_allowed))
}

/// Returns one message per protected service the plan would reduce or replace, naming the
/// service and what would have happened; empty when the plan may go ahead.
pub fn violations(plan: &Plan, desired: &Desired, observed: &Observed) -> Vec<String> {
    refusals(plan, desired, observed)
        .into_iter()
        .map(|r| r.message)
        .collect()
}

/// [`violations`] as data: one [`RefusalKind::Protected`] refusal per protected service the
/// plan would reduce or replace.
pub fn refusals(plan: &Plan, desired: &Desired, observed: &Observed) -> Vec<Refusal> {
    plan.services
        .iter()
        .filter(|s| {
            let service = desired.services.get(&s.service);
            s.changes.iter().any(|c| refused_when_protected(c, service))
        })
        .filter(|s| is_protected(s, desired, observed))
        .map(|s| {
            let service = desired.services.get(&s.service);
            let destroyed = s
                .changes
                .iter()
                .filter(|c| c.action == Action::Destroy && reduces(c))
                .count();
            let replaced = s
                .changes
                .iter()
                .filter(|c| c.action == Action::Replace && reduces(c))
                .count();
            let doubled = s
                .changes
                .iter()
                .filter(|c| doubles(c) && refused_when_protected(c, service))
                .count();
            let mut what = Vec::new();
            if !s.in_repo {
                what.push(format!(
                    "destroy it (gone from the repo; {destroyed} running {})",
                    replicas(destroyed)
                ));
            } else if destroyed > 0 {
                what.push(format!(
                    "scale it down from {} to {} {}",
                    s.replicas_before,
                    s.replicas_after,
                    replicas(s.replicas_after as usize)
                ));
            }
            if replaced > 0 {
                what.push(format!(
                    "replace {replaced} {} (cancel, then submit anew)",
                    replicas(replaced)
                ));
            }
            if doubled > 0 {
                what.push(format!(
                    "replace {doubled} {} create-first (a second instance beside each)",
                    replicas(doubled)
                ));
            }
            let how = if s.in_repo {
                "set `protect: false` on it, apply, then make the change"
            } else {
                "restore its block with `protect: false`, apply, then remove it"
            };
            Refusal {
                services: vec![s.service.clone()],
                kind: RefusalKind::Protected,
                message: format!(
                    "{} is protected (protect: true), and this plan would {}; nothing was \
                     submitted or cancelled for it; to allow it, {how}",
                    s.service,
                    what.join(" and ")
                ),
            }
        })
        .collect()
}

/// Removes from `plan` the services any of `refused` names: their changes (nothing is
/// submitted or cancelled for them) and the rollouts they would start; every other service's
/// stay.
pub fn without_refused(plan: &mut Plan, refused: &[Refusal]) {
    let names: BTreeSet<&ServiceAddr> = refused.iter().flat_map(|r| &r.services).collect();
    plan.services.retain(|s| !names.contains(&s.service));
    plan.rollouts.retain(|r| !names.contains(&r.service));
}

/// How much one pass may cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestroyLimits {
    /// The most jobs a plan may cancel without a ready successor (`--max-destroy N`).
    pub max_destroy: Option<usize>,
    /// Whether a plan may cancel every job the owner runs and submit none
    /// (`--allow-destroy-all`), e.g. after `stacks/` was emptied by mistake.
    pub allow_destroy_all: bool,
}

impl Default for DestroyLimits {
    /// No limit: what the library uses unless told otherwise (the commands pass their flags).
    fn default() -> DestroyLimits {
        DestroyLimits {
            max_destroy: None,
            allow_destroy_all: true,
        }
    }
}

/// Returns how many jobs the plan cancels without a ready successor: every destroy but a
/// duplicate's (its index keeps another job), a rolled-over predecessor's (its successor is
/// ready) and a stopped successor's (its predecessor keeps running), and every recreate-style
/// replace (it cancels before it submits). Rolling replacements and renewals cancel nothing
/// in the pass that submits their successor.
pub fn unreplaced_cancels(plan: &Plan) -> usize {
    plan.services
        .iter()
        .flat_map(|s| &s.changes)
        .filter(|c| cancels_unreplaced(c))
        .count()
}

/// Whether `change` cancels a job without a ready successor (see [`unreplaced_cancels`]).
fn cancels_unreplaced(change: &Change) -> bool {
    match change.action {
        Action::Destroy => !matches!(
            change.reason,
            Reason::Duplicate | Reason::Superseded | Reason::RolloutStopped
        ),
        Action::Replace => change.order == Order::DestroyFirst,
        Action::Create | Action::Update => false,
    }
}

/// Returns one message per limit the plan exceeds; empty when it may go ahead.
pub fn limit_violations(plan: &Plan, observed: &Observed, limits: &DestroyLimits) -> Vec<String> {
    limit_refusals(plan, observed, limits)
        .into_iter()
        .map(|r| r.message)
        .collect()
}

/// The services of `plan` that cancel a job without a ready successor.
fn cancelling(plan: &Plan) -> Vec<ServiceAddr> {
    plan.services
        .iter()
        .filter(|s| s.changes.iter().any(cancels_unreplaced))
        .map(|s| s.service.clone())
        .collect()
}

/// [`limit_violations`] as data: each refusal names every service that cancels a job without
/// a ready successor (a limit is about the pass, so all of them are held back).
pub fn limit_refusals(plan: &Plan, observed: &Observed, limits: &DestroyLimits) -> Vec<Refusal> {
    let mut refused = Vec::new();
    let cancels = unreplaced_cancels(plan);
    if let Some(max) = limits.max_destroy
        && cancels > max
    {
        refused.push(Refusal {
            services: cancelling(plan),
            kind: RefusalKind::MaxDestroy,
            message: format!(
                "this plan would cancel {cancels} {} without a ready successor, more than \
                 --max-destroy {max} allows",
                jobs(cancels)
            ),
        });
    }
    let alive = observed.alive().count();
    let submits = plan
        .services
        .iter()
        .flat_map(|s| &s.changes)
        .any(Change::submits);
    if !limits.allow_destroy_all && alive > 0 && cancels >= alive && !submits {
        refused.push(Refusal {
            services: cancelling(plan),
            kind: RefusalKind::DestroyAll,
            message: format!(
                "this plan would cancel every job owner {} runs ({alive} {}) and submit none \
                 (is stacks/ empty?); pass --allow-destroy-all if that is intended",
                plan.owner,
                jobs(alive)
            ),
        });
    }
    refused
}

fn jobs(n: usize) -> &'static str {
    if n == 1 { "job" } else { "jobs" }
}

fn replicas(n: usize) -> &'static str {
    if n == 1 { "replica" } else { "replicas" }
}
