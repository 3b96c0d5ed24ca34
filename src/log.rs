//! Levelled log lines for everything off the hot path (control, the daemon, the set-up of
//! the I/O): `xlb: LEVEL: message` on stderr, one line per event (a backend up or down, a
//! config applied, a mode chosen), filtered by a process-wide maximum level (`--log-level`,
//! default `info`). A module of its own so that control and the dataplane's I/O both use it
//! without one importing the other.
//!
//! The macros [`error!`], [`warn!`], [`info!`] and [`debug!`] take `format!` arguments and
//! format nothing when their level is filtered out. The line format is the one `xlb run` has
//! always printed, so scripts and the labs that read it keep working.
//!
//! Lines about events that other hosts trigger at will (a neighbour's MAC changing, a host
//! claiming a VIP) go through a [`LogBudget`]: at most so many lines per interval, and one
//! line saying how many were suppressed, so a flapping or hostile host cannot flood the log.
//!
//! Invariants: a message is always exactly one line (a newline inside it is written as
//! `\n`), and a line is written with one `write_all` on a locked stderr, so lines of several
//! threads never interleave. Never used on the hot path: workers do not log, they count.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

/// How important a line is; a line is written if its level is at most the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Level {
    /// Something failed and xlb could not do what it was asked (a reload refused).
    Error = 0,
    /// Something is off but xlb carries on (a stale XDP program removed, fewer cores).
    Warn = 1,
    /// A state change: ready, config applied, mode chosen, backend up or down.
    Info = 2,
    /// Detail for a developer (every neighbour relayed, every report).
    Debug = 3,
}

impl Level {
    /// Every level, most important first.
    pub const ALL: [Level; 4] = [Level::Error, Level::Warn, Level::Info, Level::Debug];

    /// The lowercase name written in lines and accepted by `--log-level`.
    pub const fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--log-level` that names no level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log level {0:?}: expected error, warn, info or debug")]
pub struct UnknownLevel(pub String);

impl FromStr for Level {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Ok(Level::Error),
            "warn" | "warning" => Ok(Level::Warn),
            "info" => Ok(Level::Info),
            "debug" => Ok(Level::Debug),
            _ => Err(UnknownLevel(s.to_string())),
        }
    }
}

/// The most detailed level written. Written by [`set_max_level`] (at start-up), read by
/// every log call; no other memory depends on it, so relaxed ordering is enough.
static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the most detailed level written (`--log-level`).
pub fn set_max_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// The most detailed level written.
pub fn max_level() -> Level {
    let stored = MAX_LEVEL.load(Ordering::Relaxed);
    Level::ALL.into_iter().find(|l| *l as u8 == stored).unwrap_or(Level::Debug)
}

/// True if a line of `level` would be written.
#[inline]
pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// The line for a message, newline included: `xlb: LEVEL: message`.
pub fn line(level: Level, message: fmt::Arguments<'_>) -> String {
    let mut text = format!("xlb: {level}: {message}");
    if text.contains('\n') {
        text = text.replace('\n', "\\n");
    }
    text.push('\n');
    text
}

/// Writes `message` to `out` as one line if `level` is enabled.
pub fn write_to(out: &mut dyn Write, level: Level, message: fmt::Arguments<'_>) -> io::Result<()> {
    if !enabled(level) {
        return Ok(());
    }
    out.write_all(line(level, message).as_bytes())
}

/// Writes `message` to stderr as one line if `level` is enabled (what the macros call).
pub fn write(level: Level, message: fmt::Arguments<'_>) {
    if enabled(level) {
        // Nowhere to report a failure to write to stderr.
        let _ = write_to(&mut io::stderr().lock(), level, message);
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __xlb_log_error {
    ($($arg:tt)*) => {
        $crate::log::write($crate::log::Level::Error, format_args!($($arg)*))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __xlb_log_warn {
    ($($arg:tt)*) => {
        $crate::log::write($crate::log::Level::Warn, format_args!($($arg)*))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __xlb_log_info {
    ($($arg:tt)*) => {
        $crate::log::write($crate::log::Level::Info, format_args!($($arg)*))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __xlb_log_debug {
    ($($arg:tt)*) => {
        $crate::log::write($crate::log::Level::Debug, format_args!($($arg)*))
    };
}

/// `debug!("...", args)`: a line at [`Level::Debug`].
pub use __xlb_log_debug as debug;
/// `error!("...", args)`: a line at [`Level::Error`].
pub use __xlb_log_error as error;
/// `info!("...", args)`: a line at [`Level::Info`].
pub use __xlb_log_info as info;
/// `warn!("...", args)`: a line at [`Level::Warn`].
pub use __xlb_log_warn as warn;

/// At most `max` lines per `interval` for one kind of event; the rest are counted.
#[derive(Debug, Clone)]
pub struct LogBudget {
    max: u32,
    interval: std::time::Duration,
    window_start: Option<std::time::Instant>,
    written: u32,
    suppressed: u64,
}

impl LogBudget {
    pub const fn new(max: u32, interval: std::time::Duration) -> Self {
        LogBudget { max, interval, window_start: None, written: 0, suppressed: 0 }
    }

    fn roll(&mut self, now: std::time::Instant) {
        let expired =
            self.window_start.is_none_or(|start| now.duration_since(start) >= self.interval);
        if expired {
            self.window_start = Some(now);
            self.written = 0;
        }
    }

    /// True if a line may be written now; otherwise the line is counted as suppressed.
    pub fn allow(&mut self, now: std::time::Instant) -> bool {
        self.roll(now);
        if self.written < self.max {
            self.written += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Lines suppressed since the last call, once their window is over (then the caller
    /// writes one line saying so); None while the window runs or nothing was suppressed.
    pub fn take_suppressed(&mut self, now: std::time::Instant) -> Option<u64> {
        let over =
            self.window_start.is_some_and(|start| now.duration_since(start) >= self.interval);
        if !over || self.suppressed == 0 {
            return None;
        }
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_writes_so_many_lines_per_interval_and_counts_the_rest() {
        use std::time::{Duration, Instant};
        let mut budget = LogBudget::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let written = (0..1000).filter(|_| budget.allow(t0)).count();
        assert_eq!(written, 3);
        assert_eq!(budget.take_suppressed(t0 + Duration::from_secs(5)), None, "window runs");
        assert_eq!(budget.take_suppressed(t0 + Duration::from_secs(10)), Some(997));
        assert_eq!(budget.take_suppressed(t0 + Duration::from_secs(11)), None, "said once");
        assert!(budget.allow(t0 + Duration::from_secs(10)), "a new window");
    }

    #[test]
    fn levels_parse_print_and_order() {
        for level in Level::ALL {
            assert_eq!(level.name().parse::<Level>(), Ok(level));
            assert_eq!(level.to_string().to_uppercase().parse::<Level>(), Ok(level));
        }
        assert_eq!("warning".parse::<Level>(), Ok(Level::Warn));
        let error = "loud".parse::<Level>().unwrap_err();
        assert!(error.to_string().contains("\"loud\""), "{error}");
        assert!(Level::Error < Level::Warn && Level::Warn < Level::Info);
        assert!(Level::Info < Level::Debug);
    }

    #[test]
    fn a_message_is_one_line_in_the_old_format() {
        let ip = "10.1.1.11";
        assert_eq!(
            line(Level::Info, format_args!("backend {ip} up")),
            "xlb: info: backend 10.1.1.11 up\n"
        );
        assert_eq!(line(Level::Error, format_args!("a\nb")), "xlb: error: a\\nb\n");
    }

    /// The only test that changes the process-wide level (tests run in parallel).
    #[test]
    fn the_maximum_level_filters_lines() {
        let mut out = Vec::new();
        set_max_level(Level::Warn);
        assert_eq!(max_level(), Level::Warn);
        for level in Level::ALL {
            write_to(&mut out, level, format_args!("{level} line")).unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "xlb: error: error line\nxlb: warn: warn line\n"
        );
        assert!(!enabled(Level::Info));
        set_max_level(Level::Debug);
        assert!(enabled(Level::Debug));
        // The macros compile with format arguments and write to stderr.
        info!("{} {}", "macro", 1);
        debug!("debug {}", 2);
        warn!("warn");
        error!("error {:?}", ());
        set_max_level(Level::Info);
        assert_eq!(max_level(), Level::Info);
    }
}
