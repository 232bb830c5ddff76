//! Pending fences: what an Unplanned failover leaves to fence in the region it left, and
//! what to do next for each entry once that region answers again. Pure; `fencing` does the
//! I/O.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    DisasterRecoveryPlanSpec, FailoverMode, FenceResource, PendingFence, PendingFenceState,
    StepState,
};
use crate::engine::{RdsObservation, fence_targets};

/// What a failover knows about the workloads its Fence step could not scale to 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unfenced {
    /// These workloads (indexes into `spec.workloads`) were not reached.
    Workloads(Vec<usize>),
    /// The Fence step was not completed but the detail was lost (an operator restart):
    /// every writer and singleton counts as unreached.
    Unknown,
}

/// The pending fences a failover records when it makes `target` active: none unless it is
/// Unplanned. Then every writer and singleton of `source` the Fence step did not scale to 0,
/// and the RDS primary in `source` of every RDS database, which keeps accepting writes when
/// its region returns. Aurora needs none: the global cluster demotes its old primary itself.
pub fn fences_to_record(
    spec: &DisasterRecoveryPlanSpec,
    mode: FailoverMode,
    source: &str,
    fence_step: Option<StepState>,
    unfenced: &Unfenced,
    failover: &str,
    since: &Time,
) -> Vec<PendingFence> {
    if mode != FailoverMode::Unplanned {
        return Vec::new();
    }
    let entry = |resource, name: &str, reason: String| PendingFence {
        resource,
        region: source.to_string(),
        kind: None,
        api_version: None,
        namespace: None,
        name: name.to_string(),
        reason,
        failover: failover.to_string(),
        since: since.clone(),
        state: PendingFenceState::Pending,
        reachable: None,
        message: None,
    };
    let mut out = Vec::new();
    // Every writer and singleton: an Unplanned fence does not wait for pods to go, and a
    // scale-down the API server accepted does not stop pods on nodes cut off from it. The
    // plan reconciler drops an entry once no pod is left.
    for t in fence_targets(spec, source) {
        let missed = fence_step != Some(StepState::Succeeded)
            && match unfenced {
                Unfenced::Workloads(missed) => missed.contains(&t.workload),
                Unfenced::Unknown => true,
            };
        let w = &spec.workloads[t.workload];
        let (role, stopped) = match (w.is_cron_job(), w.singleton) {
            (true, _) => ("CronJob", "suspended"),
            (false, true) => ("singleton", "scaled to 0"),
            (false, false) => ("writer", "scaled to 0"),
        };
        let reason = if missed {
            format!("{role} not {stopped}: {source} was unreachable during {failover}")
        } else {
            format!("{role} {stopped} during {failover}, its pods not yet confirmed gone")
        };
        out.push(PendingFence {
            kind: Some(w.kind.clone()),
            // A CronJob's default is found by discovery (batch/v1 or batch/v1beta1).
            api_version: if w.is_cron_job() {
                w.api_version.clone()
            } else {
                w.effective_api_version().map(str::to_string)
            },
            namespace: Some(w.namespace.clone()),
            ..entry(FenceResource::Workload, &w.name, reason)
        });
    }
    for db in &spec.databases {
        let Some(rds) = &db.rds else { continue };
        if let Some(m) = rds.instances.iter().find(|m| m.region == source) {
            out.push(entry(
                FenceResource::RdsInstance,
                &m.identifier,
                format!(
                    "old primary of database {} after the Unplanned failover {failover}; it \
                     accepts writes when {source} returns",
                    db.name
                ),
            ));
        }
    }
    out
}

/// `existing` with the entries of `new` that it does not already have. An entry already
/// present keeps its progress.
pub fn merge(existing: &[PendingFence], new: Vec<PendingFence>) -> Vec<PendingFence> {
    let mut out = existing.to_vec();
    for entry in new {
        if !out.iter().any(|e| e.same_target(&entry)) {
            out.push(entry);
        }
    }
    out
}

/// The entries still to be fenced in `region`.
pub fn outstanding_in<'a>(
    fences: &'a [PendingFence],
    region: &'a str,
) -> impl Iterator<Item = &'a PendingFence> + 'a {
    fences.iter().filter(move |f| f.region == region)
}

/// Admission of a failover to `target`: refused while `target` has pending fences, since a
/// region that was never fenced would become active with stale writers.
pub fn admission_blocker(fences: &[PendingFence], target: &str) -> Option<String> {
    let names: Vec<String> = outstanding_in(fences, target)
        .map(PendingFence::describe)
        .collect();
    (!names.is_empty()).then(|| {
        format!(
            "{target} still has pending fences from an Unplanned failover: {}; Drover fences \
             them once {target} answers, and {target} cannot become active before that",
            names.join(", ")
        )
    })
}

/// The `FencePending` condition: (status, reason, message).
pub fn condition(fences: &[PendingFence]) -> (bool, &'static str, String) {
    if fences.is_empty() {
        return (false, "NoneOutstanding", "no pending fences".into());
    }
    let names: Vec<String> = fences.iter().map(PendingFence::describe).collect();
    let unreachable = fences.iter().any(|f| f.reachable == Some(false));
    (
        true,
        if unreachable {
            "RegionUnreachable"
        } else {
            "Fencing"
        },
        format!("{} pending: {}", fences.len(), names.join(", ")),
    )
}

/// What was seen of one entry's target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The workload: its desired replicas and, when its pods could be listed, how many
    /// exist (Terminating included); without a selector, `status.replicas`.
    Workload {
        replicas: i32,
        observed_current: bool,
        pods: usize,
        /// A suspended CronJob's running Jobs not yet being deleted.
        jobs_to_stop: i32,
    },
    /// The workload does not exist there.
    WorkloadMissing,
    /// The RDS instance, or None when it does not exist.
    Rds(Option<RdsObservation>),
    /// The region (its cluster or its AWS endpoint) did not answer, or answered with a
    /// transient error: try again at the next check.
    Unreachable(String),
    /// A permanent error, verbatim.
    Error(String),
}

/// What to do next for one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FenceStep {
    /// Record the intent, then scale to 0 / stop the instance.
    Act,
    /// Check again later.
    Wait(String),
    /// Fenced: remove the entry.
    Done(String),
    /// The region did not answer.
    Unreachable(String),
}

/// RDS states in which an instance takes no more writes.
const RDS_FENCED: [&str; 2] = ["stopping", "stopped"];

/// The next step for an entry in `state` given what was observed.
pub fn next_step(state: PendingFenceState, observed: &Observed) -> FenceStep {
    match observed {
        Observed::Unreachable(why) => FenceStep::Unreachable(why.clone()),
        Observed::Error(why) => FenceStep::Wait(why.clone()),
        Observed::WorkloadMissing => FenceStep::Done("the workload no longer exists there".into()),
        Observed::Workload {
            replicas,
            observed_current,
            pods,
            jobs_to_stop,
        } => match (*replicas, *pods) {
            // Scaling is idempotent, so a lost answer costs nothing: patch again. The same
            // for a suspended CronJob's Jobs still to delete.
            (r, _) if r > 0 => FenceStep::Act,
            _ if *jobs_to_stop > 0 => FenceStep::Act,
            (_, 0) if *observed_current => FenceStep::Done("scaled to 0, no pods left".into()),
            (_, 0) => FenceStep::Wait("scaled to 0; waiting for the controller".into()),
            (_, n) => FenceStep::Wait(format!(
                "scaled to 0; {n} pods still running or terminating"
            )),
        },
        Observed::Rds(None) => FenceStep::Done("the instance no longer exists".into()),
        Observed::Rds(Some(obs)) if RDS_FENCED.contains(&obs.status.as_str()) => {
            FenceStep::Done(format!("instance is {}", obs.status))
        }
        // Rebuilt as a read replica (as re-protection does): read-only, so fenced; AWS
        // would refuse to stop it anyway.
        Observed::Rds(Some(obs)) if obs.has_source() => FenceStep::Done(format!(
            "instance is now a read replica of {}",
            obs.source.as_deref().unwrap_or_default()
        )),
        Observed::Rds(Some(obs)) => match (obs.status.as_str(), state) {
            // Answered: AWS may not show `stopping` yet. Never send twice.
            ("available", PendingFenceState::Requested) => FenceStep::Wait("stop requested".into()),
            ("available", _) => FenceStep::Act,
            (status, _) => FenceStep::Wait(format!("instance is {status}; stopped once available")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DisasterRecoveryPlan;
    use k8s_openapi::jiff::Timestamp;

    fn spec() -> DisasterRecoveryPlanSpec {
        let plan: DisasterRecoveryPlan =
            serde_yaml::from_str(include_str!("../../config/samples/plan.yaml"))
                .expect("sample parses");
        plan.spec
    }

    fn at() -> Time {
        Time(Timestamp::UNIX_EPOCH)
    }

    fn record(mode: FailoverMode, step: StepState, unfenced: Unfenced) -> Vec<PendingFence> {
        fences_to_record(&spec(), mode, "use1", Some(step), &unfenced, "fo", &at())
    }

    fn names(fences: &[PendingFence]) -> Vec<String> {
        fences.iter().map(PendingFence::describe).collect()
    }

    fn rds_entries(spec: &DisasterRecoveryPlanSpec) -> usize {
        spec.databases.iter().filter(|d| d.rds.is_some()).count()
    }

    #[test]
    fn unplanned_records_every_writer_singleton_and_old_rds_primary() {
        let spec = spec();
        let fence = fence_targets(&spec, "use1");
        assert!(fence.len() > 1 && rds_entries(&spec) > 0);
        let first = fence[0].workload;
        let out = record(
            FailoverMode::Unplanned,
            StepState::Skipped,
            Unfenced::Workloads(vec![first]),
        );
        let workloads: Vec<&PendingFence> = out
            .iter()
            .filter(|f| f.resource == FenceResource::Workload)
            .collect();
        // The one it could not reach, and the ones it scaled without seeing their pods go.
        assert_eq!(workloads.len(), fence.len());
        assert!(
            workloads[0].reason.contains("not scaled to 0"),
            "{:?}",
            names(&out)
        );
        assert!(
            workloads[1].reason.contains("not yet confirmed gone"),
            "{:?}",
            names(&out)
        );
        assert_eq!(workloads[0].api_version.as_deref(), Some("apps/v1"));
        assert_eq!(out.len() - workloads.len(), rds_entries(&spec));
        assert!(out.iter().all(|f| f.region == "use1"));
        assert!(out.iter().all(|f| f.state == PendingFenceState::Pending));
    }

    #[test]
    fn a_fence_step_that_succeeded_still_awaits_the_pods() {
        let out = record(
            FailoverMode::Unplanned,
            StepState::Succeeded,
            Unfenced::Workloads(vec![]),
        );
        let workloads: Vec<&PendingFence> = out
            .iter()
            .filter(|f| f.resource == FenceResource::Workload)
            .collect();
        assert_eq!(workloads.len(), fence_targets(&spec(), "use1").len());
        assert!(
            workloads
                .iter()
                .all(|f| f.reason.contains("not yet confirmed gone"))
        );
        assert_eq!(out.len() - workloads.len(), rds_entries(&spec()));
    }

    #[test]
    fn lost_detail_counts_every_writer_and_singleton_as_unreached() {
        let out = record(
            FailoverMode::Unplanned,
            StepState::Skipped,
            Unfenced::Unknown,
        );
        let workloads = out
            .iter()
            .filter(|f| f.resource == FenceResource::Workload)
            .count();
        assert_eq!(workloads, fence_targets(&spec(), "use1").len());
    }

    #[test]
    fn planned_and_dry_run_record_nothing() {
        for mode in [FailoverMode::Planned, FailoverMode::DryRun] {
            assert!(record(mode, StepState::Skipped, Unfenced::Unknown).is_empty());
        }
    }

    #[test]
    fn merge_keeps_progress_and_adds_only_new_targets() {
        let mut existing = record(
            FailoverMode::Unplanned,
            StepState::Skipped,
            Unfenced::Unknown,
        );
        existing[0].state = PendingFenceState::Requested;
        let again = record(
            FailoverMode::Unplanned,
            StepState::Skipped,
            Unfenced::Unknown,
        );
        let merged = merge(&existing, again);
        assert_eq!(merged, existing);
    }

    #[test]
    fn failback_is_refused_while_the_target_has_pending_fences() {
        let fences = record(
            FailoverMode::Unplanned,
            StepState::Skipped,
            Unfenced::Unknown,
        );
        let why = admission_blocker(&fences, "use1").expect("refused");
        assert!(why.contains(&fences[0].describe()), "{why}");
        assert_eq!(admission_blocker(&fences, "usw2"), None);
        assert_eq!(admission_blocker(&[], "use1"), None);
    }

    #[test]
    fn condition_names_every_entry() {
        let fences = record(
            FailoverMode::Unplanned,
            StepState::Skipped,
            Unfenced::Unknown,
        );
        let (status, reason, message) = condition(&fences);
        assert!(status);
        assert_eq!(reason, "Fencing");
        assert!(names(&fences).iter().all(|n| message.contains(n)));
        assert_eq!(condition(&[]).1, "NoneOutstanding");
    }

    fn workload(replicas: i32, pods: usize) -> Observed {
        Observed::Workload {
            replicas,
            observed_current: true,
            pods,
            jobs_to_stop: 0,
        }
    }

    #[test]
    fn workload_is_done_only_without_pods() {
        let s = PendingFenceState::Pending;
        assert_eq!(next_step(s, &workload(2, 2)), FenceStep::Act);
        // Observed again after a restart or a lost answer: scaling again is harmless.
        assert_eq!(
            next_step(PendingFenceState::Fencing, &workload(2, 2)),
            FenceStep::Act
        );
        assert!(matches!(next_step(s, &workload(0, 1)), FenceStep::Wait(_)));
        assert!(matches!(next_step(s, &workload(0, 0)), FenceStep::Done(_)));
        let stale = Observed::Workload {
            replicas: 0,
            observed_current: false,
            pods: 0,
            jobs_to_stop: 0,
        };
        assert!(matches!(next_step(s, &stale), FenceStep::Wait(_)));
        // A suspended CronJob of a returning region: its Jobs are stopped, not waited for.
        let cron = Observed::Workload {
            replicas: 0,
            observed_current: true,
            pods: 2,
            jobs_to_stop: 1,
        };
        assert_eq!(next_step(s, &cron), FenceStep::Act);
        assert!(matches!(
            next_step(s, &Observed::WorkloadMissing),
            FenceStep::Done(_)
        ));
    }

    fn rds(status: &str) -> Observed {
        Observed::Rds(Some(RdsObservation {
            status: status.into(),
            source: None,
            ..Default::default()
        }))
    }

    #[test]
    fn rds_primary_is_stopped_once_and_done_when_stopping() {
        use PendingFenceState::*;
        assert_eq!(next_step(Pending, &rds("available")), FenceStep::Act);
        // Intent recorded but the answer lost: observed available, so not stopped yet.
        assert_eq!(next_step(Fencing, &rds("available")), FenceStep::Act);
        assert!(matches!(
            next_step(Requested, &rds("available")),
            FenceStep::Wait(_)
        ));
        assert!(matches!(
            next_step(Pending, &rds("modifying")),
            FenceStep::Wait(_)
        ));
        for done in ["stopping", "stopped"] {
            assert!(matches!(
                next_step(Requested, &rds(done)),
                FenceStep::Done(_)
            ));
            assert!(matches!(next_step(Pending, &rds(done)), FenceStep::Done(_)));
        }
        assert!(matches!(
            next_step(Pending, &Observed::Rds(None)),
            FenceStep::Done(_)
        ));
        // Rebuilt as a replica of the new primary: read-only, so fenced without a stop
        // (which AWS would refuse for a replica).
        let replica = Observed::Rds(Some(RdsObservation {
            status: "available".into(),
            source: Some("arn:aws:rds:us-west-2:123456789012:db:orders-usw2".into()),
            ..Default::default()
        }));
        assert!(matches!(next_step(Pending, &replica), FenceStep::Done(_)));
    }

    #[test]
    fn unreachable_waits_for_the_next_check() {
        assert_eq!(
            next_step(
                PendingFenceState::Fencing,
                &Observed::Unreachable("no answer".into())
            ),
            FenceStep::Unreachable("no answer".into())
        );
    }
}
