//! The classification of EC2's failures into [`ComputeError`]: what the scheduler does next
//! is decided by the AWS error code (never the message text) or, without one, by the SDK
//! error variant.

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use crate::ports::ComputeError;

/// Classifies an SDK failure: service errors by their AWS error code, everything else
/// (timeouts, connection failures, unreadable responses) as transient.
pub fn sdk_error<E>(err: SdkError<E, HttpResponse>) -> ComputeError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
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

/// Classifies an EC2 error code (never its message text) into what the scheduler does next.
pub fn classify(code: &str, message: &str) -> ComputeError {
    let (owned_code, owned_message) = (code.to_owned(), message.to_owned());
    match code {
        "InsufficientInstanceCapacity"
        | "InsufficientCapacity"
        | "InsufficientHostCapacity"
        | "InsufficientReservedInstanceCapacity"
        | "SpotMaxPriceTooLow"
        | "MaxSpotInstanceCountExceeded"
        | "InsufficientFreeAddressesInSubnet"
        | "Unsupported" => ComputeError::Capacity {
            code: owned_code,
            message: owned_message,
        },
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "RequestThrottled" => {
            ComputeError::Throttled { code: owned_code }
        }
        "VcpuLimitExceeded" | "InstanceLimitExceeded" | "MaxIOPSLimitExceeded" => {
            ComputeError::Quota {
                code: owned_code,
                message: owned_message,
            }
        }
        "IdempotentParameterMismatch" => ComputeError::IdempotentMismatch {
            message: owned_message,
        },
        "UnauthorizedOperation"
        | "MissingParameter"
        | "OptInRequired"
        | "AuthFailure"
        | "NoSuchEntity" => ComputeError::Configuration {
            code: owned_code,
            message: owned_message,
        },
        c if c.starts_with("Invalid") => ComputeError::Configuration {
            code: owned_code,
            message: owned_message,
        },
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
            ComputeError::Configuration { .. } => "configuration",
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
            ("MaxSpotInstanceCountExceeded", "capacity"),
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
            ("UnauthorizedOperation", "configuration"),
            ("MissingParameter", "configuration"),
            ("OptInRequired", "configuration"),
            ("AuthFailure", "configuration"),
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
}
