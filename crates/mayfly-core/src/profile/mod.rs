//! Payer profiles: one TOML file per payer (`payer-profiles/*.toml`), one row in the config
//! table. This module holds the types and the file IO; `validate` holds the pure checks.

mod diff;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::catalog::Arch;
use crate::duration::Duration;

pub use diff::{diff, Change};
pub use validate::{is_kms_key_reference, GlobalCaps, Payer, ValidateContext, KMS_KEY_SHAPE};

/// A payer's whole configuration, exactly as written in its profile file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayerProfile {
    /// Stable identifier: lowercase letters, digits and dashes; also the file name.
    pub payer_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Scheduling priority among payers, 0–100 (higher first).
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// Highest priority a job request of this payer may ask for, 0–100.
    #[serde(default = "default_job_priority_max")]
    pub job_priority_max: u8,
    pub caps: PayerCaps,
    pub launch: LaunchSettings,
    pub timeouts: Timeouts,
    /// When to pause the payer by itself after repeated infrastructure failures.
    #[serde(default, skip_serializing_if = "CircuitBreaker::is_default")]
    pub circuit_breaker: CircuitBreaker,
    pub kinds: BTreeMap<String, JobKind>,
}

/// Pauses a payer whose instances keep failing to boot (a broken image, a subnet without a
/// route to the queues…), so it stops burning launches until an operator resumes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Consecutive boot failures (no `started` event) that pause the payer; 0 disables.
    pub boot_failures: u32,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self { boot_failures: 3 }
    }
}

impl CircuitBreaker {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_true() -> bool {
    true
}
fn default_priority() -> u8 {
    50
}
fn default_job_priority_max() -> u8 {
    10
}

/// Concurrency caps for one payer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayerCaps {
    pub max_instances: u32,
    pub max_vcpus: u32,
}

/// How instances of this payer are launched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchSettings {
    pub image_id: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub instance_profile: String,
    #[serde(default)]
    pub capacity: CapacityPolicy,
    #[serde(default = "default_template")]
    pub template: String,
    #[serde(default = "default_root_volume")]
    pub root_volume_gib: u32,
    /// The customer-managed KMS key that encrypts the root volume: a key ARN, an alias
    /// (`alias/NAME`) or an alias ARN. Absent: the deployment's key if it names one, else the
    /// account's default EBS key. The scheduler role needs the key's grants (infra/README.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_volume_kms_key: Option<String>,
    /// Most of this payer's jobs one RunInstances launches (a launch group), below the
    /// deployment's own maximum; `1` launches each job on its own. Absent: the deployment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_group: Option<u32>,
}

fn default_template() -> String {
    "default".to_owned()
}
fn default_root_volume() -> u32 {
    30
}

/// Which purchase options to try, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapacityPolicy {
    Spot,
    #[default]
    OnDemand,
    SpotThenOnDemand,
}

impl CapacityPolicy {
    /// The capacity types a ladder walks through, in order.
    pub fn order(self) -> &'static [CapacityType] {
        match self {
            CapacityPolicy::Spot => &[CapacityType::Spot],
            CapacityPolicy::OnDemand => &[CapacityType::OnDemand],
            CapacityPolicy::SpotThenOnDemand => &[CapacityType::Spot, CapacityType::OnDemand],
        }
    }
}

/// The purchase option of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapacityType {
    Spot,
    OnDemand,
}

impl fmt::Display for CapacityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CapacityType::Spot => "spot",
            CapacityType::OnDemand => "on-demand",
        })
    }
}

/// Time limits applied to every job of the payer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// From launch until the instance reports `started`.
    pub boot: Duration,
    /// Longest silence between heartbeats while running.
    pub heartbeat: Duration,
    /// Upper bound on any job's runtime; a kind may set a lower one.
    pub max_runtime: Duration,
}

/// One kind of job a payer runs (e.g. `eligibility`, `claims`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobKind {
    /// Dependency tier: every lower tier of the same payer and batch must succeed first.
    pub tier: u8,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Program and arguments, run without a shell.
    pub command: Vec<String>,
    pub compute: ComputeSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runtime: Option<Duration>,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Capacity policy for this kind, overriding the payer's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacityPolicy>,
    /// Fixed, non-secret environment for the command.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Secrets by reference (`ssm:/…` or a Secrets Manager ARN), resolved on the instance.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
}

/// Compute for a kind: an explicit ordered list of types, or requirements to size from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<Arch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub families: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_vcpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vcpus: Option<u32>,
    /// vCPUs per GiB of declared input; the result is clamped to `min_vcpus..=max_vcpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus_per_input_gib: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_memory_gib: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_gib_per_vcpu: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// How many of the cheapest fitting types the fallback ladder may use (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<u32>,
}

/// When and how a failed attempt is retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Exit codes of the job's command that are worth another attempt.
    #[serde(default)]
    pub retryable_exit_codes: Vec<i32>,
    #[serde(default = "default_backoff")]
    pub backoff: Duration,
    #[serde(default = "default_backoff_max")]
    pub backoff_max: Duration,
}

fn default_max_attempts() -> u32 {
    3
}
fn default_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_backoff_max() -> Duration {
    Duration::from_mins(30)
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            retryable_exit_codes: Vec::new(),
            backoff: default_backoff(),
            backoff_max: default_backoff_max(),
        }
    }
}

/// A problem with a profile, naming where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{source_name}: {field}: {reason}")]
pub struct ProfileError {
    /// The file (or config-table row) the profile came from.
    #[serde(rename = "source")]
    pub source_name: String,
    /// Dotted path of the offending field, e.g. `kinds.claims.compute.max_vcpus`.
    pub field: String,
    pub reason: String,
}

/// Every problem found in one or more profiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileErrors(pub Vec<ProfileError>);

impl fmt::Display for ProfileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProfileErrors {}

impl PayerProfile {
    /// Parses one profile from TOML text; `source_name` names it in errors.
    pub fn from_toml(source_name: &str, text: &str) -> Result<Self, ProfileError> {
        toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let (line, col) = line_col(text, offset);
            ProfileError {
                source_name: format!("{source_name}:{line}:{col}"),
                field: key_path_at(text, offset).unwrap_or_else(|| "(document)".to_owned()),
                reason: e.message().trim().to_owned(),
            }
        })
    }

    /// Serializes the profile as TOML (the form `payers show` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("profile types always serialize to TOML")
    }
}

/// The dotted key at `offset`: the enclosing `[table]` header plus the key on that line.
/// The TOML parser reports a span but not the path, and operators think in paths.
fn key_path_at(text: &str, offset: usize) -> Option<String> {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'));
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    match (table, key) {
        (Some(t), Some(k)) if !k.is_empty() && !k.starts_with('#') => Some(format!("{t}.{k}")),
        (None, Some(k)) if !k.is_empty() && !k.starts_with('#') => Some(k.to_owned()),
        (Some(t), None) => Some(t),
        _ => None,
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

/// Reads and parses one profile file.
pub fn load_file(path: &Path) -> Result<PayerProfile, ProfileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ProfileError {
        source_name: name.clone(),
        field: "(file)".into(),
        reason: format!("cannot read: {e}"),
    })?;
    let profile = PayerProfile::from_toml(&name, &text)?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if stem != profile.payer_id {
        return Err(ProfileError {
            source_name: name,
            field: "payer_id".into(),
            reason: format!(
                "`{}` does not match the file name `{stem}.toml`",
                profile.payer_id
            ),
        });
    }
    Ok(profile)
}

/// The profile files named by `paths`: each file as is, each directory's `*.toml`, sorted.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ProfileError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|e| ProfileError {
                source_name: p.display().to_string(),
                field: "(directory)".into(),
                reason: format!("cannot read: {e}"),
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// Loads and validates every profile under `paths`; all problems are reported together.
pub fn load_and_validate(
    paths: &[PathBuf],
    ctx: &ValidateContext<'_>,
) -> Result<Vec<Payer>, ProfileErrors> {
    let files = expand_paths(paths).map_err(|e| ProfileErrors(vec![e]))?;
    let mut errors = Vec::new();
    let mut payers: Vec<Payer> = Vec::new();
    for file in files {
        let name = file.display().to_string();
        match load_file(&file) {
            Err(e) => errors.push(e),
            Ok(profile) => match profile.validate(&name, ctx) {
                Ok(payer) => {
                    if payers.iter().any(|p| p.id() == payer.id()) {
                        errors.push(ProfileError {
                            source_name: name,
                            field: "payer_id".into(),
                            reason: format!("`{}` is defined twice", payer.id()),
                        });
                    } else {
                        payers.push(payer);
                    }
                }
                Err(mut es) => errors.append(&mut es.0),
            },
        }
    }
    if errors.is_empty() {
        Ok(payers)
    } else {
        Err(ProfileErrors(errors))
    }
}
