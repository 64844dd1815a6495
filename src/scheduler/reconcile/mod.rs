//! Step 3 of a pass, and `mayfly reap`: reconcile the ledger with this deployment's instances,
//! both ways, from one DescribeInstances.
//!
//! - [`overdue`]: a `running` job's live instance past a deadline (boot, heartbeat, runtime).
//! - [`lost`]: a `running` job's instance gone without a `finished` event.
//! - [`verdict`]: ending such an attempt (and `failed` jobs a stopped pass left undecided).
//! - [`orphan`]: a live instance no in-flight job owns.
//!
//! Instances without this deployment's cluster tag are never touched, and those tagged
//! `mayfly:protect` are never terminated.
//!
//! Every ledger change is a write conditional on the version just read, so a pass acting on a
//! stale view (or a paused old leader) loses the condition and changes nothing.

mod lost;
mod orphan;
mod overdue;
mod verdict;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

pub use super::report::{Finding, InstanceFinding, ReconcileReport};
use super::snapshot::LoadedPayers;
use super::Scheduler;
use crate::job::{Job, JobState};
use crate::names::tags;
use crate::ports::{ManagedInstance, StoreError};
use crate::profile::Payer;

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

/// Reconciles `jobs` (the pass's snapshot, updated in place) with the managed instances.
pub(super) async fn run(
    s: &Scheduler,
    payers: &LoadedPayers,
    jobs: &mut [Job],
    now: DateTime<Utc>,
    opts: ReconcileOptions,
) -> ReconcileReport {
    let listed = s.deps.compute.list_managed(&s.settings.cluster).await;
    let grouped = jobs
        .iter()
        .flat_map(|j| {
            j.attempts.iter().filter_map(|a| {
                let key = (a.launch_group.clone()?, a.launch_index?);
                Some((key, (j.job_id.clone(), a.number)))
            })
        })
        .collect();
    let mut r = Reconciler {
        s,
        grouped,
        payers: &payers.valid,
        loaded: payers,
        // What EC2 just said is true now: the moment the listing returned, not the pass's
        // start, is when an instance was seen gone.
        now: s.moment(now),
        opts,
        quiet: None,
        report: ReconcileReport {
            dry_run: opts.dry_run,
            ..ReconcileReport::default()
        },
    };
    let instances = match listed {
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
                for i in &instances {
                    if r.job_of(i) == Some((job.job_id.as_str(), Some(job.attempt))) {
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

/// What a consistent re-read of a job found (see [`Reconciler::reread`]).
enum Reread {
    Fresh(Job),
    Moved(Job),
    Gone,
}

struct Reconciler<'a> {
    s: &'a Scheduler,
    payers: &'a [Payer],
    loaded: &'a LoadedPayers,
    /// The snapshot's grouped attempts: (launch group, launch index) → (job id, attempt).
    grouped: HashMap<(String, u32), (String, u32)>,
    now: DateTime<Utc>,
    opts: ReconcileOptions,
    /// Whether no instance event can still arrive, once asked this pass (see [`Self::quiet`]).
    quiet: Option<Result<(), String>>,
    report: ReconcileReport,
}

impl Reconciler<'_> {
    fn payer(&self, payer_id: &str) -> Option<&Payer> {
        self.payers.iter().find(|p| p.id() == payer_id)
    }

    /// The job (and attempt, when known) an instance belongs to: by its job-id and attempt
    /// tags, or for an instance of a launch group (tagged with the group, not a job), the
    /// snapshot's attempt of that group whose launch index is the instance's.
    fn job_of<'i>(&'i self, inst: &'i ManagedInstance) -> Option<(&'i str, Option<u32>)> {
        if let Some(job) = inst.tag(tags::JOB_ID) {
            let attempt = inst.tag(tags::ATTEMPT).and_then(|a| a.parse::<u32>().ok());
            return Some((job, attempt));
        }
        let key = (inst.tag(tags::GROUP)?.to_owned(), inst.launch_index?);
        self.grouped
            .get(&key)
            .map(|(job, attempt)| (job.as_str(), Some(*attempt)))
    }

    /// Whether no instance event can still arrive, so that an attempt may be ended without
    /// its `finished` event: asked once per pass, and only when a verdict waits on it. The
    /// events queue is read to its end with a long poll (a short poll samples only some of
    /// SQS's servers and can come back empty while messages wait), what it returns is
    /// applied, and then no message may be in flight (received by a reader that has not
    /// deleted it: one that died holds it until its visibility timeout). `Err` says why not.
    async fn quiet(&mut self) -> Result<(), String> {
        if let Some(known) = &self.quiet {
            return known.clone();
        }
        let mut events = crate::scheduler::report::EventsReport::default();
        let verdict =
            crate::scheduler::events::confirm_quiet(self.s, self.loaded, self.now, &mut events)
                .await;
        if events.received > 0 || !events.errors.is_empty() {
            self.report.events = Some(events);
        }
        // Events applied just now may have been the ones a verdict waited for.
        self.now = self.s.moment(self.now);
        self.quiet = Some(verdict.clone());
        verdict
    }

    /// A `running` job: its instance live and within its deadlines, overdue, or gone.
    async fn running(
        &mut self,
        job: &mut Job,
        by_id: &HashMap<&str, &ManagedInstance>,
        owned: &mut HashSet<String>,
    ) {
        let Some(iid) = job.current_attempt().and_then(|a| a.instance_id.clone()) else {
            return;
        };
        match by_id.get(iid.as_str()).copied() {
            Some(i) if i.state.is_live() => {
                owned.insert(iid);
                self.live(job, i).await;
            }
            inst => self.gone(job, &iid, inst).await,
        }
    }

    /// Re-reads `job` (a consistent read) before acting on it. `Fresh` when the ledger still
    /// has it `running` on the same attempt and instance; `Moved` with the ledger's copy when
    /// another writer moved it on; `Gone` when it cannot be read (the error is reported).
    async fn reread(&mut self, job: &Job) -> Reread {
        let fresh = match self.s.deps.ledger.get(&job.job_id).await {
            Ok(Some(j)) => j,
            Ok(None) => return Reread::Gone,
            Err(e) => {
                self.report
                    .errors
                    .push(format!("reading job {}: {e}", job.job_id));
                return Reread::Gone;
            }
        };
        let instance = |j: &Job| j.current_attempt().and_then(|a| a.instance_id.clone());
        let same = fresh.state == JobState::Running
            && fresh.attempt == job.attempt
            && instance(&fresh) == instance(job);
        if same {
            Reread::Fresh(fresh)
        } else {
            Reread::Moved(fresh)
        }
    }

    /// Writes `job` with its version bumped, conditional on `expected`.
    async fn save(&mut self, job: &mut Job, expected: u64) -> Result<(), String> {
        job.version = expected + 1;
        job.updated_at = Some(self.s.moment(self.now));
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
}
