//! Step 2 of a pass: apply instance events (started / heartbeat / finished / interrupted) to
//! the ledger. Idempotent: an event changes a job only if its job, attempt and instance match
//! the ledger and it adds something new; all of one job's events in a pass are one write.
//! One applier, [`apply_messages`], takes messages from either source: the events queue
//! (read by the pass) or an SQS event handed to the Lambda function.
//!
//! An event proves its sender: SQS stamps every message with the sender's identity
//! (`SenderId`), for an instance profile's role `<role id>:<instance id>`. An event whose
//! sender is not the instance it names is refused — moved to the events DLQ with the reason
//! and counted — and changes nothing: one payer's instance cannot report another's job. An
//! event that would record a `launching` attempt's instance must also name an instance EC2
//! lists for that attempt by its tags, since the sender check proves only that the instance
//! spoke for itself.

use std::collections::BTreeMap;
use std::time::Duration;

use super::policy::decide_failed;
use super::report::EventsReport;
use super::Scheduler;
use crate::events::{EventKind, InstanceEvent};
use crate::job::{Job, JobState, PriceSource};
use crate::ports::{Message, StoreError};
use crate::profile::Payer;
use crate::retry::FailureCause;
use chrono::{DateTime, Utc};

/// Whether events must prove their sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSenders {
    /// An event is applied only when SQS says the instance it names sent it.
    Verified,
    /// Every sender is taken at its word: only for an emulator whose `SenderId` is a constant
    /// (moto stamps every message `AIDAIT2UOQQY3AUEKVGXU`, whoever sent it).
    Unverified,
}

/// Why a message's sender (SQS's `SenderId`) is not the instance its event names, if it is
/// not. An EC2 instance profile's role sends as `<role id>:<instance id>` (EC2 names the
/// role session after the instance); anything else — an IAM user, another instance, no
/// sender at all — cannot speak for the instance.
pub fn sender_mismatch(sender_id: Option<&str>, instance_id: &str) -> Option<String> {
    let Some(sender) = sender_id else {
        return Some(format!(
            "sender: the message has no SenderId, so nothing proves instance {instance_id} sent it"
        ));
    };
    match sender.split_once(':') {
        Some((_role, session)) if session == instance_id => None,
        _ => Some(format!(
            "sender: the event names instance {instance_id} but was sent by {sender} (SQS              SenderId); an instance may report only on itself"
        )),
    }
}

/// Whether an event matched the ledger, and what it did.
enum Outcome {
    Changed,
    Unchanged,
    Ignored(&'static str),
}

/// What applying a job's events settled, beyond the event itself.
#[derive(Debug, Default, Clone, Copy)]
struct Settled {
    /// A `launching` attempt's instance was named by its own event.
    adopted: bool,
    /// A `finished` with exit 0 arrived after the attempt had been judged lost, before any
    /// new attempt launched: the job succeeded after all.
    late_success: bool,
}

/// Applies one event to a job in memory. An event of the ledger's current attempt is
/// evidence whatever the attempt's state: for a `launching` attempt it proves the launch and
/// names the instance, and a `finished` for an attempt already judged lost (its job queued
/// for a retry that has not launched, or dead) still settles the job.
fn apply(
    job: &mut Job,
    e: &InstanceEvent,
    payer: Option<&Payer>,
    now: DateTime<Utc>,
    settled: &mut Settled,
) -> Outcome {
    if e.attempt != job.attempt {
        return Outcome::Ignored(if e.attempt < job.attempt {
            "an earlier attempt's event: the job is on a later attempt"
        } else {
            "attempt does not match the ledger"
        });
    }
    let state = job.state;
    let Some(attempt) = job.current_attempt() else {
        return Outcome::Ignored("job has no such attempt");
    };
    match attempt.instance_id.as_deref() {
        Some(id) if id != e.instance_id => {
            return Outcome::Ignored("instance does not match the ledger")
        }
        None if state == JobState::Launching => {
            adopt(job, e, now);
            settled.adopted = true;
        }
        None => return Outcome::Ignored("attempt has no instance"),
        Some(_) => {}
    }
    let outcome = record(job, e, payer, now, settled);
    match outcome {
        Outcome::Unchanged if settled.adopted => Outcome::Changed,
        other => other,
    }
}

/// A `launching` attempt whose instance reported before the launching pass recorded it (its
/// RunInstances response was lost, or the pass stopped): the event names the instance, and
/// the job is running.
fn adopt(job: &mut Job, e: &InstanceEvent, now: DateTime<Utc>) {
    if let Some(a) = job.current_attempt_mut() {
        a.instance_id = Some(e.instance_id.clone());
        // The launch came no later than the instance's first word.
        a.launched_at.get_or_insert(e.at);
        if a.usd_per_hour.is_none() {
            // A spot rung's price is read after launch, and this launch was never seen.
            a.price_source = Some(PriceSource::OnDemandFallback {
                why: "the launch was recorded from the instance's own event".into(),
            });
        }
    }
    let _ = job.transition(JobState::Running, None, now);
}

/// Records one event on the current attempt (its instance already matched).
fn record(
    job: &mut Job,
    e: &InstanceEvent,
    payer: Option<&Payer>,
    now: DateTime<Utc>,
    settled: &mut Settled,
) -> Outcome {
    let state = job.state;
    let Some(attempt) = job.current_attempt_mut() else {
        return Outcome::Ignored("job has no such attempt");
    };
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
                _ if attempt.finished_at.is_some() || state != JobState::Running => {
                    Outcome::Unchanged
                }
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
                || state != JobState::Running
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
            if attempt.exit_code.is_some() {
                return Outcome::Unchanged;
            }
            let late = matches!(state, JobState::Queued | JobState::Dead | JobState::Failed);
            if state != JobState::Running && !late {
                return Outcome::Unchanged;
            }
            let code = e.exit_code.unwrap_or(-1);
            attempt.finished_at = Some(e.at);
            attempt.started_at.get_or_insert(e.at);
            attempt.exit_code = Some(code);
            attempt.output_tail.clone_from(&e.output_tail);
            if late {
                // The attempt was judged lost, yet its `finished` was on the way. Exit 0 is a
                // success nobody had heard: the job must not run again. Any other exit only
                // completes the record; the retry already decided stands.
                if code == 0 {
                    let why = format!(
                        "attempt {} finished with exit 0 after it was judged lost; its late \
                         `finished` event settles the job",
                        e.attempt
                    );
                    if let Some(a) = job.current_attempt_mut() {
                        a.reason = Some(why);
                    }
                    if job.transition(JobState::Succeeded, None, now).is_ok() {
                        settled.late_success = true;
                    }
                }
                return Outcome::Changed;
            }
            if code == 0 {
                if let Some(a) = job.current_attempt_mut() {
                    // Stopped for a deadline just after it finished: the finish stands.
                    a.cause = None;
                    a.reason = None;
                }
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
    /// Its sender could not speak for the instance it names: moved to the events DLQ with
    /// the reason, like a malformed one, and nothing applied.
    Refused(String),
    /// Not applied yet (the ledger could not be read or written): it must be delivered again.
    Again,
}

/// How long the long poll that confirms the events queue is empty waits: any wait makes SQS
/// answer from all of its servers, not a sample.
const CONFIRM_WAIT: Duration = Duration::from_secs(1);

/// Reads the events queue to the end (up to `max_ingest` messages) with short polls and
/// applies what it read: done messages are deleted, malformed ones moved to the events DLQ
/// with the reason. Cheap, and enough to keep jobs moving; before a verdict needs to know
/// that no event is left, [`confirm_quiet`] looks harder.
pub(super) async fn run(
    s: &Scheduler,
    payers: &super::snapshot::LoadedPayers,
    now: DateTime<Utc>,
) -> EventsReport {
    let mut report = EventsReport::default();
    drain(s, payers, now, Duration::ZERO, &mut report).await;
    report
}

/// Whether no instance event can still arrive: reads the events queue to its end with long
/// polls, applying what it finds, then asks SQS how many messages are in flight (received by
/// a reader — this one included, for what it could not apply — and not deleted). `Err` says
/// why an event may still come.
pub(super) async fn confirm_quiet(
    s: &Scheduler,
    payers: &super::snapshot::LoadedPayers,
    now: DateTime<Utc>,
    report: &mut EventsReport,
) -> Result<(), String> {
    let errors = report.errors.len();
    drain(s, payers, now, CONFIRM_WAIT, report).await;
    if report.errors.len() > errors {
        return Err(format!(
            "the events queue could not be read to its end ({})",
            report.errors[errors..].join("; ")
        ));
    }
    if report.received >= s.settings.max_ingest {
        return Err(format!(
            "the events queue holds more than one pass reads ({})",
            s.settings.max_ingest
        ));
    }
    match s.deps.events.in_flight().await {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!(
            "{n} event message(s) in flight on the events queue (received by a reader that \
             has not deleted them; one that stopped holds them until their visibility timeout)"
        )),
        Err(e) => Err(format!("counting the events in flight: {e}")),
    }
}

/// Receives until the queue answers empty (or `max_ingest` is reached), waiting up to `wait`
/// on each call, then applies and acknowledges what it received.
async fn drain(
    s: &Scheduler,
    payers: &super::snapshot::LoadedPayers,
    now: DateTime<Utc>,
    wait: Duration,
    report: &mut EventsReport,
) {
    let mut messages: Vec<Message> = Vec::new();
    while report.received < s.settings.max_ingest {
        match s.deps.events.receive(10, wait).await {
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
    if messages.is_empty() {
        return;
    }
    let fates = apply_messages(s, payers, &messages, now, report).await;
    let mut done = Vec::new();
    for (m, fate) in messages.iter().zip(fates) {
        match fate {
            Fate::Done => done.push(m.receipt.clone()),
            Fate::Again => {}
            Fate::Malformed(reason) | Fate::Refused(reason) => match s
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
            Ok(e) => {
                let refused = match s.settings.event_senders {
                    EventSenders::Verified => {
                        sender_mismatch(m.sender_id.as_deref(), &e.instance_id)
                    }
                    EventSenders::Unverified => None,
                };
                match refused {
                    Some(reason) => {
                        tracing::warn!(message_id = %m.message_id, job_id = %e.job_id, instance_id = %e.instance_id, reason = %reason, "Refused an instance event: its sender is not the instance it names.");
                        report.refused += 1;
                        fates[i] = Fate::Refused(reason);
                    }
                    None => by_job.entry(e.job_id.clone()).or_default().push((e, i)),
                }
            }
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
        let now = s.moment(now);
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
        let Some(events) = verify_claims(s, &job, &events, report, fates).await else {
            return;
        };
        let payer = payers.iter().find(|p| p.id() == job.payer_id);
        let expected = job.version;
        let mut updated = job.clone();
        let (mut applied, mut dupes) = (0, 0);
        let mut ignored: Vec<&'static str> = Vec::new();
        let mut acked = Vec::new();
        let mut settled = Settled::default();
        for (e, i) in &events {
            match apply(&mut updated, e, payer, now, &mut settled) {
                Outcome::Changed => {
                    applied += 1;
                    acked.push(*i);
                }
                Outcome::Unchanged => {
                    dupes += 1;
                    acked.push(*i);
                }
                Outcome::Ignored(why) => {
                    if e.event == EventKind::Finished
                        && e.exit_code == Some(0)
                        && e.attempt < job.attempt
                    {
                        // The one case the scheduler's caution exists to prevent: a success
                        // reported after a later attempt began. Loud, and counted by reason.
                        tracing::error!(job_id = %job_id, instance_id = %e.instance_id, attempt = e.attempt, current_attempt = job.attempt, "A finished event with exit 0 arrived after a later attempt began.");
                    } else {
                        tracing::warn!(job_id = %job_id, instance_id = %e.instance_id, attempt = e.attempt, reason = why, "Ignored an instance event.");
                    }
                    ignored.push(why);
                    acked.push(*i);
                }
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
            let instance_id = updated
                .current_attempt()
                .and_then(|a| a.instance_id.as_deref())
                .unwrap_or_default();
            if settled.adopted {
                tracing::info!(job_id = %job_id, %instance_id, attempt = updated.attempt, "Recorded a launch from its instance's own event.");
                report.adopted += 1;
            }
            if settled.late_success {
                tracing::warn!(job_id = %job_id, %instance_id, attempt = updated.attempt, "A finished event arrived after its attempt was judged lost; the job succeeded on it.");
                report.late_successes += 1;
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

/// With verified senders, an event must name the instance its attempt ran on: an event
/// whose attempt the ledger records on another instance is refused (its sender is a real
/// instance, reporting on a job not its own). One that would record a `launching` attempt's
/// instance must name an instance EC2 lists for that attempt by its tags (for a grouped
/// attempt, the group's instance with the attempt's launch index); when EC2 lists none
/// yet (a launch it does not show yet), it is left to be delivered again. Returns the events
/// to apply; the others' fates are set here. `None` when EC2 could not be asked: every event
/// is delivered again.
async fn verify_claims(
    s: &Scheduler,
    job: &Job,
    events: &[(InstanceEvent, usize)],
    report: &mut EventsReport,
    fates: &mut [Fate],
) -> Option<Vec<(InstanceEvent, usize)>> {
    if s.settings.event_senders == EventSenders::Unverified {
        return Some(events.to_vec());
    }
    let adopting = job.state == JobState::Launching
        && job
            .current_attempt()
            .is_some_and(|a| a.instance_id.is_none())
        && events.iter().any(|(e, _)| e.attempt == job.attempt);
    let listed: Vec<String> = if adopting {
        // A grouped attempt's instance carries the group's tag, not the job's: it is the
        // group's instance with the attempt's launch index (the rule repair and reconcile map
        // it by).
        let grouped = job
            .current_attempt()
            .and_then(|a| a.launch_group.as_deref().zip(a.launch_index));
        let found = match grouped {
            Some((group, index)) => s
                .deps
                .compute
                .find_group(&s.settings.cluster, group)
                .await
                .map(|members| {
                    members
                        .into_iter()
                        .filter(|m| m.launch_index == Some(index))
                        .collect::<Vec<_>>()
                }),
            None => {
                s.deps
                    .compute
                    .find_attempt(&s.settings.cluster, &job.job_id, job.attempt)
                    .await
            }
        };
        match found {
            Ok(found) => found.into_iter().map(|m| m.instance_id).collect(),
            Err(e) => {
                report.errors.push(format!(
                    "looking up job {} attempt {} to check the instance its event names: {e}",
                    job.job_id, job.attempt
                ));
                return None;
            }
        }
    } else {
        Vec::new()
    };
    let mut keep = Vec::new();
    for (e, i) in events {
        let recorded = job
            .attempts
            .iter()
            .find(|a| a.number == e.attempt)
            .map(|a| a.instance_id.as_deref());
        let refused = match recorded {
            Some(Some(id)) if id != e.instance_id => Some(format!(
                "instance_id: job {} attempt {} ran on {id}, not on {}; an instance may report \
                 only on its own job",
                job.job_id, e.attempt, e.instance_id
            )),
            Some(None) if adopting && e.attempt == job.attempt => {
                if listed.is_empty() {
                    // EC2 shows no instance of the attempt yet: deliver it again.
                    continue;
                }
                (!listed.contains(&e.instance_id)).then(|| {
                    format!(
                        "instance_id: job {} attempt {} is launching on {} (by its tags), not \
                         on {}; an instance may report only on its own job",
                        job.job_id,
                        e.attempt,
                        listed.join(", "),
                        e.instance_id
                    )
                })
            }
            _ => None,
        };
        match refused {
            None => keep.push((e.clone(), *i)),
            Some(reason) => {
                if !matches!(fates[*i], Fate::Refused(_)) {
                    tracing::warn!(job_id = %job.job_id, instance_id = %e.instance_id, reason = %reason, "Refused an instance event: its instance is not the job's.");
                    report.refused += 1;
                }
                fates[*i] = Fate::Refused(reason);
            }
        }
    }
    Some(keep)
}

#[cfg(test)]
mod tests {
    use super::sender_mismatch;

    #[test]
    fn only_the_named_instance_may_send_its_event() {
        let own = "AROA3EXAMPLEROLEID01:i-0123456789abcdef0";
        assert_eq!(sender_mismatch(Some(own), "i-0123456789abcdef0"), None);
        for sender in [
            Some("AROA3EXAMPLEROLEID01:i-0fedcba9876543210"),
            Some("AIDAIT2UOQQY3AUEKVGXU"),
            Some("AROA3EXAMPLEROLEID01:i-0123456789abcdef0x"),
            None,
        ] {
            let why = sender_mismatch(sender, "i-0123456789abcdef0")
                .unwrap_or_else(|| panic!("{sender:?} may not speak for the instance"));
            assert!(why.starts_with("sender: "), "{why}");
        }
    }
}
