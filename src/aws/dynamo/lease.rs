//! [`LeaseStore`] on DynamoDB: the leader lease as one item of the job ledger table.
//!
//! The lease protocol itself (who takes over, and when) is in [`crate::lease`]; this is only
//! where the record lives and how its conditional write is sent.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use crate::lease::{LeaseRecord, LeaseStore};
use crate::ports::StoreError;

/// The lease as an item of the deployment's jobs table, under `job_id = "~lease#NAME"` (job
/// ids cannot contain `~` or `#`; the item has none of the index attributes).
#[derive(Debug, Clone)]
pub struct DynamoLeaseStore {
    client: Client,
    table: String,
}

impl DynamoLeaseStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn key(name: &str) -> AttributeValue {
        AttributeValue::S(format!("~lease#{name}"))
    }
}

fn other(op: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("{op} on the lease: {e}"))
}

#[async_trait]
impl LeaseStore for DynamoLeaseStore {
    async fn read(&self, name: &str) -> Result<Option<LeaseRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("job_id", Self::key(name))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| other("GetItem", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        let s = |k: &str| match item.get(k) {
            Some(AttributeValue::S(v)) => Some(v.clone()),
            _ => None,
        };
        let n = |k: &str| match item.get(k) {
            Some(AttributeValue::N(v)) => v.parse::<u64>().ok(),
            _ => None,
        };
        match (s("holder"), n("lease_version"), n("ttl_ms")) {
            (Some(holder), Some(version), Some(ttl_ms)) => Ok(Some(LeaseRecord {
                holder,
                version,
                ttl_ms,
            })),
            _ => Err(StoreError::Corrupt {
                key: format!("~lease#{name}"),
                reason: "needs holder, lease_version and ttl_ms".into(),
            }),
        }
    }

    async fn write(
        &self,
        name: &str,
        record: &LeaseRecord,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut call = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("job_id", Self::key(name))
            .item("holder", AttributeValue::S(record.holder.clone()))
            .item(
                "lease_version",
                AttributeValue::N(record.version.to_string()),
            )
            .item("ttl_ms", AttributeValue::N(record.ttl_ms.to_string()));
        call = match expected {
            None => call.condition_expression("attribute_not_exists(job_id)"),
            Some(v) => call
                .condition_expression("lease_version = :v")
                .expression_attribute_values(":v", AttributeValue::N(v.to_string())),
        };
        match call.send().await {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => Err(
                    StoreError::Conflict(format!("lease {name} is not at version {expected:?}")),
                ),
                _ => Err(other(
                    "PutItem",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e),
                )),
            },
        }
    }
}
