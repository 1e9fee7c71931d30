//! The dataplane layer: the only code that touches aya. It loads fedwall's kernel programs,
//! pins their maps under one root, attaches programs to interfaces (TCX, or clsact where
//! TCX is missing) and reads and writes the maps.

mod attach;
mod error;
mod programs;
mod stats;

pub use attach::{AttachMode, AttachPolicy, Attachment};
pub use error::DataplaneError;
pub use programs::{KernelPrograms, TcProgram};
pub use stats::ProtoStats;
