//! `mayfly ledger backfill`: index keys for items written before the indexes existed.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{emit, App, CliError, LedgerCommand, Output};

/// What a backfill run did.
#[derive(Debug, Default, Serialize)]
struct Backfilled {
    scanned: u64,
    updated: u64,
    skipped: u64,
    raced: u64,
}

impl fmt::Display for Backfilled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "backfill done: {} items scanned, {} given their index keys, {} written meanwhile by mayfly, {} not jobs",
            self.scanned, self.updated, self.raced, self.skipped
        )
    }
}

pub(super) async fn run(app: &App, output: Output, cmd: LedgerCommand) -> Result<(), CliError> {
    let LedgerCommand::Backfill {
        start_after,
        rate,
        page,
    } = cmd;
    let ledger = app.dynamo_ledger();
    let started = Instant::now();
    let mut done = Backfilled::default();
    let mut next = start_after;
    loop {
        let p = ledger
            .backfill_page(next.as_deref(), page)
            .await
            .map_err(|e| {
                CliError::Runtime(format!(
                    "job ledger: {e} (resume with --start-after {})",
                    next.as_deref().unwrap_or("(the start: no --start-after)")
                ))
            })?;
        done.scanned += p.scanned;
        done.updated += p.updated;
        done.skipped += p.skipped;
        done.raced += p.raced;
        next = p.next;
        let Some(key) = &next else { break };
        eprintln!(
            "{} scanned, {} updated; resume with --start-after '{key}'",
            done.scanned, done.updated
        );
        // Pace: the items scanned so far may not outrun --rate per second.
        let due = Duration::from_secs_f64(done.scanned as f64 / f64::from(rate));
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    emit(output, &done)
}
