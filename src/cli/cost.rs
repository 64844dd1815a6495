//! `mayfly cost report`: what the instances cost, as a table, CSV, JSON or one HTML page.

use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand, ValueEnum};

use super::{emit, App, CliError, Output};
use std::sync::Arc;

use super::progress::with_progress;
use crate::cost_report::{self, Coverage, GroupBy, Query};
use crate::ledger_index::ReadMeter;

#[derive(Debug, Subcommand)]
pub enum CostCommand {
    /// Totals and a breakdown of what the instances cost, productive vs overhead.
    ///
    /// Costs come from what the ledger recorded per attempt: the price per hour at launch
    /// (on-demand, or the spot price for the type and AZ), the root volume, and the launch
    /// and end of the instance; per-second billing with a 60 s minimum. Attempts still
    /// running are costed to now. The JSON schema is in docs/cost-report.md.
    ///
    /// With --from, only the jobs whose bill can overlap the range are read (the ledger's
    /// by-settled-day index); without it, every job is, which on a large ledger takes long.
    /// What is read is said on stderr first, and a progress line follows on stderr while it
    /// reads.
    #[command(after_help = "Examples:
  mayfly cost report --from 2026-11-01 --to 2026-12-01 --by payer
  mayfly cost report --payer cedar-plan --by day --format csv > cedar.csv
  mayfly cost report --format html --out cost.html")]
    Report(CostReportArgs),
}

/// How the report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Csv,
    Json,
    Html,
}

#[derive(Debug, Args)]
pub struct CostReportArgs {
    /// Only attempts launched at or after this time (RFC 3339, or a UTC date YYYY-MM-DD).
    #[arg(long, value_parser = parse_time)]
    pub from: Option<DateTime<Utc>>,
    /// Only attempts launched before this time (RFC 3339, or a UTC date YYYY-MM-DD).
    #[arg(long, value_parser = parse_time)]
    pub to: Option<DateTime<Utc>>,
    /// Only this payer's jobs.
    #[arg(long)]
    pub payer: Option<String>,
    /// How the breakdown groups attempts.
    #[arg(long, value_enum, default_value_t = GroupBy::Payer)]
    pub by: GroupBy,
    /// Output format (default: table, or json with --output json).
    #[arg(long, value_enum)]
    pub format: Option<ReportFormat>,
    /// Write the report to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub(super) fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("`{s}` is neither RFC 3339 nor YYYY-MM-DD"))
}

pub(super) async fn run(app: &App, output: Output, cmd: CostCommand) -> Result<(), CliError> {
    let CostCommand::Report(args) = cmd;
    if let (Some(from), Some(to)) = (args.from, args.to) {
        if from >= to {
            return Err(CliError::Invalid(format!(
                "--from ({from}) must be before --to ({to})"
            )));
        }
    }
    let meter = Arc::new(ReadMeter::new());
    let ledger = app.dynamo_ledger().with_meter(Arc::clone(&meter));
    let query = Query {
        from: args.from,
        to: args.to,
        payer: args.payer.clone(),
        by: args.by,
    };
    let now = Utc::now();
    let notice = format!("cost report reads {}", Coverage::of(&query, now));
    let jobs = with_progress(
        &meter,
        "job ledger",
        Some(&notice),
        cost_report::read_jobs(&ledger, &query, now),
    )
    .await
    .map_err(|e| app.store_error("job ledger", e))?;
    let report = cost_report::build(&jobs, crate::catalog::Catalog::shipped(), &query, now);
    let format = args.format.unwrap_or(match output {
        Output::Json => ReportFormat::Json,
        Output::Text => ReportFormat::Table,
    });
    let text = match format {
        ReportFormat::Table => report.to_string(),
        ReportFormat::Csv => report.to_csv(),
        ReportFormat::Html => report.to_html(),
        ReportFormat::Json => match &args.out {
            None => return emit(Output::Json, &report),
            Some(_) => serde_json::to_string_pretty(&report)
                .map_err(|e| CliError::Runtime(format!("cannot encode the report: {e}")))?,
        },
    };
    match &args.out {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| CliError::Runtime(format!("writing {}: {e}", path.display()))),
        None => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                Err(e) => Err(CliError::Runtime(format!("cannot write output: {e}"))),
            }
        }
    }
}
