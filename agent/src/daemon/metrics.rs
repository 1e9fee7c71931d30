//! The agent's Prometheus metrics: kept by the main loop, rendered by the HTTP server in
//! the text exposition format. Readiness lives here too, since `/readyz` and the metrics
//! answer from the same state.

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

    /// Takes calc's view after a batch.
    pub fn observe(&self, calc: &Calc, programmed: bool) {
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
            s.ready = programmed;
            s.local_synced = local_synced;
            s.waiting_for = waiting_for;
            s.remote_states = remote_states;
            (s.local_endpoints, s.endpoints, s.policies, s.problems) = counts;
        });
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
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            "fedwall_ready",
            "1 once every source synced and its state is programmed.",
            u64::from(s.ready),
        );
        gauge(
            "fedwall_local_datastore_synced",
            "1 once the local datastore sent its whole state (remote clusters: fedwall_remote_cluster_state).",
            u64::from(s.local_synced),
        );
        gauge(
            "fedwall_local_endpoints",
            "Endpoints of this node under enforcement.",
            s.local_endpoints as u64,
        );
        gauge(
            "fedwall_endpoints",
            "Endpoints of every cluster known to calc.",
            s.endpoints as u64,
        );
        gauge("fedwall_policies", "Valid policies.", s.policies as u64);
        gauge(
            "fedwall_object_problems",
            "Objects that could not be used (see the logs or fedwall eval).",
            s.problems as u64,
        );
        let _ = writeln!(
            out,
            "# HELP fedwall_remote_cluster_state Connection state per remote cluster (1 for the current state).\n\
             # TYPE fedwall_remote_cluster_state gauge"
        );
        for (cluster, state) in &s.remote_states {
            let _ = writeln!(
                out,
                "fedwall_remote_cluster_state{{cluster=\"{}\",state=\"{state}\"}} 1",
                escape(cluster)
            );
        }
        let _ = writeln!(
            out,
            "# HELP fedwall_deltas_applied_total Changes programmed into the dataplane.\n\
             # TYPE fedwall_deltas_applied_total counter\nfedwall_deltas_applied_total {}",
            s.deltas_applied
        );
        let _ = writeln!(
            out,
            "# HELP fedwall_update_latency_seconds From a datastore update to its state programmed in the kernel, quantiles over the last {LATENCY_WINDOW} batches.\n\
             # TYPE fedwall_update_latency_seconds summary"
        );
        let mut sorted: Vec<f64> = s.latencies.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        for quantile in [0.5, 0.9, 0.99, 1.0] {
            if let Some(value) = quantile_of(&sorted, quantile) {
                let _ = writeln!(
                    out,
                    "fedwall_update_latency_seconds{{quantile=\"{quantile}\"}} {value:.6}"
                );
            }
        }
        let _ = writeln!(
            out,
            "fedwall_update_latency_seconds_sum {:.6}\nfedwall_update_latency_seconds_count {}",
            s.latency_sum, s.latency_count
        );
        let _ = writeln!(
            out,
            "# HELP fedwall_errors_total Rejected dataplane updates, by kind.\n# TYPE fedwall_errors_total counter"
        );
        for (kind, count) in &s.errors {
            let _ = writeln!(out, "fedwall_errors_total{{kind=\"{kind}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "# HELP fedwall_flow_events_total Denied and logged packets the kernel reported (denied ones are logged at debug level, Log rules' at info, target fedwall::flow).\n\
             # TYPE fedwall_flow_events_total counter\n\
             fedwall_flow_events_total{{kind=\"denied\"}} {}\nfedwall_flow_events_total{{kind=\"logged\"}} {}",
            s.flow_events_denied, s.flow_events_logged
        );
        let _ = writeln!(
            out,
            "# HELP fedwall_map_entries Entries in use per kernel map.\n# TYPE fedwall_map_entries gauge"
        );
        for usage in &s.dataplane.maps {
            let _ = writeln!(
                out,
                "fedwall_map_entries{{map=\"{}\"}} {}",
                usage.map, usage.used
            );
        }
        let _ = writeln!(
            out,
            "# HELP fedwall_map_capacity Entries each kernel map can hold.\n# TYPE fedwall_map_capacity gauge"
        );
        for usage in &s.dataplane.maps {
            let _ = writeln!(
                out,
                "fedwall_map_capacity{{map=\"{}\"}} {}",
                usage.map, usage.capacity
            );
        }
        let _ = writeln!(
            out,
            "# HELP fedwall_packets_total Packets by program and outcome, from the kernel's counters (drops are the reasons starting with deny or drop).\n\
             # TYPE fedwall_packets_total counter"
        );
        for (program, reason, packets) in &s.packets {
            let _ = writeln!(
                out,
                "fedwall_packets_total{{program=\"{program}\",reason=\"{reason}\"}} {packets}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP fedwall_endpoints_waiting_for_interface Local endpoints not enforced yet: their interface was not found (the reason is logged).\n\
             # TYPE fedwall_endpoints_waiting_for_interface gauge\nfedwall_endpoints_waiting_for_interface {}",
            s.dataplane.waiting_for_interface.len()
        );
        out
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
