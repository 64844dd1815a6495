//! The proxy's counters: requests, forwards and faults, in total and by operation.

use std::collections::BTreeMap;

use serde::Serialize;

/// Counts for one operation (or all of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OpStats {
    /// Requests received.
    pub requests: u64,
    /// Requests sent upstream (lost responses included: they were forwarded).
    pub forwarded: u64,
    /// Answered with a throttling error (bucket empty).
    pub throttled: u64,
    /// Answered with an injected 500.
    pub errors: u64,
    /// Held, then dropped.
    pub timeouts: u64,
    /// Forwarded, then the response lost.
    pub lost_responses: u64,
    /// Forwards that failed (upstream unreachable): answered 502.
    pub upstream_errors: u64,
}

impl OpStats {
    /// Faults injected: throttles, errors, timeouts and lost responses.
    pub fn faults(&self) -> u64 {
        self.throttled + self.errors + self.timeouts + self.lost_responses
    }
}

/// The proxy's counters: totals (flattened into the JSON object) and per operation.
///
/// `GET /__faultproxy/stats` answers, for example:
/// `{"requests":9,"forwarded":5,"throttled":4,"errors":0,"timeouts":0,"lost_responses":0,
///   "upstream_errors":0,"operations":{"RunInstances":{"requests":9,"forwarded":5,…}}}`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProxyStats {
    #[serde(flatten)]
    pub total: OpStats,
    /// By operation name (`RunInstances`, `PutItem`, `Unknown`).
    pub operations: BTreeMap<String, OpStats>,
}

impl ProxyStats {
    /// One operation's counts (zero if it was never called).
    pub fn operation(&self, name: &str) -> OpStats {
        self.operations.get(name).copied().unwrap_or_default()
    }

    pub(super) fn bump(&mut self, op: &str, f: impl Fn(&mut OpStats)) {
        f(&mut self.total);
        f(self.operations.entry(op.to_owned()).or_default());
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}
