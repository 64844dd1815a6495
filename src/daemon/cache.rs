//! The daemon's copy of the ledger's in-flight jobs, kept between passes.
//!
//! Why: a pass plans from every in-flight job (five state queries) plus every job of each
//! batch in flight (one query per batch). A one-shot pass must read them; a daemon woken by
//! one arrival would re-read hundreds of unchanged jobs to launch one, and its enqueue →
//! RunInstances time would grow with the jobs in flight.
//!
//! How: [`CachedLedger`] wraps the ledger. The first read of a state (or of a batch) goes to
//! DynamoDB and is remembered; every write the daemon makes goes through it and updates the
//! copy, so later reads are answered from memory. What the daemon does not write itself is
//! picked up by [`CachedLedger::refresh`], which the daemon's reconcile runs on its period
//! (so a `mayfly jobs cancel` or `retry` is seen within one reconcile interval). The copy is
//! dropped at once, and the next reads go to DynamoDB, after anything suggests it is stale:
//! a write that loses its version condition, a write whose outcome is unknown (a throttled
//! write is known not to have happened), a create of a job that already existed.
//!
//! A stale copy is safe, as every ledger write stays conditional on the version read: a pass
//! that plans from it may try to launch a job another process cancelled, but its `launching`
//! write loses the condition, nothing is launched, and the copy is dropped. Reads by job id
//! (`get`, the consistent re-reads before judging a job lost or an instance an orphan) always
//! go to DynamoDB.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::job::{Job, JobState};
use crate::ports::{Ledger, StoreError};
use crate::scheduler::ACTIVE;

/// A ledger that answers state and batch queries from what it last read and wrote.
pub struct CachedLedger {
    inner: Arc<dyn Ledger>,
    held: Mutex<Held>,
}

impl std::fmt::Debug for CachedLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.held();
        f.debug_struct("CachedLedger")
            .field("jobs", &c.jobs.len())
            .field("states", &c.states)
            .field("batches", &c.batches.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Held {
    jobs: HashMap<String, Entry>,
    /// States whose every job is in `jobs`.
    states: HashSet<JobState>,
    /// Batches whose every job is in `jobs`.
    batches: HashSet<(String, String)>,
    /// Counts what this process learned job by job (writes, reads by id), so a load that
    /// ran meanwhile does not undo it.
    seq: u64,
}

#[derive(Debug)]
struct Entry {
    job: Job,
    /// `Held::seq` when this process last wrote or read the job by id; 0 if only loaded.
    seq: u64,
}

impl Held {
    /// Keeps the newer version of `job`.
    fn merge(&mut self, job: Job, seq: u64) {
        match self.jobs.get_mut(&job.job_id) {
            Some(e) if e.job.version > job.version => {}
            Some(e) => {
                e.seq = e.seq.max(seq);
                e.job = job;
            }
            None => {
                self.jobs.insert(job.job_id.clone(), Entry { job, seq });
            }
        }
    }

    /// Records a job this process just wrote or read by id.
    fn learn(&mut self, job: Job) {
        self.seq += 1;
        let seq = self.seq;
        self.merge(job, seq);
    }

    fn in_state(&self, state: JobState) -> Vec<Job> {
        let mut out: Vec<Job> = self
            .jobs
            .values()
            .filter(|e| e.job.state == state)
            .map(|e| e.job.clone())
            .collect();
        out.sort_by(|a, b| (a.submitted_at, &a.job_id).cmp(&(b.submitted_at, &b.job_id)));
        out
    }

    fn in_batch(&self, payer_id: &str, batch: &str) -> Vec<Job> {
        let mut out: Vec<Job> = self
            .jobs
            .values()
            .filter(|e| e.job.payer_id == payer_id && e.job.batch == batch)
            .map(|e| e.job.clone())
            .collect();
        out.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        out
    }

    /// Takes in a state's jobs as read: jobs held in that state only from earlier reads but
    /// absent from this one have left it elsewhere and are dropped (with their batch, which
    /// is then incomplete). Jobs this process wrote or read by id are kept even if absent (an
    /// index read may lag a write), until the next refresh.
    fn load_state(&mut self, state: JobState, rows: Vec<Job>) {
        let present: HashSet<String> = rows.iter().map(|j| j.job_id.clone()).collect();
        let gone: Vec<String> = self
            .jobs
            .values()
            .filter(|e| e.job.state == state && e.seq == 0 && !present.contains(&e.job.job_id))
            .map(|e| e.job.job_id.clone())
            .collect();
        for id in gone {
            if let Some(e) = self.jobs.remove(&id) {
                self.batches.remove(&(e.job.payer_id, e.job.batch));
            }
        }
        for job in rows {
            self.merge(job, 0);
        }
        self.states.insert(state);
    }
}

impl CachedLedger {
    pub fn new(inner: Arc<dyn Ledger>) -> Self {
        Self {
            inner,
            held: Mutex::new(Held::default()),
        }
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        // The copy is only ever replaced whole or merged job by job; a panic elsewhere
        // leaves it usable.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets everything: the next reads go to DynamoDB.
    pub fn invalidate(&self) {
        *self.held() = Held::default();
    }

    /// How many jobs the copy holds.
    pub fn len(&self) -> usize {
        self.held().jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads every in-flight state, and every batch with an in-flight job, from DynamoDB
    /// again, and replaces the copy with it, keeping what this process learned while reading
    /// (passes may run meanwhile and read the old copy). Batches whose jobs have all finished
    /// are let go, so the copy holds what a pass plans from, not everything the daemon ever
    /// saw. Returns the jobs now held.
    pub async fn refresh(&self) -> Result<usize, StoreError> {
        let since = self.held().seq;
        let mut states = Vec::with_capacity(ACTIVE.len());
        for state in ACTIVE {
            states.push((state, self.inner.by_state(state).await?));
        }
        let batches: BTreeSet<(String, String)> = states
            .iter()
            .flat_map(|(_, rows)| rows.iter())
            .map(|j| (j.payer_id.clone(), j.batch.clone()))
            .collect();
        let mut batch_rows = Vec::with_capacity(batches.len());
        for (payer, batch) in batches {
            let rows = self.inner.by_batch(&payer, &batch).await?;
            batch_rows.push(((payer, batch), rows));
        }
        let mut c = self.held();
        let mut fresh = Held {
            seq: c.seq,
            ..Held::default()
        };
        for (state, rows) in states {
            fresh.load_state(state, rows);
        }
        for (key, rows) in batch_rows {
            for job in rows {
                fresh.merge(job, 0);
            }
            fresh.batches.insert(key);
        }
        for (_, e) in c.jobs.drain().filter(|(_, e)| e.seq > since) {
            fresh.merge(e.job, e.seq);
        }
        *c = fresh;
        Ok(c.jobs.len())
    }
}

#[async_trait]
impl Ledger for CachedLedger {
    async fn create(&self, job: &Job) -> Result<bool, StoreError> {
        let created = self.inner.create(job).await;
        let mut c = self.held();
        match &created {
            Ok(true) => c.learn(job.clone()),
            // It existed: if not here, someone else created it after the copy was read.
            Ok(false) if c.jobs.contains_key(&job.job_id) => {}
            Err(StoreError::Throttled(_)) => {}
            Ok(false) | Err(_) => *c = Held::default(),
        }
        created
    }

    async fn get(&self, job_id: &str) -> Result<Option<Job>, StoreError> {
        let job = self.inner.get(job_id).await?;
        if let Some(j) = &job {
            self.held().learn(j.clone());
        }
        Ok(job)
    }

    async fn update(&self, job: &Job, expected: u64) -> Result<(), StoreError> {
        let written = self.inner.update(job, expected).await;
        let mut c = self.held();
        match &written {
            Ok(()) => c.learn(job.clone()),
            // Throttled: nothing was written, and the copy is still right.
            Err(StoreError::Throttled(_)) => {}
            // Another writer moved it (a lost condition), or the outcome is unknown.
            Err(_) => *c = Held::default(),
        }
        written
    }

    async fn by_state(&self, state: JobState) -> Result<Vec<Job>, StoreError> {
        {
            let c = self.held();
            if c.states.contains(&state) {
                return Ok(c.in_state(state));
            }
        }
        let rows = self.inner.by_state(state).await?;
        let mut c = self.held();
        c.load_state(state, rows);
        Ok(c.in_state(state))
    }

    async fn by_batch(&self, payer_id: &str, batch: &str) -> Result<Vec<Job>, StoreError> {
        let key = (payer_id.to_owned(), batch.to_owned());
        {
            let c = self.held();
            if c.batches.contains(&key) {
                return Ok(c.in_batch(payer_id, batch));
            }
        }
        // Jobs never leave their batch, so a read only adds (an index read may lag a job
        // just created, which the copy keeps).
        let rows = self.inner.by_batch(payer_id, batch).await?;
        let mut c = self.held();
        for job in rows {
            c.merge(job, 0);
        }
        c.batches.insert(key);
        Ok(c.in_batch(payer_id, batch))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use chrono::{TimeZone, Utc};
    use tokio::sync::Notify;

    use super::*;
    use crate::fakes::FakeLedger;
    use crate::job::JobRequest;
    use crate::scheduler::load_snapshot;

    /// The fake ledger, counting the queries that reach it; its read of `failed` jobs can be
    /// held until released.
    #[derive(Default)]
    struct Counted {
        inner: FakeLedger,
        queries: AtomicU32,
        hold_failed: Option<(Notify, Notify)>,
    }

    #[async_trait]
    impl Ledger for Counted {
        async fn create(&self, job: &Job) -> Result<bool, StoreError> {
            self.inner.create(job).await
        }
        async fn get(&self, job_id: &str) -> Result<Option<Job>, StoreError> {
            self.inner.get(job_id).await
        }
        async fn update(&self, job: &Job, expected: u64) -> Result<(), StoreError> {
            self.inner.update(job, expected).await
        }
        async fn by_state(&self, state: JobState) -> Result<Vec<Job>, StoreError> {
            self.queries.fetch_add(1, Ordering::Relaxed);
            if let (JobState::Failed, Some((reached, release))) = (state, &self.hold_failed) {
                reached.notify_one();
                release.notified().await;
            }
            self.inner.by_state(state).await
        }
        async fn by_batch(&self, payer_id: &str, batch: &str) -> Result<Vec<Job>, StoreError> {
            self.queries.fetch_add(1, Ordering::Relaxed);
            self.inner.by_batch(payer_id, batch).await
        }
    }

    fn job(id: &str, batch: &str) -> Job {
        let req = JobRequest::parse(
            &serde_json::json!({
                "job_id": id, "payer_id": "cedar-plan", "kind": "eligibility", "batch": batch,
            })
            .to_string(),
        )
        .expect("request");
        Job::from_request(req, Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap())
    }

    /// `job` moved to `state` by a write of version + 1.
    fn moved(job: &Job, state: JobState) -> Job {
        let mut next = job.clone();
        next.state = state;
        next.version += 1;
        next
    }

    /// Another process (`mayfly jobs cancel`) cancels `job` in the ledger behind the copy.
    async fn cancel_behind(inner: &Counted, job: &Job) {
        inner
            .inner
            .update(&moved(job, JobState::Cancelled), job.version)
            .await
            .expect("cancel");
    }

    /// A copy in front of a ledger holding one queued job, `a` of batch `b1`.
    async fn one_queued() -> (Arc<Counted>, CachedLedger, Job) {
        let inner = Arc::new(Counted::default());
        let a = job("a", "b1");
        inner.inner.create(&a).await.expect("create");
        let cache = CachedLedger::new(inner.clone());
        (inner, cache, a)
    }

    fn ids(jobs: &[Job]) -> Vec<&str> {
        jobs.iter().map(|j| j.job_id.as_str()).collect()
    }

    #[tokio::test]
    async fn a_second_snapshot_is_read_from_the_copy_with_the_daemons_own_writes() {
        let inner = Arc::new(Counted::default());
        let running = moved(
            &moved(&job("a", "b1"), JobState::Launching),
            JobState::Running,
        );
        let done = moved(&running, JobState::Succeeded);
        inner.inner.create(&done).await.expect("create");
        inner.inner.create(&job("b", "b1")).await.expect("create");
        let cache = CachedLedger::new(inner.clone());

        let first = load_snapshot(&cache).await.expect("snapshot");
        assert_eq!(
            ids(&first),
            ["a", "b"],
            "the batch's succeeded job is read too"
        );
        let reads = inner.queries.load(Ordering::Relaxed);
        assert_eq!(reads, 6, "five states and one batch");

        let b = cache.get("b").await.expect("get").expect("b");
        let launching = moved(&b, JobState::Launching);
        cache.update(&launching, b.version).await.expect("update");
        cache.create(&job("c", "b1")).await.expect("create");
        cache.create(&job("d", "b2")).await.expect("create");

        let second = load_snapshot(&cache).await.expect("snapshot");
        assert_eq!(
            inner.queries.load(Ordering::Relaxed),
            reads + 1,
            "only the new batch b2 is read"
        );
        assert_eq!(ids(&second), ["a", "b", "c", "d"]);
        assert_eq!(second[1].state, JobState::Launching);
        assert_eq!(
            ids(&cache.by_state(JobState::Queued).await.expect("queued")),
            ["c", "d"]
        );
        assert_eq!(second, {
            let mut fresh = load_snapshot(inner.as_ref()).await.expect("snapshot");
            fresh.sort_by(|x, y| x.job_id.cmp(&y.job_id));
            fresh
        });
    }

    #[tokio::test]
    async fn a_lost_condition_drops_the_copy_and_the_next_read_sees_the_other_write() {
        let (inner, cache, a) = one_queued().await;
        assert_eq!(
            cache.by_state(JobState::Queued).await.expect("read").len(),
            1
        );

        // Another process cancels it; the copy still says queued.
        cancel_behind(&inner, &a).await;
        assert_eq!(
            cache.by_state(JobState::Queued).await.expect("read").len(),
            1
        );

        let lost = cache
            .update(&moved(&a, JobState::Launching), a.version)
            .await;
        assert!(matches!(lost, Err(StoreError::Conflict(_))), "{lost:?}");
        assert!(cache.is_empty());
        assert!(cache
            .by_state(JobState::Queued)
            .await
            .expect("read")
            .is_empty());
    }

    #[tokio::test]
    async fn a_throttled_write_keeps_the_copy_so_a_throttled_table_is_not_read_again() {
        let (inner, cache, a) = one_queued().await;
        load_snapshot(&cache).await.expect("snapshot");
        let reads = inner.queries.load(Ordering::Relaxed);
        inner.inner.throttle_next_writes(1);
        let throttled = cache
            .update(&moved(&a, JobState::Launching), a.version)
            .await;
        assert!(
            matches!(throttled, Err(StoreError::Throttled(_))),
            "{throttled:?}"
        );
        let again = load_snapshot(&cache).await.expect("snapshot");
        assert_eq!(again[0].state, JobState::Queued, "nothing was written");
        assert_eq!(
            inner.queries.load(Ordering::Relaxed),
            reads,
            "from the copy"
        );
    }

    #[tokio::test]
    async fn refresh_lets_go_of_batches_that_finished() {
        let (inner, cache, a) = one_queued().await;
        load_snapshot(&cache).await.expect("snapshot");
        assert_eq!(
            inner.queries.load(Ordering::Relaxed),
            6,
            "five states, batch b1"
        );
        let done = moved(
            &moved(&moved(&a, JobState::Launching), JobState::Running),
            JobState::Succeeded,
        );
        // The daemon applies the job's `finished` event.
        cache.update(&done, a.version).await.expect("finish");

        assert_eq!(
            cache.refresh().await.expect("refresh"),
            0,
            "nothing in flight"
        );
        assert_eq!(
            inner.queries.load(Ordering::Relaxed),
            11,
            "five states again, and no batch: b1 has nothing in flight"
        );
        assert!(load_snapshot(&cache).await.expect("snapshot").is_empty());
        assert_eq!(inner.queries.load(Ordering::Relaxed), 11, "from the copy");
    }

    #[tokio::test]
    async fn refresh_sees_other_writers_and_keeps_writes_made_while_it_read() {
        let inner = Arc::new(Counted {
            hold_failed: Some((Notify::new(), Notify::new())),
            ..Counted::default()
        });
        let (a, b) = (job("a", "b1"), job("b", "b1"));
        inner.inner.create(&a).await.expect("create");
        inner.inner.create(&b).await.expect("create");
        let cache = Arc::new(CachedLedger::new(inner.clone()));
        assert_eq!(
            cache.by_state(JobState::Queued).await.expect("read").len(),
            2
        );
        // Another process cancels `a`: seen only after a refresh.
        cancel_behind(&inner, &a).await;

        let refreshing = tokio::spawn({
            let cache = cache.clone();
            async move { cache.refresh().await }
        });
        let (reached, release) = inner.hold_failed.as_ref().expect("hold");
        reached.notified().await;
        // The refresh has read `queued` (b queued) and waits on `failed`: a pass launches b.
        cache
            .update(&moved(&b, JobState::Launching), b.version)
            .await
            .expect("update");
        release.notify_one();
        refreshing.await.expect("task").expect("refresh");

        assert!(cache
            .by_state(JobState::Queued)
            .await
            .expect("read")
            .is_empty());
        assert_eq!(
            ids(&cache.by_state(JobState::Launching).await.expect("read")),
            ["b"],
            "the write made during the refresh is kept"
        );
        let queries = inner.queries.load(Ordering::Relaxed);
        cache.by_state(JobState::Running).await.expect("read");
        assert_eq!(
            inner.queries.load(Ordering::Relaxed),
            queries,
            "from the copy"
        );
    }
}
