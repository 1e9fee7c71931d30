//! Following one cluster's API server: a watcher per kind, merged into one stream; an
//! object is sent when it changed; after every (re)list, what the list no longer holds is
//! deleted, so a reconnection applies what changed meanwhile, deletions included.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hasher as _};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::StreamExt as _;
use kube::Api;
use kube::core::DynamicObject;
use kube::runtime::watcher::{self, Event};

use super::status::Reports;
use super::{api_resource, resource_of};
use crate::datastore::{Origin, RemoteClusterState, Update, UpdateSink};
use crate::model::resources::{Kind, Resource, ResourceKey};

/// What a Kubernetes source has sent, by key: a digest of each object as sent.
pub(crate) type Known = HashMap<ResourceKey, u64>;

/// Why a source sends nothing more.
#[derive(Debug)]
pub(crate) enum Halt {
    /// It was stopped (its RemoteClusterConfiguration changed or went away).
    Stopped,
    /// The receiver of updates is gone: the agent is shutting down.
    Closed,
}

/// One source's way to the agent's channel, shared with whoever may stop it. Sends happen
/// with the lock held, so once [`Feed::stop`] returns nothing more is sent.
pub(crate) struct Feed<S> {
    shared: Arc<Mutex<Delivery<S>>>,
}

impl<S> Clone for Feed<S> {
    fn clone(&self) -> Self {
        Feed {
            shared: self.shared.clone(),
        }
    }
}

struct Delivery<S> {
    sink: S,
    origin: Origin,
    known: Known,
    /// How many of `known` are endpoints (pods and host endpoints), for the RCC status.
    endpoints: u64,
    stopped: bool,
    reports: Option<Arc<Reports>>,
}

impl<S: UpdateSink> Feed<S> {
    /// A feed for `origin` whose receiver already holds `known` (from an earlier source of
    /// the same cluster), so that only differences are sent. A remote origin's state and
    /// endpoint count go to `reports` too.
    pub(crate) fn new(
        sink: S,
        origin: Origin,
        known: Known,
        reports: Option<Arc<Reports>>,
    ) -> Feed<S> {
        let endpoints = known.keys().filter(|key| is_endpoint(key.kind)).count() as u64;
        Feed {
            shared: Arc::new(Mutex::new(Delivery {
                sink,
                origin,
                known,
                endpoints,
                stopped: false,
                reports,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Delivery<S>> {
        // A panic while sending leaves nothing half-done that matters here.
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops the feed: nothing is sent after this returns. Returns what the receiver holds.
    pub(crate) fn stop(&self) -> Known {
        let mut delivery = self.lock();
        delivery.stopped = true;
        std::mem::take(&mut delivery.known)
    }

    /// Sends `resource` if the receiver does not hold it as it is.
    pub(crate) fn set(&self, resource: Resource) -> Result<(), Halt> {
        let digest = digest(&resource);
        let key = resource.key();
        let mut delivery = self.lock();
        if delivery.known.get(&key) == Some(&digest) {
            return Ok(());
        }
        let origin = delivery.origin.clone();
        delivery.send(Update::Set { origin, resource })?;
        if delivery.known.insert(key.clone(), digest).is_none() && is_endpoint(key.kind) {
            delivery.endpoints += 1;
            delivery.report_endpoints();
        }
        Ok(())
    }

    /// Deletes `key` if the receiver holds it.
    pub(crate) fn delete(&self, key: &ResourceKey) -> Result<(), Halt> {
        self.lock().delete(key)
    }

    /// Deletes every object of `kind` that is not in `listed`: what a fresh list of the
    /// kind no longer holds was deleted while the source was not watching.
    pub(crate) fn retain_listed(
        &self,
        kind: Kind,
        listed: &HashSet<ResourceKey>,
    ) -> Result<(), Halt> {
        self.delete_where(|key| key.kind == kind && !listed.contains(key))
    }

    /// Deletes everything the receiver holds from this source (stale data past its TTL).
    pub(crate) fn withdraw_all(&self) -> Result<(), Halt> {
        self.delete_where(|_| true)
    }

    /// Deletes, in key order, what the receiver holds and `gone` says is gone.
    fn delete_where(&self, gone: impl Fn(&ResourceKey) -> bool) -> Result<(), Halt> {
        let mut delivery = self.lock();
        let mut keys: Vec<ResourceKey> = delivery
            .known
            .keys()
            .filter(|key| gone(key))
            .cloned()
            .collect();
        keys.sort_unstable();
        keys.iter().try_for_each(|key| delivery.delete(key))
    }

    /// Whether the receiver holds anything from this source.
    pub(crate) fn holds_anything(&self) -> bool {
        !self.lock().known.is_empty()
    }

    /// A remote cluster's connection state; nothing for the local cluster, whose
    /// problems are logged.
    pub(crate) fn state(&self, state: RemoteClusterState) -> Result<(), Halt> {
        let mut delivery = self.lock();
        let Origin::Remote(cluster) = delivery.origin.clone() else {
            return Ok(());
        };
        if let Some(reports) = &delivery.reports {
            reports.set_state(&cluster, &state);
        }
        delivery.send(Update::RemoteState { cluster, state })
    }

    /// The source has sent everything its cluster holds.
    pub(crate) fn in_sync(&self) -> Result<(), Halt> {
        let mut delivery = self.lock();
        let origin = delivery.origin.clone();
        delivery.send(Update::InSync {
            origin: origin.clone(),
        })?;
        if let Origin::Remote(cluster) = origin {
            if let Some(reports) = &delivery.reports {
                reports.synced(&cluster);
            }
            delivery.send(Update::RemoteState {
                cluster,
                state: RemoteClusterState::InSync,
            })?;
        }
        Ok(())
    }
}

impl<S: UpdateSink> Delivery<S> {
    fn send(&mut self, update: Update) -> Result<(), Halt> {
        if self.stopped {
            return Err(Halt::Stopped);
        }
        // The agent's channel is bounded: waiting on it must not stall the runtime's other
        // connections (outside a runtime this simply runs the closure).
        let sink = &mut self.sink;
        tokio::task::block_in_place(|| sink.send(update)).map_err(|_| Halt::Closed)
    }

    fn delete(&mut self, key: &ResourceKey) -> Result<(), Halt> {
        if !self.known.contains_key(key) {
            return Ok(());
        }
        let origin = self.origin.clone();
        self.send(Update::Delete {
            origin,
            key: key.clone(),
        })?;
        self.known.remove(key);
        if is_endpoint(key.kind) {
            self.endpoints -= 1;
            self.report_endpoints();
        }
        Ok(())
    }

    fn report_endpoints(&self) {
        if let (Some(reports), Origin::Remote(cluster)) = (&self.reports, &self.origin) {
            reports.set_endpoints(cluster, self.endpoints);
        }
    }
}

fn is_endpoint(kind: Kind) -> bool {
    matches!(kind, Kind::Pod | Kind::HostEndpoint)
}

fn digest(resource: &Resource) -> u64 {
    let mut hasher = DefaultHasher::new();
    // Serializing fedwall's own types cannot fail (string keys, no non-finite floats
    // reach here: policy orders are parsed from JSON numbers).
    hasher.write(&serde_json::to_vec(resource).unwrap_or_default());
    hasher.finish()
}

/// How following a cluster ended.
#[derive(Debug)]
pub(crate) enum Ended {
    Halted(Halt),
    /// A request failed; the caller reports it and starts again after a pause.
    Failed {
        error: kube::Error,
        /// Whether the cluster had been in sync before: its outage starts now.
        was_in_sync: bool,
    },
}

/// Lists and watches `kinds` on `client`'s API server, feeding every change to `feed`,
/// until a request fails or the feed halts. A remote cluster's state goes
/// `ResyncInProgress` once the first list answers and `InSync` once every kind is listed.
pub(crate) async fn follow<S: UpdateSink>(
    client: &kube::Client,
    kinds: &[Kind],
    feed: &Feed<S>,
) -> Ended {
    let streams = kinds.iter().map(|&kind| {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource(kind));
        // Lists may be served from the API server's watch cache: every node's agent lists
        // at start, and a reconnection diffs against what it holds anyway.
        watcher::watcher(api, watcher::Config::default().any_semantic())
            .map(move |event| (kind, event))
            .boxed()
    });
    let mut events = futures_util::stream::select_all(streams);
    let mut listing: HashMap<Kind, HashSet<ResourceKey>> = HashMap::new();
    let mut listed: HashSet<Kind> = HashSet::new();
    let mut answered = false;
    let mut synced = false;
    while let Some((kind, event)) = events.next().await {
        let failed = |error| Ended::Failed {
            error,
            was_in_sync: synced,
        };
        let event = match event {
            Ok(event) => event,
            // The watch's resourceVersion expired: the watcher lists again (Init follows)
            // and the list is diffed like any other.
            Err(watcher::Error::WatchError(status)) if status.code == 410 => continue,
            Err(error) => match request_error(error) {
                Some(error) => return failed(error),
                None => continue,
            },
        };
        if !answered && matches!(event, Event::InitApply(_) | Event::InitDone) {
            answered = true;
            if let Err(halt) = feed.state(RemoteClusterState::ResyncInProgress) {
                return Ended::Halted(halt);
            }
        }
        let step = match event {
            Event::Init => {
                listing.insert(kind, HashSet::new());
                Ok(())
            }
            Event::InitApply(object) => {
                let key = key_of(kind, &object);
                listing.entry(kind).or_default().insert(key.clone());
                apply(feed, kind, key, &object)
            }
            Event::InitDone => {
                let seen = listing.remove(&kind).unwrap_or_default();
                listed.insert(kind);
                feed.retain_listed(kind, &seen).and_then(|()| {
                    if !synced && listed.len() == kinds.len() {
                        synced = true;
                        feed.in_sync()
                    } else {
                        Ok(())
                    }
                })
            }
            Event::Apply(object) => apply(feed, kind, key_of(kind, &object), &object),
            Event::Delete(object) => feed.delete(&key_of(kind, &object)),
        };
        if let Err(halt) = step {
            return Ended::Halted(halt);
        }
    }
    // The watcher's stream never ends on its own.
    Ended::Halted(Halt::Stopped)
}

/// The failed request behind a watcher's error; `None` for one the watcher recovers from
/// by itself.
pub(crate) fn request_error(error: watcher::Error) -> Option<kube::Error> {
    match error {
        watcher::Error::InitialListFailed(error)
        | watcher::Error::WatchStartFailed(error)
        | watcher::Error::WatchFailed(error) => Some(error),
        watcher::Error::WatchError(status) => Some(kube::Error::Api(status)),
        watcher::Error::NoResourceVersion => None,
    }
}

/// Sends an object that appeared or changed; one fedwall cannot read is logged and
/// withdrawn (its previous version no longer describes it).
fn apply<S: UpdateSink>(
    feed: &Feed<S>,
    kind: Kind,
    key: ResourceKey,
    object: &DynamicObject,
) -> Result<(), Halt> {
    match resource_of(kind, object) {
        Ok(resource) => feed.set(resource),
        Err(error) => {
            tracing::warn!(object = %key, %error, "ignoring an object fedwall cannot read; fix it");
            feed.delete(&key)
        }
    }
}

/// The key of an object as the API server names it.
fn key_of(kind: Kind, object: &DynamicObject) -> ResourceKey {
    let meta = &object.metadata;
    ResourceKey::new(
        kind,
        meta.namespace.as_deref(),
        meta.name.as_deref().unwrap_or_default(),
    )
}
