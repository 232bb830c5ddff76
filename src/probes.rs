//! Probe samplers: while a failover runs, each polls the plan's probes of the region being
//! left and of the target once a second, and folds what they say into the failover's
//! user-visible recovery record (`engine::probes`). The failover's passes copy the record
//! into its status; a sampler nobody asks for in a minute stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::api::{
    DisasterRecoveryPlanSpec, Failover, FailoverPhase, ProbeSpec, UserVisibleRecovery,
};
use crate::aws::{Aws, AwsErrorKind};
use crate::engine::probes::{Answer, Poll, complete, fold};
use crate::shared_aws::locked;
use crate::validate::probe_timeout;

/// How often a sampler polls.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// A Route 53 health check is read at most this often: its checkers report every 10 or
/// 30 s, and the account's Route 53 API allows 5 requests a second for everything,
/// failovers' record changes included.
pub const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(10);
/// All samplers' Route 53 reads together are at least this far apart.
const ROUTE53_SPACING: Duration = Duration::from_secs(1);
/// A sampler no pass has asked for in this long stops (its failover ended or was deleted).
const IDLE: Duration = Duration::from_secs(60);
/// Bounds the samplers kept: one per running failover.
const MAX_SAMPLERS: usize = 1024;

/// Asks one probe whether it answers.
#[async_trait]
pub trait ProbeClient: Send + Sync {
    async fn answer(&self, probe: &ProbeSpec) -> Answer;
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// GETs over HTTP(S), a new connection each.
pub struct HttpProbes {
    /// None when the system has no CA certificates (https probes then cannot tell).
    https: Option<HttpClient>,
    http: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for HttpProbes {
    fn default() -> Self {
        // A new connection per poll, as a user's first request after a failover makes one:
        // a kept connection to a region could answer after new ones no longer would.
        let builder = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_max_idle_per_host(0);
            b
        };
        let ring = rustls::crypto::ring::default_provider();
        let https =
            match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(ring) {
                Ok(b) => Some(builder().build(b.https_or_http().enable_http1().build())),
                Err(e) => {
                    tracing::warn!(error = %e, "no CA certificates: https probes cannot be polled");
                    None
                }
            };
        Self {
            https,
            http: builder().build(HttpConnector::new()),
        }
    }
}

impl HttpProbes {
    /// Whether `url` answers 2xx or 3xx within `timeout`.
    pub async fn get(&self, full_url: &str, timeout: Duration) -> Answer {
        let shown = crate::validate::shown_url(full_url);
        let url = &shown;
        let uri: http::Uri = match full_url.parse() {
            Ok(u) => u,
            Err(e) => return Answer::Unknown(format!("{url} is not a URL ({e})")),
        };
        let request = http::Request::get(uri.clone())
            .header(http::header::USER_AGENT, "drover-probe")
            .body(Empty::new());
        let request = match request {
            Ok(r) => r,
            Err(e) => return Answer::Unknown(format!("{url}: {e}")),
        };
        let sent = match (uri.scheme_str(), &self.https) {
            (Some("https"), Some(client)) => {
                tokio::time::timeout(timeout, client.request(request)).await
            }
            (Some("https"), None) => {
                return Answer::Unknown(format!(
                    "{url}: this system has no CA certificates to check it with"
                ));
            }
            _ => tokio::time::timeout(timeout, self.http.request(request)).await,
        };
        match sent {
            Err(_) => Answer::No(format!("{url} did not answer within {timeout:?}")),
            Ok(Err(e)) => Answer::No(format!("{url}: {}", error_chain(&e))),
            Ok(Ok(response)) => {
                let status = response.status();
                if status.is_success() || status.is_redirection() {
                    Answer::Yes
                } else {
                    Answer::No(format!("{url} answered HTTP {}", status.as_u16()))
                }
            }
        }
    }
}

/// Probes over HTTP(S) and Route 53.
pub struct LiveProbes {
    http: HttpProbes,
    aws: Arc<dyn Aws>,
    /// Per health check id: its last answer and when it was read.
    health_checks: Mutex<HashMap<String, (Instant, Answer)>>,
    route53_turn: Spacing,
}

/// Lets one call through per `every`.
struct Spacing {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl Spacing {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(None),
        }
    }

    /// Whether a call may go at `now`; if so, it counts.
    fn take(&self, now: Instant) -> bool {
        let mut last = locked(&self.last);
        if last.is_some_and(|l| now.saturating_duration_since(l) < self.every) {
            return false;
        }
        *last = Some(now);
        true
    }
}

impl LiveProbes {
    pub fn new(aws: Arc<dyn Aws>) -> Self {
        Self {
            http: HttpProbes::default(),
            aws,
            health_checks: Mutex::new(HashMap::new()),
            route53_turn: Spacing::new(ROUTE53_SPACING),
        }
    }

    async fn health_check(&self, id: &str, timeout: Duration) -> Answer {
        let kept = locked(&self.health_checks).get(id).cloned();
        if let Some((read, answer)) = &kept
            && read.elapsed() < HEALTH_CHECK_EVERY
        {
            return answer.clone();
        }
        // All samplers together read Route 53 at most once a second: many failovers at
        // once (a lost region) must leave the account's 5 requests a second to their DNS
        // changes. A check not read now keeps its last answer, or is not known yet.
        if !self.route53_turn.take(Instant::now()) {
            return match kept {
                Some((_, answer)) => answer,
                None => Answer::Unknown(format!(
                    "health check {id} waits its turn: probes read Route 53 at most once a second"
                )),
            };
        }
        let read = tokio::time::timeout(timeout, self.aws.health_check_healthy(id)).await;
        let Ok(read) = read else {
            return Answer::Unknown(format!(
                "Route 53 did not answer for health check {id} within {timeout:?}"
            ));
        };
        let answer = match read {
            Ok(true) => Answer::Yes,
            Ok(false) => Answer::No(format!("Route 53 health check {id} is unhealthy")),
            Err(e) if e.kind == AwsErrorKind::Permanent => {
                Answer::Unknown(format!("Route 53 health check {id}: {e}"))
            }
            Err(e) => Answer::Unknown(format!("could not read Route 53 health check {id}: {e}")),
        };
        let mut kept = locked(&self.health_checks);
        if kept.len() >= MAX_SAMPLERS {
            kept.clear();
        }
        kept.insert(id.to_string(), (Instant::now(), answer.clone()));
        answer
    }
}

/// An error and its causes, in one line: hyper's own says only "client error (Connect)".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[async_trait]
impl ProbeClient for LiveProbes {
    async fn answer(&self, probe: &ProbeSpec) -> Answer {
        match (&probe.url, &probe.route53_health_check_id) {
            (Some(url), _) => self.http.get(url, probe_timeout(probe)).await,
            (None, Some(id)) => self.health_check(id, probe_timeout(probe)).await,
            (None, None) => Answer::Unknown("the probe names no url or health check".into()),
        }
    }
}

async fn region_answer(client: &dyn ProbeClient, probes: &[ProbeSpec]) -> Answer {
    Answer::all(futures::future::join_all(probes.iter().map(|p| client.answer(p))).await)
}

/// The probes a failover's sampler polls.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    pub source: Vec<ProbeSpec>,
    pub target: Vec<ProbeSpec>,
}

/// What a failover from `source` to `target` polls; None when the plan has no probes, or
/// any is not valid (its `ProbesValid` condition says why).
pub fn sampling(spec: &DisasterRecoveryPlanSpec, source: &str, target: &str) -> Option<Sampling> {
    if !crate::validate::probe_problems(spec).is_empty() {
        return None;
    }
    let probes_of = |name: &str| {
        spec.regions
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.probes.clone())
            .unwrap_or_default()
    };
    let sampling = Sampling {
        source: probes_of(source),
        target: probes_of(target),
    };
    (!sampling.source.is_empty() && !sampling.target.is_empty()).then_some(sampling)
}

/// Whether a failover that ended goes on polling: it succeeded, its record is not final, and
/// it ended less than `SETTLE` (and a minute to close the record) ago.
pub fn settling(fo: &Failover, now: SystemTime) -> bool {
    fo.status.as_ref().is_some_and(|s| {
        let recent = s
            .timings
            .as_ref()
            .and_then(|t| t.finished_at.as_ref())
            .is_none_or(|end| {
                now.duration_since(SystemTime::from(end.0))
                    .unwrap_or_default()
                    < crate::engine::probes::SETTLE + Duration::from_secs(60)
            });
        s.phase == Some(FailoverPhase::Succeeded)
            && s.user_visible.as_ref().is_some_and(|r| !complete(r))
            && recent
    })
}

struct Sampler {
    record: Arc<Mutex<UserVisibleRecovery>>,
    asked: Arc<Mutex<tokio::time::Instant>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The running samplers, by failover uid.
pub struct Samplers {
    client: Arc<dyn ProbeClient>,
    running: Mutex<HashMap<String, Sampler>>,
}

impl Samplers {
    pub fn new(client: Arc<dyn ProbeClient>) -> Self {
        Self {
            client,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Failover `uid`'s record so far. With none sampling, a sampler starts from `recorded`
    /// (the status: it goes on where a restarted operator left off). A complete recorded
    /// record is the answer, and stops the sampler.
    pub fn record(
        &self,
        uid: &str,
        sampling: &Sampling,
        recorded: &UserVisibleRecovery,
    ) -> UserVisibleRecovery {
        let mut running = locked(&self.running);
        // A finished sampler is kept for its record until asked once more, then dropped.
        running.retain(|_, s| !s.task.is_finished() || locked(&s.asked).elapsed() < IDLE);
        if complete(recorded) {
            running.remove(uid);
            return recorded.clone();
        }
        if let Some(s) = running.get(uid) {
            *locked(&s.asked) = tokio::time::Instant::now();
            return locked(&s.record).clone();
        }
        if running.len() >= MAX_SAMPLERS {
            return recorded.clone();
        }
        let record = Arc::new(Mutex::new(recorded.clone()));
        let asked = Arc::new(Mutex::new(tokio::time::Instant::now()));
        let task = tokio::spawn(sample(
            self.client.clone(),
            sampling.clone(),
            record.clone(),
            asked.clone(),
        ));
        running.insert(
            uid.to_string(),
            Sampler {
                record,
                asked,
                task,
            },
        );
        recorded.clone()
    }

    /// Stops failover `uid`'s sampler, if one runs.
    pub fn stop(&self, uid: &str) {
        locked(&self.running).remove(uid);
    }

    /// How many samplers run now.
    pub fn len(&self) -> usize {
        locked(&self.running).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

async fn sample(
    client: Arc<dyn ProbeClient>,
    sampling: Sampling,
    record: Arc<Mutex<UserVisibleRecovery>>,
    asked: Arc<Mutex<tokio::time::Instant>>,
) {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut source_read = false;
    let mut resumed = true;
    loop {
        tick.tick().await;
        if locked(&asked).elapsed() > IDLE {
            return;
        }
        let at = SystemTime::now();
        // Once the old region stopped, only the target's answer counts.
        let stopped = locked(&record).old_region_stopped_at.is_some();
        let source = async {
            if stopped {
                Answer::Unknown("not polled: it stopped".into())
            } else {
                region_answer(client.as_ref(), &sampling.source).await
            }
        };
        let (source, target) =
            futures::join!(source, region_answer(client.as_ref(), &sampling.target));
        let source_unread = !source_read;
        source_read |= !matches!(source, Answer::Unknown(_));
        let mut r = locked(&record);
        *r = fold(
            &r,
            &Poll {
                at,
                source_unread,
                resumed,
                source,
                target,
            },
        );
        resumed = false;
        if complete(&r) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers each URL as told.
    struct Told(Mutex<HashMap<String, Answer>>);

    #[async_trait]
    impl ProbeClient for Told {
        async fn answer(&self, probe: &ProbeSpec) -> Answer {
            let url = probe.url.clone().unwrap_or_default();
            locked(&self.0).get(&url).cloned().unwrap_or(Answer::Yes)
        }
    }

    fn probe(url: &str) -> ProbeSpec {
        ProbeSpec {
            url: Some(url.into()),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_sampler_records_the_stop_and_the_answer_then_stops() {
        let told = Arc::new(Told(Mutex::new(HashMap::from([(
            "t".to_string(),
            Answer::No("HTTP 503".into()),
        )]))));
        let samplers = Samplers::new(told.clone());
        let sampling = Sampling {
            source: vec![probe("s")],
            target: vec![probe("t")],
        };
        let empty = UserVisibleRecovery::default();
        assert_eq!(samplers.record("uid", &sampling, &empty), empty);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let r = samplers.record("uid", &sampling, &empty);
        assert!(r.first_polled_at.is_some() && r.old_region_stopped_at.is_none());
        locked(&told.0).insert("s".into(), Answer::No("refused".into()));
        tokio::time::sleep(POLL_EVERY).await;
        let r = samplers.record("uid", &sampling, &empty);
        assert!(r.suspected_stop_at.is_some() && r.old_region_stopped_at.is_none());
        tokio::time::sleep(POLL_EVERY).await;
        let r = samplers.record("uid", &sampling, &empty);
        assert!(r.old_region_stopped_at.is_some() && r.target_answered_at.is_none());
        locked(&told.0).insert("t".into(), Answer::Yes);
        tokio::time::sleep(POLL_EVERY).await;
        let r = samplers.record("uid", &sampling, &empty);
        assert!(complete(&r));
        // Recorded complete: the sampler goes.
        assert_eq!(samplers.record("uid", &sampling, &r), r);
        assert!(samplers.is_empty());
    }

    #[tokio::test]
    async fn an_http_probe_answers_on_2xx_and_3xx_only_and_within_its_timeout() {
        use axum::http::StatusCode;
        use axum::routing::get;
        let app = axum::Router::new()
            .route("/ok", get(|| async { StatusCode::OK }))
            .route("/moved", get(|| async { StatusCode::FOUND }))
            .route("/down", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    StatusCode::OK
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let probes = HttpProbes::default();
        let second = Duration::from_secs(1);
        let url = |path: &str| format!("http://{addr}{path}");
        assert_eq!(probes.get(&url("/ok"), second).await, Answer::Yes);
        assert_eq!(probes.get(&url("/moved"), second).await, Answer::Yes);
        assert_eq!(
            probes.get(&url("/down"), second).await,
            Answer::No(format!("{} answered HTTP 503", url("/down")))
        );
        assert_eq!(
            probes.get(&url("/slow"), Duration::from_millis(200)).await,
            Answer::No(format!("{} did not answer within 200ms", url("/slow")))
        );
        server.abort();
        let _ = server.await;
        let Answer::No(refused) = probes.get(&url("/ok"), second).await else {
            panic!("a closed port answered");
        };
        assert!(refused.contains("onnect"), "{refused}");
    }

    #[test]
    fn route53_reads_are_spaced_across_samplers() {
        let spacing = Spacing::new(Duration::from_secs(1));
        let t = Instant::now();
        assert!(spacing.take(t));
        assert!(!spacing.take(t + Duration::from_millis(999)));
        assert!(spacing.take(t + Duration::from_secs(1)));
        assert!(!spacing.take(t + Duration::from_millis(1500)));
        assert!(spacing.take(t + Duration::from_secs(3)));
    }

    #[test]
    fn an_ended_failover_settles_only_while_recent_and_unsettled() {
        use crate::api::{FailoverSpec, FailoverStatus, FailoverTimings};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut fo = Failover::new(
            "f",
            FailoverSpec::new("p", "usw2", crate::api::FailoverMode::Planned),
        );
        fo.status = Some(FailoverStatus {
            phase: Some(FailoverPhase::Succeeded),
            timings: Some(FailoverTimings {
                finished_at: Some(MicroTime(end.try_into().expect("time"))),
                ..Default::default()
            }),
            user_visible: Some(UserVisibleRecovery::default()),
            ..Default::default()
        });
        assert!(settling(&fo, end + Duration::from_secs(30)));
        assert!(!settling(&fo, end + Duration::from_secs(700)), "bounded");
        let status = || fo.status.clone().expect("status");
        let mut settled = status();
        settled.user_visible.as_mut().expect("record").settled = true;
        let mut none = status();
        none.user_visible = None;
        fo.status = Some(settled);
        assert!(!settling(&fo, end));
        fo.status = Some(none);
        assert!(!settling(&fo, end), "no probes, nothing to settle");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sampler_nobody_asks_for_stops() {
        let samplers = Samplers::new(Arc::new(Told(Mutex::new(HashMap::new()))));
        let sampling = Sampling {
            source: vec![probe("s")],
            target: vec![probe("t")],
        };
        samplers.record("uid", &sampling, &UserVisibleRecovery::default());
        assert_eq!(samplers.len(), 1);
        tokio::time::sleep(IDLE + 2 * POLL_EVERY).await;
        samplers.record("other", &sampling, &UserVisibleRecovery::default());
        assert_eq!(
            samplers.len(),
            1,
            "the idle sampler is gone, the new one runs"
        );
    }
}
