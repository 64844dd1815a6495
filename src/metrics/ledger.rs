//! Gauges read from the ledger and the config table: queued jobs and the oldest one's age per
//! payer and tier, jobs in flight or waiting by state, jobs that ended today by state, paused
//! payers, failed attempts today by cause, and the cost of instance time since midnight UTC
//! (from each attempt's recorded price, with [`crate::cost`]'s billing rules).
//!
//! What they read follows the work, not the ledger's age: the in-flight and waiting states,
//! and the terminal jobs settled today (the `by-settled-day` index). A terminal job settled
//! before midnight has no billed second and no failure today ([`crate::ledger_index`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::ledger_index;
use crate::scheduler::ACTIVE;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::cost::{attempt_cost, AttemptSpan};
use crate::cost_report::job_lines;
use crate::job::{Job, JobState};
use crate::ports::{ConfigStore, Ledger, StoreError, StoredPayer};

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
    /// Jobs in flight or waiting (queued, launching, running, failed, blocked), by state.
    pub jobs_by_state: BTreeMap<String, u64>,
    /// Jobs that ended (succeeded, cancelled, dead) since midnight UTC, by state.
    pub ended_today: BTreeMap<String, u64>,
    /// Paused payers and why.
    pub paused_payers: BTreeMap<String, String>,
    /// Failed attempts since midnight UTC by cause (`exit_code`, `spot_interruption`,
    /// `boot_timeout`, `heartbeat_lost`, `instance_lost`, `max_runtime`, `no_capacity`,
    /// `launch_refused`).
    pub failures_today: BTreeMap<String, u64>,
    /// Cost of instance time since midnight UTC (compute and root volume), in USD, from each
    /// attempt's recorded price; attempts still running count up to now.
    pub cost_today_usd: f64,
}

impl LedgerGauges {
    /// Reads the jobs in flight and waiting, today's terminal jobs ([`load_today`]) and every
    /// payer row.
    pub async fn load(
        ledger: &dyn Ledger,
        config: &dyn ConfigStore,
        now: DateTime<Utc>,
    ) -> Result<Self, StoreError> {
        let payers = config.list().await?;
        let jobs = load_today(ledger, None, now).await?;
        Ok(Self::from_jobs(&jobs, &payers, now))
    }

    /// Computes the gauges from jobs (any states; terminal jobs count only if they settled
    /// today) and the payer rows.
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
            if !job.state.is_terminal() {
                *g.jobs_by_state.entry(job.state.to_string()).or_default() += 1;
            } else if ledger_index::settled_at(job).is_some_and(|t| t >= midnight) {
                *g.ended_today.entry(job.state.to_string()).or_default() += 1;
            }
            let payer = by_id.get(job.payer_id.as_str());
            if job.state == JobState::Queued {
                let tier = payer.and_then(|p| p.profile.kinds.get(&job.kind).map(|k| k.tier));
                let e = queued
                    .entry((job.payer_id.clone(), tier))
                    .or_insert((0, job.submitted_at));
                e.0 += 1;
                e.1 = e.1.min(job.submitted_at);
            }
            g.cost_today_usd += job_cost_since(job, midnight, now);
            for a in &job.attempts {
                let when = a.finished_at.or(a.gone_at).or(job.updated_at);
                if let (Some(cause), Some(at)) = (&a.cause, when) {
                    if at >= midnight {
                        *g.failures_today
                            .entry(cause.label().to_owned())
                            .or_default() += 1;
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

/// The jobs in flight or waiting (`snapshot`, when the caller already read them, e.g. with
/// [`crate::scheduler::load_snapshot`]; else one query per active state), plus the terminal
/// jobs settled today (or tomorrow: an instance's clock may run ahead), the newer version of
/// each. No terminal job settled before today is read.
pub async fn load_today(
    ledger: &dyn Ledger,
    snapshot: Option<Vec<Job>>,
    now: DateTime<Utc>,
) -> Result<Vec<Job>, StoreError> {
    let mut by_id: BTreeMap<String, Job> = BTreeMap::new();
    let mut keep = |job: Job| match by_id.get(&job.job_id) {
        Some(held) if held.version >= job.version => {}
        _ => {
            by_id.insert(job.job_id.clone(), job);
        }
    };
    match snapshot {
        Some(jobs) => jobs.into_iter().for_each(&mut keep),
        None => {
            for state in ACTIVE {
                ledger
                    .by_state(state)
                    .await?
                    .into_iter()
                    .for_each(&mut keep);
            }
        }
    }
    let midnight = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(now, |t| t.and_utc());
    for day in ledger_index::settled_days(midnight, now) {
        ledger
            .settled_on(day, None)
            .await?
            .into_iter()
            .for_each(&mut keep);
    }
    Ok(by_id.into_values().collect())
}

/// What a job's attempts cost between `since` and `now`, billed as `cost report` bills them
/// ([`crate::cost_report::job_lines`]): attempts that ended before `since` count nothing, and
/// one that began before it counts only its share after.
fn job_cost_since(job: &Job, since: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    job_lines(job, Catalog::shipped(), now)
        .iter()
        .filter(|l| l.billed_until >= since)
        .map(|l| {
            if l.launched_at >= since {
                return l.cost.total_usd();
            }
            let before = AttemptSpan {
                launched: l.launched_at,
                started: None,
                finished: None,
                ended: since,
                succeeded: false,
            };
            let yesterday = attempt_cost(l.usd_per_hour, l.root_volume_gib, &before).total_usd();
            (l.cost.total_usd() - yesterday).max(0.0)
        })
        .sum()
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
            toml::from_str(include_str!("../../payer-profiles/cedar-plan.toml")).expect("fixture");
        StoredPayer {
            profile,
            paused: paused.map(str::to_owned),
            version: 1,
            updated_at: at("2026-11-28T00:00:00Z"),
            boot_failures: 0,
            paused_by_breaker: false,
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
                instance_id: Some("i-0a1b2c3d4e5f60001".into()),
                usd_per_hour: Some(3.6),
                launched_at: Some(at("2026-11-28T23:00:00Z")),
                finished_at: Some(at("2026-11-28T23:30:00Z")),
                cause: Some(FailureCause::InstanceLost),
                ..Attempt::default()
            },
            // 23:50 → 00:20: twenty minutes today at $3.60/h = $1.20 (+ the volume).
            Attempt {
                number: 2,
                instance_id: Some("i-0a1b2c3d4e5f60002".into()),
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
            instance_id: Some("i-0a1b2c3d4e5f60003".into()),
            usd_per_hour: Some(0.36),
            launched_at: Some(at("2026-11-29T00:30:00Z")),
            cause: None,
            ..Attempt::default()
        }];
        let g = LedgerGauges::from_jobs(&[j, running], &[], now);
        // No root volume recorded. 1.20 + 30 min at $0.36/h = 0.18.
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
}
