//! What applying instance events did: the events part of a pass's report.

use std::collections::BTreeMap;

use serde::Serialize;

/// What applying events did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventsReport {
    pub received: u32,
    pub applied: u32,
    /// Events that changed nothing (already applied).
    pub duplicates: u32,
    /// Events that did not match the ledger, by reason.
    pub ignored: BTreeMap<String, u32>,
    /// Unparseable events: moved to the events DLQ with the reason (by the pass that read
    /// them, or by the Lambda function they were handed to).
    pub malformed: u32,
    /// Events whose sender could not speak for the instance they name (SQS's `SenderId`,
    /// or an instance EC2 does not list for the launching attempt): moved to the events DLQ
    /// with the reason, nothing applied.
    pub refused: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// `launching` attempts whose instance was recorded from its own event (the launching
    /// pass lost RunInstances' response, or stopped).
    pub adopted: u32,
    /// Jobs that succeeded on a `finished` event that arrived after their attempt had been
    /// judged lost (and before a new attempt launched): each one is a verdict made too early.
    pub late_successes: u32,
    /// Failed jobs the retry policy queued again, by cause (`exit_code` here).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub retries: BTreeMap<String, u32>,
    pub errors: Vec<String>,
    /// Payers whose circuit-breaker count a `started` event reset.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub breakers_reset: Vec<String>,
}

impl EventsReport {
    /// Adds another reading's counts to these.
    pub fn merge(&mut self, other: &EventsReport) {
        self.received += other.received;
        self.applied += other.applied;
        self.duplicates += other.duplicates;
        for (why, n) in &other.ignored {
            *self.ignored.entry(why.clone()).or_default() += n;
        }
        self.malformed += other.malformed;
        self.refused += other.refused;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.adopted += other.adopted;
        self.late_successes += other.late_successes;
        for (cause, n) in &other.retries {
            *self.retries.entry(cause.clone()).or_default() += n;
        }
        self.errors.extend(other.errors.iter().cloned());
        for p in &other.breakers_reset {
            if !self.breakers_reset.contains(p) {
                self.breakers_reset.push(p.clone());
            }
        }
    }

    /// Whether the pass read the events queue to the end without an error, so an event not
    /// seen was not sent before the pass began.
    pub fn drained(&self, max_ingest: u32) -> bool {
        self.received < max_ingest && self.errors.is_empty()
    }
}
