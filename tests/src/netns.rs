//! Network namespaces and veth links for tests, created with iproute2 and removed on drop
//! (also when the test panics). Names are unique per process; namespaces left behind by a
//! killed test run are swept the next time a namespace is made.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    process::Command,
    sync::{
        Once,
        atomic::{AtomicU32, Ordering},
    },
};

const PREFIX: &str = "fwt-";

/// A network namespace named `fwt-<pid>-<n>`, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Makes a new namespace with its loopback up.
    pub fn new() -> NetNs {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_stale_namespaces);
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run_checked(Command::new("ip").args(["netns", "add", &name]), &name);
        let ns = NetNs { name };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace, panics unless it succeeds, returns its stdout.
    pub fn run(&self, argv: &[&str]) -> String {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).args(argv);
        run_checked(&mut command, &self.name)
    }

    /// Runs `f` on a thread that has entered this namespace (netlink and bpf link calls
    /// act on the calling thread's namespace), and returns its result.
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = format!("/var/run/netns/{}", self.name);
        let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns on a valid namespace fd affects only this thread.
                    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(
                        rc,
                        0,
                        "setns into {}: {}",
                        self.name,
                        std::io::Error::last_os_error()
                    );
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// The index of interface `ifname` inside this namespace.
    pub fn ifindex(&self, ifname: &str) -> u32 {
        let path = format!("/sys/class/net/{ifname}/ifindex");
        // /sys shows the namespace that mounted it, so read it from inside.
        let text = self.run(&["cat", &path]);
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("ifindex of {ifname} in {}: {text:?}: {e}", self.name))
    }
}

impl Default for NetNs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace also deletes the veth ends inside it (and their peers).
        let status = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("warning: could not delete netns {}: {status:?}", self.name);
        }
    }
}

/// One end of a veth link: its namespace, interface name and addresses (CIDR notation).
#[derive(Clone, Copy, Debug)]
pub struct End<'a> {
    pub ns: &'a NetNs,
    pub ifname: &'a str,
    pub addrs: &'a [&'a str],
}

/// Connects two namespaces with a veth pair, assigns the addresses (IPv6 without duplicate
/// address detection, so they are usable at once) and brings both ends up.
pub fn veth(a: End<'_>, b: End<'_>) {
    // Create in a's namespace, then move the peer: `ip link add … netns` for both ends at
    // once is not supported by iproute2 6.1.
    a.ns.run(&[
        "ip", "link", "add", a.ifname, "type", "veth", "peer", "name", b.ifname,
    ]);
    a.ns.run(&["ip", "link", "set", b.ifname, "netns", b.ns.name()]);
    for end in [a, b] {
        for addr in end.addrs {
            let mut argv = vec!["ip", "addr", "add", addr, "dev", end.ifname];
            if addr.contains(':') {
                argv.push("nodad");
            }
            end.ns.run(&argv);
        }
        end.ns.run(&["ip", "link", "set", end.ifname, "up"]);
    }
}

/// The usual T2 shape: a "node" namespace whose `veth-pod` (192.0.2.1, 2001:db8::1) leads
/// to a "pod" namespace's `eth0` (192.0.2.2, 2001:db8::2).
pub struct PodOnNode {
    pub node: NetNs,
    pub pod: NetNs,
}

pub fn pod_on_node() -> PodOnNode {
    let node = NetNs::new();
    let pod = NetNs::new();
    veth(
        End {
            ns: &node,
            ifname: "veth-pod",
            addrs: &["192.0.2.1/24", "2001:db8::1/64"],
        },
        End {
            ns: &pod,
            ifname: "eth0",
            addrs: &["192.0.2.2/24", "2001:db8::2/64"],
        },
    );
    PodOnNode { node, pod }
}

/// Runs `command` (about namespace `ns`), panics with its output unless it succeeds, and
/// returns its stdout.
fn run_checked(command: &mut Command, ns: &str) -> String {
    let output = command.output().unwrap_or_else(|e| {
        panic!("cannot run {command:?} (is iproute2 installed? ./x installs it): {e}")
    });
    assert!(
        output.status.success(),
        "{command:?} for netns {ns} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Deletes `fwt-<pid>-*` namespaces whose process is gone (a test run killed mid-way).
fn sweep_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}
