//! `fedwall-hold <pin-root> <ifindex> <allowed-tcp-port>`: a stand-in for the agent in T2
//! restart tests. It opens the kernel dataplane (adopting what an earlier holder pinned),
//! applies one pod's policy — ingress: ICMP echo and TCP to the given port; egress: nothing
//! may be opened — completes the sync, prints `ready`, and sleeps until killed.

use std::collections::BTreeMap;

use anyhow::Context as _;
use fedwall::dataplane::{
    Dataplane as _, Delta, EndpointName, IcmpMatch, PortRange, RuleAction, RuleTable,
    StaticInterfaces, Verdict,
};
use fedwall_common::net::{icmp_type, ip_proto};
use fedwall_tests::policy::{endpoint, rule};

/// The endpoint name the holder enforces.
pub const POD: &str = "node/k8s/default.pod/eth0";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, pin_root, ifindex, port] = args.as_slice() else {
        anyhow::bail!("usage: fedwall-hold <pin-root> <ifindex> <allowed-tcp-port>");
    };
    let ifindex: u32 = ifindex.parse().context("ifindex")?;
    let port: u16 = port.parse().context("port")?;
    let interfaces = StaticInterfaces(BTreeMap::from([(EndpointName(POD.to_owned()), ifindex)]));
    let mut dataplane = fedwall::dataplane::KernelDataplane::open(pin_root.as_ref(), interfaces)?;
    let mut tcp = rule("t2/ingress/0", RuleAction::Allow);
    tcp.protocol = Some(ip_proto::TCP);
    tcp.destination.ports = vec![PortRange::single(port)];
    let mut ping4 = rule("t2/ingress/1", RuleAction::Allow);
    ping4.protocol = Some(ip_proto::ICMP);
    ping4.icmp = Some(IcmpMatch {
        icmp_type: icmp_type::V4_ECHO_REQUEST,
        code: None,
    });
    let mut ping6 = rule("t2/ingress/2", RuleAction::Allow);
    ping6.protocol = Some(ip_proto::ICMPV6);
    ping6.icmp = Some(IcmpMatch {
        icmp_type: icmp_type::V6_ECHO_REQUEST,
        code: None,
    });
    let ingress = RuleTable {
        rules: vec![tcp, ping4, ping6],
        default: Verdict::Deny,
    };
    let egress = RuleTable {
        rules: vec![],
        default: Verdict::Deny,
    };
    dataplane.apply(&Delta::EndpointSet(endpoint(
        POD,
        Some(ingress),
        Some(egress),
    )))?;
    dataplane.sync_complete()?;
    println!("ready");
    loop {
        std::thread::park();
    }
}
