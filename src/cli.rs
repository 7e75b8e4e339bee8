//! Command definitions and one thin function per subcommand: load, observe, plan, render,
//! apply. Data (plans, scripts, JSON) goes to stdout; logs and prompts to stderr.

use crate::apply::{self, Progress};
use crate::live::{self, Marker, index_ranges};
use crate::plan::{self, Plan};
use crate::render::{Style, plan_json, plan_text, script, status};
use crate::slurm::{Backend, CliBackend};
use crate::spec::{self, BackendKind, Repo, ServiceAddr};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

/// GitOps for Slurm: plan and apply stacks of long-running services from a git repo.
#[derive(Debug, Parser)]
#[command(name = "stackctl", version, about)]
pub struct Cli {
    /// Run as if started in DIR (the repo root)
    #[arg(
        short = 'C',
        long = "directory",
        global = true,
        value_name = "DIR",
        default_value = "."
    )]
    pub dir: PathBuf,
    /// Never colour the output (NO_COLOR does the same)
    #[arg(long, global = true)]
    pub no_color: bool,
    /// What to do
    #[command(subcommand)]
    pub command: Commands,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Load and check every stack and recipe
    Validate,
    /// Print the batch script a service's replicas would get
    Render {
        /// The service, as STACK/SERVICE
        service: String,
    },
    /// Show what apply would change
    Plan {
        /// Exit 0 when there are no changes, 1 on error, 2 when there are changes
        #[arg(long)]
        detailed_exitcode: bool,
        /// Print the plan as JSON (format_version 1.0)
        #[arg(long)]
        json: bool,
    },
    /// Converge the cluster to the repo
    Apply {
        /// Skip the confirmation prompt
        #[arg(long)]
        auto_approve: bool,
    },
    /// Show desired and live replicas per service
    Status {
        /// Print the status as JSON
        #[arg(long)]
        json: bool,
    },
}

/// What a command asks the process to exit with.
pub type ExitCode = u8;

/// Runs a parsed command line and returns the exit code.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let color = !cli.no_color
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stdout().is_terminal();
    let style = Style { color };
    let dir = cli.dir.as_path();
    match cli.command {
        Commands::Validate => validate(dir),
        Commands::Render { service } => render(dir, &service),
        Commands::Plan {
            detailed_exitcode,
            json,
        } => plan(dir, style, detailed_exitcode, json),
        Commands::Apply { auto_approve } => apply(dir, style, auto_approve),
        Commands::Status { json } => status(dir, json),
    }
}

/// Loads the repo, or fails listing every problem found.
fn load(dir: &Path) -> Result<Repo> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    spec::load(dir, || crate::git::remote_url(dir)).map_err(|errors| {
        let count = errors.0.len();
        anyhow::anyhow!(
            "{errors}\n{count} problem{} found; nothing was planned or submitted",
            if count == 1 { "" } else { "s" }
        )
    })
}

fn backend(repo: &Repo) -> Box<dyn Backend> {
    match repo.settings.backend {
        BackendKind::Cli => Box::new(CliBackend::default()),
    }
}

/// Returns the submitting side's paths with `~` expanded. Slurm and apptainer need them
/// absolute; `image_dir` matters only when some image is a relative path.
fn script_context(repo: &Repo) -> Result<script::ScriptContext> {
    let home = std::env::var("HOME").ok().filter(|h| !h.is_empty());
    let expand = |value: &str| spec::expand_home(value, home.as_deref());
    let unexpanded = |name: &str, value: &str| {
        anyhow::anyhow!("cannot expand {name} {value:?} from stackctl.yaml: HOME is not set")
    };
    let log_dir = expand(&repo.settings.log_dir);
    if !log_dir.is_absolute() {
        return Err(unexpanded("log_dir", &repo.settings.log_dir));
    }
    let image_dir = expand(&repo.settings.image_dir);
    let needs_image_dir = repo
        .desired
        .services
        .values()
        .any(|s| s.spec.image.as_deref().is_some_and(script::is_in_image_dir));
    if needs_image_dir && !image_dir.is_absolute() {
        return Err(unexpanded("image_dir", &repo.settings.image_dir));
    }
    Ok(script::ScriptContext { log_dir, image_dir })
}

fn validate(dir: &Path) -> Result<ExitCode> {
    let repo = load(dir)?;
    let replicas: u32 = repo.desired.services.values().map(|s| s.replicas).sum();
    println!(
        "Valid: {} services, {replicas} replicas, owner \"{}\".",
        repo.desired.services.len(),
        repo.settings.owner
    );
    Ok(0)
}

fn render(dir: &Path, address: &str) -> Result<ExitCode> {
    let repo = load(dir)?;
    let (stack, service) = address
        .split_once('/')
        .context("expected STACK/SERVICE, e.g. inference/llm")?;
    let addr = ServiceAddr::new(stack, service);
    let Some(found) = repo.desired.services.get(&addr) else {
        let known: Vec<String> = repo
            .desired
            .services
            .keys()
            .map(|a| format!("{}/{}", a.stack, a.service))
            .collect();
        bail!(
            "no service {address}; the repo has: {}",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        );
    };
    let indexes: Vec<u32> = (0..found.replicas.max(1)).collect();
    let marker = Marker {
        owner: repo.settings.owner.clone(),
        service: addr.clone(),
        spec: found.hash.clone(),
        nonce: new_nonce(),
        indexes: index_ranges(&indexes),
    };
    print!(
        "{}",
        script::render(&addr, &found.spec, &marker, &script_context(&repo)?)
    );
    Ok(0)
}

/// Loads, observes and computes the plan.
fn make_plan(repo: &Repo, backend: &dyn Backend) -> Result<Plan> {
    let observed = crate::observe::observe(backend, &repo.settings.owner, &repo.desired)
        .context("reading the live jobs from Slurm")?;
    Ok(plan::compute(
        &repo.settings.owner,
        &repo.desired,
        &observed,
    ))
}

fn plan(dir: &Path, style: Style, detailed_exitcode: bool, json: bool) -> Result<ExitCode> {
    let repo = load(dir)?;
    let plan = make_plan(&repo, backend(&repo).as_ref())?;
    let text = if json {
        plan_json::render(&plan)
    } else {
        plan_text::render(&plan, style)
    };
    print_stdout(&text)?;
    Ok(if detailed_exitcode && !plan.is_empty() {
        2
    } else {
        0
    })
}

fn apply(dir: &Path, style: Style, auto_approve: bool) -> Result<ExitCode> {
    let repo = load(dir)?;
    let backend = backend(&repo);
    let plan = make_plan(&repo, backend.as_ref())?;
    print_stdout(&plan_text::render(&plan, style))?;
    if plan.is_empty() {
        return Ok(0);
    }
    if !auto_approve {
        if !std::io::stdin().is_terminal() {
            bail!(
                "refusing to apply: stdin is not a terminal, so nobody can confirm; pass --auto-approve to apply without asking"
            );
        }
        eprint!(
            "\nDo you want to perform these actions?\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: "
        );
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            eprintln!("\nApply cancelled.");
            return Ok(1);
        }
    }
    let ctx = script_context(&repo)?;
    std::fs::create_dir_all(&ctx.log_dir)
        .with_context(|| format!("creating the log directory {}", ctx.log_dir.display()))?;
    let mut progress = Printer;
    let report = apply::apply(
        &plan,
        &repo.desired,
        backend.as_ref(),
        &ctx,
        &mut new_nonce,
        &mut progress,
    );
    println!();
    if report.errors.is_empty() {
        println!(
            "Apply complete! Jobs: {} added, 0 changed, {} destroyed.",
            report.added, report.destroyed
        );
        Ok(0)
    } else {
        for error in &report.errors {
            eprintln!("error: {error}");
        }
        println!(
            "Apply incomplete: {} added, 0 changed, {} destroyed, {} failed. Run apply again to converge.",
            report.added,
            report.destroyed,
            report.errors.len()
        );
        Ok(1)
    }
}

fn status(dir: &Path, json: bool) -> Result<ExitCode> {
    let repo = load(dir)?;
    let backend = backend(&repo);
    let records = backend
        .list_jobs()
        .context("reading the live jobs from Slurm")?;
    let observed = live::Observed::from_records(records, &repo.settings.owner);
    let statuses = status::summarize(&repo.desired, &observed);
    print_stdout(&if json {
        status::render_json(&statuses)
    } else {
        status::render_text(&statuses)
    })?;
    Ok(0)
}

/// Prints apply progress to stdout.
struct Printer;

impl Progress for Printer {
    fn cancelled(&mut self, job_ids: &[live::JobId]) {
        let ids = live::compact_job_ids(job_ids).join(" ");
        println!("Cancelled {} jobs: {ids}", job_ids.len());
    }
    fn submitted(&mut self, service: &ServiceAddr, indexes: &str, array_id: u64) {
        println!("{service}[{indexes}]: submitted job array {array_id}");
    }
}

/// Writes to stdout; a closed pipe (`stackctl plan | head`) is not an error.
fn print_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Returns a fresh nonce: 12 hex digits of SHA-256 over the time, process id and a counter.
fn new_nonce() -> String {
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = format!(
        "{}:{}:{}",
        now.as_nanos(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    Sha256::digest(seed.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}
