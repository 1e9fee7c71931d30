//! Wire numbers from the IP and Ethernet standards, shared by the kernel parser and the
//! tests' packet builder so both speak about the same protocols.

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// The IPv4-mapped IPv6 address of `addr` (`::ffff:a.b.c.d`): how every map holds IPv4.
#[inline(always)]
pub const fn v4_mapped(addr: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, addr[0], addr[1], addr[2], addr[3],
    ]
}

/// A prefix length over an IPv4-mapped address is the IPv4 prefix length plus this.
pub const V4_MAPPED_PREFIX_BITS: u32 = 96;

/// IP protocol / IPv6 next-header numbers (IANA).
pub mod ip_proto {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const AUTH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const NO_NEXT_HEADER: u8 = 59;
    pub const DEST_OPTS: u8 = 60;
    pub const SCTP: u8 = 132;
    pub const UDPLITE: u8 = 136;
}

/// ICMPv4 (RFC 792) and ICMPv6 (RFC 4443, RFC 4861) type numbers.
pub mod icmp_type {
    pub const V4_ECHO_REPLY: u8 = 0;
    pub const V4_DEST_UNREACHABLE: u8 = 3;
    pub const V4_SOURCE_QUENCH: u8 = 4;
    pub const V4_REDIRECT: u8 = 5;
    pub const V4_ECHO_REQUEST: u8 = 8;
    pub const V4_TIME_EXCEEDED: u8 = 11;
    pub const V4_PARAMETER_PROBLEM: u8 = 12;

    pub const V6_DEST_UNREACHABLE: u8 = 1;
    pub const V6_PACKET_TOO_BIG: u8 = 2;
    pub const V6_TIME_EXCEEDED: u8 = 3;
    pub const V6_PARAMETER_PROBLEM: u8 = 4;
    pub const V6_ECHO_REQUEST: u8 = 128;
    pub const V6_ECHO_REPLY: u8 = 129;
    /// Neighbour discovery (RFC 4861): router solicitation and advertisement, neighbour
    /// solicitation and advertisement, redirect. IPv6's ARP.
    pub const V6_ROUTER_SOLICITATION: u8 = 133;
    pub const V6_NEIGHBOR_ADVERTISEMENT: u8 = 136;
}
