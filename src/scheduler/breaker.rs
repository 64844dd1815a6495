//! The circuit breaker's pause: a payer whose launches cannot work as configured (repeated
//! boot failures, a launch EC2 refused on configuration) is paused with the reason, so it
//! stops burning launches and its jobs wait, none lost. `mayfly payers resume` lifts it, and
//! so does `mayfly payers apply` of a changed profile (the fix the pause waits for).

use chrono::{DateTime, Utc};

use super::Scheduler;
use crate::ports::StoreError;

/// What became of a pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Paused {
    /// This call paused the payer.
    Now,
    /// It was paused already (an operator's reason, or an earlier one, is kept).
    Already,
}

/// Pauses `payer_id` on the circuit breaker's behalf with `reason`, unless it is paused
/// already. Conditional on the row's version; retried on a lost condition. `Err` says why it
/// could not be written.
pub(super) async fn pause(
    s: &Scheduler,
    payer_id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Paused, String> {
    let config = &s.deps.config;
    for _ in 0..3 {
        let row = match config.get(payer_id).await {
            Ok(Some(row)) => row,
            Ok(None) => return Err(format!("payer {payer_id} is not in the config table")),
            Err(e) => return Err(format!("reading payer {payer_id}: {e}")),
        };
        if row.paused.is_some() {
            return Ok(Paused::Already);
        }
        match config
            .breaker_pause(payer_id, reason, row.version, s.moment(now))
            .await
        {
            Ok(_) => {
                tracing::error!(%payer_id, %reason, "Circuit breaker paused the payer.");
                return Ok(Paused::Now);
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(format!("pausing payer {payer_id}: {e}")),
        }
    }
    Err(format!(
        "payer {payer_id} kept changing; not paused this pass"
    ))
}
