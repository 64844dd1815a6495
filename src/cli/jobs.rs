//! `mayfly submit` and `mayfly jobs list|show`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::{emit, App, CliError, JobsCommand, Output, SubmitArgs};
use crate::job::{Job, JobInput, JobRequest, JobState};
use crate::job_lookup::{find_job, LookupError};
use crate::jobs_file;
use crate::plan_view::table;
use crate::ports::{Ledger, PageQuery, Queue};
use crate::scheduler::ACTIVE;

#[derive(Debug, Serialize)]
struct Submitted {
    sent: Vec<(String, String)>,
}

impl fmt::Display for Submitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (job, message) in &self.sent {
            writeln!(f, "submitted {job} (message {message})")?;
        }
        writeln!(
            f,
            "{} request(s) on the intake queue; the next pass ingests them",
            self.sent.len()
        )
    }
}

pub(super) async fn submit(app: &App, output: Output, args: &SubmitArgs) -> Result<(), CliError> {
    let requests = match &args.file {
        Some(path) => {
            let text = jobs_file::read(path).map_err(|e| CliError::Invalid(e.to_string()))?;
            jobs_file::parse_requests(&path.display().to_string(), &text).map_err(|es| {
                CliError::Invalid(
                    es.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            })?
        }
        None => {
            let req = JobRequest {
                job_id: args.job_id.clone().unwrap_or_default(),
                payer_id: args.payer.clone().unwrap_or_default(),
                kind: args.kind.clone().unwrap_or_default(),
                batch: args.batch.clone().unwrap_or_default(),
                input: args.input_uri.clone().map(|uri| JobInput {
                    uri,
                    bytes: args.input_bytes,
                }),
                params: args.params.iter().cloned().collect(),
                priority: args.priority,
            };
            req.validate()
                .map_err(|e| CliError::Invalid(e.to_string()))?;
            vec![req]
        }
    };
    let intake = app.intake().await?;
    let mut sent = Vec::with_capacity(requests.len());
    for req in requests {
        let body = serde_json::to_string(&req).expect("requests serialize to JSON");
        let id = intake
            .send(&body, &[])
            .await
            .map_err(|e| app.queue_error(&format!("sending {}", req.job_id), e))?;
        sent.push((crate::job::job_key(&req.payer_id, &req.job_id), id));
    }
    emit(output, &Submitted { sent })
}

pub(super) async fn run(app: &App, output: Output, cmd: JobsCommand) -> Result<(), CliError> {
    let ledger = app.ledger();
    match cmd {
        JobsCommand::List {
            state,
            payer,
            since,
            limit,
        } => {
            let limit = limit as usize;
            let states = if state.is_empty() {
                ACTIVE.to_vec()
            } else {
                let mut wanted = state;
                wanted.sort();
                wanted.dedup();
                wanted
            };
            let mut jobs = Vec::new();
            let mut full = false;
            for state in states {
                let query = PageQuery {
                    state,
                    payer: payer.clone(),
                    since,
                    before: None,
                    limit,
                };
                let page = ledger.page(&query).await.map_err(|e| store(app, e))?;
                full |= page.len() >= limit;
                jobs.extend(page);
            }
            jobs.sort_by(|a, b| (a.submitted_at, &a.job_id).cmp(&(b.submitted_at, &b.job_id)));
            full |= jobs.len() > limit;
            jobs.truncate(limit);
            if full {
                if let Some(last) = jobs.last() {
                    eprintln!(
                        "showing the first {limit}; more may follow: add --since {} (jobs submitted then appear again)",
                        last.submitted_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                    );
                }
            }
            emit(output, &JobList(jobs))
        }
        JobsCommand::Show { job_id } => {
            let job = find(app, ledger.as_ref(), &job_id).await?;
            emit(output, &JobView(job))
        }
        JobsCommand::Retry { job_id } => {
            let job_id = find(app, ledger.as_ref(), &job_id).await?.job_id;
            let scheduler = app.scheduler(&super::PassArgs::defaults()).await?;
            let action = scheduler
                .retry_job(&job_id, chrono::Utc::now())
                .await
                .map_err(|e| op_error(app, e))?;
            emit(output, &action)
        }
        JobsCommand::Cancel { job_id, reason } => {
            let job_id = find(app, ledger.as_ref(), &job_id).await?.job_id;
            let scheduler = app.scheduler(&super::PassArgs::defaults()).await?;
            let action = scheduler
                .cancel_job(&job_id, reason.as_deref(), chrono::Utc::now())
                .await
                .map_err(|e| op_error(app, e))?;
            emit(output, &action)
        }
    }
}

fn op_error(app: &App, e: crate::scheduler::OpError) -> CliError {
    use crate::scheduler::OpError;
    match e {
        OpError::NotFound(_) | OpError::WrongState { .. } => CliError::Invalid(e.to_string()),
        OpError::Store(e) => store(app, e),
        OpError::Contended(_) => CliError::Runtime(e.to_string()),
    }
}

fn store(app: &App, e: crate::ports::StoreError) -> CliError {
    app.store_error("job ledger", e)
}

/// The job an operator's id names: `payer/job_id`, or the job_id alone under any payer.
async fn find(app: &App, ledger: &dyn Ledger, job_id: &str) -> Result<Job, CliError> {
    find_job(app.config().as_ref(), ledger, job_id)
        .await
        .map_err(|e| match e {
            LookupError::Store(e) => store(app, e),
            e => CliError::Invalid(e.to_string()),
        })
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
struct JobList(Vec<Job>);

impl fmt::Display for JobList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<Vec<String>> = self
            .0
            .iter()
            .map(|j| {
                let a = j.current_attempt();
                vec![
                    j.job_id.clone(),
                    j.state.to_string(),
                    j.payer_id.clone(),
                    j.kind.clone(),
                    j.batch.clone(),
                    j.attempt.to_string(),
                    a.and_then(|a| a.instance_id.clone())
                        .unwrap_or_else(|| "-".into()),
                    a.and_then(|a| a.rung.as_ref().map(|r| r.instance_type.clone()))
                        .unwrap_or_else(|| "-".into()),
                    j.reason.clone().unwrap_or_default(),
                ]
            })
            .collect();
        // No rows: the count line alone, not a table of headings over nothing.
        if !rows.is_empty() {
            f.write_str(&table(
                &[
                    "JOB", "STATE", "PAYER", "KIND", "BATCH", "ATTEMPT", "INSTANCE", "TYPE",
                    "REASON",
                ],
                &rows,
            ))?;
        }
        let mut counts: BTreeMap<JobState, usize> = BTreeMap::new();
        for j in &self.0 {
            *counts.entry(j.state).or_default() += 1;
        }
        let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        writeln!(
            f,
            "{} job(s){}",
            self.0.len(),
            if summary.is_empty() {
                String::new()
            } else {
                format!(": {}", summary.join(", "))
            }
        )
    }
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
struct JobView(Job);

impl fmt::Display for JobView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let j = &self.0;
        writeln!(f, "job       {}", j.job_id)?;
        writeln!(
            f,
            "state     {}{}",
            j.state,
            j.reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )?;
        writeln!(
            f,
            "payer     {}  kind {}  batch {}",
            j.payer_id, j.kind, j.batch
        )?;
        writeln!(
            f,
            "submitted {}  version {}",
            j.submitted_at.to_rfc3339(),
            j.version
        )?;
        if let Some(i) = &j.input {
            writeln!(
                f,
                "input     {}{}",
                i.uri,
                i.bytes.map(|b| format!(" ({b} bytes)")).unwrap_or_default()
            )?;
        }
        if let Some(nb) = j.not_before {
            writeln!(f, "not before {}", nb.to_rfc3339())?;
        }
        for a in &j.attempts {
            writeln!(f, "attempt {}", a.number)?;
            let field = |f: &mut fmt::Formatter<'_>, name: &str, v: Option<String>| match v {
                Some(v) => writeln!(f, "  {name:<14}{v}"),
                None => Ok(()),
            };
            field(f, "rung", a.rung.as_ref().map(ToString::to_string))?;
            field(f, "instance", a.instance_id.clone())?;
            field(f, "launch group", a.launch_group.clone())?;
            field(f, "launch index", a.launch_index.map(|i| i.to_string()))?;
            field(f, "zone", a.availability_zone.clone())?;
            field(f, "price $/h", a.usd_per_hour.map(|p| format!("{p:.4}")))?;
            field(f, "launched", a.launched_at.map(|t| t.to_rfc3339()))?;
            field(f, "started", a.started_at.map(|t| t.to_rfc3339()))?;
            field(f, "heartbeat", a.last_heartbeat_at.map(|t| t.to_rfc3339()))?;
            field(f, "finished", a.finished_at.map(|t| t.to_rfc3339()))?;
            field(f, "exit code", a.exit_code.map(|c| c.to_string()))?;
            field(f, "reason", a.reason.clone())?;
            if let Some(tail) = &a.output_tail {
                writeln!(f, "  output tail:")?;
                for line in tail.lines() {
                    writeln!(f, "    | {line}")?;
                }
            }
        }
        Ok(())
    }
}
