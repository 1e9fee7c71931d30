//! `fedwall-bench-agent <fedwall binary>`: the whole agent at the scale of issue 6. Writes a
//! file datastore — 1,000 policies and a few local pods, 100,000 remote pods in 3
//! file-backed remote clusters — and runs the real `fedwall agent` on it in a fresh network
//! namespace with a private bpffs. Measures start → `/readyz` 200, the latency of remote
//! relabels from the datastore's event to the kernel maps (the agent's own
//! `fedwall_update_latency_seconds`), and the agent's peak RSS. Prints `BENCH <name> <value>
//! <unit>` lines, then a table. Run it through `cargo xtask bench agent` (release, root).

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError};
use fedwall::bench::{
    REMOTE_CLUSTERS, REMOTE_ENDPOINTS, SELECTORS, cluster_name, cluster_of, gateway_pod,
    initial_app, peak_rss_mib, policy, remote_pod,
};
use fedwall::model::resources::{
    ObjectMeta, RemoteClusterConfiguration, RemoteClusterSpec, Resource,
};
use fedwall_common::{net::v4_mapped, policy::IPSET_HOSTS_MAP};
use fedwall_tests::{
    bpffs::Bpffs,
    netns::{End, NetNs, veth},
};

const NODE: &str = "bench-node";
/// Local pods every policy applies to; the first [`WIRED_GATEWAYS`] get a real veth, so
/// their rule tables are programmed and attached; the others wait for their interface.
const GATEWAYS: usize = 8;
const WIRED_GATEWAYS: usize = 2;
/// Remote pods of cluster-0 kept in a small file of their own, `flip.yaml`, so that each
/// relabel rewrites a few lines rather than a file of thousands of pods.
const FLIP_PODS: usize = 20;
const RELABELS: usize = 200;
const PODS_PER_FILE: usize = 5_000;
/// Inside the agent's own network namespace, so no port is shared with anything.
const LISTEN: &str = "127.0.0.1:9468";
/// How often readiness is asked: the start figure's resolution.
const POLL: Duration = Duration::from_millis(2);
/// How often `/metrics` is asked while a relabel is awaited: rendering them takes the
/// agent's CPU, which the latency measured should not compete with.
const METRICS_POLL: Duration = Duration::from_millis(5);
const READY_TIMEOUT: Duration = Duration::from_secs(300);
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> anyhow::Result<()> {
    let agent_bin = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: fedwall-bench-agent <path of the fedwall binary>")?;
    ensure!(
        agent_bin.is_file(),
        "{} is not a file: build it first (cargo build --release -p fedwall)",
        agent_bin.display()
    );
    let work = WorkDir::new()?;
    let written = Instant::now();
    let flip = write_datastore(work.path())?;
    println!(
        "wrote the datastore ({} remote pods, {SELECTORS} policies) under {} in {:.1} s",
        REMOTE_ENDPOINTS,
        work.path().display(),
        written.elapsed().as_secs_f64()
    );

    // Dropped in reverse: the agent first, then the pods' namespaces, the node, the bpffs.
    let bpffs = Bpffs::mount();
    let node = NetNs::new();
    let _pods = wire_gateways(&node);
    let socket = work.path().join("agent.sock");
    let log = work.path().join("agent.log");
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", node.name()])
        .arg(&agent_bin)
        .arg("agent")
        .arg(format!(
            "--datastore=file:{}",
            work.path().join("local").display()
        ))
        .args(["--node", NODE, "--listen", LISTEN])
        .arg("--pin-root")
        .arg(bpffs.pin_root())
        .arg("--socket")
        .arg(&socket)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).context("create the agent's log")?);
    // SAFETY: prctl is async-signal-safe; it only asks for SIGTERM should this process die
    // first (`ip netns exec` keeps it across the exec), so no agent outlives the bench.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let started = Instant::now();
    let child = command
        .spawn()
        .with_context(|| format!("cannot run {command:?}"))?;
    let mut agent = Agent { child, log };

    let run = Run {
        agent: &mut agent,
        started,
        listen: LISTEN.parse().context("LISTEN")?,
        pin_root: bpffs.pin_root(),
        flip,
        agent_bin: &agent_bin,
        socket: &socket,
    };
    let figures = node.enter(|| run.measure());
    let figures = match figures {
        Ok(figures) => figures,
        Err(error) => {
            eprintln!("--- the agent's log ends with:\n{}", agent.log_tail(40));
            return Err(error);
        }
    };
    print_table(&figures);
    Ok(())
}

/// Local pods: gateways 10.0.0.1… on this node; the wired ones behind veths `gw<n>` whose
/// routes name them (how the agent finds a pod's interface).
fn local_pods() -> Vec<(Resource, String)> {
    (0..GATEWAYS)
        .map(|g| {
            let ip = format!("10.0.0.{}", g + 1);
            (gateway_pod(&format!("gateway-{g}"), NODE, &ip), ip)
        })
        .collect()
}

fn wire_gateways(node: &NetNs) -> Vec<NetNs> {
    local_pods()
        .into_iter()
        .take(WIRED_GATEWAYS)
        .enumerate()
        .map(|(g, (_, ip))| {
            let pod = NetNs::new();
            let host_side = format!("gw{g}");
            veth(
                End {
                    ns: node,
                    ifname: &host_side,
                    addrs: &[],
                },
                End {
                    ns: &pod,
                    ifname: "eth0",
                    addrs: &[&format!("{ip}/32")],
                },
            );
            node.run(&["ip", "route", "add", &ip, "dev", &host_side]);
            pod
        })
        .collect()
}

/// The remote pods that `flip.yaml` holds (all of cluster-0).
fn flip_pods() -> impl Iterator<Item = usize> {
    (0..FLIP_PODS).map(|n| n * REMOTE_CLUSTERS)
}

/// Writes `local/` (policies, gateways, one RemoteClusterConfiguration per remote cluster)
/// and `cluster-<n>/` beside it; returns the path of cluster-0's `flip.yaml`.
fn write_datastore(root: &Path) -> anyhow::Result<PathBuf> {
    let local = root.join("local");
    write_manifests(&local.join("policies.yaml"), (0..SELECTORS).map(policy))?;
    write_manifests(
        &local.join("pods.yaml"),
        local_pods().into_iter().map(|(pod, _)| pod),
    )?;
    write_manifests(
        &local.join("remote-clusters.yaml"),
        (0..REMOTE_CLUSTERS).map(|c| {
            Resource::RemoteClusterConfiguration(RemoteClusterConfiguration {
                metadata: ObjectMeta {
                    name: cluster_name(c),
                    ..ObjectMeta::default()
                },
                spec: RemoteClusterSpec {
                    datastore_type: Some("file".into()),
                    path: Some(format!("../{}", cluster_name(c))),
                    ..RemoteClusterSpec::default()
                },
                status: None,
            })
        }),
    )?;
    let flipping: Vec<usize> = flip_pods().collect();
    for c in 0..REMOTE_CLUSTERS {
        let pods: Vec<usize> = (0..REMOTE_ENDPOINTS)
            .filter(|&i| cluster_of(i) == c && !flipping.contains(&i))
            .collect();
        for (n, chunk) in pods.chunks(PODS_PER_FILE).enumerate() {
            let file = root.join(cluster_name(c)).join(format!("pods-{n:02}.yaml"));
            write_manifests(&file, chunk.iter().map(|&i| remote_pod(i, initial_app(i))))?;
        }
    }
    let flip = root.join(cluster_name(0)).join("flip.yaml");
    write_flip_file(&flip, &|i| initial_app(i))?;
    Ok(flip)
}

fn write_manifests(file: &Path, objects: impl Iterator<Item = Resource>) -> anyhow::Result<()> {
    let mut text = String::new();
    for object in objects {
        let manifest = object
            .to_manifest()
            .with_context(|| format!("{} as YAML", object.key()))?;
        let _ = write!(text, "---\n{manifest}");
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    }
    std::fs::write(file, text).with_context(|| format!("write {}", file.display()))
}

/// Rewrites `flip.yaml` with each flipping pod's `app` from `app_of`, in one rename so that
/// the agent never reads half a file.
fn write_flip_file(flip: &Path, app_of: &dyn Fn(usize) -> usize) -> anyhow::Result<()> {
    let staging = flip.with_file_name(".flip.yaml.new");
    write_manifests(&staging, flip_pods().map(|i| remote_pod(i, app_of(i))))?;
    std::fs::rename(&staging, flip).with_context(|| format!("rename to {}", flip.display()))
}

/// The `app` a flipping pod has after relabel `step` of its own (0, 1, 2, …): another set,
/// then no set at all, then its first set again — every step changes set membership.
fn app_after(i: usize, step: usize) -> usize {
    match step % 3 {
        0 => (initial_app(i) + 1) % SELECTORS,
        1 => SELECTORS + initial_app(i),
        _ => initial_app(i),
    }
}

/// The flipping pod relabel `k` changes, and how many relabels it had before.
fn relabel_target(k: usize) -> (usize, usize) {
    (k % FLIP_PODS, k / FLIP_PODS)
}

/// A unique directory for the datastore and the agent's socket and log; removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> anyhow::Result<WorkDir> {
        let dir = std::env::temp_dir().join(format!("fedwall-bench-agent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        Ok(WorkDir(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The agent process; stopped with SIGTERM (then SIGKILL) on drop.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the agent has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("the agent exited ({status})"),
            Err(error) => bail!("cannot wait for the agent: {error}"),
        }
    }

    /// CPU time the agent's threads have used, user and system.
    fn cpu_time(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which may hold spaces, inside parentheses).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
        let ticks = |n: usize| {
            fields
                .get(n)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of stat(5): 12 and 13 after the name.
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / per_second)
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signals our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Run<'a> {
    agent: &'a mut Agent,
    started: Instant,
    listen: SocketAddr,
    pin_root: PathBuf,
    flip: PathBuf,
    agent_bin: &'a Path,
    socket: &'a Path,
}

struct Figure {
    name: &'static str,
    /// For the `BENCH` line: a value in `unit`.
    value: f64,
    unit: &'static str,
    /// Decimals the table shows.
    decimals: usize,
    /// The most `value` may be; `None`: no target, only information.
    limit: Option<f64>,
}

impl Figure {
    fn info(name: &'static str, value: f64, unit: &'static str, decimals: usize) -> Figure {
        Figure {
            name,
            value,
            unit,
            decimals,
            limit: None,
        }
    }

    fn at_most(self, limit: f64) -> Figure {
        Figure {
            limit: Some(limit),
            ..self
        }
    }
}

/// What `/metrics` says about update latency: batches so far and their summed seconds.
#[derive(Clone, Copy)]
struct LatencyTotals {
    count: u64,
    sum: f64,
}

impl Run<'_> {
    fn measure(mut self) -> anyhow::Result<Vec<Figure>> {
        let mut figures = Vec::new();

        // 1. Start → ready: every source synced and the state programmed.
        loop {
            if matches!(self.get("/readyz"), Ok((200, _))) {
                break;
            }
            self.agent.check_running()?;
            ensure!(
                self.started.elapsed() < READY_TIMEOUT,
                "the agent is not ready after {READY_TIMEOUT:?}: {}",
                self.get("/readyz")
                    .map_or_else(|e| e.to_string(), |(_, body)| body)
            );
            std::thread::sleep(POLL);
        }
        let ready = self.started.elapsed();
        let ready_cpu = self.agent.cpu_time();
        let metrics = self.get_metrics()?;
        let endpoints = metric(&metrics, "fedwall_endpoints").unwrap_or(f64::NAN);
        let members =
            metric(&metrics, "fedwall_map_entries{map=\"fw_ipset_hosts_v1\"}").unwrap_or(f64::NAN);
        let waiting =
            metric(&metrics, "fedwall_endpoints_waiting_for_interface").unwrap_or(f64::NAN);
        println!(
            "ready: {endpoints} endpoints known, {members} addresses in IP sets, {waiting} local \
             endpoints waiting for their interface"
        );
        figures.push(
            Figure::info("agent_start_to_ready", ready.as_secs_f64() * 1e3, "ms", 0)
                .at_most(3000.0),
        );
        // The agent's CPU time over the same span, its threads together (on 2 cores): less
        // sensitive than wall time to the machine's other load, though not immune to it
        // (shared cores and caches slow every instruction).
        figures.push(Figure::info(
            "agent_start_to_ready_cpu",
            ready_cpu.as_secs_f64() * 1e3,
            "ms",
            0,
        ));

        // 2. Relabels, one at a time, each waited for before the next.
        let mut latencies = Vec::with_capacity(RELABELS);
        let mut write_to_applied = Vec::with_capacity(RELABELS);
        let mut steps = [0usize; FLIP_PODS];
        let mut extra_batches = 0;
        let mut kernel_checks = Vec::new();
        for k in 0..RELABELS {
            let (pod, step) = relabel_target(k);
            steps[pod] = step + 1;
            let i = flip_pods().nth(pod).context("a flipping pod")?;
            let before = self.latency_totals()?;
            // Before and after the first relabel into no set: the pinned map itself.
            let check_kernel = pod == 0 && step % 3 == 1 && kernel_checks.is_empty();
            let class_before = if check_kernel {
                Some(host_class(&self.pin_root, i)?)
            } else {
                None
            };
            let written = Instant::now();
            write_flip_file(&self.flip, &|j| {
                let n = (j / REMOTE_CLUSTERS) % FLIP_PODS;
                match steps[n] {
                    0 => initial_app(j),
                    s => app_after(j, s - 1),
                }
            })?;
            let after = self.wait_applied(before)?;
            write_to_applied.push(written.elapsed());
            latencies.push(after.sum - before.sum);
            extra_batches += after.count - before.count - 1;
            if let Some(class_before) = class_before {
                let class_after = host_class(&self.pin_root, i)?;
                kernel_checks.push((i, class_before, class_after));
            }
        }
        let rss = peak_rss_mib(&self.agent.pid().to_string());

        let quantile = |sorted: &[f64], q: f64| {
            let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
            sorted[rank - 1]
        };
        latencies.sort_by(f64::total_cmp);
        let (p50, p99) = (
            quantile(&latencies, 0.5) * 1e3,
            quantile(&latencies, 0.99) * 1e3,
        );
        let mut e2e: Vec<f64> = write_to_applied.iter().map(Duration::as_secs_f64).collect();
        e2e.sort_by(f64::total_cmp);
        let e2e_p50 = quantile(&e2e, 0.5) * 1e3;
        println!(
            "{RELABELS} relabels of remote pods (each one batch{}), latency from the \
             datastore's event to the kernel maps, by the agent's fedwall_update_latency_seconds",
            if extra_batches > 0 {
                format!("; {extra_batches} other batches fell in between")
            } else {
                String::new()
            }
        );
        figures.push(Figure::info("agent_relabel_to_kernel_p50", p50, "ms", 2));
        figures.push(Figure::info("agent_relabel_to_kernel_p99", p99, "ms", 2).at_most(10.0));
        // Information: the file watch's settling and re-read come before the event.
        figures.push(Figure::info(
            "agent_file_write_to_kernel_p50",
            e2e_p50,
            "ms",
            0,
        ));
        figures.push(Figure::info("agent_rss_peak", rss, "MiB", 0).at_most(300.0));

        // The kernel, independently: the relabelled pod's address left the pinned IP set
        // map (an address in no set has no entry), and `fedwall eval` over the agent's
        // socket agrees.
        for (i, before, after) in &kernel_checks {
            ensure!(
                before.is_some() && after.is_none(),
                "pod-{i} left every set, but its address's class in {IPSET_HOSTS_MAP} went \
                 {before:?} → {after:?}"
            );
            println!(
                "kernel check: pod-{i}'s address had class {} in {IPSET_HOSTS_MAP} and none \
                 after its relabel into no set",
                before.unwrap_or_default()
            );
        }
        ensure!(
            !kernel_checks.is_empty(),
            "no relabel was checked in the kernel"
        );
        self.check_eval()?;
        Ok(figures)
    }

    /// `fedwall eval` through the agent's socket: the last relabel's pod is in its new set.
    fn check_eval(&self) -> anyhow::Result<()> {
        let (pod, step) = relabel_target(RELABELS - 1);
        let i = flip_pods().nth(pod).context("a flipping pod")?;
        let app = app_after(i, step);
        let output = Command::new(self.agent_bin)
            .args(["eval", &format!("app == 'app{app}'"), "--socket"])
            .arg(self.socket)
            .output()
            .context("run fedwall eval")?;
        let text = String::from_utf8_lossy(&output.stdout);
        let name = format!(
            "{}/remote-node/k8s/ns{}.pod-{i}/eth0",
            cluster_name(0),
            i % 50
        );
        ensure!(
            output.status.success() && text.contains(&name),
            "fedwall eval app == 'app{app}' does not list {name}: {}{text}",
            String::from_utf8_lossy(&output.stderr)
        );
        println!("eval check: the agent lists {name} under app == 'app{app}'");
        Ok(())
    }

    fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.listen, path)
    }

    fn get_metrics(&self) -> anyhow::Result<String> {
        match self.get("/metrics")? {
            (200, body) => Ok(body),
            (status, body) => bail!("/metrics answered {status}: {body}"),
        }
    }

    fn latency_totals(&self) -> anyhow::Result<LatencyTotals> {
        let metrics = self.get_metrics()?;
        let count = metric(&metrics, "fedwall_update_latency_seconds_count")
            .context("no fedwall_update_latency_seconds_count in /metrics")?;
        let sum = metric(&metrics, "fedwall_update_latency_seconds_sum")
            .context("no fedwall_update_latency_seconds_sum in /metrics")?;
        Ok(LatencyTotals {
            count: count as u64,
            sum,
        })
    }

    /// Polls until another batch was programmed after `before`.
    fn wait_applied(&mut self, before: LatencyTotals) -> anyhow::Result<LatencyTotals> {
        let deadline = Instant::now() + APPLY_TIMEOUT;
        loop {
            std::thread::sleep(METRICS_POLL);
            let now = self.latency_totals()?;
            if now.count > before.count {
                return Ok(now);
            }
            self.agent.check_running()?;
            ensure!(
                Instant::now() < deadline,
                "a relabel was not applied within {APPLY_TIMEOUT:?}"
            );
        }
    }
}

/// The membership class of remote pod `i`'s address in the pinned host map; `None` when
/// the address is in no set.
fn host_class(pin_root: &Path, i: usize) -> anyhow::Result<Option<u32>> {
    let path = pin_root.join(IPSET_HOSTS_MAP);
    let map = MapData::from_pin(&path)
        .and_then(Map::from_map_data)
        .with_context(|| format!("open {}", path.display()))?;
    let hosts = BpfHashMap::<_, [u8; 16], u32>::try_from(&map)?;
    let Resource::Pod(pod) = remote_pod(i, initial_app(i)) else {
        bail!("remote_pod made something else than a pod");
    };
    let ip: std::net::Ipv4Addr = pod
        .status
        .pod_ip
        .as_deref()
        .context("a remote pod without address")?
        .parse()?;
    match hosts.get(&v4_mapped(ip.octets()), 0) {
        Ok(class) => Ok(Some(class)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(error) => Err(error).context("read the host map"),
    }
}

/// One plain HTTP/1.1 GET: the status code and the body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((status, body.to_owned()))
}

/// The value of the sample named exactly `name` (with its labels) in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

fn print_table(figures: &[Figure]) {
    for figure in figures {
        println!("BENCH {} {:.2} {}", figure.name, figure.value, figure.unit);
    }
    println!();
    println!(
        "agent: {REMOTE_ENDPOINTS} remote endpoints in {REMOTE_CLUSTERS} file-backed clusters, \
         {SELECTORS} policies, {GATEWAYS} local pods ({WIRED_GATEWAYS} with interfaces)"
    );
    println!("| figure | measured | target | |");
    println!("|---|---|---|---|");
    for figure in figures {
        let (target, verdict) = match figure.limit {
            Some(limit) => (
                format!("≤ {limit} {}", figure.unit),
                if figure.value <= limit {
                    "ok"
                } else {
                    "MISSED"
                },
            ),
            None => (String::new(), ""),
        };
        println!(
            "| {} | {:.*} {} | {target} | {verdict} |",
            figure.name, figure.decimals, figure.value, figure.unit
        );
    }
}
