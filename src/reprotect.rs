//! Re-protection of RDS standbys (I/O glue), run by the plan check: observes each standby,
//! records what it will do in the plan's status (`status.reprotections`), then calls AWS.
//! Decisions live in `engine::reprotect`.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use tracing::warn;

use crate::api::{DisasterRecoveryPlan, ReplicaSettings};
use crate::aws::Aws;
use crate::context::Context;
use crate::engine::reprotect::{Answer, Call, Request, Seen, Standby, judge, round, settings};
use crate::leadership::LeaderAws;
use crate::store::{FailoverFields, update_failover_fields};

/// Where re-protection reads and records: the plan's status. Behind a trait so the
/// simulation (`sim`) runs this driver against an in-memory API server.
#[async_trait]
pub trait PlanStatus: Send + Sync {
    /// The plan as the API server holds it now (status and resourceVersion).
    async fn read(&self) -> Result<DisasterRecoveryPlan, kube::Error>;
    /// Writes the failover fields, conditional on `resource_version` (409 if the plan
    /// changed since).
    async fn record_at(
        &self,
        fields: &FailoverFields,
        resource_version: Option<&str>,
    ) -> Result<(), kube::Error>;
    /// Read-modify-write of the failover fields, retried on conflicts.
    async fn update(
        &self,
        change: &mut (dyn for<'a> FnMut(&'a mut FailoverFields) + Send),
    ) -> Result<(), kube::Error>;
    /// Publishes an Event about the plan (best effort).
    async fn publish(&self, type_: EventType, reason: &str, note: String);
}

/// The API server.
struct KubePlanStatus<'a> {
    ctx: &'a Context,
    api: Api<DisasterRecoveryPlan>,
    plan: &'a DisasterRecoveryPlan,
}

#[async_trait]
impl PlanStatus for KubePlanStatus<'_> {
    async fn read(&self) -> Result<DisasterRecoveryPlan, kube::Error> {
        self.api.get_status(&self.plan.name_any()).await
    }

    async fn record_at(
        &self,
        fields: &FailoverFields,
        resource_version: Option<&str>,
    ) -> Result<(), kube::Error> {
        crate::store::apply_status_at(
            &self.api,
            &self.plan.name_any(),
            crate::store::FAILOVER_FIELD_MANAGER,
            fields,
            resource_version,
        )
        .await
        .map(|_| ())
    }

    async fn update(
        &self,
        change: &mut (dyn for<'a> FnMut(&'a mut FailoverFields) + Send),
    ) -> Result<(), kube::Error> {
        update_failover_fields(&self.api, &self.plan.name_any(), change)
            .await
            .map(|_| ())
    }

    async fn publish(&self, type_: EventType, reason: &str, note: String) {
        self.ctx
            .publish(self.plan, type_, reason, "Reprotect", note)
            .await
    }
}

/// What re-protection acts through.
pub struct Effects<'a> {
    pub store: &'a dyn PlanStatus,
    /// Reads (describe, ARNs).
    pub aws: &'a dyn Aws,
    /// Mutating calls: each confirms the lease first (a deposed leader must not move
    /// databases).
    pub leader_aws: &'a dyn Aws,
    /// How long a describe may take.
    pub member_timeout: Duration,
    pub now: &'a (dyn Fn() -> Time + Sync),
}

/// Per (database, region): protection and why.
pub type Protections = HashMap<(String, String), (&'static str, Option<String>)>;

/// Checks every RDS standby and moves re-protection on. Returns, per (database, region),
/// its protection and why. `lag_known` says, per (database, region), whether a fresh lag
/// reading of 0 or more was seen in this check.
pub async fn check(
    ctx: &Context,
    plan: &DisasterRecoveryPlan,
    ns: &str,
    active: &str,
    lag_known: &HashMap<(String, String), bool>,
) -> Protections {
    let store = KubePlanStatus {
        ctx,
        api: Api::namespaced(ctx.client.clone(), ns),
        plan,
    };
    let leader_aws = LeaderAws {
        inner: ctx.aws.clone(),
        leadership: ctx.leadership.clone(),
    };
    let now = || Time(k8s_openapi::jiff::Timestamp::now());
    let fx = Effects {
        store: &store,
        aws: ctx.aws.as_ref(),
        leader_aws: &leader_aws,
        member_timeout: ctx.config.member_timeout,
        now: &now,
    };
    let (mut report, decided) = rds(&fx, plan, active, lag_known).await;
    if decided {
        report.extend(aurora(ctx, plan, active, lag_known).await);
    }
    report
}

/// The RDS standbys' part of `check`; false when nothing could be decided (the plan could
/// not be read, or its active region just changed).
pub async fn rds(
    fx: &Effects<'_>,
    plan: &DisasterRecoveryPlan,
    active: &str,
    lag_known: &HashMap<(String, String), bool>,
) -> (Protections, bool) {
    let standbys = |plan: &DisasterRecoveryPlan| {
        crate::engine::reprotect::standbys(&plan.spec, active).into_iter()
    };
    let spec = plan.spec.reprotection.clone().unwrap_or_default();
    // Decide on the plan as the API server holds it now (a failover may have moved the
    // active region since the cached copy), and record conditionally on that read.
    let fresh = match fx.store.read().await {
        Ok(fresh) => fresh,
        Err(e) => {
            let why = format!(
                "could not read the plan: {}",
                crate::error::kube_message(&e)
            );
            let report = standbys(plan)
                .map(|s| ((s.database, s.region), ("Unprotected", Some(why.clone()))))
                .collect();
            return (report, false);
        }
    };
    if crate::engine::active_region(&DisasterRecoveryPlan {
        status: fresh.status.clone(),
        ..plan.clone()
    })
    .as_deref()
        != Some(active)
    {
        let report = standbys(plan)
            .map(|s| {
                let why = "the active region just changed; checked again next".to_string();
                ((s.database, s.region), ("Unprotected", Some(why)))
            })
            .collect();
        return (report, false);
    }
    let status = fresh.status.clone().unwrap_or_default();
    let records = status.reprotections.clone();
    let now = (fx.now)();
    let all: Vec<Standby> = standbys(plan).collect();
    let limit = fx.member_timeout;
    let seen: Vec<Seen> = join_all(all.iter().map(|s| async move {
        match tokio::time::timeout(limit, fx.aws.describe_instance(&s.aws_region, &s.instance))
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
    let decided = round(all, &seen, &spec, &status, &now);
    // A move aside is recorded with the old instance's settings (read now, before it is
    // renamed or deleted); a replica is requested only with recorded settings.
    let read = join_all(
        settings::reads(&decided, &records)
            .into_iter()
            .zip(&decided.decided)
            .map(|(id, (s, _))| async move {
                let id = id?;
                Some(
                    match tokio::time::timeout(limit, fx.aws.instance_settings(&s.aws_region, &id))
                        .await
                    {
                        Err(_) => Err(format!("no answer within {}s", limit.as_secs())),
                        Ok(answer) => answer.map_err(|e| e.message),
                    },
                )
            }),
    )
    .await;
    let mut decided = settings::settle(decided, &records, read);
    let mut report: Protections = decided
        .decided
        .iter()
        .map(|(s, n)| {
            (
                (s.database.clone(), s.region.clone()),
                (n.protection, n.message.clone()),
            )
        })
        .collect();
    if !decided.must_record(&records) {
        return (report, true);
    }
    // The intent is recorded before any call is made, on the plan as read above: if it
    // changed since (a failover started, a fence was recorded), nothing is sent.
    let fields = FailoverFields {
        active_region: status.active_region.clone(),
        previous_active_region: status.previous_active_region.clone(),
        last_failover: status.last_failover.clone(),
        last_unplanned_move: status.last_unplanned_move.clone(),
        pending_fences: status.pending_fences.clone(),
        reprotections: decided.wanted.clone(),
        // Every apply of the failover field manager carries every field it owns.
        step_durations: status.step_durations.clone(),
    };
    if let Err(e) = fx
        .store
        .record_at(&fields, fresh.resource_version().as_deref())
        .await
    {
        warn!(plan = %plan.name_any(), error = %crate::error::Error::from(e), "re-protection not recorded; nothing sent, looking again at the next check");
        return (report, true);
    }
    for (s, n) in &decided.decided {
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
            fx.store.publish(EventType::Normal, reason, note).await;
        }
    }
    if decided.requests.is_empty() {
        return (report, true);
    }
    let answers = join_all(decided.requests.iter().map(|send| {
        let recorded = decided.wanted[send.record].settings.as_ref();
        call(fx, &decided.decided[send.standby].0, send, recorded)
    }))
    .await;
    for (i, answer) in answers.into_iter().enumerate() {
        decided.answer(i, &answer);
        if let Answer::Refused(message) = answer {
            let s = &decided.decided[decided.requests[i].standby].0;
            report.insert(
                (s.database.clone(), s.region.clone()),
                ("Unprotected", Some(message.clone())),
            );
            fx.store
                .publish(EventType::Warning, "ReprotectRefused", message)
                .await;
        }
    }
    // The answers, onto the records as they are now (matched by standby and state).
    let decided = &decided;
    let answered = (fx.now)();
    if let Err(e) = fx
        .store
        .update(&mut |f: &mut FailoverFields| decided.merge(&mut f.reprotections, &answered))
        .await
    {
        warn!(plan = %plan.name_any(), error = %crate::error::Error::from(e), "could not record re-protection answers; the next check observes");
    }
    (report, true)
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

/// Makes one call and judges its answer (a resend's "already done" counts as done). A
/// replica is created with `recorded`, the old standby's settings from the record.
async fn call(
    fx: &Effects<'_>,
    s: &Standby,
    send: &Request,
    recorded: Option<&ReplicaSettings>,
) -> Answer {
    let region = &s.aws_region;
    let answer = match &send.call {
        Call::Rename { to } => {
            fx.leader_aws
                .rename_db_instance(region, &s.instance, to)
                .await
        }
        Call::Delete { final_snapshot } => {
            fx.leader_aws
                .delete_db_instance(region, &s.instance, final_snapshot.as_deref())
                .await
        }
        Call::CreateReplica => {
            // The engine requests a replica only with recorded settings.
            let Some(recorded) = recorded else {
                return Answer::failed(
                    false,
                    format!(
                        "{} in {}: no settings recorded for it",
                        s.instance, s.region
                    ),
                );
            };
            let arn = match fx.aws.instance_arn(&s.primary_aws_region, &s.primary).await {
                Ok(Some(arn)) => arn,
                Ok(None) => {
                    return Answer::failed(
                        false,
                        format!(
                            "the primary {} in {} does not exist",
                            s.primary, s.primary_aws_region
                        ),
                    );
                }
                Err(e) => {
                    return Answer::failed(
                        e.is_retryable(),
                        format!("describing {}: {e}", s.primary),
                    );
                }
            };
            fx.leader_aws
                .create_read_replica(region, &s.instance, &arn, &settings::to_send(s, recorded))
                .await
        }
    };
    judge(s, send, answer.map_err(|e| (e.is_retryable(), e.message)))
}
