//! Giving freed memory back to the system.
//!
//! A crowd that joins leaves freed memory behind (handshake buffers, the presence lists sent to
//! newcomers), scattered between the small allocations its members keep; glibc keeps such free
//! pages inside its heaps, so an idle server would hold what its busiest minute needed. This
//! module asks glibc to return whole free pages ([`libc::malloc_trim`]) once connections came or
//! went, at most every [`TRIM_INTERVAL`], keeps big buffers out of the heap altogether and the
//! heaps few. It must never run on a room's or a session's thread (a trim walks every heap) and
//! never trim while nothing changed.

use std::sync::Arc;
use std::time::Duration;

use crate::http::limits::Admission;

/// How often the server looks whether connections came or went, and trims if they did.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Heaps glibc may create (its default is eight per core). Sessions are made on the HTTP workers'
/// threads and live on the rooms', and every thread that allocates gets a heap of its own: each
/// heap then keeps its own free pages between the members' small allocations (500 idle rooms of
/// 20: 4.3 KiB a member with two heaps, 4.5 to 6.4 with glibc's default). `MALLOC_ARENA_MAX` in
/// the environment still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const HEAPS: libc::c_int = 2;

/// Rooms render their pictures in buffers of several megabytes (1600x900 RGBA is 5.8 MB). After the
/// first such buffer is freed, glibc raises its mmap threshold to that size and serves every later
/// one from the heap, where freed memory mostly stays with the process: a server that had many
/// rooms rendering once would keep that memory for good. A fixed threshold keeps big buffers in
/// their own mappings, returned to the system when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const BIG_BUFFER_BYTES: libc::c_int = 1 << 20;

/// Sets glibc's allocator up for many small, long-lived allocations: at most [`HEAPS`] heaps and
/// big buffers in their own mappings (see [`BIG_BUFFER_BYTES`]). Call first thing in `main`.
pub fn tune_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: called first thing in main, before any other thread exists or allocates.
        unsafe {
            if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
                let _ = libc::mallopt(libc::M_ARENA_MAX, HEAPS);
            }
            let _ = libc::mallopt(libc::M_MMAP_THRESHOLD, BIG_BUFFER_BYTES);
        }
    }
}

/// Every [`TRIM_INTERVAL`], if connections were opened or closed since the last look, returns the
/// heaps' free pages to the system (on a blocking thread).
pub async fn trim_after_churn(admission: Arc<Admission>) {
    let mut interval = tokio::time::interval(TRIM_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = admission.churn();
    loop {
        interval.tick().await;
        let now = admission.churn();
        if now != seen {
            seen = now;
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only returns free pages to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
