//! Compiles the policies that apply to one local endpoint into its two rule tables: policy
//! order then name, rules in order, `Pass` resolved (one tier: on to the namespace
//! profile, which allows), named ports resolved (the endpoint's own by lookup, a peer's
//! through one rule per port number in use with a named-port set), and every selector or
//! net list replaced by a reference to its IP set.

use std::sync::Arc;

use ipnet::IpNet;

use super::{Calc, NamedPortRef, SetKey};
use crate::dataplane::{
    self, LocalEndpoint, PolicyDirection, PortRange, RuleAction, RuleTable, SetMatch, SideMatch,
    Verdict,
};
use crate::model::{Action, Endpoint, IpVersion, Policy, PolicyKey, Port, Rule, RuleSide};

/// One local endpoint's compiled state, and what it holds references to.
#[derive(Debug)]
pub(super) struct Compiled {
    pub endpoint: LocalEndpoint,
    /// One entry per reference taken (a set used by two rules appears twice).
    pub sets: Vec<SetKey>,
    pub named_port_reads: Vec<NamedPortRef>,
}

pub(super) fn compile(calc: &mut Calc, endpoint: &Endpoint, applying: &[PolicyKey]) -> Compiled {
    let mut policies: Vec<Policy> = applying
        .iter()
        .filter_map(|key| calc.policies.get(key).cloned())
        .collect();
    policies.sort_by(Policy::cmp_order);
    let mut compiled = Compiled {
        endpoint: LocalEndpoint {
            name: dataplane::EndpointName(endpoint.name.clone()),
            addrs: endpoint.addrs.clone(),
            ingress: None,
            egress: None,
        },
        sets: Vec::new(),
        named_port_reads: Vec::new(),
    };
    for direction in PolicyDirection::ALL {
        let mut table: Option<RuleTable> = None;
        for policy in &policies {
            let Some(rules) = policy.rules(direction) else {
                continue;
            };
            let table = table.get_or_insert_with(|| RuleTable {
                rules: Vec::new(),
                default: Verdict::Deny,
            });
            for (index, rule) in rules.iter().enumerate() {
                let origin = format!("{}/{}/{index}", policy.key, direction.name());
                compile_rule(
                    calc,
                    endpoint,
                    direction,
                    rule,
                    origin,
                    &mut table.rules,
                    &mut compiled,
                );
            }
        }
        match direction {
            PolicyDirection::Ingress => compiled.endpoint.ingress = table,
            PolicyDirection::Egress => compiled.endpoint.egress = table,
        }
    }
    compiled
}

fn compile_rule(
    calc: &mut Calc,
    endpoint: &Endpoint,
    direction: PolicyDirection,
    rule: &Rule,
    origin: String,
    out: &mut Vec<dataplane::Rule>,
    compiled: &mut Compiled,
) {
    let action = match rule.action {
        Action::Allow | Action::Pass => RuleAction::Allow,
        Action::Deny => RuleAction::Deny,
        Action::Log => RuleAction::Log,
    };
    let protocol = rule.protocol.unwrap_or(0);
    let mut source = side_sets(calc, &rule.source, compiled);
    let mut destination = side_sets(calc, &rule.destination, compiled);
    if let Some(version) = rule.ip_version {
        // "Is IPv4" is membership of 0.0.0.0/0; the kernel's sets are dual-stack.
        let all_v4 = SetKey::Nets(Arc::from([IpNet::V4(ipnet::Ipv4Net::default())]));
        source.sets.push(SetMatch {
            set: acquire(calc, &all_v4, compiled),
            member: version == IpVersion::V4,
        });
    }
    let (own, own_rule, peer, peer_rule) = match direction {
        PolicyDirection::Ingress => (
            &mut destination,
            &rule.destination,
            &mut source,
            &rule.source,
        ),
        PolicyDirection::Egress => (
            &mut source,
            &rule.source,
            &mut destination,
            &rule.destination,
        ),
    };
    // The endpoint's own side: named ports are the endpoint's own.
    let own_ports = resolve_own(endpoint, protocol, &own_rule.ports);
    if !own_rule.ports.is_empty() && own_ports.is_empty() {
        return; // every port it names is unknown on this endpoint: it never matches
    }
    own.ports = PortRange::coalesce(own_ports);
    own.not_ports = PortRange::coalesce(resolve_own(endpoint, protocol, &own_rule.not_ports));
    // The peer's side: numeric ports as they are; each named port becomes one rule per
    // port number some endpoint gives that name, restricted to those endpoints.
    peer.not_ports = PortRange::coalesce(numeric(&peer_rule.not_ports));
    let numeric_ports = PortRange::coalesce(numeric(&peer_rule.ports));
    let named: Vec<&str> = peer_rule
        .ports
        .iter()
        .filter_map(|p| match p {
            Port::Named(name) => Some(name.as_str()),
            Port::Range(_) => None,
        })
        .collect();
    let make = |source: &SideMatch, destination: &SideMatch| dataplane::Rule {
        origin: origin.clone(),
        action,
        protocol: rule.protocol,
        not_protocol: rule.not_protocol,
        source: source.clone(),
        destination: destination.clone(),
        icmp: rule.icmp,
        not_icmp: rule.not_icmp,
    };
    if named.is_empty() {
        peer.ports = numeric_ports;
        out.push(make(&source, &destination));
        return;
    }
    let mut variants: Vec<(Vec<PortRange>, Option<SetKey>)> = Vec::new();
    if !numeric_ports.is_empty() {
        variants.push((numeric_ports, None));
    }
    for name in named {
        let name: Arc<str> = name.into();
        compiled.named_port_reads.push((name.clone(), protocol));
        for port in calc.named_port_numbers(&name, protocol) {
            let set = SetKey::NamedPort {
                name: name.clone(),
                protocol,
                port,
            };
            variants.push((vec![PortRange::single(port)], Some(set)));
        }
    }
    for (ports, set) in variants {
        let (mut source, mut destination) = (source.clone(), destination.clone());
        let peer = match direction {
            PolicyDirection::Ingress => &mut source,
            PolicyDirection::Egress => &mut destination,
        };
        peer.ports = ports;
        if let Some(set) = set {
            peer.sets.push(SetMatch {
                set: acquire(calc, &set, compiled),
                member: true,
            });
        }
        out.push(make(&source, &destination));
    }
}

fn acquire(calc: &mut Calc, key: &SetKey, compiled: &mut Compiled) -> dataplane::IpSetId {
    compiled.sets.push(key.clone());
    calc.acquire_set(key)
}

fn side_sets(calc: &mut Calc, side: &RuleSide, compiled: &mut Compiled) -> SideMatch {
    let mut sets = Vec::new();
    let mut push = |calc: &mut Calc, key: SetKey, member: bool| {
        sets.push(SetMatch {
            set: acquire(calc, &key, compiled),
            member,
        });
    };
    if let Some(selector) = &side.selector {
        push(calc, SetKey::Selector(selector.canonical().into()), true);
    }
    if let Some(selector) = &side.not_selector {
        push(calc, SetKey::Selector(selector.canonical().into()), false);
    }
    for (nets, member) in [(&side.nets, true), (&side.not_nets, false)] {
        if !nets.is_empty() {
            let mut nets = nets.clone();
            nets.sort_unstable();
            nets.dedup();
            push(calc, SetKey::Nets(nets.into()), member);
        }
    }
    SideMatch {
        sets,
        ports: Vec::new(),
        not_ports: Vec::new(),
    }
}

fn numeric(ports: &[Port]) -> Vec<PortRange> {
    ports
        .iter()
        .filter_map(|p| match p {
            Port::Range(range) => Some(*range),
            Port::Named(_) => None,
        })
        .collect()
}

/// Ports on the endpoint's own side: numbers as they are, names looked up on it.
fn resolve_own(endpoint: &Endpoint, protocol: u8, ports: &[Port]) -> Vec<PortRange> {
    ports
        .iter()
        .flat_map(|p| match p {
            Port::Range(range) => vec![*range],
            Port::Named(name) => endpoint
                .named_ports
                .iter()
                .filter(|np| &np.name == name && np.protocol == protocol)
                .map(|np| PortRange::single(np.port))
                .collect(),
        })
        .collect()
}
