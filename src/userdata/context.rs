//! What a template may see: the context of one job attempt, built from the payer, the job
//! and the deployment's [`InstanceEnv`], and checked so that rendering cannot produce an
//! unsafe or broken script. Secrets appear only as references.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{context_error, RenderError};
use crate::events::MAX_OUTPUT_TAIL_BYTES;
use crate::job::{is_job_id, Job, JOB_ID_FORM};
use crate::profile::Payer;
use crate::secrets;

/// How often the script polls for a spot interruption notice (AWS suggests every 5 s).
const SPOT_POLL_SECS: u64 = 5;
/// How long an instance tries to send `started`: a minute, then it gives up and ends.
const STARTED_SEND_SECS: u64 = 60;

/// The deployment-wide settings every instance script needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceEnv {
    pub events_queue_url: String,
    pub region: String,
    /// An endpoint override for the instance's AWS CLI (the emulator); `None` on AWS.
    pub endpoint_url: Option<String>,
    /// Seconds between heartbeats; capped at a third of the payer's heartbeat timeout.
    pub heartbeat_secs: u64,
    /// Seconds past the max runtime before the instance's own deadline shuts it down.
    pub deadline_grace_secs: u64,
}

impl Default for InstanceEnv {
    fn default() -> Self {
        Self {
            events_queue_url: String::new(),
            region: String::new(),
            endpoint_url: None,
            heartbeat_secs: 60,
            deadline_grace_secs: 300,
        }
    }
}

/// Everything a template may see. Secrets appear only as references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserDataContext {
    /// The template to render (the payer's `launch.template`).
    pub template: String,
    pub job: JobContext,
    pub events: EventsContext,
    pub limits: Limits,
    /// The kind's command, one element per argument.
    pub command: Vec<String>,
    /// The command's environment, in order: `MAYFLY_*`, the kind's `env`, the job's params.
    pub env: Vec<EnvVar>,
    pub secrets: Vec<SecretRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobContext {
    pub id: String,
    pub attempt: u32,
    pub payer: String,
    pub kind: String,
    pub batch: String,
    pub input_uri: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventsContext {
    pub queue_url: String,
    pub region: String,
    pub endpoint_url: Option<String>,
}

/// The numbers a template writes bare (see [`super::Renderer::lint_template`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub heartbeat_secs: u64,
    pub spot_poll_secs: u64,
    pub max_runtime_secs: u64,
    /// Max runtime plus grace: when the instance shuts itself down regardless.
    pub deadline_secs: u64,
    pub output_tail_bytes: usize,
    /// How long the instance keeps trying to send `started` before it gives up (and ends).
    pub started_send_secs: u64,
    /// How long it keeps trying to send `finished`: most of the deadline's grace, which is
    /// what is left after a job that used its whole runtime.
    pub finished_send_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// A secret the instance fetches at boot into the variable `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretRef {
    pub name: String,
    /// As written in the profile (`ssm:/…` or an ARN).
    pub reference: String,
    /// `ssm` or `secretsmanager`.
    pub service: &'static str,
    /// The parameter name or ARN, or the secret ARN, as the AWS CLI takes it.
    pub id: String,
    pub region: String,
}

impl UserDataContext {
    /// The context of one attempt of `job`, checked so that rendering cannot produce an
    /// unsafe or broken script.
    pub fn for_job(
        payer: &Payer,
        job: &Job,
        attempt: u32,
        env: &InstanceEnv,
    ) -> Result<Self, RenderError> {
        if job.payer_id != payer.id() {
            return Err(context_error(
                "payer_id",
                format!("job is for `{}`, not `{}`", job.payer_id, payer.id()),
            ));
        }
        let kind = payer.kind(&job.kind).ok_or_else(|| {
            context_error(
                "kind",
                format!("payer `{}` has no kind `{}`", payer.id(), job.kind),
            )
        })?;
        // The job id is written unescaped into JSON event bodies, so its charset matters.
        if !is_job_id(&job.job_id) {
            return Err(context_error("job_id", JOB_ID_FORM));
        }
        if attempt == 0 {
            return Err(context_error("attempt", "must be at least 1"));
        }
        let events = events_context(env)?;
        let limits = limits(payer, payer.max_runtime(kind), env)?;
        if kind.command.is_empty() {
            return Err(context_error(
                format!("kinds.{}.command", job.kind),
                "is empty",
            ));
        }
        for (i, arg) in kind.command.iter().enumerate() {
            no_nul(&format!("kinds.{}.command[{i}]", job.kind), arg)?;
        }
        let input_uri = job.input.as_ref().map(|i| i.uri.clone());
        let mut vars = EnvBuilder::default();
        vars.push_reserved("MAYFLY_JOB_ID", &job.job_id)?;
        vars.push_reserved("MAYFLY_ATTEMPT", &attempt.to_string())?;
        vars.push_reserved("MAYFLY_PAYER", payer.id())?;
        vars.push_reserved("MAYFLY_KIND", &job.kind)?;
        vars.push_reserved("MAYFLY_BATCH", &job.batch)?;
        if let Some(uri) = &input_uri {
            vars.push_reserved("MAYFLY_INPUT_URI", uri)?;
        }
        for (name, value) in &kind.env {
            vars.push(&format!("kinds.{}.env.{name}", job.kind), name, value)?;
        }
        let mut secrets = Vec::new();
        for (name, reference) in &kind.secrets {
            let field = format!("kinds.{}.secrets.{name}", job.kind);
            vars.claim(&field, name)?;
            secrets.push(secret_ref(&field, name, reference, &events.region)?);
        }
        // Last, so that a param clashing with the profile is the one named.
        for (name, value) in &job.params {
            vars.push(&format!("params.{name}"), name, value)?;
        }
        Ok(Self {
            template: payer.profile.launch.template.clone(),
            job: JobContext {
                id: job.job_id.clone(),
                attempt,
                payer: payer.id().to_owned(),
                kind: job.kind.clone(),
                batch: job.batch.clone(),
                input_uri,
            },
            events,
            limits,
            command: kind.command.clone(),
            env: vars.vars,
            secrets,
        })
    }
}

fn events_context(env: &InstanceEnv) -> Result<EventsContext, RenderError> {
    let queue_url = env.events_queue_url.trim();
    if queue_url.is_empty() || queue_url.chars().any(char::is_control) {
        return Err(context_error("events_queue_url", "must be a queue URL"));
    }
    let region = env.region.as_str();
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(context_error(
            "region",
            format!("`{region}` is not an AWS region name"),
        ));
    }
    let endpoint_url = env
        .endpoint_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty());
    if endpoint_url.is_some_and(|u| u.chars().any(char::is_control)) {
        return Err(context_error("endpoint_url", "contains control characters"));
    }
    Ok(EventsContext {
        queue_url: queue_url.to_owned(),
        region: region.to_owned(),
        endpoint_url: endpoint_url.map(str::to_owned),
    })
}

fn limits(
    payer: &Payer,
    max_runtime: crate::duration::Duration,
    env: &InstanceEnv,
) -> Result<Limits, RenderError> {
    if env.heartbeat_secs == 0 {
        return Err(context_error("heartbeat_secs", "must be at least 1"));
    }
    // Two lost heartbeats in a row must not look like a dead instance.
    let ceiling = (payer.profile.timeouts.heartbeat.as_secs() / 3).max(1);
    let max_runtime_secs = max_runtime.as_secs().max(1);
    Ok(Limits {
        heartbeat_secs: env.heartbeat_secs.min(ceiling),
        spot_poll_secs: SPOT_POLL_SECS,
        max_runtime_secs,
        deadline_secs: max_runtime_secs.saturating_add(env.deadline_grace_secs),
        output_tail_bytes: MAX_OUTPUT_TAIL_BYTES,
        started_send_secs: STARTED_SEND_SECS,
        // The job is stopped at max runtime, and killed 30 s later if it ignores that.
        finished_send_secs: env.deadline_grace_secs.saturating_sub(60).max(30),
    })
}

/// The command's environment, refusing names that are not shell identifiers, reserved or
/// defined twice (a param never silently overrides the payer's env or secrets).
#[derive(Default)]
struct EnvBuilder {
    vars: Vec<EnvVar>,
    names: BTreeSet<String>,
}

impl EnvBuilder {
    fn push_reserved(&mut self, name: &str, value: &str) -> Result<(), RenderError> {
        no_nul(name, value)?;
        self.names.insert(name.to_owned());
        self.vars.push(EnvVar {
            name: name.to_owned(),
            value: value.to_owned(),
        });
        Ok(())
    }

    fn claim(&mut self, field: &str, name: &str) -> Result<(), RenderError> {
        if !is_identifier(name) {
            return Err(context_error(field, "is not a shell variable name"));
        }
        if name.to_ascii_uppercase().starts_with("MAYFLY_") {
            return Err(context_error(field, "the MAYFLY_ prefix is reserved"));
        }
        if !self.names.insert(name.to_owned()) {
            return Err(context_error(
                field,
                format!("`{name}` is already set by the payer's profile"),
            ));
        }
        Ok(())
    }

    fn push(&mut self, field: &str, name: &str, value: &str) -> Result<(), RenderError> {
        self.claim(field, name)?;
        no_nul(field, value)?;
        if let Some(what) = secrets::looks_like_secret(value) {
            return Err(context_error(
                field,
                format!("looks like {what}; secrets are fetched by reference, never rendered"),
            ));
        }
        self.vars.push(EnvVar {
            name: name.to_owned(),
            value: value.to_owned(),
        });
        Ok(())
    }
}

fn secret_ref(
    field: &str,
    name: &str,
    reference: &str,
    default_region: &str,
) -> Result<SecretRef, RenderError> {
    no_nul(field, reference)?;
    let bad = || {
        context_error(
            field,
            format!("`{reference}` is not a reference (`ssm:/name`, an SSM parameter ARN or a Secrets Manager ARN)"),
        )
    };
    let (service, id, region) = if let Some(path) = reference.strip_prefix("ssm:") {
        if !path.starts_with('/') || path.len() < 2 {
            return Err(bad());
        }
        ("ssm", path.to_owned(), default_region.to_owned())
    } else {
        // arn:aws:SERVICE:REGION:ACCOUNT:RESOURCE
        let parts: Vec<&str> = reference.splitn(6, ':').collect();
        let service = match parts.as_slice() {
            ["arn", "aws", "ssm", _, _, res] if res.starts_with("parameter/") => "ssm",
            ["arn", "aws", "secretsmanager", _, _, res] if res.starts_with("secret:") => {
                "secretsmanager"
            }
            _ => return Err(bad()),
        };
        let region = if parts[3].is_empty() {
            default_region
        } else {
            parts[3]
        };
        (service, reference.to_owned(), region.to_owned())
    };
    Ok(SecretRef {
        name: name.to_owned(),
        reference: reference.to_owned(),
        service,
        id,
        region,
    })
}

fn no_nul(field: &str, value: &str) -> Result<(), RenderError> {
    if value.contains('\0') {
        return Err(context_error(field, "contains a NUL byte"));
    }
    Ok(())
}

pub(super) fn is_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_references_resolve_to_a_service_and_region() {
        let r = secret_ref("f", "A", "ssm:/p/q", "us-east-1").unwrap();
        assert_eq!(
            (r.service, r.id.as_str(), r.region.as_str()),
            ("ssm", "/p/q", "us-east-1")
        );
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf";
        let r = secret_ref("f", "A", arn, "us-east-1").unwrap();
        assert_eq!(
            (r.service, r.id.as_str(), r.region.as_str()),
            ("secretsmanager", arn, "eu-west-1")
        );
        let arn = "arn:aws:ssm:us-west-2:123456789012:parameter/p/q";
        let r = secret_ref("f", "A", arn, "us-east-1").unwrap();
        assert_eq!((r.service, r.region.as_str()), ("ssm", "us-west-2"));
        for bad in [
            "ssm:",
            "ssm:p",
            "plain-value",
            "arn:aws:s3:::bucket",
            "arn:aws:ssm:us-east-1:1:document/x",
        ] {
            let err = secret_ref("kinds.k.secrets.A", "A", bad, "us-east-1").unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("user-data context: kinds.k.secrets.A:"),
                "{err}"
            );
        }
    }
}
