//! The file datastore (`--datastore file:DIR`): reads a directory of YAML manifests into a
//! snapshot of objects, each with the file and line it came from, and the problems found.
//! A bad document is reported and skipped; the rest of the directory still loads.
//!
//! Only the directory's own `*.yaml` and `*.yml` files are read, not subdirectories: a
//! cluster is one directory, and the directories of remote clusters can then sit beside
//! it (see examples/). Hidden files (editor swap files, Kubernetes' `..data` links) are
//! skipped; symbolic links to files are followed.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::datastore::manifest::{DocumentError, split_documents};
use crate::model::resources::{Resource, ResourceKey};

/// Where an object or a problem was found.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based; absent for a problem with a whole file.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file.display()),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// One object read from a manifest, with where it was defined.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedObject {
    pub resource: Resource,
    pub location: Location,
}

/// Something in the directory that could not be used; it was skipped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {kind}")]
pub struct Problem {
    pub location: Location,
    pub kind: ProblemKind,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProblemKind {
    #[error("cannot read the file: {0}; fix its permissions or encoding (UTF-8), or remove it")]
    UnreadableFile(String),
    #[error(transparent)]
    Document(#[from] DocumentError),
    #[error(
        "{key} is defined again here (first at {first}); the first definition is used: \
         remove or rename one of the two"
    )]
    Duplicate { key: ResourceKey, first: Location },
}

impl Problem {
    /// Whether objects defined at this problem's file may be among those that failed to
    /// load (a duplicate hides nothing: the first definition loaded).
    pub fn may_hide_objects(&self) -> bool {
        !matches!(self.kind, ProblemKind::Duplicate { .. })
    }
}

/// Everything read from one directory at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DirSnapshot {
    pub dir: PathBuf,
    pub objects: BTreeMap<ResourceKey, LoadedObject>,
    /// In file order, then line order.
    pub problems: Vec<Problem>,
}

/// The directory itself could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileDatastoreError {
    #[error(
        "cannot read the manifest directory {}: {}; create it or fix the path",
        dir.display(),
        os_message(error)
    )]
    UnreadableDirectory { dir: PathBuf, error: io::Error },
    #[error(
        "cannot watch the manifest directory {}: {error}; if inotify limits are reached, \
         raise fs.inotify.max_user_instances or max_user_watches",
        dir.display()
    )]
    Watch { dir: PathBuf, error: notify::Error },
    #[error("cannot start the thread watching {}: {}", dir.display(), os_message(error))]
    Thread { dir: PathBuf, error: io::Error },
}

impl FileDatastoreError {
    /// The reason a remote cluster backed by this directory is `ConnectionFailed`, with the
    /// fix in the RemoteClusterConfiguration's terms.
    pub fn remote_reason(&self) -> String {
        match self {
            FileDatastoreError::UnreadableDirectory { dir, error } => format!(
                "directory {}: {}; create it or fix spec.path",
                dir.display(),
                os_message(error)
            ),
            other => other.to_string(),
        }
    }
}

/// An I/O error's text without std's ` (os error N)` suffix, which tells users nothing.
pub(crate) fn os_message(error: &io::Error) -> String {
    let text = error.to_string();
    match error.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .map_or_else(|| text.clone(), str::to_owned),
        None => text,
    }
}

/// Reads every manifest of `dir`. Problems with files and documents are in the snapshot;
/// only a directory that cannot be listed is an error.
pub fn read_dir(dir: &Path) -> Result<DirSnapshot, FileDatastoreError> {
    let unreadable = |error| FileDatastoreError::UnreadableDirectory {
        dir: dir.to_owned(),
        error,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(unreadable)? {
        let name = entry.map_err(unreadable)?.file_name();
        if is_manifest_name(&name) {
            files.push(dir.join(name));
        }
    }
    files.sort();
    let mut snapshot = DirSnapshot {
        dir: dir.to_owned(),
        ..DirSnapshot::default()
    };
    for file in files {
        // Following links; a directory or socket named like a manifest is not one.
        if !fs::metadata(&file).is_ok_and(|m| m.is_file()) {
            continue;
        }
        match fs::read_to_string(&file) {
            Ok(text) => snapshot.add_text(&file, &text),
            Err(error) => snapshot.problems.push(Problem {
                location: Location { file, line: None },
                kind: ProblemKind::UnreadableFile(os_message(&error)),
            }),
        }
    }
    Ok(snapshot)
}

/// `*.yaml` and `*.yml`, not hidden: editors' swap and backup files (`.x.swp`, `x.yaml~`,
/// `#x.yaml#`) and Kubernetes' `..data` are left out by these two rules.
fn is_manifest_name(name: &OsStr) -> bool {
    name.to_str().is_some_and(|name| {
        !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
    })
}

impl DirSnapshot {
    /// Adds the documents of one file's text, as read from `file`.
    pub fn add_text(&mut self, file: &Path, text: &str) {
        for document in split_documents(text) {
            let location = Location {
                file: file.to_owned(),
                line: Some(document.line),
            };
            match document.parse() {
                Ok(resource) => self.add_object(resource, location),
                Err(error) => self.problems.push(Problem {
                    location,
                    kind: ProblemKind::Document(error),
                }),
            }
        }
    }

    /// Drops every object of a kind a remote cluster does not contribute (policies, pools,
    /// its own RemoteClusterConfigurations): only endpoint data is federated.
    pub fn retain_federated_kinds(&mut self) {
        self.objects.retain(|key, object| {
            let federated = key.kind.is_federated();
            if !federated {
                tracing::debug!("{key} at {} is not federated; ignored", object.location);
            }
            federated
        });
    }

    fn add_object(&mut self, resource: Resource, location: Location) {
        let key = resource.key();
        match self.objects.get(&key) {
            Some(first) => {
                let first = first.location.clone();
                self.problems.push(Problem {
                    location,
                    kind: ProblemKind::Duplicate { key, first },
                });
            }
            None => {
                self.objects
                    .insert(key, LoadedObject { resource, location });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::testdir::{TestDir, namespace};
    use crate::model::resources::Kind;

    fn names(snapshot: &DirSnapshot) -> Vec<String> {
        snapshot.objects.keys().map(ToString::to_string).collect()
    }

    fn problem_texts(snapshot: &DirSnapshot) -> Vec<String> {
        snapshot.problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_bad_document_is_reported_with_file_and_line_and_the_rest_loads() {
        let dir = TestDir::new();
        let bad_kind = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n";
        let text = [namespace("a"), bad_kind.to_owned(), namespace("b")].join("---\n");
        dir.write("ns.yaml", &text);
        let snapshot = read_dir(dir.path()).expect("the directory exists");
        assert_eq!(names(&snapshot), ["Namespace(a)", "Namespace(b)"]);
        let problems = problem_texts(&snapshot);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let expected = format!("{}:6: ", dir.path().join("ns.yaml").display());
        assert!(problems[0].starts_with(&expected), "{problems:?}");
        assert!(problems[0].contains("ConfigMap"), "{problems:?}");
    }

    #[test]
    fn documents_of_several_files_load_and_a_syntax_error_skips_one_document_only() {
        let dir = TestDir::new();
        dir.write("a.yaml", &[namespace("a1"), namespace("a2")].join("---\n"));
        dir.write(
            "b.yml",
            &format!("{}---\nkind: [\n---\n{}", namespace("b1"), namespace("b2")),
        );
        let snapshot = read_dir(dir.path()).expect("the directory exists");
        assert_eq!(
            names(&snapshot),
            [
                "Namespace(a1)",
                "Namespace(a2)",
                "Namespace(b1)",
                "Namespace(b2)"
            ]
        );
        let problems = problem_texts(&snapshot);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(&format!("{}:6: ", dir.path().join("b.yml").display())),
            "{problems:?}"
        );
        let b1 = &snapshot.objects.values().nth(2).expect("b1").location;
        assert_eq!(
            b1.to_string(),
            format!("{}:1", dir.path().join("b.yml").display())
        );
    }

    #[test]
    fn a_duplicate_names_both_places_and_the_first_is_kept() {
        let dir = TestDir::new();
        let pod = |ip: &str| {
            format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nstatus:\n  podIP: {ip}\n")
        };
        dir.write("a.yaml", &pod("192.0.2.1"));
        // Same key: Pods without a namespace live in `default`.
        dir.write(
            "b.yaml",
            &format!("{}---\n{}", namespace("x"), pod("192.0.2.2")),
        );
        let snapshot = read_dir(dir.path()).expect("the directory exists");
        let problems = problem_texts(&snapshot);
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("b.yaml");
        assert_eq!(
            problems,
            [format!(
                "{}:6: Pod(default/web) is defined again here (first at {}:1); the first \
                 definition is used: remove or rename one of the two",
                b.display(),
                a.display()
            )]
        );
        let web = snapshot
            .objects
            .values()
            .find(|o| o.resource.kind() == Kind::Pod)
            .expect("the pod loaded");
        let Resource::Pod(pod) = &web.resource else {
            panic!("not a pod: {web:?}")
        };
        assert_eq!(pod.status.pod_ip.as_deref(), Some("192.0.2.1"));
    }

    #[test]
    fn only_visible_yaml_files_of_the_directory_itself_are_read() {
        let dir = TestDir::new();
        dir.write("a.yaml", &namespace("a"));
        dir.write(".a.yaml.swp", &namespace("swap"));
        dir.write(".hidden.yaml", &namespace("hidden"));
        dir.write("a.yaml~", &namespace("backup"));
        dir.write("notes.txt", &namespace("notes"));
        dir.write("sub/b.yaml", &namespace("sub"));
        let snapshot = read_dir(dir.path()).expect("the directory exists");
        assert_eq!(names(&snapshot), ["Namespace(a)"]);
        assert!(snapshot.problems.is_empty(), "{:?}", snapshot.problems);
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let dir = TestDir::new();
        let missing = dir.path().join("nope");
        let error = read_dir(&missing).expect_err("no such directory");
        assert_eq!(
            error.to_string(),
            format!(
                "cannot read the manifest directory {}: No such file or directory; create it \
                 or fix the path",
                missing.display()
            )
        );
        assert_eq!(
            error.remote_reason(),
            format!(
                "directory {}: No such file or directory; create it or fix spec.path",
                missing.display()
            )
        );
    }

    #[test]
    fn a_file_that_is_not_utf8_is_reported_and_skipped() {
        let dir = TestDir::new();
        dir.write_bytes("bad.yaml", b"kind: \xff\n");
        dir.write("good.yaml", &namespace("a"));
        let snapshot = read_dir(dir.path()).expect("the directory exists");
        assert_eq!(names(&snapshot), ["Namespace(a)"]);
        let problems = problem_texts(&snapshot);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(&format!(
                "{}: cannot read the file: ",
                dir.path().join("bad.yaml").display()
            )),
            "{problems:?}"
        );
    }
}
