//! The plan for machines: a versioned JSON document.
//!
//! Format `1.6` (minor versions only add fields and values; readers ignore what they do not
//! know; 1.1 added `source` and `removed_services`, 1.2 `not_pruned` and `warnings`, 1.3
//! `waiting`, `held` and a change's `restart`, `not_before` and `last_failure`; 1.4
//! `rollouts`, `stopped`, the `update` action (a marker rewritten in place), the reasons
//! `forced`, `protect_changed`, `renewal`, `superseded` and `rollout_stopped`, the
//! `["create","delete"]` order of a rolling replace, and a change's `start_after` and
//! `start_estimate`; 1.5 the waiting kind `completing`; 1.6 the reason `endpoint_moved` with
//! `endpoint_moved`, and `start_estimate.implausible_at`):
//! ```json
//! {
//!   "format_version": "1.6",
//!   "owner": "team-llm",
//!   "source": {"commit": "0123abcd4567", "dirty": false} | null,
//!   "removed_services": ["old.web"],    // destroyed because the repo no longer declares them
//!   "warnings": ["demo.web runs 2 replicas on fixed port 8000: …"],  // no change, but read them
//!   "not_pruned": [{"service": "old.db", "replicas": 1}],  // gone from the repo, kept running
//!                                       // because pruning is off (`watch --no-prune`)
//!   "changes": [{
//!     "address": "inference.llm[2]", "service": "inference.llm", "index": 2,
//!     "actions": ["create"],            // or ["delete"], or ["delete", "create"] for a replace,
//!                                       // ["create", "delete"] for a rolling one (the old job
//!                                       // is deleted by a later pass, see `rollouts`)
//!     "reason": "missing",              // missing | ended | scale_down | service_removed
//!                                       // | duplicate | spec_changed | renewal | superseded
//!                                       // | rollout_stopped (added without a format bump:
//!                                       // the coordinator bumps)
//!     "before": {"job_id": "41_2", "state": "FAILED", "spec_hash": "…", "spec": {…} | null} | null,
//!     "after": {"spec_hash": "…", "spec": {…}} | null,
//!     // the successor of a failed replica (else null): which restart in a row, its earliest
//!     // start (unix seconds), and the failure (`exit` null when killed by a signal)
//!     "restart": 4 | null, "not_before": 1700000160 | null, "exclude": "node1" | null,
//!     "last_failure": {"state": "FAILED", "exit": 1, "at": 1700000000} | null,
//!     // only on a create or replace with `condition: started` dependencies: the services
//!     // submitted first and the queued jobs it starts after (`--dependency=after:`)
//!     "start_after": {"services": ["a/db"], "jobs": ["45_0"]},
//!     // only on a create or replace when `stackctl plan` asked Slurm (`sbatch --test-only`):
//!     // expected start and when it was asked (unix seconds), where
//!     "start_estimate": {"at": 1700000300, "asked_at": 1700000000, "nodes": "node2",
//!                        "partition": "debug"},
//!     // `at` is null, and Slurm's answer in `implausible_at`, when Slurm's estimate is more
//!     // than a year away (no real plan: the start is unknown)
//!     // only on a replace for reason `endpoint_moved`: the `endpoint_env` variables whose
//!     // address no ready replica serves any more
//!     "endpoint_moved": ["REDIS_URL"]
//!   }],
//!   "held": [{"service": "web.api", "reason": "REDIS_URL needs a ready replica of cache/redis, …"}],
//!                                       // services whose new replicas wait for an endpoint
//!                                       // or a dependency (`depends_on`)
//!   "waiting": [{                       // replicas this plan leaves alone for now
//!     "service": "inference.llm", "index": 2, "job_id": "43_2", "restarts": 4,
//!     "kind": {"state": "backing_off", "not_before": 1700000160} | {"state": "gave_up"}
//!           | {"state": "completing"},    // the job is still COMPLETING (maybe requeued)
//!     "last_failure": {…} | null
//!   }],
//!   "rollouts": [{                      // rolling replaces and renewals in progress
//!     "service": "inference.llm", "index": 0, "predecessor": "41_0",
//!     "successor": "57" | null,         // null: waiting for a slot (max_surge)
//!     "reason": "spec_changed" | "renewal", "progress": "ready 4s of 10s"
//!   }],
//!   "stopped": [{                       // successors that stopped a rollout (apply fails)
//!     "service": "inference.llm", "index": 0, "successor": "57", "predecessor": "41_0",
//!     "why": "successor 57 still PENDING after 901s (queue_timeout 900s), Slurm's reason: Resources"
//!   }],
//!   "summary": {"add": 1, "change": 0, "destroy": 0}
//! }
//! ```

use crate::plan::{Action, Order, Plan};
use serde_json::{Value, json};

/// The version of the JSON plan format.
pub const FORMAT_VERSION: &str = "1.6";

/// Renders the plan as pretty-printed JSON.
pub fn render(plan: &Plan) -> String {
    let mut changes = Vec::new();
    for service in &plan.services {
        for change in &service.changes {
            let actions: &[&str] = match change.action {
                Action::Create => &["create"],
                Action::Destroy => &["delete"],
                // Terraform's order for create_before_destroy: a rolling replace.
                Action::Replace if change.order == Order::CreateFirst => &["create", "delete"],
                Action::Replace => &["delete", "create"],
                Action::Update => &["update"],
            };
            let before = match (&change.job, change.action) {
                (Some(job), _) => {
                    let spec = if change.action == Action::Replace {
                        service.spec_before.as_ref().filter(|_| {
                            service.spec_before.as_ref().map(|s| s.hash())
                                == Some(job.spec_hash.clone())
                        })
                    } else {
                        None
                    };
                    json!({"job_id": job.job_id, "state": job.state, "spec_hash": job.spec_hash, "spec": spec})
                }
                (None, _) => Value::Null,
            };
            let after = match (change.action, &service.spec_after, &service.hash_after) {
                (Action::Create | Action::Replace, Some(spec), Some(hash)) => {
                    json!({"spec_hash": hash, "spec": spec})
                }
                (Action::Update, _, Some(hash)) => {
                    json!({"spec_hash": hash, "protect": change.job.as_ref().is_some_and(|j| !j.marker.protect)})
                }
                _ => Value::Null,
            };
            let mut entry = json!({
                "address": format!("{}[{}]", service.service, change.index),
                "service": service.service.to_string(),
                "index": change.index,
                "actions": actions,
                "reason": change.reason,
                "before": before,
                "after": after,
                "restart": change.backoff.as_ref().map(|b| b.restart),
                "not_before": change.backoff.as_ref().map(|b| b.not_before),
                "exclude": change.backoff.as_ref().and_then(|b| b.exclude.as_ref()),
                "last_failure": change.backoff.as_ref().map(|b| &b.last_failure),
            });
            let submits = change.action != Action::Destroy;
            if submits && !(service.start_after.is_empty() && service.start_after_jobs.is_empty()) {
                entry["start_after"] = json!({
                    "services": service.start_after.iter().map(|s| s.reference()).collect::<Vec<_>>(),
                    "jobs": service.start_after_jobs,
                });
            }
            if let Some(estimate) = service.start_estimate.as_ref().filter(|_| submits) {
                entry["start_estimate"] = json!(estimate);
                // No real plan: the start is unknown; what Slurm said is kept aside.
                if estimate.nearness() == crate::observed::Nearness::Implausible {
                    entry["start_estimate"]["at"] = serde_json::Value::Null;
                    entry["start_estimate"]["implausible_at"] = json!(estimate.at);
                }
            }
            if change.reason == crate::plan::Reason::EndpointMoved {
                entry["endpoint_moved"] = json!(service.endpoint_moved);
            }
            changes.push(entry);
        }
    }
    let mut document = json!({
        "format_version": FORMAT_VERSION,
        "owner": plan.owner,
        "source": plan.source,
        "removed_services": plan.removed_services().iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "warnings": plan.warnings,
        "not_pruned": plan.not_pruned.iter()
            .map(|(service, replicas)| json!({"service": service.to_string(), "replicas": replicas}))
            .collect::<Vec<_>>(),
        "changes": changes,
        "waiting": plan.waiting,
        "held": plan.held,
        "rollouts": plan.rollouts,
        "stopped": plan.stopped,
        "summary": plan.summary(),
    });
    // One-shot jobs, only when the repo has some (added without a format bump: the
    // coordinator bumps): `[{"service": "s.load", "status": {"state": "run" | "rerun_spec_changed"
    // | "rerun_requested" | "held" (+ "reason") | "running" (+ "job_id") | "done" (+ "at") |
    // "retry" (+ "retry", "of", "at") | "failed" (+ "runs") | "off"}, "last_run": {"job_id",
    // "succeeded", "state", "exit", "start", "end"} | null}]`.
    if !plan.jobs.is_empty() {
        document["jobs"] = json!(plan.jobs);
    }
    let mut text = serde_json::to_string_pretty(&document).expect("JSON values serialize");
    text.push('\n');
    text
}
