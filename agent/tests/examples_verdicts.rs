//! The examples/ federation through calc into the in-memory dataplane: the verdicts
//! examples/README.md promises for cluster-a's node, checked flow by flow.

use std::path::PathBuf;

use fedwall::calc::{Calc, CalcConfig};
use fedwall::dataplane::{
    Dataplane as _, EndpointName, Flow, MemoryDataplane, PolicyDirection, Verdict,
};
use fedwall::datastore::{Origin, Update, read_federated};

fn enforced_on_a_node_1() -> MemoryDataplane {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster-a");
    let snapshot = read_federated(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut calc = Calc::new(CalcConfig {
        node: "a-node-1".into(),
        cluster_name: "cluster-a".into(),
    });
    for object in snapshot.local.objects.values() {
        calc.apply(&Update::Set {
            origin: Origin::Local,
            resource: object.resource.clone(),
        });
    }
    for (name, remote) in &snapshot.remotes {
        let dir = remote
            .snapshot
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: {}", remote.state));
        for object in dir.objects.values() {
            calc.apply(&Update::Set {
                origin: Origin::Remote(name.clone()),
                resource: object.resource.clone(),
            });
        }
    }
    assert_eq!(
        calc.problems().count(),
        0,
        "{:?}",
        calc.problems().collect::<Vec<_>>()
    );
    let mut dataplane = MemoryDataplane::new();
    for delta in calc.flush() {
        dataplane.apply(&delta).unwrap_or_else(|e| panic!("{e}"));
    }
    dataplane
}

fn tcp_to(dp: &MemoryDataplane, pod: &str, src: &str, dst: &str, port: u16) -> Verdict {
    let flow = Flow {
        src: src.parse().expect("ip"),
        dst: dst.parse().expect("ip"),
        protocol: 6,
        ports: Some((43210, port)),
        icmp: None,
    };
    dp.decide(
        &EndpointName(format!("a-node-1/k8s/{pod}/eth0")),
        PolicyDirection::Ingress,
        &flow,
    )
    .unwrap_or_else(|| panic!("{pod} is not enforced on a-node-1"))
    .verdict()
}

#[test]
fn web_takes_http_from_client_pods_of_every_cluster_and_nothing_else() {
    let dp = enforced_on_a_node_1();
    let web = ("shop.web-1", "10.10.0.11");
    assert_eq!(
        tcp_to(&dp, web.0, "10.10.0.41", web.1, 8080),
        Verdict::Allow,
        "local client"
    );
    assert_eq!(
        tcp_to(&dp, web.0, "10.20.0.11", web.1, 8080),
        Verdict::Allow,
        "cluster-b client"
    );
    assert_eq!(
        tcp_to(&dp, web.0, "10.20.1.11", web.1, 8080),
        Verdict::Deny,
        "cluster-b report pod"
    );
    assert_eq!(
        tcp_to(&dp, web.0, "10.20.0.11", web.1, 22),
        Verdict::Deny,
        "not the http port"
    );
}

#[test]
fn databases_take_backends_but_never_remote_pods() {
    let dp = enforced_on_a_node_1();
    let db = ("shop.db-0", "10.10.0.31");
    assert_eq!(
        tcp_to(&dp, db.0, "10.10.0.21", db.1, 5432),
        Verdict::Allow,
        "local api (backend)"
    );
    assert_eq!(
        tcp_to(&dp, db.0, "10.20.1.11", db.1, 5432),
        Verdict::Deny,
        "remote backend"
    );
    assert_eq!(
        tcp_to(&dp, db.0, "10.10.0.11", db.1, 5432),
        Verdict::Deny,
        "web is not a backend"
    );
}
