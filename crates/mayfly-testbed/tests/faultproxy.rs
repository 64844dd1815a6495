//! The fault proxy in front of the emulator, driven through mayfly's own AWS clients and EC2
//! adapter: EC2's RunInstances bucket throttles a burst with `RequestLimitExceeded` (which
//! mayfly classifies as throttling, counted once per call since RunInstances is never retried
//! by the SDK), a lost RunInstances response was still applied upstream, injected 500s are
//! retried except RunInstances, a held call ends on the attempt timeout, DynamoDB and SQS
//! throttles are recognised by the SDK, and the seeded faults and the stats endpoint.

// The root package's emulator harness (moto, SDK configuration, deployments).
#[path = "../../../tests/support/emulator.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::Credentials;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::Filter;
use mayfly::aws::ec2::Ec2Compute;
use mayfly::aws::{Clients, Timeouts};
use mayfly::names::tags;
use mayfly::ports::{Compute, ComputeError, LaunchRequest};
use mayfly::profile::CapacityType;
use mayfly::ratelimit::{Ec2Limits, Rate};
use mayfly::sizing::Rung;
use mayfly_testbed::faultproxy::{FaultProxy, FaultRates, LostResponse, ProxyConfig, ProxyStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

/// SDK configuration for `url` with dummy credentials and the given retries.
async fn sdk_for(url: &str, retry: RetryConfig) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new(support::REGION))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "mayfly-tests",
        ))
        .retry_config(retry)
        .load()
        .await
}

/// Retries as configured in production, with a short back-off so tests stay quick.
fn quick_retries() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(1))
}

#[derive(Debug)]
struct LaunchEnv {
    subnet: String,
    security_group: String,
    instance_profile: String,
    image: String,
}

/// What a launch needs in the emulator, set up once per test process, directly (not through
/// any proxy).
async fn launch_env() -> &'static LaunchEnv {
    static ENV: OnceCell<LaunchEnv> = OnceCell::const_new();
    ENV.get_or_init(|| async {
        let ec2 = aws_sdk_ec2::Client::new(&support::sdk_config().await);
        let (subnets, groups) = support::emulator_network(&ec2).await;
        let images = ec2
            .describe_images()
            .filters(
                Filter::builder()
                    .name("name")
                    .values("amzn2-ami-hvm-*-x86_64-gp2")
                    .build(),
            )
            .send()
            .await
            .expect("describe images");
        let image = images
            .images()
            .iter()
            .filter_map(|i| i.image_id())
            .min()
            .expect("moto ships Amazon Linux 2 images")
            .to_owned();
        let instance_profile = support::unique_name("fp-profile");
        let out = std::process::Command::new(support::venv().join("bin/aws"))
            .args([
                "iam",
                "create-instance-profile",
                "--instance-profile-name",
                &instance_profile,
            ])
            .envs(support::child_env())
            .env("AWS_PAGER", "")
            .output()
            .expect("run the AWS CLI");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        LaunchEnv {
            subnet: subnets[0].clone(),
            security_group: groups[0].clone(),
            instance_profile,
            image,
        }
    })
    .await
}

fn request(env: &LaunchEnv, cluster: &str, job_id: &str) -> LaunchRequest {
    LaunchRequest {
        client_token: format!("{job_id}-1"),
        rung: Rung {
            instance_type: "t3.micro".into(),
            subnet: env.subnet.clone(),
            capacity: CapacityType::OnDemand,
        },
        image_id: env.image.clone(),
        security_groups: vec![env.security_group.clone()],
        instance_profile: env.instance_profile.clone(),
        root_volume_gib: 8,
        root_volume_kms_key: None,
        user_data: "#!/bin/bash\ntrue\n".into(),
        tags: vec![
            (tags::CLUSTER.into(), cluster.into()),
            (tags::JOB_ID.into(), job_id.into()),
            (tags::ATTEMPT.into(), "1".into()),
        ],
    }
}

/// The EC2 adapter straight on the emulator, to see what really happened there.
async fn direct_compute() -> Ec2Compute {
    let sdk = support::sdk_config().await;
    Ec2Compute::new(
        aws_sdk_ec2::Client::new(&sdk),
        Arc::new(Ec2Limits::unlimited()),
    )
}

async fn proxy(config: ProxyConfig) -> FaultProxy {
    FaultProxy::start(config).await.expect("start the proxy")
}

#[tokio::test]
async fn a_run_instances_burst_beyond_five_is_throttled_and_classified() {
    let env = launch_env().await;
    let p =
        proxy(ProxyConfig::new(support::endpoint()).bucket("RunInstances", Rate::RUN_INSTANCES))
            .await;
    let c = Clients::new(&sdk_for(&p.url(), quick_retries()).await);
    // No client-side limit: the burst reaches the proxy's bucket at once.
    let compute = Arc::new(
        Ec2Compute::new(c.ec2.clone(), Arc::new(Ec2Limits::unlimited()))
            .with_launch_client(c.ec2_launch.clone()),
    );
    let cluster = support::unique_name("fp-burst");
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (compute, req) = (
            Arc::clone(&compute),
            request(env, &cluster, &format!("job-{i}")),
        );
        burst.spawn(async move { compute.launch(&req).await });
    }

    let results = burst.join_all().await;

    let launched = results.iter().filter(|r| r.is_ok()).count();
    let throttled: Vec<_> = results
        .iter()
        .filter_map(|r| match r {
            Err(ComputeError::Throttled { code }) => Some(code.as_str()),
            _ => None,
        })
        .collect();
    assert!(launched >= 5, "{results:?}");
    assert!(!throttled.is_empty(), "{results:?}");
    assert_eq!(launched + throttled.len(), 8, "{results:?}");
    assert!(throttled.iter().all(|code| *code == "RequestLimitExceeded"));
    // One attempt per launch (no SDK retries), every throttled one counted as such.
    assert_eq!(c.calls.get("EC2.RunInstances"), 8);
    assert_eq!(c.calls.throttled(), throttled.len() as u64);
    let stats = p.counters().operation("RunInstances");
    assert_eq!(
        (stats.requests, stats.forwarded, stats.throttled),
        (8, launched as u64, throttled.len() as u64)
    );
    // Exactly the launches that succeeded exist upstream.
    let upstream = direct_compute().await.list_managed(&cluster).await.unwrap();
    assert_eq!(upstream.len(), launched);
}

#[tokio::test]
async fn a_lost_run_instances_response_was_applied_upstream() {
    let env = launch_env().await;
    for how in [LostResponse::Drop, LostResponse::BadGateway] {
        let p = proxy(
            ProxyConfig::new(support::endpoint())
                .rates(FaultRates {
                    lost_response: 1.0,
                    ..FaultRates::default()
                })
                .ops(["RunInstances"])
                .lost_response(how),
        )
        .await;
        let c = Clients::new(&sdk_for(&p.url(), quick_retries()).await);
        let compute = Ec2Compute::new(c.ec2.clone(), Arc::new(Ec2Limits::default()));
        let cluster = support::unique_name("fp-lost");
        let req = request(env, &cluster, "job-lost");

        let result = compute.launch(&req).await;

        assert!(
            matches!(result, Err(ComputeError::Transient { .. })),
            "{how:?}: {result:?}"
        );
        assert_eq!(c.calls.get("EC2.RunInstances"), 1, "{how:?}: not retried");
        let stats = p.counters().operation("RunInstances");
        assert_eq!((stats.forwarded, stats.lost_responses), (1, 1));
        // The call was applied: the attempt's instance is there, once, found by its tags
        // (through the proxy too: only RunInstances is faulted).
        let upstream = direct_compute()
            .await
            .find_attempt(&cluster, "job-lost", 1)
            .await
            .unwrap();
        assert_eq!(upstream.len(), 1, "{how:?}");
        let via_proxy = compute.find_attempt(&cluster, "job-lost", 1).await.unwrap();
        assert_eq!(via_proxy, upstream);
    }
}

#[tokio::test]
async fn injected_500s_are_retried_except_run_instances() {
    let env = launch_env().await;
    let p = proxy(
        ProxyConfig::new(support::endpoint())
            .rates(FaultRates {
                error: 1.0,
                ..FaultRates::default()
            })
            .ops(["RunInstances", "DescribeInstances"]),
    )
    .await;
    let c = Clients::new(&sdk_for(&p.url(), quick_retries()).await);
    let compute = Ec2Compute::new(c.ec2.clone(), Arc::new(Ec2Limits::default()));
    let cluster = support::unique_name("fp-500");

    let launch = compute.launch(&request(env, &cluster, "job-500")).await;
    let list = compute.list_managed(&cluster).await;

    for result in [launch.map(|_| ()), list.map(|_| ())] {
        assert!(
            matches!(&result, Err(ComputeError::Transient { code, .. }) if code == "InternalError"),
            "{result:?}"
        );
    }
    assert_eq!(c.calls.get("EC2.RunInstances"), 1);
    assert_eq!(c.calls.get("EC2.DescribeInstances"), 3);
    assert_eq!(p.counters().total.errors, 4);
    // Only the launch's image lookup (DescribeImages, for its root device) got through.
    assert_eq!(p.counters().operation("DescribeImages").forwarded, 1);
    assert_eq!(p.counters().total.forwarded, 1);
    assert!(direct_compute()
        .await
        .list_managed(&cluster)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_held_call_ends_on_the_attempt_timeout_unapplied() {
    let env = launch_env().await;
    let p = proxy(
        ProxyConfig::new(support::endpoint())
            .rates(FaultRates {
                timeout: 1.0,
                ..FaultRates::default()
            })
            .ops(["RunInstances"])
            .timeout_hold(Duration::from_secs(30)),
    )
    .await;
    let timeouts = Timeouts {
        attempt: Duration::from_secs(1),
        ..Timeouts::default()
    };
    let c = Clients::with_timeouts(&sdk_for(&p.url(), quick_retries()).await, &timeouts);
    let compute = Ec2Compute::new(c.ec2.clone(), Arc::new(Ec2Limits::default()))
        .with_launch_client(c.ec2_launch.clone());
    let cluster = support::unique_name("fp-timeout");

    let started = Instant::now();
    let result = compute.launch(&request(env, &cluster, "job-held")).await;

    assert!(
        matches!(&result, Err(ComputeError::Transient { code, .. }) if code == "timeout"),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(c.calls.get("EC2.RunInstances"), 1);
    assert_eq!(p.counters().operation("RunInstances").timeouts, 1);
    assert!(direct_compute()
        .await
        .find_attempt(&cluster, "job-held", 1)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn dynamodb_and_sqs_throttles_are_recognised_by_the_sdk() {
    let p = proxy(
        ProxyConfig::new(support::endpoint())
            .bucket(
                "ListTables",
                Rate {
                    burst: 1.0,
                    per_sec: 0.001,
                },
            )
            .bucket(
                "ListQueues",
                Rate {
                    burst: 1.0,
                    per_sec: 0.001,
                },
            ),
    )
    .await;
    let c = Clients::new(&sdk_for(&p.url(), RetryConfig::disabled()).await);

    c.dynamodb
        .list_tables()
        .send()
        .await
        .expect("first call passes");
    let err = c.dynamodb.list_tables().send().await.unwrap_err();
    assert_eq!(err.code(), Some("ThrottlingException"));
    c.sqs.list_queues().send().await.expect("first call passes");
    let err = c.sqs.list_queues().send().await.unwrap_err();
    assert_eq!(err.code(), Some("ThrottlingException"));

    let throttled = c.calls.throttled_snapshot();
    assert_eq!(
        throttled.get("DynamoDB.ListTables"),
        Some(&1),
        "{throttled:?}"
    );
    assert_eq!(throttled.get("SQS.ListQueues"), Some(&1), "{throttled:?}");
    assert_eq!(p.counters().total.throttled, 2);
}

/// `GET path` on `addr`, returning the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    out.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[tokio::test]
async fn seeded_faults_repeat_and_the_stats_endpoint_reports_them() {
    let rates = FaultRates {
        error: 0.3,
        ..FaultRates::default()
    };
    let mut outcomes = Vec::new();
    for seed in [11, 11, 12] {
        let p = proxy(
            ProxyConfig::new(support::endpoint())
                .seed(seed)
                .rates(rates),
        )
        .await;
        let ec2 = aws_sdk_ec2::Client::new(&sdk_for(&p.url(), RetryConfig::disabled()).await);
        let mut seen = Vec::new();
        for _ in 0..20 {
            let r = ec2.describe_availability_zones().send().await;
            seen.push(r.map_err(|e| e.code().map(str::to_owned)).is_ok());
        }
        let stats: ProxyStats = p.counters();
        let over_http: serde_json::Value =
            serde_json::from_str(&http_get(p.addr(), "/__faultproxy/stats").await).unwrap();
        assert_eq!(over_http, serde_json::to_value(&stats).unwrap());
        let op = stats.operation("DescribeAvailabilityZones");
        assert_eq!(op.requests, 20);
        assert_eq!(op.errors + op.forwarded, 20);
        assert_eq!(op.errors as usize, seen.iter().filter(|ok| !**ok).count());
        assert_eq!(
            over_http["operations"]["DescribeAvailabilityZones"]["errors"],
            op.errors
        );
        outcomes.push(seen);
    }
    assert_eq!(outcomes[0], outcomes[1], "same seed, same faults");
    assert_ne!(outcomes[0], outcomes[2], "another seed, other faults");
}
