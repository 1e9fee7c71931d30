//! Helpers for the datastore's tests: a scratch directory removed when dropped, manifests,
//! and waiting for updates without fixed sleeps.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use crate::datastore::Update;

/// How long a test waits for an update that should come well within a second: long enough
/// for a loaded machine, short enough to fail rather than hang.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The next update, or a panic naming what was awaited.
pub fn next(updates: &Receiver<Update>, awaited: &str) -> Update {
    updates
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|e| panic!("no update within {PATIENCE:?} while awaiting {awaited}: {e}"))
}

/// Every update up to and including the first that `done` accepts.
pub fn until(
    updates: &Receiver<Update>,
    awaited: &str,
    done: impl Fn(&Update) -> bool,
) -> Vec<Update> {
    let mut seen = Vec::new();
    loop {
        let update = next(updates, awaited);
        let finished = done(&update);
        seen.push(update);
        if finished {
            return seen;
        }
    }
}

pub fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

/// A pod in namespace `shop` with an `app` label.
pub fn pod(name: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: shop\n  \
         labels: {{app: {app}}}\nspec: {{nodeName: n1}}\nstatus: {{phase: Running, podIP: 192.0.2.1}}\n"
    )
}

pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new() -> TestDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "fedwall-datastore-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover of an earlier run with the same process id would mix into the test.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `text` to `name` (a path relative to the directory), creating parents.
    pub fn write(&self, name: &str, text: &str) {
        self.write_bytes(name, text.as_bytes());
    }

    /// Writes through a hidden temporary file renamed into place, as careful editors do, so
    /// that a watcher never reads a half-written file (which a test would see as a flake).
    pub fn write_bytes(&self, name: &str, bytes: &[u8]) {
        let path = self.path.join(name);
        let parent = path.parent().unwrap_or(&self.path);
        fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        let temporary = parent.join(".fedwall-test-write.tmp");
        fs::write(&temporary, bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", temporary.display()));
        self.rename_path(&temporary, &path);
    }

    pub fn remove(&self, name: &str) {
        let path = self.path.join(name);
        fs::remove_file(&path).unwrap_or_else(|e| panic!("cannot remove {}: {e}", path.display()));
    }

    pub fn rename(&self, from: &str, to: &str) {
        self.rename_path(&self.path.join(from), &self.path.join(to));
    }

    fn rename_path(&self, from: &Path, to: &Path) {
        fs::rename(from, to).unwrap_or_else(|e| {
            panic!("cannot rename {} to {}: {e}", from.display(), to.display())
        });
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
