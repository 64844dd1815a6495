//! `mayfly render` prints the user-data a job would get, offline.

use std::process::Command;

fn render(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("render")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn render_prints_a_script_for_the_job_that_bash_accepts() {
    let out = render(&[
        "--payer",
        "cedar-plan",
        "--kind",
        "claims",
        "--job-id",
        "cedar-plan:2026-11:claims",
        "--batch",
        "2026-11",
        "--param",
        "FORMAT=x12",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.starts_with("#!/bin/bash"));
    assert!(script.contains("'cedar-plan/cedar-plan:2026-11:claims'"));
    assert!(script.contains("'x12'"));
    let dir = std::env::temp_dir().join(format!("mayfly-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("user-data.sh");
    std::fs::write(&path, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&path).status().unwrap();
    assert!(syntax.success());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn render_names_the_unknown_kind_and_exits_2() {
    let out = render(&["--payer", "cedar-plan", "--kind", "dental"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("kind: payer `cedar-plan` has no job kind `dental`"));
}
