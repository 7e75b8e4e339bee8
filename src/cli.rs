//! Command definitions and one thin function per subcommand: parse, call the reconcile pass,
//! prompt, print. Data (plans, scripts, JSON) goes to stdout; logs, notes and prompts to
//! stderr.

use crate::apply::Progress;
use crate::desired::{Repo, ServiceAddr};
use crate::observed;
use crate::plan::scope::{Scope, Selector};
use crate::reconcile::{self, ApplyOptions, DriveEnd, PlanOptions, Planned};
use crate::render::endpoints::{self, Format};
use crate::render::{Style, plan_json, plan_markdown, plan_text, script, status};
use crate::saved;
use crate::slurm::Backend;
use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// GitOps for Slurm: plan and apply stacks of long-running services from a git repo.
#[derive(Debug, Parser)]
#[command(name = "stackctl", version, about, after_help = crate::error::EXIT_CODES_HELP)]
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
    /// How log lines on stderr look: `human`, or `json` (one object per line) for collectors
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// What to do
    #[command(subcommand)]
    pub command: Commands,
}

/// How `plan` prints the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    /// For people on a terminal.
    Text,
    /// The versioned JSON document.
    Json,
    /// Markdown for a pull-request comment.
    Markdown,
}

/// Returns the arguments with Terraform's single-dash `-out FILE` / `-out=FILE` spelled
/// `--out`, which is what the parser knows.
pub fn normalize_args(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    args.into_iter()
        .map(|arg| match arg.to_str() {
            Some("-out") => "--out".into(),
            Some(text) if text.starts_with("-out=") => format!("-{text}").into(),
            _ => arg,
        })
        .collect()
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Load and check every stack and recipe
    Validate,
    /// Print the batch script a service's replicas would get
    Render {
        /// The service, as STACK/SERVICE or STACK.SERVICE
        service: String,
    },
    /// Show what apply would change
    Plan {
        /// Exit 0 when there are no changes, 2 when there are changes (another code on error,
        /// see `stackctl --help`)
        #[arg(long)]
        detailed_exitcode: bool,
        /// Print the plan as JSON (the same as --format json; format_version 1.7, described in docs/plan-json.md)
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// Print the plan as text, json, or markdown (for a pull-request comment)
        #[arg(long, value_enum, value_name = "FORMAT")]
        format: Option<PlanFormat>,
        /// Also save the plan to FILE (relative to -C), for `stackctl apply FILE`; `-out FILE`
        /// works too
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Limits on what the plan may cancel
        #[command(flatten)]
        belt: BeltArgs,
    },
    /// Converge the cluster to the repo, or execute a saved plan
    Apply {
        /// A plan saved by `stackctl plan --out FILE` (relative to -C): executed without a
        /// prompt, and refused when the repo or the live replicas changed since
        #[arg(value_name = "FILE")]
        plan_file: Option<PathBuf>,
        /// Skip the confirmation prompt
        #[arg(long)]
        auto_approve: bool,
        /// How long to wait for another apply's lock (e.g. 60s, 5m); 0s fails at once
        #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
        lock_timeout: Duration,
        /// Return only when every desired replica is ready (or running, without a health
        /// check); fail after TIMEOUT (default 15m) listing those that are not
        #[arg(long, value_name = "TIMEOUT", num_args = 0..=1, require_equals = true, default_missing_value = "15m", value_parser = parse_duration)]
        wait: Option<Duration>,
        /// Limits on what the apply may cancel
        #[command(flatten)]
        belt: BeltArgs,
    },
    /// Cancel the jobs this owner runs (or only the --target services), after showing the
    /// plan and asking; protected services are refused
    Destroy {
        /// Skip the confirmation prompt
        #[arg(long)]
        auto_approve: bool,
        /// Destroy only STACK or STACK/SERVICE (repeatable)
        #[arg(long, value_name = "STACK[/SERVICE]", value_parser = parse_selector)]
        target: Vec<Selector>,
        /// How long to wait for another apply's lock (e.g. 60s, 5m); 0s fails at once
        #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
        lock_timeout: Duration,
    },
    /// Print a saved plan with when, from which commit and by which version it was made
    Show {
        /// The saved plan file (relative to -C)
        file: PathBuf,
        /// Print the plan as JSON (as `plan --json`); the header goes to stderr
        #[arg(long)]
        json: bool,
    },
    /// Show desired and live replicas per service
    Status {
        /// Print the status as JSON
        #[arg(long)]
        json: bool,
        /// Redraw the status every interval until Ctrl-C
        #[arg(long)]
        watch: bool,
        /// How often `--watch` redraws
        #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_interval, requires = "watch")]
        interval: Duration,
    },
    /// List where the ready replicas of each service serve
    Endpoints {
        /// Only this stack, or one service: STACK, STACK/SERVICE or STACK.SERVICE
        target: Option<String>,
        /// Print JSON (the same as --format json)
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// Print in FORMAT: json, env, prometheus-sd, traefik or nginx
        #[arg(long, value_name = "FORMAT")]
        format: Option<Format>,
    },
    /// Print a replica's log file
    Logs {
        /// The service, as STACK/SERVICE or STACK.SERVICE; `image/NAME` for an image's build log
        service: String,
        /// The replica index
        #[arg(long, default_value_t = 0)]
        replica: u32,
        /// How many of the last lines to print
        #[arg(long, value_name = "N", default_value_t = 50)]
        tail: usize,
        /// Keep printing appended lines until Ctrl-C, or until the job ended and the file
        /// stopped growing
        #[arg(short, long)]
        follow: bool,
        /// The job's stderr instead of its stdout
        #[arg(long)]
        stderr: bool,
    },
    /// List the images built under image_dir: runtime, definition hash, size, when, used by
    Images {
        /// Remove the built images no service of this repo uses (image_dir may be shared
        /// with other repos: prune from each, or keep separate image_dirs)
        #[arg(long)]
        prune: bool,
    },
    /// Keep the cluster converged to a git branch (or local files), healing drift
    Watch(WatchArgs),
    /// Scaffold a repo in DIR (default: -C): stackctl.yaml, a recipe and a stack; never
    /// overwrites a file
    Init {
        /// Where to create the files (relative to -C)
        #[arg(value_name = "DIR")]
        path: Option<PathBuf>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell)
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `stackctl man > stackctl.1`
    Man,
    /// Run a one-shot job (`kind: job`) again now, under the apply lock (like `helm test`)
    Run {
        /// The job, as STACK/JOB or STACK.JOB
        job: String,
        /// How long to wait for another apply's lock (e.g. 60s, 5m); 0s fails at once
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0s")]
        lock_timeout: Duration,
    },
    /// List a one-shot job's runs: job id, commit, spec, state, exit code, start, duration
    /// and metrics (results.json), each with its change against the previous run
    Results {
        /// The job, as STACK/JOB or STACK.JOB
        job: String,
        /// Print JSON (the same as --format json)
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// Print as text, json, or markdown (for a pull-request comment)
        #[arg(long, value_name = "FORMAT")]
        format: Option<PlanFormat>,
        /// Only the last N runs (compared with the runs before them all the same)
        #[arg(long, value_name = "N")]
        last: Option<usize>,
    },
    /// Remove a lock left by an apply that can no longer release it
    ForceUnlock {
        /// The lock id that a refused apply or a plan names
        lock_id: String,
    },
    /// Encrypt a secret into the repo, or list the secrets (never their values)
    Secret {
        /// What to do
        #[command(subcommand)]
        command: SecretCommand,
    },
}

/// `stackctl secret …`.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Read a value from stdin (not echoed on a terminal) and write secrets/NAME.age,
    /// encrypted to every `age.recipients` key of stackctl.yaml
    Set {
        /// The secret's name, as under `secrets:` in stackctl.yaml
        name: String,
    },
    /// List the secrets of stackctl.yaml: their source and the services using them
    List,
}

/// The safety belt of `plan` and `apply`: a plan over a limit is refused (exit 3, nothing
/// done).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BeltArgs {
    /// Refuse to cancel more than N jobs without a ready successor (destroys and replaces)
    #[arg(long, value_name = "N")]
    max_destroy: Option<usize>,
    /// Allow a plan that cancels every job this owner runs and submits none (e.g. an
    /// emptied stacks/)
    #[arg(long)]
    allow_destroy_all: bool,
    /// Plan only STACK or STACK/SERVICE (repeatable); the rest of the repo is left as it is
    #[arg(long, value_name = "STACK[/SERVICE]", value_parser = parse_selector)]
    target: Vec<Selector>,
    /// Leave STACK or STACK/SERVICE out of the plan (repeatable)
    #[arg(long, value_name = "STACK[/SERVICE]", value_parser = parse_selector)]
    exclude: Vec<Selector>,
    /// Replace the replicas of STACK/SERVICE (or only replica INDEX) even though their spec
    /// did not change (repeatable)
    #[arg(long, value_name = "STACK/SERVICE[#INDEX]", value_parser = parse_replace)]
    replace: Vec<Selector>,
}

impl BeltArgs {
    fn limits(&self) -> crate::plan::protection::DestroyLimits {
        crate::plan::protection::DestroyLimits {
            max_destroy: self.max_destroy,
            allow_destroy_all: self.allow_destroy_all,
        }
    }

    fn scope(&self) -> Scope {
        Scope {
            targets: self.target.clone(),
            excludes: self.exclude.clone(),
            replace: self.replace.clone(),
            replace_jobs: None,
            rerun: Default::default(),
        }
    }

    fn options(&self, dir: &Path) -> PlanOptions {
        PlanOptions {
            limits: self.limits(),
            scope: self.scope(),
            ..PlanOptions::for_checkout(dir)
        }
    }
}

fn parse_selector(text: &str) -> Result<Selector, String> {
    Selector::parse(text, false)
}

fn parse_replace(text: &str) -> Result<Selector, String> {
    let selector = Selector::parse(text, true)?;
    if selector.service.is_none() {
        return Err(format!("{text:?}: --replace needs STACK/SERVICE[#INDEX]"));
    }
    Ok(selector)
}

/// `stackctl watch`'s options.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// How often to fetch and reconcile (plus up to 10% jitter)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_interval)]
    interval: Duration,
    /// The git remote to follow
    #[arg(long, default_value = "origin")]
    remote: String,
    /// The branch to follow
    #[arg(long, default_value = "main")]
    branch: String,
    /// Follow the files in the directory instead of git; a change to stacks/, recipes/ or
    /// stackctl.yaml triggers a reconcile within 2 seconds
    #[arg(long, conflicts_with_all = ["remote", "branch"])]
    local: bool,
    /// Serve /healthz, /status and /metrics on ADDR (e.g. 127.0.0.1:9464)
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Reconcile once and exit: 0 when converged, 1 otherwise (for cron or scrontab)
    #[arg(long, conflicts_with = "listen")]
    once: bool,
    /// Leave services gone from the repo running; the log says what would be pruned
    #[arg(long)]
    no_prune: bool,
    /// After every reconcile, write the ready replicas' endpoints to FILE in FORMAT (json,
    /// env, prometheus-sd, traefik, nginx), atomically and only when they changed; repeatable
    #[arg(long, value_name = "FILE:FORMAT")]
    write_endpoints: Vec<crate::watch::publish::EndpointsFile>,
    /// Refuse, in each pass, to cancel more than N jobs without a ready successor: the
    /// services that would cancel are left as they are, the others converge
    #[arg(long, value_name = "N")]
    max_destroy: Option<usize>,
    /// Allow a pass that cancels every job this owner runs and submits none (e.g. an
    /// emptied stacks/); without it such a pass cancels nothing
    #[arg(long)]
    allow_destroy_all: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::desired::parse_duration(text)
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = parse_duration(text)?;
    if interval < Duration::from_secs(1) {
        return Err("the interval must be at least 1s".into());
    }
    Ok(interval)
}

/// Returns whether output to a stream is coloured: only on a terminal, and never with
/// `--no-color` or a non-empty `NO_COLOR`. Used for stdout (plans) and stderr (log lines).
pub fn colour_wanted(
    no_color_flag: bool,
    no_color_env: Option<&std::ffi::OsStr>,
    is_terminal: bool,
) -> bool {
    !no_color_flag && no_color_env.is_none_or(std::ffi::OsStr::is_empty) && is_terminal
}

/// What a command asks the process to exit with.
pub type ExitCode = u8;

/// Runs a parsed command line and returns the exit code; a failure carries its kind, which
/// decides the exit code ([`crate::error::ErrorKind::exit_code`]).
pub fn run(cli: Cli) -> std::result::Result<ExitCode, crate::error::Error> {
    dispatch(cli).map_err(Into::into)
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    let color = colour_wanted(
        cli.no_color,
        std::env::var_os("NO_COLOR").as_deref(),
        std::io::stdout().is_terminal(),
    );
    let style = Style { color };
    let dir = cli.dir.as_path();
    match cli.command {
        Commands::Validate => validate(dir),
        Commands::Render { service } => render(dir, &service),
        Commands::Plan {
            detailed_exitcode,
            json,
            format,
            out,
            belt,
        } => {
            let format = if json {
                PlanFormat::Json
            } else {
                format.unwrap_or(PlanFormat::Text)
            };
            let out = out.map(|out| dir.join(out));
            plan(dir, style, detailed_exitcode, format, out.as_deref(), &belt)
        }
        Commands::Apply {
            plan_file,
            auto_approve,
            lock_timeout,
            belt,
            wait,
        } => {
            let plan_file = plan_file.map(|file| dir.join(file));
            apply(
                dir,
                style,
                auto_approve,
                lock_timeout,
                plan_file.as_deref(),
                &belt,
                wait,
            )
        }
        Commands::Destroy {
            auto_approve,
            target,
            lock_timeout,
        } => destroy(dir, style, auto_approve, lock_timeout, target),
        Commands::Init { path } => init(&dir.join(path.unwrap_or_default())),
        Commands::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "stackctl", &mut out);
            write_stdout_bytes(&out)?;
            Ok(0)
        }
        Commands::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            write_stdout_bytes(&out)?;
            Ok(0)
        }
        Commands::Show { file, json } => show(&dir.join(file), json),
        Commands::Run { job, lock_timeout } => run_job(dir, style, &job, lock_timeout),
        Commands::Results {
            job,
            json,
            format,
            last,
        } => {
            let format = if json {
                PlanFormat::Json
            } else {
                format.unwrap_or(PlanFormat::Text)
            };
            results(dir, &job, format, last)
        }
        Commands::Status {
            json,
            watch,
            interval,
        } => {
            if watch {
                status_watch(dir, json, interval)
            } else {
                print_stdout(&status_text(dir, json)?)?;
                Ok(0)
            }
        }
        Commands::Endpoints {
            target,
            json,
            format,
        } => endpoints(
            dir,
            target.as_deref(),
            format.or(json.then_some(Format::Json)),
        ),
        Commands::Logs {
            service,
            replica,
            tail,
            follow,
            stderr,
        } => logs(dir, &service, replica, tail, follow, stderr),
        Commands::Images { prune } => images(dir, prune),
        Commands::Watch(args) => crate::watch::run(&crate::watch::Options {
            dir: dir.to_owned(),
            interval: args.interval,
            remote: args.remote,
            branch: args.branch,
            local: args.local,
            listen: args.listen,
            once: args.once,
            prune: !args.no_prune,
            write_endpoints: args.write_endpoints,
            limits: crate::plan::protection::DestroyLimits {
                max_destroy: args.max_destroy,
                allow_destroy_all: args.allow_destroy_all,
            },
        }),
        Commands::ForceUnlock { lock_id } => force_unlock(dir, &lock_id),
        Commands::Secret {
            command: SecretCommand::Set { name },
        } => secret_set(dir, &name),
        Commands::Secret {
            command: SecretCommand::List,
        } => secret_list(dir),
    }
}

fn secret_set(dir: &Path, name: &str) -> Result<ExitCode> {
    let repo = reconcile::load_unresolved(dir, dir)?;
    let recipients = &repo.settings.age.recipients;
    if recipients.is_empty() {
        anyhow::bail!(
            "stackctl.yaml lists no `age.recipients`: add the public key (age1…) of every \
             machine and person that applies; nothing was written"
        );
    }
    if let Some(source) = repo.settings.secrets.get(name)
        && !matches!(source, crate::secret::Source::Age(_))
    {
        anyhow::bail!(
            "secret {name} comes from the {source}, not from an age file; nothing was written"
        );
    }
    let path = match repo.settings.secrets.get(name) {
        Some(crate::secret::Source::Age(path)) => path.clone(),
        _ => PathBuf::from(format!("secrets/{name}.age")),
    };
    let value = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("Value of {name} (not shown): "))
            .context("reading the value from the terminal")?
    } else {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading the value from stdin")?;
        // `echo value |` adds one newline that is no part of the value.
        text.strip_suffix('\n').unwrap_or(&text).to_owned()
    };
    let armored = crate::secret::encrypt(value.as_bytes(), recipients)?;
    let full = dir.join(&path);
    if let Some(parent) = full.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&full, armored).with_context(|| format!("writing {}", full.display()))?;
    eprintln!(
        "Wrote {} for {} recipient(s).",
        path.display(),
        recipients.len()
    );
    if !repo.settings.secrets.contains_key(name) {
        eprintln!(
            "Add it to stackctl.yaml to use it:\n  secrets:\n    {name}: {{age: {}}}",
            path.display()
        );
    }
    Ok(0)
}

fn secret_list(dir: &Path) -> Result<ExitCode> {
    let repo = reconcile::load_unresolved(dir, dir)?;
    let mut users: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (addr, service) in &repo.desired.services {
        for (key, reference) in &service.spec.secret_env {
            users
                .entry(reference.secret.as_str())
                .or_default()
                .push(format!("{addr} ({key})"));
        }
    }
    let mut out = String::new();
    if repo.settings.secrets.is_empty() {
        out.push_str("No secrets in stackctl.yaml.\n");
    }
    for (name, source) in &repo.settings.secrets {
        let used = users
            .get(name.as_str())
            .map_or("no service".to_owned(), |u| u.join(", "));
        out.push_str(&format!("{name}: {source}; used by {used}\n"));
    }
    print_stdout(&out)?;
    Ok(0)
}

fn backend(repo: &Repo) -> Result<Box<dyn Backend>> {
    Ok(crate::slurm::for_settings(&repo.settings, None)?)
}

fn validate(dir: &Path) -> Result<ExitCode> {
    let repo = reconcile::load(dir)?;
    let replicas: u32 = repo.desired.services.values().map(|s| s.replicas).sum();
    print_stdout(&format!(
        "Valid: {} services, {replicas} replicas, owner \"{}\".\n",
        repo.desired.services.len(),
        repo.settings.owner
    ))?;
    Ok(0)
}

/// Parses `stack/service` or `stack.service` (the form plan and status print).
fn parse_address(address: &str) -> Option<ServiceAddr> {
    let (stack, service) = address
        .split_once('/')
        .or_else(|| address.split_once('.'))?;
    Some(ServiceAddr::new(stack, service))
}

/// The nonce `render` shows in the marker: apply makes a fresh one per submission.
pub const NONCE_PLACEHOLDER: &str = "<nonce>";

fn render(dir: &Path, address: &str) -> Result<ExitCode> {
    let repo = reconcile::load(dir)?;
    let addr = parse_address(address)
        .context("expected STACK/SERVICE or STACK.SERVICE, e.g. inference/llm")?;
    let Some(found) = repo.desired.services.get(&addr) else {
        let known: Vec<String> = repo
            .desired
            .services
            .keys()
            .map(|a| a.to_string())
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
    // What apply submits for the service's replicas as new ones, through the same function
    // (marker with `protect`, one-shot job recording, commit); only the nonce, unique per
    // submission, is a placeholder. `endpoint_env` values are resolved when apply plans, from
    // the ready replicas then: here they are left out.
    let indexes: Vec<u32> = (0..found.replicas.max(1)).collect();
    let source = crate::git::head(dir);
    let ctx = reconcile::script_context(&repo, backend(&repo)?.as_ref())?;
    let (_, job) = crate::apply::submission(
        &crate::apply::Submit {
            owner: &repo.settings.owner,
            service: &addr,
            desired: found,
            indexes: &indexes,
            backoff: None,
            pred: None,
            endpoint_env: &Default::default(),
            commit: source.as_ref().map(|s| s.commit.as_str()),
        },
        NONCE_PLACEHOLDER.to_owned(),
        &ctx,
    );
    print_stdout(&job.batch_script())?;
    Ok(0)
}

/// The one-shot job `address` names in `repo`, or an error listing the repo's jobs.
fn job_address(repo: &Repo, address: &str) -> Result<ServiceAddr> {
    let addr =
        parse_address(address).context("expected STACK/JOB or STACK.JOB, e.g. bench/load")?;
    if repo
        .desired
        .services
        .get(&addr)
        .is_some_and(|s| s.job.is_some())
    {
        return Ok(addr);
    }
    let jobs: Vec<String> = repo
        .desired
        .services
        .iter()
        .filter(|(_, s)| s.job.is_some())
        .map(|(a, _)| a.reference())
        .collect();
    bail!(
        "no one-shot job {address} (`kind: job`); the repo's jobs: {}",
        if jobs.is_empty() {
            "none".into()
        } else {
            jobs.join(", ")
        }
    )
}

/// `stackctl run STACK/JOB`: one apply pass, kept to the job, that runs it again although a
/// run with its spec exists (a run still going is left alone). Asks no confirmation.
fn run_job(dir: &Path, style: Style, address: &str, lock_wait: Duration) -> Result<ExitCode> {
    let repo = reconcile::load(dir)?;
    let addr = job_address(&repo, address)?;
    let scope = Scope {
        targets: vec![parse_selector(&addr.reference()).map_err(anyhow::Error::msg)?],
        rerun: [addr].into(),
        ..Scope::default()
    };
    let options = ApplyOptions {
        plan: PlanOptions {
            scope,
            ..PlanOptions::for_checkout(dir)
        },
        lock_wait,
        expect: None,
    };
    execute(&repo, &options, style, true, None)
}

/// `stackctl results STACK/JOB`: the job's runs from their records, each run's state from
/// its record, or from Slurm while it runs or when it was killed before recording its end.
fn results(dir: &Path, address: &str, format: PlanFormat, last: Option<usize>) -> Result<ExitCode> {
    let repo = reconcile::load(dir)?;
    let addr = job_address(&repo, address)?;
    let backend = backend(&repo)?;
    let root =
        crate::reconcile::results_root(&repo, backend.as_ref()).map_err(anyhow::Error::msg)?;
    let runs = crate::results::read_runs(&root, &addr);
    let listed = observe_live(&repo, backend.as_ref())?;
    let state_of = |record: &observed::runs::RunRecord| -> String {
        let slurm = listed.jobs.iter().find(|j| j.id == record.job_id);
        match (record.end, slurm) {
            (Some(_), _) if record.exit == Some(0) => "COMPLETED".into(),
            (Some(_), _) => "FAILED".into(),
            (None, Some(job)) => job.state.to_string(),
            (None, None) => "LOST".into(),
        }
    };
    let mut rows = crate::render::results::rows(&runs, &state_of);
    if let Some(n) = last {
        rows.drain(..rows.len().saturating_sub(n));
    }
    let job = addr.reference();
    print_stdout(&match format {
        PlanFormat::Text => crate::render::results::render_text(&job, &rows),
        PlanFormat::Json => crate::render::results::render_json(&rows),
        PlanFormat::Markdown => crate::render::results::render_markdown(&job, &rows),
    })?;
    Ok(0)
}

/// Notes on stderr what a plan's reader should know besides the plan: a held lock.
fn note_locks(planned: &Planned) {
    for lock in &planned.locks {
        eprintln!("note: {lock}; an apply now would wait for it or fail");
    }
}

fn plan(
    dir: &Path,
    style: Style,
    detailed_exitcode: bool,
    format: PlanFormat,
    out: Option<&Path>,
    belt: &BeltArgs,
) -> Result<ExitCode> {
    // libgit2 (with OpenSSL, about as costly as a short listing) starts once the listing runs,
    // or before reading the git remote for a derived owner, or before a REST backend starts
    // its threads: it may only start while there is one thread.
    let repo = reconcile::load_starting_git(dir, crate::git::init_without_ca_bundle)?;
    if repo.settings.backend == crate::desired::BackendKind::Rest {
        crate::git::init_without_ca_bundle();
    }
    let backend = backend(&repo)?;
    let listing = backend.start_list_jobs();
    crate::git::init_without_ca_bundle();
    let options = belt.options(dir);
    let planned = reconcile::plan_listed(&repo, &options, backend.as_ref(), listing)?;
    note_locks(&planned);
    if let Some(out) = out {
        let desired = saved::desired_fingerprint(dir, &repo)
            .context("reading the repo's files for the saved plan's fingerprint")?;
        let file = saved::SavedPlan::new(
            &planned.plan,
            &planned.observed,
            options.prune,
            &options.scope,
            desired,
            unix_now(),
        );
        write_atomically(out, &file.to_json())
            .with_context(|| format!("cannot write the plan to {}", out.display()))?;
        eprintln!(
            "Saved the plan to {0}; `stackctl apply {0}` executes exactly this plan.",
            out.display()
        );
    }
    let text = match format {
        PlanFormat::Json => plan_json::render(&planned.plan),
        PlanFormat::Markdown => plan_markdown::render(&planned.plan),
        PlanFormat::Text => plan_text::render(&planned.plan, style),
    };
    print_stdout(&text)?;
    Ok(if detailed_exitcode && !planned.plan.is_converged() {
        2
    } else {
        0
    })
}

/// Writes `text` to `path` through a temporary file in the same directory, so a reader (or an
/// interrupted write) never sees half a plan.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(text.as_bytes())?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Reads a saved plan file, with its path in every error.
fn read_saved(file: &Path) -> Result<saved::SavedPlan> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the saved plan {}", file.display()))?;
    saved::SavedPlan::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

fn show(file: &Path, json: bool) -> Result<ExitCode> {
    let saved = read_saved(file)?;
    if json {
        eprint!("{}", saved.header());
        print_stdout(&saved.render_json())?;
    } else {
        print_stdout(&saved.render_text())?;
    }
    Ok(0)
}

fn apply(
    dir: &Path,
    style: Style,
    auto_approve: bool,
    lock_wait: Duration,
    plan_file: Option<&Path>,
    belt: &BeltArgs,
    wait: Option<Duration>,
) -> Result<ExitCode> {
    let repo = reconcile::load(dir)?;
    let mut options = ApplyOptions {
        plan: belt.options(dir),
        lock_wait,
        expect: None,
    };
    if let Some(file) = plan_file {
        let saved = read_saved(file)?;
        saved
            .check(repo.settings.owner.as_str(), env!("CARGO_PKG_VERSION"))
            .map_err(|e| reconcile::Error::Stale {
                message: format!("{}: {e}", file.display()),
            })?;
        let desired_now = saved::desired_fingerprint(dir, &repo)
            .context("reading the repo's files for the saved plan's fingerprint")?;
        if belt.scope() != Scope::default() {
            bail!(
                "--target, --exclude and --replace go with `plan --out`: the saved plan {} carries its own",
                file.display()
            );
        }
        options.plan.prune = saved.prune;
        options.plan.scope = saved.scope.clone();
        options.expect = Some(saved.expected(desired_now));
    } else if !auto_approve && !std::io::stdin().is_terminal() {
        bail!(
            "refusing to apply: stdin is not a terminal, so nobody can confirm; pass --auto-approve to apply without asking"
        );
    }
    let auto_approve = auto_approve || plan_file.is_some();
    execute(&repo, &options, style, auto_approve, wait)
}

/// `stackctl destroy`: the apply pass with the targeted services (every one without
/// `--target`) taken out of the desired state, so their jobs are cancelled. Protection still
/// applies: a `protect: true` service is refused.
fn destroy(
    dir: &Path,
    style: Style,
    auto_approve: bool,
    lock_wait: Duration,
    targets: Vec<Selector>,
) -> Result<ExitCode> {
    if !auto_approve && !std::io::stdin().is_terminal() {
        bail!(
            "refusing to destroy: stdin is not a terminal, so nobody can confirm; pass --auto-approve to destroy without asking"
        );
    }
    let mut repo = reconcile::load(dir)?;
    let scope = Scope {
        targets,
        ..Scope::default()
    };
    let options = ApplyOptions {
        plan: PlanOptions {
            scope: scope.clone(),
            ..PlanOptions::for_checkout(dir)
        },
        lock_wait,
        expect: None,
    };
    // Services the repo protects stay in the desired state with `protect: true` and zero
    // replicas, so the refusal names them as the repo has them.
    for (addr, service) in repo.desired.services.iter_mut() {
        if scope.includes(addr) {
            service.replicas = 0;
        }
    }
    execute(&repo, &options, style, auto_approve, None)
}

/// The files `stackctl init` writes: a repo that validates and plans on any Slurm cluster,
/// without Apptainer.
const SCAFFOLD: [(&str, &str); 3] = [
    (
        "stackctl.yaml",
        "# stackctl's settings. The owner namespace: stackctl only ever touches jobs whose marker\n\
         # names it. Change it to something unique to this repo (or delete the line once the repo\n\
         # has a git remote: the owner is then derived from it).\n\
         owner: my-team/my-services\n\
         log_dir: ~/stackctl-logs\n",
    ),
    (
        "recipes/demo/sleeper.yaml",
        "# A stand-in service that runs on a bare node (no Apptainer): replace `command` with yours.\n\
         name: sleeper\n\
         description: Prints where it runs, then sleeps\n\
         command: |\n  \
         echo \"replica $STACKCTL_REPLICA of $STACKCTL_SERVICE on $(hostname)\"\n  \
         exec sleep infinity\n\
         resources:\n  cpu: 1\n  memory: 256M\n",
    ),
    (
        "stacks/demo.yaml",
        "# One stack: the services to keep running. `stackctl plan` shows what apply would do.\n\
         services:\n  app:\n    recipe: demo/sleeper\n    replicas: 1\n",
    ),
];

/// `stackctl init`: writes [`SCAFFOLD`] under `dir`, refusing when any of its files exists.
fn init(dir: &Path) -> Result<ExitCode> {
    let existing: Vec<String> = SCAFFOLD
        .iter()
        .filter(|(path, _)| dir.join(path).exists())
        .map(|(path, _)| dir.join(path).display().to_string())
        .collect();
    if !existing.is_empty() {
        bail!(
            "refusing to overwrite {}; nothing was written",
            existing.join(", ")
        );
    }
    for (path, text) in SCAFFOLD {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
        eprintln!("created {}", file.display());
    }
    eprintln!(
        "Next: edit the owner in stackctl.yaml, then `stackctl -C {} plan`.",
        dir.display()
    );
    Ok(0)
}

/// Runs the apply pass for `repo` with `options`, prompting unless `auto_approve`, and
/// prints how it went.
fn execute(
    repo: &Repo,
    options: &ApplyOptions,
    style: Style,
    auto_approve: bool,
    wait: Option<Duration>,
) -> Result<ExitCode> {
    let backend = backend(repo)?;
    // Ctrl-C (or SIGTERM) stops the apply at its next step; it reports and releases the lock.
    crate::interrupt::catch_interrupts().context("cannot install signal handlers")?;
    let mut printed = Ok(());
    let mut approve = |planned: &Planned| {
        if crate::interrupt::interrupted().is_some() {
            return false;
        }
        printed = print_stdout(&plan_text::render(&planned.plan, style));
        printed.is_ok() && (auto_approve || confirm())
    };
    // One line per state change of a rollout (or, with --wait, of a replica not ready).
    let mut shown: std::collections::BTreeSet<String> = Default::default();
    let mut on_pass = |planned: &Planned| {
        let mut lines: std::collections::BTreeSet<String> = planned
            .plan
            .rollouts
            .iter()
            .map(|r| {
                format!(
                    "{}[{}] {}: {}",
                    r.service,
                    r.index,
                    if r.reason == crate::plan::Reason::Renewal {
                        "renewal"
                    } else {
                        "rolling"
                    },
                    r.progress
                )
            })
            .collect();
        if wait.is_some() {
            let not_ready = crate::plan::rolling::not_ready(&repo.desired, &planned.observed);
            lines.extend(plan_text::waiting_lines(&planned.plan, &not_ready));
        }
        for line in lines.difference(&shown) {
            eprintln!("{line}");
        }
        shown = lines;
    };
    let drive = reconcile::DriveOptions {
        poll: Duration::from_secs(3),
        wait,
    };
    let driven = reconcile::drive(
        repo,
        backend.as_ref(),
        options,
        &drive,
        &mut approve,
        &mut Printer,
        &mut on_pass,
    );
    // 128 + the signal's number (130 for Ctrl-C) once interrupted, whatever the pass did.
    let interrupted = crate::interrupt::interrupted().map(|signal| (128 + signal) as ExitCode);
    let driven = match (driven, interrupted) {
        (Ok(driven), _) => driven,
        (Err(error), Some(code)) => {
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            eprintln!("Apply interrupted; nothing was changed.");
            return Ok(code);
        }
        (Err(error), None) => return Err(error.into()),
    };
    printed?;
    // The pass count only when a rollout or --wait took more than one.
    let totals = |what: &str| {
        let passes = match driven.passes {
            1 => String::new(),
            n => format!(" ({n} passes)"),
        };
        format!(
            "{what} Jobs: {} added, {} changed, {} destroyed{passes}.\n",
            driven.added, driven.changed, driven.destroyed
        )
    };
    match driven.end {
        DriveEnd::Done if driven.added + driven.destroyed + driven.changed == 0 => {
            print_stdout(&plan_text::render(&driven.last.plan, style))?;
            Ok(interrupted.unwrap_or(0))
        }
        DriveEnd::Done => {
            print_stdout(&format!(
                "\n{}{}",
                totals("Apply complete!"),
                held_lines(&driven.last.plan)
            ))?;
            Ok(interrupted.unwrap_or(0))
        }
        DriveEnd::Declined if interrupted.is_some() => {
            eprintln!("\nApply interrupted; nothing was changed.");
            Ok(interrupted.unwrap_or(1))
        }
        DriveEnd::Declined => {
            eprintln!("\nApply cancelled; nothing was changed.");
            Ok(0)
        }
        DriveEnd::Stopped(stopped) => {
            for s in &stopped {
                eprintln!(
                    "error: {}[{}]: rollout stopped: {}; job {} keeps running",
                    s.service, s.index, s.why, s.predecessor
                );
            }
            print_stdout(&format!("\n{}", totals("Rollout stopped!")))?;
            Ok(1)
        }
        DriveEnd::TimedOut(not_ready) => {
            for line in &not_ready {
                eprintln!("error: not ready: {line}");
            }
            print_stdout(&format!(
                "\n{}",
                totals(&format!(
                    "Wait timed out after {}s!",
                    wait.unwrap_or_default().as_secs()
                ))
            ))?;
            Ok(1)
        }
        DriveEnd::Interrupted(left) => {
            eprintln!("Interrupted between two passes; nothing else was started.");
            let mut out = format!(
                "\nDone:\n  {} passes: {} added, {} changed, {} destroyed\nNot done yet (run apply again to continue):\n",
                driven.passes, driven.added, driven.changed, driven.destroyed
            );
            if left.is_empty() {
                out.push_str("  nothing\n");
            }
            for line in &left {
                out.push_str(&format!("  {line}\n"));
            }
            out.push_str(&totals("Apply interrupted!"));
            print_stdout(&out)?;
            Ok(interrupted.unwrap_or(1))
        }
        DriveEnd::Incomplete(report) => {
            let mut out = String::from("\n");
            if report.is_complete() {
                out.push_str(&format!(
                    "Apply complete! Jobs: {} added, {} changed, {} destroyed.\n",
                    report.added, report.changed, report.destroyed
                ));
                out.push_str(&held_lines(&driven.last.plan));
            } else {
                if report.interrupted {
                    eprintln!(
                        "Interrupted: stopped after the step in flight; nothing else was started."
                    );
                }
                for error in report.errors.iter().filter(|e| !e.interrupted) {
                    eprintln!("error: {error}");
                }
                // What succeeded and what did not, precisely: a re-run starts from here.
                out.push_str("Done:\n");
                if report.done.is_empty() {
                    out.push_str("  nothing\n");
                }
                for line in &report.done {
                    out.push_str(&format!("  {line}\n"));
                }
                out.push_str("Failed or not attempted (left as they were):\n");
                for error in &report.errors {
                    out.push_str(&format!("  {}\n", error.message));
                }
                out.push_str(&format!(
                    "Apply {}! Jobs: {} added, {} changed, {} destroyed, {} {}.{}\n",
                    if report.interrupted {
                        "interrupted"
                    } else {
                        "incomplete"
                    },
                    report.added,
                    report.changed,
                    report.destroyed,
                    report.failed,
                    if report.interrupted {
                        "failed or not attempted"
                    } else {
                        "failed"
                    },
                    if report.interrupted {
                        " Run apply again to converge."
                    } else if report.retry_may_help() {
                        " Run apply again to converge once Slurm is reachable."
                    } else {
                        " Fix the errors above, then apply again."
                    }
                ));
            }
            print_stdout(&out)?;
            Ok(match interrupted {
                Some(code) => code,
                None if report.is_complete() => 0,
                None => crate::error::ErrorKind::of_incomplete_apply(&report).exit_code(),
            })
        }
    }
}

/// One line per service the plan held (nothing was submitted for it), for the summary that
/// closes an apply: `Held: web.api: waits for a ready replica of web/db (depends_on); …`.
fn held_lines(plan: &crate::plan::Plan) -> String {
    plan.held
        .iter()
        .map(|h| {
            format!(
                "Held: {}: {}; its new replicas were not submitted (the next apply or watch \
                 reconcile submits them).\n",
                h.service, h.reason
            )
        })
        .collect()
}

/// Asks on the terminal; only `yes` approves. An interrupt (Ctrl-C) while waiting declines:
/// the answer is read on a thread of its own, since the caught signal does not end the read.
fn confirm() -> bool {
    eprint!(
        "\nDo you want to perform these actions?\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: "
    );
    let (send, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = std::io::stdin().lock().read_line(&mut line).is_ok();
        let _ = send.send(read && line.trim() == "yes");
    });
    loop {
        match answer.recv_timeout(Duration::from_millis(100)) {
            Ok(yes) => return yes,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                if crate::interrupt::interrupted().is_none() => {}
            Err(_) => {
                eprintln!();
                return false;
            }
        }
    }
}

/// Lists the live jobs and keeps the repo owner's (one listing; specs of old jobs read back).
fn observe_live(repo: &Repo, backend: &dyn Backend) -> Result<observed::Observed> {
    let records = backend
        .list_jobs()
        .context("reading the live jobs from Slurm")?;
    let mut observed = crate::reconcile::observe(
        backend,
        records,
        &repo.settings.owner,
        &repo.desired,
        Default::default(),
    );
    crate::reconcile::attach_results(&mut observed, repo, backend).map_err(anyhow::Error::msg)?;
    Ok(observed)
}

/// `stackctl images`: the built images under `image_dir`, and `--prune`.
fn images(dir: &Path, prune: bool) -> Result<ExitCode> {
    let repo = reconcile::load(dir)?;
    let backend = backend(&repo)?;
    let ctx = reconcile::script_context(&repo, backend.as_ref())?;
    let listed = crate::image::list(&ctx.image_dir, &repo.desired);
    let mut out = String::new();
    if prune {
        for image in listed.iter().filter(|i| i.used_by.is_empty()) {
            crate::image::remove(&ctx.image_dir, &image.name).with_context(|| {
                format!("removing {}", ctx.image_dir.join(&image.name).display())
            })?;
            out.push_str(&format!("Removed {} ({} bytes)\n", image.name, image.size));
        }
        if out.is_empty() {
            out.push_str("No unused images.\n");
        }
        print_stdout(&out)?;
        return Ok(0);
    }
    out.push_str("IMAGE\tRUNTIME\tDEFINITION\tSIZE\tBUILT\tUSED BY\n");
    for image in &listed {
        let hash = image
            .name
            .trim_end_matches(".sif")
            .rsplit('-')
            .next()
            .unwrap_or_default();
        let used: Vec<String> = image.used_by.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            "{}\t{}\t{hash}\t{:.1} MB\t{}\t{}\n",
            image.name,
            image.runtime,
            image.size as f64 / 1e6,
            image.built_at.map_or("?".to_owned(), crate::utc::date_time),
            if used.is_empty() {
                "(unused)".to_owned()
            } else {
                used.join(", ")
            }
        ));
    }
    print_stdout(&out)?;
    Ok(0)
}

/// The status, as text or JSON.
fn status_text(dir: &Path, json: bool) -> Result<String> {
    let repo = reconcile::load(dir)?;
    let backend = backend(&repo)?;
    let records = backend
        .list_jobs()
        .context("reading the live jobs from Slurm")?;
    let me = crate::lock::Identity::current();
    let locks: Vec<status::LockStatus> = crate::lock::held(&records, &repo.settings.owner)
        .into_iter()
        .map(|l| status::LockStatus {
            id: l.id.to_string(),
            stale: l.is_stale(&me),
            host: l.host,
            pid: l.pid,
            since: l.since,
            expires: l.expires,
        })
        .collect();
    let mut observed = crate::reconcile::observe(
        backend.as_ref(),
        records,
        &repo.settings.owner,
        &repo.desired,
        Default::default(),
    );
    // One-shot jobs' runs (records, and accounting where the cluster has it); over SSH
    // without accounting the status leaves their runs out (with a warning) rather than fail.
    let runs_known = match crate::reconcile::attach_results(&mut observed, &repo, backend.as_ref())
    {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("{e}");
            false
        }
    };
    let ctx = reconcile::script_context(&repo, backend.as_ref())?;
    let mut statuses = status::summarize(&repo.desired, &observed, &ctx);
    // What a plan would hold or has stopped, from the same listing.
    let mut plan = crate::plan::compute(&repo.settings.owner, &repo.desired, &observed);
    if crate::image::any_built(&repo.desired) {
        // Build jobs carry no service marker: list them for the image steps.
        let records = backend.list_jobs().unwrap_or_default();
        let owner = &repo.settings.owner;
        crate::image::add_to_plan(&mut plan, owner, &repo.desired, &records, &ctx);
    }
    status::add_plan(&mut statuses, &plan);
    let jobs = status::job_summaries(&plan, &observed, runs_known);
    for crash_loop in statuses.iter_mut().flat_map(|s| &mut s.crash_loops) {
        if let Some(path) = &crash_loop.stderr {
            match crate::logs::tail(Path::new(path), 5) {
                Ok((bytes, _)) => {
                    crash_loop.stderr_tail = String::from_utf8_lossy(&bytes)
                        .lines()
                        .map(str::to_owned)
                        .collect();
                }
                Err(why) => crash_loop.stderr_unreadable = Some(why.to_string()),
            }
        }
    }
    // Jobs have their own lines: a finished one is no missing replica.
    let job_names: Vec<String> = plan.jobs.iter().map(|l| l.service.to_string()).collect();
    statuses.retain(|s| !job_names.contains(&s.service));
    Ok(if json {
        status::render_json_with_locks(&statuses, &jobs, &locks)
    } else {
        let mut text = status::render_text(&statuses);
        text.push_str(&job_status_text(&plan, &jobs, &ctx));
        text + &status::render_locks(&locks)
    })
}

/// Each one-shot job's standing and last run, for `status`; a failed job's last lines of
/// stderr under it.
fn job_status_text(
    plan: &crate::plan::Plan,
    summaries: &[status::JobSummary],
    ctx: &script::ScriptContext,
) -> String {
    use crate::plan::jobs::JobStatus;
    let mut out = String::new();
    if plan.jobs.is_empty() {
        return out;
    }
    out.push_str("\nJOBS\n");
    for line in &plan.jobs {
        out.push_str(&plan_text::job_line(line));
        out.push('\n');
        let service = line.service.to_string();
        if let Some(summary) = summaries.iter().find(|s| s.service == service) {
            out.push_str(&status::metrics_line(summary));
        }
        let failed = matches!(
            line.status,
            JobStatus::Failed { .. } | JobStatus::Retry { .. }
        );
        if let (true, Some(run)) = (failed, &line.last_run) {
            let (_, stderr) = script::log_paths(ctx, &line.service, &run.job_id);
            match crate::logs::tail(&stderr, 5) {
                Ok((bytes, _)) => {
                    for l in String::from_utf8_lossy(&bytes).lines() {
                        out.push_str(&format!("    | {l}\n"));
                    }
                }
                Err(why) => out.push_str(&format!("    ({}: {why})\n", stderr.display())),
            }
        }
    }
    out
}

/// Redraws the status every `interval` until Ctrl-C: on a terminal over a cleared screen,
/// otherwise one snapshot after another, separated by a blank line. An error (Slurm
/// unreachable, a file being edited) is shown in place of a snapshot and does not end it.
fn status_watch(dir: &Path, json: bool, interval: Duration) -> Result<ExitCode> {
    let terminal = std::io::stdout().is_terminal();
    let mut first = true;
    loop {
        let snapshot = status_text(dir, json).unwrap_or_else(|e| format!("error: {e:#}\n"));
        let text = if terminal {
            format!(
                "\x1b[H\x1b[2JEvery {:?}: stackctl status\n\n{snapshot}",
                interval
            )
        } else if first {
            snapshot
        } else {
            format!("\n{snapshot}")
        };
        if !write_stdout_bytes(text.as_bytes())? {
            return Ok(0);
        }
        first = false;
        std::thread::sleep(interval);
    }
}

/// Finds the service named `address` among `known`, or says which ones there are.
fn known_service(address: &str, known: &[ServiceAddr]) -> Result<ServiceAddr> {
    let addr = parse_address(address)
        .context("expected STACK/SERVICE or STACK.SERVICE, e.g. inference/llm")?;
    if known.contains(&addr) {
        return Ok(addr);
    }
    bail!(
        "no service {address}; known: {}",
        list_or_none(known.iter())
    )
}

/// `a, b, c`, or `none`.
fn list_or_none<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let items: Vec<String> = items.map(|i| i.to_string()).collect();
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn endpoints(dir: &Path, target: Option<&str>, format: Option<Format>) -> Result<ExitCode> {
    let repo = reconcile::load(dir)?;
    let backend = backend(&repo)?;
    let observed = observe_live(&repo, backend.as_ref())?;
    let mut services = endpoints::collect(&repo.desired, &observed);
    match target {
        None => {}
        Some(target) if target.contains(['/', '.']) => {
            let known: Vec<ServiceAddr> = services.iter().map(|s| s.service.clone()).collect();
            let addr = known_service(target, &known)?;
            services.retain(|s| s.service == addr);
        }
        Some(stack) => {
            let mut stacks: Vec<&str> = services.iter().map(|s| s.service.stack.as_str()).collect();
            stacks.dedup();
            if !stacks.contains(&stack) {
                bail!("no stack {stack}; known: {}", list_or_none(stacks.iter()));
            }
            services.retain(|s| s.service.stack == stack);
        }
    }
    print_stdout(&match format {
        Some(format) => endpoints::render(&services, format),
        None => endpoints::render_text(&services),
    })?;
    Ok(0)
}

/// How often `logs --follow` looks for appended lines, and how many looks between listings of
/// the job's state.
const FOLLOW_POLL: Duration = Duration::from_millis(500);
const FOLLOW_LISTING_EVERY: u32 = 10;

fn logs(
    dir: &Path,
    address: &str,
    replica: u32,
    tail: usize,
    follow: bool,
    stderr: bool,
) -> Result<ExitCode> {
    // Reading a log needs no secret.
    let repo = reconcile::load_unresolved(dir, dir)?;
    let backend = backend(&repo)?;
    // `image/NAME`: the newest build log of that image (unless a stack `image` has it).
    if let Some(image) = address.strip_prefix("image/")
        && !repo
            .desired
            .services
            .keys()
            .any(|a| a.reference() == address)
    {
        let ctx = reconcile::script_context(&repo, backend.as_ref())?;
        let Some(path) = crate::image::newest_log(&ctx.log_dir, image) else {
            bail!(
                "no build log of image {image:?} in {} (image.{image}-<hash>.log)",
                ctx.log_dir.display()
            );
        };
        let (lines, _) = crate::logs::tail(&path, tail)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        write_stdout_bytes(&lines)?;
        return Ok(0);
    }
    let observed = observe_live(&repo, backend.as_ref())?;
    let mut known: Vec<ServiceAddr> = repo.desired.services.keys().cloned().collect();
    known.extend(observed.jobs.iter().map(|j| j.marker.service.clone()));
    known.sort();
    known.dedup();
    let addr = known_service(address, &known)?;
    let of_replica = |observed: &observed::Observed| {
        let jobs: Vec<observed::LiveJob> = observed
            .jobs
            .iter()
            .filter(|j| j.marker.service == addr && j.index == replica)
            .cloned()
            .collect();
        let alive = jobs
            .iter()
            .filter(|j| j.state.is_alive())
            .max_by_key(|j| j.id);
        alive.or_else(|| jobs.iter().max_by_key(|j| j.id)).cloned()
    };
    let Some(job) = of_replica(&observed) else {
        bail!(
            "{addr} has no job for replica {replica} in Slurm's listing (ended jobs are listed only for a while)"
        );
    };
    if job.state == observed::JobState::Pending {
        bail!(
            "job {} of {addr}[{replica}] is pending ({}); it has no log yet",
            job.id,
            job.reason
        );
    }
    // The job's own files, as Slurm recorded them; recomputed from today's log_dir only when
    // Slurm cannot tell (the job is no longer listed, or a field cannot be expanded).
    let recorded = match backend.job_output(&job.id) {
        Ok(output) => output.and_then(|o| o.paths(&job.id)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot ask Slurm where the job's output went");
            None
        }
    };
    let (out, err) = match recorded {
        Some(paths) => paths,
        None => {
            let ctx = reconcile::script_context(&repo, backend.as_ref())?;
            script::log_paths(&ctx, &addr, &job.id)
        }
    };
    let path = if stderr { err } else { out };
    let unreadable = |e: std::io::Error| {
        let nodes = crate::hostlist::expand(&job.nodes);
        let node = nodes.first().map_or("(unknown)", String::as_str);
        anyhow::anyhow!(
            "cannot read {} here: {e}. Job {} ({}) {} on {node}; if log_dir is on a filesystem \
             this machine does not see, read it there, e.g. `ssh {node} tail -n {tail} {}`",
            path.display(),
            job.id,
            job.state,
            if job.state.is_alive() { "runs" } else { "ran" },
            path.display()
        )
    };
    let (lines, mut offset) = crate::logs::tail(&path, tail).map_err(unreadable)?;
    if !write_stdout_bytes(&lines)? || !follow {
        return Ok(0);
    }
    let mut ended = !job.state.is_alive();
    let mut polls = 0;
    loop {
        std::thread::sleep(FOLLOW_POLL);
        let (new, next) = crate::logs::read_from(&path, offset).map_err(unreadable)?;
        offset = next;
        if !write_stdout_bytes(&new)? || (new.is_empty() && ended) {
            return Ok(0);
        }
        polls += 1;
        if !ended && polls % FOLLOW_LISTING_EVERY == 0 {
            match observe_live(&repo, backend.as_ref()) {
                Ok(now) => {
                    ended = of_replica(&now).is_none_or(|j| j.id != job.id || !j.state.is_alive())
                }
                Err(e) => tracing::warn!("{e:#}; still following"),
            }
        }
    }
}

/// Writes bytes to stdout as they are (a log need not be UTF-8); returns whether stdout is
/// still open: a closed pipe (`stackctl logs -f | head`) is no error, but ends a loop.
fn write_stdout_bytes(bytes: &[u8]) -> Result<bool> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        other => other.map(|()| true).map_err(Into::into),
    }
}

fn force_unlock(dir: &Path, lock_id: &str) -> Result<ExitCode> {
    let repo = reconcile::load_unresolved(dir, dir)?;
    let backend = backend(&repo)?;
    let lock = crate::lock::force_unlock(backend.as_ref(), &repo.settings.owner, lock_id)?;
    print_stdout(&format!("Removed {lock}.\n"))?;
    Ok(0)
}

/// Prints apply progress to stdout.
struct Printer;

impl Progress for Printer {
    fn cancelled(&mut self, job_ids: &[observed::JobId]) {
        let ids = observed::compact_job_ids(job_ids).join(" ");
        let _ = print_stdout(&format!("Cancelled {} jobs: {ids}\n", job_ids.len()));
    }
    fn build_submitted(&mut self, line: &str) {
        let _ = print_stdout(&format!("{line}\n"));
    }
    fn submitted(&mut self, service: &ServiceAddr, indexes: &str, array_id: u64) {
        let _ = print_stdout(&format!(
            "{service}[{indexes}]: submitted job array {array_id}\n"
        ));
    }
}

/// Writes to stdout; a closed pipe (`stackctl plan | head`) is not an error.
fn print_stdout(text: &str) -> Result<()> {
    write_stdout_bytes(text.as_bytes()).map(drop)
}

#[cfg(test)]
mod tests {
    use super::{Cli, Commands, PlanFormat, colour_wanted, normalize_args};
    use clap::Parser;
    use std::ffi::OsStr;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(normalize_args(args.iter().map(|a| a.into()))).unwrap()
    }

    #[test]
    fn terraforms_single_dash_out_is_the_out_option() {
        for args in [
            &["stackctl", "plan", "-out", "p.json"][..],
            &["stackctl", "plan", "-out=p.json"],
            &["stackctl", "plan", "--out", "p.json"],
        ] {
            match parse(args).command {
                Commands::Plan { out, .. } => {
                    assert_eq!(
                        out.as_deref(),
                        Some(std::path::Path::new("p.json")),
                        "{args:?}"
                    )
                }
                other => panic!("{other:?}"),
            }
        }
        match parse(&["stackctl", "plan", "--format", "markdown"]).command {
            Commands::Plan { format, json, .. } => {
                assert_eq!(format, Some(PlanFormat::Markdown));
                assert!(!json);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["stackctl", "plan", "--json", "--format", "text"]).is_err(),
            "--json is --format json"
        );
    }

    #[test]
    fn colour_only_on_a_terminal_without_an_opt_out() {
        assert!(colour_wanted(false, None, true));
        assert!(
            colour_wanted(false, Some(OsStr::new("")), true),
            "empty NO_COLOR is unset"
        );
        assert!(!colour_wanted(false, None, false), "not a terminal");
        assert!(!colour_wanted(true, None, true), "--no-color");
        assert!(
            !colour_wanted(false, Some(OsStr::new("1")), true),
            "NO_COLOR=1"
        );
    }
}
