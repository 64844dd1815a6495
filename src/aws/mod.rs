//! The AWS adapters: SDK configuration, the clients mayfly uses, and the implementations of
//! the ports on them.
//!
//! - [`counting`]: counts every AWS call (retries included) by `Service.Operation`.
//! - [`ec2`]: [`ports::Compute`](crate::ports::Compute) on EC2, with error classification.
//! - [`sqs`]: [`ports::Queue`](crate::ports::Queue) on SQS.
//! - [`dynamo`]: the config table, the job ledger and the leader lease on DynamoDB.
//! - [`iam`]: [`ports::IdentityChecks`](crate::ports::IdentityChecks) on IAM (instance
//!   profiles, the spot service-linked role), for `preflight`.
//! - [`permissions`]: denied calls, named with the grant of `infra/mayfly.yaml` they need.
//! - [`quotas`]: [`ports::QuotaReader`](crate::ports::QuotaReader) on Service Quotas.
//!
//! Every client has time limits ([`Timeouts`]); RunInstances goes through its own EC2 client
//! without SDK retries ([`launch_client`]).

pub mod counting;
pub mod dynamo;
pub mod ec2;
pub mod iam;
pub mod permissions;
pub mod quotas;
pub mod sqs;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use counting::CallCounter;

use crate::ports::AwsError;

/// Any SDK failure as an [`AwsError`]: a service's error by its code, a call that got no
/// answer by what happened (`timeout`, `dispatch`, `response`, `construction`), an answer
/// without a code by its HTTP status (`HTTP500`).
pub fn aws_error<E>(err: SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = match &err {
        SdkError::ServiceError(service) => match service.err().code() {
            Some(code) => {
                return AwsError {
                    code: code.to_owned(),
                    message: service.err().message().unwrap_or_default().to_owned(),
                }
            }
            None => format!("HTTP{}", service.raw().status().as_u16()),
        },
        SdkError::TimeoutError(_) => "timeout".to_owned(),
        SdkError::DispatchFailure(_) => "dispatch".to_owned(),
        SdkError::ResponseError(_) => "response".to_owned(),
        SdkError::ConstructionFailure(_) => "construction".to_owned(),
        _ => "sdk".to_owned(),
    };
    AwsError {
        code,
        message: DisplayErrorContext(&err).to_string(),
    }
}

/// What went wrong when a call got no answer from the service at all (the connection was
/// refused or dropped, DNS failed, it timed out): a few words for an operator, classified by
/// the SDK's error variant and the I/O error kind beneath it. `None` when the service did
/// answer (its error code says the rest). The SDK's whole account is logged at `info`, so
/// `-v` shows it and the message stays one line.
pub fn no_response<E, R>(op: &str, err: &SdkError<E, R>) -> Option<String>
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let what = match err {
        SdkError::TimeoutError(_) => "timed out".to_owned(),
        SdkError::DispatchFailure(d) if d.is_timeout() => "timed out".to_owned(),
        SdkError::DispatchFailure(d) => match io_kind(d.as_connector_error()) {
            Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_owned(),
            Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted) => {
                "connection reset".to_owned()
            }
            Some(std::io::ErrorKind::TimedOut) => "timed out".to_owned(),
            _ if d.is_io() => "could not connect".to_owned(),
            _ => "the request could not be sent".to_owned(),
        },
        SdkError::ResponseError(_) => "the response could not be read".to_owned(),
        _ => return None,
    };
    tracing::info!(operation = op, error = %DisplayErrorContext(err), "AWS call got no response.");
    Some(what)
}

/// The kind of the first I/O error in an error's chain of sources.
fn io_kind(
    err: Option<&aws_smithy_runtime_api::client::result::ConnectorError>,
) -> Option<std::io::ErrorKind> {
    let mut next: Option<&(dyn std::error::Error + 'static)> =
        err.map(|e| e as &(dyn std::error::Error + 'static));
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        next = e.source();
    }
    None
}

/// Loads the SDK configuration from the standard AWS chain (environment, shared config
/// files, SSO, IMDS…). The endpoint also follows `AWS_ENDPOINT_URL` and the per-service
/// variants (`AWS_ENDPOINT_URL_EC2`…) with no code here; explicit arguments override.
pub async fn load_sdk_config(
    region: Option<&str>,
    endpoint_url: Option<&str>,
    profile: Option<&str>,
) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(profile) = profile.filter(|p| !p.is_empty()) {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = region.filter(|r| !r.is_empty()) {
        loader = loader.region(Region::new(region.to_owned()));
    }
    if let Some(url) = endpoint_url.filter(|u| !u.is_empty()) {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// Time limits on every AWS call, so a stalled endpoint slows a pass down instead of hanging
/// it. An *attempt* is one request on the wire; the *operation* covers all of its SDK
/// retries and back-offs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a connection.
    pub connect: Duration,
    /// One EC2 or DynamoDB attempt.
    pub attempt: Duration,
    /// One EC2 or DynamoDB operation, retries included.
    pub operation: Duration,
    /// One SQS attempt: longer than the 20 s a `ReceiveMessage` long poll may wait.
    pub sqs_attempt: Duration,
    /// One SQS operation, retries included.
    pub sqs_operation: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            attempt: Duration::from_secs(10),
            operation: Duration::from_secs(30),
            sqs_attempt: Duration::from_secs(25),
            sqs_operation: Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    fn config(&self, attempt: Duration, operation: Duration) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .operation_attempt_timeout(attempt)
            .operation_timeout(operation)
            .build()
    }
}

/// The EC2 client for RunInstances: `ec2`'s configuration (endpoint, credentials,
/// interceptors, timeouts) with SDK retries off. A retried RunInstances after a response
/// was lost would launch twice wherever the client token is not honoured (the emulator);
/// mayfly instead treats the outcome as unknown and the next pass repairs it by looking the
/// attempt's instance up by its tags.
pub fn launch_client(ec2: &aws_sdk_ec2::Client) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::from_conf(
        ec2.config()
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .build(),
    )
}

/// The SDK clients mayfly uses, all counting their calls into one [`CallCounter`].
#[derive(Debug, Clone)]
pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    /// EC2 with SDK retries off, for RunInstances (see [`launch_client`]).
    pub ec2_launch: aws_sdk_ec2::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// IAM, for `preflight`'s reads.
    pub iam: aws_sdk_iam::Client,
    /// Service Quotas, for the account's vCPU quotas.
    pub servicequotas: aws_sdk_servicequotas::Client,
    pub calls: CallCounter,
}

impl Clients {
    /// Clients for `sdk` with the default [`Timeouts`], each with the call-counting
    /// interceptor installed.
    pub fn new(sdk: &SdkConfig) -> Self {
        Self::with_timeouts(sdk, &Timeouts::default())
    }

    /// Clients for `sdk` with these time limits (retries as `sdk` configures them, except
    /// [`ec2_launch`](Self::ec2_launch), which never retries).
    pub fn with_timeouts(sdk: &SdkConfig, timeouts: &Timeouts) -> Self {
        let calls = CallCounter::new();
        let default = timeouts.config(timeouts.attempt, timeouts.operation);
        let ec2 = aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::from(sdk)
                .timeout_config(default.clone())
                .interceptor(calls.interceptor())
                .build(),
        );
        let ec2_launch = aws_sdk_ec2::Client::from_conf(
            ec2.config()
                .to_builder()
                .retry_config(RetryConfig::disabled())
                // One attempt: the operation may take no longer than it.
                .timeout_config(timeouts.config(timeouts.attempt, timeouts.attempt))
                .build(),
        );
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(sdk)
                .timeout_config(default.clone())
                .interceptor(calls.interceptor())
                .build(),
        );
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(sdk)
                .timeout_config(timeouts.config(timeouts.sqs_attempt, timeouts.sqs_operation))
                .interceptor(calls.interceptor())
                .build(),
        );
        let iam = aws_sdk_iam::Client::from_conf(
            aws_sdk_iam::config::Builder::from(sdk)
                .timeout_config(default.clone())
                .interceptor(calls.interceptor())
                .build(),
        );
        let servicequotas = aws_sdk_servicequotas::Client::from_conf(
            aws_sdk_servicequotas::config::Builder::from(sdk)
                .timeout_config(default.clone())
                .interceptor(calls.interceptor())
                .build(),
        );
        Self {
            ec2,
            ec2_launch,
            dynamodb,
            sqs,
            iam,
            servicequotas,
            calls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdk() -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .build()
    }

    #[test]
    fn every_client_has_time_limits_and_launches_are_not_retried() {
        let c = Clients::new(&sdk());
        let t = Timeouts::default();
        let ec2 = c.ec2.config().timeout_config().expect("timeouts");
        assert_eq!(ec2.connect_timeout(), Some(t.connect));
        assert_eq!(ec2.operation_attempt_timeout(), Some(t.attempt));
        assert_eq!(ec2.operation_timeout(), Some(t.operation));
        let dynamo = c.dynamodb.config().timeout_config().expect("timeouts");
        assert_eq!(dynamo.operation_attempt_timeout(), Some(t.attempt));
        let sqs = c.sqs.config().timeout_config().expect("timeouts");
        assert!(sqs.operation_attempt_timeout() > Some(Duration::from_secs(20)));
        assert_eq!(sqs.operation_timeout(), Some(t.sqs_operation));

        let retries = |cfg: Option<&RetryConfig>| cfg.map(RetryConfig::max_attempts);
        assert_eq!(retries(c.ec2.config().retry_config()), Some(3));
        assert_eq!(retries(c.dynamodb.config().retry_config()), Some(3));
        assert_eq!(retries(c.ec2_launch.config().retry_config()), Some(1));
        let launch = c.ec2_launch.config().timeout_config().expect("timeouts");
        assert_eq!(launch.operation_timeout(), Some(t.attempt));
        // Derived from any client, keeping its other settings.
        let derived = launch_client(&c.ec2);
        assert_eq!(retries(derived.config().retry_config()), Some(1));
        assert_eq!(
            derived
                .config()
                .timeout_config()
                .and_then(|t| t.connect_timeout()),
            Some(t.connect)
        );
    }
}
