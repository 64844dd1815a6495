//! [`Compute`] on EC2: one RunInstances per launch with tags on create, filtered and paginated
//! DescribeInstances by mayfly's tags, chunked TerminateInstances. Each call first takes a
//! token from the matching client-side bucket ([`Ec2Limits`]). SDK types stop here: errors
//! are classified by AWS error code into [`ComputeError`], instances become
//! [`ManagedInstance`] with their state converted once.
//!
//! RunInstances goes through its own client with SDK retries off
//! ([`launch_client`](super::launch_client)): an unknown outcome is repaired by the next pass,
//! never retried blindly. A throttled RunInstances empties the client-side bucket, so the
//! next launch waits for EC2's bucket to refill.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    Instance, InstanceInterruptionBehavior, InstanceLifecycleType, InstanceMarketOptionsRequest,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceStateName, InstanceType,
    MarketType, ResourceType, ShutdownBehavior, SpotInstanceType, SpotMarketOptions, Tag,
    TagSpecification, VolumeType,
};
use aws_sdk_ec2::Client;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use tracing::{debug, info, instrument, warn};

use crate::names::tags;
use crate::ports::{
    Compute, ComputeError, InstanceState, LaunchRequest, Launched, ManagedInstance,
};
use crate::profile::CapacityType;
use crate::ratelimit::Ec2Limits;

/// Root device of the images mayfly launches (Amazon Linux).
const ROOT_DEVICE: &str = "/dev/xvda";
/// DescribeInstances page size: EC2's maximum, so a large fleet takes few calls.
const MAX_PAGE_SIZE: i32 = 1000;
/// EC2's smallest accepted MaxResults.
const MIN_PAGE_SIZE: i32 = 5;
/// TerminateInstances accepts at most this many ids per call.
const TERMINATE_CHUNK: usize = 1000;

/// EC2 behind the [`Compute`] port.
#[derive(Debug, Clone)]
pub struct Ec2Compute {
    client: Client,
    /// RunInstances only: `client` without SDK retries.
    launch_client: Client,
    limits: Arc<Ec2Limits>,
    page_size: i32,
}

impl Ec2Compute {
    /// EC2 through `client`; RunInstances through a copy of it with SDK retries off.
    pub fn new(client: Client, limits: Arc<Ec2Limits>) -> Self {
        Self {
            launch_client: super::launch_client(&client),
            client,
            limits,
            page_size: MAX_PAGE_SIZE,
        }
    }

    /// Sends RunInstances through `client` (e.g. [`Clients::ec2_launch`](super::Clients)).
    pub fn with_launch_client(mut self, client: Client) -> Self {
        self.launch_client = client;
        self
    }

    /// Sets DescribeInstances' MaxResults (clamped to EC2's 5..=1000; default 1000).
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = i32::try_from(page_size)
            .unwrap_or(MAX_PAGE_SIZE)
            .clamp(MIN_PAGE_SIZE, MAX_PAGE_SIZE);
        self
    }

    /// The client-side rate limits this adapter honours (the planner reads its launch budget).
    pub fn limits(&self) -> &Arc<Ec2Limits> {
        &self.limits
    }

    /// Every instance matching `filters`, following every page.
    async fn describe(&self, filters: Vec<Filter>) -> Result<Vec<ManagedInstance>, ComputeError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            self.limits.describe.acquire().await;
            let page = self
                .client
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .max_results(self.page_size)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(sdk_error)?;
            for reservation in page.reservations() {
                out.extend(reservation.instances().iter().filter_map(managed_instance));
            }
            match page.next_token() {
                Some(next) if !next.is_empty() => {
                    if token.as_deref() == Some(next) {
                        return Err(ComputeError::Transient {
                            code: "response".into(),
                            message: "DescribeInstances returned the same NextToken twice".into(),
                        });
                    }
                    token = Some(next.to_owned());
                }
                _ => break,
            }
        }
        out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        Ok(out)
    }
}

#[async_trait]
impl Compute for Ec2Compute {
    #[instrument(skip_all, fields(client_token = %req.client_token, rung = %req.rung))]
    async fn launch(&self, req: &LaunchRequest) -> Result<Launched, ComputeError> {
        let root_gib =
            i32::try_from(req.root_volume_gib).map_err(|_| ComputeError::Configuration {
                code: "InvalidRootVolumeSize".into(),
                message: format!("root volume of {} GiB is out of range", req.root_volume_gib),
            })?;
        let tag_list: Vec<Tag> = req
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let tag_spec = |resource| {
            TagSpecification::builder()
                .resource_type(resource)
                .set_tags(Some(tag_list.clone()))
                .build()
        };
        let mut call = self
            .launch_client
            .run_instances()
            .client_token(&req.client_token)
            .image_id(&req.image_id)
            .instance_type(InstanceType::from(req.rung.instance_type.as_str()))
            .subnet_id(&req.rung.subnet)
            .set_security_group_ids(Some(req.security_groups.clone()))
            .iam_instance_profile(
                IamInstanceProfileSpecification::builder()
                    .name(&req.instance_profile)
                    .build(),
            )
            .min_count(1)
            .max_count(1)
            .user_data(base64::engine::general_purpose::STANDARD.encode(&req.user_data))
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .http_put_response_hop_limit(1)
                    .build(),
            )
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(ROOT_DEVICE)
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_type(VolumeType::Gp3)
                            .volume_size(root_gib)
                            .encrypted(true)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            )
            .tag_specifications(tag_spec(ResourceType::Instance))
            .tag_specifications(tag_spec(ResourceType::Volume));
        if req.rung.capacity == CapacityType::Spot {
            call = call.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .spot_options(
                        SpotMarketOptions::builder()
                            .spot_instance_type(SpotInstanceType::OneTime)
                            .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                            .build(),
                    )
                    .build(),
            );
        }
        self.limits.run_instances.acquire().await;
        let out = call.send().await.map_err(sdk_error).inspect_err(|e| {
            if matches!(e, ComputeError::Throttled { .. }) {
                self.limits.run_instances.drain(tokio::time::Instant::now());
            }
        })?;
        let Some(instance) = out.instances().first() else {
            // EC2 accepted the call but named no instance: what it left behind is unknown, so
            // the caller's repair path (lookup by tags) has to find out.
            return Err(ComputeError::Transient {
                code: "response".into(),
                message: "RunInstances returned no instance".into(),
            });
        };
        let Some(instance_id) = instance.instance_id() else {
            return Err(ComputeError::Transient {
                code: "response".into(),
                message: "RunInstances returned an instance without an id".into(),
            });
        };
        let launched = Launched {
            instance_id: instance_id.to_owned(),
            availability_zone: instance
                .placement()
                .and_then(|p| p.availability_zone())
                .map(str::to_owned),
            launched_at: instance.launch_time().and_then(to_chrono),
        };
        info!(instance_id = %launched.instance_id, "Launched instance.");
        Ok(launched)
    }

    #[instrument(skip(self))]
    async fn list_managed(&self, cluster: &str) -> Result<Vec<ManagedInstance>, ComputeError> {
        let found = self
            .describe(vec![tag_filter(tags::CLUSTER, cluster)])
            .await?;
        debug!(count = found.len(), "Listed managed instances.");
        Ok(found)
    }

    #[instrument(skip(self))]
    async fn find_attempt(
        &self,
        cluster: &str,
        job_id: &str,
        attempt: u32,
    ) -> Result<Vec<ManagedInstance>, ComputeError> {
        self.describe(vec![
            tag_filter(tags::CLUSTER, cluster),
            tag_filter(tags::JOB_ID, job_id),
            tag_filter(tags::ATTEMPT, &attempt.to_string()),
        ])
        .await
    }

    #[instrument(skip_all, fields(count = instance_ids.len()))]
    async fn terminate(&self, instance_ids: &[String]) -> Result<(), ComputeError> {
        // Terminating is idempotent, so after an error the caller may resend every id.
        for chunk in instance_ids.chunks(TERMINATE_CHUNK) {
            self.limits.terminate_instances.acquire().await;
            self.client
                .terminate_instances()
                .set_instance_ids(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(sdk_error)?;
            info!(instance_ids = ?chunk, "Terminated instances.");
        }
        Ok(())
    }

    #[instrument(skip(self))]
    async fn set_tag(
        &self,
        instance_id: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), ComputeError> {
        self.limits.terminate_instances.acquire().await;
        match value {
            Some(v) => self
                .client
                .create_tags()
                .resources(instance_id)
                .tags(Tag::builder().key(key).value(v).build())
                .send()
                .await
                .map(|_| ())
                .map_err(sdk_error),
            None => self
                .client
                .delete_tags()
                .resources(instance_id)
                .tags(Tag::builder().key(key).build())
                .send()
                .await
                .map(|_| ())
                .map_err(sdk_error),
        }
    }

    #[instrument(skip(self))]
    async fn spot_price(
        &self,
        instance_type: &str,
        availability_zone: &str,
    ) -> Result<f64, ComputeError> {
        self.limits.describe.acquire().await;
        let out = self
            .client
            .describe_spot_price_history()
            .instance_types(InstanceType::from(instance_type))
            .availability_zone(availability_zone)
            .product_descriptions("Linux/UNIX")
            .start_time(aws_smithy_types::DateTime::from_secs(
                Utc::now().timestamp(),
            ))
            .max_results(MIN_PAGE_SIZE)
            .send()
            .await
            .map_err(sdk_error)?;
        // With StartTime now, EC2 answers the price in effect now; take the most recent.
        let latest = out
            .spot_price_history()
            .iter()
            .filter(|p| {
                p.availability_zone()
                    .is_none_or(|az| az == availability_zone)
            })
            .max_by_key(|p| p.timestamp().map(|t| (t.secs(), t.subsec_nanos())));
        let price =
            latest
                .and_then(|p| p.spot_price())
                .ok_or_else(|| ComputeError::Configuration {
                    code: "NoSpotPrice".into(),
                    message: format!(
                        "no spot price history for {instance_type} in {availability_zone}"
                    ),
                })?;
        price
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|p| p.is_finite() && *p >= 0.0)
            .ok_or_else(|| ComputeError::Transient {
                code: "response".into(),
                message: format!("spot price `{price}` is not a number"),
            })
    }
}

fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{key}"))
        .values(value)
        .build()
}

fn to_chrono(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

fn instance_state(name: Option<&InstanceStateName>) -> InstanceState {
    match name {
        Some(InstanceStateName::Pending) => InstanceState::Pending,
        Some(InstanceStateName::Running) => InstanceState::Running,
        Some(InstanceStateName::ShuttingDown) => InstanceState::ShuttingDown,
        Some(InstanceStateName::Terminated) => InstanceState::Terminated,
        Some(InstanceStateName::Stopping) => InstanceState::Stopping,
        Some(InstanceStateName::Stopped) => InstanceState::Stopped,
        other => {
            // A state this SDK does not know (or none): treat it as live, so the reconciler
            // still accounts for it and may reap it, rather than ignoring a billed instance.
            warn!(state = ?other, "Unknown instance state; treating it as pending.");
            InstanceState::Pending
        }
    }
}

fn managed_instance(i: &Instance) -> Option<ManagedInstance> {
    let Some(instance_id) = i.instance_id() else {
        warn!("DescribeInstances returned an instance without an id; skipped.");
        return None;
    };
    let tags: BTreeMap<String, String> = i
        .tags()
        .iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect();
    Some(ManagedInstance {
        instance_id: instance_id.to_owned(),
        state: instance_state(i.state().and_then(|s| s.name())),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        availability_zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_owned),
        spot: i.instance_lifecycle() == Some(&InstanceLifecycleType::Spot),
        launched_at: i.launch_time().and_then(to_chrono),
        tags,
    })
}

/// Classifies an SDK failure: service errors by their AWS error code, everything else
/// (timeouts, connection failures, unreadable responses) as transient.
pub fn sdk_error<E>(err: SdkError<E, HttpResponse>) -> ComputeError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let transient = |code: &str, err: &SdkError<E, HttpResponse>| ComputeError::Transient {
        code: code.to_owned(),
        message: DisplayErrorContext(err).to_string(),
    };
    match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let message = e.message().unwrap_or_default();
            match e.code() {
                Some(code) => classify(code, message),
                // No code at all (an HTML 500 page, say): name the HTTP status instead.
                None => ComputeError::Transient {
                    code: format!("HTTP{}", service.raw().status().as_u16()),
                    message: message.to_owned(),
                },
            }
        }
        SdkError::TimeoutError(_) => transient("timeout", &err),
        SdkError::DispatchFailure(_) => transient("dispatch", &err),
        SdkError::ResponseError(_) => transient("response", &err),
        // Building or signing the request failed before it was sent (e.g. credentials that
        // could not be loaded this time): nothing was launched, and a later try may work.
        SdkError::ConstructionFailure(_) => transient("construction", &err),
        _ => transient("sdk", &err),
    }
}

/// Classifies an EC2 error code (never its message text) into what the scheduler does next.
pub fn classify(code: &str, message: &str) -> ComputeError {
    let (owned_code, owned_message) = (code.to_owned(), message.to_owned());
    match code {
        "InsufficientInstanceCapacity"
        | "InsufficientCapacity"
        | "InsufficientHostCapacity"
        | "InsufficientReservedInstanceCapacity"
        | "SpotMaxPriceTooLow"
        | "MaxSpotInstanceCountExceeded"
        | "InsufficientFreeAddressesInSubnet"
        | "Unsupported" => ComputeError::Capacity {
            code: owned_code,
            message: owned_message,
        },
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "RequestThrottled" => {
            ComputeError::Throttled { code: owned_code }
        }
        "VcpuLimitExceeded" | "InstanceLimitExceeded" | "MaxIOPSLimitExceeded" => {
            ComputeError::Quota {
                code: owned_code,
                message: owned_message,
            }
        }
        "IdempotentParameterMismatch" => ComputeError::IdempotentMismatch {
            message: owned_message,
        },
        "UnauthorizedOperation"
        | "MissingParameter"
        | "OptInRequired"
        | "AuthFailure"
        | "NoSuchEntity" => ComputeError::Configuration {
            code: owned_code,
            message: owned_message,
        },
        c if c.starts_with("Invalid") => ComputeError::Configuration {
            code: owned_code,
            message: owned_message,
        },
        _ => ComputeError::Transient {
            code: owned_code,
            message: owned_message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(code: &str) -> &'static str {
        match classify(code, "m") {
            ComputeError::Capacity { .. } => "capacity",
            ComputeError::Throttled { .. } => "throttled",
            ComputeError::Quota { .. } => "quota",
            ComputeError::Configuration { .. } => "configuration",
            ComputeError::IdempotentMismatch { .. } => "mismatch",
            ComputeError::Transient { .. } => "transient",
        }
    }

    #[test]
    fn classifies_by_code() {
        let cases = [
            ("InsufficientInstanceCapacity", "capacity"),
            ("InsufficientCapacity", "capacity"),
            ("InsufficientHostCapacity", "capacity"),
            ("InsufficientReservedInstanceCapacity", "capacity"),
            ("SpotMaxPriceTooLow", "capacity"),
            ("MaxSpotInstanceCountExceeded", "capacity"),
            ("InsufficientFreeAddressesInSubnet", "capacity"),
            ("Unsupported", "capacity"),
            ("RequestLimitExceeded", "throttled"),
            ("Throttling", "throttled"),
            ("ThrottlingException", "throttled"),
            ("RequestThrottled", "throttled"),
            ("VcpuLimitExceeded", "quota"),
            ("InstanceLimitExceeded", "quota"),
            ("MaxIOPSLimitExceeded", "quota"),
            ("IdempotentParameterMismatch", "mismatch"),
            ("InvalidAMIID.NotFound", "configuration"),
            ("InvalidSubnetID.NotFound", "configuration"),
            ("InvalidParameterValue", "configuration"),
            ("InvalidGroup.NotFound", "configuration"),
            ("UnauthorizedOperation", "configuration"),
            ("MissingParameter", "configuration"),
            ("OptInRequired", "configuration"),
            ("AuthFailure", "configuration"),
            ("NoSuchEntity", "configuration"),
            ("InternalError", "transient"),
            ("ServiceUnavailable", "transient"),
            ("Unavailable", "transient"),
            ("SomethingNew", "transient"),
            ("", "transient"),
        ];
        for (code, want) in cases {
            assert_eq!(kind(code), want, "{code}");
        }
    }

    #[test]
    fn classification_keeps_code_and_message() {
        assert_eq!(
            classify(
                "InvalidSubnetID.NotFound",
                "The subnet ID 'subnet-x' does not exist"
            ),
            ComputeError::Configuration {
                code: "InvalidSubnetID.NotFound".into(),
                message: "The subnet ID 'subnet-x' does not exist".into(),
            }
        );
        assert_eq!(
            classify("RequestLimitExceeded", "Request limit exceeded."),
            ComputeError::Throttled {
                code: "RequestLimitExceeded".into()
            }
        );
        // The message never decides: a capacity-sounding message on an unknown code is transient.
        assert!(matches!(
            classify("InternalError", "InsufficientInstanceCapacity"),
            ComputeError::Transient { .. }
        ));
    }

    #[test]
    fn converts_instances_once() {
        let i = Instance::builder()
            .instance_id("i-0abc")
            .instance_type(InstanceType::M5Large)
            .instance_lifecycle(InstanceLifecycleType::Spot)
            .state(
                aws_sdk_ec2::types::InstanceState::builder()
                    .name(InstanceStateName::ShuttingDown)
                    .build(),
            )
            .launch_time(aws_smithy_types::DateTime::from_secs(1_700_000_000))
            .tags(Tag::builder().key(tags::CLUSTER).value("c1").build())
            .tags(Tag::builder().value("no key").build())
            .build();
        let m = managed_instance(&i).expect("has an id");
        assert_eq!(m.instance_id, "i-0abc");
        assert_eq!(m.instance_type, "m5.large");
        assert_eq!(m.state, InstanceState::ShuttingDown);
        assert!(m.spot);
        assert_eq!(m.launched_at.map(|t| t.timestamp()), Some(1_700_000_000));
        assert_eq!(m.tag(tags::CLUSTER), Some("c1"));
        assert_eq!(m.tags.len(), 1);
        assert!(managed_instance(&Instance::builder().build()).is_none());
        assert_eq!(
            instance_state(Some(&InstanceStateName::from("hibernating"))),
            InstanceState::Pending
        );
    }
}
