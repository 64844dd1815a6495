//! What the `mayfly` binary says when the deployment is not where it looks, against the
//! emulator: a deployment nobody created is named, with how to choose another and how to
//! create it, for the queue commands and the table commands alike; and a throttle is a
//! throttle, never a missing deployment.

mod support;

use std::process::Output;

use mayfly::ratelimit::Rate;
use mayfly_testbed::faultproxy::{FaultProxy, ProxyConfig};
use support::mayfly;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unknown_deployment_is_named_with_how_to_choose_or_create_one() {
    // Nothing was deployed under this name.
    let name = support::unique_name("nope");
    let commands: [&[&str]; 6] = [
        // Queue commands: they look the queues up first.
        &["status"],
        &["tick"],
        &[
            "submit",
            "--job-id",
            "a:1:claims",
            "--payer",
            "a",
            "--kind",
            "claims",
            "--batch",
            "1",
        ],
        // Table commands.
        &["payers", "list"],
        &["explain", "a:1:claims"],
        &["cost", "report"],
    ];
    for args in commands {
        let out = mayfly(&name, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        for needed in [
            format!("deployment `{name}` not found"),
            "--name or MAYFLY_NAME".to_owned(),
            format!("DeploymentName={name}"),
            "infra/mayfly.yaml".to_owned(),
            format!("scripts/emulator.sh deploy {name}"),
        ] {
            assert!(err.contains(&needed), "{args:?}: `{needed}` not in: {err}");
        }
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("DispatchFailure"), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_never_suggests_the_deployment_is_missing() {
    let name = support::unique_name("thr");
    support::deploy(&name);
    // One call of each from a full bucket, then (practically) none.
    let starved = Rate {
        burst: 1.0,
        per_sec: 0.0001,
    };
    let proxy = FaultProxy::start(
        ProxyConfig::new(support::endpoint())
            .bucket("GetQueueUrl", starved)
            .bucket("Scan", starved),
    )
    .await
    .expect("start the fault proxy");
    let url = proxy.url();
    let run = |args: &'static [&'static str]| {
        let (name, url) = (name.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            let mut all = vec!["--endpoint-url", url.as_str()];
            all.extend(args);
            mayfly(&name, &all)
        })
    };
    // The queue commands look up four queues: the second lookup is throttled.
    let out = run(&["status"]).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("SQS is throttling (ThrottlingException)"),
        "{err}"
    );
    // The first scan passes; the second is throttled.
    let first = run(&["payers", "list"]).await.unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let out = run(&["payers", "list"]).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let table_err = stderr(&out);
    assert!(
        table_err.contains("config table: DynamoDB is throttling"),
        "{table_err}"
    );
    for err in [err, table_err] {
        for wrong in [
            "not found",
            "MAYFLY_NAME",
            "DeploymentName",
            "does not exist",
        ] {
            assert!(!err.contains(wrong), "{err}");
        }
    }
}
