//! The calc layer: pure and incremental. It takes datastore updates one at a time and keeps
//! the desired dataplane state up to date: IP sets (one per distinct canonical rule
//! selector, net list or named port; members are the addresses of matching local and
//! remote endpoints), each local endpoint's ordered rule tables, and the IP-pool table.
//! [`Calc::flush`] returns what changed since the last flush as [`Delta`]s in an order
//! that is safe to apply one by one.
//!
//! Only what this node enforces is computed: a set exists while a rule table of a local
//! endpoint references it. Work per update is proportional to what it can affect: the
//! label index finds the (selector, endpoint) pairs that flip, and only local endpoints
//! whose policies or peers' named ports changed are recompiled.

mod compile;
pub mod eval;
#[cfg(test)]
mod tests;
pub mod why;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

// foldhash rather than std's SipHash: seeded per process too, and several times faster on
// the short strings and addresses calc hashes (a tenth of taking 100,000 endpoints).
use foldhash::{HashMap, HashMapExt as _, HashSet};
use ipnet::IpNet;

use crate::dataplane::{Delta, EndpointName, IpSetId, LocalEndpoint, NatPool};
use crate::datastore::{Origin, RemoteClusterState, Update};
use crate::model::resources::{HostEndpoint, Kind, LabelMap, Pod, Resource, ResourceKey};
use crate::model::{Cluster, Endpoint, NamedPort, Policy, PolicyKey, endpoint, nat_pool, policy};
use crate::selector::index::{LabelIndex, MatchChange};
use crate::selector::{LabelSet, Selector};

/// What this calc instance computes for.
#[derive(Clone, Debug, Default)]
pub struct CalcConfig {
    /// This node's name: its endpoints are the ones enforced.
    pub node: String,
    /// This cluster's name, as the `fedwall.io/cluster` label of local endpoints.
    pub cluster_name: String,
}

/// An endpoint's identity inside calc: its calicoq-style name, unique across clusters.
type EpId = Arc<str>;

/// What an IP set holds, which is also what makes two rules share a set.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetKey {
    /// Addresses of endpoints matching the canonical selector.
    Selector(Arc<str>),
    /// A fixed list of CIDRs (sorted, no repeats).
    Nets(Arc<[IpNet]>),
    /// Addresses of endpoints whose port called `name` (for `protocol`) is `port`.
    NamedPort {
        name: Arc<str>,
        protocol: u8,
        port: u16,
    },
}

impl SetKey {
    fn named_port(np: &NamedPort) -> SetKey {
        SetKey::NamedPort {
            name: np.name.as_str().into(),
            protocol: np.protocol,
            port: np.port,
        }
    }
}

struct SetState {
    id: IpSetId,
    /// Rules (counted per local endpoint table) that reference the set.
    refs: usize,
    /// Member → how many endpoints contribute it (two endpoints may share an address).
    members: HashMap<IpNet, u32>,
}

/// A per-object problem: the object and what is wrong with it. The object is skipped
/// (or, for a policy that was valid before, keeps its last valid version).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub origin: Origin,
    pub object: String,
    pub message: String,
}

/// The named ports a local endpoint's rules expand through: (port name, protocol).
type NamedPortRef = (Arc<str>, u8);

#[derive(Default)]
pub struct Calc {
    config: CalcConfig,
    namespaces: HashMap<(Origin, String), LabelMap>,
    service_accounts: HashMap<(Origin, String, String), LabelMap>,
    pods_by_namespace: HashMap<(Origin, String), BTreeSet<String>>,
    /// Which endpoint each pod or host endpoint object produced.
    endpoint_of: HashMap<(Origin, ResourceKey), EpId>,
    /// Every endpoint, with its labels moved out into `rule_index` (which needs them
    /// anyway): at 100,000 endpoints a second copy costs ~100 MiB.
    endpoints: HashMap<EpId, Endpoint>,
    /// Rule selectors over every endpoint of every cluster.
    rule_index: LabelIndex<EpId, SetKey>,
    /// Policy selectors over this node's endpoints.
    policy_index: LabelIndex<EpId, PolicyKey>,
    policies: BTreeMap<PolicyKey, Policy>,
    sets: HashMap<SetKey, SetState>,
    free_set_ids: Vec<u32>,
    next_set_id: u32,
    /// Endpoints by (port name, protocol, port number), for named-port sets.
    /// Keyed by the `SetKey::NamedPort` of their set.
    named_port_members: HashMap<SetKey, BTreeSet<EpId>>,
    /// Local endpoints whose tables expand a peer-side named port, to recompile when the
    /// port numbers in use for that name change.
    named_port_readers: HashMap<NamedPortRef, BTreeSet<EpId>>,
    local: BTreeMap<EpId, compile::Compiled>,
    pools: BTreeMap<String, NatPool>,
    problems: BTreeMap<(Origin, String), Problem>,
    remote_states: BTreeMap<String, RemoteClusterState>,
    in_sync: BTreeSet<Origin>,

    dirty: BTreeSet<EpId>,
    created: Vec<IpSetId>,
    member_changes: BTreeMap<IpSetId, (BTreeSet<IpNet>, BTreeSet<IpNet>)>,
    pool_deltas: Vec<Delta>,
    scratch: Vec<MatchChange<EpId, SetKey>>,
}

impl Calc {
    pub fn new(config: CalcConfig) -> Self {
        Calc {
            config,
            ..Calc::default()
        }
    }

    /// Every endpoint of every cluster with its labels, in no particular order. Its `len()`
    /// counts them without looking at any.
    pub fn endpoints(&self) -> impl ExactSizeIterator<Item = (&Endpoint, &LabelSet)> {
        static NO_LABELS: LabelSet = LabelSet::EMPTY;
        self.endpoints.iter().map(|(id, ep)| {
            (
                ep,
                self.rule_index.endpoint_labels(id).unwrap_or(&NO_LABELS),
            )
        })
    }

    /// Objects that could not be used, by origin and object.
    pub fn problems(&self) -> impl ExactSizeIterator<Item = &Problem> {
        self.problems.values()
    }

    /// Remote clusters' connection states, by RemoteClusterConfiguration name.
    pub fn remote_states(&self) -> &BTreeMap<String, RemoteClusterState> {
        &self.remote_states
    }

    /// Whether every source has synced: the local one, and every remote cluster the
    /// local one names that is not failing (a failing remote is reported, not waited for).
    pub fn in_sync(&self) -> bool {
        self.unsynced().next().is_none()
    }

    /// Sources not in sync yet (failing remote clusters are not waited for).
    pub fn unsynced(&self) -> impl Iterator<Item = Origin> + '_ {
        let local = (!self.in_sync.contains(&Origin::Local)).then_some(Origin::Local);
        let remotes = self.remote_states.iter().filter_map(|(name, state)| {
            let origin = Origin::Remote(name.clone());
            (state.problem().is_none() && !self.in_sync.contains(&origin)).then_some(origin)
        });
        local.into_iter().chain(remotes)
    }

    /// The valid policies, by key.
    pub fn policies(&self) -> impl ExactSizeIterator<Item = &Policy> {
        self.policies.values()
    }

    /// Applies one datastore update.
    pub fn apply(&mut self, update: &Update) {
        match update {
            Update::Set { origin, resource } => self.set(origin, resource),
            Update::Delete { origin, key } => self.delete(origin, key),
            Update::InSync { origin } => {
                self.in_sync.insert(origin.clone());
            }
            Update::RemoteState { cluster, state } => {
                if *state == RemoteClusterState::Connecting {
                    self.in_sync.remove(&Origin::Remote(cluster.clone()));
                }
                self.remote_states.insert(cluster.clone(), state.clone());
            }
        }
    }

    fn set(&mut self, origin: &Origin, resource: &Resource) {
        let key = resource.key();
        if *origin != Origin::Local && !key.kind.is_federated() {
            // Policies and pools are never federated; the datastore filters them, this
            // keeps calc right on its own.
            return;
        }
        self.forget_problem(origin, &key);
        match resource {
            Resource::Pod(pod) => {
                let (ns, name) = (key.namespace.clone().unwrap_or_default(), key.name.clone());
                self.pods_by_namespace
                    .entry((origin.clone(), ns.clone()))
                    .or_default()
                    .insert(name.clone());
                self.refresh_pod(origin, &key, Some(pod));
            }
            Resource::Namespace(ns) => {
                self.namespaces.insert(
                    (origin.clone(), key.name.clone()),
                    ns.metadata.labels.clone(),
                );
                self.refresh_namespace(origin, &key.name);
            }
            Resource::ServiceAccount(sa) => {
                let ns = key.namespace.clone().unwrap_or_default();
                self.service_accounts.insert(
                    (origin.clone(), ns.clone(), key.name.clone()),
                    sa.metadata.labels.clone(),
                );
                self.refresh_namespace(origin, &ns);
            }
            Resource::HostEndpoint(hep) => self.refresh_host_endpoint(origin, &key, Some(hep)),
            Resource::NetworkPolicy(p) => {
                self.set_policy(origin, &key, policy::from_network_policy(p))
            }
            Resource::GlobalNetworkPolicy(p) => {
                self.set_policy(origin, &key, policy::from_global_network_policy(p))
            }
            Resource::K8sNetworkPolicy(p) => {
                self.set_policy(origin, &key, policy::from_k8s_network_policy(p))
            }
            Resource::IpPool(pool) => match nat_pool(pool) {
                Ok(nat) => {
                    if let Some(old) = self.pools.insert(key.name.clone(), nat)
                        && old.cidr != nat.cidr
                    {
                        self.pool_deltas.push(Delta::PoolDeleted { cidr: old.cidr });
                    }
                    self.pool_deltas.push(Delta::PoolSet(nat));
                }
                Err(e) => self.problem(origin, &key, e.to_string()),
            },
            Resource::RemoteClusterConfiguration(_) => {
                // Known from now on, so being in sync waits for it until its source
                // reports (a state it already reported stays).
                self.remote_states
                    .entry(key.name.clone())
                    .or_insert(RemoteClusterState::Connecting);
            }
            Resource::Node(_) => {}
        }
    }

    fn delete(&mut self, origin: &Origin, key: &ResourceKey) {
        self.forget_problem(origin, key);
        let ns = key.namespace.clone().unwrap_or_default();
        match key.kind {
            Kind::Pod => {
                if let Some(names) = self.pods_by_namespace.get_mut(&(origin.clone(), ns)) {
                    names.remove(&key.name);
                }
                self.refresh_pod(origin, key, None);
            }
            Kind::Namespace => {
                self.namespaces.remove(&(origin.clone(), key.name.clone()));
                self.refresh_namespace(origin, &key.name);
            }
            Kind::ServiceAccount => {
                self.service_accounts
                    .remove(&(origin.clone(), ns.clone(), key.name.clone()));
                self.refresh_namespace(origin, &ns);
            }
            Kind::HostEndpoint => self.refresh_host_endpoint(origin, key, None),
            Kind::NetworkPolicy | Kind::GlobalNetworkPolicy | Kind::K8sNetworkPolicy => {
                if *origin == Origin::Local {
                    self.remove_policy(&policy_key(key));
                }
            }
            Kind::IpPool => {
                if *origin == Origin::Local
                    && let Some(old) = self.pools.remove(&key.name)
                {
                    self.pool_deltas.push(Delta::PoolDeleted { cidr: old.cidr });
                }
            }
            Kind::RemoteClusterConfiguration => {
                if *origin == Origin::Local {
                    self.remote_states.remove(&key.name);
                    self.in_sync.remove(&Origin::Remote(key.name.clone()));
                }
            }
            Kind::Node => {}
        }
    }

    /// The object changed: what was wrong with it may be no more. Most updates are of
    /// objects without problems: no key is formatted for them.
    fn forget_problem(&mut self, origin: &Origin, key: &ResourceKey) {
        if !self.problems.is_empty() {
            self.problems.remove(&(origin.clone(), key.to_string()));
        }
    }

    fn problem(&mut self, origin: &Origin, key: &ResourceKey, message: String) {
        tracing::warn!(%origin, object = %key, "{message}");
        self.problems.insert(
            (origin.clone(), key.to_string()),
            Problem {
                origin: origin.clone(),
                object: key.to_string(),
                message,
            },
        );
    }

    fn cluster(&self, origin: &Origin) -> Cluster {
        match origin {
            Origin::Local => Cluster::Local(self.config.cluster_name.clone()),
            Origin::Remote(name) => Cluster::Remote(name.clone()),
        }
    }

    /// A namespace or one of its service accounts changed: its endpoints' `pcns.`/`pcsa.`
    /// labels follow. Endpoints are rebuilt from what calc keeps of them (pods are not
    /// kept whole: at 100,000 endpoints that would cost ~100 MiB).
    fn refresh_namespace(&mut self, origin: &Origin, namespace: &str) {
        let names: Vec<String> = self
            .pods_by_namespace
            .get(&(origin.clone(), namespace.to_owned()))
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default();
        let ns_labels = self
            .namespaces
            .get(&(origin.clone(), namespace.to_owned()))
            .cloned();
        for name in names {
            let key = ResourceKey {
                kind: Kind::Pod,
                namespace: Some(namespace.to_owned()),
                name,
            };
            let Some(id) = self
                .endpoint_of
                .get(&(origin.clone(), key.clone()))
                .cloned()
            else {
                continue;
            };
            let Some(stored) = self.endpoints.get(&id) else {
                continue;
            };
            let mut labels = self
                .rule_index
                .endpoint_labels(&id)
                .map(LabelSet::to_map)
                .unwrap_or_default();
            let sa = labels
                .get(endpoint::LABEL_SERVICE_ACCOUNT)
                .cloned()
                .unwrap_or_default();
            let sa_labels = self
                .service_accounts
                .get(&(origin.clone(), namespace.to_owned(), sa));
            endpoint::apply_namespace_labels(&mut labels, ns_labels.as_ref(), sa_labels);
            let updated = Endpoint {
                labels,
                ..stored.clone()
            };
            self.replace_endpoint(origin, &key, Some(updated));
        }
    }

    fn refresh_pod(&mut self, origin: &Origin, key: &ResourceKey, pod: Option<&Pod>) {
        let ns = key.namespace.clone().unwrap_or_default();
        let endpoint = match pod {
            None => Ok(None),
            Some(pod) => {
                let sa = pod
                    .spec
                    .service_account_name
                    .as_deref()
                    .unwrap_or("default");
                let ns_labels = self.namespaces.get(&(origin.clone(), ns.clone()));
                let sa_labels =
                    self.service_accounts
                        .get(&(origin.clone(), ns.clone(), sa.to_owned()));
                endpoint::workload_endpoint(&self.cluster(origin), pod, ns_labels, sa_labels)
            }
        };
        match endpoint {
            Ok(endpoint) => self.replace_endpoint(origin, key, endpoint),
            Err(e) => {
                self.problem(origin, key, e.to_string());
                self.replace_endpoint(origin, key, None);
            }
        }
    }

    fn refresh_host_endpoint(
        &mut self,
        origin: &Origin,
        key: &ResourceKey,
        hep: Option<&HostEndpoint>,
    ) {
        match hep.map(|hep| endpoint::host_endpoint(&self.cluster(origin), hep)) {
            None => self.replace_endpoint(origin, key, None),
            Some(Ok(ep)) => self.replace_endpoint(origin, key, Some(ep)),
            Some(Err(e)) => {
                self.problem(origin, key, e.to_string());
                self.replace_endpoint(origin, key, None);
            }
        }
    }

    fn is_local(&self, endpoint: &Endpoint) -> bool {
        endpoint.cluster.is_local() && endpoint.node == self.config.node
    }

    /// Makes `new` the endpoint of object `key` (or removes it), updating set members,
    /// named ports and which local endpoints need new tables.
    fn replace_endpoint(&mut self, origin: &Origin, key: &ResourceKey, new: Option<Endpoint>) {
        let object = (origin.clone(), key.clone());
        let old_id = self.endpoint_of.get(&object).cloned();
        let new_id: Option<EpId> = new.as_ref().map(|ep| ep.name.as_str().into());
        // An object whose endpoint name changed (a pod moved node) is a remove plus an add.
        if let Some(old_id) = &old_id
            && new_id.as_ref() != Some(old_id)
        {
            self.endpoint_of.remove(&object);
            self.update_endpoint(old_id.clone(), None);
        }
        if let (Some(id), Some(ep)) = (new_id, new) {
            self.endpoint_of.insert(object, id.clone());
            self.update_endpoint(id, Some(ep));
        }
    }

    fn update_endpoint(&mut self, id: EpId, new: Option<Endpoint>) {
        // Split the new endpoint: its labels go to the index, the rest is stored.
        let (new, new_labels) = match new {
            Some(mut ep) => {
                let labels = std::mem::take(&mut ep.labels);
                (Some(ep), Some(labels))
            }
            None => (None, None),
        };
        let old = self.endpoints.remove(&id);
        let same_labels = match (self.rule_index.endpoint_labels(&id), &new_labels) {
            (Some(old), Some(new)) => old.equals_map(new),
            (old, new) => old.is_none() && new.is_none(),
        };
        if old == new && same_labels {
            if let Some(old) = old {
                self.endpoints.insert(id, old);
            }
            return;
        }
        if let Some(ep) = &new {
            self.endpoints.insert(id.clone(), ep.clone());
        }
        let old_addrs = old.as_ref().map(|ep| ep.addrs.clone()).unwrap_or_default();
        let new_addrs = new.as_ref().map(|ep| ep.addrs.clone()).unwrap_or_default();
        let addrs_changed = old_addrs != new_addrs;

        // Selector sets.
        let mut changes = std::mem::take(&mut self.scratch);
        if addrs_changed {
            let before: Vec<SetKey> = self.rule_index.selectors_matching(&id).cloned().collect();
            for set in &before {
                self.remove_members(set, &old_addrs);
            }
        }
        let local_labels = match (&new, &new_labels) {
            (Some(ep), Some(labels)) if self.is_local(ep) => Some(labels.clone()),
            _ => None,
        };
        match new_labels {
            Some(labels) => self
                .rule_index
                .update_endpoint(id.clone(), labels, &mut changes),
            None => self.rule_index.remove_endpoint(&id, &mut changes),
        }
        for change in changes.drain(..) {
            match change {
                MatchChange::Started { selector, .. } if !addrs_changed => {
                    self.add_members(&selector, &new_addrs)
                }
                MatchChange::Stopped { selector, .. } if !addrs_changed => {
                    self.remove_members(&selector, &old_addrs)
                }
                _ => {}
            }
        }
        self.scratch = changes;
        if addrs_changed {
            let after: Vec<SetKey> = self.rule_index.selectors_matching(&id).cloned().collect();
            for set in &after {
                self.add_members(set, &new_addrs);
            }
        }

        // Named-port sets.
        let old_ports = old
            .as_ref()
            .map(|ep| ep.named_ports.clone())
            .unwrap_or_default();
        let new_ports = new
            .as_ref()
            .map(|ep| ep.named_ports.clone())
            .unwrap_or_default();
        if addrs_changed || old_ports != new_ports {
            for np in &old_ports {
                let set = SetKey::named_port(np);
                self.remove_members(&set, &old_addrs);
                if let Some(members) = self.named_port_members.get_mut(&set) {
                    members.remove(&id);
                    if members.is_empty() {
                        self.named_port_members.remove(&set);
                        self.named_port_numbers_changed(&np.name, np.protocol);
                    }
                }
            }
            for np in &new_ports {
                let set = SetKey::named_port(np);
                self.add_members(&set, &new_addrs);
                let members = self.named_port_members.entry(set).or_default();
                let first = members.is_empty();
                members.insert(id.clone());
                if first {
                    self.named_port_numbers_changed(&np.name, np.protocol);
                }
            }
        }

        // Local endpoints: which policies apply, and their tables.
        let was_local = old.as_ref().is_some_and(|ep| self.is_local(ep));
        let is_local = new.as_ref().is_some_and(|ep| self.is_local(ep));
        if was_local || is_local {
            let mut policy_changes = Vec::new();
            match local_labels {
                Some(labels) => {
                    self.policy_index
                        .update_endpoint(id.clone(), labels, &mut policy_changes)
                }
                None => self.policy_index.remove_endpoint(&id, &mut policy_changes),
            }
            self.dirty.insert(id);
        }
    }

    fn named_port_numbers_changed(&mut self, name: &str, protocol: u8) {
        if let Some(readers) = self.named_port_readers.get(&(Arc::from(name), protocol)) {
            self.dirty.extend(readers.iter().cloned());
        }
    }

    /// The port numbers some endpoint calls `name` for `protocol`, in order.
    fn named_port_numbers(&self, name: &str, protocol: u8) -> Vec<u16> {
        let mut numbers: Vec<u16> = self
            .named_port_members
            .keys()
            .filter_map(|key| match key {
                SetKey::NamedPort {
                    name: n,
                    protocol: p,
                    port,
                } if &**n == name && *p == protocol => Some(*port),
                _ => None,
            })
            .collect();
        numbers.sort_unstable();
        numbers
    }

    fn set_policy(
        &mut self,
        origin: &Origin,
        key: &ResourceKey,
        converted: Result<Policy, crate::model::PolicyError>,
    ) {
        if *origin != Origin::Local {
            return;
        }
        match converted {
            Ok(policy) => {
                let mut changes = Vec::new();
                self.policy_index.update_selector(
                    policy.key.clone(),
                    policy.selector.clone(),
                    &mut changes,
                );
                self.mark_policy_endpoints(&policy.key, &changes);
                self.policies.insert(policy.key.clone(), policy);
            }
            Err(e) => {
                let kept = self.policies.contains_key(&e.policy);
                let mut message = e.to_string();
                if kept {
                    message.push_str(" (its last valid version stays enforced)");
                }
                self.problem(origin, key, message);
            }
        }
    }

    fn remove_policy(&mut self, key: &PolicyKey) {
        let mut changes = Vec::new();
        self.mark_policy_endpoints(key, &[]);
        self.policy_index.remove_selector(key, &mut changes);
        self.policies.remove(key);
    }

    fn mark_policy_endpoints(&mut self, key: &PolicyKey, changes: &[MatchChange<EpId, PolicyKey>]) {
        let current: Vec<EpId> = self.policy_index.matching(key).cloned().collect();
        self.dirty.extend(current);
        for change in changes {
            let (MatchChange::Started { endpoint, .. } | MatchChange::Stopped { endpoint, .. }) =
                change;
            self.dirty.insert(endpoint.clone());
        }
    }

    // ------------------------------------------------------------------------- sets

    fn add_members(&mut self, set: &SetKey, addrs: &[std::net::IpAddr]) {
        let Some(state) = self.sets.get_mut(set) else {
            return;
        };
        for addr in addrs {
            let net = IpNet::from(*addr);
            let count = state.members.entry(net).or_insert(0);
            *count += 1;
            if *count == 1 {
                let (added, removed) = self.member_changes.entry(state.id).or_default();
                if !removed.remove(&net) {
                    added.insert(net);
                }
            }
        }
    }

    fn remove_members(&mut self, set: &SetKey, addrs: &[std::net::IpAddr]) {
        let Some(state) = self.sets.get_mut(set) else {
            return;
        };
        for addr in addrs {
            let net = IpNet::from(*addr);
            let Some(count) = state.members.get_mut(&net) else {
                continue;
            };
            *count -= 1;
            if *count == 0 {
                state.members.remove(&net);
                let (added, removed) = self.member_changes.entry(state.id).or_default();
                if !added.remove(&net) {
                    removed.insert(net);
                }
            }
        }
    }

    /// Takes a reference to the set `key`, creating and filling it on first use.
    fn acquire_set(&mut self, key: &SetKey) -> IpSetId {
        if let Some(state) = self.sets.get_mut(key) {
            state.refs += 1;
            return state.id;
        }
        let id = IpSetId(self.free_set_ids.pop().unwrap_or_else(|| {
            self.next_set_id += 1;
            self.next_set_id - 1
        }));
        self.created.push(id);
        let mut members: HashMap<IpNet, u32> = HashMap::new();
        let mut add = |addrs: &[std::net::IpAddr]| {
            for addr in addrs {
                *members.entry(IpNet::from(*addr)).or_insert(0) += 1;
            }
        };
        match key {
            SetKey::Selector(text) => {
                let selector = Selector::parse(text).unwrap_or_default();
                let mut changes = std::mem::take(&mut self.scratch);
                self.rule_index
                    .update_selector(key.clone(), selector, &mut changes);
                for change in changes.drain(..) {
                    if let MatchChange::Started { endpoint, .. } = change
                        && let Some(ep) = self.endpoints.get(&endpoint)
                    {
                        add(&ep.addrs);
                    }
                }
                self.scratch = changes;
            }
            SetKey::Nets(nets) => {
                for net in nets.iter() {
                    members.insert(*net, 1);
                }
            }
            SetKey::NamedPort { .. } => {
                for ep in self.named_port_members.get(key).into_iter().flatten() {
                    if let Some(ep) = self.endpoints.get(ep) {
                        add(&ep.addrs);
                    }
                }
            }
        }
        let added: BTreeSet<IpNet> = members.keys().copied().collect();
        self.member_changes.insert(id, (added, BTreeSet::new()));
        self.sets.insert(
            key.clone(),
            SetState {
                id,
                refs: 1,
                members,
            },
        );
        id
    }

    /// Drops a reference; returns the id of a set that is now unused (and forgotten).
    fn release_set(&mut self, key: &SetKey) -> Option<IpSetId> {
        let state = self.sets.get_mut(key)?;
        state.refs -= 1;
        if state.refs > 0 {
            return None;
        }
        let id = state.id;
        self.sets.remove(key);
        if matches!(key, SetKey::Selector(_)) {
            let mut changes = std::mem::take(&mut self.scratch);
            self.rule_index.remove_selector(key, &mut changes);
            changes.clear();
            self.scratch = changes;
        }
        self.member_changes.remove(&id);
        Some(id)
    }

    /// Everything that changed since the last flush, in a safe order: new sets (filled),
    /// member changes, endpoints, then sets no longer used, and pools.
    pub fn flush(&mut self) -> Vec<Delta> {
        let mut endpoint_deltas = Vec::new();
        let mut released = Vec::new();
        for id in std::mem::take(&mut self.dirty) {
            let local = self
                .endpoints
                .get(&id)
                .filter(|ep| self.is_local(ep))
                .cloned();
            let old = self.local.remove(&id);
            let new = local.map(|ep| {
                let applying: Vec<PolicyKey> =
                    self.policy_index.selectors_matching(&id).cloned().collect();
                compile::compile(self, &ep, &applying)
            });
            // Take the new references before dropping the old, so a set used by both
            // stays alive (and keeps its id) across the swap.
            if let Some(new) = &new {
                for np in &new.named_port_reads {
                    self.named_port_readers
                        .entry(np.clone())
                        .or_default()
                        .insert(id.clone());
                }
            }
            if let Some(old) = &old {
                for key in &old.sets {
                    released.extend(self.release_set(key));
                }
                for np in &old.named_port_reads {
                    if let Some(readers) = self.named_port_readers.get_mut(np) {
                        readers.remove(&id);
                    }
                }
            }
            match (old, new) {
                (Some(old), Some(new)) if old.endpoint == new.endpoint => {
                    self.local.insert(id, new);
                }
                (_, Some(new)) => {
                    endpoint_deltas.push(Delta::EndpointSet(new.endpoint.clone()));
                    self.local.insert(id, new);
                }
                (Some(_), None) => endpoint_deltas.push(Delta::EndpointDeleted {
                    name: EndpointName(id.to_string()),
                }),
                (None, None) => {}
            }
        }
        // A set made and dropped within one flush never reaches the dataplane.
        let created: HashSet<IpSetId> = std::mem::take(&mut self.created).into_iter().collect();
        let mut deltas: Vec<Delta> = created
            .iter()
            .filter(|id| !released.contains(id))
            .map(|&id| Delta::IpSetCreated { id })
            .collect();
        deltas.sort_by_key(|d| match d {
            Delta::IpSetCreated { id } => *id,
            _ => IpSetId(0),
        });
        for (id, (added, removed)) in std::mem::take(&mut self.member_changes) {
            if !added.is_empty() || !removed.is_empty() {
                deltas.push(Delta::IpSetMembers { id, added, removed });
            }
        }
        deltas.extend(endpoint_deltas);
        for id in released {
            if !created.contains(&id) {
                deltas.push(Delta::IpSetDeleted { id });
            }
            self.free_set_ids.push(id.0);
        }
        deltas.append(&mut self.pool_deltas);
        deltas
    }

    /// Whether `addr` is a member of set `id` (a member CIDR containing it counts), as the
    /// dataplane was told.
    pub fn set_contains(&self, id: IpSetId, addr: std::net::IpAddr) -> bool {
        self.sets
            .values()
            .find(|set| set.id == id)
            .is_some_and(|set| set.members.keys().any(|net| net.contains(&addr)))
    }

    /// The local endpoints' current desired state.
    pub fn local_endpoints(&self) -> impl ExactSizeIterator<Item = &LocalEndpoint> {
        self.local.values().map(|c| &c.endpoint)
    }
}

fn policy_key(key: &ResourceKey) -> PolicyKey {
    use crate::model::PolicyKind;
    PolicyKey {
        kind: match key.kind {
            Kind::GlobalNetworkPolicy => PolicyKind::Global,
            Kind::K8sNetworkPolicy => PolicyKind::Kubernetes,
            _ => PolicyKind::Namespaced,
        },
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    }
}
