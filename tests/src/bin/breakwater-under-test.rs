//! The `breakwater` binary, rebuilt in the test package for the harness.
fn main() -> std::process::ExitCode {
    breakwater_gateway::server::cli::main()
}
