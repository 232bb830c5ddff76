//! Many plans failing over at once, as when a region is lost for all of them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use drover::api::{FailoverMode, FailoverPhase};

use crate::failover::{Scenario, assert_phase, create, failover, seeded_plan, wait_terminal};
use crate::support::*;

/// Plans failed over together: `DROVER_MASS_PLANS` (2 to 200), else 10.
fn mass_plans() -> usize {
    std::env::var("DROVER_MASS_PLANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10usize)
        .clamp(2, 200)
}

/// Calls the bed refused over an account limit so far, by service.
fn throttled() -> BTreeMap<String, u64> {
    let view = bed("GET", "/throttled", serde_json::json!({}));
    let mut out = BTreeMap::new();
    for t in view["throttled"].as_array().cloned().unwrap_or_default() {
        let service = t["service"].as_str().unwrap_or_default().to_string();
        *out.entry(service).or_default() += t["count"].as_u64().unwrap_or(0);
    }
    out
}

/// Fails the named plans over to usw2 together; the time until all have Succeeded. Prints
/// each step's mean and longest duration across them.
async fn fail_over_together(client: &kube::Client, ns: &str, plans: &[String]) -> Duration {
    let started = Instant::now();
    for plan in plans {
        let fo = failover(
            &format!("{plan}-go"),
            plan,
            "usw2",
            FailoverMode::Planned,
            false,
        );
        create(client, ns, &fo).await;
    }
    let mut steps: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for plan in plans {
        let fo = wait_terminal(client, ns, &format!("{plan}-go"), Duration::from_secs(600)).await;
        assert_phase(&fo, FailoverPhase::Succeeded);
        for step in fo.status.map(|s| s.steps).unwrap_or_default() {
            if let Some(d) = step.duration_seconds {
                steps.entry(step.name).or_default().push(d);
            }
        }
    }
    let took = started.elapsed();
    let summary: Vec<String> = steps
        .iter()
        .map(|(name, d)| {
            let mean = d.iter().sum::<f64>() / d.len() as f64;
            let max = d.iter().copied().fold(0.0, f64::max);
            format!("{name} {mean:.2}/{max:.2}")
        })
        .collect();
    println!(
        "  {} plan(s), steps mean/max seconds: {}",
        plans.len(),
        summary.join(", ")
    );
    took
}

/// One plan alone, then many plans of one account (2 RDS, 1 Aurora, 6 workloads each, and
/// records in one shared zone) failing over to usw2 at once: every one succeeds, the bed (holding Route 53's
/// 5 calls a second per account and RDS's per-region bucket) refuses no Route 53 call.
/// Prints the calls per service (mean and peak per second) for BENCHMARKS.md.
///
/// Run alone: Route 53's limit is the account's, and another test's operator calling it
/// meanwhile would take this one's share.
#[tokio::test]
#[ignore = "shares the account's Route 53 limit with no other test; run alone by e2e/run-tests.sh"]
async fn many_plans_fail_over_at_once_within_the_route53_limit() {
    let count = mass_plans();
    // One company's zone: every plan's records in it, so their DNS changes can merge.
    let domain = format!("{}.example", unique("zone"));
    let zone = ["--shared-zone", domain.as_str()];
    let (scenario, op) = Scenario::start("mass", &zone, &[], 15).await;
    let (client, ns, solo) = scenario.parts();
    let mut plans = Vec::new();
    while plans.len() < count {
        let name = unique(&format!("mass{}", plans.len()));
        seeded_plan(&client, &ns, &name, &zone).await;
        plans.push(name);
    }
    let alone = fail_over_together(&client, &ns, &[solo]).await;

    bed("POST", "/calls/reset", serde_json::json!({}));
    let throttled_before = throttled();
    let all = fail_over_together(&client, &ns, &plans).await;
    let refused: BTreeMap<String, u64> = throttled()
        .into_iter()
        .map(|(s, n)| {
            (
                s.clone(),
                n - throttled_before.get(&s).copied().unwrap_or(0),
            )
        })
        .collect();
    let calls = bed("GET", "/calls", serde_json::json!({}));
    let mut per_service: BTreeMap<String, u64> = BTreeMap::new();
    let mut per_operation: BTreeMap<String, u64> = BTreeMap::new();
    for c in calls["calls"].as_array().cloned().unwrap_or_default() {
        let service = c["service"].as_str().unwrap_or_default().to_string();
        let operation = c["operation"].as_str().unwrap_or_default();
        let n = c["count"].as_u64().unwrap_or(0);
        *per_service.entry(service.clone()).or_default() += n;
        *per_operation
            .entry(format!("{service} {operation}"))
            .or_default() += n;
    }
    let peak = |service: &str| calls["peak_per_second"][service].as_u64().unwrap_or(0);
    let waited = |service: &str| {
        op.metric_with(
            "drover_aws_rate_limit_wait_seconds_total",
            &format!("service=\"{service}\""),
        )
        .unwrap_or_default()
    };
    println!(
        "one plan alone: {:.1}s; {count} plans at once: all Succeeded in {:.1}s ({:.2}x)",
        alone.as_secs_f64(),
        all.as_secs_f64(),
        all.as_secs_f64() / alone.as_secs_f64()
    );
    for (service, n) in &per_service {
        println!(
            "  {service}: {n} calls, mean {:.1}/s, peak {}/s, refused by the bed {}, \
             waited for Drover's limit {:.2}s in all",
            *n as f64 / all.as_secs_f64(),
            peak(service),
            refused.get(service).copied().unwrap_or(0),
            waited(service)
        );
    }
    let operations: Vec<String> = per_operation
        .iter()
        .map(|(op, n)| format!("{op} {n}"))
        .collect();
    println!("  by operation: {}", operations.join(", "));
    assert_eq!(
        refused.get("route53").copied().unwrap_or(0),
        0,
        "Route 53 calls over the account's rate"
    );
}
