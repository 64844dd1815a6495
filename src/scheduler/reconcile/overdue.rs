//! Timed out: a `running` job whose live instance missed a deadline — no `started` within the
//! payer's boot timeout, no heartbeat within the heartbeat timeout, or running past its
//! maximum runtime (plus one heartbeat timeout of slack, as the instance enforces the limit
//! itself). Its instance is terminated at once (it bills), and the deadline is recorded as the
//! attempt's cause; the attempt ends as any gone instance's does ([`super::lost`]), once none
//! of its events can still arrive: a missing heartbeat may be one held in flight, and a
//! `finished` sent just before the stop still settles the job.

use chrono::{DateTime, Utc};

use super::{finding, secs, Reconciler, Reread};
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
                self.stop_overdue(job, cause, kind, why, i).await;
            }
        }
    }

    /// Terminates an overdue instance and records the deadline it missed (its cause) and the
    /// moment it was stopped (its `gone_at` and the end of its bill), in one conditional
    /// write on the job as the ledger has it now.
    async fn stop_overdue(
        &mut self,
        job: &mut Job,
        cause: FailureCause,
        kind: Finding,
        why: String,
        inst: &ManagedInstance,
    ) {
        let key = (job.job_id.clone(), job.attempt);
        let note = |r: &mut Self, action: String| {
            r.report.findings.push(finding(
                Some(inst),
                Some((&key.0, key.1)),
                kind,
                why.clone(),
                action,
            ));
        };
        if self.opts.dry_run {
            note(
                self,
                format!(
                    "would terminate {} and end the attempt ({cause}) once none of its events \
                     can still arrive",
                    inst.instance_id
                ),
            );
            return;
        }
        let fresh = match self.reread(job).await {
            Reread::Fresh(j) => j,
            Reread::Moved(j) => {
                *job = j;
                note(self, "none: the job moved on meanwhile".into());
                return;
            }
            Reread::Gone => return,
        };
        let mut action = self.terminate(inst).await;
        if !action.starts_with("terminated") {
            note(self, action);
            return;
        }
        tracing::warn!(job_id = %key.0, attempt = key.1, instance_id = %inst.instance_id, cause = %cause, evidence = %why, "Stopped an overdue instance; its attempt ends once none of its events can still arrive.");
        match kind {
            Finding::BootTimeout => self.report.boot_timeouts += 1,
            Finding::HeartbeatTimeout => self.report.heartbeat_timeouts += 1,
            Finding::MaxRuntime => self.report.max_runtime += 1,
            _ => {}
        }
        let mut updated = fresh.clone();
        let now = self.s.moment(self.now);
        if let Some(a) = updated.current_attempt_mut() {
            a.reason = Some(cause.to_string());
            a.cause = Some(cause);
            a.gone_at.get_or_insert(now);
            a.ended_at = Some(now);
        }
        match self.save(&mut updated, fresh.version).await {
            Ok(()) => {
                *job = updated;
                action.push_str(&format!(
                    "; the attempt ends after {} once none of its events can still arrive",
                    secs(self.s.settings.lost_grace)
                ));
            }
            Err(e) => action.push_str(&format!("; {e}")),
        }
        note(self, action);
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
