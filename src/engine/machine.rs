//! The failover state machine: one pure function from (plan snapshot, failover status,
//! observations, now) to (new status, effects, when to look again). No I/O, no clock.
//!
//! The runner (`src/runner.rs`) drives it: each pass observes what [`wants`] asks for, calls [`decide`],
//! writes the new status once (the intent), performs the effects, and comes back after the
//! requeue delay. The outcome of those effects reaches the next pass as
//! [`World::results`]; after a crash it is lost, and the next pass observes AWS and the
//! clusters before anything is sent again.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::{ApprovalDecision, ApprovalStatus};
use crate::api::{
    ConfigChange, DataLossEstimate, DatabaseLag, DatabaseProgress, DatabaseState,
    DisasterRecoveryPlan, DisasterRecoveryPlanSpec, DnsChange, Failover, FailoverMode,
    FailoverPhase, FailoverStatus, FailoverTimings, PendingFence, PlanSnapshot, RestartRecord,
    RunningJobs, StepState, StepStatus,
};
use crate::conditions::{self, DesiredCondition};
use crate::engine::approval::{self, ApprovalSeen};
use crate::engine::dns::{RecordChange, RecordSet};
use crate::engine::lag::{self, Lag, LagReading};
use crate::engine::{
    self, Admission, AuroraObservation, DbStep, RdsObservation, Requested, ScaleTarget, Step,
    WorkloadState, fence, poll_delay, retry_delay, step_timeout,
};
use crate::validate::parse_duration;

// ---- The step graph ---------------------------------------------------------------------

/// What a step's failure does to the failover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// The failover is refused; nothing was done.
    Reject,
    /// The failover ends Failed; nothing was changed yet.
    Fail,
    /// Before any database is promoted, a Planned failover rolls back and an Unplanned one
    /// fails. After a promotion there is no way back: the step is retried.
    RollBackOrRetry,
    /// Past the point of no return: record the failure, wait, run the step again.
    Retry,
}

/// What a step does when the region being left does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OldRegionDown {
    /// The step does not touch the old region.
    NotUsed,
    /// Wait for it until the step's deadline.
    Wait,
    /// Unplanned: skip what cannot be reached (recorded as pending fences); Planned: wait.
    SkipIfUnplanned,
}

/// One row of the step table.
#[derive(Clone, Copy, Debug)]
pub struct StepRule {
    pub step: Step,
    /// Steps that must have succeeded (or been skipped) first. Steps whose prerequisites
    /// are all met run in parallel.
    pub after: &'static [Step],
    /// Whether a DryRun runs it.
    pub dry_run: bool,
    pub on_failure: OnFailure,
    pub old_region_down: OldRegionDown,
}

/// The failover, as data. WarmUp and PromoteDatabases both follow Fence, so they run in
/// parallel; the first database promotion is the point of no return. Reconfigure (config
/// for the new region) comes before SwitchDns: traffic reaches pods that have it. Activate
/// (CronJobs) runs beside SwitchDns: DNS never waits for a scheduled job.
pub const STEPS: [StepRule; 11] = [
    StepRule {
        step: Step::Admission,
        after: &[],
        dry_run: true,
        on_failure: OnFailure::Reject,
        old_region_down: OldRegionDown::NotUsed,
    },
    StepRule {
        step: Step::Preflight,
        after: &[Step::Admission],
        dry_run: true,
        on_failure: OnFailure::Fail,
        old_region_down: OldRegionDown::Wait,
    },
    StepRule {
        step: Step::Approval,
        after: &[Step::Preflight],
        dry_run: false,
        // A rejection or an expired wait ends Rejected; a failed preflight re-check after
        // approval ends Failed. Either way nothing was changed.
        on_failure: OnFailure::Fail,
        old_region_down: OldRegionDown::NotUsed,
    },
    StepRule {
        step: Step::Fence,
        after: &[Step::Approval],
        dry_run: false,
        on_failure: OnFailure::RollBackOrRetry,
        old_region_down: OldRegionDown::SkipIfUnplanned,
    },
    StepRule {
        step: Step::WarmUp,
        after: &[Step::Fence],
        dry_run: false,
        on_failure: OnFailure::RollBackOrRetry,
        old_region_down: OldRegionDown::NotUsed,
    },
    StepRule {
        step: Step::PromoteDatabases,
        after: &[Step::Fence],
        dry_run: false,
        on_failure: OnFailure::RollBackOrRetry,
        old_region_down: OldRegionDown::NotUsed,
    },
    StepRule {
        step: Step::Activate,
        after: &[Step::WarmUp, Step::PromoteDatabases],
        dry_run: false,
        on_failure: OnFailure::Retry,
        old_region_down: OldRegionDown::NotUsed,
    },
    StepRule {
        step: Step::Reconfigure,
        after: &[Step::WarmUp, Step::PromoteDatabases],
        dry_run: false,
        on_failure: OnFailure::Retry,
        old_region_down: OldRegionDown::NotUsed,
    },
    StepRule {
        step: Step::SwitchDns,
        after: &[Step::WarmUp, Step::PromoteDatabases, Step::Reconfigure],
        dry_run: false,
        on_failure: OnFailure::Retry,
        old_region_down: OldRegionDown::NotUsed,
    },
    StepRule {
        step: Step::Verify,
        after: &[Step::SwitchDns, Step::Activate],
        dry_run: false,
        on_failure: OnFailure::Retry,
        old_region_down: OldRegionDown::SkipIfUnplanned,
    },
    StepRule {
        step: Step::Complete,
        after: &[Step::Verify],
        dry_run: false,
        on_failure: OnFailure::Retry,
        old_region_down: OldRegionDown::NotUsed,
    },
];

/// The rule of `step`.
pub fn rule(step: Step) -> &'static StepRule {
    STEPS
        .iter()
        .find(|r| r.step == step)
        .unwrap_or(&STEPS[STEPS.len() - 1])
}

/// How often a failover awaiting approval looks for a decision when no watch event wakes it.
const APPROVAL_POLL: Duration = Duration::from_secs(30);

/// Time left until `deadline`; zero once it passed.
fn deadline_left(now: SystemTime, deadline: &MicroTime) -> Duration {
    SystemTime::from(deadline.0)
        .duration_since(now)
        .unwrap_or_default()
}

/// A rollback must finish within this, counted from the failure that started it.
pub const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an Unplanned Verify waits on the old region before skipping it.
const OLD_REGION_GRACE: Duration = Duration::from_secs(10);

/// Route 53 allows 5 requests a second per account: a zone is polled at most 4 times.
const DNS_POLL_MIN: Duration = Duration::from_millis(250);

// ---- Observations -----------------------------------------------------------------------

/// Why an observation or a call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// No answer: the region may be down.
    Unreachable,
    /// Throttled, 5xx, timed out: ask again later.
    Transient,
    /// The thing asked about does not exist.
    NotFound,
    /// Refused for good; the message says why.
    Permanent,
}

/// A failed observation or call, with what AWS or Kubernetes said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub fault: Fault,
    pub message: String,
}

impl Problem {
    pub fn new(fault: Fault, message: impl Into<String>) -> Self {
        Self {
            fault,
            message: message.into(),
        }
    }

    /// Whether asking again later may give another answer.
    pub fn passes(&self) -> bool {
        matches!(self.fault, Fault::Unreachable | Fault::Transient)
    }
}

pub type Seen<T> = Result<T, Problem>;

/// A workload as observed in one region.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadSeen {
    /// None when it does not exist there.
    pub state: Option<WorkloadState>,
    /// For a writer or singleton scaled down: the pods its selector still matches,
    /// Terminating ones included. None when not counted.
    pub pods: Option<Seen<usize>>,
    /// Its autoscalers, judged for the target count.
    pub autoscaling: crate::engine::autoscalers::Autoscaling,
}

/// A database's target member as observed.
#[derive(Clone, Debug, PartialEq)]
pub enum DbSeen {
    Rds(Option<RdsObservation>),
    Aurora {
        global: Option<AuroraObservation>,
        /// The target member cluster's ARN; None when it does not exist.
        target_arn: Option<String>,
    },
}

/// What the read-only preflight probes found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PreflightSeen {
    /// Failed checks.
    pub problems: Vec<String>,
    /// Checks that could not be made this time (throttled, unreachable).
    pub unanswered: Vec<String>,
    /// What an Unplanned failover goes ahead despite (it fixes it, or it cannot wait):
    /// said in the step's message, refusing nothing.
    pub notes: Vec<String>,
}

/// Everything one pass observed, plus the outcome of the previous pass's effects.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// The other Failovers of the namespace (before admission only).
    pub siblings: Vec<Failover>,
    pub preflight: Option<PreflightSeen>,
    /// By (region, workload index).
    pub workloads: HashMap<(String, usize), Seen<WorkloadSeen>>,
    /// By database name: the newest lag datapoint into the target region.
    pub lags: HashMap<String, Seen<Option<LagReading>>>,
    /// By database name.
    pub databases: HashMap<String, Seen<DbSeen>>,
    /// By hosted zone id: its record sets.
    pub zones: HashMap<String, Seen<Vec<RecordSet>>>,
    /// By change id: whether it is INSYNC.
    pub changes: HashMap<String, Seen<bool>>,
    /// What the previous pass's effects returned (lost on a crash). Folded into status by
    /// the first decision of a pass only.
    pub results: Vec<EffectResult>,
    /// Targets the previous pass scaled successfully: every decision of this pass waits a
    /// poll before scaling them again.
    pub scaled_last_pass: Vec<ScaleTarget>,
    /// The namespace's FailoverApprovals, when read (None: not read, or the read failed).
    pub approvals: Option<Vec<ApprovalSeen>>,
    /// By (region, index into `spec.config`): the keys whose value differs from the
    /// active region's. Values never reach the engine.
    pub configs: HashMap<(String, usize), Seen<Vec<String>>>,
}

/// What a pass should observe.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Wants {
    pub siblings: bool,
    pub preflight: bool,
    pub workloads: Vec<ScaleTarget>,
    /// Look-ahead: what the step likely to start next will read, read alongside but never
    /// waited for (a lost region must not delay this decision), and not shown to it.
    pub ahead: Vec<ScaleTarget>,
    pub lags: Vec<String>,
    pub databases: Vec<String>,
    pub zones: Vec<String>,
    pub changes: Vec<String>,
    pub approvals: bool,
    /// (region, index into `spec.config`).
    pub configs: Vec<(String, usize)>,
}

// ---- Effects --------------------------------------------------------------------------------

/// A mutating call. Each is made once; its outcome is unknown until the next pass.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    Scale {
        target: ScaleTarget,
        step: Step,
    },
    /// PromoteReadReplica, or for Aurora a switchover (Planned) or a failover allowing data
    /// loss (Unplanned) to `target_arn`.
    Promote {
        database: String,
        target_arn: Option<String>,
        /// No call was sent for it before (it was Cleared): a refusal then means nothing
        /// happened. A resend after an unknown outcome may be refused because the first
        /// call took effect.
        first: bool,
    },
    ChangeRecords {
        zone: String,
        batch: u32,
        changes: Vec<RecordChange>,
    },
    /// Writes the active region's values of `spec.config[config]` where they differ.
    WriteConfig {
        config: usize,
        region: String,
    },
    /// Sets the pod template's restartedAt annotation to `at`.
    Restart {
        workload: usize,
        region: String,
        at: String,
    },
}

/// The answer to an effect.
#[derive(Clone, Debug, PartialEq)]
pub enum EffectResult {
    Scaled {
        target: ScaleTarget,
        step: Step,
        outcome: Seen<()>,
    },
    Promoted {
        database: String,
        first: bool,
        outcome: Seen<()>,
    },
    /// The change id Route 53 gave the batch.
    ChangedRecords {
        zone: String,
        batch: u32,
        outcome: Seen<String>,
    },
    /// A config write or a restart (named in `what`). Not `blocking`: a write to the old
    /// region, which nothing waits for; a refusal there is reported, not failed on.
    Activated {
        what: String,
        blocking: bool,
        outcome: Seen<()>,
    },
}

// ---- Decisions ------------------------------------------------------------------------------

/// A Kubernetes Event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: String,
    pub action: String,
    pub message: String,
}

/// What to record on the plan, before the Failover's own status.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanMark {
    pub phase: FailoverPhase,
    /// The new active region, when the failover moved it.
    pub active_region: Option<String>,
    /// What an Unplanned failover could not fence in the old region.
    pub fences: Vec<PendingFence>,
    /// Remove the entries this failover recorded: it ended without promoting anything, so
    /// the region it meant to leave is still the active one.
    pub withdraw_own_fences: bool,
    /// Durations of the waiting steps of a successful failover, to learn from.
    pub learned: Vec<(Step, f64)>,
}

/// A failover that reached a terminal phase in this pass, for the metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub phase: FailoverPhase,
    pub total_seconds: Option<f64>,
    pub step_seconds: Vec<(String, f64)>,
    /// The largest known lag at promotion; NaN when some was unknown.
    pub data_loss: Option<f64>,
}

/// The outcome of one decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to write (the same as before when nothing changed).
    pub status: FailoverStatus,
    /// Calls to make after the status is written.
    pub effects: Vec<Effect>,
    /// When to look again; None when the failover is over.
    pub requeue: Option<Duration>,
    pub plan: Option<PlanMark>,
    pub events: Vec<Note>,
    /// Steps finished in this pass, with their durations.
    pub finished_steps: Vec<(Step, f64)>,
    pub finished: Option<Finished>,
    /// While promotions requested are awaited: when their databases are next worth
    /// describing. Passes before then (for a warm-up running alongside) may decide on the
    /// last description instead, which for a requested promotion only ever waits longer.
    pub promotions_next_look: Option<Duration>,
}

/// Everything a decision depends on.
pub struct Input<'a> {
    /// The plan: its spec is the admitted snapshot once the failover runs.
    pub plan: &'a DisasterRecoveryPlan,
    pub failover: &'a Failover,
    pub world: &'a World,
    /// When the observations were complete: what lag freshness and fences are judged by.
    pub now: SystemTime,
    /// When this pass began observing: a step started in it starts here, so its duration
    /// includes its first observations.
    pub pass_started: SystemTime,
    /// The pause before a step that failed after promotion runs again.
    pub retry_after: Duration,
    /// In [0, 1), for backoff jitter.
    pub jitter: f64,
}

/// The plan's learned durations of the steps that learn, at most `STEP_DURATIONS_KEPT`
/// each; anything else in that status (it is outside data) is left behind.
fn learned_durations(plan: &DisasterRecoveryPlan) -> Vec<crate::api::StepDurations> {
    let mut kept = Vec::new();
    let recorded = plan
        .status
        .as_ref()
        .map(|s| s.step_durations.as_slice())
        .unwrap_or_default();
    for step in engine::LEARNED_STEPS {
        for mode in [FailoverMode::Planned, FailoverMode::Unplanned] {
            let Some(d) = engine::learned_for(recorded, step, mode) else {
                continue;
            };
            let newest = d
                .recent_seconds
                .len()
                .saturating_sub(engine::STEP_DURATIONS_KEPT);
            for s in &d.recent_seconds[newest..] {
                engine::learn_duration(&mut kept, step, mode, *s);
            }
        }
    }
    kept
}

pub(crate) fn stamp(t: SystemTime) -> MicroTime {
    MicroTime(Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn since(now: SystemTime, t: &MicroTime) -> Duration {
    now.duration_since(SystemTime::from(t.0))
        .unwrap_or_default()
}

fn done(state: Option<StepState>) -> bool {
    matches!(state, Some(StepState::Succeeded | StepState::Skipped))
}

fn step_of(status: &FailoverStatus, step: Step) -> Option<&StepStatus> {
    status.steps.iter().find(|s| s.name == step.name())
}

fn state_of(status: &FailoverStatus, step: Step) -> Option<StepState> {
    // Admitted by a version without the Approval step: it had none to wait for. Without
    // the Activate step: Verify resumes the CronJobs, after promotion too. Without
    // Reconfigure: its snapshot has no config.
    if matches!(step, Step::Approval | Step::Activate | Step::Reconfigure)
        && !status.steps.is_empty()
        && step_of(status, step).is_none()
    {
        return Some(StepState::Skipped);
    }
    step_of(status, step).map(|s| s.state)
}

/// When the failover first asked AWS to promote a database, if it has.
fn first_promotion_request(status: &FailoverStatus) -> Option<MicroTime> {
    status
        .databases
        .iter()
        .filter_map(|d| d.requested_at.clone())
        .min_by_key(|t| t.0)
}

fn any_promoted(status: &FailoverStatus) -> bool {
    status
        .databases
        .iter()
        .any(|d| Requested::from(d.state) != Requested::No)
}

fn workload_name(spec: &DisasterRecoveryPlanSpec, t: &ScaleTarget) -> String {
    spec.workloads
        .get(t.workload)
        .map(|w| format!("{}/{}", w.namespace, w.name))
        .unwrap_or_else(|| format!("workload #{}", t.workload))
}

/// The steps of this mode, in table order.
fn rules_for(mode: FailoverMode) -> impl Iterator<Item = &'static StepRule> {
    STEPS
        .iter()
        .filter(move |r| mode != FailoverMode::DryRun || r.dry_run)
}

// ---- What to observe ------------------------------------------------------------------------

/// What the next pass must observe for `decide` to make progress.
pub fn wants(spec: &DisasterRecoveryPlanSpec, fo: &Failover) -> Wants {
    let status = fo.status.clone().unwrap_or_default();
    let mut w = Wants::default();
    match status.phase {
        Some(p) if p.is_terminal() => return w,
        Some(p) if p.is_admitted() => {}
        _ => {
            w.siblings = true;
            return w;
        }
    }
    let target = fo.spec.target_region.as_str();
    let source = status.source_region.clone().unwrap_or_default();
    if status.rolling_back.is_some() {
        if state_of(&status, Step::WarmUp).is_some_and(|s| s != StepState::Pending) {
            w.workloads.extend(engine::standby_targets(spec, target));
        }
        w.workloads.extend(engine::unfence_targets(spec, &source));
        return w;
    }
    for step in runnable(&status, fo.spec.mode) {
        match step {
            Step::Preflight => {
                w.preflight = true;
                // Look ahead: a Planned preflight reads the old region anyway, and Fence,
                // decided next in the same pass, reads these again otherwise.
                if fo.spec.mode == FailoverMode::Planned {
                    w.ahead.extend(engine::fence_targets(spec, &source));
                }
            }
            Step::Approval => match status.approval.as_ref().map(|a| a.decision) {
                // Approved: the preflight is made again before anything changes.
                Some(Some(ApprovalDecision::Approved)) => {
                    w.preflight = true;
                    if fo.spec.mode == FailoverMode::Planned {
                        w.ahead.extend(engine::fence_targets(spec, &source));
                    }
                }
                Some(None) => w.approvals = true,
                _ => {}
            },
            Step::Fence => {
                w.workloads.extend(engine::fence_targets(spec, &source));
                if fo.spec.mode == FailoverMode::Planned && status.fenced_at.is_some() {
                    w.lags.extend(spec.databases.iter().map(|d| d.name.clone()));
                    // Their engines: what an RDS lag that never reads 0 means.
                    w.databases.extend(
                        spec.databases
                            .iter()
                            .filter(|d| d.aurora_global.is_none())
                            .map(|d| d.name.clone()),
                    );
                }
            }
            Step::WarmUp => w.workloads.extend(engine::warmup_targets(spec, target)),
            Step::PromoteDatabases => {
                for db in &spec.databases {
                    let state = status
                        .databases
                        .iter()
                        .find(|d| d.name == db.name)
                        .map(|d| d.state)
                        .unwrap_or_default();
                    if state == DatabaseState::Pending {
                        w.lags.push(db.name.clone());
                    }
                    if state != DatabaseState::Promoted {
                        w.databases.push(db.name.clone());
                    }
                }
            }
            Step::SwitchDns => {
                let mut confirming = true;
                for zone in &spec.dns {
                    let id = &zone.hosted_zone_id;
                    match pending_change(&status, id) {
                        Some(change) => {
                            w.changes.push(change);
                            confirming = false;
                        }
                        None => {
                            w.zones.push(id.clone());
                            confirming &= last_change_insync(&status, id);
                        }
                    }
                }
                // Every zone's last batch is INSYNC: the step ends by handing the target's
                // autoscalers back. Look ahead: this read usually ends the step (not when
                // a zone needs another batch), and Verify, decided next in the same pass,
                // needs these.
                if confirming {
                    w.workloads.extend(released_targets(spec, target));
                }
                if confirming && !spec.dns.is_empty() {
                    w.ahead.extend(verify_targets(spec, target, &source));
                }
            }
            Step::Activate => w.workloads.extend(engine::resume_targets(spec, target)),
            Step::Reconfigure => {
                w.workloads.extend(engine::configured_targets(spec, target));
                w.workloads.extend(restart_targets(spec, target));
                for i in 0..spec.config.len() {
                    w.configs
                        .extend(config_regions(spec, target).map(|r| (r.to_string(), i)));
                }
            }
            Step::Verify => w.workloads.extend(verify_targets(spec, target, &source)),
            Step::Admission | Step::Complete => {}
        }
    }
    w
}

/// Steps that are not done and whose prerequisites are.
fn runnable(status: &FailoverStatus, mode: FailoverMode) -> Vec<Step> {
    rules_for(mode)
        .filter(|r| r.step != Step::Admission)
        .filter(|r| !done(state_of(status, r.step)))
        .filter(|r| r.after.iter().all(|a| done(state_of(status, *a))))
        .map(|r| r.step)
        .collect()
}

/// The workloads some `spec.config` entry restarts, at their active counts in `region`
/// (writers among them are started after the write instead: `configured_targets`).
fn restart_targets(spec: &DisasterRecoveryPlanSpec, region: &str) -> Vec<ScaleTarget> {
    let mut out: Vec<ScaleTarget> = Vec::new();
    for cfg in &spec.config {
        for name in &cfg.restart {
            let found = spec
                .workloads
                .iter()
                .position(|w| w.namespace == cfg.namespace && &w.name == name);
            let started = |i: &usize| engine::waits_for_config(spec, &spec.workloads[*i]);
            if let Some(i) = found.filter(|i| !started(i) && !out.iter().any(|t| t.workload == *i))
            {
                out.push(ScaleTarget {
                    workload: i,
                    region: region.to_string(),
                    replicas: spec.workloads[i].active_replicas,
                    hold: true,
                });
            }
        }
    }
    out
}

/// Once DNS points at the target: its workloads at their active counts with their
/// autoscalers no longer held (CronJobs are Activate's).
fn released_targets(spec: &DisasterRecoveryPlanSpec, target: &str) -> Vec<ScaleTarget> {
    let mut out = engine::active_targets(spec, target);
    out.retain(|t| {
        spec.workloads
            .get(t.workload)
            .is_some_and(|w| !w.is_cron_job())
    });
    out
}

/// Where Reconfigure writes the active region's config: the target first (the step waits
/// for it), then every other region of the plan where it answers (their standby
/// workloads read it too).
fn config_regions<'a>(
    spec: &'a DisasterRecoveryPlanSpec,
    target: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    let others = spec.regions.iter().map(|r| r.name.as_str());
    std::iter::once(target).chain(others.filter(move |r| *r != target))
}

/// What Verify observes: the target's workloads at active counts, the old region's at
/// standby counts.
fn verify_targets(spec: &DisasterRecoveryPlanSpec, target: &str, source: &str) -> Vec<ScaleTarget> {
    let mut targets = engine::active_targets(spec, target);
    targets.extend(engine::standby_targets(spec, source));
    targets
}

/// The last batch sent to a zone.
fn last_change<'a>(status: &'a FailoverStatus, zone: &str) -> Option<&'a DnsChange> {
    status
        .dns_changes
        .iter()
        .rfind(|c| c.hosted_zone_id == zone)
}

/// Whether the last batch sent to a zone is INSYNC.
fn last_change_insync(status: &FailoverStatus, zone: &str) -> bool {
    last_change(status, zone).is_some_and(|c| c.status.as_deref() == Some("INSYNC"))
}

/// The last batch of a zone that Route 53 accepted but that is not INSYNC yet.
fn pending_change(status: &FailoverStatus, zone: &str) -> Option<String> {
    let last = last_change(status, zone)?;
    match (&last.change_id, last.status.as_deref()) {
        (Some(id), Some("PENDING")) => Some(id.clone()),
        _ => None,
    }
}

// ---- Deciding -------------------------------------------------------------------------------

/// How a step's pass ended.
enum StepOutcome {
    /// Not done: look again after this long.
    Wait(Duration),
    Done(StepState, String),
    Failed(String),
    /// The failover is refused before it changed anything: it ends Rejected.
    Rejected(String),
}

/// Progress of a set of scale targets in one pass.
#[derive(Default)]
struct Converge {
    /// Not there yet, with why.
    waiting: Vec<String>,
    /// The region did not answer (workload indexes, with why).
    unreachable: Vec<(usize, String)>,
    /// Missing workloads or refusals.
    failed: Vec<String>,
    /// Targets reached.
    reached: Vec<usize>,
}

struct Machine<'a> {
    input: &'a Input<'a>,
    spec: &'a DisasterRecoveryPlanSpec,
    status: FailoverStatus,
    effects: Vec<Effect>,
    events: Vec<Note>,
    plan: Option<PlanMark>,
    finished_steps: Vec<(Step, f64)>,
    finished: Option<Finished>,
    /// The shortest wait asked for by any step; zero when something moved.
    requeue: Option<Duration>,
    /// Step failures reported by the previous pass's effects.
    refused: HashMap<Step, Vec<String>>,
    /// A transient error: wait longer before looking again.
    backoff: bool,
    /// Databases and zones whose last call has an unknown outcome: nothing is sent to
    /// them in this pass, so a throttled or timed-out call is not resent at once.
    unconfirmed: Vec<String>,
    promotions_next_look: Option<Duration>,
}

/// The pure entry point: decides what this failover does next.
pub fn decide(input: &Input) -> Decision {
    let status = input.failover.status.clone().unwrap_or_default();
    let mut m = Machine {
        input,
        spec: &input.plan.spec,
        status,
        effects: Vec::new(),
        events: Vec::new(),
        plan: None,
        finished_steps: Vec::new(),
        finished: None,
        requeue: None,
        refused: HashMap::new(),
        backoff: false,
        unconfirmed: Vec::new(),
        promotions_next_look: None,
    };
    match m.status.phase {
        Some(p) if p.is_terminal() => {}
        Some(p) if p.is_admitted() => m.run(),
        _ => m.admit(),
    }
    let mut requeue = m.requeue;
    if m.backoff {
        let pause = retry_delay(2, input.jitter);
        requeue = requeue.map(|r| r.max(pause));
    }
    if !m.effects.is_empty() {
        // The answers are folded into status on the next pass, which comes at once.
        requeue = requeue.map(|r| r.min(Duration::ZERO));
    }
    if m.status.phase.is_some_and(FailoverPhase::is_terminal) {
        requeue = None;
    } else if requeue.is_none() {
        requeue = Some(Duration::from_secs(1));
    }
    Decision {
        status: m.status,
        effects: m.effects,
        requeue,
        plan: m.plan,
        events: m.events,
        finished_steps: m.finished_steps,
        finished: m.finished,
        promotions_next_look: m.promotions_next_look,
    }
}

impl Machine<'_> {
    fn mode(&self) -> FailoverMode {
        self.input.failover.spec.mode
    }

    fn target(&self) -> &str {
        &self.input.failover.spec.target_region
    }

    fn source(&self) -> String {
        self.status.source_region.clone().unwrap_or_default()
    }

    fn now(&self) -> SystemTime {
        self.input.now
    }

    fn wait(&mut self, d: Duration) {
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }

    fn note(&mut self, warning: bool, reason: &str, action: &str, message: String) {
        self.events.push(Note {
            warning,
            reason: reason.into(),
            action: action.into(),
            message,
        });
    }

    fn condition(&mut self, reason: &'static str, message: String) {
        self.status.conditions = conditions::upsert(
            &self.status.conditions,
            DesiredCondition {
                type_: "Progressing",
                status: false,
                reason,
                message,
            },
            self.input.failover.metadata.generation,
            stamp(self.now()).0,
        );
    }

    fn step_mut(&mut self, step: Step) -> Option<&mut StepStatus> {
        self.status.steps.iter_mut().find(|s| s.name == step.name())
    }

    fn start_step(&mut self, step: Step) {
        let now = stamp(self.input.pass_started.min(self.now()));
        self.status.current_step = Some(step.name().into());
        if let Some(st) = self.step_mut(step) {
            st.started_at = Some(now);
            st.state = StepState::Running;
            st.finished_at = None;
        }
    }

    fn finish_step(&mut self, step: Step, state: StepState, message: String) {
        let now = self.now();
        let mut seconds = None;
        if let Some(st) = self.step_mut(step) {
            seconds = st.started_at.as_ref().map(|s| since(now, s).as_secs_f64());
            st.state = state;
            st.duration_seconds = seconds;
            st.finished_at = Some(stamp(now));
            st.message = Some(message.clone());
        }
        if let Some(s) = seconds {
            self.finished_steps.push((step, s));
        }
        let reason = match state {
            StepState::Succeeded => "StepSucceeded",
            StepState::Skipped => "StepSkipped",
            _ => "StepFailed",
        };
        self.note(
            state != StepState::Succeeded,
            reason,
            step.name(),
            format!("{}: {message}", step.name()),
        );
        self.wait(Duration::ZERO);
    }

    /// A transient answer: counts as an attempt of `step`, and the next look waits longer.
    fn transient(&mut self, step: Step) {
        self.backoff = true;
        self.attempt(step);
    }

    fn attempt(&mut self, step: Step) {
        if let Some(st) = self.step_mut(step) {
            st.attempts += 1;
        }
    }

    fn waited(&self, step: Step) -> Duration {
        step_of(&self.status, step)
            .and_then(|s| s.started_at.as_ref())
            .map(|t| since(self.now(), t))
            .unwrap_or_default()
    }

    fn overdue(&self, step: Step) -> bool {
        self.waited(step) >= step_timeout(self.spec, step, self.mode())
    }

    fn poll(&self, step: Step) -> Duration {
        poll_delay(self.waited(step))
    }

    /// How long the wait of `step` on AWS has lasted: promotions from the first promotion
    /// request (the lag gate before it varies with the metric cadence), other steps from
    /// their start.
    fn aws_waited(&self, step: Step) -> Duration {
        match step {
            Step::PromoteDatabases => first_promotion_request(&self.status)
                .map(|t| since(self.now(), &t))
                .unwrap_or_else(|| self.waited(step)),
            _ => self.waited(step),
        }
    }

    /// `poll`, sparse until the quickest recent run of `step` on this plan would have
    /// ended: for waits on AWS, where each poll is a call under the account's limits.
    fn poll_expecting(&self, step: Step) -> Duration {
        // As learned when the failover was admitted (the run sees the plan of then).
        let learned = self
            .status
            .plan_snapshot
            .as_ref()
            .map(|s| s.step_durations.as_slice())
            .unwrap_or_default();
        let expected = engine::expected_duration(learned, step, self.mode());
        let waited = self.aws_waited(step);
        // Never sleeping past the deadline: a wait done early is not failed as overdue.
        let in_step = self.waited(step);
        let to_deadline = step_timeout(self.spec, step, self.mode()).saturating_sub(in_step);
        engine::poll_delay_expecting(waited, expected).min(to_deadline.max(poll_delay(in_step)))
    }

    // ---- Admission --------------------------------------------------------------------

    fn admit(&mut self) {
        let fo = self.input.failover;
        let steps: Vec<StepStatus> = engine::steps_for(self.mode())
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
        let now = stamp(self.now());
        self.status.timings = Some(FailoverTimings {
            started_at: Some(now.clone()),
            ..Default::default()
        });
        let (state, phase, message) =
            match engine::admit(self.input.plan, fo, &self.input.world.siblings) {
                Admission::Reject(reason) => (StepState::Failed, FailoverPhase::Rejected, reason),
                Admission::AlreadyActive => (
                    StepState::Succeeded,
                    FailoverPhase::Succeeded,
                    format!("{} is already active", self.target()),
                ),
                Admission::Proceed { source_region } => {
                    self.status.phase = Some(FailoverPhase::Running);
                    self.status.plan_snapshot = Some(PlanSnapshot {
                        generation: self.input.plan.metadata.generation,
                        spec: self.spec.clone(),
                        step_durations: learned_durations(self.input.plan),
                    });
                    self.status.source_region = Some(source_region.clone());
                    self.status.admitted_spec = Some(fo.spec.clone());
                    self.status.approval =
                        approval::needed(self.input.plan, fo).map(|reason| ApprovalStatus {
                            reason,
                            ..Default::default()
                        });
                    self.status.steps = steps;
                    self.status.planned_actions = engine::planned_actions(
                        self.spec,
                        &source_region,
                        self.target(),
                        self.mode(),
                    );
                    self.note(
                        false,
                        "FailoverStarted",
                        "Start",
                        format!(
                            "{:?} failover from {source_region} to {}",
                            self.mode(),
                            self.target()
                        ),
                    );
                    self.plan = Some(PlanMark {
                        phase: FailoverPhase::Running,
                        active_region: None,
                        fences: Vec::new(),
                        withdraw_own_fences: false,
                        learned: Vec::new(),
                    });
                    self.start_step(Step::Admission);
                    self.finish_step(
                        Step::Admission,
                        StepState::Succeeded,
                        format!("admitted: {source_region} → {}", self.target()),
                    );
                    return;
                }
            };
        self.status.steps = steps.into_iter().take(1).collect();
        self.start_step(Step::Admission);
        self.finish_step(Step::Admission, state, message.clone());
        self.finish(phase, message);
    }

    // ---- Running ------------------------------------------------------------------------

    fn run(&mut self) {
        self.flag_edited_spec();
        self.fold_results();
        if let Some(reason) = self.status.rolling_back.clone() {
            self.roll_back(reason);
            return;
        }
        let promoted_before = any_promoted(&self.status);
        let mut failures: Vec<(OnFailure, String)> = Vec::new();
        for step in runnable(&self.status, self.mode()) {
            let rule = rule(step);
            match state_of(&self.status, step) {
                Some(StepState::Failed) => {
                    // Only Retry steps stay Failed while the failover runs: run again once
                    // the pause has passed.
                    let since_failure = step_of(&self.status, step)
                        .and_then(|s| s.finished_at.as_ref())
                        .map(|t| since(self.now(), t))
                        .unwrap_or_default();
                    if since_failure < self.input.retry_after {
                        self.wait(self.input.retry_after - since_failure);
                        continue;
                    }
                    self.start_step(step);
                }
                Some(StepState::Running) => {}
                _ => self.start_step(step),
            }
            match self.run_step(step) {
                StepOutcome::Wait(d) => self.wait(d),
                StepOutcome::Done(state, message) => self.finish_step(step, state, message),
                StepOutcome::Rejected(message) => {
                    self.finish_step(step, StepState::Failed, message.clone());
                    failures.push((OnFailure::Reject, message));
                }
                StepOutcome::Failed(message) => {
                    self.finish_step(step, StepState::Failed, message.clone());
                    let policy = match rule.on_failure {
                        OnFailure::RollBackOrRetry if promoted_before => OnFailure::Retry,
                        p => p,
                    };
                    if policy == OnFailure::Retry {
                        self.ask_for_retry(message);
                    } else {
                        failures.push((policy, message));
                    }
                }
            }
        }
        if let Some((policy, message)) = failures.into_iter().next() {
            self.stop_before_promotion(policy, message);
            return;
        }
        let all_done = rules_for(self.mode()).all(|r| done(state_of(&self.status, r.step)));
        if all_done {
            let message = if self.mode() == FailoverMode::DryRun {
                "dry run: preflight passed".to_string()
            } else {
                format!("{} is active", self.target())
            };
            self.finish(FailoverPhase::Succeeded, message);
        }
    }

    /// A spec edited after admission (API servers without CEL accept it) is flagged once;
    /// the failover goes on with the spec it was admitted with.
    fn flag_edited_spec(&mut self) {
        let generation = self.input.failover.metadata.generation;
        // Admitted by an older version, which did not record the spec: record it while it
        // is still the admitted one.
        if self.status.admitted_spec.is_none() && generation.unwrap_or(1) <= 1 {
            self.status.admitted_spec = Some(self.input.failover.spec.clone());
        }
        let flagged = conditions::find(&self.status.conditions, "Valid")
            .is_some_and(|c| c.reason == "SpecEdited");
        if generation.unwrap_or(1) <= 1 || flagged {
            return;
        }
        let message = format!(
            "spec was edited (generation {}); {}; this failover goes on with the spec it \
             was admitted with",
            generation.unwrap_or_default(),
            crate::api::SPEC_IMMUTABLE_MESSAGE
        );
        self.status.conditions = conditions::upsert(
            &self.status.conditions,
            DesiredCondition {
                type_: "Valid",
                status: false,
                reason: "SpecEdited",
                message: message.clone(),
            },
            generation,
            stamp(self.now()).0,
        );
        self.note(true, "SpecEdited", "Reconcile", message);
    }

    /// A failure before any promotion: nothing of this pass is sent. A Planned failover
    /// records its rollback (a restart resumes the rollback, never the failover); others
    /// end Failed.
    fn stop_before_promotion(&mut self, policy: OnFailure, message: String) {
        self.effects.clear();
        for d in &mut self.status.databases {
            if d.state == DatabaseState::Requesting {
                d.state = DatabaseState::Cleared;
                d.requested_at = None;
            }
        }
        if policy == OnFailure::RollBackOrRetry && self.mode() == FailoverMode::Planned {
            self.status.rolling_back = Some(message);
            self.status.rollback_started_at = Some(stamp(self.now()));
            self.wait(Duration::ZERO);
        } else if policy == OnFailure::Reject {
            self.finish(FailoverPhase::Rejected, message);
        } else {
            self.finish(FailoverPhase::Failed, message);
        }
    }

    fn ask_for_retry(&mut self, message: String) {
        let note = format!(
            "{message}. Databases are already promoted, so Drover keeps retrying the remaining \
             steps until they succeed or this Failover is deleted."
        );
        self.condition("RetryingAfterPromotion", note.clone());
        self.note(true, "RetryingAfterPromotion", "Retry", note);
        self.wait(self.input.retry_after);
    }

    /// Folds the previous pass's answers into status.
    fn fold_results(&mut self) {
        for result in self.input.world.results.clone() {
            match result {
                EffectResult::Scaled {
                    target,
                    step,
                    outcome,
                } => match outcome {
                    Ok(()) => {}
                    Err(p) if p.passes() => self.transient(step),
                    Err(p) => {
                        let name = workload_name(self.spec, &target);
                        self.refused.entry(step).or_default().push(format!(
                            "scaling {name} in {}: {}",
                            target.region, p.message
                        ));
                    }
                },
                EffectResult::Promoted {
                    database,
                    first,
                    outcome,
                } => {
                    let d = self
                        .status
                        .databases
                        .iter_mut()
                        .find(|d| d.name == database);
                    let Some(d) = d.filter(|d| d.state == DatabaseState::Requesting) else {
                        continue;
                    };
                    match outcome {
                        Ok(()) => d.state = DatabaseState::Requested,
                        // Maybe sent: later passes describe the database first.
                        Err(p) if p.passes() => {
                            self.transient(Step::PromoteDatabases);
                            self.unconfirmed.push(database);
                        }
                        // A resend refused: the first call may have taken effect (AWS
                        // shows it late). Still Requesting: observe until it shows.
                        Err(_) if !first => {
                            self.backoff = true;
                            self.unconfirmed.push(database);
                        }
                        // The first call refused: nothing happened.
                        Err(p) => {
                            d.state = DatabaseState::Cleared;
                            self.refused
                                .entry(Step::PromoteDatabases)
                                .or_default()
                                .push(format!("{database}: {}", p.message));
                        }
                    }
                }
                EffectResult::Activated {
                    what,
                    blocking: false,
                    outcome: Err(p),
                } => self.note(
                    true,
                    "ConfigNotWritten",
                    "Write",
                    format!("{what}: {}", p.message),
                ),
                EffectResult::Activated { what, outcome, .. } => match outcome {
                    Ok(()) => {}
                    Err(p) if p.passes() => self.transient(Step::Reconfigure),
                    Err(p) => self
                        .refused
                        .entry(Step::Reconfigure)
                        .or_default()
                        .push(format!("{what}: {}", p.message)),
                },
                EffectResult::ChangedRecords {
                    zone,
                    batch,
                    outcome,
                } => {
                    let Some(c) = self
                        .status
                        .dns_changes
                        .iter_mut()
                        .find(|c| c.hosted_zone_id == zone && c.batch.unwrap_or(1) == batch)
                    else {
                        continue;
                    };
                    match outcome {
                        Ok(id) => {
                            c.change_id = Some(id);
                            c.status = Some("PENDING".into());
                        }
                        Err(p) if p.passes() => {
                            c.status = Some("Unconfirmed".into());
                            self.backoff = true;
                            if let Some(st) = self.step_mut(Step::SwitchDns) {
                                st.attempts += 1;
                            }
                            self.unconfirmed.push(zone);
                        }
                        Err(p) => {
                            c.status = Some("Rejected".into());
                            self.refused
                                .entry(Step::SwitchDns)
                                .or_default()
                                .push(format!("{zone}: {}", p.message));
                        }
                    }
                }
            }
        }
    }

    fn run_step(&mut self, step: Step) -> StepOutcome {
        if let Some(refusals) = self.refused.remove(&step) {
            return StepOutcome::Failed(refusals.join("; "));
        }
        match step {
            Step::Admission => StepOutcome::Done(StepState::Succeeded, "admitted".into()),
            Step::Preflight => self.preflight(),
            Step::Approval => self.approval(),
            Step::Fence
                if self.mode() == FailoverMode::Unplanned
                    && rule(Step::Fence).old_region_down == OldRegionDown::SkipIfUnplanned =>
            {
                self.fence_unplanned()
            }
            Step::Fence => self.fence_planned(),
            Step::WarmUp => self.warm_up(),
            Step::PromoteDatabases => self.promote(),
            Step::Activate => self.activate(),
            Step::Reconfigure => self.reconfigure(),
            Step::SwitchDns => self.switch_dns(),
            Step::Verify => self.verify(),
            Step::Complete => {
                StepOutcome::Done(StepState::Succeeded, format!("{} is active", self.target()))
            }
        }
    }

    // ---- Preflight ----------------------------------------------------------------------

    fn preflight(&mut self) -> StepOutcome {
        let waited = self.waited(Step::Preflight);
        let notes = self
            .input
            .world
            .preflight
            .as_ref()
            .map(|p| p.notes.join("; "))
            .unwrap_or_default();
        self.judge_preflight(Step::Preflight, waited)
            .map_or_else(StepOutcome::Wait, |failures| {
                if failures.is_empty() && notes.is_empty() {
                    StepOutcome::Done(StepState::Succeeded, "all checks passed".into())
                } else if failures.is_empty() {
                    let passed = format!("all checks passed; going ahead despite: {notes}");
                    StepOutcome::Done(StepState::Succeeded, passed)
                } else {
                    StepOutcome::Failed(format!("preflight failed: {}", failures.join("; ")))
                }
            })
    }

    /// The preflight's failures, or how long to wait when it is not answered yet (checks
    /// that could not be made are retried until the preflight deadline, counted from
    /// `waited`).
    fn judge_preflight(&mut self, step: Step, waited: Duration) -> Result<Vec<String>, Duration> {
        let Some(seen) = self.input.world.preflight.clone() else {
            return Err(Duration::ZERO);
        };
        let deadline = step_timeout(self.spec, Step::Preflight, self.mode());
        if !seen.unanswered.is_empty() && waited < deadline {
            for _ in &seen.unanswered {
                self.transient(step);
            }
            return Err(poll_delay(waited));
        }
        let failures: Vec<String> = seen.problems.into_iter().chain(seen.unanswered).collect();
        self.status.preflight_failures = failures.clone();
        Ok(failures)
    }

    // ---- Approval -----------------------------------------------------------------------

    /// Waits for a FailoverApproval when admission found one needed. Nothing is changed
    /// before it: the steps that act all follow this one. Once approved, the preflight is
    /// made again, because the wait may have been long.
    fn approval(&mut self) -> StepOutcome {
        let Some(mut approval) = self.status.approval.clone() else {
            return StepOutcome::Done(StepState::Skipped, "no approval required".into());
        };
        let outcome = match approval.decision {
            None => self.await_decision(&mut approval),
            Some(ApprovalDecision::Approved) => {
                let seen_at = approval.seen_at.as_ref().map(|t| since(self.now(), t));
                match self.judge_preflight(Step::Approval, seen_at.unwrap_or_default()) {
                    Err(wait) => StepOutcome::Wait(wait),
                    Ok(failures) if failures.is_empty() => StepOutcome::Done(
                        StepState::Succeeded,
                        format!(
                            "approved by {}; preflight made again: all checks passed",
                            approval
                                .decided_by
                                .as_deref()
                                .unwrap_or("an unnamed approver")
                        ),
                    ),
                    Ok(failures) => StepOutcome::Failed(format!(
                        "approved, but the preflight made again failed: {}",
                        failures.join("; ")
                    )),
                }
            }
            Some(ApprovalDecision::Rejected) => StepOutcome::Rejected(
                approval
                    .message
                    .clone()
                    .unwrap_or_else(|| "rejected".into()),
            ),
        };
        self.status.approval = Some(approval);
        outcome
    }

    fn await_decision(&mut self, approval: &mut ApprovalStatus) -> StepOutcome {
        let timeout = step_timeout(self.spec, Step::Approval, self.mode());
        let deadline = match &approval.deadline {
            Some(d) => d.clone(),
            None => {
                let d = stamp(self.now() + timeout);
                approval.deadline = Some(d.clone());
                d
            }
        };
        let fo = self.input.failover;
        let name = fo.metadata.name.clone().unwrap_or_default();
        let found = self
            .input
            .world
            .approvals
            .as_deref()
            .map(|all| approval::decision(all, fo));
        // A decision counts only if it was made by the deadline: an operator that was down
        // when the deadline passed must not act on a late approval.
        let in_time = |d: &ApprovalSeen| {
            d.created
                .is_none_or(|created| created <= SystemTime::from(deadline.0))
        };
        let late = match &found {
            Some((Some(decided), _)) if !in_time(decided) => Some(decided.name.clone()),
            _ => None,
        };
        if let Some((Some(decided), _)) = found.clone().filter(|(d, _)| d.is_some_and(in_time)) {
            approval.decided_by = decided.approver.clone();
            approval.identity = Some(decided.identity());
            approval.decided_at = decided.created.map(stamp);
            approval.approval_ref = Some(decided.name.clone());
            approval.seen_at = Some(stamp(self.now()));
            let who = decided
                .approver
                .clone()
                .unwrap_or_else(|| "an unnamed approver".into());
            if decided.choice == crate::api::ApprovalChoice::Approve {
                approval.decision = Some(ApprovalDecision::Approved);
                self.status.phase = Some(FailoverPhase::Running);
                self.mark_admitted(FailoverPhase::Running);
                self.note(
                    false,
                    "Approved",
                    "Approve",
                    format!(
                        "approved by {who} (FailoverApproval {}); {}",
                        decided.name,
                        approval.identity.clone().unwrap_or_default()
                    ),
                );
                // The preflight is made again in the next decision.
                return StepOutcome::Wait(Duration::ZERO);
            }
            let message = format!(
                "rejected by {who}: {}",
                decided.reason.as_deref().unwrap_or("no reason given")
            );
            approval.decision = Some(ApprovalDecision::Rejected);
            approval.message = Some(message.clone());
            return StepOutcome::Rejected(message);
        }
        let left = deadline_left(self.now(), &deadline);
        if left.is_zero() {
            let late = late
                .map(|name| format!("; FailoverApproval {name} came after it"))
                .unwrap_or_default();
            let message = format!(
                "not approved within {} (deadline {}){late}",
                humantime::format_duration(timeout),
                deadline.0
            );
            approval.message = Some(message.clone());
            return StepOutcome::Rejected(message);
        }
        if self.status.phase != Some(FailoverPhase::AwaitingApproval) {
            self.status.phase = Some(FailoverPhase::AwaitingApproval);
            self.mark_admitted(FailoverPhase::AwaitingApproval);
            let ns = fo.metadata.namespace.clone().unwrap_or_default();
            self.note(
                false,
                "AwaitingApproval",
                "Approve",
                format!(
                    "{}; approve with `drover approve {name} -n {ns}` or reject with \
                     `drover reject {name} -n {ns} --reason ...` before {}",
                    approval.reason, deadline.0
                ),
            );
        }
        if let Some((None, edited)) = found.filter(|(_, edited)| !edited.is_empty()) {
            approval.message = Some(format!(
                "ignored FailoverApproval {}: edited after creation",
                edited.join(", ")
            ));
        }
        // A new FailoverApproval wakes the controller at once; this is the fallback.
        StepOutcome::Wait(left.min(APPROVAL_POLL))
    }

    /// Records the admitted failover's phase on the plan, for its `lastFailover`.
    fn mark_admitted(&mut self, phase: FailoverPhase) {
        self.plan = Some(PlanMark {
            phase,
            active_region: None,
            fences: Vec::new(),
            withdraw_own_fences: false,
            learned: Vec::new(),
        });
    }

    // ---- Scaling ------------------------------------------------------------------------

    /// Compares targets with what was observed and asks to scale those that differ. With
    /// `ready`, a target is reached when enough pods are ready and, for a writer or
    /// singleton scaled down, its pods are gone (Terminating ones still run); without, when
    /// the desired count is set.
    fn converge(&mut self, step: Step, targets: &[ScaleTarget], ready: bool) -> Converge {
        let mut c = Converge::default();
        for t in targets {
            let name = workload_name(self.spec, t);
            let seen = self
                .input
                .world
                .workloads
                .get(&(t.region.clone(), t.workload));
            let state = match seen {
                None => {
                    c.waiting.push(format!("{name} not observed yet"));
                    continue;
                }
                Some(Err(p)) if p.fault == Fault::Unreachable => {
                    c.unreachable
                        .push((t.workload, format!("{name}: {}", p.message)));
                    continue;
                }
                Some(Err(p)) if p.passes() => {
                    self.transient(step);
                    c.waiting.push(format!("{name}: {}", p.message));
                    continue;
                }
                Some(Err(p)) => {
                    c.failed.push(format!("{name}: {}", p.message));
                    continue;
                }
                Some(Ok(seen)) => seen,
            };
            let Some(s) = &state.state else {
                let kind = self.spec.workloads.get(t.workload).map(|w| w.kind.as_str());
                c.failed.push(format!(
                    "{} {name} not found in {}",
                    kind.unwrap_or("workload"),
                    t.region
                ));
                continue;
            };
            let workload = self.spec.workloads.get(t.workload);
            let cron = workload.is_some_and(|w| w.is_cron_job());
            // WarmUp keeps the target's CronJobs suspended, and no more: their Jobs (a
            // stray resume's, a hand-made one) are not waited for nor stopped there, since
            // DNS never waits for a scheduled job.
            let jobs_matter = !(cron && step == Step::WarmUp);
            // A suspended CronJob whose Jobs are to be stopped: sent again (it is
            // idempotent) until none is left undeleted, e.g. after a crash mid-way.
            let stop_jobs = t.replicas == 0
                && s.jobs_to_stop > 0
                && workload.is_some_and(|w| w.running_jobs == Some(RunningJobs::Stop));
            // A count a live autoscaler set is its doing, not fought: above the count (an
            // HPA under load); below it down to its minimum (KEDA scaling to zero) only in
            // Verify, once the steps before have scaled it up: a warm-up brings the standby
            // to full capacity whatever an idle autoscaler would keep. An autoscaler not
            // yet as the count needs it: the scale again.
            let below_is_theirs = matches!(step, Step::SwitchDns | Step::Verify);
            let autoscaled = t.replicas > 0
                && s.replicas != t.replicas
                && state.autoscaling.live.is_some_and(|lowest| {
                    s.replicas > t.replicas || (below_is_theirs && s.replicas >= lowest)
                });
            if (s.replicas != t.replicas && !autoscaled) || stop_jobs || state.autoscaling.behind {
                let just_scaled = self.input.world.scaled_last_pass.contains(t);
                if just_scaled {
                    // Sent last pass and not showing (or changed back by someone else): look
                    // again after a poll rather than resend in a tight loop.
                    self.wait(self.poll(step));
                } else {
                    self.effects.push(Effect::Scale {
                        target: t.clone(),
                        step,
                    });
                    self.attempt(step);
                }
                if jobs_matter || s.replicas != t.replicas {
                    c.waiting.push(format!("{name} scaling to {}", t.replicas));
                } else {
                    // WarmUp: suspended; the stop of its Jobs is resent, not waited on.
                    c.reached.push(t.workload);
                }
                continue;
            }
            if !ready || !jobs_matter {
                c.reached.push(t.workload);
                continue;
            }
            let (need, most) = if autoscaled {
                (s.replicas.min(t.replicas), s.replicas.max(t.replicas))
            } else {
                (t.replicas, t.replicas)
            };
            if !(s.observed_current && s.ready_replicas >= need && s.current_replicas <= most) {
                c.waiting.push(if cron && s.current_replicas > t.replicas {
                    format!("CronJob {name}: {} Jobs still running", s.current_replicas)
                } else {
                    format!("{name} {}/{need} ready", s.ready_replicas)
                });
                continue;
            }
            match &state.pods {
                Some(Ok(n)) if *n > t.replicas.max(0) as usize => c
                    .waiting
                    .push(format!("{name} {n} pods still running or terminating")),
                Some(Err(p)) => c
                    .waiting
                    .push(format!("{name} pods unknown ({})", p.message)),
                _ => c.reached.push(t.workload),
            }
        }
        c
    }

    fn scaled_note(&self, targets: &[ScaleTarget]) -> String {
        targets
            .iter()
            .map(|t| format!("{} → {}", workload_name(self.spec, t), t.replicas))
            .collect::<Vec<_>>()
            .join(", ")
    }

    // ---- Fence --------------------------------------------------------------------------

    /// Planned: the writers and singletons of the old region are scaled to 0 and their pods
    /// gone, then every database shows zero lag on a datapoint taken after that (or, RDS for
    /// PostgreSQL, a datapoint implying a commit replayed after it: `caught_up_past_fence`).
    fn fence_planned(&mut self) -> StepOutcome {
        let source = self.source();
        let targets = engine::fence_targets(self.spec, &source);
        let c = self.converge(Step::Fence, &targets, true);
        if !c.failed.is_empty() {
            return StepOutcome::Failed(format!("fencing {source}: {}", c.failed.join(", ")));
        }
        // Planned: an old region that does not answer is waited for, never skipped.
        let mut waiting = c.waiting;
        waiting.extend(c.unreachable.into_iter().map(|(_, w)| w));
        if !waiting.is_empty() {
            // A fenced writer back (someone scaled it up): lag measured since proves nothing.
            self.status.fenced_at = None;
            if self.overdue(Step::Fence) {
                return StepOutcome::Failed(format!(
                    "fencing {source}: not ready before the deadline: {}",
                    waiting.join(", ")
                ));
            }
            return StepOutcome::Wait(self.poll(Step::Fence));
        }
        let Some(fenced_at) = self.status.fenced_at.clone() else {
            // Lag counts only on datapoints taken after this moment.
            self.status.fenced_at = Some(stamp(self.now()));
            return StepOutcome::Wait(Duration::ZERO);
        };
        let not_before = SystemTime::from(fenced_at.0);
        let mut pending = Vec::new();
        for db in &self.spec.databases {
            match self.judge_lag(&db.name, Some(not_before)) {
                Ok(lag) if lag.is_zero() || self.caught_up_past_fence(&db.name) => {}
                Ok(lag) => pending.push(format!("{}: {}", db.name, lag.describe())),
                Err(p) if p.passes() => pending.push(format!("{}: {}", db.name, p.message)),
                Err(p) => {
                    return StepOutcome::Failed(format!(
                        "measuring lag of {}: {}",
                        db.name, p.message
                    ));
                }
            }
        }
        if pending.is_empty() {
            let mut note = format!("fenced {source}: {}", self.scaled_note(&targets));
            if !self.spec.databases.is_empty() {
                note.push_str(", every standby has what was written before the fence");
            }
            return StepOutcome::Done(StepState::Succeeded, note);
        }
        if self.overdue(Step::Fence) {
            return StepOutcome::Failed(format!(
                "replication lag did not reach 0 before the fence deadline ({})",
                pending.join(", ")
            ));
        }
        StepOutcome::Wait(self.poll(Step::Fence))
    }

    /// Unplanned: scale what answers to 0; what does not is skipped and recorded, so the
    /// plan fences it when the region returns.
    fn fence_unplanned(&mut self) -> StepOutcome {
        let source = self.source();
        let targets = engine::fence_targets(self.spec, &source);
        let c = self.converge(Step::Fence, &targets, false);
        // One unanswered read is not a lost region: ask again until the (short) deadline.
        if (!c.waiting.is_empty() || !c.unreachable.is_empty()) && !self.overdue(Step::Fence) {
            return StepOutcome::Wait(self.poll(Step::Fence));
        }
        let mut unfenced: Vec<usize> = c.unreachable.iter().map(|(i, _)| *i).collect();
        let mut why: Vec<String> = c.unreachable.into_iter().map(|(_, w)| w).collect();
        for t in &targets {
            if !c.reached.contains(&t.workload) && !unfenced.contains(&t.workload) {
                unfenced.push(t.workload);
            }
        }
        why.extend(c.failed);
        why.extend(c.waiting);
        self.status.unfenced_workloads = targets
            .iter()
            .filter(|t| unfenced.contains(&t.workload))
            .map(|t| workload_name(self.spec, t))
            .collect();
        if unfenced.is_empty() {
            StepOutcome::Done(
                StepState::Succeeded,
                format!("fenced {source}: {}", self.scaled_note(&targets)),
            )
        } else {
            StepOutcome::Done(
                StepState::Skipped,
                format!("Skipped (region unreachable): {}", why.join("; ")),
            )
        }
    }

    fn judge_lag(&self, db: &str, not_before: Option<SystemTime>) -> Seen<Lag> {
        let reading = self
            .input
            .world
            .lags
            .get(db)
            .cloned()
            .unwrap_or_else(|| Err(Problem::new(Fault::Transient, "not measured yet")))?;
        let max_age = self.spec.objectives.max_lag_age();
        Ok(lag::judge(
            reading.as_ref(),
            lag::fresh_after(self.now(), max_age, not_before),
        ))
    }

    /// The data `db` loses if promoted now, when it differs from its lag (`seconds`): 0 for
    /// a Planned failover's replica proven past the fence; for one whose replication had
    /// stopped (its lag unknown), the lag read before the stop plus the time until the stop
    /// was seen. Only where the lag means time behind: RDS for PostgreSQL and Aurora (other
    /// RDS engines report apply lag, which says nothing once the stream stops).
    fn loss_estimate(&self, db: &str, seconds: Option<f64>) -> Option<f64> {
        if seconds.is_some() {
            return self.caught_up_past_fence(db).then_some(0.0);
        }
        let time_behind = match self.input.world.databases.get(db) {
            Some(Ok(DbSeen::Rds(Some(o)))) => o.engine == "postgres",
            Some(Ok(DbSeen::Aurora { .. })) => true,
            _ => false,
        };
        match self.input.world.lags.get(db) {
            Some(Ok(Some(r))) if time_behind => {
                r.before_break.as_ref().map(|b| b.estimated_loss_seconds())
            }
            _ => None,
        }
    }

    /// Planned, after the fence: whether `db`'s replica has everything the fenced writers
    /// wrote, though its lag does not read 0. RDS for PostgreSQL reports ReplicaLag as the
    /// time since the replica's last replayed commit (never 0); a fresh reading that implies
    /// a replayed commit made after the fence proves it (`lag::replayed_since`). Only for
    /// an RDS instance described as PostgreSQL: other engines' lag means something else.
    fn caught_up_past_fence(&self, db: &str) -> bool {
        let Some(fence) = self
            .status
            .fenced_at
            .as_ref()
            .map(|t| SystemTime::from(t.0))
        else {
            return false;
        };
        let postgres = matches!(
            self.input.world.databases.get(db),
            Some(Ok(DbSeen::Rds(Some(o)))) if o.engine == "postgres"
        );
        let Some(Ok(Some(reading))) = self.input.world.lags.get(db) else {
            return false;
        };
        self.mode() == FailoverMode::Planned
            && postgres
            && matches!(self.judge_lag(db, Some(fence)), Ok(Lag::Known(_)))
            && lag::replayed_since(reading, fence)
    }

    // ---- WarmUp -------------------------------------------------------------------------

    fn warm_up(&mut self) -> StepOutcome {
        let targets = engine::warmup_targets(self.spec, self.target());
        let done = format!("{} workloads ready in {}", targets.len(), self.target());
        self.bring_up(Step::WarmUp, &targets, done)
    }

    /// Scales `targets` and waits until they are ready, within the step's deadline.
    fn bring_up(&mut self, step: Step, targets: &[ScaleTarget], done: String) -> StepOutcome {
        let c = self.converge(step, targets, true);
        if !c.failed.is_empty() {
            return StepOutcome::Failed(c.failed.join(", "));
        }
        let mut waiting = c.waiting;
        waiting.extend(c.unreachable.into_iter().map(|(_, w)| w));
        if waiting.is_empty() {
            return StepOutcome::Done(StepState::Succeeded, done);
        }
        self.keep_waiting(step, &waiting)
    }

    /// A step still waiting for `waiting`: another poll, or failed once past its deadline.
    fn keep_waiting(&self, step: Step, waiting: &[String]) -> StepOutcome {
        if self.overdue(step) {
            return StepOutcome::Failed(format!(
                "not ready before the deadline: {}",
                waiting.join(", ")
            ));
        }
        StepOutcome::Wait(self.poll(step))
    }

    // ---- Promote ------------------------------------------------------------------------

    fn promote(&mut self) -> StepOutcome {
        for db in &self.spec.databases {
            if !self.status.databases.iter().any(|d| d.name == db.name) {
                self.status.databases.push(DatabaseProgress {
                    name: db.name.clone(),
                    state: DatabaseState::Pending,
                    ..Default::default()
                });
            }
        }
        if let Some(outcome) = self.gate_all() {
            return outcome;
        }
        let first_promotion = !any_promoted(&self.status);
        let mut failures = Vec::new();
        let mut waiting = Vec::new();
        for db in &self.spec.databases {
            let Some(state) = self
                .status
                .databases
                .iter()
                .find(|d| d.name == db.name)
                .map(|d| d.state)
            else {
                continue;
            };
            if state == DatabaseState::Promoted {
                continue;
            }
            let member = engine::member(db, self.target()).unwrap_or_default();
            let seen = match self.input.world.databases.get(&db.name) {
                None => {
                    waiting.push(format!("{member} not observed yet"));
                    continue;
                }
                Some(Err(p)) if p.passes() => {
                    self.transient(Step::PromoteDatabases);
                    waiting.push(format!("{member}: {}", p.message));
                    continue;
                }
                Some(Err(p)) => {
                    failures.push(format!("{}: {}", db.name, p.message));
                    continue;
                }
                Some(Ok(seen)) => seen,
            };
            let requested = Requested::from(state);
            let (next, target_arn) = match seen {
                DbSeen::Rds(obs) => (engine::rds_step(obs.as_ref(), requested), None),
                DbSeen::Aurora {
                    target_arn: None, ..
                } => {
                    failures.push(format!(
                        "{}: cluster {member} not found in {}",
                        db.name,
                        self.target()
                    ));
                    continue;
                }
                DbSeen::Aurora {
                    global,
                    target_arn: Some(arn),
                } => (
                    engine::aurora_step(global.as_ref(), arn, requested),
                    Some(arn.clone()),
                ),
            };
            match next {
                DbStep::Done => self.set_db(&db.name, DatabaseState::Promoted),
                DbStep::Fail(why) => failures.push(format!("{}: {why}", db.name)),
                DbStep::Act if self.unconfirmed.contains(&db.name) => {
                    waiting.push(format!("{member}: promotion call not confirmed; observing"))
                }
                DbStep::Act => {
                    // Recorded before the call: a restart in between re-checks AWS first.
                    self.set_db(&db.name, DatabaseState::Requesting);
                    let now = stamp(self.now());
                    if let Some(d) = self.status.databases.iter_mut().find(|d| d.name == db.name) {
                        d.requested_at.get_or_insert(now);
                    }
                    self.attempt(Step::PromoteDatabases);
                    self.effects.push(Effect::Promote {
                        database: db.name.clone(),
                        target_arn,
                        first: state == DatabaseState::Cleared,
                    });
                    waiting.push(format!("{member} promotion requested"));
                }
                DbStep::Wait(why) => waiting.push(format!("{member}: {why}")),
            }
        }
        if !failures.is_empty() {
            return StepOutcome::Failed(failures.join("; "));
        }
        let promoting = self
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Promote { .. }));
        if first_promotion && promoting && self.mode() == FailoverMode::Unplanned {
            // Past this point the failover cannot go back: what it could not fence in the old
            // region goes on the plan now (written before the calls), not only at the end,
            // which a failover retrying after promotion may never reach.
            let fences = self.fences_for_plan();
            if !fences.is_empty() {
                self.plan = Some(PlanMark {
                    phase: FailoverPhase::Running,
                    active_region: None,
                    fences,
                    withdraw_own_fences: false,
                    learned: Vec::new(),
                });
            }
        }
        if waiting.is_empty() {
            return StepOutcome::Done(
                StepState::Succeeded,
                format!(
                    "{} databases writable in {}",
                    self.spec.databases.len(),
                    self.target()
                ),
            );
        }
        if self.overdue(Step::PromoteDatabases) {
            return StepOutcome::Failed(format!(
                "not writable before the promotion deadline: {}",
                waiting.join(", ")
            ));
        }
        let poll = self.promotion_poll();
        // Described afresh by the deadline at the latest: a pass past it decides on what
        // AWS says then, never on an older description.
        let to_deadline = step_timeout(self.spec, Step::PromoteDatabases, self.mode())
            .saturating_sub(self.waited(Step::PromoteDatabases));
        self.promotions_next_look = Some(poll.min(to_deadline));
        StepOutcome::Wait(poll)
    }

    /// Promotions requested together finish close together: once one is seen done, the
    /// rest are looked at again at the shortest poll, not a poll that has grown with the
    /// wait (~100 ms after 3 s). Only the pass that sees one finish does so.
    fn promotion_poll(&self) -> Duration {
        let promoted_before = |name: &str| {
            self.input.failover.status.as_ref().is_some_and(|s| {
                s.databases
                    .iter()
                    .any(|d| d.name == name && d.state == DatabaseState::Promoted)
            })
        };
        let one_just_finished = self
            .status
            .databases
            .iter()
            .any(|d| d.state == DatabaseState::Promoted && !promoted_before(&d.name));
        if one_just_finished {
            poll_delay(Duration::ZERO)
        } else {
            self.poll_expecting(Step::PromoteDatabases)
        }
    }

    fn set_db(&mut self, name: &str, state: DatabaseState) {
        if let Some(d) = self.status.databases.iter_mut().find(|d| d.name == name) {
            d.state = state;
        }
    }

    /// Gates every database not yet cleared, and clears them all at once only if every one
    /// passes: one refused database means none is promoted. None when all are cleared.
    fn gate_all(&mut self) -> Option<StepOutcome> {
        let ungated: Vec<String> = self
            .status
            .databases
            .iter()
            .filter(|d| d.state == DatabaseState::Pending)
            .map(|d| d.name.clone())
            .collect();
        if ungated.is_empty() {
            return None;
        }
        let fo = &self.input.failover.spec;
        let max = fo
            .max_data_loss
            .as_deref()
            .and_then(|m| parse_duration(m).ok());
        // A Planned failover's lag counts only if measured after the fence stopped the
        // writers; fenced but not recorded means nothing measured yet counts.
        let not_before = (self.mode() == FailoverMode::Planned).then(|| {
            self.status
                .fenced_at
                .as_ref()
                .map_or(self.now(), |t| SystemTime::from(t.0))
        });
        let mut verdicts = Vec::new();
        let mut unanswered = Vec::new();
        for name in &ungated {
            let aurora = self
                .spec
                .databases
                .iter()
                .find(|d| &d.name == name)
                .is_some_and(|d| d.aurora_global.is_some());
            if aurora
                && let Err(why) = engine::aurora_failover_gate(self.mode(), fo.allow_data_loss)
            {
                verdicts.push((name.clone(), None, Err(why)));
                continue;
            }
            match self.judge_lag(name, not_before) {
                Ok(lag) => {
                    let verdict = if self.caught_up_past_fence(name) {
                        Ok(())
                    } else {
                        lag::promotion_gate(self.mode(), fo.allow_data_loss, max, &lag)
                    };
                    verdicts.push((name.clone(), lag.seconds(), verdict));
                }
                Err(p) if p.passes() && !self.overdue(Step::PromoteDatabases) => {
                    unanswered.push(name.clone())
                }
                Err(p) => verdicts.push((
                    name.clone(),
                    None,
                    Err(format!("measuring lag: {}", p.message)),
                )),
            }
        }
        let refused: Vec<String> = verdicts
            .iter()
            .filter_map(|(n, _, v)| v.as_ref().err().map(|why| format!("{n}: {why}")))
            .collect();
        if refused.is_empty() && !unanswered.is_empty() {
            self.transient(Step::PromoteDatabases);
            return Some(StepOutcome::Wait(self.poll(Step::PromoteDatabases)));
        }
        let state = if refused.is_empty() {
            DatabaseState::Cleared
        } else {
            DatabaseState::Gated
        };
        for (name, seconds, _) in verdicts {
            let estimate = self.loss_estimate(&name, seconds);
            if let Some(d) = self.status.databases.iter_mut().find(|d| d.name == name) {
                d.state = state;
                d.lag_seconds = seconds;
                d.loss_estimate_seconds = estimate;
            }
        }
        if refused.is_empty() {
            None
        } else {
            Some(StepOutcome::Failed(format!(
                "no database promoted, because the lag gate refused {}",
                refused.join("; ")
            )))
        }
    }

    // ---- Activate -----------------------------------------------------------------------

    /// Every database is writable: the target's CronJobs are resumed.
    fn activate(&mut self) -> StepOutcome {
        let targets = engine::resume_targets(self.spec, self.target());
        let done = if targets.is_empty() {
            "no CronJob to resume".to_string()
        } else {
            format!("resumed {}", self.scaled_note(&targets))
        };
        self.bring_up(Step::Activate, &targets, done)
    }

    /// The target's config written, then the writers that waited for it started and the
    /// other workloads that read it restarted, all ready before DNS moves.
    fn reconfigure(&mut self) -> StepOutcome {
        let mut waiting = match self.write_config() {
            Err(failed) => return StepOutcome::Failed(failed),
            Ok(waits) => waits,
        };
        let started = engine::configured_targets(self.spec, self.target());
        if waiting.is_empty() {
            let c = self.converge(Step::Reconfigure, &started, true);
            if !c.failed.is_empty() {
                return StepOutcome::Failed(c.failed.join(", "));
            }
            waiting.extend(c.waiting);
            waiting.extend(c.unreachable.into_iter().map(|(_, w)| w));
            match self.restart() {
                Err(failed) => return StepOutcome::Failed(failed),
                Ok(restart_waits) => waiting.extend(restart_waits),
            }
        }
        if waiting.is_empty() {
            let mut notes = Vec::new();
            let changed: Vec<String> = self
                .status
                .config_changes
                .iter()
                .map(|c| {
                    let keys = c.keys.join(", ");
                    format!(
                        "{} {}/{} in {} ({keys})",
                        c.kind, c.namespace, c.name, c.region
                    )
                })
                .collect();
            if !changed.is_empty() {
                notes.push(format!("wrote {}", changed.join("; ")));
            }
            if !started.is_empty() {
                notes.push(format!("started {}", self.scaled_note(&started)));
            }
            if !self.status.restarts.is_empty() {
                let restarted: Vec<&str> = self
                    .status
                    .restarts
                    .iter()
                    .map(|r| r.workload.as_str())
                    .collect();
                notes.push(format!("restarted {}", restarted.join(", ")));
            }
            if notes.is_empty() {
                notes.push("no config to change".into());
            }
            return StepOutcome::Done(StepState::Succeeded, notes.join("; "));
        }
        self.keep_waiting(Step::Reconfigure, &waiting)
    }

    /// Writes the active region's config values where they differ: in the target (what
    /// it waits for) and in the old region when it answers. Each change is recorded, by
    /// its keys, before the write. Returns what the target still waits for.
    fn write_config(&mut self) -> Result<Vec<String>, String> {
        let target = self.target().to_string();
        let regions: Vec<String> = config_regions(self.spec, &target)
            .map(str::to_string)
            .collect();
        let mut waiting = Vec::new();
        for (i, cfg) in self.spec.config.iter().enumerate() {
            let what = format!("{} {}/{}", cfg.kind.name(), cfg.namespace, cfg.name);
            for region in &regions {
                let seen = self.input.world.configs.get(&(region.clone(), i));
                let differing = match seen {
                    Some(Ok(keys)) => keys.clone(),
                    // The other regions (the old one, a third) are written when they
                    // answer; nothing waits for them.
                    _ if *region != target => continue,
                    None => {
                        waiting.push(format!("{what} not read yet"));
                        continue;
                    }
                    Some(Err(p)) if p.passes() => {
                        self.transient(Step::Reconfigure);
                        waiting.push(format!("{what}: {}", p.message));
                        continue;
                    }
                    Some(Err(p)) => return Err(format!("{what} in {target}: {}", p.message)),
                };
                if differing.is_empty() {
                    continue;
                }
                self.record_config_change(cfg, region, &differing);
                self.effects.push(Effect::WriteConfig {
                    config: i,
                    region: region.clone(),
                });
                if *region == target {
                    waiting.push(format!("writing {what}"));
                }
            }
        }
        Ok(waiting)
    }

    fn record_config_change(
        &mut self,
        cfg: &crate::api::ConfigSpec,
        region: &str,
        keys: &[String],
    ) {
        let kind = cfg.kind.name();
        let existing = self.status.config_changes.iter_mut().find(|c| {
            c.kind == kind
                && c.namespace == cfg.namespace
                && c.name == cfg.name
                && c.region == region
        });
        match existing {
            Some(c) => {
                for k in keys {
                    if !c.keys.contains(k) {
                        c.keys.push(k.clone());
                    }
                }
            }
            None => self.status.config_changes.push(ConfigChange {
                kind: kind.into(),
                namespace: cfg.namespace.clone(),
                name: cfg.name.clone(),
                region: region.into(),
                keys: keys.to_vec(),
            }),
        }
    }

    /// Once the target's config is written: each workload named by a config this failover
    /// changed there is restarted (recorded first, the same annotation value on a resend)
    /// and waited for until rolled out. Returns what it waits for.
    fn restart(&mut self) -> Result<Vec<String>, String> {
        let target = self.target().to_string();
        let changed = |cfg: &crate::api::ConfigSpec| {
            self.status.config_changes.iter().any(|c| {
                c.region == target
                    && c.kind == cfg.kind.name()
                    && c.namespace == cfg.namespace
                    && c.name == cfg.name
            })
        };
        let restart: Vec<ScaleTarget> = {
            let mut spec = self.spec.clone();
            spec.config.retain(|c| changed(c));
            restart_targets(&spec, &target)
        };
        let mut waiting = Vec::new();
        for t in restart {
            let name = workload_name(self.spec, &t);
            let recorded = self
                .status
                .restarts
                .iter()
                .find(|r| r.workload == name && r.region == target)
                .map(|r| r.restarted_at.clone());
            let at = match recorded {
                Some(at) => at,
                None => {
                    let at = stamp(self.now()).0.to_string();
                    self.status.restarts.push(RestartRecord {
                        workload: name.clone(),
                        region: target.clone(),
                        restarted_at: at.clone(),
                    });
                    at
                }
            };
            let seen = self
                .input
                .world
                .workloads
                .get(&(target.clone(), t.workload));
            let state = match seen {
                Some(Ok(WorkloadSeen { state: Some(s), .. })) => s,
                Some(Ok(_)) => return Err(format!("{name} not found in {target}")),
                Some(Err(p)) if !p.passes() => return Err(format!("{name}: {}", p.message)),
                _ => {
                    waiting.push(format!("{name} not observed yet"));
                    continue;
                }
            };
            if state.restarted_at.as_deref() != Some(at.as_str()) {
                self.effects.push(Effect::Restart {
                    workload: t.workload,
                    region: target.clone(),
                    at,
                });
                waiting.push(format!("restarting {name}"));
                continue;
            }
            let rolled_out = state.observed_current
                && state.updated_replicas >= state.replicas
                && state.ready_replicas >= state.replicas
                && state.current_replicas <= state.replicas;
            if !rolled_out {
                waiting.push(format!(
                    "{name} rolling out: {}/{} updated, {} ready",
                    state.updated_replicas, state.replicas, state.ready_replicas
                ));
            }
        }
        Ok(waiting)
    }

    // ---- DNS ----------------------------------------------------------------------------

    /// Each zone moves in batches within Route 53's limits, one at a time (Route 53 refuses
    /// a change to a zone while an earlier one is PENDING). Each batch is sent only after
    /// the zone was observed, so a batch applied before a restart is not sent again.
    fn switch_dns(&mut self) -> StepOutcome {
        let mut notes = Vec::new();
        let mut waiting = Vec::new();
        for zone in &self.spec.dns {
            let id = zone.hosted_zone_id.as_str();
            if let Some(change) = pending_change(&self.status, id) {
                match self.input.world.changes.get(&change) {
                    Some(Ok(true)) => {
                        if let Some(c) = self
                            .status
                            .dns_changes
                            .iter_mut()
                            .rfind(|c| c.hosted_zone_id == id)
                        {
                            c.status = Some("INSYNC".into());
                        }
                        self.wait(Duration::ZERO);
                        waiting.push(format!("{id}: next batch"));
                    }
                    Some(Err(p)) if !p.passes() => {
                        return StepOutcome::Failed(format!("{id}: {}", p.message));
                    }
                    Some(Err(p)) => {
                        self.transient(Step::SwitchDns);
                        waiting.push(format!("{id}: {}", p.message));
                    }
                    _ => {
                        self.wait(self.dns_poll());
                        waiting.push(format!("{id}: change {change} not INSYNC"));
                    }
                }
                continue;
            }
            let current = match self.input.world.zones.get(id) {
                None => {
                    waiting.push(format!("{id}: not observed yet"));
                    continue;
                }
                Some(Err(p)) if p.passes() => {
                    self.transient(Step::SwitchDns);
                    waiting.push(format!("{id}: {}", p.message));
                    continue;
                }
                Some(Err(p)) => return StepOutcome::Failed(format!("{id}: {}", p.message)),
                Some(Ok(records)) => records,
            };
            let changes = engine::dns::zone_changes(self.spec, zone, self.target(), current);
            if changes.is_empty() {
                let batches: Vec<&DnsChange> = self
                    .status
                    .dns_changes
                    .iter()
                    .filter(|c| c.hosted_zone_id == id)
                    .collect();
                let unconfirmed = batches.iter().filter(|c| c.change_id.is_none()).count();
                let caveat = if unconfirmed > 0 {
                    format!(
                        "; {unconfirmed} of them answered with an error, so not waited on until INSYNC"
                    )
                } else {
                    String::new()
                };
                notes.push(format!(
                    "{id}: every plan record points at {} ({} batches{caveat})",
                    self.target(),
                    batches.len()
                ));
                continue;
            }
            // Each accepted batch moves at least one change, and a zone needs at most a
            // DELETE and a CREATE per record target: more batches than that means the zone
            // does not take them, and resending would not help.
            let bound: usize = zone
                .records
                .iter()
                .map(|r| 2 * r.targets.len().max(1))
                .sum();
            let accepted = self
                .status
                .dns_changes
                .iter()
                .filter(|c| c.hosted_zone_id == id && c.change_id.is_some())
                .count();
            let missing = changes.len();
            if accepted > bound + 2 {
                return StepOutcome::Failed(format!(
                    "{id}: {missing} changes still missing after {accepted} accepted batches"
                ));
            }
            let batch = match engine::dns::pack(changes) {
                Ok(batches) => batches.into_iter().next().unwrap_or_default(),
                Err(e) => return StepOutcome::Failed(format!("{id}: {e}")),
            };
            if self.unconfirmed.iter().any(|z| z == id) {
                waiting.push(format!("{id}: last batch not confirmed; observing"));
                continue;
            }
            let number = self.record_dns_intent(id, batch.len());
            self.attempt(Step::SwitchDns);
            self.effects.push(Effect::ChangeRecords {
                zone: id.to_string(),
                batch: number,
                changes: batch,
            });
            waiting.push(format!("{id}: batch {number} sent"));
        }
        if waiting.is_empty() {
            // DNS points at the target: the ScaledObjects held paused through the warm-up
            // are handed back now, for live traffic to scale, not only at Verify (which
            // also waits for Activate).
            let released = released_targets(self.spec, self.target());
            let sent_before = self.effects.len();
            let c = self.converge(Step::SwitchDns, &released, false);
            let sent = self.effects[sent_before..]
                .iter()
                .filter(|e| matches!(e, Effect::Scale { .. }))
                .count();
            // Handed back in this pass, every one: the step does not wait a pass to see
            // them, since Verify, next, converges the same targets and sends again any
            // hand-back that did not take.
            if c.failed.is_empty() && c.unreachable.is_empty() && c.waiting.len() == sent {
                if sent > 0 {
                    notes.push(format!("{sent} autoscaled workloads handed back"));
                }
                return StepOutcome::Done(StepState::Succeeded, notes.join("; "));
            }
            let mut left = c.waiting;
            left.extend(c.failed);
            left.extend(c.unreachable.into_iter().map(|(_, w)| w));
            if self.overdue(Step::SwitchDns) {
                notes.push(format!(
                    "autoscalers not handed back yet ({}); Verify hands them back",
                    left.join(", ")
                ));
                return StepOutcome::Done(StepState::Succeeded, notes.join("; "));
            }
            return StepOutcome::Wait(self.poll(Step::SwitchDns));
        }
        if self.overdue(Step::SwitchDns) {
            return StepOutcome::Failed(format!(
                "not INSYNC before the DNS deadline: {}",
                waiting.join(", ")
            ));
        }
        StepOutcome::Wait(self.dns_poll())
    }

    /// Route 53's rate limit is per account: the zones share it.
    fn dns_poll(&self) -> Duration {
        let zones = u32::try_from(self.spec.dns.len().max(1)).unwrap_or(u32::MAX);
        self.poll_expecting(Step::SwitchDns)
            .max(DNS_POLL_MIN * zones)
    }

    /// Records the intent to send a zone's next batch; returns its number (from 1). A batch
    /// that was never answered is reused, so refusals do not grow the status.
    fn record_dns_intent(&mut self, zone: &str, changes: usize) -> u32 {
        let changes = u32::try_from(changes).unwrap_or(u32::MAX);
        let unanswered = self
            .status
            .dns_changes
            .iter_mut()
            .rfind(|c| c.hosted_zone_id == zone)
            .filter(|c| c.change_id.is_none());
        if let Some(c) = unanswered {
            c.changes = Some(changes);
            c.status = Some("Submitting".into());
            return c.batch.unwrap_or(1);
        }
        let number = self
            .status
            .dns_changes
            .iter()
            .filter(|c| c.hosted_zone_id == zone)
            .count() as u32
            + 1;
        self.status.dns_changes.push(DnsChange {
            hosted_zone_id: zone.into(),
            batch: Some(number),
            changes: Some(changes),
            change_id: None,
            status: Some("Submitting".into()),
        });
        number
    }

    // ---- Verify -------------------------------------------------------------------------

    /// DNS points at the target: the target must be ready, and the old region shrinks to
    /// standby (writers and singletons at 0) while that is confirmed.
    fn verify(&mut self) -> StepOutcome {
        let source = self.source();
        let active = engine::active_targets(self.spec, self.target());
        let standby = engine::standby_targets(self.spec, &source);
        let target = self.converge(Step::Verify, &active, true);
        let old = self.converge(Step::Verify, &standby, false);
        if !target.failed.is_empty() {
            return StepOutcome::Failed(target.failed.join(", "));
        }
        let mut waiting = target.waiting;
        waiting.extend(target.unreachable.into_iter().map(|(_, w)| w));
        let skip_old = self.mode() == FailoverMode::Unplanned
            && rule(Step::Verify).old_region_down == OldRegionDown::SkipIfUnplanned;
        let mut old_problems = old.failed;
        if skip_old {
            // Unplanned: what keeps the old region from standby is skipped after a short
            // grace (an unanswered read is not yet a lost region).
            let mut old_waiting = old.waiting;
            old_waiting.extend(old.unreachable.into_iter().map(|(_, w)| w));
            if self.waited(Step::Verify) >= OLD_REGION_GRACE {
                old_problems.extend(old_waiting);
            } else {
                waiting.extend(old_waiting);
            }
        } else {
            if !old_problems.is_empty() {
                return StepOutcome::Failed(format!(
                    "scaling {source} to standby: {}",
                    old_problems.join(", ")
                ));
            }
            waiting.extend(old.waiting);
            waiting.extend(old.unreachable.into_iter().map(|(_, w)| w));
        }
        if !waiting.is_empty() {
            return self.keep_waiting(Step::Verify, &waiting);
        }
        if old_problems.is_empty() {
            StepOutcome::Done(
                StepState::Succeeded,
                format!("{} ready; {source} scaled to standby", self.target()),
            )
        } else {
            StepOutcome::Done(
                StepState::Skipped,
                format!(
                    "{} ready; Skipped (region unreachable) scaling {source} to standby: {}",
                    self.target(),
                    old_problems.join(", ")
                ),
            )
        }
    }

    // ---- Rollback -----------------------------------------------------------------------

    /// A Planned failover undoes what it did before any promotion: the target's writers
    /// and singletons are confirmed gone before the old region's come back, so none ever
    /// runs in both.
    fn roll_back(&mut self, reason: String) {
        let source = self.source();
        let target = self.target().to_string();
        let started = match &self.status.rollback_started_at {
            Some(t) => SystemTime::from(t.0),
            None => {
                self.status.rollback_started_at = Some(stamp(self.now()));
                self.now()
            }
        };
        let overdue = self.now().duration_since(started).unwrap_or_default() >= ROLLBACK_TIMEOUT;
        let warmed = state_of(&self.status, Step::WarmUp).is_some_and(|s| s != StepState::Pending);
        let mut undone = Vec::new();
        if warmed {
            let down = engine::standby_targets(self.spec, &target);
            // Writers and singletons must be gone (pods included) before the old region's
            // come back; the others only need their count set.
            let (exclusive, shared): (Vec<ScaleTarget>, Vec<ScaleTarget>) =
                down.iter().cloned().partition(|t| {
                    self.spec
                        .workloads
                        .get(t.workload)
                        .is_some_and(|w| w.fenced())
                });
            let gone = self.converge(Step::Fence, &exclusive, true);
            let set = self.converge(Step::Fence, &shared, false);
            let mut left: Vec<String> = gone.failed;
            left.extend(gone.unreachable.into_iter().map(|(_, w)| w));
            left.extend(gone.waiting);
            left.extend(set.failed);
            left.extend(set.unreachable.into_iter().map(|(_, w)| w));
            left.extend(set.waiting);
            if !left.is_empty() {
                if overdue {
                    // The target's scale-down is still sent; the old region stays fenced.
                    self.finish(
                        FailoverPhase::Failed,
                        format!(
                            "{reason}. Rolled back: nothing; DNS untouched; could not undo: \
                             {source} left fenced, because {target} did not scale down: {}",
                            left.join(", ")
                        ),
                    );
                } else {
                    self.wait(poll_delay(
                        self.now().duration_since(started).unwrap_or_default(),
                    ));
                }
                return;
            }
            undone.push(format!("{target} to standby ({})", self.scaled_note(&down)));
        }
        let unfence = engine::unfence_targets(self.spec, &source);
        let c = self.converge(Step::Fence, &unfence, false);
        let mut left: Vec<String> = c.failed;
        left.extend(c.unreachable.into_iter().map(|(_, w)| w));
        if !c.waiting.is_empty() || !left.is_empty() {
            if overdue {
                left.extend(c.waiting);
                self.finish(
                    FailoverPhase::Failed,
                    format!(
                        "{reason}. Rolled back: {}; DNS untouched; could not undo: {}",
                        if undone.is_empty() {
                            "nothing".to_string()
                        } else {
                            undone.join(", ")
                        },
                        left.join(", ")
                    ),
                );
            } else {
                self.wait(poll_delay(
                    self.now().duration_since(started).unwrap_or_default(),
                ));
            }
            return;
        }
        if !unfence.is_empty() {
            undone.push(format!(
                "{source} back to active ({})",
                self.scaled_note(&unfence)
            ));
        }
        let summary = if undone.is_empty() {
            "nothing needed undoing".to_string()
        } else {
            format!("scaled {}", undone.join(", "))
        };
        self.finish(
            FailoverPhase::RolledBack,
            format!("{reason}. Rolled back: {summary}; DNS untouched"),
        );
    }

    // ---- The end ------------------------------------------------------------------------

    /// What an Unplanned failover leaves to fence in the old region: the writers and
    /// singletons its Fence step did not reach (all of them if that is unknown), and the old
    /// RDS primaries (see `fence::fences_to_record`).
    fn fences_for_plan(&self) -> Vec<PendingFence> {
        let Some(source) = &self.status.source_region else {
            return Vec::new();
        };
        let fence_state = state_of(&self.status, Step::Fence);
        let unfenced = match fence_state {
            Some(StepState::Succeeded | StepState::Skipped) => fence::Unfenced::Workloads(
                engine::fence_targets(self.spec, source)
                    .iter()
                    .filter(|t| {
                        self.status
                            .unfenced_workloads
                            .contains(&workload_name(self.spec, t))
                    })
                    .map(|t| t.workload)
                    .collect(),
            ),
            _ => fence::Unfenced::Unknown,
        };
        fence::fences_to_record(
            self.spec,
            self.mode(),
            source,
            fence_state,
            &unfenced,
            self.input
                .failover
                .metadata
                .name
                .as_deref()
                .unwrap_or_default(),
            &Time(stamp(self.now()).0),
        )
    }

    /// Ends the failover in `phase`. The plan is written first (see `PlanMark`): what the
    /// failover moved and what it could not fence must never be lost to a crash after the
    /// terminal phase is written, because a terminal Failover is never run again.
    fn finish(&mut self, phase: FailoverPhase, message: String) {
        let now = self.now();
        // Rejected at admission, the failover never held the plan: its record is not ours.
        if phase != FailoverPhase::Rejected || self.status.plan_snapshot.is_some() {
            let moved = phase == FailoverPhase::Succeeded && self.mode() != FailoverMode::DryRun;
            let fences = if moved {
                self.fences_for_plan()
            } else {
                Vec::new()
            };
            // Pending fences recorded at the first promotion call are withdrawn when the
            // failover ends without any promotion having been made.
            let withdraw_own_fences = !moved && !any_promoted(&self.status);
            let learned = if moved {
                engine::LEARNED_STEPS
                    .into_iter()
                    .filter_map(|step| {
                        let st = step_of(&self.status, step)?;
                        if st.state != StepState::Succeeded {
                            return None;
                        }
                        // Promotions are learned from the first request (as they are polled);
                        // a step that requested none waited on no promotion.
                        let seconds = match step {
                            Step::PromoteDatabases => {
                                let from = first_promotion_request(&self.status)?;
                                let to = st.finished_at.as_ref()?;
                                SystemTime::from(to.0)
                                    .duration_since(SystemTime::from(from.0))
                                    .ok()?
                                    .as_secs_f64()
                            }
                            _ => st.duration_seconds?,
                        };
                        Some((step, seconds))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            self.plan = Some(PlanMark {
                phase,
                active_region: moved.then(|| self.target().to_string()),
                fences,
                withdraw_own_fences,
                learned,
            });
        }
        self.status.phase = Some(phase);
        let step_seconds: Vec<(String, f64)> = self
            .status
            .steps
            .iter()
            .filter_map(|st| Some((st.name.clone(), st.duration_seconds?)))
            .collect();
        let timings = self.status.timings.get_or_insert_with(Default::default);
        let total = timings
            .started_at
            .as_ref()
            .map(|started| since(now, started).as_secs_f64());
        timings.finished_at = Some(stamp(now));
        timings.total_seconds = total;
        let lags: Vec<DatabaseLag> = self
            .status
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
        let unknown: Vec<String> = self
            .status
            .databases
            .iter()
            .filter(|d| d.lag_seconds.is_none() && Requested::from(d.state) != Requested::No)
            .map(|d| d.name.clone())
            .collect();
        let mut data_loss = None;
        if !lags.is_empty() || !unknown.is_empty() {
            let max_lag_seconds = lags.iter().map(|l| l.lag_seconds).fold(0.0, f64::max);
            // Per promoted database: its own estimate, else its lag; none if one has neither.
            let estimates: Option<Vec<f64>> = self
                .status
                .databases
                .iter()
                .filter(|d| Requested::from(d.state) != Requested::No)
                .map(|d| d.loss_estimate_seconds.or(d.lag_seconds))
                .collect();
            let estimated_seconds = estimates
                .filter(|e| !e.is_empty())
                .map(|e| e.into_iter().fold(0.0, f64::max));
            // The metric shows a number only when no lag was unknown: an estimate made on an
            // unknown lag rests on an assumption the status states and a gauge cannot.
            data_loss = Some(if unknown.is_empty() {
                estimated_seconds.unwrap_or(max_lag_seconds)
            } else {
                f64::NAN
            });
            self.status.data_loss = Some(DataLossEstimate {
                max_lag_seconds,
                databases: lags,
                unknown_lag_databases: unknown,
                estimated_seconds,
            });
        }
        let reason = match phase {
            FailoverPhase::Succeeded => "Succeeded",
            FailoverPhase::Failed => "Failed",
            FailoverPhase::RolledBack => "RolledBack",
            FailoverPhase::Rejected => "Rejected",
            _ => "Stopped",
        };
        self.condition(reason, message.clone());
        self.note(
            phase != FailoverPhase::Succeeded,
            &format!("Failover{phase:?}"),
            "Finish",
            message,
        );
        self.finished = Some(Finished {
            phase,
            total_seconds: total,
            step_seconds,
            data_loss,
        });
    }
}

#[cfg(test)]
mod tests;
