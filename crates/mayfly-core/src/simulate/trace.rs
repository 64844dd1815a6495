//! Simulation traces: JSON lines of job arrivals. Each line is a job request (the fields of
//! [`JobRequest`]) plus `at`, when it arrives (seconds after the trace's start), and
//! `run_seconds`, how long its command truly runs on an instance sized for it, and
//! optionally `exits`, the non-zero exit codes of its first attempts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::job::{JobInput, JobRequest};

/// One job arrival in a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceJob {
    /// Seconds after the trace's start when the request reaches the intake queue.
    pub at: f64,
    pub job_id: String,
    pub payer_id: String,
    pub kind: String,
    pub batch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<JobInput>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Seconds the job's command runs on an instance that meets its sizing.
    pub run_seconds: f64,
    /// Exit codes of the job's first attempts, in order (each runs `run_seconds`, then
    /// fails); the attempts after them exit 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exits: Vec<i32>,
}

impl TraceJob {
    /// The request a producer would send for this arrival.
    pub fn request(&self) -> JobRequest {
        JobRequest {
            job_id: self.job_id.clone(),
            payer_id: self.payer_id.clone(),
            kind: self.kind.clone(),
            batch: self.batch.clone(),
            input: self.input.clone(),
            params: self.params.clone(),
            priority: self.priority,
        }
    }

    pub fn input_bytes(&self) -> Option<u64> {
        self.input.as_ref().and_then(|i| i.bytes)
    }
}

/// A bad line in a trace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}: {field}: {reason}")]
pub struct TraceError {
    pub source_name: String,
    pub line: usize,
    pub field: String,
    pub reason: String,
}

/// Parses a trace; every bad line is reported. Blank lines and `#` comments are skipped.
/// Arrivals are returned sorted by `at` (stable, so file order breaks ties).
pub fn parse_trace(source_name: &str, text: &str) -> Result<Vec<TraceJob>, Vec<TraceError>> {
    let mut jobs = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let body = raw.trim();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let err = |field: &str, reason: String| TraceError {
            source_name: source_name.to_owned(),
            line: i + 1,
            field: field.to_owned(),
            reason,
        };
        let job: TraceJob = match crate::job::from_json(body, "(line)") {
            Ok(v) => v,
            Err(e) => {
                errors.push(err(&e.field, e.reason));
                continue;
            }
        };
        if let Err(e) = job.request().validate() {
            errors.push(err(&e.field, e.reason));
        } else if !(job.at.is_finite() && job.at >= 0.0) {
            errors.push(err("at", format!("{} is not a time ≥ 0 seconds", job.at)));
        } else if !(job.run_seconds.is_finite() && job.run_seconds > 0.0) {
            let reason = format!("{} is not a duration > 0 seconds", job.run_seconds);
            errors.push(err("run_seconds", reason));
        } else if let Some(n) = job.exits.iter().position(|c| *c == 0) {
            let reason = "list only failing attempts; the attempt after them exits 0";
            errors.push(err(&format!("exits[{n}]"), reason.to_owned()));
        } else {
            jobs.push(job);
        }
    }
    if errors.is_empty() {
        jobs.sort_by(|a, b| a.at.total_cmp(&b.at));
        Ok(jobs)
    } else {
        Err(errors)
    }
}

/// Renders a trace as JSON lines, one arrival per line.
pub fn to_jsonl(jobs: &[TraceJob]) -> String {
    let mut out = String::with_capacity(jobs.len() * 240);
    for j in jobs {
        let line = serde_json::to_string(j).expect("a trace job always serializes");
        let _ = writeln!(out, "{line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_round_trips_and_is_sorted_by_arrival() {
        let text = concat!(
            "# two arrivals, out of order\n",
            r#"{"at":90,"job_id":"b","payer_id":"p","kind":"k","batch":"1","run_seconds":30}"#,
            "\n\n",
            r#"{"at":5.5,"job_id":"a","payer_id":"p","kind":"k","batch":"1","input":{"uri":"s3://x/y","bytes":10},"run_seconds":600,"exits":[75]}"#,
            "\n",
        );
        let jobs = parse_trace("t.jsonl", text).unwrap();
        assert_eq!(jobs[0].job_id, "a");
        assert_eq!(jobs[0].input_bytes(), Some(10));
        assert_eq!(jobs[0].exits, [75]);
        assert_eq!(parse_trace("again", &to_jsonl(&jobs)).unwrap(), jobs);
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let text = concat!(
            r#"{"at":-1,"job_id":"a","payer_id":"p","kind":"k","batch":"1","run_seconds":30}"#,
            "\n",
            r#"{"at":1,"job_id":"b c","payer_id":"p","kind":"k","batch":"1","run_seconds":30}"#,
            "\n",
            r#"{"at":1,"job_id":"d","payer_id":"p","kind":"k","batch":"1","run_seconds":0}"#,
            "\n",
            r#"{"at":1,"job_id":"e","payer_id":"p","kind":"k","batch":"1"}"#,
            "\n",
            r#"{"at":1,"job_id":"f","payer_id":"p","kind":"k","batch":"1","run_seconds":3,"exit":1}"#,
            "\n",
            r#"{"at":1,"job_id":"g","payer_id":"p","kind":"k","batch":"1","run_seconds":3,"exits":[75,0]}"#,
        );
        let errors = parse_trace("t.jsonl", text).unwrap_err();
        let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, &*e.field)).collect();
        assert_eq!(
            got,
            [
                (1, "at"),
                (2, "job_id"),
                (3, "run_seconds"),
                (4, "run_seconds"),
                (5, "exit"),
                (6, "exits[1]")
            ]
        );
        assert!(errors[0].to_string().starts_with("t.jsonl:1: at: "));
    }
}
