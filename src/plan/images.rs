//! Container images in a plan: which images the desired services need, which to build, and
//! the build jobs (pure; [`crate::image`] reads the image directory). The build script itself
//! is [`crate::container::build_script`].

use crate::container::{BuildRequest, ImageDefinition, Runtime, build_script, built_image_name};
use serde::{Deserialize, Serialize};

/// The prefix of a build job's comment: `stackctl-image/v1;owner=…;image=…;def=…;nonce=…`.
/// Listings keep it (it holds `stackctl`); service markers and locks never parse as it.
pub const BUILD_PREFIX: &str = "stackctl-image/v1";

/// One image the desired services need, by runtime, name and definition hash.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ImageKey {
    /// The runtime that builds and runs it.
    pub runtime: Runtime,
    /// `image:`.
    pub image: String,
    /// The definition it is built from.
    pub definition: ImageDefinition,
}

impl ImageKey {
    /// The built image's name under `image_dir` ([`built_image_name`]).
    pub fn built(&self) -> String {
        built_image_name(&self.image, &self.definition, self.runtime)
    }

    /// The build job's comment.
    pub fn comment(&self, owner: &crate::desired::Owner, nonce: &str) -> String {
        format!(
            "{BUILD_PREFIX};owner={owner};image={};def={};nonce={nonce}",
            self.image, self.definition.sha256
        )
    }

    /// The build log's file name under `log_dir`: `image.<built name>.log`.
    pub fn log_name(&self) -> String {
        format!("image.{}.log", self.built())
    }
}

/// What the image directory and the logs say about built images ([`crate::image::observe`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFiles {
    /// Built images (`<name>.built` exists), by built name.
    pub built: std::collections::BTreeSet<String>,
    /// Failed builds (`<name>.failed`), by built name: its content (`<job id> <step>`) and the
    /// last lines of its log.
    pub failed: std::collections::BTreeMap<String, (String, String)>,
}

/// What a plan does about one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageAction {
    /// Submit a build job; why (`not built yet`, `definition changed`).
    Build(String),
    /// A build job of this definition is queued or running: new replicas start after it.
    Building(u64),
    /// The last build of this definition failed; its services are held.
    Failed {
        /// What the build recorded (`<job id> <step>`).
        record: String,
        /// The last lines of its log.
        tail: String,
    },
}

impl ImageAction {
    /// Whether the step submits a build.
    pub fn builds(&self) -> bool {
        matches!(self, ImageAction::Build(_))
    }
}

/// One image step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageStep {
    /// The image.
    pub key: ImageKey,
    /// The services that run it (replicas above 0), in address order.
    pub services: Vec<crate::desired::ServiceAddr>,
    /// The partition the build runs in: the first service's.
    pub partition: Option<String>,
    /// What the plan does.
    pub action: ImageAction,
}

/// The image steps for `desired`: one per image (runtime, name, definition hash) some
/// service with replicas runs, unless it is built. `records` is the job listing (build jobs
/// alive are found by their comment), `files` what the image directory holds.
pub fn image_steps(
    owner: &crate::desired::Owner,
    desired: &crate::desired::Desired,
    records: &[crate::observed::JobRecord],
    files: &ImageFiles,
) -> Vec<ImageStep> {
    use std::collections::BTreeMap;
    let mut needed: BTreeMap<ImageKey, (Vec<crate::desired::ServiceAddr>, Option<String>)> =
        BTreeMap::new();
    for (addr, service) in &desired.services {
        let (Some(container), Some(image)) = (&service.spec.container, &service.spec.image) else {
            continue;
        };
        let Some(definition) = &container.build else {
            continue;
        };
        if service.replicas == 0 {
            continue;
        }
        let key = ImageKey {
            runtime: container.runtime,
            image: image.clone(),
            definition: definition.clone(),
        };
        let entry = needed
            .entry(key)
            .or_insert_with(|| (Vec::new(), service.spec.slurm.partition.clone()));
        entry.0.push(addr.clone());
    }
    let alive_build = |key: &ImageKey| {
        let prefix = format!(
            "{BUILD_PREFIX};owner={owner};image={};def={};",
            key.image, key.definition.sha256
        );
        records
            .iter()
            .filter(|r| r.comment.starts_with(&prefix))
            .filter(|r| crate::observed::JobState::from_slurm(&r.state, &r.reason).is_alive())
            .map(|r| r.id.array)
            .min()
    };
    let mut steps = Vec::new();
    for (key, (services, partition)) in needed {
        let built = key.built();
        if files.built.contains(&built) {
            continue;
        }
        let action = if let Some(job) = alive_build(&key) {
            ImageAction::Building(job)
        } else if let Some((record, tail)) = files.failed.get(&built) {
            ImageAction::Failed {
                record: record.clone(),
                tail: tail.clone(),
            }
        } else {
            let other = format!("{}-", key.image);
            let changed = files.built.iter().any(|b| {
                b.strip_prefix(&other)
                    .is_some_and(|rest| rest.trim_end_matches(".sif").len() == 16)
            });
            ImageAction::Build(
                if changed {
                    "definition changed"
                } else {
                    "not built yet"
                }
                .into(),
            )
        };
        steps.push(ImageStep {
            key,
            services,
            partition,
            action,
        });
    }
    steps
}

/// The plan line of an image step, e.g. `build image web (definition changed) for s.a, s.b;
/// log: /logs/image.web-….log`.
pub fn step_line(step: &ImageStep, log_dir: &std::path::Path) -> String {
    let services: Vec<String> = step.services.iter().map(|s| s.to_string()).collect();
    let log = log_dir.join(step.key.log_name());
    match &step.action {
        ImageAction::Build(why) => format!(
            "build image {} ({why}) with {} for {}; log: {}",
            step.key.image,
            step.key.runtime,
            services.join(", "),
            log.display()
        ),
        ImageAction::Building(job) => format!(
            "image {} is being built (job {job}); {} start after it; log: {}",
            step.key.image,
            services.join(", "),
            log.display()
        ),
        ImageAction::Failed { record, tail } => format!(
            "image {} failed to build (job {record}): {}; log: {}; fix {} (or delete {}.failed \
             in image_dir to retry)",
            step.key.image,
            tail.trim_end().replace('\n', " | "),
            log.display(),
            step.key.definition.file,
            step.key.built()
        ),
    }
}

/// The build job of an image step: one task, on the first service's partition, its log at
/// [`ImageKey::log_name`] under `log_dir`, its comment naming the owner, image and definition
/// (so a later plan finds it while it runs, and `stackctl logs` finds its log).
pub fn build_job(
    step: &ImageStep,
    owner: &crate::desired::Owner,
    nonce: &str,
    image_dir: &std::path::Path,
    log_dir: &std::path::Path,
    setup: &[String],
) -> crate::job::JobRequest {
    let log = log_dir.join(step.key.log_name()).display().to_string();
    let body = build_script(&BuildRequest {
        runtime: step.key.runtime,
        image: &step.key.image,
        definition: &step.key.definition,
        text: &step.key.definition.text,
        image_dir: image_dir.display().to_string(),
        context: None,
        setup,
    });
    crate::job::JobRequest {
        options: crate::job::JobOptions {
            name: format!("image.{}", step.key.image),
            comment: step.key.comment(owner, nonce),
            nodes: Some(1),
            ntasks_per_node: Some(1),
            cpus_per_task: Some(1),
            memory: Some(BUILD_MEMORY.to_owned()),
            time_limit: Some(BUILD_TIME_LIMIT_MINUTES),
            partition: step.partition.clone(),
            output: Some(log.replace('%', "%%")),
            error: Some(log.replace('%', "%%")),
            export_none: true,
            ..crate::job::JobOptions::default()
        },
        body,
    }
}

/// Memory a build job asks for.
pub const BUILD_MEMORY: &str = "2G";

/// A build job's time limit, in minutes.
pub const BUILD_TIME_LIMIT_MINUTES: u32 = 60;
