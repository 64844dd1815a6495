//! Checks of `mayfly cost report` against a deployment's ledger: the totals equal the sum
//! over attempts computed here from the recorded facts, the CSV parses, the JSON matches the
//! schema in `docs/cost-report.md`, and the HTML renders its chart in headless Chromium.

use std::path::Path;
use std::process::Command;

use mayfly::job::{Job, PriceSource};
use mayfly::profile::CapacityType;

use super::{mayfly, schema};

/// Headless Chromium, which the HTML check needs (scripts/test.sh installs it).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The cost of every attempt with an instance, from the ledger's facts: the recorded price,
/// per-second billing with a 60 s minimum from launch to the end of the instance, gp3 volume.
pub fn expected_total(jobs: &[Job]) -> (usize, f64) {
    let mut n = 0;
    let mut total = 0.0;
    for j in jobs {
        for a in &j.attempts {
            let (Some(_), Some(launched)) = (&a.instance_id, a.launched_at) else {
                continue;
            };
            let end = a
                .ended_at
                .or(a.finished_at)
                .or(a.gone_at)
                .expect("every attempt of a settled job recorded its end");
            let secs = ((end - launched).num_milliseconds() as f64 / 1000.0).ceil();
            let billed = secs.max(60.0);
            let price = a.usd_per_hour.expect("price recorded at launch");
            let gib = f64::from(a.root_volume_gib.expect("root volume recorded"));
            total += price * billed / 3600.0 + gib * 0.08 * billed / (730.0 * 3600.0);
            n += 1;
        }
    }
    (n, total)
}

fn run(name: &str, args: &[&str]) -> String {
    let out = mayfly(name, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "mayfly {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Runs the report in every format against deployment `name`, whose jobs have all settled.
pub fn check_cost_report(name: &str, jobs: &[Job], work: &Path) {
    // Every launched attempt recorded its price, and spot ones the spot price at launch.
    for j in jobs {
        for a in j.attempts.iter().filter(|a| a.instance_id.is_some()) {
            let spot = a.rung.as_ref().map(|r| r.capacity) == Some(CapacityType::Spot);
            match a.price_source.as_ref() {
                Some(PriceSource::OnDemand) if !spot => {}
                Some(PriceSource::Spot) if spot => {}
                // moto has spot price history for some types and AZs only (the AZ depends on
                // the emulator's subnets): without one, the on-demand price is recorded and why.
                Some(PriceSource::OnDemandFallback { why }) if spot => {
                    assert!(why.contains("NoSpotPrice"), "{} {:?}", j.job_id, a);
                }
                other => panic!("{}: price source {other:?} for {:?}", j.job_id, a),
            }
        }
    }
    let (attempts, expected) = expected_total(jobs);
    assert!(attempts >= jobs.len() && expected > 0.0);

    let full = mayfly(name, &["cost", "report", "--format", "json"]);
    let said = String::from_utf8_lossy(&full.stderr);
    assert!(said.contains("every job in the ledger"), "{said}");
    let json = run(name, &["cost", "report", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&json).expect("one JSON document");
    // A range read from the by-settled-day index answers as the full read does.
    let first = jobs
        .iter()
        .flat_map(|j| &j.attempts)
        .filter_map(|a| a.launched_at)
        .min()
        .expect("a launch");
    let from = first.date_naive().to_string();
    let to = (first.date_naive() + chrono::Duration::days(2)).to_string();
    let ranged = mayfly(
        name,
        &[
            "cost", "report", "--format", "json", "--from", &from, "--to", &to,
        ],
    );
    let said = String::from_utf8_lossy(&ranged.stderr);
    assert!(said.contains("terminal jobs settled"), "{said}");
    let mut ranged: serde_json::Value =
        serde_json::from_slice(&ranged.stdout).expect("one JSON document");
    let mut whole = doc.clone();
    for d in [&mut ranged, &mut whole] {
        for field in ["generated_at", "from", "to"] {
            d[field] = serde_json::Value::Null;
        }
    }
    assert_eq!(ranged, whole, "the range holds every attempt");
    let spec = std::fs::read_to_string(super::path("docs/cost-report.md")).expect("the doc");
    schema::assert_matches_doc(&spec, &doc);
    let total = doc["totals"]["total_usd"].as_f64().expect("total");
    assert!(
        (total - expected).abs() < 1e-9,
        "report total {total} != {expected} over attempts"
    );
    assert_eq!(doc["totals"]["attempts"].as_u64(), Some(attempts as u64));
    let listed: f64 = doc["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| {
            a["cost"]["compute_usd"].as_f64().unwrap() + a["cost"]["volume_usd"].as_f64().unwrap()
        })
        .sum();
    assert!((listed - total).abs() < 1e-9);

    let csv_text = run(name, &["cost", "report", "--format", "csv", "--by", "job"]);
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header = reader.headers().expect("a header").clone();
    let col = |n: &str| header.iter().position(|h| h == n).expect(n);
    let (key, sum_col) = (col("key"), col("total_usd"));
    let mut rows = 0;
    let mut csv_total = 0.0;
    for record in reader.records() {
        let record = record.expect("a well-formed CSV row");
        assert!(jobs.iter().any(|j| j.job_id == record[key]), "{record:?}");
        csv_total += record[sum_col].parse::<f64>().expect("a number");
        rows += 1;
    }
    assert_eq!(rows, jobs.len());
    assert!(
        (csv_total - total).abs() < 1e-6 * rows as f64,
        "{csv_total} vs {total}"
    );

    let html = work.join("cost.html");
    let html_arg = html.display().to_string();
    run(
        name,
        &["cost", "report", "--format", "html", "--out", &html_arg],
    );
    let bars = doc["payer_days"].as_array().expect("payer days").len();
    check_html_renders(&html, bars, work);
}

/// Opens the page in headless Chromium: the chart rendered `bars` bars of two segments each,
/// no script error, and a screenshot that is not blank.
pub fn check_html_renders(html: &Path, bars: usize, work: &Path) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install the Debian package `chromium` (scripts/test.sh does)"
    );
    let url = format!("file://{}", html.display());
    let chromium = |extra: &[String]| {
        let profile = tempdir(work, "chromium-profile");
        let out = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let dom = String::from_utf8(chromium(&["--dump-dom".into()]).stdout).expect("UTF-8 DOM");
    assert!(
        dom.contains("data-rendered=\"true\""),
        "chart not rendered:\n{dom}"
    );
    assert!(dom.contains(&format!("data-bars=\"{bars}\"")), "{dom}");
    assert_eq!(dom.matches("class=\"seg\"").count(), 2 * bars, "{dom}");
    assert_eq!(dom.matches("data-part=\"overhead\"").count(), bars);
    assert!(
        dom.contains("<div id=\"errors\" class=\"errors\" hidden=\"\"></div>"),
        "the page reported errors:\n{dom}"
    );

    let png = work.join("cost.png");
    chromium(&[
        format!("--screenshot={}", png.display()),
        "--window-size=1200,900".into(),
    ]);
    let bytes = std::fs::read(&png).expect("a screenshot");
    assert!(
        !super::screenshot::is_blank(&bytes),
        "the screenshot is blank"
    );
    // To look at it: MAYFLY_KEEP_SCREENSHOT=/tmp/cost.png cargo test --test lifecycle
    if let Some(keep) = std::env::var_os("MAYFLY_KEEP_SCREENSHOT") {
        std::fs::copy(&png, keep).expect("keep the screenshot");
    }
}

fn tempdir(work: &Path, name: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = work.join(format!("{name}-{n}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
