//! fedwall's agent library: every layer of ARCHITECTURE.md lives here as a module, so the
//! binary, the xtask benchmarks and the tests/ crate share one implementation.

pub mod bench;
pub mod calc;
pub mod cli;
pub mod daemon;
pub mod dataplane;
pub mod datastore;
pub mod deploy;
pub mod model;
pub mod paths;
pub mod selector;

/// An error and its sources, `outer: inner: innermost`, for logs (library errors keep
/// their sources out of `Display`, as thiserror recommends).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
