//! Metrics: a plain-data [`Metrics`] snapshot of the scheduler, and its Prometheus text
//! rendering. Renderers (Prometheus text here, CloudWatch EMF elsewhere) work from the same
//! [`Metrics::families`], so every output names and labels the same series.
//!
//! Three sources feed a snapshot:
//! - [`PassCounters`]: counters accumulated over the passes a process ran (the daemon keeps
//!   one for its life; a one-pass process records its single [`PassReport`]).
//! - [`LedgerGauges`]: what the ledger and config table say now: queued jobs and the oldest
//!   one's age per payer and tier, jobs by state, paused payers, retries and cost today.
//! - AWS calls by `Service.Operation` from the counting interceptor.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cost::{attempt_cost, AttemptSpan};
use crate::job::{Job, JobState};
use crate::ports::{ConfigStore, Ledger, StoreError, StoredPayer};
use crate::scheduler::PassReport;

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
    /// Instances recorded as running for a job (new launches, adoptions and replays).
    pub launches: u64,
    /// Launch failures by class: `capacity` (moved down the ladder), `quota`,
    /// `configuration`, `transient` (outcome unknown), `conflict` (lost a ledger write).
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
    /// Instance events applied to the ledger.
    pub events_applied: u64,
}

impl PassCounters {
    /// Adds one finished pass.
    pub fn record(&mut self, r: &PassReport) {
        let secs = r.duration_ms as f64 / 1000.0;
        self.passes += 1;
        self.last_pass_seconds = secs;
        self.pass_seconds_total += secs;
        self.ingested += u64::from(r.ingest.accepted);
        self.events_applied += u64::from(r.events.applied);
        let l = &r.launch;
        self.launches += l.instances.len() as u64;
        for (class, n) in [
            ("capacity", l.capacity_fallbacks),
            ("quota", l.quota_stops),
            ("configuration", l.config_failures),
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
        self.requeued += u64::from(c.requeued);
        self.dead += u64::from(c.dead);
    }
}

/// Queued jobs of one payer and tier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueGauge {
    pub payer: String,
    /// The job kind's tier in the payer's profile (`None`: the kind is not configured).
    pub tier: Option<u8>,
    pub queued: u64,
    /// Seconds since the oldest of them was submitted.
    pub oldest_age_seconds: f64,
}

/// What the ledger and config table say at one instant.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LedgerGauges {
    /// Queued jobs per payer and tier, sorted by payer then tier.
    pub queued: Vec<QueueGauge>,
    /// Jobs by state, for the states read.
    pub jobs_by_state: BTreeMap<String, u64>,
    /// Paused payers and why.
    pub paused_payers: BTreeMap<String, String>,
    /// Failed attempts since midnight UTC by cause (`exit_code`, `spot_interruption`,
    /// `boot_timeout`, `heartbeat_lost`, `instance_lost`, `max_runtime`).
    pub failures_today: BTreeMap<String, u64>,
    /// Cost of instance time since midnight UTC (compute and root volume), in USD, from each
    /// attempt's recorded price; attempts still running count up to now.
    pub cost_today_usd: f64,
}

impl LedgerGauges {
    /// Reads every job (one query per state, all pages) and every payer row. Terminal jobs
    /// are read too, for today's cost and failures: callers cache the result rather than
    /// read it on every scrape.
    pub async fn load(
        ledger: &dyn Ledger,
        config: &dyn ConfigStore,
        now: DateTime<Utc>,
    ) -> Result<Self, StoreError> {
        let payers = config.list().await?;
        let mut jobs = Vec::new();
        for state in JobState::ALL {
            jobs.extend(ledger.by_state(state).await?);
        }
        Ok(Self::from_jobs(&jobs, &payers, now))
    }

    /// Computes the gauges from jobs (any states) and the payer rows.
    pub fn from_jobs(jobs: &[Job], payers: &[StoredPayer], now: DateTime<Utc>) -> Self {
        let mut g = LedgerGauges::default();
        let by_id: BTreeMap<&str, &StoredPayer> = payers
            .iter()
            .map(|p| (p.profile.payer_id.as_str(), p))
            .collect();
        for p in payers {
            if let Some(why) = &p.paused {
                g.paused_payers
                    .insert(p.profile.payer_id.clone(), why.clone());
            }
        }
        let midnight = now
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .map_or(now, |t| t.and_utc());
        let mut queued: BTreeMap<(String, Option<u8>), (u64, DateTime<Utc>)> = BTreeMap::new();
        for job in jobs {
            *g.jobs_by_state.entry(job.state.to_string()).or_default() += 1;
            let payer = by_id.get(job.payer_id.as_str());
            if job.state == JobState::Queued {
                let tier = payer.and_then(|p| p.profile.kinds.get(&job.kind).map(|k| k.tier));
                let e = queued
                    .entry((job.payer_id.clone(), tier))
                    .or_insert((0, job.submitted_at));
                e.0 += 1;
                e.1 = e.1.min(job.submitted_at);
            }
            let gib = payer.map_or(0, |p| p.profile.launch.root_volume_gib);
            g.cost_today_usd += job_cost_since(job, gib, midnight, now);
            for a in &job.attempts {
                let when = a.finished_at.or(a.gone_at).or(job.updated_at);
                if let (Some(cause), Some(at)) = (&a.cause, when) {
                    if at >= midnight {
                        *g.failures_today.entry(cause_label(cause)).or_default() += 1;
                    }
                }
            }
        }
        g.queued = queued
            .into_iter()
            .map(|((payer, tier), (n, oldest))| QueueGauge {
                payer,
                tier,
                queued: n,
                oldest_age_seconds: ((now - oldest).num_milliseconds() as f64 / 1000.0).max(0.0),
            })
            .collect();
        g
    }
}

/// The serde tag of a failure cause (`exit_code`, `boot_timeout`…).
fn cause_label(cause: &crate::retry::FailureCause) -> String {
    serde_json::to_value(cause)
        .ok()
        .and_then(|v| v.get("cause").and_then(|c| c.as_str().map(str::to_owned)))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// What a job's attempts cost between `since` and `now`. An attempt without a recorded price
/// or launch time costs nothing here; one with no end yet runs until `now` if the job is in
/// flight (a terminal job's open attempt ends at the job's last update).
fn job_cost_since(job: &Job, gib: u32, since: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    let mut usd = 0.0;
    for a in &job.attempts {
        let (Some(rate), Some(launched)) = (a.usd_per_hour, a.launched_at) else {
            continue;
        };
        let open_end = if job.state.is_in_flight() && job.attempt == a.number {
            Some(now)
        } else {
            job.updated_at
        };
        let Some(ended) = a.finished_at.or(a.gone_at).or(open_end) else {
            continue;
        };
        if ended < since {
            continue;
        }
        let cost = |to: DateTime<Utc>| {
            let span = AttemptSpan {
                launched,
                started: None,
                finished: None,
                ended: to,
                succeeded: false,
            };
            attempt_cost(rate, gib, &span).total_usd()
        };
        // Billing that began before midnight: today's share is the total minus yesterday's.
        usd += if launched < since {
            (cost(ended) - cost(since)).max(0.0)
        } else {
            cost(ended)
        };
    }
    usd
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
                    "Jobs in the ledger by state (active states and their batches).",
                    Gauge,
                    by("state", &g.jobs_by_state),
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
    use crate::job::{Attempt, JobRequest};
    use crate::profile::PayerProfile;
    use crate::retry::FailureCause;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("test timestamp")
    }

    fn cedar(paused: Option<&str>) -> StoredPayer {
        let profile: PayerProfile =
            toml::from_str(include_str!("../payer-profiles/cedar-plan.toml")).expect("fixture");
        StoredPayer {
            profile,
            paused: paused.map(str::to_owned),
            version: 1,
            updated_at: at("2026-11-28T00:00:00Z"),
            boot_failures: 0,
        }
    }

    fn job(id: &str, kind: &str, state: JobState, submitted: &str) -> Job {
        let req = JobRequest::parse(&format!(
            r#"{{"job_id":"{id}","payer_id":"cedar-plan","kind":"{kind}","batch":"2026-11"}}"#
        ))
        .expect("request");
        let mut j = Job::from_request(req, at(submitted));
        j.state = state;
        j
    }

    #[test]
    fn queued_jobs_group_by_payer_and_tier_with_the_oldest_age() {
        let now = at("2026-11-29T01:00:00Z");
        let jobs = [
            job("a", "eligibility", JobState::Queued, "2026-11-29T00:59:00Z"),
            job("b", "eligibility", JobState::Queued, "2026-11-29T00:50:00Z"),
            job("c", "members", JobState::Queued, "2026-11-29T00:59:30Z"),
            job("d", "members", JobState::Running, "2026-11-29T00:00:00Z"),
        ];
        let g = LedgerGauges::from_jobs(&jobs, &[cedar(Some("drill"))], now);
        assert_eq!(
            g.queued,
            vec![
                QueueGauge {
                    payer: "cedar-plan".into(),
                    tier: Some(0),
                    queued: 2,
                    oldest_age_seconds: 600.0
                },
                QueueGauge {
                    payer: "cedar-plan".into(),
                    tier: Some(1),
                    queued: 1,
                    oldest_age_seconds: 30.0
                },
            ]
        );
        assert_eq!(g.jobs_by_state.get("queued"), Some(&3));
        assert_eq!(
            g.paused_payers.get("cedar-plan").map(String::as_str),
            Some("drill")
        );
    }

    #[test]
    fn cost_today_counts_only_time_since_midnight() {
        let now = at("2026-11-29T01:00:00Z");
        let mut j = job(
            "a",
            "eligibility",
            JobState::Succeeded,
            "2026-11-28T23:00:00Z",
        );
        j.attempt = 2;
        j.attempts = vec![
            // Ran 23:00–23:30 yesterday, failed: not today.
            Attempt {
                number: 1,
                usd_per_hour: Some(3.6),
                launched_at: Some(at("2026-11-28T23:00:00Z")),
                finished_at: Some(at("2026-11-28T23:30:00Z")),
                cause: Some(FailureCause::InstanceLost),
                ..Attempt::default()
            },
            // 23:50 → 00:20: twenty minutes today at $3.60/h = $1.20 (+ the volume).
            Attempt {
                number: 2,
                usd_per_hour: Some(3.6),
                launched_at: Some(at("2026-11-28T23:50:00Z")),
                finished_at: Some(at("2026-11-29T00:20:00Z")),
                ..Attempt::default()
            },
        ];
        let mut running = job(
            "b",
            "eligibility",
            JobState::Running,
            "2026-11-29T00:00:00Z",
        );
        running.attempt = 1;
        running.attempts = vec![Attempt {
            number: 1,
            usd_per_hour: Some(0.36),
            launched_at: Some(at("2026-11-29T00:30:00Z")),
            cause: None,
            ..Attempt::default()
        }];
        let g = LedgerGauges::from_jobs(&[j, running], &[], now);
        // No payer row: no volume. 1.20 + 30 min at $0.36/h = 0.18.
        assert!(
            (g.cost_today_usd - 1.38).abs() < 1e-9,
            "{}",
            g.cost_today_usd
        );
        assert!(
            g.failures_today.is_empty(),
            "yesterday's failure is not today's"
        );
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
}
