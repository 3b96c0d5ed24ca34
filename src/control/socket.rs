//! The control socket: `xlb ctl` sends one request to a running `xlb run` and reads one
//! response, over a unix stream socket only root may open.
//!
//! # Protocol
//!
//! One connection per command: the client writes one line of JSON, a [`Request`] (the
//! ipvsadm arguments, and for `-R` the text it read on stdin); the server writes one line of
//! JSON, a [`Response`] (stdout, stderr and exit status for the client to reproduce), and
//! closes the connection.
//!
//! # Invariants
//!
//! - [`CtlServer::poll`] never blocks on a client: connections are accepted, read and
//!   written without blocking. A partial request waits for the next poll, and a connection
//!   that has not sent its request within [`REQUEST_DEADLINE`] is dropped. A response is
//!   written as far as the socket takes it and the rest on later polls; a client that reads
//!   none of it for [`WRITE_TIMEOUT`], or has not read all of it within
//!   [`RESPONSE_DEADLINE`], is dropped. At most [`MAX_PENDING`] connections wait at once
//!   (the oldest goes first). Every dropped client is counted ([`CtlStats`]) and logged, so
//!   a slow or hostile `xlb ctl` reader costs the control loop (and SIGTERM) nothing.
//! - A request is at most [`MAX_REQUEST`] bytes; a larger one, or one that is not valid JSON,
//!   is answered with an error response (status 2), never a panic.
//! - Access: the socket file is mode 0600 and its directory, when xlb creates it, 0700, so
//!   only root (the owner) may connect. The peer's credentials are not checked: std offers
//!   `SO_PEERCRED` (`UnixStream::peer_cred`) on nightly only, and this module uses no
//!   `unsafe`. Between `bind` and `chmod` the file briefly has the umask's mode; connecting
//!   needs write permission, which a 022 umask gives the owner only.
//! - A stale socket file (nothing listening) is replaced; a live one is left alone and
//!   binding fails with `AddrInUse`; a path that is not a socket is never removed. Dropping
//!   the server removes the socket file if it is still the one it bound.

use std::cell::RefCell;
use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::log::warn;

/// Where `xlb run` listens and `xlb ctl` connects unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/xlb/xlb.sock";

/// The largest request accepted, in bytes (a `-R` of tens of thousands of lines fits).
pub const MAX_REQUEST: usize = 1 << 20;

/// How long a client may take to send its whole request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// How long a client may leave its response unread (no byte taken) before it is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a client may take to read its whole response.
pub const RESPONSE_DEADLINE: Duration = Duration::from_secs(10);

/// The send buffer asked for each connection, so that most responses (a `-L -n -c` of
/// 100,000 connections is about 10 MB) leave in a few polls.
const SEND_BUFFER: usize = 4 << 20;

/// How many connections may wait for their request at once.
pub const MAX_PENDING: usize = 16;

/// How long the client waits for the response.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A command for the daemon: ipvsadm's arguments, and the text `-R` reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The arguments after `xlb ctl`, e.g. `["-L", "-n"]`.
    pub args: Vec<String>,
    /// What the client read on stdin (for `-R`), if anything.
    pub stdin: Option<String>,
}

/// The daemon's answer, for the client to print and exit with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// What to print on stdout.
    pub stdout: String,
    /// What to print on stderr.
    pub stderr: String,
    /// The exit status: 0 success, 1 refused, 2 bad command line.
    pub status: i32,
}

impl Response {
    /// Success, printing `stdout`.
    pub fn success(stdout: String) -> Response {
        Response { stdout, stderr: String::new(), status: 0 }
    }

    /// Failure with `status`, printing `message` (a newline is added) on stderr.
    pub fn failure(status: i32, message: &str) -> Response {
        Response { stdout: String::new(), stderr: format!("{message}\n"), status }
    }
}

/// A connection being served: its request arriving, then its response leaving.
struct Pending {
    stream: UnixStream,
    received: Vec<u8>,
    since: Instant,
    /// The response line and how much of it the socket took, once the request is handled.
    sending: Option<Sending>,
}

struct Sending {
    line: Vec<u8>,
    written: usize,
    /// When the client last took some of it.
    progress: Instant,
}

/// What the server did with its clients, since it was bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtlStats {
    /// Requests answered in full.
    pub served: u64,
    /// Clients dropped for not sending a whole request within [`REQUEST_DEADLINE`].
    pub slow_requests: u64,
    /// Clients dropped for not reading their response (see [`WRITE_TIMEOUT`] and
    /// [`RESPONSE_DEADLINE`]).
    pub slow_readers: u64,
    /// Connections dropped because [`MAX_PENDING`] others were waiting.
    pub overflow: u64,
}

/// The listening control socket.
#[derive(Debug)]
pub struct CtlServer {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file's (device, inode), to remove only our own file on drop.
    identity: (u64, u64),
    pending: RefCell<Vec<Pending>>,
    stats: std::cell::Cell<CtlStats>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("received", &self.received.len()).finish()
    }
}

impl CtlServer {
    /// Creates the directory if needed (mode 0700), replaces a stale socket file, binds,
    /// makes the socket 0600 and non-blocking.
    pub fn bind(path: &Path) -> io::Result<CtlServer> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        ErrorKind::AddrInUse,
                        format!("{}: another process is listening on it", path.display()),
                    ));
                }
                Err(_) => fs::remove_file(path)?,
            },
            Ok(_) => {
                return Err(io::Error::new(
                    ErrorKind::AlreadyExists,
                    format!("{}: exists and is not a socket; not replacing it", path.display()),
                ));
            }
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let listener = UnixListener::bind(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let meta = fs::symlink_metadata(path)?;
        Ok(CtlServer {
            listener,
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
            pending: RefCell::new(Vec::new()),
            stats: std::cell::Cell::new(CtlStats::default()),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the server did with its clients so far.
    pub fn stats(&self) -> CtlStats {
        self.stats.get()
    }

    /// Accepts and serves whatever is ready, without waiting for anything: each complete
    /// request is answered with `handle`'s response (or an error response if it is
    /// malformed or too large), written as far as the client takes it.
    pub fn poll(&self, mut handle: impl FnMut(Request) -> Response) {
        let mut pending = self.pending.borrow_mut();
        let mut stats = self.stats.get();
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    // A hint: the kernel may give less, and a smaller buffer only costs polls.
                    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
                    if pending.len() >= MAX_PENDING {
                        pending.remove(0);
                        stats.overflow += 1;
                        warn!("control socket: {MAX_PENDING} clients waiting, the oldest dropped");
                    }
                    pending.push(Pending {
                        stream,
                        received: Vec::new(),
                        since: Instant::now(),
                        sending: None,
                    });
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock, or a transient accept error: try next poll.
            }
        }
        let now = Instant::now();
        pending.retain_mut(|connection| {
            if connection.sending.is_none() {
                match read_request(connection) {
                    Progress::Waiting => {
                        let waiting = now.duration_since(connection.since) < REQUEST_DEADLINE;
                        if !waiting {
                            stats.slow_requests += 1;
                        }
                        return waiting;
                    }
                    Progress::Gone => return false,
                    Progress::Complete(request) => {
                        let response = match request {
                            Ok(request) => handle(request),
                            Err(why) => {
                                Response::failure(2, &format!("xlb: bad control request: {why}"))
                            }
                        };
                        let Ok(mut line) = serde_json::to_vec(&response) else { return false };
                        line.push(b'\n');
                        connection.sending = Some(Sending { line, written: 0, progress: now });
                    }
                }
            }
            let Some(sending) = connection.sending.as_mut() else { return false };
            match send(&mut connection.stream, sending, Instant::now()) {
                Sent::Done => {
                    stats.served += 1;
                    false
                }
                Sent::Gone => false,
                Sent::Waiting => {
                    let stalled = sending.progress.elapsed() >= WRITE_TIMEOUT;
                    let late = connection.since.elapsed() >= RESPONSE_DEADLINE;
                    if stalled || late {
                        stats.slow_readers += 1;
                        warn!(
                            "control socket: a client read {} of its {} bytes {}; dropped ({} so far)",
                            sending.written,
                            sending.line.len(),
                            if stalled {
                                format!("and then nothing for {WRITE_TIMEOUT:?}")
                            } else {
                                format!("in {RESPONSE_DEADLINE:?}")
                            },
                            stats.slow_readers
                        );
                    }
                    !(stalled || late)
                }
            }
        });
        self.stats.set(stats);
    }
}

impl Drop for CtlServer {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.identity);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

enum Progress {
    Waiting,
    Gone,
    Complete(Result<Request, String>),
}

/// Reads what has arrived; a request is complete at its newline (or at end of stream).
fn read_request(connection: &mut Pending) -> Progress {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match connection.stream.read(&mut chunk) {
            Ok(0) if connection.received.is_empty() => return Progress::Gone,
            Ok(0) => return Progress::Complete(decode(&connection.received)),
            Ok(n) => {
                let start = connection.received.len();
                connection.received.extend_from_slice(&chunk[..n]);
                if let Some(end) = connection.received[start..].iter().position(|&b| b == b'\n') {
                    return Progress::Complete(decode(&connection.received[..start + end]));
                }
                if connection.received.len() > MAX_REQUEST {
                    return Progress::Complete(Err(format!(
                        "request larger than {MAX_REQUEST} bytes"
                    )));
                }
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => return Progress::Waiting,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Progress::Gone,
        }
    }
}

fn decode(line: &[u8]) -> Result<Request, String> {
    if line.len() > MAX_REQUEST {
        return Err(format!("request larger than {MAX_REQUEST} bytes"));
    }
    serde_json::from_slice(line).map_err(|error| error.to_string())
}

enum Sent {
    Done,
    Waiting,
    Gone,
}

/// Writes what the socket takes of the response, without blocking.
fn send(stream: &mut UnixStream, sending: &mut Sending, now: Instant) -> Sent {
    while sending.written < sending.line.len() {
        match stream.write(&sending.line[sending.written..]) {
            Ok(0) => return Sent::Gone,
            Ok(n) => {
                sending.written += n;
                sending.progress = now;
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => return Sent::Waiting,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            // The client went away: no error of ours.
            Err(_) => return Sent::Gone,
        }
    }
    Sent::Done
}

/// Sends `request` to the daemon listening at `path` and returns its response.
pub fn call(path: &Path, request: &Request) -> io::Result<Response> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = serde_json::to_vec(request).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut text = Vec::new();
    stream.read_to_end(&mut text)?;
    serde_json::from_slice(text.trim_ascii_end())
        .map_err(|error| io::Error::new(ErrorKind::InvalidData, format!("bad response: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory removed when the test ends.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("xlb-socket-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn echo(request: Request) -> Response {
        Response::success(format!(
            "{}|{}",
            request.args.join(" "),
            request.stdin.unwrap_or_default()
        ))
    }

    /// Polls until `done` says so (at most two seconds).
    fn serve_until(server: &CtlServer, done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() && start.elapsed() < Duration::from_secs(2) {
            server.poll(echo);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn raw_exchange(path: &Path, bytes: Vec<u8>) -> std::thread::JoinHandle<String> {
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            let mut stream = UnixStream::connect(&path).unwrap();
            let _ = stream.write_all(&bytes);
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text);
            text
        })
    }

    #[test]
    fn serves_a_request_and_cleans_up() {
        let scratch = Scratch::new("serve");
        let path = scratch.0.join("run").join("xlb.sock");
        let server = CtlServer::bind(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let request = Request { args: vec!["-L".into(), "-n".into()], stdin: Some("x\ny".into()) };
        let client = {
            let path = path.clone();
            let request = request.clone();
            std::thread::spawn(move || call(&path, &request))
        };
        serve_until(&server, || client.is_finished());
        let response = client.join().unwrap().unwrap();
        assert_eq!(response, Response::success("-L -n|x\ny".into()));
        drop(server);
        assert!(!path.exists(), "the socket file goes with the server");
    }

    #[test]
    fn malformed_and_oversized_requests_get_error_responses() {
        let scratch = Scratch::new("bad");
        let path = scratch.0.join("xlb.sock");
        let server = CtlServer::bind(&path).unwrap();
        let garbage = raw_exchange(&path, b"{not json\n".to_vec());
        let huge = raw_exchange(&path, vec![b'x'; MAX_REQUEST + 10]);
        serve_until(&server, || garbage.is_finished() && huge.is_finished());
        for (client, expected) in [(garbage, "bad control request"), (huge, "larger than")] {
            let text = client.join().unwrap();
            let response: Response = serde_json::from_str(text.trim_end()).unwrap();
            assert_eq!(response.status, 2);
            assert!(response.stderr.contains(expected), "{}", response.stderr);
        }
    }

    #[test]
    fn a_silent_client_does_not_stall_the_poll() {
        let scratch = Scratch::new("silent");
        let path = scratch.0.join("xlb.sock");
        let server = CtlServer::bind(&path).unwrap();
        let _silent = UnixStream::connect(&path).unwrap();
        let started = Instant::now();
        for _ in 0..10 {
            server.poll(echo);
        }
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(server.pending.borrow().len(), 1, "the silent client waits, unserved");
        // A second client is served while the first stays silent.
        let client = {
            let path = path.clone();
            std::thread::spawn(move || {
                call(&path, &Request { args: vec!["-S".into()], stdin: None })
            })
        };
        serve_until(&server, || client.is_finished());
        assert_eq!(client.join().unwrap().unwrap().stdout, "-S|");
    }

    /// Issue 10 (minor a): a client that sends a request and never reads its answer costs
    /// no poll more than a moment, is dropped after [`WRITE_TIMEOUT`] and counted; others
    /// are served meanwhile, a big answer in full.
    #[test]
    fn a_client_that_never_reads_does_not_stall_the_poll() {
        let scratch = Scratch::new("noread");
        let path = scratch.0.join("xlb.sock");
        let server = CtlServer::bind(&path).unwrap();
        let big = |request: Request| {
            Response::success("x".repeat(if request.args.is_empty() { 16 << 20 } else { 1 << 20 }))
        };
        let mut deaf = UnixStream::connect(&path).unwrap();
        deaf.write_all(b"{\"args\":[],\"stdin\":null}\n").unwrap();
        let reader = {
            let path = path.clone();
            std::thread::spawn(move || {
                call(&path, &Request { args: vec!["-L".into()], stdin: None })
            })
        };
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        while started.elapsed() < WRITE_TIMEOUT + Duration::from_millis(500) {
            let poll = Instant::now();
            server.poll(big);
            slowest = slowest.max(poll.elapsed());
            std::thread::sleep(Duration::from_millis(5));
        }
        // A poll that waited on the deaf client would stall for WRITE_TIMEOUT (1 s) at
        // least; half of it tells the two apart without timing the machine (under load a
        // non-blocking poll of 16 MiB took 210 ms here).
        assert!(
            slowest < WRITE_TIMEOUT / 2,
            "a poll took {slowest:?}: it waited on the deaf client"
        );
        eprintln!("slowest poll with a client that never reads: {slowest:?}");
        let response = reader.join().unwrap().expect("the reading client is served");
        assert_eq!(response.stdout.len(), 1 << 20);
        let stats = server.stats();
        assert_eq!(stats.slow_readers, 1, "{stats:?}");
        assert_eq!(stats.served, 1, "{stats:?}");
        assert!(server.pending.borrow().is_empty());
        drop(deaf);
    }

    #[test]
    fn replaces_a_stale_socket_but_not_a_live_one_or_a_file() {
        let scratch = Scratch::new("stale");
        let path = scratch.0.join("xlb.sock");
        let first = CtlServer::bind(&path).unwrap();
        let error = CtlServer::bind(&path).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::AddrInUse);
        drop(first);
        // A stale socket: its listener is gone but the file stays (as after a kill -9).
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let second = CtlServer::bind(&path).unwrap();
        drop(second);
        fs::write(&path, "not a socket").unwrap();
        assert_eq!(CtlServer::bind(&path).unwrap_err().kind(), ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&path).unwrap(), "not a socket");
    }
}
