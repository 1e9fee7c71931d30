//! Every filesystem location fedwall uses, in one place.

/// Where fedwall pins its maps and links unless `--pin-root` says otherwise.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/fedwall";

/// The agent's debug socket (`fedwall eval` asks the agent there) unless `--socket` says
/// otherwise.
pub const DEFAULT_SOCKET: &str = "/run/fedwall/agent.sock";

/// Where the agent serves `/healthz`, `/readyz` and `/metrics` unless `--listen` says
/// otherwise: loopback, since it runs with the host's network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9468";
