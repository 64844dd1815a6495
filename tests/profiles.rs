//! Profile validation as operators meet it: every shipped example validates, and every
//! broken profile fails with a message naming the file, the field and the reason.

use std::path::{Path, PathBuf};
use std::process::Command;

use mayfly::catalog::Catalog;
use mayfly::profile::{load_and_validate, GlobalCaps, ValidateContext};

fn ctx() -> ValidateContext<'static> {
    ValidateContext {
        catalog: Catalog::shipped(),
        global: GlobalCaps::default(),
    }
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn every_example_profile_validates() {
    let payers =
        load_and_validate(&[repo("payer-profiles")], &ctx()).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = payers.iter().map(|p| p.id()).collect();
    assert!(ids.len() >= 3, "{ids:?}");
    // One of them chains three tiers.
    assert!(payers
        .iter()
        .any(|p| p.profile.kinds.values().map(|k| k.tier).max() == Some(2)));
}

#[test]
fn every_broken_profile_fails_with_its_expected_message() {
    let dir = repo("tests/fixtures/broken-profiles");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 15);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", file.display()));
        let err = load_and_validate(std::slice::from_ref(&file), &ctx())
            .expect_err(&format!("{} should be refused", file.display()))
            .to_string();
        assert!(
            err.contains(expected),
            "{}:\n  expected: {expected}\n  got: {err}",
            file.display()
        );
        assert!(
            err.contains(&file.display().to_string()),
            "error does not name the file: {err}"
        );
    }
}

#[test]
fn validate_command_exits_2_and_names_each_problem() {
    let out = Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .args(["payers", "validate"])
        .arg(repo("tests/fixtures/broken-profiles/tier-gap.toml"))
        .arg(repo("payer-profiles/cedar-plan.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok      cedar-plan"), "{stdout}");
    assert!(
        stdout.contains("tier-gap.toml: kinds.claims.tier: tier 2 has no tier 1 below it"),
        "{stdout}"
    );

    let ok = Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .args(["--output", "json", "payers", "validate"])
        .arg(repo("payer-profiles"))
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(report["errors"].as_array().unwrap().len(), 0);
    assert!(report["valid"].as_array().unwrap().len() >= 3);
}
