//! IP pools as NAT-outgoing needs them: a CIDR with its `natOutgoing` and `disabled` flags.

use super::policy::parse_net;
use super::resources::IpPool;
use crate::dataplane::NatPool;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "IPPool({name}): spec.cidr {cidr:?} is not a CIDR (write it like 10.244.0.0/16 or fd00:10::/64)"
)]
pub struct PoolError {
    pub name: String,
    pub cidr: String,
}

pub fn nat_pool(pool: &IpPool) -> Result<NatPool, PoolError> {
    let cidr = pool
        .spec
        .cidr
        .parse::<ipnet::IpNet>()
        .ok()
        .and_then(|_| parse_net(&pool.spec.cidr))
        .ok_or_else(|| PoolError {
            name: pool.metadata.name.clone(),
            cidr: pool.spec.cidr.clone(),
        })?;
    Ok(NatPool {
        cidr,
        nat_outgoing: pool.spec.nat_outgoing,
        disabled: pool.spec.disabled,
    })
}
