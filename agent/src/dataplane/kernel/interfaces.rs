//! Finding an endpoint's host-side interface: the route to the pod's address names it
//! (asked of iproute2, in the caller's network namespace), or tests and special setups say
//! it explicitly.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::process::Command;

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

/// The interface of the route to the endpoint's first address (`ip -j route get`).
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
        let output = Command::new("ip")
            .args(["-j", "route", "get", &addr.to_string()])
            .output()
            .map_err(|e| no_interface(format!("cannot run `ip route get {addr}`: {e}")))?;
        if !output.status.success() {
            return Err(no_interface(format!(
                "`ip route get {addr}` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let routes: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout)
            .map_err(|e| no_interface(format!("unreadable `ip route get {addr}` output: {e}")))?;
        let dev = routes
            .first()
            .and_then(|route| route.get("dev"))
            .and_then(|dev| dev.as_str())
            .ok_or_else(|| no_interface(format!("the route to {addr} names no device")))?;
        let name = CString::new(dev).map_err(|e| no_interface(format!("device {dev:?}: {e}")))?;
        // SAFETY: `name` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(no_interface(format!("device {dev} has no index")));
        }
        Ok(ifindex)
    }
}
