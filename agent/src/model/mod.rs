//! The model layer: plain types for what policy is computed from (endpoints, policies, IP
//! pools) and their conversions from the API objects in [`resources`]. No I/O.

pub mod endpoint;
pub mod plain_yaml;
pub mod policy;
pub mod pool;
pub mod resources;

#[cfg(test)]
mod tests;

pub use endpoint::{Cluster, Endpoint, EndpointError, EndpointKind, NamedPort};
pub use policy::{
    Action, IpVersion, Policy, PolicyError, PolicyKey, PolicyKind, Port, Rule, RuleSide,
};
pub use pool::{PoolError, nat_pool};
