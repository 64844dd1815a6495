//! `mayfly cost report`: what the instances cost, from the ledger's jobs, with totals,
//! a breakdown (by payer, kind, batch, job or day) and the cost per payer per day, each split
//! into productive time and overhead. A pure function of jobs, the catalog and `now`; the
//! report prints as a table, CSV, JSON (schema in `docs/cost-report.md`) or one HTML file.
//!
//! An attempt belongs to the report when its instance was launched in `[from, to)`, and to
//! the day (UTC) of its launch.

mod attempt;
mod html;
mod read;
mod render;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::Catalog;
use crate::cost::AttemptCost;
use crate::job::Job;

pub use attempt::{attempt_line, job_lines, AttemptLine, BillingEnd};
pub use read::{read_jobs, Coverage};

/// The version of the JSON document; bumped on an incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// How the breakdown groups attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    #[default]
    Payer,
    Kind,
    /// `payer/batch`: batches are per payer.
    Batch,
    Job,
    /// The UTC day of the launch.
    Day,
}

/// Which attempts a report covers.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Launched at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Launched before this time.
    pub to: Option<DateTime<Utc>>,
    /// Only this payer's jobs.
    pub payer: Option<String>,
    pub by: GroupBy,
}

/// Sums over attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    pub attempts: u32,
    pub billed_seconds: u64,
    pub productive_seconds: u64,
    pub overhead_seconds: u64,
    pub compute_usd: f64,
    pub volume_usd: f64,
    pub productive_usd: f64,
    pub overhead_usd: f64,
    pub total_usd: f64,
}

impl Totals {
    fn add(&mut self, c: &AttemptCost) {
        self.attempts += 1;
        self.billed_seconds += c.billed_seconds;
        self.productive_seconds += c.productive_seconds;
        self.overhead_seconds += c.overhead_seconds;
        self.compute_usd += c.compute_usd;
        self.volume_usd += c.volume_usd;
        self.productive_usd += c.productive_usd;
        self.overhead_usd += c.overhead_usd;
        self.total_usd += c.total_usd();
    }

    /// Share of the cost that was productive (0 when nothing was billed).
    pub fn productive_share(&self) -> f64 {
        if self.total_usd > 0.0 {
            self.productive_usd / self.total_usd
        } else {
            0.0
        }
    }
}

/// One row of the breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub key: String,
    pub jobs: u32,
    #[serde(flatten)]
    pub totals: Totals,
}

/// One payer's cost on one day (the chart's bars).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PayerDay {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub payer_id: String,
    pub productive_usd: f64,
    pub overhead_usd: f64,
    pub total_usd: f64,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostReport {
    pub schema_version: u32,
    pub generated_at: DateTime<Utc>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub payer: Option<String>,
    pub by: GroupBy,
    pub totals: Totals,
    /// Attempts still running, costed to `generated_at`.
    pub open_attempts: u32,
    pub groups: Vec<Group>,
    pub payer_days: Vec<PayerDay>,
    pub attempts: Vec<AttemptLine>,
}

fn group_key(line: &AttemptLine, by: GroupBy) -> String {
    match by {
        GroupBy::Payer => line.payer_id.clone(),
        GroupBy::Kind => line.kind.clone(),
        GroupBy::Batch => format!("{}/{}", line.payer_id, line.batch),
        GroupBy::Job => line.job_id.clone(),
        GroupBy::Day => day(line),
    }
}

fn day(line: &AttemptLine) -> String {
    line.launched_at.format("%Y-%m-%d").to_string()
}

/// Builds the report over `jobs` at `now`.
pub fn build(jobs: &[Job], catalog: &Catalog, query: &Query, now: DateTime<Utc>) -> CostReport {
    let mut attempts: Vec<AttemptLine> = jobs
        .iter()
        .filter(|j| query.payer.as_ref().is_none_or(|p| *p == j.payer_id))
        .flat_map(|j| job_lines(j, catalog, now))
        .filter(|l| query.from.is_none_or(|t| l.launched_at >= t))
        .filter(|l| query.to.is_none_or(|t| l.launched_at < t))
        .collect();
    attempts.sort_by(|a, b| {
        (a.launched_at, &a.job_id, a.attempt).cmp(&(b.launched_at, &b.job_id, b.attempt))
    });
    let mut totals = Totals::default();
    let mut groups: BTreeMap<String, (BTreeSet<&str>, Totals)> = BTreeMap::new();
    let mut days: BTreeMap<(String, String), Totals> = BTreeMap::new();
    for l in &attempts {
        totals.add(&l.cost);
        let g = groups.entry(group_key(l, query.by)).or_default();
        g.0.insert(&l.job_id);
        g.1.add(&l.cost);
        days.entry((day(l), l.payer_id.clone()))
            .or_default()
            .add(&l.cost);
    }
    CostReport {
        schema_version: SCHEMA_VERSION,
        generated_at: now,
        from: query.from,
        to: query.to,
        payer: query.payer.clone(),
        by: query.by,
        totals,
        open_attempts: attempts.iter().filter(|l| l.open).count() as u32,
        groups: groups
            .into_iter()
            .map(|(key, (jobs, totals))| Group {
                key,
                jobs: jobs.len() as u32,
                totals,
            })
            .collect(),
        payer_days: days
            .into_iter()
            .map(|((day, payer_id), t)| PayerDay {
                day,
                payer_id,
                productive_usd: t.productive_usd,
                overhead_usd: t.overhead_usd,
                total_usd: t.total_usd,
            })
            .collect(),
        attempts,
    }
}

impl CostReport {
    /// The breakdown as CSV: a header, then one row per group.
    pub fn to_csv(&self) -> String {
        render::csv(self)
    }

    /// One self-contained HTML page: totals, the chart of cost per payer per day
    /// (productive vs overhead), and the breakdown.
    pub fn to_html(&self) -> String {
        html::page(self)
    }
}

#[cfg(test)]
mod tests;
