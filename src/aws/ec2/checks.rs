//! [`LaunchChecks`] on EC2: what `preflight` asks before any launch. The dry run is the
//! launch's own RunInstances call ([`Ec2Compute::run_instances_call`]) with `DryRun` set; the
//! lookups name one id each, so EC2 itself answers which one does not exist.

use std::collections::BTreeSet;

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, InstanceType, LocationType};
use chrono::Utc;

use super::Ec2Compute;
use crate::aws::aws_error;
use crate::ports::{
    AwsError, ComputeError, ImageInfo, LaunchChecks, LaunchRequest, SecurityGroupInfo, SubnetInfo,
};

/// EC2's answer to a dry run that would have succeeded.
const DRY_RUN_OK: &str = "DryRunOperation";

fn not_found(code: &str, what: &str, id: &str) -> AwsError {
    AwsError {
        code: code.to_owned(),
        message: format!("{what} '{id}' was not in EC2's answer"),
    }
}

#[async_trait]
impl LaunchChecks for Ec2Compute {
    async fn dry_run(&self, req: &LaunchRequest) -> Result<(), AwsError> {
        let call = self
            .run_instances_call(&self.client, req)
            .await
            .map_err(|e| match e {
                ComputeError::Configuration { code, message } => AwsError { code, message },
                other => AwsError {
                    code: "request".into(),
                    message: other.to_string(),
                },
            })?;
        // A dry run is throttled like RunInstances itself.
        self.limits.run_instances.acquire().await;
        match call.dry_run(true).send().await.map_err(aws_error) {
            Err(e) if e.code == DRY_RUN_OK => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Err(AwsError {
                code: "response".into(),
                message: "RunInstances with DryRun answered as if it had launched".into(),
            }),
        }
    }

    async fn image(&self, image_id: &str) -> Result<ImageInfo, AwsError> {
        self.limits.describe.acquire().await;
        let out = self
            .client
            .describe_images()
            .image_ids(image_id)
            .send()
            .await
            .map_err(aws_error)?;
        let image = out
            .images()
            .iter()
            .find(|i| i.image_id() == Some(image_id))
            .ok_or_else(|| not_found("InvalidAMIID.NotFound", "image", image_id))?;
        Ok(ImageInfo {
            image_id: image_id.to_owned(),
            architecture: image.architecture().map(|a| a.as_str().to_owned()),
            root_device_name: image.root_device_name().map(str::to_owned),
            state: image.state().map(|s| s.as_str().to_owned()),
        })
    }

    async fn subnet(&self, subnet_id: &str) -> Result<SubnetInfo, AwsError> {
        self.limits.describe.acquire().await;
        let out = self
            .client
            .describe_subnets()
            .subnet_ids(subnet_id)
            .send()
            .await
            .map_err(aws_error)?;
        let subnet = out
            .subnets()
            .iter()
            .find(|s| s.subnet_id() == Some(subnet_id))
            .ok_or_else(|| not_found("InvalidSubnetID.NotFound", "subnet", subnet_id))?;
        Ok(SubnetInfo {
            subnet_id: subnet_id.to_owned(),
            vpc_id: subnet.vpc_id().map(str::to_owned),
            availability_zone: subnet.availability_zone().map(str::to_owned),
        })
    }

    async fn security_group(&self, group_id: &str) -> Result<SecurityGroupInfo, AwsError> {
        self.limits.describe.acquire().await;
        let out = self
            .client
            .describe_security_groups()
            .group_ids(group_id)
            .send()
            .await
            .map_err(aws_error)?;
        let group = out
            .security_groups()
            .iter()
            .find(|g| g.group_id() == Some(group_id))
            .ok_or_else(|| not_found("InvalidGroup.NotFound", "security group", group_id))?;
        Ok(SecurityGroupInfo {
            group_id: group_id.to_owned(),
            vpc_id: group.vpc_id().map(str::to_owned),
        })
    }

    async fn offerings(
        &self,
        types: &[String],
        zones: &[String],
    ) -> Result<BTreeSet<(String, String)>, AwsError> {
        let mut found = BTreeSet::new();
        let mut token: Option<String> = None;
        loop {
            self.limits.describe.acquire().await;
            let page = self
                .client
                .describe_instance_type_offerings()
                .location_type(LocationType::AvailabilityZone)
                .filters(
                    Filter::builder()
                        .name("instance-type")
                        .set_values(Some(types.to_vec()))
                        .build(),
                )
                .filters(
                    Filter::builder()
                        .name("location")
                        .set_values(Some(zones.to_vec()))
                        .build(),
                )
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(aws_error)?;
            for o in page.instance_type_offerings() {
                if let (Some(t), Some(zone)) = (o.instance_type(), o.location()) {
                    found.insert((t.as_str().to_owned(), zone.to_owned()));
                }
            }
            match page.next_token() {
                Some(next) if !next.is_empty() && token.as_deref() != Some(next) => {
                    token = Some(next.to_owned());
                }
                _ => break,
            }
        }
        Ok(found)
    }

    async fn spot_price_listed(&self, instance_type: &str, zone: &str) -> Result<bool, AwsError> {
        self.limits.describe.acquire().await;
        let out = self
            .client
            .describe_spot_price_history()
            .instance_types(InstanceType::from(instance_type))
            .availability_zone(zone)
            .product_descriptions("Linux/UNIX")
            .start_time(aws_smithy_types::DateTime::from_secs(
                Utc::now().timestamp(),
            ))
            .max_results(super::MIN_PAGE_SIZE)
            .send()
            .await
            .map_err(aws_error)?;
        Ok(out
            .spot_price_history()
            .iter()
            .any(|p| p.spot_price().is_some() && p.availability_zone().is_none_or(|az| az == zone)))
    }
}
