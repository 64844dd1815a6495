//! `mayfly run` against the emulator: two daemons, one leader. Killing the leader with SIGKILL
//! mid-pass, the standby takes over within the lease TTL plus one pass and launches a job;
//! SIGTERM ends a daemon with exit 0 and releases the lease.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mayfly::aws::dynamo::DynamoLedger;
use mayfly::aws::Clients;
use mayfly::job::JobState;
use mayfly::lease::{DynamoLeaseStore, LeaseStore};
use mayfly::names::Names;
use mayfly::ports::Ledger;
use support::mayfly;

struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Daemon {
    fn start(name: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mayfly"))
            .args([
                "--name",
                name,
                "run",
                "--interval",
                "1s",
                "--lease-ttl",
                "6s",
            ])
            .envs(support::child_env())
            .current_dir(support::repo())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mayfly run");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        Daemon { child, lines }
    }

    fn saw(&self, prefix: &str) -> Option<Instant> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| l.starts_with(prefix))
            .map(|(t, _)| *t)
    }

    fn count(&self, prefix: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.starts_with(prefix))
            .count()
    }

    fn wait_for(&self, prefix: &str, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            if let Some(t) = self.saw(prefix) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "no `{prefix}` line within {within:?}: {:?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_takes_over_from_a_killed_leader_and_sigterm_exits_cleanly() {
    let name = support::unique_name("run");
    let dir = support::deploy_with_example_payers(&name).await;
    let sdk = support::sdk_config().await;
    let clients = Clients::new(&sdk);
    let names = Names::new(&name);

    let mut first = Daemon::start(&name);
    first.wait_for("leader", Duration::from_secs(30));
    let mut second = Daemon::start(&name);
    second.wait_for("standby", Duration::from_secs(30));

    // Kill the leader with SIGKILL just after a pass starts.
    let passes = first.count("pass-start");
    let deadline = Instant::now() + Duration::from_secs(30);
    while first.count("pass-start") == passes {
        assert!(Instant::now() < deadline, "the leader runs passes");
        std::thread::sleep(Duration::from_millis(10));
    }
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let killed = Instant::now();
    let job = "cedar-plan:2029-02:eligibility";
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

    let took_over = second.wait_for("leader", Duration::from_secs(60));
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), names.jobs_table());
    let deadline = Instant::now() + Duration::from_secs(60);
    let acted = loop {
        if let Some(j) = ledger.get(job).await.unwrap() {
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
    assert!(second.saw("pass").is_some());

    // SIGTERM: the current pass finishes, the lease is released, exit 0.
    let pid = second.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = second.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    second.wait_for("stopped", Duration::from_secs(5));
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
