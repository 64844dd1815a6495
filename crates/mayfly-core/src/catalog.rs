//! The EC2 instance-type catalog: specs and on-demand prices, shipped with mayfly
//! (`data/ec2-catalog-us-east-1.json`, see `data/README.md` for its sources).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// CPU architecture of an instance type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    #[serde(rename = "x86_64")]
    X86_64,
    Arm64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// The kind of accelerator an instance type carries besides its CPUs. Sizing offers such a
/// type only to a kind that asks for it (`gpus`, or a family that names it): its price pays
/// for hardware a CPU-bound job leaves idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accelerator {
    /// NVIDIA or AMD GPUs, whole or fractional (g*, gr*, p*).
    Gpu,
    /// AWS Inferentia (inf*).
    Inferentia,
    /// AWS Trainium (trn*).
    Trainium,
    /// FPGAs (f*).
    Fpga,
    /// Video transcoding accelerators (vt*).
    Media,
}

impl Accelerator {
    pub fn as_str(self) -> &'static str {
        match self {
            Accelerator::Gpu => "GPU",
            Accelerator::Inferentia => "Inferentia",
            Accelerator::Trainium => "Trainium",
            Accelerator::Fpga => "FPGA",
            Accelerator::Media => "media accelerator",
        }
    }
}

/// One instance type: what it offers and what it costs on demand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceType {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub architectures: Vec<Arch>,
    pub gpus: u32,
    /// The accelerator the type carries, if any (`data/README.md` says where it comes from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator: Option<Accelerator>,
    /// A burstable type (t1, t2, t3, t3a, t4g): its vCPUs run at a baseline and bursts above
    /// it cost CPU credits, so its on-demand price understates what a CPU-bound job pays.
    #[serde(default, skip_serializing_if = "is_false")]
    pub burstable: bool,
    pub on_demand_usd_per_hour: f64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl InstanceType {
    /// The family is the part before the dot: `m7i` for `m7i.large`.
    pub fn family(&self) -> &str {
        self.name.split('.').next().unwrap_or(&self.name)
    }

    pub fn supports(&self, arch: Arch) -> bool {
        self.architectures.contains(&arch)
    }
}

#[derive(Debug, Deserialize)]
struct CatalogFile {
    region: String,
    currency: String,
    instance_types: Vec<InstanceType>,
}

/// Why a catalog could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog is not valid JSON: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("catalog entry `{name}`: {reason}")]
    Entry { name: String, reason: String },
}

/// All known instance types of one region, looked up by name.
#[derive(Debug, Clone)]
pub struct Catalog {
    region: String,
    types: Vec<InstanceType>,
    by_name: HashMap<String, usize>,
    /// Type indexes per family, so sizing with allowed families skips the rest.
    by_family: HashMap<String, Vec<usize>>,
}

const SHIPPED: &str = include_str!("../data/ec2-catalog-us-east-1.json");

impl Catalog {
    /// The catalog shipped with mayfly (us-east-1), parsed once per process.
    pub fn shipped() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            Catalog::from_json(SHIPPED).expect("the shipped catalog is validated by its unit test")
        })
    }

    pub fn from_json(json: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile = serde_json::from_str(json)?;
        if file.currency != "USD" {
            return Err(CatalogError::Entry {
                name: "currency".into(),
                reason: format!("expected USD, found {}", file.currency),
            });
        }
        Self::from_types(file.region, file.instance_types)
    }

    pub fn from_types(region: String, types: Vec<InstanceType>) -> Result<Self, CatalogError> {
        let mut by_name = HashMap::with_capacity(types.len());
        let mut by_family: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, t) in types.iter().enumerate() {
            let bad = |reason: &str| CatalogError::Entry {
                name: t.name.clone(),
                reason: reason.to_owned(),
            };
            if t.vcpus == 0 || t.memory_mib == 0 {
                return Err(bad("vcpus and memory must be positive"));
            }
            if !(t.on_demand_usd_per_hour.is_finite() && t.on_demand_usd_per_hour > 0.0) {
                return Err(bad("price must be a positive number"));
            }
            if t.architectures.is_empty() {
                return Err(bad("no architecture"));
            }
            if t.gpus > 0 && t.accelerator != Some(Accelerator::Gpu) {
                return Err(bad("has GPUs but is not marked `accelerator: gpu`"));
            }
            if by_name.insert(t.name.clone(), i).is_some() {
                return Err(bad("listed twice"));
            }
            by_family.entry(t.family().to_owned()).or_default().push(i);
        }
        Ok(Self {
            region,
            types,
            by_name,
            by_family,
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn get(&self, name: &str) -> Option<&InstanceType> {
        self.by_name.get(name).map(|&i| &self.types[i])
    }

    pub fn types(&self) -> &[InstanceType] {
        &self.types
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// Whether any type belongs to `family` (used to validate allowed-family lists).
    pub fn has_family(&self, family: &str) -> bool {
        self.by_family.contains_key(family)
    }

    /// The types of one family, in catalog order.
    pub fn in_family<'c>(&'c self, family: &str) -> impl Iterator<Item = &'c InstanceType> {
        let indexes = self.by_family.get(family).map_or(&[][..], Vec::as_slice);
        indexes.iter().map(|&i| &self.types[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_catalog_loads_with_known_prices() {
        let c = Catalog::shipped();
        assert_eq!(c.region(), "us-east-1");
        assert_eq!(c.len(), 1340);
        let m5 = c.get("m5.large").unwrap();
        assert_eq!((m5.vcpus, m5.memory_mib), (2, 8192));
        assert!((m5.on_demand_usd_per_hour - 0.096).abs() < 1e-9);
        assert_eq!(m5.family(), "m5");
        assert!(c.in_family("m5").any(|t| t.name == "m5.large"));
        assert!(c.in_family("m5").all(|t| t.family() == "m5"));
        assert_eq!(c.in_family("m99").count(), 0);
        assert!(c.get("c7g.large").unwrap().supports(Arch::Arm64));
        assert_eq!(c.get("g5.xlarge").unwrap().gpus, 1);
    }

    /// The accelerator and burstable marks come from the specs' own fields; instance family
    /// names say the same, and this keeps the two in step when the catalog is regenerated.
    #[test]
    fn accelerators_and_burstable_types_agree_with_family_names() {
        let by_prefix = |family: &str| -> Option<Accelerator> {
            let letters: String = family
                .chars()
                .take_while(char::is_ascii_lowercase)
                .collect();
            match letters.as_str() {
                "g" | "gr" | "p" => Some(Accelerator::Gpu),
                "inf" => Some(Accelerator::Inferentia),
                "trn" => Some(Accelerator::Trainium),
                "f" => Some(Accelerator::Fpga),
                "vt" => Some(Accelerator::Media),
                _ => None,
            }
        };
        let c = Catalog::shipped();
        for t in c.types() {
            assert_eq!(t.accelerator, by_prefix(t.family()), "{}", t.name);
            let burstable = ["t1", "t2", "t3", "t3a", "t4g"].contains(&t.family());
            assert_eq!(t.burstable, burstable, "{}", t.name);
        }
        let count = |a: Accelerator| {
            c.types()
                .iter()
                .filter(|t| t.accelerator == Some(a))
                .count()
        };
        assert_eq!(count(Accelerator::Gpu), 64);
        assert_eq!(count(Accelerator::Inferentia), 8);
        assert_eq!(count(Accelerator::Trainium), 3);
        assert_eq!(count(Accelerator::Fpga), 3);
        assert_eq!(count(Accelerator::Media), 3);
        // Fractional GPUs count as 0 GPUs, but the type still carries one.
        let g6f = c.get("g6f.large").unwrap();
        assert_eq!((g6f.gpus, g6f.accelerator), (0, Some(Accelerator::Gpu)));
    }

    #[test]
    fn rejects_duplicates_and_free_types() {
        let t = |name: &str, price: f64| InstanceType {
            name: name.into(),
            vcpus: 2,
            memory_mib: 1024,
            architectures: vec![Arch::X86_64],
            gpus: 0,
            accelerator: None,
            burstable: false,
            on_demand_usd_per_hour: price,
        };
        assert!(
            Catalog::from_types("r".into(), vec![t("a.large", 1.0), t("a.large", 1.0)]).is_err()
        );
        assert!(Catalog::from_types("r".into(), vec![t("a.large", 0.0)]).is_err());
        let unmarked_gpu = InstanceType {
            gpus: 1,
            ..t("g9.large", 1.0)
        };
        assert!(Catalog::from_types("r".into(), vec![unmarked_gpu]).is_err());
    }
}
