//! `cargo xtask bench nat`: NAT-outgoing through BPF_PROG_TEST_RUN (needs root), built in
//! release mode since it creates 100,000 mappings from userspace.

use std::path::Path;
use std::process::Command;

/// The command that runs the NAT benchmark.
pub fn command(root: &Path) -> Command {
    let mut command = super::cargo(root, &["run", "--release", "-q", "-p", "fedwall-tests"]);
    command.args(["--bin", "fedwall-bench-nat"]);
    command
}
