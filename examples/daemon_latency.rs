//! Daemon latency benchmark: enqueue → RunInstances in `mayfly run`, over N jobs (target:
//! p99 ≤ 2 s).
//!
//!   cargo build --bin mayfly && cargo run --example daemon_latency -- --jobs 200 --rate 1.5
//!
//! Uses the emulator at `--endpoint`, or the worktree's (`scripts/emulator.sh start`, which
//! starts one if none runs; stop it with `scripts/emulator.sh stop`). Deploys a fresh
//! deployment, applies the example payer profiles (pointed at the emulator's network, with
//! caps raised so N jobs can run at once), starts the `mayfly` binary (`--mayfly`, default the
//! debug build) as `mayfly run` (intervals as given, defaults as the daemon's), and sends N
//! job requests to the intake queue at `--rate` per second. Nothing finishes: in-flight jobs
//! grow to N, and with them each reconcile's ledger reads and DescribeInstances (which run
//! beside the passes that launch).
//!
//! Method: a job's time runs from the wall clock just before its SendMessage is issued to
//! the timestamp of the daemon's `Launched instance.` log line for it (`MAYFLY_LOG` selects
//! just that line), which a pass writes once RunInstances has returned and the job is recorded
//! `running`: an upper bound on enqueue → RunInstances by one ledger write. Both clocks are
//! this machine's. Not used: EC2's LaunchTime (whole seconds: too coarse), and polling
//! DescribeInstances (at 200 instances each describe kept the emulator busy ~0.5 s, slowing
//! the daemon's own calls, and bounded the figure only to a poll). The rate stays under the
//! client-side RunInstances bucket (5 burst, 2/s refill), so the figure is latency, not
//! queueing behind the bucket. Every job is in one batch of one payer, as a drop would be.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::Credentials;
use aws_sdk_ec2::types::Filter;
use chrono::{DateTime, Utc};
use clap::Parser;
use mayfly::aws::dynamo::DynamoLedger;
use mayfly::aws::sqs::SqsQueue;
use mayfly::aws::Clients;
use mayfly::job::JobState;
use mayfly::names::Names;
use mayfly::ports::{Ledger, Queue};

const REGION: &str = "us-east-1";
const TARGET_P99: Duration = Duration::from_secs(2);

/// Enqueue → RunInstances latency of `mayfly run` against the emulator.
#[derive(Debug, Parser)]
struct Args {
    /// Jobs to submit.
    #[arg(long, default_value_t = 200)]
    jobs: u32,
    /// Jobs submitted per second (keep it under the RunInstances refill of 2/s).
    #[arg(long, default_value_t = 1.5)]
    rate: f64,
    /// A running emulator to use instead of the worktree's.
    #[arg(long)]
    endpoint: Option<String>,
    /// The mayfly binary to run as the daemon.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/target/debug/mayfly"))]
    mayfly: PathBuf,
    /// The daemon's pass interval (passes besides those woken by arrivals).
    #[arg(long, default_value = "10s")]
    interval: String,
    /// The daemon's reconcile interval (its default: 30s). A reconcile runs beside the
    /// passes; in the emulator (one Python process) its DescribeInstances of hundreds of
    /// instances still slows the calls made meanwhile.
    #[arg(long, default_value = "30s")]
    reconcile_interval: String,
    /// The daemon's batch window.
    #[arg(long, default_value_t = 200)]
    batch_window_ms: u64,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env_for(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_DEFAULT_REGION", REGION.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

fn script(args: &[&str], env: &[(&'static str, String)]) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(repo().join("scripts/emulator.sh"))
        .args(args)
        .envs(env.iter().cloned())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("scripts/emulator.sh {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("scripts/emulator.sh {args:?} failed"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Example profiles pointed at the emulator's network, with caps raised for `jobs`.
fn write_profiles(
    dir: &std::path::Path,
    name: &str,
    subnets: &[String],
    sg: &str,
    jobs: u32,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let src = repo().join("payer-profiles/cedar-plan.toml");
    let text = std::fs::read_to_string(&src).map_err(|e| e.to_string())?;
    let mut doc: toml::Table = toml::from_str(&text).map_err(|e| e.to_string())?;
    let strings =
        |v: &[String]| toml::Value::Array(v.iter().cloned().map(toml::Value::String).collect());
    let launch = doc
        .get_mut("launch")
        .and_then(|l| l.as_table_mut())
        .ok_or("profile has no [launch]")?;
    launch.insert("subnets".into(), strings(subnets));
    launch.insert("security_groups".into(), strings(&[sg.to_owned()]));
    launch.insert("instance_profile".into(), format!("{name}-instance").into());
    let caps = doc
        .get_mut("caps")
        .and_then(|c| c.as_table_mut())
        .ok_or("profile has no [caps]")?;
    caps.insert("max_instances".into(), i64::from(jobs + 10).into());
    caps.insert("max_vcpus".into(), i64::from((jobs + 10) * 8).into());
    let out = toml::to_string(&doc).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("cedar-plan.toml"), out).map_err(|e| e.to_string())
}

/// The line without terminal colour sequences (`ESC [ … m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Jobs the ledger has `running`.
async fn ledger_running(clients: &Clients, names: &Names) -> usize {
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), names.jobs_table());
    ledger
        .by_state(JobState::Running)
        .await
        .map_or(0, |j| j.len())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM: the daemon finishes its pass and releases the lease.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("daemon_latency: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<bool, String> {
    if !args.mayfly.exists() {
        return Err(format!(
            "{} not found: cargo build --bin mayfly",
            args.mayfly.display()
        ));
    }
    let endpoint = match &args.endpoint {
        Some(url) => url.clone(),
        None => script(&["start"], &[])?,
    };
    let env = env_for(&endpoint);
    let name = format!("latency-{}", std::process::id());
    script(&["deploy", &name], &env)?;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "bench"))
        .load()
        .await;
    let clients = Clients::new(&sdk);
    let names = Names::new(&name);
    let subnets: Vec<String> = clients
        .ec2
        .describe_subnets()
        .send()
        .await
        .map_err(|e| format!("describe subnets: {e:?}"))?
        .subnets()
        .iter()
        .filter_map(|s| s.subnet_id().map(str::to_owned))
        .take(2)
        .collect();
    let sg = clients
        .ec2
        .describe_security_groups()
        .filters(
            Filter::builder()
                .name("group-name")
                .values("default")
                .build(),
        )
        .send()
        .await
        .map_err(|e| format!("describe security groups: {e:?}"))?
        .security_groups()
        .iter()
        .find_map(|g| g.group_id().map(str::to_owned))
        .ok_or("no default security group")?;
    let dir = std::env::temp_dir().join(format!("mayfly-{name}"));
    write_profiles(&dir, &name, &subnets, &sg, args.jobs)?;
    let caps = [
        "--max-instances".to_owned(),
        (args.jobs + 10).to_string(),
        "--max-vcpus".to_owned(),
        ((args.jobs + 10) * 8).to_string(),
    ];
    let apply = Command::new(&args.mayfly)
        .args(["--name", &name, "payers", "apply"])
        .arg(&dir)
        .args(&caps)
        .envs(env.iter().cloned())
        .output()
        .map_err(|e| e.to_string())?;
    if !apply.status.success() {
        return Err(format!(
            "payers apply: {}",
            String::from_utf8_lossy(&apply.stderr)
        ));
    }

    let mut child = Command::new(&args.mayfly)
        .args([
            "--name",
            &name,
            "--output",
            "json",
            "run",
            "--interval",
            &args.interval,
            "--reconcile-interval",
            &args.reconcile_interval,
        ])
        .args(["--batch-window-ms", &args.batch_window_ms.to_string()])
        .args(&caps)
        .envs(env.iter().cloned())
        .env("MAYFLY_LOG", "mayfly::scheduler::launch=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start mayfly run: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    // `2026-11-29T01:58:48.123456Z  INFO …: Launched instance. job_id=… instance_id=…`
    let launches = std::thread::spawn(move || {
        let mut at: HashMap<String, DateTime<Utc>> = HashMap::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let line = strip_ansi(&line);
            if !line.contains("Launched instance.") {
                continue;
            }
            let time = line.split_whitespace().next().and_then(|t| t.parse().ok());
            let job = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("job_id="))
                .map(str::to_owned);
            if let (Some(time), Some(job)) = (time, job) {
                at.entry(job).or_insert(time);
            }
        }
        at
    });
    let daemon = Daemon(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Wait for the leader's first pass.
    let ready = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(ready.saturating_duration_since(Instant::now()))
            .map_err(|_| "the daemon did not run a first pass within 60 s")?;
        if line.contains("\"event\":\"pass\"") {
            break;
        }
    }
    // From here on, the duration of every pass the daemon runs.
    let passes = std::thread::spawn(move || {
        let mut ms: Vec<u64> = rx
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
            .filter(|v| v["event"] == "pass")
            .filter_map(|v| v["duration_ms"].as_u64())
            .collect();
        ms.sort_unstable();
        ms
    });

    let total = args.jobs as usize;
    let intake = SqsQueue::by_name(clients.sqs.clone(), &names.intake_queue())
        .await
        .map_err(|e| e.to_string())?;
    let gap = Duration::from_secs_f64(1.0 / args.rate.max(0.01));
    let started = Instant::now();
    let mut sent: HashMap<String, DateTime<Utc>> = HashMap::new();
    for n in 0..args.jobs {
        let due = started + gap * n;
        tokio::time::sleep(due.saturating_duration_since(Instant::now())).await;
        // One payer's cycle: every job in the same batch, as a drop of files would be.
        let job = format!("cedar-plan:bench:eligibility-{n:04}");
        let body = serde_json::json!({
            "job_id": job, "payer_id": "cedar-plan", "kind": "eligibility", "batch": "bench",
        })
        .to_string();
        let at = Utc::now();
        intake
            .send(&body, &[])
            .await
            .map_err(|e| format!("send: {e}"))?;
        sent.insert(job, at);
    }
    // Wait for the last launch (or a minute), then stop the daemon: its logs end.
    let deadline = Instant::now() + Duration::from_secs(60);
    while ledger_running(&clients, &names).await < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(daemon);
    let launched = launches.join().unwrap_or_default();
    let pass_ms = passes.join().unwrap_or_default();
    let mut latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(job, at)| launched.get(job).and_then(|t| (*t - *at).to_std().ok()))
        .collect();
    latencies.sort();
    if latencies.len() < total {
        println!("only {} of {total} jobs launched", latencies.len());
        return Ok(false);
    }
    let p50 = percentile(&latencies, 50.0);
    let p99 = percentile(&latencies, 99.0);
    println!(
        "{total} jobs at {:.2}/s, batch window {} ms, interval {}, reconcile every {}: enqueue → launched p50 {:.3} s, p99 {:.3} s, max {:.3} s",
        args.rate,
        args.batch_window_ms,
        args.interval,
        args.reconcile_interval,
        p50.as_secs_f64(),
        p99.as_secs_f64(),
        latencies[latencies.len() - 1].as_secs_f64()
    );
    if let (Some(first), Some(last)) = (pass_ms.first(), pass_ms.last()) {
        println!(
            "{} passes; pass duration min {first} ms, p50 {} ms, max {last} ms",
            pass_ms.len(),
            pass_ms[pass_ms.len() / 2]
        );
    }
    let ok = p99 <= TARGET_P99;
    println!(
        "target p99 ≤ {} s: {}",
        TARGET_P99.as_secs(),
        if ok { "met" } else { "missed" }
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(ok)
}
