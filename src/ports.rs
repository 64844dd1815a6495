//! Ports: the narrow interfaces mayfly's scheduling logic uses to reach the config table, the
//! job ledger, the queues and EC2. Domain types in, domain types out; adapters (`aws`) convert
//! SDK types at the edge, and every port has a stateful in-memory fake (`fakes`).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use crate::job::{Job, JobState};
use crate::profile::PayerProfile;
use crate::sizing::Rung;

/// A failure of the config store or the ledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The conditional write lost: the item's version (or existence) was not as expected.
    #[error("conditional write lost: {0}")]
    Conflict(String),
    /// The service asked us to slow down; nothing was written.
    #[error("throttled: {0}")]
    Throttled(String),
    /// The stored item could not be read back as a mayfly record.
    #[error("corrupt record {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// Any other failure; whether it was applied is unknown.
    #[error("{0}")]
    Other(String),
}

/// A payer's profile as stored in the config table.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPayer {
    pub profile: PayerProfile,
    /// Why the payer is paused, if it is (operator or circuit breaker).
    pub paused: Option<String>,
    /// Optimistic-concurrency version of the row.
    pub version: u64,
    pub updated_at: DateTime<Utc>,
    /// Consecutive boot failures of the payer's instances (the circuit breaker's count).
    pub boot_failures: u32,
}

/// The payer config table.
#[async_trait]
pub trait ConfigStore: Send + Sync {
    /// Every stored payer, sorted by payer id.
    async fn list(&self) -> Result<Vec<StoredPayer>, StoreError>;
    async fn get(&self, payer_id: &str) -> Result<Option<StoredPayer>, StoreError>;
    /// Writes a profile. `expected`: `None` means the row must not exist yet, `Some(v)` means
    /// its version must be `v`. Keeps the pause state. Returns the new version.
    async fn put(
        &self,
        profile: &PayerProfile,
        expected: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    /// Pauses (`Some(reason)`) or resumes (`None`) a payer, conditional on `expected`.
    /// Resuming also clears the boot-failure count.
    async fn set_paused(
        &self,
        payer_id: &str,
        paused: Option<&str>,
        expected: u64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    /// Adds one boot failure to the payer's count (an atomic add, not versioned: the count
    /// is not part of the profile) and returns the new count.
    async fn add_boot_failure(&self, payer_id: &str) -> Result<u32, StoreError>;
    /// Resets the payer's boot-failure count: one of its instances started.
    async fn clear_boot_failures(&self, payer_id: &str) -> Result<(), StoreError>;
}

/// The job ledger: the source of truth for every job.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Conditional put on `job_id`: `Ok(true)` if created, `Ok(false)` if it already existed.
    async fn create(&self, job: &Job) -> Result<bool, StoreError>;
    async fn get(&self, job_id: &str) -> Result<Option<Job>, StoreError>;
    /// Writes `job` (whose `version` is already bumped) only if the stored version is
    /// `expected`. A lost condition is `StoreError::Conflict`, and nothing is written.
    async fn update(&self, job: &Job, expected: u64) -> Result<(), StoreError>;
    /// Every job in `state` (all pages), oldest submitted first.
    async fn by_state(&self, state: JobState) -> Result<Vec<Job>, StoreError>;
    /// Every job of one payer's batch (all pages), by job id.
    async fn by_batch(&self, payer_id: &str, batch: &str) -> Result<Vec<Job>, StoreError>;
    /// The dead and cancelled jobs of one payer's batch (the sparse `by-blocker` index), by
    /// job id: what holds the batch's higher tiers back.
    async fn blockers(&self, payer_id: &str, batch: &str) -> Result<Vec<Job>, StoreError>;
    /// The terminal jobs settled on UTC day `day` (the `by-settled-day` index; see
    /// [`crate::ledger_index`]), and of those only the ones whose bill began before
    /// `billed_before` when given; by the start of their bill.
    async fn settled_on(
        &self,
        day: NaiveDate,
        billed_before: Option<DateTime<Utc>>,
    ) -> Result<Vec<Job>, StoreError>;
    /// At most `limit` jobs in `state` submitted in `[since, before)` (of `payer` only, when
    /// given), oldest submitted first: one page of `jobs list`, or the in-flight jobs a cost
    /// report needs. Reads pages of the `by-state` index from `since` (bounded by `before` in
    /// the key condition) until it has `limit` jobs.
    async fn page(&self, query: &PageQuery) -> Result<Vec<Job>, StoreError>;
}

/// One page of jobs of one state, for [`Ledger::page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    pub state: JobState,
    pub payer: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
    pub limit: usize,
}

impl PageQuery {
    /// The job belongs to the page's filter (ignoring the limit).
    pub fn matches(&self, job: &Job) -> bool {
        job.state == self.state
            && self.payer.as_ref().is_none_or(|p| &job.payer_id == p)
            && self.since.is_none_or(|t| job.submitted_at >= t)
            && self.before.is_none_or(|t| job.submitted_at < t)
    }

    /// Every job in `state`, all pages.
    pub fn all(state: JobState) -> Self {
        Self {
            state,
            payer: None,
            since: None,
            before: None,
            limit: usize::MAX,
        }
    }
}

/// A message received from a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub message_id: String,
    pub body: String,
    /// Handle to delete (acknowledge) this receipt of the message.
    pub receipt: String,
    /// How many times the queue has delivered it (1 on first delivery).
    pub receive_count: u32,
}

/// A failure of a queue operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("throttled: {0}")]
    Throttled(String),
    #[error("{0}")]
    Other(String),
}

/// One SQS queue (intake, events, or a dead-letter queue).
#[async_trait]
pub trait Queue: Send + Sync {
    /// Up to `max` (≤ 10) messages, waiting up to `wait` (≤ 20 s) for the first.
    async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<Message>, QueueError>;
    /// Deletes by receipt in batches of 10; returns the receipts that failed.
    async fn delete(&self, receipts: &[String]) -> Result<Vec<String>, QueueError>;
    /// Sends a body with string attributes; returns the message id.
    async fn send(&self, body: &str, attributes: &[(&str, &str)]) -> Result<String, QueueError>;
    /// Approximate number of visible messages.
    async fn depth(&self) -> Result<u64, QueueError>;
    /// Approximate number of messages in flight: received by some reader and neither deleted
    /// nor back from their visibility timeout (SQS's `ApproximateNumberOfMessagesNotVisible`).
    async fn in_flight(&self) -> Result<u64, QueueError>;
}

/// Everything needed to launch one instance for one job attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRequest {
    /// Deterministic from job id, attempt and rung: a replay is the same launch.
    pub client_token: String,
    pub rung: Rung,
    pub image_id: String,
    pub security_groups: Vec<String>,
    pub instance_profile: String,
    pub root_volume_gib: u32,
    /// The rendered user-data script (plain text; the adapter encodes it).
    pub user_data: String,
    /// Tags applied on create to the instance and its volumes.
    pub tags: Vec<(String, String)>,
}

/// What a successful launch returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Launched {
    pub instance_id: String,
    pub availability_zone: Option<String>,
    pub launched_at: Option<DateTime<Utc>>,
}

/// Why a launch (or another EC2 call) failed, classified by the AWS error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComputeError {
    /// No capacity for this rung (type × AZ × purchase option): try the next rung.
    #[error("capacity: {code}: {message}")]
    Capacity { code: String, message: String },
    /// Rate limited: stop launching for this pass.
    #[error("throttled: {code}")]
    Throttled { code: String },
    /// An account limit (vCPU quota, instance limit): wait for capacity to free up.
    #[error("quota: {code}: {message}")]
    Quota { code: String, message: String },
    /// The request itself is wrong (bad AMI, subnet, profile…): fail the job fast.
    #[error("configuration: {code}: {message}")]
    Configuration { code: String, message: String },
    /// The same client token was used with different parameters.
    #[error("idempotent parameter mismatch: {message}")]
    IdempotentMismatch { message: String },
    /// 5xx, timeouts, dropped connections: whether it was applied is unknown.
    #[error("transient: {code}: {message}")]
    Transient { code: String, message: String },
}

/// Lifecycle state of an instance, converted once at the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Pending,
    Running,
    ShuttingDown,
    Terminated,
    Stopping,
    Stopped,
}

impl InstanceState {
    /// Still billing or about to: anything not on its way out.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            InstanceState::Pending
                | InstanceState::Running
                | InstanceState::Stopping
                | InstanceState::Stopped
        )
    }
}

/// An instance carrying this deployment's cluster tag.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedInstance {
    pub instance_id: String,
    pub state: InstanceState,
    pub instance_type: String,
    pub availability_zone: Option<String>,
    pub spot: bool,
    pub launched_at: Option<DateTime<Utc>>,
    pub tags: BTreeMap<String, String>,
}

impl ManagedInstance {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

/// EC2, as far as mayfly needs it.
#[async_trait]
pub trait Compute: Send + Sync {
    /// One RunInstances with the request's client token.
    async fn launch(&self, req: &LaunchRequest) -> Result<Launched, ComputeError>;
    /// Every instance tagged with this cluster (one filtered, paginated describe).
    async fn list_managed(&self, cluster: &str) -> Result<Vec<ManagedInstance>, ComputeError>;
    /// The instances of one job attempt in this cluster (filtered by tags).
    async fn find_attempt(
        &self,
        cluster: &str,
        job_id: &str,
        attempt: u32,
    ) -> Result<Vec<ManagedInstance>, ComputeError>;
    async fn terminate(&self, instance_ids: &[String]) -> Result<(), ComputeError>;
    /// Sets (`Some`) or removes (`None`) one tag on one instance (the orphan mark).
    async fn set_tag(
        &self,
        instance_id: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), ComputeError>;
    /// The latest spot price (USD per hour, Linux/UNIX) of `instance_type` in `availability_zone`.
    async fn spot_price(
        &self,
        instance_type: &str,
        availability_zone: &str,
    ) -> Result<f64, ComputeError>;
}
