//! The daemon's copy of the ledger's in-flight jobs, kept between passes.
//!
//! Why: a pass plans from every in-flight job (five state queries) plus the dead and
//! cancelled jobs of each batch in flight (one `by-blocker` query per batch). A one-shot pass must read them; a daemon woken by
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

use chrono::{DateTime, NaiveDate, Utc};

use crate::job::{Job, JobState};
use crate::ledger_index::is_blocker;
use crate::ports::{Ledger, PageQuery, StoreError};
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
    /// Batches whose every blocker (dead or cancelled job) is in `jobs`.
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

    fn blockers_of(&self, payer_id: &str, batch: &str) -> Vec<Job> {
        let mut out: Vec<Job> = self
            .jobs
            .values()
            .filter(|e| e.job.payer_id == payer_id && e.job.batch == batch)
            .filter(|e| is_blocker(e.job.state))
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

    /// Reads every in-flight state, and the blockers of every batch with an in-flight job, from DynamoDB
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
            let rows = self.inner.blockers(&payer, &batch).await?;
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

    async fn update_all(&self, writes: &[(Job, u64)]) -> Result<(), StoreError> {
        let written = self.inner.update_all(writes).await;
        let mut c = self.held();
        match &written {
            Ok(()) => {
                for (job, _) in writes {
                    c.learn(job.clone());
                }
            }
            Err(StoreError::Throttled(_)) => {}
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
        // No pass reads whole batches; not worth a copy.
        self.inner.by_batch(payer_id, batch).await
    }

    async fn blockers(&self, payer_id: &str, batch: &str) -> Result<Vec<Job>, StoreError> {
        let key = (payer_id.to_owned(), batch.to_owned());
        {
            let c = self.held();
            if c.batches.contains(&key) {
                return Ok(c.blockers_of(payer_id, batch));
            }
        }
        // A read only adds: a job leaving the blockers (a retry) is written by someone, and
        // the copy learns or drops it as with any write. An index read may lag a job just
        // written, which the copy keeps.
        let rows = self.inner.blockers(payer_id, batch).await?;
        let mut c = self.held();
        for job in rows {
            c.merge(job, 0);
        }
        c.batches.insert(key);
        Ok(c.blockers_of(payer_id, batch))
    }

    async fn settled_on(
        &self,
        day: NaiveDate,
        billed_before: Option<DateTime<Utc>>,
    ) -> Result<Vec<Job>, StoreError> {
        // History, not in flight: never held.
        self.inner.settled_on(day, billed_before).await
    }

    async fn page(&self, query: &PageQuery) -> Result<Vec<Job>, StoreError> {
        self.inner.page(query).await
    }
}

#[cfg(test)]
mod tests;
