//! Scenarios of intake and launch: the first pass, duplicates and malformed requests, crashes
//! around RunInstances, capacity fallback, throttling, configuration errors (the job waits,
//! the payer is paused), dry runs.

use chrono::Duration;
use mayfly::job::JobState;
use mayfly::ports::ComputeError;
use mayfly::scheduler::TickOptions;

use super::{request, submit_workload, t0, Fault, World};

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
        launched.contains(&"cedar-plan/cedar-plan:2026-11:eligibility")
            && launched.contains(&"harbor-health/harbor-health:2026-11-23:members"),
        "{report}"
    );
    for (job_id, expected_type) in [
        ("cedar-plan/cedar-plan:2026-11:eligibility", "c7i.large"),
        (
            "harbor-health/harbor-health:2026-11-23:members",
            "m7i.large",
        ),
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
        "cedar-plan/cedar-plan:2026-11:members",
        "cedar-plan/cedar-plan:2026-11:claims",
        "harbor-health/harbor-health:2026-11-23:claims",
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
        "cedar-plan/cedar-plan:2026-12:eligibility",
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
        w.instances_of("cedar-plan/cedar-plan:2026-12:eligibility")
            .await
            .len(),
        1
    );
}

/// A pass that stopped between `launching` and RunInstances: the next pass launches once.
pub async fn crash_before_run_instances(w: &World) {
    w.apply_examples().await;
    w.submit(&request(
        "cedar-plan/cedar-plan:2027-01:eligibility",
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
        w.job("cedar-plan/cedar-plan:2027-01:eligibility")
            .await
            .state,
        JobState::Launching
    );
    assert!(w
        .instances_of("cedar-plan/cedar-plan:2027-01:eligibility")
        .await
        .is_empty());
    let second = w.tick(t0() + Duration::minutes(1)).await;
    assert_eq!(second.launch.replayed, 1, "{second}");
    let job = w.job("cedar-plan/cedar-plan:2027-01:eligibility").await;
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.attempt, 1, "the replay is the same attempt");
    assert_eq!(
        w.instances_of("cedar-plan/cedar-plan:2027-01:eligibility")
            .await
            .len(),
        1
    );
    let third = w.tick(t0() + Duration::minutes(2)).await;
    assert!(third.launch.instances.is_empty());
    assert_eq!(
        w.instances_of("cedar-plan/cedar-plan:2027-01:eligibility")
            .await
            .len(),
        1
    );
}

/// A pass that stopped after RunInstances but before `running`: the next pass adopts the
/// instance it finds by its tags and launches nothing.
pub async fn crash_after_run_instances(w: &World) {
    w.apply_examples().await;
    w.submit(&request(
        "cedar-plan/cedar-plan:2027-02:eligibility",
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
        w.job("cedar-plan/cedar-plan:2027-02:eligibility")
            .await
            .state,
        JobState::Launching
    );
    assert_eq!(
        w.instances_of("cedar-plan/cedar-plan:2027-02:eligibility")
            .await
            .len(),
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
    let job = w.job("cedar-plan/cedar-plan:2027-02:eligibility").await;
    assert_eq!(job.state, JobState::Running);
    let instances = w
        .instances_of("cedar-plan/cedar-plan:2027-02:eligibility")
        .await;
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
        "cedar-plan/cedar-plan:2027-03:eligibility",
        "cedar-plan",
        "eligibility",
        "2027-03",
        1,
    ))
    .await;
    let report = w.tick(t0()).await;
    assert!(report.launch.capacity_fallbacks >= 1, "{report}");
    let job = w.job("cedar-plan/cedar-plan:2027-03:eligibility").await;
    assert_eq!(job.state, JobState::Running, "{report}");
    let rung = job.current_attempt().unwrap().rung.clone().unwrap();
    assert_ne!(rung.instance_type, "c7i.large");
    let instances = w
        .instances_of("cedar-plan/cedar-plan:2027-03:eligibility")
        .await;
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].instance_type, rung.instance_type);
}

/// Throttling stops launching for the pass and fails nothing; the next pass goes on.
pub async fn throttling_stops_the_pass(w: &World) {
    w.apply_examples().await;
    w.submit(&request(
        "cedar-plan/cedar-plan:2027-04:eligibility",
        "cedar-plan",
        "eligibility",
        "2027-04",
        1,
    ))
    .await;
    w.submit(&request(
        "harbor-health/harbor-health:2027-04:members",
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
        "cedar-plan/cedar-plan:2027-04:eligibility",
        "harbor-health/harbor-health:2027-04:members",
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

/// A configuration error loses no job: the job waits with the AWS code and message, the
/// circuit breaker pauses the payer with them (nothing of it launches meanwhile), and once
/// the payer is resumed the job launches, its budget of retries untouched.
pub async fn configuration_error_pauses_the_payer_and_loses_no_job(w: &World) {
    w.apply_examples().await;
    let id = "cedar-plan/cedar-plan:2027-05:eligibility";
    w.submit(&request(id, "cedar-plan", "eligibility", "2027-05", 1))
        .await;
    w.compute.script(Fault::Before(ComputeError::Configuration {
        code: "InvalidAMIID.NotFound".into(),
        message: "The image id '[ami-0a1b2c3d4e5f60003]' does not exist".into(),
    }));
    let report = w.tick(t0()).await;
    assert_eq!(report.launch.config_failures, 1, "{report}");
    assert_eq!(report.launch.paused_payers, ["cedar-plan"], "{report}");
    let job = w.job(id).await;
    assert_eq!(
        job.state,
        JobState::Queued,
        "waiting, not dead: {:?}",
        job.reason
    );
    assert_eq!(
        job.reason.as_deref(),
        Some("InvalidAMIID.NotFound: The image id '[ami-0a1b2c3d4e5f60003]' does not exist")
    );
    assert!(w.instances_of(id).await.is_empty());
    let row = w.config.get("cedar-plan").await.unwrap().unwrap();
    let paused = row.paused.clone().expect("the payer is paused");
    assert!(
        paused.contains("InvalidAMIID.NotFound") && paused.contains(id),
        "{paused}"
    );
    assert!(row.paused_by_breaker);

    // Paused: later passes launch nothing of it, and say why.
    let calls = w.compute.calls().len();
    let held = w.tick(t0() + Duration::minutes(2)).await;
    assert!(held.launch.instances.is_empty(), "{held}");
    assert_eq!(held.plan.reasons.get("payer_paused"), Some(&1), "{held}");
    assert_eq!(
        w.compute.calls().len(),
        calls,
        "no RunInstances while paused"
    );

    // `mayfly payers resume`: it launches, and the refused launch spent no retry.
    w.config
        .set_paused("cedar-plan", None, row.version, t0())
        .await
        .unwrap();
    let resumed = w.tick(t0() + Duration::minutes(3)).await;
    assert_eq!(resumed.launch.instances.len(), 1, "{resumed}");
    let job = w.job(id).await;
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.attempt, 2);
    assert_eq!(
        job.attempts_in_budget(),
        1,
        "only the launch with an instance counts"
    );
    assert_eq!(w.instances_of(id).await.len(), 1);
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
