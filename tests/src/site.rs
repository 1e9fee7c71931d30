//! A whole site without Kubernetes, for the demo and the agent's T2 tests: a node
//! (a network namespace) whose pods are namespaces on veths laid out as Calico lays them out
//! (a /32 route to each pod on its host-side veth, proxy ARP, the pod's default route via
//! 169.254.1.1), an uplink to an external host that also routes to a remote cluster's pods,
//! a file datastore per cluster, and the real `fedwall agent` process on the node.
//!
//! ```text
//!   pods (10.10.0.0/16) ── node ── up0 192.0.2.1 ─── 192.0.2.2 ext ── remote pods (10.20.0.0/16)
//!                                                     198.51.100.10 (a "forbidden" external host)
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fedwall::daemon::{DebugRequest, DebugResponse, debug};

use crate::bpffs::Bpffs;
use crate::netns::{End, NetNs, veth};

/// The node's name in the datastore; local pods run on it.
pub const NODE_NAME: &str = "a-node-1";
pub const UPLINK: &str = "up0";
pub const NODE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const EXT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// Another address of the external host, in a range a policy may deny.
pub const FORBIDDEN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The local cluster's directory under the datastore root.
pub const LOCAL_CLUSTER: &str = "cluster-a";
/// Where the agent serves HTTP inside the node's namespace.
const AGENT_HTTP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9468);
/// Pods' default gateway, answered by proxy ARP on the host-side veth.
const GATEWAY: &str = "169.254.1.1";
/// How long a connection attempt may take before the flow counts as denied.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);

/// A pod: its namespace and address.
pub struct Pod {
    pub ns: NetNs,
    pub addr: Ipv4Addr,
}

/// Where a flow starts or ends.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    /// A pod, by `cluster/namespace/name`.
    Pod(String),
    /// The external host, at one of its addresses.
    Ext(Ipv4Addr),
}

impl Place {
    pub fn pod(key: &str) -> Place {
        Place::Pod(key.to_owned())
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Pod(key) => f.write_str(key),
            Place::Ext(addr) => write!(f, "external {addr}"),
        }
    }
}

/// What a TCP connection attempt saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Connected and the data arrived; the receiver saw this source address.
    Allowed { seen_source: Ipv4Addr },
    /// No connection (timed out, refused or reset), with the error.
    Denied(String),
}

pub struct Site {
    pub node: NetNs,
    pub ext: NetNs,
    pods: BTreeMap<String, Pod>,
    bpffs: Bpffs,
    dir: PathBuf,
    next_local: u32,
    next_remote: u32,
}

impl Site {
    /// The node, the external host and the uplink between them; no pods yet.
    pub fn new() -> anyhow::Result<Site> {
        let node = NetNs::new();
        let ext = NetNs::new();
        veth(
            End {
                ns: &node,
                ifname: UPLINK,
                addrs: &["192.0.2.1/24"],
            },
            End {
                ns: &ext,
                ifname: "ext0",
                addrs: &["192.0.2.2/24"],
            },
        );
        ext.run(&["ip", "addr", "add", "198.51.100.10/32", "dev", "lo"]);
        for ns in [&node, &ext] {
            ns.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        }
        node.run(&["ip", "route", "add", "default", "via", "192.0.2.2"]);
        // The external host routes through the node by default (so the local pod range
        // goes back to the node); the remote cluster's pods hang off it, and its proxy ARP
        // for their gateway needs that default route.
        ext.run(&["ip", "route", "add", "default", "via", "192.0.2.1"]);
        let dir = std::env::temp_dir().join(format!(
            "fedwall-site-{}-{}",
            std::process::id(),
            node.name()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        Ok(Site {
            node,
            ext,
            pods: BTreeMap::new(),
            bpffs: Bpffs::mount(),
            dir,
            next_local: 0,
            next_remote: 0,
        })
    }

    /// The datastore root: one directory per cluster (`cluster-a` is the local one).
    pub fn datastore(&self) -> &Path {
        &self.dir
    }

    pub fn pin_root(&self) -> PathBuf {
        self.bpffs.pin_root()
    }

    /// Writes a manifest file of a cluster's directory (atomically, as an editor would).
    pub fn write(&self, cluster: &str, file: &str, yaml: &str) -> anyhow::Result<()> {
        let dir = self.dir.join(cluster);
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(file)).with_context(|| format!("rename {file}"))
    }

    pub fn remove(&self, cluster: &str, file: &str) -> anyhow::Result<()> {
        let path = self.dir.join(cluster).join(file);
        std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))
    }

    /// A pod of the local cluster on this node: host-side veth `wl<n>` with a /32 route.
    pub fn add_local_pod(&mut self, key: &str, addr: Ipv4Addr) {
        let host_side = format!("wl{}", self.next_local);
        self.next_local += 1;
        let pod = attach_pod(&self.node, &host_side, addr);
        self.pods.insert(key.to_owned(), pod);
    }

    /// A pod of a remote cluster, reached through the external host.
    pub fn add_remote_pod(&mut self, key: &str, addr: Ipv4Addr) {
        let host_side = format!("rp{}", self.next_remote);
        self.next_remote += 1;
        let pod = attach_pod(&self.ext, &host_side, addr);
        // The node reaches remote pods by its default route, through the external host.
        self.pods.insert(key.to_owned(), pod);
    }

    /// Takes a pod away (its namespace and veth go), as when it is deleted.
    pub fn remove_pod(&mut self, key: &str) {
        self.pods.remove(key);
    }

    pub fn pod(&self, key: &str) -> &Pod {
        self.pods
            .get(key)
            .unwrap_or_else(|| panic!("no pod {key} in the site"))
    }

    fn place(&self, place: &Place) -> (&NetNs, Ipv4Addr) {
        match place {
            Place::Pod(key) => {
                let pod = self.pod(key);
                (&pod.ns, pod.addr)
            }
            Place::Ext(addr) => (&self.ext, *addr),
        }
    }

    /// The source address a receiver sees when `from` is not translated.
    pub fn addr_of(&self, place: &Place) -> Ipv4Addr {
        self.place(place).1
    }

    /// One TCP connection from `from` to `to`:`port`, with a byte of data.
    pub fn tcp(&self, from: &Place, to: &Place, port: u16) -> Outcome {
        match self.open(from, to, port) {
            Ok(connection) => Outcome::Allowed {
                seen_source: connection.seen_source,
            },
            Err(reason) => Outcome::Denied(reason),
        }
    }

    /// Opens a TCP connection from `from` to `to`:`port` and exchanges a byte; `Err` says
    /// why no connection came about.
    pub fn open(&self, from: &Place, to: &Place, port: u16) -> Result<Connection, String> {
        let (server_ns, server_addr) = self.place(to);
        let (client_ns, _) = self.place(from);
        let listener = server_ns
            .enter(|| TcpListener::bind(SocketAddrV4::new(server_addr, port)))
            .map_err(|e| format!("cannot listen on {server_addr}:{port}: {e}"))?;
        let target = SocketAddr::V4(SocketAddrV4::new(server_addr, port));
        let client = client_ns
            .enter(|| TcpStream::connect_timeout(&target, CONNECT_TIMEOUT))
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::TimedOut => "no answer (dropped)".to_owned(),
                _ => e.to_string(),
            })?;
        let accepted = (|| {
            listener.set_nonblocking(true)?;
            let deadline = Instant::now() + CONNECT_TIMEOUT;
            loop {
                match listener.accept() {
                    Ok(accepted) => return Ok(accepted),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            return Err(e);
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(e),
                }
            }
        })();
        let (server, peer) = accepted.map_err(|e| format!("connected, but not accepted: {e}"))?;
        let SocketAddr::V4(peer) = peer else {
            return Err(format!("unexpected peer {peer}"));
        };
        let mut connection = Connection {
            client,
            server,
            seen_source: *peer.ip(),
        };
        connection
            .exchange()
            .map_err(|e| format!("connected, but no data came through: {e}"))?;
        Ok(connection)
    }

    /// Starts `fedwall agent` on the node for the local cluster's directory and waits until
    /// it is ready.
    pub fn start_agent(&self) -> anyhow::Result<Agent> {
        self.start_agent_with(&[format!(
            "--datastore=file:{}",
            self.dir.join(LOCAL_CLUSTER).display()
        )])
    }

    /// Starts `fedwall agent` on the node with `datastore` (its --datastore and related
    /// arguments) and waits until it is ready.
    pub fn start_agent_with(&self, datastore: &[String]) -> anyhow::Result<Agent> {
        static STARTS: AtomicU32 = AtomicU32::new(0);
        let log_path = self.dir.join(format!(
            "agent-{}.log",
            STARTS.fetch_add(1, Ordering::Relaxed)
        ));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("create {}", log_path.display()))?;
        let socket = self.socket();
        let child = Command::new("ip")
            .args(["netns", "exec", self.node.name()])
            .arg(fedwall_binary()?)
            .args(["agent", "--node", NODE_NAME, "--uplink", UPLINK])
            .args(datastore)
            .arg(format!("--pin-root={}", self.pin_root().display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--listen={AGENT_HTTP}"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start fedwall agent")?;
        let mut agent = Agent {
            child,
            log: log_path,
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = agent.child.try_wait()? {
                bail!(
                    "fedwall agent exited ({status}) before it was ready:\n{}",
                    agent.log_text()
                );
            }
            if matches!(self.http("/readyz"), Ok((200, _))) {
                return Ok(agent);
            }
            if Instant::now() > deadline {
                bail!("fedwall agent not ready after 30 s:\n{}", agent.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The agent's debug socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// GET `path` from the agent's HTTP endpoint: (status, body).
    pub fn http(&self, path: &str) -> anyhow::Result<(u16, String)> {
        self.node.enter(|| {
            let mut stream = TcpStream::connect_timeout(&AGENT_HTTP.into(), CONNECT_TIMEOUT)?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(stream, "GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            let status = response
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .context("no HTTP status")?;
            let body = response
                .split_once("\r\n\r\n")
                .map(|(_, body)| body.to_owned())
                .unwrap_or_default();
            Ok((status, body))
        })
    }

    /// A metric's value from `/metrics` (`name` includes its labels, as printed).
    pub fn metric(&self, name: &str) -> anyhow::Result<Option<f64>> {
        let (_, body) = self.http("/metrics")?;
        Ok(body.lines().find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok())?
        }))
    }

    /// Names of the endpoints a selector matches, in the running agent's view.
    pub fn eval(&self, selector: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .eval_report(selector)?
            .endpoints
            .into_iter()
            .map(|e| e.name)
            .collect())
    }

    /// The running agent's whole answer to `fedwall eval <selector>`: the endpoints and the
    /// sources it could not read.
    pub fn eval_report(&self, selector: &str) -> anyhow::Result<fedwall::calc::eval::EvalReport> {
        let request = DebugRequest::Eval {
            selector: selector.to_owned(),
        };
        match debug::ask(&self.socket(), &request)? {
            Some(DebugResponse::Eval(report)) => Ok(report),
            Some(DebugResponse::Error(e)) => bail!("agent: {e}"),
            Some(other) => bail!("the agent answered {other:?} to an eval"),
            None => bail!("no agent answers on {}", self.socket().display()),
        }
    }

    /// Waits until `selector` matches exactly as many endpoints as `count` says, in the
    /// agent's view: the agent answers after programming what it had received, so the
    /// kernel maps hold the change too.
    pub fn await_matches(&self, selector: &str, count: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let found = self.eval(selector)?;
            if found.len() == count {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{selector} matches {found:?}, not {count} endpoints, after 15 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Connects a new pod namespace to `host` the way Calico does: the pod has `addr/32` and a
/// default route via 169.254.1.1 on eth0; the host has a /32 route to it on the host-side
/// veth, which answers ARP for the gateway (proxy ARP).
fn attach_pod(host: &NetNs, host_side: &str, addr: Ipv4Addr) -> Pod {
    let ns = NetNs::new();
    let cidr = format!("{addr}/32");
    veth(
        End {
            ns: host,
            ifname: host_side,
            addrs: &[],
        },
        End {
            ns: &ns,
            ifname: "eth0",
            addrs: &[&cidr],
        },
    );
    host.run(&[
        "sysctl",
        "-qw",
        &format!("net.ipv4.conf.{host_side}.proxy_arp=1"),
    ]);
    host.run(&[
        "ip", "route", "add", &cidr, "dev", host_side, "scope", "link",
    ]);
    ns.run(&[
        "ip", "route", "add", GATEWAY, "dev", "eth0", "scope", "link",
    ]);
    ns.run(&[
        "ip", "route", "add", "default", "via", GATEWAY, "dev", "eth0",
    ]);
    Pod { ns, addr }
}

/// An open TCP connection between two places.
pub struct Connection {
    client: TcpStream,
    server: TcpStream,
    /// The source address the server saw.
    pub seen_source: Ipv4Addr,
}

impl Connection {
    /// Sends a byte each way; fails when either does not arrive in time.
    pub fn exchange(&mut self) -> std::io::Result<()> {
        for (from, to) in [(0, 1), (1, 0)] {
            let streams = [&self.client, &self.server];
            let mut byte = [0u8; 1];
            (&mut &*streams[from]).write_all(b"x")?;
            streams[to].set_nonblocking(false)?;
            streams[to].set_read_timeout(Some(CONNECT_TIMEOUT))?;
            (&mut &*streams[to]).read_exact(&mut byte)?;
        }
        Ok(())
    }
}

/// The running agent; killed (SIGKILL) on drop if still running.
pub struct Agent {
    child: Child,
    log: PathBuf,
    socket: PathBuf,
}

impl Agent {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the agent logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit: the agent leaves enforcement in place.
    pub fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "agent did not stop within 10 s of SIGTERM:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9: nothing of the agent runs any more, only what it pinned.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `fedwall` binary: `$FEDWALL_BIN`, else next to the running executable's directory
/// (`target/<profile>/fedwall`, which `cargo xtask test` and `./x demo` build).
pub fn fedwall_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("FEDWALL_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("fedwall");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "cannot find the fedwall binary next to {}: build it (cargo build -p fedwall) or set \
         FEDWALL_BIN",
        exe.display()
    )
}
