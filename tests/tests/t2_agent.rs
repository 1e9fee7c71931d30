//! T2 end to end: the real `fedwall agent` process on a node of network namespaces, with
//! file datastores for the local cluster and remote ones (tests/src/site.rs), and real TCP
//! between pods, a remote cluster and an external host. The demo's scenario, then what a
//! platform engineer changes and breaks: remote pods added, removed and relabelled,
//! policies removed and added, a remote directory that cannot be read, a pod whose veth
//! comes after its object, the agent killed under traffic and restarted, stopped, and
//! cleaned up.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use fedwall_tests::demo::{self, Expect, Flow, build_site, check, relabel_batch};
use fedwall_tests::require_root;
use fedwall_tests::site::{LOCAL_CLUSTER, Outcome, Place, Site, fedwall_binary};

fn web() -> Place {
    Place::pod("cluster-a/shop/web-1")
}

fn client_b1() -> Place {
    Place::pod("cluster-b/shop/client-b1")
}

fn batch_b2() -> Place {
    Place::pod("cluster-b/shop/batch-b2")
}

fn allowed(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Allowed { .. })
}

/// Asserts the flows, printing the whole table when one does not match.
fn assert_flows(site: &Site, flows: &[Flow], when: &str) {
    let mut table = Vec::new();
    let ok = check(site, flows, &mut table).expect("send the flows");
    assert!(
        ok,
        "{when}: flows did not match:\n{}",
        String::from_utf8_lossy(&table)
    );
}

fn flow(from: Place, to: Place, port: u16, expect: Expect) -> Flow {
    Flow {
        from,
        to,
        port,
        expect,
        why: "",
    }
}

fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_demo_scenario_observes_what_the_policies_say() {
    require_root!();
    let mut out = Vec::new();
    let result = demo::run(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(matches!(result, Ok(true)), "demo: {result:?}\n{text}");
    assert!(
        text.contains("cluster-b/b-node-1/k8s/shop.client-b1/eth0"),
        "{text}"
    );
}

#[test]
fn remote_pods_and_policies_coming_and_going_change_enforcement() {
    require_root!();
    let mut site = build_site().expect("site");
    let _agent = site.start_agent().expect("agent");
    assert!(allowed(&site.tcp(&client_b1(), &web(), 8080)));

    // A new remote client: allowed once its cluster's YAML lists it.
    site.add_remote_pod("cluster-b/shop/client-b3", Ipv4Addr::new(10, 20, 0, 13));
    let client_b3 = Place::pod("cluster-b/shop/client-b3");
    assert!(!allowed(&site.tcp(&client_b3, &web(), 8080)), "unknown yet");
    site.write(
        "cluster-b",
        "more-pods.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: client-b3, namespace: shop, labels: {app: client}}\n\
         spec: {nodeName: b-node-1}\nstatus: {phase: Running, podIP: 10.20.0.13}\n",
    )
    .expect("write");
    site.await_matches("app == 'client'", 3)
        .expect("client-b3 known");
    assert_flows(
        &site,
        &[flow(
            client_b3.clone(),
            web(),
            8080,
            Expect::Allowed { nat: false },
        )],
        "remote pod added",
    );

    // Deleted from its cluster: its address leaves the set, new connections are denied.
    site.remove("cluster-b", "more-pods.yaml").expect("remove");
    site.await_matches("app == 'client'", 2)
        .expect("client-b3 gone");
    assert_flows(
        &site,
        &[flow(client_b3, web(), 8080, Expect::Denied)],
        "remote pod deleted",
    );

    // Relabelled: batch-b2 becomes a client, then stops being one.
    relabel_batch(&site, "client").expect("relabel");
    site.await_matches("app == 'client'", 3)
        .expect("batch-b2 a client");
    assert!(allowed(&site.tcp(&batch_b2(), &web(), 8080)));
    relabel_batch(&site, "batch").expect("relabel back");
    site.await_matches("app == 'client'", 2)
        .expect("batch-b2 no client");
    assert!(!allowed(&site.tcp(&batch_b2(), &web(), 8080)));

    // The web policy removed: web-1 has no ingress policy and takes anything; back: denied.
    let policies =
        std::fs::read_to_string(site.datastore().join(LOCAL_CLUSTER).join("policies.yaml"))
            .expect("read cluster-a's policies");
    let (before, after) = policies
        .split_once("# Web pods take HTTP only")
        .expect("the web policy in cluster-a's policies.yaml");
    let (_, rest) = after.split_once("---").expect("the policy's end");
    site.write(LOCAL_CLUSTER, "policies.yaml", &format!("{before}{rest}"))
        .expect("write");
    eventually("web-1 open without its policy", || {
        allowed(&site.tcp(&batch_b2(), &web(), 8080))
    });
    site.write(LOCAL_CLUSTER, "policies.yaml", &policies)
        .expect("write");
    eventually("web-1 closed again by its policy", || {
        !allowed(&site.tcp(&batch_b2(), &web(), 8080))
    });
    assert!(allowed(&site.tcp(&client_b1(), &web(), 8080)));
}

#[test]
fn a_broken_remote_cluster_is_reported_while_the_rest_keeps_working() {
    require_root!();
    let site = build_site().expect("site");
    site.write(
        LOCAL_CLUSTER,
        "cluster-c.yaml",
        "apiVersion: fedwall.io/v1alpha1\nkind: RemoteClusterConfiguration\n\
         metadata: {name: cluster-c}\nspec: {datastoreType: file, path: ../no-such-cluster}\n",
    )
    .expect("write");
    // A failing remote does not hold readiness back: the others are enforced.
    let _agent = site.start_agent().expect("agent");
    eventually("cluster-c ConnectionFailed in metrics", || {
        site.metric(r#"fedwall_remote_cluster_state{cluster="cluster-c",state="ConnectionFailed"}"#)
            .ok()
            .flatten()
            == Some(1.0)
    });
    assert_eq!(
        site.metric(r#"fedwall_remote_cluster_state{cluster="cluster-b",state="InSync"}"#)
            .expect("metrics"),
        Some(1.0)
    );
    let output = Command::new(fedwall_binary().expect("fedwall binary"))
        .args(["eval", "app == 'client'", "--socket"])
        .arg(site.socket())
        .output()
        .expect("run fedwall eval");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("cluster-b/b-node-1/k8s/shop.client-b1/eth0"),
        "{stdout}"
    );
    assert!(
        stderr.contains("RemoteClusterConfiguration(cluster-c)")
            && stderr.contains("no-such-cluster"),
        "the problem names the cluster and the directory: {stderr}"
    );
    assert!(allowed(&site.tcp(&client_b1(), &web(), 8080)));
    assert!(!allowed(&site.tcp(&batch_b2(), &web(), 8080)));
    // `fedwall why` asks the agent, which names the rule (and no datastore is needed).
    let output = Command::new(fedwall_binary().expect("fedwall binary"))
        .args([
            "why",
            "10.20.0.12",
            "10.10.0.11",
            "--port",
            "8080",
            "--socket",
        ])
        .arg(site.socket())
        .output()
        .expect("run fedwall why");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "denied: {text}");
    assert!(
        text.contains("ingress of a-node-1/k8s/shop.web-1/eth0: denied: policies apply and none of their rules matched"),
        "{text}"
    );
    // The kernel reported the denied SYNs; the agent drains and counts them.
    eventually("denied flow events counted", || {
        site.metric(r#"fedwall_flow_events_total{kind="denied"}"#)
            .ok()
            .flatten()
            .is_some_and(|n| n >= 1.0)
    });
    assert_eq!(
        site.metric("fedwall_local_datastore_synced")
            .expect("metrics"),
        Some(1.0)
    );
}

#[test]
fn a_pod_whose_veth_comes_later_is_enforced_once_it_appears() {
    require_root!();
    let mut site = build_site().expect("site");
    site.write(
        LOCAL_CLUSTER,
        "late-pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-2, namespace: shop, labels: {app: web}}\n\
         spec: {nodeName: a-node-1}\nstatus: {phase: Running, podIP: 10.10.0.12}\n",
    )
    .expect("write");
    let agent = site.start_agent().expect("agent");
    assert_eq!(
        site.metric("fedwall_endpoints_waiting_for_interface")
            .expect("metrics"),
        Some(1.0),
        "web-2 has no veth yet"
    );
    site.add_local_pod("cluster-a/shop/web-2", Ipv4Addr::new(10, 10, 0, 12));
    eventually("web-2 attached", || {
        site.metric("fedwall_endpoints_waiting_for_interface")
            .ok()
            .flatten()
            == Some(0.0)
    });
    let web2 = Place::pod("cluster-a/shop/web-2");
    assert!(
        !allowed(&site.tcp(&batch_b2(), &web2, 8080)),
        "web-2's policy applies"
    );
    assert!(allowed(&site.tcp(&client_b1(), &web2, 8080)));
    assert!(
        agent
            .log_text()
            .contains("endpoint waits for its interface"),
        "{}",
        agent.log_text()
    );
}

#[test]
fn the_agent_killed_under_traffic_leaves_enforcement_and_a_restart_adopts_it() {
    require_root!();
    let site = build_site().expect("site");
    let agent = site.start_agent().expect("agent");
    let mut streaming = site
        .open(&client_b1(), &web(), 8080)
        .expect("an allowed connection");
    agent.kill();
    // Nothing of the agent runs: the pinned programs and maps still decide.
    for _ in 0..20 {
        streaming
            .exchange()
            .expect("the connection survives the kill");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !allowed(&site.tcp(&batch_b2(), &web(), 8080)),
        "still denied"
    );
    assert!(allowed(&site.tcp(
        &Place::pod("cluster-a/shop/client-1"),
        &web(),
        8080
    )));

    let agent = site.start_agent().expect("a new agent");
    streaming
        .exchange()
        .expect("the connection survives the restart");
    assert!(!allowed(&site.tcp(&batch_b2(), &web(), 8080)));
    assert!(allowed(&site.tcp(&client_b1(), &web(), 8080)));
    assert!(agent.log_text().contains("ready"), "{}", agent.log_text());

    // SIGTERM: enforcement stays; --cleanup then removes every pin and attachment.
    let status = agent.stop().expect("stop");
    assert!(status.success(), "{status}");
    assert!(
        !allowed(&site.tcp(&batch_b2(), &web(), 8080)),
        "stopped, still enforced"
    );
    let output = Command::new(fedwall_binary().expect("fedwall binary"))
        .args(["agent", "--cleanup", "--pin-root"])
        .arg(site.pin_root())
        .arg("--socket")
        .arg(site.socket())
        .output()
        .expect("run --cleanup");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!site.pin_root().exists(), "the pin root is gone");
    assert!(
        allowed(&site.tcp(&batch_b2(), &web(), 8080)),
        "no program is left attached"
    );
}

#[test]
fn nat_follows_a_new_uplink_address() {
    require_root!();
    let site = build_site().expect("site");
    let _agent = site.start_agent().expect("agent");
    let client = Place::pod("cluster-a/shop/client-1");
    let ext = Place::Ext(fedwall_tests::site::EXT_ADDR);
    assert_eq!(
        site.tcp(&client, &ext, 7000),
        Outcome::Allowed {
            seen_source: fedwall_tests::site::NODE_ADDR
        }
    );
    // The agent's count (a thread of its own, once a second) reports the flow's slot as
    // the flow table's use.
    eventually("the NAT flows in /metrics", || {
        site.metric(r#"fedwall_map_entries{map="fw_nat_flows_v1"}"#)
            .ok()
            .flatten()
            .is_some_and(|used| used >= 1.0)
    });
    // Renumber the uplink, as a new DHCP lease would.
    for argv in [
        &["sysctl", "-qw", "net.ipv4.conf.up0.promote_secondaries=1"][..],
        &["ip", "addr", "add", "192.0.2.5/24", "dev", "up0"],
        &["ip", "addr", "del", "192.0.2.1/24", "dev", "up0"],
        &["ip", "route", "replace", "default", "via", "192.0.2.2"],
    ] {
        site.node.run(argv);
    }
    site.ext
        .run(&["ip", "route", "replace", "default", "via", "192.0.2.5"]);
    let renumbered = Outcome::Allowed {
        seen_source: Ipv4Addr::new(192, 0, 2, 5),
    };
    eventually("NAT to the uplink's new address", || {
        site.tcp(&client, &ext, 7000) == renumbered
    });
}
