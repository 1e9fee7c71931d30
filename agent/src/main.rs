//! The `fedwall` command: the node agent and its debug tools.

fn main() -> std::process::ExitCode {
    fedwall::cli::main()
}
