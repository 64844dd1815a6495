//! [`Queue`] on SQS: receive in batches of up to 10 with the receive count, delete in batches
//! of 10 reporting the receipts that failed, send with string attributes, and the queue
//! depth. Errors are classified by AWS error code; a denial (by code, or an HTTP 403 whose
//! body has none the SDK can read, as the emulator answers) names the operation, the queue
//! and the grant it needs.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName,
};
use aws_sdk_sqs::Client;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use tracing::{instrument, warn};

use crate::aws::permissions;
use crate::ports::{Message, Queue, QueueError};

/// SQS's batch limit for ReceiveMessage and DeleteMessageBatch.
const BATCH: usize = 10;
/// SQS's longest long-poll wait.
const MAX_WAIT_SECS: u64 = 20;

/// One SQS queue, by URL.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }

    /// Looks the queue up by name (one GetQueueUrl).
    pub async fn by_name(client: Client, name: &str) -> Result<Self, QueueError> {
        let out = client
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| match queue_error("GetQueueUrl", name, e) {
                QueueError::Unreachable(what) => {
                    QueueError::Unreachable(format!("{what} (GetQueueUrl {name})"))
                }
                other => other,
            })?;
        match out.queue_url() {
            Some(url) if !url.is_empty() => Ok(Self::new(client, url)),
            _ => Err(QueueError::Other(format!(
                "GetQueueUrl returned no URL for queue {name}"
            ))),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

#[async_trait]
impl Queue for SqsQueue {
    #[instrument(skip(self), fields(queue = %self.url))]
    async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<Message>, QueueError> {
        // `clamp` keeps both within SQS's limits, so the casts below cannot truncate.
        let max = (max as usize).clamp(1, BATCH) as i32;
        let wait = wait.as_secs().min(MAX_WAIT_SECS) as i32;
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SenderId)
            .send()
            .await
            .map_err(|e| queue_error("ReceiveMessage", &self.url, e))?;
        Ok(out.messages().iter().filter_map(to_message).collect())
    }

    #[instrument(skip_all, fields(queue = %self.url, count = receipts.len()))]
    async fn delete(&self, receipts: &[String]) -> Result<Vec<String>, QueueError> {
        // Deleting an already deleted receipt succeeds, so after an error the caller may
        // resend every receipt, including those of chunks that went through.
        let mut failed = Vec::new();
        for chunk in receipts.chunks(BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, receipt)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .build()
                        .map_err(|e| QueueError::Other(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| queue_error("DeleteMessage", &self.url, e))?;
            for entry in out.failed() {
                warn!(
                    id = entry.id(),
                    code = entry.code(),
                    "Delete of a message failed."
                );
            }
            // Anything not confirmed deleted counts as failed, so nothing is silently lost.
            let ok: HashSet<&str> = out.successful().iter().map(|e| e.id()).collect();
            failed.extend(
                chunk
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !ok.contains(i.to_string().as_str()))
                    .map(|(_, receipt)| receipt.clone()),
            );
        }
        Ok(failed)
    }

    #[instrument(skip_all, fields(queue = %self.url))]
    async fn send(&self, body: &str, attributes: &[(&str, &str)]) -> Result<String, QueueError> {
        let mut call = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body);
        for (name, value) in attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(*value)
                .build()
                .map_err(|e| QueueError::Other(e.to_string()))?;
            call = call.message_attributes(*name, value);
        }
        let out = call
            .send()
            .await
            .map_err(|e| queue_error("SendMessage", &self.url, e))?;
        out.message_id()
            .map(str::to_owned)
            .ok_or_else(|| QueueError::Other("SendMessage returned no message id".into()))
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        self.count(QueueAttributeName::ApproximateNumberOfMessages)
            .await
    }

    async fn in_flight(&self) -> Result<u64, QueueError> {
        self.count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .await
    }
}

impl SqsQueue {
    /// One of the queue's approximate counts (GetQueueAttributes).
    async fn count(&self, name: QueueAttributeName) -> Result<u64, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(name.clone())
            .send()
            .await
            .map_err(|e| queue_error("GetQueueAttributes", &self.url, e))?;
        let raw = out.attributes().and_then(|a| a.get(&name)).ok_or_else(|| {
            QueueError::Other(format!("GetQueueAttributes returned no {}", name.as_str()))
        })?;
        raw.parse()
            .map_err(|_| QueueError::Other(format!("{} is not a count: {raw:?}", name.as_str())))
    }
}

fn to_message(m: &aws_sdk_sqs::types::Message) -> Option<Message> {
    let (Some(message_id), Some(receipt)) = (m.message_id(), m.receipt_handle()) else {
        warn!("ReceiveMessage returned a message without an id or receipt handle; skipped.");
        return None;
    };
    let receive_count = m
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let sender_id = m
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::SenderId))
        .cloned();
    Some(Message {
        message_id: message_id.to_owned(),
        body: m.body().unwrap_or_default().to_owned(),
        sender_id,
        receipt: receipt.to_owned(),
        receive_count,
    })
}

/// Error codes with which SQS asks the caller to slow down.
fn is_throttle_code(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException" | "Throttling" | "RequestThrottled" | "OverLimit" | "KmsThrottled"
    )
}

/// Error codes with which SQS says the queue does not exist (the query protocol's and the
/// JSON protocol's spelling).
fn is_missing_queue_code(code: &str) -> bool {
    matches!(
        code,
        "AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist"
    )
}

/// Classifies an SDK failure of SQS `operation` on `queue` (its URL or name): a denial
/// names both and the grant it needs; throttling is told apart; anything else is an error.
pub fn queue_error<E>(operation: &str, queue: &str, err: SdkError<E, HttpResponse>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let Some(code) = permissions::denial_code(&err) {
        let message = err.message().unwrap_or_default();
        return QueueError::Denied(permissions::denied(
            "sqs",
            operation,
            &format!("queue {queue}"),
            &code,
            message,
        ));
    }
    match err.code() {
        Some(code) if is_throttle_code(code) => QueueError::Throttled(code.to_owned()),
        Some(code) if is_missing_queue_code(code) => QueueError::NotFound(format!("queue {queue}")),
        Some(code) => QueueError::Other(format!(
            "{code}: {}",
            err.message().unwrap_or("(no message)")
        )),
        None => match crate::aws::no_response("SQS", &err) {
            Some(what) => QueueError::Unreachable(what),
            None => QueueError::Other(DisplayErrorContext(&err).to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_messages() {
        let m = aws_sdk_sqs::types::Message::builder()
            .message_id("m-1")
            .receipt_handle("r-1")
            .body("{}")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "3")
            .attributes(
                MessageSystemAttributeName::SenderId,
                "AROAEXAMPLEROLEID:i-0123456789abcdef0",
            )
            .build();
        assert_eq!(
            to_message(&m),
            Some(Message {
                message_id: "m-1".into(),
                body: "{}".into(),
                receipt: "r-1".into(),
                receive_count: 3,
                sender_id: Some("AROAEXAMPLEROLEID:i-0123456789abcdef0".into()),
            })
        );
        let no_receipt = aws_sdk_sqs::types::Message::builder()
            .message_id("m-2")
            .build();
        assert_eq!(to_message(&no_receipt), None);
    }

    #[test]
    fn denials_name_the_operation_queue_and_role() {
        use aws_sdk_sqs::error::ErrorMetadata;
        use aws_sdk_sqs::operation::send_message::SendMessageError;
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;

        // The emulator's denial: 403 with an XML body, so no code.
        let err = SdkError::service_error(
            SendMessageError::generic(ErrorMetadata::builder().build()),
            HttpResponse::new(StatusCode::try_from(403).unwrap(), SdkBody::empty()),
        );
        match queue_error("SendMessage", "https://q/intake", err) {
            QueueError::Denied(why) => {
                assert!(
                    why.starts_with("sqs:SendMessage on queue https://q/intake"),
                    "{why}"
                );
                assert!(why.contains("policy queues"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_queue_and_a_refused_connection_are_told_apart_from_the_rest() {
        use aws_sdk_sqs::error::ErrorMetadata;
        use aws_sdk_sqs::operation::get_queue_url::GetQueueUrlError;
        use aws_smithy_runtime_api::client::result::ConnectorError;
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;

        let service = |code: &str| {
            let meta = ErrorMetadata::builder().code(code).message("m").build();
            let raw = HttpResponse::new(StatusCode::try_from(400).unwrap(), SdkBody::empty());
            queue_error(
                "GetQueueUrl",
                "intake",
                SdkError::service_error(GetQueueUrlError::generic(meta), raw),
            )
        };
        assert!(matches!(
            service("QueueDoesNotExist"),
            QueueError::NotFound(q) if q == "queue intake"
        ));
        assert!(matches!(
            service("AWS.SimpleQueueService.NonExistentQueue"),
            QueueError::NotFound(_)
        ));
        assert!(matches!(
            service("ThrottlingException"),
            QueueError::Throttled(_)
        ));
        assert!(matches!(service("AccessDenied"), QueueError::Denied(_)));
        assert!(matches!(
            service("InvalidParameterValue"),
            QueueError::Other(_)
        ));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let err: SdkError<GetQueueUrlError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::io(Box::new(refused)));
        assert_eq!(
            queue_error("GetQueueUrl", "intake", err),
            QueueError::Unreachable("connection refused".into())
        );
    }

    #[test]
    fn throttle_codes() {
        assert!(is_throttle_code("RequestThrottled"));
        assert!(is_throttle_code("ThrottlingException"));
        assert!(!is_throttle_code("AWS.SimpleQueueService.NonExistentQueue"));
    }
}
