//! The settings a recipe gives and a stack service may override: validated one layer at a
//! time, then the service's laid over the recipe's.

use super::*;

/// Settings that a recipe gives and a stack service may override, validated, all optional.
#[derive(Default)]
pub(super) struct Layer {
    pub(super) nodes: Option<Set<u32>>,
    pub(super) cpu: Option<Set<u32>>,
    /// `memory` or `memory_per_cpu`; they exclude each other, so an override replaces both.
    pub(super) memory: Option<Set<Memory>>,
    pub(super) gpu: Option<Set<u32>>,
    pub(super) gpu_type: Option<Set<String>>,
    pub(super) time_limit: Option<Set<u32>>,
    pub(super) cpu_bind: Option<Set<String>>,
    pub(super) partition: Option<Set<String>>,
    pub(super) qos: Option<Set<String>>,
    pub(super) account: Option<Set<String>>,
    pub(super) ports: Option<Set<Vec<PortSpec>>>,
    pub(super) health: Option<Set<HealthDraft>>,
    pub(super) restart: RestartDraft,
    pub(super) update: UpdateDraft,
    pub(super) environment: BTreeMap<String, String>,
    /// `{secret: NAME}` values, by variable.
    pub(super) secret_env: BTreeMap<String, Set<String>>,
}

/// Validates one layer of settings; `prefix` is prepended to field paths in errors.
pub(super) fn lift_layer(
    ctx: &mut Ctx,
    prefix: &str,
    resources: &raw::Resources,
    slurm: &raw::Slurm,
    environment: &BTreeMap<String, raw::EnvValue>,
    ports: Option<&raw::Ports>,
    health: Option<&Spanned<raw::Health>>,
) -> Layer {
    let res = |name: &str| format!("{prefix}resources.{name}");
    let int = |ctx: &mut Ctx, name: &str, v: &Option<Spanned<raw::Int>>, min: i64, max: i64| {
        let v = v.as_ref()?;
        let field = res(name);
        let value = ctx.int_in(v, &field, min, max)?;
        Some(Set {
            value,
            origin: ctx.origin(v.referenced, &field),
        })
    };
    let nodes = int(ctx, "nodes", &resources.nodes, 1, 100_000);
    let cpu = int(ctx, "cpu", &resources.cpu, 1, 100_000);
    let gpu = int(ctx, "gpu", &resources.gpu, 0, 1024);
    let time_limit = resources.time_limit.as_ref().and_then(|v| {
        let field = res("time_limit");
        match crate::desired::parse_time_limit(&v.value) {
            Ok(minutes) => Some(Set {
                value: minutes,
                origin: ctx.origin(v.referenced, &field),
            }),
            Err(message) => {
                ctx.error(v.referenced, &field, message);
                None
            }
        }
    });
    let memory = match (&resources.memory, &resources.memory_per_cpu) {
        (Some(_), Some(v)) => {
            ctx.error(
                v.referenced,
                &res("memory_per_cpu"),
                "set `memory` or `memory_per_cpu`, not both",
            );
            None
        }
        (Some(m), None) => memory_amount(ctx, m, &res("memory")).map(|set| Set {
            value: Memory::PerNode(set.value),
            origin: set.origin,
        }),
        (None, Some(m)) => memory_amount(ctx, m, &res("memory_per_cpu")).map(|set| Set {
            value: Memory::PerCpu(set.value),
            origin: set.origin,
        }),
        (None, None) => None,
    };
    let word = |ctx: &mut Ctx,
                v: &Option<Spanned<String>>,
                field: String,
                what: &str,
                ok: fn(&str) -> bool| {
        let v = v.as_ref()?;
        let value = ctx.word(v, &field, what, ok)?;
        Some(Set {
            value,
            origin: ctx.origin(v.referenced, &field),
        })
    };
    let gpu_type = word(
        ctx,
        &resources.gpu_type,
        res("gpu_type"),
        "a GPU type",
        |text| text.chars().all(slurm_word),
    );
    let cpu_bind = word(
        ctx,
        &resources.cpu_bind,
        res("cpu_bind"),
        "a CPU binding",
        |text| {
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ',' | ':'))
        },
    );
    let slurm_field = |name: &str| format!("{prefix}slurm.{name}");
    let partition = word(
        ctx,
        &slurm.partition,
        slurm_field("partition"),
        "a Slurm partition name (or a comma-separated list of them)",
        is_partition_list,
    );
    let qos = word(
        ctx,
        &slurm.qos,
        slurm_field("qos"),
        "a Slurm QOS name",
        |text| text.chars().all(slurm_word),
    );
    let account = word(
        ctx,
        &slurm.account,
        slurm_field("account"),
        "a Slurm account name",
        |text| text.chars().all(slurm_word),
    );
    let ports = ports.and_then(|ports| lift_ports(ctx, &format!("{prefix}ports"), ports));
    let health = health.and_then(|health| lift_health(ctx, &format!("{prefix}health"), health));

    let mut env = BTreeMap::new();
    let mut secret_env = BTreeMap::new();
    for (key, value) in environment {
        let field = format!("{prefix}environment.{key}");
        if let Some(problem) = env_name_problem(key) {
            ctx.error(value.referenced, &field, problem);
            continue;
        }
        match &value.value {
            raw::EnvEntry::Text(text) if text.contains('\0') => ctx.error(
                value.referenced,
                &field,
                "environment values cannot contain NUL bytes",
            ),
            raw::EnvEntry::Text(text) => {
                env.insert(key.clone(), text.clone());
            }
            raw::EnvEntry::Secret(name) => {
                let origin = ctx.origin(value.referenced, &field);
                secret_env.insert(
                    key.clone(),
                    Set {
                        value: name.clone(),
                        origin,
                    },
                );
            }
            raw::EnvEntry::Not(what) => ctx.error(
                value.referenced,
                &field,
                format!("{what}: a value is text, or {{secret: NAME}} for a secret"),
            ),
        }
    }
    Layer {
        nodes,
        cpu,
        memory,
        gpu,
        gpu_type,
        time_limit,
        cpu_bind,
        partition,
        qos,
        account,
        ports,
        health,
        restart: RestartDraft::default(),
        update: UpdateDraft::default(),
        environment: env,
        secret_env,
    }
}

/// Returns the override if there is one, else the recipe's value; records where it came from.
pub(super) fn pick<T: Clone>(
    over: Option<Set<T>>,
    base: &Option<Set<T>>,
    key: &str,
    origins: &mut BTreeMap<String, Origin>,
) -> Option<T> {
    let set = over.or_else(|| base.clone())?;
    origins.insert(key.to_owned(), set.origin);
    Some(set.value)
}

impl Recipe {
    /// Returns the replica spec with a service's overrides laid over this recipe's defaults,
    /// where each setting it holds was written (keyed as in [`Service::origins`]), and the
    /// health check still to be resolved against the merged ports (the spec has none yet).
    pub(super) fn with_overrides(
        &self,
        over: Layer,
    ) -> (ReplicaSpec, BTreeMap<String, Origin>, Option<HealthDraft>) {
        let base = &self.defaults;
        let mut origins = BTreeMap::new();
        let o = &mut origins;
        let memory = match over.memory.or_else(|| base.memory.clone()) {
            Some(set) => {
                let key = match set.value {
                    Memory::PerNode(_) => "resources.memory",
                    Memory::PerCpu(_) => "resources.memory_per_cpu",
                };
                o.insert(key.to_owned(), set.origin);
                Some(set.value)
            }
            None => None,
        };
        let gpu = pick(over.gpu, &base.gpu, "resources.gpu", o).unwrap_or(0);
        // A GPU type means nothing without GPUs (a stack may set `gpu: 0` on a GPU recipe).
        let gpu_type = pick(over.gpu_type, &base.gpu_type, "resources.gpu_type", o);
        let gpu_type = if gpu > 0 {
            gpu_type
        } else {
            o.remove("resources.gpu_type");
            None
        };
        // A variable set in the stack replaces the recipe's, whether text or secret.
        let mut environment = base.environment.clone();
        let mut secrets = base.secret_env.clone();
        for key in over.environment.keys() {
            secrets.remove(key);
        }
        for key in over.secret_env.keys() {
            environment.remove(key);
        }
        environment.extend(over.environment);
        secrets.extend(over.secret_env);
        let secret_env = secrets
            .into_iter()
            .map(|(key, set)| {
                o.insert(format!("environment.{key}"), set.origin);
                let reference = SecretRef {
                    secret: set.value,
                    fingerprint: String::new(),
                };
                (key, reference)
            })
            .collect();
        let spec = ReplicaSpec {
            image: self.image.clone(),
            command: self.command.clone(),
            container: self.container.clone(),
            setup: self.setup.clone(),
            resources: ResourceSpec {
                nodes: pick(over.nodes, &base.nodes, "resources.nodes", o).unwrap_or(1),
                cpu: pick(over.cpu, &base.cpu, "resources.cpu", o).unwrap_or(1),
                memory: match &memory {
                    Some(Memory::PerNode(m)) => Some(m.clone()),
                    _ => None,
                },
                memory_per_cpu: match &memory {
                    Some(Memory::PerCpu(m)) => Some(m.clone()),
                    _ => None,
                },
                gpu,
                gpu_type,
                time_limit: pick(over.time_limit, &base.time_limit, "resources.time_limit", o),
                cpu_bind: pick(over.cpu_bind, &base.cpu_bind, "resources.cpu_bind", o),
            },
            environment,
            ports: pick(over.ports, &base.ports, "ports", o).unwrap_or_default(),
            slurm: SlurmSpec {
                partition: pick(over.partition, &base.partition, "slurm.partition", o),
                qos: pick(over.qos, &base.qos, "slurm.qos", o),
                account: pick(over.account, &base.account, "slurm.account", o),
            },
            health: None,
            endpoint_env: Default::default(),
            secret_env,
        };
        let health = pick(over.health, &base.health, "health", o);
        (spec, origins, health)
    }
}
