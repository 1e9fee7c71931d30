//! The API objects fedwall reads, in the shapes users write them (Kubernetes objects and
//! the `fedwall.io/v1alpha1` resources, with Calico's field names). Only the fields
//! fedwall uses are kept: everything else in a manifest is ignored, so the same YAML works
//! with `kubectl apply` and with the file datastore.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::plain_yaml;

/// API group and version of fedwall's own resources.
pub const FEDWALL_API_VERSION: &str = "fedwall.io/v1alpha1";

pub type LabelMap = BTreeMap<String, String>;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: LabelMap,
}

/// An integer or a string, as Kubernetes `IntOrString` and Calico's port fields allow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(n) => write!(f, "{n}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

/// Kubernetes' own schema for an integer or a string: structural CRD schemas take
/// `x-kubernetes-int-or-string` where a derive would write an `anyOf` of both.
impl JsonSchema for IntOrString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrString".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "x-kubernetes-int-or-string": true })
    }
}

// ---------------------------------------------------------------- Kubernetes core objects

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub host_network: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub container_port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    #[serde(default, rename = "podIPs", skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<PodIp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodIp {
    pub ip: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub metadata: ObjectMeta,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAccount {
    pub metadata: ObjectMeta,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: NodeStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    #[serde(rename = "type")]
    pub kind: String,
    pub address: String,
}

// ------------------------------------------------------ Kubernetes networking/v1 NetworkPolicy

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct K8sNetworkPolicy {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: K8sNetworkPolicySpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct K8sNetworkPolicySpec {
    #[serde(default)]
    pub pod_selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<K8sIngressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<K8sEgressRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct K8sIngressRule {
    /// Absent or empty: from anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<K8sPeer>,
    /// Absent or empty: every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<K8sPolicyPort>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct K8sEgressRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<K8sPeer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<K8sPolicyPort>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct K8sPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpBlock {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct K8sPolicyPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i64>,
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: LabelMap,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

// ------------------------------------------------------------------ fedwall.io/v1alpha1

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NetworkPolicy {
    /// The API server's own ObjectMeta: a CRD schema leaves it out.
    #[schemars(skip)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PolicySpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GlobalNetworkPolicy {
    /// The API server's own ObjectMeta: a CRD schema leaves it out.
    #[schemars(skip)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PolicySpec,
}

/// The spec shared by NetworkPolicy and GlobalNetworkPolicy (Calico's fields).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// Lower orders apply first; absent sorts after every number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    /// Which endpoints the policy applies to; absent means `all()`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// GlobalNetworkPolicy only: restricts the endpoints to namespaces matching this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<String>,
    /// Restricts the endpoints to those whose service account matches this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_selector: Option<String>,
    /// `Ingress`, `Egress`; absent: derived from which rule lists are present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<PolicyRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<PolicyRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpFields>,
    #[serde(default, rename = "notICMP", skip_serializing_if = "Option::is_none")]
    pub not_icmp: Option<IcmpFields>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    #[serde(default)]
    pub source: EntityRule,
    #[serde(default)]
    pub destination: EntityRule,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IcmpFields {
    #[serde(rename = "type")]
    pub icmp_type: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntityRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_nets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<IntOrString>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_accounts: Option<ServiceAccountMatch>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceAccountMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostEndpoint {
    /// The API server's own ObjectMeta: a CRD schema leaves it out.
    #[schemars(skip)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: HostEndpointSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostEndpointSpec {
    #[serde(default)]
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<String>,
    #[serde(default, rename = "expectedIPs", skip_serializing_if = "Vec::is_empty")]
    pub expected_ips: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IpPool {
    /// The API server's own ObjectMeta: a CRD schema leaves it out.
    #[schemars(skip)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: IpPoolSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpPoolSpec {
    #[serde(default)]
    pub cidr: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub nat_outgoing: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RemoteClusterConfiguration {
    /// The API server's own ObjectMeta: a CRD schema leaves it out.
    #[schemars(skip)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: RemoteClusterSpec,
    /// Written by the agent holding the status Lease, never by users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Box<RemoteClusterStatus>>,
}

/// How the agents see a remote cluster, as one of them reports it in the RCC's status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteClusterStatus {
    /// `Connecting`, `ResyncInProgress`, `InSync`, `ConnectionFailed` or `ConfigIncomplete`.
    #[serde(default)]
    pub state: String,
    /// Why the state is what it is, and the fix, when it is not `InSync`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// How many of the remote cluster's endpoints (pods and host endpoints) are known.
    #[serde(default)]
    pub endpoints: u64,
    /// When the remote cluster was last completely in sync (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    /// The node whose agent wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporter: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteClusterSpec {
    /// `kubernetes` (the default) or `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore_type: Option<String>,
    /// `datastoreType: file`: the remote cluster's manifest directory; a relative path is
    /// relative to the directory holding this object's file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_access_secret: Option<Box<SecretReference>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_inline: Option<String>,
    /// How long the last-known endpoints of an unreachable remote cluster keep being
    /// enforced (a duration: `90s`, `10m`, `1h`); absent: until it is reachable again.
    #[serde(
        default,
        rename = "staleDataTTL",
        skip_serializing_if = "Option::is_none"
    )]
    pub stale_data_ttl: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretReference {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !b
}

// ------------------------------------------------------------------ one object of any kind

/// Every kind fedwall reads, by its `apiVersion` and `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    Namespace,
    ServiceAccount,
    Node,
    K8sNetworkPolicy,
    NetworkPolicy,
    GlobalNetworkPolicy,
    HostEndpoint,
    IpPool,
    RemoteClusterConfiguration,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Pod,
        Kind::Namespace,
        Kind::ServiceAccount,
        Kind::Node,
        Kind::K8sNetworkPolicy,
        Kind::NetworkPolicy,
        Kind::GlobalNetworkPolicy,
        Kind::HostEndpoint,
        Kind::IpPool,
        Kind::RemoteClusterConfiguration,
    ];

    /// The `apiVersion` and `kind` a manifest of this kind carries.
    pub const fn type_meta(self) -> (&'static str, &'static str) {
        match self {
            Kind::Pod => ("v1", "Pod"),
            Kind::Namespace => ("v1", "Namespace"),
            Kind::ServiceAccount => ("v1", "ServiceAccount"),
            Kind::Node => ("v1", "Node"),
            Kind::K8sNetworkPolicy => ("networking.k8s.io/v1", "NetworkPolicy"),
            Kind::NetworkPolicy => (FEDWALL_API_VERSION, "NetworkPolicy"),
            Kind::GlobalNetworkPolicy => (FEDWALL_API_VERSION, "GlobalNetworkPolicy"),
            Kind::HostEndpoint => (FEDWALL_API_VERSION, "HostEndpoint"),
            Kind::IpPool => (FEDWALL_API_VERSION, "IPPool"),
            Kind::RemoteClusterConfiguration => (FEDWALL_API_VERSION, "RemoteClusterConfiguration"),
        }
    }

    pub fn from_type_meta(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.type_meta() == (api_version, kind))
    }

    pub const fn is_namespaced(self) -> bool {
        matches!(
            self,
            Kind::Pod | Kind::ServiceAccount | Kind::K8sNetworkPolicy | Kind::NetworkPolicy
        )
    }

    /// Kinds a remote cluster contributes: endpoint data only, never policy or pools.
    pub const fn is_federated(self) -> bool {
        matches!(
            self,
            Kind::Pod | Kind::Namespace | Kind::ServiceAccount | Kind::Node | Kind::HostEndpoint
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (api_version, kind) = self.type_meta();
        match self {
            Kind::K8sNetworkPolicy | Kind::NetworkPolicy => write!(f, "{kind} ({api_version})"),
            _ => f.write_str(kind),
        }
    }
}

/// Names one object: its kind, namespace (namespaced kinds only) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
}

impl ResourceKey {
    /// The key of an object of `kind` with this namespace and name as its metadata says;
    /// a namespaced object without a namespace lives in `default`, as kubectl does, and a
    /// cluster-scoped one's namespace is ignored.
    pub fn new(kind: Kind, namespace: Option<&str>, name: &str) -> ResourceKey {
        ResourceKey {
            kind,
            namespace: kind
                .is_namespaced()
                .then(|| namespace.unwrap_or("default").to_owned()),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}({}/{})", self.kind.type_meta().1, ns, self.name),
            None => write!(f, "{}({})", self.kind.type_meta().1, self.name),
        }
    }
}

/// One object of any kind fedwall reads.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Resource {
    Pod(Pod),
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    Node(Node),
    K8sNetworkPolicy(K8sNetworkPolicy),
    NetworkPolicy(NetworkPolicy),
    GlobalNetworkPolicy(GlobalNetworkPolicy),
    HostEndpoint(HostEndpoint),
    IpPool(IpPool),
    RemoteClusterConfiguration(RemoteClusterConfiguration),
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Pod(_) => Kind::Pod,
            Resource::Namespace(_) => Kind::Namespace,
            Resource::ServiceAccount(_) => Kind::ServiceAccount,
            Resource::Node(_) => Kind::Node,
            Resource::K8sNetworkPolicy(_) => Kind::K8sNetworkPolicy,
            Resource::NetworkPolicy(_) => Kind::NetworkPolicy,
            Resource::GlobalNetworkPolicy(_) => Kind::GlobalNetworkPolicy,
            Resource::HostEndpoint(_) => Kind::HostEndpoint,
            Resource::IpPool(_) => Kind::IpPool,
            Resource::RemoteClusterConfiguration(_) => Kind::RemoteClusterConfiguration,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Resource::Pod(o) => &o.metadata,
            Resource::Namespace(o) => &o.metadata,
            Resource::ServiceAccount(o) => &o.metadata,
            Resource::Node(o) => &o.metadata,
            Resource::K8sNetworkPolicy(o) => &o.metadata,
            Resource::NetworkPolicy(o) => &o.metadata,
            Resource::GlobalNetworkPolicy(o) => &o.metadata,
            Resource::HostEndpoint(o) => &o.metadata,
            Resource::IpPool(o) => &o.metadata,
            Resource::RemoteClusterConfiguration(o) => &o.metadata,
        }
    }

    pub fn key(&self) -> ResourceKey {
        let meta = self.metadata();
        ResourceKey::new(self.kind(), meta.namespace.as_deref(), &meta.name)
    }

    /// The object as one manifest document (with its `apiVersion` and `kind`), the text
    /// [`Resource::from_yaml`] reads back: for writing file datastores (benchmarks, demos).
    pub fn to_manifest(&self) -> Result<String, serde_yaml::Error> {
        let (api_version, kind) = self.kind().type_meta();
        let mut document = serde_yaml::Mapping::new();
        document.insert("apiVersion".into(), api_version.into());
        document.insert("kind".into(), kind.into());
        if let serde_yaml::Value::Mapping(fields) = serde_yaml::to_value(self)? {
            document.extend(fields);
        }
        serde_yaml::to_string(&document)
    }

    /// Parses one manifest's YAML value into a resource of the kind it declares.
    pub fn from_yaml(value: serde_yaml::Value) -> Result<Resource, ResourceError> {
        let field = |name: &str| {
            value
                .get(name)
                .and_then(serde_yaml::Value::as_str)
                .map(str::to_owned)
        };
        let (Some(api_version), Some(kind_name)) = (field("apiVersion"), field("kind")) else {
            return Err(ResourceError::MissingTypeMeta);
        };
        let kind = Kind::from_type_meta(&api_version, &kind_name).ok_or_else(|| {
            ResourceError::UnknownKind {
                api_version: api_version.clone(),
                kind: kind_name.clone(),
            }
        })?;
        Resource::parse_kind(kind, value)
    }

    /// Parses one manifest's text straight into its resource, when its first two keys are
    /// `apiVersion` and `kind` (as kubectl and [`Resource::to_manifest`] write them): one
    /// pass, no [`serde_yaml::Value`] in between, which made up a third of reading a large
    /// directory. The plain block YAML most manifests are written in is read by
    /// [`plain_yaml`], anything else by serde_yaml. `None` for anything else, valid or not:
    /// [`Resource::from_yaml`] then reads it, and says what is wrong.
    pub fn from_yaml_text(text: &str) -> Option<Resource> {
        let InOrder(resource) =
            plain_yaml::from_str(text).or_else(|| serde_yaml::from_str(text).ok())?;
        resource.checked().ok()
    }

    /// An object of `kind` as an API server returns it (JSON; list items carry no
    /// apiVersion and kind, so the caller names the kind).
    pub fn from_json(kind: Kind, value: serde_json::Value) -> Result<Resource, ResourceError> {
        Resource::parse_kind(kind, value)
    }

    /// Deserializes an object of `kind` and checks it.
    fn parse_kind<'de, D: serde::Deserializer<'de>>(
        kind: Kind,
        deserializer: D,
    ) -> Result<Resource, ResourceError> {
        let resource =
            Resource::deserialize_kind(kind, deserializer).map_err(|e| ResourceError::Shape {
                kind,
                message: e.to_string(),
            })?;
        resource.checked()
    }

    /// What every resource must have, and the namespace a namespaced one defaults to.
    fn checked(mut self) -> Result<Resource, ResourceError> {
        let kind = self.kind();
        if self.metadata().name.is_empty() {
            return Err(ResourceError::MissingName { kind });
        }
        if kind.is_namespaced() {
            self.set_default_namespace();
        }
        Ok(self)
    }

    /// Deserializes an object of `kind` from any deserializer: a parsed value (as
    /// [`Resource::from_yaml`] does) or YAML text, whose errors carry the field path and line
    /// the file datastore reports. Checks nothing beyond the shape.
    pub fn deserialize_kind<'de, D: serde::Deserializer<'de>>(
        kind: Kind,
        deserializer: D,
    ) -> Result<Resource, D::Error> {
        Ok(match kind {
            Kind::Pod => Resource::Pod(Deserialize::deserialize(deserializer)?),
            Kind::Namespace => Resource::Namespace(Deserialize::deserialize(deserializer)?),
            Kind::ServiceAccount => {
                Resource::ServiceAccount(Deserialize::deserialize(deserializer)?)
            }
            Kind::Node => Resource::Node(Deserialize::deserialize(deserializer)?),
            Kind::K8sNetworkPolicy => {
                Resource::K8sNetworkPolicy(Deserialize::deserialize(deserializer)?)
            }
            Kind::NetworkPolicy => Resource::NetworkPolicy(Deserialize::deserialize(deserializer)?),
            Kind::GlobalNetworkPolicy => {
                Resource::GlobalNetworkPolicy(Deserialize::deserialize(deserializer)?)
            }
            Kind::HostEndpoint => Resource::HostEndpoint(Deserialize::deserialize(deserializer)?),
            Kind::IpPool => Resource::IpPool(Deserialize::deserialize(deserializer)?),
            Kind::RemoteClusterConfiguration => {
                Resource::RemoteClusterConfiguration(Deserialize::deserialize(deserializer)?)
            }
        })
    }

    fn set_default_namespace(&mut self) {
        let meta = match self {
            Resource::Pod(o) => &mut o.metadata,
            Resource::ServiceAccount(o) => &mut o.metadata,
            Resource::K8sNetworkPolicy(o) => &mut o.metadata,
            Resource::NetworkPolicy(o) => &mut o.metadata,
            _ => return,
        };
        meta.namespace.get_or_insert_with(|| "default".into());
    }
}

/// A resource whose manifest starts with its `apiVersion` and `kind`: the rest of the map
/// is deserialized as that kind directly.
#[derive(Debug, PartialEq)]
pub(crate) struct InOrder(pub(crate) Resource);

impl<'de> Deserialize<'de> for InOrder {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(InOrderVisitor)
    }
}

struct InOrderVisitor;

impl<'de> serde::de::Visitor<'de> for InOrderVisitor {
    type Value = InOrder;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map starting with apiVersion and kind")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<InOrder, A::Error> {
        use serde::de::Error as _;
        let (mut api_version, mut kind) = (None::<String>, None::<String>);
        while api_version.is_none() || kind.is_none() {
            match map.next_key::<String>()?.as_deref() {
                Some("apiVersion") if api_version.is_none() => {
                    api_version = Some(map.next_value::<String>()?);
                }
                Some("kind") if kind.is_none() => kind = Some(map.next_value::<String>()?),
                _ => return Err(A::Error::custom("apiVersion and kind do not come first")),
            }
        }
        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            return Err(A::Error::custom("no apiVersion or kind"));
        };
        let kind = Kind::from_type_meta(&api_version, &kind)
            .ok_or_else(|| A::Error::custom("an unknown kind"))?;
        let rest = serde::de::value::MapAccessDeserializer::new(map);
        Resource::deserialize_kind(kind, rest).map(InOrder)
    }
}

/// Why a manifest is not a resource fedwall can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("the document has no apiVersion and kind")]
    MissingTypeMeta,
    #[error(
        "fedwall does not read {kind} objects of apiVersion {api_version} (it reads Pod, \
         Namespace, ServiceAccount, Node, networking.k8s.io/v1 NetworkPolicy, and the \
         fedwall.io/v1alpha1 NetworkPolicy, GlobalNetworkPolicy, HostEndpoint, IPPool and \
         RemoteClusterConfiguration)"
    )]
    UnknownKind { api_version: String, kind: String },
    #[error("invalid {kind}: {message}")]
    Shape { kind: Kind, message: String },
    #[error("the {kind} has no metadata.name")]
    MissingName { kind: Kind },
}
