//! Statistics as operators read them: `ipvsadm -L -n --stats` tables.
//!
//! Pure formatting over a snapshot and per-backend counters summed over cores, so `xlb run`
//! (at exit), `xlb replay` and `xlb ctl` print the same table. Columns and alignment follow
//! ipvsadm's, with exact numbers (ipvsadm's `--exact`), so an operator's eye and scripts that
//! split on whitespace recognise them. A service's figures are the sum of its backends'.

use std::fmt::Write;

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

/// The `ipvsadm -L -n --stats` table: one line per service, then one per real server.
pub fn ipvsadm_stats(snapshot: &Snapshot, backends: &[BackendCounters]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<ADDR_WIDTH$} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
    );
    let _ = writeln!(out, "  -> RemoteAddress:Port");
    for service in &snapshot.services {
        let mut total = BackendCounters::default();
        for counters in backends.get(service.backends.clone()).unwrap_or_default() {
            total.add(counters);
        }
        let name = format!(
            "{:<4} {}:{}",
            service.proto.to_string().to_uppercase(),
            service.vip,
            service.port
        );
        row(&mut out, &name, &total);
        for (index, backend) in snapshot.backends[service.backends.clone()].iter().enumerate() {
            let counters =
                backends.get(service.backends.start + index).copied().unwrap_or_default();
            row(&mut out, &format!("  -> {}:{}", backend.addr, backend.port), &counters);
        }
    }
    out
}

fn row(out: &mut String, name: &str, c: &BackendCounters) {
    let _ = writeln!(
        out,
        "{name:<ADDR_WIDTH$} {:>8} {:>8} {:>8} {:>8} {:>8}",
        c.connections, c.in_packets, c.out_packets, c.in_bytes, c.out_bytes
    );
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
}
