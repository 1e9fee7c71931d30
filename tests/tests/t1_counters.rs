//! T1: the counting programs through BPF_PROG_TEST_RUN. Every packet passes (TC_ACT_OK) and
//! lands in exactly one counter, chosen by direction and protocol class, with its length
//! in bytes; malformed packets are counted as such, not as what they claim to be.

use std::net::IpAddr;

use aya::programs::{TestRun as _, TestRunOptions};
use fedwall::dataplane::{KernelPrograms, ProtoStats, TcProgram};
use fedwall_common::stats::{Direction, ProtoClass, ProtoCounter};
use fedwall_tests::{
    bpffs::Bpffs,
    packet::{Corruption, IpFamily, Ipv6ExtHeader, Packet, ip_proto},
    require_root,
};

const TC_ACT_OK: u32 = 0;
const GRE: u8 = 47;

/// Runs one frame through `program` and returns its verdict.
fn run(programs: &mut KernelPrograms, program: TcProgram, frame: &[u8]) -> u32 {
    let classifier = programs.program_mut(program).expect("program");
    let mut options = TestRunOptions::new();
    options.data_in = Some(frame);
    classifier
        .test_run(options)
        .unwrap_or_else(|e| {
            panic!(
                "BPF_PROG_TEST_RUN of {program:?} with {} bytes: {e:?}",
                frame.len()
            )
        })
        .return_value
}

/// Asserts that between `before` and `after` exactly one counter moved, by one packet of
/// `len` bytes.
fn assert_counted_once(
    before: &ProtoStats,
    after: &ProtoStats,
    direction: Direction,
    class: ProtoClass,
    len: usize,
    case: &str,
) {
    for (d, c, counter) in after.iter() {
        let old = before.get(d, c);
        let expected = if (d, c) == (direction, class) {
            ProtoCounter {
                packets: old.packets + 1,
                bytes: old.bytes + len as u64,
            }
        } else {
            old
        };
        assert_eq!(
            counter,
            expected,
            "{case}: counter {}/{} after one packet",
            d.name(),
            c.name()
        );
    }
}

fn family_class(family: IpFamily, v4: ProtoClass, v6: ProtoClass) -> ProtoClass {
    match family {
        IpFamily::V4 => v4,
        IpFamily::V6 => v6,
    }
}

/// (what, frame, expected class) for one address family.
fn cases(family: IpFamily) -> Vec<(String, Vec<u8>, ProtoClass)> {
    let (src, dst): (IpAddr, IpAddr) = (family.doc_addr(0, 1), family.doc_addr(1, 2));
    let class = |v4, v6| family_class(family, v4, v6);
    let tcp = Packet::ip(src, dst).tcp(40000, 443).payload(b"hello");
    let mut cases = vec![
        (
            "tcp".to_owned(),
            tcp.build(),
            class(ProtoClass::Ipv4Tcp, ProtoClass::Ipv6Tcp),
        ),
        (
            "udp".to_owned(),
            Packet::ip(src, dst).udp(5353, 53).payload(b"query").build(),
            class(ProtoClass::Ipv4Udp, ProtoClass::Ipv6Udp),
        ),
        (
            "icmp echo".to_owned(),
            Packet::ip(src, dst).icmp_echo_request(7, 1).build(),
            class(ProtoClass::Ipv4Icmp, ProtoClass::Ipv6Icmp),
        ),
        (
            "gre".to_owned(),
            Packet::ip(src, dst)
                .raw_protocol(GRE)
                .payload([0u8; 8])
                .build(),
            class(ProtoClass::Ipv4Other, ProtoClass::Ipv6Other),
        ),
        (
            "first fragment of a udp datagram".to_owned(),
            Packet::ip(src, dst)
                .udp(5353, 53)
                .payload([1u8; 64])
                .fragment(0, true)
                .build(),
            class(ProtoClass::Ipv4Udp, ProtoClass::Ipv6Udp),
        ),
        (
            "later fragment (no L4 header)".to_owned(),
            Packet::ip(src, dst)
                .raw_protocol(ip_proto::UDP)
                .payload([1u8; 64])
                .fragment(8, false)
                .build(),
            class(ProtoClass::Ipv4Other, ProtoClass::Ipv6Other),
        ),
        // (A frame whose IP header itself is cut short cannot be fed this way: the kernel's
        // BPF_PROG_TEST_RUN rejects it before the program runs.)
        (
            "tcp header cut short".to_owned(),
            {
                let mut frame = tcp.build();
                let l4 = fedwall_tests::packet::ParsedPacket::parse(&frame)
                    .expect("parse")
                    .l4_offset;
                frame.truncate(l4 + 10);
                frame
            },
            ProtoClass::Malformed,
        ),
        (
            "wrong IP version".to_owned(),
            Packet::ip(src, dst)
                .udp(1, 2)
                .corrupt(Corruption::IpVersion(5))
                .build(),
            ProtoClass::Malformed,
        ),
    ];
    match family {
        IpFamily::V4 => cases.push((
            "IHL below 5".to_owned(),
            Packet::ip(src, dst)
                .udp(1, 2)
                .corrupt(Corruption::Ipv4Ihl(3))
                .build(),
            ProtoClass::Malformed,
        )),
        IpFamily::V6 => {
            cases.push((
                "tcp after hop-by-hop and destination options".to_owned(),
                Packet::ip(src, dst)
                    .ipv6_ext(Ipv6ExtHeader::HopByHop(vec![]))
                    .ipv6_ext(Ipv6ExtHeader::DestinationOptions(vec![]))
                    .tcp(40000, 443)
                    .build(),
                ProtoClass::Ipv6Tcp,
            ));
            let mut nine = Packet::ip(src, dst);
            for _ in 0..9 {
                nine = nine.ipv6_ext(Ipv6ExtHeader::DestinationOptions(vec![]));
            }
            cases.push((
                "nine extension headers (over the parser's bound)".to_owned(),
                nine.tcp(40000, 443).build(),
                ProtoClass::Malformed,
            ));
        }
    }
    cases
}

fn arp_request() -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend([0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
    frame.extend([0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    frame.extend([0x02, 0, 0, 0, 0, 1, 192, 0, 2, 1]);
    frame.extend([0, 0, 0, 0, 0, 0, 192, 0, 2, 2]);
    frame
}

#[test]
fn every_packet_passes_and_lands_in_its_protocol_counter() {
    require_root!();
    let bpffs = Bpffs::mount();
    let mut programs = KernelPrograms::load(&bpffs.pin_root()).expect("load the kernel programs");
    let mut all = vec![("arp".to_owned(), arp_request(), ProtoClass::NonIp)];
    for family in IpFamily::ALL {
        all.extend(
            cases(family)
                .into_iter()
                .map(|(what, frame, class)| (format!("{family:?} {what}"), frame, class)),
        );
    }
    for direction in Direction::ALL {
        let program = TcProgram::counter(direction);
        for (case, frame, class) in &all {
            let before = programs.proto_stats().expect("read counters");
            let verdict = run(&mut programs, program, frame);
            assert_eq!(
                verdict, TC_ACT_OK,
                "{case}: counting must pass every packet"
            );
            let after = programs.proto_stats().expect("read counters");
            assert_counted_once(&before, &after, direction, *class, frame.len(), case);
        }
    }
}

#[test]
fn counters_survive_a_reload_through_the_pins() {
    require_root!();
    let bpffs = Bpffs::mount();
    let frame = Packet::ip(IpFamily::V4.doc_addr(0, 1), IpFamily::V4.doc_addr(0, 2))
        .udp(1000, 53)
        .build();
    {
        let mut first = KernelPrograms::load(&bpffs.pin_root()).expect("load");
        for _ in 0..5 {
            run(&mut first, TcProgram::CountEgress, &frame);
        }
    }
    // A new loader (think: agent restart) reuses the pinned map, counters included.
    let mut second = KernelPrograms::load(&bpffs.pin_root()).expect("reload");
    run(&mut second, TcProgram::CountEgress, &frame);
    let stats = second.proto_stats().expect("read counters");
    assert_eq!(
        stats.get(Direction::Egress, ProtoClass::Ipv4Udp),
        ProtoCounter {
            packets: 6,
            bytes: 6 * frame.len() as u64
        }
    );
}
