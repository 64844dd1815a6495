//! A deployment under test, on fakes or on the emulator, and the scenarios both must pass.
//!
//! Here: [`World`] (one deployment's ports) and [`on_fakes`], the world on the in-memory
//! fakes (the emulator's is built by its tests), with the helpers the scenarios share. The
//! test doubles a world is built with are in `doubles`, the scenarios in `launch`, `events`
//! and `reconcile`; everything is re-exported here.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use mayfly::catalog::Catalog;
use mayfly::clock::{Clock, ManualClock};
use mayfly::fakes::{FakeCompute, FakeConfigStore, FakeLedger, FakeQueue};
use mayfly::job::{Job, JobState};
use mayfly::ports::{ConfigStore, LaunchRequest, Ledger, ManagedInstance, Queue};
use mayfly::profile::{self, GlobalCaps, PayerProfile, ValidateContext};
use mayfly::scheduler::{
    Deps, EventSenders, PassReport, Scheduler, Settings, TickOptions, UserDataSource,
};

mod doubles;
mod events;
mod launch;
mod reconcile;

pub use doubles::{EchoUserData, Fault, FaultyCompute};
// The scenarios; not every test crate runs each group.
#[allow(unused_imports)]
pub use events::*;
#[allow(unused_imports)]
pub use launch::*;
#[allow(unused_imports)]
pub use reconcile::*;

/// One deployment's ports, and what the test needs to look inside.
pub struct World {
    pub cluster: String,
    pub config: Arc<dyn ConfigStore>,
    pub ledger: Arc<dyn Ledger>,
    pub intake: Arc<dyn Queue>,
    pub intake_dlq: Arc<dyn Queue>,
    pub events: Arc<dyn Queue>,
    /// `events` itself when it is the in-memory queue: instances then send with their own
    /// `SenderId` and the scheduler applies an event only from the instance it names. `None`
    /// on the emulator, whose `SenderId` is a constant: senders are not verified there.
    pub events_fake: Option<Arc<FakeQueue>>,
    pub events_dlq: Arc<dyn Queue>,
    pub compute: Arc<FaultyCompute>,
    pub user_data: Arc<dyn UserDataSource>,
    /// Subnets and security groups the compute accepts (the emulator checks them).
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub instance_profile: String,
    /// The scheduler's clock, when a test drives it; otherwise a pass records its own time.
    pub clock: Option<Arc<dyn Clock>>,
    /// The deployment's most jobs per launch group (`None`: the default).
    pub max_group: Option<u32>,
    /// Launch groups ask for all their instances (`MinCount = MaxCount`): on moto, which
    /// launches exactly `MinCount`.
    pub group_min_is_max: bool,
}

/// A deployment on the in-memory fakes, with the network names the fakes accept.
pub fn on_fakes() -> World {
    let events = Arc::new(FakeQueue::new());
    World {
        cluster: "fake".into(),
        config: Arc::new(FakeConfigStore::new()),
        ledger: Arc::new(FakeLedger::new()),
        intake: Arc::new(FakeQueue::new()),
        intake_dlq: Arc::new(FakeQueue::new()),
        events: events.clone(),
        events_fake: Some(events),
        events_dlq: Arc::new(FakeQueue::new()),
        compute: Arc::new(FaultyCompute::new(Arc::new(FakeCompute::new()))),
        user_data: Arc::new(EchoUserData),
        subnets: vec!["subnet-0a1b2c3d4e5f60011".into()],
        security_groups: vec!["sg-0a1b2c3d4e5f60021".into()],
        instance_profile: "mayfly-instance".into(),
        clock: None,
        max_group: None,
        group_min_is_max: false,
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
        if self.events_fake.is_none() {
            settings.event_senders = EventSenders::Unverified;
        }
        if let Some(n) = self.max_group {
            settings.max_group = n;
        }
        settings.group_min_is_max = self.group_min_is_max;
        let mut scheduler = Scheduler::new(deps, settings);
        // Passes are driven at chosen times: unless a test sets a clock, the moments they
        // record are those times (a clock at the epoch never wins over the pass's own).
        scheduler.clock = self
            .clock
            .clone()
            .unwrap_or_else(|| Arc::new(ManualClock::at(DateTime::<Utc>::UNIX_EPOCH)));
        scheduler
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
            root_volume_kms_key: None,
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

    /// The job an id names: `payer/job_id`, or a producer's job_id alone when one payer has it
    /// (as `mayfly explain` finds it).
    pub async fn job(&self, id: &str) -> Job {
        mayfly::job_lookup::find_job(self.config.as_ref(), self.ledger.as_ref(), id)
            .await
            .unwrap_or_else(|e| panic!("job {id}: {e}"))
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
        let job_id = self.job(job_id).await.job_id;
        let job_id = job_id.as_str();
        self.live_instances()
            .await
            .into_iter()
            .filter(|i| i.tag("mayfly:job-id") == Some(job_id))
            .collect()
    }
}

/// A job request. `job_id` may be given as mayfly names the job (`payer/job_id`): the request
/// carries the producer's part.
pub fn request(job_id: &str, payer: &str, kind: &str, batch: &str, gib: u64) -> String {
    let job_id = job_id
        .strip_prefix(payer)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(job_id);
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
            "cedar-plan/cedar-plan:2026-11:eligibility",
            "cedar-plan",
            "eligibility",
            1,
        ),
        (
            "cedar-plan/cedar-plan:2026-11:members",
            "cedar-plan",
            "members",
            2,
        ),
        (
            "cedar-plan/cedar-plan:2026-11:claims",
            "cedar-plan",
            "claims",
            20,
        ),
        (
            "harbor-health/harbor-health:2026-11-23:members",
            "harbor-health",
            "members",
            1,
        ),
        (
            "harbor-health/harbor-health:2026-11-23:claims",
            "harbor-health",
            "claims",
            48,
        ),
    ] {
        let batch = id.split(':').nth(1).unwrap();
        w.submit(&request(id, payer, kind, batch, gib)).await;
    }
}

/// Sends an instance event as the instance would.
/// The `SenderId` SQS stamps on a message an instance sends with its profile's role.
pub fn instance_sender(instance_id: &str) -> String {
    format!("AROAFAKEPAYERROLE0001:{instance_id}")
}

pub async fn send_event(w: &World, e: &mayfly::events::InstanceEvent) {
    match &w.events_fake {
        Some(fake) => {
            assert!(
                std::ptr::addr_eq(Arc::as_ptr(fake), Arc::as_ptr(&w.events)),
                "World::events_fake must be World::events"
            );
            // As SQS stamps an event an instance sends with its instance profile's role.
            fake.send_as(&instance_sender(&e.instance_id), &e.to_json(), &[]);
        }
        None => {
            w.events.send(&e.to_json(), &[]).await.expect("send event");
        }
    }
}
