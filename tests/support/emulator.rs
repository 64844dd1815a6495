//! The emulator harness: one moto server per test process (or the one named by
//! `MAYFLY_TEST_ENDPOINT`), SDK configuration pointed at it, unique deployment names, and
//! deploying the infra template for a deployment. It uses no binary of its package, so
//! another package's tests can include this file too (`#[path]`), as crates/mayfly-testbed's
//! do.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::Credentials;

pub const REGION: &str = "us-east-1";

/// The repository's root: the nearest directory holding the infra template, from the
/// including package's own directory up, or `MAYFLY_REPO` when set.
pub fn repo() -> PathBuf {
    // A long run (the chaos test) may point at a snapshot of the repository instead.
    if let Some(dir) = std::env::var_os("MAYFLY_REPO") {
        return PathBuf::from(dir);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|dir| dir.join("infra/mayfly.yaml").is_file())
        .unwrap_or(manifest)
        .to_owned()
}

/// The project virtualenv (`scripts/emulator.sh install` creates it).
pub fn venv() -> PathBuf {
    std::env::var_os("MAYFLY_VENV").map_or_else(|| repo().join(".venv"), PathBuf::from)
}

struct Emulator {
    endpoint: String,
    _child: Option<Child>,
}

/// The emulator's endpoint URL, starting one for this test process if none is named.
pub fn endpoint() -> String {
    static EMULATOR: OnceLock<Emulator> = OnceLock::new();
    EMULATOR
        .get_or_init(|| match std::env::var("MAYFLY_TEST_ENDPOINT") {
            Ok(url) if !url.is_empty() => Emulator {
                endpoint: url,
                _child: None,
            },
            _ => start_emulator(&[]),
        })
        .endpoint
        .clone()
}

/// An emulator of this test's own, started with `env` (e.g. IAM enforcement); it stops when
/// the value is dropped or the test process exits.
pub struct PrivateEmulator {
    pub endpoint: String,
    child: Child,
}

impl Drop for PrivateEmulator {
    fn drop(&mut self) {
        // The wrapper's EXIT trap stops moto with it.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Starts an emulator for one test, never shared: settings such as IAM enforcement would
/// change the answers every other test gets.
pub fn private_emulator(env: &[(&str, &str)]) -> PrivateEmulator {
    let e = start_emulator(env);
    PrivateEmulator {
        endpoint: e.endpoint,
        child: e._child.expect("a started emulator has its process"),
    }
}

fn start_emulator(env: &[(&str, &str)]) -> Emulator {
    let moto = venv().join("bin/moto_server");
    assert!(
        moto.exists(),
        "{} not found: run `scripts/emulator.sh install` (or scripts/test.sh) first",
        moto.display()
    );
    static STARTED: AtomicU32 = AtomicU32::new(0);
    let log = std::env::temp_dir().join(format!(
        "mayfly-moto-{}-{}.log",
        std::process::id(),
        STARTED.fetch_add(1, Ordering::Relaxed)
    ));
    // The wrapper stops moto when this test process exits, however it exits (or when the
    // wrapper itself is told to stop).
    let script = format!(
        "'{}' -H 127.0.0.1 -p 0 >'{}' 2>&1 & m=$!; trap 'kill $m 2>/dev/null' EXIT; \
         trap 'exit 0' TERM; \
         while kill -0 {} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 1; done",
        moto.display(),
        log.display(),
        std::process::id()
    );
    let child = Command::new("bash")
        .args(["-c", &script])
        .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn moto_server");
    let deadline = Instant::now() + Duration::from_secs(60);
    let port = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(rest) = text.split("Running on http://127.0.0.1:").nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(port) = digits.parse::<u16>() {
                break port;
            }
        }
        assert!(
            Instant::now() < deadline,
            "moto did not start; log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    while http_get(port, "/moto-api/").is_none() {
        assert!(
            Instant::now() < deadline,
            "moto on {endpoint} did not answer"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Emulator {
        endpoint,
        _child: Some(child),
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.").then_some(out)
}

/// SDK configuration for the emulator, with dummy credentials; no process env is touched.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "mayfly-tests",
        ))
        .load()
        .await
}

/// Environment for child processes (the `mayfly` binary, the AWS CLI) to reach the emulator.
pub fn child_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_DEFAULT_REGION", REGION.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        // moto stamps every message with one constant SenderId, whoever sent it: events
        // cannot prove their sender there (the check is proven on the fakes).
        ("MAYFLY_UNVERIFIED_EVENT_SENDERS", "true".into()),
        // moto launches exactly MinCount instances and ignores MaxCount.
        ("MAYFLY_GROUP_MIN_IS_MAX", "true".into()),
    ]
}

/// A deployment name no other test (or test process) uses.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{n}-{:x}",
        std::process::id() % 100_000,
        nanos % 0xfffff
    )
}

/// Deploys `infra/mayfly.yaml` into the emulator as deployment `name` and waits for it.
pub fn deploy(name: &str) {
    deploy_with(name, &[]);
}

/// Runs the AWS CLI (the virtualenv's) against the emulator; panics naming the call if it
/// fails, and returns its standard output.
pub fn aws(args: &[&str]) -> String {
    let out = Command::new(venv().join("bin/aws"))
        .args(args)
        .envs(child_env())
        .output()
        .expect("run the AWS CLI");
    assert!(
        out.status.success(),
        "aws {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// [`deploy`] with template parameters besides `DeploymentName`.
pub fn deploy_with(name: &str, parameters: &[(&str, &str)]) {
    let all: Vec<(&str, &str)> = std::iter::once(("DeploymentName", name))
        .chain(parameters.iter().copied())
        .collect();
    create_stack("infra/mayfly.yaml", name, &all);
}

/// Deploys `infra/payer.yaml` for payer `payer_id` of deployment `name` (stack
/// `NAME-payer-PAYER`) with more template parameters, and returns the stack's outputs.
pub fn deploy_payer(
    name: &str,
    payer_id: &str,
    parameters: &[(&str, &str)],
) -> std::collections::BTreeMap<String, String> {
    let stack = format!("{name}-payer-{payer_id}");
    let all: Vec<(&str, &str)> = [("DeploymentName", name), ("PayerId", payer_id)]
        .into_iter()
        .chain(parameters.iter().copied())
        .collect();
    create_stack("infra/payer.yaml", &stack, &all);
    let described: serde_json::Value = serde_json::from_str(&aws(&[
        "cloudformation",
        "describe-stacks",
        "--stack-name",
        &stack,
        "--output",
        "json",
    ]))
    .expect("JSON");
    described["Stacks"][0]["Outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| {
            (
                o["OutputKey"].as_str().expect("key").to_owned(),
                o["OutputValue"].as_str().expect("value").to_owned(),
            )
        })
        .collect()
}

/// Creates stack `stack` from the repository's `template` and waits for it.
fn create_stack(template: &str, stack: &str, parameters: &[(&str, &str)]) {
    let body = format!("file://{}", repo().join(template).display());
    // JSON, as a list parameter's value holds commas.
    let params: Vec<serde_json::Value> = parameters
        .iter()
        .map(|(k, v)| serde_json::json!({"ParameterKey": k, "ParameterValue": v}))
        .collect();
    aws(&[
        "cloudformation",
        "create-stack",
        "--stack-name",
        stack,
        "--template-body",
        &body,
        "--capabilities",
        "CAPABILITY_NAMED_IAM",
        "--parameters",
        &serde_json::Value::from(params).to_string(),
    ]);
    aws(&[
        "cloudformation",
        "wait",
        "stack-create-complete",
        "--stack-name",
        stack,
    ]);
}

/// Path of a file in the repository.
pub fn path(rel: &str) -> PathBuf {
    repo().join(rel)
}

/// Subnets and security group ids the emulator accepts: its default VPC's.
pub async fn emulator_network(ec2: &aws_sdk_ec2::Client) -> (Vec<String>, Vec<String>) {
    let subnets = ec2
        .describe_subnets()
        .send()
        .await
        .expect("describe subnets");
    let mut ids: Vec<String> = subnets
        .subnets()
        .iter()
        .filter_map(|s| s.subnet_id().map(str::to_owned))
        .collect();
    ids.sort();
    ids.truncate(2);
    let groups = ec2
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-name")
                .values("default")
                .build(),
        )
        .send()
        .await
        .expect("describe security groups");
    let sg: Vec<String> = groups
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id().map(str::to_owned))
        .take(1)
        .collect();
    assert!(
        !ids.is_empty() && !sg.is_empty(),
        "the emulator has a default VPC"
    );
    (ids, sg)
}
