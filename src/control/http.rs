//! A minimal HTTP/1.1 server for `GET /metrics`, on a std [`TcpListener`] in its own thread.
//!
//! Control renders the exposition (see [`crate::control::metrics`]) about once a second and
//! stores it in a [`Latest`]; this thread answers each scrape with a copy of it. It never
//! talks to a worker, and holds the lock only to clone the text, so a slow client never
//! delays control.
//!
//! Scope (enough for Prometheus, curl and a browser, nothing more): `GET` and `HEAD` of
//! `/metrics` (a query string is ignored) answer 200 with the text format's content type;
//! another path 404; another method on `/metrics` 405. One request per connection
//! (`Connection: close`); connections are served concurrently, each on a short-lived thread
//! of its own.
//!
//! Invariants:
//! - a request head is at most [`HttpOptions::max_request`] bytes (else 431) and must arrive
//!   within [`HttpOptions::read_timeout`] of the connection (else 408): a slow or hostile
//!   client holds its own thread for at most about twice that long (head, then answer), and
//!   memory per connection is bounded;
//! - idle or slow clients never delay another's scrape: at most
//!   [`HttpOptions::max_connections`] connections are served at once, and one beyond that is
//!   answered 503 at once (without reading, never blocking the accept loop) and counted in
//!   [`MetricsServer::refused`];
//! - dropping the [`MetricsServer`] stops the accept thread and closes the listening socket
//!   before `drop` returns (the listener is non-blocking and polled every [`ACCEPT_POLL`]);
//!   connections in progress finish within their deadlines.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::control::metrics::CONTENT_TYPE;

/// The latest rendering: control writes it, the server thread copies it per request.
pub type Latest = Arc<Mutex<String>>;

/// How often the accept loop looks at the stop flag when no client connects.
pub const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// Limits on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpOptions {
    /// Time a client has to send its request head; also the write timeout.
    pub read_timeout: Duration,
    /// Largest request head accepted, in bytes.
    pub max_request: usize,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            read_timeout: Duration::from_secs(2),
            max_request: 8 * 1024,
            max_connections: 32,
        }
    }
}

/// The stack of a connection's thread: it holds a 1 KiB buffer and the request head.
const CONNECTION_STACK: usize = 128 * 1024;

/// A running metrics server; dropping it stops it.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    /// Set by `drop` only; read by the server thread between accepts.
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Connections answered 503 because `max_connections` were being served; written by
    /// the accept thread only.
    refused: Arc<AtomicU64>,
}

impl MetricsServer {
    /// The address it listens on (the port chosen, if `serve` was given port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections answered 503 because `max_connections` others were being served.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Listens on `addr` and serves `GET /metrics` from `latest`, with the default limits.
pub fn serve(addr: SocketAddr, latest: Latest) -> io::Result<MetricsServer> {
    serve_with(addr, latest, HttpOptions::default())
}

/// [`serve`] with explicit limits.
pub fn serve_with(
    addr: SocketAddr,
    latest: Latest,
    options: HttpOptions,
) -> io::Result<MetricsServer> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let thread = {
        let (stop, refused) = (stop.clone(), refused.clone());
        std::thread::Builder::new()
            .name("xlb-metrics".into())
            .spawn(move || accept_loop(&listener, &latest, options, &stop, &refused))?
    };
    Ok(MetricsServer { addr, stop, thread: Some(thread), refused })
}

fn accept_loop(
    listener: &TcpListener,
    latest: &Latest,
    options: HttpOptions,
    stop: &AtomicBool,
    refused: &AtomicU64,
) {
    // Connections being served: incremented here, decremented by each connection's thread
    // when it ends (or here, if the thread could not start).
    let busy = Arc::new(AtomicUsize::new(0));
    // Refused connections, answered and shut down, drained a moment before they close.
    let mut closing: Vec<(TcpStream, Instant)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        closing.retain(|(stream, since)| since.elapsed() < REFUSED_LINGER && !drained(stream));
        match listener.accept() {
            Ok((stream, _)) => {
                if busy.load(Ordering::Acquire) >= options.max_connections {
                    refused.fetch_add(1, Ordering::Relaxed);
                    if refuse_busy(&stream) {
                        if closing.len() >= MAX_CLOSING {
                            closing.remove(0);
                        }
                        closing.push((stream, Instant::now()));
                    }
                    continue;
                }
                busy.fetch_add(1, Ordering::AcqRel);
                let (latest, done) = (latest.clone(), busy.clone());
                let spawned = std::thread::Builder::new()
                    .name("xlb-metrics-conn".into())
                    .stack_size(CONNECTION_STACK)
                    .spawn(move || {
                        // A client that goes away mid-answer is its own problem.
                        let _ = answer(stream, &latest, options);
                        done.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    busy.fetch_sub(1, Ordering::AcqRel);
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            // Nothing pending, or out of descriptors for a moment: wait and look again.
            Err(_) => std::thread::sleep(ACCEPT_POLL),
        }
    }
}

/// How long a refused connection is drained before it closes (so that the client's
/// unread request does not make the kernel reset the connection over the 503).
const REFUSED_LINGER: Duration = Duration::from_millis(200);

/// The most refused connections draining at once (the oldest closes first).
const MAX_CLOSING: usize = 64;

/// Whether the client has finished sending (or failed); reads without blocking.
fn drained(mut stream: &TcpStream) -> bool {
    let mut sink = [0u8; 1024];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return false,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Answers 503 without reading the request and without blocking (what the socket does not
/// take at once is not sent), then shuts the sending side; false if the stream is unusable.
fn refuse_busy(stream: &TcpStream) -> bool {
    let body = "503 Service Unavailable: too many connections\n";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut writer = stream;
    let _ = writer.write(answer.as_bytes());
    stream.shutdown(Shutdown::Write).is_ok()
}

/// A response's status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    HeaderTooLarge,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::RequestTimeout => "408 Request Timeout",
            Status::HeaderTooLarge => "431 Request Header Fields Too Large",
        }
    }
}

fn answer(mut stream: TcpStream, latest: &Latest, options: HttpOptions) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(options.read_timeout))?;
    let (status, head_only) = match read_head(&mut stream, options) {
        Ok(head) => route(&head),
        Err(status) => (status, false),
    };
    let body = match status {
        Status::Ok => latest.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone(),
        other => format!("{}\n", other.line()),
    };
    let content_type =
        if status == Status::Ok { CONTENT_TYPE } else { "text/plain; charset=utf-8" };
    let allow = if status == Status::MethodNotAllowed { "Allow: GET, HEAD\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        status.line(),
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()?;
    linger_close(stream);
    Ok(())
}

/// Reads up to the end of the request head (the blank line), within the limits.
fn read_head(stream: &mut TcpStream, options: HttpOptions) -> Result<Vec<u8>, Status> {
    let deadline = Instant::now() + options.read_timeout;
    let mut head = Vec::with_capacity(1024.min(options.max_request));
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() >= options.max_request {
            return Err(Status::HeaderTooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Status::RequestTimeout);
        }
        stream.set_read_timeout(Some(left)).map_err(|_| Status::BadRequest)?;
        let room = (options.max_request - head.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) => return Err(Status::BadRequest),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error)
                if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
            {
                return Err(Status::RequestTimeout);
            }
            Err(_) => return Err(Status::BadRequest),
        }
    }
}

/// Where the head ends (before its blank line), if it has: `\r\n\r\n`, or bare `\n\n`.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The status for a request head, and whether to leave the body out (`HEAD`).
fn route(head: &[u8]) -> (Status, bool) {
    let Ok(head) = std::str::from_utf8(head) else {
        return (Status::BadRequest, false);
    };
    let request_line = head.lines().next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return (Status::BadRequest, false);
    };
    if !version.starts_with("HTTP/1.") {
        return (Status::BadRequest, false);
    }
    let path = target.split('?').next().unwrap_or("");
    match (path, method) {
        ("/metrics", "GET") => (Status::Ok, false),
        ("/metrics", "HEAD") => (Status::Ok, true),
        ("/metrics", _) => (Status::MethodNotAllowed, false),
        _ => (Status::NotFound, method == "HEAD"),
    }
}

/// Closes after the client has read the answer: stop sending, then discard what the client
/// may still be sending (a bounded amount, for a bounded time), so the kernel does not reset
/// the connection over unread data and lose the answer.
fn linger_close(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 4096];
    let mut discarded = 0;
    while discarded < 64 * 1024 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => discarded += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(text: &str, options: HttpOptions) -> (MetricsServer, Latest) {
        let latest: Latest = Arc::new(Mutex::new(text.to_string()));
        let server =
            serve_with("127.0.0.1:0".parse().unwrap(), latest.clone(), options).expect("bind");
        (server, latest)
    }

    /// Sends `request` raw and returns the whole answer.
    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(request).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("read the answer");
        String::from_utf8(answer).unwrap()
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        exchange(addr, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
    }

    fn split(answer: &str) -> (&str, &str) {
        answer.split_once("\r\n\r\n").expect("a head and a body")
    }

    #[test]
    fn serves_the_latest_rendering() {
        let (server, latest) = start("xlb_up 1\n", HttpOptions::default());
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let answer = get(addr, "/metrics");
        let (head, body) = split(&answer);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")));
        assert!(head.contains("Content-Length: 9\r\n"));
        assert_eq!(body, "xlb_up 1\n");

        *latest.lock().unwrap() = "xlb_up 2\n".to_string();
        assert_eq!(split(&get(addr, "/metrics?name[]=x")).1, "xlb_up 2\n");

        let answer = exchange(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n");
        let (head, body) = split(&answer);
        assert!(head.contains("Content-Length: 9\r\n"), "{head}");
        assert_eq!(body, "", "HEAD: no body");
    }

    #[test]
    fn answers_errors_for_everything_else() {
        let (server, _) = start("x 1\n", HttpOptions::default());
        let addr = server.local_addr();
        assert!(get(addr, "/").starts_with("HTTP/1.1 404 "));
        assert!(get(addr, "/metricsx").starts_with("HTTP/1.1 404 "));
        let answer = exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
        assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
        assert!(answer.contains("Allow: GET, HEAD\r\n"));
        assert!(exchange(addr, b"hello\r\n\r\n").starts_with("HTTP/1.1 400 "));
        assert!(exchange(addr, b"GET /metrics SPDY/3\r\n\r\n").starts_with("HTTP/1.1 400 "));
        assert!(exchange(addr, b"\xff\xfe /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 400 "));
        // The server still works after all that.
        assert_eq!(split(&get(addr, "/metrics")).1, "x 1\n");
    }

    #[test]
    fn bounds_the_request_size() {
        let options = HttpOptions { max_request: 256, ..HttpOptions::default() };
        let (server, _) = start("x 1\n", options);
        let addr = server.local_addr();
        let mut request = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for i in 0..200 {
            request.extend_from_slice(format!("X-Filler-{i}: yes\r\n").as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        let answer = exchange(addr, &request);
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        // A request that fits is served.
        assert_eq!(split(&get(addr, "/metrics")).1, "x 1\n");
    }

    #[test]
    fn a_silent_client_is_timed_out_and_others_are_served() {
        let options =
            HttpOptions { read_timeout: Duration::from_millis(200), ..Default::default() };
        let (server, _) = start("x 1\n", options);
        let addr = server.local_addr();
        let started = Instant::now();
        let mut silent = TcpStream::connect(addr).unwrap();
        silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Sent in pieces, never finished: the deadline is per request, not per read.
        silent.write_all(b"GET /metr").unwrap();
        let answer = get(addr, "/metrics");
        assert_eq!(split(&answer).1, "x 1\n");
        let mut timed_out = String::new();
        silent.read_to_string(&mut timed_out).unwrap();
        assert!(timed_out.starts_with("HTTP/1.1 408 "), "{timed_out}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// Issue 10 (minor b): 15 idle connections do not delay a scrape (they delayed it by
    /// 2 s each, one at a time); past `max_connections` a connection gets 503 at once.
    #[test]
    fn idle_connections_do_not_delay_a_scrape() {
        let (server, _) = start("x 1\n", HttpOptions::default());
        let addr = server.local_addr();
        let idle: Vec<TcpStream> = (0..15).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        assert_eq!(split(&get(addr, "/metrics")).1, "x 1\n");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "the scrape took {took:?}");
        eprintln!("scrape with 15 idle connections open: {took:?}");
        drop(idle);

        let options = HttpOptions { max_connections: 2, ..HttpOptions::default() };
        let (server, _) = start("x 1\n", options);
        let addr = server.local_addr();
        let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        assert!(get(addr, "/metrics").starts_with("HTTP/1.1 503 "));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(server.refused(), 1);
        drop(idle);
    }

    #[test]
    fn drop_stops_the_server() {
        let (server, _) = start("x 1\n", HttpOptions::default());
        let addr = server.local_addr();
        assert!(get(addr, "/metrics").starts_with("HTTP/1.1 200 "));
        let started = Instant::now();
        drop(server);
        assert!(started.elapsed() < Duration::from_secs(1), "stops within a poll");
        assert!(TcpStream::connect(addr).is_err(), "the socket is closed");
    }

    #[test]
    fn finds_the_end_of_the_head() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(20));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }
}
