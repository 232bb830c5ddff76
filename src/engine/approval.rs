//! Approval gates: which failovers wait for a person, and which decision applies.

use std::time::SystemTime;

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
    // A round-trip drill's way back skips the failback approval only if the plan says so.
    let exempt_drill_failback = label(TRIGGER_LABEL).as_deref() == Some("drill")
        && label(crate::engine::drill::STAGE_LABEL).as_deref() == Some("back")
        && plan
            .spec
            .drills
            .as_ref()
            .and_then(|d| d.failback_exempt_from_approval)
            .unwrap_or(false);
    let mut reasons = Vec::new();
    if policy.failback()
        && previous == Some(fo.spec.target_region.as_str())
        && !exempt_drill_failback
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
