//! The `mayfly` binary against the emulator, as an operator drives it: apply and diff
//! profiles, submit jobs, plan without changing anything, run a pass, look at jobs.

mod support;

use std::path::PathBuf;
use std::process::Output;

use support::mayfly;

use mayfly::aws::dynamo::{DynamoConfigStore, DynamoLedger};
use mayfly::aws::sqs::SqsQueue;
use mayfly::aws::Clients;
use mayfly::job::JobState;
use mayfly::names::Names;
use mayfly::ports::{ConfigStore, Ledger, Queue};

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[derive(Debug, PartialEq)]
struct State {
    payers: Vec<String>,
    jobs: Vec<String>,
    intake: u64,
}

async fn state(clients: &Clients, names: &Names) -> State {
    let config = DynamoConfigStore::new(clients.dynamodb.clone(), names.payers_table());
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), names.jobs_table());
    let intake = SqsQueue::by_name(clients.sqs.clone(), &names.intake_queue())
        .await
        .unwrap();
    let mut jobs = Vec::new();
    for s in JobState::ALL {
        for j in ledger.by_state(s).await.unwrap() {
            jobs.push(serde_json::to_string(&j).unwrap());
        }
    }
    let payers = config
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|p| format!("{}@{}:{:?}", p.profile.payer_id, p.version, p.paused))
        .collect();
    State {
        payers,
        jobs,
        intake: intake.depth().await.unwrap(),
    }
}

#[tokio::test]
async fn operator_workflow_against_the_emulator() {
    let name = support::unique_name("cli");
    support::deploy(&name);
    let sdk = support::sdk_config().await;
    let clients = Clients::new(&sdk);
    let names = Names::new(&name);
    let (subnets, sgs) = support::emulator_network(&clients.ec2).await;
    let dir: PathBuf = std::env::temp_dir().join(format!("mayfly-cli-{name}"));
    support::write_profiles_for(&name, &subnets, &sgs, &dir);
    let dir_s = dir.display().to_string();

    // Apply creates every payer; a diff afterwards shows nothing.
    let applied: serde_json::Value = serde_json::from_str(&ok(&mayfly(
        &name,
        &["--output", "json", "payers", "apply", &dir_s],
    )))
    .unwrap();
    assert!(
        applied["payers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["status"] == "new" && p["applied"] == true),
        "{applied}"
    );
    let diff: serde_json::Value = serde_json::from_str(&ok(&mayfly(
        &name,
        &["--output", "json", "payers", "diff", &dir_s],
    )))
    .unwrap();
    assert!(
        diff["payers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["status"] == "unchanged" && p["changes"].as_array().unwrap().is_empty()),
        "{diff}"
    );

    // Change one field: the diff shows exactly that field.
    let cedar = dir.join("cedar-plan.toml");
    let text = std::fs::read_to_string(&cedar)
        .unwrap()
        .replace("max_vcpus = 96", "max_vcpus = 128");
    std::fs::write(&cedar, text).unwrap();
    let diff: serde_json::Value = serde_json::from_str(&ok(&mayfly(
        &name,
        &["--output", "json", "payers", "diff", &dir_s],
    )))
    .unwrap();
    let changed: Vec<&serde_json::Value> = diff["payers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["status"] == "changed")
        .collect();
    assert_eq!(changed.len(), 1, "{diff}");
    assert_eq!(changed[0]["payer_id"], "cedar-plan");
    assert_eq!(
        changed[0]["changes"],
        serde_json::json!([{"field": "caps.max_vcpus", "old": "96", "new": "128"}])
    );
    let text_diff = ok(&mayfly(&name, &["payers", "diff", &dir_s]));
    assert!(
        text_diff.contains("caps.max_vcpus: 96 → 128"),
        "{text_diff}"
    );

    // Submit and run one pass; then plan and a dry-run tick change nothing anywhere.
    ok(&mayfly(
        &name,
        &[
            "submit",
            "--job-id",
            "cedar-plan:2026-11:eligibility",
            "--payer",
            "cedar-plan",
            "--kind",
            "eligibility",
            "--batch",
            "2026-11",
        ],
    ));
    ok(&mayfly(&name, &["tick"]));
    ok(&mayfly(
        &name,
        &[
            "submit",
            "--job-id",
            "cedar-plan:2026-11:members",
            "--payer",
            "cedar-plan",
            "--kind",
            "members",
            "--batch",
            "2026-11",
            "--input-uri",
            "s3://example-payer-drops/cedar-plan/members.csv",
            "--input-bytes",
            "1048576",
        ],
    ));
    let before = state(&clients, &names).await;
    let plan: serde_json::Value =
        serde_json::from_str(&ok(&mayfly(&name, &["--output", "json", "plan"]))).unwrap();
    assert!(
        plan["waiting"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["job_id"] == "cedar-plan/cedar-plan:2026-11:eligibility"),
        "{plan}"
    );
    let dry: serde_json::Value = serde_json::from_str(&ok(&mayfly(
        &name,
        &["--output", "json", "tick", "--dry-run"],
    )))
    .unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        dry["skipped"],
        serde_json::json!(["ingest", "events", "reconcile", "repair", "launch"])
    );
    // In words: what the dry run skipped, never "0 received" for a queue it did not read.
    let dry_text = ok(&mayfly(&name, &["tick", "--dry-run"]));
    for line in [
        "Ingest:  skipped (dry run: the intake queue was not read)",
        "Events:  skipped (dry run: the events queue was not read)",
        "Reconcile: skipped (dry run: no instance listed, nothing reaped or repaired",
        "Launch:  skipped (dry run: nothing launched",
    ] {
        assert!(dry_text.contains(line), "{dry_text}");
    }
    for wrong in ["0 received", "instance(s) seen", "0 running now"] {
        assert!(!dry_text.contains(wrong), "{dry_text}");
    }
    let after = state(&clients, &names).await;
    assert_eq!(before, after);
    assert_eq!(
        after.intake, 1,
        "the second request is still on the intake queue"
    );

    // A pass ingests it; jobs list and show tell the story.
    let report: serde_json::Value =
        serde_json::from_str(&ok(&mayfly(&name, &["--output", "json", "tick"]))).unwrap();
    assert_eq!(report["ingest"]["accepted"], 1, "{report}");
    assert_eq!(report["aws_calls"].get("EC2.CreateTags"), None, "{report}");
    let list = ok(&mayfly(&name, &["jobs", "list"]));
    assert!(
        list.contains("cedar-plan:2026-11:eligibility") && list.contains("running"),
        "{list}"
    );
    let show = ok(&mayfly(
        &name,
        &["jobs", "show", "cedar-plan:2026-11:eligibility"],
    ));
    assert!(
        show.contains("instance") && show.contains("c7i.large"),
        "{show}"
    );
    assert_eq!(
        mayfly(&name, &["jobs", "show", "no-such-job"])
            .status
            .code(),
        Some(2)
    );

    // Pause shows in the plan; resume clears it.
    let paused = ok(&mayfly(
        &name,
        &[
            "payers",
            "pause",
            "cedar-plan",
            "--reason",
            "vendor maintenance",
        ],
    ));
    assert!(paused.contains("PAUSED: vendor maintenance"), "{paused}");
    let plan = ok(&mayfly(&name, &["plan"]));
    assert!(
        plan.contains("payer is paused: vendor maintenance"),
        "{plan}"
    );
    ok(&mayfly(&name, &["payers", "resume", "cedar-plan"]));
    let listed = ok(&mayfly(&name, &["payers", "list"]));
    assert!(
        listed.contains("cedar-plan") && !listed.contains("vendor maintenance"),
        "{listed}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `mayfly reap` reports each instance, why, and what was done: an orphan is marked, then
/// terminated after the grace period; a protected instance is reported and kept. `jobs
/// cancel` terminates a running job's instance; `jobs retry` refuses a job that is not dead.
#[tokio::test]
async fn reap_and_job_actions_from_the_command_line() {
    use aws_sdk_ec2::types::{InstanceType, ResourceType, Tag, TagSpecification};
    let name = support::unique_name("reap");
    support::deploy(&name);
    let sdk = support::sdk_config().await;
    let clients = Clients::new(&sdk);
    let (subnets, sgs) = support::emulator_network(&clients.ec2).await;
    let dir: PathBuf = std::env::temp_dir().join(format!("mayfly-reap-{name}"));
    support::write_profiles_for(&name, &subnets, &sgs, &dir);
    ok(&mayfly(
        &name,
        &["payers", "apply", &dir.display().to_string()],
    ));

    let launch = |tags: Vec<(&'static str, String)>| {
        let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
        for (k, v) in tags {
            spec = spec.tags(Tag::builder().key(k).value(v).build());
        }
        clients
            .ec2
            .run_instances()
            .image_id("ami-0a1b2c3d4e5f60003")
            .instance_type(InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .tag_specifications(spec.build())
            .send()
    };
    let orphan = launch(vec![
        ("mayfly:cluster", name.clone()),
        ("mayfly:job-id", "nobody:1:claims".into()),
        ("mayfly:attempt", "1".into()),
    ])
    .await
    .unwrap()
    .instances()[0]
        .instance_id()
        .unwrap()
        .to_owned();
    let kept = launch(vec![
        ("mayfly:cluster", name.clone()),
        ("mayfly:protect", "true".into()),
    ])
    .await
    .unwrap()
    .instances()[0]
        .instance_id()
        .unwrap()
        .to_owned();

    let dry: serde_json::Value = serde_json::from_str(&ok(&mayfly(
        &name,
        &["--output", "json", "reap", "--dry-run"],
    )))
    .unwrap();
    let find = |report: &serde_json::Value, id: &str| {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["instance_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not in {report}"))
    };
    let f = find(&dry, &orphan);
    assert_eq!(f["finding"], "orphan");
    assert!(
        f["why"].as_str().unwrap().contains("not in the ledger"),
        "{f}"
    );
    assert!(
        f["action"].as_str().unwrap().starts_with("would mark"),
        "{f}"
    );
    assert_eq!(find(&dry, &kept)["finding"], "protected");

    let text = ok(&mayfly(&name, &["reap", "--orphan-grace", "0s"]));
    assert!(
        text.contains(&format!("{orphan} (job nobody:1:claims attempt 1): orphan")),
        "{text}"
    );
    assert!(text.contains("marked"), "{text}");
    let second: serde_json::Value = serde_json::from_str(&ok(&mayfly(
        &name,
        &["--output", "json", "reap", "--orphan-grace", "0s"],
    )))
    .unwrap();
    assert_eq!(
        second["terminated"],
        serde_json::json!([orphan]),
        "{second}"
    );
    assert!(find(&second, &orphan)["action"]
        .as_str()
        .unwrap()
        .starts_with("terminated"));
    assert_eq!(find(&second, &kept)["finding"], "protected");

    // A job launched by a pass, then cancelled: its instance is terminated.
    let job = "cedar-plan:2029-01:eligibility";
    ok(&mayfly(
        &name,
        &[
            "submit",
            "--job-id",
            job,
            "--payer",
            "cedar-plan",
            "--kind",
            "eligibility",
            "--batch",
            "2029-01",
        ],
    ));
    ok(&mayfly(&name, &["tick"]));
    let retry = mayfly(&name, &["jobs", "retry", job]);
    assert_eq!(retry.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&retry.stderr)
            .contains("only dead or cancelled jobs can be retried"),
        "{}",
        String::from_utf8_lossy(&retry.stderr)
    );
    let cancel: serde_json::Value = serde_json::from_str(&ok(&mayfly(
        &name,
        &[
            "--output",
            "json",
            "jobs",
            "cancel",
            job,
            "--reason",
            "wrong drop",
        ],
    )))
    .unwrap();
    assert_eq!(cancel["from"], "running");
    assert_eq!(cancel["to"], "cancelled");
    assert_eq!(
        cancel["terminated"].as_array().unwrap().len(),
        1,
        "{cancel}"
    );
    let retried = ok(&mayfly(&name, &["jobs", "retry", job]));
    assert!(retried.contains("cancelled → queued"), "{retried}");
    std::fs::remove_dir_all(&dir).ok();
}
