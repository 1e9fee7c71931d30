//! The agent's Prometheus metrics: kept by the loop's calc and dataplane threads, rendered
//! by the HTTP server in the text exposition format. Readiness lives here too, since
//! `/readyz` and the metrics answer from the same state.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::calc::Calc;
use crate::dataplane::DataplaneStatus;
use crate::datastore::Origin;

#[derive(Default)]
pub struct Metrics {
    state: Mutex<State>,
}

#[derive(Default, Clone)]
struct State {
    ready: bool,
    /// The local datastore sent its whole state.
    local_synced: bool,
    /// Sources not yet in sync, for `/readyz` to name.
    waiting_for: Vec<String>,
    /// Remote cluster → connection state name.
    remote_states: BTreeMap<String, &'static str>,
    local_endpoints: usize,
    endpoints: usize,
    policies: usize,
    problems: usize,
    deltas_applied: u64,
    errors: BTreeMap<&'static str, u64>,
    dataplane: DataplaneStatus,
    /// The kernel's packet counters: (program family, reason, packets).
    packets: Vec<(&'static str, &'static str, u64)>,
    /// Seconds from a datastore update's emission to its state in the dataplane, for the
    /// most recent batches.
    latencies: std::collections::VecDeque<f64>,
    latency_sum: f64,
    latency_count: u64,
    flow_events_logged: u64,
    flow_events_denied: u64,
}

/// How many recent batches the latency quantiles cover.
const LATENCY_WINDOW: usize = 1024;

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // A panic while holding the lock leaves plain counters behind: still usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }

    pub fn deltas_applied(&self, n: u64) {
        self.with(|s| s.deltas_applied += n);
    }

    pub fn count_error(&self, kind: &'static str) {
        self.with(|s| *s.errors.entry(kind).or_insert(0) += 1);
    }

    /// Takes calc's view after a batch: which sources synced, and how much it holds.
    pub fn observe_calc(&self, calc: &Calc) {
        let remote_states: BTreeMap<_, _> = calc
            .remote_states()
            .iter()
            .map(|(name, state)| (name.clone(), state.name()))
            .collect();
        let local_synced = !calc.unsynced().any(|origin| origin == Origin::Local);
        let waiting_for = calc
            .unsynced()
            .map(|origin| match origin {
                Origin::Local => "the local datastore".to_owned(),
                Origin::Remote(name) => format!("RemoteClusterConfiguration({name})"),
            })
            .collect();
        // Counted, not walked: this runs after every batch.
        let counts = (
            calc.local_endpoints().len(),
            calc.endpoints().len(),
            calc.policies().len(),
            calc.problems().len(),
        );
        self.with(|s| {
            s.local_synced = local_synced;
            s.waiting_for = waiting_for;
            s.remote_states = remote_states;
            (s.local_endpoints, s.endpoints, s.policies, s.problems) = counts;
        });
    }

    /// Every source synced and its state is programmed: ready from now on (a source that
    /// later loses its sync is reported in its own metric, not as unreadiness).
    pub fn mark_ready(&self) {
        self.with(|s| s.ready = true);
    }

    /// One batch's latency, from its oldest update's emission to programmed.
    pub fn observe_latency(&self, latency: std::time::Duration) {
        self.with(|s| {
            if s.latencies.len() == LATENCY_WINDOW {
                s.latencies.pop_front();
            }
            s.latencies.push_back(latency.as_secs_f64());
            s.latency_sum += latency.as_secs_f64();
            s.latency_count += 1;
        });
    }

    pub fn count_flow_events(&self, logged: u64, denied: u64) {
        self.with(|s| {
            s.flow_events_logged += logged;
            s.flow_events_denied += denied;
        });
    }

    /// Takes the dataplane's map usage.
    pub fn observe_dataplane(&self, status: DataplaneStatus) {
        self.with(|s| s.dataplane = status);
    }

    /// Takes the kernel's packet counters.
    pub fn observe_packets(&self, packets: Vec<(&'static str, &'static str, u64)>) {
        self.with(|s| s.packets = packets);
    }

    /// `Ok` when ready, else what it still waits for.
    pub fn readiness(&self) -> Result<(), String> {
        self.with(|s| {
            if s.ready {
                Ok(())
            } else if s.waiting_for.is_empty() {
                Err("programming the dataplane".into())
            } else {
                Err(format!("waiting for {}", s.waiting_for.join(", ")))
            }
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let s = self.with(|s| s.clone());
        let mut out = Exposition::default();
        out.gauge(
            "fedwall_ready",
            "1 once every source synced and its state is programmed.",
            u64::from(s.ready),
        );
        out.gauge(
            "fedwall_local_datastore_synced",
            "1 once the local datastore sent its whole state (remote clusters: fedwall_remote_cluster_state).",
            u64::from(s.local_synced),
        );
        out.gauge(
            "fedwall_local_endpoints",
            "Endpoints of this node under enforcement.",
            s.local_endpoints as u64,
        );
        out.gauge(
            "fedwall_endpoints",
            "Endpoints of every cluster known to calc.",
            s.endpoints as u64,
        );
        out.gauge("fedwall_policies", "Valid policies.", s.policies as u64);
        out.gauge(
            "fedwall_object_problems",
            "Objects that could not be used (see the logs or fedwall eval).",
            s.problems as u64,
        );
        out.family(
            "fedwall_remote_cluster_state",
            "gauge",
            "Connection state per remote cluster (1 for the current state).",
        );
        for (cluster, state) in &s.remote_states {
            out.sample(
                "fedwall_remote_cluster_state",
                &[("cluster", cluster), ("state", state)],
                1,
            );
        }
        out.family(
            "fedwall_deltas_applied_total",
            "counter",
            "Changes programmed into the dataplane.",
        );
        out.sample("fedwall_deltas_applied_total", &[], s.deltas_applied);
        out.family(
            "fedwall_update_latency_seconds",
            "summary",
            &format!(
                "From a datastore update to its state programmed in the kernel, quantiles over the last {LATENCY_WINDOW} batches."
            ),
        );
        let mut sorted: Vec<f64> = s.latencies.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        for quantile in [0.5, 0.9, 0.99, 1.0] {
            if let Some(value) = quantile_of(&sorted, quantile) {
                out.sample(
                    "fedwall_update_latency_seconds",
                    &[("quantile", &quantile.to_string())],
                    format!("{value:.6}"),
                );
            }
        }
        let sum = format!("{:.6}", s.latency_sum);
        out.sample("fedwall_update_latency_seconds_sum", &[], sum);
        out.sample("fedwall_update_latency_seconds_count", &[], s.latency_count);
        out.family(
            "fedwall_errors_total",
            "counter",
            "Rejected dataplane updates, by kind.",
        );
        for (kind, count) in &s.errors {
            out.sample("fedwall_errors_total", &[("kind", kind)], count);
        }
        out.family(
            "fedwall_flow_events_total",
            "counter",
            "Denied and logged packets the kernel reported (denied ones are logged at debug level, Log rules' at info, target fedwall::flow).",
        );
        for (kind, count) in [
            ("denied", s.flow_events_denied),
            ("logged", s.flow_events_logged),
        ] {
            out.sample("fedwall_flow_events_total", &[("kind", kind)], count);
        }
        out.family(
            "fedwall_map_entries",
            "gauge",
            "Entries in use per kernel map.",
        );
        for usage in &s.dataplane.maps {
            out.sample("fedwall_map_entries", &[("map", usage.map)], usage.used);
        }
        out.family(
            "fedwall_map_capacity",
            "gauge",
            "Entries each kernel map can hold.",
        );
        for usage in &s.dataplane.maps {
            out.sample(
                "fedwall_map_capacity",
                &[("map", usage.map)],
                usage.capacity,
            );
        }
        out.family(
            "fedwall_packets_total",
            "counter",
            "Packets by program and outcome, from the kernel's counters (drops are the reasons starting with deny or drop).",
        );
        for (program, reason, packets) in &s.packets {
            out.sample(
                "fedwall_packets_total",
                &[("program", program), ("reason", reason)],
                packets,
            );
        }
        out.gauge(
            "fedwall_endpoints_waiting_for_interface",
            "Local endpoints not enforced yet: their interface was not found (the reason is logged).",
            s.dataplane.waiting_for_interface.len() as u64,
        );
        out.0
    }
}

/// The text exposition format, written a metric family at a time.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    /// A family's `# HELP` and `# TYPE` lines.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample: `name{label="value",…} value`, label values escaped.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let labels: Vec<String> = labels
                .iter()
                .map(|(key, value)| format!("{key}=\"{}\"", escape(value)))
                .collect();
            let _ = write!(self.0, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A gauge family of one unlabelled sample.
    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }
}

/// The nearest-rank quantile of sorted values.
fn quantile_of(sorted: &[f64], quantile: f64) -> Option<f64> {
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).max(1);
    sorted.get(rank - 1).copied()
}

/// A label value as the exposition format needs it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
