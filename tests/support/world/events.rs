//! Scenarios of instance events: a job completed and the next tier unlocked, a non-zero exit
//! and the retry policy.

use chrono::Duration;
use mayfly::job::JobState;

use super::{request, send_event, t0, World};

/// Events move a job to succeeded; duplicates change nothing; mismatched ones are counted
/// (and, where senders are verified, one another instance sent is refused).
pub async fn events_complete_jobs_and_unlock_the_next_tier(w: &World) {
    use mayfly::events::InstanceEvent;
    w.apply_examples().await;
    w.submit(&request(
        "cedar-plan/cedar-plan:2027-07:eligibility",
        "cedar-plan",
        "eligibility",
        "2027-07",
        1,
    ))
    .await;
    w.submit(&request(
        "cedar-plan/cedar-plan:2027-07:members",
        "cedar-plan",
        "members",
        "2027-07",
        1,
    ))
    .await;
    w.tick(t0()).await;
    let job = w.job("cedar-plan/cedar-plan:2027-07:eligibility").await;
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
    // Attempt 2 does not exist: ignored. Another instance's word about attempt 1, which ran on
    // `iid`: refused (moved to the events DLQ) where senders are verified, ignored on the
    // emulator, whose SenderId proves nothing.
    let refused = u32::from(w.events_fake.is_some());
    assert_eq!(report.events.refused, refused, "{report}");
    assert_eq!(
        report.events.ignored.values().sum::<u32>(),
        2 - refused,
        "{report}"
    );
    assert_eq!(report.events.succeeded, 1);
    let done = w.job(id).await;
    assert_eq!(done.state, JobState::Succeeded);
    let a = done.current_attempt().unwrap();
    assert_eq!(a.exit_code, Some(0));
    assert_eq!(a.started_at, Some(at));
    // Tier 1 launched in the same pass, now that tier 0 succeeded.
    assert_eq!(report.launch.instances.len(), 1, "{report}");
    assert_eq!(
        w.job("cedar-plan/cedar-plan:2027-07:members").await.state,
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
            &format!("cedar-plan/cedar-plan:{batch}:eligibility"),
            "cedar-plan",
            "eligibility",
            batch,
            1,
        ))
        .await;
    }
    w.tick(t0()).await;
    for (batch, code) in [("2027-08", 3), ("2027-09", 75)] {
        let id = format!("cedar-plan/cedar-plan:{batch}:eligibility");
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
    let dead = w.job("cedar-plan/cedar-plan:2027-08:eligibility").await;
    assert_eq!(dead.state, JobState::Dead);
    let a = dead.current_attempt().unwrap();
    assert_eq!(a.exit_code, Some(3));
    assert!(a.output_tail.as_deref().unwrap().contains("bad segment"));
    assert!(dead.reason.as_deref().unwrap().contains("exit code 3"));
    let retried = w.job("cedar-plan/cedar-plan:2027-09:eligibility").await;
    assert_eq!(retried.state, JobState::Queued, "{:?}", retried.reason);
    assert!(retried
        .not_before
        .is_some_and(|nb| nb > t0() + Duration::minutes(1)));
    assert_eq!(retried.current_attempt().unwrap().exit_code, Some(75));
}
