//! `cargo xtask bench <name>`: the project's benchmarks. Each prints `BENCH <name> <value>
//! <unit>` lines and a readable table with its targets; none is a test, and none fails
//! the build on a missed target (the table says MISSED).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::ValueEnum;

use crate::{cargo, step};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Bench {
    /// The `fedwall agent` process (needs root) on a file datastore of 100,000 remote
    /// endpoints in 3 clusters and 1,000 policies: start to ready, remote relabel to kernel
    /// p99, peak RSS.
    Agent,
    /// Calc at 100,000 remote endpoints × 1,000 selectors: initial match, relabel p99, RSS.
    Calc,
    /// The policy datapath through BPF_PROG_TEST_RUN (needs root): per-packet cost by rule
    /// count and set size, and applying set members from userspace.
    Datapath,
    /// NAT-outgoing through BPF_PROG_TEST_RUN (needs root): established translation against
    /// the conntrack lookup alone, new mappings, 100,000 mappings held.
    Nat,
}

/// `cargo run` of a release binary of the tests crate, its arguments to follow.
fn tests_bin(root: &Path, bin: &str) -> Command {
    let mut command = cargo(root, &["run", "--release", "-q", "-p", "fedwall-tests"]);
    command.args(["--bin", bin, "--"]);
    command
}

/// Where cargo puts what it builds for this workspace (a relative CARGO_TARGET_DIR is
/// relative to the root, where xtask runs cargo).
fn target_dir(root: &Path) -> PathBuf {
    root.join(std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into()))
}

pub fn run(root: &Path, bench: Bench) -> anyhow::Result<ExitCode> {
    let ok = match bench {
        // The real binary, optimised as it ships, run by a driver in the tests crate.
        Bench::Agent => {
            step(
                "build fedwall (release)",
                cargo(
                    root,
                    &[
                        "build",
                        "--release",
                        "-q",
                        "-p",
                        "fedwall",
                        "--bin",
                        "fedwall",
                    ],
                ),
            ) && step("bench agent (release build)", {
                let mut command = tests_bin(root, "fedwall-bench-agent");
                command.arg(target_dir(root).join("release").join("fedwall"));
                command
            })
        }
        Bench::Calc => step(
            "bench calc (release build)",
            cargo(
                root,
                &["bench", "--quiet", "-p", "fedwall", "--bench", "calc"],
            ),
        ),
        // Release build: applying set members is userspace work worth measuring optimised.
        Bench::Datapath => step("bench datapath (release build)", {
            let mut command = tests_bin(root, "fedwall-bench");
            command.arg("datapath");
            command
        }),
        Bench::Nat => step("bench nat (release build)", crate::bench_nat::command(root)),
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
