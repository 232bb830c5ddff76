//! Engine unit tests; compiled only under #[cfg(test)] (see `mod tests` in mod.rs).
use super::*;
use crate::api::{
    DisasterRecoveryPlanStatus, FailoverSpec, FailoverStatus, RecordTarget, StepTimeouts,
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
        assert_eq!(steps.len(), 8);
    }
    let names: Vec<&str> = Step::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(names[4], "PromoteDatabases");
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
    // Sample workloads: web (4/1), orders-writer (2/0, writer), cron (1, singleton).
    assert_eq!(
        fence_targets(&spec, "use1"),
        vec![
            ScaleTarget {
                workload: 1,
                region: "use1".into(),
                replicas: 0
            },
            ScaleTarget {
                workload: 2,
                region: "use1".into(),
                replicas: 0
            },
        ]
    );
    assert_eq!(
        unfence_targets(&spec, "use1")
            .iter()
            .map(|t| t.replicas)
            .collect::<Vec<_>>(),
        vec![2, 1]
    );
    assert_eq!(
        warmup_targets(&spec, "usw2")
            .iter()
            .map(|t| t.replicas)
            .collect::<Vec<_>>(),
        vec![4, 2, 1]
    );
    let standby = standby_targets(&spec, "use1");
    assert_eq!(
        standby.iter().map(|t| t.replicas).collect::<Vec<_>>(),
        vec![1, 0, 0],
        "singletons stay at 0 in standby"
    );
    assert!(standby.iter().all(|t| t.region == "use1"));
}

#[test]
fn dns_batches_point_every_record_at_the_target() {
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
    let batches = dns_batches(&spec, "usw2");
    assert_eq!(batches.len(), 1, "one batch per zone");
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
    let desired = &dns_batches(&spec, "usw2")[0].records[0];
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
        status: status.into(),
        has_source,
    }
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
fn promotion_gate_table() {
    use FailoverMode::*;
    let ten = Some(Duration::from_secs(10));
    let ok = |m, allow, max, lag| promotion_gate(m, allow, max, lag).is_ok();
    // Zero lag always passes.
    for mode in [Planned, Unplanned, DryRun] {
        assert!(ok(mode, false, None, Some(0.0)));
    }
    // Planned needs zero lag, whatever the flags.
    assert!(!ok(Planned, false, None, Some(1.0)));
    assert!(!ok(Planned, true, None, Some(1.0)));
    assert!(!ok(Planned, false, None, None));
    // Unplanned: data loss only with consent, within maxDataLoss when set.
    assert!(!ok(Unplanned, false, None, Some(5.0)));
    assert!(!ok(Unplanned, false, None, None));
    assert!(ok(Unplanned, true, None, Some(500.0)));
    assert!(ok(Unplanned, true, ten, Some(10.0)));
    assert!(!ok(Unplanned, true, ten, Some(10.5)));
    assert!(ok(Unplanned, true, None, None));
    assert!(!ok(Unplanned, true, ten, None));
    let why = promotion_gate(Unplanned, false, None, Some(5.0)).expect_err("gated");
    assert!(why.contains("allowDataLoss is false"), "{why}");
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
        Duration::from_millis(150)
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
    assert!(planned.contains("wait for zero replication lag"));
    assert!(planned.contains("PromoteReadReplica orders-usw2"));
    assert!(planned.contains("SwitchoverGlobalCluster catalog-global to catalog-usw2"));
    assert!(planned.contains("ChangeResourceRecordSets Z0SHOPEXAMPLE (3 record sets)"));
    assert!(planned.contains("Verify: scale Deployment shop/web in use1 to 1"));
    let unplanned = planned_actions(&spec, "use1", "usw2", FailoverMode::Unplanned).join("\n");
    assert!(unplanned.contains("FailoverGlobalCluster (AllowDataLoss)"));
    assert!(!unplanned.contains("zero replication lag"));
}

#[test]
fn active_region_falls_back_to_the_initial_role() {
    assert_eq!(active_region(&plan()).as_deref(), Some("use1"));
    assert_eq!(
        active_region(&valid_plan(Some("usw2"))).as_deref(),
        Some("usw2")
    );
}
