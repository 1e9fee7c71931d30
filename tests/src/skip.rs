//! Skipping a test that needs root, so that it shows up as skipped in `./x test`'s summary
//! instead of silently passing.

/// The environment variable naming the file where skipped tests are recorded; set by
/// `cargo xtask test`, which counts its lines.
pub const SKIP_LOG_ENV: &str = "FEDWALL_SKIP_LOG";

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Records that `test` was skipped and why.
pub fn record_skip(test: &str, reason: &str) {
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        use std::io::Write as _;
        let line = format!("{test}: {reason}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!(
                "warning: cannot record the skip in {}: {e}",
                path.to_string_lossy()
            );
        }
    }
}

/// Returns from the calling test (recording a skip) unless the process runs as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::skip::is_root() {
            $crate::skip::record_skip(
                // libtest names each test's thread after the test.
                std::thread::current().name().unwrap_or(module_path!()),
                "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN); run ./x test as root",
            );
            return;
        }
    };
}
