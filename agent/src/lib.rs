//! fedwall's agent library: every layer of ARCHITECTURE.md lives here as a module, so the
//! binary, the xtask benchmarks and the tests/ crate share one implementation.

pub mod calc;
pub mod cli;
pub mod dataplane;
pub mod datastore;
pub mod model;
pub mod paths;
pub mod selector;
