//! `mayfly tick` (one pass) and the live `mayfly plan` (a pass that changes nothing).

use chrono::Utc;

use super::{emit, App, CliError, Output, PassArgs, PlanArgs, ReapArgs, TickArgs};
use crate::plan::{self, Snapshot};
use crate::scheduler::{load_payers, load_snapshot, read_quotas, QuotaRead, TickOptions};
use crate::summary::JobSummary;

pub(super) async fn tick(app: &App, output: Output, args: &TickArgs) -> Result<(), CliError> {
    let scheduler = app.scheduler(&args.pass).await?;
    let before = app.calls().snapshot();
    let mut report = scheduler
        .tick(
            TickOptions {
                dry_run: args.dry_run,
                ..TickOptions::default()
            },
            Utc::now(),
        )
        .await
        .map_err(|e| app.tick_error(e))?;
    let after = app.calls().snapshot();
    report.aws_calls = after
        .into_iter()
        .map(|(op, n)| (op.clone(), n - before.get(&op).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    emit(output, &report)?;
    if report.has_errors() {
        return Err(CliError::Runtime(
            "the pass finished with errors (listed above)".into(),
        ));
    }
    Ok(())
}

pub(super) async fn live_plan(app: &App, output: Output, args: &PlanArgs) -> Result<(), CliError> {
    let pass = PassArgs {
        max_launches: args.launch_budget,
        vcpu_quota: args.vcpu_quota,
        caps: args.caps.clone(),
        ..PassArgs::defaults()
    };
    let catalog = crate::catalog::Catalog::shipped();
    let payers = load_payers(app.config().as_ref(), catalog, pass.caps.caps())
        .await
        .map_err(|e| app.store_error("config table", e))?;
    let jobs = load_snapshot(app.ledger().as_ref())
        .await
        .map_err(|e| app.store_error("job ledger", e))?;
    let summaries = JobSummary::of_all(&jobs);
    let quotas = match pass.vcpu_quota {
        None => Some(read_quotas(&app.quotas(), &payers.valid, catalog).await),
        Some(_) => None,
    };
    let snapshot = Snapshot {
        jobs: &summaries,
        payers: &payers.valid,
        catalog,
        caps: pass.caps.caps(),
        vcpu_quota: pass.vcpu_quota,
        account_quotas: quotas
            .as_ref()
            .map_or_else(Default::default, QuotaRead::view),
        launch_budget: crate::scheduler::instance_budget(pass.max_launches, pass.max_group),
        now: args.now.unwrap_or_else(Utc::now),
    };
    emit(output, &plan::plan(&snapshot))
}

pub(super) async fn reap(app: &App, output: Output, args: &ReapArgs) -> Result<(), CliError> {
    let pass = PassArgs {
        reap: args.reap.clone(),
        ..PassArgs::defaults()
    };
    let scheduler = app.scheduler(&pass).await?;
    let report = scheduler
        .reap(args.dry_run, Utc::now())
        .await
        .map_err(|e| app.tick_error(e))?;
    emit(output, &report)?;
    if !report.errors.is_empty() {
        return Err(CliError::Runtime(
            "reconciling finished with errors (listed above)".into(),
        ));
    }
    Ok(())
}
