//! Autoscalers of the plan's workloads (HorizontalPodAutoscalers and KEDA ScaledObjects),
//! as read from a region's cluster: an autoscaler whose maximum is below a workload's
//! active count caps the standby below what the plan promises once it is active.

use serde_json::Value;

use crate::api::WorkloadSpec;

/// One autoscaler, as the API server returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoscalerSeen {
    /// HorizontalPodAutoscaler or ScaledObject.
    pub kind: &'static str,
    pub name: String,
    /// The kind and name of the workload it scales.
    pub target_kind: String,
    pub target_name: String,
    pub min_replicas: Option<i32>,
    pub max_replicas: Option<i32>,
}

fn int(v: &Value) -> Option<i32> {
    v.as_i64().and_then(|n| i32::try_from(n).ok())
}

/// An autoscaling/v1 HorizontalPodAutoscaler (`obj` is the whole object).
pub fn hpa(obj: &Value) -> Option<AutoscalerSeen> {
    let spec = &obj["spec"];
    Some(AutoscalerSeen {
        kind: "HorizontalPodAutoscaler",
        name: obj["metadata"]["name"].as_str()?.to_string(),
        target_kind: spec["scaleTargetRef"]["kind"].as_str()?.to_string(),
        target_name: spec["scaleTargetRef"]["name"].as_str()?.to_string(),
        // The API server defaults minReplicas to 1.
        min_replicas: int(&spec["minReplicas"]).or(Some(1)),
        max_replicas: int(&spec["maxReplicas"]),
    })
}

/// A KEDA (keda.sh/v1alpha1) ScaledObject: the target kind defaults to Deployment, the
/// bounds to KEDA's 0 and 100.
pub fn scaled_object(obj: &Value) -> Option<AutoscalerSeen> {
    let spec = &obj["spec"];
    Some(AutoscalerSeen {
        kind: "ScaledObject",
        name: obj["metadata"]["name"].as_str()?.to_string(),
        target_kind: spec["scaleTargetRef"]["kind"]
            .as_str()
            .unwrap_or("Deployment")
            .to_string(),
        target_name: spec["scaleTargetRef"]["name"].as_str()?.to_string(),
        min_replicas: int(&spec["minReplicaCount"]).or(Some(0)),
        max_replicas: int(&spec["maxReplicaCount"]).or(Some(100)),
    })
}

/// The autoscalers in `all` that scale `w` (same namespace assumed).
pub fn of<'a>(w: &WorkloadSpec, all: &'a [AutoscalerSeen]) -> Vec<&'a AutoscalerSeen> {
    all.iter()
        .filter(|a| a.target_kind == w.kind && a.target_name == w.name)
        .collect()
}

/// Problems with `w`'s autoscalers in `region`: a maximum below the active count.
pub fn problems(w: &WorkloadSpec, region: &str, all: &[AutoscalerSeen]) -> Vec<String> {
    of(w, all)
        .into_iter()
        .filter_map(|a| {
            let max = a.max_replicas?;
            (max < w.active_replicas).then(|| {
                format!(
                    "{} {}/{} in {region} caps {} {}/{} at {max} replicas, below its active \
                     count {}",
                    a.kind, w.namespace, a.name, w.kind, w.namespace, w.name, w.active_replicas
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn web() -> WorkloadSpec {
        serde_json::from_value(
            json!({"kind": "Deployment", "namespace": "shop", "name": "web",
                                      "activeReplicas": 4, "standbyReplicas": 1}),
        )
        .expect("workload")
    }

    #[test]
    fn both_kinds_are_read_with_their_defaults() {
        let h = hpa(&json!({"metadata": {"name": "web"}, "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
            "maxReplicas": 3}}))
        .expect("hpa");
        assert_eq!((h.min_replicas, h.max_replicas), (Some(1), Some(3)));
        let k = scaled_object(&json!({"metadata": {"name": "web-so"}, "spec": {
            "scaleTargetRef": {"name": "web"}}}))
        .expect("scaled object");
        assert_eq!(
            (k.target_kind.as_str(), k.min_replicas, k.max_replicas),
            ("Deployment", Some(0), Some(100))
        );
        assert_eq!(hpa(&json!({"spec": "x"})), None);
        assert_eq!(scaled_object(&json!(null)), None);
        assert_eq!(
            hpa(&json!({"metadata": {"name": "x"}, "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "web"},
                "maxReplicas": 99999999999i64}}))
            .and_then(|h| h.max_replicas),
            None
        );
    }

    #[test]
    fn a_maximum_below_the_active_count_is_a_problem_for_that_workload_only() {
        let capped = hpa(&json!({"metadata": {"name": "web"}, "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3}}))
        .expect("hpa");
        let other = scaled_object(&json!({"metadata": {"name": "api"}, "spec": {
            "scaleTargetRef": {"name": "api"}, "maxReplicaCount": 1}}))
        .expect("scaled object");
        let roomy = scaled_object(&json!({"metadata": {"name": "web-so"}, "spec": {
            "scaleTargetRef": {"name": "web"}}}))
        .expect("scaled object");
        assert_eq!(
            problems(&web(), "usw2", &[capped, other.clone(), roomy.clone()]),
            vec![
                "HorizontalPodAutoscaler shop/web in usw2 caps Deployment shop/web at 3 \
                 replicas, below its active count 4"
                    .to_string()
            ]
        );
        assert!(problems(&web(), "usw2", &[other, roomy]).is_empty());
    }
}
