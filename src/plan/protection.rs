//! The safety belt: the plans a protected service refuses (`protect: true`), and the limits
//! on how much one apply may cancel (`--max-destroy`, `--allow-destroy-all`). Pure: a plan,
//! the desired state and what was observed in, the refusals out; reconcile refuses the whole
//! pass on any.
//!
//! A service is protected when the repo says `protect: true`, or, once it is gone from the
//! repo, when a live job's marker carries `protect=1` (written at submit and rewritten in
//! place when `protect:` changes), so deleting the service's block cannot destroy it. While
//! the service is in the repo, the repo decides: a commit setting `protect: false` lifts the
//! protection (and rewrites the markers), and only then can a later commit remove it.

use super::{Action, Change, Order, Plan, Reason, ServicePlan};
use crate::desired::Desired;
use crate::observed::Observed;

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

/// Returns one message per protected service the plan would reduce, naming the service and
/// what would have happened; empty when the plan may go ahead.
pub fn violations(plan: &Plan, desired: &Desired, observed: &Observed) -> Vec<String> {
    plan.services
        .iter()
        .filter(|s| s.changes.iter().any(reduces))
        .filter(|s| is_protected(s, desired, observed))
        .map(|s| {
            let destroyed = s
                .changes
                .iter()
                .filter(|c| c.action == Action::Destroy && reduces(c))
                .count();
            let replaced = s
                .changes
                .iter()
                .filter(|c| c.action == Action::Replace)
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
            let how = if s.in_repo {
                "set `protect: false` on it, apply, then make the change"
            } else {
                "restore its block with `protect: false`, apply, then remove it"
            };
            format!(
                "{} is protected (protect: true), and this plan would {}; to allow it, {how}",
                s.service,
                what.join(" and ")
            )
        })
        .collect()
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
    /// No limit: what `watch` and the library use unless told otherwise.
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
        .filter(|c| match c.action {
            Action::Destroy => !matches!(
                c.reason,
                Reason::Duplicate | Reason::Superseded | Reason::RolloutStopped
            ),
            Action::Replace => c.order == Order::DestroyFirst,
            Action::Create | Action::Update => false,
        })
        .count()
}

/// Returns one message per limit the plan exceeds; empty when it may go ahead.
pub fn limit_violations(plan: &Plan, observed: &Observed, limits: &DestroyLimits) -> Vec<String> {
    let mut refused = Vec::new();
    let cancels = unreplaced_cancels(plan);
    if let Some(max) = limits.max_destroy
        && cancels > max
    {
        refused.push(format!(
            "this plan would cancel {cancels} {} without a ready successor, more than \
             --max-destroy {max} allows",
            jobs(cancels)
        ));
    }
    let alive = observed.alive().count();
    let submits = plan
        .services
        .iter()
        .flat_map(|s| &s.changes)
        .any(Change::submits);
    if !limits.allow_destroy_all && alive > 0 && cancels >= alive && !submits {
        refused.push(format!(
            "this plan would cancel every job owner {} runs ({alive} {}) and submit none \
             (is stacks/ empty?); pass --allow-destroy-all if that is intended",
            plan.owner,
            jobs(alive)
        ));
    }
    refused
}

fn jobs(n: usize) -> &'static str {
    if n == 1 { "job" } else { "jobs" }
}

fn replicas(n: usize) -> &'static str {
    if n == 1 { "replica" } else { "replicas" }
}
