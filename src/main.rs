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
    // there is one thread and the environment may change (see init_git_without_ca_bundle).
    // The others use libgit2 only to derive a missing owner, and skip OpenSSL's set-up (4 ms)
    // when stackctl.yaml names the owner.
    if matches!(
        cli.command,
        stackctl::cli::Commands::Plan { .. }
            | stackctl::cli::Commands::Apply { .. }
            | stackctl::cli::Commands::Destroy { .. }
            | stackctl::cli::Commands::Run { .. }
            | stackctl::cli::Commands::Watch(_)
    ) {
        init_git_without_ca_bundle();
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

/// Initialises libgit2 without parsing the system's CA bundle. libgit2 sets up OpenSSL when
/// it starts and OpenSSL then reads every certificate of `SSL_CERT_FILE` (about 30 ms), which
/// plan, apply and validate never use: they read the local checkout only. So libgit2 starts
/// here with `SSL_CERT_FILE` pointing at an empty file, then the variable is restored (children
/// such as sbatch and the jobs inherit the caller's environment unchanged). The certificate
/// directory (hashed, read only when a certificate is checked) stays configured, and `watch`
/// loads the bundle itself before its first fetch (`watch::git_sync::load_ca_certificates`).
#[allow(unsafe_code)]
fn init_git_without_ca_bundle() {
    const VARS: [&str; 2] = ["SSL_CERT_FILE", "SSL_CERT_DIR"];
    let saved = VARS.map(std::env::var_os);
    // SAFETY: called from main right after the arguments are parsed, before any other thread
    // exists, so no thread can read the environment while it changes.
    unsafe { std::env::set_var("SSL_CERT_FILE", "/dev/null") };
    // Any libgit2 call starts it once per process; caching is on by default, so this one
    // changes nothing else.
    git2::opts::enable_caching(true);
    for (name, value) in VARS.iter().zip(saved) {
        // SAFETY: as above, still before any other thread exists.
        unsafe {
            match value {
                Some(value) => std::env::set_var(name, value),
                None => std::env::remove_var(name),
            }
        }
    }
}
