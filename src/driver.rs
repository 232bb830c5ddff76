//! Runs a Failover's steps: observes the world through the effectors, asks `engine` what
//! to do, acts, and records every step in status before and after its side effect, so a
//! restarted operator resumes where the last one stopped.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::join_all;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tokio::sync::Mutex;
// tokio's Instant is std's outside a paused runtime; the simulation pauses it.
use tokio::time::Instant;
use tracing::{info, warn};

use crate::api::{
    DataLossEstimate, DatabaseLag, DatabaseProgress, DatabaseSpec, DatabaseState,
    DisasterRecoveryPlan, DnsChange, Failover, FailoverMode, FailoverPhase, FailoverStatus,
    FailoverTimings, LastFailover, PlanSnapshot, StepState, StepStatus,
};
use crate::aws::{Aws, AwsError, WriterMove, parse_ecr_image};
use crate::clusters::{ClusterError, Clusters, WorkloadState};
use crate::conditions::{self, DesiredCondition};
use crate::controller::Context;
use crate::engine::{
    self, Admission, DbStep, Lag, Requested, ScaleTarget, Step, poll_delay, retry_delay,
};
use crate::leadership::LeaseCheck;
use crate::metrics::{FailoverLabels, Metrics, PlanLabels, PlanStepLabels, StepLabels};
use crate::store::{KubeStatusStore, StatusStore};
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
    metrics: Arc<Metrics>,
    store: Arc<dyn StatusStore>,
    lease: Arc<dyn LeaseCheck>,
    aws: Arc<dyn Aws>,
    clusters: Arc<dyn Clusters>,
    plan: DisasterRecoveryPlan,
    fo: Failover,
    status: Mutex<FailoverStatus>,
    /// The Failover's resourceVersion as this driver last wrote or read it. Every status
    /// write is conditional on it, so a writer holding an older copy (a deposed leader, a
    /// second process) loses with 409 instead of overwriting newer intent records.
    resource_version: Mutex<Option<String>>,
    started: Instant,
    /// Cluster ARNs resolved so far (they do not change during a failover).
    cluster_arns: Mutex<std::collections::HashMap<String, String>>,
    /// When a planned fence last saw zero lag on every database, writers already stopped.
    zero_lag_at: Mutex<Option<Instant>>,
    /// The fence targets (workload indexes) an Unplanned Fence step could not scale to 0;
    /// None after a restart, when only the step's state is known.
    unfenced: Mutex<Option<Vec<usize>>>,
}

impl Driver {
    pub fn new(
        ctx: Arc<Context>,
        aws: Arc<dyn Aws>,
        clusters: Arc<dyn Clusters>,
        plan: DisasterRecoveryPlan,
        fo: Failover,
    ) -> Self {
        let store = Arc::new(KubeStatusStore::new(
            ctx.clone(),
            &fo.namespace().unwrap_or_default(),
            &plan.namespace().unwrap_or_default(),
        ));
        let lease = ctx.leadership.clone();
        Self::with_effects(ctx.metrics.clone(), store, lease, aws, clusters, plan, fo)
    }

    /// A driver on any status store and leader check (`new` uses the API server's).
    pub fn with_effects(
        metrics: Arc<Metrics>,
        store: Arc<dyn StatusStore>,
        lease: Arc<dyn LeaseCheck>,
        aws: Arc<dyn Aws>,
        clusters: Arc<dyn Clusters>,
        plan: DisasterRecoveryPlan,
        fo: Failover,
    ) -> Self {
        let status = fo.status.clone().unwrap_or_default();
        let resource_version = fo.metadata.resource_version.clone();
        Self {
            metrics,
            store,
            lease,
            aws,
            clusters,
            plan,
            fo,
            status: Mutex::new(status),
            resource_version: Mutex::new(resource_version),
            started: Instant::now(),
            cluster_arns: Mutex::new(Default::default()),
            zero_lag_at: Mutex::new(None),
            unfenced: Mutex::new(None),
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

    /// Applies `change` to status and writes it (SSA on /status), conditional on the
    /// resourceVersion this driver last saw. Writes are serialized by the status lock, so
    /// a 409 means someone else wrote: this driver stops rather than overwrite.
    async fn update(&self, change: impl FnOnce(&mut FailoverStatus)) -> Result<(), kube::Error> {
        let mut status = self.status.lock().await;
        if self.lease.deposed() {
            return Err(self.lease.deposed_error());
        }
        change(&mut status);
        status.observed_generation = self.fo.metadata.generation;
        let name = self.fo.name_any();
        let mut version = self.resource_version.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .store
                .write_failover_status(&name, &status, version.as_deref())
                .await
            {
                Ok(written) => {
                    *version = written;
                    return Ok(());
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    warn!(failover = %name, "status changed under this driver; stopping");
                    return Err(kube::Error::Api(e));
                }
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
        let store = self.store.clone();
        let fo = self.fo.clone();
        let (reason, action) = (reason.to_string(), action.to_string());
        tokio::spawn(async move { store.publish(&fo, type_, &reason, &action, note).await });
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
                // A step resumed after a restart keeps its start, so its deadline holds; a
                // step retried after failing starts a new attempt with a new deadline.
                if st.started_at.is_none() || st.state != StepState::Running {
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
            self.metrics
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

    /// The step's deadline, counted from its recorded start so that it survives restarts.
    async fn deadline(&self, step: Step) -> Instant {
        let timeout = engine::step_timeout(&self.plan.spec, step, self.mode());
        let started = self
            .status
            .lock()
            .await
            .steps
            .iter()
            .find(|st| st.name == step.name())
            .and_then(|st| st.started_at.clone());
        let elapsed = started
            .map(|t| {
                Timestamp::now()
                    .duration_since(t.0)
                    .as_secs_f64()
                    .clamp(0.0, timeout.as_secs_f64())
            })
            .unwrap_or(0.0);
        Instant::now() + timeout.saturating_sub(Duration::from_secs_f64(elapsed))
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
                let snapshot = PlanSnapshot {
                    generation: self.plan.metadata.generation,
                    spec: self.plan.spec.clone(),
                };
                self.update(|s| {
                    s.phase = Some(FailoverPhase::Running);
                    s.plan_snapshot = Some(snapshot);
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

    async fn source_region(&self) -> Option<String> {
        self.status.lock().await.source_region.clone()
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
        // A rollback that started is finished, never turned back into the failover.
        let rolling_back = self.status.lock().await.rolling_back.clone();
        if let Some(reason) = rolling_back {
            return self.fail_before_promotion(reason).await;
        }
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
            let deadline = self.deadline(Step::WarmUp).await;
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

    /// A failure before any database was promoted. A planned failover undoes what it did:
    /// the rollback is recorded before it acts (a restart resumes the rollback, never the
    /// failover), and the target's writers and singletons are confirmed gone before the
    /// old region's come back, so none ever runs in both.
    async fn fail_before_promotion(&self, message: String) -> Result<Outcome, StepError> {
        if self.mode() != FailoverMode::Planned {
            return Err(StepError::Failed(message));
        }
        self.update(|s| s.rolling_back = Some(message.clone()))
            .await?;
        let source = self.source().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut undone = Vec::new();
        let mut not_undone = Vec::new();
        let warmed = self
            .step_state(Step::WarmUp)
            .await
            .is_some_and(|s| s != StepState::Pending);
        if warmed {
            let target_down = engine::standby_targets(&self.plan.spec, self.target());
            self.undo_scale(&target_down, deadline, &mut undone, &mut not_undone)
                .await;
            if let Err(e) = self
                .scale_and_wait(Step::Fence, &target_down, deadline, true)
                .await
            {
                not_undone.push(format!(
                    "{source} left fenced, because {} did not scale down: {e}",
                    self.target()
                ));
            }
        }
        if not_undone.is_empty() {
            let unfence = engine::unfence_targets(&self.plan.spec, &source);
            self.undo_scale(&unfence, deadline, &mut undone, &mut not_undone)
                .await;
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

    async fn undo_scale(
        &self,
        targets: &[ScaleTarget],
        deadline: Instant,
        undone: &mut Vec<String>,
        not_undone: &mut Vec<String>,
    ) {
        for t in targets {
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
    }

    /// Ends the failover in `phase`.
    async fn finish(&self, phase: FailoverPhase, message: String) -> Result<(), kube::Error> {
        let generation = self.fo.metadata.generation;
        let finished = now();
        let mut total = None;
        let mut step_seconds = Vec::new();
        let mut data_loss = None;
        // The plan first: what this failover moved (activeRegion) and what it could not
        // fence (pending fences) must never be lost to a crash after the terminal phase is
        // written, because a terminal Failover is never run again. Recording twice is
        // harmless: the plan write is idempotent.
        if phase != FailoverPhase::Rejected {
            self.mark_plan(phase).await?;
        }
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
            // Promoted on unknown lag (allowed only with allowDataLoss): the loss is unknown,
            // which must not read as none.
            let unknown: Vec<String> = s
                .databases
                .iter()
                .filter(|d| d.lag_seconds.is_none() && Requested::from(d.state) != Requested::No)
                .map(|d| d.name.clone())
                .collect();
            if !lags.is_empty() || !unknown.is_empty() {
                let max_lag_seconds = lags.iter().map(|l| l.lag_seconds).fold(0.0, f64::max);
                data_loss = Some(if unknown.is_empty() {
                    max_lag_seconds
                } else {
                    f64::NAN
                });
                s.data_loss = Some(DataLossEstimate {
                    max_lag_seconds,
                    databases: lags,
                    unknown_lag_databases: unknown,
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
        self.metrics
            .failovers
            .get_or_create(&FailoverLabels {
                mode,
                result: format!("{phase:?}"),
            })
            .inc();
        if phase != FailoverPhase::Rejected {
            self.record_last_failover(phase, total, &step_seconds, data_loss);
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
        let metrics = &self.metrics;
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

    /// Records this failover (and, on success, the new active region) on the plan. An
    /// Unplanned failover records what it could not fence in the old region in the same
    /// write that moves the active region, so no crash separates the two.
    async fn mark_plan(&self, phase: FailoverPhase) -> Result<(), kube::Error> {
        // The plan write is not tied to the Failover's resourceVersion, so a deposed leader
        // is stopped here as its status writes are.
        if self.lease.deposed() {
            return Err(self.lease.deposed_error());
        }
        let moved = phase == FailoverPhase::Succeeded && self.mode() != FailoverMode::DryRun;
        let active = moved.then(|| self.target());
        let last = LastFailover {
            name: self.fo.name_any(),
            target_region: self.target().to_string(),
            phase: Some(format!("{phase:?}")),
        };
        let source = self.source_region().await;
        let fences = match (active, source) {
            (Some(_), Some(source)) => {
                let unfenced = match self.unfenced.lock().await.clone() {
                    Some(missed) => engine::fence::Unfenced::Workloads(missed),
                    None => engine::fence::Unfenced::Unknown,
                };
                engine::fence::fences_to_record(
                    &self.plan.spec,
                    self.mode(),
                    &source,
                    self.step_state(Step::Fence).await,
                    &unfenced,
                    &self.fo.name_any(),
                    &now(),
                )
            }
            _ => Vec::new(),
        };
        let written = self
            .store
            .update_plan_fields(&self.plan.name_any(), &mut |f| {
                f.last_failover = Some(last.clone());
                if let Some(region) = active {
                    f.active_region = Some(region.to_string());
                }
                f.pending_fences = engine::fence::merge(&f.pending_fences, fences.clone());
            })
            .await;
        let fields = match written {
            Ok(fields) => fields,
            // Deleted mid-flight: the failover still finishes on its snapshot, and says
            // that there was no plan left to record it on.
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let note = format!(
                    "plan {} was deleted; this failover ({phase:?}) is not recorded on it",
                    self.plan.name_any()
                );
                warn!(failover = %self.fo.name_any(), "{note}");
                self.event(EventType::Warning, "PlanDeleted", "Finish", note)
                    .await;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if let Some(region) = fields.active_region.as_deref() {
            self.metrics.set_active_region(
                &self.plan.name_any(),
                self.plan.spec.regions.iter().map(|r| r.name.as_str()),
                region,
            );
        }
        if !fences.is_empty() {
            let names: Vec<String> = fences.iter().map(|f| f.describe()).collect();
            self.event(
                EventType::Warning,
                "FencePending",
                "Finish",
                format!(
                    "pending fences recorded on plan {}: {}",
                    self.plan.name_any(),
                    names.join(", ")
                ),
            )
            .await;
        }
        Ok(())
    }

    // ---- Preflight ------------------------------------------------------------------

    /// Read-only checks; every failure is returned, none stops the others.
    async fn preflight(&self) -> Vec<String> {
        let deadline = self.deadline(Step::Preflight).await;
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
            self.measure_lag(db, Step::Preflight, deadline, None)
        );
        let mut failures = Vec::new();
        if let Err(e) = health {
            failures.push(format!("database {}: {e}", db.name));
        }
        match lag {
            Ok(lag) => {
                let over = lag.seconds().is_none_or(|l| l > rpo.as_secs_f64());
                let fatal = match self.mode() {
                    FailoverMode::DryRun => true,
                    FailoverMode::Unplanned => !self.fo.spec.allow_data_loss,
                    FailoverMode::Planned => false,
                };
                if over && fatal {
                    failures.push(format!(
                        "database {}: replication lag {} is not within the RPO {}s",
                        db.name,
                        lag.describe(),
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
            Ok(true) => {
                // What Route 53 would refuse, or would leave ambiguous, is a preflight
                // failure, not a surprise after the databases are promoted.
                match self
                    .retry(Step::Preflight, deadline, || {
                        self.aws.list_records(&zone.hosted_zone_id)
                    })
                    .await
                {
                    Ok(current) => {
                        failures.extend(
                            engine::dns::zone_conflicts(zone, &current)
                                .into_iter()
                                .map(|c| format!("hosted zone {}: {c}", zone.hosted_zone_id)),
                        );
                        let changes =
                            engine::dns::zone_changes(&self.plan.spec, zone, target, &current);
                        if let Err(e) = engine::dns::pack(changes) {
                            failures.push(format!("hosted zone {}: {e}", zone.hosted_zone_id));
                        }
                    }
                    Err(e) => failures.push(format!(
                        "hosted zone {}: listing records: {e}",
                        zone.hosted_zone_id
                    )),
                }
            }
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
                Some(o) => match o.source {
                    None => Err(format!(
                        "instance {member} is not a read replica; rebuild it as a replica of \
                         the current primary before failing over to it"
                    )),
                    // Replicas of an old primary do not follow a promotion: promoting one
                    // that still replicates from it would lose every write made since.
                    Some(src) => {
                        let active = self.source().await;
                        let primary = engine::member(db, &active).unwrap_or_default();
                        if engine::source_is(&src, &self.aws_region(&active), primary) {
                            Ok(())
                        } else {
                            Err(format!(
                                "instance {member} replicates from {src}, not from the active \
                                 region's primary {primary} in {active}; promoting it would \
                                 lose every write made since; rebuild it as a replica of \
                                 {primary}"
                            ))
                        }
                    }
                },
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

    /// Replication lag of a database into the target region, read there (it survives the
    /// loss of the source region), and judged: it counts only if ≥ 0 and taken after
    /// `not_before` and within the plan's maxLagAge.
    async fn measure_lag(
        &self,
        db: &DatabaseSpec,
        step: Step,
        deadline: Instant,
        not_before: Option<SystemTime>,
    ) -> Result<Lag, String> {
        let region = self.aws_region(self.target());
        let source = engine::lag_source(db, self.target())
            .ok_or_else(|| format!("no member in {}", self.target()))?;
        let reading = self
            .retry(step, deadline, || self.aws.replica_lag(&region, &source))
            .await
            .map_err(|e| e.message)?;
        let now = SystemTime::now();
        let max_age = self.plan.spec.objectives.max_lag_age();
        let lag = engine::lag::judge(
            reading.as_ref(),
            engine::lag::fresh_after(now, max_age, not_before),
        );
        if let Some(l) = lag.seconds() {
            self.metrics
                .set_replication_lag(&self.plan.name_any(), &db.name, self.target(), l);
        }
        Ok(lag)
    }

    // ---- Fence ------------------------------------------------------------------------

    async fn fence(&self) -> Result<(StepState, String), StepError> {
        let source = self.source().await;
        let deadline = self.deadline(Step::Fence).await;
        let targets = engine::fence_targets(&self.plan.spec, &source);
        let mut notes = Vec::new();
        let mut unreachable = Vec::new();
        if self.mode() == FailoverMode::Unplanned {
            let mut unfenced = Vec::new();
            for t in &targets {
                let w = &self.plan.spec.workloads[t.workload];
                match self.scale_one(Step::Fence, t, deadline).await {
                    Ok(_) => notes.push(format!("{}/{} → 0", w.namespace, w.name)),
                    Err(e) => {
                        unfenced.push(t.workload);
                        unreachable.push(format!("{}/{}: {e}", w.namespace, w.name))
                    }
                }
            }
            *self.unfenced.lock().await = Some(unfenced);
        } else {
            // Wait until the fenced pods are gone, so no singleton or writer ever runs in
            // both regions.
            self.scale_and_wait(Step::Fence, &targets, deadline, true)
                .await
                .map_err(|e| StepError::Failed(format!("fencing {source}: {e}")))?;
            let fenced_at = now();
            self.update(|s| s.fenced_at = Some(fenced_at.clone()))
                .await?;
            notes.extend(targets.iter().map(|t| {
                let w = &self.plan.spec.workloads[t.workload];
                format!("{}/{} → 0", w.namespace, w.name)
            }));
        }
        if self.mode() == FailoverMode::Planned {
            let fenced_at = self.lag_not_before().await.unwrap_or_else(SystemTime::now);
            self.wait_zero_lag(deadline, fenced_at).await?;
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

    /// Waits until every database shows zero lag on a datapoint taken after `fenced_at`.
    async fn wait_zero_lag(
        &self,
        deadline: Instant,
        fenced_at: SystemTime,
    ) -> Result<(), StepError> {
        let waiting_since = Instant::now();
        loop {
            let mut pending = Vec::new();
            let lags = join_all(
                self.plan
                    .spec
                    .databases
                    .iter()
                    .map(|db| self.measure_lag(db, Step::Fence, deadline, Some(fenced_at))),
            )
            .await;
            for (db, lag) in self.plan.spec.databases.iter().zip(lags) {
                match lag {
                    Ok(lag) if lag.is_zero() => {}
                    Ok(lag) => pending.push(format!("{}: {}", db.name, lag.describe())),
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
                            && s.current_replicas <= t.replicas =>
                    {
                        // status.replicas leaves out Terminating pods, which still run:
                        // a fenced writer or singleton counts as gone only without pods.
                        if let Some(running) = self.fenced_pods_left(t, &s).await {
                            waiting.push(format!(
                                "{}/{} {running} pods still running or terminating",
                                w.namespace, w.name
                            ));
                        }
                    }
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

    /// For a writer or singleton scaled down, the pods beyond the target that still exist
    /// (Terminating included), or None when there are none.
    async fn fenced_pods_left(&self, t: &ScaleTarget, s: &WorkloadState) -> Option<String> {
        let w = &self.plan.spec.workloads[t.workload];
        if !(w.writer || w.singleton) || s.replicas > t.replicas {
            return None;
        }
        let Some(selector) = &s.selector else {
            warn!(workload = %w.name, "no pod selector; cannot confirm its pods are gone");
            return None;
        };
        match self.clusters.pods(&t.region, w, selector).await {
            Ok(n) if n <= t.replicas.max(0) as usize => None,
            Ok(n) => Some(n.to_string()),
            Err(e) => Some(format!("unknown ({e})")),
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
        let deadline = self.deadline(Step::PromoteDatabases).await;
        self.gate_all(deadline).await?;
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

    /// Gates every database that is not yet cleared, and clears them all in one status
    /// write only if every one passes: one refused database means none is promoted.
    async fn gate_all(&self, deadline: Instant) -> Result<(), StepError> {
        let mut ungated = Vec::new();
        for db in &self.plan.spec.databases {
            if self.db_state(&db.name).await == DatabaseState::Pending {
                ungated.push(db);
            }
        }
        if ungated.is_empty() {
            return Ok(());
        }
        let verdicts = join_all(ungated.iter().map(|db| self.gate(db, deadline))).await;
        let refused: Vec<String> = ungated
            .iter()
            .zip(&verdicts)
            .filter_map(|(db, (_, v))| v.as_ref().err().map(|why| format!("{}: {why}", db.name)))
            .collect();
        let state = if refused.is_empty() {
            DatabaseState::Cleared
        } else {
            DatabaseState::Gated
        };
        self.update(|s| {
            for (db, (lag, _)) in ungated.iter().zip(&verdicts) {
                if let Some(d) = s.databases.iter_mut().find(|d| d.name == db.name) {
                    d.state = state;
                    d.lag_seconds = lag.as_ref().and_then(Lag::seconds);
                }
            }
        })
        .await?;
        if refused.is_empty() {
            Ok(())
        } else {
            Err(StepError::Failed(format!(
                "no database promoted, because the lag gate refused {}",
                refused.join("; ")
            )))
        }
    }

    /// One database's promotion gate: its lag (when measured) and the verdict.
    async fn gate(
        &self,
        db: &DatabaseSpec,
        deadline: Instant,
    ) -> (Option<Lag>, Result<(), String>) {
        if let (Some(_), Err(why)) = (
            &db.aurora_global,
            engine::aurora_failover_gate(self.mode(), self.fo.spec.allow_data_loss),
        ) {
            return (None, Err(why));
        }
        // The planned fence measured zero lag after the writers were gone, moments ago;
        // without writes lag cannot grow, so that reading stands. Otherwise measure now.
        let fenced_recently = self
            .zero_lag_at
            .lock()
            .await
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5));
        let lag = if fenced_recently {
            Lag::Known(0.0)
        } else {
            let not_before = self.lag_not_before().await;
            match self
                .measure_lag(db, Step::PromoteDatabases, deadline, not_before)
                .await
            {
                Ok(lag) => lag,
                Err(e) => return (None, Err(format!("measuring lag: {e}"))),
            }
        };
        let max = self
            .fo
            .spec
            .max_data_loss
            .as_deref()
            .and_then(|m| parse_duration(m).ok());
        let verdict =
            engine::lag::promotion_gate(self.mode(), self.fo.spec.allow_data_loss, max, &lag);
        (Some(lag), verdict)
    }

    /// A Planned failover's lag counts only if measured after the fence stopped the writers.
    async fn lag_not_before(&self) -> Option<SystemTime> {
        if self.mode() != FailoverMode::Planned {
            return None;
        }
        // Fenced but not recorded (a restart in between) → nothing measured yet counts.
        let fenced_at = self.status.lock().await.fenced_at.clone();
        Some(fenced_at.map_or_else(SystemTime::now, |t| SystemTime::from(t.0)))
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
        if Requested::from(state) == Requested::No && state != DatabaseState::Cleared {
            return Err(StepError::Failed("not cleared by the lag gate".into()));
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
        let mut unconfirmed = 0;
        loop {
            if unconfirmed > 0 && Instant::now() >= deadline {
                return Err(StepError::Failed(format!(
                    "{member}: promotion call not confirmed before the promotion deadline"
                )));
            }
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
                    self.set_db(&db.name, DatabaseState::Promoted, None).await?;
                    return Ok(());
                }
                DbStep::Fail(why) => return Err(StepError::Failed(why)),
                DbStep::Act => {
                    // Recorded before the call: a restart in between re-checks AWS first.
                    self.set_db(&db.name, DatabaseState::Requesting, None)
                        .await?;
                    self.bump_attempts(Step::PromoteDatabases).await;
                    // One attempt: after a transient error the call may have taken effect,
                    // so the next round describes the database before anything is resent.
                    let sent = match (&db.aurora_global, &target_arn) {
                        (Some(aurora), Some(arn)) => {
                            let id = &aurora.global_cluster_identifier;
                            let how = if self.mode() == FailoverMode::Planned {
                                WriterMove::Switchover
                            } else {
                                WriterMove::FailoverAllowingDataLoss
                            };
                            self.aws.move_global_writer(&region, id, arn, how).await
                        }
                        _ => self.aws.promote_read_replica(&region, &member).await,
                    };
                    match sent {
                        Ok(()) => {
                            self.set_db(&db.name, DatabaseState::Requested, None)
                                .await?
                        }
                        Err(e) if e.is_retryable() => {
                            unconfirmed += 1;
                            warn!(database = %db.name, error = %e, "promotion call not confirmed; observing first");
                            tokio::time::sleep(retry_delay(unconfirmed, fastrand::f64())).await;
                            continue;
                        }
                        Err(e) => return Err(StepError::Failed(e.message)),
                    }
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
        let deadline = self.deadline(Step::SwitchDns).await;
        let zones = &self.plan.spec.dns;
        let results = join_all(zones.iter().map(|z| self.switch_zone(z, deadline))).await;
        let mut notes = Vec::new();
        for r in results {
            notes.push(r?);
        }
        Ok(notes.join("; "))
    }

    /// Moves one zone in batches within Route 53's limits, one at a time (Route 53 refuses
    /// a change to a zone while an earlier one is PENDING). Each round observes the zone
    /// first and sends only what is missing, so a batch sent before a restart, or whose
    /// answer was lost, is not sent again.
    async fn switch_zone(
        &self,
        zone: &crate::api::HostedZoneSpec,
        deadline: Instant,
    ) -> Result<String, StepError> {
        let id = zone.hosted_zone_id.as_str();
        let failed = |m: String| StepError::Failed(format!("{id}: {m}"));
        // Batches Route 53 accepted, and refusals in a row (throttling, a prior change still
        // PENDING, errors whose outcome is unknown): the first is bounded by the batches the
        // zone needs, the second only by the deadline, with backoff.
        let mut accepted = 0;
        let mut refusals = 0;
        let mut max_accepted = None;
        loop {
            if let Some(change_id) = self.pending_dns_change(id).await {
                self.wait_insync(id, &change_id, deadline).await?;
            }
            let current = self
                .retry(Step::SwitchDns, deadline, || self.aws.list_records(id))
                .await
                .map_err(|e| failed(e.message))?;
            let changes = engine::dns::zone_changes(&self.plan.spec, zone, self.target(), &current);
            if changes.is_empty() {
                let sent = self.dns_batches_sent(id).await;
                let unconfirmed = self.dns_unconfirmed(id).await;
                let caveat = if unconfirmed > 0 {
                    format!(
                        "; {unconfirmed} of them answered with an error, so not waited on until INSYNC"
                    )
                } else {
                    String::new()
                };
                return Ok(format!(
                    "{id}: every plan record points at {} ({sent} batches{caveat})",
                    self.target()
                ));
            }
            let batches = engine::dns::pack(changes).map_err(failed)?;
            // Each accepted batch should leave one fewer; more accepted batches than the zone
            // needed means it does not take the changes, and resending them would not help.
            let limit = *max_accepted.get_or_insert(batches.len() + 2);
            if accepted >= limit || Instant::now() >= deadline {
                return Err(failed(format!(
                    "{} changes still missing after {accepted} accepted batches",
                    batches.iter().map(Vec::len).sum::<usize>(),
                )));
            }
            let batch = batches.into_iter().next().unwrap_or_default();
            let number = self.record_dns_intent(id, batch.len()).await?;
            self.bump_attempts(Step::SwitchDns).await;
            // One attempt: after an error the batch may or may not have been applied, so the
            // next round observes the zone before sending anything again.
            match self.aws.change_records(id, &batch).await {
                Ok(change_id) => {
                    accepted += 1;
                    refusals = 0;
                    self.set_dns(id, number, Some(change_id), "PENDING").await?
                }
                Err(e) if e.is_retryable() => {
                    refusals += 1;
                    self.set_dns(id, number, None, "Unconfirmed").await?;
                    warn!(zone = id, error = %e, "change batch not confirmed; observing the zone");
                    tokio::time::sleep(retry_delay(refusals, fastrand::f64())).await;
                }
                Err(e) => return Err(failed(e.message)),
            }
        }
    }

    /// Batches of a zone whose call failed in a way that may or may not have applied them.
    async fn dns_unconfirmed(&self, zone: &str) -> usize {
        let status = self.status.lock().await;
        status
            .dns_changes
            .iter()
            .filter(|c| c.hosted_zone_id == zone && c.change_id.is_none())
            .count()
    }

    /// The last batch of a zone that was answered but is not yet INSYNC.
    async fn pending_dns_change(&self, zone: &str) -> Option<String> {
        let status = self.status.lock().await;
        let last = status
            .dns_changes
            .iter()
            .rfind(|c| c.hosted_zone_id == zone)?;
        match (&last.change_id, last.status.as_deref()) {
            (Some(id), Some("PENDING")) => Some(id.clone()),
            _ => None,
        }
    }

    async fn dns_batches_sent(&self, zone: &str) -> usize {
        let status = self.status.lock().await;
        status
            .dns_changes
            .iter()
            .filter(|c| c.hosted_zone_id == zone)
            .count()
    }

    /// Records the intent to send the zone's next batch; returns its number (from 1). A
    /// batch that was never answered is reused, so refusals do not grow the status.
    async fn record_dns_intent(&self, zone: &str, changes: usize) -> Result<u32, kube::Error> {
        let mut number = 0;
        self.update(|s| {
            let last = s
                .dns_changes
                .iter_mut()
                .rfind(|c| c.hosted_zone_id == zone)
                .filter(|c| c.change_id.is_none());
            match last {
                Some(c) => {
                    number = c.batch.unwrap_or(1);
                    c.changes = Some(changes as u32);
                    c.status = Some("Submitting".into());
                }
                None => {
                    number = s
                        .dns_changes
                        .iter()
                        .filter(|c| c.hosted_zone_id == zone)
                        .count() as u32
                        + 1;
                    s.dns_changes.push(DnsChange {
                        hosted_zone_id: zone.into(),
                        batch: Some(number),
                        changes: Some(changes as u32),
                        change_id: None,
                        status: Some("Submitting".into()),
                    })
                }
            }
        })
        .await?;
        Ok(number)
    }

    async fn wait_insync(
        &self,
        zone: &str,
        change_id: &str,
        deadline: Instant,
    ) -> Result<(), StepError> {
        let waiting_since = Instant::now();
        loop {
            let insync = self
                .retry(Step::SwitchDns, deadline, || {
                    self.aws.change_insync(change_id)
                })
                .await
                .map_err(|e| StepError::Failed(format!("{zone}: {}", e.message)))?;
            if insync {
                let number = self.dns_batches_sent(zone).await as u32;
                self.set_dns(zone, number, Some(change_id.to_string()), "INSYNC")
                    .await?;
                return Ok(());
            }
            // Route 53 allows 5 requests a second per account: poll at most 4 times a second.
            let delay = poll_delay(waiting_since.elapsed()).max(Duration::from_millis(250));
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
        batch: u32,
        id: Option<String>,
        state: &str,
    ) -> Result<(), kube::Error> {
        self.update(|s| {
            if let Some(c) = s
                .dns_changes
                .iter_mut()
                .find(|c| c.hosted_zone_id == zone && c.batch.unwrap_or(1) == batch)
            {
                if id.is_some() {
                    c.change_id = id;
                }
                c.status = Some(state.into());
            }
        })
        .await
    }

    // ---- Verify ---------------------------------------------------------------------------

    async fn verify(&self) -> Result<(StepState, String), StepError> {
        let deadline = self.deadline(Step::Verify).await;
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
