//! The test doubles a world is built with: a compute wrapper that scripts faults and capacity
//! errors in front of any compute (the fake's or EC2's), and a minimal user-data source.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mayfly::job::Job;
use mayfly::ports::{
    Compute, ComputeError, GroupCount, GroupMember, LaunchRequest, Launched, ManagedInstance,
};
use mayfly::scheduler::UserDataSource;

/// A scripted fault for the next launch call.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Fail with this error before the call reaches EC2.
    Before(ComputeError),
    /// Make the call, then lose the response (a crash between RunInstances and the ledger).
    LoseResponse,
}

/// Wraps any compute port with scripted faults and per-type capacity errors, so the same
/// scenarios run against the fake and the emulator.
pub struct FaultyCompute {
    pub inner: Arc<dyn Compute>,
    faults: Mutex<VecDeque<Fault>>,
    no_capacity: Mutex<Vec<String>>,
    pub launches: Mutex<Vec<LaunchRequest>>,
}

impl FaultyCompute {
    pub fn new(inner: Arc<dyn Compute>) -> Self {
        Self {
            inner,
            faults: Mutex::new(VecDeque::new()),
            no_capacity: Mutex::new(Vec::new()),
            launches: Mutex::new(Vec::new()),
        }
    }

    pub fn script(&self, fault: Fault) {
        self.faults.lock().unwrap().push_back(fault);
    }

    pub fn no_capacity_for(&self, instance_type: &str) {
        self.no_capacity
            .lock()
            .unwrap()
            .push(instance_type.to_owned());
    }

    /// RunInstances calls that reached the inner compute.
    pub fn calls(&self) -> Vec<LaunchRequest> {
        self.launches.lock().unwrap().clone()
    }
}

#[async_trait]
impl Compute for FaultyCompute {
    async fn launch(&self, req: &LaunchRequest) -> Result<Launched, ComputeError> {
        let fault = self.faults.lock().unwrap().pop_front();
        if let Some(Fault::Before(e)) = fault {
            return Err(e);
        }
        if self
            .no_capacity
            .lock()
            .unwrap()
            .contains(&req.rung.instance_type)
        {
            return Err(ComputeError::Capacity {
                code: "InsufficientInstanceCapacity".into(),
                message: format!("no {} capacity", req.rung.instance_type),
            });
        }
        self.launches.lock().unwrap().push(req.clone());
        let out = self.inner.launch(req).await;
        match (fault, out) {
            (Some(Fault::LoseResponse), Ok(_)) => Err(ComputeError::Transient {
                code: "ResponseLost".into(),
                message: "connection reset".into(),
            }),
            (_, out) => out,
        }
    }

    async fn launch_group(
        &self,
        req: &LaunchRequest,
        count: GroupCount,
    ) -> Result<Vec<GroupMember>, ComputeError> {
        let fault = self.faults.lock().unwrap().pop_front();
        if let Some(Fault::Before(e)) = fault {
            return Err(e);
        }
        if self
            .no_capacity
            .lock()
            .unwrap()
            .contains(&req.rung.instance_type)
        {
            return Err(ComputeError::Capacity {
                code: "InsufficientInstanceCapacity".into(),
                message: format!("no {} capacity", req.rung.instance_type),
            });
        }
        self.launches.lock().unwrap().push(req.clone());
        let out = self.inner.launch_group(req, count).await;
        match (fault, out) {
            (Some(Fault::LoseResponse), Ok(_)) => Err(ComputeError::Transient {
                code: "ResponseLost".into(),
                message: "connection reset".into(),
            }),
            (_, out) => out,
        }
    }

    async fn find_group(
        &self,
        cluster: &str,
        group: &str,
    ) -> Result<Vec<ManagedInstance>, ComputeError> {
        self.inner.find_group(cluster, group).await
    }

    async fn list_managed(&self, cluster: &str) -> Result<Vec<ManagedInstance>, ComputeError> {
        self.inner.list_managed(cluster).await
    }

    async fn find_attempt(
        &self,
        cluster: &str,
        job_id: &str,
        attempt: u32,
    ) -> Result<Vec<ManagedInstance>, ComputeError> {
        self.inner.find_attempt(cluster, job_id, attempt).await
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), ComputeError> {
        self.inner.terminate(ids).await
    }

    async fn set_tag(
        &self,
        instance_id: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), ComputeError> {
        self.inner.set_tag(instance_id, key, value).await
    }

    async fn spot_price(&self, instance_type: &str, az: &str) -> Result<f64, ComputeError> {
        self.inner.spot_price(instance_type, az).await
    }
}

/// A minimal user-data script; the template renderer has its own tests.
pub struct EchoUserData;

impl UserDataSource for EchoUserData {
    fn render(
        &self,
        payer: &mayfly::profile::Payer,
        job: &Job,
        attempt: u32,
    ) -> Result<String, String> {
        Ok(format!(
            "#!/bin/bash\n# {} {} attempt {attempt}\nshutdown -h now\n",
            payer.id(),
            job.job_id
        ))
    }
}
