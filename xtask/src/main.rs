//! fedwall's developer tasks, run as `cargo xtask <task>` (or `./x <task>`, which first
//! installs whatever the machine lacks).

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::Instant,
};

use anyhow::Context as _;
use clap::{Args, Parser};

mod bench;
mod bench_nat;

/// fedwall's developer tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
enum Task {
    /// Run every test tier (fmt, clippy, T0 unit, T1/T2 kernel) and print `N passed, N failed, N skipped`.
    Test(TestArgs),
    /// Check formatting and run clippy with -D warnings, userspace and eBPF in separate passes.
    Lint,
    /// fedwall's main job, no Kubernetes needed (root): namespaces for a node with pods, an
    /// external host and a remote cluster; a file datastore; the real agent; real traffic,
    /// expected against observed; a relabel that flips a flow. Exits 0 only if all matched.
    Demo,
    /// Run a benchmark; it prints `BENCH <name> <value> <unit>` lines and a table.
    Bench {
        #[arg(value_enum)]
        name: bench::Bench,
    },
}

#[derive(Debug, Args)]
struct TestArgs {
    /// Run only the tests whose name contains this text (in every tier); lint still runs
    /// unless --no-lint.
    filter: Option<String>,
    /// Skip the fmt and clippy steps.
    #[arg(long)]
    no_lint: bool,
}

/// What the steps so far amount to. A lint step counts as one check; a test binary that
/// does not build counts as one failure.
#[derive(Debug, Default)]
struct Tally {
    passed: u64,
    failed: u64,
    skipped: u64,
}

impl Tally {
    fn check(&mut self, ok: bool) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }
}

fn main() -> ExitCode {
    let task = Task::parse();
    match run(task) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> anyhow::Result<ExitCode> {
    let root = workspace_root()?;
    let mut tally = Tally::default();
    match task {
        Task::Bench { name } => return bench::run(&root, name),
        Task::Demo => return demo(&root),
        Task::Lint => lint(&root, &mut tally),
        Task::Test(args) => test(&root, &args, &mut tally)?,
    }
    println!(
        "{} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.skipped
    );
    Ok(if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest_dir = env!("CARGO_MANIFEST_DIR");
    Path::new(manifest_dir)
        .parent()
        .map(Path::to_owned)
        .with_context(|| format!("{manifest_dir} has no parent"))
}

fn cargo(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root).args(args);
    command
}

/// Runs one step, announcing it and its duration; returns whether it succeeded.
fn step(name: &str, mut command: Command) -> bool {
    println!("==> {name}");
    let started = Instant::now();
    let ok = match command.status() {
        Ok(status) => status.success(),
        Err(error) => {
            eprintln!("cannot run {command:?}: {error}");
            false
        }
    };
    println!(
        "==> {name}: {} in {:.1} s",
        if ok { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    ok
}

fn demo(root: &Path) -> anyhow::Result<ExitCode> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!(
            "the demo creates network namespaces and loads eBPF programs: run ./x demo as root"
        );
    }
    let build = cargo(
        root,
        &[
            "build",
            "-q",
            "-p",
            "fedwall",
            "--bin",
            "fedwall",
            "-p",
            "fedwall-tests",
            "--bin",
            "fedwall-demo",
        ],
    );
    if !step("build fedwall and the demo", build) {
        return Ok(ExitCode::FAILURE);
    }
    let bin = root.join("target").join("debug");
    let status = Command::new(bin.join("fedwall-demo"))
        .env("FEDWALL_BIN", bin.join("fedwall"))
        .status()
        .context("cannot run the demo")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn lint(root: &Path, tally: &mut Tally) {
    tally.check(step(
        "cargo fmt --check",
        cargo(root, &["fmt", "--all", "--check"]),
    ));
    tally.check(step(
        "clippy (userspace crates)",
        cargo(
            root,
            &[
                "clippy",
                "--workspace",
                "--exclude",
                "fedwall-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
    ));
    // The eBPF crate only builds for the BPF target, with a core built from source.
    let mut ebpf = cargo(
        root,
        &[
            "clippy",
            "--package",
            "fedwall-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--release",
            "--",
            "-D",
            "warnings",
        ],
    );
    ebpf.env("RUSTC_BOOTSTRAP", "1");
    tally.check(step("clippy (eBPF crate, bpfel-unknown-none)", ebpf));
}

fn test(root: &Path, args: &TestArgs, tally: &mut Tally) -> anyhow::Result<()> {
    if !args.no_lint {
        lint(root, tally);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("==> not root: the T1/T2 kernel tests will be skipped (run ./x test as root)");
    }
    let skip_log = root
        .join("target")
        .join(format!("xtask-skips-{}.log", std::process::id()));
    std::fs::create_dir_all(root.join("target")).context("create target/")?;
    let _ = std::fs::remove_file(&skip_log);

    let mut t0 = cargo(
        root,
        &[
            "test",
            "--no-fail-fast",
            "-p",
            "fedwall",
            "-p",
            "fedwall-common",
            "-p",
            "xtask",
        ],
    );
    let mut kernel = cargo(root, &["test", "--no-fail-fast", "-p", "fedwall-tests"]);
    kernel.env("FEDWALL_SKIP_LOG", &skip_log);
    // The agent's T2 tests run the real binary, built by the T0 step (fedwall's own tests).
    kernel.env("FEDWALL_BIN", root.join("target/debug/fedwall"));
    // Kernel state (interfaces, attachments, namespaces) is per machine: one test at a time.
    let mut kernel_args = vec!["--", "--test-threads=1"];
    let mut t0_args = vec!["--"];
    if let Some(filter) = &args.filter {
        t0_args.push(filter);
        kernel_args.push(filter);
    }
    t0.args(&t0_args);
    kernel.args(&kernel_args);
    run_tests("T0 unit tests", t0, tally)?;
    run_tests("T1/T2 kernel tests", kernel, tally)?;

    if let Ok(skips) = std::fs::read_to_string(&skip_log) {
        let skipped = skips.lines().count() as u64;
        tally.skipped += skipped;
        // A skipped test returned early and libtest counted it as passed.
        tally.passed = tally.passed.saturating_sub(skipped);
        let _ = std::fs::remove_file(&skip_log);
    }
    Ok(())
}

/// Runs `cargo test`, echoing its output, and adds libtest's `test result:` counts to the
/// tally. A run that fails without any failed test (it did not build) counts as a failure.
fn run_tests(name: &str, mut command: Command, tally: &mut Tally) -> anyhow::Result<()> {
    println!("==> {name}");
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {command:?}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(stdout).lines() {
        let line = line.context("read cargo test output")?;
        println!("{line}");
        if let Some((p, f)) = parse_test_result(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child.wait().context("wait for cargo test")?;
    if !status.success() && failed == 0 {
        failed = 1;
    }
    println!(
        "==> {name}: {passed} passed, {failed} failed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    tally.passed += passed;
    tally.failed += failed;
    Ok(())
}

/// Parses libtest's `test result: ok. 3 passed; 1 failed; 0 ignored; …` line.
fn parse_test_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let count = |label: &str| -> Option<u64> {
        rest.split(';')
            .map(str::trim)
            .find_map(|part| part.strip_suffix(label))
            .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
    };
    match (count(" passed"), count(" failed")) {
        (Some(passed), Some(failed)) => Some((passed, failed)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_test_result;

    #[test]
    fn reads_libtest_summaries() {
        assert_eq!(
            parse_test_result(
                "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"
            ),
            Some((12, 0))
        );
        assert_eq!(
            parse_test_result(
                "test result: FAILED. 2 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out"
            ),
            Some((2, 3))
        );
        assert_eq!(parse_test_result("test foo ... ok"), None);
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory as _;
        super::Task::command().debug_assert();
    }
}
