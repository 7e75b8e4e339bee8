//! `slurm:` and Slurm names: partitions (and lists of them), QOS, accounts.

use super::*;

/// One layer's `slurm:`, validated.
#[derive(Default)]
pub(super) struct SlurmLayer {
    pub(super) partition: Option<Set<String>>,
    pub(super) qos: Option<Set<String>>,
    pub(super) account: Option<Set<String>>,
}

/// Validates `slurm:`; `prefix` is prepended to field paths in errors.
pub(super) fn lift_slurm(ctx: &mut Ctx, prefix: &str, slurm: &raw::Slurm) -> SlurmLayer {
    let slurm_field = |name: &str| format!("{prefix}slurm.{name}");
    let partition = ctx.word_setting(
        &slurm.partition,
        slurm_field("partition"),
        "a Slurm partition name (or a comma-separated list of them)",
        is_partition_list,
    );
    let qos = ctx.word_setting(&slurm.qos, slurm_field("qos"), "a Slurm QOS name", |text| {
        text.chars().all(slurm_word)
    });
    let account = ctx.word_setting(
        &slurm.account,
        slurm_field("account"),
        "a Slurm account name",
        |text| text.chars().all(slurm_word),
    );
    SlurmLayer {
        partition,
        qos,
        account,
    }
}

/// Returns whether `c` may appear in a Slurm name (partition, QOS, account, GPU type).
pub(super) fn slurm_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// Returns whether `text` is a Slurm partition, or a comma-separated list of them (`gpu,debug`:
/// Slurm starts the job in whichever can run it first).
pub(super) fn is_partition_list(text: &str) -> bool {
    text.split(',')
        .all(|part| !part.is_empty() && part.chars().all(slurm_word))
}

/// Checks a partition setting: a partition name, or a comma-separated list of them.
pub(super) fn check_partition(text: &str) -> Result<(), String> {
    if !text.is_empty() && text.len() <= 256 && is_partition_list(text) {
        Ok(())
    } else {
        Err(format!(
            "{text:?} is not a Slurm partition name (or a comma-separated list of them)"
        ))
    }
}
