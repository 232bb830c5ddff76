//! Drills on the bed (issue 9, section 3): a schedule fires by itself, its result is kept
//! in the plan's history (and only the last N, with their Failovers), and `drover drill`
//! runs one now.

use std::process::Command;
use std::time::Duration;

use drover::api::{DisasterRecoveryPlan, DrillOutcome, Failover, FailoverMode};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};

use crate::failover::*;
use crate::support::*;

fn drills(plan: &DisasterRecoveryPlan) -> drover::api::DrillsStatus {
    plan.status
        .as_ref()
        .and_then(|s| s.drills.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_drill_fires_on_its_schedule_and_its_history_is_kept() {
    let (scenario, op) = Scenario::start("drill", &[], &[], 15).await;
    let (client, ns, sc) = scenario.parts();
    let plans: Api<DisasterRecoveryPlan> = Api::namespaced(client.clone(), &ns);
    let failovers: Api<Failover> = Api::namespaced(client.clone(), &ns);
    // Every minute, keeping one result; a drill is required every hour.
    let patch = serde_json::json!({"spec": {"drills": {
        "schedules": [{"name": "minutely", "cron": "* * * * *", "kind": "DryRun", "window": "2m"}],
        "historyLimit": 1,
        "requiredInterval": "1h",
    }}});
    plans
        .patch(&sc, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("plan patched");

    // The next minute's drill runs by itself, as a DryRun Failover owned by the plan.
    let first = wait_for(
        "a scheduled drill's result",
        Duration::from_secs(150),
        || async {
            let plan = plans.get(&sc).await.ok()?;
            let d = drills(&plan);
            d.history.first().cloned()
        },
    )
    .await;
    assert_eq!(first.schedule, "minutely");
    assert_eq!(first.outcome, DrillOutcome::Succeeded, "{first:?}");
    assert!(first.rto_seconds.is_some_and(|s| s > 0.0));
    let name = first.failovers.first().cloned().expect("its Failover");
    let fo = failovers.get(&name).await.expect("drill Failover kept");
    assert_eq!(fo.spec.mode, FailoverMode::DryRun);
    assert_eq!(
        fo.labels().get("drover.io/trigger").map(String::as_str),
        Some("drill")
    );
    assert_eq!(
        fo.owner_references().first().map(|o| o.kind.as_str()),
        Some("DisasterRecoveryPlan")
    );
    let plan = plans.get(&sc).await.expect("plan");
    let overdue = plan
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "DrillOverdue")
                .cloned()
        })
        .expect("DrillOverdue condition");
    assert_eq!(overdue.status, "False", "{overdue:?}");
    // What the dashboard's drill panels query (the way back's RTO comes with a round trip).
    assert_eq!(op.metric_with("drover_drill_last_succeeded", ""), Some(1.0));
    assert!(
        op.metric_with("drover_drill_last_success_timestamp_seconds", "")
            .is_some_and(|t| t > 1.7e9)
    );
    assert!(
        op.metric_with("drover_drill_rto_seconds", "")
            .is_some_and(|s| s > 0.0)
    );

    // The next one replaces it: one result kept, the older drill's Failover deleted.
    wait_for(
        "the next drill, and the older one pruned",
        Duration::from_secs(150),
        || async {
            let plan = plans.get(&sc).await.ok()?;
            let d = drills(&plan);
            let newer = d.history.first()?.failovers.first()? != &name;
            let gone = failovers.get_opt(&name).await.ok()?.is_none();
            (newer && gone && d.history.len() == 1).then_some(())
        },
    )
    .await;

    // Suspended, the schedule starts no more; `drover drill` runs one now, and the operator
    // records it as a manual drill.
    let suspend = serde_json::json!({"spec": {"drills": {
        "schedules": [{"name": "minutely", "cron": "* * * * *", "kind": "DryRun", "window": "2m", "suspend": true}],
        "historyLimit": 3,
    }}});
    plans
        .patch(&sc, &PatchParams::default(), &Patch::Merge(&suspend))
        .await
        .expect("plan patched");
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["drill", &sc, "-n", &ns, "--kind", "DryRun", "--watch"])
        .env("KUBECONFIG", kubeconfig_path("mgmt"))
        .output()
        .expect("drover runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("a DryRun drill of plan"), "{stdout}");
    wait_for(
        "the manual drill recorded",
        Duration::from_secs(60),
        || async {
            let plan = plans.get(&sc).await.ok()?;
            let d = drills(&plan);
            d.history
                .iter()
                .find(|h| h.schedule == "manual" && h.outcome == DrillOutcome::Succeeded)
                .cloned()
        },
    )
    .await;
    // `drover status` shows it.
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["status", "-n", &ns, "-o", "json"])
        .env("KUBECONFIG", kubeconfig_path("mgmt"))
        .output()
        .expect("drover runs");
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(shown[0]["lastDrill"]["schedule"], "manual", "{shown}");
    assert_eq!(shown[0]["lastDrill"]["outcome"], "Succeeded", "{shown}");
    let drill_failovers = failovers
        .list(&ListParams::default().labels("drover.io/trigger=drill"))
        .await
        .expect("list");
    assert!(
        drill_failovers.items.len() <= 2,
        "old drills pruned: {}",
        drill_failovers.items.len()
    );
}
