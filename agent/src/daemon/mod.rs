//! The agent's main loop: one thread owns calc and the dataplane; datastore sources and
//! the debug API send it [`Event`]s over one channel. Updates are applied in batches (all
//! that arrived while the last batch was programmed), then calc's deltas go to the
//! dataplane one by one: a rejected delta is logged and counted, and the rest still apply.
//! Once every source has synced and its state is programmed, the dataplane prunes what it
//! adopted but nobody asked for, and the agent is ready. While the dataplane opens (the
//! kernel's verifier, on a thread of its own), calc already takes updates: [`Daemon::open`].

pub mod debug;
pub mod http;
pub mod metrics;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::calc::eval::{EvalReport, eval};
use crate::calc::why::{WhyReport, why};
use crate::calc::{Calc, CalcConfig};
use crate::dataplane::Dataplane;
use crate::datastore::{SinkClosed, Update, UpdateSink};
use crate::selector::Selector;

pub use metrics::Metrics;

/// What the main loop is asked to do.
#[expect(
    clippy::large_enum_variant,
    reason = "updates are nearly every event; boxing them would allocate once per update"
)]
pub enum Event {
    /// A datastore change, stamped when the source emitted it.
    Update(Update, Instant),
    Debug(DebugRequest, Sender<DebugResponse>),
    /// The node's links or routes changed: endpoints' interfaces may have come or gone.
    InterfacesChanged,
    /// Stop the loop; enforcement stays in place (the dataplane keeps its pins).
    Shutdown,
}

/// A question to the running agent, over the debug socket.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DebugRequest {
    /// `fedwall eval`: the endpoints a selector matches, in the agent's exact view.
    Eval { selector: String },
    /// `fedwall why`: how this node's tables decide a flow's first packet.
    Why(WhyRequest),
}

/// A flow's first packet, as `fedwall why` asks about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WhyRequest {
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
    pub protocol: u8,
    pub ports: Option<(u16, u16)>,
    pub icmp: Option<(u8, u8)>,
}

impl WhyRequest {
    pub fn flow(&self) -> crate::dataplane::Flow {
        crate::dataplane::Flow {
            src: self.src,
            dst: self.dst,
            protocol: self.protocol,
            ports: self.ports,
            icmp: self.icmp,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DebugResponse {
    Eval(EvalReport),
    Why(WhyReport),
    Error(String),
}

/// Where the main loop's events are sent from.
pub type EventSender = SyncSender<Event>;

/// The main loop's channel. Bounded: a source that reads faster than calc takes its
/// updates (the first read of 100,000 remote pods) waits, rather than queueing every object
/// it parsed — which made the agent's peak memory hold the whole datastore twice.
pub fn event_channel() -> (EventSender, Receiver<Event>) {
    mpsc::sync_channel(MAX_BATCH)
}

/// A datastore source's updates, into the main loop's channel.
#[derive(Clone)]
pub struct EventSink(pub EventSender);

impl UpdateSink for EventSink {
    fn send(&mut self, update: Update) -> Result<(), SinkClosed> {
        self.0
            .send(Event::Update(update, Instant::now()))
            .map_err(|_| SinkClosed)
    }
}

/// How often the loop reports the kernel's flow events and refreshes its counters.
const TICK: Duration = Duration::from_secs(1);
/// How often interfaces are looked at again without a link notification: a safety net.
const INTERFACE_RECHECK: Duration = Duration::from_secs(5);

/// How many queued updates one batch takes at most before programming the dataplane, so
/// a flood cannot delay enforcement of what already arrived without bound.
const MAX_BATCH: usize = 10_000;
/// How often calc, while the dataplane opens, looks whether it has opened when no update
/// comes.
const OPENING_POLL: Duration = Duration::from_millis(5);

pub struct Daemon<D> {
    calc: Calc,
    dataplane: D,
    metrics: Arc<Metrics>,
    pruned: bool,
    last_interface_check: Instant,
}

impl<D: Dataplane> Daemon<D> {
    pub fn new(config: CalcConfig, dataplane: D, metrics: Arc<Metrics>) -> Self {
        Daemon::with_calc(Calc::new(config), dataplane, metrics)
    }

    fn with_calc(calc: Calc, dataplane: D, metrics: Arc<Metrics>) -> Self {
        Daemon {
            calc,
            dataplane,
            metrics,
            pruned: false,
            last_interface_check: Instant::now(),
        }
    }

    /// Opens the dataplane with `open` on a thread of its own while calc takes the
    /// datastore's updates (and answers debug questions), then programs what calc holds.
    /// Loading the kernel programs is mostly the kernel's verifier (a quarter of a second
    /// per policy program at best, over a second on a busy machine): calc's work on the
    /// first objects overlaps it instead of waiting for it. `Ok(None)` when asked to stop
    /// meanwhile; the dataplane, opened, is then dropped with enforcement in place.
    pub fn open(
        config: CalcConfig,
        metrics: Arc<Metrics>,
        events: &Receiver<Event>,
        open: impl FnOnce() -> anyhow::Result<D> + Send,
    ) -> anyhow::Result<Option<Self>>
    where
        D: Send,
    {
        let mut calc = Calc::new(config);
        let mut interfaces_changed = false;
        let (opened, stop) = thread::scope(|scope| -> anyhow::Result<_> {
            let opening = thread::Builder::new()
                .name("fedwall-open".into())
                .spawn_scoped(scope, open)
                .context("cannot start the thread that opens the dataplane")?;
            let mut stop = false;
            while !stop {
                // Once it is open, one last batch of what is queued: a shutdown asked for
                // before is seen, and the first programming takes more at once.
                let opened = opening.is_finished();
                let first = if opened {
                    match events.try_recv() {
                        Ok(event) => event,
                        Err(_) => break,
                    }
                } else {
                    match events.recv_timeout(OPENING_POLL) {
                        Ok(event) => event,
                        Err(RecvTimeoutError::Timeout) => continue,
                        // Nothing more will come: wait for the dataplane.
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                };
                for event in take_batch(first, events) {
                    match event {
                        Event::Update(update, _) => calc.apply(&update),
                        Event::Debug(request, reply) => {
                            let _ = reply.send(answer(&calc, &request));
                        }
                        Event::InterfacesChanged => interfaces_changed = true,
                        Event::Shutdown => stop = true,
                    }
                }
                metrics.observe(&calc, false);
                if opened {
                    break;
                }
            }
            let opened = opening
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            Ok((opened, stop))
        })?;
        let dataplane = opened?;
        if stop {
            return Ok(None);
        }
        let mut daemon = Daemon::with_calc(calc, dataplane, metrics);
        daemon.program();
        if interfaces_changed {
            daemon.refresh_interfaces();
        }
        daemon.metrics.observe_dataplane(daemon.dataplane.status());
        daemon.metrics.observe(&daemon.calc, daemon.pruned);
        Ok(Some(daemon))
    }

    /// Runs until [`Event::Shutdown`] or until every sender is gone; returns the dataplane
    /// (still enforcing).
    pub fn run(mut self, events: &Receiver<Event>) -> D {
        let mut next_tick = Instant::now() + TICK;
        loop {
            let now = Instant::now();
            if now >= next_tick {
                self.housekeeping();
                next_tick = now + TICK;
            }
            let first = match events.recv_timeout(next_tick.saturating_duration_since(now)) {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if !self.handle(take_batch(first, events)) {
                break;
            }
        }
        tracing::info!("main loop stopped; enforcement stays in place");
        self.dataplane
    }

    /// Applies a batch; `false` when asked to stop.
    fn handle(&mut self, batch: Vec<Event>) -> bool {
        let started = Instant::now();
        let mut updates = 0;
        let mut oldest: Option<Instant> = None;
        let mut debug = Vec::new();
        let mut stop = false;
        let mut interfaces_changed = false;
        for event in batch {
            match event {
                Event::Update(update, emitted) => {
                    self.calc.apply(&update);
                    updates += 1;
                    oldest.get_or_insert(emitted);
                }
                Event::Debug(request, reply) => debug.push((request, reply)),
                Event::InterfacesChanged => interfaces_changed = true,
                Event::Shutdown => stop = true,
            }
        }
        if let Some(oldest) = oldest {
            self.program();
            // The batch's oldest update waited longest: its latency bounds the others'.
            self.metrics.observe_latency(oldest.elapsed());
            tracing::debug!(
                updates,
                elapsed_us = started.elapsed().as_micros(),
                "batch programmed"
            );
        }
        if interfaces_changed {
            self.refresh_interfaces();
        }
        if updates > 0 || interfaces_changed {
            self.metrics.observe_dataplane(self.dataplane.status());
        }
        // Readiness last, so that whoever sees it ready also sees the maps' usage.
        if updates > 0 {
            self.metrics.observe(&self.calc, self.pruned);
        }
        // Debug questions see the state after this batch.
        for (request, reply) in debug {
            let _ = reply.send(answer(&self.calc, &request));
        }
        !stop
    }

    fn program(&mut self) {
        let deltas = self.calc.flush();
        let mut applied = 0;
        for delta in &deltas {
            match self.dataplane.apply(delta) {
                Ok(()) => applied += 1,
                Err(error) => self.report(&error),
            }
        }
        self.metrics.deltas_applied(applied);
        if !self.pruned && self.calc.in_sync() {
            match self.dataplane.sync_complete() {
                Ok(()) => {
                    self.pruned = true;
                    tracing::info!("every source in sync and programmed: ready");
                }
                Err(error) => {
                    tracing::error!(error = %error, "cannot prune stale dataplane state");
                    self.metrics.count_error(error_kind(&error));
                }
            }
        }
    }

    /// Once per tick: flow events to the log, fresh counters, and now and then a look at
    /// interfaces in case a link notification was missed.
    fn housekeeping(&mut self) {
        let (mut logged, mut denied) = (0, 0);
        for record in self.dataplane.drain_flow_events() {
            if record.logged {
                logged += 1;
                tracing::info!(target: "fedwall::flow", "{record}");
            } else {
                denied += 1;
                tracing::debug!(target: "fedwall::flow", "{record}");
            }
        }
        self.metrics.count_flow_events(logged, denied);
        self.dataplane.expire();
        if self.last_interface_check.elapsed() >= INTERFACE_RECHECK {
            self.refresh_interfaces();
        }
        self.metrics.observe_dataplane(self.dataplane.status());
        self.metrics
            .observe_packets(self.dataplane.packet_counters());
    }

    fn refresh_interfaces(&mut self) {
        self.last_interface_check = Instant::now();
        for error in self.dataplane.refresh_interfaces() {
            self.report(&error);
        }
    }

    /// Logs a rejected dataplane change with its causes, and counts it by kind.
    fn report(&self, error: &crate::dataplane::DataplaneError) {
        tracing::error!(error = %error, "{}", crate::error_chain(error));
        self.metrics.count_error(error_kind(error));
    }
}

/// `first` and the events queued behind it, up to [`MAX_BATCH`].
fn take_batch(first: Event, events: &Receiver<Event>) -> Vec<Event> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match events.try_recv() {
            Ok(event) => batch.push(event),
            Err(_) => break,
        }
    }
    batch
}

fn answer(calc: &Calc, request: &DebugRequest) -> DebugResponse {
    match request {
        DebugRequest::Eval { selector } => match Selector::parse(selector) {
            Ok(selector) => DebugResponse::Eval(eval(calc, &selector)),
            Err(e) => DebugResponse::Error(format!("selector {selector:?}: {e}")),
        },
        DebugRequest::Why(request) => DebugResponse::Why(why(calc, &request.flow())),
    }
}

/// A short, stable name for an error's kind, as the `kind` label of the errors metric.
fn error_kind(error: &crate::dataplane::DataplaneError) -> &'static str {
    use crate::dataplane::DataplaneError as E;
    match error {
        E::TableTooLarge { .. } => "table_too_large",
        E::MapFull { .. } => "map_full",
        E::UnknownIpSet { .. } | E::DuplicateIpSet { .. } => "inconsistent_delta",
        _ => "dataplane",
    }
}
