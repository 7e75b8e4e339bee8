//! What one pass is limited to: `--target` and `--exclude` (STACK or STACK/SERVICE,
//! repeatable) keep a plan to the services they name, and `--replace STACK/SERVICE[#INDEX]`
//! forces replacements. Pure: selectors are parsed from text and applied to a plan.

use super::Plan;
use crate::desired::{Desired, ServiceAddr};
use crate::observed::{JobId, Observed};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A stack, a service, or (for `--replace`) one replica: `STACK`, `STACK/SERVICE` (or
/// `STACK.SERVICE`), `STACK/SERVICE#INDEX`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Selector {
    /// The stack.
    pub stack: String,
    /// The service, or every service of the stack.
    pub service: Option<String>,
    /// The replica index, or every replica.
    pub index: Option<u32>,
}

impl Selector {
    /// Parses a selector; `#INDEX` only when `with_index`.
    pub fn parse(text: &str, with_index: bool) -> Result<Selector, String> {
        let (address, index) = match text.split_once('#') {
            Some((address, index)) if with_index => {
                let index = index
                    .parse()
                    .map_err(|_| format!("{text:?}: the replica index {index:?} is no number"))?;
                (address, Some(index))
            }
            Some(_) => {
                return Err(format!(
                    "{text:?}: a replica index (#N) only goes with --replace"
                ));
            }
            None => (text, None),
        };
        let (stack, service) = match address.split_once('/').or_else(|| address.split_once('.')) {
            Some((stack, service)) => (stack, Some(service)),
            None => (address, None),
        };
        let valid = |name: &str| !name.is_empty() && !name.contains(['/', '.', '#', ' ']);
        if !valid(stack) || service.is_some_and(|s| !valid(s)) {
            return Err(format!("{text:?} is not STACK or STACK/SERVICE"));
        }
        if index.is_some() && service.is_none() {
            return Err(format!(
                "{text:?}: a replica index needs STACK/SERVICE#INDEX"
            ));
        }
        Ok(Selector {
            stack: stack.to_owned(),
            service: service.map(str::to_owned),
            index,
        })
    }

    /// Returns whether the selector names `addr` (any of its replicas).
    pub fn matches(&self, addr: &ServiceAddr) -> bool {
        self.stack == addr.stack && self.service.as_ref().is_none_or(|s| *s == addr.service)
    }

    /// Returns whether the selector names replica `index` of `addr`.
    pub fn matches_replica(&self, addr: &ServiceAddr, index: u32) -> bool {
        self.matches(addr) && self.index.is_none_or(|i| i == index)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.stack)?;
        if let Some(service) = &self.service {
            write!(f, "/{service}")?;
        }
        if let Some(index) = self.index {
            write!(f, "#{index}")?;
        }
        Ok(())
    }
}

/// The services a pass may touch, and the replicas it must replace.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scope {
    /// `--target`: only these (every service when empty).
    #[serde(default)]
    pub targets: Vec<Selector>,
    /// `--exclude`: never these.
    #[serde(default)]
    pub excludes: Vec<Selector>,
    /// `--replace`: replace these replicas even though their spec did not change.
    #[serde(default)]
    pub replace: Vec<Selector>,
    /// The jobs `--replace` meant, once an apply's first pass has seen them ([`Scope::pin`]):
    /// the later passes that finish a rolling replace then leave the successors alone. `None`:
    /// whatever job each named replica runs.
    #[serde(skip)]
    pub replace_jobs: Option<BTreeSet<JobId>>,
    /// `stackctl run`: the one-shot jobs to run again although a run with their spec exists.
    /// Never saved with a plan.
    #[serde(skip)]
    pub rerun: BTreeSet<ServiceAddr>,
}

impl Scope {
    /// Returns whether the pass may touch `addr`.
    pub fn includes(&self, addr: &ServiceAddr) -> bool {
        (self.targets.is_empty() || self.targets.iter().any(|t| t.matches(addr)))
            && !self.excludes.iter().any(|e| e.matches(addr))
    }

    /// Returns whether the pass leaves part of the repo out.
    pub fn is_partial(&self) -> bool {
        !self.targets.is_empty() || !self.excludes.is_empty()
    }

    /// Returns whether `--replace` forces replica `index` of `addr`, whose job is `job`: the
    /// replica is named, and the job is one the first pass saw ([`Scope::pin`]), not its
    /// successor.
    pub fn forces(&self, addr: &ServiceAddr, index: u32, job: &JobId) -> bool {
        self.names_for_replace(addr, index)
            && self
                .replace_jobs
                .as_ref()
                .is_none_or(|jobs| jobs.contains(job))
    }

    /// Pins `--replace` to the alive jobs of the named replicas in `observed`, so that one
    /// apply replaces each of them once: without it, every later pass of a rolling replace
    /// would force the successors again, without end. Does nothing once pinned.
    pub fn pin(&mut self, observed: &Observed) {
        if self.replace.is_empty() || self.replace_jobs.is_some() {
            return;
        }
        let jobs = observed
            .alive()
            .filter(|j| self.names_for_replace(&j.marker.service, j.index))
            .map(|j| j.id)
            .collect();
        self.replace_jobs = Some(jobs);
    }

    /// Returns whether `--replace` names replica `index` of `addr`, in scope.
    fn names_for_replace(&self, addr: &ServiceAddr, index: u32) -> bool {
        self.includes(addr) && self.replace.iter().any(|r| r.matches_replica(addr, index))
    }

    /// Checks that every selector names something that exists: a stack and a service in the
    /// repo or with alive jobs in `observed`, and (`--replace`) a replica index the repo wants
    /// or an alive job holds. A typo would otherwise narrow the plan to nothing and pass as
    /// "No changes". The error has one line per unknown selector, with a did-you-mean.
    pub fn check(&self, desired: &Desired, observed: &Observed) -> Result<(), String> {
        // Every known service, with the replica indexes it has (wanted or alive).
        let mut known: BTreeMap<&ServiceAddr, BTreeSet<u32>> = BTreeMap::new();
        for (addr, service) in &desired.services {
            known.entry(addr).or_default().extend(0..service.replicas);
        }
        for job in observed.alive() {
            known
                .entry(&job.marker.service)
                .or_default()
                .insert(job.index);
        }
        let stacks: BTreeSet<&str> = known.keys().map(|a| a.stack.as_str()).collect();
        let mut problems = Vec::new();
        let selectors = [
            ("--target", &self.targets),
            ("--exclude", &self.excludes),
            ("--replace", &self.replace),
        ];
        for (flag, list) in selectors {
            for selector in list {
                if let Some(problem) = unknown(selector, &known, &stacks) {
                    problems.push(format!("{flag} {selector}: {problem}"));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            problems.push("Nothing was planned or submitted.".to_owned());
            Err(problems.join("\n"))
        }
    }

    /// Keeps `plan`'s image steps ([`Plan::add_images`]) to the services in scope: a step
    /// stays, listing only those, when a service in scope runs its image (a targeted apply
    /// builds what the services it submits need, and nothing for the others); a failed build
    /// holds only services in scope.
    pub fn restrict_images(&self, plan: &mut Plan) {
        if !self.is_partial() {
            return;
        }
        for step in &mut plan.images {
            step.services.retain(|s| self.includes(s));
        }
        plan.images.retain(|step| !step.services.is_empty());
        plan.held.retain(|h| self.includes(&h.service));
    }

    /// Keeps `plan` to the services in scope (changes, waiting and held replicas, services
    /// not pruned) and, when the scope is partial, says so in a warning, as Terraform does.
    pub fn restrict(&self, plan: &mut Plan) {
        if !self.is_partial() {
            return;
        }
        plan.services.retain(|s| self.includes(&s.service));
        plan.waiting.retain(|w| self.includes(&w.service));
        plan.held.retain(|h| self.includes(&h.service));
        plan.not_pruned.retain(|(s, _)| self.includes(s));
        let list = |selectors: &[Selector]| {
            selectors
                .iter()
                .map(Selector::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut what = Vec::new();
        if !self.targets.is_empty() {
            what.push(format!("only {}", list(&self.targets)));
        }
        if !self.excludes.is_empty() {
            what.push(format!("excluding {}", list(&self.excludes)));
        }
        plan.warnings.push(format!(
            "targeted plan ({}): the rest of the repo was not compared and may not match the \
             cluster; use targeting for exceptional cases, not routinely",
            what.join(", ")
        ));
    }
}

/// Says what `selector` names that does not exist, with a did-you-mean; `None` when it all
/// exists.
fn unknown(
    selector: &Selector,
    known: &BTreeMap<&ServiceAddr, BTreeSet<u32>>,
    stacks: &BTreeSet<&str>,
) -> Option<String> {
    let stack = selector.stack.as_str();
    if !stacks.contains(stack) {
        let hint = did_you_mean(stack, stacks.iter().copied());
        return Some(format!(
            "no stack {stack:?} in the repo or among the live jobs{hint}"
        ));
    }
    let service = selector.service.as_deref()?;
    let Some(indexes) = known
        .iter()
        .find(|(addr, _)| addr.stack == stack && addr.service == service)
        .map(|(_, indexes)| indexes)
    else {
        let siblings: Vec<String> = known
            .keys()
            .filter(|a| a.stack == stack)
            .map(|a| a.reference())
            .collect();
        let wanted = format!("{stack}/{service}");
        let mut hint = did_you_mean(&wanted, siblings.iter().map(String::as_str));
        if hint.is_empty() {
            // A service of this name in another stack: the stack was likely the slip.
            if let Some(other) = known.keys().find(|a| a.service == service) {
                hint = format!("; did you mean {:?}?", other.reference());
            }
        }
        if hint.is_empty() {
            hint = format!("; its services are {}", siblings.join(", "));
        }
        return Some(format!("no service {service:?} in stack {stack:?}{hint}"));
    };
    let index = selector.index?;
    if indexes.contains(&index) {
        return None;
    }
    let list: Vec<String> = indexes.iter().map(u32::to_string).collect();
    Some(format!(
        "{stack}/{service} has no replica {index}; its replicas are {}",
        if list.is_empty() {
            "none".to_owned()
        } else {
            list.join(", ")
        }
    ))
}

/// `"; did you mean \"x\"?"` for the candidate closest to `wanted`, when one is close
/// enough to be a likely typo (or differs only by case); else empty.
fn did_you_mean<'a>(wanted: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    candidates
        .map(|c| {
            let distance = if c.eq_ignore_ascii_case(wanted) {
                0
            } else {
                strsim::levenshtein(wanted, c)
            };
            (distance, c)
        })
        .filter(|(distance, c)| *distance <= (c.len() / 3).max(2))
        .min()
        .map_or(String::new(), |(_, c)| format!("; did you mean {c:?}?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(stack: &str, service: &str) -> ServiceAddr {
        ServiceAddr::new(stack, service)
    }

    #[test]
    fn selectors_parse_stacks_services_and_replicas() {
        let s = Selector::parse("web/api", false).unwrap();
        assert_eq!(s, Selector::parse("web.api", false).unwrap());
        assert!(s.matches(&addr("web", "api")) && !s.matches(&addr("web", "db")));
        let stack = Selector::parse("web", false).unwrap();
        assert!(stack.matches(&addr("web", "db")) && !stack.matches(&addr("webx", "db")));
        let one = Selector::parse("web/api#2", true).unwrap();
        assert_eq!(one.to_string(), "web/api#2");
        assert!(one.matches_replica(&addr("web", "api"), 2));
        assert!(!one.matches_replica(&addr("web", "api"), 1));
        for (text, with_index) in [
            ("web/api#2", false),
            ("web/api#x", true),
            ("web#1", true),
            ("", false),
            ("a/b/c", false),
        ] {
            assert!(Selector::parse(text, with_index).is_err(), "{text}");
        }
    }

    #[test]
    fn targets_and_excludes_combine() {
        let scope = Scope {
            targets: vec![Selector::parse("web", false).unwrap()],
            excludes: vec![Selector::parse("web/db", false).unwrap()],
            replace: vec![],
            replace_jobs: None,
            rerun: Default::default(),
        };
        assert!(scope.is_partial());
        assert!(scope.includes(&addr("web", "api")));
        assert!(!scope.includes(&addr("web", "db")));
        assert!(!scope.includes(&addr("batch", "x")));
        assert!(Scope::default().includes(&addr("batch", "x")));
        assert!(!Scope::default().is_partial());
    }

    fn desired_with(services: &[(&str, &str, u32)]) -> Desired {
        let text = |dir: &std::path::Path, path: &str, body: &str| {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        };
        let dir = tempfile::tempdir().unwrap();
        text(dir.path(), "stackctl.yaml", "owner: t\n");
        text(
            dir.path(),
            "recipes/r/x.yaml",
            "name: x\ncommand: sleep 1\n",
        );
        let mut stacks: BTreeMap<&str, String> = BTreeMap::new();
        for (stack, service, replicas) in services {
            stacks
                .entry(stack)
                .or_insert_with(|| "services:\n".into())
                .push_str(&format!(
                    "  {service}: {{recipe: r/x, replicas: {replicas}}}\n"
                ));
        }
        for (stack, body) in stacks {
            text(dir.path(), &format!("stacks/{stack}.yaml"), &body);
        }
        crate::desired::load(dir.path(), || None).unwrap().desired
    }

    fn scope(targets: &[&str], excludes: &[&str], replace: &[&str]) -> Scope {
        let parse = |list: &[&str], with_index| {
            list.iter()
                .map(|t| Selector::parse(t, with_index).unwrap())
                .collect()
        };
        Scope {
            targets: parse(targets, false),
            excludes: parse(excludes, false),
            replace: parse(replace, true),
            replace_jobs: None,
            rerun: Default::default(),
        }
    }

    /// An alive job of `stack/service` at `index`.
    fn alive(stack: &str, service: &str, index: u32) -> crate::observed::LiveJob {
        use crate::observed::{JobState, JobTimes, LiveJob, Marker};
        LiveJob {
            id: JobId {
                array: 100,
                task: Some(index),
            },
            index,
            marker: std::sync::Arc::new(Marker {
                owner: crate::desired::Owner::parse("t").unwrap(),
                service: addr(stack, service),
                spec: crate::desired::SpecHash("h".into()),
                nonce: "n".into(),
                indexes: index.to_string(),
                report: Default::default(),
                restart: Default::default(),
                protect: false,
                pred: None,
                endpoints: Vec::new(),
            }),
            state: JobState::from_slurm("RUNNING", "None"),
            reason: String::new(),
            nodes: "node1".into(),
            times: JobTimes::default(),
        }
    }

    #[test]
    fn selectors_naming_nothing_are_refused_with_a_did_you_mean() {
        let desired = desired_with(&[
            ("infra", "postgres", 1),
            ("infra", "cache", 3),
            ("jobs", "worker", 2),
        ]);
        // A service removed from the repo whose job still runs can be named (to destroy it).
        let observed = Observed {
            jobs: vec![alive("old", "api", 4)],
            ..Observed::default()
        };
        for ok in [
            scope(&["infra"], &[], &[]),
            scope(&["infra/cache"], &["jobs/worker"], &[]),
            scope(&[], &[], &["infra/cache#2", "jobs/worker", "old/api#4"]),
            scope(&["old/api"], &[], &[]),
            scope(&[], &[], &[]),
        ] {
            assert_eq!(ok.check(&desired, &observed), Ok(()), "{ok:?}");
        }
        for (bad, says) in [
            (
                scope(&["infar"], &[], &[]),
                "--target infar: no stack \"infar\" in the repo or among the live jobs; did you \
                 mean \"infra\"?",
            ),
            (
                scope(&[], &["infra/postgress"], &[]),
                "--exclude infra/postgress: no service \"postgress\" in stack \"infra\"; did you \
                 mean \"infra/postgres\"?",
            ),
            (
                scope(&[], &[], &["infra/cache#3"]),
                "--replace infra/cache#3: infra/cache has no replica 3; its replicas are 0, 1, 2",
            ),
            (
                scope(&[], &[], &["old/api#0"]),
                "--replace old/api#0: old/api has no replica 0; its replicas are 4",
            ),
            (
                scope(&["infra/worker"], &[], &[]),
                "--target infra/worker: no service \"worker\" in stack \"infra\"; did you mean \
                 \"jobs/worker\"?",
            ),
            (
                scope(&["jobs/scheduler"], &[], &[]),
                "--target jobs/scheduler: no service \"scheduler\" in stack \"jobs\"; its \
                 services are jobs/worker",
            ),
            (
                scope(&["Infra"], &[], &[]),
                "--target Infra: no stack \"Infra\" in the repo or among the live jobs; did you \
                 mean \"infra\"?",
            ),
        ] {
            let error = bad.check(&desired, &observed).unwrap_err();
            assert_eq!(
                error,
                format!("{says}\nNothing was planned or submitted."),
                "{bad:?}"
            );
        }
        let two = scope(&["nope"], &["infra/nope"], &[])
            .check(&desired, &observed)
            .unwrap_err();
        assert_eq!(two.lines().count(), 3, "one line per selector: {two}");
    }
}
