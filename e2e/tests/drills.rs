//! Drills on the bed (issue 9, section 3): a schedule fires by itself, its result is kept
//! in the plan's history (and only the last N, with their Failovers), and `drover drill`
//! runs one now, a DryRun or a RoundTrip there and back.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drover::api::{
    DisasterRecoveryPlan, DrillKind, DrillOutcome, DrillStage, Failover, FailoverMode,
    FailoverPhase, StepState,
};
use k8s_openapi::jiff::{Timestamp, ToSpan};
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

/// A `drover` command run against the management cluster, killed by PID when dropped (a
/// failed assertion must not leave it waiting).
pub struct Drover(Child);

impl Drover {
    pub fn spawn(args: &[&str]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(args)
            .env("KUBECONFIG", kubeconfig_path("mgmt"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("drover runs");
        Self(child)
    }

    /// Waits for it to exit; its exit status, stdout and stderr.
    pub async fn finish(mut self, timeout: Duration) -> (std::process::ExitStatus, String, String) {
        let status = wait_for("drover to exit", timeout, || {
            let exited = self.0.try_wait().ok().flatten();
            async move { exited }
        })
        .await;
        let mut out = String::new();
        let mut err = String::new();
        if let Some(s) = self.0.stdout.as_mut() {
            s.read_to_string(&mut out).expect("stdout");
        }
        if let Some(s) = self.0.stderr.as_mut() {
            s.read_to_string(&mut err).expect("stderr");
        }
        (status, out, err)
    }
}

impl Drop for Drover {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Since when the plan has been Ready, if it is.
fn ready_since(plan: &DisasterRecoveryPlan) -> Option<Timestamp> {
    let status = plan.status.as_ref()?;
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.0)
}

/// Waits until the plan is Ready with nothing left to re-protect: a failback is possible.
pub async fn wait_ready(plans: &Api<DisasterRecoveryPlan>, sc: &str) {
    wait_for("plan Ready", Duration::from_secs(90), || async {
        let p = plans.get(sc).await.ok()?;
        let done = p.status.as_ref()?.reprotections.is_empty();
        (ready_since(&p).is_some() && done).then_some(())
    })
    .await
}

/// Puts the emulator's replica creation time back when dropped.
struct ReplicaDelay;

impl ReplicaDelay {
    fn set(seconds: f64) -> Self {
        bed(
            "POST",
            "/config",
            serde_json::json!({"replica_create_delay": seconds}),
        );
        Self
    }
}

impl Drop for ReplicaDelay {
    fn drop(&mut self) {
        bed(
            "POST",
            "/config",
            serde_json::json!({"replica_create_delay": 2.0}),
        );
    }
}

fn created(fo: &Failover) -> Timestamp {
    fo.metadata.creation_timestamp.as_ref().expect("created").0
}

/// `drover drill --kind RoundTrip --watch` on a plan whose RDS standbys are re-protected
/// (Recreate), so the plan is Ready again after each leg. First with the failback needing
/// approval: the way back waits in AwaitingApproval until `drover approve`. Then exempt,
/// with re-protection slower than the hold: the way back starts after the hold and after the
/// plan is Ready, and the plan ends where it started.
#[tokio::test]
async fn a_round_trip_drill_goes_holds_and_comes_back() {
    let (scenario, _op) = Scenario::start("rtdrill", &[], &[], 15).await;
    let (client, ns, sc) = scenario.parts();
    let plans: Api<DisasterRecoveryPlan> = Api::namespaced(client.clone(), &ns);
    let failovers: Api<Failover> = Api::namespaced(client.clone(), &ns);
    let drills_spec = |hold: &str, exempt: bool| {
        serde_json::json!({"spec": {
            "reprotection": {"rds": "Recreate"},
            "drills": {
                // Suspended: it only gives manual round trips their hold.
                "schedules": [{"name": "weekly", "cron": "0 3 * * 1", "kind": "RoundTrip",
                               "hold": hold, "suspend": true}],
                "failbackExemptFromApproval": exempt,
            },
        }})
    };

    // 1. The failback needs approval: the way back waits for `drover approve`.
    plans
        .patch(
            &sc,
            &PatchParams::default(),
            &Patch::Merge(&drills_spec("5s", false)),
        )
        .await
        .expect("plan patched");
    let cli = Drover::spawn(&["drill", &sc, "-n", &ns, "--kind", "RoundTrip", "--watch"]);
    let awaiting = wait_for(
        "the way back awaiting approval",
        Duration::from_secs(90),
        || async {
            let list = failovers
                .list(&ListParams::default().labels("drover.io/drill-stage=back"))
                .await
                .ok()?;
            let fo = list.items.into_iter().next()?;
            (fo.status.as_ref()?.phase? == FailoverPhase::AwaitingApproval).then_some(fo)
        },
    )
    .await;
    let back = awaiting.name_any();
    let status = awaiting.status.clone().expect("status");
    assert_eq!(
        status.approval.as_ref().map(|a| a.reason.as_str()),
        Some("failback to use1 (active before the last failover)")
    );
    // Nothing changed: still in usw2, nothing fenced.
    let fence = status
        .steps
        .iter()
        .find(|s| s.name == "Fence")
        .expect("Fence");
    assert_eq!(fence.state, StepState::Pending);
    let plan = plans.get(&sc).await.expect("plan");
    assert_eq!(
        plan.status
            .as_ref()
            .and_then(|s| s.active_region.as_deref()),
        Some("usw2")
    );
    let running = drills(&plan).running.expect("the drill runs");
    assert_eq!(
        (running.stage, running.failover.as_str()),
        (DrillStage::Returning, back.as_str())
    );
    let (approved, out, err) = Drover::spawn(&["approve", &back, "-n", &ns])
        .finish(Duration::from_secs(30))
        .await;
    assert!(approved.success(), "{out}\n{err}");
    let (exit, out, err) = cli.finish(Duration::from_secs(90)).await;
    println!("drover drill (failback approved):\n{out}");
    assert!(exit.success(), "{out}\n{err}");
    assert!(
        out.contains(&format!("approve: drover approve {back} -n {ns}")),
        "{out}"
    );
    assert!(out.contains(&format!("Failover {back} Succeeded")), "{out}");
    assert!(out.contains("drill recorded: RoundTrip Succeeded"), "{out}");
    let first = drills(&plans.get(&sc).await.expect("plan")).history[0].clone();
    assert_eq!(
        (first.kind, first.outcome),
        (DrillKind::RoundTrip, DrillOutcome::Succeeded),
        "{first:?}"
    );

    // 2. Exempt, and re-protection (20s per new replica) slower than the hold (10s).
    wait_ready(&plans, &sc).await;
    let _slow = ReplicaDelay::set(20.0);
    plans
        .patch(
            &sc,
            &PatchParams::default(),
            &Patch::Merge(&drills_spec("10s", true)),
        )
        .await
        .expect("plan patched");
    let hold = 10.seconds();
    let cli = Drover::spawn(&["drill", &sc, "-n", &ns, "--kind", "RoundTrip", "--watch"]);
    // Until the way back exists: the hold as recorded, and the plan when it first shows.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut hold_until = None;
    let (back, plan_then) = loop {
        assert!(Instant::now() < deadline, "no way back within 120s");
        let plan = plans.get(&sc).await.expect("plan");
        if let Some(r) = drills(&plan)
            .running
            .filter(|r| r.stage == DrillStage::Holding)
        {
            hold_until = r.hold_until.map(|t| t.0);
        }
        let list = failovers
            .list(&ListParams::default().labels("drover.io/drill-stage=back"))
            .await
            .expect("list");
        if let Some(fo) = list.items.into_iter().find(|f| f.name_any() != back) {
            break (fo, plan);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (exit, out, err) = cli.finish(Duration::from_secs(90)).await;
    println!("drover drill (failback exempt):\n{out}");
    assert!(exit.success(), "{out}\n{err}");
    let plan = plans.get(&sc).await.expect("plan");
    let result = drills(&plan).history[0].clone();
    assert_eq!(result.schedule, "manual");
    assert_eq!(
        (result.kind, result.outcome),
        (DrillKind::RoundTrip, DrillOutcome::Succeeded),
        "{result:?}"
    );
    let go = failovers
        .get(&result.failovers[0])
        .await
        .expect("the way there kept");
    assert_eq!(result.failovers, vec![go.name_any(), back.name_any()]);
    // The way there went to usw2, which the first drill came back from: not a failback
    // needing approval, though usw2 was active before the last failover.
    let go_status = go.status.clone().expect("status");
    assert_eq!(go.spec.target_region, "usw2");
    assert_eq!(go.spec.mode, FailoverMode::Planned);
    assert_eq!(go_status.phase, Some(FailoverPhase::Succeeded));
    assert!(go_status.approval.is_none(), "{:?}", go_status.approval);
    let back = failovers
        .get(&back.name_any())
        .await
        .expect("the way back kept");
    let back_status = back.status.clone().expect("status");
    assert_eq!(back.spec.target_region, "use1");
    assert_eq!(back_status.phase, Some(FailoverPhase::Succeeded));
    assert!(
        back_status.approval.is_none(),
        "exempt: {:?}",
        back_status.approval
    );
    // Both RTOs measured, as the Failovers measured them.
    let rto = |s: &drover::api::FailoverStatus| s.timings.as_ref().and_then(|t| t.total_seconds);
    assert!(result.rto_seconds.is_some_and(|s| s > 0.0), "{result:?}");
    assert!(
        result.rto_back_seconds.is_some_and(|s| s > 0.0),
        "{result:?}"
    );
    assert_eq!(result.rto_seconds, rto(&go_status));
    assert_eq!(result.rto_back_seconds, rto(&back_status));
    assert!(result.data_loss_seconds.is_some(), "{result:?}");
    // The hold: the way back was created at least 10s after the way there ended.
    let go_end = go_status
        .timings
        .as_ref()
        .and_then(|t| t.finished_at.as_ref())
        .expect("finished")
        .0;
    // Recorded times are whole seconds, cut down: compare whole seconds.
    let held_from = go_end.checked_add(hold).expect("time").as_second();
    let hold_until = hold_until.expect("the hold was recorded");
    assert!(
        hold_until.as_second() >= held_from,
        "hold until {hold_until}, way there ended {go_end}, hold 10s"
    );
    let back_created = created(&back);
    assert!(
        back_created.as_second() >= hold_until.as_second(),
        "way back created {back_created}, hold until {hold_until}"
    );
    // Ready: when the way back first showed, the plan had been Ready since before its
    // creation, and became Ready only after the hold: the drill waited for it.
    let ready_at = ready_since(&plan_then).expect("Ready when the way back started");
    assert!(
        ready_at <= back_created,
        "Ready at {ready_at}, way back created {back_created}"
    );
    assert!(
        ready_at > hold_until,
        "re-protection (20s) outlasts the hold: Ready at {ready_at}, hold until {hold_until}"
    );
    // Where it started; the watch named both legs.
    assert_eq!(
        plan.status
            .as_ref()
            .and_then(|s| s.active_region.as_deref()),
        Some("use1")
    );
    for line in [
        format!(
            "failover.drover.io/{} created: a RoundTrip drill of plan {sc} from use1 to usw2",
            go.name_any()
        ),
        format!("Failover {} Succeeded", go.name_any()),
        "holding in usw2 until".to_string(),
        format!("failing back: {}", back.name_any()),
        format!("Failover {} Succeeded", back.name_any()),
        "drill recorded: RoundTrip Succeeded; measured RTO there".to_string(),
    ] {
        assert!(out.contains(&line), "{line:?} not in:\n{out}");
    }
    // `drover status` shows the drill below the table.
    let (shown, out, err) = Drover::spawn(&["status", &sc, "-n", &ns])
        .finish(Duration::from_secs(30))
        .await;
    assert!(shown.success(), "{out}\n{err}");
    println!("drover status:\n{out}");
    assert!(
        out.contains("  Drills:             last: RoundTrip Succeeded")
            && out.contains("next: none (every schedule is suspended)"),
        "{out}"
    );
}
