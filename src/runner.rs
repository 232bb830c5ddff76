//! One short pass of a failover: observe what the state machine wants, decide
//! (`engine::machine::decide`, pure), record the decision in one status write, act, and
//! hand back when to look again. No pass sleeps through a wait; deadlines come from the
//! start times recorded in status, so they survive restarts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::{Either, join_all};
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use crate::api::{
    ConfigSpec, DatabaseSpec, DatabaseState, DisasterRecoveryPlan, Failover, FailoverMode,
    FailoverPhase, FailoverStatus, LastFailover, UnplannedMove,
};
use crate::aws::{Aws, AwsError, AwsErrorKind, WriterMove, parse_ecr_image};
use crate::clusters::{ClusterError, Clusters};
use crate::context::Context;
use crate::engine::approval::ApprovalSeen;
use crate::engine::machine::{
    self, DbSeen, Decision, Effect, EffectResult, Fault, Input, PlanMark, PreflightSeen, Problem,
    Seen, Wants, WorkloadSeen, World,
};
use crate::engine::{self, ScaleTarget};
use crate::leadership::LeaseCheck;
use crate::metrics::{ErrorLabels, Metrics, PlanLabels, PlanStepLabels, StepLabels};
use crate::store::{KubeStatusStore, StatusStore};
use crate::validate::parse_duration;

/// Lookups of objects that pod templates reference made at once by a preflight.
const REF_LOOKUPS_AT_ONCE: usize = 16;

/// Route 53 health checks read at once by a preflight (Route 53 throttles per account).
const HEALTH_CHECK_READS: usize = 4;

/// A second round of a pass reuses the first round's reads only if its calls took less
/// than this: older reads are read again by the next pass.
const FRESH_ENOUGH: Duration = Duration::from_secs(1);

/// How long one Event write may take before the next is sent.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Decisions chained in one pass at most (a DryRun or a resumed failover may finish
/// several steps without a call).
const MAX_CHAINED_DECISIONS: usize = 8;

/// Where "now" comes from: the wall clock, or the simulation's.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// How a pass ended.
#[derive(Debug)]
pub struct Pass {
    /// When to run the next pass; None when the failover is over.
    pub requeue: Option<Duration>,
    /// What this pass's effects returned, for the next pass.
    pub results: Vec<EffectResult>,
    /// The Failover's resourceVersion after this pass; the results belong to it.
    pub resource_version: Option<String>,
    /// For the next pass: the databases awaited after their promotion request, as last
    /// described, and when they are next due.
    pub promotion_look: Option<PromotionLook>,
}

/// The last description of databases whose promotion request was answered, and when they
/// are next worth describing (`Decision::promotions_next_look`). Passes that come sooner,
/// for a warm-up running alongside, decide on it instead of describing them again: for a
/// requested promotion, an older description only ever means waiting a little longer.
#[derive(Clone, Debug)]
pub struct PromotionLook {
    /// When the description was made, and how long it stands.
    made: SystemTime,
    stands_for: Duration,
    seen: HashMap<String, Seen<DbSeen>>,
}

impl PromotionLook {
    /// How long the description still stands at `now`; None once due, or when the clock
    /// went back past when it was made (a stepped clock never stretches it).
    fn stands(&self, now: SystemTime) -> Option<Duration> {
        let age = now.duration_since(self.made).ok()?;
        self.stands_for
            .checked_sub(age)
            .filter(|left| *left > LOOK_EARLY)
    }
}

/// A pass this close to a look's due time describes the databases anyway: the timer that
/// woke it may fire a little early.
const LOOK_EARLY: Duration = Duration::from_millis(5);

/// The databases among `names` whose promotion request AWS answered, by `status`.
fn requested_databases_of(status: &FailoverStatus, names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|name| {
            status
                .databases
                .iter()
                .any(|d| &d.name == *name && d.state == DatabaseState::Requested)
        })
        .cloned()
        .collect()
}

impl From<&AwsError> for Problem {
    fn from(e: &AwsError) -> Self {
        let fault = match e.kind {
            AwsErrorKind::Transient => Fault::Transient,
            AwsErrorKind::Unreachable => Fault::Unreachable,
            AwsErrorKind::Permanent => Fault::Permanent,
        };
        Problem::new(fault, e.message.clone())
    }
}

impl From<&ClusterError> for Problem {
    fn from(e: &ClusterError) -> Self {
        let fault = match e {
            ClusterError::Unreachable(_) => Fault::Unreachable,
            ClusterError::Transient(_) => Fault::Transient,
            ClusterError::Permanent(_) => Fault::Permanent,
        };
        Problem::new(fault, e.message())
    }
}

fn seen<T, E>(r: Result<T, E>) -> Seen<T>
where
    for<'e> Problem: From<&'e E>,
{
    r.map_err(|e| Problem::from(&e))
}

pub struct Runner {
    metrics: Arc<Metrics>,
    store: Arc<dyn StatusStore>,
    lease: Arc<dyn LeaseCheck>,
    aws: Arc<dyn Aws>,
    clusters: Arc<dyn Clusters>,
    clock: Arc<dyn Clock>,
    /// The plan, with the admitted snapshot as its spec once the failover runs.
    plan: DisasterRecoveryPlan,
    /// The Failover as freshly read; every status write is conditional on its
    /// resourceVersion, so a writer holding an older copy loses with 409.
    fo: Failover,
    retry_after: Duration,
    /// The probe samplers, when the runner measures user-visible recovery.
    probes: Option<Arc<crate::probes::Samplers>>,
}

impl Runner {
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
        let mut runner = Self::with_effects(
            ctx.metrics.clone(),
            store,
            ctx.leadership.clone(),
            aws,
            clusters,
            Arc::new(SystemClock),
            plan,
            fo,
            ctx.config.retry_after_promotion,
        );
        runner.probes = Some(ctx.probes.clone());
        runner
    }

    /// A runner on any status store, leader check and clock (`new` uses the API server's).
    #[allow(clippy::too_many_arguments)]
    pub fn with_effects(
        metrics: Arc<Metrics>,
        store: Arc<dyn StatusStore>,
        lease: Arc<dyn LeaseCheck>,
        aws: Arc<dyn Aws>,
        clusters: Arc<dyn Clusters>,
        clock: Arc<dyn Clock>,
        plan: DisasterRecoveryPlan,
        fo: Failover,
        retry_after: Duration,
    ) -> Self {
        Self {
            metrics,
            store,
            lease,
            aws,
            clusters,
            clock,
            plan,
            fo,
            retry_after,
            probes: None,
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
            .aws_region_of(region)
            .unwrap_or(region)
            .to_string()
    }

    /// One pass: observe, decide, record, act. `siblings` are the namespace's Failovers
    /// (used only before admission); `results` what the previous pass's effects returned.
    ///
    /// A pass whose calls were all scales the API server kept at the count asked for, made
    /// within a second, and whose decision asks to look again at once, goes on as the next
    /// pass (once): the
    /// accepted scales stand as observations, what else it read stands, and only what the
    /// next decision asks for beyond that is read. Verify's scale-down of the old region
    /// and Complete so share one reconcile instead of costing a Failover read and a reread
    /// of both regions. It goes on only when the previous pass's answers were accepted
    /// scales too, so no hold-off they set (an unconfirmed promotion, a scale just sent)
    /// is lost to the next decision.
    pub async fn pass(
        &self,
        siblings: Vec<Failover>,
        results: Vec<EffectResult>,
        mut look: Option<PromotionLook>,
    ) -> Result<Pass, kube::Error> {
        let before = self.fo.status.clone().unwrap_or_default();
        let version = self.fo.metadata.resource_version.clone();
        if before.phase.is_some_and(FailoverPhase::is_terminal) {
            return Ok(Pass {
                requeue: None,
                results: Vec::new(),
                resource_version: version,
                promotion_look: None,
            });
        }
        let mut fo = self.fo.clone();
        let mut events = Vec::new();
        // A chained decision reads only what the earlier ones of this pass did not: they
        // made no calls, so nothing Drover does has changed since (a second round's only
        // calls were scales, folded in as their answers showed them).
        let mut observed = Observed::default();
        let mut scaled_before = accepted_scales(&results);
        let incoming_all_accepted = scaled_before.len() == results.len();
        let first = self
            .round(
                1,
                &mut fo,
                &mut observed,
                &mut look,
                Some(siblings),
                results,
                &scaled_before,
                &mut events,
            )
            .await;
        let first = match first {
            Ok(first) => first,
            Err(e) => {
                self.publish(events);
                return Err(e);
            }
        };
        if !first.goes_on(incoming_all_accepted) {
            self.publish(events);
            return Ok(Pass {
                requeue: first.requeue,
                results: first.results,
                resource_version: fo.metadata.resource_version.clone(),
                promotion_look: look,
            });
        }
        observed.accept_scales(&first.asked_count);
        scaled_before.extend(first.asked_count.iter().cloned());
        let second = self
            .round(
                2,
                &mut fo,
                &mut observed,
                &mut look,
                None,
                first.results.clone(),
                &scaled_before,
                &mut events,
            )
            .await;
        self.publish(events);
        match second {
            Ok(second) => Ok(Pass {
                requeue: second.requeue,
                results: second.results,
                resource_version: fo.metadata.resource_version.clone(),
                promotion_look: look,
            }),
            // The first round's calls were made: their answers go to the next pass.
            Err(e) => {
                let e = crate::error::Error::from(e);
                warn!(failover = %self.fo.name_any(), error = %e, "the pass's second round failed; the next pass goes on");
                self.metrics
                    .reconcile_errors
                    .get_or_create(&ErrorLabels {
                        controller: "failover",
                        error: e.metric_label(),
                    })
                    .inc();
                Ok(Pass {
                    requeue: Some(Duration::ZERO),
                    results: first.results,
                    resource_version: fo.metadata.resource_version.clone(),
                    promotion_look: look,
                })
            }
        }
    }

    /// One round of a pass: observe, decide (chaining decisions that call nothing), write
    /// the status once, act. `fo` leaves with the status written and its resourceVersion.
    /// Its Events join `events`, which are published before its calls if one is a warning.
    #[allow(clippy::too_many_arguments)]
    async fn round(
        &self,
        round: u32,
        fo: &mut Failover,
        observed: &mut Observed,
        look: &mut Option<PromotionLook>,
        mut siblings: Option<Vec<Failover>>,
        results: Vec<EffectResult>,
        scaled_last_pass: &[engine::ScaleTarget],
        events: &mut Vec<machine::Note>,
    ) -> Result<Round, kube::Error> {
        let started = std::time::Instant::now();
        let before = fo.status.clone().unwrap_or_default();
        // Decisions that change status but call nothing (a step done, the next one
        // started) are chained in memory, each on fresh observations, and written together:
        // one status write per round, before its calls.
        let mut decisions = Vec::new();
        let mut observe_ms = 0;
        let mut results = Some(results);
        let mut marking: Option<PlanMark> = None;
        // Databases described in this round: after every call before it was answered.
        let mut described: Vec<String> = Vec::new();
        let decision = loop {
            let pass_started = self.clock.now();
            let observing = std::time::Instant::now();
            let wants = machine::wants(&self.plan.spec, fo);
            let requested = fo
                .status
                .as_ref()
                .map(|s| requested_databases_of(s, &wants.databases))
                .unwrap_or_default();
            if let Some(kept) = look.as_ref().filter(|l| l.stands(pass_started).is_some()) {
                for name in &requested {
                    if let Some(seen) = kept.seen.get(name) {
                        observed
                            .databases
                            .entry(name.clone())
                            .or_insert_with(|| seen.clone());
                    }
                }
            }
            // The region being left, as admission recorded it (chained decisions included).
            let source = fo
                .status
                .as_ref()
                .and_then(|s| s.source_region.clone())
                .unwrap_or_default();
            let unseen = observed.missing(&wants);
            described.extend(unseen.databases.iter().cloned());
            let ahead = observed.ahead(&wants);
            // The plan mark of the decision before (read-only observing may overlap it;
            // nothing is written or called before it is done).
            let needed = async {
                let mark = async {
                    match marking.take() {
                        Some(mark) => self.mark_plan(&mark).await,
                        None => Ok(()),
                    }
                };
                let (marked, fresh) = tokio::join!(mark, self.observe(&unseen, &source));
                marked.map(|()| fresh)
            };
            // Look-ahead reads go on while this decision is made, and are used only if the
            // next decision follows in this round.
            let (fresh, mut looking_ahead) = match futures::future::select(
                Box::pin(needed),
                Box::pin(self.observe(&ahead, &source)),
            )
            .await
            {
                Either::Left((fresh, pending)) => (fresh?, Some(pending)),
                Either::Right((seen_ahead, needed)) => {
                    observed.absorb(seen_ahead);
                    (needed.await?, None)
                }
            };
            observed.absorb(fresh);
            let mut world = observed.world(&wants);
            observe_ms += observing.elapsed().as_millis() as u64;
            world.siblings = siblings.take().unwrap_or_default();
            world.results = results.take().unwrap_or_default();
            world.scaled_last_pass = scaled_last_pass.to_vec();
            let decision = machine::decide(&Input {
                plan: &self.plan,
                failover: fo,
                world: &world,
                now: self.clock.now(),
                pass_started,
                retry_after: self.retry_after,
                jitter: fastrand::f64(),
            });
            marking = decision.plan.clone();
            let chain = decision.effects.is_empty()
                && decision.requeue == Some(Duration::ZERO)
                && Some(&decision.status) != fo.status.as_ref()
                && decisions.len() < MAX_CHAINED_DECISIONS;
            if !chain {
                break decision;
            }
            if let Some(pending) = looking_ahead.take() {
                observed.absorb(pending.await);
            }
            fo.status = Some(decision.status.clone());
            decisions.push(decision);
        };
        let mut decision = decision;
        self.sample_probes(&mut decision.status);
        let decided_at = self.clock.now();
        let described_any = !described.is_empty();
        match decision.promotions_next_look {
            None => *look = None,
            Some(after) if described_any => {
                // Kept: those whose promotion request is answered (a description made in
                // this round came after that answer).
                let now_requested = requested_databases_of(&decision.status, &described);
                let seen = now_requested
                    .into_iter()
                    .filter_map(|name| {
                        let seen = observed.databases.get(&name)?.clone();
                        Some((name, seen))
                    })
                    .filter(|(_, seen)| seen.is_ok())
                    .collect();
                *look = Some(PromotionLook {
                    made: decided_at,
                    stands_for: after,
                    seen,
                });
            }
            Some(_) => {}
        }
        // A pass that decided on a kept description comes back when it is due at the latest.
        let requeue = match (decision.requeue, look.as_ref()) {
            (Some(r), Some(l)) if !described_any => {
                Some(r.min(l.stands(decided_at).unwrap_or_default()))
            }
            (r, _) => r,
        };
        // An ended failover whose probe record is not final is looked at again (`settle`).
        let requeue = requeue.or_else(|| {
            decision
                .status
                .user_visible
                .as_ref()
                .filter(|r| !engine::probes::complete(r))
                .map(|_| crate::probes::POLL_EVERY)
        });
        if let Some(mark) = marking.take() {
            self.mark_plan(&mark).await?;
        }
        let recorded_from = started.elapsed();
        if decision.status != before {
            fo.metadata.resource_version = self
                .write(&decision.status, fo.metadata.resource_version.as_deref())
                .await?;
        }
        fo.status = Some(decision.status.clone());
        let recorded = started.elapsed();
        for d in decisions.iter().chain(std::iter::once(&decision)) {
            self.report(d);
            events.extend(d.events.iter().cloned());
        }
        // Events go out after the pass's calls: sent alongside them, they took the
        // management API's open connections, and the Lease check before the calls waited
        // for a new one (a TLS handshake, ~45 ms on the bed). A warning goes out at once,
        // after the Events before it, in order.
        if events.iter().any(|n| n.warning) {
            self.publish(std::mem::take(events));
        }
        let (results, asked_count) = self.act(&decision.effects).await;
        tracing::debug!(
            failover = %self.fo.name_any(),
            step = ?decision.status.current_step,
            round,
            decisions = decisions.len() + 1,
            observe_ms,
            record_ms = (recorded - recorded_from).as_millis() as u64,
            act_ms = (started.elapsed() - recorded).as_millis() as u64,
            effects = decision.effects.len(),
            described = described_any, requeue_ms = ?requeue.map(|r| r.as_millis() as u64),
            "pass"
        );
        Ok(Round {
            requeue,
            results,
            asked_count,
            acted: started.elapsed() - recorded,
        })
    }

    /// Copies the probe sampler's record into `status` (user-visible recovery): sampled
    /// while the failover runs, made final when it ends (a success keeps being sampled by
    /// `settle` until the target answers).
    fn sample_probes(&self, status: &mut FailoverStatus) {
        let Some(samplers) = &self.probes else {
            return;
        };
        let source = status.source_region.clone().unwrap_or_default();
        let Some(sampling) = crate::probes::sampling(&self.plan.spec, &source, self.target())
        else {
            // Nothing to poll: a record begun (by an older version) is closed, not awaited.
            if let Some(r) = status.user_visible.as_ref().filter(|r| !r.settled) {
                status.user_visible = Some(engine::probes::closed(
                    r,
                    "The plan has no valid probes for these regions.",
                ));
            }
            samplers.stop(&self.fo.uid().unwrap_or_default());
            return;
        };
        let uid = self.fo.uid().unwrap_or_default();
        let recorded = status.user_visible.clone().unwrap_or_default();
        let record = match status.phase {
            Some(FailoverPhase::Running) if self.mode() != FailoverMode::DryRun => {
                samplers.record(&uid, &sampling, &recorded)
            }
            // An Unplanned failover's lost region is down while it waits; a Planned one
            // changes nothing before it is approved.
            Some(FailoverPhase::AwaitingApproval) if self.mode() == FailoverMode::Unplanned => {
                samplers.record(&uid, &sampling, &recorded)
            }
            Some(phase) if phase.is_terminal() && phase != FailoverPhase::Rejected => {
                let record = samplers.record(&uid, &sampling, &recorded);
                let finished = status
                    .timings
                    .as_ref()
                    .and_then(|t| t.finished_at.as_ref())
                    .map(|t| SystemTime::from(t.0))
                    .unwrap_or_else(|| self.clock.now());
                match engine::probes::at_end(&record, phase, finished, self.clock.now()) {
                    Some(ended) => {
                        samplers.stop(&uid);
                        ended
                    }
                    None => record,
                }
            }
            _ => return,
        };
        if let Some(seconds) = record.recovery_seconds
            && status
                .user_visible
                .as_ref()
                .and_then(|r| r.recovery_seconds)
                != Some(seconds)
        {
            self.metrics
                .last_failover_user_visible_rto
                .get_or_create(&self.plan_labels())
                .set(seconds);
        }
        // Nothing polled yet: nothing to record (a restart then starts from scratch).
        if status.user_visible.as_ref() != Some(&record)
            && (status.user_visible.is_some()
                || record != crate::api::UserVisibleRecovery::default())
        {
            status.user_visible = Some(record);
        }
    }

    /// A successful failover whose target has not answered yet: polls on (up to
    /// `engine::probes::SETTLE` after its end) and records the answer. Returns when to
    /// look again.
    pub async fn settle(&self) -> Result<Option<Duration>, kube::Error> {
        let before = self.fo.status.clone().unwrap_or_default();
        let mut status = before.clone();
        self.sample_probes(&mut status);
        if status != before {
            self.write(&status, self.fo.metadata.resource_version.as_deref())
                .await?;
        }
        let settled = status
            .user_visible
            .as_ref()
            .is_none_or(engine::probes::complete);
        Ok((!settled).then_some(crate::probes::POLL_EVERY))
    }

    /// The one status write of a pass, conditional on the resourceVersion read.
    async fn write(
        &self,
        status: &FailoverStatus,
        version: Option<&str>,
    ) -> Result<Option<String>, kube::Error> {
        if self.lease.deposed() {
            return Err(self.lease.deposed_error());
        }
        let mut status = status.clone();
        status.observed_generation = self.fo.metadata.generation;
        self.store
            .write_failover_status(&self.fo.name_any(), &status, version)
            .await
    }

    /// Publishes Events, best effort, without holding up the pass: one after another, so
    /// they hold at most one of the management API's connections.
    fn publish(&self, notes: Vec<machine::Note>) {
        if notes.is_empty() {
            return;
        }
        let store = self.store.clone();
        let fo = self.fo.clone();
        tokio::spawn(async move {
            for note in notes {
                let type_ = if note.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                // One unanswered Event write does not hold back the others for long.
                let sent = store.publish(&fo, type_, &note.reason, &note.action, note.message);
                let _ = tokio::time::timeout(EVENT_TIMEOUT, sent).await;
            }
        });
    }

    /// The plan's metric labels: the Failover's namespace (the plan's) and the plan.
    fn plan_labels(&self) -> PlanLabels {
        PlanLabels {
            namespace: self.fo.namespace().unwrap_or_default(),
            plan: self.plan.name_any(),
        }
    }

    /// Logs and metrics for what the decision did (its Events are published by the pass).
    fn report(&self, d: &Decision) {
        for note in &d.events {
            info!(failover = %self.fo.name_any(), reason = %note.reason, message = %note.message);
        }
        // How long the plan's failover has run, while it runs (0 once it ended).
        let running = match (&d.finished, d.status.phase) {
            // A Failover rejected at admission never ran: the plan's running one (the
            // reason it may have been rejected) keeps its gauge.
            (Some(f), _) if f.phase == FailoverPhase::Rejected => None,
            (Some(_), _) => Some(0.0),
            (None, Some(phase)) if phase.is_admitted() => d
                .status
                .timings
                .as_ref()
                .and_then(|t| t.started_at.as_ref())
                .map(|t| {
                    let started = SystemTime::from(t.0);
                    self.clock
                        .now()
                        .duration_since(started)
                        .unwrap_or_default()
                        .as_secs_f64()
                }),
            _ => None,
        };
        if let Some(seconds) = running {
            self.metrics
                .failover_running
                .get_or_create(&self.plan_labels())
                .set(seconds);
        }
        for (step, seconds) in &d.finished_steps {
            self.metrics
                .step_duration
                .get_or_create(&StepLabels { step: step.name() })
                .observe(*seconds);
        }
        if let Some(f) = &d.finished {
            self.metrics
                .count_failover(&self.plan_labels(), self.mode(), f.phase);
            if f.phase != FailoverPhase::Rejected && self.mode() != FailoverMode::DryRun {
                self.record_last_failover(f);
            }
        }
    }

    /// The `drover_last_failover_*` gauges and, on success, the RTO histogram. A DryRun
    /// moves nothing, so it leaves them to the last real failover.
    fn record_last_failover(&self, f: &machine::Finished) {
        let metrics = &self.metrics;
        let plan = PlanLabels {
            namespace: self.plan.namespace().unwrap_or_default(),
            plan: self.plan.name_any(),
        };
        for (step, seconds) in &f.step_seconds {
            metrics
                .last_failover_step
                .get_or_create(&PlanStepLabels {
                    namespace: plan.namespace.clone(),
                    plan: plan.plan.clone(),
                    step: step.clone(),
                })
                .set(*seconds);
        }
        if let Some(lag) = f.data_loss {
            metrics
                .last_failover_data_loss
                .get_or_create(&plan)
                .set(lag);
        }
        if let Some(t) = f.total_seconds
            && f.phase == FailoverPhase::Succeeded
        {
            metrics.failover_duration.observe(t);
            metrics.last_failover_rto.get_or_create(&plan).set(t);
        }
    }

    /// Records this failover (and, on success, the new active region and what it could
    /// not fence) on the plan, in one write.
    async fn mark_plan(&self, mark: &PlanMark) -> Result<(), kube::Error> {
        // The plan write is not tied to the Failover's resourceVersion, so a deposed leader
        // is stopped here as its status writes are.
        if self.lease.deposed() {
            return Err(self.lease.deposed_error());
        }
        let last = LastFailover {
            name: self.fo.name_any(),
            target_region: self.target().to_string(),
            phase: Some(format!("{:?}", mark.phase)),
            mode: Some(format!("{:?}", self.fo.spec.mode)),
            // When it was created: it cannot have changed anything before.
            started_at: self.fo.metadata.creation_timestamp.clone(),
        };
        let written = self
            .store
            .update_plan_fields(&self.plan.name_any(), &mut |f| {
                // A mark repeated after a crash (before the Failover's own write) has
                // taught the plan already.
                let marked_before = f.last_failover.as_ref() == Some(&last);
                f.last_failover = Some(last.clone());
                for (step, seconds) in mark.learned.iter().filter(|_| !marked_before) {
                    engine::learn_duration(
                        &mut f.step_durations,
                        *step,
                        self.fo.spec.mode,
                        *seconds,
                    );
                }
                if mark.withdraw_own_fences {
                    f.pending_fences.retain(|e| e.failover != last.name);
                }
                if let Some(region) = &mark.active_region {
                    // A repeated mark (after a crash before the Failover's own write)
                    // finds the region already active and leaves the previous one alone.
                    if f.active_region.as_ref() != Some(region) {
                        f.previous_active_region = f.active_region.clone();
                        if let (FailoverMode::Unplanned, Some(from)) =
                            (self.fo.spec.mode, &f.active_region)
                        {
                            f.last_unplanned_move = Some(UnplannedMove {
                                name: last.name.clone(),
                                from_region: from.clone(),
                                to_region: region.clone(),
                                started_at: last.started_at.clone(),
                            });
                        }
                    }
                    f.active_region = Some(region.clone());
                }
                f.pending_fences = engine::fence::merge(&f.pending_fences, mark.fences.clone());
            })
            .await;
        let fields = match written {
            Ok(fields) => fields,
            // Deleted mid-flight: the failover still finishes on its snapshot, and says
            // that there was no plan left to record it on.
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let note = format!(
                    "plan {} was deleted; this failover ({:?}) is not recorded on it",
                    self.plan.name_any(),
                    mark.phase
                );
                warn!(failover = %self.fo.name_any(), "{note}");
                self.store
                    .publish(&self.fo, EventType::Warning, "PlanDeleted", "Finish", note)
                    .await;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if let Some(region) = fields.active_region.as_deref() {
            self.metrics.set_active_region(
                &self.plan_labels(),
                self.plan.spec.regions.iter().map(|r| r.name.as_str()),
                region,
            );
        }
        if !mark.fences.is_empty() {
            let names: Vec<String> = mark.fences.iter().map(|f| f.describe()).collect();
            self.store
                .publish(
                    &self.fo,
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

    // ---- Acting ---------------------------------------------------------------------------

    /// Makes each call once, concurrently. An error whose outcome is unknown is not resent
    /// here: the next pass observes first. Returns the answers, and the scales the API
    /// server kept at the count asked for (a webhook or policy may keep another).
    async fn act(&self, effects: &[Effect]) -> (Vec<EffectResult>, Vec<engine::ScaleTarget>) {
        let answers = join_all(effects.iter().map(|e| self.act_one(e))).await;
        let asked_count = answers
            .iter()
            .filter_map(|(_, kept)| kept.clone())
            .collect();
        (answers.into_iter().map(|(r, _)| r).collect(), asked_count)
    }

    async fn act_one(&self, effect: &Effect) -> (EffectResult, Option<engine::ScaleTarget>) {
        let result = match effect {
            Effect::Scale { target, step } => {
                let kept = match self.plan.spec.workloads.get(target.workload) {
                    Some(w) => seen(
                        self.clusters
                            .scale(&target.region, w, target.replicas, target.hold)
                            .await,
                    ),
                    None => Err(Problem::new(
                        Fault::NotFound,
                        "no such workload in the plan",
                    )),
                };
                let as_asked = matches!(kept, Ok(n) if n == target.replicas);
                let result = EffectResult::Scaled {
                    target: target.clone(),
                    step: *step,
                    outcome: kept.map(|_| ()),
                };
                return (result, as_asked.then(|| target.clone()));
            }
            Effect::Promote {
                database,
                target_arn,
                first,
            } => {
                let outcome = self.promote(database, target_arn.as_deref()).await;
                EffectResult::Promoted {
                    database: database.clone(),
                    first: *first,
                    outcome,
                }
            }
            Effect::ChangeRecords {
                zone,
                batch,
                changes,
            } => EffectResult::ChangedRecords {
                zone: zone.clone(),
                batch: *batch,
                outcome: seen(self.aws.change_records(zone, changes).await),
            },
            Effect::WriteConfig { config, region } => {
                let Some(cfg) = self.plan.spec.config.get(*config) else {
                    return (no_such("config entry"), None);
                };
                let endpoints = self.endpoints_of([cfg]).await;
                let outcome = match Self::wanted_config(self.target(), cfg, &endpoints) {
                    Ok(values) => seen(self.clusters.write_config(region, cfg, &values).await)
                        .map_err(|p| redacted(p, cfg, &values)),
                    Err(p) => Err(p),
                };
                EffectResult::Activated {
                    what: format!("writing {} in {region}", config_name(cfg)),
                    blocking: region == self.target(),
                    outcome,
                }
            }
            Effect::Restart {
                workload,
                region,
                at,
            } => {
                let Some(w) = self.plan.spec.workloads.get(*workload) else {
                    return (no_such("workload"), None);
                };
                EffectResult::Activated {
                    what: format!("restarting {}/{} in {region}", w.namespace, w.name),
                    blocking: true,
                    outcome: seen(self.clusters.restart(region, w, at).await),
                }
            }
        };
        (result, None)
    }

    /// The active (target) region's values of a config entry's keys: literal, or the
    /// endpoint of a plan database there, read now.
    fn wanted_config(
        target: &str,
        cfg: &ConfigSpec,
        endpoints: &HashMap<String, Seen<String>>,
    ) -> Seen<BTreeMap<String, String>> {
        let mut values = BTreeMap::new();
        for key in &cfg.keys {
            let value = match &key.database_endpoint {
                Some(db) => endpoints.get(db).cloned().unwrap_or_else(|| {
                    Err(Problem::new(
                        Fault::Transient,
                        format!("the endpoint of database {db} was not read"),
                    ))
                })?,
                None => key.values.get(target).cloned().ok_or_else(|| {
                    Problem::new(
                        Fault::Permanent,
                        format!("key {} has no value for region {target}", key.key),
                    )
                })?,
            };
            values.insert(key.key.clone(), value);
        }
        Ok(values)
    }

    /// The target endpoints of the databases that `configs` name, each read once.
    async fn endpoints_of<'a>(
        &self,
        configs: impl IntoIterator<Item = &'a ConfigSpec>,
    ) -> HashMap<String, Seen<String>> {
        let mut names: Vec<&str> = configs
            .into_iter()
            .flat_map(|c| c.keys.iter())
            .filter_map(|k| k.database_endpoint.as_deref())
            .collect();
        names.sort_unstable();
        names.dedup();
        join_all(
            names
                .into_iter()
                .map(|name| async move { (name.to_string(), self.database_endpoint(name).await) }),
        )
        .await
        .into_iter()
        .collect()
    }

    async fn database_endpoint(&self, name: &str) -> Seen<String> {
        let target = self.target();
        let Some(db) = self.plan.spec.databases.iter().find(|d| d.name == name) else {
            return Err(Problem::new(
                Fault::Permanent,
                format!("no database {name} in the plan"),
            ));
        };
        let Some(member) = engine::member(db, target) else {
            return Err(Problem::new(
                Fault::Permanent,
                format!("database {name} has no member in {target}"),
            ));
        };
        let region = self.aws_region(target);
        let found = if db.rds.is_some() {
            seen(self.aws.instance_endpoint(&region, member).await)?
        } else {
            seen(self.aws.cluster_endpoint(&region, member).await)?
        };
        found.ok_or_else(|| {
            Problem::new(
                Fault::Transient,
                format!("database {name} has no endpoint in {target} yet"),
            )
        })
    }

    /// Which keys of a config entry differ from the active region's values in `region`.
    async fn config_differs(
        &self,
        region: &str,
        index: usize,
        endpoints: &HashMap<String, Seen<String>>,
    ) -> Seen<Vec<String>> {
        let Some(cfg) = self.plan.spec.config.get(index) else {
            return Err(Problem::new(
                Fault::NotFound,
                "no such config entry in the plan",
            ));
        };
        let wanted = Self::wanted_config(self.target(), cfg, endpoints)?;
        let keys: Vec<String> = wanted.keys().cloned().collect();
        let current =
            seen(self.clusters.config_values(region, cfg, &keys).await)?.ok_or_else(|| {
                Problem::new(
                    Fault::NotFound,
                    format!("{} not found in {region}", config_name(cfg)),
                )
            })?;
        Ok(wanted
            .into_iter()
            .filter(|(k, v)| current.get(k) != Some(v))
            .map(|(k, _)| k)
            .collect())
    }

    async fn promote(&self, database: &str, target_arn: Option<&str>) -> Seen<()> {
        let region = self.aws_region(self.target());
        let Some(db) = self.plan.spec.databases.iter().find(|d| d.name == database) else {
            return Err(Problem::new(
                Fault::NotFound,
                "no such database in the plan",
            ));
        };
        match (&db.aurora_global, target_arn) {
            (Some(aurora), Some(arn)) => {
                let how = if self.mode() == FailoverMode::Planned {
                    WriterMove::Switchover
                } else {
                    WriterMove::FailoverAllowingDataLoss
                };
                seen(
                    self.aws
                        .move_global_writer(&region, &aurora.global_cluster_identifier, arn, how)
                        .await,
                )
            }
            _ => {
                let member = engine::member(db, self.target()).unwrap_or_default();
                seen(self.aws.promote_read_replica(&region, member).await)
            }
        }
    }

    // ---- Observing ------------------------------------------------------------------------

    /// Reads everything `wants` names, concurrently, once each. Errors are observations.
    async fn observe(&self, wants: &Wants, source: &str) -> Observed {
        let preflight = async {
            if wants.preflight {
                Some(self.preflight(source).await)
            } else {
                None
            }
        };
        let workloads = async {
            let seen = join_all(
                wants
                    .workloads
                    .iter()
                    .map(|t| async move { (t.clone(), self.workload(t).await) }),
            );
            let (mut seen, autoscalers) = tokio::join!(seen, self.autoscalers_of(&wants.workloads));
            for (t, w) in seen.iter_mut() {
                self.judge_autoscalers(t, w, &autoscalers);
            }
            seen
        };
        let lags = self.lags(&wants.lags);
        let databases = self.databases(&wants.databases);
        let zones =
            join_all(wants.zones.iter().map(|zone| async move {
                (zone.clone(), seen(self.aws.list_records(zone).await))
            }));
        let changes = join_all(
            wants
                .changes
                .iter()
                .map(|id| async move { (id.clone(), seen(self.aws.change_insync(id).await)) }),
        );
        let approvals = async {
            if !wants.approvals {
                return None;
            }
            match self.store.approvals().await {
                Ok(all) => Some(all.iter().map(ApprovalSeen::from_object).collect()),
                Err(e) => {
                    warn!(failover = %self.fo.name_any(), error = %crate::error::Error::from(e), "could not read FailoverApprovals; looking again");
                    None
                }
            }
        };
        let configs = async {
            // Each database endpoint once per pass, however many keys and regions use it.
            let wanted = wants.configs.iter().map(|(_, i)| *i);
            let endpoints = self
                .endpoints_of(wanted.filter_map(|i| self.plan.spec.config.get(i)))
                .await;
            let endpoints = &endpoints;
            join_all(wants.configs.iter().map(|(region, i)| async move {
                let differs = self.config_differs(region, *i, endpoints).await;
                ((region.clone(), *i), differs)
            }))
            .await
        };
        let (preflight, workloads, lags, databases, zones, changes, approvals, configs) = tokio::join!(
            preflight, workloads, lags, databases, zones, changes, approvals, configs
        );
        Observed {
            approvals,
            preflight,
            workloads: workloads.into_iter().collect(),
            lags: lags.into_iter().collect(),
            databases: databases.into_iter().collect(),
            zones: zones.into_iter().collect(),
            changes: changes.into_iter().collect(),
            configs: configs.into_iter().collect(),
        }
    }

    /// The autoscalers of every (region, namespace) of `targets`, listed once each.
    async fn autoscalers_of(
        &self,
        targets: &[ScaleTarget],
    ) -> HashMap<(String, String), Seen<Autoscalers>> {
        let mut places: Vec<(String, String)> = targets
            .iter()
            .filter_map(|t| {
                let w = self.plan.spec.workloads.get(t.workload)?;
                (!w.is_cron_job()).then(|| (t.region.clone(), w.namespace.clone()))
            })
            .collect();
        places.sort_unstable();
        places.dedup();
        join_all(places.into_iter().map(|(region, ns)| async move {
            let found = seen(self.clusters.autoscalers(&region, &ns).await);
            ((region, ns), found)
        }))
        .await
        .into_iter()
        .collect()
    }

    /// Adds to a workload's observation how its autoscalers stand for its target count; a
    /// failed listing, or an autoscaler Drover could not drive, is its observation.
    fn judge_autoscalers(
        &self,
        t: &ScaleTarget,
        seen_workload: &mut Seen<WorkloadSeen>,
        autoscalers: &HashMap<(String, String), Seen<Autoscalers>>,
    ) {
        let (Some(w), Ok(observed)) = (
            self.plan.spec.workloads.get(t.workload),
            &mut *seen_workload,
        ) else {
            return;
        };
        let Some(listed) = autoscalers.get(&(t.region.clone(), w.namespace.clone())) else {
            return;
        };
        let judged = listed.clone().and_then(|all| {
            engine::autoscalers::scaling(&all, w, t.replicas, t.hold)
                .map_err(|e| Problem::new(Fault::Permanent, e))
        });
        match judged {
            Ok(autoscaling) => observed.autoscaling = autoscaling,
            Err(p) => *seen_workload = Err(p),
        }
    }

    /// A workload, and for a writer or singleton already at the count it is scaled to, its
    /// pods: `status.replicas` leaves out Terminating pods, which still run. (Not yet at
    /// the count, it is scaled first; its pods are not looked at.)
    async fn workload(&self, t: &ScaleTarget) -> Seen<WorkloadSeen> {
        let Some(w) = self.plan.spec.workloads.get(t.workload) else {
            return Err(Problem::new(
                Fault::NotFound,
                "no such workload in the plan",
            ));
        };
        let state = seen(self.clusters.workload(&t.region, w).await)?;
        let pods = match &state {
            Some(s) if w.fenced() && s.replicas == t.replicas => match &s.selector {
                Some(selector) => Some(seen(self.clusters.pods(&t.region, w, selector).await)),
                // A CronJob's unfinished Jobs count as its replicas (a stopped one is
                // deleted in the foreground, so it stays counted until its pods are gone).
                None if w.is_cron_job() => None,
                None => {
                    warn!(workload = %w.name, "no pod selector; cannot confirm its pods are gone");
                    None
                }
            },
            _ => None,
        };
        Ok(WorkloadSeen {
            state,
            pods,
            autoscaling: Default::default(),
        })
    }

    fn database_spec(&self, name: &str) -> Seen<&DatabaseSpec> {
        self.plan
            .spec
            .databases
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| Problem::new(Fault::NotFound, format!("no database {name} in the plan")))
    }

    /// The newest lag datapoint of each named database into the target region, read there
    /// (it survives the loss of the source region), all in one metric read.
    async fn lags(&self, names: &[String]) -> Vec<(String, Seen<Option<engine::LagReading>>)> {
        let sources: Vec<(&String, Seen<engine::LagSource>)> = names
            .iter()
            .map(|name| {
                let source = self.database_spec(name).and_then(|db| {
                    engine::lag_source(db, self.target()).ok_or_else(|| {
                        Problem::new(Fault::NotFound, format!("no member in {}", self.target()))
                    })
                });
                (name, source)
            })
            .collect();
        let readable: Vec<engine::LagSource> = sources
            .iter()
            .filter_map(|(_, s)| s.as_ref().ok().cloned())
            .collect();
        let mut read = Answers::new(
            seen(
                self.aws
                    .replica_lags(&self.aws_region(self.target()), &readable)
                    .await,
            ),
            "lag reading",
        );
        sources
            .into_iter()
            .map(|(name, source)| {
                let reading = source.and_then(|_| read.next());
                if let Ok(Some(r)) = &reading
                    && r.seconds >= 0.0
                {
                    self.metrics.set_replication_lag(
                        &self.plan_labels(),
                        name,
                        self.target(),
                        r.seconds,
                    );
                }
                (name.clone(), reading)
            })
            .collect()
    }

    /// The target members of the named databases: the RDS instances in one call, each
    /// Aurora global cluster in one.
    async fn databases(&self, names: &[String]) -> Vec<(String, Seen<DbSeen>)> {
        let region = self.aws_region(self.target());
        let specs: Vec<(&String, Seen<(&DatabaseSpec, &str)>)> = names
            .iter()
            .map(|name| {
                let found = self.database_spec(name).and_then(|db| {
                    let member = engine::member(db, self.target()).ok_or_else(|| {
                        Problem::new(Fault::NotFound, format!("no member in {}", self.target()))
                    })?;
                    Ok((db, member))
                });
                (name, found)
            })
            .collect();
        let instances: Vec<String> = specs
            .iter()
            .filter_map(|(_, s)| match s {
                Ok((db, member)) if db.aurora_global.is_none() => Some(member.to_string()),
                _ => None,
            })
            .collect();
        let described = async {
            if instances.is_empty() {
                return Ok(Vec::new());
            }
            seen(self.aws.describe_instances(&region, &instances).await)
                .map(|found| found.into_iter().map(DbSeen::Rds).collect())
        };
        let clusters = join_all(specs.iter().filter_map(|(name, s)| {
            match s {
                Ok((db, member)) => db
                    .aurora_global
                    .as_ref()
                    .map(|a| async { (name.to_string(), self.aurora(&region, a, member).await) }),
                Err(_) => None,
            }
        }));
        let (described, clusters) = tokio::join!(described, clusters);
        let mut described = Answers::new(described, "instance description");
        let mut clusters: HashMap<String, Seen<DbSeen>> = clusters.into_iter().collect();
        specs
            .into_iter()
            .map(|(name, s)| {
                let seen = match s {
                    Err(p) => Err(p),
                    Ok((db, _)) if db.aurora_global.is_some() => {
                        clusters.remove(name.as_str()).unwrap_or_else(|| {
                            Err(Problem::new(Fault::Transient, "no answer for the cluster"))
                        })
                    }
                    Ok(_) => described.next(),
                };
                (name.clone(), seen)
            })
            .collect()
    }

    /// An Aurora global cluster, and the ARN of its member `member` in `region`: read from
    /// the global cluster's members; a cluster that is not one is looked up by name.
    async fn aurora(
        &self,
        region: &str,
        aurora: &crate::api::AuroraGlobalDatabase,
        member: &str,
    ) -> Seen<DbSeen> {
        let global = seen(
            self.aws
                .describe_global_cluster(region, &aurora.global_cluster_identifier)
                .await,
        )?;
        let listed = global.as_ref().and_then(|g| {
            g.member_arns
                .iter()
                .find(|arn| *arn == member || engine::arn_names(arn, region, "cluster", member))
                .cloned()
        });
        let target_arn = match listed {
            Some(arn) => Some(arn),
            None => seen(self.aws.cluster_arn(region, member).await)?,
        };
        Ok(DbSeen::Aurora { global, target_arn })
    }

    // ---- Preflight probes (read-only) -------------------------------------------------------

    /// Every check, concurrently; every failure is kept. A check that could not be made
    /// (throttled, unreachable) is reported as unanswered, and asked again next pass.
    async fn preflight(&self, source: &str) -> PreflightSeen {
        let spec = &self.plan.spec;
        let mut checks: Vec<futures::future::BoxFuture<'_, PreflightSeen>> = vec![
            Box::pin(self.check_workloads_and_images()),
            Box::pin(self.check_lags()),
            Box::pin(self.check_databases(source)),
            Box::pin(self.check_autoscalers()),
        ];
        if !spec.aws_secrets.is_empty() {
            checks.push(Box::pin(self.check_aws_secrets(source)));
        }
        if !spec.config.is_empty() {
            checks.push(Box::pin(self.check_config()));
        }
        for zone in &spec.dns {
            checks.push(Box::pin(self.check_zone(zone)));
        }
        if self.mode() == FailoverMode::Planned {
            checks.push(Box::pin(self.check_fence_targets(source)));
        }
        if spec.workloads.iter().any(|w| w.is_cron_job()) {
            checks.push(Box::pin(self.check_other_regions_cron_jobs(source)));
        }
        let mut out = PreflightSeen::default();
        out.absorb(join_all(checks).await);
        out
    }

    /// Workloads exist in the target cluster, their images in the target's ECR, and the
    /// Secrets and ConfigMaps their pod templates need in the target cluster. Each
    /// workload's images and objects are checked as soon as it is read, each image once.
    async fn check_workloads_and_images(&self) -> PreflightSeen {
        let target = self.target();
        let aws_target = self.aws_region(target);
        let claimed = std::sync::Mutex::new(std::collections::BTreeSet::new());
        // Referenced objects: each looked up once, at most REF_LOOKUPS_AT_ONCE at a time
        // (hundreds of workloads share a few Secrets).
        let lookups = tokio::sync::Semaphore::new(REF_LOOKUPS_AT_ONCE);
        let known = std::sync::Mutex::new(HashMap::new());
        let checks = self.plan.spec.workloads.iter().map(|w| {
            let (aws_target, claimed, lookups, known) = (&aws_target, &claimed, &lookups, &known);
            async move {
                let mut out = PreflightSeen::default();
                let name = format!("workload {} {}/{}", w.kind, w.namespace, w.name);
                let (images, refs) = match seen(self.clusters.workload(target, w).await) {
                    Ok(Some(state)) => {
                        // Resumed in a standby, it runs against a read-only replica, and
                        // beside the active region's once that one resumes.
                        if w.is_cron_job() && state.replicas > 0 {
                            out.planned_problem(
                                self.mode(),
                                format!(
                                    "CronJob {}/{} is not suspended in {target}: set \
                                     spec.suspend to true there; Drover resumes it once the \
                                     databases are writable",
                                    w.namespace, w.name
                                ),
                                "WarmUp suspends it while the databases are promoted; Jobs it \
                                 started run on",
                            );
                        }
                        (state.images, state.refs)
                    }
                    Ok(None) => {
                        out.problems.push(format!("{name} not found in {target}"));
                        return (out, Vec::new());
                    }
                    Err(p) => {
                        out.push(p, format!("{name} in {target}"));
                        return (out, Vec::new());
                    }
                };
                // A missing pull secret stops nothing when every image is in ECR: the node
                // pulls those with its own IAM role.
                let all_ecr = images.iter().all(|i| parse_ecr_image(i).is_some());
                let mine: Vec<String> = {
                    let mut claimed = match claimed.lock() {
                        Ok(guard) => guard,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    images
                        .into_iter()
                        .filter(|i| claimed.insert(i.clone()))
                        .collect()
                };
                let images_found = join_all(mine.iter().filter_map(|image| {
                    let (repo, reference) = parse_ecr_image(image)?;
                    Some(async move {
                        let r = seen(self.aws.image_exists(aws_target, &repo, &reference).await);
                        (image, format!("{repo}:{reference}"), r)
                    })
                }));
                let refs: Vec<_> = refs
                    .into_iter()
                    .filter(|r| !(all_ecr && r.via == "imagePullSecrets"))
                    .collect();
                let refs_found = join_all(refs.iter().map(|r| async move {
                    let key = (w.namespace.clone(), r.kind, r.name.clone());
                    let lock = || match known.lock() {
                        Ok(guard) => guard,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    if let Some(found) = lock().get(&key).copied() {
                        return (r, Ok(found));
                    }
                    // Never closed: a permit is always given.
                    let _permit = lookups.acquire().await.ok();
                    let found = seen(
                        self.clusters
                            .object_exists(target, &w.namespace, r.kind, &r.name)
                            .await,
                    );
                    if let Ok(f) = &found {
                        lock().insert(key, *f);
                    }
                    (r, found)
                }));
                let (found, refs_found) = futures::join!(images_found, refs_found);
                let mut refs_missing = Vec::new();
                for (r, answer) in refs_found {
                    match answer {
                        Ok(true) => {}
                        Ok(false) => refs_missing.push(r.clone()),
                        Err(p) => out.push(
                            p,
                            format!(
                                "checking {} {}/{} in {target}",
                                r.kind.name(),
                                w.namespace,
                                r.name
                            ),
                        ),
                    }
                }
                out.problems.extend(engine::pod_refs::missing_message(
                    &name,
                    &w.namespace,
                    target,
                    &refs_missing,
                ));
                let mut missing = Vec::new();
                for (image, short, r) in found {
                    match r {
                        Ok(true) => {}
                        Ok(false) => missing.push(short),
                        Err(p) => {
                            out.push(p, format!("checking image {image} in ECR {aws_target}"))
                        }
                    }
                }
                (out, missing)
            }
        });
        let mut out = PreflightSeen::default();
        let mut missing = Vec::new();
        for (checked, absent) in join_all(checks).await {
            out.absorb(vec![checked]);
            missing.extend(absent);
        }
        if !missing.is_empty() {
            missing.sort();
            out.problems.push(format!(
                "images missing from ECR in {aws_target}: {}",
                missing.join(", ")
            ));
        }
        out
    }

    /// CronJobs are suspended in the regions that neither leave nor become active (a
    /// third region of a plan): resumed there, they run against a read-only replica while
    /// the active region's run too. Such a region not answering refuses nothing.
    async fn check_other_regions_cron_jobs(&self, source: &str) -> PreflightSeen {
        let target = self.target();
        let spec = &self.plan.spec;
        let reads = spec
            .regions
            .iter()
            .filter(|r| r.name != source && r.name != target)
            .flat_map(|r| {
                spec.workloads
                    .iter()
                    .filter(|w| w.is_cron_job())
                    .map(move |w| async move {
                        (r, w, seen(self.clusters.workload(&r.name, w).await))
                    })
            });
        let mut out = PreflightSeen::default();
        for (region, w, found) in join_all(reads).await {
            let name = format!("CronJob {}/{}", w.namespace, w.name);
            match found {
                // Refused even when Unplanned: that region answers, so this is a one-line
                // fix, and Reconfigure would point its Jobs at the new primary.
                Ok(Some(state)) if state.replicas > 0 => out.problems.push(format!(
                    "{name} is not suspended in {}: set spec.suspend to true there; only the \
                     active region runs it",
                    region.name
                )),
                Ok(_) => {}
                Err(p) => out.notes.push(format!(
                    "{name} not checked in {}: {}",
                    region.name, p.message
                )),
            }
        }
        out
    }

    /// Planned: the old region's cluster answers and has the workloads to fence.
    async fn check_fence_targets(&self, source: &str) -> PreflightSeen {
        let targets = engine::fence_targets(&self.plan.spec, source);
        let found = join_all(targets.iter().filter_map(|t| {
            let w = self.plan.spec.workloads.get(t.workload)?;
            Some(async move { (w, seen(self.clusters.workload(&t.region, w).await)) })
        }))
        .await;
        let mut out = PreflightSeen::default();
        for (w, r) in found {
            match r {
                Ok(Some(_)) => {}
                Ok(None) => out.problems.push(format!(
                    "workload {} {}/{} to fence not found in {source}",
                    w.kind, w.namespace, w.name
                )),
                Err(p) => out.push(
                    p,
                    format!("cannot reach {source} to fence {}/{}", w.namespace, w.name),
                ),
            }
        }
        out
    }

    /// Every target member exists and is healthy (described together).
    async fn check_databases(&self, source: &str) -> PreflightSeen {
        let spec = &self.plan.spec;
        let names: Vec<String> = spec.databases.iter().map(|d| d.name.clone()).collect();
        let mut out = PreflightSeen::default();
        for (db, (_, seen)) in spec.databases.iter().zip(self.databases(&names).await) {
            match seen.map(|s| self.target_db_health(db, s, source)) {
                Ok(Ok(())) => {}
                Ok(Err(why)) => out.problems.push(format!("database {}: {why}", db.name)),
                Err(p) => out.push(p, format!("database {}", db.name)),
            }
        }
        out
    }

    /// No autoscaler in the target caps a workload below its active count (one list per
    /// namespace).
    async fn check_autoscalers(&self) -> PreflightSeen {
        let target = self.target();
        let workloads = &self.plan.spec.workloads;
        let mut namespaces: Vec<&str> = workloads.iter().map(|w| w.namespace.as_str()).collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        let listed = join_all(
            namespaces
                .into_iter()
                .map(|ns| async move { (ns, seen(self.clusters.autoscalers(target, ns).await)) }),
        )
        .await;
        let mut out = PreflightSeen::default();
        for (ns, found) in listed {
            match found {
                Ok(objects) => {
                    let all = engine::autoscalers::read_all(&objects);
                    for w in workloads.iter().filter(|w| w.namespace == ns) {
                        for capped in engine::autoscalers::problems(w, target, &all) {
                            out.planned_problem(
                                self.mode(),
                                capped,
                                "Drover raises its maximum to the active count; a GitOps \
                                 sync that reverts that keeps WarmUp waiting",
                            );
                        }
                        // What the failover would refuse mid-way (an annotation it cannot
                        // read) is said now.
                        let judged =
                            engine::autoscalers::scaling(&objects, w, w.active_replicas, true);
                        if let Err(e) = judged {
                            out.problems.push(format!("{e} (in {target})"));
                        }
                    }
                }
                Err(p) => out.push(p, format!("autoscalers in {target} namespace {ns}")),
            }
        }
        out
    }

    /// Every ConfigMap and Secret of `spec.config` exists in the target (metadata only),
    /// and the write Reconfigure will make is accepted there (a server-side dry run with
    /// the values it would write: permission, `immutable`, admission).
    async fn check_config(&self) -> PreflightSeen {
        use engine::pod_refs::RefKind;
        let target = self.target();
        let endpoints = self.endpoints_of(&self.plan.spec.config).await;
        let endpoints = &endpoints;
        let found = join_all(self.plan.spec.config.iter().map(|cfg| async move {
            let kind = match cfg.kind {
                crate::api::ConfigKind::ConfigMap => RefKind::ConfigMap,
                crate::api::ConfigKind::Secret => RefKind::Secret,
            };
            let exists = self
                .clusters
                .object_exists(target, &cfg.namespace, kind, &cfg.name)
                .await;
            let writable = match (seen(exists), Self::wanted_config(target, cfg, endpoints)) {
                (Ok(true), Ok(values)) => {
                    seen(self.clusters.config_writable(target, cfg, &values).await)
                        .map(|_| true)
                        .map_err(|p| redacted(p, cfg, &values))
                }
                (Ok(true), Err(p)) | (Err(p), _) => Err(p),
                (Ok(false), _) => Ok(false),
            };
            (cfg, writable)
        }))
        .await;
        let mut out = PreflightSeen::default();
        for (cfg, writable) in found {
            match writable {
                Ok(true) => {}
                Ok(false) => out
                    .problems
                    .push(format!("{} not found in {target}", config_name(cfg))),
                Err(p) => out.push(p, format!("{} in {target}", config_name(cfg))),
            }
        }
        out
    }

    /// Every Secrets Manager secret the plan lists is in the target region, as a replica in
    /// sync with its primary (or the primary itself). A primary or source region that does
    /// not answer leaves the target's copy as it is: a lost region is what failovers are for.
    async fn check_aws_secrets(&self, source: &str) -> PreflightSeen {
        use engine::secrets::{Verdict, judge};
        let target = self.aws_region(self.target());
        let source = self.aws_region(source);
        let unplanned = self.mode() == FailoverMode::Unplanned;
        let checks = self.plan.spec.aws_secrets.iter().map(|secret| {
            let (target, source) = (&target, &source);
            async move {
                let mut out = PreflightSeen::default();
                let name = &secret.name;
                let in_target = match seen(self.aws.describe_secret(target, name).await) {
                    Ok(found) => found,
                    Err(p) => {
                        out.push(p, format!("Secrets Manager secret {name} in {target}"));
                        return out;
                    }
                };
                let mut verdict = judge(name, target, source, unplanned, in_target.as_ref(), None);
                if let Verdict::Ask(region) = &verdict {
                    verdict = match seen(self.aws.describe_secret(region, name).await) {
                        Ok(other) => judge(
                            name,
                            target,
                            source,
                            unplanned,
                            in_target.as_ref(),
                            Some(other.as_ref()),
                        ),
                        // The region left behind may be lost (timeouts, 5xx, throttling
                        // are how that shows too): an Unplanned failover takes the target's
                        // copy as it is.
                        Err(_) if unplanned => Verdict::Ready,
                        Err(p) if p.fault == Fault::Unreachable => Verdict::Ready,
                        Err(p) => {
                            out.push(p, format!("Secrets Manager secret {name} in {region}"));
                            return out;
                        }
                    };
                }
                if let Verdict::Problem(problem) = verdict {
                    out.problems.push(problem);
                }
                out
            }
        });
        let mut out = PreflightSeen::default();
        out.absorb(join_all(checks).await);
        out
    }

    /// Every database's lag is within the RPO where that matters (one metric read).
    async fn check_lags(&self) -> PreflightSeen {
        let rpo = parse_duration(&self.plan.spec.objectives.rpo).unwrap_or_default();
        let names: Vec<String> = self
            .plan
            .spec
            .databases
            .iter()
            .map(|d| d.name.clone())
            .collect();
        let fatal = match self.mode() {
            FailoverMode::DryRun => true,
            FailoverMode::Unplanned => !self.fo.spec.allow_data_loss,
            FailoverMode::Planned => false,
        };
        let mut out = PreflightSeen::default();
        let lags = self.lags(&names).await;
        let fresh_after = engine::lag::fresh_after(
            self.clock.now(),
            self.plan.spec.objectives.max_lag_age(),
            None,
        );
        for (name, lag) in lags {
            match lag {
                Ok(reading) => {
                    let lag = engine::lag::judge(reading.as_ref(), fresh_after);
                    let over = lag.seconds().is_none_or(|l| l > rpo.as_secs_f64());
                    if over && fatal {
                        out.problems.push(format!(
                            "database {name}: replication lag {} is not within the RPO {}s",
                            lag.describe(),
                            rpo.as_secs_f64()
                        ));
                    }
                }
                Err(p) => out.push(p, format!("database {name}: measuring lag")),
            }
        }
        out
    }

    /// Err(why) when the described target member is unfit.
    fn target_db_health(
        &self,
        db: &DatabaseSpec,
        seen: DbSeen,
        active: &str,
    ) -> Result<(), String> {
        let region = self.aws_region(self.target());
        let Some(member) = engine::member(db, self.target()) else {
            return Err(format!("no member in {}", self.target()));
        };
        match seen {
            DbSeen::Rds(None) => Err(format!("instance {member} not found in {region}")),
            DbSeen::Rds(Some(o)) if o.status != "available" => {
                Err(format!("instance {member} is {}", o.status))
            }
            // Promoting a standalone instance (e.g. the former primary before failback)
            // would make stale data the writer.
            DbSeen::Rds(Some(o)) => match o.source {
                None => Err(format!(
                    "instance {member} is not a read replica; rebuild it as a replica of the \
                     current primary before failing over to it"
                )),
                // Replicas of an old primary do not follow a promotion: promoting one that
                // still replicates from it would lose every write made since.
                Some(src) => {
                    let primary = engine::member(db, active).unwrap_or_default();
                    if engine::source_is(&src, &self.aws_region(active), primary) {
                        Ok(())
                    } else {
                        Err(format!(
                            "instance {member} replicates from {src}, not from the active \
                             region's primary {primary} in {active}; promoting it would lose \
                             every write made since; rebuild it as a replica of {primary}"
                        ))
                    }
                }
            },
            DbSeen::Aurora {
                target_arn: None, ..
            } => Err(format!("cluster {member} not found in {region}")),
            DbSeen::Aurora {
                global,
                target_arn: Some(arn),
            } => {
                let id = db
                    .aurora_global
                    .as_ref()
                    .map(|a| a.global_cluster_identifier.as_str())
                    .unwrap_or_default();
                match global {
                    None => Err(format!("global cluster {id} not found")),
                    Some(o) if !o.member_arns.contains(&arn) => {
                        Err(format!("{member} is not a member of {id}"))
                    }
                    Some(o) if o.status != "available" => {
                        Err(format!("global cluster {id} is {}", o.status))
                    }
                    Some(_) => Ok(()),
                }
            }
        }
    }

    /// The zone exists and takes the changes; the target's health checks are healthy.
    /// The zone and the health checks are read concurrently, each health check once and at
    /// most `HEALTH_CHECK_READS` at a time: Route 53 throttles per account.
    async fn check_zone(&self, zone: &crate::api::HostedZoneSpec) -> PreflightSeen {
        use futures::StreamExt;
        let target = self.target();
        // Owned: the futures below must be Send for any lifetime.
        let mut ids: Vec<(String, String)> = zone
            .records
            .iter()
            .flat_map(|record| {
                record
                    .targets
                    .iter()
                    .filter(|t| t.region == target)
                    .filter_map(|t| Some((t.health_check_id.clone()?, record.name.clone())))
            })
            .collect();
        ids.sort_unstable();
        ids.dedup_by(|a, b| a.0 == b.0);
        let health_checks = futures::stream::iter(ids)
            .map(|(hc, record)| async move {
                let mut out = PreflightSeen::default();
                match seen(self.aws.health_check_healthy(&hc).await) {
                    Ok(true) => {}
                    Ok(false) => out.problems.push(format!(
                        "record {record}: health check {hc} for {target} is failing"
                    )),
                    Err(p) => out.push(p, format!("health check {hc}")),
                }
                out
            })
            .buffered(HEALTH_CHECK_READS)
            .collect::<Vec<_>>();
        let (mut out, checked) = tokio::join!(self.check_zone_records(zone), health_checks);
        out.absorb(checked);
        out
    }

    /// The zone exists, and the plan's changes to it are ones Route 53 takes.
    async fn check_zone_records(&self, zone: &crate::api::HostedZoneSpec) -> PreflightSeen {
        let id = zone.hosted_zone_id.as_str();
        let mut out = PreflightSeen::default();
        // A zone that does not exist answers NoSuchHostedZone, which names it.
        match seen(self.aws.list_records(id).await) {
            Ok(current) => {
                // What Route 53 would refuse, or would leave ambiguous, is a preflight
                // failure, not a surprise after the databases are promoted.
                out.problems.extend(
                    engine::dns::zone_conflicts(zone, &current)
                        .into_iter()
                        .map(|c| format!("hosted zone {id}: {c}")),
                );
                let changes =
                    engine::dns::zone_changes(&self.plan.spec, zone, self.target(), &current);
                if let Err(e) = engine::dns::pack(changes) {
                    out.problems.push(format!("hosted zone {id}: {e}"));
                }
            }
            Err(p) => out.push(p, format!("hosted zone {id}: listing records")),
        }
        out
    }
}

/// A batched read's answers, handed out in the order asked: a failed read fails every item
/// it asked for, and an item the answer left out is unanswered, never "not found".
struct Answers<T> {
    items: std::vec::IntoIter<T>,
    failed: Option<Problem>,
    what: &'static str,
}

impl<T> Answers<T> {
    fn new(answer: Seen<Vec<T>>, what: &'static str) -> Self {
        let (items, failed) = match answer {
            Ok(items) => (items, None),
            Err(p) => (Vec::new(), Some(p)),
        };
        Self {
            items: items.into_iter(),
            failed,
            what,
        }
    }

    fn next(&mut self) -> Seen<T> {
        if let Some(p) = &self.failed {
            return Err(p.clone());
        }
        self.items
            .next()
            .ok_or_else(|| Problem::new(Fault::Transient, format!("no {} came back", self.what)))
    }
}

/// Whether an observation stands for the rest of the pass: a transient error is read again
/// if a later decision asks (a lost region is not: it would cost another timeout).
fn settled<T>(seen: &Seen<T>) -> bool {
    !matches!(seen, Err(p) if p.fault == Fault::Transient)
}

/// What one round of a pass did.
struct Round {
    requeue: Option<Duration>,
    results: Vec<EffectResult>,
    /// The scales the API server accepted at the count asked for.
    asked_count: Vec<engine::ScaleTarget>,
    /// How long its calls took.
    acted: Duration,
}

impl Round {
    /// Whether the pass goes on with a second round: every call of this one was a scale
    /// kept at the count asked for, made quickly, the decision asks to look again at once,
    /// and the answers the pass started with (`incoming_all_accepted`) were such scales too.
    fn goes_on(&self, incoming_all_accepted: bool) -> bool {
        incoming_all_accepted
            && self.requeue == Some(Duration::ZERO)
            && !self.asked_count.is_empty()
            && self.asked_count.len() == self.results.len()
            && self.acted < FRESH_ENOUGH
    }
}

/// The scale targets of `results` that the API server accepted.
fn accepted_scales(results: &[EffectResult]) -> Vec<engine::ScaleTarget> {
    results
        .iter()
        .filter_map(|r| match r {
            EffectResult::Scaled {
                target,
                outcome: Ok(()),
                ..
            } => Some(target.clone()),
            _ => None,
        })
        .collect()
}

/// A namespace's autoscalers, whole.
type Autoscalers = Vec<(engine::autoscalers::AutoscalerKind, serde_json::Value)>;

fn config_name(cfg: &ConfigSpec) -> String {
    format!("{} {}/{}", cfg.kind.name(), cfg.namespace, cfg.name)
}

fn no_such(what: &str) -> EffectResult {
    EffectResult::Activated {
        what: what.to_string(),
        blocking: true,
        outcome: Err(Problem::new(
            Fault::NotFound,
            format!("no such {what} in the plan"),
        )),
    }
}

/// What one pass has observed so far, by what was asked for.
#[derive(Default)]
struct Observed {
    preflight: Option<PreflightSeen>,
    workloads: HashMap<ScaleTarget, Seen<WorkloadSeen>>,
    lags: HashMap<String, Seen<Option<engine::LagReading>>>,
    databases: HashMap<String, Seen<DbSeen>>,
    zones: HashMap<String, Seen<Vec<engine::RecordSet>>>,
    changes: HashMap<String, Seen<bool>>,
    /// None when not read, or when the read failed (the decision waits).
    approvals: Option<Vec<ApprovalSeen>>,
    configs: HashMap<(String, usize), Seen<Vec<String>>>,
}

impl Observed {
    /// What of `wants` has not been observed yet.
    fn missing(&self, wants: &Wants) -> Wants {
        fn unseen<K: std::hash::Hash + Eq + Clone, V>(
            wanted: &[K],
            seen: &HashMap<K, Seen<V>>,
        ) -> Vec<K> {
            wanted
                .iter()
                .filter(|k| !seen.get(k).is_some_and(settled))
                .cloned()
                .collect()
        }
        Wants {
            siblings: wants.siblings,
            preflight: wants.preflight && self.preflight.is_none(),
            workloads: unseen(&wants.workloads, &self.workloads),
            ahead: Vec::new(),
            lags: unseen(&wants.lags, &self.lags),
            databases: unseen(&wants.databases, &self.databases),
            zones: unseen(&wants.zones, &self.zones),
            changes: unseen(&wants.changes, &self.changes),
            approvals: wants.approvals && self.approvals.is_none(),
            configs: unseen(&wants.configs, &self.configs),
        }
    }

    /// The look-ahead reads of `wants` not made yet (nor asked for as needed ones).
    fn ahead(&self, wants: &Wants) -> Wants {
        Wants {
            workloads: wants
                .ahead
                .iter()
                .filter(|t| !wants.workloads.contains(t))
                .filter(|t| !self.workloads.get(t).is_some_and(settled))
                .cloned()
                .collect(),
            ..Default::default()
        }
    }

    /// Scales the API server accepted, observed as its answer shows them: the new count,
    /// with the workload's status not caught up yet (its new generation is not observed),
    /// so only a decision that needs the count alone takes it as reached. What else was
    /// read of the same workload (at other counts) is dropped, to be read again.
    fn accept_scales(&mut self, accepted: &[engine::ScaleTarget]) {
        for target in accepted.iter().cloned() {
            self.workloads.retain(|t, _| {
                *t == target || t.region != target.region || t.workload != target.workload
            });
            match self.workloads.get_mut(&target) {
                Some(Ok(WorkloadSeen {
                    state: Some(state), ..
                })) => {
                    state.replicas = target.replicas;
                    state.observed_current = false;
                }
                _ => {
                    self.workloads.remove(&target);
                }
            }
        }
    }

    fn absorb(&mut self, more: Observed) {
        if more.preflight.is_some() {
            self.preflight = more.preflight;
        }
        self.workloads.extend(more.workloads);
        self.lags.extend(more.lags);
        self.databases.extend(more.databases);
        self.zones.extend(more.zones);
        self.changes.extend(more.changes);
        self.configs.extend(more.configs);
        if more.approvals.is_some() {
            self.approvals = more.approvals;
        }
    }

    /// The world as `wants` asked to see it: exactly what it names.
    fn world(&self, wants: &Wants) -> World {
        fn pick<K: std::hash::Hash + Eq + Clone, V: Clone>(
            wanted: &[K],
            seen: &HashMap<K, V>,
        ) -> HashMap<K, V> {
            wanted
                .iter()
                .filter_map(|k| Some((k.clone(), seen.get(k)?.clone())))
                .collect()
        }
        World {
            preflight: if wants.preflight {
                self.preflight.clone()
            } else {
                None
            },
            workloads: wants
                .workloads
                .iter()
                .filter_map(|t| {
                    let seen = self.workloads.get(t)?.clone();
                    Some(((t.region.clone(), t.workload), seen))
                })
                .collect(),
            lags: pick(&wants.lags, &self.lags),
            databases: pick(&wants.databases, &self.databases),
            zones: pick(&wants.zones, &self.zones),
            changes: pick(&wants.changes, &self.changes),
            approvals: self.approvals.clone().filter(|_| wants.approvals),
            configs: pick(&wants.configs, &self.configs),
            ..Default::default()
        }
    }
}

/// Longest answer from a member cluster kept from a config write.
const MAX_WRITE_ANSWER: usize = 1024;

/// `p` bounded, and for a Secret without any value Drover sent (as text or base64): an
/// admission webhook's refusal may quote what it refused. A ConfigMap's values are in the
/// plan already.
fn redacted(mut p: Problem, cfg: &ConfigSpec, values: &BTreeMap<String, String>) -> Problem {
    if cfg.kind == crate::api::ConfigKind::Secret {
        for value in values.values().filter(|v| !v.is_empty()) {
            // As a Secret's data carries it (ByteString serialises to base64).
            let bytes = k8s_openapi::ByteString(value.clone().into_bytes());
            let encoded = serde_json::to_value(bytes)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            for form in [value.as_str(), encoded.as_str()]
                .into_iter()
                .filter(|f| !f.is_empty())
            {
                p.message = p.message.replace(form, "[value withheld]");
            }
        }
    }
    if p.message.len() > MAX_WRITE_ANSWER {
        let mut end = MAX_WRITE_ANSWER;
        while !p.message.is_char_boundary(end) {
            end -= 1;
        }
        p.message.truncate(end);
        p.message.push_str(" […]");
    }
    p
}

impl PreflightSeen {
    fn absorb(&mut self, others: Vec<PreflightSeen>) {
        for c in others {
            self.problems.extend(c.problems);
            self.unanswered.extend(c.unanswered);
            self.notes.extend(c.notes);
        }
    }

    /// What refuses a Planned failover (and a DryRun), but not an Unplanned one: that goes
    /// ahead, `despite` saying how (a lost region does not wait for a tidy standby).
    fn planned_problem(&mut self, mode: FailoverMode, problem: String, despite: &str) {
        if mode == FailoverMode::Unplanned {
            self.notes.push(format!("{problem} ({despite})"));
        } else {
            self.problems.push(problem);
        }
    }

    /// A failed read: unanswered when asking again may help, a problem otherwise.
    fn push(&mut self, p: Problem, what: String) {
        let line = format!("{what}: {}", p.message);
        if p.passes() {
            self.unanswered.push(line);
        } else {
            self.problems.push(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(workload: usize, region: &str, replicas: i32) -> ScaleTarget {
        ScaleTarget {
            workload,
            region: region.into(),
            replicas,
            hold: false,
        }
    }

    fn gone() -> Seen<WorkloadSeen> {
        Ok(WorkloadSeen {
            state: None,
            pods: None,
            autoscaling: Default::default(),
        })
    }

    /// A kept description of awaited promotions stands until it is due, and not at all
    /// once the clock went back past when it was made.
    #[test]
    fn a_kept_promotion_description_stands_only_until_due_and_never_on_a_clock_gone_back() {
        let made = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let look = PromotionLook {
            made,
            stands_for: Duration::from_secs(2),
            seen: HashMap::new(),
        };
        let at = |ms: u64| made + Duration::from_millis(ms);
        assert_eq!(look.stands(at(0)), Some(Duration::from_secs(2)));
        assert_eq!(look.stands(at(1_500)), Some(Duration::from_millis(500)));
        // Due (or within the early margin of it), and past it.
        assert_eq!(look.stands(at(1_996)), None);
        assert_eq!(look.stands(at(5_000)), None);
        // A clock stepped back describes again rather than stretching the description.
        assert_eq!(look.stands(made - Duration::from_secs(60)), None);
    }

    /// A decision chained in the same pass reads only what the ones before it did not,
    /// and sees exactly what it asked for.
    /// A refusal quoting a value Drover sent (a webhook's echo of a Secret) keeps none of
    /// it, and a long one is cut.
    #[test]
    fn a_config_write_refusal_never_quotes_the_values_sent() {
        let values = BTreeMap::from([("ORDERS_HOST".to_string(), "db-1.example".to_string())]);
        let secret: ConfigSpec = serde_yaml::from_str(
            "{kind: Secret, namespace: shop, name: db, keys: [{key: ORDERS_HOST, \
             databaseEndpoint: orders}]}",
        )
        .expect("entry");
        let refused = Problem::new(
            Fault::Permanent,
            "admission webhook denied: ORDERS_HOST=db-1.example (ZGItMS5leGFtcGxl) is not allowed",
        );
        assert_eq!(
            redacted(refused.clone(), &secret, &values).message,
            "admission webhook denied: ORDERS_HOST=[value withheld] ([value withheld]) is not \
             allowed"
        );
        // A ConfigMap's values are the plan's: left as they are (one may be "usw2").
        let config_map = ConfigSpec {
            kind: crate::api::ConfigKind::ConfigMap,
            ..secret.clone()
        };
        assert_eq!(redacted(refused.clone(), &config_map, &values), refused);
        let long = Problem::new(Fault::Permanent, "é".repeat(MAX_WRITE_ANSWER));
        let cut = redacted(long, &secret, &values).message;
        assert!(cut.len() <= MAX_WRITE_ANSWER + " […]".len() && cut.ends_with(" […]"));
    }

    #[test]
    fn a_chained_decision_reads_only_what_was_not_read_in_its_pass() {
        let mut observed = Observed::default();
        let first = Wants {
            workloads: vec![target(0, "use1", 0)],
            lags: vec!["orders".into()],
            ..Default::default()
        };
        observed.absorb(Observed {
            workloads: HashMap::from([(target(0, "use1", 0), gone())]),
            lags: HashMap::from([("orders".to_string(), Ok(None))]),
            ..Default::default()
        });
        let next = Wants {
            // The same workload at another count is another observation (its pods).
            workloads: vec![target(0, "use1", 0), target(0, "use1", 2)],
            lags: vec!["orders".into()],
            databases: vec!["orders".into()],
            ..Default::default()
        };
        let unseen = observed.missing(&next);
        assert_eq!(unseen.workloads, vec![target(0, "use1", 2)]);
        assert!(unseen.lags.is_empty());
        assert_eq!(unseen.databases, vec!["orders".to_string()]);
        let world = observed.world(&first);
        assert_eq!(world.workloads.len(), 1);
        assert!(world.lags.contains_key("orders"));
        assert!(world.databases.is_empty() && world.preflight.is_none());
    }

    /// A transient error is read again by a later decision; a lost region is not (it would
    /// cost another timeout). Look-ahead reads skip what is read anyway or already known.
    #[test]
    fn transient_errors_are_read_again_and_look_ahead_skips_what_is_known() {
        let mut observed = Observed::default();
        observed.absorb(Observed {
            workloads: HashMap::from([
                (
                    target(0, "use1", 0),
                    Err(Problem::new(Fault::Transient, "throttled")),
                ),
                (
                    target(1, "use1", 0),
                    Err(Problem::new(Fault::Unreachable, "no route to host")),
                ),
                (target(2, "usw2", 1), gone()),
            ]),
            ..Default::default()
        });
        let wants = Wants {
            workloads: vec![target(0, "use1", 0), target(1, "use1", 0)],
            ahead: vec![
                target(0, "use1", 0),
                target(2, "usw2", 1),
                target(3, "usw2", 1),
            ],
            ..Default::default()
        };
        assert_eq!(
            observed.missing(&wants).workloads,
            vec![target(0, "use1", 0)]
        );
        assert_eq!(observed.ahead(&wants).workloads, vec![target(3, "usw2", 1)]);
        assert!(observed.missing(&wants).ahead.is_empty());
        // Decisions never see look-ahead reads.
        let world = observed.world(&Wants {
            ahead: vec![target(2, "usw2", 1)],
            ..Default::default()
        });
        assert!(world.workloads.is_empty());
    }

    /// Only a round whose calls were all scales kept as asked, made quickly, after a pass
    /// whose answers were such scales too, goes on.
    #[test]
    fn a_second_round_follows_only_accepted_quick_scales() {
        let scaled = |t: engine::ScaleTarget| EffectResult::Scaled {
            target: t,
            step: engine::Step::Verify,
            outcome: Ok(()),
        };
        let round = |results: Vec<EffectResult>, asked: Vec<engine::ScaleTarget>| Round {
            requeue: Some(Duration::ZERO),
            results,
            asked_count: asked,
            acted: Duration::from_millis(20),
        };
        let ok = round(
            vec![scaled(target(0, "use1", 1))],
            vec![target(0, "use1", 1)],
        );
        assert!(ok.goes_on(true));
        assert!(!ok.goes_on(false), "the pass began with other answers");
        let kept_other = round(vec![scaled(target(0, "use1", 1))], Vec::new());
        assert!(!kept_other.goes_on(true));
        let promoted = round(
            vec![
                scaled(target(0, "use1", 1)),
                EffectResult::Promoted {
                    database: "orders".into(),
                    first: true,
                    outcome: Ok(()),
                },
            ],
            vec![target(0, "use1", 1)],
        );
        assert!(!promoted.goes_on(true));
        let slow = Round {
            acted: FRESH_ENOUGH,
            ..round(
                vec![scaled(target(0, "use1", 1))],
                vec![target(0, "use1", 1)],
            )
        };
        assert!(!slow.goes_on(true));
        let waits = Round {
            requeue: Some(Duration::from_millis(50)),
            ..round(
                vec![scaled(target(0, "use1", 1))],
                vec![target(0, "use1", 1)],
            )
        };
        assert!(!waits.goes_on(true));
    }

    fn at(replicas: i32) -> Seen<WorkloadSeen> {
        Ok(WorkloadSeen {
            state: Some(engine::WorkloadState {
                replicas,
                current_replicas: replicas,
                ready_replicas: replicas,
                observed_current: true,
                images: Vec::new(),
                refs: Vec::new(),
                selector: None,
                jobs_to_stop: 0,
                updated_replicas: replicas,
                restarted_at: None,
            }),
            pods: None,
            autoscaling: Default::default(),
        })
    }

    /// A scale the API server accepted stands as its answer: the new count, status not
    /// caught up. Other reads of that workload are dropped; other workloads are untouched.
    #[test]
    fn an_accepted_scale_stands_as_its_answer_and_other_reads_of_it_are_dropped() {
        let mut observed = Observed::default();
        observed.absorb(Observed {
            workloads: HashMap::from([
                (target(0, "use1", 1), at(3)),
                (target(0, "use1", 3), at(3)),
                (target(0, "usw2", 1), at(3)),
                (target(1, "use1", 0), at(2)),
            ]),
            ..Default::default()
        });
        // Only scales kept at the count asked for are passed in (workload 1's was not).
        observed.accept_scales(&[target(0, "use1", 1)]);
        let Some(Ok(WorkloadSeen {
            state: Some(state), ..
        })) = observed.workloads.get(&target(0, "use1", 1))
        else {
            panic!("the accepted scale is observed");
        };
        assert_eq!(state.replicas, 1);
        assert!(!state.observed_current);
        assert_eq!(state.current_replicas, 3, "pods are not assumed gone");
        assert!(!observed.workloads.contains_key(&target(0, "use1", 3)));
        assert!(observed.workloads.contains_key(&target(0, "usw2", 1)));
        assert!(matches!(
            observed.workloads.get(&target(1, "use1", 0)),
            Some(Ok(WorkloadSeen { state: Some(s), .. })) if s.replicas == 2 && s.observed_current
        ));
    }
}
