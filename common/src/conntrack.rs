//! The connection-tracking table: one entry per flow a policy program let through, so that
//! the flow's later packets and its replies pass without walking the rules. NAT mappings
//! use the same key convention in a table of their own (`fedwall_common::nat`), which an
//! LRU map cannot be: a full LRU evicts its least recently used entry, and an idle mapping
//! evicted breaks its flow.
//!
//! # Key convention
//! A key names a flow independently of which way a packet goes, so a packet and its reply
//! find the same entry with one lookup:
//! - Addresses are 16 bytes; IPv4 is IPv4-mapped (`::ffff:a.b.c.d`, see
//!   [`crate::net::v4_mapped`]).
//! - The two (address, port) endpoints are ordered: `lo` is the one that is smaller when
//!   compared as (address bytes lexicographically, then port); see [`ConntrackKey::new`].
//!   A flow from a host to itself with equal ports has `lo == hi`.
//! - Ports are in **host byte order**. TCP, UDP and SCTP use their ports; ICMP and ICMPv6
//!   echo request and reply put the echo identifier in **both** port fields (so the reply,
//!   whose identifier is the same, finds the entry); every other protocol has both ports 0.
//! - `scope` is the ifindex of the interface whose policy program admitted the flow: a pod
//!   talking to a pod on the same node crosses two policed interfaces, and each must admit
//!   the flow on its own. NAT mappings use the ifindex of the uplink NAT runs on.

/// Name of the LRU hash of [`ConntrackKey`] → [`ConntrackValue`].
pub const CONNTRACK_MAP: &str = "fw_conntrack_v1";
/// Flows the table holds; the least recently used entries are evicted beyond it.
pub const CONNTRACK_ENTRIES: u32 = 262_144;

/// A flow, direction-independent (see the module documentation for the convention).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConntrackKey {
    pub addr_lo: [u8; 16],
    pub addr_hi: [u8; 16],
    pub port_lo: u16,
    pub port_hi: u16,
    pub protocol: u8,
    pub _pad: [u8; 3],
    pub scope: u32,
}

const _: () = assert!(core::mem::size_of::<ConntrackKey>() == 44);
const _: () = assert!(core::mem::offset_of!(ConntrackKey, protocol) % 4 == 0);
const _: () = assert!(core::mem::offset_of!(ConntrackKey, scope) == 40);

impl ConntrackKey {
    /// The key of the flow a packet `src:src_port → dst:dst_port` belongs to, and whether
    /// the packet goes from the `hi` endpoint to the `lo` one (`true`) or the other way.
    #[inline(always)]
    pub fn new(
        src: &[u8; 16],
        src_port: u16,
        dst: &[u8; 16],
        dst_port: u16,
        protocol: u8,
        scope: u32,
    ) -> (Self, bool) {
        let src_first = endpoint_le(src, src_port, dst, dst_port);
        let (addr_lo, port_lo, addr_hi, port_hi) = if src_first {
            (src, src_port, dst, dst_port)
        } else {
            (dst, dst_port, src, src_port)
        };
        let mut key = core::mem::MaybeUninit::<ConntrackKey>::uninit();
        let at = key.as_mut_ptr();
        // SAFETY: every byte of the key is written before it is read. The protocol and its
        // three padding bytes are one aligned 4-byte store (offset asserted above): written
        // as bytes, the BPF backend zeroes the padding with a call to a byte-wise memset.
        let key = unsafe {
            core::ptr::addr_of_mut!((*at).addr_lo).write(*addr_lo);
            core::ptr::addr_of_mut!((*at).addr_hi).write(*addr_hi);
            core::ptr::addr_of_mut!((*at).port_lo).write(port_lo);
            core::ptr::addr_of_mut!((*at).port_hi).write(port_hi);
            core::ptr::addr_of_mut!((*at).protocol)
                .cast::<u32>()
                .write(u32::from_ne_bytes([protocol, 0, 0, 0]));
            core::ptr::addr_of_mut!((*at).scope).write(scope);
            key.assume_init()
        };
        (key, !src_first)
    }
}

/// Whether (a, a_port) <= (b, b_port) in the key order. Compares 8 bytes at a time, as
/// big-endian numbers, which is the same as comparing the bytes in order.
#[inline(always)]
fn endpoint_le(a: &[u8; 16], a_port: u16, b: &[u8; 16], b_port: u16) -> bool {
    let half = |x: &[u8; 16], at: usize| {
        u64::from_be_bytes([
            x[at],
            x[at + 1],
            x[at + 2],
            x[at + 3],
            x[at + 4],
            x[at + 5],
            x[at + 6],
            x[at + 7],
        ])
    };
    let (a0, b0) = (half(a, 0), half(b, 0));
    if a0 != b0 {
        return a0 < b0;
    }
    let (a1, b1) = (half(a, 8), half(b, 8));
    if a1 != b1 {
        return a1 < b1;
    }
    a_port <= b_port
}

/// What the table knows about a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConntrackValue {
    /// `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC_COARSE) when a packet last refreshed
    /// the entry; see [`timeout_ns`] for how long it lives after that.
    pub last_seen_ns: u64,
    /// Where NAT mappings were before they got their own table; kept, always zero, so that
    /// the pinned `_v1` table of a running node reads the same after an upgrade (renaming
    /// the map would drop every tracked flow, and with it replies an ingress policy denies).
    pub _unused: [u8; 19],
    /// TCP progress: `TCP_*` bits. 0 for other protocols.
    pub tcp_state: u8,
    /// `CT_*` bits.
    pub flags: u8,
    pub _pad: [u8; 3],
    /// The slot in `fw_rules_v1` of the rule that admitted the flow, or [`CT_NO_RULE`]
    /// (no policy in that direction, or the table's default). For inspection only: the
    /// slot may hold another rule after a table replacement.
    pub rule_slot: u32,
    pub _pad2: u32,
}

const _: () = assert!(core::mem::size_of::<ConntrackValue>() == 40);
const _: () = assert!(core::mem::offset_of!(ConntrackValue, tcp_state) == 27);
const _: () = assert!(core::mem::offset_of!(ConntrackValue, rule_slot) == 32);

/// `rule_slot` when no rule admitted the flow.
pub const CT_NO_RULE: u32 = u32::MAX;

/// `flags`: the flow's first packet went from `hi` to `lo` (so `hi` opened it).
pub const CT_OPENED_BY_HI: u8 = 1;

/// `tcp_state`: the opener's SYN was seen.
pub const TCP_SYN_SEEN: u8 = 1;
/// The other side's SYN (+ACK) was seen, or the flow was picked up mid-stream: established.
pub const TCP_ESTABLISHED: u8 = 2;
/// A FIN from `lo`.
pub const TCP_FIN_LO: u8 = 4;
/// A FIN from `hi`.
pub const TCP_FIN_HI: u8 = 8;
/// A RST from either side.
pub const TCP_RST: u8 = 16;

const SECOND: u64 = 1_000_000_000;
/// A TCP flow whose handshake has not completed.
pub const TIMEOUT_TCP_HANDSHAKE_NS: u64 = 30 * SECOND;
pub const TIMEOUT_TCP_ESTABLISHED_NS: u64 = 3600 * SECOND;
/// One side closed (FIN): the other may go on sending for a while.
pub const TIMEOUT_TCP_HALF_CLOSED_NS: u64 = 300 * SECOND;
/// Both sides closed, or a reset.
pub const TIMEOUT_TCP_CLOSED_NS: u64 = 10 * SECOND;
pub const TIMEOUT_UDP_NS: u64 = 60 * SECOND;
pub const TIMEOUT_ICMP_NS: u64 = 30 * SECOND;
pub const TIMEOUT_OTHER_NS: u64 = 60 * SECOND;

/// How long after `last_seen_ns` an entry of this protocol and TCP state stays valid.
#[inline(always)]
pub const fn timeout_ns(protocol: u8, tcp_state: u8) -> u64 {
    match protocol {
        crate::net::ip_proto::TCP => {
            let both_closed = tcp_state & (TCP_FIN_LO | TCP_FIN_HI) == TCP_FIN_LO | TCP_FIN_HI;
            if tcp_state & TCP_RST != 0 || both_closed {
                TIMEOUT_TCP_CLOSED_NS
            } else if tcp_state & (TCP_FIN_LO | TCP_FIN_HI) != 0 {
                TIMEOUT_TCP_HALF_CLOSED_NS
            } else if tcp_state & TCP_ESTABLISHED != 0 {
                TIMEOUT_TCP_ESTABLISHED_NS
            } else {
                TIMEOUT_TCP_HANDSHAKE_NS
            }
        }
        crate::net::ip_proto::UDP => TIMEOUT_UDP_NS,
        crate::net::ip_proto::ICMP | crate::net::ip_proto::ICMPV6 => TIMEOUT_ICMP_NS,
        _ => TIMEOUT_OTHER_NS,
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), integer fields and byte arrays only, padding explicit.
unsafe impl aya::Pod for ConntrackKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for ConntrackValue {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::v4_mapped;

    #[test]
    fn a_packet_and_its_reply_share_one_key() {
        let a = v4_mapped([192, 0, 2, 1]);
        let b = v4_mapped([192, 0, 2, 2]);
        let (forward, forward_from_hi) = ConntrackKey::new(&a, 40000, &b, 80, 6, 7);
        let (reply, reply_from_hi) = ConntrackKey::new(&b, 80, &a, 40000, 6, 7);
        assert_eq!(forward, reply);
        assert_ne!(forward_from_hi, reply_from_hi);
        assert_eq!(forward.addr_lo, a, "the smaller address is lo");
        assert_eq!(forward.port_lo, 40000, "ports travel with their address");
    }

    #[test]
    fn equal_addresses_are_ordered_by_port() {
        let a = v4_mapped([192, 0, 2, 1]);
        let (key, from_hi) = ConntrackKey::new(&a, 9000, &a, 80, 17, 1);
        assert_eq!((key.port_lo, key.port_hi), (80, 9000));
        assert!(from_hi);
    }

    #[test]
    fn closing_tcp_flows_time_out_sooner() {
        let established = timeout_ns(6, TCP_SYN_SEEN | TCP_ESTABLISHED);
        let half = timeout_ns(6, TCP_ESTABLISHED | TCP_FIN_LO);
        let closed = timeout_ns(6, TCP_ESTABLISHED | TCP_FIN_LO | TCP_FIN_HI);
        let reset = timeout_ns(6, TCP_ESTABLISHED | TCP_RST);
        assert!(established > half && half > closed);
        assert_eq!(closed, reset);
    }
}
