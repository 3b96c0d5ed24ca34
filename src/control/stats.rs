//! Statistics as operators read them: `ipvsadm -L -n --stats` tables.
//!
//! Pure formatting over a snapshot and per-backend counters summed over cores, so `xlb run`
//! (at exit), `xlb replay` and `xlb ctl` print the same table. Columns and alignment follow
//! ipvsadm's, with exact numbers (ipvsadm's `--exact`), so an operator's eye and scripts that
//! split on whitespace recognise them. A service's figures are the sum of its backends'.
//! `--rate` has the same layout with per-second figures ([`BackendRates`]), which the caller
//! derives from two samples of the counters.

use std::fmt::Write;
use std::time::Duration;

use crate::control::Snapshot;
use crate::dataplane::BackendCounters;

/// Width of the `LocalAddress:Port` column, as ipvsadm prints it.
const ADDR_WIDTH: usize = 33;

/// Sums per-backend counters of several cores; every slice is indexed like
/// `snapshot.backends` (reports of another snapshot generation must be left out).
pub fn sum_backends<'a>(
    backends: usize,
    cores: impl IntoIterator<Item = &'a [BackendCounters]>,
) -> Vec<BackendCounters> {
    let mut total = vec![BackendCounters::default(); backends];
    for core in cores {
        for (sum, counters) in total.iter_mut().zip(core) {
            sum.add(counters);
        }
    }
    total
}

/// The column titles of `ipvsadm -L -n --stats`.
pub const STATS_TITLES: [&str; 5] = ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"];

/// The column titles of `ipvsadm -L -n --rate`.
pub const RATE_TITLES: [&str; 5] = ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"];

/// One real server's rates per second, as `ipvsadm -L -n --rate` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendRates {
    /// New connections per second.
    pub cps: u64,
    /// Packets per second from clients.
    pub in_pps: u64,
    /// Packets per second from the real server (0 in DR: replies bypass xlb).
    pub out_pps: u64,
    /// Bytes per second from clients.
    pub in_bps: u64,
    /// Bytes per second from the real server.
    pub out_bps: u64,
}

impl BackendRates {
    /// The rates between two samples of one real server's counters taken `elapsed` apart.
    /// A counter that went backwards (zeroed in between) counts as no traffic; an `elapsed`
    /// of zero gives zero rates.
    pub fn between(
        before: &BackendCounters,
        after: &BackendCounters,
        elapsed: Duration,
    ) -> BackendRates {
        let nanos = elapsed.as_nanos();
        let rate = |before: u64, after: u64| -> u64 {
            let delta = u128::from(after.saturating_sub(before));
            (delta * 1_000_000_000)
                .checked_div(nanos)
                .map_or(0, |rate| u64::try_from(rate).unwrap_or(u64::MAX))
        };
        BackendRates {
            cps: rate(before.connections, after.connections),
            in_pps: rate(before.in_packets, after.in_packets),
            out_pps: rate(before.out_packets, after.out_packets),
            in_bps: rate(before.in_bytes, after.in_bytes),
            out_bps: rate(before.out_bytes, after.out_bytes),
        }
    }

    /// The five figures in `--rate` column order.
    pub fn row(&self) -> [u64; 5] {
        [self.cps, self.in_pps, self.out_pps, self.in_bps, self.out_bps]
    }
}

/// The five figures of `--stats` in column order.
pub fn stats_row(c: &BackendCounters) -> [u64; 5] {
    [c.connections, c.in_packets, c.out_packets, c.in_bytes, c.out_bytes]
}

/// The `ipvsadm -L -n --stats` table: one line per service, then one per real server.
pub fn ipvsadm_stats(snapshot: &Snapshot, backends: &[BackendCounters]) -> String {
    let rows: Vec<[u64; 5]> = backends.iter().map(stats_row).collect();
    ipvsadm_table(snapshot, STATS_TITLES, &rows, None)
}

/// The `ipvsadm -L -n --rate` table; `rates` is indexed like `snapshot.backends`.
pub fn ipvsadm_rate(snapshot: &Snapshot, rates: &[BackendRates]) -> String {
    let rows: Vec<[u64; 5]> = rates.iter().map(BackendRates::row).collect();
    ipvsadm_table(snapshot, RATE_TITLES, &rows, None)
}

/// An ipvsadm figures table (`--stats` or `--rate`, by `titles`): a service line carries
/// the sum of its real servers' rows. `rows` is indexed like `snapshot.backends` (a missing
/// row counts as zeros); `only` restricts the table to one service index, as
/// `ipvsadm -L -t VIP:port` does.
pub fn ipvsadm_table(
    snapshot: &Snapshot,
    titles: [&str; 5],
    rows: &[[u64; 5]],
    only: Option<usize>,
) -> String {
    let mut out = String::new();
    let [a, b, c, d, e] = titles;
    let _ = writeln!(
        out,
        "{:<ADDR_WIDTH$} {a:>8} {b:>8} {c:>8} {d:>8} {e:>8}",
        "Prot LocalAddress:Port"
    );
    let _ = writeln!(out, "  -> RemoteAddress:Port");
    for (index, service) in snapshot.services.iter().enumerate() {
        if only.is_some_and(|only| only != index) {
            continue;
        }
        let row_of = |backend: usize| rows.get(backend).copied().unwrap_or_default();
        let mut total = [0u64; 5];
        for backend in service.backends.clone() {
            for (sum, figure) in total.iter_mut().zip(row_of(backend)) {
                *sum = sum.saturating_add(figure);
            }
        }
        let name = format!(
            "{:<4} {}:{}",
            service.proto.to_string().to_uppercase(),
            service.vip,
            service.port
        );
        row(&mut out, &name, &total);
        for (backend, entry) in
            service.backends.clone().zip(&snapshot.backends[service.backends.clone()])
        {
            row(&mut out, &format!("  -> {}:{}", entry.addr, entry.port), &row_of(backend));
        }
    }
    out
}

fn row(out: &mut String, name: &str, figures: &[u64; 5]) {
    let [a, b, c, d, e] = figures;
    let _ = writeln!(out, "{name:<ADDR_WIDTH$} {a:>8} {b:>8} {c:>8} {d:>8} {e:>8}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Config;

    const TWO_SERVICES: &str = r#"
        [[interface]]
        name = "eth0"
        addr = "10.1.1.2/24"
        mac = "02:00:0a:01:01:02"

        [[service]]
        vip = "10.1.1.10"
        port = 80
        proto = "tcp"
        forward = "dr"
        [[service.backend]]
        addr = "10.1.1.11"
        port = 80
        [[service.backend]]
        addr = "10.1.1.12"
        port = 80

        [[service]]
        vip = "10.1.1.10"
        port = 53
        proto = "udp"
        forward = "dr"
        [[service.backend]]
        addr = "10.1.1.11"
        port = 53
    "#;

    #[test]
    fn prints_ipvsadm_columns_with_service_totals() {
        let config = Config::parse(TWO_SERVICES, "t.toml").unwrap();
        let snapshot = Snapshot::build(&config, 1).unwrap();
        let core = |conns| BackendCounters {
            connections: conns,
            in_packets: conns * 5,
            in_bytes: conns * 300,
            out_packets: 0,
            out_bytes: 0,
        };
        let a = [core(3), core(4), core(1)];
        let b = [core(2), core(0), core(0)];
        let total = sum_backends(3, [&a[..], &b[..]]);
        let table = ipvsadm_stats(&snapshot, &total);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes"
        );
        assert_eq!(lines[1], "  -> RemoteAddress:Port");
        let fields = |line: &str| line.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(fields(lines[2]), ["TCP", "10.1.1.10:80", "9", "45", "0", "2700", "0"]);
        assert_eq!(fields(lines[3]), ["->", "10.1.1.11:80", "5", "25", "0", "1500", "0"]);
        assert_eq!(fields(lines[4]), ["->", "10.1.1.12:80", "4", "20", "0", "1200", "0"]);
        assert_eq!(fields(lines[5]), ["UDP", "10.1.1.10:53", "1", "5", "0", "300", "0"]);
        assert_eq!(lines.len(), 7);
        // The numbers line up under their headers.
        assert_eq!(lines[2].len(), lines[0].len());
        assert_eq!(lines[3].len(), lines[0].len());
    }

    #[test]
    fn rates_are_per_second_and_never_negative() {
        let sample = |n: u64| BackendCounters {
            connections: n,
            in_packets: 2 * n,
            in_bytes: 100 * n,
            out_packets: n,
            out_bytes: 50 * n,
        };
        let half_second = Duration::from_millis(500);
        let rates = BackendRates::between(&sample(10), &sample(15), half_second);
        assert_eq!(rates.row(), [10, 20, 10, 1000, 500]);
        assert_eq!(
            rates,
            BackendRates { cps: 10, in_pps: 20, out_pps: 10, in_bps: 1000, out_bps: 500 }
        );
        // Zeroed in between (-Z): no negative rates; no time: no rates.
        assert_eq!(
            BackendRates::between(&sample(15), &sample(1), half_second),
            BackendRates::default()
        );
        assert_eq!(
            BackendRates::between(&sample(1), &sample(15), Duration::ZERO),
            BackendRates::default()
        );
    }
}
