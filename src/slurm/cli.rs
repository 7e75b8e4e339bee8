//! The CLI adapter: `squeue`, `sbatch`, `scancel` and `scontrol` from `PATH`, configured by the
//! environment (`SLURM_CONF`) like any other Slurm client; or the same commands on a login
//! node, through the system `ssh` ([`super::ssh`]).
//!
//! Commands that change Slurm (`sbatch`, `scancel`, `scontrol update`) run under a parent-death
//! signal, so none of them can outlive a killed stackctl (see [`Effect::Mutating`]). Over SSH
//! the signal kills the local `ssh`; a command the login node had already started may still
//! finish there, which the nonce lookup before any retry and the next plan's duplicate check
//! cover as they cover a lost reply.

use super::ssh::SshSession;
use super::{Backend, SlurmError};
use crate::cluster::{ClusterFacts, GpuFacts, NodeFacts, PartitionFacts};
use crate::job::JobRequest;
use crate::observed::output::JobOutput;
use crate::observed::{JobId, JobRecord, JobTimes, StartEstimate, compact_job_ids};
use crate::utc::unix_now;
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use wait_timeout::ChildExt;

/// The squeue output format: one `|`-separated line per job or array task. A field with a
/// suffix and no width prints in full. The comment goes last, so a stray `|` in a foreign
/// job's comment cannot shift the other fields.
///
/// `StartTime`, `EndTime` print as unix seconds (`SLURM_TIME_FORMAT=%s`, set for every squeue
/// call) and `exit_code` is Slurm's raw wait status: the crash-loop backoff reads when a job
/// failed, how long it ran and how it exited from this one listing, with no extra RPC.
const SQUEUE_FORMAT: &str = "ArrayJobID:|,ArrayTaskID:|,State:|,Reason:|,NodeList:|,StartTime:|,EndTime:|,exit_code:|,SubmitTime:|,Comment:|";

/// The time zone squeue lists in. The listing holds only unix seconds, the same in every zone;
/// but squeue prints each time with `strftime("%s")`, whose `mktime` re-reads the zone file
/// when `TZ` is unset: three times per line, a third of squeue's CPU time at 10,000 lines.
const LISTING_TZ: (&str, &str) = ("TZ", "UTC");

/// The sacct output format (`--parsable2`, one line per job or array task, no steps). Times
/// print as unix seconds like squeue's; `ExitCode` is `<exit>:<signal>`; the comment goes
/// last, so a stray `|` in it cannot shift the other fields.
const SACCT_FORMAT: &str = "JobID,State,Start,End,ExitCode,Submit,Comment";

/// How far back sacct looks: every run a job ever had counts (a completed run is never
/// repeated), and `--name` keeps the query to the repo's jobs.
const SACCT_SINCE: &str = "--starttime=2000-01-01T00:00:00";

/// Every Slurm command prints times as unix seconds.
const TIME_FORMAT: (&str, &str) = ("SLURM_TIME_FORMAT", "%s");

/// The exit status of a mutating command's child that found stackctl gone before it could run
/// the Slurm command (see [`guard_with_parent`]).
const PARENT_GONE_STATUS: i32 = 125;

/// Whether a command changes Slurm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// A read: if stackctl dies, letting it finish is harmless.
    ReadOnly,
    /// A write (`sbatch`, `scancel`, `scontrol update`): between fork and exec its child sets a
    /// parent-death signal (`prctl(PR_SET_PDEATHSIG, SIGKILL)`) and then checks that stackctl
    /// is still its parent ([`guard_with_parent`]), so the kernel kills it when stackctl dies, and
    /// it never starts if stackctl died while it was being spawned. One process start, no
    /// wrapper.
    ///
    /// Why this makes the order of two applies safe: an apply lists the jobs only after it
    /// holds the lock, and a contender breaks a dead holder's lock only once the holder's pid
    /// is gone. The kernel sends the parent-death signal inside the dying parent's exit, before
    /// its pid can disappear, and a process with SIGKILL pending never runs user code again;
    /// so by the time anyone sees the pid gone, no Slurm command it was running can send a new
    /// request, and none can submit after the next apply's listing.
    ///
    /// The residual window: a submit RPC the child had already sent (or was sending) when it
    /// was killed is still processed by slurmctld. In practice that happens long before a
    /// contender notices the dead pid, breaks the lock and sends its own listing RPC, but
    /// nothing orders the two inside slurmctld; a listing that raced it would miss that one
    /// job, the contender would submit the same replica again, and the next plan would see the
    /// two (both carry markers) and destroy the duplicate. The signal goes when the *thread*
    /// that spawned the child exits; `run` blocks that thread until the child ends, so this is
    /// the same as the process. An apply that submits on several threads at once
    /// ([`crate::apply`]) keeps each spawning thread blocked in `run` the same way.
    Mutating,
}

/// Slurm reached through its command-line clients, here or on a login node over SSH.
#[derive(Debug, Clone)]
pub struct CliBackend {
    /// Deadline for one command.
    pub timeout: Duration,
    /// The login node the commands run on; none runs them here.
    pub remote: Option<Arc<SshSession>>,
}

impl Default for CliBackend {
    fn default() -> Self {
        CliBackend {
            timeout: Duration::from_secs(60),
            remote: None,
        }
    }
}

impl CliBackend {
    /// Runs a Slurm command, killing it after the deadline. Errors name `program` and `args`,
    /// never a wrapper.
    ///
    /// Output goes to unnamed temporary files rather than pipes: squeue writes its listing in
    /// hundreds of small writes, and a pipe turns each into a wake-up of the reader.
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
        effect: Effect,
    ) -> Result<String, SlurmError> {
        self.run_full(program, args, stdin, effect)
            .map(|(out, _)| out)
    }

    /// [`CliBackend::run`], returning stderr too (where `sbatch --test-only` answers).
    fn run_full(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
        effect: Effect,
    ) -> Result<(String, String), SlurmError> {
        let running = self.start(program, args, &[], stdin, effect)?;
        self.finish(running)
    }

    /// The first half of [`CliBackend::run_full`]: starts the command, with `env` set besides
    /// [`TIME_FORMAT`], and feeds its stdin.
    fn start(
        &self,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
        effect: Effect,
    ) -> Result<Running, SlurmError> {
        let command = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        tracing::debug!(%command, "running");
        let (local_program, local_args): (&str, Vec<OsString>) = match &self.remote {
            None => (program, args.iter().map(OsString::from).collect()),
            Some(session) => {
                let env: Vec<(&str, &str)> = std::iter::once(TIME_FORMAT)
                    .chain(env.iter().copied())
                    .collect();
                ("ssh", session.args(program, args, &env))
            }
        };
        let spawn_error = |source| SlurmError::Spawn {
            program: local_program.to_owned(),
            source,
        };
        let stdout = tempfile::tempfile().map_err(spawn_error)?;
        let stderr = tempfile::tempfile().map_err(spawn_error)?;
        let mut child = command_for(local_program, &local_args, effect)
            .map_err(spawn_error)?
            .envs(env.iter().copied())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(stdout.try_clone().map_err(spawn_error)?)
            .stderr(stderr.try_clone().map_err(spawn_error)?)
            .spawn()
            .map_err(spawn_error)?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            // A write error means the child exited early; its status and stderr say why.
            let _ = pipe.write_all(input.as_bytes());
        }
        Ok(Running {
            program: program.to_owned(),
            command,
            child,
            stdout,
            stderr,
        })
    }

    /// The second half of [`CliBackend::run_full`]: waits for the command (killing it after the
    /// deadline) and returns its stdout and stderr, or its failure.
    fn finish(&self, running: Running) -> Result<(String, String), SlurmError> {
        let Running {
            program,
            command,
            mut child,
            mut stdout,
            mut stderr,
        } = running;
        let program = program.as_str();
        let spawn_error = |source| SlurmError::Spawn {
            program: match &self.remote {
                None => program.to_owned(),
                Some(_) => "ssh".to_owned(),
            },
            source,
        };
        let status = match child.wait_timeout(self.timeout).map_err(spawn_error)? {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SlurmError::Timeout {
                    command,
                    seconds: self.timeout.as_secs(),
                });
            }
        };
        let read = |file: &mut std::fs::File| -> String {
            let size = file.metadata().map_or(0, |m| m.len() as usize);
            let mut text = String::with_capacity(size);
            let _ = file
                .seek(SeekFrom::Start(0))
                .and_then(|_| file.read_to_string(&mut text));
            text
        };
        let (out, err) = (read(&mut stdout), read(&mut stderr));
        if !status.success() {
            // Classified once, from the exit status and Slurm's error number (super::failure).
            let class =
                super::failure::classify_cli(program, status.code(), &err, self.remote.is_some());
            let message = match &self.remote {
                Some(session) if status.code() == Some(super::ssh::SSH_FAILURE_STATUS) => {
                    session.failure(&err)
                }
                _ => match clean_message(program, &err) {
                    m if m.is_empty() => status.to_string(),
                    m => m,
                },
            };
            return Err(SlurmError::classified(command, message, class));
        }
        Ok((out, err))
    }
}

/// Builds the process for one Slurm command: the program itself, under a parent-death signal
/// for a mutating command (see [`Effect::Mutating`]).
///
/// Every command runs in a process group of its own, so a Ctrl-C at the terminal (which
/// signals the whole foreground group) reaches stackctl, which decides, and never cuts a
/// Slurm call short by itself.
fn command_for(program: &str, args: &[OsString], effect: Effect) -> std::io::Result<Command> {
    use std::os::unix::process::CommandExt;
    let (time_key, time_format) = TIME_FORMAT;
    let mut command = Command::new(program);
    command
        .args(args)
        .env(time_key, time_format)
        .process_group(0);
    if effect == Effect::Mutating {
        guard_with_parent(&mut command, std::process::id());
    }
    Ok(command)
}

/// Makes `command`'s child, between fork and exec, ask the kernel to SIGKILL it when the
/// thread that spawned it exits (stackctl blocks that thread until the child ends), and then
/// check that `parent` (stackctl's pid, read before the fork) is still its parent. A parent
/// that died between the fork and the `prctl` sends no signal, but the child is then already
/// reparented, so `getppid` (read after the `prctl`) no longer matches: the child exits with
/// [`PARENT_GONE_STATUS`] and never runs the Slurm command.
#[allow(unsafe_code)]
fn guard_with_parent(command: &mut Command, parent: u32) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed. It makes only the system calls `prctl`, `getppid` and `_exit` (all
    // async-signal-safe), with integer arguments; it allocates nothing and takes no lock
    // (`last_os_error` reads errno into a plain integer); `parent` is a copied integer.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                libc::_exit(PARENT_GONE_STATUS);
            }
            Ok(())
        });
    }
}

/// Returns what a failed Slurm command printed on stderr, without the noise around the
/// reason: the `sbatch: error: ` tag and `--test-only`'s `allocation failure: ` are dropped,
/// blank and repeated lines are skipped, and the remaining lines are joined with `; `.
fn clean_message(program: &str, stderr: &str) -> String {
    let tag = format!("{program}: error: ");
    let mut lines: Vec<&str> = Vec::new();
    for line in stderr.lines() {
        let line = line.trim();
        let line = line.strip_prefix(tag.as_str()).unwrap_or(line);
        let line = line.strip_prefix("allocation failure: ").unwrap_or(line);
        let line = line.trim();
        if !line.is_empty() && !lines.contains(&line) {
            lines.push(line);
        }
    }
    lines.join("; ")
}

impl Backend for CliBackend {
    fn list_jobs(&self) -> Result<Vec<JobRecord>, SlurmError> {
        self.start_list_jobs()()
    }

    fn start_list_jobs(&self) -> super::PendingListing<'_> {
        // `--me`: only this user's jobs are ever ours; `-t all` keeps ended jobs (within
        // MinJobAge); `-r` prints one line per array task, pending ones included.
        let args = [
            "--me",
            "--noheader",
            "--array",
            "--states=all",
            "--Format",
            SQUEUE_FORMAT,
        ];
        match self.start("squeue", &args, &[LISTING_TZ], None, Effect::ReadOnly) {
            Ok(running) => Box::new(move || parse_listing(&self.finish(running)?.0)),
            Err(error) => Box::new(move || Err(error)),
        }
    }

    fn submit(&self, job: &JobRequest) -> Result<u64, SlurmError> {
        let script = job.batch_script();
        let output = self.run("sbatch", &["--parsable"], Some(&script), Effect::Mutating)?;
        parse_submit_output(&output)
    }

    fn cancel(&self, job_ids: &[JobId]) -> Result<(), SlurmError> {
        // Tasks of one array go as one `A_[ranges]` argument: one request, not one per task.
        let args = compact_job_ids(job_ids);
        for chunk in args.chunks(200) {
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            self.run("scancel", &chunk, None, Effect::Mutating)?;
        }
        Ok(())
    }

    fn test_submit(&self, job: &JobRequest) -> Result<Option<StartEstimate>, SlurmError> {
        // `--test-only` asks slurmctld whether and when the job would start (one will-run RPC)
        // and submits nothing. Accepted: exit 0 and `sbatch: Job N to start at …` on stderr.
        // Rejected: exit 1 and the reason on stderr, e.g. `allocation failure: Requested node
        // configuration is not available`, which `run` cleans to the reason alone.
        let script = job.batch_script();
        let (_, stderr) =
            self.run_full("sbatch", &["--test-only"], Some(&script), Effect::ReadOnly)?;
        Ok(parse_start_estimate(&stderr, unix_now()))
    }

    fn job_output(&self, job_id: &JobId) -> Result<Option<JobOutput>, SlurmError> {
        let id = job_id.to_string();
        let args = [
            "--noheader",
            "--states=all",
            "--jobs",
            &id,
            "--Format",
            "STDOUT:|,STDERR:|,WORKDIR:|,NAME:|",
        ];
        let output = self.run("squeue", &args, None, Effect::ReadOnly)?;
        Ok(output.lines().next().and_then(parse_job_output))
    }

    fn update_comment(&self, job_id: &JobId, comment: &str) -> Result<(), SlurmError> {
        let id = format!("JobId={job_id}");
        let comment = format!("Comment={comment}");
        self.run(
            "scontrol",
            &["update", &id, &comment],
            None,
            Effect::Mutating,
        )
        .map(|_| ())
    }

    fn accounted_jobs(&self, names: &[String]) -> Result<Option<Vec<JobRecord>>, SlurmError> {
        if names.is_empty() {
            return Ok(Some(Vec::new()));
        }
        // sacct lists the calling user's jobs unless told otherwise (`--allusers`).
        let names = format!("--name={}", names.join(","));
        let args = [
            "--noheader",
            "--parsable2",
            "--allocations",
            SACCT_SINCE,
            &names,
            "--format",
            SACCT_FORMAT,
        ];
        let output = match self.run("sacct", &args, None, Effect::ReadOnly) {
            Ok(output) => output,
            Err(SlurmError::Failed { message, .. })
                if message.contains("accounting storage is disabled") =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mut last_comment: Arc<str> = Arc::from("");
        Ok(Some(
            output
                .lines()
                .filter(|line| line.contains(crate::observed::COMMENT_TAG))
                // A pending array not yet split into tasks (`123_[0-3]`) is no run yet.
                .filter_map(|line| parse_sacct_line(line, &mut last_comment))
                .collect(),
        ))
    }

    fn cluster_facts(&self) -> Result<ClusterFacts, SlurmError> {
        // Three reads, five slurmctld RPCs: partition info; node info (scontrol fetches the
        // partitions too); build info (the config) plus a ping that `show config` always sends.
        // `--all` includes hidden partitions and their nodes, which a job may still name.
        const PARTITIONS: [&str; 4] = ["--all", "--oneliner", "show", "partition"];
        const NODES: [&str; 4] = ["--all", "--oneliner", "show", "node"];
        const CONFIG: [&str; 3] = ["--all", "show", "config"];
        let parse_error = |args: &[&str], message: String| SlurmError::Parse {
            command: format!("scontrol {}", args.join(" ")),
            message,
        };
        // The three run at once: each waits mostly on slurmctld, and reads never conflict.
        let (partitions, nodes, config) = std::thread::scope(|scope| {
            let partitions =
                scope.spawn(|| self.run("scontrol", &PARTITIONS, None, Effect::ReadOnly));
            let nodes = scope.spawn(|| self.run("scontrol", &NODES, None, Effect::ReadOnly));
            let config = self.run("scontrol", &CONFIG, None, Effect::ReadOnly);
            let join = |h: std::thread::ScopedJoinHandle<'_, _>| {
                h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
            };
            (join(partitions), join(nodes), config)
        });
        let partitions = parse_partitions(&partitions?).map_err(|m| parse_error(&PARTITIONS, m))?;
        let nodes = parse_nodes(&nodes?).map_err(|m| parse_error(&NODES, m))?;
        let max_array_size = parse_max_array_size(&config?).map_err(|m| parse_error(&CONFIG, m))?;
        Ok(ClusterFacts {
            partitions,
            nodes,
            max_array_size,
            default_partition_unknown: false,
        })
    }

    fn home_dir(&self) -> Result<Option<String>, SlurmError> {
        match &self.remote {
            None => Ok(super::local_home()),
            Some(_) => {
                let home =
                    self.run("sh", &["-c", "printf %s \"$HOME\""], None, Effect::ReadOnly)?;
                Ok(Some(home).filter(|h| h.starts_with('/')))
            }
        }
    }

    fn unchecked(&self) -> Option<String> {
        None
    }

    fn max_in_flight(&self) -> usize {
        // For tests and benches (one at a time; measuring what slurmctld takes), and for a
        // site whose slurmctld wants fewer: not a repo setting.
        if let Some(n) = std::env::var("STACKCTL_MAX_IN_FLIGHT")
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
        {
            return n.max(1);
        }
        match &self.remote {
            None => super::MAX_IN_FLIGHT,
            // Every call is one session of the login node's ssh connection, and sshd allows
            // 10 per connection by default (`MaxSessions`).
            Some(_) => super::MAX_IN_FLIGHT.min(super::ssh::MAX_SESSIONS_IN_FLIGHT),
        }
    }

    fn create_dir(&self, path: &Path) -> Result<(), String> {
        match &self.remote {
            None => std::fs::create_dir_all(path).map_err(|e| e.to_string()),
            Some(_) => {
                let path = path.to_str().ok_or("the path is not UTF-8")?;
                self.run("mkdir", &["-p", "--", path], None, Effect::ReadOnly)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn sync_secrets(
        &self,
        dir: &Path,
        write: &std::collections::BTreeMap<String, String>,
        keep: &std::collections::BTreeSet<String>,
    ) -> Result<(), String> {
        if self.remote.is_none() {
            return crate::secret::sync_local(dir, write, keep);
        }
        // On the login node: one `sh` per file written (its text on stdin, never on a
        // command line), each keeping every wanted name, so the last leaves exactly those.
        let dir = dir.to_str().ok_or("the path is not UTF-8")?;
        let mut wanted: Vec<&str> = keep.iter().map(String::as_str).collect();
        wanted.extend(write.keys().map(String::as_str));
        let mut calls: Vec<(&str, Option<&str>)> = write
            .iter()
            .map(|(name, text)| (name.as_str(), Some(text.as_str())))
            .collect();
        if calls.is_empty() {
            calls.push(("", None));
        }
        for (name, text) in calls {
            let mut args = vec!["-c", crate::secret::SYNC_SCRIPT, "sh", dir, name];
            args.extend(wanted.iter().copied());
            self.run("sh", &args, Some(text.unwrap_or("")), Effect::ReadOnly)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn batch_script(&self, job_id: &JobId) -> Result<Option<String>, SlurmError> {
        self.run(
            "scontrol",
            &["write", "batch_script", &job_id.to_string(), "-"],
            None,
            Effect::ReadOnly,
        )
        .map(Some)
    }
}

/// Parses what `sbatch --parsable` printed: `jobid` or `jobid;cluster`. Anything else is a
/// [`SlurmError::Parse`]: sbatch exited 0, so the job may well exist, and the caller must treat
/// the outcome as unknown rather than as a rejection.
fn parse_submit_output(output: &str) -> Result<u64, SlurmError> {
    let id = output.trim().split(';').next().unwrap_or_default();
    match id.parse::<u64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(SlurmError::Parse {
            command: "sbatch --parsable".into(),
            message: format!("no job id in {output:?}"),
        }),
    }
}

/// Parses one line of [`SQUEUE_FORMAT`] output.
/// Reads `STDOUT|STDERR|WORKDIR|NAME|`; squeue prints `(null)` for an unset field.
fn parse_job_output(line: &str) -> Option<JobOutput> {
    let fields: Vec<&str> = line.split('|').collect();
    let [stdout, stderr, work_dir, name, ..] = fields[..] else {
        return None;
    };
    let field = |f: &str| {
        if f == "(null)" {
            String::new()
        } else {
            f.to_owned()
        }
    };
    let output = JobOutput {
        stdout: field(stdout),
        stderr: field(stderr),
        work_dir: field(work_dir),
        name: field(name),
    };
    (!output.stdout.is_empty() || !output.work_dir.is_empty()).then_some(output)
}

/// A Slurm command [`CliBackend::start`] started, for [`CliBackend::finish`].
struct Running {
    /// The Slurm program, as errors name it.
    program: String,
    /// The program and its arguments, as errors name them.
    command: String,
    /// The running process (the program itself, `ssh`, or a wrapper).
    child: std::process::Child,
    /// Where its stdout goes.
    stdout: std::fs::File,
    /// Where its stderr goes.
    stderr: std::fs::File,
}

/// Parses squeue's listing ([`SQUEUE_FORMAT`]), keeping the lines whose comment carries a
/// stackctl marker or lock.
fn parse_listing(output: &str) -> Result<Vec<JobRecord>, SlurmError> {
    // The tasks of an array share one comment: keep one copy of it.
    let mut last_comment: Arc<str> = Arc::from("");
    output
        .lines()
        .filter(|line| line.contains(crate::observed::COMMENT_TAG))
        .map(|line| {
            parse_squeue_line(line, &mut last_comment).ok_or_else(|| SlurmError::Parse {
                command: "squeue".into(),
                message: format!("cannot parse line {line:?}"),
            })
        })
        .collect()
}

fn parse_squeue_line(line: &str, last_comment: &mut Arc<str>) -> Option<JobRecord> {
    let mut fields = line.splitn(10, '|');
    let mut next = || fields.next().map(str::trim);
    // ArrayJobID is the job's own id when it is no array task. JobID is not listed: for an
    // array task it is the task's own id, and the last task shares the array's id, so
    // cancelling it would cancel the whole array. An array task is always `<array>_<task>`.
    let id = JobId {
        array: next()?.parse().ok()?,
        task: next()?.parse().ok(),
    };
    let state = next()?.to_owned();
    let reason = next()?.to_owned();
    let nodes = next()?.to_owned();
    // `N/A`, `Unknown`, `NONE` (not started, not ended) read as absent.
    let start = next()?.parse().ok().filter(|&t: &i64| t > 0);
    let end = next()?.parse().ok().filter(|&t: &i64| t > 0);
    let status: Option<u32> = next()?.parse().ok();
    let submit = next()?.parse().ok().filter(|&t: &i64| t > 0);
    let comment = next()?;
    let comment = comment.strip_suffix('|').unwrap_or(comment);
    if **last_comment != *comment {
        *last_comment = Arc::from(comment);
    }
    let comment = last_comment.clone();
    Some(JobRecord {
        id,
        comment,
        state,
        reason,
        nodes,
        times: JobTimes {
            start,
            end,
            exit: status.and_then(JobTimes::exit_from_wait_status),
            submit,
        },
    })
}

/// Parses one line of [`SACCT_FORMAT`]; `None` for a job id that names no single job or task.
fn parse_sacct_line(line: &str, last_comment: &mut Arc<str>) -> Option<JobRecord> {
    let mut fields = line.splitn(7, '|');
    let mut next = || fields.next().map(str::trim);
    let id = JobId::parse(next()?)?;
    // `CANCELLED by 0`: the state is the first word.
    let state = next()?.split_whitespace().next()?.to_owned();
    let start = next()?.parse().ok().filter(|&t: &i64| t > 0);
    let end = next()?.parse().ok().filter(|&t: &i64| t > 0);
    // `<exit>:<signal>`: killed by a signal has no exit code, as with squeue's wait status.
    let exit = match next()?.split_once(':') {
        Some((code, "0")) => code.parse().ok(),
        _ => None,
    };
    let submit = next()?.parse().ok().filter(|&t: &i64| t > 0);
    let comment = next()?;
    if **last_comment != *comment {
        *last_comment = Arc::from(comment);
    }
    Some(JobRecord {
        id,
        comment: last_comment.clone(),
        state,
        reason: String::new(),
        nodes: String::new(),
        times: JobTimes {
            start,
            end,
            exit,
            submit,
        },
    })
}

/// Splits one `scontrol --oneliner` record into its `Key=Value` fields. A word without `=`
/// continues the previous value (`OS=Linux 6.1.0 #1 SMP`). The first occurrence of a key wins,
/// so free text late in the record (a node's `Reason=`) cannot shadow a real field.
fn record_fields(line: &str) -> HashMap<&str, String> {
    let mut fields: Vec<(&str, String)> = Vec::new();
    for word in line.split_whitespace() {
        match word.split_once('=') {
            Some((key, value))
                if !key.is_empty()
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                fields.push((key, value.to_owned()));
            }
            _ => {
                if let Some((_, value)) = fields.last_mut() {
                    value.push(' ');
                    value.push_str(word);
                }
            }
        }
    }
    let mut map = HashMap::new();
    for (key, value) in fields {
        map.entry(key).or_insert(value);
    }
    map
}

/// Parses a numeric limit where `UNLIMITED`, `INFINITE`, `NONE` and `N/A` mean "no limit".
fn parse_limit<T: std::str::FromStr>(key: &str, value: &str) -> Result<Option<T>, String> {
    match value {
        "UNLIMITED" | "INFINITE" | "NONE" | "N/A" => Ok(None),
        _ => value
            .parse()
            .map(Some)
            .map_err(|_| format!("{key}={value} is not a number or UNLIMITED")),
    }
}

/// Parses a Slurm time limit into minutes, as Slurm reads one: `UNLIMITED`/`INFINITE` (no
/// limit), `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M` or `D-H:M:S`; seconds round up to a minute.
fn parse_time_limit(value: &str) -> Result<Option<u32>, String> {
    if matches!(value, "UNLIMITED" | "INFINITE" | "NONE" | "N/A") {
        return Ok(None);
    }
    let bad = || format!("{value:?} is not a Slurm time limit");
    let number = |s: &str| -> Result<u64, String> {
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (days, rest) = match value.split_once('-') {
        Some((days, rest)) => (Some(number(days)?), rest),
        None => (None, value),
    };
    let parts = rest
        .split(':')
        .map(number)
        .collect::<Result<Vec<u64>, String>>()?;
    let (hours, minutes, seconds) = match (days.is_some(), parts.as_slice()) {
        (false, [m]) => (0, *m, 0),
        (false, [m, s]) => (0, *m, *s),
        (_, [h, m, s]) => (*h, *m, *s),
        (true, [h]) => (*h, 0, 0),
        (true, [h, m]) => (*h, *m, 0),
        _ => return Err(bad()),
    };
    let minutes = (days.unwrap_or(0) * 24 + hours) * 60 + minutes + seconds.div_ceil(60);
    u32::try_from(minutes).map(Some).map_err(|_| bad())
}

/// Parses `scontrol --oneliner show partition`: one `PartitionName=…` record per line.
fn parse_partitions(text: &str) -> Result<Vec<PartitionFacts>, String> {
    let mut partitions = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("PartitionName=")) {
        let fields = record_fields(line);
        let get = |key: &str| fields.get(key).map(String::as_str);
        let name = get("PartitionName").unwrap_or_default().to_owned();
        let in_partition = |m: String| format!("partition {name:?}: {m}");
        let limit = |key: &str| get(key).map_or(Ok(None), |v| parse_limit::<u32>(key, v));
        partitions.push(PartitionFacts {
            is_default: get("Default") == Some("YES"),
            max_time_minutes: get("MaxTime")
                .map_or(Ok(None), parse_time_limit)
                .map_err(in_partition)?,
            max_nodes: limit("MaxNodes").map_err(in_partition)?,
            max_cpus_per_node: limit("MaxCPUsPerNode").map_err(in_partition)?,
            max_mem_per_node_mb: get("MaxMemPerNode")
                .map_or(Ok(None), |v| parse_limit::<u64>("MaxMemPerNode", v))
                .map_err(in_partition)?,
            nodes: crate::hostlist::expand(get("Nodes").unwrap_or_default()),
            name,
        });
    }
    Ok(partitions)
}

/// Parses `scontrol --oneliner show node`: one `NodeName=…` record per line.
///
/// CPUs are `CPUEfctv` where Slurm prints it (22.05 and later: `CPUTot` less specialized
/// cores, the most a job can get), else `CPUTot`; memory is `RealMemory` less `MemSpecLimit`.
fn parse_nodes(text: &str) -> Result<Vec<NodeFacts>, String> {
    let mut nodes = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("NodeName=")) {
        let fields = record_fields(line);
        let get = |key: &str| fields.get(key).map(String::as_str);
        let name = get("NodeName").unwrap_or_default().to_owned();
        let number = |key: &str| -> Result<u64, String> {
            let value = get(key).ok_or_else(|| format!("node {name:?} has no {key}"))?;
            value
                .parse()
                .map_err(|_| format!("node {name:?}: {key}={value} is not a number"))
        };
        let cpus = match get("CPUEfctv") {
            Some(_) => number("CPUEfctv")?,
            None => number("CPUTot")?,
        };
        let spec_memory = match get("MemSpecLimit") {
            Some(_) => number("MemSpecLimit")?,
            None => 0,
        };
        let gpus = parse_gres(get("Gres").unwrap_or_default())
            .map_err(|m| format!("node {name:?}: {m}"))?;
        let allocated = get("CPUAlloc").and_then(|v| v.parse::<u64>().ok());
        nodes.push(NodeFacts {
            cpus: u32::try_from(cpus).map_err(|_| format!("node {name:?}: {cpus} CPUs"))?,
            cpus_idle: allocated.map(|a| u32::try_from(cpus.saturating_sub(a)).unwrap_or(0)),
            memory_mb: number("RealMemory")?.saturating_sub(spec_memory),
            gpus,
            name,
        });
    }
    Ok(nodes)
}

/// Parses a node's `Gres=` into its GPUs: `gpu:a100:4(S:0-1),gpu:h100:2(S:1)`, untyped `gpu:4`,
/// `gpu` (one), `(null)`. Other resources (`shard:8`, `mps:100`) are skipped, socket bindings
/// `(S:…)` and the `no_consume` flag ignored, and groups of one type added up.
pub(crate) fn parse_gres(text: &str) -> Result<Vec<GpuFacts>, String> {
    let mut gpus: Vec<GpuFacts> = Vec::new();
    let text = text.trim();
    if text.is_empty() || text == "(null)" {
        return Ok(gpus);
    }
    // Split on commas outside parentheses: a socket list may be `(S:0,2)`.
    for item in crate::hostlist::split_outside(text, '(', ')') {
        let item = item.split('(').next().unwrap_or_default().trim();
        let mut parts: Vec<&str> = item.split(':').filter(|p| *p != "no_consume").collect();
        if parts.first() != Some(&"gpu") {
            continue;
        }
        parts.remove(0);
        let count = match parts.last() {
            Some(last) if last.chars().all(|c| c.is_ascii_digit()) => {
                let count = last
                    .parse::<u32>()
                    .map_err(|_| format!("GPU count in {item:?} is out of range"))?;
                parts.pop();
                count
            }
            _ => 1,
        };
        let kind = match parts.as_slice() {
            [] => None,
            [kind] => Some((*kind).to_owned()),
            _ => return Err(format!("cannot read GPUs from {item:?}")),
        };
        match gpus.iter_mut().find(|g| g.kind == kind) {
            Some(group) => group.count += count,
            None => gpus.push(GpuFacts { kind, count }),
        }
    }
    Ok(gpus)
}

/// Reads `MaxArraySize` from `scontrol show config` (`MaxArraySize = 1001`); `None` if absent.
fn parse_max_array_size(text: &str) -> Result<Option<u32>, String> {
    for line in text.lines() {
        if let Some((key, value)) = line.split_once('=')
            && key.trim() == "MaxArraySize"
        {
            let value = value.trim();
            return value
                .parse()
                .map(Some)
                .map_err(|_| format!("MaxArraySize = {value} is not a number"));
        }
    }
    Ok(None)
}

/// Reads `sbatch --test-only`'s answer (on stderr, times as unix seconds because every command
/// runs with `SLURM_TIME_FORMAT=%s`): `sbatch: Job 123 to start at 1795744209 using 1
/// processors on nodes node3 in partition debug`. `None` when there is no such line.
pub(crate) fn parse_start_estimate(stderr: &str, asked_at: i64) -> Option<StartEstimate> {
    let line = stderr.lines().find(|l| l.contains(" to start at "))?;
    let after = |word: &str| -> Option<&str> {
        let (_, rest) = line.split_once(word)?;
        rest.split_whitespace().next()
    };
    let at = after(" to start at ")?;
    let at = at.parse::<i64>().ok().or_else(|| parse_iso_utc(at))?;
    Some(StartEstimate {
        at,
        asked_at,
        nodes: after(" on nodes ").unwrap_or_default().to_owned(),
        partition: after(" in partition ").unwrap_or_default().to_owned(),
    })
}

/// Reads `2026-11-27T14:05:00` as UTC (Slurm's default format, should `SLURM_TIME_FORMAT` be
/// ignored): unix seconds.
fn parse_iso_utc(text: &str) -> Option<i64> {
    let (date, time) = text.split_once('T')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let ([y, m, day], [h, min, sec]) = (d.as_slice(), t.as_slice()) else {
        return None;
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if *m <= 2 { y - 1 } else { *y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + min * 60 + sec)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_test_only_answer_gives_the_start_estimate() {
        let stderr = "sbatch: Job 20562 to start at 1795744209 using 1 processors on nodes node3 in partition debug\n";
        let estimate = super::parse_start_estimate(stderr, 1_795_744_200).unwrap();
        assert_eq!(estimate.at, 1_795_744_209);
        assert_eq!(estimate.asked_at, 1_795_744_200);
        assert_eq!(estimate.nodes, "node3");
        assert_eq!(estimate.partition, "debug");
        let iso = "sbatch: Job 123 to start at 2026-11-27T14:05:00 using 2 processors on nodes node[1-2] in partition gpu";
        let estimate = super::parse_start_estimate(iso, 0).unwrap();
        assert_eq!(estimate.at, 1_795_788_300);
        assert_eq!(estimate.nodes, "node[1-2]");
        assert_eq!(super::parse_start_estimate("sbatch: warning: x\n", 0), None);
    }

    use super::*;

    #[test]
    fn job_output_lines_read_the_recorded_patterns() {
        let output =
            parse_job_output("/l 1/s.a-%A_%a.out|/l 1/s.a-%A_%a.err|/home/u|s.a|").unwrap();
        assert_eq!(output.stdout, "/l 1/s.a-%A_%a.out");
        assert_eq!(output.stderr, "/l 1/s.a-%A_%a.err");
        assert_eq!(
            (output.work_dir.as_str(), output.name.as_str()),
            ("/home/u", "s.a")
        );
        assert_eq!(
            parse_job_output("(null)|(null)|(null)|x|").map(|o| o.name),
            None
        );
        assert_eq!(parse_job_output("only|two"), None);
    }

    /// Real output of the test cluster (Slurm 22.05), captured with the commands
    /// `cluster_facts` runs.
    const PARTITIONS: &str = include_str!("../../tests/fixtures/scontrol/partition_22.05.txt");
    const NODES: &str = include_str!("../../tests/fixtures/scontrol/node_22.05.txt");
    const CONFIG: &str = include_str!("../../tests/fixtures/scontrol/config_22.05.txt");
    /// Hand-made records in the same format: limits, hostlists and GRES the test cluster lacks.
    const PARTITION_VARIANTS: &str =
        include_str!("../../tests/fixtures/scontrol/partition_variants.txt");
    const NODE_VARIANTS: &str = include_str!("../../tests/fixtures/scontrol/node_variants.txt");

    fn gpu(kind: Option<&str>, count: u32) -> GpuFacts {
        GpuFacts {
            kind: kind.map(str::to_owned),
            count,
        }
    }

    #[test]
    fn parses_array_tasks_and_plain_jobs() {
        let task = parse_squeue_line(
            "12|3|RUNNING|None|node1|1700000000|NONE|0|1699999990|stackctl/v1;owner=a|",
            &mut Arc::from(""),
        )
        .unwrap();
        assert_eq!(task.id.to_string(), "12_3");
        assert_eq!(&*task.comment, "stackctl/v1;owner=a");
        assert_eq!(
            task.times,
            JobTimes {
                start: Some(1_700_000_000),
                end: None,
                exit: Some(0),
                submit: Some(1_699_999_990),
            }
        );
        let plain = parse_squeue_line(
            "40|N/A|PENDING|Resources||N/A|Unknown|0|Unknown|a|b|c|",
            &mut Arc::from(""),
        )
        .unwrap();
        assert_eq!(
            plain.id,
            JobId {
                array: 40,
                task: None
            }
        );
        assert_eq!(&*plain.comment, "a|b|c");
        assert_eq!((plain.times.start, plain.times.end), (None, None));
        // `exit 1` is wait status 256; a SIGKILL is 9 (no exit code); the unhealthy exit 97.
        let failed = parse_squeue_line(
            "41|0|FAILED|NonZeroExitCode|node2|1700000000|1700000005|256|1699999000|x|",
            &mut Arc::from(""),
        )
        .unwrap();
        assert_eq!(failed.times.exit, Some(1));
        assert_eq!(failed.times.end, Some(1_700_000_005));
        assert_eq!(JobTimes::exit_from_wait_status(9), None);
        assert_eq!(JobTimes::exit_from_wait_status(97 << 8), Some(97));
    }

    #[test]
    fn a_listing_keeps_stackctl_lines_shares_comments_and_fails_on_a_broken_line() {
        // squeue's listing on the test cluster (`SLURM_TIME_FORMAT=%s`, SQUEUE_FORMAT): two
        // running tasks of one array, a pending one, a lock, and a job of another tool.
        let marker = "stackctl/v1;owner=planspeed-probe;stack=bench;svc=svc;\
                      spec=0a8868bc5becb146;nonce=3928268cf3a2;idx=0-9999";
        let output = format!(
            "49625|0|RUNNING|None|node1|1796494109|1796497709|0|1796494108|{marker}|\n\
             49625|1|RUNNING|None|node1|1796494109|1796497709|0|1796494108|{marker}|\n\
             49630|N/A|PENDING|Resources||N/A|N/A|0|1796494110|bench-loop-x|\n\
             49625|48|PENDING|Resources||1796519280|1796522880|0|1796494108|{marker}|\n\
             49623|N/A|CANCELLED|JobHeldUser||1796494108|1796494108|0|1796494108|\
             stackctl-lock/v1;owner=planspeed-probe;nonce=66d5bde632e2|\n"
        );
        let records = parse_listing(&output).unwrap();
        let ids: Vec<String> = records.iter().map(|r| r.id.to_string()).collect();
        assert_eq!(ids, ["49625_0", "49625_1", "49625_48", "49623"]);
        assert_eq!(&*records[2].comment, marker);
        assert_eq!(records[2].state, "PENDING");
        assert_eq!(records[2].times.start, Some(1_796_519_280));
        // The tasks of one array share one copy of their comment.
        assert!(Arc::ptr_eq(&records[0].comment, &records[2].comment));
        assert!(records[3].comment.starts_with("stackctl-lock/v1;"));
        // A stackctl line that does not parse is an error naming it, never a dropped job.
        let broken = format!("{output}49625|x|RUNNING|{marker}|\n");
        let error = parse_listing(&broken).unwrap_err().to_string();
        assert!(error.contains("49625|x|RUNNING"), "{error}");
        assert!(parse_listing("").unwrap().is_empty());
    }

    #[test]
    fn sacct_lines_of_the_test_cluster_read_back() {
        let mut last = Arc::from("");
        let done = parse_sacct_line(
            "20097_1|COMPLETED|1796481075|1796481081|0:0|1796481070|stackctl/v1;owner=a;stack=s;svc=b",
            &mut last,
        )
        .unwrap();
        assert_eq!(done.id.to_string(), "20097_1");
        assert_eq!(done.state, "COMPLETED");
        assert_eq!(done.times.start, Some(1796481075));
        assert_eq!(done.times.end, Some(1796481081));
        assert_eq!(done.times.exit, Some(0));
        assert_eq!(done.times.submit, Some(1796481070));
        assert_eq!(&*done.comment, "stackctl/v1;owner=a;stack=s;svc=b");
        let cancelled = parse_sacct_line(
            "20098|CANCELLED by 0|1796481075|1796481081|0:15|1796481075|stackctl/v1;x|y",
            &mut last,
        )
        .unwrap();
        assert_eq!(cancelled.state, "CANCELLED");
        assert_eq!(cancelled.id.task, None);
        assert_eq!(cancelled.times.exit, None, "killed by signal 15");
        assert_eq!(&*cancelled.comment, "stackctl/v1;x|y");
        let failed =
            parse_sacct_line("7_0|FAILED|Unknown|Unknown|3:0|1|stackctl/v1", &mut last).unwrap();
        assert_eq!(failed.times.exit, Some(3));
        assert_eq!((failed.times.start, failed.times.end), (None, None));
        assert_eq!(
            parse_sacct_line(
                "7_[0-3]|PENDING|Unknown|Unknown|0:0|1|stackctl/v1",
                &mut last
            ),
            None
        );
    }

    #[test]
    fn submit_output_is_a_job_id_or_an_unknown_outcome() {
        assert_eq!(parse_submit_output("42\n").unwrap(), 42);
        assert_eq!(parse_submit_output("42;cluster-a\n").unwrap(), 42);
        for output in ["", "\n", "Submitted batch job 42\n", "x42", "0", "42 43"] {
            let error = parse_submit_output(output).unwrap_err();
            assert!(
                matches!(error, SlurmError::Parse { .. }),
                "{output:?}: {error:?}"
            );
            // sbatch exited 0: the job may exist, so this is neither a rejection nor retryable.
            assert!(!error.is_definite_rejection(), "{output:?}");
            assert!(!error.is_transient(), "{output:?}");
        }
    }

    #[test]
    fn real_partition_output_of_the_test_cluster() {
        assert_eq!(
            parse_partitions(PARTITIONS).unwrap(),
            [PartitionFacts {
                name: "debug".into(),
                is_default: true,
                max_time_minutes: None,
                max_nodes: None,
                max_cpus_per_node: None,
                max_mem_per_node_mb: None,
                nodes: vec!["node1".into(), "node2".into(), "node3".into()],
            }]
        );
    }

    #[test]
    fn real_node_output_of_the_test_cluster() {
        let nodes = parse_nodes(NODES).unwrap();
        let expected: Vec<NodeFacts> = [("node1", "a100"), ("node2", "a100"), ("node3", "h100")]
            .into_iter()
            .map(|(name, kind)| NodeFacts {
                name: name.into(),
                cpus: 16,
                memory_mb: 16000,
                cpus_idle: Some(16),
                gpus: vec![gpu(Some(kind), 4)],
            })
            .collect();
        assert_eq!(nodes, expected);
    }

    #[test]
    fn real_config_output_gives_max_array_size() {
        assert_eq!(parse_max_array_size(CONFIG).unwrap(), Some(100_001));
        assert_eq!(parse_max_array_size("MaxJobCount = 5\n").unwrap(), None);
        assert!(parse_max_array_size("MaxArraySize            = lots\n").is_err());
    }

    #[test]
    fn partition_limits_hostlists_and_default() {
        let parts = parse_partitions(PARTITION_VARIANTS).unwrap();
        let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["gpu", "short", "tiny"]);
        let (gpu, short, tiny) = (&parts[0], &parts[1], &parts[2]);
        assert!(!gpu.is_default && short.is_default && !tiny.is_default);
        assert_eq!(gpu.max_time_minutes, Some(24 * 60));
        assert_eq!(short.max_time_minutes, Some(120));
        assert_eq!(tiny.max_time_minutes, Some(30));
        assert_eq!(
            (gpu.max_nodes, short.max_nodes, tiny.max_nodes),
            (Some(2), None, Some(1))
        );
        assert_eq!(
            (gpu.max_cpus_per_node, short.max_cpus_per_node),
            (Some(32), None)
        );
        assert_eq!(
            (gpu.max_mem_per_node_mb, short.max_mem_per_node_mb),
            (Some(64_000), None)
        );
        assert_eq!(gpu.nodes, ["gpu01", "gpu02", "big1"]);
        assert_eq!(short.nodes, ["cpu001", "cpu002", "cpu003"]);
        assert!(tiny.nodes.is_empty());
    }

    #[test]
    fn node_gres_variants_cpus_and_memory() {
        let nodes = parse_nodes(NODE_VARIANTS).unwrap();
        let by_name = |name: &str| nodes.iter().find(|n| n.name == name).unwrap();
        assert_eq!(nodes.len(), 4);
        let gpu01 = by_name("gpu01");
        assert_eq!((gpu01.cpus, gpu01.memory_mb), (64, 512_000));
        assert_eq!(gpu01.gpus, [gpu(Some("h100"), 4)]);
        // Specialized cores and memory are not for jobs; shards are not GPUs.
        let gpu02 = by_name("gpu02");
        assert_eq!((gpu02.cpus, gpu02.memory_mb), (60, 510_000));
        assert_eq!(gpu02.gpus, [gpu(Some("a100"), 2), gpu(Some("h100"), 2)]);
        // No CPUEfctv (Slurm 21.08): CPUTot. The Reason's look-alike fields change nothing.
        let big1 = by_name("big1");
        assert_eq!((big1.cpus, big1.memory_mb), (64, 256_000));
        assert_eq!(big1.gpus, [gpu(None, 2)]);
        assert!(by_name("cpu001").gpus.is_empty());
    }

    #[test]
    fn gres_forms() {
        assert_eq!(parse_gres("(null)").unwrap(), []);
        assert_eq!(parse_gres("").unwrap(), []);
        assert_eq!(parse_gres("gpu:4").unwrap(), [gpu(None, 4)]);
        assert_eq!(parse_gres("gpu").unwrap(), [gpu(None, 1)]);
        assert_eq!(
            parse_gres("gpu:h100:4(S:0)").unwrap(),
            [gpu(Some("h100"), 4)]
        );
        assert_eq!(
            parse_gres("gpu:a100:2(S:0,2),mps:200,gpu:a100:no_consume:2,gpu:v100:1").unwrap(),
            [gpu(Some("a100"), 4), gpu(Some("v100"), 1)]
        );
        assert!(parse_gres("gpu:a:b:4").is_err());
        assert!(parse_gres("gpu:a100:99999999999").is_err());
    }

    #[test]
    fn time_limits_as_slurm_writes_them() {
        for (text, minutes) in [
            ("UNLIMITED", None),
            ("INFINITE", None),
            ("1-00:00:00", Some(1440)),
            ("2-12:30:00", Some(2 * 1440 + 12 * 60 + 30)),
            ("2:00:00", Some(120)),
            ("30:00", Some(30)),
            ("30:01", Some(31)),
            ("45", Some(45)),
            ("1-02", Some(1440 + 120)),
            ("1-02:03", Some(1440 + 123)),
        ] {
            assert_eq!(parse_time_limit(text), Ok(minutes), "{text}");
        }
        for bad in ["", "1:2:3:4", "a", "-1:00", "1-", "1-2:3:4:5"] {
            assert!(parse_time_limit(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_numbers_are_parse_errors_not_missing_limits() {
        assert!(parse_partitions("PartitionName=p MaxNodes=many Nodes=a\n").is_err());
        assert!(parse_partitions("PartitionName=p MaxTime=soon Nodes=a\n").is_err());
        assert!(parse_nodes("NodeName=n CPUTot=16 Gres=(null)\n").is_err());
        assert!(parse_nodes("NodeName=n CPUTot=x RealMemory=1 Gres=(null)\n").is_err());
        // Absent limits are no limits; other lines (`No nodes in the system`) are ignored.
        let minimal = parse_partitions("PartitionName=p Nodes=a\nnoise\n").unwrap();
        assert_eq!(minimal[0].max_time_minutes, None);
        assert_eq!(minimal[0].nodes, ["a"]);
    }

    #[test]
    fn failure_messages_keep_the_reason_without_the_noise() {
        assert_eq!(
            clean_message(
                "sbatch",
                "sbatch: error: invalid partition specified: nosuch\n\
                 allocation failure: Invalid partition name specified\n"
            ),
            "invalid partition specified: nosuch; Invalid partition name specified"
        );
        assert_eq!(
            clean_message(
                "sbatch",
                "allocation failure: Requested node configuration is not available\n"
            ),
            "Requested node configuration is not available"
        );
        assert_eq!(
            clean_message(
                "sbatch",
                "sbatch: error: Batch job submission failed: Invalid job array specification\n"
            ),
            "Batch job submission failed: Invalid job array specification"
        );
        assert_eq!(
            clean_message("scancel", "scancel: error: x\n\nscancel: error: x\n"),
            "x"
        );
        assert_eq!(clean_message("sbatch", " \n"), "");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error_naming_it_even_when_wrapped() {
        for effect in [Effect::ReadOnly, Effect::Mutating] {
            let error = CliBackend::default()
                .run("stackctl-no-such-program", &["x"], None, effect)
                .unwrap_err();
            match error {
                SlurmError::Spawn { program, source } => {
                    assert_eq!(program, "stackctl-no-such-program");
                    assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{effect:?}");
                }
                other => panic!("{effect:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn mutating_commands_run_with_their_args_stdin_and_errors_named_after_the_program() {
        let backend = CliBackend::default();
        let out = backend
            .run("cat", &["-"], Some("script\n"), Effect::Mutating)
            .unwrap();
        assert_eq!(out, "script\n");
        let out = backend
            .run("echo", &["a b", "$c"], None, Effect::Mutating)
            .unwrap();
        assert_eq!(out, "a b $c\n");
        match backend.run("ls", &["/nonexistent-stackctl"], None, Effect::Mutating) {
            Err(SlurmError::Failed { command, message }) => {
                assert_eq!(command, "ls /nonexistent-stackctl");
                // The program's own name, as it would print without the wrapper.
                assert!(message.starts_with("ls: cannot access"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // The signal is really set (util-linux's setpriv -d, run as the command, reads it back).
        let dump = backend
            .run("setpriv", &["-d"], None, Effect::Mutating)
            .unwrap();
        assert!(dump.contains("Parent death signal: KILL"), "{dump}");
        let dump = backend
            .run("setpriv", &["-d"], None, Effect::ReadOnly)
            .unwrap();
        assert!(dump.contains("Parent death signal: [none]"), "{dump}");
    }

    #[test]
    fn the_guard_runs_nothing_once_stackctl_is_no_longer_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let run = |parent: u32| {
            let mut command = Command::new("touch");
            command.arg(&marker);
            guard_with_parent(&mut command, parent);
            command.output().unwrap()
        };
        // Our own pid (the parent really is us): the command runs.
        assert!(run(std::process::id()).status.success());
        assert!(marker.exists());
        std::fs::remove_file(&marker).unwrap();
        // Any other pid (a parent that died and left the child to a reaper): it does not.
        let refused = run(1);
        assert_eq!(refused.status.code(), Some(PARENT_GONE_STATUS));
        assert!(!marker.exists());
    }
}
