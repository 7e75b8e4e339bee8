//! Cluster facts as observed state: partitions, nodes, GPUs and limits, read once per plan
//! that submits something, and the pure check of desired services against them. A request no
//! node of its partition can ever satisfy is a plan error naming the file, line and field,
//! never a job that pends forever.

/// What the cluster offers, as read from Slurm.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterFacts {
    /// Every partition.
    pub partitions: Vec<PartitionFacts>,
    /// Every node.
    pub nodes: Vec<NodeFacts>,
    /// Largest array index + 1 (`MaxArraySize`), when the backend could read it.
    pub max_array_size: Option<u32>,
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
    /// `CPUTot`.
    pub cpus: u32,
    /// `RealMemory`, in MiB.
    pub memory_mb: u64,
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
