//! What the proxy does, configured: the fault rates, how a lost response is lost, the buckets
//! by operation, and the checks on all of them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use mayfly::ratelimit::Rate;

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
    pub(super) fn validate(&self) -> Result<(), ProxyError> {
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
    /// Resource buckets by operation name: a call takes one token per instance it names
    /// (RunInstances' `MaxCount`, TerminateInstances' instance ids), as EC2's do; a call
    /// finding too few is throttled. Each starts full.
    pub resource_buckets: BTreeMap<String, Rate>,
    pub rates: FaultRates,
    /// Operations the rate-based faults may hit; `None` for every recognised operation.
    /// Buckets apply whatever this says.
    pub ops: Option<BTreeSet<String>>,
    /// Rates for particular operations, in place of `rates` (e.g. more lost responses on
    /// RunInstances and ReceiveMessage, the calls whose loss strands a launch or hides events).
    pub op_rates: BTreeMap<String, FaultRates>,
    /// How long a timeout fault holds the request before dropping the connection (default
    /// 30 s: longer than mayfly's attempt timeouts, so the client gives up first).
    pub timeout_hold: Duration,
    pub lost_response: LostResponse,
    /// How long a lost response is held (the call already applied upstream) before the
    /// connection drops: a client killed meanwhile dies between the call and its next step.
    pub lost_response_hold: Duration,
}

impl ProxyConfig {
    /// Forwards everything to `upstream`, faulting nothing.
    pub fn new(upstream: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream: upstream.into(),
            seed: 0,
            buckets: BTreeMap::new(),
            resource_buckets: BTreeMap::new(),
            rates: FaultRates::default(),
            ops: None,
            op_rates: BTreeMap::new(),
            timeout_hold: Duration::from_secs(30),
            lost_response: LostResponse::Drop,
            lost_response_hold: Duration::ZERO,
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

    /// Throttles `operation` with a resource bucket of this shape: one token per instance.
    pub fn resource_bucket(mut self, operation: impl Into<String>, rate: Rate) -> Self {
        self.resource_buckets.insert(operation.into(), rate);
        self
    }

    /// EC2's own buckets for the calls mayfly makes: RunInstances 5 burst, 2/s;
    /// TerminateInstances 100, 5/s; DescribeInstances 100, 20/s; and the resource buckets of
    /// RunInstances (1,000 instances, 2/s) and TerminateInstances (1,000, 20/s).
    pub fn ec2_buckets(self) -> Self {
        self.bucket("RunInstances", Rate::RUN_INSTANCES)
            .bucket("TerminateInstances", Rate::TERMINATE_INSTANCES)
            .bucket("DescribeInstances", Rate::DESCRIBE)
            .resource_bucket("RunInstances", Rate::RUN_INSTANCES_RESOURCE)
            .resource_bucket("TerminateInstances", Rate::TERMINATE_INSTANCES_RESOURCE)
    }

    pub fn rates(mut self, rates: FaultRates) -> Self {
        self.rates = rates;
        self
    }

    /// Faults `operation` at these rates instead of the common ones.
    pub fn op_rates(mut self, operation: impl Into<String>, rates: FaultRates) -> Self {
        self.op_rates.insert(operation.into(), rates);
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

    pub fn lost_response_hold(mut self, hold: Duration) -> Self {
        self.lost_response_hold = hold;
        self
    }

    /// Checks the rates, the buckets and the upstream URL.
    pub fn validate(&self) -> Result<(), ProxyError> {
        self.rates.validate()?;
        for (op, rate) in self.buckets.iter().chain(&self.resource_buckets) {
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
pub(super) fn upstream_base(upstream: &str) -> Result<String, ProxyError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
