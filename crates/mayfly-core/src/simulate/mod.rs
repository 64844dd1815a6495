//! Capacity planning (`mayfly simulate`): a discrete-event simulation on a virtual clock that
//! runs the production planner ([`crate::plan::plan`]) against a modelled fleet, and the same
//! trace through a fixed-size generic autoscaling group for comparison.
//!
//! - [`trace`]: the trace format (JSON lines of arrivals with their true run time).
//! - [`generate`]: the seeded reference workload (bursts, trickles, tier chains).
//! - `fleet`: mayfly's side: one pass per tick, a right-sized instance per job, boot times,
//!   capacity errors walking the ladder, shutdown after the job, per-second billing.
//! - `baseline`: the autoscaling group: COUNT warm instances of one type, FIFO, no tiers.
//! - [`report`]: per payer and tier figures for both, and the totals.
//!
//! Nothing here does I/O or reads the wall clock; every draw comes from one seeded
//! [`SplitMix64`], so the same trace, profiles and seed always give the same report.

mod baseline;
mod fleet;
pub mod generate;
pub mod report;
mod rng;
pub mod trace;

#[cfg(test)]
mod tests;

use std::str::FromStr;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::profile::{GlobalCaps, Payer, RetryPolicy};
use crate::retry::{self, Decision, FailureCause};
use crate::sizing::{self, Requirement};

pub use report::Report;
pub use rng::SplitMix64;
pub use trace::{parse_trace, to_jsonl, TraceError, TraceJob};

/// How the simulated fleet and scheduler behave.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    /// Seconds between scheduling passes (the trigger's cadence).
    pub interval_s: f64,
    /// Boot time, launch to the job's start: uniform in `[min, max)` seconds.
    pub boot_s: (f64, f64),
    /// From the job's end to the instance's termination: uniform in `[min, max)` seconds.
    pub shutdown_s: (f64, f64),
    /// Chance that one rung of a launch's ladder is refused for capacity.
    pub capacity_error_rate: f64,
    /// RunInstances calls one pass may make.
    pub launch_budget: u32,
    pub caps: GlobalCaps,
    pub vcpu_quota: Option<u32>,
}

impl Default for Model {
    fn default() -> Self {
        Self {
            interval_s: 60.0,
            boot_s: (30.0, 90.0),
            shutdown_s: (1.0, 5.0),
            capacity_error_rate: 0.05,
            launch_budget: 60,
            caps: GlobalCaps::default(),
            vcpu_quota: None,
        }
    }
}

/// The generic autoscaling group mayfly is compared with: `asg:COUNT:TYPE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BaselineSpec {
    pub count: u32,
    pub instance_type: String,
    /// Root volume of each instance (gp3), billed like mayfly's.
    pub volume_gib: u32,
}

impl FromStr for BaselineSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let [kind, count, instance_type] = parts[..] else {
            return Err(format!("`{s}` is not asg:COUNT:TYPE"));
        };
        if kind != "asg" {
            return Err(format!("`{kind}` is not a known baseline (asg:COUNT:TYPE)"));
        }
        let count: u32 = count
            .parse()
            .ok()
            .filter(|c| (1..=10_000).contains(c))
            .ok_or_else(|| format!("COUNT `{count}` is not a number in 1..=10000"))?;
        Ok(Self {
            count,
            instance_type: instance_type.to_owned(),
            volume_gib: 30,
        })
    }
}

/// Everything a simulation runs with, besides the trace.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    pub payers: &'a [Payer],
    pub catalog: &'a Catalog,
    pub model: &'a Model,
    pub baseline: Option<&'a BaselineSpec>,
    pub seed: u64,
}

/// Why a trace cannot be simulated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    #[error("trace is empty: nothing to simulate")]
    EmptyTrace,
    #[error("{job_id}: payer_id: no profile for payer `{payer_id}`")]
    UnknownPayer { job_id: String, payer_id: String },
    #[error("{job_id}: kind: payer `{payer_id}` has no job kind `{kind}`")]
    UnknownKind {
        job_id: String,
        payer_id: String,
        kind: String,
    },
    #[error("{job_id}: job_id: appears more than once in the trace")]
    DuplicateJob { job_id: String },
    #[error("baseline: instance type `{0}` is not in the catalog")]
    UnknownBaselineType(String),
    #[error("model: {field}: {reason}")]
    Model { field: &'static str, reason: String },
}

/// A trace job resolved against its payer's profile.
#[derive(Debug, Clone)]
pub(crate) struct JobInfo {
    pub payer: usize,
    pub tier: u8,
    /// Index of its (payer, batch).
    pub group: u32,
    pub arrive_ms: u64,
    pub run_ms: u64,
    /// vCPUs of the job's first-choice instance type (what its run time is measured on).
    pub need_vcpus: u32,
    pub volume_gib: u32,
    /// Attempts its retry policy lets it make, and whether the last of them succeeds.
    pub attempts: u32,
    pub succeeds: bool,
}

/// What happened to one job on one side of the comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Outcome {
    /// When its first attempt's command started.
    pub started_ms: Option<u64>,
    /// When the attempt that succeeded ended; `None` if none did.
    pub finished_ms: Option<u64>,
    /// Billed instance-seconds attributed to the job, over all its attempts.
    pub billed_s: f64,
    pub cost_usd: f64,
}

fn ms(seconds: f64) -> u64 {
    (seconds * 1000.0).round() as u64
}

fn check_model(m: &Model) -> Result<(), SimError> {
    let bad = |field, reason: String| Err(SimError::Model { field, reason });
    if !(m.interval_s.is_finite() && m.interval_s >= 1.0) {
        return bad("interval", format!("{} s is below 1 s", m.interval_s));
    }
    for (field, (lo, hi)) in [("boot", m.boot_s), ("shutdown", m.shutdown_s)] {
        if !(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi) {
            return bad(field, format!("{lo}..{hi} s is not a range of seconds"));
        }
    }
    if !(0.0..1.0).contains(&m.capacity_error_rate) {
        let reason = format!("{} is not in [0, 1)", m.capacity_error_rate);
        return bad("capacity_error_rate", reason);
    }
    if m.launch_budget == 0 {
        return bad("launch_budget", "must be at least 1".into());
    }
    Ok(())
}

/// The exit code of attempt `n` (1-based).
pub(crate) fn exit_of(job: &TraceJob, n: u32) -> i32 {
    job.exits
        .get(n.saturating_sub(1) as usize)
        .copied()
        .unwrap_or(0)
}

/// How many attempts the retry policy allows the job, and whether the last one succeeds.
fn attempts_under(policy: &RetryPolicy, job: &TraceJob) -> (u32, bool) {
    let now = chrono::DateTime::UNIX_EPOCH;
    let mut n = 1;
    loop {
        let code = exit_of(job, n);
        if code == 0 {
            return (n, true);
        }
        let cause = FailureCause::ExitCode { code };
        if let Decision::Dead { .. } = retry::decide(policy, &job.job_id, n, &cause, now) {
            return (n, false);
        }
        n += 1;
    }
}

/// Resolves every job's payer, tier, group and sizing; refuses what the planner could
/// never place (unknown payers or kinds) and duplicate ids.
fn resolve(trace: &[TraceJob], setup: &Setup<'_>) -> Result<Vec<JobInfo>, SimError> {
    let payer_index: FxHashMap<&str, usize> = setup
        .payers
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id(), i))
        .collect();
    let mut groups: FxHashMap<(&str, &str), u32> = FxHashMap::default();
    let mut ids: FxHashMap<&str, ()> = FxHashMap::default();
    let mut infos = Vec::with_capacity(trace.len());
    for job in trace {
        if ids.insert(&job.job_id, ()).is_some() {
            return Err(SimError::DuplicateJob {
                job_id: job.job_id.clone(),
            });
        }
        let Some(&p) = payer_index.get(&*job.payer_id) else {
            return Err(SimError::UnknownPayer {
                job_id: job.job_id.clone(),
                payer_id: job.payer_id.clone(),
            });
        };
        let payer = &setup.payers[p];
        let Some(kind) = payer.kind(&job.kind) else {
            return Err(SimError::UnknownKind {
                job_id: job.job_id.clone(),
                payer_id: job.payer_id.clone(),
                kind: job.kind.clone(),
            });
        };
        let next = groups.len() as u32;
        let group = *groups.entry((&job.payer_id, &job.batch)).or_insert(next);
        let types = sizing::choose_types(
            setup.catalog,
            &kind.compute,
            job.input_bytes(),
            payer.profile.caps.max_vcpus,
        );
        let need_vcpus = types.first().map_or_else(
            || Requirement::for_spec(&kind.compute, job.input_bytes()).vcpus,
            |t| t.vcpus,
        );
        let (attempts, succeeds) = attempts_under(&kind.retry, job);
        infos.push(JobInfo {
            payer: p,
            tier: kind.tier,
            group,
            arrive_ms: ms(job.at),
            run_ms: ms(job.run_seconds).max(1),
            need_vcpus,
            volume_gib: payer.profile.launch.root_volume_gib,
            attempts,
            succeeds,
        });
    }
    Ok(infos)
}

/// Simulates `trace` (sorted by arrival, as [`parse_trace`] returns it) under mayfly and,
/// when one is given, under the baseline autoscaling group.
pub fn simulate(trace: &[TraceJob], setup: &Setup<'_>) -> Result<Report, SimError> {
    if trace.is_empty() {
        return Err(SimError::EmptyTrace);
    }
    check_model(setup.model)?;
    let baseline_type = match setup.baseline {
        Some(spec) => Some(
            setup
                .catalog
                .get(&spec.instance_type)
                .ok_or_else(|| SimError::UnknownBaselineType(spec.instance_type.clone()))?,
        ),
        None => None,
    };
    let infos = resolve(trace, setup)?;
    let mayfly = fleet::run(trace, &infos, setup);
    let baseline = setup
        .baseline
        .zip(baseline_type)
        .map(|(spec, t)| baseline::run(&infos, spec, t));
    Ok(report::build(
        trace,
        &infos,
        setup,
        &mayfly,
        baseline.as_ref(),
    ))
}
