//! What mayfly reads of the account, on the in-memory fakes: `preflight`'s checks of every
//! rung (one finding per problem, naming payer, kind, rung and code), and the account's vCPU
//! quotas in the planner, a pass and `explain` (read or the fallback said, and where the
//! number came from).

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use mayfly::catalog::Catalog;
use mayfly::explain::{explain, ExplainContext, Situation};
use mayfly::fakes::{FakeAccount, FakeCompute, FakeConfigStore, FakeLedger, FakeQueue};
use mayfly::job::{Attempt, Job, JobRequest, JobState};
use mayfly::plan::{self, Reason, Snapshot};
use mayfly::ports::{AwsError, ConfigStore, Ledger};
use mayfly::preflight::{preflight, Account, Check, PreflightReport, QuotasFound};
use mayfly::profile::{CapacityType, GlobalCaps, Payer, PayerProfile, ValidateContext};
use mayfly::quota::{AccountQuota, AccountQuotas, QuotaPool, QuotaSource};
use mayfly::scheduler::{Deps, QuotaStatus, Scheduler, Settings, TickOptions};
use mayfly::sizing::Rung;
use mayfly::summary::JobSummary;
use mayfly::userdata::{InstanceEnv, TemplateUserData};

const CLUSTER: &str = "acct";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
}

/// A payer on two subnets of vpc-1 with spot-then-on-demand rungs of two x86 types.
fn profile_text(
    payer: &str,
    image: &str,
    subnets: &[&str],
    sg: &str,
    instance_profile: &str,
    types: &[&str],
) -> String {
    let list = |v: &[&str]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"payer_id = "{payer}"
priority = 10

[caps]
max_instances = 4
max_vcpus = 16

[launch]
image_id = "{image}"
subnets = [{subnets}]
security_groups = ["{sg}"]
instance_profile = "{instance_profile}"
capacity = "spot-then-on-demand"

[timeouts]
boot = "5m"
heartbeat = "5m"
max_runtime = "1h"

[kinds.load]
tier = 0
command = ["payer-etl", "load"]
[kinds.load.compute]
instance_types = [{types}]
"#,
        subnets = list(subnets),
        types = list(types),
    )
}

fn payer(text: &str) -> Payer {
    let ctx = ValidateContext {
        catalog: Catalog::shipped(),
        global: GlobalCaps::default(),
    };
    PayerProfile::from_toml("test", text)
        .expect("parses")
        .validate("test", &ctx)
        .expect("validates")
}

fn good_payer() -> Payer {
    payer(&profile_text(
        "acme",
        "ami-0a860000",
        &["subnet-0aaaaaaa", "subnet-0bbbbbbb"],
        "sg-01111111",
        "acct-instance",
        &["m7i.large", "c7i.large"],
    ))
}

/// An account where the good payer launches everywhere.
fn account() -> FakeAccount {
    let a = FakeAccount::new();
    a.add_image("ami-0a860000", "x86_64");
    a.add_image("ami-0a640000", "arm64");
    let types = ["m7i.large", "c7i.large", "m7g.large"];
    a.add_subnet("subnet-0aaaaaaa", "vpc-1", "us-east-1a", &types);
    a.add_subnet("subnet-0bbbbbbb", "vpc-1", "us-east-1b", &types);
    a.add_subnet("subnet-0ccccccc", "vpc-2", "us-east-1a", &types);
    a.add_security_group("sg-01111111", "vpc-1");
    a.add_security_group("sg-02222222", "vpc-2");
    a.add_instance_profile("acct-instance", &["acct-instance"]);
    a.add_role("AWSServiceRoleForEC2Spot");
    for capacity in [CapacityType::OnDemand, CapacityType::Spot] {
        a.set_quota(QuotaPool::of("m7i.large", capacity).unwrap(), 64);
    }
    a
}

fn scheduler(config: Arc<FakeConfigStore>, ledger: Arc<FakeLedger>) -> Scheduler {
    let env = InstanceEnv {
        events_queue_url: "https://sqs.us-east-1.amazonaws.com/123456789012/acct-events".into(),
        region: "us-east-1".into(),
        ..InstanceEnv::default()
    };
    let deps = Deps {
        config,
        ledger,
        intake: Arc::new(FakeQueue::new()),
        intake_dlq: Arc::new(FakeQueue::new()),
        events: Arc::new(FakeQueue::new()),
        events_dlq: Arc::new(FakeQueue::new()),
        compute: Arc::new(FakeCompute::new()),
        user_data: Arc::new(TemplateUserData::builtin(env)),
    };
    Scheduler::new(deps, Settings::new(CLUSTER))
}

async fn check(a: &FakeAccount, payers: &[Payer]) -> PreflightReport {
    let s = scheduler(
        Arc::new(FakeConfigStore::new()),
        Arc::new(FakeLedger::new()),
    );
    let account = Account {
        ec2: a,
        iam: a,
        quotas: a,
    };
    preflight(&s, account, payers, &[], false).await
}

/// The problems as (payer, kind, rung, check, code).
fn lines(r: &PreflightReport) -> Vec<(String, String, String, Check, String)> {
    r.problems
        .iter()
        .map(|p| {
            (
                p.payer.clone(),
                p.kind.clone(),
                p.rung.clone(),
                p.check,
                p.code.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_payer_that_launches_everywhere_passes_with_the_launch_dry_run_on_every_rung() {
    let a = account();
    let r = check(&a, &[good_payer()]).await;
    assert!(r.passed(), "{r}");
    assert!(r.warnings.is_empty(), "{r}");
    // 2 types × 2 subnets × (spot, on demand).
    assert_eq!(r.rungs, 8);
    let runs = a.dry_runs();
    assert_eq!(runs.len(), 8);
    let spot = runs
        .iter()
        .filter(|q| q.rung.capacity == CapacityType::Spot)
        .count();
    assert_eq!(spot, 4);
    for req in &runs {
        // The launch's own request: settings, tags on create, rendered user-data.
        assert_eq!(req.image_id, "ami-0a860000");
        assert_eq!(req.security_groups, ["sg-01111111"]);
        assert_eq!(req.instance_profile, "acct-instance");
        assert!(
            req.user_data.starts_with(b"#!/bin/bash"),
            "{}",
            String::from_utf8_lossy(&req.user_data)
        );
        assert!(req
            .tags
            .iter()
            .any(|(k, v)| k == "mayfly:cluster" && v == CLUSTER));
    }
    match &r.vcpu_quotas {
        QuotasFound::Account { quotas } => {
            assert_eq!(
                quotas.get(QuotaPool::of("m7i.large", CapacityType::OnDemand).unwrap()),
                Some(64)
            );
        }
        other => panic!("quotas not read: {other:?}"),
    }
    let text = r.to_string();
    assert!(text.contains("every rung would launch"), "{text}");
    assert!(text.contains("L-1216C47A 64 vCPUs"), "{text}");
}

#[tokio::test]
async fn a_payer_role_under_the_deployment_path_may_be_passed_and_one_elsewhere_is_warned() {
    let a = account();
    // infra/payer.yaml's role and profile, under /mayfly/acct/: the scheduler may pass it.
    a.add_instance_profile_at(
        "/mayfly/acct/",
        "acct-payer-a-profile",
        &["acct-payer-a-role"],
    );
    // A role of the same name shape under another deployment's path: it may not.
    a.add_instance_profile_at("/mayfly/other/", "other-payer-a-profile", &["other-role"]);
    let mine = payer(&profile_text(
        "acme",
        "ami-0a860000",
        &["subnet-0aaaaaaa"],
        "sg-01111111",
        "acct-payer-a-profile",
        &["m7i.large"],
    ));
    let r = check(&a, &[mine]).await;
    assert!(r.warnings.is_empty(), "{r}");
    let theirs = payer(&profile_text(
        "acme",
        "ami-0a860000",
        &["subnet-0aaaaaaa"],
        "sg-01111111",
        "other-payer-a-profile",
        &["m7i.large"],
    ));
    let r = check(&a, &[theirs]).await;
    let pass: Vec<&str> = r
        .warnings
        .iter()
        .filter(|w| w.check == Check::PassRole)
        .map(|w| w.message.as_str())
        .collect();
    assert_eq!(pass.len(), 1, "{r}");
    assert!(
        pass[0].contains("the roles under /mayfly/acct/"),
        "{}",
        pass[0]
    );
}

#[tokio::test]
async fn each_broken_setting_is_its_own_line_naming_payer_kind_rung_and_code() {
    let a = account();
    // On AWS every dry run of these payers fails too; findings already made are not repeated.
    a.fail_dry_runs("*", "InvalidParameterValue");
    let broken = [
        (
            "unknown-ami",
            "ami-0dead000",
            vec!["subnet-0aaaaaaa"],
            "sg-01111111",
            "acct-instance",
            "m7i.large",
        ),
        (
            "missing-subnet",
            "ami-0a860000",
            vec!["subnet-0aaaaaaa", "subnet-0dddddd0"],
            "sg-01111111",
            "acct-instance",
            "m7i.large",
        ),
        (
            "foreign-sg",
            "ami-0a860000",
            vec!["subnet-0aaaaaaa"],
            "sg-02222222",
            "acct-instance",
            "m7i.large",
        ),
        (
            "arm-on-x86",
            "ami-0a860000",
            vec!["subnet-0aaaaaaa"],
            "sg-01111111",
            "acct-instance",
            "m7g.large",
        ),
        (
            "no-profile",
            "ami-0a860000",
            vec!["subnet-0aaaaaaa"],
            "sg-01111111",
            "nope-instance",
            "m7i.large",
        ),
    ];
    let payers: Vec<Payer> = broken
        .iter()
        .map(|(id, image, subnets, sg, ip, t)| {
            payer(&profile_text(id, image, subnets, sg, ip, &[*t]))
        })
        .collect();
    let r = check(&a, &payers).await;
    let want = [
        (
            "unknown-ami",
            "*",
            "*/*/*",
            Check::Image,
            "InvalidAMIID.NotFound",
        ),
        (
            "missing-subnet",
            "*",
            "*/subnet-0dddddd0/*",
            Check::Subnet,
            "InvalidSubnetID.NotFound",
        ),
        (
            "foreign-sg",
            "*",
            "*/subnet-0aaaaaaa/*",
            Check::Network,
            "SecurityGroupVpcMismatch",
        ),
        (
            "arm-on-x86",
            "load",
            "m7g.large/*/*",
            Check::Architecture,
            "ArchitectureMismatch",
        ),
        (
            "no-profile",
            "*",
            "*/*/*",
            Check::InstanceProfile,
            "NoSuchEntity",
        ),
    ];
    let got = lines(&r);
    for (payer, kind, rung, check, code) in want {
        let line = (
            payer.to_owned(),
            kind.to_owned(),
            rung.to_owned(),
            check,
            code.to_owned(),
        );
        assert!(got.contains(&line), "missing {line:?} in:\n{r}");
    }
    // One line each, except the payer whose only subnet left works: its dry runs there
    // still fail, once, grouped.
    let of = |p: &str| got.iter().filter(|l| l.0 == p).count();
    for (payer, ..) in &broken {
        let n = if *payer == "missing-subnet" { 2 } else { 1 };
        assert_eq!(of(payer), n, "{payer}:\n{r}");
    }
    let dry = r
        .problems
        .iter()
        .find(|p| p.payer == "missing-subnet" && p.check == Check::DryRun)
        .expect("the working subnet's dry runs fail");
    assert_eq!(dry.code, "InvalidParameterValue");
    assert!(dry.message.contains("and 1 more rung"), "{}", dry.message);
    assert!(!r.passed());
    let text = r.to_string();
    assert!(text.contains("FAIL  unknown-ami"), "{text}");
    assert!(text.contains("a launch would fail"), "{text}");
}

#[tokio::test]
async fn offerings_quotas_and_denied_dry_runs_fail_the_rungs_they_concern() {
    let a = account();
    a.withdraw_offering("c7i.large", "us-east-1b");
    a.set_quota(QuotaPool::of("m7i.large", CapacityType::Spot).unwrap(), 1);
    a.fail_dry_runs("m7i.large", "UnauthorizedOperation");
    let r = check(&a, &[good_payer()]).await;
    let got = lines(&r);
    let acme = |kind: &str, rung: &str, check, code: &str| {
        (
            "acme".to_owned(),
            kind.to_owned(),
            rung.to_owned(),
            check,
            code.to_owned(),
        )
    };
    assert!(
        got.contains(&acme(
            "load",
            "c7i.large/subnet-0bbbbbbb/*",
            Check::Offering,
            "InstanceTypeNotOffered"
        )),
        "{r}"
    );
    // m7i.large (2 vCPUs) never fits a spot quota of 1; spot c7i.large counts against it too.
    assert!(
        got.contains(&acme(
            "load",
            "m7i.large/*/spot",
            Check::Quota,
            "VcpuLimitExceeded"
        )),
        "{r}"
    );
    assert!(
        got.contains(&acme(
            "load",
            "c7i.large/*/spot",
            Check::Quota,
            "VcpuLimitExceeded"
        )),
        "{r}"
    );
    // The denied dry runs of m7i.large on demand (the spot ones are explained by the quota).
    let denied: Vec<_> = r
        .problems
        .iter()
        .filter(|p| p.code == "UnauthorizedOperation")
        .collect();
    assert_eq!(denied.len(), 1, "{r}");
    assert_eq!(denied[0].rung, "m7i.large/subnet-0aaaaaaa/on-demand");
    assert!(
        denied[0].message.contains("and 1 more rung"),
        "{}",
        denied[0].message
    );
}

#[tokio::test]
async fn what_would_not_fail_a_launch_is_a_warning_and_what_cannot_be_read_is_unchecked() {
    let a = FakeAccount::new();
    a.add_image("ami-0a860000", "x86_64");
    a.add_subnet(
        "subnet-0aaaaaaa",
        "vpc-1",
        "us-east-1a",
        &["m7i.large", "c7i.large"],
    );
    a.add_subnet(
        "subnet-0bbbbbbb",
        "vpc-1",
        "us-east-1b",
        &["m7i.large", "c7i.large"],
    );
    a.add_security_group("sg-01111111", "vpc-1");
    // A role the scheduler may not pass, no spot role yet, and no quota readable.
    a.add_instance_profile("acct-instance", &["someone-elses-role"]);
    a.fail_quotas(Some(AwsError {
        code: "AccessDeniedException".into(),
        message: "not authorized to perform servicequotas:GetServiceQuota".into(),
    }));
    a.fail_dry_runs("c7i.large", "RequestLimitExceeded");
    let r = check(&a, &[good_payer()]).await;
    assert!(r.problems.is_empty(), "{r}");
    let warned: Vec<(Check, &str)> = r
        .warnings
        .iter()
        .map(|w| (w.check, w.code.as_str()))
        .collect();
    assert!(
        warned.contains(&(Check::PassRole, "PassRoleNotGranted")),
        "{r}"
    );
    assert!(warned.contains(&(Check::SpotRole, "NoSuchEntity")), "{r}");
    assert!(r
        .unchecked
        .iter()
        .all(|u| u.check == Check::DryRun && u.code == "RequestLimitExceeded"));
    assert_eq!(r.unchecked.len(), 4, "{r}");
    assert!(!r.passed());
    match &r.vcpu_quotas {
        QuotasFound::Unknown { why } => assert!(why.contains("AccessDeniedException"), "{why}"),
        other => panic!("{other:?}"),
    }
    let text = r.to_string();
    assert!(text.contains("vCPU quotas: cannot be read"), "{text}");
    assert!(text.contains("some checks could not be made"), "{text}");
}

fn queued(id: &str) -> Job {
    Job::from_request(
        JobRequest {
            job_id: id.into(),
            payer_id: "acme".into(),
            kind: "load".into(),
            batch: "b1".into(),
            input: None,
            params: Default::default(),
            priority: None,
        },
        now(),
    )
}

/// A job running on `instance_type` as `capacity`.
fn running(id: &str, instance_type: &str, capacity: CapacityType) -> Job {
    let mut j = queued(id);
    j.state = JobState::Running;
    j.attempt = 1;
    j.attempts.push(Attempt {
        number: 1,
        rung: Some(Rung {
            instance_type: instance_type.into(),
            subnet: "subnet-0aaaaaaa".into(),
            capacity,
        }),
        instance_id: Some(format!("i-{id}")),
        ..Attempt::default()
    });
    j
}

fn plan_with<'a>(
    summaries: &'a [JobSummary],
    payers: &'a [Payer],
    quotas: AccountQuota<'a>,
) -> mayfly::plan::Plan<'a> {
    plan::plan(&Snapshot {
        jobs: summaries,
        payers,
        catalog: Catalog::shipped(),
        caps: GlobalCaps::default(),
        vcpu_quota: None,
        account_quotas: quotas,
        launch_budget: 10,
        now: now(),
    })
}

#[test]
fn the_planner_keeps_each_family_groups_vcpus_under_the_accounts_quota() {
    let payers = [good_payer()];
    let spot = QuotaPool::of("m7i.large", CapacityType::Spot).unwrap();
    let on_demand = QuotaPool::of("m7i.large", CapacityType::OnDemand).unwrap();
    let mut quotas = AccountQuotas::new();
    quotas.insert(spot, 2);
    quotas.insert(on_demand, 4);
    // A spot instance holds the spot quota; on-demand has room for one more 2-vCPU type.
    let jobs = [
        running("r1", "m7i.large", CapacityType::Spot),
        running("r2", "c7i.large", CapacityType::OnDemand),
        queued("q1"),
        queued("q2"),
    ];
    let summaries = JobSummary::of_all(&jobs);
    let p = plan_with(&summaries, &payers, AccountQuota::Read(&quotas));
    assert_eq!(p.launches.len(), 1, "{p}");
    // Only the on-demand rungs are left on its ladder: spot has no room.
    assert!(p.launches[0]
        .ladder
        .iter()
        .all(|r| r.capacity == CapacityType::OnDemand));
    assert_eq!(p.launches[0].ladder.len(), 4);
    let q2 = p
        .waiting
        .iter()
        .find(|w| &*w.job.job_id == "acme/q2")
        .unwrap();
    assert_eq!(
        q2.reason,
        Reason::VcpuQuota {
            quota: 2,
            in_use: 2,
            needed: 2,
            source: QuotaSource::Account(spot),
        }
    );
    assert!(
        q2.reason.to_string().contains("L-34B43A08"),
        "{}",
        q2.reason
    );
    let json = serde_json::to_value(&q2.reason).unwrap();
    assert_eq!(json["source"], "L-34B43A08");
    let use_of = |code: &str| {
        p.quota_use
            .iter()
            .find(|u| u.quota.code() == code)
            .copied()
            .unwrap()
    };
    assert_eq!(
        (use_of("L-1216C47A").in_use, use_of("L-1216C47A").after),
        (2, 4)
    );
    assert_eq!(
        (use_of("L-34B43A08").in_use, use_of("L-34B43A08").after),
        (2, 2)
    );
    let text = p.to_string();
    assert!(text.contains("Account vCPU quotas: "), "{text}");
    assert!(text.contains("L-1216C47A 2 → 4 of 4"), "{text}");

    // Unknown quotas: only the caps apply, and the plan says why.
    let p = plan_with(
        &summaries,
        &payers,
        AccountQuota::Unreadable("AccessDeniedException: no"),
    );
    assert_eq!(p.launches.len(), 2);
    assert!(
        p.to_string()
            .contains("Account vCPU quotas unknown (AccessDeniedException: no)"),
        "{p}"
    );
}

async fn stored(config: &FakeConfigStore) {
    config
        .put(&good_payer().profile, None, now())
        .await
        .expect("put");
}

#[tokio::test]
async fn a_pass_reads_the_quotas_once_and_says_where_its_quota_came_from() {
    let config = Arc::new(FakeConfigStore::new());
    let ledger = Arc::new(FakeLedger::new());
    stored(&config).await;
    ledger.create(&queued("q1")).await.unwrap();
    let a = Arc::new(account());
    let s = scheduler(config.clone(), ledger.clone()).with_quotas(a.clone());
    let dry = TickOptions {
        dry_run: true,
        ..TickOptions::default()
    };
    let report = s.tick(dry, now()).await.unwrap();
    match &report.plan.vcpu_quota {
        QuotaStatus::Account { quotas } => {
            assert!(
                quotas
                    .iter()
                    .any(|q| q.code == "L-1216C47A" && q.vcpus == 64),
                "{quotas:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        report
            .to_string()
            .contains("vCPU quota: from the account: "),
        "{report}"
    );
    // A second pass within the cache's lifetime reads nothing.
    s.tick(dry, now()).await.unwrap();
    assert_eq!(a.quota_reads(), 1);

    // Unreadable: the pass says so and launches under the caps.
    let failing = Arc::new(account());
    failing.fail_quotas(Some(AwsError {
        code: "NoSuchResourceException".into(),
        message: "This service is not available in the current Region.".into(),
    }));
    let s = scheduler(config.clone(), ledger.clone()).with_quotas(failing.clone());
    let report = s.tick(TickOptions::default(), now()).await.unwrap();
    assert_eq!(report.launch.instances.len(), 1, "{report}");
    match &report.plan.vcpu_quota {
        QuotaStatus::Unknown { why } => assert!(why.contains("NoSuchResourceException"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(
        report.to_string().contains("only the caps apply"),
        "{report}"
    );

    // --vcpu-quota overrides: nothing is read.
    let flagged = Arc::new(account());
    let mut s = scheduler(config, ledger).with_quotas(flagged.clone());
    s.settings.vcpu_quota = Some(8);
    let report = s.tick(dry, now()).await.unwrap();
    assert_eq!(report.plan.vcpu_quota, QuotaStatus::Flag { vcpus: 8 });
    assert_eq!(flagged.quota_reads(), 0);
}

#[tokio::test]
async fn explain_names_the_quota_code_or_says_the_quotas_are_unknown() {
    let config = FakeConfigStore::new();
    let ledger = FakeLedger::new();
    stored(&config).await;
    ledger
        .create(&running("r1", "m7i.large", CapacityType::OnDemand))
        .await
        .unwrap();
    ledger.create(&queued("q1")).await.unwrap();
    let a = account();
    for capacity in [CapacityType::OnDemand, CapacityType::Spot] {
        a.set_quota(QuotaPool::of("m7i.large", capacity).unwrap(), 2);
    }
    a.set_quota(QuotaPool::of("m7i.large", CapacityType::Spot).unwrap(), 0);
    let ctx = ExplainContext {
        catalog: Catalog::shipped(),
        caps: GlobalCaps::default(),
        vcpu_quota: None,
        quotas: Some(&a),
        launch_budget: 10,
        now: now(),
    };
    let e = explain(&config, &ledger, &ctx, "q1").await.unwrap();
    assert_eq!(e.situation, Situation::Quota, "{e}");
    assert_eq!(
        e.plan_reason.as_ref().unwrap()["source"],
        "L-34B43A08",
        "{e}"
    );
    assert!(
        e.details.iter().any(|d| d
            .contains("All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests")
            && d.contains("request-service-quota-increase")),
        "{e}"
    );

    a.fail_quotas(Some(AwsError {
        code: "NoSuchResourceException".into(),
        message: "not here".into(),
    }));
    let e = explain(&config, &ledger, &ctx, "q1").await.unwrap();
    assert_eq!(e.situation, Situation::WillLaunch, "{e}");
    assert!(
        e.details.iter().all(|d| !d.contains("unknown")),
        "a job that launches needs no quota note: {e}"
    );
    // A job held by something else says the quotas are unknown.
    let mut spent = ctx;
    spent.launch_budget = 0;
    let e = explain(&config, &ledger, &spent, "q1").await.unwrap();
    assert_eq!(e.situation, Situation::LaunchBudget, "{e}");
    assert!(
        e.details
            .iter()
            .any(|d| d.contains("vCPU quotas are unknown") && d.contains("NoSuchResourceException")),
        "{e}"
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever is in flight and whatever the quotas, a plan never takes a quota past its
        /// limit (or past what was already in flight over it), and a job it holds for a quota
        /// had no rung with room.
        #[test]
        fn no_plan_overfills_an_account_quota(
            in_flight in prop::collection::vec((0usize..2, any::<bool>()), 0..6),
            queued_jobs in 0usize..6,
            spot_limit in 0u32..12,
            on_demand_limit in 0u32..12,
        ) {
            let payers = [good_payer()];
            let types = ["m7i.large", "c7i.large"];
            let mut jobs: Vec<Job> = in_flight
                .iter()
                .enumerate()
                .map(|(i, (t, spot))| {
                    let capacity = if *spot { CapacityType::Spot } else { CapacityType::OnDemand };
                    running(&format!("r{i}"), types[*t], capacity)
                })
                .collect();
            jobs.extend((0..queued_jobs).map(|i| queued(&format!("q{i}"))));
            let spot = QuotaPool::of("m7i.large", CapacityType::Spot).unwrap();
            let on_demand = QuotaPool::of("m7i.large", CapacityType::OnDemand).unwrap();
            let mut quotas = AccountQuotas::new();
            quotas.insert(spot, spot_limit);
            quotas.insert(on_demand, on_demand_limit);
            let summaries = JobSummary::of_all(&jobs);
            let p = plan_with(&summaries, &payers, AccountQuota::Read(&quotas));
            for u in &p.quota_use {
                prop_assert!(u.after <= u.limit.max(u.in_use), "{u:?}");
                prop_assert!(u.after >= u.in_use, "{u:?}");
            }
            for l in &p.launches {
                prop_assert!(!l.ladder.is_empty());
            }
            for w in &p.waiting {
                if let Reason::VcpuQuota { quota, in_use, needed, source: QuotaSource::Account(_) } = w.reason {
                    prop_assert!(in_use + needed > quota);
                }
            }
        }
    }
}
