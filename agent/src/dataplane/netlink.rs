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
const NLM_F_REQUEST: u16 = 1;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_VIA: u16 = 18;
const RTN_UNICAST: u8 = 1;
/// Multicast groups: links, IPv4 routes, IPv6 routes.
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
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

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The route the kernel would use to reach `addr` (`ip route get`).
pub fn route_get(addr: IpAddr) -> io::Result<Route> {
    let (family, bytes): (u8, Vec<u8>) = match addr {
        IpAddr::V4(v4) => (libc::AF_INET as u8, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6 as u8, v6.octets().to_vec()),
    };
    let attr_len = 4 + bytes.len();
    let len = NLMSG_HDRLEN + RTMSG_LEN + attr_len;
    let mut request = Vec::with_capacity(len);
    request.extend_from_slice(&(len as u32).to_ne_bytes());
    request.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
    request.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    request.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel assigns
    // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    request.extend_from_slice(&[family, (bytes.len() * 8) as u8, 0, 0, 0, 0, 0, 0]);
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    request.extend_from_slice(&RTA_DST.to_ne_bytes());
    request.extend_from_slice(&bytes);

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
    let mut buf = vec![0u8; 16 * 1024];
    let n = recv(&fd, &mut buf)?;
    parse_route_reply(&buf[..n])
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

fn parse_route_reply(buf: &[u8]) -> io::Result<Route> {
    let len = u32_at(buf, 0).ok_or_else(|| malformed("short reply"))? as usize;
    let kind = u16_at(buf, 4).ok_or_else(|| malformed("short reply"))?;
    let message = buf.get(..len).ok_or_else(|| malformed("truncated reply"))?;
    match kind {
        NLMSG_ERROR => {
            let errno = u32_at(message, NLMSG_HDRLEN).ok_or_else(|| malformed("short error"))?;
            Err(io::Error::from_raw_os_error(-(errno as i32)))
        }
        RTM_NEWROUTE => {
            let rtmsg = message
                .get(NLMSG_HDRLEN..NLMSG_HDRLEN + RTMSG_LEN)
                .ok_or_else(|| malformed("short route"))?;
            let mut route = Route {
                ifindex: 0,
                via_gateway: false,
                unicast: rtmsg[7] == RTN_UNICAST,
            };
            let mut at = NLMSG_HDRLEN + RTMSG_LEN;
            while let (Some(attr_len), Some(attr_type)) =
                (u16_at(message, at), u16_at(message, at + 2))
            {
                let attr_len = usize::from(attr_len);
                if attr_len < 4 {
                    break;
                }
                match attr_type & 0x3fff {
                    RTA_OIF => route.ifindex = u32_at(message, at + 4).unwrap_or(0),
                    RTA_GATEWAY | RTA_VIA => route.via_gateway = true,
                    _ => {}
                }
                at += attr_len.next_multiple_of(4);
            }
            if route.ifindex == 0 {
                return Err(malformed("the route names no interface"));
            }
            Ok(route)
        }
        other => Err(malformed(&format!("unexpected reply type {other}"))),
    }
}

/// A subscription to link and route changes of the calling thread's namespace.
pub struct Changes {
    fd: OwnedFd,
}

impl Changes {
    pub fn subscribe() -> io::Result<Changes> {
        let fd = socket()?;
        let addr = sockaddr(RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE);
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
        set_recv_timeout(&self.fd, Duration::ZERO)?; // zero: block
        match recv(&self.fd, &mut buf) {
            Ok(_) => {}
            // The kernel dropped notifications: something changed, we just don't know what.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
            Err(e) => return Err(e),
        }
        std::thread::sleep(Duration::from_millis(20));
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                let error = io::Error::last_os_error();
                if n < 0 && error.raw_os_error() == Some(libc::ENOBUFS) {
                    continue;
                }
                return Ok(());
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
    fn an_error_reply_becomes_the_os_error() {
        let mut reply = vec![0u8; 36];
        reply[..4].copy_from_slice(&36u32.to_ne_bytes());
        reply[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        reply[16..20].copy_from_slice(&(-libc::ENETUNREACH).to_ne_bytes());
        let error = parse_route_reply(&reply).expect_err("an error reply");
        assert_eq!(error.raw_os_error(), Some(libc::ENETUNREACH));
    }
}
