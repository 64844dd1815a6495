//! The command-line surface: global options, subcommands, and how results are printed.
//! The `mayfly` binary parses [`Cli`] and calls [`run`]; everything here returns values that
//! print as text or JSON.

use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::catalog::Catalog;
use crate::jobs_file;
use crate::plan::{self, Snapshot};
use crate::profile::{self, GlobalCaps, ValidateContext};

/// mayfly: one right-sized, self-terminating EC2 instance per payer data job.
#[derive(Debug, Parser)]
#[command(
    name = "mayfly",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// AWS region (default: the standard AWS chain).
    #[arg(long, global = true, env = "AWS_REGION")]
    pub region: Option<String>,
    /// Endpoint URL for every AWS service (e.g. the local emulator).
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// Named AWS profile from the shared config files.
    #[arg(long, global = true, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// Deployment name: prefixes tables and queues and is the cluster tag value.
    #[arg(long, global = true, default_value = "mayfly", env = "MAYFLY_NAME")]
    pub name: String,
    /// Output format on stdout; logs always go to stderr.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// More logging (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Deployment-wide caps, shared by every command that plans or validates.
#[derive(Debug, Clone, Args)]
pub struct CapsArgs {
    /// Most instances mayfly runs at once, across payers.
    #[arg(long, default_value_t = GlobalCaps::default().max_instances, env = "MAYFLY_MAX_INSTANCES")]
    pub max_instances: u32,
    /// Most vCPUs mayfly runs at once, across payers.
    #[arg(long, default_value_t = GlobalCaps::default().max_vcpus, env = "MAYFLY_MAX_VCPUS")]
    pub max_vcpus: u32,
}

impl CapsArgs {
    pub fn caps(&self) -> GlobalCaps {
        GlobalCaps {
            max_instances: self.max_instances,
            max_vcpus: self.max_vcpus,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Payer onboarding: check profiles (and, with AWS, apply them as config rows).
    #[command(subcommand)]
    Payers(PayersCommand),
    /// Show what one scheduling pass would do, without changing anything.
    ///
    /// Offline, from profile files and a JSON-lines jobs file:
    ///   mayfly plan --profiles payer-profiles --jobs payer-profiles/examples/jobs.jsonl
    Plan(PlanArgs),
}

#[derive(Debug, Subcommand)]
pub enum PayersCommand {
    /// Validate profile files (or directories of them) without touching AWS.
    ///
    /// Exits 2 and names the file, field and reason of every problem.
    Validate {
        /// Profile files or directories of `*.toml` files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        caps: CapsArgs,
    },
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Directory (or files) of payer profiles.
    #[arg(long, default_value = "payer-profiles")]
    pub profiles: Vec<PathBuf>,
    /// JSON-lines jobs file: requests, optionally with ledger fields
    /// (`state`, `submitted_at`, `attempt`, `not_before`, `instance_type`, `instance_id`).
    #[arg(long)]
    pub jobs: PathBuf,
    /// The planning time (RFC 3339); default now. Fix it for reproducible plans.
    #[arg(long)]
    pub now: Option<DateTime<Utc>>,
    /// RunInstances calls this pass may make.
    #[arg(long, default_value_t = 20)]
    pub launch_budget: u32,
    /// The account's EC2 vCPU quota, if known.
    #[arg(long)]
    pub vcpu_quota: Option<u32>,
    #[command(flatten)]
    pub caps: CapsArgs,
}

/// A command's failure, and the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Invalid input or configuration: exit 2.
    #[error("{0}")]
    Invalid(String),
    /// Failure at run time: exit 1.
    #[error("{0}")]
    Runtime(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Invalid(_) => 2,
            CliError::Runtime(_) => 1,
        }
    }
}

/// Prints a result as text or as one JSON document.
pub fn emit<T: Serialize + std::fmt::Display>(output: Output, value: &T) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    let written = match output {
        Output::Text => write!(out, "{value}"),
        Output::Json => serde_json::to_writer_pretty(&mut out, value)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out)),
    };
    match written {
        Ok(()) => Ok(()),
        // A closed pipe (`mayfly plan | head`) is not a failure of the command.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Runtime(format!("cannot write output: {e}"))),
    }
}

/// Runs a command that needs no AWS.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let output = cli.global.output;
    match cli.command {
        Command::Payers(PayersCommand::Validate { paths, caps }) => {
            validate(output, &paths, caps.caps())
        }
        Command::Plan(args) => offline_plan(output, &args),
    }
}

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

fn validate(
    output: crate::cli::Output,
    paths: &[PathBuf],
    caps: GlobalCaps,
) -> Result<(), CliError> {
    let ctx = ValidateContext {
        catalog: Catalog::shipped(),
        global: caps,
    };
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
    if report.errors.is_empty() && !files.is_empty() {
        Ok(())
    } else if files.is_empty() {
        Err(CliError::Invalid("no profile files found".into()))
    } else {
        Err(CliError::Invalid(format!(
            "{} problem(s) found",
            report.errors.len()
        )))
    }
}

fn offline_plan(output: Output, args: &PlanArgs) -> Result<(), CliError> {
    let catalog = Catalog::shipped();
    let caps = args.caps.caps();
    let ctx = ValidateContext {
        catalog,
        global: caps,
    };
    let payers = profile::load_and_validate(&args.profiles, &ctx)
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let now = args.now.unwrap_or_else(Utc::now);
    let text = jobs_file::read(&args.jobs).map_err(|e| CliError::Invalid(e.to_string()))?;
    let jobs =
        jobs_file::parse_snapshot(&args.jobs.display().to_string(), &text, now).map_err(|es| {
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
        launch_budget: args.launch_budget,
        now,
    };
    emit(output, &plan::plan(&snapshot))
}
