//! `--datastore kubernetes`: the local cluster's API server, every kind fedwall reads, with
//! a remote connection per RemoteClusterConfiguration and the RCC status written by the
//! agent holding the status Lease.

use std::sync::Arc;

use super::connection::{Backoff, KubeContext};
use super::status::{Reports, write_status};
use super::sync::{Ended, Feed, Known, follow};
use super::{KubeRuntime, failure_reason, server_at};
use crate::datastore::remote::{Federating, RemoteClusters};
use crate::datastore::{Origin, UpdateSink};
use crate::model::resources::Kind;

/// Who this agent is, for the status Lease.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// This node's name: the Lease holder's identity.
    pub node: String,
    /// The agent's namespace, where the Lease lives.
    pub namespace: String,
}

/// The running local source; dropping it stops it and every remote connection.
#[derive(Debug)]
pub struct KubeSource {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl KubeSource {
    /// Starts following the API server `config` names; a failing server is retried (and
    /// logged), never an error here.
    pub fn spawn<S: UpdateSink + Clone>(
        runtime: &KubeRuntime,
        config: kube::Config,
        options: LocalOptions,
        sink: S,
    ) -> Result<KubeSource, kube::Error> {
        let handle = runtime.handle().clone();
        let server = config.cluster_url.to_string();
        // The client's middleware starts tasks: it is built inside the runtime.
        let client = {
            let _inside = handle.enter();
            kube::Client::try_from(config)?
        };
        let reports = Arc::new(Reports::default());
        let context = KubeContext {
            handle: handle.clone(),
            local: Some(client.clone()),
            reports: reports.clone(),
        };
        let federating = Federating::new(
            RemoteClusters::new("/", sink.clone()).with_kube(context),
            sink,
        );
        let feed = Feed::new(federating, Origin::Local, Known::new(), None);
        let tasks = vec![
            handle.spawn(follow_local(client.clone(), feed, server)),
            handle.spawn(write_status(
                client,
                options.namespace,
                options.node,
                reports,
            )),
        ];
        Ok(KubeSource { tasks })
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn follow_local<S: UpdateSink>(client: kube::Client, feed: Feed<S>, server: String) {
    let server = server_at(&server);
    let mut backoff = Backoff::new();
    loop {
        match follow(&client, &Kind::ALL, &feed).await {
            Ended::Halted(_) => return,
            Ended::Failed { error, was_in_sync } => {
                if was_in_sync {
                    backoff = Backoff::new();
                }
                tracing::error!(
                    reason = %failure_reason(&error, &server),
                    "cannot read this cluster's API server; what is known stays enforced, retrying"
                );
            }
        }
        backoff.wait().await;
    }
}
