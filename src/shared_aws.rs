//! AWS reads and Route 53 changes shared by every plan of the process.
//!
//! When a region is lost, every plan fails over at once and polls the same services under
//! one account's rate limits. Requests of one kind and key (an RDS region, a hosted zone, a
//! change ID) go out one call at a time; whatever queued while a call was in flight goes
//! out together as the next call. A caller alone waits for nothing, and under load one
//! call answers many plans:
//! - RDS instance descriptions and lag readings of a region, for all plans, in one
//!   `DescribeDBInstances` and one `GetMetricData` (each chunked by the client);
//! - Aurora global clusters of a region in one `DescribeGlobalClusters` listing;
//! - one `GetChange` per change ID, one `ListResourceRecordSets` per zone, one health-check
//!   read per health check;
//! - Route 53 change batches of several plans to one zone merged into one batch while they
//!   touch different names and stay within Route 53's limits, so plans do not race each
//!   other into `PriorRequestNotComplete`.
//!
//! A queued request is only answered by a call sent after it queued, so a plan always sees
//! its own earlier writes.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::oneshot;

use crate::api::ReplicaSettings;
use crate::aws::{Aws, AwsError, AwsErrorKind, AwsResult, LagSource, WriterMove, only};
use crate::engine::automatic::{CheckerObservation, MetricDatapoint, MetricQuery};
use crate::engine::dns::{
    MAX_BATCH_RECORDS, MAX_BATCH_VALUE_CHARS, RecordChange, cost, normalize_name,
};
use crate::engine::{AuroraObservation, ClusterSnapshot, LagReading, RdsObservation, RecordSet};
use crate::ratelimit::CallPriority;

/// How long an image found in ECR counts as there without asking again. Every plan check
/// and preflight asks about every workload's image; with hundreds of plans that alone
/// exceeds ECR's rate. An image deleted within this time is only found missing by the
/// failover's warm-up (its pods do not start), not by preflight. Missing images are
/// asked about every time.
const IMAGE_FOUND_FOR: Duration = Duration::from_secs(60);

/// Found images remembered at most; the memory is emptied when full.
const MAX_IMAGES_REMEMBERED: usize = 16_384;

/// Change IDs remembered as INSYNC (INSYNC never reverts); the set is emptied when full.
const MAX_INSYNC_REMEMBERED: usize = 4096;

/// Queued requests, each with its caller's priority (the call carrying several has the
/// highest of theirs under Drover's rate limits).
type Waiting<Req, Resp> = Vec<(Req, oneshot::Sender<AwsResult<Resp>>, CallPriority)>;

/// One key's queue, and the turn to send it (held by the call in flight).
struct Lane<Req, Resp> {
    queue: Mutex<Waiting<Req, Resp>>,
    turn: Arc<tokio::sync::Mutex<()>>,
    /// The priority of the call in flight, until it is answered.
    in_flight: Mutex<Option<CallPriority>>,
}

/// Queues by key: one call in flight per key, the queue sent together as the next call.
struct Lanes<K, Req, Resp> {
    lanes: Mutex<HashMap<K, Arc<Lane<Req, Resp>>>>,
}

/// Past this many keys, idle ones are dropped (change IDs are never asked for again).
const MAX_IDLE_LANES: usize = 1024;

pub(crate) fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere leaves plain data behind, still usable (queues, probe records).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn dropped() -> AwsError {
    AwsError {
        kind: AwsErrorKind::Transient,
        message: "the shared AWS call carrying this request ended without an answer".into(),
    }
}

impl<Req, Resp> Lane<Req, Resp> {
    /// The queued requests whose callers still wait; the others are dropped unsent.
    fn take_waiting(&self) -> Waiting<Req, Resp> {
        let mut queue = locked(&self.queue);
        queue.retain(|(_, tx, _)| !tx.is_closed());
        std::mem::take(&mut *queue)
    }

    fn idle(self: &Arc<Self>) -> bool {
        // Only the map holds it; nothing waits and nothing is in flight.
        Arc::strong_count(self) == 1
            && locked(&self.queue).iter().all(|(_, tx, _)| tx.is_closed())
            && self.turn.try_lock().is_ok()
    }
}

impl<K, Req, Resp> Lanes<K, Req, Resp>
where
    K: Eq + Hash + Clone,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    fn new() -> Self {
        Self {
            lanes: Mutex::new(HashMap::new()),
        }
    }

    /// Queues `request` under `key` and answers it: from a call another caller sent, or
    /// by sending the queue with `send`, which answers each request in order. The call
    /// runs as its own task holding the key's turn, so a caller cancelled meanwhile takes
    /// no one else's answer with it, and a request cancelled while queued is never sent.
    ///
    /// A request of higher priority than the call in flight goes out alone at once: that
    /// call may be waiting behind other calls for a token of Drover's rate limit, and a
    /// failover's read must not wait behind a plan check's.
    async fn submit<F, Fut>(&self, key: K, request: Req, send: F) -> AwsResult<Resp>
    where
        F: FnOnce(Vec<Req>) -> Fut,
        Fut: Future<Output = Vec<AwsResult<Resp>>> + Send + 'static,
    {
        let in_flight = locked(&self.lanes)
            .get(&key)
            .and_then(|lane| *locked(&lane.in_flight));
        if in_flight.is_some_and(|p| p < CallPriority::current()) {
            let answers = send(vec![request]).await;
            return answers.into_iter().next().unwrap_or_else(|| Err(dropped()));
        }
        self.submit_holding(key, request, |requests| {
            let call = send(requests);
            async move { (call.await, None) }
        })
        .await
    }

    /// `submit`, where the call may also return a wait that keeps the key's turn after
    /// its answers are given (the next call for the key waits for it).
    async fn submit_holding<F, Fut>(&self, key: K, request: Req, send: F) -> AwsResult<Resp>
    where
        F: FnOnce(Vec<Req>) -> Fut,
        Fut: Future<Output = (Vec<AwsResult<Resp>>, Option<Hold>)> + Send + 'static,
    {
        let lane = {
            let mut lanes = locked(&self.lanes);
            if lanes.len() > MAX_IDLE_LANES {
                lanes.retain(|_, lane| !lane.idle());
            }
            lanes
                .entry(key.clone())
                .or_insert_with(|| {
                    Arc::new(Lane {
                        queue: Mutex::new(Vec::new()),
                        turn: Arc::new(tokio::sync::Mutex::new(())),
                        in_flight: Mutex::new(None),
                    })
                })
                .clone()
        };
        let (tx, mut rx) = oneshot::channel();
        locked(&lane.queue).push((request, tx, CallPriority::current()));
        let answer = tokio::select! {
            biased;
            answer = &mut rx => answer.unwrap_or_else(|_| Err(dropped())),
            turn = lane.turn.clone().lock_owned() => {
                let batch = lane.take_waiting();
                if batch.is_empty() {
                    drop(turn);
                } else {
                    let priority = batch.iter().map(|(_, _, p)| *p).max().unwrap_or_default();
                    let (requests, senders): (Vec<Req>, Vec<_>) =
                        batch.into_iter().map(|(r, tx, _)| (r, tx)).unzip();
                    let call = send(requests);
                    *locked(&lane.in_flight) = Some(priority);
                    let flying = lane.clone();
                    tokio::spawn(priority.scope(async move {
                        let (answers, hold) = call.await;
                        *locked(&flying.in_flight) = None;
                        drop(flying);
                        // Free before answering when nothing holds it: an answered caller
                        // then finds the key idle.
                        let turn = if hold.is_some() { Some(turn) } else { drop(turn); None };
                        for (sender, answer) in senders.into_iter().zip(answers) {
                            let _ = sender.send(answer);
                        }
                        if let Some(hold) = hold {
                            hold.await;
                        }
                        drop(turn);
                    }));
                }
                // Ours went out in this call, or in one that already answered it.
                rx.await.unwrap_or_else(|_| Err(dropped()))
            }
        };
        let mut lanes = locked(&self.lanes);
        drop(lane);
        if lanes.get(&key).is_some_and(Lane::idle) {
            lanes.remove(&key);
        }
        answer
    }
}

/// A wait that keeps a key's turn after a call was answered.
type Hold = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// `answer` for every request of a batch that one call answers alike.
fn to_all<T: Clone>(n: usize, answer: AwsResult<T>) -> Vec<AwsResult<T>> {
    vec![answer; n]
}

/// Splits the answer to concatenated requests back into one answer per request.
fn split<T: Clone>(lengths: &[usize], answer: AwsResult<Vec<T>>) -> Vec<AwsResult<Vec<T>>> {
    match answer {
        Err(e) => to_all(lengths.len(), Err(e)),
        Ok(all) if all.len() != lengths.iter().sum::<usize>() => to_all(
            lengths.len(),
            Err(AwsError {
                kind: AwsErrorKind::Transient,
                message: format!(
                    "a shared AWS read answered {} of {} items",
                    all.len(),
                    lengths.iter().sum::<usize>()
                ),
            }),
        ),
        Ok(all) => {
            let mut rest = all.into_iter();
            lengths
                .iter()
                .map(|&n| Ok(rest.by_ref().take(n).collect()))
                .collect()
        }
    }
}

/// Groups change batches into merged batches, sent in group order: each group's batches
/// touch disjoint names and types, and together stay within Route 53's limits; two batches
/// touching one name go out in their own order. Returns indexes into `batches`.
fn merge_groups(batches: &[Vec<RecordChange>]) -> Vec<Vec<usize>> {
    struct Group {
        members: Vec<usize>,
        names: HashSet<(String, String)>,
        records: usize,
        chars: usize,
    }
    let mut groups: Vec<Group> = Vec::new();
    for (i, batch) in batches.iter().enumerate() {
        let names: HashSet<(String, String)> = batch
            .iter()
            .map(|c| (normalize_name(&c.record.name), c.record.record_type.clone()))
            .collect();
        let (records, chars) = batch
            .iter()
            .map(cost)
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        // Only after the last group it shares a name with: batches touching one name go
        // out in the order they were asked for.
        let after = groups
            .iter()
            .rposition(|g| !g.names.is_disjoint(&names))
            .map_or(0, |last| last + 1);
        let fits = groups[after..].iter_mut().find(|g| {
            g.records + records <= MAX_BATCH_RECORDS && g.chars + chars <= MAX_BATCH_VALUE_CHARS
        });
        match fits {
            Some(g) => {
                g.members.push(i);
                g.names.extend(names);
                g.records += records;
                g.chars += chars;
            }
            None => groups.push(Group {
                members: vec![i],
                names,
                records,
                chars,
            }),
        }
    }
    groups.into_iter().map(|g| g.members).collect()
}

/// The process's AWS effector with reads and Route 53 changes shared across plans.
pub struct SharedAws {
    inner: Arc<dyn Aws>,
    instances: Lanes<String, Vec<String>, Vec<Option<RdsObservation>>>,
    lags: Lanes<String, Vec<LagSource>, Vec<Option<LagReading>>>,
    globals: Lanes<String, Vec<String>, Vec<Option<AuroraObservation>>>,
    zones: Lanes<String, (), Vec<RecordSet>>,
    changes_out: Lanes<String, Vec<RecordChange>, String>,
    changes: Arc<ChangeStatus>,
    /// Images found, by region, repository and reference, with when.
    images: Mutex<HashMap<(String, String, String), tokio::time::Instant>>,
    health: Lanes<String, (), Vec<CheckerObservation>>,
    healthy: Lanes<String, (), bool>,
}

impl SharedAws {
    pub fn new(inner: Arc<dyn Aws>) -> Self {
        Self {
            inner: inner.clone(),
            instances: Lanes::new(),
            lags: Lanes::new(),
            globals: Lanes::new(),
            zones: Lanes::new(),
            changes_out: Lanes::new(),
            changes: Arc::new(ChangeStatus {
                inner: inner.clone(),
                lanes: Lanes::new(),
                insync: Mutex::new(HashSet::new()),
            }),
            health: Lanes::new(),
            healthy: Lanes::new(),
            images: Mutex::new(HashMap::new()),
        }
    }
}

/// Sends queued change batches for one zone: merged where they can be, one call per merged
/// batch in turn. A merged batch Route 53 refuses is sent again batch by batch, so one
/// plan's refused change never fails another plan's.
async fn send_changes(
    inner: Arc<dyn Aws>,
    zone: String,
    batches: Vec<Vec<RecordChange>>,
    status: Arc<ChangeStatus>,
) -> Vec<AwsResult<String>> {
    let mut answers: Vec<Option<AwsResult<String>>> = vec![None; batches.len()];
    for (n, group) in merge_groups(&batches).into_iter().enumerate() {
        if n > 0 {
            // One change to a zone at a time, as Route 53 takes them.
            let sent: Vec<String> = answers
                .iter()
                .flatten()
                .filter_map(|a| a.clone().ok())
                .collect();
            status.wait_insync(sent).await;
        }
        let merged: Vec<RecordChange> = group
            .iter()
            .flat_map(|&i| batches[i].iter().cloned())
            .collect();
        match inner.change_records(&zone, &merged).await {
            Err(e) if group.len() > 1 && e.kind == AwsErrorKind::Permanent => {
                for &i in &group {
                    answers[i] = Some(inner.change_records(&zone, &batches[i]).await);
                }
            }
            answer => {
                for &i in &group {
                    answers[i] = Some(answer.clone());
                }
            }
        }
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(dropped())))
        .collect()
}

/// How long a zone's turn is kept waiting for its changes to be INSYNC, at most.
const INSYNC_HOLD: Duration = Duration::from_secs(10);

/// Route 53 change status, shared: one GetChange per change ID at a time, INSYNC answers
/// remembered (INSYNC never reverts).
struct ChangeStatus {
    inner: Arc<dyn Aws>,
    lanes: Lanes<String, (), bool>,
    insync: Mutex<HashSet<String>>,
}

impl ChangeStatus {
    async fn insync(&self, change_id: &str) -> AwsResult<bool> {
        if locked(&self.insync).contains(change_id) {
            return Ok(true);
        }
        let (inner, owned) = (self.inner.clone(), change_id.to_string());
        let insync = self
            .lanes
            .submit(change_id.to_string(), (), |requests| async move {
                to_all(requests.len(), inner.change_insync(&owned).await)
            })
            .await?;
        if insync {
            let mut remembered = locked(&self.insync);
            if remembered.len() >= MAX_INSYNC_REMEMBERED {
                remembered.clear();
            }
            remembered.insert(change_id.to_string());
        }
        Ok(insync)
    }

    /// Waits (at most `INSYNC_HOLD`) until every change in `ids` is INSYNC, polling from
    /// 250 ms apart, half again longer each time, up to 2 s (about 8 GetChange calls in the
    /// 10 s, shared with the plans polling the same change). Errors end the wait early:
    /// the plans poll their changes anyway.
    async fn wait_insync(&self, mut ids: Vec<String>) {
        ids.sort();
        ids.dedup();
        let deadline = tokio::time::Instant::now() + INSYNC_HOLD;
        let mut pause = Duration::from_millis(250);
        ids.retain(|id| !locked(&self.insync).contains(id));
        while !ids.is_empty() && tokio::time::Instant::now() < deadline {
            // A change just made is PENDING: no call before the first pause.
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(Duration::from_secs(2));
            let mut pending = Vec::new();
            for id in ids {
                match self.insync(&id).await {
                    Ok(true) => {}
                    Ok(false) => pending.push(id),
                    Err(_) => return,
                }
            }
            ids = pending;
        }
    }
}

/// Reads several requests' items in one call; when that call is refused outright and it
/// carried more than one request, each is read again alone, so one plan's refused item
/// (a missing metric, a denied instance) never fails another plan's read.
async fn read_together<T, R, F, Fut>(requests: Vec<Vec<T>>, read: F) -> Vec<AwsResult<Vec<R>>>
where
    T: Clone,
    R: Clone,
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = AwsResult<Vec<R>>>,
{
    let (lengths, all) = concatenated(&requests);
    match read(all).await {
        Err(e) if requests.len() > 1 && e.kind == AwsErrorKind::Permanent => {
            let mut answers = Vec::with_capacity(requests.len());
            for request in requests {
                answers.push(read(request).await);
            }
            answers
        }
        answer => split(&lengths, answer),
    }
}

/// The length of each request, and the requests end to end.
fn concatenated<T: Clone>(requests: &[Vec<T>]) -> (Vec<usize>, Vec<T>) {
    (
        requests.iter().map(Vec::len).collect(),
        requests.iter().flatten().cloned().collect(),
    )
}

#[async_trait]
impl Aws for SharedAws {
    async fn describe_instance(&self, region: &str, id: &str) -> AwsResult<Option<RdsObservation>> {
        only(self.describe_instances(region, &[id.to_string()]).await)
    }
    async fn describe_instances(
        &self,
        region: &str,
        ids: &[String],
    ) -> AwsResult<Vec<Option<RdsObservation>>> {
        let (inner, owned) = (self.inner.clone(), region.to_string());
        self.instances
            .submit(region.to_string(), ids.to_vec(), |requests| {
                read_together(requests, move |ids| {
                    let (inner, region) = (inner.clone(), owned.clone());
                    async move { inner.describe_instances(&region, &ids).await }
                })
            })
            .await
    }
    async fn promote_read_replica(&self, region: &str, id: &str) -> AwsResult<()> {
        self.inner.promote_read_replica(region, id).await
    }
    async fn stop_db_instance(&self, region: &str, id: &str) -> AwsResult<()> {
        self.inner.stop_db_instance(region, id).await
    }
    async fn rename_db_instance(&self, region: &str, id: &str, to: &str) -> AwsResult<()> {
        self.inner.rename_db_instance(region, id, to).await
    }
    async fn delete_db_instance(
        &self,
        region: &str,
        id: &str,
        final_snapshot: Option<&str>,
    ) -> AwsResult<()> {
        self.inner
            .delete_db_instance(region, id, final_snapshot)
            .await
    }
    async fn create_read_replica(
        &self,
        region: &str,
        id: &str,
        source_arn: &str,
        settings: &ReplicaSettings,
    ) -> AwsResult<()> {
        self.inner
            .create_read_replica(region, id, source_arn, settings)
            .await
    }
    async fn instance_settings(
        &self,
        region: &str,
        id: &str,
    ) -> AwsResult<Option<ReplicaSettings>> {
        self.inner.instance_settings(region, id).await
    }
    async fn instance_arn(&self, region: &str, id: &str) -> AwsResult<Option<String>> {
        self.inner.instance_arn(region, id).await
    }
    async fn cluster_arn(&self, region: &str, id: &str) -> AwsResult<Option<String>> {
        self.inner.cluster_arn(region, id).await
    }
    async fn instance_endpoint(&self, region: &str, id: &str) -> AwsResult<Option<String>> {
        self.inner.instance_endpoint(region, id).await
    }
    async fn cluster_endpoint(&self, region: &str, id: &str) -> AwsResult<Option<String>> {
        self.inner.cluster_endpoint(region, id).await
    }
    async fn cluster_snapshots(
        &self,
        region: &str,
        cluster: &str,
    ) -> AwsResult<Vec<ClusterSnapshot>> {
        self.inner.cluster_snapshots(region, cluster).await
    }
    async fn describe_global_cluster(
        &self,
        region: &str,
        id: &str,
    ) -> AwsResult<Option<AuroraObservation>> {
        only(
            self.describe_global_clusters(region, &[id.to_string()])
                .await,
        )
    }
    async fn describe_global_clusters(
        &self,
        region: &str,
        ids: &[String],
    ) -> AwsResult<Vec<Option<AuroraObservation>>> {
        let (inner, owned) = (self.inner.clone(), region.to_string());
        self.globals
            .submit(region.to_string(), ids.to_vec(), |requests| {
                read_together(requests, move |ids| {
                    let (inner, region) = (inner.clone(), owned.clone());
                    async move { inner.describe_global_clusters(&region, &ids).await }
                })
            })
            .await
    }
    async fn move_global_writer(
        &self,
        region: &str,
        id: &str,
        target_arn: &str,
        how: WriterMove,
    ) -> AwsResult<()> {
        self.inner
            .move_global_writer(region, id, target_arn, how)
            .await
    }
    async fn replica_lag(&self, region: &str, source: &LagSource) -> AwsResult<Option<LagReading>> {
        only(
            self.replica_lags(region, std::slice::from_ref(source))
                .await,
        )
    }
    async fn replica_lags(
        &self,
        region: &str,
        sources: &[LagSource],
    ) -> AwsResult<Vec<Option<LagReading>>> {
        let (inner, owned) = (self.inner.clone(), region.to_string());
        self.lags
            .submit(region.to_string(), sources.to_vec(), |requests| {
                read_together(requests, move |sources| {
                    let (inner, region) = (inner.clone(), owned.clone());
                    async move { inner.replica_lags(&region, &sources).await }
                })
            })
            .await
    }
    async fn health_check_healthy(&self, id: &str) -> AwsResult<bool> {
        let (inner, owned) = (self.inner.clone(), id.to_string());
        self.healthy
            .submit(id.to_string(), (), |requests| async move {
                to_all(requests.len(), inner.health_check_healthy(&owned).await)
            })
            .await
    }
    async fn list_records(&self, zone: &str) -> AwsResult<Vec<RecordSet>> {
        let (inner, owned) = (self.inner.clone(), zone.to_string());
        self.zones
            .submit(zone.to_string(), (), |requests| async move {
                to_all(requests.len(), inner.list_records(&owned).await)
            })
            .await
    }
    async fn change_records(&self, zone: &str, changes: &[RecordChange]) -> AwsResult<String> {
        let (inner, owned, status) = (self.inner.clone(), zone.to_string(), self.changes.clone());
        self.changes_out
            .submit_holding(zone.to_string(), changes.to_vec(), |batches| async move {
                let answers = send_changes(inner, owned, batches, status.clone()).await;
                // The change IDs are answered at once (each plan records its own), but
                // the zone's turn is kept until the changes are INSYNC: Route 53 refuses
                // another change to the zone meanwhile (PriorRequestNotComplete), and the
                // plans that ask in the meantime go out together as one batch after.
                let sent: Vec<String> = answers.iter().filter_map(|a| a.clone().ok()).collect();
                let hold: Hold = Box::pin(async move { status.wait_insync(sent).await });
                (answers, Some(hold))
            })
            .await
    }
    async fn change_insync(&self, change_id: &str) -> AwsResult<bool> {
        self.changes.insync(change_id).await
    }
    async fn image_exists(
        &self,
        region: &str,
        repository: &str,
        reference: &str,
    ) -> AwsResult<bool> {
        let key = (
            region.to_string(),
            repository.to_string(),
            reference.to_string(),
        );
        let now = tokio::time::Instant::now();
        let found_lately = locked(&self.images)
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < IMAGE_FOUND_FOR);
        if found_lately {
            return Ok(true);
        }
        let exists = self
            .inner
            .image_exists(region, repository, reference)
            .await?;
        if exists {
            let mut found = locked(&self.images);
            if found.len() >= MAX_IMAGES_REMEMBERED {
                found.clear();
            }
            found.insert(key, now);
        }
        Ok(exists)
    }
    async fn describe_secret(
        &self,
        region: &str,
        name: &str,
    ) -> AwsResult<Option<crate::engine::secrets::SecretSeen>> {
        self.inner.describe_secret(region, name).await
    }
    async fn health_check_observations(&self, id: &str) -> AwsResult<Vec<CheckerObservation>> {
        let (inner, owned) = (self.inner.clone(), id.to_string());
        self.health
            .submit(id.to_string(), (), |requests| async move {
                to_all(
                    requests.len(),
                    inner.health_check_observations(&owned).await,
                )
            })
            .await
    }
    async fn alarm_state(&self, region: &str, name: &str) -> AwsResult<Option<String>> {
        self.inner.alarm_state(region, name).await
    }
    async fn metric_datapoint(
        &self,
        region: &str,
        query: &MetricQuery,
    ) -> AwsResult<Option<MetricDatapoint>> {
        self.inner.metric_datapoint(region, query).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::dns::ChangeAction;
    use tokio::sync::Semaphore;

    /// Records each call the shared layer makes; calls wait for a permit of `gate`.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
        gate: Option<Semaphore>,
        /// Change batches containing this name are refused as Route 53 refuses them.
        refuse_name: Option<String>,
        pending_polls: std::sync::atomic::AtomicUsize,
    }

    impl Recorder {
        fn gated() -> Self {
            Self {
                gate: Some(Semaphore::new(0)),
                ..Default::default()
            }
        }
        async fn call(&self, what: String) {
            let ungated = what.starts_with("insync");
            locked(&self.calls).push(what);
            if let Some(gate) = &self.gate
                && !ungated
            {
                gate.acquire().await.expect("gate open").forget();
            }
        }
        fn calls(&self) -> Vec<String> {
            locked(&self.calls).clone()
        }
        /// The change batches sent, without the GetChange polls.
        fn changes(&self) -> Vec<String> {
            let calls = self.calls();
            calls
                .into_iter()
                .filter(|c| c.starts_with("change"))
                .collect()
        }
    }

    #[async_trait]
    impl Aws for Recorder {
        async fn describe_instance(&self, _: &str, _: &str) -> AwsResult<Option<RdsObservation>> {
            panic!("the shared layer describes in batches")
        }
        async fn describe_instances(
            &self,
            region: &str,
            ids: &[String],
        ) -> AwsResult<Vec<Option<RdsObservation>>> {
            self.call(format!("describe {region} {}", ids.join(",")))
                .await;
            if let Some(bad) = &self.refuse_name
                && ids.contains(bad)
            {
                return Err(AwsError {
                    kind: AwsErrorKind::Permanent,
                    message: format!("AccessDenied: not allowed to describe {bad}"),
                });
            }
            Ok(ids
                .iter()
                .map(|id| {
                    Some(RdsObservation {
                        status: format!("status of {id}"),
                        source: None,
                        ..Default::default()
                    })
                })
                .collect())
        }
        async fn promote_read_replica(&self, _: &str, _: &str) -> AwsResult<()> {
            Ok(())
        }
        async fn stop_db_instance(&self, _: &str, _: &str) -> AwsResult<()> {
            Ok(())
        }
        async fn rename_db_instance(&self, _: &str, _: &str, _: &str) -> AwsResult<()> {
            Ok(())
        }
        async fn delete_db_instance(&self, _: &str, _: &str, _: Option<&str>) -> AwsResult<()> {
            Ok(())
        }
        async fn create_read_replica(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: &ReplicaSettings,
        ) -> AwsResult<()> {
            Ok(())
        }
        async fn instance_settings(&self, _: &str, _: &str) -> AwsResult<Option<ReplicaSettings>> {
            Ok(None)
        }
        async fn instance_arn(&self, _: &str, _: &str) -> AwsResult<Option<String>> {
            Ok(None)
        }
        async fn cluster_arn(&self, _: &str, _: &str) -> AwsResult<Option<String>> {
            Ok(None)
        }
        async fn instance_endpoint(&self, _: &str, _: &str) -> AwsResult<Option<String>> {
            Ok(None)
        }
        async fn cluster_endpoint(&self, _: &str, _: &str) -> AwsResult<Option<String>> {
            Ok(None)
        }
        async fn cluster_snapshots(&self, _: &str, _: &str) -> AwsResult<Vec<ClusterSnapshot>> {
            Ok(Vec::new())
        }
        async fn describe_global_cluster(
            &self,
            _: &str,
            _: &str,
        ) -> AwsResult<Option<AuroraObservation>> {
            Ok(None)
        }
        async fn move_global_writer(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: WriterMove,
        ) -> AwsResult<()> {
            Ok(())
        }
        async fn replica_lag(&self, _: &str, _: &LagSource) -> AwsResult<Option<LagReading>> {
            panic!("the shared layer reads lag in batches")
        }
        async fn replica_lags(
            &self,
            region: &str,
            sources: &[LagSource],
        ) -> AwsResult<Vec<Option<LagReading>>> {
            self.call(format!("lags {region} {}", sources.len())).await;
            Ok(vec![None; sources.len()])
        }
        async fn health_check_healthy(&self, id: &str) -> AwsResult<bool> {
            self.call(format!("healthy {id}")).await;
            Ok(true)
        }
        async fn list_records(&self, zone: &str) -> AwsResult<Vec<RecordSet>> {
            self.call(format!("list {zone}")).await;
            Ok(Vec::new())
        }
        async fn change_records(&self, zone: &str, changes: &[RecordChange]) -> AwsResult<String> {
            let names: Vec<&str> = changes.iter().map(|c| c.record.name.as_str()).collect();
            self.call(format!("change {zone} {}", names.join(",")))
                .await;
            if let Some(bad) = &self.refuse_name
                && names.contains(&bad.as_str())
            {
                return Err(AwsError {
                    kind: AwsErrorKind::Permanent,
                    message: format!("InvalidChangeBatch: {bad} is refused"),
                });
            }
            Ok(format!("C-{}", names.join("+")))
        }
        async fn change_insync(&self, id: &str) -> AwsResult<bool> {
            self.call(format!("insync {id}")).await;
            // PENDING for the first `pending_polls` polls.
            let pending = self
                .pending_polls
                .fetch_update(
                    std::sync::atomic::Ordering::AcqRel,
                    std::sync::atomic::Ordering::Acquire,
                    |n| n.checked_sub(1),
                )
                .is_ok();
            Ok(!pending)
        }
        async fn image_exists(&self, _: &str, repository: &str, _: &str) -> AwsResult<bool> {
            self.call(format!("image {repository}")).await;
            Ok(repository != "missing")
        }
        async fn describe_secret(
            &self,
            _: &str,
            _: &str,
        ) -> AwsResult<Option<crate::engine::secrets::SecretSeen>> {
            Ok(None)
        }
        async fn health_check_observations(&self, id: &str) -> AwsResult<Vec<CheckerObservation>> {
            self.call(format!("observations {id}")).await;
            Ok(Vec::new())
        }
        async fn alarm_state(&self, _: &str, _: &str) -> AwsResult<Option<String>> {
            Ok(None)
        }
        async fn metric_datapoint(
            &self,
            _: &str,
            _: &MetricQuery,
        ) -> AwsResult<Option<MetricDatapoint>> {
            Ok(None)
        }
    }

    fn shared(recorder: Recorder) -> (Arc<Recorder>, Arc<SharedAws>) {
        let recorder = Arc::new(recorder);
        (recorder.clone(), Arc::new(SharedAws::new(recorder)))
    }

    /// Lets spawned tasks run until `done` holds (they are all ready, never sleeping).
    async fn settle(done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("tasks did not reach the expected point");
    }

    fn queued<K: Eq + Hash, Q, R>(lanes: &Lanes<K, Q, R>, key: &K) -> usize {
        locked(&lanes.lanes)
            .get(key)
            .map_or(0, |lane| locked(&lane.queue).len())
    }

    fn upsert(name: &str, values: usize) -> RecordChange {
        RecordChange {
            action: ChangeAction::Upsert,
            record: RecordSet {
                name: name.into(),
                record_type: "A".into(),
                set_identifier: None,
                failover: None,
                weight: None,
                ttl: Some(60),
                values: (0..values)
                    .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
                    .collect(),
                alias: None,
                health_check_id: None,
            },
        }
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Under Drover's rate limits, a call carrying several plans' requests waits with the
    /// highest priority among them, not the priority of whoever happened to send it.
    #[tokio::test]
    async fn a_call_carrying_several_requests_has_the_highest_priority_of_theirs() {
        let lanes: Arc<Lanes<&str, u8, CallPriority>> = Arc::new(Lanes::new());
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let ask = |priority: CallPriority| {
            let (lanes, gate) = (lanes.clone(), gate.clone());
            tokio::spawn(priority.scope(async move {
                lanes
                    .submit("zone", 0, move |requests| async move {
                        gate.acquire().await.expect("gate open").forget();
                        // What the rate limiter would see for this call.
                        vec![Ok(CallPriority::current()); requests.len()]
                    })
                    .await
            }))
        };
        let check = CallPriority::default();
        let mid = CallPriority { plan: 500, ..check };
        let urgent = CallPriority {
            failover: true,
            plan: 900,
            mutating: false,
        };
        // The call in flight has the highest priority, so the others queue behind it.
        let first = ask(urgent);
        settle(|| lanes.lanes.lock().is_ok_and(|l| l.contains_key("zone"))).await;
        let queued_check = ask(check);
        let queued_mid = ask(mid);
        settle(|| queued(&lanes, &"zone") == 2).await;
        gate.add_permits(2);
        assert_eq!(first.await.expect("task").expect("answer"), urgent);
        assert_eq!(queued_check.await.expect("task").expect("answer"), mid);
        assert_eq!(queued_mid.await.expect("task").expect("answer"), mid);
    }

    /// A failover's read does not wait behind a plan check's call in flight (which may be
    /// waiting for a token): it goes out alone at once.
    #[tokio::test]
    async fn a_higher_priority_read_does_not_wait_behind_a_call_in_flight() {
        let lanes: Arc<Lanes<&str, u8, u8>> = Arc::new(Lanes::new());
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let ask = |priority: CallPriority, request: u8| {
            let (lanes, gate) = (lanes.clone(), gate.clone());
            tokio::spawn(priority.scope(async move {
                lanes
                    .submit("region", request, move |requests| async move {
                        // The plan check's call is held; any other answers at once.
                        if requests.contains(&0) {
                            gate.acquire().await.expect("gate open").forget();
                        }
                        requests.into_iter().map(Ok).collect()
                    })
                    .await
            }))
        };
        let check = ask(CallPriority::default(), 0);
        settle(|| {
            locked(&lanes.lanes)
                .get("region")
                .is_some_and(|l| locked(&l.in_flight).is_some())
        })
        .await;
        let failover = CallPriority {
            failover: true,
            plan: 0,
            mutating: false,
        };
        let urgent = ask(failover, 1);
        assert_eq!(urgent.await.expect("task").expect("answer"), 1);
        assert!(!check.is_finished(), "the plan check's call is still held");
        // Another plan check's read waits for the next call, as before.
        let later = ask(CallPriority::default(), 2);
        settle(|| queued(&lanes, &"region") == 1).await;
        gate.add_permits(1);
        assert_eq!(check.await.expect("task").expect("answer"), 0);
        assert_eq!(later.await.expect("task").expect("answer"), 2);
    }

    #[tokio::test]
    async fn describes_queued_behind_a_call_in_flight_go_out_as_one_call() {
        let (recorder, aws) = shared(Recorder::gated());
        let first = tokio::spawn({
            let aws = aws.clone();
            async move { aws.describe_instances("us-west-2", &ids(&["a"])).await }
        });
        settle(|| recorder.calls().len() == 1).await;
        let second = tokio::spawn({
            let aws = aws.clone();
            async move { aws.describe_instances("us-west-2", &ids(&["b"])).await }
        });
        let third = tokio::spawn({
            let aws = aws.clone();
            async move { aws.describe_instances("us-west-2", &ids(&["c", "d"])).await }
        });
        let other_region = tokio::spawn({
            let aws = aws.clone();
            async move { aws.describe_instance("us-east-1", "e").await }
        });
        let key = "us-west-2".to_string();
        settle(|| queued(&aws.instances, &key) == 2 && recorder.calls().len() == 2).await;
        recorder.gate.as_ref().expect("gated").add_permits(3);
        let status = |answer: AwsResult<Vec<Option<RdsObservation>>>| -> Vec<String> {
            answer
                .expect("answered")
                .into_iter()
                .map(|o| o.expect("found").status)
                .collect()
        };
        assert_eq!(status(first.await.expect("task")), ["status of a"]);
        assert_eq!(status(second.await.expect("task")), ["status of b"]);
        assert_eq!(
            status(third.await.expect("task")),
            ["status of c", "status of d"]
        );
        let east = other_region.await.expect("task").expect("answered");
        assert_eq!(east.map(|o| o.status).as_deref(), Some("status of e"));
        // The queued requests went out after the first call, never joining it: each plan
        // sees a state read after it asked.
        assert_eq!(
            recorder.calls(),
            [
                "describe us-west-2 a",
                "describe us-east-1 e",
                "describe us-west-2 b,c,d"
            ]
        );
        assert!(
            locked(&aws.instances.lanes).is_empty(),
            "idle keys are dropped"
        );
    }

    #[tokio::test]
    async fn a_caller_alone_is_sent_at_once_every_time() {
        let (recorder, aws) = shared(Recorder::default());
        for _ in 0..3 {
            aws.list_records("Z1").await.expect("listed");
        }
        assert_eq!(recorder.calls(), ["list Z1", "list Z1", "list Z1"]);
    }

    #[tokio::test]
    async fn change_batches_of_several_plans_merge_unless_they_share_a_name() {
        let (recorder, aws) = shared(Recorder::gated());
        let submit = |names: &'static [&'static str]| {
            let aws = aws.clone();
            tokio::spawn(async move {
                let changes: Vec<RecordChange> = names.iter().map(|n| upsert(n, 1)).collect();
                aws.change_records("Z1", &changes).await
            })
        };
        let first = submit(&["a.example.com."]);
        settle(|| recorder.calls().len() == 1).await;
        let b = submit(&["b.example.com."]);
        let c = submit(&["c.example.com.", "d.example.com."]);
        let b_again = submit(&["B.example.com"]);
        settle(|| queued(&aws.changes_out, &"Z1".to_string()) == 3).await;
        recorder.gate.as_ref().expect("gated").add_permits(3);
        assert_eq!(
            first.await.expect("task").expect("sent"),
            "C-a.example.com."
        );
        let merged = "C-b.example.com.+c.example.com.+d.example.com.";
        assert_eq!(b.await.expect("task").expect("sent"), merged);
        assert_eq!(c.await.expect("task").expect("sent"), merged);
        // The same name in another batch goes out on its own, after the merged one.
        assert_eq!(
            b_again.await.expect("task").expect("sent"),
            "C-B.example.com"
        );
        assert_eq!(
            recorder.changes(),
            [
                "change Z1 a.example.com.",
                "change Z1 b.example.com.,c.example.com.,d.example.com.",
                "change Z1 B.example.com"
            ]
        );
    }

    #[tokio::test]
    async fn a_refused_merged_batch_is_sent_again_plan_by_plan() {
        let (recorder, aws) = shared(Recorder {
            gate: Some(Semaphore::new(0)),
            refuse_name: Some("bad.example.com.".into()),
            ..Default::default()
        });
        let submit = |name: &'static str| {
            let aws = aws.clone();
            tokio::spawn(async move { aws.change_records("Z1", &[upsert(name, 1)]).await })
        };
        let first = submit("a.example.com.");
        settle(|| recorder.calls().len() == 1).await;
        let bad = submit("bad.example.com.");
        let good = submit("good.example.com.");
        settle(|| queued(&aws.changes_out, &"Z1".to_string()) == 2).await;
        recorder.gate.as_ref().expect("gated").add_permits(4);
        first.await.expect("task").expect("sent");
        let refused = bad.await.expect("task").expect_err("refused");
        assert_eq!(refused.kind, AwsErrorKind::Permanent);
        assert_eq!(
            good.await.expect("task").expect("sent"),
            "C-good.example.com."
        );
        assert_eq!(
            recorder.changes(),
            [
                "change Z1 a.example.com.",
                "change Z1 bad.example.com.,good.example.com.",
                "change Z1 bad.example.com.",
                "change Z1 good.example.com."
            ]
        );
    }

    #[test]
    fn merged_batches_stay_within_route53_limits() {
        // 300 values upserted count 600 records: two fit no batch together.
        let batches = vec![
            vec![upsert("a.example.com.", 300)],
            vec![upsert("b.example.com.", 300)],
            vec![upsert("c.example.com.", 100)],
            vec![upsert("a.example.com.", 1)],
        ];
        assert_eq!(merge_groups(&batches), [vec![0, 2], vec![1, 3]]);
        for group in merge_groups(&batches) {
            let records: usize = group
                .iter()
                .flat_map(|&i| &batches[i])
                .map(|c| cost(c).0)
                .sum();
            assert!(records <= MAX_BATCH_RECORDS, "{records}");
        }
    }

    #[tokio::test]
    async fn an_insync_change_is_not_asked_again() {
        let (recorder, aws) = shared(Recorder::default());
        assert!(aws.change_insync("C1").await.expect("read"));
        assert!(aws.change_insync("C1").await.expect("read"));
        assert_eq!(recorder.calls(), ["insync C1"]);
    }

    #[tokio::test]
    async fn a_cancelled_sender_still_answers_the_others_and_the_key_keeps_working() {
        let (recorder, aws) = shared(Recorder::gated());
        let first = tokio::spawn({
            let aws = aws.clone();
            async move { aws.list_records("Z1").await }
        });
        settle(|| recorder.calls().len() == 1).await;
        let second = tokio::spawn({
            let aws = aws.clone();
            async move { aws.list_records("Z1").await }
        });
        let third = tokio::spawn({
            let aws = aws.clone();
            async move { aws.list_records("Z1").await }
        });
        settle(|| queued(&aws.zones, &"Z1".to_string()) == 2).await;
        recorder.gate.as_ref().expect("gated").add_permits(1);
        first.await.expect("task").expect("listed");
        // The second takes the turn and sends both queued requests; it is cancelled mid-call.
        settle(|| recorder.calls().len() == 2).await;
        second.abort();
        recorder.gate.as_ref().expect("gated").add_permits(1);
        third
            .await
            .expect("task")
            .expect("answered by the call in flight");
        recorder.gate.as_ref().expect("gated").add_permits(1);
        aws.list_records("Z1").await.expect("listed again");
        assert_eq!(recorder.calls().len(), 3);
    }

    #[tokio::test]
    async fn a_request_cancelled_while_queued_is_never_sent() {
        let (recorder, aws) = shared(Recorder::gated());
        let submit = |name: &'static str| {
            let aws = aws.clone();
            tokio::spawn(async move { aws.change_records("Z1", &[upsert(name, 1)]).await })
        };
        let first = submit("a.example.com.");
        settle(|| recorder.calls().len() == 1).await;
        let stale = submit("stale.example.com.");
        settle(|| queued(&aws.changes_out, &"Z1".to_string()) == 1).await;
        stale.abort();
        assert!(stale.await.is_err(), "cancelled");
        recorder.gate.as_ref().expect("gated").add_permits(2);
        first.await.expect("task").expect("sent");
        submit("later.example.com.")
            .await
            .expect("task")
            .expect("sent");
        assert_eq!(
            recorder.changes(),
            ["change Z1 a.example.com.", "change Z1 later.example.com."]
        );
    }

    #[tokio::test]
    async fn a_refused_merged_read_is_read_again_plan_by_plan() {
        let (recorder, aws) = shared(Recorder {
            gate: Some(Semaphore::new(0)),
            refuse_name: Some("denied".into()),
            ..Default::default()
        });
        let describe = |id: &'static str| {
            let aws = aws.clone();
            tokio::spawn(async move { aws.describe_instance("us-west-2", id).await })
        };
        let first = describe("a");
        settle(|| recorder.calls().len() == 1).await;
        let denied = describe("denied");
        let fine = describe("b");
        settle(|| queued(&aws.instances, &"us-west-2".to_string()) == 2).await;
        recorder.gate.as_ref().expect("gated").add_permits(4);
        first.await.expect("task").expect("described");
        let refused = denied.await.expect("task").expect_err("refused");
        assert_eq!(refused.kind, AwsErrorKind::Permanent);
        let b = fine.await.expect("task").expect("described");
        assert_eq!(b.map(|o| o.status).as_deref(), Some("status of b"));
        assert_eq!(
            recorder.calls(),
            [
                "describe us-west-2 a",
                "describe us-west-2 denied,b",
                "describe us-west-2 denied",
                "describe us-west-2 b"
            ]
        );
    }

    #[test]
    fn batches_sharing_a_name_go_out_in_their_order() {
        let p = vec![upsert("x.example.com.", 1)];
        let q = vec![upsert("x.example.com.", 1), upsert("y.example.com.", 1)];
        let r = vec![upsert("y.example.com.", 1)];
        let s = vec![upsert("z.example.com.", 1)];
        // R may not join P's group: it would overtake Q's change to y. S joins the first.
        assert_eq!(merge_groups(&[p, q, r, s]), [vec![0, 3], vec![1], vec![2]]);
    }

    /// A leader check that passes until `lost` is set.
    #[derive(Default)]
    struct Lease {
        lost: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl crate::leadership::LeaseCheck for Lease {
        async fn confirm(&self) -> Result<(), String> {
            if self.deposed() {
                Err(self.deposed_message())
            } else {
                Ok(())
            }
        }
        fn deposed(&self) -> bool {
            self.lost.load(std::sync::atomic::Ordering::Acquire)
        }
        fn deposed_message(&self) -> String {
            "another process holds the leader Lease".into()
        }
    }

    #[tokio::test]
    async fn a_change_queued_when_leadership_is_lost_is_not_sent() {
        let recorder = Arc::new(Recorder::gated());
        let lease = Arc::new(Lease::default());
        // As Context builds it: the leader check inside the shared layer.
        let aws = Arc::new(SharedAws::new(Arc::new(crate::leadership::LeaderAws {
            inner: recorder.clone(),
            leadership: lease.clone(),
        })));
        let submit = |name: &'static str| {
            let aws = aws.clone();
            tokio::spawn(async move { aws.change_records("Z1", &[upsert(name, 1)]).await })
        };
        let first = submit("a.example.com.");
        settle(|| recorder.calls().len() == 1).await;
        let queued_change = submit("b.example.com.");
        settle(|| queued(&aws.changes_out, &"Z1".to_string()) == 1).await;
        lease.lost.store(true, std::sync::atomic::Ordering::Release);
        recorder.gate.as_ref().expect("gated").add_permits(2);
        first.await.expect("task").expect("sent while leading");
        let refused = queued_change
            .await
            .expect("task")
            .expect_err("not sent by a deposed leader");
        assert_eq!(refused.kind, AwsErrorKind::Transient);
        assert_eq!(recorder.changes(), ["change Z1 a.example.com."]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_many_threads_every_caller_gets_its_own_answer() {
        let (recorder, aws) = shared(Recorder::default());
        let callers: Vec<_> = (0..8)
            .map(|t| {
                let aws = aws.clone();
                tokio::spawn(async move {
                    for n in 0..200 {
                        let ids = vec![format!("db{t}-{n}"), format!("db{t}-{n}-b")];
                        let answer = aws.describe_instances("us-west-2", &ids).await?;
                        let statuses: Vec<String> =
                            answer.into_iter().flatten().map(|o| o.status).collect();
                        assert_eq!(
                            statuses,
                            [
                                format!("status of {}", ids[0]),
                                format!("status of {}", ids[1])
                            ]
                        );
                    }
                    Ok::<(), AwsError>(())
                })
            })
            .collect();
        for caller in callers {
            caller.await.expect("task").expect("answered");
        }
        assert!(recorder.calls().len() <= 1600);
        assert!(
            locked(&aws.instances.lanes).is_empty(),
            "idle keys are dropped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn changes_asked_while_the_zone_is_pending_go_out_together_once_it_is_insync() {
        let recorder = Recorder::gated();
        recorder
            .pending_polls
            .store(2, std::sync::atomic::Ordering::Release);
        let (recorder, aws) = shared(recorder);
        let submit = |name: &'static str| {
            let aws = aws.clone();
            tokio::spawn(async move { aws.change_records("Z1", &[upsert(name, 1)]).await })
        };
        let first = submit("a.example.com.");
        settle(|| recorder.calls().len() == 1).await;
        recorder.gate.as_ref().expect("gated").add_permits(10);
        // Answered at once, but the zone's turn is kept until INSYNC.
        let b = submit("b.example.com.");
        let c = submit("c.example.com.");
        assert_eq!(
            first.await.expect("task").expect("sent"),
            "C-a.example.com."
        );
        let merged = "C-b.example.com.+c.example.com.";
        assert_eq!(b.await.expect("task").expect("sent"), merged);
        assert_eq!(c.await.expect("task").expect("sent"), merged);
        assert_eq!(
            recorder.calls(),
            [
                "change Z1 a.example.com.",
                "insync C-a.example.com.",
                "insync C-a.example.com.",
                "insync C-a.example.com.",
                "change Z1 b.example.com.,c.example.com."
            ]
        );
        // Remembered INSYNC: the plans polling it cost no call.
        assert!(aws.change_insync("C-a.example.com.").await.expect("read"));
        assert_eq!(recorder.calls().len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_found_image_is_not_asked_about_again_for_a_minute_a_missing_one_always() {
        let (recorder, aws) = shared(Recorder::default());
        for _ in 0..3 {
            assert!(
                aws.image_exists("us-west-2", "web", "1.0")
                    .await
                    .expect("read")
            );
            assert!(
                !aws.image_exists("us-west-2", "missing", "1.0")
                    .await
                    .expect("read")
            );
        }
        assert_eq!(
            recorder.calls(),
            [
                "image web",
                "image missing",
                "image missing",
                "image missing"
            ]
        );
        tokio::time::advance(IMAGE_FOUND_FOR).await;
        assert!(
            aws.image_exists("us-west-2", "web", "1.0")
                .await
                .expect("read")
        );
        assert_eq!(recorder.calls().len(), 5);
    }
}
