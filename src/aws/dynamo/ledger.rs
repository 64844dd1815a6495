//! [`Ledger`] on DynamoDB: the job ledger (`{name}-jobs`, key `job_id`).
//!
//! An item holds `doc` (the whole job as JSON, the record read back), `version` (what every
//! conditional write checks), and the index keys copied out of it: `state` and
//! `submitted_at` for `by-state`, `payer_batch` for `by-batch`, plus `payer_id`, `kind` and
//! `batch` for operators reading the table.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use aws_sdk_dynamodb::Client;
use tracing::{instrument, warn};

use super::{attr, conflict, n, number, page_limit, s, store_error, string, Item};
use crate::job::{Job, JobState};
use crate::names::ledger::{payer_batch, BY_BATCH, BY_STATE};
use crate::ports::{Ledger, StoreError};

/// `submitted_at` in the by-state index: fixed width, so string order is time order.
const SORTABLE_TIME: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// The job ledger.
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
    page_size: Option<i32>,
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            page_size: None,
        }
    }

    /// Reads at most `n` items per Query page (DynamoDB's own page is 1 MB).
    pub fn with_page_size(mut self, n: u32) -> Self {
        self.page_size = Some(page_limit(n));
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Every job whose `index` partition key `key` is `value`, all pages, in index order.
    /// A corrupt item is logged and skipped: one bad record must not stop a pass.
    async fn query_all(&self, index: &str, key: &str, value: &str) -> Result<Vec<Job>, StoreError> {
        let mut jobs = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression("#key = :value")
                .expression_attribute_names("#key", key)
                .expression_attribute_values(":value", s(value))
                .scan_index_forward(true)
                .set_limit(self.page_size)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| store_error("Query", &self.table, e))?;
            for item in out.items() {
                match job_from_item(item) {
                    Ok(job) => jobs.push(job),
                    Err(e) => warn!(
                        table = %self.table,
                        index,
                        job_id = string(item, attr::JOB_ID).unwrap_or("(none)"),
                        error = %e,
                        "Skipped a corrupt ledger item."
                    ),
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(jobs)
    }
}

#[async_trait]
impl Ledger for DynamoLedger {
    #[instrument(skip_all, fields(table = %self.table, job_id = %job.job_id))]
    async fn create(&self, job: &Job) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(job_item(job)?))
            .condition_expression("attribute_not_exists(#job_id)")
            .expression_attribute_names("#job_id", attr::JOB_ID)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(PutItemError::is_conditional_check_failed_exception) =>
            {
                Ok(false)
            }
            Err(err) => Err(store_error("PutItem", &self.table, err)),
        }
    }

    #[instrument(skip(self), fields(table = %self.table))]
    async fn get(&self, job_id: &str) -> Result<Option<Job>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::JOB_ID, s(job_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("GetItem", &self.table, e))?;
        out.item().map(job_from_item).transpose()
    }

    #[instrument(skip_all, fields(table = %self.table, job_id = %job.job_id, expected))]
    async fn update(&self, job: &Job, expected: u64) -> Result<(), StoreError> {
        // `version = :expected` is false for a missing item, so an update never creates one.
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(job_item(job)?))
            .condition_expression("#version = :expected")
            .expression_attribute_names("#version", attr::VERSION)
            .expression_attribute_values(":expected", n(expected))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => Err(match err.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(e)) => {
                    StoreError::Conflict(conflict("job", &job.job_id, e.item(), Some(expected)))
                }
                _ => store_error("PutItem", &self.table, err),
            }),
        }
    }

    #[instrument(skip(self), fields(table = %self.table))]
    async fn by_state(&self, state: JobState) -> Result<Vec<Job>, StoreError> {
        let mut jobs = self
            .query_all(BY_STATE, attr::STATE, state.as_str())
            .await?;
        // The index sorts by the microsecond key; ties (and sub-microsecond order) are settled
        // here so the result is total and deterministic.
        jobs.sort_by(|a, b| (a.submitted_at, &a.job_id).cmp(&(b.submitted_at, &b.job_id)));
        Ok(jobs)
    }

    #[instrument(skip(self), fields(table = %self.table))]
    async fn by_batch(&self, payer_id: &str, batch: &str) -> Result<Vec<Job>, StoreError> {
        let key = payer_batch(payer_id, batch);
        let mut jobs = self.query_all(BY_BATCH, attr::PAYER_BATCH, &key).await?;
        // `payer_batch` joins two strings with `#`, so in principle two (payer, batch) pairs
        // could share a key; keep only this pair's jobs.
        jobs.retain(|j| j.payer_id == payer_id && j.batch == batch);
        Ok(jobs)
    }
}

/// The ledger item of `job`: the JSON document plus the attributes the indexes and
/// conditions need, all taken from the same job so they cannot disagree.
fn job_item(job: &Job) -> Result<Item, StoreError> {
    let doc = serde_json::to_string(job)
        .map_err(|e| StoreError::Other(format!("job {}: cannot serialize: {e}", job.job_id)))?;
    let submitted = job.submitted_at.format(SORTABLE_TIME).to_string();
    Ok(HashMap::from([
        (attr::JOB_ID.to_owned(), s(&job.job_id)),
        (attr::STATE.to_owned(), s(job.state.as_str())),
        (attr::SUBMITTED_AT.to_owned(), s(&submitted)),
        (
            attr::PAYER_BATCH.to_owned(),
            s(&payer_batch(&job.payer_id, &job.batch)),
        ),
        (attr::PAYER_ID.to_owned(), s(&job.payer_id)),
        (attr::KIND.to_owned(), s(&job.kind)),
        (attr::BATCH.to_owned(), s(&job.batch)),
        (attr::VERSION.to_owned(), n(job.version)),
        (attr::DOC.to_owned(), s(&doc)),
    ]))
}

/// Reads a ledger item back. The `version` attribute is what conditional writes check, so
/// it is the job's version even if the document says otherwise.
fn job_from_item(item: &Item) -> Result<Job, StoreError> {
    let key = string(item, attr::JOB_ID).unwrap_or("(no job_id)");
    let corrupt = |reason: String| StoreError::Corrupt {
        key: key.to_owned(),
        reason,
    };
    let doc = string(item, attr::DOC).ok_or_else(|| corrupt("no `doc` string".into()))?;
    let mut job: Job =
        serde_json::from_str(doc).map_err(|e| corrupt(format!("`doc` is not a job: {e}")))?;
    if job.job_id != key {
        return Err(corrupt(format!(
            "`doc` is the record of job {}",
            job.job_id
        )));
    }
    job.version =
        number(item, attr::VERSION).ok_or_else(|| corrupt("no numeric `version`".into()))?;
    Ok(job)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::job::JobRequest;

    fn job() -> Job {
        let req = JobRequest::parse(
            r#"{"job_id":"acme:2026-11-01:claims","payer_id":"acme","kind":"claims","batch":"2026-11-01"}"#,
        )
        .unwrap();
        let submitted = DateTime::parse_from_rfc3339("2026-11-01T06:00:00.5Z").unwrap();
        Job::from_request(req, submitted.with_timezone(&Utc))
    }

    #[test]
    fn job_items_round_trip_with_sortable_index_keys() {
        let mut job = job();
        job.version = 4;
        let item = job_item(&job).unwrap();
        assert_eq!(
            string(&item, attr::SUBMITTED_AT),
            Some("2026-11-01T06:00:00.500000Z")
        );
        assert_eq!(string(&item, attr::STATE), Some("queued"));
        assert_eq!(string(&item, attr::PAYER_BATCH), Some("acme#2026-11-01"));
        assert_eq!(number(&item, attr::VERSION), Some(4));
        assert_eq!(job_from_item(&item).unwrap(), job);
    }

    #[test]
    fn corrupt_job_items_name_the_key() {
        let mut item = job_item(&job()).unwrap();
        item.insert(attr::DOC.into(), s("{not json"));
        let err = job_from_item(&item).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { key, .. } if key == "acme:2026-11-01:claims"),
            "{err}"
        );
        let mut item = job_item(&job()).unwrap();
        item.insert(attr::JOB_ID.into(), s("other"));
        assert!(matches!(
            job_from_item(&item),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
