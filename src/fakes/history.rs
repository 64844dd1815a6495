//! A ledger's history, generated: what a deployment holds after days of work, for the read
//! benchmark (`examples/ledger_reads.rs`) and the tests of what reads cost. Every job is a
//! pure function of its number, so millions need not be held in memory: the benchmark keeps
//! only their index keys and builds a job when a read returns it.
//!
//! Terminal job `k` of `terminal` belongs to day `k × days / terminal` (the last day is
//! today), launched at an even spread over its day (today: up to an hour before `now`), ran
//! 10–40 minutes (so the day's last jobs settle after midnight), and is one of `payers`
//! payers' batch of that day. Every 100th is dead (exit code 1), the next cancelled, the rest
//! succeeded. Waiting jobs are queued in today's batches, except every 20th: blocked in the
//! batch of an earlier dead job. In-flight jobs run in today's batches.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::job::{Attempt, Job, JobState, PriceSource};
use crate::profile::CapacityType;
use crate::retry::FailureCause;
use crate::sizing::Rung;

/// The shape of a generated ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    pub terminal: u64,
    pub days: u32,
    pub waiting: u64,
    pub in_flight: u64,
    pub payers: u32,
    /// The moment the history ends (the reads run at it).
    pub now: DateTime<Utc>,
}

const KINDS: [&str; 3] = ["eligibility", "members", "claims"];

/// What decides one generated job, without building it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub k: u64,
    pub state: JobState,
    pub payer: u32,
    pub kind: usize,
    /// The batch's day (index from the first day).
    pub batch_day: u32,
    pub submitted: DateTime<Utc>,
    /// Launch and end of its one attempt (`end` is `None` while it runs; never launched
    /// while waiting).
    pub launched: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

impl History {
    /// A year at 10,000 jobs a day: 3.6 million terminal jobs over 365 days, 10,000 waiting
    /// and 500 in flight, of 100 payers.
    pub fn year(now: DateTime<Utc>) -> Self {
        Self {
            terminal: 3_600_000,
            days: 365,
            waiting: 10_000,
            in_flight: 500,
            payers: 100,
            now,
        }
    }

    pub fn total(&self) -> u64 {
        self.terminal + self.waiting + self.in_flight
    }

    /// The UTC date of day index `i` (the last is today).
    pub fn date(&self, i: u32) -> NaiveDate {
        self.now.date_naive() - Duration::days(i64::from(self.days) - 1 - i64::from(i))
    }

    fn midnight(&self, i: u32) -> DateTime<Utc> {
        self.date(i)
            .and_hms_opt(0, 0, 0)
            .map_or(self.now, |t| t.and_utc())
    }

    /// The first terminal job of day `i`.
    fn first_of(&self, i: u32) -> u64 {
        (u64::from(i) * self.terminal).div_ceil(u64::from(self.days))
    }

    /// The day index of terminal job `k`.
    pub fn day_of(&self, k: u64) -> u32 {
        (k * u64::from(self.days) / self.terminal) as u32
    }

    /// Job `k`: terminal for `k < terminal`, then waiting, then in flight.
    pub fn spec(&self, k: u64) -> Spec {
        let today = self.days - 1;
        if k < self.terminal {
            let i = self.day_of(k);
            let (first, next) = (self.first_of(i), self.first_of(i + 1));
            let span = if i == today {
                (self.now - self.midnight(i)).num_seconds() - 3600
            } else {
                86_400
            };
            let offset = ((k - first) as i64 * span.max(1)) / (next - first).max(1) as i64;
            let launched = self.midnight(i) + Duration::seconds(offset);
            let state = match k % 100 {
                0 => JobState::Dead,
                1 => JobState::Cancelled,
                _ => JobState::Succeeded,
            };
            return Spec {
                k,
                state,
                payer: (k % u64::from(self.payers)) as u32,
                kind: ((k / u64::from(self.payers)) % 3) as usize,
                batch_day: i,
                submitted: launched - Duration::seconds(30),
                launched: Some(launched),
                end: Some(launched + Duration::minutes(10 + 5 * (k % 7) as i64)),
            };
        }
        let w = k - self.terminal;
        let mut spec = Spec {
            k,
            state: JobState::Queued,
            payer: (w % u64::from(self.payers)) as u32,
            kind: (w % 3) as usize,
            batch_day: today,
            submitted: self.now - Duration::seconds(1 + (w % 3000) as i64),
            launched: None,
            end: None,
        };
        if w >= self.waiting {
            spec.state = JobState::Running;
            spec.launched = Some(spec.submitted + Duration::seconds(20));
        } else if w % 20 == 0 {
            // Blocked behind an earlier dead job: the (w / 20)-th dead job back from the end.
            let dead = (self.terminal.saturating_sub(1) / 100).saturating_sub(w / 20) * 100;
            let d = self.spec(dead);
            spec.state = JobState::Blocked;
            spec.submitted = d.submitted + Duration::seconds(60);
            spec.payer = d.payer;
            spec.batch_day = d.batch_day;
            spec.kind = 2;
        }
        spec
    }

    /// The job of `spec`, as the ledger would hold it.
    pub fn job(&self, spec: &Spec) -> Job {
        let payer = format!("payer-{:03}", spec.payer);
        let batch = self.date(spec.batch_day).to_string();
        let kind = KINDS[spec.kind];
        let mut job = Job {
            job_id: format!("{payer}:{batch}:{kind}:{:08}", spec.k),
            payer_id: payer,
            kind: kind.to_owned(),
            batch,
            state: spec.state,
            priority: 0,
            submitted_at: spec.submitted,
            input: None,
            params: Default::default(),
            attempt: 0,
            attempt_base: 0,
            not_before: None,
            reason: None,
            version: 1,
            attempts: Vec::new(),
            bounces: 0,
            profile_refused_since: None,
            updated_at: Some(spec.submitted),
        };
        if let Some(launched) = spec.launched {
            let mut a = Attempt {
                number: 1,
                rung: Some(Rung {
                    instance_type: "c7i.large".into(),
                    subnet: "subnet-0a1b2c3d4e5f60011".into(),
                    capacity: CapacityType::OnDemand,
                }),
                instance_id: Some(format!("i-{:017x}", spec.k)),
                usd_per_hour: Some(0.0893),
                price_source: Some(PriceSource::OnDemand),
                root_volume_gib: Some(20),
                launched_at: Some(launched),
                started_at: Some(launched + Duration::seconds(60)),
                ..Attempt::default()
            };
            job.attempt = 1;
            job.version = 3;
            job.updated_at = a.started_at;
            if let Some(end) = spec.end {
                match spec.state {
                    JobState::Succeeded => {
                        a.finished_at = Some(end);
                        a.exit_code = Some(0);
                    }
                    JobState::Dead => {
                        a.finished_at = Some(end);
                        a.exit_code = Some(1);
                        a.cause = Some(FailureCause::ExitCode { code: 1 });
                    }
                    _ => a.ended_at = Some(end),
                }
                job.version = 4;
                job.updated_at = Some(end + Duration::seconds(1));
            }
            job.attempts.push(a);
        }
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger_index;

    #[test]
    fn days_hold_their_share_and_the_last_is_today_before_now() {
        let now: DateTime<Utc> = "2026-12-07T12:00:00Z".parse().unwrap();
        let h = History {
            terminal: 3650,
            days: 365,
            waiting: 40,
            in_flight: 5,
            payers: 7,
            now,
        };
        let mut per_day = vec![0; 365];
        for k in 0..h.terminal {
            let s = h.spec(k);
            per_day[s.batch_day as usize] += 1;
            let job = h.job(&s);
            assert!(ledger_index::settled_at(&job).unwrap() < now, "{k}");
            assert_eq!(job.state, s.state);
        }
        assert!(per_day.iter().all(|&n| n == 10), "{per_day:?}");
        assert_eq!(h.date(364), now.date_naive());
        let blocked = h.spec(h.terminal);
        assert_eq!(blocked.state, JobState::Blocked);
        assert_eq!(h.spec(h.terminal + 1).state, JobState::Queued);
        assert_eq!(h.spec(h.total() - 1).state, JobState::Running);
    }
}
