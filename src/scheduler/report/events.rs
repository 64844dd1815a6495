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
    /// Unparseable events: a pass moves them to the events DLQ with the reason; the Lambda
    /// function reports them as batch item failures, so the queue's redrive moves them.
    pub malformed: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// Failed jobs the retry policy queued again, by cause (`exit_code` here).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub retries: BTreeMap<String, u32>,
    pub errors: Vec<String>,
    /// Payers whose circuit-breaker count a `started` event reset.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub breakers_reset: Vec<String>,
}

impl EventsReport {
    /// Whether the pass read the events queue to the end without an error, so an event not
    /// seen was not sent before the pass began.
    pub fn drained(&self, max_ingest: u32) -> bool {
        self.received < max_ingest && self.errors.is_empty()
    }
}
