//! The single error type of the core crate.
//!
//! Every fallible function returns [`Result`]. Messages name the argument, what was expected
//! and what was received, so the Python layer can surface them unchanged.

use std::fmt::Display;

/// Everything that can go wrong in ferrolm's core.
///
/// The bindings map each variant to one Python exception class:
/// [`Error::InvalidValue`] and [`Error::Malformed`] to `ValueError`, [`Error::InvalidType`] to
/// `TypeError`, [`Error::Io`] to `OSError`, [`Error::Timeout`] to `TimeoutError` and
/// [`Error::Device`] / [`Error::Internal`] to `RuntimeError` and [`Error::Interrupted`] to
/// `KeyboardInterrupt` (or to whatever exception the interpreter's signal handler raised).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// An argument has the wrong value or shape.
    #[error("`{arg}` must be {expected}, got {got}")]
    InvalidValue {
        /// Name of the offending argument, as the user wrote it.
        arg: String,
        /// What the argument must be.
        expected: String,
        /// What was received.
        got: String,
    },
    /// An argument has the wrong element type or kind.
    #[error("`{arg}` must be {expected}, got {got}")]
    InvalidType {
        /// Name of the offending argument.
        arg: String,
        /// The accepted types.
        expected: String,
        /// The type received.
        got: String,
    },
    /// Input data (a file, a serialized structure) is malformed.
    #[error("{what} is malformed: {detail}")]
    Malformed {
        /// What was being read, e.g. a path or "tokenizer.json".
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {message}")]
    Io {
        /// The file involved.
        path: String,
        /// The operating system's message.
        message: String,
    },
    /// A device (CUDA driver, NVRTC, GPU) is missing or failed.
    #[error("{0}")]
    Device(String),
    /// An operation did not finish within its deadline.
    #[error("timed out after {seconds:.1} s while {during}")]
    Timeout {
        /// The deadline that passed, in seconds.
        seconds: f64,
        /// What was being waited for.
        during: String,
    },
    /// A long computation stopped because its cancellation check asked it to (Ctrl-C).
    #[error("interrupted while {0}")]
    Interrupted(String),
    /// A broken internal invariant: a bug in ferrolm, never the user's fault.
    #[error("internal error in ferrolm (please report it): {0}")]
    Internal(String),
}

impl Error {
    /// An [`Error::InvalidValue`] for argument `arg`.
    pub fn value(arg: impl Into<String>, expected: impl Into<String>, got: impl Display) -> Self {
        Error::InvalidValue {
            arg: arg.into(),
            expected: expected.into(),
            got: got.to_string(),
        }
    }

    /// An [`Error::InvalidType`] for argument `arg`.
    pub fn dtype(arg: impl Into<String>, expected: impl Into<String>, got: impl Display) -> Self {
        Error::InvalidType {
            arg: arg.into(),
            expected: expected.into(),
            got: got.to_string(),
        }
    }

    /// An [`Error::Malformed`] about `what`.
    pub fn malformed(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Malformed {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

/// Shorthand for results of the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Checks that two lengths agree, naming the argument that disagrees.
pub fn check_len(arg: &str, actual: usize, expected: usize) -> Result<()> {
    if actual == expected {
        Ok(())
    } else {
        Err(Error::value(
            arg,
            format!("of length {expected}"),
            format!("length {actual}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_error_names_argument_expectation_and_input() {
        let e = Error::value("budget", "at least 1", 0);
        assert_eq!(e.to_string(), "`budget` must be at least 1, got 0");
    }

    #[test]
    fn check_len_accepts_equal_and_rejects_different_lengths() {
        assert!(check_len("x", 3, 3).is_ok());
        let e = check_len("out", 2, 3).unwrap_err();
        assert_eq!(e.to_string(), "`out` must be of length 3, got length 2");
    }
}
