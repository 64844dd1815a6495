//! `mayfly explain JOB`: one readable answer to "why is this job (not) running?". For a job
//! that has not launched it runs the planner on the live snapshot, as a pass would, and
//! explains the planner's reason (waiting on named lower-tier jobs, blocked by a dead one, a
//! cap, the vCPU quota, the launch budget, retry backoff, a paused payer); for a job in
//! flight it names the instance, since when, and its cost so far; for a finished one, how it
//! ended (a dead job's last exit code and output tail) and what it cost.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::aws::ec2::classify;
use crate::aws::permissions::SPOT_ROLE_FIX;
use crate::catalog::Catalog;
use crate::cost_report::{job_lines, AttemptLine};
use crate::job::{Attempt, Job, JobState};
use crate::plan::{self, Reason, Snapshot};
use crate::ports::ComputeError;
use crate::ports::{ConfigStore, Ledger, QuotaReader};
use crate::profile::GlobalCaps;
use crate::quota::{AccountQuota, QuotaSource};
use crate::scheduler::{load_payers, load_snapshot, read_quotas, QuotaRead};
use crate::summary::JobSummary;

/// What the planner needs besides the tables: the deployment's limits and the time.
#[derive(Clone, Copy)]
pub struct ExplainContext<'a> {
    pub catalog: &'a Catalog,
    pub caps: GlobalCaps,
    /// `--vcpu-quota`: one quota over every family; when set, the account's are not read.
    pub vcpu_quota: Option<u32>,
    /// Where the account's vCPU quotas are read from (`None`: they are not).
    pub quotas: Option<&'a dyn QuotaReader>,
    pub launch_budget: u32,
    pub now: DateTime<Utc>,
}

impl fmt::Debug for ExplainContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExplainContext")
            .field("caps", &self.caps)
            .field("vcpu_quota", &self.vcpu_quota)
            .field("reads_quotas", &self.quotas.is_some())
            .field("launch_budget", &self.launch_budget)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// Why `explain` has no answer: the id names no job, or more than one.
pub type ExplainError = crate::job_lookup::LookupError;

/// The situation a job is in, as a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Situation {
    Succeeded,
    Dead,
    Cancelled,
    Running,
    Launching,
    /// Nothing stops it: the next pass launches it.
    WillLaunch,
    WaitingOnTiers,
    BlockedByDead,
    PayerPaused,
    PayerDisabled,
    Backoff,
    /// A payer or global cap on instances or vCPUs.
    Cap,
    /// The account's EC2 vCPU quota.
    Quota,
    LaunchBudget,
    AwaitingRetry,
    /// Its payer, kind or compute requirement is not known.
    Misconfigured,
}

/// The answer `mayfly explain` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub job_id: String,
    pub payer_id: String,
    pub kind: String,
    pub batch: String,
    pub state: JobState,
    pub attempt: u32,
    pub situation: Situation,
    /// One sentence.
    pub summary: String,
    pub details: Vec<String>,
    /// The planner's reason, as `mayfly plan --output json` prints it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_reason: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tail: Option<String>,
    /// Cost of every attempt so far (still-running ones to now).
    pub cost_usd: f64,
    pub attempts: Vec<AttemptLine>,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn ago(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let s = (to - from).num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Reads the tables and explains `job_id` at `ctx.now`.
pub async fn explain(
    config: &dyn ConfigStore,
    ledger: &dyn Ledger,
    ctx: &ExplainContext<'_>,
    job_id: &str,
) -> Result<Explanation, ExplainError> {
    let job = crate::job_lookup::find_job(config, ledger, job_id).await?;
    let lines = job_lines(&job, ctx.catalog, ctx.now);
    let mut out = base(&job, lines);
    if job.state.is_terminal() || job.state.is_in_flight() {
        finished_or_in_flight(&job, &mut out, ctx.now);
        launch_history(&job, &mut out);
        return Ok(out);
    }
    let payers = load_payers(config, ctx.catalog, ctx.caps).await?;
    let mut jobs = load_snapshot(ledger).await?;
    // The consistent read wins over an index that may lag it.
    jobs.retain(|j| j.job_id != job.job_id);
    jobs.push(job.clone());
    let summaries = JobSummary::of_all(&jobs);
    let quotas = match (ctx.quotas, ctx.vcpu_quota) {
        (Some(reader), None) => Some(read_quotas(reader, &payers.valid, ctx.catalog).await),
        _ => None,
    };
    let snapshot = Snapshot {
        jobs: &summaries,
        payers: &payers.valid,
        catalog: ctx.catalog,
        caps: ctx.caps,
        vcpu_quota: ctx.vcpu_quota,
        account_quotas: quotas
            .as_ref()
            .map_or_else(Default::default, QuotaRead::view),
        launch_budget: ctx.launch_budget,
        now: ctx.now,
    };
    let plan = plan::plan(&snapshot);
    if let Some(l) = plan.launches.iter().find(|l| l.job_id == job.job_id) {
        let first = &l.ladder[0];
        out.situation = Situation::WillLaunch;
        out.summary = format!(
            "Nothing holds it back: the next pass launches attempt {} on {} ({}), est. ${:.4}/h on demand.",
            l.attempt, first.instance_type, first.capacity, l.est_usd_per_hour
        );
        out.details.push(format!(
            "{} rung(s) on its ladder; {} vCPUs reserved against the caps",
            l.ladder.len(),
            l.vcpus
        ));
    } else if let Some(w) = plan.waiting.iter().find(|w| *w.job.job_id == job.job_id) {
        out.plan_reason = serde_json::to_value(&w.reason).ok();
        waiting(&job, &jobs, &w.reason, &mut out, ctx.now);
        quota_detail(&w.reason, snapshot.account_quotas, &mut out);
    }
    if let Some(a) = job.attempts.last().filter(|a| a.reason.is_some()) {
        out.details.push(format!(
            "last attempt ({}) ended: {}",
            a.number,
            a.reason.as_deref().unwrap_or_default()
        ));
    }
    launch_history(&job, &mut out);
    Ok(out)
}

/// The rungs the last attempt did not launch on and why (with the fix when spot was
/// refused), and the launches that got no instance: none of those spent a retry.
fn launch_history(job: &Job, out: &mut Explanation) {
    if let Some(a) = job.attempts.last().filter(|a| !a.fallbacks.is_empty()) {
        out.details.push(fallbacks(a));
        let spot = a
            .fallbacks
            .iter()
            .find(|f| matches!(classify(&f.code, ""), ComputeError::SpotUnavailable { .. }));
        if let Some(f) = spot {
            out.details.push(format!(
                "spot was skipped: {}; to fix it, {SPOT_ROLE_FIX}",
                f.code
            ));
        }
    }
    if job.bounces > 0 {
        let kept: Vec<String> = job
            .attempts
            .iter()
            .filter(|a| a.bounced())
            .map(|a| {
                format!(
                    "attempt {}: {}",
                    a.number,
                    a.reason.as_deref().unwrap_or("no reason recorded")
                )
            })
            .collect();
        let dropped = (job.bounces as usize).saturating_sub(kept.len());
        let earlier = if dropped > 0 {
            format!(" ({dropped} earlier not kept)")
        } else {
            String::new()
        };
        out.details.push(format!(
            "{} launch(es) got no instance and spent no retry{earlier}; {} attempt(s) with an \
             instance count against the retry policy:\n{}",
            job.bounces,
            job.attempts_in_budget(),
            kept.join("\n")
        ));
    }
}

/// "attempt 3 did not launch on: c7i.large/subnet-a/spot: InsufficientInstanceCapacity; …"
fn fallbacks(a: &Attempt) -> String {
    let rungs: Vec<String> = a
        .fallbacks
        .iter()
        .map(|f| {
            let known = if f.skipped {
                " (known this pass, not asked)"
            } else {
                ""
            };
            format!("{}: {}{known}", f.rung, f.code)
        })
        .collect();
    format!(
        "attempt {} did not launch on:\n{}",
        a.number,
        rungs.join("\n")
    )
}

/// Where the vCPU quota of the explanation comes from: the flag, the account's quota (and
/// how to raise it), or why the account's quotas are unknown.
fn quota_detail(reason: &Reason<'_>, account: AccountQuota<'_>, out: &mut Explanation) {
    match reason {
        Reason::VcpuQuota {
            source: QuotaSource::Flag,
            quota,
            ..
        } => out.details.push(format!(
            "the quota ({quota} vCPUs over every family) is --vcpu-quota (MAYFLY_VCPU_QUOTA); without it the account's quotas are read"
        )),
        Reason::VcpuQuota {
            source: QuotaSource::Account(pool),
            quota,
            ..
        } => out.details.push(format!(
            "the quota ({quota} vCPUs) is the account's {}, \"{}\", read from Service Quotas; every rung of the ladder counts against a full quota. Raise it with `aws service-quotas request-service-quota-increase --service-code ec2 --quota-code {} --desired-value N`",
            pool.code(),
            pool.name(),
            pool.code()
        )),
        _ => {
            if let AccountQuota::Unreadable(why) = account {
                out.details.push(format!(
                    "the account's vCPU quotas are unknown (cannot read them: {why}); only the caps apply"
                ));
            }
        }
    }
}

fn base(job: &Job, attempts: Vec<AttemptLine>) -> Explanation {
    Explanation {
        job_id: job.job_id.clone(),
        payer_id: job.payer_id.clone(),
        kind: job.kind.clone(),
        batch: job.batch.clone(),
        state: job.state,
        attempt: job.attempt,
        situation: Situation::AwaitingRetry,
        summary: String::new(),
        details: Vec::new(),
        plan_reason: None,
        last_exit_code: job.current_attempt().and_then(|a| a.exit_code),
        output_tail: job.current_attempt().and_then(|a| a.output_tail.clone()),
        cost_usd: attempts.iter().map(|l| l.cost.total_usd()).sum(),
        attempts,
    }
}

fn finished_or_in_flight(job: &Job, out: &mut Explanation, now: DateTime<Utc>) {
    let reason = job.reason.as_deref().unwrap_or("no reason recorded");
    let cost = out.cost_usd;
    let n = job.attempts.len();
    match job.state {
        JobState::Succeeded => {
            out.situation = Situation::Succeeded;
            let when = job
                .current_attempt()
                .and_then(|a| a.finished_at)
                .map(|t| format!(" at {}", stamp(t)))
                .unwrap_or_default();
            out.summary = format!(
                "Succeeded{when} on attempt {}; it cost ${cost:.4} over {n} attempt(s).",
                job.attempt
            );
        }
        JobState::Dead => {
            out.situation = Situation::Dead;
            let code = out
                .last_exit_code
                .map(|c| format!("; last exit code {c}"))
                .unwrap_or_default();
            out.summary = format!(
                "Dead after {n} attempt(s): {reason}{code}. `mayfly jobs retry {}` queues it again.",
                job.job_id
            );
            if let Some(tail) = &out.output_tail {
                out.details.push(format!("output tail:\n{tail}"));
            }
            out.details.push(format!("it cost ${cost:.4}"));
        }
        JobState::Cancelled => {
            out.situation = Situation::Cancelled;
            out.summary = format!("Cancelled: {reason}; it cost ${cost:.4}.");
        }
        _ => in_flight(job, out, now),
    }
}

fn in_flight(job: &Job, out: &mut Explanation, now: DateTime<Utc>) {
    let a = job.current_attempt();
    let current = out.attempts.iter().find(|l| l.attempt == job.attempt);
    match (a.and_then(|a| a.instance_id.as_deref()), current) {
        (Some(iid), Some(l)) => {
            out.situation = Situation::Running;
            let az = l
                .availability_zone
                .as_deref()
                .map(|z| format!(", {z}"))
                .unwrap_or_default();
            out.summary = format!(
                "Running attempt {} on {iid} ({}, {}{az}) since {} ({} ago), at ${:.4}/h: ${:.4} so far.",
                job.attempt,
                l.instance_type,
                l.capacity,
                stamp(l.launched_at),
                ago(l.launched_at, now),
                l.usd_per_hour,
                l.cost.total_usd()
            );
            let started = a.and_then(|a| a.started_at);
            out.details.push(match started {
                Some(t) => format!("the job started at {}", stamp(t)),
                None => "the instance has not reported `started` yet (booting)".to_owned(),
            });
            if let Some(hb) = a.and_then(|a| a.last_heartbeat_at) {
                out.details
                    .push(format!("last heartbeat {} ago", ago(hb, now)));
            }
            out.details.push(format!("price: {}", l.price_source));
        }
        _ => {
            out.situation = Situation::Launching;
            let rung = a
                .and_then(|a| a.rung.as_ref())
                .map(|r| format!(" on {r}"))
                .unwrap_or_default();
            out.summary = format!(
                "Launching attempt {}{rung}: RunInstances is being made or recorded; a pass repairs an interrupted launch.",
                job.attempt
            );
        }
    }
}

/// The state of each named lower-tier job, so the reader sees what they wait on.
fn blockers(jobs: &[Job], ids: &[&str]) -> Vec<String> {
    ids.iter()
        .filter_map(|id| jobs.iter().find(|j| j.job_id == *id))
        .map(|j| match &j.reason {
            Some(r) => format!("{} is {} ({r})", j.job_id, j.state),
            None => format!("{} is {}", j.job_id, j.state),
        })
        .collect()
}

fn waiting(
    job: &Job,
    jobs: &[Job],
    reason: &Reason<'_>,
    out: &mut Explanation,
    now: DateTime<Utc>,
) {
    out.summary = format!("Not launching: {reason}.");
    out.situation = match reason {
        Reason::WaitingOnTier { blocking, .. } => {
            out.details.extend(blockers(jobs, blocking.as_slice()));
            Situation::WaitingOnTiers
        }
        Reason::BlockedByDead { blocking, .. } => {
            out.details.extend(blockers(jobs, blocking.as_slice()));
            if let Some(first) = blocking.as_slice().first() {
                out.details.push(format!(
                    "`mayfly jobs retry {first}` runs it again; this job follows once it succeeds"
                ));
            }
            Situation::BlockedByDead
        }
        Reason::PayerPaused { .. } => {
            out.details.push(format!(
                "`mayfly payers resume {}` lets its jobs launch again (a pause the circuit \
                 breaker made also lifts when a changed profile is applied)",
                job.payer_id
            ));
            Situation::PayerPaused
        }
        Reason::PayerDisabled => Situation::PayerDisabled,
        Reason::Backoff { until } => {
            out.summary = format!(
                "Not launching: retry backoff until {} ({} from now), then attempt {}.",
                stamp(*until),
                ago(now, *until),
                job.attempt + 1
            );
            Situation::Backoff
        }
        Reason::PayerInstanceCap { .. }
        | Reason::PayerVcpuCap { .. }
        | Reason::GlobalInstanceCap { .. }
        | Reason::GlobalVcpuCap { .. } => Situation::Cap,
        Reason::VcpuQuota { .. } => Situation::Quota,
        Reason::LaunchBudget { .. } => Situation::LaunchBudget,
        Reason::AwaitingRetry => Situation::AwaitingRetry,
        Reason::UnknownPayer | Reason::UnknownKind | Reason::NoInstanceType { .. } => {
            Situation::Misconfigured
        }
        Reason::Terminal { .. } | Reason::InFlight { .. } => out.situation,
    };
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} ({} {} batch {}): {}, attempt {}",
            self.job_id, self.payer_id, self.kind, self.batch, self.state, self.attempt
        )?;
        writeln!(f, "{}", self.summary)?;
        for d in &self.details {
            for (i, line) in d.lines().enumerate() {
                let lead = if i == 0 { "  - " } else { "    " };
                writeln!(f, "{lead}{line}")?;
            }
        }
        Ok(())
    }
}
