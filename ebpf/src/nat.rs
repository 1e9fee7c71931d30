//! NAT-outgoing, Calico's semantics: on an uplink's TC egress a packet from a `natOutgoing`
//! pool to an address in no pool and not of this node leaves with the uplink's address and
//! a port (or ICMP echo identifier) free for its peer; on TC ingress the replies, and ICMP
//! errors about the flow (their quote included), are translated back.
//!
//! Mappings are two entries of the NAT mapping table, a plain hash (layout and why in
//! `fedwall_common::nat`): a new flow that finds no free port, or no room in the table, is
//! dropped with [`NAT_FAIL_ACTION`] and counted; existing mappings are never evicted or
//! taken over while they live. [`fw_nat_sweep`] removes the expired ones when the agent
//! runs it. Only TCP, UDP and ICMP echo are translated; later fragments of a translated
//! datagram follow its first fragment.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        __sk_buff, BPF_ANY, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_NOEXIST, TC_ACT_OK,
        TC_ACT_SHOT,
    },
    helpers::{bpf_for_each_map_elem, bpf_get_prandom_u32, bpf_ktime_get_coarse_ns},
    macros::{classifier, map},
    maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::TcContext,
};
use fedwall_common::{
    conntrack::{ConntrackKey, TCP_ESTABLISHED, TCP_RST, TCP_SYN_SEEN},
    nat::{
        FRAGMENT_PASS, FRAGMENT_REWRITE, MAPPING_PASS_INBOUND, MAPPING_REVERSE_DESTINATION,
        MAPPING_REWRITE_SOURCE, NAT_FRAGMENT_ENTRIES, NAT_FRAGMENT_TIMEOUT_NS, NAT_MAPPING_ENTRIES,
        NAT_PORT_ATTEMPTS, NAT_PREFIX_ENTRIES, NAT_TCP_FIN_INSIDE, NAT_TCP_FIN_OUTSIDE,
        NAT_UPLINK_ENTRIES, NatFragment, NatFragmentKey, NatMapping, NatPrefix, NatReason,
        NatUplink, PREFIX_NAT_OUTGOING, UPLINK_HAS_V4, UPLINK_HAS_V6, checksum_update, translates,
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
#[map(name = "fw_nat_mappings_v1")]
static MAPPINGS: HashMap<ConntrackKey, NatMapping> = HashMap::pinned(NAT_MAPPING_ENTRIES, 0);
#[map(name = "fw_nat_fragments_v1")]
static FRAGMENTS: LruHashMap<NatFragmentKey, NatFragment> =
    LruHashMap::pinned(NAT_FRAGMENT_ENTRIES, 0);
#[map(name = "fw_nat_scratch_v1")]
static SCRATCH: PerCpuArray<Flow> = PerCpuArray::with_max_entries(1, 0);

/// What a packet NAT must drop gets: a new flow without a port or table room, or a rewrite
/// that failed half-way (its checksums can no longer be trusted).
pub const NAT_FAIL_ACTION: i32 = TC_ACT_SHOT;

/// Mapping timestamps are rewritten at most this often on the established path.
const REFRESH_NS: u64 = 1_000_000_000;

const TCP_FLAG_FIN: u8 = 0x01;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_RST: u8 = 0x04;
const TCP_FLAG_ACK: u8 = 0x10;
const EEXIST: i32 = 17;
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
/// per tick. Removes every expired mapping and returns how many live ones remain.
#[classifier]
pub fn fw_nat_sweep(_ctx: TcContext) -> i32 {
    let mut sweep = Sweep {
        now: now_ns(),
        live: 0,
    };
    // SAFETY: the map is this object's hash map; the callback has the signature
    // bpf_for_each_map_elem requires and `sweep` outlives the call.
    unsafe {
        bpf_for_each_map_elem(
            (&raw const MAPPINGS).cast_mut().cast(),
            sweep_entry as *mut c_void,
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

/// One mapping of the sweep: removed when expired (the hash allows removing the element
/// being visited), counted otherwise.
extern "C" fn sweep_entry(
    _map: *mut c_void,
    key: *const ConntrackKey,
    value: *const NatMapping,
    sweep: *mut Sweep,
) -> i64 {
    // SAFETY: the kernel passes the element's key and value and our context.
    let (key, value, sweep) = unsafe { (&*key, &*value, &mut *sweep) };
    if value.live(key.protocol, sweep.now) {
        sweep.live += 1;
    } else {
        let _ = MAPPINGS.remove(key);
    }
    // Go on with the next element.
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
    /// The uplink's ifindex: the conntrack scope of its mappings.
    scope: u32,
    now: u64,
    /// The address of the packet's family on the uplink, and the ports it hands out
    /// (copied from its map entry only for a new mapping).
    uplink_addr: [u8; 16],
    port_first: u16,
    port_last: u16,
    /// What an ICMP error quotes.
    quote: Quote,
    /// The conntrack value being built for a new mapping.
    value: NatMapping,
}

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
    /// The conntrack key, in the uplink's scope, of this packet's flow seen as
    /// `src:src_port ↔ dst:dst_port` (echo: the identifier `src_port` is both ports).
    #[inline(always)]
    fn key(&self, src: &[u8; 16], src_port: u16, dst: &[u8; 16], dst_port: u16) -> ConntrackKey {
        key_of(
            src,
            src_port,
            dst,
            dst_port,
            self.kind,
            self.headers.protocol,
            self.scope,
        )
    }
}

impl L4Kind {
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

/// Refreshes the live entry `entry` for a packet (its TCP state, and its timestamp at most
/// every [`REFRESH_NS`]); the flow's other entry, keyed `partner(entry)` (`None`: it has
/// none), gets the same, so both live and die together. The key is only built when a
/// refresh is due: most packets need none.
#[inline(always)]
fn refresh(
    entry: &mut NatMapping,
    flow: &Flow,
    inside: bool,
    now: u64,
    partner: impl FnOnce(&NatMapping) -> Option<ConntrackKey>,
) {
    let state = if flow.kind == L4Kind::Tcp {
        tcp_advance(entry.tcp_state, flow.tcp_flags, inside)
    } else {
        0
    };
    if state == entry.tcp_state && now.saturating_sub(entry.last_seen_ns) < REFRESH_NS {
        return;
    }
    entry.tcp_state = state;
    entry.last_seen_ns = now;
    let Some(partner) = partner(entry) else {
        return;
    };
    if let Some(other) = MAPPINGS.get_ptr_mut(&partner) {
        // SAFETY: a map value pointer stays valid for the program's run; racing writers of
        // these plain fields at worst lose a refresh.
        unsafe {
            (*other).tcp_state = state;
            (*other).last_seen_ns = now;
        }
    }
}

/// The conntrack key of a flow seen from one end, with echo's identifier as both ports.
#[inline(always)]
fn key_of(
    src: &[u8; 16],
    src_port: u16,
    dst: &[u8; 16],
    dst_port: u16,
    kind: L4Kind,
    protocol: u8,
    scope: u32,
) -> ConntrackKey {
    let dst_port = if kind == L4Kind::Echo {
        src_port
    } else {
        dst_port
    };
    ConntrackKey::new(src, src_port, dst, dst_port, protocol, scope).0
}

#[inline(always)]
fn egress(ctx: &TcContext) -> NatReason {
    let scope = ifindex(ctx);
    // SAFETY: a map value stays valid for the program's run; only read. Established flows
    // never read it: copying it whole per packet was a byte-wise memmove.
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
    let h = &flow.headers;
    let key = flow.key(&h.src, flow.src_port, &h.dst, flow.dst_port);
    if let Some(entry) = MAPPINGS.get_ptr_mut(&key) {
        // SAFETY: as in `refresh`.
        let entry = unsafe { &mut *entry };
        if entry.flags & MAPPING_REWRITE_SOURCE != 0
            && entry.live(h.protocol, now)
            && !reopens_closed(flow, entry)
        {
            refresh(entry, flow, true, now, |e| {
                Some(flow.key(&e.addr, e.port, &h.dst, flow.dst_port))
            });
            // A live entry is never taken over: it holds still for this run.
            let entry: &NatMapping = entry;
            return match rewrite_source(ctx, flow, &entry.addr, entry.port) {
                Some(()) => {
                    remember_fragment(flow, false, &entry.addr, FRAGMENT_REWRITE);
                    NatReason::Translated
                }
                None => NatReason::DropRewriteFailed,
            };
        }
        if entry.flags & MAPPING_PASS_INBOUND != 0 && entry.live(h.protocol, now) {
            // The pod answers a flow that came in to its own address: as Calico (whose
            // masquerade applies to new outgoing connections only), leave it untouched.
            remember_fragment(flow, false, &h.src, FRAGMENT_PASS);
            return NatReason::NotEligible;
        }
    }
    if !translates(prefix_of(&h.src), || prefix_of(&h.dst)) {
        return NatReason::NotEligible;
    }
    let (addr, has) = match family_of(h) {
        Family::V4 => (&uplink.addr_v4, UPLINK_HAS_V4),
        Family::V6 => (&uplink.addr_v6, UPLINK_HAS_V6),
    };
    if uplink.flags & has == 0 {
        return NatReason::NoUplink;
    }
    flow.now = now;
    // SAFETY: a map value and the scratch slot are distinct memory. Said so, the copy is
    // inlined instead of a call to a byte-wise memmove.
    unsafe { core::ptr::copy_nonoverlapping(addr, &mut flow.uplink_addr, 1) };
    flow.port_first = uplink.port_first;
    flow.port_last = uplink.port_last;
    let port = match new_mapping(flow, &key) {
        Ok(port) => port,
        Err(reason) => return reason,
    };
    match rewrite_source(ctx, flow, &flow.uplink_addr, port) {
        Some(()) => {
            remember_fragment(flow, false, &flow.uplink_addr, FRAGMENT_REWRITE);
            NatReason::NewMapping
        }
        None => NatReason::DropRewriteFailed,
    }
}

/// A SYN reusing the ports of a closed TCP flow starts a new one (and a new mapping).
#[inline(always)]
fn reopens_closed(flow: &Flow, entry: &NatMapping) -> bool {
    flow.kind == L4Kind::Tcp
        && flow.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN
        && entry.tcp_state & (TCP_RST | NAT_TCP_FIN_INSIDE | NAT_TCP_FIN_OUTSIDE) != 0
}

/// Claims a port free for the flow's peer (its reply entry inserted with `BPF_NOEXIST`, or
/// taking over an expired one), then records the outbound entry, keyed `outbound`.
#[inline(never)]
fn new_mapping(flow: &mut Flow, outbound: &ConntrackKey) -> Result<u16, NatReason> {
    let h = &flow.headers;
    let (addr, port_first, port_last, now) =
        (&flow.uplink_addr, flow.port_first, flow.port_last, flow.now);
    if port_last < port_first {
        return Err(NatReason::DropPortsExhausted);
    }
    let span = u32::from(port_last - port_first) + 1;
    let tcp_state = match flow.kind {
        L4Kind::Tcp if flow.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN => {
            TCP_SYN_SEEN
        }
        // Picked up mid-stream.
        L4Kind::Tcp => TCP_ESTABLISHED,
        _ => 0,
    };
    flow.value = NatMapping {
        last_seen_ns: now,
        addr: h.src,
        port: flow.src_port,
        flags: MAPPING_REVERSE_DESTINATION,
        tcp_state,
        _pad: 0,
    };
    // SAFETY: no preconditions.
    let start = unsafe { bpf_get_prandom_u32() } % span;
    let mut claimed = None;
    for attempt in 0..NAT_PORT_ATTEMPTS {
        let port = port_first + ((start + attempt) % span) as u16;
        let reply = flow.key(addr, port, &h.dst, flow.dst_port);
        match MAPPINGS.insert(&reply, &flow.value, u64::from(BPF_NOEXIST)) {
            Ok(()) => {
                claimed = Some((port, reply));
                break;
            }
            Err(e) if e == -EEXIST => {
                let expired = MAPPINGS.get_ptr(&reply).is_some_and(|held| {
                    // SAFETY: as in `refresh`; read only.
                    !unsafe { &*held }.live(h.protocol, now)
                });
                if expired
                    && MAPPINGS
                        .insert(&reply, &flow.value, u64::from(BPF_ANY))
                        .is_ok()
                {
                    claimed = Some((port, reply));
                    break;
                }
            }
            Err(_) => return Err(NatReason::DropNatTableFull),
        }
    }
    let Some((port, reply)) = claimed else {
        return Err(NatReason::DropPortsExhausted);
    };
    flow.value.addr = *addr;
    flow.value.port = port;
    flow.value.flags = MAPPING_REWRITE_SOURCE;
    if MAPPINGS
        .insert(outbound, &flow.value, u64::from(BPF_ANY))
        .is_err()
    {
        let _ = MAPPINGS.remove(&reply);
        return Err(NatReason::DropNatTableFull);
    }
    Ok(port)
}

#[inline(always)]
fn ingress(ctx: &TcContext) -> NatReason {
    let scope = ifindex(ctx);
    // SAFETY: only whether it exists matters.
    if unsafe { UPLINKS.get(&scope) }.is_none() {
        return NatReason::NoUplink;
    }
    let Some(flow) = SCRATCH.get_ptr_mut(0) else {
        return NatReason::Untranslatable;
    };
    // SAFETY: as in `egress`.
    let flow = unsafe { &mut *flow };
    if read_flow(ctx, flow).is_none() {
        return NatReason::Untranslatable;
    }
    flow.scope = scope;
    match flow.kind {
        L4Kind::IcmpError => icmp_error(ctx, flow, scope),
        L4Kind::Fragment => later_fragment(ctx, flow, true),
        _ => reverse(ctx, flow),
    }
}

/// A reply of a translated flow goes back to the pod.
#[inline(never)]
fn reverse(ctx: &TcContext, flow: &Flow) -> NatReason {
    let h = &flow.headers;
    let key = flow.key(&h.src, flow.src_port, &h.dst, flow.dst_port);
    let now = now_ns();
    let Some(entry) = MAPPINGS.get_ptr_mut(&key) else {
        remember_inbound(flow, &key, now);
        return NatReason::NotEligible;
    };
    // SAFETY: as in `refresh`.
    let entry = unsafe { &mut *entry };
    if entry.flags & MAPPING_PASS_INBOUND != 0 {
        refresh(entry, flow, false, now, |_| None);
        return NatReason::NotEligible;
    }
    if entry.flags & MAPPING_REVERSE_DESTINATION == 0 || !entry.live(h.protocol, now) {
        return NatReason::NotEligible;
    }
    refresh(entry, flow, false, now, |e| {
        Some(flow.key(&e.addr, e.port, &h.src, flow.src_port))
    });
    // As on egress: a live entry holds still for this run.
    let entry: &NatMapping = entry;
    match rewrite_destination(ctx, flow, &entry.addr, entry.port) {
        Some(()) => {
            remember_fragment(flow, true, &entry.addr, FRAGMENT_REWRITE);
            NatReason::Reversed
        }
        None => NatReason::DropRewriteFailed,
    }
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
fn remember_inbound(flow: &Flow, key: &ConntrackKey, now: u64) {
    let to_nat_pool =
        prefix_of(&flow.headers.dst).is_some_and(|p| p.flags & PREFIX_NAT_OUTGOING != 0);
    if !to_nat_pool {
        return;
    }
    let value = NatMapping {
        last_seen_ns: now,
        addr: [0; 16],
        port: 0,
        flags: MAPPING_PASS_INBOUND,
        tcp_state: TCP_SYN_SEEN,
        _pad: 0,
    };
    // A full table leaves the flow unrecorded: its answers are then translated, which the
    // peer drops as it would any stray packet; nothing existing is harmed.
    let _ = MAPPINGS.insert(key, &value, u64::from(BPF_NOEXIST));
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
fn icmp_error(ctx: &TcContext, flow: &mut Flow, scope: u32) -> NatReason {
    if read_quote(ctx, flow).is_none() {
        return NatReason::Untranslatable;
    }
    let q = &mut flow.quote;
    let key = key_of(
        &q.src, q.src_port, &q.dst, q.dst_port, q.kind, q.protocol, scope,
    );
    let Some(entry) = MAPPINGS.get_ptr(&key) else {
        return NatReason::NotEligible;
    };
    // SAFETY: a map value pointer stays valid for the program's run; read only.
    let entry = unsafe { &*entry };
    if entry.flags & MAPPING_REVERSE_DESTINATION == 0 || !entry.live(q.protocol, now_ns()) {
        return NatReason::NotEligible;
    }
    q.pod = entry.addr;
    q.pod_port = entry.port;
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
