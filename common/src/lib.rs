//! Map keys and values shared by fedwall's kernel programs (ebpf/) and its userspace
//! (agent/). Every type is `#[repr(C)]` with explicit padding, and a compile-time size check
//! keeps the kernel and userspace views of a map identical.
#![no_std]

pub mod conntrack;
pub mod nat;
pub mod net;
pub mod policy;
pub mod stats;
