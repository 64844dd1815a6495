//! Finding a job by the id an operator types. A job's id is `payer/job_id`
//! ([`crate::job::job_key`]); an operator may also type the producer's `job_id` alone, which
//! is looked up under every configured payer, and as the id of a job accepted before ids were
//! per payer. Two payers may hold the same producer id: then the answer names both ids and the
//! operator picks one.

use crate::job::{is_job_id, job_key, split_job_id, Job, JOB_ID_FORM};
use crate::ports::{ConfigStore, Ledger, StoreError};

/// Why no single job answers an id.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("`{0}` is not a job id: {JOB_ID_FORM}")]
    Malformed(String),
    #[error("no job `{id}` in the ledger{searched}")]
    NotFound { id: String, searched: String },
    #[error("more than one payer has a job `{id}`: name one of {}", ids.join(", "))]
    Ambiguous { id: String, ids: Vec<String> },
    #[error("reading the ledger or config table: {0}")]
    Store(#[from] StoreError),
}

/// The one job `id` names: by its id as it is, or, for a producer's `job_id` alone, under each
/// configured payer. Reads one ledger item per payer in the last case (the config table holds
/// one row per payer).
pub async fn find_job(
    config: &dyn ConfigStore,
    ledger: &dyn Ledger,
    id: &str,
) -> Result<Job, LookupError> {
    if !is_job_id(id) {
        return Err(LookupError::Malformed(id.to_owned()));
    }
    if let (Some(_), _) = split_job_id(id) {
        return ledger.get(id).await?.ok_or_else(|| LookupError::NotFound {
            id: id.to_owned(),
            searched: String::new(),
        });
    }
    let payers = config.list().await?;
    let mut found = Vec::new();
    if let Some(job) = ledger.get(id).await? {
        found.push(job);
    }
    for p in &payers {
        if let Some(job) = ledger.get(&job_key(&p.profile.payer_id, id)).await? {
            found.push(job);
        }
    }
    match found.len() {
        0 => Err(LookupError::NotFound {
            id: id.to_owned(),
            searched: format!(
                " (looked under each of the {} configured payers, as `payer/{id}`)",
                payers.len()
            ),
        }),
        1 => Ok(found.remove(0)),
        _ => Err(LookupError::Ambiguous {
            id: id.to_owned(),
            ids: found.into_iter().map(|j| j.job_id).collect(),
        }),
    }
}
