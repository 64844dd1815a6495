//! mayfly: an ephemeral EC2 job provisioner and scheduler for healthcare payer data pipelines.
//!
//! The pure core lives in the `mayfly-core` crate and is re-exported here, so callers see one
//! library. Data flows through the modules in this order:
//!
//! - [`profile`]: payer profiles (TOML files, config-table rows) and their pure validation.
//! - [`catalog`]: the EC2 instance-type catalog with on-demand prices.
//! - [`job`]: job requests, the job ledger's records, the state machine and attempts.
//! - [`jobs_file`]: JSON-lines job files for `submit` and the offline `plan`.
//! - [`summary`]: the compact planning projection of a ledger job.
//! - [`sizing`]: right-sizing a job to instance types and its fallback ladder.
//! - [`quota`]: EC2's vCPU quotas per family group and purchase option, and the account's.
//! - [`plan`]: the pure planner, from a snapshot to ordered launches and reasons.
//! - [`plan_view`]: the text rendering of plans and reasons.
//! - [`simulate`]: capacity planning on a virtual clock, mayfly beside a generic ASG.
//! - [`state_reason`]: why EC2 ended an instance, and what that means for its attempt.
//! - [`ports`]: the narrow interfaces to the config table, ledger, queues and EC2.
//! - [`ledger_index`]: what the ledger's indexes hold so reads skip the history; read meters.
//! - [`aws`]: the adapters implementing the ports on the AWS SDK, and call counting.
//! - [`fakes`]: stateful in-memory implementations of every port, for tests.
//! - [`ratelimit`]: client-side token buckets mirroring EC2's API rate limits.
//! - [`userdata`]: rendering the per-job user-data script from templates.
//! - [`events`]: the versioned instance → scheduler events the script sends, and their parsing.
//! - [`scheduler`]: one scheduling pass: ingest, repair, plan, launch, report.
//! - [`metrics`]: the scheduler's metrics snapshot and its Prometheus text rendering.
//! - [`daemon`]: `mayfly run`'s wake-up on arrivals and its metrics endpoint.
//! - [`cost_report`]: what each attempt cost, from the ledger's recorded facts; `cost report`.
//! - [`explain`]: why one job is (not) running, from the planner's reasons; `explain`.
//! - [`preflight`]: every rung of the payers' ladders checked against the account without
//!   launching; `preflight`.
//! - [`cli`]: the command-line surface shared by the binaries.
//! - [`lambda`]: the `mayfly-lambda` function: a scheduled event runs a pass, an SQS event
//!   applies its instance events and runs a pass (partial batch failures), EMF metrics.
//! - [`emf`]: CloudWatch Embedded Metric Format lines, the Lambda function's metrics.
//!
//! [`names`] derives table, queue and tag names from the deployment name.
//!
//! Support: [`duration`] (human durations), [`secrets`] (refusing credential-looking values),
//! [`clock`] (the moment a fact is observed, for every recorded time).
//!
//! The test tooling, the local fleet (`mayfly-fleet`) and the fault proxy
//! (`mayfly-faultproxy`), is the `mayfly-testbed` crate, a dev-dependency only.

pub use mayfly_core::simulate;
pub use mayfly_core::{
    catalog, cost, duration, group, job, jobs_file, plan, plan_view, profile, quota, retry,
    secrets, sizing, state_reason, summary,
};

pub mod aws;
pub mod cli;
pub mod clock;
pub mod cost_report;
pub mod daemon;
pub mod emf;
pub mod events;
pub mod explain;
pub mod fakes;
pub mod job_lookup;
pub mod lambda;
pub mod lease;
pub mod ledger_index;
pub mod metrics;
pub mod names;
pub mod ports;
pub mod preflight;
pub mod ratelimit;
pub mod scheduler;
pub mod userdata;
