//! Allocations sized by the input, and large scratch buffers that do not page-fault on every
//! call.
//!
//! Every buffer whose length comes from the caller's data goes through [`try_vec`],
//! [`try_with_capacity`] or [`Scratch::new`]: the size is computed with checked arithmetic,
//! compared with the process-wide allocation limit ([`alloc_limit`], 16 GiB unless
//! [`set_alloc_limit`] changes it) and reserved with the fallible `try_reserve`, so that an
//! impossible request is an [`Error::OutOfMemory`] naming the argument, never an abort.
//!
//! A fresh 100 MB allocation costs a page fault per 4 KiB on first touch, 65-110 ms here,
//! which was a third of the AMX distance matrix's time. On Linux, [`Scratch`] takes its memory
//! from anonymous mappings that ask for transparent huge pages, and keeps up to
//! [`POOL_BYTES`] of released mappings for the next call, so that repeated calls (one per
//! image or batch) reuse memory that is already faulted in. Elsewhere, and below
//! [`MAP_THRESHOLD`], it is an ordinary `Vec`.
//!
//! The contents of a new [`Scratch`] are unspecified (zeros or a previous call's values, always
//! valid values of `T`): callers write every element they later read.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// The allocation limit a process starts with: 16 GiB per buffer.
pub const DEFAULT_ALLOC_LIMIT: u64 = 16 << 30;

static ALLOC_LIMIT: AtomicU64 = AtomicU64::new(DEFAULT_ALLOC_LIMIT);

/// The largest single buffer, in bytes, that a core function sized by its input may allocate.
pub fn alloc_limit() -> u64 {
    ALLOC_LIMIT.load(Ordering::Relaxed)
}

/// Sets the allocation limit (see [`alloc_limit`]) and returns the previous one. Raising it lets
/// a caller with the memory ask for larger outputs (an ancestor mask of 100 000 nodes is
/// 10 GB); a request the system cannot serve is still an [`Error::OutOfMemory`].
pub fn set_alloc_limit(bytes: u64) -> u64 {
    ALLOC_LIMIT.swap(bytes, Ordering::Relaxed)
}

/// The bytes of `len` values of `T`, or an [`Error::OutOfMemory`] naming `arg` when the
/// product overflows or exceeds the allocation limit.
pub(crate) fn check_bytes<T>(arg: &str, what: &str, len: usize) -> Result<usize> {
    let limit = alloc_limit();
    let bytes = len.checked_mul(std::mem::size_of::<T>());
    match bytes {
        Some(b) if b as u64 <= limit => Ok(b),
        _ => Err(Error::OutOfMemory {
            arg: arg.into(),
            what: what.into(),
            bytes: bytes.map_or(u64::MAX, |b| b as u64),
            why: format!(
                "more than the allocation limit of {limit} bytes \
                 (ferrolm.set_alloc_limit raises it)"
            ),
        }),
    }
}

/// The error of a `try_reserve` that failed although the request was within the limit.
fn unavailable(arg: &str, what: &str, bytes: usize) -> Error {
    Error::OutOfMemory {
        arg: arg.into(),
        what: what.into(),
        bytes: bytes as u64,
        why: "which the system could not provide".into(),
    }
}

/// An empty vector with room for `len` values, reserved fallibly after the limit check
/// (`arg` and `what` name the request in the error).
pub fn try_with_capacity<T>(arg: &str, what: &str, len: usize) -> Result<Vec<T>> {
    let bytes = check_bytes::<T>(arg, what, len)?;
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| unavailable(arg, what, bytes))?;
    Ok(v)
}

/// `len` copies of `value`, allocated fallibly after the limit check (see
/// [`try_with_capacity`]).
pub fn try_vec<T: Clone>(arg: &str, what: &str, len: usize, value: T) -> Result<Vec<T>> {
    let mut v = try_with_capacity(arg, what, len)?;
    v.resize(len, value);
    Ok(v)
}

/// `len` zeros of a plain type, allocated fallibly after the limit check (see
/// [`try_with_capacity`]) straight from the allocator's zeroed memory: a large request is
/// fresh zero pages from the kernel, so nothing is written here and the pages are first
/// touched by whoever fills them (in parallel, where the caller fills in parallel). No
/// huge-page advice: on a machine whose memory is fragmented, the kernel's compaction for
/// them cost more system time than the page faults they save (measured).
pub(crate) fn try_zeroed<T: Plain>(arg: &str, what: &str, len: usize) -> Result<Vec<T>> {
    let bytes = check_bytes::<T>(arg, what, len)?;
    if bytes == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(len).map_err(|_| unavailable(arg, what, bytes))?;
    // SAFETY: the layout has a non-zero size (checked above).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        return Err(unavailable(arg, what, bytes));
    }
    // SAFETY: `ptr` was allocated by the global allocator with `Layout::array::<T>(len)`, which
    // is what a `Vec<T>` of capacity `len` frees with; all `len` values are initialised (zero
    // bytes are a valid `T`: `Plain`).
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// Plain-data element types: every bit pattern is a valid value.
///
/// # Safety
/// Implementors must have no padding, no invalid bit patterns and no drop glue.
pub(crate) unsafe trait Plain: Copy + Default {}

// SAFETY: every bit pattern is a valid f32 or u16.
unsafe impl Plain for f32 {}
// SAFETY: as above.
unsafe impl Plain for u16 {}
// SAFETY: as above.
unsafe impl Plain for u8 {}

/// Buffers below this size come from the heap (glibc reuses those without new page faults).
const MAP_THRESHOLD: usize = 256 << 10;

/// Released mappings kept for reuse, in bytes at most. Larger buffers are unmapped on drop.
pub(crate) const POOL_BYTES: usize = 512 << 20;

/// `len` values of unspecified contents: page-aligned when mapped, aligned as `T` otherwise.
pub(crate) struct Scratch<T: Plain> {
    storage: Storage<T>,
}

enum Storage<T> {
    Heap(Vec<T>),
    #[cfg(target_os = "linux")]
    Mapped {
        region: pool::Region,
        len: usize,
    },
}

impl<T: Plain> Scratch<T> {
    /// `len` values, within the allocation limit; `arg` and `what` name the request in the
    /// [`Error::OutOfMemory`] of a refused size.
    pub(crate) fn new(arg: &str, what: &str, len: usize) -> Result<Self> {
        let bytes = check_bytes::<T>(arg, what, len)?;
        #[cfg(target_os = "linux")]
        if bytes >= MAP_THRESHOLD {
            if let Some(region) = pool::take(bytes) {
                return Ok(Scratch {
                    storage: Storage::Mapped { region, len },
                });
            }
        }
        let _ = bytes;
        Ok(Scratch {
            storage: Storage::Heap(try_vec(arg, what, len, T::default())?),
        })
    }
}

impl<T: Plain> Drop for Scratch<T> {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Storage::Mapped { region, .. } = &mut self.storage {
            pool::give_back(std::mem::take(region));
        }
    }
}

impl<T: Plain> Deref for Scratch<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match &self.storage {
            Storage::Heap(v) => v,
            #[cfg(target_os = "linux")]
            // SAFETY: the region holds at least `len * size_of::<T>()` bytes, page-aligned,
            // owned by this buffer alone; any bit pattern is a valid `T` (`Plain`).
            Storage::Mapped { region, len } => unsafe {
                std::slice::from_raw_parts(region.ptr.cast::<T>(), *len)
            },
        }
    }
}

impl<T: Plain> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.storage {
            Storage::Heap(v) => v,
            #[cfg(target_os = "linux")]
            // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
            Storage::Mapped { region, len } => unsafe {
                std::slice::from_raw_parts_mut(region.ptr.cast::<T>(), *len)
            },
        }
    }
}

#[cfg(target_os = "linux")]
mod pool {
    use std::sync::Mutex;

    use super::POOL_BYTES;

    /// An anonymous mapping of `bytes` bytes (null and 0 once given back).
    pub(super) struct Region {
        pub(super) ptr: *mut u8,
        pub(super) bytes: usize,
    }

    impl Default for Region {
        fn default() -> Self {
            Region {
                ptr: std::ptr::null_mut(),
                bytes: 0,
            }
        }
    }

    // SAFETY: a region is plain memory owned by one `Scratch` or by the pool at a time.
    unsafe impl Send for Region {}
    // SAFETY: shared access to a `Scratch` only reads.
    unsafe impl Sync for Region {}

    static POOL: Mutex<Vec<Region>> = Mutex::new(Vec::new());

    /// A region of at least `bytes` bytes: the smallest pooled one that is not more than twice
    /// too large, or a new mapping.
    pub(super) fn take(bytes: usize) -> Option<Region> {
        let bytes = bytes.next_multiple_of(4096);
        if let Ok(mut pool) = POOL.lock() {
            let best = pool
                .iter()
                .enumerate()
                .filter(|(_, r)| r.bytes >= bytes && r.bytes <= 2 * bytes)
                .min_by_key(|(_, r)| r.bytes)
                .map(|(i, _)| i);
            if let Some(i) = best {
                return Some(pool.swap_remove(i));
            }
        }
        map(bytes)
    }

    /// Keeps `region` for reuse, unmapping the largest pooled ones beyond [`POOL_BYTES`].
    pub(super) fn give_back(region: Region) {
        if region.ptr.is_null() {
            return;
        }
        let Ok(mut pool) = POOL.lock() else {
            unmap(region);
            return;
        };
        pool.push(region);
        pool.sort_by_key(|r| r.bytes);
        while pool.iter().map(|r| r.bytes).sum::<usize>() > POOL_BYTES {
            match pool.pop() {
                Some(r) => unmap(r),
                None => break,
            }
        }
    }

    fn map(bytes: usize) -> Option<Region> {
        // SAFETY: an anonymous private mapping aliases no existing memory; failure is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: advice on our own fresh mapping; if the kernel declines, small pages remain.
        unsafe { libc::madvise(ptr, bytes, libc::MADV_HUGEPAGE) };
        Some(Region {
            ptr: ptr.cast(),
            bytes,
        })
    }

    fn unmap(region: Region) {
        // SAFETY: the region came from `map` with this size and is unmapped exactly once.
        unsafe { libc::munmap(region.ptr.cast(), region.bytes) };
    }

    #[cfg(test)]
    pub(super) fn pooled_bytes() -> usize {
        POOL.lock()
            .map(|p| p.iter().map(|r| r.bytes).sum())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_vectors_are_zero_and_refused_over_the_limit() {
        let v: Vec<f32> = try_zeroed("n", "a test", 5 << 20).unwrap();
        assert_eq!(v.len(), 5 << 20);
        assert!(v.iter().all(|&x| x == 0.0));
        assert!(try_zeroed::<f32>("n", "a test", 0).unwrap().is_empty());
        let e = try_zeroed::<f32>("n", "a test", usize::MAX / 2).unwrap_err();
        assert!(matches!(e, Error::OutOfMemory { .. }), "{e:?}");
    }

    #[test]
    fn buffers_of_every_size_hold_their_writes() {
        for len in [0usize, 10, 3 << 20] {
            let mut b = Scratch::<f32>::new("x", "a test", len).unwrap();
            assert_eq!(b.len(), len);
            for (i, v) in b.iter_mut().enumerate() {
                *v = i as f32;
            }
            assert!(b.iter().enumerate().all(|(i, &v)| v == i as f32));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn released_mappings_are_reused_and_the_pool_is_bounded() {
        let a = Scratch::<u16>::new("x", "a test", 5 << 20).unwrap();
        let first = a.as_ptr();
        assert_eq!(first as usize % 4096, 0, "a mapping is page-aligned");
        drop(a);
        // Same size again (other tests may race for it, so allow a fresh mapping too).
        let b = Scratch::<u16>::new("x", "a test", 5 << 20).unwrap();
        assert!(b.as_ptr() == first || pool::pooled_bytes() <= POOL_BYTES);
        drop(b);
        // A buffer larger than the whole pool is unmapped, not kept.
        drop(Scratch::<u16>::new("x", "a test", POOL_BYTES).unwrap());
        assert!(pool::pooled_bytes() <= POOL_BYTES);
    }

    #[test]
    fn impossible_sizes_are_errors_naming_the_argument() {
        let e = try_vec::<u64>("width", "the acceptance vector", 1 << 40, 0).unwrap_err();
        assert!(
            matches!(&e, Error::OutOfMemory { arg, bytes, .. } if arg == "width" && *bytes == 8 << 40)
        );
        assert!(e.to_string().contains("allocation limit"), "{e}");
        let e = try_with_capacity::<u64>("n", "x", usize::MAX).unwrap_err();
        assert!(matches!(
            e,
            Error::OutOfMemory {
                bytes: u64::MAX,
                ..
            }
        ));
        assert!(Scratch::<f32>::new("features", "a matrix", usize::MAX / 2).is_err());
        assert_eq!(try_vec("n", "x", 3, 7u8).unwrap(), vec![7, 7, 7]);
    }
}
