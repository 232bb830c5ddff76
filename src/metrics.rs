//! Prometheus metrics. Error labels come from `Error::metric_label`, one per category.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::{FailoverMode, FailoverPhase};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlanLabels {
    pub namespace: String,
    pub plan: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsCallLabels {
    pub service: &'static str,
    pub operation: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsWaitLabels {
    pub service: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailoverLabels {
    #[prometheus(flatten)]
    pub plan: PlanLabels,
    pub mode: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlanStepLabels {
    pub namespace: String,
    pub plan: String,
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LagLabels {
    pub namespace: String,
    pub plan: String,
    pub database: String,
    /// The plan region the replica lags in.
    pub region: String,
}

/// A health signal of a plan's automatic failover (names are bounded by validation).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabels {
    pub namespace: String,
    pub plan: String,
    pub signal: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabels {
    pub namespace: String,
    pub plan: String,
    pub region: String,
}

fn lag_labels(plan: &PlanLabels, database: &str, region: &str) -> LagLabels {
    LagLabels {
        namespace: plan.namespace.clone(),
        plan: plan.plan.clone(),
        database: database.to_string(),
        region: region.to_string(),
    }
}

fn failover_labels(plan: &PlanLabels, mode: FailoverMode, result: FailoverPhase) -> FailoverLabels {
    FailoverLabels {
        plan: plan.clone(),
        mode: format!("{mode:?}"),
        result: format!("{result:?}"),
    }
}

fn failover_histogram() -> Histogram {
    Histogram::new([5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0])
}

fn duration_histogram() -> Histogram {
    Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    pub plan_valid: Family<PlanLabels, Gauge>,
    pub plan_ready: Family<PlanLabels, Gauge>,
    pub leader: Gauge,
    pub aws_calls: Family<AwsCallLabels, Counter>,
    pub aws_rate_limit_wait: Family<AwsWaitLabels, FloatCounter>,
    pub failovers: Family<FailoverLabels, Counter>,
    pub failover_duration: Histogram,
    pub step_duration: Family<StepLabels, Histogram>,
    pub replication_lag: Family<LagLabels, FloatGauge>,
    pub active_region: Family<RegionLabels, Gauge>,
    pub plan_rto: Family<PlanLabels, FloatGauge>,
    pub plan_rpo: Family<PlanLabels, FloatGauge>,
    pub last_failover_rto: Family<PlanLabels, FloatGauge>,
    pub last_failover_data_loss: Family<PlanLabels, FloatGauge>,
    /// The user-visible recovery time of the plan's last failover whose probes saw one.
    pub last_failover_user_visible_rto: Family<PlanLabels, FloatGauge>,
    pub last_failover_step: Family<PlanStepLabels, FloatGauge>,
    pub automatic_consecutive_bad: Family<SignalLabels, Gauge>,
    pub automatic_paused: Family<PlanLabels, Gauge>,
    pub automatic_failovers: Family<PlanLabels, Counter>,
    pub drill_last_success: Family<PlanLabels, FloatGauge>,
    pub drill_last_succeeded: Family<PlanLabels, Gauge>,
    pub drill_rto: Family<PlanLabels, FloatGauge>,
    pub drill_rto_back: Family<PlanLabels, FloatGauge>,
    pub plan_pending_fences: Family<PlanLabels, Gauge>,
    pub plan_drill_overdue: Family<PlanLabels, Gauge>,
    pub plan_unprotected_standbys: Family<PlanLabels, Gauge>,
    pub failover_running: Family<PlanLabels, FloatGauge>,
    pub replication_lag_known: Family<LagLabels, Gauge>,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;
type FloatCounter = Counter<f64, std::sync::atomic::AtomicU64>;

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("drover");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = Family::<ControllerLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let plan_valid = Family::<PlanLabels, Gauge>::default();
        let plan_ready = Family::<PlanLabels, Gauge>::default();
        let leader = Gauge::default();
        registry.register("reconcile", "Reconciliations run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by error category",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            reconcile_duration.clone(),
        );
        registry.register(
            "plan_valid",
            "1 when the plan passed validation",
            plan_valid.clone(),
        );
        registry.register(
            "plan_ready",
            "1 when every region of the plan is ready",
            plan_ready.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        let aws_calls = Family::<AwsCallLabels, Counter>::default();
        let failovers = Family::<FailoverLabels, Counter>::default();
        let failover_duration = failover_histogram();
        let step_duration = Family::<StepLabels, Histogram>::new_with_constructor(
            failover_histogram as fn() -> Histogram,
        );
        let replication_lag = Family::<LagLabels, FloatGauge>::default();
        let active_region = Family::<RegionLabels, Gauge>::default();
        registry.register(
            "aws_calls",
            "AWS API calls by service, operation and result",
            aws_calls.clone(),
        );
        let aws_rate_limit_wait = Family::<AwsWaitLabels, FloatCounter>::default();
        registry.register(
            "aws_rate_limit_wait_seconds",
            "Time AWS calls waited for Drover's own rate limit, by service",
            aws_rate_limit_wait.clone(),
        );
        registry.register(
            "failovers",
            "Failovers finished, by mode and result",
            failovers.clone(),
        );
        registry.register(
            "failover_duration_seconds",
            "Wall time of finished failovers (measured RTO)",
            failover_duration.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "Wall time of failover steps",
            step_duration.clone(),
        );
        registry.register(
            "replication_lag_seconds",
            "Last measured replication lag per plan database",
            replication_lag.clone(),
        );
        registry.register(
            "active_region",
            "1 for the active region of each plan, 0 for the others",
            active_region.clone(),
        );
        let plan_rto = Family::<PlanLabels, FloatGauge>::default();
        let plan_rpo = Family::<PlanLabels, FloatGauge>::default();
        let last_failover_rto = Family::<PlanLabels, FloatGauge>::default();
        let last_failover_data_loss = Family::<PlanLabels, FloatGauge>::default();
        let last_failover_user_visible_rto = Family::<PlanLabels, FloatGauge>::default();
        let last_failover_step = Family::<PlanStepLabels, FloatGauge>::default();
        registry.register(
            "plan_rto_seconds",
            "The plan's recovery time objective",
            plan_rto.clone(),
        );
        registry.register(
            "plan_rpo_seconds",
            "The plan's recovery point objective (largest acceptable replication lag)",
            plan_rpo.clone(),
        );
        registry.register(
            "last_failover_rto_seconds",
            "Measured RTO of the plan's last successful failover",
            last_failover_rto.clone(),
        );
        registry.register(
            "last_failover_data_loss_seconds",
            "Estimated data loss (replication lag at promotion) of the plan's last failover",
            last_failover_data_loss.clone(),
        );
        registry.register(
            "last_failover_user_visible_rto_seconds",
            "Recovery time users saw in the plan's last failover, by its probes: from the old \
             region's stop to the target's answer (a lower bound when the Failover's status \
             says stoppedBeforeFirstPoll)",
            last_failover_user_visible_rto.clone(),
        );
        registry.register(
            "last_failover_step_seconds",
            "Duration of each step of the plan's last finished failover",
            last_failover_step.clone(),
        );
        let automatic_consecutive_bad = Family::<SignalLabels, Gauge>::default();
        let automatic_paused = Family::<PlanLabels, Gauge>::default();
        let automatic_failovers = Family::<PlanLabels, Counter>::default();
        registry.register(
            "automatic_failover_consecutive_bad",
            "Consecutive bad evaluations of each health signal of the active region",
            automatic_consecutive_bad.clone(),
        );
        registry.register(
            "automatic_failover_paused",
            "1 while automatic failover of the plan is paused (plan or operator switch)",
            automatic_paused.clone(),
        );
        registry.register(
            "automatic_failovers",
            "Failovers Drover started by itself on health signals",
            automatic_failovers.clone(),
        );
        let drill_last_success = Family::<PlanLabels, FloatGauge>::default();
        let drill_last_succeeded = Family::<PlanLabels, Gauge>::default();
        let drill_rto = Family::<PlanLabels, FloatGauge>::default();
        let drill_rto_back = Family::<PlanLabels, FloatGauge>::default();
        registry.register(
            "drill_last_success_timestamp_seconds",
            "When a drill of the plan last succeeded (Unix time)",
            drill_last_success.clone(),
        );
        registry.register(
            "drill_last_succeeded",
            "1 when the plan's last drill (not skipped) succeeded, 0 when it failed",
            drill_last_succeeded.clone(),
        );
        registry.register(
            "drill_rto_seconds",
            "Measured RTO of the plan's last drill (the way there, or the DryRun's duration)",
            drill_rto.clone(),
        );
        registry.register(
            "drill_rto_back_seconds",
            "Measured RTO of the way back of the plan's last round-trip drill",
            drill_rto_back.clone(),
        );
        let plan_pending_fences = Family::<PlanLabels, Gauge>::default();
        registry.register(
            "plan_pending_fences",
            "Parts of a former active region the plan still has to fence when it returns",
            plan_pending_fences.clone(),
        );
        let plan_drill_overdue = Family::<PlanLabels, Gauge>::default();
        registry.register(
            "plan_drill_overdue",
            "1 when no drill of the plan succeeded within spec.drills.requiredInterval",
            plan_drill_overdue.clone(),
        );
        let plan_unprotected_standbys = Family::<PlanLabels, Gauge>::default();
        registry.register(
            "plan_unprotected_standbys",
            "Standby databases of the plan not replicating from the active region's primary",
            plan_unprotected_standbys.clone(),
        );
        let failover_running = Family::<PlanLabels, FloatGauge>::default();
        registry.register(
            "failover_running_seconds",
            "How long the plan's running failover has been running; 0 when none runs",
            failover_running.clone(),
        );
        let replication_lag_known = Family::<LagLabels, Gauge>::default();
        registry.register(
            "replication_lag_known",
            "1 when the standby's lag is known (>= 0 and fresh), 0 when it is not",
            replication_lag_known.clone(),
        );
        // Zero series for every error category, so rate() works before the first error.
        for controller in ["plan", "failover"] {
            for error in crate::error::Error::METRIC_LABELS {
                let _ = reconcile_errors.get_or_create(&ErrorLabels { controller, error });
            }
        }
        Self {
            registry,
            plan_pending_fences,
            plan_drill_overdue,
            plan_unprotected_standbys,
            failover_running,
            replication_lag_known,
            drill_last_success,
            drill_last_succeeded,
            drill_rto,
            drill_rto_back,
            automatic_consecutive_bad,
            automatic_paused,
            automatic_failovers,
            plan_rto,
            plan_rpo,
            last_failover_rto,
            last_failover_data_loss,
            last_failover_user_visible_rto,
            last_failover_step,
            aws_calls,
            aws_rate_limit_wait,
            failovers,
            failover_duration,
            step_duration,
            replication_lag,
            active_region,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            plan_valid,
            plan_ready,
            leader,
        }
    }
}

impl Metrics {
    /// Creates the plan's failover series before its first failover, at 0: Prometheus
    /// sees no increase in a counter that first appears at 1, so a first failure would not
    /// page and the dashboard would count no failover. Only the modes and results that page
    /// or measure the RTO: a DryRun or a Rejected failover appears when it first happens.
    pub fn init_plan(&self, plan: &PlanLabels) {
        for mode in [FailoverMode::Planned, FailoverMode::Unplanned] {
            for result in [
                FailoverPhase::Succeeded,
                FailoverPhase::Failed,
                FailoverPhase::RolledBack,
            ] {
                drop(
                    self.failovers
                        .get_or_create(&failover_labels(plan, mode, result)),
                );
            }
        }
        drop(self.failover_running.get_or_create(plan));
    }

    /// Counts a finished failover in `drover_failovers_total`.
    pub fn count_failover(&self, plan: &PlanLabels, mode: FailoverMode, result: FailoverPhase) {
        self.failovers
            .get_or_create(&failover_labels(plan, mode, result))
            .inc();
    }

    /// `drover_active_region{namespace,plan,region}`: 1 for the active region, 0 for the
    /// others.
    pub fn set_active_region<'a>(
        &self,
        plan: &PlanLabels,
        regions: impl IntoIterator<Item = &'a str>,
        active: &str,
    ) {
        for region in regions {
            self.active_region
                .get_or_create(&RegionLabels {
                    namespace: plan.namespace.clone(),
                    plan: plan.plan.clone(),
                    region: region.to_string(),
                })
                .set((region == active).into());
        }
    }

    /// `drover_replication_lag_seconds{plan,database,region}`.
    pub fn set_replication_lag(
        &self,
        plan: &PlanLabels,
        database: &str,
        region: &str,
        seconds: f64,
    ) {
        self.replication_lag
            .get_or_create(&lag_labels(plan, database, region))
            .set(seconds);
    }

    /// A plan check's verdict on a standby's lag: known (with its value), or unknown, when
    /// no number is shown at all rather than the last one. Whether it is known is exported
    /// only for a standby `expected` to replicate (not one being re-protected).
    pub fn set_standby_lag(
        &self,
        plan: &PlanLabels,
        database: &str,
        region: &str,
        lag: Option<f64>,
        expected: bool,
    ) {
        let labels = lag_labels(plan, database, region);
        match lag {
            Some(seconds) => self.set_replication_lag(plan, database, region, seconds),
            None => {
                self.replication_lag.remove(&labels);
            }
        }
        if expected {
            self.replication_lag_known
                .get_or_create(&labels)
                .set(lag.is_some().into());
        } else {
            self.replication_lag_known.remove(&labels);
        }
    }

    /// Drops the lag series of a region that is no longer a standby of the plan (it became
    /// the active one): its last lag is not a standby's lag.
    pub fn forget_standby_lag(&self, plan: &PlanLabels, database: &str, region: &str) {
        let labels = lag_labels(plan, database, region);
        self.replication_lag.remove(&labels);
        self.replication_lag_known.remove(&labels);
    }

    /// The text exposition format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_names_with_prefix() {
        let m = Metrics::default();
        m.reconciles
            .get_or_create(&ControllerLabels { controller: "plan" })
            .inc();
        m.reconcile_errors
            .get_or_create(&ErrorLabels {
                controller: "plan",
                error: "kube",
            })
            .inc();
        let text = m.encode().expect("encodes");
        assert!(
            text.contains("drover_reconcile_total{controller=\"plan\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("drover_reconcile_errors_total{controller=\"plan\",error=\"kube\"} 1")
        );
        assert!(text.contains("drover_leader 0"));
    }

    /// A plan's failover series exist at 0 before its first failover, so Prometheus sees
    /// the first one as an increase; a failover then counts from there.
    #[test]
    fn a_plans_failover_series_start_at_zero() {
        let m = Metrics::default();
        let plan = PlanLabels {
            namespace: "prod".into(),
            plan: "shop".into(),
        };
        m.init_plan(&plan);
        let text = m.encode().expect("encodes");
        for mode in ["Planned", "Unplanned"] {
            for result in ["Succeeded", "Failed", "RolledBack"] {
                let line = format!(
                    "drover_failovers_total{{namespace=\"prod\",plan=\"shop\",mode=\"{mode}\",result=\"{result}\"}} 0"
                );
                assert!(text.contains(&line), "{line} not in {text}");
            }
        }
        assert!(
            text.contains("drover_failover_running_seconds{namespace=\"prod\",plan=\"shop\"} 0")
        );
        m.count_failover(&plan, FailoverMode::Unplanned, FailoverPhase::Failed);
        m.init_plan(&plan);
        let text = m.encode().expect("encodes");
        assert!(text.contains(
            "drover_failovers_total{namespace=\"prod\",plan=\"shop\",mode=\"Unplanned\",result=\"Failed\"} 1"
        ));
    }

    /// A standby's lag shows as a number only while it is known; a region that became
    /// active shows none.
    #[test]
    fn unknown_or_former_standby_lag_shows_no_stale_number() {
        let m = Metrics::default();
        let plan = PlanLabels {
            namespace: "ns".into(),
            plan: "p".into(),
        };
        let series = |name: &str| {
            let text = m.encode().expect("encodes");
            text.lines()
                .filter(|l| l.starts_with(&format!("{name}{{")))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        m.set_standby_lag(&plan, "orders", "usw2", Some(12.0), true);
        assert_eq!(
            series("drover_replication_lag_seconds"),
            [
                r#"drover_replication_lag_seconds{namespace="ns",plan="p",database="orders",region="usw2"} 12.0"#
            ]
        );
        m.set_standby_lag(&plan, "orders", "usw2", None, true);
        assert!(series("drover_replication_lag_seconds").is_empty());
        assert_eq!(
            series("drover_replication_lag_known"),
            [
                r#"drover_replication_lag_known{namespace="ns",plan="p",database="orders",region="usw2"} 0"#
            ]
        );
        // Being re-protected, it is not expected to replicate: no verdict either.
        m.set_standby_lag(&plan, "orders", "usw2", None, false);
        assert!(series("drover_replication_lag_known").is_empty());
        m.set_standby_lag(&plan, "orders", "usw2", Some(3.0), true);
        m.forget_standby_lag(&plan, "orders", "usw2");
        assert!(series("drover_replication_lag_known").is_empty());
        assert!(series("drover_replication_lag_seconds").is_empty());
    }

    /// Every drover_ metric the shipped alert rules query is one the operator exports.
    #[test]
    fn the_alert_rules_query_only_exported_metrics() {
        // A family shows in the exposition once it has a series.
        let m = Metrics::default();
        let plan = PlanLabels {
            namespace: "ns".into(),
            plan: "p".into(),
        };
        for family in [
            &m.plan_ready,
            &m.plan_pending_fences,
            &m.plan_unprotected_standbys,
            &m.plan_drill_overdue,
        ] {
            family.get_or_create(&plan).set(0);
        }
        for family in [&m.plan_rpo, &m.plan_rto, &m.failover_running] {
            family.get_or_create(&plan).set(0.0);
        }
        m.set_standby_lag(&plan, "db", "usw2", Some(1.0), true);
        m.failovers
            .get_or_create(&FailoverLabels {
                plan: plan.clone(),
                mode: "Planned".into(),
                result: "Failed".into(),
            })
            .inc();
        m.aws_calls
            .get_or_create(&AwsCallLabels {
                service: "route53",
                operation: "GetChange",
                result: "throttled",
            })
            .inc();
        let text = m.encode().expect("encodes");
        assert!(
            text.contains(
                r#"drover_failovers_total{namespace="ns",plan="p",mode="Planned",result="Failed"} 1"#
            ),
            "{text}"
        );
        let rules = include_str!("../config/prometheus/drover-rules.yaml");
        let mut names: Vec<&str> = rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("drover_"))
            .collect();
        names.sort();
        names.dedup();
        assert!(names.len() >= 10, "{names:?}");
        for name in names {
            let family = name.strip_suffix("_total").unwrap_or(name);
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{name} is not exported"
            );
        }
    }
}
