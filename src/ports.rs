//! Ports: the narrow interfaces mayfly's scheduling logic uses to reach the config table, the
//! job ledger, the queues and EC2, and what `preflight` and the planner read of the account
//! (launch checks, IAM, Service Quotas). Domain types in, domain types out; adapters (`aws`)
//! convert SDK types at the edge, and every port has a stateful in-memory fake (`fakes`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use crate::job::{Job, JobState};
use crate::profile::PayerProfile;
use crate::quota::{AccountQuotas, QuotaPool};
use crate::sizing::Rung;
use crate::state_reason::StateReason;

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
    /// The caller may not do this; the text names the operation, the table and the grant
    /// that allows it. Nothing was written, and trying again changes nothing.
    #[error("{0}")]
    Denied(String),
    /// The table does not exist (the deployment is not created, or another one is meant).
    #[error("{0} does not exist")]
    NotFound(String),
    /// The call got no answer (connection refused, timed out…): whether it applied is unknown.
    #[error("{0}")]
    Unreachable(String),
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
    /// The pause was the circuit breaker's: applying a changed profile lifts it, as the fix
    /// it waits for. An operator's pause stays until `payers resume`.
    pub paused_by_breaker: bool,
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
    /// Pauses (`Some(reason)`, an operator's pause) or resumes (`None`) a payer, conditional
    /// on `expected`. Resuming also clears the boot-failure count.
    async fn set_paused(
        &self,
        payer_id: &str,
        paused: Option<&str>,
        expected: u64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    /// Pauses a payer on the circuit breaker's behalf, conditional on `expected`: as
    /// `set_paused(Some(reason))`, marked [`StoredPayer::paused_by_breaker`].
    async fn breaker_pause(
        &self,
        payer_id: &str,
        reason: &str,
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
    /// Writes every job of `writes` (each `version` already bumped) only if each stored
    /// version is its `expected`, all or none (DynamoDB's TransactWriteItems, at most
    /// [`MAX_TRANSACTION`] jobs, each at most once). One lost condition is
    /// `StoreError::Conflict` naming the jobs that lost, and nothing is written.
    async fn update_all(&self, writes: &[(Job, u64)]) -> Result<(), StoreError>;
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

/// Most jobs one [`Ledger::update_all`] writes: DynamoDB's limit on a transaction's items.
pub const MAX_TRANSACTION: usize = 100;

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
    /// Who sent it, as SQS stamps it (`SenderId`): for an IAM user its user id, for an
    /// assumed role `<role id>:<session name>`, and for an EC2 instance profile's role
    /// `<role id>:<instance id>`. `None` when the queue did not say.
    pub sender_id: Option<String>,
}

/// A failure of a queue operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("throttled: {0}")]
    Throttled(String),
    /// The caller may not do this; the text names the operation, the queue and the grant
    /// that allows it. Trying again changes nothing.
    #[error("{0}")]
    Denied(String),
    /// The queue does not exist (the deployment is not created, or another one is meant).
    #[error("{0} does not exist")]
    NotFound(String),
    /// The call got no answer (connection refused, timed out…): whether it applied is unknown.
    #[error("{0}")]
    Unreachable(String),
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
    /// Deterministic from deployment, job id, attempt and rung, and recorded on the attempt:
    /// a replay sends the recorded token, so it is the same launch.
    pub client_token: String,
    pub rung: Rung,
    pub image_id: String,
    pub security_groups: Vec<String>,
    pub instance_profile: String,
    pub root_volume_gib: u32,
    /// The KMS key (key ARN, alias or alias ARN) that encrypts the root volume; `None` uses
    /// the account's default EBS key. The root volume is always encrypted.
    pub root_volume_kms_key: Option<String>,
    /// The user-data as EC2 takes it, before base64: a rendered script, or for a launch
    /// group the group's script, gzip-compressed when it would not fit otherwise (cloud-init
    /// runs gzip user-data). The adapter base64-encodes it.
    pub user_data: Vec<u8>,
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

/// One instance of a launch group: the `AmiLaunchIndex` EC2 gave it, and what it returned.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupMember {
    pub launch_index: u32,
    pub launched: Launched,
}

/// How many instances one RunInstances of a launch group asks for: EC2 launches at least
/// `min` (or none, with an error) and at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCount {
    pub min: u32,
    pub max: u32,
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
    /// An account limit (a vCPU quota, the spot instance count): no launch that counts
    /// against the same quota goes this pass; rungs of other quotas may.
    #[error("quota: {code}: {message}")]
    Quota { code: String, message: String },
    /// Spot cannot be used as the account is (its spot service-linked role is missing and
    /// may not be created): configuration of the spot rungs; the on-demand ones may launch.
    #[error("spot unavailable: {code}: {message}")]
    SpotUnavailable { code: String, message: String },
    /// The instance profile was refused as invalid. Right after it is created (or a role is
    /// added to it) IAM may not have propagated it yet: retried for a bounded time, then
    /// configuration.
    #[error("instance profile not usable yet: {code}: {message}")]
    ProfileNotReady { code: String, message: String },
    /// The request itself is wrong (bad AMI, subnet, security group…): the payer's launch
    /// settings need an operator; its jobs wait.
    #[error("configuration: {code}: {message}")]
    Configuration { code: String, message: String },
    /// Not permitted; the message names the operation, the resource and the grant of
    /// `infra/mayfly.yaml` that allows it. Configuration, never retried as transient.
    #[error("denied: {code}: {message}")]
    Denied { code: String, message: String },
    /// The scheduler's own credentials were refused (expired or invalid): no launch of this
    /// pass can work, and no payer is to blame; the jobs wait.
    #[error("credentials refused: {code}: {message}")]
    Credentials { code: String, message: String },
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
    /// Why EC2 last changed the instance's state (with a terminated instance: why it ended).
    pub state_reason: Option<StateReason>,
    /// Its `AmiLaunchIndex`: its place among the instances of the RunInstances that launched
    /// it (0 for a launch of one).
    pub launch_index: Option<u32>,
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
    /// One RunInstances for between `count.min` and `count.max` instances of `req` (a launch
    /// group), with the request's client token: each instance answered with its
    /// `AmiLaunchIndex`. EC2 may launch fewer than `count.max`.
    async fn launch_group(
        &self,
        req: &LaunchRequest,
        count: GroupCount,
    ) -> Result<Vec<GroupMember>, ComputeError>;
    /// The instances of one launch group in this cluster (filtered by the group tag).
    async fn find_group(
        &self,
        cluster: &str,
        group: &str,
    ) -> Result<Vec<ManagedInstance>, ComputeError>;
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

/// An AWS error as a check reports it: the service's error code (or, when the call got no
/// answer, what happened: `timeout`, `dispatch`…) and its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AwsError {
    pub code: String,
    pub message: String,
}

impl AwsError {
    /// Whether the call may well work if made again (no answer, throttled, a server
    /// error): the check could not be made, which says nothing about the settings checked.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code.as_str(),
            "timeout"
                | "dispatch"
                | "response"
                | "construction"
                | "sdk"
                | "InternalError"
                | "InternalFailure"
                | "ServiceUnavailable"
                | "ServiceException"
                | "Unavailable"
                | "RequestLimitExceeded"
                | "Throttling"
                | "ThrottlingException"
                | "TooManyRequestsException"
        ) || self.code.starts_with("HTTP5")
    }
}

/// The account's vCPU quotas (Service Quotas), for the planner.
#[async_trait]
pub trait QuotaReader: Send + Sync {
    /// The current value of each of these quotas. Any quota that cannot be read fails the
    /// whole read, naming it: the planner then falls back to the caps.
    async fn vcpu_quotas(&self, pools: &BTreeSet<QuotaPool>) -> Result<AccountQuotas, AwsError>;
}

/// An image as a launch check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub image_id: String,
    /// `x86_64`, `arm64`, `i386`… as EC2 names it.
    pub architecture: Option<String>,
    pub root_device_name: Option<String>,
    /// `available`, `pending`, `failed`… as EC2 names it.
    pub state: Option<String>,
}

/// A subnet: where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetInfo {
    pub subnet_id: String,
    pub vpc_id: Option<String>,
    pub availability_zone: Option<String>,
}

/// A security group: its VPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroupInfo {
    pub group_id: String,
    pub vpc_id: Option<String>,
}

/// EC2, as `mayfly preflight` checks a launch without making it. Lookups of one id answer
/// EC2's own error when it does not exist (`InvalidAMIID.NotFound`, `InvalidSubnetID.NotFound`,
/// `InvalidGroup.NotFound`).
#[async_trait]
pub trait LaunchChecks: Send + Sync {
    /// RunInstances with `DryRun`: `Ok` when EC2 answers `DryRunOperation` (the request
    /// would have been made), else EC2's error.
    async fn dry_run(&self, req: &LaunchRequest) -> Result<(), AwsError>;
    async fn image(&self, image_id: &str) -> Result<ImageInfo, AwsError>;
    async fn subnet(&self, subnet_id: &str) -> Result<SubnetInfo, AwsError>;
    async fn security_group(&self, group_id: &str) -> Result<SecurityGroupInfo, AwsError>;
    /// Which of `types` are offered in which of `zones`: (type, zone) pairs.
    async fn offerings(
        &self,
        types: &[String],
        zones: &[String],
    ) -> Result<BTreeSet<(String, String)>, AwsError>;
    /// Whether EC2 answers any spot price for `instance_type` in `zone` (DescribeSpotPriceHistory).
    async fn spot_price_listed(&self, instance_type: &str, zone: &str) -> Result<bool, AwsError>;
}

/// An instance profile: its IAM path and the roles it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceProfileInfo {
    pub name: String,
    /// The instance profile's IAM path (`/` unless created under one).
    pub path: String,
    /// The roles it holds, by name.
    pub roles: Vec<String>,
    /// The same roles' IAM paths, in the same order.
    pub role_paths: Vec<String>,
}

/// IAM, as `mayfly preflight` reads it.
#[async_trait]
pub trait IdentityChecks: Send + Sync {
    /// The instance profile, or IAM's error (`NoSuchEntity` when it does not exist).
    async fn instance_profile(&self, name: &str) -> Result<InstanceProfileInfo, AwsError>;
    /// Whether the role exists (`Ok(false)` on `NoSuchEntity`).
    async fn role_exists(&self, name: &str) -> Result<bool, AwsError>;
}
