//! `fedwall why`: would a flow be allowed, and by which rule — answered from calc's state
//! with the same walk the kernel does (first match decides, Log rules noted, a direction
//! without policy allows). Each end is named (local or remote endpoint, or an address no
//! cluster knows), and each local end says what its table decides. The CLI and the agent's
//! debug API share it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::Calc;
use crate::dataplane::{Decision, Flow, PolicyDirection, Verdict, decide};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhyReport {
    /// The flow, as `tcp 10.0.0.1 → 10.0.0.2:80`.
    pub flow: String,
    /// `true` when every end of this node that judges the flow allows it.
    pub allowed: bool,
    /// What the source and destination addresses are.
    pub source: String,
    pub destination: String,
    /// One step per local endpoint the flow crosses: its egress, then the other's ingress.
    pub steps: Vec<WhyStep>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhyStep {
    pub endpoint: String,
    /// `ingress` or `egress`, from the endpoint's point of view.
    pub direction: String,
    pub allowed: bool,
    /// In words: the rule (policy and index) or default that decided.
    pub reason: String,
    /// Log rules that matched on the way.
    pub logged: Vec<String>,
}

/// Names what an address is: an endpoint of some cluster (local ones say so), or unknown.
fn describe(calc: &Calc, addr: IpAddr) -> String {
    calc.endpoints()
        .find(|(endpoint, _)| endpoint.addrs.contains(&addr))
        .map_or_else(
            || format!("{addr}: no endpoint of any cluster has this address"),
            |(endpoint, _)| {
                if endpoint.cluster.is_local() {
                    format!("{addr}: {endpoint} (this cluster)")
                } else {
                    let cluster = endpoint.cluster.name();
                    format!("{addr}: {endpoint} (remote cluster {cluster})")
                }
            },
        )
}

pub fn why(calc: &Calc, flow: &Flow) -> WhyReport {
    let mut steps = Vec::new();
    for (direction, addr) in [
        (PolicyDirection::Egress, flow.src),
        (PolicyDirection::Ingress, flow.dst),
    ] {
        for endpoint in calc.local_endpoints().filter(|e| e.addrs.contains(&addr)) {
            let decision = decide(endpoint.table(direction), flow, |set, addr| {
                calc.set_contains(set, addr)
            });
            let allowed = decision.verdict() == Verdict::Allow;
            let word = if allowed { "allowed" } else { "denied" };
            let (reason, logged) = match decision {
                Decision::NoPolicy => (
                    format!("allowed: no policy applies to its {}", direction.name()),
                    Vec::new(),
                ),
                Decision::Rule { origin, logged, .. } => (format!("{word} by {origin}"), logged),
                Decision::Default { logged, .. } => (
                    format!("{word}: policies apply and none of their rules matched"),
                    logged,
                ),
            };
            steps.push(WhyStep {
                endpoint: endpoint.name.to_string(),
                direction: direction.name().into(),
                allowed,
                reason,
                logged,
            });
        }
    }
    let ports = flow
        .ports
        .map_or(String::new(), |(_, dst)| format!(":{dst}"));
    let protocol = crate::model::endpoint::protocol_name(flow.protocol);
    WhyReport {
        flow: format!("{protocol} {} → {}{ports}", flow.src, flow.dst),
        allowed: steps.iter().all(|step| step.allowed),
        source: describe(calc, flow.src),
        destination: describe(calc, flow.dst),
        steps,
    }
}
