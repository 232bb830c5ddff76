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
    /// When this one reads -1 (replication not running): the last datapoint before that
    /// still read a lag, if the window holds one.
    pub before_break: Option<BeforeBreak>,
}

impl LagReading {
    pub fn new(seconds: f64, at: SystemTime) -> Self {
        Self {
            seconds,
            at,
            before_break: None,
        }
    }
}

/// The last lag known before replication stopped running, and when it was first seen
/// stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct BeforeBreak {
    pub seconds: f64,
    pub at: SystemTime,
    /// The first datapoint after it that read -1.
    pub broken_at: SystemTime,
}

impl BeforeBreak {
    /// What the replica is missing of what its source committed until replication was
    /// seen stopped: its lag then, plus the time from then to the first -1. An estimate:
    /// CloudWatch stamps a datapoint with its period's start, so the stop may come up to
    /// one period later; and writes the source took after the stop are not in it.
    pub fn estimated_loss_seconds(&self) -> f64 {
        self.seconds
            + self
                .broken_at
                .duration_since(self.at)
                .unwrap_or_default()
                .as_secs_f64()
    }
}

/// The newest datapoint of a window of (value in seconds, time) pairs, with what preceded
/// a break when the newest reads -1.
pub fn newest_reading(points: &[(f64, SystemTime)]) -> Option<LagReading> {
    let mut sorted: Vec<(f64, SystemTime)> = points.to_vec();
    sorted.sort_by_key(|p| p.1);
    let &(seconds, at) = sorted.last()?;
    let mut reading = LagReading::new(seconds, at);
    if seconds.is_finite() && seconds >= 0.0 {
        return Some(reading);
    }
    let known = sorted.iter().rposition(|(v, _)| v.is_finite() && *v >= 0.0);
    if let Some(k) = known
        && let Some(&(_, broken_at)) = sorted.get(k + 1)
    {
        reading.before_break = Some(BeforeBreak {
            seconds: sorted[k].0,
            at: sorted[k].1,
            broken_at,
        });
    }
    Some(reading)
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

/// How much later than `since` a replayed commit must be to prove the replica is past
/// `since`: room for the clocks of Drover's node, the source's database, the replica and
/// CloudWatch to disagree (all synced to Amazon Time Sync on AWS, far closer than this).
pub const CLOCK_MARGIN: Duration = Duration::from_secs(5);

/// Whether a reading proves the replica has replayed everything committed before `since`.
/// RDS for PostgreSQL reports ReplicaLag as `now() - pg_last_xact_replay_timestamp()` on the
/// replica: never exactly 0, and growing while the source commits nothing. A reading of L
/// seconds taken at T says the newest transaction replayed committed at T - L. A replica
/// replays in commit order, so if that is after `since` (by CLOCK_MARGIN), every earlier
/// commit is replayed. RDS commits a heartbeat of its own on the source, so a fenced source
/// goes on producing such transactions.
pub fn replayed_since(reading: &LagReading, since: SystemTime) -> bool {
    if !reading.seconds.is_finite() || reading.seconds < 0.0 {
        return false;
    }
    let Ok(lag) = Duration::try_from_secs_f64(reading.seconds) else {
        return false;
    };
    match (reading.at.checked_sub(lag), since.checked_add(CLOCK_MARGIN)) {
        (Some(replayed), Some(bound)) => replayed >= bound,
        _ => false,
    }
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
        LagReading::new(seconds, at(secs))
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

    /// A reading proves replay past a moment only when the commit it implies (taken at
    /// minus lag) is after that moment by the clock margin; -1, NaN and huge readings never do.
    #[test]
    fn replayed_since_needs_a_commit_after_the_moment() {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let fence = at(1_000);
        let reading = |seconds: f64, taken: u64| LagReading::new(seconds, at(taken));
        assert!(replayed_since(&reading(0.4, 1_006), fence));
        assert!(replayed_since(&reading(0.0, 1_005), fence));
        assert!(
            !replayed_since(&reading(0.4, 1_005), fence),
            "within the margin"
        );
        assert!(!replayed_since(&reading(0.0, 1_000), fence), "at the fence");
        assert!(
            !replayed_since(&reading(9.0, 1_008), fence),
            "commit before the fence"
        );
        assert!(!replayed_since(&reading(-1.0, 2_000), fence), "not running");
        assert!(!replayed_since(&reading(f64::NAN, 2_000), fence));
        assert!(!replayed_since(&reading(f64::INFINITY, 2_000), fence));
        assert!(!replayed_since(&reading(1e300, 2_000), fence));
    }

    /// The newest datapoint wins; when it reads -1, the last one that read a lag before it
    /// and the first -1 after that are kept: the loss is estimated as the lag plus the gap.
    #[test]
    fn newest_reading_keeps_what_preceded_a_break() {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(newest_reading(&[]), None);
        let running = newest_reading(&[(2.0, at(10)), (0.5, at(12)), (1.0, at(11))]);
        assert_eq!(running, Some(LagReading::new(0.5, at(12))));
        let broken =
            newest_reading(&[(-1.0, at(16)), (3.0, at(10)), (-1.0, at(14)), (2.5, at(12))])
                .expect("a reading");
        assert_eq!((broken.seconds, broken.at), (-1.0, at(16)));
        let before = broken.before_break.expect("what preceded the break");
        assert_eq!(
            (before.seconds, before.at, before.broken_at),
            (2.5, at(12), at(14))
        );
        assert_eq!(before.estimated_loss_seconds(), 4.5);
        let never_known = newest_reading(&[(-1.0, at(10)), (-1.0, at(12))]).expect("a reading");
        assert_eq!(never_known.before_break, None);
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
