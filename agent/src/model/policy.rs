//! Policies as calc uses them, from fedwall NetworkPolicy / GlobalNetworkPolicy (Calico's
//! fields and semantics) and from Kubernetes NetworkPolicy (converted the way Calico does).
//! Every selector a policy holds is already composed: a namespaced policy's selectors are
//! scoped to its namespace, namespace and service-account selectors are rewritten onto
//! the endpoints' `pcns.` / `pcsa.` labels. A policy that cannot be converted is an error
//! naming the policy, the field and the fix; other policies are unaffected.

use std::cmp::Ordering;
use std::fmt;

use ipnet::IpNet;

use super::endpoint::{
    LABEL_NAMESPACE, LABEL_ORCHESTRATOR, LABEL_SERVICE_ACCOUNT, NAMESPACE_LABEL_PREFIX,
    ORCHESTRATOR_K8S, SERVICE_ACCOUNT_LABEL_PREFIX, protocol_number,
};
use super::resources::{
    EntityRule, GlobalNetworkPolicy, IcmpFields, IntOrString, K8sNetworkPolicy, K8sPeer,
    K8sPolicyPort, LabelSelector, NetworkPolicy, ObjectMeta, PolicyRule, PolicySpec,
};
use crate::dataplane::{IcmpMatch, PolicyDirection, PortRange};
use crate::selector::{Selector, quote_literal};
use fedwall_common::net::ip_proto;

/// The order Calico gives every Kubernetes NetworkPolicy.
pub const K8S_POLICY_ORDER: f64 = 1000.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// fedwall.io NetworkPolicy (namespaced).
    Namespaced,
    /// fedwall.io GlobalNetworkPolicy.
    Global,
    /// networking.k8s.io NetworkPolicy.
    Kubernetes,
}

/// Names one policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub kind: PolicyKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.namespace.as_deref().unwrap_or("default");
        match self.kind {
            PolicyKind::Namespaced => write!(f, "NetworkPolicy({ns}/{})", self.name),
            PolicyKind::Global => write!(f, "GlobalNetworkPolicy({})", self.name),
            PolicyKind::Kubernetes => {
                write!(f, "NetworkPolicy.networking.k8s.io({ns}/{})", self.name)
            }
        }
    }
}

/// What a rule does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
    Log,
    /// Skip the rest of the tier; fedwall has one tier, so the packet goes on to the
    /// namespace profile, which allows (as in Calico with no other tier).
    Pass,
}

/// A port condition: a numeric range or a named port of the endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    Range(PortRange),
    Named(String),
}

/// One side (source or destination) of a rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSide {
    /// Composed selector the peer must match (selector, namespace scope, service accounts).
    pub selector: Option<Selector>,
    pub not_selector: Option<Selector>,
    pub nets: Vec<IpNet>,
    pub not_nets: Vec<IpNet>,
    pub ports: Vec<Port>,
    pub not_ports: Vec<Port>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpVersion {
    V4,
    V6,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub protocol: Option<u8>,
    pub not_protocol: Option<u8>,
    pub icmp: Option<IcmpMatch>,
    pub not_icmp: Option<IcmpMatch>,
    pub ip_version: Option<IpVersion>,
    pub source: RuleSide,
    pub destination: RuleSide,
}

/// A policy, converted and validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub key: PolicyKey,
    /// Lower first; `None` after every number.
    pub order: Option<f64>,
    /// Which local endpoints the policy applies to.
    pub selector: Selector,
    /// `None` when the policy does not apply to ingress.
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

impl Policy {
    pub fn rules(&self, direction: PolicyDirection) -> Option<&[Rule]> {
        match direction {
            PolicyDirection::Ingress => self.ingress.as_deref(),
            PolicyDirection::Egress => self.egress.as_deref(),
        }
    }

    /// Calico's policy order: by `order` (absent last), then by name.
    pub fn cmp_order(&self, other: &Policy) -> Ordering {
        let order = |p: &Policy| p.order.unwrap_or(f64::INFINITY);
        order(self)
            .total_cmp(&order(other))
            .then_with(|| self.sort_name().cmp(&other.sort_name()))
            .then_with(|| self.key.cmp(&other.key))
    }

    fn sort_name(&self) -> String {
        match (&self.key.kind, &self.key.namespace) {
            (PolicyKind::Kubernetes, Some(ns)) => format!("{ns}/knp.default.{}", self.key.name),
            (_, Some(ns)) => format!("{ns}/{}", self.key.name),
            (_, None) => self.key.name.clone(),
        }
    }
}

/// Why a policy cannot be enforced: the policy, the field, and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{policy}: {field}: {message}")]
pub struct PolicyError {
    pub policy: PolicyKey,
    pub field: String,
    pub message: String,
}

impl PolicyKey {
    /// The key of a policy of `kind` with `meta`; namespaced kinds default to `default`,
    /// as kubectl does.
    fn of(kind: PolicyKind, meta: &ObjectMeta) -> PolicyKey {
        PolicyKey {
            kind,
            namespace: (kind != PolicyKind::Global)
                .then(|| meta.namespace.clone().unwrap_or_else(|| "default".into())),
            name: meta.name.clone(),
        }
    }
}

/// Converts a fedwall.io NetworkPolicy.
pub fn from_network_policy(policy: &NetworkPolicy) -> Result<Policy, PolicyError> {
    let key = PolicyKey::of(PolicyKind::Namespaced, &policy.metadata);
    let namespace = key.namespace.clone();
    Converter { key }.calico(&policy.spec, namespace.as_deref())
}

/// Converts a fedwall.io GlobalNetworkPolicy.
pub fn from_global_network_policy(policy: &GlobalNetworkPolicy) -> Result<Policy, PolicyError> {
    let key = PolicyKey::of(PolicyKind::Global, &policy.metadata);
    Converter { key }.calico(&policy.spec, None)
}

/// Converts a Kubernetes NetworkPolicy the way Calico does: order 1000, one Allow rule per
/// (peer, port) pair, peers that match pods of any cluster whose namespace matches.
pub fn from_k8s_network_policy(policy: &K8sNetworkPolicy) -> Result<Policy, PolicyError> {
    let key = PolicyKey::of(PolicyKind::Kubernetes, &policy.metadata);
    let namespace = key.namespace.clone().unwrap_or_default();
    Converter { key }.kubernetes(policy, &namespace)
}

struct Converter {
    key: PolicyKey,
}

impl Converter {
    fn error(&self, field: impl Into<String>, message: impl Into<String>) -> PolicyError {
        PolicyError {
            policy: self.key.clone(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn selector(&self, field: &str, text: &str) -> Result<Selector, PolicyError> {
        Selector::parse(text).map_err(|e| {
            self.error(
                field,
                format!("invalid selector {text:?}: {e}; see `fedwall selector parse`"),
            )
        })
    }

    fn namespace_scope(namespace: &str) -> Selector {
        equals(LABEL_NAMESPACE, namespace)
    }

    /// A namespace selector rewritten onto endpoint labels; `all()` means "in any
    /// namespace", which host endpoints are not.
    fn namespace_selector(&self, field: &str, text: &str) -> Result<Selector, PolicyError> {
        let selector = self.selector(field, text)?;
        Ok(if selector.is_all() {
            has(LABEL_NAMESPACE)
        } else {
            selector.with_label_prefix(NAMESPACE_LABEL_PREFIX)
        })
    }

    fn calico(&self, spec: &PolicySpec, namespace: Option<&str>) -> Result<Policy, PolicyError> {
        let mut selector = match &spec.selector {
            Some(text) => self.selector("spec.selector", text)?,
            None => Selector::all(),
        };
        match (namespace, &spec.namespace_selector) {
            (Some(_), Some(_)) => {
                return Err(self.error(
                    "spec.namespaceSelector",
                    "only a GlobalNetworkPolicy has a namespaceSelector; a NetworkPolicy \
                     applies to its own namespace",
                ));
            }
            (Some(ns), None) => selector = Self::namespace_scope(ns).and(&selector),
            (None, Some(text)) => {
                selector = self
                    .namespace_selector("spec.namespaceSelector", text)?
                    .and(&selector)
            }
            (None, None) => {}
        }
        if let Some(text) = &spec.service_account_selector {
            let sa = self
                .selector("spec.serviceAccountSelector", text)?
                .with_label_prefix(SERVICE_ACCOUNT_LABEL_PREFIX);
            selector = selector.and(&sa);
        }

        let (mut applies_ingress, mut applies_egress) = match &spec.types {
            None => {
                let egress_only = spec.ingress.is_empty() && !spec.egress.is_empty();
                (!egress_only, !spec.egress.is_empty())
            }
            Some(_) => (false, false),
        };
        for (i, t) in spec.types.iter().flatten().enumerate() {
            match t.to_ascii_lowercase().as_str() {
                "ingress" => applies_ingress = true,
                "egress" => applies_egress = true,
                _ => {
                    return Err(self.error(
                        format!("spec.types[{i}]"),
                        format!("unknown policy type {t:?}: use Ingress or Egress"),
                    ));
                }
            }
        }
        for (direction, applies, rules) in [
            ("ingress", applies_ingress, &spec.ingress),
            ("egress", applies_egress, &spec.egress),
        ] {
            if !applies && !rules.is_empty() {
                return Err(self.error(
                    format!("spec.{direction}"),
                    format!(
                        "the policy has {direction} rules but spec.types leaves out \
                         {direction}: add it to spec.types or remove the rules"
                    ),
                ));
            }
        }
        let convert = |direction: PolicyDirection, rules: &[PolicyRule]| {
            rules
                .iter()
                .enumerate()
                .map(|(i, rule)| {
                    let field = format!("spec.{}[{i}]", direction.name());
                    self.calico_rule(&field, direction, rule, namespace)
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let ingress = applies_ingress
            .then(|| convert(PolicyDirection::Ingress, &spec.ingress))
            .transpose()?;
        let egress = applies_egress
            .then(|| convert(PolicyDirection::Egress, &spec.egress))
            .transpose()?;
        if spec.order.is_some_and(|o| !o.is_finite()) {
            return Err(self.error("spec.order", "the order must be a finite number"));
        }
        Ok(Policy {
            key: self.key.clone(),
            order: spec.order,
            selector,
            ingress,
            egress,
        })
    }

    fn calico_rule(
        &self,
        field: &str,
        direction: PolicyDirection,
        rule: &PolicyRule,
        namespace: Option<&str>,
    ) -> Result<Rule, PolicyError> {
        let action = match rule.action.to_ascii_lowercase().as_str() {
            "allow" => Action::Allow,
            "deny" => Action::Deny,
            "log" => Action::Log,
            "pass" => Action::Pass,
            _ => {
                return Err(self.error(
                    format!("{field}.action"),
                    format!(
                        "unknown action {:?}: use Allow, Deny, Log or Pass",
                        rule.action
                    ),
                ));
            }
        };
        let protocol = self.protocol(&format!("{field}.protocol"), rule.protocol.as_ref())?;
        let not_protocol =
            self.protocol(&format!("{field}.notProtocol"), rule.not_protocol.as_ref())?;
        let icmp = self.icmp(&format!("{field}.icmp"), rule.icmp.as_ref(), protocol)?;
        let not_icmp = self.icmp(
            &format!("{field}.notICMP"),
            rule.not_icmp.as_ref(),
            protocol,
        )?;
        let ip_version = match rule.ip_version {
            None => None,
            Some(4) => Some(IpVersion::V4),
            Some(6) => Some(IpVersion::V6),
            Some(other) => {
                return Err(self.error(
                    format!("{field}.ipVersion"),
                    format!("ipVersion {other} is neither 4 nor 6"),
                ));
            }
        };
        let source = self.side(
            &format!("{field}.source"),
            &rule.source,
            namespace,
            protocol,
        )?;
        let destination = self.side(
            &format!("{field}.destination"),
            &rule.destination,
            namespace,
            protocol,
        )?;
        // A named port on the peer's side means "the peer's port of that name", which
        // differs per peer: fedwall matches it through per-port-number sets, which can say
        // "is" but not "is not". Rejecting beats silently widening the rule.
        let (peer, peer_field, own_field) = match direction {
            PolicyDirection::Ingress => (&source, "source", "destination"),
            PolicyDirection::Egress => (&destination, "destination", "source"),
        };
        if peer.not_ports.iter().any(|p| matches!(p, Port::Named(_))) {
            return Err(self.error(
                format!("{field}.{peer_field}.notPorts"),
                format!(
                    "named ports in notPorts are only supported on the policy's own endpoint \
                     side (the {own_field} of an {} rule): use port numbers here",
                    direction.name()
                ),
            ));
        }
        Ok(Rule {
            action,
            protocol,
            not_protocol,
            icmp,
            not_icmp,
            ip_version,
            source,
            destination,
        })
    }

    fn protocol(
        &self,
        field: &str,
        value: Option<&IntOrString>,
    ) -> Result<Option<u8>, PolicyError> {
        let Some(value) = value else {
            return Ok(None);
        };
        let number = match value {
            IntOrString::Int(n) => u8::try_from(*n).ok().filter(|&n| n != 0),
            IntOrString::String(s) => protocol_number(s),
        };
        number.map(Some).ok_or_else(|| {
            self.error(
                field,
                format!(
                    "unknown protocol {value}: use TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a \
                     number from 1 to 255"
                ),
            )
        })
    }

    fn icmp(
        &self,
        field: &str,
        value: Option<&IcmpFields>,
        protocol: Option<u8>,
    ) -> Result<Option<IcmpMatch>, PolicyError> {
        let Some(value) = value else {
            return Ok(None);
        };
        if !matches!(protocol, Some(ip_proto::ICMP | ip_proto::ICMPV6)) {
            return Err(self.error(
                field,
                "an ICMP match needs `protocol: ICMP` or `protocol: ICMPv6` on the rule",
            ));
        }
        let Some(icmp_type) = value.icmp_type else {
            return Err(self.error(field, "an ICMP match needs a type (0-254)"));
        };
        let icmp_type = u8::try_from(icmp_type)
            .ok()
            .filter(|&t| t != 255)
            .ok_or_else(|| self.error(format!("{field}.type"), "the ICMP type must be 0-254"))?;
        let code = value
            .code
            .map(|c| {
                u8::try_from(c)
                    .map_err(|_| self.error(format!("{field}.code"), "the ICMP code must be 0-255"))
            })
            .transpose()?;
        Ok(Some(IcmpMatch { icmp_type, code }))
    }

    fn side(
        &self,
        field: &str,
        entity: &EntityRule,
        namespace: Option<&str>,
        protocol: Option<u8>,
    ) -> Result<RuleSide, PolicyError> {
        // Which namespaces the selectors reach: the namespaceSelector's, else (in a
        // namespaced policy) the policy's own; composed only when the rule selects
        // endpoints at all, exactly as Calico's converter does.
        let namespace_scope = match (&entity.namespace_selector, namespace) {
            (Some(text), _) => {
                Some(self.namespace_selector(&format!("{field}.namespaceSelector"), text)?)
            }
            (None, Some(ns)) => Some(Self::namespace_scope(ns)),
            (None, None) => None,
        };
        let mut selector = None::<Selector>;
        if let Some(sam) = &entity.service_accounts {
            let mut sa = Selector::all();
            if let Some(text) = &sam.selector {
                sa = self
                    .selector(&format!("{field}.serviceAccounts.selector"), text)?
                    .with_label_prefix(SERVICE_ACCOUNT_LABEL_PREFIX);
            }
            if !sam.names.is_empty() {
                sa = sa.and(&in_set(LABEL_SERVICE_ACCOUNT, &sam.names).ok_or_else(|| {
                    self.error(
                        format!("{field}.serviceAccounts.names"),
                        "a service account name cannot hold both quote characters",
                    )
                })?);
            }
            selector = Some(sa);
        }
        if let Some(text) = &entity.selector {
            let own = self.selector(&format!("{field}.selector"), text)?;
            selector = Some(match selector {
                Some(sa) => sa.and(&own),
                None => own,
            });
        }
        let not_selector = entity
            .not_selector
            .as_deref()
            .map(|text| self.selector(&format!("{field}.notSelector"), text))
            .transpose()?;
        if let Some(scope) = namespace_scope {
            let selects_endpoints =
                selector.is_some() || not_selector.is_some() || entity.namespace_selector.is_some();
            if selects_endpoints {
                selector = Some(match selector {
                    Some(own) => scope.and(&own),
                    None => scope,
                });
            }
        }
        let nets = self.nets(&format!("{field}.nets"), &entity.nets)?;
        let not_nets = self.nets(&format!("{field}.notNets"), &entity.not_nets)?;
        let ports = self.ports(&format!("{field}.ports"), &entity.ports, protocol)?;
        let not_ports = self.ports(&format!("{field}.notPorts"), &entity.not_ports, protocol)?;
        Ok(RuleSide {
            selector,
            not_selector,
            nets,
            not_nets,
            ports,
            not_ports,
        })
    }

    fn nets(&self, field: &str, texts: &[String]) -> Result<Vec<IpNet>, PolicyError> {
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                parse_net(text).ok_or_else(|| {
                    self.error(
                        format!("{field}[{i}]"),
                        format!("{text:?} is not a CIDR or an IP address"),
                    )
                })
            })
            .collect()
    }

    fn ports(
        &self,
        field: &str,
        values: &[IntOrString],
        protocol: Option<u8>,
    ) -> Result<Vec<Port>, PolicyError> {
        if !values.is_empty() && !protocol.is_some_and(has_ports) {
            return Err(self.error(
                field,
                "ports need `protocol: TCP`, `UDP`, `SCTP` or `UDPLite` on the rule",
            ));
        }
        values
            .iter()
            .enumerate()
            .map(|(i, value)| {
                parse_port(value).ok_or_else(|| {
                    self.error(
                        format!("{field}[{i}]"),
                        format!(
                            "{value:?} is not a port: use a number (80), a range (8000:8080) \
                             or a named port"
                        ),
                    )
                })
            })
            .collect()
    }

    fn kubernetes(
        &self,
        policy: &K8sNetworkPolicy,
        namespace: &str,
    ) -> Result<Policy, PolicyError> {
        let spec = &policy.spec;
        let pods = self.label_selector("spec.podSelector", &spec.pod_selector)?;
        let selector = Self::namespace_scope(namespace)
            .and(&equals(LABEL_ORCHESTRATOR, ORCHESTRATOR_K8S))
            .and(&pods);
        let (mut ingress_applies, mut egress_applies) = (true, !spec.egress.is_empty());
        if let Some(types) = &spec.policy_types {
            (ingress_applies, egress_applies) = (false, false);
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => ingress_applies = true,
                    "Egress" => egress_applies = true,
                    _ => {
                        return Err(self.error(
                            format!("spec.policyTypes[{i}]"),
                            format!("unknown policy type {t:?}: use Ingress or Egress"),
                        ));
                    }
                }
            }
        }
        let mut ingress = Vec::new();
        for (i, rule) in spec.ingress.iter().enumerate() {
            let field = format!("spec.ingress[{i}]");
            ingress.extend(self.k8s_rules(&field, &rule.from, &rule.ports, namespace, true)?);
        }
        let mut egress = Vec::new();
        for (i, rule) in spec.egress.iter().enumerate() {
            let field = format!("spec.egress[{i}]");
            egress.extend(self.k8s_rules(&field, &rule.to, &rule.ports, namespace, false)?);
        }
        Ok(Policy {
            key: self.key.clone(),
            order: Some(K8S_POLICY_ORDER),
            selector,
            ingress: ingress_applies.then_some(ingress),
            egress: egress_applies.then_some(egress),
        })
    }

    /// One Kubernetes rule as Calico rules: one per (port, peer) pair, ports on the
    /// destination, peers on the far side (source for ingress, destination for egress).
    fn k8s_rules(
        &self,
        field: &str,
        peers: &[K8sPeer],
        ports: &[K8sPolicyPort],
        namespace: &str,
        ingress: bool,
    ) -> Result<Vec<Rule>, PolicyError> {
        let peer_field = if ingress { "from" } else { "to" };
        let peer_sides = if peers.is_empty() {
            vec![RuleSide::default()]
        } else {
            peers
                .iter()
                .enumerate()
                .map(|(i, peer)| {
                    self.k8s_peer(&format!("{field}.{peer_field}[{i}]"), peer, namespace)
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let port_matches = if ports.is_empty() {
            vec![(None, Vec::new())]
        } else {
            ports
                .iter()
                .enumerate()
                .map(|(i, port)| self.k8s_port(&format!("{field}.ports[{i}]"), port))
                .collect::<Result<Vec<_>, _>>()?
        };
        let mut rules = Vec::with_capacity(peer_sides.len() * port_matches.len());
        for (protocol, dst_ports) in &port_matches {
            for peer in &peer_sides {
                let mut destination = RuleSide {
                    ports: dst_ports.clone(),
                    ..RuleSide::default()
                };
                let mut source = RuleSide::default();
                let far = if ingress {
                    &mut source
                } else {
                    &mut destination
                };
                far.selector = peer.selector.clone();
                far.nets = peer.nets.clone();
                far.not_nets = peer.not_nets.clone();
                rules.push(Rule {
                    action: Action::Allow,
                    protocol: *protocol,
                    not_protocol: None,
                    icmp: None,
                    not_icmp: None,
                    ip_version: None,
                    source,
                    destination,
                });
            }
        }
        Ok(rules)
    }

    fn k8s_peer(
        &self,
        field: &str,
        peer: &K8sPeer,
        namespace: &str,
    ) -> Result<RuleSide, PolicyError> {
        if let Some(block) = &peer.ip_block {
            if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
                return Err(self.error(
                    field,
                    "a peer with ipBlock cannot also have podSelector or namespaceSelector",
                ));
            }
            let nets = self.nets(
                &format!("{field}.ipBlock.cidr"),
                std::slice::from_ref(&block.cidr),
            )?;
            let not_nets = self.nets(&format!("{field}.ipBlock.except"), &block.except)?;
            return Ok(RuleSide {
                nets,
                not_nets,
                ..RuleSide::default()
            });
        }
        let pods = peer
            .pod_selector
            .as_ref()
            .map(|s| self.label_selector(&format!("{field}.podSelector"), s))
            .transpose()?
            .unwrap_or_else(Selector::all);
        let namespaces = match &peer.namespace_selector {
            Some(s) => {
                let selector = self.label_selector(&format!("{field}.namespaceSelector"), s)?;
                if selector.is_all() {
                    has(LABEL_NAMESPACE)
                } else {
                    selector.with_label_prefix(NAMESPACE_LABEL_PREFIX)
                }
            }
            None => Self::namespace_scope(namespace),
        };
        let selector = namespaces
            .and(&equals(LABEL_ORCHESTRATOR, ORCHESTRATOR_K8S))
            .and(&pods);
        Ok(RuleSide {
            selector: Some(selector),
            ..RuleSide::default()
        })
    }

    fn k8s_port(
        &self,
        field: &str,
        port: &K8sPolicyPort,
    ) -> Result<(Option<u8>, Vec<Port>), PolicyError> {
        let protocol_name = port.protocol.as_deref().unwrap_or("TCP");
        let protocol = protocol_number(protocol_name)
            .filter(|&p| has_ports(p))
            .ok_or_else(|| {
                self.error(
                    format!("{field}.protocol"),
                    format!("unknown protocol {protocol_name:?}: use TCP, UDP or SCTP"),
                )
            })?;
        let ports = match (&port.port, port.end_port) {
            (None, _) => Vec::new(),
            (Some(IntOrString::String(name)), None) if name.parse::<u16>().is_err() => {
                vec![Port::Named(name.clone())]
            }
            (Some(start), end) => {
                let first = match start {
                    IntOrString::Int(n) => u16::try_from(*n).ok(),
                    IntOrString::String(s) => s.parse().ok(),
                };
                let last = match end {
                    None => first,
                    Some(end) => u16::try_from(end).ok(),
                };
                match (first, last) {
                    (Some(first), Some(last)) if first <= last => {
                        vec![Port::Range(PortRange { first, last })]
                    }
                    _ => {
                        return Err(self.error(
                            field,
                            "port and endPort must be numbers 0-65535 with port ≤ endPort \
                             (endPort cannot follow a named port)",
                        ));
                    }
                }
            }
        };
        Ok((Some(protocol), ports))
    }

    /// A Kubernetes label selector in the selector language.
    fn label_selector(
        &self,
        field: &str,
        selector: &LabelSelector,
    ) -> Result<Selector, PolicyError> {
        let mut terms = Vec::new();
        let quote = |value: &str| {
            quote_literal(value).ok_or_else(|| {
                self.error(
                    field,
                    format!("the value {value:?} holds both quote characters"),
                )
            })
        };
        for (key, value) in &selector.match_labels {
            terms.push(format!("{key} == {}", quote(value)?));
        }
        for (i, req) in selector.match_expressions.iter().enumerate() {
            let values = req
                .values
                .iter()
                .map(|v| quote(v))
                .collect::<Result<Vec<_>, _>>()?
                .join(", ");
            let key = &req.key;
            terms.push(match req.operator.as_str() {
                "In" => format!("{key} in {{{values}}}"),
                "NotIn" => format!("{key} not in {{{values}}}"),
                "Exists" => format!("has({key})"),
                "DoesNotExist" => format!("!has({key})"),
                other => {
                    return Err(self.error(
                        format!("{field}.matchExpressions[{i}].operator"),
                        format!(
                            "unknown operator {other:?}: use In, NotIn, Exists or DoesNotExist"
                        ),
                    ));
                }
            });
        }
        let text = terms
            .iter()
            .map(|t| format!("({t})"))
            .collect::<Vec<_>>()
            .join(" && ");
        self.selector(field, &text)
    }
}

fn equals(key: &str, value: &str) -> Selector {
    selector_or_nothing(&format!(
        "{key} == {}",
        quote_literal(value).unwrap_or_default()
    ))
}

fn has(key: &str) -> Selector {
    selector_or_nothing(&format!("has({key})"))
}

fn in_set(key: &str, values: &[String]) -> Option<Selector> {
    let quoted = values
        .iter()
        .map(|v| quote_literal(v))
        .collect::<Option<Vec<_>>>()?;
    Some(selector_or_nothing(&format!(
        "{key} in {{{}}}",
        quoted.join(", ")
    )))
}

/// Parses selector text built from fixed label keys and quoted values, which cannot fail;
/// were it to, the selector matches nothing rather than everything.
fn selector_or_nothing(text: &str) -> Selector {
    Selector::parse(text)
        .unwrap_or_else(|_| Selector::parse("has(fedwall.io/never)").unwrap_or_default())
}

/// Whether a protocol carries ports that rules can match.
pub fn has_ports(protocol: u8) -> bool {
    matches!(
        protocol,
        ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP | ip_proto::UDPLITE
    )
}

/// A CIDR or a bare address (as a host route), with host bits cleared as Calico does.
pub fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net.trunc());
    }
    text.parse::<std::net::IpAddr>().ok().map(IpNet::from)
}

/// `80`, `"80"`, `"8000:8080"`, or a named port.
fn parse_port(value: &IntOrString) -> Option<Port> {
    match value {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .map(|p| Port::Range(PortRange::single(p))),
        IntOrString::String(s) => {
            if let Some((first, last)) = s.split_once(':') {
                let (first, last) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
                return (first <= last).then_some(Port::Range(PortRange { first, last }));
            }
            if let Ok(port) = s.trim().parse::<u16>() {
                return Some(Port::Range(PortRange::single(port)));
            }
            let valid_name = !s.is_empty()
                && s.len() <= 15
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && s.chars().any(|c| c.is_ascii_alphabetic());
            valid_name.then(|| Port::Named(s.clone()))
        }
    }
}
