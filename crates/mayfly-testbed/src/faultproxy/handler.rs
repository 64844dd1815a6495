//! What the proxy does with one request: counts it, decides its fault (the operation's
//! bucket, then one seeded draw), and answers it, forwarding it upstream when the fault (or
//! none) says so.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mayfly::ratelimit::TokenBucket;
use tracing::{debug, warn};

use super::config::{upstream_base, FaultRates, LostResponse, ProxyConfig, ProxyError};
use super::detect::{identify, Operation, Protocol};
use super::faults::{self, roll, splitmix64, ErrorKind};
use super::forward::{self, HttpClient};
use super::stats::{OpStats, ProxyStats};
use super::wire::{Reply, Request};
use super::{RESET_PATH, STATS_PATH};

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
pub(super) struct Live {
    pub(super) rates: FaultRates,
    pub(super) ops: Option<BTreeSet<String>>,
}

pub(super) struct Shared {
    pub(super) upstream: String,
    pub(super) client: HttpClient,
    seed: u64,
    buckets: BTreeMap<String, TokenBucket>,
    resource_buckets: BTreeMap<String, TokenBucket>,
    op_rates: BTreeMap<String, FaultRates>,
    pub(super) live: Mutex<Live>,
    timeout_hold: Duration,
    lost_response: LostResponse,
    lost_response_hold: Duration,
    /// Requests seen per operation: the index of a request in its operation's sequence.
    seq: Mutex<BTreeMap<String, u64>>,
    pub(super) stats: Mutex<ProxyStats>,
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

/// The instances an EC2 call names, as its resource bucket counts them: RunInstances'
/// `MaxCount`, TerminateInstances' `InstanceId.N`; 1 for anything else.
pub(super) fn instances_named(operation: &str, body: &[u8]) -> u32 {
    let body = String::from_utf8_lossy(body);
    let params = body.split('&').filter_map(|p| p.split_once('='));
    let n = match operation {
        "RunInstances" => params
            .filter(|(k, _)| *k == "MaxCount")
            .find_map(|(_, v)| v.parse::<u32>().ok())
            .unwrap_or(1),
        "TerminateInstances" => params.filter(|(k, _)| k.starts_with("InstanceId.")).count() as u32,
        _ => 1,
    };
    n.max(1)
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters and settings stay usable whatever panicked while holding them.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the connection does after a request.
pub(super) enum Outcome {
    Reply(Reply),
    Drop,
}

impl Shared {
    pub(super) fn new(config: &ProxyConfig) -> Result<Self, ProxyError> {
        Ok(Self {
            upstream: upstream_base(&config.upstream)?,
            client: forward::client(),
            seed: config.seed,
            buckets: config
                .buckets
                .iter()
                .map(|(op, rate)| (op.clone(), TokenBucket::with_rate(*rate)))
                .collect(),
            resource_buckets: config
                .resource_buckets
                .iter()
                .map(|(op, rate)| (op.clone(), TokenBucket::with_rate(*rate)))
                .collect(),
            op_rates: config.op_rates.clone(),
            live: Mutex::new(Live {
                rates: config.rates,
                ops: config.ops.clone(),
            }),
            timeout_hold: config.timeout_hold,
            lost_response: config.lost_response,
            lost_response_hold: config.lost_response_hold,
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
    #[cfg(test)]
    fn decide(&self, op: &Operation, now: tokio::time::Instant) -> Option<Fault> {
        self.decide_for(op, 1, now)
    }

    /// Decides the fault for a call of `op` naming `instances` instances (what its resource
    /// bucket, if it has one, spends) arriving at `now`, and counts the request.
    fn decide_for(
        &self,
        op: &Operation,
        instances: u32,
        now: tokio::time::Instant,
    ) -> Option<Fault> {
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
        if let Some(bucket) = self.resource_buckets.get(name) {
            // EC2 refuses a call whose instances its resource bucket cannot cover; the call
            // still spent its request token.
            if !bucket.try_take_n(now, instances) {
                return Some(Fault::Throttle);
            }
        }
        let live = lock(&self.live).clone();
        if live.ops.as_ref().is_some_and(|ops| !ops.contains(name)) {
            return None;
        }
        let r = self.op_rates.get(name).copied().unwrap_or(live.rates);
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

    pub(super) async fn handle(&self, req: Request) -> Outcome {
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
        let instances = instances_named(&op.name, &req.body);
        match self.decide_for(&op, instances, tokio::time::Instant::now()) {
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
                    tokio::time::sleep(self.lost_response_hold).await;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    use mayfly::ratelimit::Rate;

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
    fn a_resource_bucket_spends_one_token_per_instance_named() {
        let s = shared(
            &ProxyConfig::new("http://127.0.0.1:1")
                .bucket("RunInstances", Rate::RUN_INSTANCES)
                .resource_bucket("RunInstances", Rate::RUN_INSTANCES_RESOURCE),
        );
        let run = ec2("RunInstances");
        let body = b"Action=RunInstances&MinCount=1&MaxCount=600&ImageId=ami-1";
        let n = instances_named("RunInstances", body);
        assert_eq!(n, 600);
        let t0 = Instant::now();
        assert_eq!(s.decide_for(&run, n, t0), None);
        assert_eq!(s.decide_for(&run, n, t0), Some(Fault::Throttle), "400 left");
        assert_eq!(s.decide_for(&run, 400, t0), None);
        // 50 s later the resource bucket holds 100 instances.
        let t1 = t0 + Duration::from_secs(50);
        assert_eq!(s.decide_for(&run, 100, t1), None);
        assert_eq!(s.decide_for(&run, 1, t1), Some(Fault::Throttle));
        let term = b"Action=TerminateInstances&InstanceId.1=i-1&InstanceId.2=i-2";
        assert_eq!(instances_named("TerminateInstances", term), 2);
        assert_eq!(instances_named("DescribeInstances", b""), 1);
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
