fn main() -> std::process::ExitCode {
    breakwater_gateway::cli::main()
}
