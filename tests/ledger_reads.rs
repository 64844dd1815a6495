//! What the ledger's readers read, against the in-memory ledger (which counts what DynamoDB
//! would examine: the items whose index keys match, never the table) seeded with a generated
//! history of days: the answers are those of a full read, and the reads follow the work.

use chrono::{DateTime, Duration, Utc};
use mayfly::catalog::Catalog;
use mayfly::cost_report::{self, GroupBy, Query};
use mayfly::fakes::history::History;
use mayfly::fakes::{FakeConfigStore, FakeLedger};
use mayfly::job::{Attempt, Job, JobState, PriceSource};
use mayfly::ledger_index;
use mayfly::metrics::{load_today, LedgerGauges};
use mayfly::ports::{Ledger, PageQuery};
use mayfly::profile::CapacityType;
use mayfly::scheduler::{load_snapshot, ACTIVE};
use mayfly::sizing::Rung;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("test timestamp")
}

fn now() -> DateTime<Utc> {
    at("2026-12-07T12:00:00Z")
}

fn history() -> History {
    History {
        terminal: 2_000,
        days: 10,
        waiting: 60,
        in_flight: 6,
        payers: 7,
        now: now(),
    }
}

/// A job still running whose instance was launched yesterday evening, and a dead job whose
/// instance ran across midnight two days ago and was terminated (ended) after it.
fn across_midnight() -> [Job; 2] {
    let attempt = |launched: &str| Attempt {
        number: 1,
        rung: Some(Rung {
            instance_type: "m7i.xlarge".into(),
            subnet: "subnet-0a1b2c3d4e5f60011".into(),
            capacity: CapacityType::OnDemand,
        }),
        instance_id: Some(format!("i-0a1b2c3d4e5f{:05}", launched.len())),
        usd_per_hour: Some(0.2016),
        price_source: Some(PriceSource::OnDemand),
        root_volume_gib: Some(50),
        launched_at: Some(at(launched)),
        started_at: Some(at(launched) + Duration::seconds(45)),
        ..Attempt::default()
    };
    let job = |id: &str, state: JobState, a: Attempt| Job {
        job_id: id.into(),
        payer_id: "payer-001".into(),
        kind: "claims".into(),
        batch: "night".into(),
        state,
        priority: 0,
        submitted_at: a.launched_at.expect("launched") - Duration::seconds(30),
        input: None,
        params: Default::default(),
        attempt: 1,
        attempt_base: 0,
        not_before: None,
        reason: None,
        version: 3,
        attempts: vec![a],
        bounces: 0,
        profile_refused_since: None,
        updated_at: Some(now() - Duration::hours(1)),
    };
    let running = job(
        "payer-001:night:running",
        JobState::Running,
        attempt("2026-12-06T22:30:00Z"),
    );
    let mut ended = attempt("2026-12-04T23:40:00.250Z");
    ended.ended_at = Some(at("2026-12-05T00:35:00Z"));
    let mut dead = job("payer-001:night:dead", JobState::Dead, ended);
    dead.updated_at = Some(at("2026-12-05T00:35:01Z"));
    [running, dead]
}

async fn seeded() -> (FakeLedger, Vec<Job>) {
    let h = history();
    let ledger = FakeLedger::new();
    let mut all: Vec<Job> = (0..h.total()).map(|k| h.job(&h.spec(k))).collect();
    all.extend(across_midnight());
    for job in &all {
        assert!(ledger.create(job).await.expect("create"), "{}", job.job_id);
    }
    (ledger, all)
}

fn json(report: &cost_report::CostReport) -> serde_json::Value {
    serde_json::to_value(report).expect("report serializes")
}

#[tokio::test]
async fn a_report_over_a_range_equals_the_report_from_a_full_read() {
    let (ledger, all) = seeded().await;
    let day = |d: &str| at(&format!("{d}T00:00:00Z"));
    let ranges = [
        (Some(day("2026-12-06")), Some(day("2026-12-07"))),
        (Some(day("2026-12-05")), Some(day("2026-12-06"))),
        (Some(day("2026-12-04")), Some(day("2026-12-05"))),
        (Some(day("2026-11-28")), Some(day("2026-12-08"))),
        (
            Some(at("2026-12-04T23:30:00Z")),
            Some(at("2026-12-05T00:10:00Z")),
        ),
        (Some(at("2026-12-06T22:00:00Z")), None),
        (Some(day("2026-12-07")), None),
        (Some(day("2026-12-01")), Some(day("2026-12-03"))),
        (None, Some(day("2026-12-03"))),
        (None, None),
    ];
    for (from, to) in ranges {
        for (payer, by) in [(None, GroupBy::Day), (Some("payer-001"), GroupBy::Job)] {
            let query = Query {
                from,
                to,
                payer: payer.map(str::to_owned),
                by,
            };
            let read = cost_report::read_jobs(&ledger, &query, now())
                .await
                .expect("read");
            let ranged = cost_report::build(&read, Catalog::shipped(), &query, now());
            let full = cost_report::build(&all, Catalog::shipped(), &query, now());
            assert!(full.totals.attempts > 0 || to.is_some(), "{from:?} {to:?}");
            assert_eq!(json(&ranged), json(&full), "{from:?}..{to:?} {payer:?}");
        }
    }
}

#[tokio::test]
async fn a_one_day_report_reads_at_most_twice_the_jobs_billed_that_day() {
    let (ledger, all) = seeded().await;
    let query = Query {
        from: Some(at("2026-12-05T00:00:00Z")),
        to: Some(at("2026-12-06T00:00:00Z")),
        payer: None,
        by: GroupBy::Payer,
    };
    let before = ledger.reads();
    cost_report::read_jobs(&ledger, &query, now())
        .await
        .expect("read");
    let read = ledger.reads() - before;
    let billed = all
        .iter()
        .filter(|j| {
            cost_report::job_lines(j, Catalog::shipped(), now())
                .iter()
                .any(|l| l.launched_at < query.to.unwrap() && l.billed_until >= query.from.unwrap())
        })
        .count() as u64;
    assert!(billed > 150, "{billed}");
    assert!(read.items <= 2 * billed, "{read:?} for {billed} billed");
    assert!(read.items < all.len() as u64 / 4, "{read:?}");
}

#[tokio::test]
async fn gauges_read_no_terminal_job_settled_before_today_and_match_a_full_read() {
    let (ledger, all) = seeded().await;
    let config = FakeConfigStore::new();
    let before = ledger.reads();
    let gauges = LedgerGauges::load(&ledger, &config, now())
        .await
        .expect("gauges");
    let read = ledger.reads() - before;
    let midnight = at("2026-12-07T00:00:00Z");
    let active = all.iter().filter(|j| !j.state.is_terminal()).count() as u64;
    let today = all
        .iter()
        .filter(|j| ledger_index::settled_at(j).is_some_and(|t| t >= midnight))
        .count() as u64;
    assert_eq!(read.items, active + today, "{read:?}");
    let full = LedgerGauges::from_jobs(&all, &[], now());
    assert_eq!(gauges.jobs_by_state, full.jobs_by_state);
    assert_eq!(gauges.ended_today, full.ended_today);
    assert_eq!(gauges.failures_today, full.failures_today);
    assert_eq!(gauges.queued, full.queued);
    assert!((gauges.cost_today_usd - full.cost_today_usd).abs() < 1e-9);
    assert!(gauges.cost_today_usd > 0.0);
    assert!(gauges
        .ended_today
        .get("succeeded")
        .is_some_and(|&n| n > 100));
    let whole = load_today(&ledger, None, now()).await.expect("read");
    assert!(whole
        .iter()
        .all(|j| !j.state.is_terminal()
            || ledger_index::settled_at(j).is_some_and(|t| t >= midnight)));
}

#[tokio::test]
async fn a_pass_reads_its_batches_blockers_not_their_history() {
    let (ledger, all) = seeded().await;
    let before = ledger.reads();
    let snapshot = load_snapshot(&ledger).await.expect("snapshot");
    let read = ledger.reads() - before;
    let active: Vec<&Job> = all.iter().filter(|j| ACTIVE.contains(&j.state)).collect();
    let groups: std::collections::BTreeSet<(&str, &str)> = active
        .iter()
        .map(|j| (j.payer_id.as_str(), j.batch.as_str()))
        .collect();
    let blockers = all
        .iter()
        .filter(|j| ledger_index::is_blocker(j.state))
        .filter(|j| groups.contains(&(j.payer_id.as_str(), j.batch.as_str())))
        .count();
    assert!(blockers > 0);
    assert_eq!(read.items as usize, active.len() + blockers, "{read:?}");
    assert_eq!(snapshot.len(), active.len() + blockers);
    assert!(snapshot
        .iter()
        .all(|j| !j.state.is_terminal() || ledger_index::is_blocker(j.state)));
}

#[tokio::test]
async fn jobs_list_pages_from_since_and_reads_only_until_the_page_is_full() {
    let (ledger, all) = seeded().await;
    let since = at("2026-12-05T00:00:00Z");
    let q = PageQuery {
        payer: Some("payer-003".into()),
        since: Some(since),
        limit: 5,
        ..PageQuery::all(JobState::Succeeded)
    };
    let before = ledger.reads();
    let page = ledger.page(&q).await.expect("page");
    let read = ledger.reads() - before;
    let mut want: Vec<&Job> = all.iter().filter(|j| q.matches(j)).collect();
    want.sort_by_key(|j| (j.submitted_at, j.job_id.clone()));
    let want: Vec<&str> = want.iter().take(5).map(|j| j.job_id.as_str()).collect();
    let got: Vec<&str> = page.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(got, want);
    // One page of the by-state index, from `since`: not the state's whole history.
    let from_since = all
        .iter()
        .filter(|j| j.state == JobState::Succeeded && j.submitted_at >= since)
        .count() as u64;
    assert_eq!(read.pages, 1, "{read:?}");
    assert!(read.items <= from_since, "{read:?}");
}
