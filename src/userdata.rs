//! User-data: the bash script each job instance runs at boot, rendered from handlebars
//! templates (`userdata-templates/`, also built into the binary) in strict mode, with every
//! value shell-quoted and the result bounded to EC2's 16 KB. The script's contract is
//! DESIGN.md §4; the events it sends are [`crate::events`].
//!
//! Three layers: [`UserDataContext`] (what a template may see, built and checked from a
//! payer, a job and the deployment's [`InstanceEnv`]), [`Renderer`] (templates, helpers and
//! the lint that refuses unquoted interpolations), and [`TemplateUserData`] (the scheduler's
//! [`UserDataSource`]).

mod context;
mod group;
mod lint;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use handlebars::{
    no_escape, Context, Handlebars, Helper, HelperResult, JsonValue, Output, RenderContext,
    RenderErrorReason,
};
use serde::Serialize;

use crate::job::Job;
use crate::profile::Payer;
use crate::scheduler::UserDataSource;

pub use context::{
    EnvVar, EventsContext, InstanceEnv, JobContext, Limits, SecretRef, UserDataContext,
};
pub use group::{group_user_data, GroupUserDataError, LAUNCH_INDEX_PATH};

/// EC2's limit on user-data, before base64 encoding.
pub const MAX_USER_DATA_BYTES: usize = 16 * 1024;
/// Where [`Renderer::load`] looks for templates when no directory is named.
pub const DEFAULT_TEMPLATE_DIR: &str = "userdata-templates";

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
        "_tools.sh.hbs",
        include_str!("../userdata-templates/_tools.sh.hbs"),
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
    (
        "_run.sh.hbs",
        include_str!("../userdata-templates/_run.sh.hbs"),
    ),
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
    /// An interpolation the lint refuses: unquoted, or quoted where quoting does not protect.
    #[error("template `{template}` line {line}: `{{{{{expr}}}}}`: {reason}")]
    Unsafe {
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

/// POSIX single-quoting: the result is one shell word whose value is exactly `s`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Loaded templates and the helpers they may use.
#[derive(Debug)]
pub struct Renderer {
    registry: Handlebars<'static>,
    /// Top-level templates; partials live in the registry too but cannot be rendered alone.
    templates: BTreeSet<String>,
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
            let file = path
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or_default();
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

    /// Refuses a template that interpolates a value without a quoting helper, or quotes one
    /// where quoting does not protect it; `name` names it in the error. Every template and
    /// partial is checked when loaded.
    pub fn lint_template(name: &str, text: &str) -> Result<(), RenderError> {
        lint::lint_template(name, text)
    }

    fn empty() -> Self {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(no_escape);
        registry.register_helper("shell_quote", Box::new(shell_quote_helper));
        registry.register_helper("env_name", Box::new(env_name_helper));
        Self {
            registry,
            templates: BTreeSet::new(),
        }
    }

    fn add(&mut self, file: &str, text: &str) -> Result<(), RenderError> {
        let stem = file
            .strip_suffix(".sh.hbs")
            .or_else(|| file.strip_suffix(".hbs"))
            .unwrap_or(file);
        lint::lint_template(file, text)?;
        let parse_err = |e: handlebars::TemplateError| RenderError::Template {
            template: file.to_owned(),
            reason: match e.pos() {
                Some((line, col)) => format!("line {line}, column {col}: {}", e.reason()),
                None => e.reason().to_string(),
            },
        };
        match stem.strip_prefix('_') {
            Some(partial) => self
                .registry
                .register_partial(partial, text)
                .map_err(parse_err),
            None => {
                self.registry
                    .register_template_string(stem, text)
                    .map_err(parse_err)?;
                self.templates.insert(stem.to_owned());
                Ok(())
            }
        }
    }

    /// The names of the templates (not partials) available.
    pub fn templates(&self) -> Vec<String> {
        self.templates.iter().cloned().collect()
    }

    /// Renders `template` with any serializable context, bounded to [`MAX_USER_DATA_BYTES`].
    pub fn render<T: Serialize>(&self, template: &str, ctx: &T) -> Result<String, RenderError> {
        if !self.templates.contains(template) {
            return Err(RenderError::UnknownTemplate {
                template: template.to_owned(),
                available: self.templates().join(", "),
            });
        }
        let data =
            serde_json::to_value(ctx).map_err(|e| context_error("(context)", e.to_string()))?;
        lint::check_bare_numbers(&data)?;
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
        _ => {
            return Err(RenderErrorReason::Other(format!(
                "`{name}` takes exactly one value"
            )))
        }
    };
    let path = param.relative_path().cloned();
    if param.is_value_missing() || param.value().is_null() {
        return Err(RenderErrorReason::MissingVariable(path));
    }
    Ok((
        param.value(),
        path.unwrap_or_else(|| "(literal)".to_owned()),
    ))
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
        return Err(
            RenderErrorReason::Other(format!("shell_quote: `{path}` contains a NUL byte")).into(),
        );
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
        Some(name) if context::is_identifier(name) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_templates_load_and_pass_the_lint() {
        for (file, text) in BUILTIN {
            Renderer::lint_template(file, text).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(Renderer::builtin().templates(), ["default"]);
    }

    #[test]
    fn shell_quote_makes_one_literal_word() {
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
