//! Launch groups ([`crate::group`]): one RunInstances for the instances of several jobs of
//! one payer and rung, each instance still one job's attempt.
//!
//! 1. The group's jobs are marked `launching` in one transaction (each write conditional on
//!    its version), each attempt with the group's client token and its launch index.
//! 2. One RunInstances with `MinCount = 1` (or `MaxCount`, [`Settings::group_min_is_max`])
//!    and `MaxCount = k`, its user-data the table of the group's jobs
//!    ([`crate::userdata::group_user_data`]); the instances are tagged with the group, not
//!    a job (tags on create are per call).
//! 3. Each job's instance is the one whose `AmiLaunchIndex` is the job's launch index, and is
//!    recorded `running`. A job whose index EC2 did not launch (fewer than `MaxCount`) goes
//!    back to waiting with no retry spent.
//!
//! A refused rung moves the whole group to the next rung (a new token, recorded in one
//! transaction first), as a single launch does. The repair of a group interrupted between
//! steps finds its instances by the group tag and maps them by launch index.
//!
//! [`Settings::group_min_is_max`]: crate::scheduler::Settings::group_min_is_max

use std::ops::Range;

use chrono::{DateTime, Utc};

use super::{
    bounce, client_token, fail_fast, fell_back, launch_one, mark_running, price, ran, save,
    to_running, Flow, Ready,
};
use crate::aws::permissions;
use crate::job::Job;
use crate::names::tags;
use crate::ports::{ComputeError, GroupCount, LaunchRequest, Launched, StoreError};
use crate::profile::Payer;
use crate::scheduler::learned::Learned;
use crate::scheduler::report::LaunchReport;
use crate::scheduler::Scheduler;
use crate::sizing::Rung;
use crate::userdata::{group_user_data, GroupUserDataError};

/// Most jobs of `payer` one RunInstances launches.
pub(super) fn max_size(s: &Scheduler, payer: &Payer) -> u32 {
    let own = payer.profile.launch.max_group.unwrap_or(u32::MAX);
    s.settings
        .max_group
        .min(own)
        .clamp(1, crate::group::MAX_GROUP)
}

/// The client token of a group: of its jobs and attempts, in launch-index order, and its
/// rung (so a new rung is a new launch).
pub fn group_token(cluster: &str, members: &[(&str, u32)], rung: &Rung) -> String {
    let ids: Vec<String> = members
        .iter()
        .map(|(job, attempt)| format!("{job}#{attempt}"))
        .collect();
    client_token(cluster, &format!("group\u{1f}{}", ids.join(",")), 0, rung)
}

fn token_of(s: &Scheduler, jobs: &[Job], rung: &Rung) -> String {
    let members: Vec<(&str, u32)> = jobs
        .iter()
        .map(|j| (j.job_id.as_str(), j.attempt))
        .collect();
    group_token(&s.settings.cluster, &members, rung)
}

/// Parts of `entries` whose group user-data fits EC2's limit: the whole table, or halves
/// of it (and halves of those) until each part fits. `None`: an entry cannot be carried.
fn fit(entries: &[String]) -> Option<Vec<Range<usize>>> {
    let mut todo: Vec<Range<usize>> = Vec::new();
    todo.push(0..entries.len());
    let mut parts = Vec::new();
    while let Some(r) = todo.pop() {
        if r.len() <= 1 {
            parts.push(r);
            continue;
        }
        // The token's length is fixed; its value does not change the size that matters.
        match group_user_data(
            "mayfly-0000000000000000000000000000000",
            &entries[r.clone()],
        ) {
            Ok(_) => parts.push(r),
            Err(GroupUserDataError::TooLarge { .. }) => {
                let mid = r.start + r.len() / 2;
                todo.push(mid..r.end);
                todo.push(r.start..mid);
            }
            Err(GroupUserDataError::Delimiter { .. }) => return None,
        }
    }
    Some(parts)
}

/// Launches a group of planned launches (one payer, ladder and first rung, in rank order).
pub(super) async fn launch_new(
    s: &Scheduler,
    group: Vec<Ready<'_>>,
    now: DateTime<Utc>,
    report: &mut LaunchReport,
    learned: &mut Learned,
) -> Flow {
    let entries: Result<Vec<String>, String> = group
        .iter()
        .map(|r| s.deps.user_data.render(r.payer, &r.job, r.attempt))
        .collect();
    let parts = entries.ok().and_then(|e| fit(&e).map(|parts| (e, parts)));
    let Some((entries, parts)) = parts else {
        // An entry cannot render (or be carried): each job on its own meets its own answer.
        for r in group {
            if let Flow::StopPass = launch_one(s, vec![r], now, report, learned).await {
                return Flow::StopPass;
            }
        }
        return Flow::Continue;
    };
    let mut group = group.into_iter();
    for part in parts {
        let members: Vec<Ready<'_>> = group.by_ref().take(part.len()).collect();
        let flow = if members.len() == 1 {
            launch_one(s, members, now, report, learned).await
        } else {
            launch_part(s, members, entries[part].to_vec(), now, report, learned).await
        };
        if let Flow::StopPass = flow {
            return Flow::StopPass;
        }
    }
    Flow::Continue
}

/// Marks a group's jobs `launching` in one transaction, then launches them.
async fn launch_part(
    s: &Scheduler,
    mut members: Vec<Ready<'_>>,
    entries: Vec<String>,
    now: DateTime<Utc>,
    report: &mut LaunchReport,
    learned: &mut Learned,
) -> Flow {
    let (payer, ladder, first) = (
        members[0].payer,
        members[0].ladder.clone(),
        members[0].first,
    );
    report.rungs_skipped += (first * members.len()) as u32;
    let planned: Vec<(&str, u32)> = members
        .iter()
        .map(|r| (r.job.job_id.as_str(), r.attempt))
        .collect();
    let token = group_token(&s.settings.cluster, &planned, &ladder[first]);
    let mut expected = Vec::with_capacity(members.len());
    for (index, r) in members.iter_mut().enumerate() {
        let Some(v) = r.start(s, token.clone(), learned, now) else {
            return Flow::Continue;
        };
        if let Some(a) = r.job.current_attempt_mut() {
            a.launch_group = Some(token.clone());
            a.launch_index = Some(index as u32);
        }
        expected.push(v);
    }
    let mut jobs: Vec<Job> = members.into_iter().map(|r| r.job).collect();
    if !save_all(s, &mut jobs, &expected, now, report).await {
        return Flow::Continue;
    }
    walk(
        s, payer, &mut jobs, &entries, &ladder, first, now, report, learned,
    )
    .await
}

/// Writes `jobs` (already changed in memory) in one transaction, each conditional on its
/// `expected` version, stamped with the moment of the write.
async fn save_all(
    s: &Scheduler,
    jobs: &mut [Job],
    expected: &[u64],
    now: DateTime<Utc>,
    report: &mut LaunchReport,
) -> bool {
    let at = s.moment(now);
    for j in jobs.iter_mut() {
        j.updated_at = Some(at);
    }
    let writes: Vec<(Job, u64)> = jobs.iter().cloned().zip(expected.iter().copied()).collect();
    match s.deps.ledger.update_all(&writes).await {
        Ok(()) => true,
        Err(StoreError::Conflict(why)) => {
            // Another scheduler moved one of them first: nothing was written; the next pass
            // plans them again from what the ledger says.
            tracing::info!(reason = %why, "A launch group's jobs moved; not launching it.");
            report.conflicts += 1;
            false
        }
        Err(e) => {
            report.errors.push(format!(
                "writing a launch group of {} jobs: {e}",
                jobs.len()
            ));
            false
        }
    }
}

/// The request of a group: the payer's launch settings, the group's table as user-data, and
/// the tags every instance of the group shares.
fn request(
    s: &Scheduler,
    payer: &Payer,
    jobs: &[Job],
    entries: &[String],
    rung: &Rung,
    token: &str,
) -> Result<LaunchRequest, String> {
    let user_data = group_user_data(token, entries).map_err(|e| e.to_string())?;
    let l = &payer.profile.launch;
    let tag = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let mut tags = vec![
        tag("Name", &format!("mayfly group of {}", jobs.len())),
        tag(tags::CLUSTER, &s.settings.cluster),
        tag(tags::GROUP, token),
        tag(tags::PAYER, &payer.profile.payer_id),
        tag(tags::RUNG, &rung.to_string()),
    ];
    // Kind and batch when the group shares them.
    for (key, of) in [
        (tags::KIND, (|j: &Job| j.kind.clone()) as fn(&Job) -> String),
        (tags::BATCH, |j: &Job| j.batch.clone()),
    ] {
        let first = of(&jobs[0]);
        if jobs.iter().all(|j| of(j) == first) {
            tags.push(tag(key, &first));
        }
    }
    Ok(LaunchRequest {
        client_token: token.to_owned(),
        rung: rung.clone(),
        image_id: l.image_id.clone(),
        security_groups: l.security_groups.clone(),
        instance_profile: l.instance_profile.clone(),
        root_volume_gib: l.root_volume_gib,
        root_volume_kms_key: l
            .root_volume_kms_key
            .clone()
            .or_else(|| s.settings.root_volume_kms_key.clone()),
        user_data,
        tags,
    })
}

/// Tries the ladder from rung `start` (the one the group's attempts record) with one
/// RunInstances per rung until one launches, as [`super::launch_ladder`] does for one job.
/// `entries` are the jobs' rendered scripts, in launch-index order.
#[allow(clippy::too_many_arguments)]
pub(super) async fn walk(
    s: &Scheduler,
    payer: &Payer,
    jobs: &mut [Job],
    entries: &[String],
    ladder: &[Rung],
    start: usize,
    now: DateTime<Utc>,
    report: &mut LaunchReport,
    learned: &mut Learned,
) -> Flow {
    let mut recorded = start;
    for (i, rung) in ladder.iter().enumerate().skip(start) {
        if let Some(code) = learned.skip(rung) {
            let code = code.to_owned();
            for j in jobs.iter_mut() {
                fell_back(j, rung, &code, true);
            }
            report.rungs_skipped += 1;
            continue;
        }
        let recorded_token = jobs[0]
            .current_attempt()
            .and_then(|a| a.launch_group.clone());
        let token = match recorded_token {
            Some(t) if i == recorded => t,
            _ => token_of(s, jobs, rung),
        };
        if i != recorded {
            // A new rung is a new launch: record it (and its token) before calling EC2.
            let mut expected = Vec::with_capacity(jobs.len());
            for j in jobs.iter_mut() {
                if let Some(a) = j.current_attempt_mut() {
                    a.rung = Some(rung.clone());
                    a.client_token = Some(token.clone());
                    a.launch_group = Some(token.clone());
                    (a.usd_per_hour, a.price_source) = price(s, rung);
                }
                expected.push(j.version);
                j.version += 1;
            }
            if !save_all(s, jobs, &expected, now, report).await {
                return Flow::Continue;
            }
            recorded = i;
        }
        let req = match request(s, payer, jobs, entries, rung, &token) {
            Ok(req) => req,
            Err(e) => {
                let reason = format!("user-data: {e}");
                for j in jobs.iter_mut() {
                    bounce::refuse_payer(s, j, reason.clone(), now, report, learned).await;
                }
                return Flow::Continue;
            }
        };
        let k = jobs.len() as u32;
        let count = GroupCount {
            min: if s.settings.group_min_is_max { k } else { 1 },
            max: k,
        };
        report.groups += 1;
        match s.deps.compute.launch_group(&req, count).await {
            Ok(members) => {
                settle(s, jobs, members, now, report).await;
                return Flow::Continue;
            }
            Err(ComputeError::Capacity { code, .. }) => {
                tracing::info!(group = %token, rung = %rung, %code, "No capacity for the group on this rung; trying the next.");
                for j in jobs.iter_mut() {
                    fell_back(j, rung, &code, false);
                }
                report.capacity_fallbacks += 1;
            }
            Err(ComputeError::Quota { code, message }) => {
                tracing::info!(group = %token, rung = %rung, %code, %message, "A vCPU quota is full; leaving its rungs out this pass.");
                learned.quota_full(rung, &code);
                for j in jobs.iter_mut() {
                    fell_back(j, rung, &code, false);
                }
                report.quota_stops += 1;
            }
            Err(ComputeError::SpotUnavailable { code, message }) => {
                tracing::error!(group = %token, %code, %message, fix = permissions::SPOT_ROLE_FIX, "Spot refused for this account; launching on demand instead.");
                learned.spot_refused(&code);
                for j in jobs.iter_mut() {
                    fell_back(j, rung, &code, false);
                }
                report.spot_refusals += 1;
            }
            Err(ComputeError::Throttled { code }) => {
                tracing::warn!(group = %token, %code, "RunInstances throttled; no more launches this pass.");
                report.throttled = true;
                return Flow::StopPass;
            }
            Err(ComputeError::ProfileNotReady { code, message }) => {
                for j in jobs.iter_mut() {
                    bounce::profile_not_ready(s, j, &code, &message, now, report, learned).await;
                }
                return Flow::Continue;
            }
            Err(ComputeError::Configuration { code, message }) => {
                report.config_failures += 1;
                let reason = format!("{code}: {message}");
                for j in jobs.iter_mut() {
                    bounce::refuse_payer(s, j, reason.clone(), now, report, learned).await;
                }
                return Flow::Continue;
            }
            Err(ComputeError::Denied { code, message }) => {
                report.denied += 1;
                let reason = format!("{code}: {message}");
                for j in jobs.iter_mut() {
                    bounce::refuse_payer(s, j, reason.clone(), now, report, learned).await;
                }
                return Flow::Continue;
            }
            Err(ComputeError::Credentials { code, message }) => {
                for j in jobs.iter_mut() {
                    bounce::credentials_refused(s, j, &code, &message, now, report, learned).await;
                }
                return Flow::StopPass;
            }
            Err(e @ ComputeError::IdempotentMismatch { .. }) => {
                for j in jobs.iter_mut() {
                    fail_fast(s, j, e.to_string(), now, report).await;
                }
                return Flow::Continue;
            }
            Err(ComputeError::Transient { code, message }) => {
                // Maybe applied: the repair finds the group's instances by its tag next pass.
                tracing::warn!(group = %token, %code, %message, "RunInstances outcome unknown; repairing next pass.");
                report.transient += 1;
                return Flow::Continue;
            }
        }
    }
    for j in jobs.iter_mut() {
        bounce::no_rung_launched(s, j, now, report).await;
    }
    Flow::Continue
}

/// Records each job's instance (the member whose launch index is the job's) as running, in
/// one transaction (each job's own write if another writer moved one of them); a job whose
/// index EC2 did not launch goes back to waiting, no retry spent.
async fn settle(
    s: &Scheduler,
    jobs: &mut [Job],
    members: Vec<crate::ports::GroupMember>,
    now: DateTime<Utc>,
    report: &mut LaunchReport,
) {
    let launched = members.len();
    let k = jobs.len();
    let member = |j: &Job| {
        let index = j.current_attempt().and_then(|a| a.launch_index);
        members.iter().find(|m| Some(m.launch_index) == index)
    };
    let mut running: Vec<(usize, u64)> = Vec::new();
    for (i, j) in jobs.iter_mut().enumerate() {
        if let Some(m) = member(j) {
            if let Some(expected) = to_running(s, j, &m.launched, now, report).await {
                running.push((i, expected));
            }
        }
    }
    let mut ran_jobs: Vec<Job> = running.iter().map(|(i, _)| jobs[*i].clone()).collect();
    let expected: Vec<u64> = running.iter().map(|(_, v)| *v).collect();
    if save_all(s, &mut ran_jobs, &expected, now, report).await {
        for ((i, _), saved) in running.iter().zip(ran_jobs) {
            jobs[*i] = saved;
        }
        for (i, _) in &running {
            if let Some(m) = member(&jobs[*i]) {
                ran(&jobs[*i], &m.launched, report);
            }
        }
    } else {
        for (i, expected) in &running {
            if save(s, &mut jobs[*i], *expected, now, report).await {
                if let Some(m) = member(&jobs[*i]) {
                    ran(&jobs[*i], &m.launched, report);
                }
            }
        }
    }
    for j in jobs.iter_mut() {
        let index = j.current_attempt().and_then(|a| a.launch_index);
        match member(j) {
            Some(_) => {}
            None => {
                let reason = format!(
                    "EC2 launched {launched} of the {} instances of its launch group; this \
                     job's launch index {} was not among them",
                    k,
                    index.map_or_else(|| "?".to_owned(), |i| i.to_string())
                );
                tracing::info!(job_id = %j.job_id, reason = %reason, "Back to waiting; no retry spent.");
                report.group_shortfalls += 1;
                bounce::requeue(s, j, reason, None, now, report).await;
            }
        }
    }
}

/// Finishes a group launch a crashed pass left in `launching`: each job whose instance the
/// group tag and its launch index find is adopted (or recorded gone); when none of the
/// group's instances exists, the jobs still in the group go out again with the recorded
/// token (EC2 answers the same instances if the first call did launch them).
pub(super) async fn repair(
    s: &Scheduler,
    payer: &Payer,
    group: &str,
    jobs: &mut [&mut Job],
    now: DateTime<Utc>,
    report: &mut LaunchReport,
    learned: &mut Learned,
) -> Result<bool, String> {
    let found = s
        .deps
        .compute
        .find_group(&s.settings.cluster, group)
        .await
        .map_err(|e| format!("looking up launch group {group}'s instances: {e}"))?;
    if !found.is_empty() {
        for job in jobs.iter_mut() {
            let index = job.current_attempt().and_then(|a| a.launch_index);
            match found
                .iter()
                .find(|i| i.launch_index.is_some() && i.launch_index == index)
            {
                Some(inst) if inst.state.is_live() => {
                    tracing::info!(job_id = %job.job_id, instance_id = %inst.instance_id, %group, "Adopting the instance of an interrupted group launch.");
                    report.adopted += 1;
                    let launched = Launched {
                        instance_id: inst.instance_id.clone(),
                        availability_zone: inst.availability_zone.clone(),
                        launched_at: inst.launched_at,
                    };
                    mark_running(s, job, &launched, now, report).await;
                }
                Some(ended) => {
                    super::record_gone(s, job, ended, now, report).await;
                }
                None => {
                    report.group_shortfalls += 1;
                    let reason =
                        "EC2 did not launch this job's index of its launch group".to_owned();
                    bounce::requeue(s, job, reason, None, now, report).await;
                }
            }
        }
        return Ok(false);
    }
    // Nothing launched that describe shows: claim the replay (one transaction), then send
    // the same group again with its recorded token.
    let mut owned: Vec<Job> = jobs.iter().map(|j| (**j).clone()).collect();
    owned.sort_by_key(|j| j.current_attempt().and_then(|a| a.launch_index));
    let indices: Vec<Option<u32>> = owned
        .iter()
        .map(|j| j.current_attempt().and_then(|a| a.launch_index))
        .collect();
    let whole = indices
        .iter()
        .enumerate()
        .all(|(i, x)| *x == Some(i as u32));
    let Some(rung) = owned[0].current_attempt().and_then(|a| a.rung.clone()) else {
        return Ok(false);
    };
    let mut expected = Vec::with_capacity(owned.len());
    for j in owned.iter_mut() {
        expected.push(j.version);
        j.version += 1;
    }
    if !whole {
        // Part of the group moved on: what is left is another launch, with its own token
        // and its own indices.
        let token = token_of(s, &owned, &rung);
        for (i, j) in owned.iter_mut().enumerate() {
            if let Some(a) = j.current_attempt_mut() {
                a.client_token = Some(token.clone());
                a.launch_group = Some(token.clone());
                a.launch_index = Some(i as u32);
            }
        }
    }
    if !save_all(s, &mut owned, &expected, now, report).await {
        return Ok(false);
    }
    report.replayed += owned.len() as u32;
    let ladder = vec![rung];
    let entries: Result<Vec<String>, String> = owned
        .iter()
        .map(|j| s.deps.user_data.render(payer, j, j.attempt))
        .collect();
    let flow = match entries {
        Ok(entries) => {
            walk(
                s, payer, &mut owned, &entries, &ladder, 0, now, report, learned,
            )
            .await
        }
        Err(e) => {
            let reason = format!("user-data: {e}");
            for j in owned.iter_mut() {
                bounce::refuse_payer(s, j, reason.clone(), now, report, learned).await;
            }
            Flow::Continue
        }
    };
    for j in jobs.iter_mut() {
        if let Some(done) = owned.iter().find(|o| o.job_id == j.job_id) {
            **j = done.clone();
        }
    }
    Ok(matches!(flow, Flow::StopPass))
}
