//! Finding an endpoint's host-side interface: the route to the pod's address names it
//! (asked of the kernel over netlink, in the caller's network namespace), or tests and
//! special setups say it explicitly.

use std::collections::BTreeMap;

use crate::dataplane::netlink;
use crate::dataplane::{DataplaneError, EndpointName, LocalEndpoint};

/// Says which interface (ifindex) leads to an endpoint.
pub trait InterfaceResolver {
    fn resolve(&self, endpoint: &LocalEndpoint) -> Result<u32, DataplaneError>;
}

/// Interfaces given by name of endpoint.
#[derive(Clone, Debug, Default)]
pub struct StaticInterfaces(pub BTreeMap<EndpointName, u32>);

impl InterfaceResolver for StaticInterfaces {
    fn resolve(&self, endpoint: &LocalEndpoint) -> Result<u32, DataplaneError> {
        self.0
            .get(&endpoint.name)
            .copied()
            .ok_or_else(|| DataplaneError::NoInterface {
                endpoint: endpoint.name.clone(),
                reason: "no interface was given for it".to_owned(),
            })
    }
}

/// The interface of the route to the endpoint's first address, asked of the kernel over
/// netlink in the calling thread's namespace. Only a direct unicast route counts: a route
/// through a gateway (the default route, for a pod whose veth is not there yet) or a local
/// address does not lead to a pod.
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteLookup;

impl InterfaceResolver for RouteLookup {
    fn resolve(&self, endpoint: &LocalEndpoint) -> Result<u32, DataplaneError> {
        let no_interface = |reason: String| DataplaneError::NoInterface {
            endpoint: endpoint.name.clone(),
            reason,
        };
        let addr = endpoint
            .addrs
            .first()
            .ok_or_else(|| no_interface("it has no address".to_owned()))?;
        let route = netlink::route_get(*addr)
            .map_err(|e| no_interface(format!("no route to {addr}: {e}")))?;
        if !route.unicast {
            return Err(no_interface(format!(
                "{addr} is an address of this node, not of a pod (a host endpoint: fedwall \
                 does not enforce policy on host interfaces yet; remote clusters can still \
                 select it)"
            )));
        }
        if route.via_gateway {
            return Err(no_interface(format!(
                "the route to {addr} goes through a gateway, not to a pod's interface \
                 (is the pod's veth and route set up yet?)"
            )));
        }
        Ok(route.ifindex)
    }
}
