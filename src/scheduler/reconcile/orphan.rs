//! Orphaned: a live instance no in-flight job owns — its job is unknown, terminal, on another
//! attempt or not in flight (re-read with a consistent read before judging). An orphan is
//! marked with the `mayfly:orphaned-at` tag, and terminated by a pass at least
//! `orphan_grace` later, after a second consistent read. Instances tagged `mayfly:protect`
//! are never terminated.

use chrono::{DateTime, Utc};

use super::{finding, secs, Reconciler, ORPHANED_AT};
use crate::job::JobState;
use crate::names::tags;
use crate::ports::ManagedInstance;
use crate::scheduler::report::Finding;

impl Reconciler<'_> {
    /// Judges a live instance no in-flight job of the snapshot owns.
    pub(super) async fn orphan(&mut self, inst: &ManagedInstance) {
        let owner = self
            .job_of(inst)
            .map(|(j, a)| (j.to_owned(), a.unwrap_or(0)));
        let job_ref = owner.as_ref().map(|(j, a)| (j.as_str(), *a));
        if inst.tag(tags::PROTECT).is_some() {
            self.report.findings.push(finding(
                Some(inst),
                job_ref,
                Finding::Protected,
                format!("tagged {}", tags::PROTECT),
                "none: protected instances are never terminated",
            ));
            return;
        }
        let why = match self.orphan_reason(inst).await {
            Ok(Some(why)) => why,
            Ok(None) => {
                // Owned after all (the snapshot was older than the instance list).
                if inst.tag(ORPHANED_AT).is_some() && !self.opts.dry_run {
                    if let Err(e) = self
                        .s
                        .deps
                        .compute
                        .set_tag(&inst.instance_id, ORPHANED_AT, None)
                        .await
                    {
                        self.report
                            .errors
                            .push(format!("clearing {}'s orphan mark: {e}", inst.instance_id));
                    }
                }
                return;
            }
            Err(e) => {
                self.report.errors.push(e);
                return;
            }
        };
        let grace = self.s.settings.orphan_grace;
        let marked = inst
            .tag(ORPHANED_AT)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let action = match marked {
            Some(at) if self.now - at >= grace => {
                let a = self.terminate(inst).await;
                if a.starts_with("terminated") {
                    self.report.orphans_terminated += 1;
                    self.record_orphan_end(inst).await;
                }
                format!("{a} (marked {} ago)", secs(self.now - at))
            }
            Some(at) => format!(
                "marked; terminated in {} (grace {})",
                secs(at + grace - self.now),
                secs(grace)
            ),
            None if self.opts.dry_run => format!(
                "would mark it; terminated after the grace period ({})",
                secs(grace)
            ),
            None => {
                let stamp = self.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                match self
                    .s
                    .deps
                    .compute
                    .set_tag(&inst.instance_id, ORPHANED_AT, Some(&stamp))
                    .await
                {
                    Ok(()) => {
                        self.report.orphans_marked += 1;
                        format!("marked; terminated after {}", secs(grace))
                    }
                    Err(e) => {
                        let msg = format!("marking {} as an orphan: {e}", inst.instance_id);
                        self.report.errors.push(msg.clone());
                        msg
                    }
                }
            }
        };
        self.report
            .findings
            .push(finding(Some(inst), job_ref, Finding::Orphan, why, action));
    }

    /// Ends the bill of the attempt an orphan belonged to at its termination, so its orphan
    /// time counts as that attempt's overhead. One conditional write, on the orphan path only;
    /// an instance no recorded attempt names is not attributed.
    async fn record_orphan_end(&mut self, inst: &ManagedInstance) {
        let Some((job_id, _)) = self.job_of(inst) else {
            return;
        };
        let job_id = job_id.to_owned();
        let Ok(Some(job)) = self.s.deps.ledger.get(&job_id).await else {
            return;
        };
        let mut updated = job.clone();
        let Some(a) = updated.attempts.iter_mut().find(|a| {
            a.instance_id.as_deref() == Some(inst.instance_id.as_str()) && a.ended_at.is_none()
        }) else {
            return;
        };
        a.ended_at = Some(self.now);
        // A lost condition leaves the attempt billed to its last recorded end.
        let _ = self.save(&mut updated, job.version).await;
    }

    /// Why no job owns this instance (after a consistent read of its job), or `None` if one
    /// does.
    async fn orphan_reason(&self, inst: &ManagedInstance) -> Result<Option<String>, String> {
        let Some((job_id, attempt)) = self.job_of(inst) else {
            return Ok(Some(match inst.tag(tags::GROUP) {
                Some(group) => format!(
                    "no in-flight job has launch index {} of launch group {group}",
                    inst.launch_index
                        .map_or_else(|| "?".to_owned(), |i| i.to_string())
                ),
                None => format!("no {} tag", tags::JOB_ID),
            }));
        };
        let job = match self.s.deps.ledger.get(job_id).await {
            Ok(Some(job)) => job,
            Ok(None) => return Ok(Some(format!("job {job_id} is not in the ledger"))),
            Err(e) => return Err(format!("reading job {job_id}: {e}")),
        };
        let Some(n) = attempt else {
            return Ok(Some(format!("no valid {} tag", tags::ATTEMPT)));
        };
        if job.state.is_terminal() {
            return Ok(Some(format!("job {job_id} is {}", job.state)));
        }
        if n != job.attempt {
            return Ok(Some(format!(
                "attempt {n} is over; job {job_id} is on attempt {}",
                job.attempt
            )));
        }
        let recorded = job.current_attempt().and_then(|a| a.instance_id.as_deref());
        Ok(match job.state {
            JobState::Launching => None,
            JobState::Running | JobState::Failed => match recorded {
                Some(id) if id == inst.instance_id => None,
                Some(id) => Some(format!(
                    "a second instance of job {job_id} attempt {n} (the ledger records {id})"
                )),
                None => None,
            },
            other => Some(format!("job {job_id} is {other}; attempt {n} is over")),
        })
    }
}
