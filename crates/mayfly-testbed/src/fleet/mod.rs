//! The local fleet (DESIGN.md §6): development tooling that makes the emulator's instances
//! real on one machine. The emulator starts instances but runs nothing; the fleet watches it
//! for this deployment's instances and runs each one's user-data as a local process, so the
//! whole lifecycle — launch, run, report, self-terminate, reap — happens for real. It is the
//! `mayfly-fleet` binary; the production CLI never uses it.
//!
//! Per poll, one filtered, paginated DescribeInstances by the `mayfly:cluster` tag:
//!
//! - an instance in `pending` or `running` that the fleet has not seen gets a directory
//!   `<work dir>/<instance id>/` holding its decoded user-data (`user-data.sh`), its console
//!   output (`console.log`), its shims (`bin/`) and its `TMPDIR` (`tmp/`); then
//!   `bash user-data.sh` runs there as the leader of a new session ([`session`]);
//! - an instance the fleet runs that is no longer `pending`/`running` (the reaper terminated
//!   it, say) has its session killed.
//!
//! The script's environment is built from scratch, as on a fresh instance: `PATH` is
//! `<instance dir>/bin`, the tool directories (the project's `.venv/bin`, for the AWS CLI),
//! then the fleet's own `PATH`; `MAYFLY_IMDS_ENDPOINT` names the instance's metadata endpoint;
//! `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_DEFAULT_REGION` and the fleet's (dummy) credentials
//! point the AWS CLI at the emulator; `HOME` is the instance directory. With
//! `--instance-roles`, the scripts get no credentials in their environment: the instance's
//! metadata endpoint serves its instance profile role's, assumed with STS and the instance id
//! as the session name (as EC2 does), and `AWS_EC2_METADATA_SERVICE_ENDPOINT` points the AWS
//! CLI there; against an emulator that enforces IAM, the instance can do only what its role
//! allows.
//!
//! **Metadata** ([`imds`]): each instance gets its own IMDSv2-compatible endpoint on its own
//! loopback port, as each EC2 instance has its own `169.254.169.254`: no instance id travels
//! in requests, tokens are per instance, and an instance can only ever see itself.
//!
//! **Shutdown** ([`shims`]): `shutdown` and `poweroff` on the instance's PATH ask the fleet
//! (a `POST` to the instance's endpoint) to terminate that instance in the emulator — its
//! shutdown behaviour is terminate — and the fleet then kills its session. If the fleet does
//! not answer, the shim terminates the instance with the AWS CLI itself. `payer-etl` stands in
//! for the payers' ETL programs.
//!
//! **Faults** ([`faults`]) are injected per job id (the `mayfly:job-id` tag) to test the
//! scheduler's recovery: a failing exit code, a crash, an instance that never boots, a hang,
//! a spot interruption.
//!
//! Instances' user-data runs once, as on EC2: an instance whose directory records the same
//! launch time (an earlier fleet run started it) is left alone.

mod boot;
pub mod cli;
pub mod cloud;
pub mod faults;
pub mod http;
pub mod imds;
mod runner;
pub mod session;
pub mod shims;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use cli::FleetArgs;
pub use cloud::{
    Ec2UserData, InstanceAws, InstanceRoles, RoleCredentials, StsInstanceRoles, UserDataReader,
};
pub use faults::{Fault, Faults};
pub use runner::Fleet;

use mayfly::ports::{ComputeError, InstanceState};

/// The fleet's record of what it ran, in its work directory: one line per run of the
/// stand-in `payer-etl` that ended with a code of its own — job id, attempt, instance id,
/// exit code. What the chaos test counts jobs that succeeded more than once from.
pub const RUNS_FILE: &str = "runs.log";

/// One line of [`RUNS_FILE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub job_id: String,
    pub attempt: String,
    pub instance_id: String,
    pub exit_code: i32,
}

/// Reads the record of what the fleet ran in `work_dir` (empty if it ran nothing).
pub fn runs(work_dir: &std::path::Path) -> std::io::Result<Vec<Run>> {
    let text = match std::fs::read_to_string(work_dir.join(RUNS_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            Some(Run {
                job_id: f.next()?.to_owned(),
                attempt: f.next()?.to_owned(),
                instance_id: f.next()?.to_owned(),
                exit_code: f.next()?.parse().ok()?,
            })
        })
        .collect())
}

/// How the fleet runs.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The deployment name: the fleet runs instances tagged `mayfly:cluster` = this.
    pub cluster: String,
    /// Where instance directories go (created if needed).
    pub work_dir: PathBuf,
    /// Directories on the scripts' PATH after the shims (the AWS CLI's virtualenv `bin`).
    pub tool_dirs: Vec<PathBuf>,
    /// Time between DescribeInstances polls.
    pub poll: Duration,
    /// How long the stand-in `payer-etl` works.
    pub job_seconds: Duration,
    /// Time from a spot notice to the reclaim (AWS gives two minutes).
    pub spot_warning: Duration,
    pub faults: Faults,
    /// Exit once nothing has been left to do for this long (see [`StopReason::Idle`]).
    pub exit_when_idle: Option<Duration>,
    /// Exit after this long, whatever is running.
    pub max_runtime: Option<Duration>,
    /// The emulator endpoint, region and credentials the scripts use.
    pub aws: InstanceAws,
    /// Each instance gets its instance profile role's credentials on its metadata endpoint
    /// instead of the fleet's own ([`Fleet::on_ec2`] assumes the role with STS).
    pub instance_roles: bool,
}

/// Why [`Fleet::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Nothing to do for `exit_when_idle`: no script running, and every live managed instance
    /// already dealt with (run, or skipped on purpose, like a `never-start` fault).
    Idle,
    /// `max_runtime` passed.
    MaxRuntime,
    /// The shutdown future completed (SIGINT / SIGTERM).
    Signal,
}

/// Why the fleet did not run an instance's user-data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The `never-start` fault.
    NeverStart,
    NoUserData,
    /// User-data that is not a `#!` script (cloud-config, MIME, gzip): not supported.
    NotAScript,
    /// An earlier fleet run already started it; user-data runs once per instance.
    AlreadyBooted,
}

/// What became of one instance the fleet saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceOutcome {
    Skipped(SkipReason),
    /// The fleet could not set it up or start its script (the instance stays running).
    FailedToStart(String),
    /// Its script called `shutdown`; the fleet terminated it.
    ShutDown,
    /// An injected crash: processes killed, instance left running.
    Crashed,
    /// An injected spot interruption: the fleet terminated it at the notice's time.
    Reclaimed,
    /// Someone else (the reaper) terminated or stopped it; the fleet killed its processes.
    EndedInEmulator(Option<InstanceState>),
    /// Every process ended without a shutdown; the instance keeps running in the emulator.
    /// Holds the script's exit code, when it was seen.
    Exited(Option<i32>),
    /// Still running when the fleet stopped; its processes were killed.
    Interrupted,
}

impl fmt::Display for InstanceOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstanceOutcome::Skipped(why) => write!(f, "skipped ({why:?})"),
            InstanceOutcome::FailedToStart(why) => write!(f, "failed to start: {why}"),
            InstanceOutcome::ShutDown => f.write_str("shut down and terminated"),
            InstanceOutcome::Crashed => f.write_str("crashed (injected); still running"),
            InstanceOutcome::Reclaimed => f.write_str("reclaimed after a spot notice"),
            InstanceOutcome::EndedInEmulator(Some(state)) => {
                write!(f, "{state:?} in the emulator; processes killed")
            }
            InstanceOutcome::EndedInEmulator(None) => {
                f.write_str("gone from the emulator; processes killed")
            }
            InstanceOutcome::Exited(Some(code)) => {
                write!(f, "script exited {code} without shutdown; still running")
            }
            InstanceOutcome::Exited(None) => {
                f.write_str("processes ended without shutdown; still running")
            }
            InstanceOutcome::Interrupted => f.write_str("interrupted by the fleet stopping"),
        }
    }
}

/// One instance in the [`FleetReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceReport {
    pub job_id: Option<String>,
    pub attempt: Option<u32>,
    /// `None` while its processes still run (never in a final report).
    pub outcome: Option<InstanceOutcome>,
    /// Its directory, if the fleet made one.
    pub dir: Option<PathBuf>,
}

/// What a fleet run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetReport {
    pub stop: StopReason,
    /// By instance id.
    pub instances: BTreeMap<String, InstanceReport>,
}

/// Why the fleet could not run.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Bad flags, faults file or AWS settings.
    #[error("{0}")]
    Config(String),
    /// The first poll failed: the emulator is not there (later failures are retried).
    #[error("cannot list instances: {0}")]
    Emulator(#[from] ComputeError),
    #[error("work directory {}: {source}", path.display())]
    WorkDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl FleetError {
    /// The process exit code: 2 for invalid input, 1 for failures at run time.
    pub fn exit_code(&self) -> u8 {
        match self {
            FleetError::Config(_) => 2,
            FleetError::Emulator(_) | FleetError::WorkDir { .. } => 1,
        }
    }
}
