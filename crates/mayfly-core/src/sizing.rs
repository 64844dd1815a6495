//! Right-sizing: from a kind's compute spec and a job's declared input size to the cheapest
//! fitting instance types, and from those to the fallback ladder (types × subnets × capacity).
//!
//! What a kind may get, whatever the price (the README's "Right-sizing" says it to operators):
//! - No rung has more vCPUs than the kind's `max_vcpus` (nor the payer's `caps.max_vcpus`):
//!   the plan reserves the largest rung against the caps, so a larger fallback would both
//!   break the profile's word and starve the payer's other jobs.
//! - A type with an accelerator (GPU, Inferentia, Trainium, FPGA, media) only for a kind that
//!   asks for it: `gpus` for GPU types, or a family that names the type.
//! - A burstable type (t1, t2, t3, t3a, t4g) only where the kind's families name it: its
//!   price buys a baseline share of each vCPU, and a CPU-bound job above it pays for credits
//!   (unlimited mode) or is throttled (standard mode), so it is not the bargain it looks.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::catalog::{Accelerator, Arch, Catalog, InstanceType};
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

    /// Whether `t` meets this requirement and the kind may use it: offered to the kind
    /// ([`offered`]) and within its vCPU ceiling under the payer's cap `cap` ([`vcpu_ceiling`]).
    pub fn fits(&self, t: &InstanceType, spec: &ComputeSpec, cap: u32) -> bool {
        t.vcpus >= self.vcpus
            && t.vcpus <= vcpu_ceiling(spec, cap)
            && t.memory_mib >= self.memory_mib
            && t.gpus >= self.gpus
            && t.supports(self.arch)
            && offered(t, spec)
    }
}

/// The most vCPUs any rung of a kind may have: its `max_vcpus`, and never more than the
/// payer's cap. A kind that scales with input but sets no `max_vcpus` stays at `min_vcpus`
/// ([`Requirement::for_spec`]), so that is its ceiling too; a kind that does not scale and
/// sets no maximum is held by the cap alone (its memory may call for more vCPUs than it asks).
pub fn vcpu_ceiling(spec: &ComputeSpec, cap: u32) -> u32 {
    let min = spec.min_vcpus.unwrap_or(1).max(1);
    let kind = match (spec.max_vcpus, spec.vcpus_per_input_gib) {
        (Some(max), _) => max.max(min),
        (None, Some(_)) => min,
        (None, None) => u32::MAX,
    };
    kind.min(cap)
}

/// Whether a kind may use `t` at all, whatever its size. A kind that lists families gets
/// exactly their types: naming a family is asking for what it carries. Otherwise a type with
/// an accelerator is offered only when the kind asks for GPUs and it carries GPUs, and a
/// burstable type never.
pub fn offered(t: &InstanceType, spec: &ComputeSpec) -> bool {
    if !spec.families.is_empty() {
        return spec.families.iter().any(|f| f == t.family());
    }
    let accelerator_ok = match t.accelerator {
        None => true,
        Some(Accelerator::Gpu) => spec.gpus.unwrap_or(0) > 0,
        Some(_) => false,
    };
    accelerator_ok && !t.burstable
}

/// Price order with the name as tie-break, so sizing is deterministic.
pub fn cheaper(a: &InstanceType, b: &InstanceType) -> std::cmp::Ordering {
    a.on_demand_usd_per_hour
        .total_cmp(&b.on_demand_usd_per_hour)
        .then_with(|| a.name.cmp(&b.name))
}

/// Every catalog type fitting `req` under a sizing spec and the payer's vCPU cap `cap`,
/// cheapest first.
pub fn candidates<'c>(
    catalog: &'c Catalog,
    spec: &ComputeSpec,
    req: &Requirement,
    cap: u32,
) -> Vec<&'c InstanceType> {
    let mut fit: Vec<&InstanceType> = if spec.families.is_empty() {
        catalog
            .types()
            .iter()
            .filter(|t| req.fits(t, spec, cap))
            .collect()
    } else {
        // Only the allowed families' types can fit: look those up instead of scanning all.
        spec.families
            .iter()
            .flat_map(|f| catalog.in_family(f))
            .filter(|t| req.fits(t, spec, cap))
            .collect()
    };
    fit.sort_by(|a, b| cheaper(a, b));
    // A family listed twice would list its types twice; equal types sort side by side.
    fit.dedup_by(|a, b| a.name == b.name);
    fit
}

/// The instance types a job of this spec may use, in the order to try them: the explicit
/// list as written, or the `candidates` cheapest types that fit the job's requirement under
/// the payer's vCPU cap `cap`.
pub fn choose_types<'c>(
    catalog: &'c Catalog,
    spec: &ComputeSpec,
    input_bytes: Option<u64>,
    cap: u32,
) -> Vec<&'c InstanceType> {
    match &spec.instance_types {
        Some(names) => names.iter().filter_map(|n| catalog.get(n)).collect(),
        None => {
            let req = Requirement::for_spec(spec, input_bytes);
            let mut c = candidates(catalog, spec, &req, cap);
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
            if req.fits(t, &spec, 64) {
                assert!(t.on_demand_usd_per_hour >= first.on_demand_usd_per_hour);
            }
        }
    }

    #[test]
    fn the_kinds_max_vcpus_caps_every_rung() {
        // The example: m7g with max_vcpus 16 under a payer cap of 64.
        let spec = ComputeSpec {
            architecture: Some(Arch::Arm64),
            families: vec!["m7g".into()],
            min_vcpus: Some(2),
            max_vcpus: Some(16),
            vcpus_per_input_gib: Some(1.0),
            ..ComputeSpec::default()
        };
        let types = choose_types(Catalog::shipped(), &spec, Some(100 << 30), 64);
        let names: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
        // Before: m7g.4xlarge, then m7g.8xlarge and m7g.12xlarge (32 and 48 vCPUs).
        assert_eq!(names, ["m7g.4xlarge"]);
        // Without a maximum, a scaling kind stays at its minimum.
        let no_max = ComputeSpec {
            max_vcpus: None,
            ..spec
        };
        assert_eq!(vcpu_ceiling(&no_max, 64), 2);
        assert_eq!(vcpu_ceiling(&ComputeSpec::default(), 64), 64);
    }

    #[test]
    fn no_accelerator_or_burstable_type_unless_asked() {
        let catalog = Catalog::shipped();
        // The example: plain x86 needing 24 vCPUs got inf1 and vt1 rungs.
        let plain = ComputeSpec {
            min_vcpus: Some(24),
            candidates: Some(10),
            ..ComputeSpec::default()
        };
        let types = choose_types(catalog, &plain, None, 64);
        assert_eq!(types.len(), 10);
        for t in &types {
            assert_eq!(t.accelerator, None, "{}", t.name);
            assert!(!t.burstable, "{}", t.name);
        }
        let small = ComputeSpec::default();
        let first = choose_types(catalog, &small, None, 64)[0];
        assert!(!first.burstable, "{}", first.name);
        // Asked for: GPUs by count, anything by family.
        let gpu = ComputeSpec {
            gpus: Some(1),
            ..ComputeSpec::default()
        };
        let types = choose_types(catalog, &gpu, None, 64);
        assert!(types
            .iter()
            .all(|t| t.accelerator == Some(Accelerator::Gpu) && t.gpus >= 1));
        for family in ["inf2", "vt1", "t3"] {
            let named = ComputeSpec {
                families: vec![family.into()],
                ..ComputeSpec::default()
            };
            let types = choose_types(catalog, &named, None, 256);
            assert!(!types.is_empty(), "{family}");
            assert!(types.iter().all(|t| t.family() == family));
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
