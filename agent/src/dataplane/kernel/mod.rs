//! The kernel dataplane: [`KernelDataplane`] turns calc's deltas into writes to the pinned
//! policy maps and attaches the policy programs to endpoints' host-side interfaces with
//! pinned TCX links, so enforcement outlives the process.
//!
//! Restart: [`KernelDataplane::open`] adopts what an earlier agent pinned (endpoints,
//! tables, IP set entries, links) and keeps enforcing it unchanged while calc replays the
//! desired state; a replayed endpoint gets its new table by a pointer flip and its links'
//! program replaced in place (`bpf_link_update`, no detach); at
//! [`sync_complete`](Dataplane::sync_complete) whatever was adopted and not replayed goes,
//! and so do pins of older layout versions.

mod blocks;
mod interfaces;
pub mod ipsets;
pub mod tables;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use aya::maps::{
    Array, HashMap as BpfHashMap, Map, MapError, PerCpuArray, PerCpuValues, RingBuf,
    lpm_trie::{Key, LpmTrie},
};
use aya::programs::links::FdLink;
use fedwall_common::conntrack::CONNTRACK_MAP;
use fedwall_common::policy::{
    ENDPOINTS_MAP, EndpointEntry, FLOW_EVENTS_MAP, FRAGMENTS_MAP, FlowEvent, IPSET_CLASSES_MAP,
    IPSET_HOSTS_MAP, IPSET_NETS_MAP, MAX_ENDPOINTS, MAX_RULES, MAX_RULES_PER_TABLE, PacketCounter,
    PolicyDir, RULE_BLOCKS_MAP, RULE_COUNTERS_MAP, RULE_HEADS_MAP, RULES_MAP, RuleEntry, SetBitmap,
    TableRef, VERDICTS_MAP, VerdictReason, verdict_index,
};
use fedwall_common::stats::PROTO_STATS_MAP;

pub use interfaces::{InterfaceResolver, RouteLookup, StaticInterfaces};
use ipsets::{LimitHit, Prefix, SetIndex, SetWrite};
use tables::{EncodeError, RangeAllocator};

use super::attach::PinnedAttachError;
use super::nat::{NAT_LINK_PREFIX, NAT_MAPS, NatCounts, NatState, Uplink, UplinkChoice};
use super::{
    Dataplane, DataplaneError, Delta, EndpointName, KernelPrograms, LocalEndpoint, PolicyDirection,
    RuleTable, TcProgram, Verdict,
};

/// Every map name of the current layout; other `fw_*` pins are stale.
const CURRENT_MAPS: [&str; 13] = [
    PROTO_STATS_MAP,
    ENDPOINTS_MAP,
    IPSET_HOSTS_MAP,
    IPSET_NETS_MAP,
    IPSET_CLASSES_MAP,
    RULES_MAP,
    RULE_HEADS_MAP,
    RULE_BLOCKS_MAP,
    RULE_COUNTERS_MAP,
    VERDICTS_MAP,
    FLOW_EVENTS_MAP,
    CONNTRACK_MAP,
    FRAGMENTS_MAP,
];

/// Directory (under the pin root) of the pinned links.
const LINKS_DIR: &str = "links";
/// Prefix of this version's link pins: `fw_pol_v1_<ifindex>_<direction>`.
const LINK_PREFIX: &str = "fw_pol_v1_";

fn dir_of(direction: PolicyDirection) -> PolicyDir {
    match direction {
        PolicyDirection::Ingress => PolicyDir::Ingress,
        PolicyDirection::Egress => PolicyDir::Egress,
    }
}

/// A policy program attached to an interface, pinned at `path`; we hold its fd.
#[derive(Debug)]
struct HeldLink {
    path: PathBuf,
    _link: FdLink,
}

/// An endpoint this instance enforces.
#[derive(Debug)]
struct Installed {
    ifindex: u32,
    entry: EndpointEntry,
    links: Vec<HeldLink>,
    /// What calc asked for, to install again if its interface changes.
    desired: LocalEndpoint,
}

/// Packets by direction and verdict reason, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerdictCounts {
    counters: Vec<PacketCounter>,
}

impl VerdictCounts {
    pub fn get(&self, dir: PolicyDirection, reason: VerdictReason) -> PacketCounter {
        self.counters
            .get(verdict_index(dir_of(dir), reason) as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Every (direction, reason) with its counter.
    pub fn iter(&self) -> impl Iterator<Item = (PolicyDirection, VerdictReason, PacketCounter)> {
        PolicyDirection::ALL.into_iter().flat_map(move |dir| {
            VerdictReason::ALL
                .into_iter()
                .map(move |reason| (dir, reason, self.get(dir, reason)))
        })
    }

    /// Reads the counters pinned under `pin_root` (works with the agent down).
    pub fn from_pin(pin_root: &Path) -> Result<Self, DataplaneError> {
        let map = pinned_map(pin_root, VERDICTS_MAP)?;
        Self::read(&map)
    }

    fn read(map: &Map) -> Result<Self, DataplaneError> {
        let array =
            PerCpuArray::<_, PacketCounter>::try_from(map).map_err(map_err(VERDICTS_MAP))?;
        let counters = (0..array.len())
            .map(|index| array.get(&index, 0).map(|values| sum(&values)))
            .collect::<Result<_, _>>()
            .map_err(map_err(VERDICTS_MAP))?;
        Ok(VerdictCounts { counters })
    }
}

pub(crate) fn sum(values: &PerCpuValues<PacketCounter>) -> PacketCounter {
    values
        .iter()
        .fold(PacketCounter::default(), |total, cpu| PacketCounter {
            packets: total.packets + cpu.packets,
            bytes: total.bytes + cpu.bytes,
        })
}

fn pinned_map(pin_root: &Path, name: &'static str) -> Result<Map, DataplaneError> {
    let path = pin_root.join(name);
    aya::maps::MapData::from_pin(&path)
        .and_then(Map::from_map_data)
        .map_err(|source| DataplaneError::PinnedMap { path, source })
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}

/// Whether a map write failed because the map is full.
pub(crate) fn is_full(error: &MapError) -> bool {
    matches!(error, MapError::SyscallError(e)
        if matches!(e.io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC | libc::ENOMEM)))
}

pub(crate) fn is_missing(error: &MapError) -> bool {
    matches!(error, MapError::KeyNotFound)
        || matches!(error, MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::ENOENT))
}

/// fedwall's policy dataplane in the kernel.
pub struct KernelDataplane {
    programs: KernelPrograms,
    resolver: Box<dyn InterfaceResolver + Send>,
    sets: SetIndex,
    ranges: RangeAllocator,
    blocks: blocks::BlockIndex,
    endpoints: BTreeMap<EndpointName, Installed>,
    /// Endpoints whose interface is not there (yet), with the reason; installed as soon as
    /// [`KernelDataplane::refresh_interfaces`] finds it.
    waiting: BTreeMap<EndpointName, (LocalEndpoint, String)>,
    /// Endpoint entries found pinned at start-up and not yet replayed, by ifindex.
    adopted: HashMap<u32, EndpointEntry>,
    /// Link pins of this version found at start-up and not yet taken over, by path.
    adopted_links: Vec<PathBuf>,
    adopting: bool,
    next_endpoint_id: u32,
    rejected: u64,
    nr_cpus: usize,
    nat: NatState,
    /// What NAT's uplinks follow, once [`KernelDataplane::follow_nat_uplinks`] said.
    uplink_choice: Option<UplinkChoice>,
}

impl KernelDataplane {
    /// Loads the programs with their maps pinned under `pin_root`, and adopts whatever an
    /// earlier instance left there. Interfaces of endpoints are found with `resolver`.
    pub fn open(
        pin_root: &Path,
        resolver: impl InterfaceResolver + Send + 'static,
    ) -> Result<Self, DataplaneError> {
        let programs = KernelPrograms::load(pin_root)?;
        let nat = NatState::adopt(&programs)?;
        let nr_cpus = aya::util::nr_cpus()
            .map(|n| n.get() as usize)
            .map_err(|(_, source)| DataplaneError::PinRoot {
                path: PathBuf::from("/sys/devices/system/cpu/possible"),
                source,
            })?;
        let mut dataplane = KernelDataplane {
            programs,
            resolver: Box::new(resolver),
            sets: SetIndex::default(),
            ranges: RangeAllocator::default(),
            blocks: blocks::BlockIndex::default(),
            endpoints: BTreeMap::new(),
            waiting: BTreeMap::new(),
            adopted: HashMap::new(),
            adopted_links: Vec::new(),
            adopting: true,
            next_endpoint_id: 1,
            rejected: 0,
            nr_cpus,
            nat,
            uplink_choice: None,
        };
        dataplane.adopt()?;
        Ok(dataplane)
    }

    pub fn programs_mut(&mut self) -> &mut KernelPrograms {
        &mut self.programs
    }

    pub fn pin_root(&self) -> &Path {
        self.programs.pin_root()
    }

    /// Updates rejected with an error since start-up.
    pub fn rejected_updates(&self) -> u64 {
        self.rejected
    }

    /// The interface index an endpoint is enforced on.
    pub fn ifindex(&self, endpoint: &EndpointName) -> Option<u32> {
        self.endpoints.get(endpoint).map(|e| e.ifindex)
    }

    /// The first slot in the rules map of rule `index` of an endpoint's table.
    pub fn rule_slot(
        &self,
        endpoint: &EndpointName,
        direction: PolicyDirection,
        index: usize,
    ) -> Option<u32> {
        self.rule_slots(endpoint, direction, index)
            .ok()?
            .first()
            .copied()
    }

    /// The slots in the rules map of rule `index` of an endpoint's table: one, or several
    /// for a rule split by its port ranges (see [`tables::encode`]).
    fn rule_slots(
        &self,
        endpoint: &EndpointName,
        direction: PolicyDirection,
        index: usize,
    ) -> Result<Vec<u32>, DataplaneError> {
        let Some(installed) = self.endpoints.get(endpoint) else {
            return Ok(Vec::new());
        };
        let table = installed.entry.tables[dir_of(direction) as usize];
        let rules =
            Array::<_, RuleEntry>::try_from(self.map(RULES_MAP)?).map_err(map_err(RULES_MAP))?;
        let mut slots = Vec::new();
        for slot in table.start..table.start + table.len {
            let rule = rules.get(&slot, 0).map_err(map_err(RULES_MAP))?;
            if tables::rule_index(&rule, slot - table.start) == index {
                slots.push(slot);
            }
        }
        Ok(slots)
    }

    /// Packets that matched one rule of an endpoint's table, summed over CPUs (and over
    /// the entries of a rule split by its port ranges).
    pub fn rule_counter(
        &self,
        endpoint: &EndpointName,
        direction: PolicyDirection,
        index: usize,
    ) -> Result<PacketCounter, DataplaneError> {
        let map = self.map(RULE_COUNTERS_MAP)?;
        let array =
            PerCpuArray::<_, PacketCounter>::try_from(map).map_err(map_err(RULE_COUNTERS_MAP))?;
        let mut total = PacketCounter::default();
        for slot in self.rule_slots(endpoint, direction, index)? {
            let values = sum(&array.get(&slot, 0).map_err(map_err(RULE_COUNTERS_MAP))?);
            total.packets += values.packets;
            total.bytes += values.bytes;
        }
        Ok(total)
    }

    /// Makes `uplinks` the interfaces NAT-outgoing runs on (see [`Uplink::default_routes`]
    /// for the default), attaching its programs with pinned links.
    pub fn set_nat_uplinks(&mut self, uplinks: &[Uplink]) -> Result<(), DataplaneError> {
        self.nat.set_uplinks(&mut self.programs, uplinks)
    }

    /// Runs NAT-outgoing on the uplinks `choice` names, and follows them from then on: when
    /// links or routes change ([`Dataplane::refresh_interfaces`]) the choice is resolved
    /// again and a changed address or interface is taken over. Returns the uplinks now.
    pub fn follow_nat_uplinks(
        &mut self,
        choice: UplinkChoice,
    ) -> Result<Vec<Uplink>, DataplaneError> {
        let uplinks = choice.resolve()?;
        self.set_nat_uplinks(&uplinks)?;
        self.uplink_choice = Some(choice);
        Ok(uplinks)
    }

    /// Resolves the uplink choice again and applies it if the uplinks changed.
    fn refresh_uplinks(&mut self) -> Result<(), DataplaneError> {
        let Some(choice) = &self.uplink_choice else {
            return Ok(());
        };
        let mut wanted = choice.resolve()?;
        wanted.sort_by_key(|uplink| uplink.ifindex);
        let current: Vec<Uplink> = self.nat.uplinks().cloned().collect();
        if wanted != current {
            tracing::info!(?wanted, ?current, "NAT-outgoing uplinks changed");
            self.set_nat_uplinks(&wanted)?;
        }
        Ok(())
    }

    /// NAT packets per reason, summed over CPUs.
    pub fn nat_counts(&self) -> Result<NatCounts, DataplaneError> {
        NatCounts::read(self.map(fedwall_common::nat::NAT_STATS_MAP)?)
    }

    pub fn verdicts(&self) -> Result<VerdictCounts, DataplaneError> {
        VerdictCounts::read(self.map(VERDICTS_MAP)?)
    }

    /// Takes every flow event waiting in the ring buffer.
    pub fn drain_events(&mut self) -> Result<Vec<FlowEvent>, DataplaneError> {
        let map = self.map_mut(FLOW_EVENTS_MAP)?;
        let mut ring = RingBuf::try_from(map).map_err(map_err(FLOW_EVENTS_MAP))?;
        let mut events = Vec::new();
        while let Some(item) = ring.next() {
            if item.len() >= size_of::<FlowEvent>() {
                // SAFETY: the kernel wrote a whole FlowEvent (repr(C), any bit pattern is
                // valid); read_unaligned copes with the ring's 8-byte alignment.
                events.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
            }
        }
        Ok(events)
    }

    fn map(&self, name: &'static str) -> Result<&Map, DataplaneError> {
        self.programs.map(name)
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, DataplaneError> {
        self.programs.map_mut(name)
    }

    /// Reads what an earlier instance pinned: endpoint entries (their table ranges stay
    /// reserved), IP set entries (kept in force until the resync completes) and links.
    fn adopt(&mut self) -> Result<(), DataplaneError> {
        let endpoints: Vec<(u32, EndpointEntry)> = {
            let map = BpfHashMap::<_, u32, EndpointEntry>::try_from(self.map(ENDPOINTS_MAP)?)
                .map_err(map_err(ENDPOINTS_MAP))?;
            map.iter()
                .collect::<Result<_, _>>()
                .map_err(map_err(ENDPOINTS_MAP))?
        };
        for (ifindex, entry) in endpoints {
            for table in entry.tables {
                self.ranges.reserve(table);
            }
            self.next_endpoint_id = self.next_endpoint_id.max(entry.endpoint_id + 1);
            self.adopted.insert(ifindex, entry);
        }
        let mut bitmap_of = HashMap::new();
        let mut found = Vec::new();
        {
            let hosts = BpfHashMap::<_, [u8; 16], u32>::try_from(self.map(IPSET_HOSTS_MAP)?)
                .map_err(map_err(IPSET_HOSTS_MAP))?;
            for item in hosts.iter() {
                let (addr, class) = item.map_err(map_err(IPSET_HOSTS_MAP))?;
                let prefix = Prefix {
                    addr: u128::from_be_bytes(addr),
                    len: 128,
                };
                found.push((prefix, class));
            }
            let nets = LpmTrie::<_, [u8; 16], u32>::try_from(self.map(IPSET_NETS_MAP)?)
                .map_err(map_err(IPSET_NETS_MAP))?;
            for item in nets.iter() {
                let (key, class) = item.map_err(map_err(IPSET_NETS_MAP))?;
                let prefix = Prefix {
                    addr: u128::from_be_bytes(key.data()),
                    len: key.prefix_len() as u8,
                };
                found.push((prefix, class));
            }
        }
        {
            let classes = Array::<_, SetBitmap>::try_from(self.map(IPSET_CLASSES_MAP)?)
                .map_err(map_err(IPSET_CLASSES_MAP))?;
            for (_, class) in &found {
                if !bitmap_of.contains_key(class) {
                    let bitmap = classes.get(class, 0).map_err(map_err(IPSET_CLASSES_MAP))?;
                    bitmap_of.insert(*class, bitmap);
                }
            }
        }
        for (prefix, class) in found {
            let bitmap = bitmap_of.get(&class).copied().unwrap_or_default();
            self.sets.adopt(prefix, class, bitmap);
        }
        let links_dir = self.pin_root().join(LINKS_DIR);
        if let Ok(entries) = std::fs::read_dir(&links_dir) {
            self.adopted_links = entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| {
                    path.file_name()
                        .is_some_and(|name| name.to_string_lossy().starts_with(LINK_PREFIX))
                })
                .collect();
        }
        Ok(())
    }

    fn apply_set_writes(&mut self, writes: Vec<SetWrite>) -> Result<(), DataplaneError> {
        for write in writes {
            match write {
                SetWrite::Class { class, bitmap } => {
                    let mut classes =
                        Array::<_, SetBitmap>::try_from(self.map_mut(IPSET_CLASSES_MAP)?)
                            .map_err(map_err(IPSET_CLASSES_MAP))?;
                    classes
                        .set(class, &*bitmap, 0)
                        .map_err(map_err(IPSET_CLASSES_MAP))?;
                }
                SetWrite::Prefix { prefix, class } if prefix.is_host() => {
                    let mut hosts =
                        BpfHashMap::<_, [u8; 16], u32>::try_from(self.map_mut(IPSET_HOSTS_MAP)?)
                            .map_err(map_err(IPSET_HOSTS_MAP))?;
                    hosts
                        .insert(&prefix.bytes(), &class, 0)
                        .map_err(map_err(IPSET_HOSTS_MAP))?;
                }
                SetWrite::Prefix { prefix, class } => {
                    let mut nets =
                        LpmTrie::<_, [u8; 16], u32>::try_from(self.map_mut(IPSET_NETS_MAP)?)
                            .map_err(map_err(IPSET_NETS_MAP))?;
                    nets.insert(&Key::new(u32::from(prefix.len), prefix.bytes()), &class, 0)
                        .map_err(map_err(IPSET_NETS_MAP))?;
                }
                SetWrite::RemovePrefix { prefix } if prefix.is_host() => {
                    let mut hosts =
                        BpfHashMap::<_, [u8; 16], u32>::try_from(self.map_mut(IPSET_HOSTS_MAP)?)
                            .map_err(map_err(IPSET_HOSTS_MAP))?;
                    match hosts.remove(&prefix.bytes()) {
                        Err(e) if !is_missing(&e) => return Err(map_err(IPSET_HOSTS_MAP)(e)),
                        _ => {}
                    }
                }
                SetWrite::RemovePrefix { prefix } => {
                    let mut nets =
                        LpmTrie::<_, [u8; 16], u32>::try_from(self.map_mut(IPSET_NETS_MAP)?)
                            .map_err(map_err(IPSET_NETS_MAP))?;
                    match nets.remove(&Key::new(u32::from(prefix.len), prefix.bytes())) {
                        Err(e) if !is_missing(&e) => return Err(map_err(IPSET_NETS_MAP)(e)),
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// Encodes an endpoint's table for one direction (a rule may take several entries).
    fn encode_table(
        &self,
        endpoint: &LocalEndpoint,
        direction: PolicyDirection,
        table: &RuleTable,
    ) -> Result<Vec<RuleEntry>, DataplaneError> {
        let too_large = |rules| DataplaneError::TableTooLarge {
            endpoint: endpoint.name.clone(),
            direction: direction.name(),
            map: RULES_MAP,
            rules,
            limit: MAX_RULES_PER_TABLE as usize,
        };
        if table.rules.len() > MAX_RULES_PER_TABLE as usize {
            return Err(too_large(table.rules.len()));
        }
        let mut entries = Vec::with_capacity(table.rules.len());
        for (index, rule) in table.rules.iter().enumerate() {
            // The table holds at most MAX_RULES_PER_TABLE (4,096) rules.
            let encoded =
                tables::encode(rule, index as u16, |set| self.sets.slot(set)).map_err(|error| {
                    match error {
                        EncodeError::UnknownSet(set) => DataplaneError::UnknownIpSet {
                            delta: "an endpoint's rule table",
                            set,
                        },
                        EncodeError::TooMany { what, count, limit } => {
                            DataplaneError::RuleTooComplex {
                                endpoint: endpoint.name.clone(),
                                direction: direction.name(),
                                rule: rule.origin.clone(),
                                what,
                                count,
                                limit,
                                map: RULES_MAP,
                            }
                        }
                    }
                })?;
            entries.extend(encoded);
        }
        if entries.len() > MAX_RULES_PER_TABLE as usize {
            return Err(too_large(entries.len()));
        }
        Ok(entries)
    }

    /// Writes rules to a fresh range and zeroes their counters; nothing points at the range yet.
    fn write_table(&mut self, rules: &[RuleEntry]) -> Result<TableRef, DataplaneError> {
        let table =
            self.ranges
                .alloc(rules.len() as u32)
                .ok_or_else(|| DataplaneError::MapFull {
                    map: RULES_MAP,
                    object: format!("a table of {} rules", rules.len()),
                    limit: MAX_RULES as usize,
                })?;
        let nr_cpus = self.nr_cpus;
        let zero = || {
            PerCpuValues::try_from(vec![PacketCounter::default(); nr_cpus]).map_err(|e| {
                DataplaneError::Map {
                    map: RULE_COUNTERS_MAP,
                    source: MapError::from(aya::sys::SyscallError {
                        call: "nr_cpus",
                        io_error: e,
                    }),
                }
            })
        };
        for (offset, rule) in rules.iter().enumerate() {
            let slot = table.start + offset as u32;
            let mut array = Array::<_, RuleEntry>::try_from(self.map_mut(RULES_MAP)?)
                .map_err(map_err(RULES_MAP))?;
            array.set(slot, rule, 0).map_err(map_err(RULES_MAP))?;
            let mut counters =
                PerCpuArray::<_, PacketCounter>::try_from(self.map_mut(RULE_COUNTERS_MAP)?)
                    .map_err(map_err(RULE_COUNTERS_MAP))?;
            counters
                .set(slot, zero()?, 0)
                .map_err(map_err(RULE_COUNTERS_MAP))?;
        }
        self.write_heads_and_blocks(table, rules)?;
        Ok(table)
    }

    /// The interface that leads to an endpoint; never a NAT uplink.
    fn resolve(&self, endpoint: &LocalEndpoint) -> Result<u32, DataplaneError> {
        let ifindex = self.resolver.resolve(endpoint)?;
        match self.nat.uplinks().find(|uplink| uplink.ifindex == ifindex) {
            Some(uplink) => Err(DataplaneError::NoInterface {
                endpoint: endpoint.name.clone(),
                reason: format!(
                    "the route to it leaves by uplink {}, not by a pod's interface",
                    uplink.name
                ),
            }),
            None => Ok(ifindex),
        }
    }

    fn set_endpoint(&mut self, endpoint: &LocalEndpoint) -> Result<(), DataplaneError> {
        let resolved = self.resolve(endpoint);
        self.place(endpoint, resolved)
    }

    /// Installs an endpoint on the interface `resolved` names, or parks it while none does.
    fn place(
        &mut self,
        endpoint: &LocalEndpoint,
        resolved: Result<u32, DataplaneError>,
    ) -> Result<(), DataplaneError> {
        match resolved {
            Ok(ifindex) => {
                self.install(endpoint, ifindex)?;
                self.waiting.remove(&endpoint.name);
                Ok(())
            }
            Err(DataplaneError::NoInterface { reason, .. }) => self.wait(endpoint, reason),
            Err(error) => Err(error),
        }
    }

    /// Parks an endpoint until its interface shows up; whatever was installed for it goes
    /// (its interface is gone, or no longer leads to it).
    fn wait(&mut self, endpoint: &LocalEndpoint, reason: String) -> Result<(), DataplaneError> {
        // Reject a table the kernel cannot hold now, not when the interface appears.
        for direction in PolicyDirection::ALL {
            if let Some(table) = endpoint.table(direction) {
                self.encode_table(endpoint, direction, table)?;
            }
        }
        if let Some(previous) = self.endpoints.remove(&endpoint.name) {
            self.remove_installed(previous)?;
        }
        if self
            .waiting
            .get(&endpoint.name)
            .is_none_or(|(_, r)| *r != reason)
        {
            tracing::info!(endpoint = %endpoint.name, %reason, "endpoint waits for its interface");
        }
        self.waiting
            .insert(endpoint.name.clone(), (endpoint.clone(), reason));
        Ok(())
    }

    /// Writes an endpoint's tables, flips its entry, and attaches its programs to `ifindex`.
    fn install(&mut self, endpoint: &LocalEndpoint, ifindex: u32) -> Result<(), DataplaneError> {
        let encoded = PolicyDirection::ALL.map(|direction| {
            endpoint
                .table(direction)
                .map(|table| self.encode_table(endpoint, direction, table))
                .transpose()
        });
        let [ingress, egress] = encoded;
        let encoded = [ingress?, egress?];
        let mut entry = EndpointEntry {
            endpoint_id: match (
                self.endpoints.get(&endpoint.name),
                self.adopted.get(&ifindex),
            ) {
                (Some(installed), _) => installed.entry.endpoint_id,
                (None, Some(adopted)) => adopted.endpoint_id,
                (None, None) => {
                    self.next_endpoint_id += 1;
                    self.next_endpoint_id - 1
                }
            },
            ..EndpointEntry::default()
        };
        let mut written = Vec::new();
        for direction in PolicyDirection::ALL {
            let dir = dir_of(direction);
            let (Some(rules), Some(table)) = (&encoded[dir as usize], endpoint.table(direction))
            else {
                continue;
            };
            match self.write_table(rules) {
                Ok(range) => {
                    written.push(range);
                    entry.tables[dir as usize] = range;
                }
                Err(error) => {
                    for range in written {
                        self.ranges.release(range);
                    }
                    return Err(error);
                }
            }
            entry.flags |= dir.policy_flag();
            if table.default == Verdict::Allow {
                entry.flags |= dir.default_allow_flag();
            }
        }
        // The flip: one hash update makes both new tables live at once.
        let flipped = BpfHashMap::<_, u32, EndpointEntry>::try_from(self.map_mut(ENDPOINTS_MAP)?)
            .map_err(map_err(ENDPOINTS_MAP))
            .and_then(|mut map| {
                map.insert(&ifindex, &entry, 0).map_err(|e| {
                    if is_full(&e) {
                        DataplaneError::MapFull {
                            map: ENDPOINTS_MAP,
                            object: format!("endpoint {}", endpoint.name),
                            limit: MAX_ENDPOINTS as usize,
                        }
                    } else {
                        map_err(ENDPOINTS_MAP)(e)
                    }
                })
            });
        if let Err(error) = flipped {
            for range in written {
                self.ranges.release(range);
            }
            return Err(error);
        }
        let previous = self.endpoints.remove(&endpoint.name);
        let adopted = self.adopted.remove(&ifindex);
        for table in adopted.iter().flat_map(|e| e.tables) {
            self.ranges.release(table);
        }
        let links = match previous {
            Some(previous) if previous.ifindex == ifindex => {
                for table in previous.entry.tables {
                    self.ranges.release(table);
                }
                previous.links
            }
            other => {
                let links = self.attach(&endpoint.name, ifindex)?;
                if let Some(previous) = other {
                    self.remove_installed(previous)?;
                }
                links
            }
        };
        self.endpoints.insert(
            endpoint.name.clone(),
            Installed {
                ifindex,
                entry,
                links,
                desired: endpoint.clone(),
            },
        );
        Ok(())
    }

    /// Attaches both policy programs to `ifindex`: a pinned link of this version found at
    /// start-up gets the new program in place; otherwise a new TCX link is made and pinned.
    fn attach(
        &mut self,
        endpoint: &EndpointName,
        ifindex: u32,
    ) -> Result<Vec<HeldLink>, DataplaneError> {
        let links_dir = self.pin_root().join(LINKS_DIR);
        std::fs::create_dir_all(&links_dir).map_err(|source| DataplaneError::Link {
            endpoint: endpoint.clone(),
            path: links_dir.clone(),
            source,
        })?;
        let mut held = Vec::new();
        for dir in PolicyDir::ALL {
            let program = TcProgram::policy(dir);
            let path = links_dir.join(format!("{LINK_PREFIX}{ifindex}_{}", dir.name()));
            let link_error = |path: &Path, source: std::io::Error| DataplaneError::Link {
                endpoint: endpoint.clone(),
                path: path.to_owned(),
                source,
            };
            let adopt = match self.adopted_links.iter().position(|p| *p == path) {
                Some(position) => {
                    self.adopted_links.swap_remove(position);
                    true
                }
                None => false,
            };
            let fd_link = self
                .programs
                .attach_pinned(program, ifindex, &path, adopt)
                .map_err(|error| match error {
                    PinnedAttachError::Pin(source) => link_error(&path, source),
                    PinnedAttachError::Attach(error) => error,
                })?;
            held.push(HeldLink {
                path,
                _link: fd_link,
            });
        }
        Ok(held)
    }

    /// Detaches an endpoint's programs (removing the pin and dropping our fd releases the
    /// link), then forgets its entry and frees its tables.
    fn remove_installed(&mut self, installed: Installed) -> Result<(), DataplaneError> {
        for link in &installed.links {
            remove_pin(&link.path)?;
        }
        drop(installed.links);
        self.remove_entry(installed.ifindex)?;
        for table in installed.entry.tables {
            self.ranges.release(table);
        }
        Ok(())
    }

    fn remove_entry(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        let mut map = BpfHashMap::<_, u32, EndpointEntry>::try_from(self.map_mut(ENDPOINTS_MAP)?)
            .map_err(map_err(ENDPOINTS_MAP))?;
        match map.remove(&ifindex) {
            Err(e) if !is_missing(&e) => Err(map_err(ENDPOINTS_MAP)(e)),
            _ => Ok(()),
        }
    }

    fn apply_delta(&mut self, delta: &Delta) -> Result<(), DataplaneError> {
        match delta {
            Delta::IpSetCreated { id } => {
                if self.sets.contains_set(*id) {
                    return Err(DataplaneError::DuplicateIpSet { set: *id });
                }
                self.sets.create(*id).map_err(|hit| limit_error(hit, *id))?;
            }
            Delta::IpSetMembers { id, added, removed } => {
                if !self.sets.contains_set(*id) {
                    return Err(DataplaneError::UnknownIpSet {
                        delta: "a member update",
                        set: *id,
                    });
                }
                let writes = self
                    .sets
                    .update(*id, added, removed)
                    .map_err(|hit| limit_error(hit, *id))?;
                self.apply_set_writes(writes)?;
            }
            Delta::IpSetDeleted { id } => {
                if !self.sets.contains_set(*id) {
                    return Err(DataplaneError::UnknownIpSet {
                        delta: "a set deletion",
                        set: *id,
                    });
                }
                let writes = self.sets.delete(*id);
                self.apply_set_writes(writes)?;
            }
            Delta::EndpointSet(endpoint) => self.set_endpoint(endpoint)?,
            Delta::EndpointDeleted { name } => {
                self.waiting.remove(name);
                if let Some(installed) = self.endpoints.remove(name) {
                    self.remove_installed(installed)?;
                }
            }
            Delta::PoolSet(pool) => self.nat.pool_set(&mut self.programs, pool)?,
            Delta::PoolDeleted { cidr } => self.nat.pool_deleted(&mut self.programs, cidr)?,
        }
        Ok(())
    }

    /// Removes pins of other layout versions: maps not in [`CURRENT_MAPS`] and links
    /// without this version's prefix.
    fn remove_stale_pins(&mut self) -> Result<(), DataplaneError> {
        let root = self.pin_root().to_owned();
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_file = entry.file_type().is_ok_and(|t| t.is_file());
                let current =
                    CURRENT_MAPS.contains(&name.as_str()) || NAT_MAPS.contains(&name.as_str());
                if is_file && name.starts_with("fw_") && !current {
                    remove_pin(&entry.path())?;
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(root.join(LINKS_DIR)) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with(LINK_PREFIX) && !name.starts_with(NAT_LINK_PREFIX) {
                    remove_pin(&entry.path())?;
                }
            }
        }
        Ok(())
    }
}

/// What [`cleanup`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    pub links: usize,
    pub maps: usize,
}

/// Removes every link and map fedwall pinned under `pin_root`, for uninstall: a link goes
/// (its program detaches) once its pin is removed and no process holds it, so stop the
/// agent first. Files that are not fedwall's are left alone, and so is the directory if
/// anything else is in it.
pub fn cleanup(pin_root: &Path) -> Result<Cleanup, DataplaneError> {
    let mut removed = Cleanup::default();
    let ours = |entry: &std::fs::DirEntry| {
        entry.file_name().to_string_lossy().starts_with("fw_")
            && entry.file_type().is_ok_and(|t| t.is_file())
    };
    let links_dir = pin_root.join(LINKS_DIR);
    if let Ok(entries) = std::fs::read_dir(&links_dir) {
        for entry in entries.flatten().filter(ours) {
            remove_pin(&entry.path())?;
            removed.links += 1;
        }
    }
    if let Ok(entries) = std::fs::read_dir(pin_root) {
        for entry in entries.flatten().filter(ours) {
            remove_pin(&entry.path())?;
            removed.maps += 1;
        }
    }
    // Only empty directories go; a not-empty or missing one stays as it is.
    let _ = std::fs::remove_dir(&links_dir);
    let _ = std::fs::remove_dir(pin_root);
    Ok(removed)
}

pub(crate) fn remove_pin(path: &Path) -> Result<(), DataplaneError> {
    match std::fs::remove_file(path) {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
            Err(DataplaneError::StalePin {
                path: path.to_owned(),
                source,
            })
        }
        _ => Ok(()),
    }
}

fn limit_error(hit: LimitHit, set: super::IpSetId) -> DataplaneError {
    DataplaneError::MapFull {
        map: hit.map,
        object: set.to_string(),
        limit: hit.limit,
    }
}

impl Dataplane for KernelDataplane {
    fn apply(&mut self, delta: &Delta) -> Result<(), DataplaneError> {
        let result = self.apply_delta(delta);
        if let Err(error) = &result {
            self.rejected += 1;
            tracing::warn!(%error, "dataplane update rejected");
        }
        result
    }

    fn sync_complete(&mut self) -> Result<(), DataplaneError> {
        if self.adopting {
            let writes = self.sets.finish_adoption();
            self.apply_set_writes(writes)?;
            self.adopting = false;
        }
        self.nat.sync_complete(&mut self.programs)?;
        // Adopted endpoints calc did not replay are gone: their links, entries, tables.
        for path in std::mem::take(&mut self.adopted_links) {
            remove_pin(&path)?;
        }
        for (ifindex, entry) in std::mem::take(&mut self.adopted) {
            self.remove_entry(ifindex)?;
            for table in entry.tables {
                self.ranges.release(table);
            }
        }
        self.remove_stale_pins()
    }

    /// Looks again for every endpoint's interface (links or routes changed): installs
    /// waiting endpoints whose interface appeared, moves endpoints whose interface went away
    /// back to waiting, and follows an endpoint to a new interface. Returns what failed.
    fn refresh_interfaces(&mut self) -> Vec<DataplaneError> {
        let mut errors = Vec::new();
        // Uplinks first: an endpoint's route must not lead to one.
        if let Err(error) = self.refresh_uplinks() {
            errors.push(error);
        }
        let mut moved = Vec::new();
        for (endpoint, _) in self.waiting.values() {
            let resolved = self.resolve(endpoint);
            if resolved.is_ok() {
                moved.push((endpoint.clone(), resolved));
            }
        }
        for installed in self.endpoints.values() {
            let resolved = self.resolve(&installed.desired);
            if resolved.as_ref().ok() != Some(&installed.ifindex) {
                moved.push((installed.desired.clone(), resolved));
            }
        }
        for (endpoint, resolved) in moved {
            if let Err(error) = self.place(&endpoint, resolved) {
                self.rejected += 1;
                errors.push(error);
            }
        }
        errors
    }

    fn expire(&mut self) {
        if let Err(error) = self.nat.expire(&mut self.programs) {
            tracing::warn!(error = %crate::error_chain(&error), "cannot start counting the NAT flows");
        }
    }

    fn drain_flow_events(&mut self) -> Vec<super::FlowRecord> {
        let events = match self.drain_events() {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(%error, "cannot read the flow events");
                return Vec::new();
            }
        };
        events
            .into_iter()
            .map(|event| {
                let direction = if event.direction == PolicyDir::Egress as u8 {
                    PolicyDirection::Egress
                } else {
                    PolicyDirection::Ingress
                };
                let installed = self
                    .endpoints
                    .iter()
                    .find(|(_, installed)| installed.entry.endpoint_id == event.endpoint_id);
                let rule = installed.and_then(|(_, installed)| {
                    let table = installed.desired.table(direction)?;
                    let rule = table.rules.get(usize::try_from(event.rule_index).ok()?)?;
                    Some(rule.origin.clone())
                });
                let addr = |bytes: [u8; 16], port: u16| {
                    std::net::SocketAddr::new(std::net::Ipv6Addr::from(bytes).to_canonical(), port)
                };
                super::FlowRecord {
                    logged: event.kind == fedwall_common::policy::EVENT_LOG,
                    direction,
                    endpoint: installed.map(|(name, _)| name.clone()),
                    rule,
                    protocol: event.protocol,
                    src: addr(event.src, event.src_port),
                    dst: addr(event.dst, event.dst_port),
                }
            })
            .collect()
    }

    fn status(&self) -> super::DataplaneStatus {
        let mut status = super::DataplaneStatus::default();
        let (hosts, nets, classes) = self.sets.usage();
        let installed_rules: u32 = self
            .endpoints
            .values()
            .map(|e| e.entry.tables.iter().map(|t| t.len).sum::<u32>())
            .sum();
        let adopted_rules: u32 = self
            .adopted
            .values()
            .map(|e| e.tables.iter().map(|t| t.len).sum::<u32>())
            .sum();
        for (map, used, capacity) in [
            (
                ENDPOINTS_MAP,
                self.endpoints.len() + self.adopted.len(),
                MAX_ENDPOINTS,
            ),
            (
                RULES_MAP,
                (installed_rules + adopted_rules) as usize,
                MAX_RULES,
            ),
            (
                IPSET_HOSTS_MAP,
                hosts,
                fedwall_common::policy::MAX_SET_HOSTS,
            ),
            (IPSET_NETS_MAP, nets, fedwall_common::policy::MAX_SET_NETS),
            (
                IPSET_CLASSES_MAP,
                classes,
                fedwall_common::policy::MAX_SET_CLASSES,
            ),
        ] {
            status.maps.push(super::MapUsage {
                map,
                used: used as u64,
                capacity: u64::from(capacity),
            });
        }
        status.maps.push(self.nat.mapping_usage());
        status.waiting_for_interface = self
            .waiting
            .iter()
            .map(|(name, (_, reason))| (name.clone(), reason.clone()))
            .collect();
        status
    }

    fn packet_counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut packets = Vec::new();
        match self.verdicts() {
            Ok(verdicts) => {
                for (direction, reason, counter) in verdicts.iter() {
                    let family = match direction {
                        PolicyDirection::Ingress => "policy_ingress",
                        PolicyDirection::Egress => "policy_egress",
                    };
                    packets.push((family, reason.name(), counter.packets));
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the policy verdict counters"),
        }
        match self.nat_counts() {
            Ok(nat) => {
                for reason in fedwall_common::nat::NatReason::ALL {
                    packets.push(("nat", reason.name(), nat.get(reason).packets));
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the NAT counters"),
        }
        packets
    }
}
