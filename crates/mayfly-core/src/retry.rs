//! What happens after a failed attempt: another attempt after a backoff, or `dead`. Pure: the
//! jitter is derived from the job id and attempt, so the same failure gives the same decision.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::profile::RetryPolicy;

/// Why an attempt ended badly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum FailureCause {
    /// The job's command exited non-zero.
    ExitCode { code: i32 },
    /// EC2 reclaimed the spot instance.
    SpotInterruption,
    /// The instance never reported `started` within the boot timeout.
    BootTimeout,
    /// Heartbeats stopped for longer than the heartbeat timeout.
    HeartbeatLost,
    /// The instance disappeared without a `finished` event.
    InstanceLost,
    /// The job ran past its maximum runtime.
    MaxRuntime,
    /// EC2 ended the instance before it started for lack of capacity (its `StateReason`):
    /// the launch got no usable instance, so the retry moves on to the next rung.
    NoCapacity { code: String },
    /// EC2 could not start the instance as configured (its `StateReason`: a KMS key, a
    /// snapshot, the EBS volume limit): the payer waits for its launch settings to be fixed.
    LaunchRefused { code: String, message: String },
}

impl std::fmt::Display for FailureCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureCause::ExitCode { code } => write!(f, "exit code {code}"),
            FailureCause::SpotInterruption => f.write_str("spot interruption"),
            FailureCause::BootTimeout => f.write_str("boot timeout: no `started` event"),
            FailureCause::HeartbeatLost => f.write_str("heartbeat lost"),
            FailureCause::InstanceLost => f.write_str("instance lost without a `finished` event"),
            FailureCause::MaxRuntime => f.write_str("maximum runtime exceeded"),
            FailureCause::NoCapacity { code } => {
                write!(f, "EC2 ended the instance before it started: {code}")
            }
            FailureCause::LaunchRefused { code, message } if message.is_empty() => {
                write!(f, "EC2 could not start the instance: {code}")
            }
            FailureCause::LaunchRefused { code, message } => {
                write!(f, "EC2 could not start the instance: {code}: {message}")
            }
        }
    }
}

impl FailureCause {
    /// The cause's stable name (its serde tag): `exit_code`, `spot_interruption`,
    /// `boot_timeout`, `heartbeat_lost`, `instance_lost`, `max_runtime`, `no_capacity`,
    /// `launch_refused`.
    pub fn label(&self) -> &'static str {
        match self {
            FailureCause::ExitCode { .. } => "exit_code",
            FailureCause::SpotInterruption => "spot_interruption",
            FailureCause::BootTimeout => "boot_timeout",
            FailureCause::HeartbeatLost => "heartbeat_lost",
            FailureCause::InstanceLost => "instance_lost",
            FailureCause::MaxRuntime => "max_runtime",
            FailureCause::NoCapacity { .. } => "no_capacity",
            FailureCause::LaunchRefused { .. } => "launch_refused",
        }
    }

    /// EC2 ended the launch, not the job: the instance never had a chance to run it, so the
    /// attempt spends no retry ([`crate::job::Attempt::spends_retry`]).
    pub fn is_launch_failure(&self) -> bool {
        matches!(
            self,
            FailureCause::NoCapacity { .. } | FailureCause::LaunchRefused { .. }
        )
    }
}

/// The retry decision for a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Queue attempt `attempt + 1`, not before this time.
    Retry {
        not_before: DateTime<Utc>,
        reason: String,
    },
    /// No more attempts.
    Dead { reason: String },
}

/// Decides after a failed attempt, `attempt` being the attempts spent so far (1-based, the
/// failed one included unless it was a launch failure, which spends none) failed with `cause`
/// at `now`. Infrastructure causes are always worth another attempt; exit codes only when
/// listed.
pub fn decide(
    policy: &RetryPolicy,
    job_id: &str,
    attempt: u32,
    cause: &FailureCause,
    now: DateTime<Utc>,
) -> Decision {
    if cause.is_launch_failure() {
        let next = match cause {
            FailureCause::NoCapacity { .. } => "retrying on the next rung",
            _ => "waiting for the launch settings to be fixed",
        };
        return Decision::Retry {
            not_before: now + backoff(policy, job_id, attempt.max(1)),
            reason: format!("{cause}; {next} (no retry spent)"),
        };
    }
    let retryable = match cause {
        FailureCause::ExitCode { code } => policy.retryable_exit_codes.contains(code),
        FailureCause::MaxRuntime => false,
        _ => true,
    };
    if !retryable {
        return Decision::Dead {
            reason: format!("attempt {attempt}: {cause} (not retryable)"),
        };
    }
    if attempt >= policy.max_attempts {
        return Decision::Dead {
            reason: format!(
                "attempt {attempt}: {cause}; retries exhausted ({} attempts)",
                policy.max_attempts
            ),
        };
    }
    Decision::Retry {
        not_before: now + backoff(policy, job_id, attempt),
        reason: format!("attempt {attempt}: {cause}; retrying"),
    }
}

/// Exponential backoff from `policy.backoff`, capped at `backoff_max`, with ±20 % jitter so
/// many jobs failing together do not retry in lockstep.
pub fn backoff(policy: &RetryPolicy, job_id: &str, attempt: u32) -> Duration {
    let base = policy.backoff.as_secs().max(1) as f64;
    let exp = base * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
    let capped = exp.min(policy.backoff_max.as_secs().max(1) as f64);
    let hash = format!("{job_id}#{attempt}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let unit = (hash % 10_000) as f64 / 10_000.0;
    let jittered = capped * (0.8 + 0.4 * unit);
    Duration::milliseconds((jittered * 1000.0) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            retryable_exit_codes: vec![75],
            backoff: "1m".parse().unwrap(),
            backoff_max: "10m".parse().unwrap(),
        }
    }

    #[test]
    fn exit_codes_retry_only_when_listed() {
        let now = Utc::now();
        assert!(matches!(
            decide(&policy(), "j", 1, &FailureCause::ExitCode { code: 75 }, now),
            Decision::Retry { .. }
        ));
        assert!(matches!(
            decide(&policy(), "j", 1, &FailureCause::ExitCode { code: 2 }, now),
            Decision::Dead { .. }
        ));
        assert!(matches!(
            decide(&policy(), "j", 1, &FailureCause::SpotInterruption, now),
            Decision::Retry { .. }
        ));
        assert!(matches!(
            decide(&policy(), "j", 3, &FailureCause::SpotInterruption, now),
            Decision::Dead { .. }
        ));
    }

    #[test]
    fn launch_failures_spend_no_retry() {
        let now = Utc::now();
        let no_capacity = FailureCause::NoCapacity {
            code: "Server.InsufficientInstanceCapacity".into(),
        };
        // However many attempts were spent, a launch EC2 ended is retried.
        match decide(&policy(), "j", 3, &no_capacity, now) {
            Decision::Retry { reason, not_before } => {
                assert!(reason.contains("next rung"), "{reason}");
                assert!(not_before > now);
            }
            other => panic!("{other:?}"),
        }
        assert!(no_capacity.is_launch_failure());
        assert!(!FailureCause::InstanceLost.is_launch_failure());
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_bounds() {
        let p = policy();
        for attempt in 1..8 {
            let d = backoff(&p, "job-1", attempt).num_milliseconds() as f64 / 1000.0;
            let nominal = (60.0 * 2f64.powi(attempt as i32 - 1)).min(600.0);
            assert!(
                d >= nominal * 0.8 - 0.001 && d <= nominal * 1.2 + 0.001,
                "attempt {attempt}: {d}"
            );
        }
        assert_eq!(backoff(&p, "job-1", 2), backoff(&p, "job-1", 2));
    }
}
