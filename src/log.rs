//! Levelled log lines for everything off the hot path (control, the daemon, the set-up of
//! the I/O), on stderr, one line per event (a backend up or down, a config applied, a mode
//! chosen), filtered by a process-wide maximum level (`--log-level`, default `info`). A
//! module of its own so that control and the dataplane's I/O both use it without one
//! importing the other.
//!
//! Three line formats ([`Format`], process-wide, chosen once at start-up by [`init`]):
//! - text (the default): `2026-12-06T00:58:53.123Z xlb: info: message`, an RFC 3339 UTC
//!   timestamp (milliseconds) before the `xlb: LEVEL: message` the labs and scripts read;
//! - journal: what `systemd-journald` wants on a stream it reads (sd-daemon(3)): no
//!   timestamp (the journal stamps every line) and the syslog priority as a `<N>` prefix,
//!   `<6>info: message` (error 3, warn 4, info 6, debug 7). Chosen instead of text when
//!   stderr *is* the journal's stream: `JOURNAL_STREAM` (set by systemd) names stderr's
//!   device and inode ([`is_journal_stream`]; a child that merely inherited the variable
//!   writes text);
//! - json (`--log-format json`): one object per line, `{"ts":"…","level":"info","msg":"…"}`
//!   (the logger has no structured fields), also under systemd.
//!
//! The macros [`error!`], [`warn!`], [`info!`] and [`debug!`] take `format!` arguments and
//! format nothing when their level is filtered out.
//!
//! Lines about events that other hosts trigger at will (a neighbour's MAC changing, a host
//! claiming a VIP) go through a [`LogBudget`]: at most so many lines per interval, and one
//! line saying how many were suppressed, so a flapping or hostile host cannot flood the log.
//!
//! Invariants: a message is always exactly one line in every format (a newline inside it is
//! written as `\n`, in JSON by the string's escaping), and a line is written with one
//! `write_all` on a locked stderr, so lines of several threads never interleave. Never used
//! on the hot path: workers do not log, they count.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::SystemTime;

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

/// How lines are written (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Format {
    /// `TIMESTAMP xlb: LEVEL: message`.
    Text = 0,
    /// `<PRIORITY>LEVEL: message`, for systemd-journald.
    Journal = 1,
    /// `{"ts":…,"level":…,"msg":…}`.
    Json = 2,
}

/// What `--log-format` accepts: text (journal under systemd) or json.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FormatChoice {
    /// Text, or the journal's format when stderr is the journal's stream.
    #[default]
    Text,
    Json,
}

/// A `--log-format` that names no format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format {0:?}: expected text or json")]
pub struct UnknownFormat(pub String);

impl FromStr for FormatChoice {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(FormatChoice::Text),
            "json" => Ok(FormatChoice::Json),
            _ => Err(UnknownFormat(s.to_string())),
        }
    }
}

/// The format of every line. Written by [`set_format`] (at start-up), read by every log
/// call; relaxed ordering is enough, as for the level.
static FORMAT: AtomicU8 = AtomicU8::new(Format::Text as u8);

/// Sets the format of every line.
pub fn set_format(format: Format) {
    FORMAT.store(format as u8, Ordering::Relaxed);
}

/// The format of every line.
pub fn format() -> Format {
    match FORMAT.load(Ordering::Relaxed) {
        1 => Format::Journal,
        2 => Format::Json,
        _ => Format::Text,
    }
}

/// The format a choice comes to: text becomes the journal's format when stderr is the
/// journal's stream.
pub fn resolve(choice: FormatChoice, journal: bool) -> Format {
    match choice {
        FormatChoice::Json => Format::Json,
        FormatChoice::Text if journal => Format::Journal,
        FormatChoice::Text => Format::Text,
    }
}

/// True if `journal_stream` (the value of `JOURNAL_STREAM`, `DEVICE:INODE` in decimal as
/// systemd sets it) names `stderr` (its device and inode), i.e. stderr is connected to
/// the journal (systemd.exec(5) asks programs to compare rather than trust the variable).
pub fn is_journal_stream(journal_stream: Option<&str>, stderr: Option<(u64, u64)>) -> bool {
    let (Some(value), Some((dev, ino))) = (journal_stream, stderr) else { return false };
    let Some((d, i)) = value.trim().split_once(':') else { return false };
    d.parse::<u64>() == Ok(dev) && i.parse::<u64>() == Ok(ino)
}

/// Stderr's device and inode (None if it is closed).
fn stderr_id() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Sets the process-wide level and format (`--log-level`, `--log-format`), looking at
/// `JOURNAL_STREAM` and stderr for the journal's format.
pub fn init(level: Level, choice: FormatChoice) {
    set_max_level(level);
    let journal_stream = std::env::var("JOURNAL_STREAM").ok();
    set_format(resolve(choice, is_journal_stream(journal_stream.as_deref(), stderr_id())));
}

impl Level {
    /// The syslog priority journald reads from a `<N>` prefix (sd-daemon(3)).
    pub const fn priority(self) -> u8 {
        match self {
            Level::Error => 3,
            Level::Warn => 4,
            Level::Info => 6,
            Level::Debug => 7,
        }
    }
}

/// `t` in RFC 3339, UTC, to the millisecond: `2026-12-06T00:58:53.123Z` (a time before
/// 1970 is written as 1970's start: clocks that far off are not worth a branch).
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's `civil_from_days`).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The line for a message at `now` in `format`, newline included.
pub fn render(
    format: Format,
    now: SystemTime,
    level: Level,
    message: fmt::Arguments<'_>,
) -> String {
    let mut text = match format {
        Format::Text => format!("{} xlb: {level}: {message}", rfc3339(now)),
        Format::Journal => format!("<{}>{level}: {message}", level.priority()),
        // In this key order (serde_json's maps sort keys); the string escaping keeps the
        // message on one line.
        Format::Json => format!(
            "{{\"ts\":\"{}\",\"level\":\"{}\",\"msg\":{}}}",
            rfc3339(now),
            level.name(),
            serde_json::Value::String(message.to_string())
        ),
    };
    if text.contains('\n') {
        text = text.replace('\n', "\\n");
    }
    text.push('\n');
    text
}

/// The line for a message now, in the process-wide format, newline included.
pub fn line(level: Level, message: fmt::Arguments<'_>) -> String {
    render(format(), SystemTime::now(), level, message)
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

/// An error and its causes on one line, `outer: cause: cause`, as `{:#}` prints an
/// `anyhow::Error`, except that a cause is left out when the text so far already ends with
/// it: many of xlb's error types name their `source` in their own message (so that `{}`
/// alone says everything), and `{:#}` then printed it twice.
#[derive(Debug)]
pub struct Causes<'a>(pub &'a anyhow::Error);

impl fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        for cause in self.0.chain().skip(1) {
            let cause = cause.to_string();
            if !text.ends_with(&cause) {
                text.push_str(": ");
                text.push_str(&cause);
            }
        }
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {

    #[derive(Debug, thiserror::Error)]
    #[error("lock file {path}: {source}")]
    struct NamesItsSource {
        path: &'static str,
        source: std::io::Error,
    }

    #[test]
    fn causes_print_a_source_once_when_the_message_already_names_it() {
        let io = std::io::Error::from_raw_os_error(30);
        let error =
            anyhow::Error::new(NamesItsSource { path: "/run/xlb/xlb.sock.lock", source: io })
                .context("control socket /run/xlb/xlb.sock");
        let text = Causes(&error).to_string();
        assert_eq!(
            text,
            "control socket /run/xlb/xlb.sock: lock file /run/xlb/xlb.sock.lock: \
             Read-only file system (os error 30)"
        );
        assert_ne!(text, format!("{error:#}"), "`{{:#}}` repeats the source");
    }

    #[test]
    fn causes_keep_every_cause_that_adds_something() {
        let error = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(Causes(&error).to_string(), "outer: middle: inner");
    }
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

    fn at(secs: u64, millis: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(secs * 1000 + millis)
    }

    #[test]
    fn timestamps_are_rfc3339_utc_to_the_millisecond() {
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(951_782_400, 7)), "2000-02-29T00:00:00.007Z");
        assert_eq!(rfc3339(at(1_700_000_000, 999)), "2023-11-14T22:13:20.999Z");
        assert_eq!(rfc3339(at(1_798_761_599, 0)), "2026-12-31T23:59:59.000Z");
        assert_eq!(rfc3339(at(4_107_542_400, 0)), "2100-03-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(5)),
            rfc3339(at(0, 0))
        );
    }

    #[test]
    fn a_text_line_is_the_old_line_after_a_timestamp() {
        let ip = "10.1.1.11";
        let now = at(1_700_000_000, 42);
        assert_eq!(
            render(Format::Text, now, Level::Info, format_args!("backend {ip} up")),
            "2023-11-14T22:13:20.042Z xlb: info: backend 10.1.1.11 up\n"
        );
        assert_eq!(
            render(Format::Text, now, Level::Error, format_args!("a\nb")),
            "2023-11-14T22:13:20.042Z xlb: error: a\\nb\n"
        );
    }

    #[test]
    fn a_journal_line_has_the_priority_and_no_timestamp() {
        let now = at(1_700_000_000, 0);
        let lines: Vec<String> = Level::ALL
            .into_iter()
            .map(|level| render(Format::Journal, now, level, format_args!("x\ny")))
            .collect();
        assert_eq!(
            lines,
            ["<3>error: x\\ny\n", "<4>warn: x\\ny\n", "<6>info: x\\ny\n", "<7>debug: x\\ny\n"]
        );
    }

    #[test]
    fn a_json_line_is_one_object_with_ts_level_and_msg() {
        let now = at(1_700_000_000, 5);
        let line =
            render(Format::Json, now, Level::Warn, format_args!("say \"hi\"\n\tto {}", "b\\c"));
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'), "{line:?}");
        assert!(
            line.starts_with("{\"ts\":\"2023-11-14T22:13:20.005Z\",\"level\":\"warn\",\"msg\":"),
            "{line}"
        );
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["ts"], "2023-11-14T22:13:20.005Z");
        assert_eq!(value["level"], "warn");
        assert_eq!(value["msg"], "say \"hi\"\n\tto b\\c");
        assert_eq!(value.as_object().unwrap().len(), 3);
    }

    #[test]
    fn the_journal_format_only_where_stderr_is_the_journal_stream() {
        assert!(is_journal_stream(Some("8:12345"), Some((8, 12345))));
        assert!(!is_journal_stream(Some("8:12345"), Some((8, 12346))), "inherited, not ours");
        assert!(!is_journal_stream(Some("8:12345"), None));
        assert!(!is_journal_stream(None, Some((8, 12345))));
        assert!(!is_journal_stream(Some("garbage"), Some((8, 12345))));
        assert_eq!(resolve(FormatChoice::Text, true), Format::Journal);
        assert_eq!(resolve(FormatChoice::Text, false), Format::Text);
        assert_eq!(resolve(FormatChoice::Json, true), Format::Json);
        assert_eq!("JSON".parse::<FormatChoice>(), Ok(FormatChoice::Json));
        assert_eq!("text".parse::<FormatChoice>(), Ok(FormatChoice::Text));
        assert!("yaml".parse::<FormatChoice>().unwrap_err().to_string().contains("\"yaml\""));
    }

    #[test]
    fn this_process_stderr_is_not_the_journal_unless_named() {
        // Whatever stderr is here, a JOURNAL_STREAM naming its own device and inode is
        // recognised, and one naming another inode is not.
        let (dev, ino) = stderr_id().expect("stderr is open in tests");
        assert!(is_journal_stream(Some(&format!("{dev}:{ino}")), Some((dev, ino))));
        assert!(!is_journal_stream(Some(&format!("{dev}:{}", ino + 1)), stderr_id()));
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
        let written = String::from_utf8(out).unwrap();
        let levels: Vec<&str> =
            written.lines().map(|l| l.split(" xlb: ").nth(1).unwrap_or(l)).collect();
        assert_eq!(levels, ["error: error line", "warn: warn line"], "{written}");
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
