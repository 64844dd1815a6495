//! mayfly's side of the simulation: the production planner on a virtual clock with a
//! modelled fleet.
//!
//! Each tick is one pass, as the real trigger runs it: apply the `finished` events that
//! arrived since the last pass, ingest new requests, plan from the ledger snapshot, and
//! launch walking each ladder (a rung is refused for capacity at the model's rate; a launch
//! whose every rung is refused stays queued for the next pass). A launched instance boots,
//! runs its job, and terminates a few seconds after the job ends; it is billed per second
//! from launch to termination with the 60 s minimum. An attempt that exits non-zero goes
//! through the job kind's retry policy (`retry::decide`): back to queued after its backoff,
//! or dead, which blocks the higher tiers of its batch.
//!
//! Ticks are only simulated when something can change the plan (an arrival, a finished job,
//! a launch budget spent or a refused launch): the planner is pure, so a pass over an
//! unchanged snapshot would plan the same launches (none).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap;

use super::{exit_of, ms, JobInfo, Outcome, Setup, SplitMix64, TraceJob};
use crate::catalog::InstanceType;
use crate::cost::{self, AttemptSpan};
use crate::job::JobState;
use crate::plan::{self, Reason, Snapshot};
use crate::retry::{self, Decision, FailureCause};
use crate::summary::{InstanceRef, Interner, JobSummary};

/// The virtual clock's zero: 2026-11-01T00:00:00Z.
const EPOCH_S: i64 = 1_793_491_200;
const NO_SLOT: u32 = u32::MAX;

/// What mayfly did over the whole trace.
#[derive(Debug, Clone, Default)]
pub(crate) struct FleetRun {
    pub outcomes: Vec<Outcome>,
    /// Passes that planned (ticks with something new to plan from).
    pub passes: u64,
    pub launches: u64,
    /// Rungs refused for capacity (each moved the launch to the next rung).
    pub capacity_errors: u64,
    /// Launches whose every rung was refused: the job stayed queued for a later pass.
    pub refused_launches: u64,
    /// Attempts that exited non-zero.
    pub failed_attempts: u64,
    /// Jobs whose retries ran out (or whose exit code is not retryable).
    pub dead: u64,
}

fn clock(at_ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(EPOCH_S * 1000 + at_ms as i64)
        .expect("the virtual clock stays within chrono's range")
}

fn millis(at: DateTime<Utc>) -> u64 {
    (at.timestamp_millis() - EPOCH_S * 1000).max(0) as u64
}

/// Asks for a pass at the first tick at or after `at`.
fn want_pass(next: &mut Option<u64>, at: u64, interval: u64) {
    let tick = at.div_ceil(interval) * interval;
    *next = Some(next.map_or(tick, |n| n.min(tick)));
}

/// The ledger snapshot, kept incrementally: jobs enter at ingest and leave when they
/// succeed. The production snapshot also carries a batch's succeeded jobs, but the planner's
/// tier gates count only jobs that have not succeeded, so dropping them changes no launch
/// and keeps each pass proportional to the live work, not to the trace.
struct Ledger {
    live: Vec<JobSummary>,
    /// Trace index of each live entry.
    live_job: Vec<usize>,
    /// Live slot of each trace job, or `NO_SLOT`.
    slot: Vec<u32>,
    interner: Interner,
}

impl Ledger {
    fn ingest(&mut self, i: usize, job: &TraceJob, info: &JobInfo) {
        self.slot[i] = self.live.len() as u32;
        self.live_job.push(i);
        self.live.push(JobSummary {
            job_id: job.job_id.as_str().into(),
            payer_id: self.interner.intern(&job.payer_id),
            kind: self.interner.intern(&job.kind),
            batch: self.interner.intern(&job.batch),
            state: JobState::Queued,
            priority: job.priority.unwrap_or(0),
            attempt: 0,
            submitted_at: clock(info.arrive_ms),
            not_before: None,
            input_bytes: job.input_bytes(),
            instance: None,
            reason: None,
        });
    }

    fn entry(&mut self, i: usize) -> &mut JobSummary {
        &mut self.live[self.slot[i] as usize]
    }

    fn succeed(&mut self, i: usize) {
        let at = self.slot[i] as usize;
        self.live.swap_remove(at);
        self.live_job.swap_remove(at);
        self.slot[i] = NO_SLOT;
        if let Some(&moved) = self.live_job.get(at) {
            self.slot[moved] = at as u32;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrive,
    Finish,
}

/// Runs the trace through mayfly's planner and the modelled fleet.
pub(crate) fn run(trace: &[TraceJob], infos: &[JobInfo], setup: &Setup<'_>) -> FleetRun {
    let model = setup.model;
    let interval = ms(model.interval_s).max(1);
    let mut rng = SplitMix64::new(setup.seed);
    let ids: FxHashMap<&str, usize> = trace
        .iter()
        .enumerate()
        .map(|(i, j)| (j.job_id.as_str(), i))
        .collect();
    let mut ledger = Ledger {
        live: Vec::new(),
        live_job: Vec::new(),
        slot: vec![NO_SLOT; trace.len()],
        interner: Interner::default(),
    };
    let mut out = FleetRun {
        outcomes: vec![Outcome::default(); trace.len()],
        ..FleetRun::default()
    };
    let mut events: BinaryHeap<Reverse<(u64, Event, usize)>> = infos
        .iter()
        .enumerate()
        .map(|(i, j)| Reverse((j.arrive_ms, Event::Arrive, i)))
        .collect();
    let mut arrived: Vec<usize> = Vec::new();
    let mut finished: Vec<usize> = Vec::new();
    let mut next_tick: Option<u64> = None;

    loop {
        let event = events.peek().map(|Reverse(e)| *e);
        let now = match (event, next_tick) {
            (Some((t, kind, i)), tick) if tick.is_none_or(|nt| t <= nt) => {
                events.pop();
                match kind {
                    Event::Arrive => arrived.push(i),
                    Event::Finish => finished.push(i),
                }
                want_pass(&mut next_tick, t, interval);
                continue;
            }
            (_, Some(tick)) => tick,
            (_, None) => break,
        };
        next_tick = None;
        out.passes += 1;

        // Apply events and ingest, as a pass does before planning.
        for i in finished.drain(..) {
            let attempt = ledger.entry(i).attempt;
            let code = exit_of(&trace[i], attempt);
            if code == 0 {
                ledger.succeed(i);
                continue;
            }
            out.failed_attempts += 1;
            let kind = setup.payers[infos[i].payer]
                .kind(&trace[i].kind)
                .expect("trace jobs were resolved to a kind");
            let cause = FailureCause::ExitCode { code };
            let job = ledger.entry(i);
            job.instance = None;
            match retry::decide(&kind.retry, &trace[i].job_id, attempt, &cause, clock(now)) {
                Decision::Retry { not_before, reason } => {
                    job.state = JobState::Queued;
                    job.not_before = Some(not_before);
                    job.reason = Some(reason.into());
                    want_pass(&mut next_tick, millis(not_before), interval);
                }
                Decision::Dead { reason } => {
                    job.state = JobState::Dead;
                    job.reason = Some(reason.into());
                    out.dead += 1;
                }
            }
        }
        for i in arrived.drain(..) {
            ledger.ingest(i, &trace[i], &infos[i]);
        }

        let snapshot = Snapshot {
            jobs: &ledger.live,
            payers: setup.payers,
            catalog: setup.catalog,
            caps: model.caps,
            vcpu_quota: model.vcpu_quota,
            account_quotas: crate::quota::AccountQuota::NotRead,
            launch_budget: model.launch_budget,
            now: clock(now),
        };
        let plan = plan::plan(&snapshot);
        let mut again = plan
            .waiting
            .iter()
            .any(|w| matches!(w.reason, Reason::LaunchBudget { .. }));
        let mut placed: Vec<(usize, &InstanceType)> = Vec::with_capacity(plan.launches.len());
        for launch in &plan.launches {
            let i = ids[launch.job_id];
            let rung = launch.ladder.iter().find(|_| {
                let refused = rng.chance(model.capacity_error_rate);
                out.capacity_errors += u64::from(refused);
                !refused
            });
            match rung.and_then(|r| setup.catalog.get(&r.instance_type)) {
                Some(t) => placed.push((i, t)),
                None => {
                    out.refused_launches += 1;
                    again = true;
                }
            }
        }
        drop(plan);

        for (i, t) in placed {
            let info = &infos[i];
            let attempt = ledger.entry(i).attempt + 1;
            let ok = exit_of(&trace[i], attempt) == 0;
            let boot = ms(rng.range(model.boot_s.0, model.boot_s.1));
            let shutdown = ms(rng.range(model.shutdown_s.0, model.shutdown_s.1));
            let started = now + boot;
            let done = started + info.run_ms;
            let span = AttemptSpan {
                launched: clock(now),
                started: Some(clock(started)),
                finished: Some(clock(done)),
                ended: clock(done + shutdown),
                succeeded: ok,
            };
            // The catalog holds on-demand prices; spot launches are priced the same.
            let c = cost::attempt_cost(t.on_demand_usd_per_hour, info.volume_gib, &span);
            let o = &mut out.outcomes[i];
            o.started_ms = o.started_ms.or(Some(started));
            o.finished_ms = ok.then_some(done);
            o.billed_s += c.billed_seconds as f64;
            o.cost_usd += c.total_usd();
            out.launches += 1;
            let job = ledger.entry(i);
            job.state = JobState::Running;
            job.attempt = attempt;
            job.instance = Some(Box::new(InstanceRef {
                instance_type: Some(t.name.clone()),
                instance_id: None,
                capacity: None,
            }));
            events.push(Reverse((done, Event::Finish, i)));
        }
        if again {
            want_pass(&mut next_tick, now + 1, interval);
        }
    }
    out
}
