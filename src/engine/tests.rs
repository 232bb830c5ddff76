//! Engine unit tests; compiled only under #[cfg(test)] (see `mod tests` in mod.rs).
use super::*;
use crate::api::{AliasTarget, RoutingPolicy};
use crate::api::{
    DisasterRecoveryPlanStatus, FailoverSpec, FailoverStatus, RecordTarget, StepState, StepTimeouts,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

const SAMPLE: &str = include_str!("../../config/samples/plan.yaml");

fn plan() -> DisasterRecoveryPlan {
    serde_yaml::from_str(SAMPLE).expect("sample parses")
}

fn valid_plan(active: Option<&str>) -> DisasterRecoveryPlan {
    let mut p = plan();
    p.status = Some(DisasterRecoveryPlanStatus {
        active_region: active.map(str::to_string),
        conditions: vec![Condition {
            type_: "Valid".into(),
            status: "True".into(),
            reason: "Valid".into(),
            message: "plan is valid".into(),
            observed_generation: Some(1),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        }],
        ..Default::default()
    });
    p
}

fn fo(name: &str, target: &str, mode: FailoverMode, created: i64) -> Failover {
    let mut f = Failover::new(name, FailoverSpec::new("shop", target, mode));
    f.metadata.creation_timestamp = Some(Time(
        Timestamp::from_second(1_700_000_000 + created).expect("valid time"),
    ));
    f
}

fn with_phase(mut f: Failover, phase: FailoverPhase) -> Failover {
    f.status = Some(FailoverStatus {
        phase: Some(phase),
        ..Default::default()
    });
    f
}

#[test]
fn steps_by_mode() {
    assert_eq!(
        steps_for(FailoverMode::DryRun),
        vec![Step::Admission, Step::Preflight]
    );
    for mode in [FailoverMode::Planned, FailoverMode::Unplanned] {
        let steps = steps_for(mode);
        assert_eq!(steps.first(), Some(&Step::Admission));
        assert_eq!(steps.last(), Some(&Step::Complete));
        assert_eq!(steps.len(), 11);
    }
    let names: Vec<&str> = Step::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(names[5..8], ["PromoteDatabases", "Activate", "Reconfigure"]);
}

#[test]
fn admission_proceeds_from_the_active_region() {
    let p = valid_plan(None);
    let f = fo("a", "usw2", FailoverMode::Planned, 0);
    assert_eq!(
        admit(&p, &f, std::slice::from_ref(&f)),
        Admission::Proceed {
            source_region: "use1".into()
        }
    );
    let p = valid_plan(Some("usw2"));
    let f = fo("b", "use1", FailoverMode::Planned, 0);
    assert_eq!(
        admit(&p, &f, &[]),
        Admission::Proceed {
            source_region: "usw2".into()
        }
    );
}

#[test]
fn failback_is_refused_while_the_target_has_pending_fences() {
    let mut p = valid_plan(Some("usw2"));
    let fences = fence::fences_to_record(
        &p.spec,
        FailoverMode::Unplanned,
        "use1",
        Some(StepState::Skipped),
        &fence::Unfenced::Unknown,
        "lost-use1",
        &Time(Timestamp::UNIX_EPOCH),
    );
    if let Some(s) = p.status.as_mut() {
        s.pending_fences = fences;
    }
    for mode in [FailoverMode::Planned, FailoverMode::Unplanned] {
        match admit(&p, &fo("back", "use1", mode, 0), &[]) {
            Admission::Reject(why) => {
                assert!(why.contains("pending fences"), "{why}");
                assert!(why.contains("Deployment shop/cron in use1"), "{why}");
                assert!(why.contains("RDS instance orders-use1 in use1"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }
    // Fences done: failback proceeds.
    if let Some(s) = p.status.as_mut() {
        s.pending_fences.clear();
    }
    assert_eq!(
        admit(&p, &fo("back", "use1", FailoverMode::Planned, 0), &[]),
        Admission::Proceed {
            source_region: "usw2".into()
        }
    );
}

#[test]
fn admission_already_active_is_a_no_op() {
    let p = valid_plan(Some("use1"));
    assert_eq!(
        admit(&p, &fo("a", "use1", FailoverMode::Planned, 0), &[]),
        Admission::AlreadyActive
    );
}

#[test]
fn admission_rejects_unknown_region_and_invalid_plans() {
    let p = valid_plan(None);
    match admit(&p, &fo("a", "euw1", FailoverMode::Planned, 0), &[]) {
        Admission::Reject(why) => assert!(why.contains("spec.targetRegion"), "{why}"),
        other => panic!("{other:?}"),
    }
    let mut broken = valid_plan(None);
    broken.spec.workloads[0].active_replicas = -1;
    match admit(&broken, &fo("a", "usw2", FailoverMode::Planned, 0), &[]) {
        Admission::Reject(why) => assert!(why.contains("activeReplicas"), "{why}"),
        other => panic!("{other:?}"),
    }
    let mut flagged = valid_plan(None);
    if let Some(s) = flagged.status.as_mut() {
        s.conditions[0].status = "False".into();
        s.conditions[0].message = "Secret missing".into();
    }
    match admit(&flagged, &fo("a", "usw2", FailoverMode::Planned, 0), &[]) {
        Admission::Reject(why) => assert!(why.contains("Secret missing"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn admission_allows_one_failover_per_plan() {
    let p = valid_plan(None);
    let me = fo("second", "usw2", FailoverMode::Planned, 10);
    // A running one blocks, whenever it was created.
    let running = with_phase(
        fo("first", "usw2", FailoverMode::Planned, 20),
        FailoverPhase::Running,
    );
    match admit(&p, &me, &[running, me.clone()]) {
        Admission::Reject(why) => assert!(why.contains("first is already running"), "{why}"),
        other => panic!("{other:?}"),
    }
    // An older pending one blocks; a newer pending one does not.
    let older = fo("older", "usw2", FailoverMode::Planned, 5);
    assert!(matches!(admit(&p, &me, &[older]), Admission::Reject(_)));
    let newer = fo("newer", "usw2", FailoverMode::Planned, 15);
    assert!(matches!(
        admit(&p, &me, &[newer]),
        Admission::Proceed { .. }
    ));
    // Finished ones and other plans' failovers do not block.
    let done = with_phase(
        fo("done", "usw2", FailoverMode::Planned, 1),
        FailoverPhase::Succeeded,
    );
    let mut other_plan = with_phase(
        fo("other", "usw2", FailoverMode::Planned, 1),
        FailoverPhase::Running,
    );
    other_plan.spec.plan_ref = "billing".into();
    assert!(matches!(
        admit(&p, &me, &[done, other_plan]),
        Admission::Proceed { .. }
    ));
}

#[test]
fn admission_breaks_creation_ties_by_name() {
    let p = valid_plan(None);
    let a = fo("a", "usw2", FailoverMode::Planned, 0);
    let b = fo("b", "usw2", FailoverMode::Planned, 0);
    assert!(matches!(
        admit(&p, &a, std::slice::from_ref(&b)),
        Admission::Proceed { .. }
    ));
    assert!(matches!(admit(&p, &b, &[a]), Admission::Reject(_)));
}

#[test]
fn scale_targets_by_role() {
    let spec = plan().spec;
    // Sample workloads: web (4/1), orders-writer (2/0, writer), cron (1, singleton),
    // nightly-report (CronJob).
    let fenced = |workload| ScaleTarget {
        workload,
        region: "use1".into(),
        replicas: 0,
        hold: false,
    };
    assert_eq!(
        fence_targets(&spec, "use1"),
        vec![fenced(1), fenced(2), fenced(3)]
    );
    assert_eq!(
        unfence_targets(&spec, "use1")
            .iter()
            .map(|t| t.replicas)
            .collect::<Vec<_>>(),
        vec![2, 1, 1]
    );
    // The CronJob is kept suspended during promotion and resumed after it (Activate);
    // Verify wants all.
    let replicas = |targets: Vec<ScaleTarget>| -> Vec<(usize, i32)> {
        targets.iter().map(|t| (t.workload, t.replicas)).collect()
    };
    assert_eq!(
        replicas(warmup_targets(&spec, "usw2")),
        vec![(0, 4), (1, 2), (2, 1), (3, 0)]
    );
    assert_eq!(replicas(resume_targets(&spec, "usw2")), vec![(3, 1)]);
    assert_eq!(
        replicas(active_targets(&spec, "usw2")),
        vec![(0, 4), (1, 2), (2, 1), (3, 1)]
    );
    let standby = standby_targets(&spec, "use1");
    assert_eq!(
        standby.iter().map(|t| t.replicas).collect::<Vec<_>>(),
        vec![1, 0, 0, 0],
        "singletons and CronJobs stay at 0 in standby"
    );
    assert!(standby.iter().all(|t| t.region == "use1"));
    // A writer's standby count does not apply: the old region's database may still accept
    // writes after a failover, so writers stay at 0 there.
    let mut spec = spec;
    spec.workloads[1].standby_replicas = 1;
    assert_eq!(standby_targets(&spec, "use1")[1].replicas, 0);
}

#[test]
fn a_writer_whose_config_switches_is_started_after_it_not_warmed_up() {
    let mut spec = plan().spec;
    // orders-writer (index 1) reads a config entry that switches with the region.
    spec.config[0].restart.push("orders-writer".into());
    let workloads =
        |targets: Vec<ScaleTarget>| -> Vec<usize> { targets.iter().map(|t| t.workload).collect() };
    // (3 is the CronJob, kept suspended.)
    assert_eq!(workloads(warmup_targets(&spec, "usw2")), vec![0, 2, 3]);
    assert_eq!(workloads(configured_targets(&spec, "usw2")), vec![1]);
    // web is no writer: warmed up, then restarted once the config is written.
    assert!(!waits_for_config(&spec, &spec.workloads[0]));
}

#[test]
fn dns_records_point_every_record_at_the_target() {
    let mut spec = plan().spec;
    spec.dns[0].records.push(crate::api::RecordSpec {
        name: "w.shop.example.".into(),
        record_type: "A".into(),
        routing: RoutingPolicy::Weighted,
        ttl: None,
        targets: vec![
            RecordTarget {
                region: "use1".into(),
                values: Some(vec!["1.1.1.1".into()]),
                alias: None,
                set_identifier: Some("east".into()),
                health_check_id: Some("hc-east".into()),
            },
            RecordTarget {
                region: "usw2".into(),
                values: None,
                alias: Some(AliasTarget {
                    hosted_zone_id: "ZLB".into(),
                    dns_name: "lb-west.example.".into(),
                    evaluate_target_health: true,
                }),
                set_identifier: None,
                health_check_id: None,
            },
        ],
    });
    let batches = dns_records(&spec, "usw2");
    assert_eq!(batches.len(), 1, "one entry per zone");
    let records = &batches[0].records;
    // failover: 2 sets; simple: 1; weighted: 2.
    assert_eq!(records.len(), 5);
    let failover: Vec<_> = records.iter().filter(|r| r.failover.is_some()).collect();
    assert_eq!(failover.len(), 2);
    let primary = failover
        .iter()
        .find(|r| r.failover.as_deref() == Some("PRIMARY"))
        .expect("primary");
    assert_eq!(primary.values, vec!["10.2.0.10".to_string()]);
    assert_eq!(primary.set_identifier.as_deref(), Some("usw2"));
    let simple = records
        .iter()
        .find(|r| r.record_type == "CNAME")
        .expect("simple");
    assert_eq!(simple.values, vec!["www-usw2.shop.example.".to_string()]);
    assert_eq!(simple.set_identifier, None);
    let weighted: Vec<_> = records.iter().filter(|r| r.weight.is_some()).collect();
    let west = weighted
        .iter()
        .find(|r| r.weight == Some(100))
        .expect("100");
    assert!(west.alias.is_some());
    assert_eq!(west.ttl, None, "alias records carry no TTL");
    let east = weighted.iter().find(|r| r.weight == Some(0)).expect("0");
    assert_eq!(east.set_identifier.as_deref(), Some("east"));
    assert_eq!(east.ttl, Some(60), "default TTL");
    assert_eq!(east.health_check_id.as_deref(), Some("hc-east"));
}

#[test]
fn records_present_ignores_order_case_and_trailing_dots() {
    let spec = plan().spec;
    let desired = &dns_records(&spec, "usw2")[0].records[0];
    let mut current = desired.clone();
    current.name = current.name.trim_end_matches('.').to_uppercase();
    assert!(record_present(desired, &[current.clone()]));
    let flipped = match desired.failover.as_deref() {
        Some("PRIMARY") => "SECONDARY",
        _ => "PRIMARY",
    };
    current.failover = Some(flipped.into());
    assert!(!record_present(desired, &[current.clone()]));
    current.failover = desired.failover.clone();
    current.values = vec!["10.9.9.9".into()];
    assert!(!record_present(desired, &[current]));
    assert!(!record_present(desired, &[]));
}

fn rds(status: &str, has_source: bool) -> RdsObservation {
    RdsObservation {
        source: has_source.then(|| "arn:aws:rds:us-east-1:123456789012:db:orders".into()),
        status: status.into(),
        ..Default::default()
    }
}

#[test]
fn rds_source_references() {
    let arn = "arn:aws:rds:us-east-1:123456789012:db:orders-use1";
    assert!(source_is(arn, "us-east-1", "orders-use1"));
    assert!(!source_is(arn, "eu-west-1", "orders-use1"));
    assert!(!source_is(arn, "us-east-1", "orders"));
    assert!(source_is("orders-use1", "us-east-1", "orders-use1"));
    assert!(!source_is(
        "arn:aws:rds:us-east-1:1:cluster:x",
        "us-east-1",
        "x"
    ));
}

#[test]
fn rds_step_table() {
    use Requested::*;
    let cases = [
        (rds("available", true), No, DbStep::Act),
        (rds("available", true), Maybe, DbStep::Act),
        (
            rds("available", true),
            Yes,
            DbStep::Wait("promotion requested".into()),
        ),
        (
            rds("modifying", true),
            No,
            DbStep::Wait("instance is modifying".into()),
        ),
        (
            rds("modifying", false),
            Yes,
            DbStep::Wait("instance is modifying".into()),
        ),
        (
            rds("backing-up", false),
            Yes,
            DbStep::Wait("instance is backing-up".into()),
        ),
        (rds("available", false), Yes, DbStep::Done),
        (rds("available", false), No, DbStep::Done),
        (
            rds("failed", true),
            Yes,
            DbStep::Fail("target instance is failed".into()),
        ),
        (
            rds("storage-full", false),
            No,
            DbStep::Fail("target instance is storage-full".into()),
        ),
    ];
    for (obs, requested, want) in cases {
        assert_eq!(
            rds_step(Some(&obs), requested),
            want,
            "{obs:?} {requested:?}"
        );
    }
    assert!(matches!(rds_step(None, No), DbStep::Fail(_)));
}

fn aurora(status: &str, writer: &str) -> AuroraObservation {
    AuroraObservation {
        status: status.into(),
        writer_arn: Some(writer.into()),
        member_arns: vec!["east".into(), "west".into()],
    }
}

#[test]
fn aurora_step_table() {
    use Requested::*;
    let cases = [
        (aurora("available", "east"), No, DbStep::Act),
        (aurora("available", "east"), Maybe, DbStep::Act),
        (
            aurora("available", "east"),
            Yes,
            DbStep::Wait("writer change requested".into()),
        ),
        (
            aurora("switching-over", "east"),
            Yes,
            DbStep::Wait("global cluster is switching-over".into()),
        ),
        (
            aurora("failing-over", "west"),
            Yes,
            DbStep::Wait("global cluster is failing-over".into()),
        ),
        (aurora("available", "west"), Yes, DbStep::Done),
        (aurora("available", "west"), No, DbStep::Done),
    ];
    for (obs, requested, want) in cases {
        assert_eq!(
            aurora_step(Some(&obs), "west", requested),
            want,
            "{obs:?} {requested:?}"
        );
    }
    assert!(matches!(
        aurora_step(Some(&aurora("available", "east")), "north", No),
        DbStep::Fail(_)
    ));
    assert!(matches!(aurora_step(None, "west", No), DbStep::Fail(_)));
}

#[test]
fn aurora_unplanned_needs_consent() {
    assert!(aurora_failover_gate(FailoverMode::Unplanned, false).is_err());
    assert!(aurora_failover_gate(FailoverMode::Unplanned, true).is_ok());
    assert!(aurora_failover_gate(FailoverMode::Planned, false).is_ok());
}

#[test]
fn polling_is_adaptive_and_bounded() {
    assert_eq!(poll_delay(Duration::ZERO), Duration::from_millis(50));
    assert_eq!(
        poll_delay(Duration::from_secs(3)),
        Duration::from_millis(100)
    );
    assert_eq!(poll_delay(Duration::from_secs(600)), Duration::from_secs(2));
    // A 5-minute promotion costs fewer than one describe per second.
    let mut waited = Duration::ZERO;
    let mut calls = 0;
    while waited < Duration::from_secs(300) {
        waited += poll_delay(waited);
        calls += 1;
    }
    assert!(calls < 300, "{calls} calls");
}

/// Polls of a wait that ends at `ready`: how many, and how late the first one after it.
fn polls_until(ready: Duration, expected: Option<Duration>) -> (u32, Duration) {
    let (mut waited, mut calls) = (Duration::ZERO, 0);
    loop {
        waited += poll_delay_expecting(waited, expected);
        calls += 1;
        if waited >= ready {
            return (calls, waited - ready);
        }
    }
}

#[test]
fn a_wait_as_long_as_before_costs_a_few_polls_and_is_noticed_within_two_seconds() {
    let three_minutes = Duration::from_secs(180);
    let (unlearned, _) = polls_until(three_minutes + Duration::from_secs(5), None);
    let (calls, slack) = polls_until(three_minutes + Duration::from_secs(5), Some(three_minutes));
    // At most one describe per 10 s on average, against 1 per ~2 s without learning.
    assert!(calls <= 185 / 10, "{calls} polls (unlearned: {unlearned})");
    assert!(unlearned > 3 * calls, "{unlearned} vs {calls}");
    assert!(slack <= Duration::from_secs(2), "{slack:?}");
    // The bed's 3 s promotion, learned: a handful of polls instead of dozens, and one
    // learned a little late (it includes how late its end was noticed) is still seen soon.
    let (calls, slack) = polls_until(Duration::from_secs(3), Some(Duration::from_secs(3)));
    assert!(calls <= 5, "{calls}");
    assert!(slack <= Duration::from_millis(100), "{slack:?}");
    // A 40 s wait learned: one describe per 8 s.
    let forty = Duration::from_secs(40);
    let (calls, slack) = polls_until(forty + Duration::from_millis(500), Some(forty));
    assert!(calls <= 5, "{calls}");
    assert!(slack <= Duration::from_secs(2), "{slack:?}");
    let late = Duration::from_millis(3150);
    let (calls, slack) = polls_until(Duration::from_secs(3), Some(late));
    assert!(calls <= 6, "{calls}");
    assert!(slack <= Duration::from_millis(100), "{slack:?}");
    // Without an expectation, or past it, polling is as before.
    for waited in [
        Duration::ZERO,
        Duration::from_secs(3),
        Duration::from_secs(600),
    ] {
        assert_eq!(poll_delay_expecting(waited, None), poll_delay(waited));
        assert_eq!(
            poll_delay_expecting(waited + Duration::from_secs(1), Some(waited)),
            poll_delay(waited + Duration::from_secs(1))
        );
    }
    // A long expectation still looks every 15 s: a refused promotion is seen soon.
    assert_eq!(
        poll_delay_expecting(Duration::ZERO, Some(Duration::from_secs(3600))),
        Duration::from_secs(15)
    );
}

/// Promotions an older version learned from the step's start (lag gate included) are not
/// expected of a wait timed from the request; the next learned one replaces them.
#[test]
fn promotion_durations_learned_from_the_step_start_are_not_used_and_are_replaced() {
    let mut learned = vec![crate::api::StepDurations {
        step: Step::PromoteDatabases.name().into(),
        mode: "Planned".into(),
        recent_seconds: vec![40.0, 45.0],
        measured_from: None,
    }];
    let expected = |l: &[crate::api::StepDurations]| {
        expected_duration(l, Step::PromoteDatabases, FailoverMode::Planned)
    };
    assert_eq!(expected(&learned), None);
    learn_duration(
        &mut learned,
        Step::PromoteDatabases,
        FailoverMode::Planned,
        30.0,
    );
    assert_eq!(learned.len(), 1);
    assert_eq!(learned[0].recent_seconds, [30.0]);
    assert_eq!(
        learned[0].measured_from.as_deref(),
        Some("PromotionRequest")
    );
    assert_eq!(expected(&learned), Some(Duration::from_secs(30)));
    // SwitchDns is measured from its start, as before: its old durations stand.
    learn_duration(&mut learned, Step::SwitchDns, FailoverMode::Planned, 2.0);
    assert_eq!(learned[1].measured_from, None);
    assert_eq!(
        expected_duration(&learned, Step::SwitchDns, FailoverMode::Planned),
        Some(Duration::from_secs(2))
    );
}

#[test]
fn learned_durations_keep_the_last_five_per_step_and_mode_and_expect_the_quickest() {
    let mut learned = Vec::new();
    for s in [40.0, 30.0, 50.0, 60.0, 70.0, 80.0] {
        learn_duration(
            &mut learned,
            Step::PromoteDatabases,
            FailoverMode::Planned,
            s,
        );
    }
    // Nonsense is not learned.
    for s in [f64::NAN, -1.0, 0.0, 1e9] {
        learn_duration(
            &mut learned,
            Step::PromoteDatabases,
            FailoverMode::Planned,
            s,
        );
    }
    learn_duration(&mut learned, Step::SwitchDns, FailoverMode::Planned, 20.0);
    assert_eq!(learned.len(), 2);
    assert_eq!(learned[0].recent_seconds, [30.0, 50.0, 60.0, 70.0, 80.0]);
    assert_eq!(
        expected_duration(&learned, Step::PromoteDatabases, FailoverMode::Planned),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        expected_duration(&learned, Step::PromoteDatabases, FailoverMode::Unplanned),
        None
    );
    // Status edited by hand to hold garbage expects nothing from it.
    learned[1].recent_seconds = vec![f64::INFINITY, -3.0];
    assert_eq!(
        expected_duration(&learned, Step::SwitchDns, FailoverMode::Planned),
        None
    );
}

#[test]
fn retry_backoff_grows_with_jitter_and_a_cap() {
    assert_eq!(retry_delay(1, 0.0), Duration::from_millis(125));
    assert_eq!(retry_delay(1, 1.0), Duration::from_millis(250));
    assert!(retry_delay(3, 0.5) > retry_delay(2, 0.5));
    assert_eq!(retry_delay(30, 1.0), Duration::from_secs(5));
    assert!(retry_delay(30, 0.0) >= Duration::from_millis(2500));
}

#[test]
fn step_timeouts_default_and_override() {
    let mut spec = plan().spec;
    assert_eq!(
        step_timeout(&spec, Step::PromoteDatabases, FailoverMode::Planned),
        Duration::from_secs(900)
    );
    spec.timeouts = Some(StepTimeouts {
        fence: Some("45s".into()),
        dns: Some("not a duration".into()),
        ..Default::default()
    });
    assert_eq!(
        step_timeout(&spec, Step::Fence, FailoverMode::Planned),
        Duration::from_secs(45)
    );
    assert_eq!(
        step_timeout(&spec, Step::Fence, FailoverMode::Unplanned),
        Duration::from_secs(10),
        "unplanned does not wait on the old region"
    );
    assert_eq!(
        step_timeout(&spec, Step::SwitchDns, FailoverMode::Planned),
        Duration::from_secs(300),
        "unparseable values fall back to the default"
    );
}

#[test]
fn planned_actions_describe_every_effect() {
    let spec = plan().spec;
    let planned = planned_actions(&spec, "use1", "usw2", FailoverMode::Planned).join("\n");
    assert!(planned.contains("Fence: scale Deployment shop/cron in use1 to 0"));
    assert!(planned.contains("wait until every standby has what was written before the fence"));
    assert!(planned.contains("PromoteReadReplica orders-usw2"));
    assert!(planned.contains("SwitchoverGlobalCluster catalog-global to catalog-usw2"));
    assert!(planned.contains("SwitchDns: point 3 record sets in Z0SHOPEXAMPLE at usw2"));
    assert!(planned.contains("Verify: scale Deployment shop/web in use1 to 1"));
    let unplanned = planned_actions(&spec, "use1", "usw2", FailoverMode::Unplanned).join("\n");
    assert!(unplanned.contains("FailoverGlobalCluster (AllowDataLoss)"));
    assert!(!unplanned.contains("every standby has what was written"));
}

#[test]
fn active_region_falls_back_to_the_initial_role() {
    assert_eq!(active_region(&plan()).as_deref(), Some("use1"));
    assert_eq!(
        active_region(&valid_plan(Some("usw2"))).as_deref(),
        Some("usw2")
    );
}

fn three_region_failover_record() -> (
    crate::api::DisasterRecoveryPlanSpec,
    crate::api::HostedZoneSpec,
) {
    let mut spec = plan().spec;
    let mut third = spec.regions[1].clone();
    third.name = "euw1".into();
    third.aws_region = "eu-west-1".into();
    spec.regions.push(third);
    let target = |region: &str, ip: &str| RecordTarget {
        region: region.into(),
        values: Some(vec![ip.into()]),
        alias: None,
        set_identifier: None,
        health_check_id: None,
    };
    let zone = crate::api::HostedZoneSpec {
        hosted_zone_id: "Z1".into(),
        records: vec![crate::api::RecordSpec {
            name: "api.shop.example.".into(),
            record_type: "A".into(),
            routing: RoutingPolicy::Failover,
            ttl: Some(60),
            targets: vec![
                target("use1", "10.1.0.1"),
                target("usw2", "10.2.0.1"),
                target("euw1", "10.3.0.1"),
            ],
        }],
    };
    spec.dns = vec![zone.clone()];
    (spec, zone)
}

fn roles(records: &[RecordSet]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            (
                r.set_identifier.clone().unwrap_or_default(),
                r.failover.clone().unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn failover_records_cover_exactly_two_regions_in_failover_order() {
    let (mut spec, _) = three_region_failover_record();
    let records = &dns_records(&spec, "usw2")[0].records;
    assert_eq!(
        roles(records),
        vec![
            ("euw1".into(), "SECONDARY".into()),
            ("usw2".into(), "PRIMARY".into())
        ],
        "the next region after usw2 in region order is euw1"
    );
    let records = &dns_records(&spec, "euw1")[0].records;
    assert_eq!(
        roles(records),
        vec![
            ("euw1".into(), "PRIMARY".into()),
            ("use1".into(), "SECONDARY".into())
        ],
        "the order wraps"
    );
    spec.failover_order = Some(vec!["use1".into(), "euw1".into(), "usw2".into()]);
    let records = &dns_records(&spec, "use1")[0].records;
    assert_eq!(
        roles(records),
        vec![
            ("euw1".into(), "SECONDARY".into()),
            ("use1".into(), "PRIMARY".into())
        ]
    );
}

#[test]
fn zone_changes_delete_the_third_region_exactly_and_skip_what_is_present() {
    let (spec, zone) = three_region_failover_record();
    // The zone as it stands with use1 active: use1 PRIMARY, usw2 SECONDARY.
    let current = dns_records(&spec, "use1")[0].records.clone();
    let changes = dns::zone_changes(&spec, &zone, "euw1", &current);
    let deletes: Vec<_> = changes
        .iter()
        .filter(|c| c.action == dns::ChangeAction::Delete)
        .collect();
    assert_eq!(deletes.len(), 1, "{changes:?}");
    assert_eq!(
        deletes[0].record, current[1],
        "the exact current usw2 record"
    );
    let upserts: Vec<_> = changes
        .iter()
        .filter(|c| c.action == dns::ChangeAction::Upsert)
        .map(|c| c.record.clone())
        .collect();
    assert_eq!(
        roles(&upserts),
        vec![
            ("euw1".into(), "PRIMARY".into()),
            ("use1".into(), "SECONDARY".into())
        ]
    );
    let done = dns_records(&spec, "euw1")[0].records.clone();
    assert!(dns::zone_changes(&spec, &zone, "euw1", &done).is_empty());
}

#[test]
fn batches_respect_route53_limits_and_keep_a_name_together() {
    let record = |i: usize| RecordSet {
        name: format!("r{i}.shop.example."),
        record_type: "A".into(),
        set_identifier: None,
        failover: None,
        weight: None,
        ttl: Some(60),
        values: vec![format!("10.0.{}.{}", i / 256, i % 256)],
        alias: None,
        health_check_id: None,
    };
    let upserts: Vec<_> = (0..1200)
        .map(|i| dns::RecordChange {
            action: dns::ChangeAction::Upsert,
            record: record(i),
        })
        .collect();
    let batches = dns::pack(upserts).expect("packs");
    // An UPSERT of one value counts as 2 records: 500 per batch.
    assert_eq!(
        batches.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![500, 500, 200]
    );
    // One name's DELETE and UPSERTs never straddle batches, and deletes come first.
    let (spec, zone) = three_region_failover_record();
    let current = dns_records(&spec, "use1")[0].records.clone();
    let mut changes = dns::zone_changes(&spec, &zone, "euw1", &current);
    changes.extend((0..499).map(|i| dns::RecordChange {
        action: dns::ChangeAction::Upsert,
        record: record(i),
    }));
    let batches = dns::pack(changes).expect("packs");
    let holding: Vec<_> = batches
        .iter()
        .filter(|b| b.iter().any(|c| c.record.name == "api.shop.example."))
        .collect();
    assert_eq!(holding.len(), 1);
    assert_eq!(holding[0][0].action, dns::ChangeAction::Delete);
    // A single name too large for any batch is an error, not a rejected call.
    let mut huge = record(0);
    huge.values = (0..600)
        .map(|i| format!("10.1.{}.{}", i / 256, i % 256))
        .collect();
    let err = dns::pack(vec![dns::RecordChange {
        action: dns::ChangeAction::Upsert,
        record: huge,
    }])
    .expect_err("too large");
    assert!(err.contains("exceed"), "{err}");
}

#[test]
fn preflight_finds_foreign_set_identifiers_and_second_primaries() {
    let (spec, zone) = three_region_failover_record();
    let mut current = dns_records(&spec, "use1")[0].records.clone();
    assert!(dns::zone_conflicts(&zone, &current).is_empty());
    let mut foreign = current[0].clone();
    foreign.set_identifier = Some("legacy".into());
    current.push(foreign);
    let conflicts = dns::zone_conflicts(&zone, &current);
    assert!(
        conflicts.iter().any(|c| c.contains("\"legacy\"")),
        "{conflicts:?}"
    );
    assert!(
        conflicts.iter().any(|c| c.contains("2 PRIMARY")),
        "{conflicts:?}"
    );
}
