//! [`Ledger`] on DynamoDB: the job ledger (`{name}-jobs`, key `job_id`).
//!
//! An item holds `doc` (the whole job as JSON, the record read back), `version` (what every
//! conditional write checks), and the index keys copied out of it: `state` and
//! `submitted_at` for `by-state`, `payer_batch` for `by-batch`, `blocker_batch` (dead and
//! cancelled jobs only) for `by-blocker`, `settled_day` and `billed_from` (terminal jobs only)
//! for `by-settled-day`, `expires_at` (terminal jobs, with a retention) for the table's TTL,
//! plus `payer_id`, `kind` and `batch` for operators reading the table. Every write puts the
//! whole item, so the sparse keys appear and disappear with the state.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, NaiveDate, Utc};
use tracing::{instrument, warn};

use super::{attr, conflict, n, number, page_limit, s, store_error, string, Item};
use crate::job::{Job, JobState};
use crate::ledger_index::{self, ReadMeter, Retention, BY_BLOCKER, BY_SETTLED_DAY};
use crate::names::ledger::{payer_batch, BY_BATCH, BY_STATE};
use crate::ports::{Ledger, PageQuery, StoreError};

/// Times in sort keys: fixed width, so string order is time order.
const SORTABLE_TIME: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

fn sortable(t: DateTime<Utc>) -> String {
    t.format(SORTABLE_TIME).to_string()
}

/// The job ledger.
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    pub(super) client: Client,
    pub(super) table: String,
    page_size: Option<i32>,
    pub(super) retention: Retention,
    meter: Option<Arc<ReadMeter>>,
}

/// One Query on an index: the partition, an optional sort-key condition, when to stop.
struct IndexQuery<'a> {
    index: &'a str,
    key: &'a str,
    value: &'a str,
    /// `(sort key attribute, condition on #sort with :sort / :sort2, values)`, e.g.
    /// `("billed_from", "#sort < :sort", ["…"])`.
    sort: Option<(&'a str, &'static str, Vec<String>)>,
    /// Stop after the page on which this many jobs were kept.
    want: Option<usize>,
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            page_size: None,
            retention: Retention::default(),
            meter: None,
        }
    }

    /// Reads at most `n` items per Query page (DynamoDB's own page is 1 MB).
    pub fn with_page_size(mut self, n: u32) -> Self {
        self.page_size = Some(page_limit(n));
        self
    }

    /// Terminal jobs written from now on expire this long after they settled.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Counts every Query page's items and bytes into `meter`.
    pub fn with_meter(mut self, meter: Arc<ReadMeter>) -> Self {
        self.meter = Some(meter);
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The jobs of one index partition (all pages, or until `want` are kept), in index order.
    /// A corrupt item is logged and skipped: one bad record must not stop a pass.
    async fn query(
        &self,
        q: IndexQuery<'_>,
        keep: impl Fn(&Job) -> bool,
    ) -> Result<Vec<Job>, StoreError> {
        let mut jobs = Vec::new();
        let mut start = None;
        let mut condition = "#key = :value".to_owned();
        if let Some((_, cond, _)) = &q.sort {
            condition.push_str(" AND ");
            condition.push_str(cond);
        }
        if let Some(m) = &self.meter {
            m.query();
        }
        loop {
            let mut req = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(q.index)
                .key_condition_expression(&condition)
                .expression_attribute_names("#key", q.key)
                .expression_attribute_values(":value", s(q.value))
                .scan_index_forward(true)
                .set_limit(self.page_size)
                .set_exclusive_start_key(start.take());
            if let Some((name, _, values)) = &q.sort {
                req = req.expression_attribute_names("#sort", *name);
                for (placeholder, value) in [":sort", ":sort2"].into_iter().zip(values) {
                    req = req.expression_attribute_values(placeholder, s(value));
                }
            }
            let out = req
                .send()
                .await
                .map_err(|e| store_error("Query", &self.table, e))?;
            if let Some(m) = &self.meter {
                // No filter expressions: the items returned are the items examined.
                let bytes = out.items().iter().map(item_bytes).sum();
                m.page(out.items().len() as u64, bytes);
            }
            for item in out.items() {
                match job_from_item(item) {
                    Ok(job) if keep(&job) => jobs.push(job),
                    Ok(_) => {}
                    Err(e) => warn!(
                        table = %self.table,
                        index = q.index,
                        job_id = string(item, attr::JOB_ID).unwrap_or("(none)"),
                        error = %e,
                        "Skipped a corrupt ledger item."
                    ),
                }
            }
            if q.want.is_some_and(|w| jobs.len() >= w) {
                break;
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(jobs)
    }

    async fn query_all(&self, index: &str, key: &str, value: &str) -> Result<Vec<Job>, StoreError> {
        let q = IndexQuery {
            index,
            key,
            value,
            sort: None,
            want: None,
        };
        self.query(q, |_| true).await
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
            .set_item(Some(ledger_item(job, self.retention)?))
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
            .set_item(Some(ledger_item(job, self.retention)?))
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

    #[instrument(skip_all, fields(table = %self.table, jobs = writes.len()))]
    async fn update_all(&self, writes: &[(Job, u64)]) -> Result<(), StoreError> {
        let mut items = Vec::with_capacity(writes.len());
        for (job, expected) in writes {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(ledger_item(job, self.retention)?))
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", attr::VERSION)
                .expression_attribute_values(":expected", n(*expected))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .map_err(|e| StoreError::Other(format!("job {}: {e}", job.job_id)))?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => Err(match err.as_service_error() {
                // The reasons come in the order of the items; a lost condition says which.
                Some(TransactWriteItemsError::TransactionCanceledException(e)) => {
                    let lost: Vec<String> = e
                        .cancellation_reasons()
                        .iter()
                        .zip(writes)
                        .filter(|(r, _)| r.code() == Some("ConditionalCheckFailed"))
                        .map(|(r, (job, expected))| {
                            conflict("job", &job.job_id, r.item(), Some(*expected))
                        })
                        .collect();
                    if lost.is_empty() {
                        store_error("TransactWriteItems", &self.table, err)
                    } else {
                        StoreError::Conflict(lost.join("; "))
                    }
                }
                _ => store_error("TransactWriteItems", &self.table, err),
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

    #[instrument(skip(self), fields(table = %self.table))]
    async fn blockers(&self, payer_id: &str, batch: &str) -> Result<Vec<Job>, StoreError> {
        let key = payer_batch(payer_id, batch);
        let mut jobs = self
            .query_all(BY_BLOCKER, attr::BLOCKER_BATCH, &key)
            .await?;
        jobs.retain(|j| j.payer_id == payer_id && j.batch == batch);
        Ok(jobs)
    }

    #[instrument(skip(self), fields(table = %self.table))]
    async fn settled_on(
        &self,
        day: NaiveDate,
        billed_before: Option<DateTime<Utc>>,
    ) -> Result<Vec<Job>, StoreError> {
        let day = ledger_index::day_key(day);
        let q = IndexQuery {
            index: BY_SETTLED_DAY,
            key: attr::SETTLED_DAY,
            value: &day,
            sort: billed_before.map(|t| (attr::BILLED_FROM, "#sort < :sort", vec![sortable(t)])),
            want: None,
        };
        self.query(q, |_| true).await
    }

    #[instrument(skip(self), fields(table = %self.table))]
    async fn page(&self, query: &PageQuery) -> Result<Vec<Job>, StoreError> {
        let q = IndexQuery {
            index: BY_STATE,
            key: attr::STATE,
            value: query.state.as_str(),
            // BETWEEN is inclusive at both ends; `matches` drops a job submitted at `before`.
            sort: match (query.since, query.before) {
                (Some(a), Some(b)) => Some((
                    attr::SUBMITTED_AT,
                    "#sort BETWEEN :sort AND :sort2",
                    vec![sortable(a), sortable(b)],
                )),
                (Some(a), None) => Some((attr::SUBMITTED_AT, "#sort >= :sort", vec![sortable(a)])),
                (None, Some(b)) => Some((attr::SUBMITTED_AT, "#sort < :sort", vec![sortable(b)])),
                (None, None) => None,
            },
            want: Some(query.limit),
        };
        let mut jobs = self.query(q, |j| query.matches(j)).await?;
        jobs.sort_by(|a, b| (a.submitted_at, &a.job_id).cmp(&(b.submitted_at, &b.job_id)));
        jobs.truncate(query.limit);
        Ok(jobs)
    }
}

/// The ledger item of `job`: the JSON document plus the attributes the indexes, conditions
/// and TTL need, all taken from the same job so they cannot disagree.
pub fn ledger_item(job: &Job, retention: Retention) -> Result<Item, StoreError> {
    let doc = serde_json::to_string(job)
        .map_err(|e| StoreError::Other(format!("job {}: cannot serialize: {e}", job.job_id)))?;
    let batch_key = payer_batch(&job.payer_id, &job.batch);
    let mut item = HashMap::from([
        (attr::JOB_ID.to_owned(), s(&job.job_id)),
        (attr::STATE.to_owned(), s(job.state.as_str())),
        (
            attr::SUBMITTED_AT.to_owned(),
            s(&sortable(job.submitted_at)),
        ),
        (attr::PAYER_ID.to_owned(), s(&job.payer_id)),
        (attr::KIND.to_owned(), s(&job.kind)),
        (attr::BATCH.to_owned(), s(&job.batch)),
        (attr::VERSION.to_owned(), n(job.version)),
        (attr::DOC.to_owned(), s(&doc)),
    ]);
    if ledger_index::is_blocker(job.state) {
        item.insert(attr::BLOCKER_BATCH.to_owned(), s(&batch_key));
    }
    if let (Some(day), Some(from)) = (
        ledger_index::settled_day(job),
        ledger_index::billed_from(job),
    ) {
        item.insert(attr::SETTLED_DAY.to_owned(), s(&day));
        item.insert(attr::BILLED_FROM.to_owned(), s(&sortable(from)));
    }
    if let Some(at) = retention.expires_at(job) {
        item.insert(
            attr::EXPIRES_AT.to_owned(),
            AttributeValue::N(at.to_string()),
        );
    }
    item.insert(attr::PAYER_BATCH.to_owned(), s(&batch_key));
    Ok(item)
}

/// The size DynamoDB counts for an item: each attribute's name plus its value (strings by
/// UTF-8 length, numbers about one byte per two significant digits plus one).
pub fn item_bytes(item: &Item) -> u64 {
    item.iter()
        .map(|(name, v)| {
            let value = match v {
                AttributeValue::S(t) => t.len() as u64,
                AttributeValue::N(t) => {
                    (t.chars().filter(char::is_ascii_digit).count() as u64).div_ceil(2) + 1
                }
                AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
                _ => 0,
            };
            name.len() as u64 + value
        })
        .sum()
}

/// The attributes a terminal item written before the `by-blocker` and `by-settled-day`
/// indexes lacks, if any (the backfill's work): `(name, value)` pairs to add.
pub(super) fn missing_index_keys(
    item: &Item,
    job: &Job,
    retention: Retention,
) -> Result<Vec<(String, AttributeValue)>, StoreError> {
    let want = ledger_item(job, retention)?;
    let names = [
        attr::BLOCKER_BATCH,
        attr::SETTLED_DAY,
        attr::BILLED_FROM,
        attr::EXPIRES_AT,
    ];
    Ok(names
        .into_iter()
        .filter_map(|name| {
            let v = want.get(name)?;
            (item.get(name) != Some(v)).then(|| (name.to_owned(), v.clone()))
        })
        .collect())
}

/// Reads a ledger item back. The `version` attribute is what conditional writes check, so
/// it is the job's version even if the document says otherwise.
pub(super) fn job_from_item(item: &Item) -> Result<Job, StoreError> {
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
        let item = ledger_item(&job, Retention::default()).unwrap();
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
    fn sparse_index_keys_follow_the_state() {
        let queued = ledger_item(&job(), Retention { days: Some(30) }).unwrap();
        for key in [
            attr::BLOCKER_BATCH,
            attr::SETTLED_DAY,
            attr::BILLED_FROM,
            attr::EXPIRES_AT,
        ] {
            assert!(!queued.contains_key(key), "{key} on a queued job");
        }
        let mut dead = job();
        dead.state = JobState::Dead;
        let launched = DateTime::parse_from_rfc3339("2026-11-01T23:50:00Z").unwrap();
        dead.attempts = vec![crate::job::Attempt {
            number: 1,
            instance_id: Some("i-0a1b2c3d4e5f60001".into()),
            launched_at: Some(launched.with_timezone(&Utc)),
            finished_at: Some(launched.with_timezone(&Utc) + chrono::Duration::minutes(20)),
            ..Default::default()
        }];
        let item = ledger_item(&dead, Retention { days: Some(30) }).unwrap();
        assert_eq!(string(&item, attr::BLOCKER_BATCH), Some("acme#2026-11-01"));
        // It settled after midnight: its last recorded time, the finish, is the next day.
        assert_eq!(string(&item, attr::SETTLED_DAY), Some("2026-11-02"));
        assert_eq!(
            string(&item, attr::BILLED_FROM),
            Some("2026-11-01T23:50:00.000000Z")
        );
        let expires = DateTime::parse_from_rfc3339("2026-12-02T00:10:00Z").unwrap();
        assert_eq!(
            number(&item, attr::EXPIRES_AT),
            Some(expires.timestamp() as u64)
        );
        let kept = ledger_item(&dead, Retention::default()).unwrap();
        assert!(!kept.contains_key(attr::EXPIRES_AT));
        dead.state = JobState::Succeeded;
        let item = ledger_item(&dead, Retention::default()).unwrap();
        assert!(!item.contains_key(attr::BLOCKER_BATCH));
        assert_eq!(string(&item, attr::SETTLED_DAY), Some("2026-11-02"));
    }

    #[test]
    fn corrupt_job_items_name_the_key() {
        let mut item = ledger_item(&job(), Retention::default()).unwrap();
        item.insert(attr::DOC.into(), s("{not json"));
        let err = job_from_item(&item).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { key, .. } if key == "acme/acme:2026-11-01:claims"),
            "{err}"
        );
        let mut item = ledger_item(&job(), Retention::default()).unwrap();
        item.insert(attr::JOB_ID.into(), s("other"));
        assert!(matches!(
            job_from_item(&item),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
