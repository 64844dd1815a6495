//! The local fleet against the emulator: instances launched in moto get their user-data run
//! as local processes, see themselves through the loopback IMDSv2 endpoint, end themselves
//! with `shutdown`, and are ended when someone else terminates them; injected faults
//! (never-start, exit codes, crashes, spot notices) do what the scheduler's tests rely on;
//! and mayfly's real rendered user-data runs end to end, reporting to the events queue.

// The root package's emulator harness (moto, SDK configuration, deployments).
#[path = "../../../tests/support/emulator.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_ec2::types::{
    HttpTokensState, IamInstanceProfileSpecification, InstanceMetadataOptionsRequest,
    InstanceStateName, InstanceType, ResourceType, ShutdownBehavior, Tag, TagSpecification,
};
use base64::Engine as _;
use mayfly::events::{EventKind, InstanceEvent};
use mayfly::names::{tags, Names};
use mayfly::ports::InstanceState;
use mayfly_testbed::fleet::{
    Faults, Fleet, FleetConfig, FleetReport, InstanceAws, InstanceOutcome, SkipReason, StopReason,
};

/// Launches one instance of deployment `name` for `job_id` with `script` as user-data, the
/// way the scheduler does (tags on create, IMDSv2 required, shutdown terminates).
async fn launch(ec2: &aws_sdk_ec2::Client, name: &str, job_id: &str, script: &str) -> String {
    let (subnets, groups) = support::emulator_network(ec2).await;
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
    let out = ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .subnet_id(&subnets[0])
        .security_group_ids(&groups[0])
        .iam_instance_profile(
            IamInstanceProfileSpecification::builder()
                .name(format!("{name}-instance"))
                .build(),
        )
        .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
        .metadata_options(
            InstanceMetadataOptionsRequest::builder()
                .http_tokens(HttpTokensState::Required)
                .build(),
        )
        .user_data(base64::engine::general_purpose::STANDARD.encode(script))
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(tag(tags::CLUSTER, name))
                .tags(tag(tags::JOB_ID, job_id))
                .tags(tag(tags::ATTEMPT, "1"))
                .build(),
        )
        .send()
        .await
        .expect("run instances");
    out.instances()[0]
        .instance_id()
        .expect("instance id")
        .to_owned()
}

async fn state(ec2: &aws_sdk_ec2::Client, instance_id: &str) -> InstanceStateName {
    let out = ec2
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .expect("describe instance");
    out.reservations()[0].instances()[0]
        .state()
        .and_then(|s| s.name())
        .cloned()
        .expect("instance state")
}

fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mayfly-fleet-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
        .trim()
        .to_owned()
}

/// A fleet run in this process for deployment `name`, with `faults`.
async fn run_fleet(sdk: &SdkConfig, name: &str, work: &Path, faults: &[&str]) -> FleetReport {
    let mut parsed = Faults::default();
    for f in faults {
        parsed.add_spec(f).expect("valid fault");
    }
    let config = FleetConfig {
        cluster: name.to_owned(),
        work_dir: work.to_owned(),
        tool_dirs: vec![support::venv().join("bin")],
        poll: Duration::from_millis(200),
        job_seconds: Duration::from_millis(300),
        spot_warning: Duration::from_secs(2),
        faults: parsed,
        exit_when_idle: Some(Duration::from_millis(1500)),
        max_runtime: Some(Duration::from_secs(120)),
        aws: InstanceAws::from_sdk(sdk).await.expect("emulator settings"),
        instance_roles: false,
    };
    let report = Fleet::on_ec2(config, sdk)
        .run(std::future::pending())
        .await
        .expect("fleet runs");
    assert_eq!(report.stop, StopReason::Idle, "{report:#?}");
    report
}

fn outcome(report: &FleetReport, instance_id: &str) -> InstanceOutcome {
    report.instances[instance_id]
        .outcome
        .clone()
        .unwrap_or_else(|| panic!("{instance_id} has an outcome: {report:#?}"))
}

/// Asks the metadata endpoint without a token, then with one, and shuts down.
const IDENTITY_SCRIPT: &str = r#"#!/bin/bash
set -eu
imds="$MAYFLY_IMDS_ENDPOINT"
curl -s -o /dev/null -w '%{http_code}' "$imds/latest/meta-data/instance-id" >no-token-status
token="$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' "$imds/latest/api/token")"
get() { curl -sf -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/$1"; }
get instance-id >instance-id
get placement/availability-zone >availability-zone
payer-etl load-claims --format 837 >etl.out 2>&1
shutdown -h now
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_user_data_with_its_identity_and_shutdown_terminates_it() {
    let name = support::unique_name("fleet-id");
    support::deploy(&name);
    let sdk = support::sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let id = launch(&ec2, &name, "cedar-plan:2026-11-01:claims", IDENTITY_SCRIPT).await;
    let work = work_dir(&name);

    // The binary, as the demo runs it.
    let venv = support::venv();
    let out = tokio::task::spawn_blocking({
        let (name, work) = (name.clone(), work.clone());
        move || {
            Command::new(env!("CARGO_BIN_EXE_mayfly-fleet"))
                .args(["--name", &name, "--poll-ms", "200", "--job-seconds", "0.3"])
                .args(["--exit-when-idle", "1.5", "--max-runtime", "120"])
                .arg("--work-dir")
                .arg(&work)
                .arg("--venv")
                .arg(&venv)
                .envs(support::child_env())
                .output()
                .expect("run mayfly-fleet")
        }
    })
    .await
    .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mayfly-fleet failed:\n{log}");

    let dir = work.join(&id);
    assert_eq!(read(&dir, "no-token-status"), "401", "IMDSv2 needs a token");
    assert_eq!(read(&dir, "instance-id"), id);
    let described = ec2
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap();
    let az = described.reservations()[0].instances()[0]
        .placement()
        .and_then(|p| p.availability_zone())
        .unwrap()
        .to_owned();
    assert_eq!(read(&dir, "availability-zone"), az);
    let etl = read(&dir, "etl.out");
    assert!(
        etl.contains("payer-etl: started: load-claims --format 837"),
        "{etl}"
    );
    assert!(
        etl.contains("env MAYFLY_IMDS_ENDPOINT=http://127.0.0.1:"),
        "{etl}"
    );
    assert!(etl.contains("finished"), "{etl}");
    assert_eq!(
        state(&ec2, &id).await,
        InstanceStateName::Terminated,
        "{log}"
    );
    assert!(log.contains("Instance ended."), "{log}");
    std::fs::remove_dir_all(&work).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_start_leaves_the_instance_running_and_its_script_unrun() {
    let name = support::unique_name("fleet-ns");
    support::deploy(&name);
    let sdk = support::sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let id = launch(&ec2, &name, "never-1", IDENTITY_SCRIPT).await;
    let work = work_dir(&name);

    let report = run_fleet(&sdk, &name, &work, &["never-1=never-start"]).await;

    assert_eq!(
        outcome(&report, &id),
        InstanceOutcome::Skipped(SkipReason::NeverStart)
    );
    assert!(!work.join(&id).exists(), "no directory, nothing ran");
    assert_eq!(state(&ec2, &id).await, InstanceStateName::Running);
    ec2.terminate_instances()
        .instance_ids(&id)
        .send()
        .await
        .ok();
    std::fs::remove_dir_all(&work).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_by_someone_else_kills_the_instance_processes() {
    let name = support::unique_name("fleet-reap");
    support::deploy(&name);
    let sdk = support::sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let script = "#!/bin/bash\nsleep 600 &\necho $! >sleeper.pid\nwait\n";
    let id = launch(&ec2, &name, "reaped-1", script).await;
    let work = work_dir(&name);

    let fleet = tokio::spawn({
        let (sdk, name, work) = (sdk.clone(), name.clone(), work.clone());
        async move { run_fleet(&sdk, &name, &work, &[]).await }
    });
    let pid = wait_for_pid(&work.join(&id).join("sleeper.pid")).await;
    // The reaper's move.
    ec2.terminate_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap();
    let report = fleet.await.unwrap();

    assert!(
        matches!(
            outcome(&report, &id),
            InstanceOutcome::EndedInEmulator(Some(
                InstanceState::Terminated | InstanceState::ShuttingDown
            ))
        ),
        "{report:#?}"
    );
    assert!(
        !process_alive(pid),
        "the instance's sleeper {pid} was killed"
    );
    std::fs::remove_dir_all(&work).ok();
}

/// Waits for a script to write its background process's pid into `file`.
async fn wait_for_pid(file: &Path) -> u32 {
    for _ in 0..300 {
        if let Some(pid) = std::fs::read_to_string(file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} never appeared", file.display());
}

fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| mayfly_testbed::fleet::session::parse_stat(&s))
        .is_some_and(|(_, state, _)| state != 'Z' && state != 'X')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_fleet_and_its_instances_processes() {
    let name = support::unique_name("fleet-term");
    support::deploy(&name);
    let sdk = support::sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let script = "#!/bin/bash\nsleep 600 &\necho $! >sleeper.pid\nwait\n";
    let id = launch(&ec2, &name, "term-1", script).await;
    let work = work_dir(&name);

    let mut fleet = tokio::process::Command::new(env!("CARGO_BIN_EXE_mayfly-fleet"))
        .args(["--name", &name, "--poll-ms", "200", "--max-runtime", "120"])
        .arg("--work-dir")
        .arg(&work)
        .arg("--venv")
        .arg(support::venv())
        .envs(support::child_env())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start mayfly-fleet");
    let pid = wait_for_pid(&work.join(&id).join("sleeper.pid")).await;
    let fleet_pid = fleet.id().expect("fleet running").to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &fleet_pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), fleet.wait())
        .await
        .expect("the fleet stops on SIGTERM")
        .unwrap();

    assert!(status.success(), "{status:?}");
    assert!(
        !process_alive(pid),
        "the instance's sleeper {pid} was killed"
    );
    // The fleet only ends local processes; the instance is the reaper's business.
    assert_eq!(state(&ec2, &id).await, InstanceStateName::Running);
    ec2.terminate_instances()
        .instance_ids(&id)
        .send()
        .await
        .ok();
    std::fs::remove_dir_all(&work).ok();
}

/// Runs the stand-in ETL and records its exit code, then shuts down; a spot watcher records
/// the interruption notice when it appears.
const ETL_SCRIPT: &str = r#"#!/bin/bash
imds="$MAYFLY_IMDS_ENDPOINT"
token="$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "$imds/latest/api/token")"
(
  while sleep 0.2; do
    if curl -sf -H "X-aws-ec2-metadata-token: $token" \
      "$imds/latest/meta-data/spot/instance-action" >notice.tmp; then
      mv notice.tmp spot-notice
      break
    fi
  done
) &
payer-etl load-members --format 834 >etl.out 2>&1
echo $? >rc
shutdown -h now
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_shape_what_happens() {
    let name = support::unique_name("fleet-faults");
    support::deploy(&name);
    let sdk = support::sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let mut ids = BTreeMap::new();
    for job in ["exit-1", "crash-1", "spot-1", "ok-1"] {
        ids.insert(job, launch(&ec2, &name, job, ETL_SCRIPT).await);
    }
    let work = work_dir(&name);

    let faults = ["exit-1=exit:3", "crash-1=crash", "spot-1=spot"];
    let report = run_fleet(&sdk, &name, &work, &faults).await;

    let dir = |job: &str| work.join(&ids[job]);
    // exit:N — the ETL fails with N; the script still reports and shuts down.
    assert_eq!(read(&dir("exit-1"), "rc"), "3");
    assert!(read(&dir("exit-1"), "etl.out").contains("exiting with 3"));
    assert_eq!(outcome(&report, &ids["exit-1"]), InstanceOutcome::ShutDown);
    assert_eq!(
        state(&ec2, &ids["exit-1"]).await,
        InstanceStateName::Terminated
    );
    // crash — everything dies mid-job, nothing after it runs, the instance stays up.
    assert!(read(&dir("crash-1"), "etl.out").contains("step 1/3 done"));
    assert!(!dir("crash-1").join("rc").exists());
    assert_eq!(outcome(&report, &ids["crash-1"]), InstanceOutcome::Crashed);
    assert_eq!(
        state(&ec2, &ids["crash-1"]).await,
        InstanceStateName::Running
    );
    // spot — the notice appears, then the instance is reclaimed before the job ends.
    let notice = read(&dir("spot-1"), "spot-notice");
    assert!(notice.contains(r#""action":"terminate""#), "{notice}");
    assert!(!dir("spot-1").join("rc").exists());
    assert_eq!(outcome(&report, &ids["spot-1"]), InstanceOutcome::Reclaimed);
    assert_eq!(
        state(&ec2, &ids["spot-1"]).await,
        InstanceStateName::Terminated
    );
    // No fault: no notice, success.
    assert_eq!(read(&dir("ok-1"), "rc"), "0");
    assert!(!dir("ok-1").join("spot-notice").exists());
    assert_eq!(outcome(&report, &ids["ok-1"]), InstanceOutcome::ShutDown);

    ec2.terminate_instances()
        .instance_ids(&ids["crash-1"])
        .send()
        .await
        .ok();
    std::fs::remove_dir_all(&work).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mayfly_user_data_runs_end_to_end_and_reports_to_the_events_queue() {
    use mayfly::catalog::Catalog;
    use mayfly::job::{Job, JobRequest};
    use mayfly::profile::{load_and_validate, GlobalCaps, ValidateContext};
    use mayfly::userdata::{render_for_job, InstanceEnv, Renderer};

    let name = support::unique_name("fleet-e2e");
    support::deploy(&name);
    let sdk = support::sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_url = sqs
        .get_queue_url()
        .queue_name(Names::new(&name).events_queue())
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();

    let ctx = ValidateContext {
        catalog: Catalog::shipped(),
        global: GlobalCaps::default(),
    };
    let payers = load_and_validate(&[support::path("payer-profiles")], &ctx).unwrap();
    let payer = payers.iter().find(|p| p.id() == "cedar-plan").unwrap();
    let req = JobRequest {
        job_id: "cedar-plan:2026-11-01:eligibility".into(),
        payer_id: "cedar-plan".into(),
        kind: "eligibility".into(),
        batch: "2026-11-01".into(),
        input: None,
        params: BTreeMap::new(),
        priority: None,
    };
    let job = Job::from_request(req, chrono::Utc::now());
    let env = InstanceEnv {
        events_queue_url: queue_url.clone(),
        region: support::REGION.into(),
        endpoint_url: Some(support::endpoint()),
        ..InstanceEnv::default()
    };
    let script = render_for_job(&Renderer::builtin(), payer, &job, 1, &env).unwrap();
    let id = launch(&ec2, &name, &job.job_id, &script).await;
    let work = work_dir(&name);

    let report = run_fleet(&sdk, &name, &work, &[]).await;

    assert_eq!(outcome(&report, &id), InstanceOutcome::ShutDown, "{}", {
        std::fs::read_to_string(work.join(&id).join("console.log")).unwrap_or_default()
    });
    assert_eq!(state(&ec2, &id).await, InstanceStateName::Terminated);
    let mut events = Vec::new();
    for _ in 0..5 {
        let got = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        for m in got.messages() {
            let event: InstanceEvent = serde_json::from_str(m.body().unwrap()).unwrap();
            events.push(event);
        }
        if events.iter().any(|e| e.event == EventKind::Finished) {
            break;
        }
    }
    let kinds: Vec<EventKind> = events.iter().map(|e| e.event).collect();
    assert!(kinds.contains(&EventKind::Started), "{events:#?}");
    let finished = events
        .iter()
        .find(|e| e.event == EventKind::Finished)
        .unwrap_or_else(|| panic!("a finished event: {events:#?}"));
    assert_eq!(finished.instance_id, id);
    assert_eq!(finished.exit_code, Some(0), "{finished:#?}");
    let tail = finished.output_tail.as_deref().unwrap_or_default();
    assert!(
        tail.contains("payer-etl: started: load-eligibility --strict"),
        "{tail}"
    );
    assert!(
        tail.contains("env MAYFLY_JOB_ID=cedar-plan/cedar-plan:2026-11-01:eligibility"),
        "{tail}"
    );
    std::fs::remove_dir_all(&work).ok();
}
