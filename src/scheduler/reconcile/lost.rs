//! Lost: a `running` job whose instance is gone (terminated, or absent) without a `finished`
//! event. An event is evidence, and an instance's `finished` may still be on its way: sent
//! before the instance ended, it can sit on the events queue unseen by a short poll, or be
//! held in flight by a reader that died. So the attempt is first recorded as gone (`gone_at`,
//! the moment it was seen so), and ended only by a pass that finds, at least `lost_grace`
//! later, that none of its events can still arrive: the pass drained the events queue, a
//! long poll found nothing more, and no message is in flight ([`Reconciler::quiet`]). Then
//! the attempt is lost — a spot interruption if a notice came, the deadline it missed if the
//! reconciler stopped it for one, otherwise a lost instance — and the retry policy applies.
//! `docs/events.md` gives the argument why a sent `finished` is never judged lost.
//!
//! EC2's `StateReason` (read in the same DescribeInstances, recorded when the instance is
//! first seen gone) is the attempt's failure reason. For an instance that never started it
//! may say the launch, not the job, failed: no capacity after all (the retry goes to the next
//! rung) or settings EC2 could not start it with (a KMS key, the volume limit: the payer is
//! paused); neither spends a retry.

use super::{finding, secs, Reconciler};
use crate::job::{Attempt, Job};
use crate::ports::{InstanceState, ManagedInstance};
use crate::retry::FailureCause;
use crate::scheduler::report::Finding;
use crate::state_reason::{StateReason, StateReasonClass};

impl Reconciler<'_> {
    /// A `running` job whose instance `iid` is not live (`inst` is `None` when EC2 no longer
    /// lists it).
    pub(super) async fn gone(&mut self, job: &mut Job, iid: &str, inst: Option<&ManagedInstance>) {
        let Some(a) = job.current_attempt() else {
            return;
        };
        let key = (job.job_id.clone(), job.attempt);
        let how = inst.map_or("not found", |i| match i.state {
            InstanceState::ShuttingDown => "shutting down",
            _ => "terminated",
        });
        let seen = format!("instance {iid} is {how} without a `finished` event");
        let note = |r: &mut Self, action: String| {
            r.report.findings.push(finding(
                inst,
                Some((&key.0, key.1)),
                Finding::Gone,
                seen.clone(),
                action,
            ));
        };
        let ec2_says = inst
            .and_then(|i| i.state_reason.clone())
            .or_else(|| a.state_reason.clone());
        let Some(first) = a.gone_at else {
            let action = self.record_gone(job, ec2_says).await;
            note(self, action);
            return;
        };
        let grace = self.s.settings.lost_grace;
        if self.now - first < grace {
            note(
                self,
                format!(
                    "none yet: judged {} after it was first seen gone",
                    secs(first + grace - self.now)
                ),
            );
            return;
        }
        if self.opts.dry_run {
            note(
                self,
                "would end the attempt once no event of it can still arrive".into(),
            );
            return;
        }
        if !self.opts.events_drained {
            note(
                self,
                "none yet: the events queue was not drained this pass".into(),
            );
            return;
        }
        if let Err(why) = self.quiet().await {
            note(self, format!("none yet: {why}"));
            return;
        }
        let cause = cause_of(a, ec2_says.as_ref());
        let started = match a.started_at {
            Some(_) => "after it started",
            None => "before it reported `started`",
        };
        let ec2 = ec2_says
            .as_ref()
            .map(|r| format!(" (EC2: {r})"))
            .unwrap_or_default();
        let why = format!(
            "instance {iid} is {how}{ec2}, ended {started}, first seen gone {} ago; the events \
             queue was read to its end with a long poll and no event is in flight, so its \
             `finished` event was never sent",
            secs(self.now - first)
        );
        tracing::warn!(
            job_id = %key.0, attempt = key.1, instance_id = %iid, gone_at = %first,
            cause = %cause, "Judged an attempt lost: its instance ended without a finished event and none can still arrive."
        );
        self.fail_attempt(job, cause, Finding::Lost, why, inst, ec2_says)
            .await;
    }

    /// Records the moment the attempt's instance was first seen gone, and EC2's reason for
    /// ending it; says what was done.
    async fn record_gone(&mut self, job: &mut Job, ec2_says: Option<StateReason>) -> String {
        if self.opts.dry_run {
            return "would record it as gone; judged lost after the grace period".to_owned();
        }
        let mut updated = job.clone();
        let now = self.now;
        if let Some(a) = updated.current_attempt_mut() {
            // Never before the launch it ends (EC2's launch time may be ahead of this clock).
            a.gone_at = Some(a.launched_at.map_or(now, |l| l.max(now)));
            if ec2_says.is_some() {
                a.state_reason = ec2_says;
            }
        }
        match self.save(&mut updated, job.version).await {
            Ok(()) => {
                *job = updated;
                format!(
                    "recorded as gone; judged lost after {} once none of its events can still \
                     arrive",
                    secs(self.s.settings.lost_grace)
                )
            }
            Err(e) => e,
        }
    }
}

/// Why an attempt whose instance is gone failed: the deadline the reconciler stopped it for;
/// else what EC2 says ended an instance that never started (the launch failed, not the job);
/// else a spot interruption (a notice came, or EC2 says so); else a lost instance.
fn cause_of(a: &Attempt, ec2_says: Option<&StateReason>) -> FailureCause {
    if let Some(cause) = &a.cause {
        return cause.clone();
    }
    let class = ec2_says.map(StateReason::class);
    match (class, ec2_says) {
        (Some(StateReasonClass::Capacity), Some(r)) if a.started_at.is_none() => {
            FailureCause::NoCapacity {
                code: r.code.clone(),
            }
        }
        (Some(StateReasonClass::Configuration), Some(r)) if a.started_at.is_none() => {
            FailureCause::LaunchRefused {
                code: r.code.clone(),
                message: r.detail().to_owned(),
            }
        }
        (Some(StateReasonClass::SpotInterruption), _) => FailureCause::SpotInterruption,
        _ if a
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("spot interruption")) =>
        {
            FailureCause::SpotInterruption
        }
        _ => FailureCause::InstanceLost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never_started() -> Attempt {
        Attempt {
            number: 1,
            instance_id: Some("i-1".into()),
            ..Attempt::default()
        }
    }

    #[test]
    fn ec2s_reason_decides_for_an_instance_that_never_started() {
        let capacity = StateReason::new("Server.InsufficientInstanceCapacity", "");
        let kms = StateReason::new(
            "Client.InvalidKMSKey.InvalidState",
            "Client.InvalidKMSKey.InvalidState: The KMS key provided is in an incorrect state",
        );
        assert_eq!(
            cause_of(&never_started(), Some(&capacity)),
            FailureCause::NoCapacity {
                code: "Server.InsufficientInstanceCapacity".into()
            }
        );
        assert_eq!(
            cause_of(&never_started(), Some(&kms)),
            FailureCause::LaunchRefused {
                code: "Client.InvalidKMSKey.InvalidState".into(),
                message: "The KMS key provided is in an incorrect state".into(),
            }
        );
        // Once the job ran, the instance's end is the job's loss.
        let started = Attempt {
            started_at: Some(chrono::Utc::now()),
            ..never_started()
        };
        assert_eq!(
            cause_of(&started, Some(&capacity)),
            FailureCause::InstanceLost
        );
        // A deadline the reconciler recorded stays the cause.
        let overdue = Attempt {
            cause: Some(FailureCause::BootTimeout),
            ..never_started()
        };
        assert_eq!(cause_of(&overdue, Some(&kms)), FailureCause::BootTimeout);
        let spot = StateReason::new("Server.SpotInstanceTermination", "");
        assert_eq!(
            cause_of(&started, Some(&spot)),
            FailureCause::SpotInterruption
        );
        assert_eq!(cause_of(&started, None), FailureCause::InstanceLost);
    }
}
