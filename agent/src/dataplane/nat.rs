//! NAT-outgoing in the kernel dataplane: IP pools and the node's addresses go into the NAT
//! prefix trie, each uplink (address per family, port range) into the uplink map, and the
//! NAT programs onto the uplinks with pinned TCX links, so translation and its flows (in
//! their pinned table) outlive the agent. Expired flows need no removal (a new flow reuses
//! their slot); the agent counts the live ones (`fw_nat_sweep`) once a second on a thread
//! of its own, for its metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use aya::maps::{
    HashMap as BpfHashMap, Map, MapError, PerCpuArray, lpm_trie::Key, lpm_trie::LpmTrie,
};
use aya::programs::ProgramFd;
use aya::programs::links::FdLink;
use fedwall_common::nat::{
    NAT_FLOW_SLOTS, NAT_FLOWS_MAP, NAT_FRAGMENTS_MAP, NAT_PORT_FIRST, NAT_PORT_LAST,
    NAT_PREFIX_ENTRIES, NAT_PREFIXES_MAP, NAT_STATS_MAP, NAT_UPLINKS_MAP, NatPrefix, NatReason,
    NatUplink, PREFIX_DISABLED, PREFIX_NAT_OUTGOING, PREFIX_NODE_ADDRESS, PREFIX_POOL,
    UPLINK_HAS_V4, UPLINK_HAS_V6,
};
use fedwall_common::policy::PacketCounter;
use ipnet::IpNet;

use super::attach::PinnedAttachError;
use super::kernel::ipsets::{Prefix, addr_bytes};
use super::kernel::{is_full, is_missing, remove_pin, sum};
use super::programs::count_nat_flows;
use super::{DataplaneError, KernelPrograms, MapUsage, NatPool, TcProgram, netlink};

/// The NAT maps, for the stale-pin sweep.
pub const NAT_MAPS: [&str; 5] = [
    NAT_PREFIXES_MAP,
    NAT_UPLINKS_MAP,
    NAT_STATS_MAP,
    NAT_FLOWS_MAP,
    NAT_FRAGMENTS_MAP,
];
/// Prefix of NAT link pins (under the pin root's `links/`): `fw_nat_v1_<ifindex>_<dir>`.
pub const NAT_LINK_PREFIX: &str = "fw_nat_v1_";
const LINKS_DIR: &str = "links";

/// Which interfaces NAT-outgoing runs on; looked at again whenever links or routes change,
/// so a new address (DHCP) or a new default route is followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UplinkChoice {
    /// The interfaces of the IPv4 and IPv6 default routes.
    DefaultRoutes,
    /// These interfaces, by name.
    Named(Vec<String>),
}

impl UplinkChoice {
    /// The uplinks this choice names now, in the calling thread's namespace.
    pub fn resolve(&self) -> Result<Vec<Uplink>, DataplaneError> {
        match self {
            UplinkChoice::DefaultRoutes => Uplink::default_routes(),
            UplinkChoice::Named(names) => names
                .iter()
                .map(|name| Uplink::from_interface(name))
                .collect(),
        }
    }
}

/// An interface translated flows leave through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uplink {
    pub name: String,
    pub ifindex: u32,
    /// The address IPv4 flows leave with; without one IPv4 is not translated here.
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    /// Source ports (and ICMP echo identifiers) handed out per peer.
    pub ports: RangeInclusive<u16>,
}

impl Uplink {
    /// The interface `name` of the calling thread's namespace, with its first global
    /// address of each family and the default port range (asked over netlink).
    pub fn from_interface(name: &str) -> Result<Uplink, DataplaneError> {
        let fail = |reason: String| DataplaneError::NatUplink {
            uplink: name.to_owned(),
            reason,
        };
        let c_name = CString::new(name).map_err(|e| fail(e.to_string()))?;
        // SAFETY: c_name is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if ifindex == 0 {
            return Err(fail("no such interface".to_owned()));
        }
        let mut uplink = Uplink {
            name: name.to_owned(),
            ifindex,
            v4: None,
            v6: None,
            ports: NAT_PORT_FIRST..=NAT_PORT_LAST,
        };
        let addresses =
            netlink::addresses().map_err(|e| fail(format!("cannot list addresses: {e}")))?;
        for address in addresses
            .iter()
            .filter(|a| a.ifindex == ifindex && a.global)
        {
            match address.addr {
                IpAddr::V4(v4) if uplink.v4.is_none() => uplink.v4 = Some(v4),
                IpAddr::V6(v6) if uplink.v6.is_none() => uplink.v6 = Some(v6),
                _ => {}
            }
        }
        if uplink.v4.is_none() && uplink.v6.is_none() {
            return Err(fail("it has no global address to translate to".to_owned()));
        }
        Ok(uplink)
    }

    /// The interfaces of the default routes (IPv4 and IPv6) of the calling thread's
    /// namespace: NAT-outgoing's default uplinks.
    pub fn default_routes() -> Result<Vec<Uplink>, DataplaneError> {
        let mut ifindexes = BTreeSet::new();
        for family in [libc::AF_INET, libc::AF_INET6] {
            let found = netlink::default_route_interfaces(family).map_err(|e| {
                DataplaneError::NatUplink {
                    uplink: "(default route)".to_owned(),
                    reason: format!("cannot list the default routes: {e}"),
                }
            })?;
            ifindexes.extend(found);
        }
        ifindexes
            .into_iter()
            .map(|ifindex| Uplink::from_interface(&interface_name(ifindex)?))
            .collect()
    }

    fn entry(&self) -> NatUplink {
        let mut entry = NatUplink {
            port_first: *self.ports.start(),
            port_last: *self.ports.end(),
            ..NatUplink::default()
        };
        if let Some(v4) = self.v4 {
            entry.addr_v4 = addr_bytes(IpAddr::V4(v4));
            entry.flags |= UPLINK_HAS_V4;
        }
        if let Some(v6) = self.v6 {
            entry.addr_v6 = addr_bytes(IpAddr::V6(v6));
            entry.flags |= UPLINK_HAS_V6;
        }
        entry
    }

    fn addrs(&self) -> impl Iterator<Item = IpNet> {
        let v4 = self.v4.map(|a| IpNet::from(IpAddr::V4(a)));
        let v6 = self.v6.map(|a| IpNet::from(IpAddr::V6(a)));
        v4.into_iter().chain(v6)
    }
}

/// The name of interface `ifindex`.
fn interface_name(ifindex: u32) -> Result<String, DataplaneError> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return Err(DataplaneError::NatUplink {
            uplink: format!("interface {ifindex}"),
            reason: format!("it has no name: {}", std::io::Error::last_os_error()),
        });
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

/// NAT packets per reason, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatCounts {
    counters: Vec<PacketCounter>,
}

impl NatCounts {
    pub fn get(&self, reason: NatReason) -> PacketCounter {
        self.counters
            .get(reason as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Reads the counters of loaded programs.
    pub fn of(programs: &KernelPrograms) -> Result<Self, DataplaneError> {
        Self::read(programs.map(NAT_STATS_MAP)?)
    }

    pub(super) fn read(map: &Map) -> Result<Self, DataplaneError> {
        let array =
            PerCpuArray::<_, PacketCounter>::try_from(map).map_err(map_err(NAT_STATS_MAP))?;
        let counters = NatReason::ALL
            .iter()
            .map(|reason| array.get(&(*reason as u32), 0).map(|values| sum(&values)))
            .collect::<Result<_, _>>()
            .map_err(map_err(NAT_STATS_MAP))?;
        Ok(NatCounts { counters })
    }
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}

/// An uplink NAT runs on, and the pinned links holding its programs.
#[derive(Debug)]
struct HeldUplink {
    uplink: Uplink,
    links: Vec<FdLink>,
    pins: Vec<PathBuf>,
}

/// What NAT holds in the kernel, and what it was told.
#[derive(Debug, Default)]
pub struct NatState {
    pools: BTreeMap<IpNet, NatPool>,
    uplinks: BTreeMap<u32, HeldUplink>,
    /// Prefixes found in the trie at start-up and not yet re-asserted.
    adopted: BTreeSet<IpNet>,
    /// The flags last written per prefix.
    written: BTreeMap<IpNet, u32>,
    /// Counts the live flows on a thread of its own, once started.
    sweeper: Option<NatSweeper>,
}

/// How often the live flows are counted.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Counts the live NAT flows once per [`SWEEP_INTERVAL`] on a thread of its own: a count
/// visits every slot of the table (milliseconds), which on the main loop would hold up any
/// update that arrived meanwhile (a relabel is to reach the kernel within 10 ms). Dropping
/// it stops the thread.
#[derive(Debug)]
struct NatSweeper {
    /// Live flows at the last count.
    live: Arc<AtomicU32>,
    /// Dropped to stop the thread, which waits on it between sweeps.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NatSweeper {
    fn spawn(program: ProgramFd) -> std::io::Result<NatSweeper> {
        let live = Arc::new(AtomicU32::new(0));
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fedwall-nat-sweep".into())
            .spawn({
                let live = live.clone();
                move || {
                    let mut failing = false;
                    loop {
                        match count_nat_flows(program.as_fd()) {
                            Ok(count) => {
                                live.store(count, Ordering::Relaxed);
                                if std::mem::take(&mut failing) {
                                    tracing::info!("counting the NAT flows again");
                                }
                            }
                            Err(error) if !failing => {
                                failing = true;
                                tracing::warn!(%error, "cannot count the NAT flows (BPF_PROG_TEST_RUN of fw_nat_sweep); the fw_nat_flows_v1 usage metric stays at its last value");
                            }
                            Err(_) => {}
                        }
                        if stopped.recv_timeout(SWEEP_INTERVAL)
                            != Err(mpsc::RecvTimeoutError::Timeout)
                        {
                            return;
                        }
                    }
                }
            })?;
        Ok(NatSweeper {
            live,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for NatSweeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl NatState {
    /// Reads what an earlier instance left in the trie: it stays in force until
    /// [`NatState::sync_complete`].
    pub fn adopt(programs: &KernelPrograms) -> Result<Self, DataplaneError> {
        let trie = LpmTrie::<_, [u8; 16], NatPrefix>::try_from(programs.map(NAT_PREFIXES_MAP)?)
            .map_err(map_err(NAT_PREFIXES_MAP))?;
        let mut state = NatState::default();
        for item in trie.iter() {
            let (key, value) = item.map_err(map_err(NAT_PREFIXES_MAP))?;
            let net = net_of(key.data(), key.prefix_len());
            state.adopted.insert(net);
            state.written.insert(net, value.flags);
        }
        Ok(state)
    }

    /// What the trie must say of `net`: the flags of its pool and of node addresses.
    fn desired_flags(&self, net: &IpNet) -> u32 {
        let mut flags = 0;
        if let Some(pool) = self.pools.get(net) {
            flags |= PREFIX_POOL;
            if pool.nat_outgoing {
                flags |= PREFIX_NAT_OUTGOING;
            }
            if pool.disabled {
                flags |= PREFIX_DISABLED;
            }
        }
        if self
            .uplinks
            .values()
            .any(|u| u.uplink.addrs().any(|a| a == *net))
        {
            flags |= PREFIX_NODE_ADDRESS;
        }
        flags
    }

    /// Writes (or removes) `net`'s entry so it says what is desired.
    fn sync_prefix(
        &mut self,
        programs: &mut KernelPrograms,
        net: IpNet,
    ) -> Result<(), DataplaneError> {
        let flags = self.desired_flags(&net);
        self.adopted.remove(&net);
        if self.written.get(&net).copied().unwrap_or(0) == flags {
            return Ok(());
        }
        let prefix = Prefix::of(&net);
        let key = Key::new(u32::from(prefix.len), prefix.bytes());
        let mut trie =
            LpmTrie::<_, [u8; 16], NatPrefix>::try_from(programs.map_mut(NAT_PREFIXES_MAP)?)
                .map_err(map_err(NAT_PREFIXES_MAP))?;
        if flags == 0 {
            match trie.remove(&key) {
                Err(e) if !is_missing(&e) => return Err(map_err(NAT_PREFIXES_MAP)(e)),
                _ => {}
            }
            self.written.remove(&net);
        } else {
            trie.insert(&key, &NatPrefix { flags }, 0).map_err(|e| {
                if is_full(&e) {
                    DataplaneError::MapFull {
                        map: NAT_PREFIXES_MAP,
                        object: format!("IP pool or node address {net}"),
                        limit: NAT_PREFIX_ENTRIES as usize,
                    }
                } else {
                    map_err(NAT_PREFIXES_MAP)(e)
                }
            })?;
            self.written.insert(net, flags);
        }
        Ok(())
    }

    pub fn pool_set(
        &mut self,
        programs: &mut KernelPrograms,
        pool: &NatPool,
    ) -> Result<(), DataplaneError> {
        let net = pool.cidr.trunc();
        let previous = self.pools.insert(net, NatPool { cidr: net, ..*pool });
        let result = self.sync_prefix(programs, net);
        if result.is_err() {
            match previous {
                Some(previous) => self.pools.insert(net, previous),
                None => self.pools.remove(&net),
            };
        }
        result
    }

    pub fn pool_deleted(
        &mut self,
        programs: &mut KernelPrograms,
        cidr: &IpNet,
    ) -> Result<(), DataplaneError> {
        let net = cidr.trunc();
        self.pools.remove(&net);
        self.sync_prefix(programs, net)
    }

    /// Makes `uplinks` the set NAT runs on: their entries and node addresses written, the
    /// programs attached (a pinned link of an earlier instance gets the new program in
    /// place, so translation never stops), and uplinks no longer listed detached.
    pub fn set_uplinks(
        &mut self,
        programs: &mut KernelPrograms,
        uplinks: &[Uplink],
    ) -> Result<(), DataplaneError> {
        let wanted: BTreeSet<u32> = uplinks.iter().map(|u| u.ifindex).collect();
        let gone: Vec<u32> = self
            .uplinks
            .keys()
            .filter(|i| !wanted.contains(i))
            .copied()
            .collect();
        for ifindex in gone {
            if let Some(held) = self.uplinks.remove(&ifindex) {
                self.remove_uplink(programs, held)?;
            }
        }
        for uplink in uplinks {
            let mut map =
                BpfHashMap::<_, u32, NatUplink>::try_from(programs.map_mut(NAT_UPLINKS_MAP)?)
                    .map_err(map_err(NAT_UPLINKS_MAP))?;
            map.insert(&uplink.ifindex, &uplink.entry(), 0)
                .map_err(map_err(NAT_UPLINKS_MAP))?;
            let previous = self.uplinks.remove(&uplink.ifindex);
            let (links, pins) = match previous {
                Some(held) => {
                    for net in held.uplink.addrs() {
                        self.sync_prefix(programs, net)?;
                    }
                    (held.links, held.pins)
                }
                None => attach(programs, uplink)?,
            };
            self.uplinks.insert(
                uplink.ifindex,
                HeldUplink {
                    uplink: uplink.clone(),
                    links,
                    pins,
                },
            );
            for net in uplink.addrs() {
                self.sync_prefix(programs, net)?;
            }
        }
        Ok(())
    }

    fn remove_uplink(
        &mut self,
        programs: &mut KernelPrograms,
        held: HeldUplink,
    ) -> Result<(), DataplaneError> {
        for pin in &held.pins {
            remove_pin(pin)?;
        }
        let mut map = BpfHashMap::<_, u32, NatUplink>::try_from(programs.map_mut(NAT_UPLINKS_MAP)?)
            .map_err(map_err(NAT_UPLINKS_MAP))?;
        match map.remove(&held.uplink.ifindex) {
            Err(e) if !is_missing(&e) => return Err(map_err(NAT_UPLINKS_MAP)(e)),
            _ => {}
        }
        let addrs: Vec<IpNet> = held.uplink.addrs().collect();
        drop(held);
        for net in addrs {
            self.sync_prefix(programs, net)?;
        }
        Ok(())
    }

    /// The full desired state was replayed: prefixes nobody re-asserted go.
    pub fn sync_complete(&mut self, programs: &mut KernelPrograms) -> Result<(), DataplaneError> {
        for net in std::mem::take(&mut self.adopted) {
            self.sync_prefix(programs, net)?;
        }
        Ok(())
    }

    /// Has the live flows counted for the metrics: starts the thread that counts, once.
    pub fn expire(&mut self, programs: &mut KernelPrograms) -> Result<(), DataplaneError> {
        if self.sweeper.is_none() {
            let program = programs.nat_sweep_fd()?;
            let sweeper = NatSweeper::spawn(program)
                .map_err(|source| DataplaneError::SweepThread { source })?;
            self.sweeper = Some(sweeper);
        }
        Ok(())
    }

    /// The flow table's use as the last count found it.
    pub fn mapping_usage(&self) -> MapUsage {
        let live = self
            .sweeper
            .as_ref()
            .map_or(0, |sweeper| sweeper.live.load(Ordering::Relaxed));
        MapUsage {
            map: NAT_FLOWS_MAP,
            used: u64::from(live),
            capacity: u64::from(NAT_FLOW_SLOTS),
        }
    }

    pub fn uplinks(&self) -> impl Iterator<Item = &Uplink> {
        self.uplinks.values().map(|held| &held.uplink)
    }
}

fn net_of(bytes: [u8; 16], len: u32) -> IpNet {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) if len >= 96 => IpNet::new(IpAddr::V4(v4), (len - 96) as u8),
        _ => IpNet::new(IpAddr::V6(v6), len as u8),
    }
    .unwrap_or_else(|_| IpNet::from(IpAddr::V6(v6)))
}

/// Attaches both NAT programs to the uplink: a link pinned by an earlier instance gets the
/// new program in place; otherwise a new TCX link is made and pinned.
fn attach(
    programs: &mut KernelPrograms,
    uplink: &Uplink,
) -> Result<(Vec<FdLink>, Vec<PathBuf>), DataplaneError> {
    let links_dir = programs.pin_root().join(LINKS_DIR);
    let link_error = |path: &Path, source: std::io::Error| DataplaneError::NatLink {
        uplink: uplink.name.clone(),
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(&links_dir).map_err(|e| link_error(&links_dir, e))?;
    let mut links = Vec::new();
    let mut pins = Vec::new();
    for program in [TcProgram::NatEgress, TcProgram::NatIngress] {
        let path = links_dir.join(format!(
            "{NAT_LINK_PREFIX}{}_{}",
            uplink.ifindex,
            program.direction().name()
        ));
        let adopt = path.exists();
        let fd_link = programs
            .attach_pinned(program, uplink.ifindex, &path, adopt)
            .map_err(|error| match error {
                PinnedAttachError::Pin(source) => link_error(&path, source),
                PinnedAttachError::Attach(error) => error,
            })?;
        links.push(fd_link);
        pins.push(path);
    }
    Ok((links, pins))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trie_keys_read_back_as_the_cidrs_written() {
        for text in ["10.244.0.0/16", "192.0.2.7/32", "2001:db8:99::/48", "::/0"] {
            let net: IpNet = text.parse().expect("cidr");
            let prefix = Prefix::of(&net);
            assert_eq!(net_of(prefix.bytes(), u32::from(prefix.len)), net, "{text}");
        }
    }
}
