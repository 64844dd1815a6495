//! Permission errors against an emulator that enforces IAM (a private one: enforcement would
//! change every other test's answers). The caller is an IAM user with no policy, so every
//! call is denied: moto answers DynamoDB and SQS denials as HTTP 403 with an XML body the
//! SDK reads no code from, and EC2's as `AccessDenied`. Each must name the operation, the
//! resource and the role of `infra/mayfly.yaml` that grants it, and none is transient.

mod support;

use std::process::Command;
use std::sync::Arc;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::Credentials;
use mayfly::aws::dynamo::DynamoConfigStore;
use mayfly::aws::ec2::Ec2Compute;
use mayfly::aws::sqs::SqsQueue;
use mayfly::aws::Clients;
use mayfly::ports::{Compute, ComputeError, ConfigStore, Queue, QueueError, StoreError};
use mayfly::ratelimit::Ec2Limits;

/// Runs the AWS CLI against `endpoint` with the emulator's default (unchecked) keys.
fn aws(endpoint: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(support::venv().join("bin/aws"))
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", support::REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run the AWS CLI");
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the AWS CLI")
}

#[tokio::test]
async fn denials_name_operation_resource_and_role_in_every_service() {
    // The first two requests (creating the user and its key) pass unchecked; then IAM rules.
    let emulator = support::private_emulator(&[("INITIAL_NO_AUTH_ACTION_COUNT", "2")]);
    let endpoint = emulator.endpoint.clone();
    aws(
        &endpoint,
        &["iam", "create-user", "--user-name", "no-grants"],
    );
    let key = aws(
        &endpoint,
        &["iam", "create-access-key", "--user-name", "no-grants"],
    );
    let field = |name: &str| key["AccessKey"][name].as_str().expect(name).to_owned();
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(Region::new(support::REGION))
        .credentials_provider(Credentials::new(
            field("AccessKeyId"),
            field("SecretAccessKey"),
            None,
            None,
            "denied-user",
        ))
        .load()
        .await;
    let clients = Clients::new(&sdk);

    let store = DynamoConfigStore::new(clients.dynamodb.clone(), "d1-payers");
    match store.get("acme").await {
        Err(StoreError::Denied(why)) => {
            assert!(
                why.starts_with("dynamodb:GetItem on table d1-payers was denied"),
                "{why}"
            );
            assert!(
                why.contains("SchedulerRole in infra/mayfly.yaml")
                    && why.contains("ledger-and-config"),
                "{why}"
            );
        }
        other => panic!("expected a denial, got {other:?}"),
    }

    let queue = SqsQueue::new(
        clients.sqs.clone(),
        format!("{endpoint}/123456789012/d1-intake"),
    );
    match queue.send("{}", &[]).await {
        Err(QueueError::Denied(why)) => {
            assert!(why.starts_with("sqs:SendMessage on queue"), "{why}");
            assert!(
                why.contains("d1-intake") && why.contains("policy queues"),
                "{why}"
            );
        }
        other => panic!("expected a denial, got {other:?}"),
    }

    let compute = Ec2Compute::new(clients.ec2.clone(), Arc::new(Ec2Limits::default()));
    match compute.list_managed("d1").await {
        Err(ComputeError::Denied { message, .. }) => {
            assert!(message.starts_with("ec2:DescribeInstances on"), "{message}");
            assert!(message.contains("ec2-launch-and-reap"), "{message}");
        }
        other => panic!("expected a denial, got {other:?}"),
    }
}
