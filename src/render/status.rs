//! Per-service status: desired and observed replica counts, nodes and endpoints.

use crate::live::{JobState, Observed, first_host};
use crate::spec::{Desired, ServiceAddr};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The version of the JSON status format; minor versions only add fields.
pub const FORMAT_VERSION: &str = "1.0";

/// The status of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    /// `<stack>.<service>`.
    pub service: String,
    /// Replicas wanted (0 for a service no longer in the repo).
    pub desired: u32,
    /// Replicas running.
    pub running: u32,
    /// Replicas waiting to start (pending, configuring, requeued).
    pub pending: u32,
    /// Why replicas are pending, as Slurm says (`Resources`, `Priority`, `Dependency`, …).
    pub pending_reasons: Vec<String>,
    /// Replicas held or suspended.
    pub stuck: u32,
    /// Jobs that ended in failure and are still visible in Slurm (within MinJobAge).
    pub failed: u32,
    /// Nodes the running replicas are on.
    pub nodes: Vec<String>,
    /// `host:port` of each running replica's first node and each of the recipe's ports.
    pub endpoints: Vec<String>,
}

/// Summarizes every service that is desired or has owned jobs.
pub fn summarize(desired: &Desired, observed: &Observed) -> Vec<ServiceStatus> {
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
    for job in &observed.jobs {
        let addr = &job.marker.service;
        let status = table.entry(addr).or_insert_with(|| ServiceStatus {
            service: addr.to_string(),
            ..Default::default()
        });
        match &job.state {
            JobState::Running => {
                status.running += 1;
                let host = first_host(&job.nodes);
                if let Some(host) = host {
                    if !status.nodes.contains(&host) {
                        status.nodes.push(host.clone());
                    }
                    if let Some(service) = desired.services.get(addr) {
                        for port in &service.spec.ports {
                            status.endpoints.push(format!("{host}:{port}"));
                        }
                    }
                }
            }
            JobState::Pending => {
                status.pending += 1;
                let reason = job.reason.trim();
                if !reason.is_empty()
                    && reason != "None"
                    && !status.pending_reasons.iter().any(|r| r == reason)
                {
                    status.pending_reasons.push(reason.to_owned());
                }
            }
            JobState::Stuck(_) => status.stuck += 1,
            state if state.is_failure() => status.failed += 1,
            JobState::Ended(_) => {}
        }
    }
    table.into_values().collect()
}

/// Renders the status as an aligned table.
pub fn render_text(statuses: &[ServiceStatus]) -> String {
    if statuses.is_empty() {
        return "No services: the repo declares none and no owned jobs are live.\n".to_owned();
    }
    let rows: Vec<[String; 8]> = statuses
        .iter()
        .map(|s| {
            [
                s.service.clone(),
                s.desired.to_string(),
                s.running.to_string(),
                if s.pending_reasons.is_empty() {
                    s.pending.to_string()
                } else {
                    format!("{} ({})", s.pending, s.pending_reasons.join(","))
                },
                s.stuck.to_string(),
                s.failed.to_string(),
                if s.nodes.is_empty() {
                    "-".into()
                } else {
                    s.nodes.join(",")
                },
                if s.endpoints.is_empty() {
                    "-".into()
                } else {
                    s.endpoints.join(",")
                },
            ]
        })
        .collect();
    let header = [
        "SERVICE",
        "DESIRED",
        "RUNNING",
        "PENDING",
        "STUCK",
        "FAILED",
        "NODES",
        "ENDPOINTS",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header.map(String::from)).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// Renders the status as JSON: `{"format_version": "1.0", "services": [...]}`.
pub fn render_json(statuses: &[ServiceStatus]) -> String {
    let doc = serde_json::json!({"format_version": FORMAT_VERSION, "services": statuses});
    let mut text = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
    text.push('\n');
    text
}
