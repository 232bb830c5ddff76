//! Shared state of the reconcilers, and Events.

use std::collections::HashMap;
use std::sync::Arc;

use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tracing::warn;

use crate::api::DisasterRecoveryPlanSpec;
use crate::aws::Aws;
use crate::clusters::{KubeClusters, RegionClients};
use crate::config::Config;
use crate::engine::machine::EffectResult;
use crate::leadership::{LeaderAws, Leadership};
use crate::metrics::Metrics;
use crate::shared_aws::SharedAws;

/// Running Failovers whose call results are kept at most.
const MAX_KEPT_FAILOVERS: usize = 256;

/// A pass's call results, with the resourceVersion that pass left.
pub type KeptResults = (Option<String>, Vec<EffectResult>);

/// Shared state of the reconcilers.
pub struct Context {
    pub client: Client,
    /// AWS, shared by every plan, refusing mutating calls unless `leadership` is
    /// confirmed first.
    pub aws: Arc<dyn Aws>,
    pub leadership: Arc<Leadership>,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// What the last pass of each Failover (by uid) got back from its calls, with the
    /// resourceVersion that pass left. The next pass uses them only if nothing else wrote
    /// since; after a restart they are gone, and that pass observes before it acts.
    pass_results: std::sync::Mutex<HashMap<String, KeptResults>>,
    /// Per Failover: its awaited promotions as last described (`PromotionLook`).
    promotion_looks: std::sync::Mutex<HashMap<String, crate::runner::PromotionLook>>,
    /// Region-cluster clients, shared by plan checks, fencing and Failovers.
    region_clients: Arc<RegionClients>,
    /// The probe samplers of running failovers (user-visible recovery).
    pub probes: Arc<crate::probes::Samplers>,
}

impl Context {
    pub fn new(client: Client, aws: Arc<dyn Aws>, config: Config, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: "drover".into(),
            instance: Some(config.identity.clone()),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        let leadership = Arc::new(Leadership::new(
            Api::namespaced(client.clone(), &config.lease_namespace),
            &config.lease_name,
            &config.identity,
        ));
        // Shared across plans outside the leader check: each real mutating call (a merged
        // Route 53 batch too) confirms the Lease just before it is sent, not before it
        // waits its turn behind other plans' calls.
        let aws = Arc::new(SharedAws::new(Arc::new(LeaderAws {
            inner: aws,
            leadership: leadership.clone(),
        })));
        let probes = Arc::new(crate::probes::Samplers::new(Arc::new(
            crate::probes::LiveProbes::new(aws.clone()),
        )));
        Self {
            client,
            aws,
            probes,
            leadership,
            config,
            metrics,
            recorder,
            pass_results: Default::default(),
            promotion_looks: Default::default(),
            region_clients: Default::default(),
        }
    }

    /// The region clusters of a plan, through the shared region clients.
    pub fn member_clusters(
        &self,
        spec: &DisasterRecoveryPlanSpec,
        namespace: &str,
    ) -> KubeClusters {
        KubeClusters::new(
            self.client.clone(),
            spec.clone(),
            namespace.to_string(),
            self.config.member_timeout,
            self.region_clients.clone(),
        )
    }

    /// The results the last pass of a Failover left, if that pass also left `version`:
    /// a write by anyone else since makes them stale, and they are dropped.
    pub fn take_results(&self, failover_uid: &str, version: &Option<String>) -> Vec<EffectResult> {
        let Ok(mut kept) = self.pass_results.lock() else {
            return Vec::new();
        };
        match kept.remove(failover_uid) {
            Some((at, results)) if at == *version => results,
            _ => Vec::new(),
        }
    }

    /// Keeps a pass's results for the next pass of the same Failover.
    pub fn keep_results(
        &self,
        failover_uid: &str,
        version: Option<String>,
        results: Vec<EffectResult>,
    ) {
        if results.is_empty() {
            return;
        }
        if let Ok(mut kept) = self.pass_results.lock() {
            // Bounded: Failovers deleted mid-flight never reach a terminal pass.
            if kept.len() >= MAX_KEPT_FAILOVERS {
                kept.clear();
            }
            kept.insert(failover_uid.to_string(), (version, results));
        }
    }

    /// The last description of a Failover's awaited promotions, if one is kept.
    pub fn take_promotion_look(&self, failover_uid: &str) -> Option<crate::runner::PromotionLook> {
        self.promotion_looks.lock().ok()?.remove(failover_uid)
    }

    /// Keeps a pass's description of its awaited promotions for the next pass.
    pub fn keep_promotion_look(
        &self,
        failover_uid: &str,
        look: Option<crate::runner::PromotionLook>,
    ) {
        let Some(look) = look else { return };
        if let Ok(mut kept) = self.promotion_looks.lock() {
            // Bounded: Failovers deleted mid-flight never reach a terminal pass.
            if kept.len() >= MAX_KEPT_FAILOVERS {
                kept.clear();
            }
            kept.insert(failover_uid.to_string(), look);
        }
    }

    /// Drops what was kept for a Failover that ended.
    pub fn forget_failover(&self, failover_uid: &str) {
        if let Ok(mut kept) = self.pass_results.lock() {
            kept.remove(failover_uid);
        }
        if let Ok(mut kept) = self.promotion_looks.lock() {
            kept.remove(failover_uid);
        }
        self.probes.stop(failover_uid);
    }

    /// Publishes an Event. The recorder folds repeats of (reason, action) into one series,
    /// so distinct happenings need distinct actions.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(note, 1000)),
            action: action.into(),
            secondary: None,
        };
        // Events are best effort: a failure to record one must not fail the reconcile.
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            warn!(error = %crate::error::kube_message(&e), reason, "could not publish event");
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo".into(), 2), "h…");
        assert_eq!(truncate("short".into(), 10), "short");
    }
}
