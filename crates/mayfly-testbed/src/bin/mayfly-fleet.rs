//! The `mayfly-fleet` command (development tooling): parses arguments, sets up logging, runs
//! the local fleet until idle, its runtime limit, SIGINT or SIGTERM, and maps the result to
//! an exit code (0 when it stopped normally, 1 failure at run time, 2 invalid input).

use std::process::ExitCode;

use clap::Parser;
use mayfly_testbed::fleet::{self, FleetArgs};

fn main() -> ExitCode {
    let args = FleetArgs::parse();
    let level = match args.verbose {
        0 => "warn,mayfly=info,mayfly_testbed=info",
        _ => "warn,mayfly=debug,mayfly_testbed=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAYFLY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(fleet::cli::run(args, shutdown_signal())) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            eprintln!("warning: cannot watch SIGTERM ({e}); only SIGINT stops the fleet");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
