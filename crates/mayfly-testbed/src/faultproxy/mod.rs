//! A fault-injecting HTTP proxy for the AWS emulator (test tooling; the `mayfly-faultproxy`
//! binary runs it standalone). It listens on loopback, forwards every request to the
//! upstream endpoint (moto), and per request decides, seeded and reproducibly, whether to
//! inject a fault instead:
//!
//! - **throttling**: EC2-style token buckets per operation ([`ProxyConfig::bucket`]); a call
//!   finding its bucket empty is answered, unforwarded, with the service's own throttling
//!   error (`RequestLimitExceeded` for EC2, `ThrottlingException` for DynamoDB and SQS);
//!   and EC2's resource buckets ([`ProxyConfig::resource_bucket`]), spent one token per
//!   instance a call names (RunInstances' `MaxCount`, TerminateInstances' ids);
//! - **5xx** at a rate: a 500 `InternalError`, unforwarded;
//! - **timeouts** at a rate: the request is held for [`ProxyConfig::timeout_hold`], then the
//!   connection is dropped, unforwarded;
//! - **lost responses** at a rate: the request *is* forwarded and applied upstream, then the
//!   connection is dropped (or a 502 returned) instead of relaying the response.
//!
//! Rate-based faults can be limited to some operations ([`ProxyConfig::ops`]) and only ever
//! hit recognised AWS calls (see [`identify`]), never the emulator's own `/moto-api/`. The
//! decision for the n-th call of an operation depends only on the seed, the operation and
//! n, so a run with the same seed and the same calls injects the same faults.
//!
//! Counters of requests, forwards and faults, in total and by operation, are readable
//! in-process ([`FaultProxy::counters`]) and over HTTP: `GET /__faultproxy/stats` answers
//! them as JSON ([`ProxyStats`]); `POST /__faultproxy/reset` zeroes them.
//!
//! Inside: `config` (what the proxy does, and its checks), `server` (the accept loop and each
//! connection), `wire` (HTTP/1.1 on the raw socket), `detect` (which AWS operation a request
//! is), `handler` (one request: count it, decide its fault, answer it), `faults` (the seeded
//! draw and the services' error replies), `forward` (the upstream client), `stats` (the
//! counters).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mayfly_testbed::faultproxy::{FaultProxy, FaultRates, ProxyConfig};
//! use mayfly::ratelimit::Rate;
//!
//! let proxy = FaultProxy::start(
//!     ProxyConfig::new("http://127.0.0.1:5000")
//!         .seed(7)
//!         .bucket("RunInstances", Rate::RUN_INSTANCES)
//!         .rates(FaultRates { error: 0.02, ..FaultRates::default() }),
//! )
//! .await?;
//! // Point the SDK at proxy.url(); later:
//! let stats = proxy.counters();
//! println!("{} throttled", stats.operation("RunInstances").throttled);
//! # Ok(()) }
//! ```

mod config;
mod detect;
mod faults;
mod forward;
mod handler;
mod server;
mod stats;
pub mod wire;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;

pub use config::{parse_bucket, FaultRates, LostResponse, ProxyConfig, ProxyError};
pub use detect::{identify, Operation, Protocol};
pub use faults::{roll, splitmix64};
pub use handler::Fault;
pub use stats::{OpStats, ProxyStats};

use handler::{lock, Shared};

/// Path of the stats endpoint (GET).
pub const STATS_PATH: &str = "/__faultproxy/stats";
/// Path that zeroes the counters (POST).
pub const RESET_PATH: &str = "/__faultproxy/reset";

/// A running proxy. Dropping it (or [`shutdown`](Self::shutdown)) stops it and closes every
/// connection.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Binds, then serves in the background on the current tokio runtime.
    pub async fn start(config: ProxyConfig) -> Result<Self, ProxyError> {
        config.validate()?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ProxyError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ProxyError::Bind {
            addr: config.listen,
            source,
        })?;
        let shared = Arc::new(Shared::new(&config)?);
        info!(%addr, upstream = %config.upstream, seed = config.seed, "Fault proxy listening.");
        let task = tokio::spawn(server::accept_loop(listener, Arc::clone(&shared)));
        Ok(Self { addr, shared, task })
    }

    /// The bound address (the port is real even when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`: the endpoint URL to give the SDK.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> ProxyStats {
        lock(&self.shared.stats).clone()
    }

    /// Zeroes the counters (buckets and the seeded sequences carry on).
    pub fn reset_counters(&self) {
        *lock(&self.shared.stats) = ProxyStats::default();
    }

    /// Changes the rate-based faults from the next request on.
    pub fn set_rates(&self, rates: FaultRates) -> Result<(), ProxyError> {
        rates.validate()?;
        lock(&self.shared.live).rates = rates;
        Ok(())
    }

    /// Changes which operations the rate-based faults may hit (`None`: all).
    pub fn set_ops(&self, ops: Option<BTreeSet<String>>) {
        lock(&self.shared.live).ops = ops;
    }

    /// Stops listening and closes every connection.
    pub fn shutdown(self) {
        // Drop does it.
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
