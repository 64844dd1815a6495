//! Pieces of the daemon (`mayfly run`) beyond the pass loop itself: waking on arrivals
//! ([`wake`]), the ledger copy it keeps between passes ([`cache`]), and the metrics it serves
//! ([`serve`], from a [`MetricsSource`]).

pub mod cache;
pub mod serve;
pub mod wake;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::aws::counting::CallCounter;
use crate::metrics::{LedgerGauges, Metrics, PassCounters};
use crate::ports::{ConfigStore, Ledger};
use crate::scheduler::PassReport;

/// How long ledger gauges are reused between scrapes: they read every job in flight or waiting
/// and today's terminal jobs.
pub const LEDGER_REFRESH: Duration = Duration::from_secs(10);

/// What the daemon's metrics are made of: the pass counters it accumulates, the AWS call
/// counts of its clients, and ledger gauges read on demand (cached for [`LEDGER_REFRESH`]).
#[derive(Clone)]
pub struct MetricsSource {
    counters: Arc<Mutex<PassCounters>>,
    calls: CallCounter,
    ledger: Arc<dyn Ledger>,
    config: Arc<dyn ConfigStore>,
    cached: Arc<tokio::sync::Mutex<Option<(Instant, LedgerGauges)>>>,
}

impl std::fmt::Debug for MetricsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsSource").finish_non_exhaustive()
    }
}

impl MetricsSource {
    pub fn new(calls: CallCounter, ledger: Arc<dyn Ledger>, config: Arc<dyn ConfigStore>) -> Self {
        Self {
            counters: Arc::default(),
            calls,
            ledger,
            config,
            cached: Arc::default(),
        }
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, PassCounters> {
        // Plain counters stay valid whatever panicked while holding them.
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn record_pass(&self, report: &PassReport) {
        self.counters().record(report);
    }

    pub fn record_pass_failure(&self) {
        self.counters().pass_failures += 1;
    }

    /// A snapshot now. Without a readable ledger, the gauges are left out (and the failure
    /// logged), so counters are still served.
    pub async fn snapshot(&self) -> Metrics {
        let now = Utc::now();
        let ledger = {
            let mut cached = self.cached.lock().await;
            match cached.as_ref() {
                Some((at, g)) if at.elapsed() < LEDGER_REFRESH => Some(g.clone()),
                _ => {
                    match LedgerGauges::load(self.ledger.as_ref(), self.config.as_ref(), now).await
                    {
                        Ok(g) => {
                            *cached = Some((Instant::now(), g.clone()));
                            Some(g)
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "Cannot read the ledger for metrics.");
                            None
                        }
                    }
                }
            }
        };
        Metrics {
            at: now,
            passes: self.counters().clone(),
            ledger,
            aws_calls: self.calls.snapshot(),
            aws_throttled: self.calls.throttled_snapshot(),
        }
    }
}
