//! The retry decision on an attempt just recorded as failed, shared by the steps that end
//! attempts: applying a `finished` event with a non-zero exit, and reconciling.

use chrono::{DateTime, Utc};

use crate::job::{Job, JobState};
use crate::profile::Payer;
use crate::retry::{self, Decision, FailureCause};

/// The retry decision for a job just marked failed, applied in memory.
pub(crate) fn decide_failed(
    job: &mut Job,
    payer: Option<&Payer>,
    cause: &FailureCause,
    now: DateTime<Utc>,
) {
    let policy = payer
        .and_then(|p| p.kind(&job.kind))
        .map(|k| k.retry.clone())
        .unwrap_or_default();
    match retry::decide(&policy, &job.job_id, job.attempts_in_budget(), cause, now) {
        Decision::Retry { not_before, reason } => {
            if job.transition(JobState::Queued, Some(reason), now).is_ok() {
                job.not_before = Some(not_before);
            }
        }
        Decision::Dead { reason } => {
            let _ = job.transition(JobState::Dead, Some(reason), now);
        }
    }
}
