//! How a plan reads: one line per reason for people, and the table `mayfly plan` prints.

use std::fmt::{self, Write as _};

use crate::plan::{Plan, Reason};
use crate::profile::CapacityType;
use crate::quota::{AccountQuota, QuotaSource};

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |ids: &crate::plan::Blockers<'_>, more: usize| {
            let mut s = ids.as_slice().join(", ");
            if more > 0 {
                let _ = write!(s, " and {more} more");
            }
            s
        };
        match self {
            Reason::Terminal { detail: Some(d) } => write!(f, "terminal: {d}"),
            Reason::Terminal { detail: None } => f.write_str("terminal"),
            Reason::InFlight {
                instance_id: Some(id),
            } => write!(f, "in flight on {id}"),
            Reason::InFlight { instance_id: None } => f.write_str("launching"),
            Reason::AwaitingRetry => f.write_str("attempt failed; awaiting its retry decision"),
            Reason::UnknownPayer => f.write_str("no profile for this payer"),
            Reason::UnknownKind => f.write_str("the payer's profile has no such job kind"),
            Reason::PayerDisabled => f.write_str("payer is disabled in its profile"),
            Reason::PayerPaused { reason } => write!(f, "payer is paused: {reason}"),
            Reason::BlockedByDead { blocking, more } => {
                write!(
                    f,
                    "blocked: lower-tier job dead or cancelled: {}",
                    names(blocking, *more)
                )
            }
            Reason::WaitingOnTier {
                tier,
                blocking,
                more,
            } => {
                write!(
                    f,
                    "waiting on lower tiers (below {tier}): {}",
                    names(blocking, *more)
                )
            }
            Reason::Backoff { until } => {
                write!(
                    f,
                    "retry backoff until {}",
                    until.format("%Y-%m-%dT%H:%M:%SZ")
                )
            }
            Reason::PayerInstanceCap { limit } => write!(f, "payer at its instance cap ({limit})"),
            Reason::PayerVcpuCap {
                limit,
                in_use,
                needed,
            } => {
                write!(
                    f,
                    "payer vCPU cap: {in_use} in use + {needed} needed > {limit}"
                )
            }
            Reason::GlobalInstanceCap { limit } => {
                write!(f, "global instance cap reached ({limit})")
            }
            Reason::GlobalVcpuCap {
                limit,
                in_use,
                needed,
            } => {
                write!(
                    f,
                    "global vCPU cap: {in_use} in use + {needed} needed > {limit}"
                )
            }
            Reason::VcpuQuota {
                quota,
                in_use,
                needed,
                source: QuotaSource::Flag,
            } => {
                write!(
                    f,
                    "account vCPU quota (--vcpu-quota): {in_use} in use + {needed} needed > {quota}"
                )
            }
            Reason::VcpuQuota {
                quota,
                in_use,
                needed,
                source: QuotaSource::Account(pool),
            } => {
                write!(
                    f,
                    "account vCPU quota {pool}: {in_use} in use + {needed} needed > {quota}, on every rung"
                )
            }
            Reason::LaunchBudget { budget } => {
                write!(f, "launch budget of this pass spent ({budget}); next pass")
            }
            Reason::NoInstanceType { requirement } => {
                write!(f, "no instance type fits {requirement}")
            }
        }
    }
}

/// Lays out rows as left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let _ = write!(s, "{cell:<width$}", width = widths[i]);
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

impl fmt::Display for Plan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Plan at {}", self.now.format("%Y-%m-%dT%H:%M:%SZ"))?;
        let quota = self
            .vcpu_quota
            .map(|q| format!(", vCPU quota {q}"))
            .unwrap_or_default();
        writeln!(
            f,
            "Capacity: {} → {} instances of {}, {} → {} vCPUs of {}{quota}; launch budget {}",
            self.in_use.instances,
            self.after.instances,
            self.caps.max_instances,
            self.in_use.vcpus,
            self.after.vcpus,
            self.caps.max_vcpus,
            self.launch_budget,
        )?;
        match self.account_quotas {
            AccountQuota::NotRead => {}
            AccountQuota::Read(_) => {
                let pools: Vec<String> = self
                    .quota_use
                    .iter()
                    .map(|u| {
                        format!(
                            "{} {} → {} of {}",
                            u.quota.code(),
                            u.in_use,
                            u.after,
                            u.limit
                        )
                    })
                    .collect();
                writeln!(f, "Account vCPU quotas: {}", pools.join(", "))?;
            }
            AccountQuota::Unreadable(why) => {
                writeln!(
                    f,
                    "Account vCPU quotas unknown ({why}): only the caps apply (--vcpu-quota sets one)"
                )?;
            }
        }
        writeln!(f)?;
        // Spot prices are read at launch, for the type and the AZ EC2 picks; until then a spot
        // rung is estimated at its on-demand price, which is its ceiling.
        let spot = self.launches.iter().any(|l| {
            l.ladder
                .first()
                .is_some_and(|r| r.capacity == CapacityType::Spot)
        });
        let note = if spot {
            " (spot rungs at their on-demand ceiling; the spot price is recorded at launch)"
        } else {
            ""
        };
        writeln!(
            f,
            "Launch {} job(s), est. ${:.4}/h on demand{note}:",
            self.launches.len(),
            self.est_usd_per_hour
        )?;
        if !self.launches.is_empty() {
            let rows: Vec<Vec<String>> = self
                .launches
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let first = &l.ladder[0];
                    vec![
                        (i + 1).to_string(),
                        l.job_id.to_owned(),
                        l.payer_id.to_owned(),
                        l.kind.to_owned(),
                        l.batch.to_owned(),
                        l.tier.to_string(),
                        first.instance_type.clone(),
                        l.vcpus.to_string(),
                        first.capacity.to_string(),
                        format!("{:.4}", l.est_usd_per_hour),
                        l.ladder.len().to_string(),
                    ]
                })
                .collect();
            let header = [
                "#", "JOB", "PAYER", "KIND", "BATCH", "TIER", "TYPE", "VCPU", "CAPACITY", "$/H",
                "RUNGS",
            ];
            f.write_str(&table(&header, &rows))?;
        }
        writeln!(f)?;
        writeln!(f, "Not launched: {} job(s):", self.waiting.len())?;
        if !self.waiting.is_empty() {
            let rows: Vec<Vec<String>> = self
                .waiting
                .iter()
                .map(|w| {
                    vec![
                        w.job.job_id.to_string(),
                        w.job.payer_id.to_string(),
                        w.job.kind.to_string(),
                        w.job.batch.to_string(),
                        w.tier.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                        w.job.state.to_string(),
                        w.reason.to_string(),
                    ]
                })
                .collect();
            let header = ["JOB", "PAYER", "KIND", "BATCH", "TIER", "STATE", "REASON"];
            f.write_str(&table(&header, &rows))?;
        }
        if !self.marks.is_empty() {
            writeln!(f)?;
            writeln!(f, "State changes:")?;
            for m in &self.marks {
                writeln!(f, "  {}: {} → {}", m.job_id, m.from, m.to)?;
            }
        }
        Ok(())
    }
}
