//! An API server's loopback port, reachable from inside a test network namespace: the agent
//! runs in the node's namespace, whose loopback is its own, while the API servers listen on
//! the host's. A listener bound inside the namespace at the same port (so the server's
//! certificate, issued for 127.0.0.1, still matches) relays each connection to the host's
//! loopback. Cutting it makes the cluster unreachable to the agent while it keeps running.

use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::netns::NetNs;

/// A running relay; dropping it closes the listener and every relayed connection.
pub struct Forward {
    port: u16,
    state: Arc<Relay>,
}

#[derive(Default)]
struct Relay {
    cut: AtomicBool,
    closing: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
}

impl Relay {
    fn close_open(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for stream in open.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Forward {
    /// Relays `127.0.0.1:port` inside `ns` to `127.0.0.1:port` of the test's namespace.
    pub fn into_netns(ns: &NetNs, port: u16) -> Forward {
        let address = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        // A socket stays in the namespace it was made in; the thread that accepts need not.
        let listener = ns
            .enter(|| TcpListener::bind(address))
            .unwrap_or_else(|e| panic!("bind {address} in {}: {e}", ns.name()));
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let state = Arc::new(Relay::default());
        let relay = state.clone();
        thread::spawn(move || {
            while !relay.closing.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inner, _)) => {
                        if relay.cut.load(Ordering::Relaxed) {
                            drop(inner);
                            continue;
                        }
                        let _ = inner.set_nonblocking(false);
                        if let Ok(outer) = TcpStream::connect(address) {
                            relay_pair(&relay, inner, outer);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => return,
                }
            }
        });
        Forward { port, state }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Makes the cluster unreachable through the relay: open connections are closed and
    /// new ones closed at once.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::Relaxed);
        self.state.close_open();
    }

    /// Relays again after [`Forward::cut`].
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::Relaxed);
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.state.closing.store(true, Ordering::Relaxed);
        self.state.close_open();
    }
}

/// Copies both ways between the two streams on two threads, remembering them so a cut
/// can close them.
fn relay_pair(relay: &Relay, inner: TcpStream, outer: TcpStream) {
    let clones = (inner.try_clone(), outer.try_clone());
    let (Ok(inner_back), Ok(outer_back)) = clones else {
        return;
    };
    {
        let mut open = relay.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|stream| stream.peer_addr().is_ok());
        if let (Ok(a), Ok(b)) = (inner.try_clone(), outer.try_clone()) {
            open.push(a);
            open.push(b);
        }
    }
    thread::spawn(move || copy(inner, outer));
    thread::spawn(move || copy(outer_back, inner_back));
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
