//! T0: `fedwall eval` over file datastores, local and remote, as calicoq users expect it.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Dirs(PathBuf);

impl Dirs {
    fn new(test: &str) -> Dirs {
        let root = std::env::temp_dir().join(format!("fedwall-eval-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for sub in ["a", "b"] {
            std::fs::create_dir_all(root.join(sub)).expect("create test dir");
        }
        Dirs(root)
    }

    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.0.join(rel), text).expect("write manifest");
    }

    fn path(&self, rel: &str) -> String {
        self.0.join(rel).to_string_lossy().into_owned()
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pod(name: &str, app: &str, ip: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{app: {app}}}}}\n\
         spec: {{nodeName: n1}}\nstatus: {{phase: Running, podIP: {ip}}}\n"
    )
}

fn eval(dir: &Path, selector: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fedwall"))
        // The datastore's answer, even if an agent runs on this machine.
        .args(["eval", selector, "--no-agent", "--datastore"])
        .arg(format!("file:{}", dir.display()))
        .args(extra)
        .env_remove("FEDWALL_CLUSTER_NAME")
        .output()
        .expect("run fedwall")
}

fn federation(test: &str) -> Dirs {
    let dirs = Dirs::new(test);
    dirs.write(
        "a/pods.yaml",
        &(pod("web", "web", "10.0.0.2") + &pod("client", "client", "10.0.0.3")),
    );
    dirs.write(
        "a/remotes.yaml",
        "apiVersion: fedwall.io/v1alpha1\nkind: RemoteClusterConfiguration\nmetadata: {name: west}\n\
         spec: {datastoreType: file, path: ../b}\n---\n\
         apiVersion: fedwall.io/v1alpha1\nkind: RemoteClusterConfiguration\nmetadata: {name: gone}\n\
         spec: {datastoreType: file, path: ../missing}\n",
    );
    dirs.write(
        "b/pods.yaml",
        &(pod("c1", "client", "10.1.0.3") + &pod("db", "db", "10.1.0.4")),
    );
    dirs
}

#[test]
fn eval_lists_local_and_remote_matches_sorted_and_reports_unreachable_remotes() {
    let dirs = federation("table");
    let output = eval(Path::new(&dirs.path("a")), "app == 'client'", &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stdout,
        "Endpoints matching selector app == \"client\":\n  \
         Workload endpoint n1/k8s/shop.client/eth0\n  \
         Workload endpoint west/n1/k8s/shop.c1/eth0\n"
    );
    assert!(
        stderr.starts_with(
            "The following problems were encountered connecting to the remote clusters which \
             may have resulted in incomplete data:\n- RemoteClusterConfiguration(gone): "
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("missing"),
        "the reason names the directory: {stderr}"
    );
    assert_eq!(output.status.code(), Some(1), "incomplete data exits 1");
}

#[test]
fn eval_selects_by_cluster_and_exits_0_when_every_cluster_was_read() {
    let dirs = federation("cluster");
    // Drop the broken remote: everything is readable.
    dirs.write(
        "a/remotes.yaml",
        "apiVersion: fedwall.io/v1alpha1\nkind: RemoteClusterConfiguration\nmetadata: {name: west}\n\
         spec: {datastoreType: file, path: ../b}\n",
    );
    let output = eval(
        Path::new(&dirs.path("a")),
        "fedwall.io/cluster == 'west'",
        &["-o", "json"],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    let names: Vec<&str> = json["endpoints"]
        .as_array()
        .expect("endpoints array")
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["west/n1/k8s/shop.c1/eth0", "west/n1/k8s/shop.db/eth0"]
    );
    assert_eq!(json["endpoints"][0]["addresses"][0], "10.1.0.3");
    assert_eq!(json["problems"].as_array().map(Vec::len), Some(0));

    let local = eval(
        Path::new(&dirs.path("a")),
        "fedwall.io/cluster == 'east'",
        &["--cluster-name", "east"],
    );
    assert_eq!(
        String::from_utf8_lossy(&local.stdout).lines().count(),
        3,
        "heading plus the two local pods"
    );
}

#[test]
fn an_invalid_selector_names_the_position_and_what_was_expected() {
    let dirs = federation("bad-selector");
    let output = eval(Path::new(&dirs.path("a")), "app = 'x'", &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("selector \"app = 'x'\"") && stderr.contains('4'),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}
