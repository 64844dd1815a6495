//! A burst against the emulator with the local fleet: one payer's 20 jobs of one shape go out
//! in one RunInstances (a launch group); each job runs on its own instance — the ledger's
//! attempt, the instance and its launch index agree — every instance terminates itself, and
//! `cost report` bills 20 attempts.

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mayfly::aws::dynamo::DynamoLedger;
use mayfly::aws::Clients;
use mayfly::job::JobState;
use mayfly::names::{tags, Names};
use mayfly::ports::Compute;
use support::{all_jobs, mayfly};

const JOBS: usize = 20;

#[tokio::test]
async fn a_burst_of_twenty_jobs_runs_each_on_the_instance_of_its_launch_index() {
    let name = support::unique_name("burst");
    support::deploy(&name);
    let sdk = support::sdk_config().await;
    let clients = Clients::new(&sdk);
    let names = Names::new(&name);
    let (subnets, sgs) = support::emulator_network(&clients.ec2).await;

    // cedar-plan on the emulator's network, allowed 20 instances at once.
    let dir = std::env::temp_dir().join(format!("mayfly-burst-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    support::write_profiles_for(&name, &subnets, &sgs, &dir);
    let cedar = dir.join("cedar-plan.toml");
    let mut doc: toml::Table = toml::from_str(&std::fs::read_to_string(&cedar).unwrap()).unwrap();
    let caps = doc.get_mut("caps").and_then(|c| c.as_table_mut()).unwrap();
    caps.insert("max_instances".into(), toml::Value::Integer(JOBS as i64));
    std::fs::write(&cedar, toml::to_string(&doc).unwrap()).unwrap();
    let applied = mayfly(&name, &["payers", "apply", &dir.display().to_string()]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    // One payer's drop: 20 eligibility files, each its own job.
    let lines: Vec<String> = (0..JOBS)
        .map(|i| {
            serde_json::json!({
                "job_id": format!("cedar-plan:burst-{i:02}:eligibility"),
                "payer_id": "cedar-plan", "kind": "eligibility", "batch": format!("burst-{i:02}"),
                "input": {"uri": format!("s3://example-payer-drops/cedar-plan/burst-{i:02}.834"), "bytes": 268_435_456u64}
            })
            .to_string()
        })
        .collect();
    let file = dir.join("burst.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let submitted = mayfly(&name, &["submit", "--file", &file.display().to_string()]);
    assert!(submitted.status.success());

    let work = std::env::temp_dir().join(format!("mayfly-burst-fleet-{name}"));
    let mut fleet = Command::new(support::fleet_bin())
        .args([
            "--name",
            &name,
            "--job-seconds",
            "1",
            "--poll-ms",
            "300",
            "--max-runtime",
            "300",
        ])
        .arg("--work-dir")
        .arg(&work)
        .arg("--venv")
        .arg(support::venv())
        .envs(support::child_env())
        .current_dir(support::repo())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // The first pass launches the burst in one call.
    let first = mayfly(&name, &["--output", "json", "tick"]);
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(report["launch"]["groups"], 1, "{report}");
    assert_eq!(
        report["launch"]["instances"].as_array().map(Vec::len),
        Some(JOBS),
        "{report}"
    );

    let ledger = DynamoLedger::new(clients.dynamodb.clone(), names.jobs_table());
    let deadline = Instant::now() + Duration::from_secs(240);
    let jobs = loop {
        let jobs = all_jobs(&ledger).await;
        if jobs.len() == JOBS && jobs.iter().all(|j| j.state.is_terminal()) {
            break jobs;
        }
        assert!(
            Instant::now() < deadline,
            "jobs did not finish: {:?}",
            jobs.iter()
                .map(|j| (&j.job_id, j.state))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(mayfly(&name, &["tick"]).status.code().is_some());
    };
    // Each instance shuts itself down after its `finished` event: wait for the last ones.
    let compute = mayfly::aws::ec2::Ec2Compute::new(
        clients.ec2.clone(),
        std::sync::Arc::new(mayfly::ratelimit::Ec2Limits::default()),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let instances = loop {
        let instances = compute.list_managed(&name).await.unwrap();
        if instances.iter().all(|i| !i.state.is_live()) || Instant::now() > deadline {
            break instances;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    fleet.kill().ok();
    fleet.wait().ok();
    assert_eq!(instances.len(), JOBS, "one instance per job");
    let mut indices = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for j in &jobs {
        assert_eq!(j.state, JobState::Succeeded, "{} {:?}", j.job_id, j.reason);
        assert_eq!(j.attempts.len(), 1, "{}", j.job_id);
        let a = j.current_attempt().unwrap();
        let iid = a.instance_id.as_deref().unwrap();
        let inst = instances.iter().find(|i| i.instance_id == iid).unwrap();
        // Ledger attempt ↔ instance ↔ launch index.
        assert_eq!(inst.launch_index, a.launch_index, "{}", j.job_id);
        assert_eq!(inst.tag(tags::GROUP), a.launch_group.as_deref());
        assert!(!inst.state.is_live(), "{iid} terminated itself");
        indices.insert(a.launch_index.unwrap());
        groups.insert(a.launch_group.clone().unwrap());
    }
    assert_eq!(indices.len(), JOBS, "each index one job");
    assert_eq!(groups.len(), 1, "one launch group");

    // What it cost: 20 attempts, each with its own price.
    support::cost_check::check_cost_report(&name, &jobs, &dir);
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&work).ok();
}
