//! The `kubernetes` datastore: kube-rs watchers on the local API server (every kind fedwall
//! reads) and on each remote cluster a RemoteClusterConfiguration names (the federated
//! kinds), turned into the same [`Update`](crate::datastore::Update)s the file datastore
//! sends. Objects are converted to fedwall's own types as they arrive (only the fields
//! fedwall uses are kept); what a source remembers of each is its key and a digest.
//!
//! Every connection runs on one tokio runtime ([`KubeRuntime`]); updates reach the agent's
//! synchronous channel from inside `block_in_place`, so a full channel holds the watchers
//! back instead of queueing without bound.

mod access;
mod connection;
mod local;
mod status;
mod sync;

use kube::core::{ApiResource, DynamicObject, GroupVersionKind};

use crate::model::resources::{Kind, Resource, ResourceError};

pub use access::{
    Connection, KubeAccess, connection as connect_config, read_path as read_kubeconfig,
};
pub use connection::KubeContext;
pub(crate) use connection::KubeRemote;
pub use local::{KubeSource, LocalOptions};
pub use status::{Reports, STATUS_LEASE};
pub(crate) use sync::Known;

/// The runtime the agent's Kubernetes connections run on. Owned by the command that starts
/// them (it must not be dropped from inside an async task); sources hold its handle.
pub struct KubeRuntime(tokio::runtime::Runtime);

impl KubeRuntime {
    /// Two worker threads: one can wait on the agent's channel while the other keeps the
    /// connections' timers and TLS going.
    pub fn new() -> std::io::Result<KubeRuntime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fedwall-kube")
            .enable_all()
            .build()
            .map(KubeRuntime)
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.0.handle()
    }

    /// Stops every connection without waiting for them to finish a request.
    pub fn shutdown(self) {
        self.0.shutdown_background();
    }
}

/// The REST resource of a kind (its group, version and plural), for a dynamic API.
pub(crate) fn api_resource(kind: Kind) -> ApiResource {
    let (api_version, kind_name) = kind.type_meta();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind_name),
        plural(kind),
    )
}

/// The resource name of a kind in API paths and RBAC rules.
pub const fn plural(kind: Kind) -> &'static str {
    match kind {
        Kind::Pod => "pods",
        Kind::Namespace => "namespaces",
        Kind::ServiceAccount => "serviceaccounts",
        Kind::Node => "nodes",
        Kind::K8sNetworkPolicy | Kind::NetworkPolicy => "networkpolicies",
        Kind::GlobalNetworkPolicy => "globalnetworkpolicies",
        Kind::HostEndpoint => "hostendpoints",
        Kind::IpPool => "ippools",
        Kind::RemoteClusterConfiguration => "remoteclusterconfigurations",
    }
}

/// Converts an object an API server sent into fedwall's type for its kind.
fn resource_of(kind: Kind, object: &DynamicObject) -> Result<Resource, ResourceError> {
    let value = serde_json::to_value(object).map_err(|e| ResourceError::Shape {
        kind,
        message: e.to_string(),
    })?;
    Resource::from_json(kind, value)
}

/// The kinds a remote cluster is read for: what its `fedwall-remote-reader` ClusterRole
/// grants (deploy/remote-access.yaml). A remote cluster need not have fedwall installed,
/// so its HostEndpoints are not read.
pub const REMOTE_KINDS: [Kind; 4] = [Kind::Pod, Kind::Namespace, Kind::ServiceAccount, Kind::Node];

/// How messages name this cluster's API server where its URL is not at hand.
const LOCAL_SERVER: &str = "this cluster's API server";

/// How messages name the API server at `url`.
fn server_at(url: &str) -> String {
    format!("the API server at {}", url.trim_end_matches('/'))
}

/// Says why a request to `server` (how the message names it) failed, and the fix; never
/// echoes credentials (the API server's messages name the user and the resource, not the
/// token).
pub(crate) fn failure_reason(error: &kube::Error, server: &str) -> String {
    match error {
        kube::Error::Api(status) if status.code == 401 => format!(
            "unauthorized: {server} rejected the credentials (401); the \
             token is wrong, expired or of another cluster: create a new token and update \
             the kubeconfig"
        ),
        kube::Error::Api(status) if status.code == 403 => format!(
            "forbidden: {} ({server}); grant it with a Role or ClusterRole \
             (deploy/agent.yaml for this cluster, deploy/remote-access.yaml for a remote one)",
            status.message
        ),
        kube::Error::Api(status) if status.code == 404 => format!(
            "not found: {} ({server}); if it names a fedwall.io resource, install \
             the CRDs: kubectl apply -f deploy/crds.yaml",
            status.message
        ),
        kube::Error::Api(status) => format!(
            "{server} answered {} {}: {}",
            status.code, status.reason, status.message
        ),
        other => format!("cannot reach {server}: {}", error_chain(other)),
    }
}

/// An error and its sources, joined: a connection error's cause (refused, TLS, DNS) is
/// usually only in its sources.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}
