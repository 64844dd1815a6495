//! Jobs: the request a producer sends, the job the ledger keeps, its state machine and its
//! attempts.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::retry::FailureCause;
use crate::secrets;
use crate::sizing::Rung;
use crate::state_reason::StateReason;

/// Bounds on what a request may carry.
pub const MAX_PARAMS: usize = 32;
pub const MAX_PARAM_VALUE_BYTES: usize = 1024;
pub const MAX_PARAMS_TOTAL_BYTES: usize = 8192;
pub const MAX_URI_BYTES: usize = 1024;

/// The declared input of a job; its size may scale the compute it gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobInput {
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// A job request as producers send it (the intake message body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// The producer's idempotency key: a re-sent request with the same id is a no-op.
    pub job_id: String,
    pub payer_id: String,
    pub kind: String,
    /// The payer's cycle, e.g. a file-drop date; tiers are ordered within a batch.
    pub batch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<JobInput>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
}

/// A request field that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RequestError {
    pub field: String,
    pub reason: String,
}

impl RequestError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Parses one JSON document as `T`. A failure names the field it is about as a dotted path
/// (`priority`, `input.bytes`, `params.NOTE`, `input.uri` when it is missing), or `default`
/// when it is about no field (not JSON, cut short).
pub fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    default: &str,
) -> Result<T, RequestError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = match e.inner().classify() {
            serde_json::error::Category::Data => {
                field_path(&e.path().to_string(), &e.inner().to_string(), default)
            }
            _ => default.to_owned(),
        };
        RequestError::new(field, e.into_inner().to_string())
    })?;
    de.end()
        .map_err(|e| RequestError::new(default, e.to_string()))?;
    Ok(value)
}

/// The field a data error is about: the path where it happened, plus the field a
/// missing-field error names (serde reports it at the enclosing object, and says which field
/// only in its message).
fn field_path(path: &str, msg: &str, default: &str) -> String {
    let parent = (path != ".").then_some(path);
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| msg.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    match (parent, named) {
        // An unknown field's path already ends with it; a missing one's is its object's.
        (Some(p), Some(f)) if p == f || p.ends_with(&format!(".{f}")) => p.to_owned(),
        (Some(p), Some(f)) => format!("{p}.{f}"),
        (None, Some(f)) => f.to_owned(),
        (Some(p), None) => p.to_owned(),
        (None, None) => default.to_owned(),
    }
}

/// `[A-Za-z0-9._:-]{1,max}`: the alphabet of job ids and batches.
pub fn is_token(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A job's id in mayfly: its payer's id and the producer's `job_id`, as `payer/job_id`. Two
/// payers may use the same producer id (`claims-2026-12-01` is a natural name for both) and
/// get two jobs: the ledger, the instance's tags, its ClientToken, its events and `explain` all
/// name the job by this id. Neither part may contain `/`, so the id splits back unambiguously.
///
/// Ledgers written before ids were per payer hold jobs under the producer's id alone; such a
/// job keeps that id for life (its instance and events carry it), and the intake reads it too
/// so a re-send of it is still recognised.
pub fn job_key(payer_id: &str, job_id: &str) -> String {
    format!("{payer_id}/{job_id}")
}

/// The parts of a job id: the payer (`None` for an id written before ids were per payer) and
/// the producer's `job_id`.
pub fn split_job_id(id: &str) -> (Option<&str>, &str) {
    match id.split_once('/') {
        Some((payer, job)) => (Some(payer), job),
        None => (None, id),
    }
}

/// A well-formed job id: `payer/job_id`, or a producer's `job_id` alone (a job accepted before
/// ids were per payer).
pub fn is_job_id(id: &str) -> bool {
    match split_job_id(id) {
        (Some(payer), job) => is_token(payer, 40) && is_token(job, 128),
        (None, job) => is_token(job, 128),
    }
}

/// What [`is_job_id`] accepts, for error messages.
pub const JOB_ID_FORM: &str = "must be `payer/job_id`: a payer id of 1–40 and a job_id of 1–128 characters of A-Z a-z 0-9 . _ : - (or the job_id alone, for a job accepted before ids were per payer)";

impl JobRequest {
    /// Parses a message body. Errors name the field; unknown fields are refused.
    pub fn parse(body: &str) -> Result<Self, RequestError> {
        // serde would also read a struct from a JSON array of its fields in order; a request
        // is an object.
        if body.trim_start().starts_with('[') {
            return Err(RequestError::new(
                "(body)",
                "a job request is a JSON object, not an array",
            ));
        }
        let req: JobRequest = from_json(body, "(body)")?;
        req.validate()?;
        Ok(req)
    }

    /// Checks the shape of every field (not yet against the payer's profile).
    pub fn validate(&self) -> Result<(), RequestError> {
        if !is_token(&self.job_id, 128) {
            return Err(RequestError::new(
                "job_id",
                "must be 1–128 characters of A-Z a-z 0-9 . _ : -",
            ));
        }
        if !is_token(&self.payer_id, 40) {
            return Err(RequestError::new(
                "payer_id",
                "must be 1–40 characters of A-Z a-z 0-9 . _ : -",
            ));
        }
        if !is_token(&self.kind, 40) {
            return Err(RequestError::new(
                "kind",
                "must be 1–40 characters of A-Z a-z 0-9 . _ : -",
            ));
        }
        if !is_token(&self.batch, 64) {
            return Err(RequestError::new(
                "batch",
                "must be 1–64 characters of A-Z a-z 0-9 . _ : -",
            ));
        }
        if let Some(input) = &self.input {
            if input.uri.is_empty() || input.uri.len() > MAX_URI_BYTES {
                return Err(RequestError::new(
                    "input.uri",
                    format!("must be 1–{MAX_URI_BYTES} bytes"),
                ));
            }
            if input.uri.chars().any(char::is_control) {
                return Err(RequestError::new(
                    "input.uri",
                    "contains control characters",
                ));
            }
            if let Some(what) = secrets::looks_like_secret(&input.uri) {
                return Err(RequestError::new("input.uri", format!("looks like {what}")));
            }
        }
        if let Some(p) = self.priority {
            if p > 100 {
                return Err(RequestError::new("priority", format!("{p} is above 100")));
            }
        }
        if self.params.len() > MAX_PARAMS {
            return Err(RequestError::new(
                "params",
                format!("{} entries, at most {MAX_PARAMS}", self.params.len()),
            ));
        }
        let mut total = 0;
        for (k, v) in &self.params {
            let field = format!("params.{k}");
            let key_ok = (1..=64).contains(&k.len())
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !k.as_bytes()[0].is_ascii_digit();
            if !key_ok {
                return Err(RequestError::new(
                    field,
                    "names must be 1–64 letters, digits or _, not starting with a digit",
                ));
            }
            if k.to_ascii_uppercase().starts_with("MAYFLY_") {
                return Err(RequestError::new(field, "the MAYFLY_ prefix is reserved"));
            }
            if v.len() > MAX_PARAM_VALUE_BYTES || v.chars().any(|c| c.is_control() && c != '\t') {
                return Err(RequestError::new(field, format!("values are at most {MAX_PARAM_VALUE_BYTES} bytes without control characters")));
            }
            if secrets::name_suggests_secret(k) || secrets::looks_like_secret(v).is_some() {
                return Err(RequestError::new(
                    field,
                    "looks like a secret; jobs fetch secrets by reference at boot",
                ));
            }
            total += k.len() + v.len();
        }
        if total > MAX_PARAMS_TOTAL_BYTES {
            return Err(RequestError::new(
                "params",
                format!("{total} bytes, at most {MAX_PARAMS_TOTAL_BYTES}"),
            ));
        }
        Ok(())
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Where a job is in its life. Terminal: `succeeded`, `dead`, `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Launching,
    Running,
    Succeeded,
    Failed,
    Blocked,
    Cancelled,
    Dead,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Queued,
        JobState::Launching,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Blocked,
        JobState::Cancelled,
        JobState::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Launching => "launching",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Blocked => "blocked",
            JobState::Cancelled => "cancelled",
            JobState::Dead => "dead",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }

    /// An instance may exist for the job's current attempt.
    pub fn is_in_flight(self) -> bool {
        matches!(self, JobState::Launching | JobState::Running)
    }

    /// The legal transitions. Everything else is refused by [`Job::transition`].
    pub fn can_become(self, next: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, next),
            (Queued, Launching | Blocked | Cancelled)
                | (Blocked, Queued | Launching | Cancelled | Dead)
                | (Launching, Running | Failed | Queued | Cancelled)
                | (Running, Succeeded | Failed | Cancelled)
                | (Failed, Queued | Dead | Cancelled | Succeeded)
                | (Dead | Cancelled, Queued)
                // A `finished` with exit 0 that arrives after its attempt was judged lost,
                // before a new attempt launched: the job succeeded, and must not run again.
                | (Queued | Dead, Succeeded)
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown job state `{s}`"))
    }
}

/// One try at running a job on one instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub number: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rung: Option<Rung>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// The instance's price per hour at launch (on-demand from the catalog, or the spot
    /// price for its type and AZ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_hour: Option<f64>,
    /// Where `usd_per_hour` came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_source: Option<PriceSource>,
    /// The root volume's size (gp3), from the payer's launch settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_volume_gib: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launched_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tail: Option<String>,
    /// Why the attempt failed, when it did (the retry policy's input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<FailureCause>,
    /// When the reconciler first saw the attempt's instance gone without a `finished` event;
    /// a second look after a grace period declares the attempt lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_at: Option<DateTime<Utc>>,
    /// When mayfly ended the attempt's instance (terminated it, or judged it gone), recorded
    /// in the write that ends the attempt; the end of its bill when there is no `finished`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Rungs of the ladder this attempt did not launch on, in the order tried, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<Fallback>,
    /// Why EC2 ended the attempt's instance, as DescribeInstances said when it was seen gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<StateReason>,
    /// The launch group this attempt went out in: the client token of the one RunInstances
    /// that launched several jobs' instances, and the `mayfly:group` tag on each of them.
    /// `None` for a launch of its own (tagged with its job id and attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_group: Option<String>,
    /// This attempt's entry in its launch group: the group's instance whose `AmiLaunchIndex`
    /// is this number is the attempt's, and runs this attempt's entry of the user-data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_index: Option<u32>,
}

/// A rung of an attempt's ladder that did not launch, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    pub rung: Rung,
    /// The AWS error code RunInstances answered; for a rung skipped without a call, the code
    /// an earlier launch of the same pass met for the rung's quota or purchase option.
    pub code: String,
    /// Skipped without a RunInstances call: the pass already knew the answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

/// Where an attempt's price per hour came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum PriceSource {
    /// The catalog's on-demand price.
    OnDemand,
    /// DescribeSpotPriceHistory's latest price for the type and AZ at launch.
    Spot,
    /// A spot instance priced at on-demand because its spot price could not be read.
    OnDemandFallback { why: String },
}

impl fmt::Display for PriceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PriceSource::OnDemand => f.write_str("on-demand"),
            PriceSource::Spot => f.write_str("spot price at launch"),
            PriceSource::OnDemandFallback { why } => {
                write!(f, "on-demand (spot price unavailable: {why})")
            }
        }
    }
}

impl Attempt {
    /// The attempt's instance was launched but never reported `started`.
    pub fn never_started(&self) -> bool {
        self.instance_id.is_some() && self.started_at.is_none()
    }

    /// Whether the attempt counts against the retry policy's `max_attempts`: it had an
    /// instance that could run the job. A launch that got no instance (no capacity on any
    /// rung, a quota, a configuration error) spends no retry, nor does an instance EC2 ended
    /// before it started for capacity or configuration ([`FailureCause::is_launch_failure`]).
    pub fn spends_retry(&self) -> bool {
        self.instance_id.is_some()
            && !self
                .cause
                .as_ref()
                .is_some_and(FailureCause::is_launch_failure)
    }

    /// A launch that ended without an instance (a bounce): it has ended and has no instance.
    pub fn bounced(&self) -> bool {
        self.instance_id.is_none() && self.finished_at.is_some()
    }
}

/// How many bounced attempts (launches that got no instance) a job keeps on record; older
/// ones are dropped (and counted in [`Job::bounces`]) so a job waiting out a quota for days
/// stays far below DynamoDB's item size limit.
pub const BOUNCES_KEPT: usize = 10;

/// A job as the ledger keeps it. The ledger, not the queue, is the source of truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job's id, `payer/job_id` ([`job_key`]); the producer's id alone for a job accepted
    /// before ids were per payer.
    pub job_id: String,
    pub payer_id: String,
    pub kind: String,
    pub batch: String,
    pub state: JobState,
    #[serde(default)]
    pub priority: u8,
    pub submitted_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<JobInput>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// Number of the current (or last) attempt; 0 before the first launch.
    #[serde(default)]
    pub attempt: u32,
    /// Attempts made before the last manual retry (`mayfly jobs retry`): the retry policy
    /// counts only the attempts after it, so a retried job gets a fresh budget.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt_base: u32,
    /// Not launched before this time (retry backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// Why the job is in its state, when that is not obvious (blocked, failed, dead, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Optimistic-concurrency version; every write is conditional on it.
    #[serde(default)]
    pub version: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// Launches that got no instance over the job's life (each its own attempt number; none
    /// spends a retry). Only the last [`BOUNCES_KEPT`] stay in `attempts`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bounces: u32,
    /// When RunInstances first refused the payer's instance profile as invalid, in the
    /// current run of such refusals: right after a profile is created IAM may not have
    /// propagated it yet, so the launch is retried for a bounded time from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_refused_since: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job {job_id}: cannot go from {from} to {to}")]
pub struct IllegalTransition {
    pub job_id: String,
    pub from: JobState,
    pub to: JobState,
}

impl Job {
    /// A new queued job from an accepted request, under its per-payer id ([`job_key`]).
    pub fn from_request(req: JobRequest, now: DateTime<Utc>) -> Self {
        Self {
            job_id: job_key(&req.payer_id, &req.job_id),
            payer_id: req.payer_id,
            kind: req.kind,
            batch: req.batch,
            state: JobState::Queued,
            priority: req.priority.unwrap_or(0),
            submitted_at: now,
            input: req.input,
            params: req.params,
            attempt: 0,
            attempt_base: 0,
            not_before: None,
            reason: None,
            version: 0,
            attempts: Vec::new(),
            bounces: 0,
            profile_refused_since: None,
            updated_at: Some(now),
        }
    }

    /// The request fields in which `other` (a job built from a re-sent request with the same
    /// `job_id`) differs from this one: empty for a true re-send. A request without a
    /// priority asks for 0, so it matches a job accepted with priority 0.
    pub fn request_differences(&self, other: &Job) -> Vec<&'static str> {
        let mut differ = Vec::new();
        for (field, same) in [
            ("payer_id", self.payer_id == other.payer_id),
            ("kind", self.kind == other.kind),
            ("batch", self.batch == other.batch),
            ("input", self.input == other.input),
            ("params", self.params == other.params),
            ("priority", self.priority == other.priority),
        ] {
            if !same {
                differ.push(field);
            }
        }
        differ
    }

    /// Attempts counted by the retry policy: those since the last manual retry that had an
    /// instance able to run the job ([`Attempt::spends_retry`]).
    pub fn attempts_in_budget(&self) -> u32 {
        let spent = self
            .attempts
            .iter()
            .filter(|a| a.number > self.attempt_base && a.spends_retry())
            .count();
        u32::try_from(spent).unwrap_or(u32::MAX)
    }

    /// Adds a new attempt, dropping the oldest bounced ones beyond [`BOUNCES_KEPT`].
    pub fn push_attempt(&mut self, attempt: Attempt) {
        self.attempts.push(attempt);
        let bounced = self.attempts.iter().filter(|a| a.bounced()).count();
        let mut extra = bounced.saturating_sub(BOUNCES_KEPT);
        self.attempts.retain(|a| {
            let drop = extra > 0 && a.bounced();
            if drop {
                extra -= 1;
            }
            !drop
        });
    }

    pub fn input_bytes(&self) -> Option<u64> {
        self.input.as_ref().and_then(|i| i.bytes)
    }

    pub fn current_attempt(&self) -> Option<&Attempt> {
        self.attempts
            .iter()
            .rev()
            .find(|a| a.number == self.attempt)
    }

    pub fn current_attempt_mut(&mut self) -> Option<&mut Attempt> {
        let n = self.attempt;
        self.attempts.iter_mut().rev().find(|a| a.number == n)
    }

    /// Moves the job to `next` if the state machine allows it, bumping the version.
    /// Callers persist the result with a write conditional on the previous version.
    pub fn transition(
        &mut self,
        next: JobState,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<(), IllegalTransition> {
        if !self.state.can_become(next) {
            return Err(IllegalTransition {
                job_id: self.job_id.clone(),
                from: self.state,
                to: next,
            });
        }
        self.state = next;
        self.reason = reason;
        self.version += 1;
        self.updated_at = Some(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> JobRequest {
        JobRequest::parse(
            r#"{"job_id":"acme:2026-11-01:claims","payer_id":"acme","kind":"claims","batch":"2026-11-01",
                "input":{"uri":"s3://drops/acme/claims.x12","bytes":1024},"params":{"FORMAT":"x12"}}"#,
        )
        .unwrap()
    }

    #[test]
    fn parses_a_well_formed_request() {
        let r = request();
        assert_eq!(r.kind, "claims");
        assert_eq!(r.input.unwrap().bytes, Some(1024));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"job_id":"a b","payer_id":"p","kind":"k","batch":"b"}"#,
                "job_id",
            ),
            (r#"{"job_id":"a","payer_id":"p","kind":"k"}"#, "batch"),
            (r#"not json"#, "(body)"),
            (
                r#"{"job_id":"a","payer_id":"p","kind":"k","batch":"b","colour":1}"#,
                "colour",
            ),
            (
                r#"{"job_id":"a","payer_id":"p","kind":"k","batch":"b","priority":101}"#,
                "priority",
            ),
            (
                r#"{"job_id":"a","payer_id":"p","kind":"k","batch":"b","params":{"DB_PASSWORD":"x"}}"#,
                "params.DB_PASSWORD",
            ),
            (
                r#"{"job_id":"a","payer_id":"p","kind":"k","batch":"b","params":{"MAYFLY_JOB_ID":"x"}}"#,
                "params.MAYFLY_JOB_ID",
            ),
            // Type errors name their field too, however deep.
            (
                r#"{"job_id":"a","payer_id":"p","kind":"k","batch":"b","priority":-1}"#,
                "priority",
            ),
            (
                r#"{"job_id":"a","payer_id":"p","kind":"k","batch":"b","input":{"uri":"s3://x","bytes":"12"}}"#,
                "input.bytes",
            ),
            (
                r#"{"job_id":42,"payer_id":"p","kind":"k","batch":"b"}"#,
                "job_id",
            ),
            (
                r#"{"job_id":"a","payer_id":"p","kind":"k","batch":"b","params":{"N":5}}"#,
                "params.N",
            ),
            (
                r#"{"job_id":"a","payer_id":"p","kind":"k","batch":"b","input":{"bytes":1}}"#,
                "input.uri",
            ),
            (
                r#"{"job_id":"a","payer_id":"p","kind":"k","batch":"b","input":{"uri":"s3://x","size":1}}"#,
                "input.size",
            ),
            // Cut short, or trailing text: about no field.
            (r#"{"job_id":"a","payer_id":"p","input":{"uri":"#, "(body)"),
            (
                r#"{"job_id":"a","payer_id":"p","kind":"k","batch":"b"} x"#,
                "(body)",
            ),
        ];
        for (body, field) in cases {
            let err = JobRequest::parse(body).unwrap_err();
            assert_eq!(err.field, field, "{body}: {err}");
        }
        assert!(JobRequest::parse(r#"{"job_id":"a"}"#)
            .unwrap_err()
            .reason
            .contains("missing field"));
    }

    #[test]
    fn a_resent_request_differs_only_in_what_it_changed() {
        let now = Utc::now();
        let first = Job::from_request(request(), now);
        let mut later = Job::from_request(request(), now + chrono::Duration::minutes(5));
        later.state = JobState::Running;
        assert!(first.request_differences(&later).is_empty());
        let mut changed = request();
        changed.kind = "members".into();
        changed.params.insert("NOTE".into(), "x".into());
        changed.priority = Some(7);
        let changed = Job::from_request(changed, now);
        assert_eq!(
            first.request_differences(&changed),
            ["kind", "params", "priority"]
        );
    }

    #[test]
    fn state_machine_refuses_illegal_moves() {
        let now = Utc::now();
        let mut job = Job::from_request(request(), now);
        assert!(job.transition(JobState::Running, None, now).is_err());
        assert_eq!(job.version, 0);
        job.transition(JobState::Launching, None, now).unwrap();
        job.transition(JobState::Running, None, now).unwrap();
        job.transition(JobState::Succeeded, None, now).unwrap();
        assert_eq!(job.version, 3);
        for next in JobState::ALL {
            assert!(
                job.transition(next, None, now).is_err(),
                "succeeded -> {next}"
            );
        }
    }

    #[test]
    fn only_attempts_with_an_instance_spend_retries() {
        let now = Utc::now();
        let mut job = Job::from_request(request(), now);
        let bounce = |n| Attempt {
            number: n,
            finished_at: Some(now),
            reason: Some("VcpuLimitExceeded: quota".into()),
            ..Attempt::default()
        };
        for n in 1..=3 {
            job.push_attempt(bounce(n));
        }
        job.push_attempt(Attempt {
            number: 4,
            instance_id: Some("i-4".into()),
            cause: Some(FailureCause::InstanceLost),
            ..Attempt::default()
        });
        job.attempt = 4;
        assert_eq!(job.attempts_in_budget(), 1);
        job.push_attempt(Attempt {
            number: 5,
            instance_id: Some("i-5".into()),
            cause: Some(FailureCause::NoCapacity {
                code: "Server.InsufficientInstanceCapacity".into(),
            }),
            ..Attempt::default()
        });
        job.attempt = 5;
        assert_eq!(job.attempts_in_budget(), 1, "EC2 ended that launch");
        // A manual retry starts a fresh budget.
        job.attempt_base = 5;
        assert_eq!(job.attempts_in_budget(), 0);
    }

    #[test]
    fn old_bounces_are_dropped_and_instances_kept() {
        let now = Utc::now();
        let mut job = Job::from_request(request(), now);
        job.push_attempt(Attempt {
            number: 1,
            instance_id: Some("i-1".into()),
            finished_at: Some(now),
            ..Attempt::default()
        });
        for n in 2..=(BOUNCES_KEPT as u32 + 5) {
            job.push_attempt(Attempt {
                number: n,
                finished_at: Some(now),
                ..Attempt::default()
            });
        }
        assert_eq!(job.attempts.len(), BOUNCES_KEPT + 1);
        assert_eq!(
            job.attempts[0].number, 1,
            "the attempt with an instance stays"
        );
        assert_eq!(job.attempts[1].number, 6, "the oldest bounces went first");
    }

    #[test]
    fn terminal_states_are_exactly_three() {
        let terminal: Vec<_> = JobState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [JobState::Succeeded, JobState::Cancelled, JobState::Dead]
        );
    }
}
