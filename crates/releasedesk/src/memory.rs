//! How the process's memory is backed.

/// Has Linux back this process's memory with 4 KiB pages only, never with
/// transparent huge pages.
///
/// The allocator (mimalloc) asks for huge pages on its arenas
/// (`madvise(MADV_HUGEPAGE)`), which Linux grants even where huge pages are
/// otherwise off (the `madvise` setting, Debian's default). The first touch of
/// each 2 MiB region then zeroes all of it inside one page fault, and memory
/// the allocator gives back and takes again is faulted in afresh: under the
/// benchmark's filing load a tokio worker thread sat ~6 ms in such a fault
/// every 20–55 ms (on a VM), and every request in flight waited for it
/// (docs/BENCHMARKS.md, "Changes measured"). A request's memory is small and
/// short-lived; what huge pages save in TLB misses does not show.
///
/// Elsewhere than Linux, nothing.
pub fn small_pages_only() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(%error, "transparent huge pages stay allowed for this process");
    }
}
