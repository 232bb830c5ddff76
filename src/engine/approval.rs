//! Approval gates: which failovers wait for a person, and which decision applies.

use std::time::SystemTime;

use kube::ResourceExt;

use crate::api::{ApprovalChoice, DisasterRecoveryPlan, Failover, FailoverApproval, FailoverMode};

/// The label that says what started a Failover: `automatic` (health signals) or `drill`.
pub const TRIGGER_LABEL: &str = "drover.io/trigger";

/// Why `fo` needs approval before it changes anything, or None when it does not. Decided
/// at admission, on the live plan.
pub fn needed(plan: &DisasterRecoveryPlan, fo: &Failover) -> Option<String> {
    if fo.spec.mode == FailoverMode::DryRun {
        return None;
    }
    let policy = plan.spec.approval.clone().unwrap_or_default();
    let previous = plan
        .status
        .as_ref()
        .and_then(|s| s.previous_active_region.as_deref());
    let label = |key: &str| {
        fo.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(key))
            .cloned()
    };
    let automatic = label(TRIGGER_LABEL).as_deref() == Some("automatic");
    let drill = label(TRIGGER_LABEL).as_deref() == Some("drill");
    let stage = label(crate::engine::drill::STAGE_LABEL);
    // Drill legs skip the failback approval only if the plan says so, and only as a drill
    // makes them: Planned, no data loss allowed. Anyone who may create a Failover may
    // label one a drill (`drover drill` does, with the user's rights).
    let drills_exempt = drill
        && fo.spec.mode == FailoverMode::Planned
        && !fo.spec.allow_data_loss
        && fo.spec.max_data_loss.is_none()
        && plan
            .spec
            .drills
            .as_ref()
            .and_then(|d| d.failback_exempt_from_approval)
            .unwrap_or(false);
    // Anyone who may create a Failover may label it; only the way back that Drover itself
    // recorded for a running round trip counts as one.
    let exempt_drill_failback = drills_exempt
        && stage.as_deref() == Some("back")
        && records_way_back(plan, &fo.name_any(), &fo.spec.target_region);
    // After a round trip came back, the region "active before the last failover" is the one
    // the drill visited, not one left in an emergency: the next drill's way there is exempt
    // too, but only when that round trip succeeded and nothing moved the plan since.
    let after_a_drill =
        drills_exempt && stage.as_deref() == Some("go") && last_was_a_round_trip(plan);
    let mut reasons = Vec::new();
    if policy.failback()
        && previous == Some(fo.spec.target_region.as_str())
        && !exempt_drill_failback
        && !after_a_drill
    {
        reasons.push(format!(
            "failback to {} (active before the last failover)",
            fo.spec.target_region
        ));
    }
    if policy.planned() && fo.spec.mode == FailoverMode::Planned {
        reasons.push("the plan requires approval for Planned failovers".to_string());
    }
    if policy.automatic() && automatic {
        reasons.push("the plan requires approval for automatic failovers".to_string());
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// Whether the plan's running drill is a round trip whose way back is `name`, returning to
/// `target`: recorded by Drover before it creates that Failover.
fn records_way_back(plan: &DisasterRecoveryPlan, name: &str, target: &str) -> bool {
    plan.status
        .as_ref()
        .and_then(|s| s.drills.as_ref())
        .and_then(|d| d.running.as_ref())
        .is_some_and(|r| {
            r.kind == crate::api::DrillKind::RoundTrip
                && r.stage == crate::api::DrillStage::Returning
                && r.failover == name
                && r.source_region == target
        })
}

/// Whether the plan's last failover was the way back of a round-trip drill that succeeded,
/// as the drill history records it, and it left the plan where it is now.
fn last_was_a_round_trip(plan: &DisasterRecoveryPlan) -> bool {
    let Some(status) = plan.status.as_ref() else {
        return false;
    };
    let Some(last) = status.last_failover.as_ref() else {
        return false;
    };
    if last.phase.as_deref() != Some("Succeeded")
        || status.active_region.as_deref() != Some(last.target_region.as_str())
    {
        return false;
    }
    status.drills.as_ref().is_some_and(|d| {
        d.history.iter().any(|h| {
            h.kind == crate::api::DrillKind::RoundTrip
                && h.outcome == crate::api::DrillOutcome::Succeeded
                && h.failovers.get(1) == Some(&last.name)
        })
    })
}

/// A FailoverApproval as the engine sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalSeen {
    pub name: String,
    pub failover_ref: String,
    pub failover_uid: Option<String>,
    pub choice: ApprovalChoice,
    pub approver: Option<String>,
    pub approver_source: Option<String>,
    pub reason: Option<String>,
    /// Set by the API server at creation.
    pub created: Option<SystemTime>,
    /// Above 1 when the spec was edited (possible without CEL): such a decision is not
    /// the one its creator made, and is ignored.
    pub generation: i64,
}

impl ApprovalSeen {
    pub fn from_object(a: &FailoverApproval) -> Self {
        Self {
            name: a.metadata.name.clone().unwrap_or_default(),
            failover_ref: a.spec.failover_ref.clone(),
            failover_uid: a.spec.failover_uid.clone(),
            choice: a.spec.decision,
            approver: a.spec.approver.clone(),
            approver_source: a.spec.approver_source.clone(),
            reason: a.spec.reason.clone(),
            created: a
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| SystemTime::from(t.0)),
            generation: a.metadata.generation.unwrap_or(1),
        }
    }

    /// How far `approver` can be trusted, in a sentence.
    pub fn identity(&self) -> String {
        let source = self.approver_source.as_deref().unwrap_or("not stated");
        format!(
            "named by the client ({source}); the API server vouches only that whoever \
             created FailoverApproval {} may create FailoverApprovals, and for its creation \
             time",
            self.name
        )
    }
}

/// The decision that applies to `fo`: the earliest unedited FailoverApproval naming it,
/// made for this Failover (its UID, when given, matches; it was not created before the
/// Failover). Also returns the names of edited ones, which are ignored.
pub fn decision<'a>(
    approvals: &'a [ApprovalSeen],
    fo: &Failover,
) -> (Option<&'a ApprovalSeen>, Vec<String>) {
    let name = fo.metadata.name.as_deref().unwrap_or_default();
    let uid = fo.metadata.uid.as_deref();
    let created = fo
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| SystemTime::from(t.0));
    let mut edited = Vec::new();
    let mut applicable: Vec<&ApprovalSeen> = approvals
        .iter()
        .filter(|a| a.failover_ref == name)
        .filter(|a| match (&a.failover_uid, uid) {
            (Some(given), Some(uid)) => given == uid,
            _ => true,
        })
        // Creation times are whole seconds: one made in the Failover's second counts.
        .filter(|a| match (a.created, created) {
            (Some(a), Some(f)) => a >= f,
            _ => true,
        })
        .filter(|a| {
            if a.generation > 1 {
                edited.push(a.name.clone());
                false
            } else {
                true
            }
        })
        .collect();
    applicable.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    (applicable.first().copied(), edited)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        DisasterRecoveryPlanStatus, DrillKind, DrillOutcome, DrillResult, DrillStage, DrillsSpec,
        FailoverSpec, LastFailover, RunningDrill,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// A plan back in use1 after a round-trip drill to usw2 (or, `drill` false, after an
    /// ordinary failover back from usw2).
    fn plan(exempt: bool, drill: bool) -> DisasterRecoveryPlan {
        let mut plan: DisasterRecoveryPlan =
            serde_yaml::from_str(include_str!("../../config/samples/plan.yaml")).expect("sample");
        plan.spec.drills = Some(DrillsSpec {
            failback_exempt_from_approval: Some(exempt),
            ..Default::default()
        });
        let back = "shop-drill-manual-202611301000-back";
        let at = Time("2026-11-30T10:01:00Z".parse().expect("time"));
        plan.status = Some(DisasterRecoveryPlanStatus {
            active_region: Some("use1".into()),
            previous_active_region: Some("usw2".into()),
            last_failover: Some(LastFailover {
                name: if drill {
                    back.into()
                } else {
                    "shop-to-use1".into()
                },
                target_region: "use1".into(),
                phase: Some("Succeeded".into()),
                ..Default::default()
            }),
            drills: Some(crate::api::DrillsStatus {
                history: vec![DrillResult {
                    schedule: "manual".into(),
                    kind: DrillKind::RoundTrip,
                    scheduled_for: at.clone(),
                    started_at: Some(at.clone()),
                    finished_at: at,
                    outcome: DrillOutcome::Succeeded,
                    rto_seconds: Some(4.0),
                    user_visible_seconds: None,
                    user_visible_back_seconds: None,
                    rto_back_seconds: Some(5.0),
                    data_loss_seconds: Some(0.0),
                    failing_step: None,
                    message: None,
                    failovers: vec!["shop-drill-manual-202611301000".into(), back.into()],
                }],
                ..Default::default()
            }),
            ..Default::default()
        });
        plan
    }

    fn fo(target: &str, labels: &[(&str, &str)]) -> Failover {
        let mut fo = Failover::new(
            "fo",
            FailoverSpec::new("shop", target, FailoverMode::Planned),
        );
        fo.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        fo
    }

    const DRILL_GO: [(&str, &str); 2] = [
        (TRIGGER_LABEL, "drill"),
        (crate::engine::drill::STAGE_LABEL, "go"),
    ];
    const DRILL_BACK: [(&str, &str); 2] = [
        (TRIGGER_LABEL, "drill"),
        (crate::engine::drill::STAGE_LABEL, "back"),
    ];

    #[test]
    fn a_drills_way_back_needs_the_failback_approval_unless_the_plan_exempts_it() {
        let failback = Some("failback to usw2 (active before the last failover)".to_string());
        // usw2 was active before the last failover: a drill's way back there is a failback.
        assert_eq!(
            needed(&plan(false, false), &fo("usw2", &DRILL_BACK)),
            failback
        );
        // Labels alone do not make a way back: Drover must have recorded it for the running
        // round trip (anyone who may create a Failover may label it).
        assert_eq!(
            needed(&plan(true, false), &fo("usw2", &DRILL_BACK)),
            failback
        );
        let returning = |name: &str, source: &str| {
            let mut p = plan(true, false);
            if let Some(s) = p.status.as_mut() {
                let at = Time("2026-11-30T10:00:00Z".parse().expect("time"));
                s.drills.get_or_insert_with(Default::default).running = Some(RunningDrill {
                    schedule: "manual".into(),
                    kind: DrillKind::RoundTrip,
                    scheduled_for: at.clone(),
                    started_at: at,
                    stage: DrillStage::Returning,
                    source_region: source.into(),
                    target_region: "use1".into(),
                    failover: name.into(),
                    created: true,
                    failovers: vec!["go".into(), name.into()],
                    hold_until: None,
                    rto_seconds: None,
                    user_visible_seconds: None,
                    data_loss_seconds: None,
                });
            }
            p
        };
        assert_eq!(
            needed(&returning("fo", "usw2"), &fo("usw2", &DRILL_BACK)),
            None
        );
        assert_eq!(
            needed(&returning("other", "usw2"), &fo("usw2", &DRILL_BACK)),
            failback
        );
        assert_eq!(
            needed(&returning("fo", "euw1"), &fo("usw2", &DRILL_BACK)),
            failback
        );
        // Not a drill: exemption or not, a failback needs approval.
        assert_eq!(needed(&plan(true, true), &fo("usw2", &[])), failback);
    }

    #[test]
    fn the_next_drills_way_there_after_a_drill_came_back_is_no_failback() {
        let failback = Some("failback to usw2 (active before the last failover)".to_string());
        // The last failover was the way back of a round trip to usw2: the next drill going
        // to usw2 again is exempt only if the plan exempts drills.
        assert_eq!(needed(&plan(true, true), &fo("usw2", &DRILL_GO)), None);
        assert_eq!(needed(&plan(false, true), &fo("usw2", &DRILL_GO)), failback);
        // Only as a drill makes it (Planned, no data loss): anyone may put the labels on
        // an Unplanned failover that allows data loss.
        let mut unplanned = fo("usw2", &DRILL_GO);
        unplanned.spec.mode = FailoverMode::Unplanned;
        unplanned.spec.allow_data_loss = true;
        assert_eq!(needed(&plan(true, true), &unplanned), failback);
        let mut lossy = fo("usw2", &DRILL_GO);
        lossy.spec.max_data_loss = Some("5m".into());
        assert_eq!(needed(&plan(true, true), &lossy), failback);
        // Not when that round trip failed, nor when the last failover did not succeed or
        // another one moved the plan since.
        let mut failed = plan(true, true);
        if let Some(d) = failed.status.as_mut().and_then(|s| s.drills.as_mut()) {
            d.history[0].outcome = DrillOutcome::Failed;
        }
        assert_eq!(needed(&failed, &fo("usw2", &DRILL_GO)), failback);
        let mut rejected = plan(true, true);
        if let Some(l) = rejected
            .status
            .as_mut()
            .and_then(|s| s.last_failover.as_mut())
        {
            l.phase = Some("Rejected".into());
        }
        assert_eq!(needed(&rejected, &fo("usw2", &DRILL_GO)), failback);
        let mut moved = plan(true, true);
        if let Some(s) = moved.status.as_mut() {
            s.active_region = Some("euw1".into());
        }
        assert_eq!(needed(&moved, &fo("usw2", &DRILL_GO)), failback);
        // After an ordinary failover from usw2, a drill going there is a failback.
        assert_eq!(
            needed(&plan(false, false), &fo("usw2", &DRILL_GO)),
            failback
        );
        assert_eq!(needed(&plan(true, false), &fo("usw2", &DRILL_GO)), failback);
        // A DryRun never waits.
        let mut dry = fo("usw2", &DRILL_GO);
        dry.spec.mode = FailoverMode::DryRun;
        assert_eq!(needed(&plan(false, false), &dry), None);
    }
}
