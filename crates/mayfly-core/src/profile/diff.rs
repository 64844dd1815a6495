//! Field-by-field difference between two profiles, for `mayfly payers diff`.

use serde::Serialize;
use serde_json::Value;

use super::PayerProfile;

/// One changed field: its dotted path and its old and new values (absent = not set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub field: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
}

/// The fields that differ from `old` to `new`, in path order. Empty when they are equal.
pub fn diff(old: &PayerProfile, new: &PayerProfile) -> Vec<Change> {
    let a = serde_json::to_value(old).expect("profiles serialize to JSON");
    let b = serde_json::to_value(new).expect("profiles serialize to JSON");
    let mut out = Vec::new();
    walk("", Some(&a), Some(&b), &mut out);
    out
}

fn walk(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                walk(&join(k), x.get(k), y.get(k), out);
            }
        }
        (x, y) if x == y => {}
        (x, y) => out.push(Change {
            field: path.to_owned(),
            old: x.map(Value::to_string),
            new: y.map(Value::to_string),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = r#"
payer_id = "demo-payer"
[caps]
max_instances = 2
max_vcpus = 8
[launch]
image_id = "ami-0a1b2c3d4e5f60001"
subnets = ["subnet-0a1b2c3d4e5f60011"]
security_groups = ["sg-0a1b2c3d4e5f60021"]
instance_profile = "mayfly-instance"
[timeouts]
boot = "10m"
heartbeat = "5m"
max_runtime = "2h"
[kinds.members]
tier = 0
command = ["/bin/true"]
[kinds.members.compute]
instance_types = ["m7i.large"]
"#;

    #[test]
    fn equal_profiles_have_no_changes_and_one_field_shows_exactly() {
        let a = PayerProfile::from_toml("a", PROFILE).unwrap();
        assert!(diff(&a, &a).is_empty());
        let mut b = a.clone();
        b.caps.max_vcpus = 16;
        let changes = diff(&a, &b);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].field, "caps.max_vcpus");
        assert_eq!(changes[0].old.as_deref(), Some("8"));
        assert_eq!(changes[0].new.as_deref(), Some("16"));
    }
}
