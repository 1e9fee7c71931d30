//! The agent's loop end to end without a kernel: a watched directory in, the in-memory
//! dataplane out, with the probes, metrics and debug socket a user would hit.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{DebugRequest, DebugResponse, Event, EventSink, Metrics, debug, http};
use crate::calc::CalcConfig;
use crate::dataplane::{Dataplane, EndpointName, MemoryDataplane};
use crate::datastore::FederatedFileSource;

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

    let (events, receiver) = super::event_channel();
    events.send(Event::Shutdown).expect("receiver alive");
    let stopped = super::run(config(), &Metrics::default(), &receiver, || {
        Ok(MemoryDataplane::new())
    });
    assert_eq!(
        stopped.expect("asked to stop while opening"),
        MemoryDataplane::new(),
        "a shutdown while the dataplane opens programs nothing"
    );
}
