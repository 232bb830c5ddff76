//! The old Aurora primary's volume after an Unplanned failover. FailoverGlobalCluster
//! (AllowDataLoss) leaves the old primary out of the global cluster; when its region
//! recovers, AWS snapshots the old volume (`rds:unplanned-global-failover-<cluster>-<time>`)
//! and then re-adds the cluster as a secondary on a new volume. That snapshot is the only
//! copy of the writes the failover lost, and AWS deletes it with the cluster's backup
//! retention, so the plan names it until the next failover.

use std::time::SystemTime;

use crate::api::{DisasterRecoveryPlanStatus, OldVolumeSnapshot};
use crate::engine::ClusterSnapshot;

/// How AWS names the snapshot (followed by the cluster identifier, a dash and a time).
pub const PREFIX: &str = "rds:unplanned-global-failover-";

/// What the plan check does about one Aurora standby's old-volume snapshot.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    /// Nothing: the last failover was not an Unplanned one that left this region, or the
    /// member is protected again and no snapshot was found.
    Nothing,
    /// Already found after the last failover: keep reporting it.
    Keep(OldVolumeSnapshot),
    /// Look for a snapshot of the member taken after `since`, by `failover`.
    Look { failover: String, since: SystemTime },
}

/// What to do about the old-volume snapshot of `database`'s member in `region`, from the
/// plan's status before this check.
pub fn lookup(status: &DisasterRecoveryPlanStatus, database: &str, region: &str) -> Lookup {
    let Some(last) = &status.last_failover else {
        return Lookup::Nothing;
    };
    let left_region = status.previous_active_region.as_deref() == Some(region)
        && status.active_region.as_deref() == Some(last.target_region.as_str());
    if last.mode.as_deref() != Some("Unplanned")
        || last.phase.as_deref() != Some("Succeeded")
        || !left_region
    {
        return Lookup::Nothing;
    }
    let previous = status
        .replication
        .iter()
        .find(|r| r.database == database && r.region == region);
    if let Some(kept) = previous
        .and_then(|r| r.old_volume_snapshot.as_ref())
        .filter(|s| s.failover == last.name)
    {
        return Lookup::Keep(kept.clone());
    }
    // AWS takes the snapshot before it re-adds the member: once the member is protected
    // again (and the check that saw it so looked once more), there is nothing to wait for.
    if previous.and_then(|r| r.protection.as_deref()) == Some("Protected") {
        return Lookup::Nothing;
    }
    match &last.started_at {
        Some(t) => Lookup::Look {
            failover: last.name.clone(),
            since: SystemTime::from(t.0),
        },
        // A record from before Drover kept the start: no bound, so no guess.
        None => Lookup::Nothing,
    }
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
    use crate::api::{LastFailover, ReplicationStatus};
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn after_unplanned(mode: &str, phase: &str) -> DisasterRecoveryPlanStatus {
        DisasterRecoveryPlanStatus {
            active_region: Some("usw2".into()),
            previous_active_region: Some("use1".into()),
            last_failover: Some(LastFailover {
                name: "lost-use1".into(),
                target_region: "usw2".into(),
                phase: Some(phase.into()),
                mode: Some(mode.into()),
                started_at: Some(crate::engine::kube_time(at(0))),
            }),
            ..Default::default()
        }
    }

    fn entry(protection: &str, kept: Option<&str>) -> ReplicationStatus {
        ReplicationStatus {
            database: "catalog".into(),
            region: "use1".into(),
            protection: Some(protection.into()),
            old_volume_snapshot: kept.map(|f| OldVolumeSnapshot {
                identifier: "rds:unplanned-global-failover-catalog-use1-x".into(),
                failover: f.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn looks_only_in_the_region_an_unplanned_failover_left() {
        let status = after_unplanned("Unplanned", "Succeeded");
        assert_eq!(
            lookup(&status, "catalog", "use1"),
            Lookup::Look {
                failover: "lost-use1".into(),
                since: at(0)
            }
        );
        assert_eq!(lookup(&status, "catalog", "euw1"), Lookup::Nothing);
        for (mode, phase) in [("Planned", "Succeeded"), ("Unplanned", "Failed")] {
            let status = after_unplanned(mode, phase);
            assert_eq!(
                lookup(&status, "catalog", "use1"),
                Lookup::Nothing,
                "{mode} {phase}"
            );
        }
        let mut moved_on = after_unplanned("Unplanned", "Succeeded");
        moved_on.active_region = Some("euw1".into());
        assert_eq!(lookup(&moved_on, "catalog", "use1"), Lookup::Nothing);
        let mut no_start = after_unplanned("Unplanned", "Succeeded");
        if let Some(l) = no_start.last_failover.as_mut() {
            l.started_at = None;
        }
        assert_eq!(lookup(&no_start, "catalog", "use1"), Lookup::Nothing);
    }

    #[test]
    fn keeps_what_it_found_for_the_last_failover_and_stops_once_protected() {
        let mut status = after_unplanned("Unplanned", "Succeeded");
        status.replication = vec![entry("Protected", Some("lost-use1"))];
        assert!(matches!(
            lookup(&status, "catalog", "use1"),
            Lookup::Keep(s) if s.failover == "lost-use1"
        ));
        // Found after an earlier failover: looked for again.
        status.replication = vec![entry("Unprotected", Some("older"))];
        assert!(matches!(
            lookup(&status, "catalog", "use1"),
            Lookup::Look { .. }
        ));
        status.replication = vec![entry("Protected", None)];
        assert_eq!(lookup(&status, "catalog", "use1"), Lookup::Nothing);
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
