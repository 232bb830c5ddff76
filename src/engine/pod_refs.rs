//! The Secrets and ConfigMaps a pod template needs, read from the template as the API
//! server returns it: a standby whose pods reference a Secret that exists only in the
//! primary region's cluster does not start ("secret not found"), so preflight looks for
//! each in the target cluster before anything is fenced.

use serde_json::Value;

/// The kind of object a pod template references.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefKind {
    Secret,
    ConfigMap,
    /// Without it the ReplicaSet creates no pods (IRSA ServiceAccounts are per cluster).
    ServiceAccount,
}

impl RefKind {
    pub fn name(self) -> &'static str {
        match self {
            RefKind::Secret => "Secret",
            RefKind::ConfigMap => "ConfigMap",
            RefKind::ServiceAccount => "ServiceAccount",
        }
    }
}

/// An object a pod template cannot start without (in the workload's namespace).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    pub kind: RefKind,
    pub name: String,
    /// Where the template refers to it first: env, envFrom, volume, imagePullSecrets.
    pub via: &'static str,
}

/// Every Secret, ConfigMap and ServiceAccount `pod_spec` (a pod template's `spec`) needs:
/// those referenced from containers' and init containers' `env` and `envFrom`, from volumes
/// (projected sources, CSI `nodePublishSecretRef` and the in-tree plugins' secret
/// references included), `imagePullSecrets`, and its `serviceAccountName` other than
/// `default` (which every namespace has). References marked `optional: true` are left out
/// (the pod starts without them). Each object once, in the order first seen. Keys inside
/// them are not checked: only metadata is read.
pub fn required(pod_spec: &Value) -> Vec<PodRef> {
    let mut out: Vec<PodRef> = Vec::new();
    let mut add = |kind: RefKind, r: &Value, key: &str, via: &'static str| {
        let Some(name) = r[key].as_str().filter(|n| !n.is_empty()) else {
            return;
        };
        if r["optional"].as_bool() == Some(true)
            || out.iter().any(|p| p.kind == kind && p.name == name)
        {
            return;
        }
        out.push(PodRef {
            kind,
            name: name.to_string(),
            via,
        });
    };
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    for container in ["initContainers", "containers"]
        .iter()
        .flat_map(|k| list(&pod_spec[k]))
    {
        for env in list(&container["env"]) {
            let from = &env["valueFrom"];
            add(RefKind::Secret, &from["secretKeyRef"], "name", "env");
            add(RefKind::ConfigMap, &from["configMapKeyRef"], "name", "env");
        }
        for env_from in list(&container["envFrom"]) {
            add(RefKind::Secret, &env_from["secretRef"], "name", "envFrom");
            add(
                RefKind::ConfigMap,
                &env_from["configMapRef"],
                "name",
                "envFrom",
            );
        }
    }
    for volume in list(&pod_spec["volumes"]) {
        add(RefKind::Secret, &volume["secret"], "secretName", "volume");
        add(RefKind::ConfigMap, &volume["configMap"], "name", "volume");
        for source in list(&volume["projected"]["sources"]) {
            add(RefKind::Secret, &source["secret"], "name", "volume");
            add(RefKind::ConfigMap, &source["configMap"], "name", "volume");
        }
        add(
            RefKind::Secret,
            &volume["csi"]["nodePublishSecretRef"],
            "name",
            "volume",
        );
        add(
            RefKind::Secret,
            &volume["azureFile"],
            "secretName",
            "volume",
        );
        for plugin in [
            "cephfs",
            "rbd",
            "iscsi",
            "flexVolume",
            "scaleIO",
            "storageos",
        ] {
            add(
                RefKind::Secret,
                &volume[plugin]["secretRef"],
                "name",
                "volume",
            );
        }
    }
    for pull in list(&pod_spec["imagePullSecrets"]) {
        add(RefKind::Secret, &pull, "name", "imagePullSecrets");
    }
    if pod_spec["serviceAccountName"].as_str() != Some("default") {
        add(
            RefKind::ServiceAccount,
            pod_spec,
            "serviceAccountName",
            "serviceAccountName",
        );
    }
    out
}

/// The problem line for a workload whose references are missing from `region`, or None.
pub fn missing_message(
    workload: &str,
    namespace: &str,
    region: &str,
    missing: &[PodRef],
) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    let listed: Vec<String> = missing
        .iter()
        .map(|r| format!("{} {namespace}/{} ({})", r.kind.name(), r.name, r.via))
        .collect();
    Some(format!(
        "{workload} needs objects missing from {region}: {}",
        listed.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_of_reference_is_found_once_and_optional_ones_are_left_out() {
        let spec = json!({
            "initContainers": [{"name": "migrate",
                "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}]}],
            "containers": [{"name": "app",
                "env": [
                    {"name": "B", "value": "plain"},
                    {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "flags", "key": "x"}}},
                    {"name": "D", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                    {"name": "E", "valueFrom": {"secretKeyRef": {"name": "maybe", "key": "k", "optional": true}}},
                    {"name": "F", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                ],
                "envFrom": [{"secretRef": {"name": "api-keys"}}, {"configMapRef": {"name": "app-env"}},
                            {"configMapRef": {"name": "extra", "optional": true}}]}],
            "volumes": [
                {"name": "v1", "secret": {"secretName": "tls"}},
                {"name": "v2", "configMap": {"name": "nginx-conf"}},
                {"name": "v3", "projected": {"sources": [
                    {"secret": {"name": "bundle"}}, {"configMap": {"name": "ca"}},
                    {"serviceAccountToken": {"path": "token"}}]}},
                {"name": "v4", "emptyDir": {}},
                {"name": "v5", "secret": {"secretName": "opt", "optional": true}},
                {"name": "v6", "csi": {"driver": "secrets-store.csi.k8s.io",
                                       "nodePublishSecretRef": {"name": "csi-creds"}}},
                {"name": "v7", "cephfs": {"monitors": ["m"], "secretRef": {"name": "ceph"}}}
            ],
            "imagePullSecrets": [{"name": "regcred"}],
            "serviceAccountName": "app"
        });
        let found: Vec<(RefKind, String, &str)> = required(&spec)
            .into_iter()
            .map(|r| (r.kind, r.name, r.via))
            .collect();
        use RefKind::*;
        assert_eq!(
            found,
            [
                (Secret, "db", "env"),
                (ConfigMap, "flags", "env"),
                (Secret, "api-keys", "envFrom"),
                (ConfigMap, "app-env", "envFrom"),
                (Secret, "tls", "volume"),
                (ConfigMap, "nginx-conf", "volume"),
                (Secret, "bundle", "volume"),
                (ConfigMap, "ca", "volume"),
                (Secret, "csi-creds", "volume"),
                (Secret, "ceph", "volume"),
                (Secret, "regcred", "imagePullSecrets"),
                (ServiceAccount, "app", "serviceAccountName"),
            ]
            .map(|(k, n, v)| (k, n.to_string(), v))
        );
    }

    #[test]
    fn garbage_gives_no_references_and_no_panic() {
        for spec in [
            json!(null),
            json!("x"),
            json!({"containers": "x", "volumes": [1, null, {"secret": 3}]}),
            json!({"containers": [{"env": [{"valueFrom": {"secretKeyRef": {"name": ""}}}]}]}),
            json!({"serviceAccountName": "default"}),
        ] {
            assert_eq!(required(&spec), vec![]);
        }
    }

    #[test]
    fn the_message_names_each_missing_object_and_where_it_is_used() {
        let missing = [
            PodRef {
                kind: RefKind::Secret,
                name: "db".into(),
                via: "env",
            },
            PodRef {
                kind: RefKind::ConfigMap,
                name: "flags".into(),
                via: "volume",
            },
        ];
        assert_eq!(
            missing_message("workload Deployment shop/web", "shop", "usw2", &missing).as_deref(),
            Some(
                "workload Deployment shop/web needs objects missing from usw2: Secret shop/db \
                 (env), ConfigMap shop/flags (volume)"
            )
        );
        assert_eq!(missing_message("w", "ns", "usw2", &[]), None);
    }
}
