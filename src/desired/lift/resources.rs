//! `resources:`: nodes, CPUs, memory, GPUs, time limit, CPU binding.

use super::*;

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
