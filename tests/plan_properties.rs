//! Property tests of the planner over generated snapshots: tier order, determinism, caps,
//! right-sizing, completeness and blocking.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use mayfly::catalog::{Accelerator, Arch, Catalog};
use mayfly::job::{Attempt, Job, JobState};
use mayfly::plan::{plan, Reason, Snapshot};
use mayfly::profile::{
    CapacityPolicy, ComputeSpec, GlobalCaps, JobKind, LaunchSettings, Payer, PayerCaps,
    PayerProfile, RetryPolicy, Timeouts, ValidateContext,
};
use mayfly::sizing::{self, Requirement, Rung};
use mayfly::summary::JobSummary;
use proptest::prelude::*;

const EXPLICIT: &[&str] = &[
    "m5.large",
    "m6i.xlarge",
    "c6i.2xlarge",
    "t3.medium",
    "c7g.large",
];
const FAMILIES: &[&str] = &["m5", "m6i", "c6i", "c7i", "r6i", "m7g", "t4g"];

#[derive(Debug, Clone)]
struct KindGen {
    tier_step: bool,
    explicit: Option<Vec<usize>>,
    families: Vec<usize>,
    arm: bool,
    min_vcpus: u32,
    extra_vcpus: u32,
    per_gib: Option<u32>,
    mem_per_vcpu: u32,
}

#[derive(Debug, Clone)]
struct PayerGen {
    priority: u8,
    job_priority_max: u8,
    max_instances: u32,
    max_vcpus: u32,
    enabled: bool,
    paused: bool,
    kinds: Vec<KindGen>,
}

#[derive(Debug, Clone)]
struct JobGen {
    payer: usize,
    kind: usize,
    batch: u8,
    state: JobState,
    priority: u8,
    submitted: i64,
    input_gib: Option<u64>,
    backoff: Option<i64>,
}

fn kind_gen() -> impl Strategy<Value = KindGen> {
    (
        any::<bool>(),
        prop::option::weighted(0.3, prop::collection::vec(0..EXPLICIT.len(), 1..3)),
        prop::collection::vec(0..FAMILIES.len(), 0..3),
        any::<bool>(),
        1u32..8,
        0u32..24,
        prop::option::of(1u32..4),
        0u32..5,
    )
        .prop_map(
            |(
                tier_step,
                explicit,
                families,
                arm,
                min_vcpus,
                extra_vcpus,
                per_gib,
                mem_per_vcpu,
            )| KindGen {
                tier_step,
                explicit,
                families,
                arm,
                min_vcpus,
                extra_vcpus,
                per_gib,
                mem_per_vcpu,
            },
        )
}

fn payer_gen() -> impl Strategy<Value = PayerGen> {
    (
        0u8..=100,
        0u8..=100,
        1u32..5,
        prop::sample::select(vec![16u32, 32, 64, 128]),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.1),
        prop::collection::vec(kind_gen(), 1..4),
    )
        .prop_map(
            |(priority, job_priority_max, max_instances, max_vcpus, enabled, paused, kinds)| {
                PayerGen {
                    priority,
                    job_priority_max,
                    max_instances,
                    max_vcpus,
                    enabled,
                    paused,
                    kinds,
                }
            },
        )
}

fn state_gen() -> impl Strategy<Value = JobState> {
    prop_oneof![
        6 => Just(JobState::Queued),
        1 => Just(JobState::Launching),
        2 => Just(JobState::Running),
        3 => Just(JobState::Succeeded),
        1 => Just(JobState::Failed),
        1 => Just(JobState::Blocked),
        1 => Just(JobState::Cancelled),
        1 => Just(JobState::Dead),
    ]
}

fn job_gen() -> impl Strategy<Value = JobGen> {
    (
        0usize..6,
        0usize..4,
        0u8..3,
        state_gen(),
        0u8..=100,
        0i64..20,
        prop::option::of(0u64..200),
        prop::option::weighted(0.2, -600i64..600),
    )
        .prop_map(
            |(payer, kind, batch, state, priority, submitted, input_gib, backoff)| JobGen {
                payer,
                kind,
                batch,
                state,
                priority,
                submitted,
                input_gib,
                backoff,
            },
        )
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
}

fn build_payer(i: usize, g: &PayerGen, catalog: &Catalog) -> Payer {
    let mut kinds = BTreeMap::new();
    let mut tier = 0u8;
    for (j, k) in g.kinds.iter().enumerate() {
        if j > 0 && k.tier_step {
            tier += 1;
        }
        let compute = match &k.explicit {
            Some(list) => {
                let mut names: Vec<String> = list.iter().map(|&t| EXPLICIT[t].to_owned()).collect();
                names.dedup();
                names.retain(|n| catalog.get(n).unwrap().vcpus <= g.max_vcpus);
                ComputeSpec {
                    instance_types: Some(names),
                    ..ComputeSpec::default()
                }
            }
            None => {
                let min = k.min_vcpus.min(g.max_vcpus);
                let mut families: Vec<String> =
                    k.families.iter().map(|&f| FAMILIES[f].to_owned()).collect();
                families.sort();
                families.dedup();
                ComputeSpec {
                    architecture: Some(if k.arm { Arch::Arm64 } else { Arch::X86_64 }),
                    families,
                    min_vcpus: Some(min),
                    max_vcpus: Some((min + k.extra_vcpus).min(g.max_vcpus)),
                    vcpus_per_input_gib: k.per_gib.map(f64::from),
                    memory_gib_per_vcpu: Some(f64::from(k.mem_per_vcpu)),
                    ..ComputeSpec::default()
                }
            }
        };
        kinds.insert(
            format!("k{j}"),
            JobKind {
                tier,
                description: String::new(),
                command: vec!["/bin/true".into()],
                compute,
                max_runtime: None,
                retry: RetryPolicy::default(),
                capacity: None,
                env: BTreeMap::new(),
                secrets: BTreeMap::new(),
            },
        );
    }
    Payer {
        profile: PayerProfile {
            payer_id: format!("p{i}"),
            description: String::new(),
            enabled: g.enabled,
            priority: g.priority,
            job_priority_max: g.job_priority_max,
            caps: PayerCaps {
                max_instances: g.max_instances,
                max_vcpus: g.max_vcpus,
            },
            launch: LaunchSettings {
                image_id: "ami-0123456789abcdef0".into(),
                subnets: vec!["subnet-0123456789abcdef0".into()],
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
                boot: "10m".parse().unwrap(),
                heartbeat: "5m".parse().unwrap(),
                max_runtime: "4h".parse().unwrap(),
            },
            kinds,
        },
        paused: g
            .paused
            .then(|| "circuit breaker: 3 boot failures".to_owned()),
    }
}

/// A snapshot's owned parts; payers that fail validation (an unsatisfiable generated spec)
/// are dropped, so their jobs exercise the unknown-payer path.
#[derive(Debug, Clone)]
struct World {
    payers: Vec<Payer>,
    jobs: Vec<Job>,
    summaries: Vec<JobSummary>,
    caps: GlobalCaps,
    quota: Option<u32>,
    budget: u32,
}

fn build_world(
    payers: &[PayerGen],
    jobs: &[JobGen],
    caps: (u32, u32),
    quota: Option<u32>,
    budget: u32,
) -> World {
    let catalog = Catalog::shipped();
    let global = GlobalCaps {
        max_instances: caps.0,
        max_vcpus: caps.1,
    };
    let ctx = ValidateContext {
        catalog,
        global: GlobalCaps {
            max_instances: 1000,
            max_vcpus: 1000,
        },
    };
    let mut valid = Vec::new();
    for (i, g) in payers.iter().enumerate() {
        let payer = build_payer(i, g, catalog);
        let paused = payer.paused.clone();
        if let Ok(mut v) = payer.profile.validate("generated", &ctx) {
            v.paused = paused;
            valid.push(v);
        }
    }
    let mut out = Vec::new();
    for (n, g) in jobs.iter().enumerate() {
        let mut job = Job::from_request(
            mayfly::job::JobRequest {
                job_id: format!("j{n:03}"),
                payer_id: format!("p{}", g.payer),
                kind: format!("k{}", g.kind),
                batch: format!("b{}", g.batch),
                input: g.input_gib.map(|gib| mayfly::job::JobInput {
                    uri: "s3://bucket/key".into(),
                    bytes: Some(gib << 30),
                }),
                params: BTreeMap::new(),
                priority: Some(g.priority),
            },
            now() - Duration::seconds(g.submitted),
        );
        job.state = g.state;
        job.not_before = g.backoff.map(|s| now() + Duration::seconds(s));
        if g.state.is_in_flight() {
            job.attempt = 1;
            job.attempts.push(Attempt {
                number: 1,
                rung: Some(Rung {
                    instance_type: "m5.large".into(),
                    subnet: "subnet-0123456789abcdef0".into(),
                    capacity: mayfly::profile::CapacityType::OnDemand,
                }),
                ..Attempt::default()
            });
        }
        out.push(job);
    }
    World {
        payers: valid,
        summaries: JobSummary::of_all(&out),
        jobs: out,
        caps: global,
        quota,
        budget,
    }
}

fn snapshot(w: &World) -> Snapshot<'_> {
    Snapshot {
        jobs: &w.summaries,
        payers: &w.payers,
        catalog: Catalog::shipped(),
        caps: w.caps,
        vcpu_quota: w.quota,
        account_quotas: mayfly::quota::AccountQuota::NotRead,
        launch_budget: w.budget,
        now: now(),
    }
}

fn world_gen() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(payer_gen(), 1..6),
        prop::collection::vec(job_gen(), 0..60),
        (1u32..12, 8u32..200),
        prop::option::of(4u32..150),
        0u32..12,
    )
        .prop_map(|(p, j, caps, quota, budget)| build_world(&p, &j, caps, quota, budget))
}

fn tier_of(w: &World, job: &Job) -> Option<u8> {
    w.payers
        .iter()
        .find(|p| p.id() == job.payer_id)
        .and_then(|p| p.kind(&job.kind))
        .map(|k| k.tier)
}

fn vcpus_in_flight(w: &World, pred: impl Fn(&Job) -> bool) -> (u32, u32) {
    let c = Catalog::shipped();
    w.jobs
        .iter()
        .filter(|j| j.state.is_in_flight() && pred(j))
        .fold((0, 0), |(n, v), j| {
            let t = &j
                .current_attempt()
                .unwrap()
                .rung
                .as_ref()
                .unwrap()
                .instance_type;
            (n + 1, v + c.get(t).unwrap().vcpus)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_launch_before_lower_tiers_succeed(w in world_gen()) {
        let p = plan(&snapshot(&w));
        for l in &p.launches {
            for other in &w.jobs {
                if other.payer_id == l.payer_id && other.batch == l.batch {
                    if let Some(t) = tier_of(&w, other) {
                        if t < l.tier {
                            prop_assert_eq!(other.state, JobState::Succeeded, "{} launched before {}", l.job_id, other.job_id);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn plan_is_total_and_deterministic(w in world_gen(), seed in any::<u64>()) {
        let first = serde_json::to_string(&plan(&snapshot(&w))).unwrap();
        let again = serde_json::to_string(&plan(&snapshot(&w))).unwrap();
        prop_assert_eq!(&first, &again);
        // The same jobs in another order give the same plan.
        let mut shuffled = w.clone();
        let n = shuffled.jobs.len();
        let mut s = seed;
        for i in (1..n).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.jobs.swap(i, (s >> 33) as usize % (i + 1));
        }
        shuffled.summaries = JobSummary::of_all(&shuffled.jobs);
        let permuted = serde_json::to_string(&plan(&snapshot(&shuffled))).unwrap();
        prop_assert_eq!(first, permuted);
    }

    #[test]
    fn caps_quota_and_budget_are_never_exceeded(w in world_gen()) {
        let p = plan(&snapshot(&w));
        prop_assert!(p.launches.len() as u32 <= w.budget);
        let (n0, v0) = vcpus_in_flight(&w, |_| true);
        let launched_vcpus: u32 = p.launches.iter().map(|l| l.vcpus).sum();
        let n1 = n0 + p.launches.len() as u32;
        let v1 = v0 + launched_vcpus;
        if !p.launches.is_empty() {
            prop_assert!(n1 <= w.caps.max_instances);
            prop_assert!(v1 <= w.caps.max_vcpus);
            if let Some(q) = w.quota {
                prop_assert!(v1 <= q);
            }
        }
        for payer in &w.payers {
            let mine: Vec<_> = p.launches.iter().filter(|l| l.payer_id == payer.id()).collect();
            if mine.is_empty() {
                continue;
            }
            let (pn, pv) = vcpus_in_flight(&w, |j| j.payer_id == payer.id());
            prop_assert!(pn + mine.len() as u32 <= payer.profile.caps.max_instances);
            prop_assert!(pv + mine.iter().map(|l| l.vcpus).sum::<u32>() <= payer.profile.caps.max_vcpus);
        }
    }

    #[test]
    fn chosen_types_fit_and_none_cheaper_does(w in world_gen()) {
        let catalog = Catalog::shipped();
        let p = plan(&snapshot(&w));
        for l in &p.launches {
            let job = w.jobs.iter().find(|j| j.job_id == l.job_id).unwrap();
            let payer = w.payers.iter().find(|p| p.id() == l.payer_id).unwrap();
            let spec = &payer.kind(&job.kind).unwrap().compute;
            let first = catalog.get(&l.ladder[0].instance_type).unwrap();
            prop_assert!(l.vcpus >= first.vcpus);
            match &spec.instance_types {
                Some(list) => prop_assert_eq!(&list[0], &first.name),
                None => {
                    let req = Requirement::for_spec(spec, job.input_bytes());
                    let max = payer.profile.caps.max_vcpus;
                    prop_assert!(req.fits(first, spec, max), "{} does not fit {}", first.name, req);
                    for t in catalog.types() {
                        if req.fits(t, spec, max) {
                            prop_assert!(sizing::cheaper(first, t) != std::cmp::Ordering::Greater,
                                "{} is cheaper than {}", t.name, first.name);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_job_appears_exactly_once(w in world_gen()) {
        let p = plan(&snapshot(&w));
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for id in p.launches.iter().map(|l| l.job_id).chain(p.waiting.iter().map(|x| &*x.job.job_id)) {
            *seen.entry(id).or_default() += 1;
        }
        prop_assert_eq!(seen.len(), w.jobs.len());
        prop_assert!(seen.values().all(|&n| n == 1));
        for l in &p.launches {
            let job = w.jobs.iter().find(|j| j.job_id == l.job_id).unwrap();
            prop_assert!(matches!(job.state, JobState::Queued | JobState::Blocked));
            prop_assert!(job.not_before.is_none_or(|nb| nb <= now()));
        }
    }

    #[test]
    fn blocked_jobs_are_exactly_those_with_a_dead_lower_tier(w in world_gen()) {
        let p = plan(&snapshot(&w));
        let reported: HashSet<&str> = p
            .waiting
            .iter()
            .filter(|x| matches!(x.reason, Reason::BlockedByDead { .. }))
            .map(|x| &*x.job.job_id)
            .collect();
        let expected: HashSet<&str> = w
            .jobs
            .iter()
            .filter(|j| matches!(j.state, JobState::Queued | JobState::Blocked))
            .filter(|j| {
                let Some(t) = tier_of(&w, j) else { return false };
                w.jobs.iter().any(|o| {
                    o.payer_id == j.payer_id
                        && o.batch == j.batch
                        && matches!(o.state, JobState::Dead | JobState::Cancelled)
                        && tier_of(&w, o).is_some_and(|ot| ot < t)
                })
            })
            .map(|j| j.job_id.as_str())
            .collect();
        prop_assert_eq!(reported, expected);
    }
}

/// A sizing spec over the whole catalog: any families (often none), either architecture, GPUs
/// sometimes, vCPU bounds with or without input scaling, memory per vCPU.
#[derive(Debug, Clone)]
struct SpecGen {
    families: Vec<usize>,
    arch: Option<Arch>,
    gpus: Option<u32>,
    min_vcpus: u32,
    max_vcpus: Option<u32>,
    per_gib: Option<f64>,
    mem_per_vcpu: Option<f64>,
    min_memory_gib: Option<f64>,
    candidates: Option<u32>,
}

fn catalog_families() -> Vec<String> {
    let mut f: Vec<String> = Catalog::shipped()
        .types()
        .iter()
        .map(|t| t.family().to_owned())
        .collect();
    f.sort();
    f.dedup();
    f
}

fn spec_gen() -> impl Strategy<Value = SpecGen> {
    let n = catalog_families().len();
    (
        prop::option::weighted(0.4, prop::collection::vec(0..n, 1..4)),
        prop::option::of(prop::sample::select(vec![Arch::X86_64, Arch::Arm64])),
        prop::option::weighted(0.15, 0u32..4),
        1u32..64,
        prop::option::of(0u32..128),
        prop::option::of(0.1f64..8.0),
        prop::option::of(0.0f64..16.0),
        prop::option::weighted(0.3, 0.0f64..256.0),
        prop::option::of(1u32..10),
    )
        .prop_map(
            |(
                families,
                arch,
                gpus,
                min_vcpus,
                extra,
                per_gib,
                mem_per_vcpu,
                min_memory_gib,
                candidates,
            )| SpecGen {
                families: families.unwrap_or_default(),
                arch,
                gpus,
                min_vcpus,
                max_vcpus: extra.map(|e| min_vcpus + e),
                per_gib,
                mem_per_vcpu,
                min_memory_gib,
                candidates,
            },
        )
}

fn build_spec(g: &SpecGen) -> ComputeSpec {
    let names = catalog_families();
    let mut families: Vec<String> = g.families.iter().map(|&i| names[i].clone()).collect();
    families.sort();
    families.dedup();
    ComputeSpec {
        architecture: g.arch,
        families,
        min_vcpus: Some(g.min_vcpus),
        max_vcpus: g.max_vcpus,
        vcpus_per_input_gib: g.per_gib,
        memory_gib_per_vcpu: g.mem_per_vcpu,
        min_memory_gib: g.min_memory_gib,
        gpus: g.gpus,
        candidates: g.candidates,
        ..ComputeSpec::default()
    }
}

/// The kind of a generated launch: its payer and spec.
fn kind_of<'w>(w: &'w World, job_id: &str) -> (&'w Payer, &'w ComputeSpec) {
    let job = w.jobs.iter().find(|j| j.job_id == job_id).unwrap();
    let payer = w.payers.iter().find(|p| p.id() == job.payer_id).unwrap();
    (payer, &payer.kind(&job.kind).unwrap().compute)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, failure_persistence: None, ..ProptestConfig::default() })]

    /// Every rung a sized kind gets keeps the profile's word: vCPUs within the kind's bounds
    /// (and the payer's cap), its families and architecture, and no accelerator or burstable
    /// type the kind did not ask for.
    #[test]
    fn every_rung_keeps_the_kinds_word(g in spec_gen(), cap in prop::sample::select(vec![8u32, 16, 64, 128, 448]), input_gib in prop::option::of(0u64..4096)) {
        let catalog = Catalog::shipped();
        let spec = build_spec(&g);
        let types = sizing::choose_types(catalog, &spec, input_gib.map(|n| n << 30), cap);
        let req = Requirement::for_spec(&spec, input_gib.map(|n| n << 30));
        let min = g.min_vcpus;
        prop_assert!(types.len() <= g.candidates.unwrap_or(3) as usize);
        for t in &types {
            prop_assert!(t.vcpus >= req.vcpus && t.memory_mib >= req.memory_mib, "{} is too small for {}", t.name, req);
            prop_assert!(t.vcpus <= cap, "{} above the payer's cap {}", t.name, cap);
            if let Some(max) = g.max_vcpus {
                prop_assert!(t.vcpus <= max, "{} above the kind's max_vcpus {}", t.name, max);
            }
            if g.per_gib.is_some() {
                let max = g.max_vcpus.unwrap_or(min);
                prop_assert!((min..=max).contains(&t.vcpus), "{}: {} vCPUs outside {}..={}", t.name, t.vcpus, min, max);
            }
            prop_assert!(t.supports(g.arch.unwrap_or(Arch::X86_64)), "{} lacks the architecture", t.name);
            if spec.families.is_empty() {
                let asked = match t.accelerator {
                    None => true,
                    Some(Accelerator::Gpu) => g.gpus.unwrap_or(0) > 0,
                    Some(_) => false,
                };
                prop_assert!(asked, "{} carries {:?}, not asked for", t.name, t.accelerator);
                prop_assert!(!t.burstable, "{} is burstable, not asked for", t.name);
            } else {
                prop_assert!(spec.families.iter().any(|f| f == t.family()), "{} is outside {:?}", t.name, spec.families);
            }
            if g.gpus.unwrap_or(0) > 0 {
                prop_assert!(t.gpus >= g.gpus.unwrap_or(0));
            }
        }
        // Cheapest first, and none left out is cheaper than the last one taken.
        for pair in types.windows(2) {
            prop_assert!(sizing::cheaper(pair[0], pair[1]) == std::cmp::Ordering::Less);
        }
    }

    /// What the plan reserves for a launch is at most what the kind may ever use: its vCPU
    /// ceiling when sized, its largest listed type when explicit.
    #[test]
    fn a_launch_reserves_at_most_the_kinds_maximum(w in world_gen()) {
        let catalog = Catalog::shipped();
        let p = plan(&snapshot(&w));
        for l in &p.launches {
            let (payer, spec) = kind_of(&w, l.job_id);
            let most = match &spec.instance_types {
                Some(list) => list.iter().map(|n| catalog.get(n).unwrap().vcpus).max().unwrap(),
                None => sizing::vcpu_ceiling(spec, payer.profile.caps.max_vcpus),
            };
            prop_assert!(l.vcpus <= most, "{} reserves {} vCPUs, the kind's maximum is {}", l.job_id, l.vcpus, most);
            for r in &l.ladder {
                prop_assert!(catalog.get(&r.instance_type).unwrap().vcpus <= l.vcpus);
            }
        }
    }
}
