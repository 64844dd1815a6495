//! What an injected fault looks like on the wire, in each protocol's own error format (so
//! the SDK parses and classifies it as it would the real service's), and the seeded
//! randomness that decides which request gets one.

use super::detect::{Operation, Protocol};
use super::wire::Reply;

/// A fault the proxy answers with itself, without forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The operation's token bucket is empty.
    Throttle,
    /// A 500 from the service.
    Internal,
}

struct Wording {
    status: u16,
    code: &'static str,
    message: &'static str,
}

fn wording(op: &Operation, kind: ErrorKind) -> Wording {
    let w = |status, code, message| Wording {
        status,
        code,
        message,
    };
    match (op.protocol, kind) {
        (Protocol::Ec2Query, ErrorKind::Throttle) => {
            w(503, "RequestLimitExceeded", "Request limit exceeded.")
        }
        (Protocol::Ec2Query, ErrorKind::Internal) => w(
            500,
            "InternalError",
            "An internal error has occurred. Retry your request.",
        ),
        (Protocol::AwsQuery, ErrorKind::Throttle) if op.service == "sqs" => {
            w(400, "RequestThrottled", "Rate exceeded")
        }
        (Protocol::AwsQuery, ErrorKind::Throttle) => w(400, "Throttling", "Rate exceeded"),
        (Protocol::AwsQuery, ErrorKind::Internal) => {
            w(500, "InternalFailure", "The request processing has failed.")
        }
        (_, ErrorKind::Throttle) => w(400, "ThrottlingException", "Rate exceeded"),
        (_, ErrorKind::Internal) if op.service == "sqs" => w(
            500,
            "InternalError",
            "An internal error occurred. Retry your request.",
        ),
        (_, ErrorKind::Internal) => w(500, "InternalServerError", "Internal server error"),
    }
}

/// The JSON protocol's namespace for a service's error shapes.
fn json_namespace(service: &str) -> Option<&'static str> {
    match service {
        "dynamodb" => Some("com.amazonaws.dynamodb.v20120810"),
        "sqs" => Some("com.amazonaws.sqs"),
        _ => None,
    }
}

/// The reply for an injected error, worded as `op`'s service words it.
pub fn error_reply(op: &Operation, kind: ErrorKind, request_id: &str) -> Reply {
    let Wording {
        status,
        code,
        message,
    } = wording(op, kind);
    match op.protocol {
        Protocol::Ec2Query | Protocol::Unknown => Reply::new(
            status,
            "text/xml;charset=UTF-8",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
                 <Code>{code}</Code><Message>{message}</Message></Error></Errors>\
                 <RequestID>{request_id}</RequestID></Response>"
            ),
        )
        .header("x-amzn-RequestId", request_id),
        Protocol::AwsQuery => {
            let fault = if kind == ErrorKind::Throttle {
                "Sender"
            } else {
                "Receiver"
            };
            Reply::new(
                status,
                "text/xml",
                format!(
                    "<?xml version=\"1.0\"?><ErrorResponse><Error><Type>{fault}</Type>\
                     <Code>{code}</Code><Message>{message}</Message><Detail/></Error>\
                     <RequestId>{request_id}</RequestId></ErrorResponse>"
                ),
            )
            .header("x-amzn-RequestId", request_id)
        }
        Protocol::AwsJson => {
            let type_name = match json_namespace(&op.service) {
                Some(ns) => format!("{ns}#{code}"),
                None => code.to_owned(),
            };
            let body = serde_json::json!({ "__type": type_name, "message": message });
            let mut reply = Reply::new(status, "application/x-amz-json-1.0", body.to_string())
                .header("x-amzn-RequestId", request_id);
            if op.service == "sqs" {
                // SQS is query-compatible: the SDK takes the code from this header first.
                let fault = if kind == ErrorKind::Throttle {
                    "Sender"
                } else {
                    "Receiver"
                };
                reply = reply.header("x-amzn-query-error", &format!("{code};{fault}"));
            }
            reply
        }
    }
}

/// splitmix64: a small, fast, well-mixed 64-bit generator step.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

/// A uniform draw in [0, 1) for the `index`-th request of `operation` under `seed`. Keyed by
/// operation and index rather than drawn from one stream, so the same seed faults the same
/// calls of each operation however calls of different operations interleave.
pub fn roll(seed: u64, operation: &str, index: u64) -> f64 {
    let x = splitmix64(seed ^ splitmix64(fnv1a(operation) ^ splitmix64(index)));
    // 53 random bits as a fraction: exact in an f64.
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(service: &str, name: &str, protocol: Protocol) -> Operation {
        Operation {
            service: service.into(),
            name: name.into(),
            protocol,
        }
    }

    fn body(r: &Reply) -> String {
        String::from_utf8(r.body.clone()).unwrap()
    }

    #[test]
    fn ec2_throttle_is_request_limit_exceeded() {
        let r = error_reply(
            &op("ec2", "RunInstances", Protocol::Ec2Query),
            ErrorKind::Throttle,
            "rid-1",
        );
        assert_eq!(r.status, 503);
        assert_eq!(
            body(&r),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
             <Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>\
             </Error></Errors><RequestID>rid-1</RequestID></Response>"
        );
        let r = error_reply(
            &op("ec2", "RunInstances", Protocol::Ec2Query),
            ErrorKind::Internal,
            "r",
        );
        assert_eq!(r.status, 500);
        assert!(body(&r).contains("<Code>InternalError</Code>"));
    }

    #[test]
    fn json_errors_carry_the_namespaced_type() {
        let r = error_reply(
            &op("dynamodb", "PutItem", Protocol::AwsJson),
            ErrorKind::Throttle,
            "r",
        );
        assert_eq!(r.status, 400);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v["__type"],
            "com.amazonaws.dynamodb.v20120810#ThrottlingException"
        );
        let r = error_reply(
            &op("sqs", "ReceiveMessage", Protocol::AwsJson),
            ErrorKind::Throttle,
            "r",
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["__type"], "com.amazonaws.sqs#ThrottlingException");
        assert!(r
            .headers
            .iter()
            .any(|(n, v)| n == "x-amzn-query-error" && v == b"ThrottlingException;Sender"));
        let r = error_reply(
            &op("dynamodb", "PutItem", Protocol::AwsJson),
            ErrorKind::Internal,
            "r",
        );
        assert_eq!(r.status, 500);
        assert!(body(&r).contains("#InternalServerError"));
    }

    #[test]
    fn query_errors_use_error_response() {
        let r = error_reply(
            &op("sqs", "SendMessage", Protocol::AwsQuery),
            ErrorKind::Throttle,
            "r",
        );
        assert_eq!(r.status, 400);
        assert!(body(&r)
            .contains("<ErrorResponse><Error><Type>Sender</Type><Code>RequestThrottled</Code>"));
    }

    #[test]
    fn rolls_are_reproducible_uniform_and_keyed() {
        assert_eq!(roll(7, "RunInstances", 3), roll(7, "RunInstances", 3));
        assert_ne!(roll(7, "RunInstances", 3), roll(8, "RunInstances", 3));
        assert_ne!(roll(7, "RunInstances", 3), roll(7, "PutItem", 3));
        let n = 100_000;
        let draws: Vec<f64> = (0..n).map(|i| roll(42, "PutItem", i)).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let below = draws.iter().filter(|d| **d < 0.02).count();
        // 2 % of 100,000 is 2,000; the standard deviation is about 44.
        assert!((1_800..2_200).contains(&below), "{below}");
        let mean = draws.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
    }
}
