//! What the ledger's indexes hold, so that every read is proportional to what it answers.
//!
//! The ledger keeps every job forever (finance needs the history), so no regular read may walk
//! it whole. Three facts, derived from the job alone and written with every item, let reads
//! skip the history:
//!
//! - `blocker_batch` (`by-blocker` index, sparse): `payer#batch` on dead and cancelled jobs
//!   only. A pass needs, of the terminal jobs, only those that hold a batch's higher tiers
//!   back; a succeeded job never does.
//! - `settled_day` + `billed_from` (`by-settled-day` index, sparse): on terminal jobs only, the
//!   UTC day of the job's last recorded moment ([`settled_at`]) and the launch of its first
//!   instance ([`billed_from`]). Every billed second and every failure of a terminal job lies
//!   in `[billed_from, settled_at]`, so the jobs billed in `[from, to)` are among those settled
//!   on a day ≥ `from`'s with `billed_from < to`, and today's gauges need only today's day.
//! - `expires_at` (optional retention, DynamoDB TTL): `settled_at` + N days, on terminal jobs,
//!   when the deployment keeps terminal jobs for N days only.
//!
//! [`ReadMeter`] counts what queries read (items examined, bytes, 1 MB pages), in the DynamoDB
//! adapter from the responses and in the fakes from the same key rules.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::job::{Job, JobState};

pub const BY_BLOCKER: &str = "by-blocker";
pub const BY_SETTLED_DAY: &str = "by-settled-day";

/// `settled_day` values: a UTC date, so string order is day order.
pub const DAY_FORMAT: &str = "%Y-%m-%d";

/// DynamoDB reads a Query or Scan in pages of at most 1 MB of examined items.
pub const PAGE_BYTES: u64 = 1024 * 1024;

/// The job holds its batch's higher tiers back (the planner's `blocked_by_dead`).
pub fn is_blocker(state: JobState) -> bool {
    matches!(state, JobState::Dead | JobState::Cancelled)
}

/// The last moment a terminal job records: its last write and every attempt time, whichever
/// is latest (an event's time comes from the instance's clock and may follow the write).
/// `None` while the job is not terminal.
pub fn settled_at(job: &Job) -> Option<DateTime<Utc>> {
    if !job.state.is_terminal() {
        return None;
    }
    let attempt_times = job.attempts.iter().flat_map(|a| {
        [
            a.launched_at,
            a.started_at,
            a.last_heartbeat_at,
            a.finished_at,
            a.gone_at,
            a.ended_at,
        ]
    });
    std::iter::once(job.updated_at)
        .chain(attempt_times)
        .flatten()
        .max()
        .or(Some(job.submitted_at))
}

/// The first launch of an instance for the job (its bill cannot start earlier); for a job
/// that never had one, its settled time (it bills nothing). `None` while not terminal.
pub fn billed_from(job: &Job) -> Option<DateTime<Utc>> {
    let settled = settled_at(job)?;
    Some(
        job.attempts
            .iter()
            .filter(|a| a.instance_id.is_some())
            .filter_map(|a| a.launched_at)
            .min()
            .unwrap_or(settled),
    )
}

/// The `settled_day` partition of a terminal job.
pub fn settled_day(job: &Job) -> Option<String> {
    settled_at(job).map(|t| day_key(t.date_naive()))
}

pub fn day_key(day: NaiveDate) -> String {
    day.format(DAY_FORMAT).to_string()
}

/// How long terminal jobs are kept (DynamoDB TTL), if not forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub days: Option<u32>,
}

impl Retention {
    /// The `expires_at` of a terminal job (epoch seconds), when terminal jobs expire.
    pub fn expires_at(self, job: &Job) -> Option<i64> {
        let days = self.days?;
        settled_at(job).map(|t| (t + Duration::days(i64::from(days))).timestamp())
    }
}

/// The UTC days whose `settled_day` partitions can hold a job billed at or after `from`:
/// from `from`'s day through the day after `now` (an instance's clock may run ahead).
pub fn settled_days(from: DateTime<Utc>, now: DateTime<Utc>) -> Vec<NaiveDate> {
    let last = now.date_naive().succ_opt().unwrap_or(now.date_naive());
    let mut out = Vec::new();
    let mut d = from.date_naive();
    while d <= last {
        out.push(d);
        match d.succ_opt() {
            Some(n) => d = n,
            None => break,
        }
    }
    out
}

/// What reads cost so far: queries, items examined, their bytes, and 1 MB pages. Shared by
/// reference; counters only grow.
#[derive(Debug, Default)]
pub struct ReadMeter {
    queries: AtomicU64,
    pages: AtomicU64,
    items: AtomicU64,
    bytes: AtomicU64,
}

/// A [`ReadMeter`]'s counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCount {
    pub queries: u64,
    pub pages: u64,
    pub items: u64,
    pub bytes: u64,
}

impl std::ops::Sub for ReadCount {
    type Output = ReadCount;
    fn sub(self, o: ReadCount) -> ReadCount {
        ReadCount {
            queries: self.queries - o.queries,
            pages: self.pages - o.pages,
            items: self.items - o.items,
            bytes: self.bytes - o.bytes,
        }
    }
}

impl ReadMeter {
    pub fn new() -> Self {
        Self::default()
    }

    /// One query (or scan) began.
    pub fn query(&self) {
        self.queries.fetch_add(1, Ordering::Relaxed);
    }

    /// One page came back, having examined `items` items of `bytes` bytes in all.
    pub fn page(&self, items: u64, bytes: u64) {
        self.pages.fetch_add(1, Ordering::Relaxed);
        self.items.fetch_add(items, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A whole query examining items of these sizes, paged as DynamoDB pages it (a page ends
    /// once it holds 1 MB; an empty result is still one page). For the in-memory fakes.
    pub fn query_of(&self, sizes: impl IntoIterator<Item = u64>) {
        self.query();
        let (mut items, mut bytes) = (0, 0);
        for size in sizes {
            items += 1;
            bytes += size;
            if bytes >= PAGE_BYTES {
                self.page(items, bytes);
                (items, bytes) = (0, 0);
            }
        }
        // The last, partial page; or the empty page that tells a full last page was the end.
        self.page(items, bytes);
    }

    pub fn count(&self) -> ReadCount {
        ReadCount {
            queries: self.queries.load(Ordering::Relaxed),
            pages: self.pages.load(Ordering::Relaxed),
            items: self.items.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}
