//! Timed out: a `running` job whose live instance missed a deadline — no `started` within the
//! payer's boot timeout, no heartbeat within the heartbeat timeout, or running past its
//! maximum runtime (plus one heartbeat timeout of slack, as the instance enforces the limit
//! itself). The attempt fails, its instance is terminated, and the retry policy applies.

use chrono::{DateTime, Utc};

use super::{finding, secs, Reconciler};
use crate::job::Job;
use crate::ports::ManagedInstance;
use crate::profile::Payer;
use crate::retry::FailureCause;
use crate::scheduler::report::Finding;

impl Reconciler<'_> {
    /// A `running` job whose instance is live: healthy, or past a deadline.
    pub(super) async fn live(&mut self, job: &mut Job, i: &ManagedInstance) {
        let verdict = self
            .payer(&job.payer_id)
            .and_then(|p| overdue(job, p, i, self.now));
        match verdict {
            None => {
                self.report.healthy += 1;
                if self.opts.list_healthy {
                    self.report.findings.push(finding(
                        Some(i),
                        Some((&job.job_id, job.attempt)),
                        Finding::Healthy,
                        "runs its job's current attempt",
                        "none",
                    ));
                }
            }
            Some((cause, why)) => {
                let kind = match cause {
                    FailureCause::BootTimeout => Finding::BootTimeout,
                    FailureCause::MaxRuntime => Finding::MaxRuntime,
                    _ => Finding::HeartbeatTimeout,
                };
                self.fail_attempt(job, cause, kind, why, Some(i)).await;
            }
        }
    }
}

/// A deadline the attempt has missed, if any.
fn overdue(
    job: &Job,
    payer: &Payer,
    inst: &ManagedInstance,
    now: DateTime<Utc>,
) -> Option<(FailureCause, String)> {
    let a = job.current_attempt()?;
    let t = &payer.profile.timeouts;
    let dur = |d: crate::duration::Duration| chrono::Duration::seconds(d.as_secs() as i64);
    match a.started_at {
        None => {
            let launched = a.launched_at.or(inst.launched_at)?;
            (now - launched > dur(t.boot)).then(|| {
                (
                    FailureCause::BootTimeout,
                    format!(
                        "no `started` event {} after launch (boot timeout {})",
                        secs(now - launched),
                        t.boot
                    ),
                )
            })
        }
        Some(started) => {
            let max = payer
                .kind(&job.kind)
                .map_or(t.max_runtime, |k| payer.max_runtime(k));
            if now - started > dur(max) + dur(t.heartbeat) {
                return Some((
                    FailureCause::MaxRuntime,
                    format!(
                        "running for {} (maximum runtime {max})",
                        secs(now - started)
                    ),
                ));
            }
            let last = a.last_heartbeat_at.unwrap_or(started);
            (now - last > dur(t.heartbeat)).then(|| {
                (
                    FailureCause::HeartbeatLost,
                    format!(
                        "last heartbeat {} ago (heartbeat timeout {})",
                        secs(now - last),
                        t.heartbeat
                    ),
                )
            })
        }
    }
}
