//! Steps 5 (and its repair) of a pass: move planned jobs `queued → launching → running`, one
//! RunInstances each, walking the fallback ladder on capacity errors; and finish launches a
//! crashed pass left in `launching` by adopting the attempt's instance (found by its tags) or,
//! only if there is none, replaying RunInstances with the same client token.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::report::LaunchReport;
use super::Scheduler;
use crate::job::{Attempt, Job, JobState, PriceSource};
use crate::names::tags;
use crate::plan::Plan;
use crate::ports::{ComputeError, InstanceState, LaunchRequest, Launched, StoreError};
use crate::profile::{CapacityType, Payer};
use crate::sizing::{self, Rung};

/// EC2's ClientToken for one (job, attempt, rung): at most 64 ASCII characters, stable across
/// processes and releases (FNV-1a, not the std hasher, whose output may change).
pub fn client_token(job_id: &str, attempt: u32, rung: &Rung) -> String {
    let input = format!(
        "{job_id}\u{1f}{attempt}\u{1f}{}\u{1f}{}\u{1f}{}",
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
enum Flow {
    Continue,
    StopPass,
}

fn launch_request(
    s: &Scheduler,
    payer: &Payer,
    job: &Job,
    attempt: u32,
    rung: &Rung,
    user_data: String,
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
async fn save(
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

fn transition(
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
fn price(s: &Scheduler, rung: &Rung) -> (Option<f64>, Option<PriceSource>) {
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

async fn mark_running(
    s: &Scheduler,
    job: &mut Job,
    launched: &Launched,
    now: DateTime<Utc>,
    report: &mut LaunchReport,
) {
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
    if let Some(expected) = transition(job, JobState::Running, None, now) {
        if save(s, job, expected, now, report).await {
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
    }
}

/// Ends the attempt as failed (not retryable: a configuration error) and the job as dead.
async fn fail_fast(
    s: &Scheduler,
    job: &mut Job,
    reason: String,
    now: DateTime<Utc>,
    report: &mut LaunchReport,
) {
    tracing::warn!(job_id = %job.job_id, reason = %reason, "Launch failed on configuration; the job is dead.");
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

/// Tries the ladder from rung `start` with one RunInstances per rung until one launches.
async fn launch_ladder(
    s: &Scheduler,
    payer: &Payer,
    job: &mut Job,
    ladder: &[Rung],
    start: usize,
    now: DateTime<Utc>,
    report: &mut LaunchReport,
) -> Flow {
    let attempt = job.attempt;
    for (i, rung) in ladder.iter().enumerate().skip(start) {
        let token = client_token(&job.job_id, attempt, rung);
        if i > start {
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
        }
        let user_data = match s.deps.user_data.render(payer, job, attempt) {
            Ok(u) => u,
            Err(e) => {
                fail_fast(s, job, format!("user-data: {e}"), now, report).await;
                return Flow::Continue;
            }
        };
        let req = launch_request(s, payer, job, attempt, rung, user_data, token);
        match s.deps.compute.launch(&req).await {
            Ok(launched) => {
                mark_running(s, job, &launched, now, report).await;
                return Flow::Continue;
            }
            Err(ComputeError::Capacity { code, .. }) => {
                tracing::info!(job_id = %job.job_id, rung = %rung, %code, "No capacity on this rung; trying the next.");
                report.capacity_fallbacks += 1;
            }
            Err(ComputeError::Throttled { code }) => {
                // The job stays `launching`; the next pass repairs it with the same token.
                tracing::warn!(job_id = %job.job_id, %code, "RunInstances throttled; no more launches this pass.");
                report.throttled = true;
                return Flow::StopPass;
            }
            Err(ComputeError::Quota { code, message }) => {
                report.quota_stops += 1;
                if let Some(expected) = transition(
                    job,
                    JobState::Queued,
                    Some(format!("{code}: {message}")),
                    now,
                ) {
                    save(s, job, expected, now, report).await;
                }
                return Flow::StopPass;
            }
            Err(
                e @ (ComputeError::Configuration { .. } | ComputeError::IdempotentMismatch { .. }),
            ) => {
                let reason = match &e {
                    ComputeError::Configuration { code, message } => format!("{code}: {message}"),
                    other => other.to_string(),
                };
                fail_fast(s, job, reason, now, report).await;
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
    let reason = format!(
        "no capacity on any of {} rung(s)",
        ladder.len().saturating_sub(start)
    );
    if let Some(a) = job.current_attempt_mut() {
        a.reason = Some(reason.clone());
        a.finished_at = Some(s.moment(now));
    }
    if let Some(expected) = transition(job, JobState::Queued, Some(reason), now) {
        job.not_before = Some(now + chrono::Duration::seconds(60));
        save(s, job, expected, now, report).await;
    }
    Flow::Continue
}

/// Applies the plan's marks, then launches its jobs in rank order.
pub(super) async fn execute(
    s: &Scheduler,
    payers: &[Payer],
    jobs: &[Job],
    plan: &Plan<'_>,
    now: DateTime<Utc>,
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
    for launch in &plan.launches {
        let (Some(job), Some(payer)) = (
            by_id.get(launch.job_id),
            payers.iter().find(|p| p.id() == launch.payer_id),
        ) else {
            continue;
        };
        let mut job = (*job).clone();
        let rung = &launch.ladder[0];
        let token = client_token(&job.job_id, launch.attempt, rung);
        job.attempt = launch.attempt;
        job.not_before = None;
        let (usd_per_hour, price_source) = price(s, rung);
        job.attempts.push(Attempt {
            number: launch.attempt,
            rung: Some(rung.clone()),
            client_token: Some(token),
            usd_per_hour,
            price_source,
            root_volume_gib: Some(payer.profile.launch.root_volume_gib),
            ..Attempt::default()
        });
        let Some(expected) = transition(&mut job, JobState::Launching, None, now) else {
            continue;
        };
        if !save(s, &mut job, expected, now, &mut report).await {
            continue;
        }
        if let Flow::StopPass =
            launch_ladder(s, payer, &mut job, &launch.ladder, 0, now, &mut report).await
        {
            break;
        }
    }
    report
}

/// Finishes launches left in `launching` by a pass that stopped part-way. Updates `jobs` in
/// place so the plan that follows sees the repaired states.
pub(super) async fn repair(
    s: &Scheduler,
    payers: &[Payer],
    jobs: &mut [Job],
    now: DateTime<Utc>,
    budget: &mut u32,
) -> LaunchReport {
    let mut report = LaunchReport::default();
    for job in jobs.iter_mut().filter(|j| j.state == JobState::Launching) {
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
            // It launched and is already gone, and the ledger never heard from it. Its events
            // may still be on the queue (or held by a reader that stopped): record the
            // instance as this attempt's and as gone, and let the reconciler end the attempt
            // only once none of its events can still arrive. A `finished` that comes first
            // settles the job.
            let seen = s.moment(now);
            if let Some(a) = job.current_attempt_mut() {
                a.instance_id = Some(ended.instance_id.clone());
                a.availability_zone.clone_from(&ended.availability_zone);
                a.launched_at = ended.launched_at.or(a.launched_at).or(Some(seen));
                a.gone_at = Some(a.launched_at.map_or(seen, |l| l.max(seen)));
            }
            if let Some(expected) = transition(job, JobState::Running, None, now) {
                if save(s, job, expected, now, &mut report).await {
                    tracing::warn!(job_id = %job.job_id, instance_id = %ended.instance_id, attempt = job.attempt, "A launch's instance ended before its launch was recorded; its events decide the attempt.");
                    report.found_gone += 1;
                }
            }
            continue;
        }
        if *budget == 0 {
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
        // Replay the recorded rung first (same token), then the rest of the ladder after it.
        let start = ladder.iter().position(|r| *r == rung).unwrap_or_else(|| {
            ladder.insert(0, rung.clone());
            0
        });
        report.replayed += 1;
        if let Flow::StopPass = launch_ladder(s, payer, job, &ladder, start, now, &mut report).await
        {
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
    let token = client_token(&job.job_id, attempt, rung);
    Ok(launch_request(
        s, payer, job, attempt, rung, user_data, token,
    ))
}
