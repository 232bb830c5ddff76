//! The state machine alone, compiled only under #[cfg(test)] (see `mod tests` in
//! machine.rs): decisions from hand-made observations, no fakes, no I/O.
use super::*;
use crate::api::{DisasterRecoveryPlanStatus, FailoverSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

const SAMPLE: &str = include_str!("../../../config/samples/plan.yaml");

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn plan() -> DisasterRecoveryPlan {
    let mut p: DisasterRecoveryPlan = serde_yaml::from_str(SAMPLE).expect("sample parses");
    p.status = Some(DisasterRecoveryPlanStatus {
        conditions: vec![Condition {
            type_: "Valid".into(),
            status: "True".into(),
            reason: "Valid".into(),
            message: "plan is valid".into(),
            observed_generation: Some(1),
            last_transition_time: Time(stamp(t(0)).0),
        }],
        ..Default::default()
    });
    p
}

/// A failover and the world around it; `decide` folds each decision's status back in, as
/// the runner's write would.
struct Case {
    plan: DisasterRecoveryPlan,
    fo: Failover,
    world: World,
    now: SystemTime,
}

impl Case {
    fn new(mode: FailoverMode) -> Self {
        let mut spec = FailoverSpec::new("shop", "usw2", mode);
        spec.allow_data_loss = mode == FailoverMode::Unplanned;
        Self {
            plan: plan(),
            fo: Failover::new("move", spec),
            world: World::default(),
            now: t(0),
        }
    }

    fn decide(&mut self) -> Decision {
        let d = decide(&Input {
            plan: &self.plan,
            failover: &self.fo,
            world: &self.world,
            now: self.now,
            pass_started: self.now,
            retry_after: Duration::from_secs(30),
            jitter: 0.5,
        });
        self.fo.status = Some(d.status.clone());
        self.world.results.clear();
        d
    }

    fn status(&self) -> &FailoverStatus {
        self.fo.status.as_ref().expect("status written")
    }

    fn step(&self, step: Step) -> Option<StepState> {
        state_of(self.status(), step)
    }

    /// Every workload of the plan observed in `region` at `replicas`, ready, no pods left
    /// beyond that.
    fn workloads_at(&mut self, region: &str, replicas: impl Fn(&crate::api::WorkloadSpec) -> i32) {
        for (i, w) in self.plan.spec.workloads.iter().enumerate() {
            let n = replicas(w);
            self.world.workloads.insert(
                (region.into(), i),
                Ok(WorkloadSeen {
                    state: Some(WorkloadState {
                        replicas: n,
                        current_replicas: n,
                        ready_replicas: n,
                        observed_current: true,
                        images: Vec::new(),
                        refs: Vec::new(),
                        selector: Some(format!("app={}", w.name)),
                        jobs_to_stop: 0,
                        updated_replicas: n,
                        restarted_at: None,
                    }),
                    pods: Some(Ok(n.max(0) as usize)),
                    autoscaling: Default::default(),
                }),
            );
        }
    }

    /// An Unplanned failover of the orders database alone, fenced and warmed, with known
    /// lag and the target a healthy replica: the decision that asks for its promotion.
    /// The sample's CronJob (index into spec.workloads).
    fn cron_job(&self) -> usize {
        self.plan
            .spec
            .workloads
            .iter()
            .position(|w| w.is_cron_job())
            .expect("a CronJob")
    }

    /// Changes workload `i` as observed in `region` (observed before).
    fn edit_seen(&mut self, region: &str, i: usize, edit: impl FnOnce(&mut WorkloadState)) {
        if let Some(Ok(seen)) = self.world.workloads.get_mut(&(region.to_string(), i))
            && let Some(s) = seen.state.as_mut()
        {
            edit(s);
        }
    }

    fn unplanned_orders_promotion() -> (Self, Decision) {
        let mut c = Case::admitted(FailoverMode::Unplanned);
        c.plan.spec.databases.retain(|d| d.name == "orders");
        c.workloads_at("use1", standby);
        c.decide();
        c.workloads_at("usw2", warm);
        c.lag(1.0, t(0));
        c.orders_seen("available", Some("orders-use1"));
        let d = c.decide();
        (c, d)
    }

    /// The orders database's target instance observed with `status` and `source`.
    fn orders_seen(&mut self, status: &str, source: Option<&str>) {
        self.world.databases.insert(
            "orders".into(),
            Ok(DbSeen::Rds(Some(RdsObservation {
                status: status.into(),
                source: source.map(str::to_string),
                engine: "postgres".into(),
            }))),
        );
    }

    fn lag(&mut self, seconds: f64, at: SystemTime) {
        for db in ["orders", "catalog"] {
            self.world
                .lags
                .insert(db.into(), Ok(Some(LagReading::new(seconds, at))));
        }
    }

    /// Admitted, preflight passed, about to fence.
    fn admitted(mode: FailoverMode) -> Self {
        let mut c = Self::new(mode);
        c.decide();
        c.world.preflight = Some(PreflightSeen::default());
        c.decide();
        assert_eq!(c.step(Step::Preflight), Some(StepState::Succeeded));
        c.decide();
        assert_eq!(c.step(Step::Approval), Some(StepState::Skipped));
        c
    }
}

fn active(w: &crate::api::WorkloadSpec) -> i32 {
    w.active_replicas
}

/// Warmed up: at active counts, but CronJobs, suspended until Activate.
fn warm(w: &crate::api::WorkloadSpec) -> i32 {
    if w.is_cron_job() {
        0
    } else {
        w.active_replicas
    }
}

fn standby(w: &crate::api::WorkloadSpec) -> i32 {
    if w.fenced() { 0 } else { w.standby_replicas }
}

#[test]
fn the_step_table_orders_every_step_after_its_prerequisites() {
    for (i, rule) in STEPS.iter().enumerate() {
        for before in rule.after {
            let j = STEPS
                .iter()
                .position(|r| r.step == *before)
                .expect("known step");
            assert!(j < i, "{:?} must come after {before:?}", rule.step);
        }
    }
    assert_eq!(rule(Step::WarmUp).after, rule(Step::PromoteDatabases).after);
    assert_eq!(
        rule(Step::PromoteDatabases).on_failure,
        OnFailure::RollBackOrRetry
    );
    assert_eq!(rule(Step::SwitchDns).on_failure, OnFailure::Retry);
}

#[test]
fn admission_records_the_snapshot_and_marks_the_plan_in_one_decision() {
    let mut c = Case::new(FailoverMode::Planned);
    let d = c.decide();
    assert_eq!(d.status.phase, Some(FailoverPhase::Running));
    assert_eq!(d.status.source_region.as_deref(), Some("use1"));
    assert!(d.status.plan_snapshot.is_some());
    assert_eq!(
        d.plan.as_ref().map(|m| m.phase),
        Some(FailoverPhase::Running)
    );
    assert!(d.effects.is_empty());
    assert_eq!(d.requeue, Some(Duration::ZERO));
    assert_eq!(c.step(Step::Admission), Some(StepState::Succeeded));
}

#[test]
fn a_planned_fence_scales_first_and_waits_for_terminating_pods() {
    let mut c = Case::admitted(FailoverMode::Planned);
    c.workloads_at("use1", active);
    let d = c.decide();
    let scaled: Vec<&Effect> = d
        .effects
        .iter()
        .filter(|e| {
            matches!(
                e,
                Effect::Scale {
                    step: Step::Fence,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(
        scaled.len(),
        3,
        "the writer, the singleton and the CronJob: {:?}",
        d.effects
    );
    assert_eq!(c.step(Step::Fence), Some(StepState::Running));
    // Scaled to 0, but a singleton pod is still Terminating.
    c.workloads_at("use1", standby);
    if let Some(Ok(w)) = c.world.workloads.get_mut(&("use1".into(), 2)) {
        w.pods = Some(Ok(1));
    }
    c.now = t(2);
    let d = c.decide();
    assert!(d.effects.is_empty());
    assert!(c.status().fenced_at.is_none(), "pods still run");
    // Gone: the fence time is recorded; only lag measured after it counts.
    c.workloads_at("use1", standby);
    c.now = t(3);
    c.decide();
    assert_eq!(c.status().fenced_at, Some(stamp(t(3))));
    c.lag(0.0, t(2));
    c.now = t(4);
    c.decide();
    assert_eq!(
        c.step(Step::Fence),
        Some(StepState::Running),
        "datapoint before the fence"
    );
    c.lag(0.0, t(4));
    c.decide();
    assert_eq!(c.step(Step::Fence), Some(StepState::Succeeded));
}

/// RDS for PostgreSQL reports lag as the time since the replica's last replayed commit,
/// never exactly 0. After the fence, a reading whose implied commit (taken at minus lag) is
/// more than the clock margin after the fence proves the fenced writers' writes replayed:
/// the database passes the fence and the gate, its real lag recorded. Not for an Aurora
/// database or another RDS engine (their lag means something else), nor for a reading
/// implying a commit from before the fence.
#[test]
fn a_planned_fence_completes_when_a_postgres_replica_replayed_a_commit_made_after_it() {
    let mut c = Case::admitted(FailoverMode::Planned);
    c.workloads_at("use1", active);
    c.decide();
    c.workloads_at("use1", standby);
    c.now = t(3);
    c.decide();
    assert_eq!(c.status().fenced_at, Some(stamp(t(3))));
    c.orders_seen("available", Some("orders-use1"));
    let reading = |seconds: f64, at: u64| Ok(Some(LagReading::new(seconds, t(at))));
    c.world.lags.insert("catalog".into(), reading(0.0, 9));
    // Taken at 9 s, 7.5 s behind: its last commit is from 1.5 s, before the fence.
    c.world.lags.insert("orders".into(), reading(7.5, 9));
    c.now = t(9);
    c.decide();
    assert_eq!(c.step(Step::Fence), Some(StepState::Running));
    // A MySQL replica 0.4 s behind proves nothing.
    if let Some(Ok(DbSeen::Rds(Some(o)))) = c.world.databases.get_mut("orders") {
        o.engine = "mysql".into();
    }
    c.world.lags.insert("orders".into(), reading(0.4, 9));
    c.decide();
    assert_eq!(c.step(Step::Fence), Some(StepState::Running));
    // PostgreSQL 0.4 s behind (a heartbeat at 8.6 s): past the fence and its margin.
    c.orders_seen("available", Some("orders-use1"));
    c.decide();
    assert_eq!(c.step(Step::Fence), Some(StepState::Succeeded));
    // Aurora 0.4 s behind does not pass the gate.
    c.world.lags.insert("catalog".into(), reading(0.4, 9));
    c.workloads_at("usw2", warm);
    c.now = t(10);
    let d = c.decide();
    assert!(
        !d.effects
            .iter()
            .any(|e| matches!(e, Effect::Promote { .. })),
        "{:?}",
        d.effects
    );
    let refused = d.status.rolling_back.clone().unwrap_or_default();
    assert!(
        refused.contains("refused catalog") && !refused.contains("orders"),
        "rolls back on catalog alone: {refused}"
    );
    // With Aurora at 0: both cleared, orders with the lag the metric read.
    let mut c2 = Case::admitted(FailoverMode::Planned);
    c2.workloads_at("use1", active);
    c2.decide();
    c2.workloads_at("use1", standby);
    c2.now = t(3);
    c2.decide();
    c2.orders_seen("available", Some("orders-use1"));
    c2.world.lags.insert("catalog".into(), reading(0.0, 9));
    c2.world.lags.insert("orders".into(), reading(0.4, 9));
    c2.now = t(9);
    c2.decide();
    c2.workloads_at("usw2", warm);
    c2.now = t(10);
    c2.decide();
    let dbs = &c2.status().databases;
    assert_eq!(dbs.len(), 2, "{dbs:?}");
    assert!(
        dbs.iter()
            .all(|d| d.state != DatabaseState::Gated && d.state != DatabaseState::Pending),
        "{dbs:?}"
    );
    let orders = dbs.iter().find(|d| d.name == "orders").expect("orders");
    assert_eq!(orders.lag_seconds, Some(0.4), "{orders:?}");
}

/// A scale just accepted (the runner's next round sees it so) reaches a target that needs
/// only its count, never one whose pods must be gone: the fence waits for status.
#[test]
fn a_scale_to_zero_just_accepted_does_not_fence_until_status_catches_up() {
    let mut c = Case::admitted(FailoverMode::Planned);
    c.workloads_at("use1", active);
    c.decide();
    c.workloads_at("use1", standby);
    // As the runner's accepted scale leaves it: the count, status not caught up, the pods
    // not listed (they are listed only once a workload shows its target count).
    for w in c.world.workloads.values_mut().flatten() {
        if let Some(s) = w.state.as_mut() {
            s.observed_current = false;
        }
        w.pods = None;
    }
    c.now = t(1);
    let d = c.decide();
    assert!(c.status().fenced_at.is_none());
    assert!(d.effects.is_empty(), "not scaled again: {:?}", d.effects);
    assert_eq!(c.step(Step::Fence), Some(StepState::Running));
}

#[test]
fn one_database_with_unknown_lag_keeps_every_database_from_promotion() {
    let mut c = Case::admitted(FailoverMode::Unplanned);
    c.fo.spec.allow_data_loss = false;
    c.workloads_at("use1", standby);
    c.decide();
    assert_eq!(c.step(Step::Fence), Some(StepState::Succeeded));
    c.workloads_at("usw2", warm);
    c.world
        .lags
        .insert("orders".into(), Ok(Some(LagReading::new(0.0, t(0)))));
    c.world
        .lags
        .insert("catalog".into(), Ok(Some(LagReading::new(-1.0, t(0)))));
    c.orders_seen("available", Some("orders-use1"));
    let d = c.decide();
    assert!(
        !d.effects
            .iter()
            .any(|e| matches!(e, Effect::Promote { .. })),
        "{:?}",
        d.effects
    );
    assert_eq!(d.status.phase, Some(FailoverPhase::Failed));
    assert!(
        d.status
            .databases
            .iter()
            .all(|db| db.state == DatabaseState::Gated)
    );
}

/// Replication stopped (the metric reads -1) after a lag was read: allowDataLoss promotes
/// on the unknown lag, and the database records its estimated loss: that lag plus the time
/// until the stop was seen.
#[test]
fn a_database_promoted_after_its_replication_stopped_records_a_bound_on_its_loss() {
    let mut c = Case::admitted(FailoverMode::Unplanned);
    c.plan.spec.databases.retain(|d| d.name == "orders");
    c.workloads_at("use1", standby);
    c.decide();
    c.workloads_at("usw2", warm);
    let mut reading = LagReading::new(-1.0, t(4));
    reading.before_break = Some(crate::engine::lag::BeforeBreak {
        seconds: 2.5,
        at: t(1),
        broken_at: t(3),
    });
    c.world.lags.insert("orders".into(), Ok(Some(reading)));
    c.orders_seen("available", Some("orders-use1"));
    c.now = t(4);
    let d = c.decide();
    assert!(
        d.effects
            .iter()
            .any(|e| matches!(e, Effect::Promote { .. })),
        "allowDataLoss promotes on unknown lag: {:?}",
        d.effects
    );
    let orders = &d.status.databases[0];
    assert_eq!(orders.lag_seconds, None, "{orders:?}");
    assert_eq!(orders.loss_estimate_seconds, Some(4.5), "{orders:?}");
}

#[test]
fn a_promotion_is_recorded_before_it_is_sent_and_not_resent_after_an_unknown_outcome() {
    let (mut c, d) = Case::unplanned_orders_promotion();
    assert_eq!(
        d.effects
            .iter()
            .filter(|e| matches!(e, Effect::Promote { .. }))
            .count(),
        1
    );
    assert_eq!(d.status.databases[0].state, DatabaseState::Requesting);
    // The call timed out; AWS does not show it yet: observe, do not resend.
    c.world.results = vec![EffectResult::Promoted {
        database: "orders".into(),
        first: true,
        outcome: Err(Problem::new(Fault::Transient, "timeout")),
    }];
    c.now = t(1);
    let d = c.decide();
    assert!(
        !d.effects
            .iter()
            .any(|e| matches!(e, Effect::Promote { .. }))
    );
    assert!(d.requeue.is_some_and(|r| r > Duration::ZERO));
    // It did take effect.
    c.orders_seen("modifying", None);
    c.now = t(2);
    assert!(
        c.decide()
            .effects
            .iter()
            .all(|e| !matches!(e, Effect::Promote { .. }))
    );
    c.orders_seen("available", None);
    c.decide();
    assert_eq!(c.step(Step::PromoteDatabases), Some(StepState::Succeeded));
}

fn cron_job_scales(d: &Decision, c: &Case) -> Vec<(Step, i32)> {
    d.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Scale { target, step }
                if target.region == "usw2"
                    && c.plan.spec.workloads[target.workload].is_cron_job() =>
            {
                Some((*step, target.replicas))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_cron_job_is_resumed_by_activate_once_every_database_is_writable() {
    let (mut c, d) = Case::unplanned_orders_promotion();
    // The sample's config already holds the target's values.
    for region in ["use1", "usw2"] {
        c.world.configs.insert((region.into(), 0), Ok(Vec::new()));
    }
    c.workloads_at("usw2", warm);
    // Warm-up and the promotion call go out; the CronJob stays suspended.
    assert!(cron_job_scales(&d, &c).is_empty(), "{:?}", d.effects);
    c.world.results = vec![EffectResult::Promoted {
        database: "orders".into(),
        first: true,
        outcome: Ok(()),
    }];
    c.orders_seen("modifying", None);
    c.now = t(1);
    let d = c.decide();
    assert!(
        cron_job_scales(&d, &c).is_empty(),
        "promotion under way: {:?}",
        d.effects
    );
    assert_eq!(c.step(Step::Activate), Some(StepState::Pending));
    // Writable: Activate resumes it.
    c.orders_seen("available", None);
    c.now = t(2);
    let d = c.decide();
    assert_eq!(c.step(Step::PromoteDatabases), Some(StepState::Succeeded));
    assert_eq!(
        d.requeue,
        Some(Duration::ZERO),
        "the next step starts at once"
    );
    let d = c.decide();
    assert_eq!(cron_job_scales(&d, &c), vec![(Step::Activate, 1)]);
    // DNS waits for the config (already right here), not for a scheduled job; Verify
    // waits for both.
    assert_eq!(c.step(Step::Reconfigure), Some(StepState::Succeeded));
    c.decide();
    assert_ne!(c.step(Step::SwitchDns), Some(StepState::Pending));
    assert_eq!(c.step(Step::Activate), Some(StepState::Running));
    assert_eq!(c.step(Step::Verify), Some(StepState::Pending));
    c.workloads_at("usw2", active);
    c.now = t(3);
    c.decide();
    assert_eq!(c.step(Step::Activate), Some(StepState::Succeeded));
}

#[test]
fn a_cron_job_found_resumed_in_the_target_is_suspended_by_warm_up() {
    // An Unplanned failover goes ahead despite it (preflight notes it); WarmUp suspends it
    // while the databases are promoted, and Activate resumes it after.
    let mut c = Case::admitted(FailoverMode::Unplanned);
    c.plan.spec.databases.retain(|d| d.name == "orders");
    c.workloads_at("use1", standby);
    c.decide();
    c.workloads_at("usw2", active);
    c.lag(1.0, t(0));
    c.orders_seen("available", Some("orders-use1"));
    let d = c.decide();
    assert_eq!(cron_job_scales(&d, &c), vec![(Step::WarmUp, 0)]);
    assert_eq!(c.step(Step::WarmUp), Some(StepState::Running));
    // Suspended, with Jobs of its own still running (and more to stop): WarmUp is done
    // with it. DNS never waits for a scheduled job; its Jobs are not WarmUp's to wait for.
    let cron = c.cron_job();
    c.edit_seen("usw2", cron, |s| {
        s.replicas = 0;
        s.current_replicas = 2;
        s.ready_replicas = 0;
        s.jobs_to_stop = 2;
    });
    c.now = t(1);
    let d = c.decide();
    // (Its runningJobs is Stop: the stop is sent again, not waited on.)
    assert_eq!(cron_job_scales(&d, &c), vec![(Step::WarmUp, 0)]);
    assert_eq!(c.step(Step::WarmUp), Some(StepState::Succeeded));
}

#[test]
fn a_suspended_cron_job_with_jobs_left_to_stop_is_sent_again_a_poll_apart() {
    let mut c = Case::admitted(FailoverMode::Planned);
    let i = c.cron_job();
    assert_eq!(
        c.plan.spec.workloads[i].running_jobs,
        Some(RunningJobs::Stop)
    );
    c.workloads_at("use1", standby);
    // Suspended (say by the pass before a crash), one Job deleted, one not yet.
    c.edit_seen("use1", i, |s| {
        s.current_replicas = 2;
        s.jobs_to_stop = 1;
    });
    let stops = |d: &Decision| {
        d.effects
            .iter()
            .filter(|e| matches!(e, Effect::Scale { target, .. } if target.workload == i))
            .count()
    };
    assert_eq!(stops(&c.decide()), 1);
    let target = ScaleTarget {
        workload: i,
        region: "use1".into(),
        replicas: 0,
        hold: false,
    };
    c.world.scaled_last_pass = vec![target];
    assert_eq!(stops(&c.decide()), 0, "sent last pass: a poll first");
    assert_eq!(c.step(Step::Fence), Some(StepState::Running));
}

/// An Unplanned failover warming up usw2, with web (index 0) seen at `replicas` and
/// `autoscaling`; whether the next decision scales web, and then the WarmUp's state.
fn warm_up_web(replicas: i32, live: Option<i32>, behind: bool) -> (bool, Option<StepState>) {
    use crate::engine::autoscalers::Autoscaling;
    let mut c = Case::admitted(FailoverMode::Unplanned);
    c.plan.spec.databases.retain(|d| d.name == "orders");
    c.workloads_at("use1", standby);
    c.decide();
    c.workloads_at("usw2", warm);
    c.lag(1.0, t(0));
    c.orders_seen("available", Some("orders-use1"));
    if let Some(Ok(seen)) = c.world.workloads.get_mut(&("usw2".to_string(), 0)) {
        seen.autoscaling = Autoscaling { live, behind };
        if let Some(s) = seen.state.as_mut() {
            s.replicas = replicas;
            s.current_replicas = replicas;
            s.ready_replicas = replicas;
        }
    }
    let d = c.decide();
    let scaled = d
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Scale { target, step: Step::WarmUp } if target.workload == 0));
    (scaled, c.step(Step::WarmUp))
}

#[test]
fn autoscalers_behind_are_driven_at_the_count_and_a_count_a_live_one_set_is_not_fought() {
    // web's active count is 4. Its HPA not yet restored (say a crash between its patch and
    // the scale's): sent again though the count is right.
    assert!(warm_up_web(4, None, true).0);
    // Above or below the count with nothing live to explain it: a drift, scaled back.
    assert!(warm_up_web(6, None, false).0);
    assert!(warm_up_web(2, None, false).0);
    // Live, an HPA took web to 6 under load: reached, not scaled back to 4.
    assert_eq!(
        warm_up_web(6, Some(4), false),
        (false, Some(StepState::Succeeded))
    );
    // Below it, a live ScaledObject (minReplicaCount 0) notwithstanding: a warm-up brings
    // the standby to full capacity (only Verify leaves a count KEDA lowered).
    assert!(warm_up_web(2, Some(0), false).0);
    assert!(warm_up_web(0, Some(0), false).0);
}

/// Promoted, warmed up and DNS switching: the pass that starts Activate is next.
fn promoted_with_config() -> Case {
    let (mut c, _) = Case::unplanned_orders_promotion();
    c.plan.spec.config = vec![
        serde_yaml::from_str(
            "{kind: ConfigMap, namespace: shop, name: app, restart: [web], keys: \
             [{key: REGION, values: {use1: use1, usw2: usw2}}]}",
        )
        .expect("config entry"),
    ];
    c.workloads_at("usw2", warm);
    c.world.results = vec![EffectResult::Promoted {
        database: "orders".into(),
        first: true,
        outcome: Ok(()),
    }];
    c.orders_seen("available", None);
    c.now = t(1);
    c.decide();
    assert_eq!(c.step(Step::PromoteDatabases), Some(StepState::Succeeded));
    c
}

fn config_effects(d: &Decision) -> Vec<Effect> {
    d.effects
        .iter()
        .filter(|e| matches!(e, Effect::WriteConfig { .. } | Effect::Restart { .. }))
        .cloned()
        .collect()
}

#[test]
fn config_is_written_in_every_region_that_answers_and_waited_for_in_the_target_only() {
    let mut c = promoted_with_config();
    let mut third = c.plan.spec.regions[1].clone();
    third.name = "euw1".into();
    c.plan.spec.regions.push(third);
    for region in ["usw2", "use1", "euw1"] {
        c.world
            .configs
            .insert((region.into(), 0), Ok(vec!["REGION".into()]));
    }
    let d = c.decide();
    let written: Vec<Effect> = ["usw2", "use1", "euw1"]
        .iter()
        .map(|r| Effect::WriteConfig {
            config: 0,
            region: r.to_string(),
        })
        .collect();
    assert_eq!(
        config_effects(&d),
        written,
        "the target first, then the others"
    );
    let regions: Vec<&str> = d
        .status
        .config_changes
        .iter()
        .map(|c| c.region.as_str())
        .collect();
    assert_eq!(regions, vec!["usw2", "use1", "euw1"]);
    // Written in the target; the third region lost meanwhile: the step goes on.
    c.world.configs.insert(("usw2".into(), 0), Ok(Vec::new()));
    c.world.configs.insert(("use1".into(), 0), Ok(Vec::new()));
    c.world.configs.insert(
        ("euw1".into(), 0),
        Err(Problem::new(Fault::Unreachable, "no route to host")),
    );
    c.now = t(2);
    let d = c.decide();
    assert!(
        matches!(&config_effects(&d)[..], [Effect::Restart { region, .. }] if region == "usw2"),
        "{:?}",
        d.effects
    );
}

#[test]
fn config_is_recorded_then_written_and_its_workloads_restarted_once_written() {
    let mut c = promoted_with_config();
    let target = ("usw2".to_string(), 0);
    // The old region does not answer: nothing waits for it.
    c.world.configs.insert(
        ("use1".into(), 0),
        Err(Problem::new(Fault::Unreachable, "no route to host")),
    );
    c.world
        .configs
        .insert(target.clone(), Ok(vec!["REGION".into()]));
    let d = c.decide();
    assert_eq!(
        config_effects(&d),
        vec![Effect::WriteConfig {
            config: 0,
            region: "usw2".into()
        }],
        "written before any restart"
    );
    // Recorded, by key, in the status written before the call.
    assert_eq!(d.status.config_changes.len(), 1);
    assert_eq!(d.status.config_changes[0].keys, vec!["REGION".to_string()]);
    assert_eq!(d.status.config_changes[0].region, "usw2");
    // Written: web is restarted, its annotation value recorded first.
    c.world.configs.insert(target, Ok(Vec::new()));
    c.now = t(2);
    let d = c.decide();
    let at = d
        .status
        .restarts
        .first()
        .expect("restart recorded")
        .restarted_at
        .clone();
    assert_eq!(
        config_effects(&d),
        vec![Effect::Restart {
            workload: 0,
            region: "usw2".into(),
            at: at.clone()
        }]
    );
    // Not showing yet (the answer was lost): asked again with the same value, so a
    // second request is no second restart.
    c.now = t(3);
    let d = c.decide();
    assert_eq!(d.status.restarts.len(), 1);
    assert!(matches!(&config_effects(&d)[..], [Effect::Restart { at: again, .. }] if *again == at));
    // Showing, rolling out: waited for.
    if let Some(Ok(seen)) = c.world.workloads.get_mut(&("usw2".into(), 0))
        && let Some(s) = seen.state.as_mut()
    {
        s.restarted_at = Some(at.clone());
        s.updated_replicas = 1;
    }
    c.now = t(4);
    let d = c.decide();
    assert!(config_effects(&d).is_empty());
    assert_eq!(c.step(Step::Reconfigure), Some(StepState::Running));
    assert_eq!(
        c.step(Step::SwitchDns),
        Some(StepState::Pending),
        "DNS waits for the config"
    );
    if let Some(Ok(seen)) = c.world.workloads.get_mut(&("usw2".into(), 0))
        && let Some(s) = seen.state.as_mut()
    {
        s.updated_replicas = s.replicas;
    }
    c.now = t(5);
    c.decide();
    assert_eq!(c.step(Step::Reconfigure), Some(StepState::Succeeded));
    let message = step_of(c.status(), Step::Reconfigure).and_then(|s| s.message.clone());
    assert_eq!(
        message.as_deref(),
        Some("wrote ConfigMap shop/app in usw2 (REGION); restarted shop/web")
    );
}

#[test]
fn config_already_right_is_not_written_and_restarts_nothing() {
    let mut c = promoted_with_config();
    c.world.configs.insert(("usw2".into(), 0), Ok(Vec::new()));
    c.world.configs.insert(("use1".into(), 0), Ok(Vec::new()));
    let d = c.decide();
    assert!(config_effects(&d).is_empty(), "{:?}", d.effects);
    assert!(d.status.config_changes.is_empty() && d.status.restarts.is_empty());
}

#[test]
fn a_suspended_cron_job_with_running_jobs_holds_the_fence() {
    let mut c = Case::admitted(FailoverMode::Planned);
    c.workloads_at("use1", standby);
    let i = c.cron_job();
    c.edit_seen("use1", i, |s| s.current_replicas = 2);
    c.decide();
    c.now = t(400);
    c.decide();
    assert_eq!(c.step(Step::Fence), Some(StepState::Failed));
    let message = &c
        .status()
        .steps
        .iter()
        .find(|s| s.name == "Fence")
        .expect("Fence")
        .message;
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("CronJob shop/nightly-report: 2 Jobs still running")),
        "{message:?}"
    );
}

#[test]
fn the_pass_that_sees_one_promotion_finish_looks_at_the_others_again_soon() {
    let mut c = Case::admitted(FailoverMode::Unplanned);
    let mut payments = c.plan.spec.databases[0].clone();
    payments.name = "payments".into();
    c.plan.spec.databases.retain(|d| d.name == "orders");
    c.plan.spec.databases.push(payments);
    c.workloads_at("use1", standby);
    c.decide();
    c.workloads_at("usw2", warm);
    c.world
        .lags
        .insert("payments".into(), Ok(Some(LagReading::new(1.0, t(0)))));
    c.lag(1.0, t(0));
    c.orders_seen("available", Some("orders-use1"));
    c.world
        .databases
        .insert("payments".into(), c.world.databases["orders"].clone());
    let d = c.decide();
    let promotions = d
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::Promote { .. }))
        .count();
    assert_eq!(promotions, 2);
    // Both promoting, 30 s in: the poll has grown.
    c.world.results = vec![
        EffectResult::Promoted {
            database: "orders".into(),
            first: true,
            outcome: Ok(()),
        },
        EffectResult::Promoted {
            database: "payments".into(),
            first: false,
            outcome: Ok(()),
        },
    ];
    c.orders_seen("modifying", None);
    c.world
        .databases
        .insert("payments".into(), c.world.databases["orders"].clone());
    c.now = t(30);
    let grown = c.decide().requeue.expect("waits");
    assert_eq!(grown, Duration::from_secs(1));
    // Orders is done, payments not yet: look again at the shortest poll, once.
    c.orders_seen("available", None);
    c.now = t(31);
    assert_eq!(c.decide().requeue, Some(Duration::from_millis(50)));
    c.now = t(32);
    assert!(
        c.decide()
            .requeue
            .is_some_and(|r| r > Duration::from_millis(50))
    );
    c.world
        .databases
        .insert("payments".into(), c.world.databases["orders"].clone());
    c.decide();
    assert_eq!(c.step(Step::PromoteDatabases), Some(StepState::Succeeded));
}

#[test]
fn deadlines_count_from_the_recorded_start_so_a_restart_does_not_reset_them() {
    let mut c = Case::admitted(FailoverMode::Unplanned);
    c.workloads_at("use1", standby);
    c.decide();
    // WarmUp started at t(0); the target never gets ready. A decision at 601 s (a fresh
    // process reading status) fails it.
    let mut not_ready = Case::new(FailoverMode::Unplanned);
    not_ready.workloads_at("usw2", standby);
    c.world.workloads.extend(not_ready.world.workloads);
    c.decide();
    assert_eq!(c.step(Step::WarmUp), Some(StepState::Running));
    c.now = t(601);
    c.decide();
    assert_eq!(c.step(Step::WarmUp), Some(StepState::Failed));
}

#[test]
fn a_planned_rollback_scales_the_target_down_before_the_old_region_up() {
    let mut c = Case::admitted(FailoverMode::Planned);
    if let Some(s) = c.fo.status.as_mut() {
        s.rolling_back = Some("lag gate refused".into());
        if let Some(w) = s.steps.iter_mut().find(|s| s.name == "WarmUp") {
            w.state = StepState::Failed;
            w.finished_at = Some(stamp(t(0)));
        }
    }
    c.workloads_at("use1", standby);
    c.workloads_at("usw2", warm);
    let d = c.decide();
    let regions: Vec<&str> = d
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Scale { target, .. } => Some(target.region.as_str()),
            _ => None,
        })
        .collect();
    assert!(!regions.is_empty());
    assert!(regions.iter().all(|r| *r == "usw2"), "{regions:?}");
    c.workloads_at("usw2", standby);
    let d = c.decide();
    assert!(d.effects.iter().all(|e| match e {
        Effect::Scale { target, .. } => target.region == "use1",
        _ => false,
    }));
    c.workloads_at("use1", active);
    let d = c.decide();
    assert_eq!(d.status.phase, Some(FailoverPhase::RolledBack));
    assert!(d.plan.is_some_and(|m| m.active_region.is_none()));
}

#[test]
fn dns_batches_are_recorded_before_they_are_sent_and_then_waited_on() {
    let mut c = Case::admitted(FailoverMode::Unplanned);
    for step in [
        "Fence",
        "WarmUp",
        "PromoteDatabases",
        "Activate",
        "Reconfigure",
    ] {
        if let Some(s) =
            c.fo.status
                .as_mut()
                .and_then(|s| s.steps.iter_mut().find(|st| st.name == step))
        {
            s.state = StepState::Succeeded;
        }
    }
    assert_eq!(
        wants(&c.plan.spec, &c.fo).zones,
        vec!["Z0SHOPEXAMPLE".to_string()]
    );
    c.world.zones.insert("Z0SHOPEXAMPLE".into(), Ok(Vec::new()));
    let d = c.decide();
    let sent = d
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::ChangeRecords { .. }))
        .count();
    assert_eq!(sent, 1);
    assert_eq!(
        d.status.dns_changes[0].status.as_deref(),
        Some("Submitting")
    );
    c.world.results = vec![EffectResult::ChangedRecords {
        zone: "Z0SHOPEXAMPLE".into(),
        batch: 1,
        outcome: Ok("C1".into()),
    }];
    c.decide();
    assert_eq!(c.status().dns_changes[0].status.as_deref(), Some("PENDING"));
    let w = wants(&c.plan.spec, &c.fo);
    assert_eq!(w.changes, vec!["C1".to_string()]);
    assert!(w.ahead.is_empty(), "no look-ahead while a batch is pending");
    // INSYNC: the zone is read again to confirm, and the target's workloads, whose
    // autoscalers the step hands back; Verify's reads, the lost old region's included, are
    // only looked ahead at, never waited on for this decision.
    c.world.changes.insert("C1".into(), Ok(true));
    c.decide();
    let w = wants(&c.plan.spec, &c.fo);
    assert_eq!(w.zones, vec!["Z0SHOPEXAMPLE".to_string()]);
    assert!(!w.workloads.is_empty());
    assert!(w.workloads.iter().all(|t| t.region == "usw2" && !t.hold));
    assert!(w.ahead.iter().any(|t| t.region == "use1"));
    assert!(w.ahead.iter().any(|t| t.region == "usw2"));
}

#[test]
fn a_failed_preflight_ends_the_failover_without_touching_anything() {
    let mut c = Case::new(FailoverMode::Planned);
    c.decide();
    c.world.preflight = Some(PreflightSeen {
        problems: vec!["database orders: instance is stopped".into()],
        ..Default::default()
    });
    let d = c.decide();
    assert_eq!(d.status.phase, Some(FailoverPhase::Failed));
    assert!(d.status.rolling_back.is_none());
    assert!(d.effects.is_empty());
    assert_eq!(d.requeue, None);
}

#[test]
fn preflight_notes_refuse_nothing_and_are_said_in_the_steps_message() {
    let mut c = Case::new(FailoverMode::Unplanned);
    c.decide();
    c.world.preflight = Some(PreflightSeen {
        notes: vec!["CronJob shop/report is not suspended in usw2 (WarmUp suspends it)".into()],
        ..Default::default()
    });
    let d = c.decide();
    assert_ne!(d.status.phase, Some(FailoverPhase::Failed));
    assert_eq!(c.step(Step::Preflight), Some(StepState::Succeeded));
    let message = step_of(c.status(), Step::Preflight)
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    assert_eq!(
        message,
        "all checks passed; going ahead despite: CronJob shop/report is not suspended in \
         usw2 (WarmUp suspends it)"
    );
}

// From a cold review: each of these failed before its fix.

#[test]
fn a_refused_resend_after_a_lost_answer_never_rolls_back_a_promotion() {
    let mut c = Case::admitted(FailoverMode::Planned);
    c.plan.spec.databases.retain(|d| d.name == "orders");
    c.workloads_at("use1", standby);
    c.now = t(1);
    c.decide();
    c.world
        .lags
        .insert("orders".into(), Ok(Some(LagReading::new(0.0, t(2)))));
    c.now = t(2);
    c.decide();
    assert_eq!(c.step(Step::Fence), Some(StepState::Succeeded));
    c.workloads_at("usw2", warm);
    c.orders_seen("available", Some("orders-use1"));
    c.now = t(3);
    assert!(
        c.decide()
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Promote { first: true, .. }))
    );
    // The call took effect but its answer was lost (a crash); AWS does not show it yet, so
    // the next pass sends again, and AWS refuses the resend.
    c.now = t(4);
    let d = c.decide();
    assert!(
        d.effects
            .iter()
            .any(|e| matches!(e, Effect::Promote { first: false, .. }))
    );
    c.world.results = vec![EffectResult::Promoted {
        database: "orders".into(),
        first: false,
        outcome: Err(Problem::new(Fault::Permanent, "InvalidDBInstanceState")),
    }];
    c.now = t(5);
    let d = c.decide();
    assert!(d.status.rolling_back.is_none());
    assert_eq!(d.status.databases[0].state, DatabaseState::Requesting);
    assert_eq!(d.status.phase, Some(FailoverPhase::Running));
    // Not resent at once (AWS still lags): the decision only observes, and waits.
    assert!(
        !d.effects
            .iter()
            .any(|e| matches!(e, Effect::Promote { .. }))
    );
    assert!(d.requeue.is_some_and(|r| r > Duration::ZERO));
}

#[test]
fn an_unplanned_fence_waits_out_one_unanswered_read_before_skipping() {
    let mut c = Case::admitted(FailoverMode::Unplanned);
    for i in 0..c.plan.spec.workloads.len() {
        c.world.workloads.insert(
            ("use1".into(), i),
            Err(Problem::new(Fault::Unreachable, "connection reset")),
        );
    }
    c.decide();
    assert_eq!(c.step(Step::Fence), Some(StepState::Running));
    // Still no answer at the (10 s) deadline: skipped, and recorded for the plan.
    c.now = t(11);
    c.decide();
    assert_eq!(c.step(Step::Fence), Some(StepState::Skipped));
    assert_eq!(c.status().unfenced_workloads.len(), 3);
}

#[test]
fn a_rollback_does_not_wait_for_standby_readers_to_be_ready() {
    let mut c = Case::admitted(FailoverMode::Planned);
    if let Some(s) = c.fo.status.as_mut() {
        s.rolling_back = Some("warm-up not ready".into());
        s.rollback_started_at = Some(stamp(t(0)));
        if let Some(w) = s.steps.iter_mut().find(|s| s.name == "WarmUp") {
            w.state = StepState::Failed;
            w.finished_at = Some(stamp(t(0)));
        }
    }
    c.workloads_at("use1", standby);
    c.workloads_at("usw2", standby);
    // The reader in usw2 is at its standby count, but its pod never gets ready.
    if let Some(Ok(w)) = c.world.workloads.get_mut(&("usw2".into(), 0))
        && let Some(s) = w.state.as_mut()
    {
        s.ready_replicas = 0;
    }
    c.now = t(1);
    let d = c.decide();
    let unfence: Vec<&Effect> = d
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::Scale { target, .. } if target.region == "use1"))
        .collect();
    assert_eq!(unfence.len(), 3, "{:?}", d.effects);
}

#[test]
fn an_unplanned_failover_records_its_pending_fences_before_its_first_promotion() {
    let mut c = Case::admitted(FailoverMode::Unplanned);
    c.plan.spec.databases.retain(|d| d.name == "orders");
    for i in 0..c.plan.spec.workloads.len() {
        c.world.workloads.insert(
            ("use1".into(), i),
            Err(Problem::new(Fault::Unreachable, "no route to host")),
        );
    }
    c.decide();
    c.now = t(11);
    c.decide();
    assert_eq!(c.step(Step::Fence), Some(StepState::Skipped));
    c.workloads_at("usw2", warm);
    c.lag(1.0, t(11));
    c.orders_seen("available", Some("orders-use1"));
    let d = c.decide();
    assert!(
        d.effects
            .iter()
            .any(|e| matches!(e, Effect::Promote { .. }))
    );
    let mark = d.plan.expect("plan marked before the call");
    assert_eq!(mark.active_region, None);
    // The three unreached workloads (writer, singleton, CronJob) and the old RDS primary.
    assert_eq!(mark.fences.len(), 4, "{:?}", mark.fences);
    // No apiVersion in the plan: where it returns, the cluster says which it serves.
    let cron = mark
        .fences
        .iter()
        .find(|f| f.kind.as_deref() == Some("CronJob"));
    assert_eq!(cron.map(|f| f.api_version.clone()), Some(None));
}

#[test]
fn a_spec_edited_while_running_is_flagged_once_and_the_admitted_spec_runs_on() {
    let mut c = Case::admitted(FailoverMode::Planned);
    assert_eq!(
        c.status()
            .admitted_spec
            .as_ref()
            .map(|s| s.target_region.as_str()),
        Some("usw2")
    );
    c.fo.metadata.generation = Some(2);
    let d = c.decide();
    let edited = conditions::find(&d.status.conditions, "Valid").expect("flagged");
    assert_eq!(edited.reason, "SpecEdited");
    assert_eq!(d.status.phase, Some(FailoverPhase::Running));
    assert_eq!(
        d.events.iter().filter(|e| e.reason == "SpecEdited").count(),
        1
    );
    assert!(!c.decide().events.iter().any(|e| e.reason == "SpecEdited"));
}

#[test]
fn recorded_times_keep_fractions_of_a_second() {
    // A fence time rounded down to the second would let a lag datapoint from before the
    // fence count, and step durations and the RTO read back from status would grow by up
    // to a second.
    let status = FailoverStatus {
        fenced_at: Some(stamp(t(0) + Duration::from_millis(750))),
        ..Default::default()
    };
    let json = serde_json::to_string(&status).expect("serializes");
    let back: FailoverStatus = serde_json::from_str(&json).expect("parses");
    assert_eq!(back.fenced_at, status.fenced_at, "{json}");
}

#[test]
fn pending_fences_recorded_at_a_refused_first_promotion_are_withdrawn_when_it_fails() {
    let (mut c, d) = Case::unplanned_orders_promotion();
    assert!(d.plan.is_some_and(|m| !m.fences.is_empty()));
    c.world.results = vec![EffectResult::Promoted {
        database: "orders".into(),
        first: true,
        outcome: Err(Problem::new(Fault::Permanent, "InvalidDBInstanceState")),
    }];
    let d = c.decide();
    assert_eq!(d.status.phase, Some(FailoverPhase::Failed));
    let mark = d.plan.expect("plan marked");
    assert!(mark.withdraw_own_fences && mark.active_region.is_none());
}

#[test]
fn a_target_scaled_last_pass_is_not_scaled_again_at_once() {
    let mut c = Case::admitted(FailoverMode::Planned);
    c.workloads_at("use1", active);
    c.world.scaled_last_pass = engine::fence_targets(&c.plan.spec, "use1");
    let d = c.decide();
    assert!(d.effects.is_empty(), "{:?}", d.effects);
    assert!(d.requeue.is_some_and(|r| r > Duration::ZERO));
}

#[test]
fn a_failover_admitted_without_a_recorded_spec_records_it_while_unedited() {
    let mut c = Case::admitted(FailoverMode::Planned);
    if let Some(s) = c.fo.status.as_mut() {
        s.admitted_spec = None;
    }
    let d = c.decide();
    assert_eq!(d.status.admitted_spec.as_ref(), Some(&c.fo.spec));
}

// ---- Approval -----------------------------------------------------------------------------

/// A failback: usw2 was active before the last failover.
fn failback() -> Case {
    let mut c = Case::new(FailoverMode::Planned);
    c.fo.metadata.name = Some("back".into());
    c.fo.metadata.namespace = Some("shop".into());
    c.fo.metadata.uid = Some("uid-back".into());
    c.fo.metadata.creation_timestamp = Some(Time(stamp(t(0)).0));
    if let Some(s) = c.plan.status.as_mut() {
        s.previous_active_region = Some("usw2".into());
    }
    c
}

fn decided(choice: crate::api::ApprovalChoice, at: SystemTime) -> ApprovalSeen {
    ApprovalSeen {
        name: "back".into(),
        failover_ref: "back".into(),
        failover_uid: Some("uid-back".into()),
        choice,
        approver: Some("alice".into()),
        approver_source: Some("kubeconfig user".into()),
        reason: Some("primary is healthy again".into()),
        created: Some(at),
        generation: 1,
    }
}

/// Admitted and preflight passed; the decision after shows the approval wait.
fn awaiting(c: &mut Case) -> Decision {
    c.decide();
    c.world.preflight = Some(PreflightSeen::default());
    c.decide();
    c.world.approvals = Some(Vec::new());
    c.decide()
}

#[test]
fn a_failback_waits_for_approval_without_touching_anything() {
    let mut c = failback();
    let admitted = c.decide();
    let reason = admitted.status.approval.as_ref().map(|a| a.reason.clone());
    assert_eq!(
        reason.as_deref(),
        Some("failback to usw2 (active before the last failover)")
    );
    c.world.preflight = Some(PreflightSeen::default());
    c.decide();
    let w = wants(&c.plan.spec, &c.fo);
    assert!(w.approvals && w.workloads.is_empty() && w.ahead.is_empty());
    c.world.approvals = Some(Vec::new());
    let d = c.decide();
    assert_eq!(d.status.phase, Some(FailoverPhase::AwaitingApproval));
    assert!(d.effects.is_empty());
    assert_eq!(
        d.plan.as_ref().map(|m| m.phase),
        Some(FailoverPhase::AwaitingApproval)
    );
    let note = d.events.iter().find(|n| n.reason == "AwaitingApproval");
    assert!(
        note.is_some_and(|n| n.message.contains("drover approve back -n shop")),
        "{:?}",
        d.events
    );
    assert_eq!(
        c.status()
            .approval
            .as_ref()
            .and_then(|a| a.deadline.clone()),
        Some(stamp(t(3600)))
    );
    // Nothing arrives: no calls, and it looks again no later than the fallback poll.
    c.now = t(60);
    let d = c.decide();
    assert!(d.effects.is_empty() && d.events.is_empty());
    assert_eq!(d.requeue, Some(APPROVAL_POLL));
    assert_eq!(c.step(Step::Fence), Some(StepState::Pending));
}

#[test]
fn an_approval_is_recorded_then_the_preflight_is_made_again_before_the_fence() {
    let mut c = failback();
    awaiting(&mut c);
    c.now = t(100);
    c.world.approvals = Some(vec![decided(crate::api::ApprovalChoice::Approve, t(90))]);
    c.world.preflight = None;
    let d = c.decide();
    assert_eq!(d.status.phase, Some(FailoverPhase::Running));
    assert!(d.effects.is_empty());
    let approval = c.status().approval.clone().unwrap_or_default();
    assert_eq!(approval.decision, Some(ApprovalDecision::Approved));
    assert_eq!(approval.decided_by.as_deref(), Some("alice"));
    assert_eq!(approval.decided_at, Some(stamp(t(90))));
    assert!(d.events.iter().any(|n| n.reason == "Approved"));
    // The next decision wants the preflight again, and the fence only after it.
    let w = wants(&c.plan.spec, &c.fo);
    assert!(w.preflight && !w.approvals);
    let d = c.decide();
    assert!(d.effects.is_empty());
    assert_eq!(c.step(Step::Approval), Some(StepState::Running));
    c.world.preflight = Some(PreflightSeen::default());
    c.decide();
    assert_eq!(c.step(Step::Approval), Some(StepState::Succeeded));
    c.workloads_at("use1", active);
    let d = c.decide();
    assert!(d.effects.iter().any(|e| matches!(
        e,
        Effect::Scale {
            step: Step::Fence,
            ..
        }
    )));
}

#[test]
fn a_failed_preflight_after_approval_fails_the_failover_without_touching_anything() {
    let mut c = failback();
    awaiting(&mut c);
    c.world.approvals = Some(vec![decided(crate::api::ApprovalChoice::Approve, t(10))]);
    c.now = t(20);
    c.decide();
    c.world.preflight = Some(PreflightSeen {
        problems: vec!["usw2: image shop/web:2 missing".into()],
        ..Default::default()
    });
    let d = c.decide();
    assert_eq!(d.status.phase, Some(FailoverPhase::Failed));
    assert!(d.effects.is_empty());
    assert_eq!(c.step(Step::Fence), Some(StepState::Pending));
}

#[test]
fn a_rejection_or_an_expired_wait_ends_rejected_and_is_recorded_on_the_plan() {
    let mut c = failback();
    awaiting(&mut c);
    c.world.approvals = Some(vec![decided(crate::api::ApprovalChoice::Reject, t(5))]);
    c.now = t(6);
    let d = c.decide();
    assert_eq!(d.status.phase, Some(FailoverPhase::Rejected));
    assert!(d.effects.is_empty());
    assert_eq!(
        d.plan.as_ref().map(|m| (m.phase, m.active_region.clone())),
        Some((FailoverPhase::Rejected, None))
    );
    let message = c.status().approval.clone().unwrap_or_default().message;
    assert_eq!(
        message.as_deref(),
        Some("rejected by alice: primary is healthy again")
    );

    let mut c = failback();
    awaiting(&mut c);
    c.now = t(3600);
    let d = c.decide();
    assert_eq!(d.status.phase, Some(FailoverPhase::Rejected));
    assert!(d.effects.is_empty());
    let message = c.status().approval.clone().unwrap_or_default().message;
    assert!(
        message.is_some_and(|m| m.starts_with("not approved within 1h")),
        "{:?}",
        c.status().approval
    );
}

#[test]
fn decisions_for_another_failover_earlier_ones_or_edited_ones_do_not_count() {
    use crate::api::ApprovalChoice::Approve;
    let mut other_uid = decided(Approve, t(10));
    other_uid.failover_uid = Some("uid-older".into());
    let before_creation = decided(Approve, t(0) - Duration::from_secs(5));
    let mut edited = decided(Approve, t(10));
    edited.generation = 2;
    edited.name = "edited".into();
    let mut other_name = decided(Approve, t(10));
    other_name.failover_ref = "other".into();
    let mut c = failback();
    awaiting(&mut c);
    c.world.approvals = Some(vec![other_uid, before_creation, edited, other_name]);
    c.now = t(20);
    let d = c.decide();
    assert_eq!(d.status.phase, Some(FailoverPhase::AwaitingApproval));
    assert!(d.effects.is_empty());
    let message = c.status().approval.clone().unwrap_or_default().message;
    assert_eq!(
        message.as_deref(),
        Some("ignored FailoverApproval edited: edited after creation")
    );
}

#[test]
fn which_failovers_need_approval_follows_the_plan() {
    // A failover to a region that was not active before the last one: none.
    let mut c = Case::new(FailoverMode::Planned);
    assert!(c.decide().status.approval.is_none());
    // A dry run of a failback: none, it changes nothing.
    let mut c = failback();
    c.fo.spec.mode = FailoverMode::DryRun;
    assert!(c.decide().status.approval.is_none());
    // Failback approval switched off; Planned failovers switched on.
    let mut c = failback();
    c.plan.spec.approval = Some(crate::api::ApprovalPolicy {
        failback: Some(false),
        planned: Some(true),
        ..Default::default()
    });
    let reason = c.decide().status.approval.map(|a| a.reason);
    assert_eq!(
        reason.as_deref(),
        Some("the plan requires approval for Planned failovers")
    );
    // Automatic failovers, by their label.
    let mut c = Case::new(FailoverMode::Unplanned);
    c.plan.spec.approval = Some(crate::api::ApprovalPolicy {
        automatic: Some(true),
        ..Default::default()
    });
    c.fo.metadata.labels = Some(
        [(approval::TRIGGER_LABEL.to_string(), "automatic".to_string())]
            .into_iter()
            .collect(),
    );
    let reason = c.decide().status.approval.map(|a| a.reason);
    assert_eq!(
        reason.as_deref(),
        Some("the plan requires approval for automatic failovers")
    );
}

#[test]
fn an_approval_made_after_the_deadline_does_not_count() {
    let mut c = failback();
    awaiting(&mut c);
    // The operator was down across the deadline (t(3600)); an approval came at t(3700).
    c.now = t(3800);
    c.world.approvals = Some(vec![decided(crate::api::ApprovalChoice::Approve, t(3700))]);
    let d = c.decide();
    assert_eq!(d.status.phase, Some(FailoverPhase::Rejected));
    assert!(d.effects.is_empty());
    let message = c.status().approval.clone().unwrap_or_default().message;
    assert!(
        message.is_some_and(|m| m.contains("FailoverApproval back came after it")),
        "{:?}",
        c.status().approval
    );
}
