//! Watched views of member clusters, for the plan checks.
//!
//! A plan check asks whether each workload exists in each region. With hundreds of plans
//! sharing a few member clusters, a GET per workload per plan per check is tens of
//! thousands of requests a minute. One metadata-only watch per cluster access and kind
//! (across namespaces, or per namespace where the credentials may only list there)
//! answers all of them from memory. Only the plan checks read here: a failover
//! acts on what a GET answers at that moment.
//!
//! A view lives while plans use it. On any watch failure it is dropped and the next check
//! lists again; that check also learns the failure, so a region that went away is never
//! reported ready from an old list, and one that returns is listed afresh.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kube::Client;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use tokio::sync::watch;

/// A view no plan check used for this long stops watching.
const UNUSED_FOR: Duration = Duration::from_secs(600);
/// A view refused by RBAC is not tried again for this long (the checks read by GET).
const RETRY_FORBIDDEN_AFTER: Duration = Duration::from_secs(300);
/// Views kept at most; past this the least recently used go.
const MAX_VIEWS: usize = 1024;
/// A view still on its first list after this long is started again (a list that hangs).
const LISTING_GIVES_UP: Duration = Duration::from_secs(60);
/// Names one view holds at most: a scope with more is read by GET instead.
const MAX_NAMES: usize = 100_000;

/// What a view knows.
#[derive(Clone, Debug, PartialEq)]
enum ViewState {
    /// The first list has not finished.
    Listing,
    /// Listed, and watching since.
    Live,
    /// The watch failed; the sentence says why. The view is not used again.
    Failed(String),
    /// The credentials may not list or watch this kind here: read by GET instead.
    NotWatchable,
}

/// A plan check's answer from a view.
#[derive(Debug, PartialEq)]
pub enum Seen {
    /// Whether each asked name exists, in order.
    Exists(Vec<bool>),
    /// The view could not answer (a sentence for the region's status).
    Failed(String),
    /// No view can be had for this kind here: read each object instead.
    NotWatchable,
}

/// Which view: the cluster access (as `RegionClients` keys it), the namespace (None: all)
/// and the kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ViewKey {
    access: String,
    namespace: Option<String>,
    resource: String,
}

struct View {
    state: watch::Receiver<ViewState>,
    names: Arc<RwLock<HashSet<String>>>,
    /// The client it watches through was built at this instant: a rebuilt client (new
    /// credentials) gets a new view.
    client_built: Instant,
    started: Instant,
    last_used: Mutex<Instant>,
    task: tokio::task::AbortHandle,
}

impl Drop for View {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl View {
    fn current(&self) -> ViewState {
        self.state.borrow().clone()
    }

    /// Whether a check should make a new view instead.
    fn stale(&self, client_built: Instant) -> bool {
        match self.current() {
            ViewState::Failed(_) => true,
            ViewState::NotWatchable => self.started.elapsed() >= RETRY_FORBIDDEN_AFTER,
            ViewState::Listing if self.started.elapsed() >= LISTING_GIVES_UP => true,
            ViewState::Listing | ViewState::Live => self.client_built != client_built,
        }
    }
}

/// The shared views, one per cluster access, scope and kind.
#[derive(Default)]
pub struct ClusterViews {
    views: Mutex<HashMap<ViewKey, Arc<View>>>,
    /// When unused views were last stopped.
    swept: Mutex<Option<Instant>>,
}

/// How often unused views are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Where a view reads: the client, when it was built, and the cluster access it stands for.
pub struct Source<'a> {
    pub access: &'a str,
    pub client: &'a Client,
    pub client_built: Instant,
    /// Names the credentials in sentences (`clusters::credentials`).
    pub credentials: &'a str,
}

impl ClusterViews {
    /// Whether each of `objects` (namespace, name) exists, from the shared view of that
    /// kind in `namespace` (None: every namespace), waiting at most `wait` for its first
    /// list.
    pub async fn exist(
        &self,
        source: Source<'_>,
        resource: &ApiResource,
        namespace: Option<&str>,
        objects: &[(&str, &str)],
        wait: Duration,
    ) -> Seen {
        let view = self.view(&source, resource, namespace);
        let mut state = view.state.clone();
        let settled =
            tokio::time::timeout(wait, state.wait_for(|s| !matches!(s, ViewState::Listing))).await;
        match view.current() {
            ViewState::Live => {
                let Ok(known) = view.names.read() else {
                    return Seen::Failed("the view of this kind was poisoned".into());
                };
                Seen::Exists(
                    objects
                        .iter()
                        .map(|(ns, name)| known.contains(&format!("{ns}/{name}")))
                        .collect(),
                )
            }
            ViewState::Failed(why) => Seen::Failed(why),
            ViewState::NotWatchable => Seen::NotWatchable,
            ViewState::Listing => {
                debug_assert!(settled.is_err());
                Seen::Failed(format!(
                    "listing {}{} took longer than {}",
                    crate::clusters::resource_name(resource),
                    scope(namespace),
                    humantime::format_duration(wait)
                ))
            }
        }
    }

    /// Stops the views through one cluster access: it stopped answering, and when it
    /// answers again its objects are listed afresh.
    pub fn forget(&self, access: &str) {
        if let Ok(mut views) = self.views.lock() {
            views.retain(|k, _| k.access != access);
        }
    }

    fn view(
        &self,
        source: &Source<'_>,
        resource: &ApiResource,
        namespace: Option<&str>,
    ) -> Arc<View> {
        let key = ViewKey {
            access: source.access.to_string(),
            namespace: namespace.map(str::to_string),
            resource: format!(
                "{}/{}",
                resource.api_version,
                crate::clusters::resource_name(resource)
            ),
        };
        let mut views = match self.views.lock() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        };
        let sweep = self.swept.lock().is_ok_and(|mut swept| {
            let due = swept.is_none_or(|at| at.elapsed() >= SWEEP_EVERY);
            if due {
                *swept = Some(Instant::now());
            }
            due
        });
        if sweep {
            views.retain(|_, v| v.last_used.lock().is_ok_and(|u| u.elapsed() < UNUSED_FOR));
        }
        if let Some(v) = views.get(&key).filter(|v| !v.stale(source.client_built)) {
            if let Ok(mut used) = v.last_used.lock() {
                *used = Instant::now();
            }
            return v.clone();
        }
        if views.len() >= MAX_VIEWS
            && let Some(oldest) = views
                .iter()
                .min_by_key(|(_, v)| v.last_used.lock().map(|u| *u).ok())
                .map(|(k, _)| k.clone())
        {
            views.remove(&oldest);
        }
        let view = Arc::new(start(source, resource, namespace));
        views.insert(key, view.clone());
        view
    }
}

/// " in namespace NS", or " in all namespaces", for sentences.
fn scope(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!(" in namespace {ns}"),
        None => " in all namespaces".into(),
    }
}

/// Starts watching the names ("namespace/name") of one kind in one namespace or all.
fn start(source: &Source<'_>, resource: &ApiResource, namespace: Option<&str>) -> View {
    let api: Api<PartialObjectMeta<DynamicObject>> = match namespace {
        Some(ns) => Api::namespaced_with(source.client.clone(), ns, resource),
        None => Api::all_with(source.client.clone(), resource),
    };
    let (state_tx, state_rx) = watch::channel(ViewState::Listing);
    let names = Arc::new(RwLock::new(HashSet::new()));
    let credentials = source.credentials.to_string();
    let action = format!(
        "list and watch {}{}",
        crate::clusters::resource_name(resource),
        scope(namespace)
    );
    let id = |o: PartialObjectMeta<DynamicObject>| {
        format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
    };
    let stream = watcher(api, watcher::Config::default()).map(move |event| {
        event.map(|e| match e {
            watcher::Event::Apply(o) => watcher::Event::Apply(id(o)),
            watcher::Event::Delete(o) => watcher::Event::Delete(id(o)),
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitApply(o) => watcher::Event::InitApply(id(o)),
            watcher::Event::InitDone => watcher::Event::InitDone,
        })
    });
    let follow_names = names.clone();
    let task = tokio::spawn(async move {
        follow(stream, &follow_names, &state_tx, |e| {
            describe(e, &credentials, &action)
        })
        .await
    });
    View {
        state: state_rx,
        names,
        client_built: source.client_built,
        started: Instant::now(),
        last_used: Mutex::new(Instant::now()),
        task: task.abort_handle(),
    }
}

/// What a watch error means for the view: `None` when the watcher recovers by itself
/// (an expired resource version: it lists again).
fn describe(e: watcher::Error, credentials: &str, action: &str) -> Option<ViewState> {
    let error = match e {
        watcher::Error::WatchError(s) if s.code == 410 => return None,
        watcher::Error::WatchError(s) => kube::Error::Api(s),
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        watcher::Error::NoResourceVersion => {
            return Some(ViewState::NotWatchable);
        }
    };
    if matches!(&error, kube::Error::Api(s) if s.code == 403 || s.code == 405) {
        return Some(ViewState::NotWatchable);
    }
    Some(ViewState::Failed(
        crate::clusters::classify(error, credentials, action).to_string(),
    ))
}

/// Follows a watch of names into `names` and `state` until it fails.
async fn follow<S, E>(
    stream: S,
    names: &RwLock<HashSet<String>>,
    state: &watch::Sender<ViewState>,
    describe: impl Fn(E) -> Option<ViewState>,
) where
    S: Stream<Item = Result<watcher::Event<String>, E>>,
{
    let mut listing: HashSet<String> = HashSet::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        let Ok(mut known) = names.write() else { return };
        match event {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(name)) => {
                listing.insert(name);
            }
            Ok(watcher::Event::InitDone) => {
                *known = std::mem::take(&mut listing);
                state.send_replace(ViewState::Live);
            }
            Ok(watcher::Event::Apply(name)) => {
                known.insert(name);
            }
            Ok(watcher::Event::Delete(name)) => {
                known.remove(&name);
            }
            Err(e) => match describe(e) {
                None => continue,
                Some(failed) => {
                    known.clear();
                    state.send_replace(failed);
                    return;
                }
            },
        }
        if known.len() + listing.len() > MAX_NAMES {
            known.clear();
            state.send_replace(ViewState::NotWatchable);
            return;
        }
    }
    state.send_replace(ViewState::Failed("the watch ended".into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        events: Vec<Result<watcher::Event<String>, &'static str>>,
    ) -> (HashSet<String>, ViewState) {
        let names = RwLock::new(HashSet::new());
        let (tx, _rx) = watch::channel(ViewState::Listing);
        futures::executor::block_on(follow(
            futures::stream::iter(events),
            &names,
            &tx,
            |e: &'static str| match e {
                "gone" => None,
                "forbidden" => Some(ViewState::NotWatchable),
                other => Some(ViewState::Failed(other.into())),
            },
        ));
        let known = names.into_inner().unwrap_or_default();
        (known, tx.borrow().clone())
    }

    fn set(names: &[&str]) -> HashSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    use watcher::Event::*;

    /// Names show only once the list is complete, then follow additions and deletions.
    #[test]
    fn a_view_is_live_after_its_list_and_follows_changes() {
        let (names, state) = run(vec![
            Ok(Init),
            Ok(InitApply("web".into())),
            Ok(InitApply("api".into())),
            Ok(InitDone),
            Ok(Apply("worker".into())),
            Ok(Delete("api".into())),
        ]);
        assert_eq!(names, set(&["web", "worker"]));
        // The stream ended: a watch that stops is not trusted any more.
        assert_eq!(state, ViewState::Failed("the watch ended".into()));
    }

    /// A relist replaces what was known: a name deleted while the watch was down goes.
    #[test]
    fn a_relist_forgets_names_it_does_not_list_again() {
        let (names, _) = run(vec![
            Ok(Init),
            Ok(InitApply("web".into())),
            Ok(InitApply("api".into())),
            Ok(InitDone),
            Err("gone"),
            Ok(Init),
            Ok(InitApply("web".into())),
            Ok(InitDone),
        ]);
        assert_eq!(names, set(&["web"]));
    }

    /// Until the first list is done nothing is known; a failure then is said, and the
    /// view holds nothing.
    #[test]
    fn a_failed_watch_knows_nothing_and_says_why() {
        let (names, state) = run(vec![
            Ok(Init),
            Ok(InitApply("web".into())),
            Ok(InitDone),
            Err("cannot reach the cluster: connection refused"),
            Ok(Apply("late".into())),
        ]);
        assert!(names.is_empty());
        assert_eq!(
            state,
            ViewState::Failed("cannot reach the cluster: connection refused".into())
        );
    }

    /// RBAC without list or watch: the view gives way to GETs.
    #[test]
    fn a_forbidden_watch_is_not_watchable() {
        let (names, state) = run(vec![Ok(Init), Err("forbidden")]);
        assert!(names.is_empty());
        assert_eq!(state, ViewState::NotWatchable);
    }

    /// A 410 from the watch is the watcher's to recover from; 403 and 405 give way to GETs;
    /// anything else is a failure in a plain sentence.
    #[test]
    fn watch_errors_are_classified() {
        let status = |code: u16| {
            Box::new(kube::core::Status {
                code,
                message: "no".into(),
                ..Default::default()
            })
        };
        let creds = "the credentials in Secret team-a/usw2-kubeconfig";
        let action = "list and watch deployments.apps in namespace shop";
        assert_eq!(
            describe(watcher::Error::WatchError(status(410)), creds, action),
            None
        );
        for code in [403, 405] {
            assert_eq!(
                describe(
                    watcher::Error::InitialListFailed(kube::Error::Api(status(code))),
                    creds,
                    action
                ),
                Some(ViewState::NotWatchable)
            );
        }
        assert_eq!(
            describe(watcher::Error::WatchError(status(500)), creds, action),
            Some(ViewState::Failed(
                "could not list and watch deployments.apps in namespace shop: the API server \
                 answered 500: no"
                    .into()
            ))
        );
    }
}
