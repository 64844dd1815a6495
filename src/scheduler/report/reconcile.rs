//! What reconciling found and did: the reconcile part of a pass's report, and `mayfly reap`'s.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ports::InstanceState;

/// What the reconciler concluded about one instance (or one job's missing instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// Runs its job's current attempt within every deadline.
    Healthy,
    /// Its launch is being recorded (`launching`); the repair step owns it.
    Launching,
    /// Gone without a `finished` event; judged lost after the grace period.
    Gone,
    /// Gone without a `finished` event for longer than the grace period.
    Lost,
    BootTimeout,
    HeartbeatTimeout,
    MaxRuntime,
    /// Its job's last attempt failed; the retry policy had not been applied.
    Failed,
    /// No in-flight job owns it.
    Orphan,
    /// Tagged `mayfly:protect`: reported, never terminated.
    Protected,
}

/// One line of the reap report.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceFinding {
    pub instance_id: Option<String>,
    pub instance_state: Option<InstanceState>,
    pub instance_type: Option<String>,
    pub job_id: Option<String>,
    pub attempt: Option<u32>,
    pub finding: Finding,
    /// Why, in words.
    pub why: String,
    /// What was done (or, in a dry run, what would be).
    pub action: String,
}

/// What reconciling did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileReport {
    pub dry_run: bool,
    /// Managed instances seen (every state).
    pub instances_seen: u32,
    pub healthy: u32,
    pub lost: u32,
    pub boot_timeouts: u32,
    pub heartbeat_timeouts: u32,
    pub max_runtime: u32,
    pub orphans_marked: u32,
    pub orphans_terminated: u32,
    /// Attempts ended without their `finished` event, by cause.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub verdicts: BTreeMap<String, u32>,
    /// Jobs the retry policy queued again, and those it declared dead.
    pub requeued: u32,
    pub dead: u32,
    /// The jobs queued again, by the cause of their failed attempt.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub retries: BTreeMap<String, u32>,
    /// Instances terminated by this pass.
    pub terminated: Vec<String>,
    /// Payers the circuit breaker paused.
    pub paused_payers: Vec<String>,
    /// Every instance that is not simply healthy, and every job whose instance is gone.
    pub findings: Vec<InstanceFinding>,
    pub errors: Vec<String>,
    /// Instance events read (with a long poll) and applied before a verdict, to be sure none
    /// of the judged attempts' events was still on the way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<super::EventsReport>,
}

impl InstanceFinding {
    /// One line for people: what, why, and what was done.
    pub fn line(&self) -> String {
        let what = match (&self.instance_id, &self.job_id) {
            (Some(i), Some(j)) => format!("{i} (job {j} attempt {})", self.attempt.unwrap_or(0)),
            (Some(i), None) => i.clone(),
            (None, Some(j)) => format!("job {j} attempt {}", self.attempt.unwrap_or(0)),
            (None, None) => "(unknown)".to_owned(),
        };
        let finding = serde_json::to_value(self.finding)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
            .replace('_', " ");
        format!("{what}: {finding}: {}; {}", self.why, self.action)
    }
}

impl ReconcileReport {
    pub fn summary_line(&self) -> String {
        format!(
            "{} instance(s) seen, {} healthy; {} lost, {} boot timeout(s), {} heartbeat timeout(s), \
             {} past max runtime; {} requeued, {} dead; orphans {} marked, {} terminated{}",
            self.instances_seen,
            self.healthy,
            self.lost,
            self.boot_timeouts,
            self.heartbeat_timeouts,
            self.max_runtime,
            self.requeued,
            self.dead,
            self.orphans_marked,
            self.orphans_terminated,
            if self.paused_payers.is_empty() {
                String::new()
            } else {
                format!("; paused by the circuit breaker: {}", self.paused_payers.join(", "))
            }
        )
    }
}

impl std::fmt::Display for ReconcileReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = if self.dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        };
        writeln!(f, "Reap{mode}: {}", self.summary_line())?;
        if self.findings.is_empty() {
            writeln!(f, "No managed instance and no job needs attention.")?;
        }
        for x in &self.findings {
            writeln!(f, "  {}", x.line())?;
        }
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        Ok(())
    }
}
