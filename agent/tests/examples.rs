//! The examples/ data set loads cleanly, whole: every document of the local cluster and of
//! both remote clusters parses, every object converts (endpoints, policies, pools), and
//! the watching source delivers the same federation as the one-shot read.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use fedwall::calc::{Calc, CalcConfig};
use fedwall::datastore::{
    FederatedFileSource, FederatedSnapshot, Origin, RemoteClusterState, Update, read_federated,
};
use fedwall::model::resources::Resource;
use fedwall::selector::Selector;

fn cluster_a() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster-a")
}

fn read_examples() -> FederatedSnapshot {
    read_federated(&cluster_a()).unwrap_or_else(|e| panic!("{e}"))
}

/// The snapshot as the updates a source would send for it.
fn updates(snapshot: &FederatedSnapshot) -> Vec<Update> {
    let mut updates = Vec::new();
    let mut add = |origin: Origin, objects: Vec<_>| {
        for resource in objects {
            updates.push(Update::Set {
                origin: origin.clone(),
                resource,
            });
        }
        updates.push(Update::InSync { origin });
    };
    add(
        Origin::Local,
        snapshot
            .local
            .objects
            .values()
            .map(|o| o.resource.clone())
            .collect(),
    );
    for (name, remote) in &snapshot.remotes {
        let snapshot = remote.snapshot.as_ref().expect("every remote was read");
        add(
            Origin::Remote(name.clone()),
            snapshot
                .objects
                .values()
                .map(|o| o.resource.clone())
                .collect(),
        );
    }
    updates
}

fn calc_of(updates: &[Update]) -> Calc {
    let mut calc = Calc::new(CalcConfig {
        node: "a-node-1".into(),
        cluster_name: "cluster-a".into(),
    });
    for update in updates {
        calc.apply(update);
    }
    calc
}

fn matching(calc: &Calc, selector: &str) -> Vec<String> {
    let selector = Selector::parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
    let mut names: Vec<String> = calc
        .endpoints()
        .filter(|(_, labels)| selector.matches(*labels))
        .map(|(endpoint, _)| endpoint.name.clone())
        .collect();
    names.sort();
    names
}

#[test]
fn the_examples_load_with_zero_problems() {
    let snapshot = read_examples();
    let problems: Vec<String> = snapshot
        .local
        .problems
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(problems, Vec::<String>::new());
    assert_eq!(snapshot.local.objects.len(), 22);
    let remotes: Vec<(&str, &RemoteClusterState, usize, usize)> = snapshot
        .remotes
        .iter()
        .map(|(name, remote)| {
            let read = remote.snapshot.as_ref();
            (
                name.as_str(),
                &remote.state,
                read.map_or(0, |s| s.objects.len()),
                read.map_or(0, |s| s.problems.len()),
            )
        })
        .collect();
    // cluster-b's policy and pool are not federated: 8 of its 10 objects.
    assert_eq!(
        remotes,
        [
            ("cluster-b", &RemoteClusterState::InSync, 8, 0),
            ("cluster-c", &RemoteClusterState::InSync, 5, 0)
        ]
    );
}

#[test]
fn every_example_object_converts_and_clients_of_every_cluster_match() {
    let calc = calc_of(&updates(&read_examples()));
    let problems: Vec<String> = calc.problems().map(|p| format!("{p:?}")).collect();
    assert_eq!(problems, Vec::<String>::new());
    assert_eq!(calc.policies().count(), 3);
    assert_eq!(calc.endpoints().count(), 14);
    assert_eq!(
        matching(&calc, "app == 'client'"),
        [
            "a-node-1/k8s/shop.client-1/eth0",
            "cluster-b/b-node-1/k8s/shop.client-b1/eth0",
            "cluster-b/b-node-1/k8s/shop.client-b2/eth0",
            "cluster-c/c-node-1/k8s/shop.client-c1/eth0",
        ]
    );
    assert_eq!(
        matching(&calc, "role == 'node'"),
        ["a-node-1/a-node-1-eth0", "cluster-c/c-node-1/c-node-1-eth0"]
    );
}

#[test]
fn every_example_object_written_as_a_manifest_reads_back_the_same() {
    for update in updates(&read_examples()) {
        let Update::Set { resource, .. } = update else {
            continue;
        };
        let text = resource
            .to_manifest()
            .unwrap_or_else(|e| panic!("{}: {e}", resource.key()));
        let value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let read = Resource::from_yaml(value).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(read, resource, "{text}");
        // It starts with apiVersion and kind: the one-pass reading gives the same.
        assert_eq!(Resource::from_yaml_text(&text), Some(resource), "{text}");
    }
}

#[test]
fn the_watching_source_delivers_the_same_federation() {
    let (sender, receiver) = mpsc::channel();
    let _source =
        FederatedFileSource::spawn(cluster_a(), sender, None).unwrap_or_else(|e| panic!("{e}"));
    let mut received = Vec::new();
    let mut in_sync = std::collections::BTreeSet::new();
    while in_sync.len() < 3 {
        let update = receiver
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("only {in_sync:?} in sync after 10 s: {e}"));
        if let Update::InSync { origin } = &update {
            in_sync.insert(origin.clone());
        }
        received.push(update);
    }
    let watched = calc_of(&received);
    let read = calc_of(&updates(&read_examples()));
    let names = |calc: &Calc| matching(calc, "all()");
    assert_eq!(names(&watched), names(&read));
    assert!(watched.in_sync());
}
