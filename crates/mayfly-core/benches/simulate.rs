//! Simulation benchmark: generate the reference workload (100,000 jobs by default) for the
//! example payer profiles, simulate it under mayfly and a baseline autoscaling group, and
//! print how long that took beside the report's totals.
//!
//! Run: `cargo bench -p mayfly-core --bench simulate` (add `-- --jobs N --seed S
//! --baseline asg:COUNT:TYPE`).

use std::path::PathBuf;
use std::time::Instant;

use mayfly_core::catalog::Catalog;
use mayfly_core::profile::{self, GlobalCaps, ValidateContext};
use mayfly_core::simulate::{generate::generate, simulate, BaselineSpec, Model, Setup};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let jobs: usize = arg("--jobs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let seed: u64 = arg("--seed").and_then(|v| v.parse().ok()).unwrap_or(1);
    let baseline: BaselineSpec = arg("--baseline")
        .unwrap_or_else(|| "asg:6:m5.2xlarge".into())
        .parse()
        .expect("--baseline is asg:COUNT:TYPE");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../payer-profiles");
    let catalog = Catalog::shipped();
    let ctx = ValidateContext {
        catalog,
        global: GlobalCaps::default(),
    };
    let payers = profile::load_and_validate(&[dir], &ctx).expect("the example profiles are valid");

    let t0 = Instant::now();
    let trace = generate(jobs, seed);
    let generated = t0.elapsed();
    let model = Model::default();
    let setup = Setup {
        payers: &payers,
        catalog,
        model: &model,
        baseline: Some(&baseline),
        seed,
    };
    let t1 = Instant::now();
    let report = simulate(&trace, &setup).expect("the reference workload simulates");
    let simulated = t1.elapsed();

    print!("{report}");
    println!();
    println!(
        "simulate {jobs} jobs: generate {:.3} s, simulate {:.3} s ({} passes, {:.1} µs per job)",
        generated.as_secs_f64(),
        simulated.as_secs_f64(),
        report.fleet.passes,
        simulated.as_secs_f64() * 1e6 / jobs as f64
    );
}
