//! Planner benchmark (DESIGN §7): plan 100,000 queued jobs of 1,000 payers and compare with a
//! bare sort of the same 100,000 rank keys in the same run; report peak RSS.
//!
//! Run: `cargo bench -p mayfly-core --bench plan` (add `-- --jobs N --payers N --budget N`).
//! Targets: plan ≤ 100 ms, ≤ 5× the sort, peak RSS ≤ 64 MiB.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use mayfly_core::catalog::{Arch, Catalog};
use mayfly_core::job::{Job, JobInput, JobRequest};
use mayfly_core::plan::{plan, rank_key, Snapshot};
use mayfly_core::profile::{
    CapacityPolicy, ComputeSpec, GlobalCaps, JobKind, LaunchSettings, Payer, PayerCaps,
    PayerProfile, RetryPolicy, Timeouts, ValidateContext,
};
use mayfly_core::summary::{Interner, JobSummary};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A tiny deterministic generator, so every run plans the same workload.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn kind(tier: u8, compute: ComputeSpec) -> JobKind {
    JobKind {
        tier,
        description: String::new(),
        command: vec!["/opt/payer-etl/bin/run".into()],
        compute,
        max_runtime: None,
        retry: RetryPolicy::default(),
        capacity: None,
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
    }
}

fn payer(i: usize, rng: &mut Lcg) -> PayerProfile {
    let mut kinds = BTreeMap::new();
    kinds.insert(
        "eligibility".to_owned(),
        kind(
            0,
            ComputeSpec {
                instance_types: Some(vec!["c7i.large".into(), "c6i.large".into()]),
                ..ComputeSpec::default()
            },
        ),
    );
    kinds.insert(
        "members".to_owned(),
        kind(
            1,
            ComputeSpec {
                architecture: Some(Arch::X86_64),
                families: vec!["m7i".into(), "m6i".into()],
                min_vcpus: Some(2),
                max_vcpus: Some(8),
                vcpus_per_input_gib: Some(1.0),
                memory_gib_per_vcpu: Some(4.0),
                ..ComputeSpec::default()
            },
        ),
    );
    kinds.insert(
        "claims".to_owned(),
        kind(
            2,
            ComputeSpec {
                architecture: Some(Arch::X86_64),
                families: vec!["c7i".into(), "c6i".into(), "m7i".into()],
                min_vcpus: Some(4),
                max_vcpus: Some(64),
                vcpus_per_input_gib: Some(2.0),
                memory_gib_per_vcpu: Some(2.0),
                ..ComputeSpec::default()
            },
        ),
    );
    PayerProfile {
        payer_id: format!("payer-{i:04}"),
        description: String::new(),
        enabled: true,
        priority: (rng.next() % 101) as u8,
        job_priority_max: 10,
        caps: PayerCaps {
            max_instances: 8,
            max_vcpus: 128,
        },
        launch: LaunchSettings {
            image_id: "ami-0123456789abcdef0".into(),
            subnets: vec![
                "subnet-0123456789abcdef0".into(),
                "subnet-0123456789abcdef1".into(),
            ],
            security_groups: vec!["sg-0123456789abcdef0".into()],
            instance_profile: "mayfly-instance".into(),
            capacity: CapacityPolicy::SpotThenOnDemand,
            template: "default".into(),
            root_volume_gib: 30,
            root_volume_kms_key: None,
            max_group: None,
        },
        circuit_breaker: Default::default(),
        timeouts: Timeouts {
            boot: "10m".parse().expect("literal"),
            heartbeat: "5m".parse().expect("literal"),
            max_runtime: "4h".parse().expect("literal"),
        },
        kinds,
    }
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Best and median wall time over `runs` runs.
fn timed<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .collect();
    times.sort();
    (times[0], times[times.len() / 2])
}

fn main() {
    let n_jobs = arg("--jobs", 100_000);
    let n_payers = arg("--payers", 1_000);
    let budget = arg("--budget", 500) as u32;
    let runs = arg("--runs", 7);
    let catalog = Catalog::shipped();
    let mut rng = Lcg(42);
    let global = GlobalCaps {
        max_instances: 2_000,
        max_vcpus: 20_000,
    };
    let ctx = ValidateContext { catalog, global };
    let payers: Vec<Payer> = (0..n_payers)
        .map(|i| {
            payer(i, &mut rng)
                .validate("bench", &ctx)
                .expect("bench profiles are valid")
        })
        .collect();
    let now = Utc
        .with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
        .single()
        .expect("valid time");
    let kinds = ["eligibility", "members", "claims"];
    // Summaries are what the scheduler holds: it reads the planning projection of the ledger.
    let mut interner = Interner::default();
    let jobs: Vec<JobSummary> = (0..n_jobs)
        .map(|n| {
            let p = rng.next() as usize % n_payers;
            let kind = kinds[rng.next() as usize % 3];
            let batch = format!("2026-11-{:02}", 1 + rng.next() % 4);
            let req = JobRequest {
                job_id: format!("payer-{p:04}:{batch}:{kind}:{n:06}"),
                payer_id: format!("payer-{p:04}"),
                kind: kind.to_owned(),
                batch,
                input: Some(JobInput {
                    uri: format!("s3://drops/payer-{p:04}/{n}"),
                    bytes: Some(rng.next() % (64 << 30)),
                }),
                params: BTreeMap::new(),
                priority: Some((rng.next() % 11) as u8),
            };
            let job = Job::from_request(
                req,
                now - chrono::Duration::seconds((rng.next() % 86_400) as i64),
            );
            JobSummary::of(&job, &mut interner)
        })
        .collect();
    let rss_jobs = peak_rss_mib().unwrap_or(f64::NAN);
    let snap = Snapshot {
        jobs: &jobs,
        payers: &payers,
        catalog,
        caps: global,
        vcpu_quota: Some(10_000),
        account_quotas: mayfly_core::quota::AccountQuota::NotRead,
        launch_budget: budget,
        now,
    };

    // The same keys the planner ranks by, sorted bare.
    let index: std::collections::HashMap<&str, &Payer> =
        payers.iter().map(|p| (p.id(), p)).collect();
    let keys: Vec<_> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| {
            let payer = index[&*j.payer_id];
            rank_key(j, payer, payer.kind(&j.kind).expect("known kind").tier, i)
        })
        .collect();
    let (sort, sort_median) = timed(runs, || {
        let mut k = keys.clone();
        k.sort_unstable();
        k
    });
    let (clone_only, clone_median) = timed(runs, || keys.clone());
    let bare_sort = sort.saturating_sub(clone_only);
    let bare_sort_median = sort_median.saturating_sub(clone_median);
    let planned = plan(&snap);
    let launched = planned.launches.len();
    drop(planned);
    let (planning, planning_median) = timed(runs, || plan(&snap));
    let ratio = planning.as_secs_f64() / bare_sort.as_secs_f64();
    let rss = peak_rss_mib().unwrap_or(f64::NAN);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("plan benchmark: {n_jobs} queued jobs, {n_payers} payers, launch budget {budget}, {runs} runs");
    println!("  launched         {launched}");
    println!(
        "  plan             {:8.2} ms best, {:.2} ms median   (target <= 100 ms)",
        ms(planning),
        ms(planning_median)
    );
    println!(
        "  bare sort        {:8.2} ms best, {:.2} ms median",
        ms(bare_sort),
        ms(bare_sort_median)
    );
    println!("  plan / sort      {ratio:8.2} x    (target <= 5 x)");
    println!("  RSS with jobs    {rss_jobs:8.1} MiB  (jobs, profiles and catalog loaded)");
    println!("  peak RSS         {rss:8.1} MiB  (target <= 64 MiB)");
}
