//! fedwall's main job on its embedded default, no Kubernetes: one node with pods in two
//! namespaces, an external host, and a remote cluster whose pods live in a `disabled` IP
//! pool; a file datastore with a RemoteClusterConfiguration, a Kubernetes NetworkPolicy, a
//! fedwall NetworkPolicy that admits only `app == 'client'` pods of any cluster, and a
//! GlobalNetworkPolicy; the real agent; real TCP flows, each expected and observed. Then a
//! remote pod is relabelled in its cluster's YAML and its traffic flips. `./x demo` runs it,
//! and so does the agent's T2 test.

use std::io::Write;
use std::net::Ipv4Addr;

use crate::site::{EXT_ADDR, FORBIDDEN_ADDR, LOCAL_CLUSTER, NODE_ADDR, Outcome, Place, Site};

const REMOTE_CLUSTER: &str = "cluster-b";

const LOCAL_PODS: [(&str, &str, [u8; 4]); 3] = [
    ("shop", "web-1", [10, 10, 0, 11]),
    ("shop", "client-1", [10, 10, 0, 41]),
    ("monitoring", "prometheus-0", [10, 10, 1, 11]),
];
const REMOTE_PODS: [(&str, &str, [u8; 4]); 2] = [
    ("shop", "client-b1", [10, 20, 0, 11]),
    ("shop", "batch-b2", [10, 20, 0, 12]),
];

const CLUSTER_A: &str = r#"# cluster-a: this node's cluster.
apiVersion: fedwall.io/v1alpha1
kind: IPPool
metadata: {name: cluster-a-pods}
spec: {cidr: 10.10.0.0/16, natOutgoing: true}
---
# cluster-b's pod range: never NATed towards, so its pods see our pods' real addresses.
apiVersion: fedwall.io/v1alpha1
kind: IPPool
metadata: {name: cluster-b-pods}
spec: {cidr: 10.20.0.0/16, disabled: true}
---
apiVersion: fedwall.io/v1alpha1
kind: RemoteClusterConfiguration
metadata: {name: cluster-b}
spec: {datastoreType: file, path: ../cluster-b}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: monitoring, labels: {team: ops}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {nodeName: a-node-1}
status: {phase: Running, podIP: 10.10.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: client-1, namespace: shop, labels: {app: client}}
spec: {nodeName: a-node-1}
status: {phase: Running, podIP: 10.10.0.41}
---
apiVersion: v1
kind: Pod
metadata: {name: prometheus-0, namespace: monitoring, labels: {app: prometheus}}
spec: {nodeName: a-node-1}
status: {phase: Running, podIP: 10.10.1.11}
---
# No pod may reach 198.51.100.0/24; everything else may leave.
apiVersion: fedwall.io/v1alpha1
kind: GlobalNetworkPolicy
metadata: {name: egress-guard}
spec:
  selector: all()
  types: [Egress]
  egress:
    - action: Deny
      destination: {nets: [198.51.100.0/24]}
    - action: Allow
"#;

/// cluster-a's two policies on the shop's pods, a fedwall and a Kubernetes one, each with
/// a federated meaning: the demo's file datastore and the agent's T3 test (through an API
/// server) enforce the same.
pub const SHOP_POLICIES: &str = r#"# Web pods take HTTP only from client pods, of this cluster or any remote one.
apiVersion: fedwall.io/v1alpha1
kind: NetworkPolicy
metadata: {name: allow-clients-to-web, namespace: shop}
spec:
  selector: app == 'web'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: TCP
      source: {selector: app == 'client'}
      destination: {ports: [8080]}
---
# Prometheus takes connections only from namespaces of the shop team, in any cluster.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: prometheus-from-shop, namespace: monitoring}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
    - from: [{namespaceSelector: {matchLabels: {team: shop}}}]
      ports: [{protocol: TCP, port: 9090}]
"#;

const CLUSTER_B: &str = r#"# cluster-b: a remote cluster, federated by cluster-a's RemoteClusterConfiguration.
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
"#;

fn remote_pods(batch_app: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: client-b1, namespace: shop, labels: {{app: client}}}}
spec: {{nodeName: b-node-1}}
status: {{phase: Running, podIP: 10.20.0.11}}
---
apiVersion: v1
kind: Pod
metadata: {{name: batch-b2, namespace: shop, labels: {{app: {batch_app}}}}}
spec: {{nodeName: b-node-1}}
status: {{phase: Running, podIP: 10.20.0.12}}
"#
    )
}

/// What a flow should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Connects; the receiver sees the sender's own address (`nat: false`) or the node's.
    Allowed {
        nat: bool,
    },
    Denied,
}

pub struct Flow {
    pub from: Place,
    pub to: Place,
    pub port: u16,
    pub expect: Expect,
    /// Which policy decides, for the reader.
    pub why: &'static str,
}

fn pod(cluster: &str, namespace: &str, name: &str) -> Place {
    Place::Pod(format!("{cluster}/{namespace}/{name}"))
}

fn local(namespace: &str, name: &str) -> Place {
    pod(LOCAL_CLUSTER, namespace, name)
}

fn remote(name: &str) -> Place {
    pod(REMOTE_CLUSTER, "shop", name)
}

/// The flows checked with the datastore as first written.
pub fn flows() -> Vec<Flow> {
    let web = || local("shop", "web-1");
    let prometheus = || local("monitoring", "prometheus-0");
    let client = || local("shop", "client-1");
    vec![
        Flow {
            from: remote("client-b1"),
            to: web(),
            port: 8080,
            expect: Expect::Allowed { nat: false },
            why: "allow-clients-to-web: a remote app=client",
        },
        Flow {
            from: remote("batch-b2"),
            to: web(),
            port: 8080,
            expect: Expect::Denied,
            why: "allow-clients-to-web: app=batch is no client",
        },
        Flow {
            from: client(),
            to: web(),
            port: 8080,
            expect: Expect::Allowed { nat: false },
            why: "allow-clients-to-web: a local app=client",
        },
        Flow {
            from: prometheus(),
            to: web(),
            port: 8080,
            expect: Expect::Denied,
            why: "allow-clients-to-web: not a client",
        },
        Flow {
            from: client(),
            to: prometheus(),
            port: 9090,
            expect: Expect::Allowed { nat: false },
            why: "prometheus-from-shop (Kubernetes): team=shop namespace",
        },
        Flow {
            from: Place::Ext(EXT_ADDR),
            to: prometheus(),
            port: 9090,
            expect: Expect::Denied,
            why: "prometheus-from-shop (Kubernetes): not a pod of team=shop",
        },
        Flow {
            from: client(),
            to: Place::Ext(EXT_ADDR),
            port: 7000,
            expect: Expect::Allowed { nat: true },
            why: "egress-guard allows; natOutgoing pool, outside every pool",
        },
        Flow {
            from: client(),
            to: remote("client-b1"),
            port: 7000,
            expect: Expect::Allowed { nat: false },
            why: "egress-guard allows; cluster-b's disabled pool is not NATed",
        },
        Flow {
            from: client(),
            to: Place::Ext(FORBIDDEN_ADDR),
            port: 7000,
            expect: Expect::Denied,
            why: "egress-guard (global): 198.51.100.0/24 denied",
        },
    ]
}

/// Builds the site with its pods and datastore (the agent not started).
pub fn build_site() -> anyhow::Result<Site> {
    let mut site = Site::new()?;
    for (namespace, name, addr) in LOCAL_PODS {
        site.add_local_pod(
            &format!("{LOCAL_CLUSTER}/{namespace}/{name}"),
            Ipv4Addr::from(addr),
        );
    }
    for (namespace, name, addr) in REMOTE_PODS {
        site.add_remote_pod(
            &format!("{REMOTE_CLUSTER}/{namespace}/{name}"),
            Ipv4Addr::from(addr),
        );
    }
    site.write(LOCAL_CLUSTER, "cluster.yaml", CLUSTER_A)?;
    site.write(LOCAL_CLUSTER, "policies.yaml", SHOP_POLICIES)?;
    site.write(REMOTE_CLUSTER, "cluster.yaml", CLUSTER_B)?;
    site.write(REMOTE_CLUSTER, "pods.yaml", &remote_pods("batch"))?;
    Ok(site)
}

/// Relabels cluster-b's batch-b2 as a client (or back), in its YAML.
pub fn relabel_batch(site: &Site, app: &str) -> anyhow::Result<()> {
    site.write(REMOTE_CLUSTER, "pods.yaml", &remote_pods(app))
}

/// Sends each flow and prints a row per flow; returns whether every one matched.
pub fn check(site: &Site, flows: &[Flow], out: &mut dyn Write) -> anyhow::Result<bool> {
    let mut all = true;
    let label = |flow: &Flow| format!("{} → {} tcp/{}", flow.from, flow.to, flow.port);
    let width = flows
        .iter()
        .map(|flow| label(flow).chars().count())
        .max()
        .unwrap_or(0);
    writeln!(
        out,
        "  {:<width$} {:<20} {:<38} WHY",
        "FLOW", "EXPECTED", "OBSERVED"
    )?;
    for flow in flows {
        let outcome = site.tcp(&flow.from, &flow.to, flow.port);
        let own = site.addr_of(&flow.from);
        let (observed, matched) = match (&outcome, flow.expect) {
            (Outcome::Allowed { seen_source }, Expect::Allowed { nat }) => {
                let as_seen = if *seen_source == own {
                    "its own IP"
                } else if *seen_source == NODE_ADDR {
                    "node IP: NATed"
                } else {
                    "an unexpected IP"
                };
                let expected_source = if nat { NODE_ADDR } else { own };
                (
                    format!("allowed, saw {seen_source} ({as_seen})"),
                    *seen_source == expected_source,
                )
            }
            (Outcome::Allowed { seen_source }, Expect::Denied) => {
                (format!("allowed, saw {seen_source}"), false)
            }
            (Outcome::Denied(reason), expect) => {
                (format!("denied: {reason}"), expect == Expect::Denied)
            }
        };
        let expected = match flow.expect {
            Expect::Allowed { nat: false } => "allowed, real source",
            Expect::Allowed { nat: true } => "allowed, NATed",
            Expect::Denied => "denied",
        };
        all &= matched;
        writeln!(
            out,
            "{} {:<width$} {:<20} {:<38} {}",
            if matched { "✓" } else { "✗" },
            label(flow),
            expected,
            observed,
            flow.why
        )?;
    }
    Ok(all)
}

/// The whole demo: build, start the agent, check, relabel, check, tear down. `Ok(true)`
/// only when every observation matched.
pub fn run(out: &mut dyn Write) -> anyhow::Result<bool> {
    writeln!(
        out,
        "fedwall demo: one node (cluster-a) with pods in namespaces shop and monitoring, an \
         external host, and a remote cluster (cluster-b) whose pods are in a disabled pool."
    )?;
    let site = build_site()?;
    writeln!(out, "datastore: {}", site.datastore().display())?;
    let agent = site.start_agent()?;
    writeln!(
        out,
        "fedwall agent (pid {}) is ready; it enforces on the node's pod interfaces and NATs on the uplink.\n",
        agent.pid()
    )?;
    writeln!(
        out,
        "fedwall eval \"app == 'client'\" (the agent's view, local and remote):"
    )?;
    for name in site.eval("app == 'client'")? {
        writeln!(out, "  {name}")?;
    }
    writeln!(out, "\nTraffic:")?;
    let mut all = check(&site, &flows(), out)?;

    writeln!(
        out,
        "\nRelabelling cluster-b's batch-b2 as app=client in {}/cluster-b/pods.yaml …",
        site.datastore().display()
    )?;
    relabel_batch(&site, "client")?;
    site.await_matches("app == 'client'", 3)?;
    let flipped = [Flow {
        from: remote("batch-b2"),
        to: local("shop", "web-1"),
        port: 8080,
        expect: Expect::Allowed { nat: false },
        why: "allow-clients-to-web: now a remote app=client",
    }];
    all &= check(&site, &flipped, out)?;

    let status = agent.stop()?;
    writeln!(
        out,
        "\nagent stopped ({status}); tearing down the namespaces and pins."
    )?;
    drop(site);
    writeln!(
        out,
        "{}",
        if all {
            "demo: every observation matched what the policies say"
        } else {
            "demo: some observations did NOT match (✗ above)"
        }
    )?;
    Ok(all)
}
