//! A launch that got no instance: the job goes back to waiting (`queued`) with the reason,
//! and the attempt spends no retry (it had no instance: [`crate::job::Attempt::spends_retry`]).
//! Why it got none decides what else happens:
//!
//! - no rung launched (capacity, full quotas, spot refused): a later pass tries again;
//! - the instance profile not usable yet (IAM propagates a new profile within minutes):
//!   retried with a growing backoff, for [`PROFILE_PROPAGATION`] from the first refusal,
//!   then a configuration error;
//! - a configuration error or a denial (the payer's image, subnet, security group, its
//!   template, a missing grant): the circuit breaker pauses the payer with the AWS code and
//!   message, and nothing of it launches until `payers resume` or `payers apply` of a changed
//!   profile;
//! - the scheduler's own credentials refused: no launch of this pass can work; nothing is
//!   paused (no payer is to blame), and the next pass tries again.

use chrono::{DateTime, Duration, Utc};

use super::{save, transition};
use crate::aws::ec2::classify;
use crate::job::{Attempt, Job, JobState};
use crate::ports::ComputeError;
use crate::quota::QuotaPool;
use crate::scheduler::breaker::{self, Paused};
use crate::scheduler::learned::Learned;
use crate::scheduler::report::LaunchReport;
use crate::scheduler::Scheduler;

/// How long an instance profile EC2 calls invalid is retried from the first refusal, before
/// it is a configuration error: IAM's changes usually reach EC2 within seconds, sometimes
/// within a minute or two.
pub const PROFILE_PROPAGATION: Duration = Duration::minutes(5);

/// The wait before a job whose every rung was refused tries again.
const NO_RUNG_BACKOFF: Duration = Duration::seconds(60);

/// Ends the current attempt without an instance and puts the job back to waiting with
/// `reason`, not before `not_before`. Says whether it was written.
pub(super) async fn requeue(
    s: &Scheduler,
    job: &mut Job,
    reason: String,
    not_before: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    report: &mut LaunchReport,
) -> bool {
    if let Some(a) = job.current_attempt_mut() {
        a.reason = Some(reason.clone());
        a.finished_at = Some(s.moment(now));
    }
    job.bounces += 1;
    let Some(expected) = transition(job, JobState::Queued, Some(reason), now) else {
        return false;
    };
    job.not_before = not_before;
    save(s, job, expected, now, report).await
}

/// Every rung of the ladder was refused (capacity, quotas, spot): the job waits a minute.
pub(super) async fn no_rung_launched(
    s: &Scheduler,
    job: &mut Job,
    now: DateTime<Utc>,
    report: &mut LaunchReport,
) {
    let reason = job
        .current_attempt()
        .map(no_rung_reason)
        .unwrap_or_else(|| "no rung launched".to_owned());
    let not_before = s.moment(now) + NO_RUNG_BACKOFF;
    requeue(s, job, reason, Some(not_before), now, report).await;
}

/// "no instance on any of 4 rung(s): InsufficientInstanceCapacity on c7i.large/subnet/…, …"
fn no_rung_reason(a: &Attempt) -> String {
    let why: Vec<String> = a
        .fallbacks
        .iter()
        .map(|f| {
            let is_quota = matches!(classify(&f.code, ""), ComputeError::Quota { .. });
            let quota = is_quota
                .then(|| QuotaPool::of(&f.rung.instance_type, f.rung.capacity))
                .flatten()
                .map(|q| format!(" (quota {q})"))
                .unwrap_or_default();
            let skipped = if f.skipped { ", known this pass" } else { "" };
            format!("{}{quota} on {}{skipped}", f.code, f.rung)
        })
        .collect();
    format!(
        "no instance on any of {} rung(s): {}",
        a.fallbacks.len(),
        why.join("; ")
    )
}

/// The payer's settings (or a missing grant) refused the launch: the job waits with the AWS
/// code and message, and the circuit breaker pauses the payer with them.
pub(super) async fn refuse_payer(
    s: &Scheduler,
    job: &mut Job,
    reason: String,
    now: DateTime<Utc>,
    report: &mut LaunchReport,
    learned: &mut Learned,
) {
    let rung = job
        .current_attempt()
        .and_then(|a| a.rung.as_ref())
        .map(|r| format!(", rung {r}"))
        .unwrap_or_default();
    let pause = format!(
        "launch refused: {reason} (job {}, attempt {}{rung}); fix the payer's launch settings \
         and `mayfly payers apply` them, or fix the account and `mayfly payers resume {}`",
        job.job_id, job.attempt, job.payer_id
    );
    tracing::error!(job_id = %job.job_id, payer_id = %job.payer_id, %reason, "Launch refused on configuration; the job waits and the payer is paused.");
    job.profile_refused_since = None;
    requeue(s, job, reason, None, now, report).await;
    learned.payer_paused(&job.payer_id);
    match breaker::pause(s, &job.payer_id, &pause, now).await {
        Ok(Paused::Now) => report.paused_payers.push(job.payer_id.clone()),
        Ok(Paused::Already) => {}
        Err(e) => report.errors.push(e),
    }
}

/// The instance profile was refused as invalid: retried while IAM may still be propagating
/// it, for [`PROFILE_PROPAGATION`] from the first refusal (recorded on the job); after that,
/// a configuration error.
pub(super) async fn profile_not_ready(
    s: &Scheduler,
    job: &mut Job,
    code: &str,
    message: &str,
    now: DateTime<Utc>,
    report: &mut LaunchReport,
    learned: &mut Learned,
) {
    let seen = s.moment(now);
    let since = job.profile_refused_since.unwrap_or(seen);
    let waited = seen - since;
    if waited >= PROFILE_PROPAGATION {
        report.config_failures += 1;
        let reason = format!(
            "{code}: {message} (still refused {}s after the first refusal, longer than IAM \
             takes to propagate a profile)",
            waited.num_seconds()
        );
        refuse_payer(s, job, reason, now, report, learned).await;
        return;
    }
    report.profile_retries += 1;
    // A growing wait: 10 s at first, then about as long as it has been refused, at most 60 s.
    let wait = waited.clamp(Duration::seconds(10), Duration::seconds(60));
    let until = since + PROFILE_PROPAGATION;
    tracing::warn!(job_id = %job.job_id, %code, %message, retry_in_s = wait.num_seconds(), "Instance profile refused; IAM may still be propagating it.");
    job.profile_refused_since = Some(since);
    let reason = format!(
        "{code}: {message}; IAM may still be propagating the instance profile: retrying until \
         {}",
        until.format("%H:%M:%SZ")
    );
    requeue(s, job, reason, Some(seen + wait), now, report).await;
}

/// The scheduler's credentials were refused: the job waits with the reason, and no launch of
/// this pass is tried again.
pub(super) async fn credentials_refused(
    s: &Scheduler,
    job: &mut Job,
    code: &str,
    message: &str,
    now: DateTime<Utc>,
    report: &mut LaunchReport,
    learned: &mut Learned,
) {
    tracing::error!(job_id = %job.job_id, %code, %message, "EC2 refused the scheduler's credentials; no more launches this pass.");
    learned.credentials_refused = true;
    report.credential_failures += 1;
    report.errors.push(format!(
        "RunInstances refused the scheduler's credentials ({code}: {message}); jobs wait until \
         they are renewed"
    ));
    requeue(s, job, format!("{code}: {message}"), None, now, report).await;
}
