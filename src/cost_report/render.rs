//! The cost report as text (a table) and as CSV.

use std::fmt::{self, Write as _};

use super::{CostReport, GroupBy, Totals};
use crate::plan_view::table;

/// The CSV header; one row per group follows.
pub const CSV_HEADER: [&str; 11] = [
    "key",
    "jobs",
    "attempts",
    "billed_seconds",
    "productive_seconds",
    "overhead_seconds",
    "compute_usd",
    "volume_usd",
    "productive_usd",
    "overhead_usd",
    "total_usd",
];

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

pub(super) fn csv(r: &CostReport) -> String {
    let mut out = CSV_HEADER.join(",");
    out.push('\n');
    for g in &r.groups {
        let t = &g.totals;
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6}",
            csv_field(&g.key),
            g.jobs,
            t.attempts,
            t.billed_seconds,
            t.productive_seconds,
            t.overhead_seconds,
            t.compute_usd,
            t.volume_usd,
            t.productive_usd,
            t.overhead_usd,
            t.total_usd,
        );
    }
    out
}

fn usd(v: f64) -> String {
    format!("${v:.4}")
}

fn hours(seconds: u64) -> String {
    format!("{:.2}", seconds as f64 / 3600.0)
}

fn by_name(by: GroupBy) -> &'static str {
    match by {
        GroupBy::Payer => "PAYER",
        GroupBy::Kind => "KIND",
        GroupBy::Batch => "PAYER/BATCH",
        GroupBy::Job => "JOB",
        GroupBy::Day => "DAY",
    }
}

fn row(key: &str, jobs: Option<u32>, t: &Totals) -> Vec<String> {
    vec![
        key.to_owned(),
        jobs.map_or_else(String::new, |j| j.to_string()),
        t.attempts.to_string(),
        hours(t.billed_seconds),
        usd(t.compute_usd),
        usd(t.volume_usd),
        usd(t.productive_usd),
        usd(t.overhead_usd),
        usd(t.total_usd),
        format!("{:.0}%", t.productive_share() * 100.0),
    ]
}

impl fmt::Display for CostReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stamp = |t: Option<chrono::DateTime<chrono::Utc>>, none: &str| {
            t.map_or_else(
                || none.to_owned(),
                |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            )
        };
        write!(
            f,
            "Cost report at {}: launches from {} to {}",
            self.generated_at.format("%Y-%m-%dT%H:%M:%SZ"),
            stamp(self.from, "the start"),
            stamp(self.to, "now")
        )?;
        if let Some(p) = &self.payer {
            write!(f, ", payer {p}")?;
        }
        writeln!(f)?;
        let t = &self.totals;
        writeln!(
            f,
            "Total {} over {} attempt(s), {} instance-hours billed: productive {} ({:.0}%), overhead {}",
            usd(t.total_usd),
            t.attempts,
            hours(t.billed_seconds),
            usd(t.productive_usd),
            t.productive_share() * 100.0,
            usd(t.overhead_usd),
        )?;
        if self.open_attempts > 0 {
            writeln!(
                f,
                "{} attempt(s) still running, costed to now",
                self.open_attempts
            )?;
        }
        writeln!(f)?;
        let header = [
            by_name(self.by),
            "JOBS",
            "ATTEMPTS",
            "HOURS",
            "COMPUTE",
            "VOLUME",
            "PRODUCTIVE",
            "OVERHEAD",
            "TOTAL",
            "PRODUCTIVE%",
        ];
        let mut rows: Vec<Vec<String>> = self
            .groups
            .iter()
            .map(|g| row(&g.key, Some(g.jobs), &g.totals))
            .collect();
        rows.push(row("TOTAL", None, t));
        f.write_str(&table(&header, &rows))
    }
}
