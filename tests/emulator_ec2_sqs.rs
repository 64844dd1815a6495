//! The EC2 and SQS adapters against the emulator (moto), over the real wire protocol: what a
//! launch puts on the instance, paginated tag lookups, termination, error classification,
//! call counting (retries included), and the queue operations the scheduler relies on.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::Credentials;
use aws_sdk_ec2::types::{
    Filter, HttpTokensState, InstanceAttributeName, InstanceLifecycleType,
    InstanceMetadataEndpointState, ResourceType, Tag, TagSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use base64::Engine as _;
use mayfly::aws::ec2::Ec2Compute;
use mayfly::aws::sqs::SqsQueue;
use mayfly::aws::Clients;
use mayfly::names::tags;
use mayfly::ports::{Compute, ComputeError, InstanceState, LaunchRequest, Queue, QueueError};
use mayfly::profile::CapacityType;
use mayfly::ratelimit::Ec2Limits;
use mayfly::sizing::Rung;
use tokio::sync::OnceCell;

/// What a launch needs that moto validates: a subnet, a security group and an instance
/// profile that exist. The image and (unless validation is on) the type are not checked.
#[derive(Debug)]
struct LaunchEnv {
    subnet: String,
    security_group: String,
    instance_profile: String,
    image: String,
}

/// Found (and the instance profile created) once per test process.
async fn launch_env(ec2: &aws_sdk_ec2::Client) -> &'static LaunchEnv {
    static ENV: OnceCell<LaunchEnv> = OnceCell::const_new();
    ENV.get_or_init(|| async {
        // moto has a default VPC with one default subnet per AZ and a "default" group.
        let subnets = ec2
            .describe_subnets()
            .filters(
                Filter::builder()
                    .name("default-for-az")
                    .values("true")
                    .build(),
            )
            .send()
            .await
            .expect("describe subnets");
        let mut subnets: Vec<_> = subnets
            .subnets()
            .iter()
            .filter(|s| s.availability_zone().is_some())
            .collect();
        subnets.sort_by_key(|s| s.availability_zone().map(str::to_owned));
        let subnet = subnets.first().expect("moto has default subnets");
        let vpc = subnet.vpc_id().expect("subnet has a VPC").to_owned();
        let groups = ec2
            .describe_security_groups()
            .filters(Filter::builder().name("vpc-id").values(&vpc).build())
            .filters(
                Filter::builder()
                    .name("group-name")
                    .values("default")
                    .build(),
            )
            .send()
            .await
            .expect("describe security groups");
        let security_group = groups.security_groups()[0]
            .group_id()
            .expect("group id")
            .to_owned();
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
            .expect("moto ships Amazon Linux 2 images");
        let instance_profile = support::unique_name("mayfly-test-profile");
        aws_cli(&[
            "iam",
            "create-instance-profile",
            "--instance-profile-name",
            &instance_profile,
        ]);
        LaunchEnv {
            subnet: subnet.subnet_id().expect("subnet id").to_owned(),
            security_group,
            instance_profile,
            image: image.to_owned(),
        }
    })
    .await
}

fn aws_cli(args: &[&str]) -> String {
    let out = Command::new(support::venv().join("bin/aws"))
        .args(args)
        .envs(support::child_env())
        .env("AWS_PAGER", "")
        .output()
        .expect("run the AWS CLI");
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn clients() -> Clients {
    Clients::new(&support::sdk_config().await)
}

fn request(
    env: &LaunchEnv,
    cluster: &str,
    job_id: &str,
    attempt: u32,
    capacity: CapacityType,
) -> LaunchRequest {
    LaunchRequest {
        client_token: format!("{job_id}-{attempt}"),
        rung: Rung {
            instance_type: "t3.micro".into(),
            subnet: env.subnet.clone(),
            capacity,
        },
        image_id: env.image.clone(),
        security_groups: vec![env.security_group.clone()],
        instance_profile: env.instance_profile.clone(),
        root_volume_gib: 16,
        root_volume_kms_key: None,
        user_data: format!("#!/bin/bash\nset -eu\necho 'job {job_id}' \"$HOME\" # ünïcode\n")
            .into_bytes(),
        tags: vec![
            (tags::CLUSTER.into(), cluster.into()),
            (tags::JOB_ID.into(), job_id.into()),
            (tags::ATTEMPT.into(), attempt.to_string()),
        ],
    }
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_owned(),
                t.value().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn launch_sets_tags_shutdown_imds_and_user_data_on_create() {
    let c = clients().await;
    let env = launch_env(&c.ec2).await;
    let compute = Ec2Compute::new(c.ec2.clone(), Arc::new(Ec2Limits::default()));
    let cluster = support::unique_name("c");
    let req = request(
        env,
        &cluster,
        &support::unique_name("job"),
        1,
        CapacityType::OnDemand,
    );
    c.calls.reset();

    let launched = compute.launch(&req).await.expect("launch");

    // The first launch of an image reads its root device; tags go on with the launch.
    assert_eq!(c.calls.get("EC2.RunInstances"), 1);
    assert_eq!(c.calls.get("EC2.DescribeImages"), 1);
    assert_eq!(c.calls.get("EC2.CreateTags"), 0);
    assert_eq!(c.calls.total(), 2, "{:?}", c.calls.snapshot());
    assert!(launched.instance_id.starts_with("i-"));
    assert!(launched.availability_zone.is_some());
    // Every later launch of the image is its RunInstances and nothing else.
    c.calls.reset();
    let mut next = req.clone();
    next.client_token.push_str("-next");
    compute.launch(&next).await.expect("second launch");
    assert_eq!(c.calls.get("EC2.RunInstances"), 1);
    assert_eq!(c.calls.total(), 1, "{:?}", c.calls.snapshot());

    let id = launched.instance_id.as_str();
    let out = c
        .ec2
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .expect("describe");
    let inst = &out.reservations()[0].instances()[0];
    let want: BTreeMap<String, String> = req.tags.iter().cloned().collect();
    assert_eq!(tag_map(inst.tags()), want);
    assert_eq!(inst.subnet_id(), Some(env.subnet.as_str()));
    assert_eq!(inst.image_id(), Some(env.image.as_str()));
    assert_eq!(inst.instance_type().map(|t| t.as_str()), Some("t3.micro"));
    assert_eq!(inst.instance_lifecycle(), None, "on-demand");
    let groups: Vec<_> = inst
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id())
        .collect();
    assert_eq!(groups, [env.security_group.as_str()]);
    let profile_arn = inst
        .iam_instance_profile()
        .and_then(|p| p.arn())
        .expect("instance profile");
    assert!(
        profile_arn.ends_with(&format!("/{}", env.instance_profile)),
        "{profile_arn}"
    );
    let imds = inst.metadata_options().expect("metadata options");
    assert_eq!(imds.http_tokens(), Some(&HttpTokensState::Required));
    assert_eq!(
        imds.http_endpoint(),
        Some(&InstanceMetadataEndpointState::Enabled)
    );
    assert_eq!(imds.http_put_response_hop_limit(), Some(1));

    let attr = |name| {
        c.ec2
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(name)
            .send()
    };
    let shutdown = attr(InstanceAttributeName::InstanceInitiatedShutdownBehavior)
        .await
        .expect("attribute");
    assert_eq!(
        shutdown
            .instance_initiated_shutdown_behavior()
            .and_then(|v| v.value()),
        Some("terminate")
    );
    let user_data = attr(InstanceAttributeName::UserData)
        .await
        .expect("attribute");
    let encoded = user_data
        .user_data()
        .and_then(|v| v.value())
        .expect("user data");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64");
    assert_eq!(decoded, req.user_data);

    let volumes = c
        .ec2
        .describe_volumes()
        .filters(
            Filter::builder()
                .name("attachment.instance-id")
                .values(id)
                .build(),
        )
        .send()
        .await
        .expect("describe volumes");
    let [root] = volumes.volumes() else {
        panic!("one volume, the root: {:?}", volumes.volumes());
    };
    assert_eq!(tag_map(root.tags()), want, "volume tagged on create");
    assert_eq!(root.size(), Some(16));
    assert_eq!(root.encrypted(), Some(true));
    // Amazon Linux's root device.
    assert_eq!(inst.root_device_name(), Some("/dev/xvda"));
    assert_eq!(
        root.attachments().first().and_then(|a| a.device()),
        Some("/dev/xvda")
    );
}

#[tokio::test]
async fn an_image_rooted_on_sda1_gets_that_device_sized_and_encrypted_with_the_key() {
    let c = clients().await;
    let env = launch_env(&c.ec2).await;
    // An Ubuntu-style image: its root device is /dev/sda1 (moto registers images so).
    let image = c
        .ec2
        .register_image()
        .name(support::unique_name("ubuntu-like"))
        .root_device_name("/dev/sda1")
        .send()
        .await
        .expect("register image")
        .image_id()
        .expect("image id")
        .to_owned();
    let described = c
        .ec2
        .describe_images()
        .image_ids(&image)
        .send()
        .await
        .expect("describe image");
    assert_eq!(
        described.images()[0].root_device_name(),
        Some("/dev/sda1"),
        "the test needs an image rooted on /dev/sda1"
    );
    let key: serde_json::Value = serde_json::from_str(&aws_cli(&[
        "kms",
        "create-key",
        "--description",
        "mayfly test root volumes",
    ]))
    .expect("create-key answers JSON");
    let key_arn = key["KeyMetadata"]["Arn"]
        .as_str()
        .expect("key ARN")
        .to_owned();
    let compute = Ec2Compute::new(c.ec2.clone(), Arc::new(Ec2Limits::default()));
    let mut req = request(
        env,
        &support::unique_name("c"),
        &support::unique_name("job"),
        1,
        CapacityType::OnDemand,
    );
    req.image_id.clone_from(&image);
    req.root_volume_kms_key = Some(key_arn.clone());

    let launched = compute.launch(&req).await.expect("launch");

    let out = c
        .ec2
        .describe_instances()
        .instance_ids(&launched.instance_id)
        .send()
        .await
        .expect("describe");
    let inst = &out.reservations()[0].instances()[0];
    assert_eq!(inst.root_device_name(), Some("/dev/sda1"));
    let devices: Vec<_> = inst
        .block_device_mappings()
        .iter()
        .filter_map(|b| b.device_name())
        .collect();
    assert_eq!(devices, ["/dev/sda1"], "the root and no second volume");
    let volumes = c
        .ec2
        .describe_volumes()
        .filters(
            Filter::builder()
                .name("attachment.instance-id")
                .values(&launched.instance_id)
                .build(),
        )
        .send()
        .await
        .expect("describe volumes");
    let [root] = volumes.volumes() else {
        panic!("one volume, the root: {:?}", volumes.volumes());
    };
    assert_eq!(
        root.attachments().first().and_then(|a| a.device()),
        Some("/dev/sda1")
    );
    assert_eq!(root.size(), Some(16));
    assert_eq!(root.encrypted(), Some(true));
    assert_eq!(root.kms_key_id(), Some(key_arn.as_str()));

    // The image's root device is known now: the next launch of it is one call.
    c.calls.reset();
    req.client_token.push_str("-next");
    compute.launch(&req).await.expect("second launch");
    assert_eq!(c.calls.get("EC2.DescribeImages"), 0);
    assert_eq!(c.calls.total(), 1, "{:?}", c.calls.snapshot());
}

#[tokio::test]
async fn spot_rung_launches_a_spot_instance() {
    let c = clients().await;
    let env = launch_env(&c.ec2).await;
    let compute = Ec2Compute::new(c.ec2.clone(), Arc::new(Ec2Limits::default()));
    let cluster = support::unique_name("c");
    let launched = compute
        .launch(&request(
            env,
            &cluster,
            &support::unique_name("job"),
            1,
            CapacityType::Spot,
        ))
        .await
        .expect("launch");
    let out = c
        .ec2
        .describe_instances()
        .instance_ids(&launched.instance_id)
        .send()
        .await
        .expect("describe");
    let inst = &out.reservations()[0].instances()[0];
    assert_eq!(
        inst.instance_lifecycle(),
        Some(&InstanceLifecycleType::Spot)
    );

    let managed = compute.list_managed(&cluster).await.expect("list");
    assert_eq!(managed.len(), 1);
    assert!(managed[0].spot);
    assert_eq!(managed[0].state, InstanceState::Running);
    assert_eq!(managed[0].instance_type, "t3.micro");
    assert!(managed[0].launched_at.is_some());
    assert_eq!(managed[0].tag(tags::CLUSTER), Some(cluster.as_str()));
}

#[tokio::test]
async fn list_managed_follows_pages_and_keeps_to_its_cluster() {
    let c = clients().await;
    let env = launch_env(&c.ec2).await;
    let cluster = support::unique_name("big");
    let other = support::unique_name("other");
    // One reservation per call: EC2 (and moto) page DescribeInstances by reservation.
    const N: usize = 105;
    for n in 0..=N {
        let name = if n < N { &cluster } else { &other };
        let tag = Tag::builder().key(tags::CLUSTER).value(name).build();
        c.ec2
            .run_instances()
            .image_id(&env.image)
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .subnet_id(&env.subnet)
            .min_count(1)
            .max_count(1)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .tags(tag)
                    .build(),
            )
            .send()
            .await
            .expect("run instances");
    }
    let compute = Ec2Compute::new(c.ec2.clone(), Arc::new(Ec2Limits::default())).with_page_size(50);
    c.calls.reset();

    let managed = compute.list_managed(&cluster).await.expect("list");

    assert_eq!(
        c.calls.get("EC2.DescribeInstances"),
        3,
        "105 reservations in pages of 50"
    );
    assert_eq!(managed.len(), N);
    assert!(managed
        .iter()
        .all(|m| m.tag(tags::CLUSTER) == Some(cluster.as_str())));
    let mut ids: Vec<_> = managed.iter().map(|m| m.instance_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), N, "no instance twice");
    let others = compute.list_managed(&other).await.expect("list other");
    assert_eq!(others.len(), 1);
    assert!(!managed
        .iter()
        .any(|m| m.instance_id == others[0].instance_id));

    // With the default page size (1000) the same fleet is one call.
    let compute = Ec2Compute::new(c.ec2.clone(), Arc::new(Ec2Limits::default()));
    c.calls.reset();
    assert_eq!(compute.list_managed(&cluster).await.expect("list").len(), N);
    assert_eq!(c.calls.get("EC2.DescribeInstances"), 1);
}

#[tokio::test]
async fn find_attempt_finds_exactly_that_attempt() {
    let c = clients().await;
    let env = launch_env(&c.ec2).await;
    let compute = Ec2Compute::new(c.ec2.clone(), Arc::new(Ec2Limits::default()));
    let cluster = support::unique_name("c");
    let other_cluster = support::unique_name("c");
    let job = support::unique_name("job");
    let first = compute
        .launch(&request(env, &cluster, &job, 1, CapacityType::OnDemand))
        .await
        .expect("launch");
    let second = compute
        .launch(&request(env, &cluster, &job, 2, CapacityType::OnDemand))
        .await
        .expect("launch");
    compute
        .launch(&request(
            env,
            &other_cluster,
            &job,
            2,
            CapacityType::OnDemand,
        ))
        .await
        .expect("launch");
    c.calls.reset();

    let found = compute.find_attempt(&cluster, &job, 2).await.expect("find");

    assert_eq!(c.calls.get("EC2.DescribeInstances"), 1);
    let ids: Vec<_> = found.iter().map(|m| m.instance_id.as_str()).collect();
    assert_eq!(ids, [second.instance_id.as_str()]);
    assert_eq!(found[0].tag(tags::ATTEMPT), Some("2"));
    let first_found = compute.find_attempt(&cluster, &job, 1).await.expect("find");
    assert_eq!(first_found.len(), 1);
    assert_eq!(first_found[0].instance_id, first.instance_id);
    assert!(compute
        .find_attempt(&cluster, &job, 3)
        .await
        .expect("find")
        .is_empty());
}

#[tokio::test]
async fn terminate_ends_the_instances_and_they_stay_listed() {
    let c = clients().await;
    let env = launch_env(&c.ec2).await;
    let compute = Ec2Compute::new(c.ec2.clone(), Arc::new(Ec2Limits::default()));
    let cluster = support::unique_name("c");
    let mut ids = Vec::new();
    for attempt in 1..=3 {
        let req = request(
            env,
            &cluster,
            &support::unique_name("job"),
            attempt,
            CapacityType::OnDemand,
        );
        ids.push(compute.launch(&req).await.expect("launch").instance_id);
    }
    c.calls.reset();

    compute.terminate(&ids[..2]).await.expect("terminate");
    compute.terminate(&[]).await.expect("nothing to terminate");

    assert_eq!(c.calls.get("EC2.TerminateInstances"), 1);
    let managed = compute.list_managed(&cluster).await.expect("list");
    let state: BTreeMap<_, _> = managed
        .iter()
        .map(|m| (m.instance_id.clone(), m.state))
        .collect();
    assert_eq!(state.len(), 3, "terminated instances stay listed");
    for id in &ids[..2] {
        assert!(!state[id].is_live(), "{id} is {:?}", state[id]);
    }
    assert_eq!(state[&ids[2]], InstanceState::Running);
}

#[tokio::test]
async fn configuration_errors_carry_the_aws_code_and_launch_nothing() {
    let c = clients().await;
    let env = launch_env(&c.ec2).await;
    let compute = Ec2Compute::new(c.ec2.clone(), Arc::new(Ec2Limits::default()));
    let cluster = support::unique_name("c");
    let job = support::unique_name("job");
    let base = request(env, &cluster, &job, 1, CapacityType::OnDemand);

    let mut bad_subnet = base.clone();
    bad_subnet.rung.subnet = "subnet-00000000000000000".into();
    let mut bad_group = base.clone();
    bad_group.security_groups = vec!["sg-00000000000000000".into()];
    let mut no_profile = base.clone();
    no_profile.instance_profile = support::unique_name("missing-profile");
    let cases = [
        (bad_subnet, "InvalidSubnetID.NotFound"),
        (bad_group, "InvalidGroup.NotFound"),
        (no_profile, "NoSuchEntity"),
    ];
    for (req, want) in cases {
        match compute.launch(&req).await {
            Err(ComputeError::Configuration { code, .. }) => assert_eq!(code, want),
            other => panic!("expected a configuration error {want}, got {other:?}"),
        }
    }
    assert!(compute
        .list_managed(&cluster)
        .await
        .expect("list")
        .is_empty());
}

/// A stand-in EC2 endpoint that knows one image, `ami-1` (rooted on `/dev/xvda`), and answers
/// every other request with `RequestLimitExceeded`.
fn throttling_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let (status, xml) = if String::from_utf8_lossy(&body).contains("Action=DescribeImages")
            {
                (
                    "200 OK",
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeImagesResponse \
                     xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>stub</requestId>\
                     <imagesSet><item><imageId>ami-1</imageId><rootDeviceName>/dev/xvda</rootDeviceName>\
                     <rootDeviceType>ebs</rootDeviceType></item></imagesSet></DescribeImagesResponse>",
                )
            } else {
                (
                    "503 Service Unavailable",
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
                     <Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>\
                     </Error></Errors><RequestID>stub</RequestID></Response>",
                )
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{xml}",
                xml.len()
            );
            let _ = reader.get_mut().write_all(reply.as_bytes());
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn throttled_attempts_are_counted_including_sdk_retries() {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(throttling_endpoint())
        .region(Region::new(support::REGION))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "mayfly-tests",
        ))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1)),
        )
        .load()
        .await;
    let c = Clients::new(&sdk);
    let compute = Ec2Compute::new(c.ec2.clone(), Arc::new(Ec2Limits::default()));
    let env = LaunchEnv {
        subnet: "subnet-1".into(),
        security_group: "sg-1".into(),
        instance_profile: "p".into(),
        image: "ami-1".into(),
    };

    // DescribeInstances is retried by the SDK, and every attempt counts.
    let result = compute.list_managed("c").await;
    assert_eq!(
        result,
        Err(ComputeError::Throttled {
            code: "RequestLimitExceeded".into()
        })
    );
    assert_eq!(
        c.calls.get("EC2.DescribeInstances"),
        3,
        "every attempt counts"
    );
    assert_eq!(c.calls.throttled(), 3);

    // RunInstances is never retried by the SDK (an unknown outcome is repaired by tags).
    let result = compute
        .launch(&request(&env, "c", "job", 1, CapacityType::OnDemand))
        .await;
    assert_eq!(
        result,
        Err(ComputeError::Throttled {
            code: "RequestLimitExceeded".into()
        })
    );
    assert_eq!(c.calls.get("EC2.RunInstances"), 1);
    assert_eq!(c.calls.throttled(), 4);
    assert_eq!(
        c.calls.throttled_snapshot().get("EC2.RunInstances"),
        Some(&1)
    );
    // The throttle emptied the client-side bucket: the next launch waits for a refill.
    assert_eq!(
        compute
            .limits()
            .run_instances
            .available(tokio::time::Instant::now()),
        0
    );
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> String {
    let mut call = sqs.create_queue().queue_name(name);
    for (k, v) in attributes {
        call = call.attributes(k.clone(), v);
    }
    call.send()
        .await
        .expect("create queue")
        .queue_url()
        .expect("queue url")
        .to_owned()
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes");
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .expect("queue arn")
        .clone()
}

#[tokio::test]
async fn queue_sends_receives_and_deletes_in_batches() {
    let c = clients().await;
    let name = support::unique_name("intake");
    create_queue(&c.sqs, &name, &[]).await;
    let queue = SqsQueue::by_name(c.sqs.clone(), &name)
        .await
        .expect("queue by name");
    for n in 0..25 {
        let id = queue
            .send(&format!("{{\"n\":{n}}}"), &[("source", "test")])
            .await
            .expect("send");
        assert!(!id.is_empty());
    }
    assert_eq!(queue.depth().await.expect("depth"), 25);
    c.calls.reset();

    let mut received = Vec::new();
    for _ in 0..20 {
        if received.len() == 25 {
            break;
        }
        let batch = queue
            .receive(50, Duration::from_secs(1))
            .await
            .expect("receive");
        assert!(batch.len() <= 10, "at most 10 per receive");
        received.extend(batch);
    }
    assert_eq!(received.len(), 25);
    assert!(received.iter().all(|m| m.receive_count == 1));
    // SenderId is requested and read, but moto stamps one constant on every message,
    // whoever sent it (AWS stamps the caller's identity): events cannot prove their sender
    // on the emulator, which is why its tests run with --unverified-event-senders and the
    // check is proven on the fakes (tests/event_senders.rs). Should moto start carrying the
    // caller, this fails and the emulator can check senders too.
    assert!(
        received
            .iter()
            .all(|m| m.sender_id.as_deref() == Some("AIDAIT2UOQQY3AUEKVGXU")),
        "{:?}",
        received.iter().map(|m| &m.sender_id).collect::<Vec<_>>()
    );
    let mut bodies: Vec<_> = received.iter().map(|m| m.body.clone()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 25);

    let receipts: Vec<String> = received.iter().map(|m| m.receipt.clone()).collect();
    let failed = queue.delete(&receipts).await.expect("delete");
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(c.calls.get("SQS.DeleteMessageBatch"), 3);
    assert_eq!(queue.depth().await.expect("depth"), 0);
    assert!(queue.delete(&[]).await.expect("delete nothing").is_empty());
    assert_eq!(c.calls.get("SQS.DeleteMessageBatch"), 3);
}

#[tokio::test]
async fn a_bad_receipt_is_reported_not_fatal() {
    let c = clients().await;
    let name = support::unique_name("intake");
    let url = create_queue(&c.sqs, &name, &[]).await;
    let queue = SqsQueue::new(c.sqs.clone(), url);
    queue.send("{}", &[]).await.expect("send");
    let msg = queue
        .receive(1, Duration::ZERO)
        .await
        .expect("receive")
        .pop()
        .expect("a message");
    let bogus = "not-a-receipt-handle".to_string();
    let failed = queue
        .delete(&[msg.receipt.clone(), bogus.clone()])
        .await
        .expect("delete");
    assert_eq!(failed, [bogus]);
    assert_eq!(queue.depth().await.expect("depth"), 0);
}

#[tokio::test]
async fn redrive_moves_a_message_to_the_dlq_with_its_attributes() {
    let c = clients().await;
    let dlq_name = support::unique_name("intake-dlq");
    let dlq_url = create_queue(&c.sqs, &dlq_name, &[]).await;
    let dlq_arn = queue_arn(&c.sqs, &dlq_url).await;
    let policy =
        serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2 }).to_string();
    let name = support::unique_name("intake");
    let url = create_queue(
        &c.sqs,
        &name,
        &[
            (QueueAttributeName::RedrivePolicy, policy),
            (QueueAttributeName::VisibilityTimeout, "1".into()),
        ],
    )
    .await;

    // The policy reads back re-serialised: compare parsed values, not strings.
    let attrs = c
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .expect("attributes");
    let raw = attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
        .expect("policy");
    let parsed: serde_json::Value = serde_json::from_str(raw).expect("policy is JSON");
    assert_eq!(
        parsed["deadLetterTargetArn"],
        serde_json::Value::String(dlq_arn.clone())
    );
    let max = &parsed["maxReceiveCount"];
    assert!(
        max.as_u64() == Some(2) || max.as_str() == Some("2"),
        "{max}"
    );

    let queue = SqsQueue::new(c.sqs.clone(), url);
    let dlq = SqsQueue::by_name(c.sqs.clone(), &dlq_name)
        .await
        .expect("dlq");
    queue
        .send("not json", &[("mayfly-error", "body is not JSON")])
        .await
        .expect("send");
    for want in 1..=2 {
        let mut got = Vec::new();
        for _ in 0..10 {
            got = queue
                .receive(10, Duration::from_secs(2))
                .await
                .expect("receive");
            if !got.is_empty() {
                break;
            }
        }
        assert_eq!(got.len(), 1, "delivery {want}");
        assert_eq!(got[0].receive_count, want);
    }
    // Past maxReceiveCount the next receive moves it to the DLQ instead of delivering it.
    let mut moved = 0;
    for _ in 0..10 {
        assert!(queue
            .receive(10, Duration::from_secs(1))
            .await
            .expect("receive")
            .is_empty());
        moved = dlq.depth().await.expect("dlq depth");
        if moved == 1 {
            break;
        }
    }
    assert_eq!(moved, 1);

    let out = c
        .sqs
        .receive_message()
        .queue_url(dlq.url())
        .message_attribute_names("All")
        .send()
        .await
        .expect("receive from dlq");
    let msg = &out.messages()[0];
    assert_eq!(msg.body(), Some("not json"));
    let attr = msg
        .message_attributes()
        .and_then(|a| a.get("mayfly-error"))
        .expect("error attribute");
    assert_eq!(attr.data_type(), "String");
    assert_eq!(attr.string_value(), Some("body is not JSON"));
}

#[tokio::test]
async fn a_missing_queue_is_an_error() {
    let c = clients().await;
    match SqsQueue::by_name(c.sqs.clone(), &support::unique_name("nope")).await {
        Err(QueueError::NotFound(what)) => assert!(what.starts_with("queue nope-"), "{what}"),
        other => panic!("expected an error, got {other:?}"),
    }
}
