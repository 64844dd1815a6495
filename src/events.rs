//! Instance events: the versioned JSON messages a job instance sends to the events queue
//! (`started`, `heartbeat`, `finished`, `interrupted`) and their strict parsing. The user-data
//! script writes these bodies; the scheduler applies them to the ledger. `docs/events.md` is
//! the reference for producers.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::job::{is_job_id, JOB_ID_FORM};

/// The schema version this build writes and reads.
pub const VERSION: u32 = 1;
/// Most bytes (UTF-8) of job output a `finished` event carries.
pub const MAX_OUTPUT_TAIL_BYTES: usize = 4096;
/// Most bytes of an interruption notice (the spot instance-action document is ~60 bytes).
pub const MAX_NOTICE_BYTES: usize = 1024;

/// What happened on the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The instance booted, knows its identity and is about to run the job.
    Started,
    /// The job is still running.
    Heartbeat,
    /// The job's command ended (with any exit code, including a timeout).
    Finished,
    /// The instance received a spot interruption notice.
    Interrupted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Heartbeat => "heartbeat",
            EventKind::Finished => "finished",
            EventKind::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message from an instance to the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceEvent {
    /// Schema version; always [`VERSION`].
    pub v: u32,
    #[serde(rename = "type")]
    pub event: EventKind,
    pub job_id: String,
    /// The attempt the instance was launched for (1 for the first).
    pub attempt: u32,
    pub instance_id: String,
    /// When the instance observed the event (RFC 3339, UTC).
    pub at: DateTime<Utc>,
    /// `finished` only: the command's exit status (124 when it hit its max runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// `finished` only: whole seconds the command ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    /// `finished` only: the last bytes of the command's output, at most 4 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tail: Option<String>,
    /// `interrupted` only: the notice as received (the spot instance-action document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

/// An event field that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct EventError {
    /// The offending field, or `(body)` when the message is not a JSON object.
    pub field: String,
    pub reason: String,
}

impl EventError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Every field of the schema; anything else in a body is refused by name.
const FIELDS: &[&str] = &[
    "v",
    "type",
    "job_id",
    "attempt",
    "instance_id",
    "at",
    "exit_code",
    "duration_secs",
    "output_tail",
    "notice",
];

impl InstanceEvent {
    fn new(
        event: EventKind,
        job_id: &str,
        attempt: u32,
        instance_id: &str,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            v: VERSION,
            event,
            job_id: job_id.to_owned(),
            attempt,
            instance_id: instance_id.to_owned(),
            at,
            exit_code: None,
            duration_secs: None,
            output_tail: None,
            notice: None,
        }
    }

    pub fn started(job_id: &str, attempt: u32, instance_id: &str, at: DateTime<Utc>) -> Self {
        Self::new(EventKind::Started, job_id, attempt, instance_id, at)
    }

    pub fn heartbeat(job_id: &str, attempt: u32, instance_id: &str, at: DateTime<Utc>) -> Self {
        Self::new(EventKind::Heartbeat, job_id, attempt, instance_id, at)
    }

    /// A `finished` event; `output_tail` is cut to its last 4 KiB on a character boundary.
    pub fn finished(
        job_id: &str,
        attempt: u32,
        instance_id: &str,
        at: DateTime<Utc>,
        exit_code: i32,
        duration_secs: u64,
        output_tail: &str,
    ) -> Self {
        Self {
            exit_code: Some(exit_code),
            duration_secs: Some(duration_secs),
            output_tail: Some(tail(output_tail, MAX_OUTPUT_TAIL_BYTES).to_owned()),
            ..Self::new(EventKind::Finished, job_id, attempt, instance_id, at)
        }
    }

    pub fn interrupted(
        job_id: &str,
        attempt: u32,
        instance_id: &str,
        at: DateTime<Utc>,
        notice: &str,
    ) -> Self {
        Self {
            notice: Some(tail(notice, MAX_NOTICE_BYTES).to_owned()),
            ..Self::new(EventKind::Interrupted, job_id, attempt, instance_id, at)
        }
    }

    /// Parses and checks a message body. Errors name the field; unknown fields, other
    /// versions and fields that do not belong to the event's type are refused.
    pub fn parse(body: &str) -> Result<Self, EventError> {
        let value: Value = serde_json::from_str(body)
            .map_err(|e| EventError::new("(body)", format!("not JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(EventError::new("(body)", "must be a JSON object"));
        };
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(EventError::new(unknown.as_str(), "unknown field"));
        }
        // The version decides how the rest is read, so it is checked before anything else.
        let v: u32 = required(&obj, "v")?;
        if v != VERSION {
            return Err(EventError::new(
                "v",
                format!("unsupported version {v} (this scheduler reads version {VERSION})"),
            ));
        }
        let event = Self {
            v,
            event: required(&obj, "type")?,
            job_id: required(&obj, "job_id")?,
            attempt: required(&obj, "attempt")?,
            instance_id: required(&obj, "instance_id")?,
            at: required(&obj, "at")?,
            exit_code: optional(&obj, "exit_code")?,
            duration_secs: optional(&obj, "duration_secs")?,
            output_tail: optional(&obj, "output_tail")?,
            notice: optional(&obj, "notice")?,
        };
        event.validate()?;
        Ok(event)
    }

    /// The checks beyond types: identifiers, bounds, and which fields each type carries.
    pub fn validate(&self) -> Result<(), EventError> {
        if self.v != VERSION {
            return Err(EventError::new(
                "v",
                format!("unsupported version {}", self.v),
            ));
        }
        if !is_job_id(&self.job_id) {
            return Err(EventError::new("job_id", JOB_ID_FORM));
        }
        if self.attempt == 0 {
            return Err(EventError::new("attempt", "must be at least 1"));
        }
        if !is_instance_id(&self.instance_id) {
            return Err(EventError::new(
                "instance_id",
                format!(
                    "`{}` is not `i-` followed by 8–17 lowercase hex digits",
                    self.instance_id.escape_debug()
                ),
            ));
        }
        let finished = self.event == EventKind::Finished;
        let only_on = |field: &str, present: bool, allowed: bool, kind: &str| {
            if present && !allowed {
                Err(EventError::new(
                    field,
                    format!("only `{kind}` events carry it, not `{}`", self.event),
                ))
            } else {
                Ok(())
            }
        };
        only_on("exit_code", self.exit_code.is_some(), finished, "finished")?;
        only_on(
            "duration_secs",
            self.duration_secs.is_some(),
            finished,
            "finished",
        )?;
        only_on(
            "output_tail",
            self.output_tail.is_some(),
            finished,
            "finished",
        )?;
        only_on(
            "notice",
            self.notice.is_some(),
            self.event == EventKind::Interrupted,
            "interrupted",
        )?;
        if finished {
            if self.exit_code.is_none() {
                return Err(EventError::new(
                    "exit_code",
                    "required on `finished` events",
                ));
            }
            if self.duration_secs.is_none() {
                return Err(EventError::new(
                    "duration_secs",
                    "required on `finished` events",
                ));
            }
        }
        if let Some(t) = &self.output_tail {
            if t.len() > MAX_OUTPUT_TAIL_BYTES {
                return Err(EventError::new(
                    "output_tail",
                    format!("{} bytes, at most {MAX_OUTPUT_TAIL_BYTES}", t.len()),
                ));
            }
        }
        if let Some(n) = &self.notice {
            if n.len() > MAX_NOTICE_BYTES {
                return Err(EventError::new(
                    "notice",
                    format!("{} bytes, at most {MAX_NOTICE_BYTES}", n.len()),
                ));
            }
        }
        Ok(())
    }

    /// The message body, as the instance sends it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an event is plain data and always serializes")
    }
}

/// An EC2 instance id: `i-` and 8 (old style) to 17 lowercase hex digits.
pub fn is_instance_id(s: &str) -> bool {
    s.strip_prefix("i-").is_some_and(|hex| {
        (8..=17).contains(&hex.len())
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn required<T: DeserializeOwned>(obj: &Map<String, Value>, field: &str) -> Result<T, EventError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(EventError::new(field, "missing")),
        Some(v) => typed(field, v),
    }
}

fn optional<T: DeserializeOwned>(
    obj: &Map<String, Value>,
    field: &str,
) -> Result<Option<T>, EventError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => typed(field, v).map(Some),
    }
}

fn typed<T: DeserializeOwned>(field: &str, v: &Value) -> Result<T, EventError> {
    T::deserialize(v).map_err(|e| EventError::new(field, e.to_string()))
}

/// The longest suffix of `s` of at most `max` bytes that starts on a character boundary.
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        "2026-11-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn constructors_round_trip_through_parse() {
        let events = [
            InstanceEvent::started("j1", 1, "i-0123456789abcdef0", at()),
            InstanceEvent::heartbeat("j1", 1, "i-0123456789abcdef0", at()),
            InstanceEvent::finished("j1", 2, "i-0123456789abcdef0", at(), 3, 61, "done\n"),
            InstanceEvent::interrupted("j1", 1, "i-0123abcd", at(), r#"{"action":"terminate"}"#),
        ];
        for e in events {
            assert_eq!(InstanceEvent::parse(&e.to_json()).unwrap(), e);
        }
    }

    #[test]
    fn finished_cuts_the_tail_on_a_character_boundary() {
        let long = format!("x{}", "é".repeat(3000));
        let e = InstanceEvent::finished("j", 1, "i-0123abcd", at(), 0, 1, &long);
        let t = e.output_tail.unwrap();
        assert!(t.len() <= MAX_OUTPUT_TAIL_BYTES && t.len() >= MAX_OUTPUT_TAIL_BYTES - 1);
        assert!(long.ends_with(&t));
    }

    #[test]
    fn instance_ids() {
        assert!(is_instance_id("i-0123456789abcdef0"));
        assert!(is_instance_id("i-0123abcd"));
        for bad in [
            "",
            "i-",
            "i-0123abc",
            "i-0123456789ABCDEF0",
            "x-0123abcd",
            "i-0123456789abcdef01",
        ] {
            assert!(!is_instance_id(bad), "{bad}");
        }
    }
}
