//! Controller glue: watches plans and failovers, validates, and writes status.
//! Decisions live in `validate` and `conditions`; this module only does I/O.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use futures::{StreamExt, future::join_all};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::{
    DisasterRecoveryPlan, DisasterRecoveryPlanStatus, Failover, FailoverApproval, FailoverPhase,
    FailoverStatus, RegionStatus, ReplicationStatus,
};
use crate::conditions::{self, DesiredCondition};
use crate::context::Context;
use crate::engine::Lag;
use crate::error::{Error, Result};
use crate::http::Readiness;
use crate::leadership::LeaderClusters;
use crate::metrics::{ControllerLabels, ErrorLabels, PlanLabels};
use crate::ratelimit::CallPriority;
use crate::runner::Runner;
use crate::store::{FIELD_MANAGER, apply_status};
use crate::validate::{self, SecretsSeen};

fn now() -> Timestamp {
    Timestamp::now()
}

/// Kubeconfig Secrets as just read, by namespace and name, with only the keys the plan
/// uses, for the check's clients.
type ReadSecrets = HashMap<(String, String), k8s_openapi::api::core::v1::Secret>;

/// Looks up every Secret the plan references. Missing or forbidden Secrets become
/// validation problems; other API errors fail the reconcile so it is retried. The Secrets
/// found are returned too, so the region check builds its clients without reading them
/// again.
async fn lookup_secrets(
    ctx: &Context,
    plan: &DisasterRecoveryPlan,
    ns: &str,
) -> Result<(SecretsSeen, ReadSecrets)> {
    let mut seen = SecretsSeen::new();
    let mut read = ReadSecrets::new();
    // The keys the plan uses of each Secret: only those are kept for the clients.
    let mut used: HashMap<(String, String), BTreeSet<String>> = HashMap::new();
    for (_, secret_ns, secret) in validate::secret_refs(&plan.spec, ns) {
        used.entry((secret_ns, secret.name.clone()))
            .or_default()
            .insert(secret.key_or_default().to_string());
    }
    for (_, secret_ns, secret) in validate::secret_refs(&plan.spec, ns) {
        let key = (secret_ns.clone(), secret.name.clone());
        if seen.contains_key(&key) {
            continue;
        }
        let api =
            Api::<k8s_openapi::api::core::v1::Secret>::namespaced(ctx.client.clone(), &secret_ns);
        let found = match api.get_opt(&secret.name).await {
            Ok(Some(s)) => {
                let mut data = s.data.unwrap_or_default();
                let keys = data.keys().cloned().collect::<BTreeSet<String>>();
                let wanted = used.get(&key);
                data.retain(|k, _| wanted.is_some_and(|w| w.contains(k)));
                read.insert(
                    key.clone(),
                    k8s_openapi::api::core::v1::Secret {
                        data: Some(data),
                        ..Default::default()
                    },
                );
                Ok(keys)
            }
            Ok(None) => Err("not found".to_string()),
            Err(kube::Error::Api(status)) if status.code == 403 => {
                Err(format!("forbidden: {}", status.message))
            }
            Err(e) => return Err(e.into()),
        };
        seen.insert(key, found);
    }
    Ok((seen, read))
}

async fn check_regions(
    ctx: &Context,
    plan: &DisasterRecoveryPlan,
    ns: &str,
    read: ReadSecrets,
) -> Vec<RegionStatus> {
    let timeout = ctx.config.member_timeout;
    // The clients are built anew each check from the Secrets this check read (a rotated
    // or broken one shows here at once), and shared so that a failover's first pass finds
    // them ready.
    let clusters = ctx.member_clusters(&plan.spec, ns).refreshing(read);
    let clusters = &clusters;
    let checks = plan.spec.regions.iter().map(|region| async move {
        let outcome = clusters.check_region(&region.name);
        let result = match tokio::time::timeout(timeout * 2, outcome).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {}s", (timeout * 2).as_secs())),
        };
        let (ready, message) = match result {
            Ok(version) => (true, format!("reachable, {version}")),
            Err(e) => (false, e),
        };
        RegionStatus {
            name: region.name.clone(),
            ready,
            message: Some(message),
            last_checked: Some(Time(now())),
        }
    });
    join_all(checks).await
}

/// Replication of every database into every standby region: the lag (known only when
/// ≥ 0 and fresh), and whether the standby replicates from the active region's primary at
/// all. One attempt each, bounded by the member timeout: the next check retries, and errors
/// are reported verbatim. Each standby's protection comes from the re-protection check,
/// which also moves re-protection on (`reprotect`).
async fn measure_replication(
    ctx: &Context,
    plan: &DisasterRecoveryPlan,
    ns: &str,
) -> Vec<ReplicationStatus> {
    let Some(active) = crate::engine::active_region(plan) else {
        return Vec::new();
    };
    let plan_labels = PlanLabels {
        namespace: ns.to_string(),
        plan: plan.name_any(),
    };
    let standby = || plan.spec.regions.iter().filter(|r| r.name != active);
    let pairs = plan.spec.databases.iter().flat_map(|db| {
        standby().filter_map(move |r| Some((db, r, crate::engine::lag_source(db, &r.name)?)))
    });
    let max_age = plan.spec.objectives.max_lag_age();
    let measurements = pairs.map(|(db, region, source)| async move {
        let limit = ctx.config.member_timeout;
        let lag =
            tokio::time::timeout(limit, ctx.aws.replica_lag(&region.aws_region, &source)).await;
        let fresh_after = crate::engine::lag::fresh_after(SystemTime::now(), max_age, None);
        let (lag_seconds, lag_message) = match lag {
            Ok(Ok(reading)) => match crate::engine::lag::judge(reading.as_ref(), fresh_after) {
                Lag::Known(l) => (Some(l), None),
                Lag::Unknown(why) => (None, Some(format!("lag unknown: {why}"))),
            },
            Ok(Err(e)) => (None, Some(e.message)),
            Err(_) => (None, Some("timed out reading the lag".into())),
        };
        ReplicationStatus {
            database: db.name.clone(),
            region: region.name.clone(),
            lag_seconds,
            protected: None,
            protection: None,
            message: lag_message,
            measured_at: Some(Time(now())),
            old_volume_snapshot: None,
        }
    });
    let mut measured = join_all(measurements).await;
    // The active region is no standby: a lag it showed before a failover is not shown.
    for db in &plan.spec.databases {
        ctx.metrics
            .forget_standby_lag(&plan_labels, &db.name, &active);
    }
    let lag_known = measured
        .iter()
        .map(|m| {
            (
                (m.database.clone(), m.region.clone()),
                m.lag_seconds.is_some(),
            )
        })
        .collect();
    let (protections, mut old_volumes) = tokio::join!(
        crate::reprotect::check(ctx, plan, ns, &active, &lag_known),
        crate::old_volume::snapshots(ctx, plan)
    );
    for m in &mut measured {
        m.old_volume_snapshot = old_volumes.remove(&(m.database.clone(), m.region.clone()));
        let (protection, why) = match protections.get(&(m.database.clone(), m.region.clone())) {
            Some((p, why)) => (*p, why.clone()),
            // Aurora secondaries follow the global writer: protected while they replicate.
            None if m.lag_seconds.is_some() => ("Protected", None),
            None => ("Unprotected", None),
        };
        m.protected = Some(protection == "Protected");
        m.protection = Some(protection.to_string());
        // A standby being re-protected (or left to be) has no lag to know: the
        // re-protection alert covers it, not the unknown-lag one.
        let reprotecting = protections
            .get(&(m.database.clone(), m.region.clone()))
            .is_some_and(|(p, _)| *p != "Protected");
        ctx.metrics.set_standby_lag(
            &plan_labels,
            &m.database,
            &m.region,
            m.lag_seconds,
            !reprotecting,
        );
        let message: Vec<String> = [why, m.message.take()].into_iter().flatten().collect();
        m.message = (!message.is_empty()).then(|| message.join("; "));
    }
    measured
}

/// Under rate limits a failover's AWS calls go before plan checks', by plan priority.
fn failover_priority(plan: &DisasterRecoveryPlan) -> CallPriority {
    CallPriority {
        failover: true,
        plan: plan.spec.call_priority(),
        mutating: false,
    }
}

/// Validates a plan, checks its regions, and writes status; its AWS calls queue behind
/// failovers' under rate limits, ordered by plan priority among plan checks.
pub async fn reconcile_plan(plan: Arc<DisasterRecoveryPlan>, ctx: Arc<Context>) -> Result<Action> {
    let priority = CallPriority {
        failover: false,
        plan: plan.spec.call_priority(),
        mutating: false,
    };
    priority.scope(check_plan(plan, ctx)).await
}

async fn check_plan(plan: Arc<DisasterRecoveryPlan>, ctx: Arc<Context>) -> Result<Action> {
    let ns = plan.namespace().ok_or(Error::MissingNamespace)?;
    let name = plan.name_any();
    let api: Api<DisasterRecoveryPlan> = Api::namespaced(ctx.client.clone(), &ns);
    let previous = plan.status.clone().unwrap_or_default();
    let generation = plan.metadata.generation;
    let labels = PlanLabels {
        namespace: ns.clone(),
        plan: name.clone(),
    };
    ctx.metrics.init_plan(&labels);

    let (secrets, read_secrets) = lookup_secrets(&ctx, &plan, &ns).await?;
    let problems = validate::validate_plan(&plan.spec, &ns, Some(&secrets));
    let valid = problems.is_empty();
    // activeRegion, previousActiveRegion and lastFailover belong to the failover driver's field manager; this
    // apply leaves them out so a stale cache can never overwrite them.
    let mut status = DisasterRecoveryPlanStatus {
        active_region: None,
        previous_active_region: None,
        regions: previous.regions.clone(),
        conditions: previous.conditions.clone(),
        observed_generation: generation,
        last_failover: None,
        last_unplanned_move: None,
        replication: previous.replication.clone(),
        pending_fences: Vec::new(),
        reprotections: Vec::new(),
        step_durations: Vec::new(),
        // Owned by crate::automatic's field manager; left out here.
        automatic_failover: None,
        // Owned by crate::drill's field manager; left out here.
        drills: None,
    };
    let valid_message = if valid {
        "plan is valid".to_string()
    } else {
        validate::summarize(&problems)
    };
    status.conditions = conditions::upsert(
        &status.conditions,
        DesiredCondition {
            type_: "Valid",
            status: valid,
            reason: if valid { "Valid" } else { "Invalid" },
            message: valid_message.clone(),
        },
        generation,
        now(),
    );
    // Probes only measure: their problems are their own condition, and refuse nothing.
    let probe_problems = validate::probe_problems(&plan.spec);
    let probes_message = if probe_problems.is_empty() {
        "probes are valid".to_string()
    } else {
        validate::summarize(&probe_problems)
    };
    let has_probes = plan.spec.regions.iter().any(|r| !r.probes.is_empty());
    if has_probes || conditions::find(&status.conditions, "ProbesValid").is_some() {
        status.conditions = conditions::upsert(
            &status.conditions,
            DesiredCondition {
                type_: "ProbesValid",
                status: probe_problems.is_empty(),
                reason: if probe_problems.is_empty() {
                    "Valid"
                } else {
                    "Invalid"
                },
                message: probes_message.clone(),
            },
            generation,
            now(),
        );
    }

    // Pending fences are carried out whether or not the plan is valid: a returning region
    // must be fenced all the same.
    // Fencing a returning region is a failover's work: its calls queue with failovers'.
    let fencing = failover_priority(&plan).scope(crate::fencing::carry_out(&ctx, &plan, &ns));
    let (ready, ready_reason, ready_message, fences) = if valid {
        if previous.active_region.is_none() {
            let initial = crate::engine::active_region(&plan);
            crate::store::update_failover_fields(&api, &name, |f| {
                f.active_region = f.active_region.clone().or(initial.clone())
            })
            .await?;
        }
        let (regions, replication, fences) = tokio::join!(
            check_regions(&ctx, &plan, &ns, read_secrets),
            measure_replication(&ctx, &plan, &ns),
            fencing
        );
        status.regions = regions;
        status.replication = replication;
        let not_ready: Vec<String> = status
            .regions
            .iter()
            .filter(|r| !r.ready)
            .map(|r| {
                format!(
                    "{}: {}",
                    r.name,
                    r.message.as_deref().unwrap_or("not ready")
                )
            })
            .collect();
        // A failback needs every standby protected: replicating from the active primary.
        let unprotected: Vec<&ReplicationStatus> = status
            .replication
            .iter()
            .filter(|r| r.protection.as_deref() != Some("Protected"))
            .collect();
        if !not_ready.is_empty() {
            (false, "RegionsNotReady", not_ready.join("; "), fences)
        } else if !unprotected.is_empty() {
            let reprotecting = unprotected
                .iter()
                .all(|r| r.protection.as_deref() == Some("Reprotecting"));
            let what: Vec<String> = unprotected
                .iter()
                .map(|r| {
                    format!(
                        "{} in {} {}{}",
                        r.database,
                        r.region,
                        r.protection.as_deref().unwrap_or("Unprotected"),
                        r.message
                            .as_deref()
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            (
                false,
                if reprotecting {
                    "Reprotecting"
                } else {
                    "Unprotected"
                },
                format!("a failback is not possible now: {}", what.join("; ")),
                fences,
            )
        } else {
            (
                true,
                "RegionsReady",
                "every region is reachable and has every workload, and every standby is \
                 protected"
                    .to_string(),
                fences,
            )
        }
    } else {
        (
            false,
            "PlanInvalid",
            "plan is not valid".to_string(),
            fencing.await,
        )
    };
    let (fence_pending, fence_reason, fence_message) = crate::engine::fence::condition(&fences);
    status.conditions = conditions::upsert(
        &status.conditions,
        DesiredCondition {
            type_: "FencePending",
            status: fence_pending,
            reason: fence_reason,
            message: fence_message,
        },
        generation,
        now(),
    );
    status.conditions = conditions::upsert(
        &status.conditions,
        DesiredCondition {
            type_: "Ready",
            status: ready,
            reason: ready_reason,
            message: ready_message.clone(),
        },
        generation,
        now(),
    );

    ctx.metrics
        .plan_valid
        .get_or_create(&labels)
        .set(valid.into());
    ctx.metrics
        .plan_ready
        .get_or_create(&labels)
        .set(ready.into());
    let unprotected = status
        .replication
        .iter()
        .filter(|r| r.protected == Some(false))
        .count();
    for (family, value) in [
        (&ctx.metrics.plan_pending_fences, fences.len()),
        (&ctx.metrics.plan_unprotected_standbys, unprotected),
    ] {
        family
            .get_or_create(&labels)
            .set(i64::try_from(value).unwrap_or(i64::MAX));
    }
    for (family, objective) in [
        (&ctx.metrics.plan_rto, &plan.spec.objectives.rto),
        (&ctx.metrics.plan_rpo, &plan.spec.objectives.rpo),
    ] {
        if let Ok(d) = crate::validate::parse_duration(objective) {
            family.get_or_create(&labels).set(d.as_secs_f64());
        }
    }

    let changed = |type_: &str, message: &str| {
        conditions::find(&previous.conditions, type_)
            .map(|c| c.message != message || c.observed_generation != generation)
            .unwrap_or(true)
    };
    if !probe_problems.is_empty() && changed("ProbesValid", &probes_message) {
        warn!(plan = %name, namespace = %ns, problems = %probes_message, "plan's probes are invalid");
        ctx.publish(
            &*plan,
            EventType::Warning,
            "InvalidProbes",
            "Reconcile",
            format!(
                "{probes_message}; failovers go ahead without measuring the recovery time users see"
            ),
        )
        .await;
    }
    if !valid && changed("Valid", &valid_message) {
        warn!(plan = %name, namespace = %ns, problems = %valid_message, "plan is invalid");
        ctx.publish(
            &*plan,
            EventType::Warning,
            "InvalidPlan",
            "Reconcile",
            valid_message,
        )
        .await;
    } else if valid && changed("Ready", &ready_message) {
        let type_ = if ready {
            EventType::Normal
        } else {
            EventType::Warning
        };
        let reason = if ready { "PlanReady" } else { "PlanNotReady" };
        info!(plan = %name, namespace = %ns, ready, message = %ready_message, "plan checked");
        ctx.publish(&*plan, type_, reason, "Reconcile", ready_message.clone())
            .await;
    }

    if let Some(drills) = &plan.spec.drills {
        let overdue = crate::engine::drill::overdue(
            drills,
            &plan
                .status
                .as_ref()
                .and_then(|s| s.drills.clone())
                .unwrap_or_default(),
            plan.metadata.creation_timestamp.as_ref().map(|t| t.0),
            now(),
        );
        ctx.metrics
            .plan_drill_overdue
            .get_or_create(&labels)
            .set(overdue.is_some().into());
        status.conditions = conditions::upsert(
            &status.conditions,
            DesiredCondition {
                type_: "DrillOverdue",
                status: overdue.is_some(),
                reason: if overdue.is_some() {
                    "NoRecentDrill"
                } else {
                    "DrillRecent"
                },
                message: overdue.unwrap_or_else(|| {
                    "a drill succeeded within spec.drills.requiredInterval, or none is required"
                        .into()
                }),
            },
            generation,
            now(),
        );
    }
    let written = apply_status(&api, &name, FIELD_MANAGER, &status).await?;
    // The active region as the API server holds it now: the cached copy this reconcile
    // started from may predate a failover that just moved it.
    if let Some(active) = written
        .status
        .and_then(|s| s.active_region)
        .or_else(|| crate::engine::active_region(&plan))
    {
        let regions = plan.spec.regions.iter().map(|r| r.name.as_str());
        ctx.metrics.set_active_region(&labels, regions, &active);
    }
    let reprotecting = status
        .replication
        .iter()
        .any(|r| r.protection.as_deref() == Some("Reprotecting"));
    let resync = if fences.is_empty() && !reprotecting {
        ctx.config.plan_resync
    } else {
        ctx.config.plan_resync.min(crate::fencing::PENDING_RECHECK)
    };
    // Evaluated after the status above is written; requeued by its interval.
    // Health signals decide whether to fail over: read with failovers' priority.
    let automatic = failover_priority(&plan)
        .scope(crate::automatic::reconcile(&ctx, &plan, &ns, valid))
        .await?;
    let ready_now = if ready {
        Ok(())
    } else {
        Err(ready_message.clone())
    };
    let drills = crate::drill::reconcile(&ctx, &plan, &ns, ready_now).await;
    let next = [automatic, drills].into_iter().flatten().min();
    Ok(Action::requeue(
        next.map_or(resync, |next| resync.min(next)),
    ))
}

/// Drives a Failover: flags edited specs, otherwise runs (or resumes) its steps.
pub async fn reconcile_failover(fo: Arc<Failover>, ctx: Arc<Context>) -> Result<Action> {
    let ns = fo.namespace().ok_or(Error::MissingNamespace)?;
    let api: Api<Failover> = Api::namespaced(ctx.client.clone(), &ns);
    let cached_phase = fo.status.as_ref().and_then(|s| s.phase);
    if cached_phase.is_some_and(FailoverPhase::is_terminal)
        && fo.metadata.generation <= Some(1)
        && !crate::probes::settling(&fo, std::time::SystemTime::now())
    {
        return Ok(Action::await_change());
    }
    // The cache may lag behind this operator's own last write: decide and drive from a
    // fresh read, whose resourceVersion every status write of the runner is conditional on.
    let Some(mut fo) = api.get_opt(&fo.name_any()).await? else {
        ctx.forget_failover(&fo.uid().unwrap_or_default());
        return Ok(Action::await_change());
    };
    let status = fo.status.clone().unwrap_or_default();
    let generation = fo.metadata.generation;
    // Spec edits bump the generation; the CRD rule stops them on servers with CEL.
    if generation.unwrap_or(1) > 1 {
        match (status.phase, status.admitted_spec.clone()) {
            // Running: it goes on with the spec it was admitted with; the runner flags the
            // edit in its own (conditional) status write.
            (Some(p), Some(admitted)) if p.is_admitted() => fo.spec = admitted,
            (phase, _) => {
                let message = format!(
                    "spec was edited (generation {}); {}",
                    generation.unwrap_or_default(),
                    crate::api::SPEC_IMMUTABLE_MESSAGE
                );
                let phase = match phase {
                    Some(p) if p.is_terminal() || p.is_admitted() => p,
                    _ => FailoverPhase::Rejected,
                };
                flag_failover(&ctx, &fo, &api, phase, "SpecEdited", message).await?;
                return Ok(Action::await_change());
            }
        }
    }
    if status.phase.is_some_and(FailoverPhase::is_terminal) {
        if crate::probes::settling(&fo, std::time::SystemTime::now())
            && let Some(snapshot) = status.plan_snapshot.clone()
        {
            return settle_probes(&ctx, fo, snapshot.spec, &ns).await;
        }
        return Ok(Action::await_change());
    }

    let plans: Api<DisasterRecoveryPlan> = Api::namespaced(ctx.client.clone(), &ns);
    // An admitted failover runs the plan it was admitted with, whatever happened to it since,
    // so only admission reads the live plan.
    let snapshot = fo.status.as_ref().and_then(|s| s.plan_snapshot.clone());
    let live = match snapshot {
        Some(_) => None,
        None => plans.get_opt(&fo.spec.plan_ref).await?,
    };
    let plan = match snapshot {
        Some(snapshot) => Some(snapshot_plan(&fo, snapshot.spec, &ns)),
        None => live,
    };
    let Some(plan) = plan else {
        let message = format!(
            "spec.planRef: DisasterRecoveryPlan {ns}/{} not found",
            fo.spec.plan_ref
        );
        flag_failover(
            &ctx,
            &fo,
            &api,
            FailoverPhase::Pending,
            "PlanNotFound",
            message,
        )
        .await?;
        return Ok(Action::requeue(ctx.config.plan_resync));
    };
    // Only admission looks at the other Failovers.
    let running = fo
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(FailoverPhase::is_admitted);
    let siblings = if running {
        Vec::new()
    } else {
        api.list(&Default::default()).await?.items
    };
    let uid = fo.uid().unwrap_or_default();
    let version = fo.metadata.resource_version.clone();
    let results = ctx.take_results(&uid, &version);
    let priority = failover_priority(&plan);
    let runner = runner_for(&ctx, plan, fo, &ns);
    let look = ctx.take_promotion_look(&uid);
    let pass = priority.scope(runner.pass(siblings, results, look)).await?;
    ctx.keep_results(&uid, pass.resource_version, pass.results);
    ctx.keep_promotion_look(&uid, pass.promotion_look);
    Ok(match pass.requeue {
        None => {
            ctx.forget_failover(&uid);
            Action::await_change()
        }
        Some(after) => Action::requeue(after),
    })
}

/// The plan a Failover runs, from its admitted snapshot.
fn snapshot_plan(
    fo: &Failover,
    spec: crate::api::DisasterRecoveryPlanSpec,
    ns: &str,
) -> DisasterRecoveryPlan {
    let mut plan = DisasterRecoveryPlan::new(&fo.spec.plan_ref, spec);
    plan.metadata.namespace = Some(ns.to_string());
    plan
}

/// A runner of `fo` on `plan`, its region clusters behind the leader check.
fn runner_for(ctx: &Arc<Context>, plan: DisasterRecoveryPlan, fo: Failover, ns: &str) -> Runner {
    let clusters = Arc::new(LeaderClusters {
        inner: ctx.member_clusters(&plan.spec, ns),
        leadership: ctx.leadership.clone(),
    });
    Runner::new(ctx.clone(), ctx.aws.clone(), clusters, plan, fo)
}

/// A successful Failover still waiting for its target's probes to answer: one more poll's
/// record written, and looked at again soon until it is final.
async fn settle_probes(
    ctx: &Arc<Context>,
    fo: Failover,
    spec: crate::api::DisasterRecoveryPlanSpec,
    ns: &str,
) -> Result<Action> {
    let plan = snapshot_plan(&fo, spec, ns);
    let uid = fo.uid().unwrap_or_default();
    Ok(match runner_for(ctx, plan, fo, ns).settle().await? {
        Some(after) => Action::requeue(after),
        None => {
            ctx.forget_failover(&uid);
            Action::await_change()
        }
    })
}

/// Sets `Valid=False` with `reason` on a failover the driver cannot run, with a Warning
/// Event, unless status already says so.
async fn flag_failover(
    ctx: &Context,
    fo: &Failover,
    api: &Api<Failover>,
    phase: FailoverPhase,
    reason: &'static str,
    message: String,
) -> Result<()> {
    let previous = fo.status.clone().unwrap_or_default();
    let generation = fo.metadata.generation;
    let status = FailoverStatus {
        phase: Some(phase),
        conditions: conditions::upsert(
            &previous.conditions,
            DesiredCondition {
                type_: "Valid",
                status: false,
                reason,
                message: message.clone(),
            },
            generation,
            now(),
        ),
        observed_generation: generation,
        ..previous.clone()
    };
    if status != previous {
        warn!(failover = %fo.name_any(), %message, reason, "failover not run");
        ctx.publish(fo, EventType::Warning, reason, "Reconcile", message)
            .await;
        apply_status(api, &fo.name_any(), FIELD_MANAGER, &status).await?;
    }
    Ok(())
}

fn error_policy<K>(controller: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |_obj, error, ctx| {
        warn!(controller, error = %error, "reconcile failed; retrying");
        ctx.metrics
            .reconcile_errors
            .get_or_create(&ErrorLabels {
                controller,
                error: error.metric_label(),
            })
            .inc();
        Action::requeue(Duration::from_secs(5))
    }
}

/// Waits until the drover.io CRDs are served, logging while they are not.
/// Lists only in the watched namespace when there is one, so a namespaced install needs no
/// cluster-wide read.
pub async fn wait_for_crds(client: &Client, namespace: &Option<String>, readiness: &Readiness) {
    let mut logged = false;
    loop {
        let plans = scoped_api::<DisasterRecoveryPlan>(client, namespace);
        let failovers = scoped_api::<Failover>(client, namespace);
        let approvals = scoped_api::<FailoverApproval>(client, namespace);
        let probe = ListParams::default().limit(1);
        let (plans, failovers, approvals) = tokio::join!(
            plans.list_metadata(&probe),
            failovers.list_metadata(&probe),
            approvals.list_metadata(&probe)
        );
        match (plans, failovers, approvals) {
            (Ok(_), Ok(_), Ok(_)) => {
                readiness.crds_present.store(true, Ordering::Release);
                info!("drover.io CRDs are installed");
                return;
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                readiness.crds_present.store(false, Ordering::Release);
                if !logged {
                    warn!(error = %crate::error::kube_message(&e), "drover.io CRDs are not served; not ready until they are installed (`drover crds | kubectl create -f -`)");
                    logged = true;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// `K` in the watched namespace, or in all namespaces.
fn scoped_api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A controller for `K` in the watched namespace (or all). Only spec changes (generation)
/// trigger reconciles, so the controller's own status writes do not loop back; periodic
/// requeues cover changes elsewhere (Secrets, member clusters).
fn controller_for<K>(
    client: &Client,
    namespace: &Option<String>,
    predicate: impl kube::runtime::utils::Predicate<K> + Send + 'static,
) -> Controller<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api = scoped_api::<K>(client, namespace);
    let (reader, writer) = reflector::store();
    let changes = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicate, Default::default());
    Controller::for_stream(changes, reader)
}

/// Plans are also reconciled when their pending fences change, so fences recorded by a
/// failover are acted on without waiting for the next resync, and when a failover moves
/// the active region or changes phase, so readiness and protection are judged against the
/// region that serves now.
fn plan_trigger(plan: &DisasterRecoveryPlan) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    plan.metadata.generation.hash(&mut hasher);
    if let Some(status) = &plan.status {
        status.active_region.hash(&mut hasher);
        let last = status.last_failover.as_ref();
        (last.map(|l| &l.name), last.and_then(|l| l.phase.as_ref())).hash(&mut hasher);
    }
    for f in plan.status.iter().flat_map(|s| &s.pending_fences) {
        (&f.region, &f.kind, &f.namespace, &f.name, f.state as u8).hash(&mut hasher);
    }
    Some(hasher.finish())
}

/// Runs both controllers until `shutdown` resolves.
pub async fn run_controllers(
    ctx: Arc<Context>,
    readiness: Arc<Readiness>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let ns = ctx.config.watch_namespace.clone();
    let plans = controller_for::<DisasterRecoveryPlan>(&ctx.client, &ns, plan_trigger)
        .graceful_shutdown_on(shutdown.clone());
    // A new FailoverApproval wakes the Failover it names at once.
    let failovers = controller_for::<Failover>(&ctx.client, &ns, predicates::generation)
        .watches(
            scoped_api::<FailoverApproval>(&ctx.client, &ns),
            watcher::Config::default(),
            |approval| {
                let ns = approval.namespace()?;
                Some(ObjectRef::new(&approval.spec.failover_ref).within(&ns))
            },
        )
        .graceful_shutdown_on(shutdown);

    let plan_store = plans.store();
    let failover_store = failovers.store();
    let synced = {
        let readiness = readiness.clone();
        async move {
            let plans_ready = plan_store.wait_until_ready().await;
            let failovers_ready = failover_store.wait_until_ready().await;
            if plans_ready.is_ok() && failovers_ready.is_ok() {
                readiness.caches_synced.store(true, Ordering::Release);
                info!("caches synced");
            }
        }
    };

    let plan_ctx = ctx.clone();
    let plan_loop = plans
        .run(
            timed("plan", reconcile_plan),
            error_policy("plan"),
            plan_ctx,
        )
        .for_each(|_| async {});
    let failover_loop = failovers
        .run(
            timed("failover", reconcile_failover),
            error_policy("failover"),
            ctx,
        )
        .for_each(|_| async {});
    tokio::join!(synced, plan_loop, failover_loop);
}

/// Wraps a reconciler with count and duration metrics.
fn timed<K, F, Fut>(
    controller: &'static str,
    reconcile: F,
) -> impl Fn(Arc<K>, Arc<Context>) -> futures::future::BoxFuture<'static, Result<Action>>
where
    K: Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Action>> + Send + 'static,
{
    move |obj, ctx| {
        Box::pin(async move {
            let started = Instant::now();
            let labels = ControllerLabels { controller };
            let result = reconcile(obj, ctx.clone()).await;
            ctx.metrics.reconciles.get_or_create(&labels).inc();
            ctx.metrics
                .reconcile_duration
                .get_or_create(&labels)
                .observe(started.elapsed().as_secs_f64());
            result
        })
    }
}
