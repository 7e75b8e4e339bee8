//! Cluster facts as observed state: partitions, nodes, GPUs and limits, read once per plan
//! that submits something, and the pure check of desired services against them. A request no
//! node of its partition can ever satisfy is a plan error naming the file, line and field,
//! never a job that pends forever.

use crate::desired::{Desired, Service, ServiceAddr, SpecError, memory_mib};
use std::collections::BTreeSet;

/// What the cluster offers, as read from Slurm.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterFacts {
    /// Every partition.
    pub partitions: Vec<PartitionFacts>,
    /// Every node.
    pub nodes: Vec<NodeFacts>,
    /// Largest array index + 1 (`MaxArraySize`), when the backend could read it.
    pub max_array_size: Option<u32>,
    /// Whether `partitions` cannot say which one is the default (slurmrestd v0.0.39+): then a
    /// service that names no partition is not checked against any.
    pub default_partition_unknown: bool,
}

/// One partition and its limits; `None` means unlimited (or not known).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionFacts {
    /// Partition name.
    pub name: String,
    /// Whether jobs that name no partition land here.
    pub is_default: bool,
    /// `MaxTime`, in minutes.
    pub max_time_minutes: Option<u32>,
    /// `MaxNodes` per job.
    pub max_nodes: Option<u32>,
    /// `MaxCPUsPerNode`.
    pub max_cpus_per_node: Option<u32>,
    /// `MaxMemPerNode`, in MiB.
    pub max_mem_per_node_mb: Option<u64>,
    /// Names of the nodes in the partition (expanded from Slurm's hostlist).
    pub nodes: Vec<String>,
}

/// One node and what it has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// Node name.
    pub name: String,
    /// CPUs jobs can use: `CPUEfctv` (`CPUTot` less specialized cores), or `CPUTot` where
    /// Slurm does not print it (before 22.05).
    pub cpus: u32,
    /// Memory jobs can use: `RealMemory` less `MemSpecLimit`, in MiB.
    pub memory_mb: u64,
    /// CPUs not allocated when the facts were read (`cpus` less `CPUAlloc`); none when not
    /// read. Used only to decide whether avoiding a node can delay a restart.
    pub cpus_idle: Option<u32>,
    /// GPUs by type (`None` for untyped `gpu:N`).
    pub gpus: Vec<GpuFacts>,
}

/// A group of GPUs of one type on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuFacts {
    /// GPU type, e.g. `a100`; `None` when the node declares untyped GPUs.
    pub kind: Option<String>,
    /// How many.
    pub count: u32,
}

/// Checks the services a plan submits against what the cluster offers, and returns one error
/// per request that no node of the service's partition could ever satisfy, each naming the
/// file, line and field of the setting at fault. `services` are the addresses the plan submits
/// (others are not checked: a running job proves its request fits); unknown addresses are
/// skipped.
///
/// Per service: the partition (`slurm.partition`; the default partition when unset) must exist
/// (every one of a list `gpu,debug`: Slurm rejects a job naming any unknown partition), and one
/// of them (the job runs in whichever can start it first) must have some node with
/// the GPU type, GPUs, CPUs and memory one replica asks for per node (one task per node), within
/// `MaxCPUsPerNode` and `MaxMemPerNode`; `nodes` must not exceed the nodes that qualify or
/// `MaxNodes`; `time_limit` must not exceed `MaxTime`; and the highest replica index must be
/// below `MaxArraySize`. Facts without partitions (a backend that read none) check the array
/// size only.
pub fn check(desired: &Desired, services: &[&ServiceAddr], facts: &ClusterFacts) -> Vec<SpecError> {
    let mut seen = BTreeSet::new();
    let mut errors = Vec::new();
    for &address in services {
        if !seen.insert(address) {
            continue;
        }
        if let Some(service) = desired.services.get(address) {
            check_service(service, facts, &mut errors);
        }
    }
    errors
}

/// What one replica of `service` asks of each of its nodes.
fn per_node(service: &Service) -> PerNode<'_> {
    let res = &service.spec.resources;
    let memory = match (&res.memory, &res.memory_per_cpu) {
        (Some(text), _) => memory_mib(text).map(|mb| {
            let words = format!("{text} of memory per node ({mb} MiB)");
            (mb, "resources.memory", words)
        }),
        (None, Some(text)) => memory_mib(text).map(|per_cpu| {
            let mb = per_cpu.saturating_mul(u64::from(res.cpu));
            let words = format!(
                "{text} of memory per CPU, {mb} MiB per node with {} CPUs",
                res.cpu
            );
            (mb, "resources.memory_per_cpu", words)
        }),
        (None, None) => None,
    };
    PerNode {
        cpus: res.cpu,
        memory,
        gpus: res.gpu,
        gpu_type: res.gpu_type.as_deref().filter(|_| res.gpu > 0),
    }
}

/// The partitions a service's jobs may run in: its `slurm.partition` list, or the default.
fn partition_list<'a>(service: &'a Service, facts: &'a ClusterFacts) -> Vec<&'a str> {
    match &service.spec.slurm.partition {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect(),
        None => facts
            .partitions
            .iter()
            .filter(|p| p.is_default)
            .map(|p| p.name.as_str())
            .collect(),
    }
}

/// Keeps a failed replica's successor off the node(s) it failed on only where that leaves
/// enough nodes to run it now: for each [`crate::plan::Backoff::exclude`], when no partition
/// of the service has `resources.nodes` nodes outside the excluded ones that fit one replica
/// and have the CPUs idle (where known), the exclusion is dropped: the node may be the only one
/// that can run it, or the only one free, and a preference must not hold the restart back.
/// Facts without partitions or nodes (not read) drop every exclusion.
pub fn settle_excludes(plan: &mut crate::plan::Plan, desired: &Desired, facts: &ClusterFacts) {
    for service_plan in &mut plan.services {
        let service = desired.services.get(&service_plan.service);
        for change in &mut service_plan.changes {
            let Some(backoff) = change.backoff.as_mut() else {
                continue;
            };
            let Some(excluded) = backoff.exclude.as_deref() else {
                continue;
            };
            let excluded = crate::hostlist::expand(excluded);
            let usable = service.is_some_and(|service| {
                let request = per_node(service);
                partition_list(service, facts).iter().any(|name| {
                    let Some(partition) = facts.partitions.iter().find(|p| p.name == *name) else {
                        return false;
                    };
                    let others = facts
                        .nodes
                        .iter()
                        .filter(|n| partition.nodes.contains(&n.name))
                        .filter(|n| !excluded.contains(&n.name))
                        .filter(|n| request.fits(n))
                        .filter(|n| n.cpus_idle.is_none_or(|idle| idle >= request.cpus))
                        .count();
                    others >= service.spec.resources.nodes as usize
                })
            });
            if !usable {
                backoff.exclude = None;
            }
        }
    }
}

/// One thing a partition cannot give a service, and the setting that asks for it.
struct Problem {
    /// Setting path, for [`Service::origin`].
    setting: &'static str,
    /// What is wrong, naming the partition.
    message: String,
}

/// What one replica asks of each of its nodes.
struct PerNode<'a> {
    /// CPUs (one task per node, `cpu` CPUs per task).
    cpus: u32,
    /// Memory in MiB, the setting it comes from and how to describe the request.
    memory: Option<(u64, &'static str, String)>,
    /// GPUs.
    gpus: u32,
    /// GPU type, if any.
    gpu_type: Option<&'a str>,
}

impl PerNode<'_> {
    /// How many GPUs of the requested type `node` has (all of them for an untyped request).
    fn gpus_on(&self, node: &NodeFacts) -> u32 {
        node.gpus
            .iter()
            .filter(|g| self.gpu_type.is_none() || g.kind.as_deref() == self.gpu_type)
            .map(|g| g.count)
            .sum()
    }

    /// Whether `node` has everything at once.
    fn fits(&self, node: &NodeFacts) -> bool {
        self.cpus <= node.cpus
            && self
                .memory
                .as_ref()
                .is_none_or(|(mb, ..)| *mb <= node.memory_mb)
            && self.gpus <= self.gpus_on(node)
    }

    /// `N GPUs of type T` / `N GPU`.
    fn gpu_words(&self) -> String {
        let plural = if self.gpus == 1 { "" } else { "s" };
        match self.gpu_type {
            Some(kind) => format!("{} GPU{plural} of type {kind}", self.gpus),
            None => format!("{} GPU{plural}", self.gpus),
        }
    }
}

/// Checks one service, adding its errors to `errors`.
fn check_service(service: &Service, facts: &ClusterFacts, errors: &mut Vec<SpecError>) {
    let spec = &service.spec;
    // The highest index, replicas - 1, must be below MaxArraySize.
    if let Some(max) = facts.max_array_size
        && service.replicas > max
    {
        errors.push(service.origin("replicas").error(format!(
            "asks for {} replicas, array indexes 0 to {}; the cluster's MaxArraySize is {max}, \
             so the most replicas a service can have is {max}",
            service.replicas,
            service.replicas - 1,
        )));
    }
    if facts.partitions.is_empty() {
        return;
    }
    if service.spec.slurm.partition.is_none() && facts.default_partition_unknown {
        return;
    }
    let request = per_node(service);
    let names = partition_list(service, facts);
    if names.is_empty() {
        errors.push(service.origin("slurm.partition").error(format!(
            "no partition is set and the cluster has no default partition; it has {}",
            partition_names(facts)
        )));
        return;
    }
    // Slurm rejects a job naming any unknown partition, even in a list with good ones.
    let unknown: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| !facts.partitions.iter().any(|p| p.name == *name))
        .collect();
    if !unknown.is_empty() {
        let (noun, list) = match unknown.as_slice() {
            [one] => ("partition", format!("{one:?}")),
            _ => ("partitions", format!("{:?}", unknown.join(","))),
        };
        errors.push(service.origin("slurm.partition").error(format!(
            "no {noun} {list}; the cluster has {}",
            partition_names(facts)
        )));
        return;
    }
    let mut all = Vec::new();
    let partitions = names
        .iter()
        .filter_map(|name| facts.partitions.iter().find(|p| p.name == *name));
    for partition in partitions {
        let problems = partition_problems(service, &request, partition, facts);
        if problems.is_empty() {
            return;
        }
        all.push(problems);
    }
    if let [problems] = all.as_slice() {
        for problem in problems {
            errors.push(
                service
                    .origin(problem.setting)
                    .error(problem.message.clone()),
            );
        }
    } else {
        let reasons: Vec<&str> = all.iter().flatten().map(|p| p.message.as_str()).collect();
        errors.push(service.origin("slurm.partition").error(format!(
            "none of the partitions {:?} can run it: {}",
            spec.slurm.partition.as_deref().unwrap_or_default(),
            reasons.join("; ")
        )));
    }
}

/// Returns why `partition` cannot run `service` (nothing if it can).
fn partition_problems(
    service: &Service,
    request: &PerNode<'_>,
    partition: &PartitionFacts,
    facts: &ClusterFacts,
) -> Vec<Problem> {
    let name = &partition.name;
    let res = &service.spec.resources;
    let label = if service.spec.slurm.partition.is_none() {
        format!("the default partition {name:?}")
    } else {
        format!("partition {name:?}")
    };
    let mut problems = Vec::new();
    let mut problem = |setting, message| problems.push(Problem { setting, message });

    // The partition's own limits.
    if let Some(max) = partition.max_cpus_per_node
        && request.cpus > max
    {
        problem(
            "resources.cpu",
            format!(
                "asks for {} CPUs per node; {label} allows at most {max} (MaxCPUsPerNode)",
                request.cpus
            ),
        );
    }
    if let (Some(max), Some((mb, setting, words))) =
        (partition.max_mem_per_node_mb, &request.memory)
        && *mb > max
    {
        problem(
            setting,
            format!("asks for {words}; {label} allows at most {max} MiB per node (MaxMemPerNode)"),
        );
    }
    if let Some(max) = partition.max_nodes
        && res.nodes > max
    {
        problem(
            "resources.nodes",
            format!(
                "asks for {} nodes; {label} allows at most {max} per job (MaxNodes)",
                res.nodes
            ),
        );
    }
    if let (Some(max), Some(minutes)) = (partition.max_time_minutes, res.time_limit)
        && minutes > max
    {
        problem(
            "resources.time_limit",
            format!(
                "asks for {}; {label} allows at most {max} minutes (MaxTime)",
                if minutes == crate::desired::UNLIMITED_MINUTES {
                    "no time limit (UNLIMITED)".to_owned()
                } else {
                    format!("a time limit of {minutes} minutes")
                }
            ),
        );
    }

    // What its nodes have.
    let nodes: Vec<&NodeFacts> = facts
        .nodes
        .iter()
        .filter(|n| partition.nodes.contains(&n.name))
        .collect();
    if nodes.is_empty() {
        problem("slurm.partition", format!("{label} has no nodes"));
        return problems;
    }
    let mut node_problem = false;
    if let Some(kind) = request.gpu_type
        && !nodes.iter().any(|n| request.gpus_on(n) > 0)
    {
        let mut kinds: Vec<&str> = nodes
            .iter()
            .flat_map(|n| n.gpus.iter().filter_map(|g| g.kind.as_deref()))
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        let has = if !kinds.is_empty() {
            format!("it has {}", kinds.join(", "))
        } else if nodes.iter().any(|n| !n.gpus.is_empty()) {
            "its GPUs have no type".to_owned()
        } else {
            "it has no GPUs".to_owned()
        };
        problem(
            "resources.gpu_type",
            format!("{label} has no GPU of type {kind}; {has}"),
        );
        node_problem = true;
    } else if request.gpus > 0 {
        let most = nodes.iter().map(|n| request.gpus_on(n)).max().unwrap_or(0);
        if request.gpus > most {
            let has = if most == 0 {
                format!("{label} has no GPUs")
            } else {
                format!("the most any node of {label} has is {most}")
            };
            problem(
                "resources.gpu",
                format!("asks for {} per node; {has}", request.gpu_words()),
            );
            node_problem = true;
        }
    }
    let most_cpus = nodes.iter().map(|n| n.cpus).max().unwrap_or(0);
    if request.cpus > most_cpus {
        problem(
            "resources.cpu",
            format!(
                "asks for {} CPUs per node; the most any node of {label} has is {most_cpus}",
                request.cpus
            ),
        );
        node_problem = true;
    }
    if let Some((mb, setting, words)) = &request.memory {
        let most = nodes.iter().map(|n| n.memory_mb).max().unwrap_or(0);
        if *mb > most {
            problem(
                setting,
                format!("asks for {words}; the most any node of {label} has is {most} MiB"),
            );
            node_problem = true;
        }
    }
    if node_problem {
        return problems;
    }
    let fitting = nodes.iter().filter(|n| request.fits(n)).count();
    if fitting == 0 {
        let mut wants = vec![format!("{} CPUs", request.cpus)];
        if let Some((mb, ..)) = &request.memory {
            wants.push(format!("{mb} MiB of memory"));
        }
        if request.gpus > 0 {
            wants.push(request.gpu_words());
        }
        problem(
            "resources",
            format!(
                "no node of {label} has {} at once, as each node of a replica needs",
                wants.join(", ")
            ),
        );
    } else if fitting < res.nodes as usize {
        problem(
            "resources.nodes",
            format!(
                "asks for {} nodes; {label} has {fitting} with what a replica needs per node",
                res.nodes
            ),
        );
    }
    problems
}

/// The cluster's partition names, for messages: `debug, gpu`.
fn partition_names(facts: &ClusterFacts) -> String {
    let names: Vec<&str> = facts.partitions.iter().map(|p| p.name.as_str()).collect();
    if names.is_empty() {
        "no partitions".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{Origin, ReplicaSpec, ResourceSpec, SlurmSpec};
    use std::collections::BTreeMap;

    /// Settings whose origins the test services record, each on its own line, so a test can
    /// tell which one an error names.
    const SETTINGS: [&str; 10] = [
        "recipe",
        "replicas",
        "resources",
        "resources.nodes",
        "resources.cpu",
        "resources.memory",
        "resources.memory_per_cpu",
        "resources.gpu",
        "resources.gpu_type",
        "resources.time_limit",
    ];

    /// The test cluster: node1, node2 with 4 a100, node3 with 4 h100, 16 CPUs and 16000 MiB
    /// each, in the default partition `debug`; plus `small` (node3, with limits) and `empty`.
    fn facts() -> ClusterFacts {
        let node = |name: &str, kind: &str| NodeFacts {
            name: name.into(),
            cpus: 16,
            memory_mb: 16_000,
            cpus_idle: None,
            gpus: vec![GpuFacts {
                kind: Some(kind.into()),
                count: 4,
            }],
        };
        ClusterFacts {
            partitions: vec![
                PartitionFacts {
                    name: "debug".into(),
                    is_default: true,
                    nodes: vec!["node1".into(), "node2".into(), "node3".into()],
                    ..PartitionFacts::default()
                },
                PartitionFacts {
                    name: "small".into(),
                    max_time_minutes: Some(60),
                    max_nodes: Some(1),
                    max_cpus_per_node: Some(8),
                    max_mem_per_node_mb: Some(4096),
                    nodes: vec!["node3".into()],
                    ..PartitionFacts::default()
                },
                PartitionFacts {
                    name: "empty".into(),
                    ..PartitionFacts::default()
                },
            ],
            nodes: vec![
                node("node1", "a100"),
                node("node2", "a100"),
                node("node3", "h100"),
            ],
            max_array_size: Some(1001),
            default_partition_unknown: false,
        }
    }

    /// One service `s.svc` (1 replica, 1 node, 1 CPU, nothing else), changed by `edit`.
    fn desired(edit: impl FnOnce(&mut Service)) -> Desired {
        let origins: BTreeMap<String, Origin> = SETTINGS
            .iter()
            .zip(1..)
            .map(|(setting, line)| {
                let origin = Origin {
                    file: "stacks/s.yaml".into(),
                    position: Some((line, 5)),
                    field: format!("services.svc.{setting}"),
                };
                (setting.to_string(), origin)
            })
            .collect();
        let spec = ReplicaSpec {
            container: None,
            setup: Vec::new(),
            image: None,
            command: Some("sleep infinity".into()),
            resources: ResourceSpec {
                nodes: 1,
                cpu: 1,
                memory: None,
                memory_per_cpu: None,
                gpu: 0,
                gpu_type: None,
                time_limit: None,
                cpu_bind: None,
            },
            environment: BTreeMap::new(),
            ports: vec![],
            slurm: SlurmSpec::default(),
            health: None,
            endpoint_env: Default::default(),
            secret_env: Default::default(),
        };
        let mut service = Service {
            recipe: "demo/svc".into(),
            replicas: 1,
            hash: spec.hash(),
            spec,
            restart: Default::default(),
            protect: false,
            update: Default::default(),
            origins,
            depends_on: Vec::new(),
            replace_on_endpoint_move: true,
            job: None,
        };
        edit(&mut service);
        let mut desired = Desired::default();
        desired
            .services
            .insert(ServiceAddr::new("s", "svc"), service);
        desired
    }

    /// Checks the one service against [`facts`]: each error as `field: message`.
    fn problems(edit: impl FnOnce(&mut Service)) -> Vec<String> {
        problems_with(&facts(), edit)
    }

    fn problems_with(facts: &ClusterFacts, edit: impl FnOnce(&mut Service)) -> Vec<String> {
        let desired = desired(edit);
        let address = ServiceAddr::new("s", "svc");
        check(&desired, &[&address], facts)
            .into_iter()
            .map(|e| {
                assert_eq!(e.file, std::path::Path::new("stacks/s.yaml"));
                assert!(e.position.is_some());
                format!("{}: {}", e.field.unwrap(), e.message)
            })
            .collect()
    }

    fn partition(s: &mut Service, name: &str) {
        s.spec.slurm.partition = Some(name.into());
    }

    #[test]
    fn a_request_that_fits_passes() {
        assert_eq!(problems(|_| {}), Vec::<String>::new());
        let fits = |s: &mut Service| {
            let r = &mut s.spec.resources;
            (r.nodes, r.cpu, r.gpu, r.gpu_type) = (2, 16, 4, Some("a100".into()));
            r.memory = Some("16000M".into());
            r.time_limit = Some(100_000);
            s.replicas = 1001;
        };
        assert_eq!(problems(fits), Vec::<String>::new());
    }

    #[test]
    fn unknown_partition() {
        assert_eq!(
            problems(|s| partition(s, "gpu")),
            [r#"services.svc.recipe: no partition "gpu"; the cluster has debug, small, empty"#]
        );
        assert!(problems(|s| partition(s, "small")).is_empty());
        // Slurm rejects a list naming an unknown partition, even if another could run the job.
        assert_eq!(
            problems(|s| partition(s, "debug,gpu")),
            [r#"services.svc.recipe: no partition "gpu"; the cluster has debug, small, empty"#]
        );
        assert_eq!(
            problems(|s| partition(s, "gpu, debug,cpu")),
            [
                r#"services.svc.recipe: no partitions "gpu,cpu"; the cluster has debug, small, empty"#
            ]
        );
    }

    #[test]
    fn a_partition_list_passes_if_any_partition_can_run_it() {
        // `small` allows 8 CPUs per node, `debug` nodes have 16.
        let twelve = |s: &mut Service, list: &str| {
            partition(s, list);
            s.spec.resources.cpu = 12;
        };
        assert!(problems(|s| twelve(s, "small,debug")).is_empty());
        assert!(problems(|s| twelve(s, "small, debug")).is_empty());
        // The reasons come in the list's order.
        assert_eq!(
            problems(|s| twelve(s, "small,empty")),
            [
                "services.svc.recipe: none of the partitions \"small,empty\" can run it: \
                 asks for 12 CPUs per node; partition \"small\" allows at most 8 \
                 (MaxCPUsPerNode); partition \"empty\" has no nodes"
            ]
        );
    }

    #[test]
    fn no_partition_means_the_default_one() {
        let mut facts = facts();
        assert_eq!(
            problems_with(&facts, |s| s.spec.resources.cpu = 17),
            [
                "services.svc.resources.cpu: asks for 17 CPUs per node; the most any node of \
                 the default partition \"debug\" has is 16"
            ]
        );
        facts.partitions[0].is_default = false;
        assert_eq!(
            problems_with(&facts, |_| {}),
            [
                "services.svc.recipe: no partition is set and the cluster has no default \
                 partition; it has debug, small, empty"
            ]
        );
        assert!(problems_with(&facts, |s| partition(s, "debug")).is_empty());
        // A backend that cannot tell the default checks no partition for such a service.
        facts.default_partition_unknown = true;
        assert!(problems_with(&facts, |s| s.spec.resources.cpu = 17).is_empty());
        assert_eq!(problems_with(&facts, |s| partition(s, "nope")).len(), 1);
    }

    #[test]
    fn a_partition_without_nodes() {
        assert_eq!(
            problems(|s| partition(s, "empty")),
            ["services.svc.recipe: partition \"empty\" has no nodes"]
        );
    }

    #[test]
    fn gpu_type_must_exist_in_the_partition() {
        let gpus = |s: &mut Service, kind: &str| {
            partition(s, "debug");
            s.spec.resources.gpu = 1;
            s.spec.resources.gpu_type = Some(kind.into());
        };
        assert_eq!(
            problems(|s| gpus(s, "v100")),
            [
                "services.svc.resources.gpu_type: partition \"debug\" has no GPU of type v100; \
                 it has a100, h100"
            ]
        );
        assert!(problems(|s| gpus(s, "h100")).is_empty());
        // `small` has node3 only: h100.
        assert_eq!(
            problems(|s| {
                gpus(s, "a100");
                partition(s, "small");
            }),
            [
                "services.svc.resources.gpu_type: partition \"small\" has no GPU of type a100; \
                 it has h100"
            ]
        );
    }

    #[test]
    fn gpus_per_node_of_the_type_or_in_total() {
        let gpus = |s: &mut Service, n: u32, kind: Option<&str>| {
            partition(s, "debug");
            s.spec.resources.gpu = n;
            s.spec.resources.gpu_type = kind.map(str::to_owned);
        };
        assert_eq!(
            problems(|s| gpus(s, 9, Some("a100"))),
            [
                "services.svc.resources.gpu: asks for 9 GPUs of type a100 per node; the most \
                 any node of partition \"debug\" has is 4"
            ]
        );
        assert!(problems(|s| gpus(s, 4, Some("a100"))).is_empty());
        assert_eq!(
            problems(|s| gpus(s, 5, None)),
            [
                "services.svc.resources.gpu: asks for 5 GPUs per node; the most any node of \
                 partition \"debug\" has is 4"
            ]
        );
        // Untyped requests count GPUs of every type on a node.
        let mut mixed = facts();
        mixed.nodes[0].gpus.push(GpuFacts {
            kind: Some("l4".into()),
            count: 2,
        });
        assert!(problems_with(&mixed, |s| gpus(s, 6, None)).is_empty());
        assert_eq!(problems_with(&mixed, |s| gpus(s, 7, None)).len(), 1);
        let mut cpu_only = facts();
        cpu_only.nodes.iter_mut().for_each(|n| n.gpus.clear());
        assert_eq!(
            problems_with(&cpu_only, |s| gpus(s, 1, None)),
            [
                "services.svc.resources.gpu: asks for 1 GPU per node; partition \"debug\" has no GPUs"
            ]
        );
        assert_eq!(
            problems_with(&cpu_only, |s| gpus(s, 1, Some("a100"))),
            [
                "services.svc.resources.gpu_type: partition \"debug\" has no GPU of type a100; \
                 it has no GPUs"
            ]
        );
    }

    #[test]
    fn cpus_per_node_against_nodes_and_max_cpus_per_node() {
        assert!(problems(|s| s.spec.resources.cpu = 16).is_empty());
        assert_eq!(problems(|s| s.spec.resources.cpu = 17).len(), 1);
        let small = |s: &mut Service, cpu: u32| {
            partition(s, "small");
            s.spec.resources.cpu = cpu;
        };
        assert!(problems(|s| small(s, 8)).is_empty());
        assert_eq!(
            problems(|s| small(s, 9)),
            [
                "services.svc.resources.cpu: asks for 9 CPUs per node; partition \"small\" \
                 allows at most 8 (MaxCPUsPerNode)"
            ]
        );
    }

    #[test]
    fn memory_per_node_against_nodes_and_max_mem_per_node() {
        let memory = |s: &mut Service, m: &str| s.spec.resources.memory = Some(m.into());
        assert!(problems(|s| memory(s, "16000")).is_empty());
        assert_eq!(
            problems(|s| memory(s, "16001M")),
            [
                "services.svc.resources.memory: asks for 16001M of memory per node (16001 MiB); \
                 the most any node of the default partition \"debug\" has is 16000 MiB"
            ]
        );
        assert_eq!(problems(|s| memory(s, "1T")).len(), 1);
        assert!(
            problems(|s| {
                partition(s, "small");
                memory(s, "4G");
            })
            .is_empty()
        );
        assert_eq!(
            problems(|s| {
                partition(s, "small");
                memory(s, "5G");
            }),
            [
                "services.svc.resources.memory: asks for 5G of memory per node (5120 MiB); \
                 partition \"small\" allows at most 4096 MiB per node (MaxMemPerNode)"
            ]
        );
    }

    #[test]
    fn memory_per_cpu_counts_every_cpu_of_the_node() {
        let per_cpu = |s: &mut Service, m: &str, cpu: u32| {
            s.spec.resources.memory_per_cpu = Some(m.into());
            s.spec.resources.cpu = cpu;
        };
        assert!(problems(|s| per_cpu(s, "1000M", 16)).is_empty());
        assert_eq!(
            problems(|s| per_cpu(s, "2G", 8)),
            [
                "services.svc.resources.memory_per_cpu: asks for 2G of memory per CPU, 16384 \
                 MiB per node with 8 CPUs; the most any node of the default partition \"debug\" \
                 has is 16000 MiB"
            ]
        );
    }

    #[test]
    fn each_node_must_have_everything_at_once() {
        // node1 has the CPUs, node3 the GPUs; no node has both.
        let mut facts = facts();
        facts.nodes[0].gpus.clear();
        facts.nodes[1].gpus.clear();
        facts.nodes[2].cpus = 4;
        let both = |s: &mut Service, cpu: u32| {
            s.spec.resources.cpu = cpu;
            s.spec.resources.gpu = 1;
            s.spec.resources.memory = Some("1G".into());
        };
        assert!(problems_with(&facts, |s| both(s, 4)).is_empty());
        assert_eq!(
            problems_with(&facts, |s| both(s, 8)),
            [
                "services.svc.resources: no node of the default partition \"debug\" has 8 \
                 CPUs, 1024 MiB of memory, 1 GPU at once, as each node of a replica needs"
            ]
        );
    }

    #[test]
    fn nodes_against_qualifying_nodes_and_max_nodes() {
        let nodes = |s: &mut Service, n: u32, kind: Option<&str>| {
            s.spec.resources.nodes = n;
            s.spec.resources.gpu = u32::from(kind.is_some());
            s.spec.resources.gpu_type = kind.map(str::to_owned);
        };
        assert!(problems(|s| nodes(s, 3, None)).is_empty());
        assert!(problems(|s| nodes(s, 2, Some("a100"))).is_empty());
        assert_eq!(
            problems(|s| nodes(s, 3, Some("a100"))),
            [
                "services.svc.resources.nodes: asks for 3 nodes; the default partition \
                 \"debug\" has 2 with what a replica needs per node"
            ]
        );
        assert_eq!(problems(|s| nodes(s, 4, None)).len(), 1);
        assert_eq!(
            problems(|s| {
                nodes(s, 2, None);
                partition(s, "small");
            }),
            [
                "services.svc.resources.nodes: asks for 2 nodes; partition \"small\" allows at \
                 most 1 per job (MaxNodes)",
                "services.svc.resources.nodes: asks for 2 nodes; partition \"small\" has 1 with \
                 what a replica needs per node"
            ]
        );
    }

    #[test]
    fn time_limit_against_max_time() {
        let time = |s: &mut Service, minutes: u32| {
            partition(s, "small");
            s.spec.resources.time_limit = Some(minutes);
        };
        assert!(problems(|s| time(s, 60)).is_empty());
        assert_eq!(
            problems(|s| time(s, 61)),
            [
                "services.svc.resources.time_limit: asks for a time limit of 61 minutes; \
                 partition \"small\" allows at most 60 minutes (MaxTime)"
            ]
        );
    }

    #[test]
    fn highest_replica_index_against_max_array_size() {
        assert!(problems(|s| s.replicas = 1001).is_empty());
        assert!(problems(|s| s.replicas = 0).is_empty());
        assert_eq!(
            problems(|s| s.replicas = 1002),
            [
                "services.svc.replicas: asks for 1002 replicas, array indexes 0 to 1001; the \
                 cluster's MaxArraySize is 1001, so the most replicas a service can have is 1001"
            ]
        );
        // Unknown MaxArraySize: no check; facts without partitions: the array size only.
        let mut facts = facts();
        facts.max_array_size = None;
        assert!(problems_with(&facts, |s| s.replicas = 5000).is_empty());
        let bare = ClusterFacts {
            max_array_size: Some(10),
            ..ClusterFacts::default()
        };
        assert!(problems_with(&bare, |s| s.spec.resources.cpu = 1000).is_empty());
        assert_eq!(problems_with(&bare, |s| s.replicas = 11).len(), 1);
    }

    #[test]
    fn only_the_named_services_are_checked_once_each() {
        let desired = desired(|s| s.spec.resources.cpu = 99);
        let svc = ServiceAddr::new("s", "svc");
        let other = ServiceAddr::new("s", "other");
        assert!(check(&desired, &[], &facts()).is_empty());
        assert!(check(&desired, &[&other], &facts()).is_empty());
        assert_eq!(check(&desired, &[&svc, &svc], &facts()).len(), 1);
    }

    /// A plan with one successor of `s.svc` that avoids `exclude`.
    fn successor_plan(exclude: &str) -> crate::plan::Plan {
        use crate::plan::{Action, Backoff, Change, Plan, Reason, ServicePlan};
        Plan {
            images: Vec::new(),
            owner: crate::desired::Owner::parse("o").unwrap(),
            services: vec![ServicePlan {
                endpoint_env: Default::default(),
                start_after: Vec::new(),
                start_after_jobs: Vec::new(),
                start_estimate: None,
                endpoint_moved: Vec::new(),
                service: ServiceAddr::new("s", "svc"),
                replicas_before: 0,
                replicas_after: 1,
                in_repo: true,
                spec_before: None,
                hash_before: None,
                spec_after: None,
                hash_after: None,
                diff: None,
                changes: vec![Change {
                    index: 0,
                    action: Action::Create,
                    reason: Reason::Ended,
                    job: None,
                    backoff: Some(Backoff {
                        restart: 1,
                        not_before: 10,
                        wait: 10,
                        last_failure: crate::observed::FailRecord {
                            state: "FAILED".into(),
                            exit: Some(1),
                            at: 0,
                        },
                        exclude: Some(exclude.into()),
                    }),
                    order: Default::default(),
                }],
                rolling_batch: None,
            }],
            source: None,
            not_pruned: vec![],
            warnings: vec![],
            waiting: vec![],
            held: vec![],
            rollouts: vec![],
            stopped: vec![],
            jobs: vec![],
        }
    }

    fn exclude_after_settling(
        desired: &Desired,
        facts: &ClusterFacts,
        exclude: &str,
    ) -> Option<String> {
        let mut plan = successor_plan(exclude);
        settle_excludes(&mut plan, desired, facts);
        plan.services[0].changes[0]
            .backoff
            .as_ref()
            .unwrap()
            .exclude
            .clone()
    }

    #[test]
    fn a_successor_avoids_its_node_only_where_other_nodes_can_run_it_now() {
        let plain = desired(|_| {});
        // Two other nodes of the default partition fit: avoid node3.
        assert_eq!(
            exclude_after_settling(&plain, &facts(), "node3").as_deref(),
            Some("node3")
        );
        // `small` has node3 only: nowhere else to go.
        let small = desired(|s| s.spec.slurm.partition = Some("small".into()));
        assert_eq!(exclude_after_settling(&small, &facts(), "node3"), None);
        // h100 GPUs are on node3 only.
        let h100 = desired(|s| {
            s.spec.resources.gpu = 1;
            s.spec.resources.gpu_type = Some("h100".into());
        });
        assert_eq!(exclude_after_settling(&h100, &facts(), "node3"), None);
        // The other nodes are full right now: the preference must not hold the restart back.
        let mut busy = facts();
        for node in &mut busy.nodes {
            node.cpus_idle = Some(if node.name == "node3" { 3 } else { 0 });
        }
        assert_eq!(exclude_after_settling(&plain, &busy, "node3"), None);
        busy.nodes[0].cpus_idle = Some(1);
        assert_eq!(
            exclude_after_settling(&plain, &busy, "node3").as_deref(),
            Some("node3")
        );
        // No facts: no exclusion.
        assert_eq!(
            exclude_after_settling(&plain, &ClusterFacts::default(), "node3"),
            None
        );
    }
}
