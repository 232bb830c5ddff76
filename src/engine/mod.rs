//! The failover engine's decisions, as pure functions: (plan, failover, observed world) →
//! what to do next. No I/O here; `driver` performs the calls and feeds observations back.

use std::time::Duration;

use crate::api::{
    DatabaseSpec, DatabaseState, DisasterRecoveryPlan, DisasterRecoveryPlanSpec, Failover,
    FailoverMode, FailoverPhase, RegionRole,
};
use crate::validate::{self, parse_timeout};

pub mod approval;
pub mod automatic;
pub mod autoscalers;
pub mod dns;
pub mod drill;
pub mod fence;
pub mod lag;
pub mod machine;
pub mod old_volume;
pub mod pod_refs;
pub mod probes;
pub mod reprotect;
pub mod secrets;
pub use dns::{RecordSet, ZoneRecords, dns_records, record_present};
pub use lag::{Lag, LagReading, LagSource};

/// A database's member (instance or cluster identifier) in a plan region.
pub fn member<'a>(db: &'a DatabaseSpec, region: &str) -> Option<&'a str> {
    let members = db
        .rds
        .as_ref()
        .map(|r| &r.instances)
        .or(db.aurora_global.as_ref().map(|a| &a.members))?;
    members
        .iter()
        .find(|m| m.region == region)
        .map(|m| m.identifier.as_str())
}

/// Where a database's replication lag into `region` is measured.
pub fn lag_source(db: &DatabaseSpec, region: &str) -> Option<LagSource> {
    let member = member(db, region)?.to_string();
    Some(if db.rds.is_some() {
        LagSource::RdsReplica { instance: member }
    } else {
        LagSource::AuroraSecondary { cluster: member }
    })
}

/// A workload as seen in one region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadState {
    /// Desired replicas (spec).
    pub replicas: i32,
    /// Pods that exist now (status.replicas), ready or not.
    pub current_replicas: i32,
    pub ready_replicas: i32,
    /// Whether status reflects the latest spec.
    pub observed_current: bool,
    pub images: Vec<String>,
    /// The Secrets and ConfigMaps its pod template cannot start without.
    pub refs: Vec<pod_refs::PodRef>,
    /// The label selector of its pods ("k=v,k2=v2"), when it has one.
    pub selector: Option<String>,
    /// A suspended CronJob: its running Jobs not yet being deleted (what `runningJobs:
    /// Stop` deletes). 0 for other kinds.
    pub jobs_to_stop: i32,
    /// Pods of the current pod template (status.updatedReplicas).
    pub updated_replicas: i32,
    /// The pod template's `kubectl.kubernetes.io/restartedAt` annotation.
    pub restarted_at: Option<String>,
}

/// The steps of a failover, in dependency order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    Admission,
    Preflight,
    /// Waits for a person's decision when the plan requires one; skipped otherwise.
    Approval,
    Fence,
    WarmUp,
    PromoteDatabases,
    /// Once the databases are writable: CronJobs resumed.
    Activate,
    /// Once the databases are writable, before DNS: config values written, then the
    /// workloads that read them restarted (or, for writers, started).
    Reconfigure,
    SwitchDns,
    Verify,
    Complete,
}

impl Step {
    pub const ALL: [Step; 11] = [
        Step::Admission,
        Step::Preflight,
        Step::Approval,
        Step::Fence,
        Step::WarmUp,
        Step::PromoteDatabases,
        Step::Activate,
        Step::Reconfigure,
        Step::SwitchDns,
        Step::Verify,
        Step::Complete,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Admission => "Admission",
            Step::Preflight => "Preflight",
            Step::Approval => "Approval",
            Step::Fence => "Fence",
            Step::WarmUp => "WarmUp",
            Step::PromoteDatabases => "PromoteDatabases",
            Step::Activate => "Activate",
            Step::Reconfigure => "Reconfigure",
            Step::SwitchDns => "SwitchDns",
            Step::Verify => "Verify",
            Step::Complete => "Complete",
        }
    }
}

/// The steps a failover of this mode runs. WarmUp and PromoteDatabases run in parallel.
pub fn steps_for(mode: FailoverMode) -> Vec<Step> {
    match mode {
        FailoverMode::DryRun => vec![Step::Admission, Step::Preflight],
        FailoverMode::Planned | FailoverMode::Unplanned => Step::ALL.to_vec(),
    }
}

/// The region a plan considers active now.
pub fn active_region(plan: &DisasterRecoveryPlan) -> Option<String> {
    plan.status
        .as_ref()
        .and_then(|s| s.active_region.clone())
        .or_else(|| {
            plan.spec
                .regions
                .iter()
                .find(|r| r.initial_role == RegionRole::Active)
                .map(|r| r.name.clone())
        })
}

/// The outcome of admission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    Proceed { source_region: String },
    AlreadyActive,
    Reject(String),
}

fn runs_before(a: &Failover, b: &Failover) -> bool {
    let key = |f: &Failover| {
        (
            f.metadata.creation_timestamp.as_ref().map(|t| t.0),
            f.metadata.name.clone().unwrap_or_default(),
        )
    };
    key(a) < key(b)
}

/// Decides whether a failover may start. `siblings` are the other Failovers in the
/// namespace; only one non-terminal Failover per plan runs, the oldest.
pub fn admit(plan: &DisasterRecoveryPlan, fo: &Failover, siblings: &[Failover]) -> Admission {
    let plan_valid = plan
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Valid"))
        .map(|c| (c.status == "True", c.message.clone()));
    let ns = plan.metadata.namespace.as_deref().unwrap_or_default();
    let problems = validate::validate_plan(&plan.spec, ns, None);
    if !problems.is_empty() {
        return Admission::Reject(format!(
            "plan {} is not valid: {}",
            fo.spec.plan_ref,
            validate::summarize(&problems)
        ));
    }
    if let Some((false, message)) = plan_valid {
        return Admission::Reject(format!("plan {} is not valid: {message}", fo.spec.plan_ref));
    }
    let problems = validate::validate_failover(&fo.spec, &plan.spec);
    if !problems.is_empty() {
        return Admission::Reject(validate::summarize(&problems));
    }
    let running = siblings.iter().find(|other| {
        other.metadata.name != fo.metadata.name
            && other.spec.plan_ref == fo.spec.plan_ref
            && match other.status.as_ref().and_then(|s| s.phase) {
                Some(p) if p.is_admitted() => true,
                None | Some(FailoverPhase::Pending) => runs_before(other, fo),
                Some(_) => false,
            }
    });
    if let Some(other) = running {
        let name = other.metadata.name.as_deref().unwrap_or("?");
        let awaiting =
            other.status.as_ref().and_then(|s| s.phase) == Some(FailoverPhase::AwaitingApproval);
        return Admission::Reject(if awaiting {
            format!(
                "failover {name} of plan {} awaits approval; reject it first (drover reject \
                 {name} --reason ...)",
                fo.spec.plan_ref
            )
        } else {
            format!(
                "failover {name} is already running for plan {}",
                fo.spec.plan_ref
            )
        });
    }
    let Some(source) = active_region(plan) else {
        return Admission::Reject(format!("plan {} has no active region", fo.spec.plan_ref));
    };
    if source == fo.spec.target_region {
        return Admission::AlreadyActive;
    }
    let pending = plan
        .status
        .as_ref()
        .map(|s| s.pending_fences.as_slice())
        .unwrap_or_default();
    if let Some(why) = fence::admission_blocker(pending, &fo.spec.target_region) {
        return Admission::Reject(why);
    }
    Admission::Proceed {
        source_region: source,
    }
}

/// A workload scaled to a replica count in one region.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScaleTarget {
    /// Index into `spec.workloads`.
    pub workload: usize,
    pub region: String,
    pub replicas: i32,
    /// Keep its ScaledObjects paused at this count even at the active count: set while a
    /// failover brings the region up (an idle KEDA would scale it to its minimum before
    /// DNS moves); Verify hands them back.
    pub hold: bool,
}

fn targets(
    spec: &DisasterRecoveryPlanSpec,
    region: &str,
    pick: impl Fn(&crate::api::WorkloadSpec) -> Option<i32>,
) -> Vec<ScaleTarget> {
    spec.workloads
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            pick(w).map(|replicas| ScaleTarget {
                workload: i,
                region: region.to_string(),
                replicas,
                hold: false,
            })
        })
        .collect()
}

/// Fencing: writers, singletons and CronJobs to 0 in the old region.
pub fn fence_targets(spec: &DisasterRecoveryPlanSpec, old: &str) -> Vec<ScaleTarget> {
    targets(spec, old, |w| w.fenced().then_some(0))
}

/// Undoing the fence on rollback: the fenced workloads back to their active counts.
pub fn unfence_targets(spec: &DisasterRecoveryPlanSpec, old: &str) -> Vec<ScaleTarget> {
    targets(spec, old, |w| w.fenced().then_some(w.active_replicas))
}

/// The active region: every workload at its active count.
pub fn active_targets(spec: &DisasterRecoveryPlanSpec, region: &str) -> Vec<ScaleTarget> {
    targets(spec, region, |w| Some(w.active_replicas))
}

/// Warm-up, in parallel with promotion: every workload to its active count in the target
/// region, but CronJobs, kept suspended (one resumed now could start a Job against a
/// database that is not writable yet; one found resumed by an Unplanned failover is
/// suspended), and writers whose config `spec.config` switches (started now, they would
/// write with the old region's values, e.g. to the old primary, which still takes writes).
pub fn warmup_targets(spec: &DisasterRecoveryPlanSpec, target: &str) -> Vec<ScaleTarget> {
    held(targets(spec, target, |w| {
        if w.is_cron_job() {
            Some(0)
        } else {
            (!waits_for_config(spec, w)).then_some(w.active_replicas)
        }
    }))
}

/// `targets` with their autoscalers held at the count (see `ScaleTarget::hold`).
pub fn held(targets: Vec<ScaleTarget>) -> Vec<ScaleTarget> {
    targets
        .into_iter()
        .map(|t| ScaleTarget { hold: true, ..t })
        .collect()
}

/// A writer restarted by a `spec.config` entry: started only once that config is written.
pub fn waits_for_config(spec: &DisasterRecoveryPlanSpec, w: &crate::api::WorkloadSpec) -> bool {
    w.writer
        && spec
            .config
            .iter()
            .any(|c| c.namespace == w.namespace && c.restart.contains(&w.name))
}

/// Once the config is written: the writers that waited for it, to their active counts.
pub fn configured_targets(spec: &DisasterRecoveryPlanSpec, target: &str) -> Vec<ScaleTarget> {
    held(targets(spec, target, |w| {
        waits_for_config(spec, w).then_some(w.active_replicas)
    }))
}

/// Once the databases are writable: the CronJobs resumed in the target region.
pub fn resume_targets(spec: &DisasterRecoveryPlanSpec, target: &str) -> Vec<ScaleTarget> {
    targets(spec, target, |w| {
        w.is_cron_job().then_some(w.active_replicas)
    })
}

/// A region in standby: standby counts, with writers, singletons and CronJobs at 0. Its
/// database is a replica at best (or a deposed primary still accepting writes), so nothing
/// writes there.
pub fn standby_targets(spec: &DisasterRecoveryPlanSpec, region: &str) -> Vec<ScaleTarget> {
    targets(spec, region, |w| {
        Some(if w.fenced() { 0 } else { w.standby_replicas })
    })
}

/// What to do next for one database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbStep {
    /// Send the promotion (or switchover/failover) call.
    Act,
    /// Poll again after `poll_delay`.
    Wait(String),
    /// The target is the writable primary and reports available.
    Done,
    Fail(String),
}

/// How far a database's promotion got, as recorded in status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requested {
    /// Nothing sent.
    No,
    /// Status says the call was about to be sent; it may or may not have been.
    Maybe,
    /// The call was answered successfully.
    Yes,
}

impl From<DatabaseState> for Requested {
    fn from(state: DatabaseState) -> Self {
        match state {
            DatabaseState::Pending | DatabaseState::Gated | DatabaseState::Cleared => Requested::No,
            DatabaseState::Requesting => Requested::Maybe,
            DatabaseState::Requested | DatabaseState::Promoted => Requested::Yes,
        }
    }
}

/// An RDS instance as described.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RdsObservation {
    pub status: String,
    /// The source instance (identifier or ARN) while it is a read replica.
    pub source: Option<String>,
    /// Its engine (`postgres`, `mysql`, ...): what its ReplicaLag metric means.
    pub engine: String,
}

impl RdsObservation {
    pub fn has_source(&self) -> bool {
        self.source.is_some()
    }
}

/// Whether an RDS source reference (an identifier, or an ARN for a cross-region replica)
/// names `instance` in `aws_region`.
pub fn source_is(source: &str, aws_region: &str, instance: &str) -> bool {
    match source.strip_prefix("arn:") {
        Some(_) => arn_names(source, aws_region, "db", instance),
        None => source == instance,
    }
}

/// Whether `arn` (arn:partition:rds:region:account:kind:identifier) names the RDS
/// resource `identifier` of `kind` ("db", "cluster") in `aws_region`.
pub fn arn_names(arn: &str, aws_region: &str, kind: &str, identifier: &str) -> bool {
    let parts: Vec<&str> = arn.split(':').collect();
    parts.len() == 7
        && parts[0] == "arn"
        && parts[3] == aws_region
        && parts[5] == kind
        && parts[6].eq_ignore_ascii_case(identifier)
}

const FAILED_STATES: [&str; 5] = [
    "failed",
    "inaccessible-encryption-credentials",
    "incompatible-parameters",
    "incompatible-restore",
    "storage-full",
];

/// RDS: promote once, then wait until `available` with no source link.
pub fn rds_step(observed: Option<&RdsObservation>, requested: Requested) -> DbStep {
    let Some(obs) = observed else {
        return DbStep::Fail("target instance not found".into());
    };
    if FAILED_STATES.contains(&obs.status.as_str()) {
        return DbStep::Fail(format!("target instance is {}", obs.status));
    }
    match (obs.status.as_str(), obs.has_source(), requested) {
        ("available", false, _) => DbStep::Done,
        ("available", true, Requested::No | Requested::Maybe) => DbStep::Act,
        // Sent and answered: AWS may not show `modifying` yet. Never send twice.
        ("available", true, Requested::Yes) => DbStep::Wait("promotion requested".into()),
        (status, _, _) => DbStep::Wait(format!("instance is {status}")),
    }
}

/// An Aurora global cluster as described.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuroraObservation {
    pub status: String,
    pub writer_arn: Option<String>,
    pub member_arns: Vec<String>,
}

/// A Kubernetes timestamp of `t` (the epoch for a time before it).
pub fn kube_time(t: std::time::SystemTime) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::try_from(t)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// A DB cluster snapshot as described.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSnapshot {
    pub identifier: String,
    pub created: Option<std::time::SystemTime>,
}

/// Aurora: switch over (planned) or fail over (unplanned) once, then wait until the target
/// member is the writer and the global cluster is available.
pub fn aurora_step(
    observed: Option<&AuroraObservation>,
    target_arn: &str,
    requested: Requested,
) -> DbStep {
    let Some(obs) = observed else {
        return DbStep::Fail("global cluster not found".into());
    };
    if !obs.member_arns.iter().any(|a| a == target_arn) {
        return DbStep::Fail(format!(
            "{target_arn} is not a member of the global cluster"
        ));
    }
    let target_writes = obs.writer_arn.as_deref() == Some(target_arn);
    match (obs.status.as_str(), target_writes, requested) {
        ("available", true, _) => DbStep::Done,
        ("available", false, Requested::No | Requested::Maybe) => DbStep::Act,
        ("available", false, Requested::Yes) => DbStep::Wait("writer change requested".into()),
        (status, _, _) => DbStep::Wait(format!("global cluster is {status}")),
    }
}

/// Aurora in an Unplanned failover uses FailoverGlobalCluster with AllowDataLoss, which
/// needs the Failover's explicit consent whatever the lag.
pub fn aurora_failover_gate(mode: FailoverMode, allow_data_loss: bool) -> Result<(), String> {
    if mode == FailoverMode::Unplanned && !allow_data_loss {
        Err(
            "an Unplanned Aurora failover uses FailoverGlobalCluster with AllowDataLoss; \
             set allowDataLoss: true to accept that"
                .into(),
        )
    } else {
        Ok(())
    }
}

/// Poll interval while waiting on AWS or workloads, from how long the wait has lasted:
/// a thirtieth of it, between 50 ms and 2 s. Short waits are noticed within a few hundred
/// milliseconds; a promotion of minutes costs under one call a second, and the slack
/// between ready and noticed never exceeds 2 s.
pub fn poll_delay(waited: Duration) -> Duration {
    (waited / 30).clamp(Duration::from_millis(50), Duration::from_secs(2))
}

/// The longest pause between polls before a wait's expected end: a wait that fails early
/// (a promotion AWS refuses after accepting it) is still seen within 15 s.
const SPARSE_POLL_MAX: Duration = Duration::from_secs(15);

/// Poll interval for a wait expected to take about `expected` (the quickest recent run of
/// its kind, see `expected_duration`). Dense polling (`poll_delay`) starts one dense poll
/// before that, since a learned duration includes how late its end was noticed; before,
/// polls are at least a third of the expected time apart (halving the time left, at most
/// 15 s), so
/// a wait that runs as long as before costs a few polls plus the dense ones around its end,
/// and is noticed within `poll_delay` (≤ 2 s) of being ready. Without an expectation this
/// is `poll_delay`.
pub fn poll_delay_expecting(waited: Duration, expected: Option<Duration>) -> Duration {
    let dense = poll_delay(waited);
    let Some(expected) = expected else {
        return dense;
    };
    let dense_from = expected.saturating_sub(poll_delay(expected));
    let left = dense_from.saturating_sub(waited);
    if left <= dense {
        return dense;
    }
    (left / 2)
        .max(expected / 3)
        .min(SPARSE_POLL_MAX)
        .min(left)
        .max(dense)
}

/// The steps whose durations a plan learns: the waits on AWS.
pub const LEARNED_STEPS: [Step; 2] = [Step::PromoteDatabases, Step::SwitchDns];

/// Successful runs of a step remembered per mode, for `expected_duration`.
pub const STEP_DURATIONS_KEPT: usize = 5;

/// Durations beyond this are not learned from (a wait that long is not typical).
const STEP_DURATION_MAX: f64 = 86_400.0;

/// Where the learned durations of `step` start (`StepDurations::measured_from`):
/// promotions from their first request, other steps from their start.
pub fn measured_from(step: Step) -> Option<&'static str> {
    (step == Step::PromoteDatabases).then_some("PromotionRequest")
}

/// The learned durations of `step` in `mode`, if measured as the step now measures them.
pub fn learned_for(
    durations: &[crate::api::StepDurations],
    step: Step,
    mode: FailoverMode,
) -> Option<&crate::api::StepDurations> {
    let mode = format!("{mode:?}");
    durations.iter().find(|d| {
        d.step == step.name() && d.mode == mode && d.measured_from.as_deref() == measured_from(step)
    })
}

/// The quickest of the recent durations of `step` in `mode` on the plan, if any.
pub fn expected_duration(
    durations: &[crate::api::StepDurations],
    step: Step,
    mode: FailoverMode,
) -> Option<Duration> {
    learned_for(durations, step, mode)?
        .recent_seconds
        .iter()
        .copied()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= STEP_DURATION_MAX)
        .min_by(f64::total_cmp)
        .map(Duration::from_secs_f64)
}

/// Adds one successful run of `step` in `mode` to the plan's durations, keeping the last
/// `STEP_DURATIONS_KEPT`. Durations that could not be typical are not kept.
pub fn learn_duration(
    durations: &mut Vec<crate::api::StepDurations>,
    step: Step,
    mode: FailoverMode,
    seconds: f64,
) {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= STEP_DURATION_MAX) {
        return;
    }
    let mode = format!("{mode:?}");
    let from = measured_from(step).map(String::from);
    let entry = match durations
        .iter_mut()
        .position(|d| d.step == step.name() && d.mode == mode)
    {
        Some(i) => &mut durations[i],
        None => {
            durations.push(crate::api::StepDurations {
                step: step.name().into(),
                mode,
                recent_seconds: Vec::new(),
                measured_from: from.clone(),
            });
            let last = durations.len() - 1;
            &mut durations[last]
        }
    };
    // Measured otherwise (an older version's): replaced, never mixed in.
    if entry.measured_from != from {
        entry.recent_seconds.clear();
        entry.measured_from = from;
    }
    entry.recent_seconds.push(seconds);
    let extra = entry
        .recent_seconds
        .len()
        .saturating_sub(STEP_DURATIONS_KEPT);
    entry.recent_seconds.drain(..extra);
}

/// Backoff before retry `attempt` (1-based) of a transient error, with `jitter` in [0, 1).
pub fn retry_delay(attempt: u32, jitter: f64) -> Duration {
    let base = 250.0 * 2f64.powi(attempt.saturating_sub(1).min(10) as i32);
    let capped = base.min(5000.0);
    Duration::from_millis((capped * (0.5 + jitter.clamp(0.0, 1.0) / 2.0)) as u64)
}

/// A step's deadline from the plan's `timeouts`, with defaults.
pub fn step_timeout(spec: &DisasterRecoveryPlanSpec, step: Step, mode: FailoverMode) -> Duration {
    let t = spec.timeouts.clone().unwrap_or_default();
    let (value, default) = match step {
        Step::Preflight => (t.preflight, 60),
        Step::Fence => (t.fence, 300),
        Step::PromoteDatabases => (t.promotion, 900),
        Step::WarmUp | Step::Activate | Step::Reconfigure | Step::Verify => (t.warm_up, 600),
        Step::SwitchDns => (t.dns, 300),
        Step::Admission | Step::Complete => (None, 30),
        Step::Approval => {
            return spec.approval.clone().unwrap_or_default().timeout();
        }
    };
    let configured = value
        .and_then(|v| parse_timeout(&v).ok())
        .unwrap_or(Duration::from_secs(default));
    // An unplanned failover does not wait on the region it is leaving.
    if step == Step::Fence && mode == FailoverMode::Unplanned {
        configured.min(Duration::from_secs(10))
    } else {
        configured
    }
}

/// What a failover will do, for DryRun and for the record.
pub fn planned_actions(
    spec: &DisasterRecoveryPlanSpec,
    source: &str,
    target: &str,
    mode: FailoverMode,
) -> Vec<String> {
    let mut out = Vec::new();
    let workload = |t: &ScaleTarget| {
        let w = &spec.workloads[t.workload];
        let (ns, name, region) = (&w.namespace, &w.name, &t.region);
        match (w.is_cron_job(), t.replicas) {
            (true, 0) if w.running_jobs == Some(crate::api::RunningJobs::Stop) => {
                format!("suspend CronJob {ns}/{name} in {region} and stop its running Jobs")
            }
            (true, 0) => format!("suspend CronJob {ns}/{name} in {region}"),
            (true, _) => format!("resume CronJob {ns}/{name} in {region}"),
            _ => format!("scale {} {ns}/{name} in {region} to {}", w.kind, t.replicas),
        }
    };
    out.extend(
        fence_targets(spec, source)
            .iter()
            .map(|t| format!("Fence: {}", workload(t))),
    );
    if mode == FailoverMode::Planned && !spec.databases.is_empty() {
        out.push("Fence: wait until every standby has what was written before the fence".into());
    }
    out.extend(warmup_targets(spec, target).iter().map(|t| {
        let w = &spec.workloads[t.workload];
        if w.is_cron_job() {
            format!(
                "WarmUp: keep CronJob {}/{} suspended in {target} (suspended if found resumed)",
                w.namespace, w.name
            )
        } else {
            format!("WarmUp: {}", workload(t))
        }
    }));
    for db in &spec.databases {
        if let Some(rds) = &db.rds
            && let Some(m) = rds.instances.iter().find(|m| m.region == target)
        {
            out.push(format!(
                "PromoteDatabases: PromoteReadReplica {} ({})",
                m.identifier, db.name
            ));
        }
        if let Some(aurora) = &db.aurora_global
            && let Some(m) = aurora.members.iter().find(|m| m.region == target)
        {
            let call = if mode == FailoverMode::Unplanned {
                "FailoverGlobalCluster (AllowDataLoss)"
            } else {
                "SwitchoverGlobalCluster"
            };
            out.push(format!(
                "PromoteDatabases: {call} {} to {}",
                aurora.global_cluster_identifier, m.identifier
            ));
        }
    }
    out.extend(
        resume_targets(spec, target)
            .iter()
            .map(|t| format!("Activate: {}", workload(t))),
    );
    for cfg in &spec.config {
        let keys: Vec<&str> = cfg.keys.iter().map(|k| k.key.as_str()).collect();
        out.push(format!(
            "Reconfigure: write {} {}/{} in {target} (and the other regions that answer) where it \
             differs: {}",
            cfg.kind.name(),
            cfg.namespace,
            cfg.name,
            keys.join(", ")
        ));
    }
    out.extend(
        configured_targets(spec, target)
            .iter()
            .map(|t| format!("Reconfigure, once written: {}", workload(t))),
    );
    for zone in dns_records(spec, target) {
        out.push(format!(
            "SwitchDns: point {} record sets in {} at {target}, in batches within Route 53's \
             limits, each waited on until INSYNC",
            zone.records.len(),
            zone.hosted_zone_id,
        ));
    }
    out.extend(
        standby_targets(spec, source)
            .iter()
            .map(|t| format!("Verify: {}", workload(t))),
    );
    out
}

#[cfg(test)]
mod tests;
