//! What can go wrong in the dataplane, each variant naming the object it failed on. The
//! underlying aya or OS error is the `source()`, not part of the message: print the chain
//! (`{:#}` through anyhow) to see it.

use std::{io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(
        "cannot create the pin root {path} (it must be on a bpffs mount; \
         mount one with `mount -t bpf bpf /sys/fs/bpf` or pass --pin-root)"
    )]
    PinRoot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "loading fedwall's kernel object failed (is this root with CAP_BPF, on a kernel with BTF?)"
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
    #[error("the kernel verifier rejected program {program}")]
    Verify {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("cannot run {program} (BPF_PROG_TEST_RUN)")]
    Run {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("cannot start the thread that sweeps the NAT mappings")]
    SweepThread {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start a thread to verify program {program}")]
    VerifyThread {
        program: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot attach {program} to interface {ifindex} with {mode}")]
    Attach {
        program: &'static str,
        ifindex: u32,
        mode: crate::dataplane::AttachMode,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("cannot add a clsact qdisc to interface {ifindex}")]
    Clsact {
        ifindex: u32,
        #[source]
        source: aya::programs::tc::TcError,
    },
    #[error("map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "cannot open pinned map {path} (is an agent of this version running, or did one run on this node?)"
    )]
    PinnedMap {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "{delta} refers to {set}, which does not exist: calc and the dataplane disagree \
         (this is a bug in fedwall; the update was not applied)"
    )]
    UnknownIpSet {
        delta: &'static str,
        set: crate::dataplane::IpSetId,
    },
    #[error("{set} already exists: calc and the dataplane disagree (this is a bug in fedwall)")]
    DuplicateIpSet { set: crate::dataplane::IpSetId },
    #[error(
        "endpoint {endpoint}: its {direction} rule table takes {rules} entries (a rule takes \
         one per 8 port ranges of a side), over the limit of {limit} in map {map}; the endpoint \
         keeps its previous table"
    )]
    TableTooLarge {
        endpoint: crate::dataplane::EndpointName,
        direction: &'static str,
        map: &'static str,
        rules: usize,
        limit: usize,
    },
    #[error(
        "map {map} is full ({limit} entries) while applying {object}; the previous state is \
         kept; raise the map size or reduce what it must hold"
    )]
    MapFull {
        map: &'static str,
        object: String,
        limit: usize,
    },
    #[error(
        "endpoint {endpoint}: rule {rule} of its {direction} table has {count} {what}, over \
         the kernel's limit of {limit} in map {map}; the endpoint keeps its previous table"
    )]
    RuleTooComplex {
        endpoint: crate::dataplane::EndpointName,
        direction: &'static str,
        rule: String,
        what: &'static str,
        count: usize,
        limit: usize,
        map: &'static str,
    },
    #[error(
        "endpoint {endpoint}: cannot find its host-side interface ({reason}); the endpoint is \
         not enforced until its route exists (or it is given an interface explicitly)"
    )]
    NoInterface {
        endpoint: crate::dataplane::EndpointName,
        reason: String,
    },
    #[error("cannot pin or open the link {path} of endpoint {endpoint}")]
    Link {
        endpoint: crate::dataplane::EndpointName,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove the stale pin {path} (left by an older fedwall)")]
    StalePin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot use {uplink} as a NAT-outgoing uplink: {reason}; name an interface that has \
         a global address, or give its address explicitly"
    )]
    NatUplink { uplink: String, reason: String },
    #[error("cannot pin or open the NAT link {path} of uplink {uplink}")]
    NatLink {
        uplink: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
