//! The in-memory dataplane: applies deltas to plain collections and answers "what would the
//! kernel do with this packet" by walking the rule tables the way the kernel programs must.
//! Layers above the dataplane test against it, and the kernel tests use its answers as
//! their oracle.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::desired::{
    Delta, EndpointName, IcmpMatch, IpSetId, LocalEndpoint, NatPool, PolicyDirection, RuleAction,
    RuleTable, SideMatch, Verdict,
};
use super::{Dataplane, DataplaneError};
use fedwall_common::net::ip_proto;

/// The facts about a flow's first packet that rules look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    /// Ports for TCP, UDP and SCTP; `None` otherwise.
    pub ports: Option<(u16, u16)>,
    /// ICMP or ICMPv6 (type, code); `None` otherwise.
    pub icmp: Option<(u8, u8)>,
}

/// How a flow was decided, for people asking "why".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No policy applies to the endpoint in this direction.
    NoPolicy,
    /// A rule decided; `logged` lists the Log rules passed on the way.
    Rule {
        verdict: Verdict,
        origin: String,
        index: usize,
        logged: Vec<String>,
    },
    /// No rule decided: the table's default.
    Default {
        verdict: Verdict,
        logged: Vec<String>,
    },
}

impl Decision {
    pub fn verdict(&self) -> Verdict {
        match self {
            Decision::NoPolicy => Verdict::Allow,
            Decision::Rule { verdict, .. } | Decision::Default { verdict, .. } => *verdict,
        }
    }
}

/// Everything a dataplane holds, as plain collections.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemoryDataplane {
    pub sets: BTreeMap<IpSetId, BTreeSet<IpNet>>,
    pub endpoints: BTreeMap<EndpointName, LocalEndpoint>,
    pub pools: BTreeMap<IpNet, NatPool>,
    /// How many times `sync_complete` was called.
    pub syncs: usize,
}

impl MemoryDataplane {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `addr` is in `set` (a member CIDR containing it counts).
    pub fn contains(&self, set: IpSetId, addr: IpAddr) -> bool {
        self.sets
            .get(&set)
            .is_some_and(|members| members.iter().any(|net| net.contains(&addr)))
    }

    /// What the kernel must do with the first packet of `flow` crossing `endpoint` in
    /// `direction`; `None` when the endpoint is unknown (the packet is not ours to judge).
    pub fn decide(
        &self,
        endpoint: &EndpointName,
        direction: PolicyDirection,
        flow: &Flow,
    ) -> Option<Decision> {
        let endpoint = self.endpoints.get(endpoint)?;
        Some(decide(endpoint.table(direction), flow, |set, addr| {
            self.contains(set, addr)
        }))
    }
}

/// What the kernel must do with the first packet of `flow` meeting `table` (`None`: no
/// policy applies in that direction), with set membership answered by `contains`. The
/// one statement of the walk: first match decides, Log rules are noted and passed.
pub fn decide(
    table: Option<&RuleTable>,
    flow: &Flow,
    contains: impl Fn(IpSetId, IpAddr) -> bool,
) -> Decision {
    let Some(table) = table else {
        return Decision::NoPolicy;
    };
    let side_matches = |side: &SideMatch, addr: IpAddr, port: Option<u16>| {
        let sets_hold = side.sets.iter().all(|m| contains(m.set, addr) == m.member);
        // Port conditions only hold for packets that have ports: a rule with `ports` never
        // matches ICMP, and neither does one with `notPorts` (Calico requires a protocol
        // with ports for both).
        let ports_hold = match port {
            Some(port) => {
                (side.ports.is_empty() || side.ports.iter().any(|r| r.contains(port)))
                    && !side.not_ports.iter().any(|r| r.contains(port))
            }
            None => side.ports.is_empty() && side.not_ports.is_empty(),
        };
        sets_hold && ports_hold
    };
    let mut logged = Vec::new();
    for (index, rule) in table.rules.iter().enumerate() {
        let matches = rule.protocol.is_none_or(|p| p == flow.protocol)
            && rule.not_protocol.is_none_or(|p| p != flow.protocol)
            && icmp_matches(rule.icmp, flow, true)
            && icmp_matches(rule.not_icmp, flow, false)
            && side_matches(&rule.source, flow.src, flow.ports.map(|p| p.0))
            && side_matches(&rule.destination, flow.dst, flow.ports.map(|p| p.1));
        if !matches {
            continue;
        }
        let verdict = match rule.action {
            RuleAction::Log => {
                logged.push(rule.origin.clone());
                continue;
            }
            RuleAction::Allow => Verdict::Allow,
            RuleAction::Deny => Verdict::Deny,
        };
        return Decision::Rule {
            verdict,
            origin: rule.origin.clone(),
            index,
            logged,
        };
    }
    Decision::Default {
        verdict: table.default,
        logged,
    }
}

fn icmp_matches(condition: Option<IcmpMatch>, flow: &Flow, want: bool) -> bool {
    let Some(condition) = condition else {
        return true;
    };
    let is_icmp = matches!(flow.protocol, ip_proto::ICMP | ip_proto::ICMPV6);
    let hit = is_icmp
        && flow.icmp.is_some_and(|(icmp_type, code)| {
            icmp_type == condition.icmp_type && condition.code.is_none_or(|c| c == code)
        });
    hit == want
}

impl Dataplane for MemoryDataplane {
    fn apply(&mut self, delta: &Delta) -> Result<(), DataplaneError> {
        match delta {
            Delta::IpSetCreated { id } => {
                if self.sets.insert(*id, BTreeSet::new()).is_some() {
                    return Err(DataplaneError::DuplicateIpSet { set: *id });
                }
            }
            Delta::IpSetMembers { id, added, removed } => {
                let members = self.sets.get_mut(id).ok_or(DataplaneError::UnknownIpSet {
                    delta: "a member update",
                    set: *id,
                })?;
                for net in removed {
                    members.remove(net);
                }
                members.extend(added.iter().copied());
            }
            Delta::IpSetDeleted { id } => {
                self.sets.remove(id).ok_or(DataplaneError::UnknownIpSet {
                    delta: "a set deletion",
                    set: *id,
                })?;
            }
            Delta::EndpointSet(endpoint) => {
                let unknown = [&endpoint.ingress, &endpoint.egress]
                    .into_iter()
                    .flatten()
                    .flat_map(|table| &table.rules)
                    .flat_map(|rule| rule.source.sets.iter().chain(&rule.destination.sets))
                    .find(|m| !self.sets.contains_key(&m.set));
                if let Some(missing) = unknown {
                    return Err(DataplaneError::UnknownIpSet {
                        delta: "an endpoint's rule table",
                        set: missing.set,
                    });
                }
                self.endpoints
                    .insert(endpoint.name.clone(), endpoint.clone());
            }
            Delta::EndpointDeleted { name } => {
                self.endpoints.remove(name);
            }
            Delta::PoolSet(pool) => {
                self.pools.insert(pool.cidr, *pool);
            }
            Delta::PoolDeleted { cidr } => {
                self.pools.remove(cidr);
            }
        }
        Ok(())
    }

    fn sync_complete(&mut self) -> Result<(), DataplaneError> {
        self.syncs += 1;
        Ok(())
    }
}
