//! The one place where core errors become Python exceptions, and the guard that keeps Rust
//! panics from crossing into Python.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use ferrolm_core::cancel::POLL_INTERVAL;
use ferrolm_core::{Cancel, Error};
use pyo3::exceptions::{
    PyKeyboardInterrupt, PyMemoryError, PyOSError, PyRuntimeError, PyTimeoutError, PyTypeError,
    PyValueError,
};
use pyo3::prelude::*;

/// Maps a core error to the Python exception class documented on [`Error`].
pub fn to_py(error: Error) -> PyErr {
    let message = error.to_string();
    match error {
        Error::InvalidValue { .. } | Error::Malformed { .. } => PyValueError::new_err(message),
        Error::InvalidType { .. } => PyTypeError::new_err(message),
        Error::Io { .. } => PyOSError::new_err(message),
        Error::Timeout { .. } => PyTimeoutError::new_err(message),
        Error::Device(_) | Error::Internal(_) => PyRuntimeError::new_err(message),
        Error::OutOfMemory { .. } => PyMemoryError::new_err(message),
        Error::Interrupted(_) => PyKeyboardInterrupt::new_err(message),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_owned()
    }
}

/// Guarded calls left before an armed test panic fires; 0 = disarmed (see `_debug_panic_next`).
static PANIC_COUNTDOWN: AtomicUsize = AtomicUsize::new(0);

/// The message of a panic armed by `_debug_panic_next`.
pub const ARMED_PANIC: &str = "panic armed by _debug_panic_next";

#[cold]
fn countdown_armed_panic() {
    let before = PANIC_COUNTDOWN.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
        left.checked_sub(1)
    });
    if before == Ok(1) {
        panic!("{ARMED_PANIC}");
    }
}

/// Runs `work`, turning a panic inside it into [`Error::Internal`].
pub fn guard<T>(work: impl FnOnce() -> ferrolm_core::Result<T>) -> ferrolm_core::Result<T> {
    let guarded = || {
        // Disarmed (the normal case) this is one relaxed load: the test hook costs nothing else.
        if PANIC_COUNTDOWN.load(Ordering::Relaxed) != 0 {
            countdown_armed_panic();
        }
        work()
    };
    match catch_unwind(AssertUnwindSafe(guarded)) {
        Ok(result) => result,
        Err(payload) => Err(Error::Internal(panic_message(payload.as_ref()))),
    }
}

/// The standard binding step: release the GIL, run core work under the panic guard, map errors.
pub fn detach<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> ferrolm_core::Result<T> + Send,
{
    let threads = crate::threads::wanted(py);
    py.detach(|| guard(|| crate::threads::install(threads, work)))
        .map_err(to_py)
}

/// [`detach`] for long work that takes a [`Cancel`]: the core's checks poll
/// `Python::check_signals` (reacquiring the GIL for that moment, at most every 50 ms, on this
/// thread only), so Ctrl-C stops the work and raises the exception the signal handler raised
/// (`KeyboardInterrupt` by default) instead of waiting for the end.
pub fn detach_cancellable<T, F>(py: Python<'_>, during: &'static str, work: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce(&Cancel<'_>) -> ferrolm_core::Result<T> + Send,
{
    let raised: Mutex<Option<PyErr>> = Mutex::new(None);
    let poll = || {
        Python::attach(|py| match py.check_signals() {
            Ok(()) => false,
            Err(e) => {
                if let Ok(mut slot) = raised.lock() {
                    *slot = Some(e);
                }
                true
            }
        })
    };
    let threads = crate::threads::wanted(py);
    let result = py.detach(|| {
        let cancel = Cancel::new(&poll, during);
        // On a pool of its own the work runs on pool threads, so this thread polls for it.
        let watch = || {
            let _ = cancel.check();
        };
        guard(|| crate::threads::install_watched(threads, POLL_INTERVAL, || work(&cancel), watch))
    });
    match result {
        Ok(v) => Ok(v),
        Err(e @ Error::Interrupted(_)) => {
            let pending = raised.lock().ok().and_then(|mut slot| slot.take());
            Err(pending.unwrap_or_else(|| to_py(e)))
        }
        Err(e) => Err(to_py(e)),
    }
}

/// Panics inside the guard on purpose, so tests can prove no `PanicException` escapes.
#[pyfunction]
pub fn _debug_panic(py: Python<'_>, message: String) -> PyResult<()> {
    detach(py, move || -> ferrolm_core::Result<()> {
        panic!("{message}")
    })
}

/// Arms a test panic: the `calls`-th guarded call from now (1 = the next one) panics inside the
/// guard, before its core work starts, with the message "panic armed by _debug_panic_next";
/// 0 disarms. Lets tests reach the guard of every binding without a real bug.
#[pyfunction]
pub fn _debug_panic_next(calls: usize) {
    PANIC_COUNTDOWN.store(calls, Ordering::Relaxed);
}

/// Raises the Python exception that a core error of `kind` maps to (for tests of the mapping).
#[pyfunction]
pub fn _debug_raise(kind: &str) -> PyResult<()> {
    let error = match kind {
        "value" => Error::value("arg", "a value", "another"),
        "type" => Error::dtype("arg", "float32", "int64"),
        "malformed" => Error::malformed("file.json", "truncated"),
        "io" => Error::Io {
            path: "missing.bin".into(),
            message: "No such file or directory".into(),
        },
        "device" => Error::Device("no GPU".into()),
        "timeout" => Error::Timeout {
            seconds: 1.5,
            during: "waiting for rank 1".into(),
        },
        "internal" => Error::Internal("broken invariant".into()),
        "memory" => Error::OutOfMemory {
            arg: "arg".into(),
            what: "a buffer".into(),
            bytes: 1 << 40,
            why: "more than the limit".into(),
        },
        other => Error::value(
            "kind",
            "one of value, type, malformed, io, device, timeout, internal, memory",
            format!("{other:?}"),
        ),
    };
    Err(to_py(error))
}
