//! The classification of EC2's failures into [`ComputeError`]: what the scheduler does next
//! is decided by the AWS error code (never the message text, with one documented exception)
//! or, without one, by the SDK error variant and the HTTP status.

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use crate::aws::permissions;
use crate::ports::ComputeError;

/// Classifies an SDK failure of EC2 `operation` on `resource` (words for the operator: "image
/// ami-…, subnet …"): as [`sdk_error`], and a denial names the operation, the resource and
/// the grant of `infra/mayfly.yaml` that allows it.
pub fn sdk_error_on<E>(
    operation: &'static str,
    resource: impl FnOnce() -> String,
) -> impl FnOnce(SdkError<E, HttpResponse>) -> ComputeError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    move |err| match sdk_error(err) {
        ComputeError::Denied { code, message } => ComputeError::Denied {
            message: permissions::denied("ec2", operation, &resource(), &code, &message),
            code,
        },
        other => other,
    }
}

/// Classifies an SDK failure: service errors by their AWS error code, everything else
/// (timeouts, connection failures, unreadable responses) as transient, except an HTTP 403
/// without a readable code, which is a denial.
pub fn sdk_error<E>(err: SdkError<E, HttpResponse>) -> ComputeError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let Some(code) = permissions::denial_code(&err) {
        return ComputeError::Denied {
            code,
            message: err.message().unwrap_or_default().to_owned(),
        };
    }
    let transient = |code: &str, err: &SdkError<E, HttpResponse>| ComputeError::Transient {
        code: code.to_owned(),
        message: DisplayErrorContext(err).to_string(),
    };
    match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let message = e.message().unwrap_or_default();
            match e.code() {
                Some(code) => classify(code, message),
                // No code at all (an HTML 500 page, say): name the HTTP status instead.
                None => ComputeError::Transient {
                    code: format!("HTTP{}", service.raw().status().as_u16()),
                    message: message.to_owned(),
                },
            }
        }
        SdkError::TimeoutError(_) => transient("timeout", &err),
        SdkError::DispatchFailure(_) => transient("dispatch", &err),
        SdkError::ResponseError(_) => transient("response", &err),
        // Building or signing the request failed before it was sent (e.g. credentials that
        // could not be loaded this time): nothing was launched, and a later try may work.
        SdkError::ConstructionFailure(_) => transient("construction", &err),
        _ => transient("sdk", &err),
    }
}

/// Whether an `InvalidParameterValue` is about the instance profile. The code alone is
/// ambiguous (EC2 uses it for any bad parameter); EC2's documented message names the
/// parameter: "Value (…) for parameter iamInstanceProfile.name is invalid. Invalid IAM
/// Instance Profile name" (or `.arn`). This is the one place a message is read.
fn names_instance_profile(message: &str) -> bool {
    message.contains("iamInstanceProfile")
}

/// Classifies an EC2 error code (never its message text, but for the one ambiguous code
/// [`names_instance_profile`] reads) into what the scheduler does next.
pub fn classify(code: &str, message: &str) -> ComputeError {
    let (owned_code, owned_message) = (code.to_owned(), message.to_owned());
    let configuration = || ComputeError::Configuration {
        code: owned_code.clone(),
        message: owned_message.clone(),
    };
    match code {
        "InsufficientInstanceCapacity"
        | "InsufficientCapacity"
        | "InsufficientHostCapacity"
        | "InsufficientReservedInstanceCapacity"
        | "SpotMaxPriceTooLow"
        | "InsufficientFreeAddressesInSubnet"
        | "Unsupported" => ComputeError::Capacity {
            code: owned_code,
            message: owned_message,
        },
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "RequestThrottled" => {
            ComputeError::Throttled { code: owned_code }
        }
        // `MaxSpotInstanceCountExceeded` is the spot vCPU quota's answer.
        "VcpuLimitExceeded"
        | "InstanceLimitExceeded"
        | "MaxIOPSLimitExceeded"
        | "MaxSpotInstanceCountExceeded" => ComputeError::Quota {
            code: owned_code,
            message: owned_message,
        },
        "IdempotentParameterMismatch" => ComputeError::IdempotentMismatch {
            message: owned_message,
        },
        // An account's first spot launch creates the spot service-linked role; without
        // iam:CreateServiceLinkedRole it fails with this, on every spot rung alike.
        "AuthFailure.ServiceLinkedRoleCreationNotPermitted" => ComputeError::SpotUnavailable {
            code: owned_code,
            message: owned_message,
        },
        // The scheduler's own credentials: expired, invalid, or signed with a wrong clock.
        "AuthFailure"
        | "ExpiredToken"
        | "RequestExpired"
        | "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "SignatureDoesNotMatch" => ComputeError::Credentials {
            code: owned_code,
            message: owned_message,
        },
        c if permissions::is_denied_code(c) => ComputeError::Denied {
            code: owned_code,
            message: owned_message,
        },
        "InvalidParameterValue" if names_instance_profile(message) => {
            ComputeError::ProfileNotReady {
                code: owned_code,
                message: owned_message,
            }
        }
        "MissingParameter" | "OptInRequired" | "NoSuchEntity" => configuration(),
        c if c.starts_with("Invalid") || c.starts_with("AuthFailure.") => configuration(),
        _ => ComputeError::Transient {
            code: owned_code,
            message: owned_message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(code: &str) -> &'static str {
        match classify(code, "m") {
            ComputeError::Capacity { .. } => "capacity",
            ComputeError::Throttled { .. } => "throttled",
            ComputeError::Quota { .. } => "quota",
            ComputeError::SpotUnavailable { .. } => "spot",
            ComputeError::ProfileNotReady { .. } => "profile",
            ComputeError::Configuration { .. } => "configuration",
            ComputeError::Denied { .. } => "denied",
            ComputeError::Credentials { .. } => "credentials",
            ComputeError::IdempotentMismatch { .. } => "mismatch",
            ComputeError::Transient { .. } => "transient",
        }
    }

    #[test]
    fn classifies_by_code() {
        let cases = [
            ("InsufficientInstanceCapacity", "capacity"),
            ("InsufficientCapacity", "capacity"),
            ("InsufficientHostCapacity", "capacity"),
            ("InsufficientReservedInstanceCapacity", "capacity"),
            ("SpotMaxPriceTooLow", "capacity"),
            ("MaxSpotInstanceCountExceeded", "quota"),
            ("InsufficientFreeAddressesInSubnet", "capacity"),
            ("Unsupported", "capacity"),
            ("RequestLimitExceeded", "throttled"),
            ("Throttling", "throttled"),
            ("ThrottlingException", "throttled"),
            ("RequestThrottled", "throttled"),
            ("VcpuLimitExceeded", "quota"),
            ("InstanceLimitExceeded", "quota"),
            ("MaxIOPSLimitExceeded", "quota"),
            ("IdempotentParameterMismatch", "mismatch"),
            ("InvalidAMIID.NotFound", "configuration"),
            ("InvalidSubnetID.NotFound", "configuration"),
            ("InvalidParameterValue", "configuration"),
            ("InvalidGroup.NotFound", "configuration"),
            ("UnauthorizedOperation", "denied"),
            ("AccessDenied", "denied"),
            ("MissingParameter", "configuration"),
            ("OptInRequired", "configuration"),
            ("AuthFailure", "credentials"),
            ("RequestExpired", "credentials"),
            ("AuthFailure.ServiceLinkedRoleCreationNotPermitted", "spot"),
            ("AuthFailure.SomethingElse", "configuration"),
            ("NoSuchEntity", "configuration"),
            ("InternalError", "transient"),
            ("ServiceUnavailable", "transient"),
            ("Unavailable", "transient"),
            ("SomethingNew", "transient"),
            ("", "transient"),
        ];
        for (code, want) in cases {
            assert_eq!(kind(code), want, "{code}");
        }
    }

    #[test]
    fn classification_keeps_code_and_message() {
        assert_eq!(
            classify(
                "InvalidSubnetID.NotFound",
                "The subnet ID 'subnet-x' does not exist"
            ),
            ComputeError::Configuration {
                code: "InvalidSubnetID.NotFound".into(),
                message: "The subnet ID 'subnet-x' does not exist".into(),
            }
        );
        assert_eq!(
            classify("RequestLimitExceeded", "Request limit exceeded."),
            ComputeError::Throttled {
                code: "RequestLimitExceeded".into()
            }
        );
        // The message never decides: a capacity-sounding message on an unknown code is transient.
        assert!(matches!(
            classify("InternalError", "InsufficientInstanceCapacity"),
            ComputeError::Transient { .. }
        ));
    }

    #[test]
    fn an_instance_profile_ec2_cannot_see_yet_is_told_apart() {
        let profile = "Value (mayfly-instance) for parameter iamInstanceProfile.name is \
                       invalid. Invalid IAM Instance Profile name";
        assert!(matches!(
            classify("InvalidParameterValue", profile),
            ComputeError::ProfileNotReady { .. }
        ));
        assert!(matches!(
            classify(
                "InvalidParameterValue",
                "Value (x) for parameter blockDeviceMapping is invalid."
            ),
            ComputeError::Configuration { .. }
        ));
    }

    #[test]
    fn a_denial_names_operation_resource_and_role() {
        use aws_sdk_ec2::operation::run_instances::RunInstancesError;
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;

        // moto's denial: HTTP 403 with a body the EC2 parser finds no code in.
        let raw = HttpResponse::new(StatusCode::try_from(403).unwrap(), SdkBody::empty());
        let err = SdkError::service_error(
            RunInstancesError::generic(ErrorMetadata::builder().build()),
            raw,
        );
        match sdk_error_on("RunInstances", || "image ami-1, subnet subnet-1".into())(err) {
            ComputeError::Denied { code, message } => {
                assert_eq!(code, "HTTP403");
                assert!(
                    message
                        .starts_with("ec2:RunInstances on image ami-1, subnet subnet-1 was denied"),
                    "{message}"
                );
                assert!(message.contains("SchedulerRole"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}
