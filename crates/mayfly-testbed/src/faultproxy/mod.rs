//! A fault-injecting HTTP proxy for the AWS emulator (test tooling; the `mayfly-faultproxy`
//! binary runs it standalone). It listens on loopback, forwards every request to the
//! upstream endpoint (moto), and per request decides, seeded and reproducibly, whether to
//! inject a fault instead:
//!
//! - **throttling**: EC2-style token buckets per operation ([`ProxyConfig::bucket`]); a call
//!   finding its bucket empty is answered, unforwarded, with the service's own throttling
//!   error (`RequestLimitExceeded` for EC2, `ThrottlingException` for DynamoDB and SQS);
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

mod detect;
mod faults;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

pub use detect::{identify, Operation, Protocol};
pub use faults::{roll, splitmix64};

use faults::ErrorKind;
use mayfly::ratelimit::{Rate, TokenBucket};
use wire::{Reply, Request};

/// Path of the stats endpoint (GET).
pub const STATS_PATH: &str = "/__faultproxy/stats";
/// Path that zeroes the counters (POST).
pub const RESET_PATH: &str = "/__faultproxy/reset";

/// The probabilities of the rate-based faults, per eligible request. They exclude one
/// another (one draw decides), so their sum must not exceed 1.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    /// Answer 500 `InternalError` without forwarding.
    pub error: f64,
    /// Hold the request, then drop the connection, without forwarding.
    pub timeout: f64,
    /// Forward (so the call is applied), then lose the response.
    pub lost_response: f64,
}

impl FaultRates {
    fn validate(&self) -> Result<(), ProxyError> {
        for (name, r) in [
            ("error", self.error),
            ("timeout", self.timeout),
            ("lost-response", self.lost_response),
        ] {
            if !(0.0..=1.0).contains(&r) {
                return Err(ProxyError::Config(format!(
                    "{name} rate {r} is not within 0..=1"
                )));
            }
        }
        let sum = self.error + self.timeout + self.lost_response;
        if sum > 1.0 + 1e-9 {
            return Err(ProxyError::Config(format!(
                "fault rates add up to {sum}, more than 1"
            )));
        }
        Ok(())
    }
}

/// How a lost response is lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LostResponse {
    /// Close the connection without a reply (the client sees the connection drop).
    #[default]
    Drop,
    /// Reply 502 Bad Gateway with an empty body.
    BadGateway,
}

/// Everything the proxy does; build with [`ProxyConfig::new`] and the setters.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where to listen; port 0 picks a free one (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// The endpoint requests go to, `http://host:port`.
    pub upstream: String,
    /// Seeds every rate-based decision (default 0).
    pub seed: u64,
    /// Token buckets by operation name (`RunInstances`); each starts full.
    pub buckets: BTreeMap<String, Rate>,
    pub rates: FaultRates,
    /// Operations the rate-based faults may hit; `None` for every recognised operation.
    /// Buckets apply whatever this says.
    pub ops: Option<BTreeSet<String>>,
    /// How long a timeout fault holds the request before dropping the connection (default
    /// 30 s: longer than mayfly's attempt timeouts, so the client gives up first).
    pub timeout_hold: Duration,
    pub lost_response: LostResponse,
}

impl ProxyConfig {
    /// Forwards everything to `upstream`, faulting nothing.
    pub fn new(upstream: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream: upstream.into(),
            seed: 0,
            buckets: BTreeMap::new(),
            rates: FaultRates::default(),
            ops: None,
            timeout_hold: Duration::from_secs(30),
            lost_response: LostResponse::Drop,
        }
    }

    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Throttles `operation` with a token bucket of this shape.
    pub fn bucket(mut self, operation: impl Into<String>, rate: Rate) -> Self {
        self.buckets.insert(operation.into(), rate);
        self
    }

    /// EC2's own buckets for the calls mayfly makes: RunInstances 5 burst, 2/s;
    /// TerminateInstances 100, 5/s; DescribeInstances 100, 20/s.
    pub fn ec2_buckets(self) -> Self {
        self.bucket("RunInstances", Rate::RUN_INSTANCES)
            .bucket("TerminateInstances", Rate::TERMINATE_INSTANCES)
            .bucket("DescribeInstances", Rate::DESCRIBE)
    }

    pub fn rates(mut self, rates: FaultRates) -> Self {
        self.rates = rates;
        self
    }

    /// Limits the rate-based faults to these operations.
    pub fn ops<I, S>(mut self, ops: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.ops = Some(ops.into_iter().map(Into::into).collect());
        self
    }

    pub fn timeout_hold(mut self, hold: Duration) -> Self {
        self.timeout_hold = hold;
        self
    }

    pub fn lost_response(mut self, how: LostResponse) -> Self {
        self.lost_response = how;
        self
    }

    /// Checks the rates, the buckets and the upstream URL.
    pub fn validate(&self) -> Result<(), ProxyError> {
        self.rates.validate()?;
        for (op, rate) in &self.buckets {
            if !(rate.burst >= 1.0 && rate.per_sec > 0.0) {
                return Err(ProxyError::Config(format!(
                    "bucket {op}: burst must be at least 1 and the rate positive"
                )));
            }
        }
        upstream_base(&self.upstream).map(|_| ())
    }
}

/// Parses a bucket flag, `OPERATION=BURST:PER_SEC` (`RunInstances=5:2`).
pub fn parse_bucket(spec: &str) -> Result<(String, Rate), String> {
    let err =
        || format!("bucket `{spec}`: expected OPERATION=BURST:PER_SEC, e.g. RunInstances=5:2");
    let (op, shape) = spec.split_once('=').ok_or_else(err)?;
    let (burst, per_sec) = shape.split_once(':').ok_or_else(err)?;
    let burst: f64 = burst.trim().parse().map_err(|_| err())?;
    let per_sec: f64 = per_sec.trim().parse().map_err(|_| err())?;
    let op = op.trim();
    if op.is_empty() || !burst.is_finite() || burst < 1.0 || !per_sec.is_finite() || per_sec <= 0.0
    {
        return Err(err());
    }
    Ok((op.to_owned(), Rate { burst, per_sec }))
}

/// `http://host:port` without a trailing slash.
fn upstream_base(upstream: &str) -> Result<String, ProxyError> {
    let uri: hyper::Uri = upstream
        .parse()
        .map_err(|e| ProxyError::Config(format!("upstream `{upstream}`: {e}")))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(ProxyError::Config(format!(
            "upstream `{upstream}` must be an http://host:port URL"
        )));
    }
    Ok(upstream.trim_end_matches('/').to_owned())
}

/// Why the proxy could not start or change.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid proxy configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Counts for one operation (or all of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OpStats {
    /// Requests received.
    pub requests: u64,
    /// Requests sent upstream (lost responses included: they were forwarded).
    pub forwarded: u64,
    /// Answered with a throttling error (bucket empty).
    pub throttled: u64,
    /// Answered with an injected 500.
    pub errors: u64,
    /// Held, then dropped.
    pub timeouts: u64,
    /// Forwarded, then the response lost.
    pub lost_responses: u64,
    /// Forwards that failed (upstream unreachable): answered 502.
    pub upstream_errors: u64,
}

impl OpStats {
    /// Faults injected: throttles, errors, timeouts and lost responses.
    pub fn faults(&self) -> u64 {
        self.throttled + self.errors + self.timeouts + self.lost_responses
    }
}

/// The proxy's counters: totals (flattened into the JSON object) and per operation.
///
/// `GET /__faultproxy/stats` answers, for example:
/// `{"requests":9,"forwarded":5,"throttled":4,"errors":0,"timeouts":0,"lost_responses":0,
///   "upstream_errors":0,"operations":{"RunInstances":{"requests":9,"forwarded":5,…}}}`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProxyStats {
    #[serde(flatten)]
    pub total: OpStats,
    /// By operation name (`RunInstances`, `PutItem`, `Unknown`).
    pub operations: BTreeMap<String, OpStats>,
}

impl ProxyStats {
    /// One operation's counts (zero if it was never called).
    pub fn operation(&self, name: &str) -> OpStats {
        self.operations.get(name).copied().unwrap_or_default()
    }

    fn bump(&mut self, op: &str, f: impl Fn(&mut OpStats)) {
        f(&mut self.total);
        f(self.operations.entry(op.to_owned()).or_default());
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Throttle,
    Error,
    Timeout,
    LostResponse,
}

/// Settings that can change while the proxy runs.
#[derive(Debug, Clone)]
struct Live {
    rates: FaultRates,
    ops: Option<BTreeSet<String>>,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Shared {
    upstream: String,
    client: HttpClient,
    seed: u64,
    buckets: BTreeMap<String, TokenBucket>,
    live: Mutex<Live>,
    timeout_hold: Duration,
    lost_response: LostResponse,
    /// Requests seen per operation: the index of a request in its operation's sequence.
    seq: Mutex<BTreeMap<String, u64>>,
    stats: Mutex<ProxyStats>,
    next_request_id: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("upstream", &self.upstream)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters and settings stay usable whatever panicked while holding them.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Hop-by-hop headers and those the proxy rewrites: never forwarded as received.
fn skip_header(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "content-length",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// What the connection does after a request.
enum Outcome {
    Reply(Reply),
    Drop,
}

impl Shared {
    fn new(config: &ProxyConfig) -> Result<Self, ProxyError> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Ok(Self {
            upstream: upstream_base(&config.upstream)?,
            client: Client::builder(TokioExecutor::new()).build(connector),
            seed: config.seed,
            buckets: config
                .buckets
                .iter()
                .map(|(op, rate)| (op.clone(), TokenBucket::with_rate(*rate)))
                .collect(),
            live: Mutex::new(Live {
                rates: config.rates,
                ops: config.ops.clone(),
            }),
            timeout_hold: config.timeout_hold,
            lost_response: config.lost_response,
            seq: Mutex::new(BTreeMap::new()),
            stats: Mutex::new(ProxyStats::default()),
            next_request_id: AtomicU64::new(0),
        })
    }

    fn request_id(&self) -> String {
        let n = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let x = splitmix64(self.seed ^ splitmix64(n));
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            x >> 32,
            (x >> 16) & 0xffff,
            x & 0xffff,
            n & 0xffff,
            n
        )
    }

    /// Decides the fault for a call of `op` arriving at `now`, and counts the request.
    fn decide(&self, op: &Operation, now: tokio::time::Instant) -> Option<Fault> {
        let name = op.name.as_str();
        lock(&self.stats).bump(name, |s| s.requests += 1);
        if op.protocol == Protocol::Unknown {
            return None;
        }
        let index = {
            let mut seq = lock(&self.seq);
            let n = seq.entry(name.to_owned()).or_default();
            *n += 1;
            *n - 1
        };
        if let Some(bucket) = self.buckets.get(name) {
            if !bucket.try_take(now) {
                return Some(Fault::Throttle);
            }
        }
        let live = lock(&self.live).clone();
        if live.ops.as_ref().is_some_and(|ops| !ops.contains(name)) {
            return None;
        }
        let r = live.rates;
        let u = roll(self.seed, name, index);
        if u < r.error {
            Some(Fault::Error)
        } else if u < r.error + r.timeout {
            Some(Fault::Timeout)
        } else if u < r.error + r.timeout + r.lost_response {
            Some(Fault::LostResponse)
        } else {
            None
        }
    }

    async fn handle(&self, req: Request) -> Outcome {
        match (req.method.as_str(), req.path()) {
            ("GET", STATS_PATH) => {
                let json = lock(&self.stats).to_json();
                return Outcome::Reply(Reply::new(200, "application/json", json));
            }
            ("POST", RESET_PATH) => {
                *lock(&self.stats) = ProxyStats::default();
                return Outcome::Reply(Reply::new(200, "application/json", "{}"));
            }
            _ => {}
        }
        let op = identify(&req.target, &req.headers, &req.body);
        let name = op.name.clone();
        let count = |f: fn(&mut OpStats)| lock(&self.stats).bump(&name, f);
        match self.decide(&op, tokio::time::Instant::now()) {
            Some(Fault::Throttle) => {
                count(|s| s.throttled += 1);
                debug!(operation = %name, "Injected throttling.");
                Outcome::Reply(faults::error_reply(
                    &op,
                    ErrorKind::Throttle,
                    &self.request_id(),
                ))
            }
            Some(Fault::Error) => {
                count(|s| s.errors += 1);
                debug!(operation = %name, "Injected a 500.");
                Outcome::Reply(faults::error_reply(
                    &op,
                    ErrorKind::Internal,
                    &self.request_id(),
                ))
            }
            Some(Fault::Timeout) => {
                count(|s| s.timeouts += 1);
                debug!(operation = %name, hold = ?self.timeout_hold, "Injected a timeout.");
                tokio::time::sleep(self.timeout_hold).await;
                Outcome::Drop
            }
            Some(Fault::LostResponse) => match self.forward(req).await {
                Ok(_) => {
                    count(|s| {
                        s.forwarded += 1;
                        s.lost_responses += 1;
                    });
                    debug!(operation = %name, "Forwarded, then lost the response.");
                    match self.lost_response {
                        LostResponse::Drop => Outcome::Drop,
                        LostResponse::BadGateway => {
                            Outcome::Reply(Reply::new(502, "text/plain", Vec::new()))
                        }
                    }
                }
                Err(e) => self.upstream_failed(&name, &e),
            },
            None => match self.forward(req).await {
                Ok(reply) => {
                    count(|s| s.forwarded += 1);
                    Outcome::Reply(reply)
                }
                Err(e) => self.upstream_failed(&name, &e),
            },
        }
    }

    fn upstream_failed(&self, name: &str, e: &str) -> Outcome {
        lock(&self.stats).bump(name, |s| s.upstream_errors += 1);
        warn!(operation = %name, error = %e, "Upstream request failed.");
        Outcome::Reply(Reply::new(
            502,
            "text/plain",
            format!("faultproxy: upstream: {e}"),
        ))
    }

    /// Sends `req` upstream and reads the whole response.
    async fn forward(&self, req: Request) -> Result<Reply, String> {
        let had_body_framing =
            req.header("content-length").is_some() || req.header("transfer-encoding").is_some();
        let mut builder = hyper::Request::builder()
            .method(req.method.as_str())
            .uri(format!("{}{}", self.upstream, req.target));
        for (name, value) in &req.headers {
            if !skip_header(name) {
                builder = builder.header(name.as_str(), value.as_str());
            }
        }
        if had_body_framing || !req.body.is_empty() {
            builder = builder.header("content-length", req.body.len());
        }
        let request = builder
            .body(Full::new(Bytes::from(req.body)))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        let headers = parts
            .headers
            .iter()
            .filter(|(name, _)| !skip_header(name.as_str()))
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        Ok(Reply {
            status: parts.status.as_u16(),
            headers,
            body: body.to_vec(),
        })
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = Vec::new();
    loop {
        let req = match wire::read_request(&mut rd, &mut wr, &mut buf).await {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(e) => {
                debug!(error = %e, "Unreadable request; closing the connection.");
                let reply = Reply::new(400, "text/plain", format!("faultproxy: {e}"));
                let _ = wire::write_reply(&mut wr, &reply, true).await;
                return;
            }
        };
        let close = !req.keep_alive();
        match shared.handle(req).await {
            Outcome::Reply(reply) => {
                if wire::write_reply(&mut wr, &reply, close).await.is_err() || close {
                    return;
                }
            }
            // Dropping both halves closes the socket.
            Outcome::Drop => return,
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Owning the connections' tasks here means aborting this task ends them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                Err(e) => {
                    // Out of descriptors, say: wait a little rather than spin.
                    warn!(error = %e, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

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
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
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

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::time::Instant;

    fn shared(config: &ProxyConfig) -> Shared {
        Shared::new(config).unwrap()
    }

    fn ec2(name: &str) -> Operation {
        Operation {
            service: "ec2".into(),
            name: name.into(),
            protocol: Protocol::Ec2Query,
        }
    }

    #[test]
    fn bucket_flags_parse() {
        assert_eq!(
            parse_bucket("RunInstances=5:2"),
            Ok((
                "RunInstances".into(),
                Rate {
                    burst: 5.0,
                    per_sec: 2.0
                }
            ))
        );
        assert_eq!(
            parse_bucket(" PutItem = 100 : 0.5").map(|(o, r)| (o, r.per_sec)),
            Ok(("PutItem".into(), 0.5))
        );
        for bad in [
            "RunInstances",
            "RunInstances=5",
            "=5:2",
            "X=0:2",
            "X=5:0",
            "X=a:b",
            "X=inf:1",
        ] {
            assert!(parse_bucket(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_is_validated() {
        let ok = ProxyConfig::new("http://127.0.0.1:5000/");
        assert!(ok.validate().is_ok());
        assert_eq!(
            upstream_base(&ok.upstream).unwrap(),
            "http://127.0.0.1:5000"
        );
        assert!(ProxyConfig::new("https://x:1").validate().is_err());
        assert!(ProxyConfig::new("127.0.0.1:5000").validate().is_err());
        let too_much = ok.clone().rates(FaultRates {
            error: 0.5,
            timeout: 0.4,
            lost_response: 0.2,
        });
        assert!(too_much.validate().is_err());
        assert!(ok
            .clone()
            .rates(FaultRates {
                error: -0.1,
                ..FaultRates::default()
            })
            .validate()
            .is_err());
        let bad_bucket = ok.bucket(
            "RunInstances",
            Rate {
                burst: 0.0,
                per_sec: 1.0,
            },
        );
        assert!(bad_bucket.validate().is_err());
    }

    #[test]
    fn the_bucket_throttles_beyond_the_burst_and_refills() {
        let s = shared(
            &ProxyConfig::new("http://127.0.0.1:1").bucket("RunInstances", Rate::RUN_INSTANCES),
        );
        let run = ec2("RunInstances");
        let t0 = Instant::now();
        let verdicts: Vec<_> = (0..7).map(|_| s.decide(&run, t0)).collect();
        assert_eq!(verdicts[..5], [None; 5]);
        assert_eq!(verdicts[5..], [Some(Fault::Throttle); 2]);
        // Other operations have no bucket.
        assert_eq!(s.decide(&ec2("DescribeInstances"), t0), None);
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(s.decide(&run, t1), None);
        assert_eq!(s.decide(&run, t1), Some(Fault::Throttle));
        let t2 = t1 + Duration::from_secs(60);
        let refilled = (0..6).filter(|_| s.decide(&run, t2).is_none()).count();
        assert_eq!(refilled, 5);
        let stats = lock(&s.stats).clone();
        assert_eq!(stats.operation("RunInstances").requests, 15);
        assert_eq!(stats.total.requests, 16);
    }

    fn faults_of(
        seed: u64,
        rates: FaultRates,
        ops: Option<&[&str]>,
        n: usize,
    ) -> Vec<Option<Fault>> {
        let mut config = ProxyConfig::new("http://127.0.0.1:1")
            .seed(seed)
            .rates(rates);
        if let Some(ops) = ops {
            config = config.ops(ops.iter().copied());
        }
        let s = shared(&config);
        let now = Instant::now();
        // Interleave two operations; each one's decisions depend only on its own sequence.
        (0..n)
            .flat_map(|_| {
                [
                    s.decide(&ec2("RunInstances"), now),
                    s.decide(&ec2("DescribeInstances"), now),
                ]
            })
            .collect()
    }

    #[test]
    fn seeded_decisions_are_reproducible() {
        let rates = FaultRates {
            error: 0.1,
            timeout: 0.1,
            lost_response: 0.1,
        };
        let a = faults_of(7, rates, None, 2_000);
        assert_eq!(a, faults_of(7, rates, None, 2_000));
        assert_ne!(a, faults_of(8, rates, None, 2_000));
        for kind in [Fault::Error, Fault::Timeout, Fault::LostResponse] {
            let n = a.iter().filter(|f| **f == Some(kind)).count();
            // 10 % of 4,000, give or take five standard deviations.
            assert!((310..490).contains(&n), "{kind:?}: {n}");
        }
        // Only RunInstances (the even positions) is faulted when the ops say so.
        let only = faults_of(7, rates, Some(&["RunInstances"]), 2_000);
        assert!(only.iter().skip(1).step_by(2).all(Option::is_none));
        assert_eq!(
            only.iter().step_by(2).collect::<Vec<_>>(),
            a.iter().step_by(2).collect::<Vec<_>>()
        );
        // No rates, no faults; unknown requests are never faulted.
        assert!(faults_of(7, FaultRates::default(), None, 100)
            .iter()
            .all(Option::is_none));
        let s = shared(&ProxyConfig::new("http://127.0.0.1:1").rates(FaultRates {
            error: 1.0,
            ..FaultRates::default()
        }));
        let now = Instant::now();
        assert_eq!(s.decide(&identify("/moto-api/reset", &[], b""), now), None);
        assert_eq!(s.decide(&ec2("RunInstances"), now), Some(Fault::Error));
    }

    #[test]
    fn request_ids_are_seeded() {
        let config = ProxyConfig::new("http://127.0.0.1:1").seed(3);
        let (a, b) = (shared(&config), shared(&config));
        assert_eq!(a.request_id(), b.request_id());
        assert_eq!(a.request_id(), b.request_id());
        assert_ne!(
            shared(&config).request_id(),
            shared(&config.seed(4)).request_id()
        );
    }
}
