//! What the benchmarks share. Synthetic clusters at the scale issues 4 and 6 measure:
//! remote pods whose `app` labels spread over the rule selectors of as many policies, all
//! applying to the local "gateway" pods — one generator for `cargo xtask bench calc` (which
//! feeds calc directly) and `cargo xtask bench agent` (which writes it as a file datastore),
//! so both measure the same data; and a process's peak memory.

use std::collections::BTreeMap;

use crate::model::resources::{
    EntityRule, GlobalNetworkPolicy, ObjectMeta, Pod, PodSpec, PodStatus, PolicyRule, PolicySpec,
    Resource,
};

/// Remote endpoints across every remote cluster.
pub const REMOTE_ENDPOINTS: usize = 100_000;
/// Policies, each with one rule whose selector is distinct.
pub const SELECTORS: usize = 1_000;
pub const REMOTE_CLUSTERS: usize = 3;
/// The node remote pods run on (in their own clusters).
pub const REMOTE_NODE: &str = "remote-node";

/// The remote cluster remote pod `i` belongs to: pods are dealt round-robin.
pub const fn cluster_of(i: usize) -> usize {
    i % REMOTE_CLUSTERS
}

/// The name of remote cluster `cluster` (its RemoteClusterConfiguration's name).
pub fn cluster_name(cluster: usize) -> String {
    format!("cluster-{cluster}")
}

/// Remote pod `i` of cluster [`cluster_of`]`(i)`, labelled `app=app<app>`: an `app` below
/// [`SELECTORS`] puts it in that policy's set (and maybe a neighbour's), one at or above
/// it in no set at all.
pub fn remote_pod(i: usize, app: usize) -> Resource {
    let cluster = cluster_of(i);
    let labels = BTreeMap::from([
        ("app".to_owned(), format!("app{app}")),
        ("tier".to_owned(), ["web", "api", "db"][i % 3].to_owned()),
        ("zone".to_owned(), format!("z{}", i % 7)),
    ]);
    let ip = format!("10.{}.{}.{}", 100 + cluster, (i / 250) % 256, i % 250 + 1);
    running_pod(
        &format!("pod-{i}"),
        &format!("ns{}", i % 50),
        labels,
        REMOTE_NODE,
        ip,
    )
}

/// The `app` remote pod `i` starts with: pods spread evenly over the selectors.
pub const fn initial_app(i: usize) -> usize {
    i % SELECTORS
}

/// A local pod every policy applies to (`role=gateway`), on `node`.
pub fn gateway_pod(name: &str, node: &str, ip: &str) -> Resource {
    let labels = BTreeMap::from([("role".to_owned(), "gateway".to_owned())]);
    running_pod(name, "edge", labels, node, ip.to_owned())
}

fn running_pod(
    name: &str,
    namespace: &str,
    labels: BTreeMap<String, String>,
    node: &str,
    ip: String,
) -> Resource {
    Resource::Pod(Pod {
        metadata: ObjectMeta {
            name: name.to_owned(),
            namespace: Some(namespace.to_owned()),
            labels,
        },
        spec: PodSpec {
            node_name: Some(node.to_owned()),
            ..PodSpec::default()
        },
        status: PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip),
            pod_ips: Vec::new(),
        },
    })
}

/// A mix of the selector shapes policies use: equality, sets, and conjunctions.
pub fn rule_selector(n: usize) -> String {
    match n % 10 {
        0..=6 => format!("app == 'app{n}'"),
        7 | 8 => format!("app in {{'app{n}', 'app{}'}}", (n + 1) % SELECTORS),
        _ => format!("has(zone) && app == 'app{n}' && tier != 'db'"),
    }
}

/// Policy `n`: applies to the gateways, allows in what [`rule_selector`]`(n)` matches.
pub fn policy(n: usize) -> Resource {
    Resource::GlobalNetworkPolicy(GlobalNetworkPolicy {
        metadata: ObjectMeta {
            name: format!("policy-{n:04}"),
            ..ObjectMeta::default()
        },
        spec: PolicySpec {
            order: Some(n as f64),
            selector: Some("role == 'gateway'".into()),
            ingress: vec![PolicyRule {
                action: "Allow".into(),
                source: EntityRule {
                    selector: Some(rule_selector(n)),
                    ..EntityRule::default()
                },
                ..PolicyRule::default()
            }],
            ..PolicySpec::default()
        },
    })
}

/// The peak resident memory (VmHWM) of `/proc/<process>/status`, in MiB (`"self"` for this
/// process); NaN when it cannot be read.
pub fn peak_rss_mib(process: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}
