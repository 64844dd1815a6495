//! `mayfly run`: the scheduler as a daemon. It holds the leader lease and, while leader, runs
//! a pass every interval and one soon after work arrives (watchers long-poll the intake and
//! events queues, see [`crate::daemon::wake`]). Reconciling with EC2 runs once per reconcile
//! interval as a pass of its own, beside the others, so an arrival never waits behind a
//! DescribeInstances of the whole fleet; it also refreshes the ledger copy the passes plan
//! from (see [`crate::daemon::cache`]). On SIGTERM or SIGINT it finishes the passes under
//! way, releases the lease and exits 0. Standbys observe the lease and take over when it
//! expires. With `--metrics-addr`, it serves Prometheus metrics.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Notify;

use super::{App, CliError, Output, RunArgs};
use crate::daemon::cache::CachedLedger;
use crate::daemon::wake::{self, Prefetched};
use crate::daemon::{serve, MetricsSource};
use crate::lease::{DynamoLeaseStore, Lease, LeaseStatus};
use crate::scheduler::{PassReport, Scheduler, TickError, TickOptions};

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

/// Wraps the scheduler's intake and events queues so watchers can long-poll them, and
/// starts one watcher per queue.
fn start_watchers(
    scheduler: &mut Scheduler,
    leader: &Arc<AtomicBool>,
    wake: &Arc<Notify>,
) -> Vec<Arc<Prefetched>> {
    let intake = Arc::new(Prefetched::new(scheduler.deps.intake.clone()));
    let events = Arc::new(Prefetched::new(scheduler.deps.events.clone()));
    scheduler.deps.intake = intake.clone();
    scheduler.deps.events = events.clone();
    for q in [&intake, &events] {
        tokio::spawn(wake::watch(q.clone(), leader.clone(), wake.clone()));
    }
    vec![intake, events]
}

/// Binds the metrics listener and serves it in the background.
async fn start_metrics(
    addr: std::net::SocketAddr,
    source: &MetricsSource,
) -> Result<std::net::SocketAddr, CliError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::Invalid(format!("--metrics-addr {addr}: cannot listen: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError::Runtime(format!("--metrics-addr {addr}: {e}")))?;
    let source = source.clone();
    tokio::spawn(serve::serve(listener, move || {
        let source = source.clone();
        async move { source.snapshot().await.to_prometheus() }
    }));
    Ok(bound)
}

pub(super) async fn run(app: &App, output: Output, args: &RunArgs) -> Result<(), CliError> {
    let mut scheduler = app.scheduler(&args.pass).await?;
    let ttl = Duration::from_secs(args.lease_ttl.as_secs().max(3));
    let interval = Duration::from_secs(args.interval.as_secs().max(1));
    let reconcile_every = Duration::from_secs(args.reconcile_interval.as_secs());
    let batch_window = Duration::from_millis(args.batch_window_ms);
    let holder = format!(
        "{}:{}:{:08x}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
        std::process::id(),
        Utc::now().timestamp_subsec_nanos()
    );
    let metrics = MetricsSource::new(app.calls().clone(), app.ledger(), app.config());
    let metrics_addr = match args.metrics_addr {
        Some(addr) => Some(start_metrics(addr, &metrics).await?),
        None => None,
    };
    let store = DynamoLeaseStore::new(app.dynamodb().clone(), app.names.jobs_table());
    let mut lease = Lease::new(store, "scheduler", holder.clone(), ttl);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::Runtime(format!("cannot watch SIGTERM: {e}")))?;
    let leading = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(Notify::new());
    let watched = start_watchers(&mut scheduler, &leading, &wake);
    let cache = Arc::new(CachedLedger::new(scheduler.deps.ledger.clone()));
    scheduler.deps.ledger = cache.clone();
    let mut reconciling: Option<tokio::task::JoinHandle<()>> = None;
    say(
        output,
        "started",
        serde_json::json!({
            "holder": holder,
            "lease_ttl_s": ttl.as_secs(),
            "interval_s": interval.as_secs(),
            "reconcile_interval_s": reconcile_every.as_secs(),
            "batch_window_ms": batch_window.as_millis() as u64,
            "metrics": metrics_addr.map(|a| format!("http://{a}/metrics")),
        }),
    );
    let mut was_leader: Option<bool> = None;
    let mut next_pass = Instant::now();
    let mut next_reconcile = Instant::now();
    let mut woken = false;
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
        let leader = lease.is_leader(Instant::now());
        if leading.swap(leader, Ordering::AcqRel) != leader {
            // What was read while leading may be stale when leading again.
            cache.invalidate();
        }
        if !leader {
            for q in &watched {
                q.forget();
            }
        }
        let idle = reconciling.as_ref().is_none_or(|h| h.is_finished());
        if leader && idle && Instant::now() >= next_reconcile {
            next_reconcile = Instant::now() + reconcile_every;
            reconciling = Some(tokio::spawn(reconcile(
                scheduler.clone(),
                cache.clone(),
                output,
                metrics.clone(),
            )));
        }
        if leader && (woken || Instant::now() >= next_pass) {
            next_pass = Instant::now() + interval;
            woken = false;
            pass(&scheduler, output, &metrics).await;
        }
        let nap = (ttl / 3).min(interval).min(
            next_pass
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(200)),
        );
        tokio::select! {
            () = tokio::time::sleep(nap) => {}
            () = wake.notified(), if leader => {
                // Let a burst gather, then plan it in one pass.
                tokio::time::sleep(batch_window).await;
                woken = true;
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    leading.store(false, Ordering::Release);
    if let Some(running) = reconciling {
        let _ = running.await;
    }
    if let Err(e) = lease.release().await {
        tracing::warn!(error = %e, "Cannot release the leader lease; it expires by itself.");
    }
    say(output, "stopped", serde_json::json!({"holder": holder}));
    Ok(())
}

/// Runs one planning pass (no reconcile), records it in the metrics and prints its line.
async fn pass(scheduler: &Scheduler, output: Output, metrics: &MetricsSource) {
    say(
        output,
        "pass-start",
        serde_json::json!({"reconcile": false}),
    );
    let opts = TickOptions {
        skip_reconcile: true,
        ..TickOptions::default()
    };
    let result = scheduler.tick(opts, Utc::now()).await;
    record(output, metrics, result, false);
}

/// Refreshes the ledger copy, then reconciles with EC2 (a pass of its own); records it and
/// prints its line.
async fn reconcile(
    scheduler: Scheduler,
    cache: Arc<CachedLedger>,
    output: Output,
    metrics: MetricsSource,
) {
    say(output, "pass-start", serde_json::json!({"reconcile": true}));
    if let Err(e) = cache.refresh().await {
        tracing::warn!(error = %e, "Cannot refresh the ledger copy; passes read the ledger.");
        cache.invalidate();
    }
    let result = scheduler.reconcile_pass(Utc::now()).await;
    record(output, &metrics, result, true);
}

fn record(
    output: Output,
    metrics: &MetricsSource,
    result: Result<PassReport, TickError>,
    reconciled: bool,
) {
    match result {
        Ok(r) => {
            metrics.record_pass(&r);
            say(
                output,
                "pass",
                serde_json::json!({
                    "launched": r.launch.instances.len(),
                    "ingested": r.ingest.accepted,
                    "events": r.events.applied,
                    "reconciled": reconciled,
                    "reaped": r.reconcile.terminated.len(),
                    "duration_ms": r.duration_ms,
                }),
            )
        }
        Err(e) => {
            metrics.record_pass_failure();
            say(
                output,
                "pass-error",
                serde_json::json!({"error": e.to_string()}),
            )
        }
    }
}
