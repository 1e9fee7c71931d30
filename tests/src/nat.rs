//! The NAT programs set up for BPF_PROG_TEST_RUN, shared by the T1 tests and the NAT
//! benchmark: test pools (natOutgoing, plain, disabled), the loopback as an uplink, and
//! helpers to run a frame, read the counters, fill the tables and count the live flows.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use aya::maps::{
    Array as BpfArray, HashMap as BpfHashMap, MapData, lpm_trie::Key, lpm_trie::LpmTrie,
};
use aya::programs::{TestRun as _, TestRunOptions};
use fedwall::dataplane::nat::NatState;
use fedwall::dataplane::{
    Dataplane as _, DataplaneError, Delta, KernelDataplane, KernelPrograms, NatCounts, NatPool,
    StaticInterfaces, TcProgram, Uplink,
};
use fedwall_common::conntrack::{
    CONNTRACK_MAP, CT_NO_RULE, ConntrackKey, ConntrackValue, TIMEOUT_UDP_NS,
};
use fedwall_common::nat::{
    FLOW_TRANSLATED, NAT_FLOW_SLOTS, NAT_FLOWS_MAP, NAT_PREFIXES_MAP, NAT_UPLINKS_MAP, NatFlow,
    NatPrefix, NatReason, NatUplink, PREFIX_NODE_ADDRESS, UPLINK_HAS_V4, UPLINK_HAS_V6,
};
use fedwall_common::net::{ip_proto, v4_mapped};

pub use crate::policy::{TC_ACT_OK, TC_ACT_SHOT, TEST_RUN_IFINDEX};
use crate::{bpffs::Bpffs, packet::IpFamily};

/// The addresses of one family's scenario.
pub struct Addrs {
    pub pod: IpAddr,
    pub other_pod: IpAddr,
    pub third_pod: IpAddr,
    pub node: IpAddr,
    /// Outside every pool: translated.
    pub internet: IpAddr,
    /// In an enabled pool without natOutgoing.
    pub in_pool: IpAddr,
    /// In a disabled pool (another cluster's pods).
    pub in_disabled_pool: IpAddr,
}

pub fn addrs(family: IpFamily) -> Addrs {
    let ip = |s: &str| s.parse::<IpAddr>().expect("address");
    match family {
        IpFamily::V4 => Addrs {
            pod: ip("10.244.1.5"),
            other_pod: ip("10.244.1.6"),
            third_pod: ip("10.244.2.7"),
            node: ip("192.0.2.1"),
            internet: ip("203.0.113.9"),
            in_pool: ip("10.245.0.9"),
            in_disabled_pool: ip("10.99.0.9"),
        },
        IpFamily::V6 => Addrs {
            pod: ip("2001:db8:244::5"),
            other_pod: ip("2001:db8:244::6"),
            third_pod: ip("2001:db8:244::7"),
            node: ip("2001:db8:1::1"),
            internet: ip("2001:db8:ff::9"),
            in_pool: ip("2001:db8:245::9"),
            in_disabled_pool: ip("2001:db8:99::9"),
        },
    }
}

pub fn pools() -> Vec<NatPool> {
    let pool = |cidr: &str, nat_outgoing, disabled| NatPool {
        cidr: cidr.parse().expect("cidr"),
        nat_outgoing,
        disabled,
    };
    vec![
        pool("10.244.0.0/16", true, false),
        pool("10.245.0.0/16", false, false),
        pool("10.99.0.0/16", false, true),
        pool("2001:db8:244::/64", true, false),
        pool("2001:db8:245::/64", false, false),
        pool("2001:db8:99::/64", false, true),
    ]
}

pub fn bytes_of(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

pub struct Nat {
    pub programs: KernelPrograms,
    _bpffs: Bpffs,
}

/// Programs with the test pools, and the loopback configured as an uplink with `ports`.
pub fn nat(ports: RangeInclusive<u16>) -> Nat {
    let bpffs = Bpffs::mount();
    let mut programs = KernelPrograms::load(&bpffs.pin_root()).expect("load the kernel programs");
    let mut state = NatState::adopt(&programs).expect("adopt");
    for pool in pools() {
        state.pool_set(&mut programs, &pool).expect("pool");
    }
    let (v4, v6) = (addrs(IpFamily::V4).node, addrs(IpFamily::V6).node);
    let uplink = NatUplink {
        addr_v4: bytes_of(v4),
        addr_v6: bytes_of(v6),
        port_first: *ports.start(),
        port_last: *ports.end(),
        flags: UPLINK_HAS_V4 | UPLINK_HAS_V6,
    };
    let mut uplinks = BpfHashMap::<_, u32, NatUplink>::try_from(
        programs.map_mut(NAT_UPLINKS_MAP).expect("uplinks map"),
    )
    .expect("uplinks map type");
    uplinks
        .insert(&TEST_RUN_IFINDEX, &uplink, 0)
        .expect("write the uplink");
    let mut prefixes = LpmTrie::<_, [u8; 16], NatPrefix>::try_from(
        programs.map_mut(NAT_PREFIXES_MAP).expect("prefix map"),
    )
    .expect("prefix map type");
    for node in [v4, v6] {
        let flags = NatPrefix {
            flags: PREFIX_NODE_ADDRESS,
        };
        prefixes
            .insert(&Key::new(128, bytes_of(node)), &flags, 0)
            .expect("node address");
    }
    Nat {
        programs,
        _bpffs: bpffs,
    }
}

impl Nat {
    /// Runs `frame` through `program`: its verdict and the frame as it leaves.
    pub fn run(&mut self, program: TcProgram, frame: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 256];
        let (verdict, _, len) = self.test_run(program, frame, 1, Some(&mut out));
        out.truncate(len);
        (verdict, out)
    }

    /// Runs `frame` `repeat` times: the verdict and the kernel's mean time per run.
    pub fn run_repeat(&mut self, program: TcProgram, frame: &[u8], repeat: u32) -> (u32, Duration) {
        let (verdict, mean, _) = self.test_run(program, frame, repeat, None);
        (verdict, mean)
    }

    fn test_run(
        &mut self,
        program: TcProgram,
        frame: &[u8],
        repeat: u32,
        out: Option<&mut [u8]>,
    ) -> (u32, Duration, usize) {
        let classifier = self.programs.program_mut(program).expect("program");
        let mut options = TestRunOptions::new();
        options.data_in = Some(frame);
        options.data_out = out;
        options.repeat = repeat;
        let result = classifier
            .test_run(options)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of {program:?}: {e:?}"));
        (
            result.return_value,
            result.duration,
            result.data_size_out as usize,
        )
    }

    pub fn egress(&mut self, frame: &[u8], case: &str) -> Vec<u8> {
        let (verdict, out) = self.run(TcProgram::NatEgress, frame);
        assert_eq!(verdict, TC_ACT_OK, "{case}: egress must pass the packet");
        out
    }

    pub fn ingress(&mut self, frame: &[u8], case: &str) -> Vec<u8> {
        let (verdict, out) = self.run(TcProgram::NatIngress, frame);
        assert_eq!(verdict, TC_ACT_OK, "{case}: ingress must pass the packet");
        out
    }

    pub fn count(&self, reason: NatReason) -> u64 {
        NatCounts::of(&self.programs)
            .expect("read NAT counters")
            .get(reason)
            .packets
    }
}

/// The IP pools of the T2 topology: pods in natOutgoing pools, a remote cluster's range in
/// disabled ones.
pub fn t2_pool_deltas() -> Vec<Delta> {
    let pool = |cidr: &str, nat_outgoing, disabled| {
        Delta::PoolSet(NatPool {
            cidr: cidr.parse().expect("cidr"),
            nat_outgoing,
            disabled,
        })
    };
    vec![
        pool("10.244.0.0/16", true, false),
        pool("2001:db8:244::/48", true, false),
        pool("10.99.0.0/16", false, true),
        pool("2001:db8:99::/48", false, true),
    ]
}

/// What an agent does at start-up, for NAT, in the calling thread's namespace: opens the
/// dataplane (adopting what is pinned under `pin_root`), replays the T2 pools, puts NAT on
/// `uplink` and completes the sync.
pub fn start_nat(pin_root: &Path, uplink: &str) -> Result<KernelDataplane, DataplaneError> {
    let mut dataplane = KernelDataplane::open(pin_root, StaticInterfaces::default())?;
    for delta in t2_pool_deltas() {
        dataplane.apply(&delta)?;
    }
    dataplane.set_nat_uplinks(&[Uplink::from_interface(uplink)?])?;
    dataplane.sync_complete()?;
    Ok(dataplane)
}

/// The scope of the filler entries [`Nat::fill_conntrack`] and [`Nat::fill_flows`]
/// write: no interface, so no packet ever finds them.
const FILLER_SCOPE: u32 = 0xfff0;

/// The `n`th filler key: a UDP flow of its own.
fn filler_key(n: u32) -> ConntrackKey {
    let addr = |last: u32| {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        bytes[12..].copy_from_slice(&last.to_be_bytes());
        bytes
    };
    ConntrackKey::new(&addr(n), 1, &addr(n), 2, ip_proto::UDP, FILLER_SCOPE).0
}

/// `bpf_ktime_get_coarse_ns()` as the programs see it: CLOCK_MONOTONIC_COARSE.
pub fn kernel_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC_COARSE)");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

impl Nat {
    /// Runs the agent's count of the live flows.
    pub fn live_flows(&mut self) -> u32 {
        self.programs
            .count_nat_flows()
            .unwrap_or_else(|e| panic!("count the NAT flows: {e:?}"))
    }

    /// Writes `count` live flows that are not NAT's into the policy's conntrack table.
    pub fn fill_conntrack(&mut self, count: u32) {
        let mut table = BpfHashMap::<_, ConntrackKey, ConntrackValue>::try_from(
            self.programs.map_mut(CONNTRACK_MAP).expect("conntrack map"),
        )
        .expect("conntrack map type");
        let value = ConntrackValue {
            last_seen_ns: kernel_now_ns(),
            rule_slot: CT_NO_RULE,
            ..ConntrackValue::default()
        };
        for n in 0..count {
            table
                .insert(&filler_key(n), &value, 0)
                .unwrap_or_else(|e| panic!("conntrack filler {n}: {e}"));
        }
    }

    /// Fills every slot of the flow table that holds no live flow with a live flow of no
    /// interface: how many it wrote.
    pub fn fill_flows(&mut self) -> u32 {
        self.rewrite_slots(|flow, now| {
            (!flow.live(now)).then(|| NatFlow {
                last_seen_ns: now,
                flags: FLOW_TRANSLATED,
                protocol: ip_proto::UDP,
                scope: FILLER_SCOPE,
                homed: flow.homed,
                ..NatFlow::default()
            })
        })
    }

    /// Makes the flows [`Nat::fill_flows`] wrote idle for longer than their timeout.
    pub fn expire_filled_flows(&mut self) -> u32 {
        self.expire_flows(|flow| flow.scope == FILLER_SCOPE)
    }

    /// Makes the flows `which` picks idle for longer than their timeout: how many.
    pub fn expire_flows(&mut self, which: impl Fn(&NatFlow) -> bool) -> u32 {
        self.rewrite_slots(|flow, now| {
            which(flow).then(|| NatFlow {
                last_seen_ns: now.saturating_sub(2 * TIMEOUT_UDP_NS),
                ..*flow
            })
        })
    }

    /// Writes `rewrite(slot, now)` into each slot it returns one for: how many.
    fn rewrite_slots(&mut self, rewrite: impl Fn(&NatFlow, u64) -> Option<NatFlow>) -> u32 {
        let mut table = self.flows();
        let now = kernel_now_ns();
        let mut written = 0;
        for index in 0..NAT_FLOW_SLOTS {
            let flow = table
                .get(&index, 0)
                .unwrap_or_else(|e| panic!("flow slot {index}: {e}"));
            if let Some(new) = rewrite(&flow, now) {
                table
                    .set(index, &new, 0)
                    .unwrap_or_else(|e| panic!("write flow slot {index}: {e}"));
                written += 1;
            }
        }
        written
    }

    /// The flow table.
    pub fn flows(&mut self) -> BpfArray<&mut MapData, NatFlow> {
        BpfArray::try_from(self.programs.map_mut(NAT_FLOWS_MAP).expect("flow map"))
            .expect("flow map type")
    }
}
