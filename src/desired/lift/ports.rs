//! `ports:` and `health:`: named and fixed ports, and the readiness probe, resolved against the
//! service's ports once the layers are merged.

use super::*;

/// A health check as validated before the ports it probes are known (a stack may replace the
/// recipe's ports, or its health check, or both).
#[derive(Clone)]
pub(super) struct HealthDraft {
    pub(super) probe: ProbeDraft,
    pub(super) interval: u64,
    pub(super) timeout: u64,
    pub(super) start_period: u64,
    pub(super) failure_threshold: u32,
    pub(super) on_failure: OnFailure,
}

#[derive(Clone)]
pub(super) enum ProbeDraft {
    Http { port: PortRef, path: String },
    Tcp { port: PortRef },
    Command(String),
}

/// A probe's `port:` as written (a name, a port number, or nothing: the first port), and
/// where.
#[derive(Clone)]
pub(super) struct PortRef {
    pub(super) which: Option<PortWhich>,
    pub(super) origin: Origin,
}

#[derive(Clone)]
pub(super) enum PortWhich {
    Name(String),
    /// A port number, which must be one of the service's fixed ports.
    Number(u64),
}

impl HealthDraft {
    /// Resolves the probe's port against the service's merged ports; `ports_origin` is where
    /// those were written, for the message.
    pub(super) fn resolve(
        self,
        ports: &[PortSpec],
        ports_origin: Option<&Origin>,
    ) -> Result<HealthSpec, SpecError> {
        let resolve = |port: &PortRef| -> Result<usize, SpecError> {
            let declared = match ports_origin {
                Some(o) => format!(
                    " (the ports are declared at {}{})",
                    o.file.display(),
                    o.position
                        .map_or(String::new(), |(l, c)| format!(":{l}:{c}"))
                ),
                None => String::new(),
            };
            match &port.which {
                None if ports.is_empty() => Err(port.origin.error(format!(
                    "the probe needs a port, and the service declares none{declared}: add \
                     `ports:` (e.g. `ports: [auto]`)"
                ))),
                None => Ok(0),
                Some(PortWhich::Number(n)) => ports
                    .iter()
                    .position(|p| p.number().is_some_and(|p| u64::from(p) == *n))
                    .ok_or_else(|| {
                        let list: Vec<String> = ports.iter().map(describe_port).collect();
                        port.origin.error(format!(
                            "port {n} is not one of the service's ports ({}){declared}; write \
                             one of their numbers, or the name of a named one (an `auto` \
                             port has no number until the job starts)",
                            if list.is_empty() {
                                "it declares none".to_owned()
                            } else {
                                list.join(", ")
                            }
                        ))
                    }),
                Some(PortWhich::Name(name)) => ports
                    .iter()
                    .position(|p| p.name.as_deref() == Some(name))
                    .ok_or_else(|| {
                        let names: Vec<&str> =
                            ports.iter().filter_map(|p| p.name.as_deref()).collect();
                        port.origin.error(format!(
                            "no port named {name:?}; named ports: {}{declared}",
                            if names.is_empty() {
                                "none".to_owned()
                            } else {
                                names.join(", ")
                            }
                        ))
                    }),
            }
        };
        let probe = match &self.probe {
            ProbeDraft::Http { port, path } => Probe::Http {
                port: resolve(port)?,
                path: path.clone(),
            },
            ProbeDraft::Tcp { port } => Probe::Tcp {
                port: resolve(port)?,
            },
            ProbeDraft::Command(command) => Probe::Command(command.clone()),
        };
        Ok(HealthSpec {
            probe,
            interval: self.interval,
            timeout: self.timeout,
            start_period: self.start_period,
            failure_threshold: self.failure_threshold,
            on_failure: self.on_failure,
        })
    }
}

/// Validates a list of ports: each a number in 1..=65535 or `auto`, optionally named
/// (`[a-z][a-z0-9_]*`); no number and no name twice.
pub(super) fn lift_ports(
    ctx: &mut Ctx,
    field: &str,
    ports: &raw::Ports,
) -> Option<Set<Vec<PortSpec>>> {
    let before = ctx.errors.len();
    let mut list: Vec<PortSpec> = Vec::new();
    for (i, item) in ports.value.iter().enumerate() {
        let item_field = format!("{field}[{i}]");
        let at = item.referenced;
        let (name, value, value_field) = match &item.value {
            raw::PortItem::Named { name, port } => {
                (Some(name), &**port, format!("{item_field}.port"))
            }
            other => (None, other, item_field.clone()),
        };
        if let Some(name) = name {
            if !is_port_name(name) {
                ctx.error(
                    at,
                    &format!("{item_field}.name"),
                    format!(
                        "port name {name:?} must be 1 to 32 characters: a lowercase letter, \
                     then lowercase letters, digits or '_'"
                    ),
                );
            } else if let Some(first) = list
                .iter()
                .position(|p| p.name.as_deref() == Some(name.as_str()))
            {
                ctx.error(
                    at,
                    &format!("{item_field}.name"),
                    format!("port name {name:?} is already used (by {field}[{first}])"),
                );
            }
        }
        let port = match value {
            raw::PortItem::Auto => PortValue::Auto,
            raw::PortItem::Number(raw::Int::Value(n)) if (1..=65535).contains(n) => {
                let number = u16::try_from(*n).expect("at most 65535");
                if let Some(first) = list.iter().position(|p| p.number() == Some(number)) {
                    ctx.error(
                        at,
                        &value_field,
                        format!("port {number} is already listed (as {field}[{first}])"),
                    );
                }
                PortValue::Fixed(number)
            }
            raw::PortItem::Number(raw::Int::Value(n)) => {
                let hint = if *n == 0 {
                    "; write `auto` for a free port picked when the job starts"
                } else {
                    ""
                };
                ctx.error(
                    at,
                    &value_field,
                    format!("must be between 1 and 65535, got {n}{hint}"),
                );
                continue;
            }
            raw::PortItem::Number(raw::Int::Not(what)) | raw::PortItem::Not(what) => {
                ctx.error(
                    at,
                    &value_field,
                    format!(
                        "must be a port number, `auto` or `{{name: .., port: ..}}`, got {what}"
                    ),
                );
                continue;
            }
            raw::PortItem::Named { .. } => {
                ctx.error(at, &value_field, "must be a port number or `auto`");
                continue;
            }
        };
        list.push(PortSpec {
            name: name.cloned(),
            port,
        });
    }
    (ctx.errors.len() == before).then(|| Set {
        value: list,
        origin: ctx.origin(ports.referenced, field),
    })
}

/// A declared port as a file writes it: `8000`, `auto`, `http=8000` or `http=auto`.
pub(super) fn describe_port(port: &PortSpec) -> String {
    let value = port
        .number()
        .map_or_else(|| "auto".to_owned(), |n| n.to_string());
    match &port.name {
        Some(name) => format!("{name}={value}"),
        None => value,
    }
}

/// Returns whether `name` is a port name: `[a-z][a-z0-9_]*`, at most 32 characters (it
/// becomes `PORT_<NAME>` in the job).
pub(super) fn is_port_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Validates a `health:` block: exactly one probe, durations, threshold and policy. The
/// probe's port is resolved once the service's ports are known ([`HealthDraft::resolve`]).
pub(super) fn lift_health(
    ctx: &mut Ctx,
    field: &str,
    health: &Spanned<raw::Health>,
) -> Option<Set<HealthDraft>> {
    let before = ctx.errors.len();
    let probe = lift_probe(ctx, field, health);
    let h = &health.value;
    let seconds =
        |ctx: &mut Ctx, v: &Option<Spanned<String>>, name: &str, default: u64, min: u64| {
            let Some(v) = v else {
                return default;
            };
            let field = format!("{field}.{name}");
            match crate::desired::parse_duration(&v.value) {
                Ok(d) if d.as_secs() >= min && d.as_secs() <= 86_400 => d.as_secs(),
                Ok(d) => {
                    ctx.error(
                        v.referenced,
                        &field,
                        format!("must be between {min}s and 1d, got {}s", d.as_secs()),
                    );
                    default
                }
                Err(message) => {
                    ctx.error(v.referenced, &field, message);
                    default
                }
            }
        };
    let interval = seconds(ctx, &h.interval, "interval", 5, 1);
    let timeout = seconds(ctx, &h.timeout, "timeout", 2, 1);
    let start_period = seconds(ctx, &h.start_period, "start_period", 0, 0);
    let failure_threshold = match &h.failure_threshold {
        None => 3,
        Some(v) => ctx
            .int_in(v, &format!("{field}.failure_threshold"), 1, 1000)
            .unwrap_or(3),
    };
    let on_failure = match h.on_failure.as_ref().map(|v| (v.value.as_str(), v)) {
        None | Some(("restart", _)) => OnFailure::Restart,
        Some(("ignore", _)) => OnFailure::Ignore,
        Some((other, v)) => {
            ctx.error(
                v.referenced,
                &format!("{field}.on_failure"),
                format!("{other:?} is neither `restart` nor `ignore`"),
            );
            OnFailure::Restart
        }
    };
    let probe = probe?;
    (ctx.errors.len() == before).then(|| Set {
        value: HealthDraft {
            probe,
            interval,
            timeout,
            start_period,
            failure_threshold,
            on_failure,
        },
        origin: ctx.origin(health.referenced, field),
    })
}

/// Validates the probe of a `health:` block: exactly one of `http` (with its port and path),
/// `tcp` (with its port) or `command`. `None` when none is given (the error recorded).
fn lift_probe(ctx: &mut Ctx, field: &str, health: &Spanned<raw::Health>) -> Option<ProbeDraft> {
    let h = &health.value;
    let kinds = [
        h.http.as_ref().map(|v| v.referenced),
        h.tcp.as_ref().map(|v| v.referenced),
        h.command.as_ref().map(|v| v.referenced),
    ];
    let given = kinds.iter().flatten().count();
    if given != 1 {
        let at = match given {
            0 => health.referenced,
            _ => kinds
                .iter()
                .flatten()
                .nth(1)
                .copied()
                .unwrap_or(health.referenced),
        };
        ctx.error(
            at,
            field,
            format!(
                "a health check has exactly one of `http`, `tcp` or `command`, got {}",
                if given == 0 {
                    "none".to_owned()
                } else {
                    given.to_string()
                }
            ),
        );
    }
    if let Some(http) = &h.http {
        let probe_field = format!("{field}.http");
        let port = probe_port(ctx, &http.value.port, http.referenced, &probe_field);
        let path = match &http.value.path {
            None => "/".to_owned(),
            Some(p)
                if p.value.starts_with('/')
                    && p.value.len() <= 1024
                    && p.value.chars().all(|c| c.is_ascii_graphic()) =>
            {
                p.value.clone()
            }
            Some(p) => {
                ctx.error(
                    p.referenced,
                    &format!("{probe_field}.path"),
                    format!(
                        "{:?} is not a URL path: it starts with `/` and has no spaces or \
                     control characters",
                        p.value
                    ),
                );
                String::new()
            }
        };
        Some(ProbeDraft::Http { port, path })
    } else if let Some(tcp) = &h.tcp {
        let probe_field = format!("{field}.tcp");
        let port = probe_port(ctx, &tcp.value.port, tcp.referenced, &probe_field);
        Some(ProbeDraft::Tcp { port })
    } else if let Some(command) = &h.command {
        if command.value.trim().is_empty() || command.value.contains('\0') {
            ctx.error(
                command.referenced,
                &format!("{field}.command"),
                "must be a non-empty command without NUL bytes",
            );
        }
        Some(ProbeDraft::Command(command.value.clone()))
    } else {
        None
    }
}

/// Returns a probe's `port:` as written: a number, a name, or none (the service's first port),
/// with where it was written (`at`, the probe itself, when no port is given).
fn probe_port(
    ctx: &mut Ctx,
    port: &Option<Spanned<String>>,
    at: serde_saphyr::Location,
    probe_field: &str,
) -> PortRef {
    let port_field = format!("{probe_field}.port");
    match port {
        None => PortRef {
            which: None,
            origin: ctx.origin(at, probe_field),
        },
        Some(v) => {
            let text = v.value.trim();
            let which = if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
                PortWhich::Number(text.parse().unwrap_or(u64::MAX))
            } else {
                PortWhich::Name(text.to_owned())
            };
            PortRef {
                which: Some(which),
                origin: ctx.origin(v.referenced, &port_field),
            }
        }
    }
}
