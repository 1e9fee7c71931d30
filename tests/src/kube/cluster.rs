//! One Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) on loopback,
//! and the objects tests make in it: Namespaces, Nodes, "running" Pods — there is no
//! kubelet or scheduler, so a running pod is a Pod bound to a Node object plus a status
//! patch — and read-only ServiceAccounts with their kubeconfigs.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{IpAddr, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use base64::Engine as _;
use k8s_openapi::{
    api::{
        core::v1::{Container, Namespace, Node, Pod, PodSpec, Secret, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, Config,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

use super::{
    block_on,
    pki::{ClientCert, Pki},
    process::{Daemon, StateDir, free_ports},
};

/// How long a control plane may take to come up: ≈ 6 s alone on this 2-core machine, 9-11 s
/// for three at once, and over a minute seen with builds at a higher priority on the cores.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an object the controllers make (a ServiceAccount, its token) may take.
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(60);
/// The image of every pod: nothing pulls it.
const POD_IMAGE: &str = "registry.invalid/fedwall-test-pod:1";
/// The Service range the apiserver must have; no Service address is ever reached.
const SERVICE_RANGE: &str = "203.0.113.0/24";

/// A running control plane, stopped on drop — its processes only — with its directory.
///
/// Fields drop in order: the controller-manager, then the apiserver, then etcd, then the
/// directory their files were in.
pub struct Cluster {
    name: String,
    server: String,
    ca_pem: String,
    admin_kubeconfig: PathBuf,
    client: Client,
    /// How to start the apiserver again after [`Cluster::stop_apiserver`].
    apiserver_command: (PathBuf, Vec<String>),
    controller_manager: Daemon,
    /// None while stopped.
    apiserver: Option<Daemon>,
    etcd: Daemon,
    dir: StateDir,
}

/// A pod to make "running": bound to `node`, with phase Running and `ips` as its addresses.
#[derive(Debug, Default)]
pub struct RunningPod<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub node: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
    /// The first is `status.podIP`; all are `status.podIPs`.
    pub ips: &'a [IpAddr],
    /// `default` when unset; it must exist (ServiceAccount admission checks).
    pub service_account: Option<&'a str>,
}

/// A ServiceAccount's credentials for one cluster: its token, and a kubeconfig holding the
/// server URL, the cluster's CA and the token (what a RemoteClusterConfiguration's Secret
/// carries).
#[derive(Debug, Clone)]
pub struct Access {
    pub namespace: String,
    pub service_account: String,
    pub token: String,
    pub kubeconfig: String,
}

impl Access {
    /// A client acting as this ServiceAccount.
    pub fn client(&self) -> Client {
        client_for(&self.kubeconfig)
    }
}

/// A client from a kubeconfig document (its current context).
pub fn client_for(kubeconfig: &str) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig).expect("parse the kubeconfig");
    block_on(async {
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("a client configuration from the kubeconfig");
        Client::try_from(config).expect("a client from the kubeconfig")
    })
}

impl Cluster {
    /// Starts etcd, kube-apiserver and kube-controller-manager for a cluster called `name`
    /// on free loopback ports, and returns once `/readyz` answers ok and the `default`
    /// ServiceAccount has its token (pods can be made). Panics with the failing daemon's
    /// log if one exits or the cluster is not up within two minutes.
    pub fn start(name: &str) -> Cluster {
        let started = Instant::now();
        let bin = super::binaries();
        let dir = StateDir::create(name);
        let path = dir.path();
        let pki = Pki::create(name, path);
        let [etcd_port, peer_port, apiserver_port] = free_ports(3)
            .try_into()
            .expect("free_ports returns as many as asked");
        let server = format!("https://127.0.0.1:{apiserver_port}");
        let admin_kubeconfig = path.join("admin.kubeconfig");
        let write = |file: &Path, text: &str| {
            std::fs::write(file, text).unwrap_or_else(|e| panic!("write {}: {e}", file.display()))
        };
        let admin = kubeconfig(name, &server, &pki.ca_pem, Credentials::Cert(&pki.admin));
        write(&admin_kubeconfig, &admin);
        let cm_kubeconfig = path.join("controller-manager.kubeconfig");
        let cm = Credentials::Cert(&pki.controller_manager);
        write(&cm_kubeconfig, &kubeconfig(name, &server, &pki.ca_pem, cm));

        let mut etcd = Daemon::spawn(
            "etcd",
            &bin.join("etcd"),
            &etcd_args(name, path, etcd_port, peer_port),
            path,
        );
        // The apiserver gives up on an etcd that does not answer; it is up within a second.
        wait_until(&format!("etcd of {name} healthy"), START_TIMEOUT, || {
            etcd.assert_running();
            etcd_healthy(etcd_port).then_some(())
        });
        let apiserver_command = (
            bin.join("kube-apiserver"),
            apiserver_args(name, path, &pki, etcd_port, apiserver_port),
        );
        let mut apiserver = Daemon::spawn(
            "kube-apiserver",
            &apiserver_command.0,
            &apiserver_command.1,
            path,
        );
        let client = client_for(&admin);
        // The controller-manager gives up on an apiserver that is not healthy within 10 s.
        wait_readyz(name, &client, &mut [&mut etcd, &mut apiserver]);
        let controller_manager = Daemon::spawn(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &controller_manager_args(name, &cm_kubeconfig, &pki),
            path,
        );
        let mut cluster = Cluster {
            name: name.to_owned(),
            server,
            ca_pem: pki.ca_pem,
            admin_kubeconfig,
            client,
            apiserver_command,
            controller_manager,
            apiserver: Some(apiserver),
            etcd,
            dir,
        };
        // Made by the controller-manager: without it, no pod can be created.
        let token = format!("{name}: the token of ServiceAccount default/default");
        wait_until(&token, START_TIMEOUT, || {
            cluster.assert_running();
            cluster.find_token("default", "default")
        });
        eprintln!(
            "cluster {name}: {} ready in {:.1} s ({})",
            cluster.server,
            started.elapsed().as_secs_f64(),
            cluster.dir.path().display()
        );
        cluster
    }

    /// Starts several clusters at once (their start-up is mostly waiting).
    pub fn start_all(names: &[&str]) -> Vec<Cluster> {
        std::thread::scope(|scope| {
            let starting: Vec<_> = names
                .iter()
                .map(|name| scope.spawn(move || Cluster::start(name)))
                .collect();
            starting
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        })
    }

    fn assert_running(&mut self) {
        self.etcd.assert_running();
        if let Some(apiserver) = &mut self.apiserver {
            apiserver.assert_running();
        }
        self.controller_manager.assert_running();
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The CA that signed the apiserver's serving certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A kubeconfig file for the cluster's administrator (client certificate in
    /// `system:masters`), for kubectl or the agent.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// A client acting as the cluster's administrator.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The pids of etcd, kube-apiserver (unless stopped) and kube-controller-manager.
    pub fn pids(&self) -> Vec<u32> {
        [
            Some(&self.etcd),
            self.apiserver.as_ref(),
            Some(&self.controller_manager),
        ]
        .into_iter()
        .flatten()
        .map(Daemon::pid)
        .collect()
    }

    /// Kills kube-apiserver, as a crash looks to its clients (connections refused); etcd and
    /// the controller-manager go on, and the data stays.
    pub fn stop_apiserver(&mut self) {
        assert!(
            self.apiserver.take().is_some(),
            "{}: the apiserver is already stopped",
            self.name
        );
    }

    /// Starts kube-apiserver again after [`Cluster::stop_apiserver`], on the same address
    /// with the same data and keys; returns once `/readyz` is ok.
    pub fn start_apiserver(&mut self) {
        assert!(
            self.apiserver.is_none(),
            "{}: the apiserver is running",
            self.name
        );
        let (binary, args) = &self.apiserver_command;
        let mut apiserver = Daemon::spawn("kube-apiserver", binary, args, self.dir.path());
        wait_readyz(
            &self.name,
            &self.client,
            &mut [&mut self.etcd, &mut apiserver, &mut self.controller_manager],
        );
        self.apiserver = Some(apiserver);
    }

    /// The directory holding the cluster's certificates, etcd data and daemon logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates a Namespace and waits for its `default` ServiceAccount's token, so pods can
    /// be made in it.
    pub fn create_namespace(&self, name: &str, labels: &[(&str, &str)]) -> Namespace {
        let namespace = Namespace {
            metadata: meta(name, labels),
            ..Namespace::default()
        };
        let created = self.create(Api::all(self.client()), &namespace);
        self.service_account_token(name, "default");
        created
    }

    /// Creates a Node with `internal_ip` as its InternalIP address and condition Ready.
    pub fn create_node(&self, name: &str, internal_ip: IpAddr, labels: &[(&str, &str)]) -> Node {
        let nodes: Api<Node> = Api::all(self.client());
        let node = Node {
            metadata: meta(name, labels),
            ..Node::default()
        };
        self.create(nodes.clone(), &node);
        let status = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": internal_ip.to_string()}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "FedwallTest"}],
        }});
        block_on(nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(status)))
            .unwrap_or_else(|e| panic!("{}: set the status of node {name}: {e}", self.name))
    }

    /// Creates a ServiceAccount with `labels`, and waits for its token.
    pub fn create_service_account(
        &self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
    ) -> ServiceAccount {
        let account = ServiceAccount {
            metadata: meta(name, labels),
            ..ServiceAccount::default()
        };
        let created = self.create(Api::namespaced(self.client(), namespace), &account);
        self.service_account_token(namespace, name);
        created
    }

    /// Makes a pod that looks running to every reader of the API: created bound to its
    /// node, then its status patched to phase Running with its addresses and Ready.
    /// Returns the pod as the apiserver stores it.
    pub fn run_pod(&self, pod: &RunningPod<'_>) -> Pod {
        let pods: Api<Pod> = Api::namespaced(self.client(), pod.namespace);
        let object = Pod {
            metadata: meta(pod.name, pod.labels),
            spec: Some(PodSpec {
                node_name: Some(pod.node.to_owned()),
                service_account_name: pod.service_account.map(str::to_owned),
                containers: vec![Container {
                    name: "main".into(),
                    image: Some(POD_IMAGE.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        self.create(pods.clone(), &object);
        let pod_ips: Vec<_> = pod
            .ips
            .iter()
            .map(|ip| json!({"ip": ip.to_string()}))
            .collect();
        let node_ip = self.node_internal_ip(pod.node);
        let status = json!({"status": {
            "phase": "Running",
            "podIP": pod.ips.first().map(IpAddr::to_string),
            "podIPs": pod_ips,
            "hostIP": node_ip,
            "conditions": [{"type": "Ready", "status": "True"}],
        }});
        block_on(pods.patch_status(pod.name, &PatchParams::default(), &Patch::Merge(status)))
            .unwrap_or_else(|e| {
                panic!(
                    "{}: set the status of pod {}/{}: {e}",
                    self.name, pod.namespace, pod.name
                )
            })
    }

    fn node_internal_ip(&self, node: &str) -> Option<String> {
        let node = block_on(Api::<Node>::all(self.client()).get(node))
            .unwrap_or_else(|e| panic!("{}: get node {node}: {e}", self.name));
        node.status?
            .addresses?
            .into_iter()
            .find(|address| address.type_ == "InternalIP")
            .map(|address| address.address)
    }

    /// A ServiceAccount `namespace/name` that can only get, list and watch pods, namespaces,
    /// serviceaccounts and nodes — what fedwall needs of a remote cluster — through a
    /// ClusterRole and ClusterRoleBinding `fedwall-test-reader:<namespace>:<name>`; returns
    /// its token and a kubeconfig with it.
    pub fn create_reader(&self, namespace: &str, name: &str) -> Access {
        let role_name = format!("fedwall-test-reader:{namespace}:{name}");
        let role = ClusterRole {
            metadata: meta(&role_name, &[]),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(
                    ["pods", "namespaces", "serviceaccounts", "nodes"]
                        .map(String::from)
                        .to_vec(),
                ),
                verbs: ["get", "list", "watch"].map(String::from).to_vec(),
                ..PolicyRule::default()
            }]),
            ..ClusterRole::default()
        };
        self.create(Api::all(self.client()), &role);
        let binding = ClusterRoleBinding {
            metadata: meta(&role_name, &[]),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: role_name.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: name.to_owned(),
                namespace: Some(namespace.to_owned()),
                ..Subject::default()
            }]),
        };
        self.create(Api::all(self.client()), &binding);
        self.create_service_account(namespace, name, &[]);
        self.access_of(namespace, name)
    }

    /// The token and a kubeconfig of an existing ServiceAccount `namespace/name` (made by
    /// a manifest, say), once its token exists.
    pub fn access_of(&self, namespace: &str, name: &str) -> Access {
        let token = self.service_account_token(namespace, name);
        let user = format!("system:serviceaccount:{namespace}:{name}");
        Access {
            namespace: namespace.to_owned(),
            service_account: name.to_owned(),
            kubeconfig: kubeconfig(
                &self.name,
                &self.server,
                &self.ca_pem,
                Credentials::Token(&user, &token),
            ),
            token,
        }
    }

    /// The access a `kubernetes.io/service-account-token` Secret `namespace/secret` gives,
    /// as a person following the README builds it: the token and `ca.crt` the token
    /// controller wrote into it (waiting for them), and this cluster's address.
    pub fn access_from_token_secret(&self, namespace: &str, secret: &str) -> Access {
        let secrets: Api<Secret> = Api::namespaced(self.client(), namespace);
        let what = format!("{}: the token in Secret {namespace}/{secret}", self.name);
        let (account, token, ca_pem) = wait_until(&what, CONTROLLER_TIMEOUT, || {
            let found = block_on(secrets.get_opt(secret)).ok().flatten()?;
            let account = found
                .metadata
                .annotations?
                .remove("kubernetes.io/service-account.name")?;
            let mut data = found.data?;
            let text = |bytes: k8s_openapi::ByteString| String::from_utf8(bytes.0).ok();
            let token = text(data.remove("token")?)?;
            let ca_pem = text(data.remove("ca.crt")?)?;
            Some((account, token, ca_pem))
        });
        let user = format!("system:serviceaccount:{namespace}:{account}");
        Access {
            namespace: namespace.to_owned(),
            service_account: account,
            kubeconfig: kubeconfig(
                &self.name,
                &self.server,
                &ca_pem,
                Credentials::Token(&user, &token),
            ),
            token,
        }
    }

    /// Stores `kubeconfig` in Secret `namespace/name` the way a RemoteClusterConfiguration's
    /// `clusterAccessSecret` expects it: keys `datastoreType: kubernetes` and `kubeconfig`.
    pub fn store_kubeconfig_secret(&self, namespace: &str, name: &str, kubeconfig: &str) -> Secret {
        let secret = Secret {
            metadata: meta(name, &[]),
            string_data: Some(BTreeMap::from([
                ("datastoreType".to_owned(), "kubernetes".to_owned()),
                ("kubeconfig".to_owned(), kubeconfig.to_owned()),
            ])),
            ..Secret::default()
        };
        self.create(Api::namespaced(self.client(), namespace), &secret)
    }

    /// The token the token controller made for ServiceAccount `namespace/name` (Kubernetes
    /// 1.20 keeps it in a Secret named by the account), waiting for both to exist.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let what = format!(
            "{}: the token of ServiceAccount {namespace}/{name}",
            self.name
        );
        wait_until(&what, CONTROLLER_TIMEOUT, || {
            self.find_token(namespace, name)
        })
    }

    fn find_token(&self, namespace: &str, name: &str) -> Option<String> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let secrets: Api<Secret> = Api::namespaced(self.client(), namespace);
        let account = block_on(accounts.get_opt(name)).ok().flatten()?;
        account.secrets?.into_iter().find_map(|reference| {
            let secret = block_on(secrets.get_opt(reference.name.as_deref()?))
                .ok()
                .flatten()?;
            if secret.type_.as_deref() != Some("kubernetes.io/service-account-token") {
                return None;
            }
            let token = secret.data?.remove("token")?;
            String::from_utf8(token.0).ok()
        })
    }

    fn create<K>(&self, api: Api<K>, object: &K) -> K
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        block_on(api.create(&PostParams::default(), object)).unwrap_or_else(|e| {
            panic!(
                "{}: create {} {}: {e}",
                self.name,
                K::kind(&()),
                object.meta().name.as_deref().unwrap_or("?")
            )
        })
    }
}

fn meta(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect()
        }),
        ..ObjectMeta::default()
    }
}

fn etcd_args(name: &str, dir: &Path, client_port: u16, peer_port: u16) -> Vec<String> {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    vec![
        format!("--name={name}"),
        format!("--data-dir={}", dir.join("etcd").display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster={name}={peer}"),
        "--logger=zap".into(),
    ]
}

fn apiserver_args(name: &str, dir: &Path, pki: &Pki, etcd_port: u16, port: u16) -> Vec<String> {
    vec![
        format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", dir.join("apiserver-certs").display()),
        format!("--tls-cert-file={}", pki.serving_cert.display()),
        format!("--tls-private-key-file={}", pki.serving_key.display()),
        format!("--client-ca-file={}", pki.ca_cert.display()),
        "--authorization-mode=Node,RBAC".into(),
        // Every cluster signs tokens with its own key and names itself as their issuer.
        format!("--service-account-issuer=https://{name}.fedwall-test.invalid"),
        format!(
            "--service-account-key-file={}",
            pki.service_account_public_key.display()
        ),
        format!(
            "--service-account-signing-key-file={}",
            pki.service_account_key.display()
        ),
        format!("--service-cluster-ip-range={SERVICE_RANGE}"),
        // The `kubernetes` Service's endpoints cannot be a loopback address.
        "--endpoint-reconciler-type=none".into(),
        "--profiling=false".into(),
    ]
}

fn controller_manager_args(name: &str, kubeconfig: &Path, pki: &Pki) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        // Fake nodes send no heartbeats: the node lifecycle controller would taint them
        // and evict their pods.
        "--controllers=*,-nodelifecycle".into(),
        format!(
            "--service-account-private-key-file={}",
            pki.service_account_key.display()
        ),
        format!("--root-ca-file={}", pki.ca_cert.display()),
        format!("--cluster-name={name}"),
        "--leader-elect=false".into(),
        // No serving at all, so clusters side by side do not compete for 10252/10257.
        "--port=0".into(),
        "--secure-port=0".into(),
    ]
}

/// Whether etcd's `/health` says so (plain HTTP on loopback: a few lines of std).
fn etcd_healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut response = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut response).is_ok()
        && response.contains(r#""health":"true""#)
}

enum Credentials<'a> {
    Cert(&'a ClientCert),
    /// The user's name (only a label in the file) and the bearer token.
    Token(&'a str, &'a str),
}

/// A kubeconfig document with one cluster, one user and the context joining them. Every
/// value is quoted (as JSON strings, which YAML reads alike): a cluster called `y` or `no`
/// is not a boolean.
fn kubeconfig(cluster: &str, server: &str, ca_pem: &str, credentials: Credentials<'_>) -> String {
    let quote = |text: &str| serde_json::to_string(text).expect("a string serializes");
    let b64 = |text: &str| quote(&base64::engine::general_purpose::STANDARD.encode(text));
    let (user, user_fields) = match credentials {
        Credentials::Cert(cert) => (
            quote("admin"),
            format!(
                "client-certificate-data: {}\n    client-key-data: {}",
                b64(&cert.cert_pem),
                b64(&cert.key_pem)
            ),
        ),
        Credentials::Token(user, token) => (quote(user), format!("token: {}", quote(token))),
    };
    let (cluster, server, ca) = (quote(cluster), quote(server), b64(ca_pem));
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {cluster}
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    {user_fields}
contexts:
- name: {cluster}
  context:
    cluster: {cluster}
    user: {user}
current-context: {cluster}
"
    )
}

/// Waits until the apiserver's `/readyz` answers ok, checking meanwhile that `daemons` run.
fn wait_readyz(name: &str, client: &Client, daemons: &mut [&mut Daemon]) {
    wait_until(
        &format!("{name}'s apiserver /readyz ok"),
        START_TIMEOUT,
        || {
            for daemon in daemons.iter_mut() {
                daemon.assert_running();
            }
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("a GET /readyz request");
            block_on(client.request_text(request))
                .is_ok_and(|body| body.trim() == "ok")
                .then_some(())
        },
    );
}

/// Polls `probe` every 100 ms until it returns something; panics naming `what` after
/// `timeout`.
fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {} s waiting for {what}",
            timeout.as_secs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
