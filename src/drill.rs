//! Drills (I/O glue), run by the plan check: reads the plan's drill Failovers, decides
//! (`engine::drill`), records the decision in `status.drills` (conditional on the plan's
//! resourceVersion) before it creates the next drill Failover, and deletes drill Failovers
//! beyond the history kept.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use tracing::warn;

use crate::api::{
    DisasterRecoveryPlan, DrillKind, DrillsStatus, Failover, FailoverSpec, StepState,
};
use crate::context::Context;
use crate::engine::approval::TRIGGER_LABEL;
use crate::engine::drill::{self, FailoverSeen, Input, NewFailover, SCHEDULE_LABEL, STAGE_LABEL};
use crate::store::apply_status_at;

/// Field manager of `status.drills`: its own, so the plan reconciler's apply (which leaves
/// the field out) never deletes it.
pub const FIELD_MANAGER: &str = "drover-drills";
/// The annotation `drover drill` sets with the drill's kind.
pub const KIND_ANNOTATION: &str = "drover.io/drill-kind";

#[derive(Serialize)]
struct Fields<'a> {
    drills: &'a DrillsStatus,
}

fn seen(fo: &Failover) -> FailoverSeen {
    let status = fo.status.clone().unwrap_or_default();
    let label = |k: &str| fo.labels().get(k).cloned();
    FailoverSeen {
        name: fo.name_any(),
        phase: status.phase,
        rto_seconds: status.timings.as_ref().and_then(|t| t.total_seconds),
        user_visible_seconds: status
            .user_visible
            .as_ref()
            .and_then(|u| u.recovery_seconds),
        probes_pending: crate::probes::settling(fo, std::time::SystemTime::now()),
        data_loss_seconds: status.data_loss.as_ref().map(|d| d.max_lag_seconds),
        failed_step: status
            .steps
            .iter()
            .find(|s| s.state == StepState::Failed)
            .map(|s| (s.name.clone(), s.message.clone().unwrap_or_default())),
        schedule: label(SCHEDULE_LABEL),
        kind: fo
            .annotations()
            .get(KIND_ANNOTATION)
            .and_then(|k| serde_json::from_value(serde_json::Value::String(k.clone())).ok()),
        stage: label(STAGE_LABEL),
        target: fo.spec.target_region.clone(),
        source: status.source_region.clone(),
        created: fo.metadata.creation_timestamp.as_ref().map(|t| t.0),
    }
}

/// A drill Failover of `plan`, labelled and owned by it (deleted with it).
pub fn drill_failover(
    plan: &DisasterRecoveryPlan,
    name: &str,
    target: &str,
    mode: crate::api::FailoverMode,
    schedule: &str,
    stage: &str,
    kind: DrillKind,
) -> Failover {
    let mut fo = Failover::new(name, FailoverSpec::new(&plan.name_any(), target, mode));
    fo.metadata = ObjectMeta {
        name: Some(name.to_string()),
        namespace: plan.namespace(),
        labels: Some(
            [
                (TRIGGER_LABEL.to_string(), "drill".to_string()),
                (SCHEDULE_LABEL.to_string(), schedule.to_string()),
                (STAGE_LABEL.to_string(), stage.to_string()),
            ]
            .into_iter()
            .collect(),
        ),
        annotations: Some(
            [(KIND_ANNOTATION.to_string(), format!("{kind:?}"))]
                .into_iter()
                .collect(),
        ),
        owner_references: plan.controller_owner_ref(&()).map(|r| {
            vec![OwnerReference {
                controller: Some(false),
                block_owner_deletion: Some(false),
                ..r
            }]
        }),
        ..Default::default()
    };
    fo
}

/// Moves the plan's drills on. `ready` is the plan's Ready condition just written. Returns
/// when to look again, if sooner than the resync.
pub async fn reconcile(
    ctx: &Context,
    plan: &DisasterRecoveryPlan,
    ns: &str,
    ready: Result<(), String>,
) -> Option<Duration> {
    let spec = plan.spec.drills.clone().unwrap_or_default();
    let cached = plan.status.as_ref().and_then(|s| s.drills.clone());
    if spec.schedules.is_empty() && cached.is_none() {
        return None;
    }
    match round(ctx, plan, ns, &spec, ready).await {
        Ok(requeue) => requeue,
        Err(e) => {
            warn!(plan = %plan.name_any(), error = %crate::error::Error::from(e), "drills: could not read or record; looking again soon");
            Some(Duration::from_secs(5))
        }
    }
}

async fn round(
    ctx: &Context,
    plan: &DisasterRecoveryPlan,
    ns: &str,
    spec: &crate::api::DrillsSpec,
    ready: Result<(), String>,
) -> Result<Option<Duration>, kube::Error> {
    let plans: Api<DisasterRecoveryPlan> = Api::namespaced(ctx.client.clone(), ns);
    let failovers: Api<Failover> = Api::namespaced(ctx.client.clone(), ns);
    // Decide on what the API server holds now: the cache may predate the last record.
    let fresh = plans.get_status(&plan.name_any()).await?;
    let status = fresh
        .status
        .as_ref()
        .and_then(|s| s.drills.clone())
        .unwrap_or_default();
    let all = failovers.list(&Default::default()).await?.items;
    let mine: Vec<&Failover> = all
        .iter()
        .filter(|f| f.spec.plan_ref == plan.name_any())
        .collect();
    let drills: Vec<FailoverSeen> = mine
        .iter()
        .filter(|f| f.labels().get(TRIGGER_LABEL).map(String::as_str) == Some("drill"))
        .map(|f| seen(f))
        .collect();
    let ours: Vec<String> = status
        .running
        .iter()
        .flat_map(|r| r.failovers.clone())
        .collect();
    let other_failover = mine
        .iter()
        .filter(|f| !ours.contains(&f.name_any()))
        .filter(|f| f.labels().get(SCHEDULE_LABEL).map(String::as_str) != Some(drill::MANUAL))
        .find(|f| {
            !f.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(crate::api::FailoverPhase::is_terminal)
        })
        .map(|f| f.name_any());
    let active = crate::engine::active_region(&fresh).unwrap_or_default();
    let default_target =
        crate::engine::automatic::next_region(&plan.spec, &active).map(str::to_string);
    let out = drill::decide(&Input {
        plan: &plan.name_any(),
        spec,
        status: &status,
        now: Timestamp::now(),
        ready,
        active: &active,
        default_target,
        other_failover,
        failovers: &drills,
    });
    if out.status != status {
        let fields = Fields {
            drills: &out.status,
        };
        let version = fresh.resource_version();
        match apply_status_at(
            &plans,
            &plan.name_any(),
            FIELD_MANAGER,
            &fields,
            version.as_deref(),
        )
        .await
        {
            Ok(_) => {}
            // Someone wrote since: decide again on what they wrote.
            Err(kube::Error::Api(e)) if e.code == 409 => return Ok(Some(Duration::from_secs(1))),
            Err(e) => return Err(e),
        }
    }
    for (warning, reason, note) in &out.notes {
        let type_ = if *warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.publish(plan, type_, reason, "Drill", note.clone())
            .await;
    }
    if let Some(new) = &out.create {
        create(ctx, plan, &failovers, new, &out.status).await?;
    }
    prune(&failovers, &drills, &out.status).await;
    export(ctx, plan, &out.status);
    Ok(out.requeue)
}

/// Creates the recorded drill Failover; one that exists already counts as created.
async fn create(
    ctx: &Context,
    plan: &DisasterRecoveryPlan,
    api: &Api<Failover>,
    new: &NewFailover,
    status: &DrillsStatus,
) -> Result<(), kube::Error> {
    if ctx.leadership.deposed() {
        return Err(ctx.leadership.deposed_error());
    }
    let kind = status.running.as_ref().map(|r| r.kind).unwrap_or_default();
    let fo = drill_failover(
        plan,
        &new.name,
        &new.target,
        new.mode,
        &new.schedule,
        new.stage,
        kind,
    );
    match api.create(&PostParams::default(), &fo).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes terminal drill Failovers that no kept result or running drill names.
async fn prune(api: &Api<Failover>, drills: &[FailoverSeen], status: &DrillsStatus) {
    let kept: Vec<&String> = status
        .history
        .iter()
        .flat_map(|h| h.failovers.iter())
        .chain(status.running.iter().flat_map(|r| r.failovers.iter()))
        .collect();
    for f in drills {
        let over = f.phase.is_some_and(crate::api::FailoverPhase::is_terminal);
        if !over || kept.contains(&&f.name) {
            continue;
        }
        if let Err(e) = api.delete(&f.name, &DeleteParams::default()).await {
            warn!(failover = %f.name, error = %crate::error::Error::from(e), "could not delete an old drill Failover");
        }
    }
}

/// The drill gauges: the last result and its age, and its RTO each way.
fn export(ctx: &Context, plan: &DisasterRecoveryPlan, status: &DrillsStatus) {
    let labels = crate::metrics::PlanLabels {
        namespace: plan.namespace().unwrap_or_default(),
        plan: plan.name_any(),
    };
    let m = &ctx.metrics;
    if let Some(t) = &status.last_success {
        m.drill_last_success
            .get_or_create(&labels)
            .set(t.0.as_second() as f64);
    }
    if let Some(last) = status
        .history
        .iter()
        .find(|h| h.outcome != crate::api::DrillOutcome::Skipped)
    {
        m.drill_last_succeeded.get_or_create(&labels).set(i64::from(
            last.outcome == crate::api::DrillOutcome::Succeeded,
        ));
        if let Some(rto) = last.rto_seconds {
            m.drill_rto.get_or_create(&labels).set(rto);
        }
        if let Some(rto) = last.rto_back_seconds {
            m.drill_rto_back.get_or_create(&labels).set(rto);
        }
    }
}

// ---- `drover drill` -------------------------------------------------------------------------

/// What `drover drill` runs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[value(rename_all = "PascalCase")]
pub enum KindArg {
    DryRun,
    RoundTrip,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DrillArgs {
    /// The DisasterRecoveryPlan to drill.
    pub plan: String,
    /// DryRun (preflight only) or RoundTrip (fail over, hold as the plan's first RoundTrip
    /// schedule says or 5m, fail back once the plan is Ready).
    #[arg(long, value_enum, default_value_t = KindArg::DryRun)]
    pub kind: KindArg,
    /// The region to fail over to (default: the next after the active one).
    #[arg(long = "to")]
    pub to: Option<String>,
    /// Follow the drill to its end; exit non-zero unless it succeeded.
    #[arg(long, short = 'w')]
    pub watch: bool,
}

/// `drover drill`: starts a drill now (the operator takes it up as a `manual` drill and
/// records its result); with `--watch`, follows it. Ok(true) when it succeeded (or was
/// only started).
pub async fn run_now(
    kube: &crate::cli::KubeArgs,
    args: &DrillArgs,
) -> Result<bool, crate::cli::CliError> {
    use crate::cli::CliError;
    let session = crate::cli::connect(kube).await?;
    let ns = session.namespace.clone();
    let plans: Api<DisasterRecoveryPlan> = Api::namespaced(session.client.clone(), &ns);
    let plan = plans
        .get(&args.plan)
        .await
        .map_err(|e| session.explain(&format!("plan {:?} in namespace {ns:?}", args.plan), e))?;
    let active = crate::engine::active_region(&plan).unwrap_or_default();
    let target = match &args.to {
        Some(t) => t.clone(),
        None => crate::engine::automatic::next_region(&plan.spec, &active)
            .map(str::to_string)
            .ok_or_else(|| CliError(format!("plan {} has no region to drill to", args.plan)))?,
    };
    if !plan.spec.regions.iter().any(|r| r.name == target) || target == active {
        return Err(CliError(format!(
            "plan {:?} cannot drill to {target:?}: it must be one of its regions other than the active {active}",
            args.plan
        )));
    }
    let kind = match args.kind {
        KindArg::DryRun => DrillKind::DryRun,
        KindArg::RoundTrip => DrillKind::RoundTrip,
    };
    let mode = drill::mode_of(kind);
    let name = drill::failover_name(&plan.name_any(), drill::MANUAL, Timestamp::now(), "go");
    let fo = drill_failover(&plan, &name, &target, mode, drill::MANUAL, "go", kind);
    let failovers: Api<Failover> = Api::namespaced(session.client.clone(), &ns);
    failovers
        .create(&PostParams::default(), &fo)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => CliError(format!(
                "a drill of plan {} started this second already exists ({name})",
                args.plan
            )),
            e => session.explain(&format!("a Failover in namespace {ns:?}"), e),
        })?;
    println!(
        "failover.drover.io/{name} created: a {kind:?} drill of plan {} from {active} to {target}",
        args.plan
    );
    if !args.watch {
        return Ok(true);
    }
    let mut succeeded = crate::cli::watch(&failovers, &name).await?;
    if kind == DrillKind::RoundTrip && succeeded {
        let back = follow_hold(&plans, &plan, &name, &target, &active).await?;
        println!("failing back: {back}");
        succeeded = crate::cli::watch(&failovers, &back).await?;
        match recorded(&plans, &plan.name_any(), &name).await {
            Some(result) => println!("{}", describe_result(&result)),
            None => println!(
                "the operator has not recorded the drill yet; see `drover status {}`",
                args.plan
            ),
        }
    }
    Ok(succeeded)
}

/// Where a round trip whose way there is `go` stands, as the plan's `status.drills` shows.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    /// Not taken up by the operator yet, or its way there not yet seen to end.
    Going,
    /// In the target region until then.
    Holding(Option<Timestamp>),
    /// Held; the way back waits until the plan is Ready.
    WaitingForReady,
    /// The way back, by name.
    Returning(String),
    /// Over without a way back.
    Ended(Box<crate::api::DrillResult>),
}

/// The progress of the round trip that went with `go`, at `now`.
pub fn progress(status: &DrillsStatus, go: &str, now: Timestamp) -> Progress {
    use crate::api::DrillStage;
    let ours = |failovers: &[String]| failovers.first().map(String::as_str) == Some(go);
    if let Some(r) = status.running.as_ref().filter(|r| ours(&r.failovers)) {
        return match r.stage {
            DrillStage::Going => Progress::Going,
            DrillStage::Holding => match r.hold_until.as_ref().map(|t| t.0) {
                Some(until) if until <= now => Progress::WaitingForReady,
                until => Progress::Holding(until),
            },
            DrillStage::Returning => Progress::Returning(r.failover.clone()),
        };
    }
    match status.history.iter().find(|h| ours(&h.failovers)) {
        // The way back ran (and ended) before this looked.
        Some(h) if h.failovers.len() > 1 => Progress::Returning(h.failovers[1].clone()),
        Some(h) => Progress::Ended(Box::new(h.clone())),
        None => Progress::Going,
    }
}

/// One line for a recorded drill: outcome, RTO each way, data loss, what failed.
pub fn describe_result(r: &crate::api::DrillResult) -> String {
    let secs = |s: f64| format!("{s:.1}s");
    let mut parts = vec![format!("drill recorded: {:?} {:?}", r.kind, r.outcome)];
    match (r.rto_seconds, r.rto_back_seconds) {
        (Some(there), Some(back)) => parts.push(format!(
            "measured RTO there {}, back {}",
            secs(there),
            secs(back)
        )),
        (Some(there), None) => parts.push(format!("measured RTO there {}", secs(there))),
        _ => {}
    }
    match (r.user_visible_seconds, r.user_visible_back_seconds) {
        (Some(there), Some(back)) => parts.push(format!(
            "users without service there {}, back {}",
            secs(there),
            secs(back)
        )),
        (Some(there), None) => parts.push(format!("users without service there {}", secs(there))),
        (None, Some(back)) => parts.push(format!("users without service back {}", secs(back))),
        (None, None) => {}
    }
    if let Some(d) = r.data_loss_seconds {
        parts.push(format!("data-loss estimate {}", secs(d)));
    }
    if let Some(step) = &r.failing_step {
        parts.push(format!("failed at {step}"));
    }
    if let Some(m) = &r.message {
        parts.push(m.clone());
    }
    parts.join("; ")
}

/// Follows a round trip from the end of its way there to the start of its way back, saying
/// when it holds and when it waits for the plan to be Ready. Returns the way back's name.
async fn follow_hold(
    plans: &Api<DisasterRecoveryPlan>,
    plan: &DisasterRecoveryPlan,
    go: &str,
    target: &str,
    active: &str,
) -> Result<String, crate::cli::CliError> {
    use crate::cli::CliError;
    use futures::StreamExt;
    let name = plan.name_any();
    let spec = plan.spec.drills.clone().unwrap_or_default();
    // Until the operator records the hold: the hold it will use, and the wait for Ready.
    let slack = drill::READY_FOR_FAILBACK + Duration::from_secs(120);
    let mut deadline = tokio::time::Instant::now() + drill::hold_of(&spec, drill::MANUAL) + slack;
    let mut events = kube::runtime::watcher::watch_object(plans.clone(), &name).boxed();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut said = None;
    let mut latest: Option<DisasterRecoveryPlan> = None;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(Some(p))) => latest = Some(p),
                Some(Ok(None)) => return Err(CliError(format!("plan {name} was deleted"))),
                // The watcher re-lists by itself after transient errors.
                Some(Err(_)) => {}
                None => return Err(CliError("the watch of the plan ended unexpectedly".into())),
            },
            _ = ticker.tick() => {}
            _ = tokio::time::sleep_until(deadline) => {
                return Err(CliError(format!(
                    "the way back of drill {go} (plan {name}) did not start in time; see `kubectl get drp {name} -o yaml` (status.drills)"
                )));
            }
        }
        let Some(p) = &latest else { continue };
        let status = p
            .status
            .as_ref()
            .and_then(|s| s.drills.clone())
            .unwrap_or_default();
        let now = Timestamp::now();
        let at = progress(&status, go, now);
        if said.as_ref() == Some(&at) {
            continue;
        }
        match &at {
            Progress::Going => {}
            Progress::Holding(until) => {
                let until = until.unwrap_or(now);
                println!(
                    "holding in {target} until {}, then failing back to {active}",
                    until.strftime("%Y-%m-%d %H:%M:%S UTC")
                );
                let left = Duration::from_secs(
                    until.as_second().saturating_sub(now.as_second()).max(0) as u64,
                );
                deadline = tokio::time::Instant::now() + left + slack;
            }
            Progress::WaitingForReady => {
                let why = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                    .filter(|c| c.status != "True")
                    .map(|c| format!(": {}", c.message))
                    .unwrap_or_default();
                println!("hold over; failing back to {active} once plan {name} is Ready{why}");
            }
            Progress::Returning(back) => return Ok(back.clone()),
            Progress::Ended(result) => {
                return Err(CliError(format!(
                    "drill {go} of plan {name} ended without failing back: {}",
                    describe_result(result)
                )));
            }
        }
        said = Some(at);
    }
}

/// The drill's result once the operator records it (it does at the plan check the way
/// back's end triggers); None if not within a minute.
async fn recorded(
    plans: &Api<DisasterRecoveryPlan>,
    plan: &str,
    go: &str,
) -> Option<crate::api::DrillResult> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = plans.get_status(plan).await.ok()?.status;
        let found = status.and_then(|s| s.drills).and_then(|d| {
            d.history
                .into_iter()
                .find(|h| h.failovers.first().map(String::as_str) == Some(go))
        });
        if found.is_some() || std::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DrillOutcome, DrillResult, DrillStage, RunningDrill};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    const GO: &str = "shop-drill-manual-202611301000";

    fn running(stage: DrillStage, failover: &str) -> DrillsStatus {
        DrillsStatus {
            running: Some(RunningDrill {
                schedule: drill::MANUAL.into(),
                kind: DrillKind::RoundTrip,
                scheduled_for: Time(at("2026-11-30T10:00:00Z")),
                started_at: Time(at("2026-11-30T10:00:01Z")),
                stage,
                source_region: "use1".into(),
                target_region: "usw2".into(),
                failover: failover.into(),
                created: false,
                failovers: vec![GO.into()],
                hold_until: Some(Time(at("2026-11-30T10:00:30Z"))),
                rto_seconds: Some(4.0),
                user_visible_seconds: None,
                data_loss_seconds: Some(0.0),
            }),
            ..Default::default()
        }
    }

    fn result(failovers: &[&str], outcome: DrillOutcome, message: Option<&str>) -> DrillResult {
        DrillResult {
            schedule: drill::MANUAL.into(),
            kind: DrillKind::RoundTrip,
            scheduled_for: Time(at("2026-11-30T10:00:00Z")),
            started_at: None,
            finished_at: Time(at("2026-11-30T10:31:00Z")),
            outcome,
            rto_seconds: Some(4.0),
            user_visible_seconds: None,
            user_visible_back_seconds: None,
            rto_back_seconds: None,
            data_loss_seconds: Some(0.3),
            failing_step: None,
            message: message.map(str::to_string),
            failovers: failovers.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn drover_drill_follows_the_hold_to_the_way_back() {
        let now = at("2026-11-30T10:00:20Z");
        assert_eq!(progress(&DrillsStatus::default(), GO, now), Progress::Going);
        assert_eq!(
            progress(&running(DrillStage::Going, GO), GO, now),
            Progress::Going
        );
        let holding = running(DrillStage::Holding, GO);
        assert_eq!(
            progress(&holding, GO, now),
            Progress::Holding(Some(at("2026-11-30T10:00:30Z")))
        );
        assert_eq!(
            progress(&holding, GO, at("2026-11-30T10:00:31Z")),
            Progress::WaitingForReady
        );
        // Another drill's hold is not this one's.
        assert_eq!(
            progress(&holding, "shop-drill-manual-202611300900", now),
            Progress::Going
        );
        let back = drill::back_name(GO);
        assert_eq!(
            progress(&running(DrillStage::Returning, &back), GO, now),
            Progress::Returning(back.clone())
        );
        // Over before this looked: with a way back, follow it; without, say why.
        let mut over = DrillsStatus {
            history: vec![result(&[GO, &back], DrillOutcome::Succeeded, None)],
            ..Default::default()
        };
        assert_eq!(progress(&over, GO, now), Progress::Returning(back));
        let why =
            "the plan was not Ready to fail back within 1800s after the hold: orders Reprotecting";
        over.history = vec![result(&[GO], DrillOutcome::Failed, Some(why))];
        let Progress::Ended(ended) = progress(&over, GO, now) else {
            panic!("ended");
        };
        assert_eq!(
            describe_result(&ended),
            format!(
                "drill recorded: RoundTrip Failed; measured RTO there 4.0s; data-loss estimate 0.3s; {why}"
            )
        );
    }

    #[test]
    fn a_recorded_round_trip_reads_with_both_rtos() {
        let mut r = result(&[GO], DrillOutcome::Succeeded, None);
        r.rto_back_seconds = Some(5.31);
        r.data_loss_seconds = Some(0.0);
        assert_eq!(
            describe_result(&r),
            "drill recorded: RoundTrip Succeeded; measured RTO there 4.0s, back 5.3s; data-loss estimate 0.0s"
        );
    }
}
