//! Conversions from API objects, checked against what Calico makes of the same YAML.

use super::resources::{Resource, ResourceError};
use super::*;
use crate::dataplane::PortRange;
use crate::selector::Selector;

fn resource(yaml: &str) -> Resource {
    Resource::from_yaml(serde_yaml::from_str(yaml).expect("test YAML parses")).expect("a resource")
}

fn pod(yaml: &str) -> resources::Pod {
    match resource(yaml) {
        Resource::Pod(p) => p,
        other => panic!("not a pod: {other:?}"),
    }
}

const CLIENT_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: client-1, namespace: shop, labels: {app: client}}
spec:
  nodeName: node-1
  serviceAccountName: buyer
  containers: [{name: c, ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 53, protocol: UDP}]}]
status: {phase: Running, podIP: 10.0.0.5, podIPs: [{ip: 10.0.0.5}, {ip: "fd00::5"}]}
"#;

#[test]
fn a_pod_becomes_a_workload_endpoint_with_calicos_special_labels_and_our_cluster_label() {
    let ns_labels = [("team".to_owned(), "payments".to_owned())].into();
    let sa_labels = [("tier".to_owned(), "gold".to_owned())].into();
    let local = Cluster::Local("east".into());
    let ep =
        endpoint::workload_endpoint(&local, &pod(CLIENT_POD), Some(&ns_labels), Some(&sa_labels))
            .expect("valid")
            .expect("running pod has an endpoint");
    assert_eq!(ep.name, "node-1/k8s/shop.client-1/eth0");
    assert_eq!(
        ep.addrs,
        [
            "10.0.0.5".parse::<std::net::IpAddr>().expect("ip"),
            "fd00::5".parse().expect("ip")
        ]
    );
    let label = |k: &str| ep.labels.get(k).map(String::as_str);
    assert_eq!(label("app"), Some("client"));
    assert_eq!(label("projectcalico.org/namespace"), Some("shop"));
    assert_eq!(label("projectcalico.org/orchestrator"), Some("k8s"));
    assert_eq!(label("projectcalico.org/serviceaccount"), Some("buyer"));
    assert_eq!(label("pcns.team"), Some("payments"));
    assert_eq!(label("pcns.projectcalico.org/name"), Some("shop"));
    assert_eq!(label("pcsa.tier"), Some("gold"));
    assert_eq!(label("fedwall.io/cluster"), Some("east"));
    assert_eq!(ep.named_ports.len(), 2);
    assert!(ep.named_ports.contains(&NamedPort {
        name: "dns".into(),
        protocol: 17,
        port: 53
    }));

    let remote = Cluster::Remote("west".into());
    let ep = endpoint::workload_endpoint(&remote, &pod(CLIENT_POD), None, None)
        .expect("valid")
        .expect("endpoint");
    assert_eq!(ep.name, "west/node-1/k8s/shop.client-1/eth0");
    assert_eq!(
        ep.labels.get("fedwall.io/cluster").map(String::as_str),
        Some("west")
    );
}

#[test]
fn pods_without_an_address_finished_or_on_the_host_network_have_no_endpoint() {
    let local = Cluster::Local("c".into());
    for (change, why) in [
        ("status: {phase: Pending}", "no IP yet"),
        ("status: {phase: Succeeded, podIP: 10.0.0.5}", "finished"),
        (
            "spec: {nodeName: n, hostNetwork: true}\nstatus: {podIP: 10.0.0.5}",
            "host network",
        ),
    ] {
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\n{}\n{}",
            if change.starts_with("spec") {
                ""
            } else {
                "spec: {nodeName: n}"
            },
            change
        );
        assert_eq!(
            endpoint::workload_endpoint(&local, &pod(&yaml), None, None),
            Ok(None),
            "{why}"
        );
    }
    let bad = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: x}\nspec: {nodeName: n}\nstatus: {podIP: 10.0.0.500}";
    let err = endpoint::workload_endpoint(&local, &pod(bad), None, None).expect_err("bad IP");
    assert_eq!(
        err.to_string(),
        "pod x/p has an invalid IP address \"10.0.0.500\" in its status"
    );
}

fn policy(yaml: &str) -> Result<Policy, PolicyError> {
    match resource(yaml) {
        Resource::NetworkPolicy(p) => policy::from_network_policy(&p),
        Resource::GlobalNetworkPolicy(p) => policy::from_global_network_policy(&p),
        Resource::K8sNetworkPolicy(p) => policy::from_k8s_network_policy(&p),
        other => panic!("not a policy: {other:?}"),
    }
}

fn canonical(s: &Option<Selector>) -> String {
    s.as_ref().map(Selector::canonical).unwrap_or_default()
}

#[test]
fn a_namespaced_policy_scopes_its_selectors_to_its_namespace_like_calico() {
    let p = policy(
        r#"
apiVersion: fedwall.io/v1alpha1
kind: NetworkPolicy
metadata: {name: allow-client, namespace: shop}
spec:
  order: 10
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'client'}
    destination: {ports: [80, "8000:8080", http]}
  - action: Allow
    source: {namespaceSelector: team == 'ops'}
  - action: Deny
    source: {nets: [192.0.2.7/24]}
"#,
    )
    .expect("valid policy");
    assert_eq!(
        p.selector.canonical(),
        r#"(projectcalico.org/namespace == "shop" && app == "web")"#
    );
    assert_eq!(
        p.egress, None,
        "types default to Ingress when only ingress rules exist"
    );
    let ingress = p.ingress.expect("ingress applies");
    assert_eq!(
        canonical(&ingress[0].source.selector),
        r#"(projectcalico.org/namespace == "shop" && app == "client")"#
    );
    assert_eq!(
        ingress[0].destination.ports,
        [
            Port::Range(PortRange::single(80)),
            Port::Range(PortRange {
                first: 8000,
                last: 8080
            }),
            Port::Named("http".into())
        ]
    );
    assert_eq!(
        canonical(&ingress[1].source.selector),
        r#"pcns.team == "ops""#
    );
    assert_eq!(
        ingress[2].source.selector, None,
        "a nets-only side selects no endpoints"
    );
    assert_eq!(
        ingress[2].source.nets,
        ["192.0.2.0/24".parse::<ipnet::IpNet>().expect("net")]
    );
}

#[test]
fn types_default_from_the_rules_present() {
    let base =
        "apiVersion: fedwall.io/v1alpha1\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec:\n";
    let egress_only = policy(&format!("{base}  egress: [{{action: Allow}}]")).expect("valid");
    assert!(egress_only.ingress.is_none() && egress_only.egress.is_some());
    let none = policy(&format!("{base}  selector: all()")).expect("valid");
    assert_eq!(none.ingress, Some(vec![]), "no rules: ingress default deny");
    assert!(none.egress.is_none());
    let both = policy(&format!("{base}  types: [Egress]")).expect("valid");
    assert!(both.ingress.is_none() && both.egress == Some(vec![]));
}

#[test]
fn a_global_policy_reads_namespace_and_service_account_selectors_through_prefixed_labels() {
    let p = policy(
        r#"
apiVersion: fedwall.io/v1alpha1
kind: GlobalNetworkPolicy
metadata: {name: g}
spec:
  namespaceSelector: team == 'a'
  serviceAccountSelector: role == 'db'
  egress:
  - action: Allow
    destination:
      serviceAccounts: {names: [api, web], selector: tier == 'x'}
      selector: fedwall.io/cluster == 'west'
"#,
    )
    .expect("valid");
    assert_eq!(
        p.selector.canonical(),
        r#"(pcns.team == "a" && pcsa.role == "db")"#
    );
    let rule = &p.egress.expect("egress")[0];
    assert_eq!(
        canonical(&rule.destination.selector),
        r#"((pcsa.tier == "x" && projectcalico.org/serviceaccount in {"api", "web"}) && fedwall.io/cluster == "west")"#
    );
}

#[test]
fn invalid_policies_are_errors_naming_the_policy_and_field() {
    let cases = [
        (
            "selector: app = 'x'",
            "NetworkPolicy(default/p): spec.selector: invalid selector",
        ),
        (
            "ingress: [{action: Allow, destination: {ports: [80]}}]",
            "spec.ingress[0].destination.ports: ports need `protocol: TCP`",
        ),
        (
            "ingress: [{action: Maybe}]",
            "spec.ingress[0].action: unknown action \"Maybe\"",
        ),
        (
            "ingress: [{action: Allow, protocol: TCP, icmp: {type: 8}}]",
            "spec.ingress[0].icmp: an ICMP match needs `protocol: ICMP`",
        ),
        (
            "types: [Egress]\n  ingress: [{action: Allow}]",
            "spec.ingress: the policy has ingress rules but spec.types leaves out ingress",
        ),
        (
            "egress: [{action: Allow, destination: {nets: [10.0.0.0/33]}}]",
            "spec.egress[0].destination.nets[0]: \"10.0.0.0/33\" is not a CIDR",
        ),
    ];
    for (spec, expected) in cases {
        let yaml = format!(
            "apiVersion: fedwall.io/v1alpha1\nkind: NetworkPolicy\nmetadata: {{name: p}}\nspec:\n  {spec}"
        );
        let err = policy(&yaml).expect_err(spec).to_string();
        assert!(err.contains(expected), "{spec}: got {err}");
    }
}

#[test]
fn a_kubernetes_policy_becomes_one_allow_rule_per_peer_and_port() {
    let p = policy(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - podSelector: {matchExpressions: [{key: app, operator: In, values: [client, admin]}]}
    - namespaceSelector: {matchLabels: {team: ops}}
      podSelector: {}
    - ipBlock: {cidr: 198.51.100.0/24, except: [198.51.100.128/25]}
    ports: [{port: 80}, {protocol: UDP, port: 5000, endPort: 5010}, {port: http}]
"#,
    )
    .expect("valid");
    assert_eq!(p.order, Some(1000.0));
    assert_eq!(
        p.selector.canonical(),
        r#"((projectcalico.org/namespace == "shop" && projectcalico.org/orchestrator == "k8s") && app == "web")"#
    );
    assert_eq!(p.egress, None);
    let rules = p.ingress.expect("ingress");
    assert_eq!(rules.len(), 9, "3 peers x 3 ports");
    assert_eq!(
        canonical(&rules[0].source.selector),
        r#"((projectcalico.org/namespace == "shop" && projectcalico.org/orchestrator == "k8s") && app in {"admin", "client"})"#
    );
    assert_eq!(
        canonical(&rules[1].source.selector),
        r#"(pcns.team == "ops" && projectcalico.org/orchestrator == "k8s")"#
    );
    assert_eq!(
        rules[2].source.not_nets,
        ["198.51.100.128/25".parse::<ipnet::IpNet>().expect("net")]
    );
    assert_eq!(rules[3].protocol, Some(17));
    assert_eq!(
        rules[3].destination.ports,
        [Port::Range(PortRange {
            first: 5000,
            last: 5010
        })]
    );
    assert_eq!(rules[8].destination.ports, [Port::Named("http".into())]);
    assert!(rules.iter().all(|r| r.action == Action::Allow));
}

#[test]
fn one_pass_reading_takes_only_manifests_that_start_with_their_type_and_are_valid() {
    let ordered = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {x: y}}\n";
    assert_eq!(Resource::from_yaml_text(ordered), Some(resource(ordered)));
    let pod = "kind: Pod\napiVersion: v1\nmetadata: {name: p}\n";
    let Some(Resource::Pod(read)) = Resource::from_yaml_text(pod) else {
        panic!("a pod");
    };
    assert_eq!(read.metadata.namespace.as_deref(), Some("default"));
    // Left to the general reading, which accepts or explains them.
    for text in [
        "metadata: {name: a}\napiVersion: v1\nkind: Namespace\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
        "apiVersion: v1\nkind: Namespace\nmetadata: {}\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{ports: [{containerPort: x}]}]}\n",
        "apiVersion: v1\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    ] {
        assert_eq!(Resource::from_yaml_text(text), None, "{text}");
    }
}

#[test]
fn unknown_kinds_and_unnamed_objects_are_errors_that_say_what_is_read() {
    let err = Resource::from_yaml(
        serde_yaml::from_str("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}").expect("yaml"),
    )
    .expect_err("unknown kind");
    assert!(matches!(err, ResourceError::UnknownKind { .. }));
    assert!(
        err.to_string()
            .contains("fedwall does not read ConfigMap objects of apiVersion v1")
    );
    let err = Resource::from_yaml(
        serde_yaml::from_str("apiVersion: v1\nkind: Namespace\nmetadata: {}").expect("yaml"),
    )
    .expect_err("no name");
    assert_eq!(err.to_string(), "the Namespace has no metadata.name");
}

#[test]
fn pools_convert_and_bad_cidrs_name_the_pool() {
    let Resource::IpPool(pool) = resource(
        "apiVersion: fedwall.io/v1alpha1\nkind: IPPool\nmetadata: {name: west}\nspec: {cidr: 10.1.0.0/16, disabled: true}",
    ) else {
        panic!("an IPPool");
    };
    let nat = nat_pool(&pool).expect("valid");
    assert!(nat.disabled && !nat.nat_outgoing);
    let Resource::IpPool(bad) = resource(
        "apiVersion: fedwall.io/v1alpha1\nkind: IPPool\nmetadata: {name: b}\nspec: {cidr: 10.1.0.0}",
    ) else {
        panic!("an IPPool");
    };
    assert!(
        nat_pool(&bad)
            .expect_err("no prefix")
            .to_string()
            .starts_with("IPPool(b): spec.cidr \"10.1.0.0\"")
    );
}
