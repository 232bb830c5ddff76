//! Leader election on a Lease: only the holder runs the controllers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{error, info};

use crate::config::Config;
use crate::context::Context;
use crate::controller;
use crate::http::Readiness;
use crate::metrics::Metrics;

/// How long in-flight reconciles get to finish on shutdown.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A clonable future that resolves once shutdown was requested.
pub type ShutdownSignal = Shared<BoxFuture<'static, ()>>;

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader election on Lease {namespace}/{name}: {source}")]
    Lease {
        namespace: String,
        name: String,
        source: kube_lease_manager::LeaseManagerError,
    },
    #[error("lost the leader Lease; exiting so that a fresh process can compete again")]
    Lost,
}

/// Competes for the Lease and runs the controllers while holding it. Returns when
/// shutdown is requested (after releasing the Lease) or when leadership is lost.
pub async fn run_when_leader(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: ShutdownSignal,
) -> Result<(), LeaderError> {
    let duration = config.lease_duration.as_secs();
    let grace = (duration / 3).max(1);
    let lease_error = |source| LeaderError::Lease {
        namespace: config.lease_namespace.clone(),
        name: config.lease_name.clone(),
        source,
    };
    let manager = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
        .with_namespace(&config.lease_namespace)
        .with_identity(&config.identity)
        .with_duration(duration)
        .with_grace(grace)
        .with_field_manager(crate::store::FIELD_MANAGER)
        .build()
        .await
        .map_err(lease_error)?;
    let (mut leading, lease_task) = manager.watch().await;
    info!(identity = %config.identity, lease = %config.lease_name, "competing for leadership");

    let acquired = tokio::select! {
        _ = shutdown.clone() => None,
        acquired = leading.wait_for(|is_leader| *is_leader) => Some(acquired.is_ok()),
    };
    let outcome = match acquired {
        None => Ok(()),
        Some(false) => Err(LeaderError::Lost),
        Some(true) => {
            info!(identity = %config.identity, "acquired leadership");
            readiness.leader.store(true, Ordering::Release);
            metrics.leader.set(1);
            // Context shares it across plans (crate::shared_aws).
            let aws: Arc<dyn crate::aws::Aws> = Arc::new(
                crate::aws::SdkAws::from_env(metrics.clone(), config.aws_rate_limits.clone()).await,
            );
            let ctx = Arc::new(Context::new(
                client.clone(),
                aws,
                config.clone(),
                metrics.clone(),
            ));
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let stop = stop_rx.map(|_| ()).boxed().shared();
            let controllers = async {
                controller::wait_for_crds(&client, &config.watch_namespace, &readiness).await;
                controller::run_controllers(ctx, readiness.clone(), stop.clone()).await;
            };
            tokio::pin!(controllers);
            let result = tokio::select! {
                _ = &mut controllers => Ok(()),
                _ = shutdown.clone() => {
                    // Let in-flight reconciles finish their status writes.
                    let _ = stop_tx.send(());
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut controllers).await;
                    Ok(())
                }
                _ = leading.wait_for(|is_leader| !*is_leader) => {
                    error!(identity = %config.identity, "lost leadership");
                    Err(LeaderError::Lost)
                }
            };
            readiness.leader.store(false, Ordering::Release);
            metrics.leader.set(0);
            result
        }
    };
    // Dropping the receiver makes the lease task release the Lease and finish.
    drop(leading);
    match lease_task.await {
        Ok(Ok(_)) => info!("released the leader Lease"),
        Ok(Err(e)) => {
            error!(error = %crate::error::plain(&e), "could not release the leader Lease")
        }
        Err(e) => error!(error = %e, "lease task failed"),
    }
    outcome
}
