//! Shared support for the tests: the emulator harness ([`emulator`], re-exported here), the
//! checks and set-ups built on it, the `mayfly` binary and the local fleet's, and the worlds
//! and scenarios of the scheduler tests ([`world`]).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

pub mod cost_check;
pub mod daemon;
mod emulator;
pub mod schema;
pub mod screenshot;
pub mod world;

pub use emulator::*;

/// Every job in the ledger, state by state (a test's ledger is small).
pub async fn all_jobs(ledger: &dyn mayfly::ports::Ledger) -> Vec<mayfly::job::Job> {
    let mut jobs = Vec::new();
    for s in mayfly::job::JobState::ALL {
        jobs.extend(ledger.by_state(s).await.unwrap());
    }
    jobs
}

/// Checks what DESIGN §3 step 5 requires of a launch, as EC2 reports it.
pub async fn assert_launch_shape(ec2: &aws_sdk_ec2::Client, instance_id: &str, cluster: &str) {
    use aws_sdk_ec2::types::{HttpTokensState, InstanceAttributeName};
    let shutdown = ec2
        .describe_instance_attribute()
        .instance_id(instance_id)
        .attribute(InstanceAttributeName::InstanceInitiatedShutdownBehavior)
        .send()
        .await
        .expect("describe shutdown behaviour");
    assert_eq!(
        shutdown
            .instance_initiated_shutdown_behavior()
            .and_then(|v| v.value()),
        Some("terminate")
    );
    let user_data = ec2
        .describe_instance_attribute()
        .instance_id(instance_id)
        .attribute(InstanceAttributeName::UserData)
        .send()
        .await
        .expect("describe user data");
    let encoded = user_data
        .user_data()
        .and_then(|v| v.value())
        .expect("user data is set");
    use base64::Engine;
    let script = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64 user data");
    assert!(String::from_utf8_lossy(&script).starts_with("#!/bin/bash"));
    let described = ec2
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .expect("describe instance");
    let instance = described.reservations()[0].instances()[0].clone();
    assert_eq!(
        instance.metadata_options().and_then(|m| m.http_tokens()),
        Some(&HttpTokensState::Required)
    );
    let volume_ids: Vec<String> = instance
        .block_device_mappings()
        .iter()
        .filter_map(|b| b.ebs().and_then(|e| e.volume_id()).map(str::to_owned))
        .collect();
    assert!(!volume_ids.is_empty(), "the root volume is listed");
    let volumes = ec2
        .describe_volumes()
        .set_volume_ids(Some(volume_ids))
        .send()
        .await
        .expect("describe volumes");
    for v in volumes.volumes() {
        assert!(
            v.tags()
                .iter()
                .any(|t| t.key() == Some("mayfly:cluster") && t.value() == Some(cluster)),
            "volume {:?} carries the cluster tag",
            v.volume_id()
        );
    }
}

/// Copies the example profiles into `dir`, pointed at the emulator's network and this
/// deployment's instance profile.
pub fn write_profiles_for(name: &str, subnets: &[String], sgs: &[String], dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(path("payer-profiles")).unwrap() {
        let file = entry.unwrap().path();
        if file.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let mut doc: toml::Table =
            toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let launch = doc
            .get_mut("launch")
            .and_then(|l| l.as_table_mut())
            .unwrap();
        let strings =
            |v: &[String]| toml::Value::Array(v.iter().cloned().map(toml::Value::String).collect());
        launch.insert("subnets".into(), strings(subnets));
        launch.insert("security_groups".into(), strings(sgs));
        launch.insert(
            "instance_profile".into(),
            toml::Value::String(format!("{name}-instance")),
        );
        std::fs::write(
            dir.join(file.file_name().unwrap()),
            toml::to_string(&doc).unwrap(),
        )
        .unwrap();
    }
}

/// Deploys `name` into the emulator and applies the example payer profiles to it (written,
/// pointed at the emulator's network, into a fresh directory that is returned).
pub async fn deploy_with_example_payers(name: &str) -> PathBuf {
    deploy(name);
    let sdk = sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let (subnets, sgs) = emulator_network(&ec2).await;
    let dir = std::env::temp_dir().join(format!("mayfly-payers-{name}"));
    write_profiles_for(name, &subnets, &sgs, &dir);
    let out = mayfly(name, &["payers", "apply", &dir.display().to_string()]);
    assert!(
        out.status.success(),
        "payers apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Runs the `mayfly` binary for deployment `name` against the emulator.
pub fn mayfly(name: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .arg("--name")
        .arg(name)
        .args(args)
        .envs(child_env())
        .current_dir(repo())
        .output()
        .expect("run mayfly")
}

/// The local fleet's binary, `mayfly-fleet`. It is the mayfly-testbed package's, so cargo
/// names it to that package's tests only (`CARGO_BIN_EXE_mayfly-fleet`); here it is found
/// beside the `mayfly` binary, in the same target directory. `cargo test --workspace` builds
/// it (with the testbed's own tests); this package's tests alone do not, so a missing binary,
/// or one older than the sources it is built from, fails here naming the command that builds
/// it.
pub fn fleet_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_mayfly"))
        .with_file_name(format!("mayfly-fleet{}", std::env::consts::EXE_SUFFIX));
    let build = "cargo build -p mayfly-testbed";
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}. Build the local fleet with `{build}` \
                 (`cargo test --workspace` builds it too)",
                bin.display()
            )
        });
    let skip = repo().join("src/bin");
    for dir in ["src", "crates/mayfly-core/src", "crates/mayfly-testbed/src"] {
        if let Some((changed, file)) = newest_file(&repo().join(dir), &skip) {
            assert!(
                changed <= built,
                "{} is older than {}: rebuild the local fleet with `{build}` \
                 (`cargo test --workspace` builds it too)",
                bin.display(),
                file.display()
            );
        }
    }
    bin
}

/// The most recently modified file under `dir`, leaving out the directory `skip`.
fn newest_file(dir: &Path, skip: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let found = if path.is_dir() {
            if path == skip {
                continue;
            }
            newest_file(&path, skip)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (t, path))
        };
        if let Some(f) = found {
            if newest.as_ref().is_none_or(|n| f.0 > n.0) {
                newest = Some(f);
            }
        }
    }
    newest
}
