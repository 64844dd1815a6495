//! The leader lease: which of several `mayfly run` daemons runs passes.
//!
//! No clock is shared. The lease is one record (holder, version, TTL) written only by
//! conditional writes. The holder renews it (version + 1) every third of the TTL. A candidate
//! remembers the version it sees and when it first saw it **on its own monotonic clock**; only
//! when that version has not moved for a whole TTL does it take over, with a write conditional
//! on that exact version — so two candidates cannot both win, and a holder that was paused
//! learns it lost when its next renewal fails the condition. The holder counts itself leader
//! only until its last successful write is `ttl − ttl/5` old on its own clock, which ends
//! before any candidate can have waited a full TTL after seeing that write.
//!
//! The lease decides who runs passes; it is not what keeps them safe. Every ledger write stays
//! conditional on the job's version (fencing), so a pass by a deposed leader that is still
//! running changes nothing another pass has changed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::ports::StoreError;

/// The DynamoDB store lives with the other DynamoDB adapters; this keeps its old path.
pub use crate::aws::dynamo::DynamoLeaseStore;

/// The lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Who holds it; empty when released.
    pub holder: String,
    /// Moves on every write (acquire, renew, release).
    pub version: u64,
    pub ttl_ms: u64,
}

/// Where the lease lives.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    async fn read(&self, name: &str) -> Result<Option<LeaseRecord>, StoreError>;
    /// Writes `record` only if the stored version is `expected` (`None`: no record yet).
    /// A lost condition is [`StoreError::Conflict`].
    async fn write(
        &self,
        name: &str,
        record: &LeaseRecord,
        expected: Option<u64>,
    ) -> Result<(), StoreError>;
}

/// What this candidate is, after a [`Lease::tick`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStatus {
    Leader,
    /// Someone else holds it (or held it too recently to tell).
    Follower {
        holder: String,
    },
}

/// One candidate's view of the lease.
#[derive(Debug)]
pub struct Lease<S> {
    store: S,
    name: String,
    holder: String,
    ttl: Duration,
    /// Our last written version and when we started that write.
    held: Option<(u64, Instant)>,
    /// The other holder's version and when we first saw it.
    observed: Option<(u64, Instant)>,
}

impl<S: LeaseStore> Lease<S> {
    pub fn new(
        store: S,
        name: impl Into<String>,
        holder: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Self {
            store,
            name: name.into(),
            holder: holder.into(),
            ttl,
            held: None,
            observed: None,
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Whether this candidate may act as leader at `now` (its own monotonic clock).
    pub fn is_leader(&self, now: Instant) -> bool {
        self.held
            .is_some_and(|(_, at)| now.saturating_duration_since(at) < self.ttl - self.ttl / 5)
    }

    fn record(&self, version: u64) -> LeaseRecord {
        LeaseRecord {
            holder: self.holder.clone(),
            version,
            ttl_ms: self.ttl.as_millis() as u64,
        }
    }

    async fn take(
        &mut self,
        expected: Option<u64>,
        now: Instant,
    ) -> Result<LeaseStatus, StoreError> {
        let version = expected.map_or(1, |v| v + 1);
        match self
            .store
            .write(&self.name, &self.record(version), expected)
            .await
        {
            Ok(()) => {
                self.held = Some((version, now));
                self.observed = None;
                Ok(LeaseStatus::Leader)
            }
            Err(StoreError::Conflict(_)) => {
                self.observed = None;
                Ok(LeaseStatus::Follower {
                    holder: "(another candidate)".into(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Renews (holder) or observes and maybe takes over (candidate). `now` is read before the
    /// call, from a monotonic clock.
    pub async fn tick(&mut self, now: Instant) -> Result<LeaseStatus, StoreError> {
        if let Some((version, at)) = self.held {
            if now.saturating_duration_since(at) < self.ttl / 3 {
                return Ok(LeaseStatus::Leader);
            }
            match self
                .store
                .write(&self.name, &self.record(version + 1), Some(version))
                .await
            {
                Ok(()) => {
                    self.held = Some((version + 1, now));
                    return Ok(LeaseStatus::Leader);
                }
                Err(StoreError::Conflict(_)) => {
                    tracing::warn!(holder = %self.holder, "Lost the leader lease.");
                    self.held = None;
                }
                Err(e) => return Err(e),
            }
        }
        match self.store.read(&self.name).await? {
            None => self.take(None, now).await,
            Some(r) if r.holder.is_empty() || r.holder == self.holder => {
                self.take(Some(r.version), now).await
            }
            Some(r) => {
                let ttl = Duration::from_millis(r.ttl_ms);
                match self.observed {
                    Some((v, since)) if v == r.version => {
                        if now.saturating_duration_since(since) >= ttl {
                            tracing::info!(holder = %self.holder, previous = %r.holder, "The leader lease expired; taking it over.");
                            self.take(Some(r.version), now).await
                        } else {
                            Ok(LeaseStatus::Follower { holder: r.holder })
                        }
                    }
                    _ => {
                        self.observed = Some((r.version, now));
                        Ok(LeaseStatus::Follower { holder: r.holder })
                    }
                }
            }
        }
    }

    /// Gives the lease up, so a standby can take it at once.
    pub async fn release(&mut self) -> Result<(), StoreError> {
        let Some((version, _)) = self.held.take() else {
            return Ok(());
        };
        let released = LeaseRecord {
            holder: String::new(),
            version: version + 1,
            ttl_ms: self.ttl.as_millis() as u64,
        };
        match self.store.write(&self.name, &released, Some(version)).await {
            Ok(()) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The lease in memory, with DynamoDB's conditional-write semantics (tests).
#[derive(Debug, Default)]
pub struct FakeLeaseStore {
    records: Mutex<std::collections::BTreeMap<String, LeaseRecord>>,
}

#[async_trait]
impl LeaseStore for FakeLeaseStore {
    async fn read(&self, name: &str) -> Result<Option<LeaseRecord>, StoreError> {
        Ok(self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned())
    }

    async fn write(
        &self,
        name: &str,
        record: &LeaseRecord,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut records = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if records.get(name).map(|r| r.version) != expected {
            return Err(StoreError::Conflict(format!("lease {name}")));
        }
        records.insert(name.to_owned(), record.clone());
        Ok(())
    }
}

#[async_trait]
impl<T: LeaseStore + ?Sized> LeaseStore for std::sync::Arc<T> {
    async fn read(&self, name: &str) -> Result<Option<LeaseRecord>, StoreError> {
        (**self).read(name).await
    }
    async fn write(
        &self,
        name: &str,
        record: &LeaseRecord,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        (**self).write(name, record, expected).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const TTL: Duration = Duration::from_secs(30);

    fn candidates(n: usize) -> (Arc<FakeLeaseStore>, Vec<Lease<Arc<FakeLeaseStore>>>) {
        let store = Arc::new(FakeLeaseStore::default());
        let leases = (0..n)
            .map(|i| Lease::new(store.clone(), "scheduler", format!("c{i}"), TTL))
            .collect();
        (store, leases)
    }

    #[tokio::test]
    async fn the_first_takes_it_and_a_standby_waits_a_full_ttl_without_renewals() {
        let (_, mut c) = candidates(2);
        let t0 = Instant::now();
        assert_eq!(c[0].tick(t0).await.unwrap(), LeaseStatus::Leader);
        assert!(matches!(
            c[1].tick(t0).await.unwrap(),
            LeaseStatus::Follower { .. }
        ));
        // The leader renews every ttl/3: the standby never takes over.
        for s in (10..=120).step_by(10) {
            let t = t0 + Duration::from_secs(s);
            assert_eq!(c[0].tick(t).await.unwrap(), LeaseStatus::Leader);
            assert!(matches!(
                c[1].tick(t).await.unwrap(),
                LeaseStatus::Follower { .. }
            ));
        }
        // The leader stops (paused or killed) after its renewal at 120 s, which the standby
        // saw at 120 s: after a full TTL of no change on the standby's clock, it wins.
        let seen = t0 + Duration::from_secs(120);
        let early = seen + TTL - Duration::from_secs(1);
        assert!(matches!(
            c[1].tick(early).await.unwrap(),
            LeaseStatus::Follower { .. }
        ));
        assert_eq!(c[1].tick(seen + TTL).await.unwrap(), LeaseStatus::Leader);
        let stop = seen;
        // The old leader wakes up: it no longer counts itself leader, and its renewal loses.
        let wake = stop + TTL + Duration::from_secs(1);
        assert!(!c[0].is_leader(wake));
        assert!(matches!(
            c[0].tick(wake).await.unwrap(),
            LeaseStatus::Follower { .. }
        ));
    }

    #[tokio::test]
    async fn release_hands_over_at_once() {
        let (_, mut c) = candidates(2);
        let t0 = Instant::now();
        c[0].tick(t0).await.unwrap();
        c[1].tick(t0).await.unwrap();
        c[0].release().await.unwrap();
        assert!(!c[0].is_leader(t0));
        assert_eq!(
            c[1].tick(t0 + Duration::from_millis(1)).await.unwrap(),
            LeaseStatus::Leader
        );
    }

    proptest::proptest! {
        /// Three candidates ticking in a random order, some pausing for random stretches: at
        /// no virtual instant do two of them count themselves leader.
        #[test]
        fn never_two_leaders(steps in proptest::collection::vec((0usize..3, 0u64..25_000), 1..200)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let (_, mut c) = candidates(3);
                let t0 = Instant::now();
                let mut t = t0;
                for (who, advance_ms) in steps {
                    t += Duration::from_millis(advance_ms);
                    let _ = c[who].tick(t).await;
                    let leaders = c.iter().filter(|l| l.is_leader(t)).count();
                    proptest::prop_assert!(leaders <= 1, "{leaders} leaders at {:?}", t - t0);
                }
                Ok(())
            })?;
        }
    }
}
