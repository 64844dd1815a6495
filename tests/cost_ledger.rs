//! The cost facts each attempt records as it happens, against the in-memory fakes: the price
//! at launch (on-demand from the catalog, spot from the price history for the type and AZ,
//! read once per pass, with the on-demand price standing in when it cannot be read), the root
//! volume, the end of the bill, all within the ledger writes a job already makes.

mod support;

use std::sync::Arc;

use chrono::Duration;
use mayfly::catalog::Catalog;
use mayfly::cost_report::{self, BillingEnd, Query};
use mayfly::events::InstanceEvent;
use mayfly::fakes::{FakeCompute, FakeConfigStore, FakeLedger, FakeQueue};
use mayfly::job::{JobState, PriceSource};
use mayfly::ports::InstanceState;
use support::world::{request, send_event, t0, EchoUserData, FaultyCompute, World};

fn world() -> (World, Arc<FakeCompute>, Arc<FakeLedger>) {
    let ec2 = Arc::new(FakeCompute::new());
    let ledger = Arc::new(FakeLedger::new());
    let events = Arc::new(FakeQueue::new());
    let w = World {
        cluster: "fake".into(),
        config: Arc::new(FakeConfigStore::new()),
        ledger: ledger.clone(),
        intake: Arc::new(FakeQueue::new()),
        intake_dlq: Arc::new(FakeQueue::new()),
        events: events.clone(),
        events_fake: Some(events),
        events_dlq: Arc::new(FakeQueue::new()),
        compute: Arc::new(FaultyCompute::new(ec2.clone())),
        user_data: Arc::new(EchoUserData),
        subnets: vec!["subnet-0a1b2c3d4e5f60011".into()],
        security_groups: vec!["sg-0a1b2c3d4e5f60021".into()],
        instance_profile: "mayfly-instance".into(),
        clock: None,
        max_group: None,
        group_min_is_max: false,
    };
    (w, ec2, ledger)
}

fn on_demand(t: &str) -> f64 {
    Catalog::shipped().get(t).unwrap().on_demand_usd_per_hour
}

#[tokio::test]
async fn spot_launches_record_the_spot_price_read_once_per_type_and_az() {
    let (w, ec2, ledger) = world();
    let profiles = w.apply_examples().await;
    ec2.set_spot_price("c7i.large", Some(0.0321));
    // Two cedar-plan eligibility jobs (spot first, c7i.large) and one prairie-mutual
    // remittance (on demand).
    for b in ["2027-01", "2027-02"] {
        let id = format!("cedar-plan:{b}:eligibility");
        w.submit(&request(&id, "cedar-plan", "eligibility", b, 1))
            .await;
    }
    let prairie = "prairie-mutual/prairie-mutual:2027-01:remittance";
    w.submit(&request(
        prairie,
        "prairie-mutual",
        "remittance",
        "2027-01",
        1,
    ))
    .await;
    let report = w.tick(t0()).await;
    assert_eq!(report.launch.instances.len(), 3, "{report}");
    assert_eq!(ec2.spot_price_calls(), 1);
    for b in ["2027-01", "2027-02"] {
        let job = w.job(&format!("cedar-plan:{b}:eligibility")).await;
        let a = job.current_attempt().unwrap();
        assert_eq!(a.rung.as_ref().unwrap().instance_type, "c7i.large");
        assert_eq!(a.price_source, Some(PriceSource::Spot));
        assert_eq!(a.usd_per_hour, Some(0.0321));
    }
    let job = w.job(prairie).await;
    let a = job.current_attempt().unwrap();
    let t = a.rung.as_ref().unwrap().instance_type.clone();
    assert_eq!(a.price_source, Some(PriceSource::OnDemand));
    assert_eq!(a.usd_per_hour, Some(on_demand(&t)));
    let gib = profiles
        .iter()
        .find(|p| p.payer_id == "prairie-mutual")
        .unwrap()
        .launch
        .root_volume_gib;
    assert_eq!(a.root_volume_gib, Some(gib));

    // The job's life: started and finished events, one pass. Still at most 4 ledger writes,
    // and its cost is its billed seconds at the recorded prices.
    let iid = a.instance_id.clone().unwrap();
    let launched = a.launched_at.unwrap();
    let at = launched + Duration::seconds(20);
    send_event(&w, &InstanceEvent::started(prairie, 1, &iid, at)).await;
    let done_at = at + Duration::seconds(600);
    send_event(
        &w,
        &InstanceEvent::finished(prairie, 1, &iid, done_at, 0, 600, "ok\n"),
    )
    .await;
    w.tick(t0() + Duration::minutes(11)).await;
    assert!(
        ledger.writes_for(prairie) <= 4,
        "{}",
        ledger.writes_for(prairie)
    );
    let job = w.job(prairie).await;
    assert_eq!(job.state, JobState::Succeeded);
    let r = cost_report::build(&[job], Catalog::shipped(), &Query::default(), t0());
    let line = &r.attempts[0];
    assert_eq!(line.billing_end, BillingEnd::Finished);
    let billed = (done_at - launched).num_seconds().max(60) as u64;
    assert_eq!(line.cost.billed_seconds, billed);
    assert_eq!(line.cost.productive_seconds, 600);
    let want = on_demand(&t) * billed as f64 / 3600.0
        + f64::from(gib) * 0.08 * billed as f64 / (730.0 * 3600.0);
    assert!((r.totals.total_usd - want).abs() < 1e-12);
}

#[tokio::test]
async fn without_a_spot_price_the_launch_goes_ahead_at_the_on_demand_price() {
    let (w, ec2, _) = world();
    w.apply_examples().await;
    let id = "cedar-plan:2027-03:eligibility";
    w.submit(&request(id, "cedar-plan", "eligibility", "2027-03", 1))
        .await;
    w.tick(t0()).await;
    let job = w.job(id).await;
    assert_eq!(job.state, JobState::Running);
    let a = job.current_attempt().unwrap();
    match &a.price_source {
        Some(PriceSource::OnDemandFallback { why }) => {
            assert!(why.contains("NoSpotPrice"), "{why}")
        }
        other => panic!("expected the on-demand fallback, got {other:?}"),
    }
    assert_eq!(a.usd_per_hour, Some(on_demand("c7i.large")));
    assert_eq!(ec2.spot_price_calls(), 1);
}

#[tokio::test]
async fn a_timed_out_instance_is_billed_until_mayfly_terminates_it() {
    let (w, _, _) = world();
    w.apply_examples().await;
    let id = "prairie-mutual:2027-04:remittance";
    w.submit(&request(id, "prairie-mutual", "remittance", "2027-04", 1))
        .await;
    w.tick(t0()).await;
    let (iid, launched) = w.running_on(id).await;
    // Never reports `started`: past the boot timeout a pass terminates it.
    let later = launched + Duration::hours(1);
    w.tick(later).await;
    assert_eq!(
        w.instance("fake", &iid).await.state,
        InstanceState::Terminated
    );
    let job = w.job(id).await;
    let a = job.attempts.iter().find(|a| a.number == 1).unwrap();
    assert_eq!(a.ended_at, Some(later));
    let r = cost_report::build(&[job], Catalog::shipped(), &Query::default(), later);
    let line = r.attempts.iter().find(|l| l.attempt == 1).unwrap();
    assert_eq!(line.billing_end, BillingEnd::Ended);
    assert_eq!(line.cost.billed_seconds, 3600);
    assert_eq!(line.cost.productive_seconds, 0);
}
