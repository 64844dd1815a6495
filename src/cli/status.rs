//! `mayfly status`: one screen about a deployment: queue depths, jobs by state, running
//! instances, paused payers, the oldest waiting job and why it waits, and cost today.
//! Reads only: the jobs a pass plans from (in flight, waiting, and the blockers of their
//! batches) and the terminal jobs settled today; never the ledger's history.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{emit, App, CliError, Output, PassArgs};
use crate::aws::ec2::classify;
use crate::aws::permissions::SPOT_ROLE_FIX;
use crate::job::{Job, JobState};
use crate::metrics::{load_today, LedgerGauges, QueueGauge};
use crate::plan::{self, Snapshot};
use crate::ports::ComputeError;
use crate::ports::InstanceState;
use crate::profile::CapacityType;
use crate::scheduler::{load_payers, load_snapshot, QuotaRead, QuotaStatus};
use crate::summary::JobSummary;

/// The oldest job not running yet, and what holds it.
#[derive(Debug, Serialize)]
pub struct OldestWaiting {
    pub job_id: String,
    pub payer_id: String,
    pub kind: String,
    pub state: JobState,
    pub waiting_seconds: i64,
    /// The planner's reason code (`payer_paused`, `tier_gate`…), or `launch_next_pass`.
    pub code: String,
    /// The reason in words.
    pub why: String,
}

/// Spot refused for the account at its latest try: why, and how to fix it.
#[derive(Debug, Serialize)]
pub struct SpotRefused {
    /// When the latest launch met the refusal (no spot launch succeeded since).
    pub at: DateTime<Utc>,
    pub job_id: String,
    pub code: String,
    pub fix: &'static str,
}

/// The deployment at one instant.
#[derive(Debug, Serialize)]
pub struct Status {
    pub deployment: String,
    pub at: DateTime<Utc>,
    /// Approximate messages per queue: intake, intake DLQ, events, events DLQ. The intake and
    /// events queues count visible messages (waiting to be read); the DLQs count visible and
    /// in-flight ones, since a message someone is looking at is still dead-lettered.
    pub queues: Vec<(String, u64)>,
    /// Approximate in-flight messages per queue (received, not yet deleted or back).
    pub in_flight: BTreeMap<String, u64>,
    /// Jobs in flight or waiting, by state.
    pub jobs_by_state: BTreeMap<String, u64>,
    /// Jobs that ended since midnight UTC, by state.
    pub ended_today: BTreeMap<String, u64>,
    /// Live instances (pending, running, stopping, stopped) of this deployment, by type.
    pub instances: BTreeMap<String, u64>,
    pub paused_payers: BTreeMap<String, String>,
    pub queued: Vec<QueueGauge>,
    pub oldest_waiting: Option<OldestWaiting>,
    /// Spot refused at the latest spot launch (its rungs skipped for on-demand ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spot_refused: Option<SpotRefused>,
    pub cost_today_usd: f64,
    /// The vCPU quotas the plan keeps to: `--vcpu-quota`, the account's, or why they are
    /// unknown.
    pub vcpu_quotas: QuotaStatus,
}

/// The latest word on spot among the jobs' attempts: a launch that got a spot instance, or
/// one whose spot rungs were refused for the account; `Some` when it is the refusal.
fn spot_refused(jobs: &[Job]) -> Option<SpotRefused> {
    let mut latest: Option<(DateTime<Utc>, Option<SpotRefused>)> = None;
    for job in jobs {
        for a in &job.attempts {
            let Some(at) = a.launched_at.or(a.finished_at).or(job.updated_at) else {
                continue;
            };
            let refused = a
                .fallbacks
                .iter()
                .find(|f| matches!(classify(&f.code, ""), ComputeError::SpotUnavailable { .. }));
            let spot_ran = a.instance_id.is_some()
                && a.rung
                    .as_ref()
                    .is_some_and(|r| r.capacity == CapacityType::Spot);
            let word = match refused {
                Some(f) => Some(SpotRefused {
                    at,
                    job_id: job.job_id.clone(),
                    code: f.code.clone(),
                    fix: SPOT_ROLE_FIX,
                }),
                None if spot_ran => None,
                None => continue,
            };
            if latest.as_ref().is_none_or(|(t, _)| at > *t) {
                latest = Some((at, word));
            }
        }
    }
    latest.and_then(|(_, word)| word)
}

fn age(secs: i64) -> String {
    crate::duration::Duration::from_secs(secs.max(0) as u64).to_string()
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Deployment {} at {}",
            self.deployment,
            self.at.format("%Y-%m-%dT%H:%M:%SZ")
        )?;
        let queues: Vec<String> = self
            .queues
            .iter()
            .map(|(q, n)| match self.in_flight.get(q) {
                Some(&held) if held > 0 && q.ends_with("-dlq") => {
                    format!("{q} {n} ({held} in flight)")
                }
                _ => format!("{q} {n}"),
            })
            .collect();
        writeln!(f, "Queues:    {}", queues.join(", "))?;
        let count = |states: &BTreeMap<String, u64>, terminal: bool| -> Vec<String> {
            JobState::ALL
                .iter()
                .filter(|s| s.is_terminal() == terminal)
                .map(|s| format!("{s} {}", states.get(s.as_str()).unwrap_or(&0)))
                .collect()
        };
        writeln!(
            f,
            "Jobs:      {}; ended today: {}",
            count(&self.jobs_by_state, false).join(", "),
            count(&self.ended_today, true).join(", ")
        )?;
        let live: u64 = self.instances.values().sum();
        let types: Vec<String> = self
            .instances
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        if types.is_empty() {
            writeln!(f, "Instances: 0 live")?;
        } else {
            writeln!(f, "Instances: {live} live ({})", types.join(", "))?;
        }
        for q in &self.queued {
            let tier = q.tier.map_or_else(|| "?".to_owned(), |t| t.to_string());
            writeln!(
                f,
                "Queued:    {} tier {tier}: {}, oldest {}",
                q.payer,
                q.queued,
                age(q.oldest_age_seconds as i64)
            )?;
        }
        if self.paused_payers.is_empty() {
            writeln!(f, "Paused:    none")?;
        }
        for (payer, why) in &self.paused_payers {
            writeln!(f, "Paused:    {payer}: {why}")?;
        }
        if let Some(s) = &self.spot_refused {
            writeln!(
                f,
                "Spot:      refused at {} (job {}): {}; on-demand rungs are used instead. To fix \
                 it, {}",
                s.at.format("%Y-%m-%dT%H:%M:%SZ"),
                s.job_id,
                s.code,
                s.fix
            )?;
        }
        writeln!(f, "vCPU quota: {}", self.vcpu_quotas)?;
        match &self.oldest_waiting {
            None => writeln!(f, "Oldest:    no job waiting")?,
            Some(w) => writeln!(
                f,
                "Oldest:    {} ({}, {}) waiting {}: {}",
                w.job_id,
                w.payer_id,
                w.state,
                age(w.waiting_seconds),
                w.why
            )?,
        }
        writeln!(
            f,
            "Cost today: ${:.4} (since 00:00 UTC)",
            self.cost_today_usd
        )
    }
}

pub(super) async fn status(app: &App, output: Output) -> Result<(), CliError> {
    let runtime = |e: &dyn fmt::Display| CliError::Runtime(e.to_string());
    let pass = PassArgs::defaults();
    let scheduler = app.scheduler(&pass).await?;
    let d = &scheduler.deps;
    let now = Utc::now();
    let mut queues = Vec::new();
    let mut in_flight = BTreeMap::new();
    for (label, q, dlq) in [
        ("intake", &d.intake, false),
        ("intake-dlq", &d.intake_dlq, true),
        ("events", &d.events, false),
        ("events-dlq", &d.events_dlq, true),
    ] {
        let visible = q
            .depth()
            .await
            .map_err(|e| app.queue_error(&format!("{label} queue depth"), e))?;
        let held = q
            .in_flight()
            .await
            .map_err(|e| app.queue_error(&format!("{label} queue in flight"), e))?;
        queues.push((label.to_owned(), if dlq { visible + held } else { visible }));
        in_flight.insert(label.to_owned(), held);
    }
    let rows = d
        .config
        .list()
        .await
        .map_err(|e| app.store_error("config table", e))?;
    let payers = load_payers(d.config.as_ref(), scheduler.catalog, pass.caps.caps())
        .await
        .map_err(|e| app.store_error("config table", e))?;
    let snapshot = load_snapshot(d.ledger.as_ref())
        .await
        .map_err(|e| app.store_error("job ledger", e))?;
    let jobs = load_today(d.ledger.as_ref(), Some(snapshot), now)
        .await
        .map_err(|e| app.store_error("job ledger", e))?;
    let gauges = LedgerGauges::from_jobs(&jobs, &rows, now);
    let mut instances = BTreeMap::new();
    for i in d
        .compute
        .list_managed(&scheduler.settings.cluster)
        .await
        .map_err(|e| runtime(&e))?
    {
        if i.state.is_live() && i.state != InstanceState::ShuttingDown {
            *instances.entry(i.instance_type).or_default() += 1;
        }
    }
    let summaries = JobSummary::of_all(&jobs);
    let quotas = scheduler.account_quotas_shown(&payers.valid).await;
    let snapshot = Snapshot {
        jobs: &summaries,
        payers: &payers.valid,
        catalog: scheduler.catalog,
        caps: pass.caps.caps(),
        vcpu_quota: pass.vcpu_quota,
        account_quotas: quotas
            .as_ref()
            .map_or_else(Default::default, QuotaRead::view),
        launch_budget: crate::scheduler::instance_budget(pass.max_launches, pass.max_group),
        now,
    };
    let plan = plan::plan(&snapshot);
    // The planner explains every job it does not launch, running and finished ones too.
    let not_started =
        |s: JobState| matches!(s, JobState::Queued | JobState::Blocked | JobState::Failed);
    let waiting = plan
        .waiting
        .iter()
        .filter(|w| not_started(w.job.state))
        .map(|w| {
            let code = serde_json::to_value(&w.reason)
                .ok()
                .and_then(|v| v.get("code").and_then(|c| c.as_str().map(str::to_owned)))
                .unwrap_or_default();
            (w.job, code, w.reason.to_string())
        });
    let next = plan.launches.iter().filter_map(|l| {
        let job = summaries.iter().find(|s| &*s.job_id == l.job_id)?;
        Some((
            job,
            "launch_next_pass".to_owned(),
            "launches on the next pass".to_owned(),
        ))
    });
    let oldest_waiting = waiting
        .chain(next)
        .min_by_key(|(j, _, _)| j.submitted_at)
        .map(|(j, code, why)| OldestWaiting {
            job_id: j.job_id.to_string(),
            payer_id: j.payer_id.to_string(),
            kind: j.kind.to_string(),
            state: j.state,
            waiting_seconds: (now - j.submitted_at).num_seconds(),
            code,
            why,
        });
    let status = Status {
        deployment: app.names.deployment.clone(),
        at: now,
        queues,
        in_flight,
        jobs_by_state: gauges.jobs_by_state,
        ended_today: gauges.ended_today,
        instances,
        paused_payers: gauges.paused_payers,
        queued: gauges.queued,
        oldest_waiting,
        spot_refused: spot_refused(&jobs),
        vcpu_quotas: QuotaStatus::of(&plan),
        cost_today_usd: gauges.cost_today_usd,
    };
    emit(output, &status)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::job::{Attempt, Fallback, JobRequest};
    use crate::sizing::Rung;

    fn rung(capacity: CapacityType) -> Rung {
        Rung {
            instance_type: "c7i.large".into(),
            subnet: "subnet-a".into(),
            capacity,
        }
    }

    fn job(id: &str, minute: u32, spot_refused: bool) -> Job {
        let at = Utc.with_ymd_and_hms(2026, 11, 22, 12, minute, 0).unwrap();
        let req = JobRequest::parse(&format!(
            r#"{{"job_id":"{id}","payer_id":"p","kind":"k","batch":"b"}}"#
        ))
        .unwrap();
        let mut job = Job::from_request(req, at);
        let (launched_on, fallbacks) = if spot_refused {
            let f = Fallback {
                rung: rung(CapacityType::Spot),
                code: "AuthFailure.ServiceLinkedRoleCreationNotPermitted".into(),
                skipped: false,
            };
            (rung(CapacityType::OnDemand), vec![f])
        } else {
            (rung(CapacityType::Spot), Vec::new())
        };
        job.push_attempt(Attempt {
            number: 1,
            rung: Some(launched_on),
            instance_id: Some(format!("i-{minute}")),
            launched_at: Some(at),
            fallbacks,
            ..Attempt::default()
        });
        job
    }

    #[test]
    fn spot_refusal_is_shown_until_a_spot_launch_succeeds() {
        let refused = spot_refused(&[job("a", 1, false), job("b", 2, true)]).expect("refused");
        assert_eq!(refused.job_id, "p/b");
        assert!(refused.fix.contains("iam:CreateServiceLinkedRole"));
        assert!(spot_refused(&[job("b", 2, true), job("c", 3, false)]).is_none());
        assert!(spot_refused(&[]).is_none());
    }
}
