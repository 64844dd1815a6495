//! Cost arithmetic: what one attempt's instance cost, and how much of it was productive.
//!
//! EC2 bills Linux instances and EBS volumes per second with a 60-second minimum. An
//! attempt's bill runs from launch to the end of its instance; the productive part is the
//! time its job ran on an attempt that succeeded. Everything else is overhead: boot, the
//! shutdown after the job's end, failed attempts, orphan time.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// EC2's minimum billed time per instance (and per volume) start.
pub const MIN_BILLED_SECONDS: u64 = 60;

/// gp3 storage, us-east-1, per GiB-month.
pub const GP3_USD_PER_GIB_MONTH: f64 = 0.08;

/// The hours in a billing month as AWS prices them (365 × 24 / 12).
pub const HOURS_PER_MONTH: f64 = 730.0;

/// Seconds billed for an instance that ran `seconds`: whole seconds, at least the minimum.
pub fn billed_seconds(seconds: f64) -> u64 {
    if !seconds.is_finite() || seconds <= 0.0 {
        return MIN_BILLED_SECONDS;
    }
    (seconds.ceil() as u64).max(MIN_BILLED_SECONDS)
}

/// Compute cost of `billed` seconds at `usd_per_hour`.
pub fn compute_usd(usd_per_hour: f64, billed: u64) -> f64 {
    usd_per_hour * billed as f64 / 3600.0
}

/// Storage cost of a `gib` root volume (gp3) for `billed` seconds.
pub fn volume_usd(gib: u32, billed: u64) -> f64 {
    f64::from(gib) * GP3_USD_PER_GIB_MONTH * billed as f64 / (HOURS_PER_MONTH * 3600.0)
}

/// The times that bound an attempt's bill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptSpan {
    /// RunInstances accepted the launch: billing starts.
    pub launched: DateTime<Utc>,
    /// The job's command started (the `started` event), if it did.
    pub started: Option<DateTime<Utc>>,
    /// The job's command ended (the `finished` event), if it did.
    pub finished: Option<DateTime<Utc>>,
    /// The instance stopped billing (shut down, terminated, or last seen alive).
    pub ended: DateTime<Utc>,
    /// The attempt's job succeeded: its run time is productive.
    pub succeeded: bool,
}

/// What one attempt cost, split into productive time and overhead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptCost {
    /// Seconds from launch to the instance's end.
    pub run_seconds: f64,
    /// Seconds billed: per second, 60 s minimum.
    pub billed_seconds: u64,
    pub compute_usd: f64,
    pub volume_usd: f64,
    /// Billed seconds during which the job ran on a successful attempt.
    pub productive_seconds: u64,
    /// Every other billed second: boot, after the job's end, failed attempts, orphans.
    pub overhead_seconds: u64,
    /// `compute_usd + volume_usd`, split pro rata by seconds.
    pub productive_usd: f64,
    pub overhead_usd: f64,
}

impl AttemptCost {
    pub fn total_usd(&self) -> f64 {
        self.compute_usd + self.volume_usd
    }

    /// Adds another cost into this one (totals over attempts).
    pub fn add(&mut self, other: &AttemptCost) {
        self.run_seconds += other.run_seconds;
        self.billed_seconds += other.billed_seconds;
        self.compute_usd += other.compute_usd;
        self.volume_usd += other.volume_usd;
        self.productive_seconds += other.productive_seconds;
        self.overhead_seconds += other.overhead_seconds;
        self.productive_usd += other.productive_usd;
        self.overhead_usd += other.overhead_usd;
    }
}

/// The cost of one attempt at `usd_per_hour` with a `volume_gib` root volume.
pub fn attempt_cost(usd_per_hour: f64, volume_gib: u32, span: &AttemptSpan) -> AttemptCost {
    let run_seconds = seconds_between(span.launched, span.ended);
    let billed = billed_seconds(run_seconds);
    let ran = match (span.succeeded, span.started, span.finished) {
        (true, Some(s), Some(f)) => seconds_between(s, f),
        _ => 0.0,
    };
    let productive_seconds = (ran.round() as u64).min(billed);
    let overhead_seconds = billed - productive_seconds;
    let compute = compute_usd(usd_per_hour, billed);
    let volume = volume_usd(volume_gib, billed);
    let total = compute + volume;
    let productive_usd = total * productive_seconds as f64 / billed as f64;
    AttemptCost {
        run_seconds,
        billed_seconds: billed,
        compute_usd: compute,
        volume_usd: volume,
        productive_seconds,
        overhead_seconds,
        productive_usd,
        overhead_usd: total - productive_usd,
    }
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_milliseconds() as f64 / 1000.0).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + s, 0).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn thirty_seconds_of_m5_large_bill_a_minute() {
        assert_eq!(billed_seconds(30.0), 60);
        assert!(close(compute_usd(0.096, billed_seconds(30.0)), 0.0016));
    }

    #[test]
    fn an_hour_of_m5_large_is_its_hourly_price() {
        assert_eq!(billed_seconds(3600.0), 3600);
        assert!(close(compute_usd(0.096, 3600), 0.096));
    }

    #[test]
    fn partial_seconds_round_up() {
        assert_eq!(billed_seconds(60.2), 61);
        assert_eq!(billed_seconds(0.0), 60);
        assert_eq!(billed_seconds(f64::NAN), 60);
    }

    #[test]
    fn a_volume_costs_its_monthly_rate_over_a_month() {
        let month = (HOURS_PER_MONTH * 3600.0) as u64;
        assert!(close(volume_usd(100, month), 8.0));
        // 30 GiB for one minute.
        assert!(close(volume_usd(30, 60), 30.0 * 0.08 * 60.0 / 2_628_000.0));
    }

    #[test]
    fn spot_price_is_used_as_given() {
        let span = AttemptSpan {
            launched: at(0),
            started: Some(at(20)),
            finished: Some(at(620)),
            ended: at(630),
            succeeded: true,
        };
        let c = attempt_cost(0.0350, 0, &span);
        assert_eq!(c.billed_seconds, 630);
        assert!(close(c.compute_usd, 0.035 * 630.0 / 3600.0));
        assert!(close(c.volume_usd, 0.0));
    }

    #[test]
    fn a_successful_attempt_splits_run_time_from_boot_and_shutdown() {
        let span = AttemptSpan {
            launched: at(0),
            started: Some(at(40)),
            finished: Some(at(3640)),
            ended: at(3650),
            succeeded: true,
        };
        let c = attempt_cost(0.096, 30, &span);
        assert_eq!(c.billed_seconds, 3650);
        assert_eq!(c.productive_seconds, 3600);
        assert_eq!(c.overhead_seconds, 50);
        assert!(close(c.productive_usd + c.overhead_usd, c.total_usd()));
        assert!(close(c.productive_usd, c.total_usd() * 3600.0 / 3650.0));
    }

    #[test]
    fn a_failed_attempt_is_all_overhead() {
        let span = AttemptSpan {
            launched: at(0),
            started: Some(at(30)),
            finished: Some(at(90)),
            ended: at(95),
            succeeded: false,
        };
        let c = attempt_cost(0.192, 30, &span);
        assert_eq!(c.productive_seconds, 0);
        assert_eq!(c.overhead_seconds, 95);
        assert!(close(c.overhead_usd, c.total_usd()));
    }

    #[test]
    fn a_short_job_pays_the_minimum_as_overhead() {
        let span = AttemptSpan {
            launched: at(0),
            started: Some(at(5)),
            finished: Some(at(25)),
            ended: at(30),
            succeeded: true,
        };
        let c = attempt_cost(0.096, 0, &span);
        assert_eq!(c.billed_seconds, 60);
        assert_eq!(c.productive_seconds, 20);
        assert_eq!(c.overhead_seconds, 40);
        assert!(close(c.compute_usd, 0.0016));
    }
}
