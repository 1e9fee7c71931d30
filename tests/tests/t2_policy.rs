//! T2: the policy programs on a real veth between a "node" namespace and a "pod" namespace,
//! held by a separate process (`fedwall-hold`, standing in for the agent) or by the test
//! itself. Real pings, TCP and UDP, over IPv4 and IPv6, are allowed and denied as the
//! pod's policy says, replies pass, a rule change decides new flows while an open
//! connection goes on, and after a kill -9 of the holder both enforcement and an open TCP
//! connection survive while a new holder adopts the pins.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use std::collections::BTreeMap;

use fedwall::dataplane::{
    Dataplane as _, Delta, EndpointName, KernelDataplane, PortRange, RuleAction, RuleTable,
    StaticInterfaces, Verdict,
};
use fedwall_common::net::ip_proto;
use fedwall_tests::{
    bpffs::Bpffs,
    netns::{NetNs, PodOnNode, pod_on_node},
    policy::{endpoint, rule},
    require_root,
};

const POD_V4: &str = "192.0.2.2";
const POD_V6: &str = "2001:db8::2";
const NODE_V4: &str = "192.0.2.1";
const ALLOWED_PORT: &str = "5000";
const DENIED_PORT: &str = "5001";
const UDP_PORT: &str = "6000";

/// Starts `fedwall-hold` in the node namespace and waits for it to say `ready`.
fn hold(node: &NetNs, bpffs: &Bpffs, ifindex: u32) -> Child {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            node.name(),
            env!("CARGO_BIN_EXE_fedwall-hold"),
        ])
        .arg(bpffs.pin_root())
        .args([&ifindex.to_string(), ALLOWED_PORT])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start fedwall-hold");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read fedwall-hold");
    assert_eq!(line.trim(), "ready", "fedwall-hold did not start");
    child
}

fn kill_9(mut child: Child) {
    child.kill().expect("SIGKILL the holder");
    let _ = child.wait();
}

/// A one-shot TCP server in `ns` on `port` that prints how many bytes it received.
fn tcp_server(ns: &NetNs, addr: &str, port: &str) -> Child {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET6 if ':' in '{addr}' else socket.AF_INET)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{addr}', {port})); s.listen(1); s.settimeout(20)\n\
         c,_=s.accept(); n=0\nwhile True:\n  d=c.recv(65536)\n  if not d: break\n  n+=len(d)\n\
         c.sendall(b'ok'); print(n)\n"
    );
    let child = Command::new("ip")
        .args(["netns", "exec", ns.name(), "python3", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server");
    std::thread::sleep(Duration::from_millis(300));
    child
}

/// A client in `ns` that connects, sends 1 KiB every 20 ms for `seconds`, then waits for
/// the server's "ok"; exits 0 only if the whole exchange worked.
fn tcp_client(ns: &NetNs, addr: &str, port: &str, seconds: f64) -> Child {
    let script = format!(
        "import socket,time\ns=socket.create_connection(('{addr}', {port}), timeout=2)\n\
         end=time.time()+{seconds}\nwhile time.time()<end:\n  s.sendall(b'x'*1024); time.sleep(0.02)\n\
         s.shutdown(socket.SHUT_WR); assert s.recv(2)==b'ok'\n"
    );
    Command::new("ip")
        .args(["netns", "exec", ns.name(), "python3", "-c", &script])
        .stderr(Stdio::null())
        .spawn()
        .expect("start the client")
}

/// Whether a TCP connection from `client` to `addr:port` in `server_ns` carries data.
fn connects(client: &NetNs, server_ns: &NetNs, addr: &str, port: &str) -> bool {
    let mut server = tcp_server(server_ns, addr, port);
    let ok = tcp_client(client, addr, port, 0.1)
        .wait()
        .expect("client")
        .success();
    let _ = server.kill();
    let _ = server.wait();
    ok
}

/// A TCP connection from the node to the pod's allowed port (IPv4), sending 1 KiB every
/// 20 ms for 3 s.
struct Stream {
    server: Child,
    client: Child,
}

impl Stream {
    /// Opens the connection and lets it run for half a second.
    fn start(node: &NetNs, pod: &NetNs) -> Stream {
        let server = tcp_server(pod, POD_V4, ALLOWED_PORT);
        let client = tcp_client(node, POD_V4, ALLOWED_PORT, 3.0);
        std::thread::sleep(Duration::from_millis(500));
        Stream { server, client }
    }

    /// Waits for its end; panics unless the whole exchange worked, across `event`.
    fn finish(mut self, event: &str) {
        assert!(
            self.client.wait().expect("client").success(),
            "the TCP connection broke across {event}"
        );
        let received = self.server.wait_with_output().expect("server");
        let bytes: u64 = String::from_utf8_lossy(&received.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        assert!(bytes > 50 * 1024, "only {bytes} bytes crossed {event}");
    }
}

fn pings(from: &NetNs, to: &str) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            from.name(),
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "-q",
            to,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("ping")
        .success()
}

/// Whether one UDP datagram from `from` reaches a receiver on `addr:port` in `to_ns`.
fn udp_delivered(from: &NetNs, to_ns: &NetNs, addr: &str, port: &str) -> bool {
    let family = format!("socket.AF_INET6 if ':' in '{addr}' else socket.AF_INET");
    let receiver = Command::new("ip")
        .args(["netns", "exec", to_ns.name(), "python3", "-c"])
        .arg(format!(
            "import socket\ns=socket.socket({family}, socket.SOCK_DGRAM)\n\
             s.bind(('{addr}', {port})); s.settimeout(1.5)\n\
             try:\n  s.recv(100); print('got')\nexcept Exception: print('none')\n"
        ))
        .stdout(Stdio::piped())
        .spawn()
        .expect("udp receiver");
    std::thread::sleep(Duration::from_millis(300));
    from.run(&[
        "python3",
        "-c",
        &format!(
            "import socket\ns=socket.socket({family}, socket.SOCK_DGRAM)\n\
             s.sendto(b'hi', ('{addr}', {port}))\n"
        ),
    ]);
    let output = receiver.wait_with_output().expect("udp receiver");
    String::from_utf8_lossy(&output.stdout).trim() == "got"
}

#[test]
fn traffic_follows_the_policy_and_survives_a_kill_9_of_the_holder() {
    require_root!();
    let bpffs = Bpffs::mount();
    let PodOnNode { node, pod } = pod_on_node();
    let ifindex = node.ifindex("veth-pod");
    let first = hold(&node, &bpffs, ifindex);

    // Ingress policy: ping and TCP to the allowed port; everything else denied.
    assert!(pings(&node, POD_V4), "ping to the pod (IPv4)");
    assert!(pings(&node, POD_V6), "ping to the pod (IPv6)");
    assert!(
        connects(&node, &pod, POD_V4, ALLOWED_PORT),
        "TCP to the allowed port"
    );
    assert!(
        !connects(&node, &pod, POD_V4, DENIED_PORT),
        "TCP to another port"
    );
    assert!(
        !udp_delivered(&node, &pod, POD_V4, UDP_PORT),
        "UDP is not allowed in"
    );
    // Egress policy denies everything the pod opens; replies above passed on conntrack.
    assert!(!pings(&pod, NODE_V4), "the pod may not open flows");

    // A connection streams while the holder is killed and a new one adopts the pins.
    let stream = Stream::start(&node, &pod);
    kill_9(first);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!pings(&pod, NODE_V4), "enforcement goes on with no holder");
    assert!(
        !udp_delivered(&node, &pod, POD_V4, UDP_PORT),
        "still no UDP with no holder"
    );
    let second = hold(&node, &bpffs, ifindex);
    assert!(!pings(&pod, NODE_V4), "enforcement goes on after adoption");
    stream.finish("the restart");
    assert!(
        pings(&node, POD_V4),
        "policy still allows ping after adoption"
    );
    kill_9(second);
}

/// The pod's endpoint when the test itself holds the dataplane.
const POD: &str = "node/k8s/default.pod/eth0";

/// A dataplane held by the test, for the node's `veth-pod`.
fn own_dataplane(node: &NetNs, bpffs: &Bpffs) -> KernelDataplane {
    let ifindex = node.ifindex("veth-pod");
    let interfaces = StaticInterfaces(BTreeMap::from([(EndpointName(POD.to_owned()), ifindex)]));
    KernelDataplane::open(&bpffs.pin_root(), interfaces).expect("open dataplane")
}

/// An ingress table allowing `protocol` to each of `ports`; the rest is denied.
fn allowing(protocol: u8, ports: &[&str]) -> RuleTable {
    let rules = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let mut r = rule(&format!("t2/ingress/{i}"), RuleAction::Allow);
            r.protocol = Some(protocol);
            r.destination.ports = vec![PortRange::single(port.parse().expect("port"))];
            r
        })
        .collect();
    RuleTable {
        rules,
        default: Verdict::Deny,
    }
}

/// Gives the pod this ingress table (attaching, the first time, from the node's namespace).
fn set_ingress(node: &NetNs, dataplane: &mut KernelDataplane, table: RuleTable) {
    node.enter(|| {
        dataplane
            .apply(&Delta::EndpointSet(endpoint(POD, Some(table), None)))
            .expect("apply the pod's policy");
    });
}

#[test]
fn udp_and_ipv6_tcp_follow_the_policy() {
    require_root!();
    let bpffs = Bpffs::mount();
    let PodOnNode { node, pod } = pod_on_node();
    let mut dataplane = own_dataplane(&node, &bpffs);
    let mut table = allowing(ip_proto::UDP, &[UDP_PORT]);
    table
        .rules
        .extend(allowing(ip_proto::TCP, &[ALLOWED_PORT]).rules);
    set_ingress(&node, &mut dataplane, table);

    for addr in [POD_V4, POD_V6] {
        assert!(
            udp_delivered(&node, &pod, addr, UDP_PORT),
            "UDP to the allowed port ({addr})"
        );
        assert!(
            !udp_delivered(&node, &pod, addr, "6001"),
            "UDP to another port ({addr})"
        );
    }
    assert!(
        connects(&node, &pod, POD_V6, ALLOWED_PORT),
        "IPv6 TCP to the allowed port"
    );
    assert!(
        !connects(&node, &pod, POD_V6, DENIED_PORT),
        "IPv6 TCP to another port"
    );
    assert!(
        !udp_delivered(&node, &pod, POD_V6, ALLOWED_PORT),
        "UDP to the TCP port"
    );
}

#[test]
fn a_rule_change_decides_new_flows_while_an_open_connection_goes_on() {
    require_root!();
    let bpffs = Bpffs::mount();
    let PodOnNode { node, pod } = pod_on_node();
    let mut dataplane = own_dataplane(&node, &bpffs);
    set_ingress(
        &node,
        &mut dataplane,
        allowing(ip_proto::TCP, &[ALLOWED_PORT]),
    );
    assert!(
        connects(&node, &pod, POD_V6, ALLOWED_PORT),
        "allowed before the change"
    );
    assert!(
        !connects(&node, &pod, POD_V4, DENIED_PORT),
        "denied before the change"
    );

    // A connection streams across the change, which swaps the allowed port.
    let stream = Stream::start(&node, &pod);
    set_ingress(
        &node,
        &mut dataplane,
        allowing(ip_proto::TCP, &[DENIED_PORT]),
    );
    assert!(
        !connects(&node, &pod, POD_V6, ALLOWED_PORT),
        "a new flow to the old port is judged by the new rules"
    );
    assert!(
        connects(&node, &pod, POD_V4, DENIED_PORT),
        "a new flow to the new port is allowed"
    );
    stream.finish("the rule change");
}
