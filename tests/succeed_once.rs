//! A job succeeds once: on the in-memory fakes, each way a pass, a response or a poll can lose
//! sight of an instance's events, and that the job is neither run again nor judged lost while
//! one of its events can still arrive (docs/events.md, "Why a sent `finished` is never judged
//! lost"). The fake events queue plays SQS's awkward parts: messages held in flight by a
//! reader that died, short polls that come back empty, and a redrive policy.

mod support;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use mayfly::clock::ManualClock;
use mayfly::events::InstanceEvent;
use mayfly::fakes::{FakeCompute, FakeLedger, FakeQueue};
use mayfly::job::{Job, JobState};
use mayfly::ports::{InstanceState, Queue};
use mayfly::scheduler::Finding;
use support::world::{on_fakes, request, send_event, t0, Fault, FaultyCompute, World};

/// A fakes world with the fakes themselves in reach.
struct Rig {
    w: World,
    ledger: Arc<FakeLedger>,
    events: Arc<FakeQueue>,
    ec2: Arc<FakeCompute>,
}

fn rig() -> Rig {
    rig_with(None)
}

/// A rig whose scheduler reads `clock` for the moments it records.
fn rig_with(clock: Option<Arc<ManualClock>>) -> Rig {
    let ledger = Arc::new(FakeLedger::new());
    let events = Arc::new(FakeQueue::new());
    let ec2 = Arc::new(FakeCompute::new());
    let w = World {
        ledger: ledger.clone(),
        events: events.clone(),
        events_fake: Some(events.clone()),
        compute: Arc::new(FaultyCompute::new(ec2.clone())),
        clock: clock.map(|c| c as Arc<dyn mayfly::clock::Clock>),
        ..on_fakes()
    };
    Rig {
        w,
        ledger,
        events,
        ec2,
    }
}

/// The job, as mayfly names it (per payer).
const JOB: &str = "cedar-plan/cedar-plan:2029-01:eligibility";

impl Rig {
    async fn submit(&self) {
        self.w.apply_examples().await;
        self.w
            .submit(&request(JOB, "cedar-plan", "eligibility", "2029-01", 1))
            .await;
    }

    /// The job's launch response is lost: it stays `launching`; returns its instance and
    /// the instance's launch time.
    async fn launch_losing_the_response(&self) -> (String, DateTime<Utc>) {
        self.w.compute.script(Fault::LoseResponse);
        self.w.tick(t0()).await;
        assert_eq!(self.w.job(JOB).await.state, JobState::Launching);
        let live = self.w.instances_of(JOB).await;
        assert_eq!(live.len(), 1);
        (
            live[0].instance_id.clone(),
            live[0].launched_at.expect("launch time"),
        )
    }

    /// The instance runs the job to exit 0, reports, and shuts down.
    async fn run_to_success(&self, iid: &str, at: DateTime<Utc>) {
        send_event(&self.w, &InstanceEvent::started(JOB, 1, iid, at)).await;
        send_event(
            &self.w,
            &InstanceEvent::finished(JOB, 1, iid, at + Duration::seconds(3), 0, 3, "done"),
        )
        .await;
        self.ec2.set_state(iid, InstanceState::Terminated);
    }

    /// Every instance ever launched for the job (terminated ones too).
    fn instances_ever(&self) -> usize {
        self.ec2
            .instances()
            .iter()
            .filter(|i| i.tag("mayfly:job-id") == Some(JOB))
            .count()
    }

    async fn job(&self) -> Job {
        self.w.job(JOB).await
    }
}

#[tokio::test]
async fn a_finished_event_for_a_launching_attempt_settles_the_job() {
    let r = rig();
    r.submit().await;
    let (iid, launched) = r.launch_losing_the_response().await;
    r.run_to_success(&iid, launched + Duration::seconds(2))
        .await;

    // Before the repair would even look (30 s), the events alone settle the job.
    let pass = r.w.tick(t0() + Duration::seconds(10)).await;
    assert_eq!(pass.events.adopted, 1, "{pass}");
    let job = r.job().await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.reason);
    let a = job.current_attempt().unwrap();
    assert_eq!(a.instance_id.as_deref(), Some(iid.as_str()));
    assert_eq!(a.exit_code, Some(0));
    assert!(a.launched_at.is_some() && a.started_at.is_some());

    // Later passes change nothing, and no second instance was ever launched.
    r.w.tick(launched + Duration::minutes(10)).await;
    assert_eq!(r.job().await.state, JobState::Succeeded);
    assert_eq!(r.instances_ever(), 1);
}

#[tokio::test]
async fn a_launch_found_gone_waits_for_the_events_another_reader_holds() {
    let r = rig();
    r.submit().await;
    let (iid, launched) = r.launch_losing_the_response().await;
    r.run_to_success(&iid, launched + Duration::seconds(2))
        .await;
    // A pass receives both events and is killed before it applies them.
    let held = r
        .events
        .receive(10, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(held.len(), 2);

    // The repair finds the instance terminated: it records it, and does not retry.
    let repair = r.w.tick(launched + Duration::minutes(1)).await;
    assert_eq!(repair.launch.found_gone, 1, "{repair}");
    let job = r.job().await;
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.attempt, 1);
    let a = job.current_attempt().unwrap();
    assert_eq!(a.instance_id.as_deref(), Some(iid.as_str()));
    assert!(a.gone_at.is_some());

    // Long past the grace, nothing is judged while the events are in flight.
    let waiting = r.w.tick(launched + Duration::minutes(5)).await;
    assert_eq!(waiting.reconcile.lost, 0, "{waiting}");
    assert!(waiting.reconcile.verdicts.is_empty(), "{waiting}");
    let gone = waiting
        .reconcile
        .findings
        .iter()
        .find(|f| f.finding == Finding::Gone)
        .expect("a finding for the gone instance");
    assert!(gone.action.contains("in flight"), "{}", gone.action);
    assert_eq!(r.job().await.state, JobState::Running);

    // The dead reader's visibility timeout runs out: the events apply, the job succeeds.
    r.events.expire_receipts();
    r.w.tick(launched + Duration::minutes(6)).await;
    let job = r.job().await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.reason);
    assert_eq!(job.attempts.len(), 1);
    assert_eq!(r.instances_ever(), 1);
}

#[tokio::test]
async fn a_finished_event_hidden_by_empty_short_polls_is_found_before_any_verdict() {
    let r = rig();
    r.submit().await;
    r.w.tick(t0()).await;
    let (iid, launched) = r.w.running_on(JOB).await;
    r.run_to_success(&iid, launched + Duration::seconds(5))
        .await;
    // SQS answers short polls from a sample of its servers: these come back empty.
    r.events.miss_short_polls(u32::MAX);

    let first = r.w.tick(launched + Duration::seconds(30)).await;
    assert_eq!(first.events.received, 0, "{first}");
    let job = r.job().await;
    assert_eq!(job.state, JobState::Running);
    assert!(job.current_attempt().unwrap().gone_at.is_some());

    // Past the grace, the verdict's long poll finds the `finished` event: a success.
    let judged = r.w.tick(launched + Duration::minutes(4)).await;
    assert_eq!(judged.reconcile.lost, 0, "{judged}");
    assert_eq!(judged.events.succeeded, 1, "{judged}");
    let job = r.job().await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.reason);
    assert_eq!(job.attempts.len(), 1);
}

/// The events queue's redrive policy in the template, if it has one.
fn template_max_receive_count() -> Option<u32> {
    let text = std::fs::read_to_string(support::path("infra/mayfly.yaml")).unwrap();
    let start = text
        .find("\n  EventsQueue:")
        .expect("EventsQueue in the template")
        + 1;
    // The resource runs to the next line indented by two spaces or fewer.
    let block: Vec<&str> = text[start..]
        .lines()
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.trim().is_empty() || l.len() - l.trim_start().len() > 2)
        .map(|(_, l)| l)
        .collect();
    block
        .iter()
        .find_map(|l| l.trim().strip_prefix("maxReceiveCount:"))
        .map(|n| n.trim().parse().expect("a count"))
}

#[tokio::test]
async fn an_event_deferred_past_the_queues_receive_count_still_reaches_its_job() {
    let r = rig();
    let redrive = template_max_receive_count();
    if let Some(n) = redrive {
        r.events.redrive_after(n);
    }
    r.submit().await;
    r.w.tick(t0()).await;
    let (iid, launched) = r.w.running_on(JOB).await;
    send_event(
        &r.w,
        &InstanceEvent::finished(JOB, 1, &iid, launched + Duration::seconds(5), 0, 5, "ok"),
    )
    .await;
    // The ledger refuses every write for more passes than any redrive would allow.
    let deferrals = redrive.unwrap_or(5) + 2;
    for n in 0..deferrals {
        r.ledger.throttle_next_writes(1_000);
        let pass =
            r.w.tick(launched + Duration::seconds(10 + i64::from(n)))
                .await;
        assert_eq!(pass.events.received, 1, "pass {n}: {pass}");
        r.events.expire_receipts();
    }
    r.ledger.throttle_next_writes(0);
    r.w.tick(launched + Duration::minutes(1)).await;
    assert_eq!(r.job().await.state, JobState::Succeeded);
    assert!(r.events.dead_lettered().is_empty());
}

#[tokio::test]
async fn a_late_finished_settles_a_job_whose_retry_has_not_launched() {
    let r = rig();
    r.submit().await;
    r.w.tick(t0()).await;
    let (iid, launched) = r.w.running_on(JOB).await;
    r.ec2.set_state(&iid, InstanceState::Terminated);
    r.w.tick(launched + Duration::minutes(1)).await;
    // Judged lost (nothing on the queue, nothing in flight), and queued for attempt 2.
    let judged = r.w.tick(launched + Duration::minutes(4)).await;
    assert_eq!(judged.reconcile.lost, 1, "{judged}");
    assert_eq!(r.job().await.state, JobState::Queued);
    // Its `finished` arrives after all, before the retry's backoff ran out.
    send_event(
        &r.w,
        &InstanceEvent::finished(JOB, 1, &iid, launched + Duration::seconds(50), 0, 40, "ok"),
    )
    .await;
    let pass =
        r.w.tick(launched + Duration::minutes(4) + Duration::seconds(1))
            .await;
    assert_eq!(pass.events.late_successes, 1, "{pass}");
    let job = r.job().await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.reason);
    r.w.tick(launched + Duration::hours(1)).await;
    assert_eq!(r.job().await.state, JobState::Succeeded);
    assert_eq!(r.instances_ever(), 1, "no retry was launched");
}

#[tokio::test]
async fn recorded_times_are_the_moments_observed_never_before_the_launch() {
    let clock = Arc::new(ManualClock::at(DateTime::<Utc>::UNIX_EPOCH));
    let r = rig_with(Some(clock.clone()));
    r.submit().await;
    r.w.tick(t0()).await;
    let (iid, launched) = r.w.running_on(JOB).await;
    r.ec2.set_state(&iid, InstanceState::Terminated);
    // A long pass: it started at `start`, and saw the instance gone 40 s later.
    let start = launched + Duration::minutes(1);
    clock.set(start + Duration::seconds(40));
    r.w.tick(start).await;
    let a = r.job().await.current_attempt().unwrap().clone();
    assert_eq!(a.gone_at, Some(start + Duration::seconds(40)));
    // The verdict, by a pass that started before its own moment.
    let start = launched + Duration::minutes(5);
    clock.set(start + Duration::seconds(25));
    r.w.tick(start).await;
    let job = r.job().await;
    let a = &job.attempts[0];
    assert_eq!(a.cause, Some(mayfly::retry::FailureCause::InstanceLost));
    assert_eq!(job.updated_at, Some(start + Duration::seconds(25)));
    for j in r.ledger.all() {
        for a in &j.attempts {
            let Some(l) = a.launched_at else { continue };
            for (what, t) in [("gone_at", a.gone_at), ("ended_at", a.ended_at)] {
                if let Some(t) = t {
                    assert!(
                        t >= l,
                        "{} attempt {}: {what} {t} before launch {l}",
                        j.job_id,
                        a.number
                    );
                }
            }
        }
    }
}
