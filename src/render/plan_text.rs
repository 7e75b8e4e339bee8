//! The plan for people, in Terraform's style: a legend of the symbols used, one block per
//! service with the attributes that change as `old -> new`, and the summary line CI parses.

use super::Style;
use crate::observed::FailRecord;
use crate::observed::{Nearness, StartEstimate};
use crate::plan::diff::AttributeChange;
use crate::plan::{Action, Change, Order, Plan, Reason, ServiceAction, ServicePlan, WaitingKind};
use std::fmt::Write;

/// The line printed for an empty plan.
pub const NO_CHANGES: &str = "No changes. Your cluster matches the configuration.";

/// The line printed for a plan without changes while replicas back off or were given up on.
pub const NO_CHANGES_NOW: &str =
    "No changes to make now, but the cluster has not converged: see the replicas above.";

/// The symbol and legend line of a service's block, by how the plan changes it.
trait Drawn {
    fn symbol(self) -> &'static str;
    fn legend(self) -> &'static str;
}

impl Drawn for ServiceAction {
    fn symbol(self) -> &'static str {
        match self {
            ServiceAction::Create => "+",
            ServiceAction::Destroy => "-",
            ServiceAction::Scale => "~",
            ServiceAction::Replace => "-/+",
            ServiceAction::Roll => "+/-",
        }
    }

    fn legend(self) -> &'static str {
        match self {
            ServiceAction::Create => "  + create",
            ServiceAction::Destroy => "  - destroy",
            ServiceAction::Scale => "  ~ scale (replicas added or removed)",
            ServiceAction::Replace => "-/+ replace (cancel, then submit anew)",
            ServiceAction::Roll => {
                "+/- replace (submit first, cancel the old job once the new one is ready)"
            }
        }
    }
}

/// An image step as the plan shows it, without the log path (held services name it), e.g.
/// `build image web (definition changed) with charliecloud for s.web`.
pub fn image_step_text(step: &crate::plan::images::ImageStep) -> String {
    let line = crate::plan::images::step_line(step, std::path::Path::new(""));
    line.split("; log: ").next().unwrap_or(&line).to_owned()
}

/// Renders the plan as text. Ends with the summary line, or the no-changes line.
pub fn render(plan: &Plan, style: Style) -> String {
    let mut out = String::new();
    for (service, replicas) in &plan.not_pruned {
        let _ = writeln!(
            out,
            "Not pruned: {service} is gone from the repo and keeps its {replicas} running {}; \
             pruning is off.",
            if *replicas == 1 {
                "replica"
            } else {
                "replicas"
            }
        );
    }
    for warning in &plan.warnings {
        let _ = writeln!(out, "{} {warning}", style.paint_symbol("Warning:", "~"));
    }
    for held in &plan.held {
        let _ = writeln!(
            out,
            "Held: {}: {}; its new replicas are not submitted until then.",
            held.service, held.reason
        );
    }
    for step in &plan.images {
        if !matches!(step.action, crate::plan::images::ImageAction::Failed { .. }) {
            let _ = writeln!(out, "Image: {}", image_step_text(step));
        }
    }
    if !plan.not_pruned.is_empty()
        || !plan.warnings.is_empty()
        || !plan.held.is_empty()
        || !plan.images.is_empty()
    {
        out.push('\n');
    }
    if !plan.jobs.is_empty() {
        for line in plan.jobs.iter().map(job_line) {
            let _ = writeln!(out, "Job {line}");
        }
        out.push('\n');
    }
    if plan.is_empty() {
        render_rollouts(&mut out, plan);
        if plan.is_converged() {
            out.push_str(NO_CHANGES);
            out.push('\n');
        } else {
            render_waiting(&mut out, plan);
            out.push_str(NO_CHANGES_NOW);
            out.push('\n');
        }
        return out;
    }
    let removed = plan.removed_services();
    if !removed.is_empty() {
        let names: Vec<String> = removed.iter().map(|s| s.to_string()).collect();
        let _ = writeln!(
            out,
            "{} this plan destroys {} {} that the repo does not declare: {}.\n         If a stack file was moved or renamed by mistake, do not apply.\n",
            style.paint_symbol("Warning:", "-"),
            names.len(),
            if names.len() == 1 {
                "service"
            } else {
                "services"
            },
            names.join(", ")
        );
    }
    let mut kinds: Vec<ServiceAction> = plan.services.iter().map(ServicePlan::action).collect();
    kinds.sort();
    kinds.dedup();
    let source = match &plan.source {
        Some(source) if source.dirty => {
            format!(" at commit {} plus uncommitted changes", source.commit)
        }
        Some(source) => format!(" at commit {}", source.commit),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "stackctl compared the repo{source} with the live jobs of owner \"{}\".\nActions are indicated with the following symbols:",
        plan.owner
    );
    for kind in kinds {
        let _ = writeln!(out, "{}", style.paint_symbol(kind.legend(), kind.symbol()));
    }
    out.push_str("\nstackctl will perform the following actions:\n");
    for service in &plan.services {
        out.push('\n');
        render_service(&mut out, service, style);
    }
    out.push('\n');
    if !plan.waiting.is_empty() {
        render_waiting(&mut out, plan);
    }
    render_rollouts(&mut out, plan);
    out.push_str(&summary_line(plan));
    out.push('\n');
    out
}

/// Writes one line per replica the plan leaves alone, then a blank line.
fn render_waiting(out: &mut String, plan: &Plan) {
    for w in &plan.waiting {
        let failure = w
            .last_failure
            .as_ref()
            .map(|f| format!("; last {}", failure_words(f)))
            .unwrap_or_default();
        let what = match w.kind {
            WaitingKind::BackingOff { not_before } => format!(
                "backing off until {} (restart {}{failure}): job {} waits in the queue",
                clock(not_before),
                w.restarts,
                w.job_id
            ),
            WaitingKind::Completing => format!(
                "job {} is still COMPLETING: recreated once Slurm has finished it (a requeued \
                 job returns to the queue by itself)",
                w.job_id
            ),
            WaitingKind::GaveUp => format!(
                "gave up after {} {}{failure}: not recreated (max_attempts); change its spec to \
                 start over",
                w.restarts,
                if w.restarts == 1 {
                    "restart"
                } else {
                    "restarts"
                }
            ),
        };
        let _ = writeln!(out, "  # {}[{}] {what}", w.service, w.index);
    }
    out.push('\n');
}

/// Writes one line per rollout in progress and per stopped rollout, then a blank line; nothing
/// when there are none.
fn render_rollouts(out: &mut String, plan: &Plan) {
    for r in &plan.rollouts {
        let successor = match r.successor {
            Some(s) => format!("its successor {s}"),
            None => "a successor".to_owned(),
        };
        let why = if r.reason == Reason::Renewal {
            "renewal"
        } else {
            "rolling"
        };
        let _ = writeln!(
            out,
            "  # {}[{}] {why}: job {} stays until {successor} is ready: {}",
            r.service, r.index, r.predecessor, r.progress
        );
    }
    for s in &plan.stopped {
        let _ = writeln!(
            out,
            "  # {}[{}] rollout stopped: {}; job {} keeps running",
            s.service, s.index, s.why, s.predecessor
        );
    }
    if !plan.rollouts.is_empty() || !plan.stopped.is_empty() {
        out.push('\n');
    }
}

/// The lines `apply --wait` prints for replicas that are not ready (`web.app[2]: job 41_2
/// PENDING (Resources)`, from [`crate::plan::rolling::not_ready`]), without the replicas
/// `plan`'s pass has just submitted: the listing it was made from predates their job, so
/// they would read `no job`; the next pass shows their job.
pub fn waiting_lines(plan: &Plan, not_ready: &[String]) -> Vec<String> {
    let submitted: Vec<String> = plan
        .services
        .iter()
        .flat_map(|s| {
            s.changes
                .iter()
                .filter(|c| c.submits())
                .map(move |c| format!("{}[{}]: ", s.service, c.index))
        })
        .collect();
    not_ready
        .iter()
        .filter(|line| !submitted.iter().any(|p| line.starts_with(p.as_str())))
        .map(|line| format!("waiting: {line}"))
        .collect()
}

/// `ended FAILED exit 1 at 12:03:07`.
fn failure_words(f: &FailRecord) -> String {
    let exit = f.exit.map(|e| format!(" exit {e}")).unwrap_or_default();
    format!("ended {}{exit} at {}", f.state, clock(f.at))
}

/// A unix time as `HH:MM:SS` (UTC), the time of day plans and status print.
pub fn clock(unix: i64) -> String {
    let day = unix.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

/// Says when Slurm expects a service's new jobs to start: `starts now on node2` (within a
/// minute of asking), `expected to start at 14:05:00 UTC on node2, in 25 min` (within an hour),
/// otherwise `queued behind running jobs: Slurm expects 18:00:00 UTC, in 4 h` (with the date
/// and in days from two days on), and `start time unknown (…)` for an estimate more than a
/// year away ([`StartEstimate::PLAUSIBLE_SECONDS`]).
pub fn start_words(estimate: &StartEstimate) -> String {
    let on = if estimate.nodes.is_empty() {
        String::new()
    } else {
        format!(" on {}", estimate.nodes)
    };
    let wait = estimate.at - estimate.asked_at;
    match estimate.nearness() {
        Nearness::Now => format!("starts now{on}"),
        Nearness::Soon => format!(
            "expected to start at {} UTC{on}, in {} min",
            clock(estimate.at),
            (wait + 59) / 60
        ),
        Nearness::Later if wait < 2 * 86_400 => format!(
            "queued behind running jobs: Slurm expects {} UTC, in {} h",
            clock(estimate.at),
            (wait + 1799) / 3600
        ),
        Nearness::Later => format!(
            "queued behind running jobs: Slurm expects {}, in {} days",
            crate::utc::date_time(estimate.at),
            (wait + 43_199) / 86_400
        ),
        Nearness::Implausible => {
            "start time unknown (Slurm's estimate is more than a year away, which is no real \
             plan)"
                .to_owned()
        }
    }
}

/// Returns `Plan: X to add, Y to change, Z to destroy.` ([`crate::plan::Summary`]'s wording).
pub fn summary_line(plan: &Plan) -> String {
    format!("Plan: {}.", plan.summary())
}

/// Renders one service's block as [`render`] shows it: its changes and attribute diffs.
pub fn service_text(service: &ServicePlan, style: Style) -> String {
    let mut out = String::new();
    render_service(&mut out, service, style);
    out
}

fn render_service(out: &mut String, service: &ServicePlan, style: Style) {
    let kind = service.action();
    let after = service.replicas_after;
    let count =
        |wanted: fn(&Change) -> bool| service.changes.iter().filter(|c| wanted(c)).count() as u32;
    let missing = count(|c| c.reason == Reason::Missing);
    let scaled_down = count(|c| matches!(c.reason, Reason::ScaleDown | Reason::ServiceRemoved));
    let replaced = count(|c| c.action == Action::Replace);
    let recreated = count(|c| c.reason == Reason::Ended);
    let duplicates = count(|c| c.reason == Reason::Duplicate);
    let rewritten = count(|c| c.action == Action::Update);
    // The count a person thinks in: ended replicas still count, duplicates do not.
    let before = after + scaled_down - missing;
    let header = match kind {
        ServiceAction::Create => format!("will be created with {after} {}", plural(after)),
        ServiceAction::Destroy => "will be destroyed (no longer in the repo)".to_owned(),
        ServiceAction::Replace | ServiceAction::Roll | ServiceAction::Scale => {
            let mut parts = Vec::new();
            if before != after {
                parts.push(format!("scaled from {before} to {after} {}", plural(after)));
            }
            if replaced > 0 {
                let how = service
                    .rolling_batch
                    .map(|n| format!(" (rolling, {n} at a time)"))
                    .unwrap_or_default();
                parts.push(format!(
                    "{replaced} of {after} {} replaced{how}",
                    plural(after)
                ));
            }
            if recreated > 0 {
                parts.push(format!("{recreated} ended {} recreated", plural(recreated)));
            }
            if duplicates > 0 {
                parts.push(format!(
                    "{duplicates} duplicate {} cancelled",
                    if duplicates == 1 { "job" } else { "jobs" }
                ));
            }
            if rewritten > 0 {
                // The markers say the opposite of what the repo now says.
                let protect = service
                    .changes
                    .iter()
                    .filter_map(Change::protect_after)
                    .any(|p| p);
                parts.push(format!(
                    "protect: {protect} ({rewritten} {} rewritten in place)",
                    if rewritten == 1 { "marker" } else { "markers" }
                ));
            }
            format!("will be updated: {}", parts.join(", "))
        }
    };
    let _ = writeln!(
        out,
        "  {}",
        style.dim(&format!("# {} {header}", service.service))
    );
    let _ = writeln!(
        out,
        "{} service \"{}\" {{",
        style.paint_symbol(&format!("{:>3}", kind.symbol()), kind.symbol()),
        service.service
    );
    let pad = "      ";
    if before != after {
        let sym = if kind == ServiceAction::Create {
            "+"
        } else if kind == ServiceAction::Destroy {
            "-"
        } else {
            "~"
        };
        let value = match kind {
            ServiceAction::Create => after.to_string(),
            ServiceAction::Destroy => before.to_string(),
            _ => format!("{before} -> {after}"),
        };
        let _ = writeln!(out, "{pad}{} replicas = {value}", style.paint(sym));
    }
    match kind {
        ServiceAction::Create | ServiceAction::Replace | ServiceAction::Roll => match &service.diff
        {
            Some(diff) => render_diff(out, pad, diff, style),
            None => {
                let old = service
                    .changes
                    .iter()
                    .find(|c| c.action == Action::Replace)
                    .and_then(|c| c.job.as_ref());
                let old = old.map(|j| j.spec_hash.to_string()).unwrap_or_default();
                let new = service
                    .hash_after
                    .as_ref()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{pad}{} spec = \"{old}\" -> \"{new}\" (previous spec could not be read back)",
                    style.paint("~")
                );
            }
        },
        _ => {}
    }
    if !(service.start_after.is_empty() && service.start_after_jobs.is_empty()) {
        let mut after: Vec<String> = service.start_after.iter().map(|s| s.reference()).collect();
        after.extend(
            service
                .start_after_jobs
                .iter()
                .map(|id| format!("job {id}")),
        );
        let _ = writeln!(
            out,
            "{pad}{}",
            style.dim(&format!(
                "# starts after {} (depends_on: started; submitted with --dependency)",
                after.join(", ")
            ))
        );
    }
    if !service.endpoint_moved.is_empty() {
        let targets: Vec<String> = service
            .endpoint_moved
            .iter()
            .map(|key| {
                let target = service
                    .spec_after
                    .as_ref()
                    .and_then(|s| s.endpoint_env.get(key))
                    .map(|r| format!(" ({})", r.service))
                    .unwrap_or_default();
                format!("{key}{target}")
            })
            .collect();
        let _ = writeln!(
            out,
            "{pad}{}",
            style.dim(&format!(
                "# endpoint moved: {}: no ready replica serves the address these replicas were \
                 given",
                targets.join(", ")
            ))
        );
    }
    if let Some(estimate) = &service.start_estimate {
        // Slurm estimated the script without its `--dependency`: it starts no earlier than
        // what it waits for.
        let waits = !(service.start_after.is_empty() && service.start_after_jobs.is_empty());
        let _ = writeln!(
            out,
            "{pad}{}",
            style.dim(&format!(
                "# {}{}",
                start_words(estimate),
                if waits { ", once those started" } else { "" }
            ))
        );
    }
    for change in &service.changes {
        render_change(out, change, style);
    }
    let _ = writeln!(out, "    }}");
}

fn render_change(out: &mut String, change: &Change, style: Style) {
    let symbol = match change.action {
        Action::Create => "+",
        Action::Destroy => "-",
        Action::Replace if change.order == Order::CreateFirst => "+/-",
        Action::Replace => "-/+",
        Action::Update => "~",
    };
    let why = match change.reason {
        Reason::Missing => String::new(),
        Reason::Ended => match &change.backoff {
            Some(b) => {
                let when = if b.wait > 0 {
                    format!("not before {}", clock(b.not_before))
                } else {
                    "at once, the backoff has passed".to_owned()
                };
                let avoid = b
                    .exclude
                    .as_ref()
                    .map(|n| format!("; avoiding {n}"))
                    .unwrap_or_default();
                format!(
                    " (recreate: {}; restart {}, {when}{avoid})",
                    failure_words(&b.last_failure),
                    b.restart
                )
            }
            None => " (previous job ended)".to_owned(),
        },
        Reason::ScaleDown => " (scale down)".to_owned(),
        Reason::ServiceRemoved => " (service removed)".to_owned(),
        Reason::Duplicate => " (duplicate of a job holding the same index)".to_owned(),
        Reason::SpecChanged => String::new(),
        Reason::Forced => " (forced by --replace)".to_owned(),
        Reason::ProtectChanged => match change.job.as_ref().is_some_and(|j| j.marker.protect) {
            true => " (protect: false; marker rewritten in place)".to_owned(),
            false => " (protect: true; marker rewritten in place)".to_owned(),
        },
        Reason::Renewal => " (renewal: its time limit nears)".to_owned(),
        Reason::Superseded => " (its successor is ready: rolled over)".to_owned(),
        Reason::RolloutStopped => " (rollout stopped: successor cancelled)".to_owned(),
        Reason::EndpointMoved => " (endpoint moved: gets the new address)".to_owned(),
    };
    // A create-first replace keeps the old job: say for how long.
    let why = match (change.order, why.strip_suffix(')')) {
        (Order::CreateFirst, Some(open)) => {
            format!("{open}; stays until its successor is ready)")
        }
        (Order::CreateFirst, None) => " (stays until its successor is ready)".to_owned(),
        _ => why,
    };
    let job = change
        .job
        .as_ref()
        .map(|j| format!(" job {} {}", j.job_id, j.state))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "      {:>3} replica[{}]{}{}",
        style.paint_symbol(&format!("{symbol:>3}"), symbol),
        change.index,
        style.dim(&job),
        why
    );
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "replica" } else { "replicas" }
}

fn render_diff(out: &mut String, pad: &str, diff: &[AttributeChange], style: Style) {
    for change in diff {
        let path = &change.path;
        match (&change.before, &change.after) {
            (Some(a), Some(b)) if change.sensitive && a == b => {
                let _ = writeln!(
                    out,
                    "{pad}{} {path} = ({} value changed){}",
                    style.paint("~"),
                    crate::secret::REDACTED.trim_matches(|c| c == '(' || c == ')'),
                    change
                        .secret
                        .as_ref()
                        .map_or(String::new(), |name| format!(" # secret {name}"))
                );
            }
            (Some(a), Some(b)) if is_multiline(a) || is_multiline(b) => {
                let _ = writeln!(out, "{pad}{} {path} = <<-EOT", style.paint("~"));
                let (a, b) = (
                    a.as_str().unwrap_or_default(),
                    b.as_str().unwrap_or_default(),
                );
                let diff = similar::TextDiff::from_lines(a, b);
                for change in diff.iter_all_changes() {
                    let sign = match change.tag() {
                        similar::ChangeTag::Delete => "-",
                        similar::ChangeTag::Insert => "+",
                        similar::ChangeTag::Equal => " ",
                    };
                    let _ = write!(out, "{pad}    {} {}", style.paint(sign), change.value());
                    if change.missing_newline() {
                        out.push('\n');
                    }
                }
                let _ = writeln!(out, "{pad}  EOT");
            }
            (Some(a), Some(b)) => {
                let _ = writeln!(
                    out,
                    "{pad}{} {path} = {} -> {}",
                    style.paint("~"),
                    show(a),
                    show(b)
                );
            }
            (None, Some(b)) => write_attribute(out, pad, "+", path, b, style),
            (Some(a), None) => write_attribute(out, pad, "-", path, a, style),
            (None, None) => {}
        }
    }
}

fn write_attribute(
    out: &mut String,
    pad: &str,
    symbol: &str,
    path: &str,
    value: &serde_json::Value,
    style: Style,
) {
    match value.as_str() {
        Some(text) if text.contains('\n') => {
            let _ = writeln!(out, "{pad}{} {path} = <<-EOT", style.paint(symbol));
            for line in text.lines() {
                let _ = writeln!(out, "{pad}      {line}");
            }
            let _ = writeln!(out, "{pad}  EOT");
        }
        _ => {
            let _ = writeln!(out, "{pad}{} {path} = {}", style.paint(symbol), show(value));
        }
    }
}

fn is_multiline(value: &serde_json::Value) -> bool {
    value.as_str().is_some_and(|text| text.contains('\n'))
}

/// Shows a value on one line: strings quoted with control characters escaped, others as JSON.
fn show(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) if text == crate::plan::diff::SENSITIVE => text.clone(),
        serde_json::Value::String(text) => format!("{text:?}"),
        other => other.to_string(),
    }
}

/// One job's standing in words: `s.load: run`, `rerun (spec changed)`, `held (target not
/// ready)`, `done at 12:00:05 UTC (job 12_0)`, `failed, retry 1 of 2 at …`, `failed after 3
/// runs`, each with its last run.
pub fn job_line(line: &crate::plan::jobs::JobLine) -> String {
    use crate::plan::jobs::JobStatus;
    let last = line.last_run.as_ref().map(|r| {
        let exit = r.exit.map(|e| format!(" exit {e}")).unwrap_or_default();
        format!("job {} {}{exit} at {} UTC", r.job_id, r.state, clock(r.end))
    });
    let words = match &line.status {
        JobStatus::Run => "run".to_owned(),
        JobStatus::RerunSpecChanged => "rerun (spec changed)".to_owned(),
        JobStatus::RerunRequested => "rerun (requested)".to_owned(),
        JobStatus::Held { reason } => match reason.strip_prefix("target not ready: ") {
            Some(rest) => format!("held (target not ready): {rest}"),
            None => format!("held: {reason}"),
        },
        JobStatus::Running { job_id } => format!("running (job {job_id})"),
        JobStatus::Done { at } => {
            let job = line
                .last_run
                .as_ref()
                .map(|r| format!(" (job {})", r.job_id))
                .unwrap_or_default();
            return format!("{}: done at {} UTC{job}", line.service, clock(*at));
        }
        JobStatus::Retry { retry, of, at } => {
            format!("failed, retry {retry} of {of} at {} UTC", clock(*at))
        }
        JobStatus::Failed { runs } => format!(
            "failed after {runs} {} (no retry left; `stackctl run` or a spec change runs it again)",
            if *runs == 1 { "run" } else { "runs" }
        ),
        JobStatus::Off => "off (replicas: 0)".to_owned(),
    };
    match last {
        Some(last) if !matches!(line.status, JobStatus::Running { .. }) => {
            format!("{}: {words}; last run: {last}", line.service)
        }
        _ => format!("{}: {words}", line.service),
    }
}

#[cfg(test)]
mod start_tests {
    use super::*;

    fn at(wait: i64, nodes: &str) -> StartEstimate {
        StartEstimate {
            at: 1_795_788_000 + wait,
            asked_at: 1_795_788_000,
            nodes: nodes.into(),
            partition: "debug".into(),
        }
    }

    #[test]
    fn start_estimates_are_worded_by_how_near_they_are() {
        assert_eq!(start_words(&at(0, "node2")), "starts now on node2");
        assert_eq!(start_words(&at(60, "node[1-2]")), "starts now on node[1-2]");
        assert_eq!(
            start_words(&at(61, "node2")),
            "expected to start at 14:01:01 UTC on node2, in 2 min"
        );
        assert_eq!(
            start_words(&at(3600, "")),
            "expected to start at 15:00:00 UTC, in 60 min"
        );
        assert_eq!(
            start_words(&at(4 * 3600, "node1")),
            "queued behind running jobs: Slurm expects 18:00:00 UTC, in 4 h"
        );
    }
}
