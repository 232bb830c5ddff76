//! Re-protection of RDS standbys (I/O glue), run by the plan check: observes each standby,
//! records what it will do in the plan's status (`status.reprotections`), then calls AWS.
//! Decisions live in `engine::reprotect`.

use std::collections::HashMap;

use futures::future::join_all;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use tracing::warn;

use crate::api::{DisasterRecoveryPlan, FailoverPhase, FenceResource, Reprotection};
use crate::aws::Aws;
use crate::context::Context;
use crate::engine::reprotect::{Call, Next, Seen, Standby, next};
use crate::leadership::LeaderAws;
use crate::store::update_failover_fields;

/// Errors that show an earlier send of the call took effect (its answer was lost).
fn already_done(call: &Call, message: &str) -> bool {
    let codes: &[&str] = match call {
        Call::Rename { .. } => &["DBInstanceAlreadyExists", "DBInstanceNotFound"],
        Call::Delete { .. } => &[
            "InvalidDBInstanceState",
            "DBInstanceNotFound",
            "DBSnapshotAlreadyExists",
        ],
        Call::CreateReplica => &["DBInstanceAlreadyExists"],
    };
    codes.iter().any(|code| message.contains(code))
}

/// Each RDS standby of the plan: the plan's instance in every region but the active one.
fn standbys(plan: &DisasterRecoveryPlan, active: &str) -> Vec<Standby> {
    let aws = |name: &str| plan.spec.aws_region_of(name).map(str::to_string);
    let mut out = Vec::new();
    for db in plan.spec.databases.iter().filter(|d| d.rds.is_some()) {
        let (Some(primary), Some(primary_aws_region)) =
            (crate::engine::member(db, active), aws(active))
        else {
            continue;
        };
        for region in plan.spec.regions.iter().filter(|r| r.name != active) {
            if let Some(instance) = crate::engine::member(db, &region.name) {
                out.push(Standby {
                    database: db.name.clone(),
                    region: region.name.clone(),
                    aws_region: region.aws_region.clone(),
                    instance: instance.to_string(),
                    primary_aws_region: primary_aws_region.clone(),
                    primary: primary.to_string(),
                });
            }
        }
    }
    out
}

/// Why no re-protection call may be made for `s` now.
fn blocked(plan: &DisasterRecoveryPlan, s: &Standby) -> Option<String> {
    let status = plan.status.clone().unwrap_or_default();
    let running = status.last_failover.as_ref().filter(|l| {
        matches!(
            l.phase.as_deref(),
            Some(p) if p == format!("{:?}", FailoverPhase::Running)
                || p == format!("{:?}", FailoverPhase::AwaitingApproval)
        )
    });
    if let Some(l) = running {
        return Some(format!("failover {} is under way", l.name));
    }
    status
        .pending_fences
        .iter()
        .any(|f| f.resource == FenceResource::RdsInstance && f.region == s.region)
        .then(|| format!("the fence of the old primary in {} is pending", s.region))
}

/// Checks every RDS standby and moves re-protection on. Returns, per (database, region),
/// its protection and why. `lag_known` says, per (database, region), whether a fresh lag
/// reading of 0 or more was seen in this check.
pub async fn check(
    ctx: &Context,
    plan: &DisasterRecoveryPlan,
    ns: &str,
    active: &str,
    lag_known: &HashMap<(String, String), bool>,
) -> HashMap<(String, String), (&'static str, Option<String>)> {
    let spec = plan.spec.reprotection.clone().unwrap_or_default();
    let api: Api<DisasterRecoveryPlan> = Api::namespaced(ctx.client.clone(), ns);
    // Decide on the plan as the API server holds it now (a failover may have moved the
    // active region since the cached copy), and record conditionally on that read.
    let fresh = match api.get_status(&plan.name_any()).await {
        Ok(fresh) => fresh,
        Err(e) => {
            let why = format!(
                "could not read the plan: {}",
                crate::error::kube_message(&e)
            );
            return standbys(plan, active)
                .into_iter()
                .map(|s| ((s.database, s.region), ("Unprotected", Some(why.clone()))))
                .collect();
        }
    };
    if crate::engine::active_region(&fresh).as_deref() != Some(active) {
        return standbys(plan, active)
            .into_iter()
            .map(|s| {
                let why = "the active region just changed; checked again next".to_string();
                ((s.database, s.region), ("Unprotected", Some(why)))
            })
            .collect();
    }
    let plan = &DisasterRecoveryPlan {
        status: fresh.status.clone(),
        ..plan.clone()
    };
    let records = plan
        .status
        .as_ref()
        .map(|s| s.reprotections.clone())
        .unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let all = standbys(plan, active);
    let limit = ctx.config.member_timeout;
    let seen = join_all(all.iter().map(|s| async move {
        match tokio::time::timeout(limit, ctx.aws.describe_instance(&s.aws_region, &s.instance))
            .await
        {
            Err(_) => Seen::Unknown(format!("no answer within {}s", limit.as_secs())),
            Ok(Err(e)) => Seen::Unknown(e.message),
            Ok(Ok(instance)) => Seen::Instance {
                instance,
                lag_known: lag_known
                    .get(&(s.database.clone(), s.region.clone()))
                    .copied()
                    .unwrap_or(false),
            },
        }
    }))
    .await;
    let decided: Vec<(Standby, Next)> = all
        .into_iter()
        .zip(seen)
        .map(|(s, seen)| {
            let record = records
                .iter()
                .find(|r| r.database == s.database && r.region == s.region);
            let why = blocked(plan, &s);
            let n = next(
                &s,
                record,
                &seen,
                spec.recreate(),
                spec.old_instance(),
                why.as_deref(),
                &now,
            );
            (s, n)
        })
        .collect();
    let mut report: HashMap<(String, String), (&'static str, Option<String>)> = decided
        .iter()
        .map(|(s, n)| {
            (
                (s.database.clone(), s.region.clone()),
                (n.protection, n.message.clone()),
            )
        })
        .collect();
    report.extend(aurora(ctx, plan, active, lag_known).await);
    let mut wanted: Vec<Reprotection> = decided
        .iter()
        .filter_map(|(_, n)| n.record.clone())
        .collect();
    if wanted == records {
        return report;
    }
    // The intent is recorded before any call is made, on the plan as read above: if it
    // changed since (a failover started, a fence was recorded), nothing is sent.
    if let Err(e) = record_intent(&api, &fresh, &wanted).await {
        warn!(plan = %plan.name_any(), error = %crate::error::Error::from(e), "re-protection not recorded; nothing sent, looking again at the next check");
        return report;
    }
    for (s, n) in &decided {
        let had_record = records
            .iter()
            .any(|r| r.database == s.database && r.region == s.region);
        let event = match (had_record, n.record.is_some(), n.protection) {
            (false, true, _) => Some(("Reprotecting", "re-protecting")),
            (true, _, "Protected") => Some(("Reprotected", "protected again")),
            _ => None,
        };
        if let Some((reason, what)) = event {
            let note = format!(
                "{} in {} {what}: {}",
                s.database,
                s.region,
                n.message.as_deref().unwrap_or_default()
            );
            ctx.publish(plan, EventType::Normal, reason, "Reprotect", note)
                .await;
        }
    }
    let calls: Vec<(usize, &Standby, &Call)> = decided
        .iter()
        .filter_map(|(s, n)| {
            let i = wanted
                .iter()
                .position(|r| r.database == s.database && r.region == s.region)?;
            Some((i, s, n.call.as_ref()?))
        })
        .collect();
    if calls.is_empty() {
        return report;
    }
    // A resend (the record was there, in the same state, its answer lost) may be refused
    // because the first send took effect; a first send's refusal is a refusal.
    let resend = |s: &Standby| {
        records.iter().any(|r| {
            r.database == s.database
                && r.region == s.region
                && !r.requested
                && wanted
                    .iter()
                    .any(|w| w.database == r.database && w.region == r.region && w.state == r.state)
        })
    };
    let answers = join_all(
        calls
            .iter()
            .map(|(_, s, call)| send(ctx, s, call, resend(s))),
    )
    .await;
    for ((i, s, _), answer) in calls.iter().zip(answers) {
        let r = &mut wanted[*i];
        match answer {
            Ok(()) => r.requested = true,
            Err((true, message)) => {
                r.message = Some(format!("{message}; observed again at the next check"))
            }
            Err((false, message)) => {
                r.message = Some(message.clone());
                report.insert(
                    (s.database.clone(), s.region.clone()),
                    ("Unprotected", Some(message.clone())),
                );
                ctx.publish(
                    plan,
                    EventType::Warning,
                    "ReprotectRefused",
                    "Reprotect",
                    message,
                )
                .await;
            }
        }
    }
    // The answers, onto the records as they are now (matched by standby and state).
    let answered = update_failover_fields(&api, &plan.name_any(), |f| {
        for r in &mut f.reprotections {
            if let Some(w) = wanted
                .iter()
                .find(|w| w.database == r.database && w.region == r.region && w.state == r.state)
            {
                r.requested |= w.requested;
                r.message = w.message.clone();
            }
        }
    })
    .await;
    if let Err(e) = answered {
        warn!(plan = %plan.name_any(), error = %crate::error::Error::from(e), "could not record re-protection answers; the next check observes");
    }
    report
}

/// The protection of every Aurora standby: whether its member is a secondary of a global
/// cluster whose writer is in the active region.
async fn aurora(
    ctx: &Context,
    plan: &DisasterRecoveryPlan,
    active: &str,
    lag_known: &HashMap<(String, String), bool>,
) -> Vec<((String, String), (&'static str, Option<String>))> {
    let Some(active_aws) = plan.spec.aws_region_of(active).map(str::to_string) else {
        return Vec::new();
    };
    let limit = ctx.config.member_timeout;
    let per_db = plan.spec.databases.iter().filter_map(|db| {
        let global = db.aurora_global.as_ref()?;
        let active_aws = active_aws.clone();
        Some(async move {
            let observed = tokio::time::timeout(
                limit,
                ctx.aws
                    .describe_global_cluster(&active_aws, &global.global_cluster_identifier),
            )
            .await;
            let mut out = Vec::new();
            for region in plan.spec.regions.iter().filter(|r| r.name != active) {
                let Some(member) = crate::engine::member(db, &region.name) else {
                    continue;
                };
                let key = (db.name.clone(), region.name.clone());
                let known = lag_known.get(&key).copied().unwrap_or(false);
                let protection = match &observed {
                    Err(_) => (
                        "Unprotected",
                        Some(format!("no answer within {}s", limit.as_secs())),
                    ),
                    Ok(Err(e)) => ("Unprotected", Some(e.message.clone())),
                    Ok(Ok(obs)) => crate::engine::reprotect::aurora_protection(
                        obs.as_ref(),
                        &global.global_cluster_identifier,
                        member,
                        &region.aws_region,
                        &active_aws,
                        known,
                    ),
                };
                out.push((key, protection));
            }
            out
        })
    });
    join_all(per_db).await.into_iter().flatten().collect()
}

/// Writes the re-protection records with the failover field manager (all its fields, as
/// that manager's applies must), conditional on the plan read at `fresh`.
async fn record_intent(
    api: &Api<DisasterRecoveryPlan>,
    fresh: &DisasterRecoveryPlan,
    records: &[Reprotection],
) -> Result<(), kube::Error> {
    let status = fresh.status.clone().unwrap_or_default();
    let fields = crate::store::FailoverFields {
        active_region: status.active_region,
        previous_active_region: status.previous_active_region,
        last_failover: status.last_failover,
        last_unplanned_move: status.last_unplanned_move,
        pending_fences: status.pending_fences,
        reprotections: records.to_vec(),
    };
    crate::store::apply_status_at(
        api,
        &fresh.name_any(),
        crate::store::FAILOVER_FIELD_MANAGER,
        &fields,
        fresh.resource_version().as_deref(),
    )
    .await
    .map(|_| ())
}

/// Makes one call. Ok also when AWS's answer shows an earlier send took effect.
/// Err((retryable, message)).
async fn send(ctx: &Context, s: &Standby, call: &Call, resend: bool) -> Result<(), (bool, String)> {
    // A deposed leader must not move databases: each call confirms the lease first.
    let aws = LeaderAws {
        inner: ctx.aws.clone(),
        leadership: ctx.leadership.clone(),
    };
    let region = &s.aws_region;
    let answer = match call {
        Call::Rename { to } => aws.rename_db_instance(region, &s.instance, to).await,
        Call::Delete { final_snapshot } => {
            aws.delete_db_instance(region, &s.instance, final_snapshot.as_deref())
                .await
        }
        Call::CreateReplica => {
            let arn = ctx
                .aws
                .instance_arn(&s.primary_aws_region, &s.primary)
                .await
                .map_err(|e| (e.is_retryable(), format!("describing {}: {e}", s.primary)))?;
            let Some(arn) = arn else {
                return Err((
                    false,
                    format!(
                        "the primary {} in {} does not exist",
                        s.primary, s.primary_aws_region
                    ),
                ));
            };
            aws.create_read_replica(region, &s.instance, &arn).await
        }
    };
    match answer {
        Ok(()) => Ok(()),
        Err(e) if resend && already_done(call, &e.message) => Ok(()),
        Err(e) => Err((
            e.is_retryable(),
            format!("{} in {}: {e}", s.instance, s.region),
        )),
    }
}
