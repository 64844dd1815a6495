//! Which AWS operation a request is, from the wire alone: the JSON protocols name it in the
//! `X-Amz-Target` header (`DynamoDB_20120810.PutItem`, `AmazonSQS.ReceiveMessage`), the
//! query protocols (EC2, SQS's older wire format) in an `Action=` parameter of the query
//! string or the form-encoded body. The service comes from the SigV4 credential scope.

/// How the service encodes its errors, which decides how an injected fault is worded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// EC2's query dialect: `<Response><Errors><Error>…` XML.
    Ec2Query,
    /// The AWS query protocol (SQS before JSON, IAM, STS): `<ErrorResponse>` XML.
    AwsQuery,
    /// AWS JSON 1.0/1.1 (DynamoDB, SQS): `{"__type": …}` bodies.
    AwsJson,
    /// Not an AWS API call this proxy recognises (the emulator's own API, say). Never
    /// faulted, only forwarded.
    Unknown,
}

/// One identified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Lower-case service name as signed (`ec2`, `sqs`, `dynamodb`), or empty if unknown.
    pub service: String,
    /// The operation (`RunInstances`, `PutItem`), or `Unknown`.
    pub name: String,
    pub protocol: Protocol,
}

impl Operation {
    fn unknown() -> Self {
        Self {
            service: String::new(),
            name: "Unknown".into(),
            protocol: Protocol::Unknown,
        }
    }
}

/// The API version SQS's query protocol sends as `Version=`.
const SQS_QUERY_VERSION: &str = "2012-11-05";

/// Identifies the operation of a request from its target (path and query), its headers
/// (names in any case) and its body.
pub fn identify(target: &str, headers: &[(String, String)], body: &[u8]) -> Operation {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let signed_service = header("authorization").and_then(credential_scope_service);

    if let Some(amz_target) = header("x-amz-target") {
        let (prefix, name) = amz_target.rsplit_once('.').unwrap_or(("", amz_target));
        if name.is_empty() {
            return Operation::unknown();
        }
        let service = if prefix.starts_with("DynamoDB") {
            "dynamodb".to_owned()
        } else if prefix == "AmazonSQS" {
            "sqs".to_owned()
        } else {
            signed_service.unwrap_or_else(|| prefix.to_ascii_lowercase())
        };
        return Operation {
            service,
            name: name.to_owned(),
            protocol: Protocol::AwsJson,
        };
    }

    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path.starts_with("/moto-api") {
        return Operation::unknown();
    }
    let form = is_form(header("content-type"));
    let param = |key: &str| {
        form_value(query, key).or_else(|| {
            form.then(|| std::str::from_utf8(body).ok())
                .flatten()
                .and_then(|b| form_value(b, key))
        })
    };
    let Some(action) = param("Action").filter(|a| !a.is_empty()) else {
        return Operation::unknown();
    };
    let service = signed_service.unwrap_or_else(|| {
        if param("Version").as_deref() == Some(SQS_QUERY_VERSION) {
            "sqs".to_owned()
        } else {
            "ec2".to_owned()
        }
    });
    let protocol = if service == "ec2" {
        Protocol::Ec2Query
    } else {
        Protocol::AwsQuery
    };
    Operation {
        service,
        name: action,
        protocol,
    }
}

fn is_form(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    })
}

/// The service of a SigV4 `Authorization` header:
/// `AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/ec2/aws4_request, …` gives `ec2`.
fn credential_scope_service(authorization: &str) -> Option<String> {
    let credential = authorization.split("Credential=").nth(1)?;
    let scope = credential.split([',', ' ']).next()?;
    let service = scope.split('/').nth(3)?;
    (!service.is_empty()).then(|| service.to_ascii_lowercase())
}

/// The first value of `key` in a form-encoded string (`a=1&b=2`), percent-decoded.
fn form_value(form: &str, key: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    const FORM: (&str, &str) = (
        "Content-Type",
        "application/x-www-form-urlencoded; charset=utf-8",
    );

    fn auth(service: &str) -> (String, String) {
        (
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=abc"
            ),
        )
    }

    #[test]
    fn ec2_query_from_the_form_body() {
        let mut headers = h(&[FORM]);
        headers.push(auth("ec2"));
        let op = identify(
            "/",
            &headers,
            b"Action=RunInstances&Version=2016-11-15&MinCount=1",
        );
        assert_eq!(
            op,
            Operation {
                service: "ec2".into(),
                name: "RunInstances".into(),
                protocol: Protocol::Ec2Query,
            }
        );
        // Unsigned: EC2 is the default query service.
        let op = identify(
            "/",
            &h(&[FORM]),
            b"Version=2016-11-15&Action=TerminateInstances",
        );
        assert_eq!(op.name, "TerminateInstances");
        assert_eq!(op.protocol, Protocol::Ec2Query);
    }

    #[test]
    fn query_string_action_and_sqs_query() {
        let op = identify("/?Action=DescribeInstances&Version=2016-11-15", &[], b"");
        assert_eq!(op.name, "DescribeInstances");
        assert_eq!(op.service, "ec2");
        let op = identify(
            "/123456789012/q",
            &h(&[FORM]),
            b"Action=SendMessage&Version=2012-11-05&MessageBody=a%26b",
        );
        assert_eq!(
            (op.service.as_str(), op.name.as_str(), op.protocol),
            ("sqs", "SendMessage", Protocol::AwsQuery)
        );
        let mut signed = h(&[FORM]);
        signed.push(auth("sqs"));
        let op = identify("/", &signed, b"Action=ReceiveMessage");
        assert_eq!(op.protocol, Protocol::AwsQuery);
    }

    #[test]
    fn json_targets() {
        let op = identify(
            "/",
            &h(&[("X-Amz-Target", "DynamoDB_20120810.PutItem")]),
            b"{}",
        );
        assert_eq!(
            (op.service.as_str(), op.name.as_str(), op.protocol),
            ("dynamodb", "PutItem", Protocol::AwsJson)
        );
        let op = identify(
            "/",
            &h(&[("x-amz-target", "AmazonSQS.ReceiveMessage")]),
            b"{\"QueueUrl\":\"x\"}",
        );
        assert_eq!(
            (op.service.as_str(), op.name.as_str(), op.protocol),
            ("sqs", "ReceiveMessage", Protocol::AwsJson)
        );
        let op = identify(
            "/",
            &h(&[("x-amz-target", "Logs_20140328.PutLogEvents")]),
            b"",
        );
        assert_eq!(
            (op.service.as_str(), op.name.as_str()),
            ("logs_20140328", "PutLogEvents")
        );
    }

    #[test]
    fn anything_else_is_unknown() {
        assert_eq!(identify("/moto-api/reset", &[], b""), Operation::unknown());
        assert_eq!(identify("/", &[], b""), Operation::unknown());
        // A body that is not a form is not searched.
        assert_eq!(
            identify(
                "/",
                &h(&[("content-type", "application/json")]),
                b"Action=RunInstances"
            ),
            Operation::unknown()
        );
        assert_eq!(
            identify("/", &h(&[("x-amz-target", "Foo.")]), b""),
            Operation::unknown()
        );
    }

    #[test]
    fn form_values_are_percent_decoded() {
        assert_eq!(form_value("a=1&b=x%2By+z", "b").as_deref(), Some("x+y z"));
        assert_eq!(form_value("a=1&b=2", "c"), None);
        assert_eq!(form_value("flag&a=%zz%", "a").as_deref(), Some("%zz%"));
        assert_eq!(form_value("flag&a=1", "flag").as_deref(), Some(""));
    }
}
