//! Helpers for tests and benchmarks of the policy programs: building endpoints and rules,
//! running a frame through a policy program with BPF_PROG_TEST_RUN, and clearing the
//! conntrack table between cases that must each be a flow's first packet.

use std::collections::BTreeSet;
use std::path::Path;

use aya::maps::{HashMap, Map, MapData};
use aya::programs::{TestRun as _, TestRunOptions};
use fedwall::dataplane::{
    Delta, EndpointName, IpSetId, KernelDataplane, LocalEndpoint, PolicyDirection, Rule,
    RuleAction, RuleTable, TcProgram,
};
use fedwall_common::conntrack::{CONNTRACK_MAP, ConntrackKey, ConntrackValue};
use fedwall_common::policy::PolicyDir;
use ipnet::IpNet;

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
/// BPF_PROG_TEST_RUN runs a TC program as if on the loopback device of the caller's
/// network namespace: a T1 test registers its endpoint on that interface.
pub const TEST_RUN_IFINDEX: u32 = 1;

pub fn policy_dir(direction: PolicyDirection) -> PolicyDir {
    match direction {
        PolicyDirection::Ingress => PolicyDir::Ingress,
        PolicyDirection::Egress => PolicyDir::Egress,
    }
}

/// A rule with no conditions.
pub fn rule(origin: &str, action: RuleAction) -> Rule {
    Rule::unconditional(origin, action)
}

pub fn endpoint(
    name: &str,
    ingress: Option<RuleTable>,
    egress: Option<RuleTable>,
) -> LocalEndpoint {
    LocalEndpoint {
        name: EndpointName(name.to_owned()),
        addrs: Vec::new(),
        ingress,
        egress,
    }
}

/// The deltas that create set `id` with `members`.
pub fn set_deltas(id: u32, members: impl IntoIterator<Item = IpNet>) -> [Delta; 2] {
    [
        Delta::IpSetCreated { id: IpSetId(id) },
        Delta::IpSetMembers {
            id: IpSetId(id),
            added: members.into_iter().collect(),
            removed: BTreeSet::new(),
        },
    ]
}

/// Runs `frame` through the policy program of `direction`; returns the verdict.
pub fn run(dataplane: &mut KernelDataplane, direction: PolicyDirection, frame: &[u8]) -> u32 {
    run_repeat(dataplane, direction, frame, 1).0
}

/// Runs `frame` `repeat` times; returns the verdict and the kernel's mean time per run.
pub fn run_repeat(
    dataplane: &mut KernelDataplane,
    direction: PolicyDirection,
    frame: &[u8],
    repeat: u32,
) -> (u32, std::time::Duration) {
    let program = TcProgram::policy(policy_dir(direction));
    let classifier = dataplane
        .programs_mut()
        .program_mut(program)
        .unwrap_or_else(|e| panic!("program {program:?}: {e}"));
    let mut options = TestRunOptions::new();
    options.data_in = Some(frame);
    options.repeat = repeat;
    let result = classifier.test_run(options).unwrap_or_else(|e| {
        panic!(
            "BPF_PROG_TEST_RUN of {program:?} with {} bytes: {e:?}",
            frame.len()
        )
    });
    (result.return_value, result.duration)
}

/// Forgets every tracked flow, so the next packet of any flow walks the rules again.
pub fn clear_conntrack(pin_root: &Path) {
    let path = pin_root.join(CONNTRACK_MAP);
    let map = MapData::from_pin(&path)
        .and_then(Map::from_map_data)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut table = HashMap::<_, ConntrackKey, ConntrackValue>::try_from(map)
        .unwrap_or_else(|e| panic!("conntrack map: {e}"));
    let keys: Vec<ConntrackKey> = table.keys().filter_map(Result::ok).collect();
    for key in keys {
        let _ = table.remove(&key);
    }
}
