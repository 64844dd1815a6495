//! Reading what a pass plans from: the validated payers and the ledger jobs that matter.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::Catalog;
use crate::job::{Job, JobState};
use crate::ports::{ConfigStore, Ledger, StoreError};
use crate::profile::{GlobalCaps, Payer, ValidateContext};

/// Payers whose stored profile validates, and the problems of those that do not.
#[derive(Debug, Default)]
pub struct LoadedPayers {
    pub valid: Vec<Payer>,
    pub invalid: Vec<String>,
    /// Each payer's circuit-breaker count, where it is not zero.
    pub boot_failures: BTreeMap<String, u32>,
}

/// Reads every payer row and validates it; a broken row is reported, not fatal.
pub async fn load_payers(
    config: &dyn ConfigStore,
    catalog: &Catalog,
    global: GlobalCaps,
) -> Result<LoadedPayers, StoreError> {
    let ctx = ValidateContext { catalog, global };
    let mut out = LoadedPayers::default();
    for row in config.list().await? {
        if row.boot_failures > 0 {
            out.boot_failures
                .insert(row.profile.payer_id.clone(), row.boot_failures);
        }
        let source = format!("config row {}", row.profile.payer_id);
        match row.profile.validate(&source, &ctx) {
            Ok(mut payer) => {
                payer.paused = row.paused;
                out.valid.push(payer);
            }
            Err(e) => {
                tracing::error!(error = %e, "Stored payer profile is invalid; its jobs wait.");
                out.invalid.push(e.to_string());
            }
        }
    }
    Ok(out)
}

/// The states whose jobs the planner considers directly.
pub const ACTIVE: [JobState; 5] = [
    JobState::Queued,
    JobState::Blocked,
    JobState::Launching,
    JobState::Running,
    JobState::Failed,
];

/// Every active job, plus the dead and cancelled jobs of each (payer, batch) that has an
/// active job, so tier gates see what blocks the batch. Succeeded jobs are not read: a
/// succeeded lower tier holds nothing back, and the planner only counts the tiers' jobs that
/// have not succeeded. Queries only, none over the ledger's history; no scan.
pub async fn load_snapshot(ledger: &dyn Ledger) -> Result<Vec<Job>, StoreError> {
    let mut jobs: BTreeMap<String, Job> = BTreeMap::new();
    for state in ACTIVE {
        for job in ledger.by_state(state).await? {
            jobs.insert(job.job_id.clone(), job);
        }
    }
    let groups: BTreeSet<(String, String)> = jobs
        .values()
        .map(|j| (j.payer_id.clone(), j.batch.clone()))
        .collect();
    for (payer, batch) in groups {
        for job in ledger.blockers(&payer, &batch).await? {
            // An index read may lag a write just made: keep the newer version.
            match jobs.get(&job.job_id) {
                Some(existing) if existing.version >= job.version => {}
                _ => {
                    jobs.insert(job.job_id.clone(), job);
                }
            }
        }
    }
    Ok(jobs.into_values().collect())
}
