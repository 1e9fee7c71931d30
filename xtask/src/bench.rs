//! `cargo xtask bench <name>`: benchmarks, each printing `BENCH <name> <value> <unit>` lines
//! and a readable table. A benchmark is not a test: nothing here fails on a slow figure.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;

/// Runs the benchmark `name`.
pub fn bench(root: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let mut command = match name {
        // The policy datapath through BPF_PROG_TEST_RUN (needs root); release build, since
        // applying set members is userspace work.
        "datapath" => {
            let mut command =
                super::cargo(root, &["run", "--release", "-q", "-p", "fedwall-tests"]);
            command.args(["--bin", "fedwall-bench", "--", "datapath"]);
            command
        }
        "nat" => super::bench_nat::command(root),
        other => bail!("no benchmark named {other:?}; known: datapath, nat"),
    };
    let status = command.status()?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
