//! Automatic failover (I/O glue): reads the active region's health signals, decides with
//! `engine::automatic::evaluate`, records `status.automaticFailover` under its own field
//! manager, and creates the Failover it decided on. Called by the plan reconciler.
//!
//! Exactly once per trigger: the decision (with the Failover's deterministic name) is
//! written to the plan status, conditional on the resourceVersion just read, before the
//! Failover is created; a restart finds the intent and creates that same name, and an
//! answer of 409 (already exists) counts as created.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use futures::future::join_all;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;
use serde::Serialize;
use tracing::{info, warn};

use crate::api::{AutomaticFailoverStatus, DisasterRecoveryPlan, Failover};
use crate::context::Context;
use crate::engine::automatic::{
    Evaluation, FailoverSeen, Observed, Read, Reading, Settings, Trigger, created, due_in,
    evaluate, failover_object, reads,
};
use crate::error::Result;
use crate::metrics::{PlanLabels, SignalLabels};
use crate::store::apply_status_at;

/// Field manager of `status.automaticFailover`. Its own manager, so that the plan
/// reconciler's apply (which leaves the field out) never deletes it, and every apply here
/// carries the whole field.
pub const FIELD_MANAGER: &str = "drover-automatic";

/// A reconcile that lost a write race looks again this soon.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Fields<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    automatic_failover: Option<&'a AutomaticFailoverStatus>,
}

/// Writes `status.automaticFailover` (None removes it), conditional on `version`.
/// Returns the new resourceVersion, or None when the plan changed since (409).
async fn write(
    api: &Api<DisasterRecoveryPlan>,
    name: &str,
    status: Option<&AutomaticFailoverStatus>,
    version: Option<&str>,
) -> Result<Option<String>> {
    let fields = Fields {
        automatic_failover: status,
    };
    match apply_status_at(api, name, FIELD_MANAGER, &fields, version).await {
        Ok(plan) => Ok(Some(plan.resource_version().unwrap_or_default())),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads one signal, once, within the member timeout. Errors are Unknown readings.
async fn observe(ctx: &Context, read: &Read) -> Observed {
    let limit = ctx.config.member_timeout;
    let call = async {
        match read {
            Read::HealthCheck { id } => ctx
                .aws
                .health_check_observations(id)
                .await
                .map(Reading::HealthCheck),
            Read::Alarm { aws_region, name } => ctx
                .aws
                .alarm_state(aws_region, name)
                .await
                .map(Reading::Alarm),
            Read::Metric { aws_region, query } => ctx
                .aws
                .metric_datapoint(aws_region, query)
                .await
                .map(Reading::Metric),
        }
        .map_err(|e| e.message)
    };
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", limit.as_secs())))
}

/// Creates the trigger's Failover; one that already exists counts as created.
async fn create(
    ctx: &Context,
    plan: &DisasterRecoveryPlan,
    ns: &str,
    trigger: &Trigger,
) -> Result<()> {
    let api: Api<Failover> = Api::namespaced(ctx.client.clone(), ns);
    let fo = failover_object(&plan.name_any(), ns, trigger);
    match api.create(&PostParams::default(), &fo).await {
        Ok(_) => {
            info!(plan = %plan.name_any(), namespace = %ns, failover = %trigger.failover,
                  target = %trigger.target_region, "automatic failover created");
            ctx.metrics
                .automatic_failovers
                .get_or_create(&PlanLabels {
                    namespace: ns.to_string(),
                    plan: plan.name_any(),
                })
                .inc();
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The trigger recorded in status whose Failover is not confirmed created, as a Trigger
/// (mode and data-loss policy as the plan says now).
fn recorded_trigger(
    plan: &DisasterRecoveryPlan,
    status: &AutomaticFailoverStatus,
) -> Option<Trigger> {
    let t = status.last_trigger.as_ref().filter(|t| !t.created)?;
    let auto = plan.spec.automatic_failover.clone().unwrap_or_default();
    Some(Trigger {
        failover: t.failover.clone(),
        source_region: t.source_region.clone(),
        target_region: t.target_region.clone(),
        mode: match auto.mode {
            crate::api::AutomaticFailoverMode::Planned => crate::api::FailoverMode::Planned,
            crate::api::AutomaticFailoverMode::Unplanned => crate::api::FailoverMode::Unplanned,
        },
        allow_data_loss: auto.allow_data_loss,
        max_data_loss: auto.max_data_loss,
        signals: t.signals.clone(),
    })
}

/// Sets the per-signal gauges, and removes the series of signals gone from the plan.
fn export(ctx: &Context, ns: &str, plan: &str, before: &[String], now: &AutomaticFailoverStatus) {
    let labels = |signal: &str| SignalLabels {
        namespace: ns.to_string(),
        plan: plan.to_string(),
        signal: signal.to_string(),
    };
    for s in &now.signals {
        ctx.metrics
            .automatic_consecutive_bad
            .get_or_create(&labels(&s.name))
            .set(s.consecutive_bad.into());
    }
    for gone in before
        .iter()
        .filter(|b| !now.signals.iter().any(|s| &s.name == *b))
    {
        ctx.metrics.automatic_consecutive_bad.remove(&labels(gone));
    }
}

/// Evaluates the plan's automatic failover when it is due, and returns when to look
/// again (None when the plan has none).
pub async fn reconcile(
    ctx: &Context,
    plan: &DisasterRecoveryPlan,
    ns: &str,
    valid: bool,
) -> Result<Option<Duration>> {
    let name = plan.name_any();
    let api: Api<DisasterRecoveryPlan> = Api::namespaced(ctx.client.clone(), ns);
    let plan_labels = PlanLabels {
        namespace: ns.to_string(),
        plan: name.clone(),
    };
    let cached = plan
        .status
        .as_ref()
        .and_then(|s| s.automatic_failover.clone());
    let before: Vec<String> = cached
        .iter()
        .flat_map(|s| s.signals.iter().map(|s| s.name.clone()))
        .collect();
    let Some(auto) = &plan.spec.automatic_failover else {
        if cached.is_some() {
            write(&api, &name, None, None).await?;
        }
        ctx.metrics.automatic_paused.remove(&plan_labels);
        export(ctx, ns, &name, &before, &AutomaticFailoverStatus::default());
        return Ok(None);
    };
    let interval = Settings::of(auto).interval;
    ctx.metrics
        .automatic_paused
        .get_or_create(&plan_labels)
        .set((auto.paused || ctx.config.pause_automatic_failover).into());

    // The intent decides what is created, so it is read fresh, not from the cache.
    let fresh = api.get_status(&name).await?;
    let mut version = fresh.resource_version();
    let status = fresh.status.clone().unwrap_or_default();
    let mut previous = status.automatic_failover.clone();

    if let Some(trigger) = previous.as_ref().and_then(|p| recorded_trigger(plan, p)) {
        if let Err(e) = ctx.leadership.confirm().await {
            warn!(plan = %name, error = %e, "not creating the automatic failover: not the leader");
            return Ok(Some(interval));
        }
        create(ctx, plan, ns, &trigger).await?;
        let done = previous.take().map(created);
        match write(&api, &name, done.as_ref(), version.as_deref()).await? {
            Some(v) => version = Some(v),
            None => return Ok(Some(RETRY)),
        }
        previous = done;
    }

    if !valid {
        let mut shown = previous.clone().unwrap_or_default();
        let message = Some("Not evaluated: the plan is not valid.".to_string());
        if shown.message != message {
            shown.message = message;
            write(&api, &name, Some(&shown), version.as_deref()).await?;
        }
        return Ok(Some(interval));
    }
    let now = SystemTime::now();
    if let Some(wait) = due_in(auto, previous.as_ref(), now) {
        return Ok(Some(wait));
    }

    let Some(active) = status
        .active_region
        .clone()
        .or_else(|| crate::engine::active_region(plan))
    else {
        return Ok(Some(interval));
    };
    let wanted = reads(&plan.spec, &active);
    let readings = join_all(wanted.iter().map(|(_, read)| observe(ctx, read))).await;
    let observed: BTreeMap<String, Observed> = wanted
        .into_iter()
        .map(|(signal, _)| signal)
        .zip(readings)
        .collect();
    let failovers: Vec<FailoverSeen> = Api::<Failover>::namespaced(ctx.client.clone(), ns)
        .list(&Default::default())
        .await?
        .items
        .iter()
        .map(FailoverSeen::of)
        .collect();
    let Some(outcome) = evaluate(&Evaluation {
        plan_name: &name,
        spec: &plan.spec,
        previous: previous.as_ref(),
        active_region: &active,
        previous_active_region: status.previous_active_region.as_deref(),
        observed: &observed,
        failovers: &failovers,
        now: SystemTime::now(),
        operator_paused: ctx.config.pause_automatic_failover,
    }) else {
        return Ok(None);
    };
    export(ctx, ns, &name, &before, &outcome.status);

    let Some(trigger) = outcome.trigger else {
        if previous.as_ref().and_then(|p| p.message.as_ref()) != outcome.status.message.as_ref() {
            info!(plan = %name, namespace = %ns,
                  message = outcome.status.message.as_deref().unwrap_or_default(),
                  "automatic failover evaluated");
        }
        return Ok(Some(
            match write(&api, &name, Some(&outcome.status), version.as_deref()).await? {
                Some(_) => interval,
                None => RETRY,
            },
        ));
    };
    // A deposed leader records nothing and creates nothing.
    if let Err(e) = ctx.leadership.confirm().await {
        warn!(plan = %name, error = %e, "not triggering an automatic failover: not the leader");
        return Ok(Some(interval));
    }
    let message = outcome.status.message.clone().unwrap_or_default();
    let Some(version) = write(&api, &name, Some(&outcome.status), version.as_deref()).await? else {
        // The plan changed since it was read: decide again on a fresh read.
        return Ok(Some(RETRY));
    };
    warn!(plan = %name, namespace = %ns, failover = %trigger.failover, %message,
          "automatic failover triggered");
    ctx.publish(
        plan,
        EventType::Warning,
        "AutomaticFailover",
        "Trigger",
        message,
    )
    .await;
    create(ctx, plan, ns, &trigger).await?;
    // If this write is lost, the next reconcile finds the Failover (409) and records it.
    if let Err(e) = write(&api, &name, Some(&created(outcome.status)), Some(&version)).await {
        warn!(plan = %name, error = %e, "could not record the automatic failover as created");
    }
    Ok(Some(interval))
}
