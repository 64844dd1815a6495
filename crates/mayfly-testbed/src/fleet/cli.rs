//! The `mayfly-fleet` command line: flags, their conversion to a [`FleetConfig`], and the
//! run the binary drives.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tracing::warn;

use super::{Faults, Fleet, FleetConfig, FleetError, FleetReport, InstanceAws};

/// Runs the emulator's mayfly instances on this machine: each instance's user-data runs as a
/// local process with an IMDSv2 endpoint on loopback, the AWS CLI pointed at the emulator,
/// and `shutdown` terminating that instance. Development tooling; never point it at AWS.
#[derive(Debug, Clone, Parser)]
#[command(name = "mayfly-fleet", version)]
pub struct FleetArgs {
    /// Deployment name: run the instances tagged `mayfly:cluster` = NAME.
    #[arg(long, default_value = "mayfly")]
    pub name: String,
    /// The emulator's endpoint (required).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// AWS region (default: the standard AWS chain, e.g. AWS_REGION).
    #[arg(long)]
    pub region: Option<String>,
    /// Where each instance gets its directory: `<WORK_DIR>/<instance id>/`.
    #[arg(long, default_value = ".mayfly/fleet")]
    pub work_dir: PathBuf,
    /// The virtualenv holding the AWS CLI; its bin/ goes on the scripts' PATH.
    #[arg(long, env = "MAYFLY_VENV", default_value = ".venv")]
    pub venv: PathBuf,
    /// Milliseconds between polls of the emulator.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub poll_ms: u64,
    /// How long the stand-in `payer-etl` works, in seconds (fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_secs)]
    pub job_seconds: Duration,
    /// Seconds from a spot interruption notice to the reclaim (AWS gives 120).
    #[arg(long, value_name = "SECS", default_value = "20", value_parser = parse_secs)]
    pub spot_warning_secs: Duration,
    /// Inject a fault: JOB_ID=exit:N | crash | never-start | hang | spot. A key of
    /// JOB_ID@ATTEMPT limits it to one attempt. Repeatable.
    #[arg(long = "fault", value_name = "JOB_ID=FAULT")]
    pub faults: Vec<String>,
    /// A file of faults, one JOB_ID=FAULT per line (`#` comments allowed).
    #[arg(long, value_name = "FILE")]
    pub faults_file: Option<PathBuf>,
    /// Exit 0 once no script has been running and no managed instance has been waiting to
    /// start for this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub exit_when_idle: Option<Duration>,
    /// Exit 0 after this many seconds, killing whatever still runs.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub max_runtime: Option<Duration>,
    /// Serve each instance its instance profile role's credentials on its metadata endpoint
    /// (STS AssumeRole, the session named after the instance, as EC2 does) instead of the
    /// fleet's own: its scripts then call AWS as that role.
    #[arg(long)]
    pub instance_roles: bool,
    /// More logging (-v debug); MAYFLY_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Seconds as a non-negative decimal number.
fn parse_secs(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("`{text}` is not a number of seconds"))
}

impl FleetArgs {
    /// The fleet's configuration: faults parsed (the file read), paths made absolute.
    pub fn config(&self, aws: InstanceAws) -> Result<FleetConfig, FleetError> {
        let mut faults = Faults::default();
        for spec in &self.faults {
            faults
                .add_spec(spec)
                .map_err(|e| FleetError::Config(format!("--fault {e}")))?;
        }
        if let Some(file) = &self.faults_file {
            faults.add_file(file).map_err(FleetError::Config)?;
        }
        let venv_bin = std::path::absolute(self.venv.join("bin"))
            .map_err(|e| FleetError::Config(format!("--venv {}: {e}", self.venv.display())))?;
        if !venv_bin.join("aws").exists() {
            warn!(venv = %self.venv.display(), "No AWS CLI in the virtualenv: scripts cannot send events (scripts/emulator.sh install).");
        }
        Ok(FleetConfig {
            cluster: self.name.clone(),
            work_dir: self.work_dir.clone(),
            tool_dirs: vec![venv_bin],
            poll: Duration::from_millis(self.poll_ms),
            job_seconds: self.job_seconds,
            spot_warning: self.spot_warning_secs,
            faults,
            exit_when_idle: self.exit_when_idle,
            max_runtime: self.max_runtime,
            aws,
            instance_roles: self.instance_roles,
        })
    }
}

/// Loads the AWS settings, builds the fleet on the emulator and runs it until idle, the
/// runtime limit or `shutdown`.
pub async fn run(
    args: FleetArgs,
    shutdown: impl Future<Output = ()>,
) -> Result<FleetReport, FleetError> {
    let sdk =
        mayfly::aws::load_sdk_config(args.region.as_deref(), args.endpoint_url.as_deref(), None)
            .await;
    let aws = InstanceAws::from_sdk(&sdk)
        .await
        .map_err(FleetError::Config)?;
    let config = args.config(aws)?;
    Fleet::on_ec2(config, &sdk).run(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws() -> InstanceAws {
        InstanceAws {
            endpoint_url: "http://127.0.0.1:5000".into(),
            region: "us-east-1".into(),
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            session_token: None,
        }
    }

    #[test]
    fn defaults_and_faults() {
        let args = FleetArgs::try_parse_from([
            "mayfly-fleet",
            "--fault",
            "job-a=crash",
            "--fault",
            "job-b@2=exit:75",
            "--job-seconds",
            "0.5",
            "--exit-when-idle",
            "3",
        ])
        .unwrap();
        let config = args.config(aws()).unwrap();
        assert_eq!(config.cluster, "mayfly");
        assert_eq!(config.poll, Duration::from_secs(1));
        assert_eq!(config.job_seconds, Duration::from_millis(500));
        assert_eq!(config.exit_when_idle, Some(Duration::from_secs(3)));
        assert_eq!(config.max_runtime, None);
        assert_eq!(
            config.faults.lookup("job-a", Some(1)),
            Some(super::super::Fault::Crash)
        );
        assert_eq!(config.faults.lookup("job-b", Some(1)), None);
        assert!(config.tool_dirs[0].is_absolute());
    }

    #[test]
    fn bad_input_is_a_config_error() {
        assert!(FleetArgs::try_parse_from(["mayfly-fleet", "--job-seconds", "-1"]).is_err());
        assert!(FleetArgs::try_parse_from(["mayfly-fleet", "--poll-ms", "0"]).is_err());
        let args = FleetArgs::try_parse_from(["mayfly-fleet", "--fault", "job=boom"]).unwrap();
        let err = args.config(aws()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("unknown fault"), "{err}");
    }
}
