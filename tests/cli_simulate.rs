//! `mayfly simulate` on the reference trace: both columns, the ratio target, tier order, and
//! a trace that can be regenerated from its seed.

use std::process::{Command, Output};

const REFERENCE: &str = "payer-profiles/examples/reference-trace.jsonl";

fn mayfly(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn simulate_prints_mayfly_beside_the_baseline_per_payer_and_tier() {
    let text = ok(&mayfly(&["simulate", "--trace", REFERENCE]));
    assert!(text.contains("baseline asg:6:m5.2xlarge"), "{text}");
    for row in [
        "cedar-plan          0",
        "cedar-plan          2",
        "harbor-health       1",
        "prairie-mutual      1",
        "(baseline idle)",
        "total                   1000",
    ] {
        assert!(text.contains(row), "no `{row}` in\n{text}");
    }
    assert!(text.contains("billed instance-seconds / job-seconds: mayfly 1.0"));
}

#[test]
fn simulate_json_meets_the_ratio_target_with_no_tier_violations() {
    let out = mayfly(&[
        "--output",
        "json",
        "simulate",
        "--trace",
        REFERENCE,
        "--baseline",
        "asg:8:m5.xlarge",
        "--seed",
        "3",
    ]);
    let report: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let mayfly = &report["total"]["mayfly"];
    let baseline = &report["total"]["baseline"];
    assert_eq!(mayfly["jobs"], 1000);
    assert_eq!(mayfly["violations"], 0);
    assert_eq!(mayfly["unfinished"], 0);
    let ratio = mayfly["billed_per_job_s"].as_f64().unwrap();
    assert!((1.0..=1.15).contains(&ratio), "mayfly ratio {ratio}");
    assert!(baseline["billed_per_job_s"].as_f64().unwrap() > ratio);
    assert!(baseline["violations"].as_u64().unwrap() > 0);
    assert_eq!(report["baseline"]["count"], 8);
    assert_eq!(report["baseline"]["instance_type"], "m5.xlarge");
    assert_eq!(report["rows"].as_array().unwrap().len(), 7);
    assert_eq!(report["seed"], 3);
}

#[test]
fn the_reference_trace_is_its_seeded_generation() {
    let generated = ok(&mayfly(&[
        "simulate",
        "--generate-trace",
        "--jobs",
        "1000",
        "--seed",
        "1",
    ]));
    let committed =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(REFERENCE))
            .unwrap();
    assert!(
        generated == committed,
        "regenerate {REFERENCE} with --seed 1"
    );
}

#[test]
fn bad_traces_and_baselines_exit_2_naming_the_problem() {
    let dir = std::env::temp_dir().join(format!("mayfly-simulate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("trace.jsonl");
    std::fs::write(
        &trace,
        "{\"at\":0,\"job_id\":\"a\",\"payer_id\":\"acme\",\"kind\":\"claims\",\"batch\":\"1\",\"run_seconds\":60}\n",
    )
    .unwrap();
    let path = trace.to_str().unwrap();
    let out = mayfly(&["simulate", "--trace", path]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a: payer_id: no profile for payer `acme`")
    );

    std::fs::write(&trace, "{\"at\":0,\"job_id\":\"a\"}\n").unwrap();
    let out = mayfly(&["simulate", "--trace", path]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("trace.jsonl:1: payer_id: missing field"));

    let out = mayfly(&[
        "simulate",
        "--trace",
        REFERENCE,
        "--baseline",
        "asg:4:m99.huge",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`m99.huge` is not in the catalog"));
    std::fs::remove_dir_all(&dir).ok();
}
