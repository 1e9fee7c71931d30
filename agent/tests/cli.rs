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

#[test]
fn selector_parse_prints_canonical_form_then_unique_id() {
    let output = fedwall(&["selector", "parse", "role=='db' && has(tier)"]);
    assert!(output.status.success(), "{output:?}");
    // The id computed independently: "s:" + base64url(SHA-224("s:" + canonical)).
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "(role == \"db\" && has(tier))\ns:IaCOIhjEdbQ1e854_QnNs4NEpbq5zrl0ikeZ5w\n"
    );
}

#[test]
fn selector_parse_rejects_with_the_byte_position() {
    let output = fedwall(&["selector", "parse", "a == b"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("byte 5") && stderr.contains("string literal"),
        "{stderr}"
    );
}

#[test]
fn selector_match_prints_true_or_false() {
    let matches = |selector: &str, labels: &str| {
        let output = fedwall(&["selector", "match", selector, labels]);
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    assert_eq!(matches("app == 'web'", r#"{"app": "web"}"#), "true");
    assert_eq!(matches("app == 'web'", r#"{"app": "db"}"#), "false");
    // A missing label satisfies `!=`, as in Calico.
    assert_eq!(matches("app != 'web'", "{}"), "true");
}

#[test]
fn selector_match_rejects_labels_that_are_not_strings() {
    let output = fedwall(&["selector", "match", "all()", r#"{"replicas": 3}"#]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("\"replicas\"") && stderr.contains("quote"),
        "{stderr}"
    );
}
