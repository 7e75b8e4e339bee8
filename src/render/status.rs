//! Per-service status: desired and observed replica counts, why replicas wait or are stuck,
//! failed replicas with their log files, nodes and endpoints.
//!
//! `status --json` prints `{"format_version": "1.6", "services": [...], "jobs": [...], "locks": [...]}` with one object per
//! service, the fields of [`ServiceStatus`]. Minor versions only add fields: 1.1 added
//! `stuck_reasons` and `failures`, counts `failed` per replica index, and lists every node
//! of a multi-node replica in `nodes` and `endpoints`; 1.2 added `ready`, `not_ready` and
//! `failures[].unhealthy`, and `endpoints` lists ready replicas only, at the address and
//! ports each job reported about itself; 1.3 added `crash_loops`, 1.4 `time_left`, 1.5
//! `replica_endpoints`, and `out_of_date`, `held`, `rollouts_stopped` and `endpoint_moved`
//! (each left out when empty); 1.6 the top-level `jobs` (one-shot jobs, which are not in
//! `services`: where each stands and its last run, [`JobSummary`]).
//!
//! What a plan would do is part of the status too ([`add_plan`]): a service whose new
//! replicas are held (`depends_on`, `endpoint_env`) says why, and a rollout that stopped is
//! shown with the replicas that still run the older spec, since the counts alone (2/2 ready)
//! look healthy.

use crate::desired::{Desired, ServiceAddr, SpecHash};
use crate::hostlist;
use crate::observed::{Health, JobId, JobState, LiveJob, Observed};
use crate::render::script::{self, ScriptContext};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The version of the JSON status format; minor versions only add fields.
pub const FORMAT_VERSION: &str = "1.6";

/// The status of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    /// `<stack>.<service>`.
    pub service: String,
    /// Replicas wanted (0 for a service no longer in the repo).
    pub desired: u32,
    /// Replicas running.
    pub running: u32,
    /// Running replicas that are ready: their health check passes, or they have none.
    /// Added in 1.2.
    pub ready: u32,
    /// Running replicas whose health check does not pass (yet). Added in 1.2.
    pub not_ready: u32,
    /// Replicas waiting to start (pending, configuring, requeued).
    pub pending: u32,
    /// Why replicas are pending, as Slurm says (`Resources`, `Priority`, `Dependency`, …).
    pub pending_reasons: Vec<String>,
    /// Replicas alive but not running and not going to by themselves: stopped, being
    /// signalled, held, requeued-held, suspended, or in a state stackctl does not know.
    pub stuck: u32,
    /// Why replicas are stuck: the Slurm state (`STOPPED`, `SUSPENDED`, …), or for a held
    /// pending job Slurm's reason (`JobHeldUser`, `JobHeldAdmin`, …). Added in 1.1.
    pub stuck_reasons: Vec<String>,
    /// Replica indexes whose latest job failed and that have no live job: crashed and not
    /// recreated yet. Slurm lists ended jobs only for a while (MinJobAge).
    pub failed: u32,
    /// The latest failed job of each failed index, with its log files. Added in 1.1.
    pub failures: Vec<Failure>,
    /// Nodes the running replicas are on, every node of a multi-node replica.
    pub nodes: Vec<String>,
    /// `host:port` of each ready replica, without duplicates: the address and actual ports
    /// the job reported about itself; for a job that reported no ports, every node of the
    /// replica with each fixed port of its spec (none when the spec is unknown). Ready
    /// replicas only since 1.2.
    pub endpoints: Vec<String>,
    /// Each ready replica with its ports, named: the same addresses as `endpoints`, grouped
    /// per replica; a ready replica without ports has an empty list. Added in 1.5.
    pub replica_endpoints: Vec<ReplicaEndpoints>,
    /// Replicas in a crash loop: the latest job of the index failed, or is the successor of
    /// a failed one. Added in 1.3.
    pub crash_loops: Vec<CrashLoop>,
    /// How long each running replica has left before Slurm's time limit ends it, by index.
    /// Left out when no running replica has a known end. Added in 1.4.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub time_left: Vec<TimeLeft>,
    /// Alive replicas running a spec other than the repo's (an older one, or a rollout that
    /// has not reached them or stopped). Left out when none. Added in 1.5.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub out_of_date: Vec<OutOfDate>,
    /// Why the service's new replicas are not submitted, when a plan holds them
    /// (`depends_on`, `endpoint_env`). Left out when not held. Added in 1.5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// Rollouts of the service that stopped: the successor that stopped it and the job that
    /// keeps running. Left out when none. Added in 1.5.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rollouts_stopped: Vec<RolloutStopped>,
    /// Alive replicas given another service's address (`endpoint_env`) that no ready replica
    /// of that service serves any more ([`crate::plan::moved_endpoints`]). Left out when
    /// none. Added in 1.5.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoint_moved: Vec<EndpointMoved>,
}

/// A one-shot job (`kind: job`) in the status: what a plan would do with it, and its last
/// run. Added in 1.6.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobSummary {
    /// `<stack>.<service>`.
    pub service: String,
    /// Where it stands, as the plan says: `{"state": "done", "at": …}`, `run`,
    /// `rerun_spec_changed`, `rerun_requested`, `held` (with `reason`), `running` (with
    /// `job_id`), `retry` (`retry`, `of`, `at`), `failed` (`runs`) or `off`.
    pub plan: crate::plan::jobs::JobStatus,
    /// The plan's words for it, as `plan` prints them (`s.load: done at 12:00:05 UTC (job
    /// 12_0)`).
    pub summary: String,
    /// The latest ended run with the current spec; none before one ended.
    pub last_run: Option<LastRun>,
}

/// A job's last run: from its record, Slurm's listing or accounting (`sacct`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastRun {
    /// Its Slurm job.
    pub job_id: JobId,
    /// How it ended (`COMPLETED`, `FAILED`, `TIMEOUT`, `CANCELLED`, `LOST`, …).
    pub state: String,
    /// Whether it completed (exit 0).
    pub succeeded: bool,
    /// Its exit code, when known.
    pub exit: Option<i32>,
    /// When it started (unix seconds), when known.
    pub start: Option<i64>,
    /// When it ended (unix seconds).
    pub end: i64,
    /// The numbers of its `results.json`, by name; empty when it wrote none or its record is
    /// not readable here (over SSH, or a record that was removed).
    pub metrics: BTreeMap<String, f64>,
}

// Metrics are finite numbers only (`observed::runs::parse_metrics`), so equality is reflexive.
impl Eq for LastRun {}

/// A replica whose `endpoint_env` address moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointMoved {
    /// The replica index.
    pub index: u32,
    /// Its job.
    pub job_id: JobId,
    /// The variables whose address moved, in name order.
    pub variables: Vec<String>,
    /// The services they name (`stack/service`), in the same order.
    pub services: Vec<String>,
    /// Whether a plan replaces the replica for it: false with `on_endpoint_move: keep` and
    /// for a protected service.
    pub replaced: bool,
}

/// Where one ready replica serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaEndpoints {
    /// The replica index.
    pub index: u32,
    /// Its job.
    pub job_id: JobId,
    /// Every port on every host, in declared order; empty for a replica without ports.
    pub ports: Vec<Served>,
    /// False when the replica reported no ports and its spec could not be read back: its
    /// `ports` are then unknown, not none.
    pub ports_known: bool,
}

/// One port of a ready replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Served {
    /// The address the job reported, or a node name.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The port's name in the spec, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A replica that runs a spec other than the repo's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutOfDate {
    /// The replica index.
    pub index: u32,
    /// Its job.
    pub job_id: JobId,
    /// The job's state (`RUNNING`, `PENDING`, …).
    pub state: String,
    /// The spec hash the job runs.
    pub spec: SpecHash,
    /// The spec hash the repo wants.
    pub desired_spec: SpecHash,
}

/// A rollout that stopped on one replica index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolloutStopped {
    /// The replica index.
    pub index: u32,
    /// The successor that stopped it.
    pub successor: JobId,
    /// The job that keeps running.
    pub predecessor: JobId,
    /// Why, with Slurm's pending reason or the health verdict.
    pub why: String,
}

/// How long a running replica has left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimeLeft {
    /// The replica index.
    pub index: u32,
    /// Its job.
    pub job_id: JobId,
    /// When its time limit ends it (unix seconds, squeue's `EndTime`).
    pub ends_at: i64,
    /// Seconds from the listing to `ends_at` (0 once past).
    pub seconds: i64,
}

/// A replica in a crash loop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrashLoop {
    /// The replica index.
    pub index: u32,
    /// The index's latest job: the failed one, or its successor.
    pub job_id: JobId,
    /// Restarts in a row so far.
    pub restarts: u32,
    /// The last failure, when known.
    pub last_failure: Option<crate::observed::FailRecord>,
    /// When the successor waiting in the queue may start (unix seconds), if one waits.
    pub not_before: Option<i64>,
    /// Whether `max_attempts` restarts failed and the replica is not recreated.
    pub gave_up: bool,
    /// The stderr log of the failed job, when that job is still listed by Slurm.
    pub stderr: Option<String>,
    /// Its last lines, filled in by the command (which may read files); empty otherwise.
    pub stderr_tail: Vec<String>,
    /// Why the stderr log could not be read from here, when it could not.
    pub stderr_unreadable: Option<String>,
}

/// A failed replica: the latest job of its index ended in failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The job, `<array>_<index>`.
    pub job_id: JobId,
    /// The replica index.
    pub index: u32,
    /// How it ended, as Slurm says (`FAILED`, `OUT_OF_MEMORY`, `TIMEOUT`, …).
    pub state: String,
    /// Whether the job last reported itself unhealthy (with `on_failure: restart` it then
    /// ended itself with exit code 97). Added in 1.2.
    pub unhealthy: bool,
    /// The job's stdout log file.
    pub stdout: String,
    /// The job's stderr log file.
    pub stderr: String,
}

/// Summarizes every service that is desired or has owned jobs. Log paths of failed jobs
/// follow [`script::log_paths`] under `ctx`.
pub fn summarize(
    desired: &Desired,
    observed: &Observed,
    ctx: &ScriptContext,
) -> Vec<ServiceStatus> {
    let mut table: BTreeMap<&ServiceAddr, ServiceStatus> = BTreeMap::new();
    for (addr, service) in &desired.services {
        table.insert(
            addr,
            ServiceStatus {
                service: addr.to_string(),
                desired: service.replicas,
                ..Default::default()
            },
        );
    }
    let mut by_index: BTreeMap<(&ServiceAddr, u32), Vec<&LiveJob>> = BTreeMap::new();
    for job in &observed.jobs {
        let addr = &job.marker.service;
        by_index.entry((addr, job.index)).or_default().push(job);
        let status = table.entry(addr).or_insert_with(|| ServiceStatus {
            service: addr.to_string(),
            ..Default::default()
        });
        match &job.state {
            JobState::Running => {
                status.running += 1;
                let spec = observed.spec_of(job, desired);
                if job.is_ready_running(spec) {
                    status.ready += 1;
                    let mut served = Vec::new();
                    for at in job.serving_at(spec) {
                        for port in at.ports {
                            push_unique(
                                &mut status.endpoints,
                                format!("{}:{}", at.host, port.port),
                            );
                            served.push(Served {
                                host: at.host.clone(),
                                port: port.port,
                                name: port.name,
                            });
                        }
                    }
                    status.replica_endpoints.push(ReplicaEndpoints {
                        index: job.index,
                        job_id: job.id,
                        ports_known: !served.is_empty() || spec.is_some(),
                        ports: served,
                    });
                } else {
                    status.not_ready += 1;
                }
                for host in hostlist::expand(&job.nodes) {
                    push_unique(&mut status.nodes, host);
                }
                if let Some(end) = job.times.end {
                    status.time_left.push(TimeLeft {
                        index: job.index,
                        job_id: job.id,
                        ends_at: end,
                        seconds: (end - observed.listed_at).max(0),
                    });
                }
            }
            JobState::Pending => {
                status.pending += 1;
                let reason = job.reason.trim();
                if !reason.is_empty() && reason != "None" {
                    push_unique(&mut status.pending_reasons, reason.to_owned());
                }
            }
            JobState::Stuck(state) => {
                status.stuck += 1;
                push_unique(&mut status.stuck_reasons, stuck_reason(state, &job.reason));
            }
            JobState::Completing | JobState::Ended(_) => {}
        }
        if job.state.is_alive()
            && let Some(service) = desired.services.get(addr)
            && job.marker.spec == service.hash
        {
            let variables = crate::plan::moved_endpoints(job, &service.spec, desired, observed);
            if !variables.is_empty() {
                status.endpoint_moved.push(EndpointMoved {
                    index: job.index,
                    job_id: job.id,
                    services: variables
                        .iter()
                        .filter_map(|v| service.spec.endpoint_env.get(v))
                        .map(|r| r.service.clone())
                        .collect(),
                    variables,
                    replaced: service.replace_on_endpoint_move && !service.protect,
                });
            }
        }
        if job.state.is_alive()
            && let Some(service) = desired.services.get(addr)
            && job.marker.spec != service.hash
        {
            status.out_of_date.push(OutOfDate {
                index: job.index,
                job_id: job.id,
                state: job.state.to_string(),
                spec: job.marker.spec.clone(),
                desired_spec: service.hash.clone(),
            });
        }
    }
    for ((addr, index), jobs) in by_index {
        if let Some(entry) = crash_loop(addr, index, &jobs, desired, observed, ctx)
            && let Some(status) = table.get_mut(addr)
        {
            status.crash_loops.push(entry);
        }
        if jobs.iter().any(|job| job.state.is_alive()) {
            continue;
        }
        let Some(latest) = jobs.iter().max_by_key(|job| job.id) else {
            continue;
        };
        if !latest.state.is_failure() {
            continue;
        }
        let (stdout, stderr) = script::log_paths(ctx, addr, &latest.id);
        if let Some(status) = table.get_mut(addr) {
            status.failed += 1;
            status.failures.push(Failure {
                job_id: latest.id,
                index,
                state: latest.state.to_string(),
                unhealthy: latest.marker.report.health == Some(Health::Unhealthy),
                stdout: stdout.display().to_string(),
                stderr: stderr.display().to_string(),
            });
        }
    }
    table.into_values().collect()
}

/// Adds what `plan` (computed from the same desired and observed state) says about each
/// service: why its new replicas are held, and the rollouts that stopped.
pub fn add_plan(statuses: &mut [ServiceStatus], plan: &crate::plan::Plan) {
    for status in statuses.iter_mut() {
        let is = |addr: &ServiceAddr| addr.to_string() == status.service;
        if let Some(held) = plan.held.iter().find(|h| is(&h.service)) {
            status.held = Some(held.reason.clone());
        }
        status.rollouts_stopped = plan
            .stopped
            .iter()
            .filter(|s| is(&s.service))
            .map(|s| RolloutStopped {
                index: s.index,
                successor: s.successor,
                predecessor: s.predecessor,
                why: s.why.clone(),
            })
            .collect();
    }
}

/// Each one-shot job's standing and last run, from the plan, with the metrics its record
/// holds; `with_runs` false (its runs could not be read) leaves the runs out.
pub fn job_summaries(
    plan: &crate::plan::Plan,
    observed: &Observed,
    with_runs: bool,
) -> Vec<JobSummary> {
    let mut out = Vec::new();
    for line in &plan.jobs {
        let last_run = line.last_run.as_ref().map(|run| LastRun {
            job_id: run.job_id,
            state: run.state.clone(),
            succeeded: run.succeeded,
            exit: run.exit,
            start: run.start,
            end: run.end,
            metrics: observed
                .runs
                .get(&line.service)
                .and_then(|records| records.iter().find(|r| r.job_id == run.job_id))
                .map(|r| r.metrics.clone())
                .unwrap_or_default(),
        });
        out.push(JobSummary {
            service: line.service.to_string(),
            plan: line.status.clone(),
            summary: crate::render::plan_text::job_line(line),
            last_run: last_run.filter(|_| with_runs),
        });
    }
    out
}

/// The metrics of a job's last run in one line, `  metrics: n=7 p99_ms=40.3`; empty without.
pub fn metrics_line(job: &JobSummary) -> String {
    let words: Vec<String> = (job.last_run.iter().flat_map(|r| &r.metrics))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if words.is_empty() {
        String::new()
    } else {
        format!("  metrics: {}\n", words.join(" "))
    }
}

/// Returns the crash loop of one index, if it is in one: its latest job failed, or is the
/// successor of a failed job (its marker carries a restart count).
fn crash_loop(
    addr: &ServiceAddr,
    index: u32,
    jobs: &[&LiveJob],
    desired: &Desired,
    observed: &Observed,
    ctx: &ScriptContext,
) -> Option<CrashLoop> {
    let latest = jobs.iter().max_by_key(|job| job.id)?;
    let failed = jobs
        .iter()
        .filter(|job| job.state.is_crash())
        .max_by_key(|job| job.id);
    let stderr = failed.map(|job| {
        let (_, stderr) = script::log_paths(ctx, addr, &job.id);
        stderr.display().to_string()
    });
    let record = &latest.marker.restart;
    let entry = if latest.state.is_alive() {
        if record.restarts == 0 {
            return None;
        }
        CrashLoop {
            index,
            job_id: latest.id,
            restarts: record.restarts,
            last_failure: record.fail.clone(),
            not_before: record
                .not_before
                .filter(|&t| latest.state == JobState::Pending && t > observed.listed_at),
            gave_up: false,
            stderr,
            stderr_tail: Vec::new(),
            stderr_unreadable: None,
        }
    } else if latest.state.is_crash() && latest.marker.restart.restarts > 0 {
        let times = latest.times;
        let service = desired.services.get(addr);
        let gave_up = service.is_some_and(|s| {
            let ran_for = times.start.zip(times.end).map(|(a, b)| b - a);
            let next = crate::plan::backoff::next_restart(&s.restart, record.restarts, ran_for);
            s.hash == latest.marker.spec && crate::plan::backoff::gives_up(&s.restart, next)
        });
        CrashLoop {
            index,
            job_id: latest.id,
            restarts: record.restarts,
            last_failure: Some(crate::observed::FailRecord {
                state: latest.state.to_string(),
                exit: times.exit,
                at: times.end.unwrap_or(observed.listed_at),
            }),
            not_before: None,
            gave_up,
            stderr,
            stderr_tail: Vec::new(),
            stderr_unreadable: None,
        }
    } else {
        return None;
    };
    Some(entry)
}

/// Why a job is stuck: Slurm's reason for a held pending job, else its state.
fn stuck_reason(state: &str, reason: &str) -> String {
    let reason = reason.trim();
    if state.starts_with("PENDING") && !reason.is_empty() && reason != "None" {
        reason.to_owned()
    } else {
        state.to_owned()
    }
}

/// Appends `item` unless the list already has it, keeping first-seen order.
fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// Formats a count with its reasons: `1 (STOPPED,JobHeldUser)`, or just `0`.
fn count_with_reasons(count: u32, reasons: &[String]) -> String {
    if reasons.is_empty() {
        count.to_string()
    } else {
        format!("{count} ({})", reasons.join(","))
    }
}

/// Renders the status as an aligned table, followed by one line per failed replica with
/// its job id and log files.
pub fn render_text(statuses: &[ServiceStatus]) -> String {
    if statuses.is_empty() {
        return "No services: the repo declares none and no owned jobs are live.\n".to_owned();
    }
    let rows: Vec<[String; 9]> = statuses
        .iter()
        .map(|s| {
            [
                s.service.clone(),
                s.desired.to_string(),
                s.running.to_string(),
                s.ready.to_string(),
                count_with_reasons(s.pending, &s.pending_reasons),
                count_with_reasons(s.stuck, &s.stuck_reasons),
                s.failed.to_string(),
                if s.nodes.is_empty() {
                    "-".into()
                } else {
                    s.nodes.join(",")
                },
                endpoints_cell(&s.replica_endpoints),
            ]
        })
        .collect();
    let header = [
        "SERVICE",
        "DESIRED",
        "RUNNING",
        "READY",
        "PENDING",
        "STUCK",
        "FAILED",
        "NODES",
        "ENDPOINTS",
    ];
    let mut out = super::table(&header, rows);
    render_notes(&mut out, statuses);
    let mut failures = statuses
        .iter()
        .flat_map(|s| s.failures.iter().map(move |f| (s, f)))
        .peekable();
    if failures.peek().is_some() {
        out.push('\n');
    }
    for (s, f) in failures {
        let stderr = match f.stdout.strip_suffix(".out") {
            Some(stem) if f.stderr.strip_suffix(".err") == Some(stem) => ".err",
            _ => f.stderr.as_str(),
        };
        let unhealthy = if f.unhealthy { " (unhealthy)" } else { "" };
        let _ = writeln!(
            out,
            "{}[{}] job {} {}{unhealthy}: logs {}, {stderr}",
            s.service, f.index, f.job_id, f.state, f.stdout
        );
    }
    for s in statuses {
        for c in &s.crash_loops {
            render_crash_loop(&mut out, &s.service, c);
        }
    }
    let mut left = statuses
        .iter()
        .flat_map(|s| s.time_left.iter().map(move |t| (s, t)))
        .peekable();
    if left.peek().is_some() {
        out.push('\n');
    }
    for (s, t) in left {
        // The time of day alone when that is within a day; the date too when not.
        let at = if t.seconds < 86_400 {
            format!("{} UTC", crate::render::plan_text::clock(t.ends_at))
        } else {
            crate::utc::date_time(t.ends_at)
        };
        let _ = writeln!(
            out,
            "{}[{}] job {}: {} left (time limit ends it at {at})",
            s.service,
            t.index,
            t.job_id,
            duration_words(t.seconds),
        );
    }
    out
}

/// The ENDPOINTS cell: each ready replica with its ports, named,
/// `[0] node1:8000 (http); [1] node2:9000 (http), node2:9001 (metrics)`; `[2] ready, no
/// ports` for one without ports (`ready, ports unknown` when its spec is unknown); `-`
/// without a ready replica.
fn endpoints_cell(replicas: &[ReplicaEndpoints]) -> String {
    if replicas.is_empty() {
        return "-".into();
    }
    let cells: Vec<String> = replicas
        .iter()
        .map(|r| {
            let ports: Vec<String> = r
                .ports
                .iter()
                .map(|p| match &p.name {
                    Some(name) => format!("{}:{} ({name})", p.host, p.port),
                    None => format!("{}:{}", p.host, p.port),
                })
                .collect();
            if !r.ports_known {
                format!("[{}] ready, ports unknown", r.index)
            } else if ports.is_empty() {
                format!("[{}] ready, no ports", r.index)
            } else {
                format!("[{}] {}", r.index, ports.join(", "))
            }
        })
        .collect();
    cells.join("; ")
}

/// Writes, after a blank line, one line per held service, stopped rollout and replica
/// running a spec other than the repo's; nothing when there are none.
fn render_notes(out: &mut String, statuses: &[ServiceStatus]) {
    let mut lines = Vec::new();
    for s in statuses {
        if let Some(reason) = &s.held {
            lines.push(format!(
                "{}: held: {reason}; its new replicas are not submitted until then",
                s.service
            ));
        }
        for r in &s.rollouts_stopped {
            lines.push(format!(
                "{}[{}] rollout stopped: {}; job {} keeps running",
                s.service, r.index, r.why, r.predecessor
            ));
        }
        for m in &s.endpoint_moved {
            let what: Vec<String> = m
                .variables
                .iter()
                .zip(&m.services)
                .map(|(v, service)| format!("{v} ({service})"))
                .collect();
            lines.push(format!(
                "{}[{}] job {} endpoint moved: {} no longer served; {}",
                s.service,
                m.index,
                m.job_id,
                what.join(", "),
                if m.replaced {
                    "the next apply or watch reconcile replaces it"
                } else {
                    "kept as it is (on_endpoint_move: keep, or protected)"
                }
            ));
        }
        for o in &s.out_of_date {
            lines.push(format!(
                "{}[{}] job {} {} runs an out-of-date spec {} (the repo's is {})",
                s.service, o.index, o.job_id, o.state, o.spec, o.desired_spec
            ));
        }
    }
    if !lines.is_empty() {
        out.push('\n');
    }
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
}

/// A duration for people: `45s`, `14m`, `2h05m`, `3d04h`.
pub fn duration_words(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `web.app[0] crash loop: 3 restarts, last exit 1 (FAILED at 12:03:07), next not before
/// 12:05:47`, then the failed job's stderr tail.
fn render_crash_loop(out: &mut String, service: &str, c: &CrashLoop) {
    use crate::render::plan_text::clock;
    let mut words = vec![format!(
        "{} {}",
        c.restarts,
        if c.restarts == 1 {
            "restart"
        } else {
            "restarts"
        }
    )];
    if let Some(f) = &c.last_failure {
        let exit = f.exit.map_or("unknown".to_owned(), |e| e.to_string());
        words.push(format!("last exit {exit} ({} at {})", f.state, clock(f.at)));
    }
    if let Some(t) = c.not_before {
        words.push(format!("job {} not before {}", c.job_id, clock(t)));
    }
    if c.gave_up {
        words.push(format!("gave up after {} restarts", c.restarts));
    }
    let _ = writeln!(
        out,
        "{service}[{}] crash loop: {}",
        c.index,
        words.join(", ")
    );
    match (&c.stderr, &c.stderr_unreadable) {
        (None, _) => {
            let _ = writeln!(
                out,
                "    (the failed job is no longer listed by Slurm; no stderr to show)"
            );
        }
        (Some(path), Some(why)) => {
            let _ = writeln!(out, "    (stderr {path} is not readable from here: {why})");
        }
        (Some(path), None) if !c.stderr_tail.is_empty() => {
            let _ = writeln!(out, "    last lines of {path}:");
            for line in &c.stderr_tail {
                let _ = writeln!(out, "    | {line}");
            }
        }
        (Some(_), None) => {}
    }
}

/// Renders the status as JSON: `{"format_version": "1.6", "services": [...]}`.
pub fn render_json(statuses: &[ServiceStatus]) -> String {
    let doc = serde_json::json!({"format_version": FORMAT_VERSION, "services": statuses});
    let mut text = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
    text.push('\n');
    text
}

/// An apply lock of the owner as `status` shows it (`locks` in the JSON: always present, empty
/// when no apply holds or left one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockStatus {
    /// The placeholder's job id, which `force-unlock` takes.
    pub id: String,
    /// Host of the holder.
    pub host: String,
    /// Process id of the holder.
    pub pid: u32,
    /// When it was taken, in seconds since the Unix epoch.
    pub since: u64,
    /// When it expires unless renewed, in seconds since the Unix epoch.
    pub expires: u64,
    /// Whether it expired or its holder provably no longer runs: the next apply removes it.
    pub stale: bool,
}

/// Renders the lines `status` prints under its table, one per lock: who holds it, since when,
/// and whether the next apply removes it; nothing when no lock is held.
pub fn render_locks(locks: &[LockStatus]) -> String {
    let at = |t: u64| format!("{} UTC", crate::render::plan_text::clock(t as i64));
    let mut out = String::new();
    for l in locks {
        let _ = writeln!(
            out,
            "Apply lock {}: held by {} pid {} since {}, expires {} unless renewed{}",
            l.id,
            l.host,
            l.pid,
            at(l.since),
            at(l.expires),
            if l.stale {
                "; stale (expired, or its process is gone): the next apply removes it"
            } else {
                ""
            }
        );
    }
    out
}

/// [`render_json`] with the owner's apply locks as `locks`.
pub fn render_json_with_locks(
    statuses: &[ServiceStatus],
    jobs: &[JobSummary],
    locks: &[LockStatus],
) -> String {
    let doc = serde_json::json!({
        "format_version": FORMAT_VERSION,
        "services": statuses,
        "jobs": jobs,
        "locks": locks,
    });
    let mut text = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
    text.push('\n');
    text
}
