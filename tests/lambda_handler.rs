//! The Lambda function's handler against the in-memory fakes: what a scheduled event and an
//! SQS event from the events queue do, and which records the partial batch response returns.
//! (`lambda_runtime.rs` runs the binary itself through the Runtime API and the emulator.)

mod support;

use chrono::Duration;
use mayfly::events::{EventKind, InstanceEvent, VERSION};
use mayfly::job::JobState;
use mayfly::lambda::{handle, ItemFailure, Trigger};
use serde_json::{json, Value};
use std::sync::Arc;

use mayfly::fakes::{FakeLedger, FakeQueue};
use support::world::{instance_sender, on_fakes as world, request, t0, Fault, World};

fn event(kind: EventKind, job_id: &str, attempt: u32, instance_id: &str) -> InstanceEvent {
    InstanceEvent {
        v: VERSION,
        event: kind,
        job_id: job_id.into(),
        attempt,
        instance_id: instance_id.into(),
        at: t0() + Duration::seconds(20),
        exit_code: (kind == EventKind::Finished).then_some(0),
        duration_secs: None,
        output_tail: None,
        notice: None,
    }
}

fn sqs(records: &[(&str, String)]) -> Trigger {
    let records: Vec<Value> = records
        .iter()
        .map(|(id, body)| {
            // SQS names the sender: for an event, the instance it names (as its instance
            // profile's role); anything else comes from a producer's IAM user.
            let sender = serde_json::from_str::<Value>(body)
                .ok()
                .and_then(|v| v["instance_id"].as_str().map(instance_sender))
                .unwrap_or_else(|| "AIDAFAKEPRODUCER0001".to_owned());
            json!({"messageId": id, "receiptHandle": format!("rh-{id}"), "body": body,
                   "attributes": {"ApproximateReceiveCount": "1", "SenderId": sender},
                   "eventSource": "aws:sqs",
                   "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:fake-events"})
        })
        .collect();
    Trigger::from_payload(&json!({ "Records": records })).expect("an SQS event")
}

fn failures(ids: &[&str]) -> Vec<ItemFailure> {
    ids.iter()
        .map(|id| ItemFailure {
            item_identifier: (*id).into(),
        })
        .collect()
}

#[tokio::test]
async fn a_scheduled_event_runs_a_pass() {
    let w = world();
    w.apply_examples().await;
    let job_id = "cedar-plan/cedar-plan:2027-03:eligibility";
    w.submit(&request(job_id, "cedar-plan", "eligibility", "2027-03", 1))
        .await;
    let handled = handle(&w.scheduler(60), Trigger::Scheduled, t0())
        .await
        .expect("the pass runs");
    assert!(handled.batch.is_none() && handled.events.is_none());
    let pass = handled.pass.as_ref().expect("a pass report");
    assert_eq!(pass.launch.instances.len(), 1, "{pass}");
    assert_eq!(w.job(job_id).await.state, JobState::Running);
    assert_eq!(handled.response()["launch"]["instances"][0][0], job_id);
}

#[tokio::test]
async fn an_sqs_event_applies_its_events_and_returns_only_the_failed_records() {
    let events_dlq = Arc::new(FakeQueue::new());
    let w = World {
        events_dlq: events_dlq.clone(),
        ..world()
    };
    w.apply_examples().await;
    let running = "cedar-plan/cedar-plan:2027-04:eligibility";
    let launching = "harbor-health/harbor-health:2027-04:members";
    w.submit(&request(running, "cedar-plan", "eligibility", "2027-04", 1))
        .await;
    w.tick(t0()).await;
    let (instance, _) = w.running_on(running).await;
    // A second job whose launch response was lost: it stays `launching`, instance unknown.
    w.submit(&request(
        launching,
        "harbor-health",
        "members",
        "2027-04",
        1,
    ))
    .await;
    w.compute.script(Fault::LoseResponse);
    w.tick(t0() + Duration::seconds(5)).await;
    assert_eq!(w.job(launching).await.state, JobState::Launching);
    let stray = w.instances_of(launching).await[0].instance_id.clone();

    let trigger = sqs(&[
        (
            "m-started",
            event(EventKind::Started, running, 1, &instance).to_json(),
        ),
        (
            "m-wrong-attempt",
            event(EventKind::Started, running, 2, &instance).to_json(),
        ),
        ("m-malformed", r#"{"v":1,"type":"started"}"#.into()),
        (
            "m-launching",
            event(EventKind::Started, launching, 1, &stray).to_json(),
        ),
    ]);
    let at = t0() + Duration::seconds(10);
    let handled = handle(&w.scheduler(60), trigger, at)
        .await
        .expect("the batch is handled");
    // Every record is done: applied, ignored (it never will match), or moved to the DLQ.
    assert_eq!(
        handled.batch.as_ref().unwrap().batch_item_failures,
        failures(&[])
    );
    assert_eq!(handled.response(), json!({"batchItemFailures": []}));
    let events = handled.events.as_ref().unwrap();
    assert_eq!(
        (
            events.received,
            events.applied,
            events.malformed,
            events.adopted
        ),
        (4, 2, 1, 1)
    );
    assert_eq!(events.ignored.values().sum::<u32>(), 1);
    let job = w.job(running).await;
    assert_eq!(
        job.current_attempt().unwrap().started_at,
        Some(t0() + Duration::seconds(20))
    );
    // The malformed record is moved to the events DLQ by the function, with the reason: the
    // events queue has no redrive to do it.
    let dlq = events_dlq.contents();
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert!(dlq[0]
        .1
        .iter()
        .any(|(k, v)| k == "mayfly-error" && !v.is_empty()));
    assert!(handled.pass.is_some(), "a pass ran after the batch");

    // The launching job's own `started` proved its launch and named its instance.
    let adopted = w.job(launching).await;
    assert_eq!(adopted.state, JobState::Running);
    let a = adopted.current_attempt().unwrap();
    assert_eq!(a.instance_id.as_deref(), Some(stray.as_str()));
    assert!(a.started_at.is_some());
}

#[tokio::test]
async fn an_event_the_ledger_cannot_take_yet_comes_back() {
    let ledger = Arc::new(FakeLedger::new());
    let w = World {
        ledger: ledger.clone(),
        ..world()
    };
    w.apply_examples().await;
    let running = "cedar-plan/cedar-plan:2027-05:eligibility";
    w.submit(&request(running, "cedar-plan", "eligibility", "2027-05", 1))
        .await;
    w.tick(t0()).await;
    let (instance, _) = w.running_on(running).await;
    let trigger = || {
        sqs(&[(
            "m-started",
            event(EventKind::Started, running, 1, &instance).to_json(),
        )])
    };
    // Every write throttled: the event is not applied, and its record is returned.
    ledger.throttle_next_writes(10);
    let handled = handle(&w.scheduler(60), trigger(), t0() + Duration::seconds(10))
        .await
        .unwrap();
    assert_eq!(
        handled.batch.unwrap().batch_item_failures,
        failures(&["m-started"])
    );
    assert!(w
        .job(running)
        .await
        .current_attempt()
        .unwrap()
        .started_at
        .is_none());
    ledger.throttle_next_writes(0);
    let handled = handle(&w.scheduler(60), trigger(), t0() + Duration::seconds(20))
        .await
        .unwrap();
    assert!(handled.batch.unwrap().batch_item_failures.is_empty());
    assert!(w
        .job(running)
        .await
        .current_attempt()
        .unwrap()
        .started_at
        .is_some());
}
