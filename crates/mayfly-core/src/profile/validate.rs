//! Pure validation of a payer profile: no network, no files. Every problem is collected so
//! an operator fixes a profile in one round.

use serde::{Deserialize, Serialize};

use super::{ComputeSpec, JobKind, PayerProfile, ProfileError, ProfileErrors};
use crate::catalog::{Arch, Catalog};
use crate::duration::Duration;
use crate::secrets;
use crate::sizing;

/// Deployment-wide caps; no payer may be configured above them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalCaps {
    pub max_instances: u32,
    pub max_vcpus: u32,
}

impl Default for GlobalCaps {
    fn default() -> Self {
        Self {
            max_instances: 200,
            max_vcpus: 2048,
        }
    }
}

/// What validation checks a profile against.
#[derive(Debug, Clone, Copy)]
pub struct ValidateContext<'a> {
    pub catalog: &'a Catalog,
    pub global: GlobalCaps,
}

/// A profile that passed validation, plus its operational pause state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payer {
    pub profile: PayerProfile,
    /// Why the payer is paused (by an operator or the circuit breaker), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
}

impl Payer {
    pub fn id(&self) -> &str {
        &self.profile.payer_id
    }

    pub fn kind(&self, name: &str) -> Option<&JobKind> {
        self.profile.kinds.get(name)
    }

    /// The runtime limit of a kind: its own, or the payer's.
    pub fn max_runtime(&self, kind: &JobKind) -> Duration {
        kind.max_runtime
            .unwrap_or(self.profile.timeouts.max_runtime)
    }
}

struct Check<'a> {
    source: &'a str,
    errors: Vec<ProfileError>,
}

impl Check<'_> {
    fn fail(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(ProfileError {
            source_name: self.source.to_owned(),
            field: field.into(),
            reason: reason.into(),
        });
    }

    fn ensure(&mut self, ok: bool, field: impl Into<String>, reason: impl Into<String>) {
        if !ok {
            self.fail(field, reason);
        }
    }

    fn range<T: PartialOrd + std::fmt::Display>(&mut self, field: &str, v: T, lo: T, hi: T) {
        if v < lo || v > hi {
            self.fail(field, format!("{v} is out of range {lo}..={hi}"));
        }
    }

    fn duration(&mut self, field: &str, v: Duration, lo: Duration, hi: Duration) {
        if v < lo || v > hi {
            self.fail(field, format!("{v} is out of range {lo}..={hi}"));
        }
    }

    fn pattern(&mut self, field: &str, v: &str, ok: bool, what: &str) {
        if !ok {
            self.fail(field, format!("`{v}` is not {what}"));
        }
    }

    fn no_secret(&mut self, field: &str, v: &str) {
        if let Some(what) = secrets::looks_like_secret(v) {
            self.fail(
                field,
                format!("looks like {what}; reference secrets instead (`secrets` with ssm:/… or a Secrets Manager ARN)"),
            );
        }
    }
}

fn is_payer_id(s: &str) -> bool {
    let b = s.as_bytes();
    (2..=40).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn is_kind_name(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=40).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

fn is_aws_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|hex| {
        (8..=17).contains(&hex.len())
            && hex
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    })
}

/// What a KMS key reference must look like, for error messages.
pub const KMS_KEY_SHAPE: &str =
    "a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/KEY-ID), an alias (alias/NAME) or an alias ARN";

/// Whether `s` has the shape of a KMS key reference EC2 accepts for an EBS volume and IAM can
/// name: a key ARN, an alias (`alias/NAME`) or an alias ARN. A bare key id is refused: the
/// scheduler role's grant needs the key's ARN anyway, so the profile names it too.
pub fn is_kms_key_reference(s: &str) -> bool {
    if s.len() > 2048 {
        return false;
    }
    if let Some(name) = s.strip_prefix("alias/") {
        return is_alias_name(name);
    }
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    let [arn, partition, service, region, account, resource] = parts[..] else {
        return false;
    };
    let partition_ok = partition == "aws"
        || partition.strip_prefix("aws-").is_some_and(|p| {
            !p.is_empty() && p.bytes().all(|c| c.is_ascii_lowercase() || c == b'-')
        });
    let region_ok = !region.is_empty()
        && region
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    let account_ok = account.len() == 12 && account.bytes().all(|c| c.is_ascii_digit());
    let resource_ok = match resource.split_once('/') {
        Some(("key", id)) => is_key_id(id),
        Some(("alias", name)) => is_alias_name(name),
        _ => false,
    };
    arn == "arn" && partition_ok && service == "kms" && region_ok && account_ok && resource_ok
}

/// A KMS key id: a UUID, or `mrk-` and 32 hex digits (a multi-Region key).
fn is_key_id(id: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|c| c.is_ascii_hexdigit());
    if let Some(rest) = id.strip_prefix("mrk-") {
        return hex(rest, 32);
    }
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5 && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| hex(g, n))
}

fn is_alias_name(name: &str) -> bool {
    (1..=250).contains(&name.len())
        && !name.starts_with('/')
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/_-".contains(&c))
}

fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=64).contains(&b.len())
        && (b[0].is_ascii_uppercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

impl PayerProfile {
    /// Checks everything that can be checked without the network.
    pub fn validate(self, source: &str, ctx: &ValidateContext<'_>) -> Result<Payer, ProfileErrors> {
        let mut c = Check {
            source,
            errors: Vec::new(),
        };
        self.check_top(&mut c, ctx);
        self.check_launch(&mut c);
        self.check_kinds(&mut c, ctx);
        if c.errors.is_empty() {
            Ok(Payer {
                profile: self,
                paused: None,
            })
        } else {
            Err(ProfileErrors(c.errors))
        }
    }

    fn check_top(&self, c: &mut Check<'_>, ctx: &ValidateContext<'_>) {
        c.pattern(
            "payer_id",
            &self.payer_id,
            is_payer_id(&self.payer_id),
            "2–40 lowercase letters, digits or dashes starting with a letter",
        );
        c.no_secret("description", &self.description);
        c.range("priority", self.priority, 0, 100);
        c.range("job_priority_max", self.job_priority_max, 0, 100);
        c.range(
            "caps.max_instances",
            self.caps.max_instances,
            1,
            ctx.global.max_instances,
        );
        c.range(
            "caps.max_vcpus",
            self.caps.max_vcpus,
            1,
            ctx.global.max_vcpus,
        );
        let t = &self.timeouts;
        c.duration(
            "timeouts.boot",
            t.boot,
            Duration::from_mins(1),
            Duration::from_mins(60),
        );
        c.duration(
            "timeouts.heartbeat",
            t.heartbeat,
            Duration::from_secs(30),
            Duration::from_mins(60),
        );
        c.duration(
            "timeouts.max_runtime",
            t.max_runtime,
            Duration::from_mins(1),
            Duration::from_mins(7 * 24 * 60),
        );
    }

    fn check_launch(&self, c: &mut Check<'_>) {
        let l = &self.launch;
        c.pattern(
            "launch.image_id",
            &l.image_id,
            is_aws_id(&l.image_id, "ami-"),
            "an AMI id (ami-…)",
        );
        c.ensure(
            !l.subnets.is_empty(),
            "launch.subnets",
            "at least one subnet is required",
        );
        for (i, s) in l.subnets.iter().enumerate() {
            c.pattern(
                &format!("launch.subnets[{i}]"),
                s,
                is_aws_id(s, "subnet-"),
                "a subnet id (subnet-…)",
            );
        }
        c.ensure(
            !l.security_groups.is_empty(),
            "launch.security_groups",
            "at least one security group is required",
        );
        for (i, s) in l.security_groups.iter().enumerate() {
            c.pattern(
                &format!("launch.security_groups[{i}]"),
                s,
                is_aws_id(s, "sg-"),
                "a security group id (sg-…)",
            );
        }
        let ip_ok = (1..=128).contains(&l.instance_profile.len())
            && l.instance_profile
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "+=,.@_-".contains(ch));
        c.pattern(
            "launch.instance_profile",
            &l.instance_profile,
            ip_ok,
            "an instance profile name",
        );
        c.pattern(
            "launch.template",
            &l.template,
            is_kind_name(&l.template),
            "a template name",
        );
        c.range("launch.root_volume_gib", l.root_volume_gib, 8, 16_384);
        if let Some(n) = l.max_group {
            c.range("launch.max_group", n, 1, crate::group::MAX_GROUP);
        }
        if let Some(key) = &l.root_volume_kms_key {
            c.pattern(
                "launch.root_volume_kms_key",
                key,
                is_kms_key_reference(key),
                KMS_KEY_SHAPE,
            );
        }
    }

    fn check_kinds(&self, c: &mut Check<'_>, ctx: &ValidateContext<'_>) {
        if self.kinds.is_empty() {
            c.fail("kinds", "at least one job kind is required");
            return;
        }
        let mut tiers: Vec<u8> = self.kinds.values().map(|k| k.tier).collect();
        tiers.sort_unstable();
        tiers.dedup();
        for (expected, &tier) in tiers.iter().enumerate() {
            if usize::from(tier) != expected {
                let (name, _) = self
                    .kinds
                    .iter()
                    .find(|(_, k)| k.tier == tier)
                    .expect("tier was collected from these kinds");
                c.fail(
                    format!("kinds.{name}.tier"),
                    format!("tier {tier} has no tier {expected} below it (tiers start at 0 and have no gaps)"),
                );
                break;
            }
        }
        for (name, kind) in &self.kinds {
            let f = |field: &str| format!("kinds.{name}.{field}");
            c.pattern(
                &format!("kinds.{name}"),
                name,
                is_kind_name(name),
                "a kind name (lowercase, digits, - or _)",
            );
            c.range(&f("tier"), kind.tier, 0, 15);
            c.no_secret(&f("description"), &kind.description);
            if kind.command.is_empty() || kind.command[0].trim().is_empty() {
                c.fail(f("command"), "a program to run is required");
            }
            for (i, arg) in kind.command.iter().enumerate() {
                c.ensure(
                    !arg.contains('\0'),
                    f(&format!("command[{i}]")),
                    "contains a NUL byte",
                );
                c.no_secret(&f(&format!("command[{i}]")), arg);
            }
            if let Some(rt) = kind.max_runtime {
                c.duration(
                    &f("max_runtime"),
                    rt,
                    Duration::from_mins(1),
                    self.timeouts.max_runtime,
                );
            }
            let r = &kind.retry;
            c.range(&f("retry.max_attempts"), r.max_attempts, 1, 10);
            for (i, code) in r.retryable_exit_codes.iter().enumerate() {
                c.range(
                    &f(&format!("retry.retryable_exit_codes[{i}]")),
                    *code,
                    1,
                    255,
                );
            }
            c.ensure(
                r.backoff <= r.backoff_max,
                f("retry.backoff"),
                format!(
                    "{} is longer than retry.backoff_max {}",
                    r.backoff, r.backoff_max
                ),
            );
            c.duration(
                &f("retry.backoff_max"),
                r.backoff_max,
                Duration::from_secs(1),
                Duration::from_mins(24 * 60),
            );
            for (k, v) in &kind.env {
                c.pattern(
                    &f(&format!("env.{k}")),
                    k,
                    is_env_name(k) && !k.starts_with("MAYFLY_"),
                    "an environment name (A-Z, 0-9, _; not MAYFLY_*)",
                );
                if secrets::name_suggests_secret(k) && !secrets::is_secret_reference(v) {
                    c.fail(f(&format!("env.{k}")), "the name suggests a secret; move it to `secrets` as a reference (ssm:/… or a Secrets Manager ARN)");
                } else {
                    c.no_secret(&f(&format!("env.{k}")), v);
                }
            }
            for (k, v) in &kind.secrets {
                c.pattern(
                    &f(&format!("secrets.{k}")),
                    k,
                    is_env_name(k) && !k.starts_with("MAYFLY_"),
                    "an environment name (A-Z, 0-9, _; not MAYFLY_*)",
                );
                c.ensure(
                    secrets::is_secret_reference(v),
                    f(&format!("secrets.{k}")),
                    "must be a reference (ssm:/… or arn:aws:secretsmanager:…), never the secret itself",
                );
            }
            self.check_compute(c, ctx, name, &kind.compute);
        }
    }

    fn check_compute(
        &self,
        c: &mut Check<'_>,
        ctx: &ValidateContext<'_>,
        name: &str,
        spec: &ComputeSpec,
    ) {
        let f = |field: &str| format!("kinds.{name}.compute.{field}");
        let errors_before = c.errors.len();
        if let Some(types) = &spec.instance_types {
            let sizing_fields = [
                spec.architecture.is_some(),
                !spec.families.is_empty(),
                spec.min_vcpus.is_some(),
                spec.max_vcpus.is_some(),
                spec.vcpus_per_input_gib.is_some(),
                spec.min_memory_gib.is_some(),
                spec.memory_gib_per_vcpu.is_some(),
                spec.gpus.is_some(),
                spec.candidates.is_some(),
            ];
            if sizing_fields.iter().any(|&set| set) {
                c.fail(f("instance_types"), "give either an explicit list of instance types or sizing requirements, not both");
            }
            if types.is_empty() {
                c.fail(f("instance_types"), "the list is empty");
            }
            for (i, t) in types.iter().enumerate() {
                let field = f(&format!("instance_types[{i}]"));
                match ctx.catalog.get(t) {
                    None => c.fail(
                        field,
                        format!(
                            "`{t}` is not an instance type in the {} catalog",
                            ctx.catalog.region()
                        ),
                    ),
                    Some(it) if it.vcpus > self.caps.max_vcpus => c.fail(
                        field,
                        format!(
                            "`{t}` has {} vCPUs, above caps.max_vcpus {}",
                            it.vcpus, self.caps.max_vcpus
                        ),
                    ),
                    Some(_) => {}
                }
                if types[..i].contains(t) {
                    c.fail(
                        f(&format!("instance_types[{i}]")),
                        format!("`{t}` is listed twice"),
                    );
                }
            }
            return;
        }
        let min = spec.min_vcpus.unwrap_or(1);
        let max = spec.max_vcpus.unwrap_or(min);
        c.range(&f("min_vcpus"), min, 1, 448);
        if max < min {
            c.fail(f("max_vcpus"), format!("{max} is below min_vcpus {min}"));
        }
        if max > self.caps.max_vcpus {
            c.fail(
                f("max_vcpus"),
                format!("{max} is above caps.max_vcpus {}", self.caps.max_vcpus),
            );
        }
        if let Some(per) = spec.vcpus_per_input_gib {
            c.ensure(
                per.is_finite() && per > 0.0 && per <= 1024.0,
                f("vcpus_per_input_gib"),
                format!("{per} must be in (0, 1024]"),
            );
        }
        for (field, v) in [
            ("min_memory_gib", spec.min_memory_gib),
            ("memory_gib_per_vcpu", spec.memory_gib_per_vcpu),
        ] {
            if let Some(v) = v {
                c.ensure(
                    v.is_finite() && (0.0..=24_576.0).contains(&v),
                    f(field),
                    format!("{v} must be in 0..=24576"),
                );
            }
        }
        c.range(&f("gpus"), spec.gpus.unwrap_or(0), 0, 16);
        c.range(&f("candidates"), spec.candidates.unwrap_or(3), 1, 10);
        for (i, fam) in spec.families.iter().enumerate() {
            if !ctx.catalog.has_family(fam) {
                c.fail(
                    f(&format!("families[{i}]")),
                    format!("`{fam}` is not an instance family in the catalog"),
                );
            }
        }
        if c.errors.len() == errors_before {
            self.check_satisfiable(c, ctx, name, spec);
        }
    }

    /// Whether the kind's largest job can be sized at all, and if not, what stands in the
    /// way: a family of the wrong architecture, the vCPU ceiling, or nothing in the catalog.
    fn check_satisfiable(
        &self,
        c: &mut Check<'_>,
        ctx: &ValidateContext<'_>,
        name: &str,
        spec: &ComputeSpec,
    ) {
        let f = |field: &str| format!("kinds.{name}.compute.{field}");
        let arch = spec.architecture.unwrap_or(Arch::X86_64);
        let mut wrong_arch = false;
        for (i, fam) in spec.families.iter().enumerate() {
            if ctx.catalog.in_family(fam).any(|t| t.supports(arch)) {
                continue;
            }
            wrong_arch = true;
            let theirs = if ctx.catalog.in_family(fam).any(|t| t.supports(Arch::Arm64)) {
                Arch::Arm64
            } else {
                Arch::X86_64
            };
            let reason = match spec.architecture {
                None => format!(
                    "`{fam}` is {theirs} only, and this kind runs {arch} because `architecture` is not set (it defaults to x86_64): set architecture = \"{theirs}\" (with an {theirs} image), or drop the family",
                    theirs = theirs.as_str(),
                    arch = arch.as_str(),
                ),
                Some(_) => format!(
                    "`{fam}` is {} only, and this kind's architecture is {}: drop the family or change `architecture`",
                    theirs.as_str(),
                    arch.as_str()
                ),
            };
            c.fail(f(&format!("families[{i}]")), reason);
        }
        if wrong_arch {
            return;
        }
        // Sizing is monotone, so if the largest requirement fits, every smaller one does.
        let largest = sizing::Requirement::for_spec(spec, Some(u64::MAX));
        let cap = self.caps.max_vcpus;
        if !sizing::candidates(ctx.catalog, spec, &largest, cap).is_empty() {
            return;
        }
        let scope = if spec.families.is_empty() {
            String::new()
        } else {
            format!(" in families {}", spec.families.join(", "))
        };
        // The same requirement with no vCPU ceiling: is the ceiling what stands in the way?
        let unbounded = ComputeSpec {
            max_vcpus: None,
            vcpus_per_input_gib: None,
            ..spec.clone()
        };
        let ceiling = sizing::vcpu_ceiling(spec, cap);
        let limit = if ceiling < cap && spec.max_vcpus.is_none() {
            format!("max_vcpus (not set, so min_vcpus {ceiling})")
        } else if ceiling < cap {
            format!("max_vcpus {ceiling}")
        } else {
            format!("caps.max_vcpus {cap}")
        };
        match sizing::candidates(ctx.catalog, &unbounded, &largest, u32::MAX).first() {
            Some(t) => c.fail(
                f("max_vcpus"),
                format!(
                    "no instance type within {limit} offers {largest}{scope}; the smallest that does is {} ({} vCPU, {} MiB): raise {limit} or ask for less memory per vCPU",
                    t.name, t.vcpus, t.memory_mib
                ),
            ),
            None => {
                let excluded = ctx.catalog.types().iter().any(|t| {
                    t.vcpus >= largest.vcpus
                        && t.memory_mib >= largest.memory_mib
                        && t.gpus >= largest.gpus
                        && t.supports(arch)
                        && !sizing::offered(t, spec)
                });
                let hint = if excluded && spec.families.is_empty() {
                    " (types with accelerators and burstable types are offered only to a kind whose `families` name them)"
                } else {
                    ""
                };
                c.fail(
                    format!("kinds.{name}.compute"),
                    format!("no instance type in the catalog offers {largest}{scope}{hint}"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_kms_key_reference;

    #[test]
    fn kms_key_references_are_key_arns_aliases_or_alias_arns() {
        for ok in [
            "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:eu-west-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab",
            "arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/payer-ebs",
            "alias/mayfly/harbor-health",
            "arn:aws:kms:us-east-1:123456789012:alias/payer-ebs",
        ] {
            assert!(is_kms_key_reference(ok), "{ok} should be accepted");
        }
        for bad in [
            "",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/",
            "alias/has space",
            "arn:aws:kms:us-east-1:123456789012:key/not-a-uuid",
            "arn:aws:kms:us-east-1:12345:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:s3:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:us-east-1:123456789012:grant/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab:x",
        ] {
            assert!(!is_kms_key_reference(bad), "{bad:?} should be refused");
        }
    }
}
