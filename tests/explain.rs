//! `mayfly explain`: the right answer for each situation a job can be in, against the
//! in-memory config table and ledger with the example payer profiles.

use chrono::{DateTime, Duration, TimeZone, Utc};
use mayfly::catalog::Catalog;
use mayfly::explain::{explain, ExplainContext, Explanation, Situation};
use mayfly::fakes::{FakeConfigStore, FakeLedger};
use mayfly::job::{Attempt, Job, JobRequest, JobState, PriceSource};
use mayfly::ports::{ConfigStore, Ledger};
use mayfly::profile::{load_and_validate, CapacityType, GlobalCaps, ValidateContext};
use mayfly::sizing::Rung;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
}

struct Tables {
    config: FakeConfigStore,
    ledger: FakeLedger,
}

async fn tables() -> Tables {
    let config = FakeConfigStore::new();
    let ctx = ValidateContext {
        catalog: Catalog::shipped(),
        global: GlobalCaps::default(),
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("payer-profiles");
    for p in load_and_validate(&[dir], &ctx).expect("example profiles validate") {
        config.put(&p.profile, None, now()).await.expect("put");
    }
    Tables {
        config,
        ledger: FakeLedger::new(),
    }
}

/// A cedar-plan job of `kind` in batch `batch`, in `state`.
fn job(id: &str, kind: &str, batch: &str, state: JobState) -> Job {
    let req = JobRequest {
        job_id: id.into(),
        payer_id: "cedar-plan".into(),
        kind: kind.into(),
        batch: batch.into(),
        input: None,
        params: Default::default(),
        priority: None,
    };
    let mut j = Job::from_request(req, now() - Duration::hours(1));
    j.state = state;
    j
}

/// Gives `j` a launched attempt `n` on an m5.large, launched `ago` before now.
fn launched(j: &mut Job, n: u32, ago: Duration) {
    j.attempt = n;
    j.attempts.push(Attempt {
        number: n,
        rung: Some(Rung {
            instance_type: "m5.large".into(),
            subnet: "subnet-0a1b2c3d4e5f60014".into(),
            capacity: CapacityType::OnDemand,
        }),
        instance_id: Some(format!("i-0000000000000000{n}")),
        availability_zone: Some("us-east-1a".into()),
        usd_per_hour: Some(0.096),
        price_source: Some(PriceSource::OnDemand),
        root_volume_gib: Some(0),
        launched_at: Some(now() - ago),
        ..Attempt::default()
    });
}

fn ctx() -> ExplainContext<'static> {
    ExplainContext {
        catalog: Catalog::shipped(),
        caps: GlobalCaps::default(),
        vcpu_quota: None,
        quotas: None,
        launch_budget: 60,
        now: now(),
    }
}

async fn answer(t: &Tables, ctx: &ExplainContext<'_>, id: &str) -> Explanation {
    let e = explain(&t.config, &t.ledger, ctx, id)
        .await
        .expect("explained");
    // The text form is what an operator reads; it always leads with the summary.
    assert!(e.to_string().contains(&e.summary));
    e
}

#[tokio::test]
async fn waiting_on_lower_tier_jobs_names_them_and_their_state() {
    let t = tables().await;
    let mut elig = job(
        "cedar:11:eligibility",
        "eligibility",
        "2026-11",
        JobState::Running,
    );
    launched(&mut elig, 1, Duration::minutes(5));
    t.ledger.create(&elig).await.unwrap();
    let claims = job("cedar:11:claims", "claims", "2026-11", JobState::Queued);
    t.ledger.create(&claims).await.unwrap();
    let e = answer(&t, &ctx(), "cedar:11:claims").await;
    assert_eq!(e.situation, Situation::WaitingOnTiers);
    assert!(e.summary.contains("cedar:11:eligibility"), "{}", e.summary);
    assert!(
        e.details
            .iter()
            .any(|d| d == "cedar-plan/cedar:11:eligibility is running"),
        "{:?}",
        e.details
    );
}

#[tokio::test]
async fn blocked_by_a_dead_lower_tier_says_how_to_release_it() {
    let t = tables().await;
    let mut elig = job(
        "cedar:11:eligibility",
        "eligibility",
        "2026-11",
        JobState::Dead,
    );
    elig.reason = Some("exit code 3 is not retryable".into());
    t.ledger.create(&elig).await.unwrap();
    t.ledger
        .create(&job(
            "cedar:11:members",
            "members",
            "2026-11",
            JobState::Blocked,
        ))
        .await
        .unwrap();
    let e = answer(&t, &ctx(), "cedar:11:members").await;
    assert_eq!(e.situation, Situation::BlockedByDead);
    assert!(e
        .details
        .iter()
        .any(|d| d.contains("mayfly jobs retry cedar-plan/cedar:11:eligibility")));
}

#[tokio::test]
async fn a_payer_at_its_instance_cap_is_the_reason() {
    let t = tables().await;
    // cedar-plan allows 6 instances: six batches' eligibility jobs hold them.
    for b in 0..6 {
        let mut j = job(
            &format!("cedar:{b}:eligibility"),
            "eligibility",
            &format!("b{b}"),
            JobState::Running,
        );
        launched(&mut j, 1, Duration::minutes(1));
        t.ledger.create(&j).await.unwrap();
    }
    t.ledger
        .create(&job(
            "cedar:7:eligibility",
            "eligibility",
            "b7",
            JobState::Queued,
        ))
        .await
        .unwrap();
    let e = answer(&t, &ctx(), "cedar:7:eligibility").await;
    assert_eq!(e.situation, Situation::Cap);
    assert!(e.summary.contains("instance cap (6)"), "{}", e.summary);
    assert_eq!(
        e.plan_reason.as_ref().unwrap()["code"],
        "payer_instance_cap"
    );
}

#[tokio::test]
async fn the_account_vcpu_quota_is_the_reason() {
    let t = tables().await;
    t.ledger
        .create(&job(
            "cedar:1:eligibility",
            "eligibility",
            "b1",
            JobState::Queued,
        ))
        .await
        .unwrap();
    let mut c = ctx();
    c.vcpu_quota = Some(1);
    let e = answer(&t, &c, "cedar:1:eligibility").await;
    assert_eq!(e.situation, Situation::Quota);
    assert!(e.summary.contains("account vCPU quota"), "{}", e.summary);
    // Without the quota nothing holds it back.
    let e = answer(&t, &ctx(), "cedar:1:eligibility").await;
    assert_eq!(e.situation, Situation::WillLaunch);
    assert!(e.summary.contains("c7i.large"), "{}", e.summary);
}

#[tokio::test]
async fn backoff_says_until_when_and_why_the_last_attempt_ended() {
    let t = tables().await;
    let mut j = job("cedar:1:eligibility", "eligibility", "b1", JobState::Queued);
    launched(&mut j, 1, Duration::minutes(10));
    j.attempts[0].exit_code = Some(75);
    j.attempts[0].finished_at = Some(now() - Duration::minutes(2));
    j.attempts[0].reason = Some("exit code 75".into());
    j.not_before = Some(now() + Duration::minutes(3));
    t.ledger.create(&j).await.unwrap();
    let e = answer(&t, &ctx(), "cedar:1:eligibility").await;
    assert_eq!(e.situation, Situation::Backoff);
    assert!(
        e.summary.contains("until 2026-11-22T12:03:00Z"),
        "{}",
        e.summary
    );
    assert!(e.summary.contains("attempt 2"), "{}", e.summary);
    assert!(
        e.details.iter().any(|d| d.contains("exit code 75")),
        "{:?}",
        e.details
    );
    // The failed attempt's 8 minutes of m5.large are its cost so far.
    assert!(
        (e.cost_usd - 0.096 * 480.0 / 3600.0).abs() < 1e-9,
        "{}",
        e.cost_usd
    );
}

#[tokio::test]
async fn a_paused_payer_gives_the_pause_reason() {
    let t = tables().await;
    let row = t.config.get("cedar-plan").await.unwrap().unwrap();
    t.config
        .set_paused("cedar-plan", Some("invoice dispute"), row.version, now())
        .await
        .unwrap();
    t.ledger
        .create(&job(
            "cedar:1:eligibility",
            "eligibility",
            "b1",
            JobState::Queued,
        ))
        .await
        .unwrap();
    let e = answer(&t, &ctx(), "cedar:1:eligibility").await;
    assert_eq!(e.situation, Situation::PayerPaused);
    assert!(e.summary.contains("invoice dispute"), "{}", e.summary);
    assert!(e
        .details
        .iter()
        .any(|d| d.contains("mayfly payers resume cedar-plan")));
}

#[tokio::test]
async fn a_dead_job_shows_its_last_exit_code_and_output_tail() {
    let t = tables().await;
    let mut j = job("cedar:1:eligibility", "eligibility", "b1", JobState::Dead);
    launched(&mut j, 1, Duration::minutes(10));
    j.attempts[0].exit_code = Some(3);
    j.attempts[0].finished_at = Some(now() - Duration::minutes(9));
    j.attempts[0].output_tail = Some("loading 834 file\nerror: segment ISA malformed".into());
    j.reason = Some("exit code 3 is not retryable".into());
    t.ledger.create(&j).await.unwrap();
    let e = answer(&t, &ctx(), "cedar:1:eligibility").await;
    assert_eq!(e.situation, Situation::Dead);
    assert!(e.summary.contains("last exit code 3"), "{}", e.summary);
    assert!(
        e.summary.contains("exit code 3 is not retryable"),
        "{}",
        e.summary
    );
    assert_eq!(e.last_exit_code, Some(3));
    let text = e.to_string();
    assert!(text.contains("error: segment ISA malformed"), "{text}");
    // One minute of m5.large: the minimum, $0.0016.
    assert!((e.cost_usd - 0.0016).abs() < 1e-9, "{}", e.cost_usd);
}

#[tokio::test]
async fn a_running_job_names_its_instance_since_when_and_its_cost_so_far() {
    let t = tables().await;
    let mut j = job(
        "cedar:1:eligibility",
        "eligibility",
        "b1",
        JobState::Running,
    );
    launched(&mut j, 1, Duration::minutes(30));
    j.attempts[0].started_at = Some(now() - Duration::minutes(29));
    t.ledger.create(&j).await.unwrap();
    let e = answer(&t, &ctx(), "cedar:1:eligibility").await;
    assert_eq!(e.situation, Situation::Running);
    for want in [
        "i-00000000000000001",
        "m5.large",
        "since 2026-11-22T11:30:00Z",
        "$0.0960/h",
        "$0.0480 so far",
    ] {
        assert!(e.summary.contains(want), "{want}: {}", e.summary);
    }
    assert!(e.attempts[0].open);
}

#[tokio::test]
async fn an_unknown_job_is_not_found() {
    let t = tables().await;
    let err = explain(&t.config, &t.ledger, &ctx(), "nope")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no job `nope`"));
}
