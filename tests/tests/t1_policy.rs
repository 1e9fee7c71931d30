//! T1: the policy programs through BPF_PROG_TEST_RUN, driven by a KernelDataplane (each test
//! in a namespace of its own, since the dataplane attaches to the test-run interface).
//! Every rule field, both directions and both families are checked against
//! MemoryDataplane::decide, the reference semantics; then conntrack, fragments, malformed
//! packets, counters and events.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use fedwall::dataplane::{
    Dataplane as _, DataplaneError, Delta, EndpointName, Flow, IcmpMatch, IpSetId, KernelDataplane,
    KernelPrograms, MemoryDataplane, PolicyDirection, PortRange, Rule, RuleAction, RuleTable,
    SetMatch, StaticInterfaces, TcProgram, Verdict,
};
use fedwall_common::policy::{EVENT_DENY, EVENT_LOG, EVENT_NO_RULE, VerdictReason};
use fedwall_tests::{
    bpffs::Bpffs,
    netns::NetNs,
    packet::{Corruption, IpFamily, Ipv6ExtHeader, Packet, TcpFlags, ip_proto},
    policy::{
        TC_ACT_OK, TC_ACT_SHOT, TEST_RUN_IFINDEX, clear_conntrack, endpoint, rule, run, set_deltas,
    },
    require_root,
};
use ipnet::IpNet;

const POD: &str = "node1/k8s/default.pod/eth0";

/// A kernel dataplane and the in-memory oracle fed the same deltas.
struct Pair {
    kernel: KernelDataplane,
    oracle: MemoryDataplane,
    bpffs: Bpffs,
}

impl Pair {
    fn new() -> Pair {
        let bpffs = Bpffs::mount();
        let interfaces = StaticInterfaces(BTreeMap::from([(
            EndpointName(POD.to_owned()),
            TEST_RUN_IFINDEX,
        )]));
        let kernel = KernelDataplane::open(&bpffs.pin_root(), interfaces).expect("open dataplane");
        Pair {
            kernel,
            oracle: MemoryDataplane::new(),
            bpffs,
        }
    }

    fn apply(&mut self, delta: &Delta) {
        self.oracle.apply(delta).expect("oracle accepts");
        self.kernel
            .apply(delta)
            .unwrap_or_else(|e| panic!("kernel rejects {delta:?}: {e}"));
    }

    fn set_pod(&mut self, ingress: Option<RuleTable>, egress: Option<RuleTable>) {
        self.apply(&Delta::EndpointSet(endpoint(POD, ingress, egress)));
    }

    /// Packets that matched rule `index` of the pod's table for `direction`.
    fn rule_packets(&self, direction: PolicyDirection, index: usize) -> u64 {
        self.kernel
            .rule_counter(&EndpointName(POD.to_owned()), direction, index)
            .expect("counter")
            .packets
    }

    /// The kernel's verdict (as allow/deny) for a flow's first packet, after checking it
    /// against the oracle's.
    fn check(&mut self, direction: PolicyDirection, flow: &Flow, frame: &[u8], case: &str) {
        clear_conntrack(&self.bpffs.pin_root());
        let expected = self
            .oracle
            .decide(&EndpointName(POD.to_owned()), direction, flow)
            .expect("endpoint known");
        let verdict = run(&mut self.kernel, direction, frame);
        let want = match expected.verdict() {
            Verdict::Allow => TC_ACT_OK,
            Verdict::Deny => TC_ACT_SHOT,
        };
        assert_eq!(
            verdict, want,
            "{case}: {direction:?} {flow:?}: kernel and MemoryDataplane disagree ({expected:?})"
        );
    }
}

fn table(rules: Vec<Rule>, default: Verdict) -> RuleTable {
    RuleTable { rules, default }
}

fn in_ns<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let ns = NetNs::new();
    ns.enter(f)
}

/// A flow's description for the oracle and its first packet.
type FlowFrame = (Flow, Vec<u8>);
/// A case name, its rule, and packets with whether the rule must match them.
type FieldCase = (&'static str, Rule, Vec<(FlowFrame, bool)>);

/// A flow's first packet and its description for the oracle.
fn tcp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> (Flow, Vec<u8>) {
    let frame = Packet::ip(src, dst)
        .tcp(sport, dport)
        .flags(TcpFlags::SYN)
        .build();
    let flow = Flow {
        src,
        dst,
        protocol: ip_proto::TCP,
        ports: Some((sport, dport)),
        icmp: None,
    };
    (flow, frame)
}

fn udp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> (Flow, Vec<u8>) {
    let frame = Packet::ip(src, dst).udp(sport, dport).build();
    let flow = Flow {
        src,
        dst,
        protocol: ip_proto::UDP,
        ports: Some((sport, dport)),
        icmp: None,
    };
    (flow, frame)
}

fn icmp(src: IpAddr, dst: IpAddr, icmp_type: u8, code: u8) -> (Flow, Vec<u8>) {
    let family = IpFamily::of(src);
    let frame = Packet::ip(src, dst)
        .icmp(icmp_type, code, [0, 7, 0, 1])
        .build();
    let flow = Flow {
        src,
        dst,
        protocol: family.icmp_protocol(),
        ports: None,
        icmp: Some((icmp_type, code)),
    };
    (flow, frame)
}

fn other(src: IpAddr, dst: IpAddr, protocol: u8) -> (Flow, Vec<u8>) {
    let frame = Packet::ip(src, dst)
        .raw_protocol(protocol)
        .payload([0u8; 8])
        .build();
    let flow = Flow {
        src,
        dst,
        protocol,
        ports: None,
        icmp: None,
    };
    (flow, frame)
}

fn net(addr: IpAddr, len: u8) -> IpNet {
    IpNet::new(addr, len).expect("prefix").trunc()
}

/// The most instructions the verifier may walk for one policy program. Agent start waits
/// for it: on kernel 6.18.44 the programs verify 51k each (~0.25 s at idle, both in
/// parallel); a change that cost the verifier its pruning once took them to 291k (2.5-3.7 s
/// of start), and rule matching inlined into the walk (not a global function) to 110k.
const VERIFIED_INSNS_BUDGET: u32 = 80_000;

#[test]
fn the_policy_programs_stay_cheap_to_verify() {
    require_root!();
    let bpffs = Bpffs::mount();
    let mut programs = KernelPrograms::load(&bpffs.pin_root()).expect("load the kernel programs");
    for program in [TcProgram::PolicyToPod, TcProgram::PolicyFromPod] {
        let verified = programs
            .program_mut(program)
            .expect("program")
            .info()
            .expect("program info")
            .verified_instruction_count()
            .expect("the kernel reports verified instructions");
        assert!(
            verified <= VERIFIED_INSNS_BUDGET,
            "{program:?}: the verifier walked {verified} instructions, over the budget of \
             {VERIFIED_INSNS_BUDGET}; agent start waits for it (look for a value reaching a \
             function with a different known range from each call path, or branchy code \
             inlined into the rule walk that a global function would have checked once)"
        );
    }
}

#[test]
fn no_policy_allows_and_an_empty_policy_denies() {
    require_root!();
    in_ns(|| {
        let mut pair = Pair::new();
        for family in IpFamily::ALL {
            let (a, b) = (family.doc_addr(0, 1), family.doc_addr(1, 2));
            pair.set_pod(None, None);
            for direction in PolicyDirection::ALL {
                let (flow, frame) = tcp(a, 40000, b, 80);
                pair.check(direction, &flow, &frame, "no policy");
                assert_eq!(run(&mut pair.kernel, direction, &frame), TC_ACT_OK);
            }
            pair.set_pod(
                Some(table(vec![], Verdict::Deny)),
                Some(table(vec![], Verdict::Deny)),
            );
            for direction in PolicyDirection::ALL {
                let (flow, frame) = udp(a, 5000, b, 53);
                pair.check(direction, &flow, &frame, "empty policy");
                clear_conntrack(&pair.bpffs.pin_root());
                assert_eq!(run(&mut pair.kernel, direction, &frame), TC_ACT_SHOT);
            }
            // Policy in one direction only: the other still allows.
            pair.set_pod(Some(table(vec![], Verdict::Deny)), None);
            let (_, frame) = udp(a, 5001, b, 53);
            clear_conntrack(&pair.bpffs.pin_root());
            assert_eq!(
                run(&mut pair.kernel, PolicyDirection::Egress, &frame),
                TC_ACT_OK
            );
            clear_conntrack(&pair.bpffs.pin_root());
            assert_eq!(
                run(&mut pair.kernel, PolicyDirection::Ingress, &frame),
                TC_ACT_SHOT
            );
        }
    });
}

/// One rule per field, each with packets that must and must not match; verdicts are
/// checked against the oracle, and the oracle must say what the case expects.
#[test]
fn every_rule_field_matches_like_the_reference() {
    require_root!();
    in_ns(|| {
        let mut pair = Pair::new();
        for family in IpFamily::ALL {
            let inside = family.doc_addr(0, 10);
            let outside = family.doc_addr(2, 10);
            let peer = family.doc_addr(1, 1);
            let set = if family == IpFamily::V4 { 1 } else { 2 };
            let len = if family == IpFamily::V4 { 24 } else { 48 };
            for delta in set_deltas(set, [net(family.doc_addr(0, 0), len)]) {
                pair.apply(&delta);
            }
            let member = |m| {
                vec![SetMatch {
                    set: IpSetId(set),
                    member: m,
                }]
            };
            let icmp_proto = family.icmp_protocol();
            let mut cases: Vec<FieldCase> = Vec::new();
            let mut r = rule("protocol", RuleAction::Allow);
            r.protocol = Some(ip_proto::UDP);
            cases.push((
                "protocol",
                r,
                vec![
                    (udp(peer, 1, inside, 2), true),
                    (tcp(peer, 1, inside, 2), false),
                ],
            ));
            let mut r = rule("notProtocol", RuleAction::Allow);
            r.not_protocol = Some(ip_proto::UDP);
            cases.push((
                "notProtocol",
                r,
                vec![
                    (udp(peer, 1, inside, 2), false),
                    (other(peer, inside, 47), true),
                ],
            ));
            let mut r = rule("source set", RuleAction::Allow);
            r.source.sets = member(true);
            cases.push((
                "source set",
                r,
                vec![
                    (tcp(inside, 1, peer, 2), true),
                    (tcp(outside, 1, peer, 2), false),
                ],
            ));
            let mut r = rule("destination not in set", RuleAction::Allow);
            r.destination.sets = member(false);
            cases.push((
                "destination notSet",
                r,
                vec![
                    (tcp(peer, 1, outside, 2), true),
                    (tcp(peer, 1, inside, 2), false),
                ],
            ));
            let mut r = rule("ports", RuleAction::Allow);
            r.destination.ports = vec![
                PortRange::single(80),
                PortRange {
                    first: 8000,
                    last: 8080,
                },
            ];
            cases.push((
                "destination ports",
                r,
                vec![
                    (tcp(peer, 1, inside, 80), true),
                    (udp(peer, 1, inside, 8080), true),
                    (tcp(peer, 1, inside, 8081), false),
                    (icmp(peer, inside, 8, 0), false),
                ],
            ));
            let mut r = rule("notPorts", RuleAction::Allow);
            r.source.not_ports = vec![PortRange {
                first: 0,
                last: 1023,
            }];
            cases.push((
                "source notPorts",
                r,
                vec![
                    (tcp(peer, 1023, inside, 80), false),
                    (tcp(peer, 1024, inside, 80), true),
                    (other(peer, inside, 47), false),
                ],
            ));
            let (echo, unreachable) = match family {
                IpFamily::V4 => (8, 3),
                IpFamily::V6 => (128, 1),
            };
            let mut r = rule("icmp", RuleAction::Allow);
            r.protocol = Some(icmp_proto);
            r.icmp = Some(IcmpMatch {
                icmp_type: unreachable,
                code: Some(3),
            });
            cases.push((
                "icmp type and code",
                r,
                vec![
                    (icmp(peer, inside, unreachable, 3), true),
                    (icmp(peer, inside, unreachable, 1), false),
                    (icmp(peer, inside, echo, 0), false),
                ],
            ));
            let mut r = rule("notIcmp", RuleAction::Allow);
            r.not_icmp = Some(IcmpMatch {
                icmp_type: echo,
                code: None,
            });
            cases.push((
                "notIcmp type",
                r,
                vec![
                    (icmp(peer, inside, echo, 0), false),
                    (icmp(peer, inside, unreachable, 0), true),
                    (tcp(peer, 1, inside, 2), true),
                ],
            ));
            for (case, rule, packets) in cases {
                for direction in PolicyDirection::ALL {
                    let t = table(vec![rule.clone()], Verdict::Deny);
                    match direction {
                        PolicyDirection::Ingress => pair.set_pod(Some(t), None),
                        PolicyDirection::Egress => pair.set_pod(None, Some(t)),
                    }
                    for ((flow, frame), allowed) in &packets {
                        let decided = pair
                            .oracle
                            .decide(&EndpointName(POD.to_owned()), direction, flow)
                            .expect("known");
                        assert_eq!(
                            decided.verdict() == Verdict::Allow,
                            *allowed,
                            "{family:?} {case}: the case itself is wrong for {flow:?}"
                        );
                        pair.check(direction, flow, frame, &format!("{family:?} {case}"));
                    }
                }
            }
        }
    });
}

#[test]
fn first_match_wins_and_log_goes_on_with_an_event() {
    require_root!();
    in_ns(|| {
        let mut pair = Pair::new();
        let (a, b) = (IpFamily::V6.doc_addr(0, 1), IpFamily::V6.doc_addr(1, 1));
        let mut deny = rule("p/ingress/1", RuleAction::Deny);
        deny.destination.ports = vec![PortRange::single(22)];
        let rules = vec![
            rule("p/ingress/0", RuleAction::Log),
            deny,
            rule("p/ingress/2", RuleAction::Allow),
        ];
        pair.set_pod(Some(table(rules, Verdict::Deny)), None);
        pair.kernel.drain_events().expect("events");
        let (flow, frame) = tcp(a, 40000, b, 22);
        pair.check(PolicyDirection::Ingress, &flow, &frame, "deny rule");
        let (flow, frame) = tcp(a, 40001, b, 443);
        pair.check(PolicyDirection::Ingress, &flow, &frame, "allow rule");
        let events = pair.kernel.drain_events().expect("events");
        let kinds: Vec<(u8, u32)> = events.iter().map(|e| (e.kind, e.rule_index)).collect();
        assert_eq!(
            kinds,
            vec![(EVENT_LOG, 0), (EVENT_DENY, 1), (EVENT_LOG, 0)],
            "{events:#?}"
        );
        let deny_event = events[1];
        assert_eq!(
            (
                deny_event.src_port,
                deny_event.dst_port,
                deny_event.protocol
            ),
            (40000, 22, ip_proto::TCP)
        );
        assert_eq!(deny_event.ifindex, TEST_RUN_IFINDEX);
        assert_eq!(deny_event.reason, VerdictReason::DenyRule as u32);
        let counter = |i| pair.rule_packets(PolicyDirection::Ingress, i);
        assert_eq!([counter(0), counter(1), counter(2)], [2, 1, 1]);
        let verdicts = pair.kernel.verdicts().expect("verdicts");
        assert_eq!(
            verdicts
                .get(PolicyDirection::Ingress, VerdictReason::DenyRule)
                .packets,
            1
        );
        // The default decides when nothing matches, and a default deny has no rule.
        pair.set_pod(Some(table(vec![], Verdict::Deny)), None);
        let (_, frame) = udp(a, 1, b, 2);
        assert_eq!(
            run(&mut pair.kernel, PolicyDirection::Ingress, &frame),
            TC_ACT_SHOT
        );
        let events = pair.kernel.drain_events().expect("events");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].rule_index, EVENT_NO_RULE);
        assert_eq!(events[0].reason, VerdictReason::DenyDefault as u32);
    });
}

#[test]
fn replies_of_an_allowed_flow_pass_and_others_do_not() {
    require_root!();
    in_ns(|| {
        let mut pair = Pair::new();
        // The pod may open anything; nothing may open a flow to it.
        pair.set_pod(
            Some(table(vec![], Verdict::Deny)),
            Some(table(vec![rule("out", RuleAction::Allow)], Verdict::Deny)),
        );
        let (egress, ingress) = (PolicyDirection::Egress, PolicyDirection::Ingress);
        for family in IpFamily::ALL {
            let (pod, peer) = (family.doc_addr(0, 2), family.doc_addr(1, 9));
            let syn = Packet::ip(pod, peer)
                .tcp(40000, 80)
                .flags(TcpFlags::SYN)
                .build();
            let syn_ack = Packet::ip(peer, pod)
                .tcp(80, 40000)
                .flags(TcpFlags::SYN | TcpFlags::ACK)
                .build();
            let stranger = Packet::ip(peer, pod)
                .tcp(80, 40001)
                .flags(TcpFlags::SYN)
                .build();
            assert_eq!(
                run(&mut pair.kernel, ingress, &syn_ack),
                TC_ACT_SHOT,
                "no flow yet"
            );
            assert_eq!(run(&mut pair.kernel, egress, &syn), TC_ACT_OK);
            assert_eq!(
                run(&mut pair.kernel, ingress, &syn_ack),
                TC_ACT_OK,
                "{family:?} reply"
            );
            assert_eq!(run(&mut pair.kernel, ingress, &stranger), TC_ACT_SHOT);
            let query = Packet::ip(pod, peer).udp(5353, 53).build();
            let answer = Packet::ip(peer, pod).udp(53, 5353).build();
            assert_eq!(run(&mut pair.kernel, egress, &query), TC_ACT_OK);
            assert_eq!(
                run(&mut pair.kernel, ingress, &answer),
                TC_ACT_OK,
                "{family:?} udp"
            );
            let request = Packet::ip(pod, peer).icmp_echo_request(77, 1).build();
            let reply = Packet::ip(peer, pod).icmp_echo_reply(77, 1).build();
            let other_id = Packet::ip(peer, pod).icmp_echo_reply(78, 1).build();
            assert_eq!(run(&mut pair.kernel, egress, &request), TC_ACT_OK);
            assert_eq!(
                run(&mut pair.kernel, ingress, &reply),
                TC_ACT_OK,
                "{family:?} echo"
            );
            assert_eq!(run(&mut pair.kernel, ingress, &other_id), TC_ACT_SHOT);
        }
        let verdicts = pair.kernel.verdicts().expect("verdicts");
        assert_eq!(
            verdicts
                .get(ingress, VerdictReason::AllowEstablished)
                .packets,
            6
        );
        // A rule change applies to new flows; the open ones keep their entries.
        pair.set_pod(
            Some(table(vec![], Verdict::Deny)),
            Some(table(vec![], Verdict::Deny)),
        );
        let (pod, peer) = (IpFamily::V4.doc_addr(0, 2), IpFamily::V4.doc_addr(1, 9));
        let data = Packet::ip(pod, peer)
            .tcp(40000, 80)
            .flags(TcpFlags::ACK)
            .build();
        assert_eq!(run(&mut pair.kernel, egress, &data), TC_ACT_OK, "open flow");
        let new = Packet::ip(pod, peer)
            .tcp(40002, 80)
            .flags(TcpFlags::SYN)
            .build();
        assert_eq!(run(&mut pair.kernel, egress, &new), TC_ACT_SHOT, "new flow");
    });
}

#[test]
fn fragments_follow_their_first_fragment() {
    require_root!();
    in_ns(|| {
        let mut pair = Pair::new();
        let mut allow = rule("dns", RuleAction::Allow);
        allow.destination.ports = vec![PortRange::single(53)];
        pair.set_pod(Some(table(vec![allow], Verdict::Deny)), None);
        let ingress = PolicyDirection::Ingress;
        for family in IpFamily::ALL {
            let (a, b) = (family.doc_addr(1, 1), family.doc_addr(0, 2));
            let first = |port: u16, id: u32| {
                Packet::ip(a, b)
                    .identification(id)
                    .udp(5000, port)
                    .payload([1u8; 64])
                    .fragment(0, true)
                    .build()
            };
            let later = |id: u32| {
                Packet::ip(a, b)
                    .identification(id)
                    .raw_protocol(ip_proto::UDP)
                    .payload([1u8; 64])
                    .fragment(9, false)
                    .build()
            };
            assert_eq!(
                run(&mut pair.kernel, ingress, &later(1)),
                TC_ACT_SHOT,
                "orphan"
            );
            assert_eq!(run(&mut pair.kernel, ingress, &first(53, 1)), TC_ACT_OK);
            assert_eq!(
                run(&mut pair.kernel, ingress, &later(1)),
                TC_ACT_OK,
                "{family:?}"
            );
            assert_eq!(run(&mut pair.kernel, ingress, &first(22, 2)), TC_ACT_SHOT);
            assert_eq!(
                run(&mut pair.kernel, ingress, &later(2)),
                TC_ACT_SHOT,
                "denied first"
            );
        }
        let verdicts = pair.kernel.verdicts().expect("verdicts");
        assert_eq!(
            verdicts
                .get(ingress, VerdictReason::DenyOrphanFragment)
                .packets,
            4
        );
    });
}

#[test]
fn unparsable_packets_are_dropped_and_non_ip_passes() {
    require_root!();
    in_ns(|| {
        let mut pair = Pair::new();
        // No policy at all: still, what cannot be parsed is dropped.
        pair.set_pod(None, None);
        for family in IpFamily::ALL {
            let (a, b) = (family.doc_addr(0, 1), family.doc_addr(0, 2));
            let mut cut = Packet::ip(a, b).tcp(1, 2).flags(TcpFlags::SYN).build();
            let l4 = fedwall_tests::packet::ParsedPacket::parse(&cut)
                .expect("parse")
                .l4_offset;
            cut.truncate(l4 + 10);
            let bad_version = Packet::ip(a, b)
                .udp(1, 2)
                .corrupt(Corruption::IpVersion(5))
                .build();
            let mut first_without_ports = Packet::ip(a, b).udp(1, 2).fragment(0, true).build();
            first_without_ports.truncate(l4 + 3);
            for direction in PolicyDirection::ALL {
                for (case, frame) in [
                    ("tcp header cut short", &cut),
                    ("wrong version", &bad_version),
                    ("first fragment without its ports", &first_without_ports),
                ] {
                    assert_eq!(
                        run(&mut pair.kernel, direction, frame),
                        TC_ACT_SHOT,
                        "{family:?} {case}"
                    );
                }
            }
        }
        let (a, b) = (IpFamily::V6.doc_addr(0, 1), IpFamily::V6.doc_addr(0, 2));
        let mut nine = Packet::ip(a, b);
        for _ in 0..9 {
            nine = nine.ipv6_ext(Ipv6ExtHeader::DestinationOptions(vec![]));
        }
        let nine = nine.tcp(1, 2).build();
        assert_eq!(
            run(&mut pair.kernel, PolicyDirection::Ingress, &nine),
            TC_ACT_SHOT
        );
        // Extension headers are walked to the real protocol, which the rules then judge.
        let mut tcp_only = rule("tcp", RuleAction::Allow);
        tcp_only.protocol = Some(ip_proto::TCP);
        tcp_only.destination.ports = vec![PortRange::single(2)];
        pair.set_pod(Some(table(vec![tcp_only], Verdict::Deny)), None);
        let hidden = Packet::ip(a, b)
            .ipv6_ext(Ipv6ExtHeader::HopByHop(vec![]))
            .ipv6_ext(Ipv6ExtHeader::DestinationOptions(vec![]))
            .udp(1, 2)
            .build();
        assert_eq!(
            run(&mut pair.kernel, PolicyDirection::Ingress, &hidden),
            TC_ACT_SHOT
        );
        let wrapped = Packet::ip(a, b)
            .ipv6_ext(Ipv6ExtHeader::HopByHop(vec![]))
            .tcp(1, 2)
            .flags(TcpFlags::SYN)
            .build();
        assert_eq!(
            run(&mut pair.kernel, PolicyDirection::Ingress, &wrapped),
            TC_ACT_OK
        );
        // ARP passes a deny-everything policy.
        pair.set_pod(
            Some(table(vec![], Verdict::Deny)),
            Some(table(vec![], Verdict::Deny)),
        );
        let mut arp = vec![0xff; 6];
        arp.extend([0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
        arp.extend([0, 1, 0x08, 0x00, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 192, 0, 2, 1]);
        arp.extend([0, 0, 0, 0, 0, 0, 192, 0, 2, 2]);
        for direction in PolicyDirection::ALL {
            assert_eq!(run(&mut pair.kernel, direction, &arp), TC_ACT_OK, "arp");
        }
        let verdicts = pair.kernel.verdicts().expect("verdicts");
        assert_eq!(
            verdicts
                .get(PolicyDirection::Ingress, VerdictReason::DenyCannotParse)
                .packets,
            7
        );
    });
}

#[test]
fn over_limit_updates_are_rejected_and_the_old_table_stays() {
    require_root!();
    in_ns(|| {
        let mut pair = Pair::new();
        pair.set_pod(Some(table(vec![], Verdict::Deny)), None);
        let (a, b) = (IpFamily::V4.doc_addr(1, 1), IpFamily::V4.doc_addr(0, 2));
        let frame = Packet::ip(a, b).udp(1, 2).build();
        let mut too_many_ports = rule("p/ingress/0", RuleAction::Allow);
        too_many_ports.destination.not_ports = (1..=9).map(PortRange::single).collect();
        let error = pair
            .kernel
            .apply(&Delta::EndpointSet(endpoint(
                POD,
                Some(table(vec![too_many_ports], Verdict::Allow)),
                None,
            )))
            .expect_err("nine notPorts ranges do not fit");
        assert!(
            matches!(&error, DataplaneError::RuleTooComplex { limit: 8, .. }),
            "{error:?}"
        );
        let huge = vec![rule("r", RuleAction::Allow); 5000];
        let error = pair
            .kernel
            .apply(&Delta::EndpointSet(endpoint(
                POD,
                Some(table(huge, Verdict::Allow)),
                None,
            )))
            .expect_err("5000 rules do not fit");
        assert!(error.to_string().contains(POD), "{error}");
        assert!(error.to_string().contains("fw_rules_v1"), "{error}");
        assert_eq!(pair.kernel.rejected_updates(), 2);
        assert_eq!(
            run(&mut pair.kernel, PolicyDirection::Ingress, &frame),
            TC_ACT_SHOT,
            "the previous (deny) table is still enforced"
        );
    });
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[test]
fn random_tables_decide_like_the_reference() {
    require_root!();
    in_ns(|| {
        let mut pair = Pair::new();
        let mut rng = Rng(0x5eed_f00d_cafe_1234);
        let families = IpFamily::ALL;
        let sets = 6u32;
        for id in 0..sets {
            pair.apply(&Delta::IpSetCreated { id: IpSetId(id) });
        }
        for round in 0..12 {
            let family = families[round % 2];
            let addr = |rng: &mut Rng| family.doc_addr(rng.below(3) as u8, rng.below(8) as u8);
            // Re-draw set members: hosts and CIDRs, nested on purpose.
            for id in 0..sets {
                let current: BTreeSet<IpNet> = pair.oracle.sets[&IpSetId(id)].clone();
                let mut added = BTreeSet::new();
                for _ in 0..rng.below(4) {
                    let a = addr(&mut rng);
                    let len = match (family, rng.below(3)) {
                        (IpFamily::V4, 0) => 24,
                        (IpFamily::V4, 1) => 30,
                        (IpFamily::V4, _) => 32,
                        (IpFamily::V6, 0) => 48,
                        (IpFamily::V6, 1) => 126,
                        (IpFamily::V6, _) => 128,
                    };
                    added.insert(net(a, len));
                }
                let removed: BTreeSet<IpNet> = current.difference(&added).copied().collect();
                pair.apply(&Delta::IpSetMembers {
                    id: IpSetId(id),
                    added,
                    removed,
                });
            }
            let protocols = [ip_proto::TCP, ip_proto::UDP, family.icmp_protocol(), 47];
            let mut rules = Vec::new();
            for i in 0..rng.below(8) {
                let action = match rng.below(4) {
                    0 => RuleAction::Deny,
                    1 => RuleAction::Log,
                    _ => RuleAction::Allow,
                };
                let mut r = rule(&format!("r{i}"), action);
                if rng.chance(30) {
                    r.protocol = Some(protocols[rng.below(4) as usize]);
                }
                if rng.chance(15) {
                    r.not_protocol = Some(protocols[rng.below(4) as usize]);
                }
                for side in [&mut r.source, &mut r.destination] {
                    for _ in 0..rng.below(3) {
                        side.sets.push(SetMatch {
                            set: IpSetId(rng.below(u64::from(sets)) as u32),
                            member: rng.chance(70),
                        });
                    }
                    if rng.chance(25) {
                        let first = rng.below(6) as u16 * 10;
                        side.ports.push(PortRange {
                            first,
                            last: first + rng.below(15) as u16,
                        });
                    }
                    if rng.chance(15) {
                        side.not_ports.push(PortRange::single(rng.below(40) as u16));
                    }
                }
                if rng.chance(15) {
                    r.icmp = Some(IcmpMatch {
                        icmp_type: rng.below(4) as u8,
                        code: rng.chance(50).then(|| rng.below(2) as u8),
                    });
                }
                if rng.chance(10) {
                    r.not_icmp = Some(IcmpMatch {
                        icmp_type: rng.below(4) as u8,
                        code: None,
                    });
                }
                rules.push(r);
            }
            let default = if rng.chance(50) {
                Verdict::Allow
            } else {
                Verdict::Deny
            };
            let t = table(rules, default);
            pair.set_pod(Some(t.clone()), Some(t));
            for _ in 0..40 {
                let (src, dst) = (addr(&mut rng), addr(&mut rng));
                let (sport, dport) = (rng.below(60) as u16, rng.below(60) as u16);
                let (flow, frame) = match rng.below(4) {
                    0 => tcp(src, sport, dst, dport),
                    1 => udp(src, sport, dst, dport),
                    2 => icmp(src, dst, rng.below(4) as u8, rng.below(2) as u8),
                    _ => other(src, dst, 47),
                };
                let direction = PolicyDirection::ALL[rng.below(2) as usize];
                pair.check(direction, &flow, &frame, &format!("round {round}"));
            }
        }
    });
}

/// Tables of hundreds of rules span several 64-slot blocks of the rules map, and each
/// replacement lands next to the ranges it replaced while they cool down: blocks are
/// shared by tables, summaries skip most of them, heads most of the rest. The verdicts
/// must still be those of a rule-by-rule walk.
#[test]
fn large_tables_decide_like_the_reference_across_blocks() {
    require_root!();
    in_ns(|| {
        let mut pair = Pair::new();
        let mut rng = Rng(0x0b10_c4ed_5eed_0001);
        // More sets than one bitmap word holds, so summaries span several words.
        let sets = 100u32;
        let hosts = 24u64;
        let addr = |rng: &mut Rng, family: IpFamily| {
            family.doc_addr(rng.below(2) as u8, rng.below(hosts) as u8)
        };
        for id in 0..sets {
            let mut members = BTreeSet::new();
            for _ in 0..rng.below(4) {
                let family = IpFamily::ALL[rng.below(2) as usize];
                let a = addr(&mut rng, family);
                let len = match (family, rng.chance(10)) {
                    (IpFamily::V4, true) => 29,
                    (IpFamily::V4, false) => 32,
                    (IpFamily::V6, true) => 125,
                    (IpFamily::V6, false) => 128,
                };
                members.insert(net(a, len));
            }
            for delta in set_deltas(id, members) {
                pair.apply(&delta);
            }
        }
        let random_table = |rng: &mut Rng| {
            let rules = (0..40 + rng.below(220))
                .map(|i| {
                    let action = match rng.below(8) {
                        0 | 1 => RuleAction::Deny,
                        2 => RuleAction::Log,
                        _ => RuleAction::Allow,
                    };
                    let mut r = rule(&format!("r{i}"), action);
                    if rng.chance(40) {
                        r.protocol =
                            Some([ip_proto::TCP, ip_proto::UDP, 47][rng.below(3) as usize]);
                    }
                    // Most rules need a set on one side or both (what makes blocks
                    // skippable); a few have none, which opens their block.
                    let sides = match rng.below(100) {
                        0..=2 => 0,
                        3..=60 => 1,
                        _ => 2,
                    };
                    let first = rng.below(2) as usize;
                    for n in 0..sides {
                        let side = if (first + n).is_multiple_of(2) {
                            &mut r.source
                        } else {
                            &mut r.destination
                        };
                        side.sets.push(SetMatch {
                            set: IpSetId(rng.below(u64::from(sets)) as u32),
                            member: rng.chance(90),
                        });
                        if rng.chance(20) {
                            side.sets.push(SetMatch {
                                set: IpSetId(rng.below(u64::from(sets)) as u32),
                                member: rng.chance(50),
                            });
                        }
                    }
                    if rng.chance(30) {
                        for _ in 0..1 + rng.below(3) {
                            let first = rng.below(30) as u16 * 2;
                            r.destination.ports.push(PortRange {
                                first,
                                last: first + rng.below(4) as u16,
                            });
                        }
                    }
                    if rng.chance(10) {
                        r.source
                            .not_ports
                            .push(PortRange::single(rng.below(60) as u16));
                    }
                    r
                })
                .collect();
            let default = if rng.chance(50) {
                Verdict::Allow
            } else {
                Verdict::Deny
            };
            table(rules, default)
        };
        let mut allowed = 0;
        let mut checked = 0;
        for round in 0..6 {
            let (ingress, egress) = (random_table(&mut rng), random_table(&mut rng));
            pair.set_pod(Some(ingress), Some(egress));
            for _ in 0..60 {
                let family = IpFamily::ALL[rng.below(2) as usize];
                let (src, dst) = (addr(&mut rng, family), addr(&mut rng, family));
                let (sport, dport) = (rng.below(60) as u16, rng.below(60) as u16);
                let (flow, frame) = match rng.below(3) {
                    0 => tcp(src, sport, dst, dport),
                    1 => udp(src, sport, dst, dport),
                    _ => other(src, dst, 47),
                };
                let direction = PolicyDirection::ALL[rng.below(2) as usize];
                pair.check(direction, &flow, &frame, &format!("round {round}"));
                checked += 1;
                let expected = pair
                    .oracle
                    .decide(&EndpointName(POD.to_owned()), direction, &flow)
                    .expect("endpoint known");
                if expected.verdict() == Verdict::Allow {
                    allowed += 1;
                }
            }
        }
        // Both outcomes were exercised, not one verdict for everything.
        assert!(
            allowed > checked / 10 && allowed < checked * 9 / 10,
            "{allowed} of {checked} flows allowed"
        );
    });
}

/// An endpoint's two tables are neighbours in the rules map and share a 64-rule block:
/// writing the second must not hide the first's rules in it. Here the ingress table's
/// deciding rule sits in that shared block, behind 69 rules that never match, and every
/// egress rule needs a set the client is not in.
#[test]
fn a_table_written_next_to_another_keeps_its_rules_in_their_shared_block() {
    require_root!();
    in_ns(|| {
        let mut pair = Pair::new();
        let family = IpFamily::V4;
        let (client, other_client, pod) = (
            family.doc_addr(0, 10),
            family.doc_addr(0, 11),
            family.doc_addr(1, 2),
        );
        let (nobody, clients, others) = (0, 1, 2);
        for (id, members) in [
            (nobody, vec![]),
            (clients, vec![net(client, 32)]),
            (others, vec![net(other_client, 32)]),
        ] {
            for delta in set_deltas(id, members) {
                pair.apply(&delta);
            }
        }
        let needing = |set: u32, action: RuleAction, i: usize| {
            let mut r = rule(&format!("r{i}"), action);
            r.source.sets.push(SetMatch {
                set: IpSetId(set),
                member: true,
            });
            r
        };
        let mut ingress: Vec<Rule> = (0..69)
            .map(|i| needing(nobody, RuleAction::Allow, i))
            .collect();
        ingress.push(needing(clients, RuleAction::Allow, 69));
        let egress = (0..40)
            .map(|i| needing(others, RuleAction::Deny, i))
            .collect();
        pair.set_pod(
            Some(table(ingress, Verdict::Deny)),
            Some(table(egress, Verdict::Allow)),
        );
        let (flow, frame) = tcp(client, 40000, pod, 80);
        let expected = pair
            .oracle
            .decide(
                &EndpointName(POD.to_owned()),
                PolicyDirection::Ingress,
                &flow,
            )
            .expect("endpoint known");
        assert_eq!(expected.verdict(), Verdict::Allow, "{expected:?}");
        pair.check(PolicyDirection::Ingress, &flow, &frame, "client to pod");
        let (flow, frame) = tcp(other_client, 40000, pod, 80);
        pair.check(
            PolicyDirection::Ingress,
            &flow,
            &frame,
            "other client to pod",
        );
    });
}

/// A rule listing more port ranges than a kernel entry holds (8 a side) takes several
/// entries. It must still match exactly its ports, a Log rule must log a packet once, and
/// counters and events must name rules by their own index, not by entry.
#[test]
fn a_rule_with_twenty_ports_matches_exactly_its_ports() {
    require_root!();
    in_ns(|| {
        let mut pair = Pair::new();
        let (client, pod) = (IpFamily::V4.doc_addr(0, 1), IpFamily::V4.doc_addr(1, 2));
        let ports: Vec<u16> = (0..20).map(|i| 1000 + 2 * i).collect();
        let listed: Vec<PortRange> = ports.iter().copied().map(PortRange::single).collect();
        let mut log = rule("p/ingress/0", RuleAction::Log);
        log.destination.ports = listed.clone();
        let mut allow = rule("p/ingress/1", RuleAction::Allow);
        allow.protocol = Some(ip_proto::TCP);
        allow.destination.ports = listed;
        let mut after = rule("p/ingress/2", RuleAction::Allow);
        after.destination.ports = vec![PortRange::single(5000)];
        pair.set_pod(Some(table(vec![log, allow, after], Verdict::Deny)), None);
        pair.kernel.drain_events().expect("events");
        let mut check = |port: u16| {
            let (flow, frame) = tcp(client, 40000, pod, port);
            pair.check(
                PolicyDirection::Ingress,
                &flow,
                &frame,
                &format!("port {port}"),
            );
        };
        for &port in &ports {
            check(port);
        }
        for port in [999, 1001, 1039, 1040, 4999] {
            check(port);
        }
        let (flow, frame) = tcp(client, 40000, pod, 5000);
        pair.check(PolicyDirection::Ingress, &flow, &frame, "the rule after");
        // A listed port over UDP: logged by rule 0, not allowed by rule 1 (TCP only).
        let (flow, frame) = udp(client, 40000, pod, 1010);
        pair.check(PolicyDirection::Ingress, &flow, &frame, "udp");

        let events = pair.kernel.drain_events().expect("events");
        let logged: Vec<u32> = events
            .iter()
            .filter(|e| e.kind == EVENT_LOG)
            .map(|e| e.rule_index)
            .collect();
        assert_eq!(
            logged,
            vec![0; 21],
            "one Log event per listed packet, rule 0"
        );
        let denied: Vec<u16> = events
            .iter()
            .filter(|e| e.kind == EVENT_DENY)
            .map(|e| e.dst_port)
            .collect();
        assert_eq!(
            denied,
            [999, 1001, 1039, 1040, 4999, 1010],
            "the rest is denied"
        );
        let counter = |i| pair.rule_packets(PolicyDirection::Ingress, i);
        assert_eq!([counter(0), counter(1), counter(2)], [21, 20, 1]);
    });
}
