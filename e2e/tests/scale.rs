//! Many plans failing over at once, as when a region is lost for all of them.

use std::time::{Duration, Instant};

use drover::api::{FailoverMode, FailoverPhase};

use crate::failover::{Scenario, assert_phase, create, failover, seeded_plan, wait_terminal};
use crate::support::*;

/// Plans failed over together.
const PLANS: usize = 10;

/// Route 53 calls the bed refused over its per-account limit (5 per second) so far.
fn route53_throttled() -> u64 {
    let view = bed("GET", "/throttled", serde_json::json!({}));
    let entries = view["throttled"].as_array().cloned().unwrap_or_default();
    entries
        .iter()
        .filter(|t| t["service"] == "route53")
        .filter_map(|t| t["count"].as_u64())
        .sum()
}

/// Ten plans, one account, Planned failovers to usw2 all created at once: every one
/// succeeds, and the operator's own limit keeps Route 53 under the account's 5 calls per
/// second: the bed refuses none of them.
#[tokio::test]
async fn ten_plans_fail_over_at_once_within_the_route53_limit() {
    let (scenario, op) = Scenario::start("mass", &[], &[], 15).await;
    let (client, ns, first) = scenario.parts();
    let mut plans = vec![first];
    while plans.len() < PLANS {
        let name = unique(&format!("mass{}", plans.len()));
        seeded_plan(&client, &ns, &name, &[]).await;
        plans.push(name);
    }
    let throttled_before = route53_throttled();
    let started = Instant::now();
    for plan in &plans {
        create(
            &client,
            &ns,
            &failover(
                &format!("{plan}-go"),
                plan,
                "usw2",
                FailoverMode::Planned,
                false,
            ),
        )
        .await;
    }
    for plan in &plans {
        let fo = wait_terminal(
            &client,
            &ns,
            &format!("{plan}-go"),
            Duration::from_secs(300),
        )
        .await;
        assert_phase(&fo, FailoverPhase::Succeeded);
    }
    let all = started.elapsed();
    let refused = route53_throttled() - throttled_before;
    let waited = op
        .metric_with(
            "drover_aws_rate_limit_wait_seconds_total",
            "service=\"route53\"",
        )
        .unwrap_or_default();
    println!(
        "{PLANS} plans at once: all Succeeded in {:.1}s; Route 53 calls refused by the bed: \
         {refused}; waited for Drover's Route 53 limit: {waited:.2}s in all",
        all.as_secs_f64()
    );
    assert_eq!(refused, 0, "Route 53 calls over the account's rate");
    assert!(waited > 0.0, "the limit held some calls back");
}
