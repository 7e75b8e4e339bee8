//! Raw file shapes, exactly as written in YAML. Nothing here is trusted: `spec::load` lifts these
//! into the validated model. Every struct denies unknown keys, so a typo is an error, never a
//! silently ignored setting.

use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

/// `stackctl.yaml` at the repo root.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Ownership namespace written into every job marker.
    pub owner: Option<Spanned<String>>,
    /// Where job stdout/stderr go.
    pub log_dir: Option<Spanned<String>>,
    /// Where relative container image paths are looked up.
    pub image_dir: Option<Spanned<String>>,
    /// How Slurm is reached.
    #[serde(default)]
    pub cluster: ClusterConfig,
}

/// The `cluster:` block of `stackctl.yaml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Backend name; only `cli` exists so far.
    pub backend: Option<Spanned<String>>,
}

/// `recipes/<category>/<name>.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Short name of the service.
    pub name: Spanned<String>,
    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// Apptainer container to run the service in.
    pub container: Option<Container>,
    /// Command to run (inside the container when there is one).
    pub command: Option<Spanned<String>>,
    /// Resource defaults.
    #[serde(default)]
    pub resources: Resources,
    /// Environment defaults.
    #[serde(default)]
    pub environment: BTreeMap<String, EnvValue>,
    /// TCP ports the service listens on.
    #[serde(default)]
    pub ports: Vec<Spanned<i64>>,
    /// Slurm placement defaults.
    #[serde(default)]
    pub slurm: Slurm,
}

/// The `container:` block of a recipe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    /// Apptainer definition file the image is built from.
    pub definition: Option<String>,
    /// The image: a `.sif` path or a URI such as `docker://redis:7`.
    pub image: Spanned<String>,
}

/// A `resources:` block, in a recipe or as a stack override.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Number of nodes.
    pub nodes: Option<Spanned<i64>>,
    /// CPUs per task.
    pub cpu: Option<Spanned<i64>>,
    /// Memory per node, e.g. `32G`.
    pub memory: Option<Spanned<Scalar>>,
    /// Memory per CPU, e.g. `4G`.
    pub memory_per_cpu: Option<Spanned<Scalar>>,
    /// GPUs per node.
    pub gpu: Option<Spanned<i64>>,
    /// GPU type, e.g. `a100`.
    pub gpu_type: Option<Spanned<String>>,
    /// Time limit in minutes.
    pub time_limit: Option<Spanned<i64>>,
    /// CPU binding, e.g. `cores`.
    pub cpu_bind: Option<Spanned<String>>,
}

/// A `slurm:` block, in a recipe or as a stack override.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slurm {
    /// Partition.
    pub partition: Option<Spanned<String>>,
    /// Quality of service.
    pub qos: Option<Spanned<String>>,
    /// Account to charge.
    pub account: Option<Spanned<String>>,
}

/// `stacks/<name>.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stack {
    /// Stack name; must equal the file name without `.yaml` when given.
    pub name: Option<Spanned<String>>,
    /// Services by name. Required, so an empty or truncated file is an error rather than a
    /// request to destroy the stack; `services: {}` says that explicitly.
    pub services: BTreeMap<String, Service>,
}

/// One service of a stack.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Recipe path under `recipes/`, without `.yaml`.
    pub recipe: Spanned<String>,
    /// Desired replica count (default 1).
    pub replicas: Option<Spanned<i64>>,
    /// Resource overrides.
    #[serde(default)]
    pub resources: Resources,
    /// Environment merged over the recipe's.
    #[serde(default)]
    pub environment: BTreeMap<String, EnvValue>,
    /// Slurm overrides.
    #[serde(default)]
    pub slurm: Slurm,
}

/// A scalar that YAML may have typed as a number or boolean; kept as the text it means.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Scalar(pub String);

/// An environment value: any scalar, as text. Maps, lists and nulls are rejected.
pub type EnvValue = Spanned<Scalar>;

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}
