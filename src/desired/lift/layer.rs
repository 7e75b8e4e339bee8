//! The settings a recipe gives and a stack service may override: validated one layer at a
//! time, then the service's laid over the recipe's.

use super::*;

/// Settings that a recipe gives and a stack service may override, validated, all optional.
#[derive(Default)]
pub(super) struct Layer {
    pub(super) resources: ResourcesLayer,
    pub(super) slurm: SlurmLayer,
    pub(super) ports: Option<Set<Vec<PortSpec>>>,
    pub(super) health: Option<Set<HealthDraft>>,
    pub(super) restart: RestartDraft,
    pub(super) update: UpdateDraft,
    pub(super) environment: BTreeMap<String, String>,
    /// `{secret: NAME}` values, by variable.
    pub(super) secret_env: BTreeMap<String, Set<String>>,
}

/// Validates one layer of settings (resources, Slurm, ports, health, environment, in that
/// order); `prefix` is prepended to field paths in errors.
pub(super) fn lift_layer(
    ctx: &mut Ctx,
    prefix: &str,
    resources: &raw::Resources,
    slurm: &raw::Slurm,
    environment: &BTreeMap<String, raw::EnvValue>,
    ports: Option<&raw::Ports>,
    health: Option<&Spanned<raw::Health>>,
) -> Layer {
    let resources = lift_resources(ctx, prefix, resources);
    let slurm = lift_slurm(ctx, prefix, slurm);
    let ports = ports.and_then(|ports| lift_ports(ctx, &format!("{prefix}ports"), ports));
    let health = health.and_then(|health| lift_health(ctx, &format!("{prefix}health"), health));
    let (environment, secret_env) = lift_environment(ctx, prefix, environment);
    Layer {
        resources,
        slurm,
        ports,
        health,
        restart: RestartDraft::default(),
        update: UpdateDraft::default(),
        environment,
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
        let (base, base_slurm) = (&self.defaults.resources, &self.defaults.slurm);
        let (resources, slurm) = (over.resources, over.slurm);
        let mut origins = BTreeMap::new();
        let o = &mut origins;
        let memory = match resources.memory.or_else(|| base.memory.clone()) {
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
        let gpu = pick(resources.gpu, &base.gpu, "resources.gpu", o).unwrap_or(0);
        // A GPU type means nothing without GPUs (a stack may set `gpu: 0` on a GPU recipe).
        let gpu_type = pick(resources.gpu_type, &base.gpu_type, "resources.gpu_type", o);
        let gpu_type = if gpu > 0 {
            gpu_type
        } else {
            o.remove("resources.gpu_type");
            None
        };
        // A variable set in the stack replaces the recipe's, whether text or secret.
        let mut environment = self.defaults.environment.clone();
        let mut secrets = self.defaults.secret_env.clone();
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
                nodes: pick(resources.nodes, &base.nodes, "resources.nodes", o).unwrap_or(1),
                cpu: pick(resources.cpu, &base.cpu, "resources.cpu", o).unwrap_or(1),
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
                time_limit: pick(
                    resources.time_limit,
                    &base.time_limit,
                    "resources.time_limit",
                    o,
                ),
                cpu_bind: pick(resources.cpu_bind, &base.cpu_bind, "resources.cpu_bind", o),
            },
            environment,
            ports: pick(over.ports, &self.defaults.ports, "ports", o).unwrap_or_default(),
            slurm: SlurmSpec {
                partition: pick(slurm.partition, &base_slurm.partition, "slurm.partition", o),
                qos: pick(slurm.qos, &base_slurm.qos, "slurm.qos", o),
                account: pick(slurm.account, &base_slurm.account, "slurm.account", o),
            },
            health: None,
            endpoint_env: Default::default(),
            secret_env,
        };
        let health = pick(over.health, &self.defaults.health, "health", o);
        (spec, origins, health)
    }
}
