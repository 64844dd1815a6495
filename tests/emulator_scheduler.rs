//! The scheduling pass against the emulator (moto) through the real adapters: the same
//! scenarios as `scheduler_fakes.rs`, over the real wire protocol. moto does not honour
//! ClientToken, so recovery from a crashed launch is the tag lookup exercised here.

mod support;

use std::sync::Arc;

use mayfly::aws::dynamo::{DynamoConfigStore, DynamoLedger};
use mayfly::aws::ec2::Ec2Compute;
use mayfly::aws::sqs::SqsQueue;
use mayfly::aws::Clients;
use mayfly::names::Names;
use mayfly::ratelimit::Ec2Limits;
use support::world::{self, EchoUserData, FaultyCompute, World};

async fn world() -> (World, Clients) {
    let name = support::unique_name("sch");
    support::deploy(&name);
    let sdk = support::sdk_config().await;
    let clients = Clients::new(&sdk);
    let names = Names::new(&name);
    let queue = |n: String| {
        let sqs = clients.sqs.clone();
        async move { Arc::new(SqsQueue::by_name(sqs, &n).await.expect("queue exists")) }
    };
    let (subnets, security_groups) = support::emulator_network(&clients.ec2).await;
    let w = World {
        cluster: name.clone(),
        config: Arc::new(DynamoConfigStore::new(
            clients.dynamodb.clone(),
            names.payers_table(),
        )),
        ledger: Arc::new(DynamoLedger::new(
            clients.dynamodb.clone(),
            names.jobs_table(),
        )),
        intake: queue(names.intake_queue()).await,
        intake_dlq: queue(names.intake_dlq()).await,
        events: queue(names.events_queue()).await,
        events_fake: None,
        events_dlq: queue(names.events_dlq()).await,
        compute: Arc::new(FaultyCompute::new(Arc::new(Ec2Compute::new(
            clients.ec2.clone(),
            Arc::new(Ec2Limits::default()),
        )))),
        user_data: Arc::new(EchoUserData),
        subnets,
        security_groups,
        instance_profile: format!("{name}-instance"),
        clock: None,
        max_group: None,
        // moto launches exactly MinCount instances.
        group_min_is_max: true,
    };
    (w, clients)
}

#[tokio::test]
async fn first_pass_launches_tier_zero_with_one_run_instances_each() {
    let (w, clients) = world().await;
    let before = clients.calls.snapshot();
    world::first_pass_launches_tier_zero(&w).await;
    let after = clients.calls.snapshot();
    let delta =
        |op: &str| after.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0);
    assert_eq!(delta("EC2.RunInstances"), 2, "{after:?}");
    assert_eq!(delta("EC2.CreateTags"), 0, "{after:?}");
    // Shutdown behaviour, metadata options, volume tags and user-data as launched.
    for i in w.live_instances().await {
        support::assert_launch_shape(&clients.ec2, &i.instance_id, &w.cluster).await;
    }
}

#[tokio::test]
async fn duplicates_and_malformed_requests() {
    world::duplicates_and_malformed_requests(&world().await.0).await;
}

#[tokio::test]
async fn crash_before_run_instances() {
    world::crash_before_run_instances(&world().await.0).await;
}

#[tokio::test]
async fn crash_after_run_instances() {
    world::crash_after_run_instances(&world().await.0).await;
}

#[tokio::test]
async fn capacity_falls_back_to_next_rung() {
    world::capacity_falls_back_to_next_rung(&world().await.0).await;
}

#[tokio::test]
async fn throttling_stops_the_pass() {
    world::throttling_stops_the_pass(&world().await.0).await;
}

#[tokio::test]
async fn configuration_error_pauses_the_payer_and_loses_no_job() {
    world::configuration_error_pauses_the_payer_and_loses_no_job(&world().await.0).await;
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    world::dry_run_changes_nothing(&world().await.0).await;
}

#[tokio::test]
async fn events_complete_jobs_and_unlock_the_next_tier() {
    world::events_complete_jobs_and_unlock_the_next_tier(&world().await.0).await;
}

#[tokio::test]
async fn non_zero_exit_fails_with_code_and_tail() {
    world::non_zero_exit_fails_with_code_and_tail(&world().await.0).await;
}

#[tokio::test]
async fn boot_timeout_terminates_and_retries() {
    world::boot_timeout_terminates_and_retries(&world().await.0).await;
}

#[tokio::test]
async fn heartbeat_and_max_runtime_deadlines() {
    world::heartbeat_and_max_runtime_deadlines(&world().await.0).await;
}

#[tokio::test]
async fn lost_instances_are_retried_after_a_second_look() {
    world::lost_instances_are_retried_after_a_second_look(&world().await.0).await;
}

#[tokio::test]
async fn orphans_are_reaped_after_grace_and_others_never_touched() {
    world::orphans_are_reaped_after_grace_and_others_never_touched(&world().await.0).await;
}

#[tokio::test]
async fn an_instance_outliving_its_job_is_reaped() {
    world::an_instance_outliving_its_job_is_reaped(&world().await.0).await;
}

#[tokio::test]
async fn circuit_breaker_pauses_after_consecutive_boot_failures() {
    world::circuit_breaker_pauses_after_consecutive_boot_failures(&world().await.0).await;
}

#[tokio::test]
async fn retry_releases_blocked_tiers_and_cancel_terminates() {
    world::retry_releases_blocked_tiers_and_cancel_terminates(&world().await.0).await;
}
