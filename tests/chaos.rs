//! The chaos test: mayfly's promise — never launch twice, never lose a job, never leave an
//! instance billing — under faults, against the emulator and the local fleet.
//!
//! Three schedulers run `mayfly tick` in loops, each pass through the fault-injecting proxy
//! (EC2's token buckets, 5xx, timeouts, responses lost after the call was applied), and any
//! pass may be killed with SIGKILL at any moment. The fleet crashes jobs mid-run, never boots
//! some instances, hangs others past their deadline, and sends spot notices. When every job
//! is terminal (or the deadline passes), two clean reap passes run and the checks follow:
//! at most one instance per (job, attempt), no job run to exit 0 on more than one instance
//! (from the fleet's own record of what it ran), every job terminal with a reason, no managed
//! instance running, the ledger consistent with EC2. Lost responses of RunInstances and
//! ReceiveMessage are frequent and held before the connection drops, so kills land between
//! a launch and its ledger write and while events are held in flight; jobs are shorter than
//! a pass. The same workload first runs clean, so
//! the AWS calls per job can be compared (retry amplification).
//!
//! Small in CI (`cargo test --test chaos`); larger runs take arguments:
//!
//!   cargo test --test chaos -- --jobs 200 --seed 7
//!
//! `--bin-dir DIR` runs the `mayfly` and `mayfly-fleet` binaries found in DIR instead of the
//! build's (a copy, so that long runs are not disturbed by rebuilding meanwhile);
//! `--no-clean` skips the clean run (for seed sweeps that want only the checks).
//!
//! It runs the local fleet's binary, of the mayfly-testbed package: `cargo test --workspace`
//! builds it; run alone, this test needs `cargo build -p mayfly-testbed` first.
//!
//! A custom harness (no libtest), so unknown arguments are ignored, not errors.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mayfly::aws::dynamo::DynamoLedger;
use mayfly::aws::ec2::Ec2Compute;
use mayfly::aws::Clients;
use mayfly::job::{Job, JobState};
use mayfly::names::Names;
use mayfly::ports::{Compute, Ledger, ManagedInstance};
use mayfly::ratelimit::Ec2Limits;
use mayfly_testbed::faultproxy::{FaultProxy, FaultRates, ProxyConfig};

/// splitmix64: the harness's only source of randomness, so a seed replays a run's choices.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug, Clone)]
struct Config {
    jobs: usize,
    seed: u64,
    schedulers: usize,
    /// Chance that a pass is killed with SIGKILL at a random moment.
    kill_rate: f64,
    /// Share of jobs whose first attempt meets a fleet fault.
    fleet_fault_rate: f64,
    rates: FaultRates,
    /// Where `mayfly` and `mayfly-fleet` are (default: this build's).
    bin_dir: Option<PathBuf>,
    /// Skip the clean run (`--no-clean`): seed sweeps that only want the checks.
    no_clean: bool,
    /// Lost responses of RunInstances and ReceiveMessage (applied upstream, answer lost).
    launch_and_receive_loss: f64,
    deadline: Duration,
}

impl Config {
    fn from_args() -> Self {
        let mut c = Config {
            jobs: 12,
            seed: 1,
            schedulers: 3,
            kill_rate: 0.3,
            fleet_fault_rate: 0.4,
            rates: FaultRates {
                error: 0.02,
                timeout: 0.01,
                lost_response: 0.02,
            },
            launch_and_receive_loss: 0.1,
            bin_dir: None,
            no_clean: false,
            deadline: Duration::from_secs(900),
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let value = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        if let Some(n) = value("--jobs").and_then(|v| v.parse().ok()) {
            c.jobs = n;
        }
        if let Some(s) = value("--seed").and_then(|v| v.parse().ok()) {
            c.seed = s;
        }
        if let Some(s) = value("--deadline-secs").and_then(|v| v.parse().ok()) {
            c.deadline = Duration::from_secs(s);
        }
        c.bin_dir = value("--bin-dir").map(PathBuf::from);
        c.no_clean = args.iter().any(|a| a == "--no-clean");
        c
    }

    fn mayfly_bin(&self) -> PathBuf {
        self.bin_dir.as_ref().map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_mayfly")),
            |d| d.join("mayfly"),
        )
    }

    fn fleet_bin(&self) -> PathBuf {
        self.bin_dir
            .as_ref()
            .map_or_else(support::fleet_bin, |d| d.join("mayfly-fleet"))
    }

    /// `mayfly --name NAME ARGS…`, run to completion.
    fn mayfly(&self, name: &str, args: &[&str]) -> std::process::Output {
        std::process::Command::new(self.mayfly_bin())
            .arg("--name")
            .arg(name)
            .args(args)
            .envs(support::child_env())
            .current_dir(support::repo())
            .output()
            .expect("run mayfly")
    }
}

/// The chaos payers: the shortest deadlines a profile allows, so failures surface within a
/// minute; retries with short backoff; no circuit breaker (never-booting instances are
/// injected on purpose).
fn write_profiles(name: &str, subnets: &[String], sgs: &[String], dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let kinds: &[(&str, &[(&str, u8)])] = &[
        (
            "chaos-a",
            &[("eligibility", 0), ("members", 1), ("claims", 2)],
        ),
        ("chaos-b", &[("members", 0), ("claims", 1)]),
    ];
    for (payer, ks) in kinds {
        let mut text = format!(
            r#"payer_id = "{payer}"
[caps]
max_instances = 6
max_vcpus = 48

[launch]
image_id = "ami-0a1b2c3d4e5f60003"
subnets = [{}]
security_groups = [{}]
instance_profile = "{name}-instance"

[timeouts]
boot = "1m"
heartbeat = "30s"
max_runtime = "1m"

[circuit_breaker]
boot_failures = 0
"#,
            list(subnets),
            list(sgs)
        );
        for (kind, tier) in *ks {
            text.push_str(&format!(
                r#"
[kinds.{kind}]
tier = {tier}
command = ["payer-etl", "{kind}"]
[kinds.{kind}.compute]
instance_types = ["m7i.large", "m6i.large"]
[kinds.{kind}.retry]
max_attempts = 4
retryable_exit_codes = [75]
backoff = "2s"
backoff_max = "8s"
"#
            ));
        }
        std::fs::write(dir.join(format!("{payer}.toml")), text).unwrap();
    }
}

/// The workload: batches of chaos-a (three chained tiers) and chaos-b (two).
fn workload(n: usize) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    let mut b = 0;
    while out.len() < n {
        b += 1;
        for (payer, kinds) in [
            ("chaos-a", &["eligibility", "members", "claims"][..]),
            ("chaos-b", &["members", "claims"][..]),
        ] {
            for kind in kinds {
                if out.len() < n {
                    let batch = format!("b{b}");
                    out.push((
                        format!("{payer}:{batch}:{kind}"),
                        payer.to_owned(),
                        kind.to_string(),
                        batch,
                    ));
                }
            }
        }
    }
    out
}

const FLEET_FAULTS: [&str; 5] = ["crash", "never-start", "hang", "spot", "exit:75"];

#[derive(Debug, Default)]
struct Outcome {
    jobs: usize,
    elapsed: Duration,
    faults: BTreeMap<String, u64>,
    aws_calls: u64,
    /// Mutating calls: RunInstances, TerminateInstances and ledger writes (PutItem,
    /// UpdateItem, DeleteItem, TransactWriteItems), as the proxy received them.
    mutating_calls: u64,
    /// (job, attempt) pairs in the ledger at the end.
    attempts: u64,
    /// Instances launched in launch groups, and all instances.
    grouped_instances: usize,
    instances: usize,
    passes: u64,
    duplicates: Vec<String>,
    /// Jobs the fleet ran to exit 0 on more than one instance (its own record).
    succeeded_twice: Vec<String>,
    /// How long after an instance's end its job's next attempt launched, for attempts ended
    /// without a `finished` event (seconds; the grace, the wait for in-flight events, the
    /// retry backoff and the next pass).
    retry_delays: Vec<f64>,
    lost: Vec<String>,
    orphans_left: Vec<String>,
    without_reason: Vec<String>,
    inconsistent: Vec<String>,
    by_state: BTreeMap<String, usize>,
}

impl Outcome {
    fn passed(&self) -> bool {
        self.duplicates.is_empty()
            && self.succeeded_twice.is_empty()
            && self.lost.is_empty()
            && self.orphans_left.is_empty()
            && self.without_reason.is_empty()
            && self.inconsistent.is_empty()
    }
}

/// Terminal, or blocked behind a dead lower-tier job: nothing more happens to it without an
/// operator (`mayfly jobs retry` on the dead job releases it).
fn settled(j: &Job) -> bool {
    j.state.is_terminal() || j.state == JobState::Blocked
}

async fn all_jobs(ledger: &DynamoLedger) -> Vec<Job> {
    let mut jobs = Vec::new();
    for s in JobState::ALL {
        jobs.extend(ledger.by_state(s).await.unwrap_or_default());
    }
    jobs
}

/// One run: deploy, submit, run the schedulers (and the monkey, unless `clean`), check.
async fn run(cfg: &Config, clean: bool) -> Outcome {
    let started = Instant::now();
    let label = if clean { "clean" } else { "chaos" };
    let name = support::unique_name(label);
    // A short visibility timeout keeps the run short: a killed pass hides the events it
    // received, and every verdict waits for them, for this long (production: 6 minutes).
    support::deploy_with(&name, &[("EventsVisibilityTimeout", "30")]);
    let sdk = support::sdk_config().await;
    let clients = Clients::new(&sdk);
    let names = Names::new(&name);
    let (subnets, sgs) = support::emulator_network(&clients.ec2).await;
    let dir = std::env::temp_dir().join(format!("mayfly-{name}"));
    write_profiles(&name, &subnets, &sgs, &dir);
    let apply = cfg.mayfly(&name, &["payers", "apply", &dir.display().to_string()]);
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );

    let mut rng = Rng(cfg.seed ^ if clean { 0 } else { 0x5eed });
    let jobs = workload(cfg.jobs);
    let file = dir.join("jobs.jsonl");
    let lines: Vec<String> = jobs
        .iter()
        .map(|(id, payer, kind, batch)| {
            serde_json::json!({"job_id": id, "payer_id": payer, "kind": kind, "batch": batch})
                .to_string()
        })
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let submit = cfg.mayfly(&name, &["submit", "--file", &file.display().to_string()]);
    assert!(
        submit.status.success(),
        "{}",
        String::from_utf8_lossy(&submit.stderr)
    );

    // Fleet faults on first attempts: each kind once, then at random.
    let mut outcome = Outcome {
        jobs: jobs.len(),
        ..Outcome::default()
    };
    let mut fleet_faults = Vec::new();
    if !clean {
        for (i, (id, payer, _, _)) in jobs.iter().enumerate() {
            let fault = if i < FLEET_FAULTS.len() {
                Some(FLEET_FAULTS[i])
            } else if rng.unit() < cfg.fleet_fault_rate {
                Some(FLEET_FAULTS[rng.below(FLEET_FAULTS.len() as u64) as usize])
            } else {
                None
            };
            if let Some(f) = fault {
                fleet_faults.push(format!("{}@1={f}", mayfly::job::job_key(payer, id)));
                *outcome.faults.entry(format!("fleet {f}")).or_default() += 1;
            }
        }
    }
    let work = std::env::temp_dir().join(format!("mayfly-{name}-fleet"));
    let mut fleet = std::process::Command::new(cfg.fleet_bin());
    fleet
        // Jobs shorter than a pass: events arrive while the launching pass is still going.
        .args(["--name", &name, "--job-seconds", "1", "--poll-ms", "300"])
        .args(["--spot-warning-secs", "2", "-v"])
        .args(["--max-runtime", &(cfg.deadline.as_secs() + 120).to_string()])
        .arg("--work-dir")
        .arg(&work)
        .arg("--venv")
        .arg(support::venv())
        .envs(support::child_env())
        .current_dir(support::repo())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("fleet.log")).expect("fleet log"));
    for f in &fleet_faults {
        fleet.args(["--fault", f]);
    }
    let mut fleet = fleet.spawn().expect("start the fleet");

    let rates = if clean {
        FaultRates::default()
    } else {
        cfg.rates
    };
    let mut proxy = ProxyConfig::new(support::endpoint())
        .seed(cfg.seed)
        .ec2_buckets()
        .rates(rates)
        .timeout_hold(Duration::from_secs(3))
        // A lost response is held before the connection drops, so a pass killed meanwhile
        // dies between the applied call and its next step: between RunInstances and the
        // ledger write, or holding the events a ReceiveMessage made invisible.
        .lost_response_hold(Duration::from_millis(1500));
    if !clean {
        for op in ["RunInstances", "ReceiveMessage"] {
            proxy = proxy.op_rates(
                op,
                FaultRates {
                    lost_response: cfg.launch_and_receive_loss,
                    ..cfg.rates
                },
            );
        }
    }
    let proxy = FaultProxy::start(proxy)
        .await
        .expect("start the fault proxy");
    let proxy_url = proxy.url();

    // The schedulers: each a loop of passes, any of which may be killed mid-step.
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicU64::new(0));
    let passes = Arc::new(AtomicU64::new(0));
    let mut slots = Vec::new();
    for slot in 0..cfg.schedulers {
        let (stop, kills, passes) = (stop.clone(), kills.clone(), passes.clone());
        let (name, url, bin) = (name.clone(), proxy_url.clone(), cfg.mayfly_bin());
        let mut rng = Rng(cfg.seed.wrapping_mul(31).wrapping_add(slot as u64));
        let kill_rate = if clean { 0.0 } else { cfg.kill_rate };
        slots.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut child = tokio::process::Command::new(&bin)
                    .args(["--name", &name, "--endpoint-url", &url, "tick"])
                    .args(["--lost-grace", "70s", "--orphan-grace", "10s"])
                    .envs(support::child_env())
                    .current_dir(support::repo())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("start a pass");
                passes.fetch_add(1, Ordering::Relaxed);
                if rng.unit() < kill_rate {
                    let at = Duration::from_millis(rng.below(2500));
                    tokio::select! {
                        _ = child.wait() => {}
                        () = tokio::time::sleep(at) => {
                            if child.start_kill().is_ok() {
                                kills.fetch_add(1, Ordering::Relaxed);
                            }
                            child.wait().await.ok();
                        }
                    }
                } else {
                    child.wait().await.ok();
                }
                tokio::time::sleep(Duration::from_millis(300 + rng.below(700))).await;
            }
        }));
    }

    let ledger = DynamoLedger::new(clients.dynamodb.clone(), names.jobs_table());
    let deadline = Instant::now() + cfg.deadline;
    let mut last_report = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = all_jobs(&ledger).await;
        let done = now.iter().filter(|j| settled(j)).count();
        if last_report.elapsed() > Duration::from_secs(20) {
            eprintln!(
                "[{label}] {:>4}s: {done}/{} jobs settled, {} passes killed",
                started.elapsed().as_secs(),
                jobs.len(),
                kills.load(Ordering::Relaxed)
            );
            last_report = Instant::now();
        }
        if done == jobs.len() || Instant::now() > deadline {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for s in slots {
        s.await.ok();
    }
    let stats = proxy.counters();
    outcome.aws_calls = stats.total.requests;
    outcome.mutating_calls = [
        "RunInstances",
        "TerminateInstances",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "TransactWriteItems",
    ]
    .iter()
    .map(|op| stats.operation(op).requests)
    .sum();
    outcome.passes = passes.load(Ordering::Relaxed);
    if !clean {
        outcome
            .faults
            .insert("scheduler kill -9".into(), kills.load(Ordering::Relaxed));
        for (kind, n) in [
            ("proxy throttle", stats.total.throttled),
            ("proxy 5xx", stats.total.errors),
            ("proxy timeout", stats.total.timeouts),
            ("proxy lost response", stats.total.lost_responses),
        ] {
            outcome.faults.insert(kind.into(), n);
        }
    }

    // Two clean reap passes: the first marks what is left, the second terminates it.
    for _ in 0..2 {
        let reap = cfg.mayfly(&name, &["reap", "--orphan-grace", "0s"]);
        if !reap.status.success() {
            eprintln!("reap: {}", String::from_utf8_lossy(&reap.stdout));
        }
    }
    fleet.kill().ok();
    fleet.wait().ok();

    // The checks, against the emulator and the ledger.
    let compute = Ec2Compute::new(clients.ec2.clone(), Arc::new(Ec2Limits::unlimited()));
    let instances: Vec<ManagedInstance> = compute.list_managed(&name).await.expect("describe");
    let ledger_jobs = all_jobs(&ledger).await;
    let by_id: BTreeMap<&str, &Job> = ledger_jobs.iter().map(|j| (j.job_id.as_str(), j)).collect();
    outcome.attempts = ledger_jobs.iter().map(|j| j.attempts.len() as u64).sum();
    // An instance of a launch group carries the group, not a job: its job is the attempt of
    // that group whose launch index is the instance's.
    let grouped: BTreeMap<(String, u32), (String, String)> = ledger_jobs
        .iter()
        .flat_map(|j| {
            j.attempts.iter().filter_map(|a| {
                Some((
                    (a.launch_group.clone()?, a.launch_index?),
                    (j.job_id.clone(), a.number.to_string()),
                ))
            })
        })
        .collect();
    let owner = |i: &ManagedInstance| -> Option<(String, String)> {
        if let Some(job) = i.tag("mayfly:job-id") {
            return Some((
                job.to_owned(),
                i.tag("mayfly:attempt").unwrap_or("-").to_owned(),
            ));
        }
        let key = (i.tag("mayfly:group")?.to_owned(), i.launch_index?);
        grouped.get(&key).cloned()
    };
    outcome.instances = instances.len();
    outcome.grouped_instances = instances
        .iter()
        .filter(|i| i.tag("mayfly:group").is_some())
        .count();
    let mut per_attempt: BTreeMap<(String, String), Vec<&str>> = BTreeMap::new();
    for i in &instances {
        let key = owner(i).unwrap_or_else(|| ("-".to_owned(), "-".to_owned()));
        per_attempt.entry(key).or_default().push(&i.instance_id);
        if i.state.is_live() {
            outcome.orphans_left.push(i.instance_id.clone());
        }
    }
    for ((job, attempt), ids) in &per_attempt {
        if ids.len() > 1 {
            outcome
                .duplicates
                .push(format!("{job} attempt {attempt}: {}", ids.join(", ")));
        }
    }
    // The fleet's own record of what it ran: a job that exited 0 on two instances ran twice,
    // whatever the ledger says.
    let mut successes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for run in mayfly_testbed::fleet::runs(&work).expect("the fleet's record") {
        if run.exit_code == 0 {
            successes
                .entry(run.job_id)
                .or_default()
                .insert(format!("{} (attempt {})", run.instance_id, run.attempt));
        }
    }
    for (job, on) in &successes {
        if on.len() > 1 {
            outcome.succeeded_twice.push(format!(
                "{job} exited 0 on {}",
                on.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    for j in &ledger_jobs {
        for pair in j.attempts.windows(2) {
            let (ended, next) = (&pair[0], &pair[1]);
            if ended.exit_code.is_some() || ended.instance_id.is_none() {
                continue;
            }
            if let (Some(gone), Some(launched)) = (ended.gone_at, next.launched_at) {
                outcome
                    .retry_delays
                    .push((launched - gone).num_milliseconds() as f64 / 1000.0);
            }
        }
    }
    // mayfly names each job by its payer and the producer's id.
    let submitted: BTreeSet<String> = jobs
        .iter()
        .map(|(id, payer, ..)| mayfly::job::job_key(payer, id))
        .collect();
    for id in &submitted {
        match by_id.get(id.as_str()) {
            None => outcome.lost.push(format!("{id}: not in the ledger")),
            Some(j) if !settled(j) => outcome
                .lost
                .push(format!("{id}: still {} ({:?})", j.state, j.reason)),
            Some(j) => {
                *outcome.by_state.entry(j.state.to_string()).or_default() += 1;
                if j.state != JobState::Succeeded && j.reason.as_deref().is_none_or(str::is_empty) {
                    outcome.without_reason.push(id.to_string());
                }
            }
        }
    }
    let by_instance: BTreeMap<&str, &ManagedInstance> = instances
        .iter()
        .map(|i| (i.instance_id.as_str(), i))
        .collect();
    for j in &ledger_jobs {
        for a in &j.attempts {
            let Some(iid) = a.instance_id.as_deref() else {
                continue;
            };
            match by_instance.get(iid) {
                None => outcome.inconsistent.push(format!(
                    "{} attempt {}: instance {iid} is not in EC2",
                    j.job_id, a.number
                )),
                Some(i) => {
                    if owner(i) != Some((j.job_id.clone(), a.number.to_string())) {
                        outcome.inconsistent.push(format!(
                            "{} attempt {}: instance {iid} is tagged for another attempt",
                            j.job_id, a.number
                        ));
                    }
                }
            }
        }
    }
    for i in &instances {
        let Some((job, _)) = owner(i) else {
            if let Some(group) = i.tag("mayfly:group") {
                outcome.inconsistent.push(format!(
                    "{}: of launch group {group}, index {:?}: no attempt of the ledger",
                    i.instance_id, i.launch_index
                ));
            }
            continue;
        };
        if !by_id.contains_key(job.as_str()) {
            outcome.inconsistent.push(format!(
                "{}: tagged for job {job}, not in the ledger",
                i.instance_id
            ));
        }
    }
    outcome.elapsed = started.elapsed();
    if outcome.passed() {
        std::fs::remove_dir_all(&dir).ok();
        std::fs::remove_dir_all(&work).ok();
    } else {
        eprintln!(
            "[{label}] deployment {name}: profiles, jobs and the fleet's log kept in {}",
            dir.display()
        );
    }
    outcome
}

fn main() {
    let cfg = Config::from_args();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    eprintln!(
        "chaos: {} jobs, seed {}, {} schedulers{}",
        cfg.jobs,
        cfg.seed,
        cfg.schedulers,
        if cfg.no_clean {
            ""
        } else {
            "; clean run first"
        }
    );
    // Without the clean run the call ratios compare with nothing (they print as 0).
    let clean = if cfg.no_clean {
        Outcome::default()
    } else {
        rt.block_on(run(&cfg, true))
    };
    let chaos = rt.block_on(run(&cfg, false));

    let per_job = |o: &Outcome| o.aws_calls as f64 / o.jobs.max(1) as f64;
    let per_pass = |o: &Outcome| o.aws_calls as f64 / o.passes.max(1) as f64;
    let mutating = |o: &Outcome| o.mutating_calls as f64 / o.attempts.max(1) as f64;
    println!("chaos run: {} jobs, seed {}", chaos.jobs, cfg.seed);
    println!(
        "  jobs by end state:    {:?} ({} passes, {} killed)",
        chaos.by_state,
        chaos.passes,
        chaos.faults.get("scheduler kill -9").copied().unwrap_or(0)
    );
    println!("  faults injected:");
    for (kind, n) in &chaos.faults {
        println!("    {kind:<22} {n}");
    }
    println!(
        "  launch groups:        {} of {} instances launched in groups (clean run {} of {})",
        chaos.grouped_instances, chaos.instances, clean.grouped_instances, clean.instances
    );
    println!("  duplicates:           {}", chaos.duplicates.len());
    println!(
        "  succeeded more than once: {} (clean run {})",
        chaos.succeeded_twice.len(),
        clean.succeeded_twice.len()
    );
    let mut delays = chaos.retry_delays.clone();
    delays.sort_by(f64::total_cmp);
    if let (Some(median), Some(worst)) = (delays.get(delays.len() / 2), delays.last()) {
        println!(
            "  retry after an instance ended without `finished`: median {median:.0}s, worst \
             {worst:.0}s over {} attempt(s) (grace 70s, events visibility 30s, backoff 2-8s)",
            delays.len()
        );
    }
    println!("  lost jobs:            {}", chaos.lost.len());
    println!("  orphans left:         {}", chaos.orphans_left.len());
    println!(
        "  AWS calls per job:    {:.1} (clean run {:.1}); retry amplification {:.2}x",
        per_job(&chaos),
        per_job(&clean),
        per_job(&chaos) / per_job(&clean).max(f64::MIN_POSITIVE)
    );
    println!(
        "  mutating calls per (job, attempt): {:.2} (clean run {:.2}); {:.2}x — RunInstances, \
         TerminateInstances and ledger writes, over {} attempts ({} clean)",
        mutating(&chaos),
        mutating(&clean),
        mutating(&chaos) / mutating(&clean).max(f64::MIN_POSITIVE),
        chaos.attempts,
        clean.attempts
    );
    println!(
        "  AWS calls per pass:   {:.1} (clean run {:.1}); {:.2}x — the rest is the longer run \
         (recovery waits on deadlines and backoff)",
        per_pass(&chaos),
        per_pass(&clean),
        per_pass(&chaos) / per_pass(&clean).max(f64::MIN_POSITIVE)
    );
    println!(
        "  wall time:            {:.0}s (clean run {:.0}s)",
        chaos.elapsed.as_secs_f64(),
        clean.elapsed.as_secs_f64()
    );
    let mut failures = Vec::new();
    for (what, o) in [("clean", &clean), ("chaos", &chaos)] {
        for (check, list) in [
            ("duplicate instances", &o.duplicates),
            ("jobs that succeeded more than once", &o.succeeded_twice),
            ("lost jobs", &o.lost),
            ("orphans left running", &o.orphans_left),
            ("terminal jobs without a reason", &o.without_reason),
            ("ledger/EC2 inconsistencies", &o.inconsistent),
        ] {
            for item in list {
                failures.push(format!("{what}: {check}: {item}"));
            }
        }
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("FAILED {f}");
        }
        std::process::exit(1);
    }
    println!("chaos: every check held");
}
