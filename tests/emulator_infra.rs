//! The infra template's optional permissions, deployed into the emulator: the job instance's
//! role reads exactly the inputs and secrets it is given, and nothing without them; the
//! scheduler role may have EC2 use exactly the root volume keys it is given, and none without.

mod support;

use serde_json::Value;

/// The instance role's inline policies: name → statements (`Null` for the policies declared
/// inside the role, whose document moto returns as a Python literal, not JSON).
fn instance_policies(name: &str) -> Vec<(String, Value)> {
    role_policies(&format!("{name}-instance"))
}

/// One role's inline policies, as [`instance_policies`].
fn role_policies(role: &str) -> Vec<(String, Value)> {
    let role = role.to_owned();
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

/// The scheduler role's `root-volume-keys` statements (none without the policy).
fn root_volume_key_statements(name: &str) -> Vec<Value> {
    role_policies(&format!("{name}-scheduler"))
        .into_iter()
        .find(|(policy, _)| policy == "root-volume-keys")
        .map(|(_, statements)| statements.as_array().expect("statements").clone())
        .unwrap_or_default()
}

#[test]
fn the_scheduler_role_may_have_ec2_use_exactly_the_root_volume_keys_it_is_given() {
    let bare = support::unique_name("infra-nokeys");
    support::deploy(&bare);
    assert!(
        root_volume_key_statements(&bare).is_empty(),
        "no KMS grant without a key"
    );

    let deployment_key =
        "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let payer_keys = [
        "arn:aws:kms:us-east-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab",
        "arn:aws:kms:us-east-1:123456789012:key/0000abcd-12ab-34cd-56ef-1234567890ab",
    ];
    // (name prefix, template parameters, the keys granted)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, Vec<&'a str>);
    let cases: [Case; 3] = [
        (
            "infra-key",
            vec![("RootVolumeKmsKeyArn", deployment_key.to_owned())],
            vec![deployment_key],
        ),
        (
            "infra-payerkeys",
            vec![("PayerKmsKeyArns", payer_keys.join(","))],
            payer_keys.to_vec(),
        ),
        (
            "infra-allkeys",
            vec![
                ("RootVolumeKmsKeyArn", deployment_key.to_owned()),
                ("PayerKmsKeyArns", payer_keys.join(",")),
            ],
            vec![deployment_key, payer_keys[0], payer_keys[1]],
        ),
    ];
    for (prefix, parameters, keys) in cases {
        let name = support::unique_name(prefix);
        let parameters: Vec<(&str, &str)> =
            parameters.iter().map(|(k, v)| (*k, v.as_str())).collect();
        support::deploy_with(&name, &parameters);
        let statements = root_volume_key_statements(&name);
        assert_eq!(statements.len(), 2, "{prefix}: {statements:?}");
        for s in &statements {
            assert_eq!(s["Effect"], "Allow");
            let resources: Vec<&str> = match &s["Resource"] {
                Value::String(r) => vec![r.as_str()],
                Value::Array(rs) => rs.iter().map(|r| r.as_str().expect("an ARN")).collect(),
                other => panic!("resource {other}"),
            };
            assert_eq!(resources, keys, "{prefix}: {s}");
            assert_eq!(
                s["Condition"]["StringEquals"]["kms:ViaService"], "ec2.us-east-1.amazonaws.com",
                "{prefix}: only through EC2: {s}"
            );
        }
        let grant = statements
            .iter()
            .find(|s| s["Action"] == "kms:CreateGrant")
            .unwrap_or_else(|| panic!("{prefix}: no CreateGrant: {statements:?}"));
        assert_eq!(
            grant["Condition"]["Bool"]["kms:GrantIsForAWSResource"], "true",
            "{prefix}: grants only for AWS resources"
        );
        let uses = statements
            .iter()
            .find(|s| s["Action"] != "kms:CreateGrant")
            .expect("the use statement");
        let mut actions: Vec<&str> = uses["Action"]
            .as_array()
            .expect("actions")
            .iter()
            .map(|a| a.as_str().expect("an action"))
            .collect();
        actions.sort_unstable();
        assert_eq!(
            actions,
            [
                "kms:Decrypt",
                "kms:DescribeKey",
                "kms:GenerateDataKeyWithoutPlaintext",
                "kms:ReEncrypt*"
            ]
        );
    }
}
