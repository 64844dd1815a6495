//! Bad input never panics and always gets a clear error: property tests of the job-request
//! parser and the payer-profile parser and validator (the instance-event parser has its own in
//! `tests/events.rs`).

use mayfly::catalog::Catalog;
use mayfly::job::JobRequest;
use mayfly::profile::{GlobalCaps, PayerProfile, ValidateContext};
use proptest::prelude::*;
use serde_json::{json, Value};

const REQUEST_FIELDS: [&str; 7] = [
    "job_id", "payer_id", "kind", "batch", "input", "params", "priority",
];

fn request() -> Value {
    json!({
        "job_id": "cedar-plan:2026-11:claims", "payer_id": "cedar-plan", "kind": "claims",
        "batch": "2026-11", "input": {"uri": "s3://example-payer-drops/claims.x12", "bytes": 1024},
        "params": {"FORMAT": "x12"}, "priority": 5
    })
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::from),
        "[A-Za-z0-9._:-]{0,130}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("[A-Za-z_]{1,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn profile_text() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/payer-profiles/cedar-plan.toml"
    ))
    .unwrap()
}

fn arb_toml() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        any::<bool>().prop_map(toml::Value::Boolean),
        any::<i64>().prop_map(toml::Value::Integer),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(toml::Value::Float),
        any::<String>().prop_map(toml::Value::String),
        "[0-9]{1,4}[smhd]".prop_map(toml::Value::String),
        prop::collection::vec(any::<String>().prop_map(toml::Value::String), 0..4)
            .prop_map(toml::Value::Array),
    ]
}

proptest! {
    #[test]
    fn request_parse_never_panics_on_arbitrary_text(body in any::<String>()) {
        let _ = JobRequest::parse(&body);
    }

    #[test]
    fn request_parse_never_panics_on_arbitrary_json(value in arb_json()) {
        if let Err(e) = JobRequest::parse(&value.to_string()) {
            prop_assert!(!e.field.is_empty() && !e.reason.is_empty());
        }
    }

    /// Replacing one field of a valid request: it still parses, or the error names that field
    /// (or the body, for a value of the wrong JSON type).
    #[test]
    fn a_mutated_request_is_accepted_or_names_the_field(
        key in prop::sample::select(REQUEST_FIELDS.to_vec()),
        value in arb_json(),
    ) {
        let mut v = request();
        v[key] = value;
        if let Err(e) = JobRequest::parse(&v.to_string()) {
            let f = e.field.as_str();
            prop_assert!(
                f == key || f.starts_with(&format!("{key}.")) || f == "(body)"
                    // an unknown key inside `input` is named as it is
                    || (key == "input" && !REQUEST_FIELDS.contains(&f)),
                "{} -> {}", v, e
            );
        }
    }

    #[test]
    fn profile_parse_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = PayerProfile::from_toml("fuzz.toml", &text);
    }

    /// Replacing one line's value of a valid profile: parsing and validation never panic, and
    /// every error names a field and a reason.
    #[test]
    fn a_mutated_profile_is_accepted_or_every_error_names_a_field(
        line in 0usize..80,
        value in arb_toml(),
    ) {
        let text = profile_text();
        let lines: Vec<&str> = text.lines().collect();
        let line = line % lines.len();
        let mutated: String = lines
            .iter()
            .enumerate()
            .map(|(i, l)| match l.split_once(" = ") {
                Some((k, _)) if i == line => format!("{k} = {value}\n"),
                _ => format!("{l}\n"),
            })
            .collect();
        let ctx = ValidateContext { catalog: Catalog::shipped(), global: GlobalCaps::default() };
        match PayerProfile::from_toml("cedar-plan.toml", &mutated) {
            Err(e) => prop_assert!(!e.field.is_empty() && !e.reason.is_empty(), "{}", e),
            Ok(p) => {
                if let Err(errors) = p.validate("cedar-plan.toml", &ctx) {
                    for e in &errors.0 {
                        prop_assert!(!e.field.is_empty() && !e.reason.is_empty(), "{}", e);
                    }
                }
            }
        }
    }
}
