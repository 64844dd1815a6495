//! The account's vCPU quotas for the planner: read from Service Quotas (through a
//! [`QuotaReader`]) when no `--vcpu-quota` overrides them, at most once per pass and reused
//! for [`QUOTA_TTL`] by the later passes of a daemon or a warm Lambda function. When they
//! cannot be read the plan says why and only the caps apply; the failure is logged once, when
//! it starts, not on every pass.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::catalog::Catalog;
use crate::ports::QuotaReader;
use crate::profile::Payer;
use crate::quota::{pools_for, AccountQuota, AccountQuotas, QuotaPool};

/// How long a read (or a failure to read) stands before the next pass reads again: a
/// raised quota reaches the planner within this long.
pub const QUOTA_TTL: Duration = Duration::from_secs(300);

/// What reading the quotas gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaRead {
    Read(AccountQuotas),
    /// Why they could not be read (the AWS error, naming the quota).
    Unreadable(String),
}

impl QuotaRead {
    /// The planner's view of it.
    pub fn view(&self) -> AccountQuota<'_> {
        match self {
            QuotaRead::Read(q) => AccountQuota::Read(q),
            QuotaRead::Unreadable(why) => AccountQuota::Unreadable(why),
        }
    }
}

/// Reads the quotas the payers' launches count against, once, with no cache (`plan`,
/// `explain` and `status` plan once per command).
pub async fn read_quotas(
    reader: &dyn QuotaReader,
    payers: &[Payer],
    catalog: &Catalog,
) -> QuotaRead {
    let pools = pools_for(payers, catalog);
    read_pools(reader, &pools).await
}

async fn read_pools(reader: &dyn QuotaReader, pools: &BTreeSet<QuotaPool>) -> QuotaRead {
    if pools.is_empty() {
        return QuotaRead::Read(AccountQuotas::new());
    }
    match reader.vcpu_quotas(pools).await {
        Ok(q) => QuotaRead::Read(q),
        Err(e) => QuotaRead::Unreadable(e.to_string()),
    }
}

#[derive(Debug)]
struct Cached {
    at: Instant,
    pools: BTreeSet<QuotaPool>,
    read: QuotaRead,
}

/// The quotas as the passes of one scheduler read them.
pub struct QuotaCache {
    reader: Arc<dyn QuotaReader>,
    ttl: Duration,
    last: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for QuotaCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl QuotaCache {
    pub fn new(reader: Arc<dyn QuotaReader>) -> Self {
        Self::with_ttl(reader, QUOTA_TTL)
    }

    pub fn with_ttl(reader: Arc<dyn QuotaReader>, ttl: Duration) -> Self {
        Self {
            reader,
            ttl,
            last: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One read of the payers' pools, neither cached nor logged: for a command that shows
    /// the outcome in its own output (`status`).
    pub async fn read_once(&self, payers: &[Payer], catalog: &Catalog) -> QuotaRead {
        read_quotas(self.reader.as_ref(), payers, catalog).await
    }

    /// The quotas of the payers' pools: the last read while it is fresh and covers them,
    /// else a new one.
    pub async fn get(&self, payers: &[Payer], catalog: &Catalog) -> QuotaRead {
        let pools = pools_for(payers, catalog);
        let previous = {
            let last = self.lock();
            if let Some(c) = last.as_ref() {
                let covers = match &c.read {
                    QuotaRead::Read(q) => q.covers(&pools),
                    QuotaRead::Unreadable(_) => c.pools.is_superset(&pools),
                };
                if covers && c.at.elapsed() < self.ttl {
                    return c.read.clone();
                }
            }
            last.as_ref().map(|c| c.read.clone())
        };
        let read = read_pools(self.reader.as_ref(), &pools).await;
        match (&read, &previous) {
            (QuotaRead::Unreadable(why), Some(QuotaRead::Unreadable(before))) if why == before => {}
            (QuotaRead::Unreadable(why), _) => {
                warn!(reason = %why, "Cannot read the account's vCPU quotas; only the caps apply until they can be read.");
            }
            (QuotaRead::Read(q), Some(QuotaRead::Read(before))) if q == before => {}
            (QuotaRead::Read(q), _) => {
                info!(quotas = %q, "Read the account's vCPU quotas.");
            }
        }
        *self.lock() = Some(Cached {
            at: Instant::now(),
            pools,
            read: read.clone(),
        });
        read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fakes::FakeAccount;
    use crate::ports::AwsError;
    use crate::profile::{CapacityType, GlobalCaps, PayerProfile, ValidateContext};

    fn payer(types: &str) -> Payer {
        let text = format!(
            r#"payer_id = "acme"
[caps]
max_instances = 2
max_vcpus = 16
[launch]
image_id = "ami-0a860000"
subnets = ["subnet-0aaaaaaa"]
security_groups = ["sg-01111111"]
instance_profile = "acct-instance"
[timeouts]
boot = "5m"
heartbeat = "5m"
max_runtime = "1h"
[kinds.load]
tier = 0
command = ["payer-etl", "load"]
[kinds.load.compute]
instance_types = [{types}]
"#
        );
        let ctx = ValidateContext {
            catalog: Catalog::shipped(),
            global: GlobalCaps::default(),
        };
        PayerProfile::from_toml("test", &text)
            .unwrap()
            .validate("test", &ctx)
            .unwrap()
    }

    fn account() -> Arc<FakeAccount> {
        let a = Arc::new(FakeAccount::new());
        for t in ["m7i.large", "g5.xlarge"] {
            a.set_quota(QuotaPool::of(t, CapacityType::OnDemand).unwrap(), 32);
        }
        a
    }

    #[tokio::test]
    async fn a_read_stands_while_fresh_and_covering_and_a_failure_is_kept_as_its_reason() {
        let a = account();
        let cache = QuotaCache::new(a.clone());
        let standard = [payer(r#""m7i.large""#)];
        let first = cache.get(&standard, Catalog::shipped()).await;
        assert!(matches!(&first, QuotaRead::Read(q) if q.iter().count() == 1));
        assert_eq!(cache.get(&standard, Catalog::shipped()).await, first);
        assert_eq!(a.quota_reads(), 1);
        // A payer of another family group needs a quota not read yet.
        let gpu = [payer(r#""m7i.large", "g5.xlarge""#)];
        let QuotaRead::Read(q) = cache.get(&gpu, Catalog::shipped()).await else {
            panic!("read");
        };
        assert_eq!(q.iter().count(), 2);
        assert_eq!(a.quota_reads(), 2);

        // Expired: read again; a failure is the reason, kept for the next pass too.
        let failing = account();
        failing.fail_quotas(Some(AwsError {
            code: "AccessDeniedException".into(),
            message: "denied".into(),
        }));
        let cache = QuotaCache::with_ttl(failing.clone(), Duration::ZERO);
        for _ in 0..2 {
            assert_eq!(
                cache.get(&standard, Catalog::shipped()).await,
                QuotaRead::Unreadable("AccessDeniedException: denied".into())
            );
        }
        assert_eq!(failing.quota_reads(), 2);
        failing.fail_quotas(None);
        assert!(matches!(
            cache.get(&standard, Catalog::shipped()).await,
            QuotaRead::Read(_)
        ));
    }
}
