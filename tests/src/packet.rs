//! Byte-exact packets for the kernel tests: [`Packet`] builds the Ethernet frame a TC
//! program sees under BPF_PROG_TEST_RUN, with correct checksums, for either IP family
//! through one code path; [`ParsedPacket`] reads a frame back so a test can check what a
//! program rewrote.
//!
//! A test written once for both families starts from [`Packet::ip`] with addresses from
//! [`IpFamily::doc_addr`]; the ICMP helpers pick ICMPv4 or ICMPv6 numbers by family.
//! Builder methods that only make sense for one family or one L4 protocol (a flow label on
//! IPv4, a sequence number on UDP) panic: that is a mistake in the test, not in the code
//! under test. Deliberately malformed packets come from [`Packet::corrupt`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::{BitOr, BitOrAssign};

/// Length of the Ethernet header every frame starts with (no VLAN tag); the IP header
/// starts here.
pub const ETH_HEADER_LEN: usize = 14;
pub use fedwall_common::net::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};
/// Locally administered, so they can never be a real NIC's.
pub const DEFAULT_SRC_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
pub const DEFAULT_DST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
pub const DEFAULT_TTL: u8 = 64;

const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const TCP_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
const ICMP_HEADER_LEN: usize = 8;
/// IPv4 options and TCP options are both capped by a 4-bit length in 32-bit words.
const MAX_OPTIONS_LEN: usize = 40;
/// Both IPv4 and IPv6 fragment offsets are 13 bits of 8-octet units.
const MAX_FRAGMENT_OFFSET: u16 = 0x1fff;

/// IP protocol / IPv6 next-header numbers the builder and parser know.
pub mod ip_proto {
    pub use fedwall_common::net::ip_proto::*;
    /// RFC 3692's value for experiments: what a packet carries until an L4 is chosen.
    pub const EXPERIMENTAL: u8 = 253;
}

/// ICMPv4 and ICMPv6 type numbers.
pub use fedwall_common::net::icmp_type;

/// An IP family, so one test body can run for both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub const ALL: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    pub fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// Address `host` in this family's documentation network number `net` (0, 1 or 2):
    /// 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, or 2001:db8:`net`::/48.
    #[track_caller]
    pub fn doc_addr(self, net: u8, host: u8) -> IpAddr {
        match self {
            IpFamily::V4 => {
                let [a, b, c] = match net {
                    0 => [192, 0, 2],
                    1 => [198, 51, 100],
                    2 => [203, 0, 113],
                    _ => panic!("there are three IPv4 documentation networks (0..=2), not {net}"),
                };
                Ipv4Addr::new(a, b, c, host).into()
            }
            IpFamily::V6 => {
                assert!(net <= 2, "doc_addr: network {net} is not 0, 1 or 2");
                Ipv6Addr::new(0x2001, 0xdb8, u16::from(net), 0, 0, 0, 0, u16::from(host)).into()
            }
        }
    }

    pub fn ethertype(self) -> u16 {
        match self {
            IpFamily::V4 => ETHERTYPE_IPV4,
            IpFamily::V6 => ETHERTYPE_IPV6,
        }
    }

    /// ICMP's protocol number in this family: 1 or 58.
    pub fn icmp_protocol(self) -> u8 {
        match self {
            IpFamily::V4 => ip_proto::ICMP,
            IpFamily::V6 => ip_proto::ICMPV6,
        }
    }

    fn echo_types(self) -> (u8, u8) {
        match self {
            IpFamily::V4 => (icmp_type::V4_ECHO_REQUEST, icmp_type::V4_ECHO_REPLY),
            IpFamily::V6 => (icmp_type::V6_ECHO_REQUEST, icmp_type::V6_ECHO_REPLY),
        }
    }

    /// Whether an ICMP message of this type quotes the packet that caused it.
    fn is_icmp_error(self, icmp_type: u8) -> bool {
        use icmp_type::*;
        match self {
            IpFamily::V4 => matches!(
                icmp_type,
                V4_DEST_UNREACHABLE
                    | V4_SOURCE_QUENCH
                    | V4_REDIRECT
                    | V4_TIME_EXCEEDED
                    | V4_PARAMETER_PROBLEM
            ),
            IpFamily::V6 => matches!(
                icmp_type,
                V6_DEST_UNREACHABLE | V6_PACKET_TOO_BIG | V6_TIME_EXCEEDED | V6_PARAMETER_PROBLEM
            ),
        }
    }
}

/// TCP header flags; combine with `|`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(u8);

impl TcpFlags {
    pub const NONE: TcpFlags = TcpFlags(0);
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const PSH: TcpFlags = TcpFlags(0x08);
    pub const ACK: TcpFlags = TcpFlags(0x10);
    pub const URG: TcpFlags = TcpFlags(0x20);
    pub const ECE: TcpFlags = TcpFlags(0x40);
    pub const CWR: TcpFlags = TcpFlags(0x80);

    const NAMES: [(TcpFlags, &'static str); 8] = [
        (TcpFlags::FIN, "FIN"),
        (TcpFlags::SYN, "SYN"),
        (TcpFlags::RST, "RST"),
        (TcpFlags::PSH, "PSH"),
        (TcpFlags::ACK, "ACK"),
        (TcpFlags::URG, "URG"),
        (TcpFlags::ECE, "ECE"),
        (TcpFlags::CWR, "CWR"),
    ];

    pub const fn from_bits(bits: u8) -> Self {
        TcpFlags(bits)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag in `other` is set in `self`.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;

    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = TcpFlags::NAMES
            .iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, name)| *name)
            .collect();
        if names.is_empty() {
            f.write_str("NONE")
        } else {
            f.write_str(&names.join("|"))
        }
    }
}

/// An ICMP error, named by meaning so the same test builds the ICMPv4 or the ICMPv6 form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpError {
    /// ICMPv4 3/3, ICMPv6 1/4.
    PortUnreachable,
    /// ICMPv4 3/1, ICMPv6 1/3 (address unreachable).
    HostUnreachable,
    /// ICMPv4 3/13 (communication administratively prohibited), ICMPv6 1/1.
    AdminProhibited,
    /// ICMPv4 3/4 (fragmentation needed, next-hop MTU in bytes 6-7), ICMPv6 2/0 (packet too
    /// big, MTU in bytes 4-7).
    PacketTooBig { mtu: u16 },
    /// ICMPv4 11/0, ICMPv6 3/0 (hop limit exceeded in transit).
    TimeExceeded,
}

impl IcmpError {
    /// Type, code and the four rest-of-header bytes of this error in `family`'s ICMP.
    pub fn encode(self, family: IpFamily) -> (u8, u8, [u8; 4]) {
        use icmp_type::*;
        let mtu_rest = |mtu: u16| match family {
            IpFamily::V4 => [0, 0, (mtu >> 8) as u8, mtu as u8],
            IpFamily::V6 => u32::from(mtu).to_be_bytes(),
        };
        let (icmp_type, code) = match (self, family) {
            (IcmpError::PortUnreachable, IpFamily::V4) => (V4_DEST_UNREACHABLE, 3),
            (IcmpError::PortUnreachable, IpFamily::V6) => (V6_DEST_UNREACHABLE, 4),
            (IcmpError::HostUnreachable, IpFamily::V4) => (V4_DEST_UNREACHABLE, 1),
            (IcmpError::HostUnreachable, IpFamily::V6) => (V6_DEST_UNREACHABLE, 3),
            (IcmpError::AdminProhibited, IpFamily::V4) => (V4_DEST_UNREACHABLE, 13),
            (IcmpError::AdminProhibited, IpFamily::V6) => (V6_DEST_UNREACHABLE, 1),
            (IcmpError::PacketTooBig { .. }, IpFamily::V4) => (V4_DEST_UNREACHABLE, 4),
            (IcmpError::PacketTooBig { .. }, IpFamily::V6) => (V6_PACKET_TOO_BIG, 0),
            (IcmpError::TimeExceeded, IpFamily::V4) => (V4_TIME_EXCEEDED, 0),
            (IcmpError::TimeExceeded, IpFamily::V6) => (V6_TIME_EXCEEDED, 0),
        };
        let rest = match self {
            IcmpError::PacketTooBig { mtu } => mtu_rest(mtu),
            _ => [0; 4],
        };
        (icmp_type, code, rest)
    }
}

/// An IPv6 extension header, emitted in the order given, each padded to a multiple of 8
/// bytes and chained by next-header. The builder does not enforce RFC 8200's ordering, so
/// tests can build wrong chains too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ipv6ExtHeader {
    /// Option TLVs after the 2-byte header, padded with Pad1/PadN.
    HopByHop(Vec<u8>),
    /// Option TLVs after the 2-byte header, padded with Pad1/PadN.
    DestinationOptions(Vec<u8>),
    /// `data` is what follows the 4 fixed bytes (for type 0 or 2: 4 reserved bytes, then
    /// addresses); zero-padded.
    Routing {
        routing_type: u8,
        segments_left: u8,
        data: Vec<u8>,
    },
    /// `offset` is in 8-octet units.
    Fragment { offset: u16, more: bool, id: u32 },
}

impl Ipv6ExtHeader {
    /// The next-header value that announces this header.
    pub fn protocol(&self) -> u8 {
        match self {
            Ipv6ExtHeader::HopByHop(_) => ip_proto::HOP_BY_HOP,
            Ipv6ExtHeader::DestinationOptions(_) => ip_proto::DEST_OPTS,
            Ipv6ExtHeader::Routing { .. } => ip_proto::ROUTING,
            Ipv6ExtHeader::Fragment { .. } => ip_proto::FRAGMENT,
        }
    }

    #[track_caller]
    fn encode_into(&self, next_header: u8, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[next_header, 0]);
        match self {
            Ipv6ExtHeader::HopByHop(options) | Ipv6ExtHeader::DestinationOptions(options) => {
                out.extend_from_slice(options);
                match (8 - (out.len() - start) % 8) % 8 {
                    0 => {}
                    1 => out.push(0), // Pad1
                    pad => {
                        out.extend_from_slice(&[1, (pad - 2) as u8]); // PadN
                        out.resize(out.len() + pad - 2, 0);
                    }
                }
            }
            Ipv6ExtHeader::Routing {
                routing_type,
                segments_left,
                data,
            } => {
                out.extend_from_slice(&[*routing_type, *segments_left]);
                out.extend_from_slice(data);
                out.resize(start + (out.len() - start).next_multiple_of(8), 0);
            }
            Ipv6ExtHeader::Fragment { offset, more, id } => {
                assert_fragment_offset(*offset);
                out.extend_from_slice(&((offset << 3) | u16::from(*more)).to_be_bytes());
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        let units = (out.len() - start) / 8 - 1;
        let Ok(units) = u8::try_from(units) else {
            panic!("IPv6 extension header {self:?} is longer than 2048 bytes");
        };
        // The fragment header's second byte is reserved, and its length is implied (8).
        if !matches!(self, Ipv6ExtHeader::Fragment { .. }) {
            out[start + 1] = units;
        }
    }
}

/// A deliberate fault for malformed-packet tests, applied after the field is built; the
/// checksums are computed afterwards (over the faulty bytes, with the true lengths in the
/// pseudo-header), so the fault is the only thing wrong unless the fault is a checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// IPv4 total length / IPv6 payload length, in place of the true value.
    IpLength(u16),
    /// IPv4 IHL in 32-bit words; the header bytes stay as built.
    Ipv4Ihl(u8),
    /// The 4-bit IP version.
    IpVersion(u8),
    /// IPv4 header checksum.
    Ipv4Checksum(u16),
    /// TCP, UDP or ICMP checksum.
    L4Checksum(u16),
    /// UDP length field.
    UdpLength(u16),
    /// TCP data offset in 32-bit words; the header bytes stay as built.
    TcpDataOffset(u8),
}

#[derive(Clone, Debug)]
struct TcpFields {
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    window: u16,
    options: Vec<u8>,
}

#[derive(Clone, Debug)]
enum L4 {
    Tcp(TcpFields),
    Udp {
        src_port: u16,
        dst_port: u16,
        zero_checksum: bool,
    },
    Icmp {
        icmp_type: u8,
        code: u8,
        rest: [u8; 4],
    },
    /// Only the payload follows the IP headers: other protocols, or a non-first fragment.
    Raw {
        protocol: u8,
    },
}

impl L4 {
    fn protocol(&self, family: IpFamily) -> u8 {
        match self {
            L4::Tcp(_) => ip_proto::TCP,
            L4::Udp { .. } => ip_proto::UDP,
            L4::Icmp { .. } => family.icmp_protocol(),
            L4::Raw { protocol } => *protocol,
        }
    }
}

/// A packet to build: Ethernet, IPv4 or IPv6 (with extension headers), then TCP, UDP,
/// ICMP/ICMPv6 or raw bytes. Every method consumes and returns the builder; [`build`]
/// emits the frame.
///
/// [`build`]: Packet::build
#[derive(Clone, Debug)]
pub struct Packet {
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    traffic_class: u8,
    /// IPv4 identification (checked to fit 16 bits) or IPv6 fragment identification.
    identification: u32,
    /// Offset in 8-octet units and more-fragments; on IPv6 it becomes a fragment header.
    fragment: Option<(u16, bool)>,
    dont_fragment: bool,
    ipv4_options: Vec<u8>,
    flow_label: u32,
    ipv6_ext: Vec<Ipv6ExtHeader>,
    l4: L4,
    payload: Vec<u8>,
    corruptions: Vec<Corruption>,
}

impl Packet {
    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        Self::new(src.into(), dst.into())
    }

    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        Self::new(src.into(), dst.into())
    }

    /// Either family, for tests that run one body for both.
    ///
    /// # Panics
    /// If `src` and `dst` are of different families.
    #[track_caller]
    pub fn ip(src: IpAddr, dst: IpAddr) -> Self {
        assert_eq!(
            IpFamily::of(src),
            IpFamily::of(dst),
            "Packet::ip({src}, {dst}): the addresses are of different families"
        );
        Self::new(src, dst)
    }

    fn new(src: IpAddr, dst: IpAddr) -> Self {
        Packet {
            eth_src: DEFAULT_SRC_MAC,
            eth_dst: DEFAULT_DST_MAC,
            src,
            dst,
            ttl: DEFAULT_TTL,
            traffic_class: 0,
            identification: 0,
            fragment: None,
            dont_fragment: false,
            ipv4_options: Vec::new(),
            flow_label: 0,
            ipv6_ext: Vec::new(),
            l4: L4::Raw {
                protocol: ip_proto::EXPERIMENTAL,
            },
            payload: Vec::new(),
            corruptions: Vec::new(),
        }
    }

    /// The ICMP error a router (or, for port unreachable, the destination) would send back
    /// for `original`, an Ethernet frame: it goes from `original`'s destination to its
    /// source with the MACs swapped, and quotes its IP header(s) and first 8 L4 bytes.
    /// Change the sender with [`Packet::src`].
    pub fn icmp_error_for(original: &[u8], kind: IcmpError) -> Result<Packet, ParseError> {
        let parsed = ParsedPacket::parse(original)?;
        Ok(Packet::new(parsed.dst, parsed.src)
            .eth_src(parsed.eth_dst)
            .eth_dst(parsed.eth_src)
            .icmp_error(kind, parsed.icmp_quote()))
    }

    pub fn family(&self) -> IpFamily {
        IpFamily::of(self.src)
    }

    pub fn eth_src(mut self, mac: [u8; 6]) -> Self {
        self.eth_src = mac;
        self
    }

    pub fn eth_dst(mut self, mac: [u8; 6]) -> Self {
        self.eth_dst = mac;
        self
    }

    /// # Panics
    /// If `addr` is not of the packet's family.
    #[track_caller]
    pub fn src(mut self, addr: impl Into<IpAddr>) -> Self {
        self.src = self.same_family(addr.into());
        self
    }

    /// # Panics
    /// If `addr` is not of the packet's family.
    #[track_caller]
    pub fn dst(mut self, addr: impl Into<IpAddr>) -> Self {
        self.dst = self.same_family(addr.into());
        self
    }

    /// IPv4 TTL or IPv6 hop limit.
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// IPv4 type of service or IPv6 traffic class (DSCP and ECN).
    pub fn traffic_class(mut self, traffic_class: u8) -> Self {
        self.traffic_class = traffic_class;
        self
    }

    /// IPv4 identification, or the IPv6 fragment header's identification.
    ///
    /// # Panics
    /// On IPv4, if `id` does not fit 16 bits.
    #[track_caller]
    pub fn identification(mut self, id: u32) -> Self {
        assert!(
            self.family() == IpFamily::V6 || id <= u32::from(u16::MAX),
            "IPv4 identification {id:#x} does not fit 16 bits"
        );
        self.identification = id;
        self
    }

    /// Makes the packet a fragment at `offset` (in 8-octet units). On IPv4 this sets the
    /// offset and MF bit; on IPv6 a fragment header (with [`Packet::identification`]) goes
    /// after every header from [`Packet::ipv6_ext`]. The L4 header is still emitted: for a
    /// non-first fragment use [`Packet::raw_protocol`]. To cut a datagram into real
    /// fragments, see [`Packet::fragments`].
    #[track_caller]
    pub fn fragment(mut self, offset: u16, more_fragments: bool) -> Self {
        assert_fragment_offset(offset);
        self.fragment = Some((offset, more_fragments));
        self
    }

    /// IPv4's don't-fragment bit.
    #[track_caller]
    pub fn dont_fragment(mut self, dont_fragment: bool) -> Self {
        self.expect_family(IpFamily::V4, "dont_fragment");
        self.dont_fragment = dont_fragment;
        self
    }

    /// Raw IPv4 options, zero-padded (end-of-options) to a multiple of 4; IHL follows.
    #[track_caller]
    pub fn ipv4_options(mut self, options: impl AsRef<[u8]>) -> Self {
        self.expect_family(IpFamily::V4, "ipv4_options");
        let options = options.as_ref();
        assert!(
            options.len() <= MAX_OPTIONS_LEN,
            "IPv4 options are at most {MAX_OPTIONS_LEN} bytes, not {}",
            options.len()
        );
        self.ipv4_options = options.to_vec();
        self
    }

    /// IPv6 flow label (20 bits).
    #[track_caller]
    pub fn flow_label(mut self, flow_label: u32) -> Self {
        self.expect_family(IpFamily::V6, "flow_label");
        assert!(
            flow_label < 1 << 20,
            "flow label {flow_label:#x} does not fit 20 bits"
        );
        self.flow_label = flow_label;
        self
    }

    /// Appends an IPv6 extension header; they are emitted in call order before L4.
    #[track_caller]
    pub fn ipv6_ext(mut self, header: Ipv6ExtHeader) -> Self {
        self.expect_family(IpFamily::V6, "ipv6_ext");
        self.ipv6_ext.push(header);
        self
    }

    /// TCP with seq 0, ack 0, no flags, window 65535: set them with [`Packet::flags`] and
    /// friends.
    pub fn tcp(mut self, src_port: u16, dst_port: u16) -> Self {
        self.l4 = L4::Tcp(TcpFields {
            src_port,
            dst_port,
            seq: 0,
            ack: 0,
            flags: TcpFlags::NONE,
            window: u16::MAX,
            options: Vec::new(),
        });
        self
    }

    pub fn udp(mut self, src_port: u16, dst_port: u16) -> Self {
        self.l4 = L4::Udp {
            src_port,
            dst_port,
            zero_checksum: false,
        };
        self
    }

    /// ICMPv4 echo request (type 8) or ICMPv6 echo request (type 128).
    pub fn icmp_echo_request(self, id: u16, seq: u16) -> Self {
        let (request, _) = self.family().echo_types();
        self.icmp_echo(request, id, seq)
    }

    /// ICMPv4 echo reply (type 0) or ICMPv6 echo reply (type 129).
    pub fn icmp_echo_reply(self, id: u16, seq: u16) -> Self {
        let (_, reply) = self.family().echo_types();
        self.icmp_echo(reply, id, seq)
    }

    fn icmp_echo(self, icmp_type: u8, id: u16, seq: u16) -> Self {
        let [id_hi, id_lo] = id.to_be_bytes();
        let [seq_hi, seq_lo] = seq.to_be_bytes();
        self.icmp(icmp_type, 0, [id_hi, id_lo, seq_hi, seq_lo])
    }

    /// Any ICMP message of the packet's family (ICMPv4 or ICMPv6 numbering): `rest` is the
    /// four bytes after the checksum; the body is the payload.
    pub fn icmp(mut self, icmp_type: u8, code: u8, rest: [u8; 4]) -> Self {
        self.l4 = L4::Icmp {
            icmp_type,
            code,
            rest,
        };
        self
    }

    /// An ICMP error whose body is `quoted`, the offending packet from its IP header on.
    /// [`Packet::icmp_error_for`] quotes a frame for you; this form lets a test quote
    /// anything.
    pub fn icmp_error(self, kind: IcmpError, quoted: impl AsRef<[u8]>) -> Self {
        let (icmp_type, code, rest) = kind.encode(self.family());
        self.icmp(icmp_type, code, rest).payload(quoted)
    }

    /// No L4 header: the IP protocol is `protocol` and the payload follows the IP headers.
    pub fn raw_protocol(mut self, protocol: u8) -> Self {
        self.l4 = L4::Raw { protocol };
        self
    }

    #[track_caller]
    pub fn flags(mut self, flags: TcpFlags) -> Self {
        self.tcp_fields("flags").flags = flags;
        self
    }

    #[track_caller]
    pub fn seq(mut self, seq: u32) -> Self {
        self.tcp_fields("seq").seq = seq;
        self
    }

    /// The acknowledgment number (it does not set the ACK flag).
    #[track_caller]
    pub fn ack_number(mut self, ack: u32) -> Self {
        self.tcp_fields("ack_number").ack = ack;
        self
    }

    #[track_caller]
    pub fn window(mut self, window: u16) -> Self {
        self.tcp_fields("window").window = window;
        self
    }

    /// Raw TCP options, zero-padded (end-of-options) to a multiple of 4; the data offset
    /// follows.
    #[track_caller]
    pub fn tcp_options(mut self, options: impl AsRef<[u8]>) -> Self {
        let options = options.as_ref();
        assert!(
            options.len() <= MAX_OPTIONS_LEN,
            "TCP options are at most {MAX_OPTIONS_LEN} bytes, not {}",
            options.len()
        );
        self.tcp_fields("tcp_options").options = options.to_vec();
        self
    }

    /// Sends UDP with a zero checksum: "no checksum" on IPv4, invalid on IPv6 (RFC 8200
    /// allows it only for tunnels), so it tests both.
    #[track_caller]
    pub fn udp_zero_checksum(mut self) -> Self {
        match &mut self.l4 {
            L4::Udp { zero_checksum, .. } => *zero_checksum = true,
            other => panic!("udp_zero_checksum needs a UDP packet; this one is {other:?}"),
        }
        self
    }

    pub fn payload(mut self, payload: impl AsRef<[u8]>) -> Self {
        self.payload = payload.as_ref().to_vec();
        self
    }

    /// Adds a deliberate fault; see [`Corruption`].
    ///
    /// # Panics
    /// At [`Packet::build`], if the fault names a field the packet does not have.
    pub fn corrupt(mut self, corruption: Corruption) -> Self {
        self.corruptions.push(corruption);
        self
    }

    /// The Ethernet frame.
    #[track_caller]
    pub fn build(&self) -> Vec<u8> {
        self.check_corruptions();
        let family = self.family();
        let protocol = self.l4.protocol(family);
        let segment = self.l4_segment(family, protocol);
        let mut frame = self.ethernet_header();
        match family {
            IpFamily::V4 => {
                let (offset, more) = self.fragment.unwrap_or((0, false));
                frame.extend(self.ipv4_header(protocol, segment.len(), offset, more));
            }
            IpFamily::V6 => {
                let mut exts = self.ipv6_ext.clone();
                if let Some((offset, more)) = self.fragment {
                    exts.push(Ipv6ExtHeader::Fragment {
                        offset,
                        more,
                        id: self.identification,
                    });
                }
                frame.extend(self.ipv6_headers(&exts, protocol, segment.len()));
            }
        }
        frame.extend(segment);
        frame
    }

    /// The packet cut into fragments carrying at most `max_fragment_payload` bytes
    /// (a multiple of 8) of the fragmentable part each, as a host would send them. On IPv6
    /// the hop-by-hop and routing headers (and destination options before a routing
    /// header) stay in every fragment and the rest is fragmented. All fragments share
    /// [`Packet::identification`]. Corruptions of L4 fields apply to the whole datagram,
    /// those of IP fields to every fragment.
    ///
    /// # Panics
    /// If the packet is already a fragment or `max_fragment_payload` is not a positive
    /// multiple of 8.
    #[track_caller]
    pub fn fragments(&self, max_fragment_payload: usize) -> Vec<Vec<u8>> {
        assert!(
            self.fragment.is_none()
                && !self
                    .ipv6_ext
                    .iter()
                    .any(|ext| matches!(ext, Ipv6ExtHeader::Fragment { .. })),
            "fragments() cuts a whole datagram; this packet is already a fragment"
        );
        assert!(
            max_fragment_payload > 0 && max_fragment_payload.is_multiple_of(8),
            "fragment payloads must be a positive multiple of 8 bytes, not {max_fragment_payload}"
        );
        self.check_corruptions();
        let family = self.family();
        let protocol = self.l4.protocol(family);
        let segment = self.l4_segment(family, protocol);
        let (unfragmentable, fragmentable, first_protocol) = match family {
            IpFamily::V4 => (Vec::new(), segment, protocol),
            IpFamily::V6 => {
                let split = self
                    .ipv6_ext
                    .iter()
                    .rposition(|ext| matches!(ext, Ipv6ExtHeader::Routing { .. }))
                    .map(|routing| routing + 1)
                    .unwrap_or_else(|| {
                        usize::from(matches!(
                            self.ipv6_ext.first(),
                            Some(Ipv6ExtHeader::HopByHop(_))
                        ))
                    });
                let (unfragmentable, rest) = self.ipv6_ext.split_at(split);
                let mut fragmentable = encode_ext_chain(rest, protocol);
                fragmentable.extend(segment);
                let first = rest.first().map_or(protocol, Ipv6ExtHeader::protocol);
                (unfragmentable.to_vec(), fragmentable, first)
            }
        };
        let count = fragmentable.len().div_ceil(max_fragment_payload).max(1);
        (0..count)
            .map(|index| {
                let start = index * max_fragment_payload;
                let end = (start + max_fragment_payload).min(fragmentable.len());
                let chunk = &fragmentable[start..end];
                let offset = to_u16(start / 8, "fragment offset");
                let more = index + 1 < count;
                let mut frame = self.ethernet_header();
                match family {
                    IpFamily::V4 => {
                        frame.extend(self.ipv4_header(first_protocol, chunk.len(), offset, more));
                    }
                    IpFamily::V6 => {
                        let mut exts = unfragmentable.clone();
                        exts.push(Ipv6ExtHeader::Fragment {
                            offset,
                            more,
                            id: self.identification,
                        });
                        frame.extend(self.ipv6_headers(&exts, first_protocol, chunk.len()));
                    }
                }
                frame.extend_from_slice(chunk);
                frame
            })
            .collect()
    }

    fn ethernet_header(&self) -> Vec<u8> {
        let mut frame = Vec::with_capacity(
            ETH_HEADER_LEN + IPV6_HEADER_LEN + TCP_HEADER_LEN + self.payload.len(),
        );
        frame.extend_from_slice(&self.eth_dst);
        frame.extend_from_slice(&self.eth_src);
        frame.extend_from_slice(&self.family().ethertype().to_be_bytes());
        frame
    }

    #[track_caller]
    fn ipv4_header(&self, protocol: u8, payload_len: usize, offset: u16, more: bool) -> Vec<u8> {
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (self.src, self.dst) else {
            unreachable!("Packet::ip keeps both addresses in one family");
        };
        let mut options = self.ipv4_options.clone();
        options.resize(options.len().next_multiple_of(4), 0);
        let header_len = IPV4_HEADER_LEN + options.len();
        let total_len = to_u16(header_len + payload_len, "IPv4 total length");
        let flags_offset = (u16::from(self.dont_fragment) << 14) | (u16::from(more) << 13) | offset;
        // `identification` checked that the value fits 16 bits.
        let id = self.identification as u16;

        let mut header = Vec::with_capacity(header_len);
        header.push(0x40 | (header_len / 4) as u8);
        header.push(self.traffic_class);
        header.extend_from_slice(&total_len.to_be_bytes());
        header.extend_from_slice(&id.to_be_bytes());
        header.extend_from_slice(&flags_offset.to_be_bytes());
        header.extend_from_slice(&[self.ttl, protocol, 0, 0]);
        header.extend_from_slice(&src.octets());
        header.extend_from_slice(&dst.octets());
        header.extend_from_slice(&options);

        let mut checksum_override = None;
        for corruption in &self.corruptions {
            match *corruption {
                Corruption::IpLength(len) => header[2..4].copy_from_slice(&len.to_be_bytes()),
                Corruption::Ipv4Ihl(ihl) => header[0] = (header[0] & 0xf0) | (ihl & 0x0f),
                Corruption::IpVersion(version) => {
                    header[0] = (version << 4) | (header[0] & 0x0f);
                }
                Corruption::Ipv4Checksum(checksum) => checksum_override = Some(checksum),
                _ => {}
            }
        }
        let checksum = checksum_override.unwrap_or_else(|| internet_checksum(&header));
        header[10..12].copy_from_slice(&checksum.to_be_bytes());
        header
    }

    /// The IPv6 header and `exts`, announcing `upper_len` bytes of `upper_protocol` after
    /// them.
    #[track_caller]
    fn ipv6_headers(
        &self,
        exts: &[Ipv6ExtHeader],
        upper_protocol: u8,
        upper_len: usize,
    ) -> Vec<u8> {
        let (IpAddr::V6(src), IpAddr::V6(dst)) = (self.src, self.dst) else {
            unreachable!("Packet::ip keeps both addresses in one family");
        };
        let chain = encode_ext_chain(exts, upper_protocol);
        let next_header = exts.first().map_or(upper_protocol, Ipv6ExtHeader::protocol);
        let payload_len = to_u16(chain.len() + upper_len, "IPv6 payload length");
        let first_word = (6 << 28) | (u32::from(self.traffic_class) << 20) | self.flow_label;

        let mut headers = Vec::with_capacity(IPV6_HEADER_LEN + chain.len());
        headers.extend_from_slice(&first_word.to_be_bytes());
        headers.extend_from_slice(&payload_len.to_be_bytes());
        headers.extend_from_slice(&[next_header, self.ttl]);
        headers.extend_from_slice(&src.octets());
        headers.extend_from_slice(&dst.octets());
        headers.extend(chain);
        for corruption in &self.corruptions {
            match *corruption {
                Corruption::IpLength(len) => headers[4..6].copy_from_slice(&len.to_be_bytes()),
                Corruption::IpVersion(version) => {
                    headers[0] = (version << 4) | (headers[0] & 0x0f);
                }
                _ => {}
            }
        }
        headers
    }

    /// The L4 header and payload, checksummed.
    #[track_caller]
    fn l4_segment(&self, family: IpFamily, protocol: u8) -> Vec<u8> {
        let mut segment = Vec::with_capacity(TCP_HEADER_LEN + MAX_OPTIONS_LEN + self.payload.len());
        let checksum_at = match &self.l4 {
            L4::Tcp(tcp) => {
                let mut options = tcp.options.clone();
                options.resize(options.len().next_multiple_of(4), 0);
                let data_offset = ((TCP_HEADER_LEN + options.len()) / 4) as u8;
                segment.extend_from_slice(&tcp.src_port.to_be_bytes());
                segment.extend_from_slice(&tcp.dst_port.to_be_bytes());
                segment.extend_from_slice(&tcp.seq.to_be_bytes());
                segment.extend_from_slice(&tcp.ack.to_be_bytes());
                segment.extend_from_slice(&[data_offset << 4, tcp.flags.bits()]);
                segment.extend_from_slice(&tcp.window.to_be_bytes());
                segment.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                segment.extend_from_slice(&options);
                Some(16)
            }
            L4::Udp {
                src_port, dst_port, ..
            } => {
                let len = to_u16(UDP_HEADER_LEN + self.payload.len(), "UDP length");
                segment.extend_from_slice(&src_port.to_be_bytes());
                segment.extend_from_slice(&dst_port.to_be_bytes());
                segment.extend_from_slice(&len.to_be_bytes());
                segment.extend_from_slice(&[0, 0]);
                Some(6)
            }
            L4::Icmp {
                icmp_type,
                code,
                rest,
            } => {
                segment.extend_from_slice(&[*icmp_type, *code, 0, 0]);
                segment.extend_from_slice(rest);
                Some(2)
            }
            L4::Raw { .. } => None,
        };
        segment.extend_from_slice(&self.payload);

        let mut checksum_override = None;
        for corruption in &self.corruptions {
            match *corruption {
                Corruption::UdpLength(len) => segment[4..6].copy_from_slice(&len.to_be_bytes()),
                Corruption::TcpDataOffset(words) => {
                    segment[12] = (words << 4) | (segment[12] & 0x0f);
                }
                Corruption::L4Checksum(checksum) => checksum_override = Some(checksum),
                _ => {}
            }
        }
        if let Some(at) = checksum_at {
            let checksum = checksum_override.unwrap_or_else(|| {
                let with_pseudo_header = !(family == IpFamily::V4 && protocol == ip_proto::ICMP);
                let mut sum = if with_pseudo_header {
                    pseudo_header(self.src, self.dst, protocol, segment.len())
                } else {
                    Checksum::default()
                };
                sum.add(&segment);
                match (&self.l4, sum.finish()) {
                    (
                        L4::Udp {
                            zero_checksum: true,
                            ..
                        },
                        _,
                    ) => 0,
                    // RFC 768: a computed zero is sent as all ones, zero meaning "none".
                    (L4::Udp { .. }, 0) => 0xffff,
                    (_, checksum) => checksum,
                }
            });
            segment[at..at + 2].copy_from_slice(&checksum.to_be_bytes());
        }
        segment
    }

    #[track_caller]
    fn check_corruptions(&self) {
        let family = self.family();
        for corruption in &self.corruptions {
            let applies = match corruption {
                Corruption::IpLength(_) | Corruption::IpVersion(_) => true,
                Corruption::Ipv4Ihl(_) | Corruption::Ipv4Checksum(_) => family == IpFamily::V4,
                Corruption::L4Checksum(_) => !matches!(self.l4, L4::Raw { .. }),
                Corruption::UdpLength(_) => matches!(self.l4, L4::Udp { .. }),
                Corruption::TcpDataOffset(_) => matches!(self.l4, L4::Tcp(_)),
            };
            assert!(
                applies,
                "{corruption:?} does not apply to this packet: {self:?}"
            );
        }
    }

    #[track_caller]
    fn tcp_fields(&mut self, method: &str) -> &mut TcpFields {
        match &mut self.l4 {
            L4::Tcp(tcp) => tcp,
            other => panic!("Packet::{method} needs TCP (call .tcp() first); the L4 is {other:?}"),
        }
    }

    #[track_caller]
    fn expect_family(&self, family: IpFamily, method: &str) {
        assert_eq!(
            self.family(),
            family,
            "Packet::{method} is for {family:?} packets; this one is {} -> {}",
            self.src,
            self.dst
        );
    }

    #[track_caller]
    fn same_family(&self, addr: IpAddr) -> IpAddr {
        assert_eq!(
            IpFamily::of(addr),
            self.family(),
            "{addr} is not of this packet's family ({} -> {})",
            self.src,
            self.dst
        );
        addr
    }
}

#[track_caller]
fn encode_ext_chain(exts: &[Ipv6ExtHeader], upper_protocol: u8) -> Vec<u8> {
    let mut chain = Vec::new();
    for (index, ext) in exts.iter().enumerate() {
        let next = exts
            .get(index + 1)
            .map_or(upper_protocol, Ipv6ExtHeader::protocol);
        ext.encode_into(next, &mut chain);
    }
    chain
}

#[track_caller]
fn assert_fragment_offset(offset: u16) {
    assert!(
        offset <= MAX_FRAGMENT_OFFSET,
        "fragment offset {offset} (in 8-octet units) does not fit 13 bits"
    );
}

#[track_caller]
fn to_u16(value: usize, what: &str) -> u16 {
    match u16::try_from(value) {
        Ok(value) => value,
        Err(_) => panic!("{what} would be {value}, more than 16 bits hold"),
    }
}

/// RFC 1071 one's-complement sum.
#[derive(Clone, Copy, Debug, Default)]
struct Checksum {
    sum: u64,
}

impl Checksum {
    /// Adds `bytes`; an odd-length slice is padded with a zero byte, so only the last slice
    /// may have odd length.
    fn add(&mut self, bytes: &[u8]) {
        let (words, remainder) = bytes.as_chunks::<2>();
        for word in words {
            self.sum += u64::from(u16::from_be_bytes(*word));
        }
        if let [last] = remainder {
            self.sum += u64::from(*last) << 8;
        }
    }

    /// The checksum to put in a header; summed over a packet including its checksum field,
    /// a valid packet gives 0.
    fn finish(self) -> u16 {
        let mut sum = self.sum;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }
}

/// The Internet checksum (RFC 1071) of `bytes`: 0 when `bytes` include a correct checksum
/// field.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum = Checksum::default();
    sum.add(bytes);
    sum.finish()
}

/// The TCP/UDP/ICMPv6 pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1) summed; for IPv6 `dst`
/// is the final destination.
fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, l4_len: usize) -> Checksum {
    let mut sum = Checksum::default();
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            sum.add(&src.octets());
            sum.add(&dst.octets());
            sum.add(&[0, protocol]);
            sum.add(&(l4_len as u16).to_be_bytes());
        }
        _ => {
            sum.add(&ip_octets(src));
            sum.add(&ip_octets(dst));
            sum.add(&(l4_len as u32).to_be_bytes());
            sum.add(&[0, 0, 0, protocol]);
        }
    }
    sum
}

fn ip_octets(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(addr) => addr.to_ipv6_mapped().octets(),
        IpAddr::V6(addr) => addr.octets(),
    }
}

/// Why a frame could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The frame (or the IP datagram, as its length field says) ends inside `what`.
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    UnsupportedEthertype(u16),
    WrongIpVersion {
        expected: u8,
        found: u8,
    },
    /// IPv4 IHL below 5.
    BadIpv4HeaderLength(u8),
    /// The IP length field claims more bytes than the frame has, or fewer than the header.
    BadIpLength {
        field: u16,
        available: usize,
    },
    /// TCP data offset below 5.
    BadTcpDataOffset(u8),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Truncated {
                what,
                offset,
                needed,
                available,
            } => write!(
                f,
                "truncated {what} at byte {offset}: needs {needed} bytes, {available} left"
            ),
            ParseError::UnsupportedEthertype(ethertype) => {
                write!(f, "ethertype {ethertype:#06x} is neither IPv4 nor IPv6")
            }
            ParseError::WrongIpVersion { expected, found } => {
                write!(f, "IP version {found} where {expected} was expected")
            }
            ParseError::BadIpv4HeaderLength(ihl) => {
                write!(f, "IPv4 IHL {ihl} is below the minimum of 5")
            }
            ParseError::BadIpLength { field, available } => write!(
                f,
                "IP length field says {field} bytes but {available} are there (or it is \
                 shorter than the header)"
            ),
            ParseError::BadTcpDataOffset(words) => {
                write!(f, "TCP data offset {words} is below the minimum of 5")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// Which checksum of a parsed frame is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumError {
    Ipv4Header,
    /// The TCP, UDP or ICMP checksum.
    L4 {
        protocol: u8,
    },
    /// The IPv4 header quoted in an ICMP error (a NAT must fix it when it rewrites).
    QuotedIpv4Header,
}

impl fmt::Display for ChecksumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChecksumError::Ipv4Header => f.write_str("bad IPv4 header checksum"),
            ChecksumError::L4 { protocol } => write!(f, "bad checksum for IP protocol {protocol}"),
            ChecksumError::QuotedIpv4Header => {
                f.write_str("bad checksum in the IPv4 header quoted by the ICMP error")
            }
        }
    }
}

impl std::error::Error for ChecksumError {}

/// Fragment fields, from the IPv4 header or the IPv6 fragment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentInfo {
    /// In 8-octet units.
    pub offset: u16,
    pub more: bool,
    pub id: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpInfo {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub window: u16,
    pub checksum: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpInfo {
    pub src_port: u16,
    pub dst_port: u16,
    pub length: u16,
    pub checksum: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EchoInfo {
    pub id: u16,
    pub seq: u16,
    pub reply: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpInfo {
    pub icmp_type: u8,
    pub code: u8,
    pub checksum: u16,
    /// The four bytes after the checksum.
    pub rest: [u8; 4],
    /// For echo requests and replies.
    pub echo: Option<EchoInfo>,
    /// For ICMPv4 fragmentation-needed and ICMPv6 packet-too-big.
    pub mtu: Option<u32>,
    /// For errors, the offending packet they quote (when its IP header is there).
    pub quoted: Option<QuotedPacket>,
}

/// The packet an ICMP error quotes: its IP header(s) and as much L4 as is there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotedPacket {
    /// Where its IP header starts in the frame.
    pub l3_offset: usize,
    pub l4_offset: usize,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    /// TCP or UDP source and destination ports.
    pub ports: Option<(u16, u16)>,
    /// The identifier of a quoted ICMP echo.
    pub echo_id: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4Info {
    Tcp(TcpInfo),
    Udp(UdpInfo),
    /// ICMP in IPv4, ICMPv6 in IPv6.
    Icmp(IcmpInfo),
    /// A protocol this parser does not decode, or a non-first fragment (no L4 header).
    Other,
}

/// A frame read back: Ethernet, IP and L4 fields with their offsets in the frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedPacket<'a> {
    frame: &'a [u8],
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL or hop limit.
    pub ttl: u8,
    /// IPv4 DF bit (false on IPv6).
    pub dont_fragment: bool,
    /// The upper-layer protocol, after any IPv6 extension headers.
    pub protocol: u8,
    /// IPv6 extension headers in order, by next-header value.
    pub ipv6_ext: Vec<u8>,
    /// Set for every fragment, the first included.
    pub fragment: Option<FragmentInfo>,
    /// Where the L4 header (or a non-first fragment's data) starts.
    pub l4_offset: usize,
    /// Where the L4 payload starts.
    pub payload_offset: usize,
    /// Where the IP datagram ends, by its length field (Ethernet padding may follow).
    pub ip_end: usize,
    pub l4: L4Info,
}

impl<'a> ParsedPacket<'a> {
    pub fn parse(frame: &'a [u8]) -> Result<Self, ParseError> {
        let eth = slice(frame, 0, ETH_HEADER_LEN, frame.len(), "Ethernet header")?;
        let family = match u16::from_be_bytes([eth[12], eth[13]]) {
            ETHERTYPE_IPV4 => IpFamily::V4,
            ETHERTYPE_IPV6 => IpFamily::V6,
            other => return Err(ParseError::UnsupportedEthertype(other)),
        };
        let ip = IpLayer::parse(frame, ETH_HEADER_LEN, frame.len(), family, true)?;
        let (l4, payload_offset) = parse_l4(frame, &ip, family)?;
        Ok(ParsedPacket {
            frame,
            eth_dst: [eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]],
            eth_src: [eth[6], eth[7], eth[8], eth[9], eth[10], eth[11]],
            src: ip.src,
            dst: ip.dst,
            ttl: ip.ttl,
            dont_fragment: ip.dont_fragment,
            protocol: ip.protocol,
            ipv6_ext: ip.ipv6_ext,
            fragment: ip.fragment,
            l4_offset: ip.l4_offset,
            payload_offset,
            ip_end: ip.end,
            l4,
        })
    }

    pub fn family(&self) -> IpFamily {
        IpFamily::of(self.src)
    }

    /// The frame this was parsed from.
    pub fn frame(&self) -> &'a [u8] {
        self.frame
    }

    /// The L4 payload (for a non-first fragment or an unknown protocol, everything after
    /// the IP headers).
    pub fn payload(&self) -> &'a [u8] {
        &self.frame[self.payload_offset..self.ip_end]
    }

    /// TCP or UDP source and destination ports.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match &self.l4 {
            L4Info::Tcp(tcp) => Some((tcp.src_port, tcp.dst_port)),
            L4Info::Udp(udp) => Some((udp.src_port, udp.dst_port)),
            L4Info::Icmp(_) | L4Info::Other => None,
        }
    }

    pub fn tcp(&self) -> Option<&TcpInfo> {
        match &self.l4 {
            L4Info::Tcp(tcp) => Some(tcp),
            _ => None,
        }
    }

    pub fn udp(&self) -> Option<&UdpInfo> {
        match &self.l4 {
            L4Info::Udp(udp) => Some(udp),
            _ => None,
        }
    }

    pub fn icmp(&self) -> Option<&IcmpInfo> {
        match &self.l4 {
            L4Info::Icmp(icmp) => Some(icmp),
            _ => None,
        }
    }

    /// What an ICMP error about this packet quotes: the IP header(s) and the first 8 bytes
    /// after them (fewer if the datagram is shorter).
    pub fn icmp_quote(&self) -> &'a [u8] {
        let end = (self.l4_offset + 8).min(self.ip_end);
        &self.frame[ETH_HEADER_LEN..end]
    }

    /// Whether [`ParsedPacket::verify_checksums`] finds nothing wrong.
    pub fn checksums_valid(&self) -> bool {
        self.verify_checksums().is_ok()
    }

    /// Checks the IPv4 header checksum, the TCP/UDP/ICMP checksum (not for fragments: the
    /// checksum covers the whole datagram; a zero UDP checksum is valid on IPv4 only), and
    /// the IPv4 header quoted by an ICMP error.
    pub fn verify_checksums(&self) -> Result<(), ChecksumError> {
        let family = self.family();
        if family == IpFamily::V4
            && internet_checksum(&self.frame[ETH_HEADER_LEN..self.l4_offset]) != 0
        {
            return Err(ChecksumError::Ipv4Header);
        }
        if self.fragment.is_none() {
            let segment = &self.frame[self.l4_offset..self.ip_end];
            let with_pseudo_header = || {
                let mut sum = pseudo_header(self.src, self.dst, self.protocol, segment.len());
                sum.add(segment);
                sum.finish() == 0
            };
            let valid = match &self.l4 {
                L4Info::Tcp(_) => with_pseudo_header(),
                L4Info::Udp(udp) => {
                    (family == IpFamily::V4 && udp.checksum == 0) || with_pseudo_header()
                }
                L4Info::Icmp(_) => match family {
                    IpFamily::V4 => internet_checksum(segment) == 0,
                    IpFamily::V6 => with_pseudo_header(),
                },
                L4Info::Other => true,
            };
            if !valid {
                return Err(ChecksumError::L4 {
                    protocol: self.protocol,
                });
            }
        }
        if let Some(quoted) = self.icmp().and_then(|icmp| icmp.quoted.as_ref())
            && family == IpFamily::V4
            && internet_checksum(&self.frame[quoted.l3_offset..quoted.l4_offset]) != 0
        {
            return Err(ChecksumError::QuotedIpv4Header);
        }
        Ok(())
    }
}

/// The IP layer of a frame or of a packet quoted by ICMP.
struct IpLayer {
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    dont_fragment: bool,
    protocol: u8,
    ipv6_ext: Vec<u8>,
    fragment: Option<FragmentInfo>,
    l4_offset: usize,
    end: usize,
}

impl IpLayer {
    /// Parses the IP header at `at`, inside `frame[..limit]`. With `trust_length` the
    /// datagram ends where its length field says (which must be inside `limit`); without,
    /// at `limit`, as for a quote whose length field describes the original packet.
    fn parse(
        frame: &[u8],
        at: usize,
        limit: usize,
        family: IpFamily,
        trust_length: bool,
    ) -> Result<Self, ParseError> {
        let version = frame.get(at).map_or(0, |byte| byte >> 4);
        let expected = match family {
            IpFamily::V4 => 4,
            IpFamily::V6 => 6,
        };
        if at < limit && version != expected {
            return Err(ParseError::WrongIpVersion {
                expected,
                found: version,
            });
        }
        match family {
            IpFamily::V4 => Self::parse_v4(frame, at, limit, trust_length),
            IpFamily::V6 => Self::parse_v6(frame, at, limit, trust_length),
        }
    }

    fn parse_v4(
        frame: &[u8],
        at: usize,
        limit: usize,
        trust_length: bool,
    ) -> Result<Self, ParseError> {
        let header = slice(frame, at, IPV4_HEADER_LEN, limit, "IPv4 header")?;
        let ihl = header[0] & 0x0f;
        if ihl < 5 {
            return Err(ParseError::BadIpv4HeaderLength(ihl));
        }
        let header_len = usize::from(ihl) * 4;
        slice(frame, at, header_len, limit, "IPv4 header with options")?;
        let total_len = u16::from_be_bytes([header[2], header[3]]);
        let end = if trust_length {
            checked_end(at, header_len, total_len, usize::from(total_len), limit)?
        } else {
            limit
        };
        let flags_offset = u16::from_be_bytes([header[6], header[7]]);
        let offset = flags_offset & MAX_FRAGMENT_OFFSET;
        let more = flags_offset & 0x2000 != 0;
        Ok(IpLayer {
            src: Ipv4Addr::new(header[12], header[13], header[14], header[15]).into(),
            dst: Ipv4Addr::new(header[16], header[17], header[18], header[19]).into(),
            ttl: header[8],
            dont_fragment: flags_offset & 0x4000 != 0,
            protocol: header[9],
            ipv6_ext: Vec::new(),
            fragment: (offset != 0 || more).then(|| FragmentInfo {
                offset,
                more,
                id: u32::from(u16::from_be_bytes([header[4], header[5]])),
            }),
            l4_offset: at + header_len,
            end,
        })
    }

    fn parse_v6(
        frame: &[u8],
        at: usize,
        limit: usize,
        trust_length: bool,
    ) -> Result<Self, ParseError> {
        let header = slice(frame, at, IPV6_HEADER_LEN, limit, "IPv6 header")?;
        let payload_len = u16::from_be_bytes([header[4], header[5]]);
        let end = if trust_length {
            checked_end(
                at,
                IPV6_HEADER_LEN,
                payload_len,
                IPV6_HEADER_LEN + usize::from(payload_len),
                limit,
            )?
        } else {
            limit
        };
        let octets = |from: usize| -> [u8; 16] {
            let mut octets = [0; 16];
            octets.copy_from_slice(&header[from..from + 16]);
            octets
        };
        let mut layer = IpLayer {
            src: Ipv6Addr::from(octets(8)).into(),
            dst: Ipv6Addr::from(octets(24)).into(),
            ttl: header[7],
            dont_fragment: false,
            protocol: header[6],
            ipv6_ext: Vec::new(),
            fragment: None,
            l4_offset: at + IPV6_HEADER_LEN,
            end,
        };
        loop {
            let at = layer.l4_offset;
            let len = match layer.protocol {
                ip_proto::HOP_BY_HOP | ip_proto::ROUTING | ip_proto::DEST_OPTS => {
                    let ext = slice(frame, at, 2, end, "IPv6 extension header")?;
                    (usize::from(ext[1]) + 1) * 8
                }
                ip_proto::AUTH => {
                    let ext = slice(frame, at, 2, end, "IPv6 authentication header")?;
                    (usize::from(ext[1]) + 2) * 4
                }
                ip_proto::FRAGMENT => {
                    let ext = slice(frame, at, 8, end, "IPv6 fragment header")?;
                    let offset_more = u16::from_be_bytes([ext[2], ext[3]]);
                    layer.fragment = Some(FragmentInfo {
                        offset: offset_more >> 3,
                        more: offset_more & 1 != 0,
                        id: u32::from_be_bytes([ext[4], ext[5], ext[6], ext[7]]),
                    });
                    8
                }
                _ => return Ok(layer),
            };
            let ext = slice(frame, at, len, end, "IPv6 extension header")?;
            layer.ipv6_ext.push(layer.protocol);
            layer.protocol = ext[0];
            layer.l4_offset = at + len;
            // A non-first fragment carries the middle of the fragmentable part: whatever
            // the fragment header names as next does not start here.
            if layer.fragment.is_some_and(|fragment| fragment.offset != 0) {
                return Ok(layer);
            }
        }
    }
}

/// The end of a datagram at `at` whose length field says `field` (`len` bytes in all).
fn checked_end(
    at: usize,
    header_len: usize,
    field: u16,
    len: usize,
    limit: usize,
) -> Result<usize, ParseError> {
    let available = limit.saturating_sub(at);
    if len < header_len || len > available {
        return Err(ParseError::BadIpLength { field, available });
    }
    Ok(at + len)
}

fn parse_l4(frame: &[u8], ip: &IpLayer, family: IpFamily) -> Result<(L4Info, usize), ParseError> {
    let at = ip.l4_offset;
    if ip.fragment.is_some_and(|fragment| fragment.offset != 0) {
        return Ok((L4Info::Other, at));
    }
    let end = ip.end;
    match ip.protocol {
        ip_proto::TCP => {
            let header = slice(frame, at, TCP_HEADER_LEN, end, "TCP header")?;
            let data_offset = header[12] >> 4;
            if data_offset < 5 {
                return Err(ParseError::BadTcpDataOffset(data_offset));
            }
            let header_len = usize::from(data_offset) * 4;
            slice(frame, at, header_len, end, "TCP header with options")?;
            let be16 = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
            let be32 = |i: usize| {
                u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]])
            };
            let tcp = TcpInfo {
                src_port: be16(0),
                dst_port: be16(2),
                seq: be32(4),
                ack: be32(8),
                flags: TcpFlags::from_bits(header[13]),
                window: be16(14),
                checksum: be16(16),
            };
            Ok((L4Info::Tcp(tcp), at + header_len))
        }
        ip_proto::UDP => {
            let header = slice(frame, at, UDP_HEADER_LEN, end, "UDP header")?;
            let be16 = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
            let udp = UdpInfo {
                src_port: be16(0),
                dst_port: be16(2),
                length: be16(4),
                checksum: be16(6),
            };
            Ok((L4Info::Udp(udp), at + UDP_HEADER_LEN))
        }
        protocol if protocol == family.icmp_protocol() => {
            let header = slice(frame, at, ICMP_HEADER_LEN, end, "ICMP header")?;
            let (icmp_type, code) = (header[0], header[1]);
            let rest = [header[4], header[5], header[6], header[7]];
            let (request, reply) = family.echo_types();
            let echo = (icmp_type == request || icmp_type == reply).then(|| EchoInfo {
                id: u16::from_be_bytes([rest[0], rest[1]]),
                seq: u16::from_be_bytes([rest[2], rest[3]]),
                reply: icmp_type == reply,
            });
            let mtu = match (family, icmp_type, code) {
                (IpFamily::V4, icmp_type::V4_DEST_UNREACHABLE, 4) => {
                    Some(u32::from(u16::from_be_bytes([rest[2], rest[3]])))
                }
                (IpFamily::V6, icmp_type::V6_PACKET_TOO_BIG, _) => Some(u32::from_be_bytes(rest)),
                _ => None,
            };
            let quoted = if family.is_icmp_error(icmp_type) {
                parse_quoted(frame, at + ICMP_HEADER_LEN, end, family)
            } else {
                None
            };
            let icmp = IcmpInfo {
                icmp_type,
                code,
                checksum: u16::from_be_bytes([header[2], header[3]]),
                rest,
                echo,
                mtu,
                quoted,
            };
            Ok((L4Info::Icmp(icmp), at + ICMP_HEADER_LEN))
        }
        _ => Ok((L4Info::Other, at)),
    }
}

/// The packet quoted at `at` by an ICMP error, if at least its IP header(s) are there.
fn parse_quoted(frame: &[u8], at: usize, end: usize, family: IpFamily) -> Option<QuotedPacket> {
    let inner = IpLayer::parse(frame, at, end, family, false).ok()?;
    let first_fragment = inner.fragment.is_none_or(|fragment| fragment.offset == 0);
    let l4 = frame
        .get(inner.l4_offset..end)
        .filter(|_| first_fragment)
        .unwrap_or_default();
    let ports = match (inner.protocol, l4) {
        (ip_proto::TCP | ip_proto::UDP, [sp0, sp1, dp0, dp1, ..]) => Some((
            u16::from_be_bytes([*sp0, *sp1]),
            u16::from_be_bytes([*dp0, *dp1]),
        )),
        _ => None,
    };
    let (request, reply) = family.echo_types();
    let echo_id = match l4 {
        [icmp_type, _, _, _, id0, id1, ..]
            if inner.protocol == family.icmp_protocol()
                && (*icmp_type == request || *icmp_type == reply) =>
        {
            Some(u16::from_be_bytes([*id0, *id1]))
        }
        _ => None,
    };
    Some(QuotedPacket {
        l3_offset: at,
        l4_offset: inner.l4_offset,
        src: inner.src,
        dst: inner.dst,
        protocol: inner.protocol,
        ports,
        echo_id,
    })
}

/// `frame[at..at + len]`, which must end by `end`.
fn slice<'a>(
    frame: &'a [u8],
    at: usize,
    len: usize,
    end: usize,
    what: &'static str,
) -> Result<&'a [u8], ParseError> {
    let end = end.min(frame.len());
    if at + len > end {
        return Err(ParseError::Truncated {
            what,
            offset: at,
            needed: len,
            available: end.saturating_sub(at),
        });
    }
    Ok(&frame[at..at + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from kernel 6.x: two network namespaces joined by veth va (MAC_A,
    // 192.0.2.1, 2001:db8::1) and vb (MAC_B, .2 / ::2), tx checksum offload off on va so the
    // kernel computed every checksum in software, read from an AF_PACKET socket on va. Each
    // checksum was checked again with an independent Python RFC 1071 implementation.
    const MAC_A: [u8; 6] = [0x4e, 0xfa, 0x31, 0xa9, 0x10, 0x52];
    const MAC_B: [u8; 6] = [0xce, 0x84, 0x6b, 0x85, 0xe4, 0x9b];
    /// `ping -s 8 192.0.2.2`.
    const CAPTURED_ICMPV4_ECHO: &str = "ce846b85e49b4efa31a910520800450000244575400040017160\
        c0000201c00002020800cfa21c4c00010001020304050607";
    /// `connect()` from 192.0.2.1:40000 to 192.0.2.2:80 (MSS, SACK-permitted, timestamps,
    /// window scale).
    const CAPTURED_TCP_SYN: &str = "ce846b85e49b4efa31a9105208004500003c54b14000400662\
        07c0000201c00002029c4000506c34a47300000000a002faf0ad810000020405b40402080a9b08d3450000\
        00000103030a";
    /// The RST|ACK vb answered with (nothing listens on port 80).
    const CAPTURED_TCP_RST: &str = "4efa31a91052ce846b85e49b080045000028000040004006b6cc\
        c0000202c000020100509c40000000006c34a474501400007e930000";
    /// `ping -6 -s 8 2001:db8::2`.
    const CAPTURED_ICMPV6_ECHO: &str = "ce846b85e49b4efa31a9105286dd6003bf6600103a4020010db8\
        00000000000000000000000120010db80000000000000000000000028000fbe11c4d000100010203040506\
        07";
    /// `sendto(b"fedwall")` from [2001:db8::1]:5353 to [2001:db8::2]:53.
    const CAPTURED_UDP6: &str = "ce846b85e49b4efa31a9105286dd60086e37000f114020010db80000\
        0000000000000000000120010db800000000000000000000000214e90035000ff6f366656477616c6c";
    /// vb's port unreachable for CAPTURED_UDP6, which it quotes whole.
    const CAPTURED_ICMPV6_PORT_UNREACHABLE: &str = "4efa31a91052ce846b85e49b86dd6000ac05003f\
        3a4020010db800000000000000000000000220010db80000000000000000000000010104c39e0000000060\
        086e37000f114020010db800000000000000000000000120010db800000000000000000000000214e90035\
        000ff6f366656477616c6c";
    /// va's MLDv2 report: a hop-by-hop header (router alert, PadN) before ICMPv6 type 143.
    const CAPTURED_MLD_REPORT: &str = "3333000000164efa31a9105286dd6000000000380001fe8000000000\
        00004cfa31fffea91052ff0200000000000000000000000000163a000502000001008f00cffd0000000204\
        000000ff0200000000000000000001ffa9105204000000ff0200000000000000000001ff000001";

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|pair| {
                let pair = std::str::from_utf8(pair).expect("test vectors are ASCII");
                u8::from_str_radix(pair, 16).expect("test vectors are hex")
            })
            .collect()
    }

    fn parse(frame: &[u8]) -> ParsedPacket<'_> {
        ParsedPacket::parse(frame).unwrap_or_else(|err| panic!("{err}: {frame:02x?}"))
    }

    fn v4(host: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, host)
    }

    fn v6(host: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, host)
    }

    fn assert_same_bytes(built: &[u8], expected: &[u8]) {
        assert_eq!(
            built,
            expected,
            "built {} bytes, expected {}; first difference at byte {:?}",
            built.len(),
            expected.len(),
            built.iter().zip(expected).position(|(a, b)| a != b)
        );
    }

    #[test]
    fn rfc1071_checksum_of_a_known_ipv4_header() {
        // The worked example on Wikipedia's "Internet checksum" page: checksum 0xb861.
        let mut header = hex("450000730000400040110000c0a80001c0a800c7");
        assert_eq!(internet_checksum(&header), 0xb861);
        header[10..12].copy_from_slice(&[0xb8, 0x61]);
        assert_eq!(internet_checksum(&header), 0);
        // An odd trailing byte is the high half of a zero-padded word.
        assert_eq!(internet_checksum(&[0x01]), !0x0100);
    }

    #[test]
    fn captured_packets_parse_with_valid_checksums() {
        for (name, text) in [
            ("ICMPv4 echo", CAPTURED_ICMPV4_ECHO),
            ("TCP SYN", CAPTURED_TCP_SYN),
            ("TCP RST", CAPTURED_TCP_RST),
            ("ICMPv6 echo", CAPTURED_ICMPV6_ECHO),
            ("UDP over IPv6", CAPTURED_UDP6),
            ("ICMPv6 port unreachable", CAPTURED_ICMPV6_PORT_UNREACHABLE),
            ("MLD report", CAPTURED_MLD_REPORT),
        ] {
            let frame = hex(text);
            let parsed = parse(&frame);
            assert_eq!(parsed.verify_checksums(), Ok(()), "{name}");
            assert_eq!(parsed.ip_end, frame.len(), "{name}");
            // Any flipped bit must be caught by one of the checksums.
            let mut broken = frame.clone();
            broken[parsed.payload_offset.min(frame.len() - 1)] ^= 0x01;
            assert!(
                !parse(&broken).checksums_valid(),
                "{name} with a flipped bit"
            );
        }
    }

    #[test]
    fn captured_tcp_syn_fields() {
        let frame = hex(CAPTURED_TCP_SYN);
        let parsed = parse(&frame);
        assert_eq!((parsed.eth_src, parsed.eth_dst), (MAC_A, MAC_B));
        assert_eq!((parsed.src, parsed.dst), (v4(1).into(), v4(2).into()));
        assert_eq!((parsed.protocol, parsed.ttl), (ip_proto::TCP, 64));
        assert!(parsed.dont_fragment);
        assert_eq!(parsed.fragment, None);
        assert_eq!(parsed.ports(), Some((40000, 80)));
        let tcp = parsed.tcp().expect("a TCP SYN");
        assert_eq!(tcp.flags, TcpFlags::SYN);
        assert_eq!((tcp.seq, tcp.ack, tcp.window), (0x6c34_a473, 0, 0xfaf0));
        assert_eq!(parsed.l4_offset, ETH_HEADER_LEN + 20);
        assert_eq!(parsed.payload_offset, ETH_HEADER_LEN + 20 + 40);
        assert!(parsed.payload().is_empty());
    }

    #[test]
    fn builder_reproduces_captured_tcp_syn() {
        let options = hex("020405b40402080a9b08d345000000000103030a");
        let built = Packet::ipv4(v4(1), v4(2))
            .eth_src(MAC_A)
            .eth_dst(MAC_B)
            .identification(0x54b1)
            .dont_fragment(true)
            .tcp(40000, 80)
            .flags(TcpFlags::SYN)
            .seq(0x6c34_a473)
            .window(0xfaf0)
            .tcp_options(options)
            .build();
        assert_same_bytes(&built, &hex(CAPTURED_TCP_SYN));
    }

    #[test]
    fn builder_reproduces_captured_tcp_rst() {
        let built = Packet::ipv4(v4(2), v4(1))
            .eth_src(MAC_B)
            .eth_dst(MAC_A)
            .dont_fragment(true)
            .tcp(80, 40000)
            .flags(TcpFlags::RST | TcpFlags::ACK)
            .ack_number(0x6c34_a474)
            .window(0)
            .build();
        assert_same_bytes(&built, &hex(CAPTURED_TCP_RST));
    }

    #[test]
    fn builder_reproduces_captured_icmpv4_echo() {
        let built = Packet::ipv4(v4(1), v4(2))
            .eth_src(MAC_A)
            .eth_dst(MAC_B)
            .identification(0x4575)
            .dont_fragment(true)
            .icmp_echo_request(0x1c4c, 1)
            .payload([0, 1, 2, 3, 4, 5, 6, 7])
            .build();
        assert_same_bytes(&built, &hex(CAPTURED_ICMPV4_ECHO));
        let parsed = parse(&built);
        let icmp = parsed.icmp().expect("an ICMP echo");
        assert_eq!((icmp.icmp_type, icmp.code), (icmp_type::V4_ECHO_REQUEST, 0));
        let echo = EchoInfo {
            id: 0x1c4c,
            seq: 1,
            reply: false,
        };
        assert_eq!(icmp.echo, Some(echo));
        assert_eq!(parsed.payload(), [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn builder_reproduces_captured_icmpv6_echo() {
        let built = Packet::ipv6(v6(1), v6(2))
            .eth_src(MAC_A)
            .eth_dst(MAC_B)
            .flow_label(0x3bf66)
            .icmp_echo_request(0x1c4d, 1)
            .payload([0, 1, 2, 3, 4, 5, 6, 7])
            .build();
        assert_same_bytes(&built, &hex(CAPTURED_ICMPV6_ECHO));
    }

    #[test]
    fn builder_reproduces_captured_udp_over_ipv6() {
        let built = Packet::ipv6(v6(1), v6(2))
            .eth_src(MAC_A)
            .eth_dst(MAC_B)
            .flow_label(0x86e37)
            .udp(5353, 53)
            .payload(b"fedwall")
            .build();
        assert_same_bytes(&built, &hex(CAPTURED_UDP6));
        let parsed = parse(&built);
        assert_eq!(parsed.ports(), Some((5353, 53)));
        assert_eq!(parsed.payload(), b"fedwall");
    }

    #[test]
    fn builder_reproduces_captured_icmpv6_port_unreachable() {
        let original = hex(CAPTURED_UDP6);
        let built = Packet::ipv6(v6(2), v6(1))
            .eth_src(MAC_B)
            .eth_dst(MAC_A)
            .flow_label(0x0ac05)
            .icmp_error(IcmpError::PortUnreachable, &original[ETH_HEADER_LEN..])
            .build();
        let captured = hex(CAPTURED_ICMPV6_PORT_UNREACHABLE);
        assert_same_bytes(&built, &captured);

        let parsed = parse(&captured);
        let icmp = parsed.icmp().expect("an ICMPv6 error");
        assert_eq!(
            (icmp.icmp_type, icmp.code),
            (icmp_type::V6_DEST_UNREACHABLE, 4)
        );
        let quoted = icmp.quoted.as_ref().expect("the quoted UDP packet");
        assert_eq!((quoted.src, quoted.dst), (v6(1).into(), v6(2).into()));
        assert_eq!(
            (quoted.protocol, quoted.ports),
            (ip_proto::UDP, Some((5353, 53)))
        );
        assert_eq!(quoted.l3_offset, ETH_HEADER_LEN + 40 + 8);
        assert_eq!(quoted.l4_offset, quoted.l3_offset + 40);
    }

    #[test]
    fn builder_reproduces_captured_mld_report_with_hop_by_hop() {
        let router_alert_mld = vec![0x05, 0x02, 0x00, 0x00];
        let records =
            hex("04000000ff0200000000000000000001ffa9105204000000ff0200000000000000000001ff000001");
        let src: Ipv6Addr = "fe80::4cfa:31ff:fea9:1052"
            .parse()
            .expect("an IPv6 address");
        let dst: Ipv6Addr = "ff02::16".parse().expect("an IPv6 address");
        let built = Packet::ipv6(src, dst)
            .eth_src(MAC_A)
            .eth_dst([0x33, 0x33, 0, 0, 0, 0x16])
            .ttl(1)
            .ipv6_ext(Ipv6ExtHeader::HopByHop(router_alert_mld))
            .icmp(143, 0, [0, 0, 0, 2])
            .payload(records)
            .build();
        assert_same_bytes(&built, &hex(CAPTURED_MLD_REPORT));
        let parsed = parse(&built);
        assert_eq!(parsed.ipv6_ext, [ip_proto::HOP_BY_HOP]);
        assert_eq!(parsed.protocol, ip_proto::ICMPV6);
        assert_eq!(parsed.l4_offset, ETH_HEADER_LEN + 40 + 8);
    }

    /// One L4 case for the round trip, independent of family.
    fn round_trip_cases(family: IpFamily) -> Vec<(&'static str, Packet)> {
        let packet = || Packet::ip(family.doc_addr(0, 10), family.doc_addr(1, 20));
        vec![
            (
                "TCP",
                packet()
                    .tcp(1234, 443)
                    .flags(TcpFlags::PSH | TcpFlags::ACK)
                    .seq(7)
                    .ack_number(9)
                    .window(1000)
                    .payload(b"hello"),
            ),
            (
                "TCP FIN",
                packet().tcp(1234, 443).flags(TcpFlags::FIN | TcpFlags::ACK),
            ),
            ("UDP", packet().udp(5000, 53).payload(b"odd")),
            ("UDP empty", packet().udp(5000, 53)),
            (
                "echo request",
                packet().icmp_echo_request(77, 3).payload(b"ping"),
            ),
            (
                "echo reply",
                packet().icmp_echo_reply(77, 3).payload(b"ping"),
            ),
            ("raw", packet().raw_protocol(132).payload([1, 2, 3])),
        ]
    }

    #[test]
    fn round_trip_every_protocol_in_both_families() {
        for family in IpFamily::ALL {
            for (name, packet) in round_trip_cases(family) {
                let frame = packet.build();
                let parsed = parse(&frame);
                let case = format!("{name} over {family:?}");
                assert_eq!(parsed.verify_checksums(), Ok(()), "{case}");
                assert_eq!(parsed.family(), family, "{case}");
                assert_eq!(parsed.src, family.doc_addr(0, 10), "{case}");
                assert_eq!(parsed.dst, family.doc_addr(1, 20), "{case}");
                assert_eq!(
                    (parsed.eth_src, parsed.eth_dst),
                    (DEFAULT_SRC_MAC, DEFAULT_DST_MAC)
                );
                assert_eq!(parsed.ttl, DEFAULT_TTL, "{case}");
                assert_eq!(parsed.ip_end, frame.len(), "{case}");
                match (name, &parsed.l4) {
                    ("TCP", L4Info::Tcp(tcp)) => {
                        assert_eq!((tcp.src_port, tcp.dst_port), (1234, 443));
                        assert_eq!((tcp.seq, tcp.ack, tcp.window), (7, 9, 1000));
                        assert_eq!(tcp.flags, TcpFlags::PSH | TcpFlags::ACK);
                        assert_eq!(parsed.payload(), b"hello");
                    }
                    ("TCP FIN", L4Info::Tcp(tcp)) => {
                        assert!(tcp.flags.contains(TcpFlags::FIN));
                        assert!(parsed.payload().is_empty());
                    }
                    ("UDP", L4Info::Udp(udp)) => {
                        assert_eq!((udp.src_port, udp.dst_port, udp.length), (5000, 53, 11));
                        assert_eq!(parsed.payload(), b"odd");
                    }
                    ("UDP empty", L4Info::Udp(udp)) => assert_eq!(udp.length, 8),
                    ("echo request" | "echo reply", L4Info::Icmp(icmp)) => {
                        assert_eq!(parsed.protocol, family.icmp_protocol(), "{case}");
                        let echo = icmp.echo.expect("an echo");
                        assert_eq!((echo.id, echo.seq), (77, 3));
                        assert_eq!(echo.reply, name == "echo reply", "{case}");
                        assert_eq!(icmp.quoted, None);
                        assert_eq!(parsed.payload(), b"ping");
                    }
                    ("raw", L4Info::Other) => {
                        assert_eq!(parsed.protocol, 132);
                        assert_eq!(parsed.payload(), [1, 2, 3]);
                    }
                    (_, l4) => panic!("{case} parsed as {l4:?}"),
                }
            }
        }
    }

    #[test]
    fn ip_fields_round_trip_in_both_families() {
        for family in IpFamily::ALL {
            let frame = Packet::ip(family.doc_addr(2, 1), family.doc_addr(2, 2))
                .eth_src(MAC_A)
                .eth_dst(MAC_B)
                .ttl(3)
                .traffic_class(0xb8)
                .udp(1, 2)
                .build();
            let parsed = parse(&frame);
            assert_eq!(parsed.ttl, 3);
            assert_eq!((parsed.eth_src, parsed.eth_dst), (MAC_A, MAC_B));
            assert_eq!(
                u16::from_be_bytes([frame[12], frame[13]]),
                family.ethertype()
            );
            let traffic_class = match family {
                IpFamily::V4 => frame[15],
                IpFamily::V6 => (frame[14] << 4) | (frame[15] >> 4),
            };
            assert_eq!(traffic_class, 0xb8, "{family:?}");
        }
    }

    #[test]
    fn ethernet_padding_after_the_datagram_is_ignored() {
        for family in IpFamily::ALL {
            let mut frame = Packet::ip(family.doc_addr(0, 1), family.doc_addr(0, 2))
                .udp(1, 2)
                .build();
            let datagram_end = frame.len();
            frame.resize(datagram_end + 16, 0);
            let parsed = parse(&frame);
            assert_eq!(parsed.ip_end, datagram_end);
            assert!(parsed.checksums_valid(), "{family:?}");
        }
    }

    #[test]
    fn fragments_parse_to_their_l4_protocol() {
        for family in IpFamily::ALL {
            let packet =
                || Packet::ip(family.doc_addr(0, 1), family.doc_addr(0, 2)).identification(0x4242);
            let first = packet()
                .fragment(0, true)
                .udp(5000, 53)
                .payload([0; 16])
                .build();
            let parsed = parse(&first);
            let expected = FragmentInfo {
                offset: 0,
                more: true,
                id: 0x4242,
            };
            assert_eq!(parsed.fragment, Some(expected), "{family:?}");
            assert_eq!(parsed.protocol, ip_proto::UDP);
            assert_eq!(parsed.ports(), Some((5000, 53)), "{family:?}");
            assert!(
                parsed.checksums_valid(),
                "{family:?}: L4 is not checked on fragments"
            );

            let last = packet()
                .fragment(3, false)
                .raw_protocol(ip_proto::UDP)
                .payload(b"tail")
                .build();
            let parsed = parse(&last);
            let expected = FragmentInfo {
                offset: 3,
                more: false,
                id: 0x4242,
            };
            assert_eq!(parsed.fragment, Some(expected), "{family:?}");
            assert_eq!(
                (parsed.protocol, &parsed.l4),
                (ip_proto::UDP, &L4Info::Other)
            );
            assert_eq!(parsed.payload(), b"tail");
            assert!(parsed.checksums_valid(), "{family:?}");
            let expected_chain: &[u8] = match family {
                IpFamily::V4 => &[],
                IpFamily::V6 => &[ip_proto::FRAGMENT],
            };
            assert_eq!(parsed.ipv6_ext, expected_chain);
        }
    }

    #[test]
    fn ipv4_fragment_fields_are_on_the_wire() {
        let frame = Packet::ipv4(v4(1), v4(2))
            .identification(0xbeef)
            .dont_fragment(false)
            .fragment(185, true)
            .raw_protocol(ip_proto::TCP)
            .build();
        assert_eq!(frame[18..20], [0xbe, 0xef]);
        assert_eq!(u16::from_be_bytes([frame[20], frame[21]]), 0x2000 | 185);
    }

    #[test]
    fn ipv6_extension_chain_is_chained_padded_and_parsed() {
        let routing_data = [0u8; 4 + 16]; // reserved, then one address (type 0 layout)
        let frame = Packet::ipv6(v6(1), v6(2))
            .ipv6_ext(Ipv6ExtHeader::HopByHop(vec![0x05, 0x02, 0x00, 0x00]))
            .ipv6_ext(Ipv6ExtHeader::DestinationOptions(vec![0x1e, 0x03, 1, 2, 3]))
            .ipv6_ext(Ipv6ExtHeader::Routing {
                routing_type: 0,
                segments_left: 0,
                data: routing_data.to_vec(),
            })
            .ipv6_ext(Ipv6ExtHeader::DestinationOptions(Vec::new()))
            .tcp(1000, 2000)
            .flags(TcpFlags::SYN)
            .build();
        let parsed = parse(&frame);
        use ip_proto::*;
        assert_eq!(parsed.ipv6_ext, [HOP_BY_HOP, DEST_OPTS, ROUTING, DEST_OPTS]);
        assert_eq!(parsed.protocol, TCP);
        assert_eq!(parsed.ports(), Some((1000, 2000)));
        assert_eq!(parsed.verify_checksums(), Ok(()));

        // By hand: next-header bytes and 8-byte lengths.
        let base = ETH_HEADER_LEN;
        assert_eq!(frame[base + 6], HOP_BY_HOP);
        let mut at = base + 40;
        for (next, len) in [(DEST_OPTS, 8), (ROUTING, 8), (DEST_OPTS, 24), (TCP, 8)] {
            assert_eq!(frame[at], next, "next header at byte {at}");
            assert_eq!(
                usize::from(frame[at + 1]),
                len / 8 - 1,
                "length at byte {}",
                at + 1
            );
            at += len;
        }
        assert_eq!(at, parsed.l4_offset);
        // Pad1 after the 5 option bytes of the first destination options header; PadN (4
        // bytes) filling the empty one.
        assert_eq!(frame[base + 48 + 7], 0);
        assert_eq!(frame[base + 80 + 2..base + 80 + 8], [1, 4, 0, 0, 0, 0]);
        let payload_len = u16::from_be_bytes([frame[base + 4], frame[base + 5]]);
        assert_eq!(usize::from(payload_len), frame.len() - base - 40);
    }

    #[test]
    fn ipv6_fragment_header_after_other_extensions() {
        let frame = Packet::ipv6(v6(1), v6(2))
            .identification(0xdead_beef)
            .ipv6_ext(Ipv6ExtHeader::HopByHop(Vec::new()))
            .fragment(0, true)
            .ipv6_ext(Ipv6ExtHeader::DestinationOptions(Vec::new()))
            .icmp_echo_request(1, 1)
            .build();
        let parsed = parse(&frame);
        use ip_proto::*;
        // fragment() goes after every header from ipv6_ext, whatever the call order.
        assert_eq!(parsed.ipv6_ext, [HOP_BY_HOP, DEST_OPTS, FRAGMENT]);
        assert_eq!(parsed.protocol, ICMPV6);
        let expected = FragmentInfo {
            offset: 0,
            more: true,
            id: 0xdead_beef,
        };
        assert_eq!(parsed.fragment, Some(expected));
        assert!(parsed.icmp().is_some_and(|icmp| icmp.echo.is_some()));
    }

    #[test]
    fn fragments_cut_a_datagram_that_reassembles() {
        let payload: Vec<u8> = (0..=255).collect();
        for family in IpFamily::ALL {
            let mut packet = Packet::ip(family.doc_addr(0, 1), family.doc_addr(0, 2))
                .identification(0x77)
                .udp(4000, 4001)
                .payload(&payload);
            // What precedes the fragmentable part in every fragment.
            let mut kept_len = ETH_HEADER_LEN + 20;
            if family == IpFamily::V6 {
                packet = packet
                    .ipv6_ext(Ipv6ExtHeader::HopByHop(Vec::new()))
                    .ipv6_ext(Ipv6ExtHeader::DestinationOptions(Vec::new()));
                kept_len = ETH_HEADER_LEN + 40 + 8 + 8;
            }
            let whole = packet.build();
            let whole_parsed = parse(&whole);
            let fragments = packet.fragments(96);
            assert_eq!(fragments.len(), 3, "{family:?}");

            let mut reassembled = Vec::new();
            for (index, fragment) in fragments.iter().enumerate() {
                let parsed = parse(fragment);
                let info = parsed.fragment.expect("a fragment");
                assert_eq!(
                    usize::from(info.offset) * 8,
                    reassembled.len(),
                    "{family:?}"
                );
                assert_eq!(info.more, index < 2, "{family:?}");
                assert_eq!(info.id, 0x77);
                assert!(parsed.checksums_valid(), "{family:?} fragment {index}");
                if index == 0 {
                    assert_eq!(parsed.protocol, ip_proto::UDP);
                    assert_eq!(parsed.ports(), Some((4000, 4001)), "{family:?}");
                } else {
                    assert_eq!(parsed.l4, L4Info::Other);
                }
                if family == IpFamily::V6 {
                    assert_eq!(
                        parsed.ipv6_ext[..2],
                        [ip_proto::HOP_BY_HOP, ip_proto::FRAGMENT]
                    );
                }
                reassembled.extend_from_slice(&fragment[kept_len..parsed.ip_end]);
            }
            let fragmentable_start = kept_len - if family == IpFamily::V6 { 8 } else { 0 };
            assert_eq!(reassembled, whole[fragmentable_start..], "{family:?}");
            assert_eq!(whole_parsed.payload(), payload);
        }
    }

    #[test]
    fn udp_zero_checksum_is_valid_only_on_ipv4() {
        for family in IpFamily::ALL {
            let frame = Packet::ip(family.doc_addr(0, 1), family.doc_addr(0, 2))
                .udp(1, 2)
                .udp_zero_checksum()
                .payload(b"x")
                .build();
            let parsed = parse(&frame);
            assert_eq!(parsed.udp().map(|udp| udp.checksum), Some(0));
            match family {
                IpFamily::V4 => assert_eq!(parsed.verify_checksums(), Ok(())),
                IpFamily::V6 => assert_eq!(
                    parsed.verify_checksums(),
                    Err(ChecksumError::L4 {
                        protocol: ip_proto::UDP
                    })
                ),
            }
        }
    }

    #[test]
    fn udp_computed_zero_checksum_is_sent_as_all_ones() {
        for family in IpFamily::ALL {
            let packet = |payload: [u8; 2]| {
                Packet::ip(family.doc_addr(0, 1), family.doc_addr(0, 2))
                    .udp(1, 2)
                    .payload(payload)
                    .build()
            };
            // Adding a word equal to the checksum of the zero-payload datagram brings the
            // sum to all ones, so the computed checksum is zero.
            let zero_payload = packet([0, 0]);
            let checksum = parse(&zero_payload).udp().expect("UDP").checksum;
            let frame = packet(checksum.to_be_bytes());
            let parsed = parse(&frame);
            assert_eq!(parsed.udp().expect("UDP").checksum, 0xffff, "{family:?}");
            assert!(parsed.checksums_valid(), "{family:?}");
        }
    }

    #[test]
    fn icmp_error_quotes_ip_header_and_eight_l4_bytes() {
        for family in IpFamily::ALL {
            let client = family.doc_addr(0, 1);
            let server = family.doc_addr(1, 2);
            let router = family.doc_addr(2, 254);
            let original = Packet::ip(client, server)
                .eth_src(MAC_A)
                .eth_dst(MAC_B)
                .tcp(40000, 443)
                .flags(TcpFlags::SYN)
                .payload([0xaa; 100])
                .build();
            let original_parsed = parse(&original);

            let error = Packet::icmp_error_for(&original, IcmpError::PortUnreachable)
                .expect("the original parses")
                .build();
            let parsed = parse(&error);
            assert_eq!(parsed.verify_checksums(), Ok(()), "{family:?}");
            assert_eq!((parsed.src, parsed.dst), (server, client));
            assert_eq!((parsed.eth_src, parsed.eth_dst), (MAC_B, MAC_A));
            let icmp = parsed.icmp().expect("an ICMP error");
            let expected_type_code = match family {
                IpFamily::V4 => (icmp_type::V4_DEST_UNREACHABLE, 3),
                IpFamily::V6 => (icmp_type::V6_DEST_UNREACHABLE, 4),
            };
            assert_eq!((icmp.icmp_type, icmp.code), expected_type_code);
            let quote = &original[ETH_HEADER_LEN..original_parsed.l4_offset + 8];
            assert_eq!(parsed.payload(), quote, "{family:?}");
            let quoted = icmp.quoted.as_ref().expect("a quoted packet");
            assert_eq!((quoted.src, quoted.dst), (client, server));
            assert_eq!(
                (quoted.protocol, quoted.ports),
                (ip_proto::TCP, Some((40000, 443)))
            );
            assert_eq!(quoted.l3_offset, parsed.payload_offset);

            let too_big = Packet::icmp_error_for(&original, IcmpError::PacketTooBig { mtu: 1400 })
                .expect("the original parses")
                .src(router)
                .build();
            let parsed = parse(&too_big);
            assert_eq!(parsed.src, router);
            assert!(parsed.checksums_valid(), "{family:?}");
            let icmp = parsed.icmp().expect("an ICMP error");
            let (expected_type_code, expected_rest) = match family {
                IpFamily::V4 => ((3, 4), [0, 0, 0x05, 0x78]),
                IpFamily::V6 => ((2, 0), [0, 0, 0x05, 0x78]),
            };
            assert_eq!((icmp.icmp_type, icmp.code), expected_type_code);
            assert_eq!((icmp.rest, icmp.mtu), (expected_rest, Some(1400)));
        }
    }

    #[test]
    fn icmp_error_quoting_an_echo_exposes_its_id() {
        for family in IpFamily::ALL {
            let original = Packet::ip(family.doc_addr(0, 1), family.doc_addr(0, 2))
                .icmp_echo_request(0x5150, 1)
                .payload([0; 56])
                .build();
            let error = Packet::icmp_error_for(&original, IcmpError::TimeExceeded)
                .expect("the original parses")
                .build();
            let parsed = parse(&error);
            let quoted = parsed
                .icmp()
                .and_then(|icmp| icmp.quoted.as_ref())
                .expect("a quoted echo");
            assert_eq!((quoted.echo_id, quoted.ports), (Some(0x5150), None));
            assert!(parsed.checksums_valid());
        }
    }

    #[test]
    fn quoted_ipv4_header_checksum_is_checked() {
        let original = Packet::ipv4(v4(1), v4(2)).udp(1, 2).build();
        let mut error = Packet::icmp_error_for(&original, IcmpError::HostUnreachable)
            .expect("the original parses")
            .build();
        let quoted_l3 = ETH_HEADER_LEN + 20 + 8;
        // A NAT that rewrites the quoted source address but forgets its checksum; the outer
        // ICMP checksum is fixed up so only the inner one is wrong.
        error[quoted_l3 + 15] ^= 0x01;
        let icmp_checksum_at = ETH_HEADER_LEN + 20 + 2;
        error[icmp_checksum_at..icmp_checksum_at + 2].fill(0);
        let icmp_checksum = internet_checksum(&error[ETH_HEADER_LEN + 20..]);
        error[icmp_checksum_at..icmp_checksum_at + 2].copy_from_slice(&icmp_checksum.to_be_bytes());
        assert_eq!(
            parse(&error).verify_checksums(),
            Err(ChecksumError::QuotedIpv4Header)
        );
    }

    #[test]
    fn corrupted_lengths_are_parse_errors() {
        for family in IpFamily::ALL {
            let packet = || Packet::ip(family.doc_addr(0, 1), family.doc_addr(0, 2)).tcp(1, 2);
            let frame = packet().corrupt(Corruption::IpLength(1500)).build();
            assert!(
                matches!(
                    ParsedPacket::parse(&frame),
                    Err(ParseError::BadIpLength { field: 1500, .. })
                ),
                "{family:?}"
            );
            if family == IpFamily::V4 {
                // Only the length is wrong: the header checksum matches the bad length.
                assert_eq!(
                    internet_checksum(&frame[ETH_HEADER_LEN..ETH_HEADER_LEN + 20]),
                    0
                );
            }

            let frame = packet().corrupt(Corruption::TcpDataOffset(4)).build();
            assert_eq!(
                ParsedPacket::parse(&frame),
                Err(ParseError::BadTcpDataOffset(4))
            );

            let frame = packet().corrupt(Corruption::IpVersion(5)).build();
            let expected = match family {
                IpFamily::V4 => 4,
                IpFamily::V6 => 6,
            };
            assert_eq!(
                ParsedPacket::parse(&frame),
                Err(ParseError::WrongIpVersion { expected, found: 5 })
            );
        }
        let frame = Packet::ipv4(v4(1), v4(2))
            .udp(1, 2)
            .corrupt(Corruption::Ipv4Ihl(4))
            .build();
        assert_eq!(frame[ETH_HEADER_LEN], 0x44);
        assert_eq!(
            ParsedPacket::parse(&frame),
            Err(ParseError::BadIpv4HeaderLength(4))
        );
    }

    #[test]
    fn corrupted_checksums_and_udp_length() {
        for family in IpFamily::ALL {
            let packet = || Packet::ip(family.doc_addr(0, 1), family.doc_addr(0, 2));
            let frame = packet()
                .icmp_echo_request(1, 1)
                .corrupt(Corruption::L4Checksum(0x1234))
                .build();
            let parsed = parse(&frame);
            assert_eq!(parsed.icmp().map(|icmp| icmp.checksum), Some(0x1234));
            assert_eq!(
                parsed.verify_checksums(),
                Err(ChecksumError::L4 {
                    protocol: family.icmp_protocol()
                })
            );

            let frame = packet()
                .udp(1, 2)
                .payload(b"abc")
                .corrupt(Corruption::UdpLength(200))
                .build();
            let parsed = parse(&frame);
            assert_eq!(parsed.udp().map(|udp| udp.length), Some(200));
            assert!(
                parsed.checksums_valid(),
                "the checksum covers the bad length"
            );
        }
        let frame = Packet::ipv4(v4(1), v4(2))
            .udp(1, 2)
            .corrupt(Corruption::Ipv4Checksum(0))
            .build();
        assert_eq!(
            parse(&frame).verify_checksums(),
            Err(ChecksumError::Ipv4Header)
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for family in IpFamily::ALL {
            let frames = [
                Packet::ip(family.doc_addr(0, 1), family.doc_addr(0, 2))
                    .tcp(1, 2)
                    .tcp_options([2, 4, 5, 0xb4])
                    .payload(b"data")
                    .build(),
                Packet::ip(family.doc_addr(0, 1), family.doc_addr(0, 2))
                    .icmp_error(IcmpError::PortUnreachable, [0x45, 0])
                    .build(),
            ];
            for frame in frames {
                for len in 0..frame.len() {
                    assert!(
                        ParsedPacket::parse(&frame[..len]).is_err(),
                        "{family:?} {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn ipv4_options_set_the_header_length() {
        // Router alert (4 bytes) and a NOP, padded to 8 bytes: IHL 7.
        let frame = Packet::ipv4(v4(1), v4(2))
            .ipv4_options([0x94, 0x04, 0x00, 0x00, 0x01])
            .udp(1, 2)
            .build();
        assert_eq!(frame[ETH_HEADER_LEN], 0x47);
        assert_eq!(
            frame[ETH_HEADER_LEN + 20..ETH_HEADER_LEN + 28],
            [0x94, 4, 0, 0, 1, 0, 0, 0]
        );
        let parsed = parse(&frame);
        assert_eq!(parsed.l4_offset, ETH_HEADER_LEN + 28);
        assert_eq!(parsed.ports(), Some((1, 2)));
        assert!(parsed.checksums_valid());
    }

    #[test]
    fn tcp_flags_combine_and_print() {
        let flags = TcpFlags::SYN | TcpFlags::ACK;
        assert!(flags.contains(TcpFlags::SYN) && flags.contains(TcpFlags::ACK));
        assert!(!flags.contains(TcpFlags::SYN | TcpFlags::FIN));
        assert_eq!(format!("{flags:?}"), "SYN|ACK");
        assert_eq!(format!("{:?}", TcpFlags::NONE), "NONE");
        assert_eq!(flags.bits(), 0x12);
    }

    #[test]
    fn doc_addrs_are_documentation_ranges() {
        assert_eq!(IpFamily::V4.doc_addr(1, 7), IpAddr::from([198, 51, 100, 7]));
        assert_eq!(IpFamily::V4.doc_addr(2, 7), IpAddr::from([203, 0, 113, 7]));
        assert_eq!(
            IpFamily::V6.doc_addr(1, 7),
            IpAddr::from(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 7))
        );
    }

    #[test]
    #[should_panic(expected = "different families")]
    fn mixed_families_panic() {
        let _ = Packet::ip(v4(1).into(), v6(1).into());
    }

    #[test]
    #[should_panic(expected = "flow_label is for V6")]
    fn ipv6_only_method_on_ipv4_panics() {
        let _ = Packet::ipv4(v4(1), v4(2)).flow_label(1);
    }

    #[test]
    #[should_panic(expected = "needs TCP")]
    fn tcp_only_method_on_udp_panics() {
        let _ = Packet::ipv4(v4(1), v4(2)).udp(1, 2).seq(1);
    }

    #[test]
    fn non_ip_ethertype_is_an_error() {
        let mut frame = Packet::ipv4(v4(1), v4(2)).build();
        frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(
            ParsedPacket::parse(&frame),
            Err(ParseError::UnsupportedEthertype(0x0806))
        );
    }
}
