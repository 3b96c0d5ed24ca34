//! Process-level tuning, applied before anything large is allocated.
//!
//! The connection table (tens of MiB per core) is read at random, one cache line per packet;
//! with 4 KiB pages nearly every lookup also misses the TLB. Machines commonly run
//! transparent huge pages in `madvise` mode, where only memory marked `MADV_HUGEPAGE` gets
//! them. glibc (2.35+) marks its large allocations so when the `glibc.malloc.hugetlb=1`
//! tunable is set, which must happen before the process starts: so `xlb run` and the
//! benchmark re-execute themselves once with it. Measured on the pipeline benchmark: DR hit
//! 50 → 45 ns/packet, NAT 107 → 78 ns (see the README).
//!
//! Set `XLB_NO_HUGEPAGES=1` to opt out. No `unsafe`: the re-execution is `exec(2)` through
//! the standard library.
//!
//! Also here: [`BusyPollMode`], the busy-polling choice the config and the command line
//! name and the AF_XDP set-up applies
//! ([`busypoll`](crate::dataplane::io::afxdp::busypoll)), in a module of its own so that
//! control reads it without importing the dataplane.

use std::fmt;
use std::os::unix::process::CommandExt;
use std::str::FromStr;

const TUNABLE: &str = "glibc.malloc.hugetlb=1";

/// True when this process runs with huge pages asked of glibc.
pub fn huge_pages_enabled() -> bool {
    std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.split(':').any(|kv| kv == TUNABLE))
}

/// Re-executes the current program with [`TUNABLE`] added to `GLIBC_TUNABLES`, unless it is
/// already there, the kernel has transparent huge pages off, or `XLB_NO_HUGEPAGES=1`.
/// Returns only when it did not re-execute (including when the exec failed: xlb then runs
/// on small pages, which is correct, only slower).
pub fn reexec_with_huge_pages() {
    if huge_pages_enabled() || std::env::var("XLB_NO_HUGEPAGES").as_deref() == Ok("1") {
        return;
    }
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
    if !thp.is_ok_and(|mode| !mode.contains("[never]")) {
        return;
    }
    let Ok(program) = std::env::current_exe() else { return };
    let tunables = match std::env::var("GLIBC_TUNABLES") {
        Ok(existing) if !existing.is_empty() => format!("{existing}:{TUNABLE}"),
        _ => TUNABLE.to_string(),
    };
    let error = std::process::Command::new(program)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", tunables)
        .exec();
    crate::log::warn!("could not re-execute with huge pages ({error}); running without");
}

/// The machine's memory in bytes (`MemTotal` of `/proc/meminfo`), if it can be read.
pub fn memory_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Whether `xlb run` (and `xlb bench null`) use preferred busy polling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BusyPollMode {
    /// Where it engages (every socket has a NAPI id); otherwise interrupt mode, with a
    /// warning.
    #[default]
    Auto,
    /// Always, even where no NAPI id is linked yet (warned about, not refused).
    On,
    /// Never: interrupt mode, the device's settings untouched.
    Off,
}

impl FromStr for BusyPollMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(BusyPollMode::Auto),
            "on" => Ok(BusyPollMode::On),
            "off" => Ok(BusyPollMode::Off),
            other => Err(format!("busy_poll {other:?}: expected auto, on or off")),
        }
    }
}

impl fmt::Display for BusyPollMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BusyPollMode::Auto => "auto",
            BusyPollMode::On => "on",
            BusyPollMode::Off => "off",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for mode in [BusyPollMode::Auto, BusyPollMode::On, BusyPollMode::Off] {
            assert_eq!(mode.to_string().parse::<BusyPollMode>(), Ok(mode));
        }
        assert!("yes".parse::<BusyPollMode>().unwrap_err().contains("auto, on or off"));
    }
}
