//! T3: real Kubernetes API servers (v1.20.2, provisioned by tests/kube/provision.sh) side by
//! side, as the harness makes them: pods that look running to every reader, a read-only
//! ServiceAccount whose kubeconfig lists and watches but is refused anything else, tokens
//! that one cluster issues and another rejects, the kubeconfig Secret a
//! RemoteClusterConfiguration names, and a teardown that leaves the other cluster running.

use std::{net::IpAddr, path::Path, time::Duration};

use fedwall_tests::{
    kube::{Access, Cluster, RunningPod, block_on, client_for},
    require_root,
};
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, ServiceAccount};
use kube::{
    Api, Client,
    api::{ListParams, PostParams, WatchEvent, WatchParams},
    core::Status,
};

const A_NODE_IP: &str = "192.0.2.1";
const A_POD_IP: &str = "192.0.2.10";
const A_POD_IP6: &str = "2001:db8:a::10";
const B_NODE_IP: &str = "198.51.100.1";
const B_POD_IP: &str = "198.51.100.10";
const B_POD_IP2: &str = "198.51.100.11";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("a literal address")
}

fn two_clusters() -> (Cluster, Cluster) {
    let mut clusters = Cluster::start_all(&["cluster-a", "cluster-b"]).into_iter();
    let a = clusters.next().expect("cluster-a");
    let b = clusters.next().expect("cluster-b");
    (a, b)
}

/// In `cluster`: namespace `shop` (team=shop), node `<cluster>-node-1`, and pod shop/web-1
/// running on it with `ips`.
fn web_pod(cluster: &Cluster, node_ip: &str, ips: &[IpAddr]) -> Pod {
    cluster.create_namespace("shop", &[("team", "shop")]);
    let node = format!("{}-node-1", cluster.name());
    cluster.create_node(&node, ip(node_ip), &[("topology.kubernetes.io/zone", "z1")]);
    cluster.run_pod(&RunningPod {
        namespace: "shop",
        name: "web-1",
        node: &node,
        labels: &[("app", "web")],
        ips,
        ..RunningPod::default()
    })
}

/// The API's refusal inside `result`, or a panic saying what happened instead.
fn refusal<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) -> Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("{what}: expected the API server to refuse, got {other:?}"),
    }
}

fn list_pods(client: Client, namespace: &str) -> Result<Vec<Pod>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    block_on(pods.list(&ListParams::default())).map(|list| list.items)
}

/// What a reader notices of a pod: its name, phase, addresses and node.
#[derive(Debug, PartialEq)]
struct PodView {
    name: Option<String>,
    phase: Option<String>,
    pod_ip: Option<String>,
    pod_ips: Vec<String>,
    node: Option<String>,
}

impl PodView {
    fn of(pod: &Pod) -> PodView {
        let status = pod.status.clone().unwrap_or_default();
        PodView {
            name: pod.metadata.name.clone(),
            phase: status.phase,
            pod_ip: status.pod_ip,
            pod_ips: status
                .pod_ips
                .unwrap_or_default()
                .into_iter()
                .map(|ip| ip.ip)
                .collect(),
            node: pod.spec.as_ref().and_then(|spec| spec.node_name.clone()),
        }
    }

    /// shop/web-1 as [`web_pod`] makes it in `cluster`.
    fn web_1_running(cluster: &str, ips: &[&str]) -> PodView {
        PodView {
            name: Some("web-1".to_owned()),
            phase: Some("Running".to_owned()),
            pod_ip: Some(ips[0].to_owned()),
            pod_ips: ips.iter().map(|ip| (*ip).to_owned()).collect(),
            node: Some(format!("{cluster}-node-1")),
        }
    }
}

fn views(pods: &[Pod]) -> Vec<PodView> {
    pods.iter().map(PodView::of).collect()
}

#[test]
fn clusters_side_by_side_run_pods_and_reject_each_others_tokens() {
    require_root!();
    let (a, b) = two_clusters();
    assert_ne!(a.server(), b.server(), "each cluster has its own apiserver");
    web_pod(&a, A_NODE_IP, &[ip(A_POD_IP), ip(A_POD_IP6)]);
    web_pod(&b, B_NODE_IP, &[ip(B_POD_IP)]);
    let a_reader = a.create_reader("kube-system", "fedwall-remote");
    let b_reader = b.create_reader("kube-system", "fedwall-remote");

    // What a reader of each cluster sees: its own running pod, with its addresses.
    for (cluster, reader, expected) in [
        (&a, &a_reader, vec![A_POD_IP, A_POD_IP6]),
        (&b, &b_reader, vec![B_POD_IP]),
    ] {
        let pods = list_pods(reader.client(), "shop")
            .unwrap_or_else(|e| panic!("{}: the reader lists shop's pods: {e}", cluster.name()));
        assert_eq!(
            views(&pods),
            [PodView::web_1_running(cluster.name(), &expected)],
            "{}: the pods a reader lists",
            cluster.name()
        );
    }

    // A token is only good where it was issued: cluster-b does not know cluster-a's key.
    let a_token_at_b = Access {
        kubeconfig: b_reader
            .kubeconfig
            .replace(&b_reader.token, &a_reader.token),
        ..a_reader.clone()
    };
    assert!(a_token_at_b.kubeconfig.contains(b.server()));
    let status = refusal(
        "cluster-a's token at cluster-b",
        list_pods(a_token_at_b.client(), "shop"),
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (401, "Unauthorized"),
        "{status:?}"
    );

    // Tearing cluster-a down stops its processes and removes its files; cluster-b goes on.
    let (a_pids, a_dir) = (a.pids(), a.dir().to_owned());
    drop(a);
    for pid in a_pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "cluster-a's process {pid} outlived its teardown"
        );
    }
    assert!(!a_dir.exists(), "{} outlived the teardown", a_dir.display());
    for pid in b.pids() {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "cluster-b's {pid} was stopped too"
        );
    }
    assert_eq!(
        list_pods(b_reader.client(), "shop")
            .expect("cluster-b still answers")
            .len(),
        1
    );
}

#[test]
fn a_kubeconfig_secret_gives_another_cluster_read_only_access() {
    require_root!();
    let (a, b) = two_clusters();
    web_pod(&b, B_NODE_IP, &[ip(B_POD_IP)]);
    let access = b.create_reader("kube-system", "fedwall-remote");
    a.create_namespace("fedwall-system", &[]);
    a.store_kubeconfig_secret("fedwall-system", "cluster-b-access", &access.kubeconfig);

    // The Secret as cluster-a's agent will read it.
    let secrets: Api<Secret> = Api::namespaced(a.client(), "fedwall-system");
    let secret = block_on(secrets.get("cluster-b-access")).expect("read the access Secret");
    let data = secret.data.expect("the Secret has data");
    let text = |key: &str| String::from_utf8(data[key].0.clone()).expect("UTF-8");
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["datastoreType", "kubeconfig"],
        "the Secret's keys"
    );
    assert_eq!(text("datastoreType"), "kubernetes");
    let remote = client_for(&text("kubeconfig"));

    // It connects to cluster-b (TLS verified against cluster-b's CA) and reads what fedwall needs.
    let pods = list_pods(remote.clone(), "shop").expect("list cluster-b's pods");
    assert_eq!(
        views(&pods),
        [PodView::web_1_running("cluster-b", &[B_POD_IP])]
    );
    let names = |list: Vec<String>| list.into_iter().collect::<std::collections::BTreeSet<_>>();
    let namespaces = block_on(Api::<Namespace>::all(remote.clone()).list(&ListParams::default()))
        .expect("list cluster-b's namespaces");
    assert!(
        names(
            namespaces
                .items
                .into_iter()
                .filter_map(|ns| ns.metadata.name)
                .collect()
        )
        .contains("shop")
    );
    let nodes = block_on(Api::<Node>::all(remote.clone()).list(&ListParams::default()))
        .expect("list cluster-b's nodes");
    assert_eq!(nodes.items.len(), 1);
    block_on(Api::<ServiceAccount>::all(remote.clone()).list(&ListParams::default()))
        .expect("list cluster-b's service accounts");

    // A watch sees a pod that starts running after it began.
    let all_pods: Api<Pod> = Api::all(remote.clone());
    let version = block_on(all_pods.list(&ListParams::default()))
        .expect("list every pod")
        .metadata
        .resource_version
        .expect("a list's resourceVersion");
    let mut events = Box::pin(
        block_on(all_pods.watch(&WatchParams::default().timeout(30), &version))
            .expect("watch cluster-b's pods"),
    );
    b.run_pod(&RunningPod {
        namespace: "shop",
        name: "web-2",
        node: "cluster-b-node-1",
        labels: &[("app", "web")],
        ips: &[ip(B_POD_IP2)],
        ..RunningPod::default()
    });
    let web_2_running = async {
        while let Some(event) = events.next().await {
            match event.expect("a watch event") {
                WatchEvent::Added(pod) | WatchEvent::Modified(pod)
                    if pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()) == Some(B_POD_IP2) =>
                {
                    return pod.metadata.name;
                }
                _ => {}
            }
        }
        None
    };
    // The timer must be made inside the runtime.
    let watched =
        block_on(async { tokio::time::timeout(Duration::from_secs(30), web_2_running).await })
            .expect("the watch reports web-2 running within 30 s");
    assert_eq!(watched.as_deref(), Some("web-2"));

    // Everything else is refused, and the refusal says so.
    let status = refusal(
        "the reader lists cluster-b's secrets",
        block_on(
            Api::<Secret>::namespaced(remote.clone(), "kube-system").list(&ListParams::default()),
        ),
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (403, "Forbidden"),
        "{status:?}"
    );
    assert!(
        status.message.contains("forbidden")
            && status
                .message
                .contains("system:serviceaccount:kube-system:fedwall-remote"),
        "the refusal names the account: {}",
        status.message
    );
    let status = refusal(
        "the reader creates a namespace",
        block_on(Api::<Namespace>::all(remote).create(
            &PostParams::default(),
            &Namespace {
                metadata: kube::api::ObjectMeta {
                    name: Some("not-allowed".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )),
    );
    assert_eq!(status.code, 403, "{status:?}");
}

#[test]
fn an_apiserver_outage_refuses_connections_and_a_restart_serves_the_same_data() {
    require_root!();
    let mut cluster = Cluster::start("cluster-b");
    web_pod(&cluster, B_NODE_IP, &[ip(B_POD_IP)]);
    let reader = cluster
        .create_reader("kube-system", "fedwall-remote")
        .client();
    assert_eq!(
        list_pods(reader.clone(), "shop")
            .expect("list before the outage")
            .len(),
        1
    );

    cluster.stop_apiserver();
    match list_pods(reader.clone(), "shop") {
        Err(kube::Error::Api(status)) => panic!("a stopped apiserver answered: {status:?}"),
        Err(_) => {}
        Ok(pods) => panic!("a stopped apiserver listed {} pods", pods.len()),
    }

    // Same address, same CA, same token key: the client made before the outage goes on.
    cluster.start_apiserver();
    let pods = list_pods(reader, "shop").expect("list after the restart");
    assert_eq!(
        views(&pods),
        [PodView::web_1_running("cluster-b", &[B_POD_IP])]
    );
}
