//! NAT-outgoing layouts: the prefix map that says which addresses are in IP pools (and which
//! are this node's), the per-uplink configuration, and the NAT counters. Mappings themselves
//! live in the shared conntrack table ([`crate::conntrack`]), two entries per flow.
//!
//! # Mappings in the conntrack table
//! A translated flow `pod:p → peer:q` leaving through uplink `u` (address `node`) with the
//! allocated port `n` has two entries, both with `scope = u`:
//! - the *outbound* entry, keyed by the flow as the pod sends it (`pod:p ↔ peer:q`), with
//!   [`NAT_REWRITE_SOURCE`] and `nat_addr:nat_port = node:n`;
//! - the *reply* entry, keyed by the flow as it is on the wire (`node:n ↔ peer:q`), with
//!   [`NAT_REVERSE_DESTINATION`] and `nat_addr:nat_port = pod:p`.
//!
//! The reply entry's key is what makes `n` taken for `peer:q`: a port is allocated by
//! inserting it with `BPF_NOEXIST`. ICMP echo uses the identifier as both ports, as the
//! conntrack convention says. In NAT entries the TCP FIN bits name the flow's sides, not the
//! key order (the two keys of a flow order their endpoints differently):
//! [`NAT_TCP_FIN_INSIDE`] is a FIN from the pod, [`NAT_TCP_FIN_OUTSIDE`] one from the peer.

use crate::conntrack::{TCP_FIN_HI, TCP_FIN_LO};

#[cfg(doc)]
use crate::conntrack::{NAT_REVERSE_DESTINATION, NAT_REWRITE_SOURCE};

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
/// flags of its longest matching prefix, `None` when none matches): Calico's rule.
#[inline(always)]
pub const fn translates(src: Option<NatPrefix>, dst: Option<NatPrefix>) -> bool {
    let from_nat_pool = match src {
        Some(p) => p.flags & PREFIX_NAT_OUTGOING != 0,
        None => false,
    };
    // Any match at all (pool of either kind, or a node address) excludes the destination.
    from_nat_pool && dst.is_none()
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

/// `nat_flags` of an uplink-scoped entry for a flow that came in to a pod's own address
/// (a remote cluster reaching it): its packets pass untranslated both ways, as Calico only
/// masquerades connections the pod opens. Keyed by the flow as it is (one entry).
pub const NAT_PASS_INBOUND: u8 = 4;

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
    /// Passed untouched: not IP, not parsable, a later fragment, or a protocol NAT does not
    /// translate (only TCP, UDP and ICMP echo are).
    Untranslatable = 5,
    /// Egress: a new flow dropped, every port tried for its peer was taken.
    DropPortsExhausted = 6,
    /// Egress: a new flow dropped, the conntrack table refused the mapping.
    DropMapFull = 7,
    /// A translated packet dropped because a rewrite failed half-way.
    DropRewriteFailed = 8,
    /// The program runs on an interface that is not a configured uplink, or the uplink has
    /// no address of the packet's family: passed untouched.
    NoUplink = 9,
}

impl NatReason {
    pub const COUNT: u32 = 10;
    pub const ALL: [NatReason; Self::COUNT as usize] = [
        NatReason::Translated,
        NatReason::NewMapping,
        NatReason::Reversed,
        NatReason::IcmpErrorReversed,
        NatReason::NotEligible,
        NatReason::Untranslatable,
        NatReason::DropPortsExhausted,
        NatReason::DropMapFull,
        NatReason::DropRewriteFailed,
        NatReason::NoUplink,
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
            NatReason::DropMapFull => "drop_map_full",
            NatReason::DropRewriteFailed => "drop_rewrite_failed",
            NatReason::NoUplink => "no_uplink",
        }
    }

    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            NatReason::DropPortsExhausted | NatReason::DropMapFull | NatReason::DropRewriteFailed
        )
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), integer fields and byte arrays only, padding explicit.
unsafe impl aya::Pod for NatPrefix {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for NatUplink {}

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
        assert!(translates(Some(NAT_POOL), None), "nat pool to the internet");
        assert!(!translates(Some(NAT_POOL), Some(NAT_POOL)), "to a pool");
        assert!(
            !translates(Some(NAT_POOL), Some(disabled)),
            "to a remote cluster"
        );
        assert!(!translates(Some(NAT_POOL), Some(node)), "to the node");
        assert!(
            !translates(Some(plain_pool), None),
            "pool without natOutgoing"
        );
        assert!(!translates(None, None), "the node's own traffic");
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
