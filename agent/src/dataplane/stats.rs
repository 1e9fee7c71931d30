//! Reading the per-CPU protocol counters, from a loaded object or from the pin alone (so
//! `fedwall bpf` works while the agent is down).

use std::path::Path;

use aya::maps::{Map, MapData, PerCpuArray};
use fedwall_common::stats::{
    Direction, PROTO_STATS_ENTRIES, PROTO_STATS_MAP, ProtoClass, ProtoCounter, proto_stats_index,
};

use super::DataplaneError;

/// Packets and bytes per (direction, protocol class), summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtoStats {
    /// Indexed like the map: by `proto_stats_index`.
    counters: Vec<ProtoCounter>,
}

impl ProtoStats {
    pub(super) fn read(map: &Map) -> Result<Self, DataplaneError> {
        let array = PerCpuArray::<_, ProtoCounter>::try_from(map).map_err(|source| {
            DataplaneError::Map {
                map: PROTO_STATS_MAP,
                source,
            }
        })?;
        let mut counters = vec![ProtoCounter::default(); PROTO_STATS_ENTRIES as usize];
        for (index, counter) in (0..PROTO_STATS_ENTRIES).zip(counters.iter_mut()) {
            let per_cpu = array.get(&index, 0).map_err(|source| DataplaneError::Map {
                map: PROTO_STATS_MAP,
                source,
            })?;
            let total = per_cpu
                .iter()
                .fold(ProtoCounter::default(), |sum, cpu| ProtoCounter {
                    packets: sum.packets + cpu.packets,
                    bytes: sum.bytes + cpu.bytes,
                });
            *counter = total;
        }
        Ok(Self { counters })
    }

    /// Reads the counters pinned under `pin_root` by a running or earlier agent.
    pub fn from_pin(pin_root: &Path) -> Result<Self, DataplaneError> {
        let path = pin_root.join(PROTO_STATS_MAP);
        let pinned = |source| DataplaneError::PinnedMap {
            path: path.clone(),
            source,
        };
        let map = MapData::from_pin(&path)
            .and_then(Map::from_map_data)
            .map_err(pinned)?;
        Self::read(&map)
    }

    pub fn get(&self, direction: Direction, class: ProtoClass) -> ProtoCounter {
        self.counters
            .get(proto_stats_index(direction, class) as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Every (direction, class) with its counter, in map order.
    pub fn iter(&self) -> impl Iterator<Item = (Direction, ProtoClass, ProtoCounter)> + '_ {
        Direction::ALL.into_iter().flat_map(move |direction| {
            ProtoClass::ALL
                .into_iter()
                .map(move |class| (direction, class, self.get(direction, class)))
        })
    }
}
