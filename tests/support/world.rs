//! A deployment under test, on fakes or on the emulator, and the scenarios both must pass.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use mayfly::catalog::Catalog;
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
        .tick(TickOptions { dry_run: true }, t0())
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
