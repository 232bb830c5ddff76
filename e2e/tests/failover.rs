//! Failover scenarios on the bed. Each seeds its own plan (`e2e/seed.py`): 2 RDS databases,
//! 1 Aurora global database, 1 zone with 4 records, 6 workloads over use1 and usw2.
//! They share the emulator's call counter and fault settings, so they run one at a time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use drover::api::{
    DisasterRecoveryPlan, Failover, FailoverMode, FailoverPhase, FailoverSpec, StepState,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

use crate::observe::{assert_dashboard_metrics_exported, assert_health, assert_ksm_paths_resolve};
use crate::support::*;

/// Scenarios run one at a time: they share the emulator's counters and faults.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn python() -> PathBuf {
    let cache = std::env::var("DROVER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/drover")
        });
    cache.join("venv/bin/python")
}

pub fn seed(args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/seed.py"))
        .args(args)
        .output()
        .expect("seed.py runs");
    assert!(
        out.status.success(),
        "seed.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Seeds a scenario and creates its plan in `ns`; waits until the plan is Ready.
pub async fn seeded_plan(
    client: &kube::Client,
    ns: &str,
    name: &str,
    extra: &[&str],
) -> DisasterRecoveryPlan {
    let mut args = vec![name, "--plan-namespace", ns];
    args.extend_from_slice(extra);
    let plan: DisasterRecoveryPlan = serde_json::from_str(&seed(&args)).expect("plan JSON");
    let plans: Api<DisasterRecoveryPlan> = Api::namespaced(client.clone(), ns);
    plans
        .create(&PostParams::default(), &plan)
        .await
        .expect("create plan");
    wait_for("plan Ready", Duration::from_secs(60), || async {
        let p = plans.get(name).await.ok()?;
        let ready = p
            .status
            .as_ref()?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(p)
    })
    .await
}

pub fn failover(
    name: &str,
    plan: &str,
    target: &str,
    mode: FailoverMode,
    allow_data_loss: bool,
) -> Failover {
    Failover::new(
        name,
        FailoverSpec {
            allow_data_loss,
            ..FailoverSpec::new(plan, target, mode)
        },
    )
}

pub async fn create(client: &kube::Client, ns: &str, fo: &Failover) {
    let api: Api<Failover> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), fo)
        .await
        .expect("create failover");
}

pub async fn wait_terminal(
    client: &kube::Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Failover {
    let api: Api<Failover> = Api::namespaced(client.clone(), ns);
    wait_for(&format!("failover {name} terminal"), timeout, || async {
        let fo = api.get(name).await.ok()?;
        fo.status.as_ref()?.phase?.is_terminal().then_some(fo)
    })
    .await
}

/// Creates a Failover and waits until it ends.
pub async fn run_failover(
    client: &kube::Client,
    ns: &str,
    fo: Failover,
    timeout_secs: u64,
) -> Failover {
    let name = fo.metadata.name.clone().expect("named");
    create(client, ns, &fo).await;
    wait_terminal(client, ns, &name, Duration::from_secs(timeout_secs)).await
}

/// Waits until the Failover shows `phase`.
pub async fn wait_phase(
    client: &kube::Client,
    ns: &str,
    name: &str,
    phase: FailoverPhase,
) -> Failover {
    let api: Api<Failover> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("failover {name} {phase:?}"),
        Duration::from_secs(60),
        || async {
            let fo = api.get(name).await.ok()?;
            (fo.status.as_ref()?.phase? == phase).then_some(fo)
        },
    )
    .await
}

/// Approves a failback as the bed's admin would with `drover approve`: a FailoverApproval
/// naming the Failover and its UID.
pub async fn approve(client: &kube::Client, ns: &str, name: &str) {
    let failovers: Api<Failover> = Api::namespaced(client.clone(), ns);
    let fo = failovers.get(name).await.expect("failover to approve");
    let approval = drover::approve::approval_object(
        &fo,
        drover::api::ApprovalChoice::Approve,
        Some("e2e-admin".into()),
        "e2e".into(),
        None,
    );
    let approvals: Api<drover::api::FailoverApproval> = Api::namespaced(client.clone(), ns);
    approvals
        .create(&PostParams::default(), &approval)
        .await
        .expect("create approval");
}

pub fn assert_phase(fo: &Failover, phase: FailoverPhase) {
    assert_eq!(
        fo.status.as_ref().and_then(|s| s.phase),
        Some(phase),
        "{}",
        describe(fo)
    );
}

pub fn step<'a>(fo: &'a Failover, name: &str) -> &'a drover::api::StepStatus {
    fo.status
        .as_ref()
        .and_then(|s| s.steps.iter().find(|st| st.name == name))
        .unwrap_or_else(|| panic!("step {name} in {:?}", fo.status))
}

pub fn describe(fo: &Failover) -> String {
    serde_json::to_string_pretty(&fo.status).unwrap_or_default()
}

/// Mutating calls per operation at the emulator.
pub fn mutating_calls() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for c in bed("GET", "/calls", serde_json::json!({}))["calls"]
        .as_array()
        .expect("calls")
    {
        if c["mutating"] == true {
            let key = c["operation"].as_str().unwrap_or_default().to_string();
            *out.entry(key).or_default() += c["count"].as_u64().unwrap_or(0);
        }
    }
    out
}

pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

pub fn expected(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

async fn replicas(cluster: &str, ns: &str) -> BTreeMap<String, (i32, i32)> {
    let client = client(cluster).await;
    let api: Api<Deployment> = Api::namespaced(client, ns);
    api.list(&Default::default())
        .await
        .expect("list deployments")
        .items
        .into_iter()
        .map(|d| {
            let spec = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            let ready = d
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            (d.metadata.name.unwrap_or_default(), (spec, ready))
        })
        .collect()
}

fn counts(active: bool) -> BTreeMap<String, (i32, i32)> {
    // (active, standby) per workload, as in e2e/seed.py.
    [
        ("web", 4, 1),
        ("api", 3, 1),
        ("orders-writer", 2, 0),
        ("payments-writer", 1, 0),
        ("worker", 2, 1),
        ("cron", 1, 0),
    ]
    .iter()
    .map(|(n, a, s)| {
        let r = if active { *a } else { *s };
        (n.to_string(), (r, r))
    })
    .collect()
}

/// The seeded autoscalers in `cluster` (e2e/seed.py), as "KIND/NAME" → what Drover sets:
/// HPA bounds, the KEDA pause annotation, and the originals it saved ("-": none).
async fn autoscalers(cluster: &str, ns: &str) -> BTreeMap<String, String> {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let client = client(cluster).await;
    let mut out = BTreeMap::new();
    for (group, version, kind, plural) in [
        (
            "autoscaling",
            "v1",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
        ),
        ("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects"),
    ] {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
        for o in api.list(&Default::default()).await.expect("list").items {
            let annotation = |k: &str| {
                let a = o.metadata.annotations.as_ref().and_then(|a| a.get(k));
                a.cloned().unwrap_or_else(|| "-".into())
            };
            let bounds = match kind {
                "ScaledObject" => String::new(),
                _ => format!(
                    "min={} max={} ",
                    o.data["spec"]["minReplicas"], o.data["spec"]["maxReplicas"]
                ),
            };
            out.insert(
                format!("{kind}/{}", o.metadata.name.clone().unwrap_or_default()),
                format!(
                    "{bounds}paused={} saved={}",
                    annotation("autoscaling.keda.sh/paused-replicas"),
                    annotation("drover.io/autoscaler-original")
                ),
            );
        }
    }
    out
}

/// The seeded autoscalers as Drover leaves them: at their own settings in the active
/// region; in a standby, web's HPA held at its standby count (1) and orders-writer's
/// ScaledObject paused at 0, each with its originals saved. The HPA KEDA owns is KEDA's.
async fn assert_autoscalers(active: &str, standby: &str, ns: &str) {
    let expect = |hpa: &str, so: &str| -> BTreeMap<String, String> {
        [
            ("HorizontalPodAutoscaler/web", hpa),
            ("ScaledObject/orders-writer", so),
            (
                "HorizontalPodAutoscaler/keda-hpa-orders-writer",
                "min=1 max=1 paused=- saved=-",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    assert_eq!(
        autoscalers(active, ns).await,
        expect("min=4 max=10 paused=- saved=-", "paused=- saved=-"),
        "autoscalers in {active} (active)"
    );
    assert_eq!(
        autoscalers(standby, ns).await,
        expect(
            r#"min=1 max=1 paused=- saved={"minReplicas":4,"maxReplicas":10,"set":{"minReplicas":1,"maxReplicas":1}}"#,
            r#"paused=0 saved={"pausedReplicas":null}"#
        ),
        "autoscalers in {standby} (standby)"
    );
}

async fn dns_points_at(zone: &str, region: &str) -> bool {
    let sets = zone_records(zone).await;
    let prefix = if region == "use1" { "10.1." } else { "10.2." };
    let values = |s: &aws_sdk_route53::types::ResourceRecordSet| -> Vec<String> {
        s.resource_records
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.value)
            .collect()
    };
    let primary_ok = sets
        .iter()
        .filter(|s| s.failover.as_ref().is_some_and(|f| f.as_str() == "PRIMARY"))
        .all(|s| values(s).iter().all(|v| v.starts_with(prefix)));
    let primaries = sets
        .iter()
        .filter(|s| s.failover.as_ref().is_some_and(|f| f.as_str() == "PRIMARY"))
        .count();
    let weighted_ok = sets
        .iter()
        .filter(|s| s.weight.is_some())
        .all(|s| (s.weight == Some(100)) == values(s).iter().all(|v| v.starts_with(prefix)));
    let simple_ok = sets
        .iter()
        .filter(|s| s.r#type.as_str() == "CNAME")
        .all(|s| {
            values(s)
                .iter()
                .all(|v| v.contains(&format!("static-{region}")))
        });
    primaries == 2 && primary_ok && weighted_ok && simple_ok
}

/// A scenario's context: the serial lock, a fresh namespace with a running operator, and
/// a seeded plan that is Ready.
pub struct Scenario {
    _serial: tokio::sync::MutexGuard<'static, ()>,
    client: kube::Client,
    ns: String,
    sc: String,
    pub plan: DisasterRecoveryPlan,
}

impl Scenario {
    pub fn parts(&self) -> (kube::Client, String, String) {
        (self.client.clone(), self.ns.clone(), self.sc.clone())
    }

    pub async fn start(
        base: &str,
        seed_args: &[&str],
        operator_args: &[&str],
        lease: u16,
    ) -> (Self, Operator) {
        Self::start_with(base, seed_args, async |ns: String| {
            Operator::start_in("mgmt", &format!("{base}-op"), &ns, lease, operator_args)
        })
        .await
    }

    /// Like `start`, with the operator started by `start_operator(namespace)`.
    pub async fn start_with(
        base: &str,
        seed_args: &[&str],
        start_operator: impl AsyncFnOnce(String) -> Operator,
    ) -> (Self, Operator) {
        let serial = SERIAL.lock().await;
        let client = client("mgmt").await;
        ensure_crds(&client).await;
        let ns = namespace(&client, &format!("e2e-{base}")).await;
        let op = start_operator(ns.clone()).await;
        let sc = unique(base);
        let plan = seeded_plan(&client, &ns, &sc, seed_args).await;
        (
            Scenario {
                _serial: serial,
                client,
                ns,
                sc,
                plan,
            },
            op,
        )
    }
}

/// Samples the singleton in both clusters until stopped; returns whether it ever ran in both.
fn watch_singleton(ns: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(bool, usize)> {
    tokio::spawn(async move {
        let east: Api<Deployment> = Api::namespaced(client("use1").await, &ns);
        let west: Api<Deployment> = Api::namespaced(client("usw2").await, &ns);
        let east_pods: Api<Pod> = Api::namespaced(client("use1").await, &ns);
        let west_pods: Api<Pod> = Api::namespaced(client("usw2").await, &ns);
        // Running: scaled up, ready, or with any pod left (Terminating pods still run).
        let running = |d: Option<Deployment>, pods: usize| {
            pods > 0
                || d.map(|d| {
                    let spec = d.spec.and_then(|s| s.replicas).unwrap_or(0);
                    let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
                    spec.max(ready) > 0
                })
                .unwrap_or(false)
        };
        let cron = ListParams::default().labels("app=cron");
        let count = |r: Result<kube::core::ObjectList<Pod>, kube::Error>| {
            r.map(|l| l.items.len()).unwrap_or(0)
        };
        let mut both = false;
        let mut samples = 0;
        while !stop.load(Ordering::Acquire) {
            let (e, w, ep, wp) = tokio::join!(
                east.get_opt("cron"),
                west.get_opt("cron"),
                east_pods.list(&cron),
                west_pods.list(&cron)
            );
            if running(e.ok().flatten(), count(ep)) && running(w.ok().flatten(), count(wp)) {
                both = true;
            }
            samples += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (both, samples)
    })
}

/// Scenario 1: planned use1 → usw2, then failback. Plan, DNS and replicas follow; the
/// singleton never runs in both regions; every mutating AWS call happens exactly once.
#[tokio::test]
async fn planned_failover_and_failback() {
    let (scenario, op) = Scenario::start("sc1", &[], &[], 15).await;
    let (client, ns, sc) = scenario.parts();
    let plan = &scenario.plan;
    let zone = plan.spec.dns[0].hosted_zone_id.clone();
    assert!(dns_points_at(&zone, "use1").await);

    // Standbys are protected again by Drover: no hand-run step before the failback.
    let plans: Api<DisasterRecoveryPlan> = Api::namespaced(client.clone(), &ns);
    plans
        .patch(
            &sc,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                serde_json::json!({"spec": {"reprotection": {"rds": "Recreate"}}}),
            ),
        )
        .await
        .expect("plan patched");
    // Objects for the kube-state-metrics check: each metric must resolve on one of them.
    let mut observed = Vec::new();
    for (step_name, target, source) in [("go", "usw2", "use1"), ("back", "use1", "usw2")] {
        let name = &format!("{sc}-{step_name}");
        let moved_aside = if step_name == "back" {
            // On the way back, the old instances are deleted (final snapshots kept).
            let delete = serde_json::json!({"spec": {"reprotection": {"oldInstance": "Delete"}}});
            plans
                .patch(
                    &sc,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(delete),
                )
                .await
                .expect("plan patched");
            "DeleteDBInstance"
        } else {
            "ModifyDBInstance"
        };
        // Where the old instances of the source region are (their subnet, parameter and
        // security groups, KMS key): the replicas re-protection creates must be there too.
        let mut old_placement = Vec::new();
        for db in ["orders", "payments"] {
            old_placement.push(placement(source, &format!("{sc}-{db}-{source}")).await);
        }
        let before = mutating_calls();
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = watch_singleton(sc.clone(), stop.clone());
        create(
            &client,
            &ns,
            &failover(name, &sc, target, FailoverMode::Planned, false),
        )
        .await;
        if step_name == "back" {
            // A failback waits for approval (the plan's default), changing nothing.
            let awaiting = wait_phase(&client, &ns, name, FailoverPhase::AwaitingApproval).await;
            let approval = awaiting
                .status
                .as_ref()
                .and_then(|s| s.approval.clone())
                .expect("approval status");
            assert_eq!(
                approval.reason,
                "failback to use1 (active before the last failover)"
            );
            assert!(approval.deadline.is_some());
            let message = assert_health("health-failover.lua", &awaiting, "Suspended");
            assert!(
                message.contains(&format!("drover approve {name} -n {ns}")),
                "{message}"
            );
            assert_eq!(step(&awaiting, "Preflight").state, StepState::Succeeded);
            assert_eq!(step(&awaiting, "Fence").state, StepState::Pending);
            assert_eq!(delta(&before, &mutating_calls()), expected(&[]));
            approve(&client, &ns, name).await;
        }
        let fo = wait_terminal(&client, &ns, name, Duration::from_secs(120)).await;
        stop.store(true, Ordering::Release);
        let (both, samples) = sampler.await.expect("sampler");
        let status = fo.status.clone().expect("status");
        assert_phase(&fo, FailoverPhase::Succeeded);
        if step_name == "back" {
            let approval = status.approval.clone().expect("approval recorded");
            assert_eq!(
                approval.decision,
                Some(drover::api::ApprovalDecision::Approved)
            );
            assert_eq!(approval.decided_by.as_deref(), Some("e2e-admin"));
            assert!(approval.decided_at.is_some() && approval.seen_at.is_some());
        } else {
            assert!(status.approval.is_none(), "{}", describe(&fo));
        }
        assert!(!both, "singleton ran in both regions ({samples} samples)");
        assert!(samples > 10, "only {samples} samples");
        for st in &status.steps {
            let expected = if st.name == "Approval" && step_name == "go" {
                StepState::Skipped
            } else {
                StepState::Succeeded
            };
            assert_eq!(st.state, expected, "{}: {:?}", st.name, st.message);
        }
        let rto = status
            .timings
            .as_ref()
            .and_then(|t| t.total_seconds)
            .expect("RTO");
        println!("{name}: {source} → {target} in {rto:.2}s");
        // Re-protection: the old primaries are renamed aside and replicas of the new ones
        // created under their names; the plan is Ready (a failback possible) once they
        // replicate. Every call once, the failover's included.
        let plan = wait_for("standbys re-protected", Duration::from_secs(90), || async {
            let p = plans.get(&sc).await.ok()?;
            let status = p.status.as_ref()?;
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && status.reprotections.is_empty()).then_some(p)
        })
        .await;
        assert_eq!(
            delta(&before, &mutating_calls()),
            expected(&[
                ("PromoteReadReplica", 2),
                ("SwitchoverGlobalCluster", 1),
                ("ChangeResourceRecordSets", 1),
                (moved_aside, 2),
                ("CreateDBInstanceReadReplica", 2),
            ])
        );
        for (db, old) in ["orders", "payments"].iter().zip(&old_placement) {
            let id = format!("{sc}-{db}-{source}");
            let new = placement(source, &id).await;
            // AWS takes no parameter group for a cross-region PostgreSQL replica: it gets
            // the engine's default, and Drover says so (the rest is as the old standby).
            assert!(
                new.parameter_groups.len() == 1
                    && new.parameter_groups[0].starts_with("default.postgres"),
                "{id}: {new:?}"
            );
            assert_eq!(old.parameter_groups, vec![format!("{sc}-pg-{source}")]);
            let as_old = Placement {
                subnet_group: new.subnet_group.clone(),
                parameter_groups: old.parameter_groups.clone(),
                security_groups: new.security_groups.clone(),
                kms_key: new.kms_key.clone(),
            };
            assert_eq!(&as_old, old, "{id}: placed like the old standby");
            assert_eq!(
                new.subnet_group.as_deref(),
                Some(format!("{sc}-db-{source}").as_str()),
                "{id}: the seeded subnet group of {source}"
            );
            assert_eq!(new.security_groups.len(), 1, "{new:?}");
            let key_region = new.kms_key.as_deref().and_then(|k| k.split(':').nth(3));
            assert_eq!(key_region, Some(aws_region(source)), "{new:?}");
        }
        let replication = &plan.status.as_ref().expect("status").replication;
        assert_eq!(replication.len(), 3, "{replication:?}");
        for r in replication {
            assert_eq!(r.region, source);
            assert_eq!(r.protection.as_deref(), Some("Protected"), "{r:?}");
        }
        let renamed = aws_rds(source)
            .await
            .describe_db_instances()
            .send()
            .await
            .expect("describe")
            .db_instances
            .unwrap_or_default()
            .into_iter()
            .filter_map(|d| d.db_instance_identifier)
            .filter(|id| id.starts_with(&format!("{sc}-orders-{source}-old-")))
            .count();
        assert_eq!(
            renamed,
            usize::from(step_name == "go"),
            "the old orders primary in {source}: renamed on the way there, deleted back"
        );
        assert_health("health-failover.lua", &fo, "Healthy");
        assert_health("health-plan.lua", &plan, "Healthy");
        observed.push((
            "DisasterRecoveryPlan",
            serde_json::to_value(&plan).expect("json"),
        ));
        observed.push(("Failover", serde_json::to_value(&fo).expect("json")));
        let plan_status = plan.status.expect("plan status");
        assert_eq!(plan_status.active_region.as_deref(), Some(target));
        assert_eq!(
            plan_status.last_failover.map(|l| l.name),
            Some(name.to_string())
        );
        assert!(
            dns_points_at(&zone, target).await,
            "DNS does not point at {target}"
        );
        // Every step emitted an Event on the Failover.
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
        wait_for("an Event per step", Duration::from_secs(30), || async {
            let list = events.list(&Default::default()).await.ok()?;
            let notes: Vec<String> = list
                .items
                .iter()
                .filter(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str())
                })
                .filter(|e| matches!(e.reason.as_deref(), Some("StepSucceeded" | "StepSkipped")))
                .filter_map(|e| e.note.clone())
                .collect();
            status
                .steps
                .iter()
                .all(|st| {
                    notes
                        .iter()
                        .any(|n| n.starts_with(&format!("{}:", st.name)))
                })
                .then_some(())
        })
        .await;
        assert_eq!(replicas(target, &sc).await, counts(true));
        // The old region is at standby counts (spec); readiness follows via the emulator.
        let old: BTreeMap<String, i32> = replicas(source, &sc)
            .await
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        let standby: BTreeMap<String, i32> =
            counts(false).into_iter().map(|(k, v)| (k, v.0)).collect();
        assert_eq!(old, standby);
        assert_autoscalers(target, source, &sc).await;
    }
    assert_ksm_paths_resolve(&observed);
    let metric = |name: &str, labels: &str| op.metric_with(name, labels).unwrap_or(0.0);
    assert_eq!(
        metric(
            "drover_failovers_total",
            "mode=\"Planned\",result=\"Succeeded\""
        ),
        2.0
    );
    assert_eq!(metric("drover_failover_duration_seconds_count", ""), 2.0);
    assert!(
        metric(
            "drover_step_duration_seconds_count",
            "step=\"PromoteDatabases\""
        ) >= 2.0
    );
    assert!(
        metric(
            "drover_aws_calls_total",
            "operation=\"PromoteReadReplica\",result=\"success\""
        ) >= 4.0
    );
    assert_eq!(
        metric("drover_replication_lag_seconds", "database=\"orders\""),
        0.0
    );
    assert_eq!(metric("drover_active_region", "region=\"use1\""), 1.0);
    let (_, scrape) = op.get("/metrics").expect("metrics");
    assert_dashboard_metrics_exported(&scrape);
}

/// Scenario 3: DryRun with an image missing from the target region's ECR, a Secret that
/// the web pods need missing from the target cluster, two Secrets Manager secrets not
/// replicated there, autoscalers there that cap workloads below their active count, and
/// a failing health check there: preflight fails, lists them all,
/// and no mutating call reaches AWS. Secret values never show in the status, the Events or
/// the operator's log.
#[tokio::test]
async fn dry_run_reports_missing_image_and_changes_nothing() {
    let (scenario, op) = Scenario::start(
        "sc3",
        &[
            "--missing-image",
            "worker",
            "--missing-secret",
            "web",
            "--unreplicated-secrets",
            "--capped-autoscalers",
            "--failing-health-check",
            "usw2",
        ],
        &[],
        15,
    )
    .await;
    let (client, ns, sc) = scenario.parts();
    let before = mutating_calls();
    let spec_counts = |r: BTreeMap<String, (i32, i32)>| -> BTreeMap<String, i32> {
        r.into_iter().map(|(k, v)| (k, v.0)).collect()
    };
    let east_before = spec_counts(replicas("use1", &sc).await);
    let fo = run_failover(
        &client,
        &ns,
        failover("dry", &sc, "usw2", FailoverMode::DryRun, false),
        60,
    )
    .await;
    let status = fo.status.clone().expect("status");
    assert_phase(&fo, FailoverPhase::Failed);
    assert_health("health-failover.lua", &fo, "Degraded");
    assert_eq!(step(&fo, "Preflight").state, StepState::Failed);
    let failures = status.preflight_failures.join("; ");
    assert!(
        failures.contains(&format!("{sc}/worker:1.0.0")),
        "{failures}"
    );
    assert!(!failures.contains(&format!("{sc}/web:1.0.0")), "{failures}");
    assert!(
        failures.contains("health check") && failures.contains("for usw2 is failing"),
        "{failures}"
    );
    // The web Secret is named, with where the template uses it; objects that exist
    // (the other workloads' Secrets, the ConfigMap) are not.
    assert!(
        failures.contains(&format!(
            "workload Deployment {sc}/web needs objects missing from usw2: Secret {sc}/web-creds (envFrom)"
        )),
        "{failures}"
    );
    assert!(!failures.contains("worker-creds"), "{failures}");
    // Secrets Manager: one never replicated, one whose replication failed on a separate
    // secret of that name in the target; the replicated one passes.
    assert!(
        failures.contains(&format!(
            "Secrets Manager secret {sc}/api-token has no replica in us-west-2"
        )),
        "{failures}"
    );
    assert!(
        failures.contains(&format!(
            "Secrets Manager secret {sc}/signing-key in us-west-2 is a separate secret, not a replica of the one in us-east-1; replication from us-east-1 is Failed"
        )),
        "{failures}"
    );
    assert!(!failures.contains("db-password"), "{failures}");
    // Autoscalers in the target that cap a workload below its active count.
    for line in [
        format!(
            "HorizontalPodAutoscaler {sc}/api in usw2 caps Deployment {sc}/api at 2 replicas, below its active count 3"
        ),
        format!(
            "ScaledObject {sc}/worker in usw2 caps Deployment {sc}/worker at 1 replicas, below its active count 2"
        ),
    ] {
        assert!(failures.contains(&line), "{line}\n{failures}");
    }
    assert!(!failures.contains("app-config"), "{failures}");
    // Values never printed: every seeded value (Kubernetes and Secrets Manager) starts so;
    // Drover reads metadata and DescribeSecret only.
    assert_never_printed(&client, &ns, &status, &op.log).await;
    assert!(!status.planned_actions.is_empty());
    assert_eq!(delta(&before, &mutating_calls()), BTreeMap::new());
    assert_eq!(spec_counts(replicas("use1", &sc).await), east_before);
}

/// No seeded secret value (each starts "s3cr3t-") in a failover's status, the namespace's
/// Events or the operator's log.
pub async fn assert_never_printed(
    client: &kube::Client,
    ns: &str,
    status: &drover::api::FailoverStatus,
    log: &std::path::Path,
) {
    let secret_value = "s3cr3t-";
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let notes: String = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .iter()
        .filter_map(|e| e.note.clone())
        .collect::<Vec<_>>()
        .join("\n");
    let log = std::fs::read_to_string(log).expect("operator log");
    for (what, text) in [
        ("status", serde_json::to_string(status).expect("json")),
        ("events", notes),
        ("log", log),
    ] {
        assert!(!text.contains(secret_value), "a Secret value in the {what}");
    }
}

/// Scenario 4: lag above the RPO. Planned waits and fails at the fence deadline (and rolls
/// back); Unplanned without allowDataLoss fails before promotion; with it, it succeeds and
/// records the data-loss estimate.
#[tokio::test]
async fn lag_above_rpo() {
    let (scenario, _op) =
        Scenario::start("sc4", &["--lag", "60", "--fence-timeout", "4s"], &[], 15).await;
    let (client, ns, sc) = scenario.parts();

    let before = mutating_calls();
    let fo = run_failover(
        &client,
        &ns,
        failover("planned", &sc, "usw2", FailoverMode::Planned, false),
        60,
    )
    .await;
    assert_phase(&fo, FailoverPhase::RolledBack);
    let message = assert_health("health-failover.lua", &fo, "Suspended");
    assert!(
        message.contains("source region is still active"),
        "{message}"
    );
    let fence = step(&fo, "Fence");
    assert_eq!(fence.state, StepState::Failed);
    assert!(
        fence
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("lag did not reach 0"),
        "{fence:?}"
    );
    assert_eq!(
        replicas("use1", &sc)
            .await
            .get("orders-writer")
            .map(|r| r.0),
        Some(2),
        "fence undone"
    );
    assert_eq!(delta(&before, &mutating_calls()), BTreeMap::new());

    wait_published_lag_above(&format!("{sc}-orders-usw2"), 30.0).await;
    let fo = run_failover(
        &client,
        &ns,
        failover("unplanned", &sc, "usw2", FailoverMode::Unplanned, false),
        60,
    )
    .await;
    assert_phase(&fo, FailoverPhase::Failed);
    assert_health("health-failover.lua", &fo, "Degraded");
    // Refused at preflight (lag read above the RPO) or, if the reading there was still
    // draining, at the lag gate after the fence: either way nothing is promoted.
    let text = describe(&fo);
    assert!(
        text.contains("is not within the RPO") || text.contains("allowDataLoss is false"),
        "{text}"
    );
    assert_eq!(delta(&before, &mutating_calls()), BTreeMap::new());

    let fo = run_failover(
        &client,
        &ns,
        failover("lossy", &sc, "usw2", FailoverMode::Unplanned, true),
        90,
    )
    .await;
    let status = fo.status.clone().expect("status");
    assert_phase(&fo, FailoverPhase::Succeeded);
    let loss = status.data_loss.expect("data-loss estimate");
    // The unplanned fence stops the writers, so the replicas drain from 60 s until the gate
    // measures them: the estimate is the lag at promotion, at most the seeded 60 s.
    assert!(
        loss.max_lag_seconds > 0.0 && loss.max_lag_seconds <= 60.0,
        "{loss:?}"
    );
    assert_eq!(loss.databases.len(), 3);
    let calls = delta(&before, &mutating_calls());
    assert_eq!(calls.get("FailoverGlobalCluster"), Some(&1));
    assert_eq!(calls.get("PromoteReadReplica"), Some(&2));
}

/// Scenario 6: a second Failover created while one runs is Rejected, naming the first.
#[tokio::test]
async fn second_failover_is_rejected() {
    let (scenario, _op) = Scenario::start("sc6", &[], &[], 15).await;
    let (client, ns, sc) = scenario.parts();
    create(
        &client,
        &ns,
        &failover("first", &sc, "usw2", FailoverMode::Planned, false),
    )
    .await;
    let api: Api<Failover> = Api::namespaced(client.clone(), &ns);
    let running = wait_for("first running", Duration::from_secs(30), || async {
        let fo = api.get("first").await.ok()?;
        (fo.status.clone()?.phase? == FailoverPhase::Running).then_some(fo)
    })
    .await;
    assert_health("health-failover.lua", &running, "Progressing");
    let plans: Api<DisasterRecoveryPlan> = Api::namespaced(client.clone(), &ns);
    let plan = wait_for(
        "plan shows the running failover",
        Duration::from_secs(30),
        || async {
            let plan = plans.get(&sc).await.ok()?;
            let phase = plan
                .status
                .as_ref()?
                .last_failover
                .as_ref()?
                .phase
                .clone()?;
            (phase == "Running").then_some(plan)
        },
    )
    .await;
    assert_health("health-plan.lua", &plan, "Progressing");
    create(
        &client,
        &ns,
        &failover("second", &sc, "usw2", FailoverMode::Planned, false),
    )
    .await;
    let second = wait_terminal(&client, &ns, "second", Duration::from_secs(30)).await;
    assert_eq!(
        second.status.as_ref().and_then(|s| s.phase),
        Some(FailoverPhase::Rejected)
    );
    assert_health("health-failover.lua", &second, "Degraded");
    assert!(
        describe(&second).contains("first is already running"),
        "{}",
        describe(&second)
    );
    let first = wait_terminal(&client, &ns, "first", Duration::from_secs(120)).await;
    assert_eq!(
        first.status.as_ref().and_then(|s| s.phase),
        Some(FailoverPhase::Succeeded)
    );
}

/// The PID the sandbox recorded for `name`.
fn sandbox_pid(name: &str) -> i32 {
    let pids = std::fs::read_to_string(sandbox_dir().join("pids")).expect("pids file");
    pids.lines()
        .find_map(|l| {
            l.split_once(' ')
                .filter(|(_, n)| *n == name)
                .map(|(p, _)| p.to_string())
        })
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in the sandbox"))
}

/// Restarts a sandbox API server: SIGTERM, wait until it is gone, start it again with the
/// same command line (etcd keeps the data), and record the new PID for `sandbox.py down`.
async fn restart_api_server(cluster: &str) {
    use std::os::unix::process::CommandExt;
    let name = format!("apiserver-{cluster}");
    let pid = sandbox_pid(&name);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline readable");
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // Gone, or a zombie nobody reaps (its parent, `sandbox.py up`, has exited).
    let stopped = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        matches!(state, None | Some('Z') | Some('X'))
    };
    signal(pid, "TERM");
    // A graceful stop can wait long on open watches; a crash is a restart too.
    let graceful = std::time::Instant::now() + Duration::from_secs(15);
    while !stopped() && std::time::Instant::now() < graceful {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !stopped() {
        signal(pid, "KILL");
    }
    wait_for("API server stopped", Duration::from_secs(30), || async {
        stopped().then_some(())
    })
    .await;
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(sandbox_dir().join("logs").join(format!("{name}.log")))
        .expect("log file");
    // Detached on purpose, like the rest of the sandbox: `sandbox.py down` stops it by PID.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(&args[0])
        .args(&args[1..])
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("API server restarts");
    let pids_file = sandbox_dir().join("pids");
    let pids = std::fs::read_to_string(&pids_file).expect("pids file");
    let updated: String = pids
        .lines()
        .map(|l| {
            if l.split_once(' ').is_some_and(|(_, n)| n == name) {
                format!("{} {name}\n", child.id())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&pids_file, updated).expect("pids file written");
    let c = client(cluster).await;
    wait_for("API server back", Duration::from_secs(90), || {
        let c = c.clone();
        async move { c.apiserver_version().await.ok().map(|_| ()) }
    })
    .await;
}

/// Section 4: the management API server restarts mid-promotion. The operator loses its
/// watches, its status writes and its Lease renewals for the restart; the failover still
/// completes from the status it recorded, and every mutating call happened once. It runs
/// alone (ignored in the parallel suite; `make test` runs it after), since every other
/// test uses this API server.
#[tokio::test]
#[ignore = "restarts the shared management API server; run alone by e2e/run-tests.sh"]
async fn survives_a_management_api_server_restart() {
    let _reset = BedReset;
    let client = client("mgmt").await;
    ensure_crds(&client).await;
    let ns = namespace(&client, "e2e-mgmt-restart").await;
    let _op = Operator::start("mgmt-restart", &ns, 15);
    let sc = unique("mr");
    let before =
        planned_until_promotion_requested(&client, &ns, &sc, "through-restart", 6.0, 2.0).await;
    let restart = std::time::Instant::now();
    restart_api_server("mgmt").await;
    let down_for = restart.elapsed();
    let client = self::client("mgmt").await;
    let fo = wait_terminal(&client, &ns, "through-restart", Duration::from_secs(120)).await;
    assert_phase(&fo, FailoverPhase::Succeeded);
    println!(
        "management API server restarted in {:.1}s; failover finished {:.1}s after it was back",
        down_for.as_secs_f64(),
        restart.elapsed().saturating_sub(down_for).as_secs_f64()
    );
    assert_eq!(
        delta(&before, &mutating_calls()),
        expected(&[
            ("PromoteReadReplica", 2),
            ("SwitchoverGlobalCluster", 1),
            ("ChangeResourceRecordSets", 1)
        ])
    );
    let status = fo.status.expect("status");
    assert!(
        status
            .dns_changes
            .iter()
            .all(|c| c.status.as_deref() == Some("INSYNC")),
        "{:?}",
        status.dns_changes
    );
    let plans: Api<DisasterRecoveryPlan> = Api::namespaced(client.clone(), &ns);
    let plan = plans.get(&sc).await.expect("plan");
    assert_eq!(
        plan.status.and_then(|s| s.active_region).as_deref(),
        Some("usw2")
    );
}

/// Freezes a sandbox process (SIGSTOP) until dropped, so its clients time out as they would
/// against a lost region.
pub struct Frozen(i32);

impl Frozen {
    pub fn process(name: &str) -> Self {
        let pid = sandbox_pid(name);
        signal(pid, "STOP");
        Frozen(pid)
    }
}

fn signal(pid: i32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
    assert!(ok.is_ok_and(|s| s.success()), "kill -{sig} {pid}");
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

/// Undoes emulator settings when dropped.
pub struct BedReset;

impl Drop for BedReset {
    fn drop(&mut self) {
        bed("DELETE", "/faults", serde_json::json!({}));
        bed(
            "POST",
            "/config",
            serde_json::json!({"promotion_delay": 3.0, "switchover_delay": 3.0, "dns_sync_delay": 1.0}),
        );
    }
}

/// Loses use1 (its API server frozen, us-east-1 unreachable at the emulator) and runs an
/// Unplanned failover with allowDataLoss to usw2. use1's API server resumes when the
/// returned guard is dropped.
pub async fn lose_use1_and_fail_over(
    client: &kube::Client,
    ns: &str,
    sc: &str,
) -> (Frozen, Failover) {
    let frozen = Frozen::process("apiserver-use1");
    bed(
        "POST",
        "/outage",
        serde_json::json!({"region": "us-east-1", "down": true}),
    );
    let fo = run_failover(
        client,
        ns,
        failover("lost-use1", sc, "usw2", FailoverMode::Unplanned, true),
        180,
    )
    .await;
    (frozen, fo)
}

/// Scenario 2: Unplanned with use1's API server frozen and its AWS region unreachable: the
/// failover completes, and the steps that need the lost region are Skipped.
#[tokio::test]
async fn unplanned_with_source_region_lost() {
    let (scenario, _op) = Scenario::start(
        "sc2",
        &["--cron-jobs"],
        &["--member-timeout-seconds", "2"],
        15,
    )
    .await;
    let (client, ns, sc) = scenario.parts();
    let plan = &scenario.plan;
    let _reset = BedReset;
    // Someone resumed the report CronJob in the standby: a Planned failover would refuse,
    // this one goes ahead and suspends it until the databases are writable.
    let west = crate::apps::cron_jobs(crate::support::client("usw2").await, &sc);
    let resume = serde_json::json!({"spec": {"suspend": false}});
    west.patch("report", &PatchParams::default(), &Patch::Merge(&resume))
        .await
        .expect("resume report in usw2");
    let stop = Arc::new(AtomicBool::new(false));
    let suspended_meanwhile = {
        let (west, stop) = (west.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let now = west.get("report").await.map(|c| crate::apps::resumed(&c));
                if matches!(now, Ok(false)) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        })
    };
    let before = mutating_calls();

    let (_frozen, fo) = lose_use1_and_fail_over(&client, &ns, &sc).await;
    stop.store(true, Ordering::Release);
    let status = fo.status.clone().expect("status");
    assert_phase(&fo, FailoverPhase::Succeeded);
    let preflight = step(&fo, "Preflight").message.clone().unwrap_or_default();
    assert!(
        preflight.contains(&format!(
            "going ahead despite: CronJob {sc}/report is not suspended in usw2"
        )),
        "{preflight}"
    );
    assert!(
        suspended_meanwhile.await.expect("sampler"),
        "WarmUp suspended report in usw2"
    );
    for name in crate::apps::CRON_JOBS {
        let cron = west.get(name).await.expect("CronJob in usw2");
        assert!(
            crate::apps::resumed(&cron),
            "{name} resumed in usw2 by Activate"
        );
    }
    let promoted = step(&fo, "PromoteDatabases").finished_at.clone();
    assert!(promoted.is_some() && step(&fo, "Activate").started_at >= promoted);
    for name in ["Fence", "Verify"] {
        let st = step(&fo, name);
        assert_eq!(st.state, StepState::Skipped, "{name}: {st:?}");
        assert!(
            st.message
                .as_deref()
                .unwrap_or_default()
                .contains("region unreachable"),
            "{st:?}"
        );
    }
    assert_eq!(step(&fo, "PromoteDatabases").state, StepState::Succeeded);
    assert_eq!(
        delta(&before, &mutating_calls()),
        expected(&[
            ("PromoteReadReplica", 2),
            ("FailoverGlobalCluster", 1),
            ("ChangeResourceRecordSets", 1)
        ])
    );
    assert!(dns_points_at(&plan.spec.dns[0].hosted_zone_id, "usw2").await);
    assert_eq!(replicas("usw2", &sc).await, counts(true));
    // us-east-1 is out, so every replica reports -1: promoted on unknown lag (allowed by
    // allowDataLoss), and the estimate says the loss is unknown rather than none.
    let loss = status.data_loss.clone().expect("data-loss estimate");
    assert_eq!(loss.unknown_lag_databases.len(), 3, "{loss:?}");
    let rto = status
        .timings
        .and_then(|t| t.total_seconds)
        .unwrap_or_default();
    println!("unplanned with use1 lost: {rto:.2}s");
}

/// Seeds a plan, slows the emulator (promotion and switchover `promotion` s, DNS `dns` s),
/// starts a Planned failover `name` to usw2, and returns once a promotion call was answered,
/// with the mutating-call counts from before the failover.
async fn planned_until_promotion_requested(
    client: &kube::Client,
    ns: &str,
    sc: &str,
    name: &str,
    promotion: f64,
    dns: f64,
) -> BTreeMap<String, u64> {
    seeded_plan(client, ns, sc, &[]).await;
    bed(
        "POST",
        "/config",
        serde_json::json!({"promotion_delay": promotion, "switchover_delay": promotion, "dns_sync_delay": dns}),
    );
    let before = mutating_calls();
    create(
        client,
        ns,
        &failover(name, sc, "usw2", FailoverMode::Planned, false),
    )
    .await;
    let api: Api<Failover> = Api::namespaced(client.clone(), ns);
    wait_for("promotion requested", Duration::from_secs(60), || async {
        let fo = api.get(name).await.ok()?;
        fo.status?
            .databases
            .iter()
            .any(|d| d.state == drover::api::DatabaseState::Requested)
            .then_some(())
    })
    .await;
    before
}

/// Scenario 5: the operator is killed mid-promotion, and its successor mid-DNS-wait. The
/// third completes the failover, and every mutating call still happened once.
#[tokio::test]
async fn resumes_after_operator_is_killed() {
    let _serial = SERIAL.lock().await;
    let _reset = BedReset;
    let client = client("mgmt").await;
    ensure_crds(&client).await;
    let ns = namespace(&client, "e2e-restart").await;
    let lease = 3;
    let mut first = Operator::start("restart-a", &ns, lease);
    let sc = unique("sc5");
    let before = planned_until_promotion_requested(&client, &ns, &sc, "resume", 4.0, 4.0).await;
    let api: Api<Failover> = Api::namespaced(client.clone(), &ns);
    first.kill();
    let mut second = Operator::start("restart-b", &ns, lease);
    wait_for("DNS change pending", Duration::from_secs(60), || async {
        let fo = api.get("resume").await.ok()?;
        let pending = fo
            .status?
            .dns_changes
            .iter()
            .any(|c| c.change_id.is_some() && c.status.as_deref() == Some("PENDING"));
        pending.then_some(())
    })
    .await;
    second.kill();
    let _third = Operator::start("restart-c", &ns, lease);
    let fo = wait_terminal(&client, &ns, "resume", Duration::from_secs(120)).await;
    assert_phase(&fo, FailoverPhase::Succeeded);
    assert_eq!(
        delta(&before, &mutating_calls()),
        expected(&[
            ("PromoteReadReplica", 2),
            ("SwitchoverGlobalCluster", 1),
            ("ChangeResourceRecordSets", 1)
        ])
    );
}

/// Scenario 7: 30% of Route 53 and RDS calls throttled: the failover still completes and
/// its steps' attempts show the retries.
#[tokio::test]
async fn completes_under_throttling() {
    let (scenario, op) = Scenario::start("sc7", &[], &[], 15).await;
    let (client, ns, sc) = scenario.parts();
    let _reset = BedReset;
    for service in ["rds", "route53"] {
        bed(
            "POST",
            "/faults",
            serde_json::json!({"kind": "throttle", "service": service, "rate": 0.3}),
        );
    }
    let fo = run_failover(
        &client,
        &ns,
        failover("throttled", &sc, "usw2", FailoverMode::Planned, false),
        180,
    )
    .await;
    let status = fo.status.clone().expect("status");
    assert_phase(&fo, FailoverPhase::Succeeded);
    let throttled = op
        .metric_with("drover_aws_calls_total", "result=\"throttled\"")
        .unwrap_or(0.0);
    let retried_calls: f64 = {
        let (_, body) = op.get("/metrics").expect("metrics");
        body.lines()
            .filter(|l| {
                l.starts_with("drover_aws_calls_total") && l.contains("result=\"throttled\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        throttled > 0.0 && retried_calls > 0.0,
        "no throttled calls seen"
    );
    let attempts: u32 = status.steps.iter().map(|s| s.attempts).sum();
    println!(
        "throttled: {retried_calls} throttled calls retried; {attempts} attempts over all steps"
    );
    assert!(
        attempts as f64 > retried_calls,
        "attempts {attempts} do not include the retries"
    );
}

/// After promotion there is no going back: a DNS change that Route 53 rejects leaves the
/// failover Running, says so in status, and is retried until it succeeds.
#[tokio::test]
async fn keeps_retrying_after_promotion() {
    let (scenario, _op) =
        Scenario::start("sc8", &[], &["--retry-after-promotion-seconds", "2"], 15).await;
    let (client, ns, sc) = scenario.parts();
    let _reset = BedReset;
    let before = mutating_calls();
    bed(
        "POST",
        "/faults",
        serde_json::json!({"kind": "reject", "service": "route53", "operation": "ChangeResourceRecordSets",
                           "code": "InvalidChangeBatch", "count": 1}),
    );
    create(
        &client,
        &ns,
        &failover("stuck", &sc, "usw2", FailoverMode::Planned, false),
    )
    .await;
    let api: Api<Failover> = Api::namespaced(client.clone(), &ns);
    let stuck = wait_for(
        "retrying after promotion",
        Duration::from_secs(60),
        || async {
            let fo = api.get("stuck").await.ok()?;
            let status = fo.status.clone()?;
            let retrying = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Progressing" && c.reason == "RetryingAfterPromotion");
            retrying.then_some(fo)
        },
    )
    .await;
    let status = stuck.status.clone().expect("status");
    assert_eq!(
        status.phase,
        Some(FailoverPhase::Running),
        "{}",
        describe(&stuck)
    );
    assert_eq!(step(&stuck, "PromoteDatabases").state, StepState::Succeeded);
    let message = assert_health("health-failover.lua", &stuck, "Degraded");
    assert!(message.contains("retrying"), "{message}");
    let dns = step(&stuck, "SwitchDns");
    assert!(
        dns.message
            .as_deref()
            .unwrap_or_default()
            .contains("InvalidChangeBatch"),
        "{dns:?}"
    );
    assert!(
        describe(&stuck).contains("keeps retrying"),
        "{}",
        describe(&stuck)
    );

    let fo = wait_terminal(&client, &ns, "stuck", Duration::from_secs(60)).await;
    assert_phase(&fo, FailoverPhase::Succeeded);
    let calls = delta(&before, &mutating_calls());
    assert_eq!(calls.get("PromoteReadReplica"), Some(&2));
    assert_eq!(
        calls.get("ChangeResourceRecordSets"),
        Some(&2),
        "one rejected, one retried"
    );
}

/// The plan's replication status as the plan reconciler last wrote it.
async fn plan_status(client: &kube::Client, ns: &str, name: &str) -> DisasterRecoveryPlan {
    let plans: Api<DisasterRecoveryPlan> = Api::namespaced(client.clone(), ns);
    plans.get(name).await.expect("plan")
}

async fn route53_client() -> aws_sdk_route53::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://127.0.0.1:{}", aws_port()))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_route53::config::Credentials::new(
            "testing", "testing", None, None, "e2e",
        ))
        .load()
        .await;
    aws_sdk_route53::Client::new(&config)
}

fn aws_region(region: &str) -> &'static str {
    match region {
        "use1" => "us-east-1",
        "usw2" => "us-west-2",
        _ => "eu-west-1",
    }
}

/// Where an RDS instance is placed, as DescribeDBInstances shows it.
#[derive(Debug, PartialEq)]
struct Placement {
    subnet_group: Option<String>,
    parameter_groups: Vec<String>,
    security_groups: Vec<String>,
    kms_key: Option<String>,
}

async fn placement(region: &str, id: &str) -> Placement {
    let d = aws_rds(region)
        .await
        .describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await
        .unwrap_or_else(|e| panic!("describe {id}: {e:?}"))
        .db_instances
        .and_then(|d| d.into_iter().next())
        .unwrap_or_else(|| panic!("{id} not described"));
    Placement {
        subnet_group: d.db_subnet_group.and_then(|g| g.db_subnet_group_name),
        parameter_groups: d
            .db_parameter_groups
            .unwrap_or_default()
            .into_iter()
            .filter_map(|g| g.db_parameter_group_name)
            .collect(),
        security_groups: d
            .vpc_security_groups
            .unwrap_or_default()
            .into_iter()
            .filter_map(|g| g.vpc_security_group_id)
            .collect(),
        kms_key: d.kms_key_id,
    }
}

/// An RDS client for a sandbox region (use1, usw2, euw1) at the emulator.
pub async fn aws_rds(region: &str) -> aws_sdk_rds::Client {
    let aws_region = aws_region(region);
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://127.0.0.1:{}", aws_port()))
        .region(aws_config::Region::new(aws_region))
        .credentials_provider(aws_sdk_rds::config::Credentials::new(
            "testing", "testing", None, None, "e2e",
        ))
        .load()
        .await;
    aws_sdk_rds::Client::new(&config)
}

/// Every record set of a zone, paging as Route 53 does.
async fn zone_records(zone: &str) -> Vec<aws_sdk_route53::types::ResourceRecordSet> {
    let r53 = route53_client().await;
    let mut out = Vec::new();
    let mut next: Option<(
        String,
        Option<aws_sdk_route53::types::RrType>,
        Option<String>,
    )> = None;
    loop {
        let mut call = r53.list_resource_record_sets().hosted_zone_id(zone);
        if let Some((name, rtype, ident)) = next.take() {
            call = call
                .start_record_name(name)
                .set_start_record_type(rtype)
                .set_start_record_identifier(ident);
        }
        let page = call.send().await.expect("list records");
        out.extend(page.resource_record_sets);
        match (page.is_truncated, page.next_record_name) {
            (true, Some(name)) => {
                next = Some((name, page.next_record_type, page.next_record_identifier))
            }
            _ => return out,
        }
    }
}

/// Lag -1 (replication not running) and stale lag are unknown lag: an Unplanned failover
/// without allowDataLoss promotes nothing, not even the databases whose lag is fine, and a
/// Planned failover whose lag cannot be measured fresh after the fence rolls back.
#[tokio::test]
async fn unknown_lag_blocks_every_promotion() {
    let (scenario, _op) = Scenario::start("lagu", &["--fence-timeout", "4s"], &[], 15).await;
    let (client, ns, sc) = scenario.parts();
    let _reset = BedReset;
    let before = mutating_calls();

    // One replica's replication breaks: RDS publishes -1 for it; the others are at 0.
    bed(
        "POST",
        "/replication",
        serde_json::json!({"region": "us-west-2", "identifier": format!("{sc}-orders-usw2"), "broken": true}),
    );
    bed("POST", "/metrics/publish", serde_json::json!({}));
    let fo = run_failover(
        &client,
        &ns,
        failover("minus-one", &sc, "usw2", FailoverMode::Unplanned, false),
        60,
    )
    .await;
    assert_phase(&fo, FailoverPhase::Failed);
    let text = describe(&fo);
    assert!(text.contains("replication is not running"), "{text}");
    assert_eq!(delta(&before, &mutating_calls()), BTreeMap::new(), "{text}");
    bed(
        "POST",
        "/replication",
        serde_json::json!({"region": "us-west-2", "identifier": format!("{sc}-orders-usw2"), "broken": false}),
    );

    // No datapoint newer than the fence will come for a long time: lag is stale, so a
    // Planned failover cannot see zero lag after its fence and rolls back.
    bed(
        "POST",
        "/config",
        serde_json::json!({"metric_period": 100000}),
    );
    let fo = run_failover(
        &client,
        &ns,
        failover("stale", &sc, "usw2", FailoverMode::Planned, false),
        60,
    )
    .await;
    bed("POST", "/config", serde_json::json!({"metric_period": 60}));
    assert_phase(&fo, FailoverPhase::RolledBack);
    let fence = step(&fo, "Fence");
    assert!(
        fence
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("older than the freshness bound"),
        "{fence:?}"
    );
    assert_eq!(delta(&before, &mutating_calls()), BTreeMap::new());
    wait_for("fence undone", Duration::from_secs(30), || {
        let sc = sc.clone();
        async move { (replicas("use1", &sc).await == counts(true)).then_some(()) }
    })
    .await;
}

/// Waits until the bed has published a lag above `seconds` for a replica: after a rollback
/// the writers run again, and lag builds back up on RDS's publishing cadence.
pub fn wait_published_lag_above(identifier: &str, seconds: f64) -> impl Future<Output = ()> {
    let identifier = identifier.to_string();
    async move {
        wait_for(
            "lag published above the RPO",
            Duration::from_secs(30),
            || {
                let replicas = bed("GET", "/replication", serde_json::json!({}));
                let above = replicas["replicas"].as_array().is_some_and(|all| {
                    all.iter().any(|r| {
                        r["id"] == identifier.as_str()
                            && r["published"]["value"]
                                .as_f64()
                                .is_some_and(|v| v > seconds)
                    })
                });
                async move { above.then_some(()) }
            },
        )
        .await
    }
}

/// A zone with 1,200 plan records moves in batches within Route 53's limits (1,000
/// records per request, UPSERT counting twice), each waited on until INSYNC.
#[tokio::test]
async fn large_zone_moves_in_batches() {
    let (scenario, _op) = Scenario::start("big", &["--records", "1200"], &[], 15).await;
    let (client, ns, sc) = scenario.parts();
    let zone = scenario.plan.spec.dns[0].hosted_zone_id.clone();
    let before = mutating_calls();
    let fo = run_failover(
        &client,
        &ns,
        failover("big", &sc, "usw2", FailoverMode::Planned, false),
        180,
    )
    .await;
    assert_phase(&fo, FailoverPhase::Succeeded);
    let status = fo.status.clone().expect("status");
    let batches = &status.dns_changes;
    assert!(batches.len() >= 3, "{batches:?}");
    assert!(
        batches
            .iter()
            .all(|b| b.status.as_deref() == Some("INSYNC") && b.change_id.is_some()),
        "{batches:?}"
    );
    let calls = delta(&before, &mutating_calls());
    assert_eq!(
        calls.get("ChangeResourceRecordSets").copied(),
        Some(batches.len() as u64),
        "one call per batch: {calls:?}"
    );
    let records = zone_records(&zone).await;
    let extra: Vec<_> = records
        .iter()
        .filter(|s| s.name.starts_with('r') && s.r#type.as_str() == "A")
        .collect();
    assert_eq!(extra.len(), 1200);
    assert!(
        extra.iter().all(|s| s
            .resource_records
            .iter()
            .flatten()
            .all(|v| v.value.starts_with("10.2."))),
        "every extra record points at usw2"
    );
}

/// Three regions: use1 → euw1 leaves one PRIMARY and one SECONDARY per failover name;
/// usw2's RDS replicas still follow the old use1 primary, so the plan reports them
/// unprotected and a failover to usw2 is refused before anything changes; after use1 is
/// rebuilt as a replica of euw1, euw1 → use1 succeeds.
#[tokio::test]
async fn three_regions_there_and_back() {
    let (scenario, _op) = Scenario::start("tri", &["--regions", "use1,usw2,euw1"], &[], 15).await;
    let (client, ns, sc) = scenario.parts();
    let zone = scenario.plan.spec.dns[0].hosted_zone_id.clone();
    let before = mutating_calls();
    let fo = run_failover(
        &client,
        &ns,
        failover("to-euw1", &sc, "euw1", FailoverMode::Planned, false),
        120,
    )
    .await;
    assert_phase(&fo, FailoverPhase::Succeeded);
    let records = zone_records(&zone).await;
    for name in ["api", "admin"] {
        let roles: BTreeMap<String, String> = records
            .iter()
            .filter(|s| s.name.starts_with(&format!("{name}.")) && s.failover.is_some())
            .map(|s| {
                (
                    s.set_identifier.clone().unwrap_or_default(),
                    s.failover
                        .as_ref()
                        .map(|f| f.as_str().to_string())
                        .unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            roles,
            BTreeMap::from([
                ("euw1".to_string(), "PRIMARY".to_string()),
                ("use1".to_string(), "SECONDARY".to_string())
            ]),
            "{name}: PRIMARY is the active region, SECONDARY the next in order"
        );
    }
    // usw2's replicas still replicate from the old primary in use1. The check right after
    // the move may first say only that the active region just changed: wait for the
    // reason.
    let unprotected = wait_for("usw2 reported unprotected", Duration::from_secs(60), || {
        let client = client.clone();
        let (ns, sc) = (ns.clone(), sc.clone());
        async move {
            let plan = plan_status(&client, &ns, &sc).await;
            let status = plan.status?;
            let rows: Vec<_> = status
                .replication
                .iter()
                .filter(|r| {
                    r.region == "usw2"
                        && r.protected == Some(false)
                        && r.message
                            .as_deref()
                            .is_some_and(|m| !m.contains("the active region just changed"))
                })
                .cloned()
                .collect();
            (rows.len() == 2).then_some(rows)
        }
    })
    .await;
    assert!(
        unprotected
            .iter()
            .all(|r| r.protection.as_deref() == Some("Unprotected")
                && r.message
                    .as_deref()
                    .unwrap_or_default()
                    .contains("not of the active primary")),
        "{unprotected:?}"
    );
    let promotions = delta(&before, &mutating_calls());
    let fo = run_failover(
        &client,
        &ns,
        failover("to-usw2", &sc, "usw2", FailoverMode::Planned, false),
        60,
    )
    .await;
    assert_phase(&fo, FailoverPhase::Failed);
    assert!(
        describe(&fo).contains("not from the active region's primary"),
        "{}",
        describe(&fo)
    );
    assert_eq!(
        delta(&before, &mutating_calls()),
        promotions,
        "nothing changed"
    );

    seed(&[&sc, "use1", "--rebuild-replica", "--source", "euw1"]);
    create(
        &client,
        &ns,
        &failover("back", &sc, "use1", FailoverMode::Planned, false),
    )
    .await;
    approve(&client, &ns, "back").await;
    let fo = wait_terminal(&client, &ns, "back", Duration::from_secs(120)).await;
    assert_phase(&fo, FailoverPhase::Succeeded);
    assert_eq!(replicas("use1", &sc).await, counts(true));
    assert_eq!(replicas("euw1", &sc).await, counts(false));
    assert_eq!(
        replicas("usw2", &sc).await,
        counts(false),
        "the third region stays standby"
    );
}

/// One sample of the singleton: whether use1 answered, and whether cron had ready pods in
/// use1 and in usw2.
struct CronSample {
    at: std::time::Instant,
    east_reachable: bool,
    east_ready: bool,
    west_ready: bool,
}

/// Samples cron's ready pods in both regions until stopped. use1 may be frozen: a read that
/// does not answer within 500 ms counts as unreachable.
fn sample_cron(
    ns: String,
    stop: Arc<AtomicBool>,
    saw_lost: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<CronSample>> {
    tokio::spawn(async move {
        let east: Api<Deployment> = Api::namespaced(client("use1").await, &ns);
        let west: Api<Deployment> = Api::namespaced(client("usw2").await, &ns);
        let ready = |d: Option<Deployment>| {
            d.and_then(|d| d.status?.ready_replicas)
                .is_some_and(|r| r > 0)
        };
        let limit = Duration::from_millis(500);
        let mut samples = Vec::new();
        while !stop.load(Ordering::Acquire) {
            let (e, w) = tokio::join!(
                tokio::time::timeout(limit, east.get_opt("cron")),
                west.get_opt("cron")
            );
            let (east_reachable, east_ready) = match e {
                Ok(Ok(d)) => (true, ready(d)),
                _ => (false, false),
            };
            if !east_reachable {
                saw_lost.store(true, Ordering::Release);
            }
            samples.push(CronSample {
                at: std::time::Instant::now(),
                east_reachable,
                east_ready,
                west_ready: ready(w.ok().flatten()),
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        samples
    })
}

/// Scenario 9: use1 is lost, an Unplanned failover to usw2 succeeds and records what it
/// could not fence; failback to use1 is refused meanwhile. When use1 returns, Drover scales
/// its writers and cron to 0 until no pods are left, stops the old RDS primaries, and clears
/// the pending fences.
#[tokio::test]
async fn returning_region_is_fenced() {
    let (scenario, op) = Scenario::start("sc9", &[], &["--member-timeout-seconds", "2"], 15).await;
    let (client, ns, sc) = scenario.parts();
    let _reset = BedReset;
    let (frozen, fo) = lose_use1_and_fail_over(&client, &ns, &sc).await;
    assert_phase(&fo, FailoverPhase::Succeeded);
    assert_eq!(step(&fo, "Fence").state, StepState::Skipped);
    let stop = Arc::new(AtomicBool::new(false));
    let saw_lost = Arc::new(AtomicBool::new(false));
    let sampler = sample_cron(sc.clone(), stop.clone(), saw_lost.clone());

    let plans: Api<DisasterRecoveryPlan> = Api::namespaced(client.clone(), &ns);
    let plan = wait_for("FencePending=True", Duration::from_secs(30), || async {
        let p = plans.get(&sc).await.ok()?;
        let pending = crate::condition(&p, "FencePending")?.status == "True";
        pending.then_some(p)
    })
    .await;
    let status = plan.status.clone().expect("status");
    assert_eq!(status.active_region.as_deref(), Some("usw2"));
    let moved = status
        .last_unplanned_move
        .clone()
        .expect("lastUnplannedMove");
    assert_eq!(
        (
            moved.name.as_str(),
            moved.from_region.as_str(),
            moved.to_region.as_str()
        ),
        (kube::ResourceExt::name_any(&fo).as_str(), "use1", "usw2")
    );
    assert!(moved.started_at.is_some(), "{moved:?}");
    let mut fenced: Vec<String> = status
        .pending_fences
        .iter()
        .map(|f| {
            assert_eq!(f.region, "use1");
            f.describe()
        })
        .collect();
    fenced.sort();
    let mut wanted: Vec<String> = ["cron", "orders-writer", "payments-writer"]
        .iter()
        .map(|w| format!("Deployment {sc}/{w} in use1"))
        .chain(
            ["orders", "payments"]
                .iter()
                .map(|db| format!("RDS instance {sc}-{db}-use1 in use1")),
        )
        .collect();
    wanted.sort();
    assert_eq!(fenced, wanted, "no Aurora entry: it demotes itself");
    let message = crate::condition(&plan, "FencePending")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(wanted.iter().all(|w| message.contains(w)), "{message}");

    // Aurora: the failover left the old primary out of the global cluster until use1
    // recovers, so it protects nothing meanwhile.
    let catalog = |p: &DisasterRecoveryPlan| {
        p.status
            .as_ref()?
            .replication
            .iter()
            .find(|r| r.database == "catalog" && r.region == "use1")
            .cloned()
    };
    let lost_catalog = wait_for(
        "catalog in use1 checked",
        Duration::from_secs(30),
        || async { catalog(&plans.get(&sc).await.ok()?).filter(|r| r.protection.is_some()) },
    )
    .await;
    assert_eq!(lost_catalog.protection.as_deref(), Some("Unprotected"));
    assert!(
        lost_catalog
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("is not a secondary of"),
        "{lost_catalog:?}"
    );
    assert_eq!(lost_catalog.old_volume_snapshot, None);

    // Failback while use1 still has pending fences is refused, naming them.
    let back = run_failover(
        &client,
        &ns,
        failover("back", &sc, "use1", FailoverMode::Planned, false),
        30,
    )
    .await;
    assert_phase(&back, FailoverPhase::Rejected);
    let why = describe(&back);
    assert!(
        why.contains("pending fences") && why.contains(&format!("{sc}/cron in use1")),
        "{why}"
    );

    // A region in outage drops connections: unreachable, retried at the next check.
    wait_for(
        "an RDS call in the lost region classified as unreachable",
        Duration::from_secs(30),
        || async {
            let n = op.metric_with(
                "drover_aws_calls_total",
                "operation=\"DescribeDBInstances\",result=\"unreachable\"",
            )?;
            (n > 0.0).then_some(())
        },
    )
    .await;

    // use1 returns, once the sampler has seen it lost (so the overlap check below starts
    // from a lost region, whatever the failover's own timing).
    wait_for(
        "the sampler sees use1 lost",
        Duration::from_secs(30),
        || async { saw_lost.load(Ordering::Acquire).then_some(()) },
    )
    .await;
    drop(frozen);
    bed(
        "POST",
        "/outage",
        serde_json::json!({"region": "us-east-1", "down": false}),
    );
    let returned = std::time::Instant::now();
    let east = crate::support::client("use1").await;
    let deployments: Api<Deployment> = Api::namespaced(east.clone(), &sc);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(east, &sc);
    let rds = crate::rds("us-east-1").await;
    wait_for("use1 fenced", Duration::from_secs(60), || async {
        for w in ["cron", "orders-writer", "payments-writer"] {
            let d = deployments.get(w).await.ok()?;
            let spec = d.spec.as_ref().and_then(|s| s.replicas)?;
            let ready = d
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            let params = kube::api::ListParams::default().labels(&format!("app={w}"));
            let left = pods.list_metadata(&params).await.ok()?.items.len();
            if (spec, ready, left) != (0, 0, 0) {
                return None;
            }
        }
        for db in ["orders", "payments"] {
            let out = rds
                .describe_db_instances()
                .db_instance_identifier(format!("{sc}-{db}-use1"))
                .send()
                .await
                .ok()?;
            let status = out.db_instances()[0].db_instance_status()?.to_string();
            if status != "stopped" {
                return None;
            }
        }
        let p = plans.get(&sc).await.ok()?;
        let none = p.status.as_ref()?.pending_fences.is_empty()
            && crate::condition(&p, "FencePending")?.status == "False";
        none.then_some(())
    })
    .await;
    let fenced_in = returned.elapsed();
    stop.store(true, Ordering::Release);

    // Once use1 answers, AWS snapshots the old Aurora volume and re-adds the old primary as
    // a secondary: the plan names the snapshot (with a Warning Event) and keeps naming it
    // after the member is protected again.
    let prefix = format!("rds:unplanned-global-failover-{sc}-catalog-use1-");
    let back = wait_for(
        "catalog in use1 protected again, its old volume's snapshot named",
        Duration::from_secs(60),
        || async {
            let r = catalog(&plans.get(&sc).await.ok()?)?;
            (r.protection.as_deref() == Some("Protected") && r.old_volume_snapshot.is_some())
                .then_some(r)
        },
    )
    .await;
    let snapshot = back.old_volume_snapshot.clone().expect("snapshot");
    assert!(snapshot.identifier.starts_with(&prefix), "{snapshot:?}");
    assert_eq!(
        (
            snapshot.aws_region.as_str(),
            snapshot.cluster.as_str(),
            snapshot.failover.as_str()
        ),
        (
            "us-east-1",
            format!("{sc}-catalog-use1").as_str(),
            kube::ResourceExt::name_any(&fo).as_str()
        )
    );
    let described = rds
        .describe_db_cluster_snapshots()
        .db_cluster_snapshot_identifier(&snapshot.identifier)
        .send()
        .await
        .expect("describe the snapshot");
    assert_eq!(
        described.db_cluster_snapshots()[0].snapshot_type(),
        Some("automated")
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    let notes: Vec<String> = events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("OldVolumeSnapshot"))
        .filter_map(|e| e.note)
        .collect();
    assert_eq!(notes.len(), 1, "one Event, when found: {notes:?}");
    assert!(
        notes[0].contains(&snapshot.identifier) && notes[0].contains("copy it"),
        "{notes:?}"
    );
    let samples = sampler.await.expect("sampler");
    println!("use1 fenced {fenced_in:.1?} after it returned");
    let reachable = samples.iter().filter(|s| s.east_reachable).count();
    assert!(
        reachable > 0 && reachable < samples.len(),
        "the sampler saw use1 both lost and back: {reachable} of {} samples reached it",
        samples.len()
    );
    // A returning region runs whatever it ran when it was lost until Drover reaches it, so
    // the overlap cannot be zero; it must end at the first check that reaches use1, and
    // never come back.
    let overlap: Vec<&CronSample> = samples
        .iter()
        .filter(|s| s.east_reachable && s.east_ready && s.west_ready)
        .collect();
    if let Some(last) = overlap.last() {
        let window = last.at.saturating_duration_since(returned);
        println!(
            "cron ready in both regions for {window:.1?} after use1 returned ({} samples)",
            overlap.len()
        );
        assert!(
            window < Duration::from_secs(15),
            "cron ran in both regions {window:?} after use1 returned"
        );
    }
    assert!(
        samples.iter().all(|s| s.west_ready || !s.east_reachable),
        "cron not ready in usw2 while usw2 was active"
    );
    let plan = plans.get(&sc).await.expect("plan");
    assert_eq!(
        plan.status.and_then(|s| s.active_region).as_deref(),
        Some("usw2")
    );
    let stops = op
        .metric_with(
            "drover_aws_calls_total",
            "operation=\"StopDBInstance\",result=\"success\"",
        )
        .unwrap_or(0.0);
    assert_eq!(stops, 2.0, "one StopDBInstance per old primary");
}

/// Waits until a failover is in `step`.
async fn wait_step(client: &kube::Client, ns: &str, name: &str, step_name: &str) {
    let api: Api<Failover> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("{name} in {step_name}"),
        Duration::from_secs(60),
        || async {
            let fo = api.get(name).await.ok()?;
            (fo.status?.current_step.as_deref() == Some(step_name)).then_some(())
        },
    )
    .await
}

/// A plan edited mid-flight changes the next failover, not the running one (it runs the
/// snapshot taken at admission); a plan deleted mid-flight does not strand its failover.
#[tokio::test]
async fn plan_edit_and_deletion_mid_flight() {
    let (scenario, _op) = Scenario::start("snap", &[], &[], 15).await;
    let (client, ns, sc) = scenario.parts();
    let plans: Api<DisasterRecoveryPlan> = Api::namespaced(client.clone(), &ns);

    create(
        &client,
        &ns,
        &failover("edited", &sc, "usw2", FailoverMode::Planned, false),
    )
    .await;
    wait_step(&client, &ns, "edited", "PromoteDatabases").await;
    // web: 4 active replicas in the snapshot, 2 in the edit.
    let mut plan = plans.get(&sc).await.expect("plan");
    plan.spec.workloads[0].active_replicas = 2;
    plans
        .replace(&sc, &Default::default(), &plan)
        .await
        .expect("edit plan");
    let fo = wait_terminal(&client, &ns, "edited", Duration::from_secs(90)).await;
    assert_phase(&fo, FailoverPhase::Succeeded);
    let snapshot = fo
        .status
        .as_ref()
        .and_then(|s| s.plan_snapshot.clone())
        .expect("snapshot");
    assert_eq!(snapshot.spec.workloads[0].active_replicas, 4);
    assert_eq!(
        replicas("usw2", &sc).await.get("web").map(|r| r.0),
        Some(4),
        "the running failover kept its snapshot"
    );

    seed(&[&sc, "use1", "--rebuild-replica"]);
    create(
        &client,
        &ns,
        &failover("orphaned", &sc, "use1", FailoverMode::Planned, false),
    )
    .await;
    approve(&client, &ns, "orphaned").await;
    wait_step(&client, &ns, "orphaned", "PromoteDatabases").await;
    plans
        .delete(&sc, &Default::default())
        .await
        .expect("delete plan");
    let fo = wait_terminal(&client, &ns, "orphaned", Duration::from_secs(90)).await;
    assert_phase(&fo, FailoverPhase::Succeeded);
    assert_eq!(
        replicas("use1", &sc).await.get("web").map(|r| r.0),
        Some(2),
        "the edit applied to the next failover"
    );
}
