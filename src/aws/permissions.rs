//! Permission errors that say what to grant. A denied call names the operation, the
//! resource, and the role and policy of `infra/mayfly.yaml` that must allow it; it is
//! never classified as transient (trying again changes nothing).
//!
//! What counts as denied: the services' denial codes, and an HTTP 403 whose body carries no
//! code the SDK can read. The emulator (moto) answers DynamoDB and SQS denials that way, with
//! an XML body where the SDK expects JSON.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// The template's role for every call the scheduler (and the CLI) makes.
pub const SCHEDULER_ROLE: &str = "SchedulerRole";

/// What fixes spot's missing service-linked role
/// (`AuthFailure.ServiceLinkedRoleCreationNotPermitted`).
pub const SPOT_ROLE_FIX: &str = "let the scheduler role create spot's service-linked role: \
     iam:CreateServiceLinkedRole with iam:AWSServiceName = spot.amazonaws.com (the \
     SpotServiceLinkedRole statement of SchedulerRole in infra/mayfly.yaml), or create the \
     role once: aws iam create-service-linked-role --aws-service-name spot.amazonaws.com";

/// Error codes with which EC2, DynamoDB and SQS refuse a caller that lacks a permission.
pub fn is_denied_code(code: &str) -> bool {
    matches!(
        code,
        "AccessDenied"
            | "AccessDeniedException"
            | "UnauthorizedOperation"
            | "AuthorizationError"
            | "AWS.SimpleQueueService.AccessDenied"
    )
}

/// The code of a denial: the service's code when it is one, `HTTP403` for a 403 without a
/// readable code; `None` when the failure is not a denial.
pub fn denial_code<E>(err: &SdkError<E, HttpResponse>) -> Option<String>
where
    E: ProvideErrorMetadata,
{
    match err.code() {
        Some(code) if is_denied_code(code) => Some(code.to_owned()),
        Some(_) => None,
        None => match err {
            SdkError::ServiceError(s) if s.raw().status().as_u16() == 403 => {
                Some("HTTP403".to_owned())
            }
            _ => None,
        },
    }
}

/// The policy of [`SCHEDULER_ROLE`] that grants `service:operation`.
fn policy(service: &str, operation: &str) -> &'static str {
    match (service, operation) {
        ("ec2", "RunInstances") => "ec2-launch-and-reap (and pass-instance-role for iam:PassRole)",
        ("ec2", _) => "ec2-launch-and-reap",
        ("dynamodb", _) => "ledger-and-config",
        ("sqs", _) => "queues",
        _ => "(none grants it)",
    }
}

/// The sentence an operator reads: `service:Operation` on `resource` was denied, with the
/// service's code and message, and the grant of `infra/mayfly.yaml` that allows it.
pub fn denied(service: &str, operation: &str, resource: &str, code: &str, message: &str) -> String {
    let said = if message.is_empty() {
        code.to_owned()
    } else {
        format!("{code}: {message}")
    };
    format!(
        "{service}:{operation} on {resource} was denied ({said}); the role that runs mayfly \
         needs it: {SCHEDULER_ROLE} in infra/mayfly.yaml grants it in its policy {} (other \
         credentials need the same grant)",
        policy(service, operation)
    )
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::operation::get_item::GetItemError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    use super::*;

    fn failure(status: u16, code: Option<&str>) -> SdkError<GetItemError, HttpResponse> {
        let mut meta = ErrorMetadata::builder().message("no");
        if let Some(c) = code {
            meta = meta.code(c);
        }
        let raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        SdkError::service_error(GetItemError::generic(meta.build()), raw)
    }

    #[test]
    fn denials_by_code_or_a_bare_403() {
        assert_eq!(
            denial_code(&failure(400, Some("AccessDeniedException"))).as_deref(),
            Some("AccessDeniedException")
        );
        assert_eq!(denial_code(&failure(403, None)).as_deref(), Some("HTTP403"));
        // A code decides over the status: an invalid key is not a missing grant.
        assert_eq!(
            denial_code(&failure(403, Some("UnrecognizedClientException"))),
            None
        );
        assert_eq!(denial_code(&failure(500, None)), None);
    }

    #[test]
    fn the_sentence_names_operation_resource_and_role() {
        let s = denied(
            "dynamodb",
            "PutItem",
            "table d-jobs",
            "AccessDeniedException",
            "no",
        );
        assert!(
            s.starts_with("dynamodb:PutItem on table d-jobs was denied"),
            "{s}"
        );
        assert!(s.contains("SchedulerRole in infra/mayfly.yaml"), "{s}");
        assert!(s.contains("ledger-and-config"), "{s}");
    }
}
