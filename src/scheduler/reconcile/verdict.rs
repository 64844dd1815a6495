//! Ending an attempt the reconciler judged, once none of its events can still arrive (see
//! [`super::lost`]): re-read the job, record the failure (with EC2's `StateReason` when it
//! gave one), apply the retry policy and feed the payer's circuit breaker (or pause the payer
//! at once when EC2 could not start the instance as configured); and `failed` jobs whose
//! retry decision a stopped pass never recorded.

use std::collections::{HashMap, HashSet};

use super::{finding, Reconciler, Reread};
use crate::job::{Job, JobState};
use crate::ports::ManagedInstance;
use crate::retry::FailureCause;
use crate::scheduler::breaker::{self, Paused};
use crate::scheduler::policy::decide_failed;
use crate::scheduler::report::Finding;
use crate::state_reason::StateReason;

impl Reconciler<'_> {
    /// Ends the job's current attempt with `cause`: re-reads the job, records the failure
    /// (conditional write) with `ec2_says`, the instance's `StateReason`, terminates the
    /// instance, applies the retry policy, and feeds the payer's circuit breaker.
    pub(super) async fn fail_attempt(
        &mut self,
        job: &mut Job,
        cause: FailureCause,
        kind: Finding,
        why: String,
        inst: Option<&ManagedInstance>,
        ec2_says: Option<StateReason>,
    ) {
        let key = (job.job_id.clone(), job.attempt);
        let live = inst.filter(|i| i.state.is_live());
        let report = |r: &mut Self, action: String| {
            r.report.findings.push(finding(
                inst,
                Some((&key.0, key.1)),
                kind,
                why.clone(),
                action,
            ));
        };
        if self.opts.dry_run {
            let t = match live {
                Some(i) => format!("would terminate {} and ", i.instance_id),
                None => "would ".to_owned(),
            };
            report(self, format!("{t}apply the retry policy ({cause})"));
            return;
        }
        // Act only on what the ledger says now.
        let fresh = match self.reread(job).await {
            Reread::Fresh(j) => j,
            Reread::Moved(j) => {
                *job = j;
                report(self, "none: the job moved on meanwhile".into());
                return;
            }
            Reread::Gone => return,
        };
        let mut updated = fresh.clone();
        let never_started = updated
            .current_attempt()
            .is_some_and(crate::job::Attempt::never_started);
        let now = self.s.moment(self.now);
        if let Some(a) = updated.current_attempt_mut() {
            if let Some(r) = ec2_says {
                a.state_reason = Some(r);
            }
            // EC2's own word on why the instance ended is part of the reason, unless the
            // cause is made of it already.
            a.reason = Some(match &a.state_reason {
                Some(r) if !cause.is_launch_failure() => format!("{cause} (EC2: {r})"),
                _ => cause.to_string(),
            });
            a.cause = Some(cause.clone());
            // The end of the attempt's bill: now for an instance terminated below, else when
            // the reconciler stopped it or first saw it gone; never before its launch.
            let end = match live {
                Some(_) => now,
                None => a.ended_at.or(a.gone_at).unwrap_or(now),
            };
            a.ended_at = Some(a.launched_at.map_or(end, |l| l.max(end)));
        }
        let expected = updated.version;
        if updated
            .transition(JobState::Failed, Some(cause.to_string()), self.now)
            .is_err()
        {
            return;
        }
        if let Err(e) = self.save(&mut updated, expected).await {
            *job = fresh;
            report(self, e);
            return;
        }
        *self
            .report
            .verdicts
            .entry(cause.label().to_owned())
            .or_default() += 1;
        // A deadline's verdict was counted when the reconciler stopped the instance.
        if matches!(
            cause,
            FailureCause::InstanceLost | FailureCause::SpotInterruption
        ) {
            self.report.lost += 1;
        }
        let mut action = match live {
            Some(i) => self.terminate(i).await,
            None => "nothing to terminate".to_owned(),
        };
        let boot_failure = matches!(cause, FailureCause::BootTimeout)
            || (matches!(cause, FailureCause::InstanceLost) && never_started);
        if boot_failure {
            self.breaker(&updated).await;
        }
        if let FailureCause::LaunchRefused { .. } = &cause {
            let reason = format!(
                "launch refused: {cause} (job {} attempt {}); fix the payer's launch settings \
                 and `mayfly payers apply` them, or fix the account and `mayfly payers resume {}`",
                updated.job_id, updated.attempt, updated.payer_id
            );
            self.pause(&updated.payer_id, &reason).await;
        }
        action.push_str("; ");
        action.push_str(&self.apply_policy(&mut updated, &cause).await);
        *job = updated;
        report(self, action);
    }

    /// Applies the retry policy to a job just recorded as failed; says what it decided.
    async fn apply_policy(&mut self, job: &mut Job, cause: &FailureCause) -> String {
        let payer = self.payer(&job.payer_id).cloned();
        let expected = job.version;
        let before = job.clone();
        decide_failed(job, payer.as_ref(), cause, self.now);
        match self.save(job, expected).await {
            Ok(()) => match job.state {
                JobState::Queued => {
                    self.report.requeued += 1;
                    *self
                        .report
                        .retries
                        .entry(cause.label().to_owned())
                        .or_default() += 1;
                    let after = job
                        .not_before
                        .map(|t| format!(" not before {}", t.format("%H:%M:%S")))
                        .unwrap_or_default();
                    format!("job queued for attempt {}{after}", job.attempt + 1)
                }
                JobState::Dead => {
                    self.report.dead += 1;
                    format!(
                        "job dead: {}",
                        job.reason.as_deref().unwrap_or("no more attempts")
                    )
                }
                other => format!("job {other}"),
            },
            Err(e) => {
                *job = before;
                e
            }
        }
    }

    /// One more boot failure for the job's payer; pauses it at the profile's threshold.
    async fn breaker(&mut self, job: &Job) {
        let Some(payer) = self.payer(&job.payer_id) else {
            return;
        };
        let threshold = payer.profile.circuit_breaker.boot_failures;
        let config = &self.s.deps.config;
        let count = match config.add_boot_failure(&job.payer_id).await {
            Ok(c) => c,
            Err(e) => {
                self.report
                    .errors
                    .push(format!("counting a boot failure of {}: {e}", job.payer_id));
                return;
            }
        };
        if threshold == 0 || count < threshold {
            return;
        }
        let reason = format!(
            "circuit breaker: {count} consecutive boot failures (last: job {} attempt {}); \
             fix the launch settings, then `mayfly payers resume {}`",
            job.job_id, job.attempt, job.payer_id
        );
        self.pause(&job.payer_id, &reason).await;
    }

    /// Pauses a payer with `reason` unless it is paused already (an operator's reason stays).
    async fn pause(&mut self, payer_id: &str, reason: &str) {
        match breaker::pause(self.s, payer_id, reason, self.now).await {
            Ok(Paused::Now) => self.report.paused_payers.push(payer_id.to_owned()),
            Ok(Paused::Already) => {}
            Err(e) => self.report.errors.push(e),
        }
    }

    /// A `failed` job whose retry decision was not recorded: apply it now.
    pub(super) async fn failed(
        &mut self,
        job: &mut Job,
        by_id: &HashMap<&str, &ManagedInstance>,
        owned: &mut HashSet<String>,
    ) {
        let Some(a) = job.current_attempt() else {
            return;
        };
        let cause = a.cause.clone().unwrap_or(match a.exit_code {
            Some(code) => FailureCause::ExitCode { code },
            None => FailureCause::InstanceLost,
        });
        let inst = a
            .instance_id
            .as_deref()
            .and_then(|id| by_id.get(id).copied());
        if let Some(i) = inst {
            owned.insert(i.instance_id.clone());
        }
        let key = (job.job_id.clone(), job.attempt);
        let why = format!("attempt {} failed ({cause}) and was not retried yet", key.1);
        let mut action = match inst.filter(|i| i.state.is_live()) {
            Some(i) => self.terminate(i).await + "; ",
            None => String::new(),
        };
        if self.opts.dry_run {
            action.push_str("would apply the retry policy");
        } else {
            action.push_str(&self.apply_policy(job, &cause).await);
        }
        self.report.findings.push(finding(
            inst,
            Some((&key.0, key.1)),
            Finding::Failed,
            why,
            action,
        ));
    }
}
