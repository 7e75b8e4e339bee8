//! Where the ready replicas of each service serve, and the files that publish it to the tools
//! in front of them: `stackctl endpoints` and `stackctl watch --write-endpoints FILE:FORMAT`.
//! Pure: [`collect`] reads desired and observed state, the renderers return text.
//!
//! A replica's host and ports follow the rule status uses ([`LiveJob::serving_at`]): the
//! address and actual ports the job reported about itself, else its node names with the
//! spec's fixed ports. Only ready replicas are listed ([`LiveJob::is_ready_running`]).
//!
//! Formats:
//! - `json`: `{"format_version": "1.0", "endpoints": [{stack, service, index, job_id, host,
//!   ports: [{name?, port}]}]}`, every port of every ready replica.
//! - `env`: `<STACK>_<SERVICE>_ENDPOINTS=host:port,…` and `<STACK>_<SERVICE>_<index>=host:port`.
//! - `prometheus-sd`: Prometheus `file_sd_configs` JSON, one target group per replica.
//! - `traefik`: a Traefik file-provider dynamic configuration: per service a load balancer
//!   over its replicas and a router for the path prefix `/<stack>/<service>`, stripped.
//! - `nginx`: an `upstream <stack>_<service>` block per service.
//!
//! All but `json` publish one port per replica ([`published_port`]): the one named `http`, or
//! else the first.

use crate::desired::{Desired, ServiceAddr};
use crate::observed::{JobId, NamedPort, Observed};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::str::FromStr;

/// The version of the JSON endpoints format; minor versions only add fields.
pub const FORMAT_VERSION: &str = "1.0";

/// One host of one ready replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// The stack.
    pub stack: String,
    /// The service within the stack.
    pub service: String,
    /// The replica index.
    pub index: u32,
    /// The replica's job.
    pub job_id: JobId,
    /// The address the job reported, or a node name.
    pub host: String,
    /// Every port it serves on, in declared order.
    pub ports: Vec<NamedPort>,
}

/// The ready replicas of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEndpoints {
    /// The service.
    pub service: ServiceAddr,
    /// One entry per host of each ready replica, by index then job id.
    pub endpoints: Vec<Endpoint>,
    /// Ready replicas that serve no port (index, job): ready, with nothing to publish.
    pub ready_without_ports: Vec<(u32, JobId)>,
}

/// The formats endpoints are rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The versioned JSON document.
    Json,
    /// Shell/systemd environment lines.
    Env,
    /// Prometheus file-based service discovery.
    PrometheusSd,
    /// Traefik file-provider dynamic configuration (YAML).
    Traefik,
    /// nginx `upstream` blocks.
    Nginx,
}

impl Format {
    /// Every format, by the name the command line takes.
    pub const ALL: [(&'static str, Format); 5] = [
        ("json", Format::Json),
        ("env", Format::Env),
        ("prometheus-sd", Format::PrometheusSd),
        ("traefik", Format::Traefik),
        ("nginx", Format::Nginx),
    ];
}

impl FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Format, String> {
        Format::ALL
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, format)| *format)
            .ok_or_else(|| {
                let names: Vec<&str> = Format::ALL.iter().map(|(name, _)| *name).collect();
                format!(
                    "unknown endpoints format {text:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Lists the ready replicas of every service that is desired or has owned jobs, in address
/// order; a service without a ready replica has an empty list.
pub fn collect(desired: &Desired, observed: &Observed) -> Vec<ServiceEndpoints> {
    type Listed = (Vec<Endpoint>, Vec<(u32, JobId)>);
    let mut table: BTreeMap<&ServiceAddr, Listed> = desired
        .services
        .keys()
        .map(|a| (a, Default::default()))
        .collect();
    for job in &observed.jobs {
        let (list, portless) = table.entry(&job.marker.service).or_default();
        let spec = observed.spec_of(job, desired);
        if !job.is_ready_running(spec) {
            continue;
        }
        let serving = job.serving_at(spec);
        if spec.is_some_and(|s| s.ports.is_empty()) {
            portless.push((job.index, job.id));
        }
        for at in serving {
            list.push(Endpoint {
                stack: job.marker.service.stack.clone(),
                service: job.marker.service.service.clone(),
                index: job.index,
                job_id: job.id,
                host: at.host,
                ports: at.ports,
            });
        }
    }
    table
        .into_iter()
        .map(
            |(service, (endpoints, ready_without_ports))| ServiceEndpoints {
                service: service.clone(),
                endpoints,
                ready_without_ports,
            },
        )
        .collect()
}

pub use crate::observed::published_port;

/// The published `host:port` of each ready replica, without duplicates, with its index.
fn targets(service: &ServiceEndpoints) -> Vec<(u32, String)> {
    let mut out: Vec<(u32, String)> = Vec::new();
    for endpoint in &service.endpoints {
        let Some(port) = published_port(&endpoint.ports) else {
            continue;
        };
        let target = format!("{}:{port}", endpoint.host);
        if !out.iter().any(|(_, t)| *t == target) {
            out.push((endpoint.index, target));
        }
    }
    out
}

/// Renders `services` in `format`.
pub fn render(services: &[ServiceEndpoints], format: Format) -> String {
    match format {
        Format::Json => render_json(services),
        Format::Env => render_env(services),
        Format::PrometheusSd => render_prometheus_sd(services),
        Format::Traefik => render_traefik(services),
        Format::Nginx => render_nginx(services),
    }
}

/// Renders a table for people: one line per host of each ready replica (`ready, no ports`
/// for a replica serving no port), and a line saying so for a service without a ready one.
pub fn render_text(services: &[ServiceEndpoints]) -> String {
    if services.is_empty() {
        return "No services: the repo declares none and no owned jobs are live.\n".to_owned();
    }
    let mut rows: Vec<[String; 4]> = Vec::new();
    for s in services {
        if s.endpoints.is_empty() && s.ready_without_ports.is_empty() {
            rows.push([
                s.service.to_string(),
                "-".into(),
                "-".into(),
                "(no ready replica)".into(),
            ]);
        }
        for (index, job_id) in &s.ready_without_ports {
            rows.push([
                s.service.to_string(),
                index.to_string(),
                job_id.to_string(),
                "ready, no ports".into(),
            ]);
        }
        for e in &s.endpoints {
            let ports: Vec<String> = e
                .ports
                .iter()
                .map(|p| match &p.name {
                    Some(name) => format!("{}:{} ({name})", e.host, p.port),
                    None => format!("{}:{}", e.host, p.port),
                })
                .collect();
            rows.push([
                s.service.to_string(),
                e.index.to_string(),
                e.job_id.to_string(),
                ports.join(", "),
            ]);
        }
    }
    super::table(&["SERVICE", "REPLICA", "JOB", "ENDPOINTS"], rows)
}

/// Renders `{"format_version": "1.0", "endpoints": [...]}`.
pub fn render_json(services: &[ServiceEndpoints]) -> String {
    let endpoints: Vec<&Endpoint> = services.iter().flat_map(|s| &s.endpoints).collect();
    let doc = serde_json::json!({"format_version": FORMAT_VERSION, "endpoints": endpoints});
    let mut text = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
    text.push('\n');
    text
}

/// The environment variable prefix of a service: `<STACK>_<SERVICE>`, upper case, `-` as `_`.
pub fn env_name(service: &ServiceAddr) -> String {
    format!("{}_{}", service.stack, service.service)
        .to_ascii_uppercase()
        .replace('-', "_")
}

/// Renders `<STACK>_<SERVICE>_ENDPOINTS=host:port,…` (empty without a ready replica) and
/// `<STACK>_<SERVICE>_<index>=host:port` per ready replica (its first host).
pub fn render_env(services: &[ServiceEndpoints]) -> String {
    let mut out = String::new();
    for s in services {
        let name = env_name(&s.service);
        let targets = targets(s);
        let all: Vec<&str> = targets.iter().map(|(_, t)| t.as_str()).collect();
        let _ = writeln!(out, "{name}_ENDPOINTS={}", all.join(","));
        let mut seen = Vec::new();
        for (index, target) in &targets {
            if !seen.contains(index) {
                seen.push(*index);
                let _ = writeln!(out, "{name}_{index}={target}");
            }
        }
    }
    out
}

/// Renders a Prometheus `file_sd_configs` file: one target group per ready replica, labelled
/// `stackctl_stack`, `stackctl_service` and `stackctl_replica`.
pub fn render_prometheus_sd(services: &[ServiceEndpoints]) -> String {
    let groups: Vec<serde_json::Value> = services
        .iter()
        .flat_map(|s| {
            targets(s).into_iter().map(|(index, target)| {
                serde_json::json!({
                    "targets": [target],
                    "labels": {
                        "stackctl_stack": s.service.stack,
                        "stackctl_service": s.service.service,
                        "stackctl_replica": index.to_string(),
                    }
                })
            })
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&groups).expect("JSON values serialize");
    text.push('\n');
    text
}

/// A YAML double-quoted scalar (JSON's string syntax is a subset of it).
fn yaml_str(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

/// Renders a Traefik file-provider dynamic configuration: per service `<stack>-<service>`, a
/// load balancer over its ready replicas (`http://host:port`; none: Traefik answers 503), a
/// router for ``PathPrefix(`/<stack>/<service>`)`` and a middleware that strips the prefix.
pub fn render_traefik(services: &[ServiceEndpoints]) -> String {
    let mut out = String::from("# Written by stackctl: the ready replicas of each service.\n");
    if services.is_empty() {
        out.push_str("http: {}\n");
        return out;
    }
    let name = |s: &ServiceEndpoints| format!("{}-{}", s.service.stack, s.service.service);
    let prefix = |s: &ServiceEndpoints| format!("/{}/{}", s.service.stack, s.service.service);
    out.push_str("http:\n  routers:\n");
    for s in services {
        let name = name(s);
        let _ = write!(
            out,
            "    {name}:\n      rule: {}\n      service: {name}\n      middlewares:\n        - {name}-strip\n",
            yaml_str(&format!("PathPrefix(`{}`)", prefix(s)))
        );
    }
    out.push_str("  middlewares:\n");
    for s in services {
        let _ = write!(
            out,
            "    {}-strip:\n      stripPrefix:\n        prefixes:\n          - {}\n",
            name(s),
            yaml_str(&prefix(s))
        );
    }
    out.push_str("  services:\n");
    for s in services {
        let targets = targets(s);
        let _ = write!(
            out,
            "    {}:\n      loadBalancer:\n        servers:",
            name(s)
        );
        if targets.is_empty() {
            out.push_str(" []\n");
        } else {
            out.push('\n');
        }
        for (_, target) in targets {
            let _ = writeln!(
                out,
                "          - url: {}",
                yaml_str(&format!("http://{target}"))
            );
        }
    }
    out
}

/// Renders an `upstream <stack>_<service>` block per service; one without a ready replica gets
/// `server 127.0.0.1:1 down;`, so nginx still loads the file.
pub fn render_nginx(services: &[ServiceEndpoints]) -> String {
    let mut out = String::from("# Written by stackctl: the ready replicas of each service.\n");
    for s in services {
        let _ = writeln!(out, "upstream {}_{} {{", s.service.stack, s.service.service);
        let targets = targets(s);
        if targets.is_empty() {
            out.push_str("    server 127.0.0.1:1 down;  # no ready replica\n");
        }
        for (_, target) in targets {
            let _ = writeln!(out, "    server {target};");
        }
        out.push_str("}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: Option<&str>, port: u16) -> NamedPort {
        NamedPort {
            name: name.map(str::to_owned),
            port,
        }
    }

    #[test]
    fn the_published_port_is_the_one_named_http_or_else_the_first() {
        assert_eq!(published_port(&[]), None);
        assert_eq!(
            published_port(&[port(Some("metrics"), 9100), port(None, 8000)]),
            Some(9100)
        );
        assert_eq!(
            published_port(&[port(Some("metrics"), 9100), port(Some("http"), 8000)]),
            Some(8000)
        );
    }

    #[test]
    fn formats_parse_by_name_and_an_unknown_one_lists_the_known() {
        assert_eq!("prometheus-sd".parse(), Ok(Format::PrometheusSd));
        assert_eq!("traefik".parse(), Ok(Format::Traefik));
        let error = "yaml".parse::<Format>().unwrap_err();
        assert!(
            error.contains("\"yaml\"")
                && error.contains("json, env, prometheus-sd, traefik, nginx"),
            "{error}"
        );
    }

    #[test]
    fn env_names_are_upper_case_with_underscores() {
        assert_eq!(
            env_name(&ServiceAddr::new("my-stack", "web_ui-2")),
            "MY_STACK_WEB_UI_2"
        );
    }
}
