//! User-data as an operator meets it: a golden script for every example payer and kind, each
//! clean under shellcheck; templates that must be refused (each with its expected message);
//! hostile parameter values rendered inert; and the rendered script run for real against a
//! loopback metadata endpoint and a stub AWS CLI, its events parsed with the events schema.
//!
//! Regenerate the goldens after an intended change with
//! `MAYFLY_UPDATE_GOLDEN=1 cargo test --test userdata`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Utc};
use mayfly::catalog::Catalog;
use mayfly::events::{EventKind, InstanceEvent};
use mayfly::job::{Job, JobRequest};
use mayfly::profile::{load_and_validate, GlobalCaps, Payer, PayerProfile, ValidateContext};
use mayfly::userdata::{
    render_for_job, InstanceEnv, RenderError, Renderer, UserDataContext, MAX_USER_DATA_BYTES,
};

const QUEUE_URL: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/mayfly-events";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn env() -> InstanceEnv {
    InstanceEnv {
        events_queue_url: QUEUE_URL.to_owned(),
        region: "us-east-1".to_owned(),
        ..InstanceEnv::default()
    }
}

fn validate_ctx() -> ValidateContext<'static> {
    ValidateContext {
        catalog: Catalog::shipped(),
        global: GlobalCaps::default(),
    }
}

fn example_payers() -> Vec<Payer> {
    load_and_validate(&[repo("payer-profiles")], &validate_ctx()).unwrap_or_else(|e| panic!("{e}"))
}

fn now() -> DateTime<Utc> {
    "2026-11-01T06:00:00Z".parse().unwrap()
}

/// The fixed synthetic job of the goldens: one per payer and kind.
fn job(payer: &str, kind: &str, params: &[(&str, &str)]) -> Job {
    let req = JobRequest {
        job_id: format!("{payer}:2026-11-01:{kind}"),
        payer_id: payer.to_owned(),
        kind: kind.to_owned(),
        batch: "2026-11-01".to_owned(),
        input: Some(mayfly::job::JobInput {
            uri: format!("s3://mayfly-example-drops/{payer}/2026-11-01/{kind}.dat"),
            bytes: Some(1 << 30),
        }),
        params: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        priority: None,
    };
    req.validate().unwrap();
    Job::from_request(req, now())
}

/// shellcheck from the project virtualenv or PATH; its absence fails the test.
fn shellcheck() -> PathBuf {
    let candidates = [
        std::env::var_os("MAYFLY_VENV").map(|v| PathBuf::from(v).join("bin/shellcheck")),
        Some(repo(".venv/bin/shellcheck")),
    ];
    if let Some(found) = candidates.into_iter().flatten().find(|p| p.is_file()) {
        return found;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("shellcheck"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!("shellcheck not found in $MAYFLY_VENV/bin, .venv/bin or PATH: run `bash scripts/emulator.sh install`")
    })
}

fn assert_shellcheck_clean(path: &Path) {
    let out = Command::new(shellcheck())
        .args(["--shell=bash", "--severity=style"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shellcheck {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn scratch_dir(label: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mayfly-userdata-{}-{label}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every example payer and kind, rendered: exactly what the goldens hold.
fn rendered_examples() -> Vec<(String, String)> {
    let renderer = Renderer::builtin();
    let mut out = Vec::new();
    for payer in example_payers() {
        for kind in payer.profile.kinds.keys() {
            let job = job(payer.id(), kind, &[("RUN_MODE", "full")]);
            let script = render_for_job(&renderer, &payer, &job, 1, &env())
                .unwrap_or_else(|e| panic!("{}/{kind}: {e}", payer.id()));
            out.push((format!("{}-{kind}.sh", payer.id()), script));
        }
    }
    out
}

#[test]
fn golden_script_for_every_example_payer_and_kind() {
    let dir = repo("tests/golden/userdata");
    let update = std::env::var_os("MAYFLY_UPDATE_GOLDEN").is_some();
    std::fs::create_dir_all(&dir).unwrap();
    let mut expected_files = Vec::new();
    for (name, script) in rendered_examples() {
        let path = dir.join(&name);
        if update {
            std::fs::write(&path, &script).unwrap();
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            golden == script,
            "{} differs from the rendered script:\n{script}\n(set MAYFLY_UPDATE_GOLDEN=1 to accept)",
            path.display()
        );
        expected_files.push(name);
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(
        present,
        expected_files,
        "stale or missing goldens in {}",
        dir.display()
    );
    assert!(expected_files.len() >= 6, "{expected_files:?}");
}

#[test]
fn every_rendered_example_passes_shellcheck_and_bash_syntax() {
    // Rendered afresh rather than read from the goldens, which another test may be rewriting.
    let dir = scratch_dir("shellcheck");
    let examples = rendered_examples();
    assert!(examples.len() >= 6);
    for (name, script) in &examples {
        let path = dir.join(name);
        std::fs::write(&path, script).unwrap();
        assert_shellcheck_clean(&path);
        let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
        assert!(
            syntax.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&syntax.stderr)
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn emulator_endpoint_is_added_only_when_set_and_stays_shellcheck_clean() {
    let payers = example_payers();
    let payer = payers.iter().find(|p| p.id() == "harbor-health").unwrap();
    let job = job(payer.id(), "claims", &[]);
    let plain = render_for_job(&Renderer::builtin(), payer, &job, 2, &env()).unwrap();
    assert!(!plain.contains("--endpoint-url"));
    let local = InstanceEnv {
        endpoint_url: Some("http://127.0.0.1:5000".to_owned()),
        ..env()
    };
    let script = render_for_job(&Renderer::builtin(), payer, &job, 2, &local).unwrap();
    assert!(
        script.contains("aws --endpoint-url 'http://127.0.0.1:5000' "),
        "{script}"
    );
    let dir = scratch_dir("endpoint");
    let path = dir.join("script.sh");
    std::fs::write(&path, &script).unwrap();
    assert_shellcheck_clean(&path);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_deadline_is_armed_before_anything_else() {
    let payers = example_payers();
    let payer = &payers[0];
    let kind = payer.profile.kinds.keys().next().unwrap();
    let script = render_for_job(
        &Renderer::builtin(),
        payer,
        &job(payer.id(), kind, &[]),
        1,
        &env(),
    )
    .unwrap();
    let first = script
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap();
    let deadline =
        payer.max_runtime(payer.kind(kind).unwrap()).as_secs() + env().deadline_grace_secs;
    assert_eq!(
        first,
        format!("( sleep {deadline}; shutdown -h now ) </dev/null >/dev/null 2>&1 &")
    );
    // The steps of DESIGN.md §4, in order.
    let steps = [
        "( sleep",
        "latest/api/token",
        "send_event started",
        "send_event heartbeat",
        "spot/instance-action",
        "run_job '",
        "send_event finished",
        "shutdown -h now\n",
    ];
    let mut at = 0;
    for step in steps {
        let found = script[at..]
            .find(step)
            .unwrap_or_else(|| panic!("`{step}` missing or out of order"));
        at += found + step.len();
    }
}

#[test]
fn secrets_are_rendered_as_references_only() {
    let payers = example_payers();
    let payer = payers.iter().find(|p| p.id() == "harbor-health").unwrap();
    let script = render_for_job(
        &Renderer::builtin(),
        payer,
        &job(payer.id(), "claims", &[]),
        1,
        &env(),
    )
    .unwrap();
    assert!(
        script.contains("get_secret 'ssm' '/mayfly/harbor-health/warehouse-dsn' 'us-east-1'"),
        "{script}"
    );
    assert!(script.contains(r#"export WAREHOUSE_DSN="${secret[WAREHOUSE_DSN]}""#));
}

#[test]
fn every_rejected_template_fails_with_its_expected_message() {
    let root = repo("tests/fixtures/userdata/rejected");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 8, "{cases:?}");
    for case in cases {
        let read = |f: &str| {
            std::fs::read_to_string(case.join(f))
                .unwrap_or_else(|e| panic!("{}/{f}: {e}", case.display()))
        };
        let expected = read("expected.txt");
        let expected = expected.trim_end();
        let context: serde_json::Value = serde_json::from_str(&read("context.json")).unwrap();
        let result = Renderer::from_dir(&case).and_then(|r| r.render("default", &context));
        let err = match result {
            Ok(text) => panic!("{} rendered but should be refused:\n{text}", case.display()),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(expected),
            "{}:\n  expected: {expected}\n  got: {err}",
            case.display()
        );
    }
}

#[test]
fn oversize_output_states_its_size() {
    let payers = example_payers();
    let payer = payers.iter().find(|p| p.id() == "cedar-plan").unwrap();
    let big = "x".repeat(1000);
    let params: Vec<(String, &str)> = (0..20).map(|i| (format!("P{i}"), big.as_str())).collect();
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let mut job = job(payer.id(), "claims", &[]);
    job.params = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let err = render_for_job(&Renderer::builtin(), payer, &job, 1, &env()).unwrap_err();
    match &err {
        RenderError::TooLarge { bytes, limit, .. } => {
            assert!(*bytes > MAX_USER_DATA_BYTES);
            assert_eq!(*limit, 16384);
        }
        other => panic!("{other}"),
    }
    assert!(
        err.to_string()
            .contains("bytes; EC2 allows at most 16384 bytes"),
        "{err}"
    );
}

#[test]
fn context_errors_name_the_field() {
    let payers = example_payers();
    let payer = payers.iter().find(|p| p.id() == "harbor-health").unwrap();
    let good = job(payer.id(), "claims", &[]);
    let render = |job: &Job, attempt: u32, env: &InstanceEnv| {
        render_for_job(&Renderer::builtin(), payer, job, attempt, env)
            .unwrap_err()
            .to_string()
    };
    let mut unknown_kind = good.clone();
    unknown_kind.kind = "dental".into();
    assert!(render(&unknown_kind, 1, &env())
        .contains("kind: payer `harbor-health` has no kind `dental`"));
    let mut clash = good.clone();
    clash.params.insert("LOG_LEVEL".into(), "debug".into());
    assert!(render(&clash, 1, &env()).contains("params.LOG_LEVEL: `LOG_LEVEL` is already set"));
    let mut shadow = good.clone();
    shadow.params.insert("WAREHOUSE_DSN".into(), "x".into());
    assert!(
        render(&shadow, 1, &env()).contains("params.WAREHOUSE_DSN: `WAREHOUSE_DSN` is already set")
    );
    let mut bad_id = good.clone();
    bad_id.job_id = "a\"b".into();
    assert!(render(&bad_id, 1, &env()).contains("job_id:"));
    assert!(render(&good, 0, &env()).contains("attempt: must be at least 1"));
    let no_queue = InstanceEnv {
        events_queue_url: String::new(),
        ..env()
    };
    assert!(render(&good, 1, &no_queue).contains("events_queue_url"));
}

#[test]
fn hostile_parameter_values_are_rendered_inert() {
    let payers = example_payers();
    let payer = payers.iter().find(|p| p.id() == "prairie-mutual").unwrap();
    let hostile = [
        ("INJECT_QUOTE", "'; rm -rf / #"),
        ("INJECT_SUBST", "$(reboot)"),
        (
            "INJECT_MIXED",
            "`reboot` \"$(reboot)\" '$HOME' \\ ${PATH} 'x'\\''y",
        ),
    ];
    let job = job(payer.id(), "remittance", &hostile);
    let script = render_for_job(&Renderer::builtin(), payer, &job, 1, &env()).unwrap();
    let dir = scratch_dir("inert");
    let path = dir.join("script.sh");
    std::fs::write(&path, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    assert_shellcheck_clean(&path);
    for (name, value) in hostile {
        let line = script
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("no assignment of {name}"));
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("{line}\nprintf '%s' \"${name}\""))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap(), value, "{line}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------------------------------------
// The rendered script, run: a loopback IMDSv2 and a stub `aws` and `shutdown` on PATH.

/// A minimal IMDSv2: a token for a PUT with a TTL header, then metadata for that token only.
fn start_imds(instance_id: &'static str, spot_notice: Option<&'static str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = answer_imds(stream, instance_id, spot_notice);
        }
    });
    format!("http://{addr}")
}

fn answer_imds(
    mut stream: TcpStream,
    instance_id: &str,
    spot: Option<&str>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        headers.push(h.trim().to_ascii_lowercase());
    }
    let has = |prefix: &str| headers.iter().any(|h| h.starts_with(prefix));
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let authorized = has("x-aws-ec2-metadata-token: token-1");
    let (status, body) = match (method, path) {
        ("PUT", "/latest/api/token") if has("x-aws-ec2-metadata-token-ttl-seconds:") => {
            ("200 OK", "token-1")
        }
        ("PUT", _) => ("400 Bad Request", ""),
        (_, _) if !authorized => ("401 Unauthorized", ""),
        (_, "/latest/meta-data/instance-id") => ("200 OK", instance_id),
        (_, "/latest/meta-data/spot/instance-action") => match spot {
            Some(notice) => ("200 OK", notice),
            None => ("404 Not Found", ""),
        },
        _ => ("404 Not Found", ""),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Whether SQS accepts `c` in a message body: its documented set, #x9 | #xA | #xD |
/// #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF.
fn sqs_allows(c: char) -> bool {
    matches!(u32::from(c), 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

/// SQS's check of a message body, for the stub `aws`: answers 200 to a body SQS would
/// accept (valid UTF-8 of allowed characters only) and 400 to any other.
fn start_sqs_check() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = answer_sqs_check(stream);
        }
    });
    format!("http://{addr}/send-message")
}

fn answer_sqs_check(mut stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    std::io::Read::read_exact(&mut reader, &mut body)?;
    let accepted = std::str::from_utf8(&body).is_ok_and(|text| text.chars().all(sqs_allows));
    let status = if accepted {
        "200 OK"
    } else {
        "400 Bad Request"
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

/// Stub executables: `aws` records each call, answers secret reads, and sends each event
/// body past SQS's character check (`$SQS_CHECK`): a body SQS takes is recorded as sent, one
/// it refuses as refused, and the call fails as SQS's refusal does; `shutdown` records that
/// it was called.
fn install_stubs(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let aws = r#"#!/bin/bash
printf '%s\n' "$*" >>"$STUB_DIR/aws.calls"
body=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --message-body) body="$2"; shift ;;
    get-parameter) printf 'ssm-value-for-test\n' ;;
    get-secret-value) printf 'sm-value-for-test\n' ;;
  esac
  shift
done
if [[ -n $body ]]; then
  if printf '%s' "$body" | curl -sf --data-binary @- "$SQS_CHECK" >/dev/null; then
    printf '%s\n' "$body" >>"$STUB_DIR/events.jsonl"
  else
    printf '%s\n' "$body" >>"$STUB_DIR/refused.jsonl"
    echo 'An error occurred (InvalidMessageContents) when calling the SendMessage operation: Invalid characters found.' >&2
    exit 254
  fi
fi
"#;
    let shutdown = "#!/bin/bash\nprintf '%s\\n' \"$*\" >>\"$STUB_DIR/shutdown.calls\"\n";
    for (name, text) in [("aws", aws), ("shutdown", shutdown)] {
        let path = bin.join(name);
        std::fs::write(&path, text).unwrap();
        Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    }
    bin
}

struct Run {
    events: Vec<InstanceEvent>,
    /// Event bodies SQS's character check refused (each one a failed send).
    refused: Vec<String>,
    aws_calls: String,
    shutdowns: usize,
    stderr: String,
}

/// Where a program is on this machine's PATH.
fn on_path(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("`{program}` is not on PATH"))
}

/// The system programs the instance script runs besides `aws` and `shutdown` (stubbed).
const IMAGE_TOOLS: &[&str] = &[
    "curl", "sed", "awk", "date", "mktemp", "sleep", "tail", "head", "tr", "timeout",
];

/// Runs a rendered script in its own process group with the stubs first on PATH.
fn spawn_script(script: &str, imds: &str, label: &str) -> (std::process::Output, PathBuf) {
    spawn_script_on_image(script, imds, label, None)
}

/// Runs a rendered script as [`spawn_script`] does; with `lacking`, on an image that has
/// only the stubs and [`IMAGE_TOOLS`] on its PATH, less the programs named.
fn spawn_script_on_image(
    script: &str,
    imds: &str,
    label: &str,
    lacking: Option<&[&str]>,
) -> (std::process::Output, PathBuf) {
    let dir = scratch_dir(label);
    let bin = install_stubs(&dir);
    let search_path = match lacking {
        None => format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
        Some(lacking) => {
            let system = dir.join("system-bin");
            std::fs::create_dir_all(&system).unwrap();
            for tool in IMAGE_TOOLS.iter().filter(|t| !lacking.contains(t)) {
                std::os::unix::fs::symlink(on_path(tool), system.join(tool)).unwrap();
            }
            for stub in lacking {
                let _ = std::fs::remove_file(bin.join(stub));
            }
            format!("{}:{}", bin.display(), system.display())
        }
    };
    let path = dir.join("user-data.sh");
    std::fs::write(&path, script).unwrap();
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let child = Command::new(on_path("bash"))
        .arg(&path)
        .env("PATH", search_path)
        .env("STUB_DIR", &dir)
        .env("SQS_CHECK", start_sqs_check())
        .env("TMPDIR", &tmp)
        .env("MAYFLY_IMDS_ENDPOINT", imds)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id();
    let out = child.wait_with_output().unwrap();
    // The deadline and any sleeping watcher outlive the script by design; end them here.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg("--")
        .arg(format!("-{pgid}"))
        .stderr(Stdio::null())
        .status();
    (out, dir)
}

fn run_script(script: &str, imds: &str, label: &str) -> Run {
    let (out, dir) = spawn_script(script, imds, label);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "script failed:\n{stderr}");
    let read = |f: &str| {
        std::fs::read(dir.join(f))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    };
    let events = read("events.jsonl")
        .lines()
        .map(|l| InstanceEvent::parse(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let run = Run {
        events,
        refused: read("refused.jsonl").lines().map(str::to_owned).collect(),
        aws_calls: read("aws.calls"),
        shutdowns: read("shutdown.calls")
            .lines()
            .filter(|l| *l == "-h now")
            .count(),
        stderr,
    };
    std::fs::remove_dir_all(&dir).ok();
    run
}

fn test_payer(command: &[&str]) -> Payer {
    let command = command
        .iter()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        r#"payer_id = "test-payer"
[caps]
max_instances = 1
max_vcpus = 2
[launch]
image_id = "ami-0a1b2c3d4e5f60001"
subnets = ["subnet-0a1b2c3d4e5f60011"]
security_groups = ["sg-0a1b2c3d4e5f60021"]
instance_profile = "mayfly-instance"
[timeouts]
boot = "5m"
heartbeat = "5m"
max_runtime = "10m"
[kinds.check]
tier = 0
command = [{command}]
[kinds.check.compute]
instance_types = ["m7i.large"]
[kinds.check.env]
STATIC_SETTING = "from-profile"
[kinds.check.secrets]
DB_DSN = "ssm:/mayfly/test-payer/db-dsn"
API_CREDENTIAL = "arn:aws:secretsmanager:us-west-2:123456789012:secret:test-payer-api"
"#
    );
    PayerProfile::from_toml("test-payer.toml", &text)
        .unwrap()
        .validate("test-payer.toml", &validate_ctx())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn context(payer: &Payer, params: &[(&str, &str)]) -> UserDataContext {
    let job = job(payer.id(), "check", params);
    let mut ctx = UserDataContext::for_job(payer, &job, 2, &env()).unwrap();
    ctx.limits.heartbeat_secs = 1;
    ctx.limits.spot_poll_secs = 1;
    ctx
}

#[test]
fn the_script_reports_started_heartbeats_and_finished_then_shuts_down() {
    let payer = test_payer(&[
        "bash",
        "-c",
        r#"printf '%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s\n' "$MAYFLY_JOB_ID" "$MAYFLY_ATTEMPT" "$MAYFLY_PAYER" "$MAYFLY_KIND" "$MAYFLY_BATCH" "$MAYFLY_INPUT_URI" "$MAYFLY_INSTANCE_ID" "$STATIC_SETTING" "$QUIRKY" "$DB_DSN" "$API_CREDENTIAL"; printf 'tab\there "quoted" back\\slash caf\xc3\xa9 bad\xff\x01end\n'; sleep 2.5; exit 3"#,
    ]);
    let ctx = context(&payer, &[("QUIRKY", "it's $(not) run")]);
    let script = Renderer::builtin().render_context(&ctx).unwrap();
    let imds = start_imds("i-0123456789abcdef0", None);
    let run = run_script(&script, &imds, "happy");

    let kinds: Vec<EventKind> = run.events.iter().map(|e| e.event).collect();
    assert_eq!(
        kinds.first(),
        Some(&EventKind::Started),
        "{kinds:?}\n{}",
        run.stderr
    );
    assert_eq!(kinds.last(), Some(&EventKind::Finished), "{kinds:?}");
    assert!(kinds.contains(&EventKind::Heartbeat), "{kinds:?}");
    for e in &run.events {
        assert_eq!(e.job_id, "test-payer/test-payer:2026-11-01:check");
        assert_eq!(e.attempt, 2);
        assert_eq!(e.instance_id, "i-0123456789abcdef0");
    }
    let finished = run.events.last().unwrap();
    assert_eq!(finished.exit_code, Some(3));
    assert!(
        (2..=60).contains(&finished.duration_secs.unwrap()),
        "{finished:?}"
    );
    let tail = finished.output_tail.as_deref().unwrap();
    let expected_env = "test-payer/test-payer:2026-11-01:check|2|test-payer|check|2026-11-01|s3://mayfly-example-drops/test-payer/2026-11-01/check.dat|i-0123456789abcdef0|from-profile|it's $(not) run|ssm-value-for-test|sm-value-for-test\n";
    assert_eq!(
        tail,
        format!("{expected_env}tab\there \"quoted\" back\\slash café badend")
    );
    assert!(run.aws_calls.contains("--region us-east-1 ssm get-parameter --with-decryption --name /mayfly/test-payer/db-dsn"), "{}", run.aws_calls);
    assert!(run.aws_calls.contains("--region us-west-2 secretsmanager get-secret-value --secret-id arn:aws:secretsmanager:us-west-2:"), "{}", run.aws_calls);
    assert!(run.aws_calls.contains(&format!(
        "sqs send-message --queue-url {QUEUE_URL} --message-body"
    )));
    assert_eq!(run.shutdowns, 1, "{}", run.stderr);
    assert!(run.refused.is_empty(), "{:?}", run.refused);
}

#[test]
fn an_output_tail_with_characters_sqs_refuses_is_sent_once_keeping_the_rest() {
    // U+FFFF, U+FFFE, a surrogate (never valid UTF-8) and a code point past U+10FFFF, around
    // text SQS takes: accented, CJK, an emoji, U+FFFD and the last code point, U+10FFFF.
    let payer = test_payer(&[
        "bash",
        "-c",
        r#"printf 'caf\xc3\xa9 \xef\xbf\xbfnon\xef\xbf\xbechar \xed\xa0\x80sur \xf4\x90\x80\x80big \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 \xef\xbf\xbd \xf4\x8f\xbf\xbf end\n'"#,
    ]);
    let script = Renderer::builtin()
        .render_context(&context(&payer, &[]))
        .unwrap();
    let run = run_script(&script, &start_imds("i-0abc1234", None), "sqs-chars");

    assert!(
        run.refused.is_empty(),
        "SQS refused a send:\n{:?}\n{}",
        run.refused,
        run.stderr
    );
    let finished: Vec<_> = run
        .events
        .iter()
        .filter(|e| e.event == EventKind::Finished)
        .collect();
    assert_eq!(finished.len(), 1, "{:?}", run.events);
    assert_eq!(
        finished[0].output_tail.as_deref(),
        Some("café nonchar sur big 日本 😀 \u{FFFD} \u{10FFFF} end"),
        "the tail keeps every character SQS takes, on the first send"
    );
    let finished_sends = run
        .aws_calls
        .lines()
        .filter(|call| call.contains(r#""type":"finished""#))
        .count();
    assert_eq!(finished_sends, 1, "finished got through on its first send");
}

#[test]
fn an_image_without_the_aws_cli_is_told_on_the_console_and_shuts_down() {
    let payer = test_payer(&["bash", "-c", r#"printf x >"$STUB_DIR/ran""#]);
    let script = Renderer::builtin()
        .render_context(&context(&payer, &[]))
        .unwrap();
    let (out, dir) = spawn_script_on_image(
        &script,
        &start_imds("i-0abc1234", None),
        "no-aws-cli",
        Some(&["aws"]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let lacks: Vec<&str> = stderr.lines().filter(|l| l.contains("lacks")).collect();
    assert_eq!(lacks.len(), 1, "only the AWS CLI is missing:\n{stderr}");
    assert!(
        lacks[0].starts_with("mayfly: this image lacks aws (the AWS CLI"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cannot run or report without them; shutting down"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("cannot reach the events queue"),
        "{stderr}"
    );
    assert!(!dir.join("ran").exists(), "the job never runs");
    assert_eq!(
        std::fs::read_to_string(dir.join("shutdown.calls")).unwrap(),
        "-h now\n",
        "the instance shuts itself down"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_spot_notice_is_reported_as_interrupted() {
    let payer = test_payer(&["sleep", "2.5"]);
    let script = Renderer::builtin()
        .render_context(&context(&payer, &[]))
        .unwrap();
    let notice = r#"{"action":"terminate","time":"2026-11-01T06:02:00Z"}"#;
    let run = run_script(&script, &start_imds("i-0abc1234", Some(notice)), "spot");
    let interrupted: Vec<_> = run
        .events
        .iter()
        .filter(|e| e.event == EventKind::Interrupted)
        .collect();
    assert_eq!(interrupted.len(), 1, "{:?}\n{}", run.events, run.stderr);
    assert_eq!(interrupted[0].notice.as_deref(), Some(notice));
    assert_eq!(run.events.last().unwrap().exit_code, Some(0));
}

#[test]
fn without_an_identity_nothing_runs_and_the_instance_shuts_down() {
    let payer = test_payer(&["bash", "-c", r#"touch "$STUB_DIR/ran""#]);
    let script = Renderer::builtin()
        .render_context(&context(&payer, &[]))
        .unwrap();
    // A metadata endpoint that answers with something that is not an instance id.
    let (out, dir) = spawn_script(&script, &start_imds("not-an-instance", None), "no-identity");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no valid instance id"));
    assert!(!dir.join("events.jsonl").exists());
    assert!(!dir.join("ran").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join("shutdown.calls")).unwrap(),
        "-h now\n"
    );
    std::fs::remove_dir_all(&dir).ok();
}
