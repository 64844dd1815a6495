//! Events prove their sender, on the fakes: SQS stamps each message with its sender
//! (`SenderId`, `<role id>:<instance id>` for an instance's role), and the scheduler applies
//! an event only when the instance it names sent it and the ledger (or, for a `launching`
//! attempt, EC2's tags) says that instance is the job's. A forged event goes to the events
//! DLQ with its reason and changes nothing. (moto stamps one constant `SenderId` on every
//! message, so this is proven here, not on the emulator.)

mod support;

use std::sync::Arc;

use chrono::Duration;
use mayfly::events::InstanceEvent;
use mayfly::fakes::FakeQueue;
use mayfly::job::JobState;
use mayfly::metrics::PassCounters;
use mayfly::names::ERROR_ATTRIBUTE;
use mayfly::ports::Queue;
use support::world::{instance_sender, on_fakes, request, send_event, t0, Fault, World};

/// Payer A's job and payer B's.
const A: &str = "cedar-plan/cedar-plan:2029-02:eligibility";
const B: &str = "harbor-health/harbor-health:2029-02:members";

/// The reasons on the events DLQ's messages, in order.
fn dead_letter_reasons(dlq: &FakeQueue) -> Vec<String> {
    dlq.contents()
        .into_iter()
        .map(|(_, attributes)| {
            attributes
                .into_iter()
                .find(|(k, _)| k == ERROR_ATTRIBUTE)
                .map(|(_, v)| v)
                .expect("a moved event carries its reason")
        })
        .collect()
}

fn world() -> (World, Arc<FakeQueue>, Arc<FakeQueue>) {
    let dlq = Arc::new(FakeQueue::new());
    let w = World {
        events_dlq: dlq.clone(),
        ..on_fakes()
    };
    let events = w.events_fake.clone().expect("the fakes' events queue");
    (w, events, dlq)
}

#[tokio::test]
async fn payer_a_instance_reporting_payer_b_job_lands_in_the_dlq_and_changes_nothing() {
    let (w, events, dlq) = world();
    w.apply_examples().await;
    w.submit(&request(A, "cedar-plan", "eligibility", "2029-02", 1))
        .await;
    w.submit(&request(B, "harbor-health", "members", "2029-02", 1))
        .await;
    w.tick(t0()).await;
    let (ia, _) = w.running_on(A).await;
    let (ib, _) = w.running_on(B).await;
    let b_before = w.job(B).await;

    // Payer A's instance says B succeeded: naming B's instance, then naming itself; and
    // someone with no instance at all (an IAM user) says the same.
    let at = t0() + Duration::seconds(40);
    let forged = InstanceEvent::finished(B, 1, &ib, at, 0, 30, "forged");
    events.send_as(&instance_sender(&ia), &forged.to_json(), &[]);
    let as_itself = InstanceEvent::finished(B, 1, &ia, at, 0, 30, "forged");
    events.send_as(&instance_sender(&ia), &as_itself.to_json(), &[]);
    events.send(&forged.to_json(), &[]).await.unwrap();

    let pass = w.tick(at + Duration::seconds(1)).await;
    assert_eq!(pass.events.refused, 3, "{pass}");
    assert_eq!(pass.events.applied, 0, "{pass}");
    assert_eq!(w.job(B).await, b_before, "a forged event changes nothing");
    assert_eq!(events.contents(), Vec::new(), "acknowledged once moved");
    let reasons = dead_letter_reasons(&dlq);
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].starts_with(&format!(
            "sender: the event names instance {ib} but was sent by {}",
            instance_sender(&ia)
        )),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].starts_with(&format!(
            "instance_id: job {B} attempt 1 ran on {ib}, not on {ia}"
        )),
        "{}",
        reasons[1]
    );
    assert!(
        reasons[2].contains(&format!("names instance {ib} but was sent by AIDA")),
        "{}",
        reasons[2]
    );
    let mut counters = PassCounters::default();
    counters.record(&pass);
    assert_eq!(counters.events_refused, 3);

    // The genuine events of both jobs still apply.
    for (job, iid) in [(A, &ia), (B, &ib)] {
        send_event(&w, &InstanceEvent::started(job, 1, iid, at)).await;
        let done = at + Duration::seconds(5);
        send_event(&w, &InstanceEvent::finished(job, 1, iid, done, 0, 5, "ok")).await;
    }
    let pass = w.tick(at + Duration::seconds(10)).await;
    assert_eq!(pass.events.refused, 0, "{pass}");
    assert_eq!(pass.events.succeeded, 2, "{pass}");
    assert_eq!(w.job(A).await.state, JobState::Succeeded);
    assert_eq!(w.job(B).await.state, JobState::Succeeded);
    assert_eq!(dead_letter_reasons(&dlq).len(), 3, "nothing more moved");
}

#[tokio::test]
async fn another_instance_cannot_claim_a_launching_attempt() {
    let (w, events, dlq) = world();
    w.apply_examples().await;
    w.submit(&request(A, "cedar-plan", "eligibility", "2029-02", 1))
        .await;
    w.tick(t0()).await;
    let (ia, _) = w.running_on(A).await;
    // B's launch response is lost: B is `launching`, its instance unknown to the ledger.
    w.submit(&request(B, "harbor-health", "members", "2029-02", 1))
        .await;
    w.compute.script(Fault::LoseResponse);
    w.tick(t0() + Duration::seconds(2)).await;
    assert_eq!(w.job(B).await.state, JobState::Launching);
    let ib = w.instances_of(B).await[0].instance_id.clone();

    // A's instance, speaking for itself, claims B's attempt: refused, by B's tags.
    let at = t0() + Duration::seconds(5);
    let claim = InstanceEvent::finished(B, 1, &ia, at, 0, 3, "forged");
    events.send_as(&instance_sender(&ia), &claim.to_json(), &[]);
    let pass = w.tick(at).await;
    assert_eq!(pass.events.refused, 1, "{pass}");
    assert_eq!(pass.events.adopted, 0, "{pass}");
    assert_eq!(w.job(B).await.state, JobState::Launching);
    let reasons = dead_letter_reasons(&dlq);
    assert!(
        reasons[0].starts_with(&format!(
            "instance_id: job {B} attempt 1 is launching on {ib} (by its tags), not on {ia}"
        )),
        "{reasons:?}"
    );

    // B's own instance is adopted from its events, as before.
    send_event(&w, &InstanceEvent::started(B, 1, &ib, at)).await;
    let done = at + Duration::seconds(3);
    send_event(&w, &InstanceEvent::finished(B, 1, &ib, done, 0, 3, "ok")).await;
    let pass = w.tick(at + Duration::seconds(5)).await;
    assert_eq!(pass.events.adopted, 1, "{pass}");
    assert_eq!(w.job(B).await.state, JobState::Succeeded);
}
