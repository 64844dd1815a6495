//! `mayfly status` against the emulator: after a paused payer's job and a two-tier chain are
//! submitted and ticked, the numbers a user sees (queues, jobs by state, live instances,
//! paused payers, the oldest waiting job and why, cost today) match what happened.

mod support;

use support::mayfly;

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn submit(name: &str, job: &str, payer: &str, kind: &str) {
    let batch = job.split(':').nth(1).unwrap();
    ok(mayfly(
        name,
        &[
            "submit", "--job-id", job, "--payer", payer, "--kind", kind, "--batch", batch,
        ],
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_queues_jobs_instances_pauses_and_the_oldest_waiting_job() {
    let name = support::unique_name("status");
    let dir = support::deploy_with_example_payers(&name).await;
    ok(mayfly(
        &name,
        &[
            "payers",
            "pause",
            "harbor-health",
            "--reason",
            "month-end freeze",
        ],
    ));

    // An empty deployment.
    let empty: serde_json::Value =
        serde_json::from_str(&ok(mayfly(&name, &["--output", "json", "status"]))).unwrap();
    assert_eq!(empty["oldest_waiting"], serde_json::Value::Null);
    assert_eq!(empty["instances"], serde_json::json!({}));

    // The paused payer's job is ingested first, so it is the oldest waiting.
    submit(&name, "harbor:2029-04:members", "harbor-health", "members");
    ok(mayfly(&name, &["tick"]));
    submit(
        &name,
        "cedar:2029-04:eligibility",
        "cedar-plan",
        "eligibility",
    );
    submit(&name, "cedar:2029-04:members", "cedar-plan", "members");
    // Still on the intake queue when status runs.
    submit(&name, "cedar:2029-05:claims", "cedar-plan", "claims");
    ok(mayfly(&name, &["tick"]));
    submit(&name, "cedar:2029-06:claims", "cedar-plan", "claims");

    let s: serde_json::Value =
        serde_json::from_str(&ok(mayfly(&name, &["--output", "json", "status"]))).unwrap();
    let queues: Vec<(String, u64)> = serde_json::from_value(s["queues"].clone()).unwrap();
    assert_eq!(
        queues,
        vec![
            ("intake".to_owned(), 1),
            ("intake-dlq".to_owned(), 0),
            ("events".to_owned(), 0),
            ("events-dlq".to_owned(), 0)
        ]
    );
    // cedar eligibility and the 2029-05 claims launched; cedar members waits on its tier,
    // harbor's job on the pause.
    assert_eq!(s["jobs_by_state"]["running"], 2, "{s:#}");
    assert_eq!(s["jobs_by_state"]["queued"], 2, "{s:#}");
    let live: u64 = s["instances"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(live, 2);
    assert_eq!(s["paused_payers"]["harbor-health"], "month-end freeze");
    let oldest = &s["oldest_waiting"];
    assert_eq!(oldest["job_id"], "harbor-health/harbor:2029-04:members");
    assert_eq!(oldest["code"], "payer_paused");
    assert!(oldest["why"].as_str().unwrap().contains("month-end freeze"));
    let queued: Vec<(String, u64)> = s["queued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["payer"].as_str().unwrap().to_owned(),
                q["queued"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        queued,
        vec![
            ("cedar-plan".to_owned(), 1),
            ("harbor-health".to_owned(), 1)
        ]
    );
    assert!(s["cost_today_usd"].as_f64().unwrap() > 0.0);

    // The text form says the same on one screen.
    let text = ok(mayfly(&name, &["status"]));
    assert!(text.contains("Queues:    intake 1, intake-dlq 0"), "{text}");
    assert!(text.contains("queued 2, launching 0, running 2"), "{text}");
    assert!(
        text.contains("Paused:    harbor-health: month-end freeze"),
        "{text}"
    );
    assert!(
        text.contains(
            "Oldest:    harbor-health/harbor:2029-04:members (harbor-health, queued) waiting"
        ),
        "{text}"
    );
    assert!(text.lines().count() <= 24, "one screen: {text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn status_counts_dead_letters_someone_is_looking_at() {
    let name = support::unique_name("status-dlq");
    support::deploy(&name);
    let sdk = support::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let names = mayfly::names::Names::new(&name);
    let dlq = sqs
        .get_queue_url()
        .queue_name(names.intake_dlq())
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    for body in ["not json", "{}"] {
        sqs.send_message()
            .queue_url(&dlq)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    // An operator reads one of them: it is in flight, and still a dead letter.
    let read = sqs
        .receive_message()
        .queue_url(&dlq)
        .max_number_of_messages(1)
        .visibility_timeout(300)
        .send()
        .await
        .unwrap();
    assert_eq!(read.messages().len(), 1);

    let s: serde_json::Value =
        serde_json::from_str(&ok(mayfly(&name, &["--output", "json", "status"]))).unwrap();
    let queues: Vec<(String, u64)> = serde_json::from_value(s["queues"].clone()).unwrap();
    assert!(queues.contains(&("intake-dlq".to_owned(), 2)), "{s:#}");
    assert_eq!(s["in_flight"]["intake-dlq"], 1, "{s:#}");
    let text = ok(mayfly(&name, &["status"]));
    assert!(text.contains("intake-dlq 2 (1 in flight)"), "{text}");
}
