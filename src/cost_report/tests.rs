use chrono::{Duration, TimeZone, Utc};

use super::*;
use crate::job::{Attempt, JobState, PriceSource};
use crate::profile::CapacityType;
use crate::sizing::Rung;

fn at(day: u32, s: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, 9, 0, 0).unwrap() + Duration::seconds(s)
}

/// A job of `payer` whose one attempt ran `secs` on an m5.large launched on `day`.
fn job(id: &str, payer: &str, day: u32, secs: i64, state: JobState) -> Job {
    let attempt = Attempt {
        number: 1,
        rung: Some(Rung {
            instance_type: "m5.large".into(),
            subnet: "subnet-1".into(),
            capacity: CapacityType::OnDemand,
        }),
        instance_id: Some(format!("i-{id}")),
        usd_per_hour: Some(0.096),
        price_source: Some(PriceSource::OnDemand),
        root_volume_gib: Some(0),
        launched_at: Some(at(day, 0)),
        started_at: Some(at(day, 0)),
        finished_at: Some(at(day, secs)),
        exit_code: Some(0),
        ..Attempt::default()
    };
    Job {
        job_id: id.into(),
        payer_id: payer.into(),
        kind: "claims".into(),
        batch: format!("2026-11-{day:02}"),
        state,
        priority: 0,
        submitted_at: at(day, 0),
        input: None,
        params: Default::default(),
        attempt: 1,
        attempt_base: 0,
        not_before: None,
        reason: None,
        version: 3,
        attempts: vec![attempt],
        bounces: 0,
        profile_refused_since: None,
        updated_at: None,
    }
}

fn jobs() -> Vec<Job> {
    vec![
        job("a", "acme", 20, 3600, JobState::Succeeded),
        job("b", "acme", 21, 1800, JobState::Succeeded),
        job("c", "cedar", 21, 30, JobState::Dead),
    ]
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn totals_are_the_sum_over_attempts_and_groups() {
    let r = build(&jobs(), Catalog::shipped(), &Query::default(), at(22, 0));
    // 1 h + 0.5 h of m5.large, and the dead job's 30 s billed as the 60 s minimum.
    assert!(close(r.totals.total_usd, 0.096 + 0.048 + 0.0016));
    assert!(close(r.totals.overhead_usd, 0.0016));
    let groups: f64 = r.groups.iter().map(|g| g.totals.total_usd).sum();
    assert!(close(groups, r.totals.total_usd));
    let attempts: f64 = r.attempts.iter().map(|a| a.cost.total_usd()).sum();
    assert!(close(attempts, r.totals.total_usd));
    assert_eq!(
        r.groups.iter().map(|g| g.key.as_str()).collect::<Vec<_>>(),
        ["acme", "cedar"]
    );
    assert_eq!(r.groups[0].jobs, 2);
    assert_eq!(r.payer_days.len(), 3);
}

#[test]
fn range_payer_and_day_filters_pick_attempts_by_launch() {
    let q = Query {
        from: Some(at(21, 0)),
        to: Some(at(22, 0)),
        payer: Some("acme".into()),
        by: GroupBy::Day,
    };
    let r = build(&jobs(), Catalog::shipped(), &q, at(22, 0));
    assert_eq!(r.totals.attempts, 1);
    assert_eq!(r.groups.len(), 1);
    assert_eq!(r.groups[0].key, "2026-11-21");
    assert!(close(r.totals.total_usd, 0.048));
}

#[test]
fn csv_has_one_row_per_group_and_quotes_awkward_keys() {
    let mut js = jobs();
    js[0].job_id = "odd,\"id\"".into();
    let q = Query {
        by: GroupBy::Job,
        ..Query::default()
    };
    let r = build(&js, Catalog::shipped(), &q, at(22, 0));
    let csv = r.to_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + r.groups.len());
    assert!(lines[0].starts_with("key,jobs,attempts"));
    assert!(csv.contains("\"odd,\"\"id\"\"\""), "{csv}");
}

#[test]
fn text_and_html_show_the_totals() {
    let r = build(&jobs(), Catalog::shipped(), &Query::default(), at(22, 0));
    let text = r.to_string();
    assert!(text.contains("Total $0.1456 over 3 attempt(s)"), "{text}");
    assert!(text.contains("TOTAL"), "{text}");
    let html = r.to_html();
    assert!(html.contains("<svg id=\"chart\""));
    assert!(html.contains("\"payer_id\":\"cedar\""));
    assert!(!html.contains(" src=") && !html.contains(" href="));
}
