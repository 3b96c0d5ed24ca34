//! Backend selection.

use std::fmt;
use std::str::FromStr;

/// The scheduling algorithms, named as ipvsadm names them where it has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// Weighted Maglev consistent hashing over the 5-tuple.
    Maglev,
    /// Smooth weighted round-robin.
    Wrr,
    /// Round-robin.
    Rr,
    /// Source-IP hash.
    Sh,
    /// Uniform random.
    Random,
    /// Weighted random.
    WRandom,
    /// Least connections.
    Lc,
    /// Weighted least connections.
    Wlc,
    /// Least time: lowest measured response time, weighted by active connections.
    Lt,
}

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 9] = [
        SchedulerKind::Maglev,
        SchedulerKind::Wrr,
        SchedulerKind::Rr,
        SchedulerKind::Sh,
        SchedulerKind::Random,
        SchedulerKind::WRandom,
        SchedulerKind::Lc,
        SchedulerKind::Wlc,
        SchedulerKind::Lt,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            SchedulerKind::Maglev => "maglev",
            SchedulerKind::Wrr => "wrr",
            SchedulerKind::Rr => "rr",
            SchedulerKind::Sh => "sh",
            SchedulerKind::Random => "random",
            SchedulerKind::WRandom => "wrandom",
            SchedulerKind::Lc => "lc",
            SchedulerKind::Wlc => "wlc",
            SchedulerKind::Lt => "lt",
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SchedulerKind::ALL
            .into_iter()
            .find(|kind| kind.name() == s || (s == "mh" && *kind == SchedulerKind::Maglev))
            .ok_or_else(|| {
                let names: Vec<_> = SchedulerKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown scheduler {s:?}: expected one of {}", names.join(", "))
            })
    }
}
