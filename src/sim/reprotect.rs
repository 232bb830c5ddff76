//! Seeded simulation of RDS re-protection: the real driver (`crate::reprotect::rds`) and
//! its decisions (`engine::reprotect`) against a fake RDS per region with AWS's timing and
//! refusals, a fake plan status with conditional writes, under crashes between the intent
//! record and the call and after the call (its answer lost), transient faults, conflicting
//! status writes, leader changes, region outages that end, a pending fence and a failover
//! still running. After the faults stop, every standby must end Protected, or Unprotected
//! for a permanent reason.
//!
//! Invariants (R1, R2, R3's snapshot rule, R5 and R8 checked at each call, in the fake):
//! - R1: the active primary, and any replica of it, is never renamed or deleted;
//! - R2: every mutating call follows its intent record (state, renamedTo, finalSnapshot,
//!   not yet requested) in the plan's status;
//! - R3: no standalone instance is deleted without a final snapshot, and the data of
//!   every standalone instance and every replica of an old primary survives, as an
//!   instance (renamed or not) or a snapshot;
//! - R4: at most one replica created, and one move aside, per standby;
//! - R5: no call while blocked (the old primary's fence pending, a failover running);
//! - R6: once calm, every standby ends Protected, or Unprotected for its permanent
//!   reason (Manual; a stopped old primary with Rename), within an hour of virtual time;
//! - R7: Manual sends nothing;
//! - R8: a replica created by re-protection has the settings of the standby it replaces
//!   (network, groups, KMS key, class, storage…; the parameter group only where AWS takes
//!   one for a cross-region replica, MySQL here), or nothing is created (a standby missing
//!   from the start stays Unprotected). Checked at each create, in the fake.
//!
//! `cargo test --lib sim::reprotect` runs 2,500 schedules (a quarter of
//! `DROVER_SIM_SCHEDULES` when that is set); `DROVER_SIM_REPROTECT_SCHEDULES=N` runs N, and
//! `DROVER_SIM_REPROTECT_SEED=N` replays one schedule with its trace.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use tokio::time::Instant;

use super::fake::{FakeAws, FakeLease, Rds, Shared, instance_arn, lock};
use super::{Scenario, WorkloadDef, env_u64, paused_runtime, run_schedules, world};
use crate::api::{
    DisasterRecoveryPlan, DisasterRecoveryPlanStatus, FailoverMode, FenceResource, LastFailover,
    OldInstanceAction, PendingFence, PendingFenceState, RdsReprotection, ReplicaSettings,
    ReprotectionSpec,
};
use crate::engine::reprotect::aside_name;
use crate::leadership::LeaderAws;
use crate::reprotect::{Effects, PlanStatus, Protections};
use crate::store::FailoverFields;

/// Restarts of the driver in the faulty phase before it is left alone.
const MAX_RUNS: usize = 12;
/// How long the calm phase may take before a standby that is not settled counts as stuck.
const CALM_LIMIT: Duration = Duration::from_secs(3600);

/// What a standby's identifier holds when re-protection starts (after a failover from r0).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Initial {
    /// The old primary, standalone: available, or stopped (fenced).
    OldPrimary(&'static str),
    /// A replica of the old primary (a third region).
    ReplicaOfOld,
    /// Already a replica of the new primary: protected, nothing to do.
    ReplicaOfActive,
    /// Nothing there.
    Missing,
}

#[derive(Clone, Debug)]
struct RScenario {
    regions: usize,
    active: usize,
    dbs: usize,
    recreate: bool,
    old_instance: OldInstanceAction,
    /// Per database, per region (the active region's entry unused).
    initial: Vec<Vec<Initial>>,
    fault_rate: f64,
    loss_rate: f64,
    /// Chance per tick that another writer changes the plan's status (a 409 for ours).
    conflict_rate: f64,
    /// The old primaries' fence is pending (r0 lost at first); fenced after this (ms).
    fence_at: Option<u64>,
    /// The failover is still Running until this (ms).
    failover_until: Option<u64>,
    /// One database's aside names (renames, or final snapshots) are taken for the first
    /// minutes: AWS refuses them (DBInstanceAlreadyExists / DBSnapshotAlreadyExists).
    squat: Option<(usize, bool)>,
    /// How long the faulty phase lasts (ms).
    faulty_for: u64,
}

impl RScenario {
    fn draw(rng: &mut fastrand::Rng) -> Self {
        let regions = rng.usize(2..=3);
        let active = rng.usize(1..regions);
        let dbs = rng.usize(1..=2);
        let fence = rng.u8(0..4) == 0;
        let initial = (0..dbs)
            .map(|_| {
                (0..regions)
                    .map(|i| match (i, rng.u8(0..10)) {
                        (0, _) if fence => Initial::OldPrimary("available"),
                        (0, 0) => Initial::ReplicaOfActive,
                        (0, 1) => Initial::Missing,
                        (0, 2..=4) => Initial::OldPrimary("stopped"),
                        (0, _) => Initial::OldPrimary("available"),
                        (_, 0) => Initial::ReplicaOfActive,
                        (_, 1) => Initial::Missing,
                        _ => Initial::ReplicaOfOld,
                    })
                    .collect()
            })
            .collect();
        RScenario {
            regions,
            active,
            dbs,
            recreate: rng.u8(0..8) != 0,
            old_instance: if rng.bool() {
                OldInstanceAction::Rename
            } else {
                OldInstanceAction::Delete
            },
            initial,
            fault_rate: [0.0, 0.05, 0.15][rng.usize(0..3)],
            loss_rate: [0.0, 0.1, 0.3][rng.usize(0..3)],
            conflict_rate: [0.0, 0.2, 0.5][rng.usize(0..3)],
            fence_at: fence.then(|| rng.u64(10_000..200_000)),
            failover_until: (rng.u8(0..4) == 0).then(|| rng.u64(0..60_000)),
            squat: (rng.u8(0..4) == 0).then(|| (rng.usize(0..dbs), rng.bool())),
            faulty_for: rng.u64(60_000..600_000),
        }
    }

    fn plan(&self) -> DisasterRecoveryPlan {
        let sc = Scenario {
            regions: self.regions,
            target: self.active,
            aurora: vec![false; self.dbs],
            workloads: vec![WorkloadDef {
                name: "writer",
                active: 1,
                standby: 0,
                writer: true,
                singleton: false,
                cron: false,
            }],
            mode: FailoverMode::Unplanned,
            allow_data_loss: false,
            max_data_loss: None,
            fault_rate: 0.0,
            loss_rate: 0.0,
            approval: None,
        };
        let mut plan = sc.plan();
        plan.spec.reprotection = Some(ReprotectionSpec {
            rds: Some(if self.recreate {
                RdsReprotection::Recreate
            } else {
                RdsReprotection::Manual
            }),
            old_instance: Some(self.old_instance),
        });
        plan
    }

    fn active_name(&self) -> String {
        Scenario::region(self.active)
    }

    fn standbys(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.dbs).flat_map(move |d| {
            (0..self.regions)
                .filter(move |&i| i != self.active)
                .map(move |i| (d, i))
        })
    }

    /// What a calm, long enough re-protection must end in for a standby: Protected, or
    /// Unprotected with a message naming the permanent reason.
    fn expected(&self, d: usize, i: usize) -> (&'static str, Option<&'static str>) {
        match self.initial[d][i] {
            Initial::ReplicaOfActive => ("Protected", None),
            _ if !self.recreate => ("Unprotected", Some("spec.reprotection.rds is Manual")),
            // Nothing to copy the settings from: no replica with default settings.
            Initial::Missing => (
                "Unprotected",
                Some("Drover does not know how it was set up"),
            ),
            // The fence stops the old primary: AWS cannot rename a stopped instance.
            Initial::OldPrimary(status)
                if self.old_instance == OldInstanceAction::Rename
                    && (status == "stopped" || self.fence_at.is_some()) =>
            {
                ("Unprotected", Some("cannot rename a stopped instance"))
            }
            _ => ("Protected", None),
        }
    }
}

fn id(d: usize, i: usize) -> String {
    format!("db{d}-r{i}")
}

fn aws(i: usize) -> String {
    format!("aws-r{i}")
}

/// How database `d`'s instance in region `i` is set up: its own network, groups and
/// region's KMS key, encrypted. The engine (PostgreSQL or MySQL, by the seed) decides
/// whether a cross-region replica takes its parameter group.
fn settings_of(d: usize, i: usize, seed: u64) -> ReplicaSettings {
    let mysql = (seed >> d) & 1 == 1;
    ReplicaSettings {
        engine: Some(if mysql { "mysql" } else { "postgres" }.into()),
        db_instance_class: Some(format!("db.r6g.{}xlarge", 1 + (d + i) % 4)),
        db_subnet_group_name: Some(format!("subnets-db{d}-r{i}")),
        vpc_security_group_ids: vec![format!("sg-db{d}-r{i}")],
        db_parameter_group_name: Some(format!("pg-db{d}-r{i}")),
        option_group_name: mysql.then(|| format!("og-db{d}-r{i}")),
        storage_encrypted: true,
        kms_key_id: Some(format!("arn:aws:kms:{}:1:key/db{d}", aws(i))),
        storage_type: Some("gp3".into()),
        iops: None,
        port: Some(if mysql { 3306 } else { 5432 }),
        multi_az: Some(i.is_multiple_of(2)),
        publicly_accessible: Some(false),
        deletion_protection: Some(d == 0),
    }
}

fn t0_wall() -> Time {
    Time(Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// The plan's status on a fake API server: the world's failover fields, versioned.
struct FakePlanStatus {
    shared: Shared,
    plan: DisasterRecoveryPlan,
}

fn conflict() -> kube::Error {
    kube::Error::Api(Box::new(kube::core::Status {
        code: 409,
        message: "the object has been modified".into(),
        ..Default::default()
    }))
}

fn status_of(f: &FailoverFields) -> DisasterRecoveryPlanStatus {
    DisasterRecoveryPlanStatus {
        active_region: f.active_region.clone(),
        previous_active_region: f.previous_active_region.clone(),
        last_failover: f.last_failover.clone(),
        last_unplanned_move: f.last_unplanned_move.clone(),
        pending_fences: f.pending_fences.clone(),
        reprotections: f.reprotections.clone(),
        ..Default::default()
    }
}

#[async_trait]
impl PlanStatus for FakePlanStatus {
    async fn read(&self) -> Result<DisasterRecoveryPlan, kube::Error> {
        let plan = self.plan.clone();
        FakeAws(self.shared.clone())
            .api_call(|w| {
                let mut plan = plan;
                plan.status = Some(status_of(&w.plan_fields));
                plan.metadata.resource_version = Some(w.reprotect.plan_rv.to_string());
                Ok(plan)
            })
            .await
    }

    async fn record_at(
        &self,
        fields: &FailoverFields,
        resource_version: Option<&str>,
    ) -> Result<(), kube::Error> {
        let fields = fields.clone();
        let rv = resource_version.map(str::to_string);
        FakeAws(self.shared.clone())
            .api_call(|w| {
                if rv.is_some_and(|v| v != w.reprotect.plan_rv.to_string()) {
                    return Err(conflict());
                }
                w.reprotect.plan_rv += 1;
                w.plan_fields = fields;
                Ok(())
            })
            .await
    }

    async fn update(
        &self,
        change: &mut (dyn for<'a> FnMut(&'a mut FailoverFields) + Send),
    ) -> Result<(), kube::Error> {
        FakeAws(self.shared.clone())
            .api_call(|w| {
                change(&mut w.plan_fields);
                w.reprotect.plan_rv += 1;
                Ok(())
            })
            .await
    }

    async fn publish(&self, _: EventType, _: &str, _: String) {}
}

fn build_world(rsc: &RScenario, plan: &DisasterRecoveryPlan, seed: u64) -> super::fake::World {
    let sc = Scenario {
        regions: rsc.regions,
        target: rsc.active,
        aurora: vec![false; rsc.dbs],
        workloads: Vec::new(),
        mode: FailoverMode::Unplanned,
        allow_data_loss: false,
        max_data_loss: None,
        fault_rate: rsc.fault_rate,
        loss_rate: rsc.loss_rate,
        approval: None,
    };
    let mut w = world(&sc, plan, seed);
    w.rds.clear();
    w.reprotect.plan_rv = 1;
    let mut data = 0;
    for d in 0..rsc.dbs {
        let primary = (aws(rsc.active), id(d, rsc.active));
        data += 1;
        let mut r = Rds::new("available", None, data);
        r.settings = settings_of(d, rsc.active, seed);
        w.rds.insert(primary.clone(), r);
        w.reprotect.primaries.insert(primary);
        for i in (0..rsc.regions).filter(|&i| i != rsc.active) {
            let mut r = match rsc.initial[d][i] {
                Initial::OldPrimary(status) => {
                    data += 1;
                    Rds::new(status, None, data)
                }
                // It may hold writes the new primary lacks: R3 keeps its data too.
                Initial::ReplicaOfOld => {
                    data += 1;
                    Rds::new("available", Some(instance_arn(&aws(0), &id(d, 0))), data)
                }
                Initial::ReplicaOfActive => {
                    let mut r = Rds::new(
                        "available",
                        Some(instance_arn(&aws(rsc.active), &id(d, rsc.active))),
                        0,
                    );
                    r.lag_at = Some(w.t0);
                    r
                }
                Initial::Missing => continue,
            };
            r.settings = settings_of(d, i, seed);
            w.reprotect
                .standby_settings
                .insert((aws(i), id(d, i)), r.settings.clone());
            w.rds.insert((aws(i), id(d, i)), r);
        }
        // Someone else's instances or snapshots under the names re-protection picks in
        // the first minutes (names are per second).
        if let Some((sd, snapshots)) = rsc.squat
            && sd == d
        {
            for i in (0..rsc.regions).filter(|&i| i != rsc.active) {
                for sec in 0..180 {
                    let at = Time(t0_wall().0 + Duration::from_secs(sec));
                    if snapshots {
                        let name = aside_name(&id(d, i), "final", &at);
                        w.reprotect.snapshots.insert((aws(i), name), 0);
                    } else {
                        data += 1;
                        let name = aside_name(&id(d, i), "old", &at);
                        w.rds
                            .insert((aws(i), name), Rds::new("available", None, data));
                    }
                }
            }
        }
    }
    w.plan_fields = FailoverFields {
        active_region: Some(rsc.active_name()),
        previous_active_region: Some("r0".into()),
        last_failover: Some(LastFailover {
            name: "fo".into(),
            target_region: rsc.active_name(),
            phase: Some(if rsc.failover_until.is_some() {
                "Running".into()
            } else {
                "Succeeded".into()
            }),
            ..Default::default()
        }),
        last_unplanned_move: None,
        pending_fences: if rsc.fence_at.is_some() {
            (0..rsc.dbs)
                .map(|d| PendingFence {
                    resource: FenceResource::RdsInstance,
                    region: "r0".into(),
                    kind: None,
                    api_version: None,
                    namespace: None,
                    name: id(d, 0),
                    reason: "r0 unreachable".into(),
                    failover: "fo".into(),
                    since: t0_wall(),
                    state: PendingFenceState::Pending,
                    reachable: Some(false),
                    message: None,
                })
                .collect()
        } else {
            Vec::new()
        },
        reprotections: Vec::new(),
        step_durations: Vec::new(),
    };
    if rsc.fence_at.is_some() {
        w.lost.extend(["r0".to_string(), aws(0)]);
    }
    w
}

/// What happens around re-protection: other status writers, outages, the failover ending,
/// the fence of the old primaries once r0 is back.
async fn weather(shared: Shared, rsc: RScenario, calm: Arc<AtomicBool>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut fenced = rsc.fence_at.is_none();
    loop {
        tokio::time::sleep(Duration::from_millis(rng.u64(1000..10_000))).await;
        let calm = calm.load(std::sync::atomic::Ordering::Acquire);
        let mut w = lock(&shared);
        let now = w.now();
        if rsc
            .failover_until
            .is_some_and(|t| now >= Duration::from_millis(t))
            && let Some(l) = w.plan_fields.last_failover.as_mut()
            && l.phase.as_deref() == Some("Running")
        {
            l.phase = Some("Succeeded".into());
            w.reprotect.plan_rv += 1;
        }
        if !fenced
            && rsc
                .fence_at
                .is_some_and(|t| now >= Duration::from_millis(t))
        {
            // The region returned (its outage ends with the fence); the plan reconciler
            // stops each old primary, then drops its pending fence.
            w.lost.remove("r0");
            w.lost.remove(&aws(0));
            for d in 0..rsc.dbs {
                let stop = Duration::from_millis(rng.u64(1000..20_000));
                if let Some(r) = w.rds.get_mut(&(aws(0), id(d, 0)))
                    && r.status == "available"
                {
                    r.status = "stopping".into();
                    r.next = Some((
                        Instant::now() + stop,
                        super::fake::RdsNext::Status("stopped"),
                    ));
                }
            }
            w.plan_fields.pending_fences.clear();
            w.reprotect.plan_rv += 1;
            fenced = true;
        }
        if calm {
            // Every outage ends (r0's with its fence).
            w.lost
                .retain(|r| !fenced && (r == "r0" || r.as_str() == aws(0)));
            continue;
        }
        if rng.f64() < rsc.conflict_rate {
            w.reprotect.plan_rv += 1;
        }
        if rng.f64() < rsc.loss_rate {
            let i = rng.usize(0..rsc.regions);
            // r0 stays lost until its fence: that outage ends with it.
            if i == 0 && !fenced {
                continue;
            }
            let names = [Scenario::region(i), aws(i)];
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

/// Per (database, region): whether a fresh lag reading is known (as the plan check
/// measures before re-protection): an available replica of the active primary whose
/// replication has started.
fn lag_known(shared: &Shared, rsc: &RScenario) -> HashMap<(String, String), bool> {
    let w = lock(shared);
    let now = Instant::now();
    rsc.standbys()
        .map(|(d, i)| {
            let known = w.rds.get(&(aws(i), id(d, i))).is_some_and(|r| {
                r.status == "available"
                    && r.lag_at.is_some_and(|t| t <= now)
                    && r.source.as_deref().is_some_and(|s| {
                        crate::engine::source_is(s, &aws(rsc.active), &id(d, rsc.active))
                    })
            });
            ((format!("db{d}"), Scenario::region(i)), known)
        })
        .collect()
}

/// One check of the real driver, on the fakes.
async fn check_once(
    shared: &Shared,
    rsc: &RScenario,
    plan: &DisasterRecoveryPlan,
    lease: &Arc<FakeLease>,
) -> Protections {
    let known = lag_known(shared, rsc);
    // Through the shared layer, as the operator reads and writes.
    let fake = crate::shared_aws::SharedAws::new(Arc::new(FakeAws(shared.clone())));
    let leader = crate::shared_aws::SharedAws::new(Arc::new(LeaderAws {
        inner: Arc::new(FakeAws(shared.clone())),
        leadership: lease.clone(),
    }));
    let store = FakePlanStatus {
        shared: shared.clone(),
        plan: plan.clone(),
    };
    let clock = shared.clone();
    let now = move || {
        let elapsed = lock(&clock).now();
        Time(t0_wall().0 + elapsed)
    };
    let fx = Effects {
        store: &store,
        aws: &fake,
        leader_aws: &leader,
        member_timeout: Duration::from_secs(10),
        now: &now,
    };
    crate::reprotect::rds(&fx, plan, &rsc.active_name(), &known)
        .await
        .0
}

/// One operator process: a plan check every few seconds, until it crashes or is deposed.
async fn process(
    shared: Shared,
    rsc: RScenario,
    plan: DisasterRecoveryPlan,
    lease: Arc<FakeLease>,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    loop {
        check_once(&shared, &rsc, &plan, &lease).await;
        tokio::time::sleep(Duration::from_millis(rng.u64(2000..30_000))).await;
    }
}

#[derive(Debug)]
struct Report {
    violations: Vec<String>,
    runs: usize,
    checks: usize,
    effects: u64,
    calls: usize,
    /// How the standbys ended: Protected / Unprotected.
    ends: BTreeMap<&'static str, usize>,
}

async fn simulate(seed: u64, trace: bool) -> Report {
    fastrand::seed(seed);
    let mut rng = fastrand::Rng::with_seed(seed);
    let rsc = RScenario::draw(&mut rng);
    let plan = rsc.plan();
    let shared: Shared = Arc::new(Mutex::new(build_world(&rsc, &plan, rng.u64(..))));
    if trace {
        println!("scenario: {rsc:?}");
    }
    let data: BTreeSet<u64> = lock(&shared)
        .rds
        .values()
        .map(|r| r.data)
        .filter(|d| *d != 0)
        .collect();
    let calm = Arc::new(AtomicBool::new(false));
    let weather = tokio::spawn(weather(
        shared.clone(),
        rsc.clone(),
        calm.clone(),
        rng.u64(..),
    ));
    let faulty_until = Instant::now() + Duration::from_millis(rsc.faulty_for);
    let mut deposed = Vec::new();
    let mut runs = 0;
    // The faulty phase: crashes, leader changes, faults, outages, conflicts.
    while runs < MAX_RUNS && Instant::now() < faulty_until {
        let (epoch, crash, leader) = {
            let mut w = lock(&shared);
            w.arm_interruption(&mut rng, 80, 5, 2)
        };
        runs += 1;
        let lease = Arc::new(FakeLease {
            world: shared.clone(),
            epoch,
            deposed: AtomicBool::new(false),
        });
        let run = tokio::spawn(process(
            shared.clone(),
            rsc.clone(),
            plan.clone(),
            lease,
            rng.u64(..),
        ));
        let result = tokio::select! {
            _ = crash.notified() => {
                run.abort();
                tokio::time::sleep(Duration::from_millis(rng.u64(0..5000))).await;
                "crashed"
            }
            _ = leader.notified() => {
                deposed.push(run);
                tokio::time::sleep(Duration::from_secs(1)).await;
                "leader changed"
            }
            _ = tokio::time::sleep_until(faulty_until) => {
                run.abort();
                "faults end"
            }
        };
        if trace {
            let w = lock(&shared);
            println!(
                "run {runs} at {:?}: {result}; lost {:?}; records {:?}",
                w.now(),
                w.lost,
                w.plan_fields.reprotections
            );
        }
    }
    // The calm phase: no faults, every region back; one leader checks until every standby
    // settles, or the limit says it is stuck.
    for d in deposed {
        d.abort();
    }
    calm.store(true, std::sync::atomic::Ordering::Release);
    let epoch = {
        let mut w = lock(&shared);
        w.fault_rate = 0.0;
        w.crash_at = None;
        w.leader_change_at = None;
        w.lease_epoch
    };
    let lease = Arc::new(FakeLease {
        world: shared.clone(),
        epoch,
        deposed: AtomicBool::new(false),
    });
    let calm_from = Instant::now();
    let mut checks = 0;
    let mut last = Protections::new();
    let mut settled = false;
    while Instant::now() < calm_from + CALM_LIMIT {
        last = check_once(&shared, &rsc, &plan, &lease).await;
        checks += 1;
        settled = rsc.standbys().all(|(d, i)| {
            let (want, why) = rsc.expected(d, i);
            last.get(&(format!("db{d}"), Scenario::region(i)))
                .is_some_and(|(p, m)| {
                    *p == want
                        && why.is_none_or(|why| m.as_deref().is_some_and(|m| m.contains(why)))
                })
        });
        if settled {
            break;
        }
        tokio::time::sleep(Duration::from_secs(15)).await;
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
        println!("end: {last:?}\nrecords {:?}", w.plan_fields.reprotections);
    }
    let mut violations = w.violations.clone();
    if !settled {
        for (d, i) in rsc.standbys() {
            let key = (format!("db{d}"), Scenario::region(i));
            let (want, why) = rsc.expected(d, i);
            if last.get(&key).is_some_and(|(p, m)| {
                *p == want && why.is_none_or(|why| m.as_deref().is_some_and(|m| m.contains(why)))
            }) {
                continue;
            }
            violations.push(format!(
                "R6 (not settled after {CALM_LIMIT:?} calm): {}/{}: {:?}, expected {:?}",
                key.0,
                key.1,
                last.get(&key),
                rsc.expected(d, i)
            ));
        }
    }
    check(&rsc, &w, &data, &mut violations);
    let mut ends = BTreeMap::new();
    for (p, _) in last.values() {
        *ends.entry(*p).or_default() += 1;
    }
    Report {
        violations,
        runs,
        checks,
        effects: w.effects,
        calls: w.log.len(),
        ends,
    }
}

/// The invariants over the whole schedule (R1, R2, R3's snapshot rule and R5 are checked
/// at each call, in the fake).
fn check(rsc: &RScenario, w: &super::fake::World, data: &BTreeSet<u64>, out: &mut Vec<String>) {
    // R4. One replica created per standby, and each old instance moved aside at most once
    // (no loop of creates, renames or deletes; a resend never makes a second one).
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for c in w.log.iter().filter(|c| c.applied) {
        let kind = match c.op {
            "CreateDBInstanceReadReplica" => "create",
            _ => "move aside",
        };
        *counts.entry((kind, c.resource.as_str())).or_default() += 1;
    }
    for ((kind, resource), n) in counts {
        if n > 1 {
            out.push(format!("R4 (repeated {kind}): {resource} ×{n}"));
        }
    }
    // R3. No data of a standalone instance or of a replica of an old primary is lost: each
    // is still an instance (renamed or not) or a final snapshot.
    let kept: BTreeSet<u64> = w
        .rds
        .values()
        .map(|r| r.data)
        .chain(w.reprotect.snapshots.values().copied())
        .collect();
    for tag in data.difference(&kept) {
        out.push(format!(
            "R3 (data {tag} lost: neither an instance nor a snapshot)"
        ));
    }
    // Manual re-protection sends nothing.
    if !rsc.recreate && !w.log.is_empty() {
        out.push(format!("R7 (Manual, yet {} calls)", w.log.len()));
    }
}

fn run_one(seed: u64, trace: bool) -> Report {
    paused_runtime().block_on(simulate(seed, trace))
}

#[test]
fn reprotection_simulation() {
    let schedules = env_u64("DROVER_SIM_REPROTECT_SCHEDULES")
        .or_else(|| env_u64("DROVER_SIM_SCHEDULES").map(|n| n / 4))
        .unwrap_or(2_500);
    let Some(done) = run_schedules(
        "DROVER_SIM_REPROTECT_SEED",
        schedules,
        run_one,
        |r: &Report| &r.violations,
    ) else {
        return;
    };
    let reports = &done.reports;
    let mut ends: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, r) in reports {
        for (k, n) in &r.ends {
            *ends.entry(k).or_default() += n;
        }
    }
    let sum = |f: fn(&Report) -> u64| reports.iter().map(|(_, r)| f(r)).sum::<u64>();
    println!(
        "re-protection simulation: {} schedules, {} processes, {} calm checks, {} effects, {} mutating calls, in {:?}; standbys ended {ends:?}",
        reports.len(),
        sum(|r| r.runs as u64),
        sum(|r| r.checks as u64),
        sum(|r| r.effects),
        sum(|r| r.calls as u64),
        done.elapsed
    );
    done.assert_passed(
        "DROVER_SIM_REPROTECT_SEED=<seed> cargo test --lib sim::reprotect -- --nocapture",
    );
}
