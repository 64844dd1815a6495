//! What `mayfly preflight` found: one finding per problem, each naming its payer, kind, the
//! rungs it affects and the AWS error code, and the report they make, as text or JSON.

use std::fmt;

use serde::Serialize;

use crate::plan_view::table;
use crate::ports::AwsError;
use crate::profile::CapacityType;
use crate::quota::AccountQuotas;
use crate::sizing::Rung;

/// What was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// The stored profile validates.
    Profile,
    /// The image exists and is available.
    Image,
    /// The image's architecture is one the instance type runs.
    Architecture,
    Subnet,
    SecurityGroup,
    /// The security groups are in each subnet's VPC.
    Network,
    InstanceProfile,
    /// The scheduler role may pass the instance profile's role.
    PassRole,
    /// The type is offered in the subnet's availability zone.
    Offering,
    SpotPrice,
    /// The spot service-linked role exists (or can be created on the first spot launch).
    SpotRole,
    /// The account's vCPU quota of the rung's family group and purchase option.
    Quota,
    /// The job's user-data renders within EC2's limit.
    UserData,
    /// RunInstances with `DryRun`.
    DryRun,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = serde_json::to_value(self).map_err(|_| fmt::Error)?;
        f.write_str(v.as_str().unwrap_or_default())
    }
}

/// Which of a payer's rungs a finding is about; `None` matches any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub kind: Option<String>,
    pub instance_type: Option<String>,
    pub subnet: Option<String>,
    pub capacity: Option<CapacityType>,
}

impl Scope {
    /// Every rung of the payer.
    pub fn payer() -> Self {
        Self::default()
    }

    pub fn kind(kind: &str) -> Self {
        Self {
            kind: Some(kind.to_owned()),
            ..Self::default()
        }
    }

    pub fn subnet(subnet: &str) -> Self {
        Self {
            subnet: Some(subnet.to_owned()),
            ..Self::default()
        }
    }

    pub fn rung(kind: &str, rung: &Rung) -> Self {
        Self {
            kind: Some(kind.to_owned()),
            instance_type: Some(rung.instance_type.clone()),
            subnet: Some(rung.subnet.clone()),
            capacity: Some(rung.capacity),
        }
    }

    /// Whether the rung `rung` of `kind` is one this scope is about.
    pub fn covers(&self, kind: &str, rung: &Rung) -> bool {
        self.kind.as_deref().is_none_or(|k| k == kind)
            && self
                .instance_type
                .as_deref()
                .is_none_or(|t| t == rung.instance_type)
            && self.subnet.as_deref().is_none_or(|s| s == rung.subnet)
            && self.capacity.is_none_or(|c| c == rung.capacity)
    }

    /// The rungs as `type/subnet/capacity`, `*` standing for any.
    pub fn rungs(&self) -> String {
        format!(
            "{}/{}/{}",
            self.instance_type.as_deref().unwrap_or("*"),
            self.subnet.as_deref().unwrap_or("*"),
            self.capacity
                .map_or_else(|| "*".to_owned(), |c| c.to_string())
        )
    }
}

/// One thing found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub payer: String,
    /// The job kind (`*`: every kind of the payer).
    pub kind: String,
    /// The rungs affected, `type/subnet/capacity` (`*`: any).
    pub rung: String,
    pub check: Check,
    /// AWS's error code, or mayfly's for what it derives (`ArchitectureMismatch`…).
    pub code: String,
    pub message: String,
    #[serde(skip)]
    pub scope: Scope,
}

impl Finding {
    pub fn new(payer: &str, scope: Scope, check: Check, code: &str, message: String) -> Self {
        Self {
            payer: payer.to_owned(),
            kind: scope.kind.clone().unwrap_or_else(|| "*".to_owned()),
            rung: scope.rungs(),
            check,
            code: code.to_owned(),
            message,
            scope,
        }
    }

    pub fn from_error(payer: &str, scope: Scope, check: Check, e: &AwsError) -> Self {
        Self::new(payer, scope, check, &e.code, e.message.clone())
    }
}

/// The account's vCPU quotas as preflight read them.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum QuotasFound {
    Account { quotas: AccountQuotas },
    Unknown { why: String },
}

/// Everything preflight found.
#[derive(Debug, Clone, Serialize)]
pub struct PreflightReport {
    pub deployment: String,
    pub payers: Vec<String>,
    pub kinds: u32,
    /// Rungs dry-run (every rung of every kind's ladders).
    pub rungs: u32,
    /// What would make a launch fail.
    pub problems: Vec<Finding>,
    /// What would not fail a launch but needs a look.
    pub warnings: Vec<Finding>,
    /// What could not be checked (no answer, throttled, or denied to the caller).
    pub unchecked: Vec<Finding>,
    pub vcpu_quotas: QuotasFound,
    /// What the endpoint in use cannot check, when it is not AWS's own (an emulator).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub emulator_limits: Vec<String>,
}

impl PreflightReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.unchecked.is_empty()
    }
}

fn rows(label: &str, findings: &[Finding]) -> Vec<Vec<String>> {
    findings
        .iter()
        .map(|x| {
            vec![
                label.to_owned(),
                x.payer.clone(),
                x.kind.clone(),
                x.rung.clone(),
                x.check.to_string(),
                x.code.clone(),
                x.message.clone(),
            ]
        })
        .collect()
}

impl fmt::Display for PreflightReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Preflight of deployment {}: {} payer(s) ({}), {} kind(s), {} rung(s)",
            self.deployment,
            self.payers.len(),
            self.payers.join(", "),
            self.kinds,
            self.rungs
        )?;
        let mut all = rows("FAIL", &self.problems);
        all.extend(rows("WARN", &self.warnings));
        all.extend(rows("UNCHECKED", &self.unchecked));
        if !all.is_empty() {
            let header = ["", "PAYER", "KIND", "RUNG", "CHECK", "CODE", "MESSAGE"];
            f.write_str(&table(&header, &all))?;
        }
        match &self.vcpu_quotas {
            QuotasFound::Account { quotas } if quotas.is_empty() => {
                writeln!(f, "vCPU quotas: none needed")?;
            }
            QuotasFound::Account { quotas } => writeln!(f, "vCPU quotas: {quotas}")?,
            QuotasFound::Unknown { why } => writeln!(
                f,
                "vCPU quotas: cannot be read ({why}); the planner applies only the caps (or --vcpu-quota)"
            )?,
        }
        if !self.emulator_limits.is_empty() {
            writeln!(
                f,
                "Not checked against this endpoint (an emulator, not AWS), so not reported as passed:"
            )?;
            for l in &self.emulator_limits {
                writeln!(f, "  - {l}")?;
            }
        }
        let verdict = if !self.problems.is_empty() {
            "a launch would fail"
        } else if !self.unchecked.is_empty() {
            "some checks could not be made"
        } else if !self.emulator_limits.is_empty() {
            "every rung would launch, as far as this endpoint can tell"
        } else {
            "every rung would launch"
        };
        writeln!(
            f,
            "{} problem(s), {} warning(s), {} unchecked: {verdict}",
            self.problems.len(),
            self.warnings.len(),
            self.unchecked.len()
        )
    }
}
