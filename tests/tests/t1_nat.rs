//! T1: the NAT-outgoing programs through BPF_PROG_TEST_RUN. A pod's packet to an address
//! outside every pool leaves with the uplink's address and a port of its range; replies and
//! ICMP errors about the flow come back as the pod sent it, checked byte for byte (so every
//! checksum, the quoted ones included, is the one a fresh packet would have). Packets to a
//! pool (enabled or disabled) or to the node, and packets from outside natOutgoing pools,
//! pass untouched. A peer whose ports are all taken, or a full flow table, loses the new
//! flow, not the old ones; a full conntrack table costs NAT nothing. Later fragments follow
//! their first one, and ICMPv6 errors are translated behind the quote's extension headers.

use std::net::IpAddr;

use fedwall::dataplane::TcProgram;
use fedwall_common::conntrack::CONNTRACK_ENTRIES;
use fedwall_common::nat::{
    NAT_FLOW_SLOTS, NAT_PORT_FIRST, NAT_PORT_LAST, NatReason, addr_words, peer_hash, port_offset,
};
use fedwall_common::net::ip_proto;
use fedwall_tests::{
    nat::{Addrs, Nat, TC_ACT_SHOT, TEST_RUN_IFINDEX, addrs, bytes_of, nat},
    packet::{IcmpError, IpFamily, Ipv6ExtHeader, Packet, ParsedPacket, TcpFlags},
    require_root,
};

/// One kind of flow: builds its packet `src:sport → dst:dport` (for echo the port is the
/// identifier, and a reply when `reply`).
#[derive(Clone, Copy, Debug)]
enum Proto {
    TcpSyn,
    TcpSynAck,
    Udp,
    UdpNoChecksum,
    Echo,
}

impl Proto {
    fn packet(self, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Packet {
        let p = Packet::ip(src, dst);
        match self {
            Proto::TcpSyn => p
                .tcp(sport, dport)
                .flags(TcpFlags::SYN)
                .seq(1000)
                .payload(b"hello"),
            Proto::TcpSynAck => p
                .tcp(sport, dport)
                .flags(TcpFlags::SYN | TcpFlags::ACK)
                .seq(5000)
                .ack_number(1006),
            Proto::Udp => p.udp(sport, dport).payload(b"query"),
            Proto::UdpNoChecksum => p.udp(sport, dport).payload(b"odd").udp_zero_checksum(),
            Proto::Echo => p.icmp_echo_request(sport, 1).payload(b"ping"),
        }
    }

    fn reply(self) -> Proto {
        match self {
            Proto::TcpSyn => Proto::TcpSynAck,
            other => other,
        }
    }

    fn reply_packet(self, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Packet {
        match self {
            Proto::Echo => Packet::ip(src, dst)
                .icmp_echo_reply(dport, 1)
                .payload(b"ping"),
            other => other.reply().packet(src, sport, dst, dport),
        }
    }
}

/// The translated source port (or echo identifier) of a frame.
fn source_port(frame: &[u8]) -> u16 {
    let parsed = ParsedPacket::parse(frame).expect("parse the translated frame");
    match parsed.ports() {
        Some((sport, _)) => sport,
        None => {
            parsed
                .icmp()
                .and_then(|icmp| icmp.echo)
                .expect("an echo")
                .id
        }
    }
}

fn assert_valid(frame: &[u8], case: &str) {
    let parsed = ParsedPacket::parse(frame).unwrap_or_else(|e| panic!("{case}: parse: {e}"));
    if let Err(e) = parsed.verify_checksums() {
        panic!("{case}: checksum: {e}");
    }
}

#[test]
fn flows_leave_with_the_node_address_and_replies_come_back_byte_for_byte() {
    require_root!();
    let mut nat = nat(NAT_PORT_FIRST..=NAT_PORT_LAST);
    for family in IpFamily::ALL {
        let a = addrs(family);
        let protos = [Proto::TcpSyn, Proto::Udp, Proto::UdpNoChecksum, Proto::Echo];
        for (index, proto) in protos.into_iter().enumerate() {
            if matches!((family, proto), (IpFamily::V6, Proto::UdpNoChecksum)) {
                // UDP's "no checksum" exists on IPv4 only (RFC 8200).
                continue;
            }
            let case = format!("{family:?} {proto:?}");
            // A port of its own per case, so each is a new flow.
            let sport = 40000 + index as u16;
            let dport = if matches!(proto, Proto::Echo) {
                sport
            } else {
                443
            };
            let original = proto.packet(a.pod, sport, a.internet, dport).build();
            let before = nat.count(NatReason::NewMapping);
            let out = nat.egress(&original, &case);
            let port = source_port(&out);
            assert!(
                (NAT_PORT_FIRST..=NAT_PORT_LAST).contains(&port),
                "{case}: port {port} outside the uplink's range"
            );
            let dport = if matches!(proto, Proto::Echo) {
                port
            } else {
                dport
            };
            let expected = proto.packet(a.node, port, a.internet, dport).build();
            assert_eq!(out, expected, "{case}: the translated packet");
            assert_valid(&out, &case);
            assert_eq!(nat.count(NatReason::NewMapping), before + 1, "{case}");

            // The flow's next packet uses the same mapping.
            assert_eq!(nat.egress(&original, &case), expected, "{case}: again");

            let reply = proto.reply_packet(a.internet, dport, a.node, port).build();
            let back = nat.ingress(&reply, &case);
            let dport_back = if matches!(proto, Proto::Echo) {
                sport
            } else {
                dport
            };
            let expected_back = proto
                .reply_packet(a.internet, dport_back, a.pod, sport)
                .build();
            assert_eq!(back, expected_back, "{case}: the reply, translated back");
            assert_valid(&back, &case);
        }
    }
}

/// An ICMP error from the internet to the node quoting `quotes.0` (a translated packet)
/// reaches the pod quoting `quotes.1` (the packet as the pod sent it), byte for byte and
/// counted.
fn error_comes_back(
    nat: &mut Nat,
    a: &Addrs,
    kind: IcmpError,
    quotes: (Vec<u8>, Vec<u8>),
    case: &str,
) {
    let error = Packet::ip(a.internet, a.node)
        .icmp_error(kind, quotes.0)
        .build();
    let before = nat.count(NatReason::IcmpErrorReversed);
    let back = nat.ingress(&error, case);
    let expected = Packet::ip(a.internet, a.pod)
        .icmp_error(kind, quotes.1)
        .build();
    assert_eq!(back, expected, "{case}: the error, translated back");
    assert_valid(&back, case);
    assert_eq!(
        nat.count(NatReason::IcmpErrorReversed),
        before + 1,
        "{case}"
    );
}

#[test]
fn icmp_errors_about_a_translated_flow_reach_the_pod_with_its_own_packet_quoted() {
    require_root!();
    let mut nat = nat(NAT_PORT_FIRST..=NAT_PORT_LAST);
    for family in IpFamily::ALL {
        let a = addrs(family);
        let cases = [
            (Proto::Udp, IcmpError::PortUnreachable, false),
            (Proto::TcpSyn, IcmpError::PacketTooBig { mtu: 1280 }, true),
            (Proto::TcpSyn, IcmpError::PacketTooBig { mtu: 1280 }, false),
            (Proto::Echo, IcmpError::TimeExceeded, false),
        ];
        for (index, (proto, kind, whole_quote)) in cases.into_iter().enumerate() {
            let case = format!("{family:?} {proto:?} {kind:?} whole quote: {whole_quote}");
            // A port of its own per case, so each is a new flow.
            let sport = 41000 + index as u16;
            let original = proto.packet(a.pod, sport, a.internet, 443).build();
            let translated = nat.egress(&original, &case);
            let quote = |frame: &[u8]| {
                let parsed = ParsedPacket::parse(frame).expect("parse");
                if whole_quote {
                    frame[fedwall_tests::packet::ETH_HEADER_LEN..].to_vec()
                } else {
                    parsed.icmp_quote().to_vec()
                }
            };
            error_comes_back(
                &mut nat,
                &a,
                kind,
                (quote(&translated), quote(&original)),
                &case,
            );
        }
    }
}

#[test]
fn excluded_destinations_and_sources_pass_untouched() {
    require_root!();
    let mut nat = nat(NAT_PORT_FIRST..=NAT_PORT_LAST);
    for family in IpFamily::ALL {
        let a = addrs(family);
        let cases = [
            ("to an enabled pool", a.pod, a.in_pool),
            ("to a disabled pool", a.pod, a.in_disabled_pool),
            ("to the node's address", a.pod, a.node),
            ("from the node itself", a.node, a.internet),
        ];
        for (what, src, dst) in cases {
            for proto in [Proto::TcpSyn, Proto::Udp, Proto::Echo] {
                let case = format!("{family:?} {proto:?} {what}");
                let frame = proto.packet(src, 40000, dst, 40000).build();
                let before = nat.count(NatReason::NotEligible);
                assert_eq!(nat.egress(&frame, &case), frame, "{case}: untouched");
                assert_eq!(nat.count(NatReason::NotEligible), before + 1, "{case}");
            }
        }
        // A reply to nothing we translated is not ours either.
        let stray = Proto::Udp.packet(a.internet, 53, a.node, 61234).build();
        assert_eq!(nat.ingress(&stray, "stray reply"), stray);
    }
}

#[test]
fn a_peer_out_of_ports_loses_the_new_flow_and_keeps_the_old_ones() {
    require_root!();
    let mut nat = nat(62000..=62001);
    for family in IpFamily::ALL {
        let a = addrs(family);
        let flow = |pod| Proto::Udp.packet(pod, 5000, a.internet, 53).build();
        let first = nat.egress(&flow(a.pod), "first");
        let second = nat.egress(&flow(a.other_pod), "second");
        assert_ne!(
            source_port(&first),
            source_port(&second),
            "one port per flow"
        );
        let before = nat.count(NatReason::DropPortsExhausted);
        let (verdict, _) = nat.run(TcProgram::NatEgress, &flow(a.third_pod));
        assert_eq!(
            verdict, TC_ACT_SHOT,
            "{family:?}: the third flow has no port"
        );
        assert_eq!(nat.count(NatReason::DropPortsExhausted), before + 1);
        assert_eq!(nat.egress(&flow(a.pod), "first again"), first);
        assert_eq!(nat.egress(&flow(a.other_pod), "second again"), second);
        // Another peer has all its ports free.
        let elsewhere = Proto::Udp.packet(a.third_pod, 5000, a.internet, 54).build();
        nat.egress(&elsewhere, "other peer port");
        // The first flow expires: the third flow gets its port, and the second keeps its
        // own, whichever of the two was its home's first port.
        let pod = bytes_of(a.pod);
        assert_eq!(nat.expire_flows(|f| f.pod == pod && f.pod_port == 5000), 1);
        let third = nat.egress(&flow(a.third_pod), "third, after the first expired");
        assert_eq!(source_port(&third), source_port(&first), "{family:?}");
        assert_eq!(nat.egress(&flow(a.other_pod), "second, after"), second);
        let back = Proto::Udp
            .packet(a.internet, 53, a.node, source_port(&second))
            .build();
        let reply = nat.ingress(&back, "the second's reply");
        assert_eq!(
            ParsedPacket::parse(&reply).expect("reply").dst,
            a.other_pod,
            "{family:?}: the second's reply reaches its pod"
        );
    }
}

#[test]
fn a_flow_past_its_home_port_is_found_both_ways_after_the_home_flow_expires() {
    require_root!();
    const FIRST: u16 = 62000;
    const SPAN: u16 = 8;
    let mut nat = nat(FIRST..=FIRST + SPAN - 1);
    let a = addrs(IpFamily::V4);
    // The port each of the pod's flows to the peer tries first, computed as the kernel does.
    let (pod, peer) = (
        addr_words(&bytes_of(a.pod)),
        addr_words(&bytes_of(a.internet)),
    );
    let hash = peer_hash(peer, 53, ip_proto::UDP, TEST_RUN_IFINDEX);
    let home = |sport: u16| FIRST + (port_offset(pod, sport, hash) % u32::from(SPAN)) as u16;
    let after_home = FIRST + (home(5000) - FIRST + 1) % SPAN;
    // Two more flows whose home is the first one's.
    let mut same_home = (5001..).filter(|&sport| home(sport) == home(5000));
    let mut next = || same_home.next().expect("ports of every home");
    let (second, third) = (next(), next());
    let flow = |sport| Proto::Udp.packet(a.pod, sport, a.internet, 53).build();

    let first_out = nat.egress(&flow(5000), "first");
    assert_eq!(
        source_port(&first_out),
        home(5000),
        "the first flow gets its home"
    );
    let second_out = nat.egress(&flow(second), "second");
    assert_eq!(
        source_port(&second_out),
        after_home,
        "the second flow, its home taken, gets the next port"
    );
    // The first flow expires: the second is still found from its home, whose slot it
    // does not hold, both ways.
    let pod_addr = bytes_of(a.pod);
    assert_eq!(
        nat.expire_flows(|f| f.pod == pod_addr && f.pod_port == 5000),
        1
    );
    assert_eq!(nat.egress(&flow(second), "second again"), second_out);
    let reply = Proto::Udp
        .packet(a.internet, 53, a.node, after_home)
        .build();
    let back = nat.ingress(&reply, "the second's reply");
    let back = ParsedPacket::parse(&back).expect("reply");
    assert_eq!(
        (back.dst, back.ports()),
        (a.pod, Some((53, second))),
        "the second's reply reaches it"
    );
    // A new flow of that home takes the freed home port; the second keeps its own.
    let third_out = nat.egress(&flow(third), "third");
    assert_eq!(
        source_port(&third_out),
        home(5000),
        "the third takes the home"
    );
    assert_eq!(nat.egress(&flow(second), "second, after"), second_out);
}

#[test]
fn a_full_conntrack_table_leaves_nat_flows_alone_and_a_full_flow_table_drops_new_flows() {
    require_root!();
    let mut nat = nat(NAT_PORT_FIRST..=NAT_PORT_LAST);
    let a = addrs(IpFamily::V4);
    let flow = |sport| Proto::Udp.packet(a.pod, sport, a.internet, 53).build();
    let translated = nat.egress(&flow(5000), "the flow");
    let port = source_port(&translated);
    let reply = Proto::Udp.packet(a.internet, 53, a.node, port).build();
    let back = nat.ingress(&reply, "its reply");

    // As many other flows as the policy's conntrack table holds, and more: an LRU table
    // would have evicted the idle mapping by now.
    nat.fill_conntrack(CONNTRACK_ENTRIES + 1024);
    assert_eq!(
        nat.egress(&flow(5000), "after conntrack filled"),
        translated
    );
    assert_eq!(nat.ingress(&reply, "reply after conntrack filled"), back);

    // A flow table full of live flows refuses the new flow, counted, and keeps the old one.
    let filled = nat.fill_flows();
    assert_eq!(
        filled,
        NAT_FLOW_SLOTS - 1,
        "every slot but the flow's was free"
    );
    let before = nat.count(NatReason::DropNatTableFull);
    let (verdict, _) = nat.run(TcProgram::NatEgress, &flow(5001));
    assert_eq!(verdict, TC_ACT_SHOT, "a new flow with the table full");
    assert_eq!(nat.count(NatReason::DropNatTableFull), before + 1);
    assert_eq!(nat.egress(&flow(5000), "with the table full"), translated);
    assert_eq!(nat.ingress(&reply, "reply with the table full"), back);
    assert_eq!(
        nat.live_flows(),
        NAT_FLOW_SLOTS,
        "every slot holds a live flow"
    );

    // Once they are expired, their slots are free for new flows (and the live one stays).
    assert_eq!(nat.expire_filled_flows(), filled);
    assert_eq!(nat.live_flows(), 1, "only the flow is live");
    nat.egress(&flow(5001), "a new flow in an expired slot");
    assert_eq!(nat.egress(&flow(5000), "after"), translated);
    assert_eq!(nat.ingress(&reply, "its reply after"), back);
}

#[test]
fn later_fragments_follow_their_first_fragment_both_ways() {
    require_root!();
    let mut nat = nat(NAT_PORT_FIRST..=NAT_PORT_LAST);
    let payload: Vec<u8> = (0..100u8).collect();
    for family in IpFamily::ALL {
        let a = addrs(family);
        let case = format!("{family:?}");
        let datagram = |src, sport, dst, dport| {
            Packet::ip(src, dst)
                .identification(0x4242)
                .udp(sport, dport)
                .payload(&payload)
        };
        let original = datagram(a.pod, 6000, a.internet, 53).fragments(32);
        assert!(
            original.len() >= 3,
            "{case}: a datagram in several fragments"
        );
        let out: Vec<Vec<u8>> = original
            .iter()
            .map(|fragment| nat.egress(fragment, &case))
            .collect();
        let port = source_port(&out[0]);
        let expected = datagram(a.node, port, a.internet, 53).fragments(32);
        assert_eq!(out, expected, "{case}: every fragment leaves translated");
        let translated = nat.count(NatReason::FragmentTranslated);

        let reply = datagram(a.internet, 53, a.node, port).fragments(32);
        let back: Vec<Vec<u8>> = reply
            .iter()
            .map(|fragment| nat.ingress(fragment, &case))
            .collect();
        let expected_back = datagram(a.internet, 53, a.pod, 6000).fragments(32);
        assert_eq!(
            back, expected_back,
            "{case}: every reply fragment comes back"
        );
        assert_eq!(
            nat.count(NatReason::FragmentTranslated),
            translated + (reply.len() - 1) as u64,
            "{case}: later reply fragments are counted"
        );

        // A later fragment whose first one was not seen would leak the pod's address.
        let orphan = Packet::ip(a.pod, a.internet)
            .identification(0x4343)
            .fragment(4, false)
            .raw_protocol(fedwall_common::net::ip_proto::UDP)
            .payload(&payload[..16])
            .build();
        let before = nat.count(NatReason::DropFragmentUnknown);
        let (verdict, _) = nat.run(TcProgram::NatEgress, &orphan);
        assert_eq!(verdict, TC_ACT_SHOT, "{case}: an orphan fragment");
        assert_eq!(nat.count(NatReason::DropFragmentUnknown), before + 1);
        // The node's own fragments are none of NAT's business.
        let own = Packet::ip(a.node, a.internet)
            .identification(0x4444)
            .fragment(4, false)
            .raw_protocol(fedwall_common::net::ip_proto::UDP)
            .payload(&payload[..16])
            .build();
        assert_eq!(nat.egress(&own, "the node's own fragment"), own);
        assert_eq!(nat.ingress(&own, "a fragment not for a mapping"), own);
    }
}

#[test]
fn icmpv6_errors_quoting_extension_headers_are_translated_back() {
    require_root!();
    let mut nat = nat(NAT_PORT_FIRST..=NAT_PORT_LAST);
    let a = addrs(IpFamily::V6);
    let chains = [
        vec![Ipv6ExtHeader::HopByHop(vec![5, 2, 0, 0])],
        vec![
            Ipv6ExtHeader::HopByHop(vec![]),
            Ipv6ExtHeader::DestinationOptions(vec![0x1e, 1, 0]),
            Ipv6ExtHeader::Routing {
                routing_type: 0,
                segments_left: 0,
                data: vec![0; 4],
            },
        ],
        vec![
            Ipv6ExtHeader::DestinationOptions(vec![]),
            Ipv6ExtHeader::Fragment {
                offset: 0,
                more: true,
                id: 7,
            },
        ],
    ];
    for (index, chain) in chains.into_iter().enumerate() {
        for proto in [Proto::Udp, Proto::TcpSyn, Proto::Echo] {
            let case = format!("{proto:?} behind {chain:?}");
            let sport = 42000 + 10 * index as u16 + proto as u16;
            let with_chain = |mut packet: Packet| {
                for header in &chain {
                    packet = packet.ipv6_ext(header.clone());
                }
                packet
            };
            let original = with_chain(proto.packet(a.pod, sport, a.internet, 443)).build();
            let translated = nat.egress(&original, &case);
            let port = source_port(&translated);
            let dport = if matches!(proto, Proto::Echo) {
                port
            } else {
                443
            };
            let expected = with_chain(proto.packet(a.node, port, a.internet, dport)).build();
            assert_eq!(
                translated, expected,
                "{case}: translated behind its headers"
            );
            for kind in [
                IcmpError::PacketTooBig { mtu: 1280 },
                IcmpError::PortUnreachable,
            ] {
                let quote = |frame: &[u8]| {
                    ParsedPacket::parse(frame)
                        .expect("parse")
                        .icmp_quote()
                        .to_vec()
                };
                let case = format!("{case} {kind:?}");
                error_comes_back(
                    &mut nat,
                    &a,
                    kind,
                    (quote(&translated), quote(&original)),
                    &case,
                );
            }
        }
    }
}
