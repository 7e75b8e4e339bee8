//! The plan for machines: a versioned JSON document, [`Document`], made from the [`Plan`]
//! type and described field by field, with its version history, in `docs/plan-json.md`.
//! Minor versions only add fields and values; readers ignore what they do not know.

use crate::desired::{ReplicaSpec, SpecHash};
use crate::observed::{FailRecord, JobId, Nearness};
use crate::plan::images::ImageStep;
use crate::plan::jobs::JobLine;
use crate::plan::{Action, Held, Order, Plan, Reason, Rollout, Source, Stopped, Summary, Waiting};
use serde::{Deserialize, Serialize};

/// The version of the JSON plan format.
pub const FORMAT_VERSION: &str = "1.7";

/// The JSON plan document: a view of a [`Plan`] with one entry per replica change. Every
/// field is described in `docs/plan-json.md`. Written with its keys in alphabetical order
/// at every level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: String,
    /// The owner whose jobs were compared.
    pub owner: String,
    /// The commit the repo was read from; `null` outside git.
    pub source: Option<Source>,
    /// Services destroyed because the repo no longer declares them (`stack.service`).
    pub removed_services: Vec<String>,
    /// What the reader should know that is no change.
    pub warnings: Vec<String>,
    /// Services gone from the repo that keep running because pruning is off.
    pub not_pruned: Vec<NotPruned>,
    /// One entry per replica change, services in the plan's order.
    pub changes: Vec<ChangeEntry>,
    /// Replicas the plan leaves alone for now.
    pub waiting: Vec<Waiting>,
    /// Services whose new replicas wait for an endpoint, a dependency or an image.
    pub held: Vec<Held>,
    /// Rolling replaces and renewals in progress.
    pub rollouts: Vec<Rollout>,
    /// Successors that stopped a rollout.
    pub stopped: Vec<Stopped>,
    /// Job counts.
    pub summary: Summary,
    /// One-shot jobs (`kind: job`) and where each stands; left out when the repo has none.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub jobs: Vec<JobLine>,
    /// Image steps (builds to submit, running, failed); left out when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub images: Vec<ImageEntry>,
}

/// A service gone from the repo, kept running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotPruned {
    /// The service, `stack.service`.
    pub service: String,
    /// Its alive replicas.
    pub replicas: u32,
}

/// One verb of a change's `actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    /// A job is submitted.
    Create,
    /// A job is cancelled.
    Delete,
    /// A job's marker is rewritten in place.
    Update,
}

/// One replica change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEntry {
    /// `stack.service[index]`.
    pub address: String,
    /// `stack.service`.
    pub service: String,
    /// Replica index.
    pub index: u32,
    /// In order: `[create]`, `[delete]`, `[delete, create]` (replace), `[create, delete]`
    /// (rolling replace), `[update]`.
    pub actions: Vec<Verb>,
    /// Why.
    pub reason: Reason,
    /// The job affected; `null` for a create with no ended job before it.
    pub before: Option<Before>,
    /// What is submitted (create, replace) or written (update); `null` for a delete.
    pub after: Option<After>,
    /// The successor of a failed replica: which restart in a row.
    pub restart: Option<u32>,
    /// Its earliest start, unix seconds.
    pub not_before: Option<i64>,
    /// Nodes (hostlist) it avoids.
    pub exclude: Option<String>,
    /// The failure it recovers from.
    pub last_failure: Option<FailRecord>,
    /// Services submitted first and queued jobs this one starts after; only on a create or
    /// replace with `condition: started` dependencies.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub start_after: Option<StartAfter>,
    /// When Slurm expects the new job to start; only when `plan` asked.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub start_estimate: Option<Estimate>,
    /// The `endpoint_env` variables whose address moved; only for reason `endpoint_moved`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub endpoint_moved: Option<Vec<String>>,
}

/// The job a change affects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Before {
    /// Slurm job id.
    pub job_id: JobId,
    /// Slurm state when observed.
    pub state: String,
    /// The spec hash in its marker.
    pub spec_hash: SpecHash,
    /// Its spec, for a replace whose previous spec was read back; else `null`.
    pub spec: Option<ReplicaSpec>,
}

/// What a change submits or writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct After {
    /// The desired spec's hash.
    pub spec_hash: SpecHash,
    /// The desired spec (create, replace).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub spec: Option<ReplicaSpec>,
    /// The `protect` value written into the marker (update).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub protect: Option<bool>,
}

/// What a submitted job starts after (`--dependency=after:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartAfter {
    /// Services this plan submits first, `stack/service`.
    pub services: Vec<String>,
    /// Queued jobs.
    pub jobs: Vec<JobId>,
}

/// Slurm's start estimate (`sbatch --test-only`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Estimate {
    /// Expected start, unix seconds; `null` when Slurm's answer is more than a year away.
    pub at: Option<i64>,
    /// When Slurm was asked, unix seconds.
    pub asked_at: i64,
    /// The nodes it would start on.
    pub nodes: String,
    /// The partition it would start in.
    pub partition: String,
    /// Slurm's answer when it is more than a year away (`at` is then `null`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub implausible_at: Option<i64>,
}

/// One image step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageEntry {
    /// `image:` as the recipe names it.
    pub image: String,
    /// The runtime that builds and runs it.
    pub runtime: crate::container::Runtime,
    /// The definition file, relative to the repo.
    pub definition: String,
    /// The first 16 hex digits of the definition's SHA-256.
    pub definition_sha256: String,
    /// The services that run it, `stack.service`.
    pub services: Vec<String>,
    /// `build` (submitted by this plan), `building` (a build job runs) or `failed` (its
    /// services are held).
    pub action: String,
    /// Why a build: `not built yet`, `definition changed`; the build job for `building`;
    /// the recorded failure and log tail for `failed`.
    pub detail: String,
    /// The line `plan` prints, e.g. `build image web (definition changed) with charliecloud
    /// for s.web`.
    pub line: String,
}

impl Document {
    /// The document for `plan`.
    pub fn of(plan: &Plan) -> Document {
        let mut changes = Vec::new();
        for service in &plan.services {
            for change in &service.changes {
                let actions = match change.action {
                    Action::Create => vec![Verb::Create],
                    Action::Destroy => vec![Verb::Delete],
                    // Terraform's order for create_before_destroy: a rolling replace.
                    Action::Replace if change.order == Order::CreateFirst => {
                        vec![Verb::Create, Verb::Delete]
                    }
                    Action::Replace => vec![Verb::Delete, Verb::Create],
                    Action::Update => vec![Verb::Update],
                };
                let before = change.job.as_ref().map(|job| Before {
                    job_id: job.job_id,
                    state: job.state.clone(),
                    spec_hash: job.spec_hash.clone(),
                    spec: service.spec_before_of(change).cloned(),
                });
                let after = match (change.action, &service.spec_after, &service.hash_after) {
                    (Action::Create | Action::Replace, Some(spec), Some(hash)) => Some(After {
                        spec_hash: hash.clone(),
                        spec: Some(spec.clone()),
                        protect: None,
                    }),
                    (Action::Update, _, Some(hash)) => Some(After {
                        spec_hash: hash.clone(),
                        spec: None,
                        protect: Some(change.protect_after().unwrap_or(false)),
                    }),
                    _ => None,
                };
                let submits = change.action != Action::Destroy;
                let start_after = (submits
                    && !(service.start_after.is_empty() && service.start_after_jobs.is_empty()))
                .then(|| StartAfter {
                    services: service.start_after.iter().map(|s| s.reference()).collect(),
                    jobs: service.start_after_jobs.clone(),
                });
                let start_estimate =
                    service
                        .start_estimate
                        .as_ref()
                        .filter(|_| submits)
                        .map(|estimate| {
                            // No real plan: the start is unknown; what Slurm said is kept aside.
                            let implausible = estimate.nearness() == Nearness::Implausible;
                            Estimate {
                                at: (!implausible).then_some(estimate.at),
                                asked_at: estimate.asked_at,
                                nodes: estimate.nodes.clone(),
                                partition: estimate.partition.clone(),
                                implausible_at: implausible.then_some(estimate.at),
                            }
                        });
                let backoff = change.backoff.as_ref();
                changes.push(ChangeEntry {
                    address: format!("{}[{}]", service.service, change.index),
                    service: service.service.to_string(),
                    index: change.index,
                    actions,
                    reason: change.reason,
                    before,
                    after,
                    restart: backoff.map(|b| b.restart),
                    not_before: backoff.map(|b| b.not_before),
                    exclude: backoff.and_then(|b| b.exclude.clone()),
                    last_failure: backoff.map(|b| b.last_failure.clone()),
                    start_after,
                    start_estimate,
                    endpoint_moved: (change.reason == Reason::EndpointMoved)
                        .then(|| service.endpoint_moved.clone()),
                });
            }
        }
        Document {
            format_version: FORMAT_VERSION.to_owned(),
            owner: plan.owner.to_string(),
            source: plan.source.clone(),
            removed_services: plan
                .removed_services()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            warnings: plan.warnings.clone(),
            not_pruned: plan
                .not_pruned
                .iter()
                .map(|(service, replicas)| NotPruned {
                    service: service.to_string(),
                    replicas: *replicas,
                })
                .collect(),
            changes,
            waiting: plan.waiting.clone(),
            held: plan.held.clone(),
            rollouts: plan.rollouts.clone(),
            stopped: plan.stopped.clone(),
            summary: plan.summary(),
            jobs: plan.jobs.clone(),
            images: plan.images.iter().map(ImageEntry::of).collect(),
        }
    }

    /// The document as pretty-printed JSON, keys in alphabetical order, ending in a newline.
    pub fn to_json(&self) -> String {
        // Through a `Value`, whose maps are sorted: the order the format has always had.
        let value = serde_json::to_value(self).expect("a plan document serializes");
        let mut text = serde_json::to_string_pretty(&value).expect("JSON values serialize");
        text.push('\n');
        text
    }
}

impl ImageEntry {
    /// The entry for one image step.
    pub fn of(step: &ImageStep) -> ImageEntry {
        use crate::plan::images::ImageAction;
        let (action, detail) = match &step.action {
            ImageAction::Build(why) => ("build", why.clone()),
            ImageAction::Building(job) => ("building", format!("job {job}")),
            ImageAction::Failed { record, tail } => {
                ("failed", format!("job {record}: {}", tail.trim_end()))
            }
        };
        ImageEntry {
            image: step.key.image.clone(),
            runtime: step.key.runtime,
            definition: step.key.definition.file.clone(),
            definition_sha256: step.key.definition.sha256.clone(),
            services: step.services.iter().map(|s| s.to_string()).collect(),
            action: action.to_owned(),
            detail,
            line: crate::render::plan_text::image_step_text(step),
        }
    }
}

/// Renders the plan as pretty-printed JSON ([`Document`]).
pub fn render(plan: &Plan) -> String {
    Document::of(plan).to_json()
}
