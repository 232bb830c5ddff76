//! Preflight of the AWS Secrets Manager secrets a plan lists: the target region must hold
//! the secret, as a replica in sync with its primary (or as the primary itself). An
//! application that reads its secret in its own region fails in the standby on "secret
//! not found", or worse starts with a stale copy, when replication was never set up or
//! failed (a secret of that name already existed there).

/// A secret as DescribeSecret shows it in one region. Never its value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretSeen {
    /// Set on a replica: the AWS region of its primary (AWS sets it on a primary too, to
    /// its own region; the reader leaves that out).
    pub primary_region: Option<String>,
    /// On a primary: its replicas, each (AWS region, status, status message).
    pub replication: Vec<(String, String, Option<String>)>,
    /// Scheduled for deletion: reads of its value fail.
    pub deleted: bool,
}

/// What the check of one secret needs read next, or its verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ready,
    /// A problem to report, as a sentence.
    Problem(String),
    /// Read the secret in this AWS region (its primary, or the source region) and judge
    /// again with what it shows.
    Ask(String),
}

/// "Failed (message)".
fn status_of(status: &str, message: Option<&str>) -> String {
    match message {
        Some(m) => format!("{status} ({m})"),
        None => status.to_string(),
    }
}

/// Judges `secret` as seen in the target AWS region (`in_target`; None: not there), with
/// `other` the secret as seen in the region `Ask`ed for (None before it was read; Some(None)
/// when it is not there). `source` is the active region's AWS region. `unplanned`: the
/// failover leaves a region that may be lost, where AWS's advice is to promote the replica
/// to a standalone secret, so a standalone copy in the target is taken as it is. When the
/// region asked for does not answer in an Unplanned failover, the caller takes the copy
/// in the target as it is too.
pub fn judge(
    secret: &str,
    target: &str,
    source: &str,
    unplanned: bool,
    in_target: Option<&SecretSeen>,
    other: Option<Option<&SecretSeen>>,
) -> Verdict {
    let Some(t) = in_target.filter(|t| !t.deleted) else {
        let why = match in_target {
            Some(_) => "is scheduled for deletion",
            None => "has no replica",
        };
        return Verdict::Problem(format!("Secrets Manager secret {secret} {why} in {target}"));
    };
    match (&t.primary_region, other) {
        // A replica: its primary says whether it is in sync.
        (Some(primary), None) => Verdict::Ask(primary.clone()),
        (Some(primary), Some(None)) => Verdict::Problem(format!(
            "Secrets Manager secret {secret} in {target} is a replica of {primary}, where it \
             is not found"
        )),
        (Some(primary), Some(Some(p))) => {
            match p.replication.iter().find(|(region, _, _)| region == target) {
                Some((_, status, _)) if status == "InSync" => Verdict::Ready,
                Some((_, status, message)) => Verdict::Problem(format!(
                    "Secrets Manager secret {secret}: its replica in {target} is {}",
                    status_of(status, message.as_deref())
                )),
                None => Verdict::Problem(format!(
                    "Secrets Manager secret {secret}: {primary} does not list a replica in \
                     {target}"
                )),
            }
        }
        // The primary itself, replicating elsewhere; or a promoted replica, standalone.
        (None, _) if !t.replication.is_empty() || unplanned => Verdict::Ready,
        // A standalone secret: fine only if the source's copy is a replica of it.
        (None, None) if source != target => Verdict::Ask(source.to_string()),
        (None, None) => Verdict::Ready,
        (None, Some(Some(s))) if s.primary_region.as_deref() == Some(target) => Verdict::Ready,
        (None, Some(None)) => Verdict::Problem(format!(
            "Secrets Manager secret {secret} in {target} is a standalone secret, and {source} \
             has none of that name to replicate"
        )),
        (None, Some(Some(s))) => {
            let failed = s
                .replication
                .iter()
                .find(|(region, _, _)| region == target)
                .map(|(_, status, message)| {
                    format!(
                        "; replication from {source} is {}",
                        status_of(status, message.as_deref())
                    )
                })
                .unwrap_or_default();
            Verdict::Problem(format!(
                "Secrets Manager secret {secret} in {target} is a separate secret, not a \
                 replica of the one in {source}{failed}"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "us-west-2";
    const S: &str = "us-east-1";

    fn replica_of(primary: &str) -> SecretSeen {
        SecretSeen {
            primary_region: Some(primary.into()),
            ..Default::default()
        }
    }

    fn primary(replicas: &[(&str, &str, Option<&str>)]) -> SecretSeen {
        SecretSeen {
            primary_region: None,
            deleted: false,
            replication: replicas
                .iter()
                .map(|(r, s, m)| (r.to_string(), s.to_string(), m.map(str::to_string)))
                .collect(),
        }
    }

    #[test]
    fn a_replica_counts_only_when_its_primary_says_it_is_in_sync() {
        let replica = replica_of(S);
        assert_eq!(
            judge("db", T, S, false, None, None),
            Verdict::Problem("Secrets Manager secret db has no replica in us-west-2".into())
        );
        assert_eq!(
            judge("db", T, S, false, Some(&replica), None),
            Verdict::Ask(S.into())
        );
        let in_sync = primary(&[(T, "InSync", Some("Replication succeeded"))]);
        assert_eq!(
            judge("db", T, S, false, Some(&replica), Some(Some(&in_sync))),
            Verdict::Ready
        );
        let failing = primary(&[(T, "InProgress", None)]);
        assert_eq!(
            judge("db", T, S, false, Some(&replica), Some(Some(&failing))),
            Verdict::Problem(
                "Secrets Manager secret db: its replica in us-west-2 is InProgress".into()
            )
        );
        assert!(matches!(
            judge("db", T, S, false, Some(&replica), Some(Some(&primary(&[])))),
            Verdict::Problem(m) if m.contains("does not list a replica")
        ));
        assert!(matches!(
            judge("db", T, S, false, Some(&replica), Some(None)),
            Verdict::Problem(m) if m.contains("where it is not found")
        ));
    }

    #[test]
    fn a_standalone_secret_in_the_target_is_no_replica_unless_the_source_replicates_it() {
        let standalone = primary(&[]);
        assert_eq!(
            judge("k", T, S, false, Some(&standalone), None),
            Verdict::Ask(S.into())
        );
        // Failing back: the target holds the primary, the source a replica of it.
        assert_eq!(
            judge(
                "k",
                T,
                S,
                false,
                Some(&standalone),
                Some(Some(&replica_of(T)))
            ),
            Verdict::Ready
        );
        // Two secrets of one name: replication from the source failed on it.
        let source = primary(&[(T, "Failed", Some("Secret name already exists"))]);
        assert_eq!(
            judge("k", T, S, false, Some(&standalone), Some(Some(&source))),
            Verdict::Problem(
                "Secrets Manager secret k in us-west-2 is a separate secret, not a replica of \
                 the one in us-east-1; replication from us-east-1 is Failed (Secret name \
                 already exists)"
                    .into()
            )
        );
        // Unplanned: a standalone copy is a promoted replica (AWS's advice when the
        // primary's region is lost), taken as it is.
        assert_eq!(
            judge("k", T, S, true, Some(&standalone), None),
            Verdict::Ready
        );
        assert!(matches!(
            judge("k", T, S, false, Some(&standalone), Some(None)),
            Verdict::Problem(m) if m.contains("us-east-1 has none of that name")
        ));
        // Scheduled for deletion is as good as missing, whatever the failover.
        let deleted = SecretSeen {
            deleted: true,
            ..replica_of(S)
        };
        assert_eq!(
            judge("k", T, S, true, Some(&deleted), None),
            Verdict::Problem(
                "Secrets Manager secret k is scheduled for deletion in us-west-2".into()
            )
        );
        // The target is the primary, replicating: nothing to ask.
        assert_eq!(
            judge(
                "k",
                T,
                S,
                false,
                Some(&primary(&[(S, "InSync", None)])),
                None
            ),
            Verdict::Ready
        );
    }
}
