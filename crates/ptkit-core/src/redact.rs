//! Log scrubbing: client addresses, targets and secrets print as `[scrubbed]` unless the
//! operator asked for `--unsafe-logging` (arti's Safelogging rules).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

static UNSAFE_LOGGING: AtomicBool = AtomicBool::new(false);

/// Turns scrubbing off (`--unsafe-logging`) or back on, for the whole process.
pub fn set_unsafe_logging(enabled: bool) {
    UNSAFE_LOGGING.store(enabled, Ordering::Relaxed);
}

/// True when sensitive values may be logged as they are.
pub fn unsafe_logging() -> bool {
    UNSAFE_LOGGING.load(Ordering::Relaxed)
}

/// Wraps a value whose `Display`/`Debug` must not reach logs unless unsafe logging is on.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sensitive<T>(pub T);

impl<T: fmt::Display> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if unsafe_logging() {
            self.0.fmt(f)
        } else {
            f.write_str("[scrubbed]")
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if unsafe_logging() {
            self.0.fmt(f)
        } else {
            f.write_str("[scrubbed]")
        }
    }
}

/// Shorthand for [`Sensitive`].
pub fn sensitive<T>(value: T) -> Sensitive<T> {
    Sensitive(value)
}
