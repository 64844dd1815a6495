//! Client-side token buckets mirroring EC2's API rate limits, so mayfly slows itself down
//! before EC2 has to (`RequestLimitExceeded` costs a call and a back-off).
//!
//! Time is an input: [`TokenBucket::try_take`] and [`TokenBucket::wait_time`] take `now`,
//! [`TokenBucket::acquire_with`] takes a clock and a sleep, and [`TokenBucket::acquire`] uses
//! tokio's clock (so it also follows `tokio::time::pause()`). Tests never wait for real.

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The shape of one bucket: how many calls may go at once and how fast it refills.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Bucket capacity: calls that may be made back to back from a full bucket.
    pub burst: f64,
    /// Tokens added per second.
    pub per_sec: f64,
}

impl Rate {
    /// EC2's RunInstances bucket: 5 burst, 2 per second.
    pub const RUN_INSTANCES: Rate = Rate {
        burst: 5.0,
        per_sec: 2.0,
    };
    /// EC2's RunInstances *resource* bucket: instances, not calls: 1,000 burst, 2 per
    /// second. One call may launch many instances (a launch group) and spends one token of
    /// the request bucket and one of this per instance.
    pub const RUN_INSTANCES_RESOURCE: Rate = Rate {
        burst: 1000.0,
        per_sec: 2.0,
    };
    /// EC2's TerminateInstances resource bucket: 1,000 instances burst, 20 per second.
    pub const TERMINATE_INSTANCES_RESOURCE: Rate = Rate {
        burst: 1000.0,
        per_sec: 20.0,
    };
    /// EC2's TerminateInstances bucket: 100 burst, 5 per second.
    pub const TERMINATE_INSTANCES: Rate = Rate {
        burst: 100.0,
        per_sec: 5.0,
    };
    /// EC2's bucket for filtered or paginated Describe calls: 100 burst, 20 per second.
    pub const DESCRIBE: Rate = Rate {
        burst: 100.0,
        per_sec: 20.0,
    };
    /// No client-side limit (the service's own limits still apply).
    pub const UNLIMITED: Rate = Rate {
        burst: f64::INFINITY,
        per_sec: f64::INFINITY,
    };

    /// This shape with `tokens` less burst (never below one call), the refill unchanged.
    pub fn with_headroom(self, tokens: f64) -> Rate {
        Rate {
            burst: (self.burst - tokens).max(1.0),
            per_sec: self.per_sec,
        }
    }
}

/// Tokens mayfly's default buckets keep below EC2's burst. Mirroring EC2's bucket exactly
/// leaves no slack: a call that took its token first but reached EC2 later than the next one
/// (a cold connection, scheduling jitter) finds EC2's bucket empty, and a throttled
/// RunInstances ends a pass's launching. One token is half a second of slack at
/// RunInstances' 2/s, for half a second less of the initial burst; the sustained rate stays
/// EC2's. EC2's buckets are also per account, shared with every other caller.
pub const HEADROOM: f64 = 1.0;

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    /// When `tokens` was last brought up to date; `None` until first use (the bucket starts full).
    last: Option<Instant>,
}

/// A token bucket: starts full, refills continuously, one token per call.
#[derive(Debug)]
pub struct TokenBucket {
    burst: f64,
    per_sec: f64,
    state: Mutex<BucketState>,
}

/// Smallest refill rate accepted, so a misconfigured zero rate waits long instead of forever.
const MIN_PER_SEC: f64 = 1e-3;

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `refill_per_sec`. Values are clamped to a
    /// usable range: a burst below one call becomes one, a rate below 0.001/s becomes 0.001/s.
    pub fn new(burst: f64, refill_per_sec: f64) -> Self {
        // `max` also maps NaN to the floor.
        let burst = burst.max(1.0);
        let per_sec = refill_per_sec.max(MIN_PER_SEC);
        Self {
            burst,
            per_sec,
            state: Mutex::new(BucketState {
                tokens: burst,
                last: None,
            }),
        }
    }

    /// A bucket of the given shape.
    pub fn with_rate(rate: Rate) -> Self {
        Self::new(rate.burst, rate.per_sec)
    }

    /// The bucket's shape after clamping.
    pub fn rate(&self) -> Rate {
        Rate {
            burst: self.burst,
            per_sec: self.per_sec,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BucketState> {
        // The state is two numbers that are always consistent; a panic elsewhere cannot
        // leave them half-written, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Brings the token count up to `now`. A `now` earlier than the last update adds nothing.
    fn refill(&self, s: &mut BucketState, now: Instant) {
        if let Some(last) = s.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            s.tokens = (s.tokens + elapsed * self.per_sec).min(self.burst);
            if now > last {
                s.last = Some(now);
            }
        } else {
            s.last = Some(now);
        }
    }

    /// Takes one token if one is available at `now`.
    pub fn try_take(&self, now: Instant) -> bool {
        self.try_take_n(now, 1)
    }

    /// Tokens a take of `n` needs: never more than the burst, which a take could never find.
    fn needed(&self, n: u32) -> f64 {
        f64::from(n.max(1)).min(self.burst)
    }

    /// Takes `n` tokens (at most the burst) if they are available at `now`.
    pub fn try_take_n(&self, now: Instant, n: u32) -> bool {
        self.try_take_leaving(now, n, 0.0)
    }

    /// Takes `n` tokens (at most the burst) if `n + leave` are available at `now` (at most
    /// the burst), so that `leave` stay behind.
    pub fn try_take_leaving(&self, now: Instant, n: u32, leave: f64) -> bool {
        let take = self.needed(n);
        let need = (take + leave.max(0.0)).min(self.burst);
        let mut s = self.lock();
        self.refill(&mut s, now);
        if s.tokens >= need {
            s.tokens -= take;
            true
        } else {
            false
        }
    }

    /// How long from `now` until a token is available (zero if one is).
    pub fn wait_time(&self, now: Instant) -> Duration {
        self.wait_time_n(now, 1)
    }

    /// How long from `now` until `n` tokens (at most the burst) are available.
    pub fn wait_time_n(&self, now: Instant, n: u32) -> Duration {
        self.wait_time_leaving(now, n, 0.0)
    }

    /// How long from `now` until `n + leave` tokens (at most the burst) are available.
    pub fn wait_time_leaving(&self, now: Instant, n: u32, leave: f64) -> Duration {
        let need = (self.needed(n) + leave.max(0.0)).min(self.burst);
        let mut s = self.lock();
        self.refill(&mut s, now);
        let missing = need - s.tokens;
        if missing <= 0.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(missing / self.per_sec).unwrap_or(Duration::MAX)
    }

    /// Whole tokens available at `now`, without taking any: the calls that may go right away.
    pub fn available(&self, now: Instant) -> u32 {
        let mut s = self.lock();
        self.refill(&mut s, now);
        // Float-to-int casts saturate: an unlimited bucket reports u32::MAX.
        s.tokens.floor() as u32
    }

    /// Empties the bucket at `now`: the service said its own bucket is empty (a throttled
    /// call), so the next call waits for a whole token to refill instead of being refused too.
    pub fn drain(&self, now: Instant) {
        let mut s = self.lock();
        self.refill(&mut s, now);
        s.tokens = s.tokens.min(0.0);
    }

    /// Waits (on tokio's clock) until a token is available, and takes it. Returns the time
    /// spent waiting.
    pub async fn acquire(&self) -> Duration {
        self.acquire_with(Instant::now, tokio::time::sleep).await
    }

    /// Waits (on tokio's clock) until `n` tokens (at most the burst) are available, and
    /// takes them.
    pub async fn acquire_n(&self, n: u32) -> Duration {
        self.acquire_leaving(n, 0.0).await
    }

    /// Waits (on tokio's clock) until `n + leave` tokens are available, and takes `n`.
    pub async fn acquire_leaving(&self, n: u32, leave: f64) -> Duration {
        let start = Instant::now();
        let mut t = start;
        while !self.try_take_leaving(t, n, leave) {
            tokio::time::sleep(self.wait_time_leaving(t, n, leave)).await;
            t = Instant::now();
        }
        t.saturating_duration_since(start)
    }

    /// [`acquire`](Self::acquire) on a given clock: `now` reads it, `sleep` waits on it.
    pub async fn acquire_with<S>(
        &self,
        mut now: impl FnMut() -> Instant,
        mut sleep: impl FnMut(Duration) -> S,
    ) -> Duration
    where
        S: Future<Output = ()>,
    {
        let start = now();
        let mut t = start;
        while !self.try_take(t) {
            sleep(self.wait_time(t)).await;
            t = now();
        }
        t.saturating_duration_since(start)
    }
}

/// The client-side buckets for the EC2 calls mayfly makes. RunInstances and
/// TerminateInstances each have two, as EC2 does: a request bucket (calls) and a resource
/// bucket (instances).
#[derive(Debug)]
pub struct Ec2Limits {
    pub run_instances: TokenBucket,
    /// Instances RunInstances may launch: one token per instance of a call.
    pub run_instances_resource: TokenBucket,
    pub terminate_instances: TokenBucket,
    /// Instances TerminateInstances may end: one token per instance id of a call.
    pub terminate_resource: TokenBucket,
    /// Filtered, paginated DescribeInstances (list_managed, find_attempt).
    pub describe: TokenBucket,
}

impl Ec2Limits {
    /// These request buckets, with EC2's resource buckets ([`Rate::RUN_INSTANCES_RESOURCE`],
    /// [`Rate::TERMINATE_INSTANCES_RESOURCE`]).
    pub fn new(run_instances: Rate, terminate_instances: Rate, describe: Rate) -> Self {
        Self {
            run_instances: TokenBucket::with_rate(run_instances),
            run_instances_resource: TokenBucket::with_rate(Rate::RUN_INSTANCES_RESOURCE),
            terminate_instances: TokenBucket::with_rate(terminate_instances),
            terminate_resource: TokenBucket::with_rate(Rate::TERMINATE_INSTANCES_RESOURCE),
            describe: TokenBucket::with_rate(describe),
        }
    }

    /// These limits with other resource buckets (RunInstances', TerminateInstances').
    pub fn with_resources(mut self, run_instances: Rate, terminate_instances: Rate) -> Self {
        self.run_instances_resource = TokenBucket::with_rate(run_instances);
        self.terminate_resource = TokenBucket::with_rate(terminate_instances);
        self
    }

    /// No client-side limits, for emulator tests that launch many instances quickly.
    pub fn unlimited() -> Self {
        Self::new(Rate::UNLIMITED, Rate::UNLIMITED, Rate::UNLIMITED)
            .with_resources(Rate::UNLIMITED, Rate::UNLIMITED)
    }

    /// Waits for one RunInstances call of `instances` instances: a token of the request
    /// bucket and `instances` of the resource bucket. Once the resource bucket is drained,
    /// mirroring it exactly leaves no slack (a call that takes its tokens the moment they
    /// are there reaches EC2, whose bucket was drained a little later, a moment too soon), so
    /// a call waits until [`HEADROOM`] more than it needs are there: half a second at 2/s,
    /// once; the sustained rate stays EC2's.
    pub async fn acquire_run_instances(&self, instances: u32) -> Duration {
        self.run_instances_resource
            .acquire_leaving(instances, HEADROOM)
            .await
            + self.run_instances.acquire().await
    }

    /// Waits for one TerminateInstances call of `instances` instance ids (with the slack of
    /// [`Self::acquire_run_instances`]).
    pub async fn acquire_terminate(&self, instances: u32) -> Duration {
        self.terminate_resource
            .acquire_leaving(instances, HEADROOM)
            .await
            + self.terminate_instances.acquire().await
    }
}

impl Default for Ec2Limits {
    /// EC2's default account buckets, each [`HEADROOM`] below EC2's burst.
    fn default() -> Self {
        Self::new(
            Rate::RUN_INSTANCES.with_headroom(HEADROOM),
            Rate::TERMINATE_INSTANCES.with_headroom(HEADROOM),
            Rate::DESCRIBE.with_headroom(HEADROOM),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::cell::Cell;

    #[test]
    fn burst_then_refill_rate() {
        let b = TokenBucket::with_rate(Rate::RUN_INSTANCES);
        let t0 = Instant::now();
        assert_eq!(b.available(t0), 5);
        for _ in 0..5 {
            assert!(b.try_take(t0));
        }
        assert!(!b.try_take(t0));
        assert_eq!(b.wait_time(t0), Duration::from_millis(500));
        assert!(!b.try_take(t0 + Duration::from_millis(499)));
        assert!(b.try_take(t0 + Duration::from_millis(500)));
        // Ten idle seconds refill to the burst, not beyond.
        assert_eq!(b.available(t0 + Duration::from_secs(10)), 5);
    }

    #[tokio::test]
    async fn acquire_paces_calls_at_the_refill_rate() {
        let b = TokenBucket::with_rate(Rate::RUN_INSTANCES);
        let start = Instant::now();
        let clock = Cell::new(start);
        let mut waited = Duration::ZERO;
        for _ in 0..25 {
            waited += b
                .acquire_with(
                    || clock.get(),
                    |d| {
                        clock.set(clock.get() + d);
                        std::future::ready(())
                    },
                )
                .await;
        }
        // 5 from the burst, then 20 at 2 per second.
        assert_eq!(clock.get() - start, Duration::from_secs(10));
        assert_eq!(waited, Duration::from_secs(10));
        assert!(!b.try_take(clock.get()));
    }

    #[tokio::test]
    async fn acquire_on_tokio_clock_takes_a_token() {
        let b = TokenBucket::new(1.0, 1000.0);
        b.acquire().await;
        b.acquire().await;
        assert!(b.wait_time(Instant::now()) <= Duration::from_millis(1));
    }

    #[test]
    fn drain_empties_the_bucket_until_it_refills() {
        let b = TokenBucket::with_rate(Rate::RUN_INSTANCES);
        let t0 = Instant::now();
        assert!(b.try_take(t0));
        b.drain(t0);
        assert_eq!(b.available(t0), 0);
        assert_eq!(b.wait_time(t0), Duration::from_millis(500));
        assert!(b.try_take(t0 + Duration::from_millis(500)));
        // An unlimited bucket refills at once.
        let unlimited = TokenBucket::with_rate(Rate::UNLIMITED);
        unlimited.drain(t0);
        assert!(unlimited.try_take(t0));
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let b = TokenBucket::new(1.0, 1.0);
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        assert!(b.try_take(later));
        assert!(!b.try_take(t0));
        assert!(!b.try_take(later));
        assert!(b.try_take(later + Duration::from_secs(1)));
    }

    #[test]
    fn unlimited_and_degenerate_buckets() {
        let now = Instant::now();
        let unlimited = TokenBucket::with_rate(Rate::UNLIMITED);
        for _ in 0..10_000 {
            assert!(unlimited.try_take(now));
        }
        assert_eq!(unlimited.wait_time(now), Duration::ZERO);

        let zero = TokenBucket::new(0.0, 0.0);
        assert_eq!(
            zero.rate(),
            Rate {
                burst: 1.0,
                per_sec: MIN_PER_SEC
            }
        );
        assert!(zero.try_take(now));
        assert_eq!(zero.wait_time(now), Duration::from_secs(1000));
        let nan = TokenBucket::new(f64::NAN, f64::NAN);
        assert!(nan.try_take(now));
    }

    #[test]
    fn a_take_of_many_spends_many_and_waits_for_them() {
        let b = TokenBucket::with_rate(Rate::RUN_INSTANCES_RESOURCE);
        let t0 = Instant::now();
        assert!(b.try_take_n(t0, 600));
        assert!(!b.try_take_n(t0, 600), "400 left");
        assert_eq!(b.wait_time_n(t0, 600), Duration::from_secs(100));
        assert!(b.try_take_n(t0, 400));
        // More than the burst waits for a full bucket, never forever.
        assert_eq!(b.wait_time_n(t0, 5000), Duration::from_secs(500));
        assert_eq!(b.available(t0 + Duration::from_secs(1)), 2);
        // Leaving a token behind: 50 go once 51 are there, and one stays.
        let t1 = t0 + Duration::from_secs(25);
        assert!(!b.try_take_leaving(t1, 50, 1.0));
        assert_eq!(b.wait_time_leaving(t1, 50, 1.0), Duration::from_millis(500));
        let t2 = t1 + Duration::from_millis(500);
        assert!(b.try_take_leaving(t2, 50, 1.0));
        assert_eq!(b.available(t2), 1);
    }

    #[test]
    fn defaults_follow_ec2_a_token_below_its_burst() {
        let l = Ec2Limits::default();
        assert_eq!(
            l.run_instances.rate(),
            Rate {
                burst: 4.0,
                per_sec: 2.0
            }
        );
        assert_eq!(
            l.terminate_instances.rate(),
            Rate {
                burst: 99.0,
                per_sec: 5.0
            }
        );
        assert_eq!(
            l.describe.rate(),
            Rate {
                burst: 99.0,
                per_sec: 20.0
            }
        );
        assert_eq!(
            Rate::RUN_INSTANCES,
            Rate {
                burst: 5.0,
                per_sec: 2.0
            }
        );
        assert_eq!(Rate::RUN_INSTANCES.with_headroom(10.0).burst, 1.0);
        assert_eq!(Rate::UNLIMITED.with_headroom(HEADROOM), Rate::UNLIMITED);
    }
}
