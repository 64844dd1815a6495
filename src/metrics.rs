//! Metrics: a plain-data [`Metrics`] snapshot of the scheduler, and its Prometheus text
//! rendering. Renderers (Prometheus text here, CloudWatch EMF elsewhere) work from the same
//! [`Metrics::families`], so every output names and labels the same series.
//!
//! Three sources feed a snapshot:
//! - [`PassCounters`]: counters accumulated over the passes a process ran (the daemon keeps
//!   one for its life; a one-pass process records its single [`PassReport`]).
//! - [`LedgerGauges`]: what the ledger and config table say now: queued jobs and the oldest
//!   one's age per payer and tier, jobs by state, paused payers, failures and cost today
//!   (in `metrics/ledger.rs`).
//! - AWS calls by `Service.Operation` from the counting interceptor.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::scheduler::PassReport;

mod ledger;

pub use ledger::{load_today, LedgerGauges, QueueGauge};

/// Counters accumulated over passes (monotonic for the life of the process).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassCounters {
    /// Passes that ran to the end (with or without per-job errors).
    pub passes: u64,
    /// Passes that could not run at all (ledger or config table unreachable).
    pub pass_failures: u64,
    /// Duration of the last pass, in seconds.
    pub last_pass_seconds: f64,
    /// Sum of every pass's duration, in seconds.
    pub pass_seconds_total: f64,
    /// Jobs ingested from the intake queue into the ledger.
    pub ingested: u64,
    /// Re-sent job requests whose content differed from the accepted job's (moved to the
    /// intake DLQ; the accepted job stands).
    pub conflicting_resends: u64,
    /// Instances recorded as running for a job (new launches, adoptions and replays).
    pub launches: u64,
    /// Launch failures by class: `capacity` (moved down the ladder), `quota` (a vCPU quota
    /// full: its rungs left out for the pass), `spot_unavailable` (spot's service-linked role
    /// missing: spot rungs left out), `profile_not_ready` (instance profile refused while IAM
    /// may propagate it: retried), `configuration` and `denied` (the job waits, the payer is
    /// paused), `credentials` (the scheduler's credentials refused: the pass stops launching),
    /// `transient` (outcome unknown), `conflict` (lost a ledger write).
    pub launch_failures: BTreeMap<String, u64>,
    /// Passes that stopped launching because EC2 (or the client-side bucket) throttled.
    pub throttled_passes: u64,
    /// Instances the reconciler acted on, by reason: `lost`, `boot_timeout`,
    /// `heartbeat_timeout`, `max_runtime`, `orphan`.
    pub reaps: BTreeMap<String, u64>,
    /// Attempts judged lost (instance gone without a `finished` event).
    pub lost_jobs: u64,
    /// Jobs the retry policy queued again after a reconciler finding, and those it
    /// declared dead.
    pub requeued: u64,
    pub dead: u64,
    /// Jobs queued again for another attempt, by the failed attempt's cause
    /// (`exit_code`, `spot_interruption`, `boot_timeout`, `heartbeat_lost`, `instance_lost`,
    /// `no_capacity`, `launch_refused`).
    pub retries: BTreeMap<String, u64>,
    /// Instance events applied to the ledger.
    pub events_applied: u64,
    /// Attempts ended without their `finished` event (once none of their events could still
    /// arrive), by cause: `instance_lost`, `spot_interruption`, `boot_timeout`,
    /// `heartbeat_lost`, `max_runtime`, and for an instance EC2 ended before it started,
    /// `no_capacity` or `launch_refused`.
    pub verdicts: BTreeMap<String, u64>,
    /// Launches found by the repair with their instance already gone, left to the verdict.
    pub launches_found_gone: u64,
    /// `launching` attempts recorded from their instance's own event.
    pub launches_from_events: u64,
    /// Jobs that succeeded on a `finished` that arrived after their attempt was judged lost.
    pub late_successes: u64,
    /// Instance events refused because their sender could not speak for the instance they
    /// name (moved to the events DLQ with the reason).
    pub events_refused: u64,
}

impl PassCounters {
    /// Adds one finished pass.
    pub fn record(&mut self, r: &PassReport) {
        let secs = r.duration_ms as f64 / 1000.0;
        self.passes += 1;
        self.last_pass_seconds = secs;
        self.pass_seconds_total += secs;
        self.ingested += u64::from(r.ingest.accepted);
        self.conflicting_resends += u64::from(r.ingest.conflicts);
        self.events_applied += u64::from(r.events.applied);
        self.launches_from_events += u64::from(r.events.adopted);
        self.late_successes += u64::from(r.events.late_successes);
        self.events_refused += u64::from(r.events.refused);
        let l = &r.launch;
        self.launches_found_gone += u64::from(l.found_gone);
        self.launches += l.instances.len() as u64;
        for (class, n) in [
            ("capacity", l.capacity_fallbacks),
            ("quota", l.quota_stops),
            ("spot_unavailable", l.spot_refusals),
            ("profile_not_ready", l.profile_retries),
            ("configuration", l.config_failures),
            ("denied", l.denied),
            ("credentials", l.credential_failures),
            ("transient", l.transient),
            ("conflict", l.conflicts),
        ] {
            *self.launch_failures.entry(class.to_owned()).or_default() += u64::from(n);
        }
        self.throttled_passes += u64::from(l.throttled);
        let c = &r.reconcile;
        for (reason, n) in [
            ("lost", c.lost),
            ("boot_timeout", c.boot_timeouts),
            ("heartbeat_timeout", c.heartbeat_timeouts),
            ("max_runtime", c.max_runtime),
            ("orphan", c.orphans_terminated),
        ] {
            *self.reaps.entry(reason.to_owned()).or_default() += u64::from(n);
        }
        self.lost_jobs += u64::from(c.lost);
        for (cause, n) in &c.verdicts {
            *self.verdicts.entry(cause.clone()).or_default() += u64::from(*n);
        }
        self.requeued += u64::from(c.requeued);
        self.dead += u64::from(c.dead);
        for (cause, n) in r.reconcile.retries.iter().chain(&r.events.retries) {
            *self.retries.entry(cause.clone()).or_default() += u64::from(*n);
        }
    }
}

/// A snapshot of everything mayfly reports, as plain data.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    pub at: DateTime<Utc>,
    pub passes: PassCounters,
    /// `None` when the ledger could not be read for this snapshot.
    pub ledger: Option<LedgerGauges>,
    /// AWS calls on the wire by `Service.Operation` (SDK retries included).
    pub aws_calls: BTreeMap<String, u64>,
    /// Responses judged throttled by `Service.Operation`.
    pub aws_throttled: BTreeMap<String, u64>,
}

/// Whether a series only goes up (over the process's life) or is a current value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Counter,
    Gauge,
}

/// One sample: label pairs and a value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// One metric: a name (`mayfly_…`, counters end in `_total`), help text, kind and samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

fn plain(value: f64) -> Vec<Sample> {
    vec![Sample {
        labels: Vec::new(),
        value,
    }]
}

fn by(label: &'static str, m: &BTreeMap<String, u64>) -> Vec<Sample> {
    m.iter()
        .map(|(k, v)| Sample {
            labels: vec![(label, k.clone())],
            value: *v as f64,
        })
        .collect()
}

impl Metrics {
    /// The snapshot of a process that ran exactly one pass (its report carries its calls).
    pub fn from_pass(report: &PassReport, ledger: Option<LedgerGauges>) -> Self {
        let mut passes = PassCounters::default();
        passes.record(report);
        Self {
            at: report.at,
            passes,
            ledger,
            aws_calls: report.aws_calls.clone(),
            aws_throttled: BTreeMap::new(),
        }
    }

    /// Every series, in a fixed order.
    pub fn families(&self) -> Vec<Family> {
        use Kind::{Counter, Gauge};
        let p = &self.passes;
        let f = |name, help, kind, samples| Family {
            name,
            help,
            kind,
            samples,
        };
        let mut out = vec![
            f(
                "mayfly_passes_total",
                "Scheduling passes run.",
                Counter,
                plain(p.passes as f64),
            ),
            f(
                "mayfly_pass_failures_total",
                "Passes that could not run (ledger or config table unreachable).",
                Counter,
                plain(p.pass_failures as f64),
            ),
            f(
                "mayfly_pass_duration_seconds",
                "Duration of the last pass.",
                Gauge,
                plain(p.last_pass_seconds),
            ),
            f(
                "mayfly_pass_duration_seconds_total",
                "Total time spent in passes.",
                Counter,
                plain(p.pass_seconds_total),
            ),
            f(
                "mayfly_jobs_ingested_total",
                "Job requests accepted into the ledger.",
                Counter,
                plain(p.ingested as f64),
            ),
            f(
                "mayfly_conflicting_resends_total",
                "Re-sent job requests whose content differed from the accepted job (moved to the intake DLQ).",
                Counter,
                plain(p.conflicting_resends as f64),
            ),
            f(
                "mayfly_launches_total",
                "Instances recorded as running for a job.",
                Counter,
                plain(p.launches as f64),
            ),
            f(
                "mayfly_launch_failures_total",
                "Launch failures by class.",
                Counter,
                by("class", &p.launch_failures),
            ),
            f(
                "mayfly_throttled_passes_total",
                "Passes that stopped launching because of throttling.",
                Counter,
                plain(p.throttled_passes as f64),
            ),
            f(
                "mayfly_reaps_total",
                "Instances the reconciler acted on, by reason.",
                Counter,
                by("reason", &p.reaps),
            ),
            f(
                "mayfly_lost_jobs_total",
                "Attempts judged lost (instance gone without a finished event).",
                Counter,
                plain(p.lost_jobs as f64),
            ),
            f(
                "mayfly_requeued_total",
                "Jobs queued again by the retry policy after a reconciler finding.",
                Counter,
                plain(p.requeued as f64),
            ),
            f(
                "mayfly_retries_total",
                "Jobs queued for another attempt, by the failed attempt's cause.",
                Counter,
                by("cause", &p.retries),
            ),
            f(
                "mayfly_dead_total",
                "Jobs the retry policy declared dead after a reconciler finding.",
                Counter,
                plain(p.dead as f64),
            ),
            f(
                "mayfly_events_applied_total",
                "Instance events applied to the ledger.",
                Counter,
                plain(p.events_applied as f64),
            ),
            f(
                "mayfly_events_refused_total",
                "Instance events moved to the events DLQ because their sender was not the \
                 instance they name.",
                Counter,
                plain(p.events_refused as f64),
            ),
            f(
                "mayfly_verdicts_total",
                "Attempts ended without their finished event, once none of their events could \
                 still arrive, by cause.",
                Counter,
                by("cause", &p.verdicts),
            ),
            f(
                "mayfly_launches_found_gone_total",
                "Launches whose instance the repair found already gone (left to the verdict).",
                Counter,
                plain(p.launches_found_gone as f64),
            ),
            f(
                "mayfly_launches_from_events_total",
                "Launching attempts recorded from their instance's own event.",
                Counter,
                plain(p.launches_from_events as f64),
            ),
            f(
                "mayfly_late_successes_total",
                "Jobs that succeeded on a finished event that arrived after their attempt was \
                 judged lost.",
                Counter,
                plain(p.late_successes as f64),
            ),
            f(
                "mayfly_aws_calls_total",
                "AWS calls on the wire by operation (SDK retries included).",
                Counter,
                by("operation", &self.aws_calls),
            ),
            f(
                "mayfly_aws_throttled_total",
                "AWS responses judged throttled, by operation.",
                Counter,
                by("operation", &self.aws_throttled),
            ),
        ];
        if let Some(g) = &self.ledger {
            let queued = |value: fn(&QueueGauge) -> f64| {
                g.queued
                    .iter()
                    .map(|q| Sample {
                        labels: vec![
                            ("payer", q.payer.clone()),
                            (
                                "tier",
                                q.tier
                                    .map_or_else(|| "unknown".to_owned(), |t| t.to_string()),
                            ),
                        ],
                        value: value(q),
                    })
                    .collect()
            };
            let paused = g
                .paused_payers
                .keys()
                .map(|payer| Sample {
                    labels: vec![("payer", payer.clone())],
                    value: 1.0,
                })
                .collect();
            out.extend([
                f(
                    "mayfly_queued_jobs",
                    "Queued jobs by payer and tier.",
                    Gauge,
                    queued(|q| q.queued as f64),
                ),
                f(
                    "mayfly_queued_oldest_age_seconds",
                    "Age of the oldest queued job by payer and tier.",
                    Gauge,
                    queued(|q| q.oldest_age_seconds),
                ),
                f(
                    "mayfly_jobs",
                    "Jobs in flight or waiting by state (queued, launching, running, failed, blocked).",
                    Gauge,
                    by("state", &g.jobs_by_state),
                ),
                f(
                    "mayfly_jobs_ended_today",
                    "Jobs that ended since midnight UTC by state (succeeded, cancelled, dead).",
                    Gauge,
                    by("state", &g.ended_today),
                ),
                f(
                    "mayfly_payer_paused",
                    "1 for each paused payer.",
                    Gauge,
                    paused,
                ),
                f(
                    "mayfly_paused_payers",
                    "Number of paused payers.",
                    Gauge,
                    plain(g.paused_payers.len() as f64),
                ),
                f(
                    "mayfly_failures_today",
                    "Failed attempts since midnight UTC by cause.",
                    Gauge,
                    by("cause", &g.failures_today),
                ),
                f(
                    "mayfly_cost_today_usd",
                    "Instance cost since midnight UTC (compute and root volume).",
                    Gauge,
                    plain(g.cost_today_usd),
                ),
            ]);
        }
        out
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        for fam in self.families() {
            let kind = match fam.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {} {}", fam.name, escape_help(fam.help));
            let _ = writeln!(out, "# TYPE {} {kind}", fam.name);
            for s in &fam.samples {
                out.push_str(fam.name);
                if !s.labels.is_empty() {
                    let labels: Vec<String> = s
                        .labels
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                        .collect();
                    let _ = write!(out, "{{{}}}", labels.join(","));
                }
                let _ = writeln!(out, " {}", number(s.value));
            }
        }
        out
    }
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("test timestamp")
    }

    #[test]
    fn counters_accumulate_over_passes() {
        let mut r = PassReport::new(at("2026-11-29T01:00:00Z"), false);
        r.duration_ms = 250;
        r.launch
            .instances
            .push(("a".into(), "i-1".into(), "c7i.large".into()));
        r.launch.capacity_fallbacks = 2;
        r.launch.throttled = true;
        r.reconcile.lost = 1;
        let mut c = PassCounters::default();
        c.record(&r);
        c.record(&r);
        assert_eq!(c.passes, 2);
        assert_eq!(c.launches, 2);
        assert_eq!(c.launch_failures.get("capacity"), Some(&4));
        assert_eq!(c.throttled_passes, 2);
        assert_eq!(c.reaps.get("lost"), Some(&2));
        assert!((c.pass_seconds_total - 0.5).abs() < 1e-9);
    }

    #[test]
    fn retries_are_counted_by_cause_from_reconcile_and_events() {
        let mut r = PassReport::new(at("2026-11-29T01:00:00Z"), false);
        r.reconcile.retries.insert("boot_timeout".into(), 1);
        r.reconcile.retries.insert("exit_code".into(), 1);
        r.events.retries.insert("exit_code".into(), 2);
        let mut c = PassCounters::default();
        c.record(&r);
        c.record(&r);
        assert_eq!(c.retries.get("boot_timeout"), Some(&2));
        assert_eq!(c.retries.get("exit_code"), Some(&6));
        let text = Metrics {
            passes: c,
            ..Metrics::from_pass(&r, None)
        }
        .to_prometheus();
        assert!(
            text.contains("mayfly_retries_total{cause=\"boot_timeout\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("mayfly_retries_total{cause=\"exit_code\"} 6\n"),
            "{text}"
        );
    }

    #[test]
    fn conflicting_resends_are_counted() {
        let mut r = PassReport::new(at("2026-11-29T01:00:00Z"), false);
        r.ingest.conflicts = 2;
        r.ingest.duplicates = 5;
        let mut c = PassCounters::default();
        c.record(&r);
        c.record(&r);
        assert_eq!(c.conflicting_resends, 4);
        let text = Metrics {
            passes: c,
            ..Metrics::from_pass(&r, None)
        }
        .to_prometheus();
        assert!(
            text.contains("# TYPE mayfly_conflicting_resends_total counter\nmayfly_conflicting_resends_total 4\n"),
            "{text}"
        );
    }

    #[test]
    fn prometheus_text_has_help_type_and_escaped_labels() {
        let mut r = PassReport::new(at("2026-11-29T01:00:00Z"), false);
        r.aws_calls.insert("EC2.RunInstances".into(), 3);
        let mut g = LedgerGauges::default();
        g.paused_payers.insert("odd\"payer\\x".into(), "why".into());
        let text = Metrics::from_pass(&r, Some(g)).to_prometheus();
        assert!(text.contains("# HELP mayfly_launches_total Instances recorded as running for a job.\n# TYPE mayfly_launches_total counter\nmayfly_launches_total 0\n"));
        assert!(text.contains("mayfly_aws_calls_total{operation=\"EC2.RunInstances\"} 3\n"));
        assert!(text.contains("mayfly_payer_paused{payer=\"odd\\\"payer\\\\x\"} 1\n"));
        assert!(text.contains("# TYPE mayfly_cost_today_usd gauge\nmayfly_cost_today_usd 0\n"));
        let without = Metrics::from_pass(&r, None).to_prometheus();
        assert!(!without.contains("mayfly_queued_jobs"));
    }

    #[test]
    fn terminal_states_are_counted_for_today_in_a_series_of_their_own() {
        use crate::job::{Job, JobRequest, JobState};
        let now = at("2026-11-29T12:00:00Z");
        let job = |id: &str, state: JobState, updated: &str| {
            let req = JobRequest::parse(&format!(
                r#"{{"job_id":"{id}","payer_id":"cedar-plan","kind":"claims","batch":"b"}}"#
            ))
            .expect("request");
            let mut j = Job::from_request(req, at("2026-11-01T00:00:00Z"));
            j.state = state;
            j.updated_at = Some(at(updated));
            j
        };
        let jobs = [
            job("a", JobState::Running, "2026-11-29T11:00:00Z"),
            job("b", JobState::Succeeded, "2026-11-29T10:00:00Z"),
            job("c", JobState::Succeeded, "2026-11-28T23:59:59Z"),
            job("d", JobState::Dead, "2026-11-29T00:00:00Z"),
        ];
        let g = LedgerGauges::from_jobs(&jobs, &[], now);
        let text = Metrics::from_pass(&PassReport::new(now, false), Some(g)).to_prometheus();
        assert!(
            text.contains("mayfly_jobs{state=\"running\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("mayfly_jobs{state=\"succeeded\"}"), "{text}");
        assert!(
            text.contains("mayfly_jobs_ended_today{state=\"succeeded\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("mayfly_jobs_ended_today{state=\"dead\"} 1\n"),
            "{text}"
        );
    }
}
