//! Endpoints: what rule selectors match. A running pod becomes a workload endpoint whose
//! labels are its own plus the special labels of ARCHITECTURE.md (namespace, orchestrator,
//! service account, `pcns.`/`pcsa.` copies of its namespace's and service account's labels,
//! and `fedwall.io/cluster`); a HostEndpoint becomes a host endpoint.

use std::fmt;
use std::net::IpAddr;

use fedwall_common::net::ip_proto;

use super::resources::{HostEndpoint, LabelMap, Pod};

pub const LABEL_NAMESPACE: &str = "projectcalico.org/namespace";
pub const LABEL_ORCHESTRATOR: &str = "projectcalico.org/orchestrator";
pub const LABEL_SERVICE_ACCOUNT: &str = "projectcalico.org/serviceaccount";
pub const LABEL_CLUSTER: &str = "fedwall.io/cluster";
pub const NAMESPACE_LABEL_PREFIX: &str = "pcns.";
pub const SERVICE_ACCOUNT_LABEL_PREFIX: &str = "pcsa.";
/// In a namespace selector, the namespace's own name (Calico's convention).
pub const LABEL_NAME: &str = "projectcalico.org/name";
/// The label Kubernetes puts on every namespace, holding its name.
pub const LABEL_K8S_NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";
pub const ORCHESTRATOR_K8S: &str = "k8s";

/// The cluster an endpoint belongs to: this agent's (by its configured name) or a remote
/// one (by its RemoteClusterConfiguration's name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cluster {
    Local(String),
    Remote(String),
}

impl Cluster {
    pub fn name(&self) -> &str {
        match self {
            Cluster::Local(name) | Cluster::Remote(name) => name,
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Cluster::Local(_))
    }

    /// The prefix of endpoint names: none for the local cluster, `<rcc>/` for a remote.
    fn name_prefix(&self) -> String {
        match self {
            Cluster::Local(_) => String::new(),
            Cluster::Remote(name) => format!("{name}/"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointKind {
    Workload,
    Host,
}

impl EndpointKind {
    pub const fn title(self) -> &'static str {
        match self {
            EndpointKind::Workload => "Workload endpoint",
            EndpointKind::Host => "Host endpoint",
        }
    }
}

/// A port a pod names (`containers[].ports[].name`), which rules may refer to by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedPort {
    pub name: String,
    pub protocol: u8,
    pub port: u16,
}

/// A workload or host endpoint of any cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub kind: EndpointKind,
    pub cluster: Cluster,
    /// calicoq's name: `<node>/k8s/<namespace>.<pod>/eth0` for a local pod, prefixed with
    /// `<rcc>/` for a remote one; `<node>/<name>` for a host endpoint.
    pub name: String,
    pub node: String,
    pub labels: LabelMap,
    pub addrs: Vec<IpAddr>,
    pub named_ports: Vec<NamedPort>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.title(), self.name)
    }
}

/// The pieces of a pod that make its endpoint, and why a pod has none.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("pod {namespace}/{name} has an invalid IP address {addr:?} in its status")]
    BadPodIp {
        namespace: String,
        name: String,
        addr: String,
    },
    #[error("HostEndpoint {name} has an invalid expected IP {addr:?}")]
    BadHostIp { name: String, addr: String },
    #[error("HostEndpoint {name} names no node (spec.node)")]
    HostWithoutNode { name: String },
}

/// A workload endpoint for `pod`, or `None` when it has none: not yet scheduled or given
/// an address, finished (`Succeeded`/`Failed`), or on the host's network (such a pod is
/// the host as far as policy goes).
pub fn workload_endpoint(
    cluster: &Cluster,
    pod: &Pod,
    namespace_labels: Option<&LabelMap>,
    service_account_labels: Option<&LabelMap>,
) -> Result<Option<Endpoint>, EndpointError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let finished = matches!(pod.status.phase.as_deref(), Some("Succeeded" | "Failed"));
    let Some(node) = pod.spec.node_name.as_deref() else {
        return Ok(None);
    };
    if finished || pod.spec.host_network {
        return Ok(None);
    }
    let mut texts: Vec<&str> = pod.status.pod_ips.iter().map(|ip| ip.ip.as_str()).collect();
    if texts.is_empty() {
        texts.extend(pod.status.pod_ip.as_deref());
    }
    if texts.is_empty() {
        return Ok(None);
    }
    let mut addrs = Vec::with_capacity(texts.len());
    for text in texts {
        let addr = text.parse().map_err(|_| EndpointError::BadPodIp {
            namespace: namespace.to_owned(),
            name: pod.metadata.name.clone(),
            addr: text.to_owned(),
        })?;
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    let service_account = pod
        .spec
        .service_account_name
        .as_deref()
        .unwrap_or("default");

    let mut labels = pod.metadata.labels.clone();
    labels.insert(LABEL_SERVICE_ACCOUNT.into(), service_account.into());
    labels.insert(LABEL_NAMESPACE.into(), namespace.into());
    labels.insert(LABEL_ORCHESTRATOR.into(), ORCHESTRATOR_K8S.into());
    labels.insert(LABEL_CLUSTER.into(), cluster.name().into());
    apply_namespace_labels(&mut labels, namespace_labels, service_account_labels);

    let named_ports = pod
        .spec
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .filter_map(|p| {
            let name = p.name.clone()?;
            let port = u16::try_from(p.container_port).ok()?;
            let protocol = protocol_number(p.protocol.as_deref().unwrap_or("TCP"))?;
            Some(NamedPort {
                name,
                protocol,
                port,
            })
        })
        .collect();

    Ok(Some(Endpoint {
        kind: EndpointKind::Workload,
        name: format!(
            "{}{node}/k8s/{namespace}.{}/eth0",
            cluster.name_prefix(),
            pod.metadata.name
        ),
        cluster: cluster.clone(),
        node: node.to_owned(),
        labels,
        addrs,
        named_ports,
    }))
}

/// Replaces a workload endpoint's `pcns.` and `pcsa.` labels with those of its namespace
/// and service account (whose names its labels hold). These prefixes are reserved: a pod's
/// own labels that use them are dropped, so an endpoint's labels depend only on the
/// current pod, namespace and service account, whatever order they arrived in.
pub fn apply_namespace_labels(
    labels: &mut LabelMap,
    namespace_labels: Option<&LabelMap>,
    service_account_labels: Option<&LabelMap>,
) {
    labels.retain(|key, _| {
        !key.starts_with(NAMESPACE_LABEL_PREFIX) && !key.starts_with(SERVICE_ACCOUNT_LABEL_PREFIX)
    });
    let namespace = labels.get(LABEL_NAMESPACE).cloned().unwrap_or_default();
    for (key, value) in namespace_labels.into_iter().flatten() {
        labels.insert(format!("{NAMESPACE_LABEL_PREFIX}{key}"), value.clone());
    }
    // Calico lets a namespace selector name the namespace itself; Kubernetes ≥ 1.21 adds
    // `kubernetes.io/metadata.name` to every namespace, which manifests may lack.
    for key in [LABEL_NAME, LABEL_K8S_NAMESPACE_NAME] {
        labels
            .entry(format!("{NAMESPACE_LABEL_PREFIX}{key}"))
            .or_insert_with(|| namespace.clone());
    }
    for (key, value) in service_account_labels.into_iter().flatten() {
        labels.insert(
            format!("{SERVICE_ACCOUNT_LABEL_PREFIX}{key}"),
            value.clone(),
        );
    }
}

/// The host endpoint a HostEndpoint object describes.
pub fn host_endpoint(cluster: &Cluster, hep: &HostEndpoint) -> Result<Endpoint, EndpointError> {
    let name = &hep.metadata.name;
    if hep.spec.node.is_empty() {
        return Err(EndpointError::HostWithoutNode { name: name.clone() });
    }
    let addrs = hep
        .spec
        .expected_ips
        .iter()
        .map(|text| {
            text.parse().map_err(|_| EndpointError::BadHostIp {
                name: name.clone(),
                addr: text.clone(),
            })
        })
        .collect::<Result<Vec<IpAddr>, _>>()?;
    let mut labels = hep.metadata.labels.clone();
    labels.insert(LABEL_CLUSTER.into(), cluster.name().into());
    Ok(Endpoint {
        kind: EndpointKind::Host,
        name: format!("{}{}/{name}", cluster.name_prefix(), hep.spec.node),
        cluster: cluster.clone(),
        node: hep.spec.node.clone(),
        labels,
        addrs,
        named_ports: Vec::new(),
    })
}

/// The IP protocol number of a protocol as policies and pods name it: `TCP`, `UDP`,
/// `ICMP`, `ICMPv6`, `SCTP`, `UDPLite` (any case), or a number 1–255.
/// The protocol's name as policies write it (`tcp`, …), or its number.
pub fn protocol_name(number: u8) -> String {
    match number {
        ip_proto::TCP => "tcp".into(),
        ip_proto::UDP => "udp".into(),
        ip_proto::ICMP => "icmp".into(),
        ip_proto::ICMPV6 => "icmpv6".into(),
        ip_proto::SCTP => "sctp".into(),
        ip_proto::UDPLITE => "udplite".into(),
        other => other.to_string(),
    }
}

pub fn protocol_number(name: &str) -> Option<u8> {
    match name.to_ascii_lowercase().as_str() {
        "tcp" => Some(ip_proto::TCP),
        "udp" => Some(ip_proto::UDP),
        "icmp" => Some(ip_proto::ICMP),
        "icmpv6" => Some(ip_proto::ICMPV6),
        "sctp" => Some(ip_proto::SCTP),
        "udplite" => Some(ip_proto::UDPLITE),
        other => other.parse::<u8>().ok().filter(|&n| n != 0),
    }
}
