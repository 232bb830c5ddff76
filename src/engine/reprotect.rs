//! Re-protection of RDS standbys after a failover, as pure decisions: given one standby's
//! progress record and what was observed, what to record and which call to make.
//!
//! Recreate moves the old instance aside (rename, or delete with a final snapshot), creates
//! a cross-region read replica of the new primary under the plan's identifier, and waits
//! until it replicates (a known lag). Every call is recorded as intent first; a record whose
//! call was not answered is observed before the call is sent again, and an answer that
//! shows the call already took effect is taken as done.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{OldInstanceAction, Reprotection, ReprotectionState};
use crate::engine::RdsObservation;

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
    /// None for a read replica: AWS refuses a final snapshot of one (its data is a copy).
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
    match (old_instance, obs.status.as_str()) {
        (OldInstanceAction::Rename, "available") => {
            let to = aside_name(id, "old", now);
            let mut record = fresh(s, now);
            record.renamed_to = Some(to.clone());
            Next::step(
                record,
                ReprotectionState::Renaming,
                Some(Call::Rename { to: to.clone() }),
                format!("renaming {id} to {to}"),
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
            // A replica (of an old primary) has no data of its own to keep.
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
