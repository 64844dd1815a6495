//! [`ConfigStore`] on DynamoDB: the payer config table (`{name}-payers`, key `payer_id`).
//!
//! A row holds `profile` (the profile as JSON), `version`, `updated_at` (RFC 3339),
//! `paused` (the reason; absent when running), `paused_by` (`breaker` for the circuit
//! breaker's pause; absent for an operator's) and `boot_failures` (absent when none). Every
//! write is conditional on the stored version, or on the row not existing.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, SecondsFormat, Utc};
use tracing::{instrument, warn};

use super::{attr, conflict, n, number, page_limit, s, store_error, string, Item};
use crate::ports::{ConfigStore, StoreError, StoredPayer};
use crate::profile::PayerProfile;

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
                format!("{common}, #field = :field REMOVE #paused_by"),
                Some((attr::PAUSED, reason)),
            ),
            RowChange::BreakerPause(reason) => (
                format!("{common}, #field = :field, #paused_by = :breaker"),
                Some((attr::PAUSED, reason)),
            ),
            RowChange::Resume => (
                format!("{common} REMOVE #field, #boot_failures, #paused_by"),
                None,
            ),
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
        call = match change {
            RowChange::Profile(_) => call,
            RowChange::BreakerPause(_) => call
                .expression_attribute_names("#paused_by", attr::PAUSED_BY)
                .expression_attribute_values(":breaker", s(BREAKER)),
            RowChange::Pause(_) | RowChange::Resume => {
                call.expression_attribute_names("#paused_by", attr::PAUSED_BY)
            }
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
    /// An operator's pause.
    Pause(&'a str),
    /// The circuit breaker's pause (`paused_by` = `breaker`).
    BreakerPause(&'a str),
    Resume,
}

/// `paused_by` of a pause the circuit breaker made.
const BREAKER: &str = "breaker";

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
    async fn breaker_pause(
        &self,
        payer_id: &str,
        reason: &str,
        expected: u64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.write(
            payer_id,
            RowChange::BreakerPause(reason),
            Some(expected),
            now,
        )
        .await
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

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
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
    let paused_by_breaker = paused.is_some() && string(item, attr::PAUSED_BY) == Some(BREAKER);
    Ok(StoredPayer {
        profile,
        paused,
        paused_by_breaker,
        version,
        updated_at,
        boot_failures,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

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
}
