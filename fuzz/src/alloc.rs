//! A global allocator that refuses any single allocation over a cap while a case runs.
//!
//! "No allocation the input cannot justify": the inputs are a few KiB to a few MiB, so a
//! request over the cap (256 MiB by default) can only come from a size read from the input and
//! trusted. The allocator records the first such request and returns null: a fallible
//! `try_reserve` then sees an error (and the driver reports the violation after the case), an
//! infallible one aborts the process. Because of the abort, the allocator writes the input to
//! the crash file and prints the seed itself, before returning, without allocating.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::File;
use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// The allocator: [`System`] with the cap.
pub struct CapAlloc;

/// The cap while a case runs, in bytes.
static CAP: AtomicUsize = AtomicUsize::new(256 << 20);
/// Whether a case is running (the driver's own buffers are not capped).
static ARMED: AtomicBool = AtomicBool::new(false);
/// The size of the first over-cap request of the current case (0 = none).
static VIOLATION: AtomicUsize = AtomicUsize::new(0);
/// The current case, for the crash file: its bytes, the run seed and the case index.
static INPUT_PTR: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static INPUT_LEN: AtomicUsize = AtomicUsize::new(0);
static SEED: AtomicU64 = AtomicU64::new(0);
static CASE: AtomicU64 = AtomicU64::new(0);
/// An open crash file (-1 = none).
static CRASH_FD: AtomicI32 = AtomicI32::new(-1);

/// Sets the cap in bytes.
pub fn set_cap(bytes: usize) {
    CAP.store(bytes, Ordering::Relaxed);
}

/// The cap in bytes.
pub fn cap() -> usize {
    CAP.load(Ordering::Relaxed)
}

/// Registers the file that receives the input of a case that trips the cap.
pub fn set_crash_file(file: &File) {
    use std::os::fd::AsRawFd;
    CRASH_FD.store(file.as_raw_fd(), Ordering::Relaxed);
}

/// Marks the start of a case: `input` must stay alive until [`disarm`].
pub fn arm(input: &[u8], seed: u64, case: u64) {
    INPUT_PTR.store(input.as_ptr().cast_mut(), Ordering::Relaxed);
    INPUT_LEN.store(input.len(), Ordering::Relaxed);
    SEED.store(seed, Ordering::Relaxed);
    CASE.store(case, Ordering::Relaxed);
    VIOLATION.store(0, Ordering::Relaxed);
    ARMED.store(true, Ordering::SeqCst);
}

/// Marks the end of a case; returns the size of its first over-cap request, if any.
pub fn disarm() -> Option<usize> {
    ARMED.store(false, Ordering::SeqCst);
    INPUT_PTR.store(std::ptr::null_mut(), Ordering::Relaxed);
    match VIOLATION.swap(0, Ordering::Relaxed) {
        0 => None,
        n => Some(n),
    }
}

/// Whether a request of `size` bytes must be refused; records and reports the first one.
fn refuse(size: usize) -> bool {
    if !ARMED.load(Ordering::Relaxed) || size <= CAP.load(Ordering::Relaxed) {
        return false;
    }
    if VIOLATION
        .compare_exchange(0, size, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
    {
        save_input();
        let mut err = std::io::stderr();
        let _ = writeln!(
            err,
            "ferrolm-fuzz: case {} of seed {} asked for one allocation of {size} bytes \
             (cap {}); input saved to the crash file",
            CASE.load(Ordering::Relaxed),
            SEED.load(Ordering::Relaxed),
            CAP.load(Ordering::Relaxed),
        );
    }
    true
}

/// The case index of the current case.
pub fn current_case() -> u64 {
    CASE.load(Ordering::Relaxed)
}

/// The run seed of the current case.
pub fn current_seed() -> u64 {
    SEED.load(Ordering::Relaxed)
}

/// Writes the current case's input to the crash file (for the hang watchdog).
pub fn save_current_input() {
    save_input();
}

/// Writes the current input to the crash file without allocating.
fn save_input() {
    let fd: RawFd = CRASH_FD.load(Ordering::Relaxed);
    let ptr = INPUT_PTR.load(Ordering::Relaxed);
    if fd < 0 || ptr.is_null() {
        return;
    }
    let len = INPUT_LEN.load(Ordering::Relaxed);
    // SAFETY: `arm` stored a live slice that stays alive until `disarm`, and a case runs
    // between the two; the file descriptor belongs to the driver's open crash file, which
    // `ManuallyDrop` keeps from being closed here.
    let (input, file) = unsafe {
        (
            std::slice::from_raw_parts(ptr, len),
            ManuallyDrop::new(File::from_raw_fd(fd)),
        )
    };
    let _ = file.set_len(0);
    let _ = file.write_all_at(input, 0);
}

// SAFETY: every call forwards to `System` with the caller's layout, or returns null, which the
// `GlobalAlloc` contract allows for any request.
unsafe impl GlobalAlloc for CapAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refuse(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
