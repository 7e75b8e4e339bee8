//! What one pass is limited to: `--target` and `--exclude` (STACK or STACK/SERVICE,
//! repeatable) keep a plan to the services they name, and `--replace STACK/SERVICE[#INDEX]`
//! forces replacements. Pure: selectors are parsed from text and applied to a plan.

use super::Plan;
use crate::desired::ServiceAddr;
use crate::observed::{JobId, Observed};
use std::collections::BTreeSet;
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
        };
        assert!(scope.is_partial());
        assert!(scope.includes(&addr("web", "api")));
        assert!(!scope.includes(&addr("web", "db")));
        assert!(!scope.includes(&addr("batch", "x")));
        assert!(Scope::default().includes(&addr("batch", "x")));
        assert!(!Scope::default().is_partial());
    }
}
