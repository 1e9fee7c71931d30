//! IP sets as the kernel looks them up: every member prefix of every set, flattened so that
//! one lookup of an address answers "which sets is it in". A prefix's *effective* bitmap
//! holds the slots of its own sets and of every prefix covering it; prefixes with equal
//! bitmaps share one membership class. This module is pure bookkeeping: it says which map
//! writes a change needs, in an order that is safe to apply one by one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use fedwall_common::net::{V4_MAPPED_PREFIX_BITS, v4_mapped};
use fedwall_common::policy::{
    CLASS_NONE, MAX_SET_CLASSES, MAX_SET_HOSTS, MAX_SET_NETS, MAX_SET_SLOTS, SetBitmap,
};
use ipnet::IpNet;

use crate::dataplane::IpSetId;

/// How long a freed class id or rule range waits before reuse: longer than any program
/// run that may still hold the old value (microseconds), so a packet never reads a class
/// or rule that changed meaning under it.
pub const REUSE_DELAY: Duration = Duration::from_secs(1);

/// A prefix in the 128-bit (IPv4-mapped) space: the network address and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    pub addr: u128,
    pub len: u8,
}

impl Prefix {
    pub fn of(net: &IpNet) -> Prefix {
        let (addr, len) = match net.trunc() {
            IpNet::V4(v4) => (
                u128::from_be_bytes(v4_mapped(v4.addr().octets())),
                V4_MAPPED_PREFIX_BITS as u8 + v4.prefix_len(),
            ),
            IpNet::V6(v6) => (u128::from_be_bytes(v6.addr().octets()), v6.prefix_len()),
        };
        Prefix { addr, len }
    }

    pub fn bytes(&self) -> [u8; 16] {
        self.addr.to_be_bytes()
    }

    pub fn is_host(&self) -> bool {
        self.len == 128
    }

    fn mask(len: u8) -> u128 {
        if len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(len))
        }
    }

    /// The prefix of length `len` (<= self.len) containing this one.
    fn truncated(&self, len: u8) -> Prefix {
        Prefix {
            addr: self.addr & Self::mask(len),
            len,
        }
    }

    /// The last address this prefix covers.
    fn last(&self) -> u128 {
        self.addr | !Self::mask(self.len)
    }
}

/// The address of a packet as the maps hold it.
pub fn addr_bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// One write to the IP set maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetWrite {
    /// Write a class's bitmap (before anything points at it).
    Class { class: u32, bitmap: Box<SetBitmap> },
    /// Point a prefix at a class (a host entry for /128, a trie entry otherwise).
    Prefix { prefix: Prefix, class: u32 },
    /// Remove a prefix's entry.
    RemovePrefix { prefix: Prefix },
}

/// A limit of the kernel maps an update would exceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitHit {
    pub map: &'static str,
    pub limit: usize,
}

/// Kept small: there is one per member address (100,000s), and most are in a set or two,
/// so the slots are a short list rather than a 256-byte bitmap, and what the kernel holds
/// (own ∪ adopted ∪ the covering prefix's) is the bitmap of `class`.
#[derive(Clone, Debug, Default)]
struct PrefixState {
    /// Slots of the sets that have this exact prefix as a member, sorted.
    own: Vec<u16>,
    /// Slots found in the kernel at start-up, kept until the resync completes.
    adopted: Option<Box<SetBitmap>>,
    class: u32,
}

impl PrefixState {
    /// The slots this prefix itself brings: its own sets' and what was adopted.
    fn own_bitmap(&self) -> SetBitmap {
        let mut bitmap = self.adopted.as_deref().copied().unwrap_or_default();
        for slot in &self.own {
            bitmap.insert(*slot);
        }
        bitmap
    }
}

/// Hands out numbers (set slots, class ids), reusing freed ones after [`REUSE_DELAY`].
#[derive(Debug)]
struct Numbers {
    next: u32,
    limit: u32,
    ready: Vec<u32>,
    cooling: Vec<(Instant, u32)>,
    delay: Duration,
}

impl Numbers {
    fn new(first: u32, limit: u32, delay: Duration) -> Self {
        Numbers {
            next: first,
            limit,
            ready: Vec::new(),
            cooling: Vec::new(),
            delay,
        }
    }

    fn take(&mut self) -> Option<u32> {
        if let Some(n) = self.ready.pop() {
            return Some(n);
        }
        if self.next < self.limit {
            self.next += 1;
            return Some(self.next - 1);
        }
        let now = Instant::now();
        let delay = self.delay;
        let (warm, still): (Vec<_>, Vec<_>) = self
            .cooling
            .drain(..)
            .partition(|(since, _)| now.duration_since(*since) >= delay);
        self.cooling = still;
        self.ready.extend(warm.into_iter().map(|(_, n)| n));
        self.ready.pop()
    }

    fn free(&mut self, n: u32) {
        self.cooling.push((Instant::now(), n));
    }

    /// Marks `n` as in use (found in the kernel at start-up).
    fn reserve(&mut self, n: u32) {
        while self.next <= n {
            self.ready.push(self.next);
            self.next += 1;
        }
        self.ready.retain(|m| *m != n);
    }
}

/// Every set, its members, and the flattened prefixes the kernel holds.
#[derive(Debug)]
pub struct SetIndex {
    slots: HashMap<IpSetId, u16>,
    members: HashMap<IpSetId, BTreeSet<IpNet>>,
    prefixes: BTreeMap<Prefix, PrefixState>,
    /// How many prefixes of each length exist, to find covering prefixes quickly.
    lengths: [u32; 129],
    classes: HashMap<SetBitmap, (u32, u32)>,
    class_bitmaps: HashMap<u32, SetBitmap>,
    class_numbers: Numbers,
    slot_numbers: Numbers,
    /// Slots of the adopted state, held until the resync completes.
    adopted_slots: BTreeSet<u16>,
    hosts: usize,
    nets: usize,
}

impl Default for SetIndex {
    fn default() -> Self {
        Self::new(REUSE_DELAY)
    }
}

impl SetIndex {
    pub fn new(reuse_delay: Duration) -> Self {
        SetIndex {
            slots: HashMap::new(),
            members: HashMap::new(),
            prefixes: BTreeMap::new(),
            lengths: [0; 129],
            classes: HashMap::new(),
            class_bitmaps: HashMap::new(),
            // Class 0 is "in no set" and never stored.
            class_numbers: Numbers::new(CLASS_NONE + 1, MAX_SET_CLASSES, reuse_delay),
            slot_numbers: Numbers::new(0, MAX_SET_SLOTS, reuse_delay),
            adopted_slots: BTreeSet::new(),
            hosts: 0,
            nets: 0,
        }
    }

    pub fn slot(&self, set: IpSetId) -> Option<u16> {
        self.slots.get(&set).copied()
    }

    pub fn contains_set(&self, set: IpSetId) -> bool {
        self.slots.contains_key(&set)
    }

    pub fn set_count(&self) -> usize {
        self.slots.len()
    }

    /// Entries the kernel holds: host prefixes, other prefixes, membership classes.
    pub fn usage(&self) -> (usize, usize, usize) {
        (self.hosts, self.nets, self.class_bitmaps.len())
    }

    /// Creates an empty set with a slot of its own.
    pub fn create(&mut self, set: IpSetId) -> Result<u16, LimitHit> {
        let slot = self.slot_numbers.take().ok_or(LimitHit {
            map: fedwall_common::policy::IPSET_CLASSES_MAP,
            limit: MAX_SET_SLOTS as usize,
        })?;
        // MAX_SET_SLOTS fits in u16.
        let slot = slot as u16;
        self.slots.insert(set, slot);
        self.members.insert(set, BTreeSet::new());
        Ok(slot)
    }

    /// Adds and removes members of `set`; on a limit, changes nothing and says which.
    pub fn update(
        &mut self,
        set: IpSetId,
        added: &BTreeSet<IpNet>,
        removed: &BTreeSet<IpNet>,
    ) -> Result<Vec<SetWrite>, LimitHit> {
        let Some(slot) = self.slot(set) else {
            return Ok(Vec::new());
        };
        let members = self.members.entry(set).or_default();
        let really_removed: Vec<IpNet> = removed
            .iter()
            .filter(|net| members.remove(&net.trunc()))
            .copied()
            .collect();
        let really_added: Vec<IpNet> = added
            .iter()
            .map(IpNet::trunc)
            .filter(|net| members.insert(*net))
            .collect();
        let mut writes = Vec::new();
        for net in &really_removed {
            self.set_own(Prefix::of(net), slot, false, &mut writes);
        }
        for net in &really_added {
            self.set_own(Prefix::of(net), slot, true, &mut writes);
        }
        if let Some(hit) = self.limit_hit() {
            // Undo in memory; the writes of the attempt are dropped, none reached the kernel.
            let members = self.members.entry(set).or_default();
            for net in &really_added {
                members.remove(net);
            }
            members.extend(really_removed.iter().copied());
            let mut discard = Vec::new();
            for net in &really_added {
                self.set_own(Prefix::of(net), slot, false, &mut discard);
            }
            for net in &really_removed {
                self.set_own(Prefix::of(net), slot, true, &mut discard);
            }
            return Err(hit);
        }
        Ok(writes)
    }

    /// Removes a set with whatever members it still has.
    pub fn delete(&mut self, set: IpSetId) -> Vec<SetWrite> {
        let Some(slot) = self.slots.remove(&set) else {
            return Vec::new();
        };
        let mut writes = Vec::new();
        for net in self.members.remove(&set).unwrap_or_default() {
            self.set_own(Prefix::of(&net), slot, false, &mut writes);
        }
        self.slot_numbers.free(u32::from(slot));
        writes
    }

    fn limit_hit(&self) -> Option<LimitHit> {
        use fedwall_common::policy::{IPSET_CLASSES_MAP, IPSET_HOSTS_MAP, IPSET_NETS_MAP};
        if self.hosts > MAX_SET_HOSTS as usize {
            return Some(LimitHit {
                map: IPSET_HOSTS_MAP,
                limit: MAX_SET_HOSTS as usize,
            });
        }
        if self.nets > MAX_SET_NETS as usize {
            return Some(LimitHit {
                map: IPSET_NETS_MAP,
                limit: MAX_SET_NETS as usize,
            });
        }
        // One class id is reserved for "no set".
        if self.classes.len() >= MAX_SET_CLASSES as usize {
            return Some(LimitHit {
                map: IPSET_CLASSES_MAP,
                limit: MAX_SET_CLASSES as usize - 1,
            });
        }
        None
    }

    /// Sets or clears `slot` in `prefix`'s own bitmap and refreshes what depends on it.
    fn set_own(&mut self, prefix: Prefix, slot: u16, on: bool, writes: &mut Vec<SetWrite>) {
        let state = match self.prefixes.get_mut(&prefix) {
            Some(state) => state,
            None if on => {
                self.lengths[usize::from(prefix.len)] += 1;
                self.prefixes.entry(prefix).or_default()
            }
            None => return,
        };
        match (state.own.binary_search(&slot), on) {
            (Err(at), true) => state.own.insert(at, slot),
            (Ok(at), false) => {
                state.own.remove(at);
            }
            _ => {}
        }
        self.refresh_subtree(prefix, writes);
    }

    /// Recomputes the effective bitmap of `root` and of every prefix inside it (parents
    /// sort before their children), emitting the writes for those that changed.
    fn refresh_subtree(&mut self, root: Prefix, writes: &mut Vec<SetWrite>) {
        let range: Vec<Prefix> = self
            .prefixes
            .range(
                root..=Prefix {
                    addr: root.last(),
                    len: 128,
                },
            )
            .map(|(p, _)| *p)
            .filter(|p| p.len >= root.len)
            .collect();
        for prefix in range {
            let inherited = self.covering(prefix).unwrap_or(SetBitmap::EMPTY);
            let Some(state) = self.prefixes.get(&prefix) else {
                continue;
            };
            let own = state.own_bitmap();
            let effective = own.union(&inherited);
            let (old_class, old_effective) = (state.class, self.effective(state));
            if own.is_empty() {
                // No set names this prefix any more: it goes, and its children now inherit
                // from the next covering prefix (computed above for them in this pass).
                self.prefixes.remove(&prefix);
                self.lengths[usize::from(prefix.len)] -= 1;
                if old_class != CLASS_NONE {
                    writes.push(SetWrite::RemovePrefix { prefix });
                    self.count_entry(prefix, false);
                    self.release_class(old_class);
                }
                continue;
            }
            if effective == old_effective && old_class != CLASS_NONE {
                continue;
            }
            let class = self.intern(effective, writes);
            if old_class == CLASS_NONE {
                self.count_entry(prefix, true);
            }
            if let Some(state) = self.prefixes.get_mut(&prefix) {
                state.class = class;
            }
            writes.push(SetWrite::Prefix { prefix, class });
            if old_class != CLASS_NONE {
                self.release_class(old_class);
            }
        }
    }

    fn count_entry(&mut self, prefix: Prefix, added: bool) {
        let counter = if prefix.is_host() {
            &mut self.hosts
        } else {
            &mut self.nets
        };
        if added {
            *counter += 1;
        } else {
            *counter -= 1;
        }
    }

    /// The effective bitmap of the longest prefix strictly covering `prefix`.
    fn covering(&self, prefix: Prefix) -> Option<SetBitmap> {
        (0..prefix.len)
            .rev()
            .filter(|len| self.lengths[usize::from(*len)] > 0)
            .find_map(|len| self.prefixes.get(&prefix.truncated(len)))
            .map(|state| self.effective(state))
    }

    /// What the kernel holds for a prefix: its class's bitmap; nothing before it has one.
    fn effective(&self, state: &PrefixState) -> SetBitmap {
        self.class_bitmaps
            .get(&state.class)
            .filter(|_| state.class != CLASS_NONE)
            .copied()
            .unwrap_or_default()
    }

    /// The class of `bitmap`, creating it (and its write) if new; takes a reference.
    fn intern(&mut self, bitmap: SetBitmap, writes: &mut Vec<SetWrite>) -> u32 {
        if let Some((class, refs)) = self.classes.get_mut(&bitmap) {
            *refs += 1;
            return *class;
        }
        // limit_hit() rejects the update before the kernel would see an overflow; until
        // then an overflow reuses class 0's "no set" id, which is never written.
        let class = self.class_numbers.take().unwrap_or(CLASS_NONE);
        self.classes.insert(bitmap, (class, 1));
        self.class_bitmaps.insert(class, bitmap);
        writes.push(SetWrite::Class {
            class,
            bitmap: Box::new(bitmap),
        });
        class
    }

    fn release_class(&mut self, class: u32) {
        let Some(bitmap) = self.class_bitmaps.get(&class).copied() else {
            return;
        };
        if let Some((_, refs)) = self.classes.get_mut(&bitmap) {
            *refs -= 1;
            if *refs == 0 {
                self.classes.remove(&bitmap);
                self.class_bitmaps.remove(&class);
                if class != CLASS_NONE {
                    self.class_numbers.free(class);
                }
            }
        }
    }

    /// Takes in a prefix found in the kernel at start-up, with its class's bitmap: it is
    /// enforced as it is until [`finish_adoption`](Self::finish_adoption).
    pub fn adopt(&mut self, prefix: Prefix, class: u32, bitmap: SetBitmap) {
        for word in 0..bitmap.words.len() {
            let mut bits = bitmap.words[word];
            while bits != 0 {
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                let slot = (word * 64) as u32 + bit;
                if self.adopted_slots.insert(slot as u16) {
                    self.slot_numbers.reserve(slot);
                }
            }
        }
        if !self.class_bitmaps.contains_key(&class) {
            self.class_numbers.reserve(class);
            self.class_bitmaps.insert(class, bitmap);
            self.classes.insert(bitmap, (class, 0));
        }
        if let Some((_, refs)) = self.classes.get_mut(&bitmap) {
            *refs += 1;
        }
        if !self.prefixes.contains_key(&prefix) {
            self.lengths[usize::from(prefix.len)] += 1;
        }
        self.count_entry(prefix, true);
        let class = self.classes.get(&bitmap).map_or(CLASS_NONE, |(c, _)| *c);
        let state = self.prefixes.entry(prefix).or_default();
        state.adopted = Some(Box::new(bitmap));
        state.class = class;
    }

    /// The resync is complete: drops everything adopted that no set re-asserted, and the
    /// adopted slots no set uses.
    pub fn finish_adoption(&mut self) -> Vec<SetWrite> {
        let adopted: Vec<Prefix> = self
            .prefixes
            .iter()
            .filter(|(_, s)| s.adopted.is_some())
            .map(|(p, _)| *p)
            .collect();
        for prefix in &adopted {
            if let Some(state) = self.prefixes.get_mut(prefix) {
                state.adopted = None;
            }
        }
        let mut writes = Vec::new();
        // Parents first, so children inherit the refreshed bitmaps.
        for prefix in adopted {
            self.refresh_subtree(prefix, &mut writes);
        }
        let in_use: BTreeSet<u16> = self.slots.values().copied().collect();
        for slot in std::mem::take(&mut self.adopted_slots) {
            if !in_use.contains(&slot) {
                self.slot_numbers.free(u32::from(slot));
            }
        }
        writes
    }

    /// Whether `addr` is in `set`, as the kernel will answer it (for tests and inspection).
    pub fn effective_contains(&self, set: IpSetId, addr: IpAddr) -> bool {
        let Some(slot) = self.slot(set) else {
            return false;
        };
        let prefix = Prefix {
            addr: u128::from_be_bytes(addr_bytes(addr)),
            len: 128,
        };
        let state = self
            .prefixes
            .get(&prefix)
            .map(|s| self.effective(s))
            .or_else(|| self.covering(prefix));
        state.is_some_and(|bitmap| bitmap.contains(slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().expect("test CIDR")
    }

    fn set_of(items: &[&str]) -> BTreeSet<IpNet> {
        items.iter().map(|t| net(t)).collect()
    }

    /// Applies the writes to a model of the kernel maps and answers lookups like the
    /// kernel: host entry, else longest prefix, then the class bitmap.
    #[derive(Default)]
    struct KernelModel {
        classes: HashMap<u32, SetBitmap>,
        prefixes: BTreeMap<Prefix, u32>,
    }

    impl KernelModel {
        fn apply(&mut self, writes: &[SetWrite]) {
            for write in writes {
                match write {
                    SetWrite::Class { class, bitmap } => {
                        self.classes.insert(*class, **bitmap);
                    }
                    SetWrite::Prefix { prefix, class } => {
                        assert!(self.classes.contains_key(class), "class written first");
                        self.prefixes.insert(*prefix, *class);
                    }
                    SetWrite::RemovePrefix { prefix } => {
                        assert!(self.prefixes.remove(prefix).is_some(), "{prefix:?} existed");
                    }
                }
            }
        }

        fn contains(&self, slot: u16, addr: &str) -> bool {
            let addr: IpAddr = addr.parse().expect("test address");
            let host = u128::from_be_bytes(addr_bytes(addr));
            (0..=128u8)
                .rev()
                .find_map(|len| {
                    self.prefixes.get(
                        &Prefix {
                            addr: host,
                            len: 128,
                        }
                        .truncated(len),
                    )
                })
                .and_then(|class| self.classes.get(class))
                .is_some_and(|bitmap| bitmap.contains(slot))
        }
    }

    #[test]
    fn nested_members_are_flattened() {
        let mut index = SetIndex::new(Duration::ZERO);
        let mut kernel = KernelModel::default();
        let wide = index.create(IpSetId(1)).expect("slot");
        let narrow = index.create(IpSetId(2)).expect("slot");
        kernel.apply(
            &index
                .update(IpSetId(2), &set_of(&["10.1.2.3/32"]), &BTreeSet::new())
                .expect("fits"),
        );
        kernel.apply(
            &index
                .update(IpSetId(1), &set_of(&["10.0.0.0/8"]), &BTreeSet::new())
                .expect("fits"),
        );
        assert!(kernel.contains(wide, "10.1.2.3"), "the /8 covers the host");
        assert!(kernel.contains(narrow, "10.1.2.3"));
        assert!(kernel.contains(wide, "10.9.9.9"));
        assert!(!kernel.contains(narrow, "10.9.9.9"));
        assert!(!kernel.contains(wide, "11.0.0.1"));
        // Removing the /8 takes its slot out of the host's class too.
        kernel.apply(
            &index
                .update(IpSetId(1), &BTreeSet::new(), &set_of(&["10.0.0.0/8"]))
                .expect("fits"),
        );
        assert!(!kernel.contains(wide, "10.1.2.3"));
        assert!(kernel.contains(narrow, "10.1.2.3"));
    }

    #[test]
    fn identical_memberships_share_a_class() {
        let mut index = SetIndex::new(Duration::ZERO);
        index.create(IpSetId(1)).expect("slot");
        let writes = index
            .update(
                IpSetId(1),
                &set_of(&["192.0.2.1/32", "192.0.2.2/32", "2001:db8::1/128"]),
                &BTreeSet::new(),
            )
            .expect("fits");
        let classes = writes
            .iter()
            .filter(|w| matches!(w, SetWrite::Class { .. }))
            .count();
        assert_eq!(classes, 1, "{writes:?}");
    }

    #[test]
    fn deleting_a_set_removes_its_entries() {
        let mut index = SetIndex::new(Duration::ZERO);
        let mut kernel = KernelModel::default();
        let slot = index.create(IpSetId(7)).expect("slot");
        kernel.apply(
            &index
                .update(
                    IpSetId(7),
                    &set_of(&["192.0.2.0/24", "192.0.2.9/32"]),
                    &BTreeSet::new(),
                )
                .expect("fits"),
        );
        assert!(kernel.contains(slot, "192.0.2.9"));
        kernel.apply(&index.delete(IpSetId(7)));
        assert!(kernel.prefixes.is_empty(), "{:?}", kernel.prefixes);
    }

    #[test]
    fn adopted_state_is_kept_until_the_resync_completes() {
        let mut old = SetIndex::new(Duration::ZERO);
        let mut kernel = KernelModel::default();
        let old_slot = old.create(IpSetId(1)).expect("slot");
        kernel.apply(
            &old.update(IpSetId(1), &set_of(&["192.0.2.1/32"]), &BTreeSet::new())
                .expect("fits"),
        );
        // A new agent adopts what the kernel holds.
        let mut new = SetIndex::new(Duration::ZERO);
        for (prefix, class) in &kernel.prefixes {
            new.adopt(*prefix, *class, kernel.classes[class]);
        }
        let new_slot = new.create(IpSetId(1)).expect("slot");
        assert_ne!(
            new_slot, old_slot,
            "adopted slots are not reused during resync"
        );
        kernel.apply(
            &new.update(IpSetId(1), &set_of(&["192.0.2.1/32"]), &BTreeSet::new())
                .expect("fits"),
        );
        assert!(
            kernel.contains(old_slot, "192.0.2.1"),
            "old tables still match"
        );
        assert!(kernel.contains(new_slot, "192.0.2.1"));
        kernel.apply(&new.finish_adoption());
        assert!(!kernel.contains(old_slot, "192.0.2.1"));
        assert!(kernel.contains(new_slot, "192.0.2.1"));
    }
}
