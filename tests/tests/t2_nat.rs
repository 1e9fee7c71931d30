//! T2: NAT-outgoing on a real uplink. Pods (namespaces) route through a node namespace whose
//! uplink veth leads to an external host. The external host sees the node's address for
//! traffic to an address outside every pool, and the pod's own address for traffic to a
//! disabled pool (another cluster's range); TCP, UDP and ping work, IPv4 and IPv6; 1,000
//! concurrent connections from three pods to one port all work; and a connection outlives
//! a kill -9 and restart of the process holding the dataplane (pinned maps and links).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use std::process::{Child, Command, Stdio};

use fedwall::dataplane::KernelDataplane;
use fedwall_common::nat::NatReason;
use fedwall_tests::{
    bpffs::Bpffs,
    nat::start_nat,
    netns::{End, NetNs, veth},
    require_root,
};

const UPLINK: &str = "up0";
const NODE_V4: &str = "192.0.2.1";
const NODE_V6: &str = "2001:db8:1::1";
/// The external host: outside every pool.
const EXT_V4: &str = "192.0.2.2";
const EXT_V6: &str = "2001:db8:1::2";
/// Also the external host, inside a disabled pool (a remote cluster's pod range).
const REMOTE_V4: &str = "10.99.0.2";
const REMOTE_V6: &str = "2001:db8:99::2";
const TCP_PORT: u16 = 7000;
const UDP_PORT: u16 = 7001;
const PODS: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(5);

struct Topology {
    pods: Vec<NetNs>,
    node: NetNs,
    ext: NetNs,
}

fn pod_v4(n: usize) -> String {
    format!("10.244.{}.2", n + 1)
}

fn pod_v6(n: usize) -> String {
    format!("2001:db8:244:{}::2", n + 1)
}

fn topology() -> Topology {
    let node = NetNs::new();
    let ext = NetNs::new();
    let mut pods = Vec::new();
    for n in 0..PODS {
        let pod = NetNs::new();
        let (gw4, gw6) = (
            format!("10.244.{}.1/24", n + 1),
            format!("2001:db8:244:{}::1/64", n + 1),
        );
        let (addr4, addr6) = (format!("{}/24", pod_v4(n)), format!("{}/64", pod_v6(n)));
        let host_side = format!("vpod{n}");
        veth(
            End {
                ns: &node,
                ifname: &host_side,
                addrs: &[&gw4, &gw6],
            },
            End {
                ns: &pod,
                ifname: "eth0",
                addrs: &[&addr4, &addr6],
            },
        );
        pod.run(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &gw4[..gw4.len() - 3],
        ]);
        pod.run(&[
            "ip",
            "-6",
            "route",
            "add",
            "default",
            "via",
            &gw6[..gw6.len() - 3],
        ]);
        pods.push(pod);
    }
    veth(
        End {
            ns: &node,
            ifname: UPLINK,
            addrs: &["192.0.2.1/24", "2001:db8:1::1/64"],
        },
        End {
            ns: &ext,
            ifname: "eth0",
            addrs: &["192.0.2.2/24", "2001:db8:1::2/64"],
        },
    );
    ext.run(&["ip", "addr", "add", "10.99.0.2/32", "dev", "lo"]);
    ext.run(&["ip", "addr", "add", "2001:db8:99::2/128", "dev", "lo"]);
    // The external host reaches pods directly (as a remote cluster would).
    ext.run(&["ip", "route", "add", "10.244.0.0/16", "via", NODE_V4]);
    ext.run(&[
        "ip",
        "-6",
        "route",
        "add",
        "2001:db8:244::/48",
        "via",
        NODE_V6,
    ]);
    node.run(&["ip", "route", "add", "10.99.0.0/16", "via", EXT_V4]);
    node.run(&[
        "ip",
        "-6",
        "route",
        "add",
        "2001:db8:99::/48",
        "via",
        EXT_V6,
    ]);
    node.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    node.run(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    Topology { pods, node, ext }
}

/// Opens the dataplane in the node namespace (adopting what is pinned), replays the pools
/// and the uplink, and completes the sync: what an agent does at start-up.
fn start(node: &NetNs, bpffs: &Bpffs) -> KernelDataplane {
    node.enter(|| start_nat(&bpffs.pin_root(), UPLINK).expect("start the NAT dataplane"))
}

/// Starts `fedwall-nat-hold` (standing in for the agent) in the node namespace and waits
/// for it to say `ready`.
fn hold(node: &NetNs, bpffs: &Bpffs) -> Child {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            node.name(),
            env!("CARGO_BIN_EXE_fedwall-nat-hold"),
        ])
        .arg(bpffs.pin_root())
        .arg(UPLINK)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start fedwall-nat-hold");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read fedwall-nat-hold");
    assert_eq!(line.trim(), "ready", "fedwall-nat-hold did not start");
    child
}

/// Servers on the external host: TCP (answers each connection with the peer address it
/// sees, then echoes) and UDP (answers each datagram with the peer address).
fn serve(ext: &NetNs, addr: &str) {
    let (tcp, udp) = ext.enter(|| {
        let tcp = TcpListener::bind((addr, TCP_PORT)).expect("tcp listen");
        let udp = UdpSocket::bind((addr, UDP_PORT)).expect("udp bind");
        (tcp, udp)
    });
    std::thread::spawn(move || {
        for stream in tcp.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let peer = stream.peer_addr().map(|p| p.ip().to_string());
                let _ = writeln!(stream, "{}", peer.unwrap_or_default());
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    let _ = stream.write_all(&buf[..n]);
                }
            });
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, peer)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(peer.ip().to_string().as_bytes(), peer);
        }
    });
}

fn connect(pod: &NetNs, addr: &str) -> (TcpStream, String) {
    let target: SocketAddr = SocketAddr::new(addr.parse().expect("address"), TCP_PORT);
    let stream = pod
        .enter(|| TcpStream::connect_timeout(&target, TIMEOUT))
        .unwrap_or_else(|e| panic!("connect from {} to {target}: {e}", pod.name()));
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("greeting from {target}: {e}"));
    (stream, line.trim().to_owned())
}

fn echo(stream: &mut TcpStream, what: &[u8]) {
    stream.write_all(what).expect("send");
    let mut back = vec![0u8; what.len()];
    stream.read_exact(&mut back).expect("echo");
    assert_eq!(back, what, "echoed bytes");
}

fn udp_seen_as(pod: &NetNs, addr: &str) -> String {
    let target = SocketAddr::new(addr.parse().expect("address"), UDP_PORT);
    let unspecified = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = pod.enter(|| UdpSocket::bind(unspecified).expect("udp socket"));
    socket.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    socket.send_to(b"who", target).expect("send");
    let mut buf = [0u8; 64];
    let (n, from) = socket.recv_from(&mut buf).expect("udp answer");
    assert_eq!(from, target, "the answer comes from the server's address");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn pings(from: &NetNs, to: &str) {
    from.run(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "-q", to]);
}

#[test]
fn pods_leave_with_the_node_address_except_towards_pools() {
    require_root!();
    let bpffs = Bpffs::mount();
    let t = topology();
    let dataplane = start(&t.node, &bpffs);
    for addr in [EXT_V4, EXT_V6, REMOTE_V4, REMOTE_V6] {
        serve(&t.ext, addr);
    }
    let pod = &t.pods[0];
    let cases = [
        (EXT_V4, NODE_V4.to_owned()),
        (EXT_V6, NODE_V6.to_owned()),
        (REMOTE_V4, pod_v4(0)),
        (REMOTE_V6, pod_v6(0)),
    ];
    for (server, expected) in &cases {
        let (mut stream, seen) = connect(pod, server);
        assert_eq!(
            &seen, expected,
            "TCP to {server}: the address the server sees"
        );
        echo(&mut stream, b"hello");
        assert_eq!(&udp_seen_as(pod, server), expected, "UDP to {server}");
        pings(pod, server);
    }
    // The other way: the external host (as a remote cluster) reaches the pod directly.
    pings(&t.ext, &pod_v4(0));
    pings(&t.ext, &pod_v6(0));
    let counts = dataplane.nat_counts().expect("NAT counters");
    assert!(counts.get(NatReason::NewMapping).packets >= 6, "{counts:?}");
    assert!(counts.get(NatReason::Reversed).packets >= 6, "{counts:?}");
    assert_eq!(counts.get(NatReason::DropPortsExhausted).packets, 0);
}

#[test]
fn a_thousand_concurrent_connections_from_three_pods_to_one_port() {
    require_root!();
    let bpffs = Bpffs::mount();
    let t = topology();
    let _dataplane = start(&t.node, &bpffs);
    serve(&t.ext, EXT_V4);
    let mut open = Vec::new();
    for n in 0..1000 {
        let pod = &t.pods[n % PODS];
        let (stream, seen) = connect(pod, EXT_V4);
        assert_eq!(seen, NODE_V4, "connection {n}");
        open.push(stream);
    }
    // All still open at once: each has its own mapping.
    for (n, stream) in open.iter_mut().enumerate() {
        echo(stream, format!("{n:04}").as_bytes());
    }
}

#[test]
fn a_connection_survives_a_restart_of_the_dataplane_holder() {
    require_root!();
    let bpffs = Bpffs::mount();
    let t = topology();
    let mut first = hold(&t.node, &bpffs);
    serve(&t.ext, EXT_V4);
    serve(&t.ext, EXT_V6);
    let pod = &t.pods[1];
    let (mut v4, seen4) = connect(pod, EXT_V4);
    let (mut v6, seen6) = connect(pod, EXT_V6);
    assert_eq!((seen4.as_str(), seen6.as_str()), (NODE_V4, NODE_V6));
    echo(&mut v4, b"before");
    // The holder is killed; its links and maps stay pinned.
    first.kill().expect("SIGKILL the holder");
    let _ = first.wait();
    echo(&mut v4, b"while down");
    echo(&mut v6, b"while down");
    let mut second = hold(&t.node, &bpffs);
    echo(&mut v4, b"after");
    echo(&mut v6, b"after");
    // A new connection after the restart is translated too.
    let (_, seen) = connect(pod, EXT_V4);
    assert_eq!(seen, NODE_V4);
    let _ = second.kill();
    let _ = second.wait();
}
