//! mayfly: an ephemeral EC2 job provisioner and scheduler for healthcare payer data pipelines.
//!
//! Data flows through the modules in this order:
//!
//! - [`profile`]: payer profiles (TOML files, config-table rows) and their pure validation.
//! - [`catalog`]: the EC2 instance-type catalog with on-demand prices.
//! - [`job`]: job requests, the job ledger's records, the state machine and attempts.
//! - [`jobs_file`]: JSON-lines job files for `submit` and the offline `plan`.
//! - [`sizing`]: right-sizing a job to instance types and its fallback ladder.
//! - [`plan`]: the pure planner, from a snapshot to ordered launches and reasons.
//! - [`plan_view`]: the text rendering of plans and reasons.
//! - [`cli`]: the command-line surface shared by the binaries.
//!
//! Support: [`duration`] (human durations), [`secrets`] (refusing credential-looking values).

pub mod catalog;
pub mod cli;
pub mod duration;
pub mod job;
pub mod jobs_file;
pub mod plan;
pub mod plan_view;
pub mod profile;
pub mod secrets;
pub mod sizing;
