//! The agent's main loop, on two threads joined by a short queue, so that calc's work on
//! one batch of updates overlaps the kernel's programming of the batch before.
//!
//! The calc thread (the caller's) takes [`Event`]s from the datastore sources and the
//! debug API over one channel, applies updates to calc in batches (all that arrived since
//! the last batch), and answers debug questions on the state after their batch. It hands
//! calc's deltas over, in order, whenever the dataplane thread can take them: once the
//! dataplane is open and has at most one batch in hand. Until then updates keep coming
//! into calc and their deltas merge, so calc takes the datastore while the kernel's
//! verifier loads the programs, and takes more while the kernel's maps are written.
//!
//! The dataplane thread owns the dataplane for the agent's life: it opens it, applies each
//! batch's deltas one by one — a rejected delta is logged and counted, and the rest still
//! apply — and once per tick reports flow events and counters and looks at interfaces. Once
//! the deltas of the batch that brought every source in sync are applied, it prunes what it
//! adopted but nobody asked for, and the agent is ready. See [`run`].

pub mod debug;
pub mod http;
pub mod metrics;

#[cfg(test)]
mod tests;

use std::ops::ControlFlow;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::calc::eval::{EvalReport, eval};
use crate::calc::why::{WhyReport, why};
use crate::calc::{Calc, CalcConfig};
use crate::dataplane::{Dataplane, Delta};
use crate::datastore::{SinkClosed, Update, UpdateSink};
use crate::selector::Selector;

pub use metrics::Metrics;

/// What the agent's loop is asked to do.
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

/// How often the dataplane thread reports the kernel's flow events and refreshes its
/// counters; also how often an idle calc thread looks whether the dataplane thread is
/// still there (it ends before calc's only by failing to open or by panicking).
const TICK: Duration = Duration::from_secs(1);
/// How often interfaces are looked at again without a link notification: a safety net.
const INTERFACE_RECHECK: Duration = Duration::from_secs(5);

/// How many queued updates one batch takes at most before calc hands its deltas over, so
/// a flood cannot delay enforcement of what already arrived without bound.
const MAX_BATCH: usize = 10_000;
/// How often calc, holding deltas the dataplane thread cannot take yet (it opens, or
/// programs the last batch), looks again when no update comes.
const HANDOVER_POLL: Duration = Duration::from_millis(2);
/// How many batches the dataplane thread has in hand at most: the one it programs. Updates
/// that come meanwhile wait in calc, where their deltas merge, rather than as deltas in a
/// queue: memory stays flat and the kernel gets fewer, larger changes. (A second batch in
/// hand, flushed while the first was programmed, raised the agent bench's peak RSS by
/// ~15 MiB, past 300 MiB in 3 runs of 7, for no faster start.)
const BATCHES_IN_HAND: usize = 1;

/// Runs the agent's loop until [`Event::Shutdown`] or until every sender is gone, and
/// returns the dataplane, still enforcing (its pins kept) with everything calc took
/// programmed.
///
/// `open` opens the dataplane on the dataplane thread while calc already takes the
/// datastore's updates and answers debug questions: loading the kernel programs is mostly
/// the kernel's verifier (a quarter of a second per policy program at best, over a second
/// on a busy machine), and calc's work on the first objects overlaps it instead of waiting
/// for it. Its error is this function's. A shutdown while it opens waits for it, and
/// programs nothing. A panic on either thread stops the other and is resumed here.
pub fn run<D: Dataplane + Send>(
    config: CalcConfig,
    metrics: &Metrics,
    events: &Receiver<Event>,
    open: impl FnOnce() -> anyhow::Result<D> + Send,
) -> anyhow::Result<D> {
    let (batches, queued) = mpsc::sync_channel(BATCHES_IN_HAND - 1);
    let (progress, progress_reports) = mpsc::channel();
    let dataplane = thread::scope(|scope| -> anyhow::Result<D> {
        let dataplane = thread::Builder::new()
            .name("fedwall-dataplane".into())
            .spawn_scoped(scope, move || -> anyhow::Result<D> {
                let dataplane = open()?;
                Ok(Programmer::new(dataplane, metrics).run(&queued, &progress))
            })
            .context("cannot start the dataplane's thread")?;
        // Returns, or unwinds, dropping its sender: the dataplane thread then programs
        // what is queued and stops.
        CalcLoop::new(config, metrics, batches, progress_reports).run(events);
        dataplane
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    tracing::info!("main loop stopped; enforcement stays in place");
    Ok(dataplane)
}

/// One handover from the calc thread to the dataplane thread.
struct Batch {
    /// How many updates calc took for it: none when only interfaces changed.
    updates: usize,
    /// Calc's deltas since the last batch, in order.
    deltas: Vec<Delta>,
    /// Calc held every source's full state after these deltas.
    in_sync: bool,
    /// When the batch's oldest update was emitted, for the latency metric.
    oldest: Option<Instant>,
    interfaces_changed: bool,
}

/// What the dataplane thread tells the calc thread. Its channel closes when the dataplane
/// thread ends.
enum Progress {
    /// The dataplane is open: it takes batches from now on.
    Opened,
    /// A batch is programmed.
    Programmed,
}

/// What calc took since it last handed its deltas over.
#[derive(Default)]
struct Pending {
    updates: usize,
    /// When the oldest of them was emitted; unset for the updates taken while the
    /// dataplane opened, whose wait is the verifier's rather than the update's.
    oldest: Option<Instant>,
    interfaces_changed: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.updates == 0 && !self.interfaces_changed
    }
}

/// The calc thread: calc, and what the dataplane thread has not been handed yet.
struct CalcLoop<'a> {
    calc: Calc,
    metrics: &'a Metrics,
    batches: SyncSender<Batch>,
    progress: Receiver<Progress>,
    /// The dataplane is open.
    open: bool,
    /// Batches handed over and not programmed yet.
    in_hand: usize,
    pending: Pending,
}

impl<'a> CalcLoop<'a> {
    fn new(
        config: CalcConfig,
        metrics: &'a Metrics,
        batches: SyncSender<Batch>,
        progress: Receiver<Progress>,
    ) -> Self {
        CalcLoop {
            calc: Calc::new(config),
            metrics,
            batches,
            progress,
            open: false,
            in_hand: 0,
            pending: Pending::default(),
        }
    }

    /// Takes events until asked to stop, every sender is gone or the dataplane thread
    /// ended.
    fn run(mut self, events: &Receiver<Event>) {
        loop {
            let wait = if !self.open || !self.pending.is_empty() {
                HANDOVER_POLL
            } else {
                TICK
            };
            let batch = match events.recv_timeout(wait) {
                Ok(first) => take_batch(first, events),
                Err(RecvTimeoutError::Timeout) => Vec::new(),
                // Nothing more will come: what calc took is still programmed.
                Err(RecvTimeoutError::Disconnected) => {
                    self.finish(true);
                    return;
                }
            };
            if self.handle(batch).is_break() {
                return;
            }
        }
    }

    /// Applies a batch of events, and hands calc's deltas over if the dataplane thread can
    /// take them; `Break` when the loop is to stop.
    fn handle(&mut self, batch: Vec<Event>) -> ControlFlow<()> {
        let mut updates = 0;
        let mut debug = Vec::new();
        let mut stop = false;
        for event in batch {
            match event {
                Event::Update(update, emitted) => {
                    self.calc.apply(&update);
                    updates += 1;
                    if self.open {
                        self.pending.oldest.get_or_insert(emitted);
                    }
                }
                Event::Debug(request, reply) => debug.push((request, reply)),
                Event::InterfacesChanged => self.pending.interfaces_changed = true,
                Event::Shutdown => stop = true,
            }
        }
        self.pending.updates += updates;
        let flow = if stop {
            self.finish(false);
            ControlFlow::Break(())
        } else {
            self.hand_over_if_taken()
        };
        if self.pending.updates > 0 && updates > 0 {
            // Kept for later (the dataplane opens, or is busy): which sources synced is
            // shown meanwhile, for `/readyz` to say what it waits for.
            self.metrics.observe_calc(&self.calc);
        }
        // Debug questions see calc's state after this batch.
        for (request, reply) in debug {
            let _ = reply.send(answer(&self.calc, &request));
        }
        flow
    }

    /// Hands calc's deltas over if the dataplane is open and has room in hand.
    fn hand_over_if_taken(&mut self) -> ControlFlow<()> {
        self.take_progress()?;
        if self.open && self.in_hand < BATCHES_IN_HAND && !self.pending.is_empty() {
            self.hand_over()?;
        }
        ControlFlow::Continue(())
    }

    /// The loop stops: what calc took is handed over, to be programmed before the
    /// dataplane is returned. While the dataplane opens, a shutdown programs nothing;
    /// with `wait_for_open`, calc waits for it to open.
    fn finish(&mut self, wait_for_open: bool) {
        if self.take_progress().is_break() {
            return;
        }
        while !self.open && wait_for_open {
            match self.progress.recv() {
                Ok(progress) => self.note(progress),
                Err(_) => return,
            }
        }
        if self.open && !self.pending.is_empty() {
            let _ = self.hand_over();
        }
    }

    /// Takes the dataplane thread's reports; `Break` once that thread ended (its error or
    /// panic is then [`run`]'s).
    fn take_progress(&mut self) -> ControlFlow<()> {
        loop {
            match self.progress.try_recv() {
                Ok(progress) => self.note(progress),
                Err(TryRecvError::Empty) => return ControlFlow::Continue(()),
                Err(TryRecvError::Disconnected) => return ControlFlow::Break(()),
            }
        }
    }

    fn note(&mut self, progress: Progress) {
        match progress {
            Progress::Opened => self.open = true,
            Progress::Programmed => self.in_hand -= 1,
        }
    }

    /// Flushes calc and queues its deltas for the dataplane thread (waiting for room);
    /// `Break` when that thread ended.
    fn hand_over(&mut self) -> ControlFlow<()> {
        let pending = std::mem::take(&mut self.pending);
        let deltas = if pending.updates > 0 {
            let deltas = self.calc.flush();
            // Before the deltas go (local endpoints are counted as flushed): whoever sees
            // the agent ready sees calc's figures too.
            self.metrics.observe_calc(&self.calc);
            deltas
        } else {
            Vec::new()
        };
        let batch = Batch {
            updates: pending.updates,
            deltas,
            in_sync: self.calc.in_sync(),
            oldest: pending.oldest,
            interfaces_changed: pending.interfaces_changed,
        };
        self.in_hand += 1;
        match self.batches.send(batch) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    }
}

/// The dataplane thread: the dataplane, and whether it pruned yet.
struct Programmer<'a, D> {
    dataplane: D,
    metrics: &'a Metrics,
    pruned: bool,
    last_interface_check: Instant,
}

impl<'a, D: Dataplane> Programmer<'a, D> {
    fn new(dataplane: D, metrics: &'a Metrics) -> Self {
        Programmer {
            dataplane,
            metrics,
            pruned: false,
            last_interface_check: Instant::now(),
        }
    }

    /// Programs the batches calc hands over, in order, and keeps house once per tick,
    /// until calc stops handing over; returns the dataplane once every queued batch is
    /// programmed.
    fn run(mut self, batches: &Receiver<Batch>, progress: &Sender<Progress>) -> D {
        let _ = progress.send(Progress::Opened);
        let mut next_tick = Instant::now() + TICK;
        loop {
            let now = Instant::now();
            if now >= next_tick {
                self.housekeeping();
                next_tick = now + TICK;
            }
            match batches.recv_timeout(next_tick.saturating_duration_since(now)) {
                Ok(batch) => {
                    self.program(batch);
                    let _ = progress.send(Progress::Programmed);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.dataplane,
            }
        }
    }

    fn program(&mut self, batch: Batch) {
        let started = Instant::now();
        let mut ready = false;
        if batch.updates > 0 {
            let mut applied = 0;
            for delta in &batch.deltas {
                match self.dataplane.apply(delta) {
                    Ok(()) => applied += 1,
                    Err(error) => self.report(&error),
                }
            }
            self.metrics.deltas_applied(applied);
            if !self.pruned && batch.in_sync {
                match self.dataplane.sync_complete() {
                    Ok(()) => (self.pruned, ready) = (true, true),
                    Err(error) => {
                        tracing::error!(error = %error, "cannot prune stale dataplane state");
                        self.metrics.count_error(error_kind(&error));
                    }
                }
            }
            tracing::debug!(
                updates = batch.updates,
                deltas = batch.deltas.len(),
                elapsed_us = started.elapsed().as_micros(),
                "batch programmed"
            );
        }
        if let Some(oldest) = batch.oldest {
            // The batch's oldest update waited longest: its latency bounds the others'.
            self.metrics.observe_latency(oldest.elapsed());
        }
        if batch.interfaces_changed {
            self.refresh_interfaces();
        }
        self.metrics.observe_dataplane(self.dataplane.status());
        // Readiness last, so that whoever sees it ready also sees the maps' usage.
        if ready {
            self.metrics.mark_ready();
            tracing::info!("every source in sync and programmed: ready");
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
