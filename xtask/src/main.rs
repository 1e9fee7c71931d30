//! fedwall's developer tasks, run as `cargo xtask <task>` (or `./x <task>`, which first
//! installs whatever the machine lacks).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
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
    /// Run every test tier (fmt, clippy, T0 unit, T1/T2 kernel, T3 API servers) and print
    /// `N passed, N failed, N skipped`.
    Test(TestArgs),
    /// Check formatting and run clippy with -D warnings, userspace and eBPF in separate passes.
    Lint,
    /// fedwall's main job, no Kubernetes needed (root): namespaces for a node with pods, an
    /// external host and a remote cluster; a file datastore; the real agent; real traffic,
    /// expected against observed; a relabel that flips a flow. Exits 0 only if all matched.
    Demo,
    /// Regenerate deploy/ (CRDs, agent, remote access) from the Rust types: what
    /// `fedwall manifests --out-dir deploy` writes, which the T0 tests compare deploy/ with.
    Manifests,
    /// Run a benchmark; it prints `BENCH <name> <value> <unit>` lines and a table.
    Bench {
        #[arg(value_enum)]
        name: bench::Bench,
    },
}

#[derive(Debug, Args)]
struct TestArgs {
    /// Run only the tests whose name contains this text (in every tier), or, when it starts
    /// the name of files under tests/tests (`t3_`, `t2_nat`), those files whole; lint still
    /// runs unless --no-lint.
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
        Task::Manifests => return manifests(&root),
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

fn manifests(root: &Path) -> anyhow::Result<ExitCode> {
    let deploy = root.join("deploy");
    let deploy = deploy.to_str().context("the workspace path is not UTF-8")?;
    let write = cargo(
        root,
        &[
            "run",
            "-q",
            "-p",
            "fedwall",
            "--bin",
            "fedwall",
            "--",
            "manifests",
            "--out-dir",
            deploy,
        ],
    );
    Ok(if step("fedwall manifests --out-dir deploy", write) {
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
    let is_root = unsafe { libc::geteuid() } == 0;
    if !is_root {
        println!("==> not root: the T1/T2/T3 tests will be skipped (run ./x test as root)");
    }
    let skip_log = root
        .join("target")
        .join(format!("xtask-skips-{}.log", std::process::id()));
    std::fs::create_dir_all(root.join("target")).context("create target/")?;
    let _ = std::fs::remove_file(&skip_log);

    // A filter that starts the name of test files (`t3_`, `t2_nat`) runs those files whole;
    // any other filter selects tests by name in every tier.
    let files = match &args.filter {
        Some(filter) => test_files_named(root, filter)?,
        None => Vec::new(),
    };
    let mut kernel = cargo(root, &["test", "--no-fail-fast", "-p", "fedwall-tests"]);
    for file in &files {
        kernel.args(["--test", file]);
    }
    kernel.env("FEDWALL_SKIP_LOG", &skip_log);
    // The agent's T2 tests run the real binary, built by the T0 step (fedwall's own tests).
    kernel.env("FEDWALL_BIN", root.join("target/debug/fedwall"));
    // Kernel state (interfaces, attachments, namespaces) is per machine: one test at a time.
    kernel.args(["--", "--test-threads=1"]);
    if let (true, Some(filter)) = (files.is_empty(), &args.filter) {
        kernel.arg(filter);
    }

    if files.is_empty() {
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
                "--",
            ],
        );
        t0.args(&args.filter);
        run_tests("T0 unit tests", t0, tally)?;
    } else {
        // The T0 step, which builds it otherwise, does not run.
        let build = cargo(root, &["build", "-q", "-p", "fedwall", "--bin", "fedwall"]);
        if !step("build fedwall (the agent's T2 tests run it)", build) {
            tally.failed += 1;
        }
    }
    let runs_t3 = files.is_empty() || files.iter().any(|file| file.starts_with("t3_"));
    if is_root && runs_t3 {
        match provision_t3(root)? {
            Ok(bin) => kernel.env(KUBE_BIN_ENV, bin),
            Err(log) => kernel.env(PROVISION_LOG_ENV, log),
        };
    }
    run_tests("T1/T2/T3 kernel and API-server tests", kernel, tally)?;

    if let Ok(skips) = std::fs::read_to_string(&skip_log) {
        let skipped = skips.lines().count() as u64;
        tally.skipped += skipped;
        // A skipped test returned early and libtest counted it as passed.
        tally.passed = tally.passed.saturating_sub(skipped);
        let _ = std::fs::remove_file(&skip_log);
    }
    Ok(())
}

/// The test files of the tests crate (`tests/tests/<name>.rs`) whose name starts with `prefix`.
fn test_files_named(root: &Path, prefix: &str) -> anyhow::Result<Vec<String>> {
    let dir = root.join("tests/tests");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("read {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|ext| ext == "rs")
            && let Some(stem) = path.file_stem().and_then(|stem| stem.to_str())
            && stem.starts_with(prefix)
        {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The environment variables that tell the T3 harness (tests/src/kube) where the API
/// servers are, or why there are none.
const KUBE_BIN_ENV: &str = "FEDWALL_KUBE_BIN";
const PROVISION_LOG_ENV: &str = "FEDWALL_KUBE_PROVISION_LOG";

/// Runs tests/kube/provision.sh, echoing what it says; returns the directory of the
/// binaries, or the log of a provisioning that failed (the T3 tests then fail with it).
fn provision_t3(root: &Path) -> anyhow::Result<Result<PathBuf, PathBuf>> {
    let name = "provisioning kube-apiserver v1.20.2 for T3 (cached in /var/cache/fedwall; \
                6-12 min the first time on this machine, then a check)";
    println!("==> {name}");
    let started = Instant::now();
    let log_path = root.join("target/t3-provision.log");
    let mut log = std::fs::File::create(&log_path)
        .with_context(|| format!("create {}", log_path.display()))?;
    let mut child = Command::new("bash")
        .arg(root.join("tests/kube/provision.sh"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run tests/kube/provision.sh")?;
    let stderr = child.stderr.take().context("no stderr")?;
    for line in BufReader::new(stderr).lines() {
        let line = line.context("read provision.sh's output")?;
        println!("{line}");
        writeln!(log, "{line}").with_context(|| format!("write {}", log_path.display()))?;
    }
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .context("no stdout")?
        .read_to_string(&mut stdout)
        .context("read provision.sh's result")?;
    let ok = child.wait().context("wait for provision.sh")?.success();
    println!(
        "==> {name}: {} in {:.1} s",
        if ok {
            "ok"
        } else {
            "FAILED (the T3 tests will fail with its log)"
        },
        started.elapsed().as_secs_f64()
    );
    Ok(if ok {
        Ok(PathBuf::from(stdout.trim()))
    } else {
        Err(log_path)
    })
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
    fn a_tier_prefix_selects_that_tiers_test_files_only() {
        let root = super::workspace_root().expect("the workspace root");
        let t3 = super::test_files_named(&root, "t3_").expect("read tests/tests");
        assert!(t3.contains(&"t3_apiserver".to_owned()), "{t3:?}");
        assert!(t3.iter().all(|file| file.starts_with("t3_")), "{t3:?}");
        let by_name = super::test_files_named(&root, "pings_pass").expect("read tests/tests");
        assert!(
            by_name.is_empty(),
            "a test-name filter names no file: {by_name:?}"
        );
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory as _;
        super::Task::command().debug_assert();
    }
}
