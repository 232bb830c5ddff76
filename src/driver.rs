//! Runs a Failover's steps: observes the world through the effectors, asks `engine` what
//! to do, acts, and records every step in status before and after its side effect, so a
//! restarted operator resumes where the last one stopped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use serde_json::json;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::api::{
    DataLossEstimate, DatabaseLag, DatabaseProgress, DatabaseSpec, DatabaseState,
    DisasterRecoveryPlan, DnsChange, Failover, FailoverMode, FailoverPhase, FailoverStatus,
    FailoverTimings, LastFailover, StepState, StepStatus,
};
use crate::aws::{Aws, AwsError, WriterMove, parse_ecr_image};
use crate::clusters::{ClusterError, Clusters};
use crate::conditions::{self, DesiredCondition};
use crate::controller::{Context, FIELD_MANAGER, apply_status};
use crate::engine::{
    self, Admission, DbStep, Requested, ScaleTarget, Step, ZoneBatch, poll_delay, retry_delay,
};
use crate::metrics::{FailoverLabels, PlanLabels, PlanStepLabels, StepLabels};
use crate::validate::parse_duration;

/// Field manager for the status fields the failover driver owns on plans.
pub const FAILOVER_FIELD_MANAGER: &str = "drover-failover";

/// How a run of the driver ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Terminal phase reached.
    Done,
    /// Databases are promoted but a later step failed: try again after a pause.
    RetryLater(String),
}

/// Why a step stopped.
#[derive(Debug)]
enum StepError {
    /// The step failed; the message is what AWS or Kubernetes said.
    Failed(String),
    /// A status write failed; the run stops and resumes on the next reconcile.
    Status(kube::Error),
}

impl From<kube::Error> for StepError {
    fn from(e: kube::Error) -> Self {
        StepError::Status(e)
    }
}

trait Retryable {
    fn retryable(&self) -> bool;
    fn text(&self) -> String;
}

impl Retryable for AwsError {
    fn retryable(&self) -> bool {
        self.is_retryable()
    }
    fn text(&self) -> String {
        self.message.clone()
    }
}

impl Retryable for ClusterError {
    fn retryable(&self) -> bool {
        self.is_retryable()
    }
    fn text(&self) -> String {
        self.message().to_string()
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}

pub struct Driver {
    ctx: Arc<Context>,
    aws: Arc<dyn Aws>,
    clusters: Arc<dyn Clusters>,
    plan: DisasterRecoveryPlan,
    fo: Failover,
    api: Api<Failover>,
    status: Mutex<FailoverStatus>,
    started: Instant,
    /// Cluster ARNs resolved so far (they do not change during a failover).
    cluster_arns: Mutex<std::collections::HashMap<String, String>>,
    /// When a planned fence last saw zero lag on every database, writers already stopped.
    zero_lag_at: Mutex<Option<Instant>>,
}

impl Driver {
    pub fn new(
        ctx: Arc<Context>,
        aws: Arc<dyn Aws>,
        clusters: Arc<dyn Clusters>,
        plan: DisasterRecoveryPlan,
        fo: Failover,
    ) -> Self {
        let ns = fo.namespace().unwrap_or_default();
        let api = Api::namespaced(ctx.client.clone(), &ns);
        let status = fo.status.clone().unwrap_or_default();
        Self {
            ctx,
            aws,
            clusters,
            plan,
            fo,
            api,
            status: Mutex::new(status),
            started: Instant::now(),
            cluster_arns: Mutex::new(Default::default()),
            zero_lag_at: Mutex::new(None),
        }
    }

    fn mode(&self) -> FailoverMode {
        self.fo.spec.mode
    }

    fn target(&self) -> &str {
        &self.fo.spec.target_region
    }

    fn aws_region(&self, region: &str) -> String {
        self.plan
            .spec
            .regions
            .iter()
            .find(|r| r.name == region)
            .map(|r| r.aws_region.clone())
            .unwrap_or_else(|| region.to_string())
    }

    /// Applies `change` to status and writes it (SSA on /status).
    async fn update(&self, change: impl FnOnce(&mut FailoverStatus)) -> Result<(), kube::Error> {
        let snapshot = {
            let mut status = self.status.lock().await;
            change(&mut status);
            status.observed_generation = self.fo.metadata.generation;
            status.clone()
        };
        let name = self.fo.name_any();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match apply_status(&self.api, &name, FIELD_MANAGER, &snapshot).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt < 5 => {
                    warn!(error = %e, attempt, "status write failed; retrying");
                    tokio::time::sleep(retry_delay(attempt, fastrand::f64())).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Publishes an Event without holding up the step (best effort).
    async fn event(&self, type_: EventType, reason: &str, action: &str, note: String) {
        let ctx = self.ctx.clone();
        let fo = self.fo.clone();
        let (reason, action) = (reason.to_string(), action.to_string());
        tokio::spawn(async move { ctx.publish(&fo, type_, &reason, &action, note).await });
    }

    async fn step_state(&self, step: Step) -> Option<StepState> {
        let status = self.status.lock().await;
        status
            .steps
            .iter()
            .find(|s| s.name == step.name())
            .map(|s| s.state)
    }

    async fn start_step(&self, step: Step) -> Result<(), kube::Error> {
        self.update(|s| {
            s.current_step = Some(step.name().into());
            if let Some(st) = s.steps.iter_mut().find(|st| st.name == step.name()) {
                if st.started_at.is_none() {
                    st.started_at = Some(now());
                }
                st.state = StepState::Running;
                st.finished_at = None;
            }
        })
        .await?;
        info!(failover = %self.fo.name_any(), step = step.name(), "step started");
        Ok(())
    }

    async fn finish_step(
        &self,
        step: Step,
        state: StepState,
        message: String,
    ) -> Result<(), kube::Error> {
        let mut seconds = None;
        self.update(|s| {
            if let Some(st) = s.steps.iter_mut().find(|st| st.name == step.name()) {
                let finished = now();
                if let Some(started) = &st.started_at {
                    seconds = Some(finished.0.duration_since(started.0).as_secs_f64().max(0.0));
                }
                st.state = state;
                st.duration_seconds = seconds;
                st.finished_at = Some(finished);
                st.message = Some(message.clone());
            }
        })
        .await?;
        if let Some(secs) = seconds {
            self.ctx
                .metrics
                .step_duration
                .get_or_create(&StepLabels { step: step.name() })
                .observe(secs);
        }
        let (type_, reason) = match state {
            StepState::Succeeded => (EventType::Normal, "StepSucceeded"),
            StepState::Skipped => (EventType::Warning, "StepSkipped"),
            _ => (EventType::Warning, "StepFailed"),
        };
        info!(failover = %self.fo.name_any(), step = step.name(), ?state, %message, "step finished");
        self.event(
            type_,
            reason,
            step.name(),
            format!("{}: {message}", step.name()),
        )
        .await;
        Ok(())
    }

    async fn bump_attempts(&self, step: Step) {
        let mut status = self.status.lock().await;
        if let Some(st) = status.steps.iter_mut().find(|st| st.name == step.name()) {
            st.attempts += 1;
        }
    }

    /// Calls `f` until it succeeds, fails for good, or the deadline passes. Every call
    /// counts as an attempt of `step`.
    async fn retry<T, E, F, Fut>(&self, step: Step, deadline: Instant, mut f: F) -> Result<T, E>
    where
        E: Retryable,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.bump_attempts(step).await;
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() => {
                    let delay = retry_delay(attempt, fastrand::f64());
                    if Instant::now() + delay >= deadline {
                        return Err(e);
                    }
                    warn!(step = step.name(), attempt, error = %e.text(), "transient error; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn deadline(&self, step: Step) -> Instant {
        Instant::now() + engine::step_timeout(&self.plan.spec, step, self.mode())
    }

    /// Runs the failover from wherever its status says it is.
    pub async fn run(&self, siblings: &[Failover]) -> Result<Outcome, kube::Error> {
        let phase = self.status.lock().await.phase;
        if phase.is_some_and(FailoverPhase::is_terminal) {
            return Ok(Outcome::Done);
        }
        if phase != Some(FailoverPhase::Running) && !self.admit(siblings).await? {
            return Ok(Outcome::Done);
        }
        match self.run_steps().await {
            Ok(outcome) => Ok(outcome),
            Err(StepError::Status(e)) => Err(e),
            Err(StepError::Failed(message)) => {
                // Only reached for failures that end the failover (see run_steps).
                self.finish(FailoverPhase::Failed, message).await?;
                Ok(Outcome::Done)
            }
        }
    }

    /// Admission: returns whether to continue.
    async fn admit(&self, siblings: &[Failover]) -> Result<bool, kube::Error> {
        let steps = engine::steps_for(self.mode());
        let fresh_steps: Vec<StepStatus> = steps
            .iter()
            .map(|s| StepStatus {
                name: s.name().into(),
                state: StepState::Pending,
                started_at: None,
                finished_at: None,
                duration_seconds: None,
                attempts: 0,
                message: None,
            })
            .collect();
        let decision = engine::admit(&self.plan, &self.fo, siblings);
        let started = now();
        match decision {
            Admission::Reject(reason) => {
                self.end_at_admission(
                    fresh_steps,
                    StepState::Failed,
                    FailoverPhase::Rejected,
                    reason,
                )
                .await?;
                Ok(false)
            }
            Admission::AlreadyActive => {
                let note = format!("{} is already active", self.target());
                self.end_at_admission(
                    fresh_steps,
                    StepState::Succeeded,
                    FailoverPhase::Succeeded,
                    note,
                )
                .await?;
                Ok(false)
            }
            Admission::Proceed { source_region } => {
                let actions = engine::planned_actions(
                    &self.plan.spec,
                    &source_region,
                    self.target(),
                    self.mode(),
                );
                self.update(|s| {
                    s.phase = Some(FailoverPhase::Running);
                    s.source_region = Some(source_region.clone());
                    s.steps = fresh_steps;
                    s.planned_actions = actions;
                    s.timings = Some(FailoverTimings {
                        started_at: Some(started.clone()),
                        ..Default::default()
                    });
                })
                .await?;
                self.event(
                    EventType::Normal,
                    "FailoverStarted",
                    "Start",
                    format!(
                        "{:?} failover from {source_region} to {}",
                        self.mode(),
                        self.target()
                    ),
                )
                .await;
                self.mark_plan(FailoverPhase::Running).await?;
                self.start_step(Step::Admission).await?;
                self.finish_step(
                    Step::Admission,
                    StepState::Succeeded,
                    format!("admitted: {source_region} → {}", self.target()),
                )
                .await?;
                Ok(true)
            }
        }
    }

    /// Ends a failover that admission stops (rejected, or nothing to do).
    async fn end_at_admission(
        &self,
        steps: Vec<StepStatus>,
        state: StepState,
        phase: FailoverPhase,
        message: String,
    ) -> Result<(), kube::Error> {
        let started = now();
        self.update(|s| {
            s.steps = steps.into_iter().take(1).collect();
            s.timings = Some(FailoverTimings {
                started_at: Some(started),
                ..Default::default()
            });
        })
        .await?;
        self.start_step(Step::Admission).await?;
        self.finish_step(Step::Admission, state, message.clone())
            .await?;
        self.finish(phase, message).await
    }

    async fn source(&self) -> String {
        self.status
            .lock()
            .await
            .source_region
            .clone()
            .unwrap_or_default()
    }

    async fn run_steps(&self) -> Result<Outcome, StepError> {
        let done = |s: Option<StepState>| {
            matches!(s, Some(StepState::Succeeded) | Some(StepState::Skipped))
        };
        if !done(self.step_state(Step::Preflight).await) {
            self.start_step(Step::Preflight).await?;
            let failures = self.preflight().await;
            let passed = failures.is_empty();
            self.update(|s| s.preflight_failures = failures.clone())
                .await?;
            if !passed {
                let message = format!("preflight failed: {}", failures.join("; "));
                self.finish_step(Step::Preflight, StepState::Failed, message.clone())
                    .await?;
                return Err(StepError::Failed(message));
            }
            self.finish_step(
                Step::Preflight,
                StepState::Succeeded,
                "all checks passed".into(),
            )
            .await?;
        }
        if self.mode() == FailoverMode::DryRun {
            self.finish(FailoverPhase::Succeeded, "dry run: preflight passed".into())
                .await?;
            return Ok(Outcome::Done);
        }

        if !done(self.step_state(Step::Fence).await) {
            self.start_step(Step::Fence).await?;
            match self.fence().await {
                Ok((state, message)) => self.finish_step(Step::Fence, state, message).await?,
                Err(StepError::Failed(message)) => {
                    self.finish_step(Step::Fence, StepState::Failed, message.clone())
                        .await?;
                    return self.fail_before_promotion(message).await;
                }
                Err(e) => return Err(e),
            }
        }

        let warm_done = done(self.step_state(Step::WarmUp).await);
        let promote_done = done(self.step_state(Step::PromoteDatabases).await);
        let warm = async {
            if warm_done {
                return Ok(());
            }
            self.start_step(Step::WarmUp).await?;
            let targets = engine::warmup_targets(&self.plan.spec, self.target());
            let deadline = self.deadline(Step::WarmUp);
            match self
                .scale_and_wait(Step::WarmUp, &targets, deadline, true)
                .await
            {
                Ok(()) => {
                    self.finish_step(
                        Step::WarmUp,
                        StepState::Succeeded,
                        format!("{} workloads ready in {}", targets.len(), self.target()),
                    )
                    .await?;
                    Ok(())
                }
                Err(message) => {
                    self.finish_step(Step::WarmUp, StepState::Failed, message.clone())
                        .await?;
                    Err(StepError::Failed(message))
                }
            }
        };
        let promote = async {
            if promote_done {
                return Ok(());
            }
            self.start_step(Step::PromoteDatabases).await?;
            match self.promote().await {
                Ok(message) => {
                    self.finish_step(Step::PromoteDatabases, StepState::Succeeded, message)
                        .await?;
                    Ok(())
                }
                Err(StepError::Failed(message)) => {
                    self.finish_step(Step::PromoteDatabases, StepState::Failed, message.clone())
                        .await?;
                    Err(StepError::Failed(message))
                }
                Err(e) => Err(e),
            }
        };
        let (warm, promote) = tokio::join!(warm, promote);
        let failure = match (warm, promote) {
            (Err(e @ StepError::Status(_)), _) | (_, Err(e @ StepError::Status(_))) => {
                return Err(e);
            }
            (Err(StepError::Failed(m)), _) | (_, Err(StepError::Failed(m))) => Some(m),
            (Ok(()), Ok(())) => None,
        };
        if let Some(message) = failure {
            if self.any_promoted().await {
                // The failed step already recorded its failure.
                return self.ask_for_retry(message).await;
            }
            return self.fail_before_promotion(message).await;
        }

        if !done(self.step_state(Step::SwitchDns).await) {
            self.start_step(Step::SwitchDns).await?;
            match self.switch_dns().await {
                Ok(message) => {
                    self.finish_step(Step::SwitchDns, StepState::Succeeded, message)
                        .await?
                }
                Err(StepError::Failed(message)) => {
                    return self.retry_later(Step::SwitchDns, message).await;
                }
                Err(e) => return Err(e),
            }
        }

        if !done(self.step_state(Step::Verify).await) {
            self.start_step(Step::Verify).await?;
            match self.verify().await {
                Ok((state, message)) => self.finish_step(Step::Verify, state, message).await?,
                Err(StepError::Failed(message)) => {
                    return self.retry_later(Step::Verify, message).await;
                }
                Err(e) => return Err(e),
            }
        }

        self.start_step(Step::Complete).await?;
        self.finish_step(
            Step::Complete,
            StepState::Succeeded,
            format!("{} is active", self.target()),
        )
        .await?;
        self.finish(
            FailoverPhase::Succeeded,
            format!("{} is active", self.target()),
        )
        .await?;
        Ok(Outcome::Done)
    }

    async fn any_promoted(&self) -> bool {
        self.status
            .lock()
            .await
            .databases
            .iter()
            .any(|d| Requested::from(d.state) != Requested::No)
    }

    /// After promotion there is no going back: record the step's failure, and try again later.
    async fn retry_later(&self, step: Step, message: String) -> Result<Outcome, StepError> {
        self.finish_step(step, StepState::Failed, message.clone())
            .await?;
        self.ask_for_retry(message).await
    }

    async fn ask_for_retry(&self, message: String) -> Result<Outcome, StepError> {
        let note = format!(
            "{message}. Databases are already promoted, so Drover keeps retrying the remaining \
             steps until they succeed or this Failover is deleted."
        );
        let generation = self.fo.metadata.generation;
        self.update(|s| {
            s.conditions = conditions::upsert(
                &s.conditions,
                DesiredCondition {
                    type_: "Progressing",
                    status: false,
                    reason: "RetryingAfterPromotion",
                    message: note.clone(),
                },
                generation,
                Timestamp::now(),
            );
        })
        .await?;
        self.event(
            EventType::Warning,
            "RetryingAfterPromotion",
            "Retry",
            note.clone(),
        )
        .await;
        Ok(Outcome::RetryLater(note))
    }

    /// A failure before any database was promoted. A planned failover undoes what it did.
    async fn fail_before_promotion(&self, message: String) -> Result<Outcome, StepError> {
        if self.mode() != FailoverMode::Planned {
            return Err(StepError::Failed(message));
        }
        let source = self.source().await;
        let mut undo = engine::unfence_targets(&self.plan.spec, &source);
        if self
            .step_state(Step::WarmUp)
            .await
            .is_some_and(|s| s != StepState::Pending)
        {
            undo.extend(engine::standby_targets(&self.plan.spec, self.target()));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut undone = Vec::new();
        let mut not_undone = Vec::new();
        for t in &undo {
            let w = &self.plan.spec.workloads[t.workload];
            match self.scale_one(Step::Fence, t, deadline).await {
                Ok(true) => undone.push(format!(
                    "{}/{} in {} → {}",
                    w.namespace, w.name, t.region, t.replicas
                )),
                Ok(false) => {}
                Err(e) => {
                    not_undone.push(format!("{}/{} in {}: {e}", w.namespace, w.name, t.region))
                }
            }
        }
        let mut summary = format!("{message}. Rolled back: ");
        summary.push_str(&if undone.is_empty() {
            "nothing needed undoing".to_string()
        } else {
            format!("scaled {}", undone.join(", "))
        });
        summary.push_str("; DNS untouched");
        if !not_undone.is_empty() {
            summary.push_str(&format!("; could not undo: {}", not_undone.join(", ")));
            self.finish(FailoverPhase::Failed, summary).await?;
        } else {
            self.finish(FailoverPhase::RolledBack, summary).await?;
        }
        Ok(Outcome::Done)
    }

    /// Ends the failover in `phase`.
    async fn finish(&self, phase: FailoverPhase, message: String) -> Result<(), kube::Error> {
        let generation = self.fo.metadata.generation;
        let finished = now();
        let mut total = None;
        let mut step_seconds = Vec::new();
        let mut data_loss = None;
        self.update(|s| {
            s.phase = Some(phase);
            step_seconds = s
                .steps
                .iter()
                .filter_map(|st| Some((st.name.clone(), st.duration_seconds?)))
                .collect();
            let timings = s.timings.get_or_insert_with(Default::default);
            if let Some(started) = &timings.started_at {
                total = Some(finished.0.duration_since(started.0).as_secs_f64().max(0.0));
            }
            timings.finished_at = Some(finished.clone());
            timings.total_seconds = total;
            let lags: Vec<DatabaseLag> = s
                .databases
                .iter()
                .filter_map(|d| {
                    d.lag_seconds.map(|l| DatabaseLag {
                        name: d.name.clone(),
                        lag_seconds: l,
                    })
                })
                .collect();
            if !lags.is_empty() {
                let max_lag_seconds = lags.iter().map(|l| l.lag_seconds).fold(0.0, f64::max);
                data_loss = Some(max_lag_seconds);
                s.data_loss = Some(DataLossEstimate {
                    max_lag_seconds,
                    databases: lags,
                });
            }
            s.conditions = conditions::upsert(
                &s.conditions,
                DesiredCondition {
                    type_: "Progressing",
                    status: false,
                    reason: match phase {
                        FailoverPhase::Succeeded => "Succeeded",
                        FailoverPhase::Failed => "Failed",
                        FailoverPhase::RolledBack => "RolledBack",
                        FailoverPhase::Rejected => "Rejected",
                        _ => "Stopped",
                    },
                    message: message.clone(),
                },
                generation,
                Timestamp::now(),
            );
        })
        .await?;
        let mode = format!("{:?}", self.mode());
        self.ctx
            .metrics
            .failovers
            .get_or_create(&FailoverLabels {
                mode,
                result: format!("{phase:?}"),
            })
            .inc();
        if phase != FailoverPhase::Rejected {
            self.record_last_failover(phase, total, &step_seconds, data_loss);
            self.mark_plan(phase).await?;
        }
        let type_ = if phase == FailoverPhase::Succeeded {
            EventType::Normal
        } else {
            EventType::Warning
        };
        self.event(
            type_,
            &format!("Failover{phase:?}"),
            "Finish",
            message.clone(),
        )
        .await;
        info!(failover = %self.fo.name_any(), ?phase, %message, elapsed = ?self.started.elapsed(), "failover finished");
        Ok(())
    }

    /// The `drover_last_failover_*` gauges and, on success, the RTO histogram. A DryRun
    /// moves nothing, so it leaves them to the last real failover.
    fn record_last_failover(
        &self,
        phase: FailoverPhase,
        total: Option<f64>,
        step_seconds: &[(String, f64)],
        data_loss: Option<f64>,
    ) {
        if self.mode() == FailoverMode::DryRun {
            return;
        }
        let metrics = &self.ctx.metrics;
        let plan = PlanLabels {
            namespace: self.plan.namespace().unwrap_or_default(),
            plan: self.plan.name_any(),
        };
        for (step, seconds) in step_seconds {
            metrics
                .last_failover_step
                .get_or_create(&PlanStepLabels {
                    namespace: plan.namespace.clone(),
                    plan: plan.plan.clone(),
                    step: step.clone(),
                })
                .set(*seconds);
        }
        if let Some(lag) = data_loss {
            metrics
                .last_failover_data_loss
                .get_or_create(&plan)
                .set(lag);
        }
        if let Some(t) = total
            && phase == FailoverPhase::Succeeded
        {
            metrics.failover_duration.observe(t);
            metrics.last_failover_rto.get_or_create(&plan).set(t);
        }
    }

    /// Records this failover (and, on success, the new active region) on the plan.
    async fn mark_plan(&self, phase: FailoverPhase) -> Result<(), kube::Error> {
        let moved = phase == FailoverPhase::Succeeded && self.mode() != FailoverMode::DryRun;
        let active = moved.then(|| self.target());
        let ns = self.plan.namespace().unwrap_or_default();
        let plans: Api<DisasterRecoveryPlan> = Api::namespaced(self.ctx.client.clone(), &ns);
        let mut status = json!({
            "lastFailover": LastFailover {
                name: self.fo.name_any(),
                target_region: self.target().to_string(),
                phase: Some(format!("{phase:?}")),
            }
        });
        // This field manager owns activeRegion once it has set it, so every apply carries it;
        // leaving it out would delete it.
        let current = engine::active_region(&self.plan);
        if let Some(region) = active.or(current.as_deref()) {
            status["activeRegion"] = json!(region);
            self.ctx.metrics.set_active_region(
                &self.plan.name_any(),
                self.plan.spec.regions.iter().map(|r| r.name.as_str()),
                region,
            );
        }
        apply_status(
            &plans,
            &self.plan.name_any(),
            FAILOVER_FIELD_MANAGER,
            &status,
        )
        .await
    }

    // ---- Preflight ------------------------------------------------------------------

    /// Read-only checks; every failure is returned, none stops the others.
    async fn preflight(&self) -> Vec<String> {
        let deadline = self.deadline(Step::Preflight);
        let spec = &self.plan.spec;
        // Independent checks run concurrently; every failure is kept.
        let mut checks: Vec<futures::future::BoxFuture<'_, Vec<String>>> = Vec::new();
        checks.push(Box::pin(self.check_workloads_and_images(deadline)));
        for db in &spec.databases {
            checks.push(Box::pin(self.check_database(db, deadline)));
        }
        for zone in &spec.dns {
            checks.push(Box::pin(self.check_zone(zone, deadline)));
        }
        if self.mode() == FailoverMode::Planned {
            checks.push(Box::pin(self.check_fence_targets(deadline)));
        }
        join_all(checks).await.into_iter().flatten().collect()
    }

    /// Workloads exist in the target cluster, and their images in the target's ECR.
    async fn check_workloads_and_images(&self, deadline: Instant) -> Vec<String> {
        let target = self.target();
        let aws_target = self.aws_region(target);
        let mut failures = Vec::new();
        let workloads = join_all(self.plan.spec.workloads.iter().map(|w| async move {
            let r = self
                .retry(Step::Preflight, deadline, || {
                    self.clusters.workload(target, w)
                })
                .await;
            (w, r)
        }))
        .await;
        let mut images = std::collections::BTreeSet::new();
        for (w, r) in workloads {
            match r {
                Ok(Some(state)) => images.extend(state.images),
                Ok(None) => failures.push(format!(
                    "workload {} {}/{} not found in {target}",
                    w.kind, w.namespace, w.name
                )),
                Err(e) => failures.push(format!(
                    "workload {} {}/{} in {target}: {e}",
                    w.kind, w.namespace, w.name
                )),
            }
        }
        let found = join_all(images.iter().filter_map(|image| {
            let (repo, reference) = parse_ecr_image(image)?;
            let aws_target = &aws_target;
            Some(async move {
                let r = self
                    .retry(Step::Preflight, deadline, || {
                        self.aws.image_exists(aws_target, &repo, &reference)
                    })
                    .await;
                (image, format!("{repo}:{reference}"), r)
            })
        }))
        .await;
        let mut missing = Vec::new();
        for (image, short, r) in found {
            match r {
                Ok(true) => {}
                Ok(false) => missing.push(short),
                Err(e) => failures.push(format!("checking image {image} in ECR {aws_target}: {e}")),
            }
        }
        if !missing.is_empty() {
            failures.push(format!(
                "images missing from ECR in {aws_target}: {}",
                missing.join(", ")
            ));
        }
        failures
    }

    /// Planned: the old region's cluster answers and has the workloads to fence.
    async fn check_fence_targets(&self, deadline: Instant) -> Vec<String> {
        let source = self.source().await;
        let targets = engine::fence_targets(&self.plan.spec, &source);
        let found = join_all(targets.iter().map(|t| {
            let w = &self.plan.spec.workloads[t.workload];
            async move {
                let r = self
                    .retry(Step::Preflight, deadline, || {
                        self.clusters.workload(&t.region, w)
                    })
                    .await;
                (w, r)
            }
        }))
        .await;
        found
            .into_iter()
            .filter_map(|(w, r)| match r {
                Ok(Some(_)) => None,
                Ok(None) => Some(format!(
                    "workload {} {}/{} to fence not found in {source}",
                    w.kind, w.namespace, w.name
                )),
                Err(e) => Some(format!(
                    "cannot reach {source} to fence {}/{}: {e}",
                    w.namespace, w.name
                )),
            })
            .collect()
    }

    /// The target member exists and is healthy; lag is within the RPO where that matters.
    async fn check_database(&self, db: &DatabaseSpec, deadline: Instant) -> Vec<String> {
        let rpo = parse_duration(&self.plan.spec.objectives.rpo).unwrap_or_default();
        let (health, lag) = tokio::join!(
            self.target_db_health(db, deadline),
            self.measure_lag(db, Step::Preflight, deadline)
        );
        let mut failures = Vec::new();
        if let Err(e) = health {
            failures.push(format!("database {}: {e}", db.name));
        }
        match lag {
            Ok(lag) => {
                let over = lag.is_none_or(|l| l > rpo.as_secs_f64());
                let fatal = match self.mode() {
                    FailoverMode::DryRun => true,
                    FailoverMode::Unplanned => !self.fo.spec.allow_data_loss,
                    FailoverMode::Planned => false,
                };
                if over && fatal {
                    failures.push(format!(
                        "database {}: replication lag {} exceeds the RPO {}s",
                        db.name,
                        lag.map(|l| format!("{l}s"))
                            .unwrap_or_else(|| "unknown".into()),
                        rpo.as_secs_f64()
                    ));
                }
            }
            Err(e) => failures.push(format!("database {}: measuring lag: {e}", db.name)),
        }
        failures
    }

    /// The zone exists; the target's health checks are healthy.
    async fn check_zone(
        &self,
        zone: &crate::api::HostedZoneSpec,
        deadline: Instant,
    ) -> Vec<String> {
        let target = self.target();
        let mut failures = Vec::new();
        match self
            .retry(Step::Preflight, deadline, || {
                self.aws.hosted_zone_exists(&zone.hosted_zone_id)
            })
            .await
        {
            Ok(true) => {}
            Ok(false) => failures.push(format!("hosted zone {} not found", zone.hosted_zone_id)),
            Err(e) => failures.push(format!("hosted zone {}: {e}", zone.hosted_zone_id)),
        }
        for record in &zone.records {
            for t in record.targets.iter().filter(|t| t.region == target) {
                let Some(hc) = &t.health_check_id else {
                    continue;
                };
                match self
                    .retry(Step::Preflight, deadline, || {
                        self.aws.health_check_healthy(hc)
                    })
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => failures.push(format!(
                        "record {}: health check {hc} for {target} is failing",
                        record.name
                    )),
                    Err(e) => failures.push(format!("health check {hc}: {e}")),
                }
            }
        }
        failures
    }

    /// A member cluster's ARN, looked up once.
    async fn cluster_arn(
        &self,
        step: Step,
        deadline: Instant,
        region: &str,
        member: &str,
    ) -> Result<String, String> {
        let key = format!("{region}/{member}");
        if let Some(arn) = self.cluster_arns.lock().await.get(&key) {
            return Ok(arn.clone());
        }
        let arn = self
            .retry(step, deadline, || self.aws.cluster_arn(region, member))
            .await
            .map_err(|e| e.message)?
            .ok_or_else(|| format!("cluster {member} not found in {region}"))?;
        self.cluster_arns.lock().await.insert(key, arn.clone());
        Ok(arn)
    }

    fn target_member<'a>(&self, db: &'a DatabaseSpec) -> Option<&'a str> {
        engine::member(db, self.target())
    }

    async fn target_db_health(&self, db: &DatabaseSpec, deadline: Instant) -> Result<(), String> {
        let region = self.aws_region(self.target());
        let member = self
            .target_member(db)
            .ok_or_else(|| format!("no member in {}", self.target()))?;
        if db.rds.is_some() {
            let obs = self
                .retry(Step::Preflight, deadline, || {
                    self.aws.describe_instance(&region, member)
                })
                .await
                .map_err(|e| e.message)?;
            match obs {
                None => Err(format!("instance {member} not found in {region}")),
                Some(o) if o.status != "available" => {
                    Err(format!("instance {member} is {}", o.status))
                }
                // Promoting a standalone instance (e.g. the former primary before failback)
                // would make stale data the writer.
                Some(o) if !o.has_source => Err(format!(
                    "instance {member} is not a read replica; rebuild it as a replica of the \
                     current primary before failing over to it"
                )),
                Some(_) => Ok(()),
            }
        } else if let Some(aurora) = &db.aurora_global {
            let arn = self
                .cluster_arn(Step::Preflight, deadline, &region, member)
                .await?;
            let obs = self
                .retry(Step::Preflight, deadline, || {
                    self.aws
                        .describe_global_cluster(&region, &aurora.global_cluster_identifier)
                })
                .await
                .map_err(|e| e.message)?;
            match obs {
                None => Err(format!(
                    "global cluster {} not found",
                    aurora.global_cluster_identifier
                )),
                Some(o) if !o.member_arns.contains(&arn) => Err(format!(
                    "{member} is not a member of {}",
                    aurora.global_cluster_identifier
                )),
                Some(o) if o.status != "available" => Err(format!(
                    "global cluster {} is {}",
                    aurora.global_cluster_identifier, o.status
                )),
                Some(_) => Ok(()),
            }
        } else {
            Err("neither rds nor auroraGlobal".into())
        }
    }

    /// Replication lag of a database, read from the target region (it survives the loss
    /// of the source region).
    async fn measure_lag(
        &self,
        db: &DatabaseSpec,
        step: Step,
        deadline: Instant,
    ) -> Result<Option<f64>, String> {
        let region = self.aws_region(self.target());
        let source = engine::lag_source(db, self.target())
            .ok_or_else(|| format!("no member in {}", self.target()))?;
        let lag = self
            .retry(step, deadline, || self.aws.replica_lag(&region, &source))
            .await
            .map_err(|e| e.message)?;
        if let Some(l) = lag {
            self.ctx
                .metrics
                .set_replication_lag(&self.plan.name_any(), &db.name, self.target(), l);
        }
        Ok(lag)
    }

    // ---- Fence ------------------------------------------------------------------------

    async fn fence(&self) -> Result<(StepState, String), StepError> {
        let source = self.source().await;
        let deadline = self.deadline(Step::Fence);
        let targets = engine::fence_targets(&self.plan.spec, &source);
        let mut notes = Vec::new();
        let mut unreachable = Vec::new();
        if self.mode() == FailoverMode::Unplanned {
            for t in &targets {
                let w = &self.plan.spec.workloads[t.workload];
                match self.scale_one(Step::Fence, t, deadline).await {
                    Ok(_) => notes.push(format!("{}/{} → 0", w.namespace, w.name)),
                    Err(e) => unreachable.push(format!("{}/{}: {e}", w.namespace, w.name)),
                }
            }
        } else {
            // Wait until the fenced pods are gone, so no singleton or writer ever runs in
            // both regions.
            self.scale_and_wait(Step::Fence, &targets, deadline, true)
                .await
                .map_err(|e| StepError::Failed(format!("fencing {source}: {e}")))?;
            notes.extend(targets.iter().map(|t| {
                let w = &self.plan.spec.workloads[t.workload];
                format!("{}/{} → 0", w.namespace, w.name)
            }));
        }
        if self.mode() == FailoverMode::Planned {
            self.wait_zero_lag(deadline).await?;
            notes.push("replication lag reached 0".into());
        }
        if unreachable.is_empty() {
            Ok((
                StepState::Succeeded,
                format!("fenced {source}: {}", notes.join(", ")),
            ))
        } else {
            Ok((
                StepState::Skipped,
                format!("Skipped (region unreachable): {}", unreachable.join("; ")),
            ))
        }
    }

    async fn wait_zero_lag(&self, deadline: Instant) -> Result<(), StepError> {
        let waiting_since = Instant::now();
        loop {
            let mut pending = Vec::new();
            let lags = join_all(
                self.plan
                    .spec
                    .databases
                    .iter()
                    .map(|db| self.measure_lag(db, Step::Fence, deadline)),
            )
            .await;
            for (db, lag) in self.plan.spec.databases.iter().zip(lags) {
                match lag {
                    Ok(Some(l)) if l <= 0.0 => {}
                    Ok(lag) => pending.push(format!(
                        "{}: {}",
                        db.name,
                        lag.map(|l| format!("{l}s"))
                            .unwrap_or_else(|| "unknown".into())
                    )),
                    Err(e) => {
                        return Err(StepError::Failed(format!(
                            "measuring lag of {}: {e}",
                            db.name
                        )));
                    }
                }
            }
            if pending.is_empty() {
                *self.zero_lag_at.lock().await = Some(Instant::now());
                return Ok(());
            }
            let delay = poll_delay(waiting_since.elapsed());
            if Instant::now() + delay >= deadline {
                return Err(StepError::Failed(format!(
                    "replication lag did not reach 0 before the fence deadline ({})",
                    pending.join(", ")
                )));
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// Scales one workload unless it already has the count. Returns whether it patched.
    async fn scale_one(
        &self,
        step: Step,
        t: &ScaleTarget,
        deadline: Instant,
    ) -> Result<bool, String> {
        let w = &self.plan.spec.workloads[t.workload];
        let current = self
            .retry(step, deadline, || self.clusters.workload(&t.region, w))
            .await
            .map_err(|e| e.text())?;
        match current {
            None => Err(format!(
                "{} {}/{} not found in {}",
                w.kind, w.namespace, w.name, t.region
            )),
            Some(c) if c.replicas == t.replicas => Ok(false),
            Some(_) => {
                self.retry(step, deadline, || {
                    self.clusters.scale(&t.region, w, t.replicas)
                })
                .await
                .map_err(|e| e.text())?;
                Ok(true)
            }
        }
    }

    /// Scales every target, then (if `wait`) waits until each reports ready replicas.
    async fn scale_and_wait(
        &self,
        step: Step,
        targets: &[ScaleTarget],
        deadline: Instant,
        wait: bool,
    ) -> Result<(), String> {
        let scaled = join_all(targets.iter().map(|t| self.scale_one(step, t, deadline))).await;
        if let Some(Err(e)) = scaled.into_iter().find(Result::is_err) {
            return Err(e);
        }
        if !wait {
            return Ok(());
        }
        let waiting_since = Instant::now();
        loop {
            let mut waiting = Vec::new();
            for t in targets {
                let w = &self.plan.spec.workloads[t.workload];
                match self.clusters.workload(&t.region, w).await {
                    // Scaled up: enough ready. Scaled down: the extra pods are gone.
                    Ok(Some(s))
                        if s.observed_current
                            && s.ready_replicas >= t.replicas
                            && s.current_replicas <= t.replicas => {}
                    Ok(Some(s)) => waiting.push(format!(
                        "{}/{} {}/{} ready",
                        w.namespace, w.name, s.ready_replicas, t.replicas
                    )),
                    Ok(None) => waiting.push(format!("{}/{} missing", w.namespace, w.name)),
                    Err(e) => waiting.push(format!("{}/{}: {e}", w.namespace, w.name)),
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            let delay = poll_delay(waiting_since.elapsed());
            if Instant::now() + delay >= deadline {
                return Err(format!(
                    "not ready before the deadline: {}",
                    waiting.join(", ")
                ));
            }
            tokio::time::sleep(delay).await;
        }
    }

    // ---- Promote ------------------------------------------------------------------------

    async fn promote(&self) -> Result<String, StepError> {
        {
            let mut status = self.status.lock().await;
            for db in &self.plan.spec.databases {
                if !status.databases.iter().any(|d| d.name == db.name) {
                    status.databases.push(DatabaseProgress {
                        name: db.name.clone(),
                        state: DatabaseState::Pending,
                        lag_seconds: None,
                    });
                }
            }
        }
        let deadline = self.deadline(Step::PromoteDatabases);
        let results = join_all(
            self.plan
                .spec
                .databases
                .iter()
                .map(|db| self.promote_one(db, deadline)),
        )
        .await;
        let mut failures = Vec::new();
        for (db, r) in self.plan.spec.databases.iter().zip(results) {
            match r {
                Ok(()) => {}
                Err(StepError::Failed(m)) => failures.push(format!("{}: {m}", db.name)),
                Err(e) => return Err(e),
            }
        }
        if failures.is_empty() {
            Ok(format!(
                "{} databases writable in {}",
                self.plan.spec.databases.len(),
                self.target()
            ))
        } else {
            Err(StepError::Failed(failures.join("; ")))
        }
    }

    async fn db_state(&self, name: &str) -> DatabaseState {
        self.status
            .lock()
            .await
            .databases
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.state)
            .unwrap_or_default()
    }

    async fn set_db(
        &self,
        name: &str,
        state: DatabaseState,
        lag: Option<Option<f64>>,
    ) -> Result<(), kube::Error> {
        self.update(|s| {
            if let Some(d) = s.databases.iter_mut().find(|d| d.name == name) {
                d.state = state;
                if let Some(l) = lag {
                    d.lag_seconds = l;
                }
            }
        })
        .await
    }

    async fn promote_one(&self, db: &DatabaseSpec, deadline: Instant) -> Result<(), StepError> {
        let region = self.aws_region(self.target());
        let member = self
            .target_member(db)
            .ok_or_else(|| StepError::Failed(format!("no member in {}", self.target())))?
            .to_string();
        let state = self.db_state(&db.name).await;
        if state == DatabaseState::Promoted {
            return Ok(());
        }
        // Gate on lag, measured now, unless the call may already have been sent. The lag is
        // recorded with the next status write.
        let mut measured_lag = None;
        if Requested::from(state) == Requested::No {
            // The planned fence measured zero lag with writers stopped moments ago; without
            // writes lag cannot grow, so that reading stands. Otherwise measure now.
            let fenced_recently = self
                .zero_lag_at
                .lock()
                .await
                .is_some_and(|t| t.elapsed() < Duration::from_secs(5));
            let lag = if fenced_recently {
                Some(0.0)
            } else {
                self.measure_lag(db, Step::PromoteDatabases, deadline)
                    .await
                    .map_err(StepError::Failed)?
            };
            let max = self
                .fo
                .spec
                .max_data_loss
                .as_deref()
                .and_then(|m| parse_duration(m).ok());
            let aurora_gate = match db.aurora_global {
                Some(_) => engine::aurora_failover_gate(self.mode(), self.fo.spec.allow_data_loss),
                None => Ok(()),
            };
            if let Err(why) = aurora_gate.and(engine::promotion_gate(
                self.mode(),
                self.fo.spec.allow_data_loss,
                max,
                lag,
            )) {
                self.set_db(&db.name, DatabaseState::Gated, Some(lag))
                    .await?;
                return Err(StepError::Failed(why));
            }
            measured_lag = Some(lag);
        }
        let target_arn = match &db.aurora_global {
            Some(_) => Some(
                self.cluster_arn(Step::PromoteDatabases, deadline, &region, &member)
                    .await
                    .map_err(StepError::Failed)?,
            ),
            None => None,
        };
        let waiting_since = Instant::now();
        loop {
            let requested = Requested::from(self.db_state(&db.name).await);
            let step = match (&db.aurora_global, &target_arn) {
                (Some(aurora), Some(arn)) => {
                    let obs = self
                        .retry(Step::PromoteDatabases, deadline, || {
                            self.aws
                                .describe_global_cluster(&region, &aurora.global_cluster_identifier)
                        })
                        .await
                        .map_err(|e| StepError::Failed(e.message))?;
                    engine::aurora_step(obs.as_ref(), arn, requested)
                }
                _ => {
                    let obs = self
                        .retry(Step::PromoteDatabases, deadline, || {
                            self.aws.describe_instance(&region, &member)
                        })
                        .await
                        .map_err(|e| StepError::Failed(e.message))?;
                    engine::rds_step(obs.as_ref(), requested)
                }
            };
            match step {
                DbStep::Done => {
                    self.set_db(&db.name, DatabaseState::Promoted, measured_lag.take())
                        .await?;
                    return Ok(());
                }
                DbStep::Fail(why) => return Err(StepError::Failed(why)),
                DbStep::Act => {
                    // Recorded before the call: a restart in between re-checks AWS first.
                    self.set_db(&db.name, DatabaseState::Requesting, measured_lag.take())
                        .await?;
                    let sent = match (&db.aurora_global, &target_arn) {
                        (Some(aurora), Some(arn)) => {
                            let id = &aurora.global_cluster_identifier;
                            let how = if self.mode() == FailoverMode::Planned {
                                WriterMove::Switchover
                            } else {
                                WriterMove::FailoverAllowingDataLoss
                            };
                            self.retry(Step::PromoteDatabases, deadline, || {
                                self.aws.move_global_writer(&region, id, arn, how)
                            })
                            .await
                        }
                        _ => {
                            self.retry(Step::PromoteDatabases, deadline, || {
                                self.aws.promote_read_replica(&region, &member)
                            })
                            .await
                        }
                    };
                    sent.map_err(|e| StepError::Failed(e.message))?;
                    self.set_db(&db.name, DatabaseState::Requested, None)
                        .await?;
                }
                DbStep::Wait(_) => {}
            }
            let delay = poll_delay(waiting_since.elapsed());
            if Instant::now() + delay >= deadline {
                return Err(StepError::Failed(format!(
                    "{member} not writable before the promotion deadline"
                )));
            }
            tokio::time::sleep(delay).await;
        }
    }

    // ---- DNS ------------------------------------------------------------------------------

    async fn switch_dns(&self) -> Result<String, StepError> {
        let deadline = self.deadline(Step::SwitchDns);
        let batches = engine::dns_batches(&self.plan.spec, self.target());
        let results = join_all(batches.iter().map(|b| self.switch_zone(b, deadline))).await;
        let mut notes = Vec::new();
        for r in results {
            notes.push(r?);
        }
        Ok(notes.join("; "))
    }

    async fn switch_zone(&self, batch: &ZoneBatch, deadline: Instant) -> Result<String, StepError> {
        let zone = &batch.hosted_zone_id;
        let recorded = self
            .status
            .lock()
            .await
            .dns_changes
            .iter()
            .find(|c| &c.hosted_zone_id == zone)
            .cloned();
        let change_id = match recorded.and_then(|c| c.change_id) {
            Some(id) => id,
            None => {
                // Check before acting: a change sent before a restart is already visible.
                let current = self
                    .retry(Step::SwitchDns, deadline, || self.aws.list_records(zone))
                    .await
                    .map_err(|e| StepError::Failed(format!("{zone}: {}", e.message)))?;
                if batch
                    .records
                    .iter()
                    .all(|r| engine::record_present(r, &current))
                {
                    self.set_dns(zone, None, "INSYNC").await?;
                    return Ok(format!(
                        "{zone}: records already point at {}",
                        self.target()
                    ));
                }
                self.set_dns(zone, None, "Submitting").await?;
                let id = self
                    .retry(Step::SwitchDns, deadline, || {
                        self.aws.change_records(zone, &batch.records)
                    })
                    .await
                    .map_err(|e| StepError::Failed(format!("{zone}: {}", e.message)))?;
                self.set_dns(zone, Some(id.clone()), "PENDING").await?;
                id
            }
        };
        let waiting_since = Instant::now();
        loop {
            let insync = self
                .retry(Step::SwitchDns, deadline, || {
                    self.aws.change_insync(&change_id)
                })
                .await
                .map_err(|e| StepError::Failed(format!("{zone}: {}", e.message)))?;
            if insync {
                self.set_dns(zone, Some(change_id.clone()), "INSYNC")
                    .await?;
                return Ok(format!(
                    "{zone}: {} record sets INSYNC ({change_id})",
                    batch.records.len()
                ));
            }
            let delay = poll_delay(waiting_since.elapsed());
            if Instant::now() + delay >= deadline {
                return Err(StepError::Failed(format!(
                    "{zone}: change {change_id} not INSYNC before the DNS deadline"
                )));
            }
            tokio::time::sleep(delay).await;
        }
    }

    async fn set_dns(
        &self,
        zone: &str,
        id: Option<String>,
        state: &str,
    ) -> Result<(), kube::Error> {
        self.update(
            |s| match s.dns_changes.iter_mut().find(|c| c.hosted_zone_id == zone) {
                Some(c) => {
                    if id.is_some() {
                        c.change_id = id;
                    }
                    c.status = Some(state.into());
                }
                None => s.dns_changes.push(DnsChange {
                    hosted_zone_id: zone.into(),
                    change_id: id,
                    status: Some(state.into()),
                }),
            },
        )
        .await
    }

    // ---- Verify ---------------------------------------------------------------------------

    async fn verify(&self) -> Result<(StepState, String), StepError> {
        let deadline = self.deadline(Step::Verify);
        let active = engine::warmup_targets(&self.plan.spec, self.target());
        let source = self.source().await;
        let standby = engine::standby_targets(&self.plan.spec, &source);
        let old_deadline = if self.mode() == FailoverMode::Unplanned {
            Instant::now() + Duration::from_secs(10)
        } else {
            deadline
        };
        // DNS already points at the target, so the old region can shrink while the
        // target's readiness is confirmed.
        let (target_ready, old_scaled) = tokio::join!(
            self.scale_and_wait(Step::Verify, &active, deadline, true),
            self.scale_and_wait(Step::Verify, &standby, old_deadline, false)
        );
        target_ready.map_err(StepError::Failed)?;
        match old_scaled {
            Ok(()) => Ok((
                StepState::Succeeded,
                format!("{} ready; {source} scaled to standby", self.target()),
            )),
            Err(e) if self.mode() == FailoverMode::Unplanned => Ok((
                StepState::Skipped,
                format!(
                    "{} ready; Skipped (region unreachable) scaling {source} to standby: {e}",
                    self.target()
                ),
            )),
            Err(e) => Err(StepError::Failed(format!(
                "scaling {source} to standby: {e}"
            ))),
        }
    }
}
