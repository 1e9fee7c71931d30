//! The control plane's processes and their private state: each cluster gets a directory of
//! its own (certificates, etcd's data, logs) and loopback ports nobody else holds; each
//! daemon runs in a process group of its own and is stopped — it and nothing else — when
//! its guard drops. What a killed test run left behind is swept the next time a cluster
//! starts: the directories of test processes that no longer exist, and the daemons whose
//! command line names such a directory.

use std::{
    fs::File,
    net::TcpListener,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Once,
        atomic::{AtomicU32, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

/// Where the clusters' directories live: tmpfs when the machine has one at /dev/shm, so
/// etcd's fsyncs cost nothing.
fn state_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    };
    base.join("fedwall-kube")
}

/// A directory `<root>/<pid>-<name>-<n>`, removed on drop.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    pub fn create(name: &str) -> StateDir {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_stale);
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = state_root().join(format!(
            "{}-{name}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        StateDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("warning: cannot remove {}: {e}", self.path.display());
        }
    }
}

/// Removes the directories of test processes that are gone, after killing the daemons
/// still running from them (a process counts as theirs only if its command line names the
/// directory, so a recycled pid is never hit).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(state_root()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let dir = entry.path();
        for pid in processes_naming(&dir) {
            // SAFETY: kill has no memory preconditions; the pid names a live process whose
            // command line refers to this stale directory.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn processes_naming(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle))
        })
        .collect()
}

/// `count` distinct loopback TCP ports that were free a moment ago, below the kernel's
/// ephemeral range so that no outgoing connection takes one before its daemon binds it.
pub fn free_ports(count: usize) -> Vec<u16> {
    const LOW: u16 = 20_000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let span = u32::from(ephemeral_start.saturating_sub(LOW).max(1));
    // Start somewhere different in every process and call, so parallel runs rarely probe
    // the same ports; the listeners are held until all are picked, so they are distinct.
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id()
        .wrapping_mul(7919)
        .wrapping_add(CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(104_729))
        .wrapping_add(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |now| now.subsec_nanos()),
        );
    let mut held = Vec::new();
    for offset in 0..span {
        if held.len() == count {
            break;
        }
        let port = LOW + ((seed.wrapping_add(offset.wrapping_mul(37))) % span) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    assert_eq!(
        held.len(),
        count,
        "no {count} free loopback ports below {ephemeral_start}"
    );
    held.iter()
        .map(|listener| {
            listener
                .local_addr()
                .expect("a bound listener's address")
                .port()
        })
        .collect()
}

/// A daemon of the control plane, its output in `<dir>/<name>.log`, stopped on drop.
#[derive(Debug)]
pub struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    pub fn spawn(name: &'static str, binary: &Path, args: &[String], dir: &Path) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        // Appended to: a daemon started again keeps the story of its first run.
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("clone {}: {e}", log.display()));
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own group: a signal to the group reaches it and anything it forked, and
            // never the test process.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({}): {e}", binary.display()));
        Daemon { name, child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics, with why it stopped, if the daemon has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); from {}:\n{}",
                self.name,
                self.log.display(),
                self.log_excerpt()
            );
        }
    }

    /// The log from its first fatal line (klog `F…`, a Go `panic:`, a cobra `Error:`) on,
    /// before the goroutine dumps that follow it; or its last lines.
    pub fn log_excerpt(&self) -> String {
        const LINES: usize = 25;
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let is_fatal = |line: &&str| {
            line.starts_with("panic:")
                || line.starts_with("Error:")
                || (line.starts_with('F') && line[1..].starts_with(|c: char| c.is_ascii_digit()))
        };
        let start = lines
            .iter()
            .position(is_fatal)
            .unwrap_or(lines.len().saturating_sub(LINES));
        lines[start..lines.len().min(start + LINES)].join("\n")
    }
}

impl Drop for Daemon {
    /// SIGKILL to its process group, then reaps it: nothing it leaves is kept (its files go
    /// with the cluster's directory; an apiserver's data lives in etcd), so there is no
    /// graceful shutdown to wait for — an apiserver draining its watches takes seconds.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let group = i32::try_from(self.child.id()).expect("a pid fits in i32");
        // SAFETY: kill has no memory preconditions; the group is the one this guard's child
        // leads (process_group(0)), and the child is not reaped yet, so its id is not reused.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
