//! The commands the fleet puts first on each instance's PATH (`<instance dir>/bin`):
//! `shutdown` and `poweroff`, which end that instance, and `payer-etl`, a stand-in for the
//! payers' ETL programs (real AMIs install `payer-etl` on PATH; the example profiles run
//! `payer-etl load-claims …`). Each instance gets its own copies, with its id, its endpoint
//! and its injected fault written in, so they work even if a job clears its environment.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use super::faults::Fault;
use mayfly::userdata::shell_quote;

/// What the shims of one instance need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimSettings {
    pub instance_id: String,
    /// The instance's metadata endpoint, which also takes the fleet's control requests.
    pub fleet_url: String,
    /// The emulator and region, for `shutdown`'s fallback when the fleet does not answer.
    pub endpoint_url: String,
    pub region: String,
    /// How long the stand-in ETL works before it succeeds.
    pub job_seconds: Duration,
    pub fault: Option<Fault>,
    /// The fleet's record of what it ran ([`super::runs`]): the stand-in appends a line when
    /// it exits with a code of its own.
    pub record: std::path::PathBuf,
}

/// Writes `shutdown`, `poweroff` and `payer-etl` into `bin_dir` (created if needed).
pub fn write(bin_dir: &Path, settings: &ShimSettings) -> std::io::Result<()> {
    std::fs::create_dir_all(bin_dir)?;
    let shutdown = shutdown_script(settings);
    for (name, text) in [
        ("shutdown", shutdown.as_str()),
        ("poweroff", shutdown.as_str()),
        ("payer-etl", payer_etl_script(settings).as_str()),
    ] {
        let path = bin_dir.join(name);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// `shutdown` (any arguments): asks the fleet to terminate this instance in the emulator and
/// end its processes. Like the real command it returns at once; the end comes shortly after.
pub fn shutdown_script(s: &ShimSettings) -> String {
    let id = shell_quote(&s.instance_id);
    format!(
        r#"#!/bin/bash
# Local fleet stand-in for `shutdown` / `poweroff` on instance {raw_id}: whatever the
# arguments, the instance powers off, and its shutdown behaviour (terminate) applies.
fleet={fleet}
if curl -sf --connect-timeout 2 --max-time 30 -X POST "$fleet/mayfly/shutdown" >/dev/null; then
  exit 0
fi
echo "shutdown: the local fleet did not answer; terminating {raw_id} with the AWS CLI" >&2
exec aws ec2 terminate-instances --endpoint-url {endpoint} --region {region} \
  --instance-ids {id} --output text >/dev/null
"#,
        raw_id = s.instance_id,
        fleet = shell_quote(&s.fleet_url),
        endpoint = shell_quote(&s.endpoint_url),
        region = shell_quote(&s.region),
    )
}

/// `payer-etl`: prints its arguments and the `MAYFLY_*` environment, works in three steps
/// of `job_seconds / 3`, and exits 0 — unless a fault says otherwise.
pub fn payer_etl_script(s: &ShimSettings) -> String {
    let step = format!("{:.3}", s.job_seconds.as_secs_f64() / 3.0);
    // A loop that prints as it works must not spin when the job takes no time.
    let loop_step = format!("{:.3}", (s.job_seconds.as_secs_f64() / 3.0).max(0.5));
    let fault = s.fault.map_or_else(|| "none".to_owned(), |f| f.to_string());
    // One line per exit: job, attempt, instance, code (short appends do not interleave).
    let record = |code: &str| {
        format!(
            "printf '%s %s %s %s\\n' \"${{MAYFLY_JOB_ID:--}}\" \"${{MAYFLY_ATTEMPT:--}}\" {id} {code} >>{file}\n",
            id = shell_quote(&s.instance_id),
            file = shell_quote(&s.record.to_string_lossy()),
        )
    };
    let mut out = format!(
        r#"#!/bin/bash
# Local fleet stand-in for the payers' ETL programs (real AMIs put `payer-etl` on PATH).
# Instance {id}; injected fault: {fault}.
set -u
say() {{ printf 'payer-etl: %s\n' "$*"; }}
say "started: $*"
while IFS= read -r line; do
  say "env $line"
done < <(env | LC_ALL=C sort | grep '^MAYFLY_' || true)
"#,
        id = s.instance_id,
    );
    let first_step = format!("sleep {step}\nsay 'step 1/3 done'\n");
    let forever = "while :; do sleep 3600; done\n";
    match s.fault {
        None | Some(Fault::NeverStart) => {
            let _ = write!(
                out,
                "for n in 1 2 3; do\n  sleep {step}\n  say \"step $n/3 done\"\ndone\n\
                 say 'finished: 0 errors'\n{}exit 0\n",
                record("0")
            );
        }
        Some(Fault::Exit(code)) => {
            out.push_str(&first_step);
            let _ = write!(
                out,
                "say 'step 2/3 failed (injected fault), exiting with {code}' >&2\n{}exit {code}\n",
                record(&code.to_string())
            );
        }
        Some(Fault::Hang) => {
            out.push_str(&first_step);
            out.push_str("say 'step 2/3 stalled (injected fault: hang)'\n");
            out.push_str(forever);
        }
        Some(Fault::Crash) => {
            out.push_str(&first_step);
            let _ = write!(
                out,
                "say 'step 2/3: the instance crashes (injected fault)'\n\
                 curl -sf --connect-timeout 2 --max-time 10 -X POST {fleet}/mayfly/crash >/dev/null ||\n  \
                 say 'the local fleet did not answer the crash request; hanging instead'\n",
                fleet = shell_quote(&s.fleet_url),
            );
            out.push_str(forever);
        }
        Some(Fault::Spot) => {
            let _ = write!(
                out,
                "say 'working until the instance is reclaimed (injected fault: spot)'\n\
                 n=0\nwhile :; do\n  sleep {loop_step}\n  n=$((n + 1))\n  say \"step $n done\"\ndone\n"
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn settings(fault: Option<Fault>) -> ShimSettings {
        ShimSettings {
            instance_id: "i-0123456789abcdef0".into(),
            fleet_url: "http://127.0.0.1:9".into(),
            endpoint_url: "http://127.0.0.1:5000".into(),
            region: "us-east-1".into(),
            job_seconds: Duration::from_millis(30),
            fault,
            record: std::env::temp_dir()
                .join(format!("mayfly-shims-{}-runs.log", std::process::id())),
        }
    }

    fn run_etl(fault: Option<Fault>) -> (Option<i32>, String) {
        let dir = std::env::temp_dir().join(format!(
            "mayfly-shims-{}-{}",
            std::process::id(),
            fault.map_or("none".into(), |f| f.to_string())
        ));
        write(&dir, &settings(fault)).unwrap();
        let out = Command::new(dir.join("payer-etl"))
            .args(["load-claims", "--format", "837"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("MAYFLY_JOB_ID", "cedar-plan:2026-11-01:claims")
            .env("OTHER", "hidden")
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    #[test]
    fn payer_etl_reports_its_args_and_mayfly_env_and_succeeds() {
        let (code, out) = run_etl(None);
        assert_eq!(code, Some(0), "{out}");
        assert!(
            out.contains("payer-etl: started: load-claims --format 837"),
            "{out}"
        );
        assert!(
            out.contains("env MAYFLY_JOB_ID=cedar-plan:2026-11-01:claims"),
            "{out}"
        );
        assert!(!out.contains("hidden"), "{out}");
        assert!(out.contains("step 3/3 done"), "{out}");
    }

    #[test]
    fn payer_etl_records_each_exit_in_the_fleets_record() {
        let dir = std::env::temp_dir().join(format!("mayfly-shims-rec-{}", std::process::id()));
        let mut s = settings(None);
        s.record = dir.join(crate::fleet::RUNS_FILE);
        write(&dir, &s).unwrap();
        for _ in 0..2 {
            let out = Command::new(dir.join("payer-etl"))
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("MAYFLY_JOB_ID", "cedar-plan:2026-11-01:claims")
                .env("MAYFLY_ATTEMPT", "2")
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
        let runs = crate::fleet::runs(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(
            runs[0],
            crate::fleet::Run {
                job_id: "cedar-plan:2026-11-01:claims".into(),
                attempt: "2".into(),
                instance_id: "i-0123456789abcdef0".into(),
                exit_code: 0,
            }
        );
    }

    #[test]
    fn payer_etl_exits_with_the_injected_code() {
        let (code, out) = run_etl(Some(Fault::Exit(75)));
        assert_eq!(code, Some(75), "{out}");
        assert!(out.contains("exiting with 75"), "{out}");
    }

    #[test]
    fn scripts_are_valid_bash() {
        for fault in [
            None,
            Some(Fault::Exit(3)),
            Some(Fault::Crash),
            Some(Fault::Hang),
            Some(Fault::Spot),
        ] {
            let s = settings(fault);
            for script in [payer_etl_script(&s), shutdown_script(&s)] {
                let out = Command::new("bash")
                    .args(["-n", "-c", &script])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{script}\n{out:?}");
            }
        }
    }
}
