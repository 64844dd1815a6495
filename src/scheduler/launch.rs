//! Steps 5 (and its repair) of a pass: move planned jobs `queued → launching → running`, one
//! RunInstances each, walking the fallback ladder on capacity errors; and finish launches a
//! crashed pass left in `launching` by adopting the attempt's instance (found by its tags) or,
//! only if there is none, replaying RunInstances with the same client token.
//!
//! What EC2 answers decides what comes next, by what it means: no capacity or a full quota
//! moves to the next rung (a full quota, or spot refused, leaves out every rung it covers for
//! the rest of the pass); a launch that got no instance puts the job back to waiting and
//! spends no retry ([`bounce`]).

mod bounce;
mod group;

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::learned::Learned;
use super::report::LaunchReport;
use super::Scheduler;
use crate::aws::permissions;
use crate::job::{Attempt, Fallback, Job, JobState, PriceSource};
use crate::names::tags;
use crate::plan::Plan;
use crate::ports::{
    ComputeError, InstanceState, LaunchRequest, Launched, ManagedInstance, StoreError,
};
use crate::profile::{CapacityType, Payer};
use crate::retry::FailureCause;
use crate::sizing::{self, Rung};

/// EC2's ClientToken for one (deployment, job, attempt, rung): at most 64 ASCII characters,
/// stable across processes and releases (FNV-1a, not the std hasher, whose output may change).
///
/// EC2 scopes a token to the account and region, not to mayfly's deployment: `cluster` keeps
/// two deployments in one account (staging and production) that see the same `job_id` from
/// sharing a token, and with it one instance or an `IdempotentParameterMismatch`. Tokens made
/// before the cluster was part of them stay on their attempts, and a repair replays the
/// recorded token, never a recomputed one.
pub fn client_token(cluster: &str, job_id: &str, attempt: u32, rung: &Rung) -> String {
    let input = format!(
        "{cluster}\u{1f}{job_id}\u{1f}{attempt}\u{1f}{}\u{1f}{}\u{1f}{}",
        rung.instance_type, rung.subnet, rung.capacity
    );
    let fnv = |seed: u64| {
        input.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    format!(
        "mayfly-{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

/// Whether to go on launching in this pass.
pub(super) enum Flow {
    Continue,
    StopPass,
}

pub(super) fn launch_request(
    s: &Scheduler,
    payer: &Payer,
    job: &Job,
    attempt: u32,
    rung: &Rung,
    user_data: Vec<u8>,
    token: String,
) -> LaunchRequest {
    let l = &payer.profile.launch;
    let tag = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    LaunchRequest {
        client_token: token,
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
        tags: vec![
            tag("Name", &format!("mayfly {}", job.job_id)),
            tag(tags::CLUSTER, &s.settings.cluster),
            tag(tags::JOB_ID, &job.job_id),
            tag(tags::ATTEMPT, &attempt.to_string()),
            tag(tags::PAYER, &job.payer_id),
            tag(tags::KIND, &job.kind),
            tag(tags::BATCH, &job.batch),
            tag(tags::RUNG, &rung.to_string()),
        ],
    }
}

/// Writes `job` (already changed in memory) conditional on `expected`, stamped with the
/// moment of the write (a repair judges a launch stale from it).
pub(super) async fn save(
    s: &Scheduler,
    job: &mut Job,
    expected: u64,
    now: DateTime<Utc>,
    report: &mut LaunchReport,
) -> bool {
    job.updated_at = Some(s.moment(now));
    match s.deps.ledger.update(job, expected).await {
        Ok(()) => true,
        Err(StoreError::Conflict(_)) => {
            // Another scheduler moved this job first: it owns it now.
            report.conflicts += 1;
            false
        }
        Err(e) => {
            report
                .errors
                .push(format!("writing job {}: {e}", job.job_id));
            false
        }
    }
}

pub(super) fn transition(
    job: &mut Job,
    to: JobState,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> Option<u64> {
    let expected = job.version;
    job.transition(to, reason, now).ok().map(|()| expected)
}

/// The price known before launch: on demand, from the catalog. A spot rung's price is read
/// after launch, for its type and AZ ([`spot_price`]).
pub(super) fn price(s: &Scheduler, rung: &Rung) -> (Option<f64>, Option<PriceSource>) {
    match rung.capacity {
        CapacityType::OnDemand => (
            s.catalog
                .get(&rung.instance_type)
                .map(|t| t.on_demand_usd_per_hour),
            Some(PriceSource::OnDemand),
        ),
        CapacityType::Spot => (None, None),
    }
}

/// The spot price of a launched spot instance, read once per (type, AZ) per pass. A failure
/// never fails the launch: the on-demand price stands in, and the attempt says so.
async fn spot_price(
    s: &Scheduler,
    instance_type: &str,
    az: Option<&str>,
    report: &mut LaunchReport,
) -> (Option<f64>, PriceSource) {
    let read = match az {
        None => Err("the launch named no availability zone".to_owned()),
        Some(az) => {
            let key = (instance_type.to_owned(), az.to_owned());
            match report.spot_prices.get(&key) {
                Some(known) => known.clone(),
                None => {
                    let got = s
                        .deps
                        .compute
                        .spot_price(instance_type, az)
                        .await
                        .map_err(|e| e.to_string());
                    report.spot_prices.insert(key, got.clone());
                    got
                }
            }
        }
    };
    match read {
        Ok(p) => (Some(p), PriceSource::Spot),
        Err(why) => {
            tracing::warn!(%instance_type, reason = %why, "No spot price; recording the on-demand price.");
            let on_demand = s
                .catalog
                .get(instance_type)
                .map(|t| t.on_demand_usd_per_hour);
            (on_demand, PriceSource::OnDemandFallback { why })
        }
    }
}

pub(super) async fn mark_running(
    s: &Scheduler,
    job: &mut Job,
    launched: &Launched,
    now: DateTime<Utc>,
    report: &mut LaunchReport,
) {
    if let Some(expected) = to_running(s, job, launched, now, report).await {
        if save(s, job, expected, now, report).await {
            ran(job, launched, report);
        }
    }
}

/// Records `launched` on the job's attempt and moves the job to `running`, in memory; the
/// version the write must find.
pub(super) async fn to_running(
    s: &Scheduler,
    job: &mut Job,
    launched: &Launched,
    now: DateTime<Utc>,
    report: &mut LaunchReport,
) -> Option<u64> {
    let spot_type = job
        .current_attempt()
        .and_then(|a| a.rung.as_ref())
        .filter(|r| r.capacity == CapacityType::Spot)
        .map(|r| r.instance_type.clone());
    let spot = match spot_type {
        Some(t) => Some(spot_price(s, &t, launched.availability_zone.as_deref(), report).await),
        None => None,
    };
    if let Some(a) = job.current_attempt_mut() {
        if let Some((usd, source)) = spot {
            a.usd_per_hour = usd;
            a.price_source = Some(source);
        }
        a.instance_id = Some(launched.instance_id.clone());
        a.availability_zone.clone_from(&launched.availability_zone);
        a.launched_at = Some(launched.launched_at.unwrap_or_else(|| s.moment(now)));
    }
    job.profile_refused_since = None;
    transition(job, JobState::Running, None, now)
}

/// Reports a job whose `running` was written.
pub(super) fn ran(job: &Job, launched: &Launched, report: &mut LaunchReport) {
    let instance_type = job
        .current_attempt()
        .and_then(|a| a.rung.as_ref())
        .map(|r| r.instance_type.clone())
        .unwrap_or_default();
    tracing::info!(job_id = %job.job_id, instance_id = %launched.instance_id, %instance_type, "Launched instance.");
    report.instances.push((
        job.job_id.clone(),
        launched.instance_id.clone(),
        instance_type,
    ));
}

/// Ends the attempt as failed and the job as dead: the same client token was used with other
/// parameters, so the attempt's instance may exist unseen, and another attempt could run the
/// job twice.
pub(super) async fn fail_fast(
    s: &Scheduler,
    job: &mut Job,
    reason: String,
    now: DateTime<Utc>,
    report: &mut LaunchReport,
) {
    tracing::warn!(job_id = %job.job_id, reason = %reason, "Launch failed with a client token reused with other parameters; the job is dead.");
    if let Some(a) = job.current_attempt_mut() {
        a.reason = Some(reason.clone());
        a.finished_at = Some(s.moment(now));
    }
    report.config_failures += 1;
    if let Some(expected) = transition(job, JobState::Failed, Some(reason.clone()), now) {
        if save(s, job, expected, now, report).await {
            if let Some(expected) = transition(job, JobState::Dead, Some(reason), now) {
                save(s, job, expected, now, report).await;
            }
        }
    }
}

/// Notes on the attempt that `rung` did not launch, and why.
pub(super) fn fell_back(job: &mut Job, rung: &Rung, code: &str, skipped: bool) {
    if let Some(a) = job.current_attempt_mut() {
        a.fallbacks.push(Fallback {
            rung: rung.clone(),
            code: code.to_owned(),
            skipped,
        });
    }
}

/// Tries the ladder from rung `start` (the rung the attempt records) with one RunInstances
/// per rung until one launches, leaving out the rungs this pass already knows refused.
/// The recorded rung goes out with the attempt's recorded client token (a repair's replay is
/// the same launch, whichever release recorded it); every rung after it is a new launch with a
/// new token.
#[allow(clippy::too_many_arguments)]
async fn launch_ladder(
    s: &Scheduler,
    payer: &Payer,
    job: &mut Job,
    ladder: &[Rung],
    start: usize,
    now: DateTime<Utc>,
    report: &mut LaunchReport,
    learned: &mut Learned,
) -> Flow {
    let attempt = job.attempt;
    let mut recorded = start;
    for (i, rung) in ladder.iter().enumerate().skip(start) {
        if let Some(code) = learned.skip(rung) {
            let code = code.to_owned();
            fell_back(job, rung, &code, true);
            report.rungs_skipped += 1;
            continue;
        }
        let token = match job.current_attempt().and_then(|a| a.client_token.clone()) {
            Some(recorded_token) if i == recorded => recorded_token,
            _ => client_token(&s.settings.cluster, &job.job_id, attempt, rung),
        };
        if i != recorded {
            // A new rung is a new launch: record it (and its token) before calling EC2.
            if let Some(a) = job.current_attempt_mut() {
                a.rung = Some(rung.clone());
                a.client_token = Some(token.clone());
                (a.usd_per_hour, a.price_source) = price(s, rung);
            }
            let expected = job.version;
            job.version += 1;
            job.updated_at = Some(now);
            if !save(s, job, expected, now, report).await {
                return Flow::Continue;
            }
            recorded = i;
        }
        let user_data = match s.deps.user_data.render(payer, job, attempt) {
            Ok(u) => u,
            Err(e) => {
                // The payer's template cannot render this job: its settings need an operator.
                let reason = format!("user-data: {e}");
                bounce::refuse_payer(s, job, reason, now, report, learned).await;
                return Flow::Continue;
            }
        };
        let req = launch_request(s, payer, job, attempt, rung, user_data.into(), token);
        match s.deps.compute.launch(&req).await {
            Ok(launched) => {
                mark_running(s, job, &launched, now, report).await;
                return Flow::Continue;
            }
            Err(ComputeError::Capacity { code, .. }) => {
                tracing::info!(job_id = %job.job_id, rung = %rung, %code, "No capacity on this rung; trying the next.");
                fell_back(job, rung, &code, false);
                report.capacity_fallbacks += 1;
            }
            Err(ComputeError::Quota { code, message }) => {
                // EC2 names no quota: the one this rung counts against is full. Only the
                // launches that count against it wait; rungs of other quotas may go.
                tracing::info!(job_id = %job.job_id, rung = %rung, %code, %message, "A vCPU quota is full; leaving its rungs out this pass.");
                learned.quota_full(rung, &code);
                fell_back(job, rung, &code, false);
                report.quota_stops += 1;
            }
            Err(ComputeError::SpotUnavailable { code, message }) => {
                tracing::error!(job_id = %job.job_id, %code, %message, fix = permissions::SPOT_ROLE_FIX, "Spot refused for this account; launching on demand instead.");
                learned.spot_refused(&code);
                fell_back(job, rung, &code, false);
                report.spot_refusals += 1;
            }
            Err(ComputeError::Throttled { code }) => {
                // The job stays `launching`; the next pass repairs it with the same token.
                tracing::warn!(job_id = %job.job_id, %code, "RunInstances throttled; no more launches this pass.");
                report.throttled = true;
                return Flow::StopPass;
            }
            Err(ComputeError::ProfileNotReady { code, message }) => {
                bounce::profile_not_ready(s, job, &code, &message, now, report, learned).await;
                return Flow::Continue;
            }
            Err(ComputeError::Configuration { code, message }) => {
                report.config_failures += 1;
                let reason = format!("{code}: {message}");
                bounce::refuse_payer(s, job, reason, now, report, learned).await;
                return Flow::Continue;
            }
            Err(ComputeError::Denied { code, message }) => {
                report.denied += 1;
                let reason = format!("{code}: {message}");
                bounce::refuse_payer(s, job, reason, now, report, learned).await;
                return Flow::Continue;
            }
            Err(ComputeError::Credentials { code, message }) => {
                bounce::credentials_refused(s, job, &code, &message, now, report, learned).await;
                return Flow::StopPass;
            }
            Err(e @ ComputeError::IdempotentMismatch { .. }) => {
                fail_fast(s, job, e.to_string(), now, report).await;
                return Flow::Continue;
            }
            Err(ComputeError::Transient { code, message }) => {
                // Maybe applied: the repair step finds the instance by its tags next pass.
                tracing::warn!(job_id = %job.job_id, %code, %message, "RunInstances outcome unknown; repairing next pass.");
                report.transient += 1;
                return Flow::Continue;
            }
        }
    }
    bounce::no_rung_launched(s, job, now, report).await;
    Flow::Continue
}

/// The ladder of a job's next attempt: the planner's, except after EC2 took back the last
/// attempt's instance for lack of capacity, when it starts after that rung (and wraps).
fn ladder_for(job: &Job, planned: &[Rung]) -> Vec<Rung> {
    let mut ladder = planned.to_vec();
    let last = job
        .current_attempt()
        .filter(|a| matches!(a.cause, Some(FailureCause::NoCapacity { .. })))
        .and_then(|a| a.rung.as_ref());
    if let Some(p) = last.and_then(|r| ladder.iter().position(|x| x == r)) {
        ladder.rotate_left(p + 1);
    }
    ladder
}

/// A planned launch ready to go: its job (a copy to change), payer and ladder, and the first
/// rung this pass does not already know refused.
pub(super) struct Ready<'a> {
    pub job: Job,
    pub payer: &'a Payer,
    pub attempt: u32,
    pub ladder: Vec<Rung>,
    pub first: usize,
}

impl Ready<'_> {
    /// Starts the planned attempt on rung `first` with `token`: in memory only.
    fn start(
        &mut self,
        s: &Scheduler,
        token: String,
        learned: &Learned,
        now: DateTime<Utc>,
    ) -> Option<u64> {
        let job = &mut self.job;
        let rung = &self.ladder[self.first];
        job.attempt = self.attempt;
        job.not_before = None;
        let (usd_per_hour, price_source) = price(s, rung);
        let fallbacks = self.ladder[..self.first]
            .iter()
            .map(|r| Fallback {
                rung: r.clone(),
                code: learned.skip(r).unwrap_or_default().to_owned(),
                skipped: true,
            })
            .collect();
        job.push_attempt(Attempt {
            number: self.attempt,
            rung: Some(rung.clone()),
            client_token: Some(token),
            usd_per_hour,
            price_source,
            root_volume_gib: Some(self.payer.profile.launch.root_volume_gib),
            fallbacks,
            ..Attempt::default()
        });
        transition(job, JobState::Launching, None, now)
    }
}

/// Applies the plan's marks, then launches its jobs in rank order: consecutive launches of
/// one payer and ladder as launch groups (one RunInstances each, [`group`]), the others one
/// by one; at most `calls` RunInstances.
pub(super) async fn execute(
    s: &Scheduler,
    payers: &[Payer],
    jobs: &[Job],
    plan: &Plan<'_>,
    now: DateTime<Utc>,
    calls: u32,
    learned: &mut Learned,
) -> LaunchReport {
    let mut report = LaunchReport::default();
    let by_id: HashMap<&str, &Job> = jobs.iter().map(|j| (j.job_id.as_str(), j)).collect();
    for mark in &plan.marks {
        let Some(job) = by_id.get(mark.job_id) else {
            continue;
        };
        let mut job = (*job).clone();
        let reason = (mark.to == JobState::Blocked)
            .then(|| "a lower-tier job of this batch is dead or cancelled".to_owned());
        if let Some(expected) = transition(&mut job, mark.to, reason, now) {
            if save(s, &mut job, expected, now, &mut report).await {
                report.marks += 1;
            }
        }
    }
    let mut used = 0u32;
    let mut pending: Vec<Ready<'_>> = Vec::new();
    let mut launches = plan.launches.iter().peekable();
    loop {
        // The next group: ready launches of one payer and ladder, up to the group's size.
        let next = launches.next();
        let ready = next.and_then(|launch| {
            let (Some(job), Some(payer)) = (
                by_id.get(launch.job_id),
                payers.iter().find(|p| p.id() == launch.payer_id),
            ) else {
                return None;
            };
            let ladder = ladder_for(job, &launch.ladder);
            let first = ladder.iter().position(|r| learned.skip(r).is_none());
            Some((job, payer, ladder, first, launch.attempt))
        });
        let joins = match (&ready, pending.first()) {
            (Some((job, payer, ladder, Some(first), _)), Some(head)) => {
                head.payer.id() == payer.id()
                    && head.ladder == *ladder
                    && head.first == *first
                    && (pending.len() as u32) < group::max_size(s, payer)
                    && !learned.is_paused(&job.payer_id)
            }
            _ => false,
        };
        if !joins && !pending.is_empty() {
            if learned.credentials_refused || used >= calls {
                report.launches_deferred += pending.len() as u32;
                pending.clear();
            } else {
                used += 1;
                let group = std::mem::take(&mut pending);
                let flow = if group.len() == 1 {
                    launch_one(s, group, now, &mut report, learned).await
                } else {
                    group::launch_new(s, group, now, &mut report, learned).await
                };
                if let Flow::StopPass = flow {
                    break;
                }
            }
        }
        let Some((job, payer, ladder, first, attempt)) = ready else {
            if next.is_none() {
                break;
            }
            continue;
        };
        if learned.credentials_refused {
            break;
        }
        // Rungs this pass already knows refused are left out before anything is written.
        let Some(first) = first else {
            report.launches_deferred += 1;
            continue;
        };
        if learned.is_paused(&job.payer_id) {
            report.launches_deferred += 1;
            continue;
        }
        pending.push(Ready {
            job: (*job).clone(),
            payer,
            attempt,
            ladder,
            first,
        });
    }
    report.launches_deferred += pending.len() as u32;
    report
}

/// Launches one job on its own: its attempt recorded, then one RunInstances per rung.
async fn launch_one(
    s: &Scheduler,
    mut group: Vec<Ready<'_>>,
    now: DateTime<Utc>,
    report: &mut LaunchReport,
    learned: &mut Learned,
) -> Flow {
    let Some(mut r) = group.pop() else {
        return Flow::Continue;
    };
    r.report_skipped(report);
    let rung = &r.ladder[r.first];
    let token = client_token(&s.settings.cluster, &r.job.job_id, r.attempt, rung);
    let Some(expected) = r.start(s, token, learned, now) else {
        return Flow::Continue;
    };
    if !save(s, &mut r.job, expected, now, report).await {
        return Flow::Continue;
    }
    launch_ladder(
        s, r.payer, &mut r.job, &r.ladder, r.first, now, report, learned,
    )
    .await
}

impl Ready<'_> {
    fn report_skipped(&self, report: &mut LaunchReport) {
        report.rungs_skipped += self.first as u32;
    }
}

/// A launch's instance ended before its launch was recorded, and the ledger never heard from
/// it. Its events may still be on the queue (or held by a reader that stopped): record the
/// instance as this attempt's and as gone, and let the reconciler end the attempt only once
/// none of its events can still arrive. A `finished` that comes first settles the job.
async fn record_gone(
    s: &Scheduler,
    job: &mut Job,
    ended: &ManagedInstance,
    now: DateTime<Utc>,
    report: &mut LaunchReport,
) {
    let seen = s.moment(now);
    if let Some(a) = job.current_attempt_mut() {
        a.instance_id = Some(ended.instance_id.clone());
        a.availability_zone.clone_from(&ended.availability_zone);
        a.launched_at = ended.launched_at.or(a.launched_at).or(Some(seen));
        a.gone_at = Some(a.launched_at.map_or(seen, |l| l.max(seen)));
        a.state_reason.clone_from(&ended.state_reason);
    }
    if let Some(expected) = transition(job, JobState::Running, None, now) {
        if save(s, job, expected, now, report).await {
            tracing::warn!(job_id = %job.job_id, instance_id = %ended.instance_id, attempt = job.attempt, "A launch's instance ended before its launch was recorded; its events decide the attempt.");
            report.found_gone += 1;
        }
    }
}

/// Finishes launches left in `launching` by a pass that stopped part-way. Updates `jobs` in
/// place so the plan that follows sees the repaired states.
pub(super) async fn repair(
    s: &Scheduler,
    payers: &[Payer],
    jobs: &mut [Job],
    now: DateTime<Utc>,
    budget: &mut u32,
    learned: &mut Learned,
) -> LaunchReport {
    let mut report = LaunchReport::default();
    let stale = |j: &Job| {
        j.state == JobState::Launching
            && j.updated_at
                .is_none_or(|t| s.moment(now) - t >= s.settings.repair_after)
    };
    let mut groups: Vec<(String, String)> = jobs
        .iter()
        .filter(|j| stale(j))
        .filter_map(|j| {
            let g = j.current_attempt()?.launch_group.clone()?;
            Some((g, j.payer_id.clone()))
        })
        .collect();
    groups.sort();
    groups.dedup();
    for (group, payer_id) in groups {
        let Some(payer) = payers.iter().find(|p| p.id() == payer_id) else {
            continue;
        };
        if *budget == 0 || learned.credentials_refused || learned.is_paused(&payer_id) {
            continue;
        }
        let mut members: Vec<&mut Job> = jobs
            .iter_mut()
            .filter(|j| {
                j.state == JobState::Launching
                    && j.current_attempt().and_then(|a| a.launch_group.as_deref())
                        == Some(group.as_str())
            })
            .collect();
        let replayed = report.replayed;
        match group::repair(s, payer, &group, &mut members, now, &mut report, learned).await {
            Ok(stop) => {
                if report.replayed > replayed {
                    *budget -= 1;
                }
                if stop {
                    *budget = 0;
                }
            }
            Err(e) => report.errors.push(e),
        }
    }
    for job in jobs.iter_mut().filter(|j| j.state == JobState::Launching) {
        if job
            .current_attempt()
            .is_some_and(|a| a.launch_group.is_some())
        {
            continue;
        }
        // Stale counted from the last write's moment to this one, not from a pass's start.
        let stale = job
            .updated_at
            .is_none_or(|t| s.moment(now) - t >= s.settings.repair_after);
        let Some((rung, number)) = job
            .current_attempt()
            .and_then(|a| a.rung.clone().map(|r| (r, a.number)))
        else {
            continue;
        };
        if !stale {
            continue;
        }
        let Some(payer) = payers.iter().find(|p| p.id() == job.payer_id) else {
            continue;
        };
        let found = match s
            .deps
            .compute
            .find_attempt(&s.settings.cluster, &job.job_id, number)
            .await
        {
            Ok(found) => found,
            Err(e) => {
                report
                    .errors
                    .push(format!("looking up job {}'s instance: {e}", job.job_id));
                continue;
            }
        };
        if let Some(live) = found.iter().find(|i| i.state.is_live()) {
            tracing::info!(job_id = %job.job_id, instance_id = %live.instance_id, "Adopting the instance of an interrupted launch.");
            let launched = Launched {
                instance_id: live.instance_id.clone(),
                availability_zone: live.availability_zone.clone(),
                launched_at: live.launched_at,
            };
            report.adopted += 1;
            mark_running(s, job, &launched, now, &mut report).await;
            continue;
        }
        if let Some(ended) = found.iter().find(|i| {
            matches!(
                i.state,
                InstanceState::Terminated | InstanceState::ShuttingDown
            )
        }) {
            record_gone(s, job, ended, now, &mut report).await;
            continue;
        }
        if *budget == 0 || learned.credentials_refused || learned.is_paused(&job.payer_id) {
            continue;
        }
        let Some(kind) = payer.kind(&job.kind) else {
            continue;
        };
        // Claim the replay first (a conditional write), so of several passes repairing at
        // once only one calls RunInstances. EC2 would dedupe a second call by its client
        // token; this keeps a replay single even where tokens are not honoured.
        let expected = job.version;
        job.version += 1;
        job.updated_at = Some(now);
        if !save(s, job, expected, now, &mut report).await {
            continue;
        }
        *budget -= 1;
        let types = sizing::choose_types(
            s.catalog,
            &kind.compute,
            job.input_bytes(),
            payer.profile.caps.max_vcpus,
        );
        let policy = kind.capacity.unwrap_or(payer.profile.launch.capacity);
        let mut ladder = sizing::ladder(&types, &payer.profile.launch.subnets, policy);
        // Replay the recorded rung first (with its recorded token), then the rest of the ladder.
        let start = ladder.iter().position(|r| *r == rung).unwrap_or_else(|| {
            ladder.insert(0, rung.clone());
            0
        });
        report.replayed += 1;
        let flow = launch_ladder(s, payer, job, &ladder, start, now, &mut report, learned).await;
        if let Flow::StopPass = flow {
            *budget = 0;
        }
    }
    report
}

/// The RunInstances request the next attempt of `job` on `rung` would make, its user-data
/// rendered: what `preflight` sends as a dry run. `Err` is why the user-data cannot be
/// rendered (the launch would fail the same way).
pub(crate) fn request_for(
    s: &Scheduler,
    payer: &Payer,
    job: &Job,
    rung: &Rung,
) -> Result<LaunchRequest, String> {
    let attempt = job.attempt + 1;
    let user_data = s.deps.user_data.render(payer, job, attempt)?;
    let token = client_token(&s.settings.cluster, &job.job_id, attempt, rung);
    Ok(launch_request(
        s,
        payer,
        job,
        attempt,
        rung,
        user_data.into(),
        token,
    ))
}
