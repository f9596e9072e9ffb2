//! How many threads native calls use, and the rayon pool they run on.
//!
//! Under `torchrun` every rank is a process on the same machine, and torchrun sets
//! `OMP_NUM_THREADS=1` so that the ranks do not fight over the cores; a user who calls
//! `torch.set_num_threads` expects the whole process to follow. Rayon's global pool is sized
//! once and never again, so the bindings size the pool per call, under the GIL, before they
//! release it: `ferrolm.set_num_threads(n)` when it was called, else `torch.get_num_threads()`
//! when torch is imported, else `OMP_NUM_THREADS`, else `RAYON_NUM_THREADS`, else the cores.
//! The first call sizes rayon's global pool; a call that wants that size runs exactly as a
//! plain rayon call, one that wants another size runs on one cached pool of that size.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

/// The most threads one may ask for: far above any machine, low enough that a typo
/// (`set_num_threads(10**9)`) is an error instead of an attempt to spawn them.
pub const MAX_THREADS: usize = 4096;

/// `ferrolm.set_num_threads`' value; 0: follow torch and the environment.
static EXPLICIT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// A count for the native calls of this thread alone (0: none), before every other rule.
    static LOCAL: Cell<usize> = const { Cell::new(0) };
}

/// The pool of the last size that differed from the global pool's.
static POOL: Mutex<Option<Arc<rayon::ThreadPool>>> = Mutex::new(None);

/// `sys.modules`, looked up once: "is torch imported" is then one dictionary lookup per call.
static MODULES: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

fn torch_threads(py: Python<'_>) -> Option<usize> {
    let modules = MODULES
        .get_or_try_init(py, || -> PyResult<Py<PyDict>> {
            let modules = py.import("sys")?.getattr("modules")?;
            Ok(modules.cast_into::<PyDict>()?.unbind())
        })
        .ok()?
        .bind(py);
    let torch = modules.get_item("torch").ok()??;
    // A torch still being imported may not have the function yet: fall through to the env.
    let n: i64 = torch
        .getattr("get_num_threads")
        .ok()?
        .call0()
        .ok()?
        .extract()
        .ok()?;
    positive(n)
}

fn positive(n: i64) -> Option<usize> {
    usize::try_from(n)
        .ok()
        .filter(|&n| n >= 1)
        .map(|n| n.min(MAX_THREADS))
}

/// OpenMP's syntax: a positive count, or a comma-separated list whose first entry is the
/// outer level's count.
fn env_threads(name: &str) -> Option<usize> {
    let value = std::env::var(name).ok()?;
    let first = value.split(',').next()?.trim();
    positive(first.parse().ok()?)
}

fn cores() -> usize {
    // Reading the cgroup quota makes `available_parallelism` cost ~100 us: ask once.
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The global pool's size. The first native call builds it with the count wanted then, so
/// that the usual case (a count that never changes: torch's default, `torchrun`'s
/// `OMP_NUM_THREADS=1`) runs straight on the calling thread and the global pool, without
/// the ~10-50 us hand-off to another pool's thread on every call.
fn global_size(first: usize) -> usize {
    static GLOBAL: OnceLock<usize> = OnceLock::new();
    *GLOBAL.get_or_init(|| {
        // Fails only when the pool already exists (then its size is what it is).
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(first)
            .build_global();
        rayon::current_num_threads()
    })
}

/// The number of threads the next native call will use (see the module doc for the order).
pub fn wanted(py: Python<'_>) -> usize {
    let local = LOCAL.with(Cell::get);
    if local > 0 {
        return local;
    }
    let explicit = EXPLICIT.load(Ordering::Relaxed);
    if explicit > 0 {
        return explicit;
    }
    torch_threads(py)
        .or_else(|| env_threads("OMP_NUM_THREADS"))
        .or_else(|| env_threads("RAYON_NUM_THREADS"))
        .unwrap_or_else(cores)
}

/// Fixes the count for the calling thread's native calls only (`Some`), or clears it.
pub fn set_local(n: Option<usize>) {
    LOCAL.with(|c| c.set(n.unwrap_or(0)));
}

/// Fixes the count (`Some`) or returns to following torch and the environment (`None`).
pub fn set_explicit(n: Option<usize>) {
    EXPLICIT.store(n.unwrap_or(0), Ordering::Relaxed);
}

/// A pool of `n` threads, or `None` when the global pool already has that size (or a new
/// pool cannot be built: then the work runs on the global pool rather than failing).
fn pool(n: usize) -> Option<Arc<rayon::ThreadPool>> {
    if n == global_size(n) {
        return None;
    }
    // A poisoned lock only means another thread panicked while swapping pools: the slot
    // itself is still a valid Option.
    let mut slot = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = slot.as_ref().filter(|p| p.current_num_threads() == n) {
        return Some(Arc::clone(p));
    }
    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("ferrolm-{i}"))
        .build()
        .ok()
        .map(Arc::new);
    // The previous pool's threads exit once the calls still running on it finish.
    slot.clone_from(&built);
    built
}

/// Runs `work` with `n` threads (call it without the GIL; `n` comes from [`wanted`]).
pub fn install<T: Send>(n: usize, work: impl FnOnce() -> T + Send) -> T {
    match pool(n) {
        None => work(),
        Some(p) => p.install(work),
    }
}

/// [`install`] for work that the calling thread must watch: `watch` runs on the calling
/// thread every `every` until the work ends (the work itself runs on a pool thread, where
/// Python cannot deliver signals).
pub fn install_watched<T: Send>(
    n: usize,
    every: Duration,
    work: impl FnOnce() -> T + Send,
    watch: impl Fn(),
) -> T {
    let Some(p) = pool(n) else {
        return work();
    };
    let (sender, receiver) = channel();
    let mut out = None;
    p.in_place_scope(|scope| {
        scope.spawn(move |_| {
            // The receiver lives until the scope ends, so this cannot fail.
            let _ = sender.send(work());
        });
        loop {
            match receiver.recv_timeout(every) {
                Ok(value) => {
                    out = Some(value);
                    break;
                }
                Err(RecvTimeoutError::Timeout) => watch(),
                // The work panicked: the scope re-raises that panic when it ends.
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    });
    match out {
        Some(value) => value,
        None => unreachable!("the pool job ended without a result and without a panic"),
    }
}

/// The number of threads a native call actually runs with: `rayon::current_num_threads()`
/// measured inside the pool the bindings chose (for the tests of the policy above).
#[pyfunction]
pub fn _debug_pool_threads(py: Python<'_>) -> PyResult<usize> {
    crate::errors::detach(py, || Ok(rayon::current_num_threads()))
}
