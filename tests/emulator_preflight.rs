//! `mayfly preflight` and the account's vCPU quotas against the emulator, as an operator
//! meets them: the example payers pass (with what the emulator cannot check listed, not
//! passed), each broken launch setting fails with its own line and exit 2, and the quotas,
//! which the emulator cannot answer, are reported as unknown by preflight, `plan` and `tick`.

mod support;

use std::path::Path;
use std::process::Output;

use aws_sdk_ec2::types::Filter;
use mayfly::catalog::{Arch, Catalog};
use mayfly::profile::{GlobalCaps, PayerProfile, ValidateContext};
use mayfly::sizing;
use serde_json::Value;
use support::mayfly;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn explain(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("{e}: {}", explain(out)))
}

/// Subnets of the default VPC in us-east-1a and us-east-1b (zones that offer the example
/// payers' types; us-east-1e, for one, does not), and its default security group.
async fn zonal_network(ec2: &aws_sdk_ec2::Client) -> (Vec<String>, Vec<String>) {
    let out = ec2
        .describe_subnets()
        .filters(
            Filter::builder()
                .name("default-for-az")
                .values("true")
                .build(),
        )
        .send()
        .await
        .expect("describe subnets");
    let mut subnets = Vec::new();
    for zone in ["us-east-1a", "us-east-1b"] {
        let s = out
            .subnets()
            .iter()
            .find(|s| s.availability_zone() == Some(zone))
            .and_then(|s| s.subnet_id())
            .unwrap_or_else(|| panic!("the emulator's default VPC has a subnet in {zone}"));
        subnets.push(s.to_owned());
    }
    let (_, sgs) = support::emulator_network(ec2).await;
    (subnets, sgs)
}

/// An image of the emulator's with its root on /dev/xvda, for `arch`.
async fn image(ec2: &aws_sdk_ec2::Client, arch: &str) -> String {
    let out = ec2
        .describe_images()
        .filters(Filter::builder().name("architecture").values(arch).build())
        .filters(
            Filter::builder()
                .name("root-device-name")
                .values("/dev/xvda")
                .build(),
        )
        .send()
        .await
        .expect("describe images");
    let mut ids: Vec<String> = out
        .images()
        .iter()
        .filter_map(|i| i.image_id().map(str::to_owned))
        .collect();
    ids.sort();
    ids.into_iter()
        .next()
        .unwrap_or_else(|| panic!("the emulator has an {arch} image"))
}

/// Points each profile in `dir` at an emulator image its instance types run: arm64 where
/// every type its kinds may size to is Graviton, x86_64 otherwise.
fn point_at_images(dir: &Path, x86: &str, arm: &str) {
    let ctx = ValidateContext {
        catalog: Catalog::shipped(),
        global: GlobalCaps::default(),
    };
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = entry.unwrap().path();
        let text = std::fs::read_to_string(&file).unwrap();
        let payer = PayerProfile::from_toml("test", &text)
            .unwrap()
            .validate("test", &ctx)
            .unwrap();
        let arm_only = payer.profile.kinds.values().all(|k| {
            [None, Some(u64::MAX)].into_iter().all(|input| {
                sizing::choose_types(ctx.catalog, &k.compute, input, payer.profile.caps.max_vcpus)
                    .iter()
                    .all(|t| !t.supports(Arch::X86_64))
            })
        });
        let mut doc: toml::Table = toml::from_str(&text).unwrap();
        let launch = doc["launch"].as_table_mut().unwrap();
        let image = if arm_only { arm } else { x86 };
        launch.insert("image_id".into(), toml::Value::String(image.to_owned()));
        std::fs::write(&file, toml::to_string(&doc).unwrap()).unwrap();
    }
}

/// A one-kind, on-demand payer profile.
fn broken_profile(
    payer: &str,
    image: &str,
    subnets: &[&str],
    sg: &str,
    profile: &str,
    instance_type: &str,
) -> String {
    let subnets: Vec<String> = subnets.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        r#"payer_id = "{payer}"

[caps]
max_instances = 2
max_vcpus = 8

[launch]
image_id = "{image}"
subnets = [{}]
security_groups = ["{sg}"]
instance_profile = "{profile}"

[timeouts]
boot = "5m"
heartbeat = "5m"
max_runtime = "1h"

[kinds.load]
tier = 0
command = ["payer-etl", "load"]
[kinds.load.compute]
instance_types = ["{instance_type}"]
"#,
        subnets.join(", ")
    )
}

/// A security group in a VPC of its own.
async fn foreign_security_group(ec2: &aws_sdk_ec2::Client, name: &str) -> String {
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.99.0.0/16")
        .send()
        .await
        .expect("create vpc");
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc id");
    ec2.create_security_group()
        .group_name(format!("{name}-elsewhere"))
        .description("a group of another VPC")
        .vpc_id(vpc_id)
        .send()
        .await
        .expect("create security group")
        .group_id()
        .expect("group id")
        .to_owned()
}

#[tokio::test]
async fn preflight_passes_the_examples_and_names_each_broken_setting() {
    let name = support::unique_name("preflight");
    support::deploy(&name);
    let sdk = support::sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let (subnets, sgs) = zonal_network(&ec2).await;
    let (x86, arm) = (image(&ec2, "x86_64").await, image(&ec2, "arm64").await);
    let dir = std::env::temp_dir().join(format!("mayfly-preflight-{name}"));
    support::write_profiles_for(&name, &subnets, &sgs, &dir);
    point_at_images(&dir, &x86, &arm);
    let dir_s = dir.display().to_string();

    // Applying says what to run next.
    let applied = mayfly(&name, &["payers", "apply", &dir_s]);
    assert!(applied.status.success(), "{}", explain(&applied));
    assert!(
        stdout(&applied).contains(
            "Next: `mayfly preflight cedar-plan harbor-health prairie-mutual` checks their launches"
        ),
        "{}",
        explain(&applied)
    );

    // The example payers pass: no problem, nothing unchecked, exit 0.
    let out = mayfly(&name, &["--output", "json", "preflight"]);
    assert!(out.status.success(), "{}", explain(&out));
    let report = json(&out);
    assert_eq!(report["problems"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["unchecked"], serde_json::json!([]), "{report:#}");
    assert_eq!(
        report["payers"],
        serde_json::json!(["cedar-plan", "harbor-health", "prairie-mutual"])
    );
    assert!(report["rungs"].as_u64().unwrap() >= 20, "{report:#}");
    // What the emulator cannot check is listed, not passed; the spot role is a warning only.
    assert!(!report["emulator_limits"].as_array().unwrap().is_empty());
    assert!(
        report["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["check"] == "spot-role" && w["code"] == "NoSuchEntity"),
        "{report:#}"
    );
    // The emulator has no EC2 quotas: the fallback is taken and said.
    assert_eq!(report["vcpu_quotas"]["from"], "unknown", "{report:#}");
    let why = report["vcpu_quotas"]["why"].as_str().unwrap();
    assert!(
        why.contains("NoSuchResourceException") && why.contains("GetServiceQuota L-"),
        "{why}"
    );
    let text = mayfly(&name, &["preflight", "prairie-mutual"]);
    assert!(text.status.success(), "{}", explain(&text));
    let t = stdout(&text);
    assert!(
        t.contains("Not checked against this endpoint (an emulator, not AWS)"),
        "{t}"
    );
    assert!(t.contains("vCPU quotas: cannot be read"), "{t}");
    assert!(t.contains("0 problem(s)"), "{t}");

    // The planner falls back to the caps and says why, in `plan` and in a pass.
    let plan = json(&mayfly(&name, &["--output", "json", "plan"]));
    assert_eq!(plan["account_quotas"]["from"], "unknown", "{plan:#}");
    let pass = json(&mayfly(&name, &["--output", "json", "tick", "--dry-run"]));
    assert_eq!(pass["plan"]["vcpu_quota"]["from"], "unknown", "{pass:#}");
    // A flag overrides the account's quotas.
    let flagged = json(&mayfly(
        &name,
        &[
            "--output",
            "json",
            "tick",
            "--dry-run",
            "--vcpu-quota",
            "64",
        ],
    ));
    assert_eq!(
        flagged["plan"]["vcpu_quota"],
        serde_json::json!({"from": "flag", "vcpus": 64})
    );

    // Each broken setting: its own payer, its own line, its own code.
    let foreign = foreign_security_group(&ec2, &name).await;
    let profile = format!("{name}-instance");
    let (a, b) = (subnets[0].as_str(), subnets[1].as_str());
    let sg = sgs[0].as_str();
    let broken = [
        (
            "broken-ami",
            broken_profile(
                "broken-ami",
                "ami-0123456789abcdef0",
                &[a],
                sg,
                &profile,
                "m7i.large",
            ),
            "image",
            "InvalidAMIID.NotFound",
        ),
        (
            "broken-subnet",
            broken_profile(
                "broken-subnet",
                &x86,
                &[a, "subnet-0123456789abcdef0"],
                sg,
                &profile,
                "m7i.large",
            ),
            "subnet",
            "InvalidSubnetID.NotFound",
        ),
        (
            "broken-sg",
            broken_profile("broken-sg", &x86, &[b], &foreign, &profile, "m7i.large"),
            "network",
            "SecurityGroupVpcMismatch",
        ),
        (
            "broken-arch",
            broken_profile("broken-arch", &x86, &[a], sg, &profile, "m7g.large"),
            "architecture",
            "ArchitectureMismatch",
        ),
        (
            "broken-profile",
            broken_profile(
                "broken-profile",
                &x86,
                &[a],
                sg,
                "no-such-profile",
                "m7i.large",
            ),
            "instance-profile",
            "NoSuchEntity",
        ),
    ];
    let bad = std::env::temp_dir().join(format!("mayfly-preflight-broken-{name}"));
    std::fs::create_dir_all(&bad).unwrap();
    for (id, text, ..) in &broken {
        std::fs::write(bad.join(format!("{id}.toml")), text).unwrap();
    }
    let applied = mayfly(&name, &["payers", "apply", &bad.display().to_string()]);
    assert!(applied.status.success(), "{}", explain(&applied));
    let ids: Vec<&str> = broken.iter().map(|b| b.0).collect();
    let mut args = vec!["--output", "json", "preflight"];
    args.extend(&ids);
    let out = mayfly(&name, &args);
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    let report = json(&out);
    let problems = report["problems"].as_array().unwrap();
    for (id, _, check, code) in &broken {
        let mine: Vec<&Value> = problems.iter().filter(|p| p["payer"] == *id).collect();
        assert_eq!(mine.len(), 1, "{id}: one line:\n{report:#}");
        assert_eq!(mine[0]["check"], *check, "{id}:\n{report:#}");
        assert_eq!(mine[0]["code"], *code, "{id}:\n{report:#}");
    }
    let rungs = |id: &str| {
        problems.iter().find(|p| p["payer"] == id).unwrap()["rung"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(rungs("broken-subnet"), "*/subnet-0123456789abcdef0/*");
    assert_eq!(rungs("broken-arch"), "m7g.large/*/*");
    assert_eq!(rungs("broken-sg"), format!("*/{b}/*"));
    // The text names payer, kind, rung and code on one line each, and exits 2 saying why.
    let mut args = vec!["preflight"];
    args.extend(&ids);
    let text = mayfly(&name, &args);
    assert_eq!(text.status.code(), Some(2));
    let t = stdout(&text);
    let line = t
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains("broken-arch"))
        .unwrap_or_else(|| panic!("{t}"));
    for part in [
        "FAIL",
        "load",
        "m7g.large/*/*",
        "architecture",
        "ArchitectureMismatch",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }
    assert!(
        String::from_utf8_lossy(&text.stderr).contains("a launch would fail"),
        "{}",
        explain(&text)
    );
    let unknown = mayfly(&name, &["preflight", "no-such-payer"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", explain(&unknown));
}
