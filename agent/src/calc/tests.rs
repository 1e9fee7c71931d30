//! Calc, driven by datastore updates and checked through the in-memory dataplane: the
//! verdicts a user would see, the deltas a change costs, and incremental == from scratch.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use proptest::prelude::*;

use super::{Calc, CalcConfig};
use crate::dataplane::{
    Dataplane, Delta, EndpointName, Flow, MemoryDataplane, PolicyDirection, Verdict,
};
use crate::datastore::{Origin, RemoteClusterState, Update};
use crate::model::resources::{Kind, Resource, ResourceKey};

const NODE: &str = "node-1";

fn yaml(text: &str) -> Resource {
    Resource::from_yaml(serde_yaml::from_str(text).expect("test YAML parses")).expect("resource")
}

fn pod(ns: &str, name: &str, labels: &str, ip: &str, node: &str) -> Resource {
    yaml(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\n\
         spec: {{nodeName: {node}, containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]}}\n\
         status: {{phase: Running, podIP: {ip}}}"
    ))
}

fn namespace(name: &str, labels: &str) -> Resource {
    yaml(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{{labels}}}}}"
    ))
}

fn set(origin: &Origin, resource: Resource) -> Update {
    Update::Set {
        origin: origin.clone(),
        resource,
    }
}

fn remote(name: &str) -> Origin {
    Origin::Remote(name.into())
}

/// Calc plus the dataplane it feeds, flushed after every step.
struct Harness {
    calc: Calc,
    dataplane: MemoryDataplane,
}

impl Harness {
    fn new() -> Self {
        Harness {
            calc: Calc::new(CalcConfig {
                node: NODE.into(),
                cluster_name: "east".into(),
            }),
            dataplane: MemoryDataplane::new(),
        }
    }

    fn apply(&mut self, updates: impl IntoIterator<Item = Update>) -> Vec<Delta> {
        for update in updates {
            self.calc.apply(&update);
        }
        let deltas = self.calc.flush();
        for delta in &deltas {
            self.dataplane.apply(delta).unwrap_or_else(|e| {
                panic!("calc emitted a delta the dataplane rejects: {e}\n{delta:?}")
            });
        }
        deltas
    }

    fn verdict(
        &self,
        endpoint: &str,
        direction: PolicyDirection,
        src: &str,
        dst: &str,
        port: u16,
    ) -> Verdict {
        let flow = Flow {
            src: src.parse().expect("ip"),
            dst: dst.parse().expect("ip"),
            protocol: 6,
            ports: Some((40000, port)),
            icmp: None,
        };
        self.dataplane
            .decide(&EndpointName(endpoint.into()), direction, &flow)
            .unwrap_or_else(|| panic!("{endpoint} is not a local endpoint"))
            .verdict()
    }
}

const WEB: &str = "node-1/k8s/shop.web/eth0";

fn allow_clients_policy() -> Resource {
    yaml(
        r#"
apiVersion: fedwall.io/v1alpha1
kind: NetworkPolicy
metadata: {name: allow-clients, namespace: shop}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'client', namespaceSelector: all()}
    destination: {ports: [http]}
"#,
    )
}

fn federated_shop() -> Harness {
    let mut h = Harness::new();
    let west = remote("west");
    h.apply([
        set(&Origin::Local, namespace("shop", "team: a")),
        set(
            &Origin::Local,
            pod("shop", "web", "app: web", "10.0.0.10", NODE),
        ),
        set(
            &Origin::Local,
            pod("shop", "other-node", "app: web", "10.0.0.11", "node-2"),
        ),
        set(&west, pod("shop", "c1", "app: client", "10.1.0.1", "w1")),
        set(&west, pod("shop", "c2", "app: crawler", "10.1.0.2", "w1")),
        set(&Origin::Local, allow_clients_policy()),
    ]);
    h
}

#[test]
fn remote_clients_are_allowed_others_denied_and_a_relabel_flips_it() {
    let mut h = federated_shop();
    let ingress = PolicyDirection::Ingress;
    assert_eq!(
        h.verdict(WEB, ingress, "10.1.0.1", "10.0.0.10", 8080),
        Verdict::Allow
    );
    assert_eq!(
        h.verdict(WEB, ingress, "10.1.0.2", "10.0.0.10", 8080),
        Verdict::Deny
    );
    assert_eq!(
        h.verdict(WEB, ingress, "10.1.0.1", "10.0.0.10", 9090),
        Verdict::Deny,
        "only the port named http is open"
    );
    assert_eq!(
        h.dataplane.endpoints.len(),
        1,
        "only this node's endpoints are enforced here"
    );

    // Relabelling the crawler costs exactly one member change, nothing else.
    let deltas = h.apply([set(
        &remote("west"),
        pod("shop", "c2", "app: client", "10.1.0.2", "w1"),
    )]);
    assert!(
        matches!(deltas.as_slice(), [Delta::IpSetMembers { added, removed, .. }]
            if added.len() == 1 && removed.is_empty()),
        "{deltas:?}"
    );
    assert_eq!(
        h.verdict(WEB, ingress, "10.1.0.2", "10.0.0.10", 8080),
        Verdict::Allow
    );

    // Remote pod deleted: its address leaves the set.
    h.apply([Update::Delete {
        origin: remote("west"),
        key: ResourceKey {
            kind: Kind::Pod,
            namespace: Some("shop".into()),
            name: "c1".into(),
        },
    }]);
    assert_eq!(
        h.verdict(WEB, ingress, "10.1.0.1", "10.0.0.10", 8080),
        Verdict::Deny
    );
    // Egress has no policy: allowed.
    assert_eq!(
        h.verdict(WEB, PolicyDirection::Egress, "10.0.0.10", "192.0.2.1", 443),
        Verdict::Allow
    );
}

#[test]
fn an_invalid_policy_is_reported_and_every_other_policy_keeps_working() {
    let mut h = federated_shop();
    let broken = yaml(
        "apiVersion: fedwall.io/v1alpha1\nkind: NetworkPolicy\nmetadata: {name: broken, namespace: shop}\n\
         spec: {selector: all(), ingress: [{action: Deny, source: {selector: 'app = x'}}]}",
    );
    h.apply([set(&Origin::Local, broken)]);
    let problems: Vec<_> = h.calc.problems().collect();
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0]
            .message
            .contains("NetworkPolicy(shop/broken): spec.ingress[0].source.selector")
    );
    assert_eq!(
        h.verdict(WEB, PolicyDirection::Ingress, "10.1.0.1", "10.0.0.10", 8080),
        Verdict::Allow
    );

    // Breaking a valid policy keeps its last valid version and says so.
    let mut broken_allow = allow_clients_policy();
    if let Resource::NetworkPolicy(p) = &mut broken_allow {
        p.spec.selector = Some("app ==".into());
    }
    h.apply([set(&Origin::Local, broken_allow)]);
    assert!(h.calc.problems().any(|p| {
        p.message
            .ends_with("(its last valid version stays enforced)")
    }));
    assert_eq!(
        h.verdict(WEB, PolicyDirection::Ingress, "10.1.0.1", "10.0.0.10", 8080),
        Verdict::Allow
    );
}

#[test]
fn removing_the_last_policy_removes_its_sets_and_the_endpoint_allows_again() {
    let mut h = federated_shop();
    assert!(!h.dataplane.sets.is_empty());
    let deltas = h.apply([Update::Delete {
        origin: Origin::Local,
        key: ResourceKey {
            kind: Kind::NetworkPolicy,
            namespace: Some("shop".into()),
            name: "allow-clients".into(),
        },
    }]);
    assert!(
        h.dataplane.sets.is_empty(),
        "no table references a set: {deltas:?}"
    );
    assert_eq!(
        h.verdict(WEB, PolicyDirection::Ingress, "10.1.0.2", "10.0.0.10", 8080),
        Verdict::Allow
    );
    // The endpoint is updated before its sets go.
    let endpoint_at = deltas
        .iter()
        .position(|d| matches!(d, Delta::EndpointSet(_)));
    let first_delete = deltas
        .iter()
        .position(|d| matches!(d, Delta::IpSetDeleted { .. }));
    assert!(endpoint_at < first_delete, "{deltas:?}");
}

#[test]
fn namespace_labels_reach_remote_pods_through_pcns_selectors() {
    let mut h = Harness::new();
    let west = remote("west");
    h.apply([
        set(
            &Origin::Local,
            pod("shop", "web", "app: web", "10.0.0.10", NODE),
        ),
        set(&west, namespace("ops", "team: ops")),
        set(&west, pod("ops", "probe", "app: probe", "10.1.0.9", "w1")),
        set(
            &Origin::Local,
            yaml(
                r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-ops, namespace: shop}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {team: ops}}}]}]
"#,
            ),
        ),
    ]);
    let ingress = PolicyDirection::Ingress;
    assert_eq!(
        h.verdict(WEB, ingress, "10.1.0.9", "10.0.0.10", 80),
        Verdict::Allow
    );
    h.apply([set(&west, namespace("ops", "team: other"))]);
    assert_eq!(
        h.verdict(WEB, ingress, "10.1.0.9", "10.0.0.10", 80),
        Verdict::Deny
    );
}

#[test]
fn pools_become_nat_table_deltas_and_a_bad_pool_is_a_problem() {
    let mut h = Harness::new();
    let pool = |name: &str, spec: &str| {
        set(
            &Origin::Local,
            yaml(&format!(
                "apiVersion: fedwall.io/v1alpha1\nkind: IPPool\nmetadata: {{name: {name}}}\nspec: {spec}"
            )),
        )
    };
    h.apply([
        pool("local", "{cidr: 10.0.0.0/16, natOutgoing: true}"),
        pool("west", "{cidr: 10.1.0.0/16, disabled: true}"),
        pool("bad", "{cidr: nonsense}"),
    ]);
    assert_eq!(h.dataplane.pools.len(), 2);
    assert!(h.calc.problems().any(|p| p.object == "IPPool(bad)"));
    // A remote cluster cannot add pools (pools are never federated).
    h.apply([set(&remote("west"), yaml("apiVersion: fedwall.io/v1alpha1\nkind: IPPool\nmetadata: {name: x}\nspec: {cidr: 10.9.0.0/16}"))]);
    assert_eq!(h.dataplane.pools.len(), 2);
}

#[test]
fn in_sync_waits_for_every_healthy_remote_but_not_for_a_failing_one() {
    let mut h = Harness::new();
    h.calc.apply(&Update::InSync {
        origin: Origin::Local,
    });
    assert!(h.calc.in_sync());
    h.calc.apply(&Update::RemoteState {
        cluster: "west".into(),
        state: RemoteClusterState::Connecting,
    });
    assert!(!h.calc.in_sync());
    h.calc.apply(&Update::RemoteState {
        cluster: "west".into(),
        state: RemoteClusterState::ConnectionFailed("unreachable".into()),
    });
    assert!(h.calc.in_sync());
}

// ------------------------------------------------------------ incremental == from scratch

/// What the dataplane enforces, with set ids replaced by their members (ids differ
/// between runs; what they hold must not).
fn resolved(dp: &MemoryDataplane) -> String {
    let mut out = String::new();
    for (name, ep) in &dp.endpoints {
        out.push_str(&format!("{name} {:?}\n", ep.addrs));
        for direction in PolicyDirection::ALL {
            let Some(table) = ep.table(direction) else {
                out.push_str(&format!("  {} none\n", direction.name()));
                continue;
            };
            for rule in &table.rules {
                let sets = |side: &crate::dataplane::SideMatch| {
                    side.sets
                        .iter()
                        .map(|m| (m.member, dp.sets.get(&m.set).cloned().unwrap_or_default()))
                        .collect::<Vec<_>>()
                };
                out.push_str(&format!(
                    "  {} {} {:?} {:?} src {:?} {:?} dst {:?} {:?}\n",
                    direction.name(),
                    rule.origin,
                    rule.action,
                    rule.protocol,
                    sets(&rule.source),
                    rule.source.ports,
                    sets(&rule.destination),
                    rule.destination.ports,
                ));
            }
        }
    }
    out.push_str(&format!("pools {:?}\n", dp.pools));
    out
}

#[derive(Clone, Debug)]
enum Op {
    Pod {
        remote: bool,
        ns: usize,
        name: usize,
        app: usize,
        ip: u8,
        local_node: bool,
    },
    DeletePod {
        remote: bool,
        ns: usize,
        name: usize,
    },
    Namespace {
        remote: bool,
        ns: usize,
        team: usize,
    },
    Policy {
        name: usize,
        app: usize,
        peer_app: usize,
        ns_team: Option<usize>,
        deny: bool,
    },
    DeletePolicy {
        name: usize,
    },
}

const NAMESPACES: [&str; 2] = ["shop", "ops"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0..2usize, 0..4usize, 0..3usize, 1..6u8, any::<bool>()).prop_map(
            |(remote, ns, name, app, ip, local_node)| Op::Pod { remote, ns, name, app, ip, local_node }
        ),
        1 => (any::<bool>(), 0..2usize, 0..4usize).prop_map(|(remote, ns, name)| Op::DeletePod { remote, ns, name }),
        1 => (any::<bool>(), 0..2usize, 0..2usize).prop_map(|(remote, ns, team)| Op::Namespace { remote, ns, team }),
        2 => (0..3usize, 0..3usize, 0..3usize, proptest::option::of(0..2usize), any::<bool>()).prop_map(
            |(name, app, peer_app, ns_team, deny)| Op::Policy { name, app, peer_app, ns_team, deny }
        ),
        1 => (0..3usize).prop_map(|name| Op::DeletePolicy { name }),
    ]
}

fn updates(op: &Op) -> Update {
    let origin = |remote: bool| {
        if remote {
            remote_origin()
        } else {
            Origin::Local
        }
    };
    match op {
        Op::Pod {
            remote,
            ns,
            name,
            app,
            ip,
            local_node,
        } => set(
            &origin(*remote),
            pod(
                NAMESPACES[*ns],
                &format!("p{name}"),
                &format!("app: a{app}"),
                // Remote and local pods may share addresses: sets count contributors.
                &format!("10.0.0.{ip}"),
                if *local_node && !remote {
                    NODE
                } else {
                    "elsewhere"
                },
            ),
        ),
        Op::DeletePod { remote, ns, name } => Update::Delete {
            origin: origin(*remote),
            key: ResourceKey {
                kind: Kind::Pod,
                namespace: Some(NAMESPACES[*ns].into()),
                name: format!("p{name}"),
            },
        },
        Op::Namespace { remote, ns, team } => set(
            &origin(*remote),
            namespace(NAMESPACES[*ns], &format!("team: t{team}")),
        ),
        Op::Policy {
            name,
            app,
            peer_app,
            ns_team,
            deny,
        } => {
            let ns_selector = ns_team
                .map(|t| format!(", namespaceSelector: \"team == 't{t}'\""))
                .unwrap_or_default();
            set(
                &Origin::Local,
                yaml(&format!(
                    "apiVersion: fedwall.io/v1alpha1\nkind: GlobalNetworkPolicy\nmetadata: {{name: gp{name}}}\n\
                     spec: {{order: {name}, selector: \"app == 'a{app}'\", ingress: [{{action: {}, protocol: TCP, \
                     source: {{selector: \"app == 'a{peer_app}'\"{ns_selector}}}, destination: {{ports: [http, 22]}}}}]}}",
                    if *deny { "Deny" } else { "Allow" }
                )),
            )
        }
        Op::DeletePolicy { name } => Update::Delete {
            origin: Origin::Local,
            key: ResourceKey {
                kind: Kind::GlobalNetworkPolicy,
                namespace: None,
                name: format!("gp{name}"),
            },
        },
    }
}

fn remote_origin() -> Origin {
    remote("west")
}

/// The latest object per key, as a fresh agent would read them.
fn final_objects(ops: &[Op]) -> BTreeMap<(Origin, ResourceKey), Resource> {
    let mut objects = BTreeMap::new();
    for op in ops {
        match updates(op) {
            Update::Set { origin, resource } => {
                objects.insert((origin, resource.key()), resource);
            }
            Update::Delete { origin, key } => {
                objects.remove(&(origin, key));
            }
            _ => {}
        }
    }
    objects
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn incremental_updates_end_where_a_fresh_start_from_the_final_objects_does(
        ops in proptest::collection::vec(op(), 1..40),
        batch in 1..5usize,
    ) {
        let mut incremental = Harness::new();
        for chunk in ops.chunks(batch) {
            incremental.apply(chunk.iter().map(updates));
        }
        let mut fresh = Harness::new();
        fresh.apply(final_objects(&ops).into_iter().map(|((origin, _), resource)| Update::Set { origin, resource }));
        prop_assert_eq!(resolved(&incremental.dataplane), resolved(&fresh.dataplane));
        // No set is left behind that no table references.
        let referenced: BTreeSet<_> = incremental.dataplane.endpoints.values()
            .flat_map(|ep| [ep.ingress.as_ref(), ep.egress.as_ref()])
            .flatten()
            .flat_map(|t| &t.rules)
            .flat_map(|r| r.source.sets.iter().chain(&r.destination.sets))
            .map(|m| m.set)
            .collect();
        let existing: BTreeSet<_> = incremental.dataplane.sets.keys().copied().collect();
        prop_assert_eq!(referenced, existing);
    }
}

#[test]
fn addresses_shared_by_two_endpoints_stay_in_a_set_until_both_leave() {
    let mut h = federated_shop();
    // A local pod on another node with the same address as remote client c1.
    h.apply([set(
        &Origin::Local,
        pod("shop", "twin", "app: client", "10.1.0.1", "node-2"),
    )]);
    h.apply([Update::Delete {
        origin: remote("west"),
        key: ResourceKey {
            kind: Kind::Pod,
            namespace: Some("shop".into()),
            name: "c1".into(),
        },
    }]);
    let ip: IpAddr = "10.1.0.1".parse().expect("ip");
    assert_eq!(
        h.verdict(
            WEB,
            PolicyDirection::Ingress,
            &ip.to_string(),
            "10.0.0.10",
            8080
        ),
        Verdict::Allow
    );
}

#[test]
fn in_sync_waits_for_a_remote_cluster_named_by_an_rcc_before_its_source_reports() {
    let mut h = Harness::new();
    let rcc = yaml(
        "apiVersion: fedwall.io/v1alpha1\nkind: RemoteClusterConfiguration\nmetadata: {name: west}\n\
         spec: {datastoreType: file, path: /x}",
    );
    h.calc.apply(&set(&Origin::Local, rcc));
    h.calc.apply(&Update::InSync {
        origin: Origin::Local,
    });
    assert!(!h.calc.in_sync(), "west has not reported yet");
    h.calc.apply(&Update::InSync {
        origin: remote("west"),
    });
    assert!(h.calc.in_sync());
    h.calc.apply(&Update::Delete {
        origin: Origin::Local,
        key: ResourceKey {
            kind: Kind::RemoteClusterConfiguration,
            namespace: None,
            name: "west".into(),
        },
    });
    assert!(h.calc.in_sync() && h.calc.remote_states().is_empty());
}
