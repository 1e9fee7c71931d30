//! `fedwall-nat-hold <pin-root> <uplink>`: a stand-in for the agent in the NAT T2 restart
//! test. It opens the kernel dataplane (adopting what an earlier holder pinned), applies the
//! T2 pools, puts NAT-outgoing on the uplink, completes the sync, prints `ready`, and
//! sleeps until killed.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, pin_root, uplink] = args.as_slice() else {
        anyhow::bail!("usage: fedwall-nat-hold <pin-root> <uplink>");
    };
    let _dataplane = fedwall_tests::nat::start_nat(pin_root.as_ref(), uplink)?;
    println!("ready");
    loop {
        std::thread::park();
    }
}
