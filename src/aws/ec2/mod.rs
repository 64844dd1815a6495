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
//!
//! The root volume is the image's own root device (read once per image, `images.rs`), sized
//! and encrypted, with the request's KMS key when it names one.
//!
//! The parts: this file launches, terminates, tags and prices; `images.rs` reads images' root
//! devices; `describe.rs` reads instances back and converts them; `errors.rs` classifies SDK
//! failures; `checks.rs` is what `preflight` asks of EC2 (the launch's own RunInstances as a
//! dry run, and lookups).

mod checks;
mod describe;
mod errors;
mod images;

pub use errors::{classify, sdk_error, sdk_error_on};

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, HttpTokensState, IamInstanceProfileSpecification,
    InstanceInterruptionBehavior, InstanceMarketOptionsRequest, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, InstanceType, MarketType, ResourceType, ShutdownBehavior,
    SpotInstanceType, SpotMarketOptions, Tag, TagSpecification, VolumeType,
};
use aws_sdk_ec2::Client;
use base64::Engine as _;
use chrono::Utc;
use tracing::{debug, info, instrument};

use describe::{tag_filter, to_chrono};
use images::RootDevices;

use crate::names::tags;
use crate::ports::{
    Compute, ComputeError, GroupCount, GroupMember, LaunchRequest, Launched, ManagedInstance,
};
use crate::profile::CapacityType;
use crate::ratelimit::Ec2Limits;

/// The device the root mapping goes on when DescribeImages does not know the image. EC2 then
/// refuses the launch for the image itself, so the guess never reaches an instance on AWS; it
/// keeps the request whole (sized and encrypted) for emulators that launch any image id.
const UNKNOWN_IMAGE_ROOT_DEVICE: &str = "/dev/xvda";
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
    root_devices: RootDevices,
}

impl Ec2Compute {
    /// EC2 through `client`; RunInstances through a copy of it with SDK retries off.
    pub fn new(client: Client, limits: Arc<Ec2Limits>) -> Self {
        Self {
            launch_client: super::launch_client(&client),
            client,
            limits,
            page_size: MAX_PAGE_SIZE,
            root_devices: RootDevices::default(),
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
}

impl Ec2Compute {
    /// The RunInstances call of `req` on `client`, as a launch makes it: `preflight`'s dry
    /// run sends the very same call with `DryRun` set.
    async fn run_instances_call(
        &self,
        client: &Client,
        req: &LaunchRequest,
    ) -> Result<RunInstancesFluentBuilder, ComputeError> {
        let root_gib =
            i32::try_from(req.root_volume_gib).map_err(|_| ComputeError::Configuration {
                code: "InvalidRootVolumeSize".into(),
                message: format!("root volume of {} GiB is out of range", req.root_volume_gib),
            })?;
        let root_device = self
            .root_device(&req.image_id)
            .await?
            .unwrap_or_else(|| UNKNOWN_IMAGE_ROOT_DEVICE.to_owned());
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
        let mut call = client
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
                    .device_name(root_device)
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_type(VolumeType::Gp3)
                            .volume_size(root_gib)
                            .encrypted(true)
                            .set_kms_key_id(req.root_volume_kms_key.clone())
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
        Ok(call)
    }
}

impl Ec2Compute {
    /// Sends `call` (a RunInstances of `instances` instances, at most) after taking one call
    /// from the request bucket and `instances` from the resource bucket; returns the
    /// instances EC2 launched.
    async fn send_run_instances(
        &self,
        req: &LaunchRequest,
        call: RunInstancesFluentBuilder,
        instances: u32,
    ) -> Result<Vec<aws_sdk_ec2::types::Instance>, ComputeError> {
        self.limits.acquire_run_instances(instances).await;
        let resource = || {
            format!(
                "image {}, subnet {}, security groups {}, instance profile {}",
                req.image_id,
                req.rung.subnet,
                req.security_groups.join(" "),
                req.instance_profile
            )
        };
        let out = call
            .send()
            .await
            .map_err(sdk_error_on("RunInstances", resource))
            .inspect_err(|e| {
                if matches!(e, ComputeError::Throttled { .. }) {
                    self.limits.run_instances.drain(tokio::time::Instant::now());
                }
            })?;
        Ok(out.instances().to_vec())
    }
}

/// What EC2 returned of one launched instance.
fn launched(instance: &aws_sdk_ec2::types::Instance) -> Result<Launched, ComputeError> {
    let Some(instance_id) = instance.instance_id() else {
        return Err(ComputeError::Transient {
            code: "response".into(),
            message: "RunInstances returned an instance without an id".into(),
        });
    };
    Ok(Launched {
        instance_id: instance_id.to_owned(),
        availability_zone: instance
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_owned),
        launched_at: instance.launch_time().and_then(to_chrono),
    })
}

#[async_trait]
impl Compute for Ec2Compute {
    #[instrument(skip_all, fields(client_token = %req.client_token, rung = %req.rung))]
    async fn launch(&self, req: &LaunchRequest) -> Result<Launched, ComputeError> {
        let call = self.run_instances_call(&self.launch_client, req).await?;
        let instances = self.send_run_instances(req, call, 1).await?;
        let Some(instance) = instances.first() else {
            // EC2 accepted the call but named no instance: what it left behind is unknown, so
            // the caller's repair path (lookup by tags) has to find out.
            return Err(ComputeError::Transient {
                code: "response".into(),
                message: "RunInstances returned no instance".into(),
            });
        };
        let launched = launched(instance)?;
        info!(instance_id = %launched.instance_id, "Launched instance.");
        Ok(launched)
    }

    #[instrument(skip_all, fields(client_token = %req.client_token, rung = %req.rung, min = count.min, max = count.max))]
    async fn launch_group(
        &self,
        req: &LaunchRequest,
        count: GroupCount,
    ) -> Result<Vec<GroupMember>, ComputeError> {
        let call = self
            .run_instances_call(&self.launch_client, req)
            .await?
            .min_count(i32::try_from(count.min).unwrap_or(1))
            .max_count(i32::try_from(count.max).unwrap_or(1));
        let instances = self.send_run_instances(req, call, count.max).await?;
        if instances.is_empty() {
            return Err(ComputeError::Transient {
                code: "response".into(),
                message: "RunInstances returned no instance".into(),
            });
        }
        let mut members = Vec::with_capacity(instances.len());
        for (i, instance) in instances.iter().enumerate() {
            // EC2 numbers a call's instances from 0; the position stands in if it does not say.
            let launch_index = instance
                .ami_launch_index()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(i as u32);
            members.push(GroupMember {
                launch_index,
                launched: launched(instance)?,
            });
        }
        info!(launched = members.len(), "Launched a group of instances.");
        Ok(members)
    }

    #[instrument(skip(self))]
    async fn find_group(
        &self,
        cluster: &str,
        group: &str,
    ) -> Result<Vec<ManagedInstance>, ComputeError> {
        self.describe(vec![
            tag_filter(tags::CLUSTER, cluster),
            tag_filter(tags::GROUP, group),
        ])
        .await
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
            self.limits.acquire_terminate(chunk.len() as u32).await;
            self.client
                .terminate_instances()
                .set_instance_ids(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(sdk_error_on("TerminateInstances", || {
                    format!("instances {}", chunk.join(" "))
                }))?;
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
                .map_err(sdk_error_on("CreateTags", || {
                    format!("instance {instance_id}")
                })),
            None => self
                .client
                .delete_tags()
                .resources(instance_id)
                .tags(Tag::builder().key(key).build())
                .send()
                .await
                .map(|_| ())
                .map_err(sdk_error_on("DeleteTags", || {
                    format!("instance {instance_id}")
                })),
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
            .map_err(sdk_error_on("DescribeSpotPriceHistory", || {
                format!("{instance_type} in {availability_zone}")
            }))?;
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
