//! Which jobs a report reads: the jobs in flight or waiting submitted before `to` (their open
//! attempts are costed to now), and of the terminal jobs only those whose bill can overlap
//! the range.
//!
//! With `--from`, the terminal jobs are read from the `by-settled-day` index: every partition
//! from `from`'s day through tomorrow, keeping (by the index's sort key) only jobs whose bill
//! began before `to`. An attempt launched in `[from, to)` belongs to a job whose bill began
//! before `to` and which settled at or after `from` (its billing end is one of the recorded
//! times that make up the settled time; see [`crate::ledger_index`]), so nothing the report
//! counts is missed, and what is read besides is only the jobs billed across the range's
//! edges. Without `--from` every terminal job may count: the whole history is read.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};

use super::Query;
use crate::job::{Job, JobState};
use crate::ledger_index::settled_days;
use crate::ports::{Ledger, PageQuery, StoreError};
use crate::scheduler::ACTIVE;

/// What a report over `query` reads from the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coverage {
    /// The in-flight and waiting jobs, and the terminal jobs settled on these days.
    Days(Vec<NaiveDate>),
    /// Every job: no `--from`.
    Everything,
}

impl Coverage {
    pub fn of(query: &Query, now: DateTime<Utc>) -> Self {
        match query.from {
            Some(from) => Coverage::Days(settled_days(from, now)),
            None => Coverage::Everything,
        }
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Coverage::Days(days) => match (days.first(), days.last()) {
                (Some(first), Some(last)) => write!(
                    f,
                    "the jobs in flight or waiting, and the terminal jobs settled {first} to {last} ({} days of the by-settled-day index)",
                    days.len()
                ),
                _ => write!(f, "the jobs in flight or waiting"),
            },
            Coverage::Everything => write!(
                f,
                "every job in the ledger, the whole history (no --from): on a large ledger this reads every item and may take minutes; give --from to read only the days the range needs"
            ),
        }
    }
}

/// The jobs a report over `query` at `now` needs (the newer version of each), and no
/// terminal job whose bill cannot overlap the range.
pub async fn read_jobs(
    ledger: &dyn Ledger,
    query: &Query,
    now: DateTime<Utc>,
) -> Result<Vec<Job>, StoreError> {
    let mut by_id: BTreeMap<String, Job> = BTreeMap::new();
    let mut keep = |job: Job| match by_id.get(&job.job_id) {
        Some(held) if held.version >= job.version => {}
        _ => {
            by_id.insert(job.job_id.clone(), job);
        }
    };
    // A job submitted at or after `to` launched nothing before it.
    for state in ACTIVE {
        let q = PageQuery {
            before: query.to,
            ..PageQuery::all(state)
        };
        ledger.page(&q).await?.into_iter().for_each(&mut keep);
    }
    match Coverage::of(query, now) {
        Coverage::Days(days) => {
            for day in days {
                ledger
                    .settled_on(day, query.to)
                    .await?
                    .into_iter()
                    .for_each(&mut keep);
            }
        }
        Coverage::Everything => {
            for state in [JobState::Succeeded, JobState::Cancelled, JobState::Dead] {
                ledger
                    .by_state(state)
                    .await?
                    .into_iter()
                    .for_each(&mut keep);
            }
        }
    }
    Ok(by_id.into_values().collect())
}
