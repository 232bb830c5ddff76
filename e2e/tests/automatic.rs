//! Automatic failover on the bed: a plan watches use1 through its Route 53 health check
//! (per checker region) and a CloudWatch alarm kept in us-west-2, and use1 is lost.

use std::time::Duration;

use drover::api::{
    AutomaticFailoverStatus, DisasterRecoveryPlan, Failover, FailoverMode, FailoverPhase,
    SignalState,
};
use kube::api::{Api, ListParams, Patch, PatchParams};

use crate::failover::{BedReset, Frozen, Scenario, assert_phase, describe, wait_terminal};
use crate::support::*;

async fn cloudwatch(region: &str) -> aws_sdk_cloudwatch::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://127.0.0.1:{}", aws_port()))
        .region(aws_config::Region::new(region.to_string()))
        .credentials_provider(aws_sdk_cloudwatch::config::Credentials::new(
            "testing", "testing", None, None, "e2e",
        ))
        .load()
        .await;
    aws_sdk_cloudwatch::Client::new(&config)
}

/// The health check the seeded plan attaches to `region`'s api record.
fn health_check(plan: &DisasterRecoveryPlan, region: &str) -> String {
    plan.spec.dns[0]
        .records
        .iter()
        .flat_map(|r| &r.targets)
        .find(|t| t.region == region && t.health_check_id.is_some())
        .and_then(|t| t.health_check_id.clone())
        .unwrap_or_else(|| panic!("a health check for {region} in the seeded plan"))
}

async fn automatic_status(
    plans: &Api<DisasterRecoveryPlan>,
    name: &str,
) -> Option<AutomaticFailoverStatus> {
    plans.get(name).await.ok()?.status?.automatic_failover
}

async fn automatic_failovers(client: &kube::Client, ns: &str, plan: &str) -> Vec<Failover> {
    let api: Api<Failover> = Api::namespaced(client.clone(), ns);
    let selector = format!("drover.io/trigger=automatic,drover.io/plan={plan}");
    api.list(&ListParams::default().labels(&selector))
        .await
        .expect("list failovers")
        .items
}

/// use1 is lost (its API server frozen, us-east-1 unreachable, its health check failing
/// from every checker region): exactly one automatic Failover is created, Unplanned with
/// the plan's data-loss policy, and it succeeds; later evaluations, use1 still lost, do not
/// trigger again.
#[tokio::test]
async fn automatic_failover_on_a_lost_region() {
    let (scenario, _op) = Scenario::start("sca", &[], &["--member-timeout-seconds", "2"], 15).await;
    let (client, ns, sc) = scenario.parts();
    let _reset = BedReset;
    let plans: Api<DisasterRecoveryPlan> = Api::namespaced(client.clone(), &ns);

    // The alarm lives in us-west-2, so it stays readable when us-east-1 is lost.
    let alarm = format!("{sc}-use1-errors");
    let cw = cloudwatch("us-west-2").await;
    cw.put_metric_alarm()
        .alarm_name(&alarm)
        .namespace("AWS/ApplicationELB")
        .metric_name("HTTPCode_ELB_5XX_Count")
        .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(100.0)
        .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .expect("put alarm");
    cw.set_alarm_state()
        .alarm_name(&alarm)
        .state_value(aws_sdk_cloudwatch::types::StateValue::Ok)
        .state_reason("e2e")
        .send()
        .await
        .expect("set alarm state");

    let automatic = serde_json::json!({"spec": {"automaticFailover": {
        "interval": "5s",
        "consecutive": 2,
        "quorum": 1,
        "cooldown": "1h",
        "mode": "Unplanned",
        "allowDataLoss": true,
        "signals": [
            {"name": "use1-api", "region": "use1",
             "route53HealthCheck": {"healthCheckId": health_check(&scenario.plan, "use1"), "checkerQuorum": 2}},
            {"name": "use1-errors", "region": "use1",
             "cloudWatchAlarm": {"alarmName": alarm, "awsRegion": "us-west-2"}},
            {"name": "usw2-api", "region": "usw2",
             "route53HealthCheck": {"healthCheckId": health_check(&scenario.plan, "usw2"), "checkerQuorum": 2}},
        ],
    }}});
    plans
        .patch(&sc, &PatchParams::default(), &Patch::Merge(&automatic))
        .await
        .expect("enable automatic failover");

    // Healthy: use1's signals read and healthy, usw2's not evaluated, nothing triggered.
    let healthy = wait_for(
        "signals evaluated healthy",
        Duration::from_secs(60),
        || async {
            let s = automatic_status(&plans, &sc).await?;
            let states: Vec<SignalState> = s.signals.iter().map(|x| x.state).collect();
            (states
                == [
                    SignalState::Healthy,
                    SignalState::Healthy,
                    SignalState::NotEvaluated,
                ])
            .then_some(s)
        },
    )
    .await;
    assert_eq!(healthy.triggers, 0, "{healthy:?}");
    assert!(
        healthy
            .message
            .as_deref()
            .unwrap_or_default()
            .starts_with("Not triggered"),
        "{healthy:?}"
    );
    assert!(automatic_failovers(&client, &ns, &sc).await.is_empty());

    let _frozen = Frozen::process("apiserver-use1");
    bed(
        "POST",
        "/outage",
        serde_json::json!({"region": "us-east-1", "down": true}),
    );

    // The trigger is recorded with the signals that caused it.
    let triggered = wait_for(
        "automatic failover triggered",
        Duration::from_secs(90),
        || async {
            let s = automatic_status(&plans, &sc).await?;
            s.last_trigger.is_some().then_some(s)
        },
    )
    .await;
    let trigger = triggered.last_trigger.clone().expect("trigger");
    assert_eq!(trigger.source_region, "use1");
    assert_eq!(trigger.target_region, "usw2");
    assert_eq!(trigger.failover, format!("{sc}-auto-1"));
    assert!(
        trigger
            .signals
            .iter()
            .any(|s| s.starts_with("use1-api") && s.contains("Failure from")),
        "{trigger:?}"
    );
    let api_signal = triggered
        .signals
        .iter()
        .find(|s| s.name == "use1-api")
        .expect("use1-api");
    assert_eq!(api_signal.state, SignalState::Bad, "{triggered:?}");
    assert!(api_signal.consecutive_bad >= 2, "{triggered:?}");
    let alarm_signal = triggered
        .signals
        .iter()
        .find(|s| s.name == "use1-errors")
        .expect("use1-errors");
    assert_eq!(alarm_signal.state, SignalState::Healthy, "{triggered:?}");

    let fo = wait_terminal(&client, &ns, &trigger.failover, Duration::from_secs(180)).await;
    assert_phase(&fo, FailoverPhase::Succeeded);
    assert_eq!(fo.spec.mode, FailoverMode::Unplanned);
    assert!(fo.spec.allow_data_loss, "the plan's data-loss policy");
    assert_eq!(fo.spec.max_data_loss, None);
    assert_eq!(fo.spec.target_region, "usw2");
    let signals = fo
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("drover.io/signals"))
        .cloned()
        .unwrap_or_default();
    assert!(
        signals.contains("use1-api") && signals.contains("Failure from"),
        "{signals}"
    );
    assert!(
        fo.status
            .as_ref()
            .and_then(|s| s.approval.as_ref())
            .is_none(),
        "{}",
        describe(&fo)
    );

    // use1 stays lost: two more evaluations after the failover, and no second trigger.
    let after = plans.get(&sc).await.expect("plan");
    assert_eq!(
        after
            .status
            .as_ref()
            .and_then(|s| s.active_region.as_deref()),
        Some("usw2")
    );
    let seen = automatic_status(&plans, &sc)
        .await
        .and_then(|s| s.last_evaluation_time)
        .expect("evaluated");
    let later = wait_for("two more evaluations", Duration::from_secs(60), || async {
        let s = automatic_status(&plans, &sc).await?;
        let t = s.last_evaluation_time.clone()?;
        (t.0.as_second() >= seen.0.as_second() + 9).then_some(s)
    })
    .await;
    assert_eq!(later.triggers, 1, "{later:?}");
    assert_eq!(later.active_region.as_deref(), Some("usw2"));
    let message = later.message.clone().unwrap_or_default();
    assert!(message.starts_with("Not triggered"), "{later:?}");
    let usw2 = later
        .signals
        .iter()
        .find(|s| s.name == "usw2-api")
        .expect("usw2-api");
    assert_eq!(usw2.state, SignalState::Healthy, "{later:?}");
    assert_eq!(
        later
            .signals
            .iter()
            .find(|s| s.name == "use1-api")
            .map(|s| s.state),
        Some(SignalState::NotEvaluated)
    );
    assert_eq!(automatic_failovers(&client, &ns, &sc).await.len(), 1);
    assert!(
        later.last_trigger.as_ref().is_some_and(|t| t.created),
        "{later:?}"
    );
}
