//! The baseline: a generic autoscaling group of COUNT warm instances of one type.
//!
//! Jobs run first in, first out by arrival on the first free instance, with no tier
//! ordering (so a claims job may start before its batch's eligibility load has finished:
//! the report counts those violations). Instances are warm: no boot time, and every one is
//! billed for the whole makespan. A job sized for more vCPUs than the generic type has
//! still runs, slower by the ratio of vCPUs; one sized for fewer is not faster. A failed
//! attempt is retried at once on the same instance, as a generic worker would, up to the
//! attempts the job's retry policy allows.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{BaselineSpec, JobInfo, Outcome};
use crate::catalog::InstanceType;
use crate::cost;

/// What the autoscaling group did over the whole trace.
#[derive(Debug, Clone)]
pub(crate) struct BaselineRun {
    pub outcomes: Vec<Outcome>,
    /// COUNT × the makespan, per second with the 60 s minimum.
    pub billed_s: u64,
    pub cost_usd: f64,
    pub usd_per_hour: f64,
}

/// How long a job runs on a generic instance of `vcpus`.
fn run_ms_on(info: &JobInfo, vcpus: u32) -> u64 {
    if info.need_vcpus <= vcpus || vcpus == 0 {
        return info.run_ms;
    }
    let scaled = info.run_ms as f64 * f64::from(info.need_vcpus) / f64::from(vcpus);
    scaled.ceil() as u64
}

pub(crate) fn run(infos: &[JobInfo], spec: &BaselineSpec, t: &InstanceType) -> BaselineRun {
    let mut order: Vec<usize> = (0..infos.len()).collect();
    order.sort_by_key(|&i| (infos[i].arrive_ms, i));
    let mut free: BinaryHeap<Reverse<(u64, u32)>> =
        (0..spec.count).map(|n| Reverse((0, n))).collect();
    let mut busy = vec![(0u64, 0u64); infos.len()];
    let first = order.first().map_or(0, |&i| infos[i].arrive_ms);
    let mut last = first;
    for &i in &order {
        let Reverse((free_at, n)) = free.pop().expect("the group has at least one instance");
        let start = free_at.max(infos[i].arrive_ms);
        let end = start + run_ms_on(&infos[i], t.vcpus) * u64::from(infos[i].attempts);
        busy[i] = (start, end);
        last = last.max(end);
        free.push(Reverse((end, n)));
    }
    let makespan_ms = last - first;
    let per_instance = cost::billed_seconds(makespan_ms as f64 / 1000.0);
    let billed_s = per_instance * u64::from(spec.count);
    let cost_usd = f64::from(spec.count)
        * (cost::compute_usd(t.on_demand_usd_per_hour, per_instance)
            + cost::volume_usd(spec.volume_gib, per_instance));
    // A job is attributed the seconds it kept an instance busy, priced pro rata; the rest of
    // the bill is idle warm capacity.
    let usd_per_ms = if billed_s == 0 {
        0.0
    } else {
        cost_usd / (billed_s as f64 * 1000.0)
    };
    let outcomes = busy
        .iter()
        .zip(infos)
        .map(|(&(start, end), info)| Outcome {
            started_ms: Some(start),
            finished_ms: info.succeeds.then_some(end),
            billed_s: (end - start) as f64 / 1000.0,
            cost_usd: (end - start) as f64 * usd_per_ms,
        })
        .collect();
    BaselineRun {
        outcomes,
        billed_s,
        cost_usd,
        usd_per_hour: t.on_demand_usd_per_hour,
    }
}
