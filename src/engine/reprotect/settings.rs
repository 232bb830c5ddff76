//! The old standby's settings in re-protection by Recreate, as pure decisions: they are
//! read and recorded before the old instance is moved aside (a crash after a delete must
//! not lose them), and a replica is created only with them. Without them Drover creates
//! nothing: a replica with default settings lands in the region's default VPC, with the
//! default security group and parameter group, which is not a standby anyone can use.

use crate::api::{ReplicaSettings, Reprotection};

use super::{Call, Next, Round, Standby};

/// Per standby of `round` (in the order of `round.decided`), the instance whose settings
/// must be read before its decision can go ahead (`to_read`).
pub fn reads(round: &Round, records: &[Reprotection]) -> Vec<Option<String>> {
    round
        .decided
        .iter()
        .map(|(s, n)| to_read(&inherit(prior(records, s), n.clone())))
        .collect()
}

fn prior<'a>(records: &'a [Reprotection], s: &Standby) -> Option<&'a Reprotection> {
    records
        .iter()
        .find(|r| r.database == s.database && r.region == s.region)
}

/// `decided` (made as if no record were there) with what a refused record keeps: its
/// settings for a replica now due (the old instance did move, by an earlier send), and
/// the record itself while the standby is not protected (so they are not lost).
fn inherit(prior: Option<&Reprotection>, mut decided: Next) -> Next {
    let Some(refused) = prior.filter(|r| r.refused && r.settings.is_some()) else {
        return decided;
    };
    match decided.record.as_mut() {
        // Still waiting after the refusal: the refused record itself.
        Some(record) if record.refused => {}
        Some(record) => {
            // The wait after another refusal doubles.
            record.refusals = refused.refusals;
            if matches!(decided.call, Some(Call::CreateReplica)) {
                record.settings = refused.settings.clone();
                record.renamed_to = record.renamed_to.take().or(refused.renamed_to.clone());
                record.final_snapshot = record
                    .final_snapshot
                    .take()
                    .or(refused.final_snapshot.clone());
            }
        }
        None => decided = keep_refused(refused, decided),
    }
    decided
}

/// `decided` without a record of its own: the refused record is kept while the standby is
/// not protected, with its settings, where the old instance went, and its refusal count
/// (a failed settings read must not reset the wait).
fn keep_refused(refused: &Reprotection, mut decided: Next) -> Next {
    if decided.record.is_none() && decided.protection != "Protected" {
        let mut kept = refused.clone();
        kept.message = decided.message.clone();
        decided.record = Some(kept);
    }
    decided
}

/// `round` with the settings read (`read[i]`: what reading `reads(&round)[i]` gave, None
/// when nothing was read), each decision completed (`complete`) and the round assembled
/// again: a move aside is recorded with the old instance's settings or not made, and a
/// replica is requested only with recorded settings. `records` are the plan's, as the
/// round was decided on.
pub fn settle(
    round: Round,
    records: &[Reprotection],
    read: Vec<Option<Result<Option<ReplicaSettings>, String>>>,
) -> Round {
    let read = read.into_iter().chain(std::iter::repeat_with(|| None));
    let decided = round
        .decided
        .into_iter()
        .zip(read)
        .map(|((s, n), read)| {
            let prior = prior(records, &s);
            let n = inherit(prior, n);
            let n = complete(&s, prior.filter(|r| !r.refused), n, read);
            // A fresh attempt after a refusal that could not go ahead (its settings could
            // not be read, AWS would refuse them): the refused record stays.
            let n = match prior.filter(|r| r.refused && r.settings.is_some()) {
                Some(refused) => keep_refused(refused, n),
                None => n,
            };
            (s, n)
        })
        .collect();
    Round::assemble(decided, records)
}

/// Whether AWS takes DBParameterGroupName for a cross-Region read replica of `engine`:
/// MySQL, Oracle and Db2 only. PostgreSQL, MariaDB, SQL Server and RDS Custom replicas
/// get their engine's default parameter group in the other region (AWS refuses one with
/// InvalidParameterCombination). Unknown engine: not sent.
pub fn parameter_group_supported(engine: Option<&str>) -> bool {
    engine.is_some_and(|e| e == "mysql" || e.starts_with("oracle-") || e.starts_with("db2-"))
}

/// What CreateDBInstanceReadReplica gets for the replica of `s`: the recorded settings,
/// without the parameter group where AWS would refuse it.
pub fn to_send(s: &Standby, st: &ReplicaSettings) -> ReplicaSettings {
    let mut out = st.clone();
    let cross_region = s.aws_region != s.primary_aws_region;
    if cross_region && !parameter_group_supported(st.engine.as_deref()) {
        out.db_parameter_group_name = None;
    }
    out
}

/// What to tell about a replica of `s` made with `st` whose parameter group AWS does not
/// take at creation (a cross-Region replica of PostgreSQL, MariaDB…): it gets its engine's
/// default, and the old standby's group must be set afterwards. None when nothing is
/// left to do (the group was sent, or was the engine's default).
pub fn unsent_parameter_group(s: &Standby, st: &ReplicaSettings) -> Option<String> {
    let group = st.db_parameter_group_name.as_deref()?;
    if group.starts_with("default.") || to_send(s, st).db_parameter_group_name.is_some() {
        return None;
    }
    Some(format!(
        "AWS gives a cross-region {engine} read replica its engine's default parameter \
         group: set {group}, the old standby's, on {id} (aws rds modify-db-instance \
         --region {region} --db-instance-identifier {id} --db-parameter-group-name {group}, \
         then reboot it for static parameters)",
        engine = st.engine.as_deref().unwrap_or("unknown-engine"),
        id = s.instance,
        region = s.aws_region,
    ))
}

/// `message` with the parameter group note of `st`, if any.
fn with_note(s: &Standby, st: Option<&ReplicaSettings>, message: Option<String>) -> Option<String> {
    match st.and_then(|st| unsent_parameter_group(s, st)) {
        None => message,
        Some(note) => Some(match message {
            Some(m) => format!("{m}; {note}"),
            None => note,
        }),
    }
}

/// The instance whose settings `decided` needs read before it can go ahead, if any: the
/// standby itself before it is moved aside, or the renamed old instance when a replica is
/// due and the record has none (a record written before settings were recorded).
pub fn to_read(decided: &Next) -> Option<String> {
    let record = decided.record.as_ref()?;
    if record.settings.is_some() {
        return None;
    }
    match decided.call.as_ref()? {
        Call::Rename { .. } | Call::Delete { .. } => Some(record.instance.clone()),
        Call::CreateReplica => record.renamed_to.clone(),
    }
}

/// `decided` with the settings read (`read`: what reading `to_read(&decided)` gave; None
/// when nothing was read). A move aside is recorded with the settings, or not made; a
/// replica is created with the recorded settings, or not at all. `prior` is the record
/// `decided` was made from.
pub fn complete(
    s: &Standby,
    prior: Option<&Reprotection>,
    mut decided: Next,
    read: Option<Result<Option<ReplicaSettings>, String>>,
) -> Next {
    let Some(call) = decided.call.clone() else {
        // Protected again: the last word on a re-created standby (its Event) says what
        // AWS did not set.
        if decided.protection == "Protected" {
            let st = prior.and_then(|p| p.settings.as_ref());
            decided.message = with_note(s, st, decided.message.take());
        }
        return decided;
    };
    let Some(record) = decided.record.as_mut() else {
        return decided;
    };
    let id = &s.instance;
    if record.settings.is_none() {
        match read {
            Some(Ok(Some(settings))) => record.settings = Some(settings),
            Some(Ok(None)) | Some(Err(_)) | None => {
                let why = match (read, &call) {
                    (Some(Err(e)), _) => format!("could not read its settings: {e}"),
                    (_, Call::CreateReplica) => match &record.renamed_to {
                        Some(old) => format!("{old}, the old instance, is gone too"),
                        None => "the old instance was gone before re-protection began".into(),
                    },
                    _ => format!("{id} disappeared while it was read"),
                };
                let message = match call {
                    Call::CreateReplica => missing(s, &why),
                    _ => format!("{id} in {} is not moved aside: {why}", s.region),
                };
                return refuse(decided, prior.is_some(), message);
            }
        }
    }
    if matches!(call, Call::CreateReplica)
        && let Some(why) = record.settings.as_ref().and_then(|st| cannot_create(s, st))
    {
        return refuse(decided, prior.is_some(), why);
    }
    if matches!(call, Call::CreateReplica) {
        let message = with_note(s, record.settings.as_ref(), record.message.take());
        record.message = message.clone();
        decided.message = message;
    }
    decided
}

/// No call now; the standby is Unprotected. A record under way is kept (it says where the
/// old instance went); a new one is not written, so nothing claims an intent not acted on.
fn refuse(mut decided: Next, under_way: bool, message: String) -> Next {
    decided.call = None;
    decided.protection = "Unprotected";
    decided.message = Some(message.clone());
    match decided.record.as_mut() {
        Some(r) if under_way => r.message = Some(message),
        _ => decided.record = None,
    }
    decided
}

fn missing(s: &Standby, why: &str) -> String {
    format!(
        "{id} in {region} is missing and Drover does not know how it was set up ({why}): it \
         creates no replica with default settings (default VPC, security group and parameter \
         group). Create {id} as a read replica of {primary} in {primary_region} with its DB \
         subnet group, VPC security groups, parameter group and, if encrypted, a KMS key of \
         {aws_region}; Drover then watches it",
        id = s.instance,
        region = s.region,
        primary = s.primary,
        primary_region = s.primary_aws_region,
        aws_region = s.aws_region,
    )
}

/// Why AWS would refuse the replica with these settings, said before anything is sent.
fn cannot_create(s: &Standby, st: &ReplicaSettings) -> Option<String> {
    if !st.storage_encrypted {
        return None;
    }
    let id = &s.instance;
    if st.kms_key_id.is_none() {
        return Some(format!(
            "{id} was encrypted, but its KMS key is not known; a cross-region replica of an \
             encrypted source needs a key of {}",
            s.aws_region
        ));
    }
    // GovCloud and China need a presigned URL for an encrypted cross-region replica; the
    // Rust SDK has no SourceRegion to generate it (commercial regions ignore it).
    let partitioned = ["us-gov-", "cn-"]
        .iter()
        .any(|p| s.aws_region.starts_with(p));
    partitioned.then(|| {
        format!(
            "{id} is encrypted, and an encrypted cross-region replica in {} needs a presigned \
             URL that Drover cannot make: create it by hand (aws rds \
             create-db-instance-read-replica --source-region {})",
            s.aws_region, s.primary_aws_region
        )
    })
}

#[cfg(test)]
mod tests;
