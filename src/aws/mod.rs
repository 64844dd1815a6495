//! The AWS adapters: SDK configuration, the clients mayfly uses, and the implementations of
//! the ports on them.
//!
//! - [`counting`]: counts every AWS call (retries included) by `Service.Operation`.
//! - [`ec2`]: [`ports::Compute`](crate::ports::Compute) on EC2, with error classification.
//! - [`sqs`]: [`ports::Queue`](crate::ports::Queue) on SQS.
//! - [`dynamo`]: the config table and the job ledger on DynamoDB.

pub mod counting;
pub mod dynamo;
pub mod ec2;
pub mod sqs;

use aws_config::{BehaviorVersion, Region, SdkConfig};

use counting::CallCounter;

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

/// The SDK clients mayfly uses, all counting their calls into one [`CallCounter`].
#[derive(Debug, Clone)]
pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub calls: CallCounter,
}

impl Clients {
    /// Clients for `sdk`, each with the call-counting interceptor installed.
    pub fn new(sdk: &SdkConfig) -> Self {
        let calls = CallCounter::new();
        let ec2 = aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::from(sdk)
                .interceptor(calls.interceptor())
                .build(),
        );
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(sdk)
                .interceptor(calls.interceptor())
                .build(),
        );
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(sdk)
                .interceptor(calls.interceptor())
                .build(),
        );
        Self {
            ec2,
            dynamodb,
            sqs,
            calls,
        }
    }
}
