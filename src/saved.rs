//! Saved plans: `stackctl plan -out FILE` writes one, `stackctl apply FILE` executes it, `stackctl
//! show FILE` prints it.
//!
//! A saved plan carries two fingerprints that an apply recomputes under the lock: the
//! **desired** one (SHA-256 over the files the plan was computed from: `stackctl.yaml`, every
//! `stacks/*.yaml` and the recipes the stacks use, by relative path and bytes; not the commit
//! id, so a merge or squash commit with the same tree is not stale) and the **observed** one
//! (SHA-256 over the owner's alive replicas as sorted `(job id, index, spec hash)`; job states
//! and the fields jobs write into their markers are left out, so a replica starting or
//! reporting ready does not make a plan stale). Also kept: the plan's changes in a short
//! comparable form ([`change_keys`]), the [`Plan`] itself (its serde form) for `show`, which
//! renders it as `plan` does, and what executing it needs (owner, pruning).
//!
//! The pure parts (hashing, comparing, checking a file against this stackctl) are here; the
//! file reads are in [`desired_fingerprint`], the only IO.

use crate::desired::Repo;
use crate::observed::Observed;
use crate::plan::scope::Scope;
use crate::plan::{Action, Plan};
use crate::render::{Style, plan_json, plan_text};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The version of the saved-plan file format: 2 holds the [`Plan`] itself (1 held the plan's
/// JSON document and text).
pub const FORMAT_VERSION: u32 = 2;

/// What a saved plan was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprints {
    /// SHA-256 (hex) over the desired state's files.
    pub desired: String,
    /// SHA-256 (hex) over the owner's alive replicas.
    pub observed: String,
    /// How many alive replicas the observed fingerprint covers (for the stale message).
    pub replicas: usize,
}

/// What an apply of a saved plan expects to find under the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The saved plan's fingerprints.
    pub saved: Fingerprints,
    /// The desired fingerprint of the repo being applied (read when it was loaded).
    pub desired_now: String,
    /// The saved plan's [`change_keys`].
    pub changes: Vec<String>,
}

/// A saved plan file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedPlan {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The stackctl version that wrote it; only the same version applies it.
    pub stackctl_version: String,
    /// When it was made, unix seconds.
    pub created_at: i64,
    /// The owner whose jobs it changes.
    pub owner: String,
    /// The commit the repo was read from, for display (`None` outside git).
    pub commit: Option<String>,
    /// Whether the working tree had uncommitted changes.
    pub dirty: bool,
    /// Whether services gone from the repo are cancelled.
    pub prune: bool,
    /// `--target`, `--exclude` and `--replace` of the plan: `apply FILE` plans with them again.
    #[serde(default)]
    pub scope: Scope,
    /// What the plan was computed from.
    pub fingerprints: Fingerprints,
    /// The plan's changes, one comparable line each ([`change_keys`]).
    pub changes: Vec<String>,
    /// The plan; `show` renders it as `plan` does.
    pub plan: Plan,
}

impl SavedPlan {
    /// The saved form of `plan`, made from `observed` with `prune` and `scope` at
    /// `created_at` (unix seconds) from files whose desired fingerprint is `desired`.
    pub fn new(
        plan: &Plan,
        observed: &Observed,
        prune: bool,
        scope: &Scope,
        desired: String,
        created_at: i64,
    ) -> SavedPlan {
        let (observed, replicas) = observed_fingerprint(observed);
        SavedPlan {
            format_version: FORMAT_VERSION,
            stackctl_version: env!("CARGO_PKG_VERSION").to_owned(),
            created_at,
            owner: plan.owner.to_string(),
            commit: plan.source.as_ref().map(|s| s.commit.clone()),
            dirty: plan.source.as_ref().is_some_and(|s| s.dirty),
            prune,
            scope: scope.clone(),
            fingerprints: Fingerprints {
                desired,
                observed,
                replicas,
            },
            changes: change_keys(plan),
            plan: plan.clone(),
        }
    }

    /// What an apply of this plan expects, given the desired fingerprint of the repo now.
    pub fn expected(&self, desired_now: String) -> Expected {
        Expected {
            saved: self.fingerprints.clone(),
            desired_now,
            changes: self.changes.clone(),
        }
    }

    /// What `show` prints: the [`header`](SavedPlan::header), a blank line, then the plan as
    /// `plan` printed it.
    pub fn render_text(&self) -> String {
        format!(
            "{}\n{}",
            self.header(),
            plan_text::render(&self.plan, Style::PLAIN)
        )
    }

    /// What `show --json` prints: the plan as `plan --json` printed it.
    pub fn render_json(&self) -> String {
        plan_json::render(&self.plan)
    }

    /// The lines `show` prints above the plan: when, from what and by which version.
    pub fn header(&self) -> String {
        let commit = match &self.commit {
            Some(commit) if self.dirty => format!("commit {commit} plus uncommitted changes"),
            Some(commit) => format!("commit {commit}"),
            None => "no git commit".to_owned(),
        };
        format!(
            "Saved plan for owner \"{}\" from {commit}, made {} by stackctl {}.\n",
            self.owner,
            crate::utc::date_time(self.created_at),
            self.stackctl_version
        )
    }

    /// Parses a saved plan file's text.
    pub fn parse(text: &str) -> Result<SavedPlan, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not a saved plan (JSON): {e}"))?;
        match value.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(format!(
                    "saved plan format {v} is not the format {FORMAT_VERSION} this stackctl reads"
                ));
            }
            None => return Err("not a saved plan: no format_version".into()),
        }
        serde_json::from_value(value).map_err(|e| format!("not a saved plan: {e}"))
    }

    /// Refuses a plan made by another stackctl version or for another owner.
    pub fn check(&self, owner: &str, version: &str) -> Result<(), String> {
        if self.stackctl_version != version {
            return Err(format!(
                "this plan was saved by stackctl {} and this is stackctl {version}; plan again \
                 with this version",
                self.stackctl_version
            ));
        }
        if self.owner != owner {
            return Err(format!(
                "this plan is for owner \"{}\" and this repo's owner is \"{owner}\"; plan again \
                 in this repo",
                self.owner
            ));
        }
        Ok(())
    }

    /// Returns the pretty JSON text of the file.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a saved plan serializes");
        text.push('\n');
        text
    }
}

/// SHA-256 (hex) over `(relative path, bytes)` pairs, sorted by path. Pure.
pub fn fingerprint_files(files: &[(String, Vec<u8>)]) -> String {
    let mut sorted: Vec<&(String, Vec<u8>)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.dedup_by(|a, b| a.0 == b.0);
    let mut hash = Sha256::new();
    for (path, bytes) in sorted {
        hash.update((path.len() as u64).to_le_bytes());
        hash.update(path.as_bytes());
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    }
    hex(&hash.finalize())
}

/// Returns the relative paths of the files `repo` was loaded from under `root`:
/// `stackctl.yaml`, every `stacks/*.yaml` and the recipes its services use.
pub fn desired_files(root: &Path, repo: &Repo) -> std::io::Result<Vec<String>> {
    let mut paths = vec!["stackctl.yaml".to_owned()];
    let stacks = root.join("stacks");
    if stacks.is_dir() {
        for entry in std::fs::read_dir(&stacks)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.ends_with(".yaml") {
                paths.push(format!("stacks/{name}"));
            }
        }
    }
    for service in repo.desired.services.values() {
        paths.push(format!("recipes/{}.yaml", service.recipe));
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

/// Reads the desired state's files under `root` and fingerprints them.
pub fn desired_fingerprint(root: &Path, repo: &Repo) -> std::io::Result<String> {
    let mut files = Vec::new();
    for path in desired_files(root, repo)? {
        let bytes = std::fs::read(root.join(&path))?;
        files.push((path, bytes));
    }
    Ok(fingerprint_files(&files))
}

/// SHA-256 (hex) over the alive replicas as sorted `(job id, index, spec hash)`, and their
/// count. Pure.
pub fn observed_fingerprint(observed: &Observed) -> (String, usize) {
    let mut lines: Vec<String> = observed
        .jobs
        .iter()
        .filter(|j| j.state.is_alive())
        .map(|j| format!("{} {} {}\n", j.id, j.index, j.marker.spec.0))
        .collect();
    lines.sort();
    let mut hash = Sha256::new();
    for line in &lines {
        hash.update(line.as_bytes());
    }
    (hex(&hash.finalize()), lines.len())
}

/// The plan's changes in a comparable form, one line each: address, action, reason, the job
/// affected and the spec submitted. Job states are left out.
pub fn change_keys(plan: &Plan) -> Vec<String> {
    let mut keys = Vec::new();
    for service in &plan.services {
        for change in &service.changes {
            let action = match change.action {
                Action::Create => "create",
                Action::Destroy => "delete",
                Action::Replace => "replace",
                Action::Update => "update",
            };
            let job = change.job.as_ref().map(|j| j.job_id.to_string());
            let after = match change.action {
                Action::Destroy => None,
                _ => service.hash_after.as_ref().map(|h| h.0.clone()),
            };
            keys.push(format!(
                "{}[{}] {action} {:?} {} -> {}",
                service.service,
                change.index,
                change.reason,
                job.as_deref().unwrap_or("-"),
                after.as_deref().unwrap_or("-"),
            ));
        }
    }
    keys
}

/// Returns why a saved plan is stale, or `None` when what is found now matches it.
pub fn staleness(
    expected: &Expected,
    observed_now: &(String, usize),
    changes_now: &[String],
) -> Option<String> {
    if expected.saved.desired != expected.desired_now {
        return Some(
            "stale plan: the desired state changed since the plan was made (stackctl.yaml, \
             stacks/ or a recipe they use); nothing was changed, plan again"
                .into(),
        );
    }
    if expected.saved.observed != observed_now.0 {
        return Some(format!(
            "stale plan: the live replicas changed since the plan was made ({} then, {} now); \
             nothing was changed, plan again",
            expected.saved.replicas, observed_now.1
        ));
    }
    if expected.changes != changes_now {
        return Some(
            "stale plan: the plan computed now differs from the saved one; nothing was changed, \
             plan again"
                .into(),
        );
    }
    None
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Owner;
    use crate::observed::{JobId, JobRecord, JobTimes};

    fn write(root: &Path, path: &str, text: &str) {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }

    /// A repo whose stack uses `demo/used`; `demo/unused` is a recipe no stack names.
    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "stackctl.yaml",
            "owner: test/saved\nlog_dir: /tmp/logs\n",
        );
        write(
            root,
            "recipes/demo/used.yaml",
            "name: used\ncommand: exec sleep 600\n",
        );
        write(
            root,
            "recipes/demo/unused.yaml",
            "name: unused\ncommand: exec sleep 1\n",
        );
        write(
            root,
            "stacks/s.yaml",
            "services:\n  web:\n    recipe: demo/used\n",
        );
        dir
    }

    fn fingerprint(root: &Path) -> String {
        let repo = crate::desired::load(root, || None).unwrap();
        desired_fingerprint(root, &repo).unwrap()
    }

    #[test]
    fn the_desired_fingerprint_covers_the_used_recipes_and_stacks_only() {
        let dir = repo();
        let root = dir.path();
        let first = fingerprint(root);
        let repo = crate::desired::load(root, || None).unwrap();
        assert_eq!(
            desired_files(root, &repo).unwrap(),
            ["recipes/demo/used.yaml", "stackctl.yaml", "stacks/s.yaml"]
        );
        write(
            root,
            "recipes/demo/unused.yaml",
            "# a comment\nname: unused\ncommand: exec sleep 1\n",
        );
        assert_eq!(fingerprint(root), first, "a recipe no stack uses");
        write(
            root,
            "recipes/demo/used.yaml",
            "# a comment\nname: used\ncommand: exec sleep 600\n",
        );
        let used = fingerprint(root);
        assert_ne!(used, first, "a used recipe, even a comment in it");
        write(
            root,
            "stacks/s.yaml",
            "services:\n  web:\n    recipe: demo/used\n    replicas: 2\n",
        );
        assert_ne!(fingerprint(root), used, "a stack");
    }

    #[test]
    fn the_desired_fingerprint_is_of_paths_and_bytes_not_their_order() {
        let a = ("a".to_owned(), b"x".to_vec());
        let b = ("b".to_owned(), b"y".to_vec());
        assert_eq!(
            fingerprint_files(&[a.clone(), b.clone()]),
            fingerprint_files(&[b.clone(), a.clone()])
        );
        let moved = ("c".to_owned(), b"y".to_vec());
        assert_ne!(
            fingerprint_files(&[a.clone(), b]),
            fingerprint_files(&[a, moved])
        );
    }

    fn record(array: u64, task: u32, state: &str, comment: &str) -> JobRecord {
        JobRecord {
            id: JobId {
                array,
                task: Some(task),
            },
            comment: comment.into(),
            state: state.into(),
            reason: String::new(),
            nodes: String::new(),
            times: JobTimes::default(),
        }
    }

    const MARKER: &str =
        "stackctl/v1;owner=t;stack=s;svc=web;spec=0123456789abcdef;nonce=n;idx=0-1";

    fn observed(records: Vec<JobRecord>) -> (String, usize) {
        observed_fingerprint(&Observed::from_records(
            records,
            &Owner::parse("t").unwrap(),
        ))
    }

    #[test]
    fn the_observed_fingerprint_ignores_states_and_markers_the_jobs_write() {
        let pending = observed(vec![
            record(10, 0, "PENDING", MARKER),
            record(10, 1, "PENDING", MARKER),
        ]);
        assert_eq!(pending.1, 2);
        let reporting = format!("{MARKER};ready=1;addr=node1;port=8000");
        let running = observed(vec![
            record(10, 0, "RUNNING", &reporting),
            record(10, 1, "RUNNING", MARKER),
        ]);
        assert_eq!(
            running, pending,
            "states and self-reports are not replicas changing"
        );
        let with_ended = observed(vec![
            record(9, 0, "FAILED", MARKER),
            record(10, 0, "RUNNING", MARKER),
            record(10, 1, "RUNNING", MARKER),
        ]);
        assert_eq!(with_ended, pending, "ended jobs are not alive replicas");
    }

    #[test]
    fn the_observed_fingerprint_changes_with_a_new_or_cancelled_replica() {
        let two = observed(vec![
            record(10, 0, "RUNNING", MARKER),
            record(10, 1, "RUNNING", MARKER),
        ]);
        let three = observed(vec![
            record(10, 0, "RUNNING", MARKER),
            record(10, 1, "RUNNING", MARKER),
            record(11, 1, "PENDING", MARKER),
        ]);
        assert_eq!(three.1, 3);
        assert_ne!(three.0, two.0, "a new alive job");
        let one = observed(vec![
            record(10, 0, "RUNNING", MARKER),
            record(10, 1, "CANCELLED", MARKER),
        ]);
        assert_ne!(one.0, two.0, "a cancelled replica");
        let none = observed(vec![]);
        assert_eq!(none.1, 0);
        assert_ne!(none.0, two.0, "none then, some now");
    }

    fn expected(desired_now: &str) -> Expected {
        Expected {
            saved: Fingerprints {
                desired: "d".into(),
                observed: "o".into(),
                replicas: 2,
            },
            desired_now: desired_now.into(),
            changes: vec!["s.web[0] create Missing - -> h".into()],
        }
    }

    #[test]
    fn staleness_names_what_changed() {
        let changes = ["s.web[0] create Missing - -> h".to_owned()];
        assert_eq!(staleness(&expected("d"), &("o".into(), 2), &changes), None);
        let desired = staleness(&expected("e"), &("o".into(), 2), &changes).unwrap();
        assert!(
            desired.starts_with("stale plan: the desired state changed"),
            "{desired}"
        );
        let live = staleness(&expected("d"), &("p".into(), 3), &changes).unwrap();
        assert!(
            live.contains("the live replicas changed") && live.contains("(2 then, 3 now)"),
            "{live}"
        );
        let plan = staleness(&expected("d"), &("o".into(), 2), &[]).unwrap();
        assert!(plan.contains("differs from the saved one"), "{plan}");
    }

    #[test]
    fn a_file_from_another_version_or_owner_is_refused() {
        let saved = SavedPlan {
            format_version: FORMAT_VERSION,
            stackctl_version: "0.2.0".into(),
            created_at: 1_700_000_000,
            owner: "team/a".into(),
            commit: Some("0123abcd".into()),
            dirty: false,
            prune: true,
            scope: Default::default(),
            fingerprints: expected("d").saved,
            changes: vec![],
            plan: crate::plan::compute(
                &Owner::parse("team/a").unwrap(),
                &Default::default(),
                &Default::default(),
            ),
        };
        assert_eq!(saved.check("team/a", "0.2.0"), Ok(()));
        let version = saved.check("team/a", "0.3.0").unwrap_err();
        assert!(
            version.contains("saved by stackctl 0.2.0") && version.contains("0.3.0"),
            "{version}"
        );
        let owner = saved.check("team/b", "0.2.0").unwrap_err();
        assert!(
            owner.contains("\"team/a\"") && owner.contains("\"team/b\""),
            "{owner}"
        );
        assert_eq!(SavedPlan::parse(&saved.to_json()), Ok(saved.clone()));
        let future = saved
            .to_json()
            .replace("\"format_version\": 2", "\"format_version\": 9");
        assert!(SavedPlan::parse(&future).unwrap_err().contains("format 9"));
        assert!(
            SavedPlan::parse("{}")
                .unwrap_err()
                .contains("no format_version")
        );
        assert_eq!(
            saved.header(),
            "Saved plan for owner \"team/a\" from commit 0123abcd, made 2023-11-14 22:13:20 UTC by stackctl 0.2.0.\n"
        );
    }
}
