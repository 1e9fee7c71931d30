//! T0: `fedwall why` over the examples' file datastore: which rule decides a flow at each
//! local end, the exit status scripts rely on, and the errors that say what is missing.

use std::process::{Command, Output};

/// Asks about a TCP flow on node a-node-1 of examples/cluster-a, from the datastore (the
/// socket given is one where no agent can answer).
fn why(source: &str, destination: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedwall"))
        .args(["why", source, destination])
        .args(["--socket", "/nonexistent/fedwall.sock"])
        .arg(format!(
            "--datastore=file:{}/../examples/cluster-a",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args(extra)
        .env_remove("FEDWALL_NODE_NAME")
        .env_remove("FEDWALL_CLUSTER_NAME")
        .output()
        .expect("run fedwall why")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn a_remote_client_reaching_web_is_allowed_by_the_web_policy() {
    let output = why(
        "10.20.0.11",
        "10.10.0.11",
        &["--port", "8080", "--node", "a-node-1"],
    );
    let text = text(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("tcp 10.20.0.11 → 10.10.0.11:8080: allowed"),
        "{text}"
    );
    assert!(text.contains("(remote cluster cluster-b)"), "{text}");
    assert!(
        text.contains("ingress of a-node-1/k8s/shop.web-1/eth0: allowed by NetworkPolicy(shop/allow-clients-to-web)/ingress/0"),
        "{text}"
    );
}

#[test]
fn a_remote_pod_reaching_a_database_is_denied_by_the_global_policy() {
    let output = why(
        "10.20.0.11",
        "10.10.0.31",
        &["--port", "5432", "--node", "a-node-1"],
    );
    let text = text(&output);
    assert_eq!(output.status.code(), Some(1), "denied exits 1: {text}");
    assert!(
        text.contains("denied by GlobalNetworkPolicy(databases-from-backends)/ingress/0"),
        "{text}"
    );
}

#[test]
fn the_wrong_port_falls_to_the_default_deny_and_json_says_so() {
    let output = why(
        "10.20.0.11",
        "10.10.0.11",
        &["--port", "9999", "--node", "a-node-1", "-o", "json"],
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(report["allowed"], false, "{report}");
    assert_eq!(
        report["steps"][0]["endpoint"],
        "a-node-1/k8s/shop.web-1/eth0"
    );
    assert!(
        report["steps"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("none of their rules matched")),
        "{report}"
    );
}

#[test]
fn without_an_agent_or_a_node_the_error_says_what_to_pass() {
    let output = why("10.20.0.11", "10.10.0.11", &["--port", "8080"]);
    let text = text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("--node"), "{text}");
    let output = why("10.20.0.11", "10.10.0.11", &[]);
    assert!(!output.status.success());
    assert!(text_of_missing_port(&output), "{}", self::text(&output));
}

fn text_of_missing_port(output: &Output) -> bool {
    String::from_utf8_lossy(&output.stderr).contains("--port")
}

#[test]
fn no_agent_answers_from_the_datastore_without_asking_the_socket() {
    // Something listens on the socket but never answers: asking it would wait for the
    // read timeout and fail.
    let dir = std::env::temp_dir().join(format!("fedwall-why-no-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let socket = dir.join("agent.sock");
    let _ = std::fs::remove_file(&socket);
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let started = std::time::Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_fedwall"))
        .args(["why", "10.20.0.11", "10.10.0.11", "--port", "8080"])
        .args(["--node", "a-node-1", "--no-agent", "--socket"])
        .arg(&socket)
        .arg(format!(
            "--datastore=file:{}/../examples/cluster-a",
            env!("CARGO_MANIFEST_DIR")
        ))
        .env_remove("FEDWALL_CLUSTER_NAME")
        .output()
        .expect("run fedwall why");
    let _ = std::fs::remove_dir_all(&dir);
    let text = text(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("tcp 10.20.0.11 → 10.10.0.11:8080: allowed"),
        "{text}"
    );
    assert!(!text.contains("answered by the agent"), "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the socket was asked"
    );
}

#[test]
fn no_agent_without_a_datastore_says_what_is_missing() {
    let output = Command::new(env!("CARGO_BIN_EXE_fedwall"))
        .args([
            "why",
            "10.20.0.11",
            "10.10.0.11",
            "--port",
            "8080",
            "--no-agent",
        ])
        .env_remove("FEDWALL_DATASTORE")
        .output()
        .expect("run fedwall why");
    let text = text(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("with --no-agent the answer comes from --datastore")
            && text.contains("pass --datastore"),
        "{text}"
    );
}
