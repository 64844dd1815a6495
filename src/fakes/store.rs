//! In-memory config table and job ledger with DynamoDB's conditional-write semantics. The
//! ledger answers its queries from the same index keys the DynamoDB adapter writes
//! ([`crate::ledger_index`]) and counts what DynamoDB would read for each: the items whose
//! keys match the query (never the whole table), their item bytes, in 1 MB pages.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use crate::aws::dynamo::{item_bytes, ledger_item};
use crate::job::{Job, JobState};
use crate::ledger_index::{self, ReadCount, ReadMeter, Retention, PAGE_BYTES};
use crate::ports::{ConfigStore, Ledger, PageQuery, StoreError, StoredPayer};
use crate::profile::PayerProfile;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A test that panicked while holding the lock has already failed; keep the data usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The payer config table.
#[derive(Debug, Default)]
pub struct FakeConfigStore {
    rows: Mutex<BTreeMap<String, StoredPayer>>,
}

impl FakeConfigStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ConfigStore for FakeConfigStore {
    async fn list(&self) -> Result<Vec<StoredPayer>, StoreError> {
        Ok(lock(&self.rows).values().cloned().collect())
    }

    async fn get(&self, payer_id: &str) -> Result<Option<StoredPayer>, StoreError> {
        Ok(lock(&self.rows).get(payer_id).cloned())
    }

    async fn put(
        &self,
        profile: &PayerProfile,
        expected: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut rows = lock(&self.rows);
        let current = rows.get(&profile.payer_id);
        match (current, expected) {
            (None, None) => {}
            (Some(row), Some(v)) if row.version == v => {}
            (current, _) => {
                return Err(StoreError::Conflict(format!(
                    "payer {} is at version {:?}, expected {expected:?}",
                    profile.payer_id,
                    current.map(|r| r.version)
                )))
            }
        }
        let paused = current.and_then(|r| r.paused.clone());
        let paused_by_breaker = current.is_some_and(|r| r.paused_by_breaker);
        let boot_failures = current.map_or(0, |r| r.boot_failures);
        let version = expected.unwrap_or(0) + 1;
        rows.insert(
            profile.payer_id.clone(),
            StoredPayer {
                profile: profile.clone(),
                paused,
                paused_by_breaker,
                version,
                updated_at: now,
                boot_failures,
            },
        );
        Ok(version)
    }

    async fn set_paused(
        &self,
        payer_id: &str,
        paused: Option<&str>,
        expected: u64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut rows = lock(&self.rows);
        let row = rows
            .get_mut(payer_id)
            .filter(|r| r.version == expected)
            .ok_or_else(|| {
                StoreError::Conflict(format!("payer {payer_id} is not at version {expected}"))
            })?;
        if paused.is_none() {
            row.boot_failures = 0;
        }
        row.paused = paused.map(str::to_owned);
        row.paused_by_breaker = false;
        row.version += 1;
        row.updated_at = now;
        Ok(row.version)
    }

    async fn breaker_pause(
        &self,
        payer_id: &str,
        reason: &str,
        expected: u64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let version = self
            .set_paused(payer_id, Some(reason), expected, now)
            .await?;
        if let Some(row) = lock(&self.rows).get_mut(payer_id) {
            row.paused_by_breaker = true;
        }
        Ok(version)
    }

    async fn add_boot_failure(&self, payer_id: &str) -> Result<u32, StoreError> {
        let mut rows = lock(&self.rows);
        let row = rows
            .get_mut(payer_id)
            .ok_or_else(|| StoreError::Conflict(format!("payer {payer_id} does not exist")))?;
        row.boot_failures += 1;
        Ok(row.boot_failures)
    }

    async fn clear_boot_failures(&self, payer_id: &str) -> Result<(), StoreError> {
        if let Some(row) = lock(&self.rows).get_mut(payer_id) {
            row.boot_failures = 0;
        }
        Ok(())
    }
}

/// The job ledger. Counts writes and reads, and can be told to throttle the next writes.
#[derive(Debug, Default)]
pub struct FakeLedger {
    jobs: Mutex<BTreeMap<String, Job>>,
    writes: Mutex<BTreeMap<String, u32>>,
    throttle_next: Mutex<u32>,
    meter: Arc<ReadMeter>,
}

/// The item size DynamoDB would count for `job`.
fn size(job: &Job) -> u64 {
    ledger_item(job, Retention::default()).map_or(0, |i| item_bytes(&i))
}

impl FakeLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Successful writes (create + update) of one job so far.
    pub fn writes_for(&self, job_id: &str) -> u32 {
        lock(&self.writes).get(job_id).copied().unwrap_or(0)
    }

    /// The next `n` writes fail with `Throttled` and change nothing.
    pub fn throttle_next_writes(&self, n: u32) {
        *lock(&self.throttle_next) = n;
    }

    /// Every job, by id.
    pub fn all(&self) -> Vec<Job> {
        lock(&self.jobs).values().cloned().collect()
    }

    fn throttled(&self) -> Result<(), StoreError> {
        let mut n = lock(&self.throttle_next);
        if *n > 0 {
            *n -= 1;
            return Err(StoreError::Throttled(
                "ProvisionedThroughputExceededException".into(),
            ));
        }
        Ok(())
    }

    /// What the queries so far read.
    pub fn reads(&self) -> ReadCount {
        self.meter.count()
    }

    /// The meter the queries count into (shared, to watch reads as they happen).
    pub fn meter(&self) -> Arc<ReadMeter> {
        Arc::clone(&self.meter)
    }

    /// One Query over the items whose index keys match (`matching`, in index order): counts
    /// them as examined, page by page, and keeps those `keep` accepts; with `want`, stops
    /// after the page on which that many were kept, as the adapter does.
    fn query(
        &self,
        matching: Vec<Job>,
        want: Option<usize>,
        keep: impl Fn(&Job) -> bool,
    ) -> Vec<Job> {
        self.meter.query();
        let mut out = Vec::new();
        let (mut items, mut bytes) = (0, 0);
        for job in matching {
            items += 1;
            bytes += size(&job);
            if keep(&job) {
                out.push(job);
            }
            if bytes >= PAGE_BYTES {
                self.meter.page(items, bytes);
                (items, bytes) = (0, 0);
                if want.is_some_and(|w| out.len() >= w) {
                    return out;
                }
            }
        }
        self.meter.page(items, bytes);
        out
    }

    fn matching(&self, key: impl Fn(&Job) -> bool) -> Vec<Job> {
        lock(&self.jobs)
            .values()
            .filter(|j| key(j))
            .cloned()
            .collect()
    }

    fn count_write(&self, job_id: &str) {
        *lock(&self.writes).entry(job_id.to_owned()).or_default() += 1;
    }
}

#[async_trait]
impl Ledger for FakeLedger {
    async fn create(&self, job: &Job) -> Result<bool, StoreError> {
        self.throttled()?;
        let mut jobs = lock(&self.jobs);
        if jobs.contains_key(&job.job_id) {
            return Ok(false);
        }
        jobs.insert(job.job_id.clone(), job.clone());
        drop(jobs);
        self.count_write(&job.job_id);
        Ok(true)
    }

    async fn get(&self, job_id: &str) -> Result<Option<Job>, StoreError> {
        Ok(lock(&self.jobs).get(job_id).cloned())
    }

    async fn update(&self, job: &Job, expected: u64) -> Result<(), StoreError> {
        self.throttled()?;
        let mut jobs = lock(&self.jobs);
        match jobs.get(&job.job_id) {
            Some(current) if current.version == expected => {
                jobs.insert(job.job_id.clone(), job.clone());
            }
            current => {
                return Err(StoreError::Conflict(format!(
                    "job {} is at version {:?}, expected {expected}",
                    job.job_id,
                    current.map(|j| j.version)
                )))
            }
        }
        drop(jobs);
        self.count_write(&job.job_id);
        Ok(())
    }

    async fn update_all(&self, writes: &[(Job, u64)]) -> Result<(), StoreError> {
        self.throttled()?;
        if writes.len() > crate::ports::MAX_TRANSACTION {
            return Err(StoreError::Other(format!(
                "a transaction of {} jobs is over DynamoDB's limit of {}",
                writes.len(),
                crate::ports::MAX_TRANSACTION
            )));
        }
        let mut jobs = lock(&self.jobs);
        let lost: Vec<&str> = writes
            .iter()
            .filter(|(job, expected)| jobs.get(&job.job_id).map(|j| j.version) != Some(*expected))
            .map(|(job, _)| job.job_id.as_str())
            .collect();
        if !lost.is_empty() {
            return Err(StoreError::Conflict(format!(
                "jobs {} moved; nothing written",
                lost.join(", ")
            )));
        }
        for (job, _) in writes {
            jobs.insert(job.job_id.clone(), job.clone());
        }
        drop(jobs);
        for (job, _) in writes {
            self.count_write(&job.job_id);
        }
        Ok(())
    }

    async fn by_state(&self, state: JobState) -> Result<Vec<Job>, StoreError> {
        let mut matching = self.matching(|j| j.state == state);
        matching.sort_by_key(|j| j.submitted_at);
        Ok(self.query(matching, None, |_| true))
    }

    async fn by_batch(&self, payer_id: &str, batch: &str) -> Result<Vec<Job>, StoreError> {
        let key = crate::names::ledger::payer_batch(payer_id, batch);
        let matching =
            self.matching(|j| crate::names::ledger::payer_batch(&j.payer_id, &j.batch) == key);
        Ok(self.query(matching, None, |j| {
            j.payer_id == payer_id && j.batch == batch
        }))
    }

    async fn blockers(&self, payer_id: &str, batch: &str) -> Result<Vec<Job>, StoreError> {
        let key = crate::names::ledger::payer_batch(payer_id, batch);
        let matching = self.matching(|j| {
            ledger_index::is_blocker(j.state)
                && crate::names::ledger::payer_batch(&j.payer_id, &j.batch) == key
        });
        Ok(self.query(matching, None, |j| {
            j.payer_id == payer_id && j.batch == batch
        }))
    }

    async fn settled_on(
        &self,
        day: NaiveDate,
        billed_before: Option<DateTime<Utc>>,
    ) -> Result<Vec<Job>, StoreError> {
        let day = ledger_index::day_key(day);
        let mut matching = self.matching(|j| {
            ledger_index::settled_day(j).as_deref() == Some(day.as_str())
                && ledger_index::billed_from(j).is_some_and(|t| billed_before.is_none_or(|b| t < b))
        });
        matching.sort_by_key(|j| (ledger_index::billed_from(j), j.job_id.clone()));
        Ok(self.query(matching, None, |_| true))
    }

    async fn page(&self, query: &PageQuery) -> Result<Vec<Job>, StoreError> {
        // The key condition: the state, and the submitted range (BETWEEN is inclusive).
        let mut matching = self.matching(|j| {
            j.state == query.state
                && query.since.is_none_or(|t| j.submitted_at >= t)
                && match (query.since, query.before) {
                    (Some(_), Some(b)) => j.submitted_at <= b,
                    (None, Some(b)) => j.submitted_at < b,
                    _ => true,
                }
        });
        matching.sort_by(|a, b| (a.submitted_at, &a.job_id).cmp(&(b.submitted_at, &b.job_id)));
        let mut out = self.query(matching, Some(query.limit), |j| query.matches(j));
        out.truncate(query.limit);
        Ok(out)
    }
}
