//! Builds the kernel programs (ebpf/) for bpfel-unknown-none and leaves the object in
//! OUT_DIR, where src/dataplane embeds it.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let toolchain = pinned_toolchain(metadata.workspace_root.as_std_path())?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "fedwall-ebpf")
        .ok_or_else(|| anyhow!("the workspace has no fedwall-ebpf package"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("fedwall-ebpf's manifest path has no parent"))?;
    // The eBPF target needs `-Z build-std=core`. The toolchain is a pinned stable (see
    // rust-toolchain.toml for why), so unstable flags are enabled here, for the nested
    // eBPF build only; the userspace crates never see it.
    // SAFETY: build scripts are single-threaded; nothing reads the environment concurrently.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    // aya-build relays every line of the nested cargo's stderr as a build-script warning,
    // which cargo then replays on every build; keep only its errors.
    // SAFETY: as above.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
}

/// The toolchain rust-toolchain.toml pins: the eBPF build must use the same rustc, whose
/// LLVM matches bpf-linker's.
fn pinned_toolchain(workspace_root: &std::path::Path) -> anyhow::Result<String> {
    let path = workspace_root.join("rust-toolchain.toml");
    println!("cargo::rerun-if-changed={}", path.display());
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .next()
        .ok_or_else(|| anyhow!("{} has no `channel = \"...\"` line", path.display()))
}
