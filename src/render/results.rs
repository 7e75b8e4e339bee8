//! `stackctl results`: the runs of a one-shot job with their metrics, and each metric's
//! change against the previous run of the same job, as text, JSON or Markdown. Pure.

use crate::observed::runs::RunRecord;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// One run as `stackctl results` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultRow {
    /// The run's record.
    #[serde(flatten)]
    pub record: RunRecord,
    /// `COMPLETED`, `FAILED`, `RUNNING`, `PENDING`, Slurm's state for a run killed before it
    /// recorded its end, or `LOST` when neither the record nor Slurm says how it ended.
    pub state: String,
    /// Seconds from start to end, when both are known.
    pub duration: Option<i64>,
    /// Each metric's change against the previous run that had it: `(new - old)`, and the
    /// relative change in percent when the old value is not zero.
    pub change: BTreeMap<String, Change>,
}

/// A metric's change against the previous run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Change {
    /// The previous value.
    pub previous: f64,
    /// `new - previous`.
    pub delta: f64,
    /// `delta / previous` in percent; none when the previous value is 0.
    pub percent: Option<f64>,
}

/// Builds the rows of `runs` (oldest first), `state_of` giving each run's state; every
/// metric is compared with the latest earlier run that has it.
pub fn rows(runs: &[RunRecord], state_of: &dyn Fn(&RunRecord) -> String) -> Vec<ResultRow> {
    let mut previous: BTreeMap<String, f64> = BTreeMap::new();
    runs.iter()
        .map(|record| {
            let change = record
                .metrics
                .iter()
                .filter_map(|(name, &value)| {
                    let &old = previous.get(name)?;
                    let delta = value - old;
                    Some((
                        name.clone(),
                        Change {
                            previous: old,
                            delta,
                            percent: (old != 0.0).then(|| delta / old.abs() * 100.0),
                        },
                    ))
                })
                .collect();
            previous.extend(record.metrics.iter().map(|(k, v)| (k.clone(), *v)));
            ResultRow {
                state: state_of(record),
                duration: record.start.zip(record.end).map(|(s, e)| e - s),
                change,
                record: record.clone(),
            }
        })
        .collect()
}

fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// A metric with its change: `812.4 (+12.4, +1.5%)`, or the value alone for a first run.
pub fn metric_words(value: f64, change: Option<&Change>) -> String {
    match change {
        None => number(value),
        Some(c) => {
            let sign = if c.delta >= 0.0 { "+" } else { "-" };
            let percent = c
                .percent
                .map(|p| {
                    format!(
                        ", {}{}%",
                        if p >= 0.0 { "+" } else { "-" },
                        number((p.abs() * 10.0).round() / 10.0)
                    )
                })
                .unwrap_or_default();
            format!(
                "{} ({sign}{}{percent})",
                number(value),
                number(c.delta.abs())
            )
        }
    }
}

fn cells(row: &ResultRow) -> [String; 7] {
    let r = &row.record;
    [
        r.job_id.to_string(),
        r.commit.clone().unwrap_or_else(|| "-".into()),
        r.spec.0.clone(),
        row.state.clone(),
        r.exit.map_or("-".into(), |e| e.to_string()),
        r.start.map_or("-".into(), crate::utc::date_time),
        row.duration.map_or("-".into(), |d| format!("{d}s")),
    ]
}

const HEADER: [&str; 7] = [
    "JOB", "COMMIT", "SPEC", "STATE", "EXIT", "START", "DURATION",
];

/// The runs as a table, one line per run, metrics (with their change) in the last column.
pub fn render_text(job: &str, rows: &[ResultRow]) -> String {
    if rows.is_empty() {
        return format!("{job}: no runs recorded\n");
    }
    let table: Vec<[String; 8]> = rows
        .iter()
        .map(|row| {
            let [a, b, c, d, e, f, g] = cells(row);
            let metrics: Vec<String> = row
                .record
                .metrics
                .iter()
                .map(|(k, v)| format!("{k}={}", metric_words(*v, row.change.get(k))))
                .collect();
            [a, b, c, d, e, f, g, metrics.join(" ")]
        })
        .collect();
    let mut header = [""; 8];
    header[..7].copy_from_slice(&HEADER);
    header[7] = "METRICS";
    super::table(&header, table)
}

/// The runs as a JSON array.
pub fn render_json(rows: &[ResultRow]) -> String {
    let mut text = serde_json::to_string_pretty(rows).expect("rows serialize");
    text.push('\n');
    text
}

/// The runs as Markdown for a pull-request comment: a table of runs, then a table of every
/// metric (rows) per run (columns), each with its change against the run before.
pub fn render_markdown(job: &str, rows: &[ResultRow]) -> String {
    let mut out = format!("### Results of `{job}`\n\n");
    if rows.is_empty() {
        out.push_str("No runs recorded.\n");
        return out;
    }
    let _ = writeln!(out, "| {} |", HEADER.map(|h| h.to_lowercase()).join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(HEADER.len()));
    for row in rows {
        let _ = writeln!(
            out,
            "| {} |",
            cells(row).map(|c| c.replace('|', "\\|")).join(" | ")
        );
    }
    let names: std::collections::BTreeSet<&String> =
        rows.iter().flat_map(|r| r.record.metrics.keys()).collect();
    if names.is_empty() {
        return out;
    }
    out.push('\n');
    let ids: Vec<String> = rows
        .iter()
        .map(|r| format!("`{}`", r.record.job_id))
        .collect();
    let _ = writeln!(out, "| metric | {} |", ids.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(rows.len()));
    for name in names {
        let values: Vec<String> = rows
            .iter()
            .map(|r| match r.record.metrics.get(name) {
                Some(v) => metric_words(*v, r.change.get(name)),
                None => "-".into(),
            })
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} |",
            name.replace('|', "\\|"),
            values.join(" | ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::SpecHash;
    use crate::observed::JobId;

    fn run(array: u64, metrics: &[(&str, f64)]) -> RunRecord {
        RunRecord {
            job_id: JobId {
                array,
                task: Some(0),
            },
            spec: SpecHash("abc".into()),
            commit: Some("c0ffee".into()),
            start: Some(100),
            end: Some(130),
            exit: Some(0),
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn each_metric_is_compared_with_the_latest_earlier_run_that_has_it() {
        let runs = [
            run(1, &[("rps", 200.0), ("p99", 10.0)]),
            run(2, &[("rps", 250.0)]),
            run(3, &[("rps", 225.0), ("p99", 12.0)]),
        ];
        let rows = rows(&runs, &|_| "COMPLETED".into());
        assert!(rows[0].change.is_empty());
        assert_eq!(rows[1].change["rps"].delta, 50.0);
        assert_eq!(rows[2].change["rps"].percent, Some(-10.0));
        assert_eq!(rows[2].change["p99"].previous, 10.0, "run 2 had no p99");
        let md = render_markdown("s/bench", &rows);
        assert!(
            md.contains("| rps | 200 | 250 (+50, +25%) | 225 (-25, -10%) |"),
            "{md}"
        );
        assert!(md.contains("| p99 | 10 | - | 12 (+2, +20%) |"), "{md}");
        let text = render_text("s/bench", &rows);
        assert!(text.contains("rps=225 (-25, -10%)"), "{text}");
        assert!(text.contains("30s"), "{text}");
    }
}
