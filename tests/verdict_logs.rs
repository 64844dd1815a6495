//! Each path that ends an attempt without its `finished` event logs the evidence it judged on
//! and counts (`mayfly_verdicts_total`, `reaps`, `launches_found_gone`). Alone in its test
//! binary: tracing caches whether a log line is wanted per call site, process-wide, so a
//! subscriber set for one test thread can miss lines while other tests run.

mod support;

use std::sync::{Arc, Mutex};

use chrono::Duration;
use mayfly::fakes::FakeCompute;
use mayfly::ports::InstanceState;
use support::world::{on_fakes, request, t0, Fault, FaultyCompute, World};

/// Log lines at WARN and above, captured for one test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn each_verdict_path_logs_its_evidence_and_counts() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let ec2 = Arc::new(FakeCompute::new());
    let w = World {
        compute: Arc::new(FaultyCompute::new(ec2.clone())),
        ..on_fakes()
    };
    w.apply_examples().await;
    let lost = "cedar-plan:2029-02:eligibility";
    let late = "cedar-plan:2029-03:eligibility";
    let gone_early = "cedar-plan:2029-04:eligibility";
    for (id, batch) in [(lost, "2029-02"), (late, "2029-03")] {
        w.submit(&request(id, "cedar-plan", "eligibility", batch, 1))
            .await;
    }
    w.tick(t0()).await;
    w.submit(&request(
        gone_early,
        "cedar-plan",
        "eligibility",
        "2029-04",
        1,
    ))
    .await;
    w.compute.script(Fault::LoseResponse);
    w.tick(t0() + Duration::seconds(1)).await;
    let (lost_iid, launched) = w.running_on(lost).await;
    let (late_iid, _) = w.running_on(late).await;
    let early_iid = w.instances_of(gone_early).await[0].instance_id.clone();
    // `lost` dies; `late` boots and never says `started`; `gone_early` ends unrecorded.
    for iid in [&lost_iid, &early_iid] {
        ec2.set_state(iid, InstanceState::Terminated);
    }
    let mut m = mayfly::metrics::PassCounters::default();
    let p = w.tick(launched + Duration::minutes(1)).await;
    assert_eq!(p.launch.found_gone, 1, "{p}");
    m.record(&p);
    // cedar-plan's boot timeout is 8m: `late` is stopped for it.
    let p = w.tick(launched + Duration::minutes(9)).await;
    assert_eq!(p.reconcile.boot_timeouts, 1, "{p}");
    m.record(&p);
    let p = w.tick(launched + Duration::minutes(12)).await;
    m.record(&p);
    assert_eq!(
        m.verdicts,
        [
            ("boot_timeout".to_owned(), 1),
            ("instance_lost".to_owned(), 2)
        ]
        .into(),
        "{p}"
    );
    assert_eq!(m.launches_found_gone, 1);
    assert_eq!(m.reaps.get("boot_timeout"), Some(&1));
    let text = logs.text();
    for (what, needle) in [
        (
            "the repair's finding",
            "ended before its launch was recorded",
        ),
        ("the overdue stop", "Stopped an overdue instance"),
        ("the verdict", "Judged an attempt lost"),
    ] {
        assert!(text.contains(needle), "{what} is not logged:\n{text}");
    }
    for iid in [&lost_iid, &late_iid, &early_iid] {
        assert!(
            text.contains(iid.as_str()),
            "{iid} not named in the logs:\n{text}"
        );
    }
    assert!(text.contains("gone_at"), "the evidence is logged:\n{text}");
}
