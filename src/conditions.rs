//! Status conditions that keep `lastTransitionTime` stable while nothing changes, so that
//! status writes do not retrigger reconciles.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// The desired state of one condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Returns `existing` with `desired` applied. The transition time moves only when the
/// status flips.
pub fn upsert(
    existing: &[Condition],
    desired: DesiredCondition,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let status = if desired.status { "True" } else { "False" };
    let previous = existing.iter().find(|c| c.type_ == desired.type_);
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(now),
    };
    let updated = Condition {
        type_: desired.type_.to_string(),
        status: status.to_string(),
        reason: desired.reason.to_string(),
        message: desired.message,
        observed_generation: generation,
        last_transition_time,
    };
    let mut out: Vec<Condition> = existing
        .iter()
        .filter(|c| c.type_ != desired.type_)
        .cloned()
        .collect();
    out.push(updated);
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(status: bool, message: &str) -> DesiredCondition {
        DesiredCondition {
            type_: "Valid",
            status,
            reason: if status { "Valid" } else { "Invalid" },
            message: message.into(),
        }
    }

    #[test]
    fn transition_time_is_stable_while_status_holds() {
        let t0 = Timestamp::from_second(1_000).expect("valid");
        let t1 = Timestamp::from_second(2_000).expect("valid");
        let first = upsert(&[], desired(true, "ok"), Some(1), t0);
        let again = upsert(&first, desired(true, "still ok"), Some(2), t1);
        assert_eq!(again[0].last_transition_time, Time(t0));
        assert_eq!(again[0].message, "still ok");
        assert_eq!(again[0].observed_generation, Some(2));
        let flipped = upsert(&again, desired(false, "bad"), Some(3), t1);
        assert_eq!(flipped[0].last_transition_time, Time(t1));
        assert_eq!(flipped[0].status, "False");
    }

    #[test]
    fn other_conditions_are_kept_sorted() {
        let t0 = Timestamp::from_second(1_000).expect("valid");
        let a = upsert(&[], desired(true, "ok"), None, t0);
        let mut ready = desired(false, "not yet");
        ready.type_ = "Ready";
        let b = upsert(&a, ready, None, t0);
        assert_eq!(
            b.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            vec!["Ready", "Valid"]
        );
    }
}
