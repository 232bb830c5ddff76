//! In-memory effectors for the simulation: AWS, region clusters, the status store and the
//! leader lease, all on one `World` under tokio's (paused) clock. Every call is an effect
//! boundary where the schedule may crash the driver, inject a fault or move the lease.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use kube::runtime::events::EventType;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::api::{
    DatabaseState, Failover, FailoverApproval, FailoverStatus, ReplicaSettings, WorkloadSpec,
};
use crate::aws::{Aws, AwsError, AwsErrorKind, AwsResult, LagSource, WriterMove};
use crate::clusters::{ClusterError, Clusters, WorkloadState};
use crate::engine::automatic::{CheckerObservation, MetricDatapoint, MetricQuery};
use crate::engine::dns::{ChangeAction, RecordChange};
use crate::engine::{AuroraObservation, ClusterSnapshot, LagReading, RdsObservation, RecordSet};
use crate::leadership::LeaseCheck;
use crate::store::FailoverFields;
use crate::store::StatusStore;

/// How a lag reading comes back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LagMode {
    Fresh(f64),
    /// RDS reports -1 when replication is not running.
    Negative,
    /// The newest datapoint is an hour old.
    Stale(f64),
    Missing,
}

#[derive(Clone, Debug)]
pub struct Rds {
    pub status: String,
    pub source: Option<String>,
    pub promoted_at: Option<Instant>,
    /// What describe showed before the promotion (or re-protection) call, and when the
    /// call was made: AWS is eventually consistent, so describe may show it for
    /// `World::describe_lag` more.
    pub before_promotion: Option<(RdsObservation, Instant)>,
    /// The data it holds: 0 for a replica's copy, else a tag that must survive
    /// re-protection (in an instance or a snapshot).
    pub data: u64,
    /// An asynchronous change under way, and when it completes.
    pub next: Option<(Instant, RdsNext)>,
    /// When its replication lag becomes known (a replica that finished creating).
    pub lag_at: Option<Instant>,
    /// How it is set up (DescribeDBInstances); a replica's as it was created.
    pub settings: ReplicaSettings,
}

impl Rds {
    pub fn new(status: &str, source: Option<String>, data: u64) -> Self {
        Self {
            status: status.into(),
            source,
            promoted_at: None,
            before_promotion: None,
            data,
            next: None,
            lag_at: None,
            settings: ReplicaSettings::default(),
        }
    }
}

/// What completes an asynchronous RDS change.
#[derive(Clone, Debug, PartialEq)]
pub enum RdsNext {
    /// The identifier changes (ModifyDBInstance with NewDBInstanceIdentifier).
    Rename(String),
    Delete,
    /// Creating (a replica) or stopping ends: available, or stopped.
    Status(&'static str),
}

/// Re-protection's part of the world (the failover schedules leave it empty).
#[derive(Debug, Default)]
pub struct ReprotectWorld {
    /// DB snapshots by (AWS region, name): the data they hold.
    pub snapshots: BTreeMap<(String, String), u64>,
    /// The plan's resourceVersion (status writes of any field manager change it).
    pub plan_rv: u64,
    /// The active primaries, by (AWS region, identifier).
    pub primaries: BTreeSet<(String, String)>,
    /// The settings of each standby when re-protection starts, by (AWS region,
    /// identifier): a replica created there must have them (R8). A standby missing at the
    /// start has none, and nothing may be created for it.
    pub standby_settings: BTreeMap<(String, String), ReplicaSettings>,
}

#[derive(Clone, Debug)]
pub struct Aurora {
    pub writer: String,
    pub members: Vec<String>,
    /// The writer being moved to, and when the move completes.
    pub moving: Option<(String, Instant)>,
}

#[derive(Clone, Debug)]
pub struct Pod {
    pub region: String,
    pub workload: String,
    pub created: Instant,
    pub ready_at: Instant,
    /// Set when scaled away; the pod lingers (Terminating) until then.
    pub gone_at: Option<Instant>,
}

/// A mutating call that reached the fake, whether or not it took effect.
#[derive(Clone, Debug)]
pub struct Call {
    pub at: Instant,
    pub op: &'static str,
    pub resource: String,
    pub applied: bool,
}

pub struct World {
    pub rng: fastrand::Rng,
    pub t0: Instant,
    /// Chance that a call fails transiently (before or after its effect).
    pub fault_rate: f64,
    pub effects: u64,
    /// Passes of the runner, over all processes.
    pub passes: u64,
    /// Databases described (RDS instances and Aurora global clusters), one per database.
    pub describes: u64,
    /// Crash at this effect number, before (false) or after (true) its effect.
    pub crash_at: Option<(u64, bool)>,
    pub crash: Arc<Notify>,
    /// Lease lost at this effect number.
    pub leader_change_at: Option<u64>,
    pub leader_change: Arc<Notify>,
    pub lease_epoch: u64,
    /// Plan regions that do not answer (AWS or cluster), by plan and AWS region name.
    pub lost: BTreeSet<String>,
    pub rds: BTreeMap<(String, String), Rds>,
    pub aurora: BTreeMap<String, Aurora>,
    /// Lag by lag-source identifier (the target member).
    pub lag: BTreeMap<String, LagMode>,
    pub zones: BTreeMap<String, Vec<RecordSet>>,
    pub changes: BTreeMap<String, Instant>,
    pub replicas: BTreeMap<(String, String), i32>,
    /// ConfigMap/Secret values by (region, name).
    pub config: BTreeMap<(String, String), BTreeMap<String, String>>,
    /// The restartedAt annotation of each workload, by (region, name).
    pub restarted: BTreeMap<(String, String), String>,
    /// When a workload's status catches up with its last spec change (its
    /// observedGeneration): until then it reads as not current, as on a real API server.
    pub status_at: BTreeMap<(String, String), Instant>,
    pub pods: Vec<Pod>,
    pub status: FailoverStatus,
    pub rv: u64,
    pub plan_fields: FailoverFields,
    pub log: Vec<Call>,
    /// Per lag source, the last reading served: (known and fresh, seconds, taken at).
    pub last_lag: BTreeMap<String, (bool, f64, SystemTime)>,
    pub violations: Vec<String>,
    /// Which lag counts as within the gate: None = anything (data loss allowed, no bound).
    pub gate_max: Option<f64>,
    /// A Planned failover: a reading that shows the replica replayed a commit made after
    /// the recorded fence passes the gate too (nothing acknowledged is outstanding).
    pub planned: bool,
    /// How long RDS describe keeps showing an instance as before its promotion call.
    pub describe_lag: Duration,
    pub db_count: usize,
    /// Drover's own AWS rate limit, tight, in some schedules: every AWS call first waits
    /// for a token, and a backed-up bucket refuses it as transient.
    pub limiter: Option<Arc<crate::ratelimit::Limiter>>,
    /// FailoverApprovals created so far, with when.
    pub approvals: Vec<(Instant, FailoverApproval)>,
    pub reprotect: ReprotectWorld,
}

pub type Shared = Arc<Mutex<World>>;

pub fn lock(w: &Shared) -> std::sync::MutexGuard<'_, World> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a call may do after its effect.
enum After {
    Ok,
    /// 5xx or a timeout: the effect happened, the caller gets an error.
    Fail(&'static str),
}

impl World {
    pub fn now(&self) -> Duration {
        Instant::now() - self.t0
    }

    /// The virtual wall clock: a fixed origin plus virtual time elapsed.
    pub fn wall(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + self.now()
    }

    fn region_lost(&self, region: &str) -> bool {
        self.lost.contains(region)
    }

    /// Counts the effect, crashes before it when scheduled, and draws a fault.
    /// Err(Some(kind)) fails the call before its effect; Err(None) crashes.
    fn enter(&mut self) -> Result<After, Option<&'static str>> {
        self.effects += 1;
        if self.leader_change_at == Some(self.effects) {
            self.lease_epoch += 1;
            self.leader_change.notify_one();
        }
        if self.crash_at == Some((self.effects, false)) {
            self.crash.notify_one();
            return Err(None);
        }
        if self.rng.f64() < self.fault_rate {
            return match self.rng.u8(0..3) {
                0 => Err(Some("Throttling: rate exceeded")),
                1 => Ok(After::Fail("500 InternalFailure (applied)")),
                _ => Ok(After::Fail("timeout (the call took effect)")),
            };
        }
        Ok(After::Ok)
    }

    /// After the effect: crash when scheduled.
    fn leave(&mut self) -> bool {
        if self.crash_at == Some((self.effects, true)) {
            self.crash.notify_one();
            return false;
        }
        true
    }

    /// Most calls answer at once; a timer for each would dominate the simulation's cost.
    fn latency(&mut self) -> Option<Duration> {
        (self.rng.u8(0..4) == 0).then(|| Duration::from_millis(self.rng.u64(1..40)))
    }

    fn record(&mut self, op: &'static str, resource: String, applied: bool) {
        let at = Instant::now();
        self.log.push(Call {
            at,
            op,
            resource,
            applied,
        });
    }

    /// Arms at most one interruption for the next run, within `within` effects: a crash
    /// (`crashes` in 10 runs) or a leader change (`leader_changes` in 10). Returns the lease
    /// epoch and the notifications the run is raced against.
    pub fn arm_interruption(
        &mut self,
        rng: &mut fastrand::Rng,
        within: u64,
        crashes: u8,
        leader_changes: u8,
    ) -> (u64, Arc<Notify>, Arc<Notify>) {
        let at = self.effects + rng.u64(1..within);
        self.crash_at = None;
        self.leader_change_at = None;
        let draw = rng.u8(0..10);
        if draw < crashes {
            self.crash_at = Some((at, rng.bool()));
        } else if draw < crashes + leader_changes {
            self.leader_change_at = Some(at);
        }
        self.crash = Arc::new(Notify::new());
        self.leader_change = Arc::new(Notify::new());
        (
            self.lease_epoch,
            self.crash.clone(),
            self.leader_change.clone(),
        )
    }

    /// `answer`, with a refused call in the log too (R7: Manual sends nothing).
    fn logged_if_refused<T>(
        &mut self,
        op: &'static str,
        resource: String,
        answer: AwsResult<T>,
    ) -> AwsResult<T> {
        if answer.is_err() {
            self.record(op, resource, false);
        }
        answer
    }

    /// Invariants 8 and 9: a CronJob is resumed, and a workload restarted for new config,
    /// only where every database is writable.
    pub fn check_writable(&mut self, region: &str, workload: &str) {
        let aws = format!("aws-{region}");
        let replicas = self
            .rds
            .iter()
            .filter(|((r, _), rds)| {
                *r == aws && (rds.source.is_some() || rds.status != "available")
            })
            .map(|((_, id), _)| id.clone());
        let readers = self
            .aurora
            .iter()
            .filter(|(_, a)| a.moving.is_some() || !a.writer.contains(&format!("{aws}:")))
            .map(|(id, _)| id.clone());
        let not_writable: Vec<String> = replicas.chain(readers).collect();
        if !not_writable.is_empty() {
            self.violations.push(format!(
                "8/9 (resumed or restarted before its databases were writable): {workload} in \
                 {region} while {} not writable",
                not_writable.join(", ")
            ));
        }
    }

    fn settle(&mut self) {
        let now = Instant::now();
        let mut moves = Vec::new();
        for (key, r) in self.rds.iter_mut() {
            if r.promoted_at.is_some_and(|t| t <= now) && r.status == "modifying" {
                r.status = "available".into();
                r.source = None;
            }
            if let Some((at, next)) = r.next.clone()
                && at <= now
            {
                r.next = None;
                match next {
                    RdsNext::Status(status) => {
                        r.status = status.into();
                        if status == "available" && r.source.is_some() {
                            r.lag_at = Some(now + Duration::from_millis(self.rng.u64(0..60_000)));
                        }
                    }
                    other => moves.push((key.clone(), other)),
                }
            }
        }
        for ((region, id), next) in moves {
            let Some(mut r) = self.rds.remove(&(region.clone(), id.clone())) else {
                continue;
            };
            if let RdsNext::Rename(to) = next {
                r.status = "available".into();
                r.before_promotion = None;
                self.rds.insert((region, to), r);
            }
        }
        for a in self.aurora.values_mut() {
            if let Some((to, at)) = a.moving.clone()
                && at <= now
            {
                a.writer = to;
                a.moving = None;
            }
        }
    }

    /// Promotion calls must follow the gates (invariants 3 and 4).
    fn check_promotion(&mut self, lag_source: &str, what: &str) {
        let cleared = |s: DatabaseState| s != DatabaseState::Pending && s != DatabaseState::Gated;
        let all = self.status.databases.len() == self.db_count
            && self.status.databases.iter().all(|d| cleared(d.state));
        if !all {
            let states: Vec<String> = self
                .status
                .databases
                .iter()
                .map(|d| format!("{}={:?}", d.name, d.state))
                .collect();
            self.violations.push(format!(
                "4 (promotion before every gate passed): {what} at {:?} with {states:?}",
                self.now()
            ));
        }
        let fenced_at = self
            .status
            .fenced_at
            .as_ref()
            .map(|t| SystemTime::from(t.0));
        let past_fence = |seconds: f64, at: SystemTime| {
            self.planned
                && fenced_at.is_some_and(|f| {
                    crate::engine::lag::replayed_since(&LagReading::new(seconds, at), f)
                })
        };
        if let Some(max) = self.gate_max {
            match self.last_lag.get(lag_source) {
                Some((true, l, at)) if *l <= max || past_fence(*l, *at) => {}
                other => self.violations.push(format!(
                    "3 (promotion without known lag within {max}s): {what} at {:?}, last reading {other:?}",
                    self.now()
                )),
            }
        }
    }

    fn running(&self, region: &str, workload: &str, now: Instant) -> Vec<usize> {
        (0..self.pods.len())
            .filter(|&i| {
                let p = &self.pods[i];
                p.region == region && p.workload == workload && p.gone_at.is_none_or(|g| g > now)
            })
            .collect()
    }

    fn scale(&mut self, region: &str, workload: &str, replicas: i32) {
        let now = Instant::now();
        let key = (region.to_string(), workload.to_string());
        let old = self.replicas.get(&key).copied().unwrap_or(0);
        if old != replicas {
            self.record("Scale", format!("{region}/{workload}→{replicas}"), true);
            let lag = Duration::from_millis(self.rng.u64(0..300));
            self.status_at.insert(key.clone(), now + lag);
        }
        self.replicas.insert(key, replicas);
        let live: Vec<usize> = (0..self.pods.len())
            .filter(|&i| {
                let p = &self.pods[i];
                p.region == region && p.workload == workload && p.gone_at.is_none()
            })
            .collect();
        let want = replicas.max(0) as usize;
        if live.len() > want {
            for &i in &live[want..] {
                let linger = Duration::from_millis(self.rng.u64(0..4000));
                self.pods[i].gone_at = Some(now + linger);
            }
        }
        for _ in live.len()..want {
            let start = Duration::from_millis(self.rng.u64(100..3000));
            self.pods.push(Pod {
                region: region.into(),
                workload: workload.into(),
                created: now,
                ready_at: now + start,
                gone_at: None,
            });
        }
    }
}

/// Runs one effect: latency, then the crash/fault schedule around `$body`. A crash leaves
/// the call hanging, and the runner drops the driver.
macro_rules! effect {
    ($world:expr, $region:expr, $unreachable:expr, $transient:expr, |$w:ident| $body:expr) => {{
        let latency = lock($world).latency();
        if let Some(latency) = latency {
            tokio::time::sleep(latency).await;
        }
        let verdict = {
            let mut guard = lock($world);
            guard.settle();
            match guard.enter() {
                Err(Some(why)) => Some(Err($transient(why.to_string()))),
                Err(None) => None,
                Ok(after) => {
                    let region: Option<&str> = $region;
                    if region.is_some_and(|r| guard.region_lost(r)) {
                        Some(Err($unreachable(format!(
                            "region {} unreachable",
                            region.unwrap_or_default()
                        ))))
                    } else {
                        #[allow(clippy::redundant_closure_call)]
                        let out = (|$w: &mut World| $body)(&mut *guard);
                        if !guard.leave() {
                            None
                        } else {
                            Some(match after {
                                After::Ok => out,
                                After::Fail(why) => out.and(Err($transient(why.to_string()))),
                            })
                        }
                    }
                }
            }
        };
        match verdict {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }};
}

/// `effect!` for the AWS fake: its errors as AWS SDK errors.
macro_rules! aws_effect {
    ($world:expr, $region:expr, |$w:ident| $body:expr) => {{
        let limiter = lock($world).limiter.clone();
        if let Some(limiter) = limiter {
            let region: Option<&str> = $region;
            let key = crate::ratelimit::BucketKey {
                service: "sim".into(),
                region: region.unwrap_or("global").into(),
                access_key: "sim".into(),
            };
            let priority = crate::ratelimit::CallPriority::current();
            if let Err(backlogged) = limiter.acquire(&key, priority).await {
                return Err(aws_err(AwsErrorKind::Transient)(backlogged.to_string()));
            }
        }
        effect!(
            $world,
            $region,
            aws_err(AwsErrorKind::Unreachable),
            aws_err(AwsErrorKind::Transient),
            |$w| $body
        )
    }};
}

fn aws_err(kind: AwsErrorKind) -> impl Fn(String) -> AwsError {
    move |message| AwsError { kind, message }
}

pub struct FakeAws(pub Shared);

impl FakeAws {
    /// A call on the management cluster's API server (the plan's status): an effect
    /// boundary like any other (crashes, 500s), in no region that can be lost.
    pub async fn api_call<T>(
        &self,
        body: impl FnOnce(&mut World) -> Result<T, kube::Error>,
    ) -> Result<T, kube::Error> {
        let transient = |m: String| api_error(500, m);
        effect!(&self.0, None, transient, transient, |w| body(w))
    }
}

/// An RDS refusal, as AWS words it.
fn refused(code: &str, what: &str) -> AwsError {
    aws_err(AwsErrorKind::Permanent)(format!("{code}: {what}"))
}

/// The ARN of an instance (the sim's sources of cross-region replicas).
pub fn instance_arn(region: &str, id: &str) -> String {
    format!("arn:aws:rds:{region}:1:db:{id}")
}

impl World {
    /// The re-protection invariants that hold at each mutating call on `id` in `region`:
    /// its intent is recorded (`state` with `names`), nothing blocks it, and it does not
    /// move the active primary or one of its replicas aside.
    fn check_reprotect_call(
        &mut self,
        op: &str,
        region: &str,
        id: &str,
        state: crate::api::ReprotectionState,
        names: (Option<&str>, Option<&str>),
    ) {
        let at = self.now();
        // Sim identifiers: db<d>-r<i> in aws-r<i>, database db<d> in plan region r<i>.
        let (database, plan_region) = id.split_once('-').unwrap_or((id, ""));
        let recorded = self
            .plan_fields
            .reprotections
            .iter()
            .find(|r| r.database == database && r.region == plan_region && r.instance == id);
        match recorded {
            // A create names nothing new (the record keeps where the old one went).
            Some(r)
                if r.state == state
                    && !r.requested
                    && (state == crate::api::ReprotectionState::Creating
                        || (r.renamed_to.as_deref(), r.final_snapshot.as_deref()) == names) => {}
            other => self.violations.push(format!(
                "R2 (call without its intent recorded): {op} {region}/{id} {names:?} at {at:?}, record {other:?}"
            )),
        }
        let fenced = self.plan_fields.pending_fences.iter().any(|f| {
            f.resource == crate::api::FenceResource::RdsInstance && f.region == plan_region
        });
        let running = self
            .plan_fields
            .last_failover
            .as_ref()
            .is_some_and(|l| l.phase.as_deref() == Some("Running"));
        if fenced || running {
            self.violations.push(format!(
                "R5 (call while blocked): {op} {region}/{id} at {at:?} (fence pending {fenced}, failover running {running})"
            ));
        }
        if state == crate::api::ReprotectionState::Creating {
            return;
        }
        let key = (region.to_string(), id.to_string());
        let primary_source = |src: &str| {
            self.reprotect
                .primaries
                .iter()
                .any(|(r, p)| crate::engine::source_is(src, r, p))
        };
        if self.reprotect.primaries.contains(&key) {
            self.violations.push(format!(
                "R1 (active primary moved aside): {op} {region}/{id} at {at:?}"
            ));
        }
        if let Some(r) = self.rds.get(&key)
            && r.source.as_deref().is_some_and(primary_source)
        {
            self.violations.push(format!(
                "R1 (replica of the active primary moved aside): {op} {region}/{id} at {at:?}"
            ));
        }
    }

    /// Whether an identifier is taken (by an instance, or as a rename's target).
    fn identifier_taken(&self, region: &str, id: &str) -> bool {
        self.rds.contains_key(&(region.to_string(), id.to_string()))
            || self.rds.iter().any(|((r, _), i)| {
                r == region && matches!(&i.next, Some((_, RdsNext::Rename(to))) if to == id)
            })
    }

    /// Describe may keep showing what it showed before the call, for a while.
    fn stale_from_now(&mut self, region: &str, id: &str) {
        if let Some(r) = self.rds.get_mut(&(region.to_string(), id.to_string())) {
            let before = RdsObservation {
                status: r.status.clone(),
                source: r.source.clone(),
                engine: "postgres".into(),
            };
            r.before_promotion = Some((before, Instant::now()));
        }
    }

    fn rename(&mut self, region: &str, id: &str, to: &str) -> AwsResult<()> {
        let state = crate::api::ReprotectionState::Renaming;
        self.check_reprotect_call("ModifyDBInstance", region, id, state, (Some(to), None));
        let key = (region.to_string(), id.to_string());
        let status = match self.rds.get(&key) {
            None => return Err(refused("DBInstanceNotFound", id)),
            Some(r) => r.status.clone(),
        };
        // Which AWS checks first is not documented: either order, at random.
        let taken = self.identifier_taken(region, to);
        let checks = [
            (status != "available").then(|| {
                refused(
                    "InvalidDBInstanceState",
                    &format!("{id} is {status}, not available"),
                )
            }),
            taken.then(|| refused("DBInstanceAlreadyExists", to)),
        ];
        let first = usize::from(self.rng.bool());
        if let Some(e) = checks[first].clone().or_else(|| checks[1 - first].clone()) {
            return Err(e);
        }
        let delay = Duration::from_millis(self.rng.u64(5_000..60_000));
        self.stale_from_now(region, id);
        if let Some(r) = self.rds.get_mut(&key) {
            r.status = "renaming".into();
            r.next = Some((Instant::now() + delay, RdsNext::Rename(to.into())));
        }
        self.record("ModifyDBInstance", format!("{region}/{id}"), true);
        Ok(())
    }

    fn delete(&mut self, region: &str, id: &str, snap: Option<&str>) -> AwsResult<()> {
        let state = crate::api::ReprotectionState::Deleting;
        self.check_reprotect_call("DeleteDBInstance", region, id, state, (None, snap));
        let key = (region.to_string(), id.to_string());
        let (status, source, data) = match self.rds.get(&key) {
            None => return Err(refused("DBInstanceNotFound", id)),
            Some(r) => (r.status.clone(), r.source.clone(), r.data),
        };
        let snap_taken = snap.is_some_and(|snap| {
            self.reprotect
                .snapshots
                .contains_key(&(region.to_string(), snap.to_string()))
        });
        // Which AWS checks first is not documented: either order, at random.
        let checks = [
            (status != "available" && status != "stopped")
                .then(|| refused("InvalidDBInstanceState", &format!("{id} is {status}"))),
            snap_taken.then(|| refused("DBSnapshotAlreadyExists", snap.unwrap_or_default())),
        ];
        let first = usize::from(self.rng.bool());
        if let Some(e) = checks[first].clone().or_else(|| checks[1 - first].clone()) {
            return Err(e);
        }
        if source.is_some() && snap.is_some() {
            return Err(refused(
                "InvalidParameterCombination",
                "FinalDBSnapshotIdentifier can not be specified when deleting a replica",
            ));
        }
        if let Some(snap) = snap {
            self.reprotect
                .snapshots
                .insert((region.to_string(), snap.to_string()), data);
        } else if source.is_none() {
            self.violations.push(format!(
                "R3 (standalone instance deleted without a final snapshot): {region}/{id} at {:?}",
                self.now()
            ));
        }
        let delay = Duration::from_millis(self.rng.u64(5_000..90_000));
        self.stale_from_now(region, id);
        if let Some(r) = self.rds.get_mut(&key) {
            r.status = "deleting".into();
            r.next = Some((Instant::now() + delay, RdsNext::Delete));
        }
        self.record("DeleteDBInstance", format!("{region}/{id}"), true);
        Ok(())
    }

    fn create_replica(
        &mut self,
        region: &str,
        id: &str,
        source_arn: &str,
        sent: &ReplicaSettings,
    ) -> AwsResult<()> {
        let state = crate::api::ReprotectionState::Creating;
        self.check_reprotect_call(
            "CreateDBInstanceReadReplica",
            region,
            id,
            state,
            (None, None),
        );
        if self.identifier_taken(region, id) {
            return Err(refused("DBInstanceAlreadyExists", id));
        }
        let parts: Vec<&str> = source_arn.split(':').collect();
        let source_ok = parts.len() == 7
            && self
                .rds
                .get(&(parts[3].to_string(), parts[6].to_string()))
                .is_some_and(|r| r.status == "available");
        if !source_ok {
            return Err(refused("DBInstanceNotFound", source_arn));
        }
        let source = self.rds[&(parts[3].to_string(), parts[6].to_string())]
            .settings
            .clone();
        let settings = self.replica_settings(region, parts[3], &source, sent)?;
        self.check_replica_settings(region, id, &settings);
        let mut r = Rds::new("creating", Some(source_arn.to_string()), 0);
        r.settings = settings;
        let delay = Duration::from_millis(self.rng.u64(30_000..300_000));
        r.next = Some((Instant::now() + delay, RdsNext::Status("available")));
        self.rds.insert((region.to_string(), id.to_string()), r);
        self.record(
            "CreateDBInstanceReadReplica",
            format!("{region}/{id}"),
            true,
        );
        Ok(())
    }
}

impl World {
    /// The settings of a replica in `region` of a source in `source_region`, created with
    /// `sent`, as AWS makes them; or AWS's refusal. The engine and encryption come from the
    /// source; a cross-region replica of an encrypted source needs a key of its region, and
    /// takes a parameter group only for MySQL (the sim's engines: mysql, postgres), getting
    /// its engine's default otherwise.
    fn replica_settings(
        &self,
        region: &str,
        source_region: &str,
        source: &ReplicaSettings,
        sent: &ReplicaSettings,
    ) -> AwsResult<ReplicaSettings> {
        let cross_region = region != source_region;
        let engine = source.engine.clone().unwrap_or_default();
        let mut made = sent.clone();
        made.engine = source.engine.clone();
        made.storage_encrypted = source.storage_encrypted;
        if source.storage_encrypted && cross_region {
            let key_here = sent
                .kms_key_id
                .as_deref()
                .is_some_and(|k| k.split(':').nth(3) == Some(region));
            if !key_here {
                return Err(refused(
                    "InvalidParameterCombination",
                    &format!("an encrypted cross-region replica needs a KMS key of {region}"),
                ));
            }
        }
        if !source.storage_encrypted {
            made.kms_key_id = None;
        }
        if cross_region && engine != "mysql" {
            if sent.db_parameter_group_name.is_some() {
                return Err(refused(
                    "InvalidParameterCombination",
                    &format!("a cross-region {engine} read replica takes no DBParameterGroupName"),
                ));
            }
            made.db_parameter_group_name = Some(format!("default.{engine}"));
        }
        Ok(made)
    }

    /// R8: a replica created by re-protection has the settings of the standby it
    /// replaces (its parameter group excepted where AWS gives the engine's default).
    fn check_replica_settings(&mut self, region: &str, id: &str, made: &ReplicaSettings) {
        let at = self.now();
        let key = (region.to_string(), id.to_string());
        let Some(old) = self.reprotect.standby_settings.get(&key) else {
            self.violations.push(format!(
                "R8 (replica created with nothing to copy its settings from): {region}/{id} at {at:?}"
            ));
            return;
        };
        let mut want = old.clone();
        if made
            .db_parameter_group_name
            .as_deref()
            .is_some_and(|g| g.starts_with("default."))
            && old.engine.as_deref() != Some("mysql")
        {
            want.db_parameter_group_name = made.db_parameter_group_name.clone();
        }
        if *made != want {
            self.violations.push(format!(
                "R8 (replica not set up like the standby it replaces): {region}/{id} at {at:?}: made {made:?}, was {old:?}"
            ));
        }
    }
}

pub fn cluster_arn(region: &str, id: &str) -> String {
    format!("arn:aws:rds:{region}:1:cluster:{id}")
}

#[async_trait]
impl Aws for FakeAws {
    async fn describe_instance(&self, region: &str, id: &str) -> AwsResult<Option<RdsObservation>> {
        aws_effect!(&self.0, Some(region), |w| {
            w.describes += 1;
            let lag = w.describe_lag;
            Ok(w.rds.get(&(region.to_string(), id.to_string())).map(|r| {
                match &r.before_promotion {
                    Some((stale, at)) if Instant::now() < *at + lag => stale.clone(),
                    _ => RdsObservation {
                        status: r.status.clone(),
                        source: r.source.clone(),
                        engine: "postgres".into(),
                    },
                }
            }))
        })
    }
    async fn promote_read_replica(&self, region: &str, id: &str) -> AwsResult<()> {
        aws_effect!(&self.0, Some(region), |w| {
            w.check_promotion(id, &format!("PromoteReadReplica {id}"));
            let delay = Duration::from_millis(w.rng.u64(1000..10000));
            let key = (region.to_string(), id.to_string());
            let ok = match w.rds.get_mut(&key) {
                Some(r) if r.status == "available" && r.source.is_some() => {
                    let before = RdsObservation {
                        status: r.status.clone(),
                        source: r.source.clone(),
                        engine: "postgres".into(),
                    };
                    r.before_promotion = Some((before, Instant::now()));
                    r.status = "modifying".into();
                    r.promoted_at = Some(Instant::now() + delay);
                    true
                }
                _ => false,
            };
            w.record("PromoteReadReplica", format!("{region}/{id}"), ok);
            if ok {
                Ok(())
            } else {
                Err(aws_err(AwsErrorKind::Permanent)(format!(
                    "InvalidDBInstanceState: {id}"
                )))
            }
        })
    }
    async fn stop_db_instance(&self, region: &str, id: &str) -> AwsResult<()> {
        aws_effect!(&self.0, Some(region), |w| {
            w.record("StopDBInstance", format!("{region}/{id}"), true);
            if let Some(r) = w.rds.get_mut(&(region.to_string(), id.to_string())) {
                r.status = "stopped".into();
            }
            Ok(())
        })
    }
    async fn rename_db_instance(&self, region: &str, id: &str, to: &str) -> AwsResult<()> {
        aws_effect!(&self.0, Some(region), |w| {
            let answer = w.rename(region, id, to);
            w.logged_if_refused("ModifyDBInstance", format!("{region}/{id}"), answer)
        })
    }
    async fn delete_db_instance(
        &self,
        region: &str,
        id: &str,
        snap: Option<&str>,
    ) -> AwsResult<()> {
        aws_effect!(&self.0, Some(region), |w| {
            let answer = w.delete(region, id, snap);
            w.logged_if_refused("DeleteDBInstance", format!("{region}/{id}"), answer)
        })
    }
    async fn create_read_replica(
        &self,
        region: &str,
        id: &str,
        src: &str,
        settings: &ReplicaSettings,
    ) -> AwsResult<()> {
        aws_effect!(&self.0, Some(region), |w| {
            let answer = w.create_replica(region, id, src, settings);
            w.logged_if_refused(
                "CreateDBInstanceReadReplica",
                format!("{region}/{id}"),
                answer,
            )
        })
    }
    async fn instance_settings(
        &self,
        region: &str,
        id: &str,
    ) -> AwsResult<Option<ReplicaSettings>> {
        aws_effect!(&self.0, Some(region), |w| Ok(w
            .rds
            .get(&(region.to_string(), id.to_string()))
            .map(|r| r.settings.clone())))
    }
    async fn instance_arn(&self, region: &str, id: &str) -> AwsResult<Option<String>> {
        aws_effect!(&self.0, Some(region), |w| Ok(w
            .rds
            .contains_key(&(region.to_string(), id.to_string()))
            .then(|| instance_arn(region, id))))
    }
    async fn instance_endpoint(&self, region: &str, id: &str) -> AwsResult<Option<String>> {
        aws_effect!(&self.0, Some(region), |w| Ok(w
            .rds
            .contains_key(&(region.to_string(), id.to_string()))
            .then(|| format!("{id}.{region}.rds.sim"))))
    }
    async fn cluster_endpoint(&self, region: &str, id: &str) -> AwsResult<Option<String>> {
        aws_effect!(&self.0, Some(region), |_w| Ok(Some(format!(
            "{id}.cluster.{region}.rds.sim"
        ))))
    }
    async fn cluster_arn(&self, region: &str, id: &str) -> AwsResult<Option<String>> {
        aws_effect!(&self.0, Some(region), |w| {
            let arn = cluster_arn(region, id);
            Ok(w.aurora
                .values()
                .any(|a| a.members.contains(&arn))
                .then_some(arn))
        })
    }
    async fn cluster_snapshots(
        &self,
        _region: &str,
        _cluster: &str,
    ) -> AwsResult<Vec<ClusterSnapshot>> {
        // Only the plan check reads them; the simulation drives failovers.
        Ok(Vec::new())
    }
    async fn describe_global_cluster(
        &self,
        region: &str,
        id: &str,
    ) -> AwsResult<Option<AuroraObservation>> {
        aws_effect!(&self.0, Some(region), |w| {
            w.describes += 1;
            Ok(w.aurora.get(id).map(|a| AuroraObservation {
                status: if a.moving.is_some() {
                    "switching-over".into()
                } else {
                    "available".into()
                },
                writer_arn: Some(a.writer.clone()),
                member_arns: a.members.clone(),
            }))
        })
    }
    async fn move_global_writer(
        &self,
        region: &str,
        id: &str,
        target_arn: &str,
        _how: WriterMove,
    ) -> AwsResult<()> {
        aws_effect!(&self.0, Some(region), |w| {
            let member = target_arn
                .rsplit(':')
                .next()
                .unwrap_or_default()
                .to_string();
            w.check_promotion(&member, &format!("move writer of {id} to {member}"));
            let delay = Duration::from_millis(w.rng.u64(1000..10000));
            let ok = match w.aurora.get_mut(id) {
                Some(a) if a.moving.is_none() && a.writer != target_arn => {
                    a.moving = Some((target_arn.to_string(), Instant::now() + delay));
                    true
                }
                _ => false,
            };
            w.record("MoveGlobalWriter", id.to_string(), ok);
            if ok {
                Ok(())
            } else {
                Err(aws_err(AwsErrorKind::Permanent)(format!(
                    "InvalidGlobalClusterStateFault: {id}"
                )))
            }
        })
    }
    async fn replica_lag(&self, region: &str, source: &LagSource) -> AwsResult<Option<LagReading>> {
        aws_effect!(&self.0, Some(region), |w| {
            let id = match source {
                LagSource::RdsReplica { instance } => instance,
                LagSource::AuroraSecondary { cluster } => cluster,
            };
            // Stamped on the simulation's wall clock, which the runner judges against.
            let now = w.wall();
            let (reading, served) = match w.lag.get(id).copied().unwrap_or(LagMode::Missing) {
                LagMode::Fresh(s) => (Some(LagReading::new(s, now)), (true, s, now)),
                LagMode::Negative => (Some(LagReading::new(-1.0, now)), (false, -1.0, now)),
                LagMode::Stale(s) => (
                    Some(LagReading::new(s, now - Duration::from_secs(3600))),
                    (false, s, now - Duration::from_secs(3600)),
                ),
                LagMode::Missing => (None, (false, f64::NAN, now)),
            };
            w.last_lag.insert(id.clone(), served);
            Ok(reading)
        })
    }
    async fn health_check_healthy(&self, _id: &str) -> AwsResult<bool> {
        Ok(true)
    }
    async fn list_records(&self, zone: &str) -> AwsResult<Vec<RecordSet>> {
        aws_effect!(&self.0, None, |w| {
            w.zones.get(zone).cloned().ok_or_else(|| AwsError {
                kind: AwsErrorKind::Permanent,
                message: format!("NoSuchHostedZone: No hosted zone found with ID: {zone}"),
            })
        })
    }
    async fn change_records(&self, zone: &str, changes: &[RecordChange]) -> AwsResult<String> {
        aws_effect!(&self.0, None, |w| {
            let now = Instant::now();
            if w.changes
                .iter()
                .any(|(id, at)| id.starts_with(zone) && *at > now)
            {
                return Err(aws_err(AwsErrorKind::Transient)(
                    "PriorRequestNotComplete".into(),
                ));
            }
            let mut records = w.zones.get(zone).cloned().unwrap_or_default();
            let same = |a: &RecordSet, b: &RecordSet| {
                a.name == b.name
                    && a.record_type == b.record_type
                    && a.set_identifier == b.set_identifier
            };
            let mut refused = None;
            if changes.len() > crate::engine::dns::MAX_BATCH_RECORDS {
                refused = Some("batch too large".to_string());
            }
            for c in changes {
                match c.action {
                    ChangeAction::Upsert => {
                        records.retain(|r| !same(r, &c.record));
                        records.push(c.record.clone());
                    }
                    ChangeAction::Delete => {
                        let before = records.len();
                        records.retain(|r| r != &c.record);
                        if records.len() == before {
                            refused =
                                Some(format!("delete of a record not present: {}", c.record.name));
                        }
                    }
                }
            }
            // Route 53: one PRIMARY and one SECONDARY per name and type.
            let mut roles = BTreeSet::new();
            for r in &records {
                if let Some(role) = &r.failover
                    && !roles.insert((r.name.clone(), r.record_type.clone(), role.clone()))
                {
                    refused = Some(format!("two {role} records for {}", r.name));
                }
            }
            if let Some(why) = refused {
                w.record("ChangeResourceRecordSets", format!("{zone} refused"), false);
                return Err(aws_err(AwsErrorKind::Permanent)(format!(
                    "InvalidChangeBatch: {why}"
                )));
            }
            for c in changes {
                let r = &c.record;
                w.record(
                    "ChangeResourceRecordSets",
                    format!(
                        "{zone} {:?} {} {} {:?} {:?}",
                        c.action, r.name, r.record_type, r.set_identifier, r.values
                    ),
                    true,
                );
            }
            w.zones.insert(zone.to_string(), records);
            let id = format!("{zone}-C{}", w.changes.len());
            let insync = now + Duration::from_millis(w.rng.u64(0..5000));
            w.changes.insert(id.clone(), insync);
            Ok(id)
        })
    }
    async fn change_insync(&self, change_id: &str) -> AwsResult<bool> {
        aws_effect!(&self.0, None, |w| {
            Ok(w.changes
                .get(change_id)
                .is_some_and(|t| *t <= Instant::now()))
        })
    }
    async fn image_exists(
        &self,
        _region: &str,
        _repository: &str,
        _reference: &str,
    ) -> AwsResult<bool> {
        Ok(true)
    }
    /// The simulated plans list no secrets; any asked for is there.
    async fn describe_secret(
        &self,
        region: &str,
        _name: &str,
    ) -> AwsResult<Option<crate::engine::secrets::SecretSeen>> {
        aws_effect!(&self.0, Some(region), |_w| {
            // A primary replicating in sync.
            Ok(Some(crate::engine::secrets::SecretSeen {
                replication: vec![("us-east-1".into(), "InSync".into(), None)],
                ..Default::default()
            }))
        })
    }
    /// Healthy from three checker regions, unless the AWS region named by the id (the
    /// simulation's convention: "hc-<aws region>") is lost. The simulation does not run the
    /// plan reconciler, so these reads are not effect boundaries.
    async fn health_check_observations(&self, id: &str) -> AwsResult<Vec<CheckerObservation>> {
        let w = lock(&self.0);
        let lost = id
            .strip_prefix("hc-")
            .is_some_and(|region| w.region_lost(region));
        Ok(["us-east-1", "us-west-2", "eu-west-1"]
            .iter()
            .map(|r| CheckerObservation {
                region: r.to_string(),
                healthy: Some(!lost),
                checked_at: Some(w.wall()),
            })
            .collect())
    }
    async fn alarm_state(&self, _region: &str, _name: &str) -> AwsResult<Option<String>> {
        Ok(Some("OK".into()))
    }
    async fn metric_datapoint(
        &self,
        _region: &str,
        _query: &MetricQuery,
    ) -> AwsResult<Option<MetricDatapoint>> {
        Ok(None)
    }
}

pub struct FakeClusters(pub Shared);

#[async_trait]
impl Clusters for FakeClusters {
    async fn workload(
        &self,
        region: &str,
        w: &WorkloadSpec,
    ) -> Result<Option<WorkloadState>, ClusterError> {
        effect!(
            &self.0,
            Some(region),
            ClusterError::Unreachable,
            ClusterError::Transient,
            |world| {
                let now = Instant::now();
                let key = (region.to_string(), w.name.clone());
                let Some(&replicas) = world.replicas.get(&key) else {
                    return Ok(None);
                };
                let live: Vec<&Pod> = world
                    .pods
                    .iter()
                    .filter(|p| p.region == region && p.workload == w.name && p.gone_at.is_none())
                    .collect();
                let observed_current = world.status_at.get(&key).is_none_or(|at| *at <= now);
                Ok(Some(WorkloadState {
                    replicas,
                    current_replicas: live.len() as i32,
                    ready_replicas: live.iter().filter(|p| p.ready_at <= now).count() as i32,
                    observed_current,
                    images: Vec::new(),
                    refs: Vec::new(),
                    selector: Some(format!("app={}", w.name)),
                    jobs_to_stop: 0,
                    updated_replicas: live.len() as i32,
                    restarted_at: world.restarted.get(&key).cloned(),
                }))
            }
        )
    }
    async fn scale(
        &self,
        region: &str,
        w: &WorkloadSpec,
        replicas: i32,
        _hold: bool,
    ) -> Result<i32, ClusterError> {
        effect!(
            &self.0,
            Some(region),
            ClusterError::Unreachable,
            ClusterError::Transient,
            |world| {
                if w.is_cron_job() && replicas > 0 {
                    world.check_writable(region, &w.name);
                }
                world.scale(region, &w.name, replicas);
                Ok(replicas)
            }
        )
    }
    async fn pods(
        &self,
        region: &str,
        w: &WorkloadSpec,
        _selector: &str,
    ) -> Result<usize, ClusterError> {
        effect!(
            &self.0,
            Some(region),
            ClusterError::Unreachable,
            ClusterError::Transient,
            |world| { Ok(world.running(region, &w.name, Instant::now()).len()) }
        )
    }
    /// The simulated workloads reference nothing.
    async fn object_exists(
        &self,
        region: &str,
        _namespace: &str,
        _kind: crate::engine::pod_refs::RefKind,
        _name: &str,
    ) -> Result<bool, ClusterError> {
        effect!(
            &self.0,
            Some(region),
            ClusterError::Unreachable,
            ClusterError::Transient,
            |_world| { Ok(true) }
        )
    }
    /// The simulated workloads have no autoscalers.
    async fn autoscalers(
        &self,
        region: &str,
        _namespace: &str,
    ) -> Result<
        Vec<(
            crate::engine::autoscalers::AutoscalerKind,
            serde_json::Value,
        )>,
        ClusterError,
    > {
        effect!(
            &self.0,
            Some(region),
            ClusterError::Unreachable,
            ClusterError::Transient,
            |_world| { Ok(Vec::new()) }
        )
    }
    async fn config_values(
        &self,
        region: &str,
        cfg: &crate::api::ConfigSpec,
        keys: &[String],
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, ClusterError> {
        effect!(
            &self.0,
            Some(region),
            ClusterError::Unreachable,
            ClusterError::Transient,
            |world| {
                let key = (region.to_string(), cfg.name.clone());
                let mut values = world.config.get(&key).cloned().unwrap_or_default();
                values.retain(|k, _| keys.contains(k));
                Ok(Some(values))
            }
        )
    }
    async fn write_config(
        &self,
        region: &str,
        cfg: &crate::api::ConfigSpec,
        values: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        effect!(
            &self.0,
            Some(region),
            ClusterError::Unreachable,
            ClusterError::Transient,
            |world| {
                let key = (region.to_string(), cfg.name.clone());
                world.config.entry(key).or_default().extend(values.clone());
                Ok(())
            }
        )
    }
    async fn config_writable(
        &self,
        region: &str,
        _cfg: &crate::api::ConfigSpec,
        _values: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        effect!(
            &self.0,
            Some(region),
            ClusterError::Unreachable,
            ClusterError::Transient,
            |_world| { Ok(()) }
        )
    }
    async fn restart(&self, region: &str, w: &WorkloadSpec, at: &str) -> Result<(), ClusterError> {
        effect!(
            &self.0,
            Some(region),
            ClusterError::Unreachable,
            ClusterError::Transient,
            |world| {
                // Invariant 9: a restart is requested only where every database is
                // writable, and (the same annotation) at most once per workload.
                world.check_writable(region, &w.name);
                let key = (region.to_string(), w.name.clone());
                if world.restarted.get(&key).is_some_and(|a| a != at) {
                    world
                        .violations
                        .push(format!("9 (restarted twice): {} in {region}", w.name));
                }
                world.restarted.insert(key, at.to_string());
                Ok(())
            }
        )
    }
}

fn api_error(code: u16, message: String) -> kube::Error {
    kube::Error::Api(Box::new(kube::core::Status {
        code,
        message,
        ..Default::default()
    }))
}

pub struct FakeStore(pub Shared);

#[async_trait]
impl StatusStore for FakeStore {
    async fn write_failover_status(
        &self,
        _name: &str,
        status: &FailoverStatus,
        resource_version: Option<&str>,
    ) -> Result<Option<String>, kube::Error> {
        let transient = |m: String| api_error(500, m);
        effect!(&self.0, None, transient, transient, |w| {
            if resource_version.is_some_and(|v| v != w.rv.to_string()) {
                return Err(api_error(409, "the object has been modified".into()));
            }
            w.rv += 1;
            w.status = status.clone();
            Ok(Some(w.rv.to_string()))
        })
    }

    async fn update_plan_fields(
        &self,
        _plan: &str,
        change: &mut (dyn for<'a> FnMut(&'a mut FailoverFields) + Send),
    ) -> Result<FailoverFields, kube::Error> {
        let transient = |m: String| api_error(500, m);
        effect!(&self.0, None, transient, transient, |w| {
            let mut fields = w.plan_fields.clone();
            change(&mut fields);
            w.plan_fields = fields.clone();
            Ok(fields)
        })
    }

    async fn publish(&self, _: &Failover, _: EventType, _: &str, _: &str, _: String) {}

    async fn approvals(&self) -> Result<Vec<FailoverApproval>, kube::Error> {
        let transient = |m: String| api_error(500, m);
        effect!(&self.0, None, transient, transient, |w| {
            Ok(w.approvals.iter().map(|(_, a)| a.clone()).collect())
        })
    }
}

/// One leader's view of the lease: valid while the world's epoch is the one it started in.
pub struct FakeLease {
    pub world: Shared,
    pub epoch: u64,
    pub deposed: AtomicBool,
}

#[async_trait]
impl LeaseCheck for FakeLease {
    async fn confirm(&self) -> Result<(), String> {
        let latency = lock(&self.world).latency();
        if let Some(latency) = latency {
            tokio::time::sleep(latency).await;
        }
        if self.deposed() || lock(&self.world).lease_epoch != self.epoch {
            self.deposed.store(true, Ordering::Release);
            return Err(self.deposed_message());
        }
        Ok(())
    }
    fn deposed(&self) -> bool {
        self.deposed.load(Ordering::Acquire)
    }
    fn deposed_message(&self) -> String {
        format!("leader epoch {} deposed", self.epoch)
    }
}
