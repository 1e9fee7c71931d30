//! The vocabulary between calc and the dataplane: what the kernel must enforce, said without
//! any map layout. Calc emits [`Delta`]s in an order that is always safe to apply one by one
//! (a set exists before a table references it; no table references a set when it goes);
//! each [`Dataplane`](super::Dataplane) turns them into its own representation.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// An IP set, as calc numbers it: stable for as long as the set exists, reused after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpSetId(pub u32);

impl fmt::Display for IpSetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ipset#{}", self.0)
    }
}

/// A local workload or host endpoint, by its calicoq-style name
/// (`<node>/k8s/<namespace>.<pod>/eth0`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointName(pub String);

impl fmt::Display for EndpointName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which way traffic crosses a local endpoint, from the endpoint's point of view: `Ingress`
/// is traffic to the pod, `Egress` traffic from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyDirection {
    Ingress,
    Egress,
}

impl PolicyDirection {
    pub const ALL: [PolicyDirection; 2] = [PolicyDirection::Ingress, PolicyDirection::Egress];

    pub const fn name(self) -> &'static str {
        match self {
            PolicyDirection::Ingress => "ingress",
            PolicyDirection::Egress => "egress",
        }
    }
}

/// What a matching rule does. `Pass` never reaches the dataplane: calc resolves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleAction {
    Allow,
    Deny,
    /// Emit a flow event and go on with the next rule.
    Log,
}

/// What happens to a new flow that no rule decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Allow,
    Deny,
}

/// An inclusive port range; a single port is `first == last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }

    pub const fn contains(self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }

    /// The same ports as sorted, disjoint, non-adjacent ranges: fewer to check per packet,
    /// further from the kernel's per-rule limit on ranges, and each port in one range only.
    pub fn coalesce(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
        ranges.sort_unstable();
        let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
        for range in ranges {
            match out.last_mut() {
                Some(last) if u32::from(range.first) <= u32::from(last.last) + 1 => {
                    last.last = last.last.max(range.last);
                }
                _ => out.push(range),
            }
        }
        out
    }
}

/// A condition on one address of the packet: it is (or is not) in an IP set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SetMatch {
    pub set: IpSetId,
    /// `true`: the address must be in the set; `false`: it must not be.
    pub member: bool,
}

/// The conditions a rule puts on one side (source or destination) of a packet; all of
/// them must hold. Empty lists put no condition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SideMatch {
    pub sets: Vec<SetMatch>,
    /// The port must be in one of these ranges (TCP, UDP and SCTP only).
    pub ports: Vec<PortRange>,
    /// The port must be in none of these ranges.
    pub not_ports: Vec<PortRange>,
}

/// ICMP or ICMPv6 type, and optionally code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IcmpMatch {
    pub icmp_type: u8,
    pub code: Option<u8>,
}

/// One rule of a table: every present condition must hold for `action` to apply.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Where the rule came from (`<policy>/<direction>/<index>`), for counters and events.
    pub origin: String,
    pub action: RuleAction,
    /// IP protocol number the packet must carry.
    pub protocol: Option<u8>,
    /// IP protocol number the packet must not carry.
    pub not_protocol: Option<u8>,
    pub source: SideMatch,
    pub destination: SideMatch,
    pub icmp: Option<IcmpMatch>,
    pub not_icmp: Option<IcmpMatch>,
}

impl Rule {
    /// A rule with no conditions: it matches every packet.
    pub fn unconditional(origin: &str, action: RuleAction) -> Rule {
        Rule {
            origin: origin.to_owned(),
            action,
            protocol: None,
            not_protocol: None,
            source: SideMatch::default(),
            destination: SideMatch::default(),
            icmp: None,
            not_icmp: None,
        }
    }
}

/// The ordered rules one endpoint applies in one direction, first match wins, and what
/// happens when none decides.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RuleTable {
    pub rules: Vec<Rule>,
    pub default: Verdict,
}

/// A local endpoint as the dataplane must enforce it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEndpoint {
    pub name: EndpointName,
    /// The pod's addresses: the dataplane finds the host-side interface through them.
    pub addrs: Vec<IpAddr>,
    /// `None`: no policy applies to traffic to the pod, which is allowed.
    pub ingress: Option<RuleTable>,
    /// `None`: no policy applies to traffic from the pod, which is allowed.
    pub egress: Option<RuleTable>,
}

impl LocalEndpoint {
    pub fn table(&self, direction: PolicyDirection) -> Option<&RuleTable> {
        match direction {
            PolicyDirection::Ingress => self.ingress.as_ref(),
            PolicyDirection::Egress => self.egress.as_ref(),
        }
    }
}

/// An IP pool as NAT-outgoing needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NatPool {
    pub cidr: IpNet,
    pub nat_outgoing: bool,
    pub disabled: bool,
}

/// One change to what the dataplane enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delta {
    /// A new, empty set.
    IpSetCreated {
        id: IpSetId,
    },
    /// Members (addresses as /32 or /128, or CIDRs) join or leave a set.
    IpSetMembers {
        id: IpSetId,
        added: BTreeSet<IpNet>,
        removed: BTreeSet<IpNet>,
    },
    /// A set no table references any more.
    IpSetDeleted {
        id: IpSetId,
    },
    /// A local endpoint appeared or changed (addresses or either rule table): the whole
    /// endpoint, to be swapped in atomically.
    EndpointSet(LocalEndpoint),
    EndpointDeleted {
        name: EndpointName,
    },
    PoolSet(NatPool),
    PoolDeleted {
        cidr: IpNet,
    },
}

#[cfg(test)]
mod tests {
    use super::PortRange;

    #[test]
    fn port_ranges_coalesce_into_sorted_disjoint_ranges() {
        let r = |first, last| PortRange { first, last };
        assert_eq!(
            PortRange::coalesce(vec![
                r(90, 95),
                r(80, 80),
                r(81, 85),
                r(84, 88),
                r(65535, 65535),
                r(0, 0)
            ]),
            [r(0, 0), r(80, 88), r(90, 95), r(65535, 65535)]
        );
    }
}
