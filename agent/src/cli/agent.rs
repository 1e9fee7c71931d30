//! `fedwall agent`: the node agent. It reads the datastore (and every remote cluster it
//! federates), computes each local endpoint's rule tables and IP sets, and keeps the
//! kernel programs and maps in step; `--cleanup` removes everything it pinned.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use super::{Datastore, DatastoreArg};
use crate::calc::CalcConfig;
use crate::daemon::{
    self, DebugRequest, Event, EventSender, EventSink, Metrics, debug, event_channel, http,
};
use crate::dataplane::{KernelDataplane, RouteLookup, Uplink, UplinkChoice, netlink};
use crate::datastore::kube::{KubeAccess, KubeContext, KubeRuntime, KubeSource, LocalOptions};
use crate::datastore::{FederatedFileSource, RemoteClusterState};
use crate::paths::{DEFAULT_LISTEN, DEFAULT_PIN_ROOT, DEFAULT_SOCKET};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    fedwall agent --datastore kubernetes        # in a pod: the DaemonSet (deploy/agent.yaml)\n  \
    fedwall agent --datastore kubernetes --kubeconfig ~/.kube/config --node node-1\n  \
    fedwall agent --datastore file:/etc/fedwall/cluster --node node-1\n  \
    fedwall agent --datastore file:/etc/fedwall/cluster --node node-1 --uplink eth0 --listen 0.0.0.0:9468\n  \
    fedwall agent --cleanup          # uninstall: remove every pin and attachment (agent stopped)\n\n\
    The agent enforces policy on this node's pods: it finds each local pod's host-side \
    interface through the route to the pod's address, and attaches as interfaces come and \
    go. Maps and attachments are pinned under --pin-root, so enforcement continues while the \
    agent restarts or is stopped (SIGTERM); a new agent adopts them without a gap.\n\n\
    Endpoints: GET /healthz (alive), /readyz (200 once every source synced and the maps are \
    programmed, else 503 naming what it waits for), /metrics (Prometheus). `fedwall eval` \
    asks the agent over --socket.")]
pub struct AgentArgs {
    /// Remove every map, link and attachment fedwall pinned under --pin-root, then exit
    /// (for uninstall; refuses while an agent answers on --socket). Other options but
    /// --pin-root and --socket are ignored.
    #[arg(long)]
    cleanup: bool,
    #[command(flatten)]
    datastore: DatastoreArg,
    /// This node's name: pods whose `spec.nodeName` is this name are enforced here.
    #[arg(long, env = "FEDWALL_NODE_NAME", required_unless_present = "cleanup")]
    node: Option<String>,
    /// The agent's own namespace, where the Lease `fedwall-rcc-status` elects the one agent
    /// that writes RemoteClusterConfiguration status (kubernetes datastore).
    #[arg(long, env = "FEDWALL_NAMESPACE", default_value = "fedwall-system")]
    namespace: String,
    /// This cluster's name: the `fedwall.io/cluster` label of its endpoints.
    #[arg(long, env = "FEDWALL_CLUSTER_NAME", default_value = "local")]
    cluster_name: String,
    /// Where maps and links are pinned (a bpffs directory).
    #[arg(long, default_value = DEFAULT_PIN_ROOT)]
    pin_root: PathBuf,
    /// An interface that leaves the node, for NAT-outgoing (repeat for several). Default:
    /// the interfaces of the IPv4 and IPv6 default routes. Either way a changed address or
    /// default route is followed.
    #[arg(long = "uplink", value_name = "IFACE")]
    uplinks: Vec<String>,
    /// Address of the HTTP endpoints /healthz, /readyz and /metrics.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The debug socket, on which `fedwall eval` asks the agent.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    if args.cleanup {
        return cleanup(&args.pin_root, &args.socket);
    }
    let node = args.node.clone().context("--node is required")?;
    let datastore = args.datastore.datastore()?;
    // Signals go to one thread that turns them into a shutdown; block them before any
    // other thread starts, so every thread inherits the mask.
    let signals = block_shutdown_signals()?;

    let metrics = Arc::new(Metrics::default());
    let (events, receiver) = event_channel();
    let bound = http::serve(args.listen, metrics.clone())
        .with_context(|| format!("serving HTTP on --listen {}", args.listen))?;
    debug::serve(&args.socket, events.clone()).with_context(|| {
        format!(
            "serving the debug socket --socket {}",
            args.socket.display()
        )
    })?;
    spawn_signal_thread(signals, events.clone())?;
    spawn_interface_watch(events.clone())?;
    let runtime = KubeRuntime::new().context("starting the runtime of Kubernetes connections")?;
    let source = start_datastore(
        &datastore,
        &runtime,
        LocalOptions {
            node: node.clone(),
            namespace: args.namespace.clone(),
        },
        EventSink(events.clone()),
    )?;
    drop(events);
    // Opened after the sources started, on the dataplane's own thread: the sources parse
    // the datastore and calc takes their objects while the kernel programs load and
    // verify, rather than after. Nothing is programmed before the dataplane is open.
    let config = CalcConfig {
        node: node.clone(),
        cluster_name: args.cluster_name.clone(),
    };
    let ran = daemon::run(config, &metrics, &receiver, || {
        let dataplane = open_dataplane(&args.pin_root, &args.uplinks)?;
        tracing::info!(
            node = %node,
            cluster = %args.cluster_name,
            datastore = ?datastore,
            pin_root = %args.pin_root.display(),
            http = %bound,
            socket = %args.socket.display(),
            "agent started"
        );
        Ok(dataplane)
    });
    match ran {
        // Its maps and links stay pinned: enforcement goes on without the agent.
        Ok(dataplane) => drop(dataplane),
        Err(error) => {
            // The receiver first: a source blocked on the full channel then sees it
            // closed, and stops when dropped.
            drop(receiver);
            drop(source);
            return Err(error);
        }
    }
    drop(source);
    // Connections still open end with the runtime; none may hold the process up.
    runtime.shutdown();
    let _ = std::fs::remove_file(&args.socket);
    tracing::info!(
        pin_root = %args.pin_root.display(),
        "agent stopped; enforcement stays in place (pinned). `fedwall agent --cleanup` removes it"
    );
    Ok(ExitCode::SUCCESS)
}

/// Loads the kernel programs (adopting what an earlier agent pinned) and attaches
/// NAT-outgoing to the uplinks.
fn open_dataplane(pin_root: &Path, uplinks: &[String]) -> anyhow::Result<KernelDataplane> {
    let mut dataplane = KernelDataplane::open(pin_root, RouteLookup)
        .with_context(|| format!("opening the dataplane pinned under {}", pin_root.display()))?;
    let choice = if uplinks.is_empty() {
        UplinkChoice::DefaultRoutes
    } else {
        UplinkChoice::Named(uplinks.to_vec())
    };
    let uplinks = dataplane
        .follow_nat_uplinks(choice)
        .context("attaching NAT-outgoing to the uplinks (--uplink)")?;
    report_uplinks(&uplinks);
    Ok(dataplane)
}

/// A running datastore source; dropping it stops it.
#[expect(
    dead_code,
    reason = "held only to be dropped: dropping a source stops it"
)]
enum Source {
    File(FederatedFileSource),
    Kube(KubeSource),
}

/// Starts reading the datastore; fails only when it cannot be started at all (a local
/// directory that cannot be read, a kubeconfig that cannot be used). An API server that
/// does not answer yet is retried.
fn start_datastore(
    datastore: &Datastore,
    runtime: &KubeRuntime,
    options: LocalOptions,
    sink: EventSink,
) -> anyhow::Result<Source> {
    match datastore {
        Datastore::File(dir) => {
            let remotes = KubeContext::without_local_cluster(runtime);
            FederatedFileSource::spawn(dir, sink, Some(remotes))
                .map(Source::File)
                .with_context(|| format!("reading the datastore {}", dir.display()))
        }
        Datastore::Kubernetes { kubeconfig } => {
            let config = match kubeconfig {
                Some(path) => runtime
                    .handle()
                    .block_on(local_config(path))
                    .map_err(|state| anyhow::anyhow!("--kubeconfig: {}", state))?,
                None => kube::Config::incluster().context(
                    "not running in a pod (no service account and KUBERNETES_SERVICE_HOST): \
                     pass --kubeconfig PATH",
                )?,
            };
            KubeSource::spawn(runtime, config, options, sink)
                .map(Source::Kube)
                .context("connecting to this cluster's API server")
        }
    }
}

/// This cluster's client configuration from a kubeconfig file.
async fn local_config(path: &Path) -> Result<kube::Config, RemoteClusterState> {
    let access = KubeAccess::Path(path.to_owned());
    let text = crate::datastore::kube::read_kubeconfig(path)?;
    crate::datastore::kube::connect_config(&text, &access)
        .await
        .map(|connection| connection.config)
}

/// Says where NAT runs; none is a warning.
fn report_uplinks(uplinks: &[Uplink]) {
    if uplinks.is_empty() {
        tracing::warn!(
            "no default route and no --uplink: NAT-outgoing is off (policy is still enforced)"
        );
    }
    for uplink in uplinks {
        tracing::info!(uplink = %uplink.name, v4 = ?uplink.v4, v6 = ?uplink.v6, "NAT-outgoing uplink");
    }
}

fn cleanup(pin_root: &Path, socket: &Path) -> anyhow::Result<ExitCode> {
    let request = DebugRequest::Eval {
        selector: "all()".into(),
    };
    if let Ok(Some(_)) = debug::ask(socket, &request) {
        anyhow::bail!(
            "an agent is running on this node (it answers on {}): stop it first, then run \
             --cleanup again",
            socket.display()
        );
    }
    let removed = crate::dataplane::cleanup(pin_root)
        .with_context(|| format!("removing fedwall's pins under {}", pin_root.display()))?;
    println!(
        "removed {} links (programs detached) and {} maps pinned under {}",
        removed.links,
        removed.maps,
        pin_root.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn shutdown_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

fn block_shutdown_signals() -> anyhow::Result<libc::sigset_t> {
    let set = shutdown_signals();
    // SAFETY: a valid set; blocks the signals for this thread and the threads it starts.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    anyhow::ensure!(rc == 0, "cannot block SIGTERM: error {rc}");
    Ok(set)
}

fn spawn_signal_thread(set: libc::sigset_t, events: EventSender) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("fedwall-signals".into())
        .spawn(move || {
            let mut signal = 0;
            // SAFETY: set is valid; sigwait writes the signal number.
            let rc = unsafe { libc::sigwait(&set, &mut signal) };
            if rc == 0 {
                tracing::info!(signal, "shutting down on signal");
            }
            let _ = events.send(Event::Shutdown);
        })?;
    Ok(())
}

/// Link and route changes have the dataplane look for pods' interfaces again.
fn spawn_interface_watch(events: EventSender) -> anyhow::Result<()> {
    let changes = netlink::Changes::subscribe().context("subscribing to link and route changes")?;
    std::thread::Builder::new()
        .name("fedwall-netlink".into())
        .spawn(move || {
            loop {
                if let Err(error) = changes.wait() {
                    tracing::error!(%error, "link and route notifications failed; interfaces are re-checked every few seconds");
                    return;
                }
                if events.send(Event::InterfacesChanged).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}
