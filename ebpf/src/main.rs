//! fedwall's kernel programs: the policy programs of pod interfaces ([`policy`], where the
//! enforcement semantics are documented), NAT-outgoing on uplinks ([`nat`]) and
//! per-protocol counting programs, all built on one header parser ([`parse`]).
#![no_std]
#![no_main]
// `atomic_xchg`: the one atomic read-modify-write the BPF target lowers (core's atomic
// types have none there), for claiming NAT flow slots.
#![feature(core_intrinsics)]
#![allow(internal_features)]
#![expect(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "#[classifier] generates the extern entry point that takes the kernel's skb pointer"
)]

mod nat;
mod parse;
mod policy;

use aya_ebpf::{
    bindings::TC_ACT_OK,
    macros::{classifier, map},
    maps::PerCpuArray,
    programs::TcContext,
};
use fedwall_common::net::ip_proto;
use fedwall_common::stats::{
    Direction, PROTO_STATS_ENTRIES, ProtoClass, ProtoCounter, proto_stats_index,
};
use parse::{Family, Parsed};

#[map(name = "fw_proto_stats_v1")]
static PROTO_STATS: PerCpuArray<ProtoCounter> = PerCpuArray::pinned(PROTO_STATS_ENTRIES, 0);

/// Counting never decides a packet's fate: every packet, parsable or not, passes.
const COUNT_VERDICT: i32 = TC_ACT_OK;

#[classifier]
pub fn fw_cnt_ingress(ctx: TcContext) -> i32 {
    count(&ctx, Direction::Ingress);
    COUNT_VERDICT
}

#[classifier]
pub fn fw_cnt_egress(ctx: TcContext) -> i32 {
    count(&ctx, Direction::Egress);
    COUNT_VERDICT
}

#[inline(always)]
fn count(ctx: &TcContext, direction: Direction) {
    parse::ensure_linear_headers(ctx);
    let class = classify(ctx);
    if let Some(counter) = PROTO_STATS.get_ptr_mut(proto_stats_index(direction, class)) {
        // SAFETY: a per-CPU slot is only written by the CPU that owns it, so plain adds do
        // not race.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += u64::from(ctx.len());
        }
    }
}

#[inline(always)]
fn classify(ctx: &TcContext) -> ProtoClass {
    let mut headers = parse::IpHeaders::EMPTY;
    match parse::parse(ctx, &mut headers) {
        Ok(Parsed::NonIp) => return ProtoClass::NonIp,
        Ok(Parsed::Ip) => {}
        Err(_) => return ProtoClass::Malformed,
    }
    if parse::l4_header_present(ctx, &headers).is_err() {
        return ProtoClass::Malformed;
    }
    let first_fragment_or_whole = headers.l4_offset.is_some();
    match (headers.family, headers.protocol, first_fragment_or_whole) {
        (Family::V4, ip_proto::TCP, true) => ProtoClass::Ipv4Tcp,
        (Family::V4, ip_proto::UDP, true) => ProtoClass::Ipv4Udp,
        (Family::V4, ip_proto::ICMP, true) => ProtoClass::Ipv4Icmp,
        (Family::V4, _, _) => ProtoClass::Ipv4Other,
        (Family::V6, ip_proto::TCP, true) => ProtoClass::Ipv6Tcp,
        (Family::V6, ip_proto::UDP, true) => ProtoClass::Ipv6Udp,
        (Family::V6, ip_proto::ICMPV6, true) => ProtoClass::Ipv6Icmp,
        (Family::V6, _, _) => ProtoClass::Ipv6Other,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible, so the kernel lets the programs call GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
