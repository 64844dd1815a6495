//! Names derived from the deployment name (`--name`): tables, queues and tags. The infra
//! template (`infra/mayfly.yaml`) creates resources under exactly these names.

/// Tag keys mayfly puts on every instance and volume it launches.
pub mod tags {
    /// The deployment an instance belongs to; mayfly touches only its own.
    pub const CLUSTER: &str = "mayfly:cluster";
    pub const JOB_ID: &str = "mayfly:job-id";
    pub const ATTEMPT: &str = "mayfly:attempt";
    pub const PAYER: &str = "mayfly:payer";
    pub const KIND: &str = "mayfly:kind";
    pub const BATCH: &str = "mayfly:batch";
    pub const RUNG: &str = "mayfly:rung";
    /// The launch group (its client token) of an instance launched with other jobs'
    /// instances in one RunInstances: such an instance has no job-id or attempt tag (tags on
    /// create are per call); its job is the group member whose launch index is the
    /// instance's `AmiLaunchIndex`.
    pub const GROUP: &str = "mayfly:group";
    /// An instance carrying this tag is never terminated by mayfly.
    pub const PROTECT: &str = "mayfly:protect";
}

/// The message attribute that carries the reason a message was moved to a DLQ (intake or
/// events).
pub const ERROR_ATTRIBUTE: &str = "mayfly-error";

/// The IAM path of a deployment's per-payer roles and instance profiles (`infra/payer.yaml`):
/// the scheduler may pass the roles under it, and no others but the deployment's own.
pub fn payer_role_path(deployment: &str) -> String {
    format!("/mayfly/{deployment}/")
}

/// The instance profile `infra/mayfly.yaml` creates for the deployment itself: its role
/// reads no data, so any payer whose jobs read none may share it.
pub fn deployment_instance_profile(deployment: &str) -> String {
    format!("{deployment}-instance")
}

/// The resource names of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub deployment: String,
}

impl Names {
    pub fn new(deployment: impl Into<String>) -> Self {
        Self {
            deployment: deployment.into(),
        }
    }

    pub fn payers_table(&self) -> String {
        format!("{}-payers", self.deployment)
    }

    pub fn jobs_table(&self) -> String {
        format!("{}-jobs", self.deployment)
    }

    pub fn intake_queue(&self) -> String {
        format!("{}-intake", self.deployment)
    }

    pub fn intake_dlq(&self) -> String {
        format!("{}-intake-dlq", self.deployment)
    }

    pub fn events_queue(&self) -> String {
        format!("{}-events", self.deployment)
    }

    pub fn events_dlq(&self) -> String {
        format!("{}-events-dlq", self.deployment)
    }

    /// The value of the `mayfly:cluster` tag.
    pub fn cluster(&self) -> &str {
        &self.deployment
    }
}

/// Ledger GSI names and key attributes.
pub mod ledger {
    pub const BY_STATE: &str = "by-state";
    pub const BY_BATCH: &str = "by-batch";
    /// `payer_id#batch`, the partition key of the by-batch index.
    pub fn payer_batch(payer_id: &str, batch: &str) -> String {
        format!("{payer_id}#{batch}")
    }
}
