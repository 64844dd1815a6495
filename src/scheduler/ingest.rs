//! Step 1 of a pass: move job requests from the intake queue into the ledger. A message is
//! deleted only after its ledger write succeeded; a malformed one goes to the intake DLQ with
//! an attribute saying why, and never stops the pass.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::report::IngestReport;
use super::Scheduler;
use crate::job::{Job, JobRequest, RequestError};
use crate::ports::Message;
use crate::profile::Payer;

/// Parses a request and checks it against its payer's profile.
pub fn validate(body: &str, payers: &[Payer]) -> Result<JobRequest, RequestError> {
    let req = JobRequest::parse(body)?;
    let err = |field: &str, reason: String| RequestError {
        field: field.to_owned(),
        reason,
    };
    let payer = payers
        .iter()
        .find(|p| p.id() == req.payer_id)
        .ok_or_else(|| {
            err(
                "payer_id",
                format!("no payer `{}` is configured", req.payer_id),
            )
        })?;
    if payer.kind(&req.kind).is_none() {
        let kinds: Vec<&str> = payer.profile.kinds.keys().map(String::as_str).collect();
        return Err(err(
            "kind",
            format!(
                "payer `{}` has no job kind `{}` (it has: {})",
                req.payer_id,
                req.kind,
                kinds.join(", ")
            ),
        ));
    }
    if let Some(p) = req.priority {
        if p > payer.profile.job_priority_max {
            return Err(err(
                "priority",
                format!(
                    "{p} is above the payer's job_priority_max {}",
                    payer.profile.job_priority_max
                ),
            ));
        }
    }
    Ok(req)
}

pub(super) async fn run(s: &Scheduler, payers: &[Payer], now: DateTime<Utc>) -> IngestReport {
    let mut report = IngestReport::default();
    while report.received < s.settings.max_ingest {
        let messages = match s.deps.intake.receive(10, Duration::ZERO).await {
            Ok(m) => m,
            Err(e) => {
                report
                    .errors
                    .push(format!("receiving from the intake queue: {e}"));
                break;
            }
        };
        if messages.is_empty() {
            break;
        }
        report.received += messages.len() as u32;
        let mut done = Vec::with_capacity(messages.len());
        for m in messages {
            match validate(&m.body, payers) {
                Err(e) => {
                    let reason = e.to_string();
                    tracing::warn!(message_id = %m.message_id, reason = %reason, "Rejected a job request.");
                    match s
                        .deps
                        .intake_dlq
                        .send(&m.body, &[(crate::names::ERROR_ATTRIBUTE, &reason)])
                        .await
                    {
                        Ok(_) => {
                            report.rejected += 1;
                            done.push(m.receipt);
                        }
                        Err(e) => report
                            .errors
                            .push(format!("moving message {} to the DLQ: {e}", m.message_id)),
                    }
                }
                Ok(req) => {
                    let producer_id = req.job_id.clone();
                    let job = Job::from_request(req, now);
                    // A ledger written before job ids were per payer holds the payer's earlier
                    // jobs under the producer's id alone: a re-send of one is still a re-send.
                    match s.deps.ledger.get(&producer_id).await {
                        Ok(Some(earlier)) if earlier.payer_id == job.payer_id => {
                            if compare(s, &earlier, &job, &m, &mut report).await {
                                done.push(m.receipt);
                            }
                            continue;
                        }
                        Ok(_) => {}
                        // Not deleted: the message comes back after its visibility timeout.
                        Err(e) => {
                            report
                                .errors
                                .push(format!("reading job {producer_id}: {e}"));
                            continue;
                        }
                    }
                    match s.deps.ledger.create(&job).await {
                        Ok(true) => {
                            tracing::info!(job_id = %job.job_id, payer = %job.payer_id, kind = %job.kind, "Accepted a job.");
                            report.accepted += 1;
                            done.push(m.receipt);
                        }
                        Ok(false) => {
                            if resent(s, &job, &m, &mut report).await {
                                done.push(m.receipt);
                            }
                        }
                        // Not deleted: the message comes back after its visibility timeout.
                        Err(e) => report
                            .errors
                            .push(format!("writing job {}: {e}", job.job_id)),
                    }
                }
            }
        }
        match s.deps.intake.delete(&done).await {
            Ok(failed) if failed.is_empty() => {}
            Ok(failed) => report.errors.push(format!(
                "{} intake message(s) not deleted; they will be seen again",
                failed.len()
            )),
            Err(e) => report.errors.push(format!("deleting intake messages: {e}")),
        }
    }
    report
}

/// A request whose `job_id` the ledger already has. The same content is a re-send, a quiet
/// no-op. Other content is a conflict: the first accepted request stands, and this one goes
/// to the intake DLQ saying which fields differ, so it is neither run nor silently lost.
/// Says whether the message is done with (it may be deleted from intake).
async fn resent(s: &Scheduler, job: &Job, m: &Message, report: &mut IngestReport) -> bool {
    let accepted = match s.deps.ledger.get(&job.job_id).await {
        Ok(Some(accepted)) => accepted,
        // Not there after all: the message comes back and is ingested then.
        Ok(None) => {
            report.errors.push(format!(
                "job {} exists and then did not; its request will be read again",
                job.job_id
            ));
            return false;
        }
        Err(e) => {
            report.errors.push(format!(
                "reading job {} to compare a re-send: {e}",
                job.job_id
            ));
            return false;
        }
    };
    compare(s, &accepted, job, m, report).await
}

/// Settles a request whose job the ledger already holds as `accepted`: the same content is a
/// quiet re-send, other content a conflict that goes to the intake DLQ. Says whether the
/// message is done with.
async fn compare(
    s: &Scheduler,
    accepted: &Job,
    job: &Job,
    m: &Message,
    report: &mut IngestReport,
) -> bool {
    let differ = accepted.request_differences(job);
    if differ.is_empty() {
        report.duplicates += 1;
        return true;
    }
    let reason = format!(
        "job_id: job {} was already accepted with a different {}; the accepted request stands (send this one under a new job_id to run it)",
        accepted.job_id,
        differ.join(", ")
    );
    tracing::warn!(message_id = %m.message_id, job_id = %job.job_id, differ = ?differ, "Rejected a conflicting re-send of a job.");
    match s
        .deps
        .intake_dlq
        .send(&m.body, &[(crate::names::ERROR_ATTRIBUTE, &reason)])
        .await
    {
        Ok(_) => {
            report.conflicts += 1;
            true
        }
        Err(e) => {
            report
                .errors
                .push(format!("moving message {} to the DLQ: {e}", m.message_id));
            false
        }
    }
}
