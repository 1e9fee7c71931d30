//! NAT-outgoing layouts: the prefix map that says which addresses are in IP pools (and which
//! are this node's), the per-uplink configuration, the flow table, the fragment table,
//! and the NAT counters.
//!
//! # Flows ([`NAT_FLOWS_MAP`])
//! An array of [`NAT_FLOW_SLOTS`] slots of one cache line each, not a hash: a translated
//! flow is one slot, found from either direction with the same one random memory access
//! (a hash needs one per direction, and a new flow pays a lookup and two inserts: three
//! random accesses into a table of 100,000 flows, most of a new mapping's cost).
//! A flow `pod:p → peer:q` leaving through uplink `u` (scope: its ifindex) with the port
//! `n` lives in slot [`slot_of`]`(`[`peer_hash`]`(peer, q, protocol, u), n)`:
//! - a reply `peer:q → node:n` computes the slot directly;
//! - the pod's packets compute the port the flow would have first been given,
//!   `port_first + `[`port_offset`]`(…) % span`, its *home*, and the flow's port is the
//!   `k`th after it (`k` < [`NAT_FLOW_PROBES`]): the home slot's `homed` bits say which `k`
//!   hold (or held) flows of that home, so a lookup reads those slots only, all within a
//!   few cache lines of the home.
//!
//! A port is taken for `peer:q` while its slot holds a live flow: a new flow takes the
//! first of its home's `k`s whose slot is expired or never used, claimed by an atomic
//! exchange of `last_seen_ns` (the one whose exchange returns the expired value owns it; a
//! loser only refreshed a live flow's timestamp). An expired slot needs no removal: the
//! next claim reuses it. A flow that came in to a pod's own address is recorded the same
//! way ([`FLOW_PASS_INBOUND`]) as the flow the pod's answers make. ICMP echo uses the
//! identifier as the pod's port and the NAT port, and 0 as the peer's. The TCP FIN bits name
//! the flow's sides: [`NAT_TCP_FIN_INSIDE`] is a FIN from the pod, [`NAT_TCP_FIN_OUTSIDE`]
//! one from the peer.
//!
//! # Fragments ([`NAT_FRAGMENTS_MAP`])
//! Only a datagram's first fragment carries ports. When it is translated, its datagram
//! (addresses, protocol, identification, uplink) is remembered with the address its later
//! fragments get; they are rewritten alike (their L4 checksum, in the first fragment, was
//! fixed there). A later fragment that overtook its first one cannot be matched: on egress,
//! from a natOutgoing pool to where it would be translated, it is dropped and counted
//! ([`NatReason::DropFragmentUnknown`]) rather than leak the pod's address; on ingress it
//! passes (it may be the node's own). Identifications are kept: two pods' datagrams to one
//! peer with equal identifications at the same moment could be confused by the peer's
//! reassembly, as with any NAT that does not reassemble.

use crate::conntrack::{TCP_FIN_HI, TCP_FIN_LO, TIMEOUT_TCP_HANDSHAKE_NS, timeout_ns};

/// Name of the LPM trie of 16-byte (IPv4-mapped) prefixes → [`NatPrefix`].
pub const NAT_PREFIXES_MAP: &str = "fw_nat_prefixes_v1";
/// IP pools plus node addresses the trie holds.
pub const NAT_PREFIX_ENTRIES: u32 = 4096;

/// Name of the hash of uplink ifindex → [`NatUplink`].
pub const NAT_UPLINKS_MAP: &str = "fw_nat_uplinks_v1";
pub const NAT_UPLINK_ENTRIES: u32 = 64;

/// Name of the per-CPU array of packet counters indexed by [`NatReason`].
pub const NAT_STATS_MAP: &str = "fw_nat_stats_v1";

/// What a prefix of the trie is. Several can hold at once (a node address inside a pool).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatPrefix {
    /// `PREFIX_*` bits.
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<NatPrefix>() == 4);

/// The prefix is an IP pool (enabled or disabled): traffic to it is never translated.
pub const PREFIX_POOL: u32 = 1;
/// The pool has `natOutgoing: true`: traffic from it leaving the node is translated.
pub const PREFIX_NAT_OUTGOING: u32 = 2;
/// The pool is `disabled` (it describes another cluster's range).
pub const PREFIX_DISABLED: u32 = 4;
/// The prefix is an address of this node: traffic to it is never translated.
pub const PREFIX_NODE_ADDRESS: u32 = 8;

/// Whether a flow `src → dst` is translated, given what the trie says of each address (the
/// flags of its longest matching prefix, `None` when none matches): Calico's rule. The
/// destination is only looked up for a source in a natOutgoing pool (most traffic on an
/// uplink is the node's own: one lookup, not two).
#[inline(always)]
pub fn translates(src: Option<NatPrefix>, dst: impl FnOnce() -> Option<NatPrefix>) -> bool {
    let from_nat_pool = match src {
        Some(p) => p.flags & PREFIX_NAT_OUTGOING != 0,
        None => false,
    };
    // Any match at all (pool of either kind, or a node address) excludes the destination.
    from_nat_pool && dst().is_none()
}

/// An uplink: the address translated flows leave with, per family, and the ports to use.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatUplink {
    /// IPv4-mapped; meaningful with [`UPLINK_HAS_V4`].
    pub addr_v4: [u8; 16],
    /// Meaningful with [`UPLINK_HAS_V6`].
    pub addr_v6: [u8; 16],
    /// First and last source port (and ICMP echo identifier) handed out, host byte order.
    pub port_first: u16,
    pub port_last: u16,
    /// `UPLINK_*` bits.
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<NatUplink>() == 40);

pub const UPLINK_HAS_V4: u32 = 1;
pub const UPLINK_HAS_V6: u32 = 2;

/// Default port range: above Linux's default ephemeral range (`ip_local_port_range`
/// 32768-60999), so a translated flow never takes the port of one of the node's own
/// connections to the same peer (both are keyed by the node's address in conntrack).
pub const NAT_PORT_FIRST: u16 = 61000;
pub const NAT_PORT_LAST: u16 = 65535;

/// Name of the array of [`NatFlow`] slots (see the module documentation).
pub const NAT_FLOWS_MAP: &str = "fw_nat_flows_v1";
/// Slots in the flow table: a power of two (a slot index is a hash masked to it), 16 MiB.
pub const NAT_FLOW_SLOTS: u32 = 1 << 18;
/// Ports a new flow tries from its home before it is dropped; also the most slots a lookup
/// reads. At most 64 (a bit each in `homed`).
pub const NAT_FLOW_PROBES: u32 = 32;

/// A flow NAT knows: translated ([`FLOW_TRANSLATED`]), or one that came in to a pod's own
/// address ([`FLOW_PASS_INBOUND`]).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatFlow {
    /// `bpf_ktime_get_coarse_ns()` when a packet last refreshed the flow; 0: never used.
    /// A claim exchanges it atomically.
    pub last_seen_ns: u64,
    /// Bit `k`: a flow whose home is this slot was put `k` ports further. Only ever set
    /// (an expired flow's bit costs a lookup one slot read more).
    pub homed: u64,
    /// The pod's address and port (IPv4-mapped; echo: its identifier).
    pub pod: [u8; 16],
    /// The peer's address and port (echo: 0).
    pub peer: [u8; 16],
    pub pod_port: u16,
    pub peer_port: u16,
    /// The port (echo: identifier) the flow leaves with.
    pub port: u16,
    pub protocol: u8,
    /// `FLOW_*`; 0 while a claim writes the slot.
    pub flags: u8,
    /// The uplink's ifindex.
    pub scope: u32,
    /// TCP progress: `TCP_*` bits of [`crate::conntrack`], FINs as [`NAT_TCP_FIN_INSIDE`]
    /// and [`NAT_TCP_FIN_OUTSIDE`].
    pub tcp_state: u8,
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<NatFlow>() == 64);

impl NatFlow {
    /// Whether the flow still holds at `now` (an expired one is free for a claim).
    #[inline(always)]
    pub const fn live(&self, now: u64) -> bool {
        self.last_seen_ns != 0
            && now.saturating_sub(self.last_seen_ns) <= timeout_ns(self.protocol, self.tcp_state)
    }
}

// The kernel reads and writes the addresses as 8-byte words (see [`AddrWords`]).
const _: () = assert!(core::mem::offset_of!(NatFlow, pod) % 8 == 0);
const _: () = assert!(core::mem::offset_of!(NatFlow, peer) % 8 == 0);

/// The flow's packets are translated: source to the uplink's address and `port` on the
/// way out, destination back to `pod:pod_port` on the way in.
pub const FLOW_TRANSLATED: u8 = 1;
/// A flow that came in to a pod's own address (a remote cluster reaching it): its packets
/// pass untranslated both ways, as Calico only masquerades connections the pod opens.
pub const FLOW_PASS_INBOUND: u8 = 2;

/// One step of the slot hashes: multiply-xorshift (cheap in BPF, and every input bit
/// reaches the low bits a slot index keeps).
#[inline(always)]
const fn mix(h: u32, word: u32) -> u32 {
    let h = (h ^ word).wrapping_mul(0x9E37_79B1);
    h ^ (h >> 15)
}

/// An address as two 8-byte little-endian words: how the slot hashes read it (the kernel
/// with two aligned loads, where bytes would cost sixteen).
pub type AddrWords = [u64; 2];

/// `addr`'s words, from its bytes.
#[inline(always)]
pub fn addr_words(addr: &[u8; 16]) -> AddrWords {
    let word = |i: usize| {
        u64::from_le_bytes([
            addr[i],
            addr[i + 1],
            addr[i + 2],
            addr[i + 3],
            addr[i + 4],
            addr[i + 5],
            addr[i + 6],
            addr[i + 7],
        ])
    };
    [word(0), word(8)]
}

#[inline(always)]
const fn mix_addr(h: u32, addr: AddrWords) -> u32 {
    let h = mix(mix(h, addr[0] as u32), (addr[0] >> 32) as u32);
    mix(mix(h, addr[1] as u32), (addr[1] >> 32) as u32)
}

/// The hash of a flow's peer side: with the flow's port, it names the flow's slot.
#[inline(always)]
pub const fn peer_hash(peer: AddrWords, peer_port: u16, protocol: u8, scope: u32) -> u32 {
    let h = mix_addr(0x2545_F491, peer);
    let h = mix(h, ((peer_port as u32) << 16) | protocol as u32);
    mix(h, scope).wrapping_mul(0x85EB_CA77)
}

/// Where in the uplink's port range a flow's home is, before `% span`: a hash of the whole
/// flow as the pod sends it.
#[inline(always)]
pub const fn port_offset(pod: AddrWords, pod_port: u16, peer_hash: u32) -> u32 {
    let h = mix_addr(peer_hash, pod);
    mix(h, pod_port as u32).wrapping_mul(0xC2B2_AE3D) >> 8
}

/// The slot of the flow with the peer side `peer_hash` and the port `port`.
#[inline(always)]
pub const fn slot_of(peer_hash: u32, port: u16) -> u32 {
    peer_hash.wrapping_add(port as u32) & (NAT_FLOW_SLOTS - 1)
}

/// Name of the LRU hash of [`NatFragmentKey`] → [`NatFragment`]. LRU is right here: an
/// evicted entry costs one datagram, never a flow.
pub const NAT_FRAGMENTS_MAP: &str = "fw_nat_fragments_v1";
pub const NAT_FRAGMENT_ENTRIES: u32 = 8192;
/// How long after its first fragment a datagram's later ones are still translated: Linux's
/// default reassembly timeout (`ipfrag_time`).
pub const NAT_FRAGMENT_TIMEOUT_NS: u64 = TIMEOUT_TCP_HANDSHAKE_NS;

/// A fragmented datagram as it crosses the uplink.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatFragmentKey {
    /// Source and destination as on the wire (IPv4-mapped).
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// The IPv4 identification (16 bits) or the IPv6 fragment header's (32 bits).
    pub id: u32,
    pub protocol: u8,
    /// 0 for egress, 1 for ingress.
    pub ingress: u8,
    pub _pad: u16,
    /// The uplink's ifindex.
    pub scope: u32,
}

const _: () = assert!(core::mem::size_of::<NatFragmentKey>() == 44);

/// What a datagram's later fragments get.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatFragment {
    /// When the first fragment passed.
    pub first_seen_ns: u64,
    /// The source (egress) or destination (ingress) address they are given.
    pub addr: [u8; 16],
    /// [`FRAGMENT_REWRITE`] or [`FRAGMENT_PASS`].
    pub action: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<NatFragment>() == 32);

/// Later fragments get `addr` (the first one was translated).
pub const FRAGMENT_REWRITE: u32 = 1;
/// Later fragments pass untouched (the first one belonged to an inbound flow).
pub const FRAGMENT_PASS: u32 = 2;

/// Read as "FIN from the pod" in NAT entries (see the module documentation).
pub const NAT_TCP_FIN_INSIDE: u8 = TCP_FIN_LO;
/// Read as "FIN from the peer" in NAT entries.
pub const NAT_TCP_FIN_OUTSIDE: u8 = TCP_FIN_HI;

/// What the NAT programs did with a packet; each is a counter.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatReason {
    /// Egress: source rewritten by an existing mapping.
    Translated = 0,
    /// Egress: a new mapping was made and the source rewritten.
    NewMapping = 1,
    /// Ingress: a reply's destination translated back.
    Reversed = 2,
    /// Ingress: an ICMP error about a translated flow translated back, quote included.
    IcmpErrorReversed = 3,
    /// Passed untouched: not from a natOutgoing pool, or to a pool or node address.
    NotEligible = 4,
    /// Passed untouched: not IP, not parsable, or a protocol NAT does not translate (only
    /// TCP, UDP and ICMP echo are).
    Untranslatable = 5,
    /// Egress: a new flow dropped, every port it could take is its peer's live flows'.
    DropPortsExhausted = 6,
    /// Egress: a new flow dropped, the slots of every port it could take hold live flows
    /// of other peers (the flow table is crowded).
    DropNatTableFull = 7,
    /// A translated packet dropped because a rewrite failed half-way.
    DropRewriteFailed = 8,
    /// The program runs on an interface that is not a configured uplink, or the uplink has
    /// no address of the packet's family: passed untouched.
    NoUplink = 9,
    /// A later fragment of a translated datagram, translated like its first fragment.
    FragmentTranslated = 10,
    /// Egress: a later fragment of a datagram whose first fragment was not seen (it came
    /// first, or over 30 s ago), from a natOutgoing pool to where it would be translated:
    /// dropped rather than leak the pod's address.
    DropFragmentUnknown = 11,
}

impl NatReason {
    pub const COUNT: u32 = 12;
    pub const ALL: [NatReason; Self::COUNT as usize] = [
        NatReason::Translated,
        NatReason::NewMapping,
        NatReason::Reversed,
        NatReason::IcmpErrorReversed,
        NatReason::NotEligible,
        NatReason::Untranslatable,
        NatReason::DropPortsExhausted,
        NatReason::DropNatTableFull,
        NatReason::DropRewriteFailed,
        NatReason::NoUplink,
        NatReason::FragmentTranslated,
        NatReason::DropFragmentUnknown,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            NatReason::Translated => "translated",
            NatReason::NewMapping => "new_mapping",
            NatReason::Reversed => "reversed",
            NatReason::IcmpErrorReversed => "icmp_error_reversed",
            NatReason::NotEligible => "not_eligible",
            NatReason::Untranslatable => "untranslatable",
            NatReason::DropPortsExhausted => "drop_ports_exhausted",
            NatReason::DropNatTableFull => "drop_nat_table_full",
            NatReason::DropRewriteFailed => "drop_rewrite_failed",
            NatReason::NoUplink => "no_uplink",
            NatReason::FragmentTranslated => "fragment_translated",
            NatReason::DropFragmentUnknown => "drop_fragment_unknown",
        }
    }

    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            NatReason::DropPortsExhausted
                | NatReason::DropNatTableFull
                | NatReason::DropRewriteFailed
                | NatReason::DropFragmentUnknown
        )
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), integer fields and byte arrays only, padding explicit.
unsafe impl aya::Pod for NatPrefix {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for NatUplink {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for NatFlow {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for NatFragmentKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for NatFragment {}

#[cfg(test)]
mod tests {
    use super::*;

    const NAT_POOL: NatPrefix = NatPrefix {
        flags: PREFIX_POOL | PREFIX_NAT_OUTGOING,
    };

    #[test]
    fn calicos_rule() {
        let plain_pool = NatPrefix { flags: PREFIX_POOL };
        let disabled = NatPrefix {
            flags: PREFIX_POOL | PREFIX_DISABLED,
        };
        let node = NatPrefix {
            flags: PREFIX_NODE_ADDRESS,
        };
        assert!(
            translates(Some(NAT_POOL), || None),
            "nat pool to the internet"
        );
        assert!(!translates(Some(NAT_POOL), || Some(NAT_POOL)), "to a pool");
        assert!(
            !translates(Some(NAT_POOL), || Some(disabled)),
            "to a remote cluster"
        );
        assert!(!translates(Some(NAT_POOL), || Some(node)), "to the node");
        assert!(
            !translates(Some(plain_pool), || None),
            "pool without natOutgoing"
        );
        assert!(!translates(None, || None), "the node's own traffic");
    }
}

/// The internet checksum `check` after the bytes `old` (at an even offset of what it covers)
/// became `new` (RFC 1624, eqn. 3), one 16-bit word at a time. For checksums that must be
/// fixed by hand (the ones inside an ICMP error's quote); the programs let the kernel's
/// helpers fix the packet's own checksums, which also handles offloaded ones.
#[inline(always)]
pub fn checksum_update<const N: usize>(check: u16, old: &[u8; N], new: &[u8; N]) -> u16 {
    let mut sum = u32::from(!check);
    let mut i = 0;
    while i + 1 < N {
        sum += u32::from(!u16::from_be_bytes([old[i], old[i + 1]]));
        sum += u32::from(u16::from_be_bytes([new[i], new[i + 1]]));
        i += 2;
    }
    // At most 17 words of 0xffff: two folds always suffice.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[cfg(test)]
mod checksum_tests {
    use super::checksum_update;

    fn checksum(bytes: &[u8]) -> u16 {
        let mut sum: u32 = bytes
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn incremental_update_matches_a_full_recomputation() {
        let mut data = [
            0x45u8, 0, 0, 60, 0x1c, 0x46, 0x40, 0, 0x40, 6, 0, 0, 10, 1, 2, 3,
        ];
        let before = checksum(&data);
        let old: [u8; 4] = [10, 1, 2, 3];
        let new: [u8; 4] = [192, 0, 2, 200];
        data[12..16].copy_from_slice(&new);
        assert_eq!(checksum_update(before, &old, &new), checksum(&data));
        let old16 = [0xffu8; 16];
        let mut bytes = [0u8; 32];
        bytes[..16].copy_from_slice(&old16);
        let before = checksum(&bytes);
        let new16: [u8; 16] = core::array::from_fn(|i| i as u8 * 17);
        bytes[..16].copy_from_slice(&new16);
        assert_eq!(checksum_update(before, &old16, &new16), checksum(&bytes));
    }
}

#[cfg(test)]
mod slot_tests {
    extern crate std;
    use super::{NAT_FLOW_SLOTS, addr_words, peer_hash, port_offset, slot_of};
    use std::collections::HashSet;

    fn v4(last: u8) -> [u8; 16] {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&[198, 51, 100, last]);
        addr
    }

    #[test]
    fn a_peers_ports_are_neighbouring_slots_and_peers_spread_over_the_table() {
        let hash = peer_hash(addr_words(&v4(9)), 53, 17, 2);
        // A flow's probes read neighbouring lines, wrapping at the table's end.
        for port in 61000u16..65535 {
            let next = (slot_of(hash, port) + 1) % NAT_FLOW_SLOTS;
            assert_eq!(slot_of(hash, port + 1), next);
        }
        // 4,096 peers over the table's 4,096 regions of 64 slots: uniform placement fills
        // 4,096 × (1 − 1/e) ≈ 2,589 of them; a weak hash (peers in runs) far fewer.
        let mut regions = HashSet::new();
        for n in 0..4096u32 {
            regions.insert(
                slot_of(
                    peer_hash(addr_words(&v4(n as u8)), 1000 + (n >> 8) as u16, 17, 2),
                    61000,
                ) / 64,
            );
        }
        assert!(regions.len() > 2450, "{} distinct regions", regions.len());
        // A peer's flows from different pod ports start at different homes.
        let homes: HashSet<u32> = (0..1000u16)
            .map(|p| port_offset(addr_words(&v4(1)), 30000 + p, hash) % 4536)
            .collect();
        assert!(homes.len() > 850, "{} distinct homes", homes.len());
    }
}
