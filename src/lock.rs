//! The apply lock: one per owner, kept in Slurm itself, so applies on machines that share
//! nothing but the cluster (a laptop, two CI runners) take turns.
//!
//! # How it works
//! A contender submits a *placeholder*: a held, minimal job (`--hold`, 1 CPU, 1 minute; a held
//! job never starts, so it takes nothing) whose comment is a lock marker
//! `stackctl-lock/v1;owner=…;nonce=…;host=…;boot=…;pidns=…;pid=…;pstart=…;since=…;exp=…`.
//! It then lists the jobs. The live placeholder of this owner with the **lowest job id** holds
//! the lock; a contender that finds a lower live one withdraws (cancels) its own and waits or
//! gives up. The holder renews `exp` while it works and cancels its placeholder to release.
//!
//! # Why at most one contender holds it
//! slurmctld hands out job ids in one increasing order and creates a job before its `sbatch`
//! returns. If A's placeholder `a` is lower than B's `b`, `a` existed before `b` was created,
//! so B's listing, made after its own submit returned, shows `a` — unless `a` was cancelled,
//! which only its owner does (withdraw, release) or a breaker does when `a` is stale. So A and
//! B cannot both see themselves lowest. The lock is a lease: a holder stalled past its expiry
//! (no renewal for `expiry`) can lose it; renewal runs every third of the expiry.
//!
//! # What happens when a process dies
//! - Before its placeholder exists: nothing to clean up.
//! - Holding or waiting: the placeholder stays until its expiry. A contender breaks it at once
//!   when the holder's process is provably gone: same host name, same boot id and same pid
//!   namespace (CI containers often share host names and pid numbers), and no process with that
//!   pid and start time. Otherwise it waits for `exp` (clocks are assumed to agree to well
//!   within the expiry, 2 minutes by default).
//! - Whose placeholder is left does not matter: every apply breaks every stale placeholder of
//!   its owner it lists ([`break_stale`]), above its own as well as below, and also when its
//!   plan is empty and it takes no lock. Both happen: an apply killed after its last submit and
//!   before its release leaves one that the next apply, having nothing to do, would otherwise
//!   never look at; and a placeholder whose `sbatch` answer was lost as its apply died may be
//!   created after the next contender's own.
//! - Its `sbatch` children die with it (see the CLI adapter's parent-death signal), so nothing
//!   it started can submit after a new holder has listed the jobs.

use crate::desired::Owner;
use crate::job::{JobOptions, JobRequest};
use crate::observed::{JobId, JobRecord, JobState};
use crate::slurm::{Backend, SlurmError};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The version tag that starts every lock marker. Replica markers start with another tag, so
/// no version of stackctl mistakes a placeholder for a replica.
pub const LOCK_PREFIX: &str = "stackctl-lock/v1";

/// The job name of every placeholder.
pub const LOCK_JOB_NAME: &str = "stackctl-lock";

/// Who is taking a lock: enough to tell, on the same machine, whether its process still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Host name.
    pub host: String,
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`): differs after a reboot and
    /// between machines that share a host name.
    pub boot_id: String,
    /// The pid namespace (`/proc/self/ns/pid`): pid numbers mean something only within it.
    pub pid_ns: String,
    /// Process id.
    pub pid: u32,
    /// The process's start time in clock ticks since boot, so a reused pid is not mistaken for
    /// the holder.
    pub start_ticks: u64,
}

impl Identity {
    /// Returns the identity of this process, read from `/proc`. Fields that cannot be read are
    /// empty (or zero), which makes a dead holder unprovable rather than wrongly provable.
    pub fn current() -> Identity {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let pid = std::process::id();
        Identity {
            host: read("/proc/sys/kernel/hostname"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            pid,
            start_ticks: process_start_ticks(pid).unwrap_or(0),
        }
    }

    /// Returns whether the process that wrote `holder` provably no longer runs: it ran on this
    /// host, boot and pid namespace, and no process with its pid and start time exists.
    fn outlived(&self, holder: &LockMarker) -> bool {
        let comparable = !self.host.is_empty()
            && !self.boot_id.is_empty()
            && !self.pid_ns.is_empty()
            && holder.start_ticks != 0;
        comparable
            && holder.host == self.host
            && holder.boot_id == self.boot_id
            && holder.pid_ns == self.pid_ns
            && process_start_ticks(holder.pid) != Some(holder.start_ticks)
    }
}

/// Returns a process's start time (field 22 of `/proc/<pid>/stat`), or `None` if there is no
/// such process.
fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: count from the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// What a placeholder's comment says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LockMarker {
    owner: Owner,
    nonce: String,
    host: String,
    boot_id: String,
    pid_ns: String,
    pid: u32,
    start_ticks: u64,
    since: u64,
    expires: u64,
}

impl fmt::Display for LockMarker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{LOCK_PREFIX};owner={};nonce={};host={};boot={};pidns={};pid={};pstart={};since={};exp={}",
            self.owner,
            self.nonce,
            self.host,
            self.boot_id,
            self.pid_ns,
            self.pid,
            self.start_ticks,
            self.since,
            self.expires
        )
    }
}

impl LockMarker {
    /// Parses a lock marker by field name, ignoring unknown fields; `None` for anything else.
    fn parse(comment: &str) -> Option<LockMarker> {
        let mut fields = comment.split(';');
        if fields.next()? != LOCK_PREFIX {
            return None;
        }
        let mut marker = LockMarker {
            owner: Owner::parse("-").ok()?,
            nonce: String::new(),
            host: String::new(),
            boot_id: String::new(),
            pid_ns: String::new(),
            pid: 0,
            start_ticks: 0,
            since: 0,
            expires: 0,
        };
        let mut has_owner = false;
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            match key {
                "owner" => {
                    marker.owner = Owner::parse(value).ok()?;
                    has_owner = true;
                }
                "nonce" => marker.nonce = value.to_owned(),
                "host" => marker.host = value.to_owned(),
                "boot" => marker.boot_id = value.to_owned(),
                "pidns" => marker.pid_ns = value.to_owned(),
                "pid" => marker.pid = value.parse().ok()?,
                "pstart" => marker.start_ticks = value.parse().ok()?,
                "since" => marker.since = value.parse().ok()?,
                "exp" => marker.expires = value.parse().ok()?,
                _ => {}
            }
        }
        has_owner.then_some(marker)
    }

    /// Returns whether the lock may be broken: it expired, or `me` can prove its process died.
    fn is_stale(&self, me: &Identity) -> bool {
        self.expires <= now() || me.outlived(self)
    }

    /// Makes a comment value safe for the marker: no separators, spaces or pipes.
    fn clean(value: &str) -> String {
        value
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && !matches!(c, ';' | '|' | '=') {
                    c
                } else {
                    '_'
                }
            })
            .take(128)
            .collect()
    }
}

/// A lock as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// The placeholder's job id: the lock id `force-unlock` takes.
    pub id: JobId,
    /// Host of the holder.
    pub host: String,
    /// Process id of the holder.
    pub pid: u32,
    /// When it was taken, in seconds since the Unix epoch.
    pub since: u64,
    /// When it expires unless renewed, in seconds since the Unix epoch.
    pub expires: u64,
    /// The whole marker, to tell whether the holder provably died (boxed: errors carry this).
    marker: Box<LockMarker>,
}

impl fmt::Display for LockInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lock {} held by {} pid {} since {} (expires {} unless renewed)",
            self.id,
            self.host,
            self.pid,
            utc(self.since),
            utc(self.expires)
        )
    }
}

impl LockInfo {
    fn of(id: JobId, marker: &LockMarker) -> LockInfo {
        LockInfo {
            id,
            host: marker.host.clone(),
            pid: marker.pid,
            since: marker.since,
            expires: marker.expires,
            marker: Box::new(marker.clone()),
        }
    }

    /// Returns whether anyone may remove this lock, as seen by `me`: it expired, or its
    /// holder ran on `me`'s host, boot and pid namespace and no longer runs.
    pub fn is_stale(&self, me: &Identity) -> bool {
        self.marker.is_stale(me)
    }
}

/// Formats seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc(seconds: u64) -> String {
    let (year, month, day, hour, minute, second) = crate::utc::fields(seconds as i64);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

/// Why a lock could not be taken or removed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another apply holds the lock.
    #[error(
        "the apply lock of owner \"{owner}\" is taken: {holder}{}; wait for it with --lock-timeout, or, if its holder is gone for good, remove it with `stackctl force-unlock {}`",
        if waited.is_zero() { String::new() } else { format!(" (waited {} s)", waited.as_secs()) },
        holder.id
    )]
    Held {
        /// The owner whose lock it is.
        owner: Owner,
        /// The current holder.
        holder: LockInfo,
        /// How long this contender waited.
        waited: Duration,
    },
    /// A signal (Ctrl-C) ended the wait for another holder; this contender holds nothing.
    #[error("interrupted while waiting for the apply lock ({holder}); nothing was changed")]
    Interrupted {
        /// The holder waited for.
        holder: LockInfo,
    },
    /// `force-unlock` named no lock of this owner.
    #[error("no live lock {id} of owner \"{owner}\"; live locks: {live}")]
    NotFound {
        /// The id asked for.
        id: String,
        /// The owner.
        owner: Owner,
        /// The live locks of the owner, or "none".
        live: String,
    },
    /// Slurm failed while taking, renewing or releasing the lock. Slurm's error is part of
    /// the message, so it is no error source (a chain printed with `{:#}` would say it twice).
    #[error("apply lock: {0}")]
    Slurm(SlurmError),
}

impl From<SlurmError> for LockError {
    fn from(error: SlurmError) -> LockError {
        LockError::Slurm(error)
    }
}

/// What taking a lock needs.
#[derive(Debug, Clone)]
pub struct LockRequest {
    /// Whose lock.
    pub owner: Owner,
    /// How long the lock lasts without renewal.
    pub expiry: Duration,
    /// How long to wait for another holder; zero fails at once.
    pub wait: Duration,
    /// Partition for the placeholder; none means the cluster's default.
    pub partition: Option<String>,
    /// Who takes it.
    pub identity: Identity,
}

/// A held lock. Renew it with [`Lock::renew`] (or use [`with_lock`], which does) and release
/// it with [`Lock::release`]; dropping it without releasing leaves the placeholder to expire.
#[derive(Debug)]
pub struct Lock {
    id: JobId,
    marker: LockMarker,
    expiry: Duration,
}

impl Lock {
    /// The placeholder's job id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// Pushes the expiry forward. Fails when the placeholder is gone (force-unlocked).
    pub fn renew(&mut self, backend: &dyn Backend) -> Result<(), SlurmError> {
        self.marker.expires = now() + self.expiry.as_secs();
        backend.update_comment(&self.id, &self.marker.to_string())
    }

    /// Cancels the placeholder. A transient failure (Slurm unreachable or slow) is retried
    /// [`RELEASE_ATTEMPTS`] times in all, so a busy controller does not leave the placeholder
    /// behind.
    pub fn release(self, backend: &dyn Backend) -> Result<(), SlurmError> {
        let mut attempt = 1;
        loop {
            match backend.cancel(&[self.id]) {
                Err(e) if e.is_transient() && attempt < RELEASE_ATTEMPTS => {
                    tracing::debug!(lock = %self.id, error = %e, attempt, "releasing the apply lock again");
                    std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
                    attempt += 1;
                }
                result => return result,
            }
        }
    }
}

/// How many times [`Lock::release`] tries to cancel its placeholder.
pub const RELEASE_ATTEMPTS: u32 = 3;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Returns the live locks of `owner` in a listing, lowest id (the holder) first.
pub fn held(records: &[JobRecord], owner: &Owner) -> Vec<LockInfo> {
    live_locks(records, owner)
        .iter()
        .map(|(id, marker)| LockInfo::of(*id, marker))
        .collect()
}

/// Removes every stale lock among `locks` (see [`LockInfo::is_stale`]) except `keep`, with one
/// cancel, and returns the ids removed. Whose placeholder it was does not matter: an apply
/// killed after its last submit, or one whose `sbatch` created the placeholder as the process
/// died, left it, and no process will ever release it. A failed cancel removes nothing that
/// is reported (it is logged; the next apply tries again).
pub fn break_stale(
    backend: &dyn Backend,
    locks: &[LockInfo],
    me: &Identity,
    keep: Option<JobId>,
) -> Vec<JobId> {
    let stale: Vec<&LockInfo> = locks
        .iter()
        .filter(|l| Some(l.id) != keep && l.is_stale(me))
        .collect();
    if stale.is_empty() {
        return Vec::new();
    }
    let ids: Vec<JobId> = stale.iter().map(|l| l.id).collect();
    if let Err(error) = backend.cancel(&ids) {
        tracing::warn!(%error, "could not remove stale apply locks");
        return Vec::new();
    }
    for lock in stale {
        tracing::warn!(
            lock = %lock.id,
            host = %lock.host,
            pid = lock.pid,
            "broke a stale apply lock (expired, or its process is gone)"
        );
    }
    ids
}

/// Returns the alive placeholders of `owner`, lowest id first.
fn live_locks(records: &[JobRecord], owner: &Owner) -> Vec<(JobId, LockMarker)> {
    let mut locks: Vec<(JobId, LockMarker)> = records
        .iter()
        .filter(|r| JobState::from_slurm(&r.state, &r.reason).is_alive())
        .filter_map(|r| Some((r.id, LockMarker::parse(&r.comment)?)))
        .filter(|(_, m)| &m.owner == owner)
        .collect();
    locks.sort_by_key(|(id, _)| *id);
    locks
}

/// The placeholder job: held, one CPU, 1 MB and one minute, output nowhere.
fn placeholder_job(marker: &LockMarker, partition: Option<&str>) -> JobRequest {
    JobRequest {
        options: JobOptions {
            name: LOCK_JOB_NAME.to_owned(),
            comment: marker.to_string(),
            hold: true,
            ntasks: Some(1),
            cpus_per_task: Some(1),
            memory: Some("1M".to_owned()),
            time_limit: Some(1),
            partition: partition.map(str::to_owned),
            output: Some("/dev/null".to_owned()),
            error: Some("/dev/null".to_owned()),
            export_none: true,
            ..JobOptions::default()
        },
        body: "# A stackctl apply lock: held, never runs. See `stackctl force-unlock`.\nexit 0\n"
            .to_owned(),
    }
}

/// Takes the lock of `request.owner`, waiting up to `request.wait` for another holder.
pub fn acquire(backend: &dyn Backend, request: &LockRequest) -> Result<Lock, LockError> {
    acquire_listed(backend, request).map(|(lock, _)| lock)
}

/// [`acquire`], also returning the listing that proved the lock held (taken after the lock's
/// placeholder was submitted, without the stale locks it broke): a plan made from it sees
/// everything a plan listing afresh under the lock would, since every earlier holder had
/// released its lock, and so finished submitting, before that listing.
fn acquire_listed(
    backend: &dyn Backend,
    request: &LockRequest,
) -> Result<(Lock, Vec<JobRecord>), LockError> {
    let started = std::time::Instant::now();
    let me = &request.identity;
    loop {
        let since = now();
        let marker = LockMarker {
            owner: request.owner.clone(),
            nonce: crate::job::new_nonce(),
            host: LockMarker::clean(&me.host),
            boot_id: LockMarker::clean(&me.boot_id),
            pid_ns: LockMarker::clean(&me.pid_ns),
            pid: me.pid,
            start_ticks: me.start_ticks,
            since,
            expires: since + request.expiry.as_secs(),
        };
        let job = placeholder_job(&marker, request.partition.as_deref());
        let array = crate::slurm::submit_once(backend, &job, &marker.nonce)?;
        let own = JobId { array, task: None };
        let lock = Lock {
            id: own,
            marker,
            expiry: request.expiry,
        };
        let (blocker, records) = match lowest_other(backend, request, &lock) {
            Ok(found) => found,
            Err(e) => {
                let _ = lock.release(backend);
                return Err(e.into());
            }
        };
        let Some(holder) = blocker else {
            tracing::debug!(lock = %own, "took the apply lock");
            return Ok((lock, records));
        };
        lock.release(backend)?;
        // Wait with listings only (one RPC a poll); submit again once the lock looks free.
        let mut holder = holder;
        loop {
            if crate::interrupt::interrupted().is_some() {
                return Err(LockError::Interrupted { holder });
            }
            let waited = started.elapsed();
            if waited >= request.wait {
                return Err(LockError::Held {
                    owner: request.owner.clone(),
                    holder,
                    waited,
                });
            }
            tracing::info!(%holder, "waiting for the apply lock");
            let jitter = u64::from(std::process::id() % 250) + (now() % 5) * 50;
            std::thread::sleep(
                Duration::from_millis(500 + jitter).min(request.wait.saturating_sub(waited)),
            );
            let records = backend.list_jobs()?;
            let live = live_locks(&records, &request.owner);
            match live.iter().find(|(_, m)| !m.is_stale(me)) {
                Some((id, marker)) => holder = LockInfo::of(*id, marker),
                None => break,
            }
        }
    }
}

/// Lists the locks and returns the live lock below `lock` that blocks it, after breaking every
/// stale lock of the owner, above `lock` as well as below it (expired, or left by a process
/// that provably died); `None` means `lock` holds. Also returns the listing, without the locks
/// it broke.
fn lowest_other(
    backend: &dyn Backend,
    request: &LockRequest,
    lock: &Lock,
) -> Result<(Option<LockInfo>, Vec<JobRecord>), SlurmError> {
    let mut records = backend.list_jobs()?;
    let locks = held(&records, &request.owner);
    let broken = break_stale(backend, &locks, &request.identity, Some(lock.id));
    records.retain(|r| !broken.contains(&r.id));
    let blocker = locks
        .into_iter()
        .take_while(|l| l.id < lock.id)
        .find(|l| !broken.contains(&l.id));
    Ok((blocker, records))
}

/// Runs `work` while holding the lock: takes it, renews it every third of its expiry from a
/// second thread, and releases it afterwards, whatever `work` returns. `work` gets the listing
/// taken once the lock was submitted (see [`acquire`]), so it need not list again.
pub fn with_lock<T>(
    backend: &dyn Backend,
    request: &LockRequest,
    work: impl FnOnce(Vec<JobRecord>) -> T,
) -> Result<T, LockError> {
    let (mut lock, records) = acquire_listed(backend, request)?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let period = request.expiry / 3;
    let (output, lock) = std::thread::scope(|scope| {
        let renewer = scope.spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(period)
            {
                if let Err(e) = lock.renew(backend) {
                    tracing::warn!(lock = %lock.id, error = %e, "could not renew the apply lock; another apply may take it when it expires");
                }
            }
            lock
        });
        let output = work(records);
        let _ = stop.send(());
        (output, renewer.join().expect("the renewer does not panic"))
    });
    if let Err(e) = lock.release(backend) {
        tracing::warn!(error = %e, "could not release the apply lock; it expires by itself");
    }
    Ok(output)
}

/// Removes the lock with job id `lock_id` of `owner` (for a holder that can no longer release
/// it). Refuses ids that are no live lock of this owner.
pub fn force_unlock(
    backend: &dyn Backend,
    owner: &Owner,
    lock_id: &str,
) -> Result<LockInfo, LockError> {
    let records = backend.list_jobs()?;
    let live = held(&records, owner);
    let Some(found) = live
        .iter()
        .find(|l| l.id.to_string() == lock_id.trim())
        .cloned()
    else {
        return Err(LockError::NotFound {
            id: lock_id.to_owned(),
            owner: owner.clone(),
            live: if live.is_empty() {
                "none".to_owned()
            } else {
                live.iter()
                    .map(|l| l.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        });
    };
    backend.cancel(&[found.id])?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slurm::fake::{FakeBackend, Op};

    fn owner() -> Owner {
        Owner::parse("test/lock").unwrap()
    }

    fn identity(host: &str, pid: u32) -> Identity {
        Identity {
            host: host.into(),
            boot_id: "boot-1".into(),
            pid_ns: "pid:[1]".into(),
            pid,
            start_ticks: 42,
        }
    }

    fn request(identity: Identity, wait: Duration) -> LockRequest {
        LockRequest {
            owner: owner(),
            expiry: Duration::from_secs(120),
            wait,
            partition: None,
            identity,
        }
    }

    fn live(backend: &FakeBackend) -> Vec<LockInfo> {
        held(&backend.list_jobs().unwrap(), &owner())
    }

    #[test]
    fn an_uncontended_lock_is_taken_and_released_without_leftovers() {
        let backend = FakeBackend::new();
        let lock = acquire(&backend, &request(identity("a", 1), Duration::ZERO)).unwrap();
        assert_eq!(live(&backend).len(), 1);
        assert_eq!(live(&backend)[0].id, lock.id());
        let script = backend.state().jobs[0].script.clone();
        assert!(script.contains("#SBATCH --hold") && script.contains("--cpus-per-task=1"));
        lock.release(&backend).unwrap();
        assert!(live(&backend).is_empty());
    }

    #[test]
    fn a_contender_withdraws_and_names_the_holder() {
        let backend = FakeBackend::new();
        let first = acquire(&backend, &request(identity("a", 1), Duration::ZERO)).unwrap();
        let error = acquire(&backend, &request(identity("b", 2), Duration::ZERO)).unwrap_err();
        match &error {
            LockError::Held { holder, .. } => {
                assert_eq!(holder.id, first.id());
                assert_eq!((holder.host.as_str(), holder.pid), ("a", 1));
            }
            other => panic!("{other:?}"),
        }
        let text = error.to_string();
        assert!(text.contains(&first.id().to_string()) && text.contains("force-unlock"));
        assert_eq!(
            live(&backend).len(),
            1,
            "the loser's placeholder is withdrawn"
        );
    }

    #[test]
    fn a_waiting_contender_takes_the_lock_once_it_is_released() {
        let backend = FakeBackend::new();
        let first = acquire(&backend, &request(identity("a", 1), Duration::ZERO)).unwrap();
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                acquire(
                    &backend,
                    &request(identity("b", 2), Duration::from_secs(10)),
                )
            });
            std::thread::sleep(Duration::from_millis(300));
            first.release(&backend).unwrap();
            let second = waiter.join().unwrap().unwrap();
            assert_eq!(live(&backend)[0].id, second.id());
        });
    }

    #[test]
    fn an_expired_lock_of_another_host_is_broken_but_a_fresh_one_is_not() {
        let backend = FakeBackend::new();
        let mut stale = request(identity("elsewhere", 1), Duration::ZERO);
        stale.expiry = Duration::ZERO;
        let stale = acquire(&backend, &stale).unwrap();
        let lock = acquire(&backend, &request(identity("here", 2), Duration::ZERO)).unwrap();
        assert_ne!(lock.id(), stale.id());
        assert_eq!(
            live(&backend).len(),
            1,
            "the expired placeholder was cancelled"
        );
        let error = acquire(&backend, &request(identity("third", 3), Duration::ZERO));
        assert!(matches!(error, Err(LockError::Held { .. })));
    }

    #[test]
    fn a_dead_holder_on_the_same_host_boot_and_pid_namespace_is_broken_at_once() {
        let me = Identity::current();
        // A pid that is certainly not running now: above the kernel's pid limit.
        let dead = Identity {
            pid: 4_194_305,
            ..me.clone()
        };
        for (holder, breakable) in [
            (dead.clone(), true),
            (
                Identity {
                    boot_id: "other-boot".into(),
                    ..dead.clone()
                },
                false,
            ),
            (
                Identity {
                    pid_ns: "pid:[2]".into(),
                    ..dead.clone()
                },
                false,
            ),
            (
                Identity {
                    host: "other-host".into(),
                    ..dead.clone()
                },
                false,
            ),
            (me.clone(), false),
        ] {
            let backend = FakeBackend::new();
            acquire(&backend, &request(holder.clone(), Duration::ZERO)).unwrap();
            let contender = Identity {
                pid: me.pid,
                ..me.clone()
            };
            let taken = acquire(&backend, &request(contender, Duration::ZERO)).is_ok();
            assert_eq!(taken, breakable, "{holder:?}");
        }
    }

    #[test]
    fn every_stale_lock_is_broken_even_above_the_contenders_own() {
        let me = Identity::current();
        let dead = Identity {
            pid: 4_194_305,
            ..me.clone()
        };
        let backend = FakeBackend::new();
        // Placeholders whose sbatch answered after their process died: created after the
        // contender's own (higher ids), so no listing below the contender shows them.
        let mut expired = request(identity("elsewhere", 7), Duration::ZERO);
        expired.expiry = Duration::ZERO;
        for (n, req) in [
            request(dead, Duration::ZERO),
            expired,
            request(identity("live-elsewhere", 8), Duration::ZERO),
        ]
        .into_iter()
        .enumerate()
        {
            let lock = acquire(&backend, &req).unwrap();
            let mut state = backend.state();
            let job = state.jobs.iter_mut().find(|j| j.id == lock.id()).unwrap();
            job.id = JobId {
                array: 100 + n as u64,
                task: None,
            };
        }
        let own = acquire(&backend, &request(me, Duration::ZERO)).unwrap();
        let ids: Vec<u64> = live(&backend).iter().map(|l| l.id.array).collect();
        assert_eq!(
            ids,
            [own.id().array, 102],
            "the dead and the expired placeholder are gone; a live one stays"
        );
    }

    #[test]
    fn a_release_that_times_out_is_tried_again() {
        let backend = FakeBackend::new();
        let lock = acquire(&backend, &request(identity("a", 1), Duration::ZERO)).unwrap();
        backend.fail_next(Op::Cancel, crate::slurm::fake::Fault::Timeout);
        lock.release(&backend).unwrap();
        assert!(live(&backend).is_empty());
        assert_eq!(backend.count(Op::Cancel), 2);
    }

    #[test]
    fn renewal_pushes_the_expiry_and_fails_once_the_lock_was_force_unlocked() {
        let backend = FakeBackend::new();
        let mut req = request(identity("a", 1), Duration::ZERO);
        req.expiry = Duration::from_secs(10);
        let mut lock = acquire(&backend, &req).unwrap();
        lock.expiry = Duration::from_secs(1000);
        lock.renew(&backend).unwrap();
        assert!(live(&backend)[0].expires >= now() + 990);
        let id = lock.id().to_string();
        force_unlock(&backend, &owner(), &id).unwrap();
        assert!(lock.renew(&backend).is_err());
    }

    #[test]
    fn force_unlock_refuses_ids_that_are_no_lock_of_this_owner() {
        let backend = FakeBackend::new();
        let lock = acquire(&backend, &request(identity("a", 1), Duration::ZERO)).unwrap();
        let other = Owner::parse("someone/else").unwrap();
        assert!(matches!(
            force_unlock(&backend, &other, &lock.id().to_string()),
            Err(LockError::NotFound { .. })
        ));
        assert!(matches!(
            force_unlock(&backend, &owner(), "999"),
            Err(LockError::NotFound { .. })
        ));
        assert_eq!(live(&backend).len(), 1);
    }

    #[test]
    fn with_lock_releases_after_the_work_and_renews_during_it() {
        let backend = FakeBackend::new();
        let mut req = request(identity("a", 1), Duration::ZERO);
        req.expiry = Duration::from_millis(300);
        let inside = with_lock(&backend, &req, |_| {
            std::thread::sleep(Duration::from_millis(450));
            live(&backend).len()
        })
        .unwrap();
        assert_eq!(inside, 1);
        assert!(
            backend.count(Op::UpdateComment) >= 2,
            "renewed while working"
        );
        assert!(live(&backend).is_empty(), "released afterwards");
    }

    #[test]
    fn lock_markers_are_read_by_name_and_are_no_replica_markers() {
        let text = "stackctl-lock/v1;future=1;exp=20;since=10;pid=7;host=h;owner=test/lock";
        let marker = LockMarker::parse(text).unwrap();
        assert_eq!((marker.pid, marker.since, marker.expires), (7, 10, 20));
        assert!(crate::observed::Marker::parse(text).is_none());
        assert!(LockMarker::parse("stackctl/v1;owner=test/lock").is_none());
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_795_651_200), "2026-11-26T00:00:00Z");
    }
}
