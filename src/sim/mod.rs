//! Deterministic simulation: the real failover driver against in-memory fakes, on
//! tokio's paused clock, under seeded random schedules of crashes at effect boundaries,
//! leader changes, AWS faults (throttling; 5xx and timeouts after the effect), lag changes
//! and region loss and return. Each schedule is checked against the invariants below.
//!
//! `cargo test --lib sim` runs 10,000 schedules; `DROVER_SIM_SCHEDULES=N` runs N, and
//! `DROVER_SIM_SEED=N` replays one schedule with its trace.
//!
//! Re-protection after a failover has its own schedules and invariants in `reprotect`.

mod fake;
mod reprotect;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::api::{
    ApprovalChoice, DisasterRecoveryPlan, DisasterRecoveryPlanStatus, Failover, FailoverApproval,
    FailoverApprovalSpec, FailoverMode, FailoverPhase, FailoverSpec, FailoverStatus,
};
use crate::engine::dns::{ChangeAction, zone_changes};
use crate::engine::machine::EffectResult;
use crate::leadership::{LeaderAws, LeaderClusters};
use crate::metrics::Metrics;
use crate::runner::{Clock, Pass, Runner};
use crate::store::FailoverFields;
use fake::{
    Aurora, FakeAws, FakeClusters, FakeLease, FakeStore, LagMode, Pod, Rds, Shared, World,
    cluster_arn, lock,
};

static METRICS: std::sync::OnceLock<Arc<Metrics>> = std::sync::OnceLock::new();

/// Restarts of the driver per schedule before it counts as unfinished.
const MAX_RUNS: usize = 14;

#[derive(Clone, Debug)]
struct WorkloadDef {
    name: &'static str,
    active: i32,
    standby: i32,
    writer: bool,
    singleton: bool,
    /// A CronJob: suspended (0) or resumed (1), in one region at most.
    cron: bool,
}

impl WorkloadDef {
    fn exclusive(&self) -> bool {
        self.writer || self.singleton || self.cron
    }
}

/// A schedule's fixed parameters, drawn from its seed.
#[derive(Clone, Debug)]
struct Scenario {
    regions: usize,
    target: usize,
    /// Per database: Aurora (true) or RDS.
    aurora: Vec<bool>,
    workloads: Vec<WorkloadDef>,
    mode: FailoverMode,
    allow_data_loss: bool,
    max_data_loss: Option<u32>,
    fault_rate: f64,
    loss_rate: f64,
    /// A failback that needs approval, and what the approver does.
    approval: Option<ApprovalScript>,
}

/// What the approver of a failback does, and after how long (virtual ms).
#[derive(Clone, Copy, Debug, PartialEq)]
enum ApprovalScript {
    Approve(u64),
    Reject(u64),
    /// Nobody decides: the wait expires.
    Never,
}

impl Scenario {
    fn draw(rng: &mut fastrand::Rng) -> Self {
        let regions = rng.usize(2..=3);
        let all = [
            WorkloadDef {
                name: "web",
                active: 2,
                standby: 1,
                writer: false,
                singleton: false,
                cron: false,
            },
            WorkloadDef {
                name: "writer",
                active: 2,
                standby: 0,
                writer: true,
                singleton: false,
                cron: false,
            },
            WorkloadDef {
                name: "cron",
                active: 1,
                standby: 0,
                writer: false,
                singleton: true,
                cron: false,
            },
            WorkloadDef {
                name: "report",
                active: 1,
                standby: 0,
                writer: false,
                singleton: false,
                cron: true,
            },
        ];
        let mut workloads: Vec<WorkloadDef> = all.iter().filter(|_| rng.bool()).cloned().collect();
        if workloads.is_empty() {
            workloads.push(all[1].clone());
        }
        let (mode, allow_data_loss, max_data_loss) = match rng.u8(0..4) {
            0 | 1 => (FailoverMode::Planned, false, None),
            2 => (FailoverMode::Unplanned, false, None),
            _ => (FailoverMode::Unplanned, true, rng.bool().then_some(30)),
        };
        Scenario {
            regions,
            target: rng.usize(1..regions),
            aurora: (0..rng.usize(1..=3)).map(|_| rng.u8(0..3) == 0).collect(),
            workloads,
            mode,
            allow_data_loss,
            max_data_loss,
            fault_rate: [0.0, 0.03, 0.1][rng.usize(0..3)],
            loss_rate: [0.0, 0.1, 0.3][rng.usize(0..3)],
            approval: match rng.u8(0..8) {
                0 => Some(ApprovalScript::Approve(rng.u64(0..30_000))),
                1 => Some(ApprovalScript::Reject(rng.u64(0..30_000))),
                2 => Some(ApprovalScript::Never),
                _ => None,
            },
        }
    }

    fn region(i: usize) -> String {
        format!("r{i}")
    }

    fn target_name(&self) -> String {
        Self::region(self.target)
    }

    fn plan(&self) -> DisasterRecoveryPlan {
        let mut y = String::from(
            "apiVersion: drover.io/v1alpha1\nkind: DisasterRecoveryPlan\n\
             metadata: {name: shop, namespace: sim, generation: 1}\nspec:\n  regions:\n",
        );
        for i in 0..self.regions {
            let role = if i == 0 { "Active" } else { "Standby" };
            y += &format!(
                "    - {{name: r{i}, awsRegion: aws-r{i}, initialRole: {role}, \
                 cluster: {{kubeconfigSecretRef: {{name: r{i}-kubeconfig}}}}}}\n"
            );
        }
        y += "  databases:\n";
        for (d, aurora) in self.aurora.iter().enumerate() {
            let members: Vec<String> = (0..self.regions)
                .map(|i| format!("{{region: r{i}, identifier: db{d}-r{i}}}"))
                .collect();
            if *aurora {
                y += &format!(
                    "    - name: db{d}\n      auroraGlobal: {{globalClusterIdentifier: g{d}, members: [{}]}}\n",
                    members.join(", ")
                );
            } else {
                y += &format!(
                    "    - name: db{d}\n      rds: {{instances: [{}]}}\n",
                    members.join(", ")
                );
            }
        }
        let targets = |v: &dyn Fn(usize) -> String| -> String {
            (0..self.regions)
                .map(|i| format!("{{region: r{i}, values: [\"{}\"]}}", v(i)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let routing = if self.regions == 2 {
            "Failover"
        } else {
            "Weighted"
        };
        y += &format!(
            "  dns:\n    - hostedZoneId: ZSIM\n      records:\n\
             \x20       - {{name: api.sim.example., type: A, routing: {routing}, ttl: 60, targets: [{}]}}\n\
             \x20       - {{name: www.sim.example., type: CNAME, routing: Simple, ttl: 60, targets: [{}]}}\n",
            targets(&|i| format!("10.0.{i}.1")),
            targets(&|i| format!("www-r{i}.sim.example.")),
        );
        y += "  workloads:\n";
        for w in &self.workloads {
            let kind = if w.cron { "CronJob" } else { "Deployment" };
            y += &format!(
                "    - {{kind: {kind}, namespace: shop, name: {}, activeReplicas: {}, \
                 standbyReplicas: {}, writer: {}, singleton: {}}}\n",
                w.name, w.active, w.standby, w.writer, w.singleton
            );
        }
        // Config follows the active region; web restarts for it (invariant 9).
        if self.workloads.iter().any(|w| w.name == "web") {
            let values: Vec<String> = (0..self.regions).map(|i| format!("r{i}: v{i}")).collect();
            y += &format!(
                "  config:\n    - {{kind: ConfigMap, namespace: shop, name: app, restart: [web], \
                 keys: [{{key: REGION, values: {{{}}}}}]}}\n",
                values.join(", ")
            );
        }
        y += "  objectives: {rto: 5m, rpo: 30s, maxLagAge: 2m}\n";
        y += "  timeouts: {preflight: 10s, fence: 30s, promotion: 60s, warmUp: 30s, dns: 30s}\n";
        y += "  approval: {timeout: 20s}\n";
        serde_yaml::from_str(&y).unwrap_or_else(|e| panic!("sim plan: {e}\n{y}"))
    }

    fn failover(&self) -> Failover {
        let mut spec = FailoverSpec::new("shop", &self.target_name(), self.mode);
        spec.allow_data_loss = self.allow_data_loss;
        spec.max_data_loss = self.max_data_loss.map(|s| format!("{s}s"));
        let mut fo = Failover::new("fo", spec);
        fo.metadata.namespace = Some("sim".into());
        fo.metadata.generation = Some(1);
        fo.metadata.creation_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        fo
    }

    /// The largest lag a promotion may follow; None when any is allowed.
    fn gate_max(&self) -> Option<f64> {
        match (self.mode, self.allow_data_loss, self.max_data_loss) {
            (FailoverMode::Unplanned, true, max) => max.map(f64::from),
            _ => Some(0.0),
        }
    }
}

fn draw_lag(rng: &mut fastrand::Rng) -> LagMode {
    match rng.u8(0..20) {
        0..=12 => LagMode::Fresh(0.0),
        13..=15 => LagMode::Fresh([0.5, 5.0, 40.0][rng.usize(0..3)]),
        16 => LagMode::Negative,
        17 | 18 => LagMode::Stale(0.0),
        _ => LagMode::Missing,
    }
}

/// What earlier failovers taught the plan: often nothing; else durations from far
/// shorter to far longer than this world's waits, so sparse polling meets every timing.
fn draw_step_durations(rng: &mut fastrand::Rng) -> Vec<crate::api::StepDurations> {
    let mut durations = Vec::new();
    if rng.bool() {
        return durations;
    }
    for step in [
        crate::engine::Step::PromoteDatabases,
        crate::engine::Step::SwitchDns,
    ] {
        for mode in [FailoverMode::Planned, FailoverMode::Unplanned] {
            for _ in 0..rng.usize(1..=3) {
                let seconds = [0.2, 2.0, 10.0, 120.0, 900.0][rng.usize(0..5)];
                crate::engine::learn_duration(&mut durations, step, mode, seconds);
            }
        }
    }
    durations
}

/// A tight AWS rate limit for a third of the schedules (drawn apart from the schedule's
/// own random numbers, which it leaves as they were).
fn rate_limit(seed: u64) -> Option<Arc<crate::ratelimit::Limiter>> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x05EE_D0F1_1317);
    if rng.u8(0..3) != 0 {
        return None;
    }
    let limit = crate::ratelimit::RateLimit {
        // 0.2 to 3 calls a second: tight enough that calls queue and some are refused.
        per_second: rng.u32(1..16) as f64 / 5.0,
        burst: rng.u32(1..6) as f64,
    };
    Some(Arc::new(crate::ratelimit::Limiter::new(
        std::collections::HashMap::from([("sim".to_string(), limit)]),
        Arc::default(),
    )))
}

fn world(sc: &Scenario, plan: &DisasterRecoveryPlan, seed: u64) -> World {
    let mut rng = fastrand::Rng::with_seed(seed);
    let t0 = Instant::now();
    let describe_lag = if rng.bool() {
        Duration::ZERO
    } else {
        Duration::from_millis(rng.u64(0..3000))
    };
    let mut rds = BTreeMap::new();
    let mut aurora = BTreeMap::new();
    let mut lag = BTreeMap::new();
    for (d, is_aurora) in sc.aurora.iter().enumerate() {
        for i in 0..sc.regions {
            let id = format!("db{d}-r{i}");
            if i > 0 {
                lag.insert(id.clone(), draw_lag(&mut rng));
            }
            if !is_aurora {
                rds.insert(
                    (format!("aws-r{i}"), id),
                    Rds::new("available", (i > 0).then(|| format!("db{d}-r0")), 1),
                );
            }
        }
        if *is_aurora {
            aurora.insert(
                format!("g{d}"),
                Aurora {
                    writer: cluster_arn("aws-r0", &format!("db{d}-r0")),
                    members: (0..sc.regions)
                        .map(|i| cluster_arn(&format!("aws-r{i}"), &format!("db{d}-r{i}")))
                        .collect(),
                    moving: None,
                },
            );
        }
    }
    let mut zones = BTreeMap::new();
    for zone in &plan.spec.dns {
        let records = zone_changes(&plan.spec, zone, "r0", &[])
            .into_iter()
            .filter(|c| c.action == ChangeAction::Upsert)
            .map(|c| c.record)
            .collect();
        zones.insert(zone.hosted_zone_id.clone(), records);
    }
    let step_durations = draw_step_durations(&mut rng);
    let mut replicas = BTreeMap::new();
    let mut pods = Vec::new();
    for i in 0..sc.regions {
        for w in &sc.workloads {
            let n = if i == 0 {
                w.active
            } else if w.exclusive() {
                0
            } else {
                w.standby
            };
            replicas.insert((Scenario::region(i), w.name.to_string()), n);
            for _ in 0..n {
                pods.push(Pod {
                    region: Scenario::region(i),
                    workload: w.name.into(),
                    created: t0,
                    ready_at: t0,
                    gone_at: None,
                });
            }
        }
    }
    World {
        rng,
        t0,
        fault_rate: sc.fault_rate,
        effects: 0,
        passes: 0,
        describes: 0,
        crash_at: None,
        crash: Arc::new(Notify::new()),
        leader_change_at: None,
        leader_change: Arc::new(Notify::new()),
        lease_epoch: 0,
        lost: Default::default(),
        rds,
        aurora,
        lag,
        zones,
        changes: BTreeMap::new(),
        replicas,
        config: BTreeMap::new(),
        restarted: BTreeMap::new(),
        status_at: BTreeMap::new(),
        pods,
        status: FailoverStatus::default(),
        rv: 1,
        plan_fields: FailoverFields {
            step_durations,
            ..Default::default()
        },
        log: Vec::new(),
        last_lag: BTreeMap::new(),
        violations: Vec::new(),
        gate_max: sc.gate_max(),
        planned: sc.mode == FailoverMode::Planned,
        describe_lag,
        db_count: sc.aurora.len(),
        limiter: rate_limit(seed),
        approvals: Vec::new(),
        reprotect: Default::default(),
    }
}

/// The approver: decides once, after the scripted delay.
async fn approver(w: Shared, script: ApprovalScript) {
    let (choice, after) = match script {
        ApprovalScript::Approve(ms) => (ApprovalChoice::Approve, ms),
        ApprovalScript::Reject(ms) => (ApprovalChoice::Reject, ms),
        ApprovalScript::Never => return,
    };
    tokio::time::sleep(Duration::from_millis(after)).await;
    let mut approval = FailoverApproval::new(
        "fo",
        FailoverApprovalSpec {
            failover_ref: "fo".into(),
            failover_uid: None,
            decision: choice,
            approver: Some("sim-approver".into()),
            approver_source: Some("simulation".into()),
            reason: Some("scripted".into()),
        },
    );
    let mut w = lock(&w);
    // The API server's creation time has whole seconds.
    let wall = w.wall();
    let secs = wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    approval.metadata.creation_timestamp = Some(Time(
        Timestamp::from_second(secs as i64).unwrap_or(Timestamp::UNIX_EPOCH),
    ));
    approval.metadata.generation = Some(1);
    w.approvals.push((Instant::now(), approval));
}

/// Lag changes and regions lost and returning, at random virtual times.
async fn weather(w: Shared, sc: Scenario, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    loop {
        tokio::time::sleep(Duration::from_millis(rng.u64(1000..15000))).await;
        let mut w = lock(&w);
        let ids: Vec<String> = w.lag.keys().cloned().collect();
        if !ids.is_empty() && rng.bool() {
            let id = ids[rng.usize(0..ids.len())].clone();
            w.lag.insert(id, draw_lag(&mut rng));
        }
        if rng.f64() < sc.loss_rate {
            // The target is lost less often: the failover can only wait for it.
            let region = if rng.u8(0..4) == 0 {
                sc.target
            } else {
                rng.usize(0..sc.regions)
            };
            let names = [Scenario::region(region), format!("aws-r{region}")];
            if w.lost.contains(&names[0]) {
                for n in &names {
                    w.lost.remove(n);
                }
            } else {
                w.lost.extend(names);
            }
        }
    }
}

/// What one schedule did.
#[derive(Debug)]
struct Report {
    phase: Option<FailoverPhase>,
    passes: u64,
    violations: Vec<String>,
    runs: usize,
    effects: u64,
    /// Seconds AWS calls waited for the schedule's rate limit, if it had one.
    rate_limited: Option<f64>,
}

fn terminal(status: &FailoverStatus) -> bool {
    status.phase.is_some_and(FailoverPhase::is_terminal)
}

/// Virtual wall-clock time: a fixed origin plus the paused tokio clock's progress.
struct SimClock(Shared);

impl Clock for SimClock {
    fn now(&self) -> SystemTime {
        lock(&self.0).wall()
    }
}

/// How long a step failed after promotion waits before it runs again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// One operator process: passes of the real runner until the failover ends, the process
/// crashes, or a write fails (as reconcile_failover returns the error and is requeued).
struct Process {
    shared: Shared,
    sc: Scenario,
    plan: DisasterRecoveryPlan,
    metrics: Arc<Metrics>,
    lease: Arc<FakeLease>,
    /// The process's shared AWS layer, as the operator builds it once per leadership.
    aws: Arc<dyn crate::aws::Aws>,
}

impl Process {
    fn new(
        shared: &Shared,
        sc: &Scenario,
        plan: DisasterRecoveryPlan,
        metrics: Arc<Metrics>,
        lease: Arc<FakeLease>,
    ) -> Self {
        Self {
            shared: shared.clone(),
            sc: sc.clone(),
            plan,
            metrics,
            // As Context builds it: shared outside the leader check.
            aws: Arc::new(crate::shared_aws::SharedAws::new(Arc::new(LeaderAws {
                inner: Arc::new(FakeAws(shared.clone())),
                leadership: lease.clone(),
            }))),
            lease,
        }
    }

    async fn run(self) -> Result<(), kube::Error> {
        // Results and the promotions' last description live in this process's memory
        // only: a crash loses them.
        let mut results = Vec::new();
        let mut look = None;
        loop {
            let pass = self
                .reconcile(std::mem::take(&mut results), look.take())
                .await?;
            let Some(after) = pass.requeue else {
                return Ok(());
            };
            tokio::time::sleep(after).await;
            look = pass.promotion_look;
            // As Context::take_results: the answers belong to the resourceVersion the pass
            // left, and are dropped if anything wrote since.
            if pass.resource_version == Some(lock(&self.shared).rv.to_string()) {
                results = pass.results;
            }
        }
    }

    /// One reconcile: the real runner's pass on what the fakes hold now.
    async fn reconcile(
        &self,
        results: Vec<EffectResult>,
        look: Option<crate::runner::PromotionLook>,
    ) -> Result<Pass, kube::Error> {
        {
            let (status, rv, fields) = {
                let w = lock(&self.shared);
                (w.status.clone(), w.rv, w.plan_fields.clone())
            };
            // As reconcile_failover does: a fresh read, and the admitted plan snapshot.
            let mut fo = self.sc.failover();
            fo.metadata.resource_version = Some(rv.to_string());
            fo.status = Some(status.clone());
            let mut p = self.plan.clone();
            if let Some(s) = &status.plan_snapshot {
                p.spec = s.spec.clone();
            }
            p.status = Some(DisasterRecoveryPlanStatus {
                active_region: fields.active_region.clone(),
                previous_active_region: fields.previous_active_region.clone(),
                last_failover: fields.last_failover.clone(),
                last_unplanned_move: fields.last_unplanned_move.clone(),
                pending_fences: fields.pending_fences.clone(),
                step_durations: fields.step_durations.clone(),
                ..Default::default()
            });
            let aws = self.aws.clone();
            let clusters = Arc::new(LeaderClusters {
                inner: FakeClusters(self.shared.clone()),
                leadership: self.lease.clone(),
            });
            let runner = Runner::with_effects(
                self.metrics.clone(),
                Arc::new(FakeStore(self.shared.clone())),
                self.lease.clone(),
                aws,
                clusters,
                Arc::new(SimClock(self.shared.clone())),
                p,
                fo,
                RETRY_AFTER,
            );
            lock(&self.shared).passes += 1;
            // As the controller runs it: a failover's calls, at the plan's priority.
            let priority = crate::ratelimit::CallPriority {
                failover: true,
                plan: 0,
                mutating: false,
            };
            priority.scope(runner.pass(Vec::new(), results, look)).await
        }
    }
}

async fn simulate(seed: u64, trace: bool) -> Report {
    // The driver's retry jitter uses the thread's fastrand generator.
    fastrand::seed(seed);
    let mut rng = fastrand::Rng::with_seed(seed);
    let sc = Scenario::draw(&mut rng);
    let plan = sc.plan();
    let shared: Shared = Arc::new(Mutex::new(world(&sc, &plan, rng.u64(..))));
    let weather = tokio::spawn(weather(shared.clone(), sc.clone(), rng.u64(..)));
    if let Some(script) = sc.approval {
        // The target was active before r0: this failover is a failback.
        lock(&shared).plan_fields.previous_active_region = Some(sc.target_name());
        tokio::spawn(approver(shared.clone(), script));
    }
    let metrics = METRICS.get_or_init(|| Arc::new(Metrics::default())).clone();
    if trace {
        println!("scenario: {sc:?}");
    }
    let mut deposed = Vec::new();
    let mut runs = 0;
    while runs < MAX_RUNS {
        let (epoch, crash, leader) = {
            let mut w = lock(&shared);
            if terminal(&w.status) {
                break;
            }
            w.arm_interruption(&mut rng, 120, 4, 2)
        };
        runs += 1;
        let lease = Arc::new(FakeLease {
            world: shared.clone(),
            epoch,
            deposed: AtomicBool::new(false),
        });
        let process = Process::new(&shared, &sc, plan.clone(), metrics.clone(), lease);
        let mut run = tokio::spawn(async move { process.run().await });
        let result = tokio::select! {
            r = &mut run => match r {
                Ok(Ok(())) => "done".to_string(),
                Ok(Err(e)) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    format!("error: {e}")
                }
                Err(e) => {
                    let mut w = lock(&shared);
                    w.violations.push(format!("driver panicked: {e}"));
                    break;
                }
            },
            _ = crash.notified() => {
                run.abort();
                let pause = Duration::from_millis(rng.u64(0..5000));
                tokio::time::sleep(pause).await;
                "crashed".to_string()
            }
            _ = leader.notified() => {
                // The deposed leader keeps running until it notices; the new one starts
                // once the old lease has expired, longer than any call's latency.
                deposed.push(run);
                tokio::time::sleep(Duration::from_secs(1)).await;
                "leader changed".to_string()
            }
        };
        if trace {
            let w = lock(&shared);
            println!(
                "run {runs} at {:?}: {result}; phase {:?}, step {:?}, lost {:?}",
                w.now(),
                w.status.phase,
                w.status.current_step,
                w.lost
            );
        }
    }
    // Deposed leaders get time to finish what they do before the final checks.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for d in deposed {
        d.abort();
    }
    weather.abort();
    let w = lock(&shared);
    if trace {
        for c in &w.log {
            println!(
                "{:?} {} {} applied={}",
                c.at - w.t0,
                c.op,
                c.resource,
                c.applied
            );
        }
    }
    Report {
        phase: w.status.phase,
        violations: check(&sc, &w),
        runs,
        effects: w.effects,
        passes: w.passes,
        rate_limited: w.limiter.as_ref().map(|l| l.waited()),
    }
}

/// The invariants over the whole schedule (3 and 4 are checked at each promotion call).
fn check(sc: &Scenario, w: &World) -> Vec<String> {
    let mut out = w.violations.clone();
    // 1. No singleton, writer or CronJob in two regions at once. An Unplanned failover
    // proceeds without the old region by design (what it cannot fence is recorded as
    // pending), so only Planned failovers are held to this. (8, a CronJob resumed only
    // where every database is writable, is checked at each scale call.)
    if sc.mode == FailoverMode::Planned {
        for wl in sc.workloads.iter().filter(|w| w.exclusive()) {
            let pods: Vec<&Pod> = w.pods.iter().filter(|p| p.workload == wl.name).collect();
            for a in &pods {
                for b in &pods {
                    let end = |p: &Pod| {
                        p.gone_at
                            .unwrap_or(Instant::now() + Duration::from_secs(1 << 30))
                    };
                    if a.region < b.region && a.created < end(b) && b.created < end(a) {
                        out.push(format!(
                            "1 (singleton/writer in two regions): {} in {} and {} at {:?}",
                            wl.name,
                            a.region,
                            b.region,
                            a.created.max(b.created) - w.t0
                        ));
                    }
                }
            }
        }
    }
    // 2. Each mutating call at most once per resource per failover.
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for c in w.log.iter().filter(|c| c.applied) {
        *counts.entry((c.op, c.resource.as_str())).or_default() += 1;
    }
    for ((op, resource), n) in counts {
        if n > 1 {
            out.push(format!("2 (mutating call repeated): {op} {resource} ×{n}"));
        }
    }
    let promoted = w
        .log
        .iter()
        .any(|c| c.op == "PromoteReadReplica" || c.op == "MoveGlobalWriter");
    let active = w
        .plan_fields
        .active_region
        .clone()
        .unwrap_or_else(|| "r0".into());
    let target = sc.target_name();
    match w.status.phase {
        // 5. The terminal phase agrees with the plan's activeRegion, and with the world.
        Some(FailoverPhase::Succeeded) => {
            if active != target {
                out.push(format!(
                    "5 (phase vs activeRegion): Succeeded but activeRegion {active}"
                ));
            }
            for ((region, id), r) in &w.rds {
                if *region == format!("aws-{target}") && r.source.is_some() {
                    out.push(format!(
                        "5 (phase vs world): Succeeded but {id} is still a replica"
                    ));
                }
            }
            for (id, a) in &w.aurora {
                if !a.writer.contains(&format!("aws-{target}:")) {
                    out.push(format!(
                        "5 (phase vs world): Succeeded but {id} writes in {}",
                        a.writer
                    ));
                }
            }
        }
        Some(p) if p.is_terminal() && active != "r0" => {
            out.push(format!(
                "5 (phase vs activeRegion): {p:?} but activeRegion {active}"
            ));
        }
        _ => {}
    }
    // 6. RolledBack only before any promotion.
    if w.status.phase == Some(FailoverPhase::RolledBack) && promoted {
        out.push("6 (RolledBack after a promotion call)".into());
    }
    // 7. A failover awaiting approval changes nothing before it is approved; one rejected
    // or never approved changes nothing at all, and does not succeed.
    if let Some(script) = sc.approval {
        let approved_at = w
            .approvals
            .iter()
            .find(|(_, a)| a.spec.decision == ApprovalChoice::Approve)
            .map(|(at, _)| *at);
        for c in w.log.iter().filter(|c| c.applied) {
            if approved_at.is_none_or(|t| c.at < t) {
                out.push(format!(
                    "7 (changed before approval): {} {} at {:?}",
                    c.op,
                    c.resource,
                    c.at - w.t0
                ));
            }
        }
        if !matches!(script, ApprovalScript::Approve(_))
            && matches!(
                w.status.phase,
                Some(FailoverPhase::Succeeded | FailoverPhase::RolledBack)
            )
        {
            out.push(format!(
                "7 (not approved, yet {:?})",
                w.status.phase.unwrap_or(FailoverPhase::Pending)
            ));
        }
    }
    // 9. A successful failover teaches the plan how long its promotion took, from the
    // first promotion request to the step's end: the newest learned duration is that.
    if w.status.phase == Some(FailoverPhase::Succeeded) && sc.mode != FailoverMode::DryRun {
        let step = crate::engine::Step::PromoteDatabases;
        let first_request = w
            .status
            .databases
            .iter()
            .filter_map(|d| d.requested_at.as_ref())
            .map(|t| std::time::SystemTime::from(t.0))
            .min();
        let took = w
            .status
            .steps
            .iter()
            .find(|s| s.name == step.name() && s.state == crate::api::StepState::Succeeded)
            .and_then(|s| s.finished_at.as_ref())
            .zip(first_request)
            .and_then(|(end, from)| std::time::SystemTime::from(end.0).duration_since(from).ok())
            .map(|d| d.as_secs_f64())
            .filter(|d| *d > 0.0);
        let learned = w
            .plan_fields
            .step_durations
            .iter()
            .find(|d| d.step == step.name() && d.mode == format!("{:?}", sc.mode))
            .and_then(|d| d.recent_seconds.last().copied());
        if took.is_some() && learned != took {
            out.push(format!(
                "9 (promotion took {took:?}, plan learned {learned:?})"
            ));
        }
    }
    out
}

/// A single-threaded runtime on the paused (virtual) clock.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        // Test-only (`#[cfg(test)] mod sim`): no outside data; a runtime that cannot be
        // built means the test machine is broken, and the test should say so.
        .expect("runtime")
}

fn run_one(seed: u64, trace: bool) -> Report {
    paused_runtime().block_on(simulate(seed, trace))
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The schedules a simulation ran: each seed's report, the failures as lines, how long.
pub(crate) struct Schedules<R> {
    pub reports: Vec<(u64, R)>,
    pub failed: Vec<String>,
    pub elapsed: std::time::Duration,
}

/// Runs a simulation: the one seed in `seed_var` with its trace (None after asserting it
/// kept every invariant), else seeds 0..`schedules` spread over every CPU.
pub(crate) fn run_schedules<R: Send + std::fmt::Debug>(
    seed_var: &str,
    schedules: u64,
    run: fn(u64, bool) -> R,
    violations: fn(&R) -> &[String],
) -> Option<Schedules<R>> {
    if let Some(seed) = env_u64(seed_var) {
        let report = run(seed, true);
        println!("{report:?}");
        assert!(
            violations(&report).is_empty(),
            "SIM FAILED seed={seed}: {}",
            violations(&report).join("; ")
        );
        return None;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let started = std::time::Instant::now();
    let reports: Vec<(u64, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (0..schedules)
                        .filter(|seed| seed % threads == t)
                        .map(|seed| (seed, run(seed, false)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            // A schedule thread panics only on a bug in the simulation, which must fail.
            .flat_map(|h| h.join().expect("sim thread"))
            .collect()
    });
    let failed = reports
        .iter()
        .filter(|(_, r)| !violations(r).is_empty())
        .map(|(seed, r)| format!("SIM FAILED seed={seed}: {}", violations(r).join("; ")))
        .collect();
    Some(Schedules {
        reports,
        failed,
        elapsed: started.elapsed(),
    })
}

impl<R> Schedules<R> {
    /// Fails the test if any schedule broke an invariant, saying how to replay one.
    pub(crate) fn assert_passed(&self, replay: &str) {
        for f in self.failed.iter().take(20) {
            println!("{f}");
        }
        assert!(
            self.failed.is_empty(),
            "{} of {} schedules failed; replay one with {replay}\n{}",
            self.failed.len(),
            self.reports.len(),
            self.failed.first().cloned().unwrap_or_default()
        );
    }
}

#[test]
fn simulation() {
    let schedules = env_u64("DROVER_SIM_SCHEDULES").unwrap_or(10_000);
    let Some(done) = run_schedules("DROVER_SIM_SEED", schedules, run_one, |r: &Report| {
        &r.violations
    }) else {
        return;
    };
    let reports = &done.reports;
    let mut phases: BTreeMap<String, usize> = BTreeMap::new();
    for (_, r) in reports {
        *phases.entry(format!("{:?}", r.phase)).or_default() += 1;
    }
    let runs: usize = reports.iter().map(|(_, r)| r.runs).sum();
    let effects: u64 = reports.iter().map(|(_, r)| r.effects).sum();
    let passes: u64 = reports.iter().map(|(_, r)| r.passes).sum();
    println!(
        "simulation: {} schedules, {runs} processes, {passes} passes, {effects} effects, in {:?}; end phases {phases:?}",
        reports.len(),
        done.elapsed
    );
    // Not an invariant: a schedule may end before its failover does (restarts bounded).
    let unfinished: Vec<u64> = reports
        .iter()
        .filter(|(_, r)| !r.phase.is_some_and(FailoverPhase::is_terminal))
        .map(|(seed, _)| *seed)
        .take(10)
        .collect();
    println!("unfinished (first 10): {unfinished:?}");
    // The rate-limited schedules are not vacuous: calls did wait for tokens.
    let limited: Vec<f64> = reports.iter().filter_map(|(_, r)| r.rate_limited).collect();
    let waited = limited.iter().filter(|w| **w > 0.0).count();
    println!(
        "rate-limited schedules: {}, of which calls waited in {waited}",
        limited.len()
    );
    if reports.len() >= 100 {
        assert!(
            waited * 4 >= limited.len(),
            "{waited} of {} rate-limited schedules waited",
            limited.len()
        );
    }
    done.assert_passed("DROVER_SIM_SEED=<seed> cargo test --lib sim -- --nocapture");
}

/// One reconcile of a calm run, as `calm_failover` saw it.
struct CalmPass {
    /// The step and the call log's length before it.
    step: Option<String>,
    log_before: usize,
    /// Databases whose promotion was answered before it, and describes it made.
    requested: usize,
    describes: u64,
}

/// A failover of `sc` with fresh lag and no faults, reconcile by reconcile, on the fakes;
/// the plan has learned `promotion_seconds` if given.
async fn calm_failover(
    sc: &Scenario,
    seed: u64,
    promotion_seconds: Option<f64>,
) -> (Shared, Vec<CalmPass>) {
    let plan = sc.plan();
    let mut calm = world(sc, &plan, seed);
    for mode in calm.lag.values_mut() {
        *mode = LagMode::Fresh(0.0);
    }
    calm.limiter = None;
    if let Some(seconds) = promotion_seconds {
        crate::engine::learn_duration(
            &mut calm.plan_fields.step_durations,
            crate::engine::Step::PromoteDatabases,
            sc.mode,
            seconds,
        );
    }
    let shared: Shared = Arc::new(Mutex::new(calm));
    let lease = Arc::new(FakeLease {
        world: shared.clone(),
        epoch: 0,
        deposed: AtomicBool::new(false),
    });
    let metrics = METRICS.get_or_init(|| Arc::new(Metrics::default())).clone();
    let process = Process::new(&shared, sc, plan, metrics, lease);
    let (mut results, mut look, mut passes) = (Vec::new(), None, Vec::new());
    for _ in 0..2000 {
        let mut seen = {
            let w = lock(&shared);
            CalmPass {
                step: w.status.current_step.clone(),
                log_before: w.log.len(),
                requested: w
                    .status
                    .databases
                    .iter()
                    .filter(|d| d.state == crate::api::DatabaseState::Requested)
                    .count(),
                describes: w.describes,
            }
        };
        let pass = process.reconcile(results, look).await.expect("a calm pass");
        seen.describes = lock(&shared).describes - seen.describes;
        passes.push(seen);
        let Some(after) = pass.requeue else { break };
        results = pass.results;
        look = pass.promotion_look;
        tokio::time::sleep(after).await;
    }
    (shared, passes)
}

/// A calm Planned failover, reconcile by reconcile, on the fakes: the reconcile that scales
/// the old region to standby also completes the failover (its second round takes the
/// accepted scales as observations), and the schedule keeps every invariant.
#[test]
fn verify_scale_down_and_complete_share_one_reconcile() {
    paused_runtime().block_on(async {
        let web = WorkloadDef {
            name: "web",
            active: 2,
            standby: 1,
            writer: false,
            singleton: false,
            cron: false,
        };
        let sc = Scenario {
            regions: 2,
            target: 1,
            aurora: vec![false],
            workloads: vec![web],
            mode: FailoverMode::Planned,
            allow_data_loss: false,
            max_data_loss: None,
            fault_rate: 0.0,
            loss_rate: 0.0,
            approval: None,
        };
        let (shared, passes) = calm_failover(&sc, 7, None).await;
        let last = passes
            .last()
            .map(|p| (p.step.clone(), p.log_before))
            .unwrap_or_default();
        let w = lock(&shared);
        assert_eq!(w.status.phase, Some(FailoverPhase::Succeeded));
        // The reconcile that saw DNS in sync scaled the old region to standby (its first
        // round) and completed (its second).
        assert_eq!(last.0.as_deref(), Some("SwitchDns"));
        let scaled_down = |c: &fake::Call| c.op == "Scale" && c.resource == "r0/web→1";
        assert_eq!(w.log[last.1..].iter().filter(|c| scaled_down(c)).count(), 1);
        assert_eq!(w.log.iter().filter(|c| scaled_down(c)).count(), 1);
        assert_eq!(check(&sc, &w), Vec::<String>::new());
    });
}

/// Passes that come for a warm-up while promotions are awaited decide on the databases'
/// last description until the promotion poll is due, instead of describing them each time;
/// the failover still completes and keeps every invariant.
#[test]
fn awaited_promotions_are_described_on_their_own_schedule_not_every_pass() {
    paused_runtime().block_on(async {
        let workload = |name| WorkloadDef {
            name,
            active: 3,
            standby: 0,
            writer: false,
            singleton: false,
            cron: false,
        };
        let sc = Scenario {
            regions: 2,
            target: 1,
            aurora: vec![false, false, true],
            workloads: vec![workload("web"), workload("api")],
            mode: FailoverMode::Planned,
            allow_data_loss: false,
            max_data_loss: None,
            fault_rate: 0.0,
            loss_rate: 0.0,
            approval: None,
        };
        let (mut awaited, mut described, mut passes_awaiting) = (0, 0, 0);
        for seed in 0..20 {
            let (shared, passes) = calm_failover(&sc, seed, Some(5.0)).await;
            let w = lock(&shared);
            assert_eq!(
                w.status.phase,
                Some(FailoverPhase::Succeeded),
                "seed {seed}: {:?}",
                w.status
                    .steps
                    .iter()
                    .filter_map(|s| s.message.as_deref())
                    .collect::<Vec<_>>()
            );
            assert_eq!(check(&sc, &w), Vec::<String>::new(), "seed {seed}");
            for p in passes.iter().filter(|p| p.requested > 0) {
                passes_awaiting += 1;
                awaited += p.requested as u64;
                described += p.describes;
            }
        }
        // Describing every awaited database on every pass would make these equal.
        assert!(passes_awaiting > 0);
        assert!(
            described * 2 < awaited,
            "{described} describes for {awaited} awaited database-passes"
        );
    });
}
