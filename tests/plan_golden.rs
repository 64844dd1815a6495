//! Golden files for `mayfly plan` over the example profiles and jobs, as text and as JSON.
//! Regenerate after an intended change with `MAYFLY_UPDATE_GOLDEN=1 cargo test --test plan_golden`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn plan_output(extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .current_dir(repo(""))
        .args(extra)
        .args([
            "plan",
            "--profiles",
            "payer-profiles",
            "--jobs",
            "payer-profiles/examples/jobs.jsonl",
            "--now",
            "2026-11-22T12:00:00Z",
            "--launch-budget",
            "5",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn check_golden(name: &str, actual: &str) {
    let path = repo("tests/golden").join(name);
    if std::env::var_os("MAYFLY_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{} differs from the output:\n{actual}\n(set MAYFLY_UPDATE_GOLDEN=1 to accept)",
        path.display()
    );
}

#[test]
fn plan_text_matches_golden() {
    check_golden("plan.txt", &plan_output(&[]));
}

#[test]
fn plan_json_matches_golden() {
    let json = plan_output(&["--output", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(doc["launches"].is_array() && doc["waiting"].is_array());
    check_golden("plan.json", &json);
}

#[test]
fn plan_refuses_a_bad_jobs_file_with_exit_2() {
    let dir = std::env::temp_dir().join(format!("mayfly-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jobs = dir.join("bad.jsonl");
    std::fs::write(&jobs, "{\"job_id\":\"ok-1\",\"payer_id\":\"cedar-plan\",\"kind\":\"claims\",\"batch\":\"b\"}\n{\"job_id\":\"bad id\",\"payer_id\":\"cedar-plan\",\"kind\":\"claims\",\"batch\":\"b\"}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .current_dir(repo(""))
        .args(["plan", "--profiles", "payer-profiles", "--jobs"])
        .arg(&jobs)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.jsonl:2: job_id:"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}
