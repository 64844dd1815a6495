//! Tests of the daemon's ledger copy: what it answers from memory, and when it goes back
//! to DynamoDB.

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
    async fn update_all(&self, writes: &[(Job, u64)]) -> Result<(), StoreError> {
        self.inner.update_all(writes).await
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
    async fn blockers(&self, payer_id: &str, batch: &str) -> Result<Vec<Job>, StoreError> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.inner.blockers(payer_id, batch).await
    }
    async fn settled_on(
        &self,
        day: chrono::NaiveDate,
        billed_before: Option<chrono::DateTime<Utc>>,
    ) -> Result<Vec<Job>, StoreError> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.inner.settled_on(day, billed_before).await
    }
    async fn page(&self, query: &crate::ports::PageQuery) -> Result<Vec<Job>, StoreError> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.inner.page(query).await
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

/// The producers' ids of `jobs` (all of one payer here).
fn ids(jobs: &[Job]) -> Vec<&str> {
    jobs.iter()
        .map(|j| crate::job::split_job_id(&j.job_id).1)
        .collect()
}

#[tokio::test]
async fn a_second_snapshot_is_read_from_the_copy_with_the_daemons_own_writes() {
    let inner = Arc::new(Counted::default());
    let running = moved(
        &moved(&job("a", "b1"), JobState::Launching),
        JobState::Running,
    );
    let done = moved(&running, JobState::Dead);
    inner.inner.create(&done).await.expect("create");
    inner.inner.create(&job("b", "b1")).await.expect("create");
    let cache = CachedLedger::new(inner.clone());

    let first = load_snapshot(&cache).await.expect("snapshot");
    assert_eq!(ids(&first), ["a", "b"], "the batch's dead job is read too");
    let reads = inner.queries.load(Ordering::Relaxed);
    assert_eq!(reads, 6, "five states and one batch");

    let b = cache.get("cedar-plan/b").await.expect("get").expect("b");
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
