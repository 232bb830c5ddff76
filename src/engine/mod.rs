//! The failover engine's decisions, as pure functions: (plan, failover, observed world) →
//! what to do next. No I/O here; `driver` performs the calls and feeds observations back.

use std::time::Duration;

use crate::api::{
    AliasTarget, DatabaseSpec, DatabaseState, DisasterRecoveryPlan, DisasterRecoveryPlanSpec,
    Failover, FailoverMode, FailoverPhase, RegionRole, RoutingPolicy,
};
use crate::aws::LagSource;
use crate::validate::{self, parse_duration};

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

/// The steps of a failover, in dependency order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    Admission,
    Preflight,
    Fence,
    WarmUp,
    PromoteDatabases,
    SwitchDns,
    Verify,
    Complete,
}

impl Step {
    pub const ALL: [Step; 8] = [
        Step::Admission,
        Step::Preflight,
        Step::Fence,
        Step::WarmUp,
        Step::PromoteDatabases,
        Step::SwitchDns,
        Step::Verify,
        Step::Complete,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Admission => "Admission",
            Step::Preflight => "Preflight",
            Step::Fence => "Fence",
            Step::WarmUp => "WarmUp",
            Step::PromoteDatabases => "PromoteDatabases",
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
                Some(FailoverPhase::Running) => true,
                None | Some(FailoverPhase::Pending) => runs_before(other, fo),
                Some(_) => false,
            }
    });
    if let Some(other) = running {
        return Admission::Reject(format!(
            "failover {} is already running for plan {}",
            other.metadata.name.as_deref().unwrap_or("?"),
            fo.spec.plan_ref
        ));
    }
    let Some(source) = active_region(plan) else {
        return Admission::Reject(format!("plan {} has no active region", fo.spec.plan_ref));
    };
    if source == fo.spec.target_region {
        return Admission::AlreadyActive;
    }
    Admission::Proceed {
        source_region: source,
    }
}

/// A workload scaled to a replica count in one region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleTarget {
    /// Index into `spec.workloads`.
    pub workload: usize,
    pub region: String,
    pub replicas: i32,
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
            })
        })
        .collect()
}

/// Fencing: singletons and writers to 0 in the old region.
pub fn fence_targets(spec: &DisasterRecoveryPlanSpec, old: &str) -> Vec<ScaleTarget> {
    targets(spec, old, |w| (w.singleton || w.writer).then_some(0))
}

/// Undoing the fence on rollback: the fenced workloads back to their active counts.
pub fn unfence_targets(spec: &DisasterRecoveryPlanSpec, old: &str) -> Vec<ScaleTarget> {
    targets(spec, old, |w| {
        (w.singleton || w.writer).then_some(w.active_replicas)
    })
}

/// Warm-up: every workload to its active count in the target region.
pub fn warmup_targets(spec: &DisasterRecoveryPlanSpec, target: &str) -> Vec<ScaleTarget> {
    targets(spec, target, |w| Some(w.active_replicas))
}

/// A region in standby: standby counts, and singletons at 0.
pub fn standby_targets(spec: &DisasterRecoveryPlanSpec, region: &str) -> Vec<ScaleTarget> {
    targets(spec, region, |w| {
        Some(if w.singleton { 0 } else { w.standby_replicas })
    })
}

/// One DNS record set as Route 53 should hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSet {
    pub name: String,
    pub record_type: String,
    pub set_identifier: Option<String>,
    /// "PRIMARY" or "SECONDARY" for failover routing.
    pub failover: Option<String>,
    pub weight: Option<i64>,
    pub ttl: Option<i64>,
    pub values: Vec<String>,
    pub alias: Option<AliasTarget>,
    pub health_check_id: Option<String>,
}

/// All records of one hosted zone, switched in one change batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneBatch {
    pub hosted_zone_id: String,
    pub records: Vec<RecordSet>,
}

const DEFAULT_TTL: i64 = 60;

/// The record sets that point every record of the plan at `target`, one batch per zone.
pub fn dns_batches(spec: &DisasterRecoveryPlanSpec, target: &str) -> Vec<ZoneBatch> {
    spec.dns
        .iter()
        .map(|zone| {
            let mut records = Vec::new();
            for record in &zone.records {
                let ttl = Some(record.ttl.unwrap_or(DEFAULT_TTL));
                let make = |t: &crate::api::RecordTarget| RecordSet {
                    name: record.name.clone(),
                    record_type: record.record_type.clone(),
                    set_identifier: None,
                    failover: None,
                    weight: None,
                    ttl: if t.alias.is_some() { None } else { ttl },
                    values: t.values.clone().unwrap_or_default(),
                    alias: t.alias.clone(),
                    health_check_id: t.health_check_id.clone(),
                };
                match record.routing {
                    RoutingPolicy::Simple => {
                        if let Some(t) = record.targets.iter().find(|t| t.region == target) {
                            records.push(RecordSet {
                                health_check_id: None,
                                ..make(t)
                            });
                        }
                    }
                    RoutingPolicy::Failover | RoutingPolicy::Weighted => {
                        for t in &record.targets {
                            let active = t.region == target;
                            let mut set = make(t);
                            set.set_identifier =
                                Some(t.set_identifier.clone().unwrap_or(t.region.clone()));
                            if record.routing == RoutingPolicy::Failover {
                                set.failover =
                                    Some(if active { "PRIMARY" } else { "SECONDARY" }.into());
                            } else {
                                set.weight = Some(if active { 100 } else { 0 });
                            }
                            records.push(set);
                        }
                    }
                }
            }
            ZoneBatch {
                hosted_zone_id: zone.hosted_zone_id.clone(),
                records,
            }
        })
        .collect()
}

fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether Route 53 already holds `desired` (so a change would be a repeat).
pub fn record_present(desired: &RecordSet, current: &[RecordSet]) -> bool {
    current.iter().any(|c| {
        let mut want: Vec<&String> = desired.values.iter().collect();
        let mut have: Vec<&String> = c.values.iter().collect();
        want.sort();
        have.sort();
        normalize_name(&c.name) == normalize_name(&desired.name)
            && c.record_type == desired.record_type
            && c.set_identifier == desired.set_identifier
            && c.failover == desired.failover
            && c.weight == desired.weight
            && want == have
            && c.alias.as_ref().map(|a| normalize_name(&a.dns_name))
                == desired.alias.as_ref().map(|a| normalize_name(&a.dns_name))
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
            DatabaseState::Pending | DatabaseState::Gated => Requested::No,
            DatabaseState::Requesting => Requested::Maybe,
            DatabaseState::Requested | DatabaseState::Promoted => Requested::Yes,
        }
    }
}

/// An RDS instance as described.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdsObservation {
    pub status: String,
    /// Still a read replica (has a source instance).
    pub has_source: bool,
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
    match (obs.status.as_str(), obs.has_source, requested) {
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

/// Whether promotion may proceed given the measured replication lag (seconds).
pub fn promotion_gate(
    mode: FailoverMode,
    allow_data_loss: bool,
    max_data_loss: Option<Duration>,
    lag: Option<f64>,
) -> Result<(), String> {
    match (mode, lag) {
        (_, Some(l)) if l <= 0.0 => Ok(()),
        (FailoverMode::Planned, Some(l)) => Err(format!(
            "replication lag is {l}s; a Planned failover promotes only at zero lag"
        )),
        (FailoverMode::Planned, None) => {
            Err("replication lag is unknown; a Planned failover promotes only at zero lag".into())
        }
        (FailoverMode::DryRun, _) => Ok(()),
        (FailoverMode::Unplanned, _) if !allow_data_loss => Err(format!(
            "replication lag is {}; promotion would lose data and allowDataLoss is false",
            describe_lag(lag)
        )),
        (FailoverMode::Unplanned, Some(l)) => match max_data_loss {
            Some(max) if l > max.as_secs_f64() => Err(format!(
                "replication lag is {l}s, above maxDataLoss {}s",
                max.as_secs_f64()
            )),
            _ => Ok(()),
        },
        (FailoverMode::Unplanned, None) => match max_data_loss {
            Some(max) => Err(format!(
                "replication lag is unknown, so it cannot be held to maxDataLoss {}s",
                max.as_secs_f64()
            )),
            None => Ok(()),
        },
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

fn describe_lag(lag: Option<f64>) -> String {
    lag.map(|l| format!("{l}s"))
        .unwrap_or_else(|| "unknown".into())
}

/// Poll interval while waiting on AWS or workloads, from how long the wait has lasted:
/// a twentieth of it, between 50 ms and 2 s. Short waits are noticed within a few hundred
/// milliseconds; a promotion of minutes costs under one call a second, and the slack
/// between ready and noticed never exceeds 2 s.
pub fn poll_delay(waited: Duration) -> Duration {
    (waited / 20).clamp(Duration::from_millis(50), Duration::from_secs(2))
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
        Step::Fence => (t.fence, 120),
        Step::PromoteDatabases => (t.promotion, 900),
        Step::WarmUp | Step::Verify => (t.warm_up, 600),
        Step::SwitchDns => (t.dns, 300),
        Step::Admission | Step::Complete => (None, 30),
    };
    let configured = value
        .and_then(|v| parse_duration(&v).ok())
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
        format!(
            "scale {} {}/{} in {} to {}",
            w.kind, w.namespace, w.name, t.region, t.replicas
        )
    };
    out.extend(
        fence_targets(spec, source)
            .iter()
            .map(|t| format!("Fence: {}", workload(t))),
    );
    if mode == FailoverMode::Planned && !spec.databases.is_empty() {
        out.push("Fence: wait for zero replication lag".into());
    }
    out.extend(
        warmup_targets(spec, target)
            .iter()
            .map(|t| format!("WarmUp: {}", workload(t))),
    );
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
    for batch in dns_batches(spec, target) {
        out.push(format!(
            "SwitchDns: ChangeResourceRecordSets {} ({} record sets), then wait for INSYNC",
            batch.hosted_zone_id,
            batch.records.len()
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
