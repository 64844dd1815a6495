//! `mayfly-faultproxy`: a fault-injecting HTTP proxy in front of the AWS emulator (test
//! tooling; see `mayfly_testbed::faultproxy`). Prints `listening on http://ADDR` on stdout
//! once ready; point the SDK or the CLI at that URL. On SIGINT or SIGTERM it prints its
//! counters as one JSON line on stdout and exits 0. `GET /__faultproxy/stats` answers them
//! while it runs.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use mayfly::ratelimit::Rate;
use mayfly_testbed::faultproxy::{parse_bucket, FaultProxy, FaultRates, LostResponse, ProxyConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LostMode {
    /// Close the connection without a reply.
    Drop,
    /// Reply 502 Bad Gateway.
    BadGateway,
}

/// Forwards AWS API calls to an endpoint (moto), injecting throttling, 5xx, timeouts and
/// lost responses, seeded and reproducible.
#[derive(Debug, Parser)]
#[command(name = "mayfly-faultproxy", version)]
struct Args {
    /// The endpoint to forward to, e.g. the emulator's http://127.0.0.1:PORT.
    #[arg(long, env = "MAYFLY_FAULTPROXY_UPSTREAM")]
    upstream: String,
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Seeds every rate-based decision: the same seed and calls give the same faults.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A token bucket for one operation, OPERATION=BURST:PER_SEC (repeatable), e.g.
    /// RunInstances=5:2. Calls finding it empty get the service's throttling error.
    #[arg(long = "bucket", value_name = "OP=BURST:PER_SEC", value_parser = parse_bucket)]
    buckets: Vec<(String, Rate)>,
    /// A resource bucket for one operation, OPERATION=BURST:PER_SEC (repeatable): a call
    /// takes one token per instance it names (RunInstances' MaxCount, TerminateInstances'
    /// instance ids), e.g. RunInstances=1000:2.
    #[arg(long = "resource-bucket", value_name = "OP=BURST:PER_SEC", value_parser = parse_bucket)]
    resource_buckets: Vec<(String, Rate)>,
    /// Adds EC2's own buckets: RunInstances 5:2, TerminateInstances 100:5,
    /// DescribeInstances 100:20, and the resource buckets RunInstances 1000:2 and
    /// TerminateInstances 1000:20 (a --bucket or --resource-bucket for the same operation
    /// wins).
    #[arg(long)]
    ec2_buckets: bool,
    /// Share of eligible calls answered 500 InternalError, unforwarded.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Share of eligible calls held for --timeout-secs, then dropped, unforwarded.
    #[arg(long, default_value_t = 0.0)]
    timeout_rate: f64,
    /// How long a timeout fault holds the call.
    #[arg(long, default_value_t = 30.0)]
    timeout_secs: f64,
    /// Share of eligible calls forwarded (so applied upstream) whose response is lost.
    #[arg(long, default_value_t = 0.0)]
    lost_response_rate: f64,
    /// How a lost response is lost.
    #[arg(long, value_enum, default_value_t = LostMode::Drop)]
    lost_response_mode: LostMode,
    /// Operations the rate-based faults may hit (comma-separated, e.g.
    /// RunInstances,TerminateInstances,PutItem,UpdateItem); default: all.
    #[arg(long, value_delimiter = ',')]
    ops: Vec<String>,
}

impl Args {
    fn config(&self) -> Result<ProxyConfig, String> {
        let hold = Duration::try_from_secs_f64(self.timeout_secs)
            .map_err(|_| format!("--timeout-secs {} is not a duration", self.timeout_secs))?;
        let mut config = ProxyConfig::new(&self.upstream)
            .listen(self.listen)
            .seed(self.seed)
            .rates(FaultRates {
                error: self.error_rate,
                timeout: self.timeout_rate,
                lost_response: self.lost_response_rate,
            })
            .timeout_hold(hold)
            .lost_response(match self.lost_response_mode {
                LostMode::Drop => LostResponse::Drop,
                LostMode::BadGateway => LostResponse::BadGateway,
            });
        if self.ec2_buckets {
            config = config.ec2_buckets();
        }
        for (op, rate) in &self.buckets {
            config = config.bucket(op.clone(), *rate);
        }
        for (op, rate) in &self.resource_buckets {
            config = config.resource_bucket(op.clone(), *rate);
        }
        let ops: Vec<&str> = self
            .ops
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .collect();
        if !ops.is_empty() {
            config = config.ops(ops);
        }
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MAYFLY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mayfly-faultproxy: {e}");
            return ExitCode::from(2);
        }
    };
    let proxy = match FaultProxy::start(config).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mayfly-faultproxy: {e}");
            return ExitCode::from(1);
        }
    };
    println!("listening on {}", proxy.url());
    let _ = std::io::stdout().flush();
    terminated().await;
    println!("{}", proxy.counters().to_json());
    let _ = std::io::stdout().flush();
    ExitCode::SUCCESS
}
