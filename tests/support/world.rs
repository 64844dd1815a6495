//! A deployment under test, on fakes or on the emulator, and the scenarios both must pass.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use mayfly::catalog::Catalog;
use mayfly::fakes::{FakeCompute, FakeConfigStore, FakeLedger, FakeQueue};
use mayfly::job::{Job, JobState};
use mayfly::ports::{
    Compute, ComputeError, ConfigStore, LaunchRequest, Launched, Ledger, ManagedInstance, Queue,
};
use mayfly::profile::{self, GlobalCaps, PayerProfile, ValidateContext};
use mayfly::scheduler::{Deps, PassReport, Scheduler, Settings, TickOptions, UserDataSource};

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

/// One deployment's ports, and what the test needs to look inside.
pub struct World {
    pub cluster: String,
    pub config: Arc<dyn ConfigStore>,
    pub ledger: Arc<dyn Ledger>,
    pub intake: Arc<dyn Queue>,
    pub intake_dlq: Arc<dyn Queue>,
    pub events: Arc<dyn Queue>,
    pub events_dlq: Arc<dyn Queue>,
    pub compute: Arc<FaultyCompute>,
    pub user_data: Arc<dyn UserDataSource>,
    /// Subnets and security groups the compute accepts (the emulator checks them).
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub instance_profile: String,
}

/// A deployment on the in-memory fakes, with the network names the fakes accept.
pub fn on_fakes() -> World {
    World {
        cluster: "fake".into(),
        config: Arc::new(FakeConfigStore::new()),
        ledger: Arc::new(FakeLedger::new()),
        intake: Arc::new(FakeQueue::new()),
        intake_dlq: Arc::new(FakeQueue::new()),
        events: Arc::new(FakeQueue::new()),
        events_dlq: Arc::new(FakeQueue::new()),
        compute: Arc::new(FaultyCompute::new(Arc::new(FakeCompute::new()))),
        user_data: Arc::new(EchoUserData),
        subnets: vec!["subnet-0a1b2c3d4e5f60011".into()],
        security_groups: vec!["sg-0a1b2c3d4e5f60021".into()],
        instance_profile: "mayfly-instance".into(),
    }
}

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
}

impl World {
    pub fn scheduler(&self, max_launches: u32) -> Scheduler {
        let deps = Deps {
            config: self.config.clone(),
            ledger: self.ledger.clone(),
            intake: self.intake.clone(),
            intake_dlq: self.intake_dlq.clone(),
            events: self.events.clone(),
            events_dlq: self.events_dlq.clone(),
            compute: self.compute.clone(),
            user_data: self.user_data.clone(),
        };
        let mut settings = Settings::new(self.cluster.clone());
        settings.max_launches = max_launches;
        Scheduler::new(deps, settings)
    }

    pub async fn tick(&self, at: DateTime<Utc>) -> PassReport {
        self.scheduler(60)
            .tick(TickOptions::default(), at)
            .await
            .expect("pass runs")
    }

    /// Launches an instance directly (not through a pass) with these tags and no others,
    /// using the first stored payer's launch settings.
    pub async fn inject_instance(&self, tags: &[(&str, &str)]) -> String {
        let payer = self.config.list().await.expect("config")[0].profile.clone();
        let req = LaunchRequest {
            client_token: {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                format!(
                    "inject-{}",
                    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                )
            },
            rung: mayfly::sizing::Rung {
                instance_type: "t3.micro".into(),
                subnet: payer.launch.subnets[0].clone(),
                capacity: mayfly::profile::CapacityType::OnDemand,
            },
            image_id: payer.launch.image_id.clone(),
            security_groups: payer.launch.security_groups.clone(),
            instance_profile: payer.launch.instance_profile.clone(),
            root_volume_gib: 8,
            user_data: "#!/bin/bash\ntrue\n".into(),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        self.compute
            .inner
            .launch(&req)
            .await
            .expect("direct launch")
            .instance_id
    }

    /// Every instance of every deployment, by id (terminated ones included).
    pub async fn instance(&self, cluster: &str, id: &str) -> ManagedInstance {
        self.compute
            .inner
            .list_managed(cluster)
            .await
            .expect("describe")
            .into_iter()
            .find(|i| i.instance_id == id)
            .unwrap_or_else(|| panic!("instance {id} not found"))
    }

    /// The instance and launch time of a job's current attempt.
    pub async fn running_on(&self, job_id: &str) -> (String, DateTime<Utc>) {
        let job = self.job(job_id).await;
        assert_eq!(job.state, JobState::Running, "{job_id}: {:?}", job.reason);
        let a = job.current_attempt().expect("attempt");
        (
            a.instance_id.clone().expect("instance recorded"),
            a.launched_at.expect("launch time recorded"),
        )
    }

    /// The example profiles, pointed at this world's network, applied to the config table.
    pub async fn apply_examples(&self) -> Vec<PayerProfile> {
        let ctx = ValidateContext {
            catalog: Catalog::shipped(),
            global: GlobalCaps::default(),
        };
        let payers = profile::load_and_validate(&[super::path("payer-profiles")], &ctx)
            .expect("examples validate");
        let mut out = Vec::new();
        for p in payers {
            let mut profile = p.profile;
            profile.launch.subnets = self.subnets.clone();
            profile.launch.security_groups = self.security_groups.clone();
            profile.launch.instance_profile = self.instance_profile.clone();
            self.config
                .put(&profile, None, t0())
                .await
                .expect("apply profile");
            out.push(profile);
        }
        out
    }

    pub async fn submit(&self, body: &str) {
        self.intake.send(body, &[]).await.expect("send to intake");
    }

    pub async fn job(&self, id: &str) -> Job {
        self.ledger
            .get(id)
            .await
            .expect("ledger read")
            .unwrap_or_else(|| panic!("job {id} not in the ledger"))
    }

    /// Live instances of this deployment.
    pub async fn live_instances(&self) -> Vec<ManagedInstance> {
        let all = self
            .compute
            .inner
            .list_managed(&self.cluster)
            .await
            .expect("describe");
        all.into_iter().filter(|i| i.state.is_live()).collect()
    }

    pub async fn instances_of(&self, job_id: &str) -> Vec<ManagedInstance> {
        self.live_instances()
            .await
            .into_iter()
            .filter(|i| i.tag("mayfly:job-id") == Some(job_id))
            .collect()
    }
}

pub fn request(job_id: &str, payer: &str, kind: &str, batch: &str, gib: u64) -> String {
    serde_json::json!({
        "job_id": job_id, "payer_id": payer, "kind": kind, "batch": batch,
        "input": {"uri": format!("s3://example-payer-drops/{payer}/{batch}/{kind}"), "bytes": gib << 30}
    })
    .to_string()
}

/// Two payers across three tiers: cedar-plan's chain and harbor-health's two tiers.
pub async fn submit_workload(w: &World) {
    for (id, payer, kind, gib) in [
        (
            "cedar-plan:2026-11:eligibility",
            "cedar-plan",
            "eligibility",
            1,
        ),
        ("cedar-plan:2026-11:members", "cedar-plan", "members", 2),
        ("cedar-plan:2026-11:claims", "cedar-plan", "claims", 20),
        (
            "harbor-health:2026-11-23:members",
            "harbor-health",
            "members",
            1,
        ),
        (
            "harbor-health:2026-11-23:claims",
            "harbor-health",
            "claims",
            48,
        ),
    ] {
        let batch = id.split(':').nth(1).unwrap();
        w.submit(&request(id, payer, kind, batch, gib)).await;
    }
}

// ---- Scenarios ------------------------------------------------------------------------

/// One pass launches exactly the tier-0 jobs, each once, with the right type and tags.
pub async fn first_pass_launches_tier_zero(w: &World) {
    w.apply_examples().await;
    submit_workload(w).await;
    let report = w.tick(t0()).await;
    assert_eq!(report.ingest.accepted, 5, "{report}");
    let launched: Vec<&str> = report
        .launch
        .instances
        .iter()
        .map(|(j, _, _)| j.as_str())
        .collect();
    assert_eq!(launched.len(), 2, "{report}");
    assert!(
        launched.contains(&"cedar-plan:2026-11:eligibility")
            && launched.contains(&"harbor-health:2026-11-23:members"),
        "{report}"
    );
    for (job_id, expected_type) in [
        ("cedar-plan:2026-11:eligibility", "c7i.large"),
        ("harbor-health:2026-11-23:members", "m7i.large"),
    ] {
        let job = w.job(job_id).await;
        assert_eq!(job.state, JobState::Running);
        let attempt = job.current_attempt().expect("attempt recorded");
        assert_eq!(attempt.number, 1);
        assert_eq!(attempt.rung.as_ref().unwrap().instance_type, expected_type);
        assert!(attempt
            .client_token
            .as_deref()
            .is_some_and(|t| t.len() <= 64));
        let instances = w.instances_of(job_id).await;
        assert_eq!(instances.len(), 1, "{job_id}");
        let i = &instances[0];
        assert_eq!(Some(i.instance_id.as_str()), attempt.instance_id.as_deref());
        assert_eq!(i.instance_type, expected_type);
        assert_eq!(i.tag("mayfly:cluster"), Some(w.cluster.as_str()));
        assert_eq!(i.tag("mayfly:attempt"), Some("1"));
        assert_eq!(i.tag("mayfly:payer"), Some(job.payer_id.as_str()));
    }
    for waiting in [
        "cedar-plan:2026-11:members",
        "cedar-plan:2026-11:claims",
        "harbor-health:2026-11-23:claims",
    ] {
        assert_eq!(w.job(waiting).await.state, JobState::Queued, "{waiting}");
        assert!(w.instances_of(waiting).await.is_empty());
    }
    assert_eq!(
        w.compute.calls().len(),
        2,
        "exactly one RunInstances per launched job"
    );
    // A second pass launches nothing new: tier 1 waits for tier 0 to succeed.
    let again = w.tick(t0() + Duration::minutes(1)).await;
    assert!(again.launch.instances.is_empty(), "{again}");
    assert_eq!(w.live_instances().await.len(), 2);
}

/// A re-sent request is a no-op; a malformed one goes to the DLQ with a reason naming the field.
pub async fn duplicates_and_malformed_requests(w: &World) {
    w.apply_examples().await;
    let good = request(
        "cedar-plan:2026-12:eligibility",
        "cedar-plan",
        "eligibility",
        "2026-12",
        1,
    );
    w.submit(&good).await;
    w.submit(&good).await;
    w.submit(
        r#"{"job_id":"bad job id","payer_id":"cedar-plan","kind":"eligibility","batch":"2026-12"}"#,
    )
    .await;
    w.submit(r#"{"job_id":"x1","payer_id":"cedar-plan","kind":"dental","batch":"2026-12"}"#)
        .await;
    w.submit("this is not json").await;
    let report = w.tick(t0()).await;
    assert_eq!(report.ingest.accepted, 1, "{report}");
    assert_eq!(report.ingest.duplicates, 1, "{report}");
    assert_eq!(report.ingest.rejected, 3, "{report}");
    assert_eq!(
        report.launch.instances.len(),
        1,
        "the pass goes on: {report}"
    );
    assert_eq!(w.intake.depth().await.unwrap(), 0, "intake is drained");
    let dead = w
        .intake_dlq
        .receive(10, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(dead.len(), 3);
    let bodies: Vec<&str> = dead.iter().map(|m| m.body.as_str()).collect();
    assert!(bodies.iter().any(|b| b.contains("bad job id")));
    assert!(bodies.contains(&"this is not json"));
    assert_eq!(
        w.instances_of("cedar-plan:2026-12:eligibility").await.len(),
        1
    );
}

/// A pass that stopped between `launching` and RunInstances: the next pass launches once.
pub async fn crash_before_run_instances(w: &World) {
    w.apply_examples().await;
    w.submit(&request(
        "cedar-plan:2027-01:eligibility",
        "cedar-plan",
        "eligibility",
        "2027-01",
        1,
    ))
    .await;
    w.compute.script(Fault::Before(ComputeError::Transient {
        code: "RequestTimeout".into(),
        message: "pass stopped".into(),
    }));
    let first = w.tick(t0()).await;
    assert!(first.launch.instances.is_empty(), "{first}");
    assert_eq!(
        w.job("cedar-plan:2027-01:eligibility").await.state,
        JobState::Launching
    );
    assert!(w
        .instances_of("cedar-plan:2027-01:eligibility")
        .await
        .is_empty());
    let second = w.tick(t0() + Duration::minutes(1)).await;
    assert_eq!(second.launch.replayed, 1, "{second}");
    let job = w.job("cedar-plan:2027-01:eligibility").await;
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.attempt, 1, "the replay is the same attempt");
    assert_eq!(
        w.instances_of("cedar-plan:2027-01:eligibility").await.len(),
        1
    );
    let third = w.tick(t0() + Duration::minutes(2)).await;
    assert!(third.launch.instances.is_empty());
    assert_eq!(
        w.instances_of("cedar-plan:2027-01:eligibility").await.len(),
        1
    );
}

/// A pass that stopped after RunInstances but before `running`: the next pass adopts the
/// instance it finds by its tags and launches nothing.
pub async fn crash_after_run_instances(w: &World) {
    w.apply_examples().await;
    w.submit(&request(
        "cedar-plan:2027-02:eligibility",
        "cedar-plan",
        "eligibility",
        "2027-02",
        1,
    ))
    .await;
    w.compute.script(Fault::LoseResponse);
    let first = w.tick(t0()).await;
    assert!(first.launch.instances.is_empty(), "{first}");
    assert_eq!(
        w.job("cedar-plan:2027-02:eligibility").await.state,
        JobState::Launching
    );
    assert_eq!(
        w.instances_of("cedar-plan:2027-02:eligibility").await.len(),
        1
    );
    let calls_before = w.compute.calls().len();
    let second = w.tick(t0() + Duration::minutes(1)).await;
    assert_eq!(second.launch.adopted, 1, "{second}");
    assert_eq!(
        w.compute.calls().len(),
        calls_before,
        "adopting makes no RunInstances"
    );
    let job = w.job("cedar-plan:2027-02:eligibility").await;
    assert_eq!(job.state, JobState::Running);
    let instances = w.instances_of("cedar-plan:2027-02:eligibility").await;
    assert_eq!(instances.len(), 1);
    assert_eq!(
        job.current_attempt().unwrap().instance_id.as_deref(),
        Some(instances[0].instance_id.as_str())
    );
}

/// A capacity error on the first rung launches on the next one.
pub async fn capacity_falls_back_to_next_rung(w: &World) {
    w.apply_examples().await;
    w.compute.no_capacity_for("c7i.large");
    w.submit(&request(
        "cedar-plan:2027-03:eligibility",
        "cedar-plan",
        "eligibility",
        "2027-03",
        1,
    ))
    .await;
    let report = w.tick(t0()).await;
    assert!(report.launch.capacity_fallbacks >= 1, "{report}");
    let job = w.job("cedar-plan:2027-03:eligibility").await;
    assert_eq!(job.state, JobState::Running, "{report}");
    let rung = job.current_attempt().unwrap().rung.clone().unwrap();
    assert_ne!(rung.instance_type, "c7i.large");
    let instances = w.instances_of("cedar-plan:2027-03:eligibility").await;
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].instance_type, rung.instance_type);
}

/// Throttling stops launching for the pass and fails nothing; the next pass goes on.
pub async fn throttling_stops_the_pass(w: &World) {
    w.apply_examples().await;
    w.submit(&request(
        "cedar-plan:2027-04:eligibility",
        "cedar-plan",
        "eligibility",
        "2027-04",
        1,
    ))
    .await;
    w.submit(&request(
        "harbor-health:2027-04:members",
        "harbor-health",
        "members",
        "2027-04",
        1,
    ))
    .await;
    w.compute.script(Fault::Before(ComputeError::Throttled {
        code: "RequestLimitExceeded".into(),
    }));
    let report = w.tick(t0()).await;
    assert!(report.launch.throttled, "{report}");
    assert!(
        report.launch.instances.is_empty(),
        "no launch after the throttle: {report}"
    );
    for id in [
        "cedar-plan:2027-04:eligibility",
        "harbor-health:2027-04:members",
    ] {
        let job = w.job(id).await;
        assert!(
            matches!(job.state, JobState::Queued | JobState::Launching),
            "{id} is {}",
            job.state
        );
    }
    let next = w.tick(t0() + Duration::minutes(1)).await;
    assert_eq!(next.launch.instances.len(), 2, "{next}");
    assert_eq!(w.live_instances().await.len(), 2);
}

/// A configuration error fails the job fast, with the AWS error code.
pub async fn configuration_error_fails_the_job(w: &World) {
    w.apply_examples().await;
    w.submit(&request(
        "cedar-plan:2027-05:eligibility",
        "cedar-plan",
        "eligibility",
        "2027-05",
        1,
    ))
    .await;
    w.compute.script(Fault::Before(ComputeError::Configuration {
        code: "InvalidAMIID.NotFound".into(),
        message: "The image id does not exist".into(),
    }));
    let report = w.tick(t0()).await;
    assert_eq!(report.launch.config_failures, 1, "{report}");
    let job = w.job("cedar-plan:2027-05:eligibility").await;
    assert_eq!(job.state, JobState::Dead);
    assert!(
        job.reason
            .as_deref()
            .unwrap_or("")
            .contains("InvalidAMIID.NotFound"),
        "{:?}",
        job.reason
    );
    assert!(w
        .instances_of("cedar-plan:2027-05:eligibility")
        .await
        .is_empty());
}

/// A dry run (and the live plan) changes nothing: same queue, same ledger, no instance.
pub async fn dry_run_changes_nothing(w: &World) {
    w.apply_examples().await;
    submit_workload(w).await;
    let before_depth = w.intake.depth().await.unwrap();
    let report = w
        .scheduler(60)
        .tick(
            TickOptions {
                dry_run: true,
                ..TickOptions::default()
            },
            t0(),
        )
        .await
        .unwrap();
    assert!(report.dry_run);
    assert_eq!(w.intake.depth().await.unwrap(), before_depth);
    for state in JobState::ALL {
        assert!(w.ledger.by_state(state).await.unwrap().is_empty());
    }
    assert!(w.live_instances().await.is_empty());
    assert!(w.compute.calls().is_empty());
}

/// Sends an instance event as the instance would.
pub async fn send_event(w: &World, e: &mayfly::events::InstanceEvent) {
    w.events.send(&e.to_json(), &[]).await.expect("send event");
}

/// Events move a job to succeeded; duplicates change nothing; mismatched ones are counted.
pub async fn events_complete_jobs_and_unlock_the_next_tier(w: &World) {
    use mayfly::events::InstanceEvent;
    w.apply_examples().await;
    w.submit(&request(
        "cedar-plan:2027-07:eligibility",
        "cedar-plan",
        "eligibility",
        "2027-07",
        1,
    ))
    .await;
    w.submit(&request(
        "cedar-plan:2027-07:members",
        "cedar-plan",
        "members",
        "2027-07",
        1,
    ))
    .await;
    w.tick(t0()).await;
    let job = w.job("cedar-plan:2027-07:eligibility").await;
    let iid = job.current_attempt().unwrap().instance_id.clone().unwrap();
    let id = job.job_id.as_str();
    let at = t0() + Duration::seconds(30);
    send_event(w, &InstanceEvent::started(id, 1, &iid, at)).await;
    send_event(w, &InstanceEvent::started(id, 1, &iid, at)).await;
    send_event(w, &InstanceEvent::started(id, 2, &iid, at)).await;
    send_event(w, &InstanceEvent::started(id, 1, "i-0123456789abcdef0", at)).await;
    send_event(
        w,
        &InstanceEvent::finished(
            id,
            1,
            &iid,
            at + Duration::seconds(90),
            0,
            90,
            "loaded 1200 spans\n",
        ),
    )
    .await;
    let report = w.tick(t0() + Duration::minutes(2)).await;
    assert_eq!(report.events.received, 5, "{report}");
    assert_eq!(report.events.applied, 2, "{report}");
    assert_eq!(report.events.duplicates, 1, "{report}");
    assert_eq!(report.events.ignored.values().sum::<u32>(), 2, "{report}");
    assert_eq!(report.events.succeeded, 1);
    let done = w.job(id).await;
    assert_eq!(done.state, JobState::Succeeded);
    let a = done.current_attempt().unwrap();
    assert_eq!(a.exit_code, Some(0));
    assert_eq!(a.started_at, Some(at));
    // Tier 1 launched in the same pass, now that tier 0 succeeded.
    assert_eq!(report.launch.instances.len(), 1, "{report}");
    assert_eq!(
        w.job("cedar-plan:2027-07:members").await.state,
        JobState::Running
    );
    // A replayed finished event changes nothing.
    let version = done.version;
    send_event(
        w,
        &InstanceEvent::finished(
            id,
            1,
            &iid,
            at + Duration::seconds(90),
            0,
            90,
            "loaded 1200 spans\n",
        ),
    )
    .await;
    let again = w.tick(t0() + Duration::minutes(3)).await;
    assert_eq!(again.events.duplicates, 1, "{again}");
    assert_eq!(w.job(id).await.version, version);
}

/// A non-zero exit fails the attempt with its exit code and output tail, then the retry
/// policy decides: cedar-plan retries exit 75 on eligibility, not exit 3.
pub async fn non_zero_exit_fails_with_code_and_tail(w: &World) {
    use mayfly::events::InstanceEvent;
    w.apply_examples().await;
    for batch in ["2027-08", "2027-09"] {
        w.submit(&request(
            &format!("cedar-plan:{batch}:eligibility"),
            "cedar-plan",
            "eligibility",
            batch,
            1,
        ))
        .await;
    }
    w.tick(t0()).await;
    for (batch, code) in [("2027-08", 3), ("2027-09", 75)] {
        let id = format!("cedar-plan:{batch}:eligibility");
        let iid = w
            .job(&id)
            .await
            .current_attempt()
            .unwrap()
            .instance_id
            .clone()
            .unwrap();
        send_event(
            w,
            &InstanceEvent::finished(
                &id,
                1,
                &iid,
                t0() + Duration::seconds(40),
                code,
                40,
                "row 17: bad segment\nfatal\n",
            ),
        )
        .await;
    }
    let report = w.tick(t0() + Duration::minutes(1)).await;
    assert_eq!(report.events.failed, 2, "{report}");
    // Only exit 75 is retried; exit 3 is dead, not a retry.
    assert_eq!(
        report.events.retries,
        [("exit_code".to_owned(), 1)].into(),
        "{report}"
    );
    let dead = w.job("cedar-plan:2027-08:eligibility").await;
    assert_eq!(dead.state, JobState::Dead);
    let a = dead.current_attempt().unwrap();
    assert_eq!(a.exit_code, Some(3));
    assert!(a.output_tail.as_deref().unwrap().contains("bad segment"));
    assert!(dead.reason.as_deref().unwrap().contains("exit code 3"));
    let retried = w.job("cedar-plan:2027-09:eligibility").await;
    assert_eq!(retried.state, JobState::Queued, "{:?}", retried.reason);
    assert!(retried
        .not_before
        .is_some_and(|nb| nb > t0() + Duration::minutes(1)));
    assert_eq!(retried.current_attempt().unwrap().exit_code, Some(75));
}

// ---- Reconcile scenarios ----------------------------------------------------------------

fn eligibility(batch: &str) -> (String, String) {
    let id = format!("cedar-plan:{batch}:eligibility");
    let body = request(&id, "cedar-plan", "eligibility", batch, 1);
    (id, body)
}

fn live(i: &ManagedInstance) -> bool {
    i.state.is_live()
}

/// No `started` within the boot timeout (cedar-plan: 8m): the instance is terminated and the
/// job retried as a new attempt after a backoff; a healthy instance is left alone.
pub async fn boot_timeout_terminates_and_retries(w: &World) {
    use mayfly::scheduler::reconcile::Finding;
    w.apply_examples().await;
    let (id, body) = eligibility("2028-01");
    w.submit(&body).await;
    w.tick(t0()).await;
    let (iid, launched) = w.running_on(&id).await;
    let early = w.tick(launched + Duration::minutes(7)).await;
    assert_eq!(early.reconcile.boot_timeouts, 0, "{early}");
    assert_eq!(early.reconcile.healthy, 1, "{early}");
    assert!(live(&w.instance(&w.cluster, &iid).await));

    let late = w.tick(launched + Duration::minutes(9)).await;
    assert_eq!(late.reconcile.boot_timeouts, 1, "{late}");
    assert_eq!(
        late.reconcile.retries,
        [("boot_timeout".to_owned(), 1)].into(),
        "{late}"
    );
    assert_eq!(late.reconcile.terminated, vec![iid.clone()], "{late}");
    let f = &late.reconcile.findings[0];
    assert_eq!(f.finding, Finding::BootTimeout);
    assert!(f.why.contains("boot timeout 8m"), "{}", f.why);
    assert!(!live(&w.instance(&w.cluster, &iid).await));
    let job = w.job(&id).await;
    assert_eq!(job.state, JobState::Queued, "{:?}", job.reason);
    assert!(job.reason.as_deref().unwrap().contains("boot timeout"));
    let not_before = job.not_before.expect("backoff");
    assert!(not_before > launched + Duration::minutes(9));

    // After the backoff, attempt 2 launches on a new instance.
    let retry = w.tick(not_before + Duration::seconds(1)).await;
    assert_eq!(retry.launch.instances.len(), 1, "{retry}");
    let job = w.job(&id).await;
    assert_eq!((job.state, job.attempt), (JobState::Running, 2));
    assert_ne!(
        job.current_attempt().unwrap().instance_id.as_deref(),
        Some(iid.as_str())
    );
}

/// Heartbeats stop: the attempt fails as `heartbeat lost` and is retried. A job running past
/// its kind's maximum runtime (30m) is terminated and dead (not retryable).
pub async fn heartbeat_and_max_runtime_deadlines(w: &World) {
    use mayfly::events::InstanceEvent;
    w.apply_examples().await;
    let (quiet, body) = eligibility("2028-02");
    w.submit(&body).await;
    let (long, body) = eligibility("2028-03");
    w.submit(&body).await;
    w.tick(t0()).await;
    let (quiet_iid, launched) = w.running_on(&quiet).await;
    let (long_iid, _) = w.running_on(&long).await;
    let started = launched + Duration::minutes(1);
    send_event(w, &InstanceEvent::started(&quiet, 1, &quiet_iid, started)).await;
    send_event(w, &InstanceEvent::started(&long, 1, &long_iid, started)).await;
    w.tick(started + Duration::seconds(10)).await;
    // The long job keeps heartbeating every 2 minutes, past its 30m limit.
    let mut at = started;
    while at < started + Duration::minutes(36) {
        at += Duration::minutes(2);
        send_event(w, &InstanceEvent::heartbeat(&long, 1, &long_iid, at)).await;
        let r = w.tick(at + Duration::seconds(5)).await;
        if at == started + Duration::minutes(6) {
            assert_eq!(r.reconcile.heartbeat_timeouts, 1, "{r}");
            assert!(r.reconcile.terminated.contains(&quiet_iid), "{r}");
        }
    }
    let q = w.job(&quiet).await;
    assert_eq!(
        q.attempts[0].cause,
        Some(mayfly::retry::FailureCause::HeartbeatLost)
    );
    assert!(q.attempts.len() >= 2, "heartbeat lost is retried: {q:?}");
    let l = w.job(&long).await;
    assert_eq!(l.state, JobState::Dead, "{:?}", l.reason);
    assert!(
        l.reason.as_deref().unwrap().contains("maximum runtime"),
        "{:?}",
        l.reason
    );
    assert!(!live(&w.instance(&w.cluster, &long_iid).await));
}

/// An instance that disappears without `finished` is first recorded as gone, then judged lost
/// after the grace period and retried; after a spot notice the cause is the interruption.
pub async fn lost_instances_are_retried_after_a_second_look(w: &World) {
    use mayfly::events::InstanceEvent;
    use mayfly::retry::FailureCause;
    w.apply_examples().await;
    let (plain, body) = eligibility("2028-04");
    w.submit(&body).await;
    let (spot, body) = eligibility("2028-05");
    w.submit(&body).await;
    w.tick(t0()).await;
    let (plain_iid, launched) = w.running_on(&plain).await;
    let (spot_iid, _) = w.running_on(&spot).await;
    let at = launched + Duration::minutes(1);
    for (id, iid) in [(&plain, &plain_iid), (&spot, &spot_iid)] {
        send_event(w, &InstanceEvent::started(id, 1, iid, at)).await;
    }
    send_event(
        w,
        &InstanceEvent::interrupted(
            &spot,
            1,
            &spot_iid,
            at + Duration::seconds(30),
            "{\"action\":\"terminate\"}",
        ),
    )
    .await;
    w.tick(at + Duration::minutes(1)).await;
    w.compute
        .inner
        .terminate(&[plain_iid.clone(), spot_iid.clone()])
        .await
        .unwrap();
    let first = w.tick(at + Duration::minutes(2)).await;
    assert_eq!(first.reconcile.lost, 0, "one look is not enough: {first}");
    assert_eq!(w.job(&plain).await.state, JobState::Running);
    assert!(w
        .job(&plain)
        .await
        .current_attempt()
        .unwrap()
        .gone_at
        .is_some());
    let second = w.tick(at + Duration::minutes(5)).await;
    assert_eq!(second.reconcile.lost, 2, "{second}");
    let p = w.job(&plain).await;
    assert_eq!(p.attempts[0].cause, Some(FailureCause::InstanceLost));
    let s = w.job(&spot).await;
    assert_eq!(s.attempts[0].cause, Some(FailureCause::SpotInterruption));
    for j in [&p, &s] {
        assert!(
            matches!(j.state, JobState::Queued),
            "{}: {:?}",
            j.job_id,
            j.state
        );
    }
}

/// Orphans (no job, a finished job) are marked, then terminated on the first pass after the
/// grace period; a protected instance and another deployment's are never touched.
pub async fn orphans_are_reaped_after_grace_and_others_never_touched(w: &World) {
    use mayfly::scheduler::reconcile::{Finding, ORPHANED_AT};
    w.apply_examples().await;
    let cluster = w.cluster.clone();
    let other = format!("{cluster}-other");
    let orphan = w
        .inject_instance(&[
            ("mayfly:cluster", &cluster),
            ("mayfly:job-id", "nobody:1:x"),
            ("mayfly:attempt", "1"),
        ])
        .await;
    let untagged = w.inject_instance(&[("mayfly:cluster", &cluster)]).await;
    let protected = w
        .inject_instance(&[("mayfly:cluster", &cluster), ("mayfly:protect", "true")])
        .await;
    let foreign = w
        .inject_instance(&[("mayfly:cluster", &other), ("mayfly:job-id", "nobody:1:x")])
        .await;
    let grace = w.scheduler(0).settings.orphan_grace;
    let t = Utc::now();
    let first = w.tick(t).await;
    assert_eq!(first.reconcile.orphans_marked, 2, "{first}");
    assert!(first.reconcile.terminated.is_empty(), "{first}");
    assert!(first
        .reconcile
        .findings
        .iter()
        .any(|f| f.finding == Finding::Protected
            && f.instance_id.as_deref() == Some(protected.as_str())));
    assert!(w
        .instance(&cluster, &orphan)
        .await
        .tag(ORPHANED_AT)
        .is_some());
    let before = w.tick(t + grace - Duration::seconds(5)).await;
    assert!(before.reconcile.terminated.is_empty(), "{before}");
    let after = w.tick(t + grace + Duration::seconds(5)).await;
    let mut reaped = after.reconcile.terminated.clone();
    reaped.sort();
    let mut expected = vec![orphan.clone(), untagged.clone()];
    expected.sort();
    assert_eq!(reaped, expected, "{after}");
    assert_eq!(after.reconcile.orphans_terminated, 2);
    for id in [&orphan, &untagged] {
        assert!(!live(&w.instance(&cluster, id).await), "{id}");
    }
    assert!(live(&w.instance(&cluster, &protected).await));
    assert!(live(&w.instance(&other, &foreign).await));
    assert!(w
        .instance(&other, &foreign)
        .await
        .tag(ORPHANED_AT)
        .is_none());
    let much_later = w.tick(t + grace * 10).await;
    assert!(much_later.reconcile.terminated.is_empty(), "{much_later}");
    assert!(live(&w.instance(&cluster, &protected).await));
}

/// An instance still up after its job succeeded is an orphan too.
pub async fn an_instance_outliving_its_job_is_reaped(w: &World) {
    use mayfly::events::InstanceEvent;
    w.apply_examples().await;
    let (id, body) = eligibility("2028-06");
    w.submit(&body).await;
    w.tick(t0()).await;
    let (iid, launched) = w.running_on(&id).await;
    let at = launched + Duration::minutes(1);
    send_event(w, &InstanceEvent::started(&id, 1, &iid, at)).await;
    send_event(
        w,
        &InstanceEvent::finished(&id, 1, &iid, at + Duration::minutes(2), 0, 120, "ok\n"),
    )
    .await;
    let t = at + Duration::minutes(3);
    let r = w.tick(t).await;
    assert_eq!(w.job(&id).await.state, JobState::Succeeded);
    assert_eq!(r.reconcile.orphans_marked, 1, "{r}");
    let grace = w.scheduler(0).settings.orphan_grace;
    let r = w.tick(t + grace).await;
    assert_eq!(r.reconcile.terminated, vec![iid.clone()], "{r}");
    // Its orphan time is the attempt's overhead: the bill now ends at the termination.
    let job = w.job(&id).await;
    assert_eq!(job.current_attempt().unwrap().ended_at, Some(t + grace));
}

/// Three consecutive boot failures pause the payer with the reason; resuming clears the
/// count. A `started` event resets the count.
pub async fn circuit_breaker_pauses_after_consecutive_boot_failures(w: &World) {
    use mayfly::events::InstanceEvent;
    w.apply_examples().await;
    let ids: Vec<String> = (1..=3)
        .map(|n| eligibility(&format!("2028-1{n}")))
        .map(|(id, _)| id)
        .collect();
    for n in 1..=3 {
        w.submit(&eligibility(&format!("2028-1{n}")).1).await;
    }
    w.tick(t0()).await;
    let (first_iid, launched) = w.running_on(&ids[0]).await;
    // One instance starts: it resets the count, and it is not a failure.
    send_event(
        w,
        &InstanceEvent::started(&ids[0], 1, &first_iid, launched + Duration::minutes(1)),
    )
    .await;
    let r = w.tick(launched + Duration::minutes(9)).await;
    assert_eq!(r.reconcile.boot_timeouts, 2, "{r}");
    let row = w.config.get("cedar-plan").await.unwrap().unwrap();
    assert_eq!(row.boot_failures, 2);
    assert!(row.paused.is_none());
    // The retried attempts fail to boot too: the third consecutive failure trips it.
    let mut t = launched + Duration::minutes(9);
    let mut paused = None;
    for _ in 0..6 {
        t += Duration::minutes(10);
        let r = w.tick(t).await;
        if !r.reconcile.paused_payers.is_empty() {
            paused = Some(r);
            break;
        }
    }
    let r = paused.expect("the breaker trips");
    assert_eq!(r.reconcile.paused_payers, vec!["cedar-plan".to_owned()]);
    let row = w.config.get("cedar-plan").await.unwrap().unwrap();
    let reason = row.paused.clone().expect("paused");
    assert!(reason.contains("3 consecutive boot failures"), "{reason}");
    assert!(
        reason.contains("mayfly payers resume cedar-plan"),
        "{reason}"
    );
    // Paused: nothing of the payer launches.
    let quiet = w.tick(t + Duration::hours(1)).await;
    assert!(
        quiet
            .launch
            .instances
            .iter()
            .all(|(j, _, _)| !j.starts_with("cedar-plan")),
        "{quiet}"
    );
    // Resume clears the pause and the count.
    w.config
        .set_paused("cedar-plan", None, row.version, t)
        .await
        .unwrap();
    let row = w.config.get("cedar-plan").await.unwrap().unwrap();
    assert_eq!((row.paused.as_deref(), row.boot_failures), (None, 0));

    // Two failures on the count, then an instance that starts: the count is back to zero.
    w.config.add_boot_failure("cedar-plan").await.unwrap();
    assert_eq!(w.config.add_boot_failure("cedar-plan").await.unwrap(), 2);
    let (id, body) = eligibility("2028-19");
    w.submit(&body).await;
    let t = t + Duration::hours(2);
    w.tick(t).await;
    let (iid, _) = w.running_on(&id).await;
    send_event(
        w,
        &InstanceEvent::started(&id, 1, &iid, t + Duration::seconds(30)),
    )
    .await;
    let r = w.tick(t + Duration::minutes(1)).await;
    assert_eq!(
        r.events.breakers_reset,
        vec!["cedar-plan".to_owned()],
        "{r}"
    );
    let row = w.config.get("cedar-plan").await.unwrap().unwrap();
    assert_eq!(row.boot_failures, 0);
}

/// A dead tier-0 job blocks its batch's higher tiers; `jobs retry` queues it with a fresh
/// budget, the blocked job waits again, and runs once the retried job succeeds. `jobs cancel`
/// terminates a running job's instance.
pub async fn retry_releases_blocked_tiers_and_cancel_terminates(w: &World) {
    use mayfly::events::InstanceEvent;
    w.apply_examples().await;
    let (elig, body) = eligibility("2028-07");
    w.submit(&body).await;
    let members = "cedar-plan:2028-07:members".to_owned();
    w.submit(&request(&members, "cedar-plan", "members", "2028-07", 1))
        .await;
    w.tick(t0()).await;
    let (iid, launched) = w.running_on(&elig).await;
    let at = launched + Duration::minutes(1);
    send_event(
        w,
        &InstanceEvent::finished(&elig, 1, &iid, at, 3, 10, "bad file\n"),
    )
    .await;
    w.tick(at + Duration::minutes(1)).await;
    assert_eq!(w.job(&elig).await.state, JobState::Dead);
    assert_eq!(w.job(&members).await.state, JobState::Blocked);
    let s = w.scheduler(0);
    let err = s.retry_job(&members, at).await.unwrap_err();
    assert!(err.to_string().contains("only dead or cancelled"), "{err}");
    let action = s.retry_job(&elig, at + Duration::minutes(2)).await.unwrap();
    assert_eq!((action.from, action.to), (JobState::Dead, JobState::Queued));
    let r = w.tick(at + Duration::minutes(3)).await;
    let job = w.job(&elig).await;
    assert_eq!(
        (job.state, job.attempt, job.attempt_base),
        (JobState::Running, 2, 1),
        "{r}"
    );
    assert_eq!(
        w.job(&members).await.state,
        JobState::Queued,
        "released from blocked"
    );
    let (iid2, _) = w.running_on(&elig).await;
    send_event(
        w,
        &InstanceEvent::finished(&elig, 2, &iid2, at + Duration::minutes(4), 0, 10, "ok\n"),
    )
    .await;
    w.tick(at + Duration::minutes(5)).await;
    assert_eq!(w.job(&elig).await.state, JobState::Succeeded);
    let (members_iid, _) = w.running_on(&members).await;

    let cancel = s
        .cancel_job(&members, Some("wrong file"), at + Duration::minutes(6))
        .await
        .unwrap();
    assert_eq!(cancel.terminated, vec![members_iid.clone()]);
    let job = w.job(&members).await;
    assert_eq!(job.state, JobState::Cancelled);
    assert!(job.reason.as_deref().unwrap().contains("wrong file"));
    assert!(!live(&w.instance(&w.cluster, &members_iid).await));
    let again = s
        .cancel_job(&members, None, at + Duration::minutes(7))
        .await
        .unwrap_err();
    assert!(again.to_string().contains("already finished"), "{again}");
}
