//! The structured summary of one pass, printed as text or JSON. Every step of the pass
//! writes its part here; this module depends on none of them.

mod events;
mod reconcile;

pub use events::EventsReport;
pub use reconcile::{Finding, InstanceFinding, ReconcileReport};

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::job::Job;
use crate::plan::Plan;
use crate::quota::AccountQuota;

/// What ingest did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    pub received: u32,
    pub accepted: u32,
    pub duplicates: u32,
    /// Re-sent `job_id`s whose content differed from the accepted job: moved to the DLQ.
    pub conflicts: u32,
    pub rejected: u32,
    pub errors: Vec<String>,
}

/// What the launch and repair steps did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LaunchReport {
    /// (job id, instance id, instance type) of every instance now recorded as running.
    pub instances: Vec<(String, String, String)>,
    pub adopted: u32,
    /// Launches whose instance the repair found already gone: recorded, and judged by the
    /// reconciler once none of their events can still arrive.
    pub found_gone: u32,
    pub replayed: u32,
    /// RunInstances calls that launched a group of jobs' instances (more than one).
    pub groups: u32,
    /// Jobs of a group whose launch index EC2 did not launch (it launched fewer than
    /// `MaxCount`): back to waiting, no retry spent.
    pub group_shortfalls: u32,
    pub capacity_fallbacks: u32,
    pub throttled: bool,
    /// RunInstances answers that a vCPU quota is full (the rungs of that quota are left out
    /// for the rest of the pass).
    pub quota_stops: u32,
    /// Spot refused for want of its service-linked role (the spot rungs are left out).
    pub spot_refusals: u32,
    /// Rungs left out without a RunInstances call: the pass already knew the answer.
    pub rungs_skipped: u32,
    /// Planned launches left for a later pass: every rung's quota or purchase option was
    /// refused already this pass, or the payer was paused by it.
    pub launches_deferred: u32,
    /// Instance profiles refused as invalid while IAM may still propagate them (retried).
    pub profile_retries: u32,
    /// Launches refused on the payer's settings (a bad image, subnet, security group…):
    /// the job waits, the payer is paused.
    pub config_failures: u32,
    /// Launches refused as not permitted: the job waits, the payer is paused.
    pub denied: u32,
    /// Launches refused on the scheduler's own credentials: no more launches this pass.
    pub credential_failures: u32,
    pub transient: u32,
    pub conflicts: u32,
    pub marks: u32,
    /// Payers the circuit breaker paused for a refused launch.
    pub paused_payers: Vec<String>,
    pub errors: Vec<String>,
    /// Spot prices read this pass, by (instance type, AZ): one DescribeSpotPriceHistory each.
    #[serde(skip)]
    pub(in crate::scheduler) spot_prices: BTreeMap<(String, String), Result<f64, String>>,
}

impl LaunchReport {
    pub fn merge(&mut self, other: LaunchReport) {
        self.instances.extend(other.instances);
        self.adopted += other.adopted;
        self.found_gone += other.found_gone;
        self.replayed += other.replayed;
        self.groups += other.groups;
        self.group_shortfalls += other.group_shortfalls;
        self.capacity_fallbacks += other.capacity_fallbacks;
        self.throttled |= other.throttled;
        self.quota_stops += other.quota_stops;
        self.spot_refusals += other.spot_refusals;
        self.rungs_skipped += other.rungs_skipped;
        self.launches_deferred += other.launches_deferred;
        self.profile_retries += other.profile_retries;
        self.config_failures += other.config_failures;
        self.denied += other.denied;
        self.credential_failures += other.credential_failures;
        self.transient += other.transient;
        self.conflicts += other.conflicts;
        self.marks += other.marks;
        self.paused_payers.extend(other.paused_payers);
        self.errors.extend(other.errors);
        self.spot_prices.extend(other.spot_prices);
    }
}

/// One of the account's vCPU quotas as a plan used it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaUse {
    pub code: String,
    pub vcpus: u32,
    pub in_use: u32,
    pub after: u32,
}

/// Which vCPU quota a plan kept to, and where it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum QuotaStatus {
    /// No quota known: only the caps apply.
    #[default]
    None,
    /// `--vcpu-quota`: one number over every family.
    Flag { vcpus: u32 },
    /// The account's quotas, read from Service Quotas.
    Account { quotas: Vec<QuotaUse> },
    /// The account's quotas could not be read (why): only the caps apply.
    Unknown { why: String },
}

impl QuotaStatus {
    pub fn of(plan: &Plan<'_>) -> Self {
        if let Some(vcpus) = plan.vcpu_quota {
            return QuotaStatus::Flag { vcpus };
        }
        match plan.account_quotas {
            AccountQuota::NotRead => QuotaStatus::None,
            AccountQuota::Read(_) => QuotaStatus::Account {
                quotas: plan
                    .quota_use
                    .iter()
                    .map(|u| QuotaUse {
                        code: u.quota.code().to_owned(),
                        vcpus: u.limit,
                        in_use: u.in_use,
                        after: u.after,
                    })
                    .collect(),
            },
            AccountQuota::Unreadable(why) => QuotaStatus::Unknown {
                why: why.to_owned(),
            },
        }
    }
}

impl fmt::Display for QuotaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuotaStatus::None => f.write_str("none known; only the caps apply"),
            QuotaStatus::Flag { vcpus } => write!(f, "{vcpus} over every family (--vcpu-quota)"),
            QuotaStatus::Account { quotas } if quotas.is_empty() => {
                f.write_str("from the account; no launch counts against one")
            }
            QuotaStatus::Account { quotas } => {
                f.write_str("from the account: ")?;
                for (i, q) in quotas.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{} {} → {} of {}", q.code, q.in_use, q.after, q.vcpus)?;
                }
                Ok(())
            }
            QuotaStatus::Unknown { why } => {
                write!(
                    f,
                    "unknown, only the caps apply: cannot read the account's: {why}"
                )
            }
        }
    }
}

/// The plan, summarised.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlanSummary {
    pub launches: u32,
    pub waiting: u32,
    pub est_usd_per_hour: f64,
    /// Waiting jobs by reason code.
    pub reasons: BTreeMap<String, u32>,
    /// The vCPU quota the plan kept to, and where it came from.
    pub vcpu_quota: QuotaStatus,
}

/// One pass, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    pub at: DateTime<Utc>,
    pub dry_run: bool,
    /// Steps this pass did not run (`ingest`, `events`, `reconcile`, `repair`, `launch`): a
    /// dry run skips all of them, a daemon's planning pass leaves `reconcile` to its own period.
    pub skipped: Vec<&'static str>,
    pub duration_ms: u64,
    pub invalid_payers: Vec<String>,
    pub ingest: IngestReport,
    pub events: EventsReport,
    pub reconcile: ReconcileReport,
    pub plan: PlanSummary,
    pub launch: LaunchReport,
    /// Jobs by state when the pass planned.
    pub jobs_by_state: BTreeMap<String, u64>,
    /// AWS calls made during the pass, by `Service.Operation` (SDK retries included).
    pub aws_calls: BTreeMap<String, u64>,
}

impl PassReport {
    pub fn new(at: DateTime<Utc>, dry_run: bool) -> Self {
        Self {
            at,
            dry_run,
            skipped: Vec::new(),
            duration_ms: 0,
            invalid_payers: Vec::new(),
            ingest: IngestReport::default(),
            events: EventsReport::default(),
            reconcile: ReconcileReport::default(),
            plan: PlanSummary::default(),
            launch: LaunchReport::default(),
            jobs_by_state: BTreeMap::new(),
            aws_calls: BTreeMap::new(),
        }
    }

    pub fn record_plan(&mut self, plan: &Plan<'_>) {
        self.plan.launches = plan.launches.len() as u32;
        self.plan.waiting = plan.waiting.len() as u32;
        self.plan.est_usd_per_hour = plan.est_usd_per_hour;
        self.plan.vcpu_quota = QuotaStatus::of(plan);
        for w in &plan.waiting {
            let code = serde_json::to_value(&w.reason)
                .ok()
                .and_then(|v| v.get("code").and_then(|c| c.as_str().map(str::to_owned)))
                .unwrap_or_default();
            *self.plan.reasons.entry(code).or_default() += 1;
        }
    }

    /// Counts the events the reconcile read before a verdict with the pass's own.
    pub(in crate::scheduler) fn merge_reconcile_events(&mut self) {
        if let Some(more) = &self.reconcile.events {
            self.events.merge(more);
        }
    }

    pub(in crate::scheduler) fn count_states(&mut self, jobs: &[Job]) {
        for j in jobs {
            *self.jobs_by_state.entry(j.state.to_string()).or_default() += 1;
        }
    }

    fn launch_line(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.launch;
        writeln!(
            f,
            "Launch:  {} running now ({} adopted, {} replayed), {} capacity fallback(s), {} config failure(s), {} unknown outcome(s), {} conflict(s){}",
            l.instances.len(),
            l.adopted,
            l.replayed,
            l.capacity_fallbacks,
            l.config_failures,
            l.transient,
            l.conflicts,
            if l.throttled { ", throttled" } else { "" }
        )?;
        let refused = [
            (l.groups, "launch group(s), one RunInstances each"),
            (
                l.group_shortfalls,
                "group member(s) EC2 did not launch, back to waiting",
            ),
            (l.quota_stops, "quota full"),
            (l.spot_refusals, "spot refused"),
            (l.rungs_skipped, "rung(s) skipped as already refused"),
            (l.launches_deferred, "launch(es) deferred"),
            (l.profile_retries, "instance profile not usable yet"),
            (l.denied, "denied"),
            (l.credential_failures, "credentials refused"),
        ];
        let refused: Vec<String> = refused
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
        if !refused.is_empty() {
            writeln!(f, "           {}", refused.join(", "))?;
        }
        if !l.paused_payers.is_empty() {
            writeln!(
                f,
                "           paused by the circuit breaker: {}",
                l.paused_payers.join(", ")
            )?;
        }
        for (job, instance, ty) in &l.instances {
            writeln!(f, "           {job} → {instance} ({ty})")?;
        }
        Ok(())
    }

    /// Whether anything went wrong that an operator should look at.
    pub fn has_errors(&self) -> bool {
        !self.ingest.errors.is_empty()
            || !self.launch.errors.is_empty()
            || !self.reconcile.errors.is_empty()
            || !self.invalid_payers.is_empty()
    }
}

impl fmt::Display for PassReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = if self.dry_run { " (dry run)" } else { "" };
        writeln!(
            f,
            "Pass at {}{mode}, {} ms",
            self.at.format("%Y-%m-%dT%H:%M:%SZ"),
            self.duration_ms
        )?;
        let skipped = |step: &str| self.skipped.contains(&step);
        let i = &self.ingest;
        if skipped("ingest") {
            writeln!(
                f,
                "Ingest:  skipped (dry run: the intake queue was not read)"
            )?;
        } else {
            writeln!(
                f,
                "Ingest:  {} received, {} accepted, {} duplicate, {} conflicting re-send(s) and {} rejected to the DLQ",
                i.received, i.accepted, i.duplicates, i.conflicts, i.rejected
            )?;
        }
        let e = &self.events;
        if skipped("events") {
            writeln!(
                f,
                "Events:  skipped (dry run: the events queue was not read)"
            )?;
        } else {
            let ignored: u32 = e.ignored.values().sum();
            writeln!(
                f,
                "Events:  {} received, {} applied, {} duplicate, {} ignored, {} malformed, {} refused; {} succeeded, {} failed",
                e.received, e.applied, e.duplicates, ignored, e.malformed, e.refused, e.succeeded, e.failed
            )?;
            for (why, n) in &e.ignored {
                writeln!(f, "           {n:>6}  ignored: {why}")?;
            }
        }
        let r = &self.reconcile;
        if skipped("reconcile") && self.dry_run {
            writeln!(f, "Reconcile: skipped (dry run: no instance listed, nothing reaped or repaired; `mayfly reap --dry-run` shows what it would do)")?;
        } else if skipped("reconcile") {
            writeln!(f, "Reconcile: skipped (runs on its own period)")?;
        } else {
            writeln!(f, "Reconcile: {}", r.summary_line())?;
            for x in &r.findings {
                writeln!(f, "           {}", x.line())?;
            }
        }
        writeln!(
            f,
            "Plan:    {} to launch (est. ${:.4}/h), {} waiting",
            self.plan.launches, self.plan.est_usd_per_hour, self.plan.waiting
        )?;
        for (code, n) in &self.plan.reasons {
            writeln!(f, "           {n:>6}  {code}")?;
        }
        writeln!(f, "         vCPU quota: {}", self.plan.vcpu_quota)?;
        let l = &self.launch;
        if skipped("launch") {
            writeln!(
                f,
                "Launch:  skipped (dry run: nothing launched; the plan above is what a pass would launch)"
            )?;
        } else {
            self.launch_line(f)?;
        }
        let states: Vec<String> = self
            .jobs_by_state
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        writeln!(
            f,
            "Jobs:    {}",
            if states.is_empty() {
                "none".to_owned()
            } else {
                states.join(", ")
            }
        )?;
        if !self.aws_calls.is_empty() {
            let calls: Vec<String> = self
                .aws_calls
                .iter()
                .map(|(op, n)| format!("{op} {n}"))
                .collect();
            writeln!(f, "AWS:     {}", calls.join(", "))?;
        }
        for e in self
            .invalid_payers
            .iter()
            .chain(&i.errors)
            .chain(&e.errors)
            .chain(&r.errors)
            .chain(&l.errors)
        {
            writeln!(f, "error:   {e}")?;
        }
        Ok(())
    }
}
