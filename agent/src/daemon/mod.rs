//! The agent's main loop: one thread owns calc and the dataplane; datastore sources and
//! the debug API send it [`Event`]s over one channel. Updates are applied in batches (all
//! that arrived while the last batch was programmed), then calc's deltas go to the
//! dataplane one by one: a rejected delta is logged and counted, and the rest still apply.
//! Once every source has synced and its state is programmed, the dataplane prunes what it
//! adopted but nobody asked for, and the agent is ready.

pub mod debug;
pub mod http;
pub mod metrics;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::time::{Duration, Instant};

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

pub struct Daemon<D> {
    calc: Calc,
    dataplane: D,
    metrics: Arc<Metrics>,
    pruned: bool,
    last_interface_check: Instant,
}

impl<D: Dataplane> Daemon<D> {
    pub fn new(config: CalcConfig, dataplane: D, metrics: Arc<Metrics>) -> Self {
        Daemon {
            calc: Calc::new(config),
            dataplane,
            metrics,
            pruned: false,
            last_interface_check: Instant::now(),
        }
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
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match events.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            if !self.handle(batch) {
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
            let _ = reply.send(self.answer(&request));
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

    fn answer(&self, request: &DebugRequest) -> DebugResponse {
        match request {
            DebugRequest::Eval { selector } => match Selector::parse(selector) {
                Ok(selector) => DebugResponse::Eval(eval(&self.calc, &selector)),
                Err(e) => DebugResponse::Error(format!("selector {selector:?}: {e}")),
            },
            DebugRequest::Why(request) => DebugResponse::Why(why(&self.calc, &request.flow())),
        }
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
