//! The fleet's loop: poll the emulator, start and end instances' scripts, act on their
//! shims' requests, stop when idle, at the runtime limit or on a signal.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::time::MissedTickBehavior;
use tracing::{debug, error, info, instrument, warn};

use super::boot::{self, Boot, Live};
use super::cloud::{Ec2UserData, InstanceRoles, StsInstanceRoles, UserDataReader};
use super::imds::{Control, ControlKind};
use super::session;
use super::{FleetConfig, FleetError, FleetReport, InstanceOutcome, InstanceReport, StopReason};
use mayfly::aws::ec2::Ec2Compute;
use mayfly::names::tags;
use mayfly::ports::{Compute, InstanceState, ManagedInstance};
use mayfly::ratelimit::Ec2Limits;

/// TerminateInstances tries per shutdown before the instance is left for the reaper.
const TERMINATE_TRIES: u32 = 3;

/// The local fleet, on any [`Compute`] and [`UserDataReader`].
pub struct Fleet {
    config: FleetConfig,
    compute: Arc<dyn Compute>,
    user_data: Arc<dyn UserDataReader>,
    /// Serves each instance its profile role's credentials, when set.
    roles: Option<Arc<dyn InstanceRoles>>,
    instances: BTreeMap<String, Tracked>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("config", &self.config)
            .field("instances", &self.instances.len())
            .finish_non_exhaustive()
    }
}

struct Tracked {
    report: InstanceReport,
    live: Option<Box<Live>>,
}

impl Fleet {
    pub fn new(
        config: FleetConfig,
        compute: Arc<dyn Compute>,
        user_data: Arc<dyn UserDataReader>,
    ) -> Self {
        Self {
            config,
            compute,
            user_data,
            roles: None,
            instances: BTreeMap::new(),
        }
    }

    /// Serves each instance the credentials of its instance profile's role on its metadata
    /// endpoint (and gives its scripts no others), as EC2 does.
    pub fn with_instance_roles(mut self, roles: Arc<dyn InstanceRoles>) -> Self {
        self.roles = Some(roles);
        self
    }

    /// A fleet on the EC2 API that `sdk` points at, with no client-side rate limits.
    pub fn on_ec2(config: FleetConfig, sdk: &SdkConfig) -> Self {
        let client = aws_sdk_ec2::Client::new(sdk);
        let compute = Ec2Compute::new(client.clone(), Arc::new(Ec2Limits::unlimited()));
        let instance_roles = config.instance_roles;
        let fleet = Self::new(
            config,
            Arc::new(compute),
            Arc::new(Ec2UserData::new(client)),
        );
        if instance_roles {
            fleet.with_instance_roles(Arc::new(StsInstanceRoles::new(sdk)))
        } else {
            fleet
        }
    }

    /// Runs until idle, the runtime limit or `shutdown`; kills every script it started that
    /// is still running before returning.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<FleetReport, FleetError> {
        let work_dir = self.config.work_dir.clone();
        self.config.work_dir = std::fs::create_dir_all(&work_dir)
            .and_then(|()| std::fs::canonicalize(&work_dir))
            .map_err(|source| FleetError::WorkDir {
                path: work_dir,
                source,
            })?;
        info!(cluster = %self.config.cluster, work_dir = %self.config.work_dir.display(), faults = %self.config.faults, "Local fleet watching the emulator.");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let deadline = self.config.max_runtime.map(|d| Instant::now() + d);
        let runtime_limit = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(shutdown, runtime_limit);
        let mut ticker = tokio::time::interval(self.config.poll);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut idle_since: Option<Instant> = None;
        let mut first = true;
        let stop = loop {
            tokio::select! {
                () = &mut shutdown => break StopReason::Signal,
                () = &mut runtime_limit => break StopReason::MaxRuntime,
                Some(control) = rx.recv() => self.on_control(control).await,
                _ = ticker.tick() => {
                    let busy = match self.poll(&tx).await {
                        Ok(busy) => busy,
                        Err(e) if first => return Err(e.into()),
                        Err(e) => {
                            warn!(error = %e, "Cannot list instances; retrying.");
                            true
                        }
                    };
                    first = false;
                    let now = Instant::now();
                    if busy {
                        idle_since = None;
                    } else if let Some(wait) = self.config.exit_when_idle {
                        if now.duration_since(*idle_since.get_or_insert(now)) >= wait {
                            break StopReason::Idle;
                        }
                    }
                }
            }
        };
        for (id, tracked) in &mut self.instances {
            if let Some(live) = tracked.live.take() {
                end(id, live, &mut tracked.report, InstanceOutcome::Interrupted).await;
            }
        }
        info!(stop = ?stop, instances = self.instances.len(), "Local fleet stopped.");
        Ok(FleetReport {
            stop,
            instances: self
                .instances
                .into_iter()
                .map(|(id, t)| (id, t.report))
                .collect(),
        })
    }

    /// One poll: start new instances, end those gone from the emulator, notice scripts that
    /// ended. Returns whether anything is left to do.
    async fn poll(
        &mut self,
        control: &UnboundedSender<Control>,
    ) -> Result<bool, mayfly::ports::ComputeError> {
        let listed = self.compute.list_managed(&self.config.cluster).await?;
        let mut waiting = false;
        for instance in &listed {
            let wanted = matches!(
                instance.state,
                InstanceState::Pending | InstanceState::Running
            );
            match self.instances.get_mut(&instance.instance_id) {
                None if wanted => {
                    if let Some(tracked) = self.start(instance, control).await {
                        self.instances.insert(instance.instance_id.clone(), tracked);
                    } else {
                        waiting = true;
                    }
                }
                Some(tracked) if !wanted => {
                    if let Some(live) = tracked.live.take() {
                        let outcome = InstanceOutcome::EndedInEmulator(Some(instance.state));
                        end(&instance.instance_id, live, &mut tracked.report, outcome).await;
                    }
                }
                _ => {}
            }
        }
        let listed_ids: BTreeSet<&str> = listed.iter().map(|i| i.instance_id.as_str()).collect();
        for (id, tracked) in &mut self.instances {
            if listed_ids.contains(id.as_str()) {
                continue;
            }
            if let Some(live) = tracked.live.take() {
                let outcome = InstanceOutcome::EndedInEmulator(None);
                end(id, live, &mut tracked.report, outcome).await;
            }
        }
        self.check_sessions().await;
        let running = self.instances.values().any(|t| t.live.is_some());
        Ok(running || waiting)
    }

    /// Notices scripts whose processes all ended, and reclaims spot instances that are due.
    async fn check_sessions(&mut self) {
        let sessions = session::scan();
        let now = Instant::now();
        let mut reclaim = Vec::new();
        for (id, tracked) in &mut self.instances {
            let Some(live) = tracked.live.as_mut() else {
                continue;
            };
            if live.leader_exit.is_none() {
                live.leader_exit = live.session.leader.try_wait().ok().flatten();
            }
            // Until the leader has exited, an empty session may just be one that has not
            // been created yet (`setsid` not yet run).
            let ended = live.leader_exit.is_some() && !sessions.contains_key(&live.session.id);
            if live.reclaim_at.is_some_and(|at| now >= at) {
                reclaim.push(id.clone());
            } else if ended {
                if let Some(live) = tracked.live.take() {
                    let code = live.leader_exit.and_then(|s| s.code());
                    end(id, live, &mut tracked.report, InstanceOutcome::Exited(code)).await;
                }
            }
        }
        for id in reclaim {
            info!(instance_id = %id, "Reclaiming spot instance at its notice time.");
            self.terminate_and_end(&id, InstanceOutcome::Reclaimed)
                .await;
        }
    }

    /// Acts on a shim's request.
    async fn on_control(&mut self, control: Control) {
        let id = &control.instance_id;
        match control.kind {
            ControlKind::Shutdown => {
                info!(instance_id = %id, "Instance shut itself down.");
                self.terminate_and_end(id, InstanceOutcome::ShutDown).await;
            }
            ControlKind::Crash => {
                let Some(tracked) = self.instances.get_mut(id) else {
                    return;
                };
                if let Some(live) = tracked.live.take() {
                    warn!(instance_id = %id, "Crashing instance (injected fault).");
                    end(id, live, &mut tracked.report, InstanceOutcome::Crashed).await;
                }
            }
        }
    }

    /// Terminates an instance in the emulator, then kills whatever still runs of it. A
    /// shutdown may arrive after the script's processes ended (the real `shutdown` returns at
    /// once, so the script can exit before the fleet acts): it still terminates the instance.
    async fn terminate_and_end(&mut self, id: &str, outcome: InstanceOutcome) {
        let may_end = self.instances.get(id).is_some_and(|t| {
            t.live.is_some() || matches!(t.report.outcome, Some(InstanceOutcome::Exited(_)))
        });
        if !may_end {
            debug!(instance_id = %id, "Already ended; nothing to terminate.");
            return;
        }
        let ids = [id.to_owned()];
        for attempt in 1..=TERMINATE_TRIES {
            match self.compute.terminate(&ids).await {
                Ok(()) => break,
                Err(e) if attempt == TERMINATE_TRIES => {
                    error!(instance_id = %id, error = %e, "Cannot terminate the instance; it stays running for the reaper.");
                }
                Err(e) => {
                    warn!(instance_id = %id, error = %e, "Terminate failed; retrying.");
                    tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                }
            }
        }
        if let Some(tracked) = self.instances.get_mut(id) {
            match tracked.live.take() {
                Some(live) => end(id, live, &mut tracked.report, outcome).await,
                None => {
                    info!(instance_id = %id, outcome = %outcome, "Instance ended.");
                    tracked.report.outcome = Some(outcome);
                }
            }
        }
    }

    /// Starts (or deliberately skips) an instance. `None` means "try again next poll".
    #[instrument(skip_all, fields(instance_id = %instance.instance_id))]
    async fn start(
        &self,
        instance: &ManagedInstance,
        control: &UnboundedSender<Control>,
    ) -> Option<Tracked> {
        let mut job_id = instance.tag(tags::JOB_ID).map(str::to_owned);
        let mut attempt = instance.tag(tags::ATTEMPT).and_then(|a| a.parse().ok());
        // A launch group's instance carries no job tag: its job is its entry of the table.
        if let (None, Some(_), Some(index)) =
            (&job_id, instance.tag(tags::GROUP), instance.launch_index)
        {
            if let Ok(Some(data)) = self.user_data.user_data(&instance.instance_id).await {
                if let Some((job, n)) = boot::group_member(data, index) {
                    job_id = Some(job);
                    attempt = Some(n);
                }
            }
        }
        let fault = job_id
            .as_deref()
            .and_then(|job| self.config.faults.lookup(job, attempt));
        let mut report = InstanceReport {
            job_id,
            attempt,
            outcome: None,
            dir: None,
        };
        let booted = boot::boot(
            &self.config,
            &*self.user_data,
            self.roles.as_deref(),
            instance,
            fault,
            control,
        )
        .await;
        let live = match booted {
            Boot::Retry => return None,
            Boot::Skipped(why) => {
                info!(job_id = report.job_id.as_deref().unwrap_or("-"), reason = ?why, "Not running the instance's user-data.");
                report.outcome = Some(InstanceOutcome::Skipped(why));
                None
            }
            Boot::Failed { dir, error } => {
                error!(error = %error, "Cannot start the instance's user-data; it stays running.");
                report.dir = Some(dir);
                report.outcome = Some(InstanceOutcome::FailedToStart(error.to_string()));
                None
            }
            Boot::Started { dir, live } => {
                info!(job_id = report.job_id.as_deref().unwrap_or("-"), fault = %fault.map_or_else(|| "none".to_owned(), |f| f.to_string()), dir = %dir.display(), "Started the instance's user-data.");
                report.dir = Some(dir);
                Some(live)
            }
        };
        Some(Tracked { report, live })
    }
}

/// Kills an instance's processes and records how it ended.
async fn end(id: &str, mut live: Box<Live>, report: &mut InstanceReport, outcome: InstanceOutcome) {
    // The leader first: it may not have made its session yet. It forks nothing before that.
    if live.leader_exit.is_none() {
        let _ = live.session.leader.start_kill();
    }
    if !session::kill(live.session.id).await {
        error!(instance_id = %id, session = live.session.id, "Some of the instance's processes survived the kill.");
    }
    if tokio::time::timeout(Duration::from_secs(5), live.session.leader.wait())
        .await
        .is_err()
    {
        error!(instance_id = %id, "The instance's shell did not exit after being killed.");
    }
    info!(instance_id = %id, job_id = report.job_id.as_deref().unwrap_or("-"), outcome = %outcome, "Instance ended.");
    report.outcome = Some(outcome);
}
