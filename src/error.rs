//! The one error type the commands end with, and the documented exit code of each of its
//! kinds. The kind is decided here, once, from the typed errors below (the reconcile pass's,
//! the lock's, Slurm's: [`crate::slurm::failure`] classified those); the binary only maps a
//! kind to its code ([`ErrorKind::exit_code`]). Messages keep their anyhow context chain.

use crate::lock::LockError;
use crate::reconcile;
use crate::slurm::SlurmError;

/// The exit code of success.
pub const EXIT_OK: u8 = 0;

/// The exit code of `plan --detailed-exitcode` when the plan has changes (as Terraform's).
pub const EXIT_CHANGES: u8 = 2;

/// What kind of failure ended a command; each kind has its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The repo, a file, the command line or other input is invalid, or a failure no other
    /// kind covers (Slurm refused a request, a rollout stopped): exit 1.
    Invalid,
    /// A safety rule refused the plan (protect, `--max-destroy`, destroy-all, a service no
    /// node can run); nothing was done: exit 3.
    Refused,
    /// Another apply holds this owner's lock (after `--lock-timeout`, if any); nothing was
    /// done: exit 4.
    LockHeld,
    /// Slurm could not be reached, timed out or said to try again; a later run may succeed:
    /// exit 5.
    Unreachable,
    /// An apply did some of its steps and failed others; the report lists both, and a re-run
    /// starts from there: exit 6.
    PartialApply,
    /// A saved plan no longer matches the repo, the live jobs, this stackctl or this owner;
    /// nothing was done: exit 7.
    StalePlan,
}

impl ErrorKind {
    /// Every kind, in the order of their codes.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Invalid,
        ErrorKind::Refused,
        ErrorKind::LockHeld,
        ErrorKind::Unreachable,
        ErrorKind::PartialApply,
        ErrorKind::StalePlan,
    ];

    /// The process exit code of this kind.
    pub const fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Invalid => 1,
            ErrorKind::Refused => 3,
            ErrorKind::LockHeld => 4,
            ErrorKind::Unreachable => 5,
            ErrorKind::PartialApply => 6,
            ErrorKind::StalePlan => 7,
        }
    }

    /// The kind of `error`: the first typed error of its chain that says one, else
    /// [`ErrorKind::Invalid`].
    pub fn of(error: &anyhow::Error) -> ErrorKind {
        error
            .chain()
            .find_map(|e| {
                if let Some(e) = e.downcast_ref::<reconcile::Error>() {
                    return Some(of_reconcile(e));
                }
                if let Some(e) = e.downcast_ref::<LockError>() {
                    return Some(of_lock(e));
                }
                e.downcast_ref::<SlurmError>().map(of_slurm)
            })
            .unwrap_or(ErrorKind::Invalid)
    }

    /// The kind of an apply that ended incomplete: some steps done ([`ErrorKind::PartialApply`]),
    /// or none, when every failure may pass by itself ([`ErrorKind::Unreachable`]) or some
    /// cannot ([`ErrorKind::Invalid`]).
    pub fn of_incomplete_apply(report: &crate::apply::ApplyReport) -> ErrorKind {
        if !report.done.is_empty() {
            ErrorKind::PartialApply
        } else if report.errors.iter().all(|e| e.retryable) {
            ErrorKind::Unreachable
        } else {
            ErrorKind::Invalid
        }
    }
}

fn of_slurm(error: &SlurmError) -> ErrorKind {
    if error.is_transient() {
        ErrorKind::Unreachable
    } else {
        ErrorKind::Invalid
    }
}

fn of_lock(error: &LockError) -> ErrorKind {
    match error {
        LockError::Held { .. } => ErrorKind::LockHeld,
        LockError::Slurm(e) => of_slurm(e),
        _ => ErrorKind::Invalid,
    }
}

fn of_reconcile(error: &reconcile::Error) -> ErrorKind {
    match error {
        reconcile::Error::Config { .. } => ErrorKind::Invalid,
        reconcile::Error::Refused { .. } => ErrorKind::Refused,
        reconcile::Error::Stale { .. } => ErrorKind::StalePlan,
        reconcile::Error::Lock(e) => of_lock(e),
        reconcile::Error::Slurm { cause, .. } => of_slurm(cause),
    }
}

/// A failed command: its kind, and the error with its context chain.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    source: anyhow::Error,
}

impl Error {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, source: anyhow::Error) -> Error {
        Error { kind, source }
    }

    /// Its kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl From<anyhow::Error> for Error {
    fn from(source: anyhow::Error) -> Error {
        Error {
            kind: ErrorKind::of(&source),
            source,
        }
    }
}

impl From<reconcile::Error> for Error {
    fn from(source: reconcile::Error) -> Error {
        anyhow::Error::from(source).into()
    }
}

impl std::fmt::Display for Error {
    /// The message with its whole context chain, on one line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.source)
    }
}

/// The exit codes, as `stackctl --help` and the man page list them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success (plan: with --detailed-exitcode, no changes)
  1    invalid repo, file, command line or input; or a failure no other code covers
  2    plan --detailed-exitcode: the plan has changes
  3    refused by a safety rule (protect, --max-destroy, destroy-all, unschedulable); nothing done
  4    another apply holds the lock (after --lock-timeout); nothing done
  5    Slurm unreachable, timed out or busy; a later run may succeed
  6    apply incomplete: some steps done, others failed (the report lists both)
  7    saved plan stale (repo, live jobs, stackctl version or owner changed); nothing done
  130  interrupted (128 + the signal: 130 for Ctrl-C, 143 for SIGTERM)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_never_the_success_or_changes_codes() {
        let mut codes: Vec<u8> = ErrorKind::ALL.iter().map(|k| k.exit_code()).collect();
        assert!(!codes.contains(&EXIT_OK) && !codes.contains(&EXIT_CHANGES));
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), ErrorKind::ALL.len(), "{codes:?}");
    }

    #[test]
    fn the_help_lists_every_code() {
        for code in ErrorKind::ALL
            .iter()
            .map(|k| k.exit_code())
            .chain([EXIT_OK, EXIT_CHANGES])
        {
            assert!(
                EXIT_CODES_HELP
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{code} "))),
                "{code} in {EXIT_CODES_HELP}"
            );
        }
    }

    #[test]
    fn an_incomplete_apply_is_partial_once_anything_was_done() {
        let failure = |retryable| crate::apply::ApplyError {
            message: "s.web[0]: failed".into(),
            retryable,
            interrupted: false,
        };
        let mut report = crate::apply::ApplyReport {
            errors: vec![failure(true)],
            ..Default::default()
        };
        assert_eq!(
            ErrorKind::of_incomplete_apply(&report),
            ErrorKind::Unreachable
        );
        report.errors.push(failure(false));
        assert_eq!(ErrorKind::of_incomplete_apply(&report), ErrorKind::Invalid);
        report.done.push("s.web[1]: submitted job 7".into());
        assert_eq!(
            ErrorKind::of_incomplete_apply(&report),
            ErrorKind::PartialApply
        );
    }

    fn kind(error: impl Into<anyhow::Error>) -> ErrorKind {
        Error::from(error.into()).kind()
    }

    #[test]
    fn kinds_come_from_the_typed_errors_in_the_chain() {
        let message = || "m".to_owned();
        assert_eq!(
            kind(reconcile::Error::Config { message: message() }),
            ErrorKind::Invalid
        );
        assert_eq!(
            kind(reconcile::Error::Refused { message: message() }),
            ErrorKind::Refused
        );
        assert_eq!(
            kind(reconcile::Error::Stale { message: message() }),
            ErrorKind::StalePlan
        );
        let unreachable = || SlurmError::Unreachable {
            command: "squeue".into(),
            message: message(),
        };
        let refused = || SlurmError::Failed {
            command: "sbatch".into(),
            message: message(),
        };
        assert_eq!(
            kind(reconcile::Error::Slurm {
                context: "listing",
                cause: unreachable()
            }),
            ErrorKind::Unreachable
        );
        assert_eq!(
            kind(reconcile::Error::Slurm {
                context: "listing",
                cause: refused()
            }),
            ErrorKind::Invalid
        );
        assert_eq!(
            kind(reconcile::Error::Lock(LockError::Slurm(unreachable()))),
            ErrorKind::Unreachable
        );
        // Context added on the way up keeps the kind; plain messages are Invalid.
        let wrapped = anyhow::Error::from(reconcile::Error::Refused { message: message() })
            .context("while applying");
        assert_eq!(Error::from(wrapped).kind(), ErrorKind::Refused);
        assert_eq!(
            Error::from(anyhow::Error::from(unreachable()).context("status")).kind(),
            ErrorKind::Unreachable
        );
        assert_eq!(kind(anyhow::anyhow!("bad")), ErrorKind::Invalid);
    }
}
