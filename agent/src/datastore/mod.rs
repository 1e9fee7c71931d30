//! The datastore layer: turns sources (a directory of YAML manifests, Kubernetes API
//! servers) into typed [`Update`]s tagged with the cluster they came from. Remote clusters
//! are sources too, one per RemoteClusterConfiguration, each with its own connection state.
//! No policy logic lives here.

use std::fmt;
use std::sync::mpsc;

use crate::model::resources::{Resource, ResourceKey};

pub mod file;
pub mod kube;
pub mod manifest;
pub mod remote;
mod watch;

pub use file::{DirSnapshot, FileDatastoreError, LoadedObject, Location, Problem, read_dir};
pub use remote::{
    FederatedFileSource, FederatedSnapshot, RemoteClusters, RemoteSnapshot, RemoteTarget,
    read_federated,
};
pub use watch::FileSource;

/// Which cluster an update describes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// This agent's own cluster.
    Local,
    /// A remote cluster, by the name of its RemoteClusterConfiguration.
    Remote(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Local => f.write_str("local cluster"),
            Origin::Remote(name) => write!(f, "RemoteClusterConfiguration({name})"),
        }
    }
}

/// The connection state of one remote cluster, as its RCC status and `fedwall eval` report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteClusterState {
    Connecting,
    ResyncInProgress,
    InSync,
    /// The remote cluster could not be read; the reason says what and how to fix it.
    ConnectionFailed(String),
    /// The RemoteClusterConfiguration lacks what is needed to connect.
    ConfigIncomplete(String),
}

impl RemoteClusterState {
    pub const fn name(&self) -> &'static str {
        match self {
            RemoteClusterState::Connecting => "Connecting",
            RemoteClusterState::ResyncInProgress => "ResyncInProgress",
            RemoteClusterState::InSync => "InSync",
            RemoteClusterState::ConnectionFailed(_) => "ConnectionFailed",
            RemoteClusterState::ConfigIncomplete(_) => "ConfigIncomplete",
        }
    }

    /// Why the cluster's data may be incomplete, if it may be.
    pub fn problem(&self) -> Option<&str> {
        match self {
            RemoteClusterState::ConnectionFailed(reason)
            | RemoteClusterState::ConfigIncomplete(reason) => Some(reason),
            _ => None,
        }
    }
}

impl fmt::Display for RemoteClusterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problem() {
            Some(reason) => write!(f, "{}: {reason}", self.name()),
            None => f.write_str(self.name()),
        }
    }
}

/// One change from a source.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// An object appeared or changed.
    Set { origin: Origin, resource: Resource },
    /// An object is gone.
    Delete { origin: Origin, key: ResourceKey },
    /// The source has sent everything it had at start (and, after a reconnection, every
    /// change that happened meanwhile).
    InSync { origin: Origin },
    /// A remote cluster's connection state changed.
    RemoteState {
        cluster: String,
        state: RemoteClusterState,
    },
}

/// Where a source delivers its updates: a channel today, a tokio channel once the agent
/// runs on tokio (implement this for its sender).
pub trait UpdateSink: Send + 'static {
    /// Delivers one update; an error means the receiver is gone and the source should stop.
    fn send(&mut self, update: Update) -> Result<(), SinkClosed>;
}

/// The receiver of a source's updates is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the receiver of datastore updates is gone")]
pub struct SinkClosed;

impl UpdateSink for mpsc::Sender<Update> {
    fn send(&mut self, update: Update) -> Result<(), SinkClosed> {
        mpsc::Sender::send(self, update).map_err(|_| SinkClosed)
    }
}

#[cfg(test)]
mod testdir;
