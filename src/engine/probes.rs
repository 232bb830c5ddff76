//! The recovery time users saw: the probe sampler's polls folded into `status.userVisible`.
//! Pure: the sampler (`crate::probes`) makes the polls, this decides what they mean.

use std::time::{Duration, SystemTime};

use super::machine::stamp;
use crate::api::{FailoverPhase, UserVisibleRecovery};

/// How long after a successful failover's end the sampler goes on waiting for the target
/// to answer: DNS caches and clients may take longer than Drover's own steps.
pub const SETTLE: Duration = Duration::from_secs(600);

/// How long after a successful failover's end the old region is still polled for a stop.
pub const END_GRACE: Duration = Duration::from_secs(5);

/// What a region's probes said at one poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Every probe answered.
    Yes,
    /// A probe did not answer (refused, timed out, an error status, an unhealthy health
    /// check): why, in a sentence.
    No(String),
    /// Drover could not tell (its own call to AWS failed): why.
    Unknown(String),
}

impl Answer {
    /// All of a region's probes: No if any says no, else Unknown if any could not tell.
    pub fn all(answers: impl IntoIterator<Item = Answer>) -> Answer {
        let mut unknown = None;
        for a in answers {
            match a {
                Answer::No(_) => return a,
                Answer::Unknown(_) if unknown.is_none() => unknown = Some(a),
                _ => {}
            }
        }
        unknown.unwrap_or(Answer::Yes)
    }
}

/// One poll of both regions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Poll {
    /// When the poll was sent: a change happened at or before it.
    pub at: SystemTime,
    /// Its sampler has not read the old region before: after an operator restart, the
    /// region may have stopped during the gap.
    pub source_unread: bool,
    /// Its sampler's first poll: after an operator restart, the target may have answered
    /// during the gap.
    pub resumed: bool,
    /// The region being left.
    pub source: Answer,
    pub target: Answer,
}

/// Whether the record is final: nothing more to poll for.
pub fn complete(record: &UserVisibleRecovery) -> bool {
    record.settled
}

/// The record after one more poll. The old region's stop is the first of two polls in a row
/// that saw it not answering (one timeout of a healthy region is no outage); the target's
/// answer, the first poll from the stop on that saw it answering.
pub fn fold(record: &UserVisibleRecovery, poll: &Poll) -> UserVisibleRecovery {
    let mut next = record.clone();
    if complete(record) {
        return next;
    }
    let first_poll = record.first_polled_at.is_none();
    if first_poll && !matches!(poll.source, Answer::Unknown(_)) {
        next.first_polled_at = Some(stamp(poll.at));
    }
    let stopped_before = record.old_region_stopped_at.is_some();
    if !stopped_before {
        match &poll.source {
            Answer::Yes => {
                next.suspected_stop_at = None;
                next.message = None;
                return next;
            }
            Answer::No(why) => {
                next.message = Some(format!("The old region stopped answering: {why}"));
                match record.suspected_stop_at.clone() {
                    None => {
                        next.suspected_stop_at = Some(stamp(poll.at));
                        next.stopped_before_first_poll = first_poll || poll.source_unread;
                        return next;
                    }
                    Some(first_no) => {
                        next.old_region_stopped_at = Some(first_no);
                        next.suspected_stop_at = None;
                    }
                }
            }
            Answer::Unknown(why) => {
                next.message = Some(format!(
                    "Could not tell whether the old region answers: {why}"
                ));
                return next;
            }
        }
    }
    let Some(stopped) = next
        .old_region_stopped_at
        .as_ref()
        .map(|t| SystemTime::from(t.0))
    else {
        return next;
    };
    match &poll.target {
        Answer::Yes => {
            let took = poll.at.duration_since(stopped).unwrap_or_default();
            next.target_answered_at = Some(stamp(poll.at.max(stopped)));
            next.recovery_seconds = Some(took.as_secs_f64());
            // A restarted sampler's first poll: the answer may have come in the gap.
            next.answered_after_gap = poll.resumed && stopped_before;
            next.settled = true;
            next.message = None;
        }
        Answer::No(why) => {
            next.message = Some(format!("The target region does not answer yet: {why}"));
        }
        Answer::Unknown(why) => {
            next.message = Some(format!(
                "Could not tell whether the target region answers: {why}"
            ));
        }
    }
    next
}

/// The record of a failover that ended without both times: final, with why.
pub fn closed(record: &UserVisibleRecovery, why: &str) -> UserVisibleRecovery {
    let mut next = record.clone();
    if !complete(record) {
        next.settled = true;
        next.message = Some(match &record.message {
            Some(last) => format!("{why} Last poll: {last}"),
            None => why.to_string(),
        });
    }
    next
}

/// The record of a failover that reached `phase` (terminal) at `finished`, seen at `now`:
/// final, or None while a successful one waits (up to `SETTLE`) for the target to answer.
pub fn at_end(
    record: &UserVisibleRecovery,
    phase: FailoverPhase,
    finished: SystemTime,
    now: SystemTime,
) -> Option<UserVisibleRecovery> {
    if complete(record) {
        return Some(record.clone());
    }
    if phase != FailoverPhase::Succeeded {
        return Some(closed(record, &format!("The failover ended {phase:?}.")));
    }
    // The last steps (the old region scaled down) share the pass that ends the failover:
    // a stop they cause shows in the polls after it.
    if record.old_region_stopped_at.is_none()
        && now.duration_since(finished).unwrap_or_default() < END_GRACE
    {
        return None;
    }
    if record.first_polled_at.is_none() {
        return Some(closed(
            record,
            "Not measured: the old region's probes could not be read.",
        ));
    }
    if record.old_region_stopped_at.is_none() {
        return Some(closed(
            record,
            "The old region answered at every poll: these probes saw no outage.",
        ));
    }
    if now.duration_since(finished).unwrap_or_default() > SETTLE {
        return Some(closed(
            record,
            "The target region did not answer within 10 minutes of the failover's end.",
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn poll(s: u64, source: Answer, target: Answer) -> Poll {
        Poll {
            at: at(s),
            source_unread: false,
            resumed: false,
            source,
            target,
        }
    }

    fn no() -> Answer {
        Answer::No("HTTP 503".into())
    }

    fn unknown() -> Answer {
        Answer::Unknown("Route 53 throttled the call".into())
    }

    fn run(polls: &[Poll]) -> UserVisibleRecovery {
        polls
            .iter()
            .fold(UserVisibleRecovery::default(), |r, p| fold(&r, p))
    }

    #[test]
    fn recovery_runs_from_the_old_regions_stop_to_the_targets_answer() {
        let r = run(&[
            poll(0, Answer::Yes, no()),
            poll(1, Answer::Yes, no()),
            poll(2, no(), no()),
            poll(3, no(), no()),
            poll(9, Answer::Unknown("not polled".into()), Answer::Yes),
            poll(10, no(), no()),
        ]);
        assert_eq!(r.old_region_stopped_at, Some(stamp(at(2))));
        assert!(!r.stopped_before_first_poll && !r.answered_after_gap);
        assert_eq!(r.target_answered_at, Some(stamp(at(9))));
        assert_eq!(r.recovery_seconds, Some(7.0));
        assert_eq!(r.first_polled_at, Some(stamp(at(0))));
        assert!(complete(&r));
    }

    #[test]
    fn one_missed_answer_of_the_old_region_is_no_stop() {
        let r = run(&[
            poll(0, Answer::Yes, no()),
            poll(1, no(), Answer::Yes),
            poll(2, Answer::Yes, Answer::Yes),
            poll(3, Answer::Unknown("throttled".into()), no()),
        ]);
        assert_eq!(r.old_region_stopped_at, None);
        assert_eq!(r.suspected_stop_at, None);
        assert!(!complete(&r));
    }

    #[test]
    fn a_target_answering_before_the_stop_counts_only_from_the_stop() {
        let r = run(&[
            poll(0, Answer::Yes, Answer::Yes),
            poll(4, no(), Answer::Yes),
            poll(5, no(), Answer::Yes),
        ]);
        assert_eq!(r.old_region_stopped_at, Some(stamp(at(4))));
        assert_eq!(r.target_answered_at, Some(stamp(at(5))));
        assert_eq!(r.recovery_seconds, Some(1.0));
    }

    #[test]
    fn an_old_region_down_at_the_first_poll_is_flagged_as_stopped_before_the_start() {
        let r = run(&[
            poll(0, unknown(), no()),
            poll(1, no(), no()),
            poll(2, no(), no()),
        ]);
        assert!(r.stopped_before_first_poll);
        assert_eq!(r.first_polled_at, Some(stamp(at(1))));
        assert_eq!(r.old_region_stopped_at, Some(stamp(at(1))));
        let r = run(&[
            poll(0, Answer::Yes, no()),
            poll(1, no(), no()),
            poll(2, no(), no()),
        ]);
        assert!(!r.stopped_before_first_poll);
        // A restarted operator's first poll may come after the stop: a lower bound too.
        let resumed = Poll {
            source_unread: true,
            resumed: true,
            ..poll(9, no(), no())
        };
        let r = fold(&run(&[poll(0, Answer::Yes, no())]), &resumed);
        let r = fold(&r, &poll(10, no(), no()));
        assert!(r.stopped_before_first_poll);
        assert_eq!(r.old_region_stopped_at, Some(stamp(at(9))));
    }

    #[test]
    fn a_restarted_samplers_first_answer_after_a_recorded_stop_is_flagged() {
        let stopped = run(&[poll(0, no(), no()), poll(1, no(), no())]);
        let resumed = Poll {
            source_unread: true,
            resumed: true,
            ..poll(30, unknown(), Answer::Yes)
        };
        let r = fold(&stopped, &resumed);
        assert!(r.answered_after_gap);
        assert_eq!(r.recovery_seconds, Some(30.0));
        // The stop and the answer in the same (first) poll: no gap between them.
        let both = Poll {
            resumed: true,
            ..poll(1, no(), Answer::Yes)
        };
        let r = fold(&run(&[poll(0, no(), no())]), &both);
        assert!(!r.answered_after_gap);
    }

    #[test]
    fn unknown_answers_change_no_time_and_say_why() {
        let r = run(&[poll(0, Answer::Yes, no()), poll(1, unknown(), unknown())]);
        assert_eq!(r.old_region_stopped_at, None);
        assert!(r.message.as_deref().unwrap().contains("throttled"));
        let r = run(&[
            poll(0, no(), no()),
            poll(1, no(), no()),
            poll(2, no(), unknown()),
        ]);
        assert_eq!(r.target_answered_at, None);
        assert!(r.message.as_deref().unwrap().contains("target region"));
    }

    #[test]
    fn a_complete_record_never_changes_and_a_closed_one_keeps_its_last_poll() {
        let done = run(&[poll(0, no(), no()), poll(1, no(), Answer::Yes)]);
        assert!(complete(&done));
        assert_eq!(fold(&done, &poll(5, no(), no())), done);
        assert_eq!(closed(&done, "Ended."), done);
        let open = run(&[poll(0, no(), no()), poll(1, no(), no())]);
        let c = closed(&open, "The failover ended.");
        assert_eq!(
            c.message.as_deref(),
            Some("The failover ended. Last poll: The target region does not answer yet: HTTP 503")
        );
    }

    #[test]
    fn an_ended_failover_closes_its_record_except_a_success_awaiting_the_target() {
        let stopped = run(&[poll(0, no(), no()), poll(1, no(), no())]);
        let end = at(10);
        assert_eq!(
            at_end(&stopped, FailoverPhase::Succeeded, end, at(20)),
            None
        );
        let late = at_end(&stopped, FailoverPhase::Succeeded, end, at(611)).unwrap();
        assert!(late.settled && late.message.unwrap().contains("within 10 minutes"));
        let failed = at_end(&stopped, FailoverPhase::Failed, end, at(11)).unwrap();
        assert!(
            failed.settled
                && failed
                    .message
                    .unwrap()
                    .starts_with("The failover ended Failed.")
        );
        let unread = run(&[poll(0, unknown(), unknown())]);
        let unread = at_end(&unread, FailoverPhase::Succeeded, end, at(16)).unwrap();
        assert!(unread.message.unwrap().starts_with("Not measured"));
        let never = run(&[poll(0, Answer::Yes, no())]);
        // The end's own scale-down of the old region shows in the polls after it.
        assert_eq!(at_end(&never, FailoverPhase::Succeeded, end, at(14)), None);
        let never = at_end(&never, FailoverPhase::Succeeded, end, at(16)).unwrap();
        assert!(never.settled && never.old_region_stopped_at.is_none());
    }

    #[test]
    fn a_region_answers_only_when_every_probe_does() {
        assert_eq!(Answer::all([Answer::Yes, Answer::Yes]), Answer::Yes);
        assert_eq!(Answer::all([unknown(), no()]), no());
        assert_eq!(Answer::all([Answer::Yes, unknown()]), unknown());
        assert_eq!(Answer::all([]), Answer::Yes);
    }
}
