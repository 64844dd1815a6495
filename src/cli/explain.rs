//! `mayfly explain JOB`: why a job is (not) running, in one answer.

use chrono::{DateTime, Utc};
use clap::Args;

use super::{emit, App, CliError, Output, PassArgs};
use crate::explain::{explain, ExplainContext, ExplainError};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The job's id: `payer/job_id`, or the job_id alone (looked up under every payer).
    pub job_id: String,
    /// Explain as of this time (RFC 3339); default now.
    #[arg(long)]
    pub now: Option<DateTime<Utc>>,
    #[command(flatten)]
    pub pass: PassArgs,
}

pub(super) async fn run(app: &App, output: Output, args: &ExplainArgs) -> Result<(), CliError> {
    let quotas = app.quotas();
    let ctx = ExplainContext {
        catalog: crate::catalog::Catalog::shipped(),
        caps: args.pass.caps.caps(),
        vcpu_quota: args.pass.vcpu_quota,
        quotas: Some(&quotas),
        launch_budget: crate::scheduler::instance_budget(
            args.pass.max_launches,
            args.pass.max_group,
        ),
        now: args.now.unwrap_or_else(Utc::now),
    };
    let answer = explain(
        app.config().as_ref(),
        app.ledger().as_ref(),
        &ctx,
        &args.job_id,
    )
    .await
    .map_err(|e| match e {
        ExplainError::Store(e) => app.store_error("reading the ledger or config table", e),
        e => CliError::Invalid(e.to_string()),
    })?;
    emit(output, &answer)
}
