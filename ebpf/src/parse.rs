//! Header parsing shared by every TC program: Ethernet, then IPv4 or IPv6 (with a bounded
//! walk over extension headers) down to the L4 protocol and where its header starts.
//!
//! Reads use direct packet access with a bounds check per header, so the verifier can prove
//! every read; work is bounded by `MAX_IPV6_EXT_HEADERS`.

use aya_ebpf::programs::TcContext;
use fedwall_common::net::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, ip_proto, v4_mapped};

pub const ETH_HLEN: usize = 14;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;

/// More extension headers than this and the packet is treated as malformed: no legitimate
/// packet needs that many, and the bound keeps per-packet work constant.
const MAX_IPV6_EXT_HEADERS: usize = 8;

/// Bytes of headers the parser may read; pulled into the linear area when they are not.
pub const MAX_PARSED_HEADERS: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Where the L3 and L4 headers of an IP packet are, and the L3 facts.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IpHeaders {
    pub family: Family,
    /// The final protocol (after IPv6 extension headers).
    pub protocol: u8,
    /// Offset of the L4 header from the start of the packet; `None` for a fragment other
    /// than the first, which carries no L4 header.
    pub l4_offset: Option<usize>,
    /// Source and destination, 16 bytes (IPv4-mapped for IPv4).
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
    /// The datagram's identification when this packet is a fragment (first or later);
    /// `None` for a whole datagram.
    pub fragment_id: Option<u32>,
}

// The addresses are written with 8-byte stores (see `write_v4_mapped`).
const _: () = assert!(core::mem::align_of::<IpHeaders>() >= 8);
const _: () = assert!(core::mem::offset_of!(IpHeaders, src) % 8 == 0);
const _: () = assert!(core::mem::offset_of!(IpHeaders, dst) % 8 == 0);

/// Writes `::ffff:a.b.c.d` into an address field of [`IpHeaders`] with two 8-byte stores:
/// built byte by byte, the BPF backend emits a call to a byte-wise memset for the zeroes.
#[inline(always)]
fn write_v4_mapped(out: &mut [u8; 16], v4: [u8; 4]) {
    let words = out.as_mut_ptr().cast::<u64>();
    let low = u64::from_ne_bytes(v4_mapped(v4)[8..].try_into().unwrap_or([0; 8]));
    // SAFETY: `out` is an 8-byte aligned field of IpHeaders (asserted above), 16 bytes long.
    unsafe {
        words.write(0);
        words.add(1).write(low);
    }
}

impl IpHeaders {
    pub const EMPTY: IpHeaders = IpHeaders {
        family: Family::V4,
        protocol: 0,
        l4_offset: None,
        src: [0; 16],
        dst: [0; 16],
        hop_limit: 0,
        fragment_id: None,
    };
}

/// The outcome of parsing a frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not an IP packet (ARP and friends).
    NonIp,
    /// An IP packet; its headers were written to the caller's [`IpHeaders`].
    Ip,
}

/// Why a frame that claims to be IP could not be parsed.
#[derive(Clone, Copy)]
pub enum ParseError {
    /// A header runs past the end of the packet.
    Truncated,
    /// A header field is inconsistent (IPv4 IHL < 5, wrong version, too many IPv6 extension headers).
    Invalid,
}

/// Makes sure the headers are in the linear part of the skb. Only pulls when they are not:
/// pulling a cloned skb copies it.
#[inline(always)]
pub fn ensure_linear_headers(ctx: &TcContext) {
    let linear = ctx.data_end().saturating_sub(ctx.data());
    let wanted = core::cmp::min(ctx.len(), MAX_PARSED_HEADERS) as usize;
    if linear < wanted {
        // A failed pull leaves the skb as it was; the bounds checks below then see a
        // truncated packet, which is the safe outcome.
        let _ = ctx.pull_data(wanted as u32);
    }
}

/// Returns a pointer to `N` bytes at `offset`, or `Truncated` if they are not all there.
#[inline(always)]
fn bytes_at<const N: usize>(ctx: &TcContext, offset: usize) -> Result<*const [u8; N], ParseError> {
    let start = ctx.data();
    let end = ctx.data_end();
    // Offsets may come back from a map (unknown to the verifier): bound them first.
    if offset > MAX_PARSED_HEADERS as usize || start + offset + N > end {
        return Err(ParseError::Truncated);
    }
    Ok((start + offset) as *const [u8; N])
}

/// Reads `N` bytes at `offset` (a copy, so later packet writes cannot alias it).
#[inline(always)]
pub fn read<const N: usize>(ctx: &TcContext, offset: usize) -> Result<[u8; N], ParseError> {
    let ptr = bytes_at::<N>(ctx, offset)?;
    // SAFETY: bytes_at checked that offset..offset+N lies inside the packet; [u8; N] has
    // alignment 1.
    Ok(unsafe { *ptr })
}

/// Parses the frame's headers into `headers` (written in place: the caller may keep it
/// outside the small BPF stack). `headers` is only meaningful when the result is `Ip`.
#[inline(always)]
pub fn parse(ctx: &TcContext, headers: &mut IpHeaders) -> Result<Parsed, ParseError> {
    let eth = bytes_at::<ETH_HLEN>(ctx, 0)?;
    // SAFETY (every deref below): bytes_at checked that the bytes lie inside the packet.
    let ethertype = unsafe { u16::from_be_bytes([(*eth)[12], (*eth)[13]]) };
    match ethertype {
        ETHERTYPE_IPV4 => parse_ipv4(ctx, ETH_HLEN, headers)?,
        ETHERTYPE_IPV6 => parse_ipv6(ctx, ETH_HLEN, headers)?,
        _ => return Ok(Parsed::NonIp),
    }
    Ok(Parsed::Ip)
}

#[inline(always)]
fn parse_ipv4(ctx: &TcContext, offset: usize, headers: &mut IpHeaders) -> Result<(), ParseError> {
    let ip = bytes_at::<IPV4_MIN_HLEN>(ctx, offset)?;
    // SAFETY: as in `parse`.
    let ip = unsafe { &*ip };
    let header_len = ((ip[0] & 0x0f) as usize) * 4;
    if ip[0] >> 4 != 4 || header_len < IPV4_MIN_HLEN {
        return Err(ParseError::Invalid);
    }
    let flags_and_offset = u16::from_be_bytes([ip[6], ip[7]]);
    let fragment_offset = flags_and_offset & 0x1fff;
    let more_fragments = flags_and_offset & 0x2000 != 0;
    headers.family = Family::V4;
    headers.protocol = ip[9];
    headers.l4_offset = (fragment_offset == 0).then_some(offset + header_len);
    write_v4_mapped(&mut headers.src, [ip[12], ip[13], ip[14], ip[15]]);
    write_v4_mapped(&mut headers.dst, [ip[16], ip[17], ip[18], ip[19]]);
    headers.hop_limit = ip[8];
    headers.fragment_id = (fragment_offset != 0 || more_fragments)
        .then_some(u32::from(u16::from_be_bytes([ip[4], ip[5]])));
    Ok(())
}

#[inline(always)]
#[expect(
    clippy::manual_memcpy,
    reason = "a slice copy becomes a memcpy call, which the verifier walks byte by byte"
)]
fn parse_ipv6(ctx: &TcContext, offset: usize, headers: &mut IpHeaders) -> Result<(), ParseError> {
    let ip = bytes_at::<IPV6_HLEN>(ctx, offset)?;
    // SAFETY: as in `parse`.
    let ip = unsafe { &*ip };
    if ip[0] >> 4 != 6 {
        return Err(ParseError::Invalid);
    }
    headers.family = Family::V6;
    headers.l4_offset = None;
    headers.hop_limit = ip[7];
    headers.fragment_id = None;
    for i in 0..16 {
        headers.src[i] = ip[8 + i];
        headers.dst[i] = ip[24 + i];
    }
    let mut next_header = ip[6];
    let mut cursor = offset + IPV6_HLEN;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        let ext = match next_header {
            ip_proto::HOP_BY_HOP
            | ip_proto::ROUTING
            | ip_proto::DEST_OPTS
            | ip_proto::FRAGMENT
            | ip_proto::AUTH => bytes_at::<8>(ctx, cursor)?,
            _ => {
                headers.protocol = next_header;
                headers.l4_offset = Some(cursor);
                return Ok(());
            }
        };
        // SAFETY: as in `parse`.
        let ext = unsafe { &*ext };
        let ext_len = match next_header {
            ip_proto::FRAGMENT => {
                let offset_and_flags = u16::from_be_bytes([ext[2], ext[3]]);
                let fragment_offset = offset_and_flags >> 3;
                let more_fragments = offset_and_flags & 1 != 0;
                if fragment_offset != 0 || more_fragments {
                    headers.fragment_id =
                        Some(u32::from_be_bytes([ext[4], ext[5], ext[6], ext[7]]));
                }
                if fragment_offset != 0 {
                    headers.protocol = ext[0];
                    return Ok(());
                }
                8
            }
            ip_proto::AUTH => (ext[1] as usize + 2) * 4,
            _ => (ext[1] as usize + 1) * 8,
        };
        next_header = ext[0];
        cursor += ext_len;
    }
    Err(ParseError::Invalid)
}

/// The minimum L4 header this parser insists on before calling a packet that protocol.
#[inline(always)]
pub const fn l4_min_len(protocol: u8) -> usize {
    match protocol {
        ip_proto::TCP => 20,
        ip_proto::UDP | ip_proto::ICMP | ip_proto::ICMPV6 => 8,
        // Source and destination port, then the verification tag.
        ip_proto::SCTP => 8,
        _ => 0,
    }
}

/// Checks that the L4 header of `headers` is fully inside the packet.
#[inline(always)]
pub fn l4_header_present(ctx: &TcContext, headers: &IpHeaders) -> Result<(), ParseError> {
    if let Some(l4) = headers.l4_offset {
        let needed = l4_min_len(headers.protocol);
        if l4 > MAX_PARSED_HEADERS as usize || ctx.data() + l4 + needed > ctx.data_end() {
            return Err(ParseError::Truncated);
        }
    }
    Ok(())
}
