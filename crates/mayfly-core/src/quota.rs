//! EC2's vCPU quotas: which quota an instance type counts against (its family group and
//! purchase option), the Service Quotas code of each, and the account's values once read.
//!
//! EC2 limits running vCPUs per *group* of families, separately for on-demand and spot: the
//! standard families (A, C, D, H, I, M, R, T, Z) share one quota, the G and VT families
//! another, and so on. The planner keeps each group's vCPUs in flight under its quota
//! ([`AccountQuota`]); `--vcpu-quota` instead sets one number over every family.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

use crate::catalog::Catalog;
use crate::profile::{CapacityType, Payer};
use crate::sizing;

/// A group of instance families that share one vCPU quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FamilyGroup {
    /// A, C, D, H, I, M, R, T and Z.
    Standard,
    F,
    /// G and VT.
    G,
    Inf,
    P,
    X,
    Trn,
    Dl,
    /// The `u-` and `u7i` high-memory families.
    HighMemory,
    Hpc,
}

impl FamilyGroup {
    /// The group of an instance type (`m7i.large`) or family (`m7i`); `None` for families
    /// EC2 counts under no vCPU quota mayfly knows (e.g. `mac`).
    pub fn of(instance_type: &str) -> Option<Self> {
        let family = instance_type
            .split('.')
            .next()
            .unwrap_or(instance_type)
            .to_ascii_lowercase();
        let prefixed = [
            ("hpc", FamilyGroup::Hpc),
            ("inf", FamilyGroup::Inf),
            ("trn", FamilyGroup::Trn),
            ("dl", FamilyGroup::Dl),
            ("vt", FamilyGroup::G),
        ];
        if family.starts_with("mac") {
            return None;
        }
        if let Some((_, group)) = prefixed.iter().find(|(p, _)| family.starts_with(p)) {
            return Some(*group);
        }
        match family.chars().next()? {
            'a' | 'c' | 'd' | 'h' | 'i' | 'm' | 'r' | 't' | 'z' => Some(FamilyGroup::Standard),
            'f' => Some(FamilyGroup::F),
            'g' => Some(FamilyGroup::G),
            'p' => Some(FamilyGroup::P),
            'x' => Some(FamilyGroup::X),
            'u' => Some(FamilyGroup::HighMemory),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            FamilyGroup::Standard => "Standard (A, C, D, H, I, M, R, T, Z)",
            FamilyGroup::F => "F",
            FamilyGroup::G => "G and VT",
            FamilyGroup::Inf => "Inf",
            FamilyGroup::P => "P",
            FamilyGroup::X => "X",
            FamilyGroup::Trn => "Trn",
            FamilyGroup::Dl => "DL",
            FamilyGroup::HighMemory => "High Memory",
            FamilyGroup::Hpc => "HPC",
        }
    }
}

/// One vCPU quota: a family group, on demand or spot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QuotaPool {
    pub group: FamilyGroup,
    pub capacity: CapacityType,
}

impl QuotaPool {
    /// The quota a launch of `instance_type` as `capacity` counts against, if EC2 has one
    /// mayfly knows (high-memory and HPC instances have no spot quota: they are not sold as
    /// spot).
    pub fn of(instance_type: &str, capacity: CapacityType) -> Option<Self> {
        let pool = Self {
            group: FamilyGroup::of(instance_type)?,
            capacity,
        };
        pool.try_code().map(|_| pool)
    }

    fn try_code(self) -> Option<&'static str> {
        use CapacityType::{OnDemand, Spot};
        use FamilyGroup::*;
        Some(match (self.group, self.capacity) {
            (Standard, OnDemand) => "L-1216C47A",
            (Standard, Spot) => "L-34B43A08",
            (F, OnDemand) => "L-74FC7D96",
            (F, Spot) => "L-88CF9481",
            (G, OnDemand) => "L-DB2E81BA",
            (G, Spot) => "L-3819A6DF",
            (Inf, OnDemand) => "L-1945791B",
            (Inf, Spot) => "L-B5D1601B",
            (P, OnDemand) => "L-417A185B",
            (P, Spot) => "L-7212CCBC",
            (X, OnDemand) => "L-7295265B",
            (X, Spot) => "L-E3A00192",
            (Trn, OnDemand) => "L-2C3B7624",
            (Trn, Spot) => "L-6B0D517C",
            (Dl, OnDemand) => "L-6E869C2A",
            (Dl, Spot) => "L-85EED4F7",
            (HighMemory, OnDemand) => "L-43DA4232",
            (Hpc, OnDemand) => "L-F7808C92",
            (HighMemory | Hpc, Spot) => return None,
        })
    }

    /// The quota's code in Service Quotas (service code `ec2`).
    pub fn code(self) -> &'static str {
        self.try_code()
            .expect("QuotaPool::of builds only pools that have a code")
    }

    /// The quota's name as Service Quotas shows it.
    pub fn name(self) -> String {
        match self.capacity {
            CapacityType::OnDemand => format!("Running On-Demand {} instances", self.group.label()),
            CapacityType::Spot => format!("All {} Spot Instance Requests", self.group.label()),
        }
    }
}

impl fmt::Display for QuotaPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.name())
    }
}

impl Serialize for QuotaPool {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

/// The account's vCPU quotas, as read from Service Quotas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountQuotas {
    limits: BTreeMap<QuotaPool, u32>,
}

impl AccountQuotas {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, pool: QuotaPool, vcpus: u32) {
        self.limits.insert(pool, vcpus);
    }

    /// The quota of `pool`, if it was read.
    pub fn get(&self, pool: QuotaPool) -> Option<u32> {
        self.limits.get(&pool).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (QuotaPool, u32)> + '_ {
        self.limits.iter().map(|(p, v)| (*p, *v))
    }

    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// Whether every pool of `pools` was read.
    pub fn covers(&self, pools: &BTreeSet<QuotaPool>) -> bool {
        pools.iter().all(|p| self.limits.contains_key(p))
    }
}

impl Serialize for AccountQuotas {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Entry {
            code: &'static str,
            name: String,
            vcpus: u32,
        }
        let mut seq = s.serialize_seq(Some(self.limits.len()))?;
        for (pool, vcpus) in self.iter() {
            seq.serialize_element(&Entry {
                code: pool.code(),
                name: pool.name(),
                vcpus,
            })?;
        }
        seq.end()
    }
}

impl fmt::Display for AccountQuotas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (pool, vcpus)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} {vcpus} vCPUs", pool.code())?;
        }
        Ok(())
    }
}

/// The account's vCPU quotas as the planner sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AccountQuota<'a> {
    /// Not read (offline, or `--vcpu-quota` was given): only the caps and that flag apply.
    #[default]
    NotRead,
    /// Read from the account: each pool's vCPUs in flight stay under its quota.
    Read(&'a AccountQuotas),
    /// Reading them failed, for this reason: only the caps apply.
    Unreadable(&'a str),
}

impl AccountQuota<'_> {
    pub fn is_not_read(&self) -> bool {
        matches!(self, AccountQuota::NotRead)
    }
}

impl Serialize for AccountQuota<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(tag = "from", rename_all = "snake_case")]
        enum Shown<'a> {
            NotRead,
            Account { quotas: &'a AccountQuotas },
            Unknown { why: &'a str },
        }
        match *self {
            AccountQuota::NotRead => Shown::NotRead,
            AccountQuota::Read(quotas) => Shown::Account { quotas },
            AccountQuota::Unreadable(why) => Shown::Unknown { why },
        }
        .serialize(s)
    }
}

/// Where the quota behind a [`VcpuQuota`](crate::plan::Reason::VcpuQuota) reason comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaSource {
    /// `--vcpu-quota` (or `MAYFLY_VCPU_QUOTA`): one number over every family.
    Flag,
    /// The account's quota of this pool, read from Service Quotas.
    Account(QuotaPool),
}

impl Serialize for QuotaSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            QuotaSource::Flag => s.serialize_str("flag"),
            QuotaSource::Account(pool) => s.serialize_str(pool.code()),
        }
    }
}

/// The pools the payers' launches can count against: every family group their kinds may
/// size to (the explicit types, the allowed families, or the types chosen for the smallest
/// and the largest job), under each purchase option of the kind's policy. These are the
/// quotas worth reading.
pub fn pools_for(payers: &[Payer], catalog: &Catalog) -> BTreeSet<QuotaPool> {
    let mut pools = BTreeSet::new();
    for payer in payers {
        for kind in payer.profile.kinds.values() {
            let spec = &kind.compute;
            let mut names: Vec<String> = match (&spec.instance_types, spec.families.is_empty()) {
                (Some(types), _) => types.clone(),
                (None, false) => spec.families.clone(),
                (None, true) => [None, Some(u64::MAX)]
                    .into_iter()
                    .flat_map(|input| {
                        sizing::choose_types(catalog, spec, input, payer.profile.caps.max_vcpus)
                    })
                    .map(|t| t.name.clone())
                    .collect(),
            };
            names.dedup();
            let policy = kind.capacity.unwrap_or(payer.profile.launch.capacity);
            for name in &names {
                for &capacity in policy.order() {
                    pools.extend(QuotaPool::of(name, capacity));
                }
            }
        }
    }
    pools
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalog_family_but_none_has_an_on_demand_quota() {
        let catalog = Catalog::shipped();
        for t in catalog.types() {
            let pool = QuotaPool::of(&t.name, CapacityType::OnDemand)
                .unwrap_or_else(|| panic!("{} has no on-demand quota", t.name));
            assert!(pool.code().starts_with("L-"));
        }
    }

    #[test]
    fn families_map_to_their_groups() {
        let cases = [
            ("m7i.large", FamilyGroup::Standard),
            ("c7i-flex.large", FamilyGroup::Standard),
            ("t4g.small", FamilyGroup::Standard),
            ("z1d.large", FamilyGroup::Standard),
            ("is4gen.large", FamilyGroup::Standard),
            ("g5.xlarge", FamilyGroup::G),
            ("gr6.4xlarge", FamilyGroup::G),
            ("vt1.3xlarge", FamilyGroup::G),
            ("p4d.24xlarge", FamilyGroup::P),
            ("p6-b200.48xlarge", FamilyGroup::P),
            ("inf2.xlarge", FamilyGroup::Inf),
            ("trn1.2xlarge", FamilyGroup::Trn),
            ("dl1.24xlarge", FamilyGroup::Dl),
            ("f2.6xlarge", FamilyGroup::F),
            ("x2iedn.xlarge", FamilyGroup::X),
            ("u-6tb1.112xlarge", FamilyGroup::HighMemory),
            ("u7i-12tb.224xlarge", FamilyGroup::HighMemory),
            ("hpc7g.4xlarge", FamilyGroup::Hpc),
        ];
        for (t, want) in cases {
            assert_eq!(FamilyGroup::of(t), Some(want), "{t}");
        }
        assert_eq!(FamilyGroup::of("mac2.metal"), None);
    }

    #[test]
    fn codes_and_names() {
        let od = QuotaPool::of("m7i.large", CapacityType::OnDemand).unwrap();
        assert_eq!(od.code(), "L-1216C47A");
        assert_eq!(
            od.name(),
            "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"
        );
        let spot = QuotaPool::of("g5.xlarge", CapacityType::Spot).unwrap();
        assert_eq!(spot.code(), "L-3819A6DF");
        assert_eq!(spot.name(), "All G and VT Spot Instance Requests");
        assert_eq!(QuotaPool::of("u-6tb1.112xlarge", CapacityType::Spot), None);
        assert_eq!(
            serde_json::to_value(QuotaSource::Account(od)).unwrap(),
            "L-1216C47A"
        );
        assert_eq!(serde_json::to_value(QuotaSource::Flag).unwrap(), "flag");
    }
}
