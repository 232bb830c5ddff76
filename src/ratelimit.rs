//! Client-side rate limits for AWS APIs. A region lost is lost for every plan at once, and
//! AWS's API limits are per account and region, shared by all of them: without a limit of
//! its own, a mass failover throttles itself into a longer RTO. Every SDK request goes
//! through one token bucket per service, signing region and access key (an account's
//! credentials), whatever plan or step sends it; a throttling answer halves that service's
//! rate for a while (additive increase, multiplicative decrease).

use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
// Tokio's clock: the same as the system's, and paused with tokio's in tests.
use tokio::time::Instant;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::retry::ErrorKind;
use serde::Deserialize;

use crate::metrics::{AwsWaitLabels, Metrics};

/// The longest a request waits for its token. The wait runs inside the SDK's 10 s attempt
/// timeout, and the call needs the rest of it (a change whose answer times out has an
/// unknown outcome): a request that would wait longer is refused at once, taking no token,
/// and tried again at a later pass.
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// Buckets unused this long are dropped (temporary credentials bring new access keys).
const IDLE_BUCKET: Duration = Duration::from_secs(600);

/// A sustained rate and the burst a bucket holds.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl RateLimit {
    /// Defaults below AWS's published limits: Route 53 allows 5 requests per second per
    /// account; RDS, CloudWatch, Secrets Manager and ECR allow tens per second per account
    /// and region, shared with everything else that calls them there.
    pub fn default_for(service: &str) -> Self {
        let (per_second, burst) = match service {
            // Route 53: a burst below AWS's 5, so calls that took their tokens apart but
            // reach AWS bunched (a loaded machine, a slow connection) still fit.
            "route53" => (4.0, 4.0),
            // RDS: 12 a second sustained, bursts of 300; a third of the burst here.
            "rds" => (10.0, 100.0),
            "monitoring" => (20.0, 40.0),
            "secretsmanager" => (20.0, 40.0),
            _ => (10.0, 20.0),
        };
        Self { per_second, burst }
    }

    /// Refused in the operator config: a rate that could never send, or be unbounded.
    pub fn problem(&self) -> Option<String> {
        let finite = self.per_second.is_finite() && self.burst.is_finite();
        if !finite || self.per_second < 0.01 || self.per_second > 10_000.0 {
            return Some(format!(
                "perSecond must be between 0.01 and 10000, got {}",
                self.per_second
            ));
        }
        if self.burst < 1.0 || self.burst > 10_000.0 {
            return Some(format!(
                "burst must be between 1 and 10000, got {}",
                self.burst
            ));
        }
        None
    }
}

/// Which bucket a request draws from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BucketKey {
    /// The signing name: route53, rds, monitoring (CloudWatch), secretsmanager, ecr.
    pub service: String,
    pub region: String,
    pub access_key: String,
}

impl BucketKey {
    /// From a SigV4 `Authorization` header's credential scope:
    /// `AWS4-HMAC-SHA256 Credential=AKID/20261201/us-east-1/rds/aws4_request, ...`.
    pub fn from_authorization(header: &str) -> Option<Self> {
        let scope = header.split("Credential=").nth(1)?.split(',').next()?;
        let mut parts = scope.split('/');
        let access_key = parts.next()?.to_string();
        let _date = parts.next()?;
        let region = parts.next()?.to_string();
        let service = parts.next()?.to_string();
        (!service.is_empty()).then_some(Self {
            service,
            region,
            access_key,
        })
    }
}

/// Whose call goes first when a bucket has a queue: a failover's before a plan check's,
/// then a higher plan priority, then a change before a read; among equals, the earlier.
/// Set for a task by `scope`; a call made outside any scope has the lowest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct CallPriority {
    pub failover: bool,
    pub plan: i32,
    pub mutating: bool,
}

tokio::task_local! {
    static PRIORITY: CallPriority;
}

impl CallPriority {
    /// The priority of the task running now.
    pub fn current() -> Self {
        PRIORITY.try_with(|p| *p).unwrap_or_default()
    }

    /// Runs `work` with this priority for every AWS call it makes in its own task.
    pub async fn scope<F: std::future::Future>(self, work: F) -> F::Output {
        PRIORITY.scope(self, work).await
    }
}

/// A request waiting in a bucket's queue for a token.
struct Waiter {
    priority: CallPriority,
    seq: u64,
    ready: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    /// The greatest goes first: highest priority, then earliest arrival.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.priority
            .cmp(&other.priority)
            .then(other.seq.cmp(&self.seq))
    }
}

/// One token bucket, and the requests queued for its tokens.
struct Bucket {
    limit: RateLimit,
    /// The rate now: the limit's, or less after throttling answers.
    rate: f64,
    tokens: f64,
    at: Instant,
    queue: BinaryHeap<Waiter>,
    next_seq: u64,
    /// A task hands out tokens to the queue while it is not empty.
    dispatching: bool,
}

impl Bucket {
    fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            rate: limit.per_second,
            tokens: limit.burst,
            at: now,
            queue: BinaryHeap::new(),
            next_seq: 0,
            dispatching: false,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.limit.burst);
        self.at = self.at.max(now);
    }

    /// Hands the tokens there are to the queue, best first (a request that gave up takes
    /// none); how long until the next token, while requests still wait.
    fn hand_out(&mut self, now: Instant) -> Option<Duration> {
        self.refill(now);
        while self.tokens >= 1.0 {
            let Some(waiter) = self.queue.pop() else {
                break;
            };
            if waiter.ready.send(()).is_ok() {
                self.tokens -= 1.0;
            }
        }
        self.queue.retain(|w| !w.ready.is_closed());
        if self.queue.is_empty() {
            return None;
        }
        // At least a millisecond: a wait rounded down to nothing would spin without
        // letting the clock move.
        Some(Duration::from_secs_f64((1.0 - self.tokens) / self.rate).max(Duration::from_millis(1)))
    }

    /// A throttling answer: half the rate, down to a sixteenth of the limit.
    fn throttled(&mut self) {
        self.rate = (self.rate / 2.0).max(self.limit.per_second / 16.0);
    }

    /// An answer that was not throttled: back towards the limit, a twentieth at a time.
    fn answered(&mut self) {
        self.rate = (self.rate + self.limit.per_second / 20.0).min(self.limit.per_second);
    }
}

/// The buckets of every (service, region, access key) seen, with their limits.
pub struct Limiter {
    limits: HashMap<String, RateLimit>,
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// `limits` by service signing name; other services get `RateLimit::default_for`.
    pub fn new(limits: HashMap<String, RateLimit>, metrics: Arc<Metrics>) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    fn limit(&self, service: &str) -> RateLimit {
        self.limits
            .get(service)
            .copied()
            .unwrap_or_else(|| RateLimit::default_for(service))
    }

    fn buckets(&self) -> std::sync::MutexGuard<'_, HashMap<BucketKey, Bucket>> {
        match self.buckets.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A token now, or a place in the queue (`Ok(Some)`); Err when the requests ahead of
    /// this one (of its priority or higher) would keep it waiting longer than `MAX_WAIT`.
    fn enqueue(
        self: &Arc<Self>,
        key: &BucketKey,
        priority: CallPriority,
    ) -> Result<Option<oneshot::Receiver<()>>, Backlogged> {
        let now = Instant::now();
        let limit = self.limit(&key.service);
        let mut buckets = self.buckets();
        if !buckets.contains_key(key) {
            buckets.retain(|_, b| {
                !b.queue.is_empty() || now.saturating_duration_since(b.at) < IDLE_BUCKET
            });
        }
        let bucket = buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::new(limit, now));
        bucket.refill(now);
        bucket.queue.retain(|w| !w.ready.is_closed());
        if bucket.queue.is_empty() && bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(None);
        }
        let ahead = bucket
            .queue
            .iter()
            .filter(|w| w.priority >= priority)
            .count() as f64;
        let wait = Duration::from_secs_f64(((ahead + 1.0 - bucket.tokens) / bucket.rate).max(0.0));
        if wait > MAX_WAIT {
            return Err(Backlogged {
                service: key.service.clone(),
                region: key.region.clone(),
                wait,
            });
        }
        let (ready, waiting) = oneshot::channel();
        bucket.queue.push(Waiter {
            priority,
            seq: bucket.next_seq,
            ready,
        });
        bucket.next_seq += 1;
        if !bucket.dispatching {
            bucket.dispatching = true;
            tokio::spawn(self.clone().dispatch(key.clone()));
        }
        Ok(Some(waiting))
    }

    /// Hands out `key`'s tokens at its rate while requests queue for them.
    async fn dispatch(self: Arc<Self>, key: BucketKey) {
        loop {
            let pause = {
                let mut buckets = self.buckets();
                let Some(bucket) = buckets.get_mut(&key) else {
                    return;
                };
                match bucket.hand_out(Instant::now()) {
                    Some(pause) => pause,
                    None => {
                        bucket.dispatching = false;
                        return;
                    }
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Waits for a token of `key`'s bucket, queued by `priority`, counting the wait in the
    /// metrics. Err when the queue ahead is longer than `MAX_WAIT`, or when calls of a
    /// higher priority kept it waiting that long. A request dropped while it waits takes
    /// no token.
    pub async fn acquire(
        self: &Arc<Self>,
        key: &BucketKey,
        priority: CallPriority,
    ) -> Result<(), Backlogged> {
        let started = Instant::now();
        let waited = match self.enqueue(key, priority)? {
            None => Ok(()),
            Some(waiting) => match tokio::time::timeout(MAX_WAIT, waiting).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(Backlogged {
                    service: key.service.clone(),
                    region: key.region.clone(),
                    wait: started.elapsed(),
                }),
            },
        };
        let labels = AwsWaitLabels {
            service: metric_service(&key.service),
        };
        self.metrics
            .aws_rate_limit_wait
            .get_or_create(&labels)
            .inc_by(started.elapsed().as_secs_f64());
        waited
    }

    /// An answer from `service` (any region and key): throttled or not.
    pub fn answered(&self, service: &str, throttled: bool) {
        for (key, bucket) in self.buckets().iter_mut() {
            if key.service == service {
                if throttled {
                    bucket.throttled();
                } else {
                    bucket.answered();
                }
            }
        }
    }

    /// Seconds calls have waited for tokens, in all (as the metric counts them).
    pub fn waited(&self) -> f64 {
        let mut total = 0.0;
        for service in [
            "route53",
            "rds",
            "cloudwatch",
            "secretsmanager",
            "ecr",
            "other",
        ] {
            // One label at a time: the family's guard must be gone before the next lookup.
            let waited = self
                .metrics
                .aws_rate_limit_wait
                .get_or_create(&AwsWaitLabels { service })
                .get();
            total += waited;
        }
        total
    }

    /// The rate a bucket allows now (for tests and the benchmark).
    pub fn rate(&self, key: &BucketKey) -> Option<f64> {
        self.buckets().get(key).map(|b| b.rate)
    }
}

/// A request refused by Drover's own limit, its bucket backed up beyond `MAX_WAIT`.
#[derive(Debug)]
pub struct Backlogged {
    pub(crate) service: String,
    pub(crate) region: String,
    pub(crate) wait: Duration,
}

impl std::fmt::Display for Backlogged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Drover's own rate limit for {} in {} is backed up ({:.0} s of calls ahead); \
             the call is made again at a later pass",
            self.service,
            self.region,
            self.wait.as_secs_f64()
        )
    }
}

impl std::error::Error for Backlogged {}

/// A fixed label value per service (metric labels never carry outside text).
fn metric_service(service: &str) -> &'static str {
    match service {
        "route53" => "route53",
        "rds" => "rds",
        "monitoring" => "cloudwatch",
        "secretsmanager" => "secretsmanager",
        "ecr" => "ecr",
        _ => "other",
    }
}

/// The SDK's HTTP client with every request first waiting for its bucket.
#[derive(Debug)]
pub struct LimitedClient {
    inner: SharedHttpClient,
    limiter: Arc<Limiter>,
}

impl LimitedClient {
    pub fn new(inner: SharedHttpClient, limiter: Arc<Limiter>) -> Self {
        Self { inner, limiter }
    }
}

impl HttpClient for LimitedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(LimitedConnector {
            inner: self.inner.http_connector(settings, components),
            limiter: self.limiter.clone(),
        })
    }
}

#[derive(Debug)]
struct LimitedConnector {
    inner: SharedHttpConnector,
    limiter: Arc<Limiter>,
}

impl HttpConnector for LimitedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let key = request
            .headers()
            .get("authorization")
            .and_then(BucketKey::from_authorization);
        let priority = CallPriority {
            mutating: mutating(&request),
            ..CallPriority::current()
        };
        let (inner, limiter) = (self.inner.clone(), self.limiter.clone());
        HttpConnectorFuture::new(async move {
            // An unsigned request (none of Drover's) is not limited.
            if let Some(key) = key {
                // Transient: the SDK error says so, and it is not a lost region.
                limiter
                    .acquire(&key, priority)
                    .await
                    .map_err(|backlogged| {
                        ConnectorError::other(Box::new(backlogged), Some(ErrorKind::TransientError))
                    })?;
            }
            inner.call(request).await
        })
    }
}

/// Whether a request changes something: not a GET, and not an operation that reads
/// (Describe, List, Get), named by the JSON protocols' target header or the query
/// protocol's `Action`. Route 53's changes are POSTs without either.
fn mutating(request: &HttpRequest) -> bool {
    let reads = |operation: &str| {
        ["Describe", "List", "Get", "BatchGet"]
            .iter()
            .any(|verb| operation.starts_with(verb))
    };
    if matches!(request.method(), "GET" | "HEAD") {
        return false;
    }
    if let Some(target) = request.headers().get("x-amz-target") {
        return !reads(target.rsplit('.').next().unwrap_or(target));
    }
    let action = request
        .body()
        .bytes()
        .and_then(|body| std::str::from_utf8(body).ok())
        .and_then(|form| {
            form.split('&')
                .find_map(|pair| pair.strip_prefix("Action="))
        });
    match action {
        Some(action) => !reads(action),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(service: &str) -> BucketKey {
        BucketKey {
            service: service.into(),
            region: "us-east-1".into(),
            access_key: "AKID".into(),
        }
    }

    #[test]
    fn the_bucket_key_is_the_signing_scope_of_the_request() {
        let header = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261201/us-west-2/rds/aws4_request, \
                      SignedHeaders=host;x-amz-date, Signature=abc";
        assert_eq!(
            BucketKey::from_authorization(header),
            Some(BucketKey {
                service: "rds".into(),
                region: "us-west-2".into(),
                access_key: "AKIDEXAMPLE".into(),
            })
        );
        assert_eq!(BucketKey::from_authorization("Bearer x"), None);
        assert_eq!(BucketKey::from_authorization("Credential=a/b"), None);
    }

    /// Starts `n` requests of `priority` for `key` now, each reporting the milliseconds
    /// (of tokio's paused clock) after `start` at which it got its token, or an error.
    fn start_requests(
        limiter: &Arc<Limiter>,
        key: &BucketKey,
        n: usize,
        priority: CallPriority,
        start: Instant,
    ) -> Vec<tokio::task::JoinHandle<Result<u128, String>>> {
        (0..n)
            .map(|_| {
                let (limiter, key) = (limiter.clone(), key.clone());
                tokio::spawn(async move {
                    limiter
                        .acquire(&key, priority)
                        .await
                        .map(|()| start.elapsed().as_millis())
                        .map_err(|e| e.to_string())
                })
            })
            .collect()
    }

    async fn times(handles: Vec<tokio::task::JoinHandle<Result<u128, String>>>) -> Vec<u128> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("joined").expect("a token"));
        }
        out
    }

    /// Route 53 at 4 a second, burst 5 (the tests' numbers).
    fn route53_limiter() -> Arc<Limiter> {
        let limit = RateLimit {
            per_second: 4.0,
            burst: 5.0,
        };
        Arc::new(Limiter::new(
            HashMap::from([("route53".to_string(), limit)]),
            Arc::default(),
        ))
    }

    const READ: CallPriority = CallPriority {
        failover: false,
        plan: 0,
        mutating: false,
    };

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_and_the_rest_at_the_rate_in_arrival_order() {
        let limiter = route53_limiter();
        let start = Instant::now();
        // Route 53: 5 at once, then one every 250 ms (4 per second), first come first.
        let mut handles = Vec::new();
        for _ in 0..8 {
            handles.extend(start_requests(&limiter, &key("route53"), 1, READ, start));
            tokio::task::yield_now().await;
        }
        assert_eq!(times(handles).await, vec![0, 0, 0, 0, 0, 250, 500, 750]);
        // Another service, region or account has its own bucket.
        let start = Instant::now();
        let other = BucketKey {
            region: "us-west-2".into(),
            ..key("route53")
        };
        let mut now = start_requests(&limiter, &key("rds"), 1, READ, start);
        now.extend(start_requests(&limiter, &other, 1, READ, start));
        assert_eq!(times(now).await, vec![0, 0]);
    }

    /// Under a queue, a failover's calls go before plan checks', a higher plan priority
    /// before a lower, a change before a read; the queue ahead that refuses a read does
    /// not refuse a failover's change.
    #[tokio::test(start_paused = true)]
    async fn higher_priorities_go_first_and_are_refused_later() {
        let limiter = route53_limiter();
        let start = Instant::now();
        let route53 = key("route53");
        let burst = start_requests(&limiter, &route53, 5, READ, start);
        // Every one after the burst queues; then come, in this order:
        let check = start_requests(&limiter, &route53, 1, READ, start);
        tokio::task::yield_now().await;
        let low = CallPriority {
            failover: true,
            ..READ
        };
        let low_plan = start_requests(&limiter, &route53, 1, low, start);
        tokio::task::yield_now().await;
        let high = CallPriority { plan: 500, ..low };
        let high_read = start_requests(&limiter, &route53, 1, high, start);
        tokio::task::yield_now().await;
        let high_change = CallPriority {
            mutating: true,
            ..high
        };
        let change = start_requests(&limiter, &route53, 1, high_change, start);
        assert_eq!(times(burst).await, vec![0; 5]);
        assert_eq!(times(change).await, vec![250]);
        assert_eq!(times(high_read).await, vec![500]);
        assert_eq!(times(low_plan).await, vec![750]);
        assert_eq!(times(check).await, vec![1000]);

        // 5 s of reads queued (20 at 4/s after the burst): the next read is refused, with
        // no token booked; a failover's change is not, and goes first. Pushed back by
        // it, the last queued read waits past 5 s and gives up (to be made again later).
        tokio::time::advance(Duration::from_secs(2)).await; // the burst refilled
        let start = Instant::now();
        let burst = start_requests(&limiter, &route53, 5, READ, start);
        let mut queued = Vec::new();
        for _ in 0..20 {
            queued.extend(start_requests(&limiter, &route53, 1, READ, start));
            tokio::task::yield_now().await;
        }
        let refused = start_requests(&limiter, &route53, 1, READ, start);
        let first = start_requests(&limiter, &route53, 1, high_change, start);
        let refused = refused
            .into_iter()
            .next()
            .expect("one")
            .await
            .expect("joined");
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e
                    .starts_with("Drover's own rate limit for route53 in us-east-1 is backed up")),
            "{refused:?}"
        );
        times(burst).await;
        assert_eq!(times(first).await, vec![250]);
        let mut reads = Vec::new();
        for h in queued {
            reads.push(h.await.expect("joined"));
        }
        // The 19th would get its token exactly at the limit (a tie with its timeout).
        let expected: Vec<Result<u128, String>> = (0..18).map(|i| Ok(500 + 250 * i)).collect();
        assert_eq!(reads[..18], expected[..]);
        assert!(reads[19].is_err(), "{:?}", reads[19]);
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_halves_the_rate_down_to_a_floor_and_answers_bring_it_back() {
        let limiter = Arc::new(Limiter::new(
            HashMap::from([(
                "rds".to_string(),
                RateLimit {
                    per_second: 16.0,
                    burst: 1.0,
                },
            )]),
            Arc::default(),
        ));
        let start = Instant::now();
        times(start_requests(&limiter, &key("rds"), 1, READ, start)).await;
        limiter.answered("rds", true);
        assert_eq!(limiter.rate(&key("rds")), Some(8.0));
        for _ in 0..10 {
            limiter.answered("rds", true);
        }
        assert_eq!(limiter.rate(&key("rds")), Some(1.0), "a sixteenth at least");
        // Another service's answers do not touch it.
        limiter.answered("route53", false);
        assert_eq!(limiter.rate(&key("rds")), Some(1.0));
        for _ in 0..100 {
            limiter.answered("rds", false);
        }
        assert_eq!(
            limiter.rate(&key("rds")),
            Some(16.0),
            "never above the limit"
        );
        // At the lowered rate the next token is further away: 1 owed at 8 per second.
        limiter.answered("rds", true);
        let start = Instant::now();
        let got = times(start_requests(&limiter, &key("rds"), 1, READ, start)).await;
        assert_eq!(got, vec![125]);
        let said = Backlogged {
            service: "route53".into(),
            region: "us-east-1".into(),
            wait: Duration::from_secs(9),
        }
        .to_string();
        assert_eq!(
            said,
            "Drover's own rate limit for route53 in us-east-1 is backed up (9 s of calls \
             ahead); the call is made again at a later pass"
        );
    }

    /// A request dropped while it waits (its attempt timed out) takes no token: the next
    /// one in the queue gets the token it would have had.
    #[tokio::test(start_paused = true)]
    async fn a_request_dropped_while_it_waits_takes_no_token() {
        let limiter = route53_limiter();
        let start = Instant::now();
        let route53 = key("route53");
        times(start_requests(&limiter, &route53, 5, READ, start)).await;
        let dropped = start_requests(&limiter, &route53, 1, READ, start);
        tokio::task::yield_now().await;
        let next = start_requests(&limiter, &route53, 1, READ, start);
        tokio::task::yield_now().await;
        for h in dropped {
            h.abort();
        }
        assert_eq!(times(next).await, vec![250]);
    }

    /// Reads and changes as each protocol names them.
    #[test]
    fn changes_are_told_from_reads() {
        let request = |method: &str, target: Option<&str>, body: &str| {
            let mut r = HttpRequest::new(aws_smithy_types::body::SdkBody::from(body));
            r.set_method(method).expect("a method");
            if let Some(t) = target {
                r.headers_mut().insert("x-amz-target", t.to_string());
            }
            r
        };
        assert!(!mutating(&request("GET", None, "")));
        assert!(mutating(&request(
            "POST",
            None,
            "<ChangeResourceRecordSetsRequest/>"
        )));
        assert!(!mutating(&request(
            "POST",
            None,
            "Action=DescribeDBInstances&Version=1"
        )));
        assert!(mutating(&request(
            "POST",
            None,
            "Version=1&Action=PromoteReadReplica"
        )));
        assert!(!mutating(&request("POST", None, "Action=GetMetricData")));
        assert!(!mutating(&request(
            "POST",
            Some("AmazonEC2ContainerRegistry_V20150921.DescribeImages"),
            "{}"
        )));
        assert!(mutating(&request(
            "POST",
            Some("secretsmanager.PutSecretValue"),
            "{}"
        )));
    }

    #[test]
    fn limits_that_could_never_send_or_are_unbounded_are_refused() {
        let ok = RateLimit {
            per_second: 4.0,
            burst: 5.0,
        };
        assert_eq!(ok.problem(), None);
        for bad in [
            RateLimit {
                per_second: 0.0,
                ..ok
            },
            RateLimit {
                per_second: f64::NAN,
                ..ok
            },
            RateLimit {
                per_second: 1e9,
                ..ok
            },
            RateLimit { burst: 0.5, ..ok },
        ] {
            assert!(bad.problem().is_some(), "{bad:?}");
        }
    }
}
