//! A corpus of malformed job requests (`tests/fixtures/malformed-requests/`): each one, sent
//! to the intake queue, lands in the intake DLQ with a `mayfly-error` attribute naming the
//! field and the problem (`EXPECTED` lists both), and none becomes a job.

mod support;

use std::collections::BTreeMap;

use mayfly::aws::dynamo::DynamoLedger;
use mayfly::aws::Clients;
use mayfly::job::JobState;
use mayfly::names::Names;
use mayfly::ports::Ledger;
use support::mayfly;

#[tokio::test]
async fn every_malformed_request_lands_in_the_dlq_with_its_reason() {
    let corpus = support::path("tests/fixtures/malformed-requests");
    let expected: Vec<(String, String, String)> = std::fs::read_to_string(corpus.join("EXPECTED"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3, "EXPECTED line `{l}`: file, field, word");
            (f[0].to_owned(), f[1].to_owned(), f[2].to_owned())
        })
        .collect();
    let files = std::fs::read_dir(&corpus)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(
        files,
        expected.len(),
        "every corpus file has an EXPECTED line"
    );

    let name = support::unique_name("bad");
    support::deploy(&name);
    let sdk = support::sdk_config().await;
    let clients = Clients::new(&sdk);
    let names = Names::new(&name);
    let (subnets, sgs) = support::emulator_network(&clients.ec2).await;
    let dir = std::env::temp_dir().join(format!("mayfly-bad-{name}"));
    support::write_profiles_for(&name, &subnets, &sgs, &dir);
    assert!(
        mayfly(&name, &["payers", "apply", &dir.display().to_string()])
            .status
            .success()
    );

    let url = |q: String| {
        let sqs = clients.sqs.clone();
        async move {
            sqs.get_queue_url()
                .queue_name(q)
                .send()
                .await
                .unwrap()
                .queue_url()
                .unwrap()
                .to_owned()
        }
    };
    let intake = url(names.intake_queue()).await;
    let dlq = url(names.intake_dlq()).await;
    let mut bodies = BTreeMap::new();
    for (file, _, _) in &expected {
        let body = std::fs::read_to_string(corpus.join(file)).unwrap();
        clients
            .sqs
            .send_message()
            .queue_url(&intake)
            .message_body(&body)
            .send()
            .await
            .unwrap();
        bodies.insert(body, file.clone());
    }
    let tick = mayfly(&name, &["tick"]);
    assert!(tick.status.code().is_some());

    let mut reasons: BTreeMap<String, String> = BTreeMap::new();
    for _ in 0..20 {
        let out = clients
            .sqs
            .receive_message()
            .queue_url(&dlq)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        if out.messages().is_empty() {
            break;
        }
        for m in out.messages() {
            let file = bodies
                .get(m.body().unwrap_or_default())
                .unwrap_or_else(|| panic!("unexpected DLQ body {:?}", m.body()))
                .clone();
            let reason = m
                .message_attributes()
                .and_then(|a| a.get("mayfly-error"))
                .and_then(|a| a.string_value())
                .unwrap_or_else(|| panic!("{file}: no mayfly-error attribute"))
                .to_owned();
            reasons.insert(file, reason);
            clients
                .sqs
                .delete_message()
                .queue_url(&dlq)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    let mut wrong = Vec::new();
    for (file, field, word) in &expected {
        match reasons.get(file) {
            None => wrong.push(format!("{file}: not in the DLQ")),
            Some(r) if !r.starts_with(&format!("{field}: ")) || !r.contains(word.as_str()) => {
                wrong.push(format!("{file}: expected `{field}: …{word}…`, got `{r}`"))
            }
            Some(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    let ledger = DynamoLedger::new(clients.dynamodb.clone(), names.jobs_table());
    for state in JobState::ALL {
        assert!(ledger.by_state(state).await.unwrap().is_empty(), "{state}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_conflicting_resend_goes_to_the_dlq_and_the_accepted_job_stands() {
    let name = support::unique_name("resend");
    let dir = support::deploy_with_example_payers(&name).await;
    let sdk = support::sdk_config().await;
    let clients = Clients::new(&sdk);
    let names = Names::new(&name);
    let url = |q: String| {
        let sqs = clients.sqs.clone();
        async move {
            sqs.get_queue_url()
                .queue_name(q)
                .send()
                .await
                .unwrap()
                .queue_url()
                .unwrap()
                .to_owned()
        }
    };
    let intake = url(names.intake_queue()).await;
    let dlq = url(names.intake_dlq()).await;
    let send = |body: &'static str| {
        let (sqs, intake) = (clients.sqs.clone(), intake.clone());
        async move {
            sqs.send_message()
                .queue_url(intake)
                .message_body(body)
                .send()
                .await
                .unwrap();
        }
    };
    let id = "cedar-plan/cedar-plan:2026-11:eligibility";
    let first = r#"{"job_id":"cedar-plan:2026-11:eligibility","payer_id":"cedar-plan","kind":"eligibility","batch":"2026-11","params":{"NOTE":"first"}}"#;
    // The same request again, fields in another order: a re-send, a quiet no-op.
    let same = r#"{"payer_id":"cedar-plan","job_id":"cedar-plan:2026-11:eligibility","batch":"2026-11","kind":"eligibility","params":{"NOTE":"first"},"priority":0}"#;
    // The same id with other content: which copy won used to depend on SQS's order.
    let conflicting = r#"{"job_id":"cedar-plan:2026-11:eligibility","payer_id":"cedar-plan","kind":"members","batch":"2026-11","params":{"NOTE":"second"},"priority":5}"#;

    send(first).await;
    let tick = |label: &'static str| {
        let out = mayfly(&name, &["--output", "json", "tick"]);
        assert!(
            out.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let report = tick("first");
    assert_eq!(report["ingest"]["accepted"], 1, "{report}");
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), names.jobs_table());
    let accepted = ledger.get(id).await.unwrap().expect("the job");

    send(same).await;
    send(conflicting).await;
    let report = tick("re-sends");
    assert_eq!(report["ingest"]["received"], 2, "{report}");
    assert_eq!(report["ingest"]["accepted"], 0, "{report}");
    assert_eq!(report["ingest"]["duplicates"], 1, "{report}");
    assert_eq!(report["ingest"]["conflicts"], 1, "{report}");
    assert_eq!(report["ingest"]["rejected"], 0, "{report}");

    // The conflicting copy, and only it, is in the DLQ with a reason naming the job and the
    // fields that differ.
    let out = clients
        .sqs
        .receive_message()
        .queue_url(&dlq)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap();
    let bodies: Vec<&str> = out.messages().iter().filter_map(|m| m.body()).collect();
    assert_eq!(bodies, [conflicting]);
    let reason = out.messages()[0]
        .message_attributes()
        .and_then(|a| a.get("mayfly-error"))
        .and_then(|a| a.string_value())
        .expect("the reason");
    assert!(
        reason.starts_with(&format!(
            "job_id: job {id} was already accepted with a different kind, params, priority"
        )),
        "{reason}"
    );

    // The accepted job is as it was accepted.
    let now = ledger.get(id).await.unwrap().expect("the job");
    assert_eq!(
        (&now.kind, &now.params, now.priority, now.submitted_at),
        (
            &accepted.kind,
            &accepted.params,
            accepted.priority,
            accepted.submitted_at
        )
    );
    assert_eq!(now.kind, "eligibility");
    assert_eq!(now.params.get("NOTE").map(String::as_str), Some("first"));
    std::fs::remove_dir_all(&dir).ok();
}
