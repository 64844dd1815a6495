//! The ledger backfill: items written before the `by-blocker` and `by-settled-day` indexes
//! (or before a retention was set) lack their keys, and an index only holds items that carry
//! them. A terminal job is never written again, so without a backfill it stays out of the
//! day index for good: `cost report --from` and today's gauges would miss it.
//!
//! One page of a Scan at a time, in key order, resumable from the last key; each item missing
//! a key gets an UpdateItem that sets exactly the missing keys, conditional on the version
//! read, so a job written meanwhile (which wrote its keys itself) is left alone. Items that
//! already carry the right keys are not written: a second run writes nothing.

use super::ledger::{job_from_item, missing_index_keys};
use super::{attr, n, s, store_error, string, DynamoLedger};
use crate::ports::StoreError;

/// What one page of the backfill did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillPage {
    /// Items the page's Scan read.
    pub scanned: u64,
    /// Items given their missing keys.
    pub updated: u64,
    /// Items that are not jobs (the scheduler's lease) or could not be read as one.
    pub skipped: u64,
    /// Items written meanwhile by mayfly itself (their keys are written with them).
    pub raced: u64,
    /// Where the next page starts (`--start-after`); `None` when the table is done.
    pub next: Option<String>,
}

impl DynamoLedger {
    /// Backfills one page of at most `limit` items after `start_after` (a job id).
    pub async fn backfill_page(
        &self,
        start_after: Option<&str>,
        limit: u32,
    ) -> Result<BackfillPage, StoreError> {
        let out = self
            .client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .set_exclusive_start_key(
                start_after.map(|id| [(attr::JOB_ID.to_owned(), s(id))].into()),
            )
            .send()
            .await
            .map_err(|e| store_error("Scan", &self.table, e))?;
        let mut page = BackfillPage {
            scanned: out.items().len() as u64,
            ..BackfillPage::default()
        };
        for item in out.items() {
            let Ok(job) = job_from_item(item) else {
                page.skipped += 1;
                continue;
            };
            let missing = missing_index_keys(item, &job, self.retention)?;
            if missing.is_empty() {
                continue;
            }
            let mut req = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(attr::JOB_ID, s(&job.job_id))
                .condition_expression("#version = :version")
                .expression_attribute_names("#version", attr::VERSION)
                .expression_attribute_values(":version", n(job.version));
            let mut sets = Vec::new();
            for (i, (name, value)) in missing.into_iter().enumerate() {
                sets.push(format!("#k{i} = :v{i}"));
                req = req
                    .expression_attribute_names(format!("#k{i}"), name)
                    .expression_attribute_values(format!(":v{i}"), value);
            }
            match req
                .update_expression(format!("SET {}", sets.join(", ")))
                .send()
                .await
            {
                Ok(_) => page.updated += 1,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
                {
                    page.raced += 1
                }
                Err(e) => return Err(store_error("UpdateItem", &self.table, e)),
            }
        }
        page.next = out
            .last_evaluated_key()
            .and_then(|k| string(k, attr::JOB_ID))
            .map(str::to_owned);
        Ok(page)
    }
}
