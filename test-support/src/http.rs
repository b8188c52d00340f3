//! A small real HTTP server on 127.0.0.1 with scripted misbehaviour: the repository server of
//! the end-to-end tests ([`TestServer::serve_dir`]) and the file server of the fetch unit tests
//! ([`TestServer::start`] and [`TestServer::put`]).
//!
//! It serves files from memory, else from a directory read at each request (so a test can
//! publish between requests), honouring `Range` and `If-Range` against a strong ETag; records
//! every request; and can be told to answer a path's next requests ([`TestServer::script`]) or
//! all of them ([`TestServer::fault`]) with a status, a dropped connection, an ignored `Range`,
//! a body that never ends or one that trickles. It runs on its own tokio runtime in a thread,
//! stopped when the server is dropped.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::stream;
use tokio::sync::oneshot;

/// How the server answers one request for a path.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The file, honouring `Range`.
    Serve,
    /// The whole file with 200, whatever `Range` says.
    IgnoreRange,
    /// Headers for the answer `Serve` would give, then this many body bytes, then (50 ms later)
    /// a reset.
    DropAfter(usize),
    /// Like `DropAfter`, with the reset this long after the bytes.
    DropAfterDelay(usize, Duration),
    /// 206 for the whole file (`Content-Range` from byte 0), whatever `Range` asked for.
    WrongContentRange,
    /// Like `DropAfter`, but the connection then stays open and silent.
    StallAfter(usize),
    /// Only this status (and a `Retry-After` if given), with an empty body.
    Status(u16, Option<u64>),
    /// 200 with a body that never ends (and claims no length).
    Endless,
    /// The answer `Serve` would give (its full `Content-Length`), one byte per interval.
    Trickle(Duration),
    /// 200 with these bytes instead of the file.
    Body(Vec<u8>),
}

/// What [`TestServer::fault`] makes of a path (the end-to-end tests' vocabulary).
#[derive(Clone, Debug)]
pub enum Fault {
    /// Send this many bytes of the body, then drop the connection — only on the first request.
    DropAfterOnce(usize),
    /// Stream zeros forever (claims no length).
    Endless,
    /// Answer with this status, this many times, then behave.
    StatusTimes(u16, usize),
    /// Serve these bytes instead of the file, once.
    BodyOnce(Vec<u8>),
    /// The file with its full Content-Length, one byte per second (a trickling server).
    Trickle,
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
}

#[derive(Default)]
struct Shared {
    root: Option<PathBuf>,
    files: HashMap<String, Vec<u8>>,
    script: HashMap<String, VecDeque<Reply>>,
    always: HashMap<String, Reply>,
    seen: Vec<Seen>,
}

pub struct TestServer {
    /// `http://127.0.0.1:<port>/`
    pub base: String,
    shared: Arc<Mutex<Shared>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server with no files yet ([`TestServer::put`] adds them).
    pub fn start() -> Self {
        Self::with(Shared::default())
    }

    /// A server of the files under `root`, read when asked for (a missing `root`: every path
    /// is a 404).
    pub fn serve_dir(root: PathBuf) -> Self {
        Self::with(Shared {
            root: Some(root),
            ..Shared::default()
        })
    }

    fn with(shared: Shared) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let shared = Arc::new(Mutex::new(shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let state = shared.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = Router::new().fallback(handle).with_state(state);
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stopped => {}
                }
            });
        });
        Self {
            base,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        self.base.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap()
    }

    /// Serves `bytes` at `path` (no leading `/`).
    pub fn put(&self, path: &str, bytes: &[u8]) {
        self.lock().files.insert(path.to_owned(), bytes.to_vec());
    }

    /// Answers the next requests for `path` with `replies`, then as before.
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.lock()
            .script
            .entry(path.trim_start_matches('/').to_owned())
            .or_default()
            .extend(replies);
    }

    /// Makes `path` misbehave: once, a number of times, or for good.
    pub fn fault(&self, path: &str, fault: Fault) {
        let path = path.trim_start_matches('/');
        match fault {
            Fault::DropAfterOnce(n) => {
                self.script(path, [Reply::DropAfterDelay(n, Duration::from_millis(200))])
            }
            Fault::StatusTimes(code, n) => {
                self.script(path, std::iter::repeat_n(Reply::Status(code, None), n))
            }
            Fault::BodyOnce(bytes) => self.script(path, [Reply::Body(bytes)]),
            Fault::Endless => {
                self.lock().always.insert(path.to_owned(), Reply::Endless);
            }
            Fault::Trickle => {
                let reply = Reply::Trickle(Duration::from_secs(1));
                self.lock().always.insert(path.to_owned(), reply);
            }
        }
    }

    /// Requests seen for `path`, in order.
    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.lock()
            .seen
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    /// Every request seen, in order.
    pub fn all_seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// The strong ETag the server gives `path` (one [`TestServer::put`]).
    pub fn etag(&self, path: &str) -> String {
        etag_of(&self.lock().files[path])
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn etag_of(bytes: &[u8]) -> String {
    format!("\"{}\"", &crate::sha256_hex(bytes)[..16])
}

fn header(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn status_only(code: u16) -> Response {
    Response::builder()
        .status(code)
        .body(Body::empty())
        .unwrap()
}

/// `prefix`, then after `delay` either a reset (`reset`) or silence for an hour.
fn cut_after(prefix: Vec<u8>, delay: Duration, reset: bool) -> Body {
    let pieces = stream::unfold(Some(Bytes::from(prefix)), move |state| async move {
        match state {
            Some(prefix) => Some((Ok(prefix), None)),
            None if reset => {
                tokio::time::sleep(delay).await;
                Some((Err(std::io::Error::other("dropped on purpose")), None))
            }
            None => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                None
            }
        }
    });
    Body::from_stream(pieces)
}

async fn handle(State(shared): State<Arc<Mutex<Shared>>>, request: Request) -> Response {
    let path = request.uri().path().trim_start_matches('/').to_owned();
    let range = header(request.headers(), header::RANGE);
    let if_range = header(request.headers(), header::IF_RANGE);
    let (file, root, reply) = {
        let mut shared = shared.lock().unwrap();
        shared.seen.push(Seen {
            path: path.clone(),
            range: range.clone(),
            if_range: if_range.clone(),
        });
        let reply = shared
            .script
            .get_mut(&path)
            .and_then(VecDeque::pop_front)
            .or_else(|| shared.always.get(&path).cloned())
            .unwrap_or(Reply::Serve);
        (shared.files.get(&path).cloned(), shared.root.clone(), reply)
    };
    match reply {
        Reply::Status(code, retry_after) => {
            let mut response = status_only(code);
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, seconds.into());
            }
            return response;
        }
        Reply::Endless => {
            let chunk = Bytes::from(vec![0u8; 64 * 1024]);
            let body = stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
            return Response::new(Body::from_stream(body));
        }
        Reply::Body(bytes) => return Response::new(Body::from(bytes)),
        _ => {}
    }
    if path.contains("..") {
        return status_only(400);
    }
    let file = match (file, root) {
        (Some(file), _) => file,
        (None, Some(root)) => match tokio::fs::read(root.join(&path)).await {
            Ok(bytes) => bytes,
            Err(_) => return status_only(404),
        },
        (None, None) => return status_only(404),
    };
    let etag = etag_of(&file);
    let start = match (&reply, &range) {
        (Reply::IgnoreRange, _) | (_, None) => None,
        (_, Some(range)) if if_range.as_ref().is_none_or(|tag| *tag == etag) => range
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok()),
        _ => None,
    };
    if start.is_some_and(|s| s >= file.len()) {
        return status_only(416);
    }
    let builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes");
    if let Reply::WrongContentRange = reply {
        return builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header(
                header::CONTENT_RANGE,
                format!("bytes 0-{}/{}", file.len() - 1, file.len()),
            )
            .body(Body::from(file))
            .unwrap();
    }
    let (builder, body) = match start {
        Some(s) => (
            builder.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {s}-{}/{}", file.len() - 1, file.len()),
            ),
            file[s..].to_vec(),
        ),
        None => (builder.status(StatusCode::OK), file),
    };
    let builder = builder.header(header::CONTENT_LENGTH, body.len());
    let head = |n: usize| body[..n.min(body.len())].to_vec();
    let body = match reply {
        Reply::DropAfter(n) => cut_after(head(n), Duration::from_millis(50), true),
        Reply::DropAfterDelay(n, delay) => cut_after(head(n), delay, true),
        Reply::StallAfter(n) => cut_after(head(n), Duration::ZERO, false),
        Reply::Trickle(every) => Body::from_stream(stream::unfold(0usize, move |sent| {
            let byte = body.get(sent).copied();
            async move {
                tokio::time::sleep(every).await;
                byte.map(|b| (Ok::<_, std::io::Error>(Bytes::from(vec![b])), sent + 1))
            }
        })),
        _ => Body::from(body),
    };
    builder.body(body).unwrap()
}
