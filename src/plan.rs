//! The planner: a pure function from a ledger snapshot to the ordered launches of one pass and,
//! for every job not launched, the reason. No I/O; `now` is an input.

use std::cmp::Reverse;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{Catalog, InstanceType};
use crate::job::{Job, JobState};
use crate::profile::{GlobalCaps, Payer};
use crate::sizing::{self, Requirement, Rung};

/// How many blocking job ids a reason names before it just counts the rest.
const NAMED_BLOCKERS: usize = 3;

/// Everything the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// Every non-terminal job, plus every job of a (payer, batch) that has a non-terminal one.
    pub jobs: &'a [Job],
    pub payers: &'a [Payer],
    pub catalog: &'a Catalog,
    pub caps: GlobalCaps,
    /// The account's EC2 vCPU quota for the instance families used, when known.
    pub vcpu_quota: Option<u32>,
    /// RunInstances calls this pass may make (from the EC2 rate limiter).
    pub launch_budget: u32,
    pub now: DateTime<Utc>,
}

/// One job to launch, with the ladder of ways to launch it.
#[derive(Debug, Clone, Serialize)]
pub struct Launch<'a> {
    pub job_id: &'a str,
    pub payer_id: &'a str,
    pub kind: &'a str,
    pub batch: &'a str,
    pub tier: u8,
    /// The attempt this launch will be.
    pub attempt: u32,
    /// vCPUs reserved against caps: the largest type on the ladder.
    pub vcpus: u32,
    /// Estimated price of the first rung, on demand.
    pub est_usd_per_hour: f64,
    pub ladder: Vec<Rung>,
}

/// A job that is not launched this pass, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Waiting<'a> {
    pub job_id: &'a str,
    pub payer_id: &'a str,
    pub kind: &'a str,
    pub batch: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<u8>,
    pub state: JobState,
    pub reason: Reason<'a>,
}

/// Why a job does not launch in this pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Reason<'a> {
    /// Nothing left to do for it (succeeded, dead or cancelled), with the ledger's reason.
    Terminal {
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<&'a str>,
    },
    /// An instance is launching or running for its current attempt.
    InFlight {
        #[serde(skip_serializing_if = "Option::is_none")]
        instance_id: Option<&'a str>,
    },
    /// Its last attempt failed; the retry policy has not yet requeued it.
    AwaitingRetry,
    UnknownPayer,
    UnknownKind,
    PayerDisabled,
    PayerPaused {
        reason: &'a str,
    },
    /// A lower-tier job of the same payer and batch is dead or cancelled.
    BlockedByDead {
        blocking: Vec<&'a str>,
        more: usize,
    },
    /// Lower-tier jobs of the same payer and batch have not succeeded yet.
    WaitingOnTier {
        tier: u8,
        blocking: Vec<&'a str>,
        more: usize,
    },
    /// Retry backoff.
    Backoff {
        until: DateTime<Utc>,
    },
    PayerInstanceCap {
        limit: u32,
    },
    PayerVcpuCap {
        limit: u32,
        in_use: u32,
        needed: u32,
    },
    GlobalInstanceCap {
        limit: u32,
    },
    GlobalVcpuCap {
        limit: u32,
        in_use: u32,
        needed: u32,
    },
    VcpuQuota {
        quota: u32,
        in_use: u32,
        needed: u32,
    },
    /// The pass's RunInstances budget is spent; it goes in a later pass.
    LaunchBudget {
        budget: u32,
    },
    /// No instance type satisfies the job's requirement.
    NoInstanceType {
        requirement: String,
    },
}

/// A state change the plan asks for besides launches.
#[derive(Debug, Clone, Serialize)]
pub struct Mark<'a> {
    pub job_id: &'a str,
    pub from: JobState,
    pub to: JobState,
}

/// Capacity in use before and after the plan.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Usage {
    pub instances: u32,
    pub vcpus: u32,
}

/// The result of one planning pass.
#[derive(Debug, Clone, Serialize)]
pub struct Plan<'a> {
    pub now: DateTime<Utc>,
    pub caps: GlobalCaps,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpu_quota: Option<u32>,
    pub launch_budget: u32,
    pub in_use: Usage,
    pub after: Usage,
    pub est_usd_per_hour: f64,
    pub launches: Vec<Launch<'a>>,
    pub waiting: Vec<Waiting<'a>>,
    /// Queued jobs to mark blocked, and blocked jobs to release back to queued.
    pub marks: Vec<Mark<'a>>,
}

/// Per (payer, batch): which jobs of each tier have not succeeded, and which are dead.
#[derive(Default)]
struct Group<'a> {
    open: [Vec<&'a str>; 16],
    open_count: [usize; 16],
    dead: [Vec<&'a str>; 16],
    dead_count: [usize; 16],
}

impl<'a> Group<'a> {
    fn add(&mut self, tier: u8, job: &'a Job) {
        let t = usize::from(tier.min(15));
        match job.state {
            JobState::Succeeded => {}
            JobState::Dead | JobState::Cancelled => {
                push_capped(&mut self.dead[t], &mut self.dead_count[t], &job.job_id);
                push_capped(&mut self.open[t], &mut self.open_count[t], &job.job_id);
            }
            _ => push_capped(&mut self.open[t], &mut self.open_count[t], &job.job_id),
        }
    }

    /// Dead or cancelled jobs below `tier`: the job can never launch while they stay so.
    fn blocked(&self, tier: u8) -> Option<Reason<'a>> {
        let (blocking, total) = collect(&self.dead, &self.dead_count, 0..usize::from(tier.min(15)));
        (total > 0).then(|| Reason::BlockedByDead {
            more: total - blocking.len(),
            blocking,
        })
    }

    /// Jobs below `tier` that have not succeeded yet.
    fn waiting(&self, tier: u8) -> Option<Reason<'a>> {
        let (blocking, total) = collect(&self.open, &self.open_count, 0..usize::from(tier.min(15)));
        (total > 0).then(|| Reason::WaitingOnTier {
            tier,
            more: total - blocking.len(),
            blocking,
        })
    }
}

fn push_capped<'a>(ids: &mut Vec<&'a str>, count: &mut usize, id: &'a str) {
    *count += 1;
    // Keep the smallest ids so the named blockers do not depend on input order.
    if ids.len() < NAMED_BLOCKERS {
        ids.push(id);
        ids.sort_unstable();
    } else if let Some(last) = ids.last_mut() {
        if id < *last {
            *last = id;
            ids.sort_unstable();
        }
    }
}

fn collect<'a>(
    lists: &[Vec<&'a str>; 16],
    counts: &[usize; 16],
    tiers: std::ops::Range<usize>,
) -> (Vec<&'a str>, usize) {
    let mut names = Vec::new();
    let mut total = 0;
    for t in tiers {
        total += counts[t];
        for id in &lists[t] {
            if names.len() < NAMED_BLOCKERS {
                names.push(*id);
            }
        }
    }
    (names, total)
}

/// The rank of a launchable job: tier ascending, payer priority descending, job priority
/// descending, submitted ascending, job id; the index breaks ties between duplicate ids.
pub type RankKey<'a> = (u8, Reverse<u8>, Reverse<u8>, i64, &'a str, usize);

/// The rank key of a job under its payer.
pub fn rank_key<'a>(job: &'a Job, payer: &Payer, tier: u8, index: usize) -> RankKey<'a> {
    let job_priority = job.priority.min(payer.profile.job_priority_max);
    (
        tier,
        Reverse(payer.profile.priority),
        Reverse(job_priority),
        job.submitted_at.timestamp_micros(),
        &job.job_id,
        index,
    )
}

struct Sized<'c> {
    types: Vec<&'c InstanceType>,
    vcpus: u32,
    requirement: Option<Requirement>,
}

/// Plans one pass. Pure: the same snapshot always gives the same plan.
pub fn plan<'a>(snap: &Snapshot<'a>) -> Plan<'a> {
    let payer_index: HashMap<&str, usize> = snap
        .payers
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id(), i))
        .collect();
    let payer_of = |job: &Job| payer_index.get(job.payer_id.as_str()).copied();
    let tier_of = |job: &Job, p: usize| snap.payers[p].kind(&job.kind).map(|k| k.tier);

    // Pass 1: tier gates per (payer, batch), capacity in flight.
    let mut groups: HashMap<(&str, &str), Group<'a>> = HashMap::new();
    let mut payer_use = vec![Usage::default(); snap.payers.len()];
    let mut in_use = Usage::default();
    let mut sizing_cache: HashMap<(usize, &str, u32), Sized<'a>> = HashMap::new();
    let mut tiers: Vec<Option<(usize, u8)>> = Vec::with_capacity(snap.jobs.len());
    for job in snap.jobs {
        let resolved = payer_of(job).and_then(|p| tier_of(job, p).map(|t| (p, t)));
        tiers.push(resolved);
        if let Some((p, tier)) = resolved {
            groups
                .entry((job.payer_id.as_str(), job.batch.as_str()))
                .or_default()
                .add(tier, job);
            if job.state.is_in_flight() {
                let vcpus = in_flight_vcpus(snap, job, p, &mut sizing_cache);
                payer_use[p].instances += 1;
                payer_use[p].vcpus += vcpus;
                in_use.instances += 1;
                in_use.vcpus += vcpus;
            }
        } else if job.state.is_in_flight() {
            in_use.instances += 1;
        }
    }

    // Pass 2: rank the candidates, everything else gets its reason now.
    let mut candidates: Vec<(RankKey<'a>, Option<Reason<'a>>)> = Vec::new();
    let mut waiting: Vec<Waiting<'a>> = Vec::new();
    let mut others: Vec<Waiting<'a>> = Vec::new();
    for (i, job) in snap.jobs.iter().enumerate() {
        let waiting_for = |tier, reason| waiting_entry(job, tier, reason);
        let Some(p) = payer_of(job) else {
            others.push(waiting_for(
                None,
                state_reason(job).unwrap_or(Reason::UnknownPayer),
            ));
            continue;
        };
        let Some((_, tier)) = tiers[i] else {
            others.push(waiting_for(
                None,
                state_reason(job).unwrap_or(Reason::UnknownKind),
            ));
            continue;
        };
        if let Some(reason) = state_reason(job) {
            others.push(waiting_for(Some(tier), reason));
            continue;
        }
        let payer = &snap.payers[p];
        let group = &groups[&(job.payer_id.as_str(), job.batch.as_str())];
        // A dead lower tier is a fact of the batch, so it is reported before payer state.
        let gate = if let Some(r) = group.blocked(tier) {
            Some(r)
        } else if !payer.profile.enabled {
            Some(Reason::PayerDisabled)
        } else if let Some(why) = &payer.paused {
            Some(Reason::PayerPaused { reason: why })
        } else if let Some(r) = group.waiting(tier) {
            Some(r)
        } else {
            job.not_before
                .filter(|nb| *nb > snap.now)
                .map(|until| Reason::Backoff { until })
        };
        candidates.push((rank_key(job, payer, tier, i), gate));
    }
    candidates.sort_unstable_by(|a, b| a.0.cmp(&b.0));

    // Pass 3: walk in rank order, filling capacity.
    let vcpu_limit = snap
        .vcpu_quota
        .map_or(snap.caps.max_vcpus, |q| q.min(snap.caps.max_vcpus));
    let mut after = in_use;
    let mut launches: Vec<Launch<'a>> = Vec::new();
    let mut marks = Vec::new();
    let mut est_total = 0.0;
    for (key, gate) in candidates {
        let (tier, i) = (key.0, key.5);
        let job = &snap.jobs[i];
        let p = tiers[i]
            .expect("candidates have a resolved payer and tier")
            .0;
        let payer = &snap.payers[p];
        let reason = gate.or_else(|| {
            if payer_use[p].instances >= payer.profile.caps.max_instances {
                return Some(Reason::PayerInstanceCap {
                    limit: payer.profile.caps.max_instances,
                });
            }
            if after.instances >= snap.caps.max_instances {
                return Some(Reason::GlobalInstanceCap {
                    limit: snap.caps.max_instances,
                });
            }
            if launches.len() >= snap.launch_budget as usize {
                return Some(Reason::LaunchBudget {
                    budget: snap.launch_budget,
                });
            }
            let sized = size(snap, job, p, &mut sizing_cache);
            if sized.types.is_empty() {
                let requirement = sized
                    .requirement
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                return Some(Reason::NoInstanceType { requirement });
            }
            let needed = sized.vcpus;
            let limit = payer.profile.caps.max_vcpus;
            if payer_use[p].vcpus + needed > limit {
                return Some(Reason::PayerVcpuCap {
                    limit,
                    in_use: payer_use[p].vcpus,
                    needed,
                });
            }
            if after.vcpus + needed > vcpu_limit {
                let in_use = after.vcpus;
                return Some(match snap.vcpu_quota {
                    Some(quota) if quota < snap.caps.max_vcpus => Reason::VcpuQuota {
                        quota,
                        in_use,
                        needed,
                    },
                    _ => Reason::GlobalVcpuCap {
                        limit,
                        in_use,
                        needed,
                    },
                });
            }
            None
        });
        match reason {
            Some(reason) => {
                if matches!(reason, Reason::BlockedByDead { .. }) {
                    if job.state == JobState::Queued {
                        marks.push(Mark {
                            job_id: &job.job_id,
                            from: JobState::Queued,
                            to: JobState::Blocked,
                        });
                    }
                } else if job.state == JobState::Blocked {
                    marks.push(Mark {
                        job_id: &job.job_id,
                        from: JobState::Blocked,
                        to: JobState::Queued,
                    });
                }
                waiting.push(waiting_entry(job, Some(tier), reason));
            }
            None => {
                let sized = size(snap, job, p, &mut sizing_cache);
                let kind = payer
                    .kind(&job.kind)
                    .expect("tier was resolved from this kind");
                let policy = kind.capacity.unwrap_or(payer.profile.launch.capacity);
                let ladder = sizing::ladder(&sized.types, &payer.profile.launch.subnets, policy);
                let est = sized.types[0].on_demand_usd_per_hour;
                let vcpus = sized.vcpus;
                payer_use[p].instances += 1;
                payer_use[p].vcpus += vcpus;
                after.instances += 1;
                after.vcpus += vcpus;
                est_total += est;
                launches.push(Launch {
                    job_id: &job.job_id,
                    payer_id: &job.payer_id,
                    kind: &job.kind,
                    batch: &job.batch,
                    tier,
                    attempt: job.attempt + 1,
                    vcpus,
                    est_usd_per_hour: est,
                    ladder,
                });
            }
        }
    }
    others.sort_by(|a, b| (a.state, a.job_id).cmp(&(b.state, b.job_id)));
    waiting.extend(others);
    Plan {
        now: snap.now,
        caps: snap.caps,
        vcpu_quota: snap.vcpu_quota,
        launch_budget: snap.launch_budget,
        in_use,
        after,
        est_usd_per_hour: est_total,
        launches,
        waiting,
        marks,
    }
}

fn waiting_entry<'a>(job: &'a Job, tier: Option<u8>, reason: Reason<'a>) -> Waiting<'a> {
    Waiting {
        job_id: &job.job_id,
        payer_id: &job.payer_id,
        kind: &job.kind,
        batch: &job.batch,
        tier,
        state: job.state,
        reason,
    }
}

/// The reason for jobs whose state alone keeps them out of the plan.
fn state_reason(job: &Job) -> Option<Reason<'_>> {
    match job.state {
        JobState::Queued | JobState::Blocked => None,
        JobState::Launching | JobState::Running => Some(Reason::InFlight {
            instance_id: job.current_attempt().and_then(|a| a.instance_id.as_deref()),
        }),
        JobState::Failed => Some(Reason::AwaitingRetry),
        JobState::Succeeded | JobState::Dead | JobState::Cancelled => Some(Reason::Terminal {
            detail: job.reason.as_deref(),
        }),
    }
}

/// Sizing of a job, cached per (payer, kind, required vCPUs): memory follows from vCPUs.
fn size<'a, 'c>(
    snap: &Snapshot<'a>,
    job: &'a Job,
    p: usize,
    cache: &'c mut HashMap<(usize, &'a str, u32), Sized<'a>>,
) -> &'c Sized<'a> {
    let payer = &snap.payers[p];
    let kind = payer
        .kind(&job.kind)
        .expect("only jobs of known kinds are sized");
    let spec = &kind.compute;
    let requirement = spec
        .instance_types
        .is_none()
        .then(|| Requirement::for_spec(spec, job.input_bytes()));
    let key = (
        p,
        job.kind.as_str(),
        requirement.as_ref().map_or(0, |r| r.vcpus),
    );
    cache.entry(key).or_insert_with(|| {
        let types = sizing::choose_types(
            snap.catalog,
            spec,
            job.input_bytes(),
            payer.profile.caps.max_vcpus,
        );
        let vcpus = types.iter().map(|t| t.vcpus).max().unwrap_or(0);
        Sized {
            types,
            vcpus,
            requirement,
        }
    })
}

/// vCPUs held by an in-flight job: its attempt's instance type, or its sizing when unknown.
fn in_flight_vcpus<'a>(
    snap: &Snapshot<'a>,
    job: &'a Job,
    p: usize,
    cache: &mut HashMap<(usize, &'a str, u32), Sized<'a>>,
) -> u32 {
    job.current_attempt()
        .and_then(|a| a.rung.as_ref())
        .and_then(|r| snap.catalog.get(&r.instance_type))
        .map_or_else(|| size(snap, job, p, cache).vcpus, |t| t.vcpus)
}
