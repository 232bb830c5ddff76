//! `/metrics`, `/healthz` and `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// What `/readyz` reports. A standby replica (not leader) is ready once the CRDs exist;
/// the leader also needs its caches synced.
#[derive(Default, Debug)]
pub struct Readiness {
    pub crds_present: AtomicBool,
    pub leader: AtomicBool,
    pub caches_synced: AtomicBool,
}

impl Readiness {
    pub fn check(&self) -> Result<(), &'static str> {
        if !self.crds_present.load(Ordering::Acquire) {
            return Err("drover.io CRDs are not installed");
        }
        if self.leader.load(Ordering::Acquire) && !self.caches_synced.load(Ordering::Acquire) {
            return Err("caches not synced yet");
        }
        Ok(())
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

pub fn router(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz_handler))
        .with_state(AppState { metrics, readiness })
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn readyz_handler(State(state): State<AppState>) -> impl IntoResponse {
    match state.readiness.check() {
        Ok(()) => (StatusCode::OK, "ok".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why.to_string()),
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_rules() {
        let r = Readiness::default();
        assert_eq!(r.check(), Err("drover.io CRDs are not installed"));
        r.crds_present.store(true, Ordering::Release);
        assert_eq!(r.check(), Ok(()));
        r.leader.store(true, Ordering::Release);
        assert_eq!(r.check(), Err("caches not synced yet"));
        r.caches_synced.store(true, Ordering::Release);
        assert_eq!(r.check(), Ok(()));
    }
}
