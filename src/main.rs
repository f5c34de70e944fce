//! The `botlinkd` binary: everything lives in the library; this only hands over to the CLI.

/// mimalloc rather than glibc's allocator: delivery and ingest allocate and free many small
/// buffers across threads, where glibc's arenas spend their time consolidating free chunks.
/// Built with `no_thp`: transparent huge pages made its peak RSS half as large again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    botlinkd::cli::main()
}
