//! The planner: a pure function from a ledger snapshot to the ordered launches of one pass and,
//! for every job not launched, the reason. No I/O; `now` is an input.

use std::cmp::Reverse;

use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap;
use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

use crate::catalog::{Catalog, InstanceType};
use crate::job::JobState;
use crate::profile::{CapacityType, GlobalCaps, Payer};
use crate::quota::{AccountQuota, AccountQuotas, QuotaPool, QuotaSource};
use crate::sizing::{self, Requirement, Rung};
use crate::summary::JobSummary;

/// How many blocking job ids a reason names before it just counts the rest.
const NAMED_BLOCKERS: usize = 3;
const TIERS: usize = 16;

/// Everything the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// Every non-terminal job, plus every job of a (payer, batch) that has a non-terminal one.
    pub jobs: &'a [JobSummary],
    pub payers: &'a [Payer],
    pub catalog: &'a Catalog,
    pub caps: GlobalCaps,
    /// One vCPU quota over every family (`--vcpu-quota`), when given.
    pub vcpu_quota: Option<u32>,
    /// The account's vCPU quotas per family group and purchase option (or why they could
    /// not be read): each launch goes only to rungs whose quota has room.
    pub account_quotas: AccountQuota<'a>,
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
#[derive(Debug, Clone)]
pub struct Waiting<'a> {
    pub job: &'a JobSummary,
    pub tier: Option<u8>,
    pub reason: Reason<'a>,
}

impl Serialize for Waiting<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Waiting", 7)?;
        st.serialize_field("job_id", &*self.job.job_id)?;
        st.serialize_field("payer_id", &*self.job.payer_id)?;
        st.serialize_field("kind", &*self.job.kind)?;
        st.serialize_field("batch", &*self.job.batch)?;
        if let Some(tier) = self.tier {
            st.serialize_field("tier", &tier)?;
        }
        st.serialize_field("state", &self.job.state)?;
        st.serialize_field("reason", &self.reason)?;
        st.end()
    }
}

/// Up to three blocking job ids (the smallest), without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Blockers<'a> {
    ids: [&'a str; NAMED_BLOCKERS],
    len: u8,
}

impl<'a> Blockers<'a> {
    fn insert(&mut self, id: &'a str) {
        let len = usize::from(self.len);
        if len == NAMED_BLOCKERS && id >= self.ids[NAMED_BLOCKERS - 1] {
            return;
        }
        let pos = self.ids[..len].partition_point(|x| *x < id);
        if pos >= NAMED_BLOCKERS {
            return;
        }
        let end = (len + 1).min(NAMED_BLOCKERS);
        self.ids.copy_within(pos..end - 1, pos + 1);
        self.ids[pos] = id;
        self.len = end as u8;
    }

    fn merge(&mut self, other: &Blockers<'a>) {
        for id in other.as_slice() {
            self.insert(id);
        }
    }

    pub fn as_slice(&self) -> &[&'a str] {
        &self.ids[..usize::from(self.len)]
    }
}

impl Serialize for Blockers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.as_slice().len()))?;
        for id in self.as_slice() {
            seq.serialize_element(id)?;
        }
        seq.end()
    }
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
        blocking: Blockers<'a>,
        more: usize,
    },
    /// Lower-tier jobs of the same payer and batch have not succeeded yet.
    WaitingOnTier {
        tier: u8,
        blocking: Blockers<'a>,
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
    /// A vCPU quota is full: `--vcpu-quota` over every family, or the account's quota of
    /// the first rung's family group and purchase option (no rung of the ladder has room).
    VcpuQuota {
        quota: u32,
        in_use: u32,
        needed: u32,
        source: QuotaSource,
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

/// vCPUs in flight under one of the account's quotas.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PoolUsage {
    pub quota: QuotaPool,
    pub limit: u32,
    pub in_use: u32,
    pub after: u32,
}

/// The result of one planning pass.
#[derive(Debug, Clone, Serialize)]
pub struct Plan<'a> {
    pub now: DateTime<Utc>,
    pub caps: GlobalCaps,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpu_quota: Option<u32>,
    /// The account's vCPU quotas the plan kept to, or why they are unknown.
    #[serde(skip_serializing_if = "AccountQuota::is_not_read")]
    pub account_quotas: AccountQuota<'a>,
    /// vCPUs in flight per account quota, before and after the plan (only when read).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quota_use: Vec<PoolUsage>,
    pub launch_budget: u32,
    pub in_use: Usage,
    pub after: Usage,
    pub est_usd_per_hour: f64,
    pub launches: Vec<Launch<'a>>,
    pub waiting: Vec<Waiting<'a>>,
    /// Queued jobs to mark blocked, and blocked jobs to release back to queued.
    pub marks: Vec<Mark<'a>>,
}

/// Per (payer, batch): what each tier holds back, then the gate of each tier once all its
/// jobs are known.
#[derive(Default)]
struct Group<'a> {
    /// Per tier: jobs not succeeded, and jobs dead or cancelled (counts, smallest ids).
    tiers: Vec<[(usize, Blockers<'a>); 2]>,
    gates: Vec<Option<Reason<'a>>>,
}

impl<'a> Group<'a> {
    /// Counts one job of the group.
    fn add(&mut self, tier: u8, state: JobState, id: &'a str) {
        let t = usize::from(tier).min(TIERS - 1);
        if self.tiers.len() <= t {
            self.tiers.resize(t + 1, Default::default());
        }
        let [open, dead] = &mut self.tiers[t];
        if state != JobState::Succeeded {
            open.0 += 1;
            open.1.insert(id);
        }
        if matches!(state, JobState::Dead | JobState::Cancelled) {
            dead.0 += 1;
            dead.1.insert(id);
        }
    }

    /// Computes, once per tier, why a job of that tier may not launch yet (if it may not).
    /// A dead or cancelled lower tier blocks; otherwise unfinished lower tiers make it wait.
    fn seal(&mut self) {
        let tiers = std::mem::take(&mut self.tiers);
        let mut open_below = (0usize, Blockers::default());
        let mut dead_below = (0usize, Blockers::default());
        self.gates = tiers
            .iter()
            .enumerate()
            .map(|(t, [open, dead])| {
                let gate = if dead_below.0 > 0 {
                    let more = dead_below.0 - dead_below.1.as_slice().len();
                    Some(Reason::BlockedByDead {
                        blocking: dead_below.1,
                        more,
                    })
                } else if open_below.0 > 0 {
                    let more = open_below.0 - open_below.1.as_slice().len();
                    Some(Reason::WaitingOnTier {
                        tier: t as u8,
                        blocking: open_below.1,
                        more,
                    })
                } else {
                    None
                };
                open_below.0 += open.0;
                open_below.1.merge(&open.1);
                dead_below.0 += dead.0;
                dead_below.1.merge(&dead.1);
                gate
            })
            .collect();
    }

    fn gate(&self, tier: u8) -> Option<&Reason<'a>> {
        self.gates
            .get(usize::from(tier).min(TIERS - 1))
            .and_then(Option::as_ref)
    }
}

/// The rank of a launchable job: tier ascending, payer priority descending, job priority
/// descending, submitted ascending, job id; the index breaks ties between duplicate ids.
pub type RankKey<'a> = (u8, Reverse<u8>, Reverse<u8>, i64, &'a str, usize);

/// The rank key of a job under its payer.
pub fn rank_key<'a>(job: &'a JobSummary, payer: &Payer, tier: u8, index: usize) -> RankKey<'a> {
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

/// What pass 1 learns about a job: its payer, tier and (payer, batch) group.
#[derive(Clone, Copy)]
enum Resolved {
    UnknownPayer,
    UnknownKind {
        payer: usize,
    },
    Known {
        payer: usize,
        tier: u8,
        group: usize,
        /// The job's state, and whether it is in retry backoff: pass 3 visits jobs in rank
        /// order, and need not read the job itself unless it launches or changes state.
        state: JobState,
        backoff: bool,
    },
}

struct Sized<'c> {
    types: Vec<&'c InstanceType>,
    vcpus: u32,
    requirement: Option<Requirement>,
}

type SizingCache<'a> = FxHashMap<(usize, &'a str, u32), Sized<'a>>;

/// Plans one pass. Pure: the same snapshot always gives the same plan.
pub fn plan<'a>(snap: &Snapshot<'a>) -> Plan<'a> {
    let payer_index: FxHashMap<&str, usize> = snap
        .payers
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id(), i))
        .collect();

    // Pass 1: resolve each job, gather tier gates per (payer, batch), capacity in flight.
    // Summaries share one allocation between equal payer, kind and batch strings (see
    // `summary::Interner`), so each allocation is looked up by its content once, then by its
    // address; groups are keyed by content (payer index, batch number) all the same.
    let mut kinds: FxHashMap<(usize, usize), (Option<usize>, Option<u8>)> = FxHashMap::default();
    let mut batch_at: FxHashMap<usize, usize> = FxHashMap::default();
    let mut batch_no: FxHashMap<&str, usize> = FxHashMap::default();
    let mut group_index: FxHashMap<(usize, usize), usize> = FxHashMap::default();
    let mut groups: Vec<Group<'a>> = Vec::new();
    let mut payer_use = vec![Usage::default(); snap.payers.len()];
    let mut in_use = Usage::default();
    let mut pool_use: FxHashMap<QuotaPool, u32> = FxHashMap::default();
    let mut sizing_cache = SizingCache::default();
    let mut resolved: Vec<Resolved> = Vec::with_capacity(snap.jobs.len());
    for job in snap.jobs {
        let at = |s: &str| s.as_ptr() as usize;
        let (payer, tier) = *kinds
            .entry((at(&job.payer_id), at(&job.kind)))
            .or_insert_with(|| match payer_index.get(&*job.payer_id) {
                None => (None, None),
                Some(&p) => (Some(p), snap.payers[p].kind(&job.kind).map(|k| k.tier)),
            });
        let r = match (payer, tier) {
            (None, _) => Resolved::UnknownPayer,
            (Some(p), None) => Resolved::UnknownKind { payer: p },
            (Some(p), Some(tier)) => {
                let b = *batch_at.entry(at(&job.batch)).or_insert_with(|| {
                    let next = batch_no.len();
                    *batch_no.entry(&job.batch).or_insert(next)
                });
                let next = groups.len();
                let g = *group_index.entry((p, b)).or_insert(next);
                if g == next {
                    groups.push(Group::default());
                }
                groups[g].add(tier, job.state, &job.job_id);
                Resolved::Known {
                    payer: p,
                    tier,
                    group: g,
                    state: job.state,
                    backoff: job.not_before.is_some_and(|nb| nb > snap.now),
                }
            }
        };
        resolved.push(r);
        if job.state.is_in_flight() {
            // Capacity is held whatever the job's kind: count it from the attempt's type.
            let vcpus = in_flight_vcpus(snap, job, r, &mut sizing_cache);
            if let Resolved::Known { payer: p, .. } | Resolved::UnknownKind { payer: p } = r {
                payer_use[p].instances += 1;
                payer_use[p].vcpus += vcpus;
            }
            in_use.instances += 1;
            in_use.vcpus += vcpus;
            if let Some(pool) = in_flight_pool(job) {
                *pool_use.entry(pool).or_default() += vcpus;
            }
        }
    }
    let pool_in_use = pool_use.clone();

    for g in &mut groups {
        g.seal();
    }

    // Pass 2: rank the candidates; everything else already has its reason.
    let mut candidates: Vec<RankKey<'a>> = Vec::new();
    let mut others: Vec<Waiting<'a>> = Vec::new();
    for (i, job) in snap.jobs.iter().enumerate() {
        let entry = |tier, reason| Waiting { job, tier, reason };
        match (resolved[i], state_reason(job)) {
            (Resolved::UnknownPayer, r) => {
                others.push(entry(None, r.unwrap_or(Reason::UnknownPayer)))
            }
            (Resolved::UnknownKind { .. }, r) => {
                others.push(entry(None, r.unwrap_or(Reason::UnknownKind)))
            }
            (Resolved::Known { tier, .. }, Some(r)) => others.push(entry(Some(tier), r)),
            (Resolved::Known { payer, tier, .. }, None) => {
                candidates.push(rank_key(job, &snap.payers[payer], tier, i));
            }
        }
    }
    candidates.sort_unstable();

    // Pass 3: walk in rank order, filling capacity.
    let vcpu_limit = snap
        .vcpu_quota
        .map_or(snap.caps.max_vcpus, |q| q.min(snap.caps.max_vcpus));
    let mut after = in_use;
    let mut launches: Vec<Launch<'a>> = Vec::new();
    let mut waiting: Vec<Waiting<'a>> = Vec::with_capacity(snap.jobs.len());
    let mut marks = Vec::new();
    let mut est_total = 0.0;
    for key in candidates {
        let (tier, i) = (key.0, key.5);
        let job = &snap.jobs[i];
        let Resolved::Known {
            payer: p,
            group,
            state,
            backoff,
            ..
        } = resolved[i]
        else {
            unreachable!("only resolved jobs are candidates")
        };
        let payer = &snap.payers[p];
        let group = &groups[group];
        // A dead lower tier is a fact of the batch, so it is reported before payer state.
        let tier_gate = group.gate(tier);
        let blocked = tier_gate
            .filter(|r| matches!(r, Reason::BlockedByDead { .. }))
            .cloned();
        let gate = blocked
            .or_else(|| (!payer.profile.enabled).then_some(Reason::PayerDisabled))
            .or_else(|| {
                payer
                    .paused
                    .as_deref()
                    .map(|reason| Reason::PayerPaused { reason })
            })
            .or_else(|| tier_gate.cloned())
            .or_else(|| {
                backoff
                    .then_some(job.not_before)
                    .flatten()
                    .map(|until| Reason::Backoff { until })
            });
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
                        source: QuotaSource::Flag,
                    },
                    _ => Reason::GlobalVcpuCap {
                        limit: snap.caps.max_vcpus,
                        in_use,
                        needed,
                    },
                });
            }
            None
        });
        let kind = payer
            .kind(&job.kind)
            .expect("tier was resolved from this kind");
        let policy = kind.capacity.unwrap_or(payer.profile.launch.capacity);
        let mut ladder = Vec::new();
        let reason = reason.or_else(|| {
            let sized = size(snap, job, p, &mut sizing_cache);
            ladder = sizing::ladder(&sized.types, &payer.profile.launch.subnets, policy);
            match snap.account_quotas {
                AccountQuota::Read(quotas) => {
                    within_quotas(quotas, snap.catalog, &mut ladder, &mut pool_use).err()
                }
                AccountQuota::NotRead | AccountQuota::Unreadable(_) => None,
            }
        });
        if let Some(reason) = reason {
            let blocked = matches!(reason, Reason::BlockedByDead { .. });
            if blocked && state == JobState::Queued {
                marks.push(Mark {
                    job_id: &job.job_id,
                    from: JobState::Queued,
                    to: JobState::Blocked,
                });
            } else if !blocked && state == JobState::Blocked {
                marks.push(Mark {
                    job_id: &job.job_id,
                    from: JobState::Blocked,
                    to: JobState::Queued,
                });
            }
            waiting.push(Waiting {
                job,
                tier: Some(tier),
                reason,
            });
            continue;
        }
        let sized = size(snap, job, p, &mut sizing_cache);
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
    others.sort_unstable_by(|a, b| (a.job.state, &a.job.job_id).cmp(&(b.job.state, &b.job.job_id)));
    waiting.append(&mut others);
    let quota_use = match snap.account_quotas {
        AccountQuota::Read(quotas) => quotas
            .iter()
            .map(|(quota, limit)| PoolUsage {
                quota,
                limit,
                in_use: pool_in_use.get(&quota).copied().unwrap_or(0),
                after: pool_use.get(&quota).copied().unwrap_or(0),
            })
            .collect(),
        AccountQuota::NotRead | AccountQuota::Unreadable(_) => Vec::new(),
    };
    Plan {
        now: snap.now,
        caps: snap.caps,
        vcpu_quota: snap.vcpu_quota,
        account_quotas: snap.account_quotas,
        quota_use,
        launch_budget: snap.launch_budget,
        in_use,
        after,
        est_usd_per_hour: est_total,
        launches,
        waiting,
        marks,
    }
}

/// The reason for jobs whose state alone keeps them out of the plan.
fn state_reason(job: &JobSummary) -> Option<Reason<'_>> {
    match job.state {
        JobState::Queued | JobState::Blocked => None,
        JobState::Launching | JobState::Running => Some(Reason::InFlight {
            instance_id: job.instance_id(),
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
    job: &'a JobSummary,
    p: usize,
    cache: &'c mut SizingCache<'a>,
) -> &'c Sized<'a> {
    let payer = &snap.payers[p];
    let kind = payer
        .kind(&job.kind)
        .expect("only jobs of known kinds are sized");
    let spec = &kind.compute;
    let requirement = spec
        .instance_types
        .is_none()
        .then(|| Requirement::for_spec(spec, job.input_bytes));
    let key = (p, &*job.kind, requirement.as_ref().map_or(0, |r| r.vcpus));
    cache.entry(key).or_insert_with(|| {
        let types = sizing::choose_types(
            snap.catalog,
            spec,
            job.input_bytes,
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

/// The account quota an in-flight job's instance counts against, when its type is known.
fn in_flight_pool(job: &JobSummary) -> Option<QuotaPool> {
    let instance = job.instance.as_ref()?;
    let capacity = instance.capacity.unwrap_or(CapacityType::OnDemand);
    QuotaPool::of(instance.instance_type.as_deref()?, capacity)
}

/// Keeps the rungs of `ladder` whose account quota has room for their type, and reserves the
/// first one's vCPUs against its quota (the rung the launch most likely lands on; the next
/// pass counts what it really got). A rung of a quota that was not read is kept. Without any
/// rung left, the reason names the quota of the ladder's first rung.
fn within_quotas<'a>(
    quotas: &AccountQuotas,
    catalog: &Catalog,
    ladder: &mut Vec<Rung>,
    pool_use: &mut FxHashMap<QuotaPool, u32>,
) -> Result<(), Reason<'a>> {
    let need = |rung: &Rung| {
        let vcpus = catalog.get(&rung.instance_type).map_or(0, |t| t.vcpus);
        let pool = QuotaPool::of(&rung.instance_type, rung.capacity);
        let limit = pool.and_then(|p| quotas.get(p));
        (pool, limit, vcpus)
    };
    let fits = |rung: &Rung, pool_use: &FxHashMap<QuotaPool, u32>| match need(rung) {
        (Some(pool), Some(limit), vcpus) => {
            pool_use.get(&pool).copied().unwrap_or(0) + vcpus <= limit
        }
        _ => true,
    };
    let Some(first) = ladder.first().cloned() else {
        return Ok(());
    };
    ladder.retain(|r| fits(r, pool_use));
    match ladder.first() {
        Some(rung) => {
            if let (Some(pool), Some(_), vcpus) = need(rung) {
                *pool_use.entry(pool).or_default() += vcpus;
            }
            Ok(())
        }
        None => {
            let (pool, limit, needed) = need(&first);
            let pool = pool.expect("a rung that does not fit has a quota");
            Err(Reason::VcpuQuota {
                quota: limit.unwrap_or(0),
                in_use: pool_use.get(&pool).copied().unwrap_or(0),
                needed,
                source: QuotaSource::Account(pool),
            })
        }
    }
}

/// vCPUs held by an in-flight job: its attempt's instance type, or its sizing when unknown.
fn in_flight_vcpus<'a>(
    snap: &Snapshot<'a>,
    job: &'a JobSummary,
    r: Resolved,
    cache: &mut SizingCache<'a>,
) -> u32 {
    match (job.instance_type().and_then(|t| snap.catalog.get(t)), r) {
        (Some(t), _) => t.vcpus,
        (None, Resolved::Known { payer, .. }) => size(snap, job, payer, cache).vcpus,
        (None, _) => 0,
    }
}
