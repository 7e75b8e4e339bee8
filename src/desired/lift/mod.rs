//! Lifting: validates what the loader read ([`super::load`]) and builds the model, with no IO of
//! its own. Every problem is collected, so one run reports every broken file. By topic:
//! - `settings`: `stackctl.yaml` (backend, REST and SSH targets, directories, lock, secrets, age);
//!   `owner`: the owner derived from the git remote's URL.
//! - `recipes`: recipe files (name, image, command, setup, default settings); `container`: a
//!   recipe's `container:` (runtime, definition file, binds) and what a stack may override.
//! - `stacks`: stack files and their services; `jobs`: `kind: job` (target, retries);
//!   `depends_on`: `depends_on:` and its cycles.
//! - `layer`: the settings a recipe gives and a service may override, and their merge, made of
//!   `resources` (`resources:`), `slurm` (`slurm:`), `ports` (`ports:` and `health:`), `update`
//!   (`update:`, `restart:`, `renew_before:`) and `environment` (`environment:`,
//!   `endpoint_env:`, `on_endpoint_move:`, secret references).
//! - `comment_length`: whether a service's job comment fits Slurm's limit.
//!
//! Each topic module starts with `use super::*`: the imports below are their common prelude.

mod comment_length;
mod container;
mod depends_on;
mod environment;
mod jobs;
mod layer;
mod owner;
mod ports;
mod recipes;
mod resources;
mod settings;
mod slurm;
mod stacks;
#[cfg(test)]
mod tests;
mod update;

use self::{
    comment_length::*, container::*, depends_on::*, environment::*, jobs::*, layer::*, owner::*,
    ports::*, recipes::*, resources::*, settings::*, slurm::*, stacks::*, update::*,
};
use super::error::{SpecError, SpecErrors, position_of};
use super::layout::{CONFIG_FILE, RECIPES_DIR, STACKS_DIR};
use super::load::{Definitions, Listing, Read};
use super::raw;
use super::{
    BackendKind, Condition, Dependency, Desired, EndpointRef, HealthSpec, JobSpec, LegacyOwner,
    OnFailure, Origin, Owner, PortSpec, PortValue, Probe, ReplicaSpec, Repo, ResourceSpec,
    RestTarget, RestartPolicy, SecretRef, Service, ServiceAddr, Settings, SlurmSpec, SpecHash,
    SshTarget, Strategy, TokenSource, UpdatePolicy,
};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

pub use container::is_plain_relative_path;
pub use owner::CASE_INSENSITIVE_HOSTS;
pub use settings::{DEFAULT_LOCK_EXPIRY, MIN_LOCK_EXPIRY};

/// Validates what the loader read and builds the repo's model, or returns every problem found
/// (the loader's as well as lifting's), in the order a reader meets them.
pub(super) fn lift(read: Read) -> Result<Repo, SpecErrors> {
    let mut errors = Vec::new();
    let settings = lift_settings(
        read.config,
        read.remote_url,
        read.home.as_deref(),
        &mut errors,
    );
    let runtime = settings
        .as_ref()
        .map(|s| s.container_runtime)
        .unwrap_or_default();
    let recipes = lift_recipes(read.recipes, &read.definitions, runtime, &mut errors);
    let desired = lift_stacks(read.stacks, &recipes, &mut errors);
    if let Some(settings) = &settings {
        check_marker_lengths(&settings.owner, &desired, &mut errors);
        check_secret_refs(settings, &desired, &mut errors);
    }
    match settings {
        Some(settings) if errors.is_empty() => Ok(Repo {
            settings,
            desired,
            secrets: BTreeMap::new(),
        }),
        _ => Err(SpecErrors(errors)),
    }
}

/// Most replicas one service may ask for (Slurm's array indexes must stay below MaxArraySize).
pub const MAX_REPLICAS: i64 = 100_000;

/// Returns the value, or records the error and returns `None`.
fn take<T>(result: Result<T, SpecError>, errors: &mut Vec<SpecError>) -> Option<T> {
    result.map_err(|e| errors.push(e)).ok()
}

/// Where errors go while lifting one file.
struct Ctx<'a> {
    file: &'a Path,
    errors: &'a mut Vec<SpecError>,
}

impl Ctx<'_> {
    fn error(&mut self, at: serde_saphyr::Location, field: &str, message: impl Into<String>) {
        self.errors
            .push(SpecError::at(self.file, at, field, message));
    }

    /// Returns where a setting at `at` was written.
    fn origin(&self, at: serde_saphyr::Location, field: &str) -> Origin {
        Origin {
            file: self.file.to_path_buf(),
            position: position_of(at),
            field: field.to_owned(),
        }
    }

    /// Returns the value if it is an integer in `min..=max`, otherwise records an error.
    fn int_in(&mut self, v: &Spanned<raw::Int>, field: &str, min: i64, max: i64) -> Option<u32> {
        match &v.value {
            raw::Int::Value(n) if (min..=max).contains(n) => {
                Some(u32::try_from(*n).expect("limits fit in u32"))
            }
            raw::Int::Value(n) => {
                self.error(
                    v.referenced,
                    field,
                    format!("must be between {min} and {max}, got {n}"),
                );
                None
            }
            raw::Int::Not(what) => {
                self.error(
                    v.referenced,
                    field,
                    format!("must be an integer, got {what}"),
                );
                None
            }
        }
    }

    /// Returns the optional setting `v` with where it was written if `ok` accepts it (see
    /// [`Ctx::word`]); `None` if it is unset or refused (the error recorded).
    fn word_setting(
        &mut self,
        v: &Option<Spanned<String>>,
        field: String,
        what: &str,
        ok: fn(&str) -> bool,
    ) -> Option<Set<String>> {
        let v = v.as_ref()?;
        let value = self.word(v, &field, what, ok)?;
        Some(Set {
            value,
            origin: self.origin(v.referenced, &field),
        })
    }

    /// Returns the text if `ok` accepts it, otherwise records an error.
    fn word(
        &mut self,
        v: &Spanned<String>,
        field: &str,
        what: &str,
        ok: fn(&str) -> bool,
    ) -> Option<String> {
        if !v.value.is_empty() && v.value.len() <= 256 && ok(&v.value) {
            Some(v.value.clone())
        } else {
            self.error(v.referenced, field, format!("{:?} is not {what}", v.value));
            None
        }
    }
}

/// Checks a stack or service name: it becomes part of job names and markers.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 63;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name {name:?} must be 1 to 63 lowercase letters, digits, '-' or '_', starting with a \
             letter or digit"
        ))
    }
}

/// Returns the known name closest to `wanted`, if it is close enough to be a likely typo.
fn nearest<'a>(wanted: &str, known: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    known
        .map(|name| (strsim::levenshtein(wanted, name), name))
        .filter(|(distance, name)| *distance <= (name.len() / 3).max(2))
        .min()
        .map(|(_, name)| name)
}

/// A validated setting and where it was written.
#[derive(Clone)]
struct Set<T> {
    value: T,
    origin: Origin,
}
