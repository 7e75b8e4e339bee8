//! Whether a failed Slurm request may pass by itself, decided once per backend from
//! structured facts only. Pure: the backends hand in what they got, this module says which
//! [`Class`] it is.
//!
//! - **The CLI** ([`classify_cli`]): the command's exit status, and Slurm's error number.
//!   The Slurm commands never print the number itself, only its description
//!   (`slurm_strerror(errno)`), always at a fixed place of the line: `sbatch: error: Batch job
//!   submission failed: DESCRIPTION`, `slurm_load_jobs error: DESCRIPTION`, `scancel: error:
//!   Kill job error on job id N: DESCRIPTION`, `allocation failure: DESCRIPTION` (`sbatch
//!   --test-only`), `DESCRIPTION for job N` (`scontrol update`). The number is recovered by
//!   looking the whole description up in Slurm's own table ([`ERRNO_TABLE`], dumped from
//!   Slurm 22.05's `slurm_strerror`), an exact match of a whole field, never a search for
//!   words; a line whose field is not one of Slurm's descriptions yields no number. Over SSH,
//!   exit status 255 is ssh's own failure (the login node was not reached, or the connection
//!   broke while the command ran).
//! - **slurmrestd** ([`classify_rest`]): `errors[].error_number` (`error_code`, `errno` in some
//!   answers) as Slurm sends it; a request that got no answer at all (connection refused, a
//!   timeout) or a 5xx without any error number.
//!
//! Real outputs of the test cluster's commands and of slurmrestd, for an unreachable
//! controller (a copy of slurm.conf pointing at a closed port), an invalid partition, a
//! reservation that does not exist, a request no node can satisfy and a job Slurm does not
//! know, are kept in `tests/fixtures/slurm-errors/` and classified by this module's tests.

use super::ssh::SSH_FAILURE_STATUS;
use std::collections::HashMap;
use std::sync::OnceLock;

/// What a failed request means for whoever asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Slurm could not be reached, answered late or not in full, or said it cannot take the
    /// request now: a later try may succeed, and the request's effect may be unknown (a submit
    /// may have created its job), so a submit is looked up by its nonce before any retry.
    Transient,
    /// Slurm refused the request: it had no effect, and retrying the same request cannot help.
    Rejected,
}

/// Slurm 22.05's error table: `errno<TAB>description` lines, as `slurm_strerror` returns them.
pub const ERRNO_TABLE: &str = include_str!("slurm-errno-22.05.tsv");

/// `SLURM_ERROR` ("Unspecified error"): no reason given. slurmrestd 22.05 answers it both when
/// slurmctld cannot be reached (a listing, captured) and when slurmctld cannot verify the token.
pub const SLURM_ERROR: i64 = -1;

/// `ESLURM_INVALID_JOB_ID`: a job id Slurm no longer (or never) knew.
pub const ESLURM_INVALID_JOB_ID: i64 = 2017;

/// `ESLURM_JOB_HELD`: a submit that left its job held, reported beside its job id.
pub const ESLURM_JOB_HELD: i64 = 2042;

/// Returns whether Slurm error number `errno` says the request may succeed later: the
/// controller unreachable, a message lost or cut short, a socket timeout, or slurmctld saying
/// "try again" (busy, in standby). Every other number is a refusal.
pub fn errno_is_transient(errno: i64) -> bool {
    matches!(
        errno,
        // SLURM_ERROR: no reason given (see the constant); never taken for a refusal.
        SLURM_ERROR
            // EINTR, EAGAIN, ENETUNREACH, ENETRESET, ECONNABORTED, ECONNRESET, ETIMEDOUT,
            // ECONNREFUSED, EHOSTDOWN, EHOSTUNREACH (Linux numbers; slurm_strerror falls back
            // to strerror for them).
            | 4 | 11 | 101..=104 | 110..=113
            // SLURM_UNEXPECTED_MSG_ERROR (scontrol update with slurmctld away, captured) to
            // SLURM_COMMUNICATIONS_SHUTDOWN_ERROR.
            | 1000..=1004
            // SLURM_COMMUNICATIONS_MISSING_SOCKET_ERROR.
            | 1013
            // Newer Slurm: COMMUNICATIONS_REJECTED, QUIESCE/CONNECT/WRITE/READ_TIMEOUT,
            // DELAYED_ERROR, SLURM_SHUTTING_DOWN.
            | 1019..=1025
            // SLURMCTLD_COMMUNICATIONS_CONNECTION/SEND/RECEIVE/SHUTDOWN_ERROR, and newer
            // Slurm's BACKOFF and HARD_DROP.
            | 1800..=1805
            // ESLURM_ERROR_ON_DESC_TO_RECORD_COPY ("Unable to create job record, try again").
            | 2007
            // ESLURM_TRANSITION_STATE_NO_UPDATE ("… try again later").
            | 2020
            // ESLURM_IN_STANDBY_MODE.
            | 2027
            // ESLURM_JOB_SETTING_DB_INX ("… try again in a bit").
            | 2103
            // ESLURM_IN_STANDBY_USE_BACKUP.
            | 2131
            // SLURM_PROTOCOL_SOCKET_IMPL_ZERO_RECV_LENGTH … SLURM_PROTOCOL_SOCKET_IMPL_TIMEOUT
            // (5004), SLURM_PROTOCOL_SOCKET_ZERO_BYTES_SENT.
            | 5000..=5005
    )
}

/// The class of a set of Slurm error numbers: transient when any of them is.
fn class_of(errnos: impl IntoIterator<Item = i64>) -> Class {
    if errnos.into_iter().any(errno_is_transient) {
        Class::Transient
    } else {
        Class::Rejected
    }
}

/// The error number whose description is exactly `text`, per [`ERRNO_TABLE`].
pub fn errno_of_description(text: &str) -> Option<i64> {
    static BY_TEXT: OnceLock<HashMap<&'static str, i64>> = OnceLock::new();
    BY_TEXT
        .get_or_init(|| {
            ERRNO_TABLE
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (number, text) = l.split_once('\t')?;
                    Some((text, number.parse().ok()?))
                })
                .collect()
        })
        .get(text)
        .copied()
}

/// The Slurm error numbers `program` printed on stderr: for each line, without its
/// `program: error: ` tag, the description that is the whole line, the field after one of its
/// `": "` separators (the last field of `… failed: DESCRIPTION`), or the line before ` for
/// job ` (`DESCRIPTION for job N`). Pure.
pub fn cli_errnos(program: &str, stderr: &str) -> Vec<i64> {
    let tag = format!("{program}: error: ");
    let mut found = Vec::new();
    for line in stderr.lines() {
        let line = line.trim();
        let line = line.strip_prefix(tag.as_str()).unwrap_or(line);
        let mut fields = vec![line];
        fields.extend(
            line.match_indices(": ")
                .map(|(at, sep)| &line[at + sep.len()..]),
        );
        if let Some((before, _)) = line.split_once(" for job ") {
            fields.push(before);
        }
        if let Some(errno) = fields.into_iter().find_map(errno_of_description) {
            found.push(errno);
        }
    }
    found
}

/// Classifies a Slurm command that failed: `status` is its exit status (`None`: killed by a
/// signal), `via_ssh` whether it ran on a login node through ssh. An ssh failure (255) or a
/// killed command is transient (its effect is unknown); otherwise Slurm's error numbers decide
/// ([`errno_is_transient`]), and a failure that names no error number of Slurm's (a client-side
/// check such as `Invalid --time specification`) is a refusal. Pure.
pub fn classify_cli(program: &str, status: Option<i32>, stderr: &str, via_ssh: bool) -> Class {
    match status {
        None => Class::Transient,
        Some(SSH_FAILURE_STATUS) if via_ssh => Class::Transient,
        Some(_) => class_of(cli_errnos(program, stderr)),
    }
}

/// How a slurmrestd request ended, as far as classifying it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestOutcome<'a> {
    /// No answer: the connection failed or timed out.
    NoAnswer,
    /// An HTTP answer with this status and the error numbers of its `errors[]` (`None` for an
    /// error without one).
    Answer {
        /// The HTTP status.
        status: u16,
        /// Each error's number.
        errnos: &'a [Option<i64>],
    },
}

/// Classifies a failed slurmrestd request. No answer is transient; an answer is classified by
/// its error numbers ([`errno_is_transient`]); a 5xx that carries no error number is
/// transient (slurmrestd or a proxy failed, and the request's effect is unknown); anything
/// else (a 4xx, errors without numbers) is a refusal. Pure.
pub fn classify_rest(outcome: RestOutcome<'_>) -> Class {
    match outcome {
        RestOutcome::NoAnswer => Class::Transient,
        RestOutcome::Answer { status, errnos } => {
            let numbers: Vec<i64> = errnos.iter().flatten().copied().collect();
            if numbers.is_empty() {
                if (500..600).contains(&status) {
                    Class::Transient
                } else {
                    Class::Rejected
                }
            } else {
                class_of(numbers)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixtures(kind: &str) -> Vec<(String, PathBuf)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/slurm-errors")
            .join(kind);
        let mut names: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "exit" || e == "http"))
            .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_table_is_slurms_own() {
        assert_eq!(
            errno_of_description("Unable to contact slurm controller (connect failure)"),
            Some(1800)
        );
        assert_eq!(
            errno_of_description("Socket timed out on send/recv operation"),
            Some(5004)
        );
        assert_eq!(
            errno_of_description("Invalid partition name specified"),
            Some(2000)
        );
        assert_eq!(
            errno_of_description("Unable to create job record, try again"),
            Some(2007)
        );
        // Whole descriptions only: a word or a longer line is no description.
        assert_eq!(errno_of_description("Socket"), None);
        assert_eq!(errno_of_description("timed out"), None);
        assert_eq!(
            errno_of_description("Invalid partition name specified!"),
            None
        );
    }

    /// Every captured CLI failure of the test cluster, with the class it must get.
    #[test]
    fn captured_cli_failures_are_classified_by_their_error_number() {
        let expected = [
            ("sbatch_array_too_big", Some(2081), Class::Rejected),
            ("sbatch_bad_partition", Some(2000), Class::Rejected),
            ("sbatch_bad_reservation", Some(2053), Class::Rejected),
            ("sbatch_too_many_gpus", Some(2014), Class::Rejected),
            ("sbatch_too_much_mem", Some(2014), Class::Rejected),
            ("sbatch_unreach", Some(1800), Class::Transient),
            ("scancel_unreach", Some(1800), Class::Transient),
            ("scontrol_batch_script_unknown", Some(2017), Class::Rejected),
            ("scontrol_config_unreach", Some(1800), Class::Transient),
            ("scontrol_partition_unreach", Some(1800), Class::Transient),
            ("scontrol_update_unknown", Some(2017), Class::Rejected),
            ("scontrol_update_unreach", Some(1000), Class::Transient),
            ("squeue_jobs_unknown", Some(2017), Class::Rejected),
            ("squeue_unreach", Some(1800), Class::Transient),
            ("testonly_bad_partition", Some(2000), Class::Rejected),
            ("testonly_too_big", Some(2014), Class::Rejected),
            ("testonly_unreach", Some(1800), Class::Transient),
        ];
        let found = fixtures("cli");
        assert_eq!(
            found.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            expected.iter().map(|(n, _, _)| *n).collect::<Vec<_>>(),
            "every fixture has its expectation"
        );
        for ((name, path), (_, errno, class)) in found.iter().zip(expected) {
            let status: i32 = std::fs::read_to_string(path)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let stderr = std::fs::read_to_string(path.with_extension("stderr")).unwrap();
            let program = name.split('_').next().unwrap();
            let program = if program == "testonly" {
                "sbatch"
            } else {
                program
            };
            assert_eq!(
                cli_errnos(program, &stderr).last().copied(),
                errno,
                "{name}: {stderr}"
            );
            // `scontrol write batch_script` exits 0 for a job it does not know: no failure.
            if status != 0 {
                assert_eq!(
                    classify_cli(program, Some(status), &stderr, false),
                    class,
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn ssh_failures_and_killed_commands_are_transient_and_unknown_text_a_refusal() {
        let refused = "ssh: connect to host h port 1: Connection refused\n";
        assert_eq!(
            classify_cli("sbatch", Some(255), refused, true),
            Class::Transient
        );
        // Without ssh, 255 is just the command's status: Slurm's number decides.
        assert_eq!(
            classify_cli(
                "sbatch",
                Some(255),
                "Host key verification failed.\n",
                false
            ),
            Class::Rejected
        );
        assert_eq!(classify_cli("sbatch", None, "", false), Class::Transient);
        // Words alone never make a failure transient.
        assert_eq!(
            classify_cli(
                "sbatch",
                Some(1),
                "sbatch: error: Invalid --time specification: timed out Socket\n",
                false
            ),
            Class::Rejected
        );
        // The message the word list used to catch, as sbatch prints it: by its number.
        assert_eq!(
            classify_cli(
                "sbatch",
                Some(1),
                "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation\n",
                false
            ),
            Class::Transient
        );
    }

    /// Every captured slurmrestd error body, with the class it must get.
    #[test]
    fn captured_rest_failures_are_classified_by_error_number() {
        let expected = [
            ("bad_partition", vec![Some(2000)], Class::Rejected),
            ("bad_reservation", vec![Some(2053)], Class::Rejected),
            // A token slurmctld cannot verify: SLURM_ERROR, as an unreachable listing.
            ("bad_token", vec![Some(-1)], Class::Transient),
            ("delete_unknown", vec![Some(2017)], Class::Rejected),
            ("too_big", vec![Some(2014)], Class::Rejected),
            ("unreach_delete", vec![Some(1800)], Class::Transient),
            ("unreach_jobs", vec![Some(-1)], Class::Transient),
            ("unreach_partitions", vec![Some(-1)], Class::Transient),
            ("unreach_submit", vec![Some(1800)], Class::Transient),
            ("unreach_update", vec![Some(1000)], Class::Transient),
            ("update_unknown", vec![Some(2017)], Class::Rejected),
        ];
        let found = fixtures("rest");
        assert_eq!(
            found.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            expected.iter().map(|(n, _, _)| *n).collect::<Vec<_>>(),
        );
        for ((name, path), (_, numbers, class)) in found.iter().zip(expected) {
            let status: u16 = std::fs::read_to_string(path)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let body: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(path.with_extension("json")).unwrap(),
            )
            .unwrap();
            let errnos: Vec<Option<i64>> = super::super::rest::wire::errors_of(&body)
                .iter()
                .map(|e| e.number)
                .collect();
            assert_eq!(errnos, numbers, "{name}");
            assert_eq!(
                classify_rest(RestOutcome::Answer {
                    status,
                    errnos: &errnos
                }),
                class,
                "{name}"
            );
        }
        assert_eq!(classify_rest(RestOutcome::NoAnswer), Class::Transient);
        let none: &[Option<i64>] = &[];
        assert_eq!(
            classify_rest(RestOutcome::Answer {
                status: 502,
                errnos: none
            }),
            Class::Transient
        );
        assert_eq!(
            classify_rest(RestOutcome::Answer {
                status: 400,
                errnos: &[None]
            }),
            Class::Rejected
        );
    }
}
