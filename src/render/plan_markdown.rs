//! The plan as Markdown, for a pull-request comment: what a reviewer must read first
//! (destroys of services gone from the repo, services not pruned, warnings, held services,
//! image builds), the one-shot jobs and where each stands, the summary line, then one
//! collapsed section per stack with each service's changes and attribute diffs as `plan`
//! prints them.

use crate::plan::{Plan, Summary};
use crate::render::{Style, plan_text};
use std::fmt::Write;

/// Renders the plan as Markdown.
pub fn render(plan: &Plan) -> String {
    let mut out = String::from("### stackctl plan\n\n");
    let mut notes = Vec::new();
    let removed = plan.removed_services();
    if !removed.is_empty() {
        let names: Vec<String> = removed.iter().map(|s| format!("`{s}`")).collect();
        notes.push(format!(
            "> **Warning:** this plan destroys {} {} that the repo does not declare: {}. If a \
             stack file was moved or renamed by mistake, do not merge.",
            names.len(),
            if names.len() == 1 {
                "service"
            } else {
                "services"
            },
            names.join(", ")
        ));
    }
    for (service, replicas) in &plan.not_pruned {
        notes.push(format!(
            "> **Not pruned:** `{service}` is gone from the repo and keeps its {replicas} running \
             {}; pruning is off.",
            if *replicas == 1 {
                "replica"
            } else {
                "replicas"
            }
        ));
    }
    for warning in &plan.warnings {
        notes.push(format!("> **Warning:** {warning}"));
    }
    for held in &plan.held {
        notes.push(format!(
            "> **Held:** `{}`: {}; its new replicas are not submitted until then.",
            held.service, held.reason
        ));
    }
    // A failed build is among the held services above, with its log.
    for step in &plan.images {
        if !matches!(step.action, crate::plan::images::ImageAction::Failed { .. }) {
            notes.push(format!("> **Image:** {}", plan_text::image_step_text(step)));
        }
    }
    for note in notes {
        out.push_str(&note);
        out.push_str("\n\n");
    }
    if !plan.jobs.is_empty() {
        out.push_str("**One-shot jobs:**\n\n");
        for line in &plan.jobs {
            let _ = writeln!(out, "- {}", plan_text::job_line(line));
        }
        out.push('\n');
    }
    if plan.is_empty() {
        out.push_str("No changes.\n");
        return out;
    }
    let source = match &plan.source {
        Some(source) if source.dirty => {
            format!(" (commit `{}` plus uncommitted changes)", source.commit)
        }
        Some(source) => format!(" (commit `{}`)", source.commit),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "**{}**{source} Owner `{}`.\n",
        plan_text::summary_line(plan),
        plan.owner
    );
    let mut stacks: Vec<&str> = plan
        .services
        .iter()
        .map(|s| s.service.stack.as_str())
        .collect();
    stacks.dedup();
    for stack in stacks {
        let services: Vec<_> = plan
            .services
            .iter()
            .filter(|s| s.service.stack == stack)
            .collect();
        let counts = Summary::of(services.iter().flat_map(|s| &s.changes));
        let mut body = String::new();
        for service in &services {
            if !body.is_empty() {
                body.push('\n');
            }
            body.push_str(&plan_text::service_text(service, Style::PLAIN));
        }
        let fence = fence_for(&body);
        let _ = write!(
            out,
            "<details><summary>{stack}: {} to add, {} to destroy</summary>\n\n{fence}text\n{body}{fence}\n\n</details>\n\n",
            counts.add, counts.destroy
        );
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

/// A code fence longer than any run of backticks in `body`.
fn fence_for(body: &str) -> String {
    let longest = body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

#[cfg(test)]
mod tests {
    use super::fence_for;

    #[test]
    fn the_fence_outgrows_backticks_in_the_body() {
        assert_eq!(fence_for("echo hi\n"), "```");
        assert_eq!(fence_for("a ```` b\n"), "`````");
    }
}
