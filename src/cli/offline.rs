//! Commands that need no AWS: validating profile files and planning from a jobs file.

use std::path::PathBuf;

use chrono::Utc;
use serde::Serialize;

use super::{emit, CliError, GlobalArgs, Output, PlanArgs, RenderArgs};
use crate::catalog::Catalog;
use crate::jobs_file;
use crate::plan::{self, Snapshot};
use crate::profile::{self, GlobalCaps, ValidateContext};

/// The outcome of `payers validate`.
#[derive(Debug, Serialize)]
pub struct ValidateReport {
    pub valid: Vec<ValidProfile>,
    pub errors: Vec<profile::ProfileError>,
}

#[derive(Debug, Serialize)]
pub struct ValidProfile {
    pub payer_id: String,
    pub kinds: usize,
    pub tiers: u8,
}

impl std::fmt::Display for ValidateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for v in &self.valid {
            writeln!(
                f,
                "ok      {} ({} kinds, {} tiers)",
                v.payer_id, v.kinds, v.tiers
            )?;
        }
        for e in &self.errors {
            writeln!(f, "error   {e}")?;
        }
        Ok(())
    }
}

/// Checks the profile paths a command was given (or defaulted to) before reading them, so
/// a command run outside the repository says so instead of failing on the first read:
/// which path is missing or empty, where it looked, and how to point elsewhere (`how`).
pub(super) fn require_profiles(paths: &[PathBuf], how: &str) -> Result<(), CliError> {
    let here = || {
        std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| "the current directory".to_owned())
    };
    for p in paths {
        if !p.exists() {
            return Err(CliError::Invalid(format!(
                "no profile directory or file `{}` was found here ({}): {how}",
                p.display(),
                here()
            )));
        }
    }
    let files = profile::expand_paths(paths).map_err(|e| CliError::Invalid(e.to_string()))?;
    if files.is_empty() {
        let named: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(CliError::Invalid(format!(
            "no payer profile (*.toml) in {}: {how}",
            named.join(", ")
        )));
    }
    Ok(())
}

/// What `plan` and `render` say when their profiles are not where `--profiles` points.
const PROFILES_FLAG: &str = "run from the mayfly repository (its payer-profiles/), or pass --profiles DIR with the directory of payer profiles";

pub(super) fn validate(
    output: Output,
    paths: &[PathBuf],
    caps: GlobalCaps,
) -> Result<(), CliError> {
    let ctx = ValidateContext {
        catalog: Catalog::shipped(),
        global: caps,
    };
    require_profiles(paths, "give profile files (*.toml) or directories of them")?;
    let files = profile::expand_paths(paths).map_err(|e| CliError::Invalid(e.to_string()))?;
    let mut report = ValidateReport {
        valid: Vec::new(),
        errors: Vec::new(),
    };
    for file in &files {
        match profile::load_and_validate(std::slice::from_ref(file), &ctx) {
            Ok(payers) => report.valid.extend(payers.iter().map(|p| {
                ValidProfile {
                    payer_id: p.id().to_owned(),
                    kinds: p.profile.kinds.len(),
                    tiers: p
                        .profile
                        .kinds
                        .values()
                        .map(|k| k.tier + 1)
                        .max()
                        .unwrap_or(0),
                }
            })),
            Err(es) => report.errors.extend(es.0),
        }
    }
    emit(output, &report)?;
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Invalid(format!(
            "{} problem(s) found",
            report.errors.len()
        )))
    }
}

pub(super) fn offline_plan(output: Output, args: &PlanArgs) -> Result<(), CliError> {
    let catalog = Catalog::shipped();
    let caps = args.caps.caps();
    let ctx = ValidateContext {
        catalog,
        global: caps,
    };
    require_profiles(&args.profiles, PROFILES_FLAG)?;
    let payers = profile::load_and_validate(&args.profiles, &ctx)
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let now = args.now.unwrap_or_else(Utc::now);
    let jobs_path = args
        .jobs
        .as_ref()
        .expect("offline planning is chosen by --jobs");
    let text = jobs_file::read(jobs_path).map_err(|e| CliError::Invalid(e.to_string()))?;
    let jobs =
        jobs_file::parse_snapshot(&jobs_path.display().to_string(), &text, now).map_err(|es| {
            CliError::Invalid(
                es.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        })?;
    let summaries = crate::summary::JobSummary::of_all(&jobs);
    let snapshot = Snapshot {
        jobs: &summaries,
        payers: &payers,
        catalog,
        caps,
        vcpu_quota: args.vcpu_quota,
        account_quotas: crate::quota::AccountQuota::NotRead,
        launch_budget: args.launch_budget,
        now,
    };
    emit(output, &plan::plan(&snapshot))
}

/// A rendered user-data script: printed as is, or as JSON with its size.
#[derive(Debug, Serialize)]
pub struct Rendered {
    pub bytes: usize,
    pub user_data: String,
}

impl std::fmt::Display for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.user_data)
    }
}

pub(super) fn render(
    output: Output,
    global: &GlobalArgs,
    args: &RenderArgs,
) -> Result<(), CliError> {
    use crate::job::{Job, JobInput, JobRequest};
    use crate::userdata::{render_for_job, InstanceEnv, Renderer};
    let ctx = ValidateContext {
        catalog: Catalog::shipped(),
        global: args.caps.caps(),
    };
    require_profiles(&args.profiles, PROFILES_FLAG)?;
    let payers = profile::load_and_validate(&args.profiles, &ctx)
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let payer = payers
        .iter()
        .find(|p| p.id() == args.payer)
        .ok_or_else(|| CliError::Invalid(format!("payer: no profile for `{}`", args.payer)))?;
    if payer.kind(&args.kind).is_none() {
        return Err(CliError::Invalid(format!(
            "kind: payer `{}` has no job kind `{}`",
            args.payer, args.kind
        )));
    }
    let req = JobRequest {
        job_id: args.job_id.clone(),
        payer_id: args.payer.clone(),
        kind: args.kind.clone(),
        batch: args.batch.clone(),
        input: args.input_uri.clone().map(|uri| JobInput {
            uri,
            bytes: args.input_bytes,
        }),
        params: args.params.iter().cloned().collect(),
        priority: None,
    };
    req.validate()
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let mut job = Job::from_request(req, Utc::now());
    job.attempt = args.attempt;
    let env = InstanceEnv {
        events_queue_url: args.events_queue_url.clone(),
        region: global
            .region
            .clone()
            .unwrap_or_else(|| "us-east-1".to_owned()),
        endpoint_url: global.endpoint_url.clone(),
        ..InstanceEnv::default()
    };
    let renderer =
        Renderer::load(args.templates.as_deref()).map_err(|e| CliError::Invalid(e.to_string()))?;
    let user_data = render_for_job(&renderer, payer, &job, args.attempt, &env)
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    emit(
        output,
        &Rendered {
            bytes: user_data.len(),
            user_data,
        },
    )
}
