//! `scripts/demo.sh` as a new user runs it, against this test's emulator with the binaries
//! already built: it ends with every job done, and reads as a demo should — one line per
//! step (the tools' own output in its log), one table of jobs, and the spot figures explained
//! where they are shown.

mod support;

use std::process::Command;

#[test]
fn the_demo_prints_one_line_per_step_one_jobs_table_and_explains_spot_costs() {
    let name = support::unique_name("demo");
    let bin_dir = support::fleet_bin()
        .parent()
        .expect("the binaries' directory")
        .to_owned();
    let out = Command::new("bash")
        .arg(support::path("scripts/demo.sh"))
        .envs(support::child_env())
        .env("MAYFLY_DEMO_NAME", &name)
        .env("MAYFLY_DEMO_ENDPOINT", support::endpoint())
        .env("MAYFLY_DEMO_BIN_DIR", &bin_dir)
        .env("MAYFLY_VENV", support::venv())
        .current_dir(support::repo())
        .output()
        .expect("run scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status.code()
    );

    // Progress is one line per step, and the pass loop one line at its end: nothing of
    // pip's, cargo's or the deploy's own output.
    let progress: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    for line in &progress {
        assert!(
            line.starts_with("==> ") || line.ends_with("job(s) still active"),
            "not a step line: `{line}`\n{stderr}"
        );
    }
    let steps = progress.iter().filter(|l| l.starts_with("==> ")).count();
    assert!((11..=13).contains(&steps), "{steps} steps:\n{stderr}");
    assert!(
        stderr.contains("; 0 job(s) still active"),
        "the demo ended with jobs active:\n{stderr}"
    );

    // The burst: cedar-plan's 30 jobs launched by the first pass in launch groups, each on
    // its own instance with its launch index.
    assert!(
        stdout.contains("pass 1 launched 30 of the 30 burst jobs, in 1 launch group call(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("  launch index  "), "{stdout}");

    // Jobs: one table, all thirty-seven succeeded.
    let headers = stdout
        .lines()
        .filter(|l| l.starts_with("JOB ") && l.contains("ATTEMPT"))
        .count();
    assert_eq!(headers, 1, "{stdout}");
    assert!(stdout.contains("37 job(s): 37 succeeded"), "{stdout}");

    // The spot note follows the cost report and the status, where the figures are.
    let note = "the emulator's spot price history is a placeholder";
    assert_eq!(stdout.matches(note).count(), 2, "{stdout}");
    let cost = stdout.find("TOTAL").expect("the cost report's total");
    let status = stdout.find("Cost today:").expect("status's cost today");
    let first = stdout.find(note).unwrap();
    let second = stdout.rfind(note).unwrap();
    assert!(
        cost < first && first < status && status < second,
        "{stdout}"
    );
    assert!(
        stdout.contains("still running (each terminated itself"),
        "{stdout}"
    );
    assert!(stdout.contains(", 0 still running"), "{stdout}");
}
