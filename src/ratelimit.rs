//! Client-side rate limits for AWS APIs. A region lost is lost for every plan at once, and
//! AWS's API limits are per account and region, shared by all of them: without a limit of
//! its own, a mass failover throttles itself into a longer RTO. Every SDK request goes
//! through one token bucket per service, signing region and access key (an account's
//! credentials), whatever plan or step sends it; a throttling answer halves that service's
//! rate for a while (additive increase, multiplicative decrease).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
/// timeout: a request that would wait longer is refused at once, its token handed back, and
/// tried again at a later pass, rather than booking a slot it would time out in.
pub const MAX_WAIT: Duration = Duration::from_secs(8);

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
            "route53" => (4.0, 5.0),
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

/// One token bucket. Tokens may go below zero: a request reserves its token at once and
/// waits until the bucket would have held it, so waiters are served in arrival order.
#[derive(Debug)]
struct Bucket {
    limit: RateLimit,
    /// The rate now: the limit's, or less after throttling answers.
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            rate: limit.per_second,
            tokens: limit.burst,
            at: now,
        }
    }

    /// Reserves one token at `now`; how long the request waits for it.
    fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.limit.burst);
        self.at = self.at.max(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// A reserved token not used after all (the request gave up, or was refused).
    fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.limit.burst);
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

    /// How long a request for `key` waits at `now`, its token reserved; Err (nothing
    /// reserved) when that would be longer than `MAX_WAIT`.
    fn reserve(&self, key: &BucketKey, now: Instant) -> Result<Duration, Duration> {
        let limit = self.limit(&key.service);
        let mut buckets = self.buckets();
        if !buckets.contains_key(key) {
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < IDLE_BUCKET);
        }
        let bucket = buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::new(limit, now));
        let wait = bucket.take(now);
        if wait > MAX_WAIT {
            bucket.refund();
            return Err(wait);
        }
        Ok(wait)
    }

    fn refund(&self, key: &BucketKey) {
        if let Some(bucket) = self.buckets().get_mut(key) {
            bucket.refund();
        }
    }

    /// Waits for a token of `key`'s bucket, counting the wait in the metrics; Err when the
    /// bucket is backed up beyond `MAX_WAIT`. A request dropped while it waits (its attempt
    /// timed out) hands its token back.
    pub async fn acquire(&self, key: &BucketKey) -> Result<(), Backlogged> {
        let wait = self
            .reserve(key, Instant::now())
            .map_err(|wait| Backlogged {
                service: key.service.clone(),
                region: key.region.clone(),
                wait,
            })?;
        let labels = AwsWaitLabels {
            service: metric_service(&key.service),
        };
        self.metrics
            .aws_rate_limit_wait
            .get_or_create(&labels)
            .inc_by(wait.as_secs_f64());
        if !wait.is_zero() {
            let mut unused = Refund {
                limiter: self,
                key,
                armed: true,
            };
            tokio::time::sleep(wait).await;
            unused.armed = false;
        }
        Ok(())
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

    /// The rate a bucket allows now (for tests and the benchmark).
    pub fn rate(&self, key: &BucketKey) -> Option<f64> {
        self.buckets().get(key).map(|b| b.rate)
    }
}

/// Hands a reserved token back unless disarmed: the waiting request was dropped.
struct Refund<'a> {
    limiter: &'a Limiter,
    key: &'a BucketKey,
    armed: bool,
}

impl Drop for Refund<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.limiter.refund(self.key);
        }
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
        let (inner, limiter) = (self.inner.clone(), self.limiter.clone());
        HttpConnectorFuture::new(async move {
            // An unsigned request (none of Drover's) is not limited.
            if let Some(key) = key {
                // Transient: the SDK error says so, and it is not a lost region.
                limiter.acquire(&key).await.map_err(|backlogged| {
                    ConnectorError::other(Box::new(backlogged), Some(ErrorKind::TransientError))
                })?;
            }
            inner.call(request).await
        })
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

    #[test]
    fn a_burst_goes_at_once_and_the_rest_at_the_rate_in_arrival_order() {
        let limiter = Limiter::new(HashMap::new(), Arc::default());
        let now = Instant::now();
        // Route 53: 5 at once, then one every 250 ms (4 per second).
        let waits: Vec<Duration> = (0..8)
            .map(|_| {
                limiter
                    .reserve(&key("route53"), now)
                    .expect("within MAX_WAIT")
            })
            .collect();
        assert!(waits[..5].iter().all(|w| w.is_zero()), "{waits:?}");
        let ms: Vec<u128> = waits[5..].iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![250, 500, 750]);
        // Another service, region or account has its own bucket.
        assert_eq!(limiter.reserve(&key("rds"), now), Ok(Duration::ZERO));
        let other = BucketKey {
            region: "us-west-2".into(),
            ..key("route53")
        };
        assert_eq!(limiter.reserve(&other, now), Ok(Duration::ZERO));
        // Over 8 s of calls, never more than burst + 4/s went out.
        let later = now + Duration::from_secs(8);
        let mut sent_by_then = 0;
        for _ in 0..100 {
            if limiter.reserve(&key("route53"), later) == Ok(Duration::ZERO) {
                sent_by_then += 1;
            }
        }
        assert!(
            sent_by_then <= 5,
            "{sent_by_then} at once after the backlog"
        );
    }

    #[test]
    fn throttling_halves_the_rate_down_to_a_floor_and_answers_bring_it_back() {
        let limiter = Limiter::new(
            HashMap::from([(
                "rds".to_string(),
                RateLimit {
                    per_second: 16.0,
                    burst: 1.0,
                },
            )]),
            Arc::default(),
        );
        let now = Instant::now();
        let _ = limiter.reserve(&key("rds"), now);
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
        // At the lowered rate the next token is further away.
        limiter.answered("rds", true);
        let wait = limiter.reserve(&key("rds"), now).expect("short");
        assert_eq!(wait.as_millis(), 125, "1 token owed at 8 per second");
    }

    #[test]
    fn a_backlog_beyond_the_longest_wait_is_refused_without_booking_a_slot() {
        let limiter = Limiter::new(HashMap::new(), Arc::default());
        let now = Instant::now();
        // Route 53 at 4/s, burst 5: the 37th call at once would wait 8 s, the 38th longer.
        let booked = (0..37)
            .filter(|_| limiter.reserve(&key("route53"), now).is_ok())
            .count();
        assert_eq!(booked, 37);
        let refused = limiter.reserve(&key("route53"), now);
        assert!(refused.is_err_and(|wait| wait > MAX_WAIT));
        // Refused calls leave the queue as it was: the next is refused the same way, and
        // a call given up hands its slot back.
        assert!(limiter.reserve(&key("route53"), now).is_err());
        limiter.refund(&key("route53"));
        assert!(limiter.reserve(&key("route53"), now).is_ok());
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

    #[tokio::test]
    async fn a_request_dropped_while_it_waits_hands_its_token_back() {
        let limiter = Limiter::new(HashMap::new(), Arc::default());
        let now = Instant::now();
        for _ in 0..5 {
            let _ = limiter.reserve(&key("route53"), now);
        }
        let tokens = |l: &Limiter| l.buckets().get(&key("route53")).map(|b| b.tokens);
        let before = tokens(&limiter).expect("a bucket");
        {
            // Waits 250 ms for its token; dropped (its attempt timed out) after 10 ms.
            let route53 = key("route53");
            let waiting = limiter.acquire(&route53);
            let cut = tokio::time::timeout(Duration::from_millis(10), waiting).await;
            assert!(cut.is_err(), "still waiting");
        }
        let after = tokens(&limiter).expect("a bucket");
        assert!(after >= before, "{after} tokens after, {before} before");
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
