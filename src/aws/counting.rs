//! Counting AWS calls by operation, for the pass report and the per-job call budgets
//! (DESIGN §7). An SDK interceptor records every attempt that goes on the wire, SDK retries
//! included, as `Service.Operation` (`EC2.RunInstances`, `SQS.ReceiveMessage`), and counts
//! the attempts the SDK's own retry classifiers judge throttled (by error code).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef, InterceptorContext,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::classifiers::{
    ClassifyRetry, RetryAction, RetryReason,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::retry::ErrorKind;

#[derive(Debug, Default)]
struct Counts {
    calls: Mutex<BTreeMap<String, u64>>,
    throttled: Mutex<BTreeMap<String, u64>>,
    throttled_total: AtomicU64,
}

/// Shared call counts; clones count into the same totals.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    counts: Arc<Counts>,
}

fn lock(m: &Mutex<BTreeMap<String, u64>>) -> MutexGuard<'_, BTreeMap<String, u64>> {
    // A map of counters stays valid whatever panicked while holding it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CallCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// An interceptor recording into this counter; install it on each SDK client's config.
    pub fn interceptor(&self) -> CountingInterceptor {
        CountingInterceptor {
            counter: self.clone(),
        }
    }

    /// Records one call of `operation` (`Service.Operation`).
    pub fn record(&self, operation: &str) {
        *lock(&self.counts.calls)
            .entry(operation.to_owned())
            .or_default() += 1;
    }

    /// Records one throttled response to `operation`.
    pub fn record_throttled(&self, operation: &str) {
        *lock(&self.counts.throttled)
            .entry(operation.to_owned())
            .or_default() += 1;
        self.counts.throttled_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls so far by `Service.Operation`, attempts (retries) included.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        lock(&self.counts.calls).clone()
    }

    /// Calls so far of one `Service.Operation`.
    pub fn get(&self, operation: &str) -> u64 {
        lock(&self.counts.calls)
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Calls so far, all operations.
    pub fn total(&self) -> u64 {
        lock(&self.counts.calls).values().sum()
    }

    /// Throttled responses so far, all operations.
    pub fn throttled(&self) -> u64 {
        self.counts.throttled_total.load(Ordering::Relaxed)
    }

    /// Throttled responses so far by `Service.Operation`.
    pub fn throttled_snapshot(&self) -> BTreeMap<String, u64> {
        lock(&self.counts.throttled).clone()
    }

    /// Starts counting from zero (e.g. at the start of a pass).
    pub fn reset(&self) {
        lock(&self.counts.calls).clear();
        lock(&self.counts.throttled).clear();
        self.counts.throttled_total.store(0, Ordering::Relaxed);
    }
}

/// The SDK interceptor behind [`CallCounter`].
#[derive(Debug, Clone)]
pub struct CountingInterceptor {
    counter: CallCounter,
}

/// `Service.Operation` of the call being made, from the operation's metadata.
fn operation_key(cfg: &ConfigBag) -> String {
    cfg.load::<Metadata>().map_or_else(
        || "Unknown.Unknown".to_owned(),
        |m| format!("{}.{}", m.service(), m.name()),
    )
}

/// Whether the SDK's retry classifiers (which look at the error code, e.g.
/// `RequestLimitExceeded`, `ThrottlingException`) judge this attempt throttled. Runs them
/// the way the retry strategy does: in order, a later verdict refining an earlier one.
fn is_throttled(ctx: &InterceptorContext, rc: &RuntimeComponents) -> bool {
    if !matches!(ctx.output_or_error(), Some(Err(_))) {
        return false;
    }
    let mut verdict = RetryAction::NoActionIndicated;
    for classifier in rc.retry_classifiers() {
        let next = classifier.classify_retry_v2(ctx, &verdict);
        if next == RetryAction::NoActionIndicated {
            continue;
        }
        verdict = next;
        if verdict == RetryAction::RetryForbidden {
            break;
        }
    }
    matches!(
        verdict,
        RetryAction::RetryIndicated(RetryReason::RetryableError {
            kind: ErrorKind::ThrottlingError,
            ..
        })
    )
}

impl Intercept for CountingInterceptor {
    fn name(&self) -> &'static str {
        "MayflyCallCounter"
    }

    /// Once per attempt that is about to go on the wire.
    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.counter.record(&operation_key(cfg));
        Ok(())
    }

    /// Once per attempt, with its outcome.
    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if is_throttled(context.inner(), runtime_components) {
            self.counter.record_throttled(&operation_key(cfg));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_operation_and_resets() {
        let c = CallCounter::new();
        let shared = c.clone();
        c.record("EC2.RunInstances");
        shared.record("EC2.RunInstances");
        c.record("SQS.ReceiveMessage");
        c.record_throttled("EC2.RunInstances");
        assert_eq!(c.get("EC2.RunInstances"), 2);
        assert_eq!(c.get("EC2.CreateTags"), 0);
        assert_eq!(c.total(), 3);
        assert_eq!(c.throttled(), 1);
        assert_eq!(c.throttled_snapshot().get("EC2.RunInstances"), Some(&1));
        let snap = shared.snapshot();
        assert_eq!(
            snap.keys().collect::<Vec<_>>(),
            ["EC2.RunInstances", "SQS.ReceiveMessage"]
        );
        shared.reset();
        assert_eq!(c.total(), 0);
        assert_eq!(c.throttled(), 0);
    }

    #[test]
    fn operation_key_reads_the_operation_metadata() {
        let mut bag = ConfigBag::base();
        assert_eq!(operation_key(&bag), "Unknown.Unknown");
        let mut layer = aws_smithy_types::config_bag::Layer::new("op");
        layer.store_put(Metadata::new("RunInstances", "EC2"));
        bag.push_shared_layer(layer.freeze());
        assert_eq!(operation_key(&bag), "EC2.RunInstances");
    }
}
