//! Watches a manifest directory on a thread of its own and turns what changes in it into
//! updates: every object at start, `InSync`, then only the differences after each edit
//! (inotify, settled for ~100 ms so an editor's save is one re-read). A directory that
//! cannot be read is retried with backoff; a remote cluster's source reports its
//! connection state on the way.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashSet};
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::datastore::file::{
    DirRead, DirReader, FileDatastoreError, Location, Problem, ReadObject, is_federated,
};
use crate::datastore::manifest::Digest;
use crate::datastore::{Origin, RemoteClusterState, SinkClosed, Update, UpdateSink};
use crate::model::resources::ResourceKey;

/// How long the directory must stay unchanged before it is re-read: an editor's save is a
/// burst of events (write a temporary file, rename it, change attributes).
const QUIET_PERIOD: Duration = Duration::from_millis(100);
/// The longest a re-read waits for quiet, so that a directory written continuously is still
/// re-read well within a second.
const MAX_SETTLE: Duration = Duration::from_millis(400);
/// Re-read even without events now and then, in case one was lost (an inotify queue
/// overflow, a network filesystem).
const RESCAN_INTERVAL: Duration = Duration::from_secs(30);
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// What a source has sent, by key: the state its receiver holds. Hashed: a B-tree's
/// half-full nodes cost twice the memory when objects come in file order, not key order;
/// with foldhash, several times faster than SipHash on these short keys.
pub(crate) type Objects = HashMap<ResourceKey, SentObject>;

/// What a source remembers of an object it sent: enough to tell whether it changed, and
/// where it came from. Not the object itself, which the receiver holds.
#[derive(Clone, Debug)]
pub(crate) struct SentObject {
    location: Location,
    digest: Digest,
}

/// A running watch of one directory; dropping it stops the watch and waits for its thread.
#[derive(Debug)]
pub struct FileSource {
    dir: PathBuf,
    signals: Sender<Signal>,
    thread: Option<JoinHandle<Objects>>,
}

impl FileSource {
    /// Reads `dir`, sends every object tagged with `origin` and then `InSync`, and keeps
    /// sending the differences as the directory changes. A remote origin sends only the
    /// federated kinds, and its connection state as `RemoteState` updates. Fails when the
    /// directory cannot be read or watched now; later failures are retried.
    pub fn spawn<S: UpdateSink>(
        dir: impl Into<PathBuf>,
        origin: Origin,
        sink: S,
    ) -> Result<FileSource, FileDatastoreError> {
        let watch = Watch::new(dir.into(), origin, sink, Objects::default());
        let connection = watch.watch_dir()?;
        watch.start(Some(connection))
    }

    /// Like [`FileSource::spawn`], but a directory that cannot be read yet is retried rather
    /// than an error; `known` is what the receiver already holds from this origin (from an
    /// earlier source), so that only differences are sent.
    pub(crate) fn spawn_retrying<S: UpdateSink>(
        dir: PathBuf,
        origin: Origin,
        sink: S,
        known: Objects,
    ) -> Result<FileSource, FileDatastoreError> {
        Watch::new(dir, origin, sink, known).start(None)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the watch and returns what the receiver holds from it.
    pub(crate) fn stop(mut self) -> Objects {
        self.halt()
    }

    fn halt(&mut self) -> Objects {
        // The thread may have ended already (its receiver is gone): nothing to signal then.
        let _ = self.signals.send(Signal::Stop);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(objects)) => objects,
            Some(Err(_)) => {
                tracing::error!(dir = %self.dir.display(), "the thread watching the directory panicked");
                Objects::default()
            }
            None => Objects::default(),
        }
    }
}

impl Drop for FileSource {
    fn drop(&mut self) {
        self.halt();
    }
}

#[derive(Debug)]
enum Signal {
    Changed,
    Stop,
}

/// Why the watch loop ended: told to stop, or its receiver is gone.
struct Stopped;

impl From<SinkClosed> for Stopped {
    fn from(_: SinkClosed) -> Stopped {
        Stopped
    }
}

/// A live inotify watch of the directory, and which directory it watches: a directory
/// replaced by another of the same name (`mv new dir`) needs a new watch.
struct Connection {
    _watcher: RecommendedWatcher,
    identity: DirIdentity,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DirIdentity {
    device: u64,
    inode: u64,
}

impl DirIdentity {
    fn of(dir: &Path) -> Result<DirIdentity, FileDatastoreError> {
        use std::os::unix::fs::MetadataExt as _;
        let metadata =
            std::fs::metadata(dir).map_err(|error| FileDatastoreError::UnreadableDirectory {
                dir: dir.to_owned(),
                error,
            })?;
        Ok(DirIdentity {
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }
}

/// The state of one watch, owned by its thread.
struct Watch<S> {
    dir: PathBuf,
    origin: Origin,
    sink: S,
    signals: Receiver<Signal>,
    signal_sender: Sender<Signal>,
    sent: Objects,
    reader: DirReader,
    state: Option<RemoteClusterState>,
    problems: Vec<Problem>,
}

impl<S: UpdateSink> Watch<S> {
    fn new(dir: PathBuf, origin: Origin, sink: S, known: Objects) -> Watch<S> {
        let (signal_sender, signals) = mpsc::channel();
        Watch {
            reader: DirReader::new(dir.clone()),
            dir,
            origin,
            sink,
            signals,
            signal_sender,
            sent: known,
            state: None,
            problems: Vec::new(),
        }
    }

    fn start(self, connection: Option<Connection>) -> Result<FileSource, FileDatastoreError> {
        let dir = self.dir.clone();
        let signals = self.signal_sender.clone();
        let thread = thread::Builder::new()
            .name("fedwall-file".into())
            .spawn(move || self.run(connection))
            .map_err(|error| FileDatastoreError::Thread {
                dir: dir.clone(),
                error,
            })?;
        Ok(FileSource {
            dir,
            signals,
            thread: Some(thread),
        })
    }

    fn run(mut self, connection: Option<Connection>) -> Objects {
        let span =
            tracing::info_span!("file datastore", dir = %self.dir.display(), origin = %self.origin);
        let _entered = span.enter();
        // Ends only when told to stop or when nobody receives any more.
        let _: Result<(), Stopped> = self.watch(connection);
        self.sent
    }

    fn watch(&mut self, mut connection: Option<Connection>) -> Result<(), Stopped> {
        self.report(RemoteClusterState::Connecting)?;
        let mut retry = FIRST_RETRY;
        loop {
            // Watch the directory, then read it: in this order, so no edit falls between.
            let connected = match connection.take() {
                Some(connection) => Ok(connection),
                None => self.watch_dir(),
            };
            let read = match connected {
                Ok(connection) => {
                    self.report(RemoteClusterState::ResyncInProgress)?;
                    self.first_read()?.map(|read| (connection, read))
                }
                Err(error) => Err(error),
            };
            let (mut connection, read) = match read {
                Ok(connected) => connected,
                Err(error) => {
                    self.fail(&error)?;
                    self.wait_until(Instant::now() + retry, retry)?;
                    retry = (retry * 2).min(MAX_RETRY);
                    continue;
                }
            };
            retry = FIRST_RETRY;
            self.apply(read)?;
            self.sink.send(Update::InSync {
                origin: self.origin.clone(),
            })?;
            self.report(RemoteClusterState::InSync)?;
            loop {
                self.next_change()?;
                match self.refresh(&mut connection) {
                    Ok(snapshot) => self.apply(snapshot)?,
                    Err(error) => {
                        self.fail(&error)?;
                        break;
                    }
                }
            }
        }
    }

    /// Reads the directory, parsing what changed since the last read.
    fn read(&mut self) -> Result<DirRead, FileDatastoreError> {
        self.reader
            .read(|key| self.sent.get(key).map(|sent| sent.digest), None)
    }

    /// The read after (re)connecting. With nothing sent yet, objects are sent as their
    /// files are parsed, so that the receiver starts at once and a large directory is never
    /// held whole; with objects sent before, differences are sent once all is read (see
    /// [`Watch::apply`]). `Ok(Err(_))` when the directory cannot be read.
    fn first_read(&mut self) -> Result<Result<DirRead, FileDatastoreError>, Stopped> {
        if !self.sent.is_empty() {
            return Ok(self.read());
        }
        let (origin, sink, sent) = (&self.origin, &mut self.sink, &mut self.sent);
        let mut closed = false;
        let mut send = |key: &ResourceKey, location: Location, digest: Digest, resource| {
            // A remote cluster's other kinds are left out by apply, quietly here.
            if closed || (matches!(origin, Origin::Remote(_)) && !key.kind.is_federated()) {
                return;
            }
            let update = Update::Set {
                origin: origin.clone(),
                resource,
            };
            match sink.send(update) {
                Ok(()) => {
                    sent.insert(key.clone(), SentObject { location, digest });
                }
                Err(SinkClosed) => closed = true,
            }
        };
        let read = self.reader.read(|_| None, Some(&mut send));
        if closed {
            return Err(Stopped);
        }
        Ok(read)
    }

    fn watch_dir(&self) -> Result<Connection, FileDatastoreError> {
        let identity = DirIdentity::of(&self.dir)?;
        let watch_error = |error| FileDatastoreError::Watch {
            dir: self.dir.clone(),
            error,
        };
        let signals = self.signal_sender.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if is_change(&event) {
                    // The thread may be gone already, with the watcher about to be dropped.
                    let _ = signals.send(Signal::Changed);
                }
            })
            .map_err(watch_error)?;
        watcher
            .watch(&self.dir, RecursiveMode::NonRecursive)
            .map_err(watch_error)?;
        Ok(Connection {
            _watcher: watcher,
            identity,
        })
    }

    fn refresh(&mut self, connection: &mut Connection) -> Result<DirRead, FileDatastoreError> {
        if DirIdentity::of(&self.dir)? != connection.identity {
            tracing::info!("the directory was replaced; watching the new one");
            *connection = self.watch_dir()?;
        }
        self.read()
    }

    /// Waits for the directory to change (or for the periodic re-read), then for it to
    /// settle.
    fn next_change(&self) -> Result<(), Stopped> {
        match self.signals.recv_timeout(RESCAN_INTERVAL) {
            Ok(Signal::Changed) => self.wait_until(Instant::now() + MAX_SETTLE, QUIET_PERIOD),
            Err(RecvTimeoutError::Timeout) => Ok(()),
            Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => Err(Stopped),
        }
    }

    /// Consumes change signals until `deadline`, or until none came for `quiet`.
    fn wait_until(&self, deadline: Instant, quiet: Duration) -> Result<(), Stopped> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            match self.signals.recv_timeout(quiet.min(left)) {
                Ok(Signal::Changed) => {}
                Err(RecvTimeoutError::Timeout) => return Ok(()),
                Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => return Err(Stopped),
            }
        }
    }

    /// Sends what differs between what the receiver holds and what was read.
    fn apply(&mut self, read: DirRead) -> Result<(), Stopped> {
        let DirRead {
            mut objects,
            problems,
            complete,
        } = read;
        if let Origin::Remote(_) = self.origin {
            objects.retain(|object| is_federated(&object.key, &object.location));
        }
        self.log_new_problems(problems);
        // Objects taken early are left out of a read: none of what was sent is gone then.
        let mut gone = if complete {
            self.gone(&objects)
        } else {
            Vec::new()
        };
        gone.sort_unstable();
        // Deletions first: a pod replaced by another with its IP must not share it meanwhile.
        for key in gone {
            self.sent.remove(&key);
            self.sink.send(Update::Delete {
                origin: self.origin.clone(),
                key,
            })?;
        }
        // The bookkeeping first, the sends last: this thread is then idle while the
        // receiver works on them.
        let mut changed = Vec::new();
        for object in objects {
            let sent = SentObject {
                location: object.location,
                digest: object.digest,
            };
            match self.sent.get_mut(&object.key) {
                // Unchanged, perhaps moved within its file or to another.
                Some(held) if held.digest == object.digest => *held = sent,
                _ => {
                    let Some(resource) = object.resource else {
                        // The reader parses every file whose objects differ from what was
                        // sent; left out of `sent`, the object is read again next time.
                        tracing::error!(
                            "{} at {} changed but was not parsed",
                            object.key,
                            sent.location
                        );
                        continue;
                    };
                    changed.push(*resource);
                    self.sent.insert(object.key, sent);
                }
            }
        }
        for resource in changed {
            self.sink.send(Update::Set {
                origin: self.origin.clone(),
                resource,
            })?;
        }
        Ok(())
    }

    /// What was sent and is not among `objects`, except objects of files that now have a
    /// document that does not load: the broken document may be that object mid-edit, and
    /// deleting a policy or a pod for a typo would change enforcement. They are kept as
    /// they were until fixing or removing the document settles it.
    fn gone(&self, objects: &[ReadObject]) -> Vec<ResourceKey> {
        let read: HashSet<&ResourceKey> = objects.iter().map(|object| &object.key).collect();
        let broken: BTreeSet<&Path> = self
            .problems
            .iter()
            .filter(|problem| problem.may_hide_objects())
            .map(|problem| &*problem.location.file)
            .collect();
        let mut gone = Vec::new();
        for (key, sent) in &self.sent {
            if read.contains(key) {
                continue;
            }
            if broken.contains(&*sent.location.file) {
                tracing::warn!(
                    "keeping {key} as last read from {}: its file has a document that does not load",
                    sent.location
                );
            } else {
                gone.push(key.clone());
            }
        }
        gone
    }

    /// Logs each problem once, not at every re-read.
    fn log_new_problems(&mut self, problems: Vec<Problem>) {
        for problem in problems.iter().filter(|p| !self.problems.contains(p)) {
            tracing::warn!("skipped: {problem}");
        }
        self.problems = problems;
    }

    fn fail(&mut self, error: &FileDatastoreError) -> Result<(), Stopped> {
        let reason = match self.origin {
            Origin::Local => format!("{error}; keeping the objects last read"),
            Origin::Remote(_) => error.remote_reason(),
        };
        self.report(RemoteClusterState::ConnectionFailed(reason))
    }

    /// Records the source's state; a remote source also sends it. Each change once.
    fn report(&mut self, state: RemoteClusterState) -> Result<(), Stopped> {
        if self.state.as_ref() == Some(&state) {
            return Ok(());
        }
        match state.problem() {
            Some(problem) => tracing::warn!("{problem}"),
            None => tracing::debug!(state = state.name()),
        }
        self.state = Some(state.clone());
        if let Origin::Remote(cluster) = &self.origin {
            self.sink.send(Update::RemoteState {
                cluster: cluster.clone(),
                state,
            })?;
        }
        Ok(())
    }
}

/// Whether an event may mean a manifest changed: anything but reads, which inotify reports
/// too (including this watch's own re-reads, which would otherwise loop).
fn is_change(event: &notify::Result<notify::Event>) -> bool {
    match event {
        Ok(event) => !matches!(
            event.kind,
            EventKind::Access(kind) if kind != AccessKind::Close(AccessMode::Write)
        ),
        // An error (a queue overflow) may hide changes: re-read to be sure.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::datastore::testdir::{TestDir, namespace, next, pod, until};
    use crate::model::resources::Kind;

    fn set_name(update: &Update) -> Option<String> {
        match update {
            Update::Set {
                origin: Origin::Local,
                resource,
            } => Some(resource.key().to_string()),
            _ => None,
        }
    }

    /// The next update, which must set the object named `name` (as `Kind(name)`).
    fn expect_set(updates: &Receiver<Update>, name: &str) -> Update {
        let update = next(updates, name);
        assert_eq!(set_name(&update).as_deref(), Some(name), "{update:?}");
        update
    }

    fn deleted(name: &str) -> Update {
        Update::Delete {
            origin: Origin::Local,
            key: ResourceKey {
                kind: Kind::Namespace,
                namespace: None,
                name: name.into(),
            },
        }
    }

    fn labels_of(update: &Update) -> Vec<(String, String)> {
        match update {
            Update::Set { resource, .. } => {
                resource.metadata().labels.clone().into_iter().collect()
            }
            other => panic!("expected a Set, got {other:?}"),
        }
    }

    /// A source over a directory holding namespaces `a` (in a.yaml) and `b` (in b.yaml),
    /// past its initial updates.
    fn started() -> (TestDir, FileSource, Receiver<Update>) {
        let dir = TestDir::new();
        dir.write("a.yaml", &namespace("a"));
        dir.write("b.yaml", &namespace("b"));
        let (sender, updates) = mpsc::channel();
        let source = FileSource::spawn(dir.path(), Origin::Local, sender).expect("spawn");
        let initial: Vec<Update> = (0..3).map(|_| next(&updates, "the initial sync")).collect();
        let names: Vec<Option<String>> = initial.iter().map(set_name).collect();
        assert_eq!(
            names,
            [
                Some("Namespace(a)".into()),
                Some("Namespace(b)".into()),
                None
            ]
        );
        assert_eq!(
            initial[2],
            Update::InSync {
                origin: Origin::Local
            }
        );
        (dir, source, updates)
    }

    #[test]
    fn a_new_file_sends_its_objects_and_nothing_else() {
        let (dir, _source, updates) = started();
        dir.write("c.yaml", &[namespace("c"), namespace("d")].join("---\n"));
        expect_set(&updates, "Namespace(c)");
        expect_set(&updates, "Namespace(d)");
    }

    #[test]
    fn an_edit_in_place_sends_the_changed_object_only() {
        let (dir, _source, updates) = started();
        // One write at offset 0, no truncation: the file is never seen half-written.
        let labelled = format!("{}  labels: {{team: shop}}\n", namespace("a"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("a.yaml"))
            .expect("open a.yaml");
        file.write_all(labelled.as_bytes()).expect("write a.yaml");
        drop(file);
        let update = expect_set(&updates, "Namespace(a)");
        assert_eq!(labels_of(&update), [("team".into(), "shop".into())]);
    }

    #[test]
    fn a_file_renamed_into_place_replaces_the_old_one() {
        let (dir, _source, updates) = started();
        // As editors save: write a hidden temporary file (ignored), then rename it.
        dir.write(
            ".b.yaml.swp",
            &format!("{}  labels: {{x: y}}\n", namespace("b")),
        );
        dir.rename(".b.yaml.swp", "b.yaml");
        let update = expect_set(&updates, "Namespace(b)");
        assert_eq!(labels_of(&update), [("x".into(), "y".into())]);
    }

    #[test]
    fn a_deleted_file_deletes_its_objects() {
        let (dir, _source, updates) = started();
        dir.remove("a.yaml");
        assert_eq!(next(&updates, "the deletion"), deleted("a"));
        // And a renamed-away file too.
        dir.rename("b.yaml", "b.yaml.orig");
        assert_eq!(next(&updates, "the deletion"), deleted("b"));
    }

    #[test]
    fn an_object_whose_file_breaks_is_kept_until_the_file_is_fixed() {
        let (dir, _source, updates) = started();
        dir.write(
            "a.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: [a\n",
        );
        // Something to wait for that comes after the broken file was read.
        dir.write("c.yaml", &namespace("c"));
        expect_set(&updates, "Namespace(c)");
        dir.write("a.yaml", &namespace("z"));
        assert_eq!(next(&updates, "a's deletion"), deleted("a"));
        expect_set(&updates, "Namespace(z)");
    }

    #[test]
    fn dropping_the_source_stops_its_thread() {
        let (_dir, source, updates) = started();
        drop(source);
        // Dropping waits for the thread, which owned the only sender.
        assert_eq!(updates.try_recv(), Err(mpsc::TryRecvError::Disconnected));
    }

    #[test]
    fn a_directory_that_cannot_be_read_at_start_is_an_error() {
        let dir = TestDir::new();
        let (sender, _updates) = mpsc::channel();
        let missing = dir.path().join("missing");
        let error = FileSource::spawn(&missing, Origin::Local, sender).expect_err("missing");
        assert!(
            matches!(&error, FileDatastoreError::UnreadableDirectory { dir, .. } if *dir == missing),
            "{error}"
        );
    }

    #[test]
    fn a_directory_that_vanishes_keeps_its_objects_until_it_is_back() {
        let root = TestDir::new();
        root.write(
            "b/pods.yaml",
            &[pod("web", "web"), pod("old", "old")].join("---\n"),
        );
        let (sender, updates) = mpsc::channel();
        let origin = Origin::Remote("b".into());
        let _source =
            FileSource::spawn(root.path().join("b"), origin.clone(), sender).expect("spawn");
        let is_state = |update: &Update, name: &str| matches!(update, Update::RemoteState { state, .. } if state.name() == name);
        until(&updates, "the first sync", |u| is_state(u, "InSync"));
        root.rename("b", "b-gone");
        // Failing is reported, and nothing is deleted: the data may well come back.
        let update = next(&updates, "the failure");
        assert!(is_state(&update, "ConnectionFailed"), "{update:?}");
        // A new directory in its place, with one pod changed and one gone.
        root.write("staging/pods.yaml", &pod("web", "web-v2"));
        root.rename("staging", "b");
        let seen = until(&updates, "the second sync", |u| is_state(u, "InSync"));
        let changes: Vec<String> = seen
            .iter()
            .filter_map(|update| match update {
                Update::Set { resource, .. } => Some(format!("+{}", resource.key())),
                Update::Delete { key, .. } => Some(format!("-{key}")),
                _ => None,
            })
            .collect();
        assert_eq!(changes, ["-Pod(shop/old)", "+Pod(shop/web)"]);
        assert!(is_state(&seen[0], "ResyncInProgress"), "{seen:?}");
    }

    #[test]
    fn a_remote_source_sends_federated_kinds_and_its_state() {
        let dir = TestDir::new();
        dir.write(
            "all.yaml",
            &[
                pod("web", "web"),
                "apiVersion: fedwall.io/v1alpha1\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\n"
                    .into(),
                namespace("shop"),
            ]
            .join("---\n"),
        );
        let (sender, updates) = mpsc::channel();
        let origin = Origin::Remote("b".into());
        let _source = FileSource::spawn(dir.path(), origin.clone(), sender).expect("spawn");
        let state = |state| Update::RemoteState {
            cluster: "b".into(),
            state,
        };
        assert_eq!(
            next(&updates, "Connecting"),
            state(RemoteClusterState::Connecting)
        );
        assert_eq!(
            next(&updates, "ResyncInProgress"),
            state(RemoteClusterState::ResyncInProgress)
        );
        let kinds: Vec<Kind> = (0..2)
            .map(|_| match next(&updates, "a federated object") {
                Update::Set {
                    origin: o,
                    resource,
                } if o == origin => resource.kind(),
                other => panic!("expected a Set from {origin}, got {other:?}"),
            })
            .collect();
        assert_eq!(kinds, [Kind::Pod, Kind::Namespace]);
        assert_eq!(next(&updates, "InSync"), Update::InSync { origin });
        assert_eq!(
            next(&updates, "state InSync"),
            state(RemoteClusterState::InSync)
        );
        assert_eq!(updates.try_recv(), Err(mpsc::TryRecvError::Empty));
    }
}
