//! The scheduling pass against the in-memory fakes: the same scenarios the emulator runs,
//! plus the client-token path that only the fake (like EC2, unlike moto) honours.

mod support;

use std::sync::Arc;

use mayfly::daemon::cache::CachedLedger;
use mayfly::fakes::{FakeCompute, FakeLedger, FakeQueue};
use mayfly::job::{Job, JobRequest, JobState};
use mayfly::ports::{Compute, ComputeError, LaunchRequest, Ledger};
use mayfly::profile::CapacityType;
use mayfly::scheduler::client_token;
use mayfly::scheduler::TickOptions;
use mayfly::sizing::Rung;
use support::world::{self, on_fakes as world, FaultyCompute, World};

#[tokio::test]
async fn first_pass_launches_tier_zero() {
    world::first_pass_launches_tier_zero(&world()).await;
}

#[tokio::test]
async fn duplicates_and_malformed_requests() {
    world::duplicates_and_malformed_requests(&world()).await;
}

#[tokio::test]
async fn crash_before_run_instances() {
    world::crash_before_run_instances(&world()).await;
}

#[tokio::test]
async fn crash_after_run_instances() {
    world::crash_after_run_instances(&world()).await;
}

#[tokio::test]
async fn capacity_falls_back_to_next_rung() {
    world::capacity_falls_back_to_next_rung(&world()).await;
}

#[tokio::test]
async fn throttling_stops_the_pass() {
    world::throttling_stops_the_pass(&world()).await;
}

#[tokio::test]
async fn configuration_error_pauses_the_payer_and_loses_no_job() {
    world::configuration_error_pauses_the_payer_and_loses_no_job(&world()).await;
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    world::dry_run_changes_nothing(&world()).await;
}

#[tokio::test]
async fn happy_path_costs_at_most_four_ledger_writes_and_batched_queue_calls() {
    let ledger = Arc::new(FakeLedger::new());
    let intake = Arc::new(FakeQueue::new());
    let w = World {
        ledger: ledger.clone(),
        intake: intake.clone(),
        ..world()
    };
    w.apply_examples().await;
    for n in 0..20 {
        w.submit(&world::request(
            &format!("prairie-mutual/prairie-mutual:r{n}:remittance"),
            "prairie-mutual",
            "remittance",
            &format!("r{n}"),
            0,
        ))
        .await;
    }
    let report = w.tick(world::t0()).await;
    assert_eq!(report.ingest.accepted, 20);
    // Create, launching, running: three writes so far; `succeeded` will be the fourth.
    for (job, _, _) in &report.launch.instances {
        assert_eq!(ledger.writes_for(job), 3, "{job}");
    }
    let (receives, deletes) = intake.calls();
    assert!(
        receives as f64 / 20.0 <= 0.2,
        "{receives} ReceiveMessage calls for 20 jobs"
    );
    assert!(
        deletes as f64 / 20.0 <= 0.2,
        "{deletes} DeleteMessageBatch calls for 20 jobs"
    );
}

fn request(token: &str, user_data: &str) -> LaunchRequest {
    LaunchRequest {
        client_token: token.into(),
        rung: Rung {
            instance_type: "m5.large".into(),
            subnet: "subnet-0a".into(),
            capacity: CapacityType::OnDemand,
        },
        image_id: "ami-0123456789abcdef0".into(),
        security_groups: vec!["sg-0a".into()],
        instance_profile: "mayfly-instance".into(),
        root_volume_gib: 30,
        root_volume_kms_key: None,
        user_data: user_data.into(),
        tags: vec![("mayfly:cluster".into(), "fake".into())],
    }
}

#[tokio::test]
async fn the_fake_honours_client_tokens_as_ec2_does() {
    let ec2 = FakeCompute::new();
    let first = ec2.launch(&request("t-1", "echo a")).await.unwrap();
    let again = ec2.launch(&request("t-1", "echo a")).await.unwrap();
    assert_eq!(
        first.instance_id, again.instance_id,
        "same token and parameters: same instance"
    );
    let mismatch = ec2.launch(&request("t-1", "echo b")).await.unwrap_err();
    assert!(matches!(mismatch, ComputeError::IdempotentMismatch { .. }));
    assert_eq!(ec2.instances().len(), 1);
}

#[tokio::test]
async fn a_replay_with_the_same_token_never_launches_twice_on_ec2_semantics() {
    // When the tag lookup cannot see a just-launched instance (EC2's eventual consistency), the
    // replay with the same token still yields the one instance.
    let fake = Arc::new(FakeCompute::new());
    let w = World {
        compute: Arc::new(FaultyCompute::new(fake.clone())),
        ..world()
    };
    w.apply_examples().await;
    w.submit(&world::request(
        "cedar-plan/cedar-plan:2027-06:eligibility",
        "cedar-plan",
        "eligibility",
        "2027-06",
        1,
    ))
    .await;
    w.compute.script(world::Fault::LoseResponse);
    w.tick(world::t0()).await;
    let job = w.job("cedar-plan/cedar-plan:2027-06:eligibility").await;
    let attempt = job.current_attempt().unwrap();
    let token = client_token(&w.cluster, &job.job_id, 1, attempt.rung.as_ref().unwrap());
    assert_eq!(attempt.client_token.as_deref(), Some(token.as_str()));
    // Replay exactly what the pass sent: EC2 returns the same instance.
    let sent = w.compute.calls().pop().unwrap();
    let replayed = fake.launch(&sent).await.unwrap();
    assert_eq!(fake.instances().len(), 1);
    assert_eq!(fake.instances()[0].instance_id, replayed.instance_id);
}

#[tokio::test]
async fn events_complete_jobs_and_unlock_the_next_tier() {
    world::events_complete_jobs_and_unlock_the_next_tier(&world()).await;
}

#[tokio::test]
async fn non_zero_exit_fails_with_code_and_tail() {
    world::non_zero_exit_fails_with_code_and_tail(&world()).await;
}

#[tokio::test]
async fn rejected_requests_carry_a_reason_naming_the_field() {
    let dlq = Arc::new(FakeQueue::new());
    let w = World {
        intake_dlq: dlq.clone(),
        ..world()
    };
    w.apply_examples().await;
    w.submit(r#"{"job_id":"bad job id","payer_id":"cedar-plan","kind":"eligibility","batch":"b"}"#)
        .await;
    w.submit(r#"{"job_id":"ok-1","payer_id":"cedar-plan","kind":"dental","batch":"b"}"#)
        .await;
    w.submit(
        r#"{"job_id":"ok-2","payer_id":"cedar-plan","kind":"claims","batch":"b","priority":90}"#,
    )
    .await;
    let report = w.tick(world::t0()).await;
    assert_eq!(report.ingest.rejected, 3);
    let reasons: Vec<String> = dlq
        .contents()
        .into_iter()
        .map(|(_, attrs)| {
            attrs
                .into_iter()
                .find(|(k, _)| k == "mayfly-error")
                .map(|(_, v)| v)
                .unwrap()
        })
        .collect();
    assert!(reasons[0].starts_with("job_id:"), "{reasons:?}");
    assert!(
        reasons[1].starts_with("kind:") && reasons[1].contains("dental"),
        "{reasons:?}"
    );
    assert!(reasons[2].starts_with("priority:"), "{reasons:?}");
}

#[tokio::test]
async fn boot_timeout_terminates_and_retries() {
    world::boot_timeout_terminates_and_retries(&world()).await;
}

#[tokio::test]
async fn heartbeat_and_max_runtime_deadlines() {
    world::heartbeat_and_max_runtime_deadlines(&world()).await;
}

#[tokio::test]
async fn lost_instances_are_retried_after_a_second_look() {
    world::lost_instances_are_retried_after_a_second_look(&world()).await;
}

#[tokio::test]
async fn orphans_are_reaped_after_grace_and_others_never_touched() {
    world::orphans_are_reaped_after_grace_and_others_never_touched(&world()).await;
}

#[tokio::test]
async fn an_instance_outliving_its_job_is_reaped() {
    world::an_instance_outliving_its_job_is_reaped(&world()).await;
}

#[tokio::test]
async fn circuit_breaker_pauses_after_consecutive_boot_failures() {
    world::circuit_breaker_pauses_after_consecutive_boot_failures(&world()).await;
}

#[tokio::test]
async fn retry_releases_blocked_tiers_and_cancel_terminates() {
    world::retry_releases_blocked_tiers_and_cancel_terminates(&world()).await;
}

#[tokio::test]
async fn a_pass_that_skips_reconcile_still_launches_but_describes_no_instances() {
    let ec2 = Arc::new(FakeCompute::new());
    let w = World {
        compute: Arc::new(FaultyCompute::new(ec2.clone())),
        ..world()
    };
    w.apply_examples().await;
    w.submit(r#"{"job_id":"cedar-plan:2029-07:eligibility","payer_id":"cedar-plan","kind":"eligibility","batch":"2029-07"}"#)
        .await;
    let (_, describes, _) = ec2.calls();
    let opts = TickOptions {
        skip_reconcile: true,
        ..TickOptions::default()
    };
    let quick = w.scheduler(60).tick(opts, world::t0()).await.unwrap();
    assert_eq!(quick.launch.instances.len(), 1, "{quick}");
    assert_eq!(quick.reconcile.instances_seen, 0);
    assert_eq!(ec2.calls().1, describes, "no DescribeInstances");
    let full = w.tick(world::t0() + chrono::Duration::seconds(10)).await;
    assert_eq!(full.reconcile.instances_seen, 1, "{full}");
    assert!(ec2.calls().1 > describes);
}

// ---- The daemon's ledger copy -----------------------------------------------------------

/// A world whose passes read and write through the daemon's ledger copy, and the ledger
/// behind it (where other processes write).
fn world_with_copy() -> (World, Arc<CachedLedger>, Arc<FakeLedger>) {
    let behind = Arc::new(FakeLedger::new());
    let copy = Arc::new(CachedLedger::new(behind.clone()));
    let w = World {
        ledger: copy.clone(),
        ..world()
    };
    (w, copy, behind)
}

#[tokio::test]
async fn with_the_daemon_copy_tiers_unlock_on_events() {
    world::events_complete_jobs_and_unlock_the_next_tier(&world_with_copy().0).await;
}

#[tokio::test]
async fn with_the_daemon_copy_lost_instances_are_retried() {
    world::lost_instances_are_retried_after_a_second_look(&world_with_copy().0).await;
}

#[tokio::test]
async fn with_the_daemon_copy_retry_and_cancel_work() {
    world::retry_releases_blocked_tiers_and_cancel_terminates(&world_with_copy().0).await;
}

fn quick() -> TickOptions {
    TickOptions {
        skip_reconcile: true,
        ..TickOptions::default()
    }
}

/// A job in backoff, written straight to the ledger behind the copy. `id` is mayfly's
/// (`cedar-plan/job_id`).
async fn waiting_job(behind: &FakeLedger, id: &str, until: chrono::DateTime<chrono::Utc>) {
    let id = id.strip_prefix("cedar-plan/").expect("a cedar-plan job");
    let req = JobRequest::parse(&format!(
        r#"{{"job_id":"{id}","payer_id":"cedar-plan","kind":"eligibility","batch":"2030-01"}}"#
    ))
    .unwrap();
    let mut job = Job::from_request(req, world::t0());
    job.not_before = Some(until);
    assert!(behind.create(&job).await.unwrap());
}

#[tokio::test]
async fn a_job_cancelled_elsewhere_is_never_launched_from_a_stale_copy() {
    let (w, _, behind) = world_with_copy();
    w.apply_examples().await;
    let id = "cedar-plan/cedar-plan:2030-01:eligibility";
    let t0 = world::t0();
    waiting_job(&behind, id, t0 + chrono::Duration::minutes(10)).await;
    let s = w.scheduler(60);
    let first = s.tick(quick(), t0).await.unwrap();
    assert!(first.launch.instances.is_empty(), "in backoff: {first}");

    // `mayfly jobs cancel`, from another process: the daemon's copy still has it queued.
    let before = behind.get(id).await.unwrap().unwrap();
    let mut after = before.clone();
    after
        .transition(JobState::Cancelled, Some("wrong file".into()), t0)
        .unwrap();
    after.version = before.version + 1;
    behind.update(&after, before.version).await.unwrap();

    let later = t0 + chrono::Duration::minutes(11);
    let stale = s.tick(quick(), later).await.unwrap();
    assert!(stale.launch.instances.is_empty(), "{stale}");
    assert_eq!(
        stale.launch.conflicts, 1,
        "its launching write lost: {stale}"
    );
    let next = s.tick(quick(), later).await.unwrap();
    assert!(next.launch.instances.is_empty(), "{next}");
    assert!(w.compute.calls().is_empty(), "no RunInstances at all");
    assert_eq!(w.job(id).await.state, JobState::Cancelled);
}

#[tokio::test]
async fn a_job_written_elsewhere_is_launched_after_the_copy_is_refreshed() {
    let (w, copy, behind) = world_with_copy();
    w.apply_examples().await;
    let s = w.scheduler(60);
    let t0 = world::t0();
    s.tick(quick(), t0).await.unwrap();
    // Another process (a Lambda pass, say) records a job the daemon's copy does not hold.
    let id = "cedar-plan/cedar-plan:2030-01:eligibility";
    waiting_job(&behind, id, t0).await;
    let before = s.tick(quick(), t0).await.unwrap();
    assert!(before.launch.instances.is_empty(), "{before}");

    copy.refresh().await.unwrap();
    let after = s.tick(quick(), t0).await.unwrap();
    assert_eq!(after.launch.instances.len(), 1, "{after}");
    assert_eq!(w.job(id).await.state, JobState::Running);
}

#[tokio::test]
async fn two_payers_may_use_one_job_id_and_a_job_from_before_keeps_its_own() {
    let w = world();
    w.apply_examples().await;
    let shared = "2031-01:load";
    w.submit(&world::request(
        shared,
        "cedar-plan",
        "eligibility",
        "2031-01",
        1,
    ))
    .await;
    w.submit(&world::request(
        shared,
        "harbor-health",
        "members",
        "2031-01",
        1,
    ))
    .await;
    // A job accepted before ids were per payer sits in the ledger under its producer's id
    // alone; its producer sends it again.
    let old = r#"{"job_id":"2030-12:old","payer_id":"cedar-plan","kind":"eligibility","batch":"2030-12"}"#;
    let mut legacy = Job::from_request(JobRequest::parse(old).unwrap(), world::t0());
    legacy.job_id = "2030-12:old".into();
    assert!(w.ledger.create(&legacy).await.unwrap());
    w.submit(old).await;

    let pass = w.tick(world::t0()).await;
    assert_eq!(pass.ingest.accepted, 2, "{pass}");
    assert_eq!(
        pass.ingest.duplicates, 1,
        "the re-send of the earlier job: {pass}"
    );
    assert_eq!(pass.ingest.conflicts, 0, "{pass}");
    // Two jobs, each on its own instance, tagged with its payer.
    let live = w.live_instances().await;
    let mut on = Vec::new();
    for payer in ["cedar-plan", "harbor-health"] {
        let id = format!("{payer}/{shared}");
        let job = w.job(&id).await;
        assert_eq!(
            (job.payer_id.as_str(), job.state),
            (payer, JobState::Running)
        );
        let iid = job.current_attempt().unwrap().instance_id.clone().unwrap();
        let instance = live.iter().find(|i| i.instance_id == iid).expect("live");
        assert_eq!(instance.tag("mayfly:payer"), Some(payer));
        on.push(iid);
    }
    assert_ne!(on[0], on[1]);
    // The producer's id alone names both: asked which.
    match mayfly::job_lookup::find_job(w.config.as_ref(), w.ledger.as_ref(), shared).await {
        Err(mayfly::job_lookup::LookupError::Ambiguous { ids, .. }) => assert_eq!(
            ids,
            ["cedar-plan/2031-01:load", "harbor-health/2031-01:load"]
        ),
        other => panic!("{other:?}"),
    }
    // The earlier job keeps its id: launched under it, and not accepted a second time.
    assert_eq!(w.job("2030-12:old").await.state, JobState::Running);
    assert_eq!(w.ledger.get("cedar-plan/2030-12:old").await.unwrap(), None);
}
