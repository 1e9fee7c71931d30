//! `fedwall-bench-nat`: NAT-outgoing's cost per packet through BPF_PROG_TEST_RUN in a
//! private namespace and bpffs — an established flow's translation against the conntrack
//! lookup alone, a new mapping, how many concurrent mappings the table holds, and what the
//! agent's sweep of the mapping table costs with them all in it. Prints
//! `BENCH <name> <value> <unit>` lines, then a table. Run it through `cargo xtask bench nat`
//! (release build, root).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::ensure;
use aya::maps::HashMap as BpfHashMap;
use fedwall::dataplane::TcProgram;
use fedwall_common::conntrack::ConntrackKey;
use fedwall_common::nat::{
    MAPPING_REWRITE_SOURCE, NAT_MAPPINGS_MAP, NAT_PORT_FIRST, NAT_PORT_LAST, NatMapping,
};
use fedwall_tests::{
    nat::{TC_ACT_OK, addrs, nat},
    netns::NetNs,
    packet::{IpFamily, Packet},
};

const REPEAT: u32 = 1_000_000;
const MAPPINGS: u32 = 100_000;

fn main() -> anyhow::Result<()> {
    let ns = NetNs::new();
    let rows = ns.enter(bench)?;
    println!();
    println!("| figure | value | target |");
    println!("|---|---|---|");
    for (name, value, unit, target) in &rows {
        println!("| {name} | {value:.0} {unit} | {target} |");
    }
    Ok(())
}

type Row = (&'static str, f64, &'static str, &'static str);

fn emit(rows: &mut Vec<Row>, row: Row) {
    println!("BENCH {} {:.0} {}", row.0, row.1, row.2);
    rows.push(row);
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// The `n`th of many pods, all in the natOutgoing pool 10.244.0.0/16.
fn pod(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 244, (n >> 8) as u8, n as u8))
}

/// The `n`th of many peers outside every pool.
fn peer(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, (n >> 8) as u8, n as u8))
}

fn bench() -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut nat = nat(NAT_PORT_FIRST..=NAT_PORT_LAST);
    let a = addrs(IpFamily::V4);

    // The conntrack lookup alone: a packet to a pod's own address from outside hits its
    // (pass-through) entry and leaves untouched: parse + one lookup.
    let inbound = Packet::ip(a.internet, a.pod)
        .udp(53, 5000)
        .payload([0u8; 18])
        .build();
    nat.run(TcProgram::NatIngress, &inbound);
    let (verdict, lookup) = nat.run_repeat(TcProgram::NatIngress, &inbound, REPEAT);
    ensure!(verdict == TC_ACT_OK, "inbound packet verdict {verdict}");
    emit(
        &mut rows,
        ("nat_conntrack_lookup_alone", ns(lookup), "ns", "baseline"),
    );

    // An established flow: parse + one lookup + the rewrite with its checksums.
    let outbound = Packet::ip(a.pod, a.internet)
        .udp(5000, 53)
        .payload([0u8; 18])
        .build();
    nat.egress(&outbound, "establish");
    let (verdict, established) = nat.run_repeat(TcProgram::NatEgress, &outbound, REPEAT);
    ensure!(verdict == TC_ACT_OK, "established verdict {verdict}");
    emit(
        &mut rows,
        (
            "nat_established_egress",
            ns(established),
            "ns",
            "<= 2 x lookup",
        ),
    );
    let translated = nat.egress(&outbound, "translated");
    let reply = fedwall_tests::packet::ParsedPacket::parse(&translated)?;
    let (_, port) = (reply.src, reply.ports().map_or(0, |p| p.0));
    let back = Packet::ip(a.internet, a.node)
        .udp(53, port)
        .payload([0u8; 18])
        .build();
    let (verdict, reversed) = nat.run_repeat(TcProgram::NatIngress, &back, REPEAT);
    ensure!(verdict == TC_ACT_OK, "reply verdict {verdict}");
    emit(
        &mut rows,
        (
            "nat_established_ingress",
            ns(reversed),
            "ns",
            "<= 2 x lookup",
        ),
    );
    emit(
        &mut rows,
        (
            "nat_established_ratio_x100",
            100.0 * ns(established) / ns(lookup),
            "%",
            "<= 200 %",
        ),
    );

    // New mappings: every packet a flow of its own (distinct pod and peer), one run each;
    // the kernel's per-run time includes its timer reads, so this overstates a little.
    let mut total = Duration::ZERO;
    for n in 0..MAPPINGS {
        let frame = Packet::ip(pod(n), peer(n % 4096))
            .udp(10_000 + (n / 4096) as u16, 53)
            .payload([0u8; 18])
            .build();
        let (verdict, took) = nat.run_repeat(TcProgram::NatEgress, &frame, 1);
        ensure!(verdict == TC_ACT_OK, "new mapping {n}: verdict {verdict}");
        total += took;
    }
    let raw = ns(total) / f64::from(MAPPINGS);
    // One run at a time costs the syscall's timer reads and set-up on top of the program:
    // the same single runs of the established flow say how much, and it is taken off.
    let mut single = Duration::ZERO;
    for _ in 0..MAPPINGS {
        single += nat.run_repeat(TcProgram::NatEgress, &outbound, 1).1;
    }
    let overhead = ns(single) / f64::from(MAPPINGS) - ns(established);
    emit(
        &mut rows,
        (
            "nat_new_mapping_single_run",
            raw,
            "ns",
            "(includes per-run overhead)",
        ),
    );
    emit(
        &mut rows,
        ("nat_single_run_overhead", overhead, "ns", "(measured)"),
    );
    emit(
        &mut rows,
        ("nat_new_mapping", raw - overhead, "ns", "<= 500 ns"),
    );

    // Every mapping still there: count the outbound entries.
    let map = nat.programs.map(NAT_MAPPINGS_MAP)?;
    let table = BpfHashMap::<_, ConntrackKey, NatMapping>::try_from(map)?;
    let held = table
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, value)| value.flags & MAPPING_REWRITE_SOURCE != 0)
        .count();
    emit(
        &mut rows,
        ("nat_mappings_held", held as f64, "mappings", ">= 100000"),
    );

    // The agent's sweep, once per tick, with all of them live (nothing to remove: the
    // whole table is visited all the same).
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let live = nat.programs.sweep_nat_mappings()?;
        best = best.min(started.elapsed());
        ensure!(
            live as usize >= 2 * held,
            "the sweep left {live} entries of {held} mappings"
        );
    }
    emit(
        &mut rows,
        (
            "nat_sweep_full_table_us",
            best.as_secs_f64() * 1e6,
            "us",
            "(once per second, in the agent)",
        ),
    );
    Ok(rows)
}
