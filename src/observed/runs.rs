//! One-shot jobs' completion records (`kind: job`): what each run wrote about itself in its
//! results directory, parsed. Pure: reading the files is `crate::results`.
//!
//! Every run of a job gets its own directory,
//! `<log_dir>/results/<owner>/<stack>.<service>/<spec hash>/<job id>/` (`/` of the owner
//! written `+`), exported to the job as `STACKCTL_RESULTS_DIR`. The batch script writes the
//! file `run` there when the job starts (`job=`, `spec=`, `commit=`, `start=`) and again,
//! with `exit=` and `end=`, when it ends; the job may write `results.json` (a flat JSON object
//! of numbers) and any other file. The record outlives Slurm's memory of the job (MinJobAge),
//! so a job that completed is not run again once Slurm has forgotten it.

use crate::desired::SpecHash;
use crate::observed::JobId;
use std::collections::BTreeMap;

/// The record file a run writes in its results directory.
pub const RUN_FILE: &str = "run";

/// The metrics file a run may write in its results directory.
pub const RESULTS_FILE: &str = "results.json";

/// One run of a job, as its record says.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunRecord {
    /// The Slurm job (`123_0`).
    pub job_id: JobId,
    /// The spec hash it ran with.
    pub spec: SpecHash,
    /// The commit it was submitted from, when known.
    pub commit: Option<String>,
    /// When it started (unix seconds, the node's clock).
    pub start: Option<i64>,
    /// When it ended; none while running, or when it was killed before it could say.
    pub end: Option<i64>,
    /// The exit code of the job's command; none while running or when killed.
    pub exit: Option<i32>,
    /// The numbers of its `results.json`, by name.
    pub metrics: BTreeMap<String, f64>,
}

// Metrics are finite numbers only ([`parse_metrics`]), so equality is reflexive.
impl Eq for RunRecord {}

impl RunRecord {
    /// Parses a `run` file; `None` without a readable `job=` and `spec=`. Unknown keys are
    /// ignored, an unreadable value counts as absent.
    pub fn parse(text: &str) -> Option<RunRecord> {
        let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
        for line in text.lines() {
            if let Some((key, value)) = line.split_once('=') {
                fields.insert(key.trim(), value.trim());
            }
        }
        let spec = fields
            .get("spec")
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()))?;
        Some(RunRecord {
            job_id: JobId::parse(fields.get("job")?)?,
            spec: SpecHash((*spec).to_owned()),
            commit: fields
                .get("commit")
                .filter(|c| {
                    !c.is_empty() && c.chars().all(|c| c.is_ascii_alphanumeric() || c == '+')
                })
                .map(|c| (*c).to_owned()),
            start: fields.get("start").and_then(|v| v.parse().ok()),
            end: fields.get("end").and_then(|v| v.parse().ok()),
            exit: fields.get("exit").and_then(|v| v.parse().ok()),
            metrics: BTreeMap::new(),
        })
    }

    /// Whether the record says the run completed: it ended with exit code 0.
    pub fn succeeded(&self) -> bool {
        self.end.is_some() && self.exit == Some(0)
    }
}

/// Parses `results.json`: a flat JSON object whose finite numbers are kept; anything else
/// (a nested value, a string, a file that is no object) is left out, and the reason given.
pub fn parse_metrics(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("results.json is no JSON: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("results.json is not a JSON object".to_owned());
    };
    Ok(map
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_f64().filter(|n| n.is_finite())?)))
        .collect())
}

/// The directory name of an owner under `results/`: `/` written `+` (no owner contains `+`,
/// so two owners never share one).
pub fn owner_dir(owner: &crate::desired::Owner) -> String {
    owner.as_str().replace('/', "+")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_file_reads_back_with_and_without_its_end() {
        let started =
            RunRecord::parse("job=77_0\nspec=0123abcd0123abcd\ncommit=ab12cd\nstart=100\n")
                .unwrap();
        assert_eq!(started.job_id.to_string(), "77_0");
        assert_eq!(started.start, Some(100));
        assert!(!started.succeeded());
        let ended = RunRecord::parse(
            "job=77_0\nspec=0123abcd0123abcd\ncommit=\nstart=100\nexit=0\nend=160\nfuture=x\n",
        )
        .unwrap();
        assert!(ended.succeeded());
        assert_eq!(ended.commit, None);
        let failed = RunRecord::parse("job=78_0\nspec=0123\nstart=1\nexit=3\nend=2\n").unwrap();
        assert!(!failed.succeeded());
        assert_eq!(RunRecord::parse("spec=0123\nexit=0\n"), None);
        assert_eq!(RunRecord::parse("job=78_0\nspec=../x\n"), None);
    }

    #[test]
    fn metrics_keep_finite_numbers_of_a_flat_object() {
        let m = parse_metrics(r#"{"rps": 812.5, "p99_ms": 40, "name": "x", "nested": {"a": 1}}"#)
            .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["rps"], 812.5);
        assert!(parse_metrics("[1, 2]").is_err());
        assert!(parse_metrics("not json").is_err());
    }
}
