//! Rule tables as the kernel walks them: each [`Rule`] encoded as a fixed-size
//! [`RuleEntry`] naming set slots (or several consecutive ones, when a side lists more
//! port ranges than an entry holds), and the allocator of contiguous ranges of the rules
//! map that tables live in (a replaced table's range is reused only after a delay, so a
//! packet still walking it never reads another table's rules).

use std::time::Instant;

use fedwall_common::policy::{
    ACTION_ALLOW, ACTION_DENY, ACTION_LOG, MAX_PORT_RANGES_PER_SIDE, MAX_RULES,
    MAX_SET_MATCHES_PER_SIDE, PortRangeEntry, RULE_ICMP_CODE, RULE_ICMP_TYPE, RULE_INDEXED,
    RULE_NOT_ICMP_CODE, RULE_NOT_ICMP_TYPE, RULE_NOT_PROTOCOL, RULE_PROTOCOL, RuleEntry,
    SET_MEMBER, SET_NOT_MEMBER, SetCondition, SideConditions, TableRef,
};

use super::ipsets::REUSE_DELAY;
use crate::dataplane::{IpSetId, PortRange, Rule, RuleAction, SideMatch};

/// Why one rule cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    UnknownSet(IpSetId),
    /// A list of the rule is longer than the kernel's fixed arrays.
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
    },
}

/// Encodes rule `index` of a table, naming sets by the slot `slot_of` gives them: one
/// entry, or, when a side's `ports` hold more ranges than an entry does, one entry per
/// chunk of them (per pair of chunks when both sides do), consecutive, with the same
/// action and every other condition. A side's ranges are ORed, so the first of those
/// entries a packet matches decides as the rule would; and the chunks hold coalesced,
/// disjoint ranges, so a packet matches one entry only and a Log rule logs it once.
/// `notPorts` (ANDed) and set conditions cannot be split: over the limit, an error.
pub fn encode(
    rule: &Rule,
    index: u16,
    slot_of: impl Fn(IpSetId) -> Option<u16>,
) -> Result<Vec<RuleEntry>, EncodeError> {
    let mut entry = RuleEntry {
        flags: RULE_INDEXED,
        action: match rule.action {
            RuleAction::Allow => ACTION_ALLOW,
            RuleAction::Deny => ACTION_DENY,
            RuleAction::Log => ACTION_LOG,
        },
        rule_index: index,
        ..RuleEntry::default()
    };
    if let Some(protocol) = rule.protocol {
        entry.flags |= RULE_PROTOCOL;
        entry.protocol = protocol;
    }
    if let Some(protocol) = rule.not_protocol {
        entry.flags |= RULE_NOT_PROTOCOL;
        entry.not_protocol = protocol;
    }
    if let Some(icmp) = rule.icmp {
        entry.flags |= RULE_ICMP_TYPE;
        entry.icmp_type = icmp.icmp_type;
        if let Some(code) = icmp.code {
            entry.flags |= RULE_ICMP_CODE;
            entry.icmp_code = code;
        }
    }
    if let Some(icmp) = rule.not_icmp {
        entry.flags |= RULE_NOT_ICMP_TYPE;
        entry.not_icmp_type = icmp.icmp_type;
        if let Some(code) = icmp.code {
            entry.flags |= RULE_NOT_ICMP_CODE;
            entry.not_icmp_code = code;
        }
    }
    entry.source = encode_side(&rule.source, "source", &slot_of)?;
    entry.destination = encode_side(&rule.destination, "destination", &slot_of)?;
    let source_chunks = port_chunks(&rule.source.ports);
    let destination_chunks = port_chunks(&rule.destination.ports);
    let mut entries = Vec::with_capacity(source_chunks.len() * destination_chunks.len());
    for source in &source_chunks {
        for destination in &destination_chunks {
            let mut split = entry;
            fill_ports(&mut split.source, source);
            fill_ports(&mut split.destination, destination);
            entries.push(split);
        }
    }
    Ok(entries)
}

/// The index in its table of the rule `entry` (entry `offset` of the table) belongs to,
/// as flow events name it.
pub fn rule_index(entry: &RuleEntry, offset: u32) -> usize {
    if entry.flags & RULE_INDEXED != 0 {
        usize::from(entry.rule_index)
    } else {
        offset as usize
    }
}

/// A side's `ports` in chunks an entry holds: as given when they fit in one, else
/// coalesced first (so no port is in two chunks). One empty chunk for no ports.
fn port_chunks(ports: &[PortRange]) -> Vec<Vec<PortRange>> {
    if ports.len() <= MAX_PORT_RANGES_PER_SIDE {
        return vec![ports.to_vec()];
    }
    PortRange::coalesce(ports.to_vec())
        .chunks(MAX_PORT_RANGES_PER_SIDE)
        .map(<[PortRange]>::to_vec)
        .collect()
}

fn fill_ports(side: &mut SideConditions, ports: &[PortRange]) {
    fill_ranges(&mut side.ports, ports);
    // A chunk holds at most MAX_PORT_RANGES_PER_SIDE ranges.
    side.port_count = ports.len() as u8;
}

/// Encodes a side's set conditions and `notPorts`; its `ports` are filled per chunk.
fn encode_side(
    side: &SideMatch,
    name: &'static str,
    slot_of: &impl Fn(IpSetId) -> Option<u16>,
) -> Result<SideConditions, EncodeError> {
    let mut out = SideConditions::default();
    check_len(
        side.sets.len(),
        MAX_SET_MATCHES_PER_SIDE,
        name,
        "set conditions",
    )?;
    for (condition, set) in out.sets.iter_mut().zip(&side.sets) {
        *condition = SetCondition {
            slot: slot_of(set.set).ok_or(EncodeError::UnknownSet(set.set))?,
            kind: if set.member {
                SET_MEMBER
            } else {
                SET_NOT_MEMBER
            },
            _pad: 0,
        };
    }
    check_len(
        side.not_ports.len(),
        MAX_PORT_RANGES_PER_SIDE,
        name,
        "notPorts",
    )?;
    fill_ranges(&mut out.not_ports, &side.not_ports);
    // The lengths were checked against limits far below 256.
    out.set_count = side.sets.len() as u8;
    out.not_port_count = side.not_ports.len() as u8;
    Ok(out)
}

fn check_len(
    count: usize,
    limit: usize,
    side: &'static str,
    list: &'static str,
) -> Result<(), EncodeError> {
    if count > limit {
        return Err(EncodeError::TooMany {
            what: match (side, list) {
                ("source", "set conditions") => "source set conditions",
                ("source", _) => "source notPorts",
                (_, "set conditions") => "destination set conditions",
                _ => "destination notPorts",
            },
            count,
            limit,
        });
    }
    Ok(())
}

fn fill_ranges(out: &mut [PortRangeEntry; MAX_PORT_RANGES_PER_SIDE], ranges: &[PortRange]) {
    for (entry, range) in out.iter_mut().zip(ranges) {
        *entry = PortRangeEntry {
            first: range.first,
            last: range.last,
        };
    }
}

/// Contiguous ranges of the rules map: first fit over the free ranges.
#[derive(Debug)]
pub struct RangeAllocator {
    /// Free ranges (start, len), sorted, never adjacent.
    free: Vec<(u32, u32)>,
    cooling: Vec<(Instant, u32, u32)>,
}

impl Default for RangeAllocator {
    fn default() -> Self {
        RangeAllocator {
            free: vec![(0, MAX_RULES)],
            cooling: Vec::new(),
        }
    }
}

impl RangeAllocator {
    /// A range of `len` slots, or `None` if no free range is that long.
    pub fn alloc(&mut self, len: u32) -> Option<TableRef> {
        if len == 0 {
            return Some(TableRef::default());
        }
        if let Some(table) = self.first_fit(len) {
            return Some(table);
        }
        self.warm_up();
        self.first_fit(len)
    }

    fn first_fit(&mut self, len: u32) -> Option<TableRef> {
        let index = self.free.iter().position(|(_, free)| *free >= len)?;
        let (start, free) = self.free[index];
        if free == len {
            self.free.remove(index);
        } else {
            self.free[index] = (start + len, free - len);
        }
        Some(TableRef { start, len })
    }

    /// Whether `slot` is in a free range: no table holds it and no packet can be walking
    /// it (a released range is not free before its reuse delay is over).
    pub fn is_free(&self, slot: u32) -> bool {
        self.free
            .iter()
            .any(|(start, len)| *start <= slot && slot - start < *len)
    }

    /// Returns a range; it becomes usable after the reuse delay.
    pub fn release(&mut self, table: TableRef) {
        if table.len > 0 {
            self.cooling.push((Instant::now(), table.start, table.len));
        }
    }

    /// Marks a range found in the kernel at start-up as used.
    pub fn reserve(&mut self, table: TableRef) {
        if table.len == 0 {
            return;
        }
        let end = table.start + table.len;
        let mut free = Vec::with_capacity(self.free.len() + 1);
        for (start, len) in self.free.drain(..) {
            let stop = start + len;
            if stop <= table.start || start >= end {
                free.push((start, len));
                continue;
            }
            if start < table.start {
                free.push((start, table.start - start));
            }
            if stop > end {
                free.push((end, stop - end));
            }
        }
        self.free = free;
    }

    fn warm_up(&mut self) {
        let now = Instant::now();
        let (warm, still): (Vec<_>, Vec<_>) = self
            .cooling
            .drain(..)
            .partition(|(since, _, _)| now.duration_since(*since) >= REUSE_DELAY);
        self.cooling = still;
        for (_, start, len) in warm {
            self.free.push((start, len));
        }
        self.free.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.free.len());
        for (start, len) in self.free.drain(..) {
            match merged.last_mut() {
                Some((last_start, last_len)) if *last_start + *last_len == start => {
                    *last_len += len;
                }
                _ => merged.push((start, len)),
            }
        }
        self.free = merged;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{IcmpMatch, SetMatch};

    fn rule() -> Rule {
        Rule::unconditional("default/allow-web/ingress/0", RuleAction::Allow)
    }

    /// The one entry of a rule that fits in one.
    fn encode_one(rule: &Rule, slot_of: impl Fn(IpSetId) -> Option<u16>) -> RuleEntry {
        match encode(rule, 7, slot_of).expect("encodes")[..] {
            [entry] => entry,
            ref entries => panic!("{} entries for {rule:?}", entries.len()),
        }
    }

    #[test]
    fn absent_conditions_set_no_flag() {
        let entry = encode_one(&rule(), |_| None);
        assert_eq!(entry.flags, RULE_INDEXED, "no condition flag");
        assert_eq!(entry.rule_index, 7);
        assert_eq!(entry.source.set_count + entry.destination.port_count, 0);
        assert_eq!(entry.action, ACTION_ALLOW);
    }

    #[test]
    fn every_field_is_encoded_with_its_flag() {
        let mut rule = rule();
        rule.action = RuleAction::Log;
        rule.protocol = Some(1);
        rule.not_protocol = Some(0);
        rule.icmp = Some(IcmpMatch {
            icmp_type: 8,
            code: Some(0),
        });
        rule.not_icmp = Some(IcmpMatch {
            icmp_type: 0,
            code: None,
        });
        rule.source.sets.push(SetMatch {
            set: IpSetId(3),
            member: false,
        });
        rule.destination.not_ports.push(PortRange {
            first: 10,
            last: 20,
        });
        let entry = encode_one(&rule, |id| (id == IpSetId(3)).then_some(42));
        assert_eq!(
            entry.flags,
            RULE_INDEXED
                | RULE_PROTOCOL
                | RULE_NOT_PROTOCOL
                | RULE_ICMP_TYPE
                | RULE_ICMP_CODE
                | RULE_NOT_ICMP_TYPE
        );
        assert_eq!(entry.not_protocol, 0, "protocol 0 is a real condition");
        assert_eq!(entry.action, ACTION_LOG);
        assert_eq!(entry.source.sets[0].slot, 42);
        assert_eq!(entry.source.sets[0].kind, SET_NOT_MEMBER);
        assert_eq!(entry.destination.not_port_count, 1);
        assert_eq!(entry.destination.not_ports[0].last, 20);
    }

    #[test]
    fn too_many_port_ranges_split_the_rule_into_consecutive_entries() {
        let mut rule = rule();
        rule.action = RuleAction::Log;
        rule.protocol = Some(6);
        // 22 ranges, out of order and overlapping: coalesced to 19 disjoint ones.
        rule.destination.ports = (0..20).rev().map(|p| PortRange::single(p * 10)).collect();
        rule.destination.ports.push(PortRange { first: 0, last: 5 });
        rule.destination.ports.push(PortRange { first: 6, last: 9 });
        rule.source.ports = (1..=9).map(|p| PortRange::single(p * 1000)).collect();
        let entries = encode(&rule, 3, |_| None).expect("encodes");
        assert_eq!(entries.len(), 6, "2 source chunks x 3 destination chunks");
        let mut destination_ports = Vec::new();
        for entry in &entries {
            assert_eq!(entry.action, ACTION_LOG);
            assert_eq!(entry.flags, RULE_INDEXED | RULE_PROTOCOL);
            assert_eq!(entry.rule_index, 3, "every entry names the rule");
            let side = &entry.destination;
            destination_ports.push(side.ports[..usize::from(side.port_count)].to_vec());
        }
        let r = |first, last| PortRangeEntry { first, last };
        let mut expected = vec![r(0, 10)];
        expected.extend((2..20).map(|p| r(p * 10, p * 10)));
        assert_eq!(destination_ports[0], expected[..8]);
        assert_eq!(destination_ports[1], expected[8..16]);
        assert_eq!(destination_ports[2], expected[16..]);
        assert_eq!(destination_ports[3..], destination_ports[..3]);
        assert_eq!(entries[0].source.port_count, 8);
        assert_eq!(entries[3].source.port_count, 1);
        assert_eq!(entries[3].source.ports[0], r(9000, 9000));
    }

    #[test]
    fn too_many_not_ports_is_an_error_naming_the_list() {
        let mut rule = rule();
        rule.destination.not_ports = (0..9).map(PortRange::single).collect();
        assert_eq!(
            encode(&rule, 0, |_| None),
            Err(EncodeError::TooMany {
                what: "destination notPorts",
                count: 9,
                limit: MAX_PORT_RANGES_PER_SIDE
            })
        );
    }

    #[test]
    fn ranges_do_not_overlap_and_reserved_ranges_are_skipped() {
        let mut ranges = RangeAllocator::default();
        ranges.reserve(TableRef { start: 0, len: 10 });
        let a = ranges.alloc(5).expect("space");
        let b = ranges.alloc(5).expect("space");
        assert_eq!(a.start, 10);
        assert_eq!(b.start, 15);
        assert!(ranges.alloc(MAX_RULES).is_none());
    }
}
