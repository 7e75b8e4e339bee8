//! Raw file shapes, exactly as written in YAML. Nothing here is trusted: `desired::load` lifts these
//! into the validated model. Every struct denies unknown keys, so a typo is an error, never a
//! silently ignored setting.

use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

/// Reads an optional key that was written: its value, whatever it is. A key written without a
/// value (YAML null, `replicas:` alone on its line) is thus the value's own error, naming the
/// file, line and field, never taken for a key left out (which means the default).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// `stackctl.yaml` at the repo root.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Ownership namespace written into every job marker.
    #[serde(default, deserialize_with = "present")]
    pub owner: Option<Spanned<String>>,
    /// Where job stdout/stderr go.
    #[serde(default, deserialize_with = "present")]
    pub log_dir: Option<Spanned<String>>,
    /// Where relative container image paths are looked up.
    #[serde(default, deserialize_with = "present")]
    pub image_dir: Option<Spanned<String>>,
    /// The runtime of a recipe whose `container:` names none.
    #[serde(default, deserialize_with = "present")]
    pub container_runtime: Option<Spanned<String>>,
    /// How Slurm is reached.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// How the apply lock behaves.
    #[serde(default)]
    pub lock: LockConfig,
    /// Named secrets and where each comes from.
    #[serde(default)]
    pub secrets: BTreeMap<String, Spanned<SecretSource>>,
    /// Who secrets in the repo are encrypted to, and the identity that decrypts them.
    #[serde(default, deserialize_with = "present")]
    pub age: Option<AgeConfig>,
    /// Where the files that carry secrets to the jobs are written.
    #[serde(default, deserialize_with = "present")]
    pub secrets_dir: Option<Spanned<String>>,
}

/// Where one secret comes from: exactly one of the keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// An environment variable of the applying machine.
    #[serde(default, deserialize_with = "present")]
    pub env: Option<String>,
    /// A file on the applying machine.
    #[serde(default, deserialize_with = "present")]
    pub file: Option<String>,
    /// An age-encrypted file in the repo.
    #[serde(default, deserialize_with = "present")]
    pub age: Option<String>,
}

/// The `age:` block of `stackctl.yaml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgeConfig {
    /// Public keys (`age1…`) secrets are encrypted to.
    #[serde(default)]
    pub recipients: Vec<Spanned<String>>,
    /// The private key file that decrypts them.
    #[serde(default, deserialize_with = "present")]
    pub identity_file: Option<Spanned<String>>,
}

/// The `lock:` block of `stackctl.yaml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockConfig {
    /// How long a lock lives without being renewed, e.g. `2m`.
    #[serde(default, deserialize_with = "present")]
    pub expiry: Option<Spanned<String>>,
    /// Partition the lock is taken in.
    #[serde(default, deserialize_with = "present")]
    pub partition: Option<Spanned<String>>,
}

/// The `cluster:` block of `stackctl.yaml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Backend name; only `cli` exists so far.
    #[serde(default, deserialize_with = "present")]
    pub backend: Option<Spanned<String>>,
    /// Run the Slurm commands on a login node over SSH instead of locally.
    #[serde(default, deserialize_with = "present")]
    pub ssh: Option<SshConfig>,
    /// slurmrestd's base URL (`backend: rest`).
    #[serde(default, deserialize_with = "present")]
    pub url: Option<Spanned<String>>,
    /// The Slurm user the REST requests act as (`X-SLURM-USER-NAME`).
    #[serde(default, deserialize_with = "present")]
    pub user: Option<Spanned<String>>,
    /// The environment variable holding the JWT (default `SLURM_JWT`).
    #[serde(default, deserialize_with = "present")]
    pub token_env: Option<Spanned<String>>,
    /// A file holding the JWT, instead of `token_env`.
    #[serde(default, deserialize_with = "present")]
    pub token_file: Option<Spanned<String>>,
    /// The REST API version: `auto` or `v0.0.38`.
    #[serde(default, deserialize_with = "present")]
    pub api: Option<Spanned<String>>,
    /// Whether one-shot jobs' runs are also read from accounting (`sacct`): `auto` or `off`.
    #[serde(default, deserialize_with = "present")]
    pub accounting: Option<Spanned<String>>,
}

/// The `cluster.ssh:` block of `stackctl.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshConfig {
    /// The login node's host name or address.
    pub host: Spanned<String>,
    /// The remote user; otherwise ssh's configuration decides.
    #[serde(default, deserialize_with = "present")]
    pub user: Option<Spanned<String>>,
    /// The SSH port; otherwise ssh's configuration decides (22).
    #[serde(default, deserialize_with = "present")]
    pub port: Option<Spanned<i64>>,
    /// The private key; otherwise the agent and ssh's configuration decide.
    #[serde(default, deserialize_with = "present")]
    pub identity_file: Option<Spanned<String>>,
    /// The known-hosts file the host key is checked against; otherwise ssh's default.
    #[serde(default, deserialize_with = "present")]
    pub known_hosts_file: Option<Spanned<String>>,
    /// Variables exported on the login node before each Slurm command (e.g. `SLURM_CONF`).
    #[serde(default)]
    pub env: BTreeMap<String, Spanned<String>>,
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
    #[serde(default, deserialize_with = "present")]
    pub container: Option<Container>,
    /// Shell lines run before the container runtime (`module load apptainer`).
    #[serde(default, deserialize_with = "present")]
    pub setup: Option<Vec<Spanned<String>>>,
    /// Command to run (inside the container when there is one).
    #[serde(default, deserialize_with = "present")]
    pub command: Option<Spanned<String>>,
    /// Resource defaults.
    #[serde(default)]
    pub resources: Resources,
    /// Environment defaults.
    #[serde(default)]
    pub environment: BTreeMap<String, EnvValue>,
    /// TCP ports the service listens on.
    #[serde(default, deserialize_with = "present")]
    pub ports: Option<Ports>,
    /// Slurm placement defaults.
    #[serde(default)]
    pub slurm: Slurm,
    /// Health check.
    #[serde(default, deserialize_with = "present")]
    pub health: Option<Spanned<Health>>,
    /// Crash-loop backoff.
    #[serde(default, deserialize_with = "present")]
    pub restart: Option<Spanned<Restart>>,
    /// How replicas are replaced.
    #[serde(default, deserialize_with = "present")]
    pub update: Option<Spanned<Update>>,
    /// How long before its time limit a replica gets a successor: a duration or `off`.
    #[serde(default, deserialize_with = "present")]
    pub renew_before: Option<Spanned<String>>,
}

/// A `restart:` block, in a recipe or overriding the recipe's field by field in a stack.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    /// First delay after a failure, e.g. `10s`.
    #[serde(default, deserialize_with = "present")]
    pub backoff: Option<Spanned<String>>,
    /// Longest delay, e.g. `10m`.
    #[serde(default, deserialize_with = "present")]
    pub max_backoff: Option<Spanned<String>>,
    /// `none`, or how many restarts before giving up.
    #[serde(default, deserialize_with = "present")]
    pub max_attempts: Option<Spanned<Attempts>>,
}

/// An `update:` block, in a recipe or overriding the recipe's field by field in a stack.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    /// `rolling` or `recreate`.
    #[serde(default, deserialize_with = "present")]
    pub strategy: Option<Spanned<String>>,
    /// Successors at once beyond `replicas`.
    #[serde(default, deserialize_with = "present")]
    pub max_surge: Option<Spanned<Int>>,
    /// Replicas that may be not ready during a rollout.
    #[serde(default, deserialize_with = "present")]
    pub max_unavailable: Option<Spanned<Int>>,
    /// How long a successor must have been ready, e.g. `10s`.
    #[serde(default, deserialize_with = "present")]
    pub min_healthy_time: Option<Spanned<String>>,
    /// How long a successor may take from RUNNING to ready.
    #[serde(default, deserialize_with = "present")]
    pub timeout: Option<Spanned<String>>,
    /// How long a successor may stay PENDING.
    #[serde(default, deserialize_with = "present")]
    pub queue_timeout: Option<Spanned<String>>,
    /// `true` or `false`, as a string so that anything else is reported with its position.
    #[serde(default, deserialize_with = "present")]
    pub auto_revert: Option<Spanned<String>>,
}

/// `max_attempts`: an integer, or the word `none`; anything else is kept as a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempts {
    /// `none`: never give up.
    Unlimited,
    /// A YAML integer, or what was written instead of one.
    Count(Int),
}

impl<'de> Deserialize<'de> for Attempts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Attempts;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer or `none`")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Attempts, E> {
                Ok(Attempts::Count(Int::Value(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Attempts, E> {
                Ok(Attempts::Count(Int::of(v)))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Attempts, E> {
                Ok(Attempts::Count(Int::Not("a decimal number".into())))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Attempts, E> {
                Ok(Attempts::Count(Int::Not(format!("the boolean {v}"))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Attempts, E> {
                Ok(if v == "none" {
                    Attempts::Unlimited
                } else {
                    Attempts::Count(Int::Not(format!("the string {v:?}")))
                })
            }
            fn visit_unit<E>(self) -> Result<Attempts, E> {
                Ok(Attempts::Count(Int::Not("no value".into())))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Attempts, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Attempts::Count(Int::Not("a list".into())))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Attempts, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Attempts::Count(Int::Not("a mapping".into())))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A `health:` block, in a recipe or replacing the recipe's in a stack.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// An HTTP probe.
    #[serde(default, deserialize_with = "present")]
    pub http: Option<Spanned<HttpProbe>>,
    /// A TCP probe.
    #[serde(default, deserialize_with = "present")]
    pub tcp: Option<Spanned<TcpProbe>>,
    /// A command probe.
    #[serde(default, deserialize_with = "present")]
    pub command: Option<Spanned<String>>,
    /// Time between probes, e.g. `5s`.
    #[serde(default, deserialize_with = "present")]
    pub interval: Option<Spanned<String>>,
    /// Time one probe may take.
    #[serde(default, deserialize_with = "present")]
    pub timeout: Option<Spanned<String>>,
    /// Time after start during which failures do not count.
    #[serde(default, deserialize_with = "present")]
    pub start_period: Option<Spanned<String>>,
    /// Consecutive failures that make the service unhealthy.
    #[serde(default, deserialize_with = "present")]
    pub failure_threshold: Option<Spanned<Int>>,
    /// `restart` or `ignore`.
    #[serde(default, deserialize_with = "present")]
    pub on_failure: Option<Spanned<String>>,
}

/// `health.http`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    /// A port name, or the number of one of `ports`; none means the first port.
    #[serde(default, deserialize_with = "present")]
    pub port: Option<Spanned<String>>,
    /// The path to GET, default `/`.
    #[serde(default, deserialize_with = "present")]
    pub path: Option<Spanned<String>>,
}

/// An `endpoint_env:` entry of a stack's service: another service's endpoint, resolved when a
/// replica is submitted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointEnv {
    /// The service, `STACK/SERVICE`.
    pub service: Spanned<String>,
    /// The value, with `{host}` and `{port}` replaced; default `{host}:{port}`.
    #[serde(default, deserialize_with = "present")]
    pub format: Option<Spanned<String>>,
    /// The port's name; default the one named `http`, else the first.
    #[serde(default, deserialize_with = "present")]
    pub port: Option<Spanned<String>>,
}

/// `health.tcp`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProbe {
    /// A port name, or the number of one of `ports`; none means the first port.
    #[serde(default, deserialize_with = "present")]
    pub port: Option<Spanned<String>>,
}

/// The `container:` block of a recipe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    /// `apptainer`, `charliecloud` or `podman`; none means `stackctl.yaml`'s default.
    #[serde(default, deserialize_with = "present")]
    pub runtime: Option<Spanned<String>>,
    /// Apptainer definition file the image is built from, next to the recipe.
    #[serde(default, deserialize_with = "present")]
    pub definition: Option<Spanned<String>>,
    /// Dockerfile the image is built from (Charliecloud, Podman), next to the recipe.
    #[serde(default, deserialize_with = "present")]
    pub build: Option<Spanned<String>>,
    /// Host paths mounted in the container (`SRC` or `SRC:DST`).
    #[serde(default, deserialize_with = "present")]
    pub binds: Option<Vec<Spanned<String>>>,
    /// The image: a `.sif` path or a URI such as `docker://redis:7`; a name when built.
    pub image: Spanned<String>,
}

/// A `resources:` block, in a recipe or as a stack override.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Number of nodes.
    #[serde(default, deserialize_with = "present")]
    pub nodes: Option<Spanned<Int>>,
    /// CPUs per task.
    #[serde(default, deserialize_with = "present")]
    pub cpu: Option<Spanned<Int>>,
    /// Memory per node, e.g. `32G`.
    #[serde(default, deserialize_with = "present")]
    pub memory: Option<Spanned<String>>,
    /// Memory per CPU, e.g. `4G`.
    #[serde(default, deserialize_with = "present")]
    pub memory_per_cpu: Option<Spanned<String>>,
    /// GPUs per node.
    #[serde(default, deserialize_with = "present")]
    pub gpu: Option<Spanned<Int>>,
    /// GPU type, e.g. `a100`.
    #[serde(default, deserialize_with = "present")]
    pub gpu_type: Option<Spanned<String>>,
    /// Time limit: minutes, Slurm's formats, a duration with a unit, or `UNLIMITED`; read as
    /// the scalar's own text.
    #[serde(default, deserialize_with = "present")]
    pub time_limit: Option<Spanned<String>>,
    /// CPU binding, e.g. `cores`.
    #[serde(default, deserialize_with = "present")]
    pub cpu_bind: Option<Spanned<String>>,
}

/// A `slurm:` block, in a recipe or as a stack override.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slurm {
    /// Partition.
    #[serde(default, deserialize_with = "present")]
    pub partition: Option<Spanned<String>>,
    /// Quality of service.
    #[serde(default, deserialize_with = "present")]
    pub qos: Option<Spanned<String>>,
    /// Account to charge.
    #[serde(default, deserialize_with = "present")]
    pub account: Option<Spanned<String>>,
}

/// `stacks/<name>.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stack {
    /// Stack name; must equal the file name without `.yaml` when given.
    #[serde(default, deserialize_with = "present")]
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
    #[serde(default, deserialize_with = "present")]
    pub replicas: Option<Spanned<Int>>,
    /// Container replacing the recipe's image (`container: {image: ..}`).
    #[serde(default, deserialize_with = "present")]
    pub container: Option<Container>,
    /// Command replacing the recipe's.
    #[serde(default, deserialize_with = "present")]
    pub command: Option<Spanned<String>>,
    /// Resource overrides.
    #[serde(default)]
    pub resources: Resources,
    /// Environment merged over the recipe's.
    #[serde(default)]
    pub environment: BTreeMap<String, EnvValue>,
    /// Ports replacing the recipe's list.
    #[serde(default, deserialize_with = "present")]
    pub ports: Option<Ports>,
    /// Slurm overrides.
    #[serde(default)]
    pub slurm: Slurm,
    /// Health check replacing the recipe's.
    #[serde(default, deserialize_with = "present")]
    pub health: Option<Spanned<Health>>,
    /// Crash-loop backoff, field by field over the recipe's.
    #[serde(default, deserialize_with = "present")]
    pub restart: Option<Spanned<Restart>>,
    /// How replicas are replaced, field by field over the recipe's.
    #[serde(default, deserialize_with = "present")]
    pub update: Option<Spanned<Update>>,
    /// How long before its time limit a replica gets a successor: a duration or `off`.
    #[serde(default, deserialize_with = "present")]
    pub renew_before: Option<Spanned<String>>,
    /// Environment variables set at submit time from another service's ready replicas.
    #[serde(default)]
    pub endpoint_env: BTreeMap<String, Spanned<EndpointEnv>>,
    /// Services whose replicas must be started (or ready) before this one's are submitted.
    #[serde(default, deserialize_with = "present")]
    pub depends_on: Option<Spanned<Vec<Spanned<DependsOn>>>>,
    /// `protect: true` refuses every plan that would reduce or remove the service's replicas.
    #[serde(default, deserialize_with = "present")]
    pub protect: Option<Spanned<bool>>,
    /// What happens to a replica once a service its `endpoint_env` names no longer serves
    /// the address it was given: `replace` (default) or `keep`.
    pub on_endpoint_move: Option<Spanned<String>>,
    /// `service` (the default) or `job`: a one-shot job runs once per spec.
    #[serde(default, deserialize_with = "present")]
    pub kind: Option<Spanned<String>>,
    /// A job's target: `SERVICE` or `STACK/SERVICE`, whose readiness it waits for.
    #[serde(default, deserialize_with = "present")]
    pub target: Option<Spanned<String>>,
    /// How many times a failed job is run again (default 0).
    #[serde(default, deserialize_with = "present")]
    pub retries: Option<Spanned<Int>>,
}

/// One `depends_on:` entry: `SERVICE`, `STACK/SERVICE`, or
/// `{service: .., condition: started|ready}`. Anything else is kept as a description of what
/// was written, so the error can point at the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DependsOn {
    /// The service as written, and the condition when one was written.
    Service {
        /// `SERVICE` (same stack) or `STACK/SERVICE`.
        service: String,
        /// `started` or `ready` as written; none means `ready`.
        condition: Option<String>,
    },
    /// Neither; says what was written instead.
    Not(String),
}

impl<'de> Deserialize<'de> for DependsOn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = DependsOn;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a service name or {service: .., condition: started|ready}")
            }
            fn visit_str<E>(self, v: &str) -> Result<DependsOn, E> {
                Ok(DependsOn::Service {
                    service: v.to_owned(),
                    condition: None,
                })
            }
            fn visit_i64<E>(self, v: i64) -> Result<DependsOn, E> {
                Ok(DependsOn::Not(format!("the number {v}")))
            }
            fn visit_u64<E>(self, v: u64) -> Result<DependsOn, E> {
                Ok(DependsOn::Not(format!("the number {v}")))
            }
            fn visit_f64<E>(self, v: f64) -> Result<DependsOn, E> {
                Ok(DependsOn::Not(format!("the number {v}")))
            }
            fn visit_bool<E>(self, v: bool) -> Result<DependsOn, E> {
                Ok(DependsOn::Not(format!("the boolean {v}")))
            }
            fn visit_unit<E>(self) -> Result<DependsOn, E> {
                Ok(DependsOn::Not("no value".into()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<DependsOn, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(DependsOn::Not("a list".into()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<DependsOn, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Full {
                    service: String,
                    condition: Option<String>,
                }
                let full = Full::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(DependsOn::Service {
                    service: full.service,
                    condition: full.condition,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A list of TCP ports; the list's own position is where it was written.
pub type Ports = Spanned<Vec<Spanned<PortItem>>>;

/// One entry of `ports:`: a number, `auto`, or `{name: .., port: ..}`. Anything else is kept
/// as a description of what was written, so the error can point at the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortItem {
    /// A YAML integer (or what was written instead of one).
    Number(Int),
    /// `auto`.
    Auto,
    /// `{name: .., port: ..}`.
    Named {
        /// The name as written.
        name: String,
        /// The port: a number or `auto` (a nested mapping is kept and reported).
        port: Box<PortItem>,
    },
    /// Neither; says what was written instead.
    Not(String),
}

impl<'de> Deserialize<'de> for PortItem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PortItem;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a port number, `auto` or {name: .., port: ..}")
            }
            fn visit_i64<E>(self, v: i64) -> Result<PortItem, E> {
                Ok(PortItem::Number(Int::Value(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<PortItem, E> {
                Ok(PortItem::Number(Int::of(v)))
            }
            fn visit_f64<E>(self, _: f64) -> Result<PortItem, E> {
                Ok(PortItem::Number(Int::Not("a decimal number".into())))
            }
            fn visit_bool<E>(self, v: bool) -> Result<PortItem, E> {
                Ok(PortItem::Not(format!("the boolean {v}")))
            }
            fn visit_str<E>(self, v: &str) -> Result<PortItem, E> {
                Ok(if v == "auto" {
                    PortItem::Auto
                } else {
                    PortItem::Not(format!("the string {v:?}"))
                })
            }
            fn visit_unit<E>(self) -> Result<PortItem, E> {
                Ok(PortItem::Not("no value".into()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<PortItem, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(PortItem::Not("a list".into()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<PortItem, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Named {
                    name: String,
                    port: PortItem,
                }
                let named = Named::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(PortItem::Named {
                    name: named.name,
                    port: Box::new(named.port),
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// An environment value as written: a scalar's own text, or a reference to a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvEntry {
    /// A scalar, exactly as written: it is read as text even where YAML would type it as a
    /// number or boolean, so `8.0`, `0022`, `yes` and `0x1F` stay exactly that.
    Text(String),
    /// `{secret: NAME}`: the value of a secret of `stackctl.yaml`.
    Secret(String),
    /// Neither (a list, a null, another mapping, a tagged scalar); says what was written.
    Not(String),
}

/// An environment value and where it was written.
#[derive(Debug, Clone)]
pub struct EnvValue {
    /// What was written.
    pub value: EnvEntry,
    /// Where it was written (an alias's own position, not its anchor's).
    pub referenced: serde_saphyr::Location,
}

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<EnvProbe>::deserialize(d)?;
        let value = match spanned.value {
            EnvProbe::Text(text) => EnvEntry::Text(text),
            // YAML typed the scalar; its own text is in the file, where it was defined.
            EnvProbe::Typed(shown) => EnvEntry::Text(
                super::yaml::source_text(&spanned.defined)
                    .filter(|text| !text.is_empty())
                    .unwrap_or(shown),
            ),
            EnvProbe::Secret(name) => EnvEntry::Secret(name),
            EnvProbe::Not(what) => EnvEntry::Not(what),
        };
        Ok(EnvValue {
            value,
            referenced: spanned.referenced,
        })
    }
}

/// What the parser handed over for an environment value, before its text is recovered.
enum EnvProbe {
    Text(String),
    /// A scalar YAML typed (number, boolean), with its value printed as a fallback.
    Typed(String),
    Secret(String),
    Not(String),
}

impl<'de> Deserialize<'de> for EnvProbe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EnvProbe;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a text value or {secret: NAME}")
            }
            fn visit_str<E>(self, v: &str) -> Result<EnvProbe, E> {
                Ok(EnvProbe::Text(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<EnvProbe, E> {
                Ok(EnvProbe::Text(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<EnvProbe, E> {
                Ok(EnvProbe::Typed(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<EnvProbe, E> {
                Ok(EnvProbe::Typed(v.to_string()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<EnvProbe, E> {
                Ok(EnvProbe::Typed(v.to_string()))
            }
            fn visit_u128<E>(self, v: u128) -> Result<EnvProbe, E> {
                Ok(EnvProbe::Typed(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<EnvProbe, E> {
                Ok(EnvProbe::Typed(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<EnvProbe, E> {
                Ok(EnvProbe::Typed(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<EnvProbe, E> {
                Ok(EnvProbe::Not("no value given".into()))
            }
            fn visit_none<E>(self) -> Result<EnvProbe, E> {
                Ok(EnvProbe::Not("no value given".into()))
            }
            // A list is refused at once, where it starts: walking it could expand an alias bomb.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<EnvProbe, A::Error> {
                Err(serde::de::Error::custom("expected string scalar"))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<EnvProbe, A::Error> {
                let mut secret = None;
                let mut other = false;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "secret" && secret.is_none() {
                        secret = Some(map.next_value::<Option<String>>()?);
                    } else {
                        other = true;
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                match secret {
                    Some(Some(name)) if !other => Ok(EnvProbe::Secret(name)),
                    _ => Err(serde::de::Error::custom(
                        "expected a single value (text, a number or true/false), not a list or mapping \
                         other than {secret: NAME}",
                    )),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A YAML integer, such as `3`, `-1` or `0x10`. Anything else (a quoted `"3"`, `3.0`, `yes`, a
/// list) is kept as a description of what was written, so that the error can point at the
/// value: an error raised while deserializing would lose its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Int {
    /// An integer that fits in an `i64`.
    Value(i64),
    /// Not an integer; says what was written instead, e.g. `the string "3"`.
    Not(String),
}

impl Int {
    /// An integer of any width: its value when it fits in an `i64`, else why not.
    fn of<T: Copy + std::fmt::Display>(v: T) -> Int
    where
        i64: TryFrom<T>,
    {
        i64::try_from(v).map_or_else(
            |_| Int::Not(format!("the integer {v}, which is too large")),
            Int::Value,
        )
    }
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Int;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Int, E> {
                Ok(Int::Value(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Int, E> {
                Ok(Int::of(v))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Int, E> {
                Ok(Int::of(v))
            }
            fn visit_u128<E>(self, v: u128) -> Result<Int, E> {
                Ok(Int::of(v))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Int, E> {
                Ok(Int::Not(
                    "a decimal number (or an integer too large to be exact)".into(),
                ))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Int, E> {
                Ok(Int::Not(format!(
                    "the boolean {v} (YAML reads yes/no/on/off as booleans)"
                )))
            }
            fn visit_str<E>(self, v: &str) -> Result<Int, E> {
                Ok(Int::Not(format!(
                    "the string {v:?}; write integers without quotes"
                )))
            }
            fn visit_unit<E>(self) -> Result<Int, E> {
                Ok(Int::Not("no value".into()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Int, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Int::Not("a list".into()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Int, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Int::Not("a mapping".into()))
            }
        }
        d.deserialize_any(Visitor)
    }
}
