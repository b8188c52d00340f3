//! A small real HTTP server on 127.0.0.1 for the fetch tests, with scripted misbehaviour.
//!
//! It serves files from memory (honouring `Range` and `If-Range` against a strong ETag), records
//! every request, and can be told to answer a path's next requests with a status, a dropped
//! connection, an ignored `Range` or an endless body. It runs on its own tokio runtime in a thread.

use std::collections::{HashMap, VecDeque};
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
pub(crate) enum Reply {
    /// The file, honouring `Range`.
    Serve,
    /// The whole file with 200, whatever `Range` says.
    IgnoreRange,
    /// Headers for the answer `Serve` would give, then this many body bytes, then a reset.
    DropAfter(usize),
    /// 206 for the whole file (`Content-Range` from byte 0), whatever `Range` asked for.
    WrongContentRange,
    /// Like `DropAfter`, but the connection then stays open and silent.
    StallAfter(usize),
    /// Only this status (and a `Retry-After` if given), with an empty body.
    Status(u16, Option<u64>),
    /// 200 with a body that never ends.
    Endless,
    /// The answer `Serve` would give (its full `Content-Length`), one byte per interval.
    Trickle(Duration),
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
    files: HashMap<String, Vec<u8>>,
    script: HashMap<String, VecDeque<Reply>>,
    seen: Vec<Seen>,
}

pub(crate) struct TestServer {
    /// `http://127.0.0.1:<port>/`
    pub base: String,
    shared: Arc<Mutex<Shared>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let shared = Arc::new(Mutex::new(Shared::default()));
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

    /// Serves `bytes` at `path` (no leading `/`).
    pub fn put(&self, path: &str, bytes: &[u8]) {
        let mut shared = self.shared.lock().unwrap();
        shared.files.insert(path.to_owned(), bytes.to_vec());
    }

    /// Answers the next requests for `path` with `replies`, then with `Reply::Serve`.
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        let mut shared = self.shared.lock().unwrap();
        shared
            .script
            .entry(path.to_owned())
            .or_default()
            .extend(replies);
    }

    /// Requests seen for `path`, in order.
    pub fn seen(&self, path: &str) -> Vec<Seen> {
        let shared = self.shared.lock().unwrap();
        shared
            .seen
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    /// The strong ETag the server gives `path`.
    pub fn etag(&self, path: &str) -> String {
        let shared = self.shared.lock().unwrap();
        etag_of(&shared.files[path])
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
    format!("\"{}\"", &crate::hashing::sha256_hex(bytes)[..16])
}

fn header(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn handle(State(shared): State<Arc<Mutex<Shared>>>, request: Request) -> Response {
    let path = request.uri().path().trim_start_matches('/').to_owned();
    let range = header(request.headers(), header::RANGE);
    let if_range = header(request.headers(), header::IF_RANGE);
    let (file, reply) = {
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
            .unwrap_or(Reply::Serve);
        (shared.files.get(&path).cloned(), reply)
    };
    let status_only = |code: u16| {
        Response::builder()
            .status(code)
            .body(Body::empty())
            .unwrap()
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
            let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
            let body = stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
            return Response::new(Body::from_stream(body));
        }
        _ => {}
    }
    let Some(file) = file else {
        return status_only(404);
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
    let builder = Response::builder().header(header::ETAG, &etag);
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
    match reply {
        Reply::DropAfter(n) => {
            let prefix = Bytes::from(body[..n.min(body.len())].to_vec());
            let pieces = stream::unfold(Some(prefix), |state| async move {
                match state {
                    Some(prefix) => Some((Ok(prefix), None)),
                    None => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Some((Err(std::io::Error::other("dropped on purpose")), None))
                    }
                }
            });
            builder.body(Body::from_stream(pieces)).unwrap()
        }
        Reply::StallAfter(n) => {
            let prefix = Bytes::from(body[..n.min(body.len())].to_vec());
            let pieces = stream::unfold(Some(prefix), |state| async move {
                match state {
                    Some(prefix) => Some((Ok::<_, std::io::Error>(prefix), None)),
                    None => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        None
                    }
                }
            });
            builder.body(Body::from_stream(pieces)).unwrap()
        }
        Reply::Trickle(every) => {
            let pieces = stream::unfold(0usize, move |sent| {
                let byte = body.get(sent).copied();
                async move {
                    tokio::time::sleep(every).await;
                    byte.map(|b| (Ok::<_, std::io::Error>(Bytes::from(vec![b])), sent + 1))
                }
            });
            builder.body(Body::from_stream(pieces)).unwrap()
        }
        _ => builder.body(Body::from(body)).unwrap(),
    }
}
