//! Re-protection of RDS standbys after a failover, as pure decisions: given one standby's
//! progress record and what was observed, what to record and which call to make.
//!
//! Recreate moves the old instance aside (rename, or delete with a final snapshot), creates
//! a cross-region read replica of the new primary under the plan's identifier, and waits
//! until it replicates (a known lag). Every call is recorded as intent first; a record whose
//! call was not answered is observed before the call is sent again, and an answer that
//! shows the call already took effect is taken as done.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    DisasterRecoveryPlanSpec, DisasterRecoveryPlanStatus, FailoverPhase, FenceResource,
    OldInstanceAction, Reprotection, ReprotectionSpec, ReprotectionState,
};
use crate::engine::RdsObservation;

pub mod settings;

/// One RDS standby: the plan's instance in a standby region, and the primary it should
/// replicate from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standby {
    pub database: String,
    pub region: String,
    pub aws_region: String,
    pub instance: String,
    /// The active region's primary: its AWS region and identifier.
    pub primary_aws_region: String,
    pub primary: String,
}

/// What one check observed of a standby.
#[derive(Clone, Debug, PartialEq)]
pub enum Seen {
    /// The region's RDS did not answer, or refused the read.
    Unknown(String),
    /// The standby's instance (None: it does not exist).
    Instance {
        instance: Option<RdsObservation>,
        /// Whether its replication lag is known (a fresh reading of 0 or more).
        lag_known: bool,
    },
}

/// A call to make for a standby.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Rename {
        to: String,
    },
    /// None for a read replica: AWS refuses a final snapshot of one. Not made today (a
    /// replica of an old primary is renamed aside, never deleted).
    Delete {
        final_snapshot: Option<String>,
    },
    CreateReplica,
}

/// What a check decides for one standby.
#[derive(Clone, Debug, PartialEq)]
pub struct Next {
    /// Protected, Unprotected or Reprotecting.
    pub protection: &'static str,
    pub message: Option<String>,
    /// The record after this check (None: no re-protection under way).
    pub record: Option<Reprotection>,
    /// The call to make once `record` is written.
    pub call: Option<Call>,
}

impl Next {
    fn report(protection: &'static str, message: impl Into<Option<String>>) -> Self {
        Self {
            protection,
            message: message.into(),
            record: None,
            call: None,
        }
    }

    fn keep(record: &Reprotection, message: String) -> Self {
        let mut record = record.clone();
        record.message = Some(message.clone());
        Self {
            protection: "Reprotecting",
            message: Some(message),
            record: Some(record),
            call: None,
        }
    }

    fn step(
        record: Reprotection,
        state: ReprotectionState,
        call: Option<Call>,
        message: String,
    ) -> Self {
        let mut record = record;
        record.state = state;
        record.requested = false;
        record.message = Some(message.clone());
        Self {
            protection: "Reprotecting",
            message: Some(message),
            record: Some(record),
            call,
        }
    }
}

/// Whether `obs` is a read replica of the standby's primary.
fn replicates_from_primary(obs: &RdsObservation, s: &Standby) -> bool {
    obs.source
        .as_deref()
        .is_some_and(|src| crate::engine::source_is(src, &s.primary_aws_region, &s.primary))
}

/// `<id>-old-20261130T101500` / `<id>-final-20261130T101500`: unique per second, within
/// RDS's 63 characters for the usual identifiers, and sortable.
pub fn aside_name(instance: &str, kind: &str, now: &Time) -> String {
    let stamp = now.0.strftime("%Y%m%dT%H%M%S").to_string().to_lowercase();
    // RDS identifiers: at most 63 characters, no trailing or doubled hyphen.
    let room = 63usize.saturating_sub(kind.len() + stamp.len() + 2);
    let base: String = instance.chars().take(room).collect();
    format!("{}-{kind}-{stamp}", base.trim_end_matches('-'))
}

/// The decision for one standby. `recreate` is the plan's `reprotection.rds: Recreate`;
/// `blocked` says why nothing may be sent now (a failover runs, the old instance's fence
/// is pending), None when calls are allowed.
pub fn next(
    s: &Standby,
    record: Option<&Reprotection>,
    seen: &Seen,
    recreate: bool,
    old_instance: OldInstanceAction,
    blocked: Option<&str>,
    now: &Time,
) -> Next {
    let decided = decide(s, record, seen, recreate, old_instance, blocked, now);
    // No call at all while blocked, whatever the record says (a failover under way may be
    // moving the primary this standby would follow).
    match (blocked, &decided.call, record) {
        (Some(why), Some(_), Some(r)) => Next::keep(r, format!("waits: {why}")),
        (Some(why), Some(_), None) => Next::report("Unprotected", format!("waits: {why}")),
        _ => decided,
    }
}

fn decide(
    s: &Standby,
    record: Option<&Reprotection>,
    seen: &Seen,
    recreate: bool,
    old_instance: OldInstanceAction,
    blocked: Option<&str>,
    now: &Time,
) -> Next {
    let (instance, lag_known) = match seen {
        Seen::Unknown(why) => {
            return match record {
                Some(r) => Next::keep(r, format!("{}: {why}", s.region)),
                None => Next::report("Unprotected", format!("{}: {why}", s.region)),
            };
        }
        Seen::Instance {
            instance,
            lag_known,
        } => (instance, *lag_known),
    };
    let id = &s.instance;
    let Some(record) = record else {
        return match instance {
            // Protected only while it replicates: a known lag (-1, or none, is broken).
            Some(obs) if replicates_from_primary(obs, s) && obs.status == "available" => {
                if lag_known {
                    Next::report("Protected", None)
                } else {
                    Next::report(
                        "Unprotected",
                        format!("{id} replicates from {}, but its lag is unknown", s.primary),
                    )
                }
            }
            Some(obs) if replicates_from_primary(obs, s) => Next::report(
                "Reprotecting",
                format!("{id} is a replica of {}, {}", s.primary, obs.status),
            ),
            _ if !recreate => Next::report(
                "Unprotected",
                format!(
                    "{id} in {} is {}; spec.reprotection.rds is Manual: rebuild it as a read \
                     replica of {} in {}",
                    s.region,
                    describe(instance.as_ref(), s),
                    s.primary,
                    s.primary_aws_region
                ),
            ),
            _ if blocked.is_some() => Next::report(
                "Unprotected",
                format!(
                    "{id} in {} is {}; re-protection waits: {}",
                    s.region,
                    describe(instance.as_ref(), s),
                    blocked.unwrap_or_default()
                ),
            ),
            None => Next::step(
                fresh(s, now),
                ReprotectionState::Creating,
                Some(Call::CreateReplica),
                format!("creating {id} as a read replica of {}", s.primary),
            ),
            Some(obs) => start_aside(s, obs, old_instance, now),
        };
    };
    if blocked.is_some() && !record.requested {
        return Next::keep(record, format!("waits: {}", blocked.unwrap_or_default()));
    }
    match (record.state, instance) {
        // The identifier already holds a replica of the primary (the record is behind, or
        // someone rebuilt it): never move that aside.
        (ReprotectionState::Renaming | ReprotectionState::Deleting, Some(obs))
            if replicates_from_primary(obs, s) =>
        {
            let mut next = Next::step(
                record.clone(),
                ReprotectionState::Creating,
                None,
                format!("{id} is already a replica of {}", s.primary),
            );
            if let Some(r) = next.record.as_mut() {
                r.requested = true;
            }
            next
        }
        // The old instance is gone from its identifier: create the replica there.
        (ReprotectionState::Renaming | ReprotectionState::Deleting, None) => Next::step(
            record.clone(),
            ReprotectionState::Creating,
            Some(Call::CreateReplica),
            format!("creating {id} as a read replica of {}", s.primary),
        ),
        (ReprotectionState::Renaming | ReprotectionState::Deleting, Some(obs))
            if obs.status == "available" || obs.status == "stopped" =>
        {
            if record.requested {
                Next::keep(
                    record,
                    format!("{id} is {}; its move was requested", obs.status),
                )
            } else {
                // Intent recorded, answer lost: nothing shows the call took effect.
                let call = match record.state {
                    ReprotectionState::Renaming => Call::Rename {
                        to: record.renamed_to.clone().unwrap_or_default(),
                    },
                    _ => Call::Delete {
                        final_snapshot: record.final_snapshot.clone(),
                    },
                };
                let mut next = Next::keep(record, format!("moving {id} aside again"));
                next.call = Some(call);
                next
            }
        }
        (ReprotectionState::Renaming | ReprotectionState::Deleting, Some(obs)) => {
            Next::keep(record, format!("{id} is {}", obs.status))
        }
        (ReprotectionState::Creating, Some(obs)) if replicates_from_primary(obs, s) => {
            if obs.status == "available" {
                Next::step(
                    record.clone(),
                    ReprotectionState::Replicating,
                    None,
                    format!("{id} is available; waiting for its replication lag"),
                )
            } else {
                Next::keep(record, format!("{id} is {}", obs.status))
            }
        }
        (ReprotectionState::Creating, Some(obs)) => Next::keep(
            record,
            format!(
                "{id} exists but is {}; not the replica Drover asked for",
                describe(Some(obs), s)
            ),
        ),
        (ReprotectionState::Creating, None) if record.requested => {
            Next::keep(record, format!("{id} requested; not visible yet"))
        }
        (ReprotectionState::Creating, None) => {
            let mut next = Next::keep(record, format!("creating {id} again"));
            next.call = Some(Call::CreateReplica);
            next
        }
        (ReprotectionState::Replicating, Some(obs)) if replicates_from_primary(obs, s) => {
            if lag_known {
                let mut next = Next::report("Protected", None);
                next.message = Some(format!("{id} replicates from {}", s.primary));
                next
            } else {
                Next::keep(record, format!("{id} is {}; lag not known yet", obs.status))
            }
        }
        // The replica vanished or changed under us: start over at the next check.
        (ReprotectionState::Replicating, other) => Next::report(
            "Unprotected",
            format!("{id} is {}", describe(other.as_ref(), s)),
        ),
    }
}

fn fresh(s: &Standby, now: &Time) -> Reprotection {
    Reprotection {
        database: s.database.clone(),
        region: s.region.clone(),
        instance: s.instance.clone(),
        state: ReprotectionState::Creating,
        requested: false,
        renamed_to: None,
        final_snapshot: None,
        settings: None,
        refused: false,
        refusals: 0,
        retry_after: None,
        since: now.clone(),
        message: None,
    }
}

fn start_aside(
    s: &Standby,
    obs: &RdsObservation,
    old_instance: OldInstanceAction,
    now: &Time,
) -> Next {
    let id = &s.instance;
    // A replica of an old primary is renamed aside even when the plan says Delete: after an
    // Unplanned failover it may hold writes the promoted replica lacks, and AWS keeps no
    // final snapshot of a replica.
    let rename = old_instance == OldInstanceAction::Rename || obs.has_source();
    match (old_instance, obs.status.as_str()) {
        (_, "available") if rename => {
            let to = aside_name(id, "old", now);
            let mut record = fresh(s, now);
            record.renamed_to = Some(to.clone());
            let message = if old_instance == OldInstanceAction::Rename {
                format!("renaming {id} to {to}")
            } else {
                format!(
                    "renaming {id} to {to}: a replica of an old primary is kept, not deleted, \
                     as it may hold writes the new primary lacks"
                )
            };
            Next::step(
                record,
                ReprotectionState::Renaming,
                Some(Call::Rename { to: to.clone() }),
                message,
            )
        }
        (OldInstanceAction::Rename, "stopped") => Next::report(
            "Unprotected",
            format!(
                "{id} in {} is stopped (fenced), and AWS cannot rename a stopped instance; set \
                 spec.reprotection.oldInstance: Delete (starting it would lift the fence)",
                s.region
            ),
        ),
        (OldInstanceAction::Delete, "available" | "stopped") => {
            // A replica that is not available is reported below; RDS cannot stop one.
            let snapshot = (!obs.has_source()).then(|| aside_name(id, "final", now));
            let mut record = fresh(s, now);
            record.final_snapshot = snapshot.clone();
            let message = match &snapshot {
                Some(snap) => format!("deleting {id} with final snapshot {snap}"),
                None => format!("deleting {id}, a replica of an old primary"),
            };
            Next::step(
                record,
                ReprotectionState::Deleting,
                Some(Call::Delete {
                    final_snapshot: snapshot,
                }),
                message,
            )
        }
        (_, status) => Next::report(
            "Unprotected",
            format!(
                "{id} in {} is {status}; re-protection starts once it is available",
                s.region
            ),
        ),
    }
}

fn describe(obs: Option<&RdsObservation>, s: &Standby) -> String {
    match obs {
        None => "missing".into(),
        Some(o) => match &o.source {
            Some(src) if replicates_from_primary(o, s) => format!("a replica of {src}"),
            Some(src) => format!(
                "a replica of {src}, not of the active primary {}",
                s.primary
            ),
            None => format!("a standalone instance ({})", o.status),
        },
    }
}

/// Each RDS standby of the plan: the plan's instance in every region but the active one.
pub fn standbys(spec: &DisasterRecoveryPlanSpec, active: &str) -> Vec<Standby> {
    let aws = |name: &str| spec.aws_region_of(name).map(str::to_string);
    let mut out = Vec::new();
    for db in spec.databases.iter().filter(|d| d.rds.is_some()) {
        let (Some(primary), Some(primary_aws_region)) =
            (crate::engine::member(db, active), aws(active))
        else {
            continue;
        };
        for region in spec.regions.iter().filter(|r| r.name != active) {
            if let Some(instance) = crate::engine::member(db, &region.name) {
                out.push(Standby {
                    database: db.name.clone(),
                    region: region.name.clone(),
                    aws_region: region.aws_region.clone(),
                    instance: instance.to_string(),
                    primary_aws_region: primary_aws_region.clone(),
                    primary: primary.to_string(),
                });
            }
        }
    }
    out
}

/// Why no re-protection call may be made for `s` now, by the plan's status.
pub fn blocked(status: &DisasterRecoveryPlanStatus, s: &Standby) -> Option<String> {
    let running = status.last_failover.as_ref().filter(|l| {
        matches!(
            l.phase.as_deref(),
            Some(p) if p == format!("{:?}", FailoverPhase::Running)
                || p == format!("{:?}", FailoverPhase::AwaitingApproval)
        )
    });
    if let Some(l) = running {
        return Some(format!("failover {} is under way", l.name));
    }
    status
        .pending_fences
        .iter()
        .any(|f| f.resource == FenceResource::RdsInstance && f.region == s.region)
        .then(|| format!("the fence of the old primary in {} is pending", s.region))
}

/// Errors that show an earlier send of the call took effect (its answer was lost). A name
/// already taken is no proof for a rename or a delete: had the earlier send taken effect,
/// the instance would no longer be available to move (gone), so a taken `renamed_to` or
/// final snapshot name is someone else's and a refusal. Nor is InvalidDBInstanceState: a
/// resend is made only after the instance was seen available or stopped, so the state
/// that refuses it is someone else's change (a modification, a backup) or one AWS never
/// allows (renaming a stopped instance), not our delete; counting it as done would wait
/// for ever on a delete nobody made. It is a refusal, and waits like one. A taken
/// identifier for a create is safe to count: the next check sees what holds it.
pub fn already_done(call: &Call, message: &str) -> bool {
    let codes: &[&str] = match call {
        Call::Rename { .. } | Call::Delete { .. } => &["DBInstanceNotFound"],
        Call::CreateReplica => &["DBInstanceAlreadyExists"],
    };
    codes.iter().any(|code| message.contains(code))
}

/// A call to send once the records are written.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Index of the standby in `Round::decided`.
    pub standby: usize,
    /// Index of its record in `Round::wanted`.
    pub record: usize,
    pub call: Call,
    /// The record was there, in the same state, its answer lost: an answer showing that
    /// the first send took effect counts as done.
    pub resend: bool,
}

/// One check's decisions over all standbys of a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Round {
    pub decided: Vec<(Standby, Next)>,
    /// The records after this check; written (conditionally) before any send.
    pub wanted: Vec<Reprotection>,
    pub requests: Vec<Request>,
    /// Records (indices in `wanted`) whose call was refused: dropped when the answers are
    /// merged.
    pub refused: Vec<usize>,
}

impl Round {
    /// Whether the records must be written before anything is sent: they changed, or a
    /// call is due (a resend's record may be unchanged since the send that was lost, and
    /// the conditional write is what keeps it from racing a change of the plan).
    pub fn must_record(&self, records: &[Reprotection]) -> bool {
        self.wanted != records || !self.requests.is_empty()
    }

    /// Puts the answer to `requests[i]` on its record.
    pub fn answer(&mut self, i: usize, answer: &Answer) {
        let Some(record) = self.requests.get(i).map(|r| r.record) else {
            return;
        };
        if let Some(r) = self.wanted.get_mut(record) {
            apply(r, answer);
        }
        if matches!(answer, Answer::Refused(_)) {
            self.refused.push(record);
        }
    }

    /// The answers, onto the records as they are now (`current`): matched by standby,
    /// state and the names the record chose, so a record that moved on since is left
    /// alone. A refused call's record is marked refused, never left as unanswered intent
    /// (that would make the next send a resend, which takes the same refusal,
    /// DBSnapshotAlreadyExists or DBInstanceAlreadyExists, as proof that the first send
    /// took effect). It is kept for the old instance's settings (a refused resend may
    /// follow a first send that took effect, and the settings are then all that is left),
    /// and no call is made for the standby before its `retry_after` (from `now`, the time
    /// of the answers). A record without settings is dropped.
    pub fn merge(&self, current: &mut Vec<Reprotection>, now: &Time) {
        current.retain_mut(|r| {
            // The same record in the same state: the names it chose too, so an answer never
            // lands on a record begun since (by another leader, or after a refusal) that
            // happens to be in the same state. (Not `since`: the API server keeps whole
            // seconds of it.)
            let found = self.wanted.iter().enumerate().find(|(_, w)| {
                w.database == r.database
                    && w.region == r.region
                    && w.state == r.state
                    && w.renamed_to == r.renamed_to
                    && w.final_snapshot == r.final_snapshot
            });
            match found {
                // Answered as taken since (by another leader's send): not refused.
                Some((i, w)) if self.refused.contains(&i) && !r.requested => {
                    r.refused = true;
                    r.refusals = r.refusals.saturating_add(1);
                    r.retry_after = Some(retry_after(r.refusals, now));
                    r.message = w.message.clone();
                    r.settings.is_some()
                }
                Some((_, w)) => {
                    r.requested |= w.requested;
                    r.message = w.message.clone();
                    true
                }
                None => true,
            }
        });
    }
}

/// Decides a check: `seen` is per standby, in the order of `standbys`; `records` and
/// `status` are the plan's as read fresh for this check.
pub fn round(
    standbys: Vec<Standby>,
    seen: &[Seen],
    spec: &ReprotectionSpec,
    status: &DisasterRecoveryPlanStatus,
    now: &Time,
) -> Round {
    let records = &status.reprotections;
    let decided: Vec<(Standby, Next)> = standbys
        .into_iter()
        .zip(seen)
        .map(|(s, seen)| {
            // A refused record is no call under way (its settings are used by `settings`).
            let record = records
                .iter()
                .find(|r| r.database == s.database && r.region == s.region && !r.refused);
            let why = blocked(status, &s);
            let n = next(
                &s,
                record,
                seen,
                spec.recreate(),
                spec.old_instance(),
                why.as_deref(),
                now,
            );
            let refused = records
                .iter()
                .find(|r| r.database == s.database && r.region == s.region && r.refused);
            let n = match refused {
                Some(r) if n.call.is_some() => backing_off(r, now).unwrap_or(n),
                _ => n,
            };
            (s, n)
        })
        .collect();
    Round::assemble(decided, records)
}

/// The longest wait after refusals before a call is made again.
const MAX_RETRY_WAIT_SECS: i64 = 30 * 60;

/// When a call may be made again after `refusals` refusals in a row: a minute after the
/// first, doubling, at most half an hour.
pub fn retry_after(refusals: u32, now: &Time) -> Time {
    let wait = 60i64
        .saturating_mul(1i64 << refusals.saturating_sub(1).min(16))
        .min(MAX_RETRY_WAIT_SECS);
    Time(now.0 + k8s_openapi::jiff::SignedDuration::from_secs(wait))
}

/// No call while the last refusal's wait runs: the refused record stays as it is (its
/// message is AWS's reason), and the standby is Unprotected until then.
fn backing_off(refused: &Reprotection, now: &Time) -> Option<Next> {
    let until = refused.retry_after.as_ref().filter(|t| t.0 > now.0)?;
    let reason = refused
        .message
        .clone()
        .unwrap_or_else(|| "AWS refused the last call".into());
    Some(Next {
        protection: "Unprotected",
        message: Some(format!("{reason}; tried again after {}", until.0)),
        record: Some(refused.clone()),
        call: None,
    })
}

impl Round {
    /// The round of these decisions: the records to write and the calls to send after.
    /// `records` are the plan's as read fresh for this check.
    pub fn assemble(decided: Vec<(Standby, Next)>, records: &[Reprotection]) -> Round {
        let wanted: Vec<Reprotection> = decided
            .iter()
            .filter_map(|(_, n)| n.record.clone())
            .collect();
        let requests = Self::requests(&decided, &wanted, records);
        Round {
            decided,
            wanted,
            requests,
            refused: Vec::new(),
        }
    }

    fn requests(
        decided: &[(Standby, Next)],
        wanted: &[Reprotection],
        records: &[Reprotection],
    ) -> Vec<Request> {
        let same = |r: &Reprotection, s: &Standby| r.database == s.database && r.region == s.region;
        decided
            .iter()
            .enumerate()
            .filter_map(|(i, (s, n))| {
                let call = n.call.clone()?;
                let record = wanted.iter().position(|r| same(r, s))?;
                // A resend: the record was there, not answered, and stays in the same state.
                let resend = records.iter().any(|r| {
                    same(r, s) && !r.requested && !r.refused && r.state == wanted[record].state
                });
                Some(Request {
                    standby: i,
                    record,
                    call,
                    resend,
                })
            })
            .collect()
    }
}

/// What the answer to a send means.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Taken (or, on a resend, shown to have been taken by the first send).
    Done,
    /// Failed in a way worth retrying: observed again at the next check.
    Retry(String),
    /// Refused: reported Unprotected with AWS's reason.
    Refused(String),
}

/// Judges AWS's answer to `send`: Ok, or Err((retryable, message)).
pub fn judge(s: &Standby, send: &Request, answer: Result<(), (bool, String)>) -> Answer {
    match answer {
        Ok(()) => Answer::Done,
        Err((_, message)) if send.resend && already_done(&send.call, &message) => Answer::Done,
        Err((retryable, message)) => Answer::failed(
            retryable,
            format!("{} in {}: {message}", s.instance, s.region),
        ),
    }
}

impl Answer {
    /// A failure before or of the call.
    pub fn failed(retryable: bool, message: String) -> Self {
        if retryable {
            Answer::Retry(message)
        } else {
            Answer::Refused(message)
        }
    }
}

/// Puts an answer on the record it was sent for.
fn apply(record: &mut Reprotection, answer: &Answer) {
    match answer {
        Answer::Done => record.requested = true,
        Answer::Retry(message) => {
            record.message = Some(format!("{message}; observed again at the next check"))
        }
        Answer::Refused(message) => record.message = Some(message.clone()),
    }
}

#[cfg(test)]
mod tests;

/// An Aurora standby's protection: its member cluster is a secondary (not the writer) of
/// the global cluster, which has a writer in the active region. After a switchover the old
/// primary is one at once; after an unplanned failover AWS re-adds it when its region
/// recovers, and until then it protects nothing.
pub fn aurora_protection(
    observed: Option<&crate::engine::AuroraObservation>,
    global: &str,
    member: &str,
    member_aws_region: &str,
    active_aws_region: &str,
    lag_known: bool,
) -> (&'static str, Option<String>) {
    let Some(obs) = observed else {
        return (
            "Unprotected",
            Some(format!("global cluster {global} not found")),
        );
    };
    let is_member = |arn: &str| crate::engine::arn_names(arn, member_aws_region, "cluster", member);
    let writer_active = obs
        .writer_arn
        .as_deref()
        .is_some_and(|w| w.split(':').nth(3) == Some(active_aws_region));
    if obs.writer_arn.as_deref().is_some_and(is_member) {
        return (
            "Unprotected",
            Some(format!("{member} is still the writer of {global}")),
        );
    }
    if !obs.member_arns.iter().any(|a| is_member(a)) {
        return (
            "Unprotected",
            Some(format!(
                "{member} is not a secondary of {global}; after an unplanned failover AWS \
                 adds the old primary back as a secondary once its region recovers"
            )),
        );
    }
    if !writer_active {
        return (
            "Unprotected",
            Some(format!("{global} has no writer in the active region")),
        );
    }
    if lag_known {
        ("Protected", None)
    } else {
        (
            "Reprotecting",
            Some(format!(
                "{member} is a secondary of {global}; its lag is not known yet"
            )),
        )
    }
}
