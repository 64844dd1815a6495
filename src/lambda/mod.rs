//! The `mayfly-lambda` function, independent of the Lambda runtime that drives it (the
//! binary wires [`Function::invoke`] to the Lambda Runtime API). [`trigger`] recognises the
//! event and does the work; this module connects to the deployment once per execution
//! environment, counts the AWS calls of each invocation, and renders its pass as metrics in
//! CloudWatch Embedded Metric Format (the same [`Metrics`] snapshot the daemon serves as
//! Prometheus text).

mod trigger;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use clap::Parser;
use serde_json::Value;

pub use trigger::{
    handle, handle_within, BatchResponse, Handled, ItemFailure, LambdaError, SqsAttributes,
    SqsRecord, Trigger,
};

use crate::cli::{App, CliError, GlobalArgs, PassArgs};
use crate::metrics::{LedgerGauges, Metrics};
use crate::scheduler::Scheduler;

/// The function's settings: the CLI's global and pass options, read from the environment
/// (`MAYFLY_NAME`, `MAYFLY_MAX_LAUNCHES`, `MAYFLY_LOST_GRACE`, … and the AWS chain's).
#[derive(Debug, Parser)]
#[command(name = "mayfly-lambda", version, max_term_width = 100)]
pub struct LambdaArgs {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(flatten)]
    pub pass: PassArgs,
}

/// A connected function: one per execution environment, reused across invocations.
#[derive(Debug)]
pub struct Function {
    app: App,
    scheduler: Scheduler,
}

/// What one invocation did, with its metrics.
#[derive(Debug, Clone)]
pub struct Invoked {
    pub handled: Handled,
    /// The pass's metrics (`None` when no pass ran).
    pub metrics: Option<Metrics>,
}

impl Invoked {
    /// The metrics as EMF lines, one document each, for `deployment`.
    pub fn emf_lines(&self, deployment: &str) -> Vec<String> {
        self.metrics
            .as_ref()
            .map(|m| m.to_emf(deployment))
            .unwrap_or_default()
    }
}

fn delta(before: &BTreeMap<String, u64>, after: BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .into_iter()
        .map(|(op, n)| {
            let d = n - before.get(&op).copied().unwrap_or(0);
            (op, d)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

impl Function {
    /// Connects to the deployment and finds its queues (an init error if any is missing).
    pub async fn connect(args: &LambdaArgs) -> Result<Self, CliError> {
        let app = App::connect(&args.global).await?;
        let scheduler = app.scheduler(&args.pass).await?;
        Ok(Self { app, scheduler })
    }

    /// The deployment name (the `deployment` dimension of the metrics).
    pub fn deployment(&self) -> &str {
        &self.app.names.deployment
    }

    /// Handles one event payload at `now`. The pass report carries the invocation's AWS
    /// calls by operation. A scheduled pass also reads the ledger for the gauges (queued
    /// jobs and the oldest one's age per payer and tier, paused payers, cost today): the
    /// schedule's minute is their resolution, and a burst of SQS batches adds no reads.
    pub async fn invoke(
        &self,
        payload: &Value,
        now: DateTime<Utc>,
    ) -> Result<Invoked, LambdaError> {
        self.invoke_within(payload, now, None).await
    }

    /// [`Self::invoke`], with the time the pass after an SQS batch may take (the invocation's
    /// remaining time less a margin for the answer).
    pub async fn invoke_within(
        &self,
        payload: &Value,
        now: DateTime<Utc>,
        pass_budget: Option<std::time::Duration>,
    ) -> Result<Invoked, LambdaError> {
        let trigger = Trigger::from_payload(payload)?;
        let scheduled = matches!(trigger, Trigger::Scheduled);
        let calls = self.app.calls();
        let (before, throttled_before) = (calls.snapshot(), calls.throttled_snapshot());
        let mut handled = handle_within(&self.scheduler, trigger, now, pass_budget).await?;
        let batch_applied = handled.events.as_ref().map_or(0, |e| u64::from(e.applied));
        let Some(pass) = handled.pass.as_mut() else {
            return Ok(Invoked {
                handled,
                metrics: None,
            });
        };
        pass.aws_calls = delta(&before, calls.snapshot());
        let gauges = if scheduled {
            let deps = &self.scheduler.deps;
            match LedgerGauges::load(deps.ledger.as_ref(), deps.config.as_ref(), now).await {
                Ok(g) => Some(g),
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot read the ledger for the metrics gauges.");
                    None
                }
            }
        } else {
            None
        };
        let mut metrics = Metrics::from_pass(pass, gauges);
        metrics.aws_throttled = delta(&throttled_before, calls.throttled_snapshot());
        // The SQS batch's events were applied by this invocation, before its pass.
        metrics.passes.events_applied += batch_applied;
        Ok(Invoked {
            handled,
            metrics: Some(metrics),
        })
    }
}
