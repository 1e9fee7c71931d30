//! T0: deploy/ holds exactly what `fedwall manifests` prints; when it does not, the failure
//! names the file and the command that regenerates it.

use std::path::PathBuf;
use std::process::Command;

use fedwall::deploy::Manifest;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn fedwall(args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_fedwall"))
        .args(args)
        .output()
        .expect("run fedwall");
    assert!(output.status.success(), "fedwall {args:?}: {output:?}");
    output
}

fn checked_in(manifest: Manifest) -> String {
    let path = deploy_dir().join(manifest.file_name());
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with `cargo xtask manifests` (or `fedwall manifests --out-dir deploy`)",
            path.display()
        )
    })
}

#[test]
fn deploy_holds_what_fedwall_manifests_prints() {
    for manifest in Manifest::ALL {
        let generated = manifest.render().expect("the manifests generate");
        assert!(
            checked_in(manifest) == generated,
            "deploy/{} differs from `fedwall manifests --only {}`: run `cargo xtask manifests` \
             (or `fedwall manifests --out-dir deploy`) and commit the result",
            manifest.file_name(),
            manifest.cli_name()
        );
    }
    let mut files: Vec<String> = std::fs::read_dir(deploy_dir())
        .expect("deploy/ is readable")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    let mut expected: Vec<String> = Manifest::ALL
        .iter()
        .map(|m| m.file_name().to_owned())
        .collect();
    expected.sort();
    assert_eq!(
        files, expected,
        "deploy/ holds only what `fedwall manifests` writes: remove the others or generate them"
    );
}

#[test]
fn fedwall_manifests_prints_every_file_or_one() {
    let all = fedwall(&["manifests"]);
    let files: Vec<String> = Manifest::ALL.into_iter().map(checked_in).collect();
    assert_eq!(String::from_utf8_lossy(&all.stdout), files.join("---\n"));
    let crds = fedwall(&["manifests", "--only", "crds"]);
    assert_eq!(
        String::from_utf8_lossy(&crds.stdout),
        checked_in(Manifest::Crds)
    );
}

#[test]
fn fedwall_manifests_out_dir_writes_the_files_of_deploy() {
    let dir = std::env::temp_dir().join(format!("fedwall-manifests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let output = fedwall(&["manifests", "--out-dir", &dir.to_string_lossy()]);
    assert!(output.stdout.is_empty(), "nothing printed: {output:?}");
    for manifest in Manifest::ALL {
        let written = std::fs::read_to_string(dir.join(manifest.file_name()));
        assert_eq!(written.ok(), Some(checked_in(manifest)), "{manifest:?}");
    }
    std::fs::remove_dir_all(&dir).expect("remove the temporary directory");
}

#[test]
fn fedwall_manifests_help_shows_how_to_apply_them() {
    let help = fedwall(&["manifests", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for text in [
        "crds",
        "remote-access",
        "kubectl apply -f -",
        "--out-dir deploy",
    ] {
        assert!(help.contains(text), "{text:?} in {help}");
    }
}
