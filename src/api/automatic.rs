//! Automatic failover on health signals: `spec.automaticFailover` and
//! `status.automaticFailover` of a DisasterRecoveryPlan. The decision is
//! `engine::automatic::evaluate`; docs/operations.md ("Automatic failover") explains the rules.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Drover starts a failover by itself when enough of the active region's signals have been
/// bad for enough consecutive evaluations. Present means enabled; `paused` switches it off.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutomaticFailoverSpec {
    /// Evaluate, show, but never trigger (default false). `drover run
    /// --pause-automatic-failover` pauses every plan.
    #[serde(default)]
    pub paused: bool,
    /// How often the active region's signals are read (default 30s, at least 5s, at most 7d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// How many consecutive bad evaluations make a signal count (default 3, 1 to 100). An
    /// Unknown evaluation neither adds to nor resets the count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive: Option<u32>,
    /// How many of the active region's signals must count at once (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    /// The least time between two automatic failovers of this plan (default 1h, at most 7d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<String>,
    /// The region to fail over to; default the next region after the active one in
    /// `spec.failoverOrder`. Never the region that was active before the last failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_region: Option<String>,
    /// The mode of the Failovers it creates (default Unplanned: the active region is
    /// impaired).
    #[serde(default)]
    pub mode: AutomaticFailoverMode,
    /// Unplanned only: allow promotion while replication lag is above zero or unknown.
    #[serde(default)]
    pub allow_data_loss: bool,
    /// With allowDataLoss: the largest replication lag accepted at promotion, e.g. "30s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_data_loss: Option<String>,
    /// What is watched, each signal for one plan region.
    pub signals: Vec<HealthSignal>,
}

/// The mode of automatically created Failovers.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AutomaticFailoverMode {
    Planned,
    #[default]
    Unplanned,
}

/// One health signal of one plan region. Set exactly one of `route53HealthCheck`,
/// `cloudWatchAlarm` or `metric`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthSignal {
    /// Unique in the plan; a metric label, so keep it short (at most 63 characters).
    pub name: String,
    /// The plan region the signal watches: only the active region's signals are evaluated.
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route53_health_check: Option<Route53HealthCheckSignal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_watch_alarm: Option<CloudWatchAlarmSignal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<MetricSignal>,
}

/// A Route 53 health check, read per checker region (GetHealthCheckStatus). Route 53 is
/// global, so it can be read while the watched region is down.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Route53HealthCheckSignal {
    /// The health check ID.
    pub health_check_id: String,
    /// How many checker regions must report Failure for the signal to be bad (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checker_quorum: Option<u32>,
    /// How old a checker's report may be and still count (default 2m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

/// A CloudWatch alarm: ALARM is bad, OK is healthy, INSUFFICIENT_DATA is unknown.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudWatchAlarmSignal {
    /// The alarm's name.
    pub alarm_name: String,
    /// The AWS region the alarm lives in (default the watched region's). An alarm in the
    /// watched region cannot be read while that region is down: prefer another region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_region: Option<String>,
}

/// A CloudWatch metric against a threshold (GetMetricData). A missing or old datapoint is
/// unknown, never healthy.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricSignal {
    /// The AWS region the metric lives in (default the watched region's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_region: Option<String>,
    /// E.g. "AWS/ApplicationELB".
    pub namespace: String,
    /// E.g. "HTTPCode_ELB_5XX_Count".
    pub metric_name: String,
    #[serde(default)]
    pub dimensions: Vec<MetricDimension>,
    /// Average, Sum, Minimum, Maximum, SampleCount or a percentile such as p99 (default
    /// Average).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<String>,
    /// The aggregation period (default 60s; 1s, 5s, 10s, 30s or a multiple of 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// Bad when `value <comparison> threshold`.
    pub comparison: MetricComparison,
    pub threshold: f64,
    /// How old the newest datapoint may be and still count (default 3m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

/// A CloudWatch metric dimension.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct MetricDimension {
    pub name: String,
    pub value: String,
}

/// How a metric value is compared with the threshold; true means bad.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MetricComparison {
    #[default]
    GreaterThanThreshold,
    GreaterThanOrEqualToThreshold,
    LessThanThreshold,
    LessThanOrEqualToThreshold,
}

/// What automatic failover saw and decided at its last evaluation.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutomaticFailoverStatus {
    /// The region whose signals were evaluated (the active region then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_region: Option<String>,
    /// When the signals were last evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluation_time: Option<Time>,
    /// Whether the plan or the operator paused automatic failover.
    #[serde(default)]
    pub paused: bool,
    /// Why it did or did not trigger at the last evaluation, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Every signal of the plan.
    #[serde(default)]
    pub signals: Vec<SignalStatus>,
    /// Automatic failovers triggered so far; the next is named `<plan>-auto-<triggers + 1>`.
    #[serde(default)]
    pub triggers: u32,
    /// The last trigger. Recorded before its Failover is created, so a restart creates that
    /// Failover (the same name) instead of a second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trigger: Option<AutomaticTrigger>,
}

/// What one evaluation of a signal gave.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SignalState {
    Healthy,
    Bad,
    /// Unreadable, throttled, stale or inconclusive: neither bad nor healthy.
    Unknown,
    /// The signal watches a region that is not active.
    #[default]
    NotEvaluated,
}

/// One signal at the last evaluation.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignalStatus {
    pub name: String,
    /// The plan region it watches.
    pub region: String,
    pub state: SignalState,
    /// Consecutive bad evaluations (Unknown ones skipped, a Healthy one resets it).
    #[serde(default)]
    pub consecutive_bad: u32,
    /// What was read, e.g. "Failure from us-east-1, us-west-2 (2 of 3 checker regions)".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An automatic failover Drover decided to start.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutomaticTrigger {
    /// The Failover's name.
    pub failover: String,
    /// The region it leaves.
    pub source_region: String,
    pub target_region: String,
    /// When it was decided; the cooldown counts from here.
    pub at: Time,
    /// The signals that triggered it.
    #[serde(default)]
    pub signals: Vec<String>,
    /// Whether the Failover was created (or found already created).
    #[serde(default)]
    pub created: bool,
}
