//! The emulator's network for the benchmarks' launches: its default subnet, its default
//! security group and an Amazon Linux 2 image it knows, the lowest id of each so that runs
//! agree. Shared by the examples through `#[path]`.

use aws_sdk_ec2::types::Filter;

/// Where a benchmark's instances launch in the emulator.
#[derive(Debug)]
pub struct Network {
    pub subnet: String,
    pub security_group: String,
    pub image: String,
}

pub async fn emulator_network(ec2: &aws_sdk_ec2::Client) -> Result<Network, String> {
    let subnets = ec2
        .describe_subnets()
        .filters(
            Filter::builder()
                .name("default-for-az")
                .values("true")
                .build(),
        )
        .send()
        .await
        .map_err(|e| format!("describe subnets: {e:?}"))?;
    let subnet = subnets
        .subnets()
        .iter()
        .filter_map(|s| s.subnet_id())
        .min()
        .ok_or("no default subnet")?
        .to_owned();
    let groups = ec2
        .describe_security_groups()
        .filters(
            Filter::builder()
                .name("group-name")
                .values("default")
                .build(),
        )
        .send()
        .await
        .map_err(|e| format!("describe security groups: {e:?}"))?;
    let security_group = groups
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id())
        .min()
        .ok_or("no default security group")?
        .to_owned();
    let images = ec2
        .describe_images()
        .filters(
            Filter::builder()
                .name("name")
                .values("amzn2-ami-hvm-*-x86_64-gp2")
                .build(),
        )
        .send()
        .await
        .map_err(|e| format!("describe images: {e:?}"))?;
    let image = images
        .images()
        .iter()
        .filter_map(|i| i.image_id())
        .min()
        .ok_or("no Amazon Linux 2 image")?
        .to_owned();
    Ok(Network {
        subnet,
        security_group,
        image,
    })
}
