//! The policy maps: which interfaces are policed endpoints, the IP sets their rules name,
//! the rule tables, and what the programs report (verdict counters, rule counters, flow
//! events). Userspace writes the first three; the programs only read them.
//!
//! IP sets are stored so that a packet's address is looked up once, whatever the number of
//! sets or rules: a host member (/32, /128) is an entry of [`IPSET_HOSTS_MAP`], a wider
//! member an entry of the longest-prefix map [`IPSET_NETS_MAP`]; either gives a
//! *membership class*, an index into [`IPSET_CLASSES_MAP`] whose [`SetBitmap`] has one bit
//! per set *slot* of this node. Userspace flattens nested members (an address's class holds
//! the sets of every member covering it) and shares one class between every address with
//! the same memberships. Rules then name slots, and a set condition is a bit test.

use crate::stats::ProtoCounter;

/// Hash of interface index (`u32`) → [`EndpointEntry`].
pub const ENDPOINTS_MAP: &str = "fw_endpoints_v1";
/// Hash of a host address (16 bytes, IPv4-mapped) → membership class (`u32`).
pub const IPSET_HOSTS_MAP: &str = "fw_ipset_hosts_v1";
/// Longest-prefix trie of a network (16 bytes, IPv4-mapped; prefix length over the 128
/// bits) → membership class (`u32`). Holds only members wider than a host.
pub const IPSET_NETS_MAP: &str = "fw_ipset_nets_v1";
/// Array of membership class → [`SetBitmap`].
pub const IPSET_CLASSES_MAP: &str = "fw_ipset_classes_v1";
/// Array of [`RuleEntry`]; each endpoint's table is a contiguous range of it.
pub const RULES_MAP: &str = "fw_rules_v1";
/// Array of [`RuleHead`], one per slot of [`RULES_MAP`]: what the rule walk checks first.
pub const RULE_HEADS_MAP: &str = "fw_rule_heads_v1";
/// Array of [`RuleBlock`], one per [`RULE_BLOCK_SLOTS`] slots of [`RULES_MAP`] (entry `b`
/// sums up slots `64 b .. 64 b + 63`, whichever tables they belong to): lets the walk skip
/// 64 rules at a time.
pub const RULE_BLOCKS_MAP: &str = "fw_rule_blocks_v1";
/// Per-CPU array of [`ProtoCounter`], one per slot of [`RULES_MAP`]: packets that matched
/// the rule while walking a table (first packets of flows; later ones take conntrack).
pub const RULE_COUNTERS_MAP: &str = "fw_rule_counters_v1";
/// Per-CPU array of [`ProtoCounter`] by [`verdict_index`]: every packet a policy program
/// saw, by direction and the reason for its verdict.
pub const VERDICTS_MAP: &str = "fw_verdicts_v1";
/// Ring buffer of [`FlowEvent`]s: denied flows and flows matching a Log rule.
pub const FLOW_EVENTS_MAP: &str = "fw_flow_events_v1";
/// LRU hash of [`FragmentKey`] → [`FragmentValue`]: datagrams whose first fragment was
/// allowed, so their later fragments (which carry no ports) may pass.
pub const FRAGMENTS_MAP: &str = "fw_fragments_v1";

/// Policed interfaces on this node.
pub const MAX_ENDPOINTS: u32 = 16_384;
/// Host members across all sets (the hash is not preallocated: memory follows use).
pub const MAX_SET_HOSTS: u32 = 1 << 20;
/// Network members across all sets.
pub const MAX_SET_NETS: u32 = 65_536;
/// Distinct membership combinations.
pub const MAX_SET_CLASSES: u32 = 32_768;
/// Sets this node's rules can name at once.
pub const MAX_SET_SLOTS: u32 = 2_048;
pub const SET_BITMAP_WORDS: usize = (MAX_SET_SLOTS / 64) as usize;
/// Rules across every table of this node.
pub const MAX_RULES: u32 = 65_536;
/// Rules in one endpoint's table for one direction.
pub const MAX_RULES_PER_TABLE: u32 = 4_096;
/// Slots of [`RULES_MAP`] one [`RuleBlock`] sums up.
pub const RULE_BLOCK_SLOTS: u32 = 64;
pub const RULE_BLOCKS: u32 = MAX_RULES / RULE_BLOCK_SLOTS;
pub const MAX_SET_MATCHES_PER_SIDE: usize = 4;
/// For `ports` and, separately, for `not_ports`, in one entry. A rule with more `ports`
/// ranges takes several entries (userspace splits it); more `not_ports` is an error.
pub const MAX_PORT_RANGES_PER_SIDE: usize = 8;
pub const FLOW_EVENTS_BYTES: u32 = 256 * 1024;
pub const MAX_FRAGMENTED_DATAGRAMS: u32 = 16_384;
/// How long a later fragment may follow its datagram's first (Linux's ipfrag_time).
pub const FRAGMENT_TIMEOUT_NS: u64 = 30_000_000_000;

/// Class 0 is never stored: an address in no set has no entry at all. Its bitmap, never
/// written, stays empty; the programs use it for such addresses.
pub const CLASS_NONE: u32 = 0;

/// Which way traffic crosses an endpoint, from the endpoint's (pod's) point of view.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyDir {
    /// To the pod: TC egress of the host-side veth.
    Ingress = 0,
    /// From the pod: TC ingress of the host-side veth.
    Egress = 1,
}

impl PolicyDir {
    pub const ALL: [PolicyDir; 2] = [PolicyDir::Ingress, PolicyDir::Egress];

    /// This direction's bit of [`EndpointEntry::flags`]: a policy applies.
    pub const fn policy_flag(self) -> u32 {
        1 << (self as u32)
    }

    /// This direction's bit of [`EndpointEntry::flags`]: the table's default is Allow
    /// (without it the default is Deny).
    pub const fn default_allow_flag(self) -> u32 {
        4 << (self as u32)
    }

    pub const fn name(self) -> &'static str {
        match self {
            PolicyDir::Ingress => "ingress",
            PolicyDir::Egress => "egress",
        }
    }
}

/// Where an endpoint's table for one direction lives in [`RULES_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TableRef {
    pub start: u32,
    pub len: u32,
}

/// A policed interface. Replacing a table writes the new rules to a free range first and
/// then this entry (one hash update, atomic for readers), so no packet sees half a table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointEntry {
    /// Userspace's number for the endpoint; flow events carry it.
    pub endpoint_id: u32,
    /// [`PolicyDir::policy_flag`] and [`PolicyDir::default_allow_flag`] bits.
    pub flags: u32,
    /// Indexed by [`PolicyDir`]; meaningful only where the policy flag is set.
    pub tables: [TableRef; 2],
}

const _: () = assert!(core::mem::size_of::<EndpointEntry>() == 24);

/// The set slots an address belongs to: bit `slot % 64` of word `slot / 64`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SetBitmap {
    pub words: [u64; SET_BITMAP_WORDS],
}

const _: () = assert!(core::mem::size_of::<SetBitmap>() == 256);

impl SetBitmap {
    pub const EMPTY: SetBitmap = SetBitmap {
        words: [0; SET_BITMAP_WORDS],
    };

    /// The word and bit of `slot`.
    pub const fn position(slot: u16) -> (u8, u8) {
        (
            ((slot as usize / 64) % SET_BITMAP_WORDS) as u8,
            (slot % 64) as u8,
        )
    }

    #[inline(always)]
    pub fn contains(&self, slot: u16) -> bool {
        let word = (slot as usize / 64) % SET_BITMAP_WORDS;
        self.words[word] & (1u64 << (slot % 64)) != 0
    }

    pub fn insert(&mut self, slot: u16) {
        let word = (slot as usize / 64) % SET_BITMAP_WORDS;
        self.words[word] |= 1u64 << (slot % 64);
    }

    pub fn union(&self, other: &SetBitmap) -> SetBitmap {
        let mut out = *self;
        for (word, theirs) in out.words.iter_mut().zip(other.words) {
            *word |= theirs;
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }
}

impl Default for SetBitmap {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// `SetCondition::kind`: the address must be in the set.
pub const SET_MEMBER: u8 = 1;
/// `SetCondition::kind`: the address must not be in the set.
pub const SET_NOT_MEMBER: u8 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SetCondition {
    pub slot: u16,
    /// [`SET_MEMBER`] or [`SET_NOT_MEMBER`].
    pub kind: u8,
    pub _pad: u8,
}

/// An inclusive port range, host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortRangeEntry {
    pub first: u16,
    pub last: u16,
}

/// The conditions on one side (source or destination) of a packet. Only the first
/// `*_count` entries of each array are conditions; the rest is zero and ignored.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SideConditions {
    pub sets: [SetCondition; MAX_SET_MATCHES_PER_SIDE],
    /// The port must be in one of these (when `port_count > 0`).
    pub ports: [PortRangeEntry; MAX_PORT_RANGES_PER_SIDE],
    /// The port must be in none of these.
    pub not_ports: [PortRangeEntry; MAX_PORT_RANGES_PER_SIDE],
    pub set_count: u8,
    pub port_count: u8,
    pub not_port_count: u8,
    pub _pad: [u8; 5],
}

const _: () = assert!(core::mem::size_of::<SideConditions>() == 88);

/// `RuleEntry::action` values; 0 is not an action, so a zeroed slot never allows.
pub const ACTION_ALLOW: u8 = 1;
pub const ACTION_DENY: u8 = 2;
/// Emit a flow event and go on with the next rule.
pub const ACTION_LOG: u8 = 3;

/// `RuleEntry::flags`: the packet's protocol must be `protocol`.
pub const RULE_PROTOCOL: u32 = 1;
/// The packet's protocol must not be `not_protocol`.
pub const RULE_NOT_PROTOCOL: u32 = 2;
/// The packet must be ICMP/ICMPv6 of type `icmp_type`.
pub const RULE_ICMP_TYPE: u32 = 4;
/// ... and code `icmp_code` (only with [`RULE_ICMP_TYPE`]).
pub const RULE_ICMP_CODE: u32 = 8;
/// The packet must not be ICMP/ICMPv6 of type `not_icmp_type`.
pub const RULE_NOT_ICMP_TYPE: u32 = 16;
/// ... with code `not_icmp_code` (only with [`RULE_NOT_ICMP_TYPE`]).
pub const RULE_NOT_ICMP_CODE: u32 = 32;
/// `rule_index` is the rule's index in its table as userspace knows it, for flow events
/// (a rule with more port ranges than an entry holds takes several consecutive entries).
/// Without it, events name the entry's own index in the table.
pub const RULE_INDEXED: u32 = 64;

/// One rule; every condition its flags and counts name must hold for `action` to apply.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleEntry {
    /// `RULE_*` bits.
    pub flags: u32,
    /// `ACTION_*`.
    pub action: u8,
    pub protocol: u8,
    pub not_protocol: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub not_icmp_type: u8,
    pub not_icmp_code: u8,
    pub _pad: u8,
    /// See [`RULE_INDEXED`]. It sits where five padding bytes were: entries written
    /// without it read as before, and a program that does not know it ignores it.
    pub rule_index: u16,
    pub _pad2: [u8; 2],
    pub source: SideConditions,
    pub destination: SideConditions,
}

const _: () = assert!(core::mem::size_of::<RuleEntry>() == 192);
const _: () = assert!(core::mem::offset_of!(RuleEntry, source) == 16);

/// `RuleHead::flags`: the packet's protocol must be `protocol`.
pub const HEAD_PROTOCOL: u8 = 1;
/// The source address must be in set slot `src_word * 64 + src_bit`.
pub const HEAD_SRC_SET: u8 = 2;
/// The destination address must be in set slot `dst_word * 64 + dst_bit`.
pub const HEAD_DST_SET: u8 = 4;
/// The packet must have ports, its source port within `src_ports`.
pub const HEAD_SRC_PORTS: u8 = 8;
/// The packet must have ports, its destination port within `dst_ports`.
pub const HEAD_DST_PORTS: u8 = 16;

/// The conditions of a [`RuleEntry`] that are quickest to test, derived from it by
/// [`RuleHead::of`]: each holds for every packet the rule matches, so a packet that fails
/// one skips the rule without reading its 192 bytes. Sixteen bytes, so a 1,000-rule table
/// walks 16 KiB of heads. A zeroed head rules nothing out: the full entry decides.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleHead {
    /// `HEAD_*` bits.
    pub flags: u8,
    pub protocol: u8,
    /// One set the source must be in (the rule's first source member condition), as the
    /// word and bit of [`SetBitmap`] it sits at.
    pub src_word: u8,
    pub src_bit: u8,
    pub dst_word: u8,
    pub dst_bit: u8,
    pub _pad: [u8; 2],
    /// The smallest range holding every source `ports` range of the rule.
    pub src_ports: PortRangeEntry,
    pub dst_ports: PortRangeEntry,
}

const _: () = assert!(core::mem::size_of::<RuleHead>() == 16);

impl RuleHead {
    /// The quick conditions `rule` implies.
    pub fn of(rule: &RuleEntry) -> RuleHead {
        let mut head = RuleHead::default();
        if rule.flags & RULE_PROTOCOL != 0 {
            head.flags |= HEAD_PROTOCOL;
            head.protocol = rule.protocol;
        }
        if let Some(slot) = rule.source.first_member_slot() {
            head.flags |= HEAD_SRC_SET;
            (head.src_word, head.src_bit) = SetBitmap::position(slot);
        }
        if let Some(slot) = rule.destination.first_member_slot() {
            head.flags |= HEAD_DST_SET;
            (head.dst_word, head.dst_bit) = SetBitmap::position(slot);
        }
        if let Some(hull) = rule.source.port_hull() {
            head.flags |= HEAD_SRC_PORTS;
            head.src_ports = hull;
        }
        if let Some(hull) = rule.destination.port_hull() {
            head.flags |= HEAD_DST_PORTS;
            head.dst_ports = hull;
        }
        head
    }
}

/// What every rule in [`RULE_BLOCK_SLOTS`] consecutive slots of [`RULES_MAP`] needs, so a
/// packet none of them can match skips them all with a few word tests. Built from the
/// slots' [`RuleHead`]s by [`RuleBlock::admit`].
///
/// Every field only ever *rules out*, and a zeroed block rules out nothing: a block that
/// was never written, or written by an agent that did not know blocks, only costs time.
/// Each field is a bit set, so a packet reading a block while userspace rewrites it (a
/// byte-wise mix of the two versions) is still right for every table that both versions
/// cover, as every version covers every table that may be walked.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleBlock {
    /// Bit `p % 64` of word `p / 64`: no rule here matches IP protocol `p`.
    pub excluded_protocols: [u64; 4],
    pub source: BlockSide,
    pub destination: BlockSide,
}

const _: () = assert!(core::mem::size_of::<RuleBlock>() == 560);

/// The set conditions of a [`RuleBlock`]'s rules on one side of the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockSide {
    /// 1 when every rule here needs the address in one of the slots of `words`; 0 (some
    /// rule has no member condition on this side) and the side rules nothing out.
    pub filtered: u32,
    /// Bit `w`: `words[w]` is not zero.
    pub presence: u32,
    /// The union of the slots the rules need (one per rule: its head's).
    pub words: [u64; SET_BITMAP_WORDS],
}

impl RuleBlock {
    /// Rules nothing out.
    pub const OPEN: RuleBlock = RuleBlock {
        excluded_protocols: [0; 4],
        source: BlockSide::OPEN,
        destination: BlockSide::OPEN,
    };

    /// Rules out everything, until [`admit`](Self::admit) widens it.
    pub const NOTHING: RuleBlock = RuleBlock {
        excluded_protocols: [u64::MAX; 4],
        source: BlockSide::NOTHING,
        destination: BlockSide::NOTHING,
    };

    /// The summary of the rules with these heads: [`OPEN`](Self::OPEN) when there are none
    /// (nobody walks such a block).
    pub fn of<'a>(heads: impl IntoIterator<Item = &'a RuleHead>) -> RuleBlock {
        let mut heads = heads.into_iter().peekable();
        if heads.peek().is_none() {
            return RuleBlock::OPEN;
        }
        let mut block = RuleBlock::NOTHING;
        for head in heads {
            block.admit(head);
        }
        block
    }

    /// Widens the block so it rules out nothing `head` admits.
    pub fn admit(&mut self, head: &RuleHead) {
        if head.flags & HEAD_PROTOCOL != 0 {
            let p = usize::from(head.protocol);
            self.excluded_protocols[p / 64] &= !(1u64 << (p % 64));
        } else {
            self.excluded_protocols = [0; 4];
        }
        self.source
            .admit(head.flags & HEAD_SRC_SET != 0, head.src_word, head.src_bit);
        self.destination
            .admit(head.flags & HEAD_DST_SET != 0, head.dst_word, head.dst_bit);
    }

    /// Whether the block rules out protocol `protocol` (the kernel's first test).
    #[inline(always)]
    pub fn excludes_protocol(&self, protocol: u8) -> bool {
        let p = protocol as usize;
        self.excluded_protocols[(p / 64) % 4] >> (p % 64) & 1 != 0
    }
}

impl BlockSide {
    const OPEN: BlockSide = BlockSide {
        filtered: 0,
        presence: 0,
        words: [0; SET_BITMAP_WORDS],
    };
    const NOTHING: BlockSide = BlockSide {
        filtered: 1,
        presence: 0,
        words: [0; SET_BITMAP_WORDS],
    };

    fn admit(&mut self, has_set: bool, word: u8, bit: u8) {
        if !has_set {
            self.filtered = 0;
            return;
        }
        let word = usize::from(word) % SET_BITMAP_WORDS;
        self.words[word] |= 1u64 << (bit % 64);
        self.presence |= 1 << word;
    }
}

impl SetBitmap {
    /// Bit `w` set when word `w` is not zero (compared with [`BlockSide::presence`]).
    #[inline(always)]
    pub fn presence(&self) -> u32 {
        let mut presence = 0;
        for (w, word) in self.words.iter().enumerate() {
            if *word != 0 {
                presence |= 1 << w;
            }
        }
        presence
    }
}

const _: () = assert!(SET_BITMAP_WORDS <= 32, "presence is a u32");

impl SideConditions {
    /// The slot of the first set this side requires membership of.
    fn first_member_slot(&self) -> Option<u16> {
        self.sets
            .iter()
            .take(usize::from(self.set_count))
            .find(|condition| condition.kind == SET_MEMBER)
            .map(|condition| condition.slot)
    }

    /// The smallest range holding every `ports` range, when there are any.
    fn port_hull(&self) -> Option<PortRangeEntry> {
        let ranges = self.ports.iter().take(usize::from(self.port_count));
        ranges.fold(None, |hull: Option<PortRangeEntry>, range| {
            Some(match hull {
                None => *range,
                Some(hull) => PortRangeEntry {
                    first: hull.first.min(range.first),
                    last: hull.last.max(range.last),
                },
            })
        })
    }
}

/// Why a policy program passed or dropped a packet; counted per direction.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VerdictReason {
    /// The interface is not a known endpoint (not ours to judge).
    AllowUnknownInterface = 0,
    /// Not IP (ARP and friends).
    AllowNonIp = 1,
    /// IPv6 neighbour discovery, IPv6's ARP.
    AllowNeighborDiscovery = 2,
    /// No policy applies in this direction.
    AllowNoPolicy = 3,
    /// A conntrack entry of an admitted flow.
    AllowEstablished = 4,
    AllowRule = 5,
    AllowDefault = 6,
    /// A later fragment of a datagram whose first fragment was allowed.
    AllowFragment = 7,
    DenyRule = 8,
    DenyDefault = 9,
    /// An IP packet whose headers cannot be parsed (truncated, inconsistent, too many
    /// IPv6 extension headers, an L4 header cut short).
    DenyCannotParse = 10,
    /// A later fragment whose first fragment was not seen or not allowed.
    DenyOrphanFragment = 11,
    /// The endpoint's table points outside the rules map: a userspace bug; fail closed.
    DenyBadTable = 12,
}

impl VerdictReason {
    pub const COUNT: u32 = 13;
    pub const ALL: [VerdictReason; Self::COUNT as usize] = [
        VerdictReason::AllowUnknownInterface,
        VerdictReason::AllowNonIp,
        VerdictReason::AllowNeighborDiscovery,
        VerdictReason::AllowNoPolicy,
        VerdictReason::AllowEstablished,
        VerdictReason::AllowRule,
        VerdictReason::AllowDefault,
        VerdictReason::AllowFragment,
        VerdictReason::DenyRule,
        VerdictReason::DenyDefault,
        VerdictReason::DenyCannotParse,
        VerdictReason::DenyOrphanFragment,
        VerdictReason::DenyBadTable,
    ];

    pub const fn is_drop(self) -> bool {
        self as u32 >= VerdictReason::DenyRule as u32
    }

    pub const fn name(self) -> &'static str {
        match self {
            VerdictReason::AllowUnknownInterface => "allow-unknown-interface",
            VerdictReason::AllowNonIp => "allow-non-ip",
            VerdictReason::AllowNeighborDiscovery => "allow-neighbor-discovery",
            VerdictReason::AllowNoPolicy => "allow-no-policy",
            VerdictReason::AllowEstablished => "allow-established",
            VerdictReason::AllowRule => "allow-rule",
            VerdictReason::AllowDefault => "allow-default",
            VerdictReason::AllowFragment => "allow-fragment",
            VerdictReason::DenyRule => "deny-rule",
            VerdictReason::DenyDefault => "deny-default",
            VerdictReason::DenyCannotParse => "deny-cannot-parse",
            VerdictReason::DenyOrphanFragment => "deny-orphan-fragment",
            VerdictReason::DenyBadTable => "deny-bad-table",
        }
    }
}

/// Entries of [`VERDICTS_MAP`].
pub const VERDICT_ENTRIES: u32 = 2 * VerdictReason::COUNT;

/// The [`VERDICTS_MAP`] slot of one (direction, reason).
pub const fn verdict_index(dir: PolicyDir, reason: VerdictReason) -> u32 {
    dir as u32 * VerdictReason::COUNT + reason as u32
}

/// `FlowEvent::kind`: the flow was denied.
pub const EVENT_DENY: u8 = 1;
/// `FlowEvent::kind`: the flow matched a Log rule.
pub const EVENT_LOG: u8 = 2;
/// `FlowEvent::rule_index` when no rule decided (the default, or no table walk).
pub const EVENT_NO_RULE: u32 = u32::MAX;

/// One denied or logged flow, from the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// 16 bytes, IPv4-mapped.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Host byte order; for ICMP the type and the code; 0 for other protocols.
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    /// [`PolicyDir`] as a number.
    pub direction: u8,
    /// [`EVENT_DENY`] or [`EVENT_LOG`].
    pub kind: u8,
    pub _pad: u8,
    pub endpoint_id: u32,
    pub ifindex: u32,
    /// Index of the rule in the endpoint's table, or [`EVENT_NO_RULE`].
    pub rule_index: u32,
    /// [`VerdictReason`] as a number (for Log events: the reason is `AllowRule`).
    pub reason: u32,
    pub timestamp_ns: u64,
}

const _: () = assert!(core::mem::size_of::<FlowEvent>() == 64);

/// An IP datagram being fragmented, as seen on one interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// The IPv4 identification (16 bits) or the IPv6 fragment header's identification.
    pub id: u32,
    /// ifindex, as in conntrack keys.
    pub scope: u32,
    pub protocol: u8,
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<FragmentKey>() == 44);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragmentValue {
    /// When the first fragment passed (`bpf_ktime_get_coarse_ns`).
    pub first_seen_ns: u64,
}

const _: () = assert!(core::mem::size_of::<FragmentValue>() == 8);

/// The counters this module's maps hold are the same packets+bytes pair as the protocol
/// stats.
pub type PacketCounter = ProtoCounter;

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all): repr(C), integer fields and arrays of them only, padding explicit.
    unsafe impl aya::Pod for super::EndpointEntry {}
    unsafe impl aya::Pod for super::SetBitmap {}
    unsafe impl aya::Pod for super::RuleEntry {}
    unsafe impl aya::Pod for super::RuleHead {}
    unsafe impl aya::Pod for super::RuleBlock {}
    unsafe impl aya::Pod for super::FlowEvent {}
    unsafe impl aya::Pod for super::FragmentKey {}
    unsafe impl aya::Pod for super::FragmentValue {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_direction_and_reason_has_its_own_verdict_slot() {
        let mut seen = [false; VERDICT_ENTRIES as usize];
        for dir in PolicyDir::ALL {
            for reason in VerdictReason::ALL {
                let index = verdict_index(dir, reason) as usize;
                assert!(!seen[index], "{dir:?}/{reason:?} shares slot {index}");
                seen[index] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn direction_flags_are_distinct() {
        let flags = [
            PolicyDir::Ingress.policy_flag(),
            PolicyDir::Egress.policy_flag(),
            PolicyDir::Ingress.default_allow_flag(),
            PolicyDir::Egress.default_allow_flag(),
        ];
        let all = flags.iter().fold(0, |acc, f| acc | f);
        assert_eq!(all.count_ones(), 4, "{flags:?}");
    }

    #[test]
    fn a_head_holds_the_quick_conditions_of_its_rule() {
        let mut rule = RuleEntry {
            flags: RULE_PROTOCOL,
            action: ACTION_ALLOW,
            protocol: 6,
            ..RuleEntry::default()
        };
        rule.source.sets[0] = SetCondition {
            slot: 2,
            kind: SET_NOT_MEMBER,
            _pad: 0,
        };
        rule.source.sets[1] = SetCondition {
            slot: 70,
            kind: SET_MEMBER,
            _pad: 0,
        };
        rule.source.set_count = 2;
        rule.destination.ports[0] = PortRangeEntry {
            first: 8000,
            last: 8080,
        };
        rule.destination.ports[1] = PortRangeEntry {
            first: 80,
            last: 80,
        };
        rule.destination.port_count = 2;
        rule.destination.not_ports[0] = PortRangeEntry {
            first: 81,
            last: 81,
        };
        rule.destination.not_port_count = 1;
        let head = RuleHead::of(&rule);
        assert_eq!(head.flags, HEAD_PROTOCOL | HEAD_SRC_SET | HEAD_DST_PORTS);
        assert_eq!(head.protocol, 6);
        assert_eq!(
            (head.src_word, head.src_bit),
            (1, 6),
            "the member condition, not the non-member one before it"
        );
        assert_eq!(
            head.dst_ports,
            PortRangeEntry {
                first: 80,
                last: 8080
            }
        );
        assert_eq!(RuleHead::of(&RuleEntry::default()), RuleHead::default());
    }

    #[test]
    fn a_block_rules_out_only_what_none_of_its_heads_admits() {
        let tcp_from_3 = RuleHead {
            flags: HEAD_PROTOCOL | HEAD_SRC_SET,
            protocol: 6,
            src_word: 0,
            src_bit: 3,
            ..RuleHead::default()
        };
        let udp_from_100 = RuleHead {
            flags: HEAD_PROTOCOL | HEAD_SRC_SET,
            protocol: 17,
            src_word: 1,
            src_bit: 36,
            ..RuleHead::default()
        };
        let block = RuleBlock::of([&tcp_from_3, &udp_from_100]);
        assert!(!block.excludes_protocol(6) && !block.excludes_protocol(17));
        assert!(block.excludes_protocol(1) && block.excludes_protocol(132));
        assert_eq!(block.source.filtered, 1);
        assert_eq!(block.source.presence, 0b11);
        assert_eq!((block.source.words[0], block.source.words[1]), (8, 1 << 36));
        assert_eq!(
            block.destination.filtered, 0,
            "no rule needs a destination set"
        );

        let anything = RuleHead::default();
        let block = RuleBlock::of([&tcp_from_3, &anything]);
        assert!(!block.excludes_protocol(1));
        assert_eq!(block.source.filtered, 0);
    }

    #[test]
    fn a_zeroed_block_rules_out_nothing() {
        let zeroed = RuleBlock::OPEN;
        assert!((0..=255).all(|p| !zeroed.excludes_protocol(p)));
        assert_eq!(zeroed.source.filtered, 0);
        assert_eq!(zeroed.destination.filtered, 0);
        assert_eq!(RuleBlock::of([]), RuleBlock::OPEN);
    }

    #[test]
    fn bitmap_holds_every_slot() {
        let mut bitmap = SetBitmap::EMPTY;
        for slot in [0u16, 63, 64, (MAX_SET_SLOTS - 1) as u16] {
            assert!(!bitmap.contains(slot));
            bitmap.insert(slot);
            assert!(bitmap.contains(slot));
        }
        assert!(!bitmap.contains(1));
    }
}
