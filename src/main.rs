//! The `stackctl` binary: parses arguments, sets up logging, runs, maps an error's kind to its
//! exit code (`stackctl::error`).

use clap::Parser;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Usage errors exit 1, never clap's default 2, which `plan --detailed-exitcode` reserves
    // for "changes planned".
    let cli = match stackctl::cli::Cli::try_parse_from(stackctl::cli::normalize_args(
        std::env::args_os(),
    )) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 1 } else { 0 });
        }
    };
    // The commands that always read the checkout's commit (or fetch) start libgit2 here, while
    // there is one thread and the environment may change (see git::init_without_ca_bundle).
    // `plan` starts it itself, once its job listing is running (OpenSSL's set-up costs about as
    // much as a short listing). The others use libgit2 only to derive a missing owner, and
    // skip OpenSSL's set-up when stackctl.yaml names the owner.
    if matches!(
        cli.command,
        stackctl::cli::Commands::Apply { .. }
            | stackctl::cli::Commands::Destroy { .. }
            | stackctl::cli::Commands::Run { .. }
            | stackctl::cli::Commands::Watch(_)
    ) {
        stackctl::git::init_without_ca_bundle();
    }
    let ansi = stackctl::cli::colour_wanted(
        cli.no_color,
        std::env::var_os("NO_COLOR").as_deref(),
        std::io::stderr().is_terminal(),
    );
    // watch reports each reconcile at info; the other commands only warn.
    let default_level = match cli.command {
        stackctl::cli::Commands::Watch(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STACKCTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        stackctl::cli::LogFormat::Json => logs.json().with_current_span(false).init(),
        // Watch runs for days: its lines carry the time. One-shot commands stay terse.
        stackctl::cli::LogFormat::Human if default_level == "info" => logs.with_ansi(ansi).init(),
        stackctl::cli::LogFormat::Human => logs.with_ansi(ansi).without_time().init(),
    }
    match stackctl::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            // Not eprintln!: a closed stderr must not turn an error into a panic.
            let _ = writeln!(std::io::stderr(), "error: {error}");
            // The kind was decided below; here it only becomes its documented code.
            ExitCode::from(error.kind().exit_code())
        }
    }
}
