//! Behaviour of the simulation on the example payers: tier order, determinism, billing.

use std::path::PathBuf;

use proptest::prelude::*;

use super::generate::generate;
use super::*;
use crate::cost::billed_seconds;
use crate::profile::{self, ValidateContext};

fn payers() -> Vec<Payer> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../payer-profiles");
    let ctx = ValidateContext {
        catalog: Catalog::shipped(),
        global: GlobalCaps::default(),
    };
    profile::load_and_validate(&[dir], &ctx).expect("the example profiles are valid")
}

fn asg(count: u32, t: &str) -> BaselineSpec {
    format!("asg:{count}:{t}").parse().unwrap()
}

fn sim(trace: &[TraceJob], model: &Model, baseline: Option<&BaselineSpec>, seed: u64) -> Report {
    let payers = payers();
    let setup = Setup {
        payers: &payers,
        catalog: Catalog::shipped(),
        model,
        baseline,
        seed,
    };
    simulate(trace, &setup).unwrap()
}

fn job(at: f64, payer: &str, kind: &str, batch: &str, gib: f64, run: f64) -> TraceJob {
    TraceJob {
        at,
        job_id: format!("{payer}:{batch}:{kind}:{at}"),
        payer_id: payer.into(),
        kind: kind.into(),
        batch: batch.into(),
        input: Some(crate::job::JobInput {
            uri: "s3://example/input".into(),
            bytes: Some((gib * 1024.0 * 1024.0 * 1024.0) as u64),
        }),
        params: Default::default(),
        priority: None,
        run_seconds: run,
        exits: Vec::new(),
    }
}

#[test]
fn the_reference_workload_meets_the_ratio_target_and_the_baseline_breaks_tier_order() {
    let trace = generate(1000, 1);
    assert_eq!(trace.len(), 1000);
    let r = sim(&trace, &Model::default(), Some(&asg(6, "m5.2xlarge")), 1);
    assert_eq!(r.total.mayfly.violations, 0);
    assert_eq!(r.total.mayfly.unfinished, 0);
    let m = r.total.mayfly.billed_per_job_s;
    assert!(
        (1.0..=report::RATIO_TARGET).contains(&m),
        "mayfly ratio {m}"
    );
    let b = r.total.baseline.as_ref().unwrap();
    assert!(
        b.billed_per_job_s > m,
        "baseline {} vs mayfly {m}",
        b.billed_per_job_s
    );
    assert!(
        b.violations > 0,
        "FIFO without tiers starts claims before members"
    );
    let payers: Vec<&str> = r.rows.iter().map(|r| r.payer_id.as_str()).collect();
    assert!(["cedar-plan", "harbor-health", "prairie-mutual"]
        .iter()
        .all(|p| payers.contains(p)));
}

#[test]
fn the_same_seed_gives_the_same_report_and_another_seed_another() {
    let trace = generate(300, 7);
    assert_eq!(trace, generate(300, 7));
    let model = Model::default();
    let base = asg(4, "m5.xlarge");
    let a = sim(&trace, &model, Some(&base), 3);
    let b = sim(&trace, &model, Some(&base), 3);
    assert_eq!(a.rows, b.rows);
    assert_eq!(a.total, b.total);
    let c = sim(&trace, &model, Some(&base), 4);
    assert_ne!(
        a.total.mayfly, c.total.mayfly,
        "boot times are drawn from the seed"
    );
    assert_eq!(
        a.total.baseline, c.total.baseline,
        "the baseline draws nothing"
    );
}

#[test]
fn billing_totals_are_the_sum_over_jobs_and_the_baseline_bills_every_instance_throughout() {
    let trace = generate(400, 2);
    let model = Model::default();
    let r = sim(&trace, &model, Some(&asg(5, "m5.2xlarge")), 9);
    let m = &r.total.mayfly;
    let rows_billed: f64 = r.rows.iter().map(|r| r.mayfly.billed_s).sum();
    let rows_cost: f64 = r.rows.iter().map(|r| r.mayfly.cost_usd).sum();
    assert!((rows_billed - m.billed_s).abs() < 1e-6);
    assert!((rows_cost - m.cost_usd).abs() < 1e-9);
    // Each attempt's instance boots, runs the job and shuts down, and bills at least a
    // minute; the reference workload's failures are all retried, once each.
    assert!(trace.iter().any(|j| !j.exits.is_empty()));
    let (lo, hi): (f64, f64) = trace.iter().fold((0.0, 0.0), |(lo, hi), j| {
        let attempts = (j.exits.len() + 1) as f64;
        let min = (j.run_seconds + model.boot_s.0 + model.shutdown_s.0).max(60.0);
        let max = (j.run_seconds + model.boot_s.1 + model.shutdown_s.1 + 1.0).max(60.0);
        (lo + attempts * min, hi + attempts * max)
    });
    assert_eq!(
        r.fleet.launches,
        (trace.len() + r.fleet.failed_attempts as usize) as u64
    );
    assert!(
        (lo..=hi).contains(&m.billed_s),
        "{lo} ≤ {} ≤ {hi}",
        m.billed_s
    );
    let b = r.total.baseline.as_ref().unwrap();
    assert_eq!(b.billed_s, 5.0 * billed_seconds(b.makespan_s) as f64);
    let idle = r.baseline.as_ref().unwrap().idle_billed_s;
    let busy: f64 = r
        .rows
        .iter()
        .map(|r| r.baseline.as_ref().unwrap().billed_s)
        .sum();
    assert!((busy + idle - b.billed_s).abs() < 1e-3);
}

#[test]
fn a_job_too_big_for_the_generic_type_runs_slower_there() {
    // 24 GiB of harbor claims at 2 vCPU per GiB wants 48 vCPUs; m5.2xlarge has 8.
    let trace = [job(0.0, "harbor-health", "claims", "w1", 24.0, 300.0)];
    let r = sim(&trace, &Model::default(), Some(&asg(1, "m5.2xlarge")), 1);
    let b = r.total.baseline.as_ref().unwrap();
    assert_eq!(b.makespan_s, 300.0 * 48.0 / 8.0);
    // mayfly: planned at the arrival's pass, then boot (30-90 s), then the run.
    let m = &r.total.mayfly;
    assert!((330.0..390.0).contains(&m.makespan_s), "{}", m.makespan_s);
}

#[test]
fn capacity_errors_move_launches_down_the_ladder_and_every_job_still_runs() {
    let trace = generate(200, 5);
    let calm = sim(&trace, &Model::default(), None, 1);
    let model = Model {
        capacity_error_rate: 0.6,
        ..Model::default()
    };
    let rough = sim(&trace, &model, None, 1);
    assert!(rough.fleet.capacity_errors > 0);
    assert!(rough.fleet.refused_launches > 0);
    assert_eq!(rough.total.mayfly.unfinished, 0);
    assert_eq!(rough.total.mayfly.violations, 0);
    assert!(rough.total.mayfly.makespan_s >= calm.total.mayfly.makespan_s);
    let no_errors = Model {
        capacity_error_rate: 0.0,
        ..Model::default()
    };
    assert_eq!(sim(&trace, &no_errors, None, 1).fleet.capacity_errors, 0);
}

#[test]
fn unknown_payers_kinds_and_duplicates_are_refused_by_name() {
    let payers = payers();
    let model = Model::default();
    let setup = Setup {
        payers: &payers,
        catalog: Catalog::shipped(),
        model: &model,
        baseline: None,
        seed: 1,
    };
    let unknown = [job(0.0, "acme", "claims", "b", 1.0, 10.0)];
    assert!(matches!(
        simulate(&unknown, &setup),
        Err(SimError::UnknownPayer { .. })
    ));
    let kind = [job(0.0, "cedar-plan", "dental", "b", 1.0, 10.0)];
    let err = simulate(&kind, &setup).unwrap_err();
    assert!(err
        .to_string()
        .contains("kind: payer `cedar-plan` has no job kind `dental`"));
    let twice = [
        job(0.0, "cedar-plan", "claims", "b", 1.0, 10.0),
        job(0.0, "cedar-plan", "claims", "b", 1.0, 10.0),
    ];
    assert!(matches!(
        simulate(&twice, &setup),
        Err(SimError::DuplicateJob { .. })
    ));
    assert!(matches!(simulate(&[], &setup), Err(SimError::EmptyTrace)));
    let baseline = asg(2, "m99.huge");
    let setup = Setup {
        baseline: Some(&baseline),
        ..setup
    };
    let one = [job(0.0, "cedar-plan", "claims", "b", 1.0, 10.0)];
    assert!(matches!(
        simulate(&one, &setup),
        Err(SimError::UnknownBaselineType(_))
    ));
    assert!("asg:0:m5.large".parse::<BaselineSpec>().is_err());
    assert!("fleet:2:m5.large".parse::<BaselineSpec>().is_err());
}

#[test]
fn a_retryable_exit_runs_again_after_its_backoff_and_bills_both_attempts() {
    // harbor-health claims: exit 75 is retryable, backoff 1m.
    let mut claims = job(0.0, "harbor-health", "claims", "w1", 2.0, 600.0);
    claims.exits = vec![75];
    let r = sim(
        &[claims.clone()],
        &Model::default(),
        Some(&asg(1, "m5.2xlarge")),
        1,
    );
    assert_eq!(r.fleet.launches, 2);
    assert_eq!(r.fleet.failed_attempts, 1);
    let m = &r.total.mayfly;
    assert_eq!(m.unfinished, 0);
    assert!(m.billed_s >= 2.0 * (600.0 + 30.0), "{}", m.billed_s);
    assert!(m.billed_per_job_s > 2.0);
    // Two runs, two boots, a pass to see the failure and a backoff of about a minute.
    assert!(m.makespan_s >= 1260.0, "{}", m.makespan_s);
    let b = r.total.baseline.as_ref().unwrap();
    assert_eq!(b.makespan_s, 1200.0, "the generic worker retries in place");
}

#[test]
fn a_dead_lower_tier_blocks_its_batch_under_mayfly_but_not_under_the_baseline() {
    // cedar-plan eligibility retries only exit 75: exit 1 makes it dead at once.
    let mut eligibility = job(0.0, "cedar-plan", "eligibility", "m1", 0.25, 300.0);
    eligibility.exits = vec![1];
    let trace = [
        eligibility,
        job(10.0, "cedar-plan", "members", "m1", 1.0, 600.0),
        job(20.0, "cedar-plan", "claims", "m1", 8.0, 1200.0),
    ];
    let r = sim(&trace, &Model::default(), Some(&asg(3, "m5.2xlarge")), 1);
    assert_eq!(r.fleet.dead, 1);
    assert_eq!(r.fleet.launches, 1, "members and claims stay blocked");
    assert_eq!(r.total.mayfly.unfinished, 3);
    assert_eq!(r.total.mayfly.violations, 0);
    let b = r.total.baseline.as_ref().unwrap();
    assert_eq!(b.violations, 2, "the group runs members and claims anyway");
}

const KINDS: [(&str, &str); 7] = [
    ("cedar-plan", "eligibility"),
    ("cedar-plan", "members"),
    ("cedar-plan", "claims"),
    ("harbor-health", "members"),
    ("harbor-health", "claims"),
    ("prairie-mutual", "remittance"),
    ("prairie-mutual", "encounters"),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Batches of random sizes and shapes, whose files arrive in tier order (as KINDS lists
    /// them per payer) and sometimes fail: mayfly never starts a job before its lower tiers
    /// have succeeded, and every job that could succeed does.
    #[test]
    fn mayfly_never_breaks_tier_order(
        batches in prop::collection::vec(
            (0usize..3, 0.0f64..20_000.0, prop::collection::vec((0usize..3, 0.1f64..40.0, 1.0f64..5000.0, 0usize..6), 1..8)),
            1..12,
        ),
        seed in any::<u64>(),
    ) {
        let mut trace = Vec::new();
        for (b, (payer, start, files)) in batches.iter().enumerate() {
            let kinds: Vec<&(&str, &str)> = KINDS.iter().filter(|k| k.0 == ["cedar-plan", "harbor-health", "prairie-mutual"][*payer]).collect();
            let mut files = files.clone();
            files.sort_by_key(|f| f.0 % kinds.len());
            for (n, (k, gib, run, fail)) in files.iter().enumerate() {
                let (p, kind) = kinds[k % kinds.len()];
                let mut j = job(start + n as f64 * 7.0, p, kind, &format!("b{b}"), *gib, run.round());
                j.job_id = format!("{p}:b{b}:{n}");
                // Mostly clean; some retryable failures (75 is retryable for every kind
                // that lists codes), a few not retryable (1).
                j.exits = match fail {
                    0 => vec![75],
                    1 => vec![1],
                    _ => Vec::new(),
                };
                trace.push(j);
            }
        }
        trace.sort_by(|a, b| a.at.total_cmp(&b.at));
        let model = Model { capacity_error_rate: 0.2, ..Model::default() };
        let r = sim(&trace, &model, Some(&asg(2, "m5.large")), seed);
        prop_assert_eq!(r.total.mayfly.violations, 0);
        let dead = r.fleet.dead as usize;
        if dead == 0 {
            prop_assert_eq!(r.total.mayfly.unfinished, 0);
        }
        prop_assert!(r.total.mayfly.unfinished >= dead);
        prop_assert!(r.total.mayfly.billed_per_job_s >= 1.0 || r.total.mayfly.job_s == 0.0);
    }
}
