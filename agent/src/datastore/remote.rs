//! Remote clusters named by the local cluster's RemoteClusterConfigurations: which
//! directory or API server each one reads, one source per cluster with its own connection
//! state, and a one-shot read of the directories for `fedwall eval`.
//! A remote cluster contributes only endpoint data (the federated kinds).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::datastore::file::{DirSnapshot, FileDatastoreError, read_dir};
use crate::datastore::kube::{Known, KubeAccess, KubeContext, KubeRemote};
use crate::datastore::watch::{FileSource, Objects};
use crate::datastore::{Origin, RemoteClusterState, SinkClosed, Update, UpdateSink};
use crate::model::resources::{
    Kind, RemoteClusterConfiguration, RemoteClusterSpec, Resource, ResourceKey,
};

/// Where a RemoteClusterConfiguration says its cluster's data is, or why it cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteTarget {
    /// `datastoreType: file`: a manifest directory.
    Directory(PathBuf),
    /// `datastoreType: kubernetes`: an API server, through a kubeconfig.
    Kubernetes {
        access: KubeAccess,
        /// `staleDataTTL`: how long an unreachable cluster's endpoints are kept.
        stale_ttl: Option<Duration>,
    },
    /// Nothing to connect to; the state says why.
    Unavailable(RemoteClusterState),
}

impl RemoteTarget {
    /// Reads an RCC's spec; a relative `path` or `kubeconfig` is relative to `base_dir`,
    /// the directory of the local manifests holding the RCC.
    pub fn of(spec: &RemoteClusterSpec, base_dir: &Path) -> RemoteTarget {
        let incomplete = |reason: String| {
            RemoteTarget::Unavailable(RemoteClusterState::ConfigIncomplete(reason))
        };
        match spec.datastore_type.as_deref().unwrap_or("kubernetes") {
            "file" => match spec.path.as_deref().filter(|path| !path.is_empty()) {
                Some(path) => RemoteTarget::Directory(base_dir.join(path)),
                None => incomplete(
                    "datastoreType file needs spec.path, the directory of the remote cluster's \
                     manifests; set it"
                        .into(),
                ),
            },
            "kubernetes" => match (kube_access(spec, base_dir), stale_ttl(spec)) {
                (Ok(access), Ok(stale_ttl)) => RemoteTarget::Kubernetes { access, stale_ttl },
                (Err(reason), _) | (_, Err(reason)) => incomplete(reason),
            },
            other => incomplete(format!(
                "unknown datastoreType {other:?}; use kubernetes or file"
            )),
        }
    }
}

/// The one way to the API server an RCC of `datastoreType: kubernetes` names.
fn kube_access(spec: &RemoteClusterSpec, base_dir: &Path) -> Result<KubeAccess, String> {
    let secret = spec.cluster_access_secret.as_ref().map(|secret| {
        if secret.kind.as_deref().is_some_and(|kind| kind != "Secret") {
            return Err(format!(
                "clusterAccessSecret.kind {:?} is not supported; it must be Secret",
                secret.kind.as_deref().unwrap_or_default()
            ));
        }
        match (secret.namespace.as_deref(), secret.name.as_str()) {
            (Some(namespace), name) if !namespace.is_empty() && !name.is_empty() => {
                Ok(KubeAccess::Secret {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err("clusterAccessSecret needs name and namespace; set both".to_owned()),
        }
    });
    let path = spec
        .kubeconfig
        .as_deref()
        .filter(|path| !path.is_empty())
        .map(|path| Ok(KubeAccess::Path(base_dir.join(path))));
    let inline = spec
        .kubeconfig_inline
        .as_deref()
        .filter(|text| !text.trim().is_empty())
        .map(|text| Ok(KubeAccess::Inline(text.to_owned())));
    let mut given = [secret, path, inline].into_iter().flatten();
    match (given.next(), given.next()) {
        (Some(access), None) => access,
        (None, _) => Err(
            "datastoreType kubernetes needs clusterAccessSecret, kubeconfig or \
                          kubeconfigInline; set one of them"
                .into(),
        ),
        (Some(_), Some(_)) => Err("set only one of clusterAccessSecret, kubeconfig and \
                                   kubeconfigInline"
            .into()),
    }
}

/// `staleDataTTL`, a duration such as `90s`, `10m`, `1h` or `1h30m`.
fn stale_ttl(spec: &RemoteClusterSpec) -> Result<Option<Duration>, String> {
    let Some(text) = spec.stale_data_ttl.as_deref() else {
        return Ok(None);
    };
    parse_duration(text).map(Some).ok_or_else(|| {
        format!("staleDataTTL {text:?} is not a duration; write it like 90s, 10m or 1h30m")
    })
}

/// A Go-style duration of whole hours, minutes and seconds (`1h30m`, `45s`).
fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total = total.checked_add(number.parse::<u64>().ok()?.checked_mul(unit)?)?;
        number.clear();
    }
    (number.is_empty() && total > 0).then(|| Duration::from_secs(total))
}

/// The remote clusters the local cluster's RCCs name, each read by its own source. Feed it
/// every local update ([`RemoteClusters::handle`]); it sends the remote clusters' updates
/// to its sink. Dropping it stops every remote source.
pub struct RemoteClusters<S> {
    base_dir: PathBuf,
    sink: S,
    /// Where Kubernetes remote clusters connect from; without it they are reported as
    /// unsupported.
    kube: Option<KubeContext>,
    clusters: BTreeMap<String, RemoteCluster>,
}

struct RemoteCluster {
    target: RemoteTarget,
    source: Option<Running>,
}

/// A remote cluster's running source.
enum Running {
    File(FileSource),
    Kube(KubeRemote),
}

/// What the receiver holds from a stopped source.
enum Held {
    File(Objects),
    Kube(Known),
}

impl Held {
    fn keys(&self) -> Vec<ResourceKey> {
        match self {
            Held::File(objects) => sorted(objects.keys()),
            Held::Kube(known) => sorted(known.keys()),
        }
    }
}

impl RemoteCluster {
    /// Stops reading the cluster; returns what its receiver holds from it.
    fn stop(self) -> Held {
        match self.source {
            Some(Running::File(source)) => Held::File(source.stop()),
            Some(Running::Kube(source)) => Held::Kube(source.stop()),
            None => Held::File(Objects::default()),
        }
    }
}

impl<S: UpdateSink + Clone> RemoteClusters<S> {
    /// `base_dir` resolves relative `spec.path`s and `spec.kubeconfig`s: the local
    /// manifest directory.
    pub fn new(base_dir: impl Into<PathBuf>, sink: S) -> RemoteClusters<S> {
        RemoteClusters {
            base_dir: base_dir.into(),
            sink,
            kube: None,
            clusters: BTreeMap::new(),
        }
    }

    /// Connects `datastoreType: kubernetes` clusters through `context`.
    pub fn with_kube(mut self, context: KubeContext) -> RemoteClusters<S> {
        self.kube = Some(context);
        self
    }

    /// Follows the local cluster's RemoteClusterConfigurations: a new one starts a source,
    /// a changed one reconnects (sending only the differences), a deleted one deletes every
    /// object of its cluster. Every other update is ignored.
    pub fn handle(&mut self, update: &Update) -> Result<(), SinkClosed> {
        match update {
            Update::Set {
                origin: Origin::Local,
                resource: Resource::RemoteClusterConfiguration(rcc),
            } => self.configure(rcc),
            Update::Delete {
                origin: Origin::Local,
                key,
            } if key.kind == Kind::RemoteClusterConfiguration => self.remove(&key.name),
            _ => Ok(()),
        }
    }

    fn configure(&mut self, rcc: &RemoteClusterConfiguration) -> Result<(), SinkClosed> {
        let name = rcc.metadata.name.clone();
        let target = RemoteTarget::of(&rcc.spec, &self.base_dir);
        if self
            .clusters
            .get(&name)
            .is_some_and(|cluster| cluster.target == target)
        {
            return Ok(());
        }
        tracing::info!(cluster = %name, ?target, "remote cluster configured");
        let held = self
            .clusters
            .remove(&name)
            .map(RemoteCluster::stop)
            .unwrap_or(Held::File(Objects::default()));
        let origin = Origin::Remote(name.clone());
        let source = match (&target, self.kube.clone(), held) {
            (RemoteTarget::Directory(dir), _, held) => {
                let known = match held {
                    Held::File(objects) => objects,
                    held => {
                        self.delete_all(&name, held.keys())?;
                        Objects::default()
                    }
                };
                let keys = sorted(known.keys());
                match FileSource::spawn_retrying(dir.clone(), origin, self.sink.clone(), known) {
                    Ok(source) => Some(Running::File(source)),
                    Err(error) => {
                        self.delete_all(&name, keys)?;
                        self.send_state(
                            &name,
                            RemoteClusterState::ConnectionFailed(error.remote_reason()),
                        )?;
                        None
                    }
                }
            }
            (RemoteTarget::Kubernetes { access, stale_ttl }, Some(context), held) => {
                let known = match held {
                    Held::Kube(known) => known,
                    held => {
                        self.delete_all(&name, held.keys())?;
                        Known::default()
                    }
                };
                Some(Running::Kube(KubeRemote::spawn(
                    &context,
                    &name,
                    access.clone(),
                    *stale_ttl,
                    self.sink.clone(),
                    known,
                )))
            }
            (RemoteTarget::Kubernetes { .. }, None, held) => {
                self.delete_all(&name, held.keys())?;
                self.send_state(
                    &name,
                    RemoteClusterState::ConfigIncomplete(
                        "this command does not connect to Kubernetes remote clusters; ask the \
                         agent (it does), or use datastoreType file"
                            .into(),
                    ),
                )?;
                None
            }
            (RemoteTarget::Unavailable(state), _, held) => {
                // The configuration no longer says where the cluster's data is: what was
                // read before cannot be kept up to date.
                self.delete_all(&name, held.keys())?;
                self.send_state(&name, state.clone())?;
                None
            }
        };
        self.clusters.insert(name, RemoteCluster { target, source });
        Ok(())
    }

    fn remove(&mut self, name: &str) -> Result<(), SinkClosed> {
        if let Some(context) = &self.kube {
            context.reports.remove(name);
        }
        match self.clusters.remove(name) {
            Some(cluster) => {
                tracing::info!(cluster = %name, "remote cluster removed");
                self.delete_all(name, cluster.stop().keys())
            }
            None => Ok(()),
        }
    }

    fn delete_all(&mut self, name: &str, keys: Vec<ResourceKey>) -> Result<(), SinkClosed> {
        for key in keys {
            self.sink.send(Update::Delete {
                origin: Origin::Remote(name.to_owned()),
                key,
            })?;
        }
        Ok(())
    }

    fn send_state(&mut self, name: &str, state: RemoteClusterState) -> Result<(), SinkClosed> {
        if let Some(context) = &self.kube {
            context.reports.set_state(name, &state);
        }
        self.sink.send(Update::RemoteState {
            cluster: name.to_owned(),
            state,
        })
    }
}

/// Keys in order: a stopped source's objects are deleted in a stable order.
fn sorted<'a>(keys: impl Iterator<Item = &'a ResourceKey>) -> Vec<ResourceKey> {
    let mut keys: Vec<ResourceKey> = keys.cloned().collect();
    keys.sort_unstable();
    keys
}

/// `--datastore file:DIR` with federation: the local directory's source, plus a source per
/// remote cluster its RemoteClusterConfigurations name. Dropping it stops them all.
#[derive(Debug)]
pub struct FederatedFileSource {
    local: FileSource,
}

impl FederatedFileSource {
    /// Fails when the local directory cannot be read now; remote directories that cannot be
    /// read are reported as their clusters' `ConnectionFailed` state and retried.
    /// With `kube`, RCCs of `datastoreType: kubernetes` (kubeconfig or kubeconfigInline)
    /// connect too.
    pub fn spawn<S: UpdateSink + Clone>(
        dir: impl Into<PathBuf>,
        sink: S,
        kube: Option<KubeContext>,
    ) -> Result<FederatedFileSource, FileDatastoreError> {
        let dir = dir.into();
        let mut remotes = RemoteClusters::new(dir.clone(), sink.clone());
        if let Some(context) = kube {
            remotes = remotes.with_kube(context);
        }
        let federating = Federating::new(remotes, sink);
        let local = FileSource::spawn(dir, Origin::Local, federating)?;
        Ok(FederatedFileSource { local })
    }

    pub fn dir(&self) -> &Path {
        self.local.dir()
    }
}

/// The local source's sink: passes every update on, after letting the remote clusters
/// follow the RCCs among them. Owned by the local source's thread, so the remote sources
/// stop when it does.
pub(crate) struct Federating<S> {
    remotes: RemoteClusters<S>,
    downstream: S,
}

impl<S> Federating<S> {
    pub(crate) fn new(remotes: RemoteClusters<S>, downstream: S) -> Federating<S> {
        Federating {
            remotes,
            downstream,
        }
    }
}

impl<S: UpdateSink + Clone> UpdateSink for Federating<S> {
    fn send(&mut self, update: Update) -> Result<(), SinkClosed> {
        // Remote objects of a deleted RCC go before the RCC itself.
        self.remotes.handle(&update)?;
        self.downstream.send(update)
    }
}

/// The local directory and every remote cluster its RCCs name, read once.
#[derive(Clone, Debug, PartialEq)]
pub struct FederatedSnapshot {
    pub local: DirSnapshot,
    /// By RCC name.
    pub remotes: BTreeMap<String, RemoteSnapshot>,
}

/// One remote cluster, read once: `InSync` with its federated objects, or why not.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteSnapshot {
    pub state: RemoteClusterState,
    pub snapshot: Option<DirSnapshot>,
}

impl RemoteSnapshot {
    fn read(spec: &RemoteClusterSpec, base_dir: &Path) -> RemoteSnapshot {
        let unavailable = |state| RemoteSnapshot {
            state,
            snapshot: None,
        };
        match RemoteTarget::of(spec, base_dir) {
            RemoteTarget::Directory(dir) => match read_dir(&dir) {
                Ok(mut snapshot) => {
                    snapshot.retain_federated_kinds();
                    RemoteSnapshot {
                        state: RemoteClusterState::InSync,
                        snapshot: Some(snapshot),
                    }
                }
                Err(error) => {
                    unavailable(RemoteClusterState::ConnectionFailed(error.remote_reason()))
                }
            },
            RemoteTarget::Kubernetes { access, .. } => {
                unavailable(RemoteClusterState::ConnectionFailed(format!(
                    "not read: this command reads a Kubernetes remote cluster ({access}) only \
                     through the running agent, and none answered"
                )))
            }
            RemoteTarget::Unavailable(state) => unavailable(state),
        }
    }
}

/// Reads `dir` and every remote cluster its RemoteClusterConfigurations name (what
/// `fedwall eval` shows). Only an unreadable local directory is an error; a remote one is
/// that cluster's state.
pub fn read_federated(dir: &Path) -> Result<FederatedSnapshot, FileDatastoreError> {
    let local = read_dir(dir)?;
    let remotes = local
        .objects
        .values()
        .filter_map(|object| match &object.resource {
            Resource::RemoteClusterConfiguration(rcc) => Some((
                rcc.metadata.name.clone(),
                RemoteSnapshot::read(&rcc.spec, dir),
            )),
            _ => None,
        })
        .collect();
    Ok(FederatedSnapshot { local, remotes })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::mpsc::{self, Receiver, TryRecvError};

    use super::*;
    use crate::datastore::testdir::{TestDir, namespace, pod, until};

    const POLICY: &str = "apiVersion: fedwall.io/v1alpha1\nkind: GlobalNetworkPolicy\nmetadata: {name: remote-only}\n";
    const POOL: &str = "apiVersion: fedwall.io/v1alpha1\nkind: IPPool\nmetadata: {name: p}\n\
                        spec: {cidr: 10.20.0.0/16}\n";

    /// The states of a cluster from the start of its source to its first sync.
    const CONNECTED: [RemoteClusterState; 3] = [
        RemoteClusterState::Connecting,
        RemoteClusterState::ResyncInProgress,
        RemoteClusterState::InSync,
    ];

    fn rcc(name: &str, spec: &str) -> String {
        format!(
            "apiVersion: fedwall.io/v1alpha1\nkind: RemoteClusterConfiguration\n\
             metadata: {{name: {name}}}\nspec: {spec}\n"
        )
    }

    fn state(cluster: &str, state: RemoteClusterState) -> Update {
        Update::RemoteState {
            cluster: cluster.into(),
            state,
        }
    }

    /// What the updates say about one remote cluster: its states, and its objects' changes
    /// as `+key` / `-key`, in order.
    fn about(cluster: &str, updates: &[Update]) -> (Vec<RemoteClusterState>, Vec<String>) {
        let origin = Origin::Remote(cluster.into());
        let mut states = Vec::new();
        let mut changes = Vec::new();
        for update in updates {
            match update {
                Update::RemoteState { cluster: c, state } if c == cluster => {
                    states.push(state.clone());
                }
                Update::Set {
                    origin: o,
                    resource,
                } if *o == origin => {
                    changes.push(format!("+{}", resource.key()));
                }
                Update::Delete { origin: o, key } if *o == origin => {
                    changes.push(format!("-{key}"));
                }
                _ => {}
            }
        }
        (states, changes)
    }

    fn is_state(
        cluster: &str,
        wanted: fn(&RemoteClusterState) -> bool,
    ) -> impl Fn(&Update) -> bool {
        move |update| matches!(update, Update::RemoteState { cluster: c, state } if c == cluster && wanted(state))
    }

    fn in_sync(state: &RemoteClusterState) -> bool {
        *state == RemoteClusterState::InSync
    }

    /// `root/a` is the local directory, naming cluster `b` at `../b`.
    fn federation(root: &TestDir) -> (FederatedFileSource, Receiver<Update>) {
        root.write("a/rcc.yaml", &rcc("b", "{datastoreType: file, path: ../b}"));
        let (sender, updates) = mpsc::channel();
        let source =
            FederatedFileSource::spawn(root.path().join("a"), sender, None).expect("spawn");
        (source, updates)
    }

    fn write_cluster_b(root: &TestDir) {
        root.write(
            "b/all.yaml",
            &[
                namespace("shop"),
                pod("web", "web"),
                pod("client", "client"),
                POLICY.into(),
                POOL.into(),
                rcc("x", "{datastoreType: file, path: .}"),
            ]
            .join("---\n"),
        );
    }

    #[test]
    fn a_remote_cluster_contributes_only_federated_kinds() {
        let root = TestDir::new();
        write_cluster_b(&root);
        let (_source, updates) = federation(&root);
        let seen = until(&updates, "cluster b in sync", is_state("b", in_sync));
        let (states, changes) = about("b", &seen);
        assert_eq!(states, CONNECTED);
        // In file order: a first read sends each file's objects as soon as it is parsed.
        assert_eq!(
            changes,
            ["+Namespace(shop)", "+Pod(shop/web)", "+Pod(shop/client)"]
        );
        assert!(seen.contains(&Update::InSync {
            origin: Origin::Remote("b".into())
        }));
    }

    #[test]
    fn a_missing_remote_directory_fails_then_recovers_when_created() {
        let root = TestDir::new();
        let (_source, updates) = federation(&root);
        let seen = until(
            &updates,
            "cluster b failing",
            is_state("b", |s| s.name() == "ConnectionFailed"),
        );
        let expected = format!(
            "directory {}: No such file or directory; create it or fix spec.path",
            root.path().join("a").join("../b").display()
        );
        assert_eq!(
            seen.last(),
            Some(&state("b", RemoteClusterState::ConnectionFailed(expected)))
        );
        // Created whole, so the first successful read sees all of it.
        root.write("staging/pods.yaml", &pod("web", "web"));
        root.rename("staging", "b");
        let seen = until(&updates, "cluster b in sync", is_state("b", in_sync));
        let (states, changes) = about("b", &seen);
        assert_eq!(
            states,
            [
                RemoteClusterState::ResyncInProgress,
                RemoteClusterState::InSync
            ]
        );
        assert_eq!(changes, ["+Pod(shop/web)"]);
    }

    #[test]
    fn a_deleted_rcc_deletes_every_object_of_its_cluster_first() {
        let root = TestDir::new();
        write_cluster_b(&root);
        let (_source, updates) = federation(&root);
        until(&updates, "cluster b in sync", is_state("b", in_sync));
        root.remove("a/rcc.yaml");
        let seen = until(
            &updates,
            "the RCC's deletion",
            |update| matches!(update, Update::Delete { origin: Origin::Local, key } if key.kind == Kind::RemoteClusterConfiguration),
        );
        let (_, changes) = about("b", &seen);
        let changes: BTreeSet<String> = changes.into_iter().collect();
        let expected: BTreeSet<String> =
            ["-Namespace(shop)", "-Pod(shop/client)", "-Pod(shop/web)"]
                .map(String::from)
                .into();
        assert_eq!(changes, expected);
        // The cluster's source has stopped: nothing more comes from it.
        assert_eq!(updates.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn an_rcc_pointed_elsewhere_reconnects_and_sends_only_the_differences() {
        let root = TestDir::new();
        write_cluster_b(&root);
        root.write(
            "c/all.yaml",
            &[namespace("shop"), pod("web", "web"), pod("other", "other")].join("---\n"),
        );
        let (_source, updates) = federation(&root);
        until(&updates, "cluster b in sync", is_state("b", in_sync));
        root.write("a/rcc.yaml", &rcc("b", "{datastoreType: file, path: ../c}"));
        let seen = until(&updates, "cluster b in sync again", is_state("b", in_sync));
        let (states, changes) = about("b", &seen);
        assert_eq!(states, CONNECTED);
        assert_eq!(changes, ["-Pod(shop/client)", "+Pod(shop/other)"]);
    }

    #[test]
    fn an_rcc_without_what_it_needs_is_config_incomplete() {
        let base = Path::new("/data/a");
        let target = |spec: &str| {
            let spec: RemoteClusterSpec = serde_yaml::from_str(spec).expect("a spec");
            RemoteTarget::of(&spec, base)
        };
        let problem = |spec: &str| match target(spec) {
            RemoteTarget::Unavailable(state) => state.to_string(),
            other => panic!("{spec}: expected a problem, got {other:?}"),
        };
        assert_eq!(
            target("{datastoreType: file, path: ../b}"),
            RemoteTarget::Directory("/data/a/../b".into())
        );
        assert_eq!(
            target("{datastoreType: file, path: /srv/b}"),
            RemoteTarget::Directory("/srv/b".into())
        );
        assert!(
            problem("{datastoreType: file}")
                .starts_with("ConfigIncomplete: datastoreType file needs spec.path")
        );
        assert!(
            problem("{datastoreType: etcd}")
                .starts_with("ConfigIncomplete: unknown datastoreType \"etcd\"")
        );
        assert!(problem("{}").starts_with("ConfigIncomplete: datastoreType kubernetes needs"));
        assert_eq!(
            target("{kubeconfig: k.yaml, staleDataTTL: 1h30m}"),
            RemoteTarget::Kubernetes {
                access: KubeAccess::Path("/data/a/k.yaml".into()),
                stale_ttl: Some(Duration::from_secs(5400)),
            }
        );
        assert_eq!(
            target("{clusterAccessSecret: {name: b, namespace: fedwall-system, kind: Secret}}"),
            RemoteTarget::Kubernetes {
                access: KubeAccess::Secret {
                    namespace: "fedwall-system".into(),
                    name: "b".into()
                },
                stale_ttl: None,
            }
        );
        assert!(
            problem("{clusterAccessSecret: {name: b}}")
                .starts_with("ConfigIncomplete: clusterAccessSecret needs name and namespace")
        );
        assert!(
            problem("{kubeconfig: /k, kubeconfigInline: 'apiVersion: v1'}")
                .starts_with("ConfigIncomplete: set only one of")
        );
        assert!(
            problem("{kubeconfig: /k, staleDataTTL: soon}")
                .starts_with("ConfigIncomplete: staleDataTTL \"soon\" is not a duration")
        );
        // An inline kubeconfig holds credentials: it is never printed.
        let inline = format!("{:?}", target("{kubeconfigInline: 'token: s3cr3t'}"));
        assert!(!inline.contains("s3cr3t"), "{inline}");
    }

    #[test]
    fn read_federated_reads_each_remote_or_says_why_not() {
        let root = TestDir::new();
        write_cluster_b(&root);
        root.write(
            "a/rcc.yaml",
            &[
                rcc("b", "{datastoreType: file, path: ../b}"),
                rcc("c", "{datastoreType: file, path: ../c}"),
                rcc("d", "{datastoreType: file}"),
            ]
            .join("---\n"),
        );
        let snapshot = read_federated(&root.path().join("a")).expect("a is readable");
        let states: Vec<(&str, &str)> = snapshot
            .remotes
            .iter()
            .map(|(name, remote)| (name.as_str(), remote.state.name()))
            .collect();
        assert_eq!(
            states,
            [
                ("b", "InSync"),
                ("c", "ConnectionFailed"),
                ("d", "ConfigIncomplete")
            ]
        );
        let b = snapshot.remotes["b"].snapshot.as_ref().expect("b was read");
        let kinds: BTreeSet<Kind> = b.objects.keys().map(|key| key.kind).collect();
        assert_eq!(kinds, [Kind::Pod, Kind::Namespace].into());
        assert!(snapshot.remotes["c"].snapshot.is_none());
    }
}
