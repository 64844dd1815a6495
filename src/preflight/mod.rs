//! `mayfly preflight`: every rung of every payer's ladders checked against the account
//! without launching anything, so a broken payer is found before its jobs queue up.
//!
//! Per payer: the image exists, is available and its architecture runs each type; the
//! subnets and security groups exist and share a VPC; the instance profile exists, holds a
//! role, and that role is the one the scheduler may pass. Per kind and rung (the ladders of
//! the smallest and the largest job): the type is offered in the subnet's zone, the account's
//! vCPU quota of its family fits it, spot prices are listed where spot is used, the user-data
//! renders, and RunInstances with `DryRun` — the launch's own request — is accepted. Once: the
//! spot service-linked role. A dry-run failure already explained by a finding about the same
//! rungs is not repeated; the rest are grouped per payer, kind and code.

mod report;
mod settings;

pub use report::{Check, Finding, PreflightReport, QuotasFound, Scope};

use std::collections::BTreeMap;

use chrono::Utc;

use crate::catalog::{Catalog, InstanceType};
use crate::job::{Job, JobRequest};
use crate::ports::{AwsError, IdentityChecks, LaunchChecks, QuotaReader};
use crate::profile::{CapacityType, Payer};
use crate::quota::pools_for;
use crate::scheduler::{request_for, Scheduler};
use crate::sizing::{self, Rung};
use settings::{check_payer, check_quotas, check_spot_role, Seen};

/// The service-linked role EC2 needs to launch spot instances.
pub const SPOT_ROLE: &str = "AWSServiceRoleForEC2Spot";

/// What an emulator endpoint (moto) cannot check, said instead of reporting them as passed.
pub const EMULATOR_LIMITS: &[&str] = &[
    "RunInstances with DryRun: the emulator checks only that the instance profile exists; AWS also evaluates the caller's permissions (iam:PassRole of the profile's role, the cluster-tag conditions, KMS keys) and the launch's parameters",
    "IAM policies are not evaluated, so no permission is checked",
    "the spot service-linked role is never needed by the emulator's spot launches",
    "spot price history is synthetic",
    "Service Quotas holds no EC2 quotas: the vCPU quotas cannot be read",
    "instance-type offerings and images are the emulator's bundled data, not this account's",
];

/// The account, as preflight reads it.
#[derive(Clone, Copy)]
pub struct Account<'a> {
    pub ec2: &'a dyn LaunchChecks,
    pub iam: &'a dyn IdentityChecks,
    pub quotas: &'a dyn QuotaReader,
}

impl std::fmt::Debug for Account<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account").finish_non_exhaustive()
    }
}

/// Findings as they are made, sorted into the report's three lists.
#[derive(Debug, Default)]
pub(super) struct Findings {
    pub(super) problems: Vec<Finding>,
    pub(super) warnings: Vec<Finding>,
    pub(super) unchecked: Vec<Finding>,
}

impl Findings {
    /// A failed lookup: a problem, or unchecked when the call got no usable answer.
    pub(super) fn failed(&mut self, payer: &str, scope: Scope, check: Check, e: &AwsError) {
        let f = Finding::from_error(payer, scope, check, e);
        if e.is_transient() || is_denied(&e.code) {
            self.unchecked.push(f);
        } else {
            self.problems.push(f);
        }
    }

    fn covered(&self, payer: &str, kind: &str, rung: &Rung) -> bool {
        self.problems
            .iter()
            .any(|p| p.payer == payer && p.scope.covers(kind, rung))
    }
}

/// Denied to the caller: the check needs a permission the caller lacks. For a lookup, that
/// says nothing about the setting looked up.
fn is_denied(code: &str) -> bool {
    matches!(
        code,
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation"
    )
}

/// Checks `payers` against the account; `invalid` are stored profiles that do not validate
/// (each a problem). `emulator`: the endpoint is not AWS's own, so its limits are listed.
pub async fn preflight(
    s: &Scheduler,
    account: Account<'_>,
    payers: &[Payer],
    invalid: &[String],
    emulator: bool,
) -> PreflightReport {
    let mut found = Findings::default();
    for why in invalid {
        found.problems.push(Finding::new(
            "-",
            Scope::payer(),
            Check::Profile,
            "InvalidProfile",
            why.clone(),
        ));
    }
    let quotas = match account
        .quotas
        .vcpu_quotas(&pools_for(payers, s.catalog))
        .await
    {
        Ok(q) => Ok(q),
        Err(e) => Err(e.to_string()),
    };
    let mut seen = Seen::default();
    let (mut kinds, mut rungs) = (0, 0);
    for payer in payers {
        let ladders = ladders(payer, s.catalog);
        kinds += ladders.len() as u32;
        check_payer(s, account, payer, &ladders, &mut seen, &mut found).await;
        if let Ok(q) = &quotas {
            check_quotas(payer, &ladders, q, s.catalog, &mut found);
        }
        rungs += dry_runs(s, account, payer, &ladders, &mut found).await;
    }
    if payers
        .iter()
        .any(|p| ladders(p, s.catalog).iter().any(|(_, l)| has_spot(l)))
    {
        check_spot_role(account, &mut found).await;
    }
    PreflightReport {
        deployment: s.settings.cluster.clone(),
        payers: payers.iter().map(|p| p.id().to_owned()).collect(),
        kinds,
        rungs,
        problems: found.problems,
        warnings: found.warnings,
        unchecked: found.unchecked,
        vcpu_quotas: match quotas {
            Ok(quotas) => QuotasFound::Account { quotas },
            Err(why) => QuotasFound::Unknown { why },
        },
        emulator_limits: if emulator {
            EMULATOR_LIMITS.iter().map(|l| (*l).to_owned()).collect()
        } else {
            Vec::new()
        },
    }
}

fn has_spot(ladder: &[Rung]) -> bool {
    ladder.iter().any(|r| r.capacity == CapacityType::Spot)
}

/// Each kind's rungs: the ladders of its smallest and its largest job, merged in order.
fn ladders(payer: &Payer, catalog: &Catalog) -> Vec<(String, Vec<Rung>)> {
    payer
        .profile
        .kinds
        .iter()
        .map(|(name, kind)| {
            let mut types: Vec<&InstanceType> = Vec::new();
            for input in [None, Some(u64::MAX)] {
                for t in sizing::choose_types(
                    catalog,
                    &kind.compute,
                    input,
                    payer.profile.caps.max_vcpus,
                ) {
                    if !types.iter().any(|x| x.name == t.name) {
                        types.push(t);
                    }
                }
            }
            let policy = kind.capacity.unwrap_or(payer.profile.launch.capacity);
            let ladder = sizing::ladder(&types, &payer.profile.launch.subnets, policy);
            (name.clone(), ladder)
        })
        .collect()
}

/// The job a rung's dry run stands for: the kind's smallest, on its first attempt.
fn probe_job(payer: &Payer, kind: &str) -> Job {
    Job::from_request(
        JobRequest {
            job_id: format!("preflight:{}:{kind}", payer.id()),
            payer_id: payer.id().to_owned(),
            kind: kind.to_owned(),
            batch: "preflight".to_owned(),
            input: None,
            params: BTreeMap::new(),
            priority: None,
        },
        Utc::now(),
    )
}

/// One RunInstances dry run per rung; returns how many were made. Failures explained by a
/// finding about the same rungs are dropped; the rest are grouped by kind and code.
async fn dry_runs(
    s: &Scheduler,
    account: Account<'_>,
    payer: &Payer,
    ladders: &[(String, Vec<Rung>)],
    found: &mut Findings,
) -> u32 {
    let id = payer.id();
    let mut made = 0;
    for (kind, ladder) in ladders {
        let job = probe_job(payer, kind);
        let mut failed: BTreeMap<String, (Rung, AwsError, u32)> = BTreeMap::new();
        for rung in ladder {
            let req = match request_for(s, payer, &job, rung) {
                Ok(req) => req,
                Err(why) => {
                    found.problems.push(Finding::new(
                        id,
                        Scope::kind(kind),
                        Check::UserData,
                        "UserDataInvalid",
                        why,
                    ));
                    break;
                }
            };
            made += 1;
            let Err(e) = account.ec2.dry_run(&req).await else {
                continue;
            };
            if e.is_transient() {
                found.unchecked.push(Finding::from_error(
                    id,
                    Scope::rung(kind, rung),
                    Check::DryRun,
                    &e,
                ));
            } else if !found.covered(id, kind, rung) {
                failed
                    .entry(e.code.clone())
                    .or_insert_with(|| (rung.clone(), e.clone(), 0))
                    .2 += 1;
            }
        }
        for (_, (rung, e, n)) in failed {
            let mut f = Finding::from_error(id, Scope::rung(kind, &rung), Check::DryRun, &e);
            if n > 1 {
                f.message = format!("{} (and {} more rung(s) of this kind)", f.message, n - 1);
            }
            found.problems.push(f);
        }
    }
    made
}
