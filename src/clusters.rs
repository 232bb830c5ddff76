//! Workload effectors in region clusters, behind a narrow trait.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, pinned_kind};
use tokio::sync::Mutex;

use crate::api::{DisasterRecoveryPlanSpec, RegionSpec, WorkloadSpec};
use crate::member;

pub use crate::engine::WorkloadState;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterError {
    /// The cluster could not be reached (connection, timeout).
    Unreachable(String),
    /// Worth retrying (429, 5xx).
    Transient(String),
    /// Anything else, verbatim.
    Permanent(String),
}

impl ClusterError {
    pub fn message(&self) -> &str {
        match self {
            Self::Unreachable(m) | Self::Transient(m) | Self::Permanent(m) => m,
        }
    }

    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Permanent(_))
    }
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

fn classify(region: &str, e: kube::Error) -> ClusterError {
    match e {
        kube::Error::Api(s) if s.code == 429 || s.code >= 500 => {
            ClusterError::Transient(format!("region {region}: {}", s.message))
        }
        kube::Error::Api(s) => ClusterError::Permanent(format!("region {region}: {}", s.message)),
        other => ClusterError::Unreachable(format!("region {region}: {other}")),
    }
}

/// Reads and scales the plan's workloads in region clusters.
#[async_trait]
pub trait Clusters: Send + Sync {
    /// None when the workload does not exist there.
    async fn workload(
        &self,
        region: &str,
        w: &WorkloadSpec,
    ) -> Result<Option<WorkloadState>, ClusterError>;
    /// Sets the replica count; returns the count the API server kept (a webhook or policy
    /// may keep another).
    async fn scale(
        &self,
        region: &str,
        w: &WorkloadSpec,
        replicas: i32,
    ) -> Result<i32, ClusterError>;
    /// How many pods match `selector` in the workload's namespace, Terminating ones
    /// included: `status.replicas` does not count those, but they still run.
    async fn pods(
        &self,
        region: &str,
        w: &WorkloadSpec,
        selector: &str,
    ) -> Result<usize, ClusterError>;
}

#[async_trait]
impl<T: Clusters + ?Sized> Clusters for std::sync::Arc<T> {
    async fn workload(
        &self,
        region: &str,
        w: &WorkloadSpec,
    ) -> Result<Option<WorkloadState>, ClusterError> {
        (**self).workload(region, w).await
    }
    async fn scale(
        &self,
        region: &str,
        w: &WorkloadSpec,
        replicas: i32,
    ) -> Result<i32, ClusterError> {
        (**self).scale(region, w, replicas).await
    }
    async fn pods(
        &self,
        region: &str,
        w: &WorkloadSpec,
        selector: &str,
    ) -> Result<usize, ClusterError> {
        (**self).pods(region, w, selector).await
    }
}

/// How long a region client is reused before it is built again, so that a rotated
/// kubeconfig Secret is read again.
const KEEP_CLIENTS_FOR: Duration = Duration::from_secs(60);

/// Region clients kept at most (distinct namespace, region and cluster access).
const MAX_KEPT_CLIENTS: usize = 256;

/// A client rebuilt from an unchanged kubeconfig is kept at most this long, and never
/// within this margin of its credentials' expiry: certificate files and exec plugins are
/// read only when a client is built.
const MAX_CLIENT_AGE: Duration = Duration::from_secs(600);
const EXPIRY_MARGIN: Duration = Duration::from_secs(120);

/// Region-cluster clients and the kinds discovered through them, shared by the plan
/// checks, the fencing of a returning region and the Failovers. Building a client reads a
/// Secret and opens connections, and each kind needs a discovery call: a failover's first
/// pass would otherwise pay for all of it before it can fence. The plan checks refresh
/// the clients they use, so a failover usually finds them ready.
#[derive(Default)]
pub struct RegionClients {
    kept: std::sync::Mutex<HashMap<String, KeptClient>>,
}

struct KeptClient {
    /// When it was last confirmed by a plan check (built or rebuilt unchanged).
    built: Instant,
    /// When this client was built.
    created: Instant,
    client: Client,
    /// What it was built from (`member::client_for_region`).
    fingerprint: u64,
    kinds: HashMap<String, ApiResource>,
}

/// Whether a client's credentials (from an exec plugin) are good for a while yet.
fn still_valid(client: &Client) -> bool {
    let margin = k8s_openapi::jiff::SignedDuration::try_from(EXPIRY_MARGIN).unwrap_or_default();
    client
        .valid_until()
        .is_none_or(|until| until > k8s_openapi::jiff::Timestamp::now() + margin)
}

impl RegionClients {
    /// What identifies a client: the plan namespace (where a Secret reference without a
    /// namespace points) and the region's cluster access.
    fn key(namespace: &str, region: &RegionSpec) -> String {
        let access = serde_json::to_string(&region.cluster).unwrap_or_default();
        format!("{namespace}/{}/{access}", region.name)
    }

    fn client(&self, key: &str) -> Option<Client> {
        let kept = self.kept.lock().ok()?;
        kept.get(key)
            .filter(|k| k.built.elapsed() < KEEP_CLIENTS_FOR)
            .map(|k| k.client.clone())
    }

    /// Shares a freshly built client, and returns the one to use: the kept one when it was
    /// built from the same access (its connections are open, its kinds discovered), else
    /// this one.
    fn keep(&self, key: &str, client: &Client, fingerprint: u64) -> Client {
        let Ok(mut kept) = self.kept.lock() else {
            return client.clone();
        };
        if let Some(k) = kept.get_mut(key)
            && k.fingerprint == fingerprint
            && k.created.elapsed() < MAX_CLIENT_AGE
            && still_valid(&k.client)
        {
            k.built = Instant::now();
            return k.client.clone();
        }
        if kept.len() >= MAX_KEPT_CLIENTS && !kept.contains_key(key) {
            kept.clear();
        }
        kept.insert(
            key.to_string(),
            KeptClient {
                built: Instant::now(),
                created: Instant::now(),
                client: client.clone(),
                fingerprint,
                kinds: HashMap::new(),
            },
        );
        client.clone()
    }

    /// Drops a client whose access no longer works (a Secret deleted or made invalid), so
    /// that nothing keeps using the old one.
    fn forget(&self, key: &str) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.remove(key);
        }
    }

    fn kind(&self, key: &str, kind: &str) -> Option<ApiResource> {
        let kept = self.kept.lock().ok()?;
        kept.get(key)?.kinds.get(kind).cloned()
    }

    fn keep_kind(&self, key: &str, kind: &str, resource: &ApiResource) {
        if let Ok(mut kept) = self.kept.lock()
            && let Some(k) = kept.get_mut(key)
        {
            k.kinds.insert(kind.to_string(), resource.clone());
        }
    }
}

/// Workloads a plan check reads at once in one region.
const CHECK_READS: usize = 16;

/// The kube implementation: one client per region, built from the plan's cluster access,
/// or taken from the shared `RegionClients` while it is recent.
pub struct KubeClusters {
    mgmt: Client,
    spec: DisasterRecoveryPlanSpec,
    namespace: String,
    timeout: Duration,
    shared: Arc<RegionClients>,
    /// Build new clients (and share them) instead of reusing shared ones.
    refresh: bool,
    clients: Mutex<HashMap<String, (String, Client)>>,
}

impl KubeClusters {
    pub fn new(
        mgmt: Client,
        spec: DisasterRecoveryPlanSpec,
        namespace: String,
        timeout: Duration,
        shared: Arc<RegionClients>,
    ) -> Self {
        Self {
            mgmt,
            spec,
            namespace,
            timeout,
            shared,
            refresh: false,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Builds its clients anew (reading the kubeconfig Secrets again) and shares them.
    pub fn refreshing(mut self) -> Self {
        self.refresh = true;
        self
    }

    /// The region's client, and its key in the shared clients.
    async fn client(&self, region: &str) -> Result<(String, Client), ClusterError> {
        if let Some(c) = self.clients.lock().await.get(region) {
            return Ok(c.clone());
        }
        let spec = self
            .spec
            .regions
            .iter()
            .find(|r| r.name == region)
            .ok_or_else(|| {
                ClusterError::Permanent(format!("region {region} is not in the plan"))
            })?;
        let key = RegionClients::key(&self.namespace, spec);
        let client = match self.shared.client(&key).filter(|_| !self.refresh) {
            Some(client) => client,
            None => {
                match member::client_for_region(&self.mgmt, spec, &self.namespace, self.timeout)
                    .await
                {
                    Ok((client, fingerprint)) => self.shared.keep(&key, &client, fingerprint),
                    // The access is broken: nothing may keep using the old client.
                    Err(e @ ClusterError::Permanent(_)) => {
                        self.shared.forget(&key);
                        return Err(e);
                    }
                    // The management API server did not answer: ask again next pass.
                    Err(e) => return Err(e),
                }
            }
        };
        self.clients
            .lock()
            .await
            .insert(region.to_string(), (key.clone(), client.clone()));
        Ok((key, client))
    }

    /// Checks a region for the plan: the cluster answers and every workload exists there.
    /// Returns the server version, or every problem found.
    pub async fn check_region(&self, region: &str) -> Result<String, String> {
        let (_, client) = self.client(region).await.map_err(|e| e.to_string())?;
        let version = client
            .apiserver_version()
            .await
            .map_err(|e| format!("cluster unreachable: {e}"))?;
        // Concurrently (a bounded number at a time), as a failover reads them: the
        // connections it opens stay open for the failover's first pass.
        // Owned indexes and region: the futures must be Send for any lifetime.
        use futures::StreamExt;
        let owned_region = region.to_string();
        let found: Vec<_> = futures::stream::iter(0..self.spec.workloads.len())
            .map(|i| {
                let region = owned_region.clone();
                async move { (i, self.workload(&region, &self.spec.workloads[i]).await) }
            })
            .buffered(CHECK_READS)
            .collect()
            .await;
        let mut problems = Vec::new();
        for (w, found) in found
            .into_iter()
            .map(|(i, found)| (&self.spec.workloads[i], found))
        {
            match found {
                Ok(Some(_)) => {}
                Ok(None) => {
                    problems.push(format!("{} {}/{} not found", w.kind, w.namespace, w.name))
                }
                Err(e) => problems.push(format!("{} {}/{}: {e}", w.kind, w.namespace, w.name)),
            }
        }
        if problems.is_empty() {
            Ok(version.git_version)
        } else {
            Err(problems.join("; "))
        }
    }

    async fn api(
        &self,
        region: &str,
        w: &WorkloadSpec,
    ) -> Result<Api<DynamicObject>, ClusterError> {
        let (key, client) = self.client(region).await?;
        let api_version = w
            .effective_api_version()
            .ok_or_else(|| ClusterError::Permanent(format!("{}: no apiVersion", w.kind)))?;
        let kind = format!("{api_version}/{}", w.kind);
        let resource = match self.shared.kind(&key, &kind) {
            Some(r) => r,
            None => {
                let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
                let gvk = GroupVersionKind::gvk(group, version, &w.kind);
                let (resource, _) = pinned_kind(&client, &gvk)
                    .await
                    .map_err(|e| classify(region, e))?;
                self.shared.keep_kind(&key, &kind, &resource);
                resource
            }
        };
        Ok(Api::namespaced_with(client, &w.namespace, &resource))
    }
}

/// A workload's pod selector in label-selector syntax: `spec.selector` (matchLabels and
/// matchExpressions), else the `status.selector` string that custom kinds publish.
fn selector(obj: &DynamicObject) -> Option<String> {
    let spec = &obj.data["spec"]["selector"];
    if spec.is_object() {
        let mut terms: Vec<String> = spec["matchLabels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        for e in spec["matchExpressions"].as_array().into_iter().flatten() {
            let key = e["key"].as_str()?;
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
                .collect();
            terms.push(match e["operator"].as_str()? {
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" => key.to_string(),
                "DoesNotExist" => format!("!{key}"),
                // An operator this code does not know: no selector rather than a wrong one.
                _ => return None,
            });
        }
        return (!terms.is_empty()).then(|| terms.join(","));
    }
    obj.data["status"]["selector"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn images(obj: &DynamicObject) -> Vec<String> {
    let pod = &obj.data["spec"]["template"]["spec"];
    ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod[k].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["image"].as_str().map(str::to_string))
        .collect()
}

#[async_trait]
impl Clusters for KubeClusters {
    async fn workload(
        &self,
        region: &str,
        w: &WorkloadSpec,
    ) -> Result<Option<WorkloadState>, ClusterError> {
        let api = self.api(region, w).await?;
        let obj = match tokio::time::timeout(self.timeout, api.get_opt(&w.name)).await {
            Err(_) => {
                return Err(ClusterError::Unreachable(format!(
                    "region {region}: no answer within {:?}",
                    self.timeout
                )));
            }
            Ok(r) => r.map_err(|e| classify(region, e))?,
        };
        Ok(obj.map(|o| {
            let int = |v: &serde_json::Value| v.as_i64().unwrap_or(0) as i32;
            let generation = o.metadata.generation.unwrap_or(0);
            let status = &o.data["status"];
            WorkloadState {
                replicas: o.data["spec"]["replicas"]
                    .as_i64()
                    .map(|r| r as i32)
                    .unwrap_or(1),
                current_replicas: int(&status["replicas"]),
                ready_replicas: int(&status["readyReplicas"]),
                observed_current: status["observedGeneration"].as_i64().unwrap_or(0) >= generation,
                images: images(&o),
                selector: selector(&o),
            }
        }))
    }

    async fn pods(
        &self,
        region: &str,
        w: &WorkloadSpec,
        selector: &str,
    ) -> Result<usize, ClusterError> {
        let (_, client) = self.client(region).await?;
        let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, &w.namespace);
        let params = kube::api::ListParams::default().labels(selector);
        match tokio::time::timeout(self.timeout, api.list(&params)).await {
            Err(_) => Err(ClusterError::Unreachable(format!(
                "region {region}: no answer within {:?}",
                self.timeout
            ))),
            // Succeeded and Failed (e.g. Evicted) pods run nothing: only the others count.
            Ok(r) => r
                .map(|list| {
                    list.items
                        .iter()
                        .filter(|p| {
                            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                            !matches!(phase, Some("Succeeded") | Some("Failed"))
                        })
                        .count()
                })
                .map_err(|e| classify(region, e)),
        }
    }

    async fn scale(
        &self,
        region: &str,
        w: &WorkloadSpec,
        replicas: i32,
    ) -> Result<i32, ClusterError> {
        let api = self.api(region, w).await?;
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        let params = PatchParams::default();
        let merge = Patch::Merge(&patch);
        let call = api.patch_scale(&w.name, &params, &merge);
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(ClusterError::Unreachable(format!(
                "region {region}: no answer within {:?}",
                self.timeout
            ))),
            Ok(r) => r
                .map(|scale| scale.spec.and_then(|s| s.replicas).unwrap_or(0))
                .map_err(|e| classify(region, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ClusterAccess, SecretKeyRef};

    fn region(name: &str, secret: &str) -> RegionSpec {
        RegionSpec {
            name: name.into(),
            aws_region: "us-east-1".into(),
            cluster: ClusterAccess {
                kubeconfig_secret_ref: Some(SecretKeyRef {
                    name: secret.into(),
                    namespace: None,
                    key: None,
                }),
                in_cluster: None,
            },
            initial_role: crate::api::RegionRole::Standby,
        }
    }

    /// A client that never connects: the cache only stores it.
    fn client() -> Client {
        // As main does: the process picks rustls' ring provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a valid URL"));
        Client::try_from(config).expect("a client from a plain config")
    }

    #[tokio::test]
    async fn shared_clients_are_kept_per_namespace_region_and_cluster_access() {
        let shared = RegionClients::default();
        let key = RegionClients::key("team-a", &region("use1", "use1-kubeconfig"));
        assert!(shared.client(&key).is_none());
        shared.keep(&key, &client(), 1);
        assert!(shared.client(&key).is_some());
        // Another namespace resolves a namespace-less Secret reference elsewhere, and
        // another Secret is another cluster: neither may reuse this client.
        for other in [
            RegionClients::key("team-b", &region("use1", "use1-kubeconfig")),
            RegionClients::key("team-a", &region("use1", "rotated-kubeconfig")),
            RegionClients::key("team-a", &region("usw2", "use1-kubeconfig")),
        ] {
            assert_ne!(other, key);
            assert!(shared.client(&other).is_none());
        }
        let deployment = ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&());
        shared.keep_kind(&key, "apps/v1/Deployment", &deployment);
        assert_eq!(
            shared.kind(&key, "apps/v1/Deployment").map(|r| r.plural),
            Some("deployments".to_string())
        );
        // Rebuilt from the same access, the kept client (its open connections, its kinds)
        // goes on; from other access (a rotated kubeconfig), a new one starts over.
        shared.keep(&key, &client(), 1);
        assert!(shared.kind(&key, "apps/v1/Deployment").is_some());
        shared.keep(&key, &client(), 2);
        assert!(shared.kind(&key, "apps/v1/Deployment").is_none());
        // Credentials about to expire (an exec plugin's) are not kept: the plugin runs again.
        let now = k8s_openapi::jiff::Timestamp::now();
        let expiring =
            client().with_valid_until(Some(now + k8s_openapi::jiff::SignedDuration::from_secs(30)));
        shared.keep(&key, &expiring, 3);
        shared.keep_kind(&key, "apps/v1/Deployment", &deployment);
        shared.keep(&key, &client(), 3);
        assert!(shared.kind(&key, "apps/v1/Deployment").is_none());
        let lasting = client().with_valid_until(Some(
            now + k8s_openapi::jiff::SignedDuration::from_secs(3600),
        ));
        shared.keep(&key, &lasting, 4);
        shared.keep_kind(&key, "apps/v1/Deployment", &deployment);
        shared.keep(&key, &client(), 4);
        assert!(shared.kind(&key, "apps/v1/Deployment").is_some());
        // Access that stopped working is not served from the cache any more.
        shared.forget(&key);
        assert!(shared.client(&key).is_none());
    }

    fn object(data: serde_json::Value) -> DynamicObject {
        let mut obj = DynamicObject::new(
            "w",
            &ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
        );
        obj.data = data;
        obj
    }

    #[test]
    fn selectors_keep_every_term() {
        let obj = object(serde_json::json!({"spec": {"selector": {
        "matchLabels": {"app": "cron"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ]}}}));
        assert_eq!(
            selector(&obj).as_deref(),
            Some("app=cron,tier in (a,b),!canary")
        );
        let custom = object(serde_json::json!({"status": {"selector": "app=x"}}));
        assert_eq!(selector(&custom).as_deref(), Some("app=x"));
        let unknown = object(serde_json::json!({"spec": {"selector": {
            "matchExpressions": [{"key": "k", "operator": "Gt", "values": ["1"]}]}}}));
        assert_eq!(
            selector(&unknown),
            None,
            "never a selector wider than the real one"
        );
    }
}
