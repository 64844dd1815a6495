//! What one pass learns about the account while it launches, so its later launches do not
//! ask EC2 again what it already answered: a vCPU quota found full stops the launches that
//! count against it (and only those), spot refused for want of its service-linked role
//! leaves the spot rungs out, a payer paused for a configuration error launches nothing
//! more, refused credentials stop every launch. It lasts one pass: the next asks again, so a
//! freed quota or a fixed role is used at once.

use std::collections::{BTreeMap, BTreeSet};

use crate::profile::CapacityType;
use crate::quota::QuotaPool;
use crate::sizing::Rung;

/// The pass's knowledge, shared by the repair and the launch steps.
#[derive(Debug, Default)]
pub(super) struct Learned {
    /// Quotas found full, with the error code that said so.
    full: BTreeMap<QuotaPool, String>,
    /// Spot refused for the account, with the error code.
    spot: Option<String>,
    /// Payers paused by this pass.
    paused: BTreeSet<String>,
    /// The scheduler's credentials were refused: no launch can work this pass.
    pub credentials_refused: bool,
}

impl Learned {
    /// Why `rung` is not worth a RunInstances this pass (the code of the answer that says
    /// so), or `None`.
    pub fn skip(&self, rung: &Rung) -> Option<&str> {
        if rung.capacity == CapacityType::Spot {
            if let Some(code) = &self.spot {
                return Some(code);
            }
        }
        let key = QuotaPool::of(&rung.instance_type, rung.capacity)?;
        self.full.get(&key).map(String::as_str)
    }

    /// The quota `rung` counts against is full.
    pub fn quota_full(&mut self, rung: &Rung, code: &str) {
        if let Some(key) = QuotaPool::of(&rung.instance_type, rung.capacity) {
            self.full.insert(key, code.to_owned());
        }
    }

    /// Spot cannot be used by this account.
    pub fn spot_refused(&mut self, code: &str) {
        self.spot = Some(code.to_owned());
    }

    pub fn payer_paused(&mut self, payer_id: &str) {
        self.paused.insert(payer_id.to_owned());
    }

    pub fn is_paused(&self, payer_id: &str) -> bool {
        self.paused.contains(payer_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rung(t: &str, capacity: CapacityType) -> Rung {
        Rung {
            instance_type: t.into(),
            subnet: "subnet-a".into(),
            capacity,
        }
    }

    #[test]
    fn a_full_quota_skips_only_its_own_rungs() {
        let mut l = Learned::default();
        l.quota_full(
            &rung("g5.xlarge", CapacityType::OnDemand),
            "VcpuLimitExceeded",
        );
        assert_eq!(
            l.skip(&rung("g6.xlarge", CapacityType::OnDemand)),
            Some("VcpuLimitExceeded"),
            "same family group, same quota"
        );
        assert_eq!(
            l.skip(&rung("g5.xlarge", CapacityType::Spot)),
            None,
            "spot's own quota"
        );
        assert_eq!(l.skip(&rung("c7i.large", CapacityType::OnDemand)), None);
    }

    #[test]
    fn refused_spot_skips_every_spot_rung() {
        let mut l = Learned::default();
        l.spot_refused("AuthFailure.ServiceLinkedRoleCreationNotPermitted");
        assert!(l.skip(&rung("c7i.large", CapacityType::Spot)).is_some());
        assert!(l.skip(&rung("c7i.large", CapacityType::OnDemand)).is_none());
    }
}
