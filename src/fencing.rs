//! Pending fences (I/O glue): the plan status fields the failover field manager owns,
//! written with optimistic concurrency, and carrying out each pending fence once its region
//! answers. Decisions live in `engine::fence`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use crate::api::{
    DisasterRecoveryPlan, FenceResource, PendingFence, PendingFenceState, RdsFenceMethod,
    RunningJobs, WorkloadSpec,
};
use crate::clusters::{ClusterError, Clusters, KubeClusters};
use crate::context::Context;
use crate::engine::fence::{FenceStep, Observed, next_step};
use crate::leadership::LeaderClusters;
use crate::store::update_failover_fields;

/// The workload a pending fence names, as a plan workload that must end at 0. A returning
/// region's CronJob Jobs ran against a deposed database: they are stopped, not waited for.
fn workload_of(entry: &PendingFence) -> WorkloadSpec {
    WorkloadSpec {
        kind: entry.kind.clone().unwrap_or_default(),
        api_version: entry.api_version.clone(),
        namespace: entry.namespace.clone().unwrap_or_default(),
        name: entry.name.clone(),
        active_replicas: 0,
        standby_replicas: 0,
        singleton: false,
        writer: true,
        running_jobs: Some(RunningJobs::Stop),
    }
}

fn from_cluster(e: ClusterError) -> Observed {
    if e.is_retryable() {
        Observed::Unreachable(e.to_string())
    } else {
        Observed::Error(e.to_string())
    }
}

fn from_aws(e: crate::aws::AwsError) -> Observed {
    if e.is_retryable() {
        Observed::Unreachable(format!("AWS: {e}"))
    } else {
        Observed::Error(format!("AWS: {e}"))
    }
}

/// Carries out a plan's pending fences; `carry_out` is the entry point.
struct Fencer<'a> {
    ctx: &'a Context,
    plan: &'a DisasterRecoveryPlan,
    api: Api<DisasterRecoveryPlan>,
    clusters: LeaderClusters<KubeClusters>,
}

impl Fencer<'_> {
    fn aws_region(&self, region: &str) -> String {
        self.plan
            .spec
            .aws_region_of(region)
            .unwrap_or(region)
            .to_string()
    }

    /// One bounded attempt: a lost region must not hold up the plan check.
    async fn bounded<T>(&self, call: impl std::future::Future<Output = T>) -> Result<T, String> {
        let limit = self.ctx.config.member_timeout * 2;
        tokio::time::timeout(limit, call)
            .await
            .map_err(|_| format!("no answer within {}s", limit.as_secs()))
    }

    async fn observe(&self, entry: &PendingFence) -> Observed {
        match entry.resource {
            FenceResource::Workload => {
                let w = workload_of(entry);
                let state = match self
                    .bounded(self.clusters.workload(&entry.region, &w))
                    .await
                {
                    Err(e) => {
                        return Observed::Unreachable(format!("region {}: {e}", entry.region));
                    }
                    Ok(Err(e)) => return from_cluster(e),
                    Ok(Ok(None)) => return Observed::WorkloadMissing,
                    Ok(Ok(Some(s))) => s,
                };
                // status.replicas leaves out Terminating pods, which still run.
                let pods = match &state.selector {
                    Some(selector) => {
                        match self
                            .bounded(self.clusters.pods(&entry.region, &w, selector))
                            .await
                        {
                            Err(e) => {
                                return Observed::Unreachable(format!(
                                    "region {}: {e}",
                                    entry.region
                                ));
                            }
                            Ok(Err(e)) => return from_cluster(e),
                            Ok(Ok(n)) => n,
                        }
                    }
                    None => state.current_replicas.max(0) as usize,
                };
                Observed::Workload {
                    replicas: state.replicas,
                    observed_current: state.observed_current,
                    pods,
                    jobs_to_stop: state.jobs_to_stop,
                }
            }
            FenceResource::RdsInstance => {
                let region = self.aws_region(&entry.region);
                match self
                    .bounded(self.ctx.aws.describe_instance(&region, &entry.name))
                    .await
                {
                    Err(e) => Observed::Unreachable(format!("AWS {region}: {e}")),
                    Ok(Err(e)) => from_aws(e),
                    Ok(Ok(obs)) => Observed::Rds(obs),
                }
            }
        }
    }

    /// Sends the fencing call. Ok: answered. Err((retryable, message)).
    async fn act(&self, entry: &PendingFence) -> Result<(), (bool, String)> {
        match entry.resource {
            FenceResource::Workload => {
                let w = workload_of(entry);
                match self
                    .bounded(self.clusters.scale(&entry.region, &w, 0, false))
                    .await
                {
                    Err(e) => Err((true, format!("region {}: {e}", entry.region))),
                    Ok(Ok(0)) => Ok(()),
                    // A webhook or policy kept the workload running: not fenced, and said.
                    Ok(Ok(kept)) => Err((
                        false,
                        format!(
                            "region {}: asked for 0 replicas, the API server kept {kept}",
                            entry.region
                        ),
                    )),
                    Ok(Err(e)) => Err((e.is_retryable(), e.to_string())),
                }
            }
            FenceResource::RdsInstance => match self.plan.spec.rds_fence_method() {
                RdsFenceMethod::Stop => {
                    let region = self.aws_region(&entry.region);
                    match self
                        .bounded(self.ctx.aws.stop_db_instance(&region, &entry.name))
                        .await
                    {
                        Err(e) => Err((true, format!("AWS {region}: {e}"))),
                        Ok(r) => r.map_err(|e| (e.is_retryable(), format!("AWS: {e}"))),
                    }
                }
                RdsFenceMethod::DenySecurityGroup => Err((
                    false,
                    "spec.fencing.rdsMethod DenySecurityGroup is not implemented yet".into(),
                )),
            },
        }
    }

    /// Writes the entries' new states (matched by target) and removes `done`, against the
    /// fresh plan. Entries added meanwhile are kept.
    async fn write(
        &self,
        updated: &[PendingFence],
        done: &[PendingFence],
    ) -> Result<Vec<PendingFence>, kube::Error> {
        let fields = update_failover_fields(&self.api, &self.plan.name_any(), |f| {
            f.pending_fences
                .retain(|e| !done.iter().any(|d| d.same_target(e)));
            for e in &mut f.pending_fences {
                if let Some(u) = updated.iter().find(|u| u.same_target(e)) {
                    *e = u.clone();
                }
            }
        })
        .await?;
        Ok(fields.pending_fences)
    }

    async fn event(&self, type_: EventType, reason: &str, note: String) {
        self.ctx
            .publish(self.plan, type_, reason, "Fence", note)
            .await;
    }
}

/// Carries out the plan's pending fences as far as their regions allow, and returns the
/// entries still outstanding. Every mutating call is recorded as intent (`Fencing`) first;
/// a later check observes before acting again. Events: a Normal one per fence carried out,
/// a Warning when an entry's region stops answering or a call is refused.
pub async fn carry_out(ctx: &Context, plan: &DisasterRecoveryPlan, ns: &str) -> Vec<PendingFence> {
    let cached = plan
        .status
        .as_ref()
        .map(|s| s.pending_fences.clone())
        .unwrap_or_default();
    if cached.is_empty() {
        return cached;
    }
    let fencer = Fencer {
        ctx,
        plan,
        api: Api::namespaced(ctx.client.clone(), ns),
        clusters: LeaderClusters {
            inner: ctx.member_clusters(&plan.spec, ns),
            leadership: ctx.leadership.clone(),
        },
    };
    match fence_round(&fencer, &cached).await {
        Ok(left) => left,
        Err(e) => {
            warn!(plan = %plan.name_any(), error = %crate::error::kube_message(&e), "could not record fencing progress; retrying at the next check");
            cached
        }
    }
}

async fn fence_round(
    fencer: &Fencer<'_>,
    entries: &[PendingFence],
) -> Result<Vec<PendingFence>, kube::Error> {
    let active = crate::engine::active_region(fencer.plan);
    let observed = join_all(entries.iter().map(|e| fencer.observe(e))).await;
    let mut done = Vec::new();
    let mut updated = Vec::new();
    let mut to_act = Vec::new();
    let mut unreachable: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (entry, obs) in entries.iter().zip(&observed) {
        let mut next = entry.clone();
        match next_step(entry.state, obs) {
            // Never fence the region that serves; admission keeps pending fences out of it.
            _ if active.as_deref() == Some(entry.region.as_str()) => {
                next.message = Some(format!("{} is the active region; not fenced", entry.region));
            }
            FenceStep::Done(why) => {
                next.message = Some(why);
                done.push(next);
                continue;
            }
            FenceStep::Act => {
                next.state = PendingFenceState::Fencing;
                next.reachable = Some(true);
                next.message = Some("fencing".into());
                to_act.push(next.clone());
            }
            FenceStep::Wait(why) => {
                next.reachable = Some(true);
                next.message = Some(why);
            }
            FenceStep::Unreachable(why) => {
                if entry.reachable != Some(false) {
                    unreachable
                        .entry(entry.region.clone())
                        .or_default()
                        .push(entry.describe());
                }
                next.reachable = Some(false);
                next.message = Some(why);
            }
        }
        if next != *entry {
            updated.push(next);
        }
    }
    let mut left = entries.to_vec();
    if !updated.is_empty() || !done.is_empty() {
        // The intent to act is recorded before any call is made.
        left = fencer.write(&updated, &done).await?;
    }
    for (region, names) in unreachable {
        fencer
            .event(
                EventType::Warning,
                "FenceRegionUnreachable",
                format!(
                    "{region} does not answer; fencing {} when it does",
                    names.join(", ")
                ),
            )
            .await;
    }
    for d in &done {
        info!(plan = %fencer.plan.name_any(), fence = %d.describe(), "fenced");
        fencer
            .event(
                EventType::Normal,
                "Fenced",
                format!(
                    "fenced {}: {}",
                    d.describe(),
                    d.message.as_deref().unwrap_or_default()
                ),
            )
            .await;
    }
    if to_act.is_empty() {
        return Ok(left);
    }
    let results = join_all(to_act.iter().map(|e| fencer.act(e))).await;
    let mut answered = Vec::new();
    for (entry, result) in to_act.into_iter().zip(results) {
        let mut next = entry;
        match result {
            Ok(()) => {
                next.state = PendingFenceState::Requested;
                next.message = Some(
                    match next.resource {
                        FenceResource::Workload => "scaled to 0; waiting until its pods are gone",
                        FenceResource::RdsInstance => {
                            "stop requested; waiting until it is stopping"
                        }
                    }
                    .into(),
                );
            }
            // The call may have taken effect: stay Fencing, so the next check observes first.
            Err((true, why)) => {
                next.reachable = Some(false);
                next.message = Some(format!("call not confirmed: {why}"));
            }
            Err((false, why)) => {
                next.state = PendingFenceState::Pending;
                let note = format!("fencing {} was refused: {why}", next.describe());
                let before = entries.iter().find(|e| e.same_target(&next));
                if before.and_then(|e| e.message.as_deref()) != Some(note.as_str()) {
                    fencer
                        .event(EventType::Warning, "FenceRefused", note.clone())
                        .await;
                }
                next.message = Some(note);
            }
        }
        answered.push(next);
    }
    fencer.write(&answered, &[]).await
}

/// How soon a plan with pending fences is checked again.
pub const PENDING_RECHECK: Duration = Duration::from_secs(5);
