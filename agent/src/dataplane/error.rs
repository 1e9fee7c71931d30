//! What can go wrong in the dataplane, each variant naming the object it failed on.

use std::{io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(
        "cannot create the pin root {path}: {source} (it must be on a bpffs mount; \
         mount one with `mount -t bpf bpf /sys/fs/bpf` or pass --pin-root)"
    )]
    PinRoot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "loading fedwall's kernel object failed (is this root with CAP_BPF, on a kernel with BTF?): {source}"
    )]
    Load {
        #[source]
        source: aya::EbpfError,
    },
    #[error(
        "the kernel object has no program {program}: the agent and its embedded object disagree"
    )]
    MissingProgram { program: &'static str },
    #[error("the kernel object has no map {map}: the agent and its embedded object disagree")]
    MissingMap { map: &'static str },
    #[error("the kernel verifier rejected program {program}: {source}")]
    Verify {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("cannot attach {program} to interface {ifindex} with {mode}: {source}")]
    Attach {
        program: &'static str,
        ifindex: u32,
        mode: crate::dataplane::AttachMode,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("cannot add a clsact qdisc to interface {ifindex}: {source}")]
    Clsact {
        ifindex: u32,
        #[source]
        source: aya::programs::tc::TcError,
    },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "pinned map {path}: {source} (is an agent of this version running, or did one run on this node?)"
    )]
    PinnedMap {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
}
