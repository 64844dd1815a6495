//! `mayfly run` against the emulator: two daemons, one leader. Killing the leader with SIGKILL
//! mid-pass, the standby takes over within the lease TTL plus one pass and launches a job;
//! SIGTERM ends a daemon with exit 0 and releases the lease.

mod support;

use std::time::{Duration, Instant};

use mayfly::aws::dynamo::DynamoLedger;
use mayfly::aws::Clients;
use mayfly::job::JobState;
use mayfly::lease::{DynamoLeaseStore, LeaseStore};
use mayfly::names::Names;
use mayfly::ports::Ledger;
use support::daemon::Daemon;
use support::mayfly;

/// A daemon on a 1 s pass interval and a 6 s lease.
fn start(name: &str) -> Daemon {
    Daemon::start(name, &[], &["--interval", "1s", "--lease-ttl", "6s"])
}

/// Whether a (text) line is the event `name`.
fn is(name: &'static str) -> impl Fn(&str) -> bool {
    move |line| line.split_whitespace().next() == Some(name)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_takes_over_from_a_killed_leader_and_sigterm_exits_cleanly() {
    let name = support::unique_name("run");
    let dir = support::deploy_with_example_payers(&name).await;
    let sdk = support::sdk_config().await;
    let clients = Clients::new(&sdk);
    let names = Names::new(&name);

    let mut first = start(&name);
    first.wait_for("leader", Duration::from_secs(30), is("leader"));
    let mut second = start(&name);
    second.wait_for("standby", Duration::from_secs(30), is("standby"));

    // Kill the leader with SIGKILL just after a pass starts.
    let passes = first.count(is("pass-start"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while first.count(is("pass-start")) == passes {
        assert!(Instant::now() < deadline, "the leader runs passes");
        std::thread::sleep(Duration::from_millis(10));
    }
    first.kill();
    let killed = Instant::now();
    let job = "cedar-plan:2029-02:eligibility";
    let job_id = mayfly::job::job_key("cedar-plan", job);
    assert!(mayfly(
        &name,
        &[
            "submit",
            "--job-id",
            job,
            "--payer",
            "cedar-plan",
            "--kind",
            "eligibility",
            "--batch",
            "2029-02"
        ]
    )
    .status
    .success());

    let took_over = second
        .wait_for("leader", Duration::from_secs(60), is("leader"))
        .0;
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), names.jobs_table());
    let deadline = Instant::now() + Duration::from_secs(60);
    let acted = loop {
        if let Some(j) = ledger.get(&job_id).await.unwrap() {
            if j.state == JobState::Running {
                break Instant::now();
            }
        }
        assert!(Instant::now() < deadline, "the new leader launches the job");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "failover: took over {:.1}s after the kill, launched the job {:.1}s after it \
         (lease TTL 6s + one pass at 1s interval = 7s bound)",
        (took_over - killed).as_secs_f64(),
        (acted - killed).as_secs_f64()
    );
    assert!(second.saw(is("pass")).is_some());

    // SIGTERM: the current pass finishes, the lease is released, exit 0.
    assert_eq!(second.terminate().code(), Some(0));
    second.wait_for("stopped", Duration::from_secs(5), is("stopped"));
    let lease = DynamoLeaseStore::new(clients.dynamodb.clone(), names.jobs_table())
        .read("scheduler")
        .await
        .unwrap()
        .expect("the lease record");
    assert_eq!(lease.holder, "", "released");
    // No job left launching.
    assert!(ledger
        .by_state(JobState::Launching)
        .await
        .unwrap()
        .is_empty());
    std::fs::remove_dir_all(&dir).ok();
}
