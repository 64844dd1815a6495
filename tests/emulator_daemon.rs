//! `mayfly run` against the emulator, woken by arrivals: with a pass interval far longer than
//! the test, a submitted job is launched by a pass the arrival triggered; the metrics
//! endpoint is scraped and checked as Prometheus text; SIGTERM exits 0 with no job left
//! `launching`.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mayfly::aws::dynamo::DynamoLedger;
use mayfly::aws::Clients;
use mayfly::job::JobState;
use mayfly::names::Names;
use mayfly::ports::Ledger;
use support::daemon::Daemon;
use support::mayfly;

/// A line the daemon printed: with `--output json`, one object per line.
fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
}

/// Waits for the daemon's first line matching `pred`.
fn wait_for(
    daemon: &Daemon,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let (_, line) = daemon.wait_for(what, Duration::from_secs(40), |l| pred(&json(l)));
    json(&line)
}

fn event(v: &serde_json::Value, name: &str) -> bool {
    v["event"] == name
}

/// GET /metrics over plain HTTP/1.1; returns the body after checking the status line.
fn scrape(url: &str) -> String {
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_owned()
}

/// Checks the Prometheus text format and returns every sample as
/// `name{labels}` → value. Panics naming the offending line.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let metric_name = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, tail) = (parts.next(), parts.next(), parts.next());
            match (kw, name, tail) {
                (Some("HELP"), Some(n), Some(_)) => assert!(metric_name(n), "HELP name: {line}"),
                (Some("TYPE"), Some(n), Some(t)) => {
                    assert!(metric_name(n), "TYPE name: {line}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "TYPE kind: {line}"
                    );
                    assert!(
                        typed.insert(n.to_owned(), t.to_owned()).is_none(),
                        "TYPE twice: {line}"
                    );
                }
                _ => panic!("malformed comment line: {line}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(metric_name(name), "sample name: {line}");
        assert!(typed.contains_key(name), "sample before its TYPE: {line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("labels: {line}"));
            // label="value" pairs separated by commas; values escape \ " and newline.
            let mut rest = inner;
            while !rest.is_empty() {
                let (label, after) = rest
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("label: {line}"));
                assert!(metric_name(label), "label name: {line}");
                let mut end = None;
                let mut escaped = false;
                for (i, c) in after.char_indices() {
                    match (escaped, c) {
                        (true, '\\' | '"' | 'n') => escaped = false,
                        (true, _) => panic!("bad escape: {line}"),
                        (false, '\\') => escaped = true,
                        (false, '"') => {
                            end = Some(i);
                            break;
                        }
                        (false, _) => {}
                    }
                }
                let end = end.unwrap_or_else(|| panic!("unterminated label value: {line}"));
                rest = after[end + 1..]
                    .strip_prefix(',')
                    .unwrap_or(&after[end + 1..]);
            }
        }
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate series: {line}"
        );
    }
    samples
}

#[tokio::test(flavor = "multi_thread")]
async fn an_arrival_wakes_the_daemon_which_launches_serves_metrics_and_stops_cleanly() {
    let name = support::unique_name("daemon");
    let dir = support::deploy_with_example_payers(&name).await;
    let sdk = support::sdk_config().await;
    let clients = Clients::new(&sdk);
    let names = Names::new(&name);

    // A pass interval far beyond this test: only an arrival can trigger the launch.
    let mut daemon = Daemon::start(
        &name,
        &["--output", "json"],
        &[
            "--interval",
            "10m",
            "--reconcile-interval",
            "10m",
            "--lease-ttl",
            "6s",
            "--batch-window-ms",
            "200",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let started = wait_for(&daemon, "started", |v| event(v, "started"));
    let url = started["metrics"]
        .as_str()
        .expect("the metrics URL")
        .to_owned();
    wait_for(&daemon, "first pass", |v| event(v, "pass"));

    // Claims launch on demand, so the instance has a price and today has a cost.
    let job = "cedar-plan:2029-03:claims";
    let job_id = mayfly::job::job_key("cedar-plan", job);
    let submitted = Instant::now();
    let args = [
        "submit",
        "--job-id",
        job,
        "--payer",
        "cedar-plan",
        "--kind",
        "claims",
        "--batch",
        "2029-03",
    ];
    assert!(mayfly(&name, &args).status.success());
    let woke = wait_for(&daemon, "a pass that launched the job", |v| {
        event(v, "pass") && v["launched"] == 1 && v["ingested"] == 1
    });
    assert_eq!(
        woke["reconciled"], false,
        "an arrival's pass skips reconcile"
    );
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), names.jobs_table());
    let running = ledger.get(&job_id).await.unwrap().expect("the job");
    assert_eq!(running.state, JobState::Running);
    let instance = running.attempts[0]
        .instance_id
        .clone()
        .expect("an instance");
    support::assert_launch_shape(&clients.ec2, &instance, names.cluster()).await;
    println!(
        "arrival → launched in {:.2}s (pass interval 10m)",
        submitted.elapsed().as_secs_f64()
    );

    let samples = parse_prometheus(&scrape(&url));
    let get = |k: &str| {
        *samples
            .get(k)
            .unwrap_or_else(|| panic!("no {k} in {samples:#?}"))
    };
    assert!(get("mayfly_passes_total") >= 2.0);
    assert_eq!(get("mayfly_launches_total"), 1.0);
    assert_eq!(get("mayfly_jobs_ingested_total"), 1.0);
    assert_eq!(get("mayfly_jobs{state=\"running\"}"), 1.0);
    assert!(get("mayfly_aws_calls_total{operation=\"EC2.RunInstances\"}") >= 1.0);
    assert!(get("mayfly_aws_calls_total{operation=\"SQS.ReceiveMessage\"}") >= 1.0);
    assert!(get("mayfly_pass_duration_seconds") > 0.0);
    assert!(
        get("mayfly_cost_today_usd") > 0.0,
        "a running instance costs"
    );
    assert_eq!(get("mayfly_paused_payers"), 0.0);
    assert_eq!(get("mayfly_launch_failures_total{class=\"capacity\"}"), 0.0);
    assert!(
        !samples.keys().any(|k| k.starts_with("mayfly_queued_jobs{")),
        "nothing is queued"
    );

    assert_eq!(daemon.terminate().code(), Some(0));
    wait_for(&daemon, "stopped", |v| event(v, "stopped"));
    assert!(ledger
        .by_state(JobState::Launching)
        .await
        .unwrap()
        .is_empty());
    std::fs::remove_dir_all(&dir).ok();
}
