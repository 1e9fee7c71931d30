//! T0: the `fedwall` binary's command line, as a user meets it.

use std::process::Command;

fn fedwall(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fedwall"))
        .args(args)
        .output()
        .expect("run fedwall")
}

#[test]
fn bpf_stats_without_pins_names_the_path_and_fails() {
    let dir = std::env::temp_dir().join(format!("fedwall-no-pins-{}", std::process::id()));
    let dir = dir.to_string_lossy().into_owned();
    let output = fedwall(&["bpf", "stats", "--pin-root", &dir]);
    assert!(!output.status.success(), "must fail without pinned maps");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&dir) && stderr.contains("fw_proto_stats_v1"),
        "the error names the missing pin: {stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "nothing on stdout: {:?}",
        output.stdout
    );
}

#[test]
fn help_lists_every_command_with_a_line_each() {
    let output = fedwall(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("bpf") && help.contains("Inspect fedwall's pinned kernel state"),
        "{help}"
    );
}
