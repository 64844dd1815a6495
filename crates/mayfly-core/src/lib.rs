//! mayfly's pure core: everything the scheduler decides, with no I/O and no AWS.
//!
//! Data flows through the modules in this order:
//!
//! - [`profile`]: payer profiles (TOML files, config-table rows) and their pure validation.
//! - [`catalog`]: the EC2 instance-type catalog with on-demand prices.
//! - [`job`]: job requests, the job ledger's records, the state machine and attempts.
//! - [`jobs_file`]: JSON-lines job files for `submit` and the offline `plan`.
//! - [`summary`]: the compact planning projection of a ledger job.
//! - [`sizing`]: right-sizing a job to instance types and its fallback ladder.
//! - [`quota`]: EC2's vCPU quotas per family group and purchase option, and the account's.
//! - [`plan`]: the pure planner, from a snapshot to ordered launches and reasons.
//! - [`group`]: launch groups, consecutive launches of one payer and rung as one RunInstances.
//! - [`plan_view`]: the text rendering of plans and reasons.
//! - [`retry`]: the retry decision after a failed attempt (backoff with jitter, or dead).
//! - [`quota`]: EC2's vCPU quotas, and which one an instance type counts against.
//! - [`state_reason`]: why EC2 ended an instance, and what that means for its attempt.
//! - [`cost`]: what an attempt's instance cost (per-second billing, 60 s minimum, volumes),
//!   productive time vs overhead.
//! - [`simulate`]: capacity planning: the planner on a virtual clock with a modelled fleet,
//!   beside a fixed-size autoscaling group, from a trace of arrivals.
//!
//! Support: [`duration`] (human durations), [`secrets`] (refusing credential-looking values).

pub mod catalog;
pub mod cost;
pub mod duration;
pub mod group;
pub mod job;
pub mod jobs_file;
pub mod plan;
pub mod plan_view;
pub mod profile;
pub mod quota;
pub mod retry;
pub mod secrets;
pub mod simulate;
pub mod sizing;
pub mod state_reason;
pub mod summary;
