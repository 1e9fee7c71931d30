//! `cargo xtask bench <name>`: the project's benchmarks. Each prints `BENCH <name> <value>
//! <unit>` lines and a readable table with its targets; none is a test, and none fails
//! the build on a missed target (the table says MISSED).

use std::path::Path;
use std::process::ExitCode;

use clap::ValueEnum;

use crate::{cargo, step};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Bench {
    /// Calc at 100,000 remote endpoints × 1,000 selectors: initial match, relabel p99, RSS.
    Calc,
    /// The policy datapath through BPF_PROG_TEST_RUN (needs root): per-packet cost by rule
    /// count and set size, and applying set members from userspace.
    Datapath,
    /// NAT-outgoing through BPF_PROG_TEST_RUN (needs root): established translation against
    /// the conntrack lookup alone, new mappings, 100,000 mappings held.
    Nat,
}

pub fn run(root: &Path, bench: Bench) -> anyhow::Result<ExitCode> {
    let ok = match bench {
        Bench::Calc => step(
            "bench calc (release build)",
            cargo(
                root,
                &["bench", "--quiet", "-p", "fedwall", "--bench", "calc"],
            ),
        ),
        // Release build: applying set members is userspace work worth measuring optimised.
        Bench::Datapath => step(
            "bench datapath (release build)",
            cargo(
                root,
                &[
                    "run",
                    "--release",
                    "-q",
                    "-p",
                    "fedwall-tests",
                    "--bin",
                    "fedwall-bench",
                    "--",
                    "datapath",
                ],
            ),
        ),
        Bench::Nat => step("bench nat (release build)", crate::bench_nat::command(root)),
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
