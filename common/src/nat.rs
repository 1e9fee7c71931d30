//! NAT-outgoing layouts: the prefix map that says which addresses are in IP pools (and which
//! are this node's), the per-uplink configuration, the mapping table, the fragment table,
//! and the NAT counters.
//!
//! # Mappings ([`NAT_MAPPINGS_MAP`])
//! A plain hash, not an LRU: a full table refuses *new* flows (counted as
//! [`NatReason::DropNatTableFull`]) and never evicts a live mapping. Nothing in the kernel
//! reclaims an expired entry except a new flow that reuses its key; the agent sweeps the
//! table (the `fw_nat_sweep` program, run through BPF_PROG_TEST_RUN once per tick).
//! Keys follow the conntrack convention ([`ConntrackKey`]), with `scope` the uplink's
//! ifindex. A translated flow `pod:p → peer:q` leaving through uplink `u` (address `node`)
//! with the allocated port `n` has two entries:
//! - the *outbound* entry, keyed by the flow as the pod sends it (`pod:p ↔ peer:q`), with
//!   [`MAPPING_REWRITE_SOURCE`] and `addr:port = node:n`;
//! - the *reply* entry, keyed by the flow as it is on the wire (`node:n ↔ peer:q`), with
//!   [`MAPPING_REVERSE_DESTINATION`] and `addr:port = pod:p`.
//!
//! The reply entry's key is what makes `n` taken for `peer:q`: a port is allocated by
//! inserting it with `BPF_NOEXIST`. ICMP echo uses the identifier as both ports, as the
//! conntrack convention says. The TCP FIN bits name the flow's sides, not the key order
//! (the two keys of a flow order their endpoints differently): [`NAT_TCP_FIN_INSIDE`] is a
//! FIN from the pod, [`NAT_TCP_FIN_OUTSIDE`] one from the peer.
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

#[cfg(doc)]
use crate::conntrack::ConntrackKey;

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

/// Name of the hash of [`ConntrackKey`] → [`NatMapping`] (see the module documentation).
pub const NAT_MAPPINGS_MAP: &str = "fw_nat_mappings_v1";
/// Entries the mapping table holds: two per translated flow, one per recorded inbound flow.
pub const NAT_MAPPING_ENTRIES: u32 = 262_144;

/// A mapping: what a packet of the flow its key names gets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatMapping {
    /// `bpf_ktime_get_coarse_ns()` when a packet last refreshed the entry.
    pub last_seen_ns: u64,
    /// The address a rewrite writes (16 bytes, IPv4-mapped).
    pub addr: [u8; 16],
    /// The port (or echo identifier) a rewrite writes, host byte order.
    pub port: u16,
    /// One of `MAPPING_*`.
    pub flags: u8,
    /// TCP progress: `TCP_*` bits of [`crate::conntrack`], FINs as [`NAT_TCP_FIN_INSIDE`]
    /// and [`NAT_TCP_FIN_OUTSIDE`].
    pub tcp_state: u8,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<NatMapping>() == 32);

impl NatMapping {
    /// Whether the entry still holds at `now` for a flow of `protocol` (a dead one is
    /// never refreshed: a new flow replaces it, or the agent's sweep removes it).
    #[inline(always)]
    pub const fn live(&self, protocol: u8, now: u64) -> bool {
        now.saturating_sub(self.last_seen_ns) <= timeout_ns(protocol, self.tcp_state)
    }
}

/// The flow's outgoing packets get their source rewritten to `addr:port`.
pub const MAPPING_REWRITE_SOURCE: u8 = 1;
/// The flow's replies get their destination translated back to `addr:port`.
pub const MAPPING_REVERSE_DESTINATION: u8 = 2;
/// A flow that came in to a pod's own address (a remote cluster reaching it): its packets
/// pass untranslated both ways, as Calico only masquerades connections the pod opens.
/// Keyed by the flow as it is (one entry).
pub const MAPPING_PASS_INBOUND: u8 = 4;

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

/// Ports tried, from a random start, before a new flow is dropped as out of ports.
pub const NAT_PORT_ATTEMPTS: u32 = 32;

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
    /// Egress: a new flow dropped, every port tried for its peer was taken.
    DropPortsExhausted = 6,
    /// Egress: a new flow dropped, the mapping table is full of live mappings.
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
unsafe impl aya::Pod for NatMapping {}
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
