//! Attaching TC programs to interfaces: TCX links where the kernel has them (Linux >= 6.6:
//! ordered, owned by a link, atomically replaceable), a filter on a clsact qdisc otherwise.

use std::fmt;
use std::path::Path;

use aya::programs::{
    LinkOrder, ProgramError,
    links::{FdLink, PinnedLink},
    tc::SchedClassifierLink,
    tc::{self, NlOptions, SchedClassifierLinkId, TcAttach, TcAttachType, TcError},
};
use fedwall_common::stats::Direction;

use super::{DataplaneError, KernelPrograms, TcProgram};

/// The mechanism an attachment uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    Tcx,
    Clsact,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Tcx => "tcx",
            AttachMode::Clsact => "clsact",
        })
    }
}

/// Which mechanism to attach with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachPolicy {
    /// TCX, falling back to clsact on kernels without TCX.
    #[default]
    Auto,
    /// TCX only.
    Tcx,
    /// A clsact qdisc filter only.
    Clsact,
}

/// A program attached to an interface; pass it back to `detach`.
#[derive(Debug)]
pub struct Attachment {
    pub program: TcProgram,
    pub ifindex: u32,
    pub mode: AttachMode,
    link: SchedClassifierLinkId,
}

const ENOTSUPP: i32 = 524;

/// Whether a TCX attach failure means "this kernel has no TCX" (so clsact should be tried)
/// rather than a real problem with the program or interface.
fn tcx_unsupported(error: &ProgramError) -> bool {
    match error {
        ProgramError::SyscallError(syscall) => matches!(
            syscall.io_error.raw_os_error(),
            Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
        ),
        _ => false,
    }
}

pub(super) fn attach_type(direction: Direction) -> TcAttachType {
    match direction {
        Direction::Ingress => TcAttachType::Ingress,
        Direction::Egress => TcAttachType::Egress,
    }
}

impl KernelPrograms {
    /// Attaches `program` to the interface `ifindex` of the calling thread's network
    /// namespace, on the hook of the program's direction.
    pub fn attach(
        &mut self,
        program: TcProgram,
        ifindex: u32,
        policy: AttachPolicy,
    ) -> Result<Attachment, DataplaneError> {
        match policy {
            AttachPolicy::Tcx => self.attach_tcx(program, ifindex),
            AttachPolicy::Clsact => self.attach_clsact(program, ifindex),
            AttachPolicy::Auto => match self.attach_tcx(program, ifindex) {
                Err(DataplaneError::Attach { source, .. }) if tcx_unsupported(&source) => {
                    tracing::info!(
                        program = program.name(),
                        ifindex,
                        reason = %source,
                        "TCX unavailable, attaching with a clsact qdisc"
                    );
                    self.attach_clsact(program, ifindex)
                }
                other => other,
            },
        }
    }

    fn attach_tcx(
        &mut self,
        program: TcProgram,
        ifindex: u32,
    ) -> Result<Attachment, DataplaneError> {
        let attach = TcAttach::Tcx {
            attach_type: attach_type(program.direction()),
            order: LinkOrder::default(),
        };
        self.attach_with(program, ifindex, AttachMode::Tcx, attach)
    }

    fn attach_clsact(
        &mut self,
        program: TcProgram,
        ifindex: u32,
    ) -> Result<Attachment, DataplaneError> {
        match tc::qdisc_add_clsact(ifindex) {
            Ok(()) => {}
            Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(source) => return Err(DataplaneError::Clsact { ifindex, source }),
        }
        let attach = TcAttach::Netlink {
            parent: attach_type(program.direction()).into(),
            options: NlOptions::default(),
        };
        self.attach_with(program, ifindex, AttachMode::Clsact, attach)
    }

    fn attach_with(
        &mut self,
        program: TcProgram,
        ifindex: u32,
        mode: AttachMode,
        attach: TcAttach,
    ) -> Result<Attachment, DataplaneError> {
        let link = self
            .program_mut(program)?
            .attach(ifindex, attach)
            .map_err(|source| DataplaneError::Attach {
                program: program.name(),
                ifindex,
                mode,
                source,
            })?;
        Ok(Attachment {
            program,
            ifindex,
            mode,
            link,
        })
    }

    /// Detaches what `attach` attached.
    pub fn detach(&mut self, attachment: Attachment) -> Result<(), DataplaneError> {
        let Attachment {
            program,
            ifindex,
            mode,
            link,
        } = attachment;
        self.program_mut(program)?
            .detach(link)
            .map_err(|source| DataplaneError::Attach {
                program: program.name(),
                ifindex,
                mode,
                source,
            })
    }
}

/// Why [`KernelPrograms::attach_pinned`] failed: the pin (file or link object), or the
/// attach itself.
pub(crate) enum PinnedAttachError {
    Pin(std::io::Error),
    Attach(DataplaneError),
}

impl KernelPrograms {
    /// Attaches `program` to `ifindex` with a TCX link pinned at `path`, so it outlives the
    /// process. With `adopt` (a link an earlier instance pinned there) the link gets the
    /// new program in place (`bpf_link_update`: no moment without a program); otherwise a
    /// new link is made and pinned. Returns our fd of the link.
    pub(crate) fn attach_pinned(
        &mut self,
        program: TcProgram,
        ifindex: u32,
        path: &Path,
        adopt: bool,
    ) -> Result<FdLink, PinnedAttachError> {
        let pin_error = |e: &dyn std::error::Error| {
            PinnedAttachError::Pin(std::io::Error::other(e.to_string()))
        };
        let attach_error = |source| {
            PinnedAttachError::Attach(DataplaneError::Attach {
                program: program.name(),
                ifindex,
                mode: AttachMode::Tcx,
                source,
            })
        };
        let classifier = self
            .program_mut(program)
            .map_err(PinnedAttachError::Attach)?;
        let link_id = if adopt {
            let pinned = PinnedLink::from_pin(path).map_err(|e| pin_error(&e))?;
            let link =
                SchedClassifierLink::try_from(FdLink::from(pinned)).map_err(|e| pin_error(&e))?;
            classifier.attach_to_link(link).map_err(attach_error)?
        } else {
            classifier
                .attach(
                    ifindex,
                    TcAttach::Tcx {
                        attach_type: attach_type(program.direction()),
                        order: LinkOrder::default(),
                    },
                )
                .map_err(attach_error)?
        };
        let link = classifier.take_link(link_id).map_err(attach_error)?;
        let fd_link = FdLink::try_from(link).map_err(|e| pin_error(&e))?;
        if path.exists() {
            return Ok(fd_link);
        }
        Ok(FdLink::from(fd_link.pin(path).map_err(|e| pin_error(&e))?))
    }
}
