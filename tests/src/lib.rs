//! The harness shared by fedwall's kernel and system tests (tiers T1-T3): network
//! namespaces with veth links, a private bpffs per test, a packet builder for
//! BPF_PROG_TEST_RUN, policy-program helpers, real Kubernetes control planes, and root-skip
//! accounting.

pub mod bpffs;
pub mod demo;
pub mod kube;
pub mod nat;
pub mod netns;
pub mod packet;
pub mod policy;
pub mod site;
pub mod skip;
