//! `mayfly payers diff|apply|list|show|pause|resume`: the config table, from profile files.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use chrono::Utc;
use serde::Serialize;

use super::{emit, payer_roles, App, CliError, Output, PayersCommand};
use crate::catalog::Catalog;
use crate::plan_view::table;
use crate::ports::{ConfigStore, StoreError};
use crate::profile::{self, Change, GlobalCaps, ValidateContext};

pub(super) async fn run(app: &App, output: Output, cmd: PayersCommand) -> Result<(), CliError> {
    let store = app.config();
    match cmd {
        PayersCommand::Validate { .. } => unreachable!("validate needs no AWS and is run offline"),
        PayersCommand::Diff { paths, caps } => {
            let report = compare(app, store.as_ref(), &paths, caps.caps()).await?;
            emit(output, &report)
        }
        PayersCommand::Apply {
            paths,
            dry_run,
            caps,
        } => {
            let mut report = compare(app, store.as_ref(), &paths, caps.caps()).await?;
            report.dry_run = dry_run;
            let refused: Vec<String> = report
                .payers
                .iter()
                .filter(|p| p.status != Status::Unchanged)
                .filter_map(|p| {
                    let why = p.refused.as_deref()?;
                    Some(format!("{} ({}): {why}", p.payer_id, p.source))
                })
                .collect();
            if !refused.is_empty() {
                return Err(CliError::Invalid(format!(
                    "nothing applied: {}",
                    refused.join("; ")
                )));
            }
            if !dry_run {
                for p in report
                    .payers
                    .iter_mut()
                    .filter(|p| p.status != Status::Unchanged)
                {
                    let profile = p
                        .profile
                        .take()
                        .expect("compare keeps the profile of changed payers");
                    let pause = p.breaker_pause.take();
                    let applied = apply_profile_with(
                        store.as_ref(),
                        &profile,
                        p.version,
                        pause.as_deref(),
                        Utc::now(),
                        |e| app.store_error(&p.payer_id, e),
                    )
                    .await?;
                    p.version = Some(applied.version);
                    p.applied = true;
                    p.resumed = applied.resumed;
                }
                let written: Vec<&str> = report
                    .payers
                    .iter()
                    .filter(|p| p.applied)
                    .map(|p| p.payer_id.as_str())
                    .collect();
                if !written.is_empty() {
                    report.next = Some(format!("mayfly preflight {}", written.join(" ")));
                }
            }
            emit(output, &report)
        }
        PayersCommand::List => {
            let rows = store.list().await.map_err(|e| runtime(app, e))?;
            let list = PayerList(
                rows.into_iter()
                    .map(|r| PayerRow {
                        payer_id: r.profile.payer_id.clone(),
                        version: r.version,
                        enabled: r.profile.enabled,
                        priority: r.profile.priority,
                        kinds: r.profile.kinds.keys().cloned().collect(),
                        paused: r.paused,
                        updated_at: r.updated_at.to_rfc3339(),
                    })
                    .collect(),
            );
            emit(output, &list)
        }
        PayersCommand::Show { payer_id } => {
            let row = store
                .get(&payer_id)
                .await
                .map_err(|e| runtime(app, e))?
                .ok_or_else(|| {
                    CliError::Invalid(format!("no payer `{payer_id}` in the config table"))
                })?;
            emit(
                output,
                &Shown {
                    payer_id,
                    version: row.version,
                    paused: row.paused,
                    updated_at: row.updated_at.to_rfc3339(),
                    profile: row.profile,
                },
            )
        }
        PayersCommand::Pause { payer_id, reason } => {
            set_paused(app, store.as_ref(), output, &payer_id, Some(&reason)).await
        }
        PayersCommand::Resume { payer_id } => {
            set_paused(app, store.as_ref(), output, &payer_id, None).await
        }
    }
}

fn runtime(app: &App, e: StoreError) -> CliError {
    app.store_error("config table", e)
}

/// What applying one payer's profile did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The row's version now.
    pub version: u64,
    /// The circuit breaker's pause the change lifted.
    pub resumed: Option<String>,
}

/// Writes `profile` conditional on `expected` (`None`: a new payer). When the row as read at
/// `expected` was paused by the circuit breaker (`breaker_pause`, its reason), lifts that
/// pause too: a changed profile is the fix it waits for. An operator's pause stays.
pub async fn apply_profile(
    store: &dyn ConfigStore,
    profile: &crate::profile::PayerProfile,
    expected: Option<u64>,
    breaker_pause: Option<&str>,
    now: chrono::DateTime<Utc>,
) -> Result<Applied, CliError> {
    let payer_id = &profile.payer_id;
    apply_profile_with(store, profile, expected, breaker_pause, now, |e| {
        CliError::Runtime(format!("{payer_id}: {e}"))
    })
    .await
}

/// [`apply_profile`], with `store_error` saying what a failed write means (a missing table,
/// an unreachable endpoint) other than a conflict.
async fn apply_profile_with(
    store: &dyn ConfigStore,
    profile: &crate::profile::PayerProfile,
    expected: Option<u64>,
    breaker_pause: Option<&str>,
    now: chrono::DateTime<Utc>,
    store_error: impl Fn(StoreError) -> CliError,
) -> Result<Applied, CliError> {
    let payer_id = &profile.payer_id;
    let version = store
        .put(profile, expected, now)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => CliError::Runtime(format!(
                "{payer_id}: changed by someone else meanwhile; diff and apply again"
            )),
            other => store_error(other),
        })?;
    let Some(reason) = breaker_pause else {
        return Ok(Applied {
            version,
            resumed: None,
        });
    };
    let version = store
        .set_paused(payer_id, None, version, now)
        .await
        .map_err(|e| {
            CliError::Runtime(format!(
                "{payer_id}: applied, but the circuit breaker's pause is not lifted ({e}); \
                 `mayfly payers resume {payer_id}` lifts it"
            ))
        })?;
    Ok(Applied {
        version,
        resumed: Some(reason.to_owned()),
    })
}

async fn set_paused(
    app: &App,
    store: &dyn ConfigStore,
    output: Output,
    payer_id: &str,
    reason: Option<&str>,
) -> Result<(), CliError> {
    let row = store
        .get(payer_id)
        .await
        .map_err(|e| runtime(app, e))?
        .ok_or_else(|| CliError::Invalid(format!("no payer `{payer_id}` in the config table")))?;
    let version = store
        .set_paused(payer_id, reason, row.version, Utc::now())
        .await
        .map_err(|e| runtime(app, e))?;
    let shown = Shown {
        payer_id: payer_id.to_owned(),
        version,
        paused: reason.map(str::to_owned),
        updated_at: Utc::now().to_rfc3339(),
        profile: row.profile,
    };
    emit(output, &shown)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    New,
    Changed,
    Unchanged,
}

#[derive(Debug, Serialize)]
struct PayerDiff {
    payer_id: String,
    source: String,
    status: Status,
    /// The stored version the change is conditional on (none for a new payer).
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    changes: Vec<Change>,
    applied: bool,
    /// The circuit breaker's pause that applying lifted.
    #[serde(skip_serializing_if = "Option::is_none")]
    resumed: Option<String>,
    #[serde(skip)]
    profile: Option<crate::profile::PayerProfile>,
    /// The stored row's circuit-breaker pause, which applying a changed profile lifts.
    #[serde(skip)]
    breaker_pause: Option<String>,
    /// Why `payers apply` refuses the profile (its instance profile is outside the
    /// deployment's IAM path, or already another payer's); the reason names the field.
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
}

#[derive(Debug, Serialize)]
struct DiffReport {
    dry_run: bool,
    payers: Vec<PayerDiff>,
    /// The command to run next, after payers were written: their preflight.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

async fn compare(
    app: &App,
    store: &dyn ConfigStore,
    paths: &[PathBuf],
    caps: GlobalCaps,
) -> Result<DiffReport, CliError> {
    let ctx = ValidateContext {
        catalog: Catalog::shipped(),
        global: caps,
    };
    super::offline::require_profiles(paths, "give profile files (*.toml) or directories of them")?;
    let files = profile::expand_paths(paths).map_err(|e| CliError::Invalid(e.to_string()))?;
    let mut out = Vec::new();
    let mut launch_profiles = Vec::new();
    for file in files {
        let payers = profile::load_and_validate(std::slice::from_ref(&file), &ctx)
            .map_err(|e| CliError::Invalid(e.to_string()))?;
        for payer in payers {
            let stored = store.get(payer.id()).await.map_err(|e| runtime(app, e))?;
            let (status, changes, version) = match &stored {
                None => (Status::New, Vec::new(), None),
                Some(row) => {
                    let changes = profile::diff(&row.profile, &payer.profile);
                    let status = if changes.is_empty() {
                        Status::Unchanged
                    } else {
                        Status::Changed
                    };
                    (status, changes, Some(row.version))
                }
            };
            let breaker_pause = stored
                .as_ref()
                .filter(|row| row.paused_by_breaker && status == Status::Changed)
                .and_then(|row| row.paused.clone());
            launch_profiles.push(payer.profile.launch.instance_profile.clone());
            out.push(PayerDiff {
                payer_id: payer.id().to_owned(),
                source: file.display().to_string(),
                status,
                version,
                changes,
                applied: false,
                resumed: None,
                profile: (status != Status::Unchanged).then_some(payer.profile),
                breaker_pause,
                refused: None,
            });
        }
    }
    check_instance_profiles(app, store, &mut out, &launch_profiles).await?;
    Ok(DiffReport {
        dry_run: true,
        payers: out,
        next: None,
    })
}

impl fmt::Display for DiffReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.payers {
            let what = match (p.status, p.applied) {
                (Status::New, true) => "created",
                (Status::Changed, true) => "updated",
                (Status::New, false) => "new",
                (Status::Changed, false) => "changed",
                (Status::Unchanged, _) => "unchanged",
            };
            let version = p
                .version
                .map(|v| format!(" (version {v})"))
                .unwrap_or_default();
            writeln!(f, "{what:<9} {}{version}  [{}]", p.payer_id, p.source)?;
            for c in &p.changes {
                writeln!(
                    f,
                    "    {}: {} → {}",
                    c.field,
                    c.old.as_deref().unwrap_or("(unset)"),
                    c.new.as_deref().unwrap_or("(unset)")
                )?;
            }
            if let Some(why) = &p.resumed {
                writeln!(
                    f,
                    "    resumed: the circuit breaker's pause is lifted ({why})"
                )?;
            }
            if let Some(why) = &p.refused {
                writeln!(f, "    refused: {why}")?;
            }
            if let Some(why) = &p.breaker_pause {
                writeln!(
                    f,
                    "    paused by the circuit breaker ({why}); applying this change lifts it"
                )?;
            }
        }
        if self.dry_run && self.payers.iter().any(|p| p.status != Status::Unchanged) {
            writeln!(f, "(nothing written; `mayfly payers apply` writes these)")?;
        }
        if let Some(next) = &self.next {
            writeln!(
                f,
                "Next: `{next}` checks their launches against the account before jobs queue up."
            )?;
        }
        Ok(())
    }
}

/// Sets each payer's `refused` when its instance profile (`launch_profiles`, in the same
/// order) is outside the deployment's IAM path or already another payer's: one the config
/// table holds for a payer not in these files, or an earlier payer of these files.
async fn check_instance_profiles(
    app: &App,
    store: &dyn ConfigStore,
    payers: &mut [PayerDiff],
    launch_profiles: &[String],
) -> Result<(), CliError> {
    let deployment = app.names.cluster();
    let mut owners: BTreeMap<String, String> = store
        .list()
        .await
        .map_err(|e| runtime(app, e))?
        .into_iter()
        .filter(|row| !payers.iter().any(|p| p.payer_id == row.profile.payer_id))
        .map(|row| (row.profile.launch.instance_profile, row.profile.payer_id))
        .collect();
    let iam = app.iam();
    for (p, name) in payers.iter_mut().zip(launch_profiles) {
        let found = payer_roles::look_up(&iam, deployment, name)
            .await
            .map_err(|e| {
                CliError::Runtime(format!(
                    "{}: reading instance profile {name} ({e}); `payers apply` checks that a \
                     payer's instance profile is this deployment's and no other payer's \
                     (iam:GetInstanceProfile)",
                    p.payer_id
                ))
            })?;
        p.refused = payer_roles::refusal(deployment, &p.payer_id, name, &found, &owners);
        if p.refused.is_none() && found != payer_roles::Found::Deployment {
            owners
                .entry(name.clone())
                .or_insert_with(|| p.payer_id.clone());
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct PayerRow {
    payer_id: String,
    version: u64,
    enabled: bool,
    priority: u8,
    kinds: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    paused: Option<String>,
    updated_at: String,
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
struct PayerList(Vec<PayerRow>);

impl fmt::Display for PayerList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<Vec<String>> = self
            .0
            .iter()
            .map(|r| {
                vec![
                    r.payer_id.clone(),
                    r.version.to_string(),
                    if r.enabled { "yes" } else { "no" }.to_owned(),
                    r.priority.to_string(),
                    r.kinds.join(","),
                    r.paused.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        f.write_str(&table(
            &["PAYER", "VERSION", "ENABLED", "PRIORITY", "KINDS", "PAUSED"],
            &rows,
        ))
    }
}

#[derive(Debug, Serialize)]
struct Shown {
    payer_id: String,
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    paused: Option<String>,
    updated_at: String,
    profile: crate::profile::PayerProfile,
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "# {} version {}, updated {}",
            self.payer_id, self.version, self.updated_at
        )?;
        if let Some(p) = &self.paused {
            writeln!(f, "# PAUSED: {p}")?;
        }
        f.write_str(&self.profile.to_toml())
    }
}
