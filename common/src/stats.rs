//! Per-CPU packet statistics by direction and protocol class: the first map the TC programs
//! fill, and the one `fedwall bpf stats` and the tests read.

/// Name of the per-CPU array of [`ProtoCounter`]s; the `_v1` suffix is the layout version.
pub const PROTO_STATS_MAP: &str = "fw_proto_stats_v1";

/// Which way a packet crossed the interface the program is attached to, as TC sees it.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress = 0,
    Egress = 1,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    pub const fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// What a packet carried, as far as the parser could tell.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoClass {
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): always passed.
    NonIp = 0,
    Ipv4Tcp = 1,
    Ipv4Udp = 2,
    Ipv4Icmp = 3,
    /// Any other IPv4 protocol, and IPv4 fragments after the first (no L4 header).
    Ipv4Other = 4,
    Ipv6Tcp = 5,
    Ipv6Udp = 6,
    Ipv6Icmp = 7,
    /// Any other IPv6 next header, and IPv6 fragments after the first.
    Ipv6Other = 8,
    /// Claims to be IP but its headers are truncated or inconsistent.
    Malformed = 9,
}

impl ProtoClass {
    pub const COUNT: u32 = 10;
    pub const ALL: [ProtoClass; Self::COUNT as usize] = [
        ProtoClass::NonIp,
        ProtoClass::Ipv4Tcp,
        ProtoClass::Ipv4Udp,
        ProtoClass::Ipv4Icmp,
        ProtoClass::Ipv4Other,
        ProtoClass::Ipv6Tcp,
        ProtoClass::Ipv6Udp,
        ProtoClass::Ipv6Icmp,
        ProtoClass::Ipv6Other,
        ProtoClass::Malformed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            ProtoClass::NonIp => "non-ip",
            ProtoClass::Ipv4Tcp => "ipv4-tcp",
            ProtoClass::Ipv4Udp => "ipv4-udp",
            ProtoClass::Ipv4Icmp => "ipv4-icmp",
            ProtoClass::Ipv4Other => "ipv4-other",
            ProtoClass::Ipv6Tcp => "ipv6-tcp",
            ProtoClass::Ipv6Udp => "ipv6-udp",
            ProtoClass::Ipv6Icmp => "ipv6-icmp",
            ProtoClass::Ipv6Other => "ipv6-other",
            ProtoClass::Malformed => "malformed",
        }
    }
}

/// Number of slots in the stats map: one per (direction, class).
pub const PROTO_STATS_ENTRIES: u32 = 2 * ProtoClass::COUNT;

/// The stats map slot of one (direction, class) pair.
pub const fn proto_stats_index(direction: Direction, class: ProtoClass) -> u32 {
    direction as u32 * ProtoClass::COUNT + class as u32
}

/// One CPU's count of packets and bytes (the skb length, L2 header included).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProtoCounter {
    pub packets: u64,
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<ProtoCounter>() == 16);

#[cfg(feature = "user")]
// SAFETY: repr(C), only u64 fields, no padding.
unsafe impl aya::Pod for ProtoCounter {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_direction_and_class_has_its_own_slot() {
        let mut seen = [false; PROTO_STATS_ENTRIES as usize];
        for direction in Direction::ALL {
            for class in ProtoClass::ALL {
                let index = proto_stats_index(direction, class) as usize;
                assert!(!seen[index], "{direction:?}/{class:?} shares slot {index}");
                seen[index] = true;
            }
        }
        assert!(seen.iter().all(|s| *s), "some slot is never used: {seen:?}");
    }
}
