//! Launch groups on the fakes: one RunInstances for a payer's burst, each job on its own
//! instance (ledger attempt ↔ instance ↔ launch index), partial fulfilment, crashes between
//! the steps, and a lost response adopted by replaying the group's token.

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Duration;
use mayfly::events::InstanceEvent;
use mayfly::fakes::FakeCompute;
use mayfly::group::runs_by;
use mayfly::job::{Job, JobState};
use mayfly::names::tags;
use mayfly::ports::{
    Compute, ComputeError, GroupCount, GroupMember, LaunchRequest, Launched, ManagedInstance,
};
use proptest::prelude::*;
use support::world::{instance_sender, on_fakes, request, t0, Fault, FaultyCompute, World};

/// A deployment whose cedar-plan may run `n` instances at once.
async fn world_of(ec2: Arc<dyn Compute>, n: u32) -> World {
    let w = World {
        compute: Arc::new(FaultyCompute::new(ec2)),
        ..on_fakes()
    };
    w.apply_examples().await;
    let row = w.config.get("cedar-plan").await.unwrap().unwrap();
    let mut profile = row.profile.clone();
    profile.caps.max_instances = n;
    profile.caps.max_vcpus = (2 * n).max(96);
    w.config
        .put(&profile, Some(row.version), t0())
        .await
        .unwrap();
    w
}

async fn submit_burst(w: &World, n: u32) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let batch = format!("2031-{i:02}");
        let id = format!("cedar-plan:{batch}:eligibility");
        w.submit(&request(&id, "cedar-plan", "eligibility", &batch, 1))
            .await;
        ids.push(id);
    }
    ids
}

/// Every running job's instance is the group's instance of its launch index, and no two
/// jobs share one.
fn assert_one_instance_per_job(jobs: &[Job], instances: &[ManagedInstance]) {
    let mut seen = std::collections::HashSet::new();
    for job in jobs.iter().filter(|j| j.state == JobState::Running) {
        let a = job.current_attempt().unwrap();
        let id = a.instance_id.as_deref().expect("running with an instance");
        assert!(seen.insert(id.to_owned()), "{id} is two jobs' instance");
        let inst = instances.iter().find(|i| i.instance_id == id).unwrap();
        assert_eq!(inst.launch_index, a.launch_index, "{}", job.job_id);
        assert_eq!(inst.tag(tags::GROUP), a.launch_group.as_deref());
        assert_eq!(inst.tag(tags::JOB_ID), None, "tags on create are per call");
    }
}

async fn jobs(w: &World, ids: &[String]) -> Vec<Job> {
    let mut out = Vec::new();
    for id in ids {
        out.push(w.job(id).await);
    }
    out
}

#[tokio::test]
async fn a_burst_of_one_payer_goes_out_in_one_call_each_job_on_its_own_instance() {
    let ec2 = Arc::new(FakeCompute::new());
    let w = world_of(ec2.clone(), 10).await;
    let ids = submit_burst(&w, 10).await;
    let report = w.tick(t0()).await;
    assert_eq!(report.launch.instances.len(), 10, "{report}");
    assert_eq!(report.launch.groups, 1, "{report}");
    assert_eq!(ec2.calls().0, 1, "one RunInstances");
    let all = jobs(&w, &ids).await;
    let mut indices: Vec<u32> = all
        .iter()
        .map(|j| j.current_attempt().unwrap().launch_index.unwrap())
        .collect();
    indices.sort_unstable();
    assert_eq!(indices, (0..10).collect::<Vec<_>>());
    assert_one_instance_per_job(&all, &ec2.instances());
    // The group's jobs are in rank order: the plan's first job has index 0.
    assert_eq!(all[0].current_attempt().unwrap().launch_index, Some(0));
    // Marking `launching` and `running`: two writes per job.
    assert!(all.iter().all(|j| j.version == 2), "{:?}", all[0].version);
}

#[tokio::test]
async fn ec2_launching_3_of_10_leaves_7_waiting_with_no_retry_spent() {
    let ec2 = Arc::new(FakeCompute::new());
    ec2.short_groups([3]);
    let w = world_of(ec2.clone(), 10).await;
    let ids = submit_burst(&w, 10).await;
    let report = w.tick(t0()).await;
    assert_eq!(report.launch.instances.len(), 3, "{report}");
    assert_eq!(report.launch.group_shortfalls, 7, "{report}");
    let all = jobs(&w, &ids).await;
    let running: Vec<&Job> = all
        .iter()
        .filter(|j| j.state == JobState::Running)
        .collect();
    assert_eq!(running.len(), 3);
    for j in &running {
        assert!(j.current_attempt().unwrap().launch_index.unwrap() < 3);
    }
    assert_one_instance_per_job(&all, &ec2.instances());
    for j in all.iter().filter(|j| j.state != JobState::Running) {
        assert_eq!(j.state, JobState::Queued, "{}", j.job_id);
        assert_eq!(j.attempts_in_budget(), 0, "no retry spent: {}", j.job_id);
        assert!(j
            .reason
            .as_deref()
            .unwrap()
            .contains("EC2 launched 3 of the 10"));
    }
    // The next pass launches the seven, again as one group.
    let next = w.tick(t0() + Duration::seconds(5)).await;
    assert_eq!(next.launch.instances.len(), 7, "{next}");
    let all = jobs(&w, &ids).await;
    assert!(all.iter().all(|j| j.state == JobState::Running));
    assert_one_instance_per_job(&all, &ec2.instances());
    assert_eq!(ec2.instances().len(), 10);
}

#[tokio::test]
async fn a_crash_between_the_transaction_and_run_instances_launches_once_next_pass() {
    let ec2 = Arc::new(FakeCompute::new());
    let w = world_of(ec2.clone(), 6).await;
    let ids = submit_burst(&w, 6).await;
    // The call never reaches EC2 and its outcome is unknown to the pass (as if it crashed).
    w.compute.script(Fault::Before(ComputeError::Transient {
        code: "timeout".into(),
        message: "no answer".into(),
    }));
    w.tick(t0()).await;
    assert!(jobs(&w, &ids)
        .await
        .iter()
        .all(|j| j.state == JobState::Launching));
    assert!(ec2.instances().is_empty());
    let next = w.tick(t0() + Duration::minutes(1)).await;
    assert_eq!(next.launch.replayed, 6, "{next}");
    let all = jobs(&w, &ids).await;
    assert!(all.iter().all(|j| j.state == JobState::Running), "{next}");
    assert_eq!(ec2.instances().len(), 6, "exactly one instance per job");
    assert_one_instance_per_job(&all, &ec2.instances());
}

#[tokio::test]
async fn a_crash_between_run_instances_and_running_adopts_by_group_tag_and_index() {
    let ec2 = Arc::new(FakeCompute::new());
    let w = world_of(ec2.clone(), 6).await;
    let ids = submit_burst(&w, 6).await;
    w.compute.script(Fault::LoseResponse);
    w.tick(t0()).await;
    assert_eq!(ec2.instances().len(), 6, "launched, answer lost");
    let next = w.tick(t0() + Duration::minutes(1)).await;
    assert_eq!(next.launch.adopted, 6, "{next}");
    assert_eq!(next.launch.replayed, 0, "{next}");
    let all = jobs(&w, &ids).await;
    assert!(all.iter().all(|j| j.state == JobState::Running));
    assert_eq!(ec2.instances().len(), 6, "exactly one instance per job");
    assert_one_instance_per_job(&all, &ec2.instances());
}

/// EC2 whose DescribeInstances has not caught up with a group's launch yet.
struct GroupNotListed(Arc<FakeCompute>);

#[async_trait]
impl Compute for GroupNotListed {
    async fn launch(&self, req: &LaunchRequest) -> Result<Launched, ComputeError> {
        self.0.launch(req).await
    }
    async fn launch_group(
        &self,
        req: &LaunchRequest,
        count: GroupCount,
    ) -> Result<Vec<GroupMember>, ComputeError> {
        self.0.launch_group(req, count).await
    }
    async fn find_group(&self, _: &str, _: &str) -> Result<Vec<ManagedInstance>, ComputeError> {
        Ok(Vec::new())
    }
    async fn list_managed(&self, cluster: &str) -> Result<Vec<ManagedInstance>, ComputeError> {
        self.0.list_managed(cluster).await
    }
    async fn find_attempt(
        &self,
        cluster: &str,
        job_id: &str,
        attempt: u32,
    ) -> Result<Vec<ManagedInstance>, ComputeError> {
        self.0.find_attempt(cluster, job_id, attempt).await
    }
    async fn terminate(&self, ids: &[String]) -> Result<(), ComputeError> {
        self.0.terminate(ids).await
    }
    async fn set_tag(&self, id: &str, key: &str, value: Option<&str>) -> Result<(), ComputeError> {
        self.0.set_tag(id, key, value).await
    }
    async fn spot_price(&self, instance_type: &str, az: &str) -> Result<f64, ComputeError> {
        self.0.spot_price(instance_type, az).await
    }
}

#[tokio::test]
async fn a_lost_response_is_adopted_by_replaying_the_groups_token() {
    let ec2 = Arc::new(FakeCompute::new());
    let w = world_of(Arc::new(GroupNotListed(ec2.clone())), 6).await;
    let ids = submit_burst(&w, 6).await;
    w.compute.script(Fault::LoseResponse);
    w.tick(t0()).await;
    assert_eq!(ec2.instances().len(), 6);
    // The repair cannot see them; it replays the recorded token, and EC2 answers the same
    // instances.
    let next = w.tick(t0() + Duration::minutes(1)).await;
    assert_eq!(next.launch.replayed, 6, "{next}");
    let all = jobs(&w, &ids).await;
    assert!(all.iter().all(|j| j.state == JobState::Running), "{next}");
    assert_eq!(ec2.instances().len(), 6, "no second instance");
    assert_one_instance_per_job(&all, &ec2.instances());
}

#[tokio::test]
async fn a_payers_max_group_of_one_launches_each_job_on_its_own() {
    let ec2 = Arc::new(FakeCompute::new());
    let w = world_of(ec2.clone(), 4).await;
    let row = w.config.get("cedar-plan").await.unwrap().unwrap();
    let mut profile = row.profile.clone();
    profile.launch.max_group = Some(1);
    w.config
        .put(&profile, Some(row.version), t0())
        .await
        .unwrap();
    let ids = submit_burst(&w, 4).await;
    let report = w.tick(t0()).await;
    assert_eq!(report.launch.instances.len(), 4, "{report}");
    assert_eq!((report.launch.groups, ec2.calls().0), (0, 4));
    for j in jobs(&w, &ids).await {
        assert_eq!(j.current_attempt().unwrap().launch_group, None);
    }
}

proptest! {
    /// Groups are runs of the plan's order: each of one payer and ladder, at most the
    /// payer's and the deployment's size, at most the call budget; the jobs they launch are
    /// the plan's first ones, in order (no lower-ranked job takes a higher-ranked one's slot),
    /// and a group of k spends k of the plan's instances and one call.
    #[test]
    fn groups_keep_payers_rungs_order_and_budgets(
        keys in proptest::collection::vec((0u8..3, 0u8..2), 0..200),
        max in 1u32..12,
        payer_max in proptest::collection::vec(proptest::option::of(1u32..6), 3),
        calls in 0usize..30,
    ) {
        let cap = |k: &(u8, u8)| payer_max[k.0 as usize].map_or(max, |p| p.min(max));
        let groups = runs_by(&keys, cap, calls);
        prop_assert!(groups.len() <= calls);
        let mut next = 0;
        for g in &groups {
            prop_assert_eq!(g.start, next, "a prefix, in order");
            prop_assert!(!g.is_empty());
            prop_assert!(g.len() as u32 <= cap(&keys[g.start]));
            prop_assert!(keys[g.clone()].iter().all(|k| *k == keys[g.start]), "one payer and rung");
            next = g.end;
        }
        let launched = next;
        prop_assert!(launched <= keys.len(), "never more instances than the plan's");
        if groups.len() < calls {
            prop_assert_eq!(launched, keys.len(), "budget left: every launch went");
        }
        // Ungrouped, the same jobs go in the same order.
        let ungrouped = runs_by(&keys, |_| 1, usize::MAX);
        let order: Vec<usize> = groups.iter().flat_map(|g| g.clone()).collect();
        let plain: Vec<usize> = ungrouped.iter().map(|g| g.start).take(launched).collect();
        prop_assert_eq!(order, plain);
    }
}

#[tokio::test]
async fn reconcile_maps_a_grouped_instance_to_its_job_by_launch_index() {
    let ec2 = Arc::new(FakeCompute::new());
    let w = world_of(ec2.clone(), 6).await;
    let ids = submit_burst(&w, 6).await;
    w.tick(t0()).await;
    // Later passes see six instances tagged with the group, none with a job: all owned.
    for m in [1, 10] {
        let report = w.tick(t0() + Duration::minutes(m)).await;
        assert_eq!(report.reconcile.instances_seen, 6, "{report}");
        assert_eq!(report.reconcile.orphans_marked, 0, "{report}");
    }
    // One job is cancelled (its instance is no longer owned): that instance alone is an orphan.
    let mut job = w.job(&ids[2]).await;
    let expected = job.version;
    job.transition(JobState::Cancelled, Some("test".into()), t0())
        .unwrap();
    w.ledger.update(&job, expected).await.unwrap();
    let report = w.tick(t0() + Duration::minutes(20)).await;
    assert_eq!(report.reconcile.orphans_marked, 1, "{report}");
    let orphan = report
        .reconcile
        .findings
        .iter()
        .find(|f| f.finding == mayfly::scheduler::Finding::Orphan)
        .unwrap();
    assert_eq!(
        orphan.instance_id,
        job.current_attempt().unwrap().instance_id
    );
}

#[tokio::test]
async fn a_partial_group_whose_answer_was_lost_is_replayed_under_its_token_and_stays_partial() {
    let ec2 = Arc::new(FakeCompute::new());
    ec2.short_groups([3]);
    let w = world_of(Arc::new(GroupNotListed(ec2.clone())), 6).await;
    let ids = submit_burst(&w, 6).await;
    w.compute.script(Fault::LoseResponse);
    w.tick(t0()).await;
    assert_eq!(
        ec2.instances().len(),
        3,
        "EC2 launched 3 of the 6, answer lost"
    );
    let original: Vec<String> = ec2.instances().into_iter().map(|i| i.instance_id).collect();
    let first = jobs(&w, &ids).await;
    let token = first[0].current_attempt().unwrap().client_token.clone();

    // The repair (which cannot see the group) replays it under its recorded token: EC2
    // answers the same three instances and launches none more. The three jobs EC2 did not
    // launch go back to waiting with no retry spent, and the same pass launches them as a
    // new group under a new token.
    let next = w.tick(t0() + Duration::minutes(1)).await;
    assert_eq!(next.launch.replayed, 6, "{next}");
    assert_eq!(next.launch.group_shortfalls, 3, "{next}");
    let all = jobs(&w, &ids).await;
    assert!(all.iter().all(|j| j.state == JobState::Running), "{next}");
    assert_eq!(ec2.instances().len(), 6, "one instance per job, none twice");
    assert_one_instance_per_job(&all, &ec2.instances());
    for j in &all {
        let a = j.current_attempt().unwrap();
        let index = first
            .iter()
            .find(|f| f.job_id == j.job_id)
            .and_then(|f| f.current_attempt().unwrap().launch_index)
            .unwrap();
        if index < 3 {
            assert_eq!(a.number, 1, "{}: the replay kept its attempt", j.job_id);
            assert_eq!(a.client_token, token, "{}", j.job_id);
            assert!(original.contains(a.instance_id.as_ref().unwrap()));
        } else {
            assert_eq!(a.number, 2, "{}", j.job_id);
            assert_ne!(
                a.client_token, token,
                "{}: a new launch, a new token",
                j.job_id
            );
            assert!(j.attempts[0].bounced(), "{}", j.job_id);
        }
        assert_eq!(j.attempts_in_budget(), 1, "no retry spent: {}", j.job_id);
    }
}

#[tokio::test]
async fn a_grouped_instance_is_adopted_from_its_events_by_group_tag_and_index() {
    let ec2 = Arc::new(FakeCompute::new());
    let w = world_of(ec2.clone(), 2).await;
    let ids = submit_burst(&w, 2).await;
    w.compute.script(Fault::LoseResponse);
    w.tick(t0()).await;
    let all = jobs(&w, &ids).await;
    assert!(all.iter().all(|j| j.state == JobState::Launching));
    let of_index = |i: u32| {
        ec2.instances()
            .into_iter()
            .find(|m| m.launch_index == Some(i))
            .unwrap()
            .instance_id
    };
    let (first, second) = (&all[0], &all[1]);
    let own = of_index(first.current_attempt().unwrap().launch_index.unwrap());
    let other = of_index(second.current_attempt().unwrap().launch_index.unwrap());

    // The other job's instance claims the first job, speaking for itself: refused, by the
    // group's tag and the first job's launch index. The first job's own instance is adopted.
    let events = w.events_fake.clone().expect("the fakes' events queue");
    let at = t0() + Duration::seconds(20);
    let claim = InstanceEvent::started(&first.job_id, 1, &other, at);
    events.send_as(&instance_sender(&other), &claim.to_json(), &[]);
    let genuine = InstanceEvent::started(&first.job_id, 1, &own, at);
    events.send_as(&instance_sender(&own), &genuine.to_json(), &[]);
    let pass = w.tick(at).await;
    assert_eq!(pass.events.refused, 1, "{pass}");
    assert_eq!(pass.events.adopted, 1, "{pass}");
    let first = w.job(&first.job_id).await;
    assert_eq!(first.state, JobState::Running);
    assert_eq!(first.current_attempt().unwrap().instance_id, Some(own));
}
