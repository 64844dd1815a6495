//! Reconcile scenarios: deadlines (boot, heartbeat, maximum runtime), lost instances, orphans,
//! the circuit breaker, and `jobs retry` / `jobs cancel`.

use chrono::{Duration, Utc};
use mayfly::job::JobState;
use mayfly::ports::ManagedInstance;

use super::{request, send_event, t0, World};

fn eligibility(batch: &str) -> (String, String) {
    let id = format!("cedar-plan/cedar-plan:{batch}:eligibility");
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

    // Overdue: the instance is stopped at once, and the deadline recorded as the cause.
    let late = w.tick(launched + Duration::minutes(9)).await;
    assert_eq!(late.reconcile.boot_timeouts, 1, "{late}");
    assert_eq!(late.reconcile.terminated, vec![iid.clone()], "{late}");
    let f = &late.reconcile.findings[0];
    assert_eq!(f.finding, Finding::BootTimeout);
    assert!(f.why.contains("boot timeout 8m"), "{}", f.why);
    assert!(!live(&w.instance(&w.cluster, &iid).await));
    // The attempt ends once none of its events can still arrive, after the lost grace (2m).
    let job = w.job(&id).await;
    assert_eq!(job.state, JobState::Running, "{:?}", job.reason);
    let judged = w.tick(launched + Duration::minutes(12)).await;
    assert_eq!(
        judged.reconcile.retries,
        [("boot_timeout".to_owned(), 1)].into(),
        "{judged}"
    );
    assert_eq!(
        judged.reconcile.verdicts,
        [("boot_timeout".to_owned(), 1)].into(),
        "{judged}"
    );
    let job = w.job(&id).await;
    assert_eq!(job.state, JobState::Queued, "{:?}", job.reason);
    assert!(job.reason.as_deref().unwrap().contains("boot timeout"));
    let not_before = job.not_before.expect("backoff");
    assert!(not_before > launched + Duration::minutes(12));

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
    // The long job was stopped past its limit; its attempt ends after the lost grace.
    w.tick(started + Duration::minutes(40)).await;
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
    // The failures count once the attempts end, after the lost grace.
    w.tick(launched + Duration::minutes(12)).await;
    let row = w.config.get("cedar-plan").await.unwrap().unwrap();
    assert_eq!(row.boot_failures, 2);
    assert!(row.paused.is_none());
    // The retried attempts fail to boot too: the third consecutive failure trips it.
    let mut t = launched + Duration::minutes(12);
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
    let members = "cedar-plan/cedar-plan:2028-07:members".to_owned();
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
