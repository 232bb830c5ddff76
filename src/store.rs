//! Where the failover driver records its progress: Failover status (conditional on the
//! resourceVersion), the plan's failover fields, and Events. Behind a trait so the
//! simulation (`sim`) can run the real driver against an in-memory store.

use std::sync::Arc;

use async_trait::async_trait;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;

use crate::api::{
    DisasterRecoveryPlan, Failover, FailoverApproval, FailoverStatus, LastFailover, PendingFence,
    Reprotection, StepDurations, UnplannedMove,
};
use crate::context::Context;

/// Field manager of the plan reconciler's status fields.
pub const FIELD_MANAGER: &str = "drover";
/// Field manager of the status fields the failover runner owns on plans.
pub const FAILOVER_FIELD_MANAGER: &str = "drover-failover";

/// Server-side applies `status` (the fields `field_manager` owns) on /status.
pub async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    field_manager: &str,
    status: &impl Serialize,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    apply_status_at(api, name, field_manager, status, None).await
}

/// `apply_status`, conditional on `resource_version` when given: the API server answers
/// 409 if the object changed since.
pub async fn apply_status_at<K>(
    api: &Api<K>,
    name: &str,
    field_manager: &str,
    status: &impl Serialize,
    resource_version: Option<&str>,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    if let Some(version) = resource_version {
        patch["metadata"] = json!({ "resourceVersion": version });
    }
    api.patch_status(
        name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(&patch),
    )
    .await
}

/// The plan status fields the failover field manager owns. Every apply of that manager
/// carries all of them: server-side apply deletes an owned field that an apply leaves out.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailoverFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_active_region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<LastFailover>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_unplanned_move: Option<UnplannedMove>,
    pub pending_fences: Vec<PendingFence>,
    pub reprotections: Vec<Reprotection>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub step_durations: Vec<StepDurations>,
}

/// Reads the plan, applies `change` to its failover fields and writes them with the failover
/// field manager, on the condition that the plan is unchanged since the read; on a conflict
/// it reads again. The failover driver and the plan reconciler both write the pending
/// fences, and neither may drop an entry the other just added.
pub async fn update_failover_fields(
    api: &Api<DisasterRecoveryPlan>,
    name: &str,
    mut change: impl FnMut(&mut FailoverFields),
) -> Result<FailoverFields, kube::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let plan = api.get_status(name).await?;
        let status = plan.status.clone().unwrap_or_default();
        let mut fields = FailoverFields {
            active_region: status.active_region,
            previous_active_region: status.previous_active_region,
            last_failover: status.last_failover,
            last_unplanned_move: status.last_unplanned_move,
            pending_fences: status.pending_fences,
            reprotections: status.reprotections,
            step_durations: status.step_durations,
        };
        change(&mut fields);
        let patch = json!({
            "apiVersion": DisasterRecoveryPlan::api_version(&()),
            "kind": DisasterRecoveryPlan::kind(&()),
            "metadata": {"name": name, "resourceVersion": plan.resource_version()},
            "status": fields,
        });
        let params = PatchParams::apply(FAILOVER_FIELD_MANAGER).force();
        match api.patch_status(name, &params, &Patch::Apply(&patch)).await {
            Ok(_) => return Ok(fields),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < 10 => {
                tokio::time::sleep(crate::engine::retry_delay(attempt, fastrand::f64())).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[async_trait]
pub trait StatusStore: Send + Sync {
    /// Writes a Failover's status, conditional on `resource_version` when given (409 if
    /// the object changed since); returns the new resourceVersion.
    async fn write_failover_status(
        &self,
        name: &str,
        status: &FailoverStatus,
        resource_version: Option<&str>,
    ) -> Result<Option<String>, kube::Error>;
    /// Read-modify-write of a plan's failover fields, retried on conflicts.
    async fn update_plan_fields(
        &self,
        plan: &str,
        change: &mut (dyn for<'a> FnMut(&'a mut FailoverFields) + Send),
    ) -> Result<FailoverFields, kube::Error>;
    /// Publishes an Event about `fo` (best effort).
    async fn publish(
        &self,
        fo: &Failover,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    );
    /// The FailoverApprovals in the Failovers' namespace.
    async fn approvals(&self) -> Result<Vec<FailoverApproval>, kube::Error>;
}

/// The API server: what `drover run` uses.
pub struct KubeStatusStore {
    ctx: Arc<Context>,
    failovers: Api<Failover>,
    approvals: Api<FailoverApproval>,
    plans: Api<DisasterRecoveryPlan>,
}

impl KubeStatusStore {
    pub fn new(ctx: Arc<Context>, failover_ns: &str, plan_ns: &str) -> Self {
        Self {
            failovers: Api::namespaced(ctx.client.clone(), failover_ns),
            approvals: Api::namespaced(ctx.client.clone(), failover_ns),
            plans: Api::namespaced(ctx.client.clone(), plan_ns),
            ctx,
        }
    }
}

#[async_trait]
impl StatusStore for KubeStatusStore {
    async fn write_failover_status(
        &self,
        name: &str,
        status: &FailoverStatus,
        resource_version: Option<&str>,
    ) -> Result<Option<String>, kube::Error> {
        let written = apply_status_at(
            &self.failovers,
            name,
            FIELD_MANAGER,
            status,
            resource_version,
        )
        .await?;
        Ok(written.metadata.resource_version)
    }

    async fn update_plan_fields(
        &self,
        plan: &str,
        change: &mut (dyn for<'a> FnMut(&'a mut FailoverFields) + Send),
    ) -> Result<FailoverFields, kube::Error> {
        update_failover_fields(&self.plans, plan, change).await
    }

    async fn publish(
        &self,
        fo: &Failover,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.ctx.publish(fo, type_, reason, action, note).await
    }

    async fn approvals(&self) -> Result<Vec<FailoverApproval>, kube::Error> {
        Ok(self.approvals.list(&Default::default()).await?.items)
    }
}
