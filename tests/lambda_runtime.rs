//! The `mayfly-lambda` binary driven through the Lambda Runtime API, as Lambda drives it,
//! against the emulator. A stand-in for the Runtime API (the real HTTP protocol: next
//! invocation, response, error, init error) serves a scheduled event, then an SQS event from
//! the events queue, then an event of neither kind; the test checks what the function
//! answered, what the passes did in the emulator, its metrics lines and its JSON logs.
//! Built only with `--features lambda` (see `[[test]]` in Cargo.toml).

mod support;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use mayfly::aws::dynamo::DynamoLedger;
use mayfly::aws::Clients;
use mayfly::events::{EventKind, InstanceEvent, VERSION};
use mayfly::job::JobState;
use mayfly::names::Names;
use mayfly::ports::Ledger;
use mayfly_testbed::faultproxy::wire::{read_request, write_reply, Reply};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, Mutex};

/// What the function posted back to the Runtime API.
#[derive(Debug)]
enum Posted {
    Response {
        id: String,
        body: Value,
    },
    Error {
        id: String,
        error_type: String,
        body: Value,
    },
    InitError {
        error_type: String,
        body: Value,
    },
}

/// A stand-in for the Lambda Runtime API on loopback.
struct RuntimeApi {
    addr: String,
    invoke: mpsc::UnboundedSender<(String, Value)>,
    posted: mpsc::UnboundedReceiver<Posted>,
}

impl RuntimeApi {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (invoke, queued) = mpsc::unbounded_channel::<(String, Value)>();
        let (post, posted) = mpsc::unbounded_channel();
        let queued = Arc::new(Mutex::new(queued));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (queued, post) = (queued.clone(), post.clone());
                tokio::spawn(async move {
                    let (mut rd, mut wr) = stream.into_split();
                    let mut buf = Vec::new();
                    while let Ok(Some(req)) = read_request(&mut rd, &mut wr, &mut buf).await {
                        let reply = answer(&req, &queued, &post).await;
                        if write_reply(&mut wr, &reply, false).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            invoke,
            posted,
        }
    }

    /// Queues one invocation and waits for what the function posts back.
    async fn invoke(&mut self, id: &str, payload: Value) -> Posted {
        self.invoke.send((id.to_owned(), payload)).unwrap();
        self.next_posted().await
    }

    async fn next_posted(&mut self) -> Posted {
        // A bound so a broken function fails the test instead of hanging it.
        tokio::time::timeout(Duration::from_secs(120), self.posted.recv())
            .await
            .expect("the function answers")
            .expect("the stand-in is running")
    }
}

async fn answer(
    req: &mayfly_testbed::faultproxy::wire::Request,
    queued: &Mutex<mpsc::UnboundedReceiver<(String, Value)>>,
    post: &mpsc::UnboundedSender<Posted>,
) -> Reply {
    const BASE: &str = "/2018-06-01/runtime";
    let accepted = || Reply::new(202, "application/json", r#"{"status":"OK"}"#);
    let body = || serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let error_type = || {
        req.header("Lambda-Runtime-Function-Error-Type")
            .unwrap_or_default()
            .to_owned()
    };
    let path = req.path().to_owned();
    match (req.method.as_str(), path.strip_prefix(BASE)) {
        ("GET", Some("/invocation/next")) => {
            let Some((id, payload)) = queued.lock().await.recv().await else {
                return Reply::new(500, "text/plain", "no more invocations");
            };
            let deadline = Utc::now().timestamp_millis() + 300_000;
            Reply::new(200, "application/json", payload.to_string())
                .header("Lambda-Runtime-Aws-Request-Id", &id)
                .header("Lambda-Runtime-Deadline-Ms", &deadline.to_string())
                .header(
                    "Lambda-Runtime-Invoked-Function-Arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:mayfly",
                )
                .header(
                    "Lambda-Runtime-Trace-Id",
                    "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
                )
        }
        ("POST", Some("/init/error")) => {
            let _ = post.send(Posted::InitError {
                error_type: error_type(),
                body: body(),
            });
            accepted()
        }
        ("POST", Some(rest)) => {
            let rest = rest.strip_prefix("/invocation/").unwrap_or_default();
            if let Some(id) = rest.strip_suffix("/response") {
                let _ = post.send(Posted::Response {
                    id: id.to_owned(),
                    body: body(),
                });
                accepted()
            } else if let Some(id) = rest.strip_suffix("/error") {
                let _ = post.send(Posted::Error {
                    id: id.to_owned(),
                    error_type: error_type(),
                    body: body(),
                });
                accepted()
            } else {
                Reply::new(404, "text/plain", "unknown path")
            }
        }
        _ => Reply::new(404, "text/plain", "unknown path"),
    }
}

/// Starts the function for deployment `name`, reporting to `api`.
fn start_function(name: &str, api: &RuntimeApi) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mayfly-lambda"))
        .envs(support::child_env())
        .env("AWS_LAMBDA_RUNTIME_API", &api.addr)
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("MAYFLY_NAME", name)
        .env_remove("MAYFLY_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start mayfly-lambda")
}

/// Collects a child stream's lines as they come.
fn lines_of<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    stream: R,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(line);
        }
    });
    rx
}

fn drain(rx: &mut mpsc::UnboundedReceiver<String>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(line) = rx.try_recv() {
        out.push(line);
    }
    out
}

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_and_sqs_invocations_run_passes_against_the_emulator() {
    let name = support::unique_name("lam");
    support::deploy(&name);
    let sdk = support::sdk_config().await;
    let clients = Clients::new(&sdk);
    let names = Names::new(&name);
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), names.jobs_table());
    let (subnets, sgs) = support::emulator_network(&clients.ec2).await;
    let dir = std::env::temp_dir().join(format!("mayfly-lambda-{name}"));
    support::write_profiles_for(&name, &subnets, &sgs, &dir);
    ok(&support::mayfly(
        &name,
        &["payers", "apply", &dir.display().to_string()],
    ));
    let job_id = "cedar-plan:2027-01:eligibility";
    ok(&support::mayfly(
        &name,
        &[
            "submit",
            "--job-id",
            job_id,
            "--payer",
            "cedar-plan",
            "--kind",
            "eligibility",
            "--batch",
            "2027-01",
        ],
    ));
    // The job's id in mayfly is per payer.
    let job_key = mayfly::job::job_key("cedar-plan", job_id);
    let job_id = job_key.as_str();

    let mut api = RuntimeApi::start().await;
    let mut function = start_function(&name, &api);
    let mut stdout = lines_of(function.stdout.take().unwrap());
    let mut stderr = lines_of(function.stderr.take().unwrap());

    // A scheduled event runs a pass: the submitted job is ingested and launched.
    let scheduled: Value =
        serde_json::from_str(include_str!("fixtures/lambda/scheduled.json")).unwrap();
    let Posted::Response { id, body } = api.invoke("req-scheduled", scheduled).await else {
        panic!(
            "the scheduled invocation succeeds; stderr:\n{:?}",
            drain(&mut stderr)
        );
    };
    assert_eq!(id, "req-scheduled");
    assert_eq!(body["ingest"]["accepted"], 1, "{body:#}");
    assert_eq!(body["launch"]["instances"][0][0], job_id, "{body:#}");
    assert_eq!(body["aws_calls"]["EC2.RunInstances"], 1, "{body:#}");
    let job = ledger
        .get(job_id)
        .await
        .unwrap()
        .expect("job in the ledger");
    assert_eq!(job.state, JobState::Running);
    let attempt = job.current_attempt().unwrap();
    let instance_id = attempt.instance_id.clone().expect("instance recorded");
    assert!(attempt.started_at.is_none());
    let described = clients
        .ec2
        .describe_instances()
        .instance_ids(&instance_id)
        .send()
        .await
        .unwrap();
    let instance = &described.reservations()[0].instances()[0];
    assert!(instance
        .tags()
        .iter()
        .any(|t| t.key() == Some("mayfly:job-id") && t.value() == Some(job_id)));

    // An SQS event: the job's `started` event is applied; the malformed record is moved to
    // the events DLQ with its reason, so it is not handed back to Lambda either.
    let started = InstanceEvent {
        v: VERSION,
        event: EventKind::Started,
        job_id: job_id.into(),
        attempt: job.attempt,
        instance_id: instance_id.clone(),
        at: Utc::now(),
        exit_code: None,
        duration_secs: None,
        output_tail: None,
        notice: None,
    };
    let record = |id: &str, body: &str| {
        json!({
            "messageId": id, "receiptHandle": format!("rh-{id}"), "body": body,
            "attributes": {"ApproximateReceiveCount": "1"},
            "messageAttributes": {}, "eventSource": "aws:sqs",
            "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{}", names.events_queue()),
            "awsRegion": "us-east-1"
        })
    };
    let sqs = json!({"Records": [
        record("msg-started", &started.to_json()),
        record("msg-malformed", "{\"v\":1,\"type\":\"started\"}"),
    ]});
    let Posted::Response { id, body } = api.invoke("req-sqs", sqs).await else {
        panic!(
            "the SQS invocation succeeds; stderr:\n{:?}",
            drain(&mut stderr)
        );
    };
    assert_eq!(id, "req-sqs");
    assert_eq!(body, json!({"batchItemFailures": []}));
    let dlq = clients
        .sqs
        .get_queue_url()
        .queue_name(names.events_dlq())
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let dead = clients
        .sqs
        .receive_message()
        .queue_url(dlq)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap();
    assert_eq!(dead.messages().len(), 1);
    assert_eq!(
        dead.messages()[0].body(),
        Some("{\"v\":1,\"type\":\"started\"}")
    );
    let reason = dead.messages()[0]
        .message_attributes()
        .and_then(|a| a.get("mayfly-error"))
        .and_then(|a| a.string_value())
        .expect("the reason");
    assert!(reason.starts_with("job_id: "), "{reason}");
    let job = ledger.get(job_id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Running);
    assert!(
        job.current_attempt().unwrap().started_at.is_some(),
        "the started event is on record"
    );

    // Neither kind of event: the invocation fails with a reason.
    let other = json!({"source": "aws.s3", "detail-type": "Object Created"});
    let Posted::Error {
        id,
        error_type,
        body,
    } = api.invoke("req-other", other).await
    else {
        panic!("an unsupported event is an invocation error");
    };
    assert_eq!(id, "req-other");
    // The runtime marks the error `unhandled` in the header; the body names its type.
    assert!(!error_type.is_empty());
    assert_eq!(body["errorType"], "mayfly.UnsupportedEvent", "{body}");
    assert!(
        body["errorMessage"].as_str().unwrap().contains("aws.s3"),
        "{body}"
    );

    // Every stdout line is an EMF document; each pass has one deployment-wide document.
    let lines = drain(&mut stdout);
    let mut totals = Vec::new();
    for line in &lines {
        let emf: Value = serde_json::from_str(line).expect("an EMF line is JSON");
        let directive = &emf["_aws"]["CloudWatchMetrics"][0];
        assert!(emf["_aws"]["Timestamp"].is_i64(), "{line}");
        assert_eq!(directive["Namespace"], "mayfly", "{line}");
        for dim in directive["Dimensions"][0].as_array().expect("dimensions") {
            assert!(emf[dim.as_str().unwrap()].is_string(), "{line}");
        }
        for m in directive["Metrics"].as_array().expect("metrics") {
            let metric = m["Name"].as_str().unwrap();
            assert!(emf[metric].is_number(), "{metric} has a value: {line}");
        }
        assert_eq!(emf["deployment"], name.as_str(), "{line}");
        if directive["Dimensions"] == json!([["deployment"]]) {
            totals.push(emf);
        }
    }
    assert_eq!(totals.len(), 2, "one per pass: {lines:#?}");
    let scheduled = &totals[0];
    assert_eq!(scheduled["mayfly_launches_total"], 1.0, "{scheduled:#}");
    assert_eq!(
        scheduled["mayfly_jobs_ingested_total"], 1.0,
        "{scheduled:#}"
    );
    assert_eq!(
        scheduled["mayfly_aws_calls_total"]
            .as_f64()
            .map(|n| n > 0.0),
        Some(true)
    );
    // The scheduled pass read the ledger for its gauges: nothing is left queued.
    assert_eq!(scheduled["mayfly_queued_jobs"], 0.0, "{scheduled:#}");
    assert_eq!(scheduled["mayfly_paused_payers"], 0.0, "{scheduled:#}");
    assert!(lines
        .iter()
        .any(|l| l.contains(r#""operation":"EC2.RunInstances""#)));
    assert_eq!(
        totals[1]["mayfly_events_applied_total"], 1.0,
        "the batch's started event"
    );
    // Logs on stderr are JSON, one object a line.
    let logs = drain(&mut stderr);
    assert!(
        logs.iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|l| l["fields"]["message"] == "Pass done."),
        "{logs:#?}"
    );
    function.kill().await.unwrap();
}

#[tokio::test]
async fn a_missing_deployment_is_an_init_error() {
    let name = support::unique_name("lam-none");
    let mut api = RuntimeApi::start().await;
    let mut function = start_function(&name, &api);
    let Posted::InitError { error_type, body } = api.next_posted().await else {
        panic!("the function reports an init error");
    };
    assert_eq!(error_type, "mayfly.InitFailed");
    assert_eq!(body["errorType"], "mayfly.InitFailed", "{body}");
    let message = body["errorMessage"].as_str().unwrap();
    assert!(message.contains(&format!("{name}-events")), "{message}");
    let status = function.wait().await.unwrap();
    assert_eq!(status.code(), Some(1));
}
