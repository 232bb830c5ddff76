use super::*;
use crate::api::{OldInstanceAction, ReprotectionState};
use crate::engine::RdsObservation;
use crate::engine::reprotect::{Seen, next};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

fn standby(aws_region: &str) -> Standby {
    Standby {
        database: "orders".into(),
        region: "use1".into(),
        aws_region: aws_region.into(),
        instance: "orders-use1".into(),
        primary_aws_region: "us-west-2".into(),
        primary: "orders-usw2".into(),
    }
}

fn now() -> Time {
    Time(Timestamp::from_second(1_800_000_000).expect("valid"))
}

fn old_primary() -> Seen {
    Seen::Instance {
        instance: Some(RdsObservation {
            status: "available".into(),
            source: None,
            ..Default::default()
        }),
        lag_known: false,
    }
}

fn gone() -> Seen {
    Seen::Instance {
        instance: None,
        lag_known: false,
    }
}

fn settings() -> ReplicaSettings {
    ReplicaSettings {
        db_instance_class: Some("db.r6g.large".into()),
        db_subnet_group_name: Some("orders-db".into()),
        vpc_security_group_ids: vec!["sg-0123".into()],
        db_parameter_group_name: Some("orders-pg".into()),
        storage_encrypted: true,
        kms_key_id: Some("arn:aws:kms:us-east-1:123456789012:key/k".into()),
        ..Default::default()
    }
}

/// One check as the I/O layer makes it: decide, read what is asked, complete.
fn check(
    s: &Standby,
    record: Option<&Reprotection>,
    seen: &Seen,
    old: OldInstanceAction,
    read: impl Fn(&str) -> Result<Option<ReplicaSettings>, String>,
) -> (Next, Option<String>) {
    let decided = next(s, record, seen, true, old, None, &now());
    let asked = to_read(&decided);
    let answer = asked.as_deref().map(&read);
    (complete(s, record, decided, answer), asked)
}

#[test]
fn settings_are_read_and_recorded_with_the_rename_and_the_replica_is_created_with_them() {
    let s = standby("us-east-1");
    let (n, asked) = check(&s, None, &old_primary(), OldInstanceAction::Rename, |_| {
        Ok(Some(settings()))
    });
    assert_eq!(asked.as_deref(), Some("orders-use1"));
    assert!(matches!(n.call, Some(Call::Rename { .. })));
    let record = n.record.expect("recorded before the call");
    assert_eq!(record.settings, Some(settings()));
    // Renamed: the replica is due; the recorded settings are used, nothing read again.
    let answered = Reprotection {
        requested: true,
        ..record
    };
    let (n, asked) = check(
        &s,
        Some(&answered),
        &gone(),
        OldInstanceAction::Rename,
        |_| Err("must not be read".into()),
    );
    assert_eq!(asked, None);
    assert_eq!(n.call, Some(Call::CreateReplica));
    assert_eq!(n.record.and_then(|r| r.settings), Some(settings()));
}

#[test]
fn a_delete_is_recorded_with_the_settings_so_a_crash_after_it_loses_nothing() {
    let s = standby("us-east-1");
    let (n, _) = check(&s, None, &old_primary(), OldInstanceAction::Delete, |_| {
        Ok(Some(settings()))
    });
    assert!(matches!(n.call, Some(Call::Delete { .. })));
    let record = n.record.expect("record");
    assert_eq!(record.state, ReprotectionState::Deleting);
    assert_eq!(record.settings, Some(settings()));
    // The answer was lost, the instance is gone: the replica is created from the record.
    let (n, asked) = check(
        &s,
        Some(&record),
        &gone(),
        OldInstanceAction::Delete,
        |_| Ok(None),
    );
    assert_eq!(asked, None);
    assert_eq!(n.call, Some(Call::CreateReplica));
    assert_eq!(n.protection, "Reprotecting");
}

#[test]
fn nothing_is_moved_aside_when_the_settings_cannot_be_read() {
    let s = standby("us-east-1");
    for (answer, says) in [
        (
            Err("AccessDenied: rds:DescribeDBInstances".to_string()),
            "AccessDenied",
        ),
        (Ok(None), "disappeared"),
    ] {
        let (n, _) = check(&s, None, &old_primary(), OldInstanceAction::Delete, |_| {
            answer.clone()
        });
        assert_eq!((n.call, n.record), (None, None), "{says}");
        assert_eq!(n.protection, "Unprotected");
        let message = n.message.expect("message");
        assert!(
            message.contains("not moved aside") && message.contains(says),
            "{message}"
        );
    }
}

#[test]
fn a_lost_standby_is_not_recreated_with_default_settings() {
    let s = standby("us-east-1");
    let (n, asked) = check(&s, None, &gone(), OldInstanceAction::Rename, |_| {
        Err("nothing to read".into())
    });
    assert_eq!(asked, None);
    assert_eq!(
        (n.protection, n.call, n.record),
        ("Unprotected", None, None)
    );
    let message = n.message.expect("message");
    for part in [
        "orders-use1 in use1 is missing",
        "gone before re-protection began",
        "read replica of orders-usw2 in us-west-2",
        "DB subnet group",
        "KMS key of us-east-1",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
}

#[test]
fn a_record_without_settings_reads_them_from_the_renamed_old_instance() {
    let s = standby("us-east-1");
    // Renamed by an earlier Drover that recorded no settings.
    let (n, _) = check(&s, None, &old_primary(), OldInstanceAction::Rename, |_| {
        Ok(Some(settings()))
    });
    let renamed = Reprotection {
        requested: true,
        settings: None,
        ..n.record.expect("record")
    };
    let to = renamed.renamed_to.clone().expect("renamed");
    let (n, asked) = check(
        &s,
        Some(&renamed),
        &gone(),
        OldInstanceAction::Rename,
        |id| {
            assert_eq!(id, to);
            Ok(Some(settings()))
        },
    );
    assert_eq!(asked.as_deref(), Some(to.as_str()));
    assert_eq!(n.call, Some(Call::CreateReplica));
    assert_eq!(n.record.and_then(|r| r.settings), Some(settings()));
    // The renamed instance is gone too: Unprotected, the record kept (it says what moved).
    let (n, _) = check(
        &s,
        Some(&renamed),
        &gone(),
        OldInstanceAction::Rename,
        |_| Ok(None),
    );
    assert_eq!((n.protection, n.call.is_none()), ("Unprotected", true));
    assert!(
        n.message
            .as_deref()
            .is_some_and(|m| m.contains("is gone too"))
    );
    assert_eq!(n.record.and_then(|r| r.renamed_to), Some(to));
}

#[test]
fn an_encrypted_replica_is_not_requested_where_aws_would_refuse_it() {
    let keyless = ReplicaSettings {
        kms_key_id: None,
        ..settings()
    };
    for (region, st, says) in [
        ("us-east-1", keyless, "KMS key is not known"),
        ("us-gov-west-1", settings(), "presigned URL"),
        ("cn-north-1", settings(), "presigned URL"),
    ] {
        let s = standby(region);
        let (n, _) = check(&s, None, &old_primary(), OldInstanceAction::Delete, |_| {
            Ok(Some(st.clone()))
        });
        let record = Reprotection {
            requested: true,
            ..n.record.expect("record")
        };
        let (n, _) = check(
            &s,
            Some(&record),
            &gone(),
            OldInstanceAction::Delete,
            |_| Ok(None),
        );
        assert_eq!((n.protection, n.call), ("Unprotected", None), "{region}");
        assert!(
            n.message.as_deref().is_some_and(|m| m.contains(says)),
            "{region}: {:?}",
            n.message
        );
    }
    // Unencrypted, in GovCloud: nothing needs presigning.
    let s = standby("us-gov-west-1");
    let plain = ReplicaSettings {
        storage_encrypted: false,
        kms_key_id: None,
        ..settings()
    };
    let (n, _) = check(&s, None, &old_primary(), OldInstanceAction::Delete, |_| {
        Ok(Some(plain.clone()))
    });
    let record = Reprotection {
        requested: true,
        ..n.record.expect("record")
    };
    let (n, _) = check(
        &s,
        Some(&record),
        &gone(),
        OldInstanceAction::Delete,
        |_| Ok(None),
    );
    assert_eq!(n.call, Some(Call::CreateReplica));
}

fn cross_region_standby() -> Standby {
    standby("us-east-1")
}

#[test]
fn a_parameter_group_is_sent_only_where_aws_takes_one_for_a_cross_region_replica() {
    let s = cross_region_standby();
    for (engine, sent) in [
        (Some("mysql"), true),
        (Some("oracle-ee"), true),
        (Some("db2-se"), true),
        (Some("postgres"), false),
        (Some("mariadb"), false),
        (Some("sqlserver-se"), false),
        (Some("custom-oracle-ee"), false),
        (None, false),
    ] {
        let st = ReplicaSettings {
            engine: engine.map(str::to_string),
            ..settings()
        };
        let out = to_send(&s, &st);
        assert_eq!(out.db_parameter_group_name.is_some(), sent, "{engine:?}");
        // Everything else is sent as recorded.
        assert_eq!(
            ReplicaSettings {
                db_parameter_group_name: st.db_parameter_group_name.clone(),
                ..out
            },
            st
        );
        assert_eq!(
            unsent_parameter_group(&s, &st).is_none(),
            sent,
            "{engine:?}"
        );
    }
    // Within one region (not a re-protection Drover makes, but the rule is AWS's): sent.
    let same = Standby {
        primary_aws_region: "us-east-1".into(),
        ..cross_region_standby()
    };
    let pg = ReplicaSettings {
        engine: Some("postgres".into()),
        ..settings()
    };
    assert!(to_send(&same, &pg).db_parameter_group_name.is_some());
    // The engine's default group needs nothing afterwards.
    let default = ReplicaSettings {
        db_parameter_group_name: Some("default.postgres16".into()),
        ..pg.clone()
    };
    assert_eq!(unsent_parameter_group(&s, &default), None);
}

#[test]
fn the_create_and_the_protected_message_say_that_the_parameter_group_must_be_set_afterwards() {
    let s = cross_region_standby();
    let pg = ReplicaSettings {
        engine: Some("postgres".into()),
        ..settings()
    };
    let (n, _) = check(&s, None, &old_primary(), OldInstanceAction::Delete, |_| {
        Ok(Some(pg.clone()))
    });
    let record = Reprotection {
        requested: true,
        ..n.record.expect("record")
    };
    let (n, _) = check(
        &s,
        Some(&record),
        &gone(),
        OldInstanceAction::Delete,
        |_| Ok(None),
    );
    assert_eq!(n.call, Some(Call::CreateReplica));
    let message = n.message.clone().expect("message");
    assert!(
        message.contains("creating orders-use1") && message.contains("set orders-pg"),
        "{message}"
    );
    assert_eq!(
        n.record.as_ref().and_then(|r| r.message.clone()),
        Some(message)
    );
    // Replicating with a known lag: Protected, and the message (the Event) says it again.
    let replicating = Reprotection {
        state: ReprotectionState::Replicating,
        ..n.record.expect("record")
    };
    let replica = Seen::Instance {
        instance: Some(RdsObservation {
            status: "available".into(),
            source: Some("arn:aws:rds:us-west-2:1:db:orders-usw2".into()),
            ..Default::default()
        }),
        lag_known: true,
    };
    let (n, _) = check(
        &s,
        Some(&replicating),
        &replica,
        OldInstanceAction::Delete,
        |_| Ok(None),
    );
    assert_eq!(n.protection, "Protected");
    assert!(
        n.message
            .as_deref()
            .is_some_and(|m| m.contains("modify-db-instance") && m.contains("orders-pg")),
        "{:?}",
        n.message
    );
    // MySQL: the group was sent, nothing to say.
    let mysql = ReplicaSettings {
        engine: Some("mysql".into()),
        ..settings()
    };
    let replicating = Reprotection {
        settings: Some(mysql),
        ..replicating
    };
    let (n, _) = check(
        &s,
        Some(&replicating),
        &replica,
        OldInstanceAction::Delete,
        |_| Ok(None),
    );
    assert!(
        n.message
            .as_deref()
            .is_some_and(|m| !m.contains("parameter")),
        "{:?}",
        n.message
    );
}

/// The sim found it: a delete takes effect, its answer is lost, and the resend is refused
/// (the final snapshot's name is now taken). The record must not go with the settings.
#[test]
fn a_refused_resend_keeps_the_settings_for_the_replica_once_the_old_instance_is_gone() {
    use crate::api::{DisasterRecoveryPlanStatus, ReprotectionSpec};
    use crate::engine::reprotect::{Answer, retry_after, round};
    let s = cross_region_standby();
    let (n, _) = check(&s, None, &old_primary(), OldInstanceAction::Delete, |_| {
        Ok(Some(settings()))
    });
    let unanswered = n.record.expect("record");
    let spec = ReprotectionSpec {
        rds: Some(crate::api::RdsReprotection::Recreate),
        old_instance: Some(OldInstanceAction::Delete),
    };
    let status = DisasterRecoveryPlanStatus {
        reprotections: vec![unanswered.clone()],
        ..Default::default()
    };
    let decided = round(vec![s.clone()], &[old_primary()], &spec, &status, &now());
    assert_eq!(reads(&decided, &status.reprotections), vec![None]);
    let mut decided = settle(decided, &status.reprotections, vec![None]);
    assert!(decided.requests[0].resend);
    decided.answer(0, &Answer::Refused("DBSnapshotAlreadyExists".into()));
    let mut current = status.reprotections.clone();
    decided.merge(&mut current, &now());
    assert_eq!(current.len(), 1, "kept for its settings");
    assert!(current[0].refused);
    assert_eq!(current[0].settings, Some(settings()));
    // The next call waits a minute after the first refusal.
    assert_eq!(current[0].refusals, 1);
    assert_eq!(current[0].retry_after, Some(retry_after(1, &now())));
    let status = DisasterRecoveryPlanStatus {
        reprotections: current,
        ..status
    };
    let waiting = round(vec![s.clone()], &[gone()], &spec, &status, &now());
    let waiting = settle(waiting, &status.reprotections, vec![None]);
    assert!(waiting.requests.is_empty());
    assert_eq!(
        waiting.wanted, status.reprotections,
        "the refused record as it is"
    );
    let (_, n) = &waiting.decided[0];
    assert_eq!(n.protection, "Unprotected");
    assert!(
        n.message
            .as_deref()
            .is_some_and(|m| m.starts_with("DBSnapshotAlreadyExists; tried again after")),
        "{n:?}"
    );
    let now = || Time(now().0 + k8s_openapi::jiff::SignedDuration::from_secs(61));
    // The first send did take effect: the identifier is free, the replica is created with
    // the kept settings (not a resend: a refused record is no call under way).
    let decided = round(vec![s.clone()], &[gone()], &spec, &status, &now());
    assert_eq!(reads(&decided, &status.reprotections), vec![None]);
    let decided = settle(decided, &status.reprotections, vec![None]);
    assert_eq!(decided.requests.len(), 1);
    assert_eq!(decided.requests[0].call, Call::CreateReplica);
    assert!(!decided.requests[0].resend);
    let wanted = &decided.wanted[0];
    assert_eq!(
        (wanted.settings.as_ref(), wanted.refused, wanted.refusals),
        (Some(&settings()), false, 1)
    );
    // Refused again: the count goes on, and the next wait is two minutes.
    let mut again = decided.clone();
    again.answer(0, &Answer::Refused("KMSKeyNotAccessibleFault".into()));
    let mut current = again.wanted.clone();
    again.merge(&mut current, &now());
    assert_eq!(
        (current[0].refused, current[0].refusals),
        (true, 2),
        "{current:?}"
    );
    assert_eq!(current[0].retry_after, Some(retry_after(2, &now())));
    assert_eq!(
        retry_after(2, &now()).0.as_second() - now().0.as_second(),
        120
    );
    // An answer lands only on the record that chose the same names: not on one begun
    // since, nor as a refusal on one another send has answered as taken since.
    let mut other = again.wanted.clone();
    other[0].renamed_to = Some("orders-use1-old-20270101t000000".into());
    let before = other.clone();
    again.merge(&mut other, &now());
    assert_eq!(other, before);
    let mut taken = again.wanted.clone();
    taken[0].requested = true;
    again.merge(&mut taken, &now());
    assert!(!taken[0].refused);
    // After the wait, a fresh move aside whose settings cannot be read keeps the refused
    // record (its settings, its count), instead of forgetting it.
    let refused_twice = DisasterRecoveryPlanStatus {
        reprotections: current,
        ..status.clone()
    };
    let later = || Time(now().0 + k8s_openapi::jiff::SignedDuration::from_secs(180));
    let decided = round(
        vec![s.clone()],
        &[old_primary()],
        &spec,
        &refused_twice,
        &later(),
    );
    let decided = settle(
        decided,
        &refused_twice.reprotections,
        vec![Some(Err("Throttling".into()))],
    );
    assert!(decided.requests.is_empty());
    assert_eq!(decided.wanted.len(), 1);
    assert_eq!(
        (decided.wanted[0].refused, decided.wanted[0].refusals),
        (true, 2)
    );
    assert_eq!(decided.wanted[0].settings, Some(settings()));
    // While blocked, the refused record stays (nothing else would keep the settings).
    let blocked = DisasterRecoveryPlanStatus {
        last_failover: Some(crate::api::LastFailover {
            name: "fo".into(),
            phase: Some("Running".into()),
            ..Default::default()
        }),
        ..status.clone()
    };
    let decided = round(vec![s.clone()], &[gone()], &spec, &blocked, &now());
    let decided = settle(decided, &blocked.reprotections, vec![None]);
    assert!(decided.requests.is_empty());
    assert_eq!(decided.wanted.len(), 1);
    assert!(decided.wanted[0].refused);
    // Still there: a move aside starts over (a new name), the settings read again.
    let decided = round(vec![s.clone()], &[old_primary()], &spec, &status, &now());
    assert_eq!(
        reads(&decided, &status.reprotections),
        vec![Some("orders-use1".to_string())]
    );
}
