//! JSON-lines job files: what `mayfly submit --file` sends and what the offline
//! `mayfly plan --jobs` reads as a ledger snapshot.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::job::{Attempt, Job, JobInput, JobRequest, JobState};
use crate::sizing::Rung;

/// One line of a jobs file: a request, optionally with ledger fields for offline planning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobLine {
    job_id: String,
    payer_id: String,
    kind: String,
    batch: String,
    #[serde(default)]
    input: Option<JobInput>,
    #[serde(default)]
    params: BTreeMap<String, String>,
    #[serde(default)]
    priority: Option<u8>,
    #[serde(default)]
    state: Option<JobState>,
    #[serde(default)]
    submitted_at: Option<DateTime<Utc>>,
    #[serde(default)]
    attempt: Option<u32>,
    #[serde(default)]
    not_before: Option<DateTime<Utc>>,
    #[serde(default)]
    instance_type: Option<String>,
    #[serde(default)]
    instance_id: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// A bad line in a jobs file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {field}: {reason}")]
pub struct JobsFileError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub reason: String,
}

fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// Parses requests (for `submit --file`); every bad line is reported.
pub fn parse_requests(file: &str, text: &str) -> Result<Vec<JobRequest>, Vec<JobsFileError>> {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for (line, body) in lines(text) {
        match JobRequest::parse(body) {
            Ok(r) => ok.push(r),
            Err(e) => errors.push(JobsFileError {
                file: file.to_owned(),
                line,
                field: e.field,
                reason: e.reason,
            }),
        }
    }
    if errors.is_empty() {
        Ok(ok)
    } else {
        Err(errors)
    }
}

/// Parses a ledger snapshot for offline planning. Lines without `submitted_at` are taken as
/// submitted at `now` minus their distance from the end, so file order is submission order.
pub fn parse_snapshot(
    file: &str,
    text: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Job>, Vec<JobsFileError>> {
    let all: Vec<(usize, &str)> = lines(text).collect();
    let count = all.len() as i64;
    let mut jobs = Vec::new();
    let mut errors = Vec::new();
    for (n, (line, body)) in all.into_iter().enumerate() {
        let err = |field: &str, reason: String| JobsFileError {
            file: file.to_owned(),
            line,
            field: field.to_owned(),
            reason,
        };
        let parsed: JobLine = match crate::job::from_json(body, "(line)") {
            Ok(v) => v,
            Err(e) => {
                errors.push(err(&e.field, e.reason));
                continue;
            }
        };
        let request = JobRequest {
            job_id: parsed.job_id,
            payer_id: parsed.payer_id,
            kind: parsed.kind,
            batch: parsed.batch,
            input: parsed.input,
            params: parsed.params,
            priority: parsed.priority,
        };
        if let Err(e) = request.validate() {
            errors.push(err(&e.field, e.reason));
            continue;
        }
        let submitted = parsed
            .submitted_at
            .unwrap_or_else(|| now - chrono::Duration::seconds(count - n as i64));
        let mut job = Job::from_request(request, submitted);
        job.state = parsed.state.unwrap_or(JobState::Queued);
        job.not_before = parsed.not_before;
        job.reason = parsed.reason;
        job.attempt = parsed
            .attempt
            .unwrap_or(u32::from(job.state.is_in_flight()));
        if job.attempt > 0 {
            job.attempts.push(Attempt {
                number: job.attempt,
                rung: parsed.instance_type.map(|t| Rung {
                    instance_type: t,
                    subnet: String::new(),
                    capacity: crate::profile::CapacityType::OnDemand,
                }),
                instance_id: parsed.instance_id,
                ..Attempt::default()
            });
        }
        jobs.push(job);
    }
    if errors.is_empty() {
        Ok(jobs)
    } else {
        Err(errors)
    }
}

/// Reads a file, naming it in the error.
pub fn read(path: &Path) -> Result<String, JobsFileError> {
    std::fs::read_to_string(path).map_err(|e| JobsFileError {
        file: path.display().to_string(),
        line: 0,
        field: "(file)".into(),
        reason: format!("cannot read: {e}"),
    })
}
