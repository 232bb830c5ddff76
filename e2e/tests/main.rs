//! End-to-end tests against the sandbox: real kube-apiservers and the extended AWS emulator.
//! Each test uses its own namespace and its own operator process.

mod apps;
mod automatic;
mod drills;
mod failover;
mod gameday;
mod observe;
mod operate;
mod prometheus;
mod scale;
mod support;

use std::time::{Duration, Instant};

use drover::api::{DisasterRecoveryPlan, Failover, FailoverMode, FailoverSpec, crds};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use support::*;

fn condition<'a>(
    plan: &'a DisasterRecoveryPlan,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    plan.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// The committed CRDs install on the real server (plain create/replace, since SSA of
/// CEL rules fails on 1.20), become Established, and serve a custom resource. A server
/// built without the reflect2 fix crashes on that write.
#[tokio::test]
async fn crds_install_and_serve_custom_resources() {
    let client = client("mgmt").await;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds() {
        let name = crd.metadata.name.clone().expect("named");
        // Other tests may create the same CRD concurrently: on a conflict, read and retry.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = match api.get_opt(&name).await.expect("get crd") {
                None => api.create(&PostParams::default(), &crd).await,
                Some(existing) => {
                    let mut updated = crd.clone();
                    updated.metadata.resource_version = existing.metadata.resource_version;
                    api.replace(&name, &PostParams::default(), &updated).await
                }
            };
            match result {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 409 && attempts < 5 => continue,
                Err(e) => panic!("installing CRD {name}: {e}"),
            }
        }
        wait_for(
            &format!("{name} Established"),
            Duration::from_secs(30),
            || async {
                let crd = api.get(&name).await.ok()?;
                crd.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
    }
    let ns = namespace(&client, "e2e-crds").await;
    let plans: Api<DisasterRecoveryPlan> = Api::namespaced(client.clone(), &ns);
    let created = plans
        .create(&PostParams::default(), &sample_plan(&ns, "shop"))
        .await
        .expect("custom resource create");
    assert_eq!(created.spec.regions.len(), 2);
    let fetched = plans.get("shop").await.expect("custom resource read");
    assert_eq!(fetched.spec, created.spec);
}

async fn create_sample_plan(client: &kube::Client, ns: &str) -> Api<DisasterRecoveryPlan> {
    let plans: Api<DisasterRecoveryPlan> = Api::namespaced(client.clone(), ns);
    plans
        .create(&PostParams::default(), &sample_plan(ns, "shop"))
        .await
        .expect("create plan");
    plans
}

async fn plan_with_operator(ns_name: &str) -> (kube::Client, String, Operator) {
    let client = client("mgmt").await;
    ensure_crds(&client).await;
    let ns = namespace(&client, ns_name).await;
    let operator = Operator::start(&format!("{ns_name}-op"), &ns, 15);
    operator.wait_ready().await;
    (client, ns, operator)
}

/// The operator becomes ready, and the sample plan reaches Valid=True for its current
/// generation, with both member clusters checked through their kubeconfig Secrets as the
/// non-admin member user. Its databases do not exist on the bed, so it is not Ready: no
/// standby protects it, and Ready says so.
#[tokio::test]
async fn sample_plan_becomes_valid_and_its_regions_ready() {
    let (client, ns, operator) = plan_with_operator("e2e-sample").await;
    let plans = create_sample_plan(&client, &ns).await;
    let plan = wait_for("regions checked", Duration::from_secs(30), || async {
        let plan = plans.get("shop").await.ok()?;
        let ready = condition(&plan, "Ready")?;
        (ready.reason == "Unprotected").then_some(plan)
    })
    .await;
    let ready = condition(&plan, "Ready").expect("Ready");
    assert_eq!(ready.status, "False");
    assert!(
        ready
            .message
            .starts_with("a failback is not possible now: orders in usw2 Unprotected"),
        "{}",
        ready.message
    );
    let valid = condition(&plan, "Valid").expect("Valid condition");
    assert_eq!(valid.status, "True");
    assert_eq!(valid.observed_generation, plan.metadata.generation);
    let status = plan.status.as_ref().expect("status");
    assert_eq!(status.observed_generation, plan.metadata.generation);
    assert_eq!(status.active_region.as_deref(), Some("use1"));
    assert_eq!(status.regions.len(), 2);
    assert!(
        status.regions.iter().all(|r| r.ready),
        "{:?}",
        status.regions
    );
    assert_eq!(operator.metric("drover_plan_ready"), Some(0.0));

    // Status writes do not retrigger reconciles: one periodic re-check (every 5 s here)
    // costs one reconcile, not a loop.
    let checked_at = |p: &DisasterRecoveryPlan| {
        p.status
            .as_ref()
            .and_then(|s| s.regions.first()?.last_checked.clone())
    };
    let first_check = checked_at(&plan);
    let reconciles =
        |op: &Operator| op.metric_with("drover_reconcile_total", "controller=\"plan\"");
    let before = reconciles(&operator).expect("plan reconciles counted");
    wait_for("periodic re-check", Duration::from_secs(15), || async {
        let plan = plans.get("shop").await.ok()?;
        (checked_at(&plan) != first_check).then_some(())
    })
    .await;
    let after = reconciles(&operator).expect("plan reconciles counted");
    assert!(
        after - before <= 3.0,
        "{before} -> {after} reconciles in one resync period"
    );

    // A new generation is observed too.
    let patch = serde_json::json!({"spec": {"objectives": {"rto": "10m", "rpo": "30s"}}});
    plans
        .patch("shop", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch plan");
    wait_for("generation 2 observed", Duration::from_secs(30), || async {
        let plan = plans.get("shop").await.ok()?;
        (condition(&plan, "Valid")?.observed_generation == Some(2)).then_some(())
    })
    .await;
}

/// Copies the bed's usw2 member kubeconfig Secret into `ns` as `name`, its token replaced.
async fn usw2_kubeconfig_with_token(client: &kube::Client, ns: &str, name: &str, token: &str) {
    use k8s_openapi::api::core::v1::Secret;
    let bed: Api<Secret> = Api::namespaced(client.clone(), "drover-system");
    let original = bed.get("usw2-kubeconfig").await.expect("the bed's Secret");
    let bytes = original
        .data
        .as_ref()
        .and_then(|d| d.get("kubeconfig"))
        .expect("kubeconfig key")
        .0
        .clone();
    let mut kubeconfig: serde_json::Value = serde_yaml::from_slice(&bytes).expect("a kubeconfig");
    kubeconfig["users"][0]["user"] = serde_json::json!({ "token": token });
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": ns},
        "stringData": {"kubeconfig": kubeconfig.to_string()},
    }))
    .expect("Secret object");
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create Secret");
}

/// Waits until the plan's Ready condition is False with a message that `accept`s.
async fn not_ready_with(
    plans: &Api<DisasterRecoveryPlan>,
    name: &str,
    accept: impl Fn(&str) -> bool,
) -> DisasterRecoveryPlan {
    wait_for(
        "plan Ready=False for the broken Secret",
        Duration::from_secs(60),
        || async {
            let plan = plans.get(name).await.ok()?;
            let ready = condition(&plan, "Ready")?;
            (ready.status == "False" && accept(&ready.message)).then_some(plan)
        },
    )
    .await
}

fn assert_no_dump(text: &str) {
    for dump in ["Status {", "ApiError", "Some(", "code:"] {
        assert!(!text.contains(dump), "a debug dump in {text:?}");
    }
}

/// A member kubeconfig Secret whose token the cluster rejects, then one whose identity has
/// no role there: the plan's Ready condition, its region status and its Event say so in
/// one sentence naming the region and the Secret, never kube's dump of the API's answer.
#[tokio::test]
async fn member_credential_errors_are_plain_sentences() {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let (client, ns, _operator) = plan_with_operator("e2e-creds").await;
    usw2_kubeconfig_with_token(&client, &ns, "usw2-wrong-token", "not-a-token").await;
    let mut plan = sample_plan(&ns, "shop");
    plan.spec.regions[1].cluster.kubeconfig_secret_ref = Some(drover::api::SecretKeyRef {
        name: "usw2-wrong-token".into(),
        namespace: None,
        key: None,
    });
    let plans: Api<DisasterRecoveryPlan> = Api::namespaced(client.clone(), &ns);
    plans
        .create(&PostParams::default(), &plan)
        .await
        .expect("create plan");
    let rejected = format!(
        "the cluster rejected the credentials in Secret {ns}/usw2-wrong-token: Unauthorized"
    );
    let plan = not_ready_with(&plans, "shop", |m| m.contains("usw2")).await;
    let ready = condition(&plan, "Ready").expect("Ready");
    assert_eq!(ready.message, format!("usw2: {rejected}"));
    assert_eq!(ready.reason, "RegionsNotReady");
    let usw2 = plan
        .status
        .as_ref()
        .and_then(|s| s.regions.iter().find(|r| r.name == "usw2"))
        .expect("usw2 status");
    assert_eq!(usw2.message.as_deref(), Some(rejected.as_str()));
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    wait_for("PlanNotReady Event", Duration::from_secs(30), || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("PlanNotReady")
                    && e.note.as_deref() == Some(ready.message.as_str())
            })
            .then_some(())
    })
    .await;

    // A token the cluster accepts, for an identity with no role there (a ServiceAccount
    // of usw2's default namespace): discovery works, reading the workloads does not.
    let usw2_client = support::client("usw2").await;
    let account = unique("drover-no-role");
    let accounts: Api<ServiceAccount> = Api::namespaced(usw2_client, "default");
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": account}}))
            .expect("ServiceAccount object");
    accounts
        .create(&PostParams::default(), &sa)
        .await
        .expect("create ServiceAccount");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = accounts
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .expect("token")
        .status
        .expect("token status")
        .token;
    usw2_kubeconfig_with_token(&client, &ns, "usw2-no-role", &token).await;
    let patch = serde_json::json!({"spec": {"regions": [
        plan.spec.regions[0],
        {"name": "usw2", "awsRegion": "us-west-2", "initialRole": "Standby",
         "cluster": {"kubeconfigSecretRef": {"name": "usw2-no-role"}}},
    ]}});
    plans
        .patch("shop", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch plan");
    let forbidden = format!(
        "usw2: Deployment shop/web: the credentials in Secret {ns}/usw2-no-role may not get \
         deployments.apps in namespace shop: deployments.apps \"web\" is forbidden: User \
         \"system:serviceaccount:default:{account}\" cannot get resource \"deployments\""
    );
    let plan = not_ready_with(&plans, "shop", |m| m.contains("usw2-no-role")).await;
    let message = &condition(&plan, "Ready").expect("Ready").message;
    assert!(message.starts_with(&forbidden), "{message}");
    assert_no_dump(message);
}

/// Each malformed plan gets Valid=False naming the field, and a Warning Event.
#[tokio::test]
async fn malformed_plans_are_reported_by_field() {
    let (client, ns, _operator) = plan_with_operator("e2e-invalid").await;
    let plans: Api<DisasterRecoveryPlan> = Api::namespaced(client.clone(), &ns);

    let mut cases: Vec<(&str, DisasterRecoveryPlan, &str)> = Vec::new();
    let mut dup = sample_plan(&ns, "duplicate-region");
    dup.spec.regions[1].name = "use1".into();
    cases.push(("duplicate-region", dup, "spec.regions[1].name"));
    let mut missing = sample_plan(&ns, "missing-target");
    missing.spec.dns[0].records[0].targets.pop();
    cases.push(("missing-target", missing, "spec.dns[0].records[0].targets"));
    let mut negative = sample_plan(&ns, "negative-replicas");
    negative.spec.workloads[0].active_replicas = -2;
    cases.push((
        "negative-replicas",
        negative,
        "spec.workloads[0].activeReplicas",
    ));
    let mut duration = sample_plan(&ns, "bad-duration");
    duration.spec.objectives.rpo = "half a minute".into();
    cases.push(("bad-duration", duration, "spec.objectives.rpo"));
    let mut secret = sample_plan(&ns, "missing-secret");
    secret.spec.regions[0]
        .cluster
        .kubeconfig_secret_ref
        .as_mut()
        .expect("secret ref")
        .name = "nope".into();
    cases.push((
        "missing-secret",
        secret,
        "spec.regions[0].cluster.kubeconfigSecretRef.name",
    ));

    for (_, plan, _) in &cases {
        plans
            .create(&PostParams::default(), plan)
            .await
            .expect("server accepts the object; drover judges it");
    }
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    for (name, _, field) in &cases {
        let plan = wait_for(
            &format!("{name} Valid=False"),
            Duration::from_secs(30),
            || async {
                let plan = plans.get(name).await.ok()?;
                (condition(&plan, "Valid")?.status == "False").then_some(plan)
            },
        )
        .await;
        let valid = condition(&plan, "Valid").expect("Valid");
        assert!(valid.message.contains(field), "{name}: {:?}", valid.message);
        assert_eq!(valid.observed_generation, Some(1));
        assert_eq!(
            condition(&plan, "Ready").expect("Ready").reason,
            "PlanInvalid"
        );
        let health = observe::assert_health("health-plan.lua", &plan, "Degraded");
        assert!(health.contains(field), "{health}");
        wait_for(
            &format!("{name} Warning event"),
            Duration::from_secs(30),
            || async {
                let list = events.list(&Default::default()).await.ok()?;
                list.items
                    .iter()
                    .any(|e| {
                        e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(*name)
                            && e.type_.as_deref() == Some("Warning")
                            && e.note.as_deref().is_some_and(|n| n.contains(field))
                    })
                    .then_some(())
            },
        )
        .await;
    }
}

/// An edited Failover spec is flagged: the 1.20 server drops the CEL rule, so the
/// controller notices the generation bump.
#[tokio::test]
async fn edited_failover_spec_is_flagged() {
    let (client, ns, _operator) = plan_with_operator("e2e-immutable").await;
    create_sample_plan(&client, &ns).await;
    let failovers: Api<Failover> = Api::namespaced(client.clone(), &ns);
    let fo = Failover::new(
        "to-usw2",
        FailoverSpec::new("shop", "usw2", FailoverMode::DryRun),
    );
    failovers
        .create(&PostParams::default(), &fo)
        .await
        .expect("create failover");
    wait_for("dry run finished", Duration::from_secs(30), || async {
        let fo = failovers.get("to-usw2").await.ok()?;
        fo.status?.phase?.is_terminal().then_some(())
    })
    .await;

    let patch = serde_json::json!({"spec": {"targetRegion": "use1"}});
    let edit = failovers
        .patch("to-usw2", &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    match edit {
        // A server with CEL refuses the edit outright.
        Err(kube::Error::Api(e)) => assert!(e.message.contains("immutable"), "{e:?}"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => {
            let fo = wait_for("edit flagged", Duration::from_secs(30), || async {
                let fo = failovers.get("to-usw2").await.ok()?;
                let flagged =
                    fo.status.as_ref()?.conditions.iter().any(|c| {
                        c.type_ == "Valid" && c.status == "False" && c.reason == "SpecEdited"
                    });
                flagged.then_some(fo)
            })
            .await;
            assert_eq!(fo.status.and_then(|s| s.observed_generation), Some(2));
        }
    }
}

/// Two operators: exactly one holds the Lease and acts; killing it hands over within
/// the lease duration.
#[tokio::test]
async fn one_leader_and_handover_within_lease_duration() {
    let client = client("mgmt").await;
    ensure_crds(&client).await;
    let ns = namespace(&client, "e2e-leader").await;
    let lease_seconds = 6u16;
    let mut first = Operator::start("leader-a", &ns, lease_seconds);
    first.wait_ready().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    wait_for("leader-a leads", Duration::from_secs(30), || async {
        (first.metric("drover_leader")? == 1.0).then_some(())
    })
    .await;
    let second = Operator::start("leader-b", &ns, lease_seconds);
    second.wait_ready().await;
    // The standby is ready but does not lead while the first renews.
    let lease = leases.get("drover-leader").await.expect("lease exists");
    let holder = lease.spec.and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("leader-a"));
    assert_eq!(second.metric("drover_leader"), Some(0.0));
    assert_eq!(first.metric("drover_leader"), Some(1.0));

    // Only the leader acts: the plan's status is written by reconciles counted at leader-a.
    let plans = create_sample_plan(&client, &ns).await;
    wait_for(
        "plan reconciled by leader",
        Duration::from_secs(30),
        || async {
            let plan = plans.get("shop").await.ok()?;
            condition(&plan, "Valid").map(|_| ())
        },
    )
    .await;
    // The counter moves just after the status write the loop above saw.
    wait_for(
        "leader-a counts the reconcile",
        Duration::from_secs(10),
        || async { (first.metric("drover_reconcile_total")? >= 1.0).then_some(()) },
    )
    .await;
    assert_eq!(second.metric("drover_reconcile_total"), None);

    // Hard kill (no release): the standby takes over once the lease expires.
    let killed = Instant::now();
    first.kill();
    wait_for(
        "leader-b takes over",
        Duration::from_secs(u64::from(lease_seconds) + 10),
        || async { (second.metric("drover_leader")? == 1.0).then_some(()) },
    )
    .await;
    let handover = killed.elapsed();
    println!(
        "handover after hard kill: {:.2}s (lease {lease_seconds}s)",
        handover.as_secs_f64()
    );
    assert!(
        handover <= Duration::from_secs(u64::from(lease_seconds) + 2),
        "handover took {handover:?}"
    );
    let lease = leases.get("drover-leader").await.expect("lease exists");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("leader-b")
    );
    // The new leader acts on the plan too.
    wait_for("new leader reconciles", Duration::from_secs(30), || async {
        (second.metric("drover_reconcile_total")? >= 1.0).then_some(())
    })
    .await;
    let name = plans.get("shop").await.expect("plan").name_any();
    assert_eq!(name, "shop");
}

async fn rds(region: &str) -> aws_sdk_rds::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://127.0.0.1:{}", aws_port()))
        .region(aws_config::Region::new(region.to_string()))
        .credentials_provider(aws_sdk_rds::config::Credentials::new(
            "testing", "testing", None, None, "e2e",
        ))
        .load()
        .await;
    aws_sdk_rds::Client::new(&config)
}

fn call_count(service: &str, region: &str, operation: &str) -> u64 {
    bed("GET", "/calls", serde_json::json!({}))["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter(|c| c["service"] == service && c["region"] == region && c["operation"] == operation)
        .map(|c| c["count"].as_u64().unwrap_or(0))
        .sum()
}

/// The emulator's promotion is asynchronous: `modifying`, then `available` with the
/// replica link broken on both sides. An injected throttle reaches the Rust SDK, which
/// retries it.
#[tokio::test]
async fn emulator_promotion_and_throttling() {
    let _serial = failover::SERIAL.lock().await;
    let east = rds("us-east-1").await;
    let west = rds("us-west-2").await;
    let primary_id = "e2e-emu-primary";
    let replica_id = "e2e-emu-replica";
    let primary = east
        .create_db_instance()
        .db_instance_identifier(primary_id)
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .master_username("admin")
        .master_user_password("password123")
        .allocated_storage(20)
        .send()
        .await
        .expect("create primary");
    let primary_arn = primary
        .db_instance
        .and_then(|d| d.db_instance_arn)
        .expect("primary arn");
    west.create_db_instance_read_replica()
        .db_instance_identifier(replica_id)
        .source_db_instance_identifier(&primary_arn)
        .send()
        .await
        .expect("create cross-region replica");
    // A new replica is `creating` for a while, and AWS promotes only an available one.
    wait_for("replica available", Duration::from_secs(30), || async {
        let d = west
            .describe_db_instances()
            .db_instance_identifier(replica_id)
            .send()
            .await
            .ok()?;
        let status = d.db_instances?.into_iter().next()?.db_instance_status?;
        (status == "available").then_some(())
    })
    .await;
    bed(
        "POST",
        "/config",
        serde_json::json!({"promotion_delay": 2.0}),
    );

    // Promoting the primary (not a replica) is refused, as on AWS.
    let refused = east
        .promote_read_replica()
        .db_instance_identifier(primary_id)
        .send()
        .await
        .expect_err("not a replica");
    assert_eq!(
        refused.as_service_error().and_then(|e| e.meta().code()),
        Some("InvalidDBInstanceState")
    );

    let started = Instant::now();
    let promoted = west
        .promote_read_replica()
        .db_instance_identifier(replica_id)
        .send()
        .await
        .expect("promote");
    assert_eq!(
        promoted
            .db_instance
            .and_then(|d| d.db_instance_status)
            .as_deref(),
        Some("modifying")
    );
    let describe = |client: aws_sdk_rds::Client, id: &'static str| async move {
        client
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
            .expect("describe")
            .db_instances
            .and_then(|mut v| v.pop())
            .expect("instance")
    };
    let during = describe(west.clone(), replica_id).await;
    assert_eq!(during.db_instance_status.as_deref(), Some("modifying"));
    assert!(during.read_replica_source_db_instance_identifier.is_some());
    // A second promotion while one runs is refused: the call is not repeated silently.
    assert!(
        west.promote_read_replica()
            .db_instance_identifier(replica_id)
            .send()
            .await
            .is_err()
    );

    let after = wait_for("promotion completes", Duration::from_secs(15), || {
        let west = west.clone();
        async move {
            let d = describe(west, replica_id).await;
            (d.db_instance_status.as_deref() == Some("available")).then_some(d)
        }
    })
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "promotion took {took:?}"
    );
    assert_eq!(after.read_replica_source_db_instance_identifier, None);
    let source = describe(east.clone(), primary_id).await;
    assert!(
        source
            .read_replica_db_instance_identifiers
            .unwrap_or_default()
            .is_empty(),
        "source still lists the replica"
    );

    // Throttle the next two DescribeDBInstances in us-west-2: the SDK retries and succeeds.
    let before = call_count("rds", "us-west-2", "DescribeDBInstances");
    bed(
        "POST",
        "/faults",
        serde_json::json!({"kind": "throttle", "service": "rds", "region": "us-west-2",
                           "operation": "DescribeDBInstances", "count": 2}),
    );
    let d = describe(west.clone(), replica_id).await;
    assert_eq!(d.db_instance_identifier.as_deref(), Some(replica_id));
    assert_eq!(
        call_count("rds", "us-west-2", "DescribeDBInstances") - before,
        3
    );
    bed("DELETE", "/faults", serde_json::json!({}));
    bed(
        "POST",
        "/config",
        serde_json::json!({"promotion_delay": 3.0}),
    );
}

/// Without the CRDs the operator stays up but not ready, and says why in its log; once
/// the CRDs are installed it becomes ready. Uses the usw2 cluster, which starts without
/// drover's CRDs, so the other tests keep theirs.
#[tokio::test]
async fn not_ready_until_crds_exist() {
    let client = client("usw2").await;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds() {
        let name = crd.metadata.name.clone().expect("named");
        if api.get_opt(&name).await.expect("get crd").is_some() {
            api.delete(&name, &Default::default())
                .await
                .expect("delete crd");
            wait_for(
                &format!("{name} deleted"),
                Duration::from_secs(30),
                || async { api.get_opt(&name).await.ok()?.is_none().then_some(()) },
            )
            .await;
        }
    }
    let ns = namespace(&client, "e2e-nocrds").await;
    let mut operator = Operator::start_in("usw2", "nocrds-op", &ns, 15, &[]);
    wait_for("readyz answers", Duration::from_secs(30), || async {
        operator.get("/readyz")
    })
    .await;
    let log = wait_for("missing-CRD log line", Duration::from_secs(30), || async {
        let log = std::fs::read_to_string(&operator.log).ok()?;
        log.contains("CRDs are not served").then_some(log)
    })
    .await;
    let (status, body) = operator.get("/readyz").expect("readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("CRDs are not installed"), "{body}");
    assert_eq!(operator.get("/healthz").map(|r| r.0), Some(200));
    assert!(
        operator.child.try_wait().expect("wait").is_none(),
        "operator exited: {log}"
    );

    ensure_crds(&client).await;
    operator.wait_ready().await;
    operator.kill();
}

/// The bed's readiness emulator: a scaled Deployment reports ready replicas only after
/// its delay, so "wait until ready" is real.
#[tokio::test]
async fn sandbox_emulates_workload_readiness() {
    use k8s_openapi::api::apps::v1::Deployment;
    let client = client("use1").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let patch = serde_json::json!({
        "metadata": {"annotations": {"bed.drover.io/ready-delay-ms": "1000"}},
        "spec": {"replicas": 3}
    });
    let scaled_at = Instant::now();
    let scaled = deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("scale web");
    let generation = scaled.metadata.generation;
    let ready = |d: &Deployment| {
        d.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    };
    assert!(ready(&scaled) < 3);
    let done = wait_for("web ready at 3", Duration::from_secs(15), || async {
        let d = deployments.get("web").await.ok()?;
        (ready(&d) == 3).then_some(d)
    })
    .await;
    let took = scaled_at.elapsed();
    assert!(took >= Duration::from_millis(900), "ready after {took:?}");
    let status = done.status.expect("status");
    assert_eq!(status.observed_generation, generation);
    assert_eq!(status.available_replicas, Some(3));

    let back = serde_json::json!({"spec": {"replicas": 0}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&back))
        .await
        .expect("scale back");
    wait_for("web back at 0", Duration::from_secs(15), || async {
        let d = deployments.get("web").await.ok()?;
        (ready(&d) == 0).then_some(())
    })
    .await;
}
