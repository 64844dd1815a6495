//! The Lambda function's handler against the in-memory fakes: what a scheduled event and an
//! SQS event from the events queue do, and which records the partial batch response returns.
//! (`lambda_runtime.rs` runs the binary itself through the Runtime API and the emulator.)

mod support;

use chrono::Duration;
use mayfly::events::{EventKind, InstanceEvent, VERSION};
use mayfly::job::JobState;
use mayfly::lambda::{handle, ItemFailure, Trigger};
use serde_json::{json, Value};
use support::world::{on_fakes as world, request, t0, Fault};

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
            json!({"messageId": id, "receiptHandle": format!("rh-{id}"), "body": body,
                   "attributes": {"ApproximateReceiveCount": "1"}, "eventSource": "aws:sqs",
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
    let job_id = "cedar-plan:2027-03:eligibility";
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
    let w = world();
    w.apply_examples().await;
    let running = "cedar-plan:2027-04:eligibility";
    let launching = "harbor-health:2027-04:members";
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
            "m-too-early",
            event(EventKind::Started, launching, 1, &stray).to_json(),
        ),
    ]);
    let at = t0() + Duration::seconds(10);
    let handled = handle(&w.scheduler(60), trigger, at)
        .await
        .expect("the batch is handled");
    // The malformed record and the one the ledger cannot take yet come back; the one that
    // does not match the ledger is done (it never will).
    assert_eq!(
        handled.batch.as_ref().unwrap().batch_item_failures,
        failures(&["m-malformed", "m-too-early"])
    );
    assert_eq!(
        handled.response(),
        json!({"batchItemFailures": [{"itemIdentifier": "m-malformed"}, {"itemIdentifier": "m-too-early"}]})
    );
    let events = handled.events.as_ref().unwrap();
    assert_eq!(
        (events.received, events.applied, events.malformed),
        (4, 1, 1)
    );
    assert_eq!(events.ignored.values().sum::<u32>(), 1);
    let job = w.job(running).await;
    assert_eq!(
        job.current_attempt().unwrap().started_at,
        Some(t0() + Duration::seconds(20))
    );
    // The malformed record is left to the queue's redrive, not moved by the function.
    assert_eq!(w.events_dlq.depth().await.unwrap(), 0);
    assert!(handled.pass.is_some(), "a pass ran after the batch");

    // Delivered again once the repair adopted the instance, it applies and is done.
    let later = t0() + Duration::minutes(2);
    w.tick(later).await;
    assert_eq!(w.job(launching).await.state, JobState::Running);
    let again = sqs(&[(
        "m-too-early",
        event(EventKind::Started, launching, 1, &stray).to_json(),
    )]);
    let handled = handle(&w.scheduler(60), again, later).await.unwrap();
    assert!(handled.batch.unwrap().batch_item_failures.is_empty());
    assert!(w
        .job(launching)
        .await
        .current_attempt()
        .unwrap()
        .started_at
        .is_some());
}
