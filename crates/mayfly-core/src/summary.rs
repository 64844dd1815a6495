//! The planning projection of a ledger job: just what the planner reads, compact enough that
//! a scheduler holds 100,000 queued jobs in a few tens of MiB. Payer ids, kinds and batches
//! repeat across jobs, so they are interned.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::job::{Job, JobState};
use crate::profile::CapacityType;

/// One job as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSummary {
    pub job_id: Box<str>,
    pub payer_id: Arc<str>,
    pub kind: Arc<str>,
    pub batch: Arc<str>,
    pub state: JobState,
    pub priority: u8,
    pub attempt: u32,
    pub submitted_at: DateTime<Utc>,
    pub not_before: Option<DateTime<Utc>>,
    pub input_bytes: Option<u64>,
    /// The current attempt's instance, for jobs in flight.
    pub instance: Option<Box<InstanceRef>>,
    /// The ledger's reason for the job's state.
    pub reason: Option<Box<str>>,
}

/// Which instance an in-flight job holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRef {
    pub instance_type: Option<String>,
    pub instance_id: Option<String>,
    /// The attempt's purchase option (which vCPU quota the instance counts against).
    pub capacity: Option<CapacityType>,
}

/// Shares one allocation between equal strings.
#[derive(Debug, Default)]
pub struct Interner {
    seen: HashSet<Arc<str>>,
}

impl Interner {
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(existing) = self.seen.get(s) {
            return Arc::clone(existing);
        }
        let new: Arc<str> = Arc::from(s);
        self.seen.insert(Arc::clone(&new));
        new
    }
}

impl JobSummary {
    /// The summary of a full ledger job.
    pub fn of(job: &Job, interner: &mut Interner) -> Self {
        let attempt = job.current_attempt();
        let instance = (job.state.is_in_flight()
            || attempt.is_some_and(|a| a.instance_id.is_some()))
        .then(|| InstanceRef {
            instance_type: attempt
                .and_then(|a| a.rung.as_ref())
                .map(|r| r.instance_type.clone()),
            instance_id: attempt.and_then(|a| a.instance_id.clone()),
            capacity: attempt.and_then(|a| a.rung.as_ref()).map(|r| r.capacity),
        })
        .filter(|i| i.instance_type.is_some() || i.instance_id.is_some())
        .map(Box::new);
        Self {
            job_id: job.job_id.as_str().into(),
            payer_id: interner.intern(&job.payer_id),
            kind: interner.intern(&job.kind),
            batch: interner.intern(&job.batch),
            state: job.state,
            priority: job.priority,
            attempt: job.attempt,
            submitted_at: job.submitted_at,
            not_before: job.not_before,
            input_bytes: job.input_bytes(),
            instance,
            reason: job.reason.as_deref().map(Into::into),
        }
    }

    /// Summaries of many jobs, sharing repeated strings.
    pub fn of_all(jobs: &[Job]) -> Vec<Self> {
        let mut interner = Interner::default();
        jobs.iter().map(|j| Self::of(j, &mut interner)).collect()
    }

    pub fn instance_type(&self) -> Option<&str> {
        self.instance
            .as_ref()
            .and_then(|i| i.instance_type.as_deref())
    }

    pub fn instance_id(&self) -> Option<&str> {
        self.instance
            .as_ref()
            .and_then(|i| i.instance_id.as_deref())
    }
}
