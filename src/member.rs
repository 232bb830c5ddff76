//! Clients for region (member) clusters, built from kubeconfigs held in Secrets.
//! Kubeconfig contents are never logged or returned in errors.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::api::RegionSpec;
use crate::clusters::ClusterError;

/// Reads the key of a Secret; the error says which part is missing, never the value. A
/// read the management API server did not answer (unreachable, 429, 5xx) is transient:
/// a blip must not fail a failover step as a broken Secret would.
pub async fn read_secret_key(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<String, ClusterError> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| {
            let message = match &e {
                kube::Error::Api(s) if s.code == 403 => format!(
                    "the operator may not read Secret {namespace}/{name}: {}",
                    crate::error::status_message(s)
                ),
                _ => format!(
                    "cannot read Secret {namespace}/{name}: {}",
                    crate::error::kube_message(&e)
                ),
            };
            match e {
                kube::Error::Api(s) if s.code != 429 && s.code < 500 => {
                    ClusterError::Permanent(message)
                }
                _ => ClusterError::Transient(message),
            }
        })?
        .ok_or_else(|| ClusterError::Permanent(format!("Secret {namespace}/{name} not found")))?;
    secret_key_text(&secret, namespace, name, key)
}

/// The text of `key` in a Secret already read; the error says which part is missing,
/// never the value.
pub fn secret_key_text(
    secret: &Secret,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<String, ClusterError> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| {
            ClusterError::Permanent(format!("Secret {namespace}/{name} has no key {key:?}"))
        })?;
    String::from_utf8(bytes.0.clone()).map_err(|_| {
        ClusterError::Permanent(format!(
            "Secret {namespace}/{name} key {key:?} is not UTF-8"
        ))
    })
}

/// Builds a client for a region's cluster, with a fingerprint of what it was built from
/// (the kubeconfig and the timeout): the same fingerprint means the same access. Also a
/// client for long watches, built from the same access without a read timeout. The
/// fingerprint is a hash, kept in memory only. `read` is the kubeconfig Secret when the
/// caller has just read it (the plan check reads it for validation); it is read otherwise.
pub async fn client_for_region(
    mgmt: &Client,
    region: &RegionSpec,
    plan_namespace: &str,
    timeout: Duration,
    read: Option<&Secret>,
) -> Result<(Client, Client, u64), ClusterError> {
    use std::hash::{Hash, Hasher};
    let Some(secret) = &region.cluster.kubeconfig_secret_ref else {
        // inCluster: the operator's own cluster.
        return Ok((mgmt.clone(), mgmt.clone(), 0));
    };
    let namespace = secret.namespace.as_deref().unwrap_or(plan_namespace);
    let key = secret.key_or_default();
    let text = match read {
        Some(read) => secret_key_text(read, namespace, &secret.name, key)?,
        None => read_secret_key(mgmt, namespace, &secret.name, key).await?,
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&text, timeout).hash(&mut hasher);
    let fingerprint = hasher.finish();
    let kubeconfig = Kubeconfig::from_yaml(&text).map_err(|e| {
        ClusterError::Permanent(format!(
            "Secret {namespace}/{} key {:?} is not a valid kubeconfig: {}",
            secret.name,
            secret.key_or_default(),
            redact_kubeconfig_error(&e.to_string())
        ))
    })?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| {
            ClusterError::Permanent(format!(
                "kubeconfig in Secret {namespace}/{}: {e}",
                secret.name
            ))
        })?;
    config.connect_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    // Watches stay quiet for minutes: the watch client has no read timeout (the server
    // ends each watch within 5 minutes, and the plan checks' version probe notices a
    // cluster that stopped answering).
    let mut watch_config = config.clone();
    watch_config.read_timeout = None;
    config.read_timeout = Some(timeout);
    let build = |config: Config| {
        Client::try_from(config).map_err(|e| {
            ClusterError::Permanent(format!(
                "cannot build a client from the kubeconfig in Secret {namespace}/{}: {}",
                secret.name,
                crate::error::kube_message(&e)
            ))
        })
    };
    Ok((build(config)?, build(watch_config)?, fingerprint))
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

#[cfg(test)]
mod answer_tests {
    use super::*;
    use kube::client::Body;

    /// A client whose API server answers every request with `status` and `body`.
    fn answering(status: u16, body: &'static str) -> Client {
        let service = tower::service_fn(move |_req: http::Request<Body>| async move {
            http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(body.as_bytes().to_vec()))
        });
        Client::new(service, "default")
    }

    fn status(code: u16, reason: &str) -> &'static str {
        Box::leak(
            format!(
                r#"{{"kind":"Status","apiVersion":"v1","status":"Failure","message":"{reason}","reason":"{reason}","code":{code}}}"#
            )
            .into_boxed_str(),
        )
    }

    /// A management API server that does not answer is a blip, retried; a Secret that is
    /// missing, forbidden or incomplete is a broken access, reported.
    #[tokio::test]
    async fn an_unanswered_secret_read_is_transient_and_a_broken_secret_is_not() {
        for code in [429, 500, 503] {
            let err = read_secret_key(&answering(code, status(code, "x")), "ns", "s", "k")
                .await
                .expect_err("an error");
            assert!(matches!(err, ClusterError::Transient(_)), "{code}: {err:?}");
        }
        for code in [403, 404] {
            let err = read_secret_key(&answering(code, status(code, "x")), "ns", "s", "k")
                .await
                .expect_err("an error");
            assert!(matches!(err, ClusterError::Permanent(_)), "{code}: {err:?}");
        }
        // Told in a sentence, never kube's dump of the API's Status.
        let forbidden = read_secret_key(&answering(403, status(403, "no")), "ns", "s", "k").await;
        assert_eq!(
            forbidden.map_err(|e| e.to_string()),
            Err("the operator may not read Secret ns/s: no".into())
        );
        let failing = read_secret_key(&answering(500, status(500, "etcd")), "ns", "s", "k").await;
        assert_eq!(
            failing.map_err(|e| e.to_string()),
            Err("cannot read Secret ns/s: etcd".into())
        );
        let no_key = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"data":{}}"#;
        let err = read_secret_key(&answering(200, no_key), "ns", "s", "k")
            .await
            .expect_err("no key");
        assert!(matches!(err, ClusterError::Permanent(ref m) if m.contains("has no key")));
    }

    /// A kubeconfig Secret the caller just read is built from as it is: the management API
    /// server (here one that fails every request) is not asked for it again.
    #[tokio::test]
    async fn a_secret_already_read_is_not_read_again() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let region: RegionSpec = serde_json::from_value(serde_json::json!({
            "name": "use1", "awsRegion": "us-east-1", "initialRole": "Active",
            "cluster": {"kubeconfigSecretRef": {"name": "use1-kubeconfig"}}
        }))
        .expect("a region");
        let kubeconfig = "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
            clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n\
            users: [{name: u, user: {token: t}}]\n\
            contexts: [{name: c, context: {cluster: c, user: u}}]\n";
        let secret = Secret {
            data: Some(std::collections::BTreeMap::from([(
                "kubeconfig".to_string(),
                k8s_openapi::ByteString(kubeconfig.as_bytes().to_vec()),
            )])),
            ..Default::default()
        };
        let mgmt = answering(500, status(500, "etcd"));
        let timeout = Duration::from_secs(1);
        let built = client_for_region(&mgmt, &region, "ns", timeout, Some(&secret)).await;
        assert!(built.is_ok(), "{:?}", built.err());
        // Not read before: the failing management API server is asked, and says so.
        let unread = client_for_region(&mgmt, &region, "ns", timeout, None).await;
        assert!(matches!(unread, Err(ClusterError::Transient(m)) if m.contains("etcd")));
    }
}
