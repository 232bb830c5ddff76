//! `DisasterRecoveryPlan`: what fails over, where, and how.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A multi-region disaster recovery plan: the regions and their clusters, the databases,
/// DNS records and workloads that move when the active region changes, and the recovery
/// objectives the plan must meet.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "drover.io",
    version = "v1alpha1",
    kind = "DisasterRecoveryPlan",
    namespaced,
    status = "DisasterRecoveryPlanStatus",
    shortname = "drplan",
    shortname = "drp",
    printcolumn = r#"{"name":"Active","type":"string","jsonPath":".status.activeRegion"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DisasterRecoveryPlanSpec {
    /// The regions taking part, at least two. Exactly one starts as Active.
    pub regions: Vec<RegionSpec>,
    /// Databases whose writer moves with the active region.
    #[serde(default)]
    pub databases: Vec<DatabaseSpec>,
    /// Route 53 hosted zones whose records point at the active region.
    #[serde(default)]
    pub dns: Vec<HostedZoneSpec>,
    /// Workloads scaled up in the active region and down in the standby regions.
    #[serde(default)]
    pub workloads: Vec<WorkloadSpec>,
    /// AWS Secrets Manager secrets the workloads read in their own region: preflight
    /// checks that the target region holds each, as a replica in sync with its primary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aws_secrets: Vec<AwsSecretRef>,
    /// ConfigMaps and Secrets whose values follow the active region: written once the
    /// databases are writable (Activate step), then the workloads named restarted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<ConfigSpec>,
    /// Recovery time and recovery point objectives.
    pub objectives: Objectives,
    /// The order in which regions take over, e.g. [use1, usw2, euw1]. A failover-routed
    /// record covers exactly two regions: PRIMARY is the active region, SECONDARY the next
    /// region after it in this order (wrapping). Defaults to the order of `regions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_order: Option<Vec<String>>,
    /// Per-step deadlines; each defaults as documented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<StepTimeouts>,
    /// How the parts of a region that an Unplanned failover could not reach are fenced
    /// when that region answers again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing: Option<FencingSpec>,
    /// Which failovers wait for a person's approval before they change anything. By
    /// default only a failback does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalPolicy>,
    /// How standby RDS databases are protected again after a failover (default Manual).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprotection: Option<ReprotectionSpec>,
    /// Failovers Drover starts by itself on health signals (off unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automatic_failover: Option<crate::api::AutomaticFailoverSpec>,
    /// Drills that run by themselves on a schedule, and how many results are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drills: Option<crate::api::DrillsSpec>,
    /// 0 (default) to 1000. When many plans fail over at once and AWS calls wait for
    /// Drover's rate limits, the calls of plans with a higher priority go first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

/// The highest plan priority.
pub const MAX_PLAN_PRIORITY: i32 = 1000;

impl DisasterRecoveryPlanSpec {
    /// The plan's priority for AWS calls, within bounds (validation reports others).
    pub fn call_priority(&self) -> i32 {
        self.priority.unwrap_or(0).clamp(0, MAX_PLAN_PRIORITY)
    }
}

/// Re-protection of RDS standbys after a failover: each standby becomes a cross-region read
/// replica of the new primary again. Aurora global secondaries follow the writer by
/// themselves and need none.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReprotectionSpec {
    /// Manual (default: report only) or Recreate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rds: Option<RdsReprotection>,
    /// With Recreate: what happens to the old instance in the standby region (default
    /// Rename, which keeps it and its data under a new identifier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_instance: Option<OldInstanceAction>,
}

impl ReprotectionSpec {
    pub fn recreate(&self) -> bool {
        self.rds == Some(RdsReprotection::Recreate)
    }

    pub fn old_instance(&self) -> OldInstanceAction {
        self.old_instance.unwrap_or_default()
    }
}

/// How an RDS standby is protected again.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RdsReprotection {
    /// Drover reports the standby Unprotected; a person rebuilds it.
    #[default]
    Manual,
    /// Drover moves the old instance aside and creates a read replica of the new primary
    /// under its identifier, then waits until it replicates.
    Recreate,
}

/// What Recreate does with the old instance.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OldInstanceAction {
    /// ModifyDBInstance to `<id>-old-<UTC time>`: kept, with its data. AWS cannot rename a
    /// stopped instance.
    #[default]
    Rename,
    /// DeleteDBInstance with a final snapshot `<id>-final-<UTC time>`.
    Delete,
}

/// Which failovers need approval (`drover approve`) before any side effect.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalPolicy {
    /// A failover back to the region that was active before the last failover (default
    /// true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback: Option<bool>,
    /// Every Planned failover (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned: Option<bool>,
    /// Failovers Drover starts by itself on health signals (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automatic: Option<bool>,
    /// How long a failover waits for approval before it is Rejected (default 1h, at most
    /// 7d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// The default for `approval.timeout`.
pub const DEFAULT_APPROVAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

impl ApprovalPolicy {
    pub fn failback(&self) -> bool {
        self.failback.unwrap_or(true)
    }

    pub fn planned(&self) -> bool {
        self.planned.unwrap_or(false)
    }

    pub fn automatic(&self) -> bool {
        self.automatic.unwrap_or(false)
    }

    /// The wait for approval, or its default when unset or invalid (validation reports
    /// invalid values).
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout
            .as_deref()
            .and_then(|v| crate::validate::parse_timeout(v).ok())
            .unwrap_or(DEFAULT_APPROVAL_TIMEOUT)
    }
}

/// How a returning region is fenced.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FencingSpec {
    /// How the old region's RDS primary stops taking writes (default Stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rds_method: Option<RdsFenceMethod>,
}

/// How an old RDS primary is fenced. Aurora needs none: the global cluster demotes its old
/// primary itself when the region returns.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RdsFenceMethod {
    /// StopDBInstance. AWS refuses it for an instance that still has read replicas.
    #[default]
    Stop,
    /// Swap the instance's security groups for one that denies all traffic (not
    /// implemented yet; validation refuses it).
    DenySecurityGroup,
}

impl DisasterRecoveryPlanSpec {
    /// The AWS region of the plan region `name`, when the plan has it.
    pub fn aws_region_of(&self, name: &str) -> Option<&str> {
        self.regions
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.aws_region.as_str())
    }

    /// `spec.fencing.rdsMethod`, with its default.
    pub fn rds_fence_method(&self) -> RdsFenceMethod {
        self.fencing
            .as_ref()
            .and_then(|f| f.rds_method)
            .unwrap_or_default()
    }
}

/// Deadlines for the failover steps, as durations such as "90s". Transient errors are
/// retried until the deadline.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepTimeouts {
    /// Preflight checks (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preflight: Option<String>,
    /// Fencing the old region, including the wait for the standbys to catch up in a Planned
    /// failover (default 5m: RDS publishes lag once a minute, and a zero reading counts only if
    /// taken after the fence). Unplanned failovers use at most 10s here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<String>,
    /// Database promotion until every target is writable (default 15m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<String>,
    /// Scaling the target region up until its workloads are ready (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_up: Option<String>,
    /// DNS change until INSYNC (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
}

/// One region of the plan: an AWS region and the Kubernetes cluster that runs there.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionSpec {
    /// Short name used by Failover.spec.targetRegion and by the per-region entries of
    /// databases, records and workloads, e.g. "use1".
    pub name: String,
    /// The AWS region name, e.g. "us-east-1".
    pub aws_region: String,
    /// How Drover reaches this region's cluster.
    pub cluster: ClusterAccess,
    /// The role the region has before any failover: Active or Standby.
    pub initial_role: RegionRole,
    /// Signals that users are served from this region, chosen by the plan's owner. During
    /// a failover Drover polls them to measure the recovery time users saw: the region
    /// answers when every probe does. At most 8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeSpec>,
}

/// A signal that users are served from a region. Set exactly one of `url` or
/// `route53HealthCheckId`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// An http:// or https:// URL: it answers when a GET returns 2xx or 3xx within
    /// `timeout`. Redirects are not followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// An existing Route 53 health check: it answers when more than 18% of Route 53's
    /// checkers last reported it healthy, as Route 53 itself decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route53_health_check_id: Option<String>,
    /// How long one poll may take, e.g. "2s": from 1s to 10s, 2s by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// How to reach a region's cluster. Set exactly one of `kubeconfigSecretRef` or `inCluster`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAccess {
    /// A Secret holding a kubeconfig for the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<SecretKeyRef>,
    /// Use the cluster the operator itself runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_cluster: Option<bool>,
}

/// A key of a Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The Secret's namespace; defaults to the plan's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The key within the Secret; defaults to "kubeconfig".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl SecretKeyRef {
    pub const DEFAULT_KEY: &'static str = "kubeconfig";

    pub fn key_or_default(&self) -> &str {
        self.key.as_deref().unwrap_or(Self::DEFAULT_KEY)
    }
}

/// The role of a region.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RegionRole {
    Active,
    Standby,
}

/// A database that follows the active region. Set exactly one of `rds` or `auroraGlobal`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// A name for the database, unique in the plan.
    pub name: String,
    /// An RDS instance with cross-region read replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rds: Option<RdsDatabase>,
    /// An Aurora Global Database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aurora_global: Option<AuroraGlobalDatabase>,
}

/// RDS instances, one per region. The instance in the active region is the primary; the
/// others are its cross-region read replicas.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RdsDatabase {
    /// One instance per region of the plan.
    pub instances: Vec<RegionalIdentifier>,
}

/// An Aurora Global Database and its member cluster in each region.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuroraGlobalDatabase {
    /// The global cluster identifier.
    pub global_cluster_identifier: String,
    /// One member DB cluster per region of the plan.
    pub members: Vec<RegionalIdentifier>,
}

/// An AWS resource identifier (or ARN) in one region of the plan.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionalIdentifier {
    /// The plan region name.
    pub region: String,
    /// Identifier or ARN.
    pub identifier: String,
}

/// A Route 53 hosted zone and the records in it that follow the active region.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostedZoneSpec {
    /// The hosted zone ID, e.g. "Z0123456789ABC".
    pub hosted_zone_id: String,
    /// Records switched together, in as few change batches as Route 53's limits allow.
    pub records: Vec<RecordSpec>,
}

/// A DNS record that points at the active region.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordSpec {
    /// Fully qualified record name, e.g. "api.example.com.".
    pub name: String,
    /// Record type: A, AAAA, CNAME, TXT, ...
    #[serde(rename = "type")]
    pub record_type: String,
    /// How the record follows the active region.
    pub routing: RoutingPolicy,
    /// TTL in seconds for value records; ignored for alias targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    /// One target per region of the plan.
    pub targets: Vec<RecordTarget>,
}

/// How a record follows the active region.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RoutingPolicy {
    /// Failover routing: the active region's record is PRIMARY, the next region in
    /// `failoverOrder` SECONDARY; records of other regions are deleted.
    Failover,
    /// Weighted routing: the active region gets weight 100, the others 0.
    Weighted,
    /// A simple record whose value is the active region's target.
    Simple,
}

/// What a record resolves to when a region is active. Set exactly one of `values` or `alias`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordTarget {
    /// The plan region name.
    pub region: String,
    /// Record values, e.g. IP addresses or a host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// An alias target, e.g. a load balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<AliasTarget>,
    /// Set identifier for failover and weighted records; defaults to the region name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_identifier: Option<String>,
    /// Route 53 health check attached to this region's record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_id: Option<String>,
}

/// A Route 53 alias target.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AliasTarget {
    /// The hosted zone ID of the alias target (e.g. the load balancer's zone).
    pub hosted_zone_id: String,
    /// The DNS name of the alias target.
    pub dns_name: String,
    /// Whether Route 53 evaluates the target's health.
    #[serde(default)]
    pub evaluate_target_health: bool,
}

/// A scalable workload present in every region's cluster.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// Kind: Deployment, StatefulSet, CronJob, or any kind with a `scale` subresource. A
    /// CronJob runs in the active region only: suspended everywhere else (`spec.suspend`),
    /// suspended in the old region before promotion and resumed in the target after it.
    pub kind: String,
    /// API version; defaults to apps/v1 for Deployment and StatefulSet and batch/v1 for
    /// CronJob (batch/v1beta1 before Kubernetes 1.21), required otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Namespace of the workload in each region's cluster.
    pub namespace: String,
    /// Name of the workload in each region's cluster.
    pub name: String,
    /// Replicas in the active region.
    pub active_replicas: i32,
    /// Replicas in standby regions (warm standby). Ignored for singletons, which stay at 0.
    #[serde(default)]
    pub standby_replicas: i32,
    /// Never runs in two regions at once (e.g. a cron runner): 0 replicas outside the active region.
    #[serde(default)]
    pub singleton: bool,
    /// Writes to the databases: fenced (scaled to 0) in the old region before promotion.
    #[serde(default)]
    pub writer: bool,
    /// CronJobs only: what happens to the Jobs it is running in the old region when it is
    /// suspended there. Wait (default): the fence waits until they finish, within the
    /// fence timeout. Stop: they are deleted, and the fence waits until their pods are gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_jobs: Option<RunningJobs>,
}

/// What suspending a CronJob does with its running Jobs.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RunningJobs {
    /// Let them finish; the fence waits for them.
    #[default]
    Wait,
    /// Delete them (their pods are deleted in the background); the fence waits until the
    /// pods are gone.
    Stop,
}

impl WorkloadSpec {
    /// The API version, with the default for the built-in kinds.
    pub fn effective_api_version(&self) -> Option<&str> {
        match (self.api_version.as_deref(), self.kind.as_str()) {
            (Some(v), _) => Some(v),
            (None, "Deployment" | "StatefulSet") => Some("apps/v1"),
            (None, "CronJob") => Some("batch/v1"),
            (None, _) => None,
        }
    }

    pub fn is_cron_job(&self) -> bool {
        self.kind == "CronJob"
    }

    /// Runs in one region at most: a writer, a singleton or a CronJob. Fenced (to 0, pods
    /// gone) in the old region before any promotion.
    pub fn fenced(&self) -> bool {
        self.singleton || self.writer || self.is_cron_job()
    }
}

/// Where a ConfigMap or Secret is, and the keys that follow the active region.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSpec {
    pub kind: ConfigKind,
    /// Namespace in each region's cluster.
    pub namespace: String,
    pub name: String,
    pub keys: Vec<ConfigKey>,
    /// Plan workloads of this namespace, by name, restarted (as `kubectl rollout restart`
    /// does) once a value changed, and waited for until rolled out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
}

impl ConfigKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::ConfigMap => "ConfigMap",
            Self::Secret => "Secret",
        }
    }
}

/// One key: a value per region, or the endpoint of a plan database in the active region.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigKey {
    pub key: String,
    /// The value when each region is active, by plan region name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,
    /// A plan database's name: its endpoint address in the active region, read from AWS
    /// once it is writable (RDS: the instance's endpoint; Aurora: its cluster's writer
    /// endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_endpoint: Option<String>,
}

/// A Secrets Manager secret, by name (the same in every region; not an ARN, which names
/// one region).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSecretRef {
    pub name: String,
}

/// Recovery objectives, as durations such as "5m" or "30s".
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Objectives {
    /// Recovery time objective: how long a failover may take.
    pub rto: String,
    /// Recovery point objective: how much data (as replication lag) may be lost.
    pub rpo: String,
    /// How old the newest replication-lag datapoint may be and still count (default 2m;
    /// RDS publishes lag once a minute). An older, missing or negative (-1: replication
    /// not running) reading is unknown lag, which passes no gate without allowDataLoss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_age: Option<String>,
}

/// The default for `objectives.maxLagAge`.
pub const DEFAULT_MAX_LAG_AGE: std::time::Duration = std::time::Duration::from_secs(120);

impl Objectives {
    /// `maxLagAge`, or its default when unset or invalid (validation reports invalid values).
    pub fn max_lag_age(&self) -> std::time::Duration {
        self.max_lag_age
            .as_deref()
            .and_then(|v| crate::validate::parse_timeout(v).ok())
            .unwrap_or(DEFAULT_MAX_LAG_AGE)
    }
}

/// Observed state of a plan.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisasterRecoveryPlanStatus {
    /// The region currently serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_region: Option<String>,
    /// The region that was active before the last failover: a failover to it is a
    /// failback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_active_region: Option<String>,
    /// Readiness of each region's cluster.
    #[serde(default)]
    pub regions: Vec<RegionStatus>,
    /// `Valid` and `Ready` conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Replication lag of each database into each standby region, measured at every
    /// region check.
    #[serde(default)]
    pub replication: Vec<ReplicationStatus>,
    /// The most recent Failover of this plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<LastFailover>,
    /// The last Unplanned failover that moved the active region. Drover looks for the
    /// snapshots AWS takes of what it left behind (Aurora's old volumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_unplanned_move: Option<UnplannedMove>,
    /// Parts of a former active region that an Unplanned failover could not fence. Drover
    /// fences each as soon as its region answers, and removes it once done.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_fences: Vec<PendingFence>,
    /// RDS standbys being protected again (`spec.reprotection.rds: Recreate`), with how far
    /// each got. Every call is recorded here before it is sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reprotections: Vec<Reprotection>,
    /// How long the waiting steps of this plan's recent successful failovers and drills
    /// took, by step and mode. A failover polls sparsely until the quickest of them would
    /// have ended, and densely from there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_durations: Vec<StepDurations>,
    /// Automatic failover: each signal's state, and why it did or did not trigger. Written
    /// by its own field manager (`drover-automatic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automatic_failover: Option<crate::api::AutomaticFailoverStatus>,
    /// Drills: the one running and the last results. Written by its own field manager
    /// (`drover-drills`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drills: Option<crate::api::DrillsStatus>,
}

/// How far the re-protection of one RDS standby got.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ReprotectionState {
    /// Moving the old instance aside (ModifyDBInstance to `renamedTo`).
    Renaming,
    /// Deleting the old instance (final snapshot `finalSnapshot`).
    Deleting,
    /// Creating the read replica of the new primary.
    Creating,
    /// The replica is available; waiting for a known replication lag.
    Replicating,
}

/// One RDS standby being protected again.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reprotection {
    /// The plan's database name.
    pub database: String,
    /// The standby plan region.
    pub region: String,
    /// The standby's instance identifier (the plan's).
    pub instance: String,
    pub state: ReprotectionState,
    /// Whether the call of this state was answered. False: recorded as intent, answer
    /// unknown; the next check observes before sending it again.
    #[serde(default)]
    pub requested: bool,
    /// Where the old instance went (Rename).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_to: Option<String>,
    /// The old instance's final snapshot (Delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_snapshot: Option<String>,
    /// How the old instance was set up, read before it was moved aside: the replica is
    /// created with the same, so it lands where the old standby was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<ReplicaSettings>,
    /// The call of this state was refused: nothing under way. Kept only for its
    /// `settings` (the old instance may have moved after all, by an earlier send whose
    /// answer was lost); the next check starts over with them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// How many calls for this standby AWS refused in a row: each waits twice as long
    /// before the next (a refusal such as a missing KMS grant does not fix itself).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refusals: u32,
    /// A refused call is not made again before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Time>,
    /// When re-protection of this standby began.
    pub since: Time,
    /// What the last check saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The settings of an RDS standby that a new read replica does not inherit across regions
/// (network, parameter and option groups, encryption key) or would get a default for
/// (storage type, Multi-AZ, deletion protection). Read with DescribeDBInstances, passed to
/// CreateDBInstanceReadReplica. Names and IDs are of the standby's own region.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSettings {
    /// The engine (mysql, postgres…): whether a cross-region replica takes a parameter
    /// group. Not sent (a replica has its source's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_instance_class: Option<String>,
    /// Its VPC placement; none would put the replica in the region's default VPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_subnet_group_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vpc_security_group_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_parameter_group_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option_group_name: Option<String>,
    #[serde(default)]
    pub storage_encrypted: bool,
    /// The KMS key (ARN) of an encrypted instance: a key of the standby's region, which a
    /// cross-region replica of an encrypted source must name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_type: Option<String>,
    /// Provisioned IOPS (io1, io2 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_az: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publicly_accessible: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_protection: Option<bool>,
}

/// What a pending fence stops.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum FenceResource {
    /// A writer or singleton workload: scaled to 0 until its pods are gone.
    Workload,
    /// The old RDS primary: fenced by `spec.fencing.rdsMethod`.
    RdsInstance,
}

/// How far a pending fence got.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PendingFenceState {
    /// Nothing sent yet (or the last call was refused).
    #[default]
    Pending,
    /// The call was about to be sent; it may or may not have been. Observed before resending.
    Fencing,
    /// The call was answered; waiting for its effect (pods gone, instance stopping).
    Requested,
}

/// Recent durations of one step in one mode, newest last.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepDurations {
    /// The step (PromoteDatabases or SwitchDns).
    pub step: String,
    /// The failover mode (Planned or Unplanned).
    pub mode: String,
    /// Seconds each of the last few successful runs of the step took, newest last.
    pub recent_seconds: Vec<f64>,
    /// Where each duration starts: PromotionRequest (the first promotion call, for
    /// PromoteDatabases), or, when absent, the step's start. Durations measured otherwise
    /// than the step now measures them are not used, and are replaced by the next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_from: Option<String>,
}

/// A part of a former active region still to be fenced.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingFence {
    /// What it is.
    pub resource: FenceResource,
    /// The plan region it is in.
    pub region: String,
    /// Workloads: the kind, e.g. Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Workloads: the API version, e.g. apps/v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Workloads: the namespace in the region's cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The workload's name, or the RDS instance identifier.
    pub name: String,
    /// Why it is pending.
    pub reason: String,
    /// The Failover that recorded it.
    pub failover: String,
    /// When it was recorded.
    pub since: Time,
    /// How far fencing got.
    #[serde(default)]
    pub state: PendingFenceState,
    /// Whether the region answered at the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
    /// What the last attempt saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl PendingFence {
    /// Whether both entries name the same thing in the same region.
    pub fn same_target(&self, other: &PendingFence) -> bool {
        self.resource == other.resource
            && self.region == other.region
            && self.kind == other.kind
            && self.namespace == other.namespace
            && self.name == other.name
    }

    /// E.g. "Deployment shop/cron in use1" or "RDS instance orders-use1 in use1".
    pub fn describe(&self) -> String {
        match self.resource {
            FenceResource::Workload => format!(
                "{} {}/{} in {}",
                self.kind.as_deref().unwrap_or("workload"),
                self.namespace.as_deref().unwrap_or_default(),
                self.name,
                self.region
            ),
            FenceResource::RdsInstance => {
                format!("RDS instance {} in {}", self.name, self.region)
            }
        }
    }
}

/// Replication lag of one database into one standby region.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationStatus {
    /// The plan's database name.
    pub database: String,
    /// The standby plan region the lag was measured in.
    pub region: String,
    /// Lag in seconds; absent when unknown (not measured, negative, or stale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// RDS: whether the standby replicates from the active region's primary. False after a
    /// failover for replicas that still follow the old primary: they protect nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<bool>,
    /// Protected, Unprotected or Reprotecting; `message` says why or how far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<String>,
    /// Why the lag is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the lag was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_at: Option<Time>,
    /// Aurora, in the region an Unplanned failover left: the snapshot AWS took of the old
    /// primary's volume when the region recovered. It holds the writes that failover lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_volume_snapshot: Option<OldVolumeSnapshot>,
}

/// The system snapshot AWS takes of an old Aurora primary's volume before it re-adds the
/// cluster as a secondary after an unplanned global failover
/// (`rds:unplanned-global-failover-<cluster>-<time>`). AWS deletes it with the cluster's
/// backup retention: copy it to a manual snapshot to keep it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OldVolumeSnapshot {
    /// The DB cluster snapshot identifier.
    pub identifier: String,
    /// The AWS region it is in: the old primary's.
    pub aws_region: String,
    /// The DB cluster it is a snapshot of.
    pub cluster: String,
    /// The Failover after which AWS took it.
    pub failover: String,
    /// When AWS took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
}

/// Readiness of one region.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionStatus {
    /// The plan region name.
    pub name: String,
    /// The cluster answered and every workload exists there.
    pub ready: bool,
    /// Why the region is not ready, or the cluster's version when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the region was last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked: Option<Time>,
}

/// An Unplanned failover that moved the active region.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnplannedMove {
    /// The Failover's name.
    pub name: String,
    /// The region it left.
    pub from_region: String,
    /// The region it made active.
    pub to_region: String,
    /// When the Failover was created: nothing it caused happened before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
}

/// A reference to the last Failover of a plan.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastFailover {
    /// The Failover's name.
    pub name: String,
    /// Its target region.
    pub target_region: String,
    /// Its phase when last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Its mode (Planned, Unplanned or DryRun).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
