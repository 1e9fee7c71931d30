//! The `fedwall` command: the node agent and its debug tools.

/// mimalloc rather than glibc's malloc: taking 100,000 remote pods allocates and frees
/// millions of small strings and maps on four threads at once; `cargo xtask bench agent`
/// measured start → ready 3.5–4.1 s → 3.1–3.2 s (CPU 5.9–6.9 s → 5.0–5.4 s) with peak RSS
/// unchanged (271–291 MiB before, 280–289 after).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fedwall::cli::main()
}
