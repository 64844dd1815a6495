//! Payer isolation under IAM enforcement, on a private emulator (enforcement would change
//! every other test's answers). Two payers, each with the role and instance profile of its
//! own `infra/payer.yaml` stack. The local fleet serves each instance its profile's role
//! credentials on its metadata endpoint (STS AssumeRole, the session named after the
//! instance, as EC2 does), and the instance's script and job call AWS with them only: each
//! job reads its own payer's input object, reports through the events queue and runs to
//! `succeeded` — both payers name their job alike, and each gets its own job, found by
//! `explain` under its payer. With payer A's instance credentials, payer B's input and secret are denied,
//! and so are SendMessage to the intake queue, PutItem and UpdateItem on the ledger,
//! RunInstances and TerminateInstances.
//!
//! What moto proves here: the actions each role is granted, and the resource ARNs of SQS,
//! IAM, STS and S3 (B's prefix is denied and A's allowed by ARN; the intake queue is denied,
//! the events queue allowed). What it cannot:
//! - EC2, DynamoDB and Secrets Manager requests are checked against `*` only: the ledger, the
//!   instances and B's secret are denied here because the payer role grants nothing on `*`,
//!   not by their ARNs — and A's own secret is denied too, so the jobs here fetch none;
//! - no `Condition` is evaluated;
//! - every SQS message carries one constant `SenderId` (the sender check is proven on the
//!   fakes, `tests/event_senders.rs`; the conditions and ARNs offline, `tests/iam_policies.rs`);
//! - a trust policy whose only principal is a service makes AssumeRole answer HTTP 500 under
//!   enforcement: each payer role's trust policy here also names the fleet's user, standing
//!   in for EC2;
//! - its SigV4 check refuses the SDK's RunInstances requests (AuthFailure), whoever signs
//!   them: the one pass that launches runs before enforcement is turned on; the instances
//!   then boot, and everything they and the later passes do runs under it.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ACCOUNT: &str = "123456789012";
const BUCKET: &str = "payer-drops-isolation";

/// Who calls the private emulator: an endpoint and an identity's credentials.
#[derive(Clone)]
struct Caller {
    endpoint: String,
    key: String,
    secret: String,
    token: Option<String>,
}

impl Caller {
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", self.key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_REGION", support::REGION.into()),
            ("AWS_DEFAULT_REGION", support::REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("MAYFLY_UNVERIFIED_EVENT_SENDERS", "true".into()),
        ];
        if let Some(t) = &self.token {
            env.push(("AWS_SESSION_TOKEN", t.clone()));
        }
        env
    }

    /// The AWS CLI as this caller (its `--endpoint-url` given: CLI v1 ignores
    /// AWS_ENDPOINT_URL for SQS).
    fn try_aws(&self, args: &[&str]) -> Output {
        Command::new(support::venv().join("bin/aws"))
            .arg("--endpoint-url")
            .arg(&self.endpoint)
            .args(args)
            .env_remove("AWS_PROFILE")
            .envs(self.env())
            .output()
            .expect("run the AWS CLI")
    }

    fn aws(&self, args: &[&str]) -> String {
        let out = self.try_aws(args);
        assert!(
            out.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        serde_json::from_str(&self.aws(&all)).expect("JSON from the AWS CLI")
    }

    fn mayfly(&self, name: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mayfly"))
            .arg("--name")
            .arg(name)
            .args(args)
            .envs(self.env())
            .current_dir(support::repo())
            .output()
            .expect("run mayfly")
    }

    /// Creates a stack from the repository's `template` and returns its outputs.
    fn stack(
        &self,
        template: &str,
        stack: &str,
        params: &[(&str, &str)],
    ) -> BTreeMap<String, String> {
        let body = format!("file://{}", support::path(template).display());
        let params: Vec<Value> = params
            .iter()
            .map(|(k, v)| json!({"ParameterKey": k, "ParameterValue": v}))
            .collect();
        self.aws(&[
            "cloudformation",
            "create-stack",
            "--stack-name",
            stack,
            "--template-body",
            &body,
            "--capabilities",
            "CAPABILITY_NAMED_IAM",
            "--parameters",
            &Value::from(params).to_string(),
        ]);
        self.aws(&[
            "cloudformation",
            "wait",
            "stack-create-complete",
            "--stack-name",
            stack,
        ]);
        let described = self.json(&["cloudformation", "describe-stacks", "--stack-name", stack]);
        described["Stacks"][0]["Outputs"]
            .as_array()
            .map(|outs| {
                outs.iter()
                    .map(|o| {
                        (
                            o["OutputKey"].as_str().unwrap().to_owned(),
                            o["OutputValue"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Turns IAM enforcement on or off (`POST /moto-api/reset-auth` with body `0` or `inf`).
fn enforce(endpoint: &str, on: bool) {
    let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = if on { "0" } else { "inf" };
    write!(
        s,
        "POST /moto-api/reset-auth HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.") && answer.contains(" 200 "),
        "{answer}"
    );
}

/// One payer's data and role.
struct Payer {
    id: &'static str,
    secret_arn: String,
    role_arn: String,
    instance_profile: String,
}

/// The payer's profile: one kind whose job reads the payer's input object with the
/// instance's credentials. (No secret: moto checks Secrets Manager requests against `*`, so
/// the role's grant on its own secret's ARN is denied there too; see the end of the test.)
fn profile(p: &Payer, subnets: &[String], sgs: &[String]) -> String {
    let read = format!(
        "aws --endpoint-url \"$AWS_ENDPOINT_URL\" s3api get-object --bucket {BUCKET} \
         --key {}/input.csv \"$TMPDIR/input.csv\" >/dev/null",
        p.id
    );
    format!(
        r#"payer_id = "{id}"
priority = 50

[caps]
max_instances = 2
max_vcpus = 8

[launch]
image_id = "ami-0a1b2c3d4e5f60001"
subnets = {subnets:?}
security_groups = {sgs:?}
instance_profile = "{profile}"
capacity = "on-demand"
root_volume_gib = 8

[timeouts]
boot = "5m"
heartbeat = "3m"
max_runtime = "10m"

[kinds.load]
tier = 0
command = ["sh", "-c", {read:?}]
max_runtime = "5m"
[kinds.load.compute]
instance_types = ["m7i.large"]
"#,
        id = p.id,
        profile = p.instance_profile,
    )
}

#[tokio::test]
async fn a_payer_instance_runs_as_its_own_role_and_reaches_nothing_else() {
    let emulator = support::private_emulator(&[]);
    let open = Caller {
        endpoint: emulator.endpoint.clone(),
        key: "testing".into(),
        secret: "testing".into(),
        token: None,
    };
    // The operator (and the fleet, and the scheduler here: moto checks EC2 and DynamoDB
    // requests against "*", so the scheduler role's resource-scoped grants would be denied
    // there; its conditions are proven offline) is an IAM user allowed everything.
    open.aws(&["iam", "create-user", "--user-name", "operator"]);
    open.aws(&[
        "iam",
        "put-user-policy",
        "--user-name",
        "operator",
        "--policy-name",
        "everything",
        "--policy-document",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
    ]);
    let key = open.json(&["iam", "create-access-key", "--user-name", "operator"]);
    let operator = Caller {
        key: key["AccessKey"]["AccessKeyId"].as_str().unwrap().into(),
        secret: key["AccessKey"]["SecretAccessKey"].as_str().unwrap().into(),
        ..open.clone()
    };

    let name = support::unique_name("iso");
    operator.stack(
        "infra/mayfly.yaml",
        &name,
        &[("DeploymentName", &name), ("EventsVisibilityTimeout", "30")],
    );
    // Each payer's input object and secret, and its payer.yaml stack granting exactly them.
    operator.aws(&["s3api", "create-bucket", "--bucket", BUCKET]);
    let body = std::env::temp_dir().join(format!("{name}-input.csv"));
    std::fs::write(&body, "member_id,plan\n1,gold\n").unwrap();
    let mut payers = Vec::new();
    for id in ["payer-a", "payer-b"] {
        operator.aws(&[
            "s3api",
            "put-object",
            "--bucket",
            BUCKET,
            "--key",
            &format!("{id}/input.csv"),
            "--body",
            &body.display().to_string(),
        ]);
        let secret = operator.json(&[
            "secretsmanager",
            "create-secret",
            "--name",
            &format!("mayfly/{id}/dsn"),
            "--secret-string",
            &format!("postgres://{id}"),
        ]);
        let secret_arn = secret["ARN"].as_str().unwrap().to_owned();
        let outputs = operator.stack(
            "infra/payer.yaml",
            &format!("{name}-payer-{id}"),
            &[
                ("DeploymentName", &name),
                ("PayerId", id),
                ("InputArns", &format!("arn:aws:s3:::{BUCKET}/{id}")),
                ("SecretArns", &secret_arn),
            ],
        );
        let role_arn = outputs["RoleArn"].clone();
        // moto answers 500 to AssumeRole under enforcement when the trust policy names only
        // a service: the fleet's user stands in for EC2 (see the module's comment).
        let role_name = role_arn.rsplit('/').next().unwrap();
        operator.aws(&[
            "iam",
            "update-assume-role-policy",
            "--role-name",
            role_name,
            "--policy-document",
            &json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com",
                              "AWS": format!("arn:aws:iam::{ACCOUNT}:user/operator")},
                "Action": "sts:AssumeRole"}]})
            .to_string(),
        ]);
        payers.push(Payer {
            id,
            secret_arn,
            role_arn,
            instance_profile: outputs["InstanceProfileName"].clone(),
        });
    }

    // The profiles name their payers' instance profiles: `payers apply` accepts them (under
    // the deployment's path, each its payer's own).
    let subnets: Vec<String> = operator.json(&["ec2", "describe-subnets"])["Subnets"]
        .as_array()
        .unwrap()
        .iter()
        .take(1)
        .map(|s| s["SubnetId"].as_str().unwrap().to_owned())
        .collect();
    let sgs: Vec<String> = operator.json(&[
        "ec2",
        "describe-security-groups",
        "--filters",
        "Name=group-name,Values=default",
    ])["SecurityGroups"]
        .as_array()
        .unwrap()
        .iter()
        .take(1)
        .map(|g| g["GroupId"].as_str().unwrap().to_owned())
        .collect();
    let dir = std::env::temp_dir().join(format!("mayfly-iso-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    for p in &payers {
        std::fs::write(
            dir.join(format!("{}.toml", p.id)),
            profile(p, &subnets, &sgs),
        )
        .unwrap();
    }
    let applied = operator.mayfly(&name, &["payers", "apply", &dir.display().to_string()]);
    assert!(
        applied.status.success(),
        "payers apply: {}",
        String::from_utf8_lossy(&applied.stderr)
    );

    // Both payers name their job alike: each gets its own job, `payer/job_id`.
    let producer_id = "2026-12:load";
    let job_of = |p: &Payer| format!("{}/{producer_id}", p.id);
    for p in &payers {
        let submitted = operator.mayfly(
            &name,
            &[
                "submit",
                "--job-id",
                producer_id,
                "--payer",
                p.id,
                "--kind",
                "load",
                "--batch",
                "2026-12",
            ],
        );
        assert!(
            submitted.status.success(),
            "{}",
            String::from_utf8_lossy(&submitted.stderr)
        );
    }
    let job_state = |job: &str| {
        let shown = operator.mayfly(&name, &["--output", "json", "jobs", "show", job]);
        serde_json::from_slice::<Value>(&shown.stdout)
            .ok()
            .and_then(|j| j["state"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    // The launch pass runs before enforcement: moto's SigV4 check refuses the signature of
    // the SDK's RunInstances requests (AuthFailure), whoever signs them. Every other call —
    // the instances' all, and the passes that apply their events — runs under enforcement.
    let launched = operator.mayfly(&name, &["tick"]);
    for p in &payers {
        let job = job_of(p);
        assert_eq!(
            job_state(&job),
            "running",
            "{job} launched: {}",
            String::from_utf8_lossy(&launched.stdout)
        );
        // On an instance of its own payer's profile.
        let shown = operator.mayfly(&name, &["--output", "json", "jobs", "show", &job_of(p)]);
        let shown: Value = serde_json::from_slice(&shown.stdout).expect("jobs show json");
        let instance_id = shown["attempts"][0]["instance_id"]
            .as_str()
            .expect("instance");
        let described =
            operator.json(&["ec2", "describe-instances", "--instance-ids", instance_id]);
        let profile_arn = described["Reservations"][0]["Instances"][0]["IamInstanceProfile"]["Arn"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            profile_arn.ends_with(&format!("/{}", p.instance_profile)),
            "{}'s job ran on {instance_id} with profile {profile_arn}",
            p.id
        );
    }
    enforce(&emulator.endpoint, true);
    let anonymous = open.try_aws(&["sqs", "list-queues"]);
    assert!(!anonymous.status.success(), "enforcement is on");

    let work = std::env::temp_dir().join(format!("mayfly-iso-fleet-{name}"));
    let mut fleet = Command::new(support::fleet_bin())
        .args([
            "--name",
            &name,
            "--job-seconds",
            "1",
            "--poll-ms",
            "300",
            "--max-runtime",
            "240",
        ])
        .arg("--instance-roles")
        .arg("--work-dir")
        .arg(&work)
        .arg("--venv")
        .arg(support::venv())
        .envs(operator.env())
        .current_dir(support::repo())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let states = loop {
        let pass = operator.mayfly(&name, &["tick"]);
        assert!(pass.status.code().is_some());
        let last_pass = format!(
            "{}{}",
            String::from_utf8_lossy(&pass.stdout),
            String::from_utf8_lossy(&pass.stderr)
        );
        let states: BTreeMap<String, String> = payers
            .iter()
            .map(|p| {
                let job = job_of(p);
                let state = job_state(&job);
                (job, state)
            })
            .collect();
        if states.len() == 2
            && states
                .values()
                .all(|s| s == "succeeded" || s == "failed" || s == "dead")
        {
            break states;
        }
        assert!(
            Instant::now() < deadline,
            "jobs did not finish: {states:?}; instance consoles under {}; the last pass:\n{last_pass}",
            work.display()
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    };
    fleet.kill().ok();
    fleet.wait().ok();
    assert!(
        states.values().all(|s| s == "succeeded"),
        "each job reads its own input and secret as its payer's role and reports: {states:?}; \
         instance consoles under {}",
        work.display()
    );

    // `explain` finds each job by its id; the producer's id alone names both, so `explain`
    // asks which.
    for p in &payers {
        let explained = operator.mayfly(&name, &["--output", "json", "explain", &job_of(p)]);
        let explained: Value = serde_json::from_slice(&explained.stdout).expect("explain json");
        assert_eq!(explained["job_id"], job_of(p).as_str(), "{explained:#}");
        assert_eq!(explained["payer_id"], p.id, "{explained:#}");
        assert_eq!(explained["state"], "succeeded", "{explained:#}");
    }
    let both = operator.mayfly(&name, &["explain", producer_id]);
    let said = String::from_utf8_lossy(&both.stderr);
    assert!(!both.status.success());
    for p in &payers {
        assert!(said.contains(&job_of(p)), "explain names both jobs: {said}");
    }

    // Payer A's instance credentials, as the fleet served them: its role, its instance's
    // session.
    let (a, b) = (&payers[0], &payers[1]);
    let assumed = operator.json(&[
        "sts",
        "assume-role",
        "--role-arn",
        &a.role_arn,
        "--role-session-name",
        "i-0aaaaaaaaaaaaaaa1",
    ]);
    let c = &assumed["Credentials"];
    let instance = Caller {
        key: c["AccessKeyId"].as_str().unwrap().into(),
        secret: c["SecretAccessKey"].as_str().unwrap().into(),
        token: Some(c["SessionToken"].as_str().unwrap().into()),
        ..open.clone()
    };
    let out = std::env::temp_dir().join(format!("{name}-read.csv"));
    let out = out.display().to_string();
    let own = format!("{}/input.csv", a.id);
    instance.aws(&[
        "s3api",
        "get-object",
        "--bucket",
        BUCKET,
        "--key",
        &own,
        &out,
    ]);
    // moto checks Secrets Manager requests against `*`, not the secret's ARN: the role's
    // grant on its own secret is denied here too, so B's secret being denied below proves
    // only that nothing grants more (tests/iam_policies.rs proves it by ARN). Should moto
    // start matching the ARN, this fails, and the job can fetch its secret here too.
    let own_secret = instance.try_aws(&[
        "secretsmanager",
        "get-secret-value",
        "--secret-id",
        &a.secret_arn,
    ]);
    assert!(
        !own_secret.status.success(),
        "moto now evaluates Secrets Manager by ARN"
    );

    let events_url = format!("https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/{name}-events");
    let intake_url = format!("https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/{name}-intake");
    instance.aws(&[
        "sqs",
        "send-message",
        "--queue-url",
        &events_url,
        "--message-body",
        "{}",
    ]);
    let others = format!("{}/input.csv", b.id);
    let item = json!({"job_id": {"S": "forged"}}).to_string();
    let ledger = format!("{name}-jobs");
    let denied: Vec<(&str, Vec<&str>)> = vec![
        (
            "payer B's input",
            vec![
                "s3api",
                "get-object",
                "--bucket",
                BUCKET,
                "--key",
                &others,
                &out,
            ],
        ),
        (
            "payer B's secret",
            vec![
                "secretsmanager",
                "get-secret-value",
                "--secret-id",
                &b.secret_arn,
            ],
        ),
        (
            "SendMessage to the intake queue",
            vec![
                "sqs",
                "send-message",
                "--queue-url",
                &intake_url,
                "--message-body",
                "{}",
            ],
        ),
        (
            "PutItem on the ledger",
            vec![
                "dynamodb",
                "put-item",
                "--table-name",
                &ledger,
                "--item",
                &item,
            ],
        ),
        (
            "UpdateItem on the ledger",
            vec![
                "dynamodb",
                "update-item",
                "--table-name",
                &ledger,
                "--key",
                &item,
                "--update-expression",
                "SET #s = :s",
                "--expression-attribute-names",
                r##"{"#s":"state"}"##,
                "--expression-attribute-values",
                r#"{":s":{"S":"succeeded"}}"#,
            ],
        ),
        (
            "RunInstances",
            vec![
                "ec2",
                "run-instances",
                "--image-id",
                "ami-0a1b2c3d4e5f60001",
                "--instance-type",
                "m7i.large",
                "--count",
                "1",
            ],
        ),
        (
            "TerminateInstances",
            vec![
                "ec2",
                "terminate-instances",
                "--instance-ids",
                "i-0aaaaaaaaaaaaaaa1",
            ],
        ),
    ];
    for (what, args) in denied {
        let out = instance.try_aws(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{what} was allowed to payer A's instance"
        );
        assert!(
            stderr.contains("AccessDenied")
                || stderr.contains("403")
                || stderr.contains("not authorized"),
            "{what}: denied for another reason: {stderr}"
        );
    }
}
