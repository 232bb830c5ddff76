//! The application side of a failover on the bed: CronJobs, and config that follows the
//! active region.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use drover::api::{Failover, FailoverMode, FailoverPhase, StepState};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};

use crate::failover::{
    Scenario, assert_never_printed, assert_phase, aws_rds, create, describe, failover, step,
    wait_terminal,
};
use crate::support::*;

/// The seeded CronJobs (seed.py --cron-jobs): report waits for its running Jobs, sweeper
/// has them stopped.
pub const CRON_JOBS: [&str; 2] = ["report", "sweeper"];

pub fn cron_jobs(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    // The bed's API servers are Kubernetes 1.20: CronJob is batch/v1beta1 there.
    let gvk = GroupVersionKind::gvk("batch", "v1beta1", "CronJob");
    Api::namespaced_with(client, ns, &ApiResource::from_gvk(&gvk))
}

pub fn resumed(cron: &DynamicObject) -> bool {
    !cron.data["spec"]["suspend"].as_bool().unwrap_or(false)
}

/// A Job of `cron` that runs until the test says otherwise (the bed has no Job controller).
async fn start_job(client: &kube::Client, ns: &str, cron: &DynamicObject) -> String {
    let cron_name = cron.metadata.name.clone().expect("named");
    let name = format!("{cron_name}-manual");
    let job: Job = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": ns, "ownerReferences": [{
            "apiVersion": "batch/v1beta1", "kind": "CronJob", "name": cron_name,
            "uid": cron.metadata.uid, "controller": true}]},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "run", "image": "busybox"}]}}},
    }))
    .expect("Job object");
    Api::<Job>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &job)
        .await
        .expect("create Job");
    name
}

/// Whether every RDS database of the scenario in `region` is a writable primary now; None
/// when the emulator did not answer.
async fn databases_writable(sc: &str, region: &str) -> Option<bool> {
    let rds = aws_rds(region).await;
    for db in ["orders", "payments"] {
        let id = format!("{sc}-{db}-{region}");
        let out = rds
            .describe_db_instances()
            .db_instance_identifier(&id)
            .send()
            .await
            .ok()?;
        let instance = out.db_instances.and_then(|mut v| v.pop())?;
        if instance
            .read_replica_source_db_instance_identifier
            .is_some()
            || instance.db_instance_status.as_deref() != Some("available")
        {
            return Some(false);
        }
    }
    Some(true)
}

async fn dry_run(mgmt: &kube::Client, ns: &str, name: &str, plan: &str) -> Failover {
    create(
        mgmt,
        ns,
        &failover(name, plan, "usw2", FailoverMode::DryRun, false),
    )
    .await;
    wait_terminal(mgmt, ns, name, Duration::from_secs(60)).await
}

/// A DryRun that preflight refuses: its failures.
async fn refused_dry_run(mgmt: &kube::Client, ns: &str, name: &str, plan: &str) -> Vec<String> {
    let refused = dry_run(mgmt, ns, name, plan).await;
    assert_phase(&refused, FailoverPhase::Failed);
    refused
        .status
        .map(|s| s.preflight_failures)
        .unwrap_or_default()
}

/// What the sampler saw: a CronJob resumed in both regions at once, a CronJob resumed in
/// `target` while its databases were not writable, and the samples taken.
struct Seen {
    both: Vec<String>,
    early: Vec<String>,
    /// Resumes seen while the emulator did not answer.
    unknown: usize,
    samples: usize,
}

/// Samples both regions' CronJobs until stopped.
fn watch_cron_jobs(
    ns: String,
    target: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let east = cron_jobs(client("use1").await, &ns);
        let west = cron_jobs(client("usw2").await, &ns);
        let in_target = if target == "usw2" { &west } else { &east };
        let mut seen = Seen {
            both: Vec::new(),
            early: Vec::new(),
            unknown: 0,
            samples: 0,
        };
        let mut was_resumed = [false; CRON_JOBS.len()];
        for (i, name) in CRON_JOBS.iter().enumerate() {
            let cron = in_target.get(name).await.expect("CronJob in the target");
            was_resumed[i] = resumed(&cron);
        }
        while !stop.load(Ordering::Acquire) {
            for (i, name) in CRON_JOBS.iter().enumerate() {
                let (e, w) = tokio::join!(east.get(name), west.get(name));
                let (Ok(e), Ok(w)) = (e, w) else { continue };
                if resumed(&e) && resumed(&w) {
                    seen.both.push(format!("{name} at sample {}", seen.samples));
                }
                let now = resumed(if target == "usw2" { &w } else { &e });
                if now && !was_resumed[i] {
                    match databases_writable(&ns, target).await {
                        Some(true) => {}
                        Some(false) => seen.early.push(name.to_string()),
                        None => seen.unknown += 1,
                    }
                }
                was_resumed[i] = now;
            }
            seen.samples += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen
    })
}

/// A Planned failover with CronJobs: both are suspended in use1 before promotion, the
/// sweeper's running Job is stopped, the report's is waited for, and both are resumed in
/// usw2 only once its databases are writable; never resumed in both regions.
#[tokio::test]
async fn cron_jobs_are_suspended_before_promotion_and_resumed_after() {
    let (scenario, _op) =
        Scenario::start("cj", &["--cron-jobs", "--fence-timeout", "90s"], &[], 15).await;
    let (mgmt, ns, sc) = scenario.parts();
    let east_client = client("use1").await;
    let east = cron_jobs(east_client.clone(), &sc);
    let west = cron_jobs(client("usw2").await, &sc);
    let jobs: Api<Job> = Api::namespaced(east_client.clone(), &sc);
    let mut running = Vec::new();
    for name in CRON_JOBS {
        let cron = east.get(name).await.expect("CronJob in use1");
        assert!(resumed(&cron), "{name} runs in the active region");
        assert!(!resumed(&west.get(name).await.expect("CronJob in usw2")));
        running.push(start_job(&east_client, &sc, &cron).await);
    }
    // Resumed in the standby, it would run against a read-only replica: preflight says so.
    let set_suspend = |suspend: bool| serde_json::json!({"spec": {"suspend": suspend}});
    west.patch(
        "report",
        &PatchParams::default(),
        &Patch::Merge(&set_suspend(false)),
    )
    .await
    .expect("resume report in usw2");
    let failures = refused_dry_run(&mgmt, &ns, &format!("{sc}-dry1"), &sc).await;
    assert_eq!(
        failures,
        vec![format!(
            "CronJob {sc}/report is not suspended in usw2: set spec.suspend to true there; \
             Drover resumes it once the databases are writable"
        )]
    );
    west.patch(
        "report",
        &PatchParams::default(),
        &Patch::Merge(&set_suspend(true)),
    )
    .await
    .expect("suspend report in usw2");
    let checked = dry_run(&mgmt, &ns, &format!("{sc}-dry2"), &sc).await;
    assert_phase(&checked, FailoverPhase::Succeeded);
    let actions = checked
        .status
        .as_ref()
        .map(|s| s.planned_actions.clone())
        .unwrap_or_default();
    for expected in [
        format!("Fence: suspend CronJob {sc}/report in use1"),
        format!("Fence: suspend CronJob {sc}/sweeper in use1 and stop its running Jobs"),
        format!("Activate: resume CronJob {sc}/sweeper in usw2"),
    ] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = watch_cron_jobs(sc.clone(), "usw2", stop.clone());
    let name = format!("{sc}-go");
    create(
        &mgmt,
        &ns,
        &failover(&name, &sc, "usw2", FailoverMode::Planned, false),
    )
    .await;
    // runningJobs: Stop: the sweeper's Job is deleted in the foreground, so it stays until
    // its pods are gone. The bed has no garbage collector: once the fence is seen still
    // waiting for it, the test removes the finalizer as the collector would.
    wait_for(
        "the sweeper's Job being deleted",
        Duration::from_secs(30),
        || async {
            let job = jobs.get_opt(&running[1]).await.ok()??;
            job.metadata.deletion_timestamp.is_some().then_some(())
        },
    )
    .await;
    let failovers: Api<drover::api::Failover> = Api::namespaced(mgmt.clone(), &ns);
    let during = failovers.get(&name).await.expect("failover");
    assert_eq!(
        step(&during, "Fence").state,
        StepState::Running,
        "{}",
        describe(&during)
    );
    assert_eq!(step(&during, "PromoteDatabases").state, StepState::Pending);
    let report_job = jobs.get_opt(&running[0]).await.expect("get Job");
    assert!(
        report_job.is_some_and(|j| j.metadata.deletion_timestamp.is_none()),
        "the report's Job is waited for, not deleted"
    );
    for name in CRON_JOBS {
        assert!(
            !resumed(&east.get(name).await.expect("CronJob")),
            "{name} suspended"
        );
    }
    let collected = serde_json::json!({"metadata": {"finalizers": null}});
    jobs.patch(
        &running[1],
        &PatchParams::default(),
        &Patch::Merge(&collected),
    )
    .await
    .expect("remove the foreground-deletion finalizer");
    wait_for(
        "the sweeper's Job gone",
        Duration::from_secs(30),
        || async {
            jobs.get_opt(&running[1])
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    // The report's Job finishes.
    let complete = serde_json::json!({"status": {"conditions": [
        {"type": "Complete", "status": "True"}]}});
    jobs.patch_status(
        &running[0],
        &PatchParams::default(),
        &Patch::Merge(&complete),
    )
    .await
    .expect("complete the Job");

    let fo = wait_terminal(&mgmt, &ns, &name, Duration::from_secs(120)).await;
    stop.store(true, Ordering::Release);
    let seen = sampler.await.expect("sampler");
    assert_phase(&fo, FailoverPhase::Succeeded);
    assert!(seen.samples > 10, "{} samples", seen.samples);
    assert!(
        seen.both.is_empty(),
        "resumed in both regions: {:?}",
        seen.both
    );
    assert!(
        seen.early.is_empty(),
        "resumed before usw2's databases were writable: {:?}",
        seen.early
    );
    assert_eq!(seen.unknown, 0, "resumes judged without an answer");
    let promoted = step(&fo, "PromoteDatabases").finished_at.clone();
    let activated = step(&fo, "Activate").started_at.clone();
    assert!(
        promoted.is_some() && activated >= promoted,
        "{}",
        describe(&fo)
    );
    for name in CRON_JOBS {
        assert!(
            resumed(&west.get(name).await.expect("CronJob")),
            "{name} resumed in usw2"
        );
        assert!(
            !resumed(&east.get(name).await.expect("CronJob")),
            "{name} suspended in use1"
        );
    }
    assert_eq!(
        step(&fo, "Activate").message.as_deref(),
        Some(format!("resumed {sc}/report → 1, {sc}/sweeper → 1").as_str())
    );
}

/// The restartedAt annotation of a Deployment's pod template in `cluster`.
async fn restarted_at(cluster: &str, ns: &str, name: &str) -> Option<String> {
    use k8s_openapi::api::apps::v1::Deployment;
    let d = Api::<Deployment>::namespaced(client(cluster).await, ns)
        .get(name)
        .await
        .expect("Deployment");
    d.spec?
        .template
        .metadata?
        .annotations?
        .get("kubectl.kubernetes.io/restartedAt")
        .cloned()
}

/// A Planned failover with spec.config (seed.py --config): the ConfigMap's ACTIVE_REGION
/// and the Secret's ORDERS_HOST (the orders database's endpoint, read after promotion)
/// switch in usw2 and in use1, each change recorded by key only; web is restarted in usw2
/// after the promotion and rolled out, the writer orders-writer started only after the
/// write, DNS moved after both; the Secret's other value is never printed.
#[tokio::test]
async fn config_follows_the_active_region_and_restarts_come_after_promotion() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use k8s_openapi::api::rbac::v1::RoleBinding;
    let (scenario, op) = Scenario::start("cfg", &["--config"], &[], 15).await;
    let (mgmt, ns, sc) = scenario.parts();
    // Without the config role bound in usw2, the write Reconfigure would make is refused:
    // preflight says so (a server-side dry run of that write), before anything changes.
    let bindings: Api<RoleBinding> = Api::namespaced(client("usw2").await, &sc);
    let binding = bindings
        .get("drover-member-config")
        .await
        .expect("the config RoleBinding");
    bindings
        .delete("drover-member-config", &Default::default())
        .await
        .expect("unbind");
    let failures = refused_dry_run(&mgmt, &ns, &format!("{sc}-dry1"), &sc).await;
    for (kind, object) in [("ConfigMap", "app-config"), ("Secret", "db")] {
        let said = format!("{kind} {sc}/{object} in usw2: region usw2: the credentials");
        assert!(
            failures
                .iter()
                .any(|f| f.starts_with(&said) && f.contains("may not patch")),
            "{said} … may not patch, in {failures:?}"
        );
    }
    let mut rebound = binding.clone();
    rebound.metadata = kube::api::ObjectMeta {
        name: binding.metadata.name.clone(),
        ..Default::default()
    };
    bindings
        .create(&PostParams::default(), &rebound)
        .await
        .expect("bind again");
    let checked = dry_run(&mgmt, &ns, &format!("{sc}-dry2"), &sc).await;
    assert_phase(&checked, FailoverPhase::Succeeded);

    let name = format!("{sc}-go");
    create(
        &mgmt,
        &ns,
        &failover(&name, &sc, "usw2", FailoverMode::Planned, false),
    )
    .await;
    let fo = wait_terminal(&mgmt, &ns, &name, Duration::from_secs(120)).await;
    assert_phase(&fo, FailoverPhase::Succeeded);
    let status = fo.status.clone().expect("status");

    let endpoint = aws_rds("usw2")
        .await
        .describe_db_instances()
        .db_instance_identifier(format!("{sc}-orders-usw2"))
        .send()
        .await
        .expect("describe")
        .db_instances
        .and_then(|mut v| v.pop())
        .and_then(|d| d.endpoint?.address)
        .expect("an endpoint");
    for region in ["usw2", "use1"] {
        let cm = Api::<ConfigMap>::namespaced(client(region).await, &sc)
            .get("app-config")
            .await
            .expect("app-config");
        let data = cm.data.unwrap_or_default();
        assert_eq!(
            data.get("ACTIVE_REGION").map(String::as_str),
            Some("usw2"),
            "{region}"
        );
        assert_eq!(
            data.get("region").map(String::as_str),
            Some(region),
            "other keys stay"
        );
        let secret = Api::<Secret>::namespaced(client(region).await, &sc)
            .get("db")
            .await
            .expect("Secret db");
        let value = |k: &str| {
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|b| b.0.clone());
            bytes.and_then(|b| String::from_utf8(b).ok())
        };
        assert_eq!(value("ORDERS_HOST"), Some(endpoint.clone()), "{region}");
        // Compared without printing it.
        let kept = value("PASSWORD").as_deref() == Some("s3cr3t-db-do-not-print");
        assert!(kept, "the Secret's other key changed in {region}");
    }
    let mut changes: Vec<(String, String, String, Vec<String>)> = status
        .config_changes
        .iter()
        .map(|c| {
            (
                c.kind.clone(),
                c.name.clone(),
                c.region.clone(),
                c.keys.clone(),
            )
        })
        .collect();
    changes.sort();
    let change = |kind: &str, name: &str, region: &str, key: &str| {
        (
            kind.to_string(),
            name.to_string(),
            region.to_string(),
            vec![key.to_string()],
        )
    };
    assert_eq!(
        changes,
        vec![
            change("ConfigMap", "app-config", "use1", "ACTIVE_REGION"),
            change("ConfigMap", "app-config", "usw2", "ACTIVE_REGION"),
            change("Secret", "db", "use1", "ORDERS_HOST"),
            change("Secret", "db", "usw2", "ORDERS_HOST"),
        ]
    );

    // web restarted in usw2 only, once, after every database was promoted; the writer
    // orders-writer was not warmed up with the old values but started after the write.
    let promoted = step(&fo, "PromoteDatabases")
        .finished_at
        .clone()
        .expect("promotion finished");
    let restarted: Vec<&str> = status
        .restarts
        .iter()
        .map(|r| r.workload.as_str())
        .collect();
    assert_eq!(restarted, vec![format!("{sc}/web")]);
    let r = &status.restarts[0];
    assert_eq!(r.region, "usw2");
    let at: k8s_openapi::jiff::Timestamp = r.restarted_at.parse().expect("a timestamp");
    assert!(
        at >= promoted.0,
        "web restarted before the promotion finished"
    );
    assert_eq!(
        restarted_at("usw2", &sc, "web").await.as_deref(),
        Some(r.restarted_at.as_str())
    );
    assert_eq!(restarted_at("use1", &sc, "web").await, None);
    assert_eq!(restarted_at("usw2", &sc, "orders-writer").await, None);
    let reconfigure = step(&fo, "Reconfigure");
    assert_eq!(reconfigure.state, StepState::Succeeded, "{}", describe(&fo));
    let message = reconfigure.message.clone().unwrap_or_default();
    assert!(
        message.contains(&format!("started {sc}/orders-writer → 2")),
        "{message}"
    );
    let dns = step(&fo, "SwitchDns").started_at.clone();
    assert!(
        dns.is_some() && dns >= reconfigure.finished_at,
        "DNS moved before the config: {}",
        describe(&fo)
    );
    let activate = step(&fo, "Activate");
    assert_eq!(activate.state, StepState::Succeeded, "{}", describe(&fo));
    assert_never_printed(&mgmt, &ns, &status, &op.log).await;
}
