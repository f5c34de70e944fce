//! The `botlinkd` binary: everything lives in the library; this only sets the global
//! allocator and hands over to the CLI (`botlinkd::cli::main`).
//!
//! The allocator is mimalloc: with glibc's, a fifth of the process's CPU time went into
//! consolidating buffers freed on another thread than the one that allocated them (see
//! BENCHMARKS.md). It is built with `no_thp`, as transparent huge pages inflated its RSS.

/// mimalloc rather than glibc's allocator: delivery and ingest allocate and free many small
/// buffers across threads, where glibc's arenas spend their time consolidating free chunks.
/// Built with `no_thp`: transparent huge pages made its peak RSS half as large again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    botlinkd::cli::main()
}
