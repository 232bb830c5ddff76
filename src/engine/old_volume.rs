//! The old Aurora primary's volume after an Unplanned failover. FailoverGlobalCluster
//! (AllowDataLoss) leaves the old primary out of the global cluster; when its region
//! recovers, AWS snapshots the old volume (`rds:unplanned-global-failover-<cluster>-<time>`)
//! and then re-adds the cluster as a secondary on a new volume. That snapshot is the only
//! copy of the writes the failover lost, and AWS deletes it with the cluster's backup
//! retention, so the plan names it until a newer one is found.

use std::time::{Duration, SystemTime};

use crate::api::{DisasterRecoveryPlanStatus, OldVolumeSnapshot};
use crate::engine::ClusterSnapshot;

/// How AWS names the snapshot (followed by the cluster identifier, a dash and a time).
pub const PREFIX: &str = "rds:unplanned-global-failover-";

/// How long after an Unplanned failover Drover still looks for the snapshot once the old
/// primary is protected again. AWS takes it before the re-add, but a lookup can fail or
/// run before the snapshot is listed; looking again costs one describe per plan check.
pub const LOOK_AFTER_PROTECTED: Duration = Duration::from_secs(6 * 3600);

/// What the plan check does about one Aurora standby's old-volume snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lookup {
    /// The snapshot named so far (whatever failovers came since): it stays until a newer
    /// one is found, as it may hold the only copy of lost writes.
    pub keep: Option<OldVolumeSnapshot>,
    /// Look for a snapshot taken at or after `since`, for Failover `failover`.
    pub look: Option<(String, SystemTime)>,
}

/// What to do about the old-volume snapshot of `database`'s member in `region`, from the
/// plan's status before this check.
pub fn lookup(
    status: &DisasterRecoveryPlanStatus,
    database: &str,
    region: &str,
    now: SystemTime,
) -> Lookup {
    let previous = status
        .replication
        .iter()
        .find(|r| r.database == database && r.region == region);
    let keep = previous.and_then(|r| r.old_volume_snapshot.clone());
    let look = status.last_unplanned_move.as_ref().and_then(|moved| {
        // Only in the region the last Unplanned failover left, while it is not active again.
        if moved.from_region != region || status.active_region.as_deref() == Some(region) {
            return None;
        }
        if keep.as_ref().is_some_and(|k| k.failover == moved.name) {
            return None;
        }
        // A record from before Drover kept the start: no bound, so no guess.
        let since = SystemTime::from(moved.started_at.as_ref()?.0);
        // Protected since that failover (not a stale entry from before it), long enough.
        let protected_since_move = previous.is_some_and(|r| {
            r.protection.as_deref() == Some("Protected")
                && r.measured_at
                    .as_ref()
                    .is_some_and(|t| SystemTime::from(t.0) >= since)
        });
        let given_up = protected_since_move
            && now.duration_since(since).unwrap_or_default() >= LOOK_AFTER_PROTECTED;
        (!given_up).then(|| (moved.name.clone(), since))
    });
    Lookup { keep, look }
}

/// The newest of `snapshots` (described for `cluster`, an identifier or ARN) that AWS
/// took for an unplanned failover at or after `since`.
pub fn pick<'a>(
    snapshots: &'a [ClusterSnapshot],
    cluster: &str,
    since: SystemTime,
) -> Option<&'a ClusterSnapshot> {
    let id = cluster.rsplit(':').next().unwrap_or(cluster).to_lowercase();
    let prefix = format!("{PREFIX}{id}-");
    snapshots
        .iter()
        .filter(|s| s.identifier.to_lowercase().starts_with(&prefix))
        .filter(|s| s.created.is_some_and(|c| c >= since))
        .max_by_key(|s| s.created)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ReplicationStatus, UnplannedMove};
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn after_unplanned() -> DisasterRecoveryPlanStatus {
        DisasterRecoveryPlanStatus {
            active_region: Some("usw2".into()),
            previous_active_region: Some("use1".into()),
            last_unplanned_move: Some(UnplannedMove {
                name: "lost-use1".into(),
                from_region: "use1".into(),
                to_region: "usw2".into(),
                started_at: Some(crate::engine::kube_time(at(0))),
            }),
            ..Default::default()
        }
    }

    fn entry(protection: &str, measured: u64, kept: Option<&str>) -> ReplicationStatus {
        ReplicationStatus {
            database: "catalog".into(),
            region: "use1".into(),
            protection: Some(protection.into()),
            measured_at: Some(crate::engine::kube_time(at(measured))),
            old_volume_snapshot: kept.map(|f| OldVolumeSnapshot {
                identifier: "rds:unplanned-global-failover-catalog-use1-x".into(),
                failover: f.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn look(l: &Lookup) -> Option<&str> {
        l.look.as_ref().map(|(f, _)| f.as_str())
    }

    #[test]
    fn looks_only_in_the_region_an_unplanned_failover_left_while_it_is_not_active() {
        let status = after_unplanned();
        let found = lookup(&status, "catalog", "use1", at(60));
        assert_eq!(found.look, Some(("lost-use1".into(), at(0))));
        assert_eq!(found.keep, None);
        assert_eq!(
            lookup(&status, "catalog", "euw1", at(60)),
            Lookup::default()
        );
        let mut back = after_unplanned();
        back.active_region = Some("use1".into());
        assert_eq!(look(&lookup(&back, "catalog", "use1", at(60))), None);
        // A later failover that moved nothing unplanned (a DryRun, a Planned one to a
        // third region) does not stop the search.
        let mut later = after_unplanned();
        later.active_region = Some("euw1".into());
        later.previous_active_region = Some("usw2".into());
        assert_eq!(
            look(&lookup(&later, "catalog", "use1", at(60))),
            Some("lost-use1")
        );
        let mut no_start = after_unplanned();
        if let Some(m) = no_start.last_unplanned_move.as_mut() {
            m.started_at = None;
        }
        assert_eq!(look(&lookup(&no_start, "catalog", "use1", at(60))), None);
        assert_eq!(
            lookup(
                &DisasterRecoveryPlanStatus::default(),
                "catalog",
                "use1",
                at(60)
            ),
            Lookup::default()
        );
    }

    #[test]
    fn keeps_what_it_found_and_gives_up_only_long_after_protection_returned() {
        let mut status = after_unplanned();
        status.replication = vec![entry("Protected", 30, Some("lost-use1"))];
        let found = lookup(&status, "catalog", "use1", at(60));
        assert_eq!(found.look, None);
        assert_eq!(found.keep.map(|k| k.failover), Some("lost-use1".into()));
        // Found after an earlier failover: kept, and a newer one looked for.
        status.replication = vec![entry("Unprotected", 30, Some("older"))];
        let found = lookup(&status, "catalog", "use1", at(60));
        assert_eq!(look(&found), Some("lost-use1"));
        assert_eq!(found.keep.map(|k| k.failover), Some("older".into()));
        // Protected again: still looked for within LOOK_AFTER_PROTECTED of the failover.
        status.replication = vec![entry("Protected", 30, None)];
        assert_eq!(
            look(&lookup(&status, "catalog", "use1", at(60))),
            Some("lost-use1")
        );
        let late = at(0) + LOOK_AFTER_PROTECTED;
        assert_eq!(look(&lookup(&status, "catalog", "use1", late)), None);
        // A Protected entry measured before the failover is stale: it stops nothing.
        let mut stale = after_unplanned();
        if let Some(m) = stale.last_unplanned_move.as_mut() {
            m.started_at = Some(crate::engine::kube_time(at(100)));
        }
        stale.replication = vec![entry("Protected", 30, None)];
        let late = at(100) + LOOK_AFTER_PROTECTED;
        assert_eq!(
            look(&lookup(&stale, "catalog", "use1", late)),
            Some("lost-use1")
        );
    }

    #[test]
    fn picks_the_newest_snapshot_of_that_cluster_since_the_failover() {
        let snap = |id: &str, created: Option<SystemTime>| ClusterSnapshot {
            identifier: id.into(),
            created,
        };
        let snapshots = vec![
            snap("rds:catalog-use1-2027-01-01-00-00", Some(at(60))),
            snap(
                "rds:unplanned-global-failover-catalog-use1-old",
                Some(at(0) - Duration::from_secs(3600)),
            ),
            snap("rds:unplanned-global-failover-catalog-use1-a", Some(at(30))),
            snap("rds:unplanned-global-failover-catalog-use1-b", Some(at(50))),
            snap("rds:unplanned-global-failover-catalog-use1-c", None),
            snap("rds:unplanned-global-failover-orders-use1-d", Some(at(70))),
        ];
        // The describe names the cluster; the identifier is checked all the same.
        let arn = "arn:aws:rds:us-east-1:1:cluster:Catalog-USE1";
        assert_eq!(
            pick(&snapshots, arn, at(0)).map(|s| s.identifier.as_str()),
            Some("rds:unplanned-global-failover-catalog-use1-b")
        );
        assert_eq!(pick(&snapshots[..2], "catalog-use1", at(0)), None);
    }
}
