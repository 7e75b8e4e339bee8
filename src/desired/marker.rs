//! The marker: the identity stackctl writes into every job's comment, and its parser. Written
//! from desired state at submit, read back from Slurm's listing as observed state (both
//! [`crate::observed`] and the desired-state checks of comment length use it).

use super::{Owner, ServiceAddr, SpecHash};
use crate::job::JobId;
use std::fmt;

/// The marker's version tag, the first field of every stackctl job comment.
pub const MARKER_PREFIX: &str = "stackctl/v1";

/// Text every stackctl comment (job marker or lock) contains; listings pre-filter on it.
pub const COMMENT_TAG: &str = "stackctl";

/// The identity stackctl writes into a job's comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The owner namespace.
    pub owner: Owner,
    /// The service the job belongs to.
    pub service: ServiceAddr,
    /// Hash of the replica spec the job was submitted with.
    pub spec: SpecHash,
    /// Unique per submission, so a submit whose outcome is unknown can be looked up.
    pub nonce: String,
    /// The replica indexes of the submission, in Slurm array syntax (`0-2,5`).
    pub indexes: String,
    /// What the job wrote about itself once running (health, address, ports); empty in the
    /// marker stackctl submits. Never part of the spec hash.
    pub report: SelfReport,
    /// The crash-loop record a successor of a failed replica carries (`restarts=`, `fail=`,
    /// `begin=`), written by stackctl at submit; default for every other job. Never part of
    /// the spec hash.
    pub restart: RestartRecord,
    /// `protect=1`: the service was `protect: true` when stackctl last wrote the marker, so a
    /// plan must not reduce it even once it is gone from the repo. Never part of the spec hash.
    pub protect: bool,
    /// The job this one replaces in a rolling update or a walltime renewal (`pred=<jobid>`),
    /// written by stackctl at submit on a successor. Two alive jobs on one index are a
    /// rollout pair only when one names the other here. Twice or unreadable counts as absent.
    pub pred: Option<JobId>,
    /// Fingerprints of the `endpoint_env` values the job was given (`ep=a1b2c3d4,…`), one
    /// per variable in name order ([`crate::plan::endpoint_fingerprint`]), written by
    /// stackctl at submit; empty for a job without `endpoint_env` or from an older stackctl.
    /// Compared with the addresses the referenced services serve now, it tells a client
    /// whose endpoint moved. Twice or unreadable counts as absent. Never part of the spec hash.
    pub endpoints: Vec<String>,
}

/// The crash-loop record in a successor's marker: Slurm forgets ended jobs after MinJobAge,
/// so the count lives on the job that replaces the failed one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartRecord {
    /// How many restarts in a row this job is (`restarts=N`); 0 for a fresh start.
    pub restarts: u32,
    /// The failure it replaces (`fail=<STATE>:<exit>:<unix time>`).
    pub fail: Option<FailRecord>,
    /// The earliest start it was submitted with (`begin=<unix time>`, `sbatch --begin`).
    pub not_before: Option<i64>,
}

/// How a job ended in failure.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailRecord {
    /// Slurm's state (`FAILED`, `TIMEOUT`, …).
    pub state: String,
    /// The exit code, when known (`-` in the marker when not).
    pub exit: Option<i32>,
    /// When it ended, unix seconds.
    pub at: i64,
}

impl FailRecord {
    /// Parses `STATE:EXIT:UNIX` (`EXIT` may be `-`); `None` for anything else.
    pub fn parse(text: &str) -> Option<FailRecord> {
        let mut parts = text.split(':');
        let state = parts.next()?;
        let exit = parts.next()?;
        let at = parts.next()?.parse().ok()?;
        if parts.next().is_some()
            || state.is_empty()
            || !state.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        {
            return None;
        }
        let exit = match exit {
            "-" => None,
            n => Some(n.parse().ok()?),
        };
        Some(FailRecord {
            state: state.to_owned(),
            exit,
            at,
        })
    }
}

impl fmt::Display for FailRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.exit {
            Some(exit) => write!(f, "{}:{exit}:{}", self.state, self.at),
            None => write!(f, "{}:-:{}", self.state, self.at),
        }
    }
}

/// What a running job records about itself in its own comment: `health=`, `addr=` and
/// `ports=` (written by the batch script, see `render::script`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelfReport {
    /// The health check's verdict; none when the job has no health check (or wrote nothing
    /// readable).
    pub health: Option<Health>,
    /// The node's address as the node resolves its own name.
    pub addr: Option<String>,
    /// The actual ports, in declared order; empty when not reported.
    pub ports: Vec<u16>,
    /// When the job first reported `health=ready` in its current ready spell (`ready_at=<unix
    /// time>`, the node's clock), written by the supervisor with `health=ready` and dropped
    /// with any other verdict. A rollout measures `min_healthy_time` from it: it lives on the
    /// job, so it survives a restart of apply or watch.
    pub ready_at: Option<i64>,
}

/// A job's own health verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not ready yet: no probe has succeeded.
    Starting,
    /// The last probe succeeded (or fewer failures than the threshold followed one that did).
    Ready,
    /// As many failures in a row as the threshold, after the start period.
    Unhealthy,
}

impl Health {
    /// Returns the word the job writes: `starting`, `ready` or `unhealthy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Ready => "ready",
            Health::Unhealthy => "unhealthy",
        }
    }

    /// Parses the word the job writes; `None` for anything else.
    pub fn parse(text: &str) -> Option<Health> {
        match text {
            "starting" => Some(Health::Starting),
            "ready" => Some(Health::Ready),
            "unhealthy" => Some(Health::Unhealthy),
            _ => None,
        }
    }
}

impl SelfReport {
    /// Returns whether the job reported nothing.
    pub fn is_empty(&self) -> bool {
        self.health.is_none()
            && self.addr.is_none()
            && self.ports.is_empty()
            && self.ready_at.is_none()
    }
}

/// Returns whether `text` can be an address in a marker: a host name or an IPv4 or IPv6
/// address (letters, digits, `.`, `-`, `:`), at most 253 characters.
fn is_addr(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
}

/// Parses `a1b2c3d4,0f0f0f0f` (8 lower-case hex digits each); `None` for anything else.
fn parse_fingerprints(text: &str) -> Option<Vec<String>> {
    text.split(',')
        .map(|f| {
            (f.len() == 8
                && f.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| f.to_owned())
        })
        .collect()
}

/// Parses `8000,20001`; `None` for anything else (an empty list included).
fn parse_ports(text: &str) -> Option<Vec<u16>> {
    let ports: Vec<u16> = text
        .split(',')
        .map(|p| p.parse().ok().filter(|&p| p > 0))
        .collect::<Option<_>>()?;
    (!ports.is_empty()).then_some(ports)
}

impl fmt::Display for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{MARKER_PREFIX};owner={};stack={};svc={};spec={};nonce={};idx={}",
            self.owner,
            self.service.stack,
            self.service.service,
            self.spec,
            self.nonce,
            self.indexes
        )?;
        let restart = &self.restart;
        if restart.restarts > 0 {
            write!(f, ";restarts={}", restart.restarts)?;
        }
        if let Some(fail) = &restart.fail {
            write!(f, ";fail={fail}")?;
        }
        if let Some(begin) = restart.not_before {
            write!(f, ";begin={begin}")?;
        }
        if self.protect {
            write!(f, ";protect=1")?;
        }
        if let Some(pred) = self.pred {
            write!(f, ";pred={pred}")?;
        }
        if !self.endpoints.is_empty() {
            write!(f, ";ep={}", self.endpoints.join(","))?;
        }
        let report = &self.report;
        if let Some(health) = report.health {
            write!(f, ";health={}", health.as_str())?;
        }
        if let Some(ready_at) = report.ready_at {
            write!(f, ";ready_at={ready_at}")?;
        }
        if let Some(addr) = &report.addr {
            write!(f, ";addr={addr}")?;
        }
        if !report.ports.is_empty() {
            let ports: Vec<String> = report.ports.iter().map(u16::to_string).collect();
            write!(f, ";ports={}", ports.join(","))?;
        }
        Ok(())
    }
}

/// The longest job comment Slurm accepts (22.05: 1024 characters; longer is rejected at
/// submit and at update).
pub const MAX_COMMENT_LEN: usize = 1024;

/// The longest `idx` value a marker carries; a submission whose index set would need more is
/// split into several arrays, so a marker never nears [`MAX_COMMENT_LEN`] whatever the
/// indexes (owner ≤ 128, stack and service ≤ 63 each, the rest fixed: under 800 in all).
pub const MAX_INDEXES_LEN: usize = 400;

impl Marker {
    /// Parses a job comment; returns `None` for anything that is not a stackctl marker.
    ///
    /// Fields are read by name and unknown ones are ignored, so a newer stackctl can add
    /// fields without an older one losing sight of its jobs. `owner`, `stack`, `svc` and
    /// `spec` are required; a field given twice makes the comment no marker (it is ambiguous).
    pub fn parse(comment: &str) -> Option<Marker> {
        let mut fields = comment.split(';');
        if fields.next()? != MARKER_PREFIX {
            return None;
        }
        let mut values: [Option<&str>; 6] = [None; 6];
        // The job's own report: a value given twice, or unreadable, counts as absent.
        let mut reported: [(Option<&str>, bool); 4] = [(None, false); 4];
        // stackctl's crash-loop record: likewise, twice or unreadable counts as absent.
        let mut restart_fields: [(Option<&str>, bool); 3] = [(None, false); 3];
        // `protect=1`; any other value, or the field twice, counts as unprotected.
        let mut protect: (Option<&str>, bool) = (None, false);
        let mut pred: (Option<&str>, bool) = (None, false);
        let mut endpoints: (Option<&str>, bool) = (None, false);
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            if key == "protect" {
                protect.1 |= protect.0.replace(value).is_some();
                continue;
            }
            if key == "pred" {
                pred.1 |= pred.0.replace(value).is_some();
                continue;
            }
            if key == "ep" {
                endpoints.1 |= endpoints.0.replace(value).is_some();
                continue;
            }
            if let Some(slot) = Self::RESTART_KEYS.iter().position(|k| *k == key) {
                let (seen, twice) = &mut restart_fields[slot];
                *twice |= seen.replace(value).is_some();
                continue;
            }
            if let Some(slot) = Self::REPORT_KEYS.iter().position(|k| *k == key) {
                let (seen, twice) = &mut reported[slot];
                *twice |= seen.replace(value).is_some();
                continue;
            }
            let Some(slot) = Self::KEYS.iter().position(|k| *k == key) else {
                continue;
            };
            if values[slot].replace(value).is_some() {
                return None;
            }
        }
        let [health, addr, ports, ready_at] =
            reported.map(|(value, twice)| value.filter(|_| !twice));
        let report = SelfReport {
            health: health.and_then(Health::parse),
            addr: addr.filter(|a| is_addr(a)).map(str::to_owned),
            ports: ports.and_then(parse_ports).unwrap_or_default(),
            ready_at: ready_at.and_then(|t| t.parse().ok()),
        };
        let [restarts, fail, begin] = restart_fields.map(|(value, twice)| value.filter(|_| !twice));
        let restart = RestartRecord {
            restarts: restarts.and_then(|r| r.parse().ok()).unwrap_or(0),
            fail: fail.and_then(FailRecord::parse),
            not_before: begin.and_then(|b| b.parse().ok()),
        };
        let [owner, stack, service, spec, nonce, indexes] = values;
        fn required(v: Option<&str>) -> Option<&str> {
            v.filter(|v| !v.is_empty())
        }
        Some(Marker {
            owner: Owner::parse(required(owner)?).ok()?,
            service: ServiceAddr::new(required(stack)?, required(service)?),
            spec: SpecHash(required(spec)?.to_owned()),
            nonce: nonce.unwrap_or_default().to_owned(),
            indexes: indexes.unwrap_or_default().to_owned(),
            report,
            restart,
            protect: protect.0 == Some("1") && !protect.1,
            pred: pred.0.filter(|_| !pred.1).and_then(JobId::parse),
            endpoints: endpoints
                .0
                .filter(|_| !endpoints.1)
                .and_then(parse_fingerprints)
                .unwrap_or_default(),
        })
    }

    /// The names of the fields, in the order every marker is written.
    const KEYS: [&'static str; 6] = ["owner", "stack", "svc", "spec", "nonce", "idx"];

    /// The names of the fields a job writes about itself, after [`Marker::KEYS`].
    pub const REPORT_KEYS: [&'static str; 4] = ["health", "addr", "ports", "ready_at"];

    /// The names of stackctl's crash-loop fields ([`RestartRecord`]), written after
    /// [`Marker::KEYS`] and before the job's own report.
    pub const RESTART_KEYS: [&'static str; 3] = ["restarts", "fail", "begin"];

    /// Returns the text every marker of `owner` contains, for cheap pre-filtering of listings.
    pub fn owner_tag(owner: &Owner) -> String {
        format!("{MARKER_PREFIX};owner={owner};")
    }
}
