//! Booting one instance: deciding whether its user-data runs at all, laying out its
//! directory, starting its metadata endpoint, writing its shims and running its script in a
//! session of its own with a fresh environment.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tracing::warn;

use super::cloud::{InstanceRoles, UserDataReader};
use super::imds::{Control, Imds, ImdsServer, InstanceMetadata};
use super::session::{self, Session};
use super::shims::{self, ShimSettings};
use super::{Fault, FleetConfig, SkipReason};
use mayfly::ports::ManagedInstance;

/// How long after boot an injected spot notice appears.
const SPOT_NOTICE_DELAY: Duration = Duration::from_secs(1);

/// An instance whose processes are running.
#[derive(Debug)]
pub(super) struct Live {
    pub session: Session,
    /// Kept for the instance's lifetime: dropping it stops the endpoint.
    pub _server: ImdsServer,
    /// How the script's shell ended, once it has.
    pub leader_exit: Option<std::process::ExitStatus>,
    /// When an injected spot interruption takes the instance.
    pub reclaim_at: Option<Instant>,
}

/// What came of booting an instance.
#[derive(Debug)]
pub(super) enum Boot {
    Started {
        dir: PathBuf,
        live: Box<Live>,
    },
    Skipped(SkipReason),
    /// Setting it up failed; the instance stays running in the emulator.
    Failed {
        dir: PathBuf,
        error: std::io::Error,
    },
    /// Its user-data could not be read this time: try again on the next poll.
    Retry,
}

/// Boots `instance` unless its fault or its user-data says not to.
pub(super) async fn boot(
    config: &FleetConfig,
    user_data: &dyn UserDataReader,
    roles: Option<&dyn InstanceRoles>,
    instance: &ManagedInstance,
    fault: Option<Fault>,
    control: &UnboundedSender<Control>,
) -> Boot {
    if fault == Some(Fault::NeverStart) {
        return Boot::Skipped(SkipReason::NeverStart);
    }
    let script = match user_data.user_data(&instance.instance_id).await {
        Ok(Some(script)) => script,
        Ok(None) => return Boot::Skipped(SkipReason::NoUserData),
        Err(e) => {
            warn!(error = %e, "Cannot read the user-data; retrying next poll.");
            return Boot::Retry;
        }
    };
    // cloud-init runs gzip user-data as it runs plain user-data.
    let script = match gunzip(script) {
        Some(script) => script,
        None => return Boot::Skipped(SkipReason::NotAScript),
    };
    // cloud-init runs user-data as a program only when it starts with `#!`.
    if !script.starts_with(b"#!") {
        return Boot::Skipped(SkipReason::NotAScript);
    }
    let dir = config.work_dir.join(&instance.instance_id);
    let launched = instance
        .launched_at
        .map_or_else(|| "unknown".to_owned(), |t| t.to_rfc3339());
    let marker = dir.join("launched-at");
    if std::fs::read_to_string(&marker).is_ok_and(|seen| seen == launched) {
        return Boot::Skipped(SkipReason::AlreadyBooted);
    }
    // With instance roles on, the instance gets its profile's role credentials, as on EC2.
    let credentials = match roles {
        None => None,
        Some(roles) => match roles.credentials(&instance.instance_id).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "Cannot get the instance's role credentials; retrying next poll.");
                return Boot::Retry;
            }
        },
    };
    let boot = Start {
        script: &script,
        launched: &launched,
        fault,
        credentials,
    };
    match start(config, instance, &dir, boot, control).await {
        Ok(live) => Boot::Started {
            dir,
            live: Box::new(live),
        },
        Err(error) => Boot::Failed { dir, error },
    }
}

/// What one instance boots with.
struct Start<'a> {
    script: &'a [u8],
    launched: &'a str,
    fault: Option<Fault>,
    credentials: Option<super::cloud::RoleCredentials>,
}

/// The job and attempt a launch group's instance of `index` runs: from its entry of the
/// group's table (the entry's `job_id='…'` and `attempt=N` lines, as mayfly's templates write
/// them), so that faults keyed by job apply to grouped instances too.
pub(super) fn group_member(user_data: Vec<u8>, index: u32) -> Option<(String, u32)> {
    let script = gunzip(user_data)?;
    let text = String::from_utf8_lossy(&script);
    let start = text.find(&format!("\n{index})\ncat >"))?;
    let entry = &text[start..];
    let entry = &entry[..entry.find("\nMAYFLY_GROUP_ENTRY_END\n")?];
    let job = entry
        .lines()
        .find_map(|l| l.strip_prefix("job_id='"))?
        .strip_suffix('\'')?;
    let attempt = entry
        .lines()
        .find_map(|l| l.strip_prefix("attempt="))?
        .parse()
        .ok()?;
    Some((job.to_owned(), attempt))
}

/// The user-data as cloud-init reads it: decompressed when it is gzip (`None` when it claims
/// to be and is not), else as it is.
fn gunzip(data: Vec<u8>) -> Option<Vec<u8>> {
    use std::io::Read as _;
    if !data.starts_with(&[0x1f, 0x8b]) {
        return Some(data);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data.as_slice())
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// Lays out the instance directory, starts its endpoint and runs its script.
async fn start(
    config: &FleetConfig,
    instance: &ManagedInstance,
    dir: &Path,
    boot: Start<'_>,
    control: &UnboundedSender<Control>,
) -> std::io::Result<Live> {
    let Start {
        script,
        launched,
        fault,
        credentials,
    } = boot;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir.join("tmp"))?;
    std::fs::write(dir.join("launched-at"), launched)?;
    let script_path = dir.join("user-data.sh");
    std::fs::write(&script_path, script)?;
    let region = config.aws.region.clone();
    let meta = InstanceMetadata {
        instance_id: instance.instance_id.clone(),
        instance_type: instance.instance_type.clone(),
        availability_zone: instance
            .availability_zone
            .clone()
            .unwrap_or_else(|| format!("{region}a")),
        region,
        user_data: String::from_utf8_lossy(script).into_owned(),
        credentials,
        ami_launch_index: instance.launch_index.unwrap_or(0),
    };
    let role_credentials = meta.credentials.is_some();
    let server = ImdsServer::start(Imds::new(meta), control.clone()).await?;
    let bin = dir.join("bin");
    shims::write(
        &bin,
        &ShimSettings {
            instance_id: instance.instance_id.clone(),
            fleet_url: server.endpoint(),
            endpoint_url: config.aws.endpoint_url.clone(),
            region: config.aws.region.clone(),
            job_seconds: config.job_seconds,
            fault,
            record: config.work_dir.join(super::RUNS_FILE),
        },
    )?;
    let reclaim_at = (fault == Some(Fault::Spot)).then(|| {
        let notice_at = Instant::now() + SPOT_NOTICE_DELAY;
        let action_time = chrono::Utc::now()
            + chrono::Duration::from_std(SPOT_NOTICE_DELAY + config.spot_warning)
                .unwrap_or_else(|_| chrono::Duration::minutes(2));
        server.imds.schedule_spot_notice(notice_at, action_time);
        notice_at + config.spot_warning
    });
    let env = script_env(config, dir, &bin, &server.endpoint(), role_credentials);
    let session = session::spawn(&script_path, dir, &env, &dir.join("console.log"))?;
    Ok(Live {
        session,
        _server: server,
        leader_exit: None,
        reclaim_at,
    })
}

/// A fresh instance's environment, pointed at the emulator and the local endpoint. With
/// `role_credentials`, the AWS CLI finds its credentials on the endpoint, as on EC2; without,
/// it uses the fleet's own.
fn script_env(
    config: &FleetConfig,
    dir: &Path,
    bin: &Path,
    imds: &str,
    role_credentials: bool,
) -> Vec<(String, String)> {
    let mut path: Vec<PathBuf> = vec![bin.to_path_buf()];
    path.extend(config.tool_dirs.iter().cloned());
    if let Some(inherited) = std::env::var_os("PATH") {
        path.extend(std::env::split_paths(&inherited));
    }
    let path = std::env::join_paths(path).map_or_else(
        |_| "/usr/bin:/bin".to_owned(),
        |p| p.to_string_lossy().into_owned(),
    );
    let mut env = vec![
        ("PATH".to_owned(), path),
        ("HOME".to_owned(), dir.display().to_string()),
        ("TMPDIR".to_owned(), dir.join("tmp").display().to_string()),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ("MAYFLY_IMDS_ENDPOINT".to_owned(), imds.to_owned()),
    ];
    if role_credentials {
        // The SDKs and the CLI read the role's credentials from this instance's endpoint.
        env.push((
            "AWS_EC2_METADATA_SERVICE_ENDPOINT".to_owned(),
            format!("{imds}/"),
        ));
        env.extend(config.aws.env_without_credentials());
    } else {
        // The SDKs and the CLI must never look for the real metadata service here.
        env.push(("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned()));
        env.extend(config.aws.env());
    }
    env
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_group_member_is_read_from_its_entry() {
        let entries: Vec<String> = (0..3)
            .map(|i| {
                format!(
                    "#!/bin/bash\njob_id='p:b{i}:k'\nattempt={}\necho hi\n",
                    i + 1
                )
            })
            .collect();
        let ud = mayfly::userdata::group_user_data("mayfly-g", &entries).unwrap();
        assert_eq!(
            super::group_member(ud.clone(), 2),
            Some(("p:b2:k".to_owned(), 3))
        );
        assert_eq!(super::group_member(ud, 3), None);
    }
}
