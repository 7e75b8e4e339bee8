//! The `stackctl` binary: parses arguments, sets up logging, runs, maps errors to exit codes.

use clap::Parser;
use std::ffi::OsStr;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Usage errors exit 1, never clap's default 2, which `plan --detailed-exitcode` reserves
    // for "changes planned".
    let cli = match stackctl::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 1 } else { 0 });
        }
    };
    let ansi = log_colour(
        cli.no_color,
        std::env::var_os("NO_COLOR").as_deref(),
        std::io::stderr().is_terminal(),
    );
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STACKCTL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .without_time()
        .init();
    match stackctl::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            // Not eprintln!: a closed stderr must not turn an error into a panic.
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Returns whether log lines on stderr are coloured: only on a terminal, and never with
/// `--no-color` or a non-empty `NO_COLOR`.
fn log_colour(no_color_flag: bool, no_color_env: Option<&OsStr>, stderr_is_terminal: bool) -> bool {
    !no_color_flag && no_color_env.is_none_or(OsStr::is_empty) && stderr_is_terminal
}

#[cfg(test)]
mod tests {
    use super::log_colour;
    use std::ffi::OsStr;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_an_opt_out() {
        assert!(log_colour(false, None, true));
        assert!(
            log_colour(false, Some(OsStr::new("")), true),
            "empty NO_COLOR is unset"
        );
        assert!(!log_colour(false, None, false), "not a terminal");
        assert!(!log_colour(true, None, true), "--no-color");
        assert!(
            !log_colour(false, Some(OsStr::new("1")), true),
            "NO_COLOR=1"
        );
    }
}
