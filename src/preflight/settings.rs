//! The checks of a payer's launch settings against the account: the image and the
//! architecture of each type, subnets and security groups in one VPC, the instance profile
//! and its role, each type offered in each subnet's zone, spot prices, the account's vCPU
//! quotas, and the spot service-linked role.

use std::collections::{BTreeMap, BTreeSet};

use super::{Account, Check, Finding, Findings, Scope, SPOT_ROLE};
use crate::catalog::{Arch, Catalog, InstanceType};
use crate::ports::{AwsError, SecurityGroupInfo, SubnetInfo};
use crate::profile::{CapacityType, Payer};
use crate::quota::{AccountQuotas, QuotaPool};
use crate::scheduler::Scheduler;
use crate::sizing::Rung;

/// Lookups made once per id, shared by every payer naming it.
#[derive(Default)]
pub(super) struct Seen {
    subnets: BTreeMap<String, Result<SubnetInfo, AwsError>>,
    groups: BTreeMap<String, Result<SecurityGroupInfo, AwsError>>,
}

/// The checks of the payer's launch settings and of each rung's type in its zone.
pub(super) async fn check_payer(
    s: &Scheduler,
    account: Account<'_>,
    payer: &Payer,
    ladders: &[(String, Vec<Rung>)],
    seen: &mut Seen,
    found: &mut Findings,
) {
    let id = payer.id();
    let launch = &payer.profile.launch;
    match account.ec2.image(&launch.image_id).await {
        Err(e) => found.failed(id, Scope::payer(), Check::Image, &e),
        Ok(image) => {
            if image.state.as_deref().is_some_and(|st| st != "available") {
                found.problems.push(Finding::new(
                    id,
                    Scope::payer(),
                    Check::Image,
                    "ImageNotAvailable",
                    format!(
                        "image {} is {}",
                        launch.image_id,
                        image.state.as_deref().unwrap_or_default()
                    ),
                ));
            }
            let arch = image.architecture.as_deref().unwrap_or("unknown");
            check_architecture(id, &launch.image_id, arch, ladders, s.catalog, found);
        }
    }
    let mut subnets = Vec::new();
    for subnet in &launch.subnets {
        let got = match seen.subnets.get(subnet) {
            Some(known) => known.clone(),
            None => {
                let got = account.ec2.subnet(subnet).await;
                seen.subnets.insert(subnet.clone(), got.clone());
                got
            }
        };
        match got {
            Ok(info) => subnets.push(info),
            Err(e) => found.failed(id, Scope::subnet(subnet), Check::Subnet, &e),
        }
    }
    let mut groups = Vec::new();
    for group in &launch.security_groups {
        let got = match seen.groups.get(group) {
            Some(known) => known.clone(),
            None => {
                let got = account.ec2.security_group(group).await;
                seen.groups.insert(group.clone(), got.clone());
                got
            }
        };
        match got {
            Ok(info) => groups.push(info),
            Err(e) => found.failed(id, Scope::payer(), Check::SecurityGroup, &e),
        }
    }
    for subnet in &subnets {
        for group in groups.iter().filter(|g| g.vpc_id != subnet.vpc_id) {
            found.problems.push(Finding::new(
                id,
                Scope::subnet(&subnet.subnet_id),
                Check::Network,
                "SecurityGroupVpcMismatch",
                format!(
                    "security group {} is in {}, subnet {} in {}: a launch there is refused",
                    group.group_id,
                    group.vpc_id.as_deref().unwrap_or("no VPC"),
                    subnet.subnet_id,
                    subnet.vpc_id.as_deref().unwrap_or("no VPC")
                ),
            ));
        }
    }
    check_instance_profile(s, account, id, &launch.instance_profile, found).await;
    check_offerings(account, id, ladders, &subnets, found).await;
}

fn check_architecture(
    payer: &str,
    image_id: &str,
    arch: &str,
    ladders: &[(String, Vec<Rung>)],
    catalog: &Catalog,
    found: &mut Findings,
) {
    let runs = |t: &InstanceType| match arch {
        "x86_64" => t.supports(Arch::X86_64),
        "arm64" => t.supports(Arch::Arm64),
        _ => false,
    };
    for (kind, ladder) in ladders {
        let types: BTreeSet<&str> = ladder.iter().map(|r| r.instance_type.as_str()).collect();
        for name in types {
            let Some(t) = catalog.get(name) else { continue };
            if runs(t) {
                continue;
            }
            let archs: Vec<&str> = t.architectures.iter().map(|a| a.as_str()).collect();
            found.problems.push(Finding::new(
                payer,
                Scope {
                    instance_type: Some(name.to_owned()),
                    ..Scope::kind(kind)
                },
                Check::Architecture,
                "ArchitectureMismatch",
                format!(
                    "{name} runs {}; image {image_id} is {arch}",
                    archs.join(" or ")
                ),
            ));
        }
    }
}

async fn check_instance_profile(
    s: &Scheduler,
    account: Account<'_>,
    payer: &str,
    name: &str,
    found: &mut Findings,
) {
    let profile = match account.iam.instance_profile(name).await {
        Ok(p) => p,
        Err(e) => return found.failed(payer, Scope::payer(), Check::InstanceProfile, &e),
    };
    let Some(role) = profile.roles.first() else {
        found.problems.push(Finding::new(
            payer,
            Scope::payer(),
            Check::InstanceProfile,
            "InstanceProfileWithoutRole",
            format!(
                "instance profile {name} holds no role: the instance could not report its events"
            ),
        ));
        return;
    };
    // infra/mayfly.yaml lets the scheduler pass the deployment's instance role and the roles
    // under its IAM path (infra/payer.yaml's).
    let granted = format!("{}-instance", s.settings.cluster);
    let path = crate::names::payer_role_path(&s.settings.cluster);
    let under_path = profile.role_paths.first() == Some(&path);
    if *role != granted && !under_path {
        found.warnings.push(Finding::new(
            payer,
            Scope::payer(),
            Check::PassRole,
            "PassRoleNotGranted",
            format!(
                "instance profile {name} holds role {role}; infra/mayfly.yaml lets the scheduler pass only {granted} and the roles under {path} (create the payer's role with infra/payer.yaml)"
            ),
        ));
    }
}

async fn check_offerings(
    account: Account<'_>,
    payer: &str,
    ladders: &[(String, Vec<Rung>)],
    subnets: &[SubnetInfo],
    found: &mut Findings,
) {
    let zone_of: BTreeMap<&str, &str> = subnets
        .iter()
        .filter_map(|s| Some((s.subnet_id.as_str(), s.availability_zone.as_deref()?)))
        .collect();
    let types: BTreeSet<String> = ladders
        .iter()
        .flat_map(|(_, l)| l.iter().map(|r| r.instance_type.clone()))
        .collect();
    let zones: BTreeSet<String> = zone_of.values().map(|z| (*z).to_owned()).collect();
    if types.is_empty() || zones.is_empty() {
        return;
    }
    let types: Vec<String> = types.into_iter().collect();
    let zones: Vec<String> = zones.into_iter().collect();
    let offered = match account.ec2.offerings(&types, &zones).await {
        Ok(o) => o,
        Err(e) => return found.failed(payer, Scope::payer(), Check::Offering, &e),
    };
    let mut spot_checked = BTreeSet::new();
    for (kind, ladder) in ladders {
        let mut reported = BTreeSet::new();
        for rung in ladder {
            let Some(zone) = zone_of.get(rung.subnet.as_str()) else {
                continue;
            };
            let key = (rung.instance_type.clone(), (*zone).to_owned());
            if !offered.contains(&key) {
                if reported.insert(key) {
                    found.problems.push(Finding::new(
                        payer,
                        Scope {
                            instance_type: Some(rung.instance_type.clone()),
                            subnet: Some(rung.subnet.clone()),
                            ..Scope::kind(kind)
                        },
                        Check::Offering,
                        "InstanceTypeNotOffered",
                        format!(
                            "{} is not offered in {zone}, the zone of {}",
                            rung.instance_type, rung.subnet
                        ),
                    ));
                }
                continue;
            }
            if rung.capacity == CapacityType::Spot && spot_checked.insert(key.clone()) {
                check_spot_price(account, payer, kind, rung, zone, found).await;
            }
        }
    }
}

/// A spot rung whose prices cannot be read still launches; its attempts record the
/// on-demand price instead, so this is a warning.
async fn check_spot_price(
    account: Account<'_>,
    payer: &str,
    kind: &str,
    rung: &Rung,
    zone: &str,
    found: &mut Findings,
) {
    let scope = Scope {
        instance_type: Some(rung.instance_type.clone()),
        subnet: Some(rung.subnet.clone()),
        capacity: Some(CapacityType::Spot),
        ..Scope::kind(kind)
    };
    match account
        .ec2
        .spot_price_listed(&rung.instance_type, zone)
        .await
    {
        Ok(true) => {}
        Ok(false) => found.warnings.push(Finding::new(
            payer,
            scope,
            Check::SpotPrice,
            "NoSpotPriceHistory",
            format!(
                "no spot price listed for {} in {zone}: its attempts record the on-demand price",
                rung.instance_type
            ),
        )),
        Err(e) if e.is_transient() => {
            found
                .unchecked
                .push(Finding::from_error(payer, scope, Check::SpotPrice, &e));
        }
        Err(e) => found.warnings.push(Finding::new(
            payer,
            scope,
            Check::SpotPrice,
            &e.code,
            format!(
                "spot prices cannot be read ({}): attempts record the on-demand price",
                e.message
            ),
        )),
    }
}

/// A rung whose type is larger than its whole quota can never launch.
pub(super) fn check_quotas(
    payer: &Payer,
    ladders: &[(String, Vec<Rung>)],
    quotas: &AccountQuotas,
    catalog: &Catalog,
    found: &mut Findings,
) {
    for (kind, ladder) in ladders {
        let mut reported = BTreeSet::new();
        for rung in ladder {
            let (Some(pool), Some(t)) = (
                QuotaPool::of(&rung.instance_type, rung.capacity),
                catalog.get(&rung.instance_type),
            ) else {
                continue;
            };
            let Some(limit) = quotas.get(pool) else {
                continue;
            };
            if t.vcpus > limit && reported.insert((t.name.clone(), rung.capacity)) {
                found.problems.push(Finding::new(
                    payer.id(),
                    Scope {
                        instance_type: Some(t.name.clone()),
                        capacity: Some(rung.capacity),
                        ..Scope::kind(kind)
                    },
                    Check::Quota,
                    "VcpuLimitExceeded",
                    format!(
                        "{} needs {} vCPUs; the account's quota {pool} is {limit}",
                        t.name, t.vcpus
                    ),
                ));
            }
        }
    }
}

/// The spot service-linked role: EC2 creates it on the first spot launch if the launching
/// role may (`iam:CreateServiceLinkedRole` for `spot.amazonaws.com`).
pub(super) async fn check_spot_role(account: Account<'_>, found: &mut Findings) {
    match account.iam.role_exists(SPOT_ROLE).await {
        Ok(true) => {}
        Ok(false) => found.warnings.push(Finding::new(
            "*",
            Scope::payer(),
            Check::SpotRole,
            "NoSuchEntity",
            format!(
                "{SPOT_ROLE} does not exist: the first spot launch creates it only if the scheduler role may iam:CreateServiceLinkedRole for spot.amazonaws.com; or create it once: aws iam create-service-linked-role --aws-service-name spot.amazonaws.com"
            ),
        )),
        Err(e) => found
            .unchecked
            .push(Finding::from_error("*", Scope::payer(), Check::SpotRole, &e)),
    }
}
