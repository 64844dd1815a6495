//! The DynamoDB adapters, in the table layout `infra/mayfly.yaml` creates:
//!
//! - [`DynamoConfigStore`] (`config.rs`): [`ConfigStore`](crate::ports::ConfigStore) on the
//!   payer config table (`{name}-payers`).
//! - [`DynamoLedger`] (`ledger.rs`): [`Ledger`](crate::ports::Ledger) on the job ledger
//!   (`{name}-jobs`).
//!   `backfill.rs` adds the index keys of newer versions to items written before them.
//! - [`DynamoLeaseStore`] (`lease.rs`): [`LeaseStore`](crate::lease::LeaseStore) on one item
//!   of the job ledger.
//!
//! This module holds what they share: the attribute names, attribute conversion and the
//! classification of SDK errors. Every write is conditional on the stored version (or on the
//! item not existing). Errors are classified by AWS error code and SDK error variant; a
//! denial (by code, or an HTTP 403 whose body has none the SDK can read, as the emulator
//! answers) names the operation, the table and the grant it needs.

mod backfill;
mod config;
mod lease;
mod ledger;

pub use backfill::BackfillPage;
pub use config::DynamoConfigStore;
pub use lease::DynamoLeaseStore;
pub use ledger::{item_bytes, ledger_item, DynamoLedger};

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::aws::permissions;
use crate::ports::StoreError;

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
    pub const PAUSED_BY: &str = "paused_by";
    pub const BLOCKER_BATCH: &str = "blocker_batch";
    pub const SETTLED_DAY: &str = "settled_day";
    pub const BILLED_FROM: &str = "billed_from";
    pub const EXPIRES_AT: &str = "expires_at";
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
    if let Some(code) = permissions::denial_code(&err) {
        let message = err.message().unwrap_or_default();
        return StoreError::Denied(permissions::denied(
            "dynamodb",
            op,
            &format!("table {table}"),
            &code,
            message,
        ));
    }
    match err.code() {
        Some("ConditionalCheckFailedException") => {
            StoreError::Conflict(format!("{op} on {table}: the condition did not hold"))
        }
        Some(code) if is_throttle_code(code) => {
            StoreError::Throttled(format!("{op} on {table}: {code}"))
        }
        Some("ResourceNotFoundException") => StoreError::NotFound(format!("table {table}")),
        Some(code) => StoreError::Other(format!(
            "{op} on {table}: {code}: {}",
            err.message().unwrap_or("(no message)")
        )),
        // No service error (timeout, dropped connection…): whether it applied is unknown.
        None => match crate::aws::no_response(op, &err) {
            Some(what) => StoreError::Unreachable(format!("{what} ({op} on {table})")),
            None => StoreError::Other(format!("{op} on {table}: {}", DisplayErrorContext(&err))),
        },
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::operation::put_item::PutItemError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    use super::*;

    fn service_error(code: &str) -> SdkError<PutItemError, HttpResponse> {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message("details")
            .build();
        let raw = HttpResponse::new(StatusCode::try_from(400).unwrap(), SdkBody::empty());
        SdkError::service_error(PutItemError::generic(meta), raw)
    }

    #[test]
    fn denials_name_the_operation_table_and_role() {
        for err in [
            service_error("AccessDeniedException"),
            // The emulator's denial: 403 with an XML body, so no code.
            SdkError::service_error(
                PutItemError::generic(ErrorMetadata::builder().build()),
                HttpResponse::new(StatusCode::try_from(403).unwrap(), SdkBody::empty()),
            ),
        ] {
            match store_error("PutItem", "d-jobs", err) {
                StoreError::Denied(why) => {
                    assert!(why.starts_with("dynamodb:PutItem on table d-jobs"), "{why}");
                    assert!(why.contains("SchedulerRole"), "{why}");
                }
                other => panic!("{other:?}"),
            }
        }
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
            StoreError::NotFound("table t".into())
        );
        let timeout: SdkError<PutItemError, HttpResponse> = SdkError::timeout_error("timed out");
        assert_eq!(
            store_error("PutItem", "t", timeout),
            StoreError::Unreachable("timed out (PutItem on t)".into())
        );
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
