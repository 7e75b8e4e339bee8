//! Slurm names: partitions (and lists of them), QOS, accounts.

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
