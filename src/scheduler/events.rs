//! Step 2 of a pass: apply instance events (started / heartbeat / finished / interrupted) to
//! the ledger. Idempotent: an event changes a job only if its job, attempt and instance match
//! the ledger and it adds something new; all of one job's events in a pass are one write.
//! One applier, [`apply_messages`], takes messages from either source: the events queue
//! (read by the pass) or an SQS event handed to the Lambda function.

use std::collections::BTreeMap;
use std::time::Duration;

use super::policy::decide_failed;
use super::report::EventsReport;
use super::Scheduler;
use crate::events::{EventKind, InstanceEvent};
use crate::job::{Job, JobState};
use crate::ports::{Message, StoreError};
use crate::profile::Payer;
use crate::retry::FailureCause;
use chrono::{DateTime, Utc};

/// Whether an event matched the ledger, and what it did.
enum Outcome {
    Changed,
    Unchanged,
    Ignored(&'static str),
    /// Not yet applicable (the launch is still being recorded): leave it on the queue.
    Later,
}

/// Applies one event to a job in memory.
fn apply(job: &mut Job, e: &InstanceEvent, payer: Option<&Payer>, now: DateTime<Utc>) -> Outcome {
    if e.attempt != job.attempt {
        return Outcome::Ignored("attempt does not match the ledger");
    }
    let state = job.state;
    let Some(attempt) = job.current_attempt_mut() else {
        return Outcome::Ignored("job has no such attempt");
    };
    match attempt.instance_id.as_deref() {
        Some(id) if id != e.instance_id => {
            return Outcome::Ignored("instance does not match the ledger")
        }
        None if state == JobState::Launching => return Outcome::Later,
        None => return Outcome::Ignored("attempt has no instance"),
        Some(_) => {}
    }
    match e.event {
        EventKind::Started => {
            if attempt.started_at.is_some() {
                return Outcome::Unchanged;
            }
            attempt.started_at = Some(e.at);
            attempt.last_heartbeat_at = Some(e.at);
            Outcome::Changed
        }
        EventKind::Heartbeat => {
            // Coalesced: a heartbeat is written only when the stored one is getting old, so
            // a job shorter than the window costs no heartbeat writes at all.
            let window = payer
                .map_or(60, |p| p.profile.timeouts.heartbeat.as_secs() / 2)
                .max(1) as i64;
            match attempt.last_heartbeat_at {
                Some(last) if e.at <= last || (e.at - last).num_seconds() < window => {
                    Outcome::Unchanged
                }
                _ if attempt.finished_at.is_some() => Outcome::Unchanged,
                _ => {
                    attempt.last_heartbeat_at = Some(e.at);
                    Outcome::Changed
                }
            }
        }
        EventKind::Interrupted => {
            if attempt
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with("spot interruption"))
            {
                return Outcome::Unchanged;
            }
            attempt.reason = Some(format!(
                "spot interruption: {}",
                e.notice.as_deref().unwrap_or("notice received")
            ));
            Outcome::Changed
        }
        EventKind::Finished => {
            if attempt.finished_at.is_some() || state != JobState::Running {
                return Outcome::Unchanged;
            }
            let code = e.exit_code.unwrap_or(-1);
            attempt.finished_at = Some(e.at);
            attempt.started_at.get_or_insert(e.at);
            attempt.exit_code = Some(code);
            attempt.output_tail.clone_from(&e.output_tail);
            if code == 0 {
                let _ = job.transition(JobState::Succeeded, None, now);
            } else {
                let cause = FailureCause::ExitCode { code };
                if let Some(a) = job.current_attempt_mut() {
                    a.reason = Some(cause.to_string());
                    a.cause = Some(cause.clone());
                }
                let _ = job.transition(JobState::Failed, Some(cause.to_string()), now);
            }
            Outcome::Changed
        }
    }
}

/// What became of one message after [`apply_messages`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Applied, a duplicate, or ignored (it does not match the ledger): done with it.
    Done,
    /// Not an instance event; the reason names the field.
    Malformed(String),
    /// Not applied yet (the launch is still being recorded, or the ledger could not be read
    /// or written): it must be delivered again.
    Again,
}

/// Reads the events queue to the end (up to `max_ingest` messages) and applies what it
/// read: done messages are deleted, malformed ones moved to the events DLQ with the reason.
pub(super) async fn run(
    s: &Scheduler,
    payers: &super::snapshot::LoadedPayers,
    now: DateTime<Utc>,
) -> EventsReport {
    let mut report = EventsReport::default();
    let mut messages: Vec<Message> = Vec::new();
    while report.received < s.settings.max_ingest {
        match s.deps.events.receive(10, Duration::ZERO).await {
            Ok(batch) if batch.is_empty() => break,
            Ok(batch) => {
                report.received += batch.len() as u32;
                messages.extend(batch);
            }
            Err(e) => {
                report.errors.push(format!("receiving events: {e}"));
                break;
            }
        }
    }
    let fates = apply_messages(s, payers, &messages, now, &mut report).await;
    let mut done = Vec::new();
    for (m, fate) in messages.iter().zip(fates) {
        match fate {
            Fate::Done => done.push(m.receipt.clone()),
            Fate::Again => {}
            Fate::Malformed(reason) => match s
                .deps
                .events_dlq
                .send(&m.body, &[(crate::names::ERROR_ATTRIBUTE, &reason)])
                .await
            {
                Ok(_) => done.push(m.receipt.clone()),
                Err(e) => report
                    .errors
                    .push(format!("moving event {} to the DLQ: {e}", m.message_id)),
            },
        }
    }
    match s.deps.events.delete(&done).await {
        Ok(failed) if failed.is_empty() => {}
        Ok(failed) => report.errors.push(format!(
            "{} event message(s) not deleted; they will be seen again (and change nothing)",
            failed.len()
        )),
        Err(e) => report.errors.push(format!("deleting events: {e}")),
    }
    report
}

/// Applies event messages however they arrived (read from the events queue by a pass, or
/// handed over by an SQS-triggered Lambda invocation) and says what became of each, in
/// order. Counts go to `report`; the caller acknowledges the messages.
pub(super) async fn apply_messages(
    s: &Scheduler,
    payers: &super::snapshot::LoadedPayers,
    messages: &[Message],
    now: DateTime<Utc>,
    report: &mut EventsReport,
) -> Vec<Fate> {
    let mut fates = vec![Fate::Again; messages.len()];
    let mut by_job: BTreeMap<String, Vec<(InstanceEvent, usize)>> = BTreeMap::new();
    for (i, m) in messages.iter().enumerate() {
        match InstanceEvent::parse(&m.body) {
            Ok(e) => by_job.entry(e.job_id.clone()).or_default().push((e, i)),
            Err(err) => {
                let reason = err.to_string();
                tracing::warn!(message_id = %m.message_id, reason = %reason, "Malformed instance event.");
                report.malformed += 1;
                fates[i] = Fate::Malformed(reason);
            }
        }
    }
    for (job_id, events) in by_job {
        apply_to_job(s, &payers.valid, &job_id, events, now, report, &mut fates).await;
    }
    // A started instance ends a payer's run of boot failures.
    for payer_id in std::mem::take(&mut report.breakers_reset) {
        if !payers.boot_failures.contains_key(&payer_id) {
            continue;
        }
        match s.deps.config.clear_boot_failures(&payer_id).await {
            Ok(()) => report.breakers_reset.push(payer_id),
            Err(e) => report
                .errors
                .push(format!("resetting {payer_id}'s boot-failure count: {e}")),
        }
    }
    fates
}

/// Applies one job's events (message indexes alongside) in one conditional write.
async fn apply_to_job(
    s: &Scheduler,
    payers: &[Payer],
    job_id: &str,
    mut events: Vec<(InstanceEvent, usize)>,
    now: DateTime<Utc>,
    report: &mut EventsReport,
    fates: &mut [Fate],
) {
    events.sort_by_key(|(e, _)| (e.at, e.event as u8));
    // A lost condition means another pass wrote first: re-read and re-apply (idempotent).
    for _try in 0..3 {
        let job = match s.deps.ledger.get(job_id).await {
            Ok(Some(j)) => j,
            Ok(None) => {
                *report.ignored.entry("unknown job".into()).or_default() += events.len() as u32;
                for (_, i) in &events {
                    fates[*i] = Fate::Done;
                }
                return;
            }
            Err(e) => {
                report.errors.push(format!("reading job {job_id}: {e}"));
                return;
            }
        };
        let payer = payers.iter().find(|p| p.id() == job.payer_id);
        let expected = job.version;
        let mut updated = job.clone();
        let (mut applied, mut dupes) = (0, 0);
        let mut ignored: Vec<&'static str> = Vec::new();
        let mut acked = Vec::new();
        for (e, i) in &events {
            match apply(&mut updated, e, payer, now) {
                Outcome::Changed => {
                    applied += 1;
                    acked.push(*i);
                }
                Outcome::Unchanged => {
                    dupes += 1;
                    acked.push(*i);
                }
                Outcome::Ignored(why) => {
                    tracing::warn!(job_id = %job_id, instance_id = %e.instance_id, attempt = e.attempt, reason = why, "Ignored an instance event.");
                    ignored.push(why);
                    acked.push(*i);
                }
                Outcome::Later => {}
            }
        }
        let failed = updated.state == JobState::Failed && job.state != JobState::Failed;
        let started = job
            .current_attempt()
            .is_some_and(|a| a.started_at.is_none())
            && updated
                .current_attempt()
                .is_some_and(|a| a.started_at.is_some());
        let succeeded = updated.state == JobState::Succeeded && job.state != JobState::Succeeded;
        if applied > 0 {
            // The version moved once per in-memory transition; the write is one, conditional
            // on what we read.
            updated.version = expected + 1;
            updated.updated_at = Some(now);
            match s.deps.ledger.update(&updated, expected).await {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => {
                    report.errors.push(format!("writing job {job_id}: {e}"));
                    return;
                }
            }
            if failed {
                // The failure is on record; now the retry policy moves it on.
                let cause = FailureCause::ExitCode {
                    code: updated
                        .current_attempt()
                        .and_then(|a| a.exit_code)
                        .unwrap_or(-1),
                };
                let expected = updated.version;
                decide_failed(&mut updated, payer, &cause, now);
                updated.version = expected + 1;
                match s.deps.ledger.update(&updated, expected).await {
                    Ok(()) if updated.state == JobState::Queued => {
                        *report.retries.entry(cause.label().to_owned()).or_default() += 1;
                    }
                    Ok(()) => {}
                    Err(e) => report.errors.push(format!("requeueing job {job_id}: {e}")),
                }
            }
        }
        report.applied += applied;
        report.duplicates += dupes;
        for why in ignored {
            *report.ignored.entry(why.to_owned()).or_default() += 1;
        }
        if started && !report.breakers_reset.contains(&updated.payer_id) {
            report.breakers_reset.push(updated.payer_id.clone());
        }
        report.succeeded += u32::from(succeeded);
        report.failed += u32::from(failed);
        for i in acked {
            fates[i] = Fate::Done;
        }
        return;
    }
}
