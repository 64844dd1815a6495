//! One scheduling pass (`tick`): ingest the intake queue, apply instance events, repair
//! launches a crashed pass left half-done, plan, launch, and report. Every ledger write is conditional on the job's
//! version, and every launch is idempotent, so overlapping passes cannot launch twice.

mod breaker;
mod events;
mod ingest;
mod launch;
mod learned;
mod ops;
mod policy;
mod quotas;
pub mod reconcile;
mod report;
mod snapshot;

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::catalog::Catalog;
use crate::clock::{Clock, SystemClock};
use crate::job::Job;
use crate::ports::{Compute, ConfigStore, Ledger, Queue, StoreError};
use crate::profile::{GlobalCaps, Payer};

pub use crate::names::ERROR_ATTRIBUTE;
pub use events::{sender_mismatch, EventSenders, Fate};
pub use ingest::validate as validate_request;
pub use launch::client_token;
pub(crate) use launch::request_for;
pub use ops::{JobAction, OpError};
pub use quotas::{read_quotas, QuotaCache, QuotaRead, QUOTA_TTL};
pub use reconcile::ReconcileOptions;
pub use report::{
    EventsReport, Finding, IngestReport, InstanceFinding, LaunchReport, PassReport, QuotaStatus,
    QuotaUse, ReconcileReport,
};
pub use snapshot::{load_payers, load_snapshot, ACTIVE};

/// Most instances one pass plans: EC2's RunInstances resource bucket's burst.
pub const MAX_INSTANCES_PER_PASS: u32 = 1000;

/// The launches a plan may make with `calls` RunInstances of up to `max_group` instances
/// each, at most [`MAX_INSTANCES_PER_PASS`] (or `calls`, when more).
pub fn instance_budget(calls: u32, max_group: u32) -> u32 {
    calls
        .saturating_mul(max_group.max(1))
        .min(MAX_INSTANCES_PER_PASS.max(calls))
}

/// Renders the user-data script of one job attempt.
pub trait UserDataSource: Send + Sync {
    fn render(&self, payer: &Payer, job: &Job, attempt: u32) -> Result<String, String>;
}

/// The ports a pass works through.
#[derive(Clone)]
pub struct Deps {
    pub config: Arc<dyn ConfigStore>,
    pub ledger: Arc<dyn Ledger>,
    pub intake: Arc<dyn Queue>,
    pub intake_dlq: Arc<dyn Queue>,
    /// Instance events (started, heartbeat, finished, interrupted) and their DLQ.
    pub events: Arc<dyn Queue>,
    pub events_dlq: Arc<dyn Queue>,
    pub compute: Arc<dyn Compute>,
    /// Renders each attempt's user-data. (RunInstances pacing is the compute adapter's job.)
    pub user_data: Arc<dyn UserDataSource>,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps").finish_non_exhaustive()
    }
}

/// What a pass is allowed to do.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The deployment name: the cluster tag value.
    pub cluster: String,
    pub caps: GlobalCaps,
    /// One vCPU quota over every family (`--vcpu-quota`): when set, the account's quotas
    /// are not read.
    pub vcpu_quota: Option<u32>,
    /// Most RunInstances calls one pass makes (new launches and repairs). With launch groups
    /// a call may launch up to `max_group` jobs' instances, so the plan may launch that many
    /// times more jobs (at most [`MAX_INSTANCES_PER_PASS`]).
    pub max_launches: u32,
    /// Most intake messages one pass ingests.
    pub max_ingest: u32,
    /// A `launching` job untouched this long is repaired (adopted or replayed).
    pub repair_after: chrono::Duration,
    /// A running job's instance seen gone without a `finished` event is judged lost when it
    /// is still so this long after it was first seen (longer than the events queue's
    /// visibility timeout, so an event held by a crashed pass comes back first).
    pub lost_grace: chrono::Duration,
    /// An orphan is terminated this long after it was first marked.
    pub orphan_grace: chrono::Duration,
    /// Most jobs one RunInstances launches (a launch group of one payer and rung); a payer's
    /// `launch.max_group` may lower it for its jobs; `1` launches each job on its own.
    pub max_group: u32,
    /// Launch groups ask for `MinCount = MaxCount` (all or none) instead of `MinCount = 1`:
    /// for an emulator that launches exactly `MinCount` and ignores `MaxCount` (moto).
    pub group_min_is_max: bool,
    /// The deployment's KMS key for root volumes, for payers whose profile names none
    /// (`launch.root_volume_kms_key` wins); `None`: the account's default EBS key.
    pub root_volume_kms_key: Option<String>,
    /// Whether an instance event is applied only when the instance it names sent it (SQS's
    /// `SenderId`). [`EventSenders::Unverified`] is for an emulator that stamps no real
    /// sender (moto): the CLI allows it only with an endpoint override.
    pub event_senders: EventSenders,
}

impl Settings {
    pub fn new(cluster: impl Into<String>) -> Self {
        Self {
            cluster: cluster.into(),
            caps: GlobalCaps::default(),
            vcpu_quota: None,
            max_launches: 60,
            max_ingest: 1000,
            repair_after: chrono::Duration::seconds(30),
            lost_grace: chrono::Duration::seconds(120),
            orphan_grace: chrono::Duration::seconds(300),
            root_volume_kms_key: None,
            event_senders: EventSenders::Verified,
            max_group: crate::group::DEFAULT_MAX_GROUP,
            group_min_is_max: false,
        }
    }
}

/// How a pass runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct TickOptions {
    /// Read and plan only: no message is deleted, no job written, nothing launched.
    pub dry_run: bool,
    /// Skip step 3, reconciling with EC2 (its DescribeInstances): the daemon's passes do, and
    /// it runs [`Scheduler::reconcile_pass`] beside them on its own period. Events are still
    /// applied and half-done launches still repaired.
    pub skip_reconcile: bool,
}

/// Why a pass could not run at all (per-job problems are in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum TickError {
    #[error("reading the ledger or config table: {0}")]
    Store(#[from] StoreError),
}

/// The scheduler: ports plus settings.
#[derive(Debug, Clone)]
pub struct Scheduler {
    pub deps: Deps,
    pub settings: Settings,
    pub catalog: &'static Catalog,
    /// Tells the moment a fact is observed, for the times a pass records.
    pub clock: Arc<dyn Clock>,
    /// The account's vCPU quotas, read for the planner unless `settings.vcpu_quota` is set
    /// (`None`: never read; the plan keeps to the caps and that flag only).
    pub quotas: Option<Arc<QuotaCache>>,
}

impl Scheduler {
    pub fn new(deps: Deps, settings: Settings) -> Self {
        Self {
            deps,
            settings,
            catalog: Catalog::shipped(),
            clock: Arc::new(SystemClock),
            quotas: None,
        }
    }

    /// Reads the account's vCPU quotas through `reader` for every pass's plan (cached for
    /// [`QUOTA_TTL`]), unless `settings.vcpu_quota` overrides them.
    pub fn with_quotas(mut self, reader: Arc<dyn crate::ports::QuotaReader>) -> Self {
        self.quotas = Some(Arc::new(QuotaCache::new(reader)));
        self
    }

    /// The account's vCPU quotas for a plan, if they are to be read at all.
    pub async fn account_quotas(&self, payers: &[Payer]) -> Option<QuotaRead> {
        match (&self.quotas, self.settings.vcpu_quota) {
            (Some(cache), None) => Some(cache.get(payers, self.catalog).await),
            _ => None,
        }
    }

    /// As [`Scheduler::account_quotas`], read once without the cache and without logging a
    /// failure: for a command that shows the outcome itself.
    pub async fn account_quotas_shown(&self, payers: &[Payer]) -> Option<QuotaRead> {
        match (&self.quotas, self.settings.vcpu_quota) {
            (Some(cache), None) => Some(cache.read_once(payers, self.catalog).await),
            _ => None,
        }
    }

    /// The moment now, for a time to record: the clock's, never earlier than `floor` (the
    /// pass's start), so a pass driven at a chosen time records nothing before it.
    pub fn moment(&self, floor: DateTime<Utc>) -> DateTime<Utc> {
        self.clock.now().max(floor)
    }

    /// Runs one pass at time `now`.
    #[tracing::instrument(skip_all, fields(cluster = %self.settings.cluster, dry_run = opts.dry_run))]
    pub async fn tick(
        &self,
        opts: TickOptions,
        now: DateTime<Utc>,
    ) -> Result<PassReport, TickError> {
        let started = Instant::now();
        let mut report = PassReport::new(now, opts.dry_run);
        if opts.dry_run {
            report.skipped = vec!["ingest", "events", "reconcile", "repair", "launch"];
        } else if opts.skip_reconcile {
            report.skipped = vec!["reconcile"];
        }
        let payers =
            load_payers(self.deps.config.as_ref(), self.catalog, self.settings.caps).await?;
        report.invalid_payers = payers.invalid.clone();
        if !opts.dry_run {
            report.ingest = ingest::run(self, &payers.valid, now).await;
            report.events = events::run(self, &payers, now).await;
        }
        let mut jobs = load_snapshot(self.deps.ledger.as_ref()).await?;
        let mut budget = self.settings.max_launches;
        let mut learned = learned::Learned::default();
        if !opts.dry_run && !opts.skip_reconcile {
            report.reconcile = self
                .reconcile_step(&payers, &mut jobs, &report.events, now)
                .await;
            report.merge_reconcile_events();
        }
        if !opts.dry_run {
            let repaired = launch::repair(
                self,
                &payers.valid,
                &mut jobs,
                now,
                &mut budget,
                &mut learned,
            )
            .await;
            report.launch.merge(repaired);
        }
        let summaries = crate::summary::JobSummary::of_all(&jobs);
        let quotas = self.account_quotas(&payers.valid).await;
        let snapshot = crate::plan::Snapshot {
            jobs: &summaries,
            payers: &payers.valid,
            catalog: self.catalog,
            caps: self.settings.caps,
            vcpu_quota: self.settings.vcpu_quota,
            account_quotas: quotas
                .as_ref()
                .map_or_else(Default::default, QuotaRead::view),
            launch_budget: instance_budget(budget, self.settings.max_group),
            now,
        };
        let plan = crate::plan::plan(&snapshot);
        report.record_plan(&plan);
        if !opts.dry_run {
            let launched =
                launch::execute(self, &payers.valid, &jobs, &plan, now, budget, &mut learned).await;
            report.launch.merge(launched);
        }
        report.count_states(&jobs);
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Reconciles as a pass of its own, for a daemon that runs it beside the passes that
    /// plan and launch: applies pending instance events, then compares the ledger with this
    /// deployment's instances and acts on what differs. Overlapping with a planning pass is
    /// safe for the same reason overlapping passes are: every write is conditional.
    pub async fn reconcile_pass(&self, now: DateTime<Utc>) -> Result<PassReport, TickError> {
        let started = Instant::now();
        let mut report = PassReport::new(now, false);
        let payers =
            load_payers(self.deps.config.as_ref(), self.catalog, self.settings.caps).await?;
        report.invalid_payers = payers.invalid.clone();
        report.events = events::run(self, &payers, now).await;
        let mut jobs = load_snapshot(self.deps.ledger.as_ref()).await?;
        report.reconcile = self
            .reconcile_step(&payers, &mut jobs, &report.events, now)
            .await;
        report.merge_reconcile_events();
        report.count_states(&jobs);
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Step 3 of a pass: reconcile with EC2, judging jobs lost only if `events` (this
    /// pass's reading of the events queue) drained it.
    async fn reconcile_step(
        &self,
        payers: &snapshot::LoadedPayers,
        jobs: &mut [Job],
        events: &EventsReport,
        now: DateTime<Utc>,
    ) -> ReconcileReport {
        let opts = ReconcileOptions {
            dry_run: false,
            events_drained: events.drained(self.settings.max_ingest),
            list_healthy: false,
        };
        reconcile::run(self, payers, jobs, now, opts).await
    }

    /// Applies instance events that arrived outside the events queue's reading (an SQS event
    /// handed to the Lambda function), and says what became of each message, in order.
    /// Nothing is deleted or moved: the caller acknowledges the messages.
    pub async fn apply_events(
        &self,
        messages: &[crate::ports::Message],
        now: DateTime<Utc>,
    ) -> Result<(EventsReport, Vec<Fate>), TickError> {
        let payers =
            load_payers(self.deps.config.as_ref(), self.catalog, self.settings.caps).await?;
        let mut report = EventsReport {
            received: messages.len() as u32,
            ..EventsReport::default()
        };
        let fates = events::apply_messages(self, &payers, messages, now, &mut report).await;
        Ok((report, fates))
    }

    /// Moves an unparseable instance event to the events DLQ with the reason; says whether
    /// it is there (the caller may then acknowledge it).
    pub async fn dead_letter_event(&self, body: &str, reason: &str) -> bool {
        match self
            .deps
            .events_dlq
            .send(body, &[(crate::names::ERROR_ATTRIBUTE, reason)])
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, reason, "Cannot move a malformed event to the events DLQ; it will be delivered again.");
                false
            }
        }
    }

    /// Reconciles only (`mayfly reap`): applies pending instance events (unless a dry run),
    /// then compares the ledger with this deployment's instances and acts on what differs.
    pub async fn reap(
        &self,
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> Result<ReconcileReport, TickError> {
        let payers =
            load_payers(self.deps.config.as_ref(), self.catalog, self.settings.caps).await?;
        let drained = if dry_run {
            false
        } else {
            events::run(self, &payers, now)
                .await
                .drained(self.settings.max_ingest)
        };
        let mut jobs = load_snapshot(self.deps.ledger.as_ref()).await?;
        Ok(reconcile::run(
            self,
            &payers,
            &mut jobs,
            now,
            ReconcileOptions {
                dry_run,
                events_drained: drained,
                list_healthy: true,
            },
        )
        .await)
    }
}
