//! A real HTTP repository server on 127.0.0.1 for the tests: serves a directory with `Range`
//! and strong `ETag` support, records every request, and misbehaves on demand.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, stream};

/// How the server treats one path.
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

#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
}

#[derive(Default)]
struct Shared {
    faults: HashMap<String, Fault>,
    seen: Vec<Seen>,
}

#[derive(Clone)]
struct AppState {
    root: PathBuf,
    shared: Arc<Mutex<Shared>>,
}

pub struct Server {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serves `root` at `http://127.0.0.1:<port>/`.
    pub fn start(root: PathBuf) -> Server {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = AppState {
            root,
            shared: shared.clone(),
        };
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let app = axum::Router::new().fallback(serve).with_state(state);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Server {
            addr: addr_rx.recv().unwrap(),
            shared,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn fault(&self, path: &str, fault: Fault) {
        self.shared
            .lock()
            .unwrap()
            .faults
            .insert(path.trim_start_matches('/').to_owned(), fault);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().unwrap().seen.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(State(state): State<AppState>, req: Request) -> Response {
    let path = req.uri().path().trim_start_matches('/').to_owned();
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let fault = {
        let mut shared = state.shared.lock().unwrap();
        shared.seen.push(Seen {
            path: path.clone(),
            range: range.clone(),
        });
        let fault = shared.faults.get(&path).cloned();
        match fault {
            Some(Fault::DropAfterOnce(_) | Fault::BodyOnce(_)) => shared.faults.remove(&path),
            Some(Fault::StatusTimes(code, n)) => {
                if n <= 1 {
                    shared.faults.remove(&path);
                } else {
                    shared
                        .faults
                        .insert(path.clone(), Fault::StatusTimes(code, n - 1));
                }
                Some(Fault::StatusTimes(code, n))
            }
            other => other,
        }
    };
    if let Some(Fault::Endless) = fault {
        let zeros = stream::repeat_with(|| Ok::<_, std::io::Error>(vec![0u8; 64 * 1024]));
        return Response::new(Body::from_stream(zeros));
    }
    if let Some(Fault::StatusTimes(code, _)) = fault {
        return StatusCode::from_u16(code).unwrap().into_response();
    }
    if let Some(Fault::BodyOnce(bytes)) = fault {
        return bytes.into_response();
    }
    if path.contains("..") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let Ok(bytes) = tokio::fs::read(state.root.join(&path)).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = format!("\"{}\"", &molt::hashing::sha256_hex(&bytes)[..16]);
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|_| if_range_matches(req.headers(), &etag));
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, HeaderValue::from_str(&etag).unwrap());
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let (status, body) = match start {
        Some(s) if s < bytes.len() => {
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {s}-{}/{}", bytes.len() - 1, bytes.len()))
                    .unwrap(),
            );
            (StatusCode::PARTIAL_CONTENT, bytes[s..].to_vec())
        }
        Some(_) => return StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
        None => (StatusCode::OK, bytes),
    };
    if let Some(Fault::Trickle) = fault {
        let bytes = body.clone();
        let chunks = stream::unfold(0usize, move |sent| {
            let byte = bytes.get(sent).copied();
            async move {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                byte.map(|b| (Ok::<_, std::io::Error>(vec![b]), sent + 1))
            }
        });
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        return (status, headers, Body::from_stream(chunks)).into_response();
    }
    if let Some(Fault::DropAfterOnce(n)) = fault {
        let head = body[..n.min(body.len())].to_vec();
        // Let the head reach the client before the connection is cut.
        let cut = async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            Err::<Vec<u8>, _>(std::io::Error::other(
                "connection dropped by the test server",
            ))
        };
        let chunks = stream::iter(vec![Ok::<_, std::io::Error>(head)]).chain(stream::once(cut));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        return (status, headers, Body::from_stream(chunks)).into_response();
    }
    (status, headers, body).into_response()
}

fn if_range_matches(headers: &HeaderMap, etag: &str) -> bool {
    match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) => v == etag,
        None => true,
    }
}
