//! AWS effectors behind a narrow trait, and their SDK implementation. The SDK's own retries
//! are off: the driver retries transient errors itself and counts every attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_rds::error::{ProvideErrorMetadata, SdkError};

use crate::api::{AliasTarget, ReplicaSettings};
use crate::engine::automatic::{CheckerObservation, MetricDatapoint, MetricQuery};
use crate::engine::dns::{ChangeAction as PlanChangeAction, RecordChange};
use crate::engine::secrets::SecretSeen;
use crate::engine::{AuroraObservation, ClusterSnapshot, LagReading, RdsObservation, RecordSet};
use crate::metrics::{AwsCallLabels, Metrics};

/// An AWS error, classified for retrying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsError {
    pub kind: AwsErrorKind,
    /// The error as AWS or the SDK gave it.
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AwsErrorKind {
    /// Throttling, 5xx, timeouts: retry with backoff.
    Transient,
    /// No connection could be made or kept: the region may be down.
    Unreachable,
    /// Anything else: surface verbatim.
    Permanent,
}

impl AwsError {
    pub fn is_retryable(&self) -> bool {
        self.kind != AwsErrorKind::Permanent
    }
}

impl std::fmt::Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

pub type AwsResult<T> = Result<T, AwsError>;

pub use crate::engine::lag::LagSource;

/// The CloudWatch metric of a lag source: name, dimension, its value, and the factor to
/// seconds (Aurora reports milliseconds).
fn lag_metric(source: &LagSource) -> (&'static str, &'static str, &str, f64) {
    match source {
        LagSource::RdsReplica { instance } => ("ReplicaLag", "DBInstanceIdentifier", instance, 1.0),
        LagSource::AuroraSecondary { cluster } => (
            "AuroraGlobalDBReplicationLag",
            "DBClusterIdentifier",
            cluster,
            0.001,
        ),
    }
}

/// How an Aurora global cluster's writer moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriterMove {
    /// Planned: SwitchoverGlobalCluster, no data loss.
    Switchover,
    /// Unplanned: FailoverGlobalCluster with AllowDataLoss.
    FailoverAllowingDataLoss,
}

/// The answer for one item from a batch read of just that item.
pub fn only<T>(answer: AwsResult<Vec<Option<T>>>) -> AwsResult<Option<T>> {
    Ok(answer?.pop().flatten())
}

/// Single calls made at once, standing for a batch call: the first error fails the batch.
async fn every<T>(
    calls: impl IntoIterator<Item = impl std::future::Future<Output = AwsResult<T>>>,
) -> AwsResult<Vec<T>> {
    futures::future::join_all(calls).await.into_iter().collect()
}

/// The AWS calls Drover makes. Regions are AWS region names.
#[async_trait]
pub trait Aws: Send + Sync {
    async fn describe_instance(&self, region: &str, id: &str) -> AwsResult<Option<RdsObservation>>;
    /// `describe_instance` of several instances of one region, in their order. The real
    /// client describes up to 100 in one call: every database is polled together, and a
    /// call saved is a call not throttled.
    async fn describe_instances(
        &self,
        region: &str,
        ids: &[String],
    ) -> AwsResult<Vec<Option<RdsObservation>>> {
        every(ids.iter().map(|id| self.describe_instance(region, id))).await
    }
    async fn promote_read_replica(&self, region: &str, id: &str) -> AwsResult<()>;
    /// Stops an instance (fencing an old primary): it shows `stopping`, then `stopped`.
    async fn stop_db_instance(&self, region: &str, id: &str) -> AwsResult<()>;
    /// Renames an instance at once (ModifyDBInstance NewDBInstanceIdentifier), freeing its
    /// identifier for a new replica.
    async fn rename_db_instance(&self, region: &str, id: &str, to: &str) -> AwsResult<()>;
    /// Deletes an instance, keeping a final snapshot when one is named (AWS refuses one for
    /// a read replica).
    async fn delete_db_instance(
        &self,
        region: &str,
        id: &str,
        final_snapshot: Option<&str>,
    ) -> AwsResult<()>;
    /// Creates `id` in `region` as a read replica of `source_arn` (another region's primary),
    /// set up as `settings` say.
    async fn create_read_replica(
        &self,
        region: &str,
        id: &str,
        source_arn: &str,
        settings: &ReplicaSettings,
    ) -> AwsResult<()>;
    /// How an instance is set up, as a replica in its place would need; None when it does
    /// not exist.
    async fn instance_settings(&self, region: &str, id: &str)
    -> AwsResult<Option<ReplicaSettings>>;
    /// An instance's ARN; None when it does not exist.
    async fn instance_arn(&self, region: &str, id: &str) -> AwsResult<Option<String>>;
    async fn cluster_arn(&self, region: &str, id: &str) -> AwsResult<Option<String>>;
    /// An instance's endpoint address; None when it does not exist or has none yet.
    async fn instance_endpoint(&self, region: &str, id: &str) -> AwsResult<Option<String>>;
    /// A DB cluster's writer endpoint; None when it does not exist or has none yet.
    async fn cluster_endpoint(&self, region: &str, id: &str) -> AwsResult<Option<String>>;
    /// The snapshots of a DB cluster (`cluster`: its identifier): identifier and creation
    /// time.
    async fn cluster_snapshots(
        &self,
        region: &str,
        cluster: &str,
    ) -> AwsResult<Vec<ClusterSnapshot>>;
    async fn describe_global_cluster(
        &self,
        region: &str,
        id: &str,
    ) -> AwsResult<Option<AuroraObservation>>;
    /// `describe_global_cluster` of several global clusters, in their order. The real
    /// client lists the account's global clusters once (100 a page) for more than one.
    async fn describe_global_clusters(
        &self,
        region: &str,
        ids: &[String],
    ) -> AwsResult<Vec<Option<AuroraObservation>>> {
        every(
            ids.iter()
                .map(|id| self.describe_global_cluster(region, id)),
        )
        .await
    }
    /// Makes `target_arn` the writer of a global cluster.
    async fn move_global_writer(
        &self,
        region: &str,
        id: &str,
        target_arn: &str,
        how: WriterMove,
    ) -> AwsResult<()>;
    /// The newest lag datapoint of the last 5 minutes, in seconds, with its timestamp.
    async fn replica_lag(&self, region: &str, source: &LagSource) -> AwsResult<Option<LagReading>>;
    /// `replica_lag` of several sources in one region, in their order. The real client
    /// reads them in one GetMetricData call per 100 sources: a failover polls every
    /// database's lag, and CloudWatch throttles calls, not metrics.
    async fn replica_lags(
        &self,
        region: &str,
        sources: &[LagSource],
    ) -> AwsResult<Vec<Option<LagReading>>> {
        every(sources.iter().map(|s| self.replica_lag(region, s))).await
    }
    async fn health_check_healthy(&self, id: &str) -> AwsResult<bool>;
    async fn list_records(&self, zone: &str) -> AwsResult<Vec<RecordSet>>;
    /// Submits one change batch (UPSERTs and exact DELETEs) and returns the change ID.
    async fn change_records(&self, zone: &str, changes: &[RecordChange]) -> AwsResult<String>;
    /// Whether a change is INSYNC.
    async fn change_insync(&self, change_id: &str) -> AwsResult<bool>;
    async fn image_exists(
        &self,
        region: &str,
        repository: &str,
        reference: &str,
    ) -> AwsResult<bool>;
    /// Secrets Manager DescribeSecret (never its value): whether it is a replica, and of
    /// which region, or its replicas' status; None when there is no such secret.
    async fn describe_secret(&self, region: &str, name: &str) -> AwsResult<Option<SecretSeen>>;
    /// Route 53 GetHealthCheckStatus: each checker's last report, with its region.
    async fn health_check_observations(&self, id: &str) -> AwsResult<Vec<CheckerObservation>>;
    /// CloudWatch DescribeAlarms: the alarm's state (ALARM, OK, INSUFFICIENT_DATA), or None
    /// when there is no such alarm.
    async fn alarm_state(&self, region: &str, name: &str) -> AwsResult<Option<String>>;
    /// CloudWatch GetMetricData: the newest datapoint within `query.lookback`.
    async fn metric_datapoint(
        &self,
        region: &str,
        query: &MetricQuery,
    ) -> AwsResult<Option<MetricDatapoint>>;
}

const THROTTLING_CODES: [&str; 6] = [
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "PriorRequestNotComplete",
];

/// Classifies an SDK error. `not_found` codes map to Ok(None) at the call sites.
fn classify<E>(err: SdkError<E, aws_sdk_rds::config::http::HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let message = error_chain(&err);
    let kind = match &err {
        // Drover's own rate limit refusing a backed-up call. Found by type: the HTTP client
        // also marks a dropped connection TransientError, and that is a lost region.
        SdkError::DispatchFailure(_) if is_backlogged(&err) => AwsErrorKind::Transient,
        SdkError::DispatchFailure(_) => AwsErrorKind::Unreachable,
        SdkError::TimeoutError(_) => AwsErrorKind::Transient,
        SdkError::ResponseError(r) => {
            if r.raw().status().is_server_error() {
                AwsErrorKind::Transient
            } else {
                AwsErrorKind::Permanent
            }
        }
        SdkError::ServiceError(se) => {
            let throttled = se
                .err()
                .code()
                .is_some_and(|c| THROTTLING_CODES.contains(&c));
            if throttled || se.raw().status().is_server_error() {
                AwsErrorKind::Transient
            } else {
                AwsErrorKind::Permanent
            }
        }
        _ => AwsErrorKind::Permanent,
    };
    let message = match &err {
        SdkError::ServiceError(se) => format!(
            "{}: {}",
            se.err().code().unwrap_or("Unknown"),
            se.err().message().unwrap_or(&message)
        ),
        _ => message,
    };
    AwsError { kind, message }
}

fn is_backlogged(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.is::<crate::ratelimit::Backlogged>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The error and its sources, by Display only (the SDK's Debug output is unreadable).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

fn error_code<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_sdk_rds::config::http::HttpResponse>,
) -> Option<String> {
    match err {
        SdkError::ServiceError(se) => se.err().code().map(str::to_string),
        _ => None,
    }
}

#[derive(Clone)]
struct RegionClients {
    rds: aws_sdk_rds::Client,
    ecr: aws_sdk_ecr::Client,
    secrets: aws_sdk_secretsmanager::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
}

fn rds_observation(d: aws_sdk_rds::types::DbInstance) -> RdsObservation {
    RdsObservation {
        status: d.db_instance_status.unwrap_or_default(),
        source: d
            .read_replica_source_db_instance_identifier
            .filter(|s| !s.is_empty()),
        engine: d.engine.unwrap_or_default(),
    }
}

/// What a replica in an instance's place needs of it. Left out: what the replica inherits
/// from its source (engine version, allocated storage, backups), what needs more
/// permissions than re-protection has (tags, enhanced monitoring, Performance Insights),
/// and gp3 IOPS and throughput (AWS refuses them below 400 GiB; gp3 gets its baseline).
/// The next page's marker of an RDS listing, None after the last page. A marker handed
/// back again would page forever: a transient error instead.
fn next_marker(
    operation: &str,
    marker: Option<String>,
    seen: &mut std::collections::HashSet<String>,
) -> AwsResult<Option<String>> {
    match marker.filter(|m| !m.is_empty()) {
        Some(next) if !seen.insert(next.clone()) => Err(AwsError {
            kind: AwsErrorKind::Transient,
            message: format!("{operation} returned the same page marker twice"),
        }),
        next => Ok(next),
    }
}

/// The answers for `ids`, in their order, from what was found by lower-case identifier
/// (RDS identifiers are case-insensitive and answered in lower case).
fn in_order<T: Clone>(ids: &[String], found: &HashMap<String, T>) -> Vec<Option<T>> {
    ids.iter()
        .map(|id| found.get(&id.to_lowercase()).cloned())
        .collect()
}

fn aurora_observation(g: aws_sdk_rds::types::GlobalCluster) -> AuroraObservation {
    let members = g.global_cluster_members.unwrap_or_default();
    AuroraObservation {
        status: g.status.unwrap_or_default(),
        writer_arn: members
            .iter()
            .find(|m| m.is_writer == Some(true))
            .and_then(|m| m.db_cluster_arn.clone()),
        member_arns: members
            .into_iter()
            .filter_map(|m| m.db_cluster_arn)
            .collect(),
    }
}

fn replica_settings(d: aws_sdk_rds::types::DbInstance) -> ReplicaSettings {
    let storage_type = d.storage_type.clone();
    let provisioned = matches!(storage_type.as_deref(), Some("io1" | "io2"));
    ReplicaSettings {
        engine: d.engine,
        db_instance_class: d.db_instance_class,
        db_subnet_group_name: d.db_subnet_group.and_then(|g| g.db_subnet_group_name),
        vpc_security_group_ids: d
            .vpc_security_groups
            .unwrap_or_default()
            .into_iter()
            .filter_map(|g| g.vpc_security_group_id)
            .collect(),
        db_parameter_group_name: d
            .db_parameter_groups
            .unwrap_or_default()
            .into_iter()
            .find_map(|g| g.db_parameter_group_name),
        option_group_name: d
            .option_group_memberships
            .unwrap_or_default()
            .into_iter()
            .find_map(|g| g.option_group_name),
        storage_encrypted: d.storage_encrypted.unwrap_or(false),
        kms_key_id: d.kms_key_id.filter(|k| !k.is_empty()),
        storage_type,
        iops: d.iops.filter(|_| provisioned),
        port: d.endpoint.and_then(|e| e.port).or(d.db_instance_port),
        multi_az: d.multi_az,
        publicly_accessible: d.publicly_accessible,
        deletion_protection: d.deletion_protection,
    }
}

/// The SDK implementation. Configuration comes from the standard AWS environment
/// (`AWS_ENDPOINT_URL`, credentials, region).
pub struct SdkAws {
    base: SdkConfig,
    route53: aws_sdk_route53::Client,
    regions: Mutex<HashMap<String, RegionClients>>,
    metrics: Arc<Metrics>,
    limiter: Arc<crate::ratelimit::Limiter>,
}

impl SdkAws {
    /// `limits`: client-side rate limits by service signing name (see `ratelimit`).
    pub async fn from_env(
        metrics: Arc<Metrics>,
        limits: HashMap<String, crate::ratelimit::RateLimit>,
    ) -> Self {
        use aws_smithy_http_client::tls;
        let limiter = Arc::new(crate::ratelimit::Limiter::new(limits, metrics.clone()));
        // The SDK's default HTTPS client, every request through the limiter first.
        let https = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_https();
        let limited = crate::ratelimit::LimitedClient::new(https, limiter.clone());
        let base = aws_config::defaults(BehaviorVersion::latest())
            .http_client(limited)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .build(),
            )
            .load()
            .await;
        // Route 53 is global; its API lives in us-east-1.
        let route53 = aws_sdk_route53::Client::from_conf(
            aws_sdk_route53::config::Builder::from(&base)
                .region(Region::new("us-east-1"))
                .build(),
        );
        Self {
            base,
            route53,
            regions: Mutex::new(HashMap::new()),
            metrics,
            limiter,
        }
    }

    fn region(&self, region: &str) -> RegionClients {
        let mut regions = match self.regions.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        regions
            .entry(region.to_string())
            .or_insert_with(|| {
                let r = Region::new(region.to_string());
                RegionClients {
                    rds: aws_sdk_rds::Client::from_conf(
                        aws_sdk_rds::config::Builder::from(&self.base)
                            .region(r.clone())
                            .build(),
                    ),
                    ecr: aws_sdk_ecr::Client::from_conf(
                        aws_sdk_ecr::config::Builder::from(&self.base)
                            .region(r.clone())
                            .build(),
                    ),
                    secrets: aws_sdk_secretsmanager::Client::from_conf(
                        aws_sdk_secretsmanager::config::Builder::from(&self.base)
                            .region(r.clone())
                            .build(),
                    ),
                    cloudwatch: aws_sdk_cloudwatch::Client::from_conf(
                        aws_sdk_cloudwatch::config::Builder::from(&self.base)
                            .region(r)
                            .build(),
                    ),
                }
            })
            .clone()
    }

    /// DescribeDBInstances of one instance; None when there is no such instance.
    async fn db_instance(
        &self,
        region: &str,
        id: &str,
    ) -> AwsResult<Option<aws_sdk_rds::types::DbInstance>> {
        let out = self.optional(
            "rds",
            "DescribeDBInstances",
            self.region(region)
                .rds
                .describe_db_instances()
                .db_instance_identifier(id)
                .send()
                .await,
            &["DBInstanceNotFound", "DBInstanceNotFoundFault"],
        );
        Ok(out?.and_then(|o| o.db_instances?.into_iter().next()))
    }

    /// DescribeDBClusters of one cluster.
    async fn db_cluster(
        &self,
        region: &str,
        id: &str,
    ) -> AwsResult<Option<aws_sdk_rds::types::DbCluster>> {
        let out = self.optional(
            "rds",
            "DescribeDBClusters",
            self.region(region)
                .rds
                .describe_db_clusters()
                .db_cluster_identifier(id)
                .send()
                .await,
            &["DBClusterNotFoundFault"],
        );
        Ok(out?.and_then(|o| o.db_clusters?.into_iter().next()))
    }

    /// Classifies an SDK result and counts the call in `drover_aws_calls_total`.
    fn record<T, E>(
        &self,
        service: &'static str,
        operation: &'static str,
        result: Result<T, SdkError<E, aws_sdk_rds::config::http::HttpResponse>>,
    ) -> AwsResult<T>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let throttled = self.answered(service, &result);
        let out = result.map_err(classify);
        self.count(service, operation, &out, throttled);
        out
    }

    /// Tells the rate limiter how `service` answered: a throttling answer slows its
    /// buckets down, any other lets them speed back up. Returns whether it throttled.
    fn answered<T, E>(
        &self,
        service: &'static str,
        result: &Result<T, SdkError<E, aws_sdk_rds::config::http::HttpResponse>>,
    ) -> bool
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        // Only the service's answers count: a timeout or a connection failure says nothing
        // of its rate.
        let throttled = match result {
            Ok(_) => false,
            Err(e @ SdkError::ServiceError(_)) => {
                error_code(e).is_some_and(|c| THROTTLING_CODES.contains(&c.as_str()))
            }
            Err(_) => return false,
        };
        // Metric label → signing name.
        let signing = if service == "cloudwatch" {
            "monitoring"
        } else {
            service
        };
        self.limiter.answered(signing, throttled);
        throttled
    }

    /// Like `record`, with the given "not found" error codes mapped to Ok(None).
    fn optional<T, E>(
        &self,
        service: &'static str,
        operation: &'static str,
        result: Result<T, SdkError<E, aws_sdk_rds::config::http::HttpResponse>>,
        not_found: &[&str],
    ) -> AwsResult<Option<T>>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let throttled = self.answered(service, &result);
        let out = match result {
            Ok(v) => Ok(Some(v)),
            Err(e) if error_code(&e).is_some_and(|c| not_found.contains(&c.as_str())) => Ok(None),
            Err(e) => Err(classify(e)),
        };
        self.count(service, operation, &out, throttled);
        out
    }

    fn count<T>(
        &self,
        service: &'static str,
        operation: &'static str,
        r: &AwsResult<T>,
        throttled: bool,
    ) {
        let result = match r {
            Ok(_) => "success",
            // A throttling answer is a transient error, counted apart for the alert.
            Err(_) if throttled => "throttled",
            Err(e) => match e.kind {
                AwsErrorKind::Transient => "transient_error",
                AwsErrorKind::Unreachable => "unreachable",
                AwsErrorKind::Permanent => "error",
            },
        };
        self.metrics
            .aws_calls
            .get_or_create(&AwsCallLabels {
                service,
                operation,
                result,
            })
            .inc();
    }
}

#[async_trait]
impl Aws for SdkAws {
    async fn describe_instance(&self, region: &str, id: &str) -> AwsResult<Option<RdsObservation>> {
        Ok(self.db_instance(region, id).await?.map(rds_observation))
    }

    async fn describe_instances(
        &self,
        region: &str,
        ids: &[String],
    ) -> AwsResult<Vec<Option<RdsObservation>>> {
        use aws_sdk_rds::types::Filter;
        // RDS takes at most 100 values per filter; a page holds up to 100 instances.
        const MAX_IDS: usize = 100;
        let mut found: HashMap<String, RdsObservation> = HashMap::new();
        for chunk in ids.chunks(MAX_IDS) {
            // Identifiers are case-insensitive; RDS stores and answers them in lower case.
            let filter = Filter::builder()
                .name("db-instance-id")
                .set_values(Some(chunk.iter().map(|id| id.to_lowercase()).collect()))
                .build();
            let mut marker: Option<String> = None;
            let mut markers = std::collections::HashSet::new();
            loop {
                let out = self.record(
                    "rds",
                    "DescribeDBInstances",
                    self.region(region)
                        .rds
                        .describe_db_instances()
                        .filters(filter.clone())
                        .max_records(100)
                        .set_marker(marker.take())
                        .send()
                        .await,
                )?;
                for d in out.db_instances.unwrap_or_default() {
                    let Some(id) = d.db_instance_identifier.clone() else {
                        continue;
                    };
                    found.insert(id.to_lowercase(), rds_observation(d));
                }
                marker = next_marker("DescribeDBInstances", out.marker, &mut markers)?;
                if marker.is_none() {
                    break;
                }
            }
        }
        Ok(in_order(ids, &found))
    }

    async fn promote_read_replica(&self, region: &str, id: &str) -> AwsResult<()> {
        self.record(
            "rds",
            "PromoteReadReplica",
            self.region(region)
                .rds
                .promote_read_replica()
                .db_instance_identifier(id)
                .send()
                .await
                .map(|_| ()),
        )
    }

    async fn stop_db_instance(&self, region: &str, id: &str) -> AwsResult<()> {
        self.record(
            "rds",
            "StopDBInstance",
            self.region(region)
                .rds
                .stop_db_instance()
                .db_instance_identifier(id)
                .send()
                .await
                .map(|_| ()),
        )
    }

    async fn rename_db_instance(&self, region: &str, id: &str, to: &str) -> AwsResult<()> {
        self.record(
            "rds",
            "ModifyDBInstance",
            self.region(region)
                .rds
                .modify_db_instance()
                .db_instance_identifier(id)
                .new_db_instance_identifier(to)
                .apply_immediately(true)
                .send()
                .await
                .map(|_| ()),
        )
    }

    async fn delete_db_instance(
        &self,
        region: &str,
        id: &str,
        final_snapshot: Option<&str>,
    ) -> AwsResult<()> {
        self.record(
            "rds",
            "DeleteDBInstance",
            self.region(region)
                .rds
                .delete_db_instance()
                .db_instance_identifier(id)
                .skip_final_snapshot(final_snapshot.is_none())
                // Keep the old primary's point-in-time backups for their retention period
                // too (AWS deletes them with the instance by default).
                .delete_automated_backups(false)
                .set_final_db_snapshot_identifier(final_snapshot.map(str::to_string))
                .send()
                .await
                .map(|_| ()),
        )
    }

    async fn create_read_replica(
        &self,
        region: &str,
        id: &str,
        source_arn: &str,
        settings: &ReplicaSettings,
    ) -> AwsResult<()> {
        let st = settings.clone();
        // The key only for an encrypted replica: AWS refuses one for an unencrypted source.
        // No PreSignedUrl: commercial regions ignore it, and the SDK cannot make one.
        let kms_key_id = st.kms_key_id.filter(|_| st.storage_encrypted);
        let security_groups =
            (!st.vpc_security_group_ids.is_empty()).then_some(st.vpc_security_group_ids);
        self.record(
            "rds",
            "CreateDBInstanceReadReplica",
            self.region(region)
                .rds
                .create_db_instance_read_replica()
                .db_instance_identifier(id)
                .source_db_instance_identifier(source_arn)
                .set_db_instance_class(st.db_instance_class)
                .set_db_subnet_group_name(st.db_subnet_group_name)
                .set_vpc_security_group_ids(security_groups)
                .set_db_parameter_group_name(st.db_parameter_group_name)
                .set_option_group_name(st.option_group_name)
                .set_kms_key_id(kms_key_id)
                .set_storage_type(st.storage_type)
                .set_iops(st.iops)
                .set_port(st.port)
                .set_multi_az(st.multi_az)
                .set_publicly_accessible(st.publicly_accessible)
                .set_deletion_protection(st.deletion_protection)
                .send()
                .await
                .map(|_| ()),
        )
    }

    async fn instance_settings(
        &self,
        region: &str,
        id: &str,
    ) -> AwsResult<Option<ReplicaSettings>> {
        Ok(self.db_instance(region, id).await?.map(replica_settings))
    }

    async fn instance_arn(&self, region: &str, id: &str) -> AwsResult<Option<String>> {
        Ok(self
            .db_instance(region, id)
            .await?
            .and_then(|d| d.db_instance_arn))
    }

    async fn cluster_arn(&self, region: &str, id: &str) -> AwsResult<Option<String>> {
        if id.starts_with("arn:") {
            return Ok(Some(id.to_string()));
        }
        Ok(self
            .db_cluster(region, id)
            .await?
            .and_then(|c| c.db_cluster_arn))
    }

    async fn instance_endpoint(&self, region: &str, id: &str) -> AwsResult<Option<String>> {
        Ok(self
            .db_instance(region, id)
            .await?
            .and_then(|d| d.endpoint?.address))
    }

    async fn cluster_endpoint(&self, region: &str, id: &str) -> AwsResult<Option<String>> {
        Ok(self.db_cluster(region, id).await?.and_then(|c| c.endpoint))
    }

    async fn cluster_snapshots(
        &self,
        region: &str,
        cluster: &str,
    ) -> AwsResult<Vec<ClusterSnapshot>> {
        let mut found = Vec::new();
        let mut marker: Option<String> = None;
        // No SnapshotType filter: AWS lists its failover snapshot as a system snapshot, and
        // the default (automated and manual) costs the same call. A cluster keeps one
        // automated snapshot a day over its retention (≤ 35 days) plus manual ones; the
        // page cap bounds a misbehaving answer.
        for _ in 0..20 {
            let out = self.record(
                "rds",
                "DescribeDBClusterSnapshots",
                self.region(region)
                    .rds
                    .describe_db_cluster_snapshots()
                    .db_cluster_identifier(cluster)
                    .set_marker(marker.clone())
                    .send()
                    .await,
            )?;
            found.extend(
                out.db_cluster_snapshots
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|s| {
                        Some(ClusterSnapshot {
                            created: s
                                .snapshot_create_time
                                .and_then(|t| SystemTime::try_from(t).ok()),
                            identifier: s.db_cluster_snapshot_identifier?,
                        })
                    }),
            );
            marker = out.marker.filter(|m| !m.is_empty());
            if marker.is_none() {
                break;
            }
        }
        Ok(found)
    }

    async fn describe_global_cluster(
        &self,
        region: &str,
        id: &str,
    ) -> AwsResult<Option<AuroraObservation>> {
        let out = self.optional(
            "rds",
            "DescribeGlobalClusters",
            self.region(region)
                .rds
                .describe_global_clusters()
                .global_cluster_identifier(id)
                .send()
                .await,
            &["GlobalClusterNotFoundFault"],
        );
        Ok(out?
            .and_then(|o| o.global_clusters?.into_iter().next())
            .map(aurora_observation))
    }

    async fn describe_global_clusters(
        &self,
        region: &str,
        ids: &[String],
    ) -> AwsResult<Vec<Option<AuroraObservation>>> {
        if ids.len() < 2 {
            return every(
                ids.iter()
                    .map(|id| self.describe_global_cluster(region, id)),
            )
            .await;
        }
        // Global clusters have no filter by identifier: one listing of all, paged.
        let mut found: HashMap<String, AuroraObservation> = HashMap::new();
        let mut marker: Option<String> = None;
        let mut markers = std::collections::HashSet::new();
        loop {
            let out = self.record(
                "rds",
                "DescribeGlobalClusters",
                self.region(region)
                    .rds
                    .describe_global_clusters()
                    .max_records(100)
                    .set_marker(marker.take())
                    .send()
                    .await,
            )?;
            for g in out.global_clusters.unwrap_or_default() {
                if let Some(id) = g.global_cluster_identifier.clone() {
                    found.insert(id.to_lowercase(), aurora_observation(g));
                }
            }
            marker = next_marker("DescribeGlobalClusters", out.marker, &mut markers)?;
            if marker.is_none() {
                break;
            }
        }
        Ok(in_order(ids, &found))
    }

    async fn move_global_writer(
        &self,
        region: &str,
        id: &str,
        target_arn: &str,
        how: WriterMove,
    ) -> AwsResult<()> {
        let rds = &self.region(region).rds;
        match how {
            WriterMove::Switchover => self
                .record(
                    "rds",
                    "SwitchoverGlobalCluster",
                    rds.switchover_global_cluster()
                        .global_cluster_identifier(id)
                        .target_db_cluster_identifier(target_arn)
                        .send()
                        .await,
                )
                .map(|_| ()),
            WriterMove::FailoverAllowingDataLoss => self
                .record(
                    "rds",
                    "FailoverGlobalCluster",
                    rds.failover_global_cluster()
                        .global_cluster_identifier(id)
                        .target_db_cluster_identifier(target_arn)
                        .allow_data_loss(true)
                        .send()
                        .await,
                )
                .map(|_| ()),
        }
    }

    async fn replica_lag(&self, region: &str, source: &LagSource) -> AwsResult<Option<LagReading>> {
        only(
            self.replica_lags(region, std::slice::from_ref(source))
                .await,
        )
    }

    async fn replica_lags(
        &self,
        region: &str,
        sources: &[LagSource],
    ) -> AwsResult<Vec<Option<LagReading>>> {
        use aws_sdk_cloudwatch::primitives::DateTime;
        use aws_sdk_cloudwatch::types::{
            Dimension, Metric, MetricDataQuery, MetricStat, StatusCode,
        };
        // GetMetricData takes at most 500 queries and returns at most 100,800 datapoints
        // before paging; 100 queries over 5 minutes stay within that even at 1 s resolution.
        const MAX_QUERIES: usize = 100;
        let mut readings = Vec::with_capacity(sources.len());
        for chunk in sources.chunks(MAX_QUERIES) {
            let queries = chunk.iter().enumerate().map(|(i, source)| {
                let (name, dimension, value, _) = lag_metric(source);
                MetricDataQuery::builder()
                    .id(format!("q{i}"))
                    .metric_stat(
                        MetricStat::builder()
                            .metric(
                                Metric::builder()
                                    .namespace("AWS/RDS")
                                    .metric_name(name)
                                    .dimensions(
                                        Dimension::builder().name(dimension).value(value).build(),
                                    )
                                    .build(),
                            )
                            .period(1)
                            .stat("Maximum")
                            .build(),
                    )
                    .build()
            });
            let now = SystemTime::now();
            let out = self.record(
                "cloudwatch",
                "GetMetricData",
                self.region(region)
                    .cloudwatch
                    .get_metric_data()
                    .set_metric_data_queries(Some(queries.collect()))
                    .start_time(DateTime::from(now - Duration::from_secs(300)))
                    .end_time(DateTime::from(now + Duration::from_secs(60)))
                    .send()
                    .await,
            )?;
            // Every query must come back: a missing or failed one is an unanswered read,
            // never "no datapoint", which a gate could read as an unknown lag.
            let mut newest: Vec<Option<Option<LagReading>>> = vec![None; chunk.len()];
            for result in out.metric_data_results.unwrap_or_default() {
                let Some(i) = result
                    .id
                    .as_deref()
                    .and_then(|id| id.strip_prefix('q'))
                    .and_then(|i| i.parse::<usize>().ok())
                    .filter(|i| *i < chunk.len())
                else {
                    continue;
                };
                let failed = match result.status_code {
                    Some(StatusCode::Forbidden) => Some(AwsErrorKind::Permanent),
                    Some(StatusCode::InternalError) => Some(AwsErrorKind::Transient),
                    _ => None,
                };
                if let Some(kind) = failed {
                    return Err(AwsError {
                        kind,
                        message: format!(
                            "GetMetricData: {} for {}: {}",
                            lag_metric(&chunk[i]).0,
                            lag_metric(&chunk[i]).2,
                            result
                                .messages
                                .unwrap_or_default()
                                .iter()
                                .filter_map(|m| m.value.clone())
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                    });
                }
                let values = result.values.unwrap_or_default();
                let stamps = result.timestamps.unwrap_or_default();
                let scale = lag_metric(&chunk[i]).3;
                // -1 stays -1 whatever the unit: it means "not running", not a lag.
                let points: Vec<(f64, SystemTime)> = values
                    .into_iter()
                    .zip(stamps)
                    .filter_map(|(v, at)| {
                        let seconds = if v < 0.0 { v } else { v * scale };
                        Some((seconds, SystemTime::try_from(at).ok()?))
                    })
                    .collect();
                newest[i] = Some(crate::engine::lag::newest_reading(&points));
            }
            for (i, reading) in newest.into_iter().enumerate() {
                let Some(reading) = reading else {
                    return Err(AwsError {
                        kind: AwsErrorKind::Transient,
                        message: format!(
                            "GetMetricData returned no result for {} of {}",
                            lag_metric(&chunk[i]).0,
                            lag_metric(&chunk[i]).2
                        ),
                    });
                };
                readings.push(reading);
            }
        }
        Ok(readings)
    }

    async fn health_check_healthy(&self, id: &str) -> AwsResult<bool> {
        let out = self.record(
            "route53",
            "GetHealthCheckStatus",
            self.route53
                .get_health_check_status()
                .health_check_id(id)
                .send()
                .await,
        );
        let observations = out?.health_check_observations;
        let healthy = observations
            .iter()
            .filter(|o| {
                o.status_report
                    .as_ref()
                    .and_then(|r| r.status.as_deref())
                    .is_some_and(|s| s.starts_with("Success"))
            })
            .count();
        // Route 53 considers a check healthy when more than 18% of checkers see it healthy.
        Ok(!observations.is_empty() && healthy * 100 > observations.len() * 18)
    }

    async fn list_records(&self, zone: &str) -> AwsResult<Vec<RecordSet>> {
        let mut records = Vec::new();
        let mut next: Option<(
            String,
            Option<aws_sdk_route53::types::RrType>,
            Option<String>,
        )> = None;
        loop {
            // No MaxItems: the bed's moto loops on pages that split a failover/weighted set.
            let mut call = self
                .route53
                .list_resource_record_sets()
                .hosted_zone_id(zone);
            if let Some((name, rtype, ident)) = next.take() {
                call = call
                    .start_record_name(name)
                    .set_start_record_type(rtype)
                    .set_start_record_identifier(ident);
            }
            let out = self.record("route53", "ListResourceRecordSets", call.send().await);
            let out = out?;
            for set in out.resource_record_sets {
                records.push(RecordSet {
                    name: set.name,
                    record_type: set.r#type.as_str().to_string(),
                    set_identifier: set.set_identifier,
                    failover: set.failover.map(|f| f.as_str().to_string()),
                    weight: set.weight,
                    ttl: set.ttl,
                    values: set
                        .resource_records
                        .unwrap_or_default()
                        .into_iter()
                        .map(|r| r.value)
                        .collect(),
                    alias: set.alias_target.map(|a| AliasTarget {
                        hosted_zone_id: a.hosted_zone_id,
                        dns_name: a.dns_name,
                        evaluate_target_health: a.evaluate_target_health,
                    }),
                    health_check_id: set.health_check_id,
                });
            }
            match (out.is_truncated, out.next_record_name) {
                (true, Some(name)) => {
                    next = Some((name, out.next_record_type, out.next_record_identifier))
                }
                _ => return Ok(records),
            }
        }
    }

    async fn change_records(&self, zone: &str, changes: &[RecordChange]) -> AwsResult<String> {
        use aws_sdk_route53::types::{
            AliasTarget as R53Alias, Change, ChangeAction, ChangeBatch, ResourceRecord,
            ResourceRecordSet, ResourceRecordSetFailover, RrType,
        };
        let invalid = |e: aws_sdk_route53::error::BuildError| AwsError {
            kind: AwsErrorKind::Permanent,
            message: format!("building the change batch: {e}"),
        };
        let mut batch_changes = Vec::new();
        for change in changes {
            let r = &change.record;
            let mut set = ResourceRecordSet::builder()
                .name(&r.name)
                .r#type(RrType::from(r.record_type.as_str()))
                .set_set_identifier(r.set_identifier.clone())
                .set_failover(r.failover.as_deref().map(ResourceRecordSetFailover::from))
                .set_weight(r.weight)
                .set_ttl(r.ttl)
                .set_health_check_id(r.health_check_id.clone());
            for v in &r.values {
                set = set.resource_records(
                    ResourceRecord::builder()
                        .value(v)
                        .build()
                        .map_err(invalid)?,
                );
            }
            if let Some(a) = &r.alias {
                set = set.alias_target(
                    R53Alias::builder()
                        .hosted_zone_id(&a.hosted_zone_id)
                        .dns_name(&a.dns_name)
                        .evaluate_target_health(a.evaluate_target_health)
                        .build()
                        .map_err(invalid)?,
                );
            }
            let action = match change.action {
                PlanChangeAction::Upsert => ChangeAction::Upsert,
                PlanChangeAction::Delete => ChangeAction::Delete,
            };
            batch_changes.push(
                Change::builder()
                    .action(action)
                    .resource_record_set(set.build().map_err(invalid)?)
                    .build()
                    .map_err(invalid)?,
            );
        }
        let batch = ChangeBatch::builder()
            .comment("drover failover")
            .set_changes(Some(batch_changes))
            .build()
            .map_err(invalid)?;
        let out = self.record(
            "route53",
            "ChangeResourceRecordSets",
            self.route53
                .change_resource_record_sets()
                .hosted_zone_id(zone)
                .change_batch(batch)
                .send()
                .await,
        );
        Ok(out?.change_info.map(|c| c.id).unwrap_or_default())
    }

    async fn change_insync(&self, change_id: &str) -> AwsResult<bool> {
        let out = self.record(
            "route53",
            "GetChange",
            self.route53.get_change().id(change_id).send().await,
        );
        Ok(out?
            .change_info
            .is_some_and(|c| c.status.as_str() == "INSYNC"))
    }

    async fn image_exists(
        &self,
        region: &str,
        repository: &str,
        reference: &str,
    ) -> AwsResult<bool> {
        use aws_sdk_ecr::types::ImageIdentifier;
        let id = if reference.starts_with("sha256:") {
            ImageIdentifier::builder().image_digest(reference).build()
        } else {
            ImageIdentifier::builder().image_tag(reference).build()
        };
        let out = self.optional(
            "ecr",
            "DescribeImages",
            self.region(region)
                .ecr
                .describe_images()
                .repository_name(repository)
                .image_ids(id)
                .send()
                .await,
            &["ImageNotFoundException", "RepositoryNotFoundException"],
        );
        Ok(out?.is_some_and(|o| !o.image_details.unwrap_or_default().is_empty()))
    }

    async fn describe_secret(&self, region: &str, name: &str) -> AwsResult<Option<SecretSeen>> {
        let out = self.optional(
            "secretsmanager",
            "DescribeSecret",
            self.region(region)
                .secrets
                .describe_secret()
                .secret_id(name)
                .send()
                .await,
            &["ResourceNotFoundException"],
        )?;
        Ok(out.map(|d| SecretSeen {
            // AWS names a primary's own region here too: only another region is a source.
            primary_region: d.primary_region.filter(|r| !r.is_empty() && r != region),
            deleted: d.deleted_date.is_some(),
            replication: d
                .replication_status
                .unwrap_or_default()
                .into_iter()
                .map(|r| {
                    (
                        r.region.unwrap_or_default(),
                        r.status.map(|s| s.as_str().to_string()).unwrap_or_default(),
                        r.status_message,
                    )
                })
                .collect(),
        }))
    }

    async fn health_check_observations(&self, id: &str) -> AwsResult<Vec<CheckerObservation>> {
        let out = self.record(
            "route53",
            "GetHealthCheckStatus",
            self.route53
                .get_health_check_status()
                .health_check_id(id)
                .send()
                .await,
        )?;
        Ok(out
            .health_check_observations
            .into_iter()
            .map(|o| {
                let report = o.status_report.as_ref();
                let status = report.and_then(|r| r.status.as_deref()).unwrap_or_default();
                CheckerObservation {
                    region: o
                        .region
                        .as_ref()
                        .map_or_else(|| "unknown".to_string(), |r| r.as_str().to_string()),
                    healthy: if status.starts_with("Success") {
                        Some(true)
                    } else if status.starts_with("Failure") {
                        Some(false)
                    } else {
                        None
                    },
                    checked_at: report
                        .and_then(|r| r.checked_time)
                        .and_then(|t| SystemTime::try_from(t).ok()),
                }
            })
            .collect())
    }

    async fn alarm_state(&self, region: &str, name: &str) -> AwsResult<Option<String>> {
        use aws_sdk_cloudwatch::types::AlarmType;
        let out = self.record(
            "cloudwatch",
            "DescribeAlarms",
            self.region(region)
                .cloudwatch
                .describe_alarms()
                .alarm_names(name)
                .alarm_types(AlarmType::MetricAlarm)
                .alarm_types(AlarmType::CompositeAlarm)
                .send()
                .await,
        )?;
        let metric = out
            .metric_alarms
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.alarm_name.as_deref() == Some(name))
            .find_map(|a| a.state_value);
        let composite = || {
            out.composite_alarms
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a.alarm_name.as_deref() == Some(name))
                .find_map(|a| a.state_value)
        };
        Ok(metric.or_else(composite).map(|s| s.as_str().to_string()))
    }

    async fn metric_datapoint(
        &self,
        region: &str,
        query: &MetricQuery,
    ) -> AwsResult<Option<MetricDatapoint>> {
        use aws_sdk_cloudwatch::primitives::DateTime;
        use aws_sdk_cloudwatch::types::{
            Dimension, Metric, MetricDataQuery, MetricStat, ScanBy, StatusCode,
        };
        let metric = Metric::builder()
            .namespace(&query.namespace)
            .metric_name(&query.metric_name)
            .set_dimensions(Some(
                query
                    .dimensions
                    .iter()
                    .map(|(name, value)| Dimension::builder().name(name).value(value).build())
                    .collect(),
            ))
            .build();
        let data_query = MetricDataQuery::builder()
            .id("q0")
            .metric_stat(
                MetricStat::builder()
                    .metric(metric)
                    .period(query.period_seconds)
                    .stat(&query.statistic)
                    .build(),
            )
            .build();
        let now = SystemTime::now();
        let out = self.record(
            "cloudwatch",
            "GetMetricData",
            self.region(region)
                .cloudwatch
                .get_metric_data()
                .metric_data_queries(data_query)
                .scan_by(ScanBy::TimestampDescending)
                .start_time(DateTime::from(now - query.lookback))
                .end_time(DateTime::from(now))
                .send()
                .await,
        )?;
        let Some(result) = out
            .metric_data_results
            .unwrap_or_default()
            .into_iter()
            .find(|r| r.id.as_deref() == Some("q0"))
        else {
            // An unanswered query is an unanswered read, not "no datapoint".
            return Err(AwsError {
                kind: AwsErrorKind::Transient,
                message: format!("GetMetricData returned no result for {}", query.metric_name),
            });
        };
        if matches!(
            result.status_code,
            Some(StatusCode::Forbidden | StatusCode::InternalError)
        ) {
            return Err(AwsError {
                kind: AwsErrorKind::Transient,
                message: format!(
                    "GetMetricData for {}: {:?}",
                    query.metric_name, result.status_code
                ),
            });
        }
        Ok(result
            .values
            .unwrap_or_default()
            .into_iter()
            .zip(result.timestamps.unwrap_or_default())
            .filter_map(|(value, at)| {
                Some(MetricDatapoint {
                    value,
                    at: SystemTime::try_from(at).ok()?,
                })
            })
            .max_by(|a, b| a.at.cmp(&b.at)))
    }
}

/// An ECR image reference split into (repository, tag or digest). Not ECR → None.
pub fn parse_ecr_image(image: &str) -> Option<(String, String)> {
    let (host, rest) = image.split_once('/')?;
    if !(host.contains(".dkr.ecr.") && host.ends_with(".amazonaws.com")) {
        return None;
    }
    // `repo:tag@sha256:…` names the image by its digest; the tag is only a label.
    if let Some((named, digest)) = rest.split_once('@') {
        let repo = named.split_once(':').map_or(named, |(repo, _tag)| repo);
        return Some((repo.to_string(), digest.to_string()));
    }
    match rest.rsplit_once(':') {
        Some((repo, tag)) => Some((repo.to_string(), tag.to_string())),
        None => Some((rest.to_string(), "latest".to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ecr_references() {
        assert_eq!(
            parse_ecr_image("123456789012.dkr.ecr.us-east-1.amazonaws.com/shop/web:1.4.2"),
            Some(("shop/web".into(), "1.4.2".into()))
        );
        assert_eq!(
            parse_ecr_image("123456789012.dkr.ecr.us-west-2.amazonaws.com/shop/web@sha256:ab"),
            Some(("shop/web".into(), "sha256:ab".into()))
        );
        assert_eq!(
            parse_ecr_image(
                "123456789012.dkr.ecr.us-west-2.amazonaws.com/shop/web:1.4.2@sha256:ab"
            ),
            Some(("shop/web".into(), "sha256:ab".into()))
        );
        assert_eq!(
            parse_ecr_image("123456789012.dkr.ecr.us-west-2.amazonaws.com/cron"),
            Some(("cron".into(), "latest".into()))
        );
        assert_eq!(parse_ecr_image("docker.io/library/nginx:1.27"), None);
        assert_eq!(parse_ecr_image("nginx"), None);
    }

    fn dispatch_failure(source: Box<dyn std::error::Error + Send + Sync>) -> AwsErrorKind {
        use aws_sdk_rds::operation::describe_db_instances::DescribeDBInstancesError;
        use aws_smithy_runtime_api::client::result::ConnectorError;
        let connector = ConnectorError::other(
            source,
            Some(aws_smithy_types::retry::ErrorKind::TransientError),
        );
        classify(SdkError::<DescribeDBInstancesError, _>::dispatch_failure(
            connector,
        ))
        .kind
    }

    #[test]
    fn a_dropped_connection_is_unreachable_and_drovers_own_limit_is_transient() {
        // The HTTP client marks a connection closed mid-request TransientError too.
        let dropped = std::io::Error::other("connection closed before message completed");
        assert_eq!(
            dispatch_failure(Box::new(dropped)),
            AwsErrorKind::Unreachable
        );
        let backlogged = crate::ratelimit::Backlogged {
            service: "rds".into(),
            region: "us-east-1".into(),
            wait: std::time::Duration::from_secs(9),
        };
        assert_eq!(
            dispatch_failure(Box::new(backlogged)),
            AwsErrorKind::Transient
        );
    }
}
