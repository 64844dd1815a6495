//! User-data: the bash script each job instance runs at boot, rendered from handlebars
//! templates (`userdata-templates/`, also built into the binary) in strict mode, with every
//! value shell-quoted and the result bounded to EC2's 16 KB. The script's contract is
//! DESIGN.md §4; the events it sends are [`crate::events`].
//!
//! Three layers: [`UserDataContext`] (what a template may see, built and checked from a
//! payer, a job and the deployment's [`InstanceEnv`]), [`Renderer`] (templates, helpers and
//! the lint that refuses unquoted interpolations), and [`TemplateUserData`] (the scheduler's
//! [`UserDataSource`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use handlebars::{
    no_escape, Context, Handlebars, Helper, HelperResult, JsonValue, Output, RenderContext,
    RenderErrorReason,
};
use serde::Serialize;

use crate::events::MAX_OUTPUT_TAIL_BYTES;
use crate::job::{is_token, Job};
use crate::profile::Payer;
use crate::scheduler::UserDataSource;
use crate::secrets;


/// EC2's limit on user-data, before base64 encoding.
pub const MAX_USER_DATA_BYTES: usize = 16 * 1024;
/// Where [`Renderer::load`] looks for templates when no directory is named.
pub const DEFAULT_TEMPLATE_DIR: &str = "userdata-templates";
/// How often the script polls for a spot interruption notice (AWS suggests every 5 s).
const SPOT_POLL_SECS: u64 = 5;

/// The built-in templates, embedded so the binary renders from any working directory.
const BUILTIN: &[(&str, &str)] = &[
    (
        "default.sh.hbs",
        include_str!("../userdata-templates/default.sh.hbs"),
    ),
    (
        "_deadline.sh.hbs",
        include_str!("../userdata-templates/_deadline.sh.hbs"),
    ),
    (
        "_events.sh.hbs",
        include_str!("../userdata-templates/_events.sh.hbs"),
    ),
    (
        "_imds.sh.hbs",
        include_str!("../userdata-templates/_imds.sh.hbs"),
    ),
    (
        "_watchers.sh.hbs",
        include_str!("../userdata-templates/_watchers.sh.hbs"),
    ),
    ("_run.sh.hbs", include_str!("../userdata-templates/_run.sh.hbs")),
];

/// Why user-data could not be rendered. Every variant names the template or the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The job, payer or environment cannot be expressed safely in user-data.
    #[error("user-data context: {field}: {reason}")]
    Context { field: String, reason: String },
    #[error("template `{template}` not found (available: {available})")]
    UnknownTemplate { template: String, available: String },
    /// A template that does not parse, or a file that cannot be read.
    #[error("template `{template}`: {reason}")]
    Template { template: String, reason: String },
    #[error("template `{template}` line {line}: unquoted interpolation `{expr}`: {reason}")]
    Unquoted {
        template: String,
        line: usize,
        expr: String,
        reason: String,
    },
    #[error("template `{template}`{at}: missing variable `{variable}`")]
    MissingVariable {
        template: String,
        /// Where in the template (partial and line), when known.
        at: String,
        variable: String,
    },
    #[error("template `{template}`{at}: {reason}")]
    Render {
        template: String,
        at: String,
        reason: String,
    },
    #[error("template `{template}`: rendered user-data is {bytes} bytes; EC2 allows at most {limit} bytes")]
    TooLarge {
        template: String,
        bytes: usize,
        limit: usize,
    },
}

fn context_error(field: impl Into<String>, reason: impl Into<String>) -> RenderError {
    RenderError::Context {
        field: field.into(),
        reason: reason.into(),
    }
}

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

/// The numbers a template writes bare (see [`lint_template`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub heartbeat_secs: u64,
    pub spot_poll_secs: u64,
    pub max_runtime_secs: u64,
    /// Max runtime plus grace: when the instance shuts itself down regardless.
    pub deadline_secs: u64,
    pub output_tail_bytes: usize,
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
            context_error("kind", format!("payer `{}` has no kind `{}`", payer.id(), job.kind))
        })?;
        // The job id is written unescaped into JSON event bodies, so its charset matters.
        if !is_token(&job.job_id, 128) {
            return Err(context_error("job_id", "must be 1–128 characters of A-Z a-z 0-9 . _ : -"));
        }
        if attempt == 0 {
            return Err(context_error("attempt", "must be at least 1"));
        }
        let events = events_context(env)?;
        let limits = limits(payer, kind.max_runtime, env)?;
        if kind.command.is_empty() {
            return Err(context_error(format!("kinds.{}.command", job.kind), "is empty"));
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
        for (name, value) in &job.params {
            vars.push(&format!("params.{name}"), name, value)?;
        }
        let mut secrets = Vec::new();
        for (name, reference) in &kind.secrets {
            let field = format!("kinds.{}.secrets.{name}", job.kind);
            vars.claim(&field, name)?;
            secrets.push(secret_ref(&field, name, reference, &events.region)?);
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
        return Err(context_error("region", format!("`{region}` is not an AWS region name")));
    }
    let endpoint_url = env.endpoint_url.as_deref().map(str::trim).filter(|u| !u.is_empty());
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
    kind_max_runtime: Option<crate::duration::Duration>,
    env: &InstanceEnv,
) -> Result<Limits, RenderError> {
    if env.heartbeat_secs == 0 {
        return Err(context_error("heartbeat_secs", "must be at least 1"));
    }
    // Two lost heartbeats in a row must not look like a dead instance.
    let ceiling = (payer.profile.timeouts.heartbeat.as_secs() / 3).max(1);
    let max_runtime_secs = kind_max_runtime
        .unwrap_or(payer.profile.timeouts.max_runtime)
        .as_secs()
        .max(1);
    Ok(Limits {
        heartbeat_secs: env.heartbeat_secs.min(ceiling),
        spot_poll_secs: SPOT_POLL_SECS,
        max_runtime_secs,
        deadline_secs: max_runtime_secs.saturating_add(env.deadline_grace_secs),
        output_tail_bytes: MAX_OUTPUT_TAIL_BYTES,
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
            return Err(context_error(field, format!("`{name}` is already set by the payer's profile")));
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
        let region = if parts[3].is_empty() { default_region } else { parts[3] };
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

fn is_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// POSIX single-quoting: the result is one shell word whose value is exactly `s`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Loaded templates and the helpers they may use.
#[derive(Debug)]
pub struct Renderer {
    registry: Handlebars<'static>,
}

impl Renderer {
    /// The templates built into the binary.
    pub fn builtin() -> Self {
        let mut r = Self::empty();
        for (file, text) in BUILTIN {
            r.add(file, text)
                .expect("built-in templates parse and pass the lint (tested)");
        }
        r
    }

    /// The built-in templates overlaid with every `*.hbs` file in `dir` (same name wins).
    /// `NAME.sh.hbs` is template `NAME`; `_NAME.sh.hbs` is partial `NAME`.
    pub fn from_dir(dir: &Path) -> Result<Self, RenderError> {
        let read_err = |path: &Path, e: std::io::Error| RenderError::Template {
            template: path.display().to_string(),
            reason: format!("cannot read: {e}"),
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| read_err(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "hbs"))
            .collect();
        files.sort();
        let mut r = Self::builtin();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
            let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
            r.add(file, &text)?;
        }
        Ok(r)
    }

    /// Templates from `dir` if given; else from [`DEFAULT_TEMPLATE_DIR`] in the working
    /// directory if it exists; else the built-in ones.
    pub fn load(dir: Option<&Path>) -> Result<Self, RenderError> {
        match dir {
            Some(d) => Self::from_dir(d),
            None if Path::new(DEFAULT_TEMPLATE_DIR).is_dir() => {
                Self::from_dir(Path::new(DEFAULT_TEMPLATE_DIR))
            }
            None => Ok(Self::builtin()),
        }
    }

    fn empty() -> Self {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(no_escape);
        registry.register_helper("shell_quote", Box::new(shell_quote_helper));
        registry.register_helper("env_name", Box::new(env_name_helper));
        Self { registry }
    }

    fn add(&mut self, file: &str, text: &str) -> Result<(), RenderError> {
        let stem = file
            .strip_suffix(".sh.hbs")
            .or_else(|| file.strip_suffix(".hbs"))
            .unwrap_or(file);
        lint_template(file, text)?;
        let parse_err = |e: handlebars::TemplateError| RenderError::Template {
            template: file.to_owned(),
            reason: e.to_string(),
        };
        match stem.strip_prefix('_') {
            Some(partial) => self.registry.register_partial(partial, text).map_err(parse_err),
            None => self
                .registry
                .register_template_string(stem, text)
                .map_err(parse_err),
        }
    }

    /// The names of the templates (not partials) available.
    pub fn templates(&self) -> Vec<String> {
        let mut names: Vec<String> = self.registry.get_templates().keys().cloned().collect();
        names.sort();
        names
    }

    /// Renders `template` with any serializable context, bounded to [`MAX_USER_DATA_BYTES`].
    pub fn render<T: Serialize>(&self, template: &str, ctx: &T) -> Result<String, RenderError> {
        if !self.registry.has_template(template) {
            return Err(RenderError::UnknownTemplate {
                template: template.to_owned(),
                available: self.templates().join(", "),
            });
        }
        let data = serde_json::to_value(ctx).map_err(|e| context_error("(context)", e.to_string()))?;
        check_bare_numbers(&data)?;
        let text = self
            .registry
            .render(template, &data)
            .map_err(|e| from_handlebars(template, &e))?;
        if text.len() > MAX_USER_DATA_BYTES {
            return Err(RenderError::TooLarge {
                template: template.to_owned(),
                bytes: text.len(),
                limit: MAX_USER_DATA_BYTES,
            });
        }
        Ok(text)
    }

    /// Renders a job's context with the template it names.
    pub fn render_context(&self, ctx: &UserDataContext) -> Result<String, RenderError> {
        self.render(&ctx.template, ctx)
    }
}

/// The user-data script of one attempt of `job`: the scheduler's one call.
pub fn render_for_job(
    renderer: &Renderer,
    payer: &Payer,
    job: &Job,
    attempt: u32,
    env: &InstanceEnv,
) -> Result<String, RenderError> {
    renderer.render_context(&UserDataContext::for_job(payer, job, attempt, env)?)
}

/// The scheduler's [`UserDataSource`]: a renderer bound to a deployment's [`InstanceEnv`].
#[derive(Debug)]
pub struct TemplateUserData {
    renderer: Renderer,
    env: InstanceEnv,
}

impl TemplateUserData {
    pub fn new(renderer: Renderer, env: InstanceEnv) -> Self {
        Self { renderer, env }
    }

    pub fn builtin(env: InstanceEnv) -> Self {
        Self::new(Renderer::builtin(), env)
    }
}

impl UserDataSource for TemplateUserData {
    fn render(&self, payer: &Payer, job: &Job, attempt: u32) -> Result<String, String> {
        render_for_job(&self.renderer, payer, job, attempt, &self.env).map_err(|e| e.to_string())
    }
}

fn from_handlebars(template: &str, e: &handlebars::RenderError) -> RenderError {
    let mut at = String::new();
    if let Some(name) = e.template_name.as_deref().filter(|n| *n != template) {
        at.push_str(&format!(" (partial `{name}`)"));
    }
    if let Some(line) = e.line_no {
        at.push_str(&format!(" line {line}"));
    }
    match e.reason() {
        RenderErrorReason::MissingVariable(path) => RenderError::MissingVariable {
            template: template.to_owned(),
            at,
            variable: path.clone().unwrap_or_else(|| "(unknown)".to_owned()),
        },
        reason => RenderError::Render {
            template: template.to_owned(),
            at,
            reason: reason.to_string(),
        },
    }
}

/// The one parameter of a helper, refusing it when missing or null (strict mode does not
/// check helper parameters itself).
fn single_param<'a>(h: &'a Helper<'_>) -> Result<(&'a JsonValue, String), RenderErrorReason> {
    let name = h.name().to_owned();
    let param = match h.params().as_slice() {
        [p] => p,
        _ => return Err(RenderErrorReason::Other(format!("`{name}` takes exactly one value"))),
    };
    let path = param.relative_path().cloned();
    if param.is_value_missing() || param.value().is_null() {
        return Err(RenderErrorReason::MissingVariable(path));
    }
    Ok((param.value(), path.unwrap_or_else(|| "(literal)".to_owned())))
}

fn shell_quote_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let (value, path) = single_param(h)?;
    let text = match value {
        JsonValue::String(s) => s.clone(),
        JsonValue::Number(n) => n.to_string(),
        other => {
            return Err(RenderErrorReason::Other(format!(
                "shell_quote: `{path}` is {}, not a string or number",
                json_type(other)
            ))
            .into())
        }
    };
    if text.contains('\0') {
        return Err(RenderErrorReason::Other(format!("shell_quote: `{path}` contains a NUL byte")).into());
    }
    out.write(&shell_quote(&text))?;
    Ok(())
}

/// Writes a shell variable name bare, refusing anything that is not one.
fn env_name_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let (value, path) = single_param(h)?;
    match value.as_str() {
        Some(name) if is_identifier(name) => {
            out.write(name)?;
            Ok(())
        }
        _ => Err(RenderErrorReason::Other(format!(
            "env_name: `{path}` is not a shell variable name: {value}"
        ))
        .into()),
    }
}

fn json_type(v: &JsonValue) -> &'static str {
    match v {
        JsonValue::Null => "null",
        JsonValue::Bool(_) => "a boolean",
        JsonValue::Number(_) => "a number",
        JsonValue::String(_) => "a string",
        JsonValue::Array(_) => "a list",
        JsonValue::Object(_) => "an object",
    }
}

/// Helpers whose output is safe in a shell word.
const QUOTING_HELPERS: &[&str] = &["shell_quote", "env_name"];
/// Context fields written bare: integers by type, and checked again at render time.
const BARE_NUMBERS: &[&str] = &[
    "job.attempt",
    "limits.heartbeat_secs",
    "limits.spot_poll_secs",
    "limits.max_runtime_secs",
    "limits.deadline_secs",
    "limits.output_tail_bytes",
];

/// Refuses a template that interpolates a value without a quoting helper (other than the
/// whitelisted numbers), or quotes one where single quotes do not protect it: inside double
/// quotes, inside single quotes, or in a comment on the same line. The check is textual and
/// line-based; it catches the mistakes that are detectable without a shell parser.
pub fn lint_template(name: &str, text: &str) -> Result<(), RenderError> {
    let fail = |start: usize, expr: &str, reason: &str| RenderError::Unquoted {
        template: name.to_owned(),
        line: text[..start].matches('\n').count() + 1,
        expr: expr.to_owned(),
        reason: reason.to_owned(),
    };
    let mut pos = 0;
    while let Some(found) = text[pos..].find("{{") {
        let start = pos + found;
        let rest = &text[start..];
        let close = if rest.starts_with("{{!--") { "--}}" } else { "}}" };
        let Some(len) = rest.find(close) else {
            // Unclosed: the handlebars parser reports it with its position.
            return Ok(());
        };
        pos = start + len + close.len();
        if text[pos..].starts_with('}') {
            pos += 1; // the third brace of `{{{raw}}}`
        }
        let expr = rest[2..len]
            .trim_start_matches('{')
            .trim_matches('~')
            .trim();
        if expr.starts_with(['!', '#', '/', '>', '^', '*']) || expr.split_whitespace().next() == Some("else") {
            continue;
        }
        let head = expr.split_whitespace().next().unwrap_or("");
        if BARE_NUMBERS.contains(&expr) {
            continue;
        }
        if !QUOTING_HELPERS.contains(&head) {
            return Err(fail(start, expr, "wrap the value in `shell_quote`"));
        }
        if head == "shell_quote" {
            if let Some(problem) = shell_position(line_before(text, start)) {
                return Err(fail(start, expr, problem));
            }
        }
    }
    Ok(())
}

/// The text of the line up to `at`, with other handlebars expressions removed.
fn line_before(text: &str, at: usize) -> String {
    let line = &text[text[..at].rfind('\n').map_or(0, |i| i + 1)..at];
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find("}}").map_or("", |j| &rest[i + j + 2..]);
    }
    out.push_str(rest);
    out
}

/// Why a single-quoted word would not be one shell word after `prefix`, if it would not.
fn shell_position(prefix: String) -> Option<&'static str> {
    #[derive(PartialEq)]
    enum Ctx {
        Double,
        Subst,
    }
    let mut stack: Vec<Ctx> = Vec::new();
    let mut single = false;
    let mut prev = ' ';
    let mut chars = prefix.chars().peekable();
    while let Some(c) = chars.next() {
        let in_double = stack.last() == Some(&Ctx::Double);
        if single {
            single = c != '\'';
        } else {
            match c {
                '\\' => {
                    chars.next();
                }
                '\'' if !in_double => single = true,
                '"' if in_double => {
                    stack.pop();
                }
                '"' => stack.push(Ctx::Double),
                '$' if chars.peek() == Some(&'(') => {
                    chars.next();
                    stack.push(Ctx::Subst);
                }
                '(' if stack.last() == Some(&Ctx::Subst) => stack.push(Ctx::Subst),
                ')' if stack.last() == Some(&Ctx::Subst) => {
                    stack.pop();
                }
                '#' if !in_double && prev.is_whitespace() => return Some("it is inside a comment"),
                _ => {}
            }
        }
        prev = c;
    }
    if single {
        Some("it is inside single quotes")
    } else if stack.last() == Some(&Ctx::Double) {
        Some("it is inside double quotes, where `$(…)` in the value would run")
    } else {
        None
    }
}

/// The bare numbers must be integers in the data too: a context built by hand (not by
/// [`UserDataContext::for_job`]) could put a string there.
fn check_bare_numbers(data: &JsonValue) -> Result<(), RenderError> {
    for path in BARE_NUMBERS {
        let value = path.split('.').try_fold(data, |v, key| v.get(key));
        if let Some(v) = value {
            if !(v.is_u64() || v.is_i64()) {
                return Err(context_error(
                    *path,
                    format!("is written unquoted, so it must be an integer, not {}", json_type(v)),
                ));
            }
        }
    }
    Ok(())
}
