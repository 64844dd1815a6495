//! The command-line surface: global options, subcommands, and how results are printed.
//! The `mayfly` binary parses [`Cli`] and calls [`run`]; results print as text or JSON.

mod app;
mod cost;
mod explain;
mod jobs;
mod ledger;
mod offline;
mod pass;
mod payer_roles;
mod payers;
mod preflight;
mod progress;
mod run;
mod simulate;
mod status;

use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::profile::GlobalCaps;

pub use app::App;
pub use cost::{CostCommand, CostReportArgs, ReportFormat};
pub use explain::ExplainArgs;
pub use offline::{ValidProfile, ValidateReport};
pub use payers::{apply_profile, Applied};
pub use preflight::PreflightArgs;
pub use simulate::SimulateArgs;

/// mayfly: one right-sized, self-terminating EC2 instance per payer data job.
#[derive(Debug, Parser)]
#[command(
    name = "mayfly",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = "Examples:
  mayfly payers validate payer-profiles/
  mayfly --name prod submit --file jobs.jsonl
  mayfly --endpoint-url http://127.0.0.1:5000 status
  mayfly plan --jobs payer-profiles/examples/jobs.jsonl

Every command's --help ends with examples of its own."
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
    /// Endpoint URL for every AWS service (e.g. the local emulator). Without it, the standard
    /// AWS chain applies, including AWS_ENDPOINT_URL and the per-service AWS_ENDPOINT_URL_*.
    #[arg(long, global = true)]
    pub endpoint_url: Option<String>,
    /// Named AWS profile from the shared config files.
    #[arg(long, global = true, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// Deployment name: prefixes tables and queues and is the cluster tag value.
    #[arg(long, global = true, default_value = "mayfly", env = "MAYFLY_NAME")]
    pub name: String,
    /// Keep terminal jobs (succeeded, cancelled, dead) this many days after they settle, then
    /// let DynamoDB's TTL delete them (the deployment's RetentionDays). Unset: kept forever.
    /// Every process that writes the ledger must be given the same value.
    #[arg(long, global = true, env = "MAYFLY_RETENTION_DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    pub retention_days: Option<u32>,
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
    /// Payer onboarding: validate profile files, compare and apply them as config rows.
    #[command(
        subcommand,
        after_help = "Examples:
  mayfly payers validate payer-profiles/
  mayfly payers diff payer-profiles/
  mayfly payers apply payer-profiles/
  mayfly payers pause cedar-plan --reason \"warehouse migration\""
    )]
    Payers(PayersCommand),
    /// Check every rung of the payers' ladders against the account without launching
    /// anything: the image and its architecture, subnets and security groups (one VPC), the
    /// instance profile, each type offered in each subnet's zone, the vCPU quotas, spot
    /// prices and the spot service-linked role, and RunInstances with DryRun (the launch's
    /// own request). One line per problem naming payer, kind, rung and AWS error code.
    ///
    /// Exits 2 when a launch would fail, 1 when a check could not be made. Against an
    /// emulator it lists what the emulator cannot check instead of passing it.
    #[command(after_help = "Examples:
  mayfly preflight
  mayfly preflight cedar-plan prairie-mutual
  mayfly --output json preflight cedar-plan")]
    Preflight(PreflightArgs),
    /// Put job requests on the intake queue: one from flags, or many from a JSON-lines file.
    #[command(after_help = "Examples:
  mayfly submit --job-id cedar-plan:2026-11:claims --payer cedar-plan --kind claims --batch 2026-11
  mayfly submit --file jobs.jsonl")]
    Submit(SubmitArgs),
    /// Run one scheduling pass: ingest, events, reconcile, repair, plan, launch, report.
    #[command(after_help = "Examples:
  mayfly tick
  mayfly tick --dry-run
  mayfly --output json tick --max-launches 10")]
    Tick(TickArgs),
    /// Show what one scheduling pass would do, without changing anything.
    ///
    /// Without --jobs, plans against the live config table and ledger (reads only); with
    /// --jobs, plans offline from files and needs no AWS.
    #[command(after_help = "Examples:
  mayfly plan
  mayfly plan --jobs payer-profiles/examples/jobs.jsonl
  mayfly plan --profiles payer-profiles --jobs jobs.jsonl --now 2026-11-22T12:00:00Z")]
    Plan(PlanArgs),
    /// Look at jobs in the ledger.
    #[command(
        subcommand,
        after_help = "Examples:
  mayfly jobs list
  mayfly jobs list --state dead --payer cedar-plan
  mayfly jobs show cedar-plan:2026-11:claims
  mayfly jobs retry cedar-plan:2026-10:eligibility"
    )]
    Jobs(JobsCommand),
    /// Ledger maintenance.
    #[command(
        subcommand,
        after_help = "Examples:
  mayfly ledger backfill
  mayfly ledger backfill --rate 100 --start-after 'cedar-plan:2026-03:claims'"
    )]
    Ledger(LedgerCommand),
    /// Run the scheduler as a daemon: hold the leader lease and, while leader, run a pass
    /// every --interval, and soon after work arrives; standbys take over when the lease
    /// expires.
    ///
    /// The leader long-polls the intake and events queues and runs a pass --batch-window-ms
    /// after a message arrives. Passes plan from a copy of the in-flight jobs that the daemon
    /// keeps current with its own writes; a reconcile with EC2 runs every
    /// --reconcile-interval beside them, and first re-reads that copy, so changes made by
    /// other processes (jobs cancel, jobs retry) are seen within one reconcile interval.
    /// Start several for failover; exactly one runs passes at a time (and every ledger write
    /// is conditional anyway). SIGTERM or SIGINT finishes the passes under way, releases the
    /// lease and exits 0. Prints one line per event (started, leader, standby, pass-start,
    /// pass, stopped).
    #[command(after_help = "Examples:
  mayfly run
  mayfly run --interval 10s --lease-ttl 30s --metrics-addr 127.0.0.1:9464")]
    Run(RunArgs),
    /// Reconcile the ledger with this deployment's instances, as every pass does, and report
    /// each instance that needs attention: why, and what was done.
    ///
    /// Lost jobs are retried, overdue instances (boot, heartbeat, max runtime) terminated and
    /// their jobs retried, orphans marked and terminated after --orphan-grace. Instances of
    /// other deployments are never touched; those tagged mayfly:protect never terminated.
    #[command(after_help = "Examples:
  mayfly reap --dry-run
  mayfly reap --orphan-grace 10m")]
    Reap(ReapArgs),
    /// One screen about the deployment: queue depths, jobs by state, live instances, paused
    /// payers, the oldest waiting job and why it waits, and instance cost since midnight UTC.
    #[command(after_help = "Examples:
  mayfly status
  mayfly status --output json
  mayfly --name prod status")]
    Status,
    /// Print the user-data script a job would get (offline; no AWS needed).
    #[command(after_help = "Examples:
  mayfly render --payer cedar-plan --kind claims --batch 2026-11
  mayfly render --payer cedar-plan --kind claims --input-uri s3://drop/claims.837 --input-bytes 21474836480
  mayfly render --profiles ~/payers --payer acme --kind claims --param FORMAT=x12")]
    Render(RenderArgs),
    /// Capacity planning, offline: simulate a trace of job arrivals under mayfly's planner
    /// with a modelled fleet, beside a fixed-size generic autoscaling group; print makespan,
    /// cost, billed/job-seconds and tier-order violations per payer and tier.
    #[command(after_help = "Examples:
  mayfly simulate --trace payer-profiles/examples/reference-trace.jsonl --baseline asg:6:m5.2xlarge
  mayfly simulate --generate-trace --jobs 100000 --seed 7 > trace.jsonl")]
    Simulate(SimulateArgs),
    /// What the instances cost: totals and breakdowns, productive vs overhead.
    #[command(
        subcommand,
        after_help = "Examples:
  mayfly cost report --by payer
  mayfly cost report --format html --out cost.html"
    )]
    Cost(CostCommand),
    /// Why a job is (not) running: what it waits on, or where it runs and at what cost.
    ///
    /// Waiting on which lower-tier jobs, blocked by which dead one, which cap or quota,
    /// backoff until when, payer paused and why; dead with the last exit code and output
    /// tail; or running on which instance since when, at what cost so far.
    ///
    /// A job's id is `payer/job_id`; the job_id alone finds the job when one payer has it.
    #[command(after_help = "Examples:
  mayfly explain cedar-plan:2026-11:claims
  mayfly explain cedar-plan/cedar-plan:2026-11:claims
  mayfly --output json explain cedar-plan:2026-11:claims")]
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Directory (or files) of payer profiles.
    #[arg(long, default_value = "payer-profiles")]
    pub profiles: Vec<PathBuf>,
    #[arg(long)]
    pub payer: String,
    #[arg(long)]
    pub kind: String,
    #[arg(long, default_value = "example-job")]
    pub job_id: String,
    #[arg(long, default_value = "example-batch")]
    pub batch: String,
    #[arg(long)]
    pub input_uri: Option<String>,
    #[arg(long, requires = "input_uri")]
    pub input_bytes: Option<u64>,
    /// A job parameter, KEY=VALUE (repeatable).
    #[arg(long = "param", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    #[arg(long, default_value_t = 1)]
    pub attempt: u32,
    /// Template directory overlaying the built-in templates (default: ./userdata-templates if present).
    #[arg(long)]
    pub templates: Option<PathBuf>,
    /// The events queue URL the instance reports to.
    #[arg(
        long,
        default_value = "https://sqs.us-east-1.amazonaws.com/123456789012/mayfly-events"
    )]
    pub events_queue_url: String,
    #[command(flatten)]
    pub caps: CapsArgs,
}

#[derive(Debug, Subcommand)]
pub enum PayersCommand {
    /// Validate profile files (or directories of them) without touching AWS.
    ///
    /// Exits 2 and names the file, field and reason of every problem.
    #[command(after_help = "Examples:
  mayfly payers validate payer-profiles/
  mayfly payers validate payer-profiles/cedar-plan.toml --max-vcpus 512")]
    Validate {
        /// Profile files or directories of `*.toml` files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        caps: CapsArgs,
    },
    /// Show, field by field, how profile files differ from the config table.
    #[command(after_help = "Examples:
  mayfly payers diff payer-profiles/
  mayfly --output json payers diff payer-profiles/cedar-plan.toml")]
    Diff {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        caps: CapsArgs,
    },
    /// Validate profile files and write the changed ones to the config table.
    #[command(after_help = "Examples:
  mayfly payers apply payer-profiles/
  mayfly payers apply --dry-run payer-profiles/")]
    Apply {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Show what would be written, and write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        caps: CapsArgs,
    },
    /// List the payers in the config table.
    #[command(after_help = "Examples:
  mayfly payers list
  mayfly --output json payers list")]
    List,
    /// Print one payer's stored profile (TOML), version and pause state.
    #[command(after_help = "Examples:
  mayfly payers show cedar-plan")]
    Show { payer_id: String },
    /// Stop launching a payer's jobs (running jobs finish).
    #[command(after_help = "Examples:
  mayfly payers pause cedar-plan --reason \"warehouse migration\"")]
    Pause {
        payer_id: String,
        /// Why; shown by `plan`, `explain` and `status`.
        #[arg(long)]
        reason: String,
    },
    /// Launch a paused payer's jobs again (and clear the boot-failure count).
    #[command(after_help = "Examples:
  mayfly payers resume cedar-plan")]
    Resume { payer_id: String },
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// JSON-lines file of job requests (one JSON object per line).
    #[arg(long, conflicts_with_all = ["job_id", "payer", "kind", "batch"])]
    pub file: Option<PathBuf>,
    /// The producer's idempotency key: re-sending the same id is a no-op.
    #[arg(long, required_unless_present = "file")]
    pub job_id: Option<String>,
    #[arg(long, required_unless_present = "file")]
    pub payer: Option<String>,
    #[arg(long, required_unless_present = "file")]
    pub kind: Option<String>,
    /// The payer's cycle, e.g. the file-drop date.
    #[arg(long, required_unless_present = "file")]
    pub batch: Option<String>,
    #[arg(long)]
    pub input_uri: Option<String>,
    /// Declared input size in bytes (may scale the instance size).
    #[arg(long, requires = "input_uri")]
    pub input_bytes: Option<u64>,
    /// A parameter passed to the job as environment, KEY=VALUE (repeatable).
    #[arg(long = "param", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    #[arg(long)]
    pub priority: Option<u8>,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

#[derive(Debug, Args)]
pub struct TickArgs {
    /// Read and plan only: nothing is deleted, written or launched.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub pass: PassArgs,
}

/// Limits of one pass.
#[derive(Debug, Clone, Args)]
pub struct PassArgs {
    /// Most RunInstances calls in one pass.
    #[arg(long, default_value_t = 60, env = "MAYFLY_MAX_LAUNCHES")]
    pub max_launches: u32,
    /// Most jobs one RunInstances launches: consecutive launches of one payer and rung go
    /// out as one launch group, each job still on its own instance. `1` launches each job on
    /// its own; a payer's `launch.max_group` may lower it for its jobs.
    #[arg(long, default_value_t = crate::group::DEFAULT_MAX_GROUP, env = "MAYFLY_MAX_GROUP",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::group::MAX_GROUP)))]
    pub max_group: u32,
    /// Launch groups ask for all of their instances or none (`MinCount = MaxCount`) instead of
    /// as many as EC2 has (`MinCount = 1`): for an emulator that launches exactly `MinCount`
    /// and ignores `MaxCount`, as moto does.
    #[arg(long, env = "MAYFLY_GROUP_MIN_IS_MAX")]
    pub group_min_is_max: bool,
    /// One vCPU quota over every instance family, instead of the account's quotas per
    /// family group (read from Service Quotas when this is not given).
    #[arg(long, env = "MAYFLY_VCPU_QUOTA")]
    pub vcpu_quota: Option<u32>,
    /// The customer-managed KMS key that encrypts the root volume of every payer whose
    /// profile names none (`launch.root_volume_kms_key`): a key ARN, an alias (alias/NAME) or
    /// an alias ARN. Without it, those volumes use the account's default EBS key. The
    /// scheduler role needs grants on the key (infra/README.md, RootVolumeKmsKeyArn).
    #[arg(long, env = "MAYFLY_ROOT_VOLUME_KMS_KEY", value_name = "KEY", value_parser = parse_kms_key)]
    pub root_volume_kms_key: Option<String>,
    /// Apply instance events without checking that the instance they name sent them (SQS's
    /// SenderId). Only for an emulator whose SenderId is a constant (moto's is): refused
    /// without an endpoint override. On AWS every event must come from its own instance.
    #[arg(long, env = "MAYFLY_UNVERIFIED_EVENT_SENDERS")]
    pub unverified_event_senders: bool,
    #[command(flatten)]
    pub caps: CapsArgs,
    #[command(flatten)]
    pub reap: ReapSettings,
}

fn parse_kms_key(s: &str) -> Result<String, String> {
    if crate::profile::is_kms_key_reference(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("not {}", crate::profile::KMS_KEY_SHAPE))
    }
}

impl PassArgs {
    /// The defaults (and `MAYFLY_*` environment), for commands that do not take pass flags.
    pub fn defaults() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            pass: PassArgs,
        }
        Defaults::parse_from(["mayfly"]).pass
    }
}

/// When the reconciler judges an instance lost or an orphan.
#[derive(Debug, Clone, Args)]
pub struct ReapSettings {
    /// How long a running job's instance must stay gone without a `finished` event before
    /// the attempt may be judged lost and retried. Even then it is judged only once none of
    /// its events can still arrive: the events queue read to its end with a long poll and no
    /// message in flight (docs/events.md).
    #[arg(long, default_value = "2m", env = "MAYFLY_LOST_GRACE")]
    pub lost_grace: crate::duration::Duration,
    /// How long an orphan (a live instance no in-flight job owns) stays marked with the
    /// `mayfly:orphaned-at` tag before it is terminated.
    #[arg(long, default_value = "5m", env = "MAYFLY_ORPHAN_GRACE")]
    pub orphan_grace: crate::duration::Duration,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Time between passes while leader.
    #[arg(long, default_value = "10s", env = "MAYFLY_INTERVAL")]
    pub interval: crate::duration::Duration,
    /// The leader lease's time to live: a standby takes over this long after the leader's
    /// last renewal (renewals come every third of it). At least 3s.
    #[arg(long, default_value = "30s", env = "MAYFLY_LEASE_TTL")]
    pub lease_ttl: crate::duration::Duration,
    /// After a job request or instance event arrives, wait this many milliseconds for more
    /// before running a pass, so a burst is planned together.
    #[arg(long, default_value_t = 300, env = "MAYFLY_BATCH_WINDOW_MS")]
    pub batch_window_ms: u64,
    /// Time between reconciles with EC2 (one DescribeInstances of the deployment each). A
    /// reconcile runs beside the planning passes, so arrivals never wait for it, and first
    /// re-reads the in-flight jobs: the passes plan from a copy of the ledger the daemon keeps
    /// up to date with its own writes, and changes made by other processes (`mayfly jobs
    /// cancel`, `retry`) reach it at the latest on the next reconcile.
    #[arg(long, default_value = "30s", env = "MAYFLY_RECONCILE_INTERVAL")]
    pub reconcile_interval: crate::duration::Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, env = "MAYFLY_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub pass: PassArgs,
}

#[derive(Debug, Args)]
pub struct ReapArgs {
    /// Judge and report only: nothing is tagged, written or terminated.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub reap: ReapSettings,
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Give items written before the by-blocker and by-settled-day indexes (or before
    /// --retention-days was set) their index keys, so the indexes hold every job.
    ///
    /// Scans the ledger one page at a time, at most --rate items a second, and writes only
    /// the items missing a key (conditional on their version: a job written meanwhile keeps
    /// what it wrote). Idempotent: a second run writes nothing. Resumable: every page prints
    /// the --start-after that continues from it. Run it once after the stack update that
    /// adds the indexes, with the same --retention-days as the deployment.
    #[command(after_help = "Examples:
  mayfly ledger backfill --rate 200
  mayfly ledger backfill --rate 200 --start-after 'cedar-plan:2026-03:claims'
  mayfly --name mayfly-prod ledger backfill --retention-days 400")]
    Backfill {
        /// Continue after this job id (printed by an earlier run).
        #[arg(long)]
        start_after: Option<String>,
        /// Items scanned per second at most (each read costs about 0.5 read unit per 4 KB,
        /// each item given its keys one write unit per 1 KB).
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
        rate: u32,
        /// Items per Scan page.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        page: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs by state (default: every state in flight or waiting), oldest submitted
    /// first, one page at a time.
    ///
    /// Reads the by-state index from --since on, only until the page is full: a terminal
    /// state's history is never read whole. When more jobs follow, stderr says how to ask for
    /// the next page (--since the last one's submitted time).
    #[command(after_help = "Examples:
  mayfly jobs list
  mayfly jobs list --state succeeded --state dead --since 2026-12-01
  mayfly jobs list --state dead --payer cedar-plan --limit 20")]
    List {
        /// Only jobs in this state (queued, launching, running, succeeded, failed, blocked,
        /// cancelled, dead); repeat it for several.
        #[arg(long)]
        state: Vec<crate::job::JobState>,
        /// Only this payer's jobs.
        #[arg(long)]
        payer: Option<String>,
        /// Only jobs submitted at or after this time (RFC 3339, or a UTC date YYYY-MM-DD).
        #[arg(long, value_parser = cost::parse_time)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Show one job with all its attempts (by `payer/job_id`, or the job_id alone when one
    /// payer has it).
    #[command(after_help = "Examples:
  mayfly jobs show cedar-plan:2026-11:claims
  mayfly jobs show cedar-plan/cedar-plan:2026-11:claims
  mayfly --output json jobs show cedar-plan:2026-11:claims")]
    Show { job_id: String },
    /// Queue a dead or cancelled job again, with a fresh budget of attempts.
    ///
    /// Higher-tier jobs of its batch that were blocked on it wait for it again, and run once
    /// it succeeds.
    #[command(after_help = "Examples:
  mayfly jobs retry cedar-plan:2026-10:eligibility")]
    Retry { job_id: String },
    /// Cancel a job that has not finished; an instance running it is terminated.
    #[command(after_help = "Examples:
  mayfly jobs cancel cedar-plan:2026-11:claims
  mayfly jobs cancel cedar-plan:2026-11:claims --reason \"resent under a new id\"")]
    Cancel {
        job_id: String,
        /// Why; kept on the job.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Directory (or files) of payer profiles (offline mode only).
    #[arg(long, default_value = "payer-profiles", requires = "jobs")]
    pub profiles: Vec<PathBuf>,
    /// Plan offline from this JSON-lines jobs file: requests, optionally with ledger fields
    /// (`state`, `submitted_at`, `attempt`, `not_before`, `instance_type`, `instance_id`).
    /// Without it, plan against the live config table and ledger.
    #[arg(long)]
    pub jobs: Option<PathBuf>,
    /// The planning time (RFC 3339); default now. Fix it for reproducible plans.
    #[arg(long)]
    pub now: Option<DateTime<Utc>>,
    /// RunInstances calls this pass may make.
    #[arg(long, default_value_t = 20)]
    pub launch_budget: u32,
    /// One vCPU quota over every instance family, instead of the account's quotas per
    /// family group (read from Service Quotas against a deployment; offline, none).
    #[arg(long)]
    pub vcpu_quota: Option<u32>,
    #[command(flatten)]
    pub caps: CapsArgs,
}

/// Runs a command. Commands that reach AWS connect first, once.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let output = cli.global.output;
    match cli.command {
        Command::Payers(PayersCommand::Validate { paths, caps }) => {
            offline::validate(output, &paths, caps.caps())
        }
        Command::Plan(args) if args.jobs.is_some() => offline::offline_plan(output, &args),
        Command::Render(args) => offline::render(output, &cli.global, &args),
        Command::Simulate(args) => simulate::simulate(output, &args),
        command => {
            let app = app::App::connect(&cli.global).await?;
            match command {
                Command::Payers(cmd) => payers::run(&app, output, cmd).await,
                Command::Preflight(args) => preflight::run(&app, output, &args).await,
                Command::Submit(args) => jobs::submit(&app, output, &args).await,
                Command::Tick(args) => pass::tick(&app, output, &args).await,
                Command::Plan(args) => pass::live_plan(&app, output, &args).await,
                Command::Jobs(cmd) => jobs::run(&app, output, cmd).await,
                Command::Ledger(cmd) => ledger::run(&app, output, cmd).await,
                Command::Reap(args) => pass::reap(&app, output, &args).await,
                Command::Run(args) => run::run(&app, output, &args).await,
                Command::Status => status::status(&app, output).await,
                Command::Cost(cmd) => cost::run(&app, output, cmd).await,
                Command::Explain(args) => explain::run(&app, output, &args).await,
                Command::Render(_) => unreachable!("render is offline"),
                Command::Simulate(_) => unreachable!("simulate is offline"),
            }
        }
    }
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
