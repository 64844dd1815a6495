//! A small JSON Schema checker for the documented schemas in `docs/`: the keywords those
//! schemas use (`type`, `enum`, `required`, `properties`, `additionalProperties: false`,
//! `items`, `minimum`, local `$ref`). An unknown keyword is ignored, so keep the docs to these.

use serde_json::Value;

/// The first ```json block of a Markdown file, parsed.
pub fn from_markdown(text: &str) -> Value {
    let start = text.find("```json\n").expect("a ```json block") + "```json\n".len();
    let end = start + text[start..].find("\n```").expect("the block's end");
    serde_json::from_str(&text[start..end]).expect("the documented schema is JSON")
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "integer" => v.is_u64() || v.is_i64(),
        "number" => v.is_number(),
        other => panic!("schema uses unknown type {other}"),
    }
}

/// Every way `value` breaks `schema`, as `path: problem`.
pub fn check(root: &Value, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = r
            .strip_prefix("#/")
            .expect("local $ref")
            .split('/')
            .fold(root, |s, k| &s[k]);
        return check(root, target, value, path, errors);
    }
    if let Some(t) = schema.get("type") {
        let ok = match t {
            Value::String(t) => type_ok(t, value),
            Value::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().unwrap_or(""), value)),
            _ => false,
        };
        if !ok {
            errors.push(format!("{path}: {value} is not of type {t}"));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            errors.push(format!("{path}: {value} is not one of {options:?}"));
        }
    }
    if let (Some(min), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) {
        if n < min {
            errors.push(format!("{path}: {n} is below the minimum {min}"));
        }
    }
    if let Some(obj) = value.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for key in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = key.as_str().unwrap_or_default();
            if !obj.contains_key(key) {
                errors.push(format!("{path}: missing required `{key}`"));
            }
        }
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(root, s, v, &format!("{path}.{k}"), errors),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{path}: undocumented field `{k}`"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check(root, items, v, &format!("{path}[{i}]"), errors);
        }
    }
}

/// Panics with every problem if `value` does not match the schema documented in `doc`.
pub fn assert_matches_doc(doc: &str, value: &Value) {
    let schema = from_markdown(doc);
    let mut errors = Vec::new();
    check(&schema, &schema, value, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "the document does not match its schema:\n{}",
        errors.join("\n")
    );
}
