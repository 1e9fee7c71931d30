//! T2: the counting programs attached to a veth between two namespaces. Real pings (IPv4
//! and IPv6) pass through them and move the counters, with TCX and with clsact; after
//! detaching, the counters stop moving.

use fedwall::dataplane::{AttachMode, AttachPolicy, KernelPrograms, ProtoStats, TcProgram};
use fedwall_common::stats::{Direction, ProtoClass};
use fedwall_tests::{
    bpffs::Bpffs,
    netns::{NetNs, PodOnNode, pod_on_node},
    require_root,
};

const NODE_V4: &str = "192.0.2.1";
const POD_V4: &str = "192.0.2.2";
const NODE_V6: &str = "2001:db8::1";
const POD_V6: &str = "2001:db8::2";
const PINGS: u64 = 3;

fn ping(from: &NetNs, to: &str) {
    let count = PINGS.to_string();
    from.run(&["ping", "-c", &count, "-i", "0.05", "-W", "2", "-q", to]);
}

fn pings_move_counters(policy: AttachPolicy) {
    let bpffs = Bpffs::mount();
    let PodOnNode { node, pod } = pod_on_node();
    let mut programs = KernelPrograms::load(&bpffs.pin_root()).expect("load the kernel programs");
    let ifindex = node.ifindex("veth-pod");
    let attachments = node.enter(|| {
        TcProgram::COUNTERS.map(|program| {
            programs
                .attach(program, ifindex, policy)
                .unwrap_or_else(|e| panic!("attach {program:?} with {policy:?}: {e:?}"))
        })
    });
    let forced_mode = match policy {
        AttachPolicy::Auto => None,
        AttachPolicy::Tcx => Some(AttachMode::Tcx),
        AttachPolicy::Clsact => Some(AttachMode::Clsact),
    };
    if let Some(mode) = forced_mode {
        for attachment in &attachments {
            assert_eq!(attachment.mode, mode, "{policy:?} attached {attachment:?}");
        }
    }

    ping(&pod, NODE_V4);
    ping(&pod, NODE_V6);
    ping(&node, POD_V4);
    ping(&node, POD_V6);

    let stats = programs.proto_stats().expect("read counters");
    // The pod's echo requests enter the node's veth (TC ingress); the node's replies leave
    // it (TC egress). The node's own pings go the other way round.
    assert!(
        stats.get(Direction::Ingress, ProtoClass::Ipv4Icmp).packets >= 2 * PINGS,
        "ingress IPv4 ICMP: {stats:#?}"
    );
    assert!(
        stats.get(Direction::Egress, ProtoClass::Ipv4Icmp).packets >= 2 * PINGS,
        "egress IPv4 ICMP: {stats:#?}"
    );
    // IPv6 neighbour discovery is ICMPv6 too, so at least the echoes.
    assert!(
        stats.get(Direction::Ingress, ProtoClass::Ipv6Icmp).packets >= PINGS,
        "ingress ICMPv6: {stats:#?}"
    );
    assert!(
        stats.get(Direction::Egress, ProtoClass::Ipv6Icmp).packets >= PINGS,
        "egress ICMPv6: {stats:#?}"
    );
    // ARP resolved the IPv4 neighbours.
    assert!(
        stats.get(Direction::Ingress, ProtoClass::NonIp).packets >= 1,
        "ingress ARP: {stats:#?}"
    );
    assert_eq!(
        stats.get(Direction::Ingress, ProtoClass::Malformed).packets,
        0
    );
    let ipv4_icmp = stats.get(Direction::Ingress, ProtoClass::Ipv4Icmp);
    assert!(
        ipv4_icmp.bytes >= ipv4_icmp.packets * 98,
        "an IPv4 ping is 98 bytes on the wire: {ipv4_icmp:?}"
    );

    // The map is pinned: a reader that only knows the pin root sees the same counters.
    let pinned = ProtoStats::from_pin(&bpffs.pin_root()).expect("read the pinned counters");
    assert_eq!(pinned, stats, "pinned map and loaded map disagree");

    node.enter(|| {
        for attachment in attachments {
            programs.detach(attachment).expect("detach");
        }
    });
    ping(&pod, NODE_V4);
    let after = programs.proto_stats().expect("read counters");
    assert_eq!(
        after.get(Direction::Ingress, ProtoClass::Ipv4Icmp),
        stats.get(Direction::Ingress, ProtoClass::Ipv4Icmp),
        "counters moved after detach"
    );
}

#[test]
fn pings_pass_and_are_counted_with_tcx() {
    require_root!();
    pings_move_counters(AttachPolicy::Tcx);
}

#[test]
fn pings_pass_and_are_counted_with_clsact() {
    require_root!();
    pings_move_counters(AttachPolicy::Clsact);
}

#[test]
fn auto_attach_uses_tcx_on_this_kernel() {
    require_root!();
    let bpffs = Bpffs::mount();
    let PodOnNode { node, pod: _pod } = pod_on_node();
    let mut programs = KernelPrograms::load(&bpffs.pin_root()).expect("load the kernel programs");
    let ifindex = node.ifindex("veth-pod");
    let attachment = node.enter(|| {
        programs
            .attach(TcProgram::CountIngress, ifindex, AttachPolicy::Auto)
            .expect("attach")
    });
    assert_eq!(
        attachment.mode,
        AttachMode::Tcx,
        "kernel {} has TCX (>= 6.6)",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
}
