//! Every filesystem location fedwall uses, in one place.

/// Where fedwall pins its maps and links unless `--pin-root` says otherwise.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/fedwall";
