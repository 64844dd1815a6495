//! Burst benchmark (issue 15): a payer drops N jobs of one shape on an idle deployment; how
//! long until all N are `running`?
//!
//!   scripts/emulator.sh start     # or any moto; its endpoint below
//!   cargo run --example burst -- --endpoint http://127.0.0.1:PORT --jobs 1000
//!
//! Deploys `infra/mayfly.yaml` into the emulator, applies cedar-plan's profile (pointed at
//! the emulator's network, its caps raised to N), and writes N `queued` jobs of its
//! `eligibility` kind straight into the ledger (the intake is not what is measured). Then runs
//! passes back to back — mayfly's own scheduler, its real adapters, its client-side limiter
//! ([`Ec2Limits::default`]: RunInstances' request and resource buckets) — with every AWS call
//! through the fault proxy, which enforces EC2's RunInstances request bucket (5 burst, 2/s)
//! and resource bucket (1,000 instances burst, 2/s), until every job is `running`.
//!
//! Prints the time from the first pass's start until all N are running, beside the ceiling of
//! one RunInstances per job under the request bucket ((N − 5) / 2 s) and the resource
//! bucket's own floor (max(0, N − 1000) / 2 s), and the RunInstances calls the proxy
//! throttled. Passes skip reconciling (as the daemon's do; it reconciles on its own period).
//! moto launches exactly MinCount instances, so groups ask for all of theirs
//! (`--group-min-is-max`).

use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Instant;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::Credentials;
use chrono::Utc;
use clap::Parser;
use mayfly::cli::{App, GlobalArgs, Output, PassArgs};
use mayfly::fakes::{FakeConfigStore, FakeLedger, FakeQueue};
use mayfly::job::{Job, JobRequest, JobState};
use mayfly::ports::ConfigStore as _;
use mayfly::profile::{CapacityPolicy, PayerProfile};
use mayfly::ratelimit::Rate;
use mayfly::scheduler::TickOptions;
use mayfly_testbed::faultproxy::{FaultProxy, ProxyConfig};

#[path = "support/network.rs"]
mod network;

const REGION: &str = "us-east-1";
const PAYER: &str = "cedar-plan";

/// Time for a burst of one payer's jobs to be running, through EC2's buckets.
#[derive(Debug, Parser)]
struct Args {
    /// The emulator (moto) to use.
    #[arg(long, env = "MAYFLY_TEST_ENDPOINT")]
    endpoint: String,
    /// Jobs in the burst.
    #[arg(long, default_value_t = 1000)]
    jobs: u32,
    /// Most jobs per RunInstances (`1` measures one call per job).
    #[arg(long, default_value_t = mayfly::group::DEFAULT_MAX_GROUP)]
    max_group: u32,
    /// Most RunInstances calls per pass.
    #[arg(long, default_value_t = 60)]
    max_launches: u32,
    /// Where the config table, the ledger and the queues are: `emulator` (moto's DynamoDB
    /// and SQS, through the proxy too) or `memory` (mayfly's in-memory fakes, so the figure is
    /// EC2's buckets and mayfly's own work, not moto's DynamoDB).
    #[arg(long, value_enum, default_value_t = Store::Emulator)]
    ledger: Store,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Store {
    Emulator,
    Memory,
}

fn venv() -> std::path::PathBuf {
    std::env::var_os("MAYFLY_VENV").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv"),
        std::path::PathBuf::from,
    )
}

fn aws(endpoint: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(venv().join("bin/aws"))
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_PAGER", "")
        .output()
        .map_err(|e| format!("run the AWS CLI: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn deploy(endpoint: &str, name: &str) -> Result<(), String> {
    let template = format!("file://{}/infra/mayfly.yaml", env!("CARGO_MANIFEST_DIR"));
    let params = format!(r#"[{{"ParameterKey":"DeploymentName","ParameterValue":"{name}"}}]"#);
    aws(
        endpoint,
        &[
            "cloudformation",
            "create-stack",
            "--stack-name",
            name,
            "--template-body",
            &template,
            "--capabilities",
            "CAPABILITY_NAMED_IAM",
            "--parameters",
            &params,
        ],
    )?;
    aws(
        endpoint,
        &[
            "cloudformation",
            "wait",
            "stack-create-complete",
            "--stack-name",
            name,
        ],
    )
    .map(|_| ())
}

/// The emulator's default subnet and security group, and an image it knows.
async fn network(endpoint: &str) -> Result<(String, String, String), String> {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "burst"))
        .load()
        .await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let n = network::emulator_network(&ec2).await?;
    Ok((n.subnet, n.security_group, n.image))
}

async fn run(args: Args) -> Result<(), String> {
    let name = format!("burst-{}-{}", args.jobs, std::process::id());
    deploy(&args.endpoint, &name)?;
    let (subnet, sg, image) = network(&args.endpoint).await?;

    let proxy = FaultProxy::start(
        ProxyConfig::new(&args.endpoint)
            .bucket("RunInstances", Rate::RUN_INSTANCES)
            .resource_bucket("RunInstances", Rate::RUN_INSTANCES_RESOURCE),
    )
    .await
    .map_err(|e| e.to_string())?;
    // The SDK reads the region and credentials from the environment; nothing else here does.
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let app = App::connect(&GlobalArgs {
        region: Some(REGION.into()),
        endpoint_url: Some(proxy.url()),
        profile: None,
        name: name.clone(),
        retention_days: None,
        output: Output::Text,
        verbose: 0,
    })
    .await
    .map_err(|e| e.to_string())?;

    let path = format!("{}/payer-profiles/{PAYER}.toml", env!("CARGO_MANIFEST_DIR"));
    let mut profile: PayerProfile =
        mayfly::profile::load_file(std::path::Path::new(&path)).map_err(|e| e.to_string())?;
    profile.launch.image_id = image;
    profile.launch.subnets = vec![subnet];
    profile.launch.security_groups = vec![sg];
    profile.launch.instance_profile = format!("{name}-instance");
    profile.caps.max_instances = args.jobs;
    profile.caps.max_vcpus = 2 * args.jobs;
    if let Some(kind) = profile.kinds.get_mut("eligibility") {
        kind.capacity = Some(CapacityPolicy::OnDemand);
    }
    app.config()
        .put(&profile, None, Utc::now())
        .await
        .map_err(|e| format!("apply the profile: {e}"))?;

    let pass = PassArgs {
        max_launches: args.max_launches,
        max_group: args.max_group,
        group_min_is_max: true,
        vcpu_quota: Some(2 * args.jobs),
        caps: mayfly::cli::CapsArgs {
            max_instances: args.jobs,
            max_vcpus: 2 * args.jobs,
        },
        ..PassArgs::defaults()
    };
    let mut scheduler = app.scheduler(&pass).await.map_err(|e| e.to_string())?;
    if args.ledger == Store::Memory {
        let config = Arc::new(FakeConfigStore::new());
        config
            .put(&profile, None, Utc::now())
            .await
            .map_err(|e| e.to_string())?;
        scheduler.deps.config = config;
        scheduler.deps.ledger = Arc::new(FakeLedger::new());
        scheduler.deps.intake = Arc::new(FakeQueue::new());
        scheduler.deps.events = Arc::new(FakeQueue::new());
    }
    let ledger = scheduler.deps.ledger.clone();
    let created = Instant::now();
    for i in 0..args.jobs {
        let batch = format!("b{i:05}");
        let body = serde_json::json!({
            "job_id": format!("{PAYER}:{batch}:eligibility"), "payer_id": PAYER,
            "kind": "eligibility", "batch": batch,
            "input": {"uri": format!("s3://example-payer-drops/{PAYER}/{batch}"), "bytes": 1u64 << 30}
        });
        let req: JobRequest = serde_json::from_value(body).map_err(|e| e.to_string())?;
        ledger
            .create(&Job::from_request(req, Utc::now()))
            .await
            .map_err(|e| format!("create job {i}: {e}"))?;
    }
    eprintln!(
        "{} jobs queued in {:.1}s; running passes",
        args.jobs,
        created.elapsed().as_secs_f64()
    );

    let opts = TickOptions {
        dry_run: false,
        skip_reconcile: true,
    };
    let started = Instant::now();
    let mut passes = 0;
    let mut marks = Vec::new();
    loop {
        passes += 1;
        let report = scheduler
            .tick(opts, Utc::now())
            .await
            .map_err(|e| e.to_string())?;
        let running = ledger
            .by_state(JobState::Running)
            .await
            .map_err(|e| e.to_string())?
            .len() as u32;
        let at = started.elapsed().as_secs_f64();
        eprintln!(
            "pass {passes}: {} launched in {} group call(s), {running} running at {at:.1}s",
            report.launch.instances.len(),
            report.launch.groups
        );
        for (n, thousand) in [(1000, 1), (2000, 2), (3000, 3)] {
            if running >= n && marks.len() < thousand {
                marks.push(at);
            }
        }
        if running >= args.jobs {
            break;
        }
        if passes > 10_000 {
            return Err("gave up after 10,000 passes".into());
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = proxy.counters().operation("RunInstances");
    let n = f64::from(args.jobs);
    let per_job = (n - Rate::RUN_INSTANCES.burst) / Rate::RUN_INSTANCES.per_sec;
    let resource =
        (n - Rate::RUN_INSTANCES_RESOURCE.burst).max(0.0) / Rate::RUN_INSTANCES_RESOURCE.per_sec;
    println!(
        "burst: {} jobs of one payer and shape, max group {}, through the fault proxy with EC2's \
         RunInstances request bucket (5, 2/s) and resource bucket (1000, 2/s) in front of moto; \
         ledger {:?}",
        args.jobs, args.max_group, args.ledger
    );
    println!("  all running after   {elapsed:8.1} s   ({passes} passes)");
    println!("  per-job ceiling     {per_job:8.1} s   (one RunInstances per job: (N - 5) / 2)");
    println!("  resource floor      {resource:8.1} s   (max(0, N - 1000) / 2)");
    for (i, t) in marks.iter().enumerate() {
        println!("  thousand {}          {t:8.1} s", i + 1);
    }
    println!(
        "  RunInstances        {:8} calls, {} throttled",
        stats.requests, stats.throttled
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    // RUST_LOG=info shows each launch as it happens.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("burst: {e}");
            ExitCode::FAILURE
        }
    }
}
