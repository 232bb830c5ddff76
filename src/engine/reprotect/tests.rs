use super::*;
use k8s_openapi::jiff::Timestamp;

fn standby() -> Standby {
    Standby {
        database: "orders".into(),
        region: "use1".into(),
        aws_region: "us-east-1".into(),
        instance: "orders-use1".into(),
        primary_aws_region: "us-west-2".into(),
        primary: "orders-usw2".into(),
    }
}

fn now() -> Time {
    Time(Timestamp::from_second(1_800_000_000).expect("valid"))
}

fn instance(status: &str, source: Option<&str>) -> Seen {
    Seen::Instance {
        instance: Some(RdsObservation {
            status: status.into(),
            source: source.map(str::to_string),
            ..Default::default()
        }),
        lag_known: true,
    }
}

const PRIMARY_ARN: &str = "arn:aws:rds:us-west-2:123456789012:db:orders-usw2";

fn decide(record: Option<&Reprotection>, seen: &Seen, old: OldInstanceAction) -> Next {
    next(&standby(), record, seen, true, old, None, &now())
}

#[test]
fn a_replica_of_the_primary_with_known_lag_is_protected_and_nothing_is_sent() {
    let n = decide(
        None,
        &instance("available", Some(PRIMARY_ARN)),
        OldInstanceAction::Rename,
    );
    assert_eq!((n.protection, n.record, n.call), ("Protected", None, None));
}

#[test]
fn manual_reports_the_old_primary_unprotected_and_sends_nothing() {
    let n = next(
        &standby(),
        None,
        &instance("available", None),
        false,
        OldInstanceAction::Rename,
        None,
        &now(),
    );
    assert_eq!(n.protection, "Unprotected");
    assert!(n.call.is_none() && n.record.is_none());
    assert!(
        n.message
            .is_some_and(|m| m.contains("spec.reprotection.rds is Manual"))
    );
}

#[test]
fn recreate_by_rename_records_each_call_before_it_and_ends_protected() {
    let old = OldInstanceAction::Rename;
    // The old primary, standalone: renamed aside first.
    let n = decide(None, &instance("available", None), old);
    let to = "orders-use1-old-20270115t080000".to_string();
    assert_eq!(n.call, Some(Call::Rename { to: to.clone() }));
    let record = n.record.expect("recorded before the call");
    assert_eq!(record.state, ReprotectionState::Renaming);
    assert_eq!(record.renamed_to.as_deref(), Some(to.as_str()));
    assert!(!record.requested);
    // The answer was lost and the instance still shows: sent again (renaming twice to
    // the same name is refused if the first took effect, which the caller takes as done).
    let n = decide(Some(&record), &instance("available", None), old);
    assert_eq!(n.call, Some(Call::Rename { to }));
    // Answered: never sent twice while AWS still shows the old name.
    let answered = Reprotection {
        requested: true,
        ..record.clone()
    };
    let n = decide(Some(&answered), &instance("available", None), old);
    assert!(n.call.is_none());
    // The identifier is free: the replica is created there, recorded first.
    let gone = Seen::Instance {
        instance: None,
        lag_known: false,
    };
    let n = decide(Some(&answered), &gone, old);
    assert_eq!(n.call, Some(Call::CreateReplica));
    let creating = n.record.expect("record");
    assert_eq!(
        (creating.state, creating.requested),
        (ReprotectionState::Creating, false)
    );
    // Created, not yet available; then available; then its lag is known.
    let requested = Reprotection {
        requested: true,
        ..creating
    };
    let n = decide(
        Some(&requested),
        &instance("creating", Some(PRIMARY_ARN)),
        old,
    );
    assert_eq!((n.protection, n.call.is_none()), ("Reprotecting", true));
    let n = decide(
        Some(&requested),
        &instance("available", Some(PRIMARY_ARN)),
        old,
    );
    let replicating = n.record.expect("record");
    assert_eq!(replicating.state, ReprotectionState::Replicating);
    let no_lag = Seen::Instance {
        instance: Some(RdsObservation {
            status: "available".into(),
            source: Some(PRIMARY_ARN.into()),
            ..Default::default()
        }),
        lag_known: false,
    };
    assert_eq!(
        decide(Some(&replicating), &no_lag, old).protection,
        "Reprotecting"
    );
    let n = decide(
        Some(&replicating),
        &instance("available", Some(PRIMARY_ARN)),
        old,
    );
    assert_eq!((n.protection, n.record), ("Protected", None));
}

#[test]
fn recreate_by_delete_keeps_a_final_snapshot_and_deletes_a_stopped_fenced_instance() {
    let n = decide(None, &instance("stopped", None), OldInstanceAction::Delete);
    assert_eq!(
        n.call,
        Some(Call::Delete {
            final_snapshot: Some("orders-use1-final-20270115t080000".into())
        })
    );
    // Rename cannot move a stopped instance: said, nothing sent.
    let n = decide(None, &instance("stopped", None), OldInstanceAction::Rename);
    assert_eq!((n.protection, n.call), ("Unprotected", None));
    // While it is deleting: wait.
    let record = decide(
        None,
        &instance("available", None),
        OldInstanceAction::Delete,
    )
    .record
    .expect("record");
    let n = decide(
        Some(&record),
        &instance("deleting", None),
        OldInstanceAction::Delete,
    );
    assert!(n.call.is_none());
}

#[test]
fn nothing_is_sent_while_blocked_or_when_the_region_does_not_answer() {
    let n = next(
        &standby(),
        None,
        &instance("available", None),
        true,
        OldInstanceAction::Rename,
        Some("failover back is running"),
        &now(),
    );
    assert_eq!((n.protection, n.call), ("Unprotected", None));
    let record = decide(
        None,
        &instance("available", None),
        OldInstanceAction::Rename,
    )
    .record
    .expect("record");
    let n = decide(
        Some(&record),
        &Seen::Unknown("no answer".into()),
        OldInstanceAction::Rename,
    );
    assert_eq!((n.protection, n.call), ("Reprotecting", None));
    assert_eq!(n.record.map(|r| r.state), Some(ReprotectionState::Renaming));
}

#[test]
fn a_replica_of_another_source_where_drover_creates_one_is_reported_not_overwritten() {
    let record = decide(
        None,
        &Seen::Instance {
            instance: None,
            lag_known: false,
        },
        OldInstanceAction::Rename,
    )
    .record
    .expect("record");
    let n = decide(
        Some(&record),
        &instance(
            "available",
            Some("arn:aws:rds:eu-west-1:123456789012:db:orders-euw1"),
        ),
        OldInstanceAction::Rename,
    );
    assert!(n.call.is_none());
    assert!(
        n.message
            .is_some_and(|m| m.contains("not the replica Drover asked for"))
    );
}

#[test]
fn an_aurora_standby_is_protected_only_as_a_secondary_of_a_writer_in_the_active_region() {
    use crate::engine::AuroraObservation;
    let arn = |region: &str, id: &str| format!("arn:aws:rds:{region}:1:cluster:{id}");
    let after_switchover = AuroraObservation {
        status: "available".into(),
        writer_arn: Some(arn("us-west-2", "catalog-usw2")),
        member_arns: vec![
            arn("us-west-2", "catalog-usw2"),
            arn("us-east-1", "catalog-use1"),
        ],
    };
    let protection = |obs: &AuroraObservation, lag| {
        aurora_protection(
            Some(obs),
            "catalog",
            "catalog-use1",
            "us-east-1",
            "us-west-2",
            lag,
        )
        .0
    };
    assert_eq!(protection(&after_switchover, true), "Protected");
    assert_eq!(protection(&after_switchover, false), "Reprotecting");
    // After an unplanned failover, until AWS adds the old primary back.
    let detached = AuroraObservation {
        member_arns: vec![arn("us-west-2", "catalog-usw2")],
        ..after_switchover.clone()
    };
    assert_eq!(protection(&detached, true), "Unprotected");
    let still_writer = AuroraObservation {
        writer_arn: Some(arn("us-east-1", "catalog-use1")),
        ..after_switchover
    };
    assert_eq!(protection(&still_writer, true), "Unprotected");
}

#[test]
fn nothing_is_sent_while_blocked_even_for_a_record_under_way() {
    let answered = Reprotection {
        requested: true,
        ..decide(
            None,
            &instance("available", None),
            OldInstanceAction::Rename,
        )
        .record
        .expect("record")
    };
    let gone = Seen::Instance {
        instance: None,
        lag_known: false,
    };
    let n = next(
        &standby(),
        Some(&answered),
        &gone,
        true,
        OldInstanceAction::Rename,
        Some("failover back is under way"),
        &now(),
    );
    assert_eq!(n.call, None);
    assert_eq!(n.record.map(|r| r.state), Some(ReprotectionState::Renaming));
}

#[test]
fn a_replica_of_the_primary_under_the_identifier_is_never_moved_aside() {
    let record = decide(
        None,
        &instance("available", None),
        OldInstanceAction::Rename,
    )
    .record
    .expect("record");
    let n = decide(
        Some(&record),
        &instance("available", Some(PRIMARY_ARN)),
        OldInstanceAction::Rename,
    );
    assert_eq!(n.call, None);
    assert_eq!(n.record.map(|r| r.state), Some(ReprotectionState::Creating));
}

#[test]
fn a_replica_of_an_old_primary_is_renamed_aside_never_deleted() {
    // It may hold writes the promoted replica lacks, and AWS keeps no final snapshot of a
    // replica: Delete renames it aside all the same.
    let old_replica = instance("available", Some("arn:aws:rds:us-east-1:1:db:orders-use1"));
    for action in [OldInstanceAction::Delete, OldInstanceAction::Rename] {
        let n = decide(None, &old_replica, action);
        assert!(
            matches!(n.call, Some(Call::Rename { .. })),
            "{action:?}: {:?}",
            n.call
        );
        assert_eq!(n.record.map(|r| r.state), Some(ReprotectionState::Renaming));
    }
}

#[test]
fn a_replica_with_unknown_lag_is_not_protected_and_aside_names_fit_rds() {
    let broken = Seen::Instance {
        instance: Some(RdsObservation {
            status: "available".into(),
            source: Some(PRIMARY_ARN.into()),
            ..Default::default()
        }),
        lag_known: false,
    };
    assert_eq!(
        decide(None, &broken, OldInstanceAction::Rename).protection,
        "Unprotected"
    );
    let long = format!("{}-x", "a".repeat(60));
    let name = aside_name(&long, "final", &now());
    assert!(name.len() <= 63 && !name.contains("--"), "{name}");
}

fn recreate(old: OldInstanceAction) -> ReprotectionSpec {
    ReprotectionSpec {
        rds: Some(crate::api::RdsReprotection::Recreate),
        old_instance: Some(old),
    }
}

fn status_with(records: Vec<Reprotection>) -> DisasterRecoveryPlanStatus {
    DisasterRecoveryPlanStatus {
        reprotections: records,
        ..Default::default()
    }
}

/// Found by the re-protection simulation: a final snapshot name taken by someone else
/// refused the first delete; the record stayed as unanswered intent, so the next check
/// resent it, took the same DBSnapshotAlreadyExists as proof the first send had worked,
/// and waited forever for a deletion nobody had started.
#[test]
fn a_refused_move_aside_is_dropped_and_its_refusal_never_counts_as_done() {
    let seen = [instance("available", None)];
    let spec = recreate(OldInstanceAction::Delete);
    let mut first = round(vec![standby()], &seen, &spec, &status_with(vec![]), &now());
    assert_eq!(first.requests.len(), 1);
    assert!(!first.requests[0].resend);
    assert!(matches!(
        first.requests[0].call,
        Call::Delete {
            final_snapshot: Some(_)
        }
    ));
    let taken = Err((
        false,
        "DBSnapshotAlreadyExists: orders-use1-final-20270115t080000".to_string(),
    ));
    let answer = judge(&standby(), &first.requests[0], taken.clone());
    assert!(matches!(answer, Answer::Refused(_)));
    // The refusal is recorded by dropping the intent: the next check starts afresh.
    let intent = first.wanted.clone();
    first.answer(0, &answer);
    let mut answered = intent.clone();
    first.merge(&mut answered, &now());
    assert_eq!(answered, vec![]);
    // The answer was lost (a crash, a failed write): the intent stays and the call is
    // sent again. The same refusal is still a refusal.
    let again = round(vec![standby()], &seen, &spec, &status_with(intent), &now());
    assert_eq!(again.requests.len(), 1);
    assert!(again.requests[0].resend);
    assert!(matches!(
        judge(&standby(), &again.requests[0], taken),
        Answer::Refused(_)
    ));
    // A rename onto a taken name is as much a refusal on a resend.
    let rename = Request {
        standby: 0,
        record: 0,
        call: Call::Rename { to: "x".into() },
        resend: true,
    };
    let exists = Err((false, "DBInstanceAlreadyExists: x".to_string()));
    assert!(matches!(
        judge(&standby(), &rename, exists),
        Answer::Refused(_)
    ));
    // What does show the earlier send worked still counts.
    let gone = Err((false, "DBInstanceNotFound: orders-use1".to_string()));
    assert_eq!(judge(&standby(), &rename, gone), Answer::Done);
}

/// Review M5: a delete is resent only after the instance was seen available, so a busy
/// answer is someone else's change, not our delete. Counted as done, the record waited
/// for ever on a delete nobody made; it is a refusal (and waits like one), never done.
#[test]
fn a_busy_instance_is_refused_never_taken_as_a_delete_done() {
    let busy = || {
        Err((
            false,
            "InvalidDBInstanceState: orders-use1 is modifying".to_string(),
        ))
    };
    for call in [
        Call::Delete {
            final_snapshot: Some("snap".into()),
        },
        Call::Rename { to: "x".into() },
        Call::CreateReplica,
    ] {
        for resend in [false, true] {
            let send = Request {
                standby: 0,
                record: 0,
                call: call.clone(),
                resend,
            };
            assert!(
                matches!(judge(&standby(), &send, busy()), Answer::Refused(_)),
                "{call:?} resend {resend}"
            );
        }
    }
}

#[test]
fn the_wait_after_refusals_doubles_from_a_minute_to_half_an_hour() {
    let waits: Vec<i64> = [1, 2, 3, 5, 6, 40, u32::MAX]
        .iter()
        .map(|n| retry_after(*n, &now()).0.as_second() - now().0.as_second())
        .collect();
    assert_eq!(waits, vec![60, 120, 240, 960, 1800, 1800, 1800]);
}

/// Found by the re-protection simulation: a crash between recording "creating again" and
/// sending it left a record that the next check decides unchanged; the driver wrote and
/// sent nothing when the records were unchanged, so the replica was never created.
#[test]
fn a_resend_whose_record_is_unchanged_is_still_recorded_and_sent() {
    let spec = recreate(OldInstanceAction::Rename);
    let missing = [Seen::Instance {
        instance: None,
        lag_known: false,
    }];
    let first = round(
        vec![standby()],
        &missing,
        &spec,
        &status_with(vec![]),
        &now(),
    );
    assert_eq!(first.requests.len(), 1);
    // The send's answer was lost: the check after that resends it, and the one after
    // that (its answer lost too) decides the very same record.
    let second = round(
        vec![standby()],
        &missing,
        &spec,
        &status_with(first.wanted.clone()),
        &now(),
    );
    let third = round(
        vec![standby()],
        &missing,
        &spec,
        &status_with(second.wanted.clone()),
        &now(),
    );
    assert_eq!(third.wanted, second.wanted);
    assert_eq!(third.requests.len(), 1);
    assert_eq!(third.requests[0].call, Call::CreateReplica);
    assert!(third.requests[0].resend);
    assert!(third.must_record(&second.wanted));
    // Nothing to send and nothing changed: nothing to write.
    let protected = [instance("available", Some(PRIMARY_ARN))];
    let calm = round(
        vec![standby()],
        &protected,
        &spec,
        &status_with(vec![]),
        &now(),
    );
    assert!(!calm.must_record(&[]));
}
