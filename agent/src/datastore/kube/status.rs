//! RemoteClusterConfiguration status: every agent knows how it sees each remote cluster
//! ([`Reports`]); one of them at a time — the holder of the Lease `fedwall-rcc-status` in
//! the agent's namespace — writes it to the RCCs' status, so that a thousand nodes do not
//! write the same object.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::core::DynamicObject;

use super::{LOCAL_SERVER, api_resource, failure_reason};
use crate::datastore::RemoteClusterState;
use crate::model::resources::{Kind, RemoteClusterStatus};

/// The Lease whose holder writes RCC status.
pub const STATUS_LEASE: &str = "fedwall-rcc-status";
/// How long a holder that stopped renewing keeps the Lease.
const LEASE_SECONDS: i32 = 15;
/// How often the Lease is renewed and changed status written.
const STATUS_INTERVAL: Duration = Duration::from_secs(3);

/// How this agent sees each remote cluster, by RCC name.
#[derive(Debug, Default)]
pub struct Reports {
    clusters: Mutex<BTreeMap<String, RemoteClusterStatus>>,
}

impl Reports {
    fn update(&self, cluster: &str, change: impl FnOnce(&mut RemoteClusterStatus)) {
        let mut clusters = self.clusters.lock().unwrap_or_else(|p| p.into_inner());
        change(clusters.entry(cluster.to_owned()).or_default());
    }

    pub(crate) fn set_state(&self, cluster: &str, state: &RemoteClusterState) {
        self.update(cluster, |status| {
            status.state = state.name().to_owned();
            status.message = state.problem().unwrap_or_default().to_owned();
        });
    }

    pub(crate) fn set_endpoints(&self, cluster: &str, endpoints: u64) {
        self.update(cluster, |status| status.endpoints = endpoints);
    }

    /// The cluster is in sync now.
    pub(crate) fn synced(&self, cluster: &str) {
        self.set_state(cluster, &RemoteClusterState::InSync);
        self.update(cluster, |status| {
            status.last_sync_time = Some(now().to_string());
        });
    }

    /// The cluster's RCC is gone: nothing to report.
    pub(crate) fn remove(&self, cluster: &str) {
        let mut clusters = self.clusters.lock().unwrap_or_else(|p| p.into_inner());
        clusters.remove(cluster);
    }

    fn snapshot(&self) -> BTreeMap<String, RemoteClusterStatus> {
        self.clusters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn now() -> Timestamp {
    // Whole seconds: RFC 3339 without a fraction reads best in `kubectl get`.
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now())
}

/// Holds the Lease when it is free (or its holder stopped renewing it) and, while holding
/// it, writes each RCC's status when this agent's view of it changed. Runs until aborted.
pub(crate) async fn write_status(
    client: kube::Client,
    namespace: String,
    node: String,
    reports: std::sync::Arc<Reports>,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let rccs: Api<DynamicObject> =
        Api::all_with(client, &api_resource(Kind::RemoteClusterConfiguration));
    let mut written: BTreeMap<String, RemoteClusterStatus> = BTreeMap::new();
    let mut holding = false;
    let mut ticker = tokio::time::interval(STATUS_INTERVAL);
    loop {
        ticker.tick().await;
        let held = match hold_lease(&leases, &node).await {
            Ok(held) => held,
            Err(error) => {
                tracing::warn!(
                    lease = %format!("{namespace}/{STATUS_LEASE}"),
                    reason = %failure_reason(&error, LOCAL_SERVER),
                    "cannot take or renew the RCC status Lease; another agent may write status"
                );
                false
            }
        };
        if held != holding {
            holding = held;
            written.clear();
            tracing::info!(holding, lease = %format!("{namespace}/{STATUS_LEASE}"), "RCC status Lease");
        }
        if !holding {
            continue;
        }
        for (cluster, mut status) in reports.snapshot() {
            status.reporter = Some(node.clone());
            if written.get(&cluster) == Some(&status) {
                continue;
            }
            let patch = Patch::Merge(serde_json::json!({ "status": status }));
            match rccs
                .patch_status(&cluster, &PatchParams::default(), &patch)
                .await
            {
                Ok(_) => {
                    written.insert(cluster, status);
                }
                // The RCC was deleted meanwhile: its report goes with it.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(error) => tracing::warn!(
                    rcc = %cluster,
                    reason = %failure_reason(&error, LOCAL_SERVER),
                    "cannot write the RemoteClusterConfiguration's status"
                ),
            }
        }
    }
}

/// Takes or renews the Lease; `false` when another agent holds it. A conflict (someone
/// else wrote it between our read and write) is a lost race, not an error.
async fn hold_lease(leases: &Api<Lease>, node: &str) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let mine = |lease: Option<Lease>| {
        let mut lease = lease.unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(STATUS_LEASE.into()),
                ..ObjectMeta::default()
            },
            ..Lease::default()
        });
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(node) {
            spec.holder_identity = Some(node.to_owned());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(LEASE_SECONDS);
        spec.renew_time = Some(now.clone());
        lease
    };
    let result = match leases.get_opt(STATUS_LEASE).await? {
        None => leases.create(&PostParams::default(), &mine(None)).await,
        Some(lease) if held_by_other(&lease, node) => return Ok(false),
        // The resourceVersion read is sent back: a concurrent writer makes this a 409.
        Some(lease) => {
            leases
                .replace(STATUS_LEASE, &PostParams::default(), &mine(Some(lease)))
                .await
        }
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Whether another holder renewed the Lease within its duration.
fn held_by_other(lease: &Lease, node: &str) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    let (Some(holder), Some(renewed)) = (&spec.holder_identity, &spec.renew_time) else {
        return false;
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
    holder != node && renewed.0.as_second() + duration > Timestamp::now().as_second()
}
