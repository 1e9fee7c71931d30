//! Loading the embedded kernel object: programs verified once, maps pinned under the pin
//! root so they outlive the process.

use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd};
use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, ProgramFd, SchedClassifier},
};
use fedwall_common::policy::PolicyDir;
use fedwall_common::stats::{Direction, PROTO_STATS_MAP};

use super::{DataplaneError, ProtoStats};

/// The kernel object built from ebpf/ by build.rs.
static KERNEL_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fedwall-ebpf"));

/// The program that removes expired NAT mappings: loaded and verified with the others,
/// never attached, run through BPF_PROG_TEST_RUN.
const NAT_SWEEP_PROGRAM: &str = "fw_nat_sweep";

/// A TC program of the kernel object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcProgram {
    /// Counts packets by protocol, on the ingress hook.
    CountIngress,
    /// Counts packets by protocol, on the egress hook.
    CountEgress,
    /// Enforces a pod's ingress policy: on the egress hook of the pod's host-side veth,
    /// where traffic to the pod leaves the host.
    PolicyToPod,
    /// Enforces a pod's egress policy: on the ingress hook of the pod's host-side veth,
    /// where traffic from the pod enters the host.
    PolicyFromPod,
    /// NAT-outgoing on an uplink's egress hook: translates the source of new and
    /// established flows from natOutgoing pools.
    NatEgress,
    /// NAT-outgoing on an uplink's ingress hook: translates replies (and ICMP errors about
    /// translated flows) back to the pod.
    NatIngress,
}

impl TcProgram {
    pub const ALL: [TcProgram; 6] = [
        TcProgram::CountIngress,
        TcProgram::CountEgress,
        TcProgram::PolicyToPod,
        TcProgram::PolicyFromPod,
        TcProgram::NatEgress,
        TcProgram::NatIngress,
    ];
    pub const COUNTERS: [TcProgram; 2] = [TcProgram::CountIngress, TcProgram::CountEgress];

    /// The program's name in the object (and in `bpftool prog`).
    pub const fn name(self) -> &'static str {
        match self {
            TcProgram::CountIngress => "fw_cnt_ingress",
            TcProgram::CountEgress => "fw_cnt_egress",
            TcProgram::PolicyToPod => "fw_pol_to_pod",
            TcProgram::PolicyFromPod => "fw_pol_from_pod",
            TcProgram::NatEgress => "fw_nat_egress",
            TcProgram::NatIngress => "fw_nat_ingress",
        }
    }

    /// The TC hook the program runs on.
    pub const fn direction(self) -> Direction {
        match self {
            TcProgram::CountIngress | TcProgram::PolicyFromPod | TcProgram::NatIngress => {
                Direction::Ingress
            }
            TcProgram::CountEgress | TcProgram::PolicyToPod | TcProgram::NatEgress => {
                Direction::Egress
            }
        }
    }

    /// The policy program enforcing an endpoint's policy of `direction`.
    pub const fn policy(direction: PolicyDir) -> TcProgram {
        match direction {
            PolicyDir::Ingress => TcProgram::PolicyToPod,
            PolicyDir::Egress => TcProgram::PolicyFromPod,
        }
    }

    /// The counting program for one direction.
    pub const fn counter(direction: Direction) -> TcProgram {
        match direction {
            Direction::Ingress => TcProgram::CountIngress,
            Direction::Egress => TcProgram::CountEgress,
        }
    }
}

/// fedwall's kernel programs, loaded and verified, with their maps pinned under `pin_root`.
/// Dropping it detaches whatever it attached; the pinned maps stay.
pub struct KernelPrograms {
    ebpf: Ebpf,
    pin_root: PathBuf,
}

impl KernelPrograms {
    /// Loads the embedded object, reusing maps already pinned under `pin_root` (so counters
    /// and state survive a restart) and pinning the ones that are not, then loads every
    /// program into the kernel so a verifier rejection shows up here, not at attach time.
    pub fn load(pin_root: &Path) -> Result<Self, DataplaneError> {
        std::fs::create_dir_all(pin_root).map_err(|source| DataplaneError::PinRoot {
            path: pin_root.to_owned(),
            source,
        })?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_root)
            .load(KERNEL_OBJECT)
            .map_err(|source| DataplaneError::Load { source })?;
        verify_all(&mut ebpf)?;
        Ok(Self {
            ebpf,
            pin_root: pin_root.to_owned(),
        })
    }

    pub fn pin_root(&self) -> &Path {
        &self.pin_root
    }

    pub fn program_mut(
        &mut self,
        program: TcProgram,
    ) -> Result<&mut SchedClassifier, DataplaneError> {
        classifier(&mut self.ebpf, program.name())
    }

    /// How many NAT flows are live (in the kernel, one pass over the table).
    pub fn count_nat_flows(&mut self) -> Result<u32, DataplaneError> {
        let program = self.nat_sweep_fd()?;
        count_nat_flows(program.as_fd()).map_err(|source| DataplaneError::Run {
            program: NAT_SWEEP_PROGRAM,
            source: source.into(),
        })
    }

    /// A descriptor of the NAT sweep program of its own, for a thread that sweeps.
    pub fn nat_sweep_fd(&mut self) -> Result<ProgramFd, DataplaneError> {
        let run_error = |source| DataplaneError::Run {
            program: NAT_SWEEP_PROGRAM,
            source,
        };
        let program = classifier(&mut self.ebpf, NAT_SWEEP_PROGRAM)?;
        let fd = program.fd().map_err(run_error)?;
        fd.try_clone()
            .map_err(|source| run_error(ProgramError::IOError(source)))
    }

    pub fn map(&self, name: &'static str) -> Result<&aya::maps::Map, DataplaneError> {
        self.ebpf
            .map(name)
            .ok_or(DataplaneError::MissingMap { map: name })
    }

    pub fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DataplaneError> {
        self.ebpf
            .map_mut(name)
            .ok_or(DataplaneError::MissingMap { map: name })
    }

    /// The per-CPU protocol counters of these programs.
    pub fn proto_stats(&self) -> Result<ProtoStats, DataplaneError> {
        let map = self
            .ebpf
            .map(PROTO_STATS_MAP)
            .ok_or(DataplaneError::MissingMap {
                map: PROTO_STATS_MAP,
            })?;
        ProtoStats::read(map)
    }
}

/// Runs the NAT sweep program once (BPF_PROG_TEST_RUN): how many NAT flows are live.
/// Through the descriptor rather than aya's program object, so that a thread of its own
/// can count while the main loop keeps the object.
pub fn count_nat_flows(program: BorrowedFd<'_>) -> std::io::Result<u32> {
    /// The `test` member of the kernel's `union bpf_attr` (include/uapi/linux/bpf.h), up
    /// to `batch_size`; `_pad` makes the size a multiple of its alignment with zeroes, as
    /// the kernel requires of every byte past the fields it knows.
    #[repr(C)]
    #[derive(Default)]
    struct TestRunAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: u32,
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    // A TC program's test run needs a frame, which the sweep ignores.
    let frame = [0u8; 64];
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(program.as_raw_fd())
            .map_err(|_| std::io::ErrorKind::InvalidInput)?,
        data_in: frame.as_ptr() as u64,
        data_size_in: frame.len() as u32,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is a `bpf_attr` of its own size with every other byte zero; the kernel
    // reads `frame` (alive for the call) for `data_size_in` bytes and writes only `retval`
    // and `duration` back into `attr`, since no output buffer is given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &raw mut attr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(attr.retval)
}

/// Every program the object must hold: the classifiers that attach, and NAT's sweep.
fn program_names() -> impl Iterator<Item = &'static str> {
    TcProgram::ALL
        .into_iter()
        .map(TcProgram::name)
        .chain([NAT_SWEEP_PROGRAM])
}

/// Loads every program into the kernel, each from a thread of its own: the kernel verifies
/// a program on the thread that loads it, and verifying the two policy programs is most of
/// loading, so they verify side by side on a machine with two cores or more.
fn verify_all(ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
    let names: Vec<&'static str> = program_names().collect();
    let mut found: Vec<Option<&mut SchedClassifier>> = names.iter().map(|_| None).collect();
    for (name, program) in ebpf.programs_mut() {
        if let Some(at) = names.iter().position(|wanted| *wanted == name) {
            found[at] = Some(as_classifier(names[at], program)?);
        }
    }
    // In program_names()' order, so errors come in that order whichever thread finishes
    // first.
    let programs = names
        .into_iter()
        .zip(found)
        .map(|(name, classifier)| {
            classifier
                .map(|classifier| (name, classifier))
                .ok_or(DataplaneError::MissingProgram { program: name })
        })
        .collect::<Result<Vec<_>, _>>()?;
    std::thread::scope(|scope| {
        let mut verifying = Vec::with_capacity(programs.len());
        for (name, classifier) in programs {
            let thread = std::thread::Builder::new()
                .name(format!("verify-{name}"))
                .spawn_scoped(scope, move || verify(name, classifier))
                .map_err(|source| DataplaneError::VerifyThread {
                    program: name,
                    source,
                })?;
            verifying.push(thread);
        }
        verifying.into_iter().try_for_each(|thread| {
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    })
}

/// Loads one program into the kernel, which verifies it.
fn verify(name: &'static str, classifier: &mut SchedClassifier) -> Result<(), DataplaneError> {
    let started = std::time::Instant::now();
    classifier.load().map_err(|source| DataplaneError::Verify {
        program: name,
        source,
    })?;
    tracing::debug!(
        program = name,
        elapsed_ms = started.elapsed().as_millis(),
        verified_insns = classifier
            .info()
            .ok()
            .and_then(|info| info.verified_instruction_count()),
        "program verified"
    );
    Ok(())
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DataplaneError> {
    let program = ebpf
        .program_mut(name)
        .ok_or(DataplaneError::MissingProgram { program: name })?;
    as_classifier(name, program)
}

/// The program `name` as the TC classifier every program of the object is.
fn as_classifier<'a>(
    name: &'static str,
    program: &'a mut aya::programs::Program,
) -> Result<&'a mut SchedClassifier, DataplaneError> {
    program.try_into().map_err(|source| DataplaneError::Verify {
        program: name,
        source,
    })
}
