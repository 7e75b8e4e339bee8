//! `/metrics`: the watch loop's record ([`WatchState`]) in Prometheus' text exposition format
//! 0.0.4. Pure: a state in, a text out. Owns the metric names, their help texts and label
//! escaping.
//!
//! Families come in order of name, samples within a family in order of their labels, so the
//! same state always renders to the same text. A family with no sample (no successful
//! reconcile yet, no applied commit, no Slurm call) is left out entirely.

use crate::watch::state::{CallStats, LATENCY_BUCKETS, LockState, WatchState};
use std::borrow::Cow;
use std::fmt::Write;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The state as Prometheus text, every line ending in `\n`.
pub fn render(state: &WatchState) -> String {
    let mut out = String::new();

    family(
        &mut out,
        "stackctl_applied_commit_info",
        "gauge",
        "The commit whose desired state was last applied without error; always 1.",
        state
            .applied_commit
            .iter()
            .map(|commit| Sample::new("", labels(&[("commit", commit)]), "1".to_owned()))
            .collect(),
    );
    family(
        &mut out,
        "stackctl_checkout_up_to_date",
        "gauge",
        "Git mode: 1 when the last sync fetched the remote branch and moved the checkout to it, 0 when the fetch failed or the checkout could not be moved.",
        if state.mode == "git" {
            let ok = state.checkout_held.is_none() && state.sync_error.is_none();
            vec![Sample::plain(u8::from(ok).to_string())]
        } else {
            Vec::new()
        },
    );
    family(
        &mut out,
        "stackctl_drift_corrections_total",
        "counter",
        "Jobs submitted to replace replicas that ended or were cancelled outside stackctl (never renewals nor rolling replacements).",
        vec![Sample::plain(state.drift_corrections.to_string())],
    );
    family(
        &mut out,
        "stackctl_last_successful_reconcile_timestamp_seconds",
        "gauge",
        "When the last successful reconcile finished, seconds since the Unix epoch.",
        state
            .last_success_unix
            .iter()
            .map(|at| Sample::plain(float(*at)))
            .collect(),
    );
    let held = matches!(state.lock, LockState::HeldByOther { .. });
    family(
        &mut out,
        "stackctl_lock_held_by_other",
        "gauge",
        "1 when the last reconcile found the apply lock held by another apply, else 0.",
        vec![Sample::plain(u8::from(held).to_string())],
    );
    family(
        &mut out,
        "stackctl_reconcile_total",
        "counter",
        "Reconciles by result: ok (converged or nothing to do), error, skipped (lock held).",
        [
            ("error", state.reconciles_error),
            ("ok", state.reconciles_ok),
            ("skipped", state.reconciles_skipped),
        ]
        .iter()
        .map(|(result, n)| Sample::new("", labels(&[("result", result)]), n.to_string()))
        .collect(),
    );
    family(
        &mut out,
        "stackctl_refused_services",
        "gauge",
        "Services the last reconcile refused (left as they are while the others converged), by reason; always 1.",
        refused(state),
    );
    family(
        &mut out,
        "stackctl_replicas_desired",
        "gauge",
        "Replicas the repo asks for, per service (0 for a service gone from the repo that still runs).",
        replicas(state, |s| s.desired),
    );
    family(
        &mut out,
        "stackctl_replicas_running",
        "gauge",
        "Replicas with a RUNNING job, per service, from the last listing.",
        replicas(state, |s| s.running),
    );
    family(
        &mut out,
        "stackctl_slurm_call_duration_seconds",
        "histogram",
        "Latency of the Slurm calls the loop made, by operation.",
        state
            .slurm_calls
            .iter()
            .flat_map(|(operation, stats)| histogram(operation, stats))
            .collect(),
    );
    family(
        &mut out,
        "stackctl_slurm_call_errors_total",
        "counter",
        "Slurm calls that returned an error, by operation.",
        state
            .slurm_calls
            .iter()
            .map(|(operation, stats)| {
                Sample::new(
                    "",
                    labels(&[("operation", operation)]),
                    stats.errors.to_string(),
                )
            })
            .collect(),
    );
    family(
        &mut out,
        "stackctl_watch_start_time_seconds",
        "gauge",
        "When the watch loop started, seconds since the Unix epoch.",
        vec![Sample::plain(float(state.started_unix))],
    );
    out
}

/// A label value as the text format wants it: `\`, `"` and newline escaped as `\\`, `\"` and
/// `\n`. Every label value [`render`] writes goes through here.
pub fn escape_label_value(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    let mut escaped = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str(r"\\"),
            '"' => escaped.push_str(r#"\""#),
            '\n' => escaped.push_str(r"\n"),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// One line of a family: the name's suffix (`_bucket`…), the rendered labels, the value.
struct Sample {
    suffix: &'static str,
    labels: String,
    value: String,
}

impl Sample {
    fn new(suffix: &'static str, labels: String, value: String) -> Sample {
        Sample {
            suffix,
            labels,
            value,
        }
    }

    /// A sample without labels.
    fn plain(value: String) -> Sample {
        Sample::new("", String::new(), value)
    }
}

/// Writes `# HELP`, `# TYPE` and the samples, or nothing when there is no sample.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: Vec<Sample>) {
    if samples.is_empty() {
        return;
    }
    // Help texts are ours and hold neither `\` nor newlines, which the format would escape.
    debug_assert!(
        !help.contains(['\\', '\n']),
        "help of {name} needs escaping"
    );
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for sample in samples {
        let _ = writeln!(
            out,
            "{name}{}{} {}",
            sample.suffix, sample.labels, sample.value
        );
    }
}

/// `{a="x",b="y"}`, values escaped; the empty string for no labels.
fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut out = String::from("{");
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{name}=\"{}\"", escape_label_value(value));
    }
    out.push('}');
    out
}

/// One sample per service, in order of stack and service.
fn replicas(
    state: &WatchState,
    count: impl Fn(&crate::watch::state::ServiceReplicas) -> u32,
) -> Vec<Sample> {
    let mut services: Vec<_> = state.services.iter().collect();
    services.sort_by(|a, b| (&a.stack, &a.service).cmp(&(&b.stack, &b.service)));
    services
        .into_iter()
        .map(|s| {
            Sample::new(
                "",
                labels(&[("stack", &s.stack), ("service", &s.service)]),
                count(s).to_string(),
            )
        })
        .collect()
}

/// The cumulative buckets, `+Inf`, `_sum` and `_count` of one operation. `+Inf` and `_count`
/// are the calls made, which include those slower than the last bucket.
/// One sample per refused service and reason, in order of their labels.
fn refused(state: &WatchState) -> Vec<Sample> {
    let mut samples: Vec<Sample> = state
        .refused
        .iter()
        .map(|r| {
            Sample::new(
                "",
                labels(&[
                    ("stack", &r.stack),
                    ("service", &r.service),
                    ("reason", r.reason),
                ]),
                "1".to_owned(),
            )
        })
        .collect();
    samples.sort_by(|a, b| a.labels.cmp(&b.labels));
    samples.dedup_by(|a, b| a.labels == b.labels);
    samples
}

fn histogram(operation: &str, stats: &CallStats) -> Vec<Sample> {
    let mut samples = Vec::with_capacity(LATENCY_BUCKETS.len() + 3);
    let mut cumulative = 0u64;
    for (le, n) in LATENCY_BUCKETS.iter().zip(stats.buckets) {
        cumulative += n;
        samples.push(Sample::new(
            "_bucket",
            labels(&[("operation", operation), ("le", &float(*le))]),
            cumulative.to_string(),
        ));
    }
    samples.push(Sample::new(
        "_bucket",
        labels(&[("operation", operation), ("le", "+Inf")]),
        stats.count.to_string(),
    ));
    let operation = labels(&[("operation", operation)]);
    samples.push(Sample::new(
        "_sum",
        operation.clone(),
        float(stats.sum_seconds),
    ));
    samples.push(Sample::new("_count", operation, stats.count.to_string()));
    samples
}

/// A float as Go's parser reads it: `+Inf`, `-Inf`, `NaN`, or Rust's shortest round-trip
/// decimal (never an exponent).
fn float(x: f64) -> String {
    if x.is_nan() {
        "NaN".to_owned()
    } else if x.is_infinite() {
        if x > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        x.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::state::{RefusedService, ServiceReplicas};

    fn service(stack: &str, service: &str, desired: u32, running: u32) -> ServiceReplicas {
        ServiceReplicas {
            stack: stack.to_owned(),
            service: service.to_owned(),
            desired,
            running,
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    /// The sample line of `name` (with labels), failing when it is absent or repeated.
    fn sample<'a>(text: &'a str, name_and_labels: &str) -> &'a str {
        let prefix = format!("{name_and_labels} ");
        let found: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix(&prefix))
            .collect();
        assert_eq!(found.len(), 1, "{name_and_labels} in:\n{text}");
        found[0]
    }

    #[test]
    fn escaping_covers_backslash_quote_and_newline() {
        assert_eq!(escape_label_value("plain-0.1_x"), "plain-0.1_x");
        assert!(matches!(escape_label_value("plain"), Cow::Borrowed(_)));
        assert_eq!(escape_label_value(r"a\b"), r"a\\b");
        assert_eq!(escape_label_value(r#"say "hi""#), r#"say \"hi\""#);
        assert_eq!(escape_label_value("two\nlines"), r"two\nlines");
        assert_eq!(escape_label_value("\\\"\n"), r#"\\\"\n"#);
    }

    #[test]
    fn commit_and_operation_labels_are_escaped() {
        let mut state = WatchState {
            applied_commit: Some("a\"b\\c\nd".to_owned()),
            ..Default::default()
        };
        state.slurm_calls.insert("we\"ird", CallStats::default());
        let text = render(&state);
        assert_eq!(
            sample(
                &text,
                r#"stackctl_applied_commit_info{commit="a\"b\\c\nd"}"#
            ),
            "1"
        );
        assert_eq!(
            sample(
                &text,
                r#"stackctl_slurm_call_errors_total{operation="we\"ird"}"#
            ),
            "0"
        );
        assert_eq!(
            sample(
                &text,
                r#"stackctl_slurm_call_duration_seconds_count{operation="we\"ird"}"#
            ),
            "0"
        );
    }

    fn refused(stack: &str, service: &str, reason: &'static str) -> RefusedService {
        RefusedService {
            stack: stack.to_owned(),
            service: service.to_owned(),
            reason,
            message: "m".to_owned(),
        }
    }

    #[test]
    fn a_checkout_that_cannot_follow_the_branch_is_a_zero() {
        let mut state = WatchState {
            mode: "git",
            ..Default::default()
        };
        assert_eq!(sample(&render(&state), "stackctl_checkout_up_to_date"), "1");
        state.checkout_held = Some("has uncommitted changes to stacks/a.yaml".to_owned());
        assert_eq!(sample(&render(&state), "stackctl_checkout_up_to_date"), "0");
        state.checkout_held = None;
        state.sync_error = Some("cannot fetch".to_owned());
        assert_eq!(sample(&render(&state), "stackctl_checkout_up_to_date"), "0");
        state.mode = "local";
        assert!(!render(&state).contains("stackctl_checkout_up_to_date"));
    }

    #[test]
    fn a_hand_built_state_renders_exact_lines() {
        let state = WatchState {
            mode: "git",
            started_unix: 1_700_000_000.5,
            reconciles_ok: 7,
            reconciles_error: 2,
            reconciles_skipped: 1,
            last_success_unix: Some(1_700_000_100.25),
            drift_corrections: 3,
            applied_commit: Some("3f2a9c1d0b7e".to_owned()),
            services: vec![
                service("web", "db", 1, 1),
                service("ml", "llm", 3, 2),
                service("web", "app", 2, 0),
            ],
            lock: LockState::HeldByOther {
                holder: "someone".to_owned(),
            },
            refused: vec![
                refused("web", "db", "max_destroy"),
                refused("data", "pg", "protected"),
                refused("data", "pg", "protected"),
            ],
            ..Default::default()
        };
        let text = render(&state);
        let expected = [
            "# HELP stackctl_applied_commit_info The commit whose desired state was last applied without error; always 1.",
            "# TYPE stackctl_applied_commit_info gauge",
            r#"stackctl_applied_commit_info{commit="3f2a9c1d0b7e"} 1"#,
            "# HELP stackctl_checkout_up_to_date Git mode: 1 when the last sync fetched the remote branch and moved the checkout to it, 0 when the fetch failed or the checkout could not be moved.",
            "# TYPE stackctl_checkout_up_to_date gauge",
            "stackctl_checkout_up_to_date 1",
            "# HELP stackctl_drift_corrections_total Jobs submitted to replace replicas that ended or were cancelled outside stackctl (never renewals nor rolling replacements).",
            "# TYPE stackctl_drift_corrections_total counter",
            "stackctl_drift_corrections_total 3",
            "# HELP stackctl_last_successful_reconcile_timestamp_seconds When the last successful reconcile finished, seconds since the Unix epoch.",
            "# TYPE stackctl_last_successful_reconcile_timestamp_seconds gauge",
            "stackctl_last_successful_reconcile_timestamp_seconds 1700000100.25",
            "# HELP stackctl_lock_held_by_other 1 when the last reconcile found the apply lock held by another apply, else 0.",
            "# TYPE stackctl_lock_held_by_other gauge",
            "stackctl_lock_held_by_other 1",
            "# HELP stackctl_reconcile_total Reconciles by result: ok (converged or nothing to do), error, skipped (lock held).",
            "# TYPE stackctl_reconcile_total counter",
            r#"stackctl_reconcile_total{result="error"} 2"#,
            r#"stackctl_reconcile_total{result="ok"} 7"#,
            r#"stackctl_reconcile_total{result="skipped"} 1"#,
            "# HELP stackctl_refused_services Services the last reconcile refused (left as they are while the others converged), by reason; always 1.",
            "# TYPE stackctl_refused_services gauge",
            r#"stackctl_refused_services{stack="data",service="pg",reason="protected"} 1"#,
            r#"stackctl_refused_services{stack="web",service="db",reason="max_destroy"} 1"#,
            "# HELP stackctl_replicas_desired Replicas the repo asks for, per service (0 for a service gone from the repo that still runs).",
            "# TYPE stackctl_replicas_desired gauge",
            r#"stackctl_replicas_desired{stack="ml",service="llm"} 3"#,
            r#"stackctl_replicas_desired{stack="web",service="app"} 2"#,
            r#"stackctl_replicas_desired{stack="web",service="db"} 1"#,
            "# HELP stackctl_replicas_running Replicas with a RUNNING job, per service, from the last listing.",
            "# TYPE stackctl_replicas_running gauge",
            r#"stackctl_replicas_running{stack="ml",service="llm"} 2"#,
            r#"stackctl_replicas_running{stack="web",service="app"} 0"#,
            r#"stackctl_replicas_running{stack="web",service="db"} 1"#,
            "# HELP stackctl_watch_start_time_seconds When the watch loop started, seconds since the Unix epoch.",
            "# TYPE stackctl_watch_start_time_seconds gauge",
            "stackctl_watch_start_time_seconds 1700000000.5",
        ];
        assert_eq!(lines(&text), expected);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn buckets_are_cumulative_and_inf_is_the_count() {
        let mut stats = CallStats::default();
        stats.record(0.001, false); // bucket 0 (le 0.005)
        stats.record(0.3, true); // bucket 6 (le 0.5)
        stats.record(99.0, false); // slower than every bucket: +Inf only
        let mut state = WatchState::default();
        state.slurm_calls.insert("submit", stats);
        state.slurm_calls.insert("list_jobs", CallStats::default());
        let text = render(&state);

        let bucket = |le: &str| {
            sample(
                &text,
                &format!(
                    r#"stackctl_slurm_call_duration_seconds_bucket{{operation="submit",le="{le}"}}"#
                ),
            )
            .to_owned()
        };
        assert_eq!(bucket("0.005"), "1");
        assert_eq!(bucket("0.01"), "1");
        assert_eq!(bucket("0.25"), "1");
        assert_eq!(bucket("0.5"), "2");
        assert_eq!(bucket("1"), "2");
        assert_eq!(bucket("30"), "2");
        assert_eq!(bucket("+Inf"), "3");
        assert_eq!(
            sample(
                &text,
                r#"stackctl_slurm_call_duration_seconds_count{operation="submit"}"#
            ),
            "3"
        );
        assert_eq!(
            sample(
                &text,
                r#"stackctl_slurm_call_duration_seconds_sum{operation="submit"}"#
            )
            .parse::<f64>()
            .map(|sum| (sum - 99.301).abs() < 1e-9),
            Ok(true)
        );
        assert_eq!(
            sample(
                &text,
                r#"stackctl_slurm_call_errors_total{operation="submit"}"#
            ),
            "1"
        );
        // Every bucket of both operations, +Inf included, and operations in order.
        let buckets: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("stackctl_slurm_call_duration_seconds_bucket"))
            .collect();
        assert_eq!(buckets.len(), 2 * (LATENCY_BUCKETS.len() + 1));
        assert!(buckets[0].contains(r#"operation="list_jobs""#));
        assert!(
            buckets
                .last()
                .is_some_and(|l| l.contains(r#"operation="submit",le="+Inf""#))
        );
        assert_eq!(
            text.matches("# TYPE stackctl_slurm_call_duration_seconds histogram")
                .count(),
            1
        );
    }

    #[test]
    fn absent_samples_are_omitted_and_counters_start_at_zero() {
        let text = render(&WatchState::default());
        for absent in [
            "stackctl_last_successful_reconcile_timestamp_seconds",
            "stackctl_applied_commit_info",
            "stackctl_replicas_desired",
            "stackctl_replicas_running",
            "stackctl_slurm_call_duration_seconds",
            "stackctl_slurm_call_errors_total",
        ] {
            assert!(!text.contains(absent), "{absent} in:\n{text}");
        }
        assert_eq!(
            sample(&text, r#"stackctl_reconcile_total{result="ok"}"#),
            "0"
        );
        assert_eq!(
            sample(&text, r#"stackctl_reconcile_total{result="error"}"#),
            "0"
        );
        assert_eq!(
            sample(&text, r#"stackctl_reconcile_total{result="skipped"}"#),
            "0"
        );
        assert_eq!(sample(&text, "stackctl_drift_corrections_total"), "0");
        assert_eq!(sample(&text, "stackctl_lock_held_by_other"), "0");
        assert_eq!(sample(&text, "stackctl_watch_start_time_seconds"), "0");
    }

    #[test]
    fn only_a_lock_held_by_another_counts_as_held() {
        for (lock, held) in [
            (LockState::Free, "0"),
            (LockState::ReleasedByUs, "0"),
            (
                LockState::HeldByOther {
                    holder: "x".to_owned(),
                },
                "1",
            ),
        ] {
            let state = WatchState {
                lock,
                ..Default::default()
            };
            assert_eq!(sample(&render(&state), "stackctl_lock_held_by_other"), held);
        }
    }

    #[test]
    fn floats_read_back_in_go() {
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(1.0), "1");
        assert_eq!(float(0.005), "0.005");
        assert_eq!(float(1e-7), "0.0000001");
    }
}
