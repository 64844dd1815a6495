//! The infra template's optional instance permissions, deployed into the emulator: the job
//! instance's role reads exactly the inputs and secrets it is given, and nothing without them.

mod support;

use serde_json::Value;

/// The instance role's inline policies: name → statements (`Null` for the policies declared
/// inside the role, whose document moto returns as a Python literal, not JSON).
fn instance_policies(name: &str) -> Vec<(String, Value)> {
    let role = format!("{name}-instance");
    let listed: Value = serde_json::from_str(&support::aws(&[
        "iam",
        "list-role-policies",
        "--role-name",
        &role,
        "--output",
        "json",
    ]))
    .expect("JSON");
    let mut out = Vec::new();
    for policy in listed["PolicyNames"].as_array().expect("names") {
        let policy = policy.as_str().expect("a name");
        let doc: Value = serde_json::from_str(&support::aws(&[
            "iam",
            "get-role-policy",
            "--role-name",
            &role,
            "--policy-name",
            policy,
            "--output",
            "json",
        ]))
        .expect("JSON");
        out.push((
            policy.to_owned(),
            doc["PolicyDocument"]["Statement"].clone(),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// One statement's action and resources (a single resource read as a list of one).
fn grant(statements: &Value) -> (String, Vec<String>) {
    let statements = statements
        .as_array()
        .unwrap_or_else(|| panic!("statements: {statements}"));
    assert_eq!(statements.len(), 1, "{statements:?}");
    let s = &statements[0];
    assert_eq!(s["Effect"], "Allow");
    let resources = match &s["Resource"] {
        Value::String(r) => vec![r.clone()],
        Value::Array(rs) => rs
            .iter()
            .map(|r| r.as_str().expect("an ARN").to_owned())
            .collect(),
        other => panic!("resource {other}"),
    };
    (
        s["Action"].as_str().expect("one action").to_owned(),
        resources,
    )
}

#[test]
fn the_instance_role_reads_exactly_the_inputs_and_secrets_it_is_given() {
    let bare = support::unique_name("infra-bare");
    support::deploy(&bare);
    let policies = instance_policies(&bare);
    let names: Vec<&str> = policies.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["report-events"],
        "no input or secret access by default"
    );

    let name = support::unique_name("infra-grants");
    let parameter = "arn:aws:ssm:us-east-1:123456789012:parameter/mayfly/harbor-health/*";
    let secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:mayfly/claims-AbCdEf";
    support::deploy_with(
        &name,
        &[
            (
                "InputBucketArns",
                "arn:aws:s3:::example-payer-a-drop,arn:aws:s3:::example-shared-drop/payer-b",
            ),
            ("SecretParameterArns", parameter),
            ("SecretArns", secret),
        ],
    );
    let policies = instance_policies(&name);
    let names: Vec<&str> = policies.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "read-job-input",
            "read-secret-parameters",
            "read-secrets",
            "report-events"
        ]
    );
    let grants: Vec<(&str, (String, Vec<String>))> = policies[..3]
        .iter()
        .map(|(n, s)| (n.as_str(), grant(s)))
        .collect();
    let owned = |action: &str, resources: &[&str]| {
        (
            action.to_owned(),
            resources
                .iter()
                .map(|r| (*r).to_owned())
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        grants,
        [
            (
                "read-job-input",
                owned(
                    "s3:GetObject",
                    &[
                        "arn:aws:s3:::example-payer-a-drop/*",
                        "arn:aws:s3:::example-shared-drop/payer-b/*"
                    ]
                )
            ),
            (
                "read-secret-parameters",
                owned("ssm:GetParameter", &[parameter])
            ),
            (
                "read-secrets",
                owned("secretsmanager:GetSecretValue", &[secret])
            ),
        ]
    );
}
