//! Fencing a deposed leader: before every mutating call, the operator confirms on the API
//! server that it still holds the leader Lease. A process paused past its Lease (a long GC,
//! SIGSTOP, a partition) otherwise wakes up and acts before its lease watch notices. Once
//! deposed, it also writes no more Failover status.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::time::Instant;

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;

use crate::api::{ReplicaSettings, WorkloadSpec};
use crate::aws::{Aws, AwsError, AwsErrorKind, AwsResult, LagSource, WriterMove};
use crate::clusters::{ClusterError, Clusters, WorkloadState};
use crate::engine::automatic::{CheckerObservation, MetricDatapoint, MetricQuery};
use crate::engine::dns::RecordChange;
use crate::engine::{AuroraObservation, ClusterSnapshot, LagReading, RdsObservation, RecordSet};

/// How long a Lease read may take before the call it was for is refused (and retried).
const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether `lease` is held by `identity` and still valid at `now`.
pub fn holds(lease: &Lease, identity: &str, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    let (Some(holder), Some(renewed), Some(seconds)) = (
        spec.holder_identity.as_deref(),
        spec.renew_time.as_ref(),
        spec.lease_duration_seconds,
    ) else {
        return false;
    };
    holder == identity && renewed.0 + SignedDuration::from_secs(seconds.into()) > now
}

/// This process's claim to leadership, checked against the Lease itself.
pub struct Leadership {
    leases: Api<Lease>,
    name: String,
    identity: String,
    deposed: AtomicBool,
    /// Lease reads, shared by calls asked for together (one pass scales and promotes
    /// concurrently).
    last: SharedCheck,
}

impl Leadership {
    pub fn new(leases: Api<Lease>, name: &str, identity: &str) -> Self {
        Self {
            leases,
            name: name.to_string(),
            identity: identity.to_string(),
            deposed: AtomicBool::new(false),
            last: SharedCheck::default(),
        }
    }

    /// Confirms on the API server that this process holds the Lease. An unreadable or
    /// overdue Lease is not a confirmation: the call waits; a Lease held by another deposes
    /// this process for good.
    pub async fn confirm(&self) -> Result<(), String> {
        self.last
            .check(CONFIRM_TIMEOUT, || self.read())
            .await
            .map_err(|e| {
                e.unwrap_or_else(|| {
                    format!(
                        "cannot confirm the leader Lease {}: no answer within {}s",
                        self.name,
                        CONFIRM_TIMEOUT.as_secs()
                    )
                })
            })
    }

    async fn read(&self) -> Result<(), String> {
        if self.deposed() {
            return Err(self.deposed_message());
        }
        let lease = self.leases.get(&self.name).await.map_err(|e| {
            format!(
                "cannot confirm the leader Lease {}: {}",
                self.name,
                crate::error::kube_message(&e)
            )
        })?;
        if holds(&lease, &self.identity, Timestamp::now()) {
            return Ok(());
        }
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        if holder == Some(self.identity.as_str()) {
            // Still ours but not renewed in time: a renewal may yet come, and nobody else
            // holds it. Not confirmed, so no call now; deposed only once another holds it.
            return Err(format!(
                "the leader Lease {} has not been renewed in time; waiting for its renewal",
                self.name
            ));
        }
        self.deposed.store(true, Ordering::Release);
        Err(self.deposed_message())
    }

    pub fn deposed(&self) -> bool {
        self.deposed.load(Ordering::Acquire)
    }

    /// The error a deposed leader's status write fails with, so nothing is written.
    pub fn deposed_error(&self) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code: 409,
            message: self.deposed_message(),
            ..Default::default()
        }))
    }

    pub fn deposed_message(&self) -> String {
        format!(
            "{} no longer holds the leader Lease {}; it makes no more changes",
            self.identity, self.name
        )
    }
}

/// A check made one at a time, whose outcome is shared: a check *sent* after a caller
/// asked answers that caller as well as a check of its own would, so callers that ask
/// together share the next one. A check taking longer than its timeout fails (`Err(None)`),
/// so one stuck read does not hold up every caller behind it for long.
#[derive(Default)]
struct SharedCheck {
    /// When the last check was sent, and its outcome.
    last: tokio::sync::Mutex<Option<(Instant, CheckOutcome)>>,
}

/// Ok, or why not: a message, or None when no answer came in time.
type CheckOutcome = Result<(), Option<String>>;

impl SharedCheck {
    async fn check<F>(&self, timeout: std::time::Duration, read: impl FnOnce() -> F) -> CheckOutcome
    where
        F: std::future::Future<Output = Result<(), String>>,
    {
        let asked = Instant::now();
        let mut last = self.last.lock().await;
        if let Some((sent, outcome)) = last.as_ref()
            && *sent >= asked
        {
            return outcome.clone();
        }
        // Calls made together are started one after another: let the others ask before
        // this read is sent, so that it answers them too.
        tokio::task::yield_now().await;
        let sent = Instant::now();
        let outcome = match tokio::time::timeout(timeout, read()).await {
            Ok(outcome) => outcome.map_err(Some),
            Err(_) => Err(None),
        };
        *last = Some((sent, outcome.clone()));
        outcome
    }
}

/// A leader check: `Leadership` on the API server, or the simulation's fake.
#[async_trait]
pub trait LeaseCheck: Send + Sync {
    /// Ok only while this process is confirmed to hold the lease.
    async fn confirm(&self) -> Result<(), String>;
    /// Whether a confirmation has failed (for good).
    fn deposed(&self) -> bool;
    fn deposed_message(&self) -> String;
    /// The error a deposed leader's status write fails with, so nothing is written.
    fn deposed_error(&self) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code: 409,
            message: self.deposed_message(),
            ..Default::default()
        }))
    }
}

#[async_trait]
impl LeaseCheck for Leadership {
    async fn confirm(&self) -> Result<(), String> {
        Leadership::confirm(self).await
    }
    fn deposed(&self) -> bool {
        Leadership::deposed(self)
    }
    fn deposed_message(&self) -> String {
        Leadership::deposed_message(self)
    }
    fn deposed_error(&self) -> kube::Error {
        Leadership::deposed_error(self)
    }
}

/// The AWS effector, refusing mutating calls unless leadership is confirmed first.
pub struct LeaderAws {
    pub inner: Arc<dyn Aws>,
    pub leadership: Arc<dyn LeaseCheck>,
}

impl LeaderAws {
    async fn confirm(&self) -> AwsResult<()> {
        self.leadership.confirm().await.map_err(|message| AwsError {
            // Not Permanent: the step must not be recorded as failed by a deposed leader.
            kind: AwsErrorKind::Transient,
            message,
        })
    }
}

#[async_trait]
impl Aws for LeaderAws {
    async fn describe_instance(&self, region: &str, id: &str) -> AwsResult<Option<RdsObservation>> {
        self.inner.describe_instance(region, id).await
    }
    async fn describe_instances(
        &self,
        region: &str,
        ids: &[String],
    ) -> AwsResult<Vec<Option<RdsObservation>>> {
        self.inner.describe_instances(region, ids).await
    }
    async fn promote_read_replica(&self, region: &str, id: &str) -> AwsResult<()> {
        self.confirm().await?;
        self.inner.promote_read_replica(region, id).await
    }
    async fn stop_db_instance(&self, region: &str, id: &str) -> AwsResult<()> {
        self.confirm().await?;
        self.inner.stop_db_instance(region, id).await
    }
    async fn rename_db_instance(&self, region: &str, id: &str, to: &str) -> AwsResult<()> {
        self.confirm().await?;
        self.inner.rename_db_instance(region, id, to).await
    }
    async fn delete_db_instance(
        &self,
        region: &str,
        id: &str,
        snap: Option<&str>,
    ) -> AwsResult<()> {
        self.confirm().await?;
        self.inner.delete_db_instance(region, id, snap).await
    }
    async fn create_read_replica(
        &self,
        region: &str,
        id: &str,
        src: &str,
        settings: &ReplicaSettings,
    ) -> AwsResult<()> {
        self.confirm().await?;
        self.inner
            .create_read_replica(region, id, src, settings)
            .await
    }
    async fn instance_settings(
        &self,
        region: &str,
        id: &str,
    ) -> AwsResult<Option<ReplicaSettings>> {
        self.inner.instance_settings(region, id).await
    }
    async fn instance_arn(&self, region: &str, id: &str) -> AwsResult<Option<String>> {
        self.inner.instance_arn(region, id).await
    }
    async fn cluster_arn(&self, region: &str, id: &str) -> AwsResult<Option<String>> {
        self.inner.cluster_arn(region, id).await
    }
    async fn instance_endpoint(&self, region: &str, id: &str) -> AwsResult<Option<String>> {
        self.inner.instance_endpoint(region, id).await
    }
    async fn cluster_endpoint(&self, region: &str, id: &str) -> AwsResult<Option<String>> {
        self.inner.cluster_endpoint(region, id).await
    }
    async fn cluster_snapshots(
        &self,
        region: &str,
        cluster: &str,
    ) -> AwsResult<Vec<ClusterSnapshot>> {
        self.inner.cluster_snapshots(region, cluster).await
    }
    async fn describe_global_cluster(
        &self,
        region: &str,
        id: &str,
    ) -> AwsResult<Option<AuroraObservation>> {
        self.inner.describe_global_cluster(region, id).await
    }
    async fn describe_global_clusters(
        &self,
        region: &str,
        ids: &[String],
    ) -> AwsResult<Vec<Option<AuroraObservation>>> {
        self.inner.describe_global_clusters(region, ids).await
    }
    async fn move_global_writer(
        &self,
        region: &str,
        id: &str,
        target_arn: &str,
        how: WriterMove,
    ) -> AwsResult<()> {
        self.confirm().await?;
        self.inner
            .move_global_writer(region, id, target_arn, how)
            .await
    }
    async fn replica_lag(&self, region: &str, source: &LagSource) -> AwsResult<Option<LagReading>> {
        self.inner.replica_lag(region, source).await
    }
    async fn replica_lags(
        &self,
        region: &str,
        sources: &[LagSource],
    ) -> AwsResult<Vec<Option<LagReading>>> {
        self.inner.replica_lags(region, sources).await
    }
    async fn health_check_healthy(&self, id: &str) -> AwsResult<bool> {
        self.inner.health_check_healthy(id).await
    }
    async fn list_records(&self, zone: &str) -> AwsResult<Vec<RecordSet>> {
        self.inner.list_records(zone).await
    }
    async fn change_records(&self, zone: &str, changes: &[RecordChange]) -> AwsResult<String> {
        self.confirm().await?;
        self.inner.change_records(zone, changes).await
    }
    async fn change_insync(&self, change_id: &str) -> AwsResult<bool> {
        self.inner.change_insync(change_id).await
    }
    async fn image_exists(
        &self,
        region: &str,
        repository: &str,
        reference: &str,
    ) -> AwsResult<bool> {
        self.inner.image_exists(region, repository, reference).await
    }
    async fn describe_secret(
        &self,
        region: &str,
        name: &str,
    ) -> AwsResult<Option<crate::engine::secrets::SecretSeen>> {
        self.inner.describe_secret(region, name).await
    }
    async fn health_check_observations(&self, id: &str) -> AwsResult<Vec<CheckerObservation>> {
        self.inner.health_check_observations(id).await
    }
    async fn alarm_state(&self, region: &str, name: &str) -> AwsResult<Option<String>> {
        self.inner.alarm_state(region, name).await
    }
    async fn metric_datapoint(
        &self,
        region: &str,
        query: &MetricQuery,
    ) -> AwsResult<Option<MetricDatapoint>> {
        self.inner.metric_datapoint(region, query).await
    }
}

/// A cluster effector, refusing to scale unless leadership is confirmed first.
pub struct LeaderClusters<C> {
    pub inner: C,
    pub leadership: Arc<dyn LeaseCheck>,
}

#[async_trait]
impl<C: Clusters> Clusters for LeaderClusters<C> {
    async fn workload(
        &self,
        region: &str,
        w: &WorkloadSpec,
    ) -> Result<Option<WorkloadState>, ClusterError> {
        self.inner.workload(region, w).await
    }
    async fn scale(
        &self,
        region: &str,
        w: &WorkloadSpec,
        replicas: i32,
        hold: bool,
    ) -> Result<i32, ClusterError> {
        self.leadership
            .confirm()
            .await
            .map_err(ClusterError::Transient)?;
        self.inner.scale(region, w, replicas, hold).await
    }
    async fn pods(
        &self,
        region: &str,
        w: &WorkloadSpec,
        selector: &str,
    ) -> Result<usize, ClusterError> {
        self.inner.pods(region, w, selector).await
    }
    async fn object_exists(
        &self,
        region: &str,
        namespace: &str,
        kind: crate::engine::pod_refs::RefKind,
        name: &str,
    ) -> Result<bool, ClusterError> {
        self.inner
            .object_exists(region, namespace, kind, name)
            .await
    }
    async fn autoscalers(
        &self,
        region: &str,
        namespace: &str,
    ) -> Result<
        Vec<(
            crate::engine::autoscalers::AutoscalerKind,
            serde_json::Value,
        )>,
        ClusterError,
    > {
        self.inner.autoscalers(region, namespace).await
    }
    async fn config_values(
        &self,
        region: &str,
        cfg: &crate::api::ConfigSpec,
        keys: &[String],
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, ClusterError> {
        self.inner.config_values(region, cfg, keys).await
    }
    async fn write_config(
        &self,
        region: &str,
        cfg: &crate::api::ConfigSpec,
        values: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        self.leadership
            .confirm()
            .await
            .map_err(ClusterError::Transient)?;
        self.inner.write_config(region, cfg, values).await
    }
    async fn config_writable(
        &self,
        region: &str,
        cfg: &crate::api::ConfigSpec,
        values: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        // A dry run changes nothing: no leadership to confirm.
        self.inner.config_writable(region, cfg, values).await
    }
    async fn restart(&self, region: &str, w: &WorkloadSpec, at: &str) -> Result<(), ClusterError> {
        self.leadership
            .confirm()
            .await
            .map_err(ClusterError::Transient)?;
        self.inner.restart(region, w, at).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: &str, renewed: Timestamp, seconds: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(seconds),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A read that takes `took` of (paused) time and counts itself.
    async fn counted_read(reads: &std::sync::atomic::AtomicUsize, took: u64) -> Result<(), String> {
        reads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(took)).await;
        Ok(())
    }

    /// `calls` checks asked for at once (as a pass's calls are), each answered Ok: the reads
    /// made in all.
    async fn reads_when_asked_together(
        check: &SharedCheck,
        reads: &std::sync::atomic::AtomicUsize,
        calls: usize,
    ) -> usize {
        let timeout = std::time::Duration::from_secs(5);
        let before = reads.load(Ordering::SeqCst);
        let together = futures::future::join_all(
            (0..calls).map(|_| check.check(timeout, || counted_read(reads, 5))),
        )
        .await;
        assert!(together.iter().all(|r| r.is_ok()));
        reads.load(Ordering::SeqCst) - before
    }

    #[tokio::test(start_paused = true)]
    async fn calls_asked_together_share_one_lease_read_but_never_an_older_one() {
        let check = SharedCheck::default();
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let timeout = std::time::Duration::from_secs(5);
        // Three calls asked for at once: one read.
        assert_eq!(reads_when_asked_together(&check, &reads, 3).await, 1);
        // A call asked for while a read is in flight must not take that read, which was
        // sent before it asked: it waits, and reads again.
        let first = check.check(timeout, || counted_read(&reads, 100));
        let later = async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            check.check(timeout, || counted_read(&reads, 10)).await
        };
        let (a, b) = tokio::join!(first, later);
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }

    /// On the real clock, each of a pass's calls asks a little after the one before it:
    /// they must still share the one read sent after all of them asked.
    #[tokio::test]
    async fn the_calls_of_one_pass_share_one_lease_read_on_the_real_clock() {
        let check = SharedCheck::default();
        let reads = std::sync::atomic::AtomicUsize::new(0);
        assert_eq!(reads_when_asked_together(&check, &reads, 9).await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_lease_read_fails_in_time_and_is_not_reused() {
        let check = SharedCheck::default();
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let timeout = std::time::Duration::from_secs(5);
        let stuck = check
            .check(timeout, || counted_read(&reads, 3_600_000))
            .await;
        assert_eq!(stuck, Err(None), "no answer in time is not a confirmation");
        assert!(
            check
                .check(timeout, || counted_read(&reads, 10))
                .await
                .is_ok()
        );
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_lease_is_held_only_by_its_holder_and_only_until_it_expires() {
        let t0 = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1000);
        let at = |s: i64| t0 + SignedDuration::from_secs(s);
        assert!(holds(&lease("a", t0, 15), "a", at(14)));
        assert!(!holds(&lease("a", t0, 15), "a", at(15)), "expired");
        assert!(!holds(&lease("b", t0, 15), "a", at(1)), "another holder");
        assert!(!holds(&Lease::default(), "a", at(1)), "never held");
    }
}
