//! An in-memory EC2: keeps instances with their tags, honours client tokens as EC2 does (the
//! same token and parameters return the same instance; different parameters are an
//! `IdempotentParameterMismatch`), and can be scripted to fail.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Utc;

use crate::names::tags;
use crate::ports::{
    Compute, ComputeError, InstanceState, LaunchRequest, Launched, ManagedInstance,
};
use crate::profile::CapacityType;

/// A scripted launch failure.
#[derive(Debug, Clone)]
pub enum LaunchFault {
    /// Fail with this error; nothing is launched.
    Fail(ComputeError),
    /// Launch the instance, then lose the response (the caller sees a transient error).
    LoseResponse,
}

#[derive(Debug, Default)]
struct State {
    instances: BTreeMap<String, ManagedInstance>,
    tokens: HashMap<String, (String, String)>,
    next_faults: VecDeque<LaunchFault>,
    type_faults: HashMap<String, ComputeError>,
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
        "{:?}|{}|{:?}|{}|{}|{:?}|{}|{:?}",
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

    /// Every launch of `instance_type` fails with `error` until cleared.
    pub fn fail_type(&self, instance_type: &str, error: Option<ComputeError>) {
        let mut s = self.lock();
        match error {
            Some(e) => s.type_faults.insert(instance_type.to_owned(), e),
            None => s.type_faults.remove(instance_type),
        };
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
        };
        s.instances.insert(id.clone(), inst);
        id
    }

    /// Every instance ever launched, terminated ones included.
    pub fn instances(&self) -> Vec<ManagedInstance> {
        self.lock().instances.values().cloned().collect()
    }

    /// Sets an instance's state, as the instance itself or the cloud would.
    pub fn set_state(&self, instance_id: &str, state: InstanceState) {
        if let Some(i) = self.lock().instances.get_mut(instance_id) {
            i.state = state;
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

#[async_trait]
impl Compute for FakeCompute {
    async fn launch(&self, req: &LaunchRequest) -> Result<Launched, ComputeError> {
        let mut s = self.lock();
        s.run_instances += 1;
        let fault = s.next_faults.pop_front();
        if let Some(LaunchFault::Fail(e)) = fault {
            return Err(e);
        }
        if let Some(e) = s.type_faults.get(&req.rung.instance_type) {
            return Err(e.clone());
        }
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

    async fn list_managed(&self, cluster: &str) -> Result<Vec<ManagedInstance>, ComputeError> {
        let mut s = self.lock();
        s.describes += 1;
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
        for id in instance_ids {
            if let Some(i) = s.instances.get_mut(id) {
                i.state = InstanceState::Terminated;
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
