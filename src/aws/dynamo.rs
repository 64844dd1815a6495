//! [`ConfigStore`] and [`Ledger`] on DynamoDB, in the table layout `infra/mayfly.yaml` creates.
//!
//! Config table (`{name}-payers`, key `payer_id`): `profile` (the profile as JSON), `version`,
//! `updated_at` (RFC 3339) and `paused` (the reason; absent when running).
//!
//! Job ledger (`{name}-jobs`, key `job_id`): `doc` (the whole job as JSON, the record read
//! back), `version` (what every conditional write checks), and the index keys copied out of
//! it: `state` and `submitted_at` for `by-state`, `payer_batch` for `by-batch`, plus
//! `payer_id`, `kind` and `batch` for operators reading the table.
//!
//! Every write is conditional on the stored version (or on the item not existing). Errors are
//! classified by AWS error code and SDK error variant.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, SecondsFormat, Utc};
use tracing::{instrument, warn};

use crate::job::{Job, JobState};
use crate::names::ledger::{payer_batch, BY_BATCH, BY_STATE};
use crate::ports::{ConfigStore, Ledger, StoreError, StoredPayer};
use crate::profile::PayerProfile;

type Item = HashMap<String, AttributeValue>;

/// Attribute names of both tables.
mod attr {
    pub const PAYER_ID: &str = "payer_id";
    pub const PROFILE: &str = "profile";
    pub const PAUSED: &str = "paused";
    pub const UPDATED_AT: &str = "updated_at";
    pub const VERSION: &str = "version";
    pub const JOB_ID: &str = "job_id";
    pub const STATE: &str = "state";
    pub const SUBMITTED_AT: &str = "submitted_at";
    pub const PAYER_BATCH: &str = "payer_batch";
    pub const KIND: &str = "kind";
    pub const BATCH: &str = "batch";
    pub const DOC: &str = "doc";
    pub const BOOT_FAILURES: &str = "boot_failures";
}

/// `submitted_at` in the by-state index: fixed width, so string order is time order.
const SORTABLE_TIME: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// The payer config table.
#[derive(Debug, Clone)]
pub struct DynamoConfigStore {
    client: Client,
    table: String,
    page_size: Option<i32>,
}

impl DynamoConfigStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            page_size: None,
        }
    }

    /// Reads at most `n` items per Scan page (DynamoDB's own page is 1 MB).
    pub fn with_page_size(mut self, n: u32) -> Self {
        self.page_size = Some(page_limit(n));
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// One conditional UpdateItem of a payer row; `expected: None` means it must not exist.
    /// Returns the new version.
    async fn write(
        &self,
        payer_id: &str,
        change: RowChange<'_>,
        expected: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let version = expected.unwrap_or(0).checked_add(1).ok_or_else(|| {
            StoreError::Other(format!("payer {payer_id}: version {expected:?} overflows"))
        })?;
        let common = "SET #version = :version, #updated_at = :updated_at";
        let (expression, field) = match change {
            RowChange::Profile(json) => (
                format!("{common}, #field = :field"),
                Some((attr::PROFILE, json)),
            ),
            RowChange::Pause(reason) => (
                format!("{common}, #field = :field"),
                Some((attr::PAUSED, reason)),
            ),
            RowChange::Resume => (format!("{common} REMOVE #field, #boot_failures"), None),
        };
        let mut call = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PAYER_ID, s(payer_id))
            .update_expression(expression)
            .expression_attribute_names("#version", attr::VERSION)
            .expression_attribute_names("#updated_at", attr::UPDATED_AT)
            .expression_attribute_values(":version", n(version))
            .expression_attribute_values(":updated_at", s(&rfc3339(now)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        call = match field {
            Some((name, value)) => call
                .expression_attribute_names("#field", name)
                .expression_attribute_values(":field", s(value)),
            None => call
                .expression_attribute_names("#field", attr::PAUSED)
                .expression_attribute_names("#boot_failures", attr::BOOT_FAILURES),
        };
        call = match expected {
            None => call
                .condition_expression("attribute_not_exists(#payer_id)")
                .expression_attribute_names("#payer_id", attr::PAYER_ID),
            Some(v) => call
                .condition_expression("#version = :expected")
                .expression_attribute_values(":expected", n(v)),
        };
        match call.send().await {
            Ok(_) => Ok(version),
            Err(err) => Err(match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(e)) => {
                    StoreError::Conflict(conflict("payer", payer_id, e.item(), expected))
                }
                _ => store_error("UpdateItem", &self.table, err),
            }),
        }
    }
}

/// What one write to a payer row changes, besides its version and `updated_at`.
#[derive(Debug, Clone, Copy)]
enum RowChange<'a> {
    /// The profile as JSON; `paused` is left as it is.
    Profile(&'a str),
    Pause(&'a str),
    Resume,
}

#[async_trait]
impl ConfigStore for DynamoConfigStore {
    #[instrument(skip(self), fields(table = %self.table))]
    async fn list(&self) -> Result<Vec<StoredPayer>, StoreError> {
        // The table holds one small row per payer, so a consistent Scan is the cheap read.
        let mut payers = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_limit(self.page_size)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| store_error("Scan", &self.table, e))?;
            for item in out.items() {
                match payer_from_item(item) {
                    Ok(payer) => payers.push(payer),
                    Err(e) => {
                        warn!(
                            table = %self.table,
                            payer_id = string(item, attr::PAYER_ID).unwrap_or("(none)"),
                            error = %e,
                            "Skipped a corrupt payer row."
                        )
                    }
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        payers.sort_by(|a, b| a.profile.payer_id.cmp(&b.profile.payer_id));
        Ok(payers)
    }

    #[instrument(skip(self), fields(table = %self.table))]
    async fn get(&self, payer_id: &str) -> Result<Option<StoredPayer>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PAYER_ID, s(payer_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("GetItem", &self.table, e))?;
        out.item().map(payer_from_item).transpose()
    }

    #[instrument(skip_all, fields(table = %self.table, payer_id = %profile.payer_id, ?expected))]
    async fn put(
        &self,
        profile: &PayerProfile,
        expected: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let json = serde_json::to_string(profile).map_err(|e| {
            StoreError::Other(format!("payer {}: cannot serialize: {e}", profile.payer_id))
        })?;
        // Applying a profile does not resume a paused payer: `paused` is left as it is.
        self.write(&profile.payer_id, RowChange::Profile(&json), expected, now)
            .await
    }

    #[instrument(skip(self), fields(table = %self.table))]
    async fn set_paused(
        &self,
        payer_id: &str,
        paused: Option<&str>,
        expected: u64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let change = paused.map_or(RowChange::Resume, RowChange::Pause);
        self.write(payer_id, change, Some(expected), now).await
    }

    #[instrument(skip(self), fields(table = %self.table))]
    async fn add_boot_failure(&self, payer_id: &str) -> Result<u32, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PAYER_ID, s(payer_id))
            .update_expression("ADD #count :one")
            .condition_expression("attribute_exists(#payer_id)")
            .expression_attribute_names("#count", attr::BOOT_FAILURES)
            .expression_attribute_names("#payer_id", attr::PAYER_ID)
            .expression_attribute_values(":one", n(1))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|err| match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => {
                    StoreError::Conflict(format!("payer {payer_id} does not exist"))
                }
                _ => store_error("UpdateItem", &self.table, err),
            })?;
        Ok(out
            .attributes()
            .and_then(|a| number(a, attr::BOOT_FAILURES))
            .map_or(1, |c| u32::try_from(c).unwrap_or(u32::MAX)))
    }

    #[instrument(skip(self), fields(table = %self.table))]
    async fn clear_boot_failures(&self, payer_id: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(attr::PAYER_ID, s(payer_id))
            .update_expression("REMOVE #count")
            .condition_expression("attribute_exists(#payer_id)")
            .expression_attribute_names("#count", attr::BOOT_FAILURES)
            .expression_attribute_names("#payer_id", attr::PAYER_ID)
            .send()
            .await
            .map(|_| ())
            .or_else(|err| match err.as_service_error() {
                // The row is gone: there is nothing to reset.
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => Ok(()),
                _ => Err(store_error("UpdateItem", &self.table, err)),
            })
    }
}

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

fn page_limit(n: u32) -> i32 {
    i32::try_from(n.max(1)).unwrap_or(i32::MAX)
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn string<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)?.as_s().ok().map(String::as_str)
}

fn number(item: &Item, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
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

/// Reads a config row back.
fn payer_from_item(item: &Item) -> Result<StoredPayer, StoreError> {
    let key = string(item, attr::PAYER_ID).unwrap_or("(no payer_id)");
    let corrupt = |reason: String| StoreError::Corrupt {
        key: key.to_owned(),
        reason,
    };
    let json = string(item, attr::PROFILE).ok_or_else(|| corrupt("no `profile` string".into()))?;
    let profile: PayerProfile = serde_json::from_str(json)
        .map_err(|e| corrupt(format!("`profile` is not a payer profile: {e}")))?;
    if profile.payer_id != key {
        return Err(corrupt(format!(
            "`profile` is the profile of payer {}",
            profile.payer_id
        )));
    }
    let version =
        number(item, attr::VERSION).ok_or_else(|| corrupt("no numeric `version`".into()))?;
    let updated_at = string(item, attr::UPDATED_AT)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .ok_or_else(|| corrupt("no RFC 3339 `updated_at`".into()))?
        .with_timezone(&Utc);
    let paused = match item.get(attr::PAUSED) {
        None => None,
        Some(AttributeValue::S(reason)) => Some(reason.clone()),
        Some(_) => return Err(corrupt("`paused` is not a string".into())),
    };
    let boot_failures =
        number(item, attr::BOOT_FAILURES).map_or(0, |c| u32::try_from(c).unwrap_or(u32::MAX));
    Ok(StoredPayer {
        profile,
        paused,
        version,
        updated_at,
        boot_failures,
    })
}

/// The text of a lost condition, from the old item DynamoDB returned with the failure.
fn conflict(what: &str, key: &str, old: Option<&Item>, expected: Option<u64>) -> String {
    let wanted = expected.map_or_else(|| "none".to_owned(), |v| format!("version {v}"));
    match old {
        None => format!("{what} {key} does not exist (expected {wanted})"),
        Some(item) => match number(item, attr::VERSION) {
            Some(v) => format!("{what} {key} is at version {v} (expected {wanted})"),
            None => format!("{what} {key} exists (expected {wanted})"),
        },
    }
}

/// Error codes with which DynamoDB asks the caller to slow down.
fn is_throttle_code(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded"
    )
}

/// Classifies an SDK failure of `op` on `table` by its AWS error code.
fn store_error<E>(op: &str, table: &str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err.code() {
        Some("ConditionalCheckFailedException") => {
            StoreError::Conflict(format!("{op} on {table}: the condition did not hold"))
        }
        Some(code) if is_throttle_code(code) => {
            StoreError::Throttled(format!("{op} on {table}: {code}"))
        }
        Some(code) => StoreError::Other(format!(
            "{op} on {table}: {code}: {}",
            err.message().unwrap_or("(no message)")
        )),
        // No service error (timeout, dropped connection…): whether it applied is unknown.
        None => StoreError::Other(format!("{op} on {table}: {}", DisplayErrorContext(&err))),
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

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

    fn service_error(code: &str) -> SdkError<PutItemError, HttpResponse> {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message("details")
            .build();
        let raw = HttpResponse::new(StatusCode::try_from(400).unwrap(), SdkBody::empty());
        SdkError::service_error(PutItemError::generic(meta), raw)
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

    #[test]
    fn payer_rows_need_every_attribute() {
        let item = HashMap::from([
            (attr::PAYER_ID.to_owned(), s("acme")),
            (attr::PROFILE.to_owned(), s("{}")),
            (attr::VERSION.to_owned(), n(1)),
            (attr::UPDATED_AT.to_owned(), s("2026-11-01T06:00:00Z")),
        ]);
        let err = payer_from_item(&item).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { key, reason } if key == "acme" && reason.contains("profile")),
            "{err}"
        );
    }

    #[test]
    fn errors_are_classified_by_code() {
        assert!(matches!(
            store_error(
                "PutItem",
                "t",
                service_error("ConditionalCheckFailedException")
            ),
            StoreError::Conflict(_)
        ));
        for code in [
            "ProvisionedThroughputExceededException",
            "ThrottlingException",
            "RequestLimitExceeded",
        ] {
            assert_eq!(
                store_error("PutItem", "t", service_error(code)),
                StoreError::Throttled(format!("PutItem on t: {code}"))
            );
        }
        assert_eq!(
            store_error("PutItem", "t", service_error("ResourceNotFoundException")),
            StoreError::Other("PutItem on t: ResourceNotFoundException: details".into())
        );
        let timeout: SdkError<PutItemError, HttpResponse> = SdkError::timeout_error("timed out");
        assert!(matches!(
            store_error("PutItem", "t", timeout),
            StoreError::Other(_)
        ));
    }

    #[test]
    fn conflicts_say_what_was_found() {
        let old = HashMap::from([(attr::VERSION.to_owned(), n(7))]);
        assert_eq!(
            conflict("job", "j1", Some(&old), Some(5)),
            "job j1 is at version 7 (expected version 5)"
        );
        assert_eq!(
            conflict("payer", "acme", None, Some(2)),
            "payer acme does not exist (expected version 2)"
        );
    }
}
