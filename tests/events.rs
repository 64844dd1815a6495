//! The instance event schema as the scheduler meets it: the documented examples parse, every
//! malformed body is refused with an error naming the field, and no input makes parsing panic.

use mayfly::events::{EventKind, InstanceEvent, MAX_OUTPUT_TAIL_BYTES};
use proptest::prelude::*;
use serde_json::{json, Value};

fn started() -> Value {
    json!({
        "v": 1,
        "type": "started",
        "job_id": "cedar-plan:2026-11-01:claims",
        "attempt": 1,
        "instance_id": "i-0123456789abcdef0",
        "at": "2026-11-01T06:00:05Z"
    })
}

fn finished() -> Value {
    let mut v = started();
    v["type"] = json!("finished");
    v["exit_code"] = json!(0);
    v["duration_secs"] = json!(312);
    v["output_tail"] = json!("loaded 1200 claims\n");
    v
}

fn with(mut base: Value, key: &str, value: Value) -> String {
    base[key] = value;
    base.to_string()
}

fn without(mut base: Value, key: &str) -> String {
    base.as_object_mut().unwrap().remove(key);
    base.to_string()
}

#[test]
fn the_documented_examples_parse() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events.md")).unwrap();
    let mut kinds = Vec::new();
    let mut in_json = false;
    let mut block = String::new();
    for line in doc.lines() {
        match (in_json, line.trim()) {
            (false, "```json") => in_json = true,
            (true, "```") => {
                let event = InstanceEvent::parse(&block).unwrap_or_else(|e| panic!("{e}\n{block}"));
                kinds.push(event.event);
                block.clear();
                in_json = false;
            }
            (true, _) => block.push_str(line),
            _ => {}
        }
    }
    for kind in [
        EventKind::Started,
        EventKind::Heartbeat,
        EventKind::Finished,
        EventKind::Interrupted,
    ] {
        assert!(
            kinds.contains(&kind),
            "docs/events.md has no `{kind}` example"
        );
    }
}

#[test]
fn a_well_formed_finished_event_parses() {
    let e = InstanceEvent::parse(&finished().to_string()).unwrap();
    assert_eq!(e.event, EventKind::Finished);
    assert_eq!(e.exit_code, Some(0));
    assert_eq!(e.duration_secs, Some(312));
    assert_eq!(e.at.to_rfc3339(), "2026-11-01T06:00:05+00:00");
    // Explicit nulls are the same as absent optional fields.
    assert!(InstanceEvent::parse(&with(started(), "notice", Value::Null)).is_ok());
}

#[test]
fn every_malformed_event_names_the_field() {
    let long_tail = "x".repeat(MAX_OUTPUT_TAIL_BYTES + 1);
    let cases: Vec<(String, &str, &str)> = vec![
        ("not json".into(), "(body)", "not JSON"),
        ("[1,2]".into(), "(body)", "JSON object"),
        (with(started(), "v", json!(2)), "v", "unsupported version 2"),
        (with(started(), "v", json!("1")), "v", "invalid type"),
        (without(started(), "v"), "v", "missing"),
        (
            with(started(), "colour", json!("red")),
            "colour",
            "unknown field",
        ),
        (
            with(started(), "type", json!("exploded")),
            "type",
            "unknown variant",
        ),
        (
            with(started(), "type", json!("Started")),
            "type",
            "unknown variant",
        ),
        (without(started(), "job_id"), "job_id", "missing"),
        (
            with(started(), "job_id", json!("a b")),
            "job_id",
            "A-Z a-z 0-9",
        ),
        (
            with(started(), "job_id", json!("x".repeat(129))),
            "job_id",
            "1–128",
        ),
        (
            with(started(), "job_id", json!(7)),
            "job_id",
            "invalid type",
        ),
        (
            with(started(), "attempt", json!(0)),
            "attempt",
            "at least 1",
        ),
        (
            with(started(), "attempt", json!(-1)),
            "attempt",
            "invalid value",
        ),
        (
            with(started(), "attempt", json!(1.5)),
            "attempt",
            "invalid type",
        ),
        (
            with(started(), "instance_id", json!("i-XYZ")),
            "instance_id",
            "lowercase hex",
        ),
        (
            with(started(), "instance_id", json!("0123456789abcdef0")),
            "instance_id",
            "`i-`",
        ),
        (without(started(), "instance_id"), "instance_id", "missing"),
        (
            with(started(), "at", json!("yesterday")),
            "at",
            "input contains invalid characters",
        ),
        (without(started(), "at"), "at", "missing"),
        (
            without(finished(), "exit_code"),
            "exit_code",
            "required on `finished`",
        ),
        (
            with(finished(), "exit_code", Value::Null),
            "exit_code",
            "required on `finished`",
        ),
        (
            without(finished(), "duration_secs"),
            "duration_secs",
            "required on `finished`",
        ),
        (
            with(finished(), "exit_code", json!("0")),
            "exit_code",
            "invalid type",
        ),
        (
            with(finished(), "output_tail", json!(long_tail)),
            "output_tail",
            "4097 bytes, at most 4096",
        ),
        (
            with(started(), "exit_code", json!(0)),
            "exit_code",
            "only `finished` events",
        ),
        (
            with(started(), "output_tail", json!("x")),
            "output_tail",
            "only `finished` events",
        ),
        (
            with(finished(), "notice", json!("x")),
            "notice",
            "only `interrupted` events",
        ),
        (
            with(with_type("interrupted"), "notice", json!("n".repeat(2000))),
            "notice",
            "at most 1024",
        ),
    ];
    for (body, field, reason) in cases {
        let err = InstanceEvent::parse(&body).expect_err(&body);
        assert_eq!(err.field, field, "{body}: {err}");
        assert!(
            err.reason.contains(reason),
            "{body}:\n  expected: {reason}\n  got: {err}"
        );
        assert!(err.to_string().starts_with(&format!("{field}: ")));
    }
}

fn with_type(kind: &str) -> Value {
    let mut v = started();
    v["type"] = json!(kind);
    v
}

#[test]
fn the_tail_limit_counts_bytes_not_characters() {
    // 2048 two-byte characters are exactly 4 KiB; one more is too many.
    let ok = with(finished(), "output_tail", json!("é".repeat(2048)));
    assert!(InstanceEvent::parse(&ok).is_ok());
    let over = with(finished(), "output_tail", json!("é".repeat(2049)));
    assert_eq!(
        InstanceEvent::parse(&over).unwrap_err().field,
        "output_tail"
    );
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_text(body in any::<String>()) {
        let _ = InstanceEvent::parse(&body);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_json(value in arb_json()) {
        let _ = InstanceEvent::parse(&value.to_string());
    }

    /// Mutating one field of a valid event either still parses or names a known field.
    #[test]
    fn a_mutated_event_is_accepted_or_names_a_field(
        key in prop::sample::select(vec![
            "v", "type", "job_id", "attempt", "instance_id", "at",
            "exit_code", "duration_secs", "output_tail", "notice", "extra",
        ]),
        value in arb_json(),
    ) {
        let body = with(finished(), key, value);
        if let Err(e) = InstanceEvent::parse(&body) {
            // A different type makes the finished-only fields the ones out of place.
            let allowed: &[&str] = if key == "type" {
                &["type", "exit_code", "duration_secs", "output_tail"]
            } else {
                &[key]
            };
            prop_assert!(allowed.contains(&e.field.as_str()), "{}: {}", body, e);
        }
    }

    #[test]
    fn what_the_constructors_build_parses_back(
        job_id in "[A-Za-z0-9._:-]{1,128}",
        attempt in 1u32..,
        hex in "[0-9a-f]{17}",
        code in any::<i32>(),
        secs in any::<u64>(),
        tail in any::<String>(),
    ) {
        let at = "2026-11-01T06:00:00Z".parse().unwrap();
        let id = format!("i-{hex}");
        let e = InstanceEvent::finished(&job_id, attempt, &id, at, code, secs, &tail);
        prop_assert_eq!(InstanceEvent::parse(&e.to_json()).unwrap(), e);
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::from),
        "[a-z]{1,8}".prop_map(Value::from),
        Just(json!("started")),
        Just(json!("i-0123456789abcdef0")),
        Just(json!("2026-11-01T06:00:00Z")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
