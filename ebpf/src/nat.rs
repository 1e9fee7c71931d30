//! NAT-outgoing, Calico's semantics: on an uplink's TC egress a packet from a `natOutgoing`
//! pool to an address in no pool and not of this node leaves with the uplink's address and
//! a port (or ICMP echo identifier) free for its peer; on TC ingress the replies, and ICMP
//! errors about the flow (their quote included), are translated back.
//!
//! A flow is one slot of the NAT flow table, an array found from either direction by a
//! hash (layout and why in `fedwall_common::nat`): a new flow that finds no free port, or
//! no free slot, is dropped with [`NAT_FAIL_ACTION`] and counted; a live flow's slot is
//! never taken over. Expired slots are reused by later claims; [`fw_nat_sweep`] counts the
//! live ones for the agent. Only TCP, UDP and ICMP echo are translated; later fragments of
//! a translated datagram follow its first fragment.

use core::{ffi::c_void, intrinsics::AtomicOrdering};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_for_each_map_elem, bpf_ktime_get_coarse_ns, bpf_loop},
    macros::{classifier, map},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::TcContext,
};
use fedwall_common::{
    conntrack::{TCP_ESTABLISHED, TCP_RST, TCP_SYN_SEEN},
    nat::{
        AddrWords, FLOW_PASS_INBOUND, FLOW_TRANSLATED, FRAGMENT_PASS, FRAGMENT_REWRITE,
        NAT_FLOW_PROBES, NAT_FLOW_SLOTS, NAT_FRAGMENT_ENTRIES, NAT_FRAGMENT_TIMEOUT_NS,
        NAT_PREFIX_ENTRIES, NAT_TCP_FIN_INSIDE, NAT_TCP_FIN_OUTSIDE, NAT_UPLINK_ENTRIES, NatFlow,
        NatFragment, NatFragmentKey, NatPrefix, NatReason, NatUplink, PREFIX_NAT_OUTGOING,
        UPLINK_HAS_V4, UPLINK_HAS_V6, checksum_update, peer_hash, port_offset, slot_of, translates,
    },
    net::{icmp_type, ip_proto},
    policy::PacketCounter,
};

use crate::parse::{self, ETH_HLEN, Family, IpHeaders, Parsed};

#[map(name = "fw_nat_prefixes_v1")]
static PREFIXES: LpmTrie<[u8; 16], NatPrefix> = LpmTrie::pinned(NAT_PREFIX_ENTRIES, 0);
#[map(name = "fw_nat_uplinks_v1")]
static UPLINKS: HashMap<u32, NatUplink> = HashMap::pinned(NAT_UPLINK_ENTRIES, 0);
#[map(name = "fw_nat_stats_v1")]
static STATS: PerCpuArray<PacketCounter> = PerCpuArray::pinned(NatReason::COUNT, 0);
#[map(name = "fw_nat_flows_v1")]
static FLOWS: Array<NatFlow> = Array::pinned(NAT_FLOW_SLOTS, 0);
#[map(name = "fw_nat_fragments_v1")]
static FRAGMENTS: LruHashMap<NatFragmentKey, NatFragment> =
    LruHashMap::pinned(NAT_FRAGMENT_ENTRIES, 0);
#[map(name = "fw_nat_scratch_v1")]
static SCRATCH: PerCpuArray<Flow> = PerCpuArray::with_max_entries(1, 0);

/// What a packet NAT must drop gets: a new flow without a port or table room, or a rewrite
/// that failed half-way (its checksums can no longer be trusted).
pub const NAT_FAIL_ACTION: i32 = TC_ACT_SHOT;

/// Flow timestamps are rewritten at most this often on the established path.
const REFRESH_NS: u64 = 1_000_000_000;

const TCP_FLAG_FIN: u8 = 0x01;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_RST: u8 = 0x04;
const TCP_FLAG_ACK: u8 = 0x10;
/// Extension headers walked in an ICMPv6 error's quote: one of each common kind.
const MAX_QUOTED_EXT_HEADERS: usize = 4;

#[classifier]
pub fn fw_nat_egress(ctx: TcContext) -> i32 {
    let reason = egress(&ctx);
    finish(&ctx, reason)
}

#[classifier]
pub fn fw_nat_ingress(ctx: TcContext) -> i32 {
    let reason = ingress(&ctx);
    finish(&ctx, reason)
}

/// Never attached: the agent runs it through BPF_PROG_TEST_RUN (any frame will do) once
/// per tick: how many flows are live (expired slots need no removal: claims reuse them).
#[classifier]
pub fn fw_nat_sweep(_ctx: TcContext) -> i32 {
    let mut sweep = Sweep {
        now: now_ns(),
        live: 0,
    };
    // SAFETY: the map is this object's array; the callback has the signature
    // bpf_for_each_map_elem requires and `sweep` outlives the call.
    unsafe {
        bpf_for_each_map_elem(
            (&raw const FLOWS).cast_mut().cast(),
            count_live as *mut c_void,
            (&raw mut sweep).cast(),
            0,
        );
    }
    sweep.live as i32
}

#[repr(C)]
struct Sweep {
    now: u64,
    live: u32,
}

/// One slot of the count.
extern "C" fn count_live(
    _map: *mut c_void,
    _index: *const u32,
    flow: *const NatFlow,
    sweep: *mut Sweep,
) -> i64 {
    // SAFETY: the kernel passes the element's value and our context.
    let (flow, sweep) = unsafe { (&*flow, &mut *sweep) };
    if flow.live(sweep.now) {
        sweep.live += 1;
    }
    // Go on with the next slot.
    0
}

#[inline(always)]
fn finish(ctx: &TcContext, reason: NatReason) -> i32 {
    if let Some(counter) = STATS.get_ptr_mut(reason as u32) {
        // SAFETY: a per-CPU slot is only written by the CPU that owns it.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += u64::from(ctx.len());
        }
    }
    if reason.is_drop() {
        NAT_FAIL_ACTION
    } else {
        TC_ACT_OK
    }
}

/// How a packet's L4 header carries the flow's "ports".
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
enum L4Kind {
    Tcp,
    Udp,
    /// ICMP or ICMPv6 echo request or reply: the identifier is both ports.
    Echo,
    /// An ICMP or ICMPv6 error: what it quotes decides.
    IcmpError,
    /// A fragment after the first of a TCP, UDP or ICMP datagram: no L4 header, its
    /// datagram's first fragment decided.
    Fragment,
}

/// The facts about a packet NAT works with (kept in a per-CPU slot: the stack is small).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Flow {
    headers: IpHeaders,
    kind: L4Kind,
    l4: usize,
    src_port: u16,
    dst_port: u16,
    tcp_flags: u8,
    /// The uplink's ifindex: the scope of its flows.
    scope: u32,
    now: u64,
    /// What an ICMP error quotes.
    quote: Quote,
}

// `words` reads the quote's addresses as 8-byte words.
const _: () = assert!(core::mem::align_of::<Quote>() >= 8);
const _: () = assert!(core::mem::offset_of!(Quote, src) % 8 == 0);
const _: () = assert!(core::mem::offset_of!(Quote, dst) % 8 == 0);

/// The packet an ICMP error quotes, as far as NAT needs it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Quote {
    src: [u8; 16],
    dst: [u8; 16],
    protocol: u8,
    kind: L4Kind,
    /// Offsets of its IP and L4 headers in the frame.
    ip: usize,
    l4: usize,
    src_port: u16,
    dst_port: u16,
    /// The pod's address and port the quote must show.
    pod: [u8; 16],
    pod_port: u16,
    /// Offset of the error's own checksum.
    outer_check: usize,
}

impl Flow {
    /// The peer's port of the packet, whose peer-side port is `port`.
    #[inline(always)]
    fn peer_port(&self, port: u16) -> u16 {
        self.kind.peer_port(port)
    }
}

impl L4Kind {
    /// The peer's port of a packet of this kind whose peer-side port is `port`: echo has
    /// none (its identifier is the pod's, and the NAT port once translated).
    #[inline(always)]
    fn peer_port(self, port: u16) -> u16 {
        if self == L4Kind::Echo { 0 } else { port }
    }

    /// Offset of the checksum in the L4 header.
    #[inline(always)]
    const fn checksum_offset(self) -> usize {
        match self {
            L4Kind::Tcp => 16,
            L4Kind::Udp => 6,
            L4Kind::Echo | L4Kind::IcmpError => 2,
            // No L4 header: never asked.
            L4Kind::Fragment => 0,
        }
    }

    /// Offset of the source "port": the identifier for echo.
    #[inline(always)]
    const fn src_port_offset(self) -> usize {
        match self {
            L4Kind::Echo => 4,
            _ => 0,
        }
    }

    /// Offset of the destination "port": the identifier again for echo.
    #[inline(always)]
    const fn dst_port_offset(self) -> usize {
        match self {
            L4Kind::Echo => 4,
            _ => 2,
        }
    }
}

/// Reads the packet into `flow`; `None` for what NAT does not translate.
#[inline(never)]
fn read_flow(ctx: &TcContext, flow: &mut Flow) -> Option<()> {
    parse::ensure_linear_headers(ctx);
    match parse::parse(ctx, &mut flow.headers) {
        Ok(Parsed::Ip) => {}
        _ => return None,
    }
    parse::l4_header_present(ctx, &flow.headers).ok()?;
    flow.tcp_flags = 0;
    let icmp_protocol = match family_of(&flow.headers) {
        Family::V4 => ip_proto::ICMP,
        Family::V6 => ip_proto::ICMPV6,
    };
    let Some(l4) = flow.headers.l4_offset else {
        let protocol = flow.headers.protocol;
        let ours =
            protocol == ip_proto::TCP || protocol == ip_proto::UDP || protocol == icmp_protocol;
        if !ours || flow.headers.fragment_id.is_none() {
            return None;
        }
        flow.kind = L4Kind::Fragment;
        return Some(());
    };
    flow.l4 = l4;
    match flow.headers.protocol {
        ip_proto::TCP | ip_proto::UDP => {
            let ports = parse::read::<4>(ctx, l4).ok()?;
            flow.src_port = u16::from_be_bytes([ports[0], ports[1]]);
            flow.dst_port = u16::from_be_bytes([ports[2], ports[3]]);
            flow.kind = if flow.headers.protocol == ip_proto::TCP {
                flow.tcp_flags = parse::read::<1>(ctx, l4 + 13).ok()?[0];
                L4Kind::Tcp
            } else {
                L4Kind::Udp
            };
        }
        protocol if protocol == icmp_protocol => {
            let icmp = parse::read::<8>(ctx, l4).ok()?;
            flow.kind = match (family_of(&flow.headers), icmp[0]) {
                (Family::V4, icmp_type::V4_ECHO_REQUEST | icmp_type::V4_ECHO_REPLY)
                | (Family::V6, icmp_type::V6_ECHO_REQUEST | icmp_type::V6_ECHO_REPLY) => {
                    L4Kind::Echo
                }
                (
                    Family::V4,
                    icmp_type::V4_DEST_UNREACHABLE
                    | icmp_type::V4_TIME_EXCEEDED
                    | icmp_type::V4_PARAMETER_PROBLEM,
                )
                | (
                    Family::V6,
                    icmp_type::V6_DEST_UNREACHABLE
                    | icmp_type::V6_PACKET_TOO_BIG
                    | icmp_type::V6_TIME_EXCEEDED
                    | icmp_type::V6_PARAMETER_PROBLEM,
                ) => L4Kind::IcmpError,
                _ => return None,
            };
            let id = u16::from_be_bytes([icmp[4], icmp[5]]);
            flow.src_port = id;
            flow.dst_port = id;
        }
        _ => return None,
    }
    Some(())
}

/// The packet's family, re-read so the compiler cannot assume the stored value is 0 or 1:
/// it comes back from a map, where the verifier knows nothing of it, and a table lookup
/// indexed by it would be an unbounded access.
#[inline(always)]
fn family_of(headers: &IpHeaders) -> Family {
    // SAFETY: `Family` is repr(C): a C int, 4 bytes, aligned like `u32`.
    let raw = unsafe { core::ptr::read_volatile((&headers.family as *const Family).cast::<u32>()) };
    if raw == Family::V4 as u32 {
        Family::V4
    } else {
        Family::V6
    }
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: no preconditions; TC programs may call it.
    unsafe { bpf_ktime_get_coarse_ns() }
}

#[inline(always)]
fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: a TC program's context is the kernel's __sk_buff.
    unsafe { (*(ctx.as_ptr() as *const __sk_buff)).ifindex }
}

#[inline(always)]
fn prefix_of(addr: &[u8; 16]) -> Option<NatPrefix> {
    PREFIXES.get(&Key::new(128, *addr)).copied()
}

/// The TCP state after a packet with `flags` from the pod (`inside`) or from the peer.
#[inline(always)]
fn tcp_advance(state: u8, flags: u8, inside: bool) -> u8 {
    let mut state = state;
    if !inside {
        // The peer answered.
        state |= TCP_ESTABLISHED;
    }
    if flags & TCP_FLAG_FIN != 0 {
        state |= if inside {
            NAT_TCP_FIN_INSIDE
        } else {
            NAT_TCP_FIN_OUTSIDE
        };
    }
    if flags & TCP_FLAG_RST != 0 {
        state |= TCP_RST;
    }
    state
}

/// `addr` as words, by two aligned 8-byte loads.
///
/// # Safety
/// `addr` is 8-byte aligned: the addresses of [`IpHeaders`], [`Quote`] and [`NatFlow`] are
/// (asserted where they are defined).
#[inline(always)]
unsafe fn words(addr: &[u8; 16]) -> AddrWords {
    let at = addr.as_ptr().cast::<u64>();
    // SAFETY: 16 readable bytes, aligned as the caller promises.
    unsafe { [at.read(), at.add(1).read()] }
}

/// Writes `addr` into an 8-byte aligned address field of a slot (two stores: a copy of the
/// bytes is a call to a byte-wise memmove).
#[inline(always)]
fn put_words(out: &mut [u8; 16], addr: AddrWords) {
    let at = out.as_mut_ptr().cast::<u64>();
    // SAFETY: a slot's addresses are 8-byte aligned (asserted in fedwall_common::nat).
    unsafe {
        at.write(addr[0]);
        at.add(1).write(addr[1]);
    }
}

/// Whether slot `f` holds the flow of `peer:peer_port` over `protocol` on uplink `scope`
/// (its pod side is checked by the caller, or not at all for a reply).
#[inline(always)]
fn is_with(f: &NatFlow, peer: AddrWords, peer_port: u16, protocol: u8, scope: u32) -> bool {
    // SAFETY: a slot's addresses are aligned.
    f.peer_port == peer_port
        && f.protocol == protocol
        && f.scope == scope
        && unsafe { words(&f.peer) } == peer
}

/// Refreshes a live flow for a packet: its TCP state, and its timestamp at most every
/// [`REFRESH_NS`] (most packets write nothing).
#[inline(always)]
fn refresh(entry: &mut NatFlow, flow: &Flow, inside: bool, now: u64) {
    let state = if flow.kind == L4Kind::Tcp {
        tcp_advance(entry.tcp_state, flow.tcp_flags, inside)
    } else {
        0
    };
    if state == entry.tcp_state && now.saturating_sub(entry.last_seen_ns) < REFRESH_NS {
        return;
    }
    // Racing writers of these plain fields at worst lose a refresh.
    entry.tcp_state = state;
    entry.last_seen_ns = now;
}

/// The slot at `index` (in range: indexes are masked to the table).
#[inline(always)]
fn slot(index: u32) -> Option<*mut NatFlow> {
    FLOWS.get_ptr_mut(index)
}

/// Where the flows of one pod-side tuple live: the slots of the ports `k` after its home
/// (`k` < [`NAT_FLOW_PROBES`] and < the uplink's port count).
#[repr(C)]
#[derive(Clone, Copy)]
struct Home {
    peer_hash: u32,
    /// The home's place in the port range.
    offset: u32,
    span: u32,
    first: u16,
}

impl Home {
    /// The home of the flow `pod:pod_port ↔ peer:peer_port` on the flow's uplink, whose
    /// ports are `first..=last`; `None` for an empty range.
    #[inline(always)]
    fn of(
        flow: &Flow,
        pod: AddrWords,
        pod_port: u16,
        peer: AddrWords,
        peer_port: u16,
        (first, last): (u16, u16),
    ) -> Option<Home> {
        if last < first {
            return None;
        }
        let span = u32::from(last - first) + 1;
        let peer_hash = peer_hash(peer, peer_port, flow.headers.protocol, flow.scope);
        Some(Home {
            peer_hash,
            offset: port_offset(pod, pod_port, peer_hash) % span,
            span,
            first,
        })
    }

    /// The `k`th port from the home.
    #[inline(always)]
    fn port(&self, k: u32) -> u16 {
        // `offset` < `span` and `k` < `span`: one wrap at most, no division.
        let at = self.offset + k;
        let at = if at >= self.span { at - self.span } else { at };
        self.first + at as u16
    }

    #[inline(always)]
    fn index(&self, k: u32) -> u32 {
        slot_of(self.peer_hash, self.port(k))
    }

    /// How many `k`s a flow of this home may use.
    #[inline(always)]
    fn probes(&self) -> u32 {
        self.span.min(NAT_FLOW_PROBES)
    }
}

/// A walk over a home's slots (through `bpf_loop`: the verifier checks one step, not
/// every path through [`NAT_FLOW_PROBES`] of them). Which side of the packet is the pod's
/// says `pod_is_dst`.
#[repr(C)]
struct Probe {
    flow: *const Flow,
    home: Home,
    homed: u64,
    pod_is_dst: u32,
    peer_port: u16,
    /// For a claim: the new flow's flags and TCP state.
    flags: u8,
    tcp_state: u8,
    /// What the walk found: the slot index (`u32::MAX`: none), and for a claim whether a
    /// live flow of another peer held a slot.
    index: u32,
    crowded: u32,
}

/// The pod's and the peer's addresses, the pod's port and the peer's, of a packet whose
/// pod is on the `pod_is_dst` side.
#[inline(always)]
fn sides(flow: &Flow, pod_is_dst: bool) -> (AddrWords, AddrWords, u16, u16) {
    let h = &flow.headers;
    // SAFETY: the headers' addresses are aligned.
    let (src, dst) = unsafe { (words(&h.src), words(&h.dst)) };
    if pod_is_dst {
        (dst, src, flow.dst_port, flow.peer_port(flow.src_port))
    } else {
        (src, dst, flow.src_port, flow.peer_port(flow.dst_port))
    }
}

impl Probe {
    /// The walk over the slots of the packet's flow, whose pod is on the `pod_is_dst` side,
    /// on an uplink handing out `ports`; `None` for an empty range (no flow can have a
    /// port there).
    #[inline(always)]
    fn of(flow: &Flow, pod_is_dst: bool, ports: (u16, u16)) -> Option<Probe> {
        let (pod, peer, pod_port, peer_port) = sides(flow, pod_is_dst);
        Some(Probe {
            flow,
            home: Home::of(flow, pod, pod_port, peer, peer_port, ports)?,
            homed: 0,
            pod_is_dst: u32::from(pod_is_dst),
            peer_port,
            flags: 0,
            tcp_state: 0,
            index: u32::MAX,
            crowded: 0,
        })
    }

    /// The pod's and the peer's addresses and the pod's port.
    #[inline(always)]
    fn sides(&self) -> (AddrWords, AddrWords, u16) {
        // SAFETY: `flow` is the per-CPU scratch slot, valid for the program's run.
        let (pod, peer, pod_port, _) = sides(unsafe { &*self.flow }, self.pod_is_dst != 0);
        (pod, peer, pod_port)
    }

    /// The slot of the flow (live or not), if one is there.
    #[inline(always)]
    fn find(&mut self) -> Option<*mut NatFlow> {
        // SAFETY: a map value pointer stays valid for the program's run.
        self.homed = unsafe { (*slot(self.home.index(0))?).homed };
        if self.homed == 0 {
            return None;
        }
        // Most flows are at their home: looked at without the loop.
        let ctx = (self as *mut Probe).cast();
        if find_step(0, ctx) != 0 {
            return slot(self.index);
        }
        if self.homed & !1 == 0 {
            return None;
        }
        // SAFETY: the callback is a BPF function taking (index, ctx) and `self` outlives
        // the call.
        unsafe {
            bpf_loop(self.home.probes() - 1, find_next as *mut c_void, ctx, 0);
        }
        slot(self.index)
    }

    /// Claims the first port from the home whose slot holds no live flow, and writes the
    /// flow there (`flags`, `tcp_state`): its port, or why there is none.
    #[inline(always)]
    fn claim(&mut self, flags: u8, tcp_state: u8) -> Result<u16, NatReason> {
        self.flags = flags;
        self.tcp_state = tcp_state;
        // Most new flows get their home port: tried without the loop.
        let ctx = (self as *mut Probe).cast();
        if claim_step(0, ctx) == 0 && self.home.probes() > 1 {
            // SAFETY: as in `find`.
            unsafe {
                bpf_loop(self.home.probes() - 1, claim_next as *mut c_void, ctx, 0);
            }
        }
        match slot(self.index) {
            // SAFETY: a map value pointer stays valid for the program's run; the claim
            // made it this flow's.
            Some(claimed) => Ok(unsafe { (*claimed).port }),
            None if self.crowded != 0 => Err(NatReason::DropNatTableFull),
            None => Err(NatReason::DropPortsExhausted),
        }
    }
}

/// One `k` of [`Probe::find`]: 1 (stop) once the flow's slot is found.
#[inline(never)]
extern "C" fn find_step(k: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `Probe` `find` gave it.
    let probe = unsafe { &mut *(ctx as *mut Probe) };
    let k = k as u32;
    if probe.homed & (1 << (k & 63)) == 0 {
        return 0;
    }
    let index = probe.home.index(k);
    let Some(candidate) = slot(index) else {
        return 1;
    };
    // SAFETY: a map value pointer stays valid for the program's run; read only.
    let c = unsafe { &*candidate };
    // SAFETY: as in `Probe::sides`.
    let flow = unsafe { &*probe.flow };
    let (pod, peer, pod_port) = probe.sides();
    if c.flags != 0
        && c.pod_port == pod_port
        && is_with(c, peer, probe.peer_port, flow.headers.protocol, flow.scope)
        // SAFETY: a slot's addresses are aligned.
        && unsafe { words(&c.pod) } == pod
    {
        probe.index = index;
        return 1;
    }
    0
}

/// Step `k` of the loop after the home: `k + 1` of [`find_step`].
#[inline(never)]
extern "C" fn find_next(k: u64, ctx: *mut c_void) -> i64 {
    find_step(k + 1, ctx)
}

/// Step `k` of the loop after the home: `k + 1` of [`claim_step`].
#[inline(never)]
extern "C" fn claim_next(k: u64, ctx: *mut c_void) -> i64 {
    claim_step(k + 1, ctx)
}

/// One `k` of [`Probe::claim`]: 1 (stop) once a slot is claimed.
#[inline(never)]
extern "C" fn claim_step(k: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `Probe` `claim` gave it.
    let probe = unsafe { &mut *(ctx as *mut Probe) };
    let k = k as u32;
    // SAFETY: as in `Probe::sides`.
    let flow = unsafe { &*probe.flow };
    let (protocol, scope, now) = (flow.headers.protocol, flow.scope, flow.now);
    let index = probe.home.index(k);
    let Some(target) = slot(index) else {
        return 1;
    };
    // SAFETY: a map value pointer stays valid for the program's run; other CPUs only
    // write it through this claim or refreshes of a live flow.
    let t = unsafe { &mut *target };
    let seen = t.last_seen_ns;
    let (pod, peer, pod_port) = probe.sides();
    if t.live(now) {
        if !is_with(t, peer, probe.peer_port, protocol, scope) {
            probe.crowded = 1;
        }
        return 0;
    }
    // The claim: of CPUs racing for this slot, the one that exchanged the expired
    // timestamp owns it; the others see a live one and go on (having at worst refreshed
    // it).
    // SAFETY: an aligned u64 in a map value.
    let old = unsafe {
        core::intrinsics::atomic_xchg::<u64, { AtomicOrdering::SeqCst }>(
            &raw mut t.last_seen_ns,
            now,
        )
    };
    if old != seen {
        return 0;
    }
    // Readers match on `flags != 0`: the slot's old flow stops matching first.
    t.flags = 0;
    put_words(&mut t.pod, pod);
    put_words(&mut t.peer, peer);
    t.pod_port = pod_port;
    t.peer_port = probe.peer_port;
    t.port = probe.home.port(k);
    t.protocol = protocol;
    t.scope = scope;
    t.tcp_state = probe.tcp_state;
    t.flags = probe.flags;
    mark(probe.home.index(0), k);
    probe.index = index;
    1
}

/// Sets bit `k` of `homed` in slot `home` (exchanged, as another CPU may set another bit:
/// a bit lost to the race is put back at once).
#[inline(always)]
fn mark(home: u32, k: u32) {
    let Some(home) = slot(home) else {
        return;
    };
    let bit = 1u64 << (k & 63);
    // SAFETY: a map value pointer stays valid for the program's run.
    let current = unsafe { (*home).homed };
    if current & bit != 0 {
        return;
    }
    let mut want = current | bit;
    for _ in 0..4 {
        // SAFETY: an aligned u64 in a map value.
        let old = unsafe {
            core::intrinsics::atomic_xchg::<u64, { AtomicOrdering::SeqCst }>(
                &raw mut (*home).homed,
                want,
            )
        };
        let lost = old & !want;
        if lost == 0 {
            return;
        }
        want |= lost;
    }
}

#[inline(always)]
fn egress(ctx: &TcContext) -> NatReason {
    let scope = ifindex(ctx);
    // SAFETY: a map value stays valid for the program's run; only read.
    let Some(uplink) = (unsafe { UPLINKS.get(&scope) }) else {
        return NatReason::NoUplink;
    };
    let Some(flow) = SCRATCH.get_ptr_mut(0) else {
        return NatReason::Untranslatable;
    };
    // SAFETY: a per-CPU slot is only used by the CPU running this program, for this run.
    let flow = unsafe { &mut *flow };
    if read_flow(ctx, flow).is_none() || flow.kind == L4Kind::IcmpError {
        // ICMP errors the pods send answer flows that came in: nothing to translate.
        return NatReason::Untranslatable;
    }
    flow.scope = scope;
    if flow.kind == L4Kind::Fragment {
        return later_fragment(ctx, flow, false);
    }
    let now = now_ns();
    flow.now = now;
    let h = &flow.headers;
    let (addr, has) = match family_of(h) {
        Family::V4 => (&uplink.addr_v4, UPLINK_HAS_V4),
        Family::V6 => (&uplink.addr_v6, UPLINK_HAS_V6),
    };
    let mut probe = Probe::of(flow, false, (uplink.port_first, uplink.port_last));
    if let Some(entry) = probe.as_mut().and_then(Probe::find) {
        // SAFETY: a map value pointer stays valid for the program's run.
        let entry = unsafe { &mut *entry };
        if entry.live(now) {
            if entry.flags & FLOW_PASS_INBOUND != 0 {
                // The pod answers a flow that came in to its own address: as Calico (whose
                // masquerade applies to new outgoing connections only), leave it untouched.
                refresh(entry, flow, true, now);
                remember_fragment(flow, false, &h.src, FRAGMENT_PASS);
                return NatReason::NotEligible;
            }
            if uplink.flags & has == 0 {
                return NatReason::NoUplink;
            }
            let reason = if reopens_closed(flow, entry) {
                // A SYN reusing a closed flow's ports starts a new flow on the same port.
                entry.tcp_state = TCP_SYN_SEEN;
                entry.last_seen_ns = now;
                NatReason::NewMapping
            } else {
                refresh(entry, flow, true, now);
                NatReason::Translated
            };
            let port = entry.port;
            return match rewrite_source(ctx, flow, addr, port) {
                Some(()) => {
                    remember_fragment(flow, false, addr, FRAGMENT_REWRITE);
                    reason
                }
                None => NatReason::DropRewriteFailed,
            };
        }
    }
    if !translates(prefix_of(&h.src), || prefix_of(&h.dst)) {
        return NatReason::NotEligible;
    }
    if uplink.flags & has == 0 {
        return NatReason::NoUplink;
    }
    let tcp_state = match flow.kind {
        L4Kind::Tcp if flow.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN => {
            TCP_SYN_SEEN
        }
        // Picked up mid-stream.
        L4Kind::Tcp => TCP_ESTABLISHED,
        _ => 0,
    };
    // An uplink without ports has no flows: only a new one is refused.
    let Some(mut probe) = probe else {
        return NatReason::DropPortsExhausted;
    };
    let port = match probe.claim(FLOW_TRANSLATED, tcp_state) {
        Ok(port) => port,
        Err(reason) => return reason,
    };
    match rewrite_source(ctx, flow, addr, port) {
        Some(()) => {
            remember_fragment(flow, false, addr, FRAGMENT_REWRITE);
            NatReason::NewMapping
        }
        None => NatReason::DropRewriteFailed,
    }
}

/// A SYN reusing the ports of a closed TCP flow starts a new one.
#[inline(always)]
fn reopens_closed(flow: &Flow, entry: &NatFlow) -> bool {
    flow.kind == L4Kind::Tcp
        && flow.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN
        && entry.tcp_state & (TCP_RST | NAT_TCP_FIN_INSIDE | NAT_TCP_FIN_OUTSIDE) != 0
}

#[inline(always)]
fn ingress(ctx: &TcContext) -> NatReason {
    let scope = ifindex(ctx);
    // SAFETY: a map value stays valid for the program's run; only read.
    let Some(uplink) = (unsafe { UPLINKS.get(&scope) }) else {
        return NatReason::NoUplink;
    };
    let Some(flow) = SCRATCH.get_ptr_mut(0) else {
        return NatReason::Untranslatable;
    };
    // SAFETY: as in `egress`.
    let flow = unsafe { &mut *flow };
    if read_flow(ctx, flow).is_none() {
        return NatReason::Untranslatable;
    }
    flow.scope = scope;
    flow.now = now_ns();
    match flow.kind {
        L4Kind::IcmpError => icmp_error(ctx, flow, uplink),
        L4Kind::Fragment => later_fragment(ctx, flow, true),
        _ => reverse(ctx, flow, uplink),
    }
}

/// The uplink's address of the packet's family, if it has one.
#[inline(always)]
fn node_address<'a>(uplink: &'a NatUplink, headers: &IpHeaders) -> Option<&'a [u8; 16]> {
    match family_of(headers) {
        Family::V4 if uplink.flags & UPLINK_HAS_V4 != 0 => Some(&uplink.addr_v4),
        Family::V6 if uplink.flags & UPLINK_HAS_V6 != 0 => Some(&uplink.addr_v6),
        _ => None,
    }
}

/// The translated flow whose packet left as `node:port → peer:peer_port`, live.
#[inline(always)]
fn translated_flow(
    flow: &Flow,
    protocol: u8,
    peer: AddrWords,
    peer_port: u16,
    port: u16,
) -> Option<*mut NatFlow> {
    let found = slot(slot_of(
        peer_hash(peer, peer_port, protocol, flow.scope),
        port,
    ))?;
    // SAFETY: a map value pointer stays valid for the program's run; read only.
    let f = unsafe { &*found };
    (f.flags & FLOW_TRANSLATED != 0
        && f.port == port
        && is_with(f, peer, peer_port, protocol, flow.scope)
        && f.live(flow.now))
    .then_some(found)
}

/// A reply of a translated flow goes back to the pod; a packet to a pod's own address is
/// recorded so the pod's answers pass untranslated.
#[inline(never)]
fn reverse(ctx: &TcContext, flow: &Flow, uplink: &NatUplink) -> NatReason {
    let h = &flow.headers;
    let now = flow.now;
    let peer_port = flow.peer_port(flow.src_port);
    if node_address(uplink, h).is_some_and(|node| *node == h.dst) {
        // SAFETY: the headers' addresses are aligned.
        let peer = unsafe { words(&h.src) };
        let Some(entry) = translated_flow(flow, h.protocol, peer, peer_port, flow.dst_port) else {
            return NatReason::NotEligible;
        };
        // SAFETY: a map value pointer stays valid for the program's run.
        let entry = unsafe { &mut *entry };
        refresh(entry, flow, false, now);
        // A live flow holds still for this run: its slot is never claimed.
        let entry: &NatFlow = entry;
        return match rewrite_destination(ctx, flow, &entry.pod, entry.pod_port) {
            Some(()) => {
                remember_fragment(flow, true, &entry.pod, FRAGMENT_REWRITE);
                NatReason::Reversed
            }
            None => NatReason::DropRewriteFailed,
        };
    }
    let Some(mut probe) = Probe::of(flow, true, (uplink.port_first, uplink.port_last)) else {
        return NatReason::NotEligible;
    };
    match probe.find() {
        Some(entry) => {
            // SAFETY: a map value pointer stays valid for the program's run.
            let entry = unsafe { &mut *entry };
            if entry.flags & FLOW_PASS_INBOUND != 0 && entry.live(now) {
                refresh(entry, flow, false, now);
            } else if !entry.live(now) {
                remember_inbound(flow, &mut probe);
            }
        }
        None => remember_inbound(flow, &mut probe),
    }
    NatReason::NotEligible
}

/// The fragment-table key of the packet's datagram as it crossed the uplink.
#[inline(always)]
fn fragment_key(flow: &Flow, id: u32, ingress: bool) -> NatFragmentKey {
    let h = &flow.headers;
    NatFragmentKey {
        src: h.src,
        dst: h.dst,
        id,
        protocol: h.protocol,
        ingress: u8::from(ingress),
        _pad: 0,
        scope: flow.scope,
    }
}

/// After a first fragment went through: what its datagram's later fragments get (`addr`
/// in place of the source on egress, of the destination on ingress, or passing).
#[inline(always)]
fn remember_fragment(flow: &Flow, ingress: bool, addr: &[u8; 16], action: u32) {
    if let Some(id) = flow.headers.fragment_id {
        record_fragment(flow, id, ingress, addr, action);
    }
}

#[inline(never)]
fn record_fragment(flow: &Flow, id: u32, ingress: bool, addr: &[u8; 16], action: u32) {
    let value = NatFragment {
        first_seen_ns: now_ns(),
        addr: *addr,
        action,
        _pad: 0,
    };
    // A full LRU forgets the oldest datagram: its later fragments are then dropped (egress)
    // or passed untranslated (ingress) — one datagram lost, no flow harmed.
    let _ = FRAGMENTS.insert(&fragment_key(flow, id, ingress), &value, 0);
}

/// A fragment after the first: it gets what its datagram's first fragment got. One whose
/// first fragment was not seen leaves the pod only if it would not be translated anyway.
#[inline(never)]
fn later_fragment(ctx: &TcContext, flow: &Flow, ingress: bool) -> NatReason {
    let h = &flow.headers;
    let Some(id) = h.fragment_id else {
        return NatReason::Untranslatable;
    };
    let known = FRAGMENTS
        .get_ptr(&fragment_key(flow, id, ingress))
        .filter(|f| {
            // SAFETY: a map value pointer stays valid for the program's run; read only.
            now_ns().saturating_sub(unsafe { &**f }.first_seen_ns) <= NAT_FRAGMENT_TIMEOUT_NS
        });
    if let Some(fragment) = known {
        // SAFETY: as above.
        let fragment = unsafe { &*fragment };
        if fragment.action != FRAGMENT_REWRITE {
            return NatReason::NotEligible;
        }
        let (family, addr) = (family_of(h), fragment.addr);
        let old = if ingress { h.dst } else { h.src };
        // No L4 header: only the IPv4 header checksum covers the address.
        return match rewrite_address(
            ctx,
            family,
            addr_offset(family, ingress),
            &old,
            &addr,
            0,
            None,
        ) {
            Some(()) => NatReason::FragmentTranslated,
            None => NatReason::DropRewriteFailed,
        };
    }
    if !ingress && translates(prefix_of(&h.src), || prefix_of(&h.dst)) {
        return NatReason::DropFragmentUnknown;
    }
    NatReason::NotEligible
}

/// A new flow coming in to a natOutgoing pod's own address (from a remote cluster, say):
/// recorded so the pod's answers leave untranslated.
#[inline(never)]
fn remember_inbound(flow: &Flow, probe: &mut Probe) {
    let h = &flow.headers;
    let to_nat_pool = prefix_of(&h.dst).is_some_and(|p| p.flags & PREFIX_NAT_OUTGOING != 0);
    if !to_nat_pool {
        return;
    }
    // No free slot leaves the flow unrecorded: its answers are then translated, which the
    // peer drops as it would any stray packet; nothing existing is harmed.
    let _ = probe.claim(FLOW_PASS_INBOUND, TCP_SYN_SEEN);
}

/// Offset of the source (`dst == false`) or destination address.
#[inline(always)]
const fn addr_offset(family: Family, dst: bool) -> usize {
    match (family, dst) {
        (Family::V4, false) => ETH_HLEN + 12,
        (Family::V4, true) => ETH_HLEN + 16,
        (Family::V6, false) => ETH_HLEN + 8,
        (Family::V6, true) => ETH_HLEN + 24,
    }
}

/// L4 checksum flags for an address change: whether the pseudo header covers addresses
/// (not for ICMPv4), and UDP's "0 means no checksum".
#[inline(always)]
fn pseudo_header_flags(flow: &Flow) -> Option<u64> {
    match (flow.kind, family_of(&flow.headers)) {
        (L4Kind::Tcp, _) => Some(u64::from(BPF_F_PSEUDO_HDR)),
        (L4Kind::Udp, _) => Some(u64::from(BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0)),
        (_, Family::V6) => Some(u64::from(BPF_F_PSEUDO_HDR)),
        (_, Family::V4) => None,
    }
}

/// Rewrites the packet's source (`dst == false`) or destination address and port, with
/// every checksum that covers them. The L4 checksum goes through the kernel's helpers,
/// which know that an offloaded one (CHECKSUM_PARTIAL) covers the pseudo header only; the
/// bytes, and the IPv4 header checksum computed here, go in one store when the L4 header
/// follows the fixed IP header ([`store_headers`]): three helper calls instead of five.
#[inline(never)]
fn rewrite(ctx: &TcContext, flow: &Flow, dst: bool, addr: &[u8; 16], port: u16) -> Option<()> {
    let h = &flow.headers;
    let family = family_of(h);
    let old = if dst { h.dst } else { h.src };
    let l4_check = flow.l4 + flow.kind.checksum_offset();
    l4_address_checksum(ctx, family, &old, addr, l4_check, pseudo_header_flags(flow))?;
    let (port_offset, old_port) = if dst {
        (flow.kind.dst_port_offset(), flow.dst_port)
    } else {
        (flow.kind.src_port_offset(), flow.src_port)
    };
    if old_port != port {
        let mangled = if flow.kind == L4Kind::Udp {
            u64::from(BPF_F_MARK_MANGLED_0)
        } else {
            0
        };
        ctx.l4_csum_replace(
            l4_check,
            u64::from(old_port.to_be()),
            u64::from(port.to_be()),
            mangled | 2,
        )
        .ok()?;
    }
    if store_headers(ctx, flow, dst, &old, addr, port_offset, port).is_some() {
        return Some(());
    }
    store_address(ctx, family, addr_offset(family, dst), &old, addr)?;
    if old_port != port {
        ctx.store(flow.l4 + port_offset, &port.to_be_bytes(), 0)
            .ok()?;
    }
    Some(())
}

#[inline(always)]
fn rewrite_source(ctx: &TcContext, flow: &Flow, addr: &[u8; 16], port: u16) -> Option<()> {
    rewrite(ctx, flow, false, addr, port)
}

#[inline(always)]
fn rewrite_destination(ctx: &TcContext, flow: &Flow, addr: &[u8; 16], port: u16) -> Option<()> {
    rewrite(ctx, flow, true, addr, port)
}

/// Where [`store_headers`]' span starts: the IPv4 header checksum, or the IPv6 source.
const V4_SPAN_START: usize = ETH_HLEN + 10;
const V6_SPAN_START: usize = ETH_HLEN + 8;
/// The span runs to 8 bytes into the L4 header (what the parser made sure is there for
/// TCP, UDP and ICMP): the ports, or the echo identifier.
const V4_SPAN: usize = 20 - 10 + 8;
const V6_SPAN: usize = 40 - 8 + 8;

/// Writes the address and port of a packet whose L4 header follows the fixed IP header in
/// one store of the bytes between them, read back after the L4 checksum helpers ran: the
/// IPv4 header checksum (fixed here: it is never offloaded), the addresses, and the L4
/// header's first 8 bytes. `None`, with nothing written, when the headers do not lie so.
#[inline(always)]
fn store_headers(
    ctx: &TcContext,
    flow: &Flow,
    dst: bool,
    old: &[u8; 16],
    new: &[u8; 16],
    port_offset: usize,
    port: u16,
) -> Option<()> {
    let port = port.to_be_bytes();
    match family_of(&flow.headers) {
        Family::V4 => {
            if flow.l4 != ETH_HLEN + 20 {
                return None;
            }
            let mut span = parse::read::<V4_SPAN>(ctx, V4_SPAN_START).ok()?;
            let old4 = [old[12], old[13], old[14], old[15]];
            let new4 = [new[12], new[13], new[14], new[15]];
            let check = checksum_update(u16::from_be_bytes([span[0], span[1]]), &old4, &new4);
            span[..2].copy_from_slice(&check.to_be_bytes());
            let at = if dst { 6 } else { 2 };
            span[at..at + 4].copy_from_slice(&new4);
            put_port(&mut span, 10, port_offset, port);
            ctx.store(V4_SPAN_START, &span, 0).ok()
        }
        Family::V6 => {
            if flow.l4 != ETH_HLEN + 40 {
                return None;
            }
            let mut span = parse::read::<V6_SPAN>(ctx, V6_SPAN_START).ok()?;
            let at = if dst { 16 } else { 0 };
            span[at..at + 16].copy_from_slice(new);
            put_port(&mut span, 32, port_offset, port);
            ctx.store(V6_SPAN_START, &span, 0).ok()
        }
    }
}

/// Writes `port` at `l4 + port_offset` of `span`, the offset spelled out as constants: the
/// verifier refuses a stack write at an offset it cannot bound.
#[inline(always)]
fn put_port<const N: usize>(span: &mut [u8; N], l4: usize, port_offset: usize, port: [u8; 2]) {
    match port_offset {
        0 => span[l4..l4 + 2].copy_from_slice(&port),
        2 => span[l4 + 2..l4 + 4].copy_from_slice(&port),
        _ => span[l4 + 4..l4 + 6].copy_from_slice(&port),
    }
}

/// Writes `new` over the address `old` at `offset`, fixing the IPv4 header checksum and
/// the L4 checksum at `l4_check` (with `l4_flags`, when its pseudo header covers it).
#[inline(always)]
fn rewrite_address(
    ctx: &TcContext,
    family: Family,
    offset: usize,
    old: &[u8; 16],
    new: &[u8; 16],
    l4_check: usize,
    l4_flags: Option<u64>,
) -> Option<()> {
    l4_address_checksum(ctx, family, old, new, l4_check, l4_flags)?;
    store_address(ctx, family, offset, old, new)
}

/// Fixes the L4 checksum at `l4_check` for the address `old` becoming `new`, when its
/// pseudo header covers addresses (`l4_flags`).
#[inline(always)]
fn l4_address_checksum(
    ctx: &TcContext,
    family: Family,
    old: &[u8; 16],
    new: &[u8; 16],
    l4_check: usize,
    l4_flags: Option<u64>,
) -> Option<()> {
    let Some(flags) = l4_flags else {
        return Some(());
    };
    match family {
        Family::V4 => {
            let from = u32::from_ne_bytes([old[12], old[13], old[14], old[15]]);
            let to = u32::from_ne_bytes([new[12], new[13], new[14], new[15]]);
            ctx.l4_csum_replace(l4_check, u64::from(from), u64::from(to), flags | 4)
        }
        Family::V6 => ctx.l4_csum_replace(l4_check, 0, csum_diff_16(old, new), flags),
    }
    .ok()
}

/// Writes `new` over the address `old` at `offset`, with the IPv4 header checksum.
#[inline(always)]
fn store_address(
    ctx: &TcContext,
    family: Family,
    offset: usize,
    old: &[u8; 16],
    new: &[u8; 16],
) -> Option<()> {
    match family {
        Family::V4 => {
            let old4 = [old[12], old[13], old[14], old[15]];
            let new4 = [new[12], new[13], new[14], new[15]];
            let (from, to) = (u32::from_ne_bytes(old4), u32::from_ne_bytes(new4));
            ctx.l3_csum_replace(ETH_HLEN + 10, u64::from(from), u64::from(to), 4)
                .ok()?;
            ctx.store(offset, &new4, 0).ok()
        }
        Family::V6 => ctx.store(offset, new, 0).ok(),
    }
}

/// The checksum difference of 16 bytes becoming others, for `l4_csum_replace` (what
/// `bpf_csum_diff` answers, without the helper call): the one's complement sum of the new
/// 16-bit words and of the old ones negated, in memory order as the kernel reads them.
#[inline(always)]
fn csum_diff_16(old: &[u8; 16], new: &[u8; 16]) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while i < 16 {
        sum += u64::from(!u16::from_ne_bytes([old[i], old[i + 1]]));
        sum += u64::from(u16::from_ne_bytes([new[i], new[i + 1]]));
        i += 2;
    }
    // 16 words of at most 0xffff: no carry out of 32 bits to fold.
    sum
}

/// An ICMP error arriving on the uplink: if it quotes a packet of a translated flow (which
/// left as `node:n → peer:q`), the error goes to the pod and its quote shows the packet as
/// the pod sent it (`pod:p → peer:q`), every checksum fixed, the quoted ones included.
#[inline(never)]
fn icmp_error(ctx: &TcContext, flow: &mut Flow, uplink: &NatUplink) -> NatReason {
    if read_quote(ctx, flow).is_none() {
        return NatReason::Untranslatable;
    }
    let q = &flow.quote;
    // The quote is a packet the node sent: `node:port → peer:peer_port`.
    if !node_address(uplink, &flow.headers).is_some_and(|node| *node == q.src) {
        return NatReason::NotEligible;
    }
    let peer_port = q.kind.peer_port(q.dst_port);
    // SAFETY: the quote's addresses are aligned.
    let peer = unsafe { words(&q.dst) };
    let Some(entry) = translated_flow(flow, q.protocol, peer, peer_port, q.src_port) else {
        return NatReason::NotEligible;
    };
    // SAFETY: a map value pointer stays valid for the program's run; read only.
    let entry = unsafe { &*entry };
    let q = &mut flow.quote;
    q.pod = entry.pod;
    q.pod_port = entry.pod_port;
    q.outer_check = flow.l4 + 2;
    // The error's own destination: the node becomes the pod.
    let family = family_of(&flow.headers);
    let outer_flags = match family {
        Family::V4 => None,
        Family::V6 => Some(u64::from(BPF_F_PSEUDO_HDR)),
    };
    if rewrite_address(
        ctx,
        family,
        addr_offset(family, true),
        &flow.headers.dst,
        &flow.quote.pod,
        flow.quote.outer_check,
        outer_flags,
    )
    .is_none()
    {
        return NatReason::DropRewriteFailed;
    }
    match rewrite_quote(ctx, flow) {
        Some(()) => NatReason::IcmpErrorReversed,
        None => NatReason::DropRewriteFailed,
    }
}

/// Reads the header an ICMP error quotes into `flow.quote`; `None` if it is not a TCP, UDP
/// or echo packet NAT could have sent.
#[inline(never)]
fn read_quote(ctx: &TcContext, flow: &mut Flow) -> Option<()> {
    let family = family_of(&flow.headers);
    let q = &mut flow.quote;
    q.ip = flow.l4 + 8;
    let icmp_protocol = match family {
        Family::V4 => {
            let ip = load::<20>(ctx, q.ip)?;
            let header_len = usize::from(ip[0] & 0x0f) * 4;
            if ip[0] >> 4 != 4 || header_len < 20 {
                return None;
            }
            q.src = fedwall_common::net::v4_mapped([ip[12], ip[13], ip[14], ip[15]]);
            q.dst = fedwall_common::net::v4_mapped([ip[16], ip[17], ip[18], ip[19]]);
            q.protocol = ip[9];
            q.l4 = q.ip + header_len;
            ip_proto::ICMP
        }
        Family::V6 => {
            let first = load::<8>(ctx, q.ip)?;
            if first[0] >> 4 != 6 {
                return None;
            }
            q.src = load::<16>(ctx, q.ip + 8)?;
            q.dst = load::<16>(ctx, q.ip + 24)?;
            let (protocol, l4) = quoted_ext_headers(ctx, first[6], q.ip + 40)?;
            q.protocol = protocol;
            q.l4 = l4;
            ip_proto::ICMPV6
        }
    };
    let l4 = load::<8>(ctx, q.l4)?;
    let (kind, sport, dport) = match q.protocol {
        ip_proto::TCP => (L4Kind::Tcp, [l4[0], l4[1]], [l4[2], l4[3]]),
        ip_proto::UDP => (L4Kind::Udp, [l4[0], l4[1]], [l4[2], l4[3]]),
        p if p == icmp_protocol => (L4Kind::Echo, [l4[4], l4[5]], [l4[4], l4[5]]),
        _ => return None,
    };
    q.kind = kind;
    q.src_port = u16::from_be_bytes(sport);
    q.dst_port = u16::from_be_bytes(dport);
    Some(())
}

/// Walks the extension headers a quoted IPv6 packet may carry (a pod's fragmented datagram
/// has a fragment header, and hop-by-hop, routing and destination options may come first):
/// its L4 protocol and where its header starts. `None` for a later fragment (no L4
/// header). More than [`MAX_QUOTED_EXT_HEADERS`] leave an extension header as the
/// "protocol", which no flow has.
#[inline(always)]
fn quoted_ext_headers(ctx: &TcContext, first: u8, at: usize) -> Option<(u8, usize)> {
    let (mut next, mut at) = (first, at);
    for _ in 0..MAX_QUOTED_EXT_HEADERS {
        match next {
            ip_proto::HOP_BY_HOP | ip_proto::ROUTING | ip_proto::DEST_OPTS => {
                let ext = load::<2>(ctx, at)?;
                next = ext[0];
                at += (usize::from(ext[1]) + 1) * 8;
            }
            ip_proto::FRAGMENT => {
                let ext = load::<4>(ctx, at)?;
                if u16::from_be_bytes([ext[2], ext[3]]) >> 3 != 0 {
                    return None;
                }
                next = ext[0];
                at += 8;
            }
            _ => break,
        }
    }
    Some((next, at))
}

/// Rewrites the quoted packet's source to the pod's address and port: its IPv4 header
/// checksum, its L4 checksum when the quote holds it, and the error's own checksum for
/// every quoted byte that changed.
#[inline(never)]
fn rewrite_quote(ctx: &TcContext, flow: &Flow) -> Option<()> {
    let family = family_of(&flow.headers);
    let q = &flow.quote;
    let (old, new) = (&q.src, &q.pod);
    // Every quoted change is ICMP payload to the outer checksum: no pseudo header.
    let outer_word = |at: usize, from: [u8; 2], to: [u8; 2]| {
        ctx.l4_csum_replace(
            q.outer_check,
            u64::from(u16::from_ne_bytes(from)),
            u64::from(u16::from_ne_bytes(to)),
            2,
        )
        .ok()?;
        ctx.store(at, &to, 0).ok()
    };
    // The quoted L4 checksum, when it is inside the packet (a short quote may cut it off)
    // and not UDP's "none".
    let l4_check_at = q.l4 + q.kind.checksum_offset();
    let l4_check = load::<2>(ctx, l4_check_at).filter(|c| !(q.kind == L4Kind::Udp && *c == [0, 0]));
    let mut new_l4_check = l4_check.map(u16::from_be_bytes);
    match family {
        Family::V4 => {
            let old4 = [old[12], old[13], old[14], old[15]];
            let new4 = [new[12], new[13], new[14], new[15]];
            let ip_check = load::<2>(ctx, q.ip + 10)?;
            let fixed = checksum_update(u16::from_be_bytes(ip_check), &old4, &new4);
            outer_word(q.ip + 10, ip_check, fixed.to_be_bytes())?;
            for i in 0..2 {
                let from = [old4[2 * i], old4[2 * i + 1]];
                let to = [new4[2 * i], new4[2 * i + 1]];
                outer_word(q.ip + 12 + 2 * i, from, to)?;
            }
            // ICMPv4's checksum has no pseudo header.
            if q.kind != L4Kind::Echo {
                new_l4_check = new_l4_check.map(|c| checksum_update(c, &old4, &new4));
            }
        }
        Family::V6 => {
            for i in 0..8 {
                let from = [old[2 * i], old[2 * i + 1]];
                let to = [new[2 * i], new[2 * i + 1]];
                outer_word(q.ip + 8 + 2 * i, from, to)?;
            }
            new_l4_check = new_l4_check.map(|c| checksum_update(c, old, new));
        }
    }
    let port_at = q.l4 + q.kind.src_port_offset();
    let (from, to) = (q.src_port.to_be_bytes(), q.pod_port.to_be_bytes());
    outer_word(port_at, from, to)?;
    new_l4_check = new_l4_check.map(|c| checksum_update(c, &from, &to));
    if let (Some(before), Some(after)) = (l4_check, new_l4_check) {
        let after = match (q.kind, after) {
            // UDP sends a computed 0 as all ones: 0 means "no checksum".
            (L4Kind::Udp, 0) => 0xffff,
            _ => after,
        };
        outer_word(l4_check_at, before, after.to_be_bytes())?;
    }
    Some(())
}

/// Copies `N` bytes at `offset` out of the packet with `bpf_skb_load_bytes`, which checks
/// the bounds itself: the quote's offsets are computed from values the verifier cannot
/// follow, so direct packet access would not verify.
#[inline(always)]
fn load<const N: usize>(ctx: &TcContext, offset: usize) -> Option<[u8; N]> {
    ctx.load::<[u8; N]>(offset).ok()
}
