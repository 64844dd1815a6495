//! The whole mayfly life on one machine: the demo workload through `mayfly tick` and the local
//! fleet against the emulator. Every job ends, tiers run in order, each job gets exactly one
//! instance, every instance terminates itself, and nothing is left running; then `cost
//! report` accounts for every attempt.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mayfly::aws::dynamo::DynamoLedger;
use mayfly::aws::Clients;
use mayfly::catalog::Catalog;
use mayfly::job::{Job, JobState};
use mayfly::names::Names;
use mayfly::ports::Compute;
use mayfly::profile::{load_and_validate, GlobalCaps, ValidateContext};
use support::{all_jobs, mayfly};

#[tokio::test]
async fn demo_workload_runs_end_to_end() {
    let name = support::unique_name("life");
    support::deploy(&name);
    let sdk = support::sdk_config().await;
    let clients = Clients::new(&sdk);
    let names = Names::new(&name);
    let (subnets, sgs) = support::emulator_network(&clients.ec2).await;

    // The example profiles, on the emulator's network, and the secret one of them references.
    let dir = std::env::temp_dir().join(format!("mayfly-life-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    support::write_profiles_for(&name, &subnets, &sgs, &dir);
    assert!(
        mayfly(&name, &["payers", "apply", &dir.display().to_string()])
            .status
            .success()
    );
    let ssm = Command::new(support::venv().join("bin/aws"))
        .args([
            "ssm",
            "put-parameter",
            "--name",
            "/mayfly/harbor-health/warehouse-dsn",
            "--type",
            "SecureString",
            "--value",
            "demo",
            "--overwrite",
        ])
        .envs(support::child_env())
        .output()
        .unwrap();
    assert!(
        ssm.status.success(),
        "{}",
        String::from_utf8_lossy(&ssm.stderr)
    );

    // The demo workload plus one job whose command fails with exit 3.
    let workload = support::path("payer-profiles/examples/demo-workload.jsonl");
    assert!(mayfly(
        &name,
        &["submit", "--file", &workload.display().to_string()]
    )
    .status
    .success());
    let failing = "prairie-mutual:2026-11-22T11:remittance";
    // mayfly's id for it: per payer. `jobs show` and `explain` take either.
    let failing_id = format!("prairie-mutual/{failing}");
    assert!(mayfly(
        &name,
        &[
            "submit",
            "--job-id",
            failing,
            "--payer",
            "prairie-mutual",
            "--kind",
            "remittance",
            "--batch",
            "2026-11-22T11"
        ]
    )
    .status
    .success());

    let work = std::env::temp_dir().join(format!("mayfly-life-fleet-{name}"));
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
        .args(["--fault", &format!("prairie-mutual/{failing}=exit:3")])
        .envs(support::child_env())
        .current_dir(support::repo())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let ledger = DynamoLedger::new(clients.dynamodb.clone(), names.jobs_table());
    let deadline = Instant::now() + Duration::from_secs(240);
    // Every AWS operation the passes make, as the counting layer records them.
    let mut operations = std::collections::BTreeSet::new();
    let jobs = loop {
        let pass = mayfly(&name, &["--output", "json", "tick"]);
        assert!(pass.status.code().is_some());
        if let Ok(report) = serde_json::from_slice::<serde_json::Value>(&pass.stdout) {
            if let Some(calls) = report["aws_calls"].as_object() {
                operations.extend(calls.keys().cloned());
            }
        }
        let jobs = all_jobs(&ledger).await;
        if jobs.len() == 8 && jobs.iter().all(|j| j.state.is_terminal()) {
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
    };
    fleet.kill().ok();
    fleet.wait().ok();

    // Each of them is one the IAM policy test checks the scheduler role grants
    // (tests/iam/operations.json, tests/iam_policies.rs): a new call cannot ship without it.
    let listed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(support::path("tests/iam/operations.json")).unwrap(),
    )
    .unwrap();
    let granted = listed["roles"]["scheduler"].as_object().unwrap();
    assert!(operations.contains("EC2.RunInstances"), "{operations:?}");
    let unlisted: Vec<&String> = operations
        .iter()
        .filter(|op| !granted.contains_key(op.as_str()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "operations the passes made that tests/iam/operations.json does not list (add each \
         with the request IAM authorises, and grant it in infra/mayfly.yaml): {unlisted:?}"
    );

    let ctx = ValidateContext {
        catalog: Catalog::shipped(),
        global: GlobalCaps::default(),
    };
    let payers = load_and_validate(&[support::path("payer-profiles")], &ctx).unwrap();
    let tier = |j: &Job| {
        payers
            .iter()
            .find(|p| p.id() == j.payer_id)
            .unwrap()
            .kind(&j.kind)
            .unwrap()
            .tier
    };
    for j in &jobs {
        if j.job_id == failing_id {
            continue;
        }
        assert_eq!(j.state, JobState::Succeeded, "{} {:?}", j.job_id, j.reason);
    }
    // Tier order, from the ledger's timestamps.
    let mut groups: BTreeMap<(String, String), Vec<&Job>> = BTreeMap::new();
    for j in &jobs {
        groups
            .entry((j.payer_id.clone(), j.batch.clone()))
            .or_default()
            .push(j);
    }
    for group in groups.values() {
        for hi in group {
            for lo in group.iter().filter(|lo| tier(lo) < tier(hi)) {
                let started = hi.current_attempt().and_then(|a| a.started_at).unwrap();
                let finished = lo.current_attempt().and_then(|a| a.finished_at).unwrap();
                assert!(
                    started >= finished,
                    "{} started before {} finished",
                    hi.job_id,
                    lo.job_id
                );
            }
        }
    }
    // Exactly one instance per job, each terminated by its own shutdown; none left running.
    let compute = mayfly::aws::ec2::Ec2Compute::new(
        clients.ec2.clone(),
        std::sync::Arc::new(mayfly::ratelimit::Ec2Limits::default()),
    );
    let instances = compute.list_managed(&name).await.unwrap();
    assert_eq!(instances.len(), jobs.len());
    for j in &jobs {
        // Its own launch is tagged with the job; an instance of a launch group carries the
        // group, and its launch index is one of the job's attempts'.
        let grouped = |i: &&mayfly::ports::ManagedInstance| {
            j.attempts.iter().any(|a| {
                a.launch_group.is_some()
                    && i.tag("mayfly:group") == a.launch_group.as_deref()
                    && i.launch_index == a.launch_index
            })
        };
        let mine: Vec<_> = instances
            .iter()
            .filter(|i| i.tag("mayfly:job-id") == Some(j.job_id.as_str()) || grouped(i))
            .collect();
        assert_eq!(mine.len(), 1, "{}", j.job_id);
        assert!(
            !mine[0].state.is_live(),
            "{} is {:?}",
            mine[0].instance_id,
            mine[0].state
        );
    }
    // The failing job: dead, with its exit code and output tail in `jobs show`.
    let dead = jobs.iter().find(|j| j.job_id == failing_id).unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.current_attempt().unwrap().exit_code, Some(3));
    let show = mayfly(&name, &["jobs", "show", failing]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("exit code     3"), "{text}");
    assert!(text.contains("output tail:"), "{text}");
    // `explain` says the same in one answer.
    let explained = mayfly(&name, &["--output", "json", "explain", failing]);
    let answer: serde_json::Value = serde_json::from_slice(&explained.stdout).unwrap();
    assert_eq!(answer["situation"], "dead", "{answer}");
    assert_eq!(answer["last_exit_code"], 3, "{answer}");
    let explained = mayfly(&name, &["explain", failing]);
    let text = String::from_utf8_lossy(&explained.stdout);
    assert!(text.contains("last exit code 3"), "{text}");

    // What it cost: `cost report` totals equal the sum over attempts; CSV, JSON, HTML.
    support::cost_check::check_cost_report(&name, &jobs, &dir);
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&work).ok();
}
