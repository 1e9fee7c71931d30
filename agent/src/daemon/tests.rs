//! The agent's loop end to end without a kernel: a watched directory in, the in-memory
//! dataplane out, with the probes, metrics and debug socket a user would hit; and, with
//! updates sent directly and a dataplane the test holds up, how its two threads hand
//! batches over, become ready, stop and fail.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{DebugRequest, DebugResponse, Event, EventSink, Metrics, debug, http};
use crate::calc::CalcConfig;
use crate::dataplane::{
    Dataplane, DataplaneError, Delta, EndpointName, Flow, MemoryDataplane, PolicyDirection, Verdict,
};
use crate::datastore::{FederatedFileSource, Origin, Update};
use crate::model::resources::Resource;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("fedwall-daemon-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the agent's HTTP port");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response[9..12].parse().expect("status code");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n1}
status: {phase: Running, podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {nodeName: n2}
status: {phase: Running, podIP: 10.0.0.3}
---
apiVersion: fedwall.io/v1alpha1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  selector: app == 'web'
  ingress: [{action: Allow, source: {selector: app == 'client'}}]
---
apiVersion: fedwall.io/v1alpha1
kind: RemoteClusterConfiguration
metadata: {name: broken}
spec: {datastoreType: file, path: does-not-exist}
"#;

#[test]
fn the_agent_programs_its_datastore_becomes_ready_and_answers_on_its_socket() {
    let dir = TempDir::new("ready");
    std::fs::write(dir.0.join("cluster.yaml"), MANIFESTS).expect("write manifests");
    let socket = dir.0.join("run/fedwall.sock");

    let metrics = Arc::new(Metrics::default());
    let addr =
        http::serve("127.0.0.1:0".parse().expect("addr"), metrics.clone()).expect("serve HTTP");
    let (events, receiver) = super::event_channel();
    debug::serve(&socket, events.clone()).expect("serve the debug socket");
    let main_loop = spawn_loop(metrics.clone(), receiver, || Ok(MemoryDataplane::new()));
    let source =
        FederatedFileSource::spawn(&dir.0, EventSink(events.clone()), None).expect("watch dir");

    assert_eq!(get(addr, "/healthz").0, 200);
    // A failing remote cluster is reported, not waited for.
    eventually("readiness", || {
        (get(addr, "/readyz").0 == 200).then_some(())
    });
    let (_, metrics_text) = get(addr, "/metrics");
    for line in [
        "fedwall_ready 1",
        "fedwall_local_endpoints 1",
        "fedwall_policies 1",
        "fedwall_remote_cluster_state{cluster=\"broken\",state=\"ConnectionFailed\"} 1",
    ] {
        assert!(
            metrics_text.contains(line),
            "missing {line:?} in\n{metrics_text}"
        );
    }
    assert_eq!(get(addr, "/nothing").0, 404);

    let ask = |selector: &str| match debug::ask(
        &socket,
        &DebugRequest::Eval {
            selector: selector.into(),
        },
    ) {
        Ok(Some(DebugResponse::Eval(report))) => report,
        other => panic!("unexpected debug answer {other:?}"),
    };
    let report = ask("app == 'client'");
    let names: Vec<_> = report.endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["n2/k8s/shop.client/eth0"]);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.object == "RemoteClusterConfiguration(broken)"),
        "{:?}",
        report.problems
    );
    assert!(matches!(
        debug::ask(&socket, &DebugRequest::Eval { selector: "app ==".into() }),
        Ok(Some(DebugResponse::Error(message))) if message.contains("app ==")
    ));

    // An edit reaches the agent: the client pod is relabelled away.
    std::fs::write(
        dir.0.join("cluster.yaml"),
        MANIFESTS.replace("app: client", "app: other"),
    )
    .expect("edit manifests");
    eventually("the relabel", || {
        ask("app == 'client'").endpoints.is_empty().then_some(())
    });

    stop_and_expect_web_enforced(source, &events, main_loop);
}

/// Stops the source and the main loop; the local web pod's ingress policy must be in the
/// dataplane, pruned once, after the first full sync.
fn stop_and_expect_web_enforced(
    source: FederatedFileSource,
    events: &SyncSender<Event>,
    main_loop: JoinHandle<anyhow::Result<MemoryDataplane>>,
) {
    drop(source);
    events.send(Event::Shutdown).expect("main loop alive");
    let dataplane = main_loop
        .join()
        .expect("main loop ends cleanly")
        .expect("the dataplane opened");
    let web = dataplane
        .endpoints
        .get(&EndpointName("n1/k8s/shop.web/eth0".into()))
        .expect("the local web pod is enforced");
    assert!(web.ingress.is_some() && web.egress.is_none());
    assert_eq!(dataplane.syncs, 1, "pruned once, after the first full sync");
}

/// The agent's loop on a thread of its own, with the dataplane `open` returns.
fn spawn_loop<D: Dataplane + Send + 'static>(
    metrics: Arc<Metrics>,
    events: Receiver<Event>,
    open: impl FnOnce() -> anyhow::Result<D> + Send + 'static,
) -> JoinHandle<anyhow::Result<D>> {
    std::thread::spawn(move || super::run(config(), &metrics, &events, open))
}

fn config() -> CalcConfig {
    CalcConfig {
        node: "n1".into(),
        cluster_name: "east".into(),
    }
}

#[test]
fn no_agent_on_the_socket_is_not_an_error() {
    let dir = TempDir::new("no-agent");
    let answer = debug::ask(
        &dir.0.join("none.sock"),
        &DebugRequest::Eval {
            selector: "all()".into(),
        },
    );
    assert!(matches!(answer, Ok(None)), "{answer:?}");
}

fn eval_names(events: &SyncSender<Event>, selector: &str) -> Vec<String> {
    let (reply, answer) = std::sync::mpsc::channel();
    let request = DebugRequest::Eval {
        selector: selector.into(),
    };
    events
        .send(Event::Debug(request, reply))
        .expect("main loop alive");
    match answer.recv_timeout(Duration::from_secs(20)) {
        Ok(DebugResponse::Eval(report)) => report.endpoints.into_iter().map(|e| e.name).collect(),
        other => panic!("unexpected debug answer {other:?}"),
    }
}

#[test]
fn calc_takes_the_datastore_while_the_dataplane_opens_then_programs_it() {
    let dir = TempDir::new("opening");
    std::fs::write(dir.0.join("cluster.yaml"), MANIFESTS).expect("write manifests");
    let metrics = Arc::new(Metrics::default());
    let addr =
        http::serve("127.0.0.1:0".parse().expect("addr"), metrics.clone()).expect("serve HTTP");
    let (events, receiver) = super::event_channel();
    let source =
        FederatedFileSource::spawn(&dir.0, EventSink(events.clone()), None).expect("watch dir");
    // The dataplane opens only when the test says so, as if the verifier took that long.
    let (open_now, gate) = std::sync::mpsc::channel::<()>();
    let main_loop = spawn_loop(metrics, receiver, move || {
        gate.recv().expect("the test opens the dataplane");
        Ok(MemoryDataplane::new())
    });

    eventually("calc to take the pods before the dataplane opens", || {
        let names = eval_names(&events, "app == 'client'");
        (names == ["n2/k8s/shop.client/eth0"]).then_some(())
    });
    assert_eq!(get(addr, "/readyz").0, 503, "nothing is programmed yet");
    open_now.send(()).expect("the dataplane is opening");
    eventually("readiness", || {
        (get(addr, "/readyz").0 == 200).then_some(())
    });

    // What calc took while the dataplane opened is programmed.
    stop_and_expect_web_enforced(source, &events, main_loop);
}

#[test]
fn a_dataplane_that_cannot_open_is_the_error_and_a_shutdown_meanwhile_stops_cleanly() {
    // A sender stays: the loop stops on the dataplane's error alone.
    let (_events, receiver) = super::event_channel();
    let failed = super::run::<MemoryDataplane>(config(), &Metrics::default(), &receiver, || {
        Err(anyhow::anyhow!("no bpffs at /sys/fs/bpf"))
    });
    let error = failed.expect_err("the dataplane's error");
    assert_eq!(error.to_string(), "no bpffs at /sys/fs/bpf");

    // Updates, a shutdown and a question, all in one batch: the answer comes once calc
    // has stopped, and only then does the dataplane open.
    let (events, receiver) = super::event_channel();
    for event in web_and_client() {
        events.send(event).expect("receiver alive");
    }
    events.send(Event::Shutdown).expect("receiver alive");
    let (reply, answer) = std::sync::mpsc::channel();
    let question = DebugRequest::Eval {
        selector: "all()".into(),
    };
    events
        .send(Event::Debug(question, reply))
        .expect("receiver alive");
    let (open_now, gate) = std::sync::mpsc::channel::<()>();
    let main_loop = spawn_loop(Arc::new(Metrics::default()), receiver, move || {
        gate.recv().expect("the test opens the dataplane");
        Ok(MemoryDataplane::new())
    });
    answer
        .recv_timeout(Duration::from_secs(20))
        .expect("calc answers before it stops");
    open_now.send(()).expect("the dataplane is opening");
    let stopped = main_loop.join().expect("the loop ends cleanly");
    assert_eq!(
        stopped.expect("asked to stop while opening"),
        MemoryDataplane::new(),
        "a shutdown while the dataplane opens programs nothing"
    );
}

/// Holds the test's dataplane up in `apply` while shut.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<GateState>, Condvar)>);

#[derive(Default)]
struct GateState {
    shut: bool,
    /// The dataplane waits at the gate.
    waiting: bool,
    /// Deltas that went through.
    passed: usize,
}

impl Gate {
    fn set_shut(&self, shut: bool) {
        let (state, changed) = &*self.0;
        state.lock().expect("gate").shut = shut;
        changed.notify_all();
    }

    /// Waits until `done` holds of the gate's state.
    fn wait_until(&self, what: &str, done: impl Fn(&GateState) -> bool) {
        let (state, changed) = &*self.0;
        let state = state.lock().expect("gate");
        let (_state, waited) = changed
            .wait_timeout_while(state, Duration::from_secs(20), |s| !done(s))
            .expect("gate");
        assert!(!waited.timed_out(), "timed out waiting for {what}");
    }

    /// The dataplane's way through, once per delta.
    fn pass(&self) {
        let (state, changed) = &*self.0;
        let mut state = state.lock().expect("gate");
        state.waiting = state.shut;
        changed.notify_all();
        let mut state = changed.wait_while(state, |s| s.shut).expect("gate");
        state.waiting = false;
        state.passed += 1;
        changed.notify_all();
    }
}

/// The in-memory dataplane behind a gate.
struct HeldDataplane {
    dataplane: MemoryDataplane,
    gate: Gate,
}

impl Dataplane for HeldDataplane {
    fn apply(&mut self, delta: &Delta) -> Result<(), DataplaneError> {
        self.gate.pass();
        self.dataplane.apply(delta)
    }

    fn sync_complete(&mut self) -> Result<(), DataplaneError> {
        self.dataplane.sync_complete()
    }
}

/// The agent's loop over a held dataplane, with the gate shut.
fn spawn_held(metrics: Arc<Metrics>) -> (SyncSender<Event>, Gate, JoinHandle<HeldDataplane>) {
    let gate = Gate::default();
    gate.set_shut(true);
    let (events, receiver) = super::event_channel();
    let held = gate.clone();
    let main_loop = std::thread::spawn(move || {
        let dataplane = HeldDataplane {
            dataplane: MemoryDataplane::new(),
            gate: held,
        };
        super::run(config(), &metrics, &receiver, || Ok(dataplane)).expect("the dataplane opens")
    });
    (events, gate, main_loop)
}

/// A change of the local datastore, as its source sends it.
fn local(manifest: &str) -> Event {
    let value = serde_yaml::from_str(manifest).expect("test YAML parses");
    let resource = Resource::from_yaml(value).expect("a resource");
    let update = Update::Set {
        origin: Origin::Local,
        resource,
    };
    Event::Update(update, Instant::now())
}

fn pod(name: &str, app: &str, ip: &str, node: &str) -> Event {
    local(&format!(
        "{{apiVersion: v1, kind: Pod, metadata: {{name: {name}, namespace: shop, labels: {{app: {app}}}}}, \
         spec: {{nodeName: {node}}}, status: {{phase: Running, podIP: {ip}}}}}"
    ))
}

fn local_in_sync() -> Event {
    let update = Update::InSync {
        origin: Origin::Local,
    };
    Event::Update(update, Instant::now())
}

/// MANIFESTS' pods and policy, without the remote cluster: the local datastore alone.
fn web_and_client() -> Vec<Event> {
    MANIFESTS
        .split("\n---\n")
        .filter(|manifest| !manifest.contains("RemoteClusterConfiguration"))
        .map(local)
        .collect()
}

/// How the web pod's ingress decides a first TCP packet from `src`.
fn web_ingress(dataplane: &MemoryDataplane, src: &str) -> Verdict {
    let flow = Flow {
        src: src.parse().expect("address"),
        dst: "10.0.0.2".parse().expect("address"),
        protocol: 6,
        ports: Some((40000, 80)),
        icmp: None,
    };
    let web = EndpointName("n1/k8s/shop.web/eth0".into());
    dataplane
        .decide(&web, PolicyDirection::Ingress, &flow)
        .expect("the web pod is enforced")
        .verdict()
}

fn metric_line<'a>(metrics: &'a str, name: &str) -> Option<&'a str> {
    metrics.lines().find(|line| line.starts_with(name))
}

/// How many batches' latencies the metrics took.
fn latencies_taken(metrics: &Metrics) -> u64 {
    let rendered = metrics.render();
    metric_line(&rendered, "fedwall_update_latency_seconds_count ")
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .expect("a latency count")
}

#[test]
fn batches_reach_the_dataplane_in_order_while_calc_takes_the_next() {
    let metrics = Arc::new(Metrics::default());
    let (events, gate, main_loop) = spawn_held(metrics.clone());
    for event in web_and_client() {
        events.send(event).expect("loop alive");
    }
    gate.wait_until("the first batch held up", |s| s.waiting);

    // While the dataplane is held up in the first batch, calc takes the next: the client
    // leaves the policy's set, which another pod joins.
    events
        .send(pod("client", "other", "10.0.0.3", "n2"))
        .expect("loop alive");
    events
        .send(pod("client-2", "client", "10.0.0.4", "n2"))
        .expect("loop alive");
    events.send(local_in_sync()).expect("loop alive");
    eventually("calc to take the relabel", || {
        let names = eval_names(&events, "app == 'client'");
        (names == ["n2/k8s/shop.client-2/eth0"]).then_some(())
    });
    gate.set_shut(false);

    events.send(Event::Shutdown).expect("loop alive");
    let held = main_loop.join().expect("the loop ends cleanly");
    assert_eq!(web_ingress(&held.dataplane, "10.0.0.4"), Verdict::Allow);
    assert_eq!(
        web_ingress(&held.dataplane, "10.0.0.3"),
        Verdict::Deny,
        "the relabel was applied after the first batch, not before"
    );
    let rendered = metrics.render();
    assert_eq!(
        metric_line(&rendered, "fedwall_errors_total{"),
        None,
        "no delta was rejected:\n{rendered}"
    );
}

#[test]
fn the_agent_is_ready_only_once_the_in_sync_batch_is_programmed() {
    let metrics = Arc::new(Metrics::default());
    let (events, gate, main_loop) = spawn_held(metrics.clone());
    // A first batch programmed: calc knows the dataplane is open, so what follows is
    // an update's latency, not the verifier's.
    gate.set_shut(false);
    events
        .send(pod("web", "web", "10.0.0.2", "n1"))
        .expect("loop alive");
    gate.wait_until("the first batch programmed", |s| s.passed > 0);
    gate.set_shut(true);

    for event in web_and_client() {
        events.send(event).expect("loop alive");
    }
    events.send(local_in_sync()).expect("loop alive");
    gate.wait_until("the in-sync batch held up", |s| s.waiting);
    eventually("calc in sync", || {
        (metrics.readiness() == Err("programming the dataplane".into())).then_some(())
    });
    let rendered = metrics.render();
    assert!(
        rendered.contains("fedwall_ready 0"),
        "calc is in sync but its deltas are not programmed:\n{rendered}"
    );
    let taken_before = latencies_taken(&metrics);

    gate.set_shut(false);
    eventually("readiness", || metrics.readiness().ok());
    assert!(
        latencies_taken(&metrics) > taken_before,
        "an update's latency is taken once its deltas are programmed, not when flushed"
    );
    events.send(Event::Shutdown).expect("loop alive");
    let held = main_loop.join().expect("the loop ends cleanly");
    assert_eq!(held.dataplane.syncs, 1, "pruned once, when ready");
}

#[test]
fn a_shutdown_programs_what_calc_took_then_returns_the_dataplane() {
    let (events, gate, main_loop) = spawn_held(Arc::new(Metrics::default()));
    for event in web_and_client() {
        events.send(event).expect("loop alive");
    }
    events.send(local_in_sync()).expect("loop alive");
    gate.wait_until("the first batch held up", |s| s.waiting);
    events.send(Event::Shutdown).expect("loop alive");
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !main_loop.is_finished(),
        "the loop waits for the dataplane to program what calc took"
    );

    gate.set_shut(false);
    let held = main_loop.join().expect("the loop ends cleanly");
    assert_eq!(web_ingress(&held.dataplane, "10.0.0.3"), Verdict::Allow);
    assert_eq!(web_ingress(&held.dataplane, "10.0.0.9"), Verdict::Deny);
    assert_eq!(
        held.dataplane.syncs, 1,
        "in sync, and programmed before it stopped"
    );
}

/// A dataplane that panics on its first delta.
struct PanickingDataplane;

impl Dataplane for PanickingDataplane {
    fn apply(&mut self, _: &Delta) -> Result<(), DataplaneError> {
        panic!("a bug in the dataplane");
    }

    fn sync_complete(&mut self) -> Result<(), DataplaneError> {
        Ok(())
    }
}

#[test]
fn a_panic_on_the_dataplane_thread_stops_the_loop_instead_of_hanging_it() {
    let (events, receiver) = super::event_channel();
    let main_loop = spawn_loop(Arc::new(Metrics::default()), receiver, || {
        Ok(PanickingDataplane)
    });
    for event in web_and_client() {
        events.send(event).expect("loop alive");
    }
    // The sender stays: calc notices the dataplane thread is gone on its own.
    eventually("the loop to stop", || main_loop.is_finished().then_some(()));
    assert!(
        main_loop.join().is_err(),
        "the dataplane thread's panic is the loop's"
    );
    drop(events);
}
