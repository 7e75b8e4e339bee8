//! Observed state: the owned jobs found in Slurm, with their parsed markers. Pure types and
//! parsing, no backend: the reconcile pass lists the jobs and reads what a plan needs
//! ([`crate::reconcile::observe`]). The marker format itself is [`crate::desired::marker`].
//!
//! Every job stackctl submits is one task of a job array whose task id is the replica index,
//! and whose comment carries a marker:
//! `stackctl/v1;owner=<owner>;stack=<stack>;svc=<service>;spec=<hash>;nonce=<nonce>;idx=<indexes>`.
//! Only jobs whose marker names this owner are ever considered or cancelled.

pub mod output;
pub mod runs;
pub use crate::desired::marker::{
    COMMENT_TAG, FailRecord, Health, MARKER_PREFIX, MAX_COMMENT_LEN, MAX_INDEXES_LEN, Marker,
    RestartRecord, SelfReport,
};
pub use crate::job::JobId;

use crate::desired::{Desired, Owner, ReplicaSpec, ServiceAddr, SpecHash};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

/// Splits replica indexes into groups whose Slurm array syntax fits a marker's `idx` field
/// ([`MAX_INDEXES_LEN`]); each group becomes one submission.
pub fn index_groups(indexes: &[u32]) -> Vec<Vec<u32>> {
    let mut sorted = indexes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut groups: Vec<Vec<u32>> = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    for index in sorted {
        current.push(index);
        if index_ranges(&current).len() > MAX_INDEXES_LEN {
            current.pop();
            groups.push(std::mem::take(&mut current));
            current.push(index);
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// A job as any Slurm listing returns it, before ownership is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// Slurm's job id. Never the task's own numeric id: the last task of an array shares the
    /// array's id, so cancelling that would cancel the whole array.
    pub id: JobId,
    /// Job comment; the tasks of one array may share one allocation.
    pub comment: Arc<str>,
    /// State as Slurm names it (`PENDING`, `RUNNING`, `COMPLETING`, …).
    pub state: String,
    /// Why the job is pending, or `None`.
    pub reason: String,
    /// Allocated nodes in Slurm's hostlist notation; empty while pending.
    pub nodes: String,
    /// When the job started, ended, and how it exited, as far as Slurm says.
    pub times: JobTimes,
}

/// When and where Slurm expects a job to start, as `sbatch --test-only` estimates it from the
/// queue at the time of asking.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StartEstimate {
    /// Expected start (unix seconds).
    pub at: i64,
    /// When Slurm was asked (unix seconds): what `at` is near or far from.
    pub asked_at: i64,
    /// The nodes it would start on (a hostlist).
    pub nodes: String,
    /// The partition it would start in.
    pub partition: String,
}

/// How near a start estimate is, for its wording ([`StartEstimate::nearness`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nearness {
    /// Within a minute of asking: resources are free now.
    Now,
    /// Within an hour.
    Soon,
    /// Later: it waits behind running jobs.
    Later,
    /// Further away than Slurm ever plans ([`StartEstimate::PLAUSIBLE_SECONDS`]): not a real
    /// plan (seen: 170 years ahead on an idle cluster), so shown as unknown.
    Implausible,
}

impl StartEstimate {
    /// How long after asking a start still counts as "now": the scheduler's own cycle.
    pub const NOW_SECONDS: i64 = 60;
    /// How long after asking a start is still worth a time of day.
    pub const SOON_SECONDS: i64 = 3600;

    /// The furthest start that is a real estimate: a year and a day. A will-run estimate is
    /// when enough running jobs end (or a reservation does), and slurmctld takes the end of a
    /// job without a time limit (`UNLIMITED`) to be a year after its start, so no plan it makes
    /// reaches further; the day covers clock differences and a job started a moment ago.
    pub const PLAUSIBLE_SECONDS: i64 = 366 * 86_400;

    /// How near the expected start is to when Slurm was asked.
    pub fn nearness(&self) -> Nearness {
        let wait = self.at - self.asked_at;
        if wait > Self::PLAUSIBLE_SECONDS {
            Nearness::Implausible
        } else if wait <= Self::NOW_SECONDS {
            Nearness::Now
        } else if wait <= Self::SOON_SECONDS {
            Nearness::Soon
        } else {
            Nearness::Later
        }
    }
}

/// A job's start, end and exit, from the same listing as its state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobTimes {
    /// Start time (unix seconds): actual once running, expected while pending.
    pub start: Option<i64>,
    /// End time (unix seconds): actual once ended; while running, the expected end (start plus
    /// time limit), what walltime renewal measures against.
    pub end: Option<i64>,
    /// The batch script's exit code, once ended (none when killed by a signal or unknown).
    pub exit: Option<i32>,
    /// Submit time (unix seconds): what a successor's `queue_timeout` is measured from.
    pub submit: Option<i64>,
}

impl JobTimes {
    /// Reads Slurm's raw exit status (squeue's `exit_code`, a wait status): the exit code
    /// when the script exited, `None` when it was killed by a signal.
    pub fn exit_from_wait_status(status: u32) -> Option<i32> {
        (status & 0x7f == 0).then_some(((status >> 8) & 0xff) as i32)
    }
}

/// A replica's lifecycle, mapped from Slurm's job states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for resources, configuring or requeued: will run by itself.
    Pending,
    /// Running.
    Running,
    /// Alive but not running and not going to by itself: held, requeued-held, stopped,
    /// suspended, being signalled, or a state stackctl does not know. Holds the state and,
    /// for held jobs, Slurm's reason.
    Stuck(String),
    /// COMPLETING: Slurm is still cleaning up after it. It serves nothing and is no replica,
    /// but it is not gone either: a requeued job (node failure, `scontrol requeue`) shows
    /// COMPLETING before it returns to PENDING, so its index is not refilled until it settles.
    Completing,
    /// Ended: no longer counts as a replica.
    Ended(String),
}

/// Slurm's reasons for a PENDING job that will never start by itself.
const HELD_REASONS: [&str; 3] = ["JobHeldUser", "JobHeldAdmin", "job requeued in held state"];

impl JobState {
    /// Maps a Slurm state name and reason. Unknown names count as alive (stuck), so stackctl
    /// never submits a duplicate next to a job it does not understand. A PENDING job that is
    /// held (`scontrol hold`, `requeuehold`) is stuck: it will not start by itself.
    pub fn from_slurm(state: &str, reason: &str) -> JobState {
        match state {
            "PENDING" if HELD_REASONS.contains(&reason.trim()) => {
                JobState::Stuck(format!("PENDING ({})", reason.trim()))
            }
            "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_FED" | "RESIZING" => {
                JobState::Pending
            }
            "RUNNING" => JobState::Running,
            "COMPLETING" => JobState::Completing,
            "COMPLETED" | "CANCELLED" | "FAILED" | "TIMEOUT" | "NODE_FAIL" | "PREEMPTED"
            | "BOOT_FAIL" | "DEADLINE" | "OUT_OF_MEMORY" | "SPECIAL_EXIT" | "REVOKED"
            | "STAGE_OUT" => JobState::Ended(state.to_owned()),
            // STOPPED and SIGNALING keep their allocation; SUSPENDED, REQUEUE_HOLD and
            // anything new are alive too.
            other => JobState::Stuck(other.to_owned()),
        }
    }

    /// Returns whether the job counts as a replica (everything but ending and ended jobs).
    pub fn is_alive(&self) -> bool {
        !matches!(self, JobState::Completing | JobState::Ended(_))
    }

    /// Returns whether the job's service stopped by itself, which counts towards crash-loop
    /// backoff and `max_attempts`: FAILED (the unhealthy exit included), NODE_FAIL,
    /// OUT_OF_MEMORY, TIMEOUT, BOOT_FAIL, DEADLINE, and COMPLETED: a service is not supposed
    /// to end, so an exit 0 is restarted like a failure (else one that exits at once would be
    /// resubmitted on every pass, forever). A cancel and a preemption are not the service's
    /// doing.
    pub fn is_crash(&self) -> bool {
        matches!(self, JobState::Ended(s) if matches!(s.as_str(), "FAILED" | "NODE_FAIL" | "OUT_OF_MEMORY" | "TIMEOUT" | "BOOT_FAIL" | "DEADLINE" | "COMPLETED"))
    }

    /// Returns whether the job ended badly (anything but a clean completion or a cancel).
    pub fn is_failure(&self) -> bool {
        matches!(self, JobState::Ended(s) if !matches!(s.as_str(), "COMPLETED" | "CANCELLED"))
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobState::Pending => f.write_str("PENDING"),
            JobState::Running => f.write_str("RUNNING"),
            JobState::Completing => f.write_str("COMPLETING"),
            JobState::Stuck(s) | JobState::Ended(s) => f.write_str(s),
        }
    }
}

/// One owned job: a replica of a service, alive or recently ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveJob {
    /// Slurm job id (`123_4`); what scancel takes.
    pub id: JobId,
    /// The replica index (the array task id).
    pub index: u32,
    /// The job's marker, shared by every task of one submission.
    pub marker: Arc<Marker>,
    /// Its state.
    pub state: JobState,
    /// Slurm's reason for the state (e.g. `Resources`), or empty.
    pub reason: String,
    /// Allocated nodes, hostlist notation.
    pub nodes: String,
    /// Start, end and exit.
    pub times: JobTimes,
}

impl LiveJob {
    /// Returns whether the replica is ready: RUNNING, and when its spec has a health check,
    /// reporting `health=ready`.
    pub fn is_ready(&self, has_health_check: bool) -> bool {
        self.state == JobState::Running
            && (!has_health_check || self.marker.report.health == Some(Health::Ready))
    }

    /// Returns the address and actual ports the job reported about itself, if it reported an
    /// address.
    pub fn endpoint(&self) -> Option<(String, Vec<u16>)> {
        let report = &self.marker.report;
        Some((report.addr.clone()?, report.ports.clone()))
    }

    /// Returns whether the replica is ready, given the spec it runs (`None` when unknown):
    /// a known spec says whether there is a health check; for an unknown one, a job that
    /// reports a health verdict has one.
    pub fn is_ready_running(&self, spec: Option<&ReplicaSpec>) -> bool {
        let has_health_check = match spec {
            Some(spec) => spec.health.is_some(),
            None => self.marker.report.health.is_some(),
        };
        self.is_ready(has_health_check)
    }

    /// Returns where the replica serves, the one rule status and endpoints share: the address
    /// and actual ports the job reported about itself (named after `spec`'s ports when their
    /// counts match); for a job that reported no ports, every node of the replica with each
    /// fixed port of `spec` (nothing when the spec is unknown or has no fixed port). Says
    /// nothing about readiness.
    pub fn serving_at(&self, spec: Option<&ReplicaSpec>) -> Vec<ServingAt> {
        let declared = spec.map_or(&[][..], |s| s.ports.as_slice());
        match self.endpoint() {
            Some((host, ports)) if !ports.is_empty() => {
                let named = ports.len() == declared.len();
                let ports = ports
                    .iter()
                    .enumerate()
                    .map(|(i, &port)| NamedPort {
                        name: declared
                            .get(i)
                            .filter(|_| named)
                            .and_then(|p| p.name.clone()),
                        port,
                    })
                    .collect();
                vec![ServingAt { host, ports }]
            }
            _ => {
                let fixed: Vec<NamedPort> = declared
                    .iter()
                    .filter_map(|p| {
                        Some(NamedPort {
                            name: p.name.clone(),
                            port: p.number()?,
                        })
                    })
                    .collect();
                if fixed.is_empty() {
                    return Vec::new();
                }
                crate::hostlist::expand(&self.nodes)
                    .into_iter()
                    .map(|host| ServingAt {
                        host,
                        ports: fixed.clone(),
                    })
                    .collect()
            }
        }
    }
}

/// One host a replica serves on, with its ports in declared order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServingAt {
    /// The address the job reported, or a node name.
    pub host: String,
    /// The ports, in declared order.
    pub ports: Vec<NamedPort>,
}

impl ServingAt {
    /// The one port published for clients, load balancers and other services' `endpoint_env`
    /// ([`published_port`]), or the port named `name` when one is asked for.
    pub fn port(&self, name: Option<&str>) -> Option<u16> {
        match name {
            Some(name) => self
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.port),
            None => published_port(&self.ports),
        }
    }
}

/// The port published when a replica serves on several: the one named `http`, or else the
/// first.
pub fn published_port(ports: &[NamedPort]) -> Option<u16> {
    ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .or_else(|| ports.first())
        .map(|p| p.port)
}

/// A port a replica serves on, with its name when the spec gives one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NamedPort {
    /// The port's name in the spec (`http`, `metrics`), if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The port number.
    pub port: u16,
}

/// Everything stackctl observed of its own jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Owned jobs, sorted by service, index and job id.
    pub jobs: Vec<LiveJob>,
    /// Specs of live jobs whose hash differs from the desired one, read back from their batch
    /// scripts, so a plan can show what changes. Missing entries render as unknown.
    pub specs: BTreeMap<SpecHash, ReplicaSpec>,
    /// When the jobs were listed, unix seconds: the "now" crash-loop backoff is measured
    /// against (0 when unknown, which makes every backoff look elapsed).
    pub listed_at: i64,
    /// The completion records of one-shot jobs (`kind: job`), by job, oldest run first; read
    /// from their results directories, never from Slurm ([`runs`]).
    pub runs: BTreeMap<ServiceAddr, Vec<runs::RunRecord>>,
    /// The ended runs of one-shot jobs that accounting (`sacct`, slurmdbd) knows and Slurm's
    /// listing no longer shows (past MinJobAge), owned like [`Observed::jobs`]; empty where
    /// the cluster has no accounting, `cluster.accounting: off`, or the repo has no jobs.
    pub accounted: Vec<LiveJob>,
}

impl Observed {
    /// Keeps the records whose marker names `owner`; everything else is invisible to stackctl.
    pub fn from_records(records: impl IntoIterator<Item = JobRecord>, owner: &Owner) -> Observed {
        // The tasks of one array share a comment: parse each distinct comment once, and
        // compare with the previous record's first (the same allocation, when listed together).
        let mut markers: HashMap<Arc<str>, Option<Arc<Marker>>> = HashMap::new();
        let mut last: (Arc<str>, Option<Arc<Marker>>) = (Arc::from(""), None);
        let jobs: Vec<LiveJob> = records
            .into_iter()
            .filter_map(|record| {
                if !Arc::ptr_eq(&record.comment, &last.0) {
                    let marker = markers
                        .entry(record.comment.clone())
                        .or_insert_with(|| {
                            Marker::parse(&record.comment)
                                .filter(|m| &m.owner == owner)
                                .map(Arc::new)
                        })
                        .clone();
                    last = (record.comment, marker);
                }
                let marker = last.1.clone()?;
                // Slurm lists an array that ended before its task started (cancelled while
                // PENDING) without a task id (`591`, ArrayTaskID N/A). A one-index array (a
                // rolling or crash-loop successor) still names its index in the marker:
                // without it, a successor cancelled while PENDING would vanish, and its
                // stopped rollout with it. An alive job without a task id is none of ours.
                let state = JobState::from_slurm(&record.state, &record.reason);
                let index = match record.id.task {
                    Some(task) => task,
                    None if !state.is_alive() && state != JobState::Completing => {
                        marker.indexes.parse().ok()?
                    }
                    None => return None,
                };
                Some(LiveJob {
                    id: record.id,
                    index,
                    marker,
                    state,
                    reason: record.reason,
                    nodes: record.nodes,
                    times: record.times,
                })
            })
            .collect();
        // Sort on numbers only: each service's rank, then index, then job id.
        let services: BTreeSet<&ServiceAddr> = jobs.iter().map(|j| &j.marker.service).collect();
        let rank: HashMap<&ServiceAddr, usize> = services
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, i))
            .collect();
        let mut keyed: Vec<_> = jobs
            .iter()
            .map(|j| (rank[&j.marker.service], j.index, j.id))
            .zip(0..)
            .collect();
        keyed.sort_unstable();
        let mut slots: Vec<Option<LiveJob>> = jobs.into_iter().map(Some).collect();
        let jobs = keyed
            .into_iter()
            .filter_map(|(_, i)| slots[i].take())
            .collect();
        Observed {
            jobs,
            specs: BTreeMap::new(),
            listed_at: 0,
            runs: BTreeMap::new(),
            accounted: Vec::new(),
        }
    }

    /// Returns the owned jobs that are still alive.
    pub fn alive(&self) -> impl Iterator<Item = &LiveJob> {
        self.jobs.iter().filter(|job| job.state.is_alive())
    }

    /// Returns the spec `job` runs: the desired spec when the job's spec hash is the desired
    /// one, else the spec read back from its batch script; none when unknown, rather than a
    /// guess.
    pub fn spec_of<'a>(&'a self, job: &LiveJob, desired: &'a Desired) -> Option<&'a ReplicaSpec> {
        match desired.services.get(&job.marker.service) {
            Some(service) if service.hash == job.marker.spec => Some(&service.spec),
            _ => self.specs.get(&job.marker.spec),
        }
    }
}

/// Groups array task ids by array in Slurm's syntax: `7_0 7_1 7_3 9` becomes
/// `["7_[0-1,3]", "9"]`. scancel and people both read the short form.
pub fn compact_job_ids(job_ids: &[JobId]) -> Vec<String> {
    let mut by_array: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    let mut plain = Vec::new();
    for id in job_ids {
        match id.task {
            Some(task) => by_array.entry(id.array).or_default().push(task),
            None => plain.push(id.to_string()),
        }
    }
    let mut out: Vec<String> = by_array
        .into_iter()
        .map(|(array, tasks)| format!("{array}_[{}]", index_ranges(&tasks)))
        .collect();
    out.extend(plain);
    out
}

/// Formats replica indexes in Slurm's array syntax, with runs collapsed: `0-2,5`.
pub fn index_ranges(indexes: &[u32]) -> String {
    let mut sorted = indexes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker() -> Marker {
        Marker {
            owner: Owner::parse("org/repo").unwrap(),
            service: ServiceAddr::new("inference", "llm"),
            spec: SpecHash("0123456789abcdef".into()),
            nonce: "n1".into(),
            indexes: "0-2,5".into(),
            report: SelfReport::default(),
            restart: Default::default(),
            protect: false,
            pred: None,
            endpoints: Vec::new(),
        }
    }

    #[test]
    fn protect_is_written_after_the_restart_record_and_read_only_as_1_once() {
        let protected = Marker {
            protect: true,
            restart: RestartRecord {
                not_before: Some(5),
                ..Default::default()
            },
            report: SelfReport {
                health: Some(Health::Ready),
                ..Default::default()
            },
            ..marker()
        };
        let text = protected.to_string();
        assert!(text.ends_with(";begin=5;protect=1;health=ready"), "{text}");
        assert_eq!(Marker::parse(&text), Some(protected));
        let base = marker().to_string();
        assert!(!base.contains("protect"), "unprotected markers omit it");
        for tail in [";protect=0", ";protect=yes", ";protect=1;protect=1", ""] {
            let parsed = Marker::parse(&format!("{base}{tail}")).unwrap();
            assert!(!parsed.protect, "{tail}");
        }
    }

    #[test]
    fn marker_round_trips_and_never_contains_separators_squeue_output_needs() {
        let text = marker().to_string();
        assert!(!text.contains('|') && !text.contains('\n') && !text.contains(' '));
        assert_eq!(Marker::parse(&text), Some(marker()));
    }

    #[test]
    fn markers_are_read_by_field_name_and_unknown_fields_are_ignored() {
        let text = "stackctl/v1;ready=1;idx=0-2,5;nonce=n1;spec=0123456789abcdef;svc=llm;stack=inference;owner=org/repo;port=8000";
        assert_eq!(Marker::parse(text), Some(marker()));
        let minimal = Marker::parse("stackctl/v1;owner=a;stack=s;svc=v;spec=h").unwrap();
        assert_eq!((minimal.nonce.as_str(), minimal.indexes.as_str()), ("", ""));
    }

    #[test]
    fn a_jobs_self_report_round_trips_and_is_written_after_the_base_fields() {
        let reported = Marker {
            report: SelfReport {
                health: Some(Health::Ready),
                addr: Some("10.1.2.3".into()),
                ports: vec![20001, 9100],
                ready_at: Some(1_700_000_000),
            },
            ..marker()
        };
        let text = reported.to_string();
        assert_eq!(
            text,
            format!(
                "{};health=ready;ready_at=1700000000;addr=10.1.2.3;ports=20001,9100",
                marker()
            )
        );
        assert_eq!(Marker::parse(&text), Some(reported));
        // Only what was reported is written.
        let addr_only = Marker {
            report: SelfReport {
                addr: Some("node1".into()),
                ..Default::default()
            },
            ..marker()
        };
        assert_eq!(addr_only.to_string(), format!("{};addr=node1", marker()));
        assert_eq!(Marker::parse(&addr_only.to_string()), Some(addr_only));
    }

    #[test]
    fn unreadable_or_repeated_report_fields_count_as_absent_and_keep_the_marker() {
        let base = marker().to_string();
        for tail in [
            ";health=great;addr=a b;ports=80,x",
            ";health=ready;health=ready",
            ";ports=;addr=",
            ";ports=0",
            ";ports=70000",
            ";addr=10.0.0.1;addr=10.0.0.2",
            ";addr=x|y",
        ] {
            let parsed = Marker::parse(&format!("{base}{tail}"))
                .unwrap_or_else(|| panic!("{tail} made the comment no marker"));
            assert_eq!(parsed.report, SelfReport::default(), "{tail}");
            assert_eq!(parsed.spec, marker().spec, "{tail}");
        }
        // A bad field does not hide a good one.
        let parsed = Marker::parse(&format!("{base};health=unhealthy;ports=1,x")).unwrap();
        assert_eq!(parsed.report.health, Some(Health::Unhealthy));
        assert!(parsed.report.ports.is_empty());
    }

    #[test]
    fn the_crash_loop_record_round_trips_and_unreadable_fields_count_as_absent() {
        let record = RestartRecord {
            restarts: 4,
            fail: Some(FailRecord {
                state: "OUT_OF_MEMORY".into(),
                exit: None,
                at: 1_700_000_000,
            }),
            not_before: Some(1_700_000_160),
        };
        let successor = Marker {
            restart: record.clone(),
            ..marker()
        };
        let text = successor.to_string();
        assert_eq!(
            text,
            format!(
                "{};restarts=4;fail=OUT_OF_MEMORY:-:1700000000;begin=1700000160",
                marker()
            )
        );
        assert_eq!(Marker::parse(&text).unwrap().restart, record);
        // The job's own report is appended after it and changes nothing.
        let reported = Marker::parse(&format!("{text};health=unhealthy")).unwrap();
        assert_eq!(reported.restart, record);
        assert_eq!(reported.spec, marker().spec, "never part of the spec hash");
        let base = marker().to_string();
        for tail in [
            ";restarts=x;fail=FAILED:1;begin=soon",
            ";restarts=1;restarts=2",
            ";fail=failed:1:5",
            ";fail=FAILED:x:5",
        ] {
            let parsed = Marker::parse(&format!("{base}{tail}")).unwrap();
            assert_eq!(parsed.restart, RestartRecord::default(), "{tail}");
        }
    }

    #[test]
    fn pred_round_trips_after_the_restart_fields_and_unreadable_counts_as_absent() {
        let successor = Marker {
            pred: Some(JobId {
                array: 1234,
                task: Some(2),
            }),
            restart: RestartRecord {
                restarts: 1,
                ..RestartRecord::default()
            },
            ..marker()
        };
        let text = successor.to_string();
        assert_eq!(text, format!("{};restarts=1;pred=1234_2", marker()));
        assert_eq!(Marker::parse(&text).unwrap(), successor);
        let reported = Marker::parse(&format!("{text};health=ready")).unwrap();
        assert_eq!(reported.pred, successor.pred);
        let plain = Marker::parse(&format!("{};pred=77", marker())).unwrap();
        assert_eq!(
            plain.pred,
            Some(JobId {
                array: 77,
                task: None
            })
        );
        let base = marker().to_string();
        for tail in [
            ";pred=",
            ";pred=x",
            ";pred=12_",
            ";pred=_3",
            ";pred=1_2_3",
            ";pred=1;pred=2",
        ] {
            let parsed = Marker::parse(&format!("{base}{tail}")).unwrap();
            assert_eq!(parsed.pred, None, "{tail}");
            assert_eq!(parsed.spec, marker().spec, "{tail}: still a marker");
        }
    }

    #[test]
    fn endpoint_fingerprints_round_trip_and_unreadable_counts_as_absent() {
        let client = Marker {
            endpoints: vec!["a1b2c3d4".into(), "00ff00ff".into()],
            pred: Some(JobId {
                array: 9,
                task: Some(1),
            }),
            ..marker()
        };
        let text = client.to_string();
        assert_eq!(text, format!("{};pred=9_1;ep=a1b2c3d4,00ff00ff", marker()));
        assert_eq!(Marker::parse(&text).unwrap(), client);
        let reported = Marker::parse(&format!("{text};health=ready;ports=8000")).unwrap();
        assert_eq!(reported.endpoints, client.endpoints);
        let base = marker().to_string();
        for tail in [
            ";ep=",
            ";ep=a1b2c3",
            ";ep=A1B2C3D4",
            ";ep=a1b2c3d4,",
            ";ep=a1b2c3d4;ep=a1b2c3d4",
        ] {
            let parsed = Marker::parse(&format!("{base}{tail}")).unwrap();
            assert!(parsed.endpoints.is_empty(), "{tail}");
        }
    }

    fn live(state: &str, report: SelfReport) -> LiveJob {
        LiveJob {
            id: JobId {
                array: 5,
                task: Some(0),
            },
            index: 0,
            marker: Arc::new(Marker { report, ..marker() }),
            state: JobState::from_slurm(state, "None"),
            reason: String::new(),
            nodes: "node1".into(),
            times: JobTimes::default(),
        }
    }

    #[test]
    fn a_replica_is_ready_when_running_and_its_health_check_if_any_says_ready() {
        let ready = SelfReport {
            health: Some(Health::Ready),
            ..Default::default()
        };
        let starting = SelfReport {
            health: Some(Health::Starting),
            ..Default::default()
        };
        assert!(live("RUNNING", ready.clone()).is_ready(true));
        assert!(!live("PENDING", ready.clone()).is_ready(true));
        assert!(!live("COMPLETING", ready).is_ready(false));
        assert!(!live("RUNNING", starting.clone()).is_ready(true));
        assert!(!live("RUNNING", SelfReport::default()).is_ready(true));
        assert!(live("RUNNING", SelfReport::default()).is_ready(false));
        assert!(live("RUNNING", starting).is_ready(false));
    }

    #[test]
    fn the_endpoint_is_the_reported_address_and_ports() {
        assert_eq!(live("RUNNING", SelfReport::default()).endpoint(), None);
        let report = SelfReport {
            health: None,
            addr: Some("10.0.0.7".into()),
            ports: vec![20000, 20001],
            ready_at: None,
        };
        assert_eq!(
            live("RUNNING", report).endpoint(),
            Some(("10.0.0.7".to_owned(), vec![20000, 20001]))
        );
    }

    #[test]
    fn index_groups_keep_every_marker_within_the_comment_limit() {
        // Every other index: the worst case for range syntax.
        let sparse: Vec<u32> = (0..100_000).step_by(2).collect();
        let groups = index_groups(&sparse);
        assert!(groups.len() > 1, "a fragmented set must be split");
        assert_eq!(groups.concat(), sparse, "no index lost or repeated");
        let longest = Marker {
            owner: Owner::parse(&"o".repeat(128)).unwrap(),
            service: ServiceAddr::new("s".repeat(63), "v".repeat(63)),
            ..marker()
        };
        for group in &groups {
            let text = Marker {
                indexes: index_ranges(group),
                ..longest.clone()
            }
            .to_string();
            assert!(text.len() <= MAX_COMMENT_LEN, "{} chars", text.len());
        }
        assert_eq!(index_groups(&[0, 1, 2, 3]), vec![vec![0, 1, 2, 3]]);
    }

    #[test]
    fn look_alike_and_partial_comments_are_not_markers() {
        for comment in [
            "",
            "stackctl",
            "stackctl/v2;owner=a;stack=s;svc=v;spec=h;nonce=n;idx=0",
            "stackctl/v1;owner=a;stack=s;svc=v;nonce=n;idx=0",
            "stackctl/v1;owner=a;stack=;svc=v;spec=h",
            "stackctl/v1;owner=a;owner=b;stack=s;svc=v;spec=h;nonce=n;idx=0",
            "stackctl/v1;owner=bad owner;stack=s;svc=v;spec=h;nonce=n;idx=0",
            "my job stackctl/v1;owner=a;stack=s;svc=v;spec=h;nonce=n;idx=0",
        ] {
            assert_eq!(Marker::parse(comment), None, "{comment}");
        }
    }

    #[test]
    fn job_ids_compact_per_array() {
        let task = |array, task| JobId {
            array,
            task: Some(task),
        };
        let ids = [
            task(7, 0),
            task(7, 1),
            task(7, 3),
            JobId {
                array: 9,
                task: None,
            },
        ];
        assert_eq!(compact_job_ids(&ids), ["7_[0-1,3]", "9"]);
        assert!(task(9, 1) < task(10, 0), "ids order numerically");
    }

    #[test]
    fn index_ranges_collapse_runs() {
        assert_eq!(index_ranges(&[5, 0, 1, 2, 7, 8]), "0-2,5,7-8");
        assert_eq!(index_ranges(&[3]), "3");
    }

    #[test]
    fn ending_states_do_not_count_and_stopped_held_and_unknown_states_do() {
        // COMPLETING is its own state: no replica, but not ended (a requeue passes through
        // it), and no failure or crash before Slurm says how the job ended.
        let completing = JobState::from_slurm("COMPLETING", "None");
        assert_eq!(completing, JobState::Completing);
        assert!(!completing.is_alive() && !completing.is_failure() && !completing.is_crash());
        assert_eq!(completing.to_string(), "COMPLETING");
        assert!(!JobState::from_slurm("NODE_FAIL", "None").is_alive());
        for state in [
            "REQUEUE_HOLD",
            "STOPPED",
            "SIGNALING",
            "SUSPENDED",
            "SOMETHING_NEW",
        ] {
            let parsed = JobState::from_slurm(state, "None");
            assert_eq!(parsed, JobState::Stuck(state.into()), "{state}");
        }
        for reason in ["JobHeldUser", "JobHeldAdmin", "job requeued in held state"] {
            assert!(matches!(
                JobState::from_slurm("PENDING", reason),
                JobState::Stuck(_)
            ));
        }
        assert_eq!(
            JobState::from_slurm("PENDING", "Resources"),
            JobState::Pending
        );
        assert!(JobState::from_slurm("OUT_OF_MEMORY", "None").is_failure());
        assert!(!JobState::from_slurm("CANCELLED", "None").is_failure());
    }

    #[test]
    fn a_service_that_ended_by_itself_backs_off_even_with_exit_0() {
        for state in [
            "COMPLETED",
            "FAILED",
            "TIMEOUT",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
        ] {
            assert!(JobState::from_slurm(state, "None").is_crash(), "{state}");
        }
        for state in ["CANCELLED", "PREEMPTED", "COMPLETING", "RUNNING"] {
            assert!(!JobState::from_slurm(state, "None").is_crash(), "{state}");
        }
    }
}
