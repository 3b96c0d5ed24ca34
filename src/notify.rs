//! Readiness for systemd (sd_notify(3)), without libsystemd: a datagram of `KEY=VALUE`
//! lines to the Unix socket named by `NOTIFY_SOCKET`, which systemd sets for a
//! `Type=notify` service. A path starting with `@` names a socket in the abstract namespace
//! (the `@` stands for the leading NUL byte).
//!
//! What `xlb run` sends ([`crate::daemon`]):
//! - [`ready`] (`READY=1`, `MAINPID`, `STATUS`) once the AF_XDP sockets, the workers and
//!   the control socket are up, the moment the `--ready-file` is written;
//! - [`reloading`] (`RELOADING=1`) when a SIGHUP reload starts and [`ready`] when it is
//!   over, applied or refused (the status line says which), so `systemctl reload` shows
//!   the unit reloading meanwhile. The unit is `Type=notify` with `ExecReload=kill -HUP`
//!   rather than systemd 253's `Type=notify-reload`, so that it runs on Debian 12's systemd
//!   252; `MONOTONIC_USEC` (which only `notify-reload` requires) is not sent: reading
//!   `CLOCK_MONOTONIC` as a number needs `clock_gettime`, i.e. `unsafe` outside the AF_XDP
//!   module, for nothing `Type=notify` uses;
//! - [`stopping`] (`STOPPING=1`) when a stop was asked, before the tear-down.
//!
//! Invariants: without `NOTIFY_SOCKET` nothing is sent and nothing fails; a failure to
//! send is logged (once per message) and never stops xlb: readiness is a courtesy to the
//! supervisor, not a condition of forwarding. Each message is one datagram (systemd reads
//! one message per datagram).

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd names its notification socket in.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The address `path` names: abstract if it starts with `@`, else a filesystem path.
fn address(path: &str) -> io::Result<SocketAddr> {
    match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(path),
    }
}

/// Sends `state` (newline-separated `KEY=VALUE` lines) to the socket at `path` as one
/// datagram.
pub fn notify_to(path: &str, state: &str) -> io::Result<()> {
    if path.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty NOTIFY_SOCKET"));
    }
    let socket = UnixDatagram::unbound()?;
    let sent = socket.send_to_addr(state.as_bytes(), &address(path)?)?;
    if sent != state.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "notification cut short"));
    }
    Ok(())
}

/// Sends `state` to `NOTIFY_SOCKET` if it is set; a failure is logged, not returned.
/// Returns true if it was sent.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os(NOTIFY_SOCKET) else { return false };
    let path = path.to_string_lossy();
    match notify_to(&path, state) {
        Ok(()) => true,
        Err(error) => {
            let first = state.lines().next().unwrap_or_default();
            crate::log::warn!("sd_notify {first} to {path}: {error}");
            false
        }
    }
}

/// `READY=1` with the main PID and a status line.
pub fn ready_message(pid: u32, status: &str) -> String {
    format!("READY=1\nMAINPID={pid}\nSTATUS={}", one_line(status))
}

/// `RELOADING=1` with a status line.
pub fn reloading_message(status: &str) -> String {
    format!("RELOADING=1\nSTATUS={}", one_line(status))
}

/// `STOPPING=1` with a status line.
pub fn stopping_message(status: &str) -> String {
    format!("STOPPING=1\nSTATUS={}", one_line(status))
}

/// A status is one line: a newline would start a new `KEY=VALUE` assignment.
fn one_line(status: &str) -> String {
    status.replace('\n', " ")
}

/// Tells systemd xlb is ready (or ready again after a reload).
pub fn ready(status: &str) -> bool {
    notify(&ready_message(std::process::id(), status))
}

/// Tells systemd a reload started.
pub fn reloading(status: &str) -> bool {
    notify(&reloading_message(status))
}

/// Tells systemd xlb is stopping.
pub fn stopping(status: &str) -> bool {
    notify(&stopping_message(status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(socket: &UnixDatagram) -> String {
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn messages_are_key_value_lines_with_one_line_statuses() {
        assert_eq!(
            ready_message(42, "up\n2 services"),
            "READY=1\nMAINPID=42\nSTATUS=up 2 services"
        );
        assert_eq!(reloading_message("reloading x.toml"), "RELOADING=1\nSTATUS=reloading x.toml");
        assert_eq!(stopping_message("stopping"), "STOPPING=1\nSTATUS=stopping");
    }

    #[test]
    fn notifications_reach_a_socket_at_a_path_one_datagram_each() {
        let dir = std::env::temp_dir().join(format!("xlb-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        let path = path.to_str().unwrap();
        let sequence = [
            ready_message(7, "ready"),
            reloading_message("reloading"),
            ready_message(7, "reloaded"),
            stopping_message("stopping"),
        ];
        for message in &sequence {
            notify_to(path, message).unwrap();
        }
        for message in &sequence {
            assert_eq!(&receive(&socket), message);
        }
        drop(socket);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_at_sign_names_an_abstract_socket() {
        let name = format!("xlb-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(&format!("@{name}"), "READY=1").unwrap();
        assert_eq!(receive(&socket), "READY=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let gone =
            std::env::temp_dir().join(format!("xlb-notify-none-{}.sock", std::process::id()));
        assert!(notify_to(gone.to_str().unwrap(), "READY=1").is_err());
        assert!(notify_to("", "READY=1").is_err());
    }
}
