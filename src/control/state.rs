//! What `xlb run` keeps across a restart: each backend's last health verdict and the weight
//! `xlb ctl` gave it, keyed by the backend's identity.
//!
//! Why: in DR a restarted xlb has an empty connection table and forwards a packet of an
//! established connection by the service's Maglev table alone (see the pipeline's stateless
//! fallback). That is only right if the new process builds the *same* table as the old one
//! ran: a backend that was down by health check, or drained with `xlb ctl -e ... -w 0`, must
//! not count as up again for the first probes, or Maglev moves some of the other backends'
//! connections onto it (issue 10: 10–12 of 20 broke). So the daemon writes this file whenever
//! a verdict or a runtime weight changes, and reads it at start:
//!
//! - a backend whose identity is in the file starts in the kept health state;
//! - its runtime weight is restored when the config file still gives it the weight it gave
//!   when the file was written (an operator who edited the weight in the config meanwhile
//!   wins);
//! - a backend the file does not know starts *unknown* where its service has a check: not
//!   schedulable (weight 0 in the data plane, outside the Maglev table) until its first probe
//!   passes. See [`crate::control::health`].
//!
//! The format is plain text, one backend a line, so an operator can read it or delete it
//! (deleting it only loses what it kept):
//!
//! ```text
//! # xlb state (health verdicts, runtime weights); written by xlb run
//! backend 10.1.1.10:80/tcp 10.1.1.12:80 down weight 1 0
//! backend [2001:db8::10]:80/tcp [2001:db8::12]:80 up weight 1 1
//! ```
//!
//! (`up`/`down`, then the config file's weight and the running weight.) The file is written
//! to a temporary name in the same directory and renamed over the old one, so a reader (or
//! a crash) never sees half a file. Lines that do not parse are skipped and reported to the
//! caller, never fatal: a damaged state file must not keep xlb from starting.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::flow::Proto;
use crate::snapshot::BackendId;

/// The file name used next to the control socket when no path is given.
pub const DEFAULT_FILE_NAME: &str = "xlb.state";

/// The state file's path for a control socket at `socket`: the same directory.
pub fn default_path(socket: &Path) -> PathBuf {
    socket.parent().unwrap_or_else(|| Path::new(".")).join(DEFAULT_FILE_NAME)
}

/// What is kept of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    /// The last health verdict: may it take new flows?
    pub up: bool,
    /// The weight the config file gave it when this was written.
    pub config_weight: u32,
    /// The weight it ran with (`xlb ctl -e ... -w N` changes it).
    pub weight: u32,
}

/// Every backend's kept state, by identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub backends: HashMap<BackendId, Kept>,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl State {
    /// The text of the file, backends sorted by identity (so equal states give equal text).
    pub fn render(&self) -> String {
        let mut ids: Vec<&BackendId> = self.backends.keys().collect();
        ids.sort();
        let mut text =
            String::from("# xlb state (health verdicts, runtime weights); written by xlb run\n");
        for id in ids {
            let kept = &self.backends[id];
            text += &format!(
                "backend {}/{} {} {} weight {} {}\n",
                SocketAddr::new(id.vip, id.vport),
                id.proto,
                SocketAddr::new(id.addr, id.port),
                if kept.up { "up" } else { "down" },
                kept.config_weight,
                kept.weight
            );
        }
        text
    }

    /// Parses the file's text; returns the state and a message per line it skipped.
    pub fn parse(text: &str) -> (State, Vec<String>) {
        let mut state = State::default();
        let mut skipped = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Some((id, kept)) => {
                    state.backends.insert(id, kept);
                }
                None => skipped.push(format!("line {}: not understood: {line:?}", number + 1)),
            }
        }
        (state, skipped)
    }

    /// Reads the file at `path`; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<(State, Vec<String>), StateError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(State::parse(&text)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Ok((State::default(), Vec::new()))
            }
            Err(source) => Err(StateError::Io { path: path.to_path_buf(), source }),
        }
    }

    /// Writes the file at `path` atomically (a temporary file in the same directory, synced,
    /// then renamed over it).
    pub fn store(&self, path: &Path) -> Result<(), StateError> {
        let error = |source| StateError::Io { path: path.to_path_buf(), source };
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let mut file = std::fs::File::create(&temporary).map_err(error)?;
        file.write_all(self.render().as_bytes()).map_err(error)?;
        file.sync_all().map_err(error)?;
        std::fs::rename(&temporary, path).map_err(error)
    }
}

/// `backend VIP:PORT/PROTO ADDR:PORT up|down weight CONFIG RUNNING`
fn parse_line(line: &str) -> Option<(BackendId, Kept)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let ["backend", service, backend, verdict, "weight", config_weight, weight] = words[..] else {
        return None;
    };
    let (service, proto) = service.split_once('/')?;
    let service = service.parse::<SocketAddr>().ok()?;
    let backend = backend.parse::<SocketAddr>().ok()?;
    let id = BackendId {
        vip: service.ip(),
        vport: service.port(),
        proto: match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return None,
        },
        addr: backend.ip(),
        port: backend.port(),
    };
    let up = match verdict {
        "up" => true,
        "down" => false,
        _ => return None,
    };
    Some((
        id,
        Kept { up, config_weight: config_weight.parse().ok()?, weight: weight.parse().ok()? },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::Ipv4Addr;

    fn id(last: u8) -> BackendId {
        BackendId {
            vip: Ipv4Addr::new(10, 1, 1, 10).into(),
            vport: 80,
            proto: Proto::Tcp,
            addr: Ipv4Addr::new(10, 1, 1, last).into(),
            port: 80,
        }
    }

    #[test]
    fn ipv6_backends_are_kept_in_brackets() {
        let six = BackendId {
            vip: "2001:db8::10".parse().unwrap(),
            vport: 80,
            proto: Proto::Udp,
            addr: "2001:db8::12".parse().unwrap(),
            port: 8053,
        };
        let mut state = State::default();
        state.backends.insert(six, Kept { up: false, config_weight: 2, weight: 0 });
        state.backends.insert(id(11), Kept { up: true, config_weight: 1, weight: 1 });
        let text = state.render();
        assert_eq!(
            text.lines().skip(1).collect::<Vec<_>>(),
            [
                "backend 10.1.1.10:80/tcp 10.1.1.11:80 up weight 1 1",
                "backend [2001:db8::10]:80/udp [2001:db8::12]:8053 down weight 2 0"
            ]
        );
        assert_eq!(State::parse(&text), (state, Vec::new()));
        // Without brackets the port cannot be told from the address: skipped, named.
        let (state, skipped) =
            State::parse("backend 2001:db8::10:80/tcp 2001:db8::12:80 up weight 1 1\n");
        assert!(state.backends.is_empty());
        assert_eq!(skipped.len(), 1);
    }

    #[test]
    fn round_trips_through_text_and_a_file() {
        let mut state = State::default();
        state.backends.insert(id(12), Kept { up: false, config_weight: 1, weight: 1 });
        state.backends.insert(id(11), Kept { up: true, config_weight: 3, weight: 0 });
        let text = state.render();
        assert_eq!(
            text.lines().skip(1).collect::<Vec<_>>(),
            [
                "backend 10.1.1.10:80/tcp 10.1.1.11:80 up weight 3 0",
                "backend 10.1.1.10:80/tcp 10.1.1.12:80 down weight 1 1"
            ]
        );
        assert_eq!(State::parse(&text), (state.clone(), Vec::new()));

        let dir = std::env::temp_dir().join(format!("xlb-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(DEFAULT_FILE_NAME);
        assert_eq!(State::load(&path).unwrap().0, State::default(), "missing: empty");
        state.store(&path).unwrap();
        assert_eq!(State::load(&path).unwrap().0, state);
        assert!(!dir.join("xlb.state.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_lines_are_skipped_and_named() {
        let text = "# header\nbackend 10.1.1.10:80/tcp 10.1.1.11:80 up weight 1 1\n\
                    backend 10.1.1.10:80/sctp 10.1.1.12:80 up weight 1 1\n\
                    backend 10.1.1.10:80/tcp 10.1.1.13:80 maybe weight 1 1\ngarbage\n";
        let (state, skipped) = State::parse(text);
        assert_eq!(state.backends.len(), 1);
        assert_eq!(skipped.len(), 3);
        assert!(skipped[0].starts_with("line 3:"), "{skipped:?}");
    }

    #[test]
    fn lives_next_to_the_control_socket() {
        assert_eq!(default_path(Path::new("/run/xlb/xlb.sock")), Path::new("/run/xlb/xlb.state"));
    }
}
