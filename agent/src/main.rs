//! The `fedwall` command: the node agent and its debug tools.

/// mimalloc rather than glibc's malloc: taking 100,000 remote pods allocates and frees
/// millions of small strings and maps on four threads at once; `cargo xtask bench agent`
/// measured start → ready 3.5–4.1 s → 3.1–3.2 s (CPU 5.9–6.9 s → 5.0–5.4 s) with peak RSS
/// unchanged (271–291 MiB before, 280–289 after).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (the same place in its v2 and v3 option enums; the
/// crate names the options around it, 14 and 16, but not this one).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    // Freed memory goes back to the kernel at once rather than 10 ms later: start frees as
    // fast as it allocates (parsed objects handed from the reader threads to calc), and
    // the delay let it pile up. `cargo xtask bench agent`: peak RSS 284 -> 218-220 MiB,
    // start no slower. MIMALLOC_PURGE_DELAY in the environment still decides, if set.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options, which it reads atomically when it
        // purges; no allocation is in flight on another thread yet.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
    fedwall::cli::main()
}
