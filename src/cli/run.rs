//! `mayfly run`: the scheduler as a daemon. It holds the leader lease and, while leader, runs
//! a pass every interval; on SIGTERM or SIGINT it finishes the current pass, releases the
//! lease and exits 0. Standbys observe the lease and take over when it expires.

use std::io::Write;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::{App, CliError, Output, RunArgs};
use crate::lease::{DynamoLeaseStore, Lease, LeaseStatus};
use crate::scheduler::TickOptions;

/// One line on stdout per event, flushed (text, or one JSON object per line).
fn say(output: Output, event: &str, fields: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = match output {
        Output::Json => {
            let mut v = fields;
            v["event"] = serde_json::Value::from(event);
            writeln!(out, "{v}")
        }
        Output::Text => {
            let rest: Vec<String> = fields
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            writeln!(out, "{event} {}", rest.join(" "))
        }
    };
    let _ = out.flush();
}

pub(super) async fn run(app: &App, output: Output, args: &RunArgs) -> Result<(), CliError> {
    let scheduler = app.scheduler(&args.pass).await?;
    let ttl = Duration::from_secs(args.lease_ttl.as_secs().max(3));
    let interval = Duration::from_secs(args.interval.as_secs().max(1));
    let holder = format!(
        "{}:{}:{:08x}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
        std::process::id(),
        Utc::now().timestamp_subsec_nanos()
    );
    let store = DynamoLeaseStore::new(app.dynamodb().clone(), app.names.jobs_table());
    let mut lease = Lease::new(store, "scheduler", holder.clone(), ttl);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::Runtime(format!("cannot watch SIGTERM: {e}")))?;
    say(
        output,
        "started",
        serde_json::json!({"holder": holder, "lease_ttl_s": ttl.as_secs(), "interval_s": interval.as_secs()}),
    );
    let mut was_leader: Option<bool> = None;
    let mut next_pass = Instant::now();
    loop {
        match lease.tick(Instant::now()).await {
            Ok(LeaseStatus::Leader) => {
                if was_leader != Some(true) {
                    say(output, "leader", serde_json::json!({"holder": holder}));
                    was_leader = Some(true);
                }
            }
            Ok(LeaseStatus::Follower { holder: other }) => {
                if was_leader != Some(false) {
                    say(output, "standby", serde_json::json!({"leader": other}));
                    was_leader = Some(false);
                }
            }
            Err(e) => tracing::warn!(error = %e, "Cannot reach the leader lease; retrying."),
        }
        if lease.is_leader(Instant::now()) && Instant::now() >= next_pass {
            next_pass = Instant::now() + interval;
            say(output, "pass-start", serde_json::json!({}));
            match scheduler.tick(TickOptions::default(), Utc::now()).await {
                Ok(r) => say(
                    output,
                    "pass",
                    serde_json::json!({
                        "launched": r.launch.instances.len(),
                        "ingested": r.ingest.accepted,
                        "events": r.events.applied,
                        "reaped": r.reconcile.terminated.len(),
                        "duration_ms": r.duration_ms,
                    }),
                ),
                Err(e) => say(
                    output,
                    "pass-error",
                    serde_json::json!({"error": e.to_string()}),
                ),
            }
        }
        let nap = (ttl / 3).min(interval).min(
            next_pass
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(200)),
        );
        tokio::select! {
            () = tokio::time::sleep(nap) => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    if let Err(e) = lease.release().await {
        tracing::warn!(error = %e, "Cannot release the leader lease; it expires by itself.");
    }
    say(output, "stopped", serde_json::json!({"holder": holder}));
    Ok(())
}
