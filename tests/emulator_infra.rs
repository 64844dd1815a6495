//! The infra templates' optional permissions, deployed into the emulator: the deployment's own
//! instance role reads nothing, and a payer's role (`infra/payer.yaml`) exactly that payer's
//! inputs and secrets, under the deployment's IAM path; the operator's data key encrypts the
//! queues, with its grants; the scheduler role may have EC2 use exactly the root volume keys
//! it is given, and none without. (moto evaluates no condition: the conditions themselves are
//! checked by the offline policy evaluator, `tests/iam_policies.rs`.)

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
fn the_deployment_role_reads_nothing_and_a_payer_role_exactly_its_own() {
    let name = support::unique_name("infra-payer");
    support::deploy(&name);
    let policies = instance_policies(&name);
    let names: Vec<&str> = policies.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["report-events"],
        "the deployment's own instance role reads no data"
    );

    let parameter = "arn:aws:ssm:us-east-1:123456789012:parameter/mayfly/harbor-health/*";
    let secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:mayfly/claims-AbCdEf";
    let outputs = support::deploy_payer(
        &name,
        "harbor-health",
        &[
            (
                "InputArns",
                "arn:aws:s3:::example-payer-a-drop,arn:aws:s3:::example-shared-drop/harbor-health",
            ),
            ("SecretParameterArns", parameter),
            ("SecretArns", secret),
        ],
    );
    // Role and instance profile under the deployment's path: the one the scheduler may pass.
    let path = format!("/mayfly/{name}/");
    let role_arn = &outputs["RoleArn"];
    assert!(
        role_arn.starts_with(&format!("arn:aws:iam::123456789012:role{path}")),
        "{role_arn}"
    );
    let profile: Value = serde_json::from_str(&support::aws(&[
        "iam",
        "get-instance-profile",
        "--instance-profile-name",
        &outputs["InstanceProfileName"],
        "--output",
        "json",
    ]))
    .expect("JSON");
    assert_eq!(profile["InstanceProfile"]["Path"], path.as_str());
    assert_eq!(
        profile["InstanceProfile"]["Roles"][0]["Arn"],
        role_arn.as_str()
    );

    let role = role_arn.rsplit('/').next().expect("a role name");
    let policies = role_policies(role);
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
                        "arn:aws:s3:::example-shared-drop/harbor-health/*"
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

#[test]
fn the_operator_key_encrypts_the_queues_and_the_roles_get_its_grants() {
    let name = support::unique_name("infra-datakey");
    let key = "arn:aws:kms:us-east-1:123456789012:key/2222abcd-12ab-34cd-56ef-1234567890ab";
    support::deploy_with(
        &name,
        &[
            ("DataKmsKeyArn", key),
            ("VpcId", "vpc-0123456789abcdef0"),
            ("AllowedImageOwners", "amazon,111122223333"),
        ],
    );
    for queue in ["intake", "intake-dlq", "events", "events-dlq"] {
        let url = format!("https://sqs.us-east-1.amazonaws.com/123456789012/{name}-{queue}");
        let attributes: Value = serde_json::from_str(&support::aws(&[
            "sqs",
            "get-queue-attributes",
            "--endpoint-url",
            &support::endpoint(),
            "--queue-url",
            &url,
            "--attribute-names",
            "All",
            "--output",
            "json",
        ]))
        .expect("JSON");
        assert_eq!(
            attributes["Attributes"]["KmsMasterKeyId"], key,
            "{queue}: {attributes}"
        );
    }
    let grant_of = |role: &str, policy: &str| -> Value {
        let (_, statements) = role_policies(role)
            .into_iter()
            .find(|(p, _)| p == policy)
            .unwrap_or_else(|| panic!("{role} has no {policy} policy"));
        assert_eq!(statements.as_array().map(Vec::len), Some(1), "{statements}");
        statements[0].clone()
    };
    let scheduler = grant_of(&format!("{name}-scheduler"), "data-key");
    assert_eq!(scheduler["Resource"], key);
    assert_eq!(
        scheduler["Condition"]["StringEquals"]["kms:ViaService"],
        serde_json::json!([
            "dynamodb.us-east-1.amazonaws.com",
            "sqs.us-east-1.amazonaws.com"
        ])
    );
    let instance = grant_of(&format!("{name}-instance"), "events-queue-key");
    assert_eq!(
        instance["Action"],
        serde_json::json!(["kms:GenerateDataKey", "kms:Decrypt"])
    );
    assert_eq!(
        instance["Condition"]["StringEquals"]["kms:ViaService"],
        "sqs.us-east-1.amazonaws.com"
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

#[tokio::test]
async fn payers_apply_refuses_an_instance_profile_outside_the_path_or_another_payers() {
    let name = support::unique_name("infra-owners");
    support::deploy(&name);
    let outputs = support::deploy_payer(&name, "cedar-plan", &[]);
    let own = outputs["InstanceProfileName"].clone();
    // An instance profile made by hand, at the root path: the scheduler may not pass its role.
    let outside = format!("{name}-by-hand");
    support::aws(&[
        "iam",
        "create-instance-profile",
        "--instance-profile-name",
        &outside,
    ]);
    let sdk = support::sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let (subnets, sgs) = support::emulator_network(&ec2).await;
    let dir = std::env::temp_dir().join(format!("mayfly-owners-{name}"));
    support::write_profiles_for(&name, &subnets, &sgs, &dir);
    let point = |payer: &str, profile: &str| {
        let file = dir.join(format!("{payer}.toml"));
        let text = std::fs::read_to_string(&file).unwrap();
        let mut doc: toml::Table = toml::from_str(&text).unwrap();
        doc["launch"]
            .as_table_mut()
            .unwrap()
            .insert("instance_profile".into(), profile.into());
        std::fs::write(&file, toml::to_string(&doc).unwrap()).unwrap();
    };
    point("cedar-plan", &own);
    point("harbor-health", &own);
    point("prairie-mutual", &outside);
    let dir_s = dir.display().to_string();

    let diff = support::mayfly(&name, &["payers", "diff", &dir_s]);
    let text = String::from_utf8_lossy(&diff.stdout);
    assert!(
        text.contains(&format!(
            "refused: launch.instance_profile: instance profile {own} is already payer cedar-plan's"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "refused: launch.instance_profile: instance profile {outside} is at IAM path /, outside /mayfly/{name}/"
        )),
        "{text}"
    );
    assert_eq!(
        text.matches("refused:").count(),
        2,
        "cedar-plan's own is fine: {text}"
    );

    let apply = support::mayfly(&name, &["payers", "apply", &dir_s]);
    let stderr = String::from_utf8_lossy(&apply.stderr);
    assert_eq!(apply.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nothing applied"), "{stderr}");
    assert!(
        stderr.contains("harbor-health") && stderr.contains("prairie-mutual"),
        "{stderr}"
    );
    assert!(stderr.contains("launch.instance_profile"), "{stderr}");
    let listed = support::mayfly(&name, &["--output", "json", "payers", "list"]);
    let rows: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(rows, serde_json::json!([]), "nothing written");

    // Each payer on its own role (or on the deployment's, which reads nothing): applied.
    point("harbor-health", &format!("{name}-instance"));
    point("prairie-mutual", &format!("{name}-instance"));
    let apply = support::mayfly(&name, &["payers", "apply", &dir_s]);
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
}
