//! Attribute-level differences between two replica specs, as data: every renderer (text,
//! JSON, markdown) draws the same list.

use crate::desired::ReplicaSpec;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// One attribute that differs: present before, after, or both with different values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributeChange {
    /// Dotted path, e.g. `resources.gpu` or `environment.MODEL`.
    pub path: String,
    /// The old value; `None` when the attribute is new.
    pub before: Option<Value>,
    /// The new value; `None` when the attribute goes away.
    pub after: Option<Value>,
}

/// Flattens a spec into `path = value` pairs in path order.
pub fn attributes(spec: &ReplicaSpec) -> BTreeMap<String, Value> {
    let value = serde_json::to_value(spec).expect("a spec serializes");
    let mut out = BTreeMap::new();
    flatten("", &value, &mut out);
    out
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
            (before != after).then(|| AttributeChange {
                path: path.clone(),
                before: before.cloned(),
                after: after.cloned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{ResourceSpec, SlurmSpec};

    fn spec(env: &[(&str, &str)], gpu: u32) -> ReplicaSpec {
        ReplicaSpec {
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
    fn a_new_service_lists_every_attribute_as_added() {
        let diff = compute(None, &spec(&[], 2));
        assert!(diff.iter().all(|c| c.before.is_none()));
        assert!(
            diff.iter()
                .any(|c| c.path == "resources.gpu" && c.after == Some(Value::from(2)))
        );
    }
}
