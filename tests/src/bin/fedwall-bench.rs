//! `fedwall-bench datapath`: the policy datapath's cost per packet, measured with
//! BPF_PROG_TEST_RUN in a private namespace and bpffs, and the time to apply IP set members
//! from userspace. Prints `BENCH <name> <value> <unit>` lines, then a table. Run it through
//! `cargo xtask bench datapath` (release build, root); `fedwall-bench datapath <word>` runs
//! only the figures whose name contains the word.
//!
//! Each per-packet figure is the best of [`BATCHES`] batches of test runs: the machine is
//! shared, and other work can only add time to a batch, never take it away.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fedwall::dataplane::{
    Dataplane as _, Delta, EndpointName, IpSetId, KernelDataplane, PolicyDirection, PortRange,
    RuleAction, RuleTable, SetMatch, StaticInterfaces, Verdict,
};
use fedwall_tests::{
    bpffs::Bpffs,
    netns::NetNs,
    packet::{Packet, TcpFlags},
    policy::{TC_ACT_OK, TC_ACT_SHOT, TEST_RUN_IFINDEX, endpoint, rule, run, run_repeat},
};
use ipnet::IpNet;

const POD: &str = "bench/k8s/default.pod/eth0";
/// Runs per batch of established packets.
const REPEAT: u32 = 250_000;
/// Runs per batch of new-flow packets. All but the first few thousand of them find the
/// event ring buffer full (nobody reads it here), which only makes the denied-flow figure
/// cheaper by the event's cost; see README.
const NEW_FLOW_REPEAT: u32 = 50_000;
/// Batches of test runs per per-packet figure; the figure is the fastest batch's mean.
/// Many short batches rather than a few long ones: more chances to catch the machine
/// quiet, in the same time.
const BATCHES: u32 = 20;

struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    target: &'static str,
}

fn main() -> anyhow::Result<()> {
    let which = std::env::args().nth(1).unwrap_or_default();
    if which != "datapath" {
        bail!("usage: fedwall-bench datapath (got {which:?})");
    }
    let only = std::env::args().nth(2).unwrap_or_default();
    let ns = NetNs::new();
    let figures = ns.enter(|| datapath(&only))?;
    println!();
    println!("| figure | value | target |");
    println!("|---|---|---|");
    for figure in &figures {
        println!(
            "| {} | {:.0} {} | {} |",
            figure.name, figure.value, figure.unit, figure.target
        );
    }
    Ok(())
}

fn emit(
    figures: &mut Vec<Figure>,
    name: &str,
    value: f64,
    unit: &'static str,
    target: &'static str,
) {
    println!("BENCH {name} {value:.0} {unit}");
    figures.push(Figure {
        name: name.to_owned(),
        value,
        unit,
        target,
    });
}

/// A fresh dataplane with `sets` sets of `members / sets` host members each, and one
/// endpoint whose ingress table has one rule per set (source in the set, destination port
/// 1): a packet from the last set's addresses to port 80 walks every rule and is denied by
/// the default. Returns the dataplane (and its bpffs) and the time the members took.
fn scenario(sets: u32, members: u32) -> anyhow::Result<(Bpffs, KernelDataplane, Duration)> {
    let bpffs = Bpffs::mount();
    let interfaces = StaticInterfaces(BTreeMap::from([(
        EndpointName(POD.to_owned()),
        TEST_RUN_IFINDEX,
    )]));
    let mut dataplane = KernelDataplane::open(&bpffs.pin_root(), interfaces)?;
    let per_set = members / sets;
    let mut member_deltas = Vec::new();
    for set in 0..sets {
        dataplane.apply(&Delta::IpSetCreated { id: IpSetId(set) })?;
        let added: BTreeSet<IpNet> = (0..per_set)
            .map(|i| IpNet::from(IpAddr::from(member_addr(set * per_set + i))))
            .collect();
        member_deltas.push(Delta::IpSetMembers {
            id: IpSetId(set),
            added,
            removed: BTreeSet::new(),
        });
    }
    let started = Instant::now();
    for delta in &member_deltas {
        dataplane.apply(delta)?;
    }
    let took = started.elapsed();
    let rules = (0..sets)
        .map(|set| {
            let mut r = rule(&format!("bench/ingress/{set}"), RuleAction::Allow);
            r.source.sets.push(SetMatch {
                set: IpSetId(set),
                member: true,
            });
            r.destination.ports.push(PortRange::single(1));
            r
        })
        .collect();
    let table = RuleTable {
        rules,
        default: Verdict::Deny,
    };
    dataplane.apply(&Delta::EndpointSet(endpoint(POD, Some(table), None)))?;
    Ok((bpffs, dataplane, took))
}

fn member_addr(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + n)
}

/// The fastest of [`BATCHES`] batches of `repeat` runs: the verdict and the mean per run.
fn best_of_batches(
    dataplane: &mut KernelDataplane,
    direction: PolicyDirection,
    frame: &[u8],
    repeat: u32,
) -> (u32, Duration) {
    let mut best = run_repeat(dataplane, direction, frame, repeat);
    for _ in 1..BATCHES {
        let (verdict, took) = run_repeat(dataplane, direction, frame, repeat);
        best = (verdict, best.1.min(took));
    }
    best
}

/// The first packet of a new flow that walks every rule of a scenario and is denied.
fn new_flow_frame(sets: u32, members: u32) -> Vec<u8> {
    let src = member_addr((sets - 1) * (members / sets));
    Packet::ipv4(src, Ipv4Addr::new(192, 0, 2, 2))
        .tcp(40000, 80)
        .flags(TcpFlags::SYN)
        .build()
}

/// One batch of new-flow packets: the mean cost per packet.
fn new_flow_batch(dataplane: &mut KernelDataplane, frame: &[u8]) -> anyhow::Result<Duration> {
    let (verdict, took) = run_repeat(dataplane, PolicyDirection::Ingress, frame, NEW_FLOW_REPEAT);
    if verdict != TC_ACT_SHOT {
        bail!("the new-flow packet was not denied by the default (verdict {verdict})");
    }
    Ok(took)
}

/// The mean cost of a new flow's first packet that walks every rule of the scenario.
fn new_flow_ns(dataplane: &mut KernelDataplane, sets: u32, members: u32) -> anyhow::Result<f64> {
    let frame = new_flow_frame(sets, members);
    let mut best = Duration::MAX;
    for _ in 0..BATCHES {
        best = best.min(new_flow_batch(dataplane, &frame)?);
    }
    Ok(best.as_nanos() as f64)
}

/// Every figure whose name contains `only` (all of them when it is empty).
fn datapath(only: &str) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let wanted = |name: &str| name.contains(only);

    // Established flow: the reply of a flow the pod opened, from conntrack.
    if wanted("established_packet") {
        established(&mut figures)?;
    }
    for (sets, target) in [(100, "<= 1000 ns"), (1000, "<= 5000 ns")] {
        let name = format!("new_flow_{sets}_rules_100k_members");
        let apply = sets == 100 && wanted("apply_100k_members");
        if !wanted(&name) && !apply {
            continue;
        }
        let (_bpffs, mut dataplane, took) = scenario(sets, 100_000)?;
        if wanted(&name) {
            let ns = new_flow_ns(&mut dataplane, sets, 100_000)?;
            emit(&mut figures, &name, ns, "ns", target);
        }
        if apply {
            emit(
                &mut figures,
                "apply_100k_members",
                took.as_secs_f64() * 1000.0,
                "ms",
                "<= 500 ms",
            );
        }
    }

    if !wanted("new_flow_100_rules_1000000_members") && !wanted("new_flow_spread_1k_to_1m_members")
    {
        return Ok(figures);
    }
    // All four dataplanes at once, their batches interleaved: a burst of other work on
    // the machine then weighs on every size alike instead of on whichever ran during it.
    let sizes = [1_000, 10_000, 100_000, 1_000_000];
    let mut cases = Vec::new();
    for members in sizes {
        let (bpffs, dataplane, _) = scenario(100, members)?;
        cases.push((bpffs, dataplane, new_flow_frame(100, members)));
    }
    let mut best = [Duration::MAX; 4];
    for _ in 0..BATCHES {
        for ((_, dataplane, frame), (best, members)) in
            cases.iter_mut().zip(best.iter_mut().zip(sizes))
        {
            let took =
                new_flow_batch(dataplane, frame).with_context(|| format!("{members} members"))?;
            *best = (*best).min(took);
        }
    }
    let mut flat = Vec::new();
    for (best, members) in best.iter().zip(sizes) {
        let ns = best.as_nanos() as f64;
        emit(
            &mut figures,
            &format!("new_flow_100_rules_{members}_members"),
            ns,
            "ns",
            "flat",
        );
        flat.push(ns);
    }
    let min = flat.iter().copied().fold(f64::MAX, f64::min);
    let max = flat.iter().copied().fold(0.0, f64::max);
    emit(
        &mut figures,
        "new_flow_spread_1k_to_1m_members",
        (max / min - 1.0) * 100.0,
        "%",
        "<= 20 %",
    );
    Ok(figures)
}

/// The reply of a flow the pod opened, passed by its conntrack entry.
fn established(figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    let (_bpffs, mut dataplane, _) = scenario(1, 1)?;
    let pod_out = Packet::ipv4(Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(198, 51, 100, 1))
        .tcp(40000, 443)
        .flags(TcpFlags::SYN)
        .build();
    let reply = Packet::ipv4(Ipv4Addr::new(198, 51, 100, 1), Ipv4Addr::new(192, 0, 2, 2))
        .tcp(443, 40000)
        .flags(TcpFlags::ACK)
        .payload([0u8; 10])
        .build();
    let verdict = run(&mut dataplane, PolicyDirection::Egress, &pod_out);
    if verdict != TC_ACT_OK {
        bail!("the pod's first packet was not allowed (verdict {verdict})");
    }
    let (verdict, took) = best_of_batches(&mut dataplane, PolicyDirection::Ingress, &reply, REPEAT);
    if verdict != TC_ACT_OK {
        bail!("the reply did not pass on conntrack (verdict {verdict})");
    }
    emit(
        figures,
        "established_packet",
        took.as_nanos() as f64,
        "ns",
        "<= 60 ns",
    );
    Ok(())
}
