//! CloudWatch Embedded Metric Format: metrics written as log lines that CloudWatch Logs turns
//! into metrics, with no API call (the way a Lambda function reports them). One document per
//! dimension set and values:
//! `{"_aws":{"Timestamp":ms,"CloudWatchMetrics":[{"Namespace":"mayfly","Dimensions":[["deployment"]],
//! "Metrics":[{"Name":"mayfly_launches_total","Unit":"Count"}]}]},"deployment":"prod","mayfly_launches_total":3}`.
//! A document holds one value per dimension name, so metrics broken down by payer, reason or
//! operation take one document (one line) per label value.
//!
//! [`Metrics::to_emf`] renders the same snapshot, series names and labels as the Prometheus
//! text (`metrics.rs`), with the deployment as a dimension of every document, and adds a
//! deployment-wide figure for each labelled series (the sum, or the maximum of an age) so an
//! alarm can watch one metric whatever the payers are.

use serde_json::{Map, Value};

use crate::metrics::{Family, Metrics};

/// The namespace of mayfly's metrics.
pub const NAMESPACE: &str = "mayfly";
/// The dimension naming the deployment, on every document.
pub const DEPLOYMENT: &str = "deployment";

/// The unit CloudWatch records with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Seconds,
    Milliseconds,
    /// Dimensionless (dollars, for instance).
    None,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Seconds => "Seconds",
            Unit::Milliseconds => "Milliseconds",
            Unit::None => "None",
        }
    }
}

/// One document: a dimension set with its values, and the metrics recorded under it.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    dimensions: Vec<(String, String)>,
    metrics: Vec<(String, Unit, f64)>,
}

impl Document {
    pub fn metric(&mut self, name: &str, unit: Unit, value: f64) -> &mut Self {
        self.metrics.push((name.to_owned(), unit, value));
        self
    }
}

/// The metrics of one moment (a pass), in one namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Emf {
    namespace: String,
    timestamp_ms: i64,
    documents: Vec<Document>,
}

impl Emf {
    pub fn new(namespace: &str, timestamp_ms: i64) -> Self {
        Self {
            namespace: namespace.to_owned(),
            timestamp_ms,
            documents: Vec::new(),
        }
    }

    /// The document with exactly these dimensions (name, value), made if there is none yet;
    /// add metrics to it.
    pub fn document(&mut self, dimensions: &[(&str, &str)]) -> &mut Document {
        let same = |d: &Document| {
            d.dimensions.len() == dimensions.len()
                && d.dimensions
                    .iter()
                    .zip(dimensions)
                    .all(|((k, v), (k2, v2))| k == k2 && v == v2)
        };
        let index = match self.documents.iter().position(same) {
            Some(i) => i,
            None => {
                self.documents.push(Document {
                    dimensions: dimensions
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    metrics: Vec::new(),
                });
                self.documents.len() - 1
            }
        };
        &mut self.documents[index]
    }

    /// One JSON line per document that has metrics.
    pub fn lines(&self) -> Vec<String> {
        self.documents
            .iter()
            .filter(|d| !d.metrics.is_empty())
            .map(|d| self.render(d).to_string())
            .collect()
    }

    fn render(&self, d: &Document) -> Value {
        let mut root = Map::new();
        let names: Vec<Value> = d
            .dimensions
            .iter()
            .map(|(k, _)| Value::from(k.as_str()))
            .collect();
        let metrics: Vec<Value> = d
            .metrics
            .iter()
            .map(|(name, unit, _)| serde_json::json!({"Name": name, "Unit": unit.as_str()}))
            .collect();
        root.insert(
            "_aws".into(),
            serde_json::json!({
                "Timestamp": self.timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [names],
                    "Metrics": metrics,
                }],
            }),
        );
        for (k, v) in &d.dimensions {
            root.insert(k.clone(), Value::from(v.as_str()));
        }
        for (name, _, value) in &d.metrics {
            // CloudWatch takes no NaN or infinity: such a value is left out as 0.
            let value = if value.is_finite() { *value } else { 0.0 };
            root.insert(name.clone(), Value::from(value));
        }
        Value::Object(root)
    }
}

impl Metrics {
    /// The snapshot as EMF lines for deployment `deployment`: a document per sample (its
    /// labels as dimensions), then one per labelled series with its deployment-wide figure.
    pub fn to_emf(&self, deployment: &str) -> Vec<String> {
        let mut emf = Emf::new(NAMESPACE, self.at.timestamp_millis());
        let totals = [(DEPLOYMENT, deployment)];
        emf.document(&totals);
        for fam in &self.families() {
            let unit = unit_of(fam.name);
            let labelled = fam.samples.iter().any(|s| !s.labels.is_empty());
            for s in &fam.samples {
                let mut dims: Vec<(&str, &str)> = vec![(DEPLOYMENT, deployment)];
                dims.extend(s.labels.iter().map(|(k, v)| (*k, v.as_str())));
                emf.document(&dims).metric(fam.name, unit, s.value);
            }
            if labelled || fam.samples.is_empty() {
                emf.document(&totals)
                    .metric(fam.name, unit, deployment_wide(fam));
            }
        }
        emf.lines()
    }
}

/// CloudWatch's unit for a series, from its name's suffix.
fn unit_of(name: &str) -> Unit {
    if name.ends_with("_seconds") || name.ends_with("_seconds_total") {
        Unit::Seconds
    } else if name.ends_with("_usd") {
        Unit::None
    } else {
        Unit::Count
    }
}

/// One figure for the whole deployment: the oldest of ages, the sum of anything else.
fn deployment_wide(fam: &Family) -> f64 {
    let values = fam.samples.iter().map(|s| s.value);
    if fam.name.ends_with("_age_seconds") {
        values.fold(0.0, f64::max)
    } else {
        values.sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_document_is_one_json_line_with_its_aws_metadata() {
        let mut emf = Emf::new("mayfly", 1_795_348_800_000);
        emf.document(&[("Deployment", "prod")])
            .metric("Launches", Unit::Count, 3.0)
            .metric("PassDuration", Unit::Milliseconds, 812.0);
        emf.document(&[
            ("Deployment", "prod"),
            ("Payer", "cedar-plan"),
            ("Tier", "0"),
        ])
        .metric("QueuedJobs", Unit::Count, 2.0);
        emf.document(&[("Deployment", "prod"), ("Reason", "orphan")]);
        emf.document(&[
            ("Deployment", "prod"),
            ("Payer", "cedar-plan"),
            ("Tier", "0"),
        ])
        .metric("OldestAge", Unit::Seconds, 60.0);
        let lines = emf.lines();
        assert_eq!(
            lines.len(),
            2,
            "one document per dimension set; none without metrics"
        );
        for line in &lines {
            assert!(!line.contains('\n'));
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["_aws"]["Timestamp"], 1_795_348_800_000_i64);
            let directive = &v["_aws"]["CloudWatchMetrics"][0];
            assert_eq!(directive["Namespace"], "mayfly");
            for dim in directive["Dimensions"][0].as_array().unwrap() {
                assert!(v[dim.as_str().unwrap()].is_string(), "{line}");
            }
            for m in directive["Metrics"].as_array().unwrap() {
                assert!(v[m["Name"].as_str().unwrap()].is_number(), "{line}");
            }
        }
        let first: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["Launches"], 3.0);
        assert_eq!(
            first["_aws"]["CloudWatchMetrics"][0]["Metrics"][1],
            serde_json::json!({"Name": "PassDuration", "Unit": "Milliseconds"})
        );
        let second: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(
            second["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["Deployment", "Payer", "Tier"]])
        );
        assert_eq!(second["Payer"], "cedar-plan");
        assert_eq!(second["OldestAge"], 60.0);
    }

    #[test]
    fn a_value_cloudwatch_refuses_is_written_as_zero() {
        let mut emf = Emf::new("mayfly", 0);
        emf.document(&[])
            .metric("CostTodayUsd", Unit::None, f64::NAN);
        let v: Value = serde_json::from_str(&emf.lines()[0]).unwrap();
        assert_eq!(v["CostTodayUsd"], 0.0);
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([[]])
        );
    }

    #[test]
    fn a_snapshot_renders_per_label_documents_and_deployment_wide_figures() {
        use crate::metrics::{LedgerGauges, QueueGauge};
        use crate::scheduler::PassReport;
        let at: chrono::DateTime<chrono::Utc> = "2026-11-29T01:00:00Z".parse().unwrap();
        let mut report = PassReport::new(at, false);
        report.duration_ms = 1500;
        report
            .launch
            .instances
            .push(("j-1".into(), "i-1".into(), "c7i.large".into()));
        report.reconcile.orphans_terminated = 2;
        report.aws_calls.insert("EC2.RunInstances".into(), 1);
        let gauge = |payer: &str, tier, queued, age| QueueGauge {
            payer: payer.into(),
            tier: Some(tier),
            queued,
            oldest_age_seconds: age,
        };
        let ledger = LedgerGauges {
            queued: vec![
                gauge("cedar-plan", 0, 2, 600.0),
                gauge("cedar-plan", 1, 3, 30.0),
            ],
            cost_today_usd: 1.25,
            ..LedgerGauges::default()
        };
        let lines = Metrics::from_pass(&report, Some(ledger)).to_emf("prod");
        let docs: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        for d in &docs {
            assert_eq!(d["_aws"]["Timestamp"], at.timestamp_millis());
            assert_eq!(d["_aws"]["CloudWatchMetrics"][0]["Namespace"], "mayfly");
            assert_eq!(d["deployment"], "prod");
        }
        let totals = &docs[0];
        assert_eq!(
            totals["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["deployment"]])
        );
        assert_eq!(totals["mayfly_launches_total"], 1.0);
        assert_eq!(totals["mayfly_pass_duration_seconds"], 1.5);
        assert_eq!(
            totals["mayfly_queued_jobs"], 5.0,
            "the sum over payers and tiers"
        );
        assert_eq!(
            totals["mayfly_queued_oldest_age_seconds"], 600.0,
            "the oldest"
        );
        assert_eq!(totals["mayfly_cost_today_usd"], 1.25);
        assert_eq!(totals["mayfly_paused_payers"], 0.0);
        let units: Vec<(&str, &str)> = totals["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["Name"].as_str().unwrap(), m["Unit"].as_str().unwrap()))
            .collect();
        assert!(units.contains(&("mayfly_pass_duration_seconds", "Seconds")));
        assert!(units.contains(&("mayfly_cost_today_usd", "None")));
        let find = |dims: Value, name: &str| {
            docs.iter()
                .find(|d| {
                    d["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0] == dims
                        && d.get(name).is_some()
                        && dims
                            .as_array()
                            .unwrap()
                            .iter()
                            .all(|k| d[k.as_str().unwrap()].is_string())
                })
                .unwrap_or_else(|| panic!("a {name} document with {dims}: {lines:#?}"))
        };
        let tier0 = docs
            .iter()
            .find(|d| d["payer"] == "cedar-plan" && d["tier"] == "0")
            .expect("a payer and tier document");
        assert_eq!(tier0["mayfly_queued_jobs"], 2.0);
        assert_eq!(tier0["mayfly_queued_oldest_age_seconds"], 600.0);
        assert_eq!(
            tier0["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["deployment", "payer", "tier"]])
        );
        let orphans = find(
            serde_json::json!(["deployment", "reason"]),
            "mayfly_reaps_total",
        );
        assert!(docs
            .iter()
            .any(|d| d["reason"] == "orphan" && d["mayfly_reaps_total"] == 2.0));
        assert!(orphans["mayfly_reaps_total"].is_number());
        find(
            serde_json::json!(["deployment", "operation"]),
            "mayfly_aws_calls_total",
        );
    }

    /// A dimension of an alarm: its name, and its literal value (`None` for a reference).
    type AlarmDimension = (String, Option<String>);

    /// The infra template's alarms on mayfly's own metrics, as (metric, dimensions): read
    /// from the template's text.
    fn template_alarms() -> Vec<(String, Vec<AlarmDimension>)> {
        let template = include_str!("../infra/mayfly.yaml");
        let mut alarms = Vec::new();
        // Resources are the two-space-indented keys; each block runs to the next one.
        let mut blocks: Vec<Vec<&str>> = Vec::new();
        for line in template.lines() {
            let top = line.len() > 2 && line.starts_with("  ") && !line[2..].starts_with(' ');
            if top || blocks.is_empty() {
                blocks.push(Vec::new());
            }
            blocks.last_mut().expect("a block").push(line.trim());
        }
        for block in blocks {
            if !block.contains(&"Type: AWS::CloudWatch::Alarm")
                || !block.contains(&"Namespace: mayfly")
            {
                continue;
            }
            let metric = block
                .iter()
                .find_map(|l| l.strip_prefix("MetricName: "))
                .expect("an alarm names its metric");
            let mut dims = Vec::new();
            for (i, l) in block.iter().enumerate() {
                if let Some(name) = l.strip_prefix("- Name: ") {
                    let value = block[i + 1]
                        .strip_prefix("Value: ")
                        .expect("a dimension value follows its name");
                    let literal = (!value.starts_with('!')).then(|| value.to_owned());
                    dims.push((name.to_owned(), literal));
                }
            }
            alarms.push((metric.to_owned(), dims));
        }
        alarms
    }

    #[test]
    fn every_alarm_on_a_mayfly_metric_matches_a_series_the_lambda_emits() {
        use crate::metrics::{LedgerGauges, QueueGauge};
        use crate::scheduler::PassReport;
        let alarms = template_alarms();
        let names: Vec<&str> = alarms.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(
            names,
            [
                "mayfly_queued_oldest_age_seconds",
                "mayfly_reaps_total",
                "mayfly_paused_payers"
            ],
            "the template's alarms on mayfly metrics"
        );
        let at: chrono::DateTime<chrono::Utc> = "2026-11-29T01:00:00Z".parse().unwrap();
        let mut report = PassReport::new(at, false);
        report.reconcile.orphans_terminated = 1;
        let ledger = LedgerGauges {
            queued: vec![QueueGauge {
                payer: "cedar-plan".into(),
                tier: Some(0),
                queued: 1,
                oldest_age_seconds: 900.0,
            }],
            ..LedgerGauges::default()
        };
        let docs: Vec<Value> = Metrics::from_pass(&report, Some(ledger))
            .to_emf("prod")
            .iter()
            .map(|l| serde_json::from_str(l).expect("JSON"))
            .collect();
        for (metric, dims) in &alarms {
            // CloudWatch matches an alarm to a series by its exact set of dimensions.
            let wanted: Vec<&str> = dims.iter().map(|(n, _)| n.as_str()).collect();
            let found = docs.iter().any(|d| {
                let directive = &d["_aws"]["CloudWatchMetrics"][0];
                let set: Vec<&str> = directive["Dimensions"][0]
                    .as_array()
                    .expect("a dimension set")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                let mut a = set.clone();
                let mut b = wanted.clone();
                a.sort_unstable();
                b.sort_unstable();
                a == b
                    && d[metric.as_str()].is_number()
                    && dims.iter().all(|(n, literal)| match literal {
                        Some(v) => d[n.as_str()] == v.as_str(),
                        None => d[n.as_str()].is_string(),
                    })
            });
            assert!(found, "no EMF series for the alarm on {metric} {dims:?}");
        }
    }
}
