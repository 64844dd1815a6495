//! `mayfly preflight`: every rung of every payer's ladders checked against the account
//! without launching anything, so a broken payer is found before its jobs queue up.
//!
//! Per payer: the image exists, is available and its architecture runs each type; the
//! subnets and security groups exist and share a VPC; the instance profile exists, holds a
//! role, and that role is the one the scheduler may pass. Per kind and rung (the ladders of
//! the smallest and the largest job): the type is offered in the subnet's zone, the account's
//! vCPU quota of its family fits it, spot prices are listed where spot is used, the user-data
//! renders, and RunInstances with `DryRun` — the launch's own request — is accepted. Once: the
//! spot service-linked role. A dry-run failure already explained by a finding about the same
//! rungs is not repeated; the rest are grouped per payer, kind and code.

mod report;

pub use report::{Check, Finding, PreflightReport, QuotasFound, Scope};

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;

use crate::catalog::{Arch, Catalog, InstanceType};
use crate::job::{Job, JobRequest};
use crate::ports::{
    AwsError, IdentityChecks, LaunchChecks, QuotaReader, SecurityGroupInfo, SubnetInfo,
};
use crate::profile::{CapacityType, Payer};
use crate::quota::{pools_for, AccountQuotas, QuotaPool};
use crate::scheduler::{request_for, Scheduler};
use crate::sizing::{self, Rung};

/// The service-linked role EC2 needs to launch spot instances.
pub const SPOT_ROLE: &str = "AWSServiceRoleForEC2Spot";

/// What an emulator endpoint (moto) cannot check, said instead of reporting them as passed.
pub const EMULATOR_LIMITS: &[&str] = &[
    "RunInstances with DryRun: the emulator checks only that the instance profile exists; AWS also evaluates the caller's permissions (iam:PassRole of the profile's role, the cluster-tag conditions, KMS keys) and the launch's parameters",
    "IAM policies are not evaluated, so no permission is checked",
    "the spot service-linked role is never needed by the emulator's spot launches",
    "spot price history is synthetic",
    "Service Quotas holds no EC2 quotas: the vCPU quotas cannot be read",
    "instance-type offerings and images are the emulator's bundled data, not this account's",
];

/// The account, as preflight reads it.
#[derive(Clone, Copy)]
pub struct Account<'a> {
    pub ec2: &'a dyn LaunchChecks,
    pub iam: &'a dyn IdentityChecks,
    pub quotas: &'a dyn QuotaReader,
}

impl std::fmt::Debug for Account<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account").finish_non_exhaustive()
    }
}

/// Findings as they are made, sorted into the report's three lists.
#[derive(Debug, Default)]
struct Findings {
    problems: Vec<Finding>,
    warnings: Vec<Finding>,
    unchecked: Vec<Finding>,
}

impl Findings {
    /// A failed lookup: a problem, or unchecked when the call got no usable answer.
    fn failed(&mut self, payer: &str, scope: Scope, check: Check, e: &AwsError) {
        let f = Finding::from_error(payer, scope, check, e);
        if e.is_transient() || is_denied(&e.code) {
            self.unchecked.push(f);
        } else {
            self.problems.push(f);
        }
    }

    fn covered(&self, payer: &str, kind: &str, rung: &Rung) -> bool {
        self.problems
            .iter()
            .any(|p| p.payer == payer && p.scope.covers(kind, rung))
    }
}

/// Denied to the caller: the check needs a permission the caller lacks. For a lookup, that
/// says nothing about the setting looked up.
fn is_denied(code: &str) -> bool {
    matches!(
        code,
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation"
    )
}

/// Lookups made once per id, shared by every payer naming it.
#[derive(Default)]
struct Seen {
    subnets: BTreeMap<String, Result<SubnetInfo, AwsError>>,
    groups: BTreeMap<String, Result<SecurityGroupInfo, AwsError>>,
}

/// Checks `payers` against the account; `invalid` are stored profiles that do not validate
/// (each a problem). `emulator`: the endpoint is not AWS's own, so its limits are listed.
pub async fn preflight(
    s: &Scheduler,
    account: Account<'_>,
    payers: &[Payer],
    invalid: &[String],
    emulator: bool,
) -> PreflightReport {
    let mut found = Findings::default();
    for why in invalid {
        found.problems.push(Finding::new(
            "-",
            Scope::payer(),
            Check::Profile,
            "InvalidProfile",
            why.clone(),
        ));
    }
    let quotas = match account
        .quotas
        .vcpu_quotas(&pools_for(payers, s.catalog))
        .await
    {
        Ok(q) => Ok(q),
        Err(e) => Err(e.to_string()),
    };
    let mut seen = Seen::default();
    let (mut kinds, mut rungs) = (0, 0);
    for payer in payers {
        let ladders = ladders(payer, s.catalog);
        kinds += ladders.len() as u32;
        check_payer(s, account, payer, &ladders, &mut seen, &mut found).await;
        if let Ok(q) = &quotas {
            check_quotas(payer, &ladders, q, s.catalog, &mut found);
        }
        rungs += dry_runs(s, account, payer, &ladders, &mut found).await;
    }
    if payers
        .iter()
        .any(|p| ladders(p, s.catalog).iter().any(|(_, l)| has_spot(l)))
    {
        check_spot_role(account, &mut found).await;
    }
    PreflightReport {
        deployment: s.settings.cluster.clone(),
        payers: payers.iter().map(|p| p.id().to_owned()).collect(),
        kinds,
        rungs,
        problems: found.problems,
        warnings: found.warnings,
        unchecked: found.unchecked,
        vcpu_quotas: match quotas {
            Ok(quotas) => QuotasFound::Account { quotas },
            Err(why) => QuotasFound::Unknown { why },
        },
        emulator_limits: if emulator {
            EMULATOR_LIMITS.iter().map(|l| (*l).to_owned()).collect()
        } else {
            Vec::new()
        },
    }
}

fn has_spot(ladder: &[Rung]) -> bool {
    ladder.iter().any(|r| r.capacity == CapacityType::Spot)
}

/// Each kind's rungs: the ladders of its smallest and its largest job, merged in order.
fn ladders(payer: &Payer, catalog: &Catalog) -> Vec<(String, Vec<Rung>)> {
    payer
        .profile
        .kinds
        .iter()
        .map(|(name, kind)| {
            let mut types: Vec<&InstanceType> = Vec::new();
            for input in [None, Some(u64::MAX)] {
                for t in sizing::choose_types(
                    catalog,
                    &kind.compute,
                    input,
                    payer.profile.caps.max_vcpus,
                ) {
                    if !types.iter().any(|x| x.name == t.name) {
                        types.push(t);
                    }
                }
            }
            let policy = kind.capacity.unwrap_or(payer.profile.launch.capacity);
            let ladder = sizing::ladder(&types, &payer.profile.launch.subnets, policy);
            (name.clone(), ladder)
        })
        .collect()
}

/// The checks of the payer's launch settings and of each rung's type in its zone.
async fn check_payer(
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
    // infra/mayfly.yaml lets the scheduler pass only the deployment's instance role.
    let granted = format!("{}-instance", s.settings.cluster);
    if *role != granted {
        found.warnings.push(Finding::new(
            payer,
            Scope::payer(),
            Check::PassRole,
            "PassRoleNotGranted",
            format!(
                "instance profile {name} holds role {role}; infra/mayfly.yaml lets the scheduler pass only {granted} (add {role} to its pass-instance-role policy)"
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
fn check_quotas(
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
async fn check_spot_role(account: Account<'_>, found: &mut Findings) {
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

/// The job a rung's dry run stands for: the kind's smallest, on its first attempt.
fn probe_job(payer: &Payer, kind: &str) -> Job {
    Job::from_request(
        JobRequest {
            job_id: format!("preflight:{}:{kind}", payer.id()),
            payer_id: payer.id().to_owned(),
            kind: kind.to_owned(),
            batch: "preflight".to_owned(),
            input: None,
            params: BTreeMap::new(),
            priority: None,
        },
        Utc::now(),
    )
}

/// One RunInstances dry run per rung; returns how many were made. Failures explained by a
/// finding about the same rungs are dropped; the rest are grouped by kind and code.
async fn dry_runs(
    s: &Scheduler,
    account: Account<'_>,
    payer: &Payer,
    ladders: &[(String, Vec<Rung>)],
    found: &mut Findings,
) -> u32 {
    let id = payer.id();
    let mut made = 0;
    for (kind, ladder) in ladders {
        let job = probe_job(payer, kind);
        let mut failed: BTreeMap<String, (Rung, AwsError, u32)> = BTreeMap::new();
        for rung in ladder {
            let req = match request_for(s, payer, &job, rung) {
                Ok(req) => req,
                Err(why) => {
                    found.problems.push(Finding::new(
                        id,
                        Scope::kind(kind),
                        Check::UserData,
                        "UserDataInvalid",
                        why,
                    ));
                    break;
                }
            };
            made += 1;
            let Err(e) = account.ec2.dry_run(&req).await else {
                continue;
            };
            if e.is_transient() {
                found.unchecked.push(Finding::from_error(
                    id,
                    Scope::rung(kind, rung),
                    Check::DryRun,
                    &e,
                ));
            } else if !found.covered(id, kind, rung) {
                failed
                    .entry(e.code.clone())
                    .or_insert_with(|| (rung.clone(), e.clone(), 0))
                    .2 += 1;
            }
        }
        for (_, (rung, e, n)) in failed {
            let mut f = Finding::from_error(id, Scope::rung(kind, &rung), Check::DryRun, &e);
            if n > 1 {
                f.message = format!("{} (and {} more rung(s) of this kind)", f.message, n - 1);
            }
            found.problems.push(f);
        }
    }
    made
}
