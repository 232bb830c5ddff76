//! Clients for region (member) clusters, built from kubeconfigs held in Secrets.
//! Kubeconfig contents are never logged or returned in errors.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::api::RegionSpec;

/// Reads the key of a Secret; the error says which part is missing, never the value.
pub async fn read_secret_key(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<String, String> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| format!("reading Secret {namespace}/{name}: {e}"))?
        .ok_or_else(|| format!("Secret {namespace}/{name} not found"))?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| format!("Secret {namespace}/{name} has no key {key:?}"))?;
    String::from_utf8(bytes.0.clone())
        .map_err(|_| format!("Secret {namespace}/{name} key {key:?} is not UTF-8"))
}

/// Builds a client for a region's cluster, with a fingerprint of what it was built from
/// (the kubeconfig and the timeout): the same fingerprint means the same access. The
/// fingerprint is a hash, kept in memory only.
pub async fn client_for_region(
    mgmt: &Client,
    region: &RegionSpec,
    plan_namespace: &str,
    timeout: Duration,
) -> Result<(Client, u64), String> {
    use std::hash::{Hash, Hasher};
    let Some(secret) = &region.cluster.kubeconfig_secret_ref else {
        // inCluster: the operator's own cluster.
        return Ok((mgmt.clone(), 0));
    };
    let namespace = secret.namespace.as_deref().unwrap_or(plan_namespace);
    let text = read_secret_key(mgmt, namespace, &secret.name, secret.key_or_default()).await?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&text, timeout).hash(&mut hasher);
    let fingerprint = hasher.finish();
    let kubeconfig = Kubeconfig::from_yaml(&text).map_err(|e| {
        format!(
            "Secret {namespace}/{} key {:?} is not a valid kubeconfig: {}",
            secret.name,
            secret.key_or_default(),
            redact_kubeconfig_error(&e.to_string())
        )
    })?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("kubeconfig in Secret {namespace}/{}: {e}", secret.name))?;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    let client =
        Client::try_from(config).map_err(|e| format!("client for region {}: {e}", region.name))?;
    Ok((client, fingerprint))
}

/// YAML parse errors can quote the offending input; keep only the first line, which
/// names the position, and drop anything quoted.
fn redact_kubeconfig_error(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default();
    match first.find(['"', '\'', '`']) {
        Some(cut) => format!("{}…", &first[..cut]),
        None => first.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_errors_do_not_quote_input() {
        let err = Kubeconfig::from_yaml("token: \"s3cret\nclusters: [").expect_err("invalid");
        let redacted = redact_kubeconfig_error(&err.to_string());
        assert!(!redacted.contains("s3cret"), "{redacted}");
    }
}
