//! EC2's vCPU quotas: which quota an instance type's vCPUs count against. EC2 does not cap
//! each type or family on its own: the account has one running-vCPU quota per group of
//! families, separately for on-demand and spot (Service Quotas, service code `ec2`). A
//! `VcpuLimitExceeded` names no quota, so the launch that met it tells which one is full: the
//! quota of its type and purchase option.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::profile::CapacityType;

/// A group of instance families that share one vCPU quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuotaFamily {
    /// A, C, D, H, I, M, R, T, Z.
    Standard,
    F,
    /// G and VT.
    GAndVt,
    P,
    X,
    Inf,
    Dl,
    Trn,
    /// The `u-*` and `u7i*` high-memory types (on-demand only).
    HighMemory,
    /// `hpc*` (on-demand only).
    Hpc,
}

impl QuotaFamily {
    /// The quota family of an instance type (`g5.xlarge` → G and VT), from the letters its
    /// name starts with. `None` for a name no quota is known for.
    pub fn of(instance_type: &str) -> Option<Self> {
        let name = instance_type.to_ascii_lowercase();
        // Longer prefixes first: `inf1` is not I, `trn1` not T, `dl1` not D, `hpc7g` not H.
        const PREFIXES: [(&str, QuotaFamily); 6] = [
            ("inf", QuotaFamily::Inf),
            ("trn", QuotaFamily::Trn),
            ("hpc", QuotaFamily::Hpc),
            ("dl", QuotaFamily::Dl),
            ("vt", QuotaFamily::GAndVt),
            ("u", QuotaFamily::HighMemory),
        ];
        if let Some((_, f)) = PREFIXES.iter().find(|(p, _)| name.starts_with(p)) {
            return Some(*f);
        }
        match name.chars().next()? {
            'a' | 'c' | 'd' | 'h' | 'i' | 'm' | 'r' | 't' | 'z' => Some(QuotaFamily::Standard),
            'f' => Some(QuotaFamily::F),
            'g' => Some(QuotaFamily::GAndVt),
            'p' => Some(QuotaFamily::P),
            'x' => Some(QuotaFamily::X),
            _ => None,
        }
    }

    /// The name Service Quotas gives the family in its quota names.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaFamily::Standard => "Standard (A, C, D, H, I, M, R, T, Z)",
            QuotaFamily::F => "F",
            QuotaFamily::GAndVt => "G and VT",
            QuotaFamily::P => "P",
            QuotaFamily::X => "X",
            QuotaFamily::Inf => "Inf",
            QuotaFamily::Dl => "DL",
            QuotaFamily::Trn => "Trn",
            QuotaFamily::HighMemory => "High Memory",
            QuotaFamily::Hpc => "HPC",
        }
    }
}

/// One vCPU quota: a family group and a purchase option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QuotaKey {
    pub family: QuotaFamily,
    pub capacity: CapacityType,
}

impl QuotaKey {
    /// The quota a launch of `instance_type` with `capacity` counts against.
    pub fn of(instance_type: &str, capacity: CapacityType) -> Option<Self> {
        QuotaFamily::of(instance_type).map(|family| Self { family, capacity })
    }

    /// The Service Quotas code (service `ec2`); `None` where EC2 has no such quota (spot of
    /// the high-memory and HPC types, which spot does not offer).
    pub fn code(self) -> Option<&'static str> {
        use CapacityType::{OnDemand, Spot};
        use QuotaFamily::*;
        Some(match (self.family, self.capacity) {
            (Standard, OnDemand) => "L-1216C47A",
            (Standard, Spot) => "L-34B43A08",
            (F, OnDemand) => "L-74FC7D96",
            (F, Spot) => "L-88CF9481",
            (GAndVt, OnDemand) => "L-DB2E81BA",
            (GAndVt, Spot) => "L-3819A6DF",
            (P, OnDemand) => "L-417A185B",
            (P, Spot) => "L-7212CCBC",
            (X, OnDemand) => "L-7295265B",
            (X, Spot) => "L-E3A00192",
            (Inf, OnDemand) => "L-1945791B",
            (Inf, Spot) => "L-B5D1601B",
            (Dl, OnDemand) => "L-6E869C2A",
            (Dl, Spot) => "L-85EED4F7",
            (Trn, OnDemand) => "L-2C3B7624",
            (Trn, Spot) => "L-6B0D517C",
            (HighMemory, OnDemand) => "L-43DA4232",
            (Hpc, OnDemand) => "L-F7808C92",
            (HighMemory | Hpc, Spot) => return None,
        })
    }
}

impl fmt::Display for QuotaKey {
    /// The quota's name as Service Quotas shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.capacity {
            CapacityType::OnDemand => {
                write!(f, "Running On-Demand {} instances", self.family.as_str())
            }
            CapacityType::Spot => write!(f, "All {} Spot Instance Requests", self.family.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    #[test]
    fn families_by_prefix() {
        let cases = [
            ("m7i.large", QuotaFamily::Standard),
            ("c7i-flex.large", QuotaFamily::Standard),
            ("t4g.micro", QuotaFamily::Standard),
            ("im4gn.large", QuotaFamily::Standard),
            ("is4gen.large", QuotaFamily::Standard),
            ("z1d.large", QuotaFamily::Standard),
            ("d3.xlarge", QuotaFamily::Standard),
            ("h1.2xlarge", QuotaFamily::Standard),
            ("g5.xlarge", QuotaFamily::GAndVt),
            ("gr6.4xlarge", QuotaFamily::GAndVt),
            ("vt1.3xlarge", QuotaFamily::GAndVt),
            ("p4d.24xlarge", QuotaFamily::P),
            ("f2.12xlarge", QuotaFamily::F),
            ("x2idn.16xlarge", QuotaFamily::X),
            ("inf2.xlarge", QuotaFamily::Inf),
            ("trn1.2xlarge", QuotaFamily::Trn),
            ("dl1.24xlarge", QuotaFamily::Dl),
            ("hpc7g.4xlarge", QuotaFamily::Hpc),
            ("u-3tb1.56xlarge", QuotaFamily::HighMemory),
            ("u7i-12tb.224xlarge", QuotaFamily::HighMemory),
        ];
        for (t, want) in cases {
            assert_eq!(QuotaFamily::of(t), Some(want), "{t}");
        }
        assert_eq!(QuotaFamily::of(""), None);
        assert_eq!(QuotaFamily::of("q9.large"), None);
    }

    #[test]
    fn every_catalog_type_has_a_quota() {
        for t in Catalog::shipped().types() {
            let key = QuotaKey::of(&t.name, CapacityType::OnDemand);
            assert!(key.and_then(QuotaKey::code).is_some(), "{}", t.name);
        }
    }

    #[test]
    fn names_and_codes() {
        let g = QuotaKey::of("g5.xlarge", CapacityType::OnDemand).unwrap();
        assert_eq!(g.to_string(), "Running On-Demand G and VT instances");
        assert_eq!(g.code(), Some("L-DB2E81BA"));
        let s = QuotaKey::of("m7i.large", CapacityType::Spot).unwrap();
        assert_eq!(
            s.to_string(),
            "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"
        );
        assert_eq!(s.code(), Some("L-34B43A08"));
        assert_eq!(
            QuotaKey::of("u-3tb1.56xlarge", CapacityType::Spot)
                .unwrap()
                .code(),
            None
        );
    }
}
