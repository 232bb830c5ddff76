//! `Failover`: a request to move a plan's active region.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Moves a DisasterRecoveryPlan's active region to `targetRegion`. The spec is immutable:
/// create a new Failover to change anything.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "drover.io",
    version = "v1alpha1",
    kind = "Failover",
    namespaced,
    status = "FailoverStatus",
    shortname = "fo",
    printcolumn = r#"{"name":"Plan","type":"string","jsonPath":".spec.planRef"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRegion"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.currentStep"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSpec {
    /// Name of the DisasterRecoveryPlan, in the Failover's namespace.
    pub plan_ref: String,
    /// The plan region to make active.
    pub target_region: String,
    /// Planned, Unplanned or DryRun.
    pub mode: FailoverMode,
    /// Unplanned only: allow promotion while replication lag is above zero.
    #[serde(default)]
    pub allow_data_loss: bool,
    /// With allowDataLoss: the largest replication lag accepted at promotion, e.g. "30s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_data_loss: Option<String>,
}

impl FailoverSpec {
    /// A failover of `plan_ref` to `target_region` that accepts no data loss.
    pub fn new(plan_ref: &str, target_region: &str, mode: FailoverMode) -> Self {
        Self {
            plan_ref: plan_ref.into(),
            target_region: target_region.into(),
            mode,
            allow_data_loss: false,
            max_data_loss: None,
        }
    }
}

/// How a failover runs.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FailoverMode {
    /// Both regions are healthy: fence writes, wait until every standby has them, switch over
    /// without data loss.
    Planned,
    /// The old region is impaired: proceed without it, within the allowed data loss.
    Unplanned,
    /// Run the read-only preflight checks and report; change nothing.
    DryRun,
}

/// The phase of a failover.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FailoverPhase {
    /// Accepted, not started.
    Pending,
    /// Steps are running.
    Running,
    /// Preflight done; waits for `drover approve` (or a FailoverApproval) before it changes
    /// anything. Rejected when the deadline passes.
    AwaitingApproval,
    /// The target region is active.
    Succeeded,
    /// A step failed for good; see the steps and conditions.
    Failed,
    /// A planned failover failed before promotion and its changes were undone.
    RolledBack,
    /// Not admitted: invalid, edited, or another failover of the plan is running.
    Rejected,
}

impl FailoverPhase {
    /// Admitted and not over: the failover holds its plan.
    pub fn is_admitted(self) -> bool {
        matches!(self, Self::Running | Self::AwaitingApproval)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::RolledBack | Self::Rejected
        )
    }
}

/// The state of one step.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StepState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
}

/// One step of a failover, in execution order.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// Step name, e.g. "Preflight" or "PromoteDatabases".
    pub name: String,
    /// Pending, Running, Succeeded, Failed or Skipped.
    pub state: StepState,
    /// When the step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<MicroTime>,
    /// When the step finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<MicroTime>,
    /// How long the step took, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// Calls made by the step, retries included.
    #[serde(default)]
    pub attempts: u32,
    /// What happened, with errors verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Observed state of a failover. This is the durable record a restarted operator resumes from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverStatus {
    /// Pending, Running, Succeeded, Failed, RolledBack or Rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<FailoverPhase>,
    /// The step running now, or the last one to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<String>,
    /// Steps in execution order.
    #[serde(default)]
    pub steps: Vec<StepStatus>,
    /// Conditions, e.g. `Valid`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Measured durations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<FailoverTimings>,
    /// Estimated data loss: replication lag at promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_loss: Option<DataLossEstimate>,
    /// When the fence confirmed the old region's writers and singletons gone. Lag counts
    /// for a Planned promotion only if measured after this. Timestamps here keep
    /// microseconds: whole seconds would move the fence (and the measured RTO) by up to 1 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fenced_at: Option<MicroTime>,
    /// The plan as it was when this failover was admitted. The failover runs this copy to
    /// the end: a plan edited mid-flight changes the next failover, not this one, and a
    /// plan deleted mid-flight does not strand it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_snapshot: Option<PlanSnapshot>,
    /// Set, with the reason, when a Planned failover starts rolling back. A restarted
    /// operator finishes the rollback instead of resuming the failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_back: Option<String>,
    /// The spec the failover was admitted with: an edit after admission (possible on API
    /// servers without CEL) does not change a running failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_spec: Option<FailoverSpec>,
    /// When the rollback began; it must finish within 60 s of this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_started_at: Option<MicroTime>,
    /// The region that was active when the failover started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_region: Option<String>,
    /// Per-database promotion progress.
    #[serde(default)]
    pub databases: Vec<DatabaseProgress>,
    /// Route 53 change batches: Submitting (intent recorded), PENDING, INSYNC, or
    /// Unconfirmed (the call failed in a way that may or may not have applied it).
    #[serde(default)]
    pub dns_changes: Vec<DnsChange>,
    /// Preflight failures, all of them.
    #[serde(default)]
    pub preflight_failures: Vec<String>,
    /// What the failover does (DryRun) or did, in order.
    #[serde(default)]
    pub planned_actions: Vec<String>,
    /// Whether the failover needs approval, and the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalStatus>,
    /// Writers and singletons ("namespace/name") an Unplanned Fence step could not scale
    /// to 0; they become pending fences on the plan when the failover succeeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unfenced_workloads: Vec<String>,
    /// ConfigMaps and Secrets this failover changed: the keys, never the values. Recorded
    /// before the write.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_changes: Vec<ConfigChange>,
    /// Workloads restarted after a config change, each recorded before it is requested.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<RestartRecord>,
    /// The recovery time users saw, from the plan's probes (none: the plan has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_visible: Option<UserVisibleRecovery>,
}

/// What the plan's probes showed during the failover. Each time is that of the first poll
/// (one a second) that saw the change, so each is late by up to a poll interval plus the
/// probe's timeout.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserVisibleRecovery {
    /// When the probes were first polled for this failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_polled_at: Option<MicroTime>,
    /// When the old region was first seen not answering, from the failover's start on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_region_stopped_at: Option<MicroTime>,
    /// The old region was not answering at the first poll (of the failover, or after an
    /// operator restart): it stopped earlier (before the failover, for a lost region), and
    /// `recoverySeconds` is a lower bound.
    #[serde(default)]
    pub stopped_before_first_poll: bool,
    /// The first poll that saw the old region not answering, awaiting a second in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspected_stop_at: Option<MicroTime>,
    /// When the target region was first seen answering after the old one stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_answered_at: Option<MicroTime>,
    /// targetAnsweredAt came from the first poll after an operator restart: the target may
    /// have answered during the gap, and `recoverySeconds` is an upper bound.
    #[serde(default)]
    pub answered_after_gap: bool,
    /// targetAnsweredAt − oldRegionStoppedAt, in seconds: the user-visible RTO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_seconds: Option<f64>,
    /// Polling ended: the record is final.
    #[serde(default)]
    pub settled: bool,
    /// Why a time is missing, or the last probe error, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The keys of a ConfigMap or Secret written in one region.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigChange {
    /// ConfigMap or Secret.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub region: String,
    pub keys: Vec<String>,
}

/// A workload restarted (pod template annotation `kubectl.kubernetes.io/restartedAt`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartRecord {
    /// namespace/name.
    pub workload: String,
    pub region: String,
    /// The annotation's value: the same on a resend, so a repeated request is no restart.
    pub restarted_at: String,
}

/// The approval a failover needs, and what was decided.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalStatus {
    /// Why approval is needed, e.g. "failback to use1".
    pub reason: String,
    /// When the failover is Rejected unless approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_decision")]
    pub decision: Option<ApprovalDecision>,
    /// Who decided, as the FailoverApproval names them (see `identity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// How far `decidedBy` can be trusted, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// When the decision was made: the FailoverApproval's creation time, set by the API
    /// server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<MicroTime>,
    /// When Drover saw the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_at: Option<MicroTime>,
    /// The FailoverApproval that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_ref: Option<String>,
    /// The reason given with a rejection, or why the wait ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `Option<ApprovalDecision>` as a nullable string enum: schemars lists `null` among the
/// enum values, which a structural CRD schema may not.
fn optional_decision(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Approved or Rejected, once decided.",
        "type": "string",
        "enum": ["Approved", "Rejected"],
        "nullable": true,
    })
}

/// Approved or Rejected, once decided.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ApprovalDecision {
    Approved,
    Rejected,
}

/// How far a database's promotion got. Requesting is written before the call, so a
/// restarted operator knows the call may have been sent.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DatabaseState {
    #[default]
    Pending,
    Gated,
    Cleared,
    Requesting,
    Requested,
    Promoted,
}

/// Progress of one database's promotion.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseProgress {
    /// The plan's database name.
    pub name: String,
    /// Pending, Gated (lag gate refused), Cleared (every database passed its gate; none is
    /// promoted before all are Cleared), Requesting (call about to be sent), Requested
    /// (call answered), Promoted (target writable).
    pub state: DatabaseState,
    /// Replication lag (seconds) measured before promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// When the promotion was first about to be requested (recorded with the intent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<MicroTime>,
    /// Drover's estimate of the data this database lost, when it is not its lag: 0 for a
    /// Planned failover's replica proven to have replayed past the fence; for one promoted
    /// after its replication stopped (lag unknown; RDS for PostgreSQL and Aurora), the lag
    /// read before the stop plus the time until the stop was seen. That may understate by
    /// up to one metric period, and leaves out writes the old primary took after the stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_estimate_seconds: Option<f64>,
}

/// One Route 53 change batch.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsChange {
    /// The hosted zone.
    pub hosted_zone_id: String,
    /// The batch's number within its zone, from 1; a zone's batches go one at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
    /// How many changes (UPSERTs and DELETEs) the batch holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<u32>,
    /// The change ID from ChangeResourceRecordSets, once submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_id: Option<String>,
    /// Submitting, PENDING, INSYNC or Unconfirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// Measured durations of a failover.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverTimings {
    /// When the failover started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<MicroTime>,
    /// When it reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<MicroTime>,
    /// Total duration in seconds: the measured RTO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_seconds: Option<f64>,
}

/// Estimated data loss of a failover.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataLossEstimate {
    /// The largest replication lag at promotion over all databases, in seconds.
    pub max_lag_seconds: f64,
    /// Replication lag at promotion per database.
    #[serde(default)]
    pub databases: Vec<DatabaseLag>,
    /// Databases promoted while their lag was unknown (allowDataLoss): their loss is
    /// unknown, and `maxLagSeconds` covers only the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_lag_databases: Vec<String>,
    /// The largest per-database estimate (`databases[].lossEstimateSeconds`, else its lag at
    /// promotion), when every promoted database has one. With unknown lags it assumes the
    /// old primaries took no writes after their replication stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_seconds: Option<f64>,
}

/// Replication lag of one database at promotion.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseLag {
    /// The plan's database name.
    pub name: String,
    /// Lag in seconds.
    pub lag_seconds: f64,
}

/// The plan a failover runs, copied at admission.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanSnapshot {
    /// The plan's generation when copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The plan's spec when copied.
    pub spec: crate::api::DisasterRecoveryPlanSpec,
    /// The plan's learned step durations when copied (`status.stepDurations`): how this
    /// failover paces its polls of the waits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_durations: Vec<crate::api::StepDurations>,
}
