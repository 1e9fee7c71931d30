//! T3: the agent on its real ground. Three real API servers (v1.20.2); fedwall installed in
//! cluster A from deploy/ (CRDs, and the agent's RBAC: it runs as its own ServiceAccount);
//! clusters B and C federated by RemoteClusterConfigurations whose kubeconfig Secrets hold
//! read-only ServiceAccounts of theirs. The agent runs on cluster A's node (a network
//! namespace, pods on veths laid out as Calico lays them out) and real TCP flows tell what it
//! enforces: remote clients allowed, others denied, relabels and deletions followed, an
//! outage of B survived and caught up on, bad credentials and a missing Role reported.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fedwall_tests::demo;
use fedwall_tests::kube::{Cluster, Forward, RunningPod, apply_yaml, block_on};
use fedwall_tests::require_root;
use fedwall_tests::site::{NODE_ADDR, NODE_NAME, Outcome, Place, Site};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::core::{DynamicObject, GroupVersionKind};
use serde_json::json;

/// Where fedwall is installed in cluster A (deploy/agent.yaml).
const FEDWALL_NS: &str = "fedwall-system";

/// The repository's deploy/ directory.
fn deploy(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn v4(a: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

/// A pod of the test: cluster, namespace, name, labels, address.
struct TestPod {
    cluster: &'static str,
    namespace: &'static str,
    name: &'static str,
    app: &'static str,
    addr: [u8; 4],
}

const PODS: [TestPod; 7] = [
    TestPod {
        cluster: "cluster-a",
        namespace: "shop",
        name: "web-1",
        app: "web",
        addr: [10, 10, 0, 11],
    },
    TestPod {
        cluster: "cluster-a",
        namespace: "shop",
        name: "client-1",
        app: "client",
        addr: [10, 10, 0, 41],
    },
    TestPod {
        cluster: "cluster-a",
        namespace: "monitoring",
        name: "prometheus-0",
        app: "prometheus",
        addr: [10, 10, 1, 11],
    },
    TestPod {
        cluster: "cluster-b",
        namespace: "shop",
        name: "client-b1",
        app: "client",
        addr: [10, 20, 0, 11],
    },
    TestPod {
        cluster: "cluster-b",
        namespace: "shop",
        name: "batch-b2",
        app: "batch",
        addr: [10, 20, 0, 12],
    },
    TestPod {
        cluster: "cluster-c",
        namespace: "shop",
        name: "client-c1",
        app: "client",
        addr: [10, 30, 0, 11],
    },
    TestPod {
        cluster: "cluster-c",
        namespace: "other",
        name: "batch-c2",
        app: "batch",
        addr: [10, 30, 0, 12],
    },
];

const CLUSTER_A_POOLS: &str = r#"
apiVersion: fedwall.io/v1alpha1
kind: IPPool
metadata: {name: cluster-a-pods}
spec: {cidr: 10.10.0.0/16, natOutgoing: true}
---
apiVersion: fedwall.io/v1alpha1
kind: IPPool
metadata: {name: cluster-b-pods}
spec: {cidr: 10.20.0.0/16, disabled: true}
---
apiVersion: fedwall.io/v1alpha1
kind: IPPool
metadata: {name: cluster-c-pods}
spec: {cidr: 10.30.0.0/16, disabled: true}
"#;

/// An RCC whose spec is a block, so that fields can be appended (two-space indent).
fn rcc(name: &str, secret_namespace: &str, secret: &str) -> String {
    format!(
        "apiVersion: fedwall.io/v1alpha1\nkind: RemoteClusterConfiguration\n\
         metadata: {{name: {name}}}\nspec:\n  \
         clusterAccessSecret: {{name: {secret}, namespace: {secret_namespace}, kind: Secret}}\n"
    )
}

struct Federation {
    site: Site,
    a: Cluster,
    b: Cluster,
    c: Cluster,
    /// Cluster B's API server as the node reaches it.
    b_relay: Forward,
    c_relay: Forward,
    _a_relay: Forward,
    tokens: Vec<String>,
    kubeconfig: PathBuf,
}

fn port_of(cluster: &Cluster) -> u16 {
    cluster
        .server()
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("a server URL with a port")
}

impl Federation {
    fn new() -> Federation {
        let mut clusters = Cluster::start_all(&["cluster-a", "cluster-b", "cluster-c"]).into_iter();
        let (a, b, c) = (
            clusters.next().expect("a"),
            clusters.next().expect("b"),
            clusters.next().expect("c"),
        );
        // fedwall in cluster A, from deploy/: no DaemonSet (there is no kubelet; the agent
        // runs on the test's node namespace instead), everything else as shipped.
        apply_yaml(&a.client(), &deploy("crds.yaml"), |_| true);
        apply_yaml(&a.client(), &deploy("agent.yaml"), |object| {
            object.types.as_ref().is_none_or(|t| t.kind != "DaemonSet")
        });
        let agent = a.access_of(FEDWALL_NS, "fedwall-agent");

        let mut site = Site::new().expect("the site's namespaces");
        a.create_namespace("shop", &[("team", "shop")]);
        a.create_namespace("monitoring", &[("team", "ops")]);
        a.create_node(NODE_NAME, IpAddr::V4(NODE_ADDR), &[]);
        for (cluster, node_ip) in [(&b, [192, 168, 20, 1]), (&c, [192, 168, 30, 1])] {
            cluster.create_namespace("shop", &[("team", "shop")]);
            cluster.create_namespace("other", &[("team", "other")]);
            cluster.create_node(&node_of(cluster.name()), IpAddr::V4(v4(node_ip)), &[]);
        }
        for pod in &PODS {
            let cluster = [&a, &b, &c]
                .into_iter()
                .find(|c| c.name() == pod.cluster)
                .expect("a cluster of the test");
            let node = if pod.cluster == "cluster-a" {
                NODE_NAME.to_owned()
            } else {
                node_of(pod.cluster)
            };
            cluster.run_pod(&RunningPod {
                namespace: pod.namespace,
                name: pod.name,
                node: &node,
                labels: &[("app", pod.app)],
                ips: &[IpAddr::V4(v4(pod.addr))],
                ..RunningPod::default()
            });
            let key = key_of(pod.cluster, pod.namespace, pod.name);
            if pod.cluster == "cluster-a" {
                site.add_local_pod(&key, v4(pod.addr));
            } else {
                site.add_remote_pod(&key, v4(pod.addr));
            }
        }
        apply_yaml(&a.client(), CLUSTER_A_POOLS, |_| true);
        apply_yaml(&a.client(), demo::SHOP_POLICIES, |_| true);

        // Remote access: a read-only ServiceAccount in B and in C, its kubeconfig in a
        // Secret of A's fedwall namespace (readable by the agent through its Role).
        let mut tokens = vec![agent.token.clone()];
        for cluster in [&b, &c] {
            cluster.create_namespace(FEDWALL_NS, &[]);
            let reader = cluster.create_reader(FEDWALL_NS, "fedwall-remote-reader");
            let secret = format!("{}-access", cluster.name());
            a.store_kubeconfig_secret(FEDWALL_NS, &secret, &reader.kubeconfig);
            apply_yaml(
                &a.client(),
                &rcc(cluster.name(), FEDWALL_NS, &secret),
                |_| true,
            );
            tokens.push(reader.token);
        }

        let relays: Vec<Forward> = [&a, &b, &c]
            .into_iter()
            .map(|cluster| Forward::into_netns(&site.node, port_of(cluster)))
            .collect();
        let mut relays = relays.into_iter();
        let a_relay = relays.next().expect("a's relay");
        let b_relay = relays.next().expect("b's relay");
        let c_relay = relays.next().expect("c's relay");
        let kubeconfig = site.datastore().join("agent.kubeconfig");
        std::fs::write(&kubeconfig, &agent.kubeconfig).expect("write the agent's kubeconfig");
        Federation {
            site,
            a,
            b,
            c,
            b_relay,
            c_relay,
            _a_relay: a_relay,
            tokens,
            kubeconfig,
        }
    }

    fn start_agent(&self) -> fedwall_tests::site::Agent {
        self.site
            .start_agent_with(&[
                "--datastore=kubernetes".into(),
                format!("--kubeconfig={}", self.kubeconfig.display()),
                "--cluster-name=cluster-a".into(),
                format!("--namespace={FEDWALL_NS}"),
            ])
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn tcp(&self, from: &str, to: &str, port: u16) -> Outcome {
        self.site.tcp(&Place::pod(from), &Place::pod(to), port)
    }

    fn assert_allowed(&self, from: &str, to: &str, port: u16) {
        let seen_source = self.site.addr_of(&Place::pod(from));
        assert_eq!(
            self.tcp(from, to, port),
            Outcome::Allowed { seen_source },
            "{from} -> {to}:{port} should be allowed, and seen with the pod's own address"
        );
    }

    fn assert_denied(&self, from: &str, to: &str, port: u16) {
        let outcome = self.tcp(from, to, port);
        assert!(
            matches!(outcome, Outcome::Denied(_)),
            "{from} -> {to}:{port} should be denied, got {outcome:?}"
        );
    }

    /// Waits until the agent reports `cluster` in `state` (its problems section names it
    /// unless it is InSync); returns the problem's text.
    fn await_state(&self, cluster: &str, state: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let metric =
            format!("fedwall_remote_cluster_state{{cluster=\"{cluster}\",state=\"{state}\"}}");
        loop {
            if self.site.metric(&metric).ok().flatten() == Some(1.0) {
                let report = self.site.eval_report("all()").expect("eval");
                return report
                    .problems
                    .iter()
                    .find(|p| p.object.contains(cluster))
                    .map(|p| p.reason.clone())
                    .unwrap_or_default();
            }
            assert!(
                Instant::now() < deadline,
                "{cluster} not {state} after {within:?}; metrics:\n{}",
                self.site
                    .http("/metrics")
                    .map(|(_, body)| body)
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The status the lease holder wrote to RCC `name` in cluster A, once it says `state`.
    fn await_rcc_status(&self, name: &str, state: &str) -> serde_json::Value {
        let gvk = GroupVersionKind::gvk("fedwall.io", "v1alpha1", "RemoteClusterConfiguration");
        let resource =
            kube::core::ApiResource::from_gvk_with_plural(&gvk, "remoteclusterconfigurations");
        let rccs: Api<DynamicObject> = Api::all_with(self.a.client(), &resource);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let object = block_on(rccs.get(name)).expect("get the RCC");
            let status = object.data.get("status").cloned().unwrap_or_default();
            if status.get("state").and_then(|s| s.as_str()) == Some(state) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "RCC {name} status is {status}, not {state}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn node_of(cluster: &str) -> String {
    format!("{}-node-1", cluster.trim_start_matches("cluster-"))
}

fn key_of(cluster: &str, namespace: &str, name: &str) -> String {
    format!("{cluster}/{namespace}/{name}")
}

fn pods_of(cluster: &Cluster, namespace: &str) -> Api<Pod> {
    Api::namespaced(cluster.client(), namespace)
}

/// Deletes a pod at once: with no kubelet to confirm it stopped, a graceful deletion would
/// leave it Terminating.
fn delete_pod(cluster: &Cluster, namespace: &str, name: &str) {
    block_on(pods_of(cluster, namespace).delete(name, &DeleteParams::default().grace_period(0)))
        .unwrap_or_else(|e| panic!("delete pod {namespace}/{name} of {}: {e}", cluster.name()));
}

#[test]
fn the_agent_enforces_policy_across_three_real_clusters() {
    require_root!();
    let mut f = Federation::new();
    let agent = f.start_agent();

    // Remote clients allowed, others denied; never NATed towards disabled pools.
    f.assert_allowed("cluster-b/shop/client-b1", "cluster-a/shop/web-1", 8080);
    f.assert_allowed("cluster-c/shop/client-c1", "cluster-a/shop/web-1", 8080);
    f.assert_denied("cluster-b/shop/batch-b2", "cluster-a/shop/web-1", 8080);
    f.assert_allowed("cluster-a/shop/client-1", "cluster-a/shop/web-1", 8080);
    // The Kubernetes NetworkPolicy's namespaceSelector matches remote namespaces too.
    f.assert_allowed(
        "cluster-b/shop/client-b1",
        "cluster-a/monitoring/prometheus-0",
        9090,
    );
    f.assert_denied(
        "cluster-c/other/batch-c2",
        "cluster-a/monitoring/prometheus-0",
        9090,
    );

    // `fedwall eval 'all()'` lists local and remote endpoints, calicoq-style.
    let listing = eval_cli(&f.site, "all()");
    for name in [
        "a-node-1/k8s/shop.web-1/eth0",
        "cluster-b/b-node-1/k8s/shop.client-b1/eth0",
        "cluster-c/c-node-1/k8s/other.batch-c2/eth0",
    ] {
        assert!(
            listing.contains(name),
            "eval all() lacks {name}:\n{listing}"
        );
    }
    // One agent holds the Lease and writes the RCCs' status.
    let status = f.await_rcc_status("cluster-b", "InSync");
    assert_eq!(status["endpoints"], json!(2), "{status}");
    assert_eq!(status["reporter"], json!(NODE_NAME), "{status}");

    // A remote pod relabelled becomes a client; a deleted one loses its address.
    block_on(pods_of(&f.b, "shop").patch(
        "batch-b2",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "client"}}})),
    ))
    .expect("relabel batch-b2");
    f.site
        .await_matches("app == 'client'", 4)
        .expect("batch-b2 a client");
    f.assert_allowed("cluster-b/shop/batch-b2", "cluster-a/shop/web-1", 8080);
    delete_pod(&f.c, "shop", "client-c1");
    f.site
        .await_matches("app == 'client'", 3)
        .expect("client-c1 gone");
    f.assert_denied("cluster-c/shop/client-c1", "cluster-a/shop/web-1", 8080);

    // Cluster B's API server stops: its endpoints stay enforced, the failure is reported.
    f.b.stop_apiserver();
    let reason = f.await_state("cluster-b", "ConnectionFailed", Duration::from_secs(15));
    assert!(reason.contains("cannot reach the API server"), "{reason}");
    let problems = eval_cli(&f.site, "all()");
    assert!(
        problems.contains("cluster-b"),
        "eval names the failing cluster:\n{problems}"
    );
    f.assert_allowed("cluster-b/shop/client-b1", "cluster-a/shop/web-1", 8080);
    // While the agent still cannot reach it, B comes back and a pod is deleted there; the
    // reconnection applies that deletion.
    f.b_relay.cut();
    f.b.start_apiserver();
    delete_pod(&f.b, "shop", "batch-b2");
    f.b_relay.restore();
    f.await_state("cluster-b", "InSync", Duration::from_secs(30));
    f.site
        .await_matches("app == 'client'", 2)
        .expect("batch-b2 gone after the outage");
    f.assert_denied("cluster-b/shop/batch-b2", "cluster-a/shop/web-1", 8080);
    f.assert_allowed("cluster-b/shop/client-b1", "cluster-a/shop/web-1", 8080);

    // The access Secret is rotated to another ServiceAccount and the old one deleted: the
    // agent reconnects with the new credentials without dropping what it knew.
    let rotated = f.b.create_reader(FEDWALL_NS, "fedwall-remote-reader-2");
    f.tokens.push(rotated.token.clone());
    let secrets: Api<Secret> = Api::namespaced(f.a.client(), FEDWALL_NS);
    block_on(secrets.patch(
        "cluster-b-access",
        &PatchParams::default(),
        &Patch::Merge(json!({"stringData": {"kubeconfig": &rotated.kubeconfig}})),
    ))
    .expect("rotate the access Secret");
    let accounts: Api<ServiceAccount> = Api::namespaced(f.b.client(), FEDWALL_NS);
    block_on(accounts.delete("fedwall-remote-reader", &DeleteParams::default()))
        .expect("delete the old reader");
    f.await_state("cluster-b", "InSync", Duration::from_secs(30));
    assert_eq!(
        f.site
            .eval("fedwall.io/cluster == 'cluster-b'")
            .expect("eval")
            .len(),
        1
    );
    block_on(pods_of(&f.b, "shop").patch(
        "client-b1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "client", "rotated": "yes"}}})),
    ))
    .expect("relabel client-b1");
    f.site
        .await_matches("rotated == 'yes'", 1)
        .expect("a change read with the rotated credentials");

    // With staleDataTTL, an unreachable cluster's endpoints are withdrawn once it expires,
    // and come back with the cluster.
    apply_yaml(
        &f.a.client(),
        &format!(
            "{}  staleDataTTL: 3s\n",
            rcc("cluster-c", FEDWALL_NS, "cluster-c-access")
        ),
        |_| true,
    );
    f.c_relay.cut();
    f.site
        .await_matches("fedwall.io/cluster == 'cluster-c'", 0)
        .expect("cluster-c withdrawn after its TTL");
    let reason = f.await_state("cluster-c", "ConnectionFailed", Duration::from_secs(5));
    assert!(reason.contains("withdrawn after staleDataTTL"), "{reason}");
    f.c_relay.restore();
    f.site
        .await_matches("fedwall.io/cluster == 'cluster-c'", 1)
        .expect("cluster-c back");

    // Bad credentials and a missing Role are named.
    let reader = &rotated;
    let wrong = reader
        .kubeconfig
        .replace(&reader.token, "not-a-token-of-cluster-b");
    f.a.store_kubeconfig_secret(FEDWALL_NS, "wrong-token", &wrong);
    apply_yaml(
        &f.a.client(),
        &rcc("cluster-wrong-token", FEDWALL_NS, "wrong-token"),
        |_| true,
    );
    let reason = f.await_state(
        "cluster-wrong-token",
        "ConnectionFailed",
        Duration::from_secs(15),
    );
    assert!(reason.contains("unauthorized"), "{reason}");
    f.a.create_namespace("elsewhere", &[]);
    f.a.store_kubeconfig_secret("elsewhere", "b-access", &reader.kubeconfig);
    apply_yaml(
        &f.a.client(),
        &rcc("cluster-no-role", "elsewhere", "b-access"),
        |_| true,
    );
    let reason = f.await_state(
        "cluster-no-role",
        "ConnectionFailed",
        Duration::from_secs(15),
    );
    assert!(
        reason.contains("forbidden") && reason.contains("\"elsewhere\""),
        "{reason}"
    );

    // Deleting an RCC withdraws its endpoints.
    let gvk = GroupVersionKind::gvk("fedwall.io", "v1alpha1", "RemoteClusterConfiguration");
    let resource =
        kube::core::ApiResource::from_gvk_with_plural(&gvk, "remoteclusterconfigurations");
    let rccs: Api<DynamicObject> = Api::all_with(f.a.client(), &resource);
    block_on(rccs.delete("cluster-c", &DeleteParams::default())).expect("delete RCC cluster-c");
    f.site
        .await_matches("fedwall.io/cluster == 'cluster-c'", 0)
        .expect("cluster-c withdrawn");
    f.assert_denied(
        "cluster-c/other/batch-c2",
        "cluster-a/monitoring/prometheus-0",
        9090,
    );

    // No credential ever reaches the log.
    let log = agent.log_text();
    for token in &f.tokens {
        assert!(
            !log.contains(token.as_str()),
            "a token is in the agent's log"
        );
    }
    assert!(
        !log.contains("not-a-token-of-cluster-b"),
        "a token is in the agent's log"
    );
    agent.stop().expect("stop the agent");
}

/// `fedwall eval SELECTOR` as a user runs it on the node: its whole output.
fn eval_cli(site: &Site, selector: &str) -> String {
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", site.node.name()])
        .arg(fedwall_tests::site::fedwall_binary().expect("the fedwall binary"))
        .args(["eval", selector])
        .arg(format!("--socket={}", site.socket().display()))
        .output()
        .expect("run fedwall eval");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
