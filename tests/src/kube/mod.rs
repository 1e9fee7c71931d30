//! Tier T3's real Kubernetes control planes: per cluster an etcd, a kube-apiserver v1.20.2
//! with TLS and Node,RBAC authorization, and a kube-controller-manager, all on loopback
//! ports and stopped on drop; helpers to make Namespaces, Nodes, "running" Pods and
//! least-privilege ServiceAccounts with their kubeconfigs. The binaries come from
//! `tests/kube/provision.sh` (built once per machine; `cargo xtask test` runs it and names
//! the result in [`KUBE_BIN_ENV`]). The API stays blocking: [`block_on`] runs kube-rs
//! calls on one runtime shared by every cluster of the process.

mod apply;
mod cluster;
mod forward;
mod pki;
mod process;

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

pub use apply::apply_yaml;
pub use cluster::{Access, Cluster, RunningPod, client_for};
pub use forward::Forward;

/// Names the directory holding `kube-apiserver`, `kube-controller-manager` and `etcd`; set by
/// `cargo xtask test` once `tests/kube/provision.sh` succeeded.
pub const KUBE_BIN_ENV: &str = "FEDWALL_KUBE_BIN";
/// Names the log of a provisioning that failed; set by `cargo xtask test` instead of
/// [`KUBE_BIN_ENV`], so the T3 tests fail with its end rather than skip.
pub const PROVISION_LOG_ENV: &str = "FEDWALL_KUBE_PROVISION_LOG";

/// The directory of the provisioned binaries. Panics — the T3 tests fail, they do not skip —
/// when provisioning failed (with the end of its log) or when there is no complete build.
pub fn binaries() -> PathBuf {
    if let Some(dir) = std::env::var_os(KUBE_BIN_ENV) {
        return PathBuf::from(dir);
    }
    if let Some(log) = std::env::var_os(PROVISION_LOG_ENV) {
        let log = PathBuf::from(log);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        panic!(
            "provisioning the T3 API servers failed ({}); its last lines:\n{tail}",
            log.display()
        );
    }
    // Run directly (cargo test): use a complete build if the machine has one, never build.
    let script = provision_script();
    let output = Command::new("bash")
        .arg(&script)
        .arg("--check")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    if !output.status.success() {
        panic!(
            "no T3 API server build on this machine: run `cargo xtask test` or `{}` as root \
             (about 6-8 min once); {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// `tests/kube/provision.sh`, which builds and caches the binaries.
pub fn provision_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kube/provision.sh")
}

/// Runs `future` to completion on the harness's runtime. Its worker threads keep the
/// clients' connections alive between calls, so a client may be used across many calls.
pub fn block_on<F: Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("kube-harness")
                .enable_all()
                .build()
                .expect("build the kube harness's tokio runtime")
        })
        .block_on(future)
}
