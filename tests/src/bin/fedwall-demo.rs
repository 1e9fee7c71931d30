//! `./x demo`: fedwall's main job on its embedded default (see fedwall_tests::demo). Needs
//! root (network namespaces, bpffs, eBPF); exits 0 only when every observation matched.

use std::process::ExitCode;

fn main() -> ExitCode {
    if !fedwall_tests::skip::is_root() {
        eprintln!("fedwall demo: needs root (network namespaces, eBPF): run ./x demo as root");
        return ExitCode::FAILURE;
    }
    match fedwall_tests::demo::run(&mut std::io::stdout()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("fedwall demo: {error:#}");
            ExitCode::FAILURE
        }
    }
}
