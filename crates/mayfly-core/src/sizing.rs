//! Right-sizing: from a kind's compute spec and a job's declared input size to the cheapest
//! fitting instance types, and from those to the fallback ladder (types × subnets × capacity).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::catalog::{Arch, Catalog, InstanceType};
use crate::profile::{CapacityPolicy, CapacityType, ComputeSpec};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// What one job needs from its instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requirement {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub arch: Arch,
    pub gpus: u32,
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} vCPU, {} MiB, {}",
            self.vcpus,
            self.memory_mib,
            self.arch.as_str()
        )?;
        if self.gpus > 0 {
            write!(f, ", {} GPU", self.gpus)?;
        }
        Ok(())
    }
}

impl Requirement {
    /// The requirement of a sizing spec for a job with `input_bytes` of declared input.
    /// vCPUs scale with input when the spec says so and are clamped to `min..=max`.
    pub fn for_spec(spec: &ComputeSpec, input_bytes: Option<u64>) -> Self {
        let min = spec.min_vcpus.unwrap_or(1).max(1);
        let max = spec.max_vcpus.unwrap_or(min).max(min);
        let vcpus = match (spec.vcpus_per_input_gib, input_bytes) {
            (Some(per), Some(bytes)) => {
                let wanted = (bytes as f64 / GIB * per).ceil();
                // Float-to-int casts saturate, so huge inputs land on `max`.
                (wanted as u32).clamp(min, max)
            }
            _ => min,
        };
        let per_vcpu = spec.memory_gib_per_vcpu.unwrap_or(0.0) * f64::from(vcpus);
        let gib = spec.min_memory_gib.unwrap_or(0.0).max(per_vcpu);
        Self {
            vcpus,
            memory_mib: (gib * 1024.0).ceil() as u64,
            arch: spec.architecture.unwrap_or(Arch::X86_64),
            gpus: spec.gpus.unwrap_or(0),
        }
    }

    /// Whether `t` meets this requirement, is in an allowed family and within the vCPU limit.
    pub fn fits(&self, t: &InstanceType, families: &[String], max_vcpus: u32) -> bool {
        t.vcpus >= self.vcpus
            && t.vcpus <= max_vcpus
            && t.memory_mib >= self.memory_mib
            && t.gpus >= self.gpus
            && t.supports(self.arch)
            && (families.is_empty() || families.iter().any(|f| f == t.family()))
    }
}

/// Price order with the name as tie-break, so sizing is deterministic.
pub fn cheaper(a: &InstanceType, b: &InstanceType) -> std::cmp::Ordering {
    a.on_demand_usd_per_hour
        .total_cmp(&b.on_demand_usd_per_hour)
        .then_with(|| a.name.cmp(&b.name))
}

/// Every catalog type fitting `req` under a sizing spec, cheapest first.
pub fn candidates<'c>(
    catalog: &'c Catalog,
    spec: &ComputeSpec,
    req: &Requirement,
    max_vcpus: u32,
) -> Vec<&'c InstanceType> {
    let mut fit: Vec<&InstanceType> = if spec.families.is_empty() {
        catalog
            .types()
            .iter()
            .filter(|t| req.fits(t, &spec.families, max_vcpus))
            .collect()
    } else {
        // Only the allowed families' types can fit: look those up instead of scanning all.
        spec.families
            .iter()
            .flat_map(|f| catalog.in_family(f))
            .filter(|t| req.fits(t, &spec.families, max_vcpus))
            .collect()
    };
    fit.sort_by(|a, b| cheaper(a, b));
    // A family listed twice would list its types twice; equal types sort side by side.
    fit.dedup_by(|a, b| a.name == b.name);
    fit
}

/// The instance types a job of this spec may use, in the order to try them: the explicit
/// list as written, or the `candidates` cheapest types that fit the job's requirement.
pub fn choose_types<'c>(
    catalog: &'c Catalog,
    spec: &ComputeSpec,
    input_bytes: Option<u64>,
    max_vcpus: u32,
) -> Vec<&'c InstanceType> {
    match &spec.instance_types {
        Some(names) => names.iter().filter_map(|n| catalog.get(n)).collect(),
        None => {
            let req = Requirement::for_spec(spec, input_bytes);
            let mut c = candidates(catalog, spec, &req, max_vcpus);
            c.truncate(spec.candidates.unwrap_or(3) as usize);
            c
        }
    }
}

/// One way to launch a job: a type in a subnet with a purchase option.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rung {
    pub instance_type: String,
    pub subnet: String,
    pub capacity: CapacityType,
}

impl fmt::Display for Rung {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.instance_type, self.subnet, self.capacity
        )
    }
}

/// The fallback ladder: for each capacity type in policy order, each type, each subnet.
/// A capacity error on one rung moves the launch to the next.
pub fn ladder(types: &[&InstanceType], subnets: &[String], policy: CapacityPolicy) -> Vec<Rung> {
    let mut rungs = Vec::with_capacity(types.len() * subnets.len() * policy.order().len());
    for &capacity in policy.order() {
        for t in types {
            for s in subnets {
                rungs.push(Rung {
                    instance_type: t.name.clone(),
                    subnet: s.clone(),
                    capacity,
                });
            }
        }
    }
    rungs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims_spec() -> ComputeSpec {
        ComputeSpec {
            families: vec!["c7i".into(), "m7i".into()],
            min_vcpus: Some(4),
            max_vcpus: Some(64),
            vcpus_per_input_gib: Some(2.0),
            memory_gib_per_vcpu: Some(2.0),
            ..ComputeSpec::default()
        }
    }

    #[test]
    fn vcpus_scale_with_input_and_clamp() {
        let spec = claims_spec();
        let at = |gib: u64| Requirement::for_spec(&spec, Some(gib << 30)).vcpus;
        assert_eq!(Requirement::for_spec(&spec, None).vcpus, 4);
        assert_eq!(at(1), 4);
        assert_eq!(at(10), 20);
        assert_eq!(at(1000), 64);
        assert_eq!(Requirement::for_spec(&spec, Some(u64::MAX)).vcpus, 64);
        assert_eq!(
            Requirement::for_spec(&spec, Some(10 << 30)).memory_mib,
            40 * 1024
        );
    }

    #[test]
    fn picks_the_cheapest_fitting_type() {
        let catalog = Catalog::shipped();
        let spec = claims_spec();
        let types = choose_types(catalog, &spec, Some(10 << 30), 64);
        let first = types[0];
        assert!(first.vcpus >= 20 && first.memory_mib >= 40 * 1024);
        assert!(["c7i", "m7i"].contains(&first.family()));
        for t in catalog.types() {
            let req = Requirement::for_spec(&spec, Some(10 << 30));
            if req.fits(t, &spec.families, 64) {
                assert!(t.on_demand_usd_per_hour >= first.on_demand_usd_per_hour);
            }
        }
    }

    #[test]
    fn ladder_walks_spot_before_on_demand() {
        let catalog = Catalog::shipped();
        let types = [
            catalog.get("m5.large").unwrap(),
            catalog.get("m6i.large").unwrap(),
        ];
        let subnets = vec!["subnet-0a".to_string(), "subnet-0b".to_string()];
        let rungs = ladder(&types, &subnets, CapacityPolicy::SpotThenOnDemand);
        assert_eq!(rungs.len(), 8);
        assert_eq!(rungs[0].to_string(), "m5.large/subnet-0a/spot");
        assert_eq!(rungs[1].to_string(), "m5.large/subnet-0b/spot");
        assert_eq!(rungs[4].to_string(), "m5.large/subnet-0a/on-demand");
    }
}
