//! Launch parameters a real account needs, on the fakes: client tokens that belong to one
//! deployment (two deployments in one account never share one), a repair that replays the
//! token recorded on the attempt (also one recorded by an earlier release), and the root
//! volume's KMS key from the payer's profile or the deployment.

mod support;

use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Duration;
use mayfly::fakes::FakeCompute;
use mayfly::job::JobState;
use mayfly::ports::{
    Compute, ComputeError, GroupCount, GroupMember, LaunchRequest, Launched, ManagedInstance,
};
use mayfly::scheduler::{client_token, TickOptions};
use mayfly::sizing::Rung;
use support::world::{self, on_fakes, t0, Fault, FaultyCompute, World};

const JOB: &str = "cedar-plan:2027-03:eligibility";

fn submit_body() -> String {
    world::request(JOB, "cedar-plan", "eligibility", "2027-03", 1)
}

fn world_on(cluster: &str, compute: Arc<dyn Compute>) -> World {
    World {
        cluster: cluster.into(),
        compute: Arc::new(FaultyCompute::new(compute)),
        ..on_fakes()
    }
}

#[tokio::test]
async fn two_deployments_in_one_account_with_the_same_job_id_get_their_own_instances() {
    // One account (one EC2, honouring client tokens account-wide), two deployments.
    let ec2 = Arc::new(FakeCompute::new());
    let staging = world_on("staging", ec2.clone());
    let production = world_on("production", ec2.clone());
    for w in [&staging, &production] {
        w.apply_examples().await;
        w.submit(&submit_body()).await;
        w.tick(t0()).await;
    }

    let (on_staging, _) = staging.running_on(JOB).await;
    let (on_production, _) = production.running_on(JOB).await;
    assert_ne!(on_staging, on_production);
    assert_eq!(ec2.instances().len(), 2);
    assert_eq!(
        staging
            .instance("staging", &on_staging)
            .await
            .tag("mayfly:cluster"),
        Some("staging")
    );
    assert_eq!(
        production
            .instance("production", &on_production)
            .await
            .tag("mayfly:cluster"),
        Some("production")
    );
    let token = |w: &World| w.compute.calls()[0].client_token.clone();
    assert_ne!(token(&staging), token(&production));
}

#[test]
fn the_token_is_stable_across_releases_and_names_the_deployment() {
    // A token must not change between the pass that launches and the one that repairs, even
    // across an upgrade: this is the value the current formula gives, pinned.
    let rung = Rung {
        instance_type: "c7i.large".into(),
        subnet: "subnet-0a1b2c3d4e5f60014".into(),
        capacity: mayfly::profile::CapacityType::Spot,
    };
    let token = client_token("production", JOB, 1, &rung);
    assert_eq!(token, "mayfly-41dbf94524b35832739d020aa81f0163");
    assert!(token.len() <= 64 && token.is_ascii());
    assert_ne!(token, client_token("staging", JOB, 1, &rung));
    assert_ne!(token, pre_upgrade_token(JOB, 1, &rung));
}

/// The token of releases before the deployment was part of it: (job, attempt, rung) only.
fn pre_upgrade_token(job_id: &str, attempt: u32, rung: &Rung) -> String {
    let input = format!(
        "{job_id}\u{1f}{attempt}\u{1f}{}\u{1f}{}\u{1f}{}",
        rung.instance_type, rung.subnet, rung.capacity
    );
    let fnv = |seed: u64| {
        input.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    format!(
        "mayfly-{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

/// EC2 whose DescribeInstances has not caught up with recent launches (it is eventually
/// consistent): every launched instance exists, none is listed yet.
struct NotListedYet(Arc<FakeCompute>);

#[async_trait]
impl Compute for NotListedYet {
    async fn launch(&self, req: &LaunchRequest) -> Result<Launched, ComputeError> {
        self.0.launch(req).await
    }
    async fn launch_group(
        &self,
        req: &LaunchRequest,
        count: GroupCount,
    ) -> Result<Vec<GroupMember>, ComputeError> {
        self.0.launch_group(req, count).await
    }
    async fn find_group(
        &self,
        _cluster: &str,
        _group: &str,
    ) -> Result<Vec<ManagedInstance>, ComputeError> {
        Ok(Vec::new())
    }
    async fn list_managed(&self, _cluster: &str) -> Result<Vec<ManagedInstance>, ComputeError> {
        Ok(Vec::new())
    }
    async fn find_attempt(
        &self,
        _cluster: &str,
        _job_id: &str,
        _attempt: u32,
    ) -> Result<Vec<ManagedInstance>, ComputeError> {
        Ok(Vec::new())
    }
    async fn terminate(&self, ids: &[String]) -> Result<(), ComputeError> {
        self.0.terminate(ids).await
    }
    async fn set_tag(&self, id: &str, key: &str, value: Option<&str>) -> Result<(), ComputeError> {
        self.0.set_tag(id, key, value).await
    }
    async fn spot_price(&self, instance_type: &str, az: &str) -> Result<f64, ComputeError> {
        self.0.spot_price(instance_type, az).await
    }
}

#[tokio::test]
async fn a_launch_recorded_before_the_upgrade_is_replayed_with_its_recorded_token() {
    // A pass of the old release recorded the attempt (rung and old-style token), sent
    // RunInstances, and stopped before recording the instance.
    let before = on_fakes();
    before.apply_examples().await;
    before.submit(&submit_body()).await;
    before.compute.script(Fault::LoseResponse);
    before.tick(t0()).await;
    let sent = before.compute.calls().pop().expect("one RunInstances");
    let mut job = before.job(JOB).await;
    assert_eq!(job.state, JobState::Launching);
    let rung = job.current_attempt().unwrap().rung.clone().unwrap();
    let old_token = pre_upgrade_token(JOB, 1, &rung);
    assert_ne!(old_token, client_token(&before.cluster, JOB, 1, &rung));
    let expected = job.version;
    job.version += 1;
    job.attempts.last_mut().unwrap().client_token = Some(old_token.clone());
    before.ledger.update(&job, expected).await.expect("rewrite");
    // In the account, that launch went out with the old token; DescribeInstances does not
    // list the instance yet, so the repair cannot adopt it by its tags.
    let ec2 = Arc::new(FakeCompute::new());
    let launched = ec2
        .launch(&LaunchRequest {
            client_token: old_token.clone(),
            ..sent
        })
        .await
        .expect("the old release's launch");
    let after = World {
        compute: Arc::new(FaultyCompute::new(Arc::new(NotListedYet(ec2.clone())))),
        ..before
    };

    let report = after.tick(t0() + Duration::minutes(1)).await;

    assert_eq!(report.launch.replayed, 1, "{report}");
    let replay = after.compute.calls().pop().expect("the replay");
    assert_eq!(
        replay.client_token, old_token,
        "the recorded token, not a new one"
    );
    let (instance, _) = after.running_on(JOB).await;
    assert_eq!(
        instance, launched.instance_id,
        "EC2 answered the same instance"
    );
    assert_eq!(ec2.instances().len(), 1, "nothing launched twice");
}

#[tokio::test]
async fn the_root_volume_uses_the_payers_kms_key_else_the_deployments() {
    let w = on_fakes();
    w.apply_examples().await;
    let stored = w.config.get("cedar-plan").await.unwrap().unwrap();
    let mut cedar = stored.profile.clone();
    cedar.launch.root_volume_kms_key = Some("alias/cedar-plan-ebs".into());
    w.config
        .put(&cedar, Some(stored.version), t0())
        .await
        .expect("apply");
    world::submit_workload(&w).await;
    let deployment_key =
        "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let mut scheduler = w.scheduler(60);
    scheduler.settings.root_volume_kms_key = Some(deployment_key.into());

    scheduler
        .tick(TickOptions::default(), t0())
        .await
        .expect("pass");

    let calls = w.compute.calls();
    let key_of = |payer: &str| {
        calls
            .iter()
            .find(|r| {
                r.tags
                    .iter()
                    .any(|(k, v)| k == "mayfly:payer" && v == payer)
            })
            .unwrap_or_else(|| panic!("no launch for {payer}: {calls:?}"))
            .root_volume_kms_key
            .clone()
    };
    assert_eq!(
        key_of("cedar-plan").as_deref(),
        Some("alias/cedar-plan-ebs")
    );
    assert_eq!(key_of("harbor-health").as_deref(), Some(deployment_key));
}

#[test]
fn a_malformed_deployment_kms_key_is_refused_naming_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .args(["tick", "--root-volume-kms-key", "my-key"])
        .env_remove("MAYFLY_ROOT_VOLUME_KMS_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--root-volume-kms-key"), "{stderr}");
    assert!(stderr.contains("not a KMS key ARN"), "{stderr}");
}
