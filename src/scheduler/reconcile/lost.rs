//! Lost: a `running` job whose instance is gone (terminated, or absent) without a `finished`
//! event. It is first recorded (`gone_at`); a pass at least `lost_grace` later judges the
//! attempt lost — a spot interruption if a notice came, otherwise a lost instance — and the
//! retry policy applies. Only a pass that drained the events queue may judge, so a
//! `finished` event still in flight is never mistaken for a loss.

use super::{finding, secs, Reconciler};
use crate::job::Job;
use crate::ports::{InstanceState, ManagedInstance};
use crate::retry::FailureCause;
use crate::scheduler::report::Finding;

impl Reconciler<'_> {
    /// A `running` job whose instance `iid` is not live (`inst` is `None` when EC2 no longer
    /// lists it).
    pub(super) async fn gone(&mut self, job: &mut Job, iid: &str, inst: Option<&ManagedInstance>) {
        let Some(a) = job.current_attempt() else {
            return;
        };
        let key = (job.job_id.clone(), job.attempt);
        let gone_at = a.gone_at;
        let interrupted = a
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("spot interruption"));
        let how = inst.map_or("not found", |i| match i.state {
            InstanceState::ShuttingDown => "shutting down",
            _ => "terminated",
        });
        if !self.opts.events_drained {
            self.report.findings.push(finding(
                inst,
                Some((&key.0, key.1)),
                Finding::Gone,
                format!("instance {iid} is {how} without a `finished` event"),
                "none yet: the events queue was not drained this pass",
            ));
            return;
        }
        match gone_at {
            Some(first) if self.now - first >= self.s.settings.lost_grace => {
                let cause = if interrupted {
                    FailureCause::SpotInterruption
                } else {
                    FailureCause::InstanceLost
                };
                let why = format!(
                    "instance {iid} is {how}, first seen gone {} ago, and sent no `finished` event",
                    secs(self.now - first)
                );
                self.fail_attempt(job, cause, Finding::Lost, why, inst)
                    .await;
            }
            Some(first) => self.report.findings.push(finding(
                inst,
                Some((&key.0, key.1)),
                Finding::Gone,
                format!("instance {iid} is {how} without a `finished` event"),
                format!(
                    "none yet: judged lost {} after it was first seen gone",
                    secs(first + self.s.settings.lost_grace - self.now)
                ),
            )),
            None => {
                let action = if self.opts.dry_run {
                    "would record it as gone; judged lost after the grace period".to_owned()
                } else {
                    let mut updated = job.clone();
                    if let Some(a) = updated.current_attempt_mut() {
                        a.gone_at = Some(self.now);
                    }
                    match self.save(&mut updated, job.version).await {
                        Ok(()) => {
                            *job = updated;
                            format!(
                                "recorded as gone; judged lost after {}",
                                secs(self.s.settings.lost_grace)
                            )
                        }
                        Err(e) => e,
                    }
                };
                self.report.findings.push(finding(
                    inst,
                    Some((&key.0, key.1)),
                    Finding::Gone,
                    format!("instance {iid} is {how} without a `finished` event"),
                    action,
                ));
            }
        }
    }
}
