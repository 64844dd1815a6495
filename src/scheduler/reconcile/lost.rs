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
        let Some(first) = a.gone_at else {
            let action = self.record_gone(job).await;
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
        let (cause, kind) = match (&a.cause, a.reason.as_deref()) {
            // Stopped by the reconciler for a deadline: that is the failure.
            (Some(cause), _) => (cause.clone(), Finding::Lost),
            (None, Some(r)) if r.starts_with("spot interruption") => {
                (FailureCause::SpotInterruption, Finding::Lost)
            }
            _ => (FailureCause::InstanceLost, Finding::Lost),
        };
        let started = match a.started_at {
            Some(_) => "after it started",
            None => "before it reported `started`",
        };
        let why = format!(
            "instance {iid} is {how}, ended {started}, first seen gone {} ago; the events \
             queue was read to its end with a long poll and no event is in flight, so its \
             `finished` event was never sent",
            secs(self.now - first)
        );
        tracing::warn!(
            job_id = %key.0, attempt = key.1, instance_id = %iid, gone_at = %first,
            cause = %cause, "Judged an attempt lost: its instance ended without a finished event and none can still arrive."
        );
        self.fail_attempt(job, cause, kind, why, inst).await;
    }

    /// Records the moment the attempt's instance was first seen gone; says what was done.
    async fn record_gone(&mut self, job: &mut Job) -> String {
        if self.opts.dry_run {
            return "would record it as gone; judged lost after the grace period".to_owned();
        }
        let mut updated = job.clone();
        let now = self.now;
        if let Some(a) = updated.current_attempt_mut() {
            // Never before the launch it ends (EC2's launch time may be ahead of this clock).
            a.gone_at = Some(a.launched_at.map_or(now, |l| l.max(now)));
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
