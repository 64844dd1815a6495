//! What AWS answers is classified by what it means: on the in-memory fakes, which answer as
//! EC2 does (its error codes and messages, per-family vCPU quotas, an account without spot's
//! service-linked role, instance profiles IAM has not propagated yet, expired credentials,
//! denied operations, and the `StateReason` of an instance EC2 ended).

mod support;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use mayfly::catalog::Catalog;
use mayfly::explain::{explain, ExplainContext};
use mayfly::fakes::{FakeCompute, LaunchFault};
use mayfly::job::{Job, JobState};
use mayfly::ports::InstanceState;
use mayfly::profile::{CapacityPolicy, CapacityType, GlobalCaps};
use mayfly::quota::{FamilyGroup, QuotaPool};
use mayfly::retry::FailureCause;
use support::world::{on_fakes, request, t0, FaultyCompute, World};

/// A fakes world with its EC2 in reach.
fn world() -> (World, Arc<FakeCompute>) {
    let ec2 = Arc::new(FakeCompute::new());
    let w = World {
        compute: Arc::new(FaultyCompute::new(ec2.clone())),
        // These tests count one RunInstances per job and answer: each job launches on its
        // own here. Launch groups meet the same answers in tests/launch_groups.rs.
        max_group: Some(1),
        ..on_fakes()
    };
    (w, ec2)
}

/// cedar-plan's eligibility (spot, then on demand; c7i.large then c6i.large) of `batch`.
async fn submit_eligibility(w: &World, batch: &str) -> String {
    let id = format!("cedar-plan:{batch}:eligibility");
    w.submit(&request(&id, "cedar-plan", "eligibility", batch, 1))
        .await;
    id
}

fn rung_of(job: &Job) -> mayfly::sizing::Rung {
    job.current_attempt()
        .and_then(|a| a.rung.clone())
        .expect("a rung is recorded")
}

async fn explained(w: &World, id: &str, now: DateTime<Utc>) -> String {
    let ctx = ExplainContext {
        catalog: Catalog::shipped(),
        caps: GlobalCaps::default(),
        vcpu_quota: None,
        quotas: None,
        launch_budget: 60,
        now,
    };
    explain(w.config.as_ref(), w.ledger.as_ref(), &ctx, id)
        .await
        .expect("explained")
        .to_string()
}

const SLR: &str = "AuthFailure.ServiceLinkedRoleCreationNotPermitted";

#[tokio::test]
async fn spot_without_its_service_linked_role_moves_the_job_to_on_demand_and_says_why() {
    let (w, ec2) = world();
    ec2.set_spot_role(false);
    w.apply_examples().await;
    let a = submit_eligibility(&w, "2031-01").await;
    let b = submit_eligibility(&w, "2031-02").await;
    let report = w.tick(t0()).await;
    assert_eq!(report.launch.instances.len(), 2, "{report}");
    // Asked once: the first job's first spot rung. Every other spot rung of the pass is left
    // out without a call.
    assert_eq!(report.launch.spot_refusals, 1, "{report}");
    assert_eq!(
        w.compute.calls().len(),
        3,
        "spot once, then on demand for each job"
    );
    for id in [&a, &b] {
        let job = w.job(id).await;
        assert_eq!(job.state, JobState::Running, "{id}: {:?}", job.reason);
        assert_eq!(
            job.attempt, 1,
            "moved on within the attempt, in the same pass"
        );
        assert_eq!(rung_of(&job).capacity, CapacityType::OnDemand);
        let spot_skips: Vec<_> = job.current_attempt().unwrap().fallbacks.clone();
        assert_eq!(spot_skips.len(), 2, "both spot rungs: {spot_skips:?}");
        assert!(spot_skips
            .iter()
            .all(|f| f.code == SLR && f.rung.capacity == CapacityType::Spot));
    }
    let why = explained(&w, &a, t0()).await;
    assert!(why.contains(&format!("spot was skipped: {SLR}")), "{why}");
    assert!(why.contains("iam:CreateServiceLinkedRole"), "{why}");
    assert!(why.contains("spot.amazonaws.com"), "{why}");

    // Once the role exists, spot is used again: each pass asks afresh.
    ec2.set_spot_role(true);
    let c = submit_eligibility(&w, "2031-03").await;
    let next = w.tick(t0() + Duration::minutes(1)).await;
    assert_eq!(next.launch.spot_refusals, 0, "{next}");
    assert_eq!(rung_of(&w.job(&c).await).capacity, CapacityType::Spot);
}

#[tokio::test]
async fn an_instance_profile_iam_has_not_propagated_is_retried_then_launched() {
    let (w, ec2) = world();
    ec2.set_profile_propagated("mayfly-instance", false);
    w.apply_examples().await;
    let id = submit_eligibility(&w, "2031-04").await;

    let first = w.tick(t0()).await;
    assert_eq!(first.launch.profile_retries, 1, "{first}");
    assert!(
        first.launch.paused_payers.is_empty(),
        "not configuration yet"
    );
    let job = w.job(&id).await;
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.profile_refused_since, Some(t0()), "the first refusal");
    let reason = job.reason.clone().unwrap();
    assert!(
        reason.starts_with(
            "InvalidParameterValue: Value (mayfly-instance) for parameter iamInstanceProfile.name"
        ) && reason.contains("retrying until"),
        "{reason}"
    );
    assert_eq!(job.not_before, Some(t0() + Duration::seconds(10)));

    // Within the backoff nothing is tried; after it, refused again: the wait grows.
    let calls = w.compute.calls().len();
    w.tick(t0() + Duration::seconds(5)).await;
    assert_eq!(w.compute.calls().len(), calls, "in backoff");
    w.tick(t0() + Duration::seconds(20)).await;
    let job = w.job(&id).await;
    assert_eq!(
        job.profile_refused_since,
        Some(t0()),
        "still the first refusal"
    );
    assert_eq!(job.not_before, Some(t0() + Duration::seconds(40)));

    // IAM has caught up: it launches, and the refusals spent no retry.
    ec2.set_profile_propagated("mayfly-instance", true);
    let launched = w.tick(t0() + Duration::seconds(41)).await;
    assert_eq!(launched.launch.instances.len(), 1, "{launched}");
    let job = w.job(&id).await;
    assert_eq!(job.state, JobState::Running);
    assert_eq!((job.attempt, job.bounces), (3, 2));
    assert_eq!(job.attempts_in_budget(), 1);
    assert_eq!(job.profile_refused_since, None);
    let row = w.config.get("cedar-plan").await.unwrap().unwrap();
    assert_eq!(row.paused, None);
}

#[tokio::test]
async fn an_instance_profile_still_refused_after_the_bound_pauses_the_payer() {
    let (w, ec2) = world();
    ec2.set_profile_propagated("mayfly-instance", false);
    w.apply_examples().await;
    let id = submit_eligibility(&w, "2031-05").await;
    let mut at = t0();
    let mut paused = Vec::new();
    while at < t0() + Duration::minutes(7) && paused.is_empty() {
        paused = w.tick(at).await.launch.paused_payers;
        at += Duration::seconds(61);
    }
    assert_eq!(paused, ["cedar-plan"]);
    assert!(
        at > t0() + Duration::minutes(5),
        "retried for the whole bound first"
    );
    let job = w.job(&id).await;
    assert_eq!(job.state, JobState::Queued, "waiting, not dead");
    assert!(
        job.reason.as_deref().unwrap().contains("still refused"),
        "{:?}",
        job.reason
    );
    assert_eq!(job.attempts_in_budget(), 0);
    let row = w.config.get("cedar-plan").await.unwrap().unwrap();
    assert!(row.paused.unwrap().contains("InvalidParameterValue"));
}

#[tokio::test]
async fn a_missing_image_waits_with_the_code_and_launches_after_a_fixed_profile_is_applied() {
    let (w, ec2) = world();
    w.apply_examples().await;
    ec2.set_image("ami-0a1b2c3d4e5f60003", false);
    let a = submit_eligibility(&w, "2031-06").await;
    let b = submit_eligibility(&w, "2031-07").await;
    let report = w.tick(t0()).await;
    assert_eq!(report.launch.config_failures, 1, "{report}");
    assert_eq!(
        report.launch.launches_deferred, 1,
        "the payer's next launch waits: {report}"
    );
    assert_eq!(
        w.compute.calls().len(),
        1,
        "one refusal, then nothing more of the payer"
    );
    let job = w.job(&a).await;
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(
        job.reason.as_deref(),
        Some("InvalidAMIID.NotFound: The image id '[ami-0a1b2c3d4e5f60003]' does not exist")
    );
    assert_eq!(w.job(&b).await.state, JobState::Queued);
    let row = w.config.get("cedar-plan").await.unwrap().unwrap();
    assert!(row.paused_by_breaker);
    assert!(row
        .paused
        .as_deref()
        .unwrap()
        .contains("InvalidAMIID.NotFound"));
    let why = explained(&w, &a, t0()).await;
    assert!(why.contains("InvalidAMIID.NotFound"), "{why}");

    // The operator fixes the profile and applies it: the breaker's pause is lifted.
    let mut fixed = row.profile.clone();
    fixed.launch.image_id = "ami-0a1b2c3d4e5f60099".into();
    let applied = mayfly::cli::apply_profile(
        w.config.as_ref(),
        &fixed,
        Some(row.version),
        row.paused.as_deref(),
        t0(),
    )
    .await
    .expect("applied");
    assert!(applied.resumed.is_some());
    assert_eq!(
        w.config.get("cedar-plan").await.unwrap().unwrap().paused,
        None
    );
    let next = w.tick(t0() + Duration::minutes(1)).await;
    assert_eq!(next.launch.instances.len(), 2, "{next}");
    assert_eq!(
        w.compute.calls().last().unwrap().image_id,
        "ami-0a1b2c3d4e5f60099"
    );
    for id in [&a, &b] {
        assert_eq!(w.job(id).await.state, JobState::Running);
    }
}

#[tokio::test]
async fn a_missing_image_that_appears_launches_after_payers_resume() {
    let (w, ec2) = world();
    w.apply_examples().await;
    ec2.set_image("ami-0a1b2c3d4e5f60003", false);
    let a = submit_eligibility(&w, "2031-08").await;
    let report = w.tick(t0()).await;
    assert_eq!(report.launch.config_failures, 1, "{report}");
    assert_eq!(w.job(&a).await.state, JobState::Queued);
    let row = w.config.get("cedar-plan").await.unwrap().unwrap();
    assert!(row.paused_by_breaker);

    // Paused, the payer launches nothing, even once the image exists.
    ec2.set_image("ami-0a1b2c3d4e5f60003", true);
    let still = w.tick(t0() + Duration::minutes(1)).await;
    assert!(still.launch.instances.is_empty(), "{still}");
    assert_eq!(w.job(&a).await.state, JobState::Queued);

    // `mayfly payers resume cedar-plan`: the same job launches, nothing re-submitted.
    w.config
        .set_paused("cedar-plan", None, row.version, t0())
        .await
        .expect("resumed");
    let next = w.tick(t0() + Duration::minutes(2)).await;
    assert_eq!(next.launch.instances.len(), 1, "{next}");
    let job = w.job(&a).await;
    assert_eq!(job.state, JobState::Running);
    assert_eq!(
        job.attempts_in_budget(),
        1,
        "the refused launch spent no retry"
    );
}

#[tokio::test]
async fn a_denied_launch_names_the_operation_and_the_role_and_pauses_the_payer() {
    let (w, ec2) = world();
    ec2.set_denied("RunInstances", true);
    w.apply_examples().await;
    let id = submit_eligibility(&w, "2031-08").await;
    let report = w.tick(t0()).await;
    assert_eq!(report.launch.denied, 1, "{report}");
    assert_eq!(report.launch.paused_payers, ["cedar-plan"]);
    let job = w.job(&id).await;
    assert_eq!(job.state, JobState::Queued);
    let reason = job.reason.unwrap();
    assert!(
        reason.starts_with("UnauthorizedOperation: ec2:RunInstances on image"),
        "{reason}"
    );
    assert!(
        reason.contains("SchedulerRole in infra/mayfly.yaml"),
        "{reason}"
    );
    // Not transient: nothing is left `launching` for a replay.
    assert_eq!(report.launch.transient, 0);
}

#[tokio::test]
async fn expired_credentials_leave_jobs_waiting() {
    let (w, ec2) = world();
    ec2.set_credentials_expired(true);
    w.apply_examples().await;
    let a = submit_eligibility(&w, "2031-09").await;
    let b = "harbor-health:2031-09:members";
    w.submit(&request(b, "harbor-health", "members", "2031-09", 1))
        .await;
    let report = w.tick(t0()).await;
    assert_eq!(report.launch.credential_failures, 1, "{report}");
    assert!(report.has_errors(), "{report}");
    assert!(
        report.launch.paused_payers.is_empty(),
        "no payer is to blame"
    );
    assert_eq!(w.compute.calls().len(), 1, "no more launches this pass");
    // The first job in rank order met the refusal and waits with it; the other was not tried.
    let (tried, untried) = (w.job(b).await, w.job(&a).await);
    assert_eq!(tried.state, JobState::Queued);
    assert!(
        tried
            .reason
            .as_deref()
            .unwrap()
            .starts_with("AuthFailure: AWS was not able to validate"),
        "{:?}",
        tried.reason
    );
    assert_eq!((untried.state, untried.attempt), (JobState::Queued, 0));

    // Renewed credentials: both launch, no retry spent.
    ec2.set_credentials_expired(false);
    let next = w.tick(t0() + Duration::minutes(1)).await;
    assert_eq!(next.launch.instances.len(), 2, "{next}");
    for id in [b, a.as_str()] {
        let job = w.job(id).await;
        assert_eq!(
            (job.state, job.attempts_in_budget()),
            (JobState::Running, 1),
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_full_quota_stops_only_the_launches_that_count_against_it() {
    let (w, ec2) = world();
    w.apply_examples().await;
    // cedar-plan's eligibility may use a G type before a standard one; a `render` kind only G.
    let row = w.config.get("cedar-plan").await.unwrap().unwrap();
    let mut profile = row.profile.clone();
    let kind = profile.kinds.get_mut("eligibility").unwrap();
    kind.compute.instance_types = Some(vec!["g5.xlarge".into(), "c7i.large".into()]);
    kind.capacity = Some(CapacityPolicy::OnDemand);
    let mut render = kind.clone();
    render.compute.instance_types = Some(vec!["g5.xlarge".into(), "g6.xlarge".into()]);
    profile.kinds.insert("render".into(), render);
    w.config
        .put(&profile, Some(row.version), t0())
        .await
        .unwrap();
    let g = QuotaPool {
        group: FamilyGroup::G,
        capacity: CapacityType::OnDemand,
    };
    ec2.set_vcpu_quota(g, Some(0));

    let a = submit_eligibility(&w, "2031-10").await;
    let b = submit_eligibility(&w, "2031-11").await;
    let c = "cedar-plan:2031-12:render";
    w.submit(&request(c, "cedar-plan", "render", "2031-12", 1))
        .await;
    let report = w.tick(t0()).await;
    assert_eq!(report.launch.quota_stops, 1, "{report}");
    assert_eq!(report.launch.instances.len(), 2, "{report}");
    assert_eq!(report.launch.launches_deferred, 1, "{report}");
    assert_eq!(
        w.compute.calls().len(),
        3,
        "one G refusal, then only standard launches"
    );
    for id in [&a, &b] {
        let job = w.job(id).await;
        assert_eq!(rung_of(&job).instance_type, "c7i.large", "{id}");
        let f = &job.current_attempt().unwrap().fallbacks[0];
        assert_eq!(
            (f.code.as_str(), f.rung.instance_type.as_str()),
            ("VcpuLimitExceeded", "g5.xlarge")
        );
    }
    let job = w.job(c).await;
    assert_eq!((job.state, job.attempt), (JobState::Queued, 0), "not tried");

    // The quota raised: the next pass launches the G job.
    ec2.set_vcpu_quota(g, None);
    let next = w.tick(t0() + Duration::minutes(1)).await;
    assert_eq!(next.launch.instances.len(), 1, "{next}");
    assert_eq!(rung_of(&w.job(c).await).instance_type, "g5.xlarge");
}

#[tokio::test]
async fn launches_that_got_no_instance_spend_no_retry() {
    let (w, ec2) = world();
    w.apply_examples().await;
    // max_attempts = 2 for cedar-plan's eligibility.
    let id = submit_eligibility(&w, "2031-13").await;
    let standard = |capacity| QuotaPool {
        group: FamilyGroup::Standard,
        capacity,
    };
    let capacity = || {
        LaunchFault::Code(
            "InsufficientInstanceCapacity".into(),
            "We currently do not have sufficient capacity in the Availability Zone you requested."
                .into(),
        )
    };
    // Pass 1: both quotas full. Pass 2: no capacity on any rung. Pass 3: the quotas again.
    let mut at = t0();
    for pass in 0..3 {
        let full = if pass == 1 { None } else { Some(0) };
        ec2.set_vcpu_quota(standard(CapacityType::Spot), full);
        ec2.set_vcpu_quota(standard(CapacityType::OnDemand), full);
        if pass == 1 {
            ec2.script(std::iter::repeat_with(capacity).take(4));
        }
        let r = w.tick(at).await;
        assert!(r.launch.instances.is_empty(), "pass {pass}: {r}");
        let job = w.job(&id).await;
        assert_eq!(job.state, JobState::Queued, "pass {pass}");
        assert!(job
            .reason
            .as_deref()
            .unwrap()
            .starts_with("no instance on any of 4 rung(s)"));
        at = job.not_before.expect("a minute's wait") + Duration::seconds(1);
    }
    ec2.set_vcpu_quota(standard(CapacityType::Spot), None);
    ec2.set_vcpu_quota(standard(CapacityType::OnDemand), None);
    let launched = w.tick(at).await;
    assert_eq!(launched.launch.instances.len(), 1, "{launched}");
    let job = w.job(&id).await;
    assert_eq!(
        (job.attempt, job.bounces, job.attempts_in_budget()),
        (4, 3, 1)
    );

    // Its one instance is lost: retried, not dead (one of two attempts spent).
    let (iid, launched_at) = w.running_on(&id).await;
    ec2.set_state(&iid, InstanceState::Terminated);
    w.tick(launched_at + Duration::minutes(1)).await;
    let judged = w.tick(launched_at + Duration::minutes(4)).await;
    assert_eq!(judged.reconcile.lost, 1, "{judged}");
    let job = w.job(&id).await;
    assert_eq!(job.state, JobState::Queued, "{:?}", job.reason);
    assert!(
        job.reason.as_deref().unwrap().contains("retrying"),
        "{:?}",
        job.reason
    );
    let why = explained(&w, &id, launched_at + Duration::minutes(4)).await;
    assert!(
        why.contains("3 launch(es) got no instance and spent no retry"),
        "{why}"
    );
    assert!(why.contains("VcpuLimitExceeded"), "{why}");
    assert!(why.contains("InsufficientInstanceCapacity"), "{why}");
}

#[tokio::test]
async fn ec2s_state_reason_is_the_attempts_reason() {
    let (w, ec2) = world();
    w.apply_examples().await;
    let kms = submit_eligibility(&w, "2031-14").await;
    let full = submit_eligibility(&w, "2031-15").await;
    w.tick(t0()).await;
    let (kms_iid, launched) = w.running_on(&kms).await;
    let (full_iid, _) = w.running_on(&full).await;
    assert_eq!(rung_of(&w.job(&full).await).instance_type, "c7i.large");
    ec2.end_instance(
        &kms_iid,
        "Client.InvalidKMSKey.InvalidState",
        "Client.InvalidKMSKey.InvalidState: The KMS key provided is in an incorrect state",
    );
    ec2.end_instance(
        &full_iid,
        "Server.InsufficientInstanceCapacity",
        "Server.InsufficientInstanceCapacity: Insufficient capacity to satisfy the instance request",
    );
    // Seen gone (EC2's reason recorded), then judged once none of its events can arrive.
    let seen = w.tick(launched + Duration::minutes(1)).await;
    assert_eq!(seen.reconcile.lost, 0, "{seen}");
    let recorded = w.job(&kms).await;
    assert_eq!(
        recorded
            .current_attempt()
            .unwrap()
            .state_reason
            .as_ref()
            .map(|r| r.code.as_str()),
        Some("Client.InvalidKMSKey.InvalidState")
    );
    let judged = w.tick(launched + Duration::minutes(4)).await;
    assert_eq!(
        judged.reconcile.verdicts,
        [
            ("launch_refused".to_owned(), 1),
            ("no_capacity".to_owned(), 1)
        ]
        .into(),
        "{judged}"
    );

    // KMS: configuration. The attempt's reason is EC2's; the job waits, the payer is paused.
    let job = w.job(&kms).await;
    let a = &job.attempts[0];
    assert_eq!(
        a.reason.as_deref(),
        Some("EC2 could not start the instance: Client.InvalidKMSKey.InvalidState: The KMS key provided is in an incorrect state")
    );
    assert!(matches!(a.cause, Some(FailureCause::LaunchRefused { .. })));
    assert_eq!(job.state, JobState::Queued, "{:?}", job.reason);
    assert_eq!(job.attempts_in_budget(), 0);
    let row = w.config.get("cedar-plan").await.unwrap().unwrap();
    assert!(row
        .paused
        .unwrap()
        .contains("Client.InvalidKMSKey.InvalidState"));

    // Capacity: the retry starts on the next rung.
    let job = w.job(&full).await;
    assert_eq!(
        job.attempts[0].cause,
        Some(FailureCause::NoCapacity {
            code: "Server.InsufficientInstanceCapacity".into()
        })
    );
    assert_eq!(job.state, JobState::Queued);
    let row = w.config.get("cedar-plan").await.unwrap().unwrap();
    w.config
        .set_paused("cedar-plan", None, row.version, t0())
        .await
        .unwrap();
    let retry_at = job.not_before.unwrap() + Duration::seconds(1);
    let retried = w
        .tick(retry_at.max(w.job(&kms).await.not_before.unwrap()))
        .await;
    assert_eq!(retried.launch.instances.len(), 2, "{retried}");
    let job = w.job(&full).await;
    assert_eq!(job.attempt, 2);
    assert_eq!(
        rung_of(&job).instance_type,
        "c6i.large",
        "the rung after the one EC2 took back"
    );
}
