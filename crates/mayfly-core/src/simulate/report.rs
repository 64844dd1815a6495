//! The simulation report: per payer and tier, mayfly beside the baseline (makespan, cost,
//! billed instance-seconds per job-second, tier-order violations), and the totals.

use std::fmt;

use serde::Serialize;

use super::baseline::BaselineRun;
use super::fleet::FleetRun;
use super::{BaselineSpec, JobInfo, Model, Outcome, Setup, TraceJob};

/// mayfly's design target for billed instance-seconds per job-second (DESIGN §7).
pub const RATIO_TARGET: f64 = 1.15;

/// Figures for a set of jobs on one side of the comparison.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub jobs: usize,
    /// Jobs that never succeeded: dead, blocked behind a dead lower tier, or never placed.
    pub unfinished: usize,
    /// First arrival to the last job's end.
    pub makespan_s: f64,
    pub cost_usd: f64,
    /// Billed instance-seconds.
    pub billed_s: f64,
    /// Seconds the jobs' commands need (the trace's run times of the jobs that ran).
    pub job_s: f64,
    /// `billed_s / job_s`: 1.0 is no overhead at all.
    pub billed_per_job_s: f64,
    /// Jobs that started before every lower-tier job of their payer and batch had succeeded.
    pub violations: usize,
}

/// One payer and tier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub payer_id: String,
    pub tier: u8,
    pub mayfly: Stats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Stats>,
}

/// The whole trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    pub mayfly: Stats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Stats>,
}

/// The baseline group and its idle (warm, unattributed) share of the bill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselineSummary {
    #[serde(flatten)]
    pub spec: BaselineSpec,
    pub usd_per_hour: f64,
    pub idle_billed_s: f64,
    pub idle_cost_usd: f64,
}

/// What mayfly's scheduler and fleet did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FleetSummary {
    pub passes: u64,
    pub launches: u64,
    pub capacity_errors: u64,
    pub refused_launches: u64,
    pub failed_attempts: u64,
    pub dead: u64,
}

/// The result of `mayfly simulate`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub jobs: usize,
    pub model: Model,
    pub fleet: FleetSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineSummary>,
    pub rows: Vec<Row>,
    pub total: Totals,
}

/// Which jobs started before a lower-tier job of their (payer, batch) had finished.
fn violations(infos: &[JobInfo], outcomes: &[Outcome]) -> Vec<bool> {
    let groups = infos
        .iter()
        .map(|j| j.group as usize + 1)
        .max()
        .unwrap_or(0);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); groups];
    for (i, j) in infos.iter().enumerate() {
        members[j.group as usize].push(i);
    }
    let mut violated = vec![false; infos.len()];
    for mut group in members {
        group.sort_by_key(|&i| infos[i].tier);
        // The latest end among lower tiers; `None` once one of them never finished.
        let mut done_below: Option<u64> = Some(0);
        let mut at = 0;
        while at < group.len() {
            let tier = infos[group[at]].tier;
            let end = at
                + group[at..]
                    .iter()
                    .take_while(|&&i| infos[i].tier == tier)
                    .count();
            for &i in &group[at..end] {
                if let Some(started) = outcomes[i].started_ms {
                    violated[i] = done_below.is_none_or(|d| started < d);
                }
            }
            for &i in &group[at..end] {
                done_below = done_below
                    .zip(outcomes[i].finished_ms)
                    .map(|(a, b)| a.max(b));
            }
            at = end;
        }
    }
    violated
}

fn stats(jobs: &[usize], infos: &[JobInfo], outcomes: &[Outcome], violated: &[bool]) -> Stats {
    let mut s = Stats {
        jobs: jobs.len(),
        ..Stats::default()
    };
    let (mut first, mut last) = (u64::MAX, None::<u64>);
    for &i in jobs {
        let o = &outcomes[i];
        first = first.min(infos[i].arrive_ms);
        match o.finished_ms {
            Some(f) => {
                last = Some(last.map_or(f, |l| l.max(f)));
                s.job_s += infos[i].run_ms as f64 / 1000.0;
            }
            None => s.unfinished += 1,
        }
        s.billed_s += o.billed_s;
        s.cost_usd += o.cost_usd;
        s.violations += usize::from(violated[i]);
    }
    s.makespan_s = last.map_or(0.0, |l| l.saturating_sub(first) as f64 / 1000.0);
    s.billed_per_job_s = if s.job_s > 0.0 {
        s.billed_s / s.job_s
    } else {
        0.0
    };
    s
}

pub(crate) fn build(
    trace: &[TraceJob],
    infos: &[JobInfo],
    setup: &Setup<'_>,
    mayfly: &FleetRun,
    baseline: Option<&BaselineRun>,
) -> Report {
    let mut keys: Vec<(&str, u8, usize)> = infos
        .iter()
        .enumerate()
        .map(|(i, j)| (trace[i].payer_id.as_str(), j.tier, i))
        .collect();
    keys.sort_unstable();
    let m_violated = violations(infos, &mayfly.outcomes);
    let b_violated = baseline.map(|b| violations(infos, &b.outcomes));
    let side = |jobs: &[usize]| {
        let m = stats(jobs, infos, &mayfly.outcomes, &m_violated);
        let b = baseline
            .zip(b_violated.as_deref())
            .map(|(b, v)| stats(jobs, infos, &b.outcomes, v));
        (m, b)
    };
    let mut rows = Vec::new();
    for chunk in keys.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        let jobs: Vec<usize> = chunk.iter().map(|k| k.2).collect();
        let (m, b) = side(&jobs);
        rows.push(Row {
            payer_id: chunk[0].0.to_owned(),
            tier: chunk[0].1,
            mayfly: m,
            baseline: b,
        });
    }
    let all: Vec<usize> = (0..infos.len()).collect();
    let (m, mut b) = side(&all);
    let summary = baseline.zip(b.as_mut()).map(|(run, b)| {
        let attributed = (b.billed_s, b.cost_usd);
        // The group bills every instance for the whole makespan, busy or not.
        b.billed_s = run.billed_s as f64;
        b.cost_usd = run.cost_usd;
        b.billed_per_job_s = if b.job_s > 0.0 {
            b.billed_s / b.job_s
        } else {
            0.0
        };
        BaselineSummary {
            spec: setup.baseline.cloned().expect("a baseline run has a spec"),
            usd_per_hour: run.usd_per_hour,
            idle_billed_s: (b.billed_s - attributed.0).max(0.0),
            idle_cost_usd: (b.cost_usd - attributed.1).max(0.0),
        }
    });
    Report {
        seed: setup.seed,
        jobs: infos.len(),
        model: setup.model.clone(),
        fleet: FleetSummary {
            passes: mayfly.passes,
            launches: mayfly.launches,
            capacity_errors: mayfly.capacity_errors,
            refused_launches: mayfly.refused_launches,
            failed_attempts: mayfly.failed_attempts,
            dead: mayfly.dead,
        },
        baseline: summary,
        rows,
        total: Totals {
            mayfly: m,
            baseline: b,
        },
    }
}

/// `3d04h`, `5h07m`, `12m30s`, `45s`.
pub fn human_seconds(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        86_400.. => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
        3600.. => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        60.. => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{s}s"),
    }
}

fn cells(f: &mut fmt::Formatter<'_>, s: &Stats) -> fmt::Result {
    write!(
        f,
        "  {:>9} {:>10.2} {:>10.2} {:>5}",
        human_seconds(s.makespan_s),
        s.cost_usd,
        s.billed_per_job_s,
        s.violations
    )
}

fn line(
    f: &mut fmt::Formatter<'_>,
    label: &str,
    tier: &str,
    m: &Stats,
    b: Option<&Stats>,
) -> fmt::Result {
    write!(f, "{label:<16} {tier:>4} {:>6}", m.jobs)?;
    cells(f, m)?;
    if let Some(b) = b {
        write!(f, "   ")?;
        cells(f, b)?;
    }
    if m.unfinished > 0 {
        write!(f, "  ({} never succeeded)", m.unfinished)?;
    }
    writeln!(f)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = "makespan   cost_usd billed/job  viol";
        write!(f, "{:<16} {:>4} {:>6}  {:<38}", "", "", "", "mayfly")?;
        if let Some(b) = &self.baseline {
            let s = &b.spec;
            write!(f, "   baseline asg:{}:{}", s.count, s.instance_type)?;
        }
        writeln!(f)?;
        write!(f, "{:<16} {:>4} {:>6}  {side:>38}", "payer", "tier", "jobs")?;
        if self.baseline.is_some() {
            write!(f, "   {side:>38}")?;
        }
        writeln!(f)?;
        for r in &self.rows {
            line(
                f,
                &r.payer_id,
                &r.tier.to_string(),
                &r.mayfly,
                r.baseline.as_ref(),
            )?;
        }
        if let Some(b) = &self.baseline {
            writeln!(
                f,
                "{:<16} {:>4} {:>6}  {:>38}     {:>9} {:>10.2}",
                "(baseline idle)",
                "",
                "",
                "",
                human_seconds(b.idle_billed_s / f64::from(b.spec.count)),
                b.idle_cost_usd,
            )?;
        }
        line(
            f,
            "total",
            "",
            &self.total.mayfly,
            self.total.baseline.as_ref(),
        )?;
        writeln!(f)?;
        let m = &self.total.mayfly;
        write!(
            f,
            "billed instance-seconds / job-seconds: mayfly {:.3} (target ≤ {RATIO_TARGET})",
            m.billed_per_job_s
        )?;
        if let Some(b) = &self.total.baseline {
            write!(f, ", baseline {:.3}", b.billed_per_job_s)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "mayfly: {} passes, {} launches, {} capacity errors (next rung), {} launches refused on every rung (retried), {} failed attempts, {} dead jobs",
            self.fleet.passes,
            self.fleet.launches,
            self.fleet.capacity_errors,
            self.fleet.refused_launches,
            self.fleet.failed_attempts,
            self.fleet.dead
        )?;
        writeln!(
            f,
            "model: pass every {}s, boot {}-{}s, shutdown {}-{}s, capacity errors {:.1}% per rung, seed {}",
            self.model.interval_s,
            self.model.boot_s.0,
            self.model.boot_s.1,
            self.model.shutdown_s.0,
            self.model.shutdown_s.1,
            self.model.capacity_error_rate * 100.0,
            self.seed
        )
    }
}
