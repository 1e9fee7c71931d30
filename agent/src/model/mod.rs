//! The model layer: plain types for what policy is computed from (endpoints, namespaces,
//! service accounts, policies, IP pools, remote clusters) and their conversions from the
//! API objects in [`resources`]. No I/O.

pub mod resources;
