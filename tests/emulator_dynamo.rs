//! The DynamoDB adapters against the emulator (moto), in the tables the infra template
//! creates: conditional writes on the config table and the job ledger, index queries that
//! follow every page, and corrupt ledger items that are reported by `get` but never stop a
//! scan.

mod support;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, TimeZone, Utc};
use mayfly::aws::dynamo::{DynamoConfigStore, DynamoLedger};
use mayfly::aws::Clients;
use mayfly::job::{Job, JobRequest, JobState};
use mayfly::names::Names;
use mayfly::ports::{ConfigStore, Ledger, StoreError};
use mayfly::profile::PayerProfile;

/// A fresh deployment and SDK clients (counting their calls) for one test.
async fn deployment(prefix: &str) -> (Names, Clients) {
    let name = support::unique_name(prefix);
    support::deploy(&name);
    let sdk = support::sdk_config().await;
    (Names::new(name), Clients::new(&sdk))
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 6, 0, 0).unwrap()
}

/// A job under the id given (the adapter stores whatever id a job has; mayfly's are
/// `payer/job_id`, a ledger from before ids were per payer holds bare ones).
fn job(job_id: &str, payer: &str, batch: &str, submitted_at: DateTime<Utc>) -> Job {
    let req = JobRequest {
        job_id: job_id.into(),
        payer_id: payer.into(),
        kind: "claims".into(),
        batch: batch.into(),
        input: None,
        params: Default::default(),
        priority: None,
    };
    Job {
        job_id: job_id.into(),
        ..Job::from_request(req, submitted_at)
    }
}

fn profile(payer_id: &str, priority: u8) -> PayerProfile {
    let text = format!(
        r#"
payer_id = "{payer_id}"
priority = {priority}

[caps]
max_instances = 2
max_vcpus = 16

[launch]
image_id = "ami-0a1b2c3d4e5f60003"
subnets = ["subnet-0a1b2c3d4e5f60014"]
security_groups = ["sg-0a1b2c3d4e5f60023"]
instance_profile = "mayfly-instance"

[timeouts]
boot = "8m"
heartbeat = "5m"
max_runtime = "4h"

[kinds.claims]
tier = 0
command = ["payer-etl", "load-claims"]
compute = {{ instance_types = ["m5.large"] }}
"#
    );
    PayerProfile::from_toml(payer_id, &text).expect("test profile parses")
}

/// Queries (attempts included) the clients have made so far.
fn queries(clients: &Clients) -> u64 {
    clients
        .calls
        .snapshot()
        .iter()
        .filter(|(op, _)| op.ends_with(".Query"))
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test]
async fn create_is_a_no_op_when_the_job_exists() {
    let (names, clients) = deployment("dyn-create").await;
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), names.jobs_table());
    let original = job("j-1", "acme", "b1", t0());
    assert_eq!(ledger.create(&original).await, Ok(true));

    let mut resent = original.clone();
    resent.kind = "members".into();
    assert_eq!(ledger.create(&resent).await, Ok(false));
    assert_eq!(ledger.get("j-1").await, Ok(Some(original)));
    assert_eq!(ledger.get("j-missing").await, Ok(None));
}

#[tokio::test]
async fn update_with_a_stale_version_conflicts_and_writes_nothing() {
    let (names, clients) = deployment("dyn-update").await;
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), names.jobs_table());
    let mut job = job("j-1", "acme", "b1", t0());
    assert_eq!(ledger.create(&job).await, Ok(true));

    job.transition(JobState::Launching, None, t0()).unwrap();
    ledger.update(&job, 0).await.expect("update at version 0");
    let stored = ledger.get("j-1").await.unwrap().expect("job exists");
    assert_eq!(stored, job);
    assert_eq!(stored.version, 1);

    // A second scheduler still holding version 0 loses, and changes nothing.
    let mut stale = job.clone();
    stale.version = 0;
    stale
        .transition(JobState::Cancelled, Some("operator".into()), t0())
        .unwrap();
    let err = ledger.update(&stale, 0).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("version 1")),
        "{err}"
    );
    assert_eq!(ledger.get("j-1").await, Ok(Some(job.clone())));
    assert_eq!(ledger.by_state(JobState::Cancelled).await, Ok(vec![]));

    // An update never creates a job.
    let ghost = self::job("j-ghost", "acme", "b1", t0());
    assert!(matches!(
        ledger.update(&ghost, 0).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(ledger.get("j-ghost").await, Ok(None));
}

#[tokio::test]
async fn by_state_follows_every_page_oldest_first() {
    let (names, clients) = deployment("dyn-state").await;
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), names.jobs_table()).with_page_size(7);
    // Inserted out of submission order; ids do not sort like times either.
    let mut expected = Vec::new();
    for i in 0..120u32 {
        let minutes = i64::from((i * 37) % 120);
        let submitted = t0() + Duration::minutes(minutes) + Duration::microseconds(250);
        let j = job(&format!("q-{:03}", 119 - i), "acme", "b1", submitted);
        assert_eq!(ledger.create(&j).await, Ok(true));
        expected.push(j);
    }
    for i in 0..5 {
        let mut j = job(&format!("r-{i}"), "acme", "b1", t0());
        j.transition(JobState::Launching, None, t0()).unwrap();
        assert_eq!(ledger.create(&j).await, Ok(true));
    }
    expected.sort_by_key(|j| j.submitted_at);

    let before = queries(&clients);
    let queued = ledger.by_state(JobState::Queued).await.expect("by_state");
    assert_eq!(queued, expected);
    assert!(
        queries(&clients) - before >= 120 / 7,
        "pages of 7 take at least 18 queries, made {}",
        queries(&clients) - before
    );

    let unpaged = DynamoLedger::new(clients.dynamodb.clone(), names.jobs_table());
    assert_eq!(unpaged.by_state(JobState::Queued).await, Ok(expected));
    assert_eq!(
        unpaged.by_state(JobState::Launching).await.unwrap().len(),
        5
    );
    assert_eq!(unpaged.by_state(JobState::Dead).await, Ok(vec![]));
}

#[tokio::test]
async fn by_batch_returns_one_payer_batch_by_job_id() {
    let (names, clients) = deployment("dyn-batch").await;
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), names.jobs_table()).with_page_size(2);
    for (id, payer, batch) in [
        ("c-3", "acme", "2026-11-01"),
        ("c-1", "acme", "2026-11-01"),
        ("c-9", "acme", "2026-12-01"),
        ("c-2", "acme", "2026-11-01"),
        ("c-5", "acme", "2026-11-01"),
        ("c-4", "zenith", "2026-11-01"),
    ] {
        assert_eq!(ledger.create(&job(id, payer, batch, t0())).await, Ok(true));
    }
    let ids = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.job_id).collect::<Vec<_>>();
    let batch = ledger
        .by_batch("acme", "2026-11-01")
        .await
        .expect("by_batch");
    assert_eq!(ids(batch), ["c-1", "c-2", "c-3", "c-5"]);
    let other = ledger.by_batch("zenith", "2026-11-01").await.unwrap();
    assert_eq!(ids(other), ["c-4"]);
    assert_eq!(ledger.by_batch("acme", "2027-01-01").await, Ok(vec![]));
}

#[tokio::test]
async fn a_corrupt_job_is_skipped_by_scans_and_reported_by_get() {
    let (names, clients) = deployment("dyn-corrupt").await;
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), names.jobs_table()).with_page_size(2);
    let good: Vec<Job> = (0..3)
        .map(|i| job(&format!("g-{i}"), "acme", "b1", t0() + Duration::seconds(i)))
        .collect();
    for j in &good {
        assert_eq!(ledger.create(j).await, Ok(true));
    }
    // An item someone wrote by hand: right keys, a document that is not a job.
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let item = HashMap::from([
        ("job_id".to_owned(), s("g-bad")),
        ("state".to_owned(), s("queued")),
        ("submitted_at".to_owned(), s("2026-11-01T06:00:00.500000Z")),
        ("payer_batch".to_owned(), s("acme#b1")),
        ("version".to_owned(), AttributeValue::N("0".into())),
        ("doc".to_owned(), s("{\"job_id\": \"g-bad\", \"state\": ")),
    ]);
    clients
        .dynamodb
        .put_item()
        .table_name(names.jobs_table())
        .set_item(Some(item))
        .send()
        .await
        .expect("put a corrupt item");

    assert_eq!(ledger.by_state(JobState::Queued).await, Ok(good.clone()));
    assert_eq!(ledger.by_batch("acme", "b1").await, Ok(good));
    let err = ledger.get("g-bad").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { key, .. } if key == "g-bad"),
        "{err}"
    );
    // The good ones stay readable one by one too.
    assert!(ledger.get("g-0").await.unwrap().is_some());
}

#[tokio::test]
async fn config_writes_are_conditional_on_the_version() {
    let (names, clients) = deployment("dyn-config").await;
    let store = DynamoConfigStore::new(clients.dynamodb.clone(), names.payers_table());
    let now = t0();
    let acme = profile("acme", 50);

    assert_eq!(store.get("acme").await, Ok(None));
    assert_eq!(store.put(&acme, None, now).await, Ok(1));
    // Creating again, or writing at a version that is not stored, loses.
    assert!(matches!(
        store.put(&acme, None, now).await,
        Err(StoreError::Conflict(_))
    ));
    let changed = profile("acme", 70);
    assert!(matches!(
        store.put(&changed, Some(5), now).await,
        Err(StoreError::Conflict(_))
    ));
    let stored = store.get("acme").await.unwrap().expect("row exists");
    assert_eq!(
        (
            stored.profile,
            stored.version,
            stored.paused,
            stored.updated_at
        ),
        (acme.clone(), 1, None, now)
    );

    let later = now + Duration::milliseconds(1500);
    assert_eq!(store.put(&changed, Some(1), later).await, Ok(2));
    let stored = store.get("acme").await.unwrap().unwrap();
    assert_eq!((stored.profile.priority, stored.updated_at), (70, later));

    // Pausing bumps the version; applying a profile keeps the pause.
    assert_eq!(
        store
            .set_paused("acme", Some("claims feed late"), 2, later)
            .await,
        Ok(3)
    );
    assert!(matches!(
        store.set_paused("acme", None, 2, later).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.put(&acme, Some(3), later).await, Ok(4));
    let stored = store.get("acme").await.unwrap().unwrap();
    assert_eq!(stored.paused.as_deref(), Some("claims feed late"));
    assert_eq!((stored.profile.priority, stored.version), (50, 4));

    assert_eq!(store.set_paused("acme", None, 4, later).await, Ok(5));
    let stored = store.get("acme").await.unwrap().unwrap();
    assert_eq!((stored.paused, stored.version), (None, 5));

    // A payer that does not exist cannot be paused.
    assert!(matches!(
        store.set_paused("nobody", Some("x"), 1, later).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.get("nobody").await, Ok(None));
}

#[tokio::test]
async fn a_circuit_breaker_pause_is_told_from_an_operators() {
    let (names, clients) = deployment("dyn-breaker").await;
    let store = DynamoConfigStore::new(clients.dynamodb.clone(), names.payers_table());
    let now = t0();
    assert_eq!(store.put(&profile("acme", 50), None, now).await, Ok(1));
    assert_eq!(
        store
            .breaker_pause("acme", "launch refused: InvalidAMIID.NotFound", 1, now)
            .await,
        Ok(2)
    );
    let row = store.get("acme").await.unwrap().unwrap();
    assert!(row.paused_by_breaker);
    assert_eq!(
        row.paused.as_deref(),
        Some("launch refused: InvalidAMIID.NotFound")
    );
    // Applying a profile keeps the pause and who made it (the CLI lifts it on a change).
    assert_eq!(store.put(&profile("acme", 60), Some(2), now).await, Ok(3));
    assert!(store.get("acme").await.unwrap().unwrap().paused_by_breaker);
    // An operator's pause replaces it, and is the operator's.
    assert_eq!(store.set_paused("acme", Some("audit"), 3, now).await, Ok(4));
    let row = store.get("acme").await.unwrap().unwrap();
    assert!(!row.paused_by_breaker);
    assert_eq!(row.paused.as_deref(), Some("audit"));
    // Resuming clears both.
    assert_eq!(store.breaker_pause("acme", "again", 4, now).await, Ok(5));
    assert_eq!(store.set_paused("acme", None, 5, now).await, Ok(6));
    let row = store.get("acme").await.unwrap().unwrap();
    assert_eq!((row.paused, row.paused_by_breaker), (None, false));
    // Conditional like every write.
    assert!(matches!(
        store.breaker_pause("acme", "stale", 5, now).await,
        Err(StoreError::Conflict(_))
    ));
}

#[tokio::test]
async fn config_list_reads_every_page_sorted_by_payer() {
    let (names, clients) = deployment("dyn-list").await;
    let store =
        DynamoConfigStore::new(clients.dynamodb.clone(), names.payers_table()).with_page_size(2);
    assert_eq!(store.list().await, Ok(vec![]));
    let ids = ["prairie", "acme", "zenith", "cedar", "harbor"];
    for id in ids {
        assert_eq!(store.put(&profile(id, 50), None, t0()).await, Ok(1));
    }
    assert_eq!(
        store.set_paused("cedar", Some("audit"), 1, t0()).await,
        Ok(2)
    );
    let listed = store.list().await.expect("list");
    let got: Vec<(&str, u64, Option<&str>)> = listed
        .iter()
        .map(|p| (p.profile.payer_id.as_str(), p.version, p.paused.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("acme", 1, None),
            ("cedar", 2, Some("audit")),
            ("harbor", 1, None),
            ("prairie", 1, None),
            ("zenith", 1, None),
        ]
    );

    // A row written by hand with a profile that does not parse: reported by `get`, and
    // skipped by `list` so the other payers keep being scheduled.
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let item = HashMap::from([
        ("payer_id".to_owned(), s("broken")),
        ("profile".to_owned(), s("{\"payer_id\": \"broken\"}")),
        ("version".to_owned(), AttributeValue::N("1".into())),
        ("updated_at".to_owned(), s("2026-11-01T06:00:00Z")),
    ]);
    clients
        .dynamodb
        .put_item()
        .table_name(names.payers_table())
        .set_item(Some(item))
        .send()
        .await
        .expect("put a corrupt row");
    let err = store.get("broken").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { key, .. } if key == "broken"),
        "{err}"
    );
    assert_eq!(store.list().await, Ok(listed));
}

/// `job` as it ends: one attempt on an instance launched at `launched`, finished at `end`.
fn ended(mut j: Job, state: JobState, launched: DateTime<Utc>, end: DateTime<Utc>) -> Job {
    j.state = state;
    j.attempt = 1;
    j.attempts = vec![mayfly::job::Attempt {
        number: 1,
        instance_id: Some("i-0a1b2c3d4e5f60001".into()),
        usd_per_hour: Some(0.096),
        launched_at: Some(launched),
        finished_at: Some(end),
        ..Default::default()
    }];
    j.updated_at = Some(end);
    j
}

#[tokio::test]
async fn blockers_and_settled_days_follow_the_state_on_every_write() {
    let (names, clients) = deployment("dyn-sparse").await;
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), names.jobs_table());
    let day = t0().date_naive();
    let late = t0() + Duration::hours(17) + Duration::minutes(50); // 23:50
    let a = job("a", "acme", "b1", t0());
    assert_eq!(ledger.create(&a).await, Ok(true));
    assert_eq!(ledger.blockers("acme", "b1").await, Ok(vec![]));
    assert_eq!(ledger.settled_on(day, None).await, Ok(vec![]));

    // Dead: a blocker of its batch, settled the day after (its bill ran past midnight).
    let mut dead = ended(
        a.clone(),
        JobState::Dead,
        late,
        late + Duration::minutes(20),
    );
    dead.version = 1;
    ledger.update(&dead, 0).await.expect("dead");
    assert_eq!(ledger.blockers("acme", "b1").await, Ok(vec![dead.clone()]));
    assert_eq!(ledger.blockers("acme", "b2").await, Ok(vec![]));
    assert_eq!(ledger.settled_on(day, None).await, Ok(vec![]));
    let next = day.succ_opt().unwrap();
    assert_eq!(ledger.settled_on(next, None).await, Ok(vec![dead.clone()]));
    // Only jobs whose bill began before the bound.
    assert_eq!(ledger.settled_on(next, Some(late)).await, Ok(vec![]));
    assert_eq!(
        ledger
            .settled_on(next, Some(late + Duration::seconds(1)))
            .await,
        Ok(vec![dead.clone()])
    );

    // Retried: queued again, in neither sparse index.
    let mut retried = dead.clone();
    retried.state = JobState::Queued;
    retried.version = 2;
    ledger.update(&retried, 1).await.expect("retry");
    assert_eq!(ledger.blockers("acme", "b1").await, Ok(vec![]));
    assert_eq!(ledger.settled_on(next, None).await, Ok(vec![]));
}

#[tokio::test]
async fn a_page_reads_from_since_up_to_the_limit() {
    let (names, clients) = deployment("dyn-page").await;
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), names.jobs_table()).with_page_size(2);
    let jobs: Vec<Job> = (0..8)
        .map(|i| {
            let payer = if i % 2 == 0 { "acme" } else { "zenith" };
            job(&format!("p-{i}"), payer, "b1", t0() + Duration::minutes(i))
        })
        .collect();
    for j in &jobs {
        assert_eq!(ledger.create(j).await, Ok(true));
    }
    let page = |payer: Option<&str>, since: Option<i64>, before: Option<i64>, limit| {
        mayfly::ports::PageQuery {
            state: JobState::Queued,
            payer: payer.map(str::to_owned),
            since: since.map(|m| t0() + Duration::minutes(m)),
            before: before.map(|m| t0() + Duration::minutes(m)),
            limit,
        }
    };
    let ids = |v: Vec<Job>| v.into_iter().map(|j| j.job_id).collect::<Vec<_>>();
    let before = queries(&clients);
    assert_eq!(
        ids(ledger.page(&page(None, Some(3), None, 2)).await.unwrap()),
        ["p-3", "p-4"]
    );
    assert_eq!(queries(&clients) - before, 1, "one page of two was enough");
    assert_eq!(
        ids(ledger
            .page(&page(Some("acme"), Some(1), None, 2))
            .await
            .unwrap()),
        ["p-2", "p-4"]
    );
    assert_eq!(
        ids(ledger
            .page(&page(None, Some(5), Some(7), 10))
            .await
            .unwrap()),
        ["p-5", "p-6"]
    );
    assert_eq!(
        ids(ledger.page(&page(None, None, Some(2), 10)).await.unwrap()),
        ["p-0", "p-1"]
    );
}

#[tokio::test]
async fn the_backfill_gives_old_items_their_keys_once_and_resumes() {
    let (names, clients) = deployment("dyn-backfill").await;
    let table = names.jobs_table();
    let day = t0().date_naive();
    // Terminal items as written before the indexes: no blocker or settled-day keys.
    let old: Vec<Job> = (0..5)
        .map(|i| {
            let state = if i == 0 {
                JobState::Dead
            } else {
                JobState::Succeeded
            };
            let launched = t0() + Duration::minutes(i);
            let mut j = ended(
                job(&format!("o-{i}"), "acme", "b1", launched),
                state,
                launched,
                launched + Duration::minutes(5),
            );
            j.version = 3;
            j
        })
        .collect();
    for j in &old {
        let mut item = mayfly::aws::dynamo::ledger_item(j, Default::default()).expect("item");
        for key in ["blocker_batch", "settled_day", "billed_from", "expires_at"] {
            item.remove(key);
        }
        clients
            .dynamodb
            .put_item()
            .table_name(&table)
            .set_item(Some(item))
            .send()
            .await
            .expect("put an old item");
    }
    let queued = job("q-0", "acme", "b1", t0());
    let plain = DynamoLedger::new(clients.dynamodb.clone(), table.clone());
    assert_eq!(plain.create(&queued).await, Ok(true));
    assert_eq!(
        plain.settled_on(day, None).await,
        Ok(vec![]),
        "not indexed yet"
    );

    let ledger = DynamoLedger::new(clients.dynamodb.clone(), table.clone())
        .with_retention(mayfly::ledger_index::Retention { days: Some(30) });
    // Two items a page, resumed from each page's last key.
    let (mut next, mut updated, mut scanned) = (None::<String>, 0, 0);
    loop {
        let page = ledger
            .backfill_page(next.as_deref(), 2)
            .await
            .expect("page");
        updated += page.updated;
        scanned += page.scanned;
        next = page.next;
        if next.is_none() {
            break;
        }
    }
    assert_eq!(
        (scanned, updated),
        (6, 5),
        "every terminal item, not the queued one"
    );
    let mut settled = plain.settled_on(day, None).await.expect("settled");
    settled.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    assert_eq!(settled, old);
    assert_eq!(plain.blockers("acme", "b1").await, Ok(vec![old[0].clone()]));
    let item = clients
        .dynamodb
        .get_item()
        .table_name(&table)
        .key("job_id", AttributeValue::S("o-1".into()))
        .send()
        .await
        .expect("get");
    let expires = item
        .item()
        .and_then(|i| i.get("expires_at"))
        .and_then(|v| v.as_n().ok());
    let want = (old[1].updated_at.unwrap() + Duration::days(30))
        .timestamp()
        .to_string();
    assert_eq!(expires, Some(&want));

    // A second run writes nothing.
    let again = ledger.backfill_page(None, 100).await.expect("again");
    assert_eq!((again.scanned, again.updated, again.next), (6, 0, None));
}
