//! Finds the snapshot AWS takes of an old Aurora primary's volume after an Unplanned
//! failover (I/O glue for `engine::old_volume`), run by the plan check.

use futures::future::join_all;
use kube::runtime::events::EventType;
use std::collections::HashMap;
use std::time::SystemTime;
use tracing::{debug, warn};

use crate::api::{DisasterRecoveryPlan, OldVolumeSnapshot};
use crate::aws::AwsErrorKind;
use crate::context::Context;
use crate::engine::old_volume::{Lookup, lookup, pick};

/// The old-volume snapshot of each Aurora standby that has one, per (database, region):
/// kept from the last check, or found now (with a Warning Event, once; a restart between
/// the Event and the status write may repeat it). A region that does not answer is looked
/// at again at the next check.
pub async fn snapshots(
    ctx: &Context,
    plan: &DisasterRecoveryPlan,
) -> HashMap<(String, String), OldVolumeSnapshot> {
    let status = plan.status.clone().unwrap_or_default();
    let limit = ctx.config.member_timeout;
    let now = SystemTime::now();
    let looks = plan.spec.databases.iter().flat_map(|db| {
        let status = &status;
        plan.spec.regions.iter().filter_map(move |region| {
            db.aurora_global.as_ref()?;
            let member = crate::engine::member(db, &region.name)?;
            // DescribeDBClusterSnapshots takes the identifier; the call is regional.
            let cluster = member.rsplit(':').next().unwrap_or(member).to_string();
            let key = (db.name.clone(), region.name.clone());
            let aws_region = region.aws_region.clone();
            let Lookup { keep, look } = lookup(status, &db.name, &region.name, now);
            Some(async move {
                let Some((failover, since)) = look else {
                    return Some((key, keep?, false));
                };
                let described =
                    tokio::time::timeout(limit, ctx.aws.cluster_snapshots(&aws_region, &cluster))
                        .await;
                let snapshots = match described {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        if e.kind == AwsErrorKind::Unreachable {
                            debug!(%cluster, error = %e, "old-volume snapshot not looked up");
                        } else {
                            warn!(%cluster, error = %e, "old-volume snapshot not looked up; looking again at the next check");
                        }
                        return Some((key, keep?, false));
                    }
                    Err(_) => return Some((key, keep?, false)),
                };
                let Some(found) = pick(&snapshots, &cluster, since) else {
                    return Some((key, keep?, false));
                };
                Some((
                    key,
                    OldVolumeSnapshot {
                        identifier: found.identifier.clone(),
                        aws_region,
                        cluster,
                        failover,
                        created_at: found.created.map(crate::engine::kube_time),
                    },
                    true,
                ))
            })
        })
    });
    let mut out = HashMap::new();
    for (key, snapshot, new) in join_all(looks).await.into_iter().flatten() {
        if new {
            let note = format!(
                "{}: AWS kept the old primary's volume of {} as snapshot {} in {}. It holds \
                 the writes failover {} lost. It is a system snapshot that AWS deletes with \
                 the cluster's backup retention: copy it to a manual snapshot to keep it.",
                key.0,
                snapshot.cluster,
                snapshot.identifier,
                snapshot.aws_region,
                snapshot.failover
            );
            ctx.publish(
                plan,
                EventType::Warning,
                "OldVolumeSnapshot",
                "Reprotect",
                note,
            )
            .await;
        }
        out.insert(key, snapshot);
    }
    out
}
