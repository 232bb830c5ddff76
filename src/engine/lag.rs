//! Replication lag as evidence: a reading counts only when it is known (≥ 0) and fresh.
//! RDS publishes `ReplicaLag` once a minute and reports -1 when replication is not
//! running, so "the newest datapoint" can be stale or meaningless.

use std::time::{Duration, SystemTime};

use crate::api::FailoverMode;

/// Which replication-lag metric to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LagSource {
    /// RDS `ReplicaLag` of a read replica instance (seconds).
    RdsReplica { instance: String },
    /// `AuroraGlobalDBReplicationLag` of a secondary cluster (milliseconds).
    AuroraSecondary { cluster: String },
}

/// One lag datapoint as CloudWatch returned it.
#[derive(Clone, Debug, PartialEq)]
pub struct LagReading {
    pub seconds: f64,
    /// When the datapoint was taken.
    pub at: SystemTime,
}

/// Lag as far as Drover knows it.
#[derive(Clone, Debug, PartialEq)]
pub enum Lag {
    /// Measured, ≥ 0, on a fresh datapoint.
    Known(f64),
    /// Missing, negative or stale; the reason says which.
    Unknown(String),
}

impl Lag {
    pub fn seconds(&self) -> Option<f64> {
        match self {
            Lag::Known(s) => Some(*s),
            Lag::Unknown(_) => None,
        }
    }

    pub fn is_zero(&self) -> bool {
        self.seconds() == Some(0.0)
    }

    pub fn describe(&self) -> String {
        match self {
            Lag::Known(s) => format!("{s}s"),
            Lag::Unknown(why) => format!("unknown ({why})"),
        }
    }
}

/// Judges a reading: it counts only if it is ≥ 0 and taken no earlier than `fresh_after`.
pub fn judge(reading: Option<&LagReading>, fresh_after: SystemTime) -> Lag {
    let Some(r) = reading else {
        return Lag::Unknown("no lag datapoint in the last 5 minutes".into());
    };
    if !r.seconds.is_finite() || r.seconds < 0.0 {
        return Lag::Unknown(format!(
            "the lag metric reads {}, so replication is not running",
            r.seconds
        ));
    }
    if r.at < fresh_after {
        let age = fresh_after
            .duration_since(r.at)
            .unwrap_or_default()
            .as_secs_f64();
        return Lag::Unknown(format!(
            "the newest datapoint is {age:.1}s older than the freshness bound"
        ));
    }
    Lag::Known(r.seconds)
}

/// The earliest time a datapoint may be from to count, for a reading taken `now`:
/// `max_age` back, but never before `not_before` (e.g. when the writers were fenced).
pub fn fresh_after(
    now: SystemTime,
    max_age: Duration,
    not_before: Option<SystemTime>,
) -> SystemTime {
    let by_age = now.checked_sub(max_age).unwrap_or(SystemTime::UNIX_EPOCH);
    match not_before {
        Some(t) if t > by_age => t,
        _ => by_age,
    }
}

/// Whether promotion may proceed. Unknown lag passes only when data loss is allowed and
/// no maxDataLoss bound is set.
pub fn promotion_gate(
    mode: FailoverMode,
    allow_data_loss: bool,
    max_data_loss: Option<Duration>,
    lag: &Lag,
) -> Result<(), String> {
    if lag.is_zero() || mode == FailoverMode::DryRun {
        return Ok(());
    }
    match (mode, lag) {
        (FailoverMode::Planned, _) => Err(format!(
            "replication lag is {}; a Planned failover promotes only at zero lag",
            lag.describe()
        )),
        (_, _) if !allow_data_loss => Err(format!(
            "replication lag is {}; promotion would lose data and allowDataLoss is false",
            lag.describe()
        )),
        (_, Lag::Known(l)) => match max_data_loss {
            Some(max) if *l > max.as_secs_f64() => Err(format!(
                "replication lag is {l}s, above maxDataLoss {}s",
                max.as_secs_f64()
            )),
            _ => Ok(()),
        },
        (_, Lag::Unknown(why)) => match max_data_loss {
            Some(max) => Err(format!(
                "replication lag is unknown ({why}), so it cannot be held to maxDataLoss {}s",
                max.as_secs_f64()
            )),
            None => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailoverMode::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn reading(seconds: f64, secs: u64) -> LagReading {
        LagReading {
            seconds,
            at: at(secs),
        }
    }

    #[test]
    fn negative_missing_and_stale_lag_are_unknown() {
        assert_eq!(judge(Some(&reading(0.0, 100)), at(100)), Lag::Known(0.0));
        assert_eq!(judge(Some(&reading(3.0, 150)), at(100)), Lag::Known(3.0));
        let minus_one = judge(Some(&reading(-1.0, 150)), at(100));
        assert!(
            matches!(&minus_one, Lag::Unknown(w) if w.contains("-1")),
            "{minus_one:?}"
        );
        assert!(matches!(judge(None, at(100)), Lag::Unknown(_)));
        let stale = judge(Some(&reading(0.0, 99)), at(100));
        assert!(
            matches!(&stale, Lag::Unknown(w) if w.contains("older")),
            "{stale:?}"
        );
        assert!(matches!(
            judge(Some(&reading(f64::NAN, 150)), at(100)),
            Lag::Unknown(_)
        ));
    }

    #[test]
    fn freshness_bound_is_the_later_of_age_and_fence() {
        let now = at(1000);
        assert_eq!(fresh_after(now, Duration::from_secs(120), None), at(880));
        assert_eq!(
            fresh_after(now, Duration::from_secs(120), Some(at(900))),
            at(900)
        );
        assert_eq!(
            fresh_after(now, Duration::from_secs(120), Some(at(10))),
            at(880)
        );
    }

    #[test]
    fn promotion_gate_table() {
        let unknown = Lag::Unknown("the lag metric reads -1".into());
        let min = Some(Duration::from_secs(60));
        let ok = |m, allow, max, lag: &Lag| promotion_gate(m, allow, max, lag).is_ok();
        // Zero lag always passes; so does a DryRun, which promotes nothing.
        for m in [Planned, Unplanned, DryRun] {
            assert!(ok(m, false, None, &Lag::Known(0.0)));
        }
        assert!(ok(DryRun, false, None, &unknown));
        // Planned: only zero.
        assert!(!ok(Planned, false, None, &Lag::Known(0.5)));
        assert!(!ok(Planned, false, None, &unknown));
        // Unplanned without consent: only zero; unknown (e.g. -1) never passes.
        assert!(!ok(Unplanned, false, None, &Lag::Known(5.0)));
        assert!(!ok(Unplanned, false, None, &unknown));
        assert!(!ok(Unplanned, false, min, &unknown));
        // With consent: bounded by maxDataLoss when set; unknown cannot be bounded.
        assert!(ok(Unplanned, true, None, &Lag::Known(500.0)));
        assert!(ok(Unplanned, true, None, &unknown));
        assert!(ok(Unplanned, true, min, &Lag::Known(60.0)));
        assert!(!ok(Unplanned, true, min, &Lag::Known(61.0)));
        assert!(!ok(Unplanned, true, min, &unknown));
        let why = promotion_gate(Unplanned, false, None, &unknown).expect_err("gated");
        assert!(
            why.contains("unknown") && why.contains("allowDataLoss"),
            "{why}"
        );
    }
}
