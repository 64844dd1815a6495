//! `mayfly preflight [PAYER…]`: every rung of the payers' ladders checked against the account
//! without launching anything. Exit 2 when a launch would fail, 1 when a check could not be
//! made, 0 otherwise.

use clap::Args;

use super::{emit, App, CliError, Output, PassArgs};
use crate::preflight::{preflight, Account};
use crate::scheduler::load_payers;

#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// Payers to check (default: every payer in the config table).
    pub payers: Vec<String>,
}

pub(super) async fn run(app: &App, output: Output, args: &PreflightArgs) -> Result<(), CliError> {
    let pass = PassArgs::defaults();
    let scheduler = app.scheduler(&pass).await?;
    let loaded = load_payers(
        scheduler.deps.config.as_ref(),
        scheduler.catalog,
        pass.caps.caps(),
    )
    .await
    .map_err(|e| CliError::Runtime(format!("config table: {e}")))?;
    // A stored profile that does not validate is reported as `config row ID: field: reason`.
    let row_of = |why: &str, id: &str| why.starts_with(&format!("config row {id}: "));
    let wanted = |id: &str| args.payers.is_empty() || args.payers.iter().any(|p| p == id);
    let payers: Vec<_> = loaded
        .valid
        .into_iter()
        .filter(|p| wanted(p.id()))
        .collect();
    let invalid: Vec<String> = loaded
        .invalid
        .into_iter()
        .filter(|why| args.payers.is_empty() || args.payers.iter().any(|p| row_of(why, p)))
        .collect();
    for p in &args.payers {
        let known = payers.iter().any(|x| x.id() == p) || invalid.iter().any(|why| row_of(why, p));
        if !known {
            return Err(CliError::Invalid(format!(
                "no payer `{p}` in the config table (`mayfly payers list`)"
            )));
        }
    }
    if payers.is_empty() && invalid.is_empty() {
        return Err(CliError::Invalid(
            "no payers in the config table: `mayfly payers apply` them first".into(),
        ));
    }
    let (ec2, iam, quotas) = (app.ec2(), app.iam(), app.quotas());
    let account = Account {
        ec2: &ec2,
        iam: &iam,
        quotas: &quotas,
    };
    let report = preflight(
        &scheduler,
        account,
        &payers,
        &invalid,
        app.endpoint_url().is_some(),
    )
    .await;
    emit(output, &report)?;
    if !report.problems.is_empty() {
        return Err(CliError::Invalid(format!(
            "preflight: {} problem(s): a launch would fail (listed above)",
            report.problems.len()
        )));
    }
    if !report.unchecked.is_empty() {
        return Err(CliError::Runtime(format!(
            "preflight: {} check(s) could not be made (listed above)",
            report.unchecked.len()
        )));
    }
    Ok(())
}
