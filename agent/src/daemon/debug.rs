//! The debug API: a unix socket on which node-level commands (`fedwall eval`) ask the
//! running agent, and get its exact view. One JSON request per line, one JSON response
//! per line. The socket is root-only (mode 0600): it reveals every endpoint's address.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use super::{DebugRequest, DebugResponse, Event, EventSender};

/// Listens on `path` (replacing a stale socket) and forwards requests to the main loop.
pub fn serve(path: &Path, events: EventSender) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("fedwall-debug".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(error) = respond(stream, &events) {
                    tracing::debug!(%error, "debug request failed");
                }
            }
        })?;
    Ok(())
}

fn respond(stream: UnixStream, events: &EventSender) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    let mut reader = BufReader::new(stream);
    reader.read_line(&mut line)?;
    let response = match serde_json::from_str::<DebugRequest>(&line) {
        Err(e) => DebugResponse::Error(format!("not a debug request: {e}")),
        Ok(request) => {
            let (reply, answer) = mpsc::channel();
            if events.send(Event::Debug(request, reply)).is_err() {
                DebugResponse::Error("the agent is shutting down".into())
            } else {
                answer
                    .recv_timeout(Duration::from_secs(30))
                    .unwrap_or_else(|_| {
                        DebugResponse::Error("the agent did not answer in 30 s".into())
                    })
            }
        }
    };
    let mut stream = reader.into_inner();
    let mut text = serde_json::to_string(&response).map_err(std::io::Error::other)?;
    text.push('\n');
    stream.write_all(text.as_bytes())
}

/// Asks the agent listening on `path`; `Ok(None)` when no agent listens there.
pub fn ask(path: &Path, request: &DebugRequest) -> anyhow::Result<Option<DebugResponse>> {
    let mut stream = match UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot connect to the agent's debug socket {}: run as root for the agent's \
                 view, or pass --no-agent (with --datastore) to read the datastore yourself",
                path.display()
            )));
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(35)))?;
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(Some(serde_json::from_str(&line)?))
}
