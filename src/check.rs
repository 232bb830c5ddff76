//! `drover check`: offline validation of plan files.

use serde::Deserialize;

use crate::api::DisasterRecoveryPlan;
use crate::validate::{Problem, validate_plan};

/// The outcome of checking one YAML document.
#[derive(Debug)]
pub struct DocumentReport {
    /// `namespace/name`, or the document index when the name is unreadable.
    pub object: String,
    pub problems: Vec<Problem>,
}

/// Checks every `DisasterRecoveryPlan` document in a YAML stream. Documents of other kinds
/// are reported as problems so that a typo in `kind` is not silently skipped.
pub fn check_plan_yaml(text: &str) -> Vec<DocumentReport> {
    let mut reports = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = match serde_yaml::Value::deserialize(document) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                reports.push(DocumentReport {
                    object: format!("document {index}"),
                    problems: vec![problem("(yaml)", e.to_string())],
                });
                // The document stream cannot resume after a syntax error.
                break;
            }
        };
        reports.push(check_document(index, value));
    }
    if reports.is_empty() {
        reports.push(DocumentReport {
            object: "input".into(),
            problems: vec![problem("(yaml)", "no DisasterRecoveryPlan found")],
        });
    }
    reports
}

fn check_document(index: usize, value: serde_yaml::Value) -> DocumentReport {
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string);
    let namespace = value
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(|n| n.as_str())
        .unwrap_or("default")
        .to_string();
    let object = match &name {
        Some(n) => format!("{namespace}/{n}"),
        None => format!("document {index}"),
    };
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    if kind != "DisasterRecoveryPlan" {
        return DocumentReport {
            object,
            problems: vec![problem(
                "kind",
                format!("expected DisasterRecoveryPlan, got {kind:?}"),
            )],
        };
    }
    let problems = match serde_path_to_error::deserialize::<_, DisasterRecoveryPlan>(value) {
        Ok(plan) => {
            let mut problems = validate_plan(&plan.spec, &namespace, None);
            problems.extend(crate::validate::probe_problems(&plan.spec));
            problems
        }
        Err(e) => vec![problem(e.path().to_string(), e.inner().to_string())],
    };
    DocumentReport { object, problems }
}

fn problem(field: impl Into<String>, reason: impl Into<String>) -> Problem {
    Problem {
        field: field.into(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../config/samples/plan.yaml");

    #[test]
    fn sample_passes() {
        let reports = check_plan_yaml(SAMPLE);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].object, "drover-system/shop");
        assert!(reports[0].problems.is_empty(), "{:?}", reports[0].problems);
    }

    #[test]
    fn type_error_names_the_path() {
        let broken = SAMPLE.replace("activeReplicas: 4", "activeReplicas: four");
        let reports = check_plan_yaml(&broken);
        assert_eq!(reports[0].problems.len(), 1);
        assert_eq!(
            reports[0].problems[0].field,
            "spec.workloads[0].activeReplicas"
        );
    }

    #[test]
    fn every_document_is_checked() {
        let two = format!(
            "{SAMPLE}\n---\n{}",
            SAMPLE
                .replace("name: shop", "name: other")
                .replace("rto: 5m", "rto: soon")
        );
        let reports = check_plan_yaml(&two);
        assert_eq!(reports.len(), 2);
        assert!(reports[0].problems.is_empty());
        assert_eq!(reports[1].problems[0].field, "spec.objectives.rto");
    }

    #[test]
    fn garbage_is_reported_not_panicked() {
        for input in [
            "",
            "::",
            "kind: Failover",
            "[1,2",
            "kind: DisasterRecoveryPlan\nspec: 3",
        ] {
            let reports = check_plan_yaml(input);
            assert!(reports.iter().any(|r| !r.problems.is_empty()), "{input:?}");
        }
    }
}
