//! Attribute-level differences between two replica specs, as data: every renderer (text,
//! JSON, markdown) draws the same list. Values are shown in the form a file writes them, not
//! the spec's internal one: durations with a unit (`health.interval = "3s"`), a probe's port
//! by name or number (`port = "http"`), `time_limit` with a unit or `UNLIMITED`, `ports` as a
//! flow list (`[8000, auto, {name: http, port: auto}]`).

use crate::desired::{PortSpec, ReplicaSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// One attribute that differs: present before, after, or both with different values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeChange {
    /// Dotted path, e.g. `resources.gpu` or `environment.MODEL`.
    pub path: String,
    /// The old value; `None` when the attribute is new.
    pub before: Option<Value>,
    /// The new value; `None` when the attribute goes away.
    pub after: Option<Value>,
    /// A side is a secret: it is shown as `(sensitive)`, and a secret whose value changed as
    /// `(sensitive value changed)`; the value itself is never in a spec, so never here.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub sensitive: bool,
    /// The secret the variable now takes its value from (before, when it goes away), so the
    /// plan says which secret changed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub secret: Option<String>,
}

/// What a secret's value is shown as in a diff.
pub const SENSITIVE: &str = crate::secret::REDACTED;

/// The key under which [`attributes`] keeps a secret variable's identity (its secret and the
/// value's fingerprint), so [`compute`] can tell a changed value without showing it.
const SECRET_KEY: &str = "(secret)";

/// Flattens a spec into `path = value` pairs in path order, each value in the form a file
/// writes it.
pub fn attributes(spec: &ReplicaSpec) -> BTreeMap<String, Value> {
    let value = serde_json::to_value(spec).expect("a spec serializes");
    let mut out = BTreeMap::new();
    flatten("", &value, &mut out);
    as_written(spec, &mut out);
    out
}

/// Replaces the internal forms in `out` (seconds, minutes, port positions, serialized ports)
/// with the ones a file writes.
fn as_written(spec: &ReplicaSpec, out: &mut BTreeMap<String, Value>) {
    // A secret variable is an environment variable like the others, shown by identity only.
    out.retain(|path, _| !path.starts_with("secret_env."));
    for (key, reference) in &spec.secret_env {
        let identity = serde_json::json!({
            SECRET_KEY: [reference.secret.clone(), reference.fingerprint.clone()]
        });
        out.insert(format!("environment.{key}"), identity);
    }
    out.insert("ports".to_owned(), Value::from(ports_text(&spec.ports)));
    if let Some(minutes) = spec.resources.time_limit {
        let text = if minutes == crate::desired::UNLIMITED_MINUTES {
            "UNLIMITED".to_owned()
        } else {
            duration_text(u64::from(minutes) * 60)
        };
        out.insert("resources.time_limit".to_owned(), Value::from(text));
    }
    if let Some(health) = &spec.health {
        for (key, seconds) in [
            ("interval", health.interval),
            ("timeout", health.timeout),
            ("start_period", health.start_period),
        ] {
            out.insert(format!("health.{key}"), Value::from(duration_text(seconds)));
        }
        let (kind, port) = match &health.probe {
            crate::desired::Probe::Http { port, .. } => ("http", *port),
            crate::desired::Probe::Tcp { port } => ("tcp", *port),
            crate::desired::Probe::Command(_) => return,
        };
        let shown = match spec.ports.get(port) {
            Some(PortSpec {
                name: Some(name), ..
            }) => Value::from(name.clone()),
            Some(p) => match p.number() {
                Some(number) => Value::from(number),
                None => Value::from(format!("ports[{port}] (auto)")),
            },
            None => Value::from(format!("ports[{port}]")),
        };
        out.insert(format!("health.probe.{kind}.port"), shown);
    }
}

/// Writes seconds as a duration with units, largest first: `3s`, `1m30s`, `2h`, `1d12h`.
pub fn duration_text(seconds: u64) -> String {
    if seconds == 0 {
        return "0s".to_owned();
    }
    let mut text = String::new();
    let mut rest = seconds;
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if rest >= size {
            text.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    text
}

/// Writes ports as a flow list in the file's syntax: `[8000, auto, {name: http, port: auto}]`.
fn ports_text(ports: &[PortSpec]) -> String {
    let items: Vec<String> = ports
        .iter()
        .map(|p| {
            let value = p
                .number()
                .map_or_else(|| "auto".to_owned(), |n| n.to_string());
            match &p.name {
                Some(name) => format!("{{name: {name}, port: {value}}}"),
                None => value,
            }
        })
        .collect();
    format!("[{}]", items.join(", "))
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, value, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

/// Returns the attributes that differ between `old` (none for a new service) and `new`, in
/// path order; unchanged attributes are left out.
pub fn compute(old: Option<&ReplicaSpec>, new: &ReplicaSpec) -> Vec<AttributeChange> {
    let old = old.map(attributes).unwrap_or_default();
    let new = attributes(new);
    let paths: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    paths
        .into_iter()
        .filter_map(|path| {
            let (before, after) = (old.get(path), new.get(path));
            let secret = |v: Option<&Value>| v.is_some_and(|v| v.get(SECRET_KEY).is_some());
            let sensitive = secret(before) || secret(after);
            let shown = |v: Option<&Value>| {
                v.map(|v| match secret(Some(v)) {
                    true => Value::from(SENSITIVE),
                    false => v.clone(),
                })
            };
            let secret = [after, before]
                .into_iter()
                .flatten()
                .find_map(|v| v.get(SECRET_KEY)?.get(0)?.as_str().map(str::to_owned));
            (before != after).then(|| AttributeChange {
                path: path.clone(),
                before: shown(before),
                after: shown(after),
                sensitive,
                secret,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{ResourceSpec, SlurmSpec};

    fn with_secret(spec: ReplicaSpec, key: &str, secret: &str, fingerprint: &str) -> ReplicaSpec {
        let mut spec = spec;
        spec.secret_env.insert(
            key.into(),
            crate::desired::SecretRef {
                secret: secret.into(),
                fingerprint: fingerprint.into(),
            },
        );
        spec
    }

    #[test]
    fn a_secret_is_shown_as_sensitive_and_a_new_value_as_changed() {
        let old = with_secret(spec(&[], 0), "HF_TOKEN", "hf", "aaaa");
        // Only the value changed: one sensitive change, no fingerprint in it.
        let new = with_secret(spec(&[], 0), "HF_TOKEN", "hf", "bbbb");
        let changes = compute(Some(&old), &new);
        assert_eq!(changes.len(), 1, "{changes:?}");
        let change = &changes[0];
        assert_eq!(change.path, "environment.HF_TOKEN");
        assert!(change.sensitive);
        assert_eq!(change.before, Some(Value::from(SENSITIVE)));
        assert_eq!(change.after, Some(Value::from(SENSITIVE)));
        assert_eq!(change.secret.as_deref(), Some("hf"));
        let json = serde_json::to_string(&changes).unwrap();
        assert!(!json.contains("aaaa") && !json.contains("bbbb"), "{json}");
        // The same value: no change at all.
        assert!(compute(Some(&old), &old.clone()).is_empty());
        // A plain value made a secret: the old value shows (it was never secret), the new not.
        let plain = spec(&[("HF_TOKEN", "in-git")], 0);
        let changes = compute(Some(&plain), &new);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].before, Some(Value::from("in-git")));
        assert_eq!(changes[0].after, Some(Value::from(SENSITIVE)));
        assert!(changes[0].sensitive);
    }

    fn spec(env: &[(&str, &str)], gpu: u32) -> ReplicaSpec {
        ReplicaSpec {
            container: None,
            setup: Vec::new(),
            image: None,
            command: Some("serve".into()),
            resources: ResourceSpec {
                nodes: 1,
                cpu: 2,
                memory: None,
                memory_per_cpu: None,
                gpu,
                gpu_type: None,
                time_limit: None,
                cpu_bind: None,
            },
            environment: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ports: vec![],
            slurm: SlurmSpec::default(),
            health: None,
            endpoint_env: Default::default(),
            secret_env: Default::default(),
        }
    }

    #[test]
    fn only_changed_added_and_removed_attributes_are_listed() {
        let old = spec(&[("A", "1"), ("GONE", "x")], 1);
        let new = spec(&[("A", "2"), ("NEW", "y")], 1);
        let diff = compute(Some(&old), &new);
        let paths: Vec<&str> = diff.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            ["environment.A", "environment.GONE", "environment.NEW"]
        );
        assert_eq!(diff[0].before, Some(Value::from("1")));
        assert_eq!(diff[0].after, Some(Value::from("2")));
        assert_eq!(diff[1].after, None);
        assert_eq!(diff[2].before, None);
    }

    #[test]
    fn values_are_shown_as_a_file_writes_them() {
        use crate::desired::{HealthSpec, OnFailure, PortValue, Probe};
        let mut old = spec(&[], 0);
        old.ports = vec![PortSpec::fixed(9000)];
        old.resources.time_limit = Some(90);
        let mut new = spec(&[], 0);
        new.ports = vec![
            PortSpec::fixed(9000),
            PortSpec {
                name: Some("admin".into()),
                port: PortValue::Auto,
            },
        ];
        new.resources.time_limit = Some(crate::desired::UNLIMITED_MINUTES);
        new.health = Some(HealthSpec {
            probe: Probe::Http {
                port: 1,
                path: "/ready".into(),
            },
            interval: 7,
            timeout: 90,
            start_period: 7200,
            failure_threshold: 4,
            on_failure: OnFailure::Ignore,
        });
        let diff = compute(Some(&old), &new);
        let get = |path: &str| {
            let change = diff.iter().find(|c| c.path == path).expect(path);
            (change.before.clone(), change.after.clone())
        };
        let s = |text: &str| Some(Value::from(text));
        assert_eq!(
            get("ports"),
            (s("[9000]"), s("[9000, {name: admin, port: auto}]"))
        );
        assert_eq!(get("resources.time_limit"), (s("1h30m"), s("UNLIMITED")));
        assert_eq!(get("health.interval"), (None, s("7s")));
        assert_eq!(get("health.timeout"), (None, s("1m30s")));
        assert_eq!(get("health.start_period"), (None, s("2h")));
        assert_eq!(get("health.probe.http.port"), (None, s("admin")));
        assert_eq!(
            get("health.failure_threshold"),
            (None, Some(Value::from(4)))
        );
        // An unnamed fixed port is shown by its number.
        let mut tcp = new.clone();
        tcp.health.as_mut().unwrap().probe = Probe::Tcp { port: 0 };
        let diff = compute(None, &tcp);
        let port = diff
            .iter()
            .find(|c| c.path == "health.probe.tcp.port")
            .unwrap();
        assert_eq!(port.after, Some(Value::from(9000)));
        assert_eq!(duration_text(0), "0s");
        assert_eq!(duration_text(129_600), "1d12h");
    }

    #[test]
    fn a_new_service_lists_every_attribute_as_added() {
        let diff = compute(None, &spec(&[], 2));
        assert!(diff.iter().all(|c| c.before.is_none()));
        assert!(
            diff.iter()
                .any(|c| c.path == "resources.gpu" && c.after == Some(Value::from(2)))
        );
    }
}
