//! Drills on a schedule: `spec.drills` and `status.drills` of a DisasterRecoveryPlan. The
//! decisions are `engine::drill::decide`; docs/operations.md ("Drills") explains the rules.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Drills that run by themselves, and the record they leave.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillsSpec {
    /// When drills run.
    #[serde(default)]
    pub schedules: Vec<DrillSchedule>,
    /// How many drill results, and drills' Failover objects, are kept (default 10, 1 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_limit: Option<u32>,
    /// `DrillOverdue` is True when no drill has succeeded within this (e.g. "8d"); unset:
    /// never overdue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_interval: Option<String>,
    /// A round trip's failback skips the plan's approval for failbacks (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback_exempt_from_approval: Option<bool>,
}

/// One drill schedule.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillSchedule {
    /// A name, unique in the plan (a DNS label: it names the drills' Failovers).
    pub name: String,
    /// A cron expression of five fields (minute hour day-of-month month day-of-week), e.g.
    /// "0 3 * * 1" for Mondays at 03:00.
    pub cron: String,
    /// The IANA time zone the cron expression is read in (default "UTC").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// DryRun (preflight only) or RoundTrip (a Planned failover, a hold, then back).
    #[serde(default)]
    pub kind: DrillKind,
    /// The region a drill fails over to (default: the next after the active one in
    /// `spec.failoverOrder`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_region: Option<String>,
    /// RoundTrip: how long to stay in the target region before failing back (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
    /// How late after its scheduled time a drill may still start (default 1h, at most 24h);
    /// later, it is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// No drill starts from this schedule while true.
    #[serde(default)]
    pub suspend: bool,
}

/// What a drill does.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DrillKind {
    /// A DryRun Failover: the preflight alone; nothing changes.
    #[default]
    DryRun,
    /// A Planned failover to the target region, a hold, then a Planned failover back.
    RoundTrip,
}

/// How far a running drill got.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DrillStage {
    /// The first Failover (the DryRun, or the way there) runs.
    Going,
    /// RoundTrip: in the target region until `holdUntil`.
    Holding,
    /// RoundTrip: the Failover back runs.
    Returning,
}

/// A drill under way.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunningDrill {
    /// The schedule, or "manual" for `drover drill`.
    pub schedule: String,
    pub kind: DrillKind,
    /// The scheduled time it runs for.
    pub scheduled_for: Time,
    pub started_at: Time,
    pub stage: DrillStage,
    /// The region it left (and returns to).
    pub source_region: String,
    pub target_region: String,
    /// The Failover of the current stage; recorded before it is created.
    pub failover: String,
    /// Whether that Failover was created (false: recorded as intent, not yet confirmed).
    #[serde(default)]
    pub created: bool,
    /// The Failovers of this drill so far.
    #[serde(default)]
    pub failovers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_until: Option<Time>,
    /// Measured RTO of the way there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    /// Recovery time users saw on the way there, by the plan's probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_visible_seconds: Option<f64>,
    /// Estimated data loss of the way there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_loss_seconds: Option<f64>,
}

/// How a drill ended.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DrillOutcome {
    Succeeded,
    Failed,
    /// Not started: another failover ran, or the plan was not Ready.
    Skipped,
}

/// One drill, as the history keeps it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillResult {
    pub schedule: String,
    pub kind: DrillKind,
    pub scheduled_for: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    pub finished_at: Time,
    pub outcome: DrillOutcome,
    /// Measured RTO of the way there (RoundTrip), or the DryRun's duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    /// RoundTrip: measured RTO of the way back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_back_seconds: Option<f64>,
    /// Recovery time users saw on the way there, by the plan's probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_visible_seconds: Option<f64>,
    /// RoundTrip: recovery time users saw on the way back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_visible_back_seconds: Option<f64>,
    /// The largest data-loss estimate of its failovers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_loss_seconds: Option<f64>,
    /// The step that failed, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_step: Option<String>,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub failovers: Vec<String>,
}

/// Drills: the one running, and the last results, newest first.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillsStatus {
    /// Scheduled times up to this one have been handled (started or skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub considered_until: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<RunningDrill>,
    /// Newest first, at most `spec.drills.historyLimit`.
    #[serde(default)]
    pub history: Vec<DrillResult>,
    /// When a drill last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Time>,
}
