//! The reference workload: a seeded generator of traces for the example payer profiles in
//! `payer-profiles/`, as uneven as real payers are.
//!
//! - `harbor-health`: once a week, a huge short burst: a member roster (tier 0), then
//!   150–300 claims files of 1–24 GiB (4–48 vCPUs each) that run 2–7 minutes.
//! - `prairie-mutual`: a tiny long trickle: every two hours a small remittance file
//!   (tier 0, 1–4 hours on 2 vCPUs), then its encounters (tier 1, 30–120 minutes).
//! - `cedar-plan`: a daily three-tier chain: eligibility (5–15 min), members
//!   (1–4 GiB, 10–30 min), then 2–4 claims files (8–40 GiB, 20–90 min).
//!
//! Some attempts fail with a retryable exit code: 3 % of harbor-health's claims exit 75 once,
//! 2 % of prairie-mutual's remittances exit 111 once. Within a batch lower tiers never
//! arrive after higher ones (producers drop a batch's files in order). The same `jobs` and
//! `seed` always give the same trace.

use chrono::{Duration, NaiveDate};

use super::{SplitMix64, TraceJob};
use crate::job::JobInput;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const DAY: f64 = 86_400.0;

struct Gen {
    rng: SplitMix64,
    jobs: Vec<TraceJob>,
}

impl Gen {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        at: f64,
        payer: &str,
        kind: &str,
        batch: &str,
        id: &str,
        gib: f64,
        run: f64,
    ) {
        let bytes = (gib * GIB).round() as u64;
        self.jobs.push(TraceJob {
            at: (at * 1000.0).round() / 1000.0,
            job_id: format!("{payer}:{batch}:{id}"),
            payer_id: payer.to_owned(),
            kind: kind.to_owned(),
            batch: batch.to_owned(),
            input: Some(JobInput {
                uri: format!("s3://example-payer-drops/{payer}/{batch}/{id}"),
                bytes: Some(bytes),
            }),
            params: Default::default(),
            priority: None,
            run_seconds: run.round(),
            exits: Vec::new(),
        });
    }

    /// Makes the last job's first attempt exit `code` with probability `p`.
    fn flaky(&mut self, p: f64, code: i32) {
        if self.rng.chance(p) {
            if let Some(j) = self.jobs.last_mut() {
                j.exits = vec![code];
            }
        }
    }

    fn minutes(&mut self, lo: f64, hi: f64) -> f64 {
        self.rng.range(lo * 60.0, hi * 60.0)
    }

    fn harbor(&mut self, day: u64, date: &str) {
        let mut at = day as f64 * DAY + self.minutes(60.0, 300.0);
        let run = self.minutes(3.0, 8.0);
        self.push(
            at,
            "harbor-health",
            "members",
            date,
            "members.834",
            0.7,
            run,
        );
        for n in 0..self.rng.int(150, 300) {
            at += self.rng.range(0.0, 6.0);
            let gib = self.rng.range(1.0, 24.0);
            let run = self.minutes(2.0, 7.0);
            let id = format!("claims-{n:03}.837");
            self.push(at, "harbor-health", "claims", date, &id, gib, run);
            self.flaky(0.03, 75);
        }
    }

    fn prairie(&mut self, day: u64, date: &str) {
        for slot in 0..12u64 {
            let mut at = day as f64 * DAY + slot as f64 * 7200.0 + self.minutes(0.0, 30.0);
            let batch = format!("{date}T{:02}", slot * 2);
            let gib = self.rng.range(0.001, 0.05);
            let run = self.minutes(60.0, 240.0);
            self.push(
                at,
                "prairie-mutual",
                "remittance",
                &batch,
                "remit.835",
                gib,
                run,
            );
            at += self.minutes(0.0, 5.0);
            let run = self.minutes(30.0, 120.0);
            self.push(
                at,
                "prairie-mutual",
                "encounters",
                &batch,
                "encounters.837",
                gib,
                run,
            );
        }
    }

    fn cedar(&mut self, day: u64, date: &str) {
        let mut at = day as f64 * DAY + self.minutes(360.0, 600.0);
        let run = self.minutes(5.0, 15.0);
        self.push(
            at,
            "cedar-plan",
            "eligibility",
            date,
            "eligibility.834",
            0.25,
            run,
        );
        at += self.minutes(0.0, 2.0);
        let (gib, run) = (self.rng.range(1.0, 4.0), self.minutes(10.0, 30.0));
        self.push(at, "cedar-plan", "members", date, "members.csv", gib, run);
        for n in 0..self.rng.int(2, 4) {
            at += self.minutes(0.0, 2.0);
            let (gib, run) = (self.rng.range(8.0, 40.0), self.minutes(20.0, 90.0));
            let id = format!("claims-{n}.837");
            self.push(at, "cedar-plan", "claims", date, &id, gib, run);
        }
    }
}

/// A reference trace of exactly `jobs` arrivals (the earliest ones of whole days of the
/// workload), sorted by arrival.
pub fn generate(jobs: usize, seed: u64) -> Vec<TraceJob> {
    let start = NaiveDate::from_ymd_opt(2026, 11, 1).expect("a valid date");
    let mut g = Gen {
        rng: SplitMix64::new(seed),
        jobs: Vec::with_capacity(jobs + 400),
    };
    let mut day = 0u64;
    while g.jobs.len() < jobs {
        let date = (start + Duration::days(day as i64))
            .format("%Y-%m-%d")
            .to_string();
        if day % 7 == 0 {
            g.harbor(day, &date);
        }
        g.prairie(day, &date);
        g.cedar(day, &date);
        day += 1;
    }
    g.jobs.sort_by(|a, b| a.at.total_cmp(&b.at));
    g.jobs.truncate(jobs);
    g.jobs
}
