//! The dataplane layer: the only code that touches aya. It loads fedwall's kernel programs,
//! pins their maps under one root, attaches programs to interfaces (TCX, or clsact where
//! TCX is missing) and reads and writes the maps.
//!
//! Calc talks to it through the [`Dataplane`] trait in the vocabulary of [`desired`]; the
//! [`MemoryDataplane`] implements the trait without a kernel, for tests and as the oracle of
//! what the kernel must decide.

mod attach;
pub mod desired;
mod error;
pub mod kernel;
mod memory;
pub mod nat;
pub mod netlink;
mod programs;
mod stats;

pub use attach::{AttachMode, AttachPolicy, Attachment};
pub use desired::{
    Delta, EndpointName, IcmpMatch, IpSetId, LocalEndpoint, NatPool, PolicyDirection, PortRange,
    Rule, RuleAction, RuleTable, SetMatch, SideMatch, Verdict,
};
pub use error::DataplaneError;
pub use kernel::{
    Cleanup, InterfaceResolver, KernelDataplane, RouteLookup, StaticInterfaces, VerdictCounts,
    cleanup,
};
pub use memory::{Decision, Flow, MemoryDataplane, decide};
pub use nat::{NatCounts, Uplink, UplinkChoice};
pub use programs::{KernelPrograms, TcProgram};
pub use stats::ProtoStats;

/// Something that enforces what calc computes.
///
/// Calc calls [`apply`](Dataplane::apply) once per delta, in the order it emitted them.
/// After a restart the dataplane may already hold state (pinned maps): it adopts it, and
/// calc replays the whole desired state as deltas; once every source is in sync calc calls
/// [`sync_complete`](Dataplane::sync_complete) and the dataplane removes whatever it holds
/// that no delta asked for. It never flushes and refills.
pub trait Dataplane {
    /// Applies one delta. On error nothing of the delta took effect: the previous state is
    /// still enforced, and the error names the object, the map and the limit it hit.
    fn apply(&mut self, delta: &Delta) -> Result<(), DataplaneError>;

    /// Every source is in sync and the full desired state was applied: remove the rest.
    fn sync_complete(&mut self) -> Result<(), DataplaneError>;

    /// Links or routes of the node changed: look again for endpoints' interfaces. Returns
    /// the updates that failed, for the caller to report.
    fn refresh_interfaces(&mut self) -> Vec<DataplaneError> {
        Vec::new()
    }

    /// What the dataplane holds, for metrics: cheap, read after every batch.
    fn status(&self) -> DataplaneStatus {
        DataplaneStatus::default()
    }

    /// Packets by outcome from the kernel's counters, for metrics: `(program family,
    /// reason, packets)`, e.g. `("policy_ingress", "deny-rule", 3)`. Map reads, so the
    /// agent takes them once per tick, not per batch.
    fn packet_counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        Vec::new()
    }

    /// Removes what the kernel keeps past its life and does not remove itself (expired NAT
    /// mappings, whose table must not evict): once per tick.
    fn expire(&mut self) {}

    /// Takes the denied and logged packets reported since the last call.
    fn drain_flow_events(&mut self) -> Vec<FlowRecord> {
        Vec::new()
    }
}

/// A packet the kernel denied, or logged for a Log rule, in names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    /// A Log rule matched (the packet went on to the next rules); otherwise it was denied.
    pub logged: bool,
    pub direction: PolicyDirection,
    /// The endpoint whose table decided, when still known.
    pub endpoint: Option<EndpointName>,
    /// The rule that matched (its policy and index); `None` for the table's default or a
    /// packet that could not be parsed.
    pub rule: Option<String>,
    pub protocol: u8,
    pub src: std::net::SocketAddr,
    pub dst: std::net::SocketAddr,
}

impl std::fmt::Display for FlowRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} → {} proto {} at {} of {} by {}",
            if self.logged { "logged" } else { "denied" },
            self.src,
            self.dst,
            self.protocol,
            self.direction.name(),
            self.endpoint
                .as_ref()
                .map_or("an unknown endpoint", |e| e.0.as_str()),
            self.rule.as_deref().unwrap_or("the default action")
        )
    }
}

/// A dataplane's figures for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataplaneStatus {
    /// Entries in use and capacity, per map.
    pub maps: Vec<MapUsage>,
    /// Endpoints of this node whose interface was not found, with the reason.
    pub waiting_for_interface: Vec<(EndpointName, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapUsage {
    pub map: &'static str,
    pub used: u64,
    pub capacity: u64,
}
