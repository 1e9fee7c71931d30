//! The little of rtnetlink fedwall needs, on raw sockets: which interface the route to an
//! address leaves by (how a pod's host-side interface is found), and a subscription that
//! wakes up when links or routes change (how pods' interfaces coming and going are noticed).
//! Both act in the calling thread's network namespace.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::Duration;

const NLMSG_HDRLEN: usize = 16;
const RTMSG_LEN: usize = 12;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u8 = 254;
const RT_SCOPE_UNIVERSE: u8 = 0;
const NLM_F_REQUEST: u16 = 1;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_VIA: u16 = 18;
const RTN_UNICAST: u8 = 1;
/// Multicast groups: links, addresses and routes of both families.
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;

/// Where the route to an address leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The interface it leaves by.
    pub ifindex: u32,
    /// Through a gateway (not directly to the address on that interface).
    pub via_gateway: bool,
    /// A unicast route (not local, blackhole, unreachable, …).
    pub unicast: bool,
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr(groups: u32) -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain data; all-zero is valid (pid 0 = the kernel).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = groups;
    addr
}

fn set_recv_timeout(fd: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    // SAFETY: tv outlives the call; the size matches.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn recv(fd: &OwnedFd, buf: &mut [u8], flags: i32) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {what}"))
}

/// Sends one request and collects the replies' (type, payload) until the answer is
/// complete: one message, or for a dump everything up to `NLMSG_DONE`. An error reply
/// becomes the OS error it carries.
fn exchange(kind: u16, flags: u16, body: &[u8]) -> io::Result<Vec<(u16, Vec<u8>)>> {
    let len = NLMSG_HDRLEN + body.len();
    let mut request = Vec::with_capacity(len);
    request.extend_from_slice(&(len as u32).to_ne_bytes());
    request.extend_from_slice(&kind.to_ne_bytes());
    request.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    request.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel assigns
    request.extend_from_slice(body);

    let fd = socket()?;
    set_recv_timeout(&fd, Duration::from_secs(2))?;
    let kernel = sockaddr(0);
    // SAFETY: request and kernel are valid for the given lengths.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
            (&raw const kernel).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    let mut replies = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = recv(&fd, &mut buf, 0)?;
        let mut at = 0;
        while at + NLMSG_HDRLEN <= n {
            let len = u32_at(&buf, at).ok_or_else(|| malformed("short header"))? as usize;
            let kind = u16_at(&buf, at + 4).ok_or_else(|| malformed("short header"))?;
            if len < NLMSG_HDRLEN || at + len > n {
                return Err(malformed("truncated message"));
            }
            let payload = &buf[at + NLMSG_HDRLEN..at + len];
            match kind {
                NLMSG_DONE => return Ok(replies),
                NLMSG_ERROR => {
                    let errno = u32_at(payload, 0).ok_or_else(|| malformed("short error"))?;
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(-(errno as i32)));
                    }
                }
                _ => replies.push((kind, payload.to_vec())),
            }
            at += len.next_multiple_of(4);
        }
        if !dump && !replies.is_empty() {
            return Ok(replies);
        }
    }
}

/// The attributes `(type, value)` of a message body after its fixed header of `skip` bytes.
fn attributes(body: &[u8], skip: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = skip;
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(body, at)?);
        let kind = u16_at(body, at + 2)?;
        let value = body.get(at + 4..at + len.max(4))?;
        if len < 4 {
            return None;
        }
        at += len.next_multiple_of(4);
        Some((kind & 0x3fff, value))
    })
}

fn route_of(body: &[u8]) -> io::Result<(Route, u8, u8)> {
    let rtmsg = body
        .get(..RTMSG_LEN)
        .ok_or_else(|| malformed("short route"))?;
    let (dst_len, mut table) = (rtmsg[1], rtmsg[4]);
    let mut route = Route {
        ifindex: 0,
        via_gateway: false,
        unicast: rtmsg[7] == RTN_UNICAST,
    };
    for (kind, value) in attributes(body, RTMSG_LEN) {
        match kind {
            RTA_OIF => route.ifindex = u32_at(value, 0).unwrap_or(0),
            RTA_GATEWAY | RTA_VIA => route.via_gateway = true,
            RTA_TABLE => table = u32_at(value, 0).map_or(table, |t| t as u8),
            _ => {}
        }
    }
    Ok((route, dst_len, table))
}

/// The route the kernel would use to reach `addr` (`ip route get`).
pub fn route_get(addr: IpAddr) -> io::Result<Route> {
    let (family, bytes): (u8, Vec<u8>) = match addr {
        IpAddr::V4(v4) => (libc::AF_INET as u8, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6 as u8, v6.octets().to_vec()),
    };
    // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags; then RTA_DST.
    let mut body = vec![
        family,
        (bytes.len() * 8) as u8,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    body.extend_from_slice(&((4 + bytes.len()) as u16).to_ne_bytes());
    body.extend_from_slice(&RTA_DST.to_ne_bytes());
    body.extend_from_slice(&bytes);
    let replies = exchange(RTM_GETROUTE, 0, &body)?;
    let (_, body) = replies
        .iter()
        .find(|(kind, _)| *kind == RTM_NEWROUTE)
        .ok_or_else(|| malformed("no route in the reply"))?;
    let (route, _, _) = route_of(body)?;
    if route.ifindex == 0 {
        return Err(malformed("the route names no interface"));
    }
    Ok(route)
}

/// The interfaces of the main table's default routes of a family (`ip route show
/// default`): `AF_INET` or `AF_INET6`.
pub fn default_route_interfaces(family: i32) -> io::Result<Vec<u32>> {
    let body = [family as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut found = Vec::new();
    for (kind, body) in exchange(RTM_GETROUTE, NLM_F_DUMP, &body)? {
        if kind != RTM_NEWROUTE {
            continue;
        }
        let (route, dst_len, table) = route_of(&body)?;
        if dst_len == 0 && table == RT_TABLE_MAIN && route.unicast && route.ifindex != 0 {
            found.push(route.ifindex);
        }
    }
    Ok(found)
}

/// An address of an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    pub ifindex: u32,
    pub addr: IpAddr,
    /// Global scope (not link- or host-local).
    pub global: bool,
}

/// Every interface address, in the kernel's order (`ip addr show`).
pub fn addresses() -> io::Result<Vec<Address>> {
    // ifaddrmsg: family, prefixlen, flags, scope, index.
    let body = [0u8; 8];
    let mut found = Vec::new();
    for (kind, body) in exchange(RTM_GETADDR, NLM_F_DUMP, &body)? {
        if kind != RTM_NEWADDR || body.len() < 8 {
            continue;
        }
        let (family, scope) = (body[0], body[3]);
        let ifindex = u32_at(&body, 4).unwrap_or(0);
        let (mut local, mut address) = (None, None);
        for (kind, value) in attributes(&body, 8) {
            let addr = match (i32::from(family), value.len()) {
                (libc::AF_INET, 4) => <[u8; 4]>::try_from(value).ok().map(IpAddr::from),
                (libc::AF_INET6, 16) => <[u8; 16]>::try_from(value).ok().map(IpAddr::from),
                _ => None,
            };
            match kind {
                IFA_LOCAL => local = addr,
                IFA_ADDRESS => address = addr,
                _ => {}
            }
        }
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS the peer's on
        // point-to-point links.
        if let Some(addr) = local.or(address) {
            found.push(Address {
                ifindex,
                addr,
                global: scope == RT_SCOPE_UNIVERSE,
            });
        }
    }
    Ok(found)
}

/// A subscription to link and route changes of the calling thread's namespace.
pub struct Changes {
    fd: OwnedFd,
}

impl Changes {
    pub fn subscribe() -> io::Result<Changes> {
        let fd = socket()?;
        // Addresses too: an uplink renumbered within its subnet changes no route.
        let addr = sockaddr(
            RTMGRP_LINK
                | RTMGRP_IPV4_IFADDR
                | RTMGRP_IPV4_ROUTE
                | RTMGRP_IPV6_IFADDR
                | RTMGRP_IPV6_ROUTE,
        );
        // SAFETY: addr is valid for its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Changes { fd })
    }

    /// Blocks until something changed, then takes every notification already queued, so a
    /// burst (a pod's veth, its addresses and routes) wakes the caller about once.
    pub fn wait(&self) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        // The kernel dropped notifications (ENOBUFS): something changed, we just don't know
        // what — as good a wake-up as any.
        let dropped = |e: &io::Error| e.raw_os_error() == Some(libc::ENOBUFS);
        match recv(&self.fd, &mut buf, 0) {
            Err(e) if !dropped(&e) => return Err(e),
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(20));
        loop {
            match recv(&self.fd, &mut buf, libc::MSG_DONTWAIT) {
                Ok(n) if n > 0 => {}
                Err(e) if dropped(&e) => {}
                _ => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_to_loopback_is_local_not_unicast() {
        let loopback = std::net::Ipv4Addr::LOCALHOST.into();
        let route = route_get(loopback).expect("the kernel answers a route lookup");
        assert!(!route.unicast, "{route:?}");
        assert_eq!(route.ifindex, 1, "loopback is interface 1");
    }

    #[test]
    fn loopback_has_its_address() {
        let addrs = addresses().expect("an address dump");
        assert!(
            addrs.iter().any(|a| a.ifindex == 1
                && a.addr == IpAddr::from(std::net::Ipv4Addr::LOCALHOST)
                && !a.global),
            "{addrs:?}"
        );
    }
}
