//! Step 3 of a pass, and `mayfly reap`: reconcile the ledger with this deployment's instances,
//! both ways, from one DescribeInstances.
//!
//! From the ledger's side, each `running` job's instance is checked:
//! - gone (terminated, or absent) without a `finished` event: first recorded (`gone_at`),
//!   then, on a pass at least `lost_grace` later, the attempt is lost — a spot interruption if
//!   a notice came, otherwise a lost instance — and the retry policy applies. Only a pass that
//!   drained the events queue may judge, so a `finished` event still in flight is never
//!   mistaken for a loss.
//! - no `started` within the payer's boot timeout, no heartbeat within the heartbeat timeout,
//!   or running past its maximum runtime (plus one heartbeat timeout of slack, as the instance
//!   enforces the limit itself): the attempt fails, its instance is terminated, and the retry
//!   policy applies.
//! - `failed` jobs (a pass stopped between recording a failure and applying the policy) get
//!   the policy applied, and any instance of theirs still live is terminated.
//!
//! From EC2's side, each live instance no in-flight job owns is an orphan: its job is unknown,
//! terminal, on another attempt or not in flight (re-read with a consistent read before
//! judging). An orphan is marked with the `mayfly:orphaned-at` tag, and terminated by a pass
//! at least `orphan_grace` later, after a second consistent read. Instances without this
//! deployment's cluster tag are never touched, and those tagged `mayfly:protect` are never
//! terminated.
//!
//! Every ledger change is a write conditional on the version just read, so a pass acting on a
//! stale view (or a paused old leader) loses the condition and changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::events::decide_failed;
use super::Scheduler;
use crate::job::{Job, JobState};
use crate::names::tags;
use crate::ports::{InstanceState, ManagedInstance, StoreError};
use crate::profile::Payer;
use crate::retry::FailureCause;

/// What the reconciler concluded about one instance (or one job's missing instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// Runs its job's current attempt within every deadline.
    Healthy,
    /// Its launch is being recorded (`launching`); the repair step owns it.
    Launching,
    /// Gone without a `finished` event; judged lost after the grace period.
    Gone,
    /// Gone without a `finished` event for longer than the grace period.
    Lost,
    BootTimeout,
    HeartbeatTimeout,
    MaxRuntime,
    /// Its job's last attempt failed; the retry policy had not been applied.
    Failed,
    /// No in-flight job owns it.
    Orphan,
    /// Tagged `mayfly:protect`: reported, never terminated.
    Protected,
}

/// One line of the reap report.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceFinding {
    pub instance_id: Option<String>,
    pub instance_state: Option<InstanceState>,
    pub instance_type: Option<String>,
    pub job_id: Option<String>,
    pub attempt: Option<u32>,
    pub finding: Finding,
    /// Why, in words.
    pub why: String,
    /// What was done (or, in a dry run, what would be).
    pub action: String,
}

/// What reconciling did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileReport {
    pub dry_run: bool,
    /// Managed instances seen (every state).
    pub instances_seen: u32,
    pub healthy: u32,
    pub lost: u32,
    pub boot_timeouts: u32,
    pub heartbeat_timeouts: u32,
    pub max_runtime: u32,
    pub orphans_marked: u32,
    pub orphans_terminated: u32,
    /// Jobs the retry policy queued again, and those it declared dead.
    pub requeued: u32,
    pub dead: u32,
    /// The jobs queued again, by the cause of their failed attempt.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub retries: BTreeMap<String, u32>,
    /// Instances terminated by this pass.
    pub terminated: Vec<String>,
    /// Payers the circuit breaker paused.
    pub paused_payers: Vec<String>,
    /// Every instance that is not simply healthy, and every job whose instance is gone.
    pub findings: Vec<InstanceFinding>,
    pub errors: Vec<String>,
}

/// How reconciling runs.
#[derive(Debug, Clone, Copy)]
pub struct ReconcileOptions {
    /// Judge and report only: no write, no tag, no termination.
    pub dry_run: bool,
    /// The events queue was drained this pass, so a missing `finished` event is not in
    /// flight. Without it, no job is judged lost.
    pub events_drained: bool,
    /// List healthy instances in the findings too (`mayfly reap` does; a pass does not).
    pub list_healthy: bool,
}

/// The tag that marks an orphan, with the time it was first seen (RFC 3339).
pub const ORPHANED_AT: &str = "mayfly:orphaned-at";

fn finding(
    inst: Option<&ManagedInstance>,
    job: Option<(&str, u32)>,
    finding: Finding,
    why: impl Into<String>,
    action: impl Into<String>,
) -> InstanceFinding {
    InstanceFinding {
        instance_id: inst.map(|i| i.instance_id.clone()),
        instance_state: inst.map(|i| i.state),
        instance_type: inst.map(|i| i.instance_type.clone()),
        job_id: job.map(|(j, _)| j.to_owned()),
        attempt: job.map(|(_, a)| a),
        finding,
        why: why.into(),
        action: action.into(),
    }
}

fn secs(d: chrono::Duration) -> String {
    crate::duration::Duration::from_secs(d.num_seconds().max(0) as u64).to_string()
}

/// A deadline the attempt has missed, if any.
fn overdue(
    job: &Job,
    payer: &Payer,
    inst: &ManagedInstance,
    now: DateTime<Utc>,
) -> Option<(FailureCause, String)> {
    let a = job.current_attempt()?;
    let t = &payer.profile.timeouts;
    let dur = |d: crate::duration::Duration| chrono::Duration::seconds(d.as_secs() as i64);
    match a.started_at {
        None => {
            let launched = a.launched_at.or(inst.launched_at)?;
            (now - launched > dur(t.boot)).then(|| {
                (
                    FailureCause::BootTimeout,
                    format!(
                        "no `started` event {} after launch (boot timeout {})",
                        secs(now - launched),
                        t.boot
                    ),
                )
            })
        }
        Some(started) => {
            let max = payer
                .kind(&job.kind)
                .map_or(t.max_runtime, |k| payer.max_runtime(k));
            if now - started > dur(max) + dur(t.heartbeat) {
                return Some((
                    FailureCause::MaxRuntime,
                    format!(
                        "running for {} (maximum runtime {max})",
                        secs(now - started)
                    ),
                ));
            }
            let last = a.last_heartbeat_at.unwrap_or(started);
            (now - last > dur(t.heartbeat)).then(|| {
                (
                    FailureCause::HeartbeatLost,
                    format!(
                        "last heartbeat {} ago (heartbeat timeout {})",
                        secs(now - last),
                        t.heartbeat
                    ),
                )
            })
        }
    }
}

/// Reconciles `jobs` (the pass's snapshot, updated in place) with the managed instances.
pub(super) async fn run(
    s: &Scheduler,
    payers: &[Payer],
    jobs: &mut [Job],
    now: DateTime<Utc>,
    opts: ReconcileOptions,
) -> ReconcileReport {
    let mut r = Reconciler {
        s,
        payers,
        now,
        opts,
        report: ReconcileReport {
            dry_run: opts.dry_run,
            ..ReconcileReport::default()
        },
    };
    let instances = match s.deps.compute.list_managed(&s.settings.cluster).await {
        Ok(found) => found,
        Err(e) => {
            r.report
                .errors
                .push(format!("listing this deployment's instances: {e}"));
            return r.report;
        }
    };
    // Never touch what is not ours, even if a filter let it through.
    let instances: Vec<ManagedInstance> = instances
        .into_iter()
        .filter(|i| i.tag(tags::CLUSTER) == Some(s.settings.cluster.as_str()))
        .collect();
    r.report.instances_seen = instances.len() as u32;
    let by_id: HashMap<&str, &ManagedInstance> = instances
        .iter()
        .map(|i| (i.instance_id.as_str(), i))
        .collect();
    let mut owned: HashSet<String> = HashSet::new();

    for job in jobs.iter_mut() {
        match job.state {
            JobState::Running => r.running(job, &by_id, &mut owned).await,
            JobState::Failed => r.failed(job, &by_id, &mut owned).await,
            JobState::Launching => {
                // The repair step adopts (or replays) the launch; its instance is not an orphan.
                let n = job.attempt.to_string();
                for i in &instances {
                    if i.tag(tags::JOB_ID) == Some(job.job_id.as_str())
                        && i.tag(tags::ATTEMPT) == Some(n.as_str())
                    {
                        owned.insert(i.instance_id.clone());
                    }
                }
            }
            _ => {}
        }
    }
    for inst in instances.iter().filter(|i| i.state.is_live()) {
        if !owned.contains(&inst.instance_id) {
            r.orphan(inst).await;
        }
    }
    r.report
}

struct Reconciler<'a> {
    s: &'a Scheduler,
    payers: &'a [Payer],
    now: DateTime<Utc>,
    opts: ReconcileOptions,
    report: ReconcileReport,
}

impl Reconciler<'_> {
    fn payer(&self, payer_id: &str) -> Option<&Payer> {
        self.payers.iter().find(|p| p.id() == payer_id)
    }

    async fn running(
        &mut self,
        job: &mut Job,
        by_id: &HashMap<&str, &ManagedInstance>,
        owned: &mut HashSet<String>,
    ) {
        let Some(a) = job.current_attempt() else {
            return;
        };
        let Some(iid) = a.instance_id.clone() else {
            return;
        };
        let key = (job.job_id.clone(), job.attempt);
        let gone_at = a.gone_at;
        let interrupted = a
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("spot interruption"));
        let inst = by_id.get(iid.as_str()).copied();
        match inst {
            Some(i) if i.state.is_live() => {
                owned.insert(iid.clone());
                let verdict = self
                    .payer(&job.payer_id)
                    .and_then(|p| overdue(job, p, i, self.now));
                match verdict {
                    None => {
                        self.report.healthy += 1;
                        if self.opts.list_healthy {
                            self.report.findings.push(finding(
                                Some(i),
                                Some((&key.0, key.1)),
                                Finding::Healthy,
                                "runs its job's current attempt",
                                "none",
                            ));
                        }
                    }
                    Some((cause, why)) => {
                        let kind = match cause {
                            FailureCause::BootTimeout => Finding::BootTimeout,
                            FailureCause::MaxRuntime => Finding::MaxRuntime,
                            _ => Finding::HeartbeatTimeout,
                        };
                        self.fail_attempt(job, cause, kind, why, Some(i)).await;
                    }
                }
            }
            _ => {
                let how = inst.map_or("not found", |i| match i.state {
                    InstanceState::ShuttingDown => "shutting down",
                    _ => "terminated",
                });
                if !self.opts.events_drained {
                    self.report.findings.push(finding(
                        inst,
                        Some((&key.0, key.1)),
                        Finding::Gone,
                        format!("instance {iid} is {how} without a `finished` event"),
                        "none yet: the events queue was not drained this pass",
                    ));
                    return;
                }
                match gone_at {
                    Some(first) if self.now - first >= self.s.settings.lost_grace => {
                        let cause = if interrupted {
                            FailureCause::SpotInterruption
                        } else {
                            FailureCause::InstanceLost
                        };
                        let why = format!(
                            "instance {iid} is {how}, first seen gone {} ago, and sent no `finished` event",
                            secs(self.now - first)
                        );
                        self.fail_attempt(job, cause, Finding::Lost, why, inst)
                            .await;
                    }
                    Some(first) => self.report.findings.push(finding(
                        inst,
                        Some((&key.0, key.1)),
                        Finding::Gone,
                        format!("instance {iid} is {how} without a `finished` event"),
                        format!(
                            "none yet: judged lost {} after it was first seen gone",
                            secs(first + self.s.settings.lost_grace - self.now)
                        ),
                    )),
                    None => {
                        let action = if self.opts.dry_run {
                            "would record it as gone; judged lost after the grace period".to_owned()
                        } else {
                            let mut updated = job.clone();
                            if let Some(a) = updated.current_attempt_mut() {
                                a.gone_at = Some(self.now);
                            }
                            match self.save(&mut updated, job.version).await {
                                Ok(()) => {
                                    *job = updated;
                                    format!(
                                        "recorded as gone; judged lost after {}",
                                        secs(self.s.settings.lost_grace)
                                    )
                                }
                                Err(e) => e,
                            }
                        };
                        self.report.findings.push(finding(
                            inst,
                            Some((&key.0, key.1)),
                            Finding::Gone,
                            format!("instance {iid} is {how} without a `finished` event"),
                            action,
                        ));
                    }
                }
            }
        }
    }

    /// Writes `job` with its version bumped, conditional on `expected`.
    async fn save(&mut self, job: &mut Job, expected: u64) -> Result<(), String> {
        job.version = expected + 1;
        job.updated_at = Some(self.now);
        match self.s.deps.ledger.update(job, expected).await {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict(_)) => {
                Err("none: the job changed meanwhile; the next pass looks again".into())
            }
            Err(e) => {
                let msg = format!("writing job {}: {e}", job.job_id);
                self.report.errors.push(msg.clone());
                Err(format!("none: {msg}"))
            }
        }
    }

    /// Terminates `inst` unless it is protected (or this is a dry run); says what happened.
    async fn terminate(&mut self, inst: &ManagedInstance) -> String {
        if inst.tag(tags::PROTECT).is_some() {
            return format!("{} kept: tagged {}", inst.instance_id, tags::PROTECT);
        }
        if self.opts.dry_run {
            return format!("would terminate {}", inst.instance_id);
        }
        match self
            .s
            .deps
            .compute
            .terminate(std::slice::from_ref(&inst.instance_id))
            .await
        {
            Ok(()) => {
                self.report.terminated.push(inst.instance_id.clone());
                format!("terminated {}", inst.instance_id)
            }
            Err(e) => {
                let msg = format!("terminating {}: {e}", inst.instance_id);
                self.report.errors.push(msg.clone());
                msg
            }
        }
    }

    /// Ends the job's current attempt with `cause`: re-reads the job, records the failure
    /// (conditional write), terminates the instance, applies the retry policy, and feeds the
    /// payer's circuit breaker.
    async fn fail_attempt(
        &mut self,
        job: &mut Job,
        cause: FailureCause,
        kind: Finding,
        why: String,
        inst: Option<&ManagedInstance>,
    ) {
        let key = (job.job_id.clone(), job.attempt);
        let live = inst.filter(|i| i.state.is_live());
        let report = |r: &mut Self, action: String| {
            r.report.findings.push(finding(
                inst,
                Some((&key.0, key.1)),
                kind,
                why.clone(),
                action,
            ));
        };
        if self.opts.dry_run {
            let t = match live {
                Some(i) => format!("would terminate {} and ", i.instance_id),
                None => "would ".to_owned(),
            };
            report(self, format!("{t}apply the retry policy ({cause})"));
            return;
        }
        // Act only on what the ledger says now.
        let fresh = match self.s.deps.ledger.get(&job.job_id).await {
            Ok(Some(j)) => j,
            Ok(None) => return,
            Err(e) => {
                self.report
                    .errors
                    .push(format!("reading job {}: {e}", job.job_id));
                return;
            }
        };
        let same = fresh.state == JobState::Running
            && fresh.attempt == job.attempt
            && fresh
                .current_attempt()
                .and_then(|a| a.instance_id.as_deref())
                == job.current_attempt().and_then(|a| a.instance_id.as_deref());
        if !same {
            *job = fresh;
            report(self, "none: the job moved on meanwhile".into());
            return;
        }
        let mut updated = fresh.clone();
        let never_started = updated
            .current_attempt()
            .is_some_and(crate::job::Attempt::never_started);
        let now = self.now;
        if let Some(a) = updated.current_attempt_mut() {
            a.reason = Some(cause.to_string());
            a.cause = Some(cause.clone());
            // The end of the attempt's bill: now for an instance terminated below, or when it
            // was first seen gone.
            a.ended_at = Some(match live {
                Some(_) => now,
                None => a.gone_at.unwrap_or(now),
            });
        }
        let expected = updated.version;
        if updated
            .transition(JobState::Failed, Some(cause.to_string()), self.now)
            .is_err()
        {
            return;
        }
        if let Err(e) = self.save(&mut updated, expected).await {
            *job = fresh;
            report(self, e);
            return;
        }
        match kind {
            Finding::Lost => self.report.lost += 1,
            Finding::BootTimeout => self.report.boot_timeouts += 1,
            Finding::HeartbeatTimeout => self.report.heartbeat_timeouts += 1,
            Finding::MaxRuntime => self.report.max_runtime += 1,
            _ => {}
        }
        let mut action = match live {
            Some(i) => self.terminate(i).await,
            None => "nothing to terminate".to_owned(),
        };
        let boot_failure = matches!(cause, FailureCause::BootTimeout)
            || (matches!(cause, FailureCause::InstanceLost) && never_started);
        if boot_failure {
            self.breaker(&updated).await;
        }
        action.push_str("; ");
        action.push_str(&self.apply_policy(&mut updated, &cause).await);
        *job = updated;
        report(self, action);
    }

    /// Applies the retry policy to a job just recorded as failed; says what it decided.
    async fn apply_policy(&mut self, job: &mut Job, cause: &FailureCause) -> String {
        let payer = self.payer(&job.payer_id).cloned();
        let expected = job.version;
        let before = job.clone();
        decide_failed(job, payer.as_ref(), cause, self.now);
        match self.save(job, expected).await {
            Ok(()) => match job.state {
                JobState::Queued => {
                    self.report.requeued += 1;
                    *self
                        .report
                        .retries
                        .entry(cause.label().to_owned())
                        .or_default() += 1;
                    let after = job
                        .not_before
                        .map(|t| format!(" not before {}", t.format("%H:%M:%S")))
                        .unwrap_or_default();
                    format!("job queued for attempt {}{after}", job.attempt + 1)
                }
                JobState::Dead => {
                    self.report.dead += 1;
                    format!(
                        "job dead: {}",
                        job.reason.as_deref().unwrap_or("no more attempts")
                    )
                }
                other => format!("job {other}"),
            },
            Err(e) => {
                *job = before;
                e
            }
        }
    }

    /// One more boot failure for the job's payer; pauses it at the profile's threshold.
    async fn breaker(&mut self, job: &Job) {
        let Some(payer) = self.payer(&job.payer_id) else {
            return;
        };
        let threshold = payer.profile.circuit_breaker.boot_failures;
        let config = &self.s.deps.config;
        let count = match config.add_boot_failure(&job.payer_id).await {
            Ok(c) => c,
            Err(e) => {
                self.report
                    .errors
                    .push(format!("counting a boot failure of {}: {e}", job.payer_id));
                return;
            }
        };
        if threshold == 0 || count < threshold {
            return;
        }
        // Pause with the reason, unless already paused (keep an operator's reason).
        for _ in 0..3 {
            let row = match config.get(&job.payer_id).await {
                Ok(Some(row)) => row,
                Ok(None) => return,
                Err(e) => {
                    self.report
                        .errors
                        .push(format!("reading payer {}: {e}", job.payer_id));
                    return;
                }
            };
            if row.paused.is_some() {
                return;
            }
            let reason = format!(
                "circuit breaker: {count} consecutive boot failures (last: job {} attempt {}); \
                 fix the launch settings, then `mayfly payers resume {}`",
                job.job_id, job.attempt, job.payer_id
            );
            match config
                .set_paused(&job.payer_id, Some(&reason), row.version, self.now)
                .await
            {
                Ok(_) => {
                    tracing::error!(payer_id = %job.payer_id, count, "Circuit breaker paused the payer.");
                    self.report.paused_payers.push(job.payer_id.clone());
                    return;
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => {
                    self.report
                        .errors
                        .push(format!("pausing payer {}: {e}", job.payer_id));
                    return;
                }
            }
        }
    }

    /// A `failed` job whose retry decision was not recorded: apply it now.
    async fn failed(
        &mut self,
        job: &mut Job,
        by_id: &HashMap<&str, &ManagedInstance>,
        owned: &mut HashSet<String>,
    ) {
        let Some(a) = job.current_attempt() else {
            return;
        };
        let cause = a.cause.clone().unwrap_or(match a.exit_code {
            Some(code) => FailureCause::ExitCode { code },
            None => FailureCause::InstanceLost,
        });
        let inst = a
            .instance_id
            .as_deref()
            .and_then(|id| by_id.get(id).copied());
        if let Some(i) = inst {
            owned.insert(i.instance_id.clone());
        }
        let key = (job.job_id.clone(), job.attempt);
        let why = format!("attempt {} failed ({cause}) and was not retried yet", key.1);
        let mut action = match inst.filter(|i| i.state.is_live()) {
            Some(i) => self.terminate(i).await + "; ",
            None => String::new(),
        };
        if self.opts.dry_run {
            action.push_str("would apply the retry policy");
        } else {
            action.push_str(&self.apply_policy(job, &cause).await);
        }
        self.report.findings.push(finding(
            inst,
            Some((&key.0, key.1)),
            Finding::Failed,
            why,
            action,
        ));
    }

    /// Judges a live instance no in-flight job of the snapshot owns.
    async fn orphan(&mut self, inst: &ManagedInstance) {
        let job_tag = inst.tag(tags::JOB_ID);
        let attempt_tag = inst.tag(tags::ATTEMPT).and_then(|a| a.parse::<u32>().ok());
        let job_ref = job_tag.map(|j| (j, attempt_tag.unwrap_or(0)));
        if inst.tag(tags::PROTECT).is_some() {
            self.report.findings.push(finding(
                Some(inst),
                job_ref,
                Finding::Protected,
                format!("tagged {}", tags::PROTECT),
                "none: protected instances are never terminated",
            ));
            return;
        }
        let why = match self.orphan_reason(inst).await {
            Ok(Some(why)) => why,
            Ok(None) => {
                // Owned after all (the snapshot was older than the instance list).
                if inst.tag(ORPHANED_AT).is_some() && !self.opts.dry_run {
                    if let Err(e) = self
                        .s
                        .deps
                        .compute
                        .set_tag(&inst.instance_id, ORPHANED_AT, None)
                        .await
                    {
                        self.report
                            .errors
                            .push(format!("clearing {}'s orphan mark: {e}", inst.instance_id));
                    }
                }
                return;
            }
            Err(e) => {
                self.report.errors.push(e);
                return;
            }
        };
        let grace = self.s.settings.orphan_grace;
        let marked = inst
            .tag(ORPHANED_AT)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let action = match marked {
            Some(at) if self.now - at >= grace => {
                let a = self.terminate(inst).await;
                if a.starts_with("terminated") {
                    self.report.orphans_terminated += 1;
                    self.record_orphan_end(inst).await;
                }
                format!("{a} (marked {} ago)", secs(self.now - at))
            }
            Some(at) => format!(
                "marked; terminated in {} (grace {})",
                secs(at + grace - self.now),
                secs(grace)
            ),
            None if self.opts.dry_run => format!(
                "would mark it; terminated after the grace period ({})",
                secs(grace)
            ),
            None => {
                let stamp = self.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                match self
                    .s
                    .deps
                    .compute
                    .set_tag(&inst.instance_id, ORPHANED_AT, Some(&stamp))
                    .await
                {
                    Ok(()) => {
                        self.report.orphans_marked += 1;
                        format!("marked; terminated after {}", secs(grace))
                    }
                    Err(e) => {
                        let msg = format!("marking {} as an orphan: {e}", inst.instance_id);
                        self.report.errors.push(msg.clone());
                        msg
                    }
                }
            }
        };
        self.report
            .findings
            .push(finding(Some(inst), job_ref, Finding::Orphan, why, action));
    }

    /// Ends the bill of the attempt an orphan belonged to at its termination, so its orphan
    /// time counts as that attempt's overhead. One conditional write, on the orphan path only;
    /// an instance no recorded attempt names is not attributed.
    async fn record_orphan_end(&mut self, inst: &ManagedInstance) {
        let Some(job_id) = inst.tag(tags::JOB_ID) else {
            return;
        };
        let Ok(Some(job)) = self.s.deps.ledger.get(job_id).await else {
            return;
        };
        let mut updated = job.clone();
        let Some(a) = updated.attempts.iter_mut().find(|a| {
            a.instance_id.as_deref() == Some(inst.instance_id.as_str()) && a.ended_at.is_none()
        }) else {
            return;
        };
        a.ended_at = Some(self.now);
        // A lost condition leaves the attempt billed to its last recorded end.
        let _ = self.save(&mut updated, job.version).await;
    }

    /// Why no job owns this instance (after a consistent read of its job), or `None` if one
    /// does.
    async fn orphan_reason(&self, inst: &ManagedInstance) -> Result<Option<String>, String> {
        let Some(job_id) = inst.tag(tags::JOB_ID) else {
            return Ok(Some(format!("no {} tag", tags::JOB_ID)));
        };
        let attempt = inst.tag(tags::ATTEMPT).and_then(|a| a.parse::<u32>().ok());
        let job = match self.s.deps.ledger.get(job_id).await {
            Ok(Some(job)) => job,
            Ok(None) => return Ok(Some(format!("job {job_id} is not in the ledger"))),
            Err(e) => return Err(format!("reading job {job_id}: {e}")),
        };
        let Some(n) = attempt else {
            return Ok(Some(format!("no valid {} tag", tags::ATTEMPT)));
        };
        if job.state.is_terminal() {
            return Ok(Some(format!("job {job_id} is {}", job.state)));
        }
        if n != job.attempt {
            return Ok(Some(format!(
                "attempt {n} is over; job {job_id} is on attempt {}",
                job.attempt
            )));
        }
        let recorded = job.current_attempt().and_then(|a| a.instance_id.as_deref());
        Ok(match job.state {
            JobState::Launching => None,
            JobState::Running | JobState::Failed => match recorded {
                Some(id) if id == inst.instance_id => None,
                Some(id) => Some(format!(
                    "a second instance of job {job_id} attempt {n} (the ledger records {id})"
                )),
                None => None,
            },
            other => Some(format!("job {job_id} is {other}; attempt {n} is over")),
        })
    }
}

impl InstanceFinding {
    /// One line for people: what, why, and what was done.
    pub fn line(&self) -> String {
        let what = match (&self.instance_id, &self.job_id) {
            (Some(i), Some(j)) => format!("{i} (job {j} attempt {})", self.attempt.unwrap_or(0)),
            (Some(i), None) => i.clone(),
            (None, Some(j)) => format!("job {j} attempt {}", self.attempt.unwrap_or(0)),
            (None, None) => "(unknown)".to_owned(),
        };
        let finding = serde_json::to_value(self.finding)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
            .replace('_', " ");
        format!("{what}: {finding}: {}; {}", self.why, self.action)
    }
}

impl ReconcileReport {
    pub fn summary_line(&self) -> String {
        format!(
            "{} instance(s) seen, {} healthy; {} lost, {} boot timeout(s), {} heartbeat timeout(s), \
             {} past max runtime; {} requeued, {} dead; orphans {} marked, {} terminated{}",
            self.instances_seen,
            self.healthy,
            self.lost,
            self.boot_timeouts,
            self.heartbeat_timeouts,
            self.max_runtime,
            self.requeued,
            self.dead,
            self.orphans_marked,
            self.orphans_terminated,
            if self.paused_payers.is_empty() {
                String::new()
            } else {
                format!("; paused by the circuit breaker: {}", self.paused_payers.join(", "))
            }
        )
    }
}

impl std::fmt::Display for ReconcileReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = if self.dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        };
        writeln!(f, "Reap{mode}: {}", self.summary_line())?;
        if self.findings.is_empty() {
            writeln!(f, "No managed instance and no job needs attention.")?;
        }
        for x in &self.findings {
            writeln!(f, "  {}", x.line())?;
        }
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        Ok(())
    }
}
