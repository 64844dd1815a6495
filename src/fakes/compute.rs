//! An in-memory EC2: keeps instances with their tags, honours client tokens as EC2 does (the
//! same token and parameters return the same instance, or the same instances of a launch
//! group; different parameters are an `IdempotentParameterMismatch`), launches fewer than a
//! group's `MaxCount` when told its capacity is short, and can be scripted to fail.
//!
//! It answers as EC2 does, with EC2's error codes and messages, classified by the same
//! function as the EC2 adapter's ([`crate::aws::ec2::classify`]): images that do not exist,
//! instance profiles IAM has not propagated yet, an account without the spot service-linked
//! role, running-vCPU quotas per family group, expired credentials, denied operations; and
//! instances EC2 ends before they start carry their `StateReason`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Utc;

use crate::aws::ec2::classify;
use crate::aws::permissions;
use crate::catalog::Catalog;
use crate::names::tags;
use crate::ports::{
    Compute, ComputeError, GroupCount, GroupMember, InstanceState, LaunchRequest, Launched,
    ManagedInstance,
};
use crate::profile::CapacityType;
use crate::quota::QuotaPool;
use crate::state_reason::StateReason;

/// A scripted launch failure.
#[derive(Debug, Clone)]
pub enum LaunchFault {
    /// Fail with this error; nothing is launched.
    Fail(ComputeError),
    /// Fail with this EC2 error code and message, classified as the EC2 adapter classifies.
    Code(String, String),
    /// Launch the instance, then lose the response (the caller sees a transient error).
    LoseResponse,
}

#[derive(Debug, Default)]
struct State {
    instances: BTreeMap<String, ManagedInstance>,
    tokens: HashMap<String, (String, String)>,
    /// Launch groups by client token: the request's fingerprint and the instances by index.
    group_tokens: HashMap<String, (String, Vec<String>)>,
    /// Most instances the next group launches get (partial fulfilment); `None`: all.
    group_capacity: VecDeque<u32>,
    next_faults: VecDeque<LaunchFault>,
    type_faults: HashMap<String, ComputeError>,
    /// Images that do not exist (deregistered, or never there).
    missing_images: HashSet<String>,
    /// Instance profiles IAM has not propagated to EC2 yet.
    unpropagated_profiles: HashSet<String>,
    /// The account has no spot service-linked role, and the caller may not create it.
    no_spot_role: bool,
    /// Running-vCPU quotas; a quota not set is unlimited.
    vcpu_quotas: HashMap<QuotaPool, u32>,
    /// Every call is refused as with expired credentials.
    credentials_expired: bool,
    /// Operations the caller is not authorized to make.
    denied: HashSet<String>,
    next_id: u64,
    /// Spot prices by instance type; a type without one has no spot price.
    spot_prices: HashMap<String, f64>,
    spot_price_calls: u64,
    run_instances: u64,
    describes: u64,
    terminates: u64,
}

/// EC2 in memory.
#[derive(Debug, Default)]
pub struct FakeCompute {
    state: Mutex<State>,
}

fn fingerprint(req: &LaunchRequest) -> String {
    format!(
        "{:?}|{}|{:?}|{}|{}|{:?}|{:?}|{:?}",
        req.rung,
        req.image_id,
        req.security_groups,
        req.instance_profile,
        req.root_volume_gib,
        req.root_volume_kms_key,
        req.user_data,
        req.tags
    )
}

impl FakeCompute {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next launch calls meet these faults, in order.
    pub fn script(&self, faults: impl IntoIterator<Item = LaunchFault>) {
        self.lock().next_faults.extend(faults);
    }

    /// The next launch groups get at most these many instances each, in order (EC2 launching
    /// fewer than `MaxCount` for lack of capacity); fewer than `MinCount` fails the call with
    /// `InsufficientInstanceCapacity`.
    pub fn short_groups(&self, capacities: impl IntoIterator<Item = u32>) {
        self.lock().group_capacity.extend(capacities);
    }

    /// Every launch of `instance_type` fails with `error` until cleared.
    pub fn fail_type(&self, instance_type: &str, error: Option<ComputeError>) {
        let mut s = self.lock();
        match error {
            Some(e) => s.type_faults.insert(instance_type.to_owned(), e),
            None => s.type_faults.remove(instance_type),
        };
    }

    /// Makes `image_id` not exist (`false`) or exist again (`true`).
    pub fn set_image(&self, image_id: &str, exists: bool) {
        let mut s = self.lock();
        if exists {
            s.missing_images.remove(image_id);
        } else {
            s.missing_images.insert(image_id.to_owned());
        }
    }

    /// Makes the instance profile `name` invisible to EC2 (`false`, as right after it is
    /// created, before IAM propagated it) or visible (`true`).
    pub fn set_profile_propagated(&self, name: &str, propagated: bool) {
        let mut s = self.lock();
        if propagated {
            s.unpropagated_profiles.remove(name);
        } else {
            s.unpropagated_profiles.insert(name.to_owned());
        }
    }

    /// Whether the account has the spot service-linked role (or the caller may create it).
    pub fn set_spot_role(&self, present: bool) {
        self.lock().no_spot_role = !present;
    }

    /// Sets (`Some`) or lifts (`None`) the running-vCPU quota `key`.
    pub fn set_vcpu_quota(&self, key: QuotaPool, vcpus: Option<u32>) {
        let mut s = self.lock();
        match vcpus {
            Some(n) => s.vcpu_quotas.insert(key, n),
            None => s.vcpu_quotas.remove(&key),
        };
    }

    /// Refuses every call as EC2 does with expired credentials (`true`), or stops (`false`).
    pub fn set_credentials_expired(&self, expired: bool) {
        self.lock().credentials_expired = expired;
    }

    /// Refuses `operation` (`RunInstances`, …) as not authorized (`true`), or allows it.
    pub fn set_denied(&self, operation: &str, denied: bool) {
        let mut s = self.lock();
        if denied {
            s.denied.insert(operation.to_owned());
        } else {
            s.denied.remove(operation);
        }
    }

    /// Ends an instance as EC2 does on its own, with a `StateReason`
    /// (`Server.InsufficientInstanceCapacity`, `Client.InvalidKMSKey.InvalidState`, …).
    pub fn end_instance(&self, instance_id: &str, code: &str, message: &str) {
        if let Some(i) = self.lock().instances.get_mut(instance_id) {
            i.state = InstanceState::Terminated;
            i.state_reason = Some(StateReason::new(code, message));
        }
    }

    /// Starts an instance that mayfly did not launch (an orphan, or another deployment's).
    pub fn inject(&self, instance_type: &str, tag_pairs: &[(&str, &str)]) -> String {
        let mut s = self.lock();
        s.next_id += 1;
        let id = format!("i-{:017x}", s.next_id);
        let inst = ManagedInstance {
            instance_id: id.clone(),
            state: InstanceState::Running,
            instance_type: instance_type.to_owned(),
            availability_zone: Some("us-east-1a".into()),
            spot: false,
            launched_at: Some(Utc::now()),
            tags: tag_pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            state_reason: None,
            launch_index: Some(0),
        };
        s.instances.insert(id.clone(), inst);
        id
    }

    /// Every instance ever launched, terminated ones included.
    pub fn instances(&self) -> Vec<ManagedInstance> {
        self.lock().instances.values().cloned().collect()
    }

    /// Sets an instance's state, as the instance itself or the cloud would (a shutdown from
    /// inside the instance, for a terminated one).
    pub fn set_state(&self, instance_id: &str, state: InstanceState) {
        if let Some(i) = self.lock().instances.get_mut(instance_id) {
            i.state = state;
            if state == InstanceState::Terminated {
                i.state_reason = Some(StateReason::new(
                    "Client.InstanceInitiatedShutdown",
                    "Client.InstanceInitiatedShutdown: Instance initiated shutdown",
                ));
            }
        }
    }

    /// Sets (`Some`) or removes (`None`) the spot price of `instance_type`, in every AZ.
    pub fn set_spot_price(&self, instance_type: &str, usd_per_hour: Option<f64>) {
        let mut s = self.lock();
        match usd_per_hour {
            Some(p) => s.spot_prices.insert(instance_type.to_owned(), p),
            None => s.spot_prices.remove(instance_type),
        };
    }

    /// DescribeSpotPriceHistory calls so far.
    pub fn spot_price_calls(&self) -> u64 {
        self.lock().spot_price_calls
    }

    /// (RunInstances, DescribeInstances, TerminateInstances) calls so far.
    pub fn calls(&self) -> (u64, u64, u64) {
        let s = self.lock();
        (s.run_instances, s.describes, s.terminates)
    }
}

impl State {
    /// The refusals every call meets first: expired credentials, a denied operation.
    fn refuse(
        &self,
        operation: &'static str,
        resource: impl FnOnce() -> String,
    ) -> Result<(), ComputeError> {
        if self.credentials_expired {
            return Err(classify(
                "AuthFailure",
                "AWS was not able to validate the provided access credentials",
            ));
        }
        if self.denied.contains(operation) {
            let (code, message) = (
                "UnauthorizedOperation",
                "You are not authorized to perform this operation.",
            );
            return Err(ComputeError::Denied {
                code: code.into(),
                message: permissions::denied("ec2", operation, &resource(), code, message),
            });
        }
        Ok(())
    }

    /// What EC2 checks of a launch's account and settings, with EC2's codes and messages.
    fn check_launch(&self, req: &LaunchRequest) -> Result<(), ComputeError> {
        self.check_launch_of(req, 0)
    }

    /// [`State::check_launch`] for one more instance, `already` instances of this same call
    /// counted as running.
    fn check_launch_of(&self, req: &LaunchRequest, already: u32) -> Result<(), ComputeError> {
        if self.missing_images.contains(&req.image_id) {
            return Err(classify(
                "InvalidAMIID.NotFound",
                &format!("The image id '[{}]' does not exist", req.image_id),
            ));
        }
        if self.unpropagated_profiles.contains(&req.instance_profile) {
            return Err(classify(
                "InvalidParameterValue",
                &format!(
                    "Value ({}) for parameter iamInstanceProfile.name is invalid. Invalid IAM \
                     Instance Profile name",
                    req.instance_profile
                ),
            ));
        }
        let spot = req.rung.capacity == CapacityType::Spot;
        if spot && self.no_spot_role {
            return Err(classify(
                "AuthFailure.ServiceLinkedRoleCreationNotPermitted",
                "The provided credentials do not have permission to create the service-linked \
                 role for EC2 Spot Instances.",
            ));
        }
        let Some(key) = QuotaPool::of(&req.rung.instance_type, req.rung.capacity) else {
            return Ok(());
        };
        let Some(&limit) = self.vcpu_quotas.get(&key) else {
            return Ok(());
        };
        let catalog = Catalog::shipped();
        let vcpus = |t: &str| catalog.get(t).map_or(0, |t| t.vcpus);
        let in_use: u32 = self
            .instances
            .values()
            .filter(|i| i.state.is_live())
            .filter(|i| QuotaPool::of(&i.instance_type, capacity_of(i)) == Some(key))
            .map(|i| vcpus(&i.instance_type))
            .sum();
        if in_use + (already + 1) * vcpus(&req.rung.instance_type) <= limit {
            return Ok(());
        }
        Err(if spot {
            classify(
                "MaxSpotInstanceCountExceeded",
                "Max spot instance count exceeded",
            )
        } else {
            classify(
                "VcpuLimitExceeded",
                &format!(
                    "You have requested more vCPU capacity than your current vCPU limit of \
                     {limit} allows for the instance bucket that the specified instance type \
                     belongs to. Please visit http://aws.amazon.com/contact-us/ec2-request to \
                     request an adjustment to this limit."
                ),
            )
        })
    }

    /// What every RunInstances meets before EC2 looks at its instances: the call is counted,
    /// a refused operation or a queued fault answers it, a faulted type refuses it. `Ok` is
    /// the fault still to apply after the launch (a lost response).
    fn admit(&mut self, req: &LaunchRequest) -> Result<Option<LaunchFault>, ComputeError> {
        self.run_instances += 1;
        self.refuse("RunInstances", || {
            format!(
                "image {}, subnet {}, instance profile {}",
                req.image_id, req.rung.subnet, req.instance_profile
            )
        })?;
        let fault = self.next_faults.pop_front();
        match &fault {
            Some(LaunchFault::Fail(e)) => return Err(e.clone()),
            Some(LaunchFault::Code(code, message)) => return Err(classify(code, message)),
            _ => {}
        }
        if let Some(e) = self.type_faults.get(&req.rung.instance_type) {
            return Err(e.clone());
        }
        Ok(fault)
    }
}

fn capacity_of(i: &ManagedInstance) -> CapacityType {
    if i.spot {
        CapacityType::Spot
    } else {
        CapacityType::OnDemand
    }
}

#[async_trait]
impl Compute for FakeCompute {
    async fn launch(&self, req: &LaunchRequest) -> Result<Launched, ComputeError> {
        let mut s = self.lock();
        let fault = s.admit(req)?;
        s.check_launch(req)?;
        let print = fingerprint(req);
        let id = match s.tokens.get(&req.client_token) {
            Some((p, _)) if *p != print => {
                return Err(ComputeError::IdempotentMismatch {
                    message: format!(
                        "client token {} was used with other parameters",
                        req.client_token
                    ),
                })
            }
            Some((_, id)) => id.clone(),
            None => {
                s.next_id += 1;
                let id = format!("i-{:017x}", s.next_id);
                let inst = ManagedInstance {
                    instance_id: id.clone(),
                    state: InstanceState::Pending,
                    instance_type: req.rung.instance_type.clone(),
                    availability_zone: Some("us-east-1a".into()),
                    spot: req.rung.capacity == CapacityType::Spot,
                    launched_at: Some(Utc::now()),
                    tags: req.tags.iter().cloned().collect(),
                    state_reason: None,
                    launch_index: Some(0),
                };
                s.instances.insert(id.clone(), inst);
                s.tokens
                    .insert(req.client_token.clone(), (print, id.clone()));
                id
            }
        };
        if let Some(LaunchFault::LoseResponse) = fault {
            return Err(ComputeError::Transient {
                code: "ResponseLost".into(),
                message: "connection reset after the request was sent".into(),
            });
        }
        let az = s
            .instances
            .get(&id)
            .and_then(|i| i.availability_zone.clone());
        Ok(Launched {
            instance_id: id,
            availability_zone: az,
            launched_at: Some(Utc::now()),
        })
    }

    async fn launch_group(
        &self,
        req: &LaunchRequest,
        count: GroupCount,
    ) -> Result<Vec<GroupMember>, ComputeError> {
        let mut s = self.lock();
        let fault = s.admit(req)?;
        let print = format!("{}|{}..={}", fingerprint(req), count.min, count.max);
        let ids = match s.group_tokens.get(&req.client_token) {
            Some((p, _)) if *p != print => {
                return Err(ComputeError::IdempotentMismatch {
                    message: format!(
                        "client token {} was used with other parameters",
                        req.client_token
                    ),
                })
            }
            Some((_, ids)) => ids.clone(),
            None => {
                let cap = s.group_capacity.pop_front().unwrap_or(u32::MAX);
                let mut n = 0;
                let mut refused = None;
                while n < count.max.min(cap) {
                    if let Err(e) = s.check_launch_of(req, n) {
                        refused = Some(e);
                        break;
                    }
                    n += 1;
                }
                if n < count.min.max(1) {
                    return Err(refused.unwrap_or_else(|| {
                        classify(
                            "InsufficientInstanceCapacity",
                            &format!(
                                "We currently do not have sufficient {} capacity in the \
                                 Availability Zone you requested.",
                                req.rung.instance_type
                            ),
                        )
                    }));
                }
                let mut ids = Vec::new();
                for index in 0..n {
                    s.next_id += 1;
                    let id = format!("i-{:017x}", s.next_id);
                    let inst = ManagedInstance {
                        instance_id: id.clone(),
                        state: InstanceState::Pending,
                        instance_type: req.rung.instance_type.clone(),
                        availability_zone: Some("us-east-1a".into()),
                        spot: req.rung.capacity == CapacityType::Spot,
                        launched_at: Some(Utc::now()),
                        tags: req.tags.iter().cloned().collect(),
                        state_reason: None,
                        launch_index: Some(index),
                    };
                    s.instances.insert(id.clone(), inst);
                    ids.push(id);
                }
                s.group_tokens
                    .insert(req.client_token.clone(), (print, ids.clone()));
                ids
            }
        };
        if let Some(LaunchFault::LoseResponse) = fault {
            return Err(ComputeError::Transient {
                code: "ResponseLost".into(),
                message: "connection reset after the request was sent".into(),
            });
        }
        Ok(ids
            .iter()
            .zip(0u32..)
            .map(|(id, launch_index)| GroupMember {
                launch_index,
                launched: Launched {
                    instance_id: id.clone(),
                    availability_zone: s
                        .instances
                        .get(id)
                        .and_then(|i| i.availability_zone.clone()),
                    launched_at: Some(Utc::now()),
                },
            })
            .collect())
    }

    async fn find_group(
        &self,
        cluster: &str,
        group: &str,
    ) -> Result<Vec<ManagedInstance>, ComputeError> {
        let mut s = self.lock();
        s.describes += 1;
        s.refuse("DescribeInstances", || {
            format!("instances of group {group}")
        })?;
        Ok(s.instances
            .values()
            .filter(|i| i.tag(tags::CLUSTER) == Some(cluster) && i.tag(tags::GROUP) == Some(group))
            .cloned()
            .collect())
    }

    async fn list_managed(&self, cluster: &str) -> Result<Vec<ManagedInstance>, ComputeError> {
        let mut s = self.lock();
        s.describes += 1;
        s.refuse("DescribeInstances", || {
            format!("instances of cluster {cluster}")
        })?;
        Ok(s.instances
            .values()
            .filter(|i| i.tag(tags::CLUSTER) == Some(cluster))
            .cloned()
            .collect())
    }

    async fn find_attempt(
        &self,
        cluster: &str,
        job_id: &str,
        attempt: u32,
    ) -> Result<Vec<ManagedInstance>, ComputeError> {
        let mut s = self.lock();
        s.describes += 1;
        s.refuse("DescribeInstances", || format!("instances of job {job_id}"))?;
        let attempt = attempt.to_string();
        Ok(s.instances
            .values()
            .filter(|i| {
                i.tag(tags::CLUSTER) == Some(cluster)
                    && i.tag(tags::JOB_ID) == Some(job_id)
                    && i.tag(tags::ATTEMPT) == Some(attempt.as_str())
            })
            .cloned()
            .collect())
    }

    async fn terminate(&self, instance_ids: &[String]) -> Result<(), ComputeError> {
        let mut s = self.lock();
        s.terminates += 1;
        s.refuse("TerminateInstances", || {
            format!("instances {}", instance_ids.join(" "))
        })?;
        for id in instance_ids {
            if let Some(i) = s.instances.get_mut(id) {
                i.state = InstanceState::Terminated;
                i.state_reason = Some(StateReason::new(
                    "Client.UserInitiatedShutdown",
                    "Client.UserInitiatedShutdown: User initiated shutdown",
                ));
            }
        }
        Ok(())
    }

    async fn set_tag(
        &self,
        instance_id: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), ComputeError> {
        let mut s = self.lock();
        let Some(i) = s.instances.get_mut(instance_id) else {
            return Err(ComputeError::Configuration {
                code: "InvalidInstanceID.NotFound".into(),
                message: format!("The instance ID '{instance_id}' does not exist"),
            });
        };
        match value {
            Some(v) => i.tags.insert(key.to_owned(), v.to_owned()),
            None => i.tags.remove(key),
        };
        Ok(())
    }

    async fn spot_price(
        &self,
        instance_type: &str,
        availability_zone: &str,
    ) -> Result<f64, ComputeError> {
        let mut s = self.lock();
        s.spot_price_calls += 1;
        s.spot_prices
            .get(instance_type)
            .copied()
            .ok_or_else(|| ComputeError::Configuration {
                code: "NoSpotPrice".into(),
                message: format!("no spot price for {instance_type} in {availability_zone}"),
            })
    }
}
