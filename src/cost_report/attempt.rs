//! What one attempt cost, from the facts the ledger recorded as it happened: the price per
//! hour at launch, the root volume, and the times that bound its bill.
//!
//! The end of an attempt's bill, as best mayfly knows it, in this order:
//! 1. `ended_at`: mayfly terminated the instance (a timeout, a cancel, an orphan) or judged
//!    it gone;
//! 2. `finished_at`: the job's `finished` event (the instance shuts itself down right after);
//! 3. `gone_at`: the reconciler first saw the instance gone without a `finished` event;
//! 4. now, for the current attempt of a job still launching or running (cost so far);
//! 5. otherwise the last sign of life: the last heartbeat, the start, or the launch.
//!
//! An attempt that never got an instance (no capacity, a configuration error) cost nothing.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::Catalog;
use crate::cost::{self, AttemptCost, AttemptSpan};
use crate::job::{Attempt, Job, JobState, PriceSource};
use crate::profile::CapacityType;

/// Which recorded fact ended an attempt's bill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingEnd {
    /// mayfly terminated the instance or judged it gone (`ended_at`).
    Ended,
    /// The job's `finished` event.
    Finished,
    /// The reconciler first saw the instance gone.
    Gone,
    /// Still running: billed to now.
    Now,
    /// Nothing recorded its end: the last heartbeat, start or launch.
    LastSeen,
}

/// One attempt's instance and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptLine {
    pub job_id: String,
    pub payer_id: String,
    pub kind: String,
    pub batch: String,
    pub attempt: u32,
    pub instance_id: String,
    pub instance_type: String,
    pub capacity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    pub usd_per_hour: f64,
    /// Where the price came from (`on_demand`, `spot`, `on_demand_fallback`, `catalog`).
    pub price_source: String,
    pub root_volume_gib: u32,
    pub launched_at: DateTime<Utc>,
    pub billed_until: DateTime<Utc>,
    pub billing_end: BillingEnd,
    /// The instance may still be running: the cost is so far.
    pub open: bool,
    /// The attempt's job succeeded on it, so its run time is productive.
    pub succeeded: bool,
    pub cost: AttemptCost,
}

fn billing_end(job: &Job, a: &Attempt, now: DateTime<Utc>) -> (DateTime<Utc>, BillingEnd) {
    if let Some(t) = a.ended_at {
        return (t, BillingEnd::Ended);
    }
    if let Some(t) = a.finished_at {
        return (t, BillingEnd::Finished);
    }
    if let Some(t) = a.gone_at {
        return (t, BillingEnd::Gone);
    }
    if a.number == job.attempt && job.state.is_in_flight() {
        return (now, BillingEnd::Now);
    }
    let last = [a.last_heartbeat_at, a.started_at, a.launched_at]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(now);
    (last, BillingEnd::LastSeen)
}

/// The cost of one attempt at `now`, or `None` if it never had an instance.
pub fn attempt_line(
    job: &Job,
    a: &Attempt,
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Option<AttemptLine> {
    let instance_id = a.instance_id.clone()?;
    let launched_at = a.launched_at?;
    let rung = a.rung.as_ref();
    let instance_type = rung.map(|r| r.instance_type.clone()).unwrap_or_default();
    let capacity = rung.map_or(CapacityType::OnDemand, |r| r.capacity);
    let (usd_per_hour, price_source) = match (a.usd_per_hour, &a.price_source) {
        (Some(p), Some(PriceSource::OnDemand)) => (p, "on_demand"),
        (Some(p), Some(PriceSource::Spot)) => (p, "spot"),
        (Some(p), Some(PriceSource::OnDemandFallback { .. })) => (p, "on_demand_fallback"),
        // Recorded before prices had a source, or never recorded: the catalog's on-demand.
        (Some(p), None) => (p, "on_demand"),
        (None, _) => (
            catalog
                .get(&instance_type)
                .map_or(0.0, |t| t.on_demand_usd_per_hour),
            "catalog",
        ),
    };
    let (billed_until, end) = billing_end(job, a, now);
    let billed_until = billed_until.max(launched_at);
    let succeeded = job.state == JobState::Succeeded && a.number == job.attempt;
    let volume = a.root_volume_gib.unwrap_or(0);
    let span = AttemptSpan {
        launched: launched_at,
        started: a.started_at,
        finished: a.finished_at,
        ended: billed_until,
        succeeded,
    };
    Some(AttemptLine {
        job_id: job.job_id.clone(),
        payer_id: job.payer_id.clone(),
        kind: job.kind.clone(),
        batch: job.batch.clone(),
        attempt: a.number,
        instance_id,
        instance_type,
        capacity: capacity.to_string(),
        availability_zone: a.availability_zone.clone(),
        usd_per_hour,
        price_source: price_source.to_owned(),
        root_volume_gib: volume,
        launched_at,
        billed_until,
        billing_end: end,
        open: end == BillingEnd::Now,
        succeeded,
        cost: cost::attempt_cost(usd_per_hour, volume, &span),
    })
}

/// Every costed attempt of a job, oldest first.
pub fn job_lines(job: &Job, catalog: &Catalog, now: DateTime<Utc>) -> Vec<AttemptLine> {
    job.attempts
        .iter()
        .filter_map(|a| attempt_line(job, a, catalog, now))
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::sizing::Rung;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    fn job(state: JobState, attempts: Vec<Attempt>) -> Job {
        Job {
            job_id: "j".into(),
            payer_id: "p".into(),
            kind: "k".into(),
            batch: "b".into(),
            state,
            priority: 0,
            submitted_at: at(0),
            input: None,
            params: Default::default(),
            attempt: attempts.last().map_or(0, |a| a.number),
            attempt_base: 0,
            not_before: None,
            reason: None,
            version: 1,
            attempts,
            bounces: 0,
            profile_refused_since: None,
            updated_at: None,
        }
    }

    fn launched(n: u32, capacity: CapacityType) -> Attempt {
        Attempt {
            number: n,
            rung: Some(Rung {
                instance_type: "m5.large".into(),
                subnet: "subnet-1".into(),
                capacity,
            }),
            instance_id: Some(format!("i-{n}")),
            usd_per_hour: Some(0.096),
            price_source: Some(PriceSource::OnDemand),
            root_volume_gib: Some(30),
            launched_at: Some(at(0)),
            ..Attempt::default()
        }
    }

    #[test]
    fn a_finished_attempt_bills_to_its_finished_event() {
        let mut a = launched(1, CapacityType::OnDemand);
        a.started_at = Some(at(40));
        a.finished_at = Some(at(3640));
        let j = job(JobState::Succeeded, vec![a]);
        let l = attempt_line(&j, &j.attempts[0], Catalog::shipped(), at(9999)).unwrap();
        assert_eq!(l.billing_end, BillingEnd::Finished);
        assert_eq!(l.cost.billed_seconds, 3640);
        assert_eq!(l.cost.productive_seconds, 3600);
        assert!(!l.open);
    }

    #[test]
    fn a_running_attempt_costs_so_far_and_a_terminated_one_to_its_end() {
        let a = launched(1, CapacityType::OnDemand);
        let j = job(JobState::Running, vec![a.clone()]);
        let l = attempt_line(&j, &j.attempts[0], Catalog::shipped(), at(1800)).unwrap();
        assert!(l.open);
        assert!((l.cost.compute_usd - 0.048).abs() < 1e-9);
        let mut ended = a;
        ended.ended_at = Some(at(600));
        let j = job(JobState::Queued, vec![ended]);
        let l = attempt_line(&j, &j.attempts[0], Catalog::shipped(), at(1800)).unwrap();
        assert_eq!(l.billing_end, BillingEnd::Ended);
        assert_eq!(l.cost.billed_seconds, 600);
        assert_eq!(l.cost.overhead_seconds, 600);
    }

    #[test]
    fn a_spot_attempt_uses_its_recorded_price_and_no_instance_costs_nothing() {
        let mut a = launched(1, CapacityType::Spot);
        a.usd_per_hour = Some(0.035);
        a.price_source = Some(PriceSource::Spot);
        a.finished_at = Some(at(3600));
        let none = Attempt {
            number: 2,
            ..Attempt::default()
        };
        let j = job(JobState::Dead, vec![a, none]);
        let lines = job_lines(&j, Catalog::shipped(), at(9999));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].price_source, "spot");
        assert!((lines[0].cost.compute_usd - 0.035).abs() < 1e-9);
        assert!(!lines[0].succeeded);
    }
}
