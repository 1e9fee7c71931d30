//! The file datastore (`--datastore file:DIR`): reads a directory of YAML manifests into a
//! snapshot of objects, each with the file and line it came from, and the problems found.
//! A bad document is reported and skipped; the rest of the directory still loads.
//!
//! Only the directory's own `*.yaml` and `*.yml` files are read, not subdirectories: a
//! cluster is one directory, and the directories of remote clusters can then sit beside
//! it (see examples/). Hidden files (editor swap files, Kubernetes' `..data` links) are
//! skipped; symbolic links to files are followed.

use std::collections::BTreeMap;
use std::collections::hash_map::Entry;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::hash::BuildHasher as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use foldhash::{HashMap, HashMapExt as _, HashSet};

use crate::datastore::manifest::{Digest, DocumentError, split_documents};
use crate::model::resources::{Resource, ResourceKey};

/// Where an object or a problem was found.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// Shared by every object and problem of the file.
    pub file: Arc<Path>,
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
    let read = DirReader::new(dir).read(|_| None, None)?;
    let objects = read
        .objects
        .into_iter()
        // A first read parses every file, so every object comes with its resource.
        .filter_map(|object| {
            let resource = *object.resource?;
            let location = object.location;
            Some((object.key, LoadedObject { resource, location }))
        })
        .collect();
    Ok(DirSnapshot {
        dir: dir.to_owned(),
        objects,
        problems: read.problems,
    })
}

/// `*.yaml` and `*.yml`, not hidden: editors' swap and backup files (`.x.swp`, `x.yaml~`,
/// `#x.yaml#`) and Kubernetes' `..data` are left out by these two rules.
fn is_manifest_name(name: &OsStr) -> bool {
    name.to_str().is_some_and(|name| {
        !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
    })
}

impl DirSnapshot {
    /// Drops every object of a kind a remote cluster does not contribute (policies, pools,
    /// its own RemoteClusterConfigurations): only endpoint data is federated.
    pub fn retain_federated_kinds(&mut self) {
        self.objects
            .retain(|key, object| is_federated(key, &object.location));
    }
}

/// Whether an object of a remote cluster counts; logs the ones that do not.
pub(crate) fn is_federated(key: &ResourceKey, location: &Location) -> bool {
    let federated = key.kind.is_federated();
    if !federated {
        tracing::debug!("{key} at {location} is not federated; ignored");
    }
    federated
}

/// How long ago a file must have last changed for its timestamps to tell a later change
/// apart (coarse file system clocks tick in milliseconds, some in seconds). A file changed
/// more recently is parsed again at every read until it has settled.
const SETTLED: Duration = Duration::from_secs(2);

/// Reads one directory again and again, parsing only the files that changed since the last
/// read: an edit to one small file of a directory of 30,000 pods costs that file's parse.
/// What it keeps of each file is a digest per object, not the objects.
#[derive(Debug)]
pub(crate) struct DirReader {
    dir: PathBuf,
    files: BTreeMap<Arc<Path>, ParsedFile>,
    /// [`SETTLED`], but for tests.
    settled: Duration,
}

/// What one file held when it was last parsed.
#[derive(Debug)]
struct ParsedFile {
    /// `None` when the file must be parsed again at the next read: it had not settled, or
    /// could not be read.
    fingerprint: Option<Fingerprint>,
    /// Every document that loaded, in file order.
    objects: Vec<ObjectDigest>,
    /// The documents that did not load, or the file itself.
    problems: Vec<Problem>,
}

#[derive(Debug)]
struct ObjectDigest {
    key: ResourceKey,
    line: usize,
    digest: Digest,
}

/// Which content a file has, as far as its metadata tells: any write changes the change
/// time, which no one can set back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl Fingerprint {
    /// Following links; `None` for anything but a regular file.
    fn of(file: &Path) -> Option<Fingerprint> {
        use std::os::unix::fs::MetadataExt as _;
        let metadata = fs::metadata(file).ok().filter(fs::Metadata::is_file)?;
        Some(Fingerprint {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
        })
    }

    fn has_settled(&self, settled: Duration) -> bool {
        let settled_before = SystemTime::now()
            .checked_sub(settled)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        settled_before.is_some_and(|before| {
            let (seconds, nanos) = self.changed;
            u64::try_from(seconds).is_ok_and(|seconds| {
                Duration::new(seconds, u32::try_from(nanos).unwrap_or(0)) < before
            })
        })
    }
}

/// Takes objects as soon as they are parsed: key, where, digest, the object.
pub(crate) type EarlyObjects<'a> = dyn FnMut(&ResourceKey, Location, Digest, Resource) + 'a;

/// One read of a directory: every object it defines (the first definition of each), in
/// file order then document order, and the problems, in file order then line order.
#[derive(Debug)]
pub(crate) struct DirRead {
    pub objects: Vec<ReadObject>,
    pub problems: Vec<Problem>,
    /// Whether `objects` lists every object: not when objects were taken early, which are
    /// left out.
    pub complete: bool,
}

#[derive(Debug)]
pub(crate) struct ReadObject {
    pub key: ResourceKey,
    pub location: Location,
    pub digest: Digest,
    /// The object, when this read parsed it, it was not taken early, and the caller does
    /// not hold its digest already. An object whose file was not parsed (it had not
    /// changed) has none: it has the digest the caller was told is held.
    pub resource: Option<Box<Resource>>,
}

/// Where each object is first defined, and where it is defined again, as indexes into a
/// read's files and each file's objects; both in file order then document order.
struct Definitions {
    first: Vec<(usize, usize)>,
    /// Each later definition, with the first one.
    again: Vec<((usize, usize), (usize, usize))>,
}

impl DirReader {
    pub fn new(dir: impl Into<PathBuf>) -> DirReader {
        DirReader {
            dir: dir.into(),
            files: BTreeMap::new(),
            settled: SETTLED,
        }
    }

    /// Reads the directory. `held` is the digest the caller holds for an object: only an
    /// object whose digest differs comes with its resource, and an object from an unchanged
    /// file whose digest differs (a duplicate that now comes first) has its file parsed.
    ///
    /// `early`, if given, takes each object the caller lacks as soon as it is parsed
    /// (files are parsed in name order, so the first definition comes first), and the
    /// result leaves it out: a first read of a large directory then streams, one document
    /// at a time, instead of holding a file's objects at once.
    pub fn read(
        &mut self,
        held: impl Fn(&ResourceKey) -> Option<Digest>,
        mut early: Option<&mut EarlyObjects<'_>>,
    ) -> Result<DirRead, FileDatastoreError> {
        let files = self.list()?;
        self.files
            .retain(|file, _| files.binary_search(file).is_ok());
        // The objects parsed by this read, not taken early, that the caller lacks: by index
        // of their file and index among its objects.
        let mut fresh: HashMap<(usize, usize), Resource> = HashMap::new();
        let mut parsed = vec![false; files.len()];
        // By file, whether each object parsed by this read was taken early.
        let mut taken: Vec<Vec<bool>> = vec![Vec::new(); files.len()];
        // Keys met so far, as hashes (the files' keys cannot be borrowed while files are
        // parsed): a collision only sends that object with the rest, not early. No hash met
        // twice means no key defined twice: the first definitions need no lookup then.
        let mut seen = HashSet::default();
        let mut unique = true;
        let hasher = foldhash::fast::RandomState::default();
        for (index, file) in files.iter().enumerate() {
            let unchanged = self.files.get(file).is_some_and(|parsed| {
                parsed.fingerprint.is_some() && parsed.fingerprint == Fingerprint::of(file)
            });
            if unchanged {
                for object in &self.files[file].objects {
                    unique &= seen.insert(hasher.hash_one(&object.key));
                }
                continue;
            }
            parsed[index] = true;
            let taken = &mut taken[index];
            self.parse(file, |n, key, line, digest, resource| {
                let first = seen.insert(hasher.hash_one(key));
                unique &= first;
                let lacks = held(key) != Some(digest);
                if let Some(early) = early.as_mut().filter(|_| first && lacks) {
                    let location = Location {
                        file: file.clone(),
                        line: Some(line),
                    };
                    early(key, location, digest, resource);
                    taken.push(true);
                    return;
                }
                taken.push(false);
                if lacks {
                    fresh.insert((index, n), resource);
                }
            });
        }
        let mut definitions = if unique {
            self.in_file_order(&files)
        } else {
            self.definitions(&files)
        };
        loop {
            let lacking = self.lacking(&files, &definitions, &parsed, &held);
            if lacking.is_empty() {
                let mut read = self.collect(&files, definitions, fresh, &taken);
                read.complete = early.is_none();
                return Ok(read);
            }
            for index in lacking {
                parsed[index] = true;
                self.parse(&files[index], |n, key, _, digest, resource| {
                    if held(key) != Some(digest) {
                        fresh.insert((index, n), resource);
                    }
                });
            }
            // Parsed again, a file may define other objects now.
            definitions = self.definitions(&files);
        }
    }

    /// The files holding a first definition the caller lacks and this read has not parsed
    /// (a duplicate that now comes first, its file unchanged), in name order.
    fn lacking(
        &self,
        files: &[Arc<Path>],
        definitions: &Definitions,
        parsed: &[bool],
        held: &impl Fn(&ResourceKey) -> Option<Digest>,
    ) -> Vec<usize> {
        let mut lacking = Vec::new();
        let mut first = definitions.first.iter().peekable();
        for (index, file) in files.iter().enumerate() {
            let objects = &self.files[file].objects;
            let mut lacks = false;
            while let Some(&(_, n)) = first.next_if(|(of, _)| *of == index) {
                lacks = lacks || !parsed[index] && held(&objects[n].key) != Some(objects[n].digest);
            }
            if lacks {
                lacking.push(index);
            }
        }
        lacking
    }

    /// The directory's manifests, in name order.
    fn list(&self) -> Result<Vec<Arc<Path>>, FileDatastoreError> {
        let unreadable = |error| FileDatastoreError::UnreadableDirectory {
            dir: self.dir.clone(),
            error,
        };
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(unreadable)? {
            let name = entry.map_err(unreadable)?.file_name();
            // Following links; a directory or socket named like a manifest is not one.
            let file = self.dir.join(&name);
            if is_manifest_name(&name) && fs::metadata(&file).is_ok_and(|m| m.is_file()) {
                files.push(Arc::from(file));
            }
        }
        files.sort();
        Ok(files)
    }

    /// Parses one file and remembers its digests. Each object is handed to `take` as soon
    /// as its document is parsed, with its index among the file's objects, key, line and
    /// digest: nothing of the file but its text is held meanwhile.
    fn parse(
        &mut self,
        file: &Arc<Path>,
        mut take: impl FnMut(usize, &ResourceKey, usize, Digest, Resource),
    ) {
        let before = Fingerprint::of(file);
        let mut parsed = ParsedFile {
            fingerprint: None,
            objects: Vec::new(),
            problems: Vec::new(),
        };
        match fs::read_to_string(file) {
            Ok(text) => {
                for document in split_documents(&text) {
                    match document.parse() {
                        Ok(resource) => {
                            let object = ObjectDigest {
                                key: resource.key(),
                                line: document.line,
                                digest: document.digest(),
                            };
                            let n = parsed.objects.len();
                            take(n, &object.key, object.line, object.digest, resource);
                            parsed.objects.push(object);
                        }
                        Err(error) => parsed.problems.push(Problem {
                            location: Location {
                                file: file.clone(),
                                line: Some(document.line),
                            },
                            kind: ProblemKind::Document(error),
                        }),
                    }
                }
                // Unchanged while it was read, and old enough that a later write shows.
                parsed.fingerprint = before
                    .filter(|before| Some(*before) == Fingerprint::of(file))
                    .filter(|fingerprint| fingerprint.has_settled(self.settled));
            }
            Err(error) => parsed.problems.push(Problem {
                location: Location {
                    file: file.clone(),
                    line: None,
                },
                kind: ProblemKind::UnreadableFile(os_message(&error)),
            }),
        }
        parsed.objects.shrink_to_fit();
        self.files.insert(file.clone(), parsed);
    }

    /// Every object as its first definition: when no key is defined twice.
    fn in_file_order(&self, files: &[Arc<Path>]) -> Definitions {
        let first = files
            .iter()
            .enumerate()
            .flat_map(|(index, file)| (0..self.files[file].objects.len()).map(move |n| (index, n)))
            .collect();
        Definitions {
            first,
            again: Vec::new(),
        }
    }

    /// Where each object is first defined, and where again.
    fn definitions(&self, files: &[Arc<Path>]) -> Definitions {
        let count = files
            .iter()
            .map(|file| self.files[file].objects.len())
            .sum();
        let mut first_at: HashMap<&ResourceKey, (usize, usize)> = HashMap::with_capacity(count);
        let mut definitions = Definitions {
            first: Vec::with_capacity(count),
            again: Vec::new(),
        };
        for (index, file) in files.iter().enumerate() {
            for (n, object) in self.files[file].objects.iter().enumerate() {
                match first_at.entry(&object.key) {
                    Entry::Vacant(entry) => {
                        entry.insert((index, n));
                        definitions.first.push((index, n));
                    }
                    Entry::Occupied(entry) => definitions.again.push(((index, n), *entry.get())),
                }
            }
        }
        definitions
    }

    fn collect(
        &self,
        files: &[Arc<Path>],
        definitions: Definitions,
        mut fresh: HashMap<(usize, usize), Resource>,
        taken: &[Vec<bool>],
    ) -> DirRead {
        let object_at = |(index, n): (usize, usize)| {
            let object = &self.files[&files[index]].objects[n];
            let location = Location {
                file: files[index].clone(),
                line: Some(object.line),
            };
            (object, location)
        };
        let mut problems = Vec::new();
        let mut again = definitions.again.into_iter().peekable();
        for (index, file) in files.iter().enumerate() {
            let mut of_file = self.files[file].problems.clone();
            while let Some((at, first)) = again.next_if(|((of, _), _)| *of == index) {
                let (object, location) = object_at(at);
                of_file.push(Problem {
                    location,
                    kind: ProblemKind::Duplicate {
                        key: object.key.clone(),
                        first: object_at(first).1,
                    },
                });
            }
            of_file.sort_by(|a, b| a.location.cmp(&b.location));
            problems.extend(of_file);
        }
        let mut objects = Vec::with_capacity(definitions.first.len());
        let mut first = definitions.first.into_iter().peekable();
        for (index, file) in files.iter().enumerate() {
            let parsed = &self.files[file];
            while let Some((_, n)) = first.next_if(|(of, _)| *of == index) {
                if taken[index].get(n) == Some(&true) {
                    continue;
                }
                let object = &parsed.objects[n];
                objects.push(ReadObject {
                    key: object.key.clone(),
                    location: Location {
                        file: file.clone(),
                        line: Some(object.line),
                    },
                    digest: object.digest,
                    resource: fresh.remove(&(index, n)).map(Box::new),
                });
            }
        }
        DirRead {
            objects,
            problems,
            complete: true,
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

    /// A reader that trusts timestamps at once, as if every file had settled.
    fn trusting_reader(dir: &TestDir) -> DirReader {
        DirReader {
            settled: Duration::ZERO,
            ..DirReader::new(dir.path())
        }
    }

    /// The digest each object of `read` has, as a caller holding all of them would answer.
    fn held(read: &DirRead) -> impl Fn(&ResourceKey) -> Option<Digest> + '_ {
        |key| {
            let object = read.objects.iter().find(|object| object.key == *key);
            object.map(|object| object.digest)
        }
    }

    fn parsed_names(read: &DirRead) -> Vec<String> {
        read.objects
            .iter()
            .filter(|object| object.resource.is_some())
            .map(|object| object.key.to_string())
            .collect()
    }

    #[test]
    fn a_reread_brings_only_the_objects_the_caller_lacks() {
        let dir = TestDir::new();
        dir.write("a.yaml", &namespace("a"));
        dir.write("b.yaml", &namespace("b"));
        let mut reader = trusting_reader(&dir);
        let first = reader.read(|_| None, None).expect("readable");
        assert_eq!(parsed_names(&first), ["Namespace(a)", "Namespace(b)"]);
        dir.write("b.yaml", &[namespace("b"), namespace("c")].join("---\n"));
        let second = reader.read(held(&first), None).expect("readable");
        assert_eq!(parsed_names(&second), ["Namespace(c)"]);
        let names: Vec<String> = second.objects.iter().map(|o| o.key.to_string()).collect();
        assert_eq!(names, ["Namespace(a)", "Namespace(b)", "Namespace(c)"]);
        assert_eq!(object(&second, "a").digest, object(&first, "a").digest);
        assert_eq!(
            object(&second, "b").location.to_string(),
            format!("{}:1", dir.path().join("b.yaml").display())
        );
    }

    fn object<'r>(read: &'r DirRead, name: &str) -> &'r ReadObject {
        read.objects
            .iter()
            .find(|object| object.key.name == name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", read.objects))
    }

    #[test]
    fn a_file_rewritten_within_its_timestamps_resolution_is_parsed_again() {
        let dir = TestDir::new();
        dir.write("a.yaml", &namespace("a"));
        // The real reader: a file changed just now may change again within the same tick
        // of the file system's clock, with the same size.
        let mut reader = DirReader::new(dir.path());
        let first = reader.read(|_| None, None).expect("readable");
        dir.write("a.yaml", &namespace("z"));
        let second = reader.read(held(&first), None).expect("readable");
        assert_eq!(parsed_names(&second), ["Namespace(z)"]);
    }

    #[test]
    fn a_duplicate_that_comes_first_after_an_edit_is_parsed_from_its_unchanged_file() {
        let dir = TestDir::new();
        let labelled = |team: &str| format!("{}  labels: {{team: {team}}}\n", namespace("x"));
        dir.write("a.yaml", &labelled("a"));
        dir.write("b.yaml", &labelled("b"));
        let mut reader = trusting_reader(&dir);
        let first = reader.read(|_| None, None).expect("readable");
        assert_eq!(first.problems.len(), 1, "{:?}", first.problems);
        dir.write("a.yaml", &namespace("other"));
        let second = reader.read(held(&first), None).expect("readable");
        let x = object(&second, "x").resource.as_deref();
        let Some(Resource::Namespace(namespace)) = x else {
            panic!("b.yaml's x, parsed: {x:?}");
        };
        assert_eq!(namespace.metadata.labels["team"], "b");
        assert!(second.problems.is_empty(), "{:?}", second.problems);
    }

    #[test]
    fn a_first_read_hands_over_each_first_definition_early_and_leaves_them_out() {
        let dir = TestDir::new();
        let labelled = |team: &str| format!("{}  labels: {{team: {team}}}\n", namespace("x"));
        dir.write("a.yaml", &labelled("a"));
        dir.write("b.yaml", &[labelled("b"), namespace("y")].join("---\n"));
        let mut taken = Vec::new();
        let mut early = |key: &ResourceKey, location: Location, _: Digest, resource: Resource| {
            let team = resource.metadata().labels.get("team").cloned();
            taken.push((key.to_string(), location.to_string(), team));
        };
        let read = trusting_reader(&dir)
            .read(|_| None, Some(&mut early))
            .expect("readable");
        let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        assert_eq!(
            taken,
            [
                (
                    "Namespace(x)".to_owned(),
                    format!("{}:1", a.display()),
                    Some("a".to_owned())
                ),
                (
                    "Namespace(y)".to_owned(),
                    format!("{}:7", b.display()),
                    None
                ),
            ]
        );
        assert!(read.objects.is_empty(), "{:?}", read.objects);
        assert!(!read.complete);
        let problems: Vec<String> = read.problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(&format!("{}:1: Namespace(x) is defined again", b.display())),
            "{problems:?}"
        );
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
