//! The policy programs: attached to the host-side end of each pod's veth, they admit or
//! drop every packet to the pod (`fw_pol_to_pod`, on TC egress: the pod's ingress policy)
//! and from it (`fw_pol_from_pod`, on TC ingress: the pod's egress policy).
//!
//! Per packet, in order (conntrack, step 6, is consulted first in fact: see there):
//! 1. The interface's [`EndpointEntry`] (one hash lookup by ifindex). An interface that is
//!    not an endpoint passes: it is not ours to judge.
//! 2. Non-IP frames (ARP) pass. IPv6 neighbour discovery (ICMPv6 133-137 with hop limit
//!    255, as RFC 4861 requires) passes: it is IPv6's ARP.
//! 3. An IP packet whose headers cannot be parsed gets [`CANNOT_PARSE_ACTION`] (drop), in
//!    both directions and whether or not a policy applies: we cannot tell what it is, and
//!    the stack would drop it anyway. That covers truncated headers, IPv4 IHL < 5, a wrong
//!    version, more than 8 IPv6 extension headers, and an L4 header cut short — including
//!    a first fragment that does not hold the whole L4 header (RFC 7112), so ports can
//!    never be hidden in a later fragment.
//! 4. Fragments: a first fragment is judged like a whole datagram, by its ports. A later
//!    fragment has no ports: it passes only if the first fragment of the same datagram
//!    (addresses, protocol, identification, interface) passed within the last 30 s
//!    ([`FRAGMENTS_MAP`]); otherwise it is dropped as an orphan. A datagram whose first
//!    fragment was denied therefore loses every fragment, and one sent out of order loses
//!    its early later-fragments (the sender retransmits). Overlapping fragments that
//!    would rewrite the L4 header are discarded by Linux's reassembly (RFC 5722 and its
//!    IPv4 counterpart), so a passed fragment cannot change the ports that were judged.
//! 5. IPv6 extension headers (hop-by-hop, routing, destination options, fragment, AH) are
//!    walked to the real L4 protocol, at most 8 of them. Any other next-header value is
//!    the packet's protocol, as Linux would deliver it: a rule must allow that protocol.
//! 6. Conntrack ([`CONNTRACK_MAP`], one lookup): a live entry of an admitted flow passes
//!    the packet without walking the rules, in both directions. Tracked: TCP, UDP, SCTP
//!    (by ports), ICMP/ICMPv6 echo (by identifier), other protocols (by addresses). Other
//!    ICMP messages (errors, timestamps) are not tracked: each is judged by the rules.
//!    This lookup comes right after parsing, before the endpoint's: an entry's scope is
//!    this interface and only this program makes entries, so a live one means an admitted
//!    flow, and most packets cost one hash lookup, not two. (Packets that cannot be parsed,
//!    non-IP frames and later fragments never reach it: steps 1-4 decide those.)
//! 7. A new flow: no policy in this direction → allowed; otherwise the endpoint's table is
//!    walked in order (bounded by [`MAX_RULES_PER_TABLE`]), first Allow or Deny wins, Log
//!    rules emit an event and the walk goes on, and the table's default decides the rest.
//!    Allowed flows get a conntrack entry (also when no policy applied, so that replies
//!    pass a policy of the other direction); denied ones a flow event.
//!
//! Each address costs one hash lookup (host members) and, on a miss, one longest-prefix
//! lookup (network members), then one array lookup for its set bitmap; a rule's set
//! conditions are bit tests. Work per packet does not depend on set sizes or on how many
//! endpoints exist, and grows with the rules walked only for a flow's first packet.
//!
//! The walk goes by blocks of 64 slots of the rules map: a block whose summary
//! ([`RuleBlock`]: protocols no rule there matches, and per side the sets one of which
//! every rule there needs) rules the packet out is skipped with a few word tests; in the
//! others each rule's 16-byte [`RuleHead`] (protocol, one needed set per side, port hulls)
//! is tested first and the full rule read only when the head admits the packet. Both are
//! derived from the rules and only ever rule out what the rules would not match, so the
//! first match, and the Log rules met on the way, are those of a rule-by-rule walk.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, BPF_F_NO_PREALLOC, TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_ktime_get_coarse_ns, bpf_loop},
    macros::{classifier, map},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::TcContext,
};
use fedwall_common::{
    conntrack::{
        CONNTRACK_ENTRIES, CT_NO_RULE, CT_OPENED_BY_HI, ConntrackKey, ConntrackValue,
        TCP_ESTABLISHED, TCP_FIN_HI, TCP_FIN_LO, TCP_RST, TCP_SYN_SEEN, timeout_ns,
    },
    net::{icmp_type, ip_proto},
    policy::{
        ACTION_ALLOW, ACTION_DENY, ACTION_LOG, BlockSide, CLASS_NONE, EVENT_DENY, EVENT_LOG,
        EVENT_NO_RULE, EndpointEntry, FLOW_EVENTS_BYTES, FRAGMENT_TIMEOUT_NS, FlowEvent,
        FragmentKey, FragmentValue, HEAD_DST_PORTS, HEAD_DST_SET, HEAD_PROTOCOL, HEAD_SRC_PORTS,
        HEAD_SRC_SET, MAX_ENDPOINTS, MAX_FRAGMENTED_DATAGRAMS, MAX_PORT_RANGES_PER_SIDE, MAX_RULES,
        MAX_RULES_PER_TABLE, MAX_SET_CLASSES, MAX_SET_HOSTS, MAX_SET_MATCHES_PER_SIDE,
        MAX_SET_NETS, PacketCounter, PolicyDir, PortRangeEntry, RULE_BLOCK_SLOTS,
        RULE_BLOCKS as RULE_BLOCKS_COUNT, RULE_ICMP_CODE, RULE_ICMP_TYPE, RULE_INDEXED,
        RULE_NOT_ICMP_CODE, RULE_NOT_ICMP_TYPE, RULE_NOT_PROTOCOL, RULE_PROTOCOL, RuleBlock,
        RuleEntry, RuleHead, SET_BITMAP_WORDS, SET_MEMBER, SET_NOT_MEMBER, SetBitmap,
        SideConditions, VERDICT_ENTRIES, VerdictReason, verdict_index,
    },
};

#[cfg(doc)]
use fedwall_common::{conntrack::CONNTRACK_MAP, policy::FRAGMENTS_MAP};

use crate::parse::{self, Family, IpHeaders, Parsed};

#[map(name = "fw_endpoints_v1")]
static ENDPOINTS: HashMap<u32, EndpointEntry> = HashMap::pinned(MAX_ENDPOINTS, 0);
#[map(name = "fw_ipset_hosts_v1")]
static IPSET_HOSTS: HashMap<[u8; 16], u32> = HashMap::pinned(MAX_SET_HOSTS, BPF_F_NO_PREALLOC);
#[map(name = "fw_ipset_nets_v1")]
static IPSET_NETS: LpmTrie<[u8; 16], u32> = LpmTrie::pinned(MAX_SET_NETS, 0);
#[map(name = "fw_ipset_classes_v1")]
static IPSET_CLASSES: Array<SetBitmap> = Array::pinned(MAX_SET_CLASSES, 0);
#[map(name = "fw_rules_v1")]
static RULES: Array<RuleEntry> = Array::pinned(MAX_RULES, 0);
#[map(name = "fw_rule_heads_v1")]
static RULE_HEADS: Array<RuleHead> = Array::pinned(MAX_RULES, 0);
#[map(name = "fw_rule_blocks_v1")]
static RULE_BLOCKS: Array<RuleBlock> = Array::pinned(RULE_BLOCKS_COUNT, 0);
#[map(name = "fw_rule_counters_v1")]
static RULE_COUNTERS: PerCpuArray<PacketCounter> = PerCpuArray::pinned(MAX_RULES, 0);
#[map(name = "fw_verdicts_v1")]
static VERDICTS: PerCpuArray<PacketCounter> = PerCpuArray::pinned(VERDICT_ENTRIES, 0);
#[map(name = "fw_flow_events_v1")]
static FLOW_EVENTS: RingBuf = RingBuf::pinned(FLOW_EVENTS_BYTES, 0);
#[map(name = "fw_conntrack_v1")]
pub(crate) static CONNTRACK: LruHashMap<ConntrackKey, ConntrackValue> =
    LruHashMap::pinned(CONNTRACK_ENTRIES, 0);
#[map(name = "fw_fragments_v1")]
static FRAGMENTS: LruHashMap<FragmentKey, FragmentValue> =
    LruHashMap::pinned(MAX_FRAGMENTED_DATAGRAMS, 0);

#[map(name = "fw_scratch_v1")]
static SCRATCH: PerCpuArray<Packet> = PerCpuArray::with_max_entries(1, 0);

/// What an IP packet whose headers cannot be parsed gets: dropped (see the module doc).
pub const CANNOT_PARSE_ACTION: i32 = TC_ACT_SHOT;

/// A conntrack entry's timestamp is rewritten at most this often, so the established path
/// does not dirty the entry's cache line on every packet.
const CT_REFRESH_NS: u64 = 1_000_000_000;

const TCP_FLAG_FIN: u8 = 0x01;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_RST: u8 = 0x04;
const TCP_FLAG_ACK: u8 = 0x10;

#[classifier]
pub fn fw_pol_to_pod(ctx: TcContext) -> i32 {
    enforce(&ctx, PolicyDir::Ingress)
}

#[classifier]
pub fn fw_pol_from_pod(ctx: TcContext) -> i32 {
    enforce(&ctx, PolicyDir::Egress)
}

/// The facts about an IP packet that policy and conntrack look at.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Packet {
    /// The L3 facts, written by the parser.
    headers: IpHeaders,
    l4: L4Facts,
    fragment: Fragment,
}

/// The L4 facts of a packet; aligned and 16 bytes long so that [`L4Facts::reset`] is two
/// 8-byte stores.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct L4Facts {
    src_port: u16,
    dst_port: u16,
    /// ICMP echo request or reply (`is_echo`): its identifier.
    echo_id: u16,
    /// TCP, UDP or SCTP with its header present.
    has_ports: bool,
    /// ICMP in IPv4 or ICMPv6 in IPv6, with its header present.
    is_icmp: bool,
    is_echo: bool,
    icmp_type: u8,
    icmp_code: u8,
    tcp_flags: u8,
    _pad: [u8; 4],
}

const _: () = assert!(core::mem::size_of::<L4Facts>() == 16);

impl L4Facts {
    /// Makes every fact false or zero with two 8-byte stores. Volatile, because LLVM merges
    /// plain zero stores (or a struct copy of zeroes) into a memset, which the BPF backend
    /// emits as a call to a byte-wise loop.
    #[inline(always)]
    fn reset(&mut self) {
        let words = (self as *mut L4Facts).cast::<u64>();
        // SAFETY: L4Facts is 16 bytes, 8-byte aligned, and all-zero is a valid value of it.
        unsafe {
            words.write_volatile(0);
            words.add(1).write_volatile(0);
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    Whole,
    First(u32),
    Later(u32),
}

/// The outcome of reading a frame.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    NonIp,
    Ip,
    CannotParse,
}

/// Who a flow event is about, besides the packet.
struct EventMeta {
    endpoint_id: u32,
    ifindex: u32,
    rule_index: u32,
    reason: VerdictReason,
    dir: u8,
    kind: u8,
}

#[inline(always)]
fn enforce(ctx: &TcContext, dir: PolicyDir) -> i32 {
    // SAFETY: a TC program's context is the kernel's __sk_buff.
    let ifindex = unsafe { (*(ctx.as_ptr() as *const __sk_buff)).ifindex };
    parse::ensure_linear_headers(ctx);
    // The packet's facts live in a per-CPU scratch slot rather than on the stack: the
    // stack is small, and values read back from a map are the same for every parse path,
    // which keeps the verifier's path count down.
    let Some(packet) = SCRATCH.get_ptr_mut(0) else {
        count_verdict(ctx, dir, VerdictReason::DenyCannotParse);
        return CANNOT_PARSE_ACTION;
    };
    // SAFETY: a per-CPU slot is only used by the CPU running this program, for this run.
    let packet = unsafe { &mut *packet };
    let read = read_packet(ctx, packet);
    // Most packets belong to an admitted flow: conntrack alone decides them, before the
    // endpoint lookup. Its entries are scoped by this interface, and only this program
    // makes them, so a hit means the interface was a policed endpoint when the flow began.
    let now = coarse_ns();
    let later_fragment = matches!(packet.fragment, Fragment::Later(_));
    if read == Read::Ip && !later_fragment && established(packet, ifindex, now) {
        remember_first_fragment(packet, ifindex, now);
        return finish(ctx, dir, VerdictReason::AllowEstablished);
    }
    // SAFETY: the value is copied out at once; userspace replaces entries, never edits them.
    let Some(endpoint) = (unsafe { ENDPOINTS.get(&ifindex) }).copied() else {
        return finish(ctx, dir, VerdictReason::AllowUnknownInterface);
    };
    match read {
        Read::NonIp => return finish(ctx, dir, VerdictReason::AllowNonIp),
        Read::CannotParse => {
            count_verdict(ctx, dir, VerdictReason::DenyCannotParse);
            return CANNOT_PARSE_ACTION;
        }
        Read::Ip => {}
    }
    if is_neighbor_discovery(packet) {
        return finish(ctx, dir, VerdictReason::AllowNeighborDiscovery);
    }
    let policed = endpoint.flags & dir.policy_flag() != 0;
    if let Fragment::Later(id) = packet.fragment {
        let reason = if !policed {
            VerdictReason::AllowNoPolicy
        } else if first_fragment_passed(packet, id, ifindex) {
            VerdictReason::AllowFragment
        } else {
            VerdictReason::DenyOrphanFragment
        };
        return decided(ctx, dir, packet, &endpoint, ifindex, reason, EVENT_NO_RULE);
    }
    let (reason, rule_index, rule_slot) = if policed {
        walk_table(packet, &endpoint, dir, ifindex)
    } else {
        (VerdictReason::AllowNoPolicy, EVENT_NO_RULE, CT_NO_RULE)
    };
    if !reason.is_drop() {
        track(packet, ifindex, now, rule_slot);
        remember_first_fragment(packet, ifindex, now);
    }
    decided(ctx, dir, packet, &endpoint, ifindex, reason, rule_index)
}

/// Counts the verdict, emits a deny event when it is a drop, and returns the TC action.
#[inline(always)]
fn decided(
    ctx: &TcContext,
    dir: PolicyDir,
    packet: &Packet,
    endpoint: &EndpointEntry,
    ifindex: u32,
    reason: VerdictReason,
    rule_index: u32,
) -> i32 {
    if reason.is_drop() {
        let meta = EventMeta {
            endpoint_id: endpoint.endpoint_id,
            ifindex,
            rule_index,
            reason,
            dir: dir as u8,
            kind: EVENT_DENY,
        };
        emit_event(packet, &meta);
    }
    finish(ctx, dir, reason)
}

#[inline(always)]
fn finish(ctx: &TcContext, dir: PolicyDir, reason: VerdictReason) -> i32 {
    count_verdict(ctx, dir, reason);
    if reason.is_drop() {
        TC_ACT_SHOT
    } else {
        TC_ACT_OK
    }
}

#[inline(always)]
fn count_verdict(ctx: &TcContext, dir: PolicyDir, reason: VerdictReason) {
    add_to(&VERDICTS, verdict_index(dir, reason), ctx.len());
}

#[inline(always)]
fn add_to(map: &PerCpuArray<PacketCounter>, index: u32, bytes: u32) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot is only written by the CPU that owns it.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += u64::from(bytes);
        }
    }
}

#[inline(always)]
fn coarse_ns() -> u64 {
    // SAFETY: no preconditions; TC programs may call it.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Fills `packet` from the frame's headers.
#[inline(always)]
fn read_packet(ctx: &TcContext, packet: &mut Packet) -> Read {
    match parse::parse(ctx, &mut packet.headers) {
        Ok(Parsed::NonIp) => return Read::NonIp,
        Ok(Parsed::Ip) => {}
        Err(_) => return Read::CannotParse,
    }
    let headers = &packet.headers;
    if parse::l4_header_present(ctx, headers).is_err() {
        return Read::CannotParse;
    }
    let (family, protocol, l4_offset) = (headers.family, headers.protocol, headers.l4_offset);
    packet.l4.reset();
    packet.fragment = match (packet.headers.fragment_id, l4_offset) {
        (None, _) => Fragment::Whole,
        (Some(id), Some(_)) => Fragment::First(id),
        (Some(id), None) => Fragment::Later(id),
    };
    let Some(l4) = l4_offset else {
        return Read::Ip;
    };
    let icmp_protocol = match family {
        Family::V4 => ip_proto::ICMP,
        Family::V6 => ip_proto::ICMPV6,
    };
    match protocol {
        ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP => {
            // l4_header_present checked the first 8 (UDP, SCTP) or 20 (TCP) bytes.
            let Ok(ports) = parse::read::<4>(ctx, l4) else {
                return Read::CannotParse;
            };
            packet.l4.has_ports = true;
            packet.l4.src_port = u16::from_be_bytes([ports[0], ports[1]]);
            packet.l4.dst_port = u16::from_be_bytes([ports[2], ports[3]]);
            if protocol == ip_proto::TCP {
                let Ok(flags) = parse::read::<1>(ctx, l4 + 13) else {
                    return Read::CannotParse;
                };
                packet.l4.tcp_flags = flags[0];
            }
        }
        protocol if protocol == icmp_protocol => {
            let Ok(icmp) = parse::read::<8>(ctx, l4) else {
                return Read::CannotParse;
            };
            packet.l4.is_icmp = true;
            packet.l4.icmp_type = icmp[0];
            packet.l4.icmp_code = icmp[1];
            let echo = match family {
                Family::V4 => matches!(
                    icmp[0],
                    icmp_type::V4_ECHO_REQUEST | icmp_type::V4_ECHO_REPLY
                ),
                Family::V6 => matches!(
                    icmp[0],
                    icmp_type::V6_ECHO_REQUEST | icmp_type::V6_ECHO_REPLY
                ),
            };
            if echo {
                packet.l4.is_echo = true;
                packet.l4.echo_id = u16::from_be_bytes([icmp[4], icmp[5]]);
            }
        }
        _ => {}
    }
    Read::Ip
}

#[inline(always)]
fn is_neighbor_discovery(packet: &Packet) -> bool {
    packet.l4.is_icmp
        && packet.headers.protocol == ip_proto::ICMPV6
        && (icmp_type::V6_ROUTER_SOLICITATION..=icmp_type::V6_NEIGHBOR_ADVERTISEMENT + 1)
            .contains(&packet.l4.icmp_type)
        && packet.headers.hop_limit == 255
}

#[inline(always)]
fn fragment_key(packet: &Packet, id: u32, ifindex: u32) -> FragmentKey {
    FragmentKey {
        src: packet.headers.src,
        dst: packet.headers.dst,
        id,
        scope: ifindex,
        protocol: packet.headers.protocol,
        _pad: [0; 3],
    }
}

#[inline(never)]
fn first_fragment_passed(packet: &Packet, id: u32, ifindex: u32) -> bool {
    let key = fragment_key(packet, id, ifindex);
    // SAFETY: the value is copied out at once.
    match unsafe { FRAGMENTS.get(&key) } {
        Some(seen) => coarse_ns().saturating_sub(seen.first_seen_ns) <= FRAGMENT_TIMEOUT_NS,
        None => false,
    }
}

/// Records a passed first fragment (inline: most packets are whole, and pay one test).
#[inline(always)]
fn remember_first_fragment(packet: &Packet, ifindex: u32, now: u64) {
    if let Fragment::First(id) = packet.fragment {
        remember_fragmented(packet, id, ifindex, now);
    }
}

#[inline(never)]
fn remember_fragmented(packet: &Packet, id: u32, ifindex: u32, now: u64) {
    let key = fragment_key(packet, id, ifindex);
    // A full LRU evicts the oldest datagram; nothing to handle on failure: its later
    // fragments are then dropped as orphans, which fails closed.
    let _ = FRAGMENTS.insert(&key, &FragmentValue { first_seen_ns: now }, 0);
}

/// The conntrack key of the packet's flow and whether the packet goes hi → lo; `None` for
/// packets that are not tracked (ICMP other than echo).
#[inline(always)]
fn conntrack_key(packet: &Packet, ifindex: u32) -> Option<(ConntrackKey, bool)> {
    let (src_port, dst_port) = if packet.l4.has_ports {
        (packet.l4.src_port, packet.l4.dst_port)
    } else if packet.l4.is_echo {
        (packet.l4.echo_id, packet.l4.echo_id)
    } else if packet.l4.is_icmp {
        return None;
    } else {
        (0, 0)
    };
    Some(ConntrackKey::new(
        &packet.headers.src,
        src_port,
        &packet.headers.dst,
        dst_port,
        packet.headers.protocol,
        ifindex,
    ))
}

/// Whether the packet belongs to a live admitted flow; refreshes the entry if so.
#[inline(never)]
fn established(packet: &Packet, ifindex: u32, now: u64) -> bool {
    let Some((key, from_hi)) = conntrack_key(packet, ifindex) else {
        return false;
    };
    let Some(entry) = CONNTRACK.get_ptr_mut(&key) else {
        return false;
    };
    // SAFETY: a map value pointer stays valid for the program's run; concurrent updates of
    // these plain fields race benignly (the worst case is a lost refresh).
    let entry = unsafe { &mut *entry };
    let idle = now.saturating_sub(entry.last_seen_ns);
    if idle > timeout_ns(key.protocol, entry.tcp_state) {
        return false;
    }
    let mut state = entry.tcp_state;
    if key.protocol == ip_proto::TCP {
        let flags = packet.l4.tcp_flags;
        let closed = state & TCP_RST != 0 || state & (TCP_FIN_LO | TCP_FIN_HI) != 0;
        if flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN && closed {
            // A new connection reusing the ports of a closed one: judge it afresh.
            return false;
        }
        let opened_by_hi = entry.flags & CT_OPENED_BY_HI != 0;
        if from_hi != opened_by_hi {
            state |= TCP_ESTABLISHED;
        }
        if flags & TCP_FLAG_FIN != 0 {
            state |= if from_hi { TCP_FIN_HI } else { TCP_FIN_LO };
        }
        if flags & TCP_FLAG_RST != 0 {
            state |= TCP_RST;
        }
    }
    if state != entry.tcp_state || idle >= CT_REFRESH_NS {
        entry.tcp_state = state;
        entry.last_seen_ns = now;
    }
    true
}

/// Records an admitted new flow.
#[inline(never)]
fn track(packet: &Packet, ifindex: u32, now: u64, rule_slot: u32) {
    let Some((key, from_hi)) = conntrack_key(packet, ifindex) else {
        return;
    };
    let tcp_state = if key.protocol != ip_proto::TCP {
        0
    } else if packet.l4.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN {
        TCP_SYN_SEEN
    } else {
        // Picked up mid-stream (the flow predates the entry, or the entry expired).
        TCP_ESTABLISHED
    };
    // SAFETY: every field is an integer or an array of them: all zero is a valid value.
    // Built from all zeros, its 19-byte reserved array is no longer zeroed by a call to the
    // byte-wise `memset`, as it was in a field-by-field literal.
    let mut value: ConntrackValue = unsafe { core::mem::zeroed() };
    value.last_seen_ns = now;
    value.tcp_state = tcp_state;
    value.flags = if from_hi { CT_OPENED_BY_HI } else { 0 };
    value.rule_slot = rule_slot;
    // An LRU map makes room by evicting; a failure leaves the flow untracked, so its next
    // packet is judged by the rules again: fail closed, never open.
    let _ = CONNTRACK.insert(&key, &value, 0);
}

/// The set bitmap of `addr`: its class's, or the never-written (empty) bitmap of
/// [`CLASS_NONE`] when it is in no set. `None` only if the classes map cannot be read.
#[inline(always)]
fn set_bitmap(addr: &[u8; 16]) -> Option<*const SetBitmap> {
    // SAFETY: the value is copied out at once.
    let class = match unsafe { IPSET_HOSTS.get(addr) } {
        Some(class) => *class,
        None => match IPSET_NETS.get(&Key::new(128, *addr)) {
            Some(class) => *class,
            None => CLASS_NONE,
        },
    };
    IPSET_CLASSES
        .get_ptr(class)
        .or_else(|| IPSET_CLASSES.get_ptr(CLASS_NONE))
}

/// Rule heads one step of the walk looks at most: fewer steps, fewer callback calls.
const HEADS_PER_STEP: u32 = 8;

/// What the rule walk shares with its callbacks (on the caller's stack).
#[repr(C)]
struct Walk {
    src_sets: *const SetBitmap,
    dst_sets: *const SetBitmap,
    packet: *const Packet,
    /// [`SetBitmap::presence`] of the two bitmaps.
    src_presence: u32,
    dst_presence: u32,
    endpoint_id: u32,
    ifindex: u32,
    dir: u32,
    start: u32,
    len: u32,
    /// The table indices of the block being walked that are still to look at: `next..to`.
    next: u32,
    to: u32,
    /// Out: the deciding action (0 while none), the deciding entry's index in the table,
    /// and the index flow events name (see [`event_index`]).
    action: u32,
    index: u32,
    event_index: u32,
}

/// Walks the endpoint's table for `dir`: (reason, rule index in the table or
/// EVENT_NO_RULE, rule slot or CT_NO_RULE). Block by block: a block whose summary rules
/// the packet out is skipped whole; in the others, rule heads first, then full rules.
#[inline(never)]
fn walk_table(
    packet: &Packet,
    endpoint: &EndpointEntry,
    dir: PolicyDir,
    ifindex: u32,
) -> (VerdictReason, u32, u32) {
    let table = endpoint.tables[dir as usize];
    if table.len > MAX_RULES_PER_TABLE || table.start.saturating_add(table.len) > MAX_RULES {
        return (VerdictReason::DenyBadTable, EVENT_NO_RULE, CT_NO_RULE);
    }
    let (Some(src_sets), Some(dst_sets)) = (
        set_bitmap(&packet.headers.src),
        set_bitmap(&packet.headers.dst),
    ) else {
        return (VerdictReason::DenyBadTable, EVENT_NO_RULE, CT_NO_RULE);
    };
    // SAFETY: both point at map values, valid for the program's run.
    let (src_presence, dst_presence) = unsafe { ((*src_sets).presence(), (*dst_sets).presence()) };
    let mut walk = Walk {
        src_sets,
        dst_sets,
        packet,
        src_presence,
        dst_presence,
        endpoint_id: endpoint.endpoint_id,
        ifindex,
        dir: dir as u32,
        start: table.start,
        len: table.len,
        next: 0,
        to: 0,
        action: 0,
        index: EVENT_NO_RULE,
        event_index: EVENT_NO_RULE,
    };
    if table.len > 0 {
        let first = table.start / RULE_BLOCK_SLOTS;
        let last = (table.start + table.len - 1) / RULE_BLOCK_SLOTS;
        // SAFETY: the callback is a BPF function taking (index, ctx) and `walk` outlives
        // the call.
        unsafe {
            bpf_loop(
                last - first + 1,
                walk_block as *mut c_void,
                (&mut walk as *mut Walk).cast(),
                0,
            );
        }
    }
    match walk.action as u8 {
        ACTION_ALLOW => (
            VerdictReason::AllowRule,
            walk.event_index,
            table.start + walk.index,
        ),
        ACTION_DENY => (VerdictReason::DenyRule, walk.event_index, CT_NO_RULE),
        0 if endpoint.flags & dir.default_allow_flag() != 0 => {
            (VerdictReason::AllowDefault, EVENT_NO_RULE, CT_NO_RULE)
        }
        0 => (VerdictReason::DenyDefault, EVENT_NO_RULE, CT_NO_RULE),
        _ => (VerdictReason::DenyBadTable, EVENT_NO_RULE, CT_NO_RULE),
    }
}

/// One block of the table: skipped when its summary rules the packet out, else walked
/// step by step (see [`walk_step`]). 0 to go on, 1 to stop.
#[inline(never)]
extern "C" fn walk_block(step: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `Walk` walk_table gave it.
    let walk = unsafe { &mut *(ctx as *mut Walk) };
    let block = walk.start / RULE_BLOCK_SLOTS + step as u32;
    let Some(summary) = RULE_BLOCKS.get(block) else {
        walk.action = u32::MAX;
        return 1;
    };
    // SAFETY: as in walk_step.
    let (packet, src_sets, dst_sets) = unsafe { (&*walk.packet, &*walk.src_sets, &*walk.dst_sets) };
    if summary.excludes_protocol(packet.headers.protocol)
        || fw_side_rules_out(&summary.source, src_sets, walk.src_presence) != 0
        || fw_side_rules_out(&summary.destination, dst_sets, walk.dst_presence) != 0
    {
        return 0;
    }
    let first_slot = block * RULE_BLOCK_SLOTS;
    walk.next = first_slot.max(walk.start) - walk.start;
    walk.to = (first_slot + RULE_BLOCK_SLOTS).min(walk.start + walk.len) - walk.start;
    // Every step moves `next` on by at least one rule: as many steps as rules is enough.
    // SAFETY: as in walk_table.
    unsafe {
        bpf_loop(walk.to - walk.next, walk_step as *mut c_void, ctx, 0);
    }
    i64::from(walk.action != 0)
}

/// Whether no rule of a block can match an address with these sets on this side: 1 if
/// none can. A global function, like [`fw_rule_matches`] (see there).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fw_side_rules_out(
    side: *const BlockSide,
    sets: *const SetBitmap,
    presence: u32,
) -> u32 {
    if side.is_null() || sets.is_null() {
        return 0;
    }
    // SAFETY: not null, and the verifier proves every caller passes memory of both types'
    // sizes (map values here).
    let (side, sets) = unsafe { (&*side, &*sets) };
    u32::from(side_rules_out(side, sets, presence))
}

#[inline(always)]
fn side_rules_out(side: &BlockSide, sets: &SetBitmap, presence: u32) -> bool {
    if side.filtered == 0 {
        return false;
    }
    let common = side.presence & presence;
    if common == 0 {
        return true;
    }
    for w in 0..SET_BITMAP_WORDS {
        if common >> w & 1 != 0 && side.words[w] & sets.words[w] != 0 {
            return false;
        }
    }
    true
}

/// One step of a block's walk: the heads of its next [`HEADS_PER_STEP`] rules are tested
/// until one admits the packet, and that rule alone is then checked in full; the next step
/// starts after it. 0 to go on, 1 to stop.
///
/// One step checks at most one full rule, so `walk_rule` has a single call site: the
/// verifier walks a static function once per call site, and it is most of the program.
#[inline(never)]
extern "C" fn walk_step(_step: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `Walk` walk_table gave it.
    let walk = unsafe { &mut *(ctx as *mut Walk) };
    // SAFETY: as above, these point into walk_table's caller's stack frame and at map
    // values, which stay valid for the program's run.
    let (packet, src_sets, dst_sets) = unsafe { (&*walk.packet, &*walk.src_sets, &*walk.dst_sets) };
    let first = walk.next;
    let mut admitted = None;
    for offset in 0..HEADS_PER_STEP {
        let index = first.wrapping_add(offset);
        if index >= walk.to {
            break;
        }
        let Some(head) = RULE_HEADS.get(walk.start.wrapping_add(index)) else {
            walk.action = u32::MAX;
            return 1;
        };
        if head_admits(head, packet, src_sets, dst_sets) {
            admitted = Some(index);
            break;
        }
    }
    let Some(index) = admitted else {
        walk.next = first.wrapping_add(HEADS_PER_STEP);
        return i64::from(walk.next >= walk.to);
    };
    walk.next = index.wrapping_add(1);
    i64::from(walk_rule(walk) || walk.next >= walk.to)
}

#[inline(always)]
fn head_admits(head: &RuleHead, packet: &Packet, src: &SetBitmap, dst: &SetBitmap) -> bool {
    let flags = head.flags;
    let in_set = |sets: &SetBitmap, word: u8, bit: u8| {
        sets.words[usize::from(word) % SET_BITMAP_WORDS] >> (bit % 64) & 1 != 0
    };
    let in_hull = |hull: &PortRangeEntry, port: u16| {
        packet.l4.has_ports && hull.first <= port && port <= hull.last
    };
    !(flags & HEAD_PROTOCOL != 0 && head.protocol != packet.headers.protocol
        || flags & HEAD_SRC_SET != 0 && !in_set(src, head.src_word, head.src_bit)
        || flags & HEAD_DST_SET != 0 && !in_set(dst, head.dst_word, head.dst_bit)
        || flags & HEAD_SRC_PORTS != 0 && !in_hull(&head.src_ports, packet.l4.src_port)
        || flags & HEAD_DST_PORTS != 0 && !in_hull(&head.dst_ports, packet.l4.dst_port))
}

/// Checks the rule just before `walk.next` in full; counts it and logs or decides when it
/// matches. Whether the walk stops.
///
/// The index is read back from the walk, not passed: passed in a register, it reached this
/// function with a different known range from each of walk_step's 8 head positions, the
/// verifier could not prune one call's state against another's, and each policy program
/// took 291k verified instructions (2.5-3.7 s to load on kernel 6.18.44) instead of 110k
/// (51k since rule matching became a global function, see [`fw_rule_matches`]).
#[inline(never)]
fn walk_rule(walk: &mut Walk) -> bool {
    let index = walk.next.wrapping_sub(1);
    // SAFETY: as in walk_step.
    let (packet, src_sets, dst_sets) = unsafe { (&*walk.packet, &*walk.src_sets, &*walk.dst_sets) };
    let slot = walk.start.wrapping_add(index);
    let Some(rule) = RULES.get(slot) else {
        walk.action = u32::MAX;
        return true;
    };
    if fw_rule_matches(rule, packet, src_sets, dst_sets) == 0 {
        return false;
    }
    add_to(&RULE_COUNTERS, slot, 0);
    match rule.action {
        ACTION_LOG => {
            let meta = EventMeta {
                endpoint_id: walk.endpoint_id,
                ifindex: walk.ifindex,
                rule_index: event_index(rule, index),
                reason: VerdictReason::AllowRule,
                dir: walk.dir as u8,
                kind: EVENT_LOG,
            };
            emit_event(packet, &meta);
            false
        }
        action => {
            walk.action = u32::from(action);
            walk.index = index;
            walk.event_index = event_index(rule, index);
            true
        }
    }
}

/// The rule index flow events name for entry `index` of a table: the rule's own index
/// when userspace wrote it (a rule may take several entries), else the entry's.
#[inline(always)]
fn event_index(rule: &RuleEntry, index: u32) -> u32 {
    if rule.flags & RULE_INDEXED != 0 {
        u32::from(rule.rule_index)
    } else {
        index
    }
}

/// Whether the rule matches the packet: 1 if it does.
///
/// A global function (exported, never inlined, taking only pointers and scalars): the
/// kernel's verifier checks it once, on its own, and then takes every call as valid,
/// rather than checking its branches again at every call with the caller's state. Rule
/// matching and block summaries as global functions brought each policy program from 110k
/// verified instructions to 51k (load 540 -> 225 ms on kernel 6.18.44), which agent start
/// waits for. The verifier takes a global function's pointers as possibly null.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fw_rule_matches(
    rule: *const RuleEntry,
    packet: *const Packet,
    src_sets: *const SetBitmap,
    dst_sets: *const SetBitmap,
) -> u32 {
    if rule.is_null() || packet.is_null() || src_sets.is_null() || dst_sets.is_null() {
        return 0;
    }
    // SAFETY: not null, and the verifier proves every caller passes memory of each type's
    // size (map values here).
    let (rule, packet, src_sets, dst_sets) = unsafe { (&*rule, &*packet, &*src_sets, &*dst_sets) };
    u32::from(rule_matches(rule, packet, src_sets, dst_sets))
}

#[inline(always)]
fn rule_matches(
    rule: &RuleEntry,
    packet: &Packet,
    src_sets: &SetBitmap,
    dst_sets: &SetBitmap,
) -> bool {
    let flags = rule.flags;
    if flags & RULE_PROTOCOL != 0 && rule.protocol != packet.headers.protocol {
        return false;
    }
    if flags & RULE_NOT_PROTOCOL != 0 && rule.not_protocol == packet.headers.protocol {
        return false;
    }
    if flags & RULE_ICMP_TYPE != 0
        && !(packet.l4.is_icmp
            && packet.l4.icmp_type == rule.icmp_type
            && (flags & RULE_ICMP_CODE == 0 || packet.l4.icmp_code == rule.icmp_code))
    {
        return false;
    }
    if flags & RULE_NOT_ICMP_TYPE != 0
        && packet.l4.is_icmp
        && packet.l4.icmp_type == rule.not_icmp_type
        && (flags & RULE_NOT_ICMP_CODE == 0 || packet.l4.icmp_code == rule.not_icmp_code)
    {
        return false;
    }
    side_matches(
        &rule.source,
        src_sets,
        packet.l4.has_ports,
        packet.l4.src_port,
    ) && side_matches(
        &rule.destination,
        dst_sets,
        packet.l4.has_ports,
        packet.l4.dst_port,
    )
}

#[inline(always)]
fn side_matches(side: &SideConditions, sets: &SetBitmap, has_ports: bool, port: u16) -> bool {
    for i in 0..MAX_SET_MATCHES_PER_SIDE {
        if i >= side.set_count as usize {
            break;
        }
        let condition = side.sets[i];
        let member = sets.contains(condition.slot);
        let holds = match condition.kind {
            SET_MEMBER => member,
            SET_NOT_MEMBER => !member,
            _ => false,
        };
        if !holds {
            return false;
        }
    }
    if side.port_count == 0 && side.not_port_count == 0 {
        return true;
    }
    // Port conditions never hold for a packet without ports.
    if !has_ports {
        return false;
    }
    if side.port_count > 0 && !in_ranges(&side.ports, side.port_count, port) {
        return false;
    }
    !in_ranges(&side.not_ports, side.not_port_count, port)
}

#[inline(always)]
fn in_ranges(ranges: &[PortRangeEntry; MAX_PORT_RANGES_PER_SIDE], count: u8, port: u16) -> bool {
    for (i, range) in ranges.iter().enumerate() {
        if i >= count as usize {
            break;
        }
        if range.first <= port && port <= range.last {
            return true;
        }
    }
    false
}

/// Sends a flow event to userspace, written in place in the ring buffer.
#[inline(never)]
fn emit_event(packet: &Packet, meta: &EventMeta) {
    let Some(mut entry) = FLOW_EVENTS.reserve::<FlowEvent>(0) else {
        // A full ring buffer loses the event, never the verdict.
        return;
    };
    let (src_port, dst_port) = if packet.l4.has_ports {
        (packet.l4.src_port, packet.l4.dst_port)
    } else if packet.l4.is_icmp {
        (
            u16::from(packet.l4.icmp_type),
            u16::from(packet.l4.icmp_code),
        )
    } else {
        (0, 0)
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, writable FlowEvent; every field is written
    // before the entry is submitted.
    unsafe {
        (*event).src = packet.headers.src;
        (*event).dst = packet.headers.dst;
        (*event).src_port = src_port;
        (*event).dst_port = dst_port;
        (*event).protocol = packet.headers.protocol;
        (*event).direction = meta.dir;
        (*event).kind = meta.kind;
        (*event)._pad = 0;
        (*event).endpoint_id = meta.endpoint_id;
        (*event).ifindex = meta.ifindex;
        (*event).rule_index = meta.rule_index;
        (*event).reason = meta.reason as u32;
        (*event).timestamp_ns = coarse_ns();
    }
    entry.submit(0);
}
