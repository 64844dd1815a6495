//! Operator actions on one job: retry a dead or cancelled job, cancel a job (terminating its
//! instance). Both are conditional writes on the version just read, retried on a lost
//! condition, so they compose with passes running at the same time.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Scheduler;
use crate::job::{Job, JobState};
use crate::names::tags;
use crate::ports::StoreError;

/// What an operator action did.
#[derive(Debug, Clone, Serialize)]
pub struct JobAction {
    pub job_id: String,
    pub from: JobState,
    pub to: JobState,
    /// Instances terminated (cancel of an in-flight job).
    pub terminated: Vec<String>,
    /// Instances left running because they are tagged `mayfly:protect`.
    pub protected: Vec<String>,
    pub note: String,
}

impl std::fmt::Display for JobAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}: {} → {}", self.job_id, self.from, self.to)?;
        for i in &self.terminated {
            writeln!(f, "  terminated {i}")?;
        }
        for i in &self.protected {
            writeln!(f, "  kept {i}: tagged {}", tags::PROTECT)?;
        }
        writeln!(f, "  {}", self.note)
    }
}

/// Why an operator action was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("job {0} is not in the ledger")]
    NotFound(String),
    #[error("job {job_id} is {state}: {hint}")]
    WrongState {
        job_id: String,
        state: JobState,
        hint: &'static str,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("job {0} kept changing under this command; try again")]
    Contended(String),
}

impl Scheduler {
    /// Re-reads `job_id` and applies `change` with a conditional write, up to three times.
    async fn change_job(
        &self,
        job_id: &str,
        mut change: impl FnMut(&mut Job) -> Result<(), OpError>,
    ) -> Result<(Job, Job), OpError> {
        for _ in 0..3 {
            let before = self
                .deps
                .ledger
                .get(job_id)
                .await?
                .ok_or_else(|| OpError::NotFound(job_id.to_owned()))?;
            let mut after = before.clone();
            change(&mut after)?;
            after.version = before.version + 1;
            match self.deps.ledger.update(&after, before.version).await {
                Ok(()) => return Ok((before, after)),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(OpError::Contended(job_id.to_owned()))
    }

    /// `dead` or `cancelled` → `queued`, with a fresh budget of attempts. Higher-tier jobs of
    /// the batch that were blocked on it are released by the next pass's plan.
    pub async fn retry_job(&self, job_id: &str, now: DateTime<Utc>) -> Result<JobAction, OpError> {
        let (before, after) = self
            .change_job(job_id, |job| {
                if !matches!(job.state, JobState::Dead | JobState::Cancelled) {
                    return Err(OpError::WrongState {
                        job_id: job.job_id.clone(),
                        state: job.state,
                        hint: "only dead or cancelled jobs can be retried",
                    });
                }
                job.attempt_base = job.attempt;
                job.not_before = None;
                job.transition(JobState::Queued, Some("retried by an operator".into()), now)
                    .map_err(|_| OpError::WrongState {
                        job_id: job.job_id.clone(),
                        state: job.state,
                        hint: "only dead or cancelled jobs can be retried",
                    })
            })
            .await?;
        tracing::info!(job_id, from = %before.state, "Job retried by an operator.");
        Ok(JobAction {
            job_id: job_id.to_owned(),
            from: before.state,
            to: after.state,
            terminated: Vec::new(),
            protected: Vec::new(),
            note: format!(
                "queued for attempt {} with a fresh retry budget; the next pass plans it",
                after.attempt + 1
            ),
        })
    }

    /// Any non-terminal job → `cancelled`; an instance of its current attempt is terminated.
    pub async fn cancel_job(
        &self,
        job_id: &str,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<JobAction, OpError> {
        let reason = reason.map_or_else(
            || "cancelled by an operator".to_owned(),
            |r| format!("cancelled by an operator: {r}"),
        );
        let (before, after) = self
            .change_job(job_id, |job| {
                if job.state.is_terminal() {
                    return Err(OpError::WrongState {
                        job_id: job.job_id.clone(),
                        state: job.state,
                        hint: "it is already finished",
                    });
                }
                if job.state.is_in_flight() {
                    // Its instance is terminated right after this write: its bill ends now.
                    if let Some(a) = job
                        .current_attempt_mut()
                        .filter(|a| a.instance_id.is_some() && a.ended_at.is_none())
                    {
                        a.ended_at = Some(now);
                    }
                }
                job.transition(JobState::Cancelled, Some(reason.clone()), now)
                    .map_err(|_| OpError::WrongState {
                        job_id: job.job_id.clone(),
                        state: job.state,
                        hint: "it cannot be cancelled from this state",
                    })
            })
            .await?;
        let mut action = JobAction {
            job_id: job_id.to_owned(),
            from: before.state,
            to: after.state,
            terminated: Vec::new(),
            protected: Vec::new(),
            note: "cancelled".to_owned(),
        };
        if before.attempt > 0
            && matches!(
                before.state,
                JobState::Launching | JobState::Running | JobState::Failed
            )
        {
            let found = self
                .deps
                .compute
                .find_attempt(&self.settings.cluster, job_id, before.attempt)
                .await
                .map_err(|e| StoreError::Other(format!("looking up the job's instance: {e}")))?;
            let (protected, live): (Vec<_>, Vec<_>) = found
                .into_iter()
                .filter(|i| i.state.is_live())
                .partition(|i| i.tag(tags::PROTECT).is_some());
            action.protected = protected.into_iter().map(|i| i.instance_id).collect();
            let ids: Vec<String> = live.into_iter().map(|i| i.instance_id).collect();
            if !ids.is_empty() {
                self.deps.compute.terminate(&ids).await.map_err(|e| {
                    StoreError::Other(format!(
                        "the job is cancelled, but terminating {ids:?} failed ({e}); the reaper terminates it as an orphan"
                    ))
                })?;
            }
            action.terminated = ids;
            action.note = if before.state == JobState::Launching {
                "cancelled; an instance its launch still creates is reaped as an orphan".into()
            } else {
                "cancelled".into()
            };
        }
        tracing::info!(job_id, from = %before.state, terminated = ?action.terminated, "Job cancelled by an operator.");
        Ok(action)
    }
}
