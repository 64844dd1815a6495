//! The cost report's HTML page in headless Chromium, without the emulator: a month-end
//! workload of three payers over three days renders one stacked bar (productive + overhead)
//! per payer per day, without script errors, and a screenshot that is not blank.

mod support;

use chrono::{Duration, TimeZone, Utc};
use mayfly::catalog::Catalog;
use mayfly::cost_report::{self, Query};
use mayfly::job::{Attempt, Job, JobRequest, JobState, PriceSource};
use mayfly::profile::CapacityType;
use mayfly::sizing::Rung;

fn job(payer: &str, day: u32, hours: i64, itype: &str, price: f64, state: JobState) -> Job {
    let launched = Utc.with_ymd_and_hms(2026, 11, day, 6, 0, 0).unwrap();
    let req = JobRequest {
        job_id: format!("{payer}:2026-11-{day:02}:claims"),
        payer_id: payer.into(),
        kind: "claims".into(),
        batch: format!("2026-11-{day:02}"),
        input: None,
        params: Default::default(),
        priority: None,
    };
    let mut j = Job::from_request(req, launched);
    j.state = state;
    j.attempt = 1;
    j.attempts.push(Attempt {
        number: 1,
        rung: Some(Rung {
            instance_type: itype.into(),
            subnet: "subnet-0a1b2c3d4e5f60014".into(),
            capacity: CapacityType::OnDemand,
        }),
        instance_id: Some(format!("i-{day:02}{:015x}", payer.len())),
        usd_per_hour: Some(price),
        price_source: Some(PriceSource::OnDemand),
        root_volume_gib: Some(30),
        launched_at: Some(launched),
        started_at: Some(launched + Duration::minutes(3)),
        finished_at: Some(launched + Duration::hours(hours)),
        exit_code: Some(if state == JobState::Succeeded { 0 } else { 3 }),
        ..Attempt::default()
    });
    j
}

#[test]
fn the_html_report_renders_its_chart_in_chromium() {
    let jobs = vec![
        job(
            "cedar-plan",
            20,
            3,
            "r7i.2xlarge",
            0.5292,
            JobState::Succeeded,
        ),
        job(
            "harbor-health",
            20,
            1,
            "m7i.large",
            0.1008,
            JobState::Succeeded,
        ),
        job("cedar-plan", 21, 2, "r7i.2xlarge", 0.5292, JobState::Dead),
        job(
            "prairie-mutual",
            21,
            5,
            "t4g.small",
            0.0168,
            JobState::Succeeded,
        ),
        job(
            "harbor-health",
            22,
            4,
            "c6i.4xlarge",
            0.68,
            JobState::Succeeded,
        ),
        job(
            "prairie-mutual",
            22,
            1,
            "t4g.small",
            0.0168,
            JobState::Succeeded,
        ),
    ];
    let at = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap();
    let report = cost_report::build(&jobs, Catalog::shipped(), &Query::default(), at);
    assert_eq!(report.payer_days.len(), 6);
    let work = std::env::temp_dir().join(format!("mayfly-cost-html-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let html = work.join("cost.html");
    std::fs::write(&html, report.to_html()).unwrap();
    support::cost_check::check_html_renders(&html, report.payer_days.len(), &work);
    std::fs::remove_dir_all(&work).ok();
}
