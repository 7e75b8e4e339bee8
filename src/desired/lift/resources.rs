//! `resources:`: nodes, CPUs, memory, GPUs, time limit, CPU binding.

use super::*;

/// One layer's `resources:`, validated.
#[derive(Default)]
pub(super) struct ResourcesLayer {
    pub(super) nodes: Option<Set<u32>>,
    pub(super) cpu: Option<Set<u32>>,
    /// `memory` or `memory_per_cpu`.
    pub(super) memory: Option<Set<Memory>>,
    pub(super) gpu: Option<Set<u32>>,
    pub(super) gpu_type: Option<Set<String>>,
    pub(super) time_limit: Option<Set<u32>>,
    pub(super) cpu_bind: Option<Set<String>>,
}

/// The rule "a GPU type needs GPUs": the error for a `gpu_type` whose GPU count in force
/// (`gpu`, the layer's own or the recipe's) is none or 0. `gpu_invalid` says the layer wrote a
/// `gpu` that was already reported as invalid, so it is not judged twice; `recipe` names the
/// recipe when a stack's service sets the type.
pub(super) fn gpu_type_needs_gpus(
    gpu_type: &Set<String>,
    gpu: Option<&Set<u32>>,
    gpu_invalid: bool,
    recipe: Option<&str>,
) -> Option<SpecError> {
    if gpu_invalid || gpu.is_some_and(|gpu| gpu.value > 0) {
        return None;
    }
    let asks = match recipe {
        Some(recipe) => format!(", and this service asks for none (recipe {recipe:?})"),
        None => String::new(),
    };
    Some(gpu_type.origin.error(format!(
        "a GPU type needs GPUs{asks}: set `resources.gpu` to 1 or more, or drop `gpu_type`"
    )))
}

/// Validates `resources:`; `prefix` is prepended to field paths in errors.
pub(super) fn lift_resources(
    ctx: &mut Ctx,
    prefix: &str,
    resources: &raw::Resources,
) -> ResourcesLayer {
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
    let gpu_type = ctx.word_setting(&resources.gpu_type, res("gpu_type"), "a GPU type", |text| {
        text.chars().all(slurm_word)
    });
    let cpu_bind = ctx.word_setting(
        &resources.cpu_bind,
        res("cpu_bind"),
        "a CPU binding",
        |text| {
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ',' | ':'))
        },
    );
    ResourcesLayer {
        nodes,
        cpu,
        memory,
        gpu,
        gpu_type,
        time_limit,
        cpu_bind,
    }
}

/// A memory request: per node (`memory`) or per CPU (`memory_per_cpu`).
#[derive(Clone)]
pub(super) enum Memory {
    PerNode(String),
    PerCpu(String),
}

/// Validates a memory amount in Slurm's notation: digits with an optional K, M, G or T suffix.
pub(super) fn memory_amount(
    ctx: &mut Ctx,
    value: &Spanned<String>,
    field: &str,
) -> Option<Set<String>> {
    let text = value.value.trim().to_ascii_uppercase();
    if crate::desired::memory_mib(&text).is_some_and(|mib| mib > 0) {
        Some(Set {
            value: text,
            origin: ctx.origin(value.referenced, field),
        })
    } else {
        ctx.error(
            value.referenced,
            field,
            format!(
                "{:?} is not a memory amount such as 512M or 32G",
                value.value
            ),
        );
        None
    }
}
