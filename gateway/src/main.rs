/// mimalloc instead of glibc malloc: Pingora allocates and frees buffers,
/// header maps and tasks on every request, and glibc's allocator was ~12% of
/// the proxy's CPU in profiles (see `load/README.md`, "Where the CPU went").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    breakwater_gateway::server::cli::main()
}
