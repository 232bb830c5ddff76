//! Workload effectors in region clusters, behind a narrow trait.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, pinned_kind};
use tokio::sync::Mutex;

use std::collections::BTreeMap;

use crate::api::{ConfigKind, ConfigSpec, DisasterRecoveryPlanSpec, RegionSpec, WorkloadSpec};
use crate::engine::autoscalers::AutoscalerKind;
use crate::engine::pod_refs::RefKind;
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

impl ClusterError {
    /// The same error, its message prefixed with the region it came from.
    fn in_region(self, region: &str) -> Self {
        let prefix = |m: String| format!("region {region}: {m}");
        match self {
            Self::Unreachable(m) => Self::Unreachable(prefix(m)),
            Self::Transient(m) => Self::Transient(prefix(m)),
            Self::Permanent(m) => Self::Permanent(prefix(m)),
        }
    }
}

/// Whose credentials a region's cluster sees, as error messages name them.
pub fn credentials(region: &RegionSpec, plan_namespace: &str) -> String {
    match &region.cluster.kubeconfig_secret_ref {
        Some(secret) => format!(
            "the credentials in Secret {}/{}",
            secret.namespace.as_deref().unwrap_or(plan_namespace),
            secret.name
        ),
        None => "the operator's own credentials".into(),
    }
}

/// A region cluster's answer as one plain sentence, without the region (callers name it).
/// `credentials` is what `credentials()` says; `action` what was asked, as RBAC words it,
/// e.g. "patch deployments.apps/scale in namespace shop". The kind of error (unreachable,
/// transient, permanent) follows the answer, as the failover engine expects.
pub fn classify(e: kube::Error, credentials: &str, action: &str) -> ClusterError {
    use crate::error::{kube_message, root_cause, status_message};
    match &e {
        kube::Error::Api(s) if s.code == 401 => ClusterError::Permanent(format!(
            "the cluster rejected {credentials}: {}",
            status_message(s)
        )),
        // The server's message names the user, or the policy that said no.
        kube::Error::Api(s) if s.code == 403 => ClusterError::Permanent(format!(
            "{credentials} may not {action}: {}",
            status_message(s)
        )),
        kube::Error::Api(s) if s.code == 429 || s.code >= 500 => ClusterError::Transient(format!(
            "could not {action}: the API server answered {}: {}",
            s.code,
            status_message(s)
        )),
        kube::Error::Api(s) => {
            ClusterError::Permanent(format!("could not {action}: {}", status_message(s)))
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            ClusterError::Unreachable(format!("cannot reach the cluster: {}", root_cause(&e)))
        }
        kube::Error::Auth(_) => ClusterError::Unreachable(format!(
            "cannot authenticate with {credentials}: {}",
            root_cause(&e)
        )),
        _ => ClusterError::Unreachable(format!("could not {action}: {}", kube_message(&e))),
    }
}

/// An RBAC resource name, e.g. "deployments.apps" or "pods".
pub(crate) fn resource_name(r: &ApiResource) -> String {
    if r.group.is_empty() {
        r.plural.clone()
    } else {
        format!("{}.{}", r.plural, r.group)
    }
}

/// The pod template annotation `kubectl rollout restart` sets.
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// Jobs listed per request when looking for a CronJob's running ones, and the most pages
/// read (50,000 Jobs) before saying so rather than reading on.
const JOBS_PAGE: u32 = 500;
const JOB_PAGES_AT_MOST: u32 = 100;

/// A CronJob's Job that has not finished.
struct RunningJob {
    name: String,
    /// Being deleted (in the foreground: until its pods are gone).
    deleting: bool,
}

/// The API of an autoscaler kind in `namespace`, and its RBAC resource name.
fn autoscaler_api(
    client: Client,
    namespace: &str,
    kind: AutoscalerKind,
) -> (Api<DynamicObject>, String) {
    let (group, version, kind, plural) = kind.api();
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
    let name = resource_name(&resource);
    (Api::namespaced_with(client, namespace, &resource), name)
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
    /// Sets the replica count, the workload's autoscalers first (so that they do not fight
    /// it); returns the count the API server kept (a webhook or policy may keep another).
    async fn scale(
        &self,
        region: &str,
        w: &WorkloadSpec,
        replicas: i32,
        hold: bool,
    ) -> Result<i32, ClusterError>;
    /// How many pods match `selector` in the workload's namespace, Terminating ones
    /// included: `status.replicas` does not count those, but they still run.
    async fn pods(
        &self,
        region: &str,
        w: &WorkloadSpec,
        selector: &str,
    ) -> Result<usize, ClusterError>;
    /// Whether a Secret or ConfigMap exists. Reads its metadata only: a Secret's values
    /// never reach Drover.
    async fn object_exists(
        &self,
        region: &str,
        namespace: &str,
        kind: RefKind,
        name: &str,
    ) -> Result<bool, ClusterError>;
    /// The HorizontalPodAutoscalers and KEDA ScaledObjects of a namespace, whole (none of
    /// the latter where KEDA's CRD is not installed).
    async fn autoscalers(
        &self,
        region: &str,
        namespace: &str,
    ) -> Result<Vec<(AutoscalerKind, serde_json::Value)>, ClusterError>;
    /// The values of `keys` in a ConfigMap or Secret (a Secret's decoded), absent keys
    /// left out; None when the object does not exist. Values are compared, never shown.
    async fn config_values(
        &self,
        region: &str,
        cfg: &ConfigSpec,
        keys: &[String],
    ) -> Result<Option<BTreeMap<String, String>>, ClusterError>;
    /// Sets these keys of a ConfigMap or Secret, leaving its other keys alone.
    async fn write_config(
        &self,
        region: &str,
        cfg: &ConfigSpec,
        values: &BTreeMap<String, String>,
    ) -> Result<(), ClusterError>;
    /// Whether `write_config` with these values would be accepted, by a server-side dry run
    /// that changes nothing: the permission to patch, an `immutable` object, a key also in
    /// `binaryData`, admission webhooks.
    async fn config_writable(
        &self,
        region: &str,
        cfg: &ConfigSpec,
        values: &BTreeMap<String, String>,
    ) -> Result<(), ClusterError>;
    /// Restarts a workload as `kubectl rollout restart` does: the pod template annotation
    /// `kubectl.kubernetes.io/restartedAt` set to `at`.
    async fn restart(&self, region: &str, w: &WorkloadSpec, at: &str) -> Result<(), ClusterError>;
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
        hold: bool,
    ) -> Result<i32, ClusterError> {
        (**self).scale(region, w, replicas, hold).await
    }
    async fn pods(
        &self,
        region: &str,
        w: &WorkloadSpec,
        selector: &str,
    ) -> Result<usize, ClusterError> {
        (**self).pods(region, w, selector).await
    }
    async fn object_exists(
        &self,
        region: &str,
        namespace: &str,
        kind: RefKind,
        name: &str,
    ) -> Result<bool, ClusterError> {
        (**self).object_exists(region, namespace, kind, name).await
    }
    async fn config_values(
        &self,
        region: &str,
        cfg: &ConfigSpec,
        keys: &[String],
    ) -> Result<Option<BTreeMap<String, String>>, ClusterError> {
        (**self).config_values(region, cfg, keys).await
    }
    async fn write_config(
        &self,
        region: &str,
        cfg: &ConfigSpec,
        values: &BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        (**self).write_config(region, cfg, values).await
    }
    async fn config_writable(
        &self,
        region: &str,
        cfg: &ConfigSpec,
        values: &BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        (**self).config_writable(region, cfg, values).await
    }
    async fn restart(&self, region: &str, w: &WorkloadSpec, at: &str) -> Result<(), ClusterError> {
        (**self).restart(region, w, at).await
    }
    async fn autoscalers(
        &self,
        region: &str,
        namespace: &str,
    ) -> Result<Vec<(AutoscalerKind, serde_json::Value)>, ClusterError> {
        (**self).autoscalers(region, namespace).await
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
    /// The plan checks' watched views of the clusters behind these clients.
    views: crate::views::ClusterViews,
    /// The last server version each client's cluster answered, shared by the plan checks.
    versions: std::sync::Mutex<HashMap<String, VersionProbe>>,
}

/// One cluster's version probe: checks running at once wait for one request.
type VersionProbe = Arc<Mutex<Option<(Instant, String)>>>;

/// A cluster that answered its version this recently counts as reachable for a plan check
/// without asking again: hundreds of plans share a few clusters.
const VERSION_FRESH: Duration = Duration::from_secs(10);

struct KeptClient {
    /// When it was last confirmed by a plan check (built or rebuilt unchanged).
    built: Instant,
    /// When this client was built.
    created: Instant,
    client: Client,
    /// The same access without a read timeout, for the plan checks' watches.
    watch_client: Client,
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
    fn keep(&self, key: &str, client: &Client, watch_client: &Client, fingerprint: u64) -> Client {
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
                watch_client: watch_client.clone(),
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

    /// The watch client kept under `key`, and when it was built (a view through an older
    /// one restarts).
    fn watch_client(&self, key: &str) -> Option<(Client, Instant)> {
        let kept = self.kept.lock().ok()?;
        kept.get(key).map(|k| (k.watch_client.clone(), k.created))
    }

    /// The cluster's version, asked at most once per `VERSION_FRESH` for all plan checks
    /// through this access, each ask bounded by `timeout` (`Err(None)` when it ran out). A
    /// failure is not kept (each check says it), and stops the access's views: the
    /// cluster's objects are listed again when it answers.
    async fn version(
        &self,
        key: &str,
        client: &Client,
        timeout: Duration,
    ) -> Result<String, Option<kube::Error>> {
        let probe = match self.versions.lock() {
            Ok(mut versions) => {
                if versions.len() >= MAX_KEPT_CLIENTS && !versions.contains_key(key) {
                    versions.clear();
                }
                versions.entry(key.to_string()).or_default().clone()
            }
            Err(_) => Arc::default(),
        };
        let mut last = probe.lock().await;
        if let Some((at, version)) = last.as_ref()
            && at.elapsed() < VERSION_FRESH
        {
            return Ok(version.clone());
        }
        match tokio::time::timeout(timeout, client.apiserver_version()).await {
            Ok(Ok(v)) => {
                *last = Some((Instant::now(), v.git_version.clone()));
                Ok(v.git_version)
            }
            failed => {
                *last = None;
                self.views.forget(key);
                Err(failed.ok().and_then(Result::err))
            }
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
    /// Kubeconfig Secrets the caller just read, by namespace and name: a refresh builds
    /// from these instead of reading them again.
    read_secrets: HashMap<(String, String), k8s_openapi::api::core::v1::Secret>,
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
            read_secrets: HashMap::new(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Builds its clients anew and shares them: from the kubeconfig Secrets in `read`
    /// (by namespace and name), just read by the caller, or read again.
    pub fn refreshing(
        mut self,
        read: HashMap<(String, String), k8s_openapi::api::core::v1::Secret>,
    ) -> Self {
        self.refresh = true;
        self.read_secrets = read;
        self
    }

    fn region(&self, region: &str) -> Result<&RegionSpec, ClusterError> {
        self.spec
            .regions
            .iter()
            .find(|r| r.name == region)
            .ok_or_else(|| ClusterError::Permanent(format!("region {region} is not in the plan")))
    }

    /// Whose credentials the region's cluster sees, for error messages.
    fn credentials(&self, region: &str) -> String {
        self.region(region)
            .map(|r| credentials(r, &self.namespace))
            .unwrap_or_else(|_| "the region's credentials".into())
    }

    fn no_answer(&self) -> ClusterError {
        ClusterError::Unreachable(format!(
            "no answer within {}",
            humantime::format_duration(self.timeout)
        ))
    }

    /// The region's client, and its key in the shared clients. Errors here and below do not
    /// name the region: the `Clusters` methods add it, and the plan check's caller does.
    async fn client(&self, region: &str) -> Result<(String, Client), ClusterError> {
        if let Some(c) = self.clients.lock().await.get(region) {
            return Ok(c.clone());
        }
        let spec = self.region(region)?;
        let key = RegionClients::key(&self.namespace, spec);
        let client = match self.shared.client(&key).filter(|_| !self.refresh) {
            Some(client) => client,
            None => {
                let read = spec.cluster.kubeconfig_secret_ref.as_ref().and_then(|s| {
                    let ns = s
                        .namespace
                        .clone()
                        .unwrap_or_else(|| self.namespace.clone());
                    self.read_secrets.get(&(ns, s.name.clone()))
                });
                let built = member::client_for_region(
                    &self.mgmt,
                    spec,
                    &self.namespace,
                    self.timeout,
                    read,
                );
                match built.await {
                    Ok((client, watch_client, fingerprint)) => {
                        self.shared.keep(&key, &client, &watch_client, fingerprint)
                    }
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
    /// Returns the server version, or every problem found. Existence comes from the shared
    /// watched views (`views`), one per namespace and kind; a kind the credentials may not
    /// watch is read by GET, a bounded number at a time.
    pub async fn check_region(&self, region: &str) -> Result<String, String> {
        let (key, client) = self.client(region).await.map_err(|e| e.to_string())?;
        let credentials = self.credentials(region);
        let version = self
            .shared
            .version(&key, &client, self.timeout)
            .await
            .map_err(|e| match e {
                Some(e) => classify(e, &credentials, "read the server version").to_string(),
                None => self.no_answer().to_string(),
            })?;
        let workloads = &self.spec.workloads;
        let mut kinds: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, w) in workloads.iter().enumerate() {
            let kind = format!(
                "{}/{}",
                w.effective_api_version().unwrap_or_default(),
                w.kind
            );
            kinds.entry(kind).or_default().push(i);
        }
        let (watch_client, client_built) = self
            .shared
            .watch_client(&key)
            .unwrap_or_else(|| (client.clone(), Instant::now()));
        let source = || crate::views::Source {
            access: &key,
            client: &watch_client,
            client_built,
            credentials: &credentials,
        };
        // Every kind at once, each from one view across namespaces; where the credentials
        // may only list per namespace, from a view per namespace. Each waits at most the
        // timeout for its list.
        let seen = futures::future::join_all(kinds.into_values().map(|members| async move {
            let resource = match self.resource(region, &workloads[members[0]]).await {
                Ok((_, _, resource)) => resource,
                Err(e) => return vec![(members, crate::views::Seen::Failed(e.to_string()))],
            };
            let objects = |members: &[usize]| -> Vec<(&str, &str)> {
                members
                    .iter()
                    .map(|&i| (workloads[i].namespace.as_str(), workloads[i].name.as_str()))
                    .collect()
            };
            let views = &self.shared.views;
            // Half the timeout each, so a list across a large cluster that is still running
            // (or failed) falls back to the namespaces' own within the check's time.
            let wait = self.timeout / 2;
            let all = views
                .exist(source(), &resource, None, &objects(&members), wait)
                .await;
            if matches!(all, crate::views::Seen::Exists(_)) {
                return vec![(members, all)];
            }
            let mut by_namespace: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            for &i in &members {
                by_namespace
                    .entry(&workloads[i].namespace)
                    .or_default()
                    .push(i);
            }
            futures::future::join_all(by_namespace.into_iter().map(|(ns, members)| {
                let (resource, objects) = (&resource, objects(&members));
                async move {
                    let seen = views
                        .exist(source(), resource, Some(ns), &objects, wait)
                        .await;
                    (members, seen)
                }
            }))
            .await
        }))
        .await;
        // Per workload index: None when it is not found, else what went wrong.
        let mut problems: Vec<(usize, Option<String>)> = Vec::new();
        let mut by_get = Vec::new();
        for (members, seen) in seen.into_iter().flatten() {
            match seen {
                crate::views::Seen::Exists(found) => problems.extend(
                    members
                        .iter()
                        .zip(found)
                        .filter(|(_, found)| !found)
                        .map(|(&i, _)| (i, None)),
                ),
                crate::views::Seen::Failed(why) => {
                    problems.extend(members.iter().map(|&i| (i, Some(why.clone()))))
                }
                crate::views::Seen::NotWatchable => by_get.extend(members),
            }
        }
        // Concurrently (a bounded number at a time), as a failover reads them.
        // Owned indexes and region: the futures must be Send for any lifetime.
        use futures::StreamExt;
        let owned_region = region.to_string();
        let read: Vec<_> = futures::stream::iter(by_get)
            .map(|i| {
                let region = owned_region.clone();
                async move { (i, self.read(&region, &workloads[i]).await) }
            })
            .buffered(CHECK_READS)
            .collect()
            .await;
        for (i, found) in read {
            match found {
                Ok(Some(_)) => {}
                Ok(None) => problems.push((i, None)),
                Err(e) => problems.push((i, Some(e.to_string()))),
            }
        }
        if problems.is_empty() {
            return Ok(version);
        }
        problems.sort_by_key(|(i, _)| *i);
        let problems: Vec<String> = problems
            .into_iter()
            .map(|(i, problem)| {
                let w = &workloads[i];
                match problem {
                    None => format!("{} {}/{} not found", w.kind, w.namespace, w.name),
                    Some(problem) => format!("{} {}/{}: {problem}", w.kind, w.namespace, w.name),
                }
            })
            .collect();
        Err(problems.join("; "))
    }

    async fn api(
        &self,
        region: &str,
        w: &WorkloadSpec,
    ) -> Result<(Api<DynamicObject>, String), ClusterError> {
        let (_, client, resource) = self.resource(region, w).await?;
        let name = resource_name(&resource);
        Ok((Api::namespaced_with(client, &w.namespace, &resource), name))
    }

    /// The workload's kind in the region's cluster (discovered once per client), with the
    /// client and its key.
    async fn resource(
        &self,
        region: &str,
        w: &WorkloadSpec,
    ) -> Result<(String, Client, ApiResource), ClusterError> {
        let (key, client) = self.client(region).await?;
        let api_version = w
            .effective_api_version()
            .ok_or_else(|| ClusterError::Permanent(format!("{}: no apiVersion", w.kind)))?;
        let kind = format!("{api_version}/{}", w.kind);
        let resource = match self.shared.kind(&key, &kind) {
            Some(r) => r,
            None => {
                // CronJob without an apiVersion: batch/v1, or batch/v1beta1 on clusters
                // before Kubernetes 1.21.
                let fallback =
                    (w.api_version.is_none() && w.is_cron_job()).then_some("batch/v1beta1");
                let mut found = Err(None);
                for version in std::iter::once(api_version).chain(fallback) {
                    let (group, v) = version.split_once('/').unwrap_or(("", version));
                    let gvk = GroupVersionKind::gvk(group, v, &w.kind);
                    match pinned_kind(&client, &gvk).await {
                        Ok((resource, _)) => {
                            found = Ok(resource);
                            break;
                        }
                        // Only "not served" tries the next version; the first answer is
                        // the one to report.
                        Err(e) if matches!(found, Err(None)) => {
                            let not_served = matches!(&e, kube::Error::Discovery(_))
                                || matches!(&e, kube::Error::Api(s) if s.code == 404);
                            found = Err(Some(e));
                            if !not_served {
                                break;
                            }
                        }
                        Err(_) => {}
                    }
                }
                let resource = found.map_err(|e| {
                    let action = format!("read the API discovery of {api_version}");
                    match e {
                        Some(e) => classify(e, &self.credentials(region), &action),
                        None => ClusterError::Permanent(format!("could not {action}")),
                    }
                })?;
                self.shared.keep_kind(&key, &kind, &resource);
                resource
            }
        };
        Ok((key, client, resource))
    }
}

/// A workload's pod selector in label-selector syntax: `spec.selector` (matchLabels and
/// matchExpressions), else the `status.selector` string that custom kinds publish.
fn selector(obj: &DynamicObject) -> Option<String> {
    let spec = &obj.data["spec"]["selector"];
    if spec.is_object() {
        let mut terms = label_terms(&spec["matchLabels"]);
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

/// A label map as selector terms, "k=v".
fn label_terms(labels: &serde_json::Value) -> Vec<String> {
    labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect()
}

/// The images of a pod spec's containers and init containers.
fn images(pod: &serde_json::Value) -> Vec<String> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod[k].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["image"].as_str().map(str::to_string))
        .collect()
}

impl KubeClusters {
    /// A call to `region`'s API server, within the member timeout; its error as a sentence
    /// naming `action` (as RBAC words it).
    async fn answer<T>(
        &self,
        region: &str,
        call: impl std::future::Future<Output = Result<T, kube::Error>>,
        action: impl FnOnce() -> String,
    ) -> Result<T, ClusterError> {
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(self.no_answer()),
            Ok(r) => r.map_err(|e| classify(e, &self.credentials(region), &action())),
        }
    }

    async fn read(
        &self,
        region: &str,
        w: &WorkloadSpec,
    ) -> Result<Option<WorkloadState>, ClusterError> {
        let (api, resource) = self.api(region, w).await?;
        let obj = self
            .answer(region, api.get_opt(&w.name), || {
                format!("get {resource} in namespace {}", w.namespace)
            })
            .await?;
        let Some(o) = obj else { return Ok(None) };
        if w.is_cron_job() {
            return self.read_cron_job(region, w, &o).await.map(Some);
        }
        let int = |v: &serde_json::Value| v.as_i64().unwrap_or(0) as i32;
        let generation = o.metadata.generation.unwrap_or(0);
        let status = &o.data["status"];
        Ok(Some(WorkloadState {
            replicas: o.data["spec"]["replicas"]
                .as_i64()
                .map(|r| r as i32)
                .unwrap_or(1),
            current_replicas: int(&status["replicas"]),
            ready_replicas: int(&status["readyReplicas"]),
            observed_current: status["observedGeneration"].as_i64().unwrap_or(0) >= generation,
            images: images(&o.data["spec"]["template"]["spec"]),
            refs: crate::engine::pod_refs::required(&o.data["spec"]["template"]["spec"]),
            selector: selector(&o),
            jobs_to_stop: 0,
            updated_replicas: int(&status["updatedReplicas"]),
            restarted_at: o.data["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
                .as_str()
                .map(str::to_string),
        }))
    }

    /// A CronJob as a workload of 0 (suspended) or 1 replica. While suspended, its
    /// unfinished Jobs are its current replicas: what the fence waits out (or stops). A
    /// stopped Job is deleted in the foreground, so it stays, counted, until its pods are
    /// gone: no pod selector is needed (a label selector could match other pods).
    async fn read_cron_job(
        &self,
        region: &str,
        w: &WorkloadSpec,
        o: &DynamicObject,
    ) -> Result<WorkloadState, ClusterError> {
        let suspended = o.data["spec"]["suspend"].as_bool().unwrap_or(false);
        let replicas = i32::from(!suspended);
        let running = if suspended {
            self.unfinished_jobs(region, w, o).await?
        } else {
            Vec::new()
        };
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let pod = &o.data["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        Ok(WorkloadState {
            replicas,
            current_replicas: count(running.len()).max(replicas),
            ready_replicas: replicas,
            observed_current: true,
            images: images(pod),
            refs: crate::engine::pod_refs::required(pod),
            selector: None,
            jobs_to_stop: count(running.iter().filter(|j| !j.deleting).count()),
            updated_replicas: replicas,
            restarted_at: None,
        })
    }

    /// The Jobs a CronJob started that have neither completed nor failed, those being
    /// deleted included: their pods may still run.
    async fn unfinished_jobs(
        &self,
        region: &str,
        w: &WorkloadSpec,
        cron: &DynamicObject,
    ) -> Result<Vec<RunningJob>, ClusterError> {
        use k8s_openapi::api::batch::v1::Job;
        // Without its uid its Jobs cannot be told from others: never "none running".
        let Some(cron_uid) = cron.metadata.uid.as_deref() else {
            return Err(ClusterError::Permanent(format!(
                "CronJob {}/{} has no uid",
                w.namespace, w.name
            )));
        };
        let (_, client) = self.client(region).await?;
        let api: Api<Job> = Api::namespaced(client, &w.namespace);
        let finished = |job: &Job| {
            let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
            conditions
                .into_iter()
                .flatten()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        };
        let mut running = Vec::new();
        // In pages, as a namespace may keep thousands of finished Jobs; bounded.
        let mut params = ListParams::default().limit(JOBS_PAGE);
        for _ in 0..JOB_PAGES_AT_MOST {
            let page = self
                .answer(region, api.list(&params), || {
                    format!("list jobs.batch in namespace {}", w.namespace)
                })
                .await?;
            running.extend(
                page.items
                    .iter()
                    .filter(|job| {
                        let owners = job.metadata.owner_references.as_deref().unwrap_or_default();
                        // A Job being deleted may be marked Failed while its pods still stop.
                        let deleting = job.metadata.deletion_timestamp.is_some();
                        owners.iter().any(|r| r.uid == cron_uid) && (deleting || !finished(job))
                    })
                    .filter_map(|job| {
                        Some(RunningJob {
                            name: job.metadata.name.clone()?,
                            deleting: job.metadata.deletion_timestamp.is_some(),
                        })
                    }),
            );
            match page.metadata.continue_.filter(|token| !token.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(running),
            }
        }
        Err(ClusterError::Permanent(format!(
            "namespace {} has more than {} Jobs; Drover reads at most that many to find the \
             running Jobs of CronJob {}: set the CronJob's history limits, or delete old Jobs",
            w.namespace,
            JOBS_PAGE * JOB_PAGES_AT_MOST,
            w.name
        )))
    }

    async fn metadata_exists(
        &self,
        region: &str,
        namespace: &str,
        kind: RefKind,
        name: &str,
    ) -> Result<bool, ClusterError> {
        use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
        let (_, client) = self.client(region).await?;
        let resource = match kind {
            RefKind::Secret => ApiResource::erase::<Secret>(&()),
            RefKind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
            RefKind::ServiceAccount => ApiResource::erase::<ServiceAccount>(&()),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &resource);
        let found = self
            .answer(region, api.get_metadata_opt(name), || {
                format!("get {} {namespace}/{name}", kind.name())
            })
            .await?;
        Ok(found.is_some())
    }

    /// Every HPA and KEDA ScaledObject in `namespace`, whole, as the API server returns them.
    async fn list_autoscaler_objects(
        &self,
        region: &str,
        namespace: &str,
    ) -> Result<Vec<(AutoscalerKind, serde_json::Value)>, ClusterError> {
        let (_, client) = self.client(region).await?;
        let mut out = Vec::new();
        for kind in AutoscalerKind::ALL {
            let (api, resource) = autoscaler_api(client.clone(), namespace, kind);
            let listed = tokio::time::timeout(self.timeout, api.list(&Default::default())).await;
            match listed {
                Err(_) => return Err(self.no_answer()),
                Ok(Ok(list)) => out.extend(
                    list.items
                        .iter()
                        .filter_map(|o| serde_json::to_value(o).ok())
                        .map(|v| (kind, v)),
                ),
                // KEDA not installed: no ScaledObjects.
                Ok(Err(kube::Error::Api(e)))
                    if e.code == 404 && kind == AutoscalerKind::ScaledObject => {}
                Ok(Err(e)) => {
                    let action = format!("list {resource} in namespace {namespace}");
                    return Err(classify(e, &self.credentials(region), &action));
                }
            }
        }
        Ok(out)
    }

    /// Drives `w`'s autoscalers in `region` for `replicas` (see `autoscalers::drive`), so
    /// that they do not fight the replica patch that follows.
    async fn drive_autoscalers(
        &self,
        region: &str,
        w: &WorkloadSpec,
        replicas: i32,
        hold: bool,
    ) -> Result<(), ClusterError> {
        let objects = self.list_autoscaler_objects(region, &w.namespace).await?;
        for (kind, obj) in &objects {
            let patch = crate::engine::autoscalers::drive(*kind, obj, w, replicas, hold)
                .map_err(ClusterError::Permanent)?;
            let (Some(patch), Some(name)) = (patch, obj["metadata"]["name"].as_str()) else {
                continue;
            };
            let (_, client) = self.client(region).await?;
            let (api, resource) = autoscaler_api(client, &w.namespace, *kind);
            let params = PatchParams::default();
            let merge = Patch::Merge(&patch);
            let call = api.patch(name, &params, &merge);
            match tokio::time::timeout(self.timeout, call).await {
                Err(_) => return Err(self.no_answer()),
                Ok(Ok(_)) => {}
                // Deleted since the listing: nothing left to drive.
                Ok(Err(kube::Error::Api(e))) if e.code == 404 => {}
                // Changed since the listing (the patch carries its resourceVersion).
                Ok(Err(kube::Error::Api(e))) if e.code == 409 => {
                    return Err(ClusterError::Transient(format!(
                        "{} {}/{name} changed while Drover was patching it; it is read \
                         again next pass",
                        kind.api().2,
                        w.namespace
                    )));
                }
                Ok(Err(e)) => {
                    let action = format!("patch {resource} in namespace {}", w.namespace);
                    return Err(classify(e, &self.credentials(region), &action));
                }
            }
        }
        Ok(())
    }

    async fn count_pods(
        &self,
        region: &str,
        w: &WorkloadSpec,
        selector: &str,
    ) -> Result<usize, ClusterError> {
        let (_, client) = self.client(region).await?;
        let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, &w.namespace);
        let params = kube::api::ListParams::default().labels(selector);
        let list = self
            .answer(region, api.list(&params), || {
                format!("list pods in namespace {}", w.namespace)
            })
            .await?;
        // Succeeded and Failed (e.g. Evicted) pods run nothing: only the others count.
        Ok(list
            .items
            .iter()
            .filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded") | Some("Failed"))
            })
            .count())
    }

    async fn set_scale(
        &self,
        region: &str,
        w: &WorkloadSpec,
        replicas: i32,
        hold: bool,
    ) -> Result<i32, ClusterError> {
        if w.is_cron_job() {
            return self.suspend_or_resume(region, w, replicas).await;
        }
        // A fence (to 0) does not wait on its autoscalers: at 0 replicas an HPA stands
        // aside, and what went wrong with a ScaledObject is reported after the patch.
        let driven = self.drive_autoscalers(region, w, replicas, hold).await;
        if replicas > 0 {
            driven.clone()?;
        }
        let kept = self.patch_replicas(region, w, replicas).await?;
        driven.map(|()| kept)
    }

    async fn patch_replicas(
        &self,
        region: &str,
        w: &WorkloadSpec,
        replicas: i32,
    ) -> Result<i32, ClusterError> {
        let (api, resource) = self.api(region, w).await?;
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        let params = PatchParams::default();
        let merge = Patch::Merge(&patch);
        let scale = self
            .answer(region, api.patch_scale(&w.name, &params, &merge), || {
                format!("patch {resource}/scale in namespace {}", w.namespace)
            })
            .await?;
        Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0))
    }

    /// A CronJob to 0 (suspended) or 1 (resumed). Suspended with `runningJobs: Stop`, its
    /// unfinished Jobs are deleted in the foreground: each stays until its pods are gone,
    /// and the fence waits for that. Sent again while Jobs are left to stop.
    async fn suspend_or_resume(
        &self,
        region: &str,
        w: &WorkloadSpec,
        replicas: i32,
    ) -> Result<i32, ClusterError> {
        let (api, resource) = self.api(region, w).await?;
        let patch = serde_json::json!({"spec": {"suspend": replicas == 0}});
        let (params, merge) = (PatchParams::default(), Patch::Merge(&patch));
        let cron = self
            .answer(region, api.patch(&w.name, &params, &merge), || {
                format!("patch {resource} in namespace {}", w.namespace)
            })
            .await?;
        let suspended = cron.data["spec"]["suspend"].as_bool().unwrap_or(false);
        if suspended && w.running_jobs == Some(crate::api::RunningJobs::Stop) {
            for job in self.unfinished_jobs(region, w, &cron).await? {
                if !job.deleting {
                    self.delete_job(region, w, &job.name).await?;
                }
            }
        }
        Ok(i32::from(!suspended))
    }

    async fn delete_job(
        &self,
        region: &str,
        w: &WorkloadSpec,
        job: &str,
    ) -> Result<(), ClusterError> {
        use k8s_openapi::api::batch::v1::Job;
        let (_, client) = self.client(region).await?;
        let api: Api<Job> = Api::namespaced(client, &w.namespace);
        let params = kube::api::DeleteParams::foreground();
        match tokio::time::timeout(self.timeout, api.delete(job, &params)).await {
            Err(_) => Err(self.no_answer()),
            Ok(Ok(_)) => Ok(()),
            // Gone already: what was asked for.
            Ok(Err(kube::Error::Api(e))) if e.code == 404 => Ok(()),
            Ok(Err(e)) => {
                let action = format!("delete jobs.batch {}/{job}", w.namespace);
                Err(classify(e, &self.credentials(region), &action))
            }
        }
    }

    async fn read_config(
        &self,
        region: &str,
        cfg: &ConfigSpec,
        keys: &[String],
    ) -> Result<Option<BTreeMap<String, String>>, ClusterError> {
        use k8s_openapi::api::core::v1::{ConfigMap, Secret};
        let (_, client) = self.client(region).await?;
        let ns = &cfg.namespace;
        let read = async {
            Ok(match cfg.kind {
                ConfigKind::ConfigMap => Api::<ConfigMap>::namespaced(client, ns)
                    .get_opt(&cfg.name)
                    .await?
                    .map(|c| c.data.unwrap_or_default()),
                // Bytes that are not UTF-8 are unlike any wanted value: they are written.
                ConfigKind::Secret => Api::<Secret>::namespaced(client, ns)
                    .get_opt(&cfg.name)
                    .await?
                    .map(|s| {
                        s.data
                            .unwrap_or_default()
                            .into_iter()
                            .filter_map(|(k, v)| Some((k, String::from_utf8(v.0).ok()?)))
                            .collect()
                    }),
            })
        };
        let data: Option<BTreeMap<String, String>> = self
            .answer(region, read, || {
                format!("get {} {ns}/{}", cfg.kind.name(), cfg.name)
            })
            .await?;
        Ok(data.map(|mut d| {
            d.retain(|k, _| keys.contains(k));
            d
        }))
    }

    async fn patch_config(
        &self,
        region: &str,
        cfg: &ConfigSpec,
        values: &BTreeMap<String, String>,
        dry_run: bool,
    ) -> Result<(), ClusterError> {
        use k8s_openapi::api::core::v1::{ConfigMap, Secret};
        let (_, client) = self.client(region).await?;
        let ns = &cfg.namespace;
        // A Secret takes stringData, which the API server merges into data: no encoding
        // here, and other keys stay.
        let field = match cfg.kind {
            ConfigKind::ConfigMap => "data",
            ConfigKind::Secret => "stringData",
        };
        let patch = serde_json::json!({ field: values });
        let params = if dry_run {
            PatchParams::default().dry_run()
        } else {
            PatchParams::default()
        };
        let merge = Patch::Merge(&patch);
        let write = async {
            match cfg.kind {
                ConfigKind::ConfigMap => Api::<ConfigMap>::namespaced(client, ns)
                    .patch(&cfg.name, &params, &merge)
                    .await
                    .map(|_| ()),
                ConfigKind::Secret => Api::<Secret>::namespaced(client, ns)
                    .patch(&cfg.name, &params, &merge)
                    .await
                    .map(|_| ()),
            }
        };
        self.answer(region, write, || {
            format!("patch {} {ns}/{}", cfg.kind.name(), cfg.name)
        })
        .await
    }

    async fn restart_workload(
        &self,
        region: &str,
        w: &WorkloadSpec,
        at: &str,
    ) -> Result<(), ClusterError> {
        let (api, resource) = self.api(region, w).await?;
        let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
            RESTARTED_AT: at}}}}});
        let (params, merge) = (PatchParams::default(), Patch::Merge(&patch));
        self.answer(region, api.patch(&w.name, &params, &merge), || {
            format!("patch {resource} in namespace {}", w.namespace)
        })
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl Clusters for KubeClusters {
    async fn workload(
        &self,
        region: &str,
        w: &WorkloadSpec,
    ) -> Result<Option<WorkloadState>, ClusterError> {
        self.read(region, w).await.map_err(|e| e.in_region(region))
    }

    async fn pods(
        &self,
        region: &str,
        w: &WorkloadSpec,
        selector: &str,
    ) -> Result<usize, ClusterError> {
        (self.count_pods(region, w, selector).await).map_err(|e| e.in_region(region))
    }

    async fn scale(
        &self,
        region: &str,
        w: &WorkloadSpec,
        replicas: i32,
        hold: bool,
    ) -> Result<i32, ClusterError> {
        (self.set_scale(region, w, replicas, hold).await).map_err(|e| e.in_region(region))
    }

    async fn object_exists(
        &self,
        region: &str,
        namespace: &str,
        kind: RefKind,
        name: &str,
    ) -> Result<bool, ClusterError> {
        (self.metadata_exists(region, namespace, kind, name).await).map_err(|e| e.in_region(region))
    }

    async fn autoscalers(
        &self,
        region: &str,
        namespace: &str,
    ) -> Result<Vec<(AutoscalerKind, serde_json::Value)>, ClusterError> {
        (self.list_autoscaler_objects(region, namespace).await).map_err(|e| e.in_region(region))
    }

    async fn config_values(
        &self,
        region: &str,
        cfg: &ConfigSpec,
        keys: &[String],
    ) -> Result<Option<BTreeMap<String, String>>, ClusterError> {
        (self.read_config(region, cfg, keys).await).map_err(|e| e.in_region(region))
    }

    async fn write_config(
        &self,
        region: &str,
        cfg: &ConfigSpec,
        values: &BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        (self.patch_config(region, cfg, values, false).await).map_err(|e| e.in_region(region))
    }

    async fn config_writable(
        &self,
        region: &str,
        cfg: &ConfigSpec,
        values: &BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        (self.patch_config(region, cfg, values, true).await).map_err(|e| e.in_region(region))
    }

    async fn restart(&self, region: &str, w: &WorkloadSpec, at: &str) -> Result<(), ClusterError> {
        (self.restart_workload(region, w, at).await).map_err(|e| e.in_region(region))
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
            probes: Vec::new(),
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
        shared.keep(&key, &client(), &client(), 1);
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
        shared.keep(&key, &client(), &client(), 1);
        assert!(shared.kind(&key, "apps/v1/Deployment").is_some());
        shared.keep(&key, &client(), &client(), 2);
        assert!(shared.kind(&key, "apps/v1/Deployment").is_none());
        // Credentials about to expire (an exec plugin's) are not kept: the plugin runs again.
        let now = k8s_openapi::jiff::Timestamp::now();
        let expiring =
            client().with_valid_until(Some(now + k8s_openapi::jiff::SignedDuration::from_secs(30)));
        shared.keep(&key, &expiring, &expiring, 3);
        shared.keep_kind(&key, "apps/v1/Deployment", &deployment);
        shared.keep(&key, &client(), &client(), 3);
        assert!(shared.kind(&key, "apps/v1/Deployment").is_none());
        let lasting = client().with_valid_until(Some(
            now + k8s_openapi::jiff::SignedDuration::from_secs(3600),
        ));
        shared.keep(&key, &lasting, &lasting, 4);
        shared.keep_kind(&key, "apps/v1/Deployment", &deployment);
        shared.keep(&key, &client(), &client(), 4);
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

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, reason)
                .with_code(code)
                .boxed(),
        )
    }

    const SECRET: &str = "the credentials in Secret drover-system/usw2-kubeconfig";

    #[test]
    fn kube_errors_become_sentences_that_name_the_secret() {
        let action = "patch deployments.apps/scale in namespace shop";
        let told = |e| classify(e, SECRET, action);
        assert_eq!(
            told(api_error(401, "Unauthorized", "Unauthorized")),
            ClusterError::Permanent(
                "the cluster rejected the credentials in Secret \
                 drover-system/usw2-kubeconfig: Unauthorized"
                    .into()
            )
        );
        let forbidden = "deployments.apps \"web\" is forbidden: User \"m\" cannot patch \
                         resource \"deployments/scale\" in API group \"apps\" in the namespace \"shop\"";
        assert_eq!(
            told(api_error(403, "Forbidden", forbidden)),
            ClusterError::Permanent(format!(
                "the credentials in Secret drover-system/usw2-kubeconfig may not patch \
                 deployments.apps/scale in namespace shop: {forbidden}"
            ))
        );
        assert_eq!(
            told(api_error(503, "ServiceUnavailable", "etcd is down")),
            ClusterError::Transient(format!(
                "could not {action}: the API server answered 503: etcd is down"
            ))
        );
        assert_eq!(
            told(api_error(404, "NotFound", "")),
            ClusterError::Permanent(format!("could not {action}: NotFound"))
        );
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            told(kube::Error::Service(Box::new(refused))),
            ClusterError::Unreachable("cannot reach the cluster: refused".into())
        );
        // Callers outside this module see the region.
        assert_eq!(
            told(api_error(401, "Unauthorized", "Unauthorized"))
                .in_region("usw2")
                .message(),
            format!("region usw2: the cluster rejected {SECRET}: Unauthorized")
        );
    }

    #[test]
    fn credentials_name_the_secret_the_plan_points_at() {
        let mut r = region("usw2", "usw2-kubeconfig");
        assert_eq!(
            credentials(&r, "team-a"),
            "the credentials in Secret team-a/usw2-kubeconfig"
        );
        if let Some(secret) = r.cluster.kubeconfig_secret_ref.as_mut() {
            secret.namespace = Some("drover-system".into());
        }
        assert_eq!(credentials(&r, "team-a"), SECRET);
        r.cluster.kubeconfig_secret_ref = None;
        assert_eq!(credentials(&r, "team-a"), "the operator's own credentials");
    }

    /// A member API server on 127.0.0.1 that answers every request with `answer(path)`;
    /// stopped when the test's runtime ends.
    async fn member(answer: fn(&str, Option<&str>) -> (u16, String)) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let port = listener.local_addr().expect("bound").port();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| async move {
            let (code, body) = answer(uri.path(), uri.query());
            let code = axum::http::StatusCode::from_u16(code).expect("an HTTP code");
            (code, [("content-type", "application/json")], body)
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }

    /// The plan's region clusters, their kubeconfig Secrets in team-a read from a
    /// management API server that hands out a kubeconfig for `port` with a wrong token.
    fn clusters(port: u16) -> KubeClusters {
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{{name: m, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n\
             users: [{{name: u, user: {{token: wrong}}}}]\n\
             contexts: [{{name: c, context: {{cluster: m, user: u}}}}]\n"
        );
        let secret = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "usw2-kubeconfig", "namespace": "team-a"},
            "data": {"kubeconfig": k8s_openapi::ByteString(kubeconfig.into_bytes())},
        })
        .to_string();
        let mgmt = tower::service_fn(move |_req: http::Request<kube::client::Body>| {
            let secret = secret.clone();
            async move {
                http::Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(secret.into_bytes()))
            }
        });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let plan: crate::api::DisasterRecoveryPlan =
            serde_yaml::from_str(include_str!("../config/samples/plan.yaml")).expect("sample");
        KubeClusters::new(
            Client::new(mgmt, "team-a"),
            plan.spec,
            "team-a".into(),
            Duration::from_secs(5),
            Arc::default(),
        )
    }

    fn status(code: u16, reason: &str, message: &str) -> String {
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code})
        .to_string()
    }

    /// A wrong token, as kube-apiserver rejects it: the plan check says so in a sentence.
    #[tokio::test]
    async fn a_rejected_token_is_reported_naming_the_secret() {
        let port = member(|_, _| (401, status(401, "Unauthorized", "Unauthorized"))).await;
        let clusters = clusters(port);
        assert_eq!(
            clusters.check_region("usw2").await,
            Err(
                "the cluster rejected the credentials in Secret team-a/usw2-kubeconfig: \
                 Unauthorized"
                    .into()
            )
        );
    }

    /// Credentials that authenticate but are not granted the workloads: each problem names
    /// the Secret and what it may not do.
    #[tokio::test]
    async fn forbidden_reads_and_scales_name_the_secret_and_the_verb() {
        let port = member(|path, _| match path {
            "/version" => (
                200,
                serde_json::json!({"major": "1", "minor": "20", "gitVersion": "v1.20.2",
                    "gitCommit": "", "gitTreeState": "", "buildDate": "", "goVersion": "",
                    "compiler": "", "platform": ""})
                .to_string(),
            ),
            "/apis/apps/v1" => (
                200,
                serde_json::json!({"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": "apps/v1", "resources": [
                        {"name": "deployments", "singularName": "deployment", "namespaced": true,
                         "kind": "Deployment", "verbs": ["get", "patch"]},
                        {"name": "deployments/scale", "singularName": "", "namespaced": true,
                         "group": "autoscaling", "version": "v1", "kind": "Scale",
                         "verbs": ["get", "patch"]}]})
                .to_string(),
            ),
            // No autoscalers: the scale itself is what is refused.
            "/apis/autoscaling/v1/namespaces/shop/horizontalpodautoscalers"
            | "/apis/keda.sh/v1alpha1/namespaces/shop/scaledobjects" => (200, empty_list()),
            _ => (
                403,
                status(403, "Forbidden", "deployments.apps is forbidden"),
            ),
        })
        .await;
        let clusters = clusters(port);
        let secret = "the credentials in Secret team-a/usw2-kubeconfig";
        let problems = clusters.check_region("usw2").await.expect_err("forbidden");
        assert!(
            problems.starts_with(&format!(
                "Deployment shop/web: {secret} may not get deployments.apps in namespace shop: \
                 deployments.apps is forbidden; "
            )),
            "{problems}"
        );
        let web = &clusters.spec.workloads[0];
        let scaled = clusters
            .scale("usw2", web, 0, false)
            .await
            .expect_err("forbidden");
        assert_eq!(
            scaled,
            ClusterError::Permanent(format!(
                "region usw2: {secret} may not patch deployments.apps/scale in namespace shop: \
                 deployments.apps is forbidden"
            ))
        );
    }

    fn empty_list() -> String {
        serde_json::json!({"kind": "List", "apiVersion": "v1", "metadata": {}, "items": []})
            .to_string()
    }

    /// A list holding one autoscaler of web (HPA or ScaledObject: the same fields do).
    fn autoscaler_of_web() -> String {
        serde_json::json!({"kind": "List", "apiVersion": "v1", "metadata": {}, "items": [
            {"metadata": {"name": "web", "namespace": "shop", "resourceVersion": "5"},
             "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
                      "minReplicas": 2, "maxReplicas": 10}}]})
        .to_string()
    }

    /// Scaling web first drives its autoscalers: one changed meanwhile is a conflict, tried
    /// again next pass; a refused patch names the verb and resource, as RBAC words them.
    #[tokio::test]
    async fn autoscalers_are_patched_before_the_scale_and_a_conflict_is_retried() {
        let conflict = member(|path, _| match path {
            "/apis/autoscaling/v1/namespaces/shop/horizontalpodautoscalers" => {
                (200, autoscaler_of_web())
            }
            "/apis/autoscaling/v1/namespaces/shop/horizontalpodautoscalers/web" => {
                (409, status(409, "Conflict", "the object has been modified"))
            }
            // KEDA not installed.
            _ => (404, status(404, "NotFound", "the server could not find it")),
        })
        .await;
        let conflicted = clusters(conflict);
        let web = &conflicted.spec.workloads[0];
        assert_eq!(
            conflicted.scale("usw2", web, 1, false).await,
            Err(ClusterError::Transient(
                "region usw2: HorizontalPodAutoscaler shop/web changed while Drover was \
                 patching it; it is read again next pass"
                    .into()
            ))
        );
        let refused = member(|path, _| match path {
            "/apis/autoscaling/v1/namespaces/shop/horizontalpodautoscalers" => (200, empty_list()),
            "/apis/keda.sh/v1alpha1/namespaces/shop/scaledobjects" => (200, autoscaler_of_web()),
            _ => (
                403,
                status(403, "Forbidden", "scaledobjects.keda.sh is forbidden"),
            ),
        })
        .await;
        let forbidden = clusters(refused);
        let web = &forbidden.spec.workloads[0];
        assert_eq!(
            forbidden.scale("usw2", web, 1, false).await,
            Err(ClusterError::Permanent(
                "region usw2: the credentials in Secret team-a/usw2-kubeconfig may not patch \
                 scaledobjects.keda.sh in namespace shop: scaledobjects.keda.sh is forbidden"
                    .into()
            ))
        );
    }

    /// A Job of CronJob uid "cron-uid" (`owned`), `complete` or not, as a list item.
    fn job(name: &str, owned: bool, complete: bool) -> serde_json::Value {
        let owner = if owned { "cron-uid" } else { "other" };
        let status = if complete {
            serde_json::json!({"conditions": [{"type": "Complete", "status": "True"}]})
        } else {
            serde_json::json!({"active": 1})
        };
        serde_json::json!({"metadata": {"name": name, "namespace": "shop",
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                "name": "nightly-report", "uid": owner}]}, "status": status})
    }

    fn job_page(items: Vec<serde_json::Value>, next: Option<&str>) -> String {
        serde_json::json!({"apiVersion": "batch/v1", "kind": "JobList",
            "metadata": {"continue": next.unwrap_or_default()}, "items": items})
        .to_string()
    }

    /// A CronJob's running Jobs are found on every page of the namespace's Jobs; a listing
    /// that never ends is cut short with a sentence, not read forever.
    #[tokio::test]
    async fn running_jobs_are_read_across_pages_and_the_pages_are_bounded() {
        let paged = member(|path, query| {
            if path != "/apis/batch/v1/namespaces/shop/jobs" {
                return (404, status(404, "NotFound", "not found"));
            }
            let query = query.unwrap_or_default();
            assert!(query.contains("limit=500"), "{query}");
            if query.contains("continue=second") {
                let items = vec![job("b", true, true), job("c", true, false)];
                (200, job_page(items, None))
            } else {
                let items = vec![job("a", true, false), job("x", false, false)];
                (200, job_page(items, Some("second")))
            }
        })
        .await;
        let paged = clusters(paged);
        let report = paged
            .spec
            .workloads
            .iter()
            .find(|w| w.is_cron_job())
            .expect("the sample's CronJob");
        let mut cron = DynamicObject::new(
            "nightly-report",
            &ApiResource::from_gvk(&GroupVersionKind::gvk("batch", "v1", "CronJob")),
        );
        cron.metadata.uid = Some("cron-uid".into());
        let running = paged
            .unfinished_jobs("usw2", report, &cron)
            .await
            .expect("listed");
        let names: Vec<&str> = running.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, vec!["a", "c"]);

        let endless =
            member(|_, _| (200, job_page(vec![job("a", true, false)], Some("more")))).await;
        let endless = clusters(endless);
        assert_eq!(
            endless
                .unfinished_jobs("usw2", report, &cron)
                .await
                .map(|jobs| jobs.len()),
            Err(ClusterError::Permanent(
                "namespace shop has more than 50000 Jobs; Drover reads at most that many to \
                 find the running Jobs of CronJob nightly-report: set the CronJob's history \
                 limits, or delete old Jobs"
                    .into()
            ))
        );
    }

    /// A member API server that does not listen: unreachable, said without a debug dump.
    #[tokio::test]
    async fn an_unreachable_cluster_is_said_plainly() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
            listener.local_addr().expect("bound").port()
        };
        let problem = clusters(port)
            .check_region("usw2")
            .await
            .expect_err("refused");
        assert!(
            problem.starts_with("cannot reach the cluster: ") && problem.contains("refused"),
            "{problem}"
        );
    }

    /// Requests the watched member below has answered, by kind of request.
    #[derive(Default)]
    struct Asked {
        lists: std::sync::atomic::AtomicUsize,
        gets: std::sync::atomic::AtomicUsize,
        versions: std::sync::atomic::AtomicUsize,
    }

    /// A member API server that serves lists and holds watches open, as kube-apiserver
    /// does, and counts what it was asked.
    async fn watched_member(cluster_wide: bool) -> (u16, Arc<Asked>) {
        let asked = Arc::new(Asked::default());
        let counts = asked.clone();
        use std::sync::atomic::Ordering::SeqCst;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let port = listener.local_addr().expect("bound").port();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let asked = counts.clone();
            async move {
            let json = |body: serde_json::Value| {
                (
                    axum::http::StatusCode::OK,
                    [("content-type", "application/json")],
                    body.to_string(),
                )
            };
            let query = uri.query().unwrap_or_default();
            match uri.path() {
                "/version" => {
                    asked.versions.fetch_add(1, SeqCst);
                    json(serde_json::json!({"major": "1", "minor": "20",
                        "gitVersion": "v1.20.2", "gitCommit": "", "gitTreeState": "",
                        "buildDate": "", "goVersion": "", "compiler": "", "platform": ""}))
                }
                "/apis/apps/v1" | "/apis/batch/v1" => json(serde_json::json!({
                    "kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": uri.path().trim_start_matches("/apis/"), "resources": [
                        {"name": "deployments", "singularName": "deployment", "namespaced": true,
                         "kind": "Deployment", "verbs": ["get", "list", "watch", "patch"]},
                        {"name": "cronjobs", "singularName": "cronjob", "namespaced": true,
                         "kind": "CronJob", "verbs": ["get", "list", "watch", "patch"]}]})),
                _ if query.contains("watch=true") => {
                    // Held open with no events, until the client goes away.
                    futures::future::pending::<()>().await;
                    unreachable!("a pending future never finishes")
                }
                // The credentials may list only within namespaces, unless `cluster_wide`.
                path if !cluster_wide && !path.contains("/namespaces/") => (
                    axum::http::StatusCode::FORBIDDEN,
                    [("content-type", "application/json")],
                    status(403, "Forbidden", "cannot list at the cluster scope"),
                ),
                path if path.ends_with("/deployments") => {
                    asked.lists.fetch_add(1, SeqCst);
                    let item = |name: &str| {
                        serde_json::json!({"metadata": {"name": name, "namespace": "shop"}})
                    };
                    json(serde_json::json!({
                        "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                        "metadata": {"resourceVersion": "7"},
                        "items": [item("web"), item("orders-writer")]}))
                }
                path if path.ends_with("/cronjobs") => {
                    asked.lists.fetch_add(1, SeqCst);
                    json(serde_json::json!({
                        "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                        "metadata": {"resourceVersion": "7"}, "items": []}))
                }
                _ => {
                    asked.gets.fetch_add(1, SeqCst);
                    (
                        axum::http::StatusCode::NOT_FOUND,
                        [("content-type", "application/json")],
                        status(404, "NotFound", "not found"),
                    )
                }
            }
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        (port, asked)
    }

    /// Plan checks read existence from one watched view per kind (across namespaces, or
    /// per namespace where the credentials may only list there): the first check lists
    /// each kind once; later checks, of this plan or any other with the same access, ask
    /// nothing but (at most every 10 s) the version. Missing ones are named.
    #[tokio::test]
    async fn plan_checks_share_one_watched_list_per_kind() {
        use std::sync::atomic::Ordering::SeqCst;
        for cluster_wide in [true, false] {
            let (port, asked) = watched_member(cluster_wide).await;
            let shared = Arc::new(RegionClients::default());
            let check = || {
                let mut clusters = clusters(port);
                clusters.shared = shared.clone();
                // Requests time out after 1 s; a quiet watch must outlive that.
                clusters.timeout = Duration::from_secs(1);
                async move { clusters.check_region("usw2").await }
            };
            let expected = Err(
                "Deployment shop/cron not found; CronJob shop/nightly-report not found".to_string(),
            );
            assert_eq!(check().await, expected);
            let lists = || asked.lists.load(SeqCst);
            assert_eq!(lists(), 2, "deployments and cronjobs, once each");
            for _ in 0..5 {
                assert_eq!(check().await, expected);
            }
            assert_eq!(lists(), 2, "no more lists");
            // Longer than the request timeout with no watch event: the views still stand.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert_eq!(check().await, expected);
            assert_eq!(lists(), 2, "the quiet watches outlived the read timeout");
            assert_eq!(asked.gets.load(SeqCst), 0, "no workload read one by one");
            assert_eq!(
                asked.versions.load(SeqCst),
                1,
                "the version once for 7 checks"
            );
        }
    }
}
