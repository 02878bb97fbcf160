//! System helpers shared by every layer: setting a socket option, the wall
//! clock in Unix milliseconds, which I/O errors mean "try again", and locks
//! that outlive a panic elsewhere. The bottom of the layer order: it imports
//! nothing from the crate.

use std::io;
use std::mem;
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Sets a socket option from a plain value (an int, a struct the kernel reads
/// whole).
pub fn setsockopt<T>(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live T and we pass its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The wall clock in Unix milliseconds (0 before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An error and its sources on one line, "outer: inner: innermost": many
/// libraries keep the useful part (reqwest's "no CA certificates", aya's OS
/// error) in a source while their own message is generic. A cause whose text
/// the line already holds (transparent wrappers repeat it) is not repeated.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

/// Lowers the calling thread's CPU priority to nice `nice` (Linux keeps
/// one per thread; raising the number needs no privilege).
pub fn lower_thread_priority(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority(2) with PRIO_PROCESS and who = 0 changes only the
    // calling thread on Linux; it reads and writes no memory of ours.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Allocations of 128 KiB and more get their own mapping, always.
///
/// glibc raises this threshold each time such a mapping is freed (up to
/// 32 MiB), after which big allocations come from the heap instead, and a
/// zeroed one there is written zero by zero. sled 0.34 allocates its page
/// tables and the histograms of its (unused) metrics zeroed, 35 MiB over the
/// store's and the outbox's databases, and touches almost none of it: in its
/// own mappings it stays virtual, from the heap it was 22 MiB resident at
/// any number of targets (docs/benchmarks.md). Call before anything
/// allocates much. Returns false where the C library refused.
pub fn keep_big_allocations_mapped() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only sets a tunable of the allocator; setting the
        // mmap threshold is documented as safe at any time.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        true
    }
}

/// Hands the pages of freed memory back to the system. glibc returns only
/// the free top of each heap by itself; what a flush freed in the middle
/// (its decoded rounds, its encoded records) would otherwise stay resident
/// until reused: at 1,000 targets the ten-minute rollup section alone left
/// 19 MiB behind. Called after each flush, once a minute (docs/benchmarks.md,
/// "The daemon's memory, piece by piece").
pub fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What the C library's allocator holds, from its own books.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapUsage {
    /// Bytes handed out from the heaps and not yet freed.
    pub in_use: u64,
    /// Bytes of big allocations in mappings of their own, at their full
    /// size: pages never touched (a database's reserved cache) are counted
    /// but not resident.
    pub mapped: u64,
    /// Bytes of free pieces kept inside the heaps. Pages of them that
    /// [`return_freed_memory`] gave back still count here but are not resident.
    pub free: u64,
}

/// The allocator's own count of the bytes in use, which `VmRSS` mixes with
/// free pieces and the code: whether memory grows because something keeps
/// more, or because the heap fragments (docs/benchmarks.md, "Where the rise
/// comes from"). `None` where the C library is not glibc. Walks every arena
/// under its lock: microseconds, once per scrape.
pub fn heap_usage() -> Option<HeapUsage> {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallinfo2 (glibc 2.33) only reads the allocator's
        // statistics under its arena locks; it is thread-safe.
        let info = unsafe { libc::mallinfo2() };
        Some(HeapUsage {
            in_use: info.uordblks as u64,
            mapped: info.hblkhd as u64,
            free: info.fordblks as u64,
        })
    }
    #[cfg(not(target_env = "gnu"))]
    {
        None
    }
}

/// Whether a socket call failed only for now: a non-blocking call that would
/// block, a receive or accept timeout, or a signal. The loop tries again.
pub fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Locks a mutex, carrying on after a panic elsewhere: every critical section
/// leaves its data consistent before anything that can panic, so a poisoned
/// lock holds usable data and one panicking thread does not take the rest down.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// [`lock`] for the read side of a read-write lock.
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// [`lock`] for the write side of a read-write lock.
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// An error with a message and an optional source.
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn an_error_chain_spells_out_every_cause_once() {
        let innermost = Layer("no CA certificates", None);
        // A transparent wrapper repeats its cause's text.
        let wrapper = Layer("no CA certificates", Some(Box::new(innermost)));
        let outer = Layer("builder error", Some(Box::new(wrapper)));
        assert_eq!(error_chain(&outer), "builder error: no CA certificates");
        assert_eq!(error_chain(&Layer("alone", None)), "alone");
    }

    #[test]
    fn a_poisoned_lock_still_hands_out_its_data() {
        let m = Arc::new(Mutex::new(1));
        let l = Arc::new(RwLock::new(2));
        let (m2, l2) = (Arc::clone(&m), Arc::clone(&l));
        let panicked = std::thread::spawn(move || {
            let _m = m2.lock().unwrap();
            let _l = l2.write().unwrap();
            panic!("poison both");
        })
        .join();
        assert!(panicked.is_err());
        assert!(m.is_poisoned() && l.is_poisoned());
        *lock(&m) += 1;
        *write(&l) += 1;
        assert_eq!((*lock(&m), *read(&l)), (2, 3));
    }

    #[test]
    fn transient_errors_are_the_retry_kinds_only() {
        for kind in [
            io::ErrorKind::WouldBlock,
            io::ErrorKind::TimedOut,
            io::ErrorKind::Interrupted,
        ] {
            assert!(is_transient(&io::Error::from(kind)), "{kind:?}");
        }
        assert!(is_transient(&io::Error::from_raw_os_error(libc::EAGAIN)));
        assert!(!is_transient(&io::Error::from_raw_os_error(
            libc::ECONNREFUSED
        )));
        assert!(!is_transient(&io::Error::from(io::ErrorKind::BrokenPipe)));
    }

    #[test]
    fn setsockopt_sets_and_reports_failure() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let size: libc::c_int = 1 << 16;
        setsockopt(&socket, libc::SOL_SOCKET, libc::SO_RCVBUF, &size).unwrap();
        let err = setsockopt(&socket, libc::SOL_SOCKET, -1, &size).unwrap_err();
        assert!(err.raw_os_error().is_some(), "{err}");
    }

    #[test]
    fn now_ms_is_after_2020() {
        assert!(now_ms() > 1_577_836_800_000);
    }
}
