//! Where the failover driver records its progress: Failover status (conditional on the
//! resourceVersion), the plan's failover fields, and Events. Behind a trait so the
//! simulation (`sim`) can run the real driver against an in-memory store.

use std::sync::Arc;

use async_trait::async_trait;
use kube::api::Api;
use kube::runtime::events::EventType;

use crate::api::{DisasterRecoveryPlan, Failover, FailoverStatus};
use crate::controller::{Context, FIELD_MANAGER, apply_status_at};
use crate::fencing::{FailoverFields, update_failover_fields};

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
}

/// The API server: what `drover run` uses.
pub struct KubeStatusStore {
    ctx: Arc<Context>,
    failovers: Api<Failover>,
    plans: Api<DisasterRecoveryPlan>,
}

impl KubeStatusStore {
    pub fn new(ctx: Arc<Context>, failover_ns: &str, plan_ns: &str) -> Self {
        Self {
            failovers: Api::namespaced(ctx.client.clone(), failover_ns),
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
}
