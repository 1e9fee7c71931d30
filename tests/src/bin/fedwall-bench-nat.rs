//! `fedwall-bench-nat`: NAT-outgoing's cost per packet through BPF_PROG_TEST_RUN in a
//! private namespace and bpffs — an established flow's translation against the conntrack
//! lookup alone, a new mapping, how many concurrent mappings the table holds, and what the
//! agent's count of the live flows costs with them all in it. Prints
//! `BENCH <name> <value> <unit>` lines, then a table. Run it through `cargo xtask bench nat`
//! (release build, root).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::ensure;
use fedwall::dataplane::TcProgram;
use fedwall_common::nat::{
    FLOW_TRANSLATED, NAT_PORT_FIRST, NAT_PORT_LAST, NatFlow, NatReason, addr_words, peer_hash,
    port_offset, slot_of,
};
use fedwall_common::net::ip_proto::UDP;
use fedwall_tests::{
    nat::{Nat, TC_ACT_OK, TEST_RUN_IFINDEX, addrs, bytes_of, kernel_now_ns, nat},
    netns::NetNs,
    packet::{IpFamily, Packet},
};

const REPEAT: u32 = 1_000_000;
const MAPPINGS: u32 = 100_000;
/// Single runs per measured translation (each is a syscall).
const SINGLE_RUNS: u32 = 200_000;

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

/// Runs `frame` through `program` once per call, `runs` times, each run on a fresh copy of
/// the frame (a repeated run would see the frame its previous run rewrote): the kernel's
/// mean time per run, which includes the per-run set-up and timer reads.
fn single_runs(
    nat: &mut Nat,
    program: TcProgram,
    runs: u32,
    frame: impl Fn(u32) -> Vec<u8>,
) -> anyhow::Result<Duration> {
    let mut total = Duration::ZERO;
    for n in 0..runs {
        let (verdict, took) = nat.run_repeat(program, &frame(n), 1);
        ensure!(
            verdict == TC_ACT_OK,
            "{program:?} run {n}: verdict {verdict}"
        );
        total += took;
    }
    Ok(total / runs)
}

/// Runs `measure` and checks that it took the path it claims to: `reason`'s counter grew by
/// exactly `runs`.
fn on_path<T>(
    nat: &mut Nat,
    reason: NatReason,
    runs: u32,
    measure: impl FnOnce(&mut Nat) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let counts = |nat: &Nat| NatReason::ALL.map(|reason| nat.count(reason));
    let before = counts(nat);
    let result = measure(nat)?;
    let grew: Vec<(NatReason, u64)> = NatReason::ALL
        .into_iter()
        .zip(counts(nat).into_iter().zip(before))
        .map(|(reason, (after, before))| (reason, after - before))
        .filter(|(_, grew)| *grew > 0)
        .collect();
    ensure!(
        grew == [(reason, u64::from(runs))],
        "{runs} runs meant to be {reason:?} were counted as {grew:?}"
    );
    Ok(result)
}

/// Keeps the calling thread on the CPU it runs on: a single run is a syscall, and a thread
/// moved to the other core between two finds its caches cold there (unpinned, the new
/// mapping figure wandered by ±50 ns on a 2-CPU machine).
fn stay_on_this_cpu() -> anyhow::Result<usize> {
    // SAFETY: no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    ensure!(
        cpu >= 0,
        "sched_getcpu: {}",
        std::io::Error::last_os_error()
    );
    let cpu = cpu as usize;
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is a CPU the kernel named, within the set's size.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size given; 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    ensure!(
        rc == 0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
    Ok(cpu)
}

fn bench() -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let cpu = stay_on_this_cpu()?;
    println!("(measuring on CPU {cpu}, pinned)");
    let mut nat = nat(NAT_PORT_FIRST..=NAT_PORT_LAST);
    let a = addrs(IpFamily::V4);

    // The conntrack lookup alone: a packet to a pod's own address from outside hits its
    // (pass-through) entry and leaves untouched: parse + one lookup. Being left untouched,
    // it is the same packet on every run of a repeated run, so its mean is exact.
    let inbound = Packet::ip(a.internet, a.pod)
        .udp(53, 5000)
        .payload([0u8; 18])
        .build();
    nat.run(TcProgram::NatIngress, &inbound);
    let lookup = on_path(&mut nat, NatReason::NotEligible, REPEAT, |nat| {
        let (verdict, mean) = nat.run_repeat(TcProgram::NatIngress, &inbound, REPEAT);
        ensure!(verdict == TC_ACT_OK, "inbound packet verdict {verdict}");
        Ok(mean)
    })?;
    emit(
        &mut rows,
        ("nat_conntrack_lookup_alone", ns(lookup), "ns", "baseline"),
    );
    // A translated packet cannot be measured by a repeated run: the second run would see
    // the first one's rewrite (another flow). Translations are measured one run at a time,
    // and what one run costs beyond the program is the same packet's single runs against
    // its repeated run.
    let single_lookup = on_path(&mut nat, NatReason::NotEligible, SINGLE_RUNS, |nat| {
        single_runs(nat, TcProgram::NatIngress, SINGLE_RUNS, |_| inbound.clone())
    })?;
    let overhead = ns(single_lookup) - ns(lookup);

    // An established flow: parse + one lookup + the rewrite with its checksums. A flow of
    // its own: the pod's answers to the inbound flow above pass untranslated.
    let outbound = Packet::ip(a.pod, a.internet)
        .udp(6000, 53)
        .payload([0u8; 18])
        .build();
    let translated = nat.egress(&outbound, "establish");
    let established = on_path(&mut nat, NatReason::Translated, SINGLE_RUNS, |nat| {
        single_runs(nat, TcProgram::NatEgress, SINGLE_RUNS, |_| outbound.clone())
    })?;
    let established = ns(established) - overhead;
    emit(
        &mut rows,
        ("nat_established_egress", established, "ns", "<= 2 x lookup"),
    );
    // The same path warm: a mapping onto itself (a flow whose "pod" side is the node's
    // address and the port it keeps) leaves the frame as it was, so a repeated run stays on
    // it. A lower bound: with the port unchanged, its checksum helper is skipped.
    let (pod_addr, peer_addr) = (bytes_of(a.node), bytes_of(a.internet));
    let hash = peer_hash(addr_words(&peer_addr), 53, UDP, TEST_RUN_IFINDEX);
    let span = u32::from(NAT_PORT_LAST - NAT_PORT_FIRST) + 1;
    let home = NAT_PORT_FIRST + (port_offset(addr_words(&pod_addr), 7000, hash) % span) as u16;
    let onto_itself = NatFlow {
        last_seen_ns: kernel_now_ns(),
        homed: 1,
        pod: pod_addr,
        peer: peer_addr,
        pod_port: 7000,
        peer_port: 53,
        port: 7000,
        protocol: UDP,
        flags: FLOW_TRANSLATED,
        scope: TEST_RUN_IFINDEX,
        ..NatFlow::default()
    };
    nat.flows().set(slot_of(hash, home), &onto_itself, 0)?;
    let unchanged = Packet::ip(a.node, a.internet)
        .udp(7000, 53)
        .payload([0u8; 18])
        .build();
    let warm = on_path(&mut nat, NatReason::Translated, REPEAT, |nat| {
        let (verdict, mean) = nat.run_repeat(TcProgram::NatEgress, &unchanged, REPEAT);
        ensure!(
            verdict == TC_ACT_OK,
            "mapping onto itself: verdict {verdict}"
        );
        Ok(mean)
    })?;
    emit(
        &mut rows,
        (
            "nat_established_egress_warm",
            ns(warm),
            "ns",
            "(information: repeated, caches warm)",
        ),
    );
    let reply = fedwall_tests::packet::ParsedPacket::parse(&translated)?;
    let port = reply.ports().map_or(0, |p| p.0);
    let back = Packet::ip(a.internet, a.node)
        .udp(53, port)
        .payload([0u8; 18])
        .build();
    let reversed = on_path(&mut nat, NatReason::Reversed, SINGLE_RUNS, |nat| {
        single_runs(nat, TcProgram::NatIngress, SINGLE_RUNS, |_| back.clone())
    })?;
    let reversed = ns(reversed) - overhead;
    emit(
        &mut rows,
        ("nat_established_ingress", reversed, "ns", "<= 2 x lookup"),
    );
    emit(
        &mut rows,
        (
            "nat_established_ratio_x100",
            100.0 * established.max(reversed) / ns(lookup),
            "%",
            "<= 200 %",
        ),
    );

    // New mappings: every packet a flow of its own (distinct pod and peer), one run each.
    let new = on_path(&mut nat, NatReason::NewMapping, MAPPINGS, |nat| {
        single_runs(nat, TcProgram::NatEgress, MAPPINGS, |n| {
            Packet::ip(pod(n), peer(n % 4096))
                .udp(10_000 + (n / 4096) as u16, 53)
                .payload([0u8; 18])
                .build()
        })
    })?;
    emit(
        &mut rows,
        (
            "nat_new_mapping_single_run",
            ns(new),
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
        ("nat_new_mapping", ns(new) - overhead, "ns", "<= 500 ns"),
    );

    // Every mapping still there, and what the agent's count of them costs (it visits the
    // whole table), once per second on a thread of its own.
    let mut best = Duration::MAX;
    let mut held = 0;
    for _ in 0..5 {
        let started = Instant::now();
        held = nat.live_flows();
        best = best.min(started.elapsed());
    }
    // The new mappings, and the inbound, established and warm flows before them.
    ensure!(
        held == MAPPINGS + 3,
        "{held} live flows after {MAPPINGS} new mappings and 3 flows before them"
    );
    emit(
        &mut rows,
        (
            "nat_mappings_held",
            f64::from(MAPPINGS),
            "mappings",
            ">= 100000",
        ),
    );
    emit(
        &mut rows,
        (
            "nat_count_live_flows_us",
            best.as_secs_f64() * 1e6,
            "us",
            "(once per second, in the agent)",
        ),
    );
    Ok(rows)
}
