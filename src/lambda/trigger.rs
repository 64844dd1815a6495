//! What invoked the Lambda function, and what it does for each trigger. An EventBridge scheduled event
//! runs one pass. An SQS event from the events queue applies its records' instance events,
//! moves unparseable ones to the events DLQ with the reason, then runs a pass within the
//! invocation's remaining time, and answers with the records to deliver again
//! (`{"batchItemFailures":[{"itemIdentifier": messageId}]}`, the partial batch response of
//! an event source mapping with `ReportBatchItemFailures`): the events that could not be
//! applied yet. Every other record is done, and Lambda deletes it. The pass is cut short
//! before the function's timeout: an invocation that timed out would have Lambda deliver the
//! whole batch again, applied events included.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ports::Message;
use crate::scheduler::{EventsReport, Fate, PassReport, Scheduler, TickError, TickOptions};

/// What invoked the function.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// An EventBridge schedule (`detail-type: Scheduled Event`).
    Scheduled,
    /// A batch of messages from the events queue.
    Sqs(Vec<SqsRecord>),
}

/// One record of an SQS event, as Lambda delivers it (the fields mayfly uses).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsRecord {
    pub message_id: String,
    #[serde(default)]
    pub receipt_handle: String,
    pub body: String,
    #[serde(default)]
    pub attributes: SqsAttributes,
    #[serde(default, rename = "eventSourceARN")]
    pub event_source_arn: String,
}

/// The system attributes of an SQS record that mayfly reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SqsAttributes {
    #[serde(default)]
    pub approximate_receive_count: Option<String>,
    /// Who sent the message (`<role id>:<instance id>` for an instance's role).
    #[serde(default)]
    pub sender_id: Option<String>,
}

impl SqsRecord {
    fn message(&self) -> Message {
        Message {
            message_id: self.message_id.clone(),
            body: self.body.clone(),
            receipt: self.receipt_handle.clone(),
            receive_count: self
                .attributes
                .approximate_receive_count
                .as_deref()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1),
            sender_id: self.attributes.sender_id.clone(),
        }
    }
}

/// The partial batch response of an SQS-triggered invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse {
    pub batch_item_failures: Vec<ItemFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemFailure {
    pub item_identifier: String,
}

/// Why an invocation failed as a whole (Lambda reports it as the invocation's error).
#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    /// The payload is neither a scheduled event nor an SQS event.
    #[error("unsupported event: {0}")]
    BadEvent(String),
    /// The pass (or applying the SQS batch) could not run at all.
    #[error(transparent)]
    Pass(#[from] TickError),
}

impl LambdaError {
    /// The error type Lambda records for the invocation.
    pub fn error_type(&self) -> &'static str {
        match self {
            LambdaError::BadEvent(_) => "mayfly.UnsupportedEvent",
            LambdaError::Pass(_) => "mayfly.PassFailed",
        }
    }
}

impl Trigger {
    /// Recognises the two event shapes; anything else is refused, naming what was missing.
    pub fn from_payload(payload: &Value) -> Result<Self, LambdaError> {
        if let Some(records) = payload.get("Records") {
            let records: Vec<Value> = serde_json::from_value(records.clone())
                .map_err(|e| LambdaError::BadEvent(format!("Records: {e}")))?;
            let mut out = Vec::with_capacity(records.len());
            for (i, r) in records.into_iter().enumerate() {
                let source = r.get("eventSource").and_then(Value::as_str);
                if source != Some("aws:sqs") {
                    return Err(LambdaError::BadEvent(format!(
                        "Records[{i}].eventSource: expected aws:sqs, got {source:?}"
                    )));
                }
                let record: SqsRecord = serde_json::from_value(r)
                    .map_err(|e| LambdaError::BadEvent(format!("Records[{i}]: {e}")))?;
                out.push(record);
            }
            return Ok(Trigger::Sqs(out));
        }
        let detail_type = payload.get("detail-type").and_then(Value::as_str);
        let source = payload.get("source").and_then(Value::as_str);
        match (source, detail_type) {
            (Some("aws.events"), Some("Scheduled Event")) => Ok(Trigger::Scheduled),
            _ => Err(LambdaError::BadEvent(format!(
                "expected an EventBridge scheduled event (source aws.events, detail-type \
                 Scheduled Event) or an SQS event (Records), got source {source:?}, \
                 detail-type {detail_type:?}"
            ))),
        }
    }
}

/// What one invocation did.
#[derive(Debug, Clone, Serialize)]
pub struct Handled {
    /// The partial batch response (SQS triggers only).
    pub batch: Option<BatchResponse>,
    /// The SQS batch's events, applied before the pass (SQS triggers only).
    pub events: Option<EventsReport>,
    /// The pass; `None` when it could not run after an SQS batch was applied (the batch
    /// response still stands, and the next scheduled pass catches up).
    pub pass: Option<PassReport>,
}

impl Handled {
    /// What the function answers Lambda: the partial batch response to an SQS event, the
    /// pass report to a schedule.
    pub fn response(&self) -> Value {
        let value = match (&self.batch, &self.pass) {
            (Some(batch), _) => serde_json::to_value(batch),
            (None, Some(pass)) => serde_json::to_value(pass),
            (None, None) => Ok(Value::Null),
        };
        // Both are plain data with string keys: serializing cannot fail.
        value.unwrap_or(Value::Null)
    }
}

/// Handles one invocation at time `now`, with no limit on the pass after an SQS batch.
pub async fn handle(
    scheduler: &Scheduler,
    trigger: Trigger,
    now: DateTime<Utc>,
) -> Result<Handled, LambdaError> {
    handle_within(scheduler, trigger, now, None).await
}

/// Handles one invocation at time `now`; the pass after an SQS batch stops when
/// `pass_budget` runs out (stopping a pass part-way is safe: every write is conditional and
/// the next pass repairs a half-done launch), so the batch's answer always reaches Lambda.
pub async fn handle_within(
    scheduler: &Scheduler,
    trigger: Trigger,
    now: DateTime<Utc>,
    pass_budget: Option<std::time::Duration>,
) -> Result<Handled, LambdaError> {
    match trigger {
        Trigger::Scheduled => {
            let pass = scheduler.tick(TickOptions::default(), now).await?;
            Ok(Handled {
                batch: None,
                events: None,
                pass: Some(pass),
            })
        }
        Trigger::Sqs(records) => {
            let messages: Vec<Message> = records.iter().map(SqsRecord::message).collect();
            let (events, fates) = scheduler.apply_events(&messages, now).await?;
            let mut batch_item_failures = Vec::new();
            for (r, fate) in records.iter().zip(&fates) {
                let done = match fate {
                    Fate::Done => true,
                    Fate::Again => false,
                    // Moved aside with the reason by mayfly itself: the events queue has no
                    // redrive, so that no valid event is ever dead-lettered by counting.
                    Fate::Malformed(reason) | Fate::Refused(reason) => {
                        scheduler.dead_letter_event(&r.body, reason).await
                    }
                };
                if !done {
                    batch_item_failures.push(ItemFailure {
                        item_identifier: r.message_id.clone(),
                    });
                }
            }
            let tick = scheduler.tick(TickOptions::default(), now);
            let ran = match pass_budget {
                None => Ok(tick.await),
                Some(budget) => tokio::time::timeout(budget, tick).await,
            };
            let pass = match ran {
                Ok(Ok(p)) => Some(p),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "The pass after the SQS batch could not run.");
                    None
                }
                Err(_) => {
                    tracing::warn!(
                        budget_ms = pass_budget.map_or(0, |b| b.as_millis() as u64),
                        "The pass after the SQS batch stopped at the invocation's time budget; \
                         the batch's answer stands and the next pass carries on."
                    );
                    None
                }
            };
            Ok(Handled {
                batch: Some(BatchResponse {
                    batch_item_failures,
                }),
                events: Some(events),
                pass,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULED: &str = include_str!("../../tests/fixtures/lambda/scheduled.json");
    const SQS: &str = include_str!("../../tests/fixtures/lambda/sqs.json");

    #[test]
    fn recognises_a_scheduled_event() {
        let v: Value = serde_json::from_str(SCHEDULED).unwrap();
        assert_eq!(Trigger::from_payload(&v).unwrap(), Trigger::Scheduled);
    }

    #[test]
    fn reads_sqs_records_with_their_receive_count() {
        let v: Value = serde_json::from_str(SQS).unwrap();
        let Trigger::Sqs(records) = Trigger::from_payload(&v).unwrap() else {
            panic!("an SQS event");
        };
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0].message_id,
            "0c4a4e1e-6f4d-4b7a-9a55-3f1f3d3c0001"
        );
        let m = records[1].message();
        assert_eq!(m.receive_count, 3);
        assert_eq!(m.body, "not an event");
    }

    #[test]
    fn refuses_other_events_naming_what_is_wrong() {
        let s3 = serde_json::json!({"Records": [{"eventSource": "aws:s3", "body": "x"}]});
        let err = Trigger::from_payload(&s3).unwrap_err().to_string();
        assert!(err.contains("Records[0].eventSource"), "{err}");
        let other = serde_json::json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification"});
        let err = Trigger::from_payload(&other).unwrap_err();
        assert_eq!(err.error_type(), "mayfly.UnsupportedEvent");
        assert!(err.to_string().contains("aws.ec2"), "{err}");
        let no_body =
            serde_json::json!({"Records": [{"eventSource": "aws:sqs", "messageId": "m"}]});
        let err = Trigger::from_payload(&no_body).unwrap_err().to_string();
        assert!(err.contains("body"), "{err}");
    }

    #[test]
    fn batch_response_has_lambdas_field_names() {
        let r = BatchResponse {
            batch_item_failures: vec![ItemFailure {
                item_identifier: "m-1".into(),
            }],
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"batchItemFailures":[{"itemIdentifier":"m-1"}]}"#
        );
    }
}
