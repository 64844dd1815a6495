//! Launch-rate benchmark (DESIGN §7: under EC2's RunInstances bucket of 5 burst and 2/s
//! refill, reach ≥ 95 % of the bucket's ceiling with ≤ 2 % throttled calls).
//!
//!   cargo run --example launch_rate -- --launches 120 [--seed S] [--endpoint URL]
//!
//! Starts the emulator (moto from the project virtualenv, `scripts/emulator.sh install`)
//! unless `--endpoint` names one, puts the fault proxy in front of it with EC2's real
//! RunInstances bucket, and makes N launches through mayfly's own EC2 adapter with its
//! client-side limiter ([`Ec2Limits::default`]): each a real RunInstances of a small type with
//! mayfly's tags, from a few concurrent workers. A throttled launch is tried again (the
//! adapter has emptied its bucket, so it waits for a refill first).
//!
//! The ceiling is the fastest a full bucket allows: the first 5 at once, then 2 per second,
//! so N launches take at least (N − 5) / 2 s. Prints the achieved rate as a share of the
//! ceiling's and the share of RunInstances calls the proxy throttled; exits 1 if a target is
//! missed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::Credentials;
use clap::Parser;
use mayfly::aws::ec2::Ec2Compute;
use mayfly::aws::Clients;
use mayfly::names::tags;
use mayfly::ports::{Compute, ComputeError, LaunchRequest};
use mayfly::profile::CapacityType;
use mayfly::ratelimit::{Ec2Limits, Rate};
use mayfly::sizing::Rung;
use mayfly_testbed::faultproxy::{FaultProxy, FaultRates, ProxyConfig};

#[path = "support/network.rs"]
mod network;

const REGION: &str = "us-east-1";
const TARGET_SHARE_OF_CEILING: f64 = 0.95;
const TARGET_THROTTLED_SHARE: f64 = 0.02;

/// Launch rate of mayfly's EC2 adapter under EC2's RunInstances bucket, against the emulator.
#[derive(Debug, Parser)]
struct Args {
    /// Launches to make (more than the burst of 5).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u32).range(6..))]
    launches: u32,
    /// Seeds the proxy (and the ids of an emulator this run starts).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A running emulator to use instead of starting one.
    #[arg(long)]
    endpoint: Option<String>,
    /// Concurrent launch workers.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Instance type launched.
    #[arg(long, default_value = "t3.nano")]
    instance_type: String,
    /// Share of RunInstances calls the proxy also answers with a 500 (retried by the
    /// benchmark, like a later pass would).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
}

/// moto started for this run; stopped on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venv() -> PathBuf {
    std::env::var_os("MAYFLY_VENV").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv"),
        PathBuf::from,
    )
}

fn http(port: u16, method: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.").then_some(out)
}

fn start_moto() -> Result<Moto, String> {
    let moto = venv().join("bin/moto_server");
    if !moto.exists() {
        return Err(format!(
            "{} not found: run `scripts/emulator.sh install`, or pass --endpoint",
            moto.display()
        ));
    }
    let log = std::env::temp_dir().join(format!("mayfly-launch-rate-{}.log", std::process::id()));
    let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(moto)
        .args(["-H", "127.0.0.1", "-p", "0"])
        .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("start moto: {e}"))?;
    let mut moto = Moto {
        child,
        endpoint: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let port = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(rest) = text.split("Running on http://127.0.0.1:").nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(port) = digits.parse::<u16>() {
                break port;
            }
        }
        if Instant::now() > deadline || moto.child.try_wait().ok().flatten().is_some() {
            return Err(format!("moto did not start; log:\n{text}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    while http(port, "GET", "/moto-api/").is_none() {
        if Instant::now() > deadline {
            return Err("moto did not answer".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    moto.endpoint = format!("http://127.0.0.1:{port}");
    Ok(moto)
}

async fn sdk_for(url: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "launch-rate",
        ))
        .load()
        .await
}

/// What a launch needs in the emulator: a subnet, a security group, an image and an
/// instance profile (moto checks that one exists).
struct LaunchEnv {
    subnet: String,
    security_group: String,
    image: String,
    instance_profile: String,
}

async fn launch_env(ec2: &aws_sdk_ec2::Client, endpoint: &str) -> Result<LaunchEnv, String> {
    let network::Network {
        subnet,
        security_group,
        image,
    } = network::emulator_network(ec2).await?;
    let instance_profile = format!("launch-rate-{}", std::process::id());
    let out = Command::new(venv().join("bin/aws"))
        .args([
            "iam",
            "create-instance-profile",
            "--instance-profile-name",
            &instance_profile,
        ])
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_PAGER", "")
        .output()
        .map_err(|e| format!("run the AWS CLI: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "create the instance profile: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(LaunchEnv {
        subnet,
        security_group,
        image,
        instance_profile,
    })
}

fn request(env: &LaunchEnv, instance_type: &str, cluster: &str, i: u32) -> LaunchRequest {
    let job_id = format!("bench-{i:05}");
    LaunchRequest {
        client_token: format!("{cluster}-{job_id}-1"),
        rung: Rung {
            instance_type: instance_type.to_owned(),
            subnet: env.subnet.clone(),
            capacity: CapacityType::OnDemand,
        },
        image_id: env.image.clone(),
        security_groups: vec![env.security_group.clone()],
        instance_profile: env.instance_profile.clone(),
        root_volume_gib: 8,
        root_volume_kms_key: None,
        user_data: format!("#!/bin/bash\necho {job_id}\n").into_bytes(),
        tags: vec![
            (tags::CLUSTER.into(), cluster.into()),
            (tags::JOB_ID.into(), job_id),
            (tags::ATTEMPT.into(), "1".into()),
            (tags::PAYER.into(), "bench".into()),
            (tags::KIND.into(), "launch-rate".into()),
            (tags::BATCH.into(), "1".into()),
        ],
    }
}

#[derive(Debug, Default)]
struct Tally {
    throttled: AtomicU64,
    errors: AtomicU64,
}

async fn run(args: Args) -> Result<bool, String> {
    let moto;
    let endpoint = match &args.endpoint {
        Some(url) => url.clone(),
        None => {
            moto = start_moto()?;
            // Repeatable instance ids for this run's own emulator.
            if let Some(port) = moto
                .endpoint
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
            {
                http(port, "POST", &format!("/moto-api/seed?a={}", args.seed));
            }
            moto.endpoint.clone()
        }
    };

    // Set up and warm up directly on the emulator (its first RunInstances is slow).
    let direct = aws_sdk_ec2::Client::new(&sdk_for(&endpoint).await);
    let env = launch_env(&direct, &endpoint).await?;
    let direct_compute = Ec2Compute::new(direct.clone(), Arc::new(Ec2Limits::unlimited()));
    let warm = direct_compute
        .launch(&request(&env, &args.instance_type, "launch-rate-warmup", 0))
        .await
        .map_err(|e| format!("warm-up launch: {e}"))?;
    direct_compute
        .terminate(&[warm.instance_id])
        .await
        .map_err(|e| format!("warm-up terminate: {e}"))?;

    let proxy = FaultProxy::start(
        ProxyConfig::new(&endpoint)
            .seed(args.seed)
            .bucket("RunInstances", Rate::RUN_INSTANCES)
            .rates(FaultRates {
                error: args.error_rate,
                ..FaultRates::default()
            })
            .ops(["RunInstances"]),
    )
    .await
    .map_err(|e| e.to_string())?;
    let clients = Clients::new(&sdk_for(&proxy.url()).await);
    let compute = Arc::new(
        Ec2Compute::new(clients.ec2.clone(), Arc::new(Ec2Limits::default()))
            .with_launch_client(clients.ec2_launch.clone()),
    );
    let env = Arc::new(env);
    let cluster = format!("launch-rate-{}", std::process::id());
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Tally::default());
    let n = args.launches;

    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (compute, env, next, tally) = (
            Arc::clone(&compute),
            Arc::clone(&env),
            Arc::clone(&next),
            Arc::clone(&tally),
        );
        let (cluster, instance_type) = (cluster.clone(), args.instance_type.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as u32;
                if i >= n {
                    return Ok::<(), String>(());
                }
                let req = request(&env, &instance_type, &cluster, i + 1);
                loop {
                    match compute.launch(&req).await {
                        Ok(_) => break,
                        Err(ComputeError::Throttled { .. }) => {
                            tally.throttled.fetch_add(1, Ordering::Relaxed);
                        }
                        // An injected 500 was not forwarded: launching again is safe here.
                        Err(ComputeError::Transient { code, .. }) if code == "InternalError" => {
                            tally.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => return Err(format!("launch {}: {e}", i + 1)),
                    }
                }
            }
        });
    }
    for result in workers.join_all().await {
        result?;
    }
    let elapsed = started.elapsed().as_secs_f64();

    let stats = proxy.counters().operation("RunInstances");
    let upstream = direct_compute
        .list_managed(&cluster)
        .await
        .map_err(|e| e.to_string())?;
    let rate = Rate::RUN_INSTANCES;
    let ceiling_secs = (f64::from(n) - rate.burst) / rate.per_sec;
    let share = ceiling_secs / elapsed;
    let throttled_share = stats.throttled as f64 / stats.requests.max(1) as f64;
    println!(
        "launch rate: {n} launches through mayfly's EC2 adapter (client-side limiter \
         {:.0} burst, {}/s), via the fault proxy with EC2's RunInstances bucket ({} burst, {}/s); \
         {} workers, {}",
        compute.limits().run_instances.rate().burst,
        compute.limits().run_instances.rate().per_sec,
        rate.burst,
        rate.per_sec,
        args.concurrency.max(1),
        args.instance_type,
    );
    println!(
        "  elapsed        {elapsed:8.2} s    ceiling {ceiling_secs:.2} s (first {} at once, then {}/s)",
        rate.burst, rate.per_sec
    );
    println!(
        "  rate           {:8.3} /s   ceiling {:.3} /s: {:.1} % of the ceiling (target >= {:.0} %)",
        f64::from(n) / elapsed,
        f64::from(n) / ceiling_secs,
        share * 100.0,
        TARGET_SHARE_OF_CEILING * 100.0
    );
    println!(
        "  RunInstances   {:8} calls, {} throttled: {:.2} % (target <= {:.0} %); {} injected 500s",
        stats.requests,
        stats.throttled,
        throttled_share * 100.0,
        TARGET_THROTTLED_SHARE * 100.0,
        stats.errors,
    );
    println!(
        "  adapter saw    {:8} throttled, {} errors; SDK counted {} RunInstances ({} throttled)",
        tally.throttled.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
        clients.calls.get("EC2.RunInstances"),
        clients.calls.throttled(),
    );
    println!(
        "  upstream       {:8} instances of the run (one per launch: {})",
        upstream.len(),
        upstream.len() == n as usize
    );
    Ok(share >= TARGET_SHARE_OF_CEILING
        && throttled_share <= TARGET_THROTTLED_SHARE
        && upstream.len() == n as usize)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            println!("  a target was missed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("launch_rate: {e}");
            ExitCode::from(2)
        }
    }
}
