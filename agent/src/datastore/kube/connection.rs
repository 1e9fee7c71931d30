//! One remote cluster over Kubernetes: its kubeconfig (from a Secret that is followed, a
//! file, or inline), a connection that lists and watches the federated kinds, and what
//! happens when it fails — the last-known endpoints stay enforced (until `staleDataTTL`,
//! if set), the connection is retried with backoff, and a reconnection applies what
//! changed meanwhile.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};

use super::access::{self, KubeAccess};
use super::status::Reports;
use super::sync::{Ended, Feed, Halt, Known, follow, request_error};
use super::{LOCAL_SERVER, REMOTE_KINDS, failure_reason, server_at};
use crate::datastore::{Origin, RemoteClusterState, UpdateSink};

/// The first pause after a failed connection; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest pause between attempts: a cluster back from an outage is in sync again
/// within this.
const MAX_RETRY: Duration = Duration::from_secs(8);

/// Pauses between attempts to reach an API server: doubling, capped.
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff(FIRST_RETRY)
    }

    /// Waits the current pause, and doubles the next.
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(MAX_RETRY);
    }
}

/// What remote Kubernetes connections need from the agent.
#[derive(Clone)]
pub struct KubeContext {
    pub(crate) handle: tokio::runtime::Handle,
    /// The local cluster's API server, where access Secrets are read; `None` when the
    /// local datastore is a directory.
    pub(crate) local: Option<kube::Client>,
    pub(crate) reports: Arc<Reports>,
}

impl std::fmt::Debug for KubeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeContext")
            .field("local", &self.local.is_some())
            .finish_non_exhaustive()
    }
}

impl KubeContext {
    /// For an agent whose local datastore is a directory: remote clusters connect through
    /// kubeconfig files or inline kubeconfigs (there is no local API server for Secrets).
    pub fn without_local_cluster(runtime: &super::KubeRuntime) -> KubeContext {
        KubeContext {
            handle: runtime.handle().clone(),
            local: None,
            reports: Arc::default(),
        }
    }
}

/// A running remote cluster connection. Dropping it stops it.
pub(crate) struct KubeRemote {
    stop: Option<Box<dyn FnOnce() -> Known + Send>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for KubeRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeRemote")
    }
}

impl KubeRemote {
    /// Starts following the cluster `name` reached through `access`; `known` is what the
    /// receiver holds from it already (an earlier connection), so only differences go.
    pub(crate) fn spawn<S: UpdateSink>(
        context: &KubeContext,
        name: &str,
        access: KubeAccess,
        stale_ttl: Option<Duration>,
        sink: S,
        known: Known,
    ) -> KubeRemote {
        let feed = Feed::new(
            sink,
            Origin::Remote(name.to_owned()),
            known,
            Some(context.reports.clone()),
        );
        let task =
            context
                .handle
                .spawn(run(context.local.clone(), access, stale_ttl, feed.clone()));
        KubeRemote {
            stop: Some(Box::new(move || feed.stop())),
            task,
        }
    }

    /// Stops the connection; returns what the receiver holds from it. Nothing is sent
    /// after this returns.
    pub(crate) fn stop(mut self) -> Known {
        let known = self.stop.take().map(|stop| stop()).unwrap_or_default();
        self.task.abort();
        known
    }
}

impl Drop for KubeRemote {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
        self.task.abort();
    }
}

async fn run<S: UpdateSink>(
    local: Option<kube::Client>,
    access: KubeAccess,
    stale_ttl: Option<Duration>,
    feed: Feed<S>,
) {
    if feed.state(RemoteClusterState::Connecting).is_err() {
        return;
    }
    let halt = match &access {
        KubeAccess::Secret { namespace, name } => match local {
            Some(local) => follow_secret(local, namespace, name, &access, stale_ttl, &feed).await,
            None => feed
                .state(RemoteClusterState::ConfigIncomplete(format!(
                    "clusterAccessSecret ({access}) is read from this cluster's API server, \
                     and this agent reads a directory (--datastore file:); use spec.kubeconfig \
                     or spec.kubeconfigInline"
                )))
                .err(),
        },
        KubeAccess::Path(path) => {
            let path = path.clone();
            Some(
                keep_connected(feed.clone(), access.clone(), stale_ttl, move || {
                    access::read_path(&path)
                })
                .await,
            )
        }
        KubeAccess::Inline(text) => {
            let text = text.clone();
            Some(
                keep_connected(feed.clone(), access.clone(), stale_ttl, move || {
                    Ok(text.clone())
                })
                .await,
            )
        }
    };
    if let Some(Halt::Closed) = halt {
        tracing::debug!(%access, "the agent's channel closed; remote connection ends");
    }
}

/// Follows the cluster-access Secret: each kubeconfig it holds starts a connection; a
/// rotated one replaces the connection without dropping the endpoints it knew.
async fn follow_secret<S: UpdateSink>(
    local: kube::Client,
    namespace: &str,
    name: &str,
    access: &KubeAccess,
    stale_ttl: Option<Duration>,
    feed: &Feed<S>,
) -> Option<Halt> {
    let secrets: Api<Secret> = Api::namespaced(local, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher::watcher(secrets, config).default_backoff().boxed();
    let mut current: Option<Result<String, RemoteClusterState>> = None;
    let mut listed_it = false;
    let mut connection: Pin<Box<dyn Future<Output = Halt> + Send>> =
        Box::pin(std::future::pending());
    loop {
        let event = tokio::select! {
            halt = &mut connection => return Some(halt),
            event = events.next() => event?,
        };
        let kubeconfig = match event {
            Ok(Event::Init) => {
                listed_it = false;
                continue;
            }
            Ok(Event::InitApply(secret) | Event::Apply(secret)) => {
                listed_it = true;
                access::from_secret(&secret, access)
            }
            Ok(Event::InitDone) if listed_it => continue,
            Ok(Event::InitDone | Event::Delete(_)) => {
                Err(RemoteClusterState::ConfigIncomplete(format!(
                    "{access} does not exist; create it in that namespace with the keys \
                     datastoreType: kubernetes and kubeconfig (README, \"Connecting a remote \
                     cluster\")"
                )))
            }
            Err(error) => {
                let Some(error) = request_error(error) else {
                    continue;
                };
                let reason = failure_reason(&error, LOCAL_SERVER);
                let state =
                    RemoteClusterState::ConnectionFailed(format!("cannot read {access}: {reason}"));
                if matches!(current, Some(Ok(_))) {
                    // Connected already: the connection goes on with the kubeconfig it has.
                    tracing::warn!(%access, %state, "cannot follow the cluster-access Secret");
                    continue;
                }
                Err(state)
            }
        };
        if current.as_ref() == Some(&kubeconfig) {
            continue;
        }
        let rotated = matches!(current, Some(Ok(_)));
        current = Some(kubeconfig.clone());
        connection = match kubeconfig {
            Ok(text) => {
                if rotated {
                    tracing::info!(%access, "the cluster-access Secret changed: reconnecting with its new kubeconfig, keeping the endpoints known");
                    if let Err(halt) = feed.state(RemoteClusterState::Connecting) {
                        return Some(halt);
                    }
                }
                Box::pin(keep_connected(
                    feed.clone(),
                    access.clone(),
                    stale_ttl,
                    move || Ok(text.clone()),
                ))
            }
            Err(state) => {
                if let Err(halt) = feed.state(state) {
                    return Some(halt);
                }
                Box::pin(std::future::pending())
            }
        };
    }
}

/// Connects with the kubeconfig `load` gives and follows the cluster; on failure reports
/// why, keeps what is known (withdrawing it once `stale_ttl` has passed) and tries again
/// with backoff. Returns only when the feed halts.
async fn keep_connected<S: UpdateSink>(
    feed: Feed<S>,
    access: KubeAccess,
    stale_ttl: Option<Duration>,
    load: impl Fn() -> Result<String, RemoteClusterState> + Send,
) -> Halt {
    let mut backoff = Backoff::new();
    let mut failing_since: Option<Instant> = None;
    let mut reported: Option<RemoteClusterState> = None;
    loop {
        let failure = match attempt(&feed, &access, &load).await {
            Attempt::Halted(halt) => return halt,
            Attempt::Failed { state, was_in_sync } => {
                if was_in_sync {
                    backoff = Backoff::new();
                    failing_since = None;
                    reported = None;
                }
                state
            }
        };
        let since = *failing_since.get_or_insert_with(Instant::now);
        let state = match (failure, stale_ttl) {
            (RemoteClusterState::ConnectionFailed(reason), Some(ttl))
                if since.elapsed() >= ttl && feed.holds_anything() =>
            {
                tracing::warn!(%access, ttl = ?ttl, "remote cluster unreachable for longer than its staleDataTTL: withdrawing its endpoints");
                if let Err(halt) = feed.withdraw_all() {
                    return halt;
                }
                RemoteClusterState::ConnectionFailed(format!(
                    "{reason}; its endpoints were withdrawn after staleDataTTL ({}s)",
                    ttl.as_secs()
                ))
            }
            (RemoteClusterState::ConnectionFailed(reason), _) if feed.holds_anything() => {
                RemoteClusterState::ConnectionFailed(format!(
                    "{reason}; its last-known endpoints stay enforced while fedwall retries"
                ))
            }
            (state, _) => state,
        };
        if reported.as_ref() != Some(&state) {
            tracing::warn!(%access, %state, "remote cluster connection");
            if let Err(halt) = feed.state(state.clone()) {
                return halt;
            }
            reported = Some(state);
        }
        backoff.wait().await;
    }
}

enum Attempt {
    Halted(Halt),
    Failed {
        state: RemoteClusterState,
        was_in_sync: bool,
    },
}

/// One connection: build the client, follow the cluster until a request fails.
async fn attempt<S: UpdateSink>(
    feed: &Feed<S>,
    access: &KubeAccess,
    load: &(impl Fn() -> Result<String, RemoteClusterState> + Send),
) -> Attempt {
    let failed = |state| Attempt::Failed {
        state,
        was_in_sync: false,
    };
    let text = match load() {
        Ok(text) => text,
        Err(state) => return failed(state),
    };
    let connection = match access::connection(&text, access).await {
        Ok(connection) => connection,
        Err(state) => return failed(state),
    };
    let client = match kube::Client::try_from(connection.config) {
        Ok(client) => client,
        Err(error) => {
            return failed(RemoteClusterState::ConfigIncomplete(format!(
                "the kubeconfig in {access} cannot make a client: {}; fix it",
                super::error_chain(&error)
            )));
        }
    };
    match follow(&client, &REMOTE_KINDS, feed).await {
        Ended::Halted(halt) => Attempt::Halted(halt),
        Ended::Failed { error, was_in_sync } => Attempt::Failed {
            state: RemoteClusterState::ConnectionFailed(failure_reason(
                &error,
                &server_at(&connection.server),
            )),
            was_in_sync,
        },
    }
}
