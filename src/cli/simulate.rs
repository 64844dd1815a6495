//! `mayfly simulate`: capacity planning offline. Runs a trace of job arrivals through the
//! production planner on a virtual clock with a modelled fleet, beside a fixed-size generic
//! autoscaling group, and prints both per payer and tier; or prints a reference trace.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::{emit, CapsArgs, CliError, Output};
use crate::catalog::Catalog;
use crate::duration::Duration;
use crate::jobs_file;
use crate::profile::{self, ValidateContext};
use crate::simulate::{self, generate, BaselineSpec, Model, Setup};

/// What `mayfly simulate` reads and how it models the fleet.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Directory (or files) of payer profiles.
    #[arg(long, default_value = "payer-profiles")]
    pub profiles: Vec<PathBuf>,
    /// The trace: JSON lines of arrivals, each a job request plus `at` (seconds after the
    /// trace's start) and `run_seconds` (see docs/simulate.md).
    #[arg(long, required_unless_present = "generate_trace")]
    pub trace: Option<PathBuf>,
    /// The baseline: an autoscaling group of COUNT warm instances of TYPE, FIFO, no tiers.
    #[arg(
        long,
        default_value = "asg:6:m5.2xlarge",
        value_name = "asg:COUNT:TYPE"
    )]
    pub baseline: BaselineSpec,
    /// Seed of every draw (boot and shutdown times, capacity errors, a generated trace).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the reference workload's trace (JSON lines) for the example payer profiles
    /// instead of simulating: `mayfly simulate --generate-trace --jobs 100000 > trace.jsonl`.
    #[arg(long, conflicts_with = "trace")]
    pub generate_trace: bool,
    /// Arrivals in the generated trace.
    #[arg(long, default_value_t = 1000, requires = "generate_trace")]
    pub jobs: usize,
    /// Time between scheduling passes.
    #[arg(long, default_value = "1m")]
    pub interval: Duration,
    /// Shortest boot, launch to the job's start.
    #[arg(long, default_value = "30s")]
    pub boot_min: Duration,
    /// Longest boot.
    #[arg(long, default_value = "90s")]
    pub boot_max: Duration,
    /// Chance that EC2 refuses one rung of a launch for capacity (the launch moves to the
    /// next rung), in [0, 1).
    #[arg(long, default_value_t = 0.05)]
    pub capacity_error_rate: f64,
    /// RunInstances calls one pass may make.
    #[arg(long, default_value_t = 60)]
    pub launch_budget: u32,
    #[command(flatten)]
    pub caps: CapsArgs,
}

impl SimulateArgs {
    fn model(&self) -> Model {
        Model {
            interval_s: self.interval.as_secs() as f64,
            boot_s: (
                self.boot_min.as_secs() as f64,
                self.boot_max.as_secs() as f64,
            ),
            capacity_error_rate: self.capacity_error_rate,
            launch_budget: self.launch_budget,
            caps: self.caps.caps(),
            ..Model::default()
        }
    }
}

pub(super) fn simulate(output: Output, args: &SimulateArgs) -> Result<(), CliError> {
    if args.generate_trace {
        let text = simulate::to_jsonl(&generate::generate(args.jobs, args.seed));
        return match std::io::stdout().lock().write_all(text.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(CliError::Runtime(format!("cannot write output: {e}")))
            }
            _ => Ok(()),
        };
    }
    let catalog = Catalog::shipped();
    let ctx = ValidateContext {
        catalog,
        global: args.caps.caps(),
    };
    let payers = profile::load_and_validate(&args.profiles, &ctx)
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let path = args
        .trace
        .as_ref()
        .expect("clap requires --trace without --generate-trace");
    let text = jobs_file::read(path).map_err(|e| CliError::Invalid(e.to_string()))?;
    let trace = simulate::parse_trace(&path.display().to_string(), &text).map_err(|es| {
        let lines: Vec<String> = es.iter().map(ToString::to_string).collect();
        CliError::Invalid(lines.join("\n"))
    })?;
    let model = args.model();
    let setup = Setup {
        payers: &payers,
        catalog,
        model: &model,
        baseline: Some(&args.baseline),
        seed: args.seed,
    };
    let report =
        simulate::simulate(&trace, &setup).map_err(|e| CliError::Invalid(e.to_string()))?;
    emit(output, &report)
}
