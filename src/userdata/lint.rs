//! The template lint: every interpolated value goes through a quoting helper, except a few
//! integers written bare, and a quoted value sits where single quotes protect it.

use handlebars::JsonValue;

use super::{context_error, json_type, RenderError};

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
    "limits.started_send_secs",
    "limits.finished_send_secs",
];

/// Refuses a template that interpolates a value without a quoting helper (other than the
/// whitelisted numbers), or quotes one where single quotes do not protect it: inside double
/// quotes, inside single quotes, or in a comment on the same line. The check is textual and
/// line-based; it catches the mistakes that are detectable without a shell parser.
pub(super) fn lint_template(name: &str, text: &str) -> Result<(), RenderError> {
    let fail = |start: usize, expr: &str, reason: &str| RenderError::Unsafe {
        template: name.to_owned(),
        line: text[..start].matches('\n').count() + 1,
        expr: expr.to_owned(),
        reason: reason.to_owned(),
    };
    let mut pos = 0;
    while let Some(found) = text[pos..].find("{{") {
        let start = pos + found;
        let rest = &text[start..];
        let close = if rest.starts_with("{{!--") {
            "--}}"
        } else {
            "}}"
        };
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
        if expr.starts_with(['!', '#', '/', '>', '^', '*'])
            || expr.split_whitespace().next() == Some("else")
        {
            continue;
        }
        let head = expr.split_whitespace().next().unwrap_or("");
        if BARE_NUMBERS.contains(&expr) {
            continue;
        }
        if !QUOTING_HELPERS.contains(&head) {
            return Err(fail(
                start,
                expr,
                "unquoted interpolation: wrap the value in `shell_quote`",
            ));
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
                '#' if !in_double && prev.is_whitespace() => return Some(
                    "quoted inside a comment, where a newline in the value would start a command",
                ),
                _ => {}
            }
        }
        prev = c;
    }
    if single {
        Some("quoted inside single quotes, which the value's own quotes would close")
    } else if stack.last() == Some(&Ctx::Double) {
        Some("quoted inside double quotes, where `$(…)` in the value would run")
    } else {
        None
    }
}

/// The bare numbers must be integers in the data too: a context built by hand (not by
/// [`super::UserDataContext::for_job`]) could put a string there.
pub(super) fn check_bare_numbers(data: &JsonValue) -> Result<(), RenderError> {
    for path in BARE_NUMBERS {
        let value = path.split('.').try_fold(data, |v, key| v.get(key));
        if let Some(v) = value {
            if !(v.is_u64() || v.is_i64()) {
                return Err(context_error(
                    *path,
                    format!(
                        "is written unquoted, so it must be an integer, not {}",
                        json_type(v)
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lint_knows_where_quotes_protect() {
        let ok = [
            "x={{shell_quote a}}",
            r#"y="$(f {{shell_quote a}})""#,
            "printf '%s' {{shell_quote a}} # trailing comment",
            "sleep {{limits.heartbeat_secs}}",
            "export {{env_name name}}={{shell_quote value}}",
            "{{!-- {{raw}} in a comment --}}{{#if a}}{{else}}{{/if}}{{> part}}",
            "a=${#b[@]} {{shell_quote a}}",
        ];
        for text in ok {
            lint_template("t", text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
        let refused = [
            ("echo {{a}}", "unquoted"),
            ("echo {{~a~}}", "unquoted"),
            ("sleep {{limits.heartbeat_secs}}{{limits.nope}}", "unquoted"),
            ("echo {{json a}}", "unquoted"),
            (r#"echo "{{shell_quote a}}""#, "double quotes"),
            (r#"echo "$(f)" "x {{shell_quote a}}""#, "double quotes"),
            ("echo '{{shell_quote a}}'", "single quotes"),
            ("# {{shell_quote a}}", "comment"),
            ("true # {{shell_quote a}}", "comment"),
        ];
        for (text, why) in refused {
            let err = lint_template("t", text).unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn bare_numbers_must_be_integers_in_the_data() {
        let data =
            serde_json::json!({"job": {"attempt": 1}, "limits": {"deadline_secs": "1; reboot"}});
        let err = check_bare_numbers(&data).unwrap_err().to_string();
        assert!(err.contains("limits.deadline_secs"), "{err}");
        assert!(check_bare_numbers(&serde_json::json!({"job": {"attempt": 3}})).is_ok());
    }
}
