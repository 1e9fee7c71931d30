//! A private bpffs mount per test: pins under /sys/fs/bpf are invisible inside
//! `ip netns exec` (it remounts /sys), and a private mount keeps tests from seeing each
//! other's (or a real agent's) pins.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

/// A bpffs mounted on a fresh directory under the system temp dir; unmounted and removed
/// on drop, which also releases every pin inside it.
#[derive(Debug)]
pub struct Bpffs {
    dir: PathBuf,
}

impl Bpffs {
    pub fn mount() -> Bpffs {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fedwall-bpffs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let target = c_path(&dir);
        // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount bpffs on {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
        Bpffs { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The pin root fedwall is told to use inside this mount.
    pub fn pin_root(&self) -> PathBuf {
        self.dir.join("fedwall")
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let target = c_path(&self.dir);
        // SAFETY: target is a valid NUL-terminated path.
        let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            eprintln!(
                "warning: umount {}: {}",
                self.dir.display(),
                std::io::Error::last_os_error()
            );
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes())
        .unwrap_or_else(|e| panic!("path {}: {e}", path.display()))
}
