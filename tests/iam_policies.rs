//! The templates' IAM policies, evaluated offline (`tests/iam/check.cjs`, with
//! `@cloud-copilot/iam-simulate`, a test tool `scripts/emulator.sh install` puts in
//! `.mayfly/iam-check`). moto evaluates no `Condition` and checks EC2 and DynamoDB requests
//! against `*` only (tests/emulator_isolation.rs says what it does prove); here the policies
//! are read from `infra/mayfly.yaml` and `infra/payer.yaml` as CloudFormation resolves them and
//! decided as IAM would, conditions included.

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// Where the evaluator's node modules are: `MAYFLY_IAM_CHECK_MODULES`, or what
/// `scripts/emulator.sh install` installs.
fn modules() -> PathBuf {
    let dir = std::env::var_os("MAYFLY_IAM_CHECK_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::repo().join(".mayfly/iam-check/node_modules"));
    assert!(
        dir.join("@cloud-copilot/iam-simulate").is_dir(),
        "{} holds no @cloud-copilot/iam-simulate: install the IAM policy evaluator with \
         `bash scripts/emulator.sh install` (it needs npm)",
        dir.display()
    );
    dir
}

/// Runs one mode of the evaluator and returns its checks (`check`, `ok`, `detail`).
fn checks(mode: &str) -> Vec<Value> {
    let out = Command::new("node")
        .arg(support::repo().join("tests/iam/check.cjs"))
        .arg(mode)
        .env("NODE_PATH", modules())
        .output()
        .expect("run node (the IAM policy tests need Node.js)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "check.cjs {mode} could not evaluate: {stderr}"
    );
    let results: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON check a line"))
        .collect();
    assert!(
        !results.is_empty(),
        "check.cjs {mode} checked nothing: {stderr}"
    );
    results
}

fn assert_all_hold(results: &[Value]) {
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r["ok"] != true)
        .map(|r| format!("{}: {}", r["check"], r["detail"]))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn the_walls_hold_and_each_falls_without_its_condition() {
    let results = checks("conditions");
    let names: Vec<&str> = results.iter().filter_map(|r| r["check"].as_str()).collect();
    // The walls the issue names, each with its check on a template without the guard.
    for wall in [
        "DeleteTags of an own instance without tag keys is denied",
        "DeleteTags of mayfly:protect is denied",
        "RunInstances with another owner's image is denied",
        "TerminateInstances of another deployment's instance is denied",
        "TerminateInstances of a mayfly:protect instance is denied",
        "PassRole of a role outside the deployment's path is denied",
        "payer A's role reading payer B's prefix is denied",
    ] {
        assert!(names.contains(&wall), "no check {wall:?}");
        let flipped = format!("{wall} (and allowed without its statement or condition)");
        assert!(names.contains(&flipped.as_str()), "no check {flipped:?}");
    }
    assert_all_hold(&results);
}

#[test]
fn every_operation_mayfly_makes_is_granted_to_its_role_and_needs_its_action() {
    let results = checks("operations");
    // Each operation twice: allowed as the template stands, denied with its action removed.
    assert_eq!(results.len() % 2, 0);
    assert!(
        results.iter().any(|r| r["check"]
            .as_str()
            .unwrap_or("")
            .starts_with("scheduler may EC2.RunInstances")),
        "{results:?}"
    );
    assert_all_hold(&results);
}

#[test]
fn the_operations_list_names_real_templates_roles_and_actions() {
    // A sanity check of tests/iam/operations.json itself: service prefixes match the
    // operations' services, so a typo cannot make an entry check nothing.
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(support::repo().join("tests/iam/operations.json")).unwrap(),
    )
    .unwrap();
    let roles = spec["roles"].as_object().expect("roles");
    assert_eq!(
        roles.keys().collect::<Vec<_>>(),
        ["instance", "payer", "scheduler"]
    );
    for (role, ops) in roles {
        for (op, requests) in ops.as_object().expect("operations") {
            // The counting layer's service names: `EC2`, `DynamoDB`, `Service Quotas`…
            let service = op
                .split('.')
                .next()
                .unwrap()
                .to_lowercase()
                .replace(' ', "");
            let requests = match requests {
                Value::Array(a) => a.clone(),
                one => vec![one.clone()],
            };
            for r in requests {
                let action = r["action"].as_str().expect("an action");
                let prefix = action.split(':').next().unwrap();
                // RunInstances also authorises the tags on create and the instance's role.
                assert!(
                    prefix == service || (op == "EC2.RunInstances" && prefix == "iam"),
                    "{role} {op}: action {action}"
                );
            }
        }
    }
}
