//! An in-memory account for the checks `preflight` makes and the quotas the planner reads:
//! images, subnets, security groups, instance-type offerings, spot price history, instance
//! profiles and roles, and Service Quotas' vCPU quotas. Lookups answer AWS's own error codes
//! for what does not exist; dry runs and quota reads can be scripted to fail.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::ports::{
    AwsError, IdentityChecks, ImageInfo, InstanceProfileInfo, LaunchChecks, LaunchRequest,
    QuotaReader, SecurityGroupInfo, SubnetInfo,
};
use crate::quota::{AccountQuotas, QuotaPool};

#[derive(Debug, Default)]
struct State {
    images: BTreeMap<String, ImageInfo>,
    subnets: BTreeMap<String, SubnetInfo>,
    groups: BTreeMap<String, SecurityGroupInfo>,
    /// (instance type, zone) pairs offered.
    offerings: BTreeSet<(String, String)>,
    /// (instance type, zone) pairs with spot price history.
    spot_prices: BTreeSet<(String, String)>,
    profiles: BTreeMap<String, InstanceProfileInfo>,
    roles: BTreeSet<String>,
    quotas: AccountQuotas,
    quota_failure: Option<AwsError>,
    /// Dry runs of this instance type (or of every type, under "*") fail with this error.
    dry_run_faults: BTreeMap<String, AwsError>,
    dry_runs: Vec<LaunchRequest>,
    quota_reads: u32,
}

/// An AWS account's launch settings and quotas, in memory.
#[derive(Debug, Default)]
pub struct FakeAccount {
    state: Mutex<State>,
}

fn err(code: &str, message: String) -> AwsError {
    AwsError {
        code: code.to_owned(),
        message,
    }
}

impl FakeAccount {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers an image of `architecture` (`x86_64`, `arm64`) with its root on `/dev/xvda`.
    pub fn add_image(&self, image_id: &str, architecture: &str) {
        self.lock().images.insert(
            image_id.to_owned(),
            ImageInfo {
                image_id: image_id.to_owned(),
                architecture: Some(architecture.to_owned()),
                root_device_name: Some("/dev/xvda".into()),
                state: Some("available".into()),
            },
        );
    }

    /// Creates a subnet of `vpc_id` in `zone`, where `types` are offered (with spot prices).
    pub fn add_subnet(&self, subnet_id: &str, vpc_id: &str, zone: &str, types: &[&str]) {
        let mut s = self.lock();
        s.subnets.insert(
            subnet_id.to_owned(),
            SubnetInfo {
                subnet_id: subnet_id.to_owned(),
                vpc_id: Some(vpc_id.to_owned()),
                availability_zone: Some(zone.to_owned()),
            },
        );
        for t in types {
            s.offerings.insert(((*t).to_owned(), zone.to_owned()));
            s.spot_prices.insert(((*t).to_owned(), zone.to_owned()));
        }
    }

    pub fn add_security_group(&self, group_id: &str, vpc_id: &str) {
        self.lock().groups.insert(
            group_id.to_owned(),
            SecurityGroupInfo {
                group_id: group_id.to_owned(),
                vpc_id: Some(vpc_id.to_owned()),
            },
        );
    }

    /// Creates an instance profile holding `roles` (which exist from then on), at the IAM
    /// path `/`.
    pub fn add_instance_profile(&self, name: &str, roles: &[&str]) {
        self.add_instance_profile_at("/", name, roles);
    }

    /// Creates an instance profile and its `roles`, both under the IAM path `path`.
    pub fn add_instance_profile_at(&self, path: &str, name: &str, roles: &[&str]) {
        let mut s = self.lock();
        s.roles.extend(roles.iter().map(|r| (*r).to_owned()));
        s.profiles.insert(
            name.to_owned(),
            InstanceProfileInfo {
                name: name.to_owned(),
                path: path.to_owned(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                role_paths: roles.iter().map(|_| path.to_owned()).collect(),
            },
        );
    }

    pub fn add_role(&self, name: &str) {
        self.lock().roles.insert(name.to_owned());
    }

    /// `instance_type` stops being offered in `zone`.
    pub fn withdraw_offering(&self, instance_type: &str, zone: &str) {
        let key = (instance_type.to_owned(), zone.to_owned());
        let mut s = self.lock();
        s.offerings.remove(&key);
        s.spot_prices.remove(&key);
    }

    pub fn set_quota(&self, pool: QuotaPool, vcpus: u32) {
        self.lock().quotas.insert(pool, vcpus);
    }

    /// Quota reads fail with this error (`None`: they work again).
    pub fn fail_quotas(&self, error: Option<AwsError>) {
        self.lock().quota_failure = error;
    }

    /// Dry runs of `instance_type` (`*`: of every type) fail with `code`.
    pub fn fail_dry_runs(&self, instance_type: &str, code: &str) {
        self.lock().dry_run_faults.insert(
            instance_type.to_owned(),
            err(code, format!("scripted failure of {instance_type}")),
        );
    }

    /// Every dry-run request so far.
    pub fn dry_runs(&self) -> Vec<LaunchRequest> {
        self.lock().dry_runs.clone()
    }

    /// How many times the quotas were read.
    pub fn quota_reads(&self) -> u32 {
        self.lock().quota_reads
    }
}

#[async_trait]
impl LaunchChecks for FakeAccount {
    async fn dry_run(&self, req: &LaunchRequest) -> Result<(), AwsError> {
        let mut s = self.lock();
        s.dry_runs.push(req.clone());
        let fault = s
            .dry_run_faults
            .get(&req.rung.instance_type)
            .or_else(|| s.dry_run_faults.get("*"));
        match fault {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    async fn image(&self, image_id: &str) -> Result<ImageInfo, AwsError> {
        self.lock().images.get(image_id).cloned().ok_or_else(|| {
            err(
                "InvalidAMIID.NotFound",
                format!("The image id '[{image_id}]' does not exist"),
            )
        })
    }

    async fn subnet(&self, subnet_id: &str) -> Result<SubnetInfo, AwsError> {
        self.lock().subnets.get(subnet_id).cloned().ok_or_else(|| {
            err(
                "InvalidSubnetID.NotFound",
                format!("The subnet ID '{subnet_id}' does not exist"),
            )
        })
    }

    async fn security_group(&self, group_id: &str) -> Result<SecurityGroupInfo, AwsError> {
        self.lock().groups.get(group_id).cloned().ok_or_else(|| {
            err(
                "InvalidGroup.NotFound",
                format!("The security group '{group_id}' does not exist"),
            )
        })
    }

    async fn offerings(
        &self,
        types: &[String],
        zones: &[String],
    ) -> Result<BTreeSet<(String, String)>, AwsError> {
        Ok(self
            .lock()
            .offerings
            .iter()
            .filter(|(t, z)| types.contains(t) && zones.contains(z))
            .cloned()
            .collect())
    }

    async fn spot_price_listed(&self, instance_type: &str, zone: &str) -> Result<bool, AwsError> {
        Ok(self
            .lock()
            .spot_prices
            .contains(&(instance_type.to_owned(), zone.to_owned())))
    }
}

#[async_trait]
impl IdentityChecks for FakeAccount {
    async fn instance_profile(&self, name: &str) -> Result<InstanceProfileInfo, AwsError> {
        self.lock().profiles.get(name).cloned().ok_or_else(|| {
            err(
                "NoSuchEntity",
                format!("Instance profile {name} cannot be found."),
            )
        })
    }

    async fn role_exists(&self, name: &str) -> Result<bool, AwsError> {
        Ok(self.lock().roles.contains(name))
    }
}

#[async_trait]
impl QuotaReader for FakeAccount {
    async fn vcpu_quotas(&self, pools: &BTreeSet<QuotaPool>) -> Result<AccountQuotas, AwsError> {
        let mut s = self.lock();
        s.quota_reads += 1;
        if let Some(e) = &s.quota_failure {
            return Err(e.clone());
        }
        let mut out = AccountQuotas::new();
        for &pool in pools {
            let vcpus = s.quotas.get(pool).ok_or_else(|| {
                err(
                    "NoSuchResourceException",
                    format!("GetServiceQuota {}: no such quota", pool.code()),
                )
            })?;
            out.insert(pool, vcpus);
        }
        Ok(out)
    }
}
