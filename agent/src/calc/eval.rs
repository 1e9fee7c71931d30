//! `fedwall eval`'s question, answered from calc's state: which endpoints of every cluster
//! a selector matches, and what may be missing (remote clusters that could not be read,
//! objects that could not be used). The CLI and the agent's debug API share it, so both
//! answer alike.

use serde::{Deserialize, Serialize};

use super::Calc;
use crate::datastore::Origin;
use crate::model::EndpointKind;
use crate::selector::Selector;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The selector's canonical text.
    pub selector: String,
    /// Sorted: workload endpoints before host endpoints, then by name.
    pub endpoints: Vec<MatchedEndpoint>,
    pub problems: Vec<ReadProblem>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchedEndpoint {
    /// `WorkloadEndpoint` or `HostEndpoint`.
    pub kind: String,
    pub name: String,
    pub cluster: String,
    pub local: bool,
    pub node: String,
    pub addresses: Vec<String>,
}

impl MatchedEndpoint {
    /// calicoq's words for the kind: `Workload endpoint` / `Host endpoint`.
    pub fn title(&self) -> &'static str {
        if self.kind == "HostEndpoint" {
            EndpointKind::Host.title()
        } else {
            EndpointKind::Workload.title()
        }
    }
}

/// Something that may have left endpoints out of the answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadProblem {
    /// `RemoteClusterConfiguration(<name>)`, or `local datastore`.
    pub object: String,
    pub reason: String,
}

impl ReadProblem {
    pub fn origin_name(origin: &Origin) -> String {
        match origin {
            Origin::Local => "local datastore".into(),
            Origin::Remote(name) => format!("RemoteClusterConfiguration({name})"),
        }
    }
}

/// The endpoints `selector` matches and the problems calc knows of.
pub fn eval(calc: &Calc, selector: &Selector) -> EvalReport {
    let mut matches: Vec<_> = calc
        .endpoints()
        .filter(|(_, labels)| selector.matches(*labels))
        .map(|(ep, _)| ep)
        .collect();
    matches.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    let endpoints = matches
        .into_iter()
        .map(|ep| MatchedEndpoint {
            kind: match ep.kind {
                EndpointKind::Workload => "WorkloadEndpoint",
                EndpointKind::Host => "HostEndpoint",
            }
            .into(),
            name: ep.name.clone(),
            cluster: ep.cluster.name().into(),
            local: ep.cluster.is_local(),
            node: ep.node.clone(),
            addresses: ep.addrs.iter().map(ToString::to_string).collect(),
        })
        .collect();
    let mut problems: Vec<ReadProblem> = calc
        .remote_states()
        .iter()
        .filter_map(|(name, state)| {
            Some(ReadProblem {
                object: ReadProblem::origin_name(&Origin::Remote(name.clone())),
                reason: state.problem()?.to_owned(),
            })
        })
        .collect();
    // Endpoints that could not be built (a pod with a bad IP) are missing too.
    problems.extend(calc.problems().map(|problem| ReadProblem {
        object: ReadProblem::origin_name(&problem.origin),
        reason: format!("{}: {}", problem.object, problem.message),
    }));
    EvalReport {
        selector: selector.canonical(),
        endpoints,
        problems,
    }
}
